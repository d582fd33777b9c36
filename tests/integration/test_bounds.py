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
from gmtest import Server, free_port, packet, port_open, rss_kib, test, wait_until  # noqa: E402


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
    with Server(env=gmtest.small_quarantine()) as s:
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
        # 124 MiB before; 4.4 MiB now (AddressSanitizer's quarantine, which
        # keeps freed blocks and would count as growth, is kept small)
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



@test
def test_pipelined_status_lines_from_a_client_that_never_reads_cost_one_round_at_a_time():
    # 200 functions with 500-byte names make `status` about 100 KB; one
    # client pipelines 3,000 `status` lines in one write and reads nothing.
    # The dispatcher used to build all 3,000 replies at once (300 MB);
    # now it builds the next ones only once the I/O thread has taken the
    # last, and the I/O thread closes the client at --max-output-size
    # (16 MiB here), so the server's peak memory grows by tens of MiB.
    with Server("--max-output-size", str(16 << 20), env=gmtest.small_quarantine()) as s:
        w = gmtest.Conn(s.port)
        for i in range(200):
            w.send_packet("CAN_DO", "%0500d" % i)
        w.send_packet("ECHO_REQ", "sync")
        w.expect("ECHO_RES")
        base = rss_kib(s.proc.pid, "VmHWM")
        slow = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"status\n" * 3000)
        wait_until(lambda: "too much unsent output" in s.log_text(), timeout=60,
                   what="the client that does not read closed at --max-output-size")
        with s.conn() as other:
            other.send_packet("ECHO_REQ", "alive")
            other.expect("ECHO_RES")
        grown = rss_kib(s.proc.pid, "VmHWM") - base
        assert grown < 120 << 10, "peak memory grew by %d MiB" % (grown >> 10)
        slow.close()


def _closed_within(sock, seconds, trickle=None):
    """Whether the server closes sock within `seconds`; trickle, if given,
    is sent a byte at a time every 0.3 s meanwhile (a slowloris)."""
    deadline = time.time() + seconds
    sock.settimeout(0.3)
    i = 0
    while time.time() < deadline:
        try:
            if trickle is not None:
                sock.send(trickle[i % len(trickle):i % len(trickle) + 1])
                i += 1
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


@test
def test_http_request_trickled_or_never_sent_is_cut_off_at_http_timeout():
    # slowloris on the HTTP port: one connection sends a header a byte every
    # 0.3 s, never finishing it; another sends nothing.  Both are closed at
    # --http-timeout (2 s here) from their accept, however the bytes
    # trickle; a normal request on a third is answered meanwhile, and its
    # keep-alive connection is closed once idle that long.
    port = free_port()
    with Server("-r", "http", "--http-port", str(port), "--http-timeout", "2") as s:
        wait_until(lambda: port_open(port), timeout=10, what="the HTTP port")
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET /status HTTP/1.1\r\nHost: localhost\r\n")
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        ok = socket.create_connection(("127.0.0.1", port), timeout=5)
        ok.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert ok.recv(4096).startswith(b"HTTP/1.1 200"), "a normal request was not answered"
        assert _closed_within(slow, 8, trickle=b"X-Slow: y\r\n"), "the trickling request was never cut off"
        assert _closed_within(silent, 3), "a connection that sent nothing was never closed"
        assert _closed_within(ok, 4), "an idle keep-alive connection was never closed"
        assert s.proc.poll() is None


@test
def test_gear_packet_left_incomplete_is_closed_at_packet_timeout_idle_worker_is_not():
    with Server("--packet-timeout", "2") as s:
        partial = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        partial.sendall(packet("CAN_DO", "f")[:7])
        worker = gmtest.Conn(s.port, timeout=10)
        worker.send_packet("CAN_DO", "f")
        worker.send_packet("PRE_SLEEP")
        assert _closed_within(partial, 8), "a packet left incomplete was never timed out"
        time.sleep(2.5)
        # the idle worker is still there: a job wakes it
        c = gmtest.Conn(s.port, timeout=10)
        c.send_packet("SUBMIT_JOB_BG", "f", "", b"x")
        assert c.recv_packet().name == "JOB_CREATED"
        assert worker.recv_packet().name == "NOOP"
        assert "incomplete packet: no byte within --packet-timeout" in s.log_text()

if __name__ == "__main__":
    gmtest.main()
