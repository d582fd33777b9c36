#!/usr/bin/env python3
"""Load shapes that must work, checked for exactness rather than speed:
many jobs multiplexed on one client connection, 8 MiB payloads both ways,
1,000 concurrent connections, and 10,000 pipelined background jobs drained
by two workers.  Speed is measured by bench/, never here (design 8)."""

import collections
import os
import random
import resource
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import NAME, Server, fail, packet, test, wait_until, status_of  # noqa: E402

PREFIX = "H:test"
SEED = int(os.environ.get("GMTEST_SEED") or time.time())


def srv(*args):
    return Server("--job-handle-prefix", PREFIX, *args)


def read_packets(c, n, timeout=30.0):
    """Reads n packets from c; returns [(name, payload)].  Parses by offset,
    so thousands of small packets cost little."""
    out = []
    deadline = time.time() + timeout
    buf = c.buf
    off = 0
    while len(out) < n:
        if len(buf) - off >= 12:
            ptype, size = struct.unpack(">II", buf[off + 4:off + 12])
            assert buf[off:off + 4] == b"\0RES", buf[off:off + 12]
            if len(buf) - off >= 12 + size:
                out.append((NAME.get(ptype, str(ptype)), buf[off + 12:off + 12 + size]))
                off += 12 + size
                continue
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("got %d of %d packets" % (len(out), n))
        c.buf = buf[off:]
        c._fill(left)
        buf, off = c.buf, 0
    c.buf = buf[off:]
    return out


def in_thread(fn, *args):
    """Runs fn(*args) in a thread; returns a join() that re-raises its error."""
    err = []

    def run():
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to join()
            err.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=60):
        t.join(timeout)
        assert not t.is_alive(), "thread did not finish"
        if err:
            raise err[0]
    return join


@test
def test_200_pipelined_jobs_on_one_connection_completed_in_random_order():
    rnd = random.Random(SEED)
    print("# seed %d" % SEED)
    with srv() as s:
        c = s.conn()
        c.send(b"".join(packet("SUBMIT_JOB", "mux", "", "job-%03d" % i) for i in range(200)))
        created = read_packets(c, 200)
        assert all(n == "JOB_CREATED" for n, _ in created), created[:3]
        handles = [h for _, h in created]
        assert len(set(handles)) == 200
        want = {h: (b"job-%03d" % i)[::-1] for i, h in enumerate(handles)}
        workers = [s.conn() for _ in range(4)]
        for w in workers:
            w.send_packet("CAN_DO", "mux")
        held = []           # (worker, handle, data)
        assigned = 0
        while assigned < 200 or held:
            if assigned < 200:
                for w in rnd.sample(workers, len(workers)):
                    k = rnd.randint(1, 8)
                    w.send(packet("GRAB_JOB") * k)
                    for name, data in read_packets(w, k):
                        if name == "JOB_ASSIGN":
                            h, fn, payload = data.split(b"\0", 2)
                            assert fn == b"mux" and want[h] == payload[::-1], data
                            held.append((w, h, payload))
                            assigned += 1
                        else:
                            assert name == "NO_JOB", name
            rnd.shuffle(held)
            cut = len(held) if assigned == 200 else rnd.randint(0, len(held))
            for w, h, payload in held[:cut]:
                w.send_packet("WORK_COMPLETE", h, payload[::-1])
            held = held[cut:]
        results = read_packets(c, 200)
        got = collections.Counter()
        for name, data in results:
            assert name == "WORK_COMPLETE", name
            h, result = data.split(b"\0", 1)
            assert want[h] == result, (h, result)
            got[h] += 1
        assert set(got) == set(handles) and set(got.values()) == {1}
        c.nothing(0.2)


@test
def test_8mib_payloads_both_ways_and_8mib_echo():
    big = os.urandom(8 << 20)
    with srv() as s:
        c = s.conn(timeout=60)
        w = s.conn(timeout=60)
        c.send_packet("SUBMIT_JOB", "big", "", big)
        h = c.expect("JOB_CREATED").data
        w.send_packet("CAN_DO", "big")
        w.send_packet("GRAB_JOB")
        p = w.expect("JOB_ASSIGN")
        hh, fn, data = p.fields(3)
        assert (hh, fn) == (h, b"big")
        assert len(data) == len(big) and data == big, "worker got %d bytes, not the ones sent" % len(data)
        rev = big[::-1]
        join = in_thread(w.send_packet, "WORK_COMPLETE", h, rev)
        p = c.expect("WORK_COMPLETE")
        join()
        rh, result = p.fields(2)
        assert rh == h and len(result) == len(rev) and result == rev, \
            "client got %d bytes, not the ones sent" % len(result)
        join = in_thread(c.send_packet, "ECHO_REQ", big)
        p = c.expect("ECHO_RES")
        join()
        assert p.data == big, "8 MiB echo differs (%d bytes)" % len(p.data)


