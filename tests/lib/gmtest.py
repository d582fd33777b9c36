"""gmtest: shared helpers for the integration and interop tests.

What it gives a test script:
  - Server: starts the gearmand under test (the GEARMAND environment
    variable, set by `make check`) on a free port with its own log and pid
    file, waits until it accepts connections, and stops it with SIGTERM,
    checking that it exits 0 (under AddressSanitizer a leak makes that fail).
  - Conn: a raw socket that speaks the binary protocol (send_packet,
    recv_packet) and the admin text protocol (admin), byte for byte; with
    tls=an ssl.SSLContext (tests/lib/tlsfix.py makes them) the same over
    TLS.  Server(..., tls=CONTEXT) hands that context to every conn().
  - TAP output: @test registers a function; main() runs them all, prints
    "ok N - name" / "not ok N - name" and a plan, so automake's TAP driver
    counts every case.  A test fails by raising (assert, or fail()).

Only the Python standard library is used.
"""

import os
import socket
import ssl
import struct
import subprocess
import threading
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TOP_SRCDIR = os.environ.get("TOP_SRCDIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
TOP_BUILDDIR = os.environ.get("TOP_BUILDDIR") or TOP_SRCDIR
GEARMAND = os.environ.get("GEARMAND") or os.path.join(TOP_BUILDDIR, "gearmand", "gearmand")

REQ = b"\0REQ"
RES = b"\0RES"

# Packet types, by name, as on the wire.
T = dict(
    CAN_DO=1, CANT_DO=2, RESET_ABILITIES=3, PRE_SLEEP=4, UNUSED=5, NOOP=6,
    SUBMIT_JOB=7, JOB_CREATED=8, GRAB_JOB=9, NO_JOB=10, JOB_ASSIGN=11,
    WORK_STATUS=12, WORK_COMPLETE=13, WORK_FAIL=14, GET_STATUS=15,
    ECHO_REQ=16, ECHO_RES=17, SUBMIT_JOB_BG=18, ERROR=19, STATUS_RES=20,
    SUBMIT_JOB_HIGH=21, SET_CLIENT_ID=22, CAN_DO_TIMEOUT=23, ALL_YOURS=24,
    WORK_EXCEPTION=25, OPTION_REQ=26, OPTION_RES=27, WORK_DATA=28,
    WORK_WARNING=29, GRAB_JOB_UNIQ=30, JOB_ASSIGN_UNIQ=31,
    SUBMIT_JOB_HIGH_BG=32, SUBMIT_JOB_LOW=33, SUBMIT_JOB_LOW_BG=34,
    SUBMIT_JOB_SCHED=35, SUBMIT_JOB_EPOCH=36, SUBMIT_REDUCE_JOB=37,
    SUBMIT_REDUCE_JOB_BACKGROUND=38, GRAB_JOB_ALL=39, JOB_ASSIGN_ALL=40,
    GET_STATUS_UNIQUE=41, STATUS_RES_UNIQUE=42,
)
NAME = {v: k for k, v in T.items()}


def free_port():
    """Returns a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StubServer:
    """A stand-in server for tests: listens on a free port of 127.0.0.1
    and serves each connection with self.serve(conn) in a thread of its
    own.  Subclasses say what serve() answers (a deliberately broken job
    server, a memcached that stalls, ...)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, conn):
        raise NotImplementedError

    def close(self):
        self.sock.close()


def packet(ptype, *fields, magic=REQ):
    """Encodes a packet: fields (bytes or str) joined by NUL."""
    if isinstance(ptype, str):
        ptype = T[ptype]
    body = b"\0".join(f.encode() if isinstance(f, str) else bytes(f) for f in fields)
    return magic + struct.pack(">II", ptype, len(body)) + body


def response(ptype, *fields):
    """Encodes a server-to-peer packet (\\0RES magic): what a test expects
    to read, byte for byte."""
    return packet(ptype, *fields, magic=RES)


def rss_kib(pid, field="VmRSS"):
    """The resident set size of process pid, in KiB (field="VmHWM": its
    peak so far)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (field, pid))


def small_quarantine():
    """The environment of a server whose RSS a test measures: under
    AddressSanitizer, a quarantine of 4 MiB instead of 256 (freed blocks
    wait there, and would count as growth); nothing changes otherwise."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=4"}


