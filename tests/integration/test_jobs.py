#!/usr/bin/env python3
"""Job semantics: the order jobs are handed out, unique-key coalescing,
result forwarding, worker death and retries, CAN_DO_TIMEOUT, exceptions,
abandoned jobs, maxqueue, epoch jobs and worker wake-up.  gearmand 1.1.20
(reference section 2) except where design.md section 9 differs: priority is
global across a worker's functions, epoch jobs have a timer and block
nothing, CAN_DO_TIMEOUT fails the job, a WORK_FAIL made from a
WORK_EXCEPTION carries no trailing NUL, and a job whose worker died goes
back to the head of its queue (design section 4)."""

import os
import select
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import Server, grab, submit, test, wait_until, sync, status_of  # noqa: E402

PREFIX = "H:test"


def H(n):
    return "%s:%d" % (PREFIX, n)


def srv(*args):
    return Server("--job-handle-prefix", PREFIX, *args)


def worker(s, *functions, sleep=False):
    w = s.conn()
    for f in functions:
        w.send_packet("CAN_DO", f)
    if sleep:
        w.send_packet("PRE_SLEEP")
    return w


def connection_count(admin):
    """Connections the server knows about (`workers` lists all of them)."""
    return len(admin.admin("workers").splitlines()) - 1


def wait_connections(admin, n):
    wait_until(lambda: connection_count(admin) == n, timeout=5,
               what="the server to count %d connections" % n)


# ----------------------------------------------------------------------
# Order


@test
def test_priority_is_global_across_a_workers_functions():
    # reference 2.5's example: 1.1.20 hands out pb/L before pa/H when pb was
    # registered last; with global priority the order of CAN_DO is irrelevant
    for order in (("pa", "pb"), ("pb", "pa")):
        with srv() as s:
            c = s.conn()
            for fn, prios in (("pa", "HHNNLL"), ("pb", "HL")):
                for i, pr in enumerate(prios):
                    ptype = {"H": "SUBMIT_JOB_HIGH_BG", "N": "SUBMIT_JOB_BG",
                             "L": "SUBMIT_JOB_LOW_BG"}[pr]
                    submit(c, ptype, fn, "", "%s-%s-%d" % (fn, pr, i))
            w = worker(s, *order)
            got = []
            while True:
                j = grab(w)
                if j is None:
                    break
                got.append(j[2].decode())
                w.send_packet("WORK_COMPLETE", j[0], "")
            assert len(got) == 8, got
            assert [g.split("-")[1] for g in got] == list("HHHNNLLL"), (order, got)
            # FIFO inside one function and priority
            assert got.index("pa-H-0") < got.index("pa-H-1"), got
            assert got.index("pa-N-2") < got.index("pa-N-3"), got
            assert got.index("pa-L-4") < got.index("pa-L-5"), got


@test
def test_high_of_one_function_before_low_of_another_whatever_the_can_do_order():
    for order in (("fa", "fb"), ("fb", "fa")):
        with srv() as s:
            c = s.conn()
            submit(c, "SUBMIT_JOB_LOW_BG", "fa", "", "a-low")
            submit(c, "SUBMIT_JOB_BG", "fa", "", "a-normal")
            submit(c, "SUBMIT_JOB_HIGH_BG", "fb", "", "b-high")
            w = worker(s, *order)
            got = [grab(w)[2] for _ in range(3)]
            assert got == [b"b-high", b"a-normal", b"a-low"], (order, got)
            assert grab(w) is None


@test
def test_functions_of_equal_priority_take_turns():
    with srv() as s:
        c = s.conn()
        for fn in ("fa", "fb", "fc"):
            for i in range(3):
                submit(c, "SUBMIT_JOB_BG", fn, "", "%s-%d" % (fn, i))
        w = worker(s, "fa", "fb", "fc")
        got = []
        for _ in range(9):
            h, fn, data = grab(w)
            got.append(fn)
            w.send_packet("WORK_COMPLETE", h, "")
        assert grab(w) is None
        for a, b in zip(got, got[1:]):
            assert a != b, "same function twice in a row: %s" % got
        for k in (0, 3, 6):
            assert sorted(got[k:k + 3]) == ["fa", "fb", "fc"], "not taking turns: %s" % got


