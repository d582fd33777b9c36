#!/usr/bin/env python3
"""TLS on the Gear port and the HTTP port (gearmand --ssl, issue 16).

Certificates come from tests/lib/tlsfix.py (a test CA, a server certificate
for localhost and 127.0.0.1, client certificates: CN=billing, one from an
unrelated CA, one expired).  Clients are Python `ssl` sockets speaking the
raw Gear protocol (gmtest.Conn with tls=), `openssl s_client`, and
http.client for HTTPS.  Cases:

  - a job, ECHO and the admin protocol over TLS; the server presents its
    certificate; TLS 1.2 and 1.3 accepted, 1.1 refused (with a control
    showing that this client can offer 1.1)
  - plain text sent to the TLS port: closed, one log line, others served
  - stalled handshakes (nothing sent, half a ClientHello, a ClientHello a
    byte at a time): other clients are served meanwhile; closed after
    --ssl-handshake-timeout counted from the accept, while an idle
    connection whose handshake is done stays; a peer that connects and
    closes is no error
  - --ssl-verify-client: no certificate, another CA's, an expired one
    refused; the CA's accepted.  With a CA but without --ssl-verify-client:
    no certificate accepted, a bad one refused.  A verified certificate
    names the connection cn:NAME (in the log; in `workers`)
  - 1,000 TLS connections at once, each does ECHO
  - SIGHUP with a good new certificate (new connections get it, old ones
    keep working), with a bad one (the old one stays, the log says why),
    with a new CA (it decides for new connections); gearmand's variables
    GEARMAND_SERVER_PEM, _KEY, GEARMAND_CA_CERTIFICATE
  - start-up errors that name the missing, unreadable, not-PEM or
    mismatched file
  - HTTPS on the HTTP port: /health, /metrics, /api/status, the monitor
    page; --ssl-verify-client there too; plain HTTP there refused

A refused client may see the refusal during its handshake or, in TLS 1.3
(where the client's handshake ends before the server has checked its
certificate), as the connection closing on its first request: refused()
accepts either, but never an answer.  No assertion depends on a tight time:
bounds are generous and only ever "at most".
"""

import asyncio
import collections
import http.client
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
import tlsfix  # noqa: E402
from gmtest import Conn, Server, fail, free_port, packet, response, sync, test, wait_until  # noqa: E402

FIX = None  # the tlsfix.Fixture, made by the first test that needs it


def fix():
    global FIX
    if FIX is None:
        FIX = tlsfix.get()
    return FIX


def ctx(cert=None, key=None, **kw):
    return tlsfix.client_context(fix(), cert, key, **kw)


def good_client():
    return ctx(*fix().client("billing"))


def ssl_args(ca=False, verify=False, cert=None, key=None, timeout=None):
    f = fix()
    args = ["--ssl", "--ssl-certificate", cert or f.server, "--ssl-key", key or f.server_key]
    if ca:
        args += ["--ssl-ca-file", f.ca]
    if verify:
        args += ["--ssl-verify-client"]
    if timeout is not None:
        args += ["--ssl-handshake-timeout", str(timeout)]
    return args


def tls_server(*extra, ca=False, verify=False, cert=None, key=None, timeout=None, client=None, **kw):
    """A gearmand with --ssl; its conn() speaks TLS with `client` (default:
    trusts the test CA, presents CN=billing when the server asks)."""
    return Server(*(ssl_args(ca, verify, cert, key, timeout) + list(extra)),
                  tls=client or good_client(), env=_no_tls_env(), **kw)


def _no_tls_env():
    # gearmand's variables for the default files must not leak in
    return {"GEARMAND_SERVER_PEM": "", "GEARMAND_SERVER_KEY": "", "GEARMAND_CA_CERTIFICATE": ""}


def echo(c, what="hello"):
    c.send_packet("ECHO_REQ", what)
    c.expect_packet("ECHO_RES", what)


def peer_fingerprint(c):
    return tlsfix.Fixture.der_fingerprint(c.sock.getpeercert(binary_form=True))


