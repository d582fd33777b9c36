#!/usr/bin/env python3
"""Active/standby on a shared PostgreSQL queue (--ha, docs/ha.md).

Two gearmand with --ha on one PostgreSQL (tests/lib/services.py) and one
table: the one holding the queue's advisory lock is active (Gear port open),
the other standby (Gear port closed, /health 503 "role":"standby").

  - basics: the standby's Gear port refuses connections, /health and
    /metrics say each one's role, the log says it; --ha without -q Postgres
    is refused naming --ha; a clean stop of the active hands its jobs over
    with their handles and the handle counter (no handle given twice); a
    job running on a killed active runs again on the new one.
  - kill test: clients submit background jobs to the server list (the first
    that accepts; on refusal or close, the next: as libgearman does), workers
    serve both; the active gets SIGKILL at ROUNDS seeded random points,
    alternating which server is active (the killed one is restarted and
    comes back as standby).  Every acknowledged job completes at least once,
    no handle is acknowledged for two jobs; "# takeover ms: ..." gives the
    time from each kill until the standby answers ECHO (goal under 2 s;
    only a sanity limit, TAKEOVER_LIMIT, is asserted).
  - partition test: the active reaches PostgreSQL through a TCP proxy
    (tests/lib/tcpproxy.py); the proxy is frozen (nothing forwarded, nothing
    closed) and the active's sessions are ended with pg_terminate_backend.
    A submit to it then gets no JOB_CREATED (an error or a close), its Gear
    port and connections close within --ha-timeout (2 s here) + 3 s, the
    standby takes over, and no job is acknowledged by both.  After the
    proxy thaws, the fenced server stays standby.
  - PostgreSQL failed over: the pair's conninfo lists a primary and its
    synchronous streaming replica with target_session_attrs=read-write; the
    primary is stopped (immediate mode) under load and the replica promoted:
    the pair settles with exactly one active on it and nothing acknowledged
    is lost.
  - PostgreSQL restarted (immediate mode) under load: nothing acknowledged
    is lost and the pair settles with exactly one active.

Skipped, saying why, where PostgreSQL or --ha is missing.  Knobs:
GMTEST_SEED (the kill points and pauses), GMTEST_HA_ROUNDS (kills, default 5),
GMTEST_HA_RATE (background jobs per second the clients submit, default 400).
"""

import collections
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
import services  # noqa: E402
from gmtest import GEARMAND, NAME, Server, fail, free_port, packet, port_open, test, wait_until  # noqa: E402
from tcpproxy import TcpProxy  # noqa: E402

SEED = int(os.environ.get("GMTEST_SEED") or time.time())
ROUNDS = int(os.environ.get("GMTEST_HA_ROUNDS") or 5)
RATE = float(os.environ.get("GMTEST_HA_RATE") or 400)
HA_TIMEOUT = 2              # --ha-timeout of every server here
FENCE_SLACK = 3.0           # what the fencing bound may be late by, on a loaded machine
TAKEOVER_LIMIT = 15.0       # sanity limit of a take-over (the goal is under 2 s)
ANSWER_LIMIT = 20.0         # a client gives up on a connection that answers nothing this long
PREFIX = "H:ha"             # both servers: handles must stay unique across the pair
FUNC = "ha_job"


def note(msg):
    for line in msg.splitlines():
        print("# " + line, flush=True)


# ----------------------------------------------------------------------
# servers


_support = None


