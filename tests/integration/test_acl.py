#!/usr/bin/env python3
"""Identities and permissions (--acl-file, --http-token-file;
docs/security.md): each permission granted and denied on the wire, in the
admin protocol and over HTTP (bearer tokens, 401, 403), the denials'
counter in /metrics and their log lines, SIGHUP with a good and a bad new
file (a worker losing a function it may no longer work on), a bad file at
start-up, and no ACL file = the rules as before.

Most identities here are ip: ones: the test connects from several
loopback addresses (127.0.0.1 to 127.0.0.5, and ::1), which the server
sees as different peers; one test gives connections cn: identities with
TLS client certificates (tests/lib/tlsfix.py), on the Gear port and over
HTTPS.
"""

import http.client
import json
import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import Server, fail, free_port, sync, test, wait_until  # noqa: E402

ACL = """\
# clients
ip:127.0.0.1      submit  billing.*
ip:127.0.0.2      submit  *
# workers
ip:127.0.0.3      work    billing.*
ip:127.0.0.1      work    images
# a read-only monitor, and an operator
ip:127.0.0.4      admin-read *
ip:127.0.0.5      admin   *
token:monitor     admin-read *
token:ops         admin   *
token:biller      submit  billing.*
"""

TOKENS = """\
# name   token
monitor  monitor-token-0123456789
ops      ops-token-0123456789abcdef
biller   biller-token-0123456789ab
"""

SUBMITS = ["SUBMIT_JOB", "SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH", "SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_LOW",
           "SUBMIT_JOB_LOW_BG"]


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


class AclServer(Server):
    """A gearmand with an ACL file and a token file (in its own directory,
    rewritten by reload()), and the HTTP front-end when http=True."""

    def __init__(self, acl=ACL, tokens=TOKENS, http=False, args=(), **kw):
        self.http_port = free_port() if http else None
        d = tempfile.mkdtemp(prefix="gmacl-")
        self.acl_path = write(os.path.join(d, "gearmand.acl"), acl, 0o644) if acl is not None else None
        self.token_path = write(os.path.join(d, "tokens"), tokens) if tokens is not None else None
        more = list(args)
        if self.acl_path:
            more += ["--acl-file", self.acl_path]
        if self.token_path:
            more += ["--http-token-file", self.token_path]
        if http:
            more += ["-r", "http", "--http-port", str(self.http_port)]
        super().__init__(*more, **kw)

    def start(self, wait=10.0):
        super().start(wait)
        if self.http_port:
            wait_until(lambda: gmtest.port_open(self.http_port), what="the HTTP port")
        return self

    def at(self, source, host="127.0.0.1"):
        """A connection from the loopback address `source`."""
        return gmtest.Conn(self.port, host=host, source=source)

    def reload(self, acl, marker):
        """Writes a new ACL file and sends SIGHUP; returns once the log
        says it was read (marker: a line of the log that says so, counted
        before)."""
        before = self.log_text().count(marker)
        write(self.acl_path, acl, 0o644)
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log_text().count(marker) > before, what="the reload in the log")

    def http(self, method, path, source="127.0.0.1", token=None, headers=None, body=None):
        """One HTTP request from `source`; returns (status, headers, body)."""
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10, source_address=(source, 0))
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        c.close()
        return out


def denied_text(who, perm, what):
    return "%s lacks %s for %s" % (who, perm, what)


def expect_denied(c, who, perm, what):
    c.expect_packet("ERROR", "PERMISSION_DENIED", denied_text(who, perm, what))


def metrics(s):
    """/metrics's gearman_denied_total samples, by permission."""
    st, _, body = s.http("GET", "/metrics", token="ops-token-0123456789abcdef")
    assert st == 200, (st, body)
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("gearman_denied_total{"):
            perm = line.split('"')[1]
            out[perm] = int(line.rsplit(" ", 1)[1])
    return out


# ----------------------------------------------------------------------
# the wire: submit, GET_STATUS, CAN_DO