def refused(port, context, what):
    """Connects with `context` and sends ECHO_REQ: the server must end the
    connection, in the handshake or right after it, without answering.
    Returns (local port, how it ended, as the client saw it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    local = sock.getsockname()[1]
    got = b""
    try:
        sock = context.wrap_socket(sock, server_hostname="localhost")
        sock.sendall(packet("ECHO_REQ", "must not be answered"))
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                how = "closed after the handshake"
                break
            got += chunk
    except TimeoutError:
        fail("%s: the connection is still open 15 s after connecting (got %r)" % (what, got[:100]))
    except (ssl.SSLError, OSError) as e:
        how = "%s: %s" % (type(e).__name__, e)
    finally:
        sock.close()
    assert b"\0RES" not in got, "%s: the server answered: %r" % (what, got[:100])
    return local, how


NOTICE_UP = ("FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE")


def peer_lines(s, port):
    """The log lines that name the peer 127.0.0.1:port."""
    pat = re.compile(r"127\.0\.0\.1:%d(?!\d)" % port)
    return [ln for ln in s.log_text().splitlines() if pat.search(ln)]


def logged_once(s, port, what, words=()):
    """Waits for the log to say why 127.0.0.1:port was closed; checks that it
    says so in one line (at NOTICE or above), which has one of `words` (any
    case) when given.  Returns that line."""
    wait_until(lambda: [ln for ln in peer_lines(s, port) if ln.split()[0] in NOTICE_UP], timeout=10,
               what="a log line about %s (127.0.0.1:%d)" % (what, port))
    time.sleep(0.05)  # a second line, if any, comes with the first (same close)
    lines = [ln for ln in peer_lines(s, port) if ln.split()[0] in NOTICE_UP]
    assert len(lines) == 1, "%s: want one log line at NOTICE or above, got:\n%s" % (what, "\n".join(lines))
    if words:
        assert any(w in lines[0].lower() for w in words), \
            "%s: the log line does not say why (none of %r): %s" % (what, words, lines[0])
    print("# %s: logged: %s" % (what, lines[0].split("] ", 1)[-1]), flush=True)
    return lines[0]


def still_serves(s):
    with s.conn() as c:
        echo(c, "still here")


def client_hello():
    """The bytes of a real TLS ClientHello (made without a network)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx().wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:20]
    return hello