@test
def test_fifo_within_a_priority():
    with srv() as s:
        c = s.conn()
        for i in range(10):
            submit(c, "SUBMIT_JOB_BG", "fifo", "", "n%d" % i)
        for i in range(3):
            submit(c, "SUBMIT_JOB_HIGH_BG", "fifo", "", "h%d" % i)
        w = worker(s, "fifo")
        got = [grab(w)[2].decode() for _ in range(13)]
        assert got == ["h0", "h1", "h2"] + ["n%d" % i for i in range(10)], got
        assert grab(w) is None


# ----------------------------------------------------------------------
# Coalescing


@test
def test_same_function_and_unique_coalesce_and_both_clients_get_the_result():
    with srv() as s:
        c1, c2, c3 = s.conn(), s.conn(), s.conn()
        h = submit(c1, "SUBMIT_JOB", "co", "key-1", "first")
        assert submit(c2, "SUBMIT_JOB_HIGH", "co", "key-1", "second") == h
        # the same unique under another function is another job
        h_other = submit(c3, "SUBMIT_JOB", "co2", "key-1", "other")
        assert h_other != h
        w = worker(s, "co")
        assert grab(w) == (h, "co", b"first")   # the first submission's data
        assert grab(w) is None                  # only one job
        w.send_packet("WORK_COMPLETE", h, "result")
        c1.expect_packet("WORK_COMPLETE", h, "result")
        c2.expect_packet("WORK_COMPLETE", h, "result")
        c3.nothing(0.1)
        # once the job is done the unique is free again
        h2 = submit(c1, "SUBMIT_JOB", "co", "key-1", "again")
        assert h2 not in (h, h_other), h2


@test
def test_dash_unique_coalesces_on_identical_payload():
    with srv() as s:
        c1, c2, c3 = s.conn(), s.conn(), s.conn()
        h = submit(c1, "SUBMIT_JOB", "dash", "-", "payload")
        assert submit(c2, "SUBMIT_JOB", "dash", "-", "payload") == h
        h_other = submit(c3, "SUBMIT_JOB", "dash", "-", "different")
        assert h_other != h
        # a job with an explicit unique equal to the payload is not the same
        h_named = submit(c3, "SUBMIT_JOB", "dash", "payload", "payload")
        assert h_named not in (h, h_other)
        w = worker(s, "dash")
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h, "dash", "-", "payload")
        w.send_packet("WORK_COMPLETE", h, "r")
        c1.expect_packet("WORK_COMPLETE", h, "r")
        c2.expect_packet("WORK_COMPLETE", h, "r")


@test
def test_empty_unique_never_coalesces():
    with srv() as s:
        c1, c2 = s.conn(), s.conn()
        h1 = submit(c1, "SUBMIT_JOB", "eu", "", "same")
        h2 = submit(c2, "SUBMIT_JOB", "eu", "", "same")
        h3 = submit(c2, "SUBMIT_JOB_BG", "eu", "", "same")
        assert len({h1, h2, h3}) == 3, (h1, h2, h3)
        # "-" with an empty payload does not coalesce either
        h4 = submit(c1, "SUBMIT_JOB_BG", "eu", "-", "")
        h5 = submit(c2, "SUBMIT_JOB_BG", "eu", "-", "")
        assert h4 != h5
        assert status_of(c1, "eu") == (5, 0, 0)


@test
def test_foreground_submit_attaches_to_a_running_job():
    with srv() as s:
        c1, c2 = s.conn(), s.conn()
        h = submit(c1, "SUBMIT_JOB", "run", "r-1", "x")
        w = worker(s, "run")
        assert grab(w)[0] == h
        w.send_packet("WORK_STATUS", h, "1", "4")
        c1.expect_packet("WORK_STATUS", h, "1", "4")
        assert submit(c2, "SUBMIT_JOB", "run", "r-1", "ignored") == h
        c2.send_packet("GET_STATUS_UNIQUE", "r-1")
        c2.expect_packet("STATUS_RES_UNIQUE", "r-1", "1", "1", "1", "4", "2")
        w.send_packet("WORK_STATUS", h, "2", "4")
        w.send_packet("WORK_COMPLETE", h, "done")
        for c in (c1, c2):
            c.expect_packet("WORK_STATUS", h, "2", "4")
            c.expect_packet("WORK_COMPLETE", h, "done")
        assert grab(w) is None