@test
def test_submit_granted_and_denied_for_every_variant():
    with AclServer() as s:
        with s.at("127.0.0.1") as c, s.at("127.0.0.5") as a:
            for t in SUBMITS:
                gmtest.submit(c, t, "billing.invoice", "u-" + t)
            gmtest.submit(c, "SUBMIT_JOB_EPOCH", "billing.later", "e", b"x", str(int(time.time()) + 3600))
            for t in SUBMITS:
                c.send_packet(t, "payroll", "u", "x")
                expect_denied(c, "ip:127.0.0.1", "submit", "function payroll")
            c.send_packet("SUBMIT_JOB_EPOCH", "payroll", "u", "0", "x")
            expect_denied(c, "ip:127.0.0.1", "submit", "function payroll")
            c.send_packet("SUBMIT_JOB_SCHED", "payroll", "u", "*", "*", "*", "*", "*", "x")
            expect_denied(c, "ip:127.0.0.1", "submit", "function payroll")
            for t in ("SUBMIT_REDUCE_JOB", "SUBMIT_REDUCE_JOB_BACKGROUND"):
                c.send_packet(t, "payroll", "u", "reducer", "", "x")
                expect_denied(c, "ip:127.0.0.1", "submit", "function payroll")
            sync(c)  # the connection stays
            status = a.admin("status").decode()
            assert "payroll" not in status, status  # no job, not even the function
            assert gmtest.status_of(a, "billing.invoice")[0] == len(SUBMITS)
        with s.at("127.0.0.2") as c:  # `submit *`
            gmtest.submit(c, "SUBMIT_JOB_BG", "payroll", "p")
        with s.at("127.0.0.4") as c:  # admin-read does not submit
            c.send_packet("SUBMIT_JOB_BG", "billing.x", "u", "x")
            expect_denied(c, "ip:127.0.0.4", "submit", "function billing.x")


@test
def test_get_status_needs_submit_on_the_jobs_function():
    with AclServer() as s:
        with s.at("127.0.0.2") as owner, s.at("127.0.0.1") as other:
            h = gmtest.submit(owner, "SUBMIT_JOB_BG", "payroll", "pay-1")
            mine = gmtest.submit(other, "SUBMIT_JOB_BG", "billing.x", "bill-1")
            owner.send_packet("GET_STATUS", h)
            owner.expect_packet("STATUS_RES", h, "1", "0", "0", "0")
            other.send_packet("GET_STATUS", h)
            other.expect_packet("ERROR", "PERMISSION_DENIED",
                                "ip:127.0.0.1 lacks submit for the function of that job")
            other.send_packet("GET_STATUS_UNIQUE", "pay-1")
            other.expect_packet("ERROR", "PERMISSION_DENIED",
                                "ip:127.0.0.1 lacks submit for the function of that job")
            other.send_packet("GET_STATUS", mine)
            other.expect_packet("STATUS_RES", mine, "1", "0", "0", "0")
            other.send_packet("GET_STATUS_UNIQUE", "bill-1")
            other.expect_packet("STATUS_RES_UNIQUE", "bill-1", "1", "0", "0", "0", "0")
            # an unknown job is answered as always: it reveals nothing
            other.send_packet("GET_STATUS", "H:nothing:1")
            other.expect_packet("STATUS_RES", "H:nothing:1", "0", "0", "0", "0")
            other.send_packet("GET_STATUS_UNIQUE", "nothing")
            other.expect_packet("STATUS_RES_UNIQUE", "nothing", "0", "0", "0", "0", "0")