def raise_nofile(need):
    """Raises this process's descriptor limit to at least `need` (the server
    inherits it); skips when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            gmtest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def server_nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                v = line.split()[3]
                return resource.RLIM_INFINITY if v == "unlimited" else int(v)
    fail("no 'Max open files' in /proc/%d/limits" % pid)


# ----------------------------------------------------------------------
# the basics


@test
def test_job_echo_and_admin_over_tls_with_the_servers_certificate():
    with tls_server() as s:
        w = s.conn()
        c = s.conn()
        a = s.conn()
        try:
            assert peer_fingerprint(c) == fix().fingerprint(fix().server), "another certificate was presented"
            assert c.sock.getpeercert()["subject"] == ((("commonName", "localhost"),),), c.sock.getpeercert()
            echo(c)
            w.send_packet("CAN_DO", "tls.rev")
            sync(w)
            h = gmtest.submit(c, "SUBMIT_JOB", "tls.rev", "u1", b"payload")
            w.send_packet("GRAB_JOB")
            p = w.expect("JOB_ASSIGN")
            assert p.fields(3) == [h.encode(), b"tls.rev", b"payload"], p
            w.send_packet("WORK_COMPLETE", h, b"daolyap")
            c.expect_packet("WORK_COMPLETE", h, b"daolyap")
            st = a.admin("status").decode()
            assert "tls.rev\t0\t0\t1" in st, st
            assert a.admin("version").startswith(b"OK "), "admin version over TLS"
        finally:
            for x in (w, c, a):
                x.close()


@test
def test_tls_1_2_and_1_3_accepted():
    with tls_server() as s:
        for v in ("1.2", "1.3"):
            with s.conn(tls=ctx(version=v)) as c:
                assert c.sock.version() == "TLSv" + v, (v, c.sock.version())
                echo(c, "v" + v)


@test
def test_tls_1_1_refused():
    # control: this client really offers TLS 1.1 (a Python server that
    # allows only 1.1 completes the handshake with it)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    sctx = tlsfix.server_context(fix(), version="1.1")
    got = {}

    def serve():
        c, _ = lsock.accept()
        try:
            with sctx.wrap_socket(c, server_side=True) as t:
                got["version"] = t.version()
                t.sendall(b"x")
        except (ssl.SSLError, OSError) as e:
            got["error"] = e
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    with Conn(lsock.getsockname()[1], tls=ctx(version="1.1")) as c:
        assert c.recv_exact(1) == b"x" and c.sock.version() == "TLSv1.1", c.sock.version()
    th.join(10)
    lsock.close()
    assert got.get("version") == "TLSv1.1", got
    # our server refuses it
    with tls_server() as s:
        try:
            Conn(s.port, tls=ctx(version="1.1")).close()
            fail("a TLS 1.1 handshake succeeded")
        except ssl.SSLError as e:
            assert re.search(r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE", str(e).upper()), \
                "refused for another reason: %s" % e
        except OSError:
            pass  # closed without an alert: refused too
        still_serves(s)


@test
def test_openssl_s_client_verifies_the_server_and_gets_an_echo():
    exe = shutil.which("openssl")
    assert exe, "openssl not installed"
    with tls_server(ca=True) as s:
        cert, key = fix().client("billing")
        p = subprocess.Popen([exe, "s_client", "-connect", "127.0.0.1:%d" % s.port, "-CAfile", fix().ca,
                              "-verify_return_error", "-verify_hostname", "localhost", "-servername", "localhost",
                              "-cert", cert, "-key", key, "-brief"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            req = packet("ECHO_REQ", "from s_client")
            p.stdin.write(req + b"version\r\n")
            p.stdin.flush()
            want = response("ECHO_RES", "from s_client")
            out = b""
            deadline = time.time() + 15
            import select
            while not (out.startswith(want) and b"\n" in out[len(want):]) and time.time() < deadline:
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    out += chunk
            assert out.startswith(want), "s_client got %r" % out[:200]
            assert out[len(want):].startswith(b"OK "), "admin version over s_client: %r" % out[len(want):]
        finally:
            try:
                _, err = p.communicate(timeout=10)  # closes its input: s_client ends
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
        err = err.decode(errors="replace")
        assert "Verification: OK" in err, "s_client did not verify the server:\n" + err
        assert re.search(r"Protocol version: TLSv1\.[23]", err), err


# ----------------------------------------------------------------------
# hostile or broken peers


@test
def test_plain_text_to_the_tls_port_is_closed_and_logged_once():
    with tls_server() as s:
        keep = s.conn()  # a TLS client that must not be disturbed
        echo(keep, "before")
        ports = []
        for data in (packet("ECHO_REQ", "plain"), b"status\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
            with Conn(s.port) as c:
                ports.append(c.sock.getsockname()[1])
                c.send(data)
                assert c.closed(15), "plain text %r: the connection stays open" % data[:20]
                assert b"\0RES" not in c.buf and b"OK" not in c.buf and b"HTTP/" not in c.buf, \
                    "plain text %r got an answer: %r" % (data[:20], c.buf[:100])
        for port in ports:
            logged_once(s, port, "plain text on the TLS port", words=("tls", "handshake"))
        echo(keep, "after")
        still_serves(s)
        keep.close()


@test
def test_a_peer_that_closes_before_its_handshake_is_not_an_error():
    # port probes and load balancers' TCP checks connect and close: not an
    # error, as on a plain port ("Peer connection has called close()", INFO)
    with tls_server() as s:
        with Conn(s.port) as c:
            port = c.sock.getsockname()[1]
        wait_until(lambda: any("Disconnected" in ln for ln in peer_lines(s, port)), timeout=10,
                   what="the close of 127.0.0.1:%d to be logged" % port)
        bad = [ln for ln in peer_lines(s, port) if ln.split()[0] in ("ERROR", "WARNING")]
        assert not bad, "a connect-and-close is logged as a failure: %r" % bad
        still_serves(s)


@test
def test_stalled_handshakes_do_not_hold_up_other_clients():
    # a long handshake time-out: the stalled peers stay for the whole test
    hello = client_hello()
    with tls_server("-t", "1", timeout=300) as s:  # one I/O thread: a blocked one would show
        stalled = []
        try:
            for i in range(4):
                c = Conn(s.port)
                if i % 2:
                    c.send(hello[:len(hello) // 2])  # half a ClientHello
                stalled.append(c)
            # others get through while they stall (a blocking handshake
            # would hold this one until the stalled peers' 300 s are up)
            for i in range(3):
                with s.conn(timeout=20) as c:
                    echo(c, "meanwhile %d" % i)
            time.sleep(0.2)
            for c in stalled:
                c.nothing(0.01)  # not closed early, and nothing sent to them
        finally:
            for c in stalled:
                c.close()


@test
def test_stalled_handshake_is_closed_after_the_handshake_timeout():
    hello = client_hello()
    with tls_server(timeout=1) as s:
        idle = s.conn()  # handshake done, then idle: the deadline is not for it
        echo(idle, "idle")
        silent, half, slow = Conn(s.port), Conn(s.port), Conn(s.port)
        half.send(hello[:len(hello) // 2])
        t0 = time.time()

        def trickle():
            # the ClientHello a byte every 0.25 s (two minutes for all of
            # it): the time-out counts from the accept, not from the last byte
            for i in range(len(hello)):
                try:
                    slow.send(hello[i:i + 1])
                except OSError:
                    return
                time.sleep(0.25)
        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        peers = ((silent, "a peer that sends nothing"), (half, "half a ClientHello"),
                 (slow, "a ClientHello a byte at a time"))
        for c, what in peers:
            assert c.closed(20), "%s: still open 20 s after connecting, --ssl-handshake-timeout 1" % what
            assert c.buf[:4] != b"\0RES", c.buf
        took = time.time() - t0
        assert took >= 0.5, "closed after %.2f s, before the 1 s time-out" % took
        th.join(5)
        for c, what in peers:
            logged_once(s, c.sock.getsockname()[1], what, words=("handshake", "time"))
            c.close()
        echo(idle, "still idle")  # an established connection outlives the handshake deadline
        idle.close()
        still_serves(s)


# ----------------------------------------------------------------------
# client certificates


@test
def test_verify_client_refuses_no_certificate_another_ca_and_expired():
    f = fix()
    with tls_server(ca=True, verify=True) as s:
        keep = s.conn()
        echo(keep)
        cases = [
            ("no certificate", ctx(), ("certificate", "no peer", "peer did not")),
            ("another CA's certificate", ctx(f.rogue, f.rogue_key), ("issuer", "unknown ca", "verify")),
            ("an expired certificate", ctx(f.expired, f.expired_key), ("expired",)),
        ]
        for what, context, words in cases:
            port, why = refused(s.port, context, what)
            print("# %s: %s" % (what, why), flush=True)
            logged_once(s, port, what, words)
        echo(keep, "undisturbed")
        keep.close()


@test
def test_verify_client_accepts_the_cas_certificate():
    with tls_server(ca=True, verify=True) as s:
        with s.conn() as c:
            echo(c)
            c.send_packet("CAN_DO", "billing.charge")
            sync(c)
            with s.conn() as a:
                assert "billing.charge\t0\t0\t1" in a.admin("status").decode()


@test
def test_with_a_ca_but_no_verify_client_no_certificate_is_accepted_a_bad_one_refused():
    f = fix()
    with tls_server(ca=True) as s:
        with s.conn(tls=ctx()) as c:
            echo(c, "no certificate")
        with s.conn() as c:
            echo(c, "good certificate")
        for what, context, words in (("another CA's certificate", ctx(f.rogue, f.rogue_key),
                                      ("issuer", "unknown ca", "verify")),
                                     ("an expired certificate", ctx(f.expired, f.expired_key), ("expired",))):
            port, why = refused(s.port, context, what)
            print("# %s: %s" % (what, why), flush=True)
            logged_once(s, port, what, words)
        still_serves(s)


def workers_client_ids(admin):
    """{function: client id} from `workers` (lines "FD ADDRESS CLIENT-ID :
    FUNCTIONS"), for connections that registered one function each."""
    out = {}
    for line in admin.admin("workers").decode().splitlines():
        head, _, fns = line.partition(" : ")
        f = head.split(" ")
        if fns and len(f) >= 3:
            out[fns.strip()] = f[2]
    return out


@test
def test_a_verified_certificate_names_the_connection_cn_in_the_log():
    with tls_server(ca=True) as s:
        with s.conn() as c, s.conn(tls=ctx()) as anon:
            echo(c)
            echo(anon)
            port, anon_port = c.sock.getsockname()[1], anon.sock.getsockname()[1]
            line = wait_until(lambda: [ln for ln in peer_lines(s, port) if "cn:" in ln], timeout=10,
                              what="a log line with the identity of 127.0.0.1:%d" % port)[0]
            assert re.search(r"\bcn:billing\b", line), line
            assert not [ln for ln in peer_lines(s, anon_port) if "cn:" in ln], \
                "a connection without a certificate got a cn: %r" % peer_lines(s, anon_port)


@test
def test_a_verified_certificate_names_the_connection_cn_in_workers():
    # a cn: identity shows in the client-id column when the client set none
    # (an ip: one is the address column already: that stays "-", as in
    # gearmand; docs/security.md)
    with tls_server(ca=True) as s:
        with s.conn() as c, s.conn(tls=ctx()) as anon, s.conn() as a:
            c.send_packet("CAN_DO", "f.cert")
            anon.send_packet("CAN_DO", "f.anon")
            sync(c)
            sync(anon)
            ids = workers_client_ids(a)
            assert ids.get("f.cert") == "cn:billing", "client id of a verified CN=billing: %r" % ids
            assert ids.get("f.anon") == "-", "client id without a certificate: %r" % ids
            c.send_packet("SET_CLIENT_ID", "mine")
            sync(c)
            ids = workers_client_ids(a)
            assert ids.get("f.cert") == "mine", "a client id the client set wins: %r" % ids


# ----------------------------------------------------------------------
# many connections


N_CONNS = 1000
# The server accepts all 1000 at once, and this client (one Python thread)
# gets through their handshakes one by one: on a loaded machine, under
# AddressSanitizer, that can take longer than the default 10 s time-out,
# which counts from the accept.  The capacity is the point here, not the
# time-out (tested above): both are set generously.
HANDSHAKE_WAIT = 300


async def _many(port, context, n):
    async def one(i):
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost",
                                    ssl_handshake_timeout=HANDSHAKE_WAIT), HANDSHAKE_WAIT + 30)
        w.write(packet("ECHO_REQ", "e%d" % i))
        want = response("ECHO_RES", "e%d" % i)
        got = await asyncio.wait_for(r.readexactly(len(want)), 60)
        assert got == want, (i, got)
        return r, w

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    errors = [e for e in results if isinstance(e, BaseException)]
    conns = [x for x in results if not isinstance(x, BaseException)]
    return conns, errors


