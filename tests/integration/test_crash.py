#!/usr/bin/env python3
"""Crash tests for the durable queues (design 5 and 8): the server is killed
with SIGKILL under load and restarted on the same storage, and every job is
counted.

Each backend (SQLite, PostgreSQL, MySQL/MariaDB, Redis, memcached, Tokyo
Cabinet) gets ROUNDS rounds of JOBS_PER_ROUND new background jobs (HIGH,
NORMAL, LOW, epoch jobs a few seconds in the past, and a few epoch jobs a
week ahead), some with a unique
key and some without, each payload naming its job, pipelined by four client
connections while two workers grab and complete jobs (and keep a few
running).  At a random moment (seeded: the seed is printed as a TAP comment
and GMTEST_SEED reproduces the job mix and the kill points) the server gets
SIGKILL; jobs the kill kept from being sent go into the next round.  The
server is restarted on the same storage with the same --job-handle-prefix,
and one worker that sleeps, is woken, then grabs, drains every runnable job.
Then, for every job ever submitted to that storage:

  - an acknowledged job (JOB_CREATED received) that was never completed is
    there exactly once, with its handle, function, unique key and payload;
  - a job whose WORK_COMPLETE was sent may run again (at-least-once) only if
    that was at most COMMIT_WINDOW seconds, plus the commit lag seen at the
    kill, before the kill, and no more such re-runs than completions sent in
    that window; re-runs are counted in a TAP comment;
  - nothing appears that was never submitted, nothing appears twice;
  - the future epoch jobs survive every crash (GET_STATUS knows them);
  - the worker receives every HIGH job before any NORMAL, and every NORMAL
    before any LOW.

After the last round the jobs still unsent are submitted, the server is
stopped with SIGTERM and started again: nothing completed may come back.

memcached is not durable by design: what it loses is reported, not failed;
duplicates, corrupted jobs and never-submitted jobs fail there too.

Three more restart the database under load (PostgreSQL in immediate mode,
MariaDB and Redis with kill -9; down about 1 s) while clients submit and
workers complete: submissions during the outage get
ERROR QUEUE_ERROR, foreground jobs keep working, writes resume, and every
acknowledged job is completed or queued exactly once, before and after a
kill -9 of the server.  The last one pins design 9's "handles are never
reused" across a restart.

Knobs (environment): GMTEST_SEED, GMTEST_CRASH_ROUNDS (default 5),
GMTEST_CRASH_JOBS (per round, default 4000), GMTEST_COMMIT_WINDOW (seconds,
default 1.0).
"""

import collections
import os
import random
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
import services  # noqa: E402
from gmtest import NAME, T, Server, fail, packet, test  # noqa: E402

PREFIX = "H:crash"
SEED = int(os.environ.get("GMTEST_SEED") or time.time())
ROUNDS = int(os.environ.get("GMTEST_CRASH_ROUNDS") or 5)
JOBS_PER_ROUND = int(os.environ.get("GMTEST_CRASH_JOBS") or 4000)
COMMIT_WINDOW = float(os.environ.get("GMTEST_COMMIT_WINDOW") or 1.0)
FUNCS = ("crash_a", "crash_b")
FG_FUNC = "crash_fg"
LOG_LEVEL = "WARNING"   # NOTICE logs a line per accepted job

PRIO = {"high": 0, "normal": 1, "epoch": 1, "future": 1, "low": 2}
SUBMIT = {"high": "SUBMIT_JOB_HIGH_BG", "normal": "SUBMIT_JOB_BG", "low": "SUBMIT_JOB_LOW_BG",
          "epoch": "SUBMIT_JOB_EPOCH", "future": "SUBMIT_JOB_EPOCH"}
# share of each kind in a round
MIX = (("high", 0.25), ("normal", 0.30), ("low", 0.25), ("epoch", 0.17), ("future", 0.03))


def note(msg):
    for line in msg.splitlines():
        print("# " + line, flush=True)


# ----------------------------------------------------------------------
# jobs and what happened to them


class Job:
    __slots__ = ("key", "round", "fn", "unique", "kind", "prio", "data", "pkt", "sent", "sent_t", "handle",
                 "error", "error_t", "completions", "assigned", "lost")

    def __init__(self, key, rnd, fn, unique, kind, data, pkt):
        self.key = key
        self.round = rnd
        self.fn = fn
        self.unique = unique
        self.kind = kind
        self.prio = PRIO[kind]
        self.data = data
        self.pkt = pkt
        self.sent = False        # its packet was handed to the socket
        self.sent_t = None
        self.handle = None       # JOB_CREATED received: acknowledged
        self.error = None        # ERROR received instead
        self.error_t = None
        self.completions = []    # times a WORK_COMPLETE for it was sent
        self.assigned = 0        # JOB_ASSIGNs seen while the server ran
        self.lost = False        # reported lost already (memcached)