@test
def test_can_do_needs_work_and_a_denied_worker_stays_connected():
    with AclServer() as s:
        with s.at("127.0.0.3") as w, s.at("127.0.0.5") as a, s.at("127.0.0.1") as c:
            w.send_packet("CAN_DO", "billing.x")
            w.send_packet("CAN_DO", "images")
            expect_denied(w, "ip:127.0.0.3", "work", "function images")
            w.send_packet("CAN_DO_TIMEOUT", "payroll", "5000")
            expect_denied(w, "ip:127.0.0.3", "work", "function payroll")
            sync(w)
            line = [ln for ln in a.admin("workers").decode().splitlines() if "127.0.0.3" in ln]
            assert len(line) == 1 and line[0].endswith("127.0.0.3 - : billing.x"), line
            assert "images" not in a.admin("status").decode()
            # what it registered works
            h = gmtest.submit(c, "SUBMIT_JOB_BG", "billing.x", "b")
            assert gmtest.grab(w) == (h, "billing.x", b"x")
            w.send_packet("WORK_COMPLETE", h, "done")
            sync(w)
            # 127.0.0.1 works on images, not on billing
            with s.at("127.0.0.1") as w2:
                w2.send_packet("CAN_DO", "images")
                w2.send_packet("CAN_DO", "billing.x")
                expect_denied(w2, "ip:127.0.0.1", "work", "function billing.x")


# ----------------------------------------------------------------------
# the admin protocol

READERS = ["status", "prioritystatus", "workers", "show jobs", "show unique jobs", "show policies", "show dead",
           "version", "getpid", "verbose"]
CHANGERS = ["cancel job H:x:1", "create function f", "drop function f", "maxqueue f 1", "policy f retries=1",
            "pause f", "resume f", "purge f", "retry dead all f", "discard dead all f", "shutdown"]


@test
def test_admin_read_reads_and_admin_changes():
    with AclServer() as s:
        with s.at("127.0.0.4") as ro, s.at("127.0.0.1") as none, s.at("127.0.0.5") as op:
            for cmd in READERS:
                assert not ro.admin(cmd).startswith(b"ERR"), cmd
                got = none.admin(cmd)
                want = "ERR PERMISSION_DENIED %s\r\n" % denied_text("ip:127.0.0.1", "admin-read",
                                                                     cmd.split()[0]).replace(" ", "+")
                assert got == want.encode(), (cmd, got)
            for cmd in CHANGERS:
                got = ro.admin(cmd)
                want = "ERR PERMISSION_DENIED %s\r\n" % denied_text("ip:127.0.0.4", "admin",
                                                                     cmd.split()[0]).replace(" ", "+")
                assert got == want.encode(), (cmd, got)
            # an unknown command needs nothing: it does nothing
            assert none.admin("frobnicate").startswith(b"ERR UNKNOWN_COMMAND")
            assert op.admin("create function f") == b"OK\r\n"
            assert op.admin("maxqueue f 3") == b"OK\r\n"
            assert b"f\t0\t0\t0" in ro.admin("status")
        assert s.proc.poll() is None
        # shutdown: the ACL decides, not the loopback rule (127.0.0.4 is
        # loopback and may not; 127.0.0.5 may)
        with s.at("127.0.0.5") as op:
            assert op.burst(b"shutdown\r\n") == b"OK\r\n"
        assert s.proc.wait(timeout=30) == 0


# ----------------------------------------------------------------------
# HTTP: tokens, 401, 403

def forbidden(r, who, perm):
    st, h, body = r
    assert st == 403, r
    assert h["content-type"].startswith("application/json"), h
    assert json.loads(body) == {"error": "permission denied", "identity": who, "permission": perm}, body