def need_ha():
    """Skips the test unless this gearmand has --ha and PostgreSQL support."""
    global _support
    if _support is None:
        try:
            r = subprocess.run([GEARMAND, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=30)
            out = r.stdout.decode(errors="replace")
        except OSError as e:
            out = str(e)
        if not re.search(r"--ha\b(?!-)", out):
            _support = "this gearmand has no --ha option"
        elif not re.search(r"\(-q\):.*\bPostgres\b", out):
            _support = "this gearmand was built without PostgreSQL (libpq)"
        else:
            _support = ""
    if _support:
        gmtest.skip(_support)


class HaServer(Server):
    """A gearmand with --ha on the PostgreSQL queue `conninfo`, the HTTP
    front-end on a port of its own, handles PREFIX.  Restarted on the same
    ports by again()."""

    def __init__(self, conninfo, *args, port=None, http_port=None, log_level="WARNING", table=None):
        self.conninfo = conninfo
        self.extra = list(args)
        self.table = table
        self.http_port = http_port or free_port()
        qargs = ["-q", "Postgres", "--libpq-conninfo", conninfo, "--ha", "--ha-timeout", str(HA_TIMEOUT),
                 "-r", "http", "--http-port", str(self.http_port), "--job-handle-prefix", PREFIX]
        if table:
            qargs += ["--libpq-table", table]
        super().__init__(*(qargs + self.extra), port=port, log_level=log_level)
        self.level = log_level

    def start(self, wait=30.0):
        """Returns once the HTTP port accepts connections (a standby never
        opens its Gear port)."""
        return super().start(wait, ready_port=self.http_port)

    def again(self):
        """A new server on the same ports, queue and options (not started)."""
        return HaServer(self.conninfo, *self.extra, port=self.port, http_port=self.http_port,
                        log_level=self.level, table=self.table)

    def get(self, path):
        """(status, body) of a GET on the HTTP port."""
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def health(self):
        """(HTTP status, the /health JSON); (None, {}) when it does not answer."""
        try:
            status, body = self.get("/health")
        except (OSError, http.client.HTTPException):
            return None, {}
        return status, json.loads(body)

    def role(self):
        return self.health()[1].get("role")

    def answers(self):
        """True when the Gear port accepts a connection and answers ECHO."""
        try:
            with gmtest.Conn(self.port, timeout=2.0) as c:
                c.send_packet("ECHO_REQ", "up")
                return c.recv_packet().name == "ECHO_RES"
        except (OSError, EOFError, TimeoutError):
            return False


def start_pair(conninfo_a, conninfo_b=None, **kw):
    """Starts a, waits until it is active, then b as its standby (on a
    failure, stops what it started)."""
    started = []
    try:
        a = HaServer(conninfo_a, **kw)
        started.append(a)
        a.start()
        wait_until(lambda: a.role() == "active" and a.answers(), 30, what="the first server to be active")
        b = HaServer(conninfo_b or conninfo_a, **kw)
        started.append(b)
        b.start()
        wait_until(lambda: b.role() == "standby", 10, what="the second server to be standby")
    except BaseException:
        stop_all(started)
        raise
    return a, b


def stop_all(servers):
    """Stops every server still running (SIGTERM); returns their exit statuses."""
    return [s.stop() for s in servers if s.proc is not None and s.proc.poll() is None]


def roles(servers):
    return [s.role() for s in servers]


def settled(servers):
    """The one active server, once exactly one says active and answers on
    its Gear port and every other says standby and refuses; else None."""
    rs = roles(servers)
    if rs.count("active") != 1 or rs.count("standby") != len(servers) - 1:
        return None
    active = servers[rs.index("active")]
    if not active.answers():
        return None
    if any(port_open(s.port) for s in servers if s is not active):
        return None
    return active


# ----------------------------------------------------------------------
# load: clients with a server list, workers on every server


class Book:
    """What happened to every job, across servers, kills and threads."""

    def __init__(self, tag):
        self.tag = tag
        self.lock = threading.Lock()
        self.n = 0
        self.data = {}              # key -> payload
        self.acks = collections.defaultdict(list)   # key -> [(handle, server port, time)]
        self.by_handle = {}         # handle -> key
        self.runs = collections.defaultdict(list)   # key -> [(handle, server port, time)]
        self.errors = collections.Counter()         # ERROR codes received
        self.lost = 0               # submissions whose connection ended before an answer
        self.problems = []

    def new_job(self):
        with self.lock:
            key = "%s-%06d" % (self.tag, self.n)
            self.n += 1
        self.data[key] = key.encode()
        return key

    def problem(self, msg):
        with self.lock:
            if len(self.problems) < 100:
                self.problems.append(msg)

    def acked(self, key, handle, port):
        with self.lock:
            other = self.by_handle.get(handle)
            if other is not None and other != key:
                self.problems.append("handle %r acknowledged for %s and for %s" % (handle, other, key))
            self.by_handle[handle] = key
            self.acks[key].append((handle, port, time.time()))

    def ran(self, key, handle, port):
        with self.lock:
            if key not in self.data:
                self.problems.append("a worker got a job never submitted: %r" % key)
            self.runs[key].append((handle, port, time.time()))

    def acked_keys(self):
        with self.lock:
            return set(self.acks)

    def not_run(self):
        with self.lock:
            return sorted(k for k in self.acks if not self.runs.get(k))


def read_packet(sock, buf, timeout):
    """One packet from sock: (name, payload, rest of buf); raises
    EOFError, TimeoutError or OSError."""
    deadline = time.time() + timeout
    while True:
        if len(buf) >= 12:
            ptype, size = struct.unpack(">II", buf[4:12])
            if len(buf) >= 12 + size:
                return NAME.get(ptype, str(ptype)), buf[12:12 + size], buf[12 + size:]
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no answer within %.1fs" % timeout)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no answer within %.1fs" % timeout)
        if not chunk:
            raise EOFError("closed")
        buf += chunk


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class FailoverClient(threading.Thread):
    """Submits SUBMIT_JOB_BG jobs (unique key = payload = the job's key) to
    the first server of `ports` that accepts a connection, up to `window`
    unanswered, at `rate` jobs a second.  A submission answered with ERROR,
    or whose connection ends first, is submitted again (it may then run
    twice: at least once).  On a close it starts again from the first
    server, on a refusal it tries the next, as libgearman does."""

    def __init__(self, book, ports, rate, window=16):
        super().__init__(daemon=True)
        self.book = book
        self.ports = list(ports)
        self.rate = rate
        self.window = window
        self.stopping = threading.Event()
        self.retry = collections.deque()
        self.sent = 0

    def next_job(self):
        if self.retry:
            return self.retry.popleft()
        return self.book.new_job()

    def run(self):
        t0 = time.time()
        while not self.stopping.is_set() or self.retry:
            sock = port = None
            for p in self.ports:
                try:
                    sock, port = connect(p), p
                    break
                except OSError:
                    continue
            if sock is None:
                time.sleep(0.02)
                continue
            out = collections.deque()
            buf = b""
            last = time.time()      # the last answer, or the send into an empty window
            try:
                while not self.stopping.is_set() or self.retry or out:
                    room = self.window - len(out)
                    due = int((time.time() - t0) * self.rate) - self.sent
                    n = min(room, due) if not self.stopping.is_set() else min(room, len(self.retry))
                    if n > 0:
                        batch = [self.next_job() for _ in range(n)]
                        self.sent += len(batch)
                        if not out:
                            last = time.time()
                        out.extend(batch)
                        sock.sendall(b"".join(packet("SUBMIT_JOB_BG", FUNC, k, self.book.data[k]) for k in batch))
                    if not out:
                        time.sleep(0.005)
                        continue
                    try:
                        name, data, buf = read_packet(sock, buf, 0.02)
                    except TimeoutError:
                        if time.time() - last > ANSWER_LIMIT:
                            raise
                        continue
                    last = time.time()
                    key = out.popleft()
                    if name == "JOB_CREATED":
                        self.book.acked(key, data.decode(), port)
                    elif name == "ERROR":
                        self.book.errors[data.split(b"\0", 1)[0].decode(errors="replace")] += 1
                        self.retry.append(key)
                    else:
                        self.book.problem("client got %s %r for %s" % (name, data[:80], key))
            except (OSError, EOFError, TimeoutError):
                self.book.lost += len(out)
                self.retry.extend(out)
            finally:
                sock.close()

    def stop(self):
        self.stopping.set()