class Registry:
    """Every job submitted to one storage, across rounds and restarts."""

    def __init__(self, tag):
        self.tag = tag
        self.jobs = []
        self.by_data = {}
        self.by_key = {}
        self.by_handle = {}
        self.problems = []
        self.reused = []        # (handle, earlier job, later job)

    def make_jobs(self, rng, rnd, n, mix=MIX, funcs=FUNCS):
        now = int(time.time())
        kinds = [k for k, _ in mix]
        weights = [w for _, w in mix]
        out = []
        for i in range(n):
            kind = rng.choices(kinds, weights)[0]
            key = "%s-r%02d-%06d" % (self.tag, rnd, i)
            # the key, then 0..120 random bytes (NULs and 0xff included)
            data = key.encode() + b"|" + rng.randbytes(rng.randint(0, 120))
            unique = ("u-" + key).encode() if rng.random() < 0.5 else b""
            fn = rng.choice(funcs).encode()
            if kind in ("epoch", "future"):
                when = now - 5 if kind == "epoch" else now + 7 * 86400
                pkt = packet(SUBMIT[kind], fn, unique, str(when), data)
            else:
                pkt = packet(SUBMIT[kind], fn, unique, data)
            j = Job(key, rnd, fn, unique, kind, data, pkt)
            out.append(j)
            self.jobs.append(j)
            self.by_data[data] = j
            self.by_key[key] = j
        return out

    def acked(self, j, handle):
        other = self.by_handle.get(handle)
        if other is not None and other is not j:
            # counted, not failed here: see test_handle_of_a_completed_job_is_not_given_again_after_a_restart
            self.reused.append((handle, other, j))
        j.handle = handle
        self.by_handle[handle] = j

    def identify(self, data):
        """The job a payload claims to be (by its key), for messages."""
        key = data.split(b"|", 1)[0].decode(errors="replace")
        return self.by_key.get(key)


# ----------------------------------------------------------------------
# a single-threaded load driver: clients and workers multiplexed by select