async def _close_all(conns):
    for _, w in conns:
        w.close()
    await asyncio.gather(*(asyncio.wait_for(w.wait_closed(), 10) for _, w in conns), return_exceptions=True)


@test
def test_1000_tls_connections_at_once_each_echo():
    raise_nofile(2 * N_CONNS + 200)
    with tls_server("-b", "1024", timeout=HANDSHAKE_WAIT) as s:
        limit = server_nofile(s.proc.pid)
        assert limit == resource.RLIM_INFINITY or limit >= N_CONNS + 50, \
            "the server may open only %d descriptors, fewer than %d connections" % (limit, N_CONNS)
        loop = asyncio.new_event_loop()
        try:
            t0 = time.time()
            conns, errors = loop.run_until_complete(_many(s.port, good_client(), N_CONNS))
            took = time.time() - t0
            try:
                if errors:
                    why = collections.Counter(ln.split(": ", 1)[-1] for ln in s.log_text().splitlines()
                                              if "Disconnected" in ln)
                    fail("%d of %d connections failed; first: %r; the server's reasons: %r"
                         % (len(errors), N_CONNS, errors[0], dict(why)))
                print("# %d TLS handshakes and ECHOs at once: %.1f s" % (N_CONNS, took), flush=True)
                with s.conn() as a:
                    n = len(a.admin("workers").decode().splitlines()) - 1
                    assert n == N_CONNS + 1, "the server lists %d connections, want %d" % (n, N_CONNS + 1)
            finally:
                loop.run_until_complete(_close_all(conns))
        finally:
            loop.close()
        with s.conn() as a:
            wait_until(lambda: len(a.admin("workers").splitlines()) - 1 <= 1, timeout=20,
                       what="the 1000 connections to be gone")
            echo(a, "after")


