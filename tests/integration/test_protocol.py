#!/usr/bin/env python3
"""Binary protocol, packet by packet: every request type a client or worker
may send gets the reply gearmand 1.1.20 gives (reference sections 1 and 2),
except where design.md section 9 says we differ (SUBMIT_JOB_SCHED runs,
ALL_YOURS is accepted).  Replies are compared whole, header included."""

import atexit
import os
import re
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import Server, packet, response, submit, test  # noqa: E402

PREFIX = "H:test"


def H(n):
    """The handle of the n-th job of a server started by srv()."""
    return "%s:%d" % (PREFIX, n)


def srv(*args):
    return Server("--job-handle-prefix", PREFIX, *args)


def worker(s, *functions):
    """A worker connection whose CAN_DOs the dispatcher has processed (the
    ECHO behind them comes back after them): with I/O threads of its own,
    another connection's next packet could otherwise overtake them."""
    w = s.conn()
    for f in functions:
        w.send_packet("CAN_DO", f)
    echo_ok(w)
    return w


def echo_ok(c, data=b"still-alive"):
    """The connection still answers: an ECHO round trip."""
    c.send_packet("ECHO_REQ", data)
    c.expect_packet("ECHO_RES", data)


# ----------------------------------------------------------------------
# SUBMIT_JOB_SCHED (design 9): the job is set up by the first test of this
# file and checked by the last one, so waiting for the next whole minute
# overlaps with the rest of the file instead of adding to its run time.

_sched = {}


@atexit.register
def _sched_cleanup():
    if "server" in _sched:
        _sched.pop("server").stop()


