#!/usr/bin/env python3
"""Interop: several independent servers side by side, with Debian's
libgearman as client and worker (docs/ha.md, "N independent servers").

Three gearmand, each with its own SQLite queue and its own handle prefix
(H:s0, H:s1, H:s2, so a handle says which server acknowledged the job).
Two gmclient workers are given all three (gearman_worker_add_servers) and
serve them all (with gearman_worker_set_timeout, without which an idle
libgearman worker never connects again to a server it lost); three gmclient clients are each given all three
(gearman_client_add_servers), in rotated orders so that every server gets
jobs, and submit background jobs one at a time (gmclient's "bgloop": a
refused or lost submission is tried again, as an application would).  Once
one server has acknowledged a seeded random number of jobs it is killed
with SIGKILL.  Then:

  - the clients carry on through the other servers (jobs acknowledged after
    the kill, none by the dead one) and finish;
  - every job acknowledged by a surviving server runs, while the killed one
    is still down (the workers go on serving the others);
  - the killed server is started again on its queue: every job it had
    acknowledged and that had not run before the kill runs now, with the
    handle it was acknowledged with; nothing acknowledged is lost;
  - no worker sees a job that was never submitted; re-runs (a job run
    twice: at-least-once) are counted in a TAP comment.

GMTEST_SEED reproduces the kill point; GMTEST_SERVERS_JOBS (default 600)
is the number of jobs per client.
"""

import collections
import os
import random
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import gmtest  # noqa: E402
from gmtest import Server, fail  # noqa: E402
import interop_lib  # noqa: E402
from interop_lib import Proc, admin_status, kill_all, need_gmclient, test  # noqa: E402

GMCLIENT = interop_lib.GMCLIENT
SEED = int(os.environ.get("GMTEST_SEED") or time.time())
JOBS = int(os.environ.get("GMTEST_SERVERS_JOBS") or 600)
FUNC = "spread"


def note(msg):
    for line in msg.splitlines():
        print("# " + line, flush=True)


def server(d, i, port=None):
    """Server i of the three: its own SQLite queue in d, handles H:s<i>."""
    return Server("-q", "libsqlite3", "--libsqlite3-db", os.path.join(d, "q%d.db" % i),
                  "--job-handle-prefix", "H:s%d" % i, port=port, log_level="WARNING")


def server_list(servers):
    return ",".join("127.0.0.1:%d" % s.port for s in servers)


def acks(clients, upto=None):
    """{workload: handle} of every ACK line (of each client's first upto[i]
    lines, when given)."""
    out = {}
    for i, c in enumerate(clients):
        lines = c.lines[:upto[i]] if upto else list(c.lines)
        for line in lines:
            if line.startswith("ACK "):
                _, w, h = line.split(" ")
                out[w] = h
    return out


def runs(workers):
    """[(workload, handle)] of every job the workers got, in no set order."""
    out = []
    for w in workers:
        for line in list(w.lines):
            if line.startswith("JOB "):
                parts = line.split(" ")
                out.append((parts[4], parts[2]))
    return out


def wait_run(workers, want, timeout, what, server=None):
    """Waits until every workload in want has run; fails naming what is
    missing (and what `status` of server shows)."""
    deadline = time.time() + timeout
    while True:
        ran = {w for w, _ in runs(workers)}
        missing = sorted(set(want) - ran)
        if not missing:
            return
        if time.time() > deadline:
            fail("%d %s never ran within %.0fs, e.g. %s%s"
                 % (len(missing), what, timeout, missing[:5],
                    "; the server's status: %r" % admin_status(server) if server else ""))
        time.sleep(0.05)


def by_server(handles):
    return collections.Counter(h.rsplit(":", 1)[0] for h in handles)