@test
def test_pipelined_echo_requests_on_one_connection_come_back_in_order():
    # 3,000 ECHO_REQs of 1,000 bytes written back to back while the replies
    # are read: each reply is its request, in order
    n, size = 3000, 1000
    with srv() as s:
        c = s.conn(timeout=30)
        payloads = [(b"%05d" % i) * (size // 5) for i in range(n)]
        join = in_thread(lambda: [c.send_packet("ECHO_REQ", p) for p in payloads])
        for i, p in enumerate(payloads):
            try:
                got = c.expect("ECHO_RES")
            except (EOFError, OSError) as e:
                raise AssertionError("connection lost after %d of %d replies: %r" % (i, n, e))
            if got.data != p:
                k = next((j for j, (a, b) in enumerate(zip(got.data, p)) if a != b),
                         min(len(got.data), len(p)))
                fail("reply %d differs from byte %d: got %r, sent %r" % (
                    i, k, got.data[k:k + 24], p[k:k + 24]))
        join()


@test
def test_1000_concurrent_connections_each_echo_and_run_a_job():
    n = 1000
    need = n + 100      # per process: the test's sockets, and the server's
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        target = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        if target < need:
            gmtest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    # the server inherits the raised limit
    with srv("-b", "1024") as s:
        admin = s.conn()
        conns = []
        try:
            for _ in range(n):
                conns.append(s.conn(timeout=30))
            for i, c in enumerate(conns):
                c.send_packet("ECHO_REQ", "echo-%d" % i)
            for i, c in enumerate(conns):
                c.expect_packet("ECHO_RES", "echo-%d" % i)
            assert len(admin.admin("workers").splitlines()) - 1 == n + 1
            for i, c in enumerate(conns):
                c.send_packet("SUBMIT_JOB", "many", "", "%d" % i)
            handles = {}
            for i, c in enumerate(conns):
                handles[c.expect("JOB_CREATED").data] = i
            assert len(handles) == n
            workers = [s.conn(), s.conn()]
            for w in workers:
                w.send_packet("CAN_DO", "many")
            done = 0
            while done < n:
                for w in workers:
                    w.send(packet("GRAB_JOB") * 50)
                    out = []
                    for name, data in read_packets(w, 50):
                        if name == "JOB_ASSIGN":
                            h, _, payload = data.split(b"\0", 2)
                            out.append(packet("WORK_COMPLETE", h, b"r-" + payload))
                            done += 1
                    w.send(b"".join(out))
            for i, c in enumerate(conns):
                p = c.expect("WORK_COMPLETE")
                h, result = p.fields(2)
                assert handles[h] == i and result == b"r-%d" % i, (i, p)
            for c in conns[::7]:
                c.send_packet("ECHO_REQ", "again")
                c.expect_packet("ECHO_RES", "again")
        finally:
            for c in conns:
                c.close()
        wait_until(lambda: len(admin.admin("workers").splitlines()) - 1 <= 3, timeout=10,
                   what="the 1000 connections to be gone")
        with s.conn() as c:
            c.send_packet("ECHO_REQ", "after")
            c.expect_packet("ECHO_RES", "after")


@test
def test_10000_pipelined_background_jobs_drained_by_two_workers_exactly_once():
    n = 10000
    with srv() as s:
        c = s.conn(timeout=60)
        join = in_thread(c.send, b"".join(
            packet("SUBMIT_JOB_BG", "bgload", "", "bg-%d" % i) for i in range(n)))
        created = read_packets(c, n, timeout=60)
        join()
        assert all(name == "JOB_CREATED" for name, _ in created)
        assert len({h for _, h in created}) == n
        assert status_of(c, "bgload") == (n, 0, 0)
        got = [collections.Counter(), collections.Counter()]

        def drain(k):
            w = s.conn(timeout=60)
            w.send_packet("CAN_DO", "bgload")
            while True:
                w.send(packet("GRAB_JOB") * 100)
                out = []
                empty = False
                for name, data in read_packets(w, 100):
                    if name == "NO_JOB":
                        empty = True
                        continue
                    assert name == "JOB_ASSIGN", name
                    h, _, payload = data.split(b"\0", 2)
                    got[k][payload] += 1
                    out.append(packet("WORK_COMPLETE", h, ""))
                w.send(b"".join(out))
                if empty:
                    break
            w.send_packet("ECHO_REQ", "end")    # all completions processed
            w.expect_packet("ECHO_RES", "end")

        joins = [in_thread(drain, 0), in_thread(drain, 1)]
        for j in joins:
            j(120)
        total = got[0] + got[1]
        assert sum(total.values()) == n, sum(total.values())
        assert set(total) == {b"bg-%d" % i for i in range(n)}
        assert set(total.values()) == {1}, [k for k, v in total.items() if v != 1][:5]
        assert status_of(c, "bgload")[:2] == (0, 0)
        c.nothing(0.2)


@test
def test_100000_requests_pipelined_at_once_are_all_answered():
    # More requests in one go than the inbound ring holds: the connection
    # stalls until the dispatcher drains, then resumes.  With one I/O
    # thread running the dispatcher (the default on 1-2 CPUs), nothing
    # resumed it: the client waited forever after about 40,000 replies.
    with srv() as s, s.conn(timeout=60) as c:
        n = 100000
        c.send(b"".join(packet("SUBMIT_JOB_BG", "pipe", "p%d" % i, "x") for i in range(n)))
        got = read_packets(c, n, timeout=60)
        assert [name for name, _ in got] == ["JOB_CREATED"] * n, collections.Counter(
            name for name, _ in got)
        assert len({h for _, h in got}) == n
        c.send(b"".join(packet("ECHO_REQ", "e%d" % i) for i in range(n)))
        got = read_packets(c, n, timeout=60)
        assert got == [("ECHO_RES", b"e%d" % i) for i in range(n)]


if __name__ == "__main__":
    gmtest.main()