class Peer:
    def __init__(self, port, load):
        self.load = load
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def fileno(self):
        return self.sock.fileno()

    def send(self, data):
        """False if not sent: the connection is gone, or the server was
        killed (what is read after the kill gets no answer)."""
        if self.eof or self.load.frozen:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.eof = True
            return False

    def feed(self):
        """Reads what is there; returns the complete packets [(type, data)]."""
        try:
            chunk = self.sock.recv(1 << 20)
        except (ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            self.eof = True
            return []
        buf = self.buf + chunk
        out = []
        off = 0
        while len(buf) - off >= 12:
            ptype, size = struct.unpack(">II", buf[off + 4:off + 12])
            if buf[off:off + 4] != b"\0RES":
                raise AssertionError("bad magic from server: %r" % buf[off:off + 12])
            if len(buf) - off < 12 + size:
                break
            out.append((ptype, buf[off + 12:off + 12 + size]))
            off += 12 + size
        self.buf = buf[off:]
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Client(Peer):
    """Pipelines background submissions, at most `window` unanswered; with
    `rate` (jobs/s) paces itself."""

    def __init__(self, port, load, jobs, window=64, rate=None):
        super().__init__(port, load)
        self.todo = collections.deque(jobs)
        self.out = collections.deque()
        self.window = window
        self.rate = rate
        self.t0 = time.time()
        self.sent_n = 0

    def done(self):
        return not self.todo and not self.out

    def pump(self, now):
        room = self.window - len(self.out)
        if self.rate is not None:
            room = min(room, int((now - self.t0) * self.rate) - self.sent_n)
        if room <= 0 or not self.todo:
            return
        batch = []
        for _ in range(min(room, len(self.todo), 64)):
            j = self.todo.popleft()
            j.sent = True
            j.sent_t = now
            batch.append(j)
            self.out.append(j)
        self.sent_n += len(batch)
        self.send(b"".join(j.pkt for j in batch))

    def on_packet(self, ptype, data):
        if not self.out:
            self.load.problem("client got %s %r with nothing outstanding" % (NAME.get(ptype), data[:80]))
            return
        j = self.out.popleft()
        if ptype == T["JOB_CREATED"]:
            self.load.reg.acked(j, data)
            now = time.time()
            self.load.acks.append(now)
            self.load.ack_lat.append((now, now - j.sent_t))
        elif ptype == T["ERROR"]:
            j.error = data
            j.error_t = time.time()
            self.load.errors.append((time.time(), data))
        else:
            self.load.problem("client got %s %r for %s" % (NAME.get(ptype, ptype), data[:80], j.key))


class Worker(Peer):
    """GRAB_JOB_UNIQ, then WORK_COMPLETE (or, with probability `hold`, keep
    the job running) and grab again; sleeps with PRE_SLEEP on NO_JOB."""

    def __init__(self, port, load, funcs, hold=0.0, result=None, rate=None):
        super().__init__(port, load)
        self.hold = hold
        self.result = result
        self.rate = rate        # most jobs per second, or None
        self.t0 = time.time()
        self.grabs = 1
        self.held = []
        self.state = "grab"
        self.stopping = False
        self.stopped = False
        self.send(b"".join(packet("CAN_DO", f) for f in funcs) + packet("GRAB_JOB_UNIQ"))

    def pump(self, now):
        if self.state == "wait" and (self.stopping or self.grabs < (now - self.t0) * self.rate):
            self.send(self.next())

    def stop(self):
        """Finishes the job in hand, then an ECHO proves every WORK_COMPLETE
        was read by the server."""
        self.stopping = True
        if self.state in ("sleep", "wait"):
            self.state = "echo"
            self.send(packet("ECHO_REQ", "stop"))

    def next(self):
        if self.stopping:
            self.state = "echo"
            return packet("ECHO_REQ", "stop")
        if self.rate is not None and self.grabs >= (time.time() - self.t0) * self.rate:
            self.state = "wait"     # pump() grabs when the rate allows
            return b""
        self.state = "grab"
        self.grabs += 1
        return packet("GRAB_JOB_UNIQ")

    def on_packet(self, ptype, data):
        name = NAME.get(ptype, str(ptype))
        if name == "NOOP":
            if self.state == "sleep":
                self.send(self.next())
        elif name == "NO_JOB":
            if self.stopping:
                self.send(self.next())
            else:
                self.state = "sleep"
                self.send(packet("PRE_SLEEP"))
        elif name == "ECHO_RES":
            self.stopped = True
        elif name == "JOB_ASSIGN_UNIQ":
            h, fn, unique, payload = data.split(b"\0", 3)
            if self.result is not None:      # foreground echo worker
                self.send(packet("WORK_COMPLETE", h, self.result(payload)) + self.next())
                return
            j = self.load.reg.by_data.get(payload)
            if j is None:
                self.load.problem("worker got a job that was never submitted or is corrupted: %r %r %r"
                                  % (h, fn, payload[:60]))
                self.send(self.next())
                return
            j.assigned += 1
            if j.assigned > 1 or j.completions:
                self.load.problem("%s assigned again while the server ran (completions sent: %d)"
                                  % (j.key, len(j.completions)))
            if (fn, unique) != (j.fn, j.unique) or (j.handle is not None and j.handle != h):
                self.load.problem("%s assigned as %r/%r/%r, submitted as %r/%r/%r"
                                  % (j.key, h, fn, unique, j.handle, j.fn, j.unique))
            if j.kind == "future":
                self.load.problem("future epoch job %s ran a week early" % j.key)
            if not self.stopping and self.hold and self.load.rng.random() < self.hold:
                self.held.append(j)
                self.send(self.next())
                return
            t = time.time()
            if self.send(packet("WORK_COMPLETE", h, b"") + self.next()):
                j.completions.append(t)
                self.load.completions.append(t)
        else:
            self.load.problem("worker got %s %r" % (name, data[:80]))


class FgClient(Peer):
    """Foreground jobs one at a time (paced), checking each result."""

    def __init__(self, port, load, interval=0.02):
        super().__init__(port, load)
        self.n = 0
        self.cur = None
        self.interval = interval
        self.next_at = 0.0
        self.done_jobs = []     # (t_submit, t_done)
        self.bad = []
        self.stopping = False

    def pump(self, now):
        if self.cur is None and not self.stopping and now >= self.next_at:
            data = b"fg-%06d" % self.n
            self.n += 1
            self.cur = (data, now, None)
            self.send(packet("SUBMIT_JOB", FG_FUNC, "", data))

    def on_packet(self, ptype, data):
        name = NAME.get(ptype, str(ptype))
        if self.cur is None:
            self.bad.append("unexpected %s" % name)
            return
        payload, t0, h = self.cur
        if name == "JOB_CREATED":
            self.cur = (payload, t0, data)
        elif name == "WORK_COMPLETE":
            rh, result = data.split(b"\0", 1)
            if rh != h or result != payload[::-1]:
                self.bad.append("WORK_COMPLETE %r %r for %r %r" % (rh, result, h, payload))
            now = time.time()
            self.done_jobs.append((t0, now))
            self.cur = None
            self.next_at = now + self.interval
        else:
            self.bad.append("%s %r for %r" % (name, data[:80], payload))
            self.cur = None


class Load:
    def __init__(self, port, reg, rng):
        self.port = port
        self.reg = reg
        self.rng = rng
        self.clients = []
        self.workers = []
        self.fg = []
        self.acks = []          # times of JOB_CREATED
        self.ack_lat = []       # (time, seconds from sending to JOB_CREATED)
        self.errors = []        # (time, ERROR payload)
        self.completions = []   # times a WORK_COMPLETE was sent
        self.problems = []
        self.frozen = False     # after the kill: nothing more is sent

    def problem(self, msg):
        if len(self.problems) < 1000:
            self.problems.append(msg)

    def peers(self):
        return self.clients + self.workers + self.fg

    def step(self, timeout=0.005):
        if not self.frozen:
            now = time.time()
            for c in self.clients + self.fg:
                c.pump(now)
            for w in self.workers:
                if w.state == "wait":
                    w.pump(now)
        live = [p for p in self.peers() if not p.eof]
        if not live:
            time.sleep(timeout)
            return
        r, _, _ = select.select(live, [], [], timeout)
        for p in r:
            for ptype, data in p.feed():
                p.on_packet(ptype, data)

    def outstanding(self):
        return sum(len(c.out) for c in self.clients)

    def commit_lag(self, t):
        """How far behind the durable queue was at time t: the slowest
        JOB_CREATED of the last second, or the oldest unanswered submission.
        A completion sent within COMMIT_WINDOW + this before a kill may not
        have been committed (its DONE waits behind those ADDs)."""
        lags = [lat for ta, lat in self.ack_lat if t - 1.0 <= ta <= t]
        lags += [t - j.sent_t for c in self.clients for j in c.out]
        return max(lags, default=0.0)

    def read_to_eof(self, timeout=10.0):
        """After the kill: takes in what the server wrote before it died."""
        self.frozen = True
        deadline = time.time() + timeout
        while any(not p.eof for p in self.peers()):
            if time.time() > deadline:
                raise AssertionError("connections still open %.0fs after the kill" % timeout)
            self.step(0.05)

    def close(self):
        for p in self.peers():
            p.close()


# ----------------------------------------------------------------------
# after a restart: drain, then count


def read_packets(c, n, timeout=30.0):
    """Reads n packets from a gmtest.Conn; returns [(name, payload)]."""
    out = []
    deadline = time.time() + timeout
    buf = c.buf
    off = 0
    while len(out) < n:
        if len(buf) - off >= 12:
            ptype, size = struct.unpack(">II", buf[off + 4:off + 12])
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


def drain(s, expect_jobs):
    """One worker registers, sleeps, is woken (when jobs are expected) and
    grabs every runnable job in turn, completing each.  Returns the jobs in
    the order it got them, [(handle, function, unique, data, time)], and whether
    it was woken."""
    w = s.conn(timeout=30)
    w.send(b"".join(packet("CAN_DO", f) for f in FUNCS) + packet("PRE_SLEEP"))
    woken = True
    try:
        p = w.recv_packet(timeout=10.0 if expect_jobs else 0.3)
        if p.name != "NOOP":
            fail("sleeping worker got %r instead of NOOP" % p)
    except (TimeoutError, socket.timeout):
        woken = False
    got = []
    w.send(packet("GRAB_JOB_UNIQ"))
    while True:
        [(name, data)] = read_packets(w, 1)
        if name == "NOOP":
            continue
        if name == "NO_JOB":
            break
        if name != "JOB_ASSIGN_UNIQ":
            fail("draining worker got %s %r" % (name, data[:80]))
        h, fn, unique, payload = data.split(b"\0", 3)
        got.append((h, fn, unique, payload, time.time()))
        w.send(packet("WORK_COMPLETE", h, b"") + packet("GRAB_JOB_UNIQ"))
    w.send(packet("ECHO_REQ", "end"))
    w.expect("ECHO_RES")
    w.close()
    return got, woken


def status_totals(s):
    """admin status: {function: (total, running, workers)}."""
    with s.conn() as a:
        out = {}
        for line in a.admin("status").decode().splitlines():
            f = line.split("\t")
            if len(f) == 4:
                out[f[0]] = tuple(int(x) for x in f[1:])
        return out


def get_status(s, handles):
    """GET_STATUS for each handle, pipelined: {handle: (known, running)}."""
    out = {}
    if not handles:
        return out
    with s.conn(timeout=30) as c:
        for i in range(0, len(handles), 500):
            chunk = handles[i:i + 500]
            c.send(b"".join(packet("GET_STATUS", h) for h in chunk))
            for h, (name, data) in zip(chunk, read_packets(c, len(chunk))):
                f = data.split(b"\0")
                if name != "STATUS_RES" or f[0] != h:
                    fail("GET_STATUS %r: got %s %r" % (h, name, data[:80]))
                out[h] = (f[1] == b"1", f[2] == b"1")
    return out


class Check:
    """What one restart showed; `strict` backends fail on loss."""

    def __init__(self, reg, strict):
        self.reg = reg
        self.strict = strict
        self.failures = []
        self.reports = []
        self.refused_stored = []
        self.c = collections.Counter()

    def bad(self, msg):
        self.failures.append(msg)

    def run(self, s, t_kill, drained, woken, window=COMMIT_WINDOW):
        """window: how long before t_kill a completion may have been sent
        and still not be committed (-1: a clean stop, nothing may run again)."""
        reg, c = self.reg, self.c
        seen = collections.Counter()
        order = []
        for h, fn, unique, data, t_done in drained:
            c["drained"] += 1
            j = reg.by_data.get(data)
            if j is None:
                claimed = reg.identify(data)
                if claimed is not None:
                    self.bad("corrupted job: %r %r %r %r (submitted as %r)" % (h, fn, unique, data[:60],
                                                                               claimed.data[:60]))
                    c["corrupted"] += 1
                else:
                    self.bad("job never submitted: %r %r %r %r" % (h, fn, unique, data[:60]))
                    c["never_submitted"] += 1
                continue
            seen[j] += 1
            order.append(j)
            if j.lost and seen[j] == 1:
                c["lost_then_found"] += 1
            if not j.sent:
                self.bad("%s appeared but was never sent" % j.key)
                c["never_submitted"] += 1
            if (fn, unique) != (j.fn, j.unique):
                self.bad("%s replayed as %r/%r, submitted as %r/%r" % (j.key, fn, unique, j.fn, j.unique))
                c["corrupted"] += 1
            if j.handle is not None and h != j.handle:
                self.bad("%s replayed with handle %r, acknowledged as %r" % (j.key, h, j.handle))
                c["corrupted"] += 1
            if j.kind == "future":
                self.bad("future epoch job %s ran after the restart" % j.key)
            if seen[j] > 1:
                continue
            if j.completions:
                age = t_kill - max(j.completions)
                if age > window:
                    msg = ("%s ran again although its WORK_COMPLETE was sent %.2fs before the kill/stop"
                           % (j.key, age))
                    (self.bad if self.strict else self.reports.append)(msg)
                    c["replayed_old"] += 1
                else:
                    c["rerun"] += 1
                    c["rerun_max_ms"] = max(c["rerun_max_ms"], int(age * 1000))
            elif j.handle is None:
                c["unacked_survivors"] += 1
                if j.error is not None:
                    c["refused_but_stored"] += 1
                    self.refused_stored.append(j)
        # the bound: no more re-runs than completions sent in the window
        c["completions_in_window"] = sum(1 for j in reg.jobs for t in j.completions
                                         if 0 <= t_kill - t <= window)
        if c["rerun"] > c["completions_in_window"]:
            self.bad("%d jobs ran again, more than the %d completions sent in the last %.1fs before the kill"
                     % (c["rerun"], c["completions_in_window"], window))
        for j, n in seen.items():
            if n > 1:
                c["duplicates"] += n - 1
                self.bad("%s delivered %d times after the restart" % (j.key, n))
        # what should have been there
        for j in reg.jobs:
            if j.kind == "future" or j.lost or j.handle is None or j.completions or j in seen:
                continue
            j.lost = True
            c["lost"] += 1
            msg = "acknowledged %s (%s, %s, handle %r) lost" % (j.key, j.kind, j.fn.decode(), j.handle)
            (self.bad if self.strict else self.reports.append)(msg)
        # priority order as one worker received it
        worst = -1
        for i, j in enumerate(order):
            if j.prio < worst:
                c["order_inversions"] += 1
                if c["order_inversions"] == 1:
                    self.bad("priority order broken: %s (%s) came after a lower-priority job, at #%d of %d"
                             % (j.key, j.kind, i, len(order)))
            worst = max(worst, j.prio)
        if order and not woken:
            self.bad("the sleeping worker was not woken although %d jobs were queued" % len(order))
        # the drain completed them: a later restart must not show them again
        for h, fn, unique, data, t_done in drained:
            j = reg.by_data.get(data)
            if j is not None:
                j.completions.append(t_done)
        self.check_futures(s)

    def check_futures(self, s):
        reg, c = self.reg, self.c
        fut = [j for j in reg.jobs if j.kind == "future" and j.sent]
        acked = [j for j in fut if j.handle is not None and not j.lost]
        known = get_status(s, [j.handle for j in acked])
        missing = [j for j in acked if not known[j.handle][0]]
        for j in missing:
            j.lost = True
        c["future_acked"] = len(acked)
        c["future_missing"] = len(missing)
        if missing:
            msg = "%d acknowledged future epoch jobs are gone, e.g. %s" % (len(missing), missing[0].key)
            (self.bad if self.strict else self.reports.append)(msg)
        st = status_totals(s)
        total = sum(st.get(f, (0, 0, 0))[0] for f in FUNCS)
        running = sum(st.get(f, (0, 0, 0))[1] for f in FUNCS)
        c["future_present"] = total
        if running:
            self.bad("%d jobs still running after the drain" % running)
        lo = len(acked) - len(missing)
        if not (lo <= total <= len(fut)):
            self.bad("%d jobs left after the drain; expected the future epoch jobs: at least %d "
                     "acknowledged, at most %d submitted" % (total, lo, len(fut)))


def summary(c):
    keys = ("drained", "lost", "rerun", "completions_in_window", "rerun_max_ms", "replayed_old", "duplicates",
            "unacked_survivors", "refused_but_stored", "corrupted", "never_submitted",
            "order_inversions", "lost_then_found", "future_acked", "future_missing", "future_present")
    return ", ".join("%s %d" % (k, c[k]) for k in keys if k in c or k in ("lost", "rerun", "duplicates"))


# ----------------------------------------------------------------------
# crash rounds


def submit_all(s, reg, jobs, rng, timeout=60):
    """Submits jobs with nobody working (no kill); returns the Load."""
    load = Load(s.port, reg, rng)
    for i in range(4):
        load.clients.append(Client(s.port, load, jobs[i::4], window=64))
    deadline = time.time() + timeout
    while not all(c.done() for c in load.clients):
        if time.time() > deadline:
            fail("%d submissions unanswered after %ds" % (load.outstanding(), timeout))
        load.step()
    load.close()
    return load


def crash_rounds(name, args, strict):
    """ROUNDS rounds of load + SIGKILL + restart + drain + count on one
    storage; then the jobs the kills kept from being sent are submitted,
    and a clean stop and start must show exactly the jobs left."""
    rng = random.Random("%d-%s" % (SEED, name))
    note("seed %d (GMTEST_SEED=%d reproduces the job mix and kill points); %s: %d rounds of %d jobs"
         % (SEED, SEED, name, ROUNDS, JOBS_PER_ROUND))
    reg = Registry(name)
    failures = []
    totals = collections.Counter()
    srv_args = list(args) + ["--job-handle-prefix", PREFIX]
    s = Server(*srv_args, log_level=LOG_LEVEL).start(wait=60)
    carry = []      # jobs a kill kept from being sent: they go in the next round
    try:
        for rnd in range(1, ROUNDS + 1):
            jobs = carry + reg.make_jobs(rng, rnd, JOBS_PER_ROUND)
            reused0 = len(reg.reused)
            load = Load(s.port, reg, rng)
            # submitters pace themselves so that the workers complete a good
            # share while the kill can still land in the middle of submitting
            rate = rng.uniform(3000, 8000)
            wrate = rate * rng.uniform(0.1, 0.35)
            nclients = 4
            for i in range(nclients):
                load.clients.append(Client(s.port, load, jobs[i::nclients], window=rng.choice((32, 64, 128)),
                                           rate=rate / nclients))
            for _ in range(2):
                load.workers.append(Worker(s.port, load, FUNCS, hold=0.01, rate=wrate / 2))
            threshold = rng.randint(len(jobs) // 10, len(jobs))
            delay = rng.uniform(0.0, 0.2)
            kill_at = None
            deadline = time.time() + 60
            while True:
                load.step()
                now = time.time()
                if kill_at is None and (len(load.acks) >= threshold or all(c.done() for c in load.clients)):
                    kill_at = now + delay
                if kill_at is not None and now >= kill_at:
                    break
                if now > deadline:
                    fail("round %d: only %d of %d jobs acknowledged in 60s"
                         % (rnd, len(load.acks), threshold))
            in_flight = load.outstanding()
            acks_seen = len(load.acks)
            recent = sum(1 for t in load.completions if t > now - 0.1)
            t_kill = time.time()
            lag = load.commit_lag(t_kill)
            rc = s.stop(sig=signal.SIGKILL)
            if rc != -signal.SIGKILL:
                fail("round %d: server exited with %s before the kill" % (rnd, rc))
            load.read_to_eof()
            load.close()
            carry = [j for j in jobs if not j.sent]
            sent = sum(1 for j in jobs if j.sent)
            acked = sum(1 for j in jobs if j.handle is not None)
            refused = sum(1 for j in jobs if j.error is not None)
            completed = sum(1 for j in jobs if j.completions)
            held = sum(len(w.held) for w in load.workers)
            s = Server(*srv_args, log_level=LOG_LEVEL).start(wait=60)
            expect = any(j.handle is not None and not j.completions and j.kind != "future" and not j.lost
                         for j in reg.jobs)
            drained, woken = drain(s, expect)
            chk = Check(reg, strict)
            chk.run(s, t_kill, drained, woken, window=COMMIT_WINDOW + lag)
            for p in load.problems + reg.problems:
                chk.bad(p)
            reg.problems = []
            c = chk.c
            note("%s round %d: kill -9 %.0f ms after ack #%d (%.2fs into the round), with %d "
                 "submissions unanswered and %d completions sent in the last 100 ms; sent %d (%d left "
                 "for later), acknowledged %d, refused %d, completed %d, held running %d; commit lag %.0f ms"
                 % (name, rnd, delay * 1000, threshold, t_kill - load.clients[0].t0, in_flight, recent,
                    sent, len(carry), acked, refused, completed, held, lag * 1000))
            note("%s round %d after restart: %s" % (name, rnd, summary(c)))
            if len(reg.reused) > reused0:
                h, old, new = reg.reused[reused0]
                note("%s round %d: %d handles of jobs from before the last restart given again to "
                     "new jobs, e.g. %s (%s, then %s)"
                     % (name, rnd, len(reg.reused) - reused0, h.decode(), old.key, new.key))
                totals["handles_reused"] += len(reg.reused) - reused0
            for r in chk.reports[:5]:
                note("%s round %d: %s" % (name, rnd, r))
            if len(chk.reports) > 5:
                note("... and %d more" % (len(chk.reports) - 5))
            totals.update({"acked": acked, "sent": sent, "completed": completed, "killed_acks": acks_seen})
            totals.update(dict((k, v) for k, v in c.items() if not k.startswith("future")
                               and k not in ("rerun_max_ms", "completions_in_window")))
            failures += ["round %d: %s" % (rnd, f) for f in chk.failures]
        # the jobs the last kill kept from being sent, with nobody working
        reused0 = len(reg.reused)
        load = submit_all(s, reg, carry, rng)
        totals["handles_reused"] += len(reg.reused) - reused0
        totals.update({"acked": sum(1 for j in carry if j.handle is not None), "sent": len(carry)})
        failures += load.problems + reg.problems
        if load.errors:
            failures.append("%d submissions refused with no crash: %r" % (len(load.errors), load.errors[0]))
        # a clean stop and start: the drains' completions stay done, the
        # rest is there once
        rc = s.stop()
        if rc != 0:
            failures.append("server exited with %s on SIGTERM" % rc)
        t_stop = time.time()
        s = Server(*srv_args, log_level=LOG_LEVEL).start(wait=60)
        drained, woken = drain(s, bool(carry))
        chk = Check(reg, strict)
        chk.run(s, t_stop, drained, woken, window=-1)   # a clean stop: no re-run allowed
        note("%s after the last %d jobs and a clean restart: %s" % (name, len(carry), summary(chk.c)))
        failures += ["clean restart: %s" % f for f in chk.failures]
        for r in chk.reports[:5]:
            note("%s clean restart: %s" % (name, r))
        totals.update(dict((k, v) for k, v in chk.c.items() if not k.startswith("future")
                           and k not in ("rerun_max_ms", "completions_in_window")))
        note("%s total: %s" % (name, ", ".join("%s %d" % kv for kv in sorted(totals.items()))))
        if totals["sent"] != ROUNDS * JOBS_PER_ROUND:
            failures.append("%d jobs submitted, not %d" % (totals["sent"], ROUNDS * JOBS_PER_ROUND))
    finally:
        rc = s.stop()
    if rc != 0:
        failures.append("server exited with %s on SIGTERM" % rc)
    if failures:
        fail("%d problems:\n%s" % (len(failures), "\n".join(failures[:40])))
    return totals


# a throwaway PostgreSQL, MariaDB, Redis or memcached for a with-block, or a skip
service = services.running


@test
def test_sqlite_kill9_under_load_keeps_every_acknowledged_job_once_in_priority_order():
    d = tempfile.mkdtemp(prefix="gmtest-crash-")
    crash_rounds("sqlite", ["-q", "libsqlite3", "--libsqlite3-db", os.path.join(d, "queue.db")], strict=True)
    shutil.rmtree(d, ignore_errors=True)


@test
def test_postgres_kill9_under_load_keeps_every_acknowledged_job_once_in_priority_order():
    with service(services.Postgres) as pg:
        crash_rounds("postgres", ["-q", "Postgres", "--libpq-conninfo", pg.conninfo], strict=True)


@test
def test_mysql_kill9_under_load_keeps_every_acknowledged_job_once_in_priority_order():
    with service(services.MariaDB) as my:
        crash_rounds("mysql", ["-q", "MySQL"] + my.args(), strict=True)


@test
def test_redis_kill9_under_load_keeps_every_acknowledged_job_once_in_priority_order():
    with service(services.Redis) as rd:
        crash_rounds("redis", ["-q", "redis", "--redis-port", str(rd.port)], strict=True)


@test
def test_memcached_kill9_under_load_reports_losses_and_never_duplicates_or_corrupts():
    with service(services.Memcached) as mc:
        t = crash_rounds("memcached", ["-q", "libmemcached", "--libmemcached-servers", mc.servers],
                         strict=False)
        note("memcached lost %d of %d acknowledged jobs (plus future epoch jobs, see above)"
             % (t["lost"], t["acked"]))


@test
def test_tokyocabinet_kill9_under_load_keeps_every_acknowledged_job_once_in_priority_order():
    d = tempfile.mkdtemp(prefix="gmtest-crash-")
    crash_rounds("tokyocabinet", ["-q", "libtokyocabinet", "--libtokyocabinet-file", os.path.join(d, "queue.tch")],
                 strict=True)
    shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------
# The database restarted under load


def db_restart_under_load(db, args, stop, start, rng, servers, failures):
    """The body of the database restart tests: db names it ("PostgreSQL"),
    args are the server's queue options, stop() and start() take the
    database down and up.  Appends what went wrong to failures and the
    servers it starts to servers."""
    srv_args = list(args) + ["--job-handle-prefix", PREFIX]
    s = Server(*srv_args, log_level=LOG_LEVEL)
    servers.append(s)
    s.start(wait=60)
    reg = Registry("pgr")
    mix = tuple((k, w) for k, w in MIX if k != "future")
    jobs = reg.make_jobs(rng, 1, 50000, mix=mix)   # 2,000/s for 25 s at most
    load = Load(s.port, reg, rng)
    for i in range(4):
        load.clients.append(Client(s.port, load, jobs[i::4], window=32, rate=500))
    # workers serve crash_a only (crash_b jobs stay queued to the end),
    # slower than the submitters, so that they have a backlog to
    # complete while the database is down
    for _ in range(2):
        load.workers.append(Worker(s.port, load, FUNCS[:1], rate=200))
    fgw = Worker(s.port, load, [FG_FUNC], result=lambda d: d[::-1])
    fgc = FgClient(s.port, load)
    load.workers.append(fgw)
    load.fg.append(fgc)

    times = {}

    def restart_db():
        time.sleep(1.5)
        times["stop"] = time.time()
        stop()      # the service's restart(), step by step, for the timestamps
        times["down"] = time.time()
        time.sleep(1.0)
        times["start"] = time.time()
        start()
        times["up"] = time.time()

    th = threading.Thread(target=restart_db, daemon=True)
    th.start()
    deadline = time.time() + 60
    while True:
        load.step()
        now = time.time()
        if "up" in times:
            after = sum(1 for t in load.acks if t > times["up"])
            if after >= 300 and now > times["up"] + 1.0:
                break
            if now > times["up"] + 15:
                failures.append("writes did not resume: %d acknowledgements in the 15s after "
                                "%s came back" % (after, db))
                break
        if now > deadline:
            fail("%s restart did not finish" % db)
    th.join()
    # quiesce: no more submissions; every answer; workers finish
    for c in load.clients:
        c.todo.clear()
    fgc.stopping = True
    for w in load.workers:
        w.stop()
    deadline = time.time() + 30
    while (load.outstanding() or fgc.cur is not None or not all(w.stopped for w in load.workers)):
        if time.time() > deadline:
            fail("load did not quiesce: %d unanswered submissions" % load.outstanding())
        load.step(0.01)
    load.close()
    sent = [j for j in jobs if j.sent]
    acked = [j for j in sent if j.handle is not None]
    refused = [j for j in sent if j.error is not None]
    completed = [j for j in acked if j.completions]
    codes = collections.Counter(e.split(b"\0", 1)[0] for _, e in load.errors)
    note("%s down from +%.2fs to +%.2fs (restart took %.2fs)" % (
        db, times["stop"] - load.clients[0].t0, times["up"] - load.clients[0].t0,
        times["up"] - times["stop"]))
    note("submitted %d, acknowledged %d, refused %d (%s), completed %d, queued %d" % (
        len(sent), len(acked), len(refused), dict(codes), len(completed), len(acked) - len(completed)))
    if refused:
        t_err = [t for t, _ in load.errors]
        note("refusals from +%.2fs to +%.2fs" % (min(t_err) - load.clients[0].t0,
                                                 max(t_err) - load.clients[0].t0))
    if not refused:
        failures.append("no submission was refused while %s was down" % db)
    if set(codes) - {b"QUEUE_ERROR"}:
        failures.append("refusals other than QUEUE_ERROR: %r" % dict(codes))
    if len(acked) + len(refused) != len(sent):
        failures.append("%d submissions got neither JOB_CREATED nor ERROR"
                        % (len(sent) - len(acked) - len(refused)))
    # foreground work went on
    down_fg = [d for d in fgc.done_jobs if d[0] >= times["down"] and d[1] <= times["start"]]
    lat = max((b - a for a, b in fgc.done_jobs), default=0)
    note("%d completions sent while %s was down (their removal waits for it)"
         % (sum(1 for t in load.completions if times["stop"] <= t <= times["up"]), db))
    note("foreground jobs: %d done, %d of them submitted and completed while %s was down, "
         "slowest %.0f ms" % (len(fgc.done_jobs), len(down_fg), db, lat * 1000))
    if fgc.bad:
        failures.append("foreground jobs went wrong: %s" % fgc.bad[:3])
    if not down_fg:
        failures.append("no foreground job completed while %s was down" % db)
    if lat > 1.0:
        failures.append("a foreground job took %.2fs: the dispatcher waited for %s?" % (lat, db))
    failures += load.problems + reg.problems
    reg.problems = []
    # before any crash: completed jobs are gone, the others queued once
    known = get_status(s, [j.handle for j in acked])
    wrong = [j for j in acked if known[j.handle][0] != (not j.completions) or known[j.handle][1]]
    if wrong:
        failures.append("%d acknowledged jobs in the wrong state before the kill, e.g. %s: known %s, "
                        "completions %d" % (len(wrong), wrong[0].key, known[wrong[0].handle],
                                           len(wrong[0].completions)))
    st = status_totals(s)
    total = sum(st.get(f, (0, 0, 0))[0] for f in FUNCS)
    if total != len(acked) - len(completed):
        failures.append("status shows %d jobs queued, expected %d (acknowledged minus completed)"
                        % (total, len(acked) - len(completed)))
    # then the crash
    t_kill = time.time()
    rc = s.stop(sig=signal.SIGKILL)
    if rc != -signal.SIGKILL:
        failures.append("server exited with %s before the kill" % rc)
    s = Server(*srv_args, log_level=LOG_LEVEL)
    servers.append(s)
    s.start(wait=60)
    try:
        drained, woken = drain(s, len(acked) > len(completed))
        chk = Check(reg, strict=True)
        chk.run(s, t_kill, drained, woken, window=COMMIT_WINDOW + load.commit_lag(t_kill))
        note("after kill -9 and restart: %s" % summary(chk.c))
        if chk.refused_stored:
            t0 = load.clients[0].t0
            rs = sorted(chk.refused_stored, key=lambda j: j.error_t)
            note("%d jobs refused with %r ran after the restart; refused from +%.3fs to +%.3fs "
                 "(e.g. %s); the first refusal was at +%.3fs"
                 % (len(rs), rs[0].error, rs[0].error_t - t0, rs[-1].error_t - t0, rs[0].key,
                    min(t for t, _ in load.errors) - t0))
        failures += ["after the kill: %s" % f for f in chk.failures]
    finally:
        rc = s.stop()
    if rc != 0:
        failures.append("server exited with %s on SIGTERM" % rc)


def restart_test(cls, db, seed_tag, args, stop, start):
    """Runs db_restart_under_load on a throwaway server of class cls;
    args(svc), stop(svc) and start(svc) say how to use, stop and start it."""
    rng = random.Random("%d-%s" % (SEED, seed_tag))
    note("seed %d" % SEED)
    failures = []
    with service(cls) as svc:
        servers = []
        try:
            db_restart_under_load(db, args(svc), lambda: stop(svc), lambda: start(svc), rng, servers, failures)
        finally:
            for srv in servers:     # only after a failure: the test stops its servers itself
                if srv.proc is not None and srv.proc.poll() is None:
                    srv.stop()
    if failures:
        fail("%d problems:\n%s" % (len(failures), "\n".join(str(f) for f in failures[:40])))


@test
def test_postgres_restart_under_load_refuses_then_resumes_and_loses_or_duplicates_nothing():
    restart_test(services.Postgres, "PostgreSQL", "pgrestart", lambda pg: ["-q", "Postgres", "--libpq-conninfo", pg.conninfo],
                 lambda pg: pg.stop("immediate"), lambda pg: pg.start())


@test
def test_mysql_restart_under_load_refuses_then_resumes_and_loses_or_duplicates_nothing():
    restart_test(services.MariaDB, "MariaDB", "myrestart", lambda my: ["-q", "MySQL"] + my.args(),
                 lambda my: my.stop(kill=True), lambda my: my.start())


@test
def test_redis_restart_under_load_refuses_then_resumes_and_loses_or_duplicates_nothing():
    restart_test(services.Redis, "Redis", "redisrestart", lambda rd: ["-q", "redis", "--redis-port", str(rd.port)],
                 lambda rd: rd.stop(), lambda rd: rd.start())


@test
def test_handle_of_a_completed_job_is_not_given_again_after_a_restart():
    # design 9: "job handles after a restart: handles are never reused".  The
    # job with the highest handle completes, the server stops cleanly and
    # starts again: the next job must get a handle never given before.
    d = tempfile.mkdtemp(prefix="gmtest-crash-")
    args = ["-q", "libsqlite3", "--libsqlite3-db", os.path.join(d, "queue.db"), "--job-handle-prefix", PREFIX]
    s = Server(*args).start()
    try:
        with s.conn() as c, s.conn() as w:
            c.send_packet("SUBMIT_JOB_LOW_BG", "crash_h", "", "a")
            ha = c.expect("JOB_CREATED").data
            c.send_packet("SUBMIT_JOB_HIGH_BG", "crash_h", "", "b")
            hb = c.expect("JOB_CREATED").data
            w.send(packet("CAN_DO", "crash_h") + packet("GRAB_JOB"))
            w.expect_packet("JOB_ASSIGN", hb, "crash_h", "b")
            w.send(packet("WORK_COMPLETE", hb, "") + packet("ECHO_REQ", "x"))
            w.expect("ECHO_RES")
    finally:
        rc = s.stop()
    assert rc == 0, "gearmand exited with %s on SIGTERM" % rc
    with Server(*args) as s:
        with s.conn() as c, s.conn() as w:
            c.send_packet("SUBMIT_JOB_BG", "crash_h", "", "c")
            hc = c.expect("JOB_CREATED").data
            w.send(packet("CAN_DO", "crash_h") + packet("GRAB_JOB") + packet("GRAB_JOB"))
            a = w.expect("JOB_ASSIGN").fields(3)
            b = w.expect("JOB_ASSIGN").fields(3)
            assert sorted([a[2], b[2]]) == [b"a", b"c"], (a, b)
            for h in (a[0], b[0]):
                w.send_packet("WORK_COMPLETE", h, "")
            w.send_packet("ECHO_REQ", "x")
            w.expect("ECHO_RES")
            shutil.rmtree(d, ignore_errors=True)
            if hc in (ha, hb):
                fail("after a restart the new job got handle %r, already given to job %r before it"
                     % (hc, "a" if hc == ha else "b (completed)"))


if __name__ == "__main__":
    gmtest.main()
