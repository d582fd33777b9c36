"""tlsutil: certificates and stunnel for the TLS tests and `make bench`.

    ca = tlsutil.CA(dirname, "test-ca")                   # a CA, made with `openssl`
    srv = ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])
    cli = ca.issue("client", cn="billing", client=True)
    srv.cert, srv.key, ca.cert                            # PEM file paths

    with tlsutil.Stunnel(target_port, srv, ca=ca, verify_client=True) as tun:
        ... connect with TLS to tun.port (plain text goes on to target_port)

Keys are EC P-256 (made in milliseconds); certificates are valid from now
for `days` days.  Everything lives in the directory given, which the
caller removes.  `openssl` and `stunnel4` are Debian packages; have()
tells whether they are installed, so that a test can skip without them.
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


def _openssl(*args):
    r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stdout.decode(errors="replace")[-800:]))


class Issued:
    """A certificate and its key, as PEM files."""

    def __init__(self, cert, key, cn):
        self.cert, self.key, self.cn = cert, key, cn


class CA:
    """A self-signed certificate authority in dirname (made at once)."""

    def __init__(self, dirname, name="test-ca", days=3650):
        self.dir = dirname
        self.name = name
        self.cert = os.path.join(dirname, name + ".pem")
        self.key = os.path.join(dirname, name + ".key")
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", self.cert, "-days", str(days), "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, cn=None, dns=(), ips=(), client=False, days=365):
        """A certificate signed by this CA, for a server (dns/ips in its
        subjectAltName) or, with client=True, for a client (its subject CN
        is the identity).  Files NAME.pem and NAME.key beside the CA's."""
        cn = cn or name
        cert = os.path.join(self.dir, name + ".pem")
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        ext = os.path.join(self.dir, name + ".ext")
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                 "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth")]
        san = ["DNS:" + d for d in dns] + ["IP:" + i for i in ips]
        if san:
            lines.append("subjectAltName=" + ",".join(san))
        with open(ext, "w") as f:
            f.write("\n".join(lines) + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                 "-out", cert, "-days", str(days), "-extfile", ext)
        return Issued(cert, key, cn)


class Stunnel:
    """stunnel in server mode on 127.0.0.1:<free port>: TLS from clients,
    plain text on to 127.0.0.1:target_port.  With verify_client, a client
    certificate signed by ca is required.  Stopped (by its own pid) by
    stop() or the with-block."""

    def __init__(self, target_port, server, ca=None, verify_client=False):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gmtest-stunnel-")
        self.log = os.path.join(self.dir, "stunnel.log")
        # debug = 3: errors only (refused handshakes are logged at 3).  At 5
        # (a line per connection), stunnel 5.68 stopped forwarding after
        # about 185 connections here, and ran 6x slower.
        conf = ["foreground = yes", "pid =", "syslog = no", "output = " + self.log, "debug = 3",
                "[gear]", "accept = 127.0.0.1:%d" % self.port, "connect = 127.0.0.1:%d" % target_port,
                "cert = " + server.cert, "key = " + server.key, "sslVersionMin = TLSv1.2"]
        if verify_client:
            conf += ["CAfile = " + ca.cert, "verifyChain = yes", "requireCert = yes"]
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
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
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