class HaWorker(threading.Thread):
    """Serves FUNC on one server: GRAB_JOB_UNIQ, WORK_COMPLETE at once,
    PRE_SLEEP when there is nothing; connects again whenever the server
    closes or refuses."""

    def __init__(self, book, port):
        super().__init__(daemon=True)
        self.book = book
        self.port = port
        self.stopping = threading.Event()
        self.jobs = 0

    def run(self):
        while not self.stopping.is_set():
            try:
                sock = connect(self.port)
            except OSError:
                time.sleep(0.02)
                continue
            buf = b""
            try:
                sock.sendall(packet("CAN_DO", FUNC) + packet("GRAB_JOB_UNIQ"))
                while not self.stopping.is_set():
                    try:
                        name, data, buf = read_packet(sock, buf, 0.2)
                    except TimeoutError:
                        continue
                    if name == "NO_JOB":
                        sock.sendall(packet("PRE_SLEEP"))
                    elif name == "NOOP":
                        sock.sendall(packet("GRAB_JOB_UNIQ"))
                    elif name == "JOB_ASSIGN_UNIQ":
                        h, fn, unique, payload = data.split(b"\0", 3)
                        self.book.ran(payload.decode(errors="replace"), h.decode(), self.port)
                        self.jobs += 1
                        sock.sendall(packet("WORK_COMPLETE", h, b"") + packet("GRAB_JOB_UNIQ"))
                    else:
                        self.book.problem("worker got %s %r" % (name, data[:80]))
            except (OSError, EOFError):
                pass
            finally:
                sock.close()

    def stop(self):
        self.stopping.set()


