"""tlsutil: stunnel4 for the TLS tests, the one starter of it: in server
mode in front of a plain-text server (the tools' test_tools_tls.py, the
load generator's test_bench.py), or in client mode in front of gearmand
--ssl for clients that speak only plain text (Debian's tools and libgearman,
tests/interop).  The certificates come from tlsfix.py.

    fix = tlsfix.get()
    with tlsutil.Stunnel(target_port, fix.server, fix.server_key) as tun:
        ... connect with TLS to tun.port (plain text goes on to target_port)
    tlsutil.Stunnel(target_port, fix.server, fix.server_key, ca=fix.ca, verify_client=True)
        ... a client certificate signed by fix.ca is required
    tlsutil.Stunnel(tls_port, cert, key, ca=fix.ca, client=True)
        ... plain text to tun.port goes on over TLS (the server's certificate
        checked against ca for localhost; cert and key presented if given)

have() tells whether `openssl` or `stunnel4` (Debian packages) are
installed, so that a test can skip without them.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

from gmtest import free_port


def have(tool):
    """Whether `tool` ("openssl" or "stunnel") is installed."""
    names = {"stunnel": ("stunnel4", "stunnel")}.get(tool, (tool,))
    return any(shutil.which(n) for n in names)


class Stunnel:
    """stunnel on listen:<free port> (self.port), on to 127.0.0.1:target_port.
    Server mode: TLS from clients with cert and key as its certificate,
    plain text on; with verify_client, a client certificate signed by the
    CA file ca is required.  Client mode (client=True): plain text from
    clients, TLS on, the server's certificate checked against ca for the
    name localhost, cert and key (if given) presented.  Stopped (by its own
    pid) by stop() or the with-block."""

    def __init__(self, target_port, cert, key, ca=None, verify_client=False, listen="127.0.0.1",
                 client=False):
        self.port = free_port()
        self.listen = listen
        self.dir = tempfile.mkdtemp(prefix="gmtest-stunnel-")
        self.log = os.path.join(self.dir, "stunnel.log")
        # debug = 3: errors only (refused handshakes are logged at 3).  At 5
        # (a line per connection), stunnel 5.68 stopped forwarding after
        # about 185 connections here, and ran 6x slower.
        conf = ["foreground = yes", "pid =", "syslog = no", "output = " + self.log, "debug = 3",
                "[gear]", "accept = %s:%d" % (listen, self.port), "connect = 127.0.0.1:%d" % target_port,
                "sslVersionMin = TLSv1.2"]
        if cert:
            conf += ["cert = " + cert, "key = " + key]
        if client:
            conf += ["client = yes", "CAfile = " + ca, "verifyChain = yes", "checkHost = localhost"]
        elif verify_client:
            conf += ["CAfile = " + ca, "verifyChain = yes", "requireCert = yes"]
        self.conf = os.path.join(self.dir, "stunnel.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.proc = None

    def start(self, wait=10.0):
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        self.proc = subprocess.Popen([binary, self.conf], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("stunnel exited with %s: %s %s" % (
                    self.proc.returncode, self.proc.stderr.read().decode(errors="replace")[-800:], self.log_text()))
            try:
                socket.create_connection((self.listen, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("stunnel did not listen on %d" % self.port)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