# ----------------------------------------------------------------------
# SIGHUP


def live_files(cert, key):
    """Copies cert and key to the paths a server is started with (the
    SIGHUP tests change them under it)."""
    f = fix()
    lc, lk = f.path("live-%d.pem" % os.getpid()), f.path("live-%d.key" % os.getpid())
    put(cert, lc)
    put(key, lk)
    return lc, lk


def put(src, dst):
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def fingerprint_now(s):
    with Conn(s.port, tls=s.tls) as c:
        return peer_fingerprint(c)


@test
def test_sighup_with_a_good_new_certificate_serves_it_and_keeps_old_connections():
    f = fix()
    old_fp, new_fp = f.fingerprint(f.server), f.fingerprint(f.server2)
    lc, lk = live_files(f.server, f.server_key)
    with tls_server(cert=lc, key=lk) as s:
        old = s.conn()
        assert peer_fingerprint(old) == old_fp
        echo(old, "before")
        put(f.server2_key, lk)
        put(f.server2, lc)
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: fingerprint_now(s) == new_fp, timeout=15,
                   what="new connections to get the new certificate after SIGHUP")
        echo(old, "old connection after SIGHUP")
        with s.conn() as c:
            echo(c, "new connection")
        old.close()


@test
def test_sighup_with_a_bad_new_certificate_keeps_the_old_one_and_logs_why():
    f = fix()
    old_fp, new_fp = f.fingerprint(f.server), f.fingerprint(f.server2)
    lc, lk = live_files(f.server, f.server_key)
    with tls_server(cert=lc, key=lk) as s:
        old = s.conn()
        echo(old)
        for what, bad_cert, bad_key in (("a key that does not match", f.server2, f.server_key),
                                        ("a file that is not PEM", None, None)):
            put(lc, lc + ".keep")
            if bad_cert:
                put(bad_cert, lc)
                put(bad_key, lk)
            else:
                with open(lc + ".tmp", "w") as out:
                    out.write("this is not a certificate\n")
                os.replace(lc + ".tmp", lc)
            size = len(s.log_text())
            s.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: lc in s.log_text()[size:] or lk in s.log_text()[size:], timeout=15,
                       what="a log line naming the bad file after SIGHUP (%s)" % what)
            assert fingerprint_now(s) == old_fp, "%s: the server dropped its certificate" % what
            echo(old, "old connection after a bad SIGHUP")
            put(f.server, lc)
            put(f.server_key, lk)
            os.unlink(lc + ".keep")
        # a good set after the bad ones is taken
        put(f.server2_key, lk)
        put(f.server2, lc)
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: fingerprint_now(s) == new_fp, timeout=15,
                   what="the good certificate after the bad ones")
        old.close()


