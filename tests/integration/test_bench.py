#!/usr/bin/env python3
"""bench/gearman-bench, the load generator behind `make bench`, checked for
what its figures rest on: every mode runs against our server and counts
exactly the jobs it was asked for, and a lost, duplicated or corrupted job
(served by a deliberately broken fake server) makes it fail, not report a
number.  The same over TLS (--tls, and the handshake mode's new
connections), through stunnel4 in front of our server and on gearmand --ssl
once the server has TLS.  Speed itself is measured by `make bench`, never
here (design 8)."""

import os
import struct
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
import tlsfix  # noqa: E402
import tlsutil  # noqa: E402
from gmtest import NAME, T, Server, skip, test, wait_until  # noqa: E402

BENCH = os.path.join(gmtest.TOP_BUILDDIR, "bench", "gearman-bench")


def bench(port, *args, timeout=120):
    """Runs the generator; returns (exit code, key=value figures, stderr)."""
    r = subprocess.run([BENCH, "--port", str(port)] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    figures = {}
    lines = r.stdout.decode().split("\n")
    for kv in (lines[-2] if len(lines) > 1 else "").split():
        k, _, v = kv.partition("=")
        figures[k] = v
    return r.returncode, figures, r.stderr.decode()


def status_of(s, fn):
    """(queued, running, workers) of fn from the admin status, or None."""
    for line in s.conn().admin("status").decode().splitlines():
        f = line.split("\t")
        if f[0] == fn:
            return tuple(int(x) for x in f[1:])
    return None


def bench_ok(s, *args):
    code, f, err = bench(s.port, "--pid", s.proc.pid, *args)
    assert code == 0 and f.get("errors") == "0", (code, f, err)
    return f


@test
def test_every_mode_counts_exactly_the_jobs_asked_for():
    with Server() as s:
        f = bench_ok(s, "--mode", "fg", "--count", 2000, "--clients", 4, "--workers", 3, "--depth", 8)
        assert f["ops"] == "2000", f
        assert float(f["p50_us"]) > 0 and float(f["server_cpu_s"]) >= 0, f
        f = bench_ok(s, "--mode", "fg", "--count", 900, "--clients", 3, "--workers", 2, "--depth", 4,
                     "--functions", 3, "--unique", "--priority", "high", "--threads", 2)
        assert f["ops"] == "900", f
        f = bench_ok(s, "--mode", "echo", "--count", 5000, "--clients", 5, "--depth", 16)
        assert f["ops"] == "5000", f
        f = bench_ok(s, "--mode", "bg", "--count", 3000, "--clients", 3, "--workers", 2, "--depth", 64,
                     "--priority", "low")
        assert f["ops"] == "3000" and f["drained"] == "3000", f
        f = bench_ok(s, "--mode", "drain", "--count", 3000, "--clients", 2, "--workers", 4, "--depth", 32,
                     "--threads", 2)
        assert f["ops"] == "3000" and f["drained"] == "3000", f
        f = bench_ok(s, "--mode", "conns", "--count", 50)
        assert f["ops"] == "50", f
    with Server() as s:
        f = bench_ok(s, "--mode", "rss", "--count", 2000, "--clients", 2, "--depth", 32, "--no-drain")
        assert f["ops"] == "2000" and f["drained"] == "0" and int(f["rss_kb"]) > 0, f
        assert status_of(s, "bench0") == (2000, 0, 0), status_of(s, "bench0")


@test
def test_big_payloads_idle_workers_and_a_time_window():
    with Server() as s:
        f = bench_ok(s, "--mode", "fg", "--count", 40, "--clients", 2, "--workers", 2, "--depth", 4,
                     "--payload", 65536)
        assert f["ops"] == "40", f
        f = bench_ok(s, "--mode", "fg", "--seconds", 0.5, "--clients", 2, "--workers", 2, "--depth", 4,
                     "--idle-workers", 20)
        assert int(f["ops"]) > 0 and float(f["secs"]) >= 0.5, f
        # the idle workers were registered during the run, and left with it
        assert wait_until(lambda: status_of(s, "idle0") == (0, 0, 0)), status_of(s, "idle0")


@test
def test_new_connections_count_exactly():
    with Server() as s:
        f = bench_ok(s, "--mode", "handshake", "--count", 300, "--clients", 3)
        assert f["ops"] == "300" and float(f["p50_us"]) > 0, f


def tls_fronts():
    """(name, class(fix) -> context manager yielding (port, pid)) for each
    way of reaching our server over TLS that this build has (fix: tlsfix's
    certificates)."""
    if not tlsutil.have("openssl"):
        skip("openssl is not installed")
    fronts = []
    if tlsutil.have("stunnel"):
        class ViaStunnel:
            def __init__(self, d):
                self.d = d

            def __enter__(self):
                self.s = Server().start()
                self.t = tlsutil.Stunnel(self.s.port, self.d.server, self.d.server_key).start()
                return self.t.port, self.s.proc.pid

            def __exit__(self, *exc):
                self.t.stop()
                assert self.s.stop() == 0, self.s.log_text()[-2000:]
        fronts.append(("stunnel", ViaStunnel))
    with open(gmtest.GEARMAND, "rb") as g:
        server_tls = b"SSL_CTX_new" in g.read()  # until the server has TLS, --ssl serves plain text
    if server_tls:
        class OnGearmand:
            def __init__(self, d):
                self.d = d

            def __enter__(self):
                self.s = Server("--ssl", "--ssl-certificate", self.d.server, "--ssl-key", self.d.server_key,
                                "--ssl-ca-file", self.d.ca).start()
                return self.s.port, self.s.proc.pid

            def __exit__(self, *exc):
                assert self.s.stop() == 0, self.s.log_text()[-2000:]
        fronts.append(("gearmand --ssl", OnGearmand))
    if not fronts:
        skip("neither stunnel4 nor a gearmand with TLS")
    return fronts


@test
def test_tls_modes_count_exactly():
    fronts = tls_fronts()
    files = tlsfix.get()
    tls = ("--tls", "--tls-ca", files.ca)
    for name, front in fronts:
        with front(files) as (port, pid):
            for args, want in ((("--mode", "fg", "--count", 2000, "--clients", 4, "--workers", 3, "--depth", 8),
                                "2000"),
                               (("--mode", "fg", "--count", 40, "--clients", 2, "--workers", 2, "--depth", 4,
                                 "--payload", 65536, "--threads", 2), "40"),
                               (("--mode", "echo", "--count", 5000, "--clients", 5, "--depth", 16), "5000"),
                               (("--mode", "bg", "--count", 3000, "--clients", 3, "--workers", 2, "--depth", 64),
                                "3000"),
                               (("--mode", "handshake", "--count", 100, "--clients", 2), "100")):
                code, f, err = bench(port, "--pid", pid, *tls, *args)
                assert code == 0 and f.get("errors") == "0" and f.get("ops") == want, (name, args, code, f, err)
        # TLS to the plain port, or a CA that did not sign the server's certificate: errors, not numbers
        with Server() as s:
            code, f, err = bench(s.port, *tls, "--mode", "handshake", "--count", 10, "--clients", 1)
            assert code == 1 and "did not answer in TLS" in err, (code, f, err)
        with front(files) as (port, pid):
            code, f, err = bench(port, "--tls", "--tls-ca", files.rogue_ca, "--mode", "echo", "--count", 10,
                                 "--clients", 1)
            assert code == 1 and "certificate was not accepted" in err, (code, f, err)


@test
def test_bad_arguments_are_refused():
    code, _, err = bench(1, "--mode", "nosuch")
    assert code == 2 and "usage" in err, (code, err)
    code, _, err = bench(1, "--threads", 0)
    assert code == 2 and "usage" in err, (code, err)
    for args in (("--tls",), ("--tls", "--tls-ca", "ca.pem", "--mode", "conns"),
                 ("--tls", "--tls-ca", "ca.pem", "--idle-workers", 3)):
        code, _, err = bench(1, *args)
        assert code == 2 and "--tls needs --tls-ca" in err, (args, code, err)


class FakeServer(gmtest.StubServer):
    """A deliberately broken server: answer(state, type, payload) returns
    the packets (type, payload) to send back; answer may also return None
    to close the connection."""

    def __init__(self, answer):
        self.answer = answer
        self.state = {}
        super().__init__()

    def serve(self, c):
        buf = b""
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while len(buf) >= 12:
                    ptype, size = struct.unpack(">II", buf[4:12])
                    if len(buf) < 12 + size:
                        break
                    payload, buf = buf[12:12 + size], buf[12 + size:]
                    out = self.answer(self.state, NAME.get(ptype), payload)
                    if out is None:
                        c.close()
                        return
                    c.sendall(b"".join(b"\0RES" + struct.pack(">II", T[n], len(p)) + p for n, p in out))


def job_server(complete):
    """Answers submits as a job server would, except that complete(state,
    handle, payload) says which WORK_COMPLETE packets to send."""
    lock = threading.Lock()

    def answer(state, name, payload):
        if name == "SUBMIT_JOB":
            with lock:
                state["n"] = state.get("n", 0) + 1
                handle = b"H:fake:%d" % state["n"]
            data = payload.split(b"\0", 2)[2]
            return [("JOB_CREATED", handle)] + complete(state, handle, data)
        if name == "GRAB_JOB":
            return [("NO_JOB", b"")]
        return []
    return answer


def broken_run(answer, *args, timeout=60):
    fake = FakeServer(answer)
    try:
        return bench(fake.port, *args, timeout=timeout)
    finally:
        fake.close()


FG = ("--mode", "fg", "--count", 50, "--clients", 1, "--workers", 1, "--depth", 4)


@test
def test_a_correct_fake_server_passes():
    # the fake server itself is sound: the failures below are the breakage
    code, f, err = broken_run(job_server(lambda st, h, d: [("WORK_COMPLETE", h + b"\0" + d)]), *FG)
    assert code == 0 and f["ops"] == "50", (code, f, err)


@test
def test_a_corrupted_result_is_an_error():
    def flip(st, h, d):
        return [("WORK_COMPLETE", h + b"\0" + d[:-1] + (b"a" if d[-1:] != b"a" else b"b"))]
    code, _, err = broken_run(job_server(flip), *FG)
    assert code == 1 and "corrupted result payload" in err, (code, err)


@test
def test_a_duplicated_result_is_an_error():
    code, _, err = broken_run(job_server(lambda st, h, d: [("WORK_COMPLETE", h + b"\0" + d)] * 2), *FG)
    assert code == 1 and "duplicate" in err, (code, err)


@test
def test_a_lost_job_is_an_error():
    # job 7 is created and never completed: the run stalls, and says so
    def lose(st, h, d):
        return [] if h.endswith(b":7") else [("WORK_COMPLETE", h + b"\0" + d)]
    code, _, err = broken_run(job_server(lose), *FG)
    assert code == 1 and "jobs are missing" in err, (code, err)


@test
def test_a_wrong_echo_and_a_closed_connection_are_errors():
    def echo_wrong(st, name, payload):
        return [("ECHO_RES", payload.upper())]
    code, _, err = broken_run(echo_wrong, "--mode", "echo", "--count", 20, "--clients", 1)
    assert code == 1 and "bad ECHO_RES" in err, (code, err)

    def hang_up(st, name, payload):
        return None
    code, _, err = broken_run(hang_up, "--mode", "echo", "--count", 20, "--clients", 1)
    assert code == 1 and "lost its connection" in err, (code, err)
    # the same on new connections
    code, _, err = broken_run(echo_wrong, "--mode", "handshake", "--count", 20, "--clients", 1)
    assert code == 1 and "bad ECHO_RES" in err, (code, err)
    code, _, err = broken_run(hang_up, "--mode", "handshake", "--count", 20, "--clients", 1)
    assert code == 1 and "closed the connection" in err, (code, err)


@test
def test_a_refused_background_submit_is_an_error():
    def refuse(st, name, payload):
        if name == "SUBMIT_JOB_BG":
            return [("ERROR", b"QUEUE_ERROR\0queue is full")]
        return []
    code, _, err = broken_run(refuse, "--mode", "bg", "--count", 10, "--clients", 1, "--no-drain")
    assert code == 1 and "background submit refused" in err, (code, err)


if __name__ == "__main__":
    gmtest.main()
