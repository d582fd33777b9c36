#!/usr/bin/env python3
"""Interop: Debian's libgearman (C) as client and worker against our gearmand.

gmclient.c is compiled here at run time (cc ... -lgearman); its worker
reverses the workload and sends WORK_STATUS 1/2 and WORK_DATA "chunk" before
WORK_COMPLETE, answers "fail" with gearman_job_send_fail and "exception" with
gearman_job_send_exception("boom").  Its client runs one scenario per call and
prints "ok - ..." / "not ok - ..." lines or RC/RESULT lines that are checked
here.

Three tests pin where we differ from gearmand 1.1.20 on purpose (design.md
section 9) and fail against it: the WORK_FAIL made from an exception (1.1.20
appends a NUL and libgearman hangs), epoch jobs (1.1.20 never wakes a
sleeping worker) and CAN_DO_TIMEOUT (1.1.20 requeues instead of failing).
"""

import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
from gmtest import Server, fail  # noqa: E402
import interop_lib  # noqa: E402
from interop_lib import (ENV, Proc, admin_status, need_gmclient, test, total_matching, value,  # noqa: E402
                         wait_status, wait_workers)

GMCLIENT = interop_lib.GMCLIENT


def worker(server, funcs, *extra):
    return Proc([GMCLIENT, "worker", "127.0.0.1", str(server.port), funcs] + list(extra),
                name="gmclient worker " + funcs)


def client(server, *args, timeout=30.0):
    """Runs one client scenario to the end; returns (rc, lines, output)."""
    cmd = [GMCLIENT, "client", "127.0.0.1", str(server.port)] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                           timeout=timeout, env=ENV)
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


def jobs(proc, n=0):
    """(function, handle, unique, workload) of every job the worker got, in
    order, once it has reported at least n jobs."""
    out = []
    for line in proc.lines_matching(lambda l: l.startswith("JOB "), n):
        parts = line.split(" ", 4) + [""]
        out.append(tuple(parts[1:5]))
    return out


def jobs_run(proc, n=0):
    """Workloads in the order the worker received them (at least n)."""
    return [j[3] for j in jobs(proc, n)]


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
            assert jobs_run(w, 3) == ["high", "normal", "low"], w.output()
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
            all_ok(rc, c.lines, c.output(), min_checks=8)
            assert jobs_run(w, 3) == ["bg-high", "bg-normal", "bg-low"], w.output()
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
            served = total_matching(ws, lambda l: l.startswith("JOB "), 100)
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
def test_1_mib_workload_and_result_round_trip_through_do():
    need_gmclient()
    with Server() as s:
        w = worker(s, "big")
        try:
            wait_workers(s, "big")
            all_ok(*client(s, "big", "big", str(1 << 20)), min_checks=2)
            assert [j[3] for j in jobs(w, 1)] == ["<%d bytes>" % (1 << 20)], w.output()
        finally:
            w.kill()


@test
def test_worker_sees_the_clients_unique_key_or_a_libgearman_uuid():
    need_gmclient()
    with Server() as s:
        w = worker(s, "uq")
        try:
            wait_workers(s, "uq")
            rc, lines, out = client(s, "do", "uq", "normal", "abc", "-u", "my-unique-1")
            assert value(lines, "RESULT") == "8 chunkcba", out
            rc, lines, out = client(s, "do", "uq", "normal", "abc")
            assert value(lines, "RESULT") == "8 chunkcba", out
            got = jobs(w, 2)
            assert len(got) == 2 and got[0][2] == "my-unique-1", w.output()
            assert len(got[1][2]) == 36 and got[1][2].count("-") == 4, w.output()
        finally:
            w.kill()