@test
def test_background_submit_onto_foreground_job_and_foreground_onto_background():
    with srv() as s:
        c1, c2, c3, c4 = s.conn(), s.conn(), s.conn(), s.conn()
        # BG onto FG: same handle, only the FG client hears the result
        h = submit(c1, "SUBMIT_JOB", "mix", "u-fg", "fg")
        assert submit(c2, "SUBMIT_JOB_BG", "mix", "u-fg", "bg") == h
        # FG onto BG: attached, gets the result
        hb = submit(c3, "SUBMIT_JOB_BG", "mix", "u-bg", "bg")
        assert submit(c4, "SUBMIT_JOB_LOW", "mix", "u-bg", "fg") == hb
        assert status_of(c1, "mix") == (2, 0, 0)
        w = worker(s, "mix")
        assert grab(w) == (h, "mix", b"fg")
        assert grab(w) == (hb, "mix", b"bg")
        w.send_packet("WORK_COMPLETE", h, "r1")
        w.send_packet("WORK_COMPLETE", hb, "r2")
        c1.expect_packet("WORK_COMPLETE", h, "r1")
        c4.expect_packet("WORK_COMPLETE", hb, "r2")
        c2.nothing(0.1)
        c3.nothing(0.1)


# ----------------------------------------------------------------------
# Forwarding


@test
def test_results_forwarded_to_every_attached_client_in_order():
    with srv() as s:
        clients = [s.conn() for _ in range(3)]
        h = submit(clients[0], "SUBMIT_JOB", "fw", "shared", "x")
        for c in clients[1:]:
            assert submit(c, "SUBMIT_JOB", "fw", "shared", "x") == h
        w = worker(s, "fw")
        assert grab(w)[0] == h
        seq = [("WORK_DATA", h, b"d\0ata"), ("WORK_WARNING", h, "w1"),
               ("WORK_STATUS", h, "50", "100"), ("WORK_DATA", h, "more"),
               ("WORK_COMPLETE", h, "fin")]
        for p in seq:
            w.send_packet(*p)
        for c in clients:
            for p in seq:
                c.expect_packet(*p)
            c.nothing(0.05)


# ----------------------------------------------------------------------
# Worker death, retries, timeouts


@test
def test_worker_death_requeues_job_and_another_worker_gets_it():
    with srv() as s:
        c = s.conn()
        w1 = worker(s, "wd")
        h1 = submit(c, "SUBMIT_JOB", "wd", "", "job-1")
        h2 = submit(c, "SUBMIT_JOB", "wd", "", "job-2")
        assert grab(w1) == (h1, "wd", b"job-1")
        w1.send_packet("WORK_STATUS", h1, "1", "2")
        c.expect_packet("WORK_STATUS", h1, "1", "2")
        w2 = worker(s, "wd")
        assert grab(w2) == (h2, "wd", b"job-2")
        w2.send_packet("PRE_SLEEP")
        w2.nothing(0.1)
        w1.close()
        # the sleeping worker is woken and gets the job (back at the head)
        w2.expect_packet("NOOP")
        assert grab(w2) == (h1, "wd", b"job-1")
        # the client was not told; progress was reset by the requeue
        c.send_packet("GET_STATUS", h1)
        c.expect_packet("STATUS_RES", h1, "1", "1", "0", "0")
        w2.send_packet("WORK_COMPLETE", h1, "r1")
        w2.send_packet("WORK_COMPLETE", h2, "r2")
        c.expect_packet("WORK_COMPLETE", h1, "r1")
        c.expect_packet("WORK_COMPLETE", h2, "r2")


@test
def test_requeued_job_goes_back_to_the_head_of_its_queue():
    with srv() as s:
        c = s.conn()
        hs = [submit(c, "SUBMIT_JOB_BG", "hq", "", "j%d" % i) for i in range(3)]
        w1 = worker(s, "hq")
        assert grab(w1)[0] == hs[0]
        w1.close()
        w2 = worker(s, "hq")
        wait_until(lambda: status_of(c, "hq") == (3, 0, 1), what="the requeue")
        assert [grab(w2)[0] for _ in range(3)] == hs


@test
def test_job_retries_2_fails_job_after_second_worker_death():
    with srv("-j", "2") as s:
        c = s.conn()
        h = submit(c, "SUBMIT_JOB", "jr", "", "x")
        w1 = worker(s, "jr")
        assert grab(w1)[0] == h
        w1.close()
        c.nothing(0.2)           # first death: requeued, client not told
        w2 = worker(s, "jr")
        assert wait_until(lambda: grab(w2), what="the requeued job")[0] == h
        w2.close()
        # second death: the job has had its 2 attempts
        c.expect_packet("WORK_FAIL", h)
        w3 = worker(s, "jr")
        assert grab(w3) is None
        assert status_of(c, "jr") == (0, 0, 1)


