#!/usr/bin/env python3
"""Bounded memory and CPU under hostile peers (issue 14): each test is a
client that misbehaves on purpose, and a figure the server must stay
under while other clients are served as usual."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
from gmtest import Server, packet, rss_kib, test, wait_until  # noqa: E402


def echo_worker(port, function, stop, pad=0):
    """A fast worker: completes each job of `function` with its own data
    (followed by `pad` bytes)."""
    w = gmtest.Conn(port, timeout=30)
    w.send_packet("CAN_DO", function)
    while not stop.is_set():
        w.send_packet("GRAB_JOB")
        p = w.recv_packet()
        if p.name == "JOB_ASSIGN":
            handle, _, data = p.fields(3)
            w.send_packet("WORK_COMPLETE", handle, data + b"p" * pad)
        elif p.name == "NO_JOB":
            w.send_packet("PRE_SLEEP")
            try:
                while w.recv_packet(timeout=0.2).name != "NOOP":
                    pass
            except (socket.timeout, TimeoutError):
                pass
    w.close()


@test
def test_client_that_never_reads_its_results_is_paused_not_grown():
    # 2,000 foreground jobs of 64 KiB, done at once by a fast worker, for a
    # client that does not read: the server used to queue every result
    # (about 125 MiB; the client sends slower than the worker works, so
    # that the results come back as the submits go in).  Now it stops reading that client once 4 MiB of its
    # results wait; its submits wait in its own socket, it is not closed,
    # another client's HIGH job of the same function runs at once, and when
    # the client reads, all 2,000 results are there.
    n, size = 2000, 65536
    with Server() as s:
        stop = threading.Event()
        wt = threading.Thread(target=echo_worker, args=(s.port, "bounded", stop), daemon=True)
        wt.start()
        base = rss_kib(s.proc.pid)
        slow = gmtest.Conn(s.port, timeout=60)
        sent = [0]
        submit = packet("SUBMIT_JOB", "bounded", "", b"x" * size)

        def sender():
            # 500 submits a second, slower than the worker: results come
            # back as fast as submits go in
            for _ in range(n):
                slow.send(submit)
                sent[0] += 1
                time.sleep(0.002)
        st = threading.Thread(target=sender, daemon=True)
        st.start()
        # let it run until the submits stop going in (paused) or all are in
        last, still = -1, 0
        while still < 10 and st.is_alive():
            time.sleep(0.1)
            still = still + 1 if sent[0] == last else 0
            last = sent[0]
        grown = rss_kib(s.proc.pid) - base
        assert sent[0] < n // 2, "%d submits taken from a client that reads nothing" % sent[0]
        # 124 MiB before; 4.4 MiB now, about 40 under AddressSanitizer, whose
        # quarantine keeps freed blocks
        assert grown < 64 * 1024, "the server grew by %d KiB for a client that reads nothing" % grown
        # another client is served at once, on the same function, HIGH
        with s.conn() as other:
            t0 = time.time()
            other.send_packet("SUBMIT_JOB_HIGH", "bounded", "", "other")
            h = other.expect("JOB_CREATED").data
            other.expect_packet("WORK_COMPLETE", h, "other", timeout=10)
            assert time.time() - t0 < 5, "another client waited %.1f s" % (time.time() - t0)
        # the slow client reads: every result arrives, and its last submits go in
        done = 0
        while done < n:
            p = slow.recv_packet(timeout=60)
            if p.name == "WORK_COMPLETE":
                assert len(p.data) > size, p
                done += 1
            else:
                assert p.name == "JOB_CREATED", p
        st.join(10)
        assert sent[0] == n
        assert "too much unsent output" not in s.log_text()
        slow.close()
        stop.set()
        wt.join(10)


@test
def test_client_whose_results_pass_max_output_size_is_closed_and_logged():
    # Small submits all go in at once; their results (64 KiB each) come
    # back to a client that reads nothing.  Past --max-output-size (8 MiB
    # here) of unsent results the client is closed, the log says so, and
    # the server and its other clients go on.
    with Server("--max-output-size", str(8 << 20)) as s:
        stop = threading.Event()
        wt = threading.Thread(target=echo_worker, args=(s.port, "flood", stop, 65536), daemon=True)
        wt.start()
        slow = gmtest.Conn(s.port, timeout=30)
        slow.send(b"".join(packet("SUBMIT_JOB", "flood", "", "j%d" % i) for i in range(400)))
        wait_until(lambda: "too much unsent output" in s.log_text(), timeout=30,
                   what="the slow reader closed at --max-output-size")
        with s.conn() as other:
            other.send_packet("SUBMIT_JOB", "flood", "", "other")
            h = other.expect("JOB_CREATED").data
            p = other.expect("WORK_COMPLETE", timeout=10)
            assert p.data.startswith(h + b"\0other"), p
        got = b""
        try:
            while True:
                chunk = slow.sock.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        assert len(got) < 12 << 20, "%d bytes reached a client closed at 8 MiB" % len(got)
        slow.close()
        stop.set()
        wt.join(10)


if __name__ == "__main__":
    gmtest.main()
