#!/usr/bin/env python3
"""The admin text protocol, byte for byte against gearmand 1.1.20.

The transcript tests rebuild the scenario recorded from 1.1.20 in the
reference (gearmand-1.1.20.md, section 3.3): a worker with client id w1 that
registered `resize` and `thumb` and sleeps, a client that submitted
SUBMIT_JOB_HIGH_BG resize img-1, SUBMIT_JOB_LOW_BG resize img-2 and
SUBMIT_JOB thumb t-1, and the worker holding the thumb job; handles are
H:vm:N as on the reference host (--job-handle-prefix H:vm).

One step differs from the recorded session, and cannot be avoided: our
server hands a worker the highest-priority job among all its functions
(design section 9), so a worker with both functions registered would be
given the HIGH resize job, not thumb.  The worker therefore drops `resize`
(CANT_DO) before GRAB_JOB and registers it again afterwards; the state
every admin command reports is the recorded one, except that w1's
registration order is now thumb, resize, so its `workers` line reads
": resize thumb" (reverse registration order, the same rule; 1.1.20 gives
exactly that line for this sequence).

Orders that are hash orders in 1.1.20 (status, prioritystatus, show jobs,
show unique jobs) are compared as sorted lines; `workers` is compared with
the fd numbers and the line order normalised.  Every reply is read the way
gearadmin reads it (first byte, then 5 ms of silence ends it) and must be
complete.
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gmtest  # noqa: E402
from gmtest import Server, test, fail, skip  # noqa: E402

PREFIX = ("--job-handle-prefix", "H:vm")

# The 1.1.20 transcript (reference 3.3), as bytes.
REF_STATUS = b"thumb\t1\t1\t1\nresize\t2\t0\t1\n.\n"
REF_PRIORITYSTATUS = b"thumb\t0\t0\t0\t1\nresize\t1\t0\t1\t1\n.\n"
REF_WORKERS = b"40 127.0.0.1 - :\n38 127.0.0.1 w1 : thumb resize\n39 127.0.0.1 - :\n.\n"
REF_SHOW_JOBS = b"H:vm:1\t0\t0\t1\nH:vm:2\t0\t0\t1\nH:vm:3\t0\t0\t0\n.\n"
REF_SHOW_UNIQUE_JOBS = b"t-1\nimg-1\nimg-2\n.\n"

ERR_MAXQUEUE = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+maxqueue\r\n"
ERR_CREATE = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+create\r\n"
ERR_DROP = b"ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+drop\r\n"
OK = b"OK\r\n"


# ----------------------------------------------------------------------
# helpers

class Scenario:
    """The reference 3.3 scenario on a fresh server (see the module doc)."""

    def __init__(self, *extra):
        self.server = Server(*(PREFIX + extra))

    def __enter__(self):
        s = self.server.start()
        try:
            self.worker = w = s.conn()
            self.client = c = s.conn()
            w.send_packet("SET_CLIENT_ID", "w1")
            w.send_packet("CAN_DO", "resize")
            w.send_packet("CAN_DO", "thumb")
            w.send_packet("CANT_DO", "resize")
            c.send_packet("SUBMIT_JOB_HIGH_BG", "resize", "img-1", "resize img-1")
            assert c.expect("JOB_CREATED").data == b"H:vm:1"
            c.send_packet("SUBMIT_JOB_LOW_BG", "resize", "img-2", "resize img-2")
            assert c.expect("JOB_CREATED").data == b"H:vm:2"
            c.send_packet("SUBMIT_JOB", "thumb", "t-1", "thumb t-1")
            assert c.expect("JOB_CREATED").data == b"H:vm:3"
            w.send_packet("GRAB_JOB")
            p = w.recv_packet()
            while p.name == "NOOP":
                p = w.recv_packet()
            assert p.name == "JOB_ASSIGN" and p.fields() == [b"H:vm:3", b"thumb", b"thumb t-1"], p
            w.send_packet("CAN_DO", "resize")
            w.send_packet("PRE_SLEEP")
            # resize has queued jobs, so PRE_SLEEP is answered by a NOOP: once
            # it is here the dispatcher has seen all of w1's packets
            w.expect("NOOP")
        except BaseException:
            self.server.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.worker.close()
        self.client.close()
        return self.server.__exit__(*exc)

    @property
    def port(self):
        return self.server.port


def once(server, data, timeout=5.0):
    """Sends `data` on a fresh connection, reads the reply gearadmin-style
    and closes; returns the bytes."""
    with server.conn() as a:
        return a.burst(data, timeout=timeout)


def srv(x):
    return x.server if isinstance(x, Scenario) else x


def cmd(x, line):
    """One command as gearadmin sends it (`line\\r\\n`) on a fresh socket."""
    return once(srv(x), line.encode() + b"\r\n")


def check_list(got, want, sort=True):
    """A list reply: bare LF lines ending with the ".\\n" line, nothing
    after it; the lines compared as sorted sets when sort is true."""
    assert got.endswith(b".\n"), "list reply not terminated by .\\n: %r" % got
    assert b"\r" not in got, "list reply with CR: %r" % got
    assert got == b".\n" or got.endswith(b"\n.\n"), "bad terminator: %r" % got
    assert got.count(b"\n.\n") + (got == b".\n") == 1, "more than one terminator: %r" % got
    g = got[:-2].splitlines()
    w = want[:-2].splitlines()
    if sort:
        g, w = sorted(g), sorted(w)
    assert g == w, "list reply\n got  %r\n want %r" % (got, want)


WORKER_LINE = re.compile(rb"^(\d+) (\S+) (\S+) :((?: \S+)*)$")


def workers_normalised(reply):
    """Parses a `workers` reply: checks every line's shape and that the fds
    are distinct; returns the sorted lines with the fd replaced by FD."""
    assert reply.endswith(b".\n") and b"\r" not in reply, reply
    lines = reply[:-2].splitlines()
    fds = []
    out = []
    for line in lines:
        m = WORKER_LINE.match(line)
        assert m, "workers line %r does not match '<fd> <ip> <id> :[ <fn>]...'" % line
        fds.append(int(m.group(1)))
        out.append(b"FD " + line.split(b" ", 1)[1])
    assert len(set(fds)) == len(fds), "fds not distinct: %r" % reply
    return sorted(out)


def version_of(binary):
    """The version `gearmand -V` prints (`gearmand <version> - <url>`)."""
    import subprocess
    r = subprocess.run([binary, "-V"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    m = re.search(rb"^gearmand (\S+) - ", r.stdout, re.M)
    assert m, "gearmand -V printed %r" % r.stdout
    return m.group(1)


def submit(conn, ptype, fn, unique, data=b"x"):
    conn.send_packet(ptype, fn, unique, data)
    p = conn.recv_packet()
    assert p.name in ("JOB_CREATED", "ERROR"), p
    return p


def created(p):
    assert p.name == "JOB_CREATED", "expected JOB_CREATED, got %r" % p
    return p.data


def queue_full(p):
    assert p.name == "ERROR" and p.data == b"QUEUE_ERROR\0Job queue is full", \
        "expected ERROR QUEUE_ERROR 'Job queue is full', got %r" % p


def status_lines(x):
    """`status` as a dict: function -> (total, running, workers)."""
    got = cmd(x, "status")
    assert got.endswith(b".\n"), got
    d = {}
    for line in got[:-2].splitlines():
        f = line.split(b"\t")
        assert len(f) == 4, line
        d[f[0]] = tuple(int(v) for v in f[1:])
    return d


def non_loopback_ipv4():
    """An IPv4 address of this host that is not loopback, or None."""
    cands = []
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect(("192.0.2.1", 9))
        cands.append(u.getsockname()[0])
        u.close()
    except OSError:
        pass
    try:
        cands += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    for ip in cands:
        if not ip.startswith("127.") and ip != "0.0.0.0":
            return ip
    return None


def wait_exit(server, timeout=10.0):
    """Waits for the server to exit by itself; returns its status."""
    import subprocess
    try:
        return server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("server still running %.0fs later" % timeout)


# ----------------------------------------------------------------------
# the transcript

@test
def test_status_matches_1_1_20_transcript():
    with Scenario() as sc:
        check_list(cmd(sc, "status"), REF_STATUS)


@test
def test_prioritystatus_matches_1_1_20_transcript():
    with Scenario() as sc:
        check_list(cmd(sc, "prioritystatus"), REF_PRIORITYSTATUS)


@test
def test_workers_matches_1_1_20_transcript():
    with Scenario() as sc:
        got = workers_normalised(cmd(sc, "workers"))
        # w1's functions: see the module doc (registration order thumb, resize)
        want = workers_normalised(REF_WORKERS.replace(b": thumb resize", b": resize thumb"))
        assert got == want, "workers\n got  %r\n want %r" % (got, want)


@test
def test_workers_lists_every_connection_including_the_asking_one():
    with Server() as s:
        with s.conn() as a, s.conn() as b:
            b.send_packet("SET_CLIENT_ID", "someone")
            want = sorted([b"FD 127.0.0.1 - :", b"FD 127.0.0.1 someone :"])
            # The server's start-up probe (a connect and close) may be on
            # another I/O thread whose close notice has not reached the
            # dispatcher yet (-t 3 on a loaded machine): wait for it to go.
            seen = []
            def listed():
                seen[:] = [a.burst(b"workers\r\n")]
                return workers_normalised(seen[0]) == want
            try:
                gmtest.wait_until(listed, what="the two connections alone in `workers`")
            except AssertionError:
                raise AssertionError("`workers` never listed the two connections alone: %r" % seen[0])


@test
def test_workers_functions_in_reverse_registration_order():
    with Server() as s:
        with s.conn() as w, s.conn() as a:
            w.send_packet("SET_CLIENT_ID", "wx")
            for fn in ("alpha", "beta", "gamma"):
                w.send_packet("CAN_DO", fn)
            w.send_packet("CAN_DO_TIMEOUT", "delta", "30")
            gmtest.wait_until(lambda: b"delta" in a.admin("workers"), what="registrations")
            lines = workers_normalised(a.burst(b"workers\r\n"))
            assert b"FD 127.0.0.1 wx : delta gamma beta alpha" in lines, lines
            # CANT_DO takes one out, the others keep their order
            w.send_packet("CANT_DO", "beta")
            gmtest.wait_until(lambda: b"beta" not in a.admin("workers"), what="CANT_DO")
            lines = workers_normalised(a.burst(b"workers\r\n"))
            assert b"FD 127.0.0.1 wx : delta gamma alpha" in lines, lines


@test
def test_show_jobs_matches_1_1_20_transcript():
    with Scenario() as sc:
        check_list(cmd(sc, "show jobs"), REF_SHOW_JOBS)


@test
def test_show_unique_jobs_matches_1_1_20_transcript():
    with Scenario() as sc:
        check_list(cmd(sc, "show unique jobs"), REF_SHOW_UNIQUE_JOBS)


@test
def test_empty_server_lists_are_just_the_terminator():
    with Server() as s:
        for c in ("status", "prioritystatus", "show jobs", "show unique jobs"):
            got = cmd(s, c)
            assert got == b".\n", "%s on an empty server: %r" % (c, got)


@test
def test_version_is_ok_and_the_version():
    with Server() as s:
        got = cmd(s, "version")
        assert got == b"OK " + version_of(s.binary) + b"\n", got


@test
def test_getpid_is_the_server_pid():
    with Server() as s:
        got = cmd(s, "getpid")
        assert got == b"OK %d\n" % s.proc.pid, (got, s.proc.pid)


@test
def test_verbose_reports_the_level_and_ignores_arguments():
    with Server() as s:
        assert cmd(s, "verbose") == b"OK INFO\n"
        assert cmd(s, "verbose foo bar") == b"OK INFO\n"
        assert once(s, b"verbose\n") == b"OK INFO\n"
    with Server(log_level="WARNING") as s:
        assert cmd(s, "verbose") == b"OK WARNING\n"


# ----------------------------------------------------------------------
# maxqueue

@test
def test_maxqueue_argument_forms():
    with Scenario() as sc:
        assert cmd(sc, "maxqueue") == ERR_MAXQUEUE
        assert cmd(sc, "maxqueue resize") == OK           # 2 words: reset
        assert cmd(sc, "maxqueue resize 10") == OK        # 3 words (the transcript)
        assert cmd(sc, "maxqueue resize 1 2") == OK       # 4 words
        assert cmd(sc, "maxqueue resize 1 2 3") == OK     # 5 words
        assert cmd(sc, "maxqueue nosuchfunction 3") == OK
        assert cmd(sc, "maxqueue resize -5") == OK
        assert cmd(sc, "MAXQUEUE resize 1") == OK


@test
def test_maxqueue_limits_later_submits():
    with Server() as s:
        with s.conn() as c:
            assert cmd(s, "create function mq") == OK
            # one limit for every priority
            assert cmd(s, "maxqueue mq 1") == OK
            h1 = created(submit(c, "SUBMIT_JOB_BG", "mq", "u1"))
            queue_full(submit(c, "SUBMIT_JOB_BG", "mq", "u2"))
            queue_full(submit(c, "SUBMIT_JOB_HIGH_BG", "mq", "u2"))
            # a coalescing hit is never rejected
            assert created(submit(c, "SUBMIT_JOB_BG", "mq", "u1")) == h1
            # two words: back to unlimited
            assert cmd(s, "maxqueue mq") == OK
            created(submit(c, "SUBMIT_JOB_BG", "mq", "u2"))           # total 2
            # four words: HIGH unlimited, NORMAL 2, LOW omitted = unlimited
            assert cmd(s, "maxqueue mq 0 2") == OK
            created(submit(c, "SUBMIT_JOB_HIGH_BG", "mq", "u3"))      # total 3
            queue_full(submit(c, "SUBMIT_JOB_BG", "mq", "u4"))
            created(submit(c, "SUBMIT_JOB_LOW_BG", "mq", "u5"))       # total 4
            # five words: LOW 4
            assert cmd(s, "maxqueue mq 9 9 4") == OK
            queue_full(submit(c, "SUBMIT_JOB_LOW_BG", "mq", "u6"))
            created(submit(c, "SUBMIT_JOB_BG", "mq", "u7"))           # total 5
            # a negative limit means none
            assert cmd(s, "maxqueue mq -5") == OK
            created(submit(c, "SUBMIT_JOB_LOW_BG", "mq", "u8"))
            assert status_lines(s)[b"mq"] == (6, 0, 0)
            # on a function that does not exist yet it does nothing
            assert cmd(s, "maxqueue later 1") == OK
            created(submit(c, "SUBMIT_JOB_BG", "later", "x1"))
            created(submit(c, "SUBMIT_JOB_BG", "later", "x2"))


@test
def test_maxqueue_counts_running_jobs():
    with Server() as s:
        with s.conn() as w, s.conn() as c:
            w.send_packet("CAN_DO", "mr")
            created(submit(c, "SUBMIT_JOB_BG", "mr", "r1"))
            w.send_packet("GRAB_JOB")
            w.expect("JOB_ASSIGN")
            assert cmd(s, "maxqueue mr 1") == OK
            queue_full(submit(c, "SUBMIT_JOB_BG", "mr", "r2"))


@test
def test_too_many_words_get_an_err_line_and_the_connection_stays():
    # 1.1.20 closes the connection on a line of 6 or more words; we answer
    # with an ERR line (design section 7: every bad input gets an answer)
    with Server() as s:
        with s.conn() as a:
            got = a.burst(b"maxqueue f 1 2 3 4\r\n")
            assert got == ERR_MAXQUEUE, got
            got = a.burst(b"frobnicate a b c d e f g h i j\r\n")
            assert got == b"ERR UNKNOWN_COMMAND Unknown+server+commandfrobnicate\r\n", got
            assert a.burst(b"status\r\n") == b".\n"


# ----------------------------------------------------------------------
# cancel job

@test
def test_cancel_job_known_queued_background_job():
    with Scenario() as sc:
        assert cmd(sc, "cancel job H:vm:2") == OK
        # the worker never gets img-2: it finishes thumb, then takes img-1
        w = sc.worker
        w.send_packet("WORK_COMPLETE", "H:vm:3", "done")
        c = sc.client
        p = c.recv_packet()
        assert p.name == "WORK_COMPLETE" and p.data == b"H:vm:3\0done", p
        w.send_packet("GRAB_JOB")
        p = w.recv_packet()
        assert p.name == "JOB_ASSIGN" and p.fields()[0] == b"H:vm:1", p
        w.send_packet("WORK_COMPLETE", "H:vm:1", "")
        w.send_packet("GRAB_JOB")
        assert w.expect("NO_JOB")


@test
def test_cancel_job_known_foreground_job_fails_its_client():
    with Server(*PREFIX) as s:
        with s.conn() as c:
            h = created(submit(c, "SUBMIT_JOB", "cj", "fg", b"payload"))
            assert cmd(s, "cancel job " + h.decode()) == OK
            p = c.recv_packet()
            assert p.name == "WORK_FAIL" and p.data == h, p


@test
def test_cancel_job_running_marks_it_ignored():
    with Scenario() as sc:
        assert cmd(sc, "cancel job H:vm:3") == OK
        p = sc.client.recv_packet()
        assert p.name == "WORK_FAIL" and p.data == b"H:vm:3", p
        check_list(cmd(sc, "show jobs"),
                   b"H:vm:1\t0\t0\t1\nH:vm:2\t0\t0\t1\nH:vm:3\t0\t1\t0\n.\n")


@test
def test_cancel_job_unknown():
    with Scenario() as sc:
        assert cmd(sc, "cancel job H:nope:1") == b"ERR UNKNOWN_JOB\r\n"
        assert cmd(sc, "CANCEL JOB H:nope:1") == b"ERR UNKNOWN_JOB\r\n"
        # the handle is matched exactly
        assert cmd(sc, "cancel job h:vm:1") == b"ERR UNKNOWN_JOB\r\n"
        assert cmd(sc, "cancel job H:vm:1x") == b"ERR UNKNOWN_JOB\r\n"
        check_list(cmd(sc, "show jobs"), REF_SHOW_JOBS)


@test
def test_cancel_malformed_forms():
    with Scenario() as sc:
        want = b"ERR UNKNOWN_COMMAND Unknown+server+commandcancel\r\n"
        assert cmd(sc, "cancel") == want
        assert cmd(sc, "cancel job") == want
        assert cmd(sc, "cancel H:vm:1") == want
        assert cmd(sc, "cancel foo bar") == b"ERR UNKNOWN_ERROR\r\n"
        assert cmd(sc, "cancel job a b") == b"ERR UNKNOWN_ERROR\r\n"
        assert cmd(sc, "cancel job H:vm:1 H:vm:2") == b"ERR UNKNOWN_ERROR\r\n"
        check_list(cmd(sc, "show jobs"), REF_SHOW_JOBS)


# ----------------------------------------------------------------------
# create / drop function

@test
def test_create_function_crlf_and_bare_lf_keep_the_whole_name():
    with Scenario() as sc:
        assert cmd(sc, "create function newfn") == OK          # the transcript
        assert once(sc.server, b"create function lffn\n") == OK
        st = status_lines(sc)
        assert st.get(b"newfn") == (0, 0, 0), st
        # deliberate fix (design 9): 1.1.20 would have created "lff"
        assert st.get(b"lffn") == (0, 0, 0), st
        assert b"lff" not in st, st
        # creating an existing function is fine, and changes nothing
        assert cmd(sc, "create function resize") == OK
        assert status_lines(sc)[b"resize"] == (2, 0, 1)


@test
def test_create_function_wrong_argument_count():
    with Server() as s:
        for line in ("create", "create function", "create foo bar", "create function a b"):
            assert cmd(s, line) == ERR_CREATE, line
        assert cmd(s, "status") == b".\n"


@test
def test_create_function_refuses_control_characters_and_names_over_512_bytes():
    control = b"ERR INVALID_ARGUMENT Function+name+holds+a+control+character\r\n"
    with Server() as s:
        for name in (b"a\tb", b"a\rb", b"a\0b", b"a\x1bb", b"a\x7f"):
            assert once(s, b"create function " + name + b"\r\n") == control, name
        assert cmd(s, "create function " + "n" * 513) == \
            b"ERR ARGUMENT_TOO_LARGE Function+name+is+longer+than+512+bytes\r\n"
        assert cmd(s, "status") == b".\n"
        assert cmd(s, "create function " + "n" * 512) == OK
        assert cmd(s, "status") == b"n" * 512 + b"\t0\t0\t0\n.\n"


@test
def test_drop_function():
    with Scenario() as sc:
        assert cmd(sc, "create function newfn") == OK
        assert cmd(sc, "drop function newfn") == OK
        assert b"newfn" not in status_lines(sc)
        # still has workers (and a running job)
        still = b"ERR there are still connected workers or executing clients\r\n"
        assert cmd(sc, "drop function resize") == still
        assert cmd(sc, "drop function thumb") == still
        assert cmd(sc, "drop function nothere") == b"ERR function not found\r\n"
        assert cmd(sc, "drop function newfn") == b"ERR function not found\r\n"
        # the name is matched without regard to case
        assert cmd(sc, "create function MixedCase") == OK
        assert cmd(sc, "DROP FUNCTION mixedcase") == OK
        assert b"MixedCase" not in status_lines(sc)
        st = status_lines(sc)
        assert st[b"resize"] == (2, 0, 1) and st[b"thumb"] == (1, 1, 1), st


@test
def test_drop_function_wrong_argument_count():
    with Server() as s:
        assert cmd(s, "create function f") == OK
        for line in ("drop", "drop function", "drop foo bar", "drop function f g", "drop thing f"):
            assert cmd(s, line) == ERR_DROP, line
        assert status_lines(s) == {b"f": (0, 0, 0)}


# ----------------------------------------------------------------------
# errors

@test
def test_show_errors():
    with Server() as s:
        assert cmd(s, "show") == b"ERR UNKNOWN_COMMAND Unknown+server+commandshow\r\n"
        for line in ("show foo", "show jobs x", "show unique", "show unique jobs x",
                     "show unique foo", "show workers"):
            assert cmd(s, line) == b"ERR UNKNOWN_SHOW_ARGUMENTS\r\n", line


@test
def test_empty_line_and_leading_space():
    with Server() as s:
        want = b"ERR UNKNOWN_COMMAND Unknown+server+command\r\n"
        assert once(s, b"\r\n") == want
        assert once(s, b"\n") == want
        assert once(s, b" status\r\n") == want
        assert once(s, b"  version\n") == want
        # a trailing space is harmless
        assert once(s, b"status \r\n") == b".\n"
        assert once(s, b"version  \r\n").startswith(b"OK ")


@test
def test_unknown_command():
    with Server() as s:
        want = b"ERR UNKNOWN_COMMAND Unknown+server+commandfrobnicate\r\n"
        assert cmd(s, "frobnicate") == want                    # the transcript
        assert cmd(s, "frobnicate a b c") == want
        # TAB is not a separator
        assert once(s, b"status\tx\r\n") == b"ERR UNKNOWN_COMMAND Unknown+server+commandstatus\tx\r\n"
        # the word is echoed as sent
        assert cmd(s, "FrobNicate") == b"ERR UNKNOWN_COMMAND Unknown+server+commandFrobNicate\r\n"


@test
def test_commands_are_case_insensitive():
    with Scenario() as sc:
        check_list(cmd(sc, "STATUS"), REF_STATUS)
        check_list(cmd(sc, "PriorityStatus"), REF_PRIORITYSTATUS)
        check_list(cmd(sc, "Show Jobs"), REF_SHOW_JOBS)
        check_list(cmd(sc, "SHOW UNIQUE JOBS"), REF_SHOW_UNIQUE_JOBS)
        assert cmd(sc, "GETPID") == b"OK %d\n" % sc.server.proc.pid


@test
def test_extra_words_after_list_commands_are_ignored():
    with Scenario() as sc:
        # first, while no earlier admin connection can still be listed
        got = workers_normalised(cmd(sc, "workers x"))
        want = workers_normalised(REF_WORKERS.replace(b": thumb resize", b": resize thumb"))
        assert got == want, (got, want)
        check_list(cmd(sc, "status x"), REF_STATUS)
        check_list(cmd(sc, "prioritystatus x y"), REF_PRIORITYSTATUS)
        assert cmd(sc, "getpid x") == b"OK %d\n" % sc.server.proc.pid


@test
def test_err_lines_have_at_least_three_words():
    # Net_Gearman (Gearman-Monitor) splits an ERR line into at least three
    # words; the generic errors must keep their third word
    with Server() as s:
        for line in (b"frobnicate\r\n", b"\r\n", b" status\r\n", b"show\r\n", b"cancel\r\n",
                     b"maxqueue\r\n", b"create\r\n", b"drop\r\n", b"shutdown foo\r\n"):
            got = once(s, line)
            assert got.startswith(b"ERR ") and got.endswith(b"\r\n"), (line, got)
            words = got[:-2].split(b" ")
            assert len(words) >= 3 and all(words), "%r -> %r" % (line, got)


# ----------------------------------------------------------------------
# connections, bursts, several commands

@test
def test_several_commands_in_one_write():
    with Scenario() as sc:
        pid = sc.server.proc.pid
        v = version_of(sc.server.binary)
        got = once(sc.server, b"version\ngetpid\n")
        assert got == b"OK %s\nOK %d\n" % (v, pid), got
        with sc.server.conn() as a:
            a.send(b"status\r\nshow jobs\r\nfrobnicate\r\nmaxqueue thumb 5\r\nverbose\r\n")
            got = a.read_until(b".\n")
            check_list(got, REF_STATUS)
            got = a.read_until(b".\n")
            check_list(got, REF_SHOW_JOBS)
            assert a.read_until(b"\n") == b"ERR UNKNOWN_COMMAND Unknown+server+commandfrobnicate\r\n"
            assert a.read_until(b"\n") == OK
            assert a.read_until(b"\n") == b"OK INFO\n"
            a.nothing(0.2)


@test
def test_connection_stays_open_after_every_reply():
    with Scenario() as sc:
        with sc.server.conn() as a:
            for line in (b"status", b"frobnicate", b"workers", b"show", b"show foo", b"cancel job x",
                         b"create function", b"drop function nothere", b"maxqueue", b"version",
                         b"getpid", b"verbose", b"show unique jobs", b"prioritystatus", b""):
                got = a.burst(line + b"\r\n")
                assert got and not a.eof, "%r: %r eof=%s" % (line, got, a.eof)
            check_list(a.burst(b"show jobs\r\n"), REF_SHOW_JOBS)


@test
def test_a_line_without_newline_waits():
    with Server() as s:
        with s.conn() as a:
            a.send(b"vers")
            a.nothing(0.2)
            got = a.burst(b"ion\r\n")
            assert got.startswith(b"OK ") and got.endswith(b"\n"), got


@test
def test_text_and_binary_interleaved_on_one_connection():
    with Scenario() as sc:
        with sc.server.conn() as a:
            # all in one write
            a.send(gmtest.packet("ECHO_REQ", "one") + b"status\r\n" + gmtest.packet("ECHO_REQ", "two")
                   + b"getpid\r\n" + gmtest.packet("GET_STATUS", "H:vm:3"))
            p = a.recv_packet()
            assert p.name == "ECHO_RES" and p.data == b"one", p
            check_list(a.read_until(b".\n"), REF_STATUS)
            p = a.recv_packet()
            assert p.name == "ECHO_RES" and p.data == b"two", p
            assert a.read_until(b"\n") == b"OK %d\n" % sc.server.proc.pid
            p = a.recv_packet()
            assert p.name == "STATUS_RES" and p.fields() == [b"H:vm:3", b"1", b"1", b"0", b"0"], p
            # and one at a time
            a.send_packet("ECHO_REQ", "three")
            assert a.recv_packet().data == b"three"
            check_list(a.burst(b"show unique jobs\r\n"), REF_SHOW_UNIQUE_JOBS)
            a.send_packet("SUBMIT_JOB_BG", "thumb", "t-2", "x")
            p = a.recv_packet()
            assert p.name == "JOB_CREATED" and p.data == b"H:vm:4", p
            st = a.burst(b"status\r\n")
            assert b"thumb\t2\t1\t1\n" in st, st


@test
def test_each_reply_arrives_in_one_burst():
    # gearadmin stops reading after 5 ms without data: every reply must be
    # complete in what arrives that way
    with Scenario() as sc:
        for line, kind in ((b"status", "list"), (b"prioritystatus", "list"), (b"workers", "list"),
                           (b"show jobs", "list"), (b"show unique jobs", "list"),
                           (b"version", "line"), (b"getpid", "line"), (b"verbose", "line"),
                           (b"maxqueue thumb 0", "line"), (b"cancel job H:nope:1", "line"),
                           (b"create function burst", "line"), (b"drop function burst", "line"),
                           (b"show", "line"), (b"frobnicate", "line"), (b"", "line")):
            with sc.server.conn() as a:
                got = a.burst(line + b"\r\n")
            if kind == "list":
                assert got.endswith(b".\n") and (got == b".\n" or got.endswith(b"\n.\n")), \
                    "%r: incomplete burst %r" % (line, got)
            else:
                assert got.endswith(b"\n") and got.count(b"\n") == 1, \
                    "%r: incomplete burst %r" % (line, got)


@test
def test_a_long_reply_arrives_in_one_burst():
    with Server() as s:
        names = ["function-with-a-longish-name-%04d" % i for i in range(1500)]
        with s.conn() as a:
            a.send(b"".join(b"create function %s\r\n" % n.encode() for n in names))
            for _ in names:
                assert a.read_until(b"\n") == OK
            got = a.burst(b"status\r\n")
        want = b"".join(b"%s\t0\t0\t0\n" % n.encode() for n in names) + b".\n"
        assert len(got) == len(want), "burst of %d bytes, want %d" % (len(got), len(want))
        check_list(got, want)


# ----------------------------------------------------------------------
# shutdown (design section 9: present, loopback peers only)

@test
def test_shutdown_from_loopback_exits_0():
    s = Server()
    s.start()
    try:
        with s.conn() as a:
            got = a.burst(b"shutdown\r\n")
            assert got == OK, got
            assert a.closed(10.0), "connection not closed after shutdown"
        assert wait_exit(s) == 0
        assert not os.path.exists(s.pidfile), "pid file left behind"
        # and nobody listens any more
        try:
            socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
            fail("still accepting connections")
        except OSError:
            pass
    finally:
        s.stop()


@test
def test_shutdown_with_queued_jobs_is_immediate():
    s = Server()
    s.start()
    try:
        with s.conn() as c:
            created(submit(c, "SUBMIT_JOB_BG", "nobody", "q1"))
            assert cmd(s, "SHUTDOWN") == OK
            assert wait_exit(s) == 0
    finally:
        s.stop()


@test
def test_shutdown_graceful_without_jobs_exits_at_once():
    s = Server()
    s.start()
    try:
        assert cmd(s, "shutdown graceful") == OK
        assert wait_exit(s) == 0
        assert not os.path.exists(s.pidfile)
    finally:
        s.stop()


@test
def test_shutdown_graceful_waits_for_queued_and_running_jobs():
    s = Server(*PREFIX)
    s.start()
    try:
        with s.conn() as w, s.conn() as c, s.conn() as a:
            w.send_packet("CAN_DO", "g")
            created(submit(c, "SUBMIT_JOB", "g", "fg1", b"a"))      # H:vm:1
            created(submit(c, "SUBMIT_JOB_BG", "g", "bg1", b"b"))   # H:vm:2
            w.send_packet("GRAB_JOB")
            p = w.expect("JOB_ASSIGN")
            assert p.fields()[0] == b"H:vm:1", p
            assert a.burst(b"shutdown graceful\r\n") == OK
            time.sleep(0.3)
            assert s.proc.poll() is None, "exited with jobs left"
            # existing connections are still served
            assert b"g\t2\t1\t1\n" in a.burst(b"status\r\n")
            # new ones are refused, as after SIGUSR1
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
                fail("new connection accepted during a graceful shutdown")
            except OSError:
                pass
            w.send_packet("WORK_COMPLETE", "H:vm:1", "r")
            p = c.recv_packet()
            assert p.name == "WORK_COMPLETE" and p.data == b"H:vm:1\0r", p
            time.sleep(0.2)
            assert s.proc.poll() is None, "exited with a queued job left"
            w.send_packet("GRAB_JOB")
            p = w.expect("JOB_ASSIGN")
            assert p.fields()[0] == b"H:vm:2", p
            w.send_packet("WORK_COMPLETE", "H:vm:2", "")
            assert wait_exit(s) == 0
    finally:
        s.stop()


@test
def test_shutdown_with_a_bad_argument_is_refused():
    with Server() as s:
        for line in ("shutdown foo", "shutdown graceful now"):
            got = cmd(s, line)
            assert got.startswith(b"ERR ") and got.endswith(b"\r\n") and len(got.split(b" ")) >= 3, \
                (line, got)
        time.sleep(0.2)
        assert s.proc.poll() is None
        assert cmd(s, "status") == b".\n"


@test
def test_shutdown_refused_from_a_non_loopback_peer():
    ip = non_loopback_ipv4()
    if not ip:
        skip("no non-loopback IPv4 address on this host")
    with Server(listen=None) as s:
        try:
            a = gmtest.Conn(s.port, host=ip)
        except OSError as e:
            skip("cannot connect to %s: %s" % (ip, e))
        with a:
            for line in (b"shutdown\r\n", b"shutdown graceful\r\n"):
                got = a.burst(line)
                assert got.startswith(b"ERR ") and got.endswith(b"\r\n"), (line, got)
                assert len(got.split(b" ")) >= 3, got
            lines = workers_normalised(a.burst(b"workers\r\n"))
            assert b"FD %s - :" % ip.encode() in lines, lines
        time.sleep(0.3)
        assert s.proc.poll() is None, "a non-loopback peer shut the server down"
        assert cmd(s, "status") == b".\n"


if __name__ == "__main__":
    gmtest.main()