class Load:
    """Two failover clients over the server list and two workers on each server."""

    def __init__(self, book, servers, rate=RATE):
        ports = [s.port for s in servers]
        self.clients = [FailoverClient(book, ports, rate / 2) for _ in range(2)]
        self.workers = [HaWorker(book, p) for p in ports for _ in range(2)]
        for t in self.clients + self.workers:
            t.start()

    def stop_clients(self, timeout=30):
        """Stops submitting new jobs; returns once every job refused or
        unanswered so far has been acknowledged."""
        for c in self.clients:
            c.stop()
        for c in self.clients:
            c.join(timeout)
            if c.is_alive():
                fail("a client still has %d jobs to resubmit after %ds" % (len(c.retry), timeout))

    def stop(self):
        for t in self.clients + self.workers:
            t.stop()
        for t in self.clients + self.workers:
            t.join(5)


def finish(book, load, servers, what):
    """Stops the clients, waits until every acknowledged job has run and
    the active server holds none of FUNC, stops the workers, and fails on
    any loss or problem.  Returns a summary for a TAP comment."""
    load.stop_clients()
    deadline = time.time() + 60
    while book.not_run():
        if time.time() > deadline:
            missing = book.not_run()
            fail("%s: %d acknowledged jobs never ran, e.g. %s (acknowledged as %r)"
                 % (what, len(missing), missing[:5], book.acks[missing[0]]))
        time.sleep(0.05)
    active = wait_until(lambda: settled(servers), 30, what="exactly one active server")
    wait_until(lambda: holds_none(active), 30, what="the active server to hold no job")
    load.stop()
    if book.problems:
        fail("%s: %d problems:\n%s" % (what, len(book.problems), "\n".join(book.problems[:20])))
    acked = book.acked_keys()
    twice = [k for k in acked if len(book.acks[k]) > 1]
    if twice:
        fail("%s: %d jobs acknowledged twice, e.g. %s: %r" % (what, len(twice), twice[0], book.acks[twice[0]]))
    reruns = sum(len(book.runs[k]) - 1 for k in acked if book.runs[k])
    return ("submitted %d, acknowledged %d, refused %s, unanswered (connection ended) %d, "
            "all acknowledged ran; ran more than once %d"
            % (book.n, len(acked), dict(book.errors) or 0, book.lost, reruns))


def holds_none(server):
    """True when `status` shows no job of FUNC queued or running."""
    with server.conn() as c:
        st = gmtest.status_of(c, FUNC)
    return st is None or st[:2] == (0, 0)


class FirstTime(threading.Thread):
    """Polls pred() every 10 ms, from its creation on, for at most `limit`
    seconds; wait() returns the time it first held (None if it never did)."""

    def __init__(self, pred, limit):
        super().__init__(daemon=True)
        self.pred = pred
        self.deadline = time.time() + limit
        self.t = None
        self.start()

    def run(self):
        while time.time() < self.deadline:
            if self.pred():
                self.t = time.time()
                return
            time.sleep(0.01)

    def wait(self):
        self.join()
        return self.t


def takeover(server, t_kill):
    """Waits until server answers ECHO on its Gear port; returns the seconds
    since t_kill."""
    deadline = t_kill + TAKEOVER_LIMIT
    while not server.answers():
        if time.time() > deadline:
            fail("the standby did not answer within %.0fs of the kill; its /health: %r"
                 % (TAKEOVER_LIMIT, server.health()))
        time.sleep(0.01)
    return time.time() - t_kill