@test
def test_http_views_need_admin_read_and_actions_admin():
    with AclServer(http=True) as s:
        mon, ops = "monitor-token-0123456789", "ops-token-0123456789abcdef"
        for path in ("/api/status", "/api/workers", "/api/jobs", "/metrics", "/", "/api/dead", "/api/policies"):
            forbidden(s.http("GET", path), "ip:127.0.0.1", "admin-read")
            forbidden(s.http("GET", path, token="biller-token-0123456789ab"), "token:biller", "admin-read")
            assert s.http("GET", path, token=mon)[0] == 200, path
            assert s.http("GET", path, source="127.0.0.4")[0] == 200, path
        # /health is for everybody, token or not (but a bad token is a bad token)
        assert s.http("GET", "/health")[0] == 200
        assert s.http("GET", "/health", source="127.0.0.3")[0] == 200
        # the actions: admin; a loopback peer with admin-read only may not
        for path in ("/api/jobs/cancel?handle=H:x:1", "/api/dead/H:x:1/retry", "/api/functions/f/pause"):
            forbidden(s.http("POST", path, token=mon), "token:monitor", "admin")
            forbidden(s.http("POST", path, source="127.0.0.4"), "ip:127.0.0.4", "admin")
            st, _, body = s.http("POST", path, token=ops)
            assert st in (200, 404), (path, st, body)  # past the gate
        st, _, body = s.http("POST", "/api/jobs/cancel?handle=H:x:1", source="127.0.0.5")
        assert st == 404 and b"unknown job" in body, (st, body)