@test
def test_can_do_timeout_fails_the_job_and_late_complete_gets_job_not_found():
    with srv() as s:
        c = s.conn()
        w = s.conn()
        w.send_packet("CAN_DO_TIMEOUT", "slow", "500")   # raised to the 1000 ms minimum
        h = submit(c, "SUBMIT_JOB", "slow", "", "x")
        assert grab(w)[0] == h
        c.nothing(0.5)
        c.expect_packet("WORK_FAIL", h, timeout=10)
        w.send_packet("WORK_COMPLETE", h, "too late")
        w.expect_packet("ERROR", "JOB_NOT_FOUND", "Job given in work result not found")
        c.nothing(0.1)
        # failed, not requeued
        assert grab(w) is None
        c.send_packet("GET_STATUS", h)
        c.expect_packet("STATUS_RES", h, "0", "0", "0", "0")
        assert status_of(c, "slow") == (0, 0, 1)


@test
def test_can_do_timeout_does_not_fire_after_the_job_completed():
    with srv() as s:
        c = s.conn()
        w = s.conn()
        w.send_packet("CAN_DO_TIMEOUT", "quick", "1000")
        h = submit(c, "SUBMIT_JOB", "quick", "", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_COMPLETE", h, "ok")
        c.expect_packet("WORK_COMPLETE", h, "ok")
        h2 = submit(c, "SUBMIT_JOB", "quick", "", "y")
        c.nothing(1.3)
        assert grab(w)[0] == h2     # still queued: no stale timer touched it
        w.send_packet("WORK_COMPLETE", h2, "ok2")
        c.expect_packet("WORK_COMPLETE", h2, "ok2")
        w.nothing(0.1)


# ----------------------------------------------------------------------
# Exceptions


@test
def test_work_exception_without_option_reaches_client_as_clean_work_fail():
    with srv() as s:
        c = s.conn()
        w = worker(s, "ex")
        h = submit(c, "SUBMIT_JOB", "ex", "", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_EXCEPTION", h, "boom")
        p = c.expect_packet("WORK_FAIL", h)     # payload = the handle, no trailing NUL
        assert p.data == h.encode()
        # terminal: the job is gone
        w.send_packet("WORK_COMPLETE", h, "x")
        w.expect_packet("ERROR", "JOB_NOT_FOUND", "Job given in work result not found")
        c.nothing(0.1)


@test
def test_work_exception_forwarded_after_option_req_exceptions():
    with srv() as s:
        c1, c2 = s.conn(), s.conn()
        c1.send_packet("OPTION_REQ", "exceptions")
        c1.expect_packet("OPTION_RES", "exceptions")
        w = worker(s, "ex")
        h = submit(c1, "SUBMIT_JOB", "ex", "same", "x")
        assert submit(c2, "SUBMIT_JOB", "ex", "same", "x") == h
        assert grab(w)[0] == h
        w.send_packet("WORK_EXCEPTION", h, b"trace\0back")
        c1.expect_packet("WORK_EXCEPTION", h, b"trace\0back")
        c2.expect_packet("WORK_FAIL", h)


@test
def test_server_exceptions_option_forwards_work_exception_to_everyone():
    with srv("--exceptions") as s:
        c = s.conn()
        w = worker(s, "ex")
        h = submit(c, "SUBMIT_JOB", "ex", "", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_EXCEPTION", h, "boom")
        c.expect_packet("WORK_EXCEPTION", h, "boom")


# ----------------------------------------------------------------------
# Disconnecting clients


@test
def test_disconnected_client_abandons_queued_foreground_job_but_not_background():
    with srv() as s:
        admin = s.conn()
        c = s.conn()
        submit(c, "SUBMIT_JOB", "ab", "", "fg")
        h_bg = submit(c, "SUBMIT_JOB_BG", "ab", "", "bg")
        c.close()
        wait_connections(admin, 1)
        w = worker(s, "ab")
        assert grab(w) == (h_bg, "ab", b"bg")
        assert grab(w) is None
        w.send_packet("WORK_COMPLETE", h_bg, "")
        sync(w)
        wait_until(lambda: status_of(admin, "ab") == (0, 0, 1), what="an empty queue")


@test
def test_job_stays_while_one_of_its_clients_remains():
    with srv() as s:
        admin = s.conn()
        c1, c2 = s.conn(), s.conn()
        h = submit(c1, "SUBMIT_JOB", "stay", "u", "x")
        assert submit(c2, "SUBMIT_JOB", "stay", "u", "x") == h
        c1.close()
        wait_connections(admin, 2)
        w = worker(s, "stay")
        assert grab(w)[0] == h
        w.send_packet("WORK_COMPLETE", h, "r")
        c2.expect_packet("WORK_COMPLETE", h, "r")


# ----------------------------------------------------------------------
# maxqueue


@test
def test_maxqueue_rejects_with_queue_full_and_coalesced_submits_bypass_it():
    with srv() as s:
        admin = s.conn()
        c1, c2 = s.conn(), s.conn()
        w = worker(s, "mq")          # the function must exist for maxqueue
        sync(w)
        assert admin.admin("maxqueue mq 1") == b"OK\r\n"
        h = submit(c1, "SUBMIT_JOB", "mq", "first", "x")
        full = ("ERROR", "QUEUE_ERROR", "Job queue is full")
        for ptype in ("SUBMIT_JOB", "SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH", "SUBMIT_JOB_LOW_BG"):
            c2.send_packet(ptype, "mq", "other", "y")
            c2.expect_packet(*full)
        # same (function, unique): coalesced, not counted against the limit
        assert submit(c2, "SUBMIT_JOB", "mq", "first", "y") == h
        # a running job still counts
        assert grab(w)[0] == h
        c2.send_packet("SUBMIT_JOB", "mq", "", "z")
        c2.expect_packet(*full)
        w.send_packet("WORK_COMPLETE", h, "r")
        c1.expect_packet("WORK_COMPLETE", h, "r")
        c2.expect_packet("WORK_COMPLETE", h, "r")
        submit(c2, "SUBMIT_JOB_BG", "mq", "", "after")
        # maxqueue without a limit removes it
        assert admin.admin("maxqueue mq") == b"OK\r\n"
        for i in range(3):
            submit(c2, "SUBMIT_JOB_BG", "mq", "", "n%d" % i)
        assert status_of(admin, "mq") == (4, 0, 1)


# ----------------------------------------------------------------------
# Epoch jobs (design 9: a timer wakes workers; future jobs block nothing)


@test
def test_epoch_job_not_handed_out_before_due_and_sleeping_worker_gets_noop():
    with srv() as s:
        c = s.conn()
        w = worker(s, "ep")
        due = int(time.time()) + 3
        h = submit(c, "SUBMIT_JOB_EPOCH", "ep", "", "later", str(due))
        assert grab(w) is None
        w.send_packet("PRE_SLEEP")
        w.nothing(0.5)
        w.expect_packet("NOOP", timeout=10)
        woke = time.time()
        assert woke >= due - 1.0, "woken %.2fs before the job was due" % (due - woke)
        assert grab(w) == (h, "ep", b"later")


@test
def test_future_epoch_job_does_not_block_a_low_job_of_the_same_function():
    with srv() as s:
        c = s.conn()
        submit(c, "SUBMIT_JOB_EPOCH", "ep", "", "future", str(int(time.time()) + 3600))
        h_low = submit(c, "SUBMIT_JOB_LOW_BG", "ep", "", "low")
        w = worker(s, "ep")
        assert grab(w) == (h_low, "ep", b"low")
        assert grab(w) is None
        # a sleeping worker is not woken by the future job alone
        w.send_packet("PRE_SLEEP")
        w.nothing(0.3)


# ----------------------------------------------------------------------
# Wake-up


@test
def test_every_sleeping_worker_of_the_function_gets_noop_by_default():
    with srv() as s:
        c = s.conn()
        ws = [worker(s, "wake", sleep=True) for _ in range(3)]
        other = worker(s, "unrelated", sleep=True)
        for w in ws + [other]:
            sync(w)
        submit(c, "SUBMIT_JOB_BG", "wake", "", "1")
        submit(c, "SUBMIT_JOB_BG", "wake", "", "2")
        for w in ws:
            w.expect_packet("NOOP")
        for w in ws:
            w.nothing(0.2)      # one NOOP per sleep, not one per job
        other.nothing(0.05)


@test
def test_worker_wakeup_1_sends_one_noop_per_job():
    with srv("-w", "1") as s:
        c = s.conn()
        ws = [worker(s, "wake", sleep=True) for _ in range(3)]
        for w in ws:
            sync(w)

        def noops():
            """Waits for the first NOOP among the workers, then gives the
            others a moment; returns the indexes of the NOOPed workers."""
            ready, _, _ = select.select([w.sock for w in ws], [], [], 10)
            assert ready, "no worker was woken"
            woke = []
            for i, w in enumerate(ws):
                try:
                    w.nothing(0.2)
                except AssertionError:
                    w.expect_packet("NOOP")
                    woke.append(i)
            return woke

        submit(c, "SUBMIT_JOB_BG", "wake", "", "1")
        first = noops()
        assert len(first) == 1, "NOOPed workers: %s" % first
        submit(c, "SUBMIT_JOB_BG", "wake", "", "2")
        second = noops()
        assert len(second) == 1 and second != first, (first, second)


@test
def test_worker_registering_the_same_function_twice():
    with srv() as s:
        c = s.conn()
        w = worker(s, "dup", "dup", sleep=True)
        sync(w)
        # gearmand 1.1.20 keeps both registrations (reference 2.15)
        assert status_of(c, "dup") == (0, 0, 2)
        assert any(l.endswith(" : dup dup") for l in c.admin("workers").decode().splitlines())
        h = submit(c, "SUBMIT_JOB", "dup", "", "x")
        w.expect_packet("NOOP")
        w.nothing(0.2)
        assert grab(w) == (h, "dup", b"x")
        assert grab(w) is None
        w.send_packet("WORK_COMPLETE", h, "r")
        c.expect_packet("WORK_COMPLETE", h, "r")
        # one CANT_DO removes both
        w.send_packet("CANT_DO", "dup")
        submit(c, "SUBMIT_JOB_BG", "dup", "", "y")
        assert grab(w) is None
        assert status_of(c, "dup") == (1, 0, 0)


@test
def test_cant_do_of_the_running_jobs_function_requeues_it():
    with srv() as s:
        c = s.conn()
        w1 = worker(s, "cd", "other")
        h = submit(c, "SUBMIT_JOB", "cd", "", "x")
        assert grab(w1)[0] == h
        w1.send_packet("CANT_DO", "other")      # unrelated: nothing happens
        sync(w1)
        assert status_of(c, "cd") == (1, 1, 1)
        w2 = worker(s, "cd", sleep=True)
        sync(w2)
        w1.send_packet("CANT_DO", "cd")
        w2.expect_packet("NOOP")
        assert grab(w2) == (h, "cd", b"x")
        w1.send_packet("WORK_COMPLETE", h, "stale")
        w1.expect_packet("ERROR", "JOB_NOT_FOUND", "Job given in work result not found")
        w2.send_packet("WORK_COMPLETE", h, "fresh")
        c.expect_packet("WORK_COMPLETE", h, "fresh")
        c.nothing(0.1)


@test
def test_work_packets_from_a_connection_not_holding_the_job_get_job_not_found():
    with srv() as s:
        c = s.conn()
        w1 = worker(s, "nf")
        w2 = worker(s, "nf")
        h = submit(c, "SUBMIT_JOB", "nf", "", "x")
        assert grab(w1)[0] == h
        given = ("ERROR", "JOB_NOT_FOUND", "Job given in work result not found")
        nodata = ("ERROR", "JOB_NOT_FOUND", "Job does not exist on server")
        noexc = ("ERROR", "JOB_NOT_FOUND",
                 "An exception was received for a job that does not exist")
        cases = [
            (("WORK_COMPLETE", h, "x"), given),
            (("WORK_FAIL", h), given),
            (("WORK_STATUS", h, "1", "2"), given),
            (("WORK_DATA", h, "x"), nodata),
            (("WORK_WARNING", h, "x"), nodata),
            (("WORK_EXCEPTION", h, "x"), noexc),
        ]
        for sender in (w2, c):
            for pkt, err in cases:
                sender.send_packet(*pkt)
                sender.expect_packet(*err)
        # an unknown handle, even from the job's own worker
        for pkt, err in cases:
            w1.send_packet(pkt[0], "H:test:999", *pkt[2:])
            w1.expect_packet(*err)
        c.nothing(0.1)
        w1.send_packet("WORK_COMPLETE", h, "real")
        c.expect_packet("WORK_COMPLETE", h, "real")


if __name__ == "__main__":
    gmtest.main()
