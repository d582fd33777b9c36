#!/usr/bin/env python3
"""Job lifecycle: per-function policies (the `policy` admin command, `show
policies`, the --policy option, `-j -1`), retries of background jobs with
exponential backoff and jitter, attempt counts and `show job`, dead letters
(`show dead`, `retry dead`, `discard dead`, --dead-letter-max), time limits,
concurrency limits, and `pause` / `resume` / `purge` (with the sqlite queue:
purged jobs are not replayed).

The rules these tests pin (issue 15, design section 10): a function with a
policy retries a failed attempt of a BACKGROUND job (WORK_FAIL,
WORK_EXCEPTION, its time limit passing, its worker's connection dropping)
after min(max_backoff, backoff * 2^(k-1)) ms plus up to 25% jitter, at most
`retries` times, then keeps it as a dead letter; a foreground job is never
retried.  A job waiting for its retry counts as queued in `status` and is
not handed out; a sleeping worker is woken with NOOP when it is due.  Work
packets from a worker a job was taken back from are dropped without a reply.
Functions without a policy behave as before (test_jobs.py covers them).

Every test starts its own server; waits are polled with timeouts, and the
few fixed ones check that nothing happens (Conn.nothing)."""

import os
import select
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import Server, grab, submit, test, fail, wait_until, sync, status_of  # noqa: E402

PREFIX = "H:lc"
OK = b"OK\r\n"
DEFAULTS = "retries=0\tbackoff=1000\tmax_backoff=300000\ttimeout=0\tconcurrency=0"


def srv(*args):
    return Server("--job-handle-prefix", PREFIX, *args)


def worker(s, *functions):
    """A worker connection that can do `functions`, registered by the time
    it returns (the dispatcher has answered an echo after the CAN_DOs)."""
    w = s.conn()
    for f in functions:
        w.send_packet("CAN_DO", f)
    sync(w)
    return w


def grab_uniq(w):
    """GRAB_JOB_UNIQ; returns (handle, function, unique, data) or None."""
    w.send_packet("GRAB_JOB_UNIQ")
    p = w.recv_packet()
    if p.name == "NO_JOB":
        return None
    assert p.name == "JOB_ASSIGN_UNIQ", p
    h, fn, u, data = p.fields(4)
    return h.decode(), fn.decode(), u.decode(), data


def wait_job(w, timeout=5.0):
    """Sleeps the worker way until a job comes: GRAB_JOB, and on NO_JOB,
    PRE_SLEEP and wait for the NOOP, again (an early NOOP is allowed by the
    protocol); returns (handle, function, data).  Without a NOOP when the
    job becomes due it times out."""
    deadline = time.monotonic() + timeout
    while True:
        j = grab(w)
        if j is not None:
            return j
        w.send_packet("PRE_SLEEP")
        left = deadline - time.monotonic()
        if left <= 0:
            fail("no job within %.1fs" % timeout)
        try:
            w.expect_packet("NOOP", timeout=left)
        except TimeoutError:
            fail("no NOOP within %.1fs" % timeout)


def no_reply(w, what):
    """Asserts that what w sent so far got no reply: the next packet is the
    answer to an echo sent now."""
    w.send_packet("ECHO_REQ", "sync")
    p = w.recv_packet()
    assert p.raw() == gmtest.response("ECHO_RES", "sync"), "%s got a reply: %r" % (what, p.raw())


def set_policy(admin, fn, spec):
    r = admin.admin("policy %s %s" % (fn, spec))
    assert r == OK, "policy %s %s: %r" % (fn, spec, r)


def pol_line(fn, retries=0, backoff=1000, max_backoff=300000, timeout=0, concurrency=0, paused=0):
    return ("%s\tretries=%d\tbackoff=%d\tmax_backoff=%d\ttimeout=%d\tconcurrency=%d\tpaused=%d\n"
            % (fn, retries, backoff, max_backoff, timeout, concurrency, paused)).encode()


def show_job(admin, h):
    """`show job h`: the fields of its one line (str), or the ERR line (bytes)."""
    r = admin.admin("show job %s" % h)
    if r.startswith(b"ERR"):
        return r
    assert r.endswith(b"\n.\n") and r.count(b"\n") == 2, "show job %s: %r" % (h, r)
    return r[:-3].decode().split("\t")


def job_state(admin, h):
    j = show_job(admin, h)
    return j[3] if isinstance(j, list) else None


def show_dead(admin, fn=None):
    """`show dead [fn]` as a list of (handle, function, unique, attempts,
    died_at, reason)."""
    r = admin.admin("show dead" + (" " + fn if fn else ""))
    assert r.endswith(b".\n") and b"\r" not in r, r
    out = []
    for line in r[:-2].decode().splitlines():
        f = line.split("\t")
        assert len(f) == 6, "show dead line %r" % line
        out.append((f[0], f[1], f[2], int(f[3]), int(f[4]), f[5]))
    return out


def wait_dead(admin, n, fn=None, timeout=5.0):
    return wait_until(lambda: len(show_dead(admin, fn)) == n and show_dead(admin, fn),
                      timeout=timeout, what="%d dead letters" % n)


def assert_err(reply, code, what):
    assert reply.startswith(b"ERR " + code + b" ") and reply.endswith(b"\r\n") \
        and reply.count(b"\n") == 1, "%s: expected ERR %s ...\\r\\n, got %r" % (what, code.decode(), reply)


def start_fails(*args):
    """Starts a server that must refuse to start; returns (exit status,
    everything it said on stdout, stderr and in its log)."""
    s = srv(*args)
    try:
        s.start()
    except RuntimeError as e:
        return s.proc.returncode, str(e) + s.log_text()
    s.stop()
    fail("gearmand started with %r" % (args,))