@test
def test_sighup_with_a_new_ca_changes_which_client_certificates_are_accepted():
    f = fix()
    ca = f.path("live-ca-%d.pem" % os.getpid())
    put(f.ca, ca)
    rogue = ctx(f.rogue, f.rogue_key)
    with Server(*ssl_args(verify=True) + ["--ssl-ca-file", ca], tls=good_client(), env=_no_tls_env()) as s:
        old = s.conn()
        echo(old)
        refused(s.port, rogue, "another CA's certificate before SIGHUP")
        put(f.rogue_ca, ca)
        size = len(s.log_text())
        s.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: TLS" in s.log_text()[size:], timeout=15, what="the reload to be logged")
        with s.conn(tls=rogue) as c:
            echo(c, "the new CA's client")
        refused(s.port, good_client(), "the old CA's certificate after SIGHUP")
        echo(old, "a connection made under the old CA stays")
        old.close()


# ----------------------------------------------------------------------
# start-up errors


def startup_error(*args):
    """Runs gearmand with args; it must exit non-zero within 15 s.
    Returns what it said (stderr, stdout and its log)."""
    s = Server(*args, env=_no_tls_env())
    open(os.path.join(s.dir, "none.conf"), "w").close()
    try:
        r = subprocess.run(s.args, env=s.env, capture_output=True, text=True, errors="replace", timeout=15)
    except subprocess.TimeoutExpired:
        fail("gearmand %s started (still running after 15 s)" % " ".join(args))
    said = r.stderr + r.stdout + s.log_text()
    assert r.returncode != 0, "gearmand %s exited 0: %s" % (" ".join(args), said)
    return said