# ----------------------------------------------------------------------
# the proxy itself


@test
def test_tcpproxy_freeze_stops_forwarding_both_ways_without_closing_and_thaw_delivers():
    class Echo(gmtest.StubServer):
        def serve(self, c):
            while True:
                d = c.recv(65536)
                if not d:
                    c.close()
                    return
                c.sendall(d)

    e = Echo()
    try:
        with TcpProxy(e.port) as p, socket.create_connection(("127.0.0.1", p.port), timeout=5) as c:
            c.sendall(b"one")
            assert c.recv(10) == b"one"
            assert len(p.upstream_ports()) == 1
            p.freeze()
            c.sendall(b"two")
            c.settimeout(0.3)
            try:
                got = c.recv(10)
                fail("a frozen proxy forwarded %r" % got)
            except socket.timeout:
                pass
            p.thaw()
            c.settimeout(5)
            assert c.recv(10) == b"two"
    finally:
        e.close()


# ----------------------------------------------------------------------
# basics


@test
def test_ha_without_postgres_queue_is_refused_naming_ha():
    need_ha()
    for args in (["--ha"], ["-q", "builtin", "--ha"]):
        s = Server(*args)
        try:
            s.start(wait=10)
            s.stop()
            fail("gearmand %s started" % " ".join(args))
        except RuntimeError as e:
            assert "--ha" in str(e).replace("gearmand exited", ""), "the error does not name --ha: %s" % e


@test
def test_standby_refuses_gear_connections_and_says_standby_in_health_metrics_and_log():
    need_ha()
    pg = services.shared(services.Postgres)
    a, b = start_pair(pg.conninfo, log_level="NOTICE", table="ha_basics")
    try:
        assert not port_open(b.port), "the standby accepts connections on its Gear port"
        status, h = b.health()
        assert status == 503, (status, h)
        assert h.get("role") == "standby" and h.get("ready") is False, h
        assert str(h.get("status", "")).startswith("standby"), h
        status, h = a.health()
        assert status == 200 and h.get("role") == "active" and h.get("ready") is True, (status, h)
        for s, want in ((a, "1"), (b, "0")):
            status, body = s.get("/metrics")
            m = re.search(rb"^gearman_ha_active (\S+)$", body, re.M)
            assert status == 200 and m and m.group(1) == want.encode(), \
                "gearman_ha_active on %s: %r" % (h.get("role"), m and m.group(0))
        wait_until(lambda: "ha: standby: another server holds the queue lock" in b.log_text(), 5,
                   what="the standby's log line")
        assert "ha: active: " in a.log_text(), a.log_text()[-2000:]
        assert "ha: active" not in b.log_text(), b.log_text()[-2000:]
    finally:
        rcs = stop_all([a, b])
    assert rcs == [0, 0], "exit statuses on SIGTERM: %r" % rcs


@test
def test_clean_stop_of_active_hands_jobs_over_with_their_handles_and_no_handle_is_given_twice():
    need_ha()
    pg = services.shared(services.Postgres)
    a, b = start_pair(pg.conninfo, log_level="NOTICE", table="ha_handover")
    try:
        handles = []
        with a.conn() as c:
            for i in range(3):
                handles.append(gmtest.submit(c, "SUBMIT_JOB_BG", FUNC, "", "job-%d" % i))
        assert a.stop() == 0
        wait_until(b.answers, TAKEOVER_LIMIT, what="the standby to take over after a clean stop")
        assert "ha: took the queue lock" in b.log_text(), b.log_text()[-2000:]
        assert re.search(r"queue \w+: replayed 3 jobs", b.log_text()), b.log_text()[-2000:]
        with b.conn() as c:
            for h in handles:
                c.send_packet("GET_STATUS", h)
                p = c.expect("STATUS_RES")
                assert p.fields()[:2] == [h.encode(), b"1"], "%s after the take-over: %r" % (h, p)
            new = gmtest.submit(c, "SUBMIT_JOB_BG", FUNC, "", "job-new")
        assert new not in handles, "the new active gave %r again (earlier: %r)" % (new, handles)
        a = a.again().start()
        wait_until(lambda: a.role() == "standby", 10, what="the restarted server to be standby")
        with b.conn() as w:
            w.send(packet("CAN_DO", FUNC))
            got = []
            for _ in range(4):
                w.send_packet("GRAB_JOB")
                p = w.expect("JOB_ASSIGN")
                got.append(p.fields(3))
                w.send_packet("WORK_COMPLETE", got[-1][0], "")
            assert sorted(f[2] for f in got) == [b"job-0", b"job-1", b"job-2", b"job-new"], got
            assert sorted(f[0].decode() for f in got) == sorted(handles + [new]), got
    finally:
        rcs = stop_all([a, b])
    assert rcs == [0, 0], "exit statuses on SIGTERM: %r" % rcs