@test
def test_http_bearer_tokens_and_401():
    with AclServer(http=True) as s:
        for token in ("not-a-token-of-ours-at-all", "monitor-token-012345678", "monitor-token-01234567890", ""):
            st, h, body = s.http("GET", "/api/status", token=token)
            assert st == 401, (token, st, body)
            assert h.get("www-authenticate") == "Bearer", h
            doc = json.loads(body)
            assert doc["error"] == "unauthorized", doc
            assert not token or token.encode() not in body, body  # never echoed
        # a bad token on a job submission too, and on /health
        assert s.http("POST", "/billing.x", token="wrong-wrong-wrong-wrong",
                      headers={"X-Gearman-Background": "true"}, body=b"x")[0] == 401
        assert s.http("GET", "/health", token="wrong-wrong-wrong-wrong")[0] == 401
        # another scheme is not ours: the request is its address's
        st, _, _ = s.http("GET", "/api/status", source="127.0.0.4", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert st == 200
        # the connection stays usable after a 401 (keep-alive)
        c = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=10)
        c.request("GET", "/api/status", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        r = c.getresponse()
        r.read()
        assert r.status == 401
        c.request("GET", "/api/status", headers={"Authorization": "Bearer monitor-token-0123456789"})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["server"]["denied"]["admin-read"] == 0
        c.close()


@test
def test_http_submit_needs_submit_on_the_function():
    with AclServer(http=True) as s:
        bg = {"X-Gearman-Background": "true"}
        st, h, _ = s.http("POST", "/billing.x", token="biller-token-0123456789ab", headers=bg, body=b"1")
        assert st == 200 and h["x-gearman-job-handle"], (st, h)
        st, h, body = s.http("POST", "/payroll", token="biller-token-0123456789ab", headers=bg, body=b"1")
        assert st == 403, (st, body)
        assert json.loads(body) == {"error": "permission denied",
                                    "detail": "token:biller lacks submit for function payroll"}, body
        # the peer's address: 127.0.0.1 has billing.*, 127.0.0.2 everything
        assert s.http("POST", "/payroll", headers=bg, body=b"1")[0] == 403
        assert s.http("POST", "/payroll", source="127.0.0.2", headers=bg, body=b"1")[0] == 200
        # a token with admin does not submit
        assert s.http("POST", "/billing.x", token="ops-token-0123456789abcdef", headers=bg, body=b"1")[0] == 403
        with s.at("127.0.0.5") as a:
            assert gmtest.status_of(a, "billing.x")[0] == 1
            assert gmtest.status_of(a, "payroll")[0] == 1


# ----------------------------------------------------------------------
# counting and logging the denials

@test
def test_every_denial_is_counted_in_metrics_and_logged_under_a_budget():
    with AclServer(http=True) as s:
        before = metrics(s)
        assert before == {"submit": 0, "work": 0, "admin-read": 0, "admin": 0}, before
        with s.at("127.0.0.1") as c:
            t0 = time.time()
            for i in range(20):
                c.send_packet("SUBMIT_JOB_BG", "payroll", "u%d" % i, "x")
                expect_denied(c, "ip:127.0.0.1", "submit", "function payroll")
            elapsed = time.time() - t0
            c.send_packet("CAN_DO", "payroll")
            expect_denied(c, "ip:127.0.0.1", "work", "function payroll")
            assert c.admin("status").startswith(b"ERR PERMISSION_DENIED")
        with s.at("127.0.0.4") as ro:
            assert ro.admin("drop function x").startswith(b"ERR PERMISSION_DENIED")
        forbidden(s.http("GET", "/api/status", source="127.0.0.3"), "ip:127.0.0.3", "admin-read")
        after = metrics(s)
        assert after == {"submit": 20, "work": 1, "admin-read": 2, "admin": 1}, after
        log = s.log_text()
        lines = [ln for ln in log.splitlines() if "permission denied: ip:127.0.0.1 lacks" in ln]
        # at most one line a second for the identity (the first one at once)
        assert 1 <= len(lines) <= int(elapsed) + 3, (elapsed, lines)
        assert "permission denied: ip:127.0.0.1 lacks submit for function payroll (127.0.0.1:" in log, log[-2000:]
        assert "permission denied: ip:127.0.0.4 lacks admin for drop (127.0.0.4:" in log
        assert "permission denied: ip:127.0.0.3 lacks admin-read for HTTP /api/status (127.0.0.3:" in log
        assert "monitor-token" not in log and "ops-token" not in log


# ----------------------------------------------------------------------
# SIGHUP

RELOADED = "access control reloaded"


@test
def test_sighup_reads_a_good_file_and_keeps_the_old_rules_on_a_bad_one():
    with AclServer() as s:
        with s.at("127.0.0.1") as c:
            c.send_packet("SUBMIT_JOB_BG", "payroll", "a", "x")
            expect_denied(c, "ip:127.0.0.1", "submit", "function payroll")
            s.reload(ACL + "ip:127.0.0.1 submit payroll\n", RELOADED)
            gmtest.submit(c, "SUBMIT_JOB_BG", "payroll", "b")       # the same connection
            with s.at("127.0.0.1") as c2:
                gmtest.submit(c2, "SUBMIT_JOB_BG", "payroll", "c")  # and a new one
            # a bad file: logged with its line, the rules in force stay
            s.reload("ip:127.0.0.1 submit payroll\nip:127.0.0.1 sumbit *\n", "the access rules in force stay")
            assert '%s:2: unknown permission "sumbit"' % s.acl_path in s.log_text(), s.log_text()[-2000:]
            gmtest.submit(c, "SUBMIT_JOB_BG", "payroll", "d")
            gmtest.submit(c, "SUBMIT_JOB_BG", "billing.x", "e")       # not only the new file's line
            # a bad token file (beside a good ACL file) keeps both
            write(s.acl_path, ACL, 0o644)
            write(s.token_path, "short tooshort\n")
            s.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: s.log_text().count("the access rules in force stay") == 2, what="the second refusal")
            assert "%s:1: the token of short is shorter than 16 characters" % s.token_path in s.log_text()
            gmtest.submit(c, "SUBMIT_JOB_BG", "payroll", "f")
            # good files again: payroll is denied once more
            write(s.token_path, TOKENS)
            s.reload(ACL, RELOADED)
            c.send_packet("SUBMIT_JOB_BG", "payroll", "g", "x")
            c.expect("ERROR")