def _sched_setup():
    now = time.time()
    if (int(now) // 60 + 1) * 60 - now < 2.5:
        # too close to the minute to tell "not yet" from "now": wait it out
        time.sleep((int(now) // 60 + 1) * 60 - now + 0.2)
        now = time.time()
    due = (int(now) // 60 + 1) * 60
    tm = time.gmtime(due)
    far = time.gmtime(due + 30 * 60)
    s = srv().start()
    _sched["server"] = s
    c = s.conn()
    w = worker(s, "sched")
    # due at the next whole minute: minute and hour given, the rest "any"
    h_due = submit(c, "SUBMIT_JOB_SCHED", "sched", "s-due", "payload-due",
                   str(tm.tm_min), str(tm.tm_hour), "*", "", "*")
    # due in 30 minutes: never during this test
    h_far = submit(c, "SUBMIT_JOB_SCHED", "sched", "s-far", "payload-far",
                   str(far.tm_min), "", "", "", "")
    assert h_due == H(1) and h_far == H(2), (h_due, h_far)
    _sched.update(client=c, worker=w, due=due, handle=h_due)
    # known to the server, queued, not running
    c.send_packet("GET_STATUS", h_due)
    c.expect_packet("STATUS_RES", h_due, "1", "0", "0", "0")
    # not handed out before its minute
    w.send_packet("GRAB_JOB")
    w.expect_packet("NO_JOB")
    w.send_packet("PRE_SLEEP")
    w.nothing(0.3)


@test
def test_submit_job_sched_is_not_run_before_its_minute():
    _sched_setup()


@test
def test_submit_job_sched_matching_the_current_minute_runs_now():
    # design 9: the minute now counts; with day and month given, the next
    # match after it would be a year away
    now = time.time()
    if (int(now) // 60 + 1) * 60 - now < 3:
        time.sleep((int(now) // 60 + 1) * 60 - now + 0.2)
    tm = time.gmtime()
    fields = (str(tm.tm_min), str(tm.tm_hour), str(tm.tm_mday), str(tm.tm_mon), "")
    with srv() as s:
        c = s.conn()
        w = worker(s, "sched-now")
        h = submit(c, "SUBMIT_JOB_SCHED", "sched-now", "s-now", "payload-now", *fields)
        assert h == H(1), h
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h, "sched-now", "s-now", "payload-now")
        w.send_packet("WORK_COMPLETE", h, "done")
        echo_ok(w)
        c.send_packet("GET_STATUS", h)
        c.expect_packet("STATUS_RES", h, "0", "0", "0", "0")


@test
def test_submit_job_sched_bad_fields_give_error_and_connection_stays():
    bad = [
        ("60", "", "", "", ""),      # minute 0-59
        ("-1", "", "", "", ""),
        ("x", "", "", "", ""),
        ("", "24", "", "", ""),      # hour 0-23
        ("", "", "0", "", ""),       # day of month 1-31
        ("", "", "32", "", ""),
        ("", "", "", "0", ""),       # month 1-12
        ("", "", "", "13", ""),
        ("", "", "", "", "8"),       # day of week 0-7
        ("1x", "", "", "", ""),
    ]
    with srv() as s:
        c = s.conn()
        for fields in bad:
            c.send_packet("SUBMIT_JOB_SCHED", "sched", "", *fields, "data")
            p = c.expect("ERROR")
            code, text = p.fields(2)
            assert code and text, "ERROR without code or text for %r: %r" % (fields, p)
        echo_ok(c)
        # nothing was queued by the rejected submissions
        status = c.admin("status").decode()
        assert "sched\t" not in status or "sched\t0\t0\t0\n" in status, status
        # a valid one still works on the same connection
        assert submit(c, "SUBMIT_JOB_SCHED", "sched", "", "d", "0", "0", "1", "1", "") == H(1)


# ----------------------------------------------------------------------


@test
def test_reverse_walkthrough_byte_for_byte():
    with srv() as s:
        c = s.conn()
        w = s.conn()
        c.send(b"\0REQ" + struct.pack(">II", 7, 13) + b"reverse\0\0test")
        c.expect_packet("JOB_CREATED", "H:test:1")
        assert response("JOB_CREATED", "H:test:1") == \
            b"\0RES\0\0\0\x08\0\0\0\x08H:test:1"
        w.send(b"\0REQ\0\0\0\x01\0\0\0\x07reverse")
        w.send(b"\0REQ\0\0\0\x09\0\0\0\x00")
        raw = w.recv_packet().raw()
        assert raw == b"\0RES\0\0\0\x0b\0\0\0\x15H:test:1\0reverse\0test", raw
        w.send(b"\0REQ\0\0\0\x0d\0\0\0\x0dH:test:1\0tset")
        raw = c.recv_packet().raw()
        assert raw == b"\0RES\0\0\0\x0d\0\0\0\x0dH:test:1\0tset", raw
        # the job is gone
        w.send_packet("GRAB_JOB")
        assert w.recv_packet().raw() == b"\0RES\0\0\0\x0a\0\0\0\x00"
        c.nothing(0.1)


@test
def test_echo_req_returns_identical_payload_small_empty_and_1mib():
    with srv() as s:
        c = s.conn()
        c.send_packet("ECHO_REQ", b"hello")
        assert c.recv_packet().raw() == b"\0RES\0\0\0\x11\0\0\0\x05hello"
        c.send_packet("ECHO_REQ")
        assert c.recv_packet().raw() == b"\0RES\0\0\0\x11\0\0\0\x00"
        big = os.urandom(1 << 20)
        c.send_packet("ECHO_REQ", big)
        p = c.expect("ECHO_RES")
        assert p.data == big, "1 MiB echo differs (got %d bytes)" % len(p.data)
        # NULs inside the payload are data, not separators
        c.send_packet("ECHO_REQ", b"a\0b\0\0")
        c.expect_packet("ECHO_RES", b"a\0b\0\0")


@test
def test_submit_job_variants_get_job_created_with_their_priority():
    variants = ["SUBMIT_JOB", "SUBMIT_JOB_HIGH", "SUBMIT_JOB_LOW",
                "SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_LOW_BG"]
    with srv() as s:
        c = s.conn()
        for i, v in enumerate(variants, 1):
            c.send_packet(v, "prio", "", "data-%d" % i)
            c.expect_packet("JOB_CREATED", H(i))
        assert c.admin("prioritystatus") == b"prio\t2\t2\t2\t0\n.\n", c.admin("prioritystatus")
        assert c.admin("status") == b"prio\t6\t0\t0\n.\n"
        w = worker(s, "prio")
        got = []
        for _ in variants:
            w.send_packet("GRAB_JOB")
            h, fn, data = w.expect("JOB_ASSIGN").fields(3)
            assert fn == b"prio"
            got.append(data.decode())
            w.send_packet("WORK_COMPLETE", h, b"r-" + data)
        # HIGH first, then NORMAL, then LOW; FIFO inside a priority
        assert got == ["data-2", "data-5", "data-1", "data-4", "data-3", "data-6"], got
        # only the three foreground jobs report back, in completion order
        c.expect_packet("WORK_COMPLETE", H(2), "r-data-2")
        c.expect_packet("WORK_COMPLETE", H(1), "r-data-1")
        c.expect_packet("WORK_COMPLETE", H(3), "r-data-3")
        c.nothing(0.2)


@test
def test_submit_job_epoch_past_runs_now_future_waits():
    with srv() as s:
        c = s.conn()
        w = worker(s, "ep")
        now = int(time.time())
        h_future = submit(c, "SUBMIT_JOB_EPOCH", "ep", "fut", "later", str(now + 3600))
        h_past = submit(c, "SUBMIT_JOB_EPOCH", "ep", "past", "now", str(now - 10))
        assert (h_future, h_past) == (H(1), H(2))
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h_past, "ep", "past", "now")
        w.send_packet("GRAB_JOB")
        w.expect_packet("NO_JOB")
        # background: the client hears nothing about it
        w.send_packet("WORK_COMPLETE", h_past, "done")
        c.nothing(0.2)
        c.send_packet("GET_STATUS", h_future)
        c.expect_packet("STATUS_RES", h_future, "1", "0", "0", "0")


@test
def test_submit_reduce_job_four_fields_and_grab_job_all():
    with srv() as s:
        c = s.conn()
        w = worker(s, "mr")
        # function, unique, reducer, aggregator (ignored), then data
        h1 = submit(c, "SUBMIT_REDUCE_JOB", "mr", "u-fg", b"a\0b", "red", "")
        c.send_packet("SUBMIT_REDUCE_JOB_BACKGROUND", "mr", "u-bg", "red2", "agg", "bgdata")
        h2 = c.expect("JOB_CREATED").data.decode()
        assert (h1, h2) == (H(1), H(2))
        w.send_packet("GRAB_JOB_ALL")
        w.expect_packet("JOB_ASSIGN_ALL", h1, "mr", "u-fg", "red", b"a\0b")
        w.send_packet("WORK_COMPLETE", h1, "reduced")
        c.expect_packet("WORK_COMPLETE", h1, "reduced")
        # a reduce job grabbed with GRAB_JOB_UNIQ comes as JOB_ASSIGN_UNIQ
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h2, "mr", "u-bg", "bgdata")
        w.send_packet("WORK_COMPLETE", h2, "x")
        # and with plain GRAB_JOB as JOB_ASSIGN
        h3 = submit(c, "SUBMIT_REDUCE_JOB_BACKGROUND", "mr", "u3", "d3", "red", "")
        w.send_packet("GRAB_JOB")
        w.expect_packet("JOB_ASSIGN", h3, "mr", "d3")
        w.send_packet("WORK_COMPLETE", h3, "x")
        c.nothing(0.2)


@test
def test_grab_job_all_on_plain_job_gets_job_assign_uniq():
    with srv() as s:
        c = s.conn()
        w = worker(s, "plain")
        h = submit(c, "SUBMIT_JOB", "plain", "uq", "dd")
        w.send_packet("GRAB_JOB_ALL")
        w.expect_packet("JOB_ASSIGN_UNIQ", h, "plain", "uq", "dd")
        w.send_packet("GRAB_JOB_ALL")
        w.expect_packet("NO_JOB")


@test
def test_grab_job_uniq_and_no_job():
    with srv() as s:
        c = s.conn()
        w = s.conn()
        # no abilities at all: NO_JOB, exact bytes; a payload on GRAB is ignored
        w.send_packet("GRAB_JOB")
        w.expect_packet("NO_JOB")
        w.send_packet("GRAB_JOB_UNIQ", "ignored")
        w.expect_packet("NO_JOB")
        w.send_packet("CAN_DO", "gu")
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("NO_JOB")
        h1 = submit(c, "SUBMIT_JOB", "gu", "", "empty-unique")
        h2 = submit(c, "SUBMIT_JOB", "gu", "my-unique", b"bin\0ary")
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h1, "gu", "", "empty-unique")
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h2, "gu", "my-unique", b"bin\0ary")


@test
def test_get_status_unknown_and_known_running_and_progress():
    with srv() as s:
        c = s.conn()
        c.send_packet("GET_STATUS", "H:test:99")
        c.expect_packet("STATUS_RES", "H:test:99", "0", "0", "0", "0")
        h = submit(c, "SUBMIT_JOB", "st", "", "x")
        other = s.conn()   # any connection may ask about any job
        other.send_packet("GET_STATUS", h)
        other.expect_packet("STATUS_RES", h, "1", "0", "0", "0")
        w = worker(s, "st")
        w.send_packet("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        other.send_packet("GET_STATUS", h)
        other.expect_packet("STATUS_RES", h, "1", "1", "0", "0")
        w.send_packet("WORK_STATUS", h, "3", "10")
        c.expect_packet("WORK_STATUS", h, "3", "10")
        other.send_packet("GET_STATUS", h)
        other.expect_packet("STATUS_RES", h, "1", "1", "3", "10")
        w.send_packet("WORK_COMPLETE", h, "")
        c.expect_packet("WORK_COMPLETE", h, "")
        other.send_packet("GET_STATUS", h)
        other.expect_packet("STATUS_RES", h, "0", "0", "0", "0")


@test
def test_get_status_unique_six_fields_with_client_count():
    with srv() as s:
        c1, c2, q = s.conn(), s.conn(), s.conn()
        q.send_packet("GET_STATUS_UNIQUE", "nope")
        q.expect_packet("STATUS_RES_UNIQUE", "nope", "0", "0", "0", "0", "0")
        h = submit(c1, "SUBMIT_JOB", "gsu", "same", "x")
        q.send_packet("GET_STATUS_UNIQUE", "same")
        q.expect_packet("STATUS_RES_UNIQUE", "same", "1", "0", "0", "0", "1")
        assert submit(c2, "SUBMIT_JOB", "gsu", "same", "y") == h
        w = worker(s, "gsu")
        w.send_packet("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        q.send_packet("GET_STATUS_UNIQUE", "same")
        q.expect_packet("STATUS_RES_UNIQUE", "same", "1", "1", "0", "0", "2")
        w.send_packet("WORK_STATUS", h, "5", "7")
        c1.expect_packet("WORK_STATUS", h, "5", "7")
        c2.expect_packet("WORK_STATUS", h, "5", "7")
        q.send_packet("GET_STATUS_UNIQUE", "same")
        q.expect_packet("STATUS_RES_UNIQUE", "same", "1", "1", "5", "7", "2")
        # a background job has no clients
        submit(c1, "SUBMIT_JOB_BG", "gsu", "bgu", "z")
        q.send_packet("GET_STATUS_UNIQUE", "bgu")
        q.expect_packet("STATUS_RES_UNIQUE", "bgu", "1", "0", "0", "0", "0")


@test
def test_option_req_exceptions_echoes_bytes_sent():
    with srv() as s:
        c = s.conn()
        for name in ["exceptions", "EXCEPTIONS", "Exceptions"]:
            c.send_packet("OPTION_REQ", name)
            c.expect_packet("OPTION_RES", name)


@test
def test_option_req_unknown_option_gets_error_and_connection_stays():
    with srv() as s:
        c = s.conn()
        for name in ["frobnicate", "", "exception", "exceptions2"]:
            c.send_packet("OPTION_REQ", name)
            c.expect_packet("ERROR", "UNKNOWN_OPTION", "Server does not recognize given option")
        echo_ok(c)


@test
def test_can_do_cant_do_reset_abilities():
    with srv() as s:
        c = s.conn()
        w = s.conn()
        submit(c, "SUBMIT_JOB_BG", "fa", "", "a")
        submit(c, "SUBMIT_JOB_BG", "fb", "", "b")
        w.send_packet("CAN_DO", "fa")
        w.send_packet("CANT_DO", "fa")
        w.send_packet("GRAB_JOB")
        w.expect_packet("NO_JOB")
        w.send_packet("CAN_DO", "fa")
        w.send_packet("CAN_DO", "fb")
        w.send_packet("RESET_ABILITIES")
        w.send_packet("GRAB_JOB")
        w.expect_packet("NO_JOB")
        lines = c.admin("status").decode().splitlines()
        assert sorted(lines[:-1]) == ["fa\t1\t0\t0", "fb\t1\t0\t0"], lines
        w.send_packet("CAN_DO", "fb")
        w.send_packet("GRAB_JOB")
        w.expect_packet("JOB_ASSIGN", H(2), "fb", "b")
        lines = c.admin("status").decode().splitlines()
        assert sorted(lines[:-1]) == ["fa\t1\t0\t0", "fb\t1\t1\t1"], lines
        # CANT_DO of a function it never had changes nothing
        w.send_packet("CANT_DO", "nothere")
        echo_ok(w)


@test
def test_can_do_timeout_registers_the_function():
    with srv() as s:
        c = s.conn()
        w = s.conn()
        w.send_packet("CAN_DO_TIMEOUT", "cdt", "5000")
        echo_ok(w)  # registered before the submit on the other connection
        h = submit(c, "SUBMIT_JOB", "cdt", "", "x")
        assert "cdt\t1\t0\t1" in c.admin("status").decode()
        w.send_packet("GRAB_JOB")
        w.expect_packet("JOB_ASSIGN", h, "cdt", "x")
        w.send_packet("WORK_COMPLETE", h, "ok")
        c.expect_packet("WORK_COMPLETE", h, "ok")
        w.send_packet("CANT_DO", "cdt")
        w.send_packet("GRAB_JOB")
        w.expect_packet("NO_JOB")


@test
def test_pre_sleep_noop_when_job_arrives_and_immediately_if_waiting():
    with srv() as s:
        c = s.conn()
        w = worker(s, "ps")
        w.send_packet("PRE_SLEEP")
        w.nothing(0.2)
        h = submit(c, "SUBMIT_JOB", "ps", "", "x")
        w.expect_packet("NOOP")
        assert response("NOOP") == b"\0RES\0\0\0\x06\0\0\0\0"
        # a job is waiting: PRE_SLEEP is answered at once
        w.send_packet("PRE_SLEEP")
        w.expect_packet("NOOP")
        w.send_packet("GRAB_JOB")
        w.expect_packet("JOB_ASSIGN", h, "ps", "x")
        w.send_packet("PRE_SLEEP")
        w.nothing(0.2)


@test
def test_work_packets_forwarded_to_client_byte_for_byte():
    with srv() as s:
        c = s.conn()
        w = worker(s, "wk")
        h = submit(c, "SUBMIT_JOB", "wk", "", "in")
        w.send_packet("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        w.send_packet("WORK_DATA", h, b"chunk\0one")
        c.expect_packet("WORK_DATA", h, b"chunk\0one")
        w.send_packet("WORK_WARNING", h, "careful")
        c.expect_packet("WORK_WARNING", h, "careful")
        w.send_packet("WORK_STATUS", h, "1", "2")
        c.expect_packet("WORK_STATUS", h, "1", "2")
        w.send_packet("WORK_DATA", h, "")
        c.expect_packet("WORK_DATA", h, "")
        w.send_packet("WORK_COMPLETE", h, "out")
        c.expect_packet("WORK_COMPLETE", h, "out")
        # WORK_FAIL
        h = submit(c, "SUBMIT_JOB", "wk", "", "in2")
        w.send_packet("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        w.send_packet("WORK_FAIL", h)
        c.expect_packet("WORK_FAIL", h)
        # WORK_EXCEPTION, to a client that asked for exceptions
        c.send_packet("OPTION_REQ", "exceptions")
        c.expect_packet("OPTION_RES", "exceptions")
        h = submit(c, "SUBMIT_JOB", "wk", "", "in3")
        w.send_packet("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        w.send_packet("WORK_EXCEPTION", h, "boom")
        c.expect_packet("WORK_EXCEPTION", h, "boom")
        c.nothing(0.2)
        w.nothing(0.05)


@test
def test_set_client_id_visible_in_workers_list():
    with srv() as s:
        w = s.conn()
        w.send_packet("SET_CLIENT_ID", "my-worker-7")
        w.send_packet("CAN_DO", "idfn")
        c = s.conn()
        c.send_packet("SET_CLIENT_ID", "a client")
        anon = s.conn()
        for x in (c, w, anon):
            echo_ok(x)
        lines = c.admin("workers").decode().splitlines()
        assert lines[-1] == ".", lines
        mine = [l for l in lines if " my-worker-7 :" in l]
        assert len(mine) == 1 and mine[0].endswith(" my-worker-7 : idfn"), lines
        assert any(l.endswith(" 127.0.0.1 a client :") for l in lines), lines
        # connections without an id show "-"
        assert any(l.endswith(" 127.0.0.1 - :") for l in lines), lines


# ----------------------------------------------------------------------
# Names the listings print (issue 12.7): a control character in a function
# name or client id would cut or forge a `status` or `workers` line.

CONTROL = ("INVALID_ARGUMENT", "Function name holds a control character")
TOO_LONG = ("ARGUMENT_TOO_LARGE", "Function name is longer than 512 bytes")

# `status`: name TAB total TAB running TAB workers; `workers`: fd, address,
# client id (these tests use ids without spaces), ":", function names.
STATUS_LINE = re.compile(rb"^[^\t\n]*\t\d+\t\d+\t\d+$")
WORKERS_LINE = re.compile(rb"^\d+ 127\.0\.0\.1 \S+ :( \S+)*$")


def listings(c):
    """`status` and `workers`, each checked line by line as a tool parses
    them; returns them as lists of lines (without the "." line)."""
    status = c.admin("status").split(b"\n")
    workers = c.admin("workers").split(b"\n")
    for lines, form in ((status, STATUS_LINE), (workers, WORKERS_LINE)):
        assert lines[-2:] == [b".", b""], lines
        for line in lines[:-2]:
            assert form.match(line), "a listing line a tool cannot parse: %r in %r" % (line, lines)
    return status[:-2], workers[:-2]


def refused(c, want, ptype, *fields):
    """Sends ptype with an ECHO_REQ behind it: the answer must be exactly
    ERROR `want`, and the ECHO's answer must follow (the connection stays)."""
    c.send(packet(ptype, *fields) + packet("ECHO_REQ", "after"))
    p = c.recv_packet()
    assert p.raw() == response("ERROR", *want), \
        "%s %r: expected ERROR %r, got %r" % (ptype, fields[0][:40], want, p)
    c.expect_packet("ECHO_RES", "after")


@test
def test_control_characters_in_names_are_refused_and_cannot_forge_listings():
    with srv() as s:
        w = worker(s, "real-fn")
        w.send_packet("SET_CLIENT_ID", "real-worker")
        bad = [b"evil\tfn", b"x\n99 127.0.0.1 forged : y", b"cr\rfn", b"del\x7f", b"nul\0cut"]
        a = s.conn()
        for name in bad:
            refused(a, CONTROL, "CAN_DO", name)
            refused(a, ("INVALID_ARGUMENT", "Client id holds a control character"), "SET_CLIENT_ID",
                    b"id-" + name)
            if b"\0" in name:
                continue  # a NUL ends every field but the last
            refused(a, CONTROL, "CAN_DO_TIMEOUT", name, "1000")
            for ptype in ("SUBMIT_JOB", "SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_LOW"):
                refused(a, CONTROL, ptype, name, "", "data")
            refused(a, CONTROL, "SUBMIT_JOB_EPOCH", name, "", "0", "data")
        # a forged status line, in one name
        refused(a, CONTROL, "SUBMIT_JOB_BG", "fake\t9\t9\t9\nreal-fn", "", "x")
        echo_ok(w)
        status, workers = listings(a)
        assert status == [b"real-fn\t0\t0\t1"], status
        assert sorted(line.split(b" ", 2)[2] for line in workers) == \
            [b"- :", b"real-worker : real-fn"], workers
        a.send_packet("GET_STATUS", "H:test:1")  # no job was made
        a.expect_packet("STATUS_RES", "H:test:1", "0", "0", "0", "0")


@test
def test_function_name_of_512_bytes_works_and_513_is_refused():
    with srv() as s:
        c = s.conn()
        refused(c, TOO_LONG, "CAN_DO", "n" * 513)
        refused(c, TOO_LONG, "CAN_DO_TIMEOUT", "n" * 513, "1000")
        refused(c, TOO_LONG, "SUBMIT_JOB", "n" * 513, "", "data")
        refused(c, TOO_LONG, "SUBMIT_JOB_BG", "n" * 513, "", "data")
        assert listings(c)[0] == [], "a refused name made a function"
        name = "m" * 512
        w = worker(s, name)
        c.send_packet("SUBMIT_JOB", name, "", "data")
        c.expect_packet("JOB_CREATED", H(1))
        w.send_packet("GRAB_JOB")
        w.expect_packet("JOB_ASSIGN", H(1), name, "data")
        w.send_packet("WORK_COMPLETE", H(1), "done")
        c.expect_packet("WORK_COMPLETE", H(1), "done")
        assert listings(c)[0] == [name.encode() + b"\t0\t0\t1"]


@test
def test_all_yours_is_accepted_without_reply():
    with srv() as s:
        w = worker(s, "ay")
        w.send_packet("ALL_YOURS")
        w.nothing(0.3)
        echo_ok(w)
        c = s.conn()
        h = submit(c, "SUBMIT_JOB", "ay", "", "x")
        w.send_packet("GRAB_JOB")
        w.expect_packet("JOB_ASSIGN", h, "ay", "x")


# Response-only types, each with a well-formed payload for its field count.
RESPONSE_TYPES = [
    (5, []),
    (6, []),
    (8, ["H:x:1"]),
    (10, []),
    (11, ["H:x:1", "f", "d"]),
    (17, ["x"]),
    (19, ["CODE", "text"]),
    (20, ["H:x:1", "1", "0", "0", "0"]),
    (27, ["exceptions"]),
    (31, ["H:x:1", "f", "u", "d"]),
    (40, ["H:x:1", "f", "u", "r", "d"]),
    (42, ["u", "0", "0", "0", "0", "0"]),
]


@test
def test_server_to_client_types_sent_to_server_get_invalid_command():
    with srv() as s:
        c = s.conn()
        for ptype, fields in RESPONSE_TYPES:
            c.send_packet(ptype, *fields)
            p = c.recv_packet()
            assert p.raw() == response("ERROR", "INVALID_COMMAND", "Command not expected"), \
                "type %d: %r" % (ptype, p)
        echo_ok(c)


@test
def test_res_magic_on_request_gets_invalid_magic_and_connection_stays():
    with srv() as s:
        c = s.conn()
        c.send_packet("ECHO_REQ", "x", magic=b"\0RES")
        c.expect_packet("ERROR", "INVALID_MAGIC", "Request magic expected")
        c.send_packet("SUBMIT_JOB", "f", "", "x", magic=b"\0RES")
        c.expect_packet("ERROR", "INVALID_MAGIC", "Request magic expected")
        echo_ok(c)
        assert submit(c, "SUBMIT_JOB", "f", "", "x") == H(1)


@test
def test_text_and_binary_interleaved_on_one_connection():
    with srv() as s:
        c = s.conn()
        c.send(b"version\r\n" + packet("ECHO_REQ", "one") + b"status\n"
               + packet("ECHO_REQ", "two") + b"verbose\n")
        line = c.read_until(b"\n")
        assert line.startswith(b"OK ") and not line.endswith(b"\r\n"), line
        c.expect_packet("ECHO_RES", "one")
        assert c.read_until(b".\n") == b".\n"
        c.expect_packet("ECHO_RES", "two")
        assert c.read_until(b"\n") == b"OK INFO\n"
        # binary after text and text after binary, a job in the middle
        h = submit(c, "SUBMIT_JOB_BG", "mix", "", "x")
        assert c.admin("status") == b"mix\t1\t0\t0\n.\n"
        c.send(packet("GET_STATUS", h) + b"show jobs\r\n")
        c.expect_packet("STATUS_RES", h, "1", "0", "0", "0")
        assert c.read_until(b".\n") == ("%s\t0\t0\t1\n.\n" % h).encode()
        echo_ok(c)


# ----------------------------------------------------------------------
# SUBMIT_JOB_SCHED, second half: the due job arrives at its minute.

@test
def test_submit_job_sched_runs_at_next_matching_minute():
    if "server" not in _sched:
        _sched_setup()
    s, c, w, due, h = (_sched[k] for k in ("server", "client", "worker", "due", "handle"))
    try:
        # the sleeping worker is woken by the server's timer
        w.expect_packet("NOOP", timeout=max(0, due - time.time()) + 10)
        woke = time.time()
        assert woke >= due - 1.0, "woken %.1fs before the job's minute" % (due - woke)
        w.send_packet("GRAB_JOB_UNIQ")
        w.expect_packet("JOB_ASSIGN_UNIQ", h, "sched", "s-due", "payload-due")
        w.send_packet("GRAB_JOB")
        w.expect_packet("NO_JOB")            # the 30-minutes-later job still waits
        w.send_packet("WORK_COMPLETE", h, "done")
        c.nothing(0.2)                        # a background job: no reply to the client
        c.send_packet("GET_STATUS", h)
        c.expect_packet("STATUS_RES", h, "0", "0", "0", "0")
    finally:
        _sched.pop("server", None)
        c.close()
        w.close()
        rc = s.stop()
    assert rc == 0, "gearmand exited with %s" % rc


if __name__ == "__main__":
    gmtest.main()