# ----------------------------------------------------------------------
# Policies


@test
def test_policy_sets_every_key_and_show_policies_lists_it():
    """`policy FUNC` with all five keys answers OK and `show policies`
    lists them, byte for byte."""
    with srv() as s:
        a = s.conn()
        assert a.admin("show policies") == b".\n"
        r = a.admin("policy pf retries=3 backoff=200 max_backoff=500 timeout=7 concurrency=2")
        assert r == OK, r
        assert a.admin("show policies") == pol_line("pf", 3, 200, 500, 7, 2) + b".\n"


@test
def test_policy_merges_keys_not_given_keep_their_values():
    """A second `policy` changes only the keys it names; the others keep
    the earlier value (or the default)."""
    with srv() as s:
        a = s.conn()
        set_policy(a, "pm", "retries=3 backoff=200")
        assert a.admin("show policies") == pol_line("pm", 3, 200) + b".\n"
        set_policy(a, "pm", "timeout=5")
        assert a.admin("show policies") == pol_line("pm", 3, 200, timeout=5) + b".\n"
        set_policy(a, "pm", "retries=0 concurrency=9 max_backoff=0")
        assert a.admin("show policies") == pol_line("pm", 0, 200, 0, 5, 9) + b".\n"


@test
def test_policy_creates_a_function_that_does_not_exist():
    """`policy` on an unknown function creates it: `status` lists it."""
    with srv() as s:
        a = s.conn()
        assert status_of(a, "fresh") is None
        set_policy(a, "fresh", "retries=1")
        assert status_of(a, "fresh") == (0, 0, 0)
        assert a.admin("show policies") == pol_line("fresh", 1) + b".\n"


@test
def test_policy_accepts_the_bounds_of_every_range():
    """The lowest and highest value of each key are accepted."""
    with srv() as s:
        a = s.conn()
        set_policy(a, "pb", "retries=254 backoff=86400000 max_backoff=86400000 timeout=86400 concurrency=1000000")
        assert a.admin("show policies") == pol_line("pb", 254, 86400000, 86400000, 86400, 1000000) + b".\n"
        set_policy(a, "pb", "retries=0 backoff=0 max_backoff=0 timeout=0 concurrency=0")
        assert a.admin("show policies") == pol_line("pb", 0, 0, 0, 0, 0) + b".\n"


@test
def test_policy_bad_arguments_are_refused_and_change_nothing():
    """Unknown keys, bad or out-of-range numbers, a pair without `=`, more
    than 5 pairs and missing arguments each get ERR INVALID_ARGUMENTS, and
    leave the policy (and the set of functions) as it was, even when a valid
    pair comes before the bad one."""
    with srv() as s:
        a = s.conn()
        set_policy(a, "pv", "retries=2 backoff=300 max_backoff=900 timeout=4 concurrency=3")
        before = a.admin("show policies")
        assert before == pol_line("pv", 2, 300, 900, 4, 3) + b".\n"
        bad = [
            "policy", "policy pv", "policy pv retries", "policy pv retries=",
            "policy pv =3", "policy pv retries=abc", "policy pv retries=1x",
            "policy pv retries=1.5", "policy pv retries=-1", "policy pv retries=255",
            "policy pv backoff=86400001", "policy pv max_backoff=86400001",
            "policy pv timeout=86401", "policy pv concurrency=1000001",
            "policy pv retries=99999999999999999999", "policy pv colour=3",
            "policy pv RETRIES=1", "policy pv retries=1 bogus",
            "policy pv retries=1 timeout=99999",
            "policy pv retries=1 backoff=1 max_backoff=1 timeout=1 concurrency=1 retries=2",
            "policy newfn retries=abc", "policy newfn",
        ]
        for line in bad:
            assert_err(a.admin(line), b"INVALID_ARGUMENTS", line)
            assert a.admin("show policies") == before, "after %r: %r" % (line, a.admin("show policies"))
        assert status_of(a, "newfn") is None, "a refused policy created the function"


