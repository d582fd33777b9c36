#!/usr/bin/env python3
"""Interop: Debian's libgearman (C) as client and worker against our gearmand.

gmclient.c is compiled here at run time (cc ... -lgearman); its worker
reverses the workload and sends WORK_STATUS 1/2 and WORK_DATA "chunk" before
WORK_COMPLETE, answers "fail" with gearman_job_send_fail and "exception" with
gearman_job_send_exception("boom").  Its client runs one scenario per call and
prints "ok - ..." / "not ok - ..." lines or RC/RESULT lines that are checked
here.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
from gmtest import Server, fail, test  # noqa: E402
from interop_lib import Proc, admin_status, value, wait_workers  # noqa: E402

SRC = os.path.join(gmtest.TOP_SRCDIR, "tests", "interop", "gmclient.c")
TMP = tempfile.mkdtemp(prefix="gmtest-libgearman-")
GMCLIENT = os.path.join(TMP, "gmclient")
_build_error = None


def build():
    """Compiles gmclient.c once; remembers why it failed."""
    global _build_error
    if os.path.exists(GMCLIENT) or _build_error:
        return
    cc = os.environ.get("CC", "cc").split()
    if not shutil.which(cc[0]):
        _build_error = "C compiler %r not found: cannot build gmclient.c" % cc[0]
        return
    if not os.path.exists(SRC):
        _build_error = "%s not found (is TOP_SRCDIR right?)" % SRC
        return
    r = subprocess.run(cc + ["-o", GMCLIENT, SRC, "-lgearman"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        _build_error = ("cannot build gmclient.c (is libgearman-dev installed? header "
                        "libgearman/gearman.h): %s" % (r.stderr.strip()[-2000:]))


def need_gmclient():
    build()
    if _build_error:
        fail(_build_error)


def worker(server, funcs, *extra):
    return Proc([GMCLIENT, "worker", "127.0.0.1", str(server.port), funcs] + list(extra),
                name="gmclient worker " + funcs)


def client(server, *args, timeout=30.0):
    """Runs one client scenario to the end; returns (rc, lines, output)."""
    cmd = [GMCLIENT, "client", "127.0.0.1", str(server.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        fail("gmclient client %s hung (no answer within %.0fs); output so far: %r"
             % (" ".join(args), timeout, e.stdout))
    out = r.stdout + (("\n[stderr] " + r.stderr) if r.stderr.strip() else "")
    return r.returncode, r.stdout.splitlines(), out


def all_ok(rc, lines, out, min_checks=1):
    checks = [l for l in lines if l.startswith(("ok - ", "not ok - "))]
    bad = [l for l in checks if l.startswith("not ok")]
    if bad or rc != 0 or len(checks) < min_checks:
        fail("gmclient rc=%s, %d checks, failures %r; output:\n%s" % (rc, len(checks), bad, out))


def jobs_run(proc):
    """Workloads in the order the worker received them."""
    return [l.split(" ", 3)[3] if l.count(" ") >= 3 else "" for l in proc.lines
            if l.startswith("JOB ")]


# ----------------------------------------------------------------------


@test
def test_gmclient_builds_against_libgearman():
    need_gmclient()
    r = subprocess.run([GMCLIENT], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr, (r.returncode, r.stderr)


@test
def test_do_normal_high_low_each_return_work_data_and_result():
    need_gmclient()
    with Server() as s:
        w = worker(s, "rev")
        try:
            wait_workers(s, "rev")
            all_ok(*client(s, "priorities", "rev"), min_checks=3)
        finally:
            w.kill()


@test
def test_queued_tasks_are_handed_out_high_then_normal_then_low():
    need_gmclient()
    with Server() as s:
        c = Proc([GMCLIENT, "client", "127.0.0.1", str(s.port), "order", "prio"])
        w = None
        try:
            c.wait_line(lambda l: l == "CREATED 3")
            st = admin_status(s).get("prio")
            assert st == (3, 0, 0), "status before any worker: %r" % (st,)
            w = worker(s, "prio")
            rc = c.wait(20)
            assert rc == 0, c.output()
            done = [l[5:] for l in c.lines if l.startswith("DONE ")]
            assert jobs_run(w) == ["high", "normal", "low"], w.output()
            assert done == ["high", "normal", "low"], c.output()
        finally:
            c.kill()
            if w:
                w.kill()


@test
def test_background_jobs_at_each_priority_finish_and_job_status_tracks_them():
    need_gmclient()
    with Server() as s:
        c = Proc([GMCLIENT, "client", "127.0.0.1", str(s.port), "background", "bg"])
        w = None
        try:
            c.wait_line(lambda l: l == "SUBMITTED")
            st = admin_status(s).get("bg")
            assert st == (3, 0, 0), "status before any worker: %r" % (st,)
            # the worker pauses 300 ms after WORK_STATUS 1/2 so polling sees it
            w = worker(s, "bg", "-s", "300")
            rc = c.wait(30)
            out = c.output()
            checks = [l for l in c.lines if l.startswith(("ok - ", "not ok - "))]
            assert rc == 0 and len(checks) == 8 and not [l for l in checks if l.startswith("not")], out
            assert jobs_run(w) == ["bg-high", "bg-normal", "bg-low"], w.output()
            st = admin_status(s).get("bg")
            assert st == (0, 0, 1), "status after the jobs: %r" % (st,)
        finally:
            c.kill()
            if w:
                w.kill()


@test
def test_100_parallel_tasks_all_complete_with_their_own_results():
    need_gmclient()
    with Server() as s:
        ws = [worker(s, "par", "-i", "w%d" % i) for i in range(3)]
        try:
            wait_workers(s, "par", 3)
            rc, lines, out = client(s, "parallel", "par", "100")
            all_ok(rc, lines, out, min_checks=5)
            served = sum(len(jobs_run(w)) for w in ws)
            assert served == 100, "workers served %d jobs" % served
            st = admin_status(s).get("par")
            assert st == (0, 0, 3), st
        finally:
            for w in ws:
                w.kill()


@test
def test_work_status_and_work_data_reach_client_callbacks_before_complete():
    need_gmclient()
    with Server() as s:
        w = worker(s, "cb")
        try:
            wait_workers(s, "cb")
            rc, lines, out = client(s, "callbacks", "cb", "hello")
            events = [l.split(" ")[0] for l in lines]
            assert events == ["CREATED", "STATUS", "DATA", "COMPLETE", "RUN", "RC"], out
            assert value(lines, "STATUS") == "1/2", out
            assert value(lines, "DATA") == "chunk", out
            assert value(lines, "COMPLETE") == "olleh", out
            assert value(lines, "RC") == "GEARMAN_SUCCESS", out
            assert value(lines, "CREATED").startswith("H:"), out
        finally:
            w.kill()


@test
def test_work_fail_is_reported_as_GEARMAN_WORK_FAIL_by_do_and_fail_callback():
    need_gmclient()
    with Server() as s:
        w = worker(s, "f")
        try:
            wait_workers(s, "f")
            rc, lines, out = client(s, "do", "f", "normal", "fail")
            assert value(lines, "RC") == "GEARMAN_WORK_FAIL", out
            assert value(lines, "RESULT") == "0 ", out
            rc, lines, out = client(s, "callbacks", "f", "fail")
            assert "FAIL" in lines and value(lines, "RC") == "GEARMAN_WORK_FAIL", out
            assert not [l for l in lines if l.startswith(("COMPLETE", "EXCEPTION"))], out
            assert admin_status(s).get("f") == (0, 0, 1), admin_status(s)
        finally:
            w.kill()


@test
def test_exception_reaches_client_that_asked_for_exceptions():
    need_gmclient()
    with Server() as s:
        w = worker(s, "ex")
        try:
            wait_workers(s, "ex")
            rc, lines, out = client(s, "do", "ex", "normal", "exception", "-x")
            assert "ok - server accepted OPTION_REQ exceptions" in lines, out
            assert value(lines, "RC") == "GEARMAN_WORK_EXCEPTION", out
            rc, lines, out = client(s, "callbacks", "ex", "exception", "-x")
            assert value(lines, "EXCEPTION") == "boom", out
            assert value(lines, "RC") == "GEARMAN_WORK_EXCEPTION", out
            assert "FAIL" not in lines, out
        finally:
            w.kill()


@test
def test_exception_becomes_clean_work_fail_for_client_without_exceptions_option():
    # 1.1.20 appends a NUL to the WORK_FAIL it makes from the exception and
    # libgearman then never finishes the task (hangs); we send a clean
    # WORK_FAIL (design.md section 9).
    need_gmclient()
    with Server() as s:
        w = worker(s, "ex2")
        try:
            wait_workers(s, "ex2")
            rc, lines, out = client(s, "do", "ex2", "normal", "exception", timeout=10)
            assert value(lines, "RC") == "GEARMAN_WORK_FAIL", out
            rc, lines, out = client(s, "callbacks", "ex2", "exception", timeout=10)
            assert "FAIL" in lines and value(lines, "RC") == "GEARMAN_WORK_FAIL", out
            assert not [l for l in lines if l.startswith("EXCEPTION")], out
        finally:
            w.kill()


@test
def test_job_of_killed_worker_is_requeued_and_finished_by_another_worker():
    need_gmclient()
    with Server() as s:
        a = worker(s, "slow", "-s", "30000")
        b = c = None
        try:
            wait_workers(s, "slow")
            c = Proc([GMCLIENT, "client", "127.0.0.1", str(s.port), "do", "slow", "high", "abc"])
            a.wait_line(lambda l: l.startswith("JOB slow "))
            assert admin_status(s).get("slow") == (1, 1, 1), admin_status(s)
            a.kill(signal.SIGKILL)
            b = worker(s, "slow")
            assert c.wait(20) == 0, c.output()
            assert value(c.lines, "RC") == "GEARMAN_SUCCESS", c.output()
            assert value(c.lines, "RESULT") == "8 chunkcba", c.output()
            assert jobs_run(b) == ["abc"], b.output()
        finally:
            for p in (a, b, c):
                if p:
                    p.kill()


@test
def test_worker_reconnects_and_reregisters_after_server_restart():
    need_gmclient()
    port = gmtest.free_port()
    w = None
    try:
        with Server(port=port) as s:
            w = worker(s, "re")
            wait_workers(s, "re")
            rc, lines, out = client(s, "do", "re", "normal", "one")
            assert value(lines, "RESULT") == "8 chunkeno", out
        with Server(port=port) as s:
            wait_workers(s, "re", timeout=15)
            rc, lines, out = client(s, "do", "re", "normal", "two")
            assert value(lines, "RESULT") == "8 chunkowt", out
        assert jobs_run(w) == ["one", "two"], w.output()
    finally:
        if w:
            w.kill()


if __name__ == "__main__":
    try:
        gmtest.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