@test
def test_two_clients_with_the_same_unique_key_share_one_run_of_the_job():
    need_gmclient()
    with Server() as s:
        w = worker(s, "co", "-s", "700")
        c1 = c2 = None
        try:
            wait_workers(s, "co")
            c1 = Proc([GMCLIENT, "client", "127.0.0.1", str(s.port), "do", "co", "normal",
                       "first", "-u", "shared"])
            w.wait_line(lambda l: l.startswith("JOB co "))
            c2 = Proc([GMCLIENT, "client", "127.0.0.1", str(s.port), "do", "co", "normal",
                       "second", "-u", "shared"])
            for c in (c1, c2):
                assert c.wait(20) == 0, c.output()
                assert value(c.lines, "RC") == "GEARMAN_SUCCESS", c.output()
            # the second client attached while the job ran (the worker
            # sleeps between WORK_STATUS and WORK_DATA), so both get the
            # WORK_DATA and the result
            assert value(c1.lines, "RESULT") == "10 chunktsrif", c1.output()
            assert value(c2.lines, "RESULT") == "10 chunktsrif", c2.output()
            assert jobs_run(w, 1) == ["first"], w.output()
        finally:
            for p in (w, c1, c2):
                if p:
                    p.kill()


@test
def test_ten_clients_with_100_parallel_tasks_each_at_once():
    need_gmclient()
    with Server() as s:
        ws = [worker(s, "many", "-i", "m%d" % i) for i in range(4)]
        cs = []
        try:
            wait_workers(s, "many", 4)
            cs = [Proc([GMCLIENT, "client", "127.0.0.1", str(s.port), "parallel", "many", "100"])
                  for _ in range(10)]
            for c in cs:
                all_ok(c.wait(30), c.lines, c.output(), min_checks=5)
            served = total_matching(ws, lambda l: l.startswith("JOB "), 1000)
            assert served == 1000, "workers served %d jobs" % served
            assert admin_status(s).get("many") == (0, 0, 4), admin_status(s)
        finally:
            for p in ws + cs:
                p.kill()


@test
def test_epoch_job_from_gearman_execute_wakes_the_sleeping_worker_when_due():
    # 1.1.20 has no timer: a worker asleep in PRE_SLEEP never gets the job;
    # ours wakes it when the job is due (design.md section 9)
    need_gmclient()
    with Server() as s:
        w = worker(s, "ep")
        try:
            wait_workers(s, "ep")
            due = int(time.time()) + 2
            rc, lines, out = client(s, "epoch", "ep", str(due), "later")
            assert rc == 0 and (value(lines, "HANDLE") or "").startswith("H:"), out
            assert admin_status(s).get("ep") == (1, 0, 1), admin_status(s)
            w.wait_line(lambda l: l.startswith("JOB "), timeout=due - time.time() + 3)
            early = due - time.time()
            assert early < 0.05, "the job was handed out %.2fs before it was due" % early
            assert jobs_run(w, 1) == ["later"], w.output()
            wait_status(s, "ep", (0, 0, 1))
        finally:
            w.kill()


@test
def test_can_do_timeout_fails_the_job_for_the_waiting_client():
    # libgearman's add_function timeout (1) is sent as CAN_DO_TIMEOUT; 1.1.20
    # silently requeues the job when it runs out (the client waits forever),
    # ours fails it as the protocol says (design.md section 9)
    need_gmclient()
    with Server() as s:
        w = worker(s, "to", "-t", "1")
        try:
            wait_workers(s, "to")
            t0 = time.time()
            rc, lines, out = client(s, "do", "to", "normal", "sleep:3000:x", timeout=10)
            took = time.time() - t0
            assert value(lines, "RC") == "GEARMAN_WORK_FAIL", out
            assert 0.9 < took < 2.5, "WORK_FAIL after %.2fs, want about 1s" % took
            assert admin_status(s).get("to") == (0, 0, 1), admin_status(s)
            # the worker's late WORK_DATA/WORK_COMPLETE are refused, it goes on
            rc, lines, out = client(s, "do", "to", "normal", "quick")
            assert value(lines, "RESULT") == "10 chunkkciuq", out
            assert jobs_run(w, 2) == ["sleep:3000:x", "quick"], w.output()
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
            assert jobs_run(b, 1) == ["abc"], b.output()
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
        assert jobs_run(w, 2) == ["one", "two"], w.output()
    finally:
        if w:
            w.kill()


if __name__ == "__main__":
    gmtest.main()