@test
def test_policy_reset_removes_the_policy_and_the_old_behaviour_returns():
    """`policy FUNC reset` answers OK, the function leaves `show policies`,
    and a failed background job of it no longer becomes a dead letter."""
    with srv() as s:
        a = s.conn()
        set_policy(a, "pr", "retries=0 timeout=9")
        assert a.admin("policy pr reset") == OK
        assert a.admin("show policies") == b".\n"
        c = s.conn()
        w = worker(s, "pr")
        h = submit(c, "SUBMIT_JOB_BG", "pr", "", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_FAIL", h)
        sync(w)
        assert show_dead(a) == []
        assert grab(w) is None
        assert status_of(a, "pr") == (0, 0, 1)


@test
def test_show_policies_in_function_creation_order_and_paused_shows_defaults():
    """`show policies` lists functions with a policy or paused, in the order
    the functions were created (not by name, not by policy time); a paused
    function without a policy shows the defaults with paused=1; a function
    with neither is not listed; resume removes a policy-less one."""
    with srv() as s:
        a = s.conn()
        c = s.conn()
        submit(c, "SUBMIT_JOB_BG", "zeta", "", "x")      # created 1st
        set_policy(a, "alpha", "retries=1")              # created 2nd
        assert a.admin("pause mid") == OK                # created 3rd
        submit(c, "SUBMIT_JOB_BG", "plain", "", "x")     # neither: not listed
        set_policy(a, "zeta", "retries=2 backoff=10")
        assert a.admin("pause alpha") == OK
        want = (pol_line("zeta", 2, 10) + pol_line("alpha", 1, paused=1)
                + ("mid\t%s\tpaused=1\n" % DEFAULTS).encode() + b".\n")
        assert a.admin("show policies") == want, a.admin("show policies")
        assert a.admin("resume mid") == OK
        assert a.admin("resume alpha") == OK
        assert a.admin("show policies") == pol_line("zeta", 2, 10) + pol_line("alpha", 1) + b".\n"


@test
def test_policy_option_sets_policies_at_start():
    """--policy FUNC:k=v,... (repeatable) gives functions their policy at
    start, as `policy` would."""
    with srv("--policy", "cl:retries=5,backoff=2000,timeout=30",
             "--policy", "cl2:concurrency=3,max_backoff=700") as s:
        a = s.conn()
        assert a.admin("show policies") == (pol_line("cl", 5, 2000, timeout=30)
                                            + pol_line("cl2", max_backoff=700, concurrency=3) + b".\n")


@test
def test_bad_policy_option_stops_the_server_at_start_naming_it():
    """A bad --policy (out of range, unknown key, no pairs, no value) makes
    the server exit non-zero at start with a message naming --policy (a good
    one starts: the option is known, its values are what is refused)."""
    with srv("--policy", "cl:retries=254,backoff=0,max_backoff=86400000,timeout=86400,concurrency=1000000") as s:
        assert s.conn().admin("show policies") == pol_line("cl", 254, 0, 86400000, 86400, 1000000) + b".\n"
    for value in ("cl:retries=255", "cl:colour=1", "cl", "cl:retries", "cl:timeout=x"):
        rc, said = start_fails("--policy", value)
        assert rc != 0, "--policy %s: exit %s" % (value, rc)
        assert "--policy" in said, "--policy %s: message %r does not name --policy" % (value, said)


@test
def test_job_retries_minus_one_is_accepted_and_means_no_limit():
    """`-j -1` is accepted at start and sets no limit: a foreground job of a
    function without a policy is requeued after each of 3 worker deaths
    (with -j 2 the second would fail it, test_jobs.py)."""
    with srv("-j", "-1") as s:
        c = s.conn()
        h = submit(c, "SUBMIT_JOB", "jm", "", "x")
        for _ in range(3):
            w = worker(s, "jm")
            assert wait_until(lambda: grab(w), what="the requeued job")[0] == h
            w.close()
        w = worker(s, "jm")
        assert wait_until(lambda: grab(w), what="the requeued job")[0] == h
        c.nothing(0.05)
        w.send_packet("WORK_COMPLETE", h, "done")
        c.expect_packet("WORK_COMPLETE", h, "done")


# ----------------------------------------------------------------------
# Retries


@test
def test_background_work_fail_is_retried_with_exponential_backoff_then_dead():
    """retries=3 backoff=200 max_backoff=500: the job is handed out 4 times,
    the same handle and data each time; the waits before the retries are
    200, 400 and 500 ms (capped), each in [base, 1.25*base] (+150 ms for
    scheduling); the sleeping worker is woken with NOOP when the retry is
    due; after the 4th failure it is a dead letter (fail, 4 attempts) and
    is not handed out again."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "rf", "retries=3 backoff=200 max_backoff=500")
        w = worker(s, "rf")
        h = submit(c, "SUBMIT_JOB_BG", "rf", "u-rf", b"pay\0load")
        waits = []
        for k, base in enumerate((200, 400, 500), 1):
            if k == 1:
                assert grab(w) == (h, "rf", b"pay\0load"), "attempt 1"
            t_fail = time.monotonic()
            w.send_packet("WORK_FAIL", h)
            assert grab(w) is None, "handed out during the wait after attempt %d" % k
            j = wait_job(w)
            waited = (time.monotonic() - t_fail) * 1000
            waits.append(round(waited))
            assert base - 20 <= waited <= base * 1.25 + 150, \
                "wait after attempt %d: %.0f ms, want [%d, %d] (+150)" % (k, waited, base, base * 1.25)
            assert j == (h, "rf", b"pay\0load"), "attempt %d" % (k + 1)
        w.send_packet("WORK_FAIL", h)
        assert grab(w) is None
        w.send_packet("PRE_SLEEP")
        w.nothing(0.8)          # a 5th hand-out would come after ~500 ms
        dead = show_dead(a)
        assert [d[:4] + d[5:] for d in dead] == [(h, "rf", "u-rf", 4, "fail")], (dead, waits)
        c.nothing(0.01)


@test
def test_job_waiting_for_its_retry_counts_as_queued_and_is_not_handed_out():
    """While a failed background job waits for its retry, `status` counts
    it in the total but not as running, `show job` says scheduled with the
    attempts so far, and GRAB_JOB from any worker gets NO_JOB; then it is
    handed out again (running, 2 attempts) and dies after the last one."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "rq", "retries=1 backoff=1000")
        w1, w2 = worker(s, "rq"), worker(s, "rq")
        h = submit(c, "SUBMIT_JOB_BG", "rq", "u-rq", "x")
        assert show_job(a, h) == [h, "rq", "u-rq", "queued", "0", "0"]
        assert grab(w1)[0] == h
        assert show_job(a, h) == [h, "rq", "u-rq", "running", "1", "0"]
        assert status_of(a, "rq") == (1, 1, 2)
        w1.send_packet("WORK_FAIL", h)
        sync(w1)
        assert status_of(a, "rq") == (1, 0, 2)
        assert show_job(a, h) == [h, "rq", "u-rq", "scheduled", "1", "0"]
        assert grab(w1) is None
        assert grab(w2) is None
        j = wait_until(lambda: grab(w2), timeout=3, what="the retry")
        assert j == (h, "rq", b"x"), j
        assert show_job(a, h) == [h, "rq", "u-rq", "running", "2", "0"]
        w2.send_packet("WORK_FAIL", h)
        sync(w2)
        assert show_job(a, h) == [h, "rq", "u-rq", "dead", "2", "0"]
        assert status_of(a, "rq") == (0, 0, 2)


@test
def test_retried_job_goes_to_the_back_of_its_own_priority_queue():
    """A retried job is queued behind the jobs of its priority that came
    after it, but still ahead of lower priorities."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "bq", "retries=1 backoff=50 max_backoff=50")
        ha = submit(c, "SUBMIT_JOB_HIGH_BG", "bq", "", "A")
        hb = submit(c, "SUBMIT_JOB_HIGH_BG", "bq", "", "B")
        hc = submit(c, "SUBMIT_JOB_BG", "bq", "", "C")
        w = worker(s, "bq")
        assert grab(w)[0] == ha
        w.send_packet("WORK_FAIL", ha)
        sync(w)
        wait_until(lambda: job_state(a, ha) == "queued", timeout=3, what="the retry to be queued")
        got = [grab(w) for _ in range(3)]
        assert [g and g[0] for g in got] == [hb, ha, hc], (got, ha, hb, hc)


@test
def test_work_exception_of_a_background_job_is_retried_then_dead_as_exception():
    """WORK_EXCEPTION is a failed attempt: retried, then a dead letter with
    reason `exception`."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "re", "retries=1 backoff=0")
        w = worker(s, "re")
        h = submit(c, "SUBMIT_JOB_BG", "re", "u-re", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_EXCEPTION", h, "boom")
        assert wait_until(lambda: grab(w), timeout=3, what="the retry")[0] == h
        w.send_packet("WORK_EXCEPTION", h, "boom again")
        dead = wait_dead(a, 1)
        assert [d[:4] + d[5:] for d in dead] == [(h, "re", "u-re", 2, "exception")], dead


@test
def test_lost_worker_is_a_failed_attempt_then_dead_as_worker_lost():
    """A background job whose worker's connection drops is retried, and
    after the last attempt is a dead letter with reason `worker-lost`."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "rl", "retries=1 backoff=0")
        h = submit(c, "SUBMIT_JOB_BG", "rl", "u-rl", "x")
        w1 = worker(s, "rl")
        assert grab(w1)[0] == h
        w1.close()
        w2 = worker(s, "rl")
        assert wait_until(lambda: grab(w2), timeout=3, what="the retry")[0] == h
        assert show_job(a, h)[3:5] == ["running", "2"]
        w2.close()
        dead = wait_dead(a, 1)
        assert [d[:4] + d[5:] for d in dead] == [(h, "rl", "u-rl", 2, "worker-lost")], dead


@test
def test_foreground_job_of_a_policy_function_is_never_retried():
    """WORK_FAIL of a foreground job is forwarded to its client and the job
    is gone: no retry, no dead letter."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "ff", "retries=5 backoff=0")
        w = worker(s, "ff")
        h = submit(c, "SUBMIT_JOB", "ff", "u-ff", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_FAIL", h)
        c.expect_packet("WORK_FAIL", h)
        assert grab(w) is None
        assert show_dead(a) == []
        assert_err(a.admin("show job %s" % h), b"UNKNOWN_JOB", "show job of a finished job")
        assert status_of(a, "ff") == (0, 0, 1)
        w.send_packet("PRE_SLEEP")
        w.nothing(0.2)


# ----------------------------------------------------------------------
# show job


@test
def test_show_job_reports_state_and_attempts():
    """`show job` gives handle, function, unique, state, attempts and 0
    result bytes: queued (0), running (1), scheduled for a future epoch job
    (0); an unknown handle gets ERR UNKNOWN_JOB."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "sj", "retries=2")
        h1 = submit(c, "SUBMIT_JOB_BG", "sj", "u-1", "x")
        h2 = submit(c, "SUBMIT_JOB", "sj", "u-2", "y")
        h3 = submit(c, "SUBMIT_JOB_EPOCH", "sj", "u-3", "z", str(int(time.time()) + 3600))
        assert a.admin("show job %s" % h1) == ("%s\tsj\tu-1\tqueued\t0\t0\n.\n" % h1).encode()
        assert a.admin("show job %s" % h2) == ("%s\tsj\tu-2\tqueued\t0\t0\n.\n" % h2).encode()
        assert a.admin("show job %s" % h3) == ("%s\tsj\tu-3\tscheduled\t0\t0\n.\n" % h3).encode()
        w = worker(s, "sj")
        assert grab(w)[0] == h1
        assert a.admin("show job %s" % h1) == ("%s\tsj\tu-1\trunning\t1\t0\n.\n" % h1).encode()
        assert_err(a.admin("show job H:lc:999"), b"UNKNOWN_JOB", "show job H:lc:999")
        assert_err(a.admin("show job nosuch"), b"UNKNOWN_JOB", "show job nosuch")


# ----------------------------------------------------------------------
# Dead letters


@test
def test_dead_letters_keep_their_reason_oldest_first_and_are_not_counted():
    """With retries=0, each way of failing gives a dead letter with its
    reason (fail, exception, worker-lost, timeout), listed oldest first by
    `show dead` and `show dead FUNC` with DIED_AT close to now; dead jobs
    are not in `status` nor in `show jobs`."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "dl", "retries=0 timeout=1")
        hs = [submit(c, "SUBMIT_JOB_BG", "dl", "u-%s" % r, r) for r in ("fail", "exc", "lost", "slow")]
        w1, w2, w3 = worker(s, "dl"), worker(s, "dl"), worker(s, "dl")
        assert grab(w1)[0] == hs[0]
        w1.send_packet("WORK_FAIL", hs[0])
        wait_dead(a, 1)
        assert grab(w1)[0] == hs[1]
        w1.send_packet("WORK_EXCEPTION", hs[1], "boom")
        wait_dead(a, 2)
        assert grab(w3)[0] == hs[2]
        w3.close()
        wait_dead(a, 3)
        assert grab(w2)[0] == hs[3]
        t0 = time.time()
        dead = wait_dead(a, 4, timeout=5)
        assert time.time() - t0 >= 0.9, "timed out after %.2fs" % (time.time() - t0)
        reasons = ["fail", "exception", "worker-lost", "timeout"]
        uniques = ["u-fail", "u-exc", "u-lost", "u-slow"]
        assert [d[:4] + d[5:] for d in dead] == [(h, "dl", u, 1, r) for h, u, r in zip(hs, uniques, reasons)], dead
        for d in dead:
            assert abs(d[4] - time.time()) < 10, "DIED_AT %d, now %d" % (d[4], time.time())
        assert [d[4] for d in dead] == sorted(d[4] for d in dead), dead
        assert show_dead(a, "dl") == dead
        assert show_dead(a, "other") == []
        assert a.admin("show dead other") == b".\n"
        assert status_of(a, "dl") == (0, 0, 2)
        assert a.admin("show jobs") == b".\n"
        for h in hs:
            assert show_job(a, h)[3:5] == ["dead", "1"]


@test
def test_show_dead_of_a_function_lists_only_its_dead_letters():
    """`show dead FUNC` lists FUNC's dead letters only, oldest first."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        for fn in ("da", "db"):
            set_policy(a, fn, "retries=0")
        wa, wb = worker(s, "da"), worker(s, "db")
        ha1 = submit(c, "SUBMIT_JOB_BG", "da", "a1", "x")
        hb1 = submit(c, "SUBMIT_JOB_BG", "db", "b1", "x")
        ha2 = submit(c, "SUBMIT_JOB_BG", "da", "a2", "x")
        for w, h in ((wa, ha1), (wb, hb1), (wa, ha2)):
            assert grab(w)[0] == h
            w.send_packet("WORK_FAIL", h)
            sync(w)
        assert [d[0] for d in wait_dead(a, 3)] == [ha1, hb1, ha2]
        assert [d[:3] for d in show_dead(a, "da")] == [(ha1, "da", "a1"), (ha2, "da", "a2")]
        assert [d[:3] for d in show_dead(a, "db")] == [(hb1, "db", "b1")]


@test
def test_retry_dead_queues_the_job_again_with_attempts_from_zero():
    """`retry dead HANDLE` answers OK; the job leaves `show dead`, is queued
    (0 attempts) and a worker gets the same handle, function, unique and
    data; its attempts start again, so a failure is retried, not fatal."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "rd", "retries=1 backoff=0")
        w = worker(s, "rd")
        h = submit(c, "SUBMIT_JOB_BG", "rd", "u-rd", b"da\0ta")
        for _ in range(2):
            assert wait_until(lambda: grab_uniq(w), timeout=3, what="the job") == (h, "rd", "u-rd", b"da\0ta")
            w.send_packet("WORK_FAIL", h)
        assert [d[3] for d in wait_dead(a, 1)] == [2]
        assert a.admin("retry dead %s" % h) == OK
        assert show_dead(a) == []
        assert show_job(a, h) == [h, "rd", "u-rd", "queued", "0", "0"]
        assert status_of(a, "rd") == (1, 0, 1)
        assert grab_uniq(w) == (h, "rd", "u-rd", b"da\0ta")
        w.send_packet("WORK_FAIL", h)
        sync(w)
        assert show_dead(a) == [], "attempts were not reset by retry dead"
        assert wait_until(lambda: grab_uniq(w), timeout=3, what="the retry") == (h, "rd", "u-rd", b"da\0ta")
        assert show_job(a, h)[3:5] == ["running", "2"]
        w.send_packet("WORK_COMPLETE", h, "ok")
        sync(w)
        # its outcome (--keep-results): complete, attempts from the revival
        assert show_job(a, h) == [h, "rd", "u-rd", "complete", "2", "2"]
        assert show_dead(a) == []


@test
def test_retry_dead_all_queues_every_dead_job_of_the_function():
    """`retry dead all FUNC` answers OK and queues all of FUNC's dead
    letters again, in their order; other functions' stay dead."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        for fn in ("ra", "rb"):
            set_policy(a, fn, "retries=0")
        w = worker(s, "ra", "rb")
        ha = [submit(c, "SUBMIT_JOB_BG", "ra", "", "a%d" % i) for i in range(3)]
        hb = submit(c, "SUBMIT_JOB_BG", "rb", "", "b")
        for _ in range(4):
            h = grab(w)[0]
            w.send_packet("WORK_FAIL", h)
        wait_dead(a, 4)
        assert a.admin("retry dead all ra") == OK
        assert [d[0] for d in show_dead(a)] == [hb]
        assert status_of(a, "ra") == (3, 0, 1)
        got = [grab(w) for _ in range(4)]
        assert [g and g[0] for g in got] == ha + [None], got
        assert [g[2] for g in got[:3]] == [b"a0", b"a1", b"a2"]


@test
def test_discard_dead_removes_one_or_all_of_a_function():
    """`discard dead HANDLE` and `discard dead all FUNC` answer OK and the
    jobs are gone for good (not in show dead, not queued)."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        for fn in ("xa", "xb"):
            set_policy(a, fn, "retries=0")
        w = worker(s, "xa", "xb")
        ha = [submit(c, "SUBMIT_JOB_BG", "xa", "", "a%d" % i) for i in range(3)]
        hb = submit(c, "SUBMIT_JOB_BG", "xb", "", "b")
        for _ in range(4):
            h = grab(w)[0]
            w.send_packet("WORK_FAIL", h)
        order = [d[0] for d in wait_dead(a, 4)]     # the order they failed in
        assert sorted(order) == sorted(ha + [hb]), order
        assert a.admin("discard dead %s" % ha[1]) == OK
        assert [d[0] for d in show_dead(a)] == [h for h in order if h != ha[1]]
        assert a.admin("discard dead all xa") == OK
        assert [d[0] for d in show_dead(a)] == [hb]
        assert_err(a.admin("show job %s" % ha[0]), b"UNKNOWN_JOB", "show job of a discarded job")
        assert grab(w) is None
        assert status_of(a, "xa") == (0, 0, 1)


@test
def test_retry_or_discard_of_an_unknown_dead_handle_is_unknown_job():
    """`retry dead` / `discard dead` of a handle that is not a dead letter
    gets ERR UNKNOWN_JOB and changes nothing."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "ud", "retries=0")
        w = worker(s, "ud")
        h = submit(c, "SUBMIT_JOB_BG", "ud", "", "x")
        assert grab(w)[0] == h
        w.send_packet("WORK_FAIL", h)
        wait_dead(a, 1)
        for line in ("retry dead H:lc:999", "discard dead H:lc:999"):
            assert_err(a.admin(line), b"UNKNOWN_JOB", line)
        assert [d[0] for d in show_dead(a)] == [h]


@test
def test_dead_letter_max_keeps_the_newest():
    """--dead-letter-max 3: of 5 dead jobs the 3 newest are kept."""
    with srv("--dead-letter-max", "3") as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "dm", "retries=0")
        w = worker(s, "dm")
        hs = [submit(c, "SUBMIT_JOB_BG", "dm", "", "j%d" % i) for i in range(5)]
        for h in hs:
            assert grab(w)[0] == h
            w.send_packet("WORK_FAIL", h)
            sync(w)
        wait_until(lambda: [d[0] for d in show_dead(a)] == hs[2:], timeout=3,
                   what="the 3 newest dead letters %s, have %s" % (hs[2:], show_dead(a)))
        assert_err(a.admin("show job %s" % hs[0]), b"UNKNOWN_JOB", "show job of a dropped dead letter")


# ----------------------------------------------------------------------
# Time limits


@test
def test_time_limit_takes_a_background_job_back_retries_it_then_dead_as_timeout():
    """timeout=1: a background job held longer than 1 s is taken back and
    retried (a sleeping worker is woken and gets it), and after its last
    attempt also runs too long it is a dead letter with reason `timeout`."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "tl", "retries=1 backoff=0 timeout=1")
        w1, w2 = worker(s, "tl"), worker(s, "tl")
        h = submit(c, "SUBMIT_JOB_BG", "tl", "u-tl", "x")
        assert grab(w1)[0] == h
        t0 = time.monotonic()
        assert wait_job(w2) == (h, "tl", b"x")
        took = time.monotonic() - t0
        assert 0.9 <= took <= 3.0, "taken back after %.2fs" % took
        assert show_job(a, h)[3:5] == ["running", "2"]
        dead = wait_dead(a, 1, timeout=5)
        assert [d[:4] + d[5:] for d in dead] == [(h, "tl", "u-tl", 2, "timeout")], dead
        assert status_of(a, "tl") == (0, 0, 2)


@test
def test_work_packets_for_a_job_taken_back_are_dropped_without_reply():
    """After the time limit took a job back, its first worker's WORK_DATA,
    WORK_WARNING, WORK_STATUS, WORK_COMPLETE, WORK_FAIL and WORK_EXCEPTION
    get no reply at all and do not touch the job, now running elsewhere."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "tb", "retries=1 backoff=0 timeout=1")
        w1, w2 = worker(s, "tb"), worker(s, "tb")
        h = submit(c, "SUBMIT_JOB_BG", "tb", "", "x")
        assert grab(w1)[0] == h
        assert wait_until(lambda: grab(w2), timeout=4, what="the job taken back")[0] == h
        for pkt in (("WORK_DATA", h, "d"), ("WORK_WARNING", h, "w"), ("WORK_STATUS", h, "1", "2"),
                    ("WORK_COMPLETE", h, "late"), ("WORK_FAIL", h), ("WORK_EXCEPTION", h, "e")):
            w1.send_packet(*pkt)
        no_reply(w1, "work packets for a job taken back by its time limit")
        w1.nothing(0.05)
        assert show_job(a, h) == [h, "tb", "", "running", "2", "0"]
        assert status_of(a, "tb") == (1, 1, 2)
        assert show_dead(a) == []
        w2.send_packet("WORK_COMPLETE", h, "fresh")
        sync(w2)
        assert show_job(a, h) == [h, "tb", "", "complete", "2", "5"]
        assert status_of(a, "tb") == (0, 0, 2)


@test
def test_time_limit_fails_a_foreground_job():
    """timeout=1 on a foreground job: after about 1 s its client gets
    WORK_FAIL, the job is not retried and is no dead letter, and the
    worker's late WORK_COMPLETE is dropped without a reply."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "tf", "retries=3 backoff=0 timeout=1")
        w = worker(s, "tf")
        h = submit(c, "SUBMIT_JOB", "tf", "", "x")
        assert grab(w)[0] == h
        t0 = time.monotonic()
        c.expect_packet("WORK_FAIL", h, timeout=5)
        took = time.monotonic() - t0
        assert 0.9 <= took <= 3.0, "failed after %.2fs" % took
        w.send_packet("WORK_COMPLETE", h, "late")
        no_reply(w, "a late WORK_COMPLETE for a foreground job taken back by its time limit")
        c.nothing(0.1)
        assert grab(w) is None
        assert show_dead(a) == []
        assert status_of(a, "tf") == (0, 0, 1)


# ----------------------------------------------------------------------
# Concurrency


@test
def test_concurrency_2_never_runs_more_than_2_across_8_workers():
    """concurrency=2 with 8 workers and 40 jobs: at no time more than 2
    jobs run (counted from the JOB_ASSIGNs, and from `status`), yet 2 do
    run at once, and every job is handed out exactly once."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "cc", "concurrency=2")
        ws = [worker(s, "cc") for _ in range(8)]
        hs = {submit(c, "SUBMIT_JOB_BG", "cc", "", "j%d" % i) for i in range(40)}
        state = ["grab"] * 8
        holding = {}                 # worker index -> (handle, since)
        assigned, done = [], set()
        running = max_running = max_status = 0
        for w in ws:
            w.send_packet("GRAB_JOB")
        deadline = time.time() + 30
        rounds = 0
        while len(done) < 40:
            assert time.time() < deadline, "stalled: %d done, states %s" % (len(done), state)
            rounds += 1
            if rounds % 4 == 0:
                st = status_of(a, "cc")
                assert st[1] <= 2, "status says %d running" % st[1]
                max_status = max(max_status, st[1])
            now = time.monotonic()
            for i, (h, since) in list(holding.items()):
                if now - since >= 0.005:
                    del holding[i]
                    running -= 1     # before the server hears it: never under-counts
                    done.add(h)
                    ws[i].send_packet("WORK_COMPLETE", h, "")
                    ws[i].send_packet("GRAB_JOB")
                    state[i] = "grab"
            ready = [i for i, w in enumerate(ws) if w.buf]
            if not ready:
                r, _, _ = select.select([w.sock for w in ws], [], [], 0.005)
                ready = [i for i, w in enumerate(ws) if w.sock in r]
            for i in ready:
                p = ws[i].recv_packet(timeout=5)
                if p.name == "JOB_ASSIGN":
                    assert state[i] == "grab", (i, state[i], p)
                    h = p.fields(3)[0].decode()
                    running += 1
                    assert running <= 2, "%d jobs running at once" % running
                    max_running = max(max_running, running)
                    assigned.append(h)
                    holding[i] = (h, time.monotonic())
                    state[i] = "hold"
                elif p.name == "NO_JOB":
                    ws[i].send_packet("PRE_SLEEP")
                    state[i] = "sleep"
                elif p.name == "NOOP":
                    if state[i] == "sleep":
                        ws[i].send_packet("GRAB_JOB")
                        state[i] = "grab"
                else:
                    fail("worker %d got %r" % (i, p))
        assert sorted(assigned) == sorted(hs), "handed out %d times for %d jobs" % (len(assigned), len(hs))
        assert max_running == 2, "never 2 at once (max %d)" % max_running
        for i, w in enumerate(ws):
            if state[i] == "grab":      # its last GRAB_JOB: nothing is left
                w.expect_packet("NO_JOB")
        assert status_of(a, "cc") == (0, 0, 8)


@test
def test_concurrency_waiting_jobs_go_in_priority_order_and_a_sleeper_is_woken():
    """concurrency=1: while one job runs, queued jobs are not handed out
    (NO_JOB) and a sleeping worker is not woken; when it ends, the sleeper
    gets NOOP and the jobs come HIGH, NORMAL, LOW."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        set_policy(a, "c1", "concurrency=1")
        w1, w2 = worker(s, "c1"), worker(s, "c1")
        h0 = submit(c, "SUBMIT_JOB_BG", "c1", "", "first")
        assert grab(w1)[0] == h0
        hl = submit(c, "SUBMIT_JOB_LOW_BG", "c1", "", "low")
        hn = submit(c, "SUBMIT_JOB_BG", "c1", "", "normal")
        hh = submit(c, "SUBMIT_JOB_HIGH_BG", "c1", "", "high")
        assert grab(w2) is None
        assert status_of(a, "c1") == (4, 1, 2)
        w2.send_packet("PRE_SLEEP")
        w2.nothing(0.2)
        w1.send_packet("WORK_COMPLETE", h0, "")
        w2.expect_packet("NOOP", timeout=5)
        assert grab(w2)[0] == hh
        assert grab(w1) is None
        w2.send_packet("WORK_COMPLETE", hh, "")
        assert grab(w2)[0] == hn
        w2.send_packet("WORK_COMPLETE", hn, "")
        sync(w2)                 # w1's GRAB_JOB must come after the completion
        assert grab(w1)[0] == hl


# ----------------------------------------------------------------------
# Pause, resume, purge


@test
def test_pause_accepts_jobs_hands_none_out_and_resume_wakes_sleepers():
    """A paused function takes submissions (JOB_CREATED) but GRAB_JOB gets
    NO_JOB and a sleeping worker is not woken by new jobs; `resume` answers
    OK, wakes it with NOOP, and the jobs come in order."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        w = worker(s, "pz")
        assert a.admin("pause pz") == OK
        hb = submit(c, "SUBMIT_JOB_BG", "pz", "", "bg")
        assert grab(w) is None
        w.send_packet("PRE_SLEEP")
        hf = submit(c, "SUBMIT_JOB", "pz", "", "fg")
        hh = submit(c, "SUBMIT_JOB_HIGH_BG", "pz", "", "high")
        w.nothing(0.3)
        assert status_of(a, "pz") == (3, 0, 1)
        assert a.admin("resume pz") == OK
        w.expect_packet("NOOP", timeout=5)
        got = [grab(w) for _ in range(4)]
        assert [g and g[0] for g in got] == [hh, hb, hf, None], got
        w.send_packet("WORK_COMPLETE", hf, "r")
        c.expect_packet("WORK_COMPLETE", hf, "r")


@test
def test_paused_function_does_not_stop_the_workers_other_functions():
    """A worker of a paused function and another one gets the other
    function's jobs, and NO_JOB once only paused work is left."""
    with srv() as s:
        a, c = s.conn(), s.conn()
        assert a.admin("pause pa") == OK
        submit(c, "SUBMIT_JOB_HIGH_BG", "pa", "", "paused")
        hb = submit(c, "SUBMIT_JOB_LOW_BG", "pb", "", "other")
        w = worker(s, "pa", "pb")
        assert grab(w) == (hb, "pb", b"other")
        w.send_packet("WORK_COMPLETE", hb, "")
        assert grab(w) is None
        assert status_of(a, "pa") == (1, 0, 1)


@test
def test_pause_creates_the_function_and_resume_or_purge_of_an_unknown_one_fail():
    """`pause` of a new function creates it (listed with the default policy
    and paused=1); `resume` / `purge` of a function that does not exist get
    ERR UNKNOWN_FUNCTION."""
    with srv() as s:
        a = s.conn()
        assert a.admin("pause newp") == OK
        assert status_of(a, "newp") == (0, 0, 0)
        assert a.admin("show policies") == ("newp\t%s\tpaused=1\n.\n" % DEFAULTS).encode()
        for line in ("resume nosuch", "purge nosuch"):
            assert_err(a.admin(line), b"UNKNOWN_FUNCTION", line)
        assert status_of(a, "nosuch") is None


@test
def test_purge_removes_queued_and_scheduled_jobs_and_leaves_running_ones():
    """`purge` answers OK and removes the function's queued jobs, a job
    waiting for its retry and a future epoch job; a client waiting on a
    purged foreground job gets WORK_FAIL; the running job stays, and its
    client still gets WORK_COMPLETE."""
    with srv() as s:
        a, c, cr, cq = s.conn(), s.conn(), s.conn(), s.conn()
        set_policy(a, "pg", "retries=1 backoff=60000")
        w = worker(s, "pg")
        hr = submit(cr, "SUBMIT_JOB", "pg", "", "running")
        assert grab(w)[0] == hr
        hs = submit(c, "SUBMIT_JOB_BG", "pg", "", "retrying")
        assert grab(w)[0] == hs
        w.send_packet("WORK_FAIL", hs)
        sync(w)
        assert show_job(a, hs)[3] == "scheduled"
        hq = submit(cq, "SUBMIT_JOB", "pg", "", "queued fg")
        hb = submit(c, "SUBMIT_JOB_BG", "pg", "", "queued bg")
        he = submit(c, "SUBMIT_JOB_EPOCH", "pg", "", "epoch", str(int(time.time()) + 3600))
        assert status_of(a, "pg") == (5, 1, 1)
        assert a.admin("purge pg") == OK
        cq.expect_packet("WORK_FAIL", hq)
        assert status_of(a, "pg") == (1, 1, 1)
        # background jobs leave a failed outcome (--keep-results), a foreground one nothing
        for h, attempts in ((hs, 1), (hb, 0), (he, 0)):
            j = show_job(a, h)
            assert j[3] == "failed" and j[4] == str(attempts), "show job of purged %s: %r" % (h, j)
        assert_err(a.admin("show job %s" % hq), b"UNKNOWN_JOB", "show job of purged %s" % hq)
        assert show_job(a, hr)[3] == "running"
        assert show_dead(a) == []
        w.send_packet("WORK_COMPLETE", hr, "done")
        cr.expect_packet("WORK_COMPLETE", hr, "done")
        assert grab(w) is None
        assert status_of(a, "pg") == (0, 0, 1)
        c.nothing(0.05)


@test
def test_purge_removes_stored_jobs_so_a_restart_does_not_replay_them():
    """With the sqlite queue, purged background jobs are deleted from the
    store: after a restart on the same file only the other function's job
    is replayed."""
    d = tempfile.mkdtemp(prefix="gmtest-lifecycle-")
    db = os.path.join(d, "queue.sqlite")
    args = ("-q", "libsqlite3", "--libsqlite3-db", db)
    with srv(*args) as s:
        a, c = s.conn(), s.conn()
        purged = [submit(c, "SUBMIT_JOB_BG", "pq", "u%d" % i, "p%d" % i) for i in range(3)]
        hk = submit(c, "SUBMIT_JOB_BG", "keep", "uk", "kept")
        assert status_of(a, "pq") == (3, 0, 0)
        assert a.admin("purge pq") == OK
        assert status_of(a, "pq") == (0, 0, 0)
    con = sqlite3.connect(db, timeout=10)
    try:
        rows = con.execute("SELECT function_name, unique_key FROM gearman_queue").fetchall()
    finally:
        con.close()
    rows = [(bytes(f) if not isinstance(f, str) else f.encode(),
             bytes(u) if not isinstance(u, str) else u.encode()) for f, u in rows]
    assert rows == [(b"keep", b"uk")], rows
    with srv(*args) as s:
        a = s.conn()
        w = worker(s, "pq", "keep")
        assert grab(w) == (hk, "keep", b"kept")
        assert grab(w) is None, "a purged job was replayed (%s)" % purged
        w.send_packet("WORK_COMPLETE", hk, "")
        sync(w)


if __name__ == "__main__":
    gmtest.main()