@test
def test_job_running_on_a_killed_active_runs_again_on_the_new_active():
    need_ha()
    pg = services.shared(services.Postgres)
    a, b = start_pair(pg.conninfo, table="ha_rerun")
    try:
        with a.conn() as c:
            h = gmtest.submit(c, "SUBMIT_JOB_BG", FUNC, "u1", "running")
        with a.conn() as w:
            w.send(packet("CAN_DO", FUNC) + packet("GRAB_JOB"))
            assert w.expect("JOB_ASSIGN").fields(3) == [h.encode(), FUNC.encode(), b"running"]
            a.stop(sig=signal.SIGKILL)
        wait_until(b.answers, TAKEOVER_LIMIT, what="the standby to take over")
        with b.conn() as w:
            w.send(packet("CAN_DO", FUNC) + packet("GRAB_JOB"))
            assert w.expect("JOB_ASSIGN").fields(3) == [h.encode(), FUNC.encode(), b"running"], \
                "the job that ran on the killed server is not handed out again"
            w.send_packet("WORK_COMPLETE", h, "")
            gmtest.sync(w)
    finally:
        rcs = stop_all([a, b])
    assert rcs == [0], "exit status on SIGTERM: %r" % rcs


# ----------------------------------------------------------------------
# kill -9 of the active under load


@test
def test_kill9_of_the_active_under_load_standby_takes_over_and_no_acknowledged_job_is_lost():
    need_ha()
    rng = random.Random("%d-hakill" % SEED)
    note("seed %d (GMTEST_SEED=%d reproduces the kill points); %d kills, %g jobs/s"
         % (SEED, SEED, ROUNDS, RATE))
    pg = services.shared(services.Postgres)
    a, b = start_pair(pg.conninfo, table="ha_kill")
    servers = [a, b]
    book = Book("kill")
    load = Load(book, servers)
    times = []
    try:
        active = 0
        for rnd in range(1, ROUNDS + 1):
            pause = rng.uniform(0.3, 1.5)
            time.sleep(pause)      # a random point of the load, not a synchronisation
            acked = len(book.acked_keys())
            t_kill = time.time()
            rc = servers[active].stop(sig=signal.SIGKILL)
            if rc != -signal.SIGKILL:
                fail("round %d: the active server exited with %s before the kill" % (rnd, rc))
            standby = servers[1 - active]
            took = takeover(standby, t_kill)
            times.append(took)
            if standby.role() != "active":
                fail("round %d: the server that took over says %r" % (rnd, standby.health()))
            servers[active] = servers[active].again().start()
            wait_until(lambda: servers[active].role() == "standby", 10,
                       what="the restarted server to be standby")
            note("round %d: kill -9 after %.2fs (%d acknowledged so far); the standby answered after %.0f ms"
                 % (rnd, pause, acked, took * 1000))
            active = 1 - active
        summary = finish(book, load, servers, "kill test")
        note(summary)
    finally:
        load.stop()
        rcs = stop_all(servers)
    ms = sorted(int(t * 1000) for t in times)
    note("takeover ms: %s (median %d; goal under 2000)" % (", ".join(str(m) for m in ms),
                                                            statistics.median(ms)))
    assert rcs == [0, 0], "exit statuses on SIGTERM: %r" % rcs


# ----------------------------------------------------------------------
# the active cut off from PostgreSQL