@test
def test_three_servers_one_killed_under_load_others_carry_on_and_nothing_acknowledged_is_lost():
    need_gmclient()
    rng = random.Random("%d-servers" % SEED)
    threshold = rng.randint(JOBS // 6, JOBS // 2)
    note("seed %d (GMTEST_SEED=%d reproduces it): %d jobs per client, a server is killed after "
         "acknowledging %d" % (SEED, SEED, JOBS, threshold))
    d = tempfile.mkdtemp(prefix="gmtest-servers-")
    servers = [server(d, i).start() for i in range(3)]
    everyone = server_list(servers)
    workers, clients = [], []
    try:
        # the workers sleep 2 ms a job, so the servers hold a backlog when one dies
        workers = [Proc([GMCLIENT, "worker", everyone, "-", FUNC, "-s", "2", "-T", "200", "-i", "w%d" % i],
                        name="worker %d" % i) for i in range(2)]
        for s in servers:
            interop_lib.wait_workers(s, FUNC, 2)
        for k in range(3):
            order = servers[k:] + servers[:k]
            clients.append(Proc([GMCLIENT, "client", server_list(order), "-", "bgloop", FUNC, "c%d" % k,
                                 str(JOBS)], name="client %d" % k))
        # kill the first server to reach the threshold, while the clients run
        deadline = time.time() + 60
        while True:
            count = by_server(acks(clients).values())
            top, n = count.most_common(1)[0] if count else ("", 0)
            if n >= threshold:
                break
            if time.time() > deadline or not any(c.running() for c in clients):
                fail("no server reached %d acknowledgements: %r" % (threshold, count))
            time.sleep(0.002)
        victim = int(top[len("H:s"):])
        dead = "H:s%d:" % victim
        rc = servers[victim].stop(sig=signal.SIGKILL)
        assert rc == -signal.SIGKILL, "server %d exited with %s before the kill" % (victim, rc)
        note("killed server %d after %d acknowledgements (%r so far)" % (victim, n, dict(count)))
        for c in clients:
            rc = c.wait(60)
            if rc != 0:
                fail("%s exited %s:\n%s" % (c.name, rc, "\n".join(c.lines[-20:])))
        acked = acks(clients)
        nacks = [line for c in clients for line in c.lines if line.startswith("NACK ")]
        note("acknowledged %d (%r); %d submissions refused or lost (%s)"
             % (len(acked), dict(by_server(acked.values())), len(nacks),
                ", ".join(sorted(set(line.split(" ")[2] for line in nacks)))))
        if len(acked) != 3 * JOBS:
            fail("%d jobs acknowledged, not %d" % (len(acked), 3 * JOBS))
        # the clients that were on the killed server went on elsewhere
        moved = 0
        for c in clients:
            handles = [line.split(" ")[2] for line in c.lines if line.startswith("ACK ")]
            last = max((i for i, h in enumerate(handles) if h.startswith(dead)), default=None)
            if last is None:
                continue
            moved += 1
            if last == len(handles) - 1:
                fail("%s: its last job was acknowledged by the killed server" % c.name)
            if any(h.startswith(dead) for h in handles[last + 1:]):
                fail("%s: acknowledged by the killed server after others" % c.name)
        if not moved:
            fail("no client had jobs on the killed server")
        # the others carry on: everything they acknowledged runs with the
        # killed server still down
        survivors = [w for w, h in acked.items() if not h.startswith(dead)]
        wait_run(workers, survivors, 30, "jobs acknowledged by the surviving servers")
        # the killed server, back on its queue, replays what it acknowledged
        # and had not run (seconds after the kill: the workers' output is read)
        theirs = {w: h for w, h in acked.items() if h.startswith(dead)}
        ran = {w for w, _ in runs(workers)}
        pending = {w: h for w, h in theirs.items() if w not in ran}
        if not pending:
            fail("every job of the killed server had run before the kill: no replay to check "
                 "(the workers were faster than the clients)")
        seen = [len(w.lines) for w in workers]
        servers[victim] = server(d, victim, port=servers[victim].port).start(wait=30)
        wait_run(workers, pending, 30, "jobs acknowledged by the killed server", servers[victim])
        replayed = collections.defaultdict(set)
        for w, n in zip(workers, seen):
            for line in w.lines[n:]:
                if line.startswith("JOB "):
                    parts = line.split(" ")
                    replayed[parts[4]].add(parts[2])
        wrong = [(w, h, replayed[w]) for w, h in pending.items() if h not in replayed[w]]
        if wrong:
            fail("%d jobs ran after the restart under another handle than acknowledged, e.g. %r"
                 % (len(wrong), wrong[:3]))
        got = runs(workers)
        wrong = [(w, h, theirs[w]) for w, h in got if w in pending and h != theirs[w]
                 and not any(h2 == theirs[w] for w2, h2 in got if w2 == w)]
        if wrong:
            fail("%d replayed jobs ran under another handle than acknowledged, e.g. %r" % (len(wrong), wrong[:3]))
        submitted = {"c%d-%d" % (k, i) for k in range(3) for i in range(JOBS)}
        strange = sorted({w for w, _ in got} - submitted)
        if strange:
            fail("workers got jobs that were never submitted: %r" % strange[:5])
        reruns = sum(n - 1 for n in collections.Counter(w for w, _ in got).values())
        note("server %d had %d jobs acknowledged, %d had not run when it came back: all ran then; "
             "%d jobs ran more than once (at least once)" % (victim, len(theirs), len(pending), reruns))
        for s in servers:
            deadline = time.time() + 10
            while admin_status(s).get(FUNC, (0,))[0] != 0:
                if time.time() > deadline:
                    fail("server %d still holds jobs: %r" % (servers.index(s), admin_status(s)))
                time.sleep(0.05)
    finally:
        kill_all(clients + workers)
        rcs = [s.stop() for s in servers]
        shutil.rmtree(d, ignore_errors=True)
    assert rcs == [0, 0, 0], "exit statuses on SIGTERM: %r" % rcs


if __name__ == "__main__":
    gmtest.main()
