#!/usr/bin/env python3
"""Log flooding (issue 14.6): bad requests are logged at ERROR, the default
level, but one connection gets at most GM_LOG_PEER_LINES (10) lines per
10 s from each thread that logs about it, and all connections of a thread
together GM_LOG_THREAD_LINES (100); what is held back is counted and
reported in one line (before the next line let through, or when a
connection closes).  Another peer's bad request in the same moment is
still logged.

No assertion depends on speed: a bound is counted in the 10-second windows
the test actually took, and the counts must add up exactly."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import REQ, RES, Server, packet, test, wait_until  # noqa: E402

PEER_LINES = 10      # log.h GM_LOG_PEER_LINES
THREAD_LINES = 100   # log.h GM_LOG_THREAD_LINES
WINDOW_S = 10        # log.h GM_LOG_WINDOW_MS
FLOOD = 10000

NOT_FOUND = "GEARMAN_JOB_NOT_FOUND"
BAD_MAGIC = "GEARMAN_INVALID_MAGIC"
PEER_SUMMARY = re.compile(r"\] (\S+):(\d+): (\d+) more lines suppressed")
THREAD_SUMMARY = re.compile(r"\] (\d+) more lines about connections suppressed")


def windows(t0):
    """The most budget windows a thread can have begun since t0."""
    return int((time.time() - t0) // WINDOW_S) + 1


def read_all(c, n, name):
    for _ in range(n):
        c.expect(name, timeout=30)


@test
def test_a_flood_of_bad_requests_is_logged_in_a_few_lines_with_a_count():
    # one client sends 10,000 WORK_FAIL for unknown handles (answered by
    # the dispatcher) and 10,000 packets with the response magic (answered
    # by its I/O thread; the connection stays): each used to write one
    # ERROR line, 20,000 in all
    with Server(log_level="ERROR") as s:
        t0 = time.time()
        a = s.conn(timeout=30)
        a_name = "127.0.0.1:%d" % a.sock.getsockname()[1]
        a.send(b"".join(packet("WORK_FAIL", "H:nowhere:%d" % i) for i in range(FLOOD)))
        read_all(a, FLOOD, "ERROR")
        a.send(b"".join(packet("ECHO_RES", b"x", magic=RES) for _ in range(FLOOD)))
        read_all(a, FLOOD, "ERROR")
        # meanwhile another client's bad requests are logged, each
        with s.conn() as b:
            b_name = "127.0.0.1:%d" % b.sock.getsockname()[1]
            b.send_packet("WORK_FAIL", "H:nowhere:b")
            b.expect("ERROR")
            b.send_packet("ECHO_RES", b"y", magic=RES)
            b.expect("ERROR")
        # (each line is written before its ERROR is sent: all are in)
        n = windows(t0)
        lines = s.log_text().splitlines()
        not_found = [ln for ln in lines if NOT_FOUND in ln]
        bad_magic = [ln for ln in lines if BAD_MAGIC in ln]
        # at most 10 lines and one count per window, from each thread
        assert len(not_found) <= (PEER_LINES + 1) * n, "%d lines for %d bad requests" % (
            len(not_found), FLOOD + 1)
        assert len(bad_magic) <= (PEER_LINES + 1) * n, "%d lines for %d bad packets" % (
            len(bad_magic), FLOOD + 1)
        # a is still served, and its close reports what was held back
        a.send_packet("ECHO_REQ", b"alive")
        a.expect_packet("ECHO_RES", b"alive")
        a.close()

        def summaries():
            return [m for m in map(PEER_SUMMARY.search, s.log_text().splitlines())
                    if m and "%s:%s" % (m.group(1), m.group(2)) == a_name]
        wait_until(lambda: len(summaries()) >= 2, timeout=10, what="a's two summaries")
        n = windows(t0)
        mine = [ln for ln in s.log_text().splitlines() if a_name in ln]
        assert len(mine) <= 2 * (PEER_LINES + 1) * n, "\n".join(mine[:30])
        # nothing is lost: the lines written and the counts add up
        written = [ln for ln in mine if NOT_FOUND in ln or BAD_MAGIC in ln]
        held = sum(int(m.group(3)) for m in summaries())
        assert len(written) + held == 2 * FLOOD, (len(written), held)
        assert all(ln.startswith("  ERROR") for ln in mine), mine
        # b, in the same window, has its own budget
        assert len([ln for ln in not_found if b_name in ln]) == 1, not_found
        assert len([ln for ln in bad_magic if b_name in ln]) == 1, bad_magic
        assert not THREAD_SUMMARY.search(s.log_text())


@test
def test_many_connections_together_are_capped_per_thread_and_counted():
    # 400 connections with one bad request each: no connection passes its
    # own budget, the dispatcher's budget for all of them holds
    m = 400
    with Server(log_level="ERROR") as s:
        t0 = time.time()
        for i in range(m):
            with s.conn() as c:
                c.send_packet("WORK_FAIL", "H:nowhere:%d" % i)
                c.expect("ERROR")
        n = windows(t0)
        written = [ln for ln in s.log_text().splitlines() if NOT_FOUND in ln]
        assert len(written) <= THREAD_LINES * n, "%d lines from %d connections" % (len(written), m)
        # once the window is over, the count comes with the next close
        # (or before the next line), without more bad requests
        wait_until(lambda: time.time() - t0 > n * WINDOW_S + 0.5, timeout=WINDOW_S * n + 5,
                   interval=0.2, what="the end of the window")
        with s.conn() as c:
            c.send_packet("ECHO_REQ", b"fine")
            c.expect_packet("ECHO_RES", b"fine")

        def held():
            lines = s.log_text().splitlines()
            return sum(int(mt.group(1)) for mt in map(THREAD_SUMMARY.search, lines) if mt)
        wait_until(lambda: len(written) + held() == m, timeout=10,
                   what="%d lines and a count of %d" % (len(written), m - len(written)))
        assert len([ln for ln in s.log_text().splitlines() if NOT_FOUND in ln]) == len(written)
        assert not PEER_SUMMARY.search(s.log_text())


if __name__ == "__main__":
    gmtest.main()