def ended_by_proxy(pg, proxy):
    """Ends (pg_terminate_backend) every session that came through proxy;
    returns their pids, and whether the queue lock's holder was one."""
    ports = proxy.upstream_ports()
    if not ports:
        fail("the active server has no connection through the proxy")
    sql = ("SELECT a.pid, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' "
           "AND l.granted), pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.client_port IN (%s)"
           % ",".join(str(p) for p in ports))
    rows = [line.split("|") for line in pg.psql(sql).split("\n") if line.strip()]
    return [int(r[0]) for r in rows], any(r[1] == "t" for r in rows)


@test
def test_active_cut_off_from_postgres_stops_acknowledging_closes_within_the_bound_and_standby_takes_over():
    need_ha()
    rng = random.Random("%d-hapart" % SEED)
    note("seed %d; --ha-timeout %d" % (SEED, HA_TIMEOUT))
    pg = services.shared(services.Postgres)
    with TcpProxy(pg.port) as proxy:
        via_proxy = re.sub(r"port=\d+", "port=%d" % proxy.port, pg.conninfo)
        a, b = start_pair(via_proxy, pg.conninfo, table="ha_partition")
        servers = [a, b]
        book = Book("part")
        load = Load(book, servers)
        probe = None
        try:
            time.sleep(rng.uniform(0.5, 1.5))   # a random point of the load
            probe = a.conn()
            gmtest.sync(probe)
            acked_before = len(book.acked_keys())
            t_cut = time.time()
            proxy.freeze()
            pids, had_lock = ended_by_proxy(pg, proxy)
            closed = FirstTime(lambda: not port_open(a.port), HA_TIMEOUT + FENCE_SLACK + 5)
            answered = FirstTime(b.answers, TAKEOVER_LIMIT)
            if not had_lock:
                fail("none of the sessions through the proxy (%r) held an advisory lock" % pids)
            # a submit to the cut-off active gets no JOB_CREATED
            got = None
            try:
                probe.send_packet("SUBMIT_JOB_BG", FUNC, "probe", "probe")
                p = probe.recv_packet(timeout=HA_TIMEOUT + FENCE_SLACK + 5)
                got = p.name
                if p.name == "JOB_CREATED":
                    fail("the cut-off active acknowledged a job (%r)" % p.data)
            except TimeoutError:
                fail("a submit to the cut-off active got no answer and no close in %.0fs"
                     % (HA_TIMEOUT + FENCE_SLACK + 5))
            except (EOFError, OSError):
                got = "close"
            # its Gear port and connections close within the bound
            if closed.wait() is None:
                fail("the cut-off active still accepts connections %.0fs after the cut"
                     % (HA_TIMEOUT + FENCE_SLACK + 5))
            t_closed = closed.t - t_cut
            if got != "close":
                if not probe.closed(HA_TIMEOUT + FENCE_SLACK):
                    fail("the cut-off active kept a connection open")
            # the standby took over
            if answered.wait() is None:
                fail("the standby did not answer within %.0fs of the cut; its /health: %r"
                     % (TAKEOVER_LIMIT, b.health()))
            took = answered.t - t_cut
            assert b.role() == "active", b.health()
            # (its HTTP port is closed a moment while it turns into a standby)
            wait_until(lambda: a.health()[0] == 503 and a.role() == "standby", 10,
                       what="the cut-off server's /health to say 503 standby")
            assert "ha: lost the queue lock" in a.log_text(), a.log_text()[-2000:]
            note("cut at +0 (%d acknowledged before; sessions %r ended): the probe got %s; the active's "
                 "Gear port closed after %.0f ms (bound %d s); the standby answered after %.0f ms"
                 % (acked_before, pids, got, t_closed * 1000, HA_TIMEOUT, took * 1000))
            if t_closed > HA_TIMEOUT + FENCE_SLACK:
                fail("the Gear port closed %.1fs after the cut, past --ha-timeout %d + %.0f"
                     % (t_closed, HA_TIMEOUT, FENCE_SLACK))
            time.sleep(rng.uniform(0.3, 1.0))   # load on the new active
            proxy.thaw()
            # the fenced server reaches PostgreSQL again and stays standby
            for _ in range(10):
                time.sleep(0.15)
                if roles(servers) != ["standby", "active"]:
                    fail("after the thaw the roles are %r" % roles(servers))
            late = sum(1 for acks in list(book.acks.values()) for h, port, t in acks
                       if port == a.port and t > t_cut)
            summary = finish(book, load, servers, "partition test")
            note("%s; %d acknowledgements came from the cut-off server after the cut (committed before it)"
                 % (summary, late))
        finally:
            if probe is not None:
                probe.close()
            load.stop()
            proxy.thaw()
            rcs = stop_all(servers)
        assert rcs == [0, 0], "exit statuses on SIGTERM: %r" % rcs