@test
def test_a_worker_loses_the_functions_a_reload_takes_away():
    with AclServer() as s:
        with s.at("127.0.0.3") as w, s.at("127.0.0.5") as a, s.at("127.0.0.2") as c:
            for f in ("billing.a", "billing.b"):
                w.send_packet("CAN_DO", f)
            sync(w)
            h = gmtest.submit(c, "SUBMIT_JOB_BG", "billing.b", "running")
            assert gmtest.grab(w) == (h, "billing.b", b"x")
            assert gmtest.status_of(a, "billing.b") == (1, 1, 1)
            s.reload(ACL.replace("ip:127.0.0.3      work    billing.*", "ip:127.0.0.3 work billing.a"), RELOADED)
            wait_until(lambda: gmtest.status_of(a, "billing.b")[2] == 0, what="billing.b's worker gone")
            # its running job went back to the queue, as after CANT_DO
            assert gmtest.status_of(a, "billing.b") == (1, 0, 0)
            assert gmtest.status_of(a, "billing.a")[2] == 1
            line = [ln for ln in a.admin("workers").decode().splitlines() if "127.0.0.3" in ln]
            assert len(line) == 1 and line[0].endswith(": billing.a"), line
            assert "ip:127.0.0.3 (127.0.0.3:" in s.log_text()
            assert "loses the function billing.b" in s.log_text()
            # and it cannot take it again
            w.send_packet("CAN_DO", "billing.b")
            expect_denied(w, "ip:127.0.0.3", "work", "function billing.b")


# ----------------------------------------------------------------------
# certificate identities (TLS)

CERT_ACL = """\
cn:billing-*   submit      billing.*
cn:img-*       work        images
cn:monitor     admin-read  *
ip:127.0.0.1   submit      plain
"""


@test
def test_certificate_identities_on_the_wire_and_over_https():
    import tlsfix
    fix = tlsfix.get()

    def ctx(name=None):
        return tlsfix.client_context(fix, *(fix.client(name) if name else (None, None)))

    ssl_args = ["--ssl", "--ssl-certificate", fix.server, "--ssl-key", fix.server_key, "--ssl-ca-file", fix.ca]
    env = {"GEARMAND_SERVER_PEM": "", "GEARMAND_SERVER_KEY": "", "GEARMAND_CA_CERTIFICATE": ""}
    with AclServer(acl=CERT_ACL, tokens=None, http=True, args=ssl_args, env=env, tls=ctx("monitor")) as s:
        def tls(name=None):
            return gmtest.Conn(s.port, tls=ctx(name))
        with tls("billing-eu") as c, tls("img-1") as w, tls() as anon, tls("monitor") as mon:
            gmtest.submit(c, "SUBMIT_JOB_BG", "billing.x", "a")
            c.send_packet("SUBMIT_JOB_BG", "plain", "b", "x")
            expect_denied(c, "cn:billing-eu", "submit", "function plain")
            w.send_packet("CAN_DO", "images")
            w.send_packet("CAN_DO", "billing.x")
            expect_denied(w, "cn:img-1", "work", "function billing.x")
            # no certificate: the address is the identity
            gmtest.submit(anon, "SUBMIT_JOB_BG", "plain", "c")
            anon.send_packet("SUBMIT_JOB_BG", "billing.x", "d", "x")
            expect_denied(anon, "ip:127.0.0.1", "submit", "function billing.x")
            assert anon.admin("status").startswith(b"ERR PERMISSION_DENIED ip:127.0.0.1+lacks+admin-read")
            # the monitor reads; the certificate's name stands for an unset client id
            line = [ln for ln in mon.admin("workers").decode().splitlines() if ln.endswith(": images")]
            assert len(line) == 1 and " cn:img-1 : images" in line[0], line
            assert mon.admin("cancel job H:x:1").startswith(b"ERR PERMISSION_DENIED cn:monitor+lacks+admin")
            # HTTPS: the certificate names the request too (the worker is still there)
            for name, want in (("monitor", 200), ("billing-eu", 403), (None, 403)):
                h = http.client.HTTPSConnection("127.0.0.1", s.http_port, timeout=10, context=ctx(name))
                h.request("GET", "/api/workers")
                r = h.getresponse()
                body = r.read()
                h.close()
                assert r.status == want, (name, r.status, body)
                if want == 200:
                    assert json.loads(body)["workers"][0]["identity"] == "cn:img-1", body
                else:
                    assert json.loads(body)["identity"] == ("cn:" + name if name else "ip:127.0.0.1"), body
        assert "permission denied: cn:billing-eu lacks submit for function plain (127.0.0.1:" in s.log_text()


