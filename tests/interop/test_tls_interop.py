#!/usr/bin/env python3
"""Interop over TLS: Debian's gearman tools and libgearman C programs
(gmclient.c), which speak only plain text, reach our gearmand --ssl through
stunnel4 in client mode (interop_lib.Stunnel: started by the test on a free
port, stopped after).

The server runs with --ssl-verify-client and the test CA (tests/lib/tlsfix.py);
stunnel checks the server's certificate and presents CN=billing, which the
server's log names (cn:billing).  A stunnel without a client certificate is
refused: the tools then fail, and the server logs why.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
import tlsfix  # noqa: E402
from gmtest import Server, fail, wait_until  # noqa: E402
from interop_lib import (ENV, Proc, need_gmclient, debian_tool, test,  # noqa: E402
                         wait_status, wait_workers, Stunnel)

HINT = "install gearman-tools"
R = {}  # the server and the tunnel every test shares


def front():
    """The gearmand --ssl --ssl-verify-client and a stunnel (CN=billing) in
    front of it, started on first use; returns the tunnel."""
    if "error" in R:
        fail(R["error"])
    if "tunnel" not in R:
        try:
            fix = tlsfix.get()
            cert, key = fix.client("billing")
            s = Server("--ssl", "--ssl-certificate", fix.server, "--ssl-key", fix.server_key,
                       "--ssl-ca-file", fix.ca, "--ssl-verify-client",
                       tls=tlsfix.client_context(fix, cert, key))
            s.start()
            R["server"] = s
            R["tunnel"] = Stunnel(s.port, fix.ca, cert, key).start()
        except Exception as e:  # noqa: BLE001 - every later test reports it
            R["error"] = "could not start gearmand --ssl and stunnel: %s: %s" % (type(e).__name__, e)
            raise
    return R["tunnel"]


def gearman(t, *args, input=b"", timeout=15.0):
    cmd = [debian_tool("gearman", HINT), "-h", "127.0.0.1", "-p", str(t.port)] + list(args)
    try:
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        fail("gearman %s hung through stunnel; stdout %r stderr %r\nstunnel log:\n%s"
             % (" ".join(args), e.stdout, e.stderr, t.log_text()[-2000:]))


def gearadmin(t, *args, timeout=15.0):
    cmd = [debian_tool("gearadmin", HINT), "-h", "127.0.0.1", "-p", str(t.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired:
        fail("gearadmin %s hung through stunnel" % " ".join(args))
    return r


def gearman_worker(t, *args):
    return Proc([debian_tool("gearman", HINT), "-h", "127.0.0.1", "-p", str(t.port), "-w"] + list(args),
                name="gearman -w " + " ".join(args))


def gm_worker(t, funcs, *extra):
    return Proc([need_gmclient(), "worker", "127.0.0.1", str(t.port), funcs] + list(extra),
                name="gmclient worker " + funcs)


def gm_client(t, *args, timeout=60.0):
    cmd = [need_gmclient(), "client", "127.0.0.1", str(t.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        fail("gmclient client %s hung through stunnel; output so far: %r" % (" ".join(args), e.stdout))
    return r.returncode, r.stdout.splitlines(), r.stdout + r.stderr


def all_ok(rc, lines, out, min_checks=1):
    checks = [ln for ln in lines if ln.startswith(("ok - ", "not ok - "))]
    bad = [ln for ln in checks if ln.startswith("not ok")]
    if bad or rc != 0 or len(checks) < min_checks:
        fail("gmclient rc=%s, %d checks, failures %r; output:\n%s" % (rc, len(checks), bad, out))


# ----------------------------------------------------------------------


@test
def test_stunnel_reaches_the_tls_port_with_its_client_certificate():
    t = front()
    with t.conn() as c:
        port_before = len(R["server"].log_text())
        gmtest.sync(c)
        assert c.admin("version").startswith(b"OK "), "admin version through stunnel"
    log = R["server"].log_text()[port_before:]
    assert re.search(r"TLS TLSv1\.[23] with 127\.0\.0\.1:\d+ as cn:billing", log), \
        "the server did not log a TLS connection as cn:billing:\n" + log[-2000:]


@test
def test_gearman_worker_and_client_through_stunnel():
    t = front()
    w = gearman_worker(t, "-f", "tls.rev", "--", "rev")
    try:
        wait_workers(t, "tls.rev")
        r = gearman(t, "-f", "tls.rev", "hello over tls")
        assert r.returncode == 0 and r.stdout == b"slt revo olleh", (r.returncode, r.stdout, r.stderr)
        r = gearman(t, "-I", "-f", "tls.rev", "high")
        assert r.returncode == 0 and r.stdout == b"hgih", (r.returncode, r.stdout, r.stderr)
    finally:
        w.kill()


@test
def test_gearman_background_jobs_and_gearadmin_status_through_stunnel():
    t = front()
    for i in range(3):
        r = gearman(t, "-b", "-f", "tls.bg", "job-%d" % i)
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    r = gearadmin(t, "--status")
    assert r.returncode == 0 and re.search(r"^tls\.bg\t3\t0\t0$", r.stdout, re.M), (r.returncode, r.stdout)
    w = gearman_worker(t, "-f", "tls.bg", "-c", "3")
    try:
        assert w.wait(20) == 0, w.output()
        assert w.output() == "job-0job-1job-2", w.output()
    finally:
        w.kill()
    wait_status(t, "tls.bg", (0, 0, 0))
    r = gearadmin(t, "--server-version")
    assert r.returncode == 0 and r.stdout.strip(), (r.returncode, r.stdout, r.stderr)


@test
def test_libgearman_client_and_worker_through_stunnel():
    t = front()
    need_gmclient()
    w = gm_worker(t, "tls.gm")
    try:
        wait_workers(t, "tls.gm")
        all_ok(*gm_client(t, "priorities", "tls.gm"), min_checks=3)
        rc, lines, out = gm_client(t, "callbacks", "tls.gm", "hello")
        assert rc == 0 and "STATUS 1/2" in lines and "DATA chunk" in lines and "COMPLETE olleh" in lines, out
    finally:
        w.kill()


@test
def test_libgearman_100_parallel_tasks_and_a_1_mib_job_through_stunnel():
    t = front()
    need_gmclient()
    ws = [gm_worker(t, "tls.par", "-i", "w%d" % i) for i in range(2)]
    try:
        wait_workers(t, "tls.par", 2)
        all_ok(*gm_client(t, "parallel", "tls.par", "100"), min_checks=1)
        all_ok(*gm_client(t, "big", "tls.par", str(1 << 20)), min_checks=2)
    finally:
        for w in ws:
            w.kill()


@test
def test_stunnel_without_a_client_certificate_is_refused():
    t = front()
    s = R["server"]
    w = gearman_worker(t, "-f", "tls.guarded", "--", "rev")
    try:
        wait_workers(t, "tls.guarded")
        with Stunnel(s.port, tlsfix.get().ca) as bare:
            size = len(s.log_text())
            r = gearman(bare, "-f", "tls.guarded", "secret", timeout=20)
            print("# gearman without a certificate: rc %d, stderr %r" % (r.returncode, r.stderr[-200:]), flush=True)
            assert r.stdout == b"", "a job through a tunnel without a certificate ran: %r" % r.stdout
            # (the tool exits 0 after a lost connection, but says so)
            assert r.returncode != 0 or b"LOST_CONNECTION" in r.stderr, (r.returncode, r.stderr)
            r = gearadmin(bare, "--status", timeout=20)
            assert "tls.guarded" not in r.stdout, "gearadmin got an answer without a certificate: %r" % r.stdout
            wait_until(lambda: re.search(r"ERROR .*TLS.*certificate", s.log_text()[size:]), timeout=10,
                       what="the server to log the refused tunnel")
        # the same job through the tunnel with a certificate runs
        r = gearman(t, "-f", "tls.guarded", "secret")
        assert r.returncode == 0 and r.stdout == b"terces", (r.returncode, r.stdout, r.stderr)
    finally:
        w.kill()


@test
def test_the_server_and_stunnel_stop_cleanly():
    front()
    R.pop("tunnel").stop()
    rc = R.pop("server").stop()
    assert rc == 0, "gearmand exited with %s" % rc


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        if "tunnel" in R:
            R["tunnel"].stop()
        if "server" in R:
            R["server"].stop()