def port_open(port, host="127.0.0.1"):
    """Whether something accepts TCP connections on port."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value (returned), or fails the
    test after `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class Packet:
    """A decoded packet: magic, type (int), name, data (the raw payload)."""

    def __init__(self, magic, ptype, data):
        self.magic = magic
        self.type = ptype
        self.name = NAME.get(ptype, str(ptype))
        self.data = data

    def fields(self, n=None):
        """Splits the payload at NULs; with n, into at most n fields."""
        if n is None:
            return self.data.split(b"\0")
        return self.data.split(b"\0", n - 1)

    def raw(self):
        """The packet as it was on the wire (header included)."""
        return self.magic + struct.pack(">II", self.type, len(self.data)) + self.data

    def __repr__(self):
        return "Packet(%s, %r)" % (self.name, self.data[:200])


class Conn:
    """One raw connection to the server (from the address `source`, such as
    127.0.0.2, when given: the server then sees another peer); with tls (an
    ssl.SSLContext) a TLS connection whose handshake is done when the
    constructor returns (server_hostname is the name the server's
    certificate is checked against).  A failed handshake raises
    ssl.SSLError or OSError."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, tls=None, server_hostname="localhost", source=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        self.buf = b""
        self.timeout = timeout
        self.tls_error = None  # the ssl.SSLError that ended the connection, if one did

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_packet(self, ptype, *fields, magic=REQ):
        self.send(packet(ptype, *fields, magic=magic))

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        finally:
            self.sock.settimeout(self.timeout)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def recv_exact(self, n, timeout=None):
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("timed out waiting for %d bytes (have %d)" % (n, len(self.buf)))
            self._fill(left)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_packet(self, timeout=None):
        """Reads one binary packet; raises TimeoutError or EOFError."""
        head = self.recv_exact(12, timeout)
        magic = head[:4]
        ptype, size = struct.unpack(">II", head[4:])
        data = self.recv_exact(size, timeout)
        return Packet(magic, ptype, data)

    def expect(self, name, timeout=None):
        """Reads one packet and checks its type; returns it."""
        p = self.recv_packet(timeout)
        assert p.name == name, "expected %s, got %r" % (name, p)
        return p

    def expect_packet(self, ptype, *fields, timeout=None):
        """Reads one packet and checks that it is, byte for byte (header
        included), the response packet(ptype, *fields); returns it."""
        want = response(ptype, *fields)
        p = self.recv_packet(timeout)
        assert p.raw() == want, "expected %r, got %r" % (want[:300], p.raw()[:300])
        return p

    def nothing(self, wait=0.2):
        """Asserts that nothing arrives within `wait` seconds."""
        if self.buf:
            raise AssertionError("unexpected bytes: %r" % self.buf[:100])
        try:
            self._fill(wait)
        except (socket.timeout, TimeoutError):
            return
        except EOFError:
            raise AssertionError("connection closed")
        raise AssertionError("unexpected bytes: %r" % self.buf[:100])

    def closed(self, wait=3.0):
        """Returns True if the server closes the connection within `wait`
        seconds (bytes received meanwhile are kept in self.buf; a TLS alert
        that ends it is kept in self.tls_error)."""
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                self._fill(deadline - time.time())
            except EOFError:
                return True
            except ConnectionResetError:
                return True
            except ssl.SSLError as e:
                self.tls_error = e
                return True
            except (socket.timeout, TimeoutError):
                return False
        return False

    def read_until(self, terminator, timeout=None):
        """Reads text until `terminator` (bytes); returns everything up to
        and including it."""
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        while terminator not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("timed out waiting for %r; have %r" % (terminator, self.buf[:200]))
            self._fill(left)
        i = self.buf.index(terminator) + len(terminator)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def burst(self, data, timeout=None, idle=0.005):
        """Sends `data` as is and reads the reply the way gearadmin does:
        waits for the first byte, then keeps reading while more arrives
        within `idle` seconds (gearadmin polls for 5 ms).  Returns what
        arrived (b"" if nothing did); sets self.eof if the server closed."""
        import select
        if isinstance(data, str):
            data = data.encode()
        self.eof = False
        self.send(data)
        out, self.buf = self.buf, b""
        wait = timeout if timeout is not None else self.timeout
        while True:
            if out or self.eof:
                wait = idle
            # TLS: bytes already decrypted do not make the socket readable
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending and not select.select([self.sock], [], [], wait)[0]:
                return out
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return out
            out += chunk

    def admin(self, line, timeout=None):
        """Sends one admin command and returns its whole reply: a list reply
        up to its ".\\n" line, otherwise the first line."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        deadline = time.time() + (timeout if timeout is not None else self.timeout)
        while True:
            if self.buf.startswith((b"OK", b"ERR")) and b"\n" in self.buf:
                return self.read_until(b"\n")
            if self.buf == b".\n" or b"\n.\n" in self.buf:
                return self.read_until(b".\n") if self.buf == b".\n" else self.read_until(b"\n.\n")
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("admin %r: have %r" % (line, self.buf[:200]))
            self._fill(left)


def _extra_args_not_in(extra, args):
    """The options of `extra` (each "-x VALUE" or "--opt=VALUE") whose
    option does not appear in `args`."""
    given = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    out, i = [], 0
    while i < len(extra):
        opt = extra[i]
        has_value = "=" not in opt and i + 1 < len(extra) and not extra[i + 1].startswith("-")
        group = extra[i:i + 2] if has_value else extra[i:i + 1]
        if opt.split("=", 1)[0] not in given:
            out += group
        i += len(group)
    return out


class Server:
    """A gearmand under test, on a free port."""

    def __init__(self, *args, port=None, env=None, binary=None, log_level="INFO",
                 listen="127.0.0.1", tls=None):
        # listen=None: no -L, the server binds every address (connections
        # from the test still go to 127.0.0.1); tls: the ssl.SSLContext of
        # conn() for a server started with --ssl
        self.port = port or free_port()
        self.tls = tls
        self.dir = tempfile.mkdtemp(prefix="gmtest-")
        self.log = os.path.join(self.dir, "gearmand.log")
        self.pidfile = os.path.join(self.dir, "gearmand.pid")
        self.binary = binary or GEARMAND
        self.args = [self.binary, "-p", str(self.port)] + (["-L", listen] if listen else []) + [
                     "-l", self.log, "-P", self.pidfile, "--verbose", log_level,
                     "--config-file", os.path.join(self.dir, "none.conf")] + list(args)
        # GMTEST_SERVER_ARGS (e.g. "-t 1") runs every test server of ours
        # with extra options; an option a test gives itself wins (gearmand
        # refuses an option given twice, so the extra one is left out).
        extra = os.environ.get("GMTEST_SERVER_ARGS", "").split()
        if extra and not binary:
            self.args[1:1] = _extra_args_not_in(extra, list(args))
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self, wait=10.0, ready_port=None):
        """Starts the server and returns once ready_port (default the Gear
        port; a standby --ha server opens only its HTTP port) accepts
        connections; raises RuntimeError, with its output, if it exits."""
        # an empty config file, so /etc/gearmand.conf never leaks in
        open(os.path.join(self.dir, "none.conf"), "w").close()
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError("gearmand exited with %s: %s %s" % (
                    self.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")))
            try:
                socket.create_connection(("127.0.0.1", ready_port or self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gearmand did not start listening on %d" % (ready_port or self.port))

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        rc = self.stop()
        if exc_type is None and rc != 0:
            raise AssertionError("gearmand exited with %s; log:\n%s" % (rc, self.log_text()[-3000:]))

    def conn(self, timeout=10.0, tls=None):
        """A connection to the Gear port: over TLS with the server's
        context (or tls, when given)."""
        return Conn(self.port, timeout=timeout, tls=tls or self.tls)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stderr_text(self):
        return getattr(self, "_stderr", b"").decode(errors="replace")

    def stop(self, sig=None, timeout=30.0):
        """Stops the server (SIGTERM by default); returns its exit status."""
        import signal as _signal
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self._stderr = err
        if err.strip():
            sys.stderr.write(err.decode(errors="replace")[-5000:])
        return self.proc.returncode


def submit(c, ptype, fn, unique, data=b"x", *extra):
    """Sends a SUBMIT_* packet on connection c (extra fields, such as the
    epoch of SUBMIT_JOB_EPOCH, go between unique and data) and returns the
    job handle from the JOB_CREATED answer; fails on any other answer."""
    c.send_packet(ptype, fn, unique, *extra, data)
    p = c.recv_packet()
    if p.name != "JOB_CREATED":
        fail("%s %s: expected JOB_CREATED, got %r" % (ptype, fn, p))
    return p.data.decode()


# ----------------------------------------------------------------------
# TAP

_tests = []


def sync(c):
    """Waits until everything sent on c so far has been processed (an ECHO
    goes through the dispatcher once c has sent it anything)."""
    c.send_packet("ECHO_REQ", "sync")
    c.expect_packet("ECHO_RES", "sync")


def status_of(admin, fn):
    """The (total, running, workers) line of `status` for fn, or None."""
    for line in admin.admin("status").decode().splitlines():
        f = line.split("\t")
        if f[0] == fn:
            return tuple(int(x) for x in f[1:])
    return None


def grab(w):
    """GRAB_JOB; returns (handle, function, data) as str/str/bytes, or None
    on NO_JOB."""
    w.send_packet("GRAB_JOB")
    p = w.recv_packet()
    if p.name == "NO_JOB":
        return None
    assert p.name == "JOB_ASSIGN", p
    h, fn, data = p.fields(3)
    return h.decode(), fn.decode(), data


def test(fn):
    """Registers a test function (run in definition order by main())."""
    _tests.append(fn)
    return fn


def fail(msg):
    raise AssertionError(msg)


class Skip(Exception):
    """Raised by skip(): the test cannot run here (reported as TAP SKIP)."""


def skip(reason):
    raise Skip(reason)


def main():
    """Runs every registered test and prints TAP; exits 0 (the TAP driver
    reads the results)."""
    only = os.environ.get("GMTEST_ONLY")
    selected = [t for t in _tests if not only or only in t.__name__]
    print("1..%d" % len(selected), flush=True)
    failed = 0
    for i, fn in enumerate(selected, 1):
        name = fn.__name__
        t0 = time.time()
        try:
            fn()
            print("ok %d - %s (%.2fs)" % (i, name, time.time() - t0), flush=True)
        except Skip as e:
            print("ok %d - %s # SKIP %s" % (i, name, e), flush=True)
        except Exception as e:  # noqa: BLE001 - a test reports any failure
            failed += 1
            print("not ok %d - %s" % (i, name), flush=True)
            for line in traceback.format_exc().splitlines():
                print("# " + line, flush=True)
            for line in ("%s: %s" % (type(e).__name__, e)).splitlines():
                print("# " + line, flush=True)
    sys.exit(0)