# ----------------------------------------------------------------------
# start-up, IPv6, and no ACL file

@test
def test_a_bad_file_stops_start_up_with_its_line():
    for acl, tokens, want in (
            ("* submit *\n* work\n", TOKENS, "gearmand.acl:2: expected IDENTITY PERMISSION FUNCTION-PATTERN"),
            (ACL, "ops abc\n", "tokens:1: the token of ops is shorter than 16 characters"),
            (ACL, "a 0123456789abcdef\nb 0123456789abcdef\n", "tokens:2: the token of b is the token of line 1")):
        s = AclServer(acl=acl, tokens=tokens)
        try:
            s.start()
            s.stop()
            fail("started with a bad file: %r %r" % (acl, tokens))
        except RuntimeError:
            pass
        assert want in s.log_text(), (want, s.log_text()[-1000:])
        assert not gmtest.port_open(s.port)
    s = AclServer(acl=None, tokens=None, args=["--acl-file", "/nonexistent/gearmand.acl"])
    try:
        s.start()
        s.stop()
        fail("started without its ACL file")
    except RuntimeError:
        pass
    assert "/nonexistent/gearmand.acl: No such file or directory" in s.log_text()


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


@test
def test_ipv6_peers_have_ipv6_identities():
    if not have_ipv6_loopback():
        gmtest.skip("no IPv6 loopback here")
    acl = "ip:::1 submit v6\nip:127.0.0.0/8 submit v4\nip:::/0 admin-read *\n"
    with AclServer(acl=acl, tokens=None, listen=None) as s:
        with s.at(None, host="::1") as c6, s.at("127.0.0.1") as c4:
            gmtest.submit(c6, "SUBMIT_JOB_BG", "v6", "a")
            c6.send_packet("SUBMIT_JOB_BG", "v4", "b", "x")
            expect_denied(c6, "ip:::1", "submit", "function v4")
            gmtest.submit(c4, "SUBMIT_JOB_BG", "v4", "c")
            c4.send_packet("SUBMIT_JOB_BG", "v6", "d", "x")
            expect_denied(c4, "ip:127.0.0.1", "submit", "function v6")
            assert c6.admin("status").startswith(b"v6")
            # ::/0 holds the IPv4 peers too (as ::ffff:a.b.c.d)
            assert c4.admin("status").startswith(b"v6")


@test
def test_without_an_acl_file_the_rules_are_as_before():
    with AclServer(acl=None, tokens=None, http=True) as s:
        for src in ("127.0.0.1", "127.0.0.3"):
            with s.at(src) as c:
                gmtest.submit(c, "SUBMIT_JOB_BG", "anything", "u" + src)
                c.send_packet("CAN_DO", "anything")
                sync(c)
                assert c.admin("create function other") == b"OK\r\n"
                assert c.admin("status").startswith(b"anything\t")
        # a bearer token without a token file is not ours: ignored
        st, _, body = s.http("GET", "/api/status", token="whatever-whatever-whatever")
        assert st == 200, (st, body)
        assert s.http("POST", "/api/jobs/cancel?handle=H:x:1", source="127.0.0.3")[0] == 404
        assert metrics(s) == {"submit": 0, "work": 0, "admin-read": 0, "admin": 0}
    # a token file alone names requests and denies nothing (but a bad token)
    with AclServer(acl=None, http=True) as s:
        assert s.http("GET", "/api/status")[0] == 200
        assert s.http("GET", "/api/status", token="monitor-token-0123456789")[0] == 200
        assert s.http("GET", "/api/status", token="nope-nope-nope-nope")[0] == 401
        assert s.http("POST", "/api/jobs/cancel?handle=H:x:1", token="monitor-token-0123456789")[0] == 404


if __name__ == "__main__":
    gmtest.main()