# ----------------------------------------------------------------------
# PostgreSQL failed over to a replica


@test
def test_postgres_failover_to_a_synchronous_replica_keeps_every_acknowledged_job_and_one_active():
    # docs/ha.md: a conninfo listing both hosts with target_session_attrs=read-write;
    # the primary is killed (immediate stop) under load, the replica promoted
    need_ha()
    rng = random.Random("%d-hareplica" % SEED)
    note("seed %d" % SEED)
    with services.running(services.Postgres) as primary:
        try:
            rep = services.PostgresReplica(primary).start()
        except services.Unavailable as e:
            gmtest.skip(str(e))
        try:
            primary.synchronous()
            both = ("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=postgres "
                    "target_session_attrs=read-write" % (primary.port, rep.port))
            a, b = start_pair(both, table="ha_failover")
            servers = [a, b]
            book = Book("rep")
            load = Load(book, servers)
            try:
                time.sleep(rng.uniform(0.5, 1.5))   # a random point of the load
                acked_before = len(book.acked_keys())
                t0 = time.time()
                primary.stop("immediate")
                rep.promote()
                t_promoted = time.time()
                active = wait_until(lambda: settled(servers), 30,
                                    what="exactly one active server on the promoted replica")
                t_settled = time.time()
                n_up = len(book.acked_keys())
                wait_until(lambda: len(book.acked_keys()) > n_up + 50, 15,
                           what="acknowledgements on the promoted replica")
                note("primary stopped, replica promoted %.0f ms later; %d acknowledged before; one active (%s) "
                     "%.0f ms after the promotion"
                     % ((t_promoted - t0) * 1000, acked_before, "the first" if active is a else "the second",
                        (t_settled - t_promoted) * 1000))
                summary = finish(book, load, servers, "fail-over to the replica")
                note(summary)
                # the removals are written in the batches after the completions
                wait_until(lambda: rep.psql("SELECT count(*) FROM ha_failover").strip() == "0", 10,
                           what="the promoted replica's table to be empty once every job ran")
            finally:
                load.stop()
                rcs = stop_all(servers)
            assert rcs == [0, 0], "exit statuses on SIGTERM: %r" % rcs
        finally:
            rep.__exit__(None, None, None)


# ----------------------------------------------------------------------
# PostgreSQL restarted under load


@test
def test_postgres_restart_under_load_loses_nothing_and_the_pair_settles_with_one_active():
    need_ha()
    rng = random.Random("%d-harestart" % SEED)
    note("seed %d" % SEED)
    pg = services.shared(services.Postgres)   # the last test: it restarts the shared PostgreSQL
    a, b = start_pair(pg.conninfo, table="ha_restart")
    servers = [a, b]
    book = Book("pgr")
    load = Load(book, servers)
    try:
        time.sleep(rng.uniform(0.5, 1.5))   # a random point of the load
        acked_before = len(book.acked_keys())
        t0 = time.time()
        pg.stop("immediate")
        time.sleep(1.0)
        pg.start()
        t_up = time.time()
        active = wait_until(lambda: settled(servers), 30, what="exactly one active server after the restart")
        t_settled = time.time()
        n_up = len(book.acked_keys())
        wait_until(lambda: len(book.acked_keys()) > n_up + 50, 15,
                   what="acknowledgements on the settled pair")
        note("PostgreSQL down %.2fs; %d acknowledged before; one active (%s) %.0f ms after it came back"
             % (t_up - t0, acked_before, "the first" if active is a else "the second",
                (t_settled - t_up) * 1000))
        summary = finish(book, load, servers, "PostgreSQL restart")
        note(summary)
    finally:
        load.stop()
        rcs = stop_all(servers)
    assert rcs == [0, 0], "exit statuses on SIGTERM: %r" % rcs


if __name__ == "__main__":
    gmtest.main()