@test
def test_startup_errors_name_the_missing_unreadable_or_mismatched_file():
    f = fix()
    missing = f.path("no-such-file.pem")
    notpem = f.path("not-pem.pem")
    with open(notpem, "w") as out:
        out.write("not a certificate\n")
    if os.geteuid() == 0:
        # root reads any file: a directory stands for one that cannot be read
        unreadable = f.path("a-directory.pem")
        os.makedirs(unreadable, exist_ok=True)
    else:
        unreadable = f.path("unreadable.pem")
        shutil.copyfile(f.server, unreadable)
        os.chmod(unreadable, 0)
    # (what, options, the file the error must name, a word it must say)
    cases = [
        ("missing certificate", ["--ssl-certificate", missing, "--ssl-key", f.server_key], missing, "no such"),
        ("missing key", ["--ssl-certificate", f.server, "--ssl-key", missing], missing, "no such"),
        ("missing CA", ["--ssl-certificate", f.server, "--ssl-key", f.server_key, "--ssl-ca-file", missing],
         missing, "no such"),
        ("unreadable certificate", ["--ssl-certificate", unreadable, "--ssl-key", f.server_key], unreadable, ""),
        ("certificate not PEM", ["--ssl-certificate", notpem, "--ssl-key", f.server_key], notpem, "pem"),
        ("key not PEM", ["--ssl-certificate", f.server, "--ssl-key", notpem], notpem, "pem"),
        ("CA not PEM", ["--ssl-certificate", f.server, "--ssl-key", f.server_key, "--ssl-ca-file", notpem],
         notpem, "pem"),
        ("mismatched key", ["--ssl-certificate", f.server, "--ssl-key", f.server2_key], f.server2_key, "match"),
    ]
    if not os.path.exists("/usr/local/etc/ssl/certs/gearmand.pem"):
        # no option, no variable: the default file, named
        cases.append(("default certificate missing", [], "gearmand.pem", ""))
    for what, args, name, word in cases:
        said = startup_error("--ssl", *args)
        line = [ln for ln in said.splitlines() if name in ln]
        assert line, "%s: the error does not name %s:\n%s" % (what, name, said[-2000:])
        assert word in line[0].lower(), "%s: the error does not say %r: %s" % (what, word, line[0])
        print("# %s: %s" % (what, line[0].split("] ", 1)[-1]), flush=True)
    # and the working set starts (the cases above fail for their file only)
    with tls_server() as s:
        still_serves(s)


@test
def test_gearmands_variables_name_the_files():
    f = fix()
    env = {"GEARMAND_SERVER_PEM": f.server, "GEARMAND_SERVER_KEY": f.server_key,
           "GEARMAND_CA_CERTIFICATE": f.ca}
    with Server("--ssl", "--ssl-verify-client", env=env, tls=good_client()) as s:
        with s.conn() as c:
            assert peer_fingerprint(c) == f.fingerprint(f.server)
            echo(c)
        port, _ = refused(s.port, ctx(), "no certificate, CA from GEARMAND_CA_CERTIFICATE")
        logged_once(s, port, "no certificate")


# ----------------------------------------------------------------------
# HTTPS


class HttpsServer(Server):
    def __init__(self, *args, **kw):
        self.http_port = free_port()
        super().__init__("-r", "http", "--http-port", str(self.http_port), *(ssl_args() + list(args)),
                         tls=good_client(), env=_no_tls_env(), **kw)

    def start(self, wait=10.0):
        super().start(wait)
        wait_until(lambda: gmtest.port_open(self.http_port), timeout=wait, what="the HTTPS port")
        return self

    def get(self, path, context=None):
        hc = http.client.HTTPSConnection("127.0.0.1", self.http_port, timeout=10, context=context or ctx())
        try:
            hc.request("GET", path)
            r = hc.getresponse()
            return r.status, r.getheader("Content-Type", ""), r.read()
        finally:
            hc.close()


@test
def test_https_serves_health_metrics_status_and_the_monitor():
    import json
    with HttpsServer() as s:
        st, ct, body = s.get("/health")
        assert st == 200 and json.loads(body)["live"] is True, (st, body[:200])
        st, ct, body = s.get("/metrics")
        assert st == 200 and ct.startswith("text/plain") and b"\ngearman_" in b"\n" + body, (st, ct, body[:200])
        st, ct, body = s.get("/api/status")
        assert st == 200 and json.loads(body)["server"]["pid"] == s.proc.pid, (st, body[:300])
        st, ct, body = s.get("/")
        assert st == 200 and ct.startswith("text/html") and b"<html" in body.lower(), (st, ct, body[:100])
        # the certificate is the server's, checked for the address 127.0.0.1
        hc = http.client.HTTPSConnection("127.0.0.1", s.http_port, timeout=10, context=ctx())
        hc.connect()
        assert tlsfix.Fixture.der_fingerprint(hc.sock.getpeercert(True)) == fix().fingerprint(fix().server)
        hc.close()


@test
def test_https_with_verify_client_needs_the_cas_certificate_too():
    f = fix()
    with HttpsServer("--ssl-ca-file", f.ca, "--ssl-verify-client") as s:
        st, _, body = s.get("/health", context=good_client())
        assert st == 200, (st, body[:200])
        for what, context in (("no certificate", ctx()), ("an expired certificate", ctx(f.expired, f.expired_key))):
            try:
                st, _, body = s.get("/health", context=context)
                fail("HTTPS with %s was answered: %s %r" % (what, st, body[:100]))
            except (ssl.SSLError, OSError, http.client.HTTPException) as e:
                print("# HTTPS with %s: %s: %s" % (what, type(e).__name__, e), flush=True)


@test
def test_plain_http_to_the_https_port_is_refused():
    with HttpsServer() as s:
        with Conn(s.http_port) as c:
            port = c.sock.getsockname()[1]
            c.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert c.closed(15), "plain HTTP on the HTTPS port: the connection stays open"
            assert b"HTTP/" not in c.buf and b"live" not in c.buf, "plain HTTP got an answer: %r" % c.buf[:200]
        logged_once(s, port, "plain HTTP on the HTTPS port", words=("tls", "handshake"))
        st, _, _ = s.get("/health")
        assert st == 200, st


if __name__ == "__main__":
    gmtest.main()
