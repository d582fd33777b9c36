#!/usr/bin/env python3
"""Durable queues end to end (design section 5, reference section 5, design
section 9's rows on empty unique keys, handles after a restart and backend
errors): the real gearmand with -q libsqlite3, -q Postgres, -q MySQL,
-q redis, -q libmemcached and -q libtokyocabinet.

Each behaviour runs once per backend (the test's name ends in the backend).
What the server stored is read straight from storage: the sqlite file with
Python's sqlite3 module, the PostgreSQL table with psql, the MariaDB table
with mariadb (services.MariaDB.sql), Redis' keys with SCAN and HMGET
(services.Redis.pipeline), memcached's keys with "lru_crawler metadump"
(which lists keys without fetching them, so it does not disturb memcached's
LRU; values are not read), the Tokyo Cabinet file through libtokyocabinet
(tests/lib/tcfile.py).  PostgreSQL, MariaDB, Redis and memcached are
throwaway servers started by this file (tests/lib/services.py); each test
uses its own table (or key prefix, or its own memcached, or its own file).
"""

import atexit
import datetime
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gmtest  # noqa: E402
import services  # noqa: E402
import tcfile  # noqa: E402
from gmtest import Server, fail, submit, test, wait_until, sync  # noqa: E402

PREFIX = "H:test"
DEBIAN_GEARMAND = "/usr/sbin/gearmand"


def H(n):
    return "%s:%d" % (PREFIX, n)


def hnum(handle):
    """The counter of a handle "H:test:<n>" (None for other handles)."""
    if isinstance(handle, bytes):
        handle = handle.decode()
    head, _, n = handle.rpartition(":")
    return int(n) if head == PREFIX and n.isdigit() else None


# ----------------------------------------------------------------------
# Services, started once for the whole file

_services = {}


def postgres():
    if "pg" not in _services:
        try:
            _services["pg"] = services.Postgres().start()
        except services.Unavailable as e:
            fail("PostgreSQL is needed (CI installs it): %s" % e)
    return _services["pg"]


def redis():
    """The file's Redis (appendonly yes, appendfsync always); each test
    uses its own key prefix."""
    if "redis" not in _services:
        try:
            _services["redis"] = services.Redis().start()
        except services.Unavailable as e:
            fail("Redis is needed (CI installs redis-server): %s" % e)
    return _services["redis"]


def memcached():
    """A memcached of the test's own (memcached's LRU state, which decides
    what "stats cachedump" lists, then depends on this test alone)."""
    try:
        return services.Memcached().start()
    except services.Unavailable as e:
        fail("memcached is needed (CI installs it): %s" % e)


def mariadb():
    if "my" not in _services:
        try:
            _services["my"] = services.MariaDB().start()
        except services.Unavailable as e:
            fail("MariaDB is needed (CI installs it): %s" % e)
    return _services["my"]


@atexit.register
def _stop_services():
    for name in ("pg", "redis", "my"):
        if name in _services:
            _services.pop(name).__exit__(None, None, None)


_seq = [0]


def fresh_name(stem):
    _seq[0] += 1
    return "%s%d_%d" % (stem, os.getpid(), _seq[0])


# ----------------------------------------------------------------------
# Storage as the tests see it


class Row:
    """One stored job.  Fields a backend cannot show are None."""

    def __init__(self, handle, function=None, unique=None, priority=None, when=None, data=None):
        self.handle = handle
        self.function = function
        self.unique = unique
        self.priority = priority
        self.when = when
        self.data = data

    def __repr__(self):
        return "Row(%s, %r, %r, prio=%r, when=%r, %r)" % (
            self.handle, self.function, self.unique, self.priority, self.when,
            None if self.data is None else self.data[:40])


class SqliteStore:
    name = "sqlite"
    shows_fields = True

    def __init__(self, table="gearman_queue"):
        self.dir = tempfile.mkdtemp(prefix="gmtest-sqlite-")
        self.db = os.path.join(self.dir, "queue.sqlite")
        self.table = table

    def args(self):
        a = ["-q", "libsqlite3", "--libsqlite3-db", self.db]
        if self.table != "gearman_queue":
            a += ["--libsqlite3-table", self.table]
        return a

    def connect(self):
        con = sqlite3.connect(self.db, timeout=10)
        con.text_factory = bytes
        return con

    def rows(self):
        con = self.connect()
        try:
            got = con.execute('SELECT job_handle, function_name, unique_key, priority, when_to_run, data '
                              'FROM "%s" ORDER BY rowid' % self.table).fetchall()
        finally:
            con.close()
        return [Row(h.decode() if isinstance(h, bytes) else str(h), f, u, p, w,
                    bytes(d) if d is not None else None) for h, f, u, p, w, d in got]

    def insert(self, handle, function, unique, priority, data, when=0):
        con = self.connect()
        con.execute('INSERT INTO "%s" (job_handle, unique_key, function_name, priority, data, when_to_run) '
                    'VALUES (?, ?, ?, ?, ?, ?)' % self.table,
                    (handle, unique.decode(), function.decode(), priority, data, when))
        con.commit()
        con.close()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresStore:
    name = "postgres"
    shows_fields = True

    def __init__(self):
        self.pg = postgres()
        self.table = fresh_name("gmq_")

    def args(self):
        return ["-q", "Postgres", "--libpq-conninfo", self.pg.conninfo, "--libpq-table", self.table]

    def rows(self):
        out = self.pg.psql(
            "SELECT encode(convert_to(job_handle, 'UTF8'), 'hex'), "
            "encode(convert_to(function_name, 'UTF8'), 'hex'), "
            "coalesce(encode(convert_to(unique_key, 'UTF8'), 'hex'), ''), priority, when_to_run, "
            "coalesce(encode(data, 'hex'), '') FROM %s ORDER BY seq" % self.table)
        rows = []
        for line in out.splitlines():
            if not line.strip():
                continue
            h, f, u, p, w, d = line.split("|")
            rows.append(Row(bytes.fromhex(h).decode(), bytes.fromhex(f), bytes.fromhex(u), int(p),
                            int(w) if w else None, bytes.fromhex(d)))
        return rows

    def insert(self, handle, function, unique, priority, data, when=0):
        self.pg.psql("INSERT INTO %s (job_handle, unique_key, function_name, priority, data, when_to_run) "
                     "VALUES ('%s', '%s', '%s', %d, '\\x%s', %d)" % (
                         self.table, handle, unique.decode(), function.decode(), priority, data.hex(), when))

    def down(self):
        """The database goes away (immediate mode: like a crash)."""
        self.pg.stop("immediate")

    def up(self):
        self.pg.start()

    def cleanup(self):
        try:
            self.pg.psql("DROP TABLE IF EXISTS %s" % self.table)
        except RuntimeError:
            pass


class RedisStore:
    name = "redis"
    shows_fields = True

    def __init__(self):
        self.rd = redis()
        self.prefix = fresh_name("gmq")

    def args(self):
        return ["-q", "redis", "--redis-server", "127.0.0.1", "--redis-port", str(self.rd.port),
                "--redis-prefix", self.prefix]

    def job_key(self, handle):
        return ("%s:job:%s" % (self.prefix, handle)).encode()

    def rows(self):
        keys = self.rd.scan(self.prefix + ":job:*")
        got = self.rd.pipeline([("HMGET", k, "function", "unique", "priority", "when", "data", "seq")
                                for k in keys])
        rows = []
        for k, (f, u, p, w, d, seq) in zip(keys, got):
            if f is None and p is None:
                continue    # removed since SCAN listed it
            handle = k[len(self.prefix) + 5:].decode()
            rows.append((int(seq or -1), Row(handle, f, u, int(p), int(w), d)))
        return [r for _, r in sorted(rows, key=lambda x: x[0])]

    def insert(self, handle, function, unique, priority, data, when=0):
        self.rd.command("HSET", self.job_key(handle), "function", function, "unique", unique,
                        "priority", priority, "when", when, "data", data, "seq", 1 << 40)

    def down(self):
        self.rd.stop()      # kill -9

    def up(self):
        self.rd.start()

    def cleanup(self):
        pass                # the keys die with the file's Redis; each test has its own prefix


class MysqlStore:
    name = "mysql"
    shows_fields = True

    def __init__(self):
        self.my = mariadb()
        self.table = fresh_name("gmq_")

    def args(self):
        return ["-q", "MySQL"] + self.my.args() + ["--mysql-table", self.table]

    def rows(self):
        out = self.my.sql("SELECT HEX(job_handle), HEX(function_name), HEX(unique_key), priority, when_to_run, "
                          "HEX(data) FROM `%s` ORDER BY seq" % self.table)
        return [Row(bytes.fromhex(h).decode(), bytes.fromhex(f or ""), bytes.fromhex(u or ""),
                    int(p) if p is not None else None, int(w) if w is not None else None, bytes.fromhex(d or ""))
                for h, f, u, p, w, d in out]

    def insert(self, handle, function, unique, priority, data, when=0):
        self.my.sql("INSERT INTO `%s` (job_handle, unique_key, function_name, priority, data, when_to_run) "
                    "VALUES (X'%s', X'%s', X'%s', %d, X'%s', %d)" % (
                        self.table, handle.encode().hex(), unique.hex(), function.hex(), priority, data.hex(), when))

    def down(self):
        """The database goes away (kill -9: like a crash)."""
        self.my.stop(kill=True)

    def up(self):
        self.my.start()

    def cleanup(self):
        try:
            self.my.sql("DROP TABLE IF EXISTS `%s`" % self.table)
        except RuntimeError:
            pass


def mc_command(servers, data, until=(b"END\r\n",)):
    host, port = servers.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while not buf.endswith(until):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
        return buf


class MemcachedStore:
    name = "memcached"
    shows_fields = False  # keys only: reading values would disturb the LRU

    def __init__(self):
        self.mc = memcached()
        self.prefix = fresh_name("gmq") + "_"

    def args(self):
        return ["-q", "libmemcached", "--libmemcached-servers", self.mc.servers,
                "--libmemcached-prefix", self.prefix]

    def keys(self):
        # "lru_crawler metadump hash" walks memcached's hash table, which
        # items moving between LRU segments cannot make it miss (a walk of
        # the LRUs, "metadump all", missed items stored and read back a
        # moment before).  A crawler busy with somebody else's crawl (the
        # server's replay, memcached's own maintainer) answers BUSY: waited
        # out.  Metadump lines end in "\n"; only the last (END, BUSY, ERROR)
        # in "\r\n".
        deadline = time.time() + 10
        while True:
            out = mc_command(self.mc.servers, b"lru_crawler metadump hash\r\n", until=(b"\r\n",))
            if not out.startswith(b"BUSY") or time.time() > deadline:
                break
            time.sleep(0.01)
        assert out.endswith(b"END\r\n"), "metadump failed: %r" % out[-200:]
        keys = set()
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("key="):
                k = urllib.parse.unquote(line.split()[0][4:])
                # "<prefix>__next_handle" is the server's handle counter, not a job
                if k.startswith(self.prefix) and not k.startswith(self.prefix + "__"):
                    keys.add(k[len(self.prefix):])
        return list(keys)

    def rows(self):
        # memcached keeps no order; the server's handles count up
        return [Row(k) for k in sorted(self.keys(), key=lambda k: (len(k), k))]

    def insert(self, handle, function, unique, priority, data, when=0):
        value = (b"GMQ1" + bytes([priority & 0xff]) + struct.pack(">q", when) +
                 struct.pack(">H", len(function)) + function + bytes([len(unique)]) + unique + data)
        key = (self.prefix + handle).encode()
        r = mc_command(self.mc.servers, b"set %s %d 0 %d\r\n%s\r\n" % (key, priority, len(value), value),
                       until=(b"\r\n",))
        assert r == b"STORED\r\n", r

    def cleanup(self):
        self.mc.stop()


class TokyoStore:
    name = "tokyocabinet"
    shows_fields = True

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gmtest-tc-")
        self.path = os.path.join(self.dir, "queue.tch")

    def args(self):
        return ["-q", "libtokyocabinet", "--libtokyocabinet-file", self.path]

    def rows(self):
        if not os.path.exists(self.path):
            return []
        return [Row(h, f, u, p, w, d) for h, p, w, f, u, d in tcfile.jobs(self.path)]

    def insert(self, handle, function, unique, priority, data, when=0):
        tcfile.put_job(self.path, handle, function, unique, priority, data, when)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


STORES = {"sqlite": SqliteStore, "postgres": PostgresStore, "redis": RedisStore, "memcached": MemcachedStore,
          "mysql": MysqlStore, "tokyocabinet": TokyoStore}
ALL = ("sqlite", "postgres", "redis", "memcached", "mysql", "tokyocabinet")


def per_backend(*names):
    """Registers the decorated fn(store) as one test per backend."""
    def deco(fn):
        for n in names:
            def run(fn=fn, n=n):
                store = STORES[n]()
                try:
                    fn(store)
                finally:
                    store.cleanup()
            run.__name__ = "%s_%s" % (fn.__name__, n)
            test(run)
        return fn
    return deco


# ----------------------------------------------------------------------
# Protocol helpers


def srv(store, *args, **kw):
    return Server("--job-handle-prefix", PREFIX, *store.args(), *args, **kw)


def expect_queue_error(c):
    p = c.recv_packet()
    assert p.name == "ERROR", "expected ERROR QUEUE_ERROR, got %r" % p
    assert p.fields(2)[0] == b"QUEUE_ERROR", p
    return p


def worker(s, *functions):
    w = s.conn()
    for f in functions:
        w.send_packet("CAN_DO", f)
    return w


def grab_uniq(w):
    """GRAB_JOB_UNIQ: (handle, function, unique, data) as str, str, bytes,
    bytes; None on NO_JOB."""
    w.send_packet("GRAB_JOB_UNIQ")
    p = w.recv_packet()
    if p.name == "NO_JOB":
        return None
    assert p.name == "JOB_ASSIGN_UNIQ", p
    h, fn, u, data = p.fields(4)
    return h.decode(), fn.decode(), u, data


def drain(w, complete=True):
    """Grabs (and completes) every job the worker can get now."""
    got = []
    while True:
        j = grab_uniq(w)
        if j is None:
            return got
        got.append(j)
        if complete:
            w.send_packet("WORK_COMPLETE", j[0], "")


def status(c, handle):
    """GET_STATUS: (known, running) as bools."""
    c.send_packet("GET_STATUS", handle)
    p = c.expect("STATUS_RES")
    f = p.fields(5)
    assert f[0].decode() == handle, p
    return f[1] == b"1", f[2] == b"1"


def handles(rows):
    return [r.handle for r in rows]


def restart(s, store, *args):
    """SIGTERM (exit status 0 required), then a new server on the same storage."""
    rc = s.stop()
    assert rc == 0, "gearmand exited with %s; log:\n%s" % (rc, s.log_text()[-3000:])
    return srv(store, *args).start()


def stop_ok(s):
    rc = s.stop()
    assert rc == 0, "gearmand exited with %s; log:\n%s" % (rc, s.log_text()[-3000:])


def next_new_year(now):
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return int(datetime.datetime(t.year + 1, 1, 1, tzinfo=datetime.timezone.utc).timestamp())


# ----------------------------------------------------------------------
# What is stored, and when


@per_backend(*ALL)
def test_background_submits_of_every_kind_are_stored(store):
    now = int(time.time())
    kinds = [
        # ptype, function, unique, data, extra fields, priority, when
        ("SUBMIT_JOB_BG", "fn-bg", b"u-bg", b"bg\0da\xfft\0a", (), 1, 0),
        ("SUBMIT_JOB_HIGH_BG", "fn-bg", b"u-high", b"high", (), 0, 0),
        ("SUBMIT_JOB_LOW_BG", "fn-bg", b"", b"low", (), 2, 0),
        ("SUBMIT_JOB_EPOCH", "fn-epoch", b"u-epoch", b"epoch", (str(now + 3600),), 1, now + 3600),
        # minute 0, hour 0, 1 January: the next New Year, UTC
        ("SUBMIT_JOB_SCHED", "fn-sched", b"u-sched", b"sched", ("0", "0", "1", "1", ""), 1,
         next_new_year(now)),
        ("SUBMIT_REDUCE_JOB_BACKGROUND", "fn-reduce", b"u-reduce", b"reduce", ("reducer", "agg"), 1, 0),
    ]
    with srv(store) as s:
        c = s.conn()
        made = []
        for ptype, fn, u, data, extra, prio, when in kinds:
            h = submit(c, ptype, fn, u, data, *extra)
            made.append(h)
            # JOB_CREATED comes after the commit: the row is there now
            assert h in handles(store.rows()), "%s: %s not stored after JOB_CREATED: %r" % (
                ptype, h, store.rows())
        rows = store.rows()
        assert handles(rows) == made, (made, rows)
        if store.shows_fields:
            for r, (ptype, fn, u, data, extra, prio, when) in zip(rows, kinds):
                assert (r.function, r.unique, r.data) == (fn.encode(), u, data), (ptype, r)
                assert r.priority == prio, "%s stored with priority %r, want %d" % (ptype, r.priority, prio)
                assert r.when == when, "%s stored with run time %r, want %d" % (ptype, r.when, when)


@per_backend(*ALL)
def test_foreground_jobs_are_never_stored(store):
    with srv(store) as s:
        c = s.conn()
        for ptype in ("SUBMIT_JOB", "SUBMIT_JOB_HIGH", "SUBMIT_JOB_LOW"):
            submit(c, ptype, "fg", "u-" + ptype, "data")
        submit(c, "SUBMIT_REDUCE_JOB", "fg", "u-reduce", "data", "reducer", "")
        submit(c, "SUBMIT_JOB", "fg", "", "no unique")
        bg = submit(c, "SUBMIT_JOB_BG", "bg", "u-bg", "data")
        # the background job's commit came after every foreground submit
        assert handles(store.rows()) == [bg], store.rows()
        # a worker runs the foreground jobs: still nothing stored for them
        w = worker(s, "fg")
        assert len(drain(w)) == 5
        sync(w)
        assert handles(store.rows()) == [bg], store.rows()
        # nor at shutdown
        s2 = restart(s, store)
        try:
            assert handles(store.rows()) == [bg], store.rows()
        finally:
            stop_ok(s2)


@per_backend(*ALL)
def test_completed_failed_and_excepted_jobs_leave_storage(store):
    with srv(store) as s:
        c = s.conn()
        made = [submit(c, "SUBMIT_JOB_BG", "done", "u%d" % i, "d%d" % i) for i in range(4)]
        assert handles(store.rows()) == made
        w = worker(s, "done")
        for reply in ("WORK_COMPLETE", "WORK_FAIL", "WORK_EXCEPTION"):
            j = grab_uniq(w)
            if reply == "WORK_FAIL":
                w.send_packet(reply, j[0])
            else:
                w.send_packet(reply, j[0], "result")
        sync(w)
        # DONE records are written after the fact: wait for them
        wait_until(lambda: handles(store.rows()) == made[3:], timeout=5,
                   what="only %s to be stored (have %r)" % (made[3], store.rows()))
        # a running job stays stored until it ends
        j = grab_uniq(w)
        assert j[0] == made[3]
        time.sleep(0.2)
        assert handles(store.rows()) == made[3:], store.rows()
        w.send_packet("WORK_COMPLETE", j[0], "")
        wait_until(lambda: store.rows() == [], timeout=5, what="storage to be empty")


# ----------------------------------------------------------------------
# Restart and replay


# ----------------------------------------------------------------------
# The job lifecycle (docs/lifecycle.md): a retry's wait and its attempts,
# and dead letters, survive a restart


def show_job(c, handle):
    """`show job`: (state, attempts)."""
    r = c.admin("show job %s" % handle)
    line = r.split(b"\n")[0].split(b"\t")
    assert len(line) == 6 and line[0].decode() == handle, r
    return line[3].decode(), int(line[4])


@per_backend(*ALL)
def test_restart_in_the_middle_of_a_backoff_keeps_the_wait_and_the_attempts(store):
    s = srv(store, "--policy", "f:retries=3,backoff=4000").start()
    try:
        c = s.conn()
        h = submit(c, "SUBMIT_JOB_BG", "f", "u1", "payload")
        w = worker(s, "f")
        j = grab_uniq(w)
        assert j[0] == h
        w.send_packet("WORK_FAIL", h)
        sync(w)
        failed_at = time.time()
        assert show_job(c, h) == ("scheduled", 1)
        # the record now holds the retry time (whole seconds, rounded up)
        if store.shows_fields:
            wait_until(lambda: any(r.handle == h and r.when and r.when >= int(failed_at) + 4 for r in store.rows()),
                       timeout=5, what="the retry time to be stored (have %r)" % store.rows())
        else:
            time.sleep(0.5)
        w.close()
        c.close()
        s = restart(s, store)
        c = s.conn()
        assert show_job(c, h) == ("scheduled", 1), "the wait and the attempt count are lost"
        w = worker(s, "f")
        if time.time() < failed_at + 3.5:
            assert grab_uniq(w) is None, "handed out before its retry time"
        j = None
        deadline = time.time() + 10
        while j is None and time.time() < deadline:
            j = grab_uniq(w)
            if j is None:
                time.sleep(0.1)
        assert j is not None and j[0] == h and j[3] == b"payload", j
        assert time.time() >= failed_at + 3.9, "retried %.2f s after the failure" % (time.time() - failed_at)
        assert show_job(c, h) == ("running", 2)
        w.send_packet("WORK_COMPLETE", h, "")
        wait_until(lambda: store.rows() == [], timeout=5, what="storage to be empty")
    finally:
        s.stop()


@per_backend("sqlite", "postgres", "redis", "mysql")
def test_run_time_policies_are_stored_and_the_command_line_wins(store):
    s = srv(store).start()
    try:
        c = s.conn()
        assert c.admin("policy f retries=3 backoff=250") == b"OK\r\n"
        assert c.admin("policy g timeout=9") == b"OK\r\n"
        assert c.admin("policy g concurrency=2") == b"OK\r\n"  # merged, stored again
        assert c.admin("policy h retries=1") == b"OK\r\n"
        assert c.admin("policy h reset") == b"OK\r\n"
        shown = c.admin("show policies")
        assert shown == (b"f\tretries=3\tbackoff=250\tmax_backoff=300000\ttimeout=0\tconcurrency=0\tpaused=0\n"
                         b"g\tretries=0\tbackoff=1000\tmax_backoff=300000\ttimeout=9\tconcurrency=2\tpaused=0\n"
                         b".\n"), shown
        c.close()
        s = restart(s, store)
        c = s.conn()
        assert c.admin("show policies") == shown, "policies after a restart: %r" % c.admin("show policies")
        assert store.rows() == [], "a policy was stored as a job: %r" % store.rows()
        c.close()
        # --policy at start wins over the stored one for its function
        s = restart(s, store, "--policy", "f:retries=7")
        c = s.conn()
        got = c.admin("show policies")
        assert got.startswith(b"f\tretries=7\tbackoff=1000\t"), got
        assert b"g\tretries=0\tbackoff=1000\tmax_backoff=300000\ttimeout=9\tconcurrency=2" in got, got
    finally:
        s.stop()


@per_backend(*ALL)
def test_dead_letters_are_stored_and_replayed_as_dead_letters(store):
    s = srv(store, "--policy", "f:retries=0").start()
    try:
        c = s.conn()
        h1 = submit(c, "SUBMIT_JOB_BG", "f", "u1", "one")
        h2 = submit(c, "SUBMIT_JOB_BG", "f", "u2", "two")
        h3 = submit(c, "SUBMIT_JOB_BG", "f", "u3", "three")
        w = worker(s, "f")
        assert grab_uniq(w)[0] == h1
        w.send_packet("WORK_EXCEPTION", h1, "trace\0back")
        assert grab_uniq(w)[0] == h2
        w.send_packet("WORK_FAIL", h2)
        sync(w)
        dead = c.admin("show dead")
        assert dead.count(b"\n") == 3, dead
        w.close()
        c.close()
        s = restart(s, store)
        c = s.conn()
        again = c.admin("show dead")
        assert again == dead, "dead letters after the restart:\n%r\nbefore:\n%r" % (again, dead)
        assert show_job(c, h1) == ("dead", 1) and show_job(c, h2) == ("dead", 1)
        assert show_job(c, h3) == ("queued", 0)
        assert c.admin("status") == b"f\t1\t0\t0\n.\n", "dead letters counted as jobs"
        # sent back: stored as a plain job again, run once more
        assert c.admin("retry dead %s" % h1) == b"OK\r\n"
        assert c.admin("discard dead %s" % h2) == b"OK\r\n"
        wait_until(lambda: sorted(handles(store.rows())) == sorted([h1, h3]), timeout=5,
                   what="the discarded dead letter to leave storage (have %r)" % store.rows())
        c.close()
        s = restart(s, store)
        c = s.conn()
        assert c.admin("show dead") == b".\n"
        w = worker(s, "f")
        got = sorted(j[0] for j in drain(w))
        assert got == sorted([h1, h3]), got
        wait_until(lambda: store.rows() == [], timeout=5, what="storage to be empty")
    finally:
        s.stop()


@per_backend(*ALL)
def test_restart_replays_every_unfinished_job_with_its_handle_priority_unique_and_time(store):
    now = int(time.time())
    due = now + 4
    s = srv(store).start()
    try:
        c = s.conn()
        jobs = {}  # handle -> (function, unique, data)
        for ptype, u, data in (("SUBMIT_JOB_LOW_BG", b"u-low", b"low\0data"),
                               ("SUBMIT_JOB_BG", b"", b"normal, no unique"),
                               ("SUBMIT_JOB_HIGH_BG", b"u-high", b"high"),
                               ("SUBMIT_JOB_BG", b"u-normal", b"normal"),
                               ("SUBMIT_JOB_BG", b"u-normal-2", b"normal 2")):
            jobs[submit(c, ptype, "replay", u, data)] = ("replay", u, data)
        h_due = submit(c, "SUBMIT_JOB_EPOCH", "replay", b"u-due", b"due soon", str(due))
        h_far = submit(c, "SUBMIT_JOB_EPOCH", "replay", b"u-far", b"far", str(now + 86400))
        w = worker(s, "replay")
        j = grab_uniq(w)
        assert j[2] == b"u-high", j
        w.send_packet("WORK_COMPLETE", j[0], "")
        del jobs[j[0]]
        j = grab_uniq(w)
        assert j[2] == b"", j
        w.send_packet("WORK_COMPLETE", j[0], "")
        del jobs[j[0]]
        sync(w)
        w.close()
        stored_before = {r.handle: r for r in store.rows()}
        wait_until(lambda: len(store.rows()) == len(jobs) + 2, timeout=5, what="the DONEs")
        max_before = max(hnum(h) for h in list(jobs) + [h_due, h_far])

        s = restart(s, store)
        c = s.conn()
        for h in list(jobs) + [h_due, h_far]:
            assert status(c, h) == (True, False), "%s not replayed" % h
        # the unique keys are back: a background submit with one coalesces
        assert submit(c, "SUBMIT_JOB_BG", "replay", b"u-far", b"again") == h_far
        # stored rows are unchanged by the replay
        if store.shows_fields:
            for r in store.rows():
                b = stored_before[r.handle]
                assert (r.function, r.unique, r.priority, r.when, r.data) == \
                       (b.function, b.unique, b.priority, b.when, b.data), (b, r)
        # priority order, fields intact; the epoch jobs wait for their time
        w = worker(s, "replay")
        got = drain(w, complete=False)
        due_job = [g for g in got if g[0] == h_due]
        got = [g for g in got if g[0] != h_due]
        assert got == [(h, fn, u, d) for h, (fn, u, d) in
                       sorted(jobs.items(), key=lambda kv: kv[1][1] == b"u-low")], got
        assert not due_job or time.time() >= due, "the epoch job ran %.2fs early" % (due - time.time())
        # new handles continue above the replayed ones
        h_new = submit(c, "SUBMIT_JOB_BG", "replay", b"", b"new")
        assert hnum(h_new) > max_before, "new handle %s reuses the replayed range (up to %d)" % (
            h_new, max_before)
        # the replayed epoch job runs at its time, not before
        w.send_packet("PRE_SLEEP")
        deadline = time.time() + 8
        j = due_job[0] if due_job else None
        while j is None:
            p = w.recv_packet(timeout=max(0.1, deadline - time.time()))
            assert p.name == "NOOP", p
            j = grab_uniq(w)
            if j is not None and j[0] == h_new:
                j = None
            if j is None:
                w.send_packet("PRE_SLEEP")
        assert j[0] == h_due and j[3] == b"due soon", j
        assert time.time() >= due - 0.05, "epoch job ran %.2fs early" % (due - time.time())
        assert status(c, h_far) == (True, False)
    finally:
        stop_ok(s)


@per_backend(*ALL)
def test_priority_order_is_kept_after_replay(store):
    order = [("SUBMIT_JOB_LOW_BG", "L1"), ("SUBMIT_JOB_BG", "N1"), ("SUBMIT_JOB_HIGH_BG", "H1"),
             ("SUBMIT_JOB_LOW_BG", "L2"), ("SUBMIT_JOB_HIGH_BG", "H2"), ("SUBMIT_JOB_BG", "N2"),
             ("SUBMIT_JOB_BG", "N3"), ("SUBMIT_JOB_HIGH_BG", "H3"), ("SUBMIT_JOB_LOW_BG", "L3")]
    s = srv(store).start()
    try:
        c = s.conn()
        # another function's LOW job first and HIGH job last: priority is
        # global (design 9), so they run with their priority class
        submit(c, "SUBMIT_JOB_LOW_BG", "prio-x", "", "xL")
        for ptype, name in order:
            submit(c, ptype, "prio", "", name)
        submit(c, "SUBMIT_JOB_HIGH_BG", "prio-x", "", "xH")
        s = restart(s, store)
        w = worker(s, "prio", "prio-x")
        got = [j[3].decode() for j in drain(w)]
        # FIFO inside one function and priority; equal priorities of two
        # functions take turns, so only the class of the prio-x jobs is fixed
        assert [g for g in got if not g.startswith("x")] == \
               ["H1", "H2", "H3", "N1", "N2", "N3", "L1", "L2", "L3"], got
        assert "xH" in got[:4] and "xL" in got[-4:], got
    finally:
        stop_ok(s)


@per_backend(*ALL)
def test_replay_is_idempotent_over_repeated_restarts(store):
    s = srv(store).start()
    try:
        c = s.conn()
        made = [submit(c, "SUBMIT_JOB_BG", "idem", "u1", "one"),
                submit(c, "SUBMIT_JOB_BG", "idem", "", "two"),
                submit(c, "SUBMIT_JOB_BG", "idem", "", "three"),   # same empty unique: its own job
                submit(c, "SUBMIT_JOB_HIGH_BG", "idem", "u2", "four")]
        assert len(set(made)) == 4, made
        for restart_no in (1, 2, 3):
            s = restart(s, store)
            c = s.conn()
            for h in made:
                assert status(c, h) == (True, False), "restart %d: %s not replayed" % (restart_no, h)
            st = c.admin("status").decode()
            assert "idem\t4\t0\t0" in st, "restart %d: status %r" % (restart_no, st)
            assert sorted(handles(store.rows())) == sorted(made), (restart_no, store.rows())
        w = worker(s, "idem")
        got = sorted(j[0] for j in drain(w))
        assert got == sorted(made), got
    finally:
        stop_ok(s)


@per_backend("memcached")
def test_restart_right_after_submits_replays_every_job(store):
    s = srv(store).start()
    try:
        made = []
        # a few rounds: whether memcached's LRU maintainer has moved the new
        # items before the replay lists them depends on its clock (1 s steps)
        for rnd in range(3):
            c = s.conn()
            made += [submit(c, "SUBMIT_JOB_BG", "quick", "r%d-%d" % (rnd, i), "d") for i in range(10)]
            stop_ok(s)
            # a restart right after the jobs were acknowledged: their items
            # are still in memcached's HOT LRU, which "stats cachedump" skips
            s = srv(store).start()
            c = s.conn()
            missing = [h for h in made if status(c, h) != (True, False)]
            assert not missing, "round %d: %d of %d acknowledged jobs not replayed: %s (all still stored: %s)" % (
                rnd, len(missing), len(made), missing, set(missing) <= set(handles(store.rows())))
    finally:
        stop_ok(s)


def kill9_and_restart(s, store, *args):
    """kill -9 (nothing written at exit), then a new server on the same
    storage."""
    import signal
    s.stop(signal.SIGKILL)
    return srv(store, *args).start()


@per_backend(*ALL)
def test_background_submit_joining_a_foreground_job_is_stored_before_job_created(store):
    # Issue 12.4: a SUBMIT_JOB_BG with the function and unique key of a
    # queued or running foreground job used to get JOB_CREATED at once and
    # no stored record: lost at the next crash.
    s = srv(store).start()
    try:
        fg = s.conn()
        h_run = submit(fg, "SUBMIT_JOB", "joined", "u-run", "running")
        h_queued = submit(fg, "SUBMIT_JOB", "joined", "u-queued", "queued")
        w = worker(s, "joined")
        j = grab_uniq(w)
        assert j[0] == h_run, j
        assert store.rows() == [], "a foreground job was stored: %r" % store.rows()
        bg = s.conn()
        assert submit(bg, "SUBMIT_JOB_BG", "joined", "u-run", "running") == h_run
        assert submit(bg, "SUBMIT_JOB_HIGH_BG", "joined", "u-queued", "queued") == h_queued
        # JOB_CREATED came after the commit: both are stored now
        assert sorted(handles(store.rows())) == sorted([h_run, h_queued]), store.rows()
        # the foreground client leaves: both jobs live on (background now)
        fg.close()
        sync(bg)
        assert status(bg, h_queued) == (True, False)
        assert status(bg, h_run) == (True, True)
        w.close()
        s = kill9_and_restart(s, store)
        c = s.conn()
        assert status(c, h_run) == (True, False), "the running job is lost after kill -9"
        assert status(c, h_queued) == (True, False), "the queued job is lost after kill -9"
        w = worker(s, "joined")
        got = sorted(j[0] for j in drain(w))
        assert got == sorted([h_run, h_queued]), got
        sync(w)
        wait_until(lambda: store.rows() == [], timeout=5, what="the completions stored")
    finally:
        stop_ok(s)


@per_backend(*ALL)
def test_job_joined_by_a_background_submit_that_completes_before_its_commit_leaves_storage(store):
    # The worker completes the job while its record is on the way: the
    # background submitter still hears JOB_CREATED, and the record does
    # not stay behind to run the job again after a restart.
    s = srv(store).start()
    try:
        fg, bg = s.conn(), s.conn()
        h = submit(fg, "SUBMIT_JOB", "fast", "u", "d")
        w = worker(s, "fast")
        assert grab_uniq(w)[0] == h
        # the ECHO answer says the submit was taken; JOB_CREATED may come
        # before or after it (it waits for the commit)
        bg.send_packet("SUBMIT_JOB_BG", "fast", "u", "d")
        bg.send_packet("ECHO_REQ", "taken")
        got = [bg.recv_packet()]
        if got[0].name == "JOB_CREATED":
            got.append(bg.recv_packet())
        assert got[-1].name == "ECHO_RES", got
        w.send_packet("WORK_COMPLETE", h, "r")
        fg.expect_packet("WORK_COMPLETE", h, "r")
        if got[0].name != "JOB_CREATED":
            got.insert(0, bg.recv_packet())
        assert got[0].name == "JOB_CREATED" and got[0].data == h.encode(), got
        sync(w)
        wait_until(lambda: store.rows() == [], timeout=5, what="the job to leave storage")
        s = kill9_and_restart(s, store)
        assert status(s.conn(), h) == (False, False), "a completed job came back"
    finally:
        stop_ok(s)


@test
def test_http_background_post_joining_a_foreground_post_is_stored_before_its_answer():
    # Over HTTP the default unique key "-" (the body) makes the join happen
    # by accident: a foreground POST, then the same body in the background.
    import http.client
    store = SqliteStore()
    hport = gmtest.free_port()
    args = ("-r", "http", "--http-port", str(hport))
    s = srv(store, *args).start()
    try:
        wait_until(lambda: gmtest.port_open(hport), what="the HTTP port")
        fg = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
        fg.request("POST", "/httpjoin", body=b"same body")
        w = worker(s, "httpjoin")
        j = None
        deadline = time.time() + 5
        while j is None and time.time() < deadline:
            j = grab_uniq(w)
        assert j is not None and j[3] == b"same body", j
        bg = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
        bg.request("POST", "/httpjoin", body=b"same body", headers={"X-Gearman-Background": "true"})
        r = bg.getresponse()
        r.read()
        assert r.status == 200, r.status
        assert handles(store.rows()) == [j[0]], "answered but not stored: %r" % store.rows()
        w.close()
        fg.close()
        bg.close()
        s = kill9_and_restart(s, store, *args)
        assert status(s.conn(), j[0]) == (True, False), "the background job is lost after kill -9"
    finally:
        stop_ok(s)
        store.cleanup()


@per_backend(*ALL)
def test_bad_stored_row_is_logged_kept_and_the_rest_replays(store):
    s = srv(store).start()
    try:
        c = s.conn()
        good = [submit(c, "SUBMIT_JOB_BG", "good", "g1", "one"), submit(c, "SUBMIT_JOB_LOW_BG", "good", "g2", "two")]
        stop_ok(s)
        bad = H(100)
        store.insert(bad, b"bad", b"ub", 7, b"priority 7")
        s = srv(store).start()
        log = s.log_text()
        lines = [ln for ln in log.splitlines() if bad in ln]
        assert lines, "the bad row %s is not logged; log:\n%s" % (bad, log[-2000:])
        assert any("ERROR" in ln or "WARNING" in ln for ln in lines), lines
        c = s.conn()
        assert status(c, bad)[0] is False
        w = worker(s, "good", "bad")
        assert [j[0] for j in drain(w)] == good
        wait_until(lambda: handles(store.rows()) == [bad], timeout=5,
                   what="only the bad row to be left (have %r)" % store.rows())
        stop_ok(s)
        rows = store.rows()
        assert handles(rows) == [bad], "the bad row was not kept: %r" % rows
        if store.shows_fields:
            assert (rows[0].priority, rows[0].function, rows[0].data) == (7, b"bad", b"priority 7"), rows
    finally:
        stop_ok(s)


@per_backend(*ALL)
def test_new_jobs_never_take_the_handle_of_a_kept_bad_row(store):
    # design 9: handles are never reused; a new job with the handle of a
    # row kept unreplayed would overwrite that row
    s = srv(store).start()
    try:
        c = s.conn()
        good = [submit(c, "SUBMIT_JOB_BG", "good", "g1", "one"), submit(c, "SUBMIT_JOB_BG", "good", "g2", "two")]
        stop_ok(s)
        bad = H(max(hnum(h) for h in good) + 1)   # the handle the server would give next
        store.insert(bad, b"bad", b"ub", 7, b"priority 7")
        s = srv(store).start()
        c = s.conn()
        h_new = submit(c, "SUBMIT_JOB_BG", "good", "g3", "three")
        assert h_new != bad, "the new job got %s, the handle of the kept bad row, and overwrote it: %r" % (
            bad, store.rows())
        stop_ok(s)
        by = {r.handle: r for r in store.rows()}
        assert bad in by and h_new in by, by
        if store.shows_fields:
            assert by[bad].priority == 7, by[bad]
    finally:
        stop_ok(s)


@per_backend(*ALL)
def test_handle_of_a_completed_job_is_not_reused_after_restart(store):
    # design 9: handles are never reused, also those of jobs that ended
    s = srv(store).start()
    try:
        c = s.conn()
        kept = submit(c, "SUBMIT_JOB_LOW_BG", "reuse", "kept", "kept")
        done = submit(c, "SUBMIT_JOB_HIGH_BG", "reuse", "done", "done")
        w = worker(s, "reuse")
        assert grab_uniq(w)[0] == done
        w.send_packet("WORK_COMPLETE", done, "")
        sync(w)
        wait_until(lambda: handles(store.rows()) == [kept], timeout=5, what="only %s stored" % kept)
        s = restart(s, store)
        c = s.conn()
        new = submit(c, "SUBMIT_JOB_BG", "reuse", "new", "new")
        assert new != done and hnum(new) > hnum(done), \
            "after a restart the new job got %s, the handle of a job completed before it (%s)" % (new, done)
    finally:
        stop_ok(s)


@per_backend("postgres", "redis", "mysql")
def test_handles_are_not_reused_when_the_database_was_down_at_the_first_submit(store):
    s = srv(store).start()
    try:
        c = s.conn()
        store.down()
        try:
            c.send_packet("SUBMIT_JOB_BG", "reuse", "refused", "refused")
            expect_queue_error(c)
        finally:
            store.up()
        deadline = time.time() + 20
        while True:
            c.send_packet("SUBMIT_JOB_BG", "reuse", "kept", "kept")
            p = c.recv_packet()
            if p.name == "JOB_CREATED":
                kept = p.data.decode()
                break
            assert time.time() < deadline, "background submits still refused 20 s after %s came back" % store.name
            time.sleep(0.2)
        done = submit(c, "SUBMIT_JOB_BG", "reuse", "done", "done")
        w = worker(s, "reuse")
        assert grab_uniq(w)[0] == kept
        assert grab_uniq(w)[0] == done
        w.send_packet("WORK_COMPLETE", done, "")
        w.close()   # kept goes back to the queue
        wait_until(lambda: handles(store.rows()) == [kept], timeout=10, what="only %s stored" % kept)
        s = restart(s, store)
        c = s.conn()
        new = submit(c, "SUBMIT_JOB_BG", "reuse", "new", "new")
        assert new != done and hnum(new) > hnum(done), \
            "after a restart the new job got %s, the handle of a job completed before it (%s)" % (new, done)
    finally:
        stop_ok(s)


# ----------------------------------------------------------------------
# SQLite specifics


@per_backend("sqlite")
def test_queue_written_by_gearmand_1_1_20_replays(store):
    if not os.path.exists(DEBIAN_GEARMAND):
        fail("%s is needed (Debian's gearman-job-server, which CI installs)" % DEBIAN_GEARMAND)
    now = int(time.time())
    old = Server("-q", "libsqlite3", "--libsqlite3-db", store.db, binary=DEBIAN_GEARMAND).start()
    try:
        c = old.conn()
        jobs = [("SUBMIT_JOB_LOW_BG", "old-a", b"u-low", b"low"),
                ("SUBMIT_JOB_BG", "old-a", b"u-normal", b"nor\0mal"),
                ("SUBMIT_JOB_HIGH_BG", "old-b", b"u-high", b"high"),
                ("SUBMIT_JOB_BG", "old-b", b"", b"empty unique")]
        for ptype, fn, u, data in jobs:
            submit(c, ptype, fn, u, data)
        submit(c, "SUBMIT_JOB_EPOCH", "old-a", b"u-epoch", b"later", str(now + 86400))
    finally:
        stop_ok(old)
    s = srv(store).start()
    try:
        log = s.log_text()
        rows = store.rows()
        assert len(rows) == 5, rows
        assert all(hnum(r.handle) for r in rows), "migrated handles are not %s:<n>: %r" % (PREFIX, rows)
        # old order kept: the rows come back in the order 1.1.20 stored them
        assert [r.unique for r in rows] == [b"u-low", b"u-normal", b"u-high", b"", b"u-epoch"], rows
        c = s.conn()
        epoch = rows[4].handle
        assert status(c, epoch) == (True, False)
        assert rows[4].when == now + 86400, rows[4]
        w = worker(s, "old-a", "old-b")
        got = [(j[1], j[2], j[3]) for j in drain(w)]
        assert got == [("old-b", b"u-high", b"high"), ("old-a", b"u-normal", b"nor\0mal"),
                       ("old-b", b"", b"empty unique"), ("old-a", b"u-low", b"low")], (got, log[-2000:])
        h_new = submit(c, "SUBMIT_JOB_BG", "old-a", "", "new")
        assert hnum(h_new) > max(hnum(r.handle) for r in rows), (h_new, rows)
    finally:
        stop_ok(s)


@per_backend("sqlite")
def test_libsqlite3_table_option_names_the_table(store):
    store.table = "my_queue"
    with srv(store) as s:
        c = s.conn()
        h = submit(c, "SUBMIT_JOB_BG", "t", "u", "d")
        assert handles(store.rows()) == [h]
    con = sqlite3.connect(store.db)
    names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    con.close()
    assert "my_queue" in names and "gearman_queue" not in names, names


@per_backend("sqlite")
def test_store_queue_on_shutdown_writes_nothing_while_running_and_everything_at_sigterm(store):
    s = srv(store, "--store-queue-on-shutdown").start()
    try:
        c = s.conn()
        made = [submit(c, "SUBMIT_JOB_BG", "sos", "u1", "one"),
                submit(c, "SUBMIT_JOB_HIGH_BG", "sos", "", "two"),
                submit(c, "SUBMIT_JOB_LOW_BG", "sos", "u3", "three"),
                submit(c, "SUBMIT_JOB_EPOCH", "sos", "u4", "four", str(int(time.time()) + 86400)),
                submit(c, "SUBMIT_JOB_BG", "sos", "u5", "five, completed")]
        submit(c, "SUBMIT_JOB", "sos-fg", "fg", "foreground")
        time.sleep(0.3)
        assert store.rows() == [], "stored while running: %r" % store.rows()
        w = worker(s, "sos")
        j = grab_uniq(w)
        assert j[0] == made[1]
        j2 = grab_uniq(w)   # running at shutdown: stored too
        assert j2[0] == made[0]
        w.send_packet("WORK_COMPLETE", j[0], "")
        sync(w)
        # complete u5 as well, so it must not come back
        j3 = grab_uniq(w)
        assert j3[0] == made[4], j3
        w.send_packet("WORK_COMPLETE", j3[0], "")
        sync(w)
        assert store.rows() == [], store.rows()
        stop_ok(s)
        rows = store.rows()
        assert sorted(handles(rows)) == sorted([made[0], made[2], made[3]]), rows
        by = {r.handle: r for r in rows}
        assert (by[made[0]].unique, by[made[0]].priority, by[made[0]].data) == (b"u1", 1, b"one")
        assert (by[made[2]].unique, by[made[2]].priority) == (b"u3", 2)
        assert by[made[3]].when > time.time() + 80000
        # next start: replayed, and the table is emptied until the next clean stop
        s = srv(store, "--store-queue-on-shutdown").start()
        assert store.rows() == [], "table not truncated after replay: %r" % store.rows()
        c = s.conn()
        for h in (made[0], made[2], made[3]):
            assert status(c, h) == (True, False), h
        w = worker(s, "sos")
        j = grab_uniq(w)
        assert j[0] == made[0], j
        w.send_packet("WORK_COMPLETE", j[0], "")
        sync(w)
        stop_ok(s)
        assert sorted(handles(store.rows())) == sorted([made[2], made[3]]), store.rows()
    finally:
        stop_ok(s)


@per_backend("sqlite")
def test_store_queue_on_shutdown_keeps_rows_that_could_not_be_replayed(store):
    # design 9: a row that cannot be replayed is logged and kept; emptying
    # the table after replay must not take it with the replayed ones
    s = srv(store).start()
    stop_ok(s)  # the table, in our layout
    store.insert(H(1), b"sos-bad", b"good", 1, b"good")
    store.insert(H(2), b"sos-bad", b"bad", 7, b"priority 7")
    store.insert(H(3), b"sos-bad", b"good-too", 2, b"good too")
    s = srv(store, "--store-queue-on-shutdown").start()
    try:
        assert "%s (sos-bad) not replayed" % H(2) in s.log_text(), s.log_text()[-3000:]
        assert handles(store.rows()) == [H(2)], "after replay: %r" % store.rows()
        c = s.conn()
        assert status(c, H(1)) == (True, False)
        assert status(c, H(2)) == (False, False)
        w = worker(s, "sos-bad")
        j = grab_uniq(w)
        assert j[0] == H(1), j
        w.send_packet("WORK_COMPLETE", j[0], "")
        sync(w)
        stop_ok(s)
        # the unreplayable row is still there, beside the job still queued
        rows = store.rows()
        assert sorted(handles(rows)) == [H(2), H(3)], rows
        bad = [r for r in rows if r.handle == H(2)][0]
        assert (bad.priority, bad.data) == (7, b"priority 7"), bad
        # and it survives the next replay too
        s = srv(store, "--store-queue-on-shutdown").start()
        assert handles(store.rows()) == [H(2)], store.rows()
    finally:
        stop_ok(s)


@per_backend("sqlite")
def test_store_queue_on_shutdown_does_not_reuse_handles_of_completed_jobs(store):
    s = srv(store, "--store-queue-on-shutdown").start()
    try:
        c = s.conn()
        kept = submit(c, "SUBMIT_JOB_BG", "sos-reuse", "kept", "kept")
        done = submit(c, "SUBMIT_JOB_HIGH_BG", "sos-reuse", "done", "done")
        w = worker(s, "sos-reuse")
        assert grab_uniq(w)[0] == done
        w.send_packet("WORK_COMPLETE", done, "")
        sync(w)
        s = restart(s, store, "--store-queue-on-shutdown")
        c = s.conn()
        assert status(c, kept) == (True, False)
        new = submit(c, "SUBMIT_JOB_BG", "sos-reuse", "new", "new")
        assert new != done and hnum(new) > hnum(done), \
            "after a restart the new job got %s, the handle of a job completed before it (%s)" % (new, done)
    finally:
        stop_ok(s)


@per_backend("sqlite")
def test_store_queue_on_shutdown_keeps_priorities_and_every_job(store):
    # (the order inside one priority is not kept: the jobs are written in
    # hash order at shutdown, as gearmand 1.1.20 does)
    s = srv(store, "--store-queue-on-shutdown").start()
    try:
        c = s.conn()
        kinds = ("SUBMIT_JOB_LOW_BG", "SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH_BG")
        made = {submit(c, kinds[i % 3], "sos-prio", "" if i % 2 else "u%d" % i, "%d" % (i % 3)): i % 3
                for i in range(30)}
        stop_ok(s)
        assert len(store.rows()) == 30, store.rows()
        s = srv(store, "--store-queue-on-shutdown").start()
        w = worker(s, "sos-prio")
        got = drain(w)
        assert sorted(j[0] for j in got) == sorted(made), got
        assert [j[3] for j in got] == [b"2"] * 10 + [b"1"] * 10 + [b"0"] * 10, [j[3] for j in got]
    finally:
        stop_ok(s)


@per_backend("sqlite")
def test_store_queue_on_shutdown_keeps_a_foreground_job_a_background_submit_joined(store):
    # The joined job became a background job but had no copy of its
    # function's name, which storage needs: the stop did not write it.
    s = srv(store, "--store-queue-on-shutdown").start()
    try:
        fg, bg = s.conn(), s.conn()
        h = submit(fg, "SUBMIT_JOB", "sos-join", "j", "d")
        assert submit(bg, "SUBMIT_JOB_BG", "sos-join", "j", "d") == h
        fg.close()
        sync(bg)
        stop_ok(s)
        assert [(r.handle, r.function) for r in store.rows()] == [(h, b"sos-join")], store.rows()
        s = srv(store, "--store-queue-on-shutdown").start()
        assert status(s.conn(), h) == (True, False)
    finally:
        stop_ok(s)


@per_backend("sqlite")
def test_store_queue_on_shutdown_with_thousands_of_one_record_batches_stops_and_keeps_every_job(store):
    # Issue 12.5: at a stop the persistence thread acknowledged each batch
    # and waited for room in the ack ring, which nobody drains once the
    # dispatcher has made its final flush: more than 4,096 batches (here one
    # record each) and the server never exited.
    n = 6000
    s = srv(store, "--store-queue-on-shutdown", "--queue-batch-size", "1").start()
    try:
        c = s.conn(timeout=60)
        c.send(b"".join(gmtest.packet("SUBMIT_JOB_BG", "many", "m%d" % i, "d") for i in range(n)))
        got = 0
        while got < n:
            assert c.recv_packet().name == "JOB_CREATED"
            got += 1
        t0 = time.time()
        rc = s.stop(timeout=60)
        assert rc == 0, "exit status %s after %.1fs; log:\n%s" % (rc, time.time() - t0, s.log_text()[-2000:])
        assert len(store.rows()) == n, len(store.rows())
        s = srv(store, "--store-queue-on-shutdown").start()
        assert b"many\t%d\t0\t0\n" % n in s.conn().admin("status")
    finally:
        stop_ok(s)


@per_backend("postgres", "redis", "memcached", "mysql")
def test_store_queue_on_shutdown_is_for_sqlite_only_elsewhere_every_job_is_stored_as_it_comes(store):
    # Issue 12.5: gearmand offers --store-queue-on-shutdown with libsqlite3
    # only.  PostgreSQL and memcached took it here, wrote at the stop only,
    # and never cleared what they replayed: every restart replayed every
    # job ever stored.  Now the option is ignored there, with a warning.
    s = srv(store, "--store-queue-on-shutdown").start()
    try:
        assert "--store-queue-on-shutdown applies to libsqlite3 only" in s.log_text()
        c = s.conn()
        h = submit(c, "SUBMIT_JOB_BG", "elsewhere", "e1", "d")
        assert handles(store.rows()) == [h], "not stored as it came: %r" % store.rows()
        s = kill9_and_restart(s, store, "--store-queue-on-shutdown")
        w = worker(s, "elsewhere")
        assert [j[0] for j in drain(w)] == [h]
        sync(w)
        wait_until(lambda: store.rows() == [], timeout=5, what="the completion stored")
        s = restart(s, store, "--store-queue-on-shutdown")
        assert status(s.conn(), h) == (False, False), "a completed job came back"
    finally:
        stop_ok(s)


class Tmpfs:
    """A small tmpfs of the test's own (root only), to fill the disk."""

    def __init__(self, size):
        if os.geteuid() != 0:
            gmtest.skip("mounting a tmpfs needs root (CI runs as root)")
        self.dir = tempfile.mkdtemp(prefix="gmtest-full-")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", self.dir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail("cannot mount a tmpfs: %s" % r.stderr)

    def resize(self, size):
        subprocess.run(["mount", "-o", "remount,size=%s" % size, self.dir], check=True)

    def fill(self):
        """Takes every free byte with a file of its own."""
        with open(os.path.join(self.dir, "filler"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    def close(self):
        subprocess.run(["umount", "-l", self.dir])
        shutil.rmtree(self.dir, ignore_errors=True)


def fill_the_disk(c):
    """Submits background jobs of 8000 bytes of function "full" on c until
    the queue refuses one with QUEUE_ERROR (its disk is full); returns the
    handles of those it acknowledged (some, and fewer than 500)."""
    made = []
    for i in range(500):
        c.send_packet("SUBMIT_JOB_BG", "full", "f%d" % i, b"x" * 8000)
        p = c.recv_packet()
        if p.name != "JOB_CREATED":
            assert p.name == "ERROR" and p.fields(2)[0] == b"QUEUE_ERROR", p
            break
        made.append(p.data.decode())
    assert made and len(made) < 500, "the disk never filled (%d jobs)" % len(made)
    return made


@test
def test_sqlite_on_a_full_disk_refuses_new_jobs_and_holds_completions_until_there_is_room():
    # Issue 12.5: with SQLite on a full disk the completions (DONE records)
    # refused by the backend were dropped, so completed jobs ran again after
    # a restart.  Now they are held and written once there is room.
    disk = Tmpfs("512k")
    store = SqliteStore()
    store.dir, store.db = disk.dir, os.path.join(disk.dir, "queue.sqlite")
    s = srv(store).start()
    try:
        c = s.conn()
        made = fill_the_disk(c)
        w = worker(s, "full")
        done = [j[0] for j in drain(w)]
        assert sorted(done) == sorted(made), (done, made)
        sync(w)
        assert len(store.rows()) == len(made), "the disk had room after all"
        assert "database or disk is full" in s.log_text()
        disk.resize("16m")
        wait_until(lambda: store.rows() == [], timeout=20, what="the held completions written")
        s = kill9_and_restart(s, store)
        c = s.conn()
        back = [h for h in made if status(c, h)[0]]
        assert not back, "completed jobs came back after the restart: %s" % back
    finally:
        stop_ok(s)
        disk.close()


@test
def test_sqlite_stop_with_thousands_of_records_waiting_on_a_full_disk_exits():
    # Issue 12.5: the final write of a stop, refused by a full disk, was
    # retried record by record with one ack each; past 4,096 acks the
    # persistence thread waited for a dispatcher that had already stopped.
    disk = Tmpfs("1m")
    store = SqliteStore()
    store.dir, store.db = disk.dir, os.path.join(disk.dir, "queue.sqlite")
    s = srv(store, "--queue-batch-delay", "5000").start()
    try:
        disk.fill()
        c = s.conn(timeout=30)
        n = 5000
        c.send(b"".join(gmtest.packet("SUBMIT_JOB_BG", "waiting", "w%d" % i, "d") for i in range(n)))
        c.send_packet("ECHO_REQ", "all in")
        while c.recv_packet().name != "ECHO_RES":
            pass
        t0 = time.time()
        rc = s.stop(timeout=60)
        assert rc == 0, "exit status %s after %.1fs; log:\n%s" % (rc, time.time() - t0, s.log_text()[-2000:])
        assert time.time() - t0 < 30, "the stop took %.1fs" % (time.time() - t0)
    finally:
        stop_ok(s)
        disk.close()


# ----------------------------------------------------------------------
# Signals during a long replay (before the main loop runs): handled once
# the loop runs, never the default action (which killed the server)

BIG = 200000
_big_queue = {}


def big_queue(store):
    """Puts a queue of BIG jobs (function "replay-fn", handles H(1)..H(BIG))
    in store's file, in our table layout; built once per run, then copied."""
    if "path" not in _big_queue:
        d = tempfile.mkdtemp(prefix="gmtest-big-")
        atexit.register(shutil.rmtree, d, True)
        path = os.path.join(d, "big.sqlite")
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE gearman_queue (unique_key TEXT, function_name TEXT, "
                    "priority INTEGER, data BLOB, when_to_run INTEGER, job_handle TEXT PRIMARY KEY)")
        con.executemany("INSERT INTO gearman_queue VALUES (?, ?, ?, ?, ?, ?)",
                        (("u%d" % i, "replay-fn", 1, b"data", 0, H(i)) for i in range(1, BIG + 1)))
        con.commit()
        con.close()
        _big_queue["path"] = path
    shutil.copyfile(_big_queue["path"], store.db)


def replay_line(s):
    """The server's "replayed N jobs" log line, or None before it."""
    for line in s.log_text().splitlines():
        if ": replayed " in line:
            return line
    return None


def signal_during_replay(s, *sigs):
    """Starts s (without waiting for it to listen), sends sigs once the
    replay has begun, and checks that the replay had not ended by then."""
    open(os.path.join(s.dir, "none.conf"), "w").close()
    s.proc = subprocess.Popen(s.args, env=s.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: "replaying table" in s.log_text() or s.proc.poll() is not None,
               timeout=30, interval=0.002, what="the replay to begin")
    for sig in sigs:
        s.proc.send_signal(sig)
    assert replay_line(s) is None, \
        "the replay ended before the signals were sent; the test needs a bigger queue"


def listening(s):
    try:
        socket.create_connection(("127.0.0.1", s.port), timeout=0.5).close()
        return True
    except OSError:
        return False


def after(log, first, then):
    """True if the line containing `then` comes after the one containing `first`."""
    return first in log and then in log[log.index(first):]


@per_backend("sqlite")
def test_sighup_during_a_long_replay_reopens_the_log_after_it_and_every_job_is_served(store):
    big_queue(store)
    s = srv(store)
    signal_during_replay(s, signal.SIGHUP)
    try:
        wait_until(lambda: listening(s) or s.proc.poll() is not None, timeout=60,
                   what="the server to listen")
        assert s.proc.poll() is None, "gearmand died during replay (exit status %s)" % s.proc.returncode
        c = s.conn()
        assert c.admin("status") == b"replay-fn\t%d\t0\t0\n.\n" % BIG
        wait_until(lambda: after(s.log_text(), replay_line(s), "SIGHUP, reopening log file"),
                   what="the log reopened after the replay")
        w = worker(s, "replay-fn")
        assert grab_uniq(w)[0] == H(1)
    finally:
        rc = s.stop()
    assert rc == 0, "gearmand exited with %s" % rc


@per_backend("sqlite")
def test_sighup_and_sigusr1_during_a_long_replay_act_once_it_is_done(store):
    # SIGUSR1 keeps its meaning (graceful: no new connections, stop once no
    # job is left), taken up once the replay is done, as gearmand does
    big_queue(store)
    s = srv(store)
    signal_during_replay(s, signal.SIGHUP, signal.SIGUSR1)
    try:
        wait_until(lambda: "Received SIGUSR1" in s.log_text() or s.proc.poll() is not None,
                   timeout=60, what="SIGUSR1 to be taken up")
        assert s.proc.poll() is None, "gearmand died during replay (exit status %s)" % s.proc.returncode
        log = s.log_text()
        assert "replayed %d jobs" % BIG in replay_line(s), replay_line(s)
        assert after(log, replay_line(s), "SIGHUP, reopening log file"), log[-2000:]
        assert after(log, replay_line(s), "Received SIGUSR1"), log[-2000:]
        wait_until(lambda: not listening(s), what="the listener to close")
        time.sleep(0.2)
        assert s.proc.poll() is None, "gearmand left with %d jobs queued" % BIG
    finally:
        rc = s.stop()
    assert rc == 0, "gearmand exited with %s" % rc
    assert len(store.rows()) == BIG


@per_backend("sqlite")
def test_sigterm_or_sigint_during_a_long_replay_stops_cleanly_once_it_is_done(store):
    for sig, args in ((signal.SIGTERM, ("--store-queue-on-shutdown",)), (signal.SIGINT, ())):
        big_queue(store)
        s = srv(store, *args)
        signal_during_replay(s, sig)
        try:
            s.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            s.stop()
            raise AssertionError("%s during replay: gearmand did not stop" % sig.name)
        rc = s.proc.returncode
        log = s.log_text()
        assert rc == 0, "%s during replay: exit status %s; log:\n%s" % (sig.name, rc, log[-2000:])
        assert "replayed %d jobs" % BIG in (replay_line(s) or ""), log[-2000:]
        assert after(log, replay_line(s), "Shutdown complete"), log[-2000:]
        assert not os.path.exists(s.pidfile), "%s: pid file left behind" % sig.name
        # nothing lost: with --store-queue-on-shutdown the jobs were written back
        assert len(store.rows()) == BIG, "%s: %d rows" % (sig.name, len(store.rows()))


# ----------------------------------------------------------------------
# Database outage; jobs a backend refuses


@per_backend("postgres", "redis", "mysql")
def test_database_outage_refuses_background_jobs_and_loses_nothing(store):
    s = srv(store).start()
    try:
        c = s.conn()
        before = [submit(c, "SUBMIT_JOB_BG", "pgo", "b%d" % i, "before-%d" % i) for i in range(3)]
        assert handles(store.rows()) == before
        store.down()
        try:
            # background submits get a clear error, nothing half-written
            for i in range(3):
                c.send_packet("SUBMIT_JOB_BG", "pgo", "during-%d" % i, "during")
                expect_queue_error(c)
            c.send_packet("SUBMIT_JOB_EPOCH", "pgo", "during-epoch", str(int(time.time()) + 60), "during")
            expect_queue_error(c)
            # foreground work goes on
            fg = s.conn()
            hf = submit(fg, "SUBMIT_JOB", "pgo-fg", "", "foreground")
            wf = worker(s, "pgo-fg")
            j = grab_uniq(wf)
            assert j[0] == hf
            wf.send_packet("WORK_COMPLETE", hf, "fg-result")
            fg.expect_packet("WORK_COMPLETE", hf, "fg-result")
            # a stored job completed during the outage: its DONE must follow later
            w = worker(s, "pgo")
            j = grab_uniq(w)
            assert j[0] == before[0], j
            w.send_packet("WORK_COMPLETE", j[0], "")
            sync(w)
        finally:
            store.up()
        # writes resume once the database is back (the server reconnects)
        after = []
        deadline = time.time() + 20
        while True:
            c.send_packet("SUBMIT_JOB_BG", "pgo", "after", "after")
            p = c.recv_packet()
            if p.name == "JOB_CREATED":
                after.append(p.data.decode())
                break
            assert p.name == "ERROR" and p.fields(2)[0] == b"QUEUE_ERROR", p
            assert time.time() < deadline, "background submits still refused 20 s after %s came back" % store.name
            time.sleep(0.2)
        after.append(submit(c, "SUBMIT_JOB_HIGH_BG", "pgo", "after-2", "after-2"))
        want = before[1:] + after
        wait_until(lambda: handles(store.rows()) == want, timeout=10,
                   what="storage to hold exactly %s (has %r)" % (want, store.rows()))
        # a restart replays exactly the acknowledged, unfinished jobs, once
        s = restart(s, store)
        w = worker(s, "pgo")
        got = [j[0] for j in drain(w)]
        assert sorted(got) == sorted(want), got
        assert len(got) == len(set(got))
    finally:
        stop_ok(s)


class OwnPostgresStore(PostgresStore):
    """A PostgresStore on a PostgreSQL of the test's own: one the test may
    stop (SIGSTOP) without wedging the other tests."""

    def __init__(self):
        try:
            self.pg = services.Postgres().start()
        except services.Unavailable as e:
            fail("PostgreSQL is needed (CI installs it): %s" % e)
        self.table = fresh_name("gmq_")

    def cleanup(self):
        self.pg.__exit__(None, None, None)  # resumes a paused server first


def health(port):
    """GET /health: (HTTP status, the "status" it reads)."""
    import http.client
    import json
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/health")
        r = c.getresponse()
        return r.status, json.loads(r.read())["status"]
    finally:
        c.close()


def foreground_round_trip(s, fn):
    """A foreground job from submit to WORK_COMPLETE, with a worker."""
    fg = s.conn()
    h = submit(fg, "SUBMIT_JOB", fn, "", "fg")
    w = worker(s, fn)
    j = grab_uniq(w)
    assert j is not None and j[0] == h, j
    w.send_packet("WORK_COMPLETE", h, "fg-done")
    fg.expect_packet("WORK_COMPLETE", h, "fg-done")


def refused_within(c, fn, unique, bound):
    """Submits a background job and expects ERROR QUEUE_ERROR within
    `bound` seconds; returns how long it took."""
    t0 = time.time()
    c.send_packet("SUBMIT_JOB_BG", fn, unique, unique)
    p = c.recv_packet(timeout=bound)
    took = time.time() - t0
    assert p.name == "ERROR" and p.fields(2)[0] == b"QUEUE_ERROR", "expected QUEUE_ERROR, got %r" % p
    return took


def stored_again_within(c, fn, bound):
    """Submits background jobs until one is stored (JOB_CREATED, not
    QUEUE_ERROR), for at most `bound` seconds; returns its handle."""
    deadline = time.time() + bound
    while True:
        c.send_packet("SUBMIT_JOB_BG", fn, "after", "after")
        p = c.recv_packet(timeout=bound + 20)
        if p.name == "JOB_CREATED":
            return p.data.decode()
        assert p.name == "ERROR" and p.fields(2)[0] == b"QUEUE_ERROR", p
        assert time.time() < deadline, "background submits still refused %d s after PostgreSQL answered" % bound
        time.sleep(0.2)


@test
def test_postgres_that_stops_answering_refuses_background_jobs_in_bounded_time_and_recovers():
    # Issue 12.5: every process of the PostgreSQL is stopped (SIGSTOP): it
    # accepts bytes (the kernel does) and answers nothing.  The batch
    # waiting on it used to wait forever: its submitter never heard back,
    # and /health stayed green.  Now the batch is refused after 15 s (the
    # client-side deadline), /health says so from the 5th second, and once
    # PostgreSQL answers again writes resume, with the refused job gone.
    store = OwnPostgresStore()
    hport = gmtest.free_port()
    s = None
    try:
        s = srv(store, "-r", "http", "--http-port", str(hport)).start()
        c = s.conn(timeout=40)
        first = submit(c, "SUBMIT_JOB_BG", "pgstop", "first", "first")
        assert handles(store.rows()) == [first]
        assert health(hport) == (200, "ok")
        try:
            store.pg.pause()
            t0 = time.time()
            c.send_packet("SUBMIT_JOB_BG", "pgstop", "during", "during")
            foreground_round_trip(s, "pgstop-fg")
            wait_until(lambda: health(hport) == (503, "queue backend not answering"), timeout=10,
                       what="/health to report the stall")
            wait_until(lambda: "has not answered" in s.log_text(), timeout=5, what="the stall in the log")
            p = c.recv_packet(timeout=30 - (time.time() - t0))
            took = time.time() - t0
            assert p.name == "ERROR" and p.fields(2)[0] == b"QUEUE_ERROR", p
            assert took >= 10, "refused after %.1f s, before PostgreSQL could have answered" % took
            assert health(hport)[0] == 503
            # down now: the next submit is refused without waiting for a
            # batch (at most for a reconnect attempt: connect_timeout, 5 s)
            assert refused_within(c, "pgstop", "down", 10) < 7
            foreground_round_trip(s, "pgstop-fg")
        finally:
            store.pg.resume()
        after = stored_again_within(c, "pgstop", 20)
        wait_until(lambda: health(hport) == (200, "ok"), timeout=5, what="/health to be green again")
        # the refused job is not stored (even though its batch reached the
        # server before it stopped), the first is stored once
        wait_until(lambda: handles(store.rows()) == [first, after], timeout=10,
                   what="storage to hold exactly the first job and the last (has %r)" % store.rows())
        s = restart(s, store)
        got = sorted(j[0] for j in drain(worker(s, "pgstop")))
        assert got == sorted([first, after]), got
    finally:
        if s:
            stop_ok(s)
        store.cleanup()


@per_backend("postgres")
def test_postgres_table_lock_refuses_background_jobs_in_bounded_time_and_writes_resume(store):
    # Issue 12.5: a session holds an ACCESS EXCLUSIVE lock on the queue
    # table.  The batch used to wait for it forever; now statement_timeout
    # (10 s) ends it: the submitter gets QUEUE_ERROR, and once the lock is
    # released background submits are stored again.
    hport = gmtest.free_port()
    s = srv(store, "-r", "http", "--http-port", str(hport)).start()
    locker = None
    try:
        c = s.conn(timeout=40)
        first = submit(c, "SUBMIT_JOB_BG", "pglock", "first", "first")
        pg = store.pg
        locker = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(pg.port),
                                   "-U", "postgres", "-d", "postgres"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        locker.stdin.write(b"BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n" % store.table.encode())
        locker.stdin.flush()
        assert b"locked" in locker.stdout.readline(), "psql could not lock the table"
        took = refused_within(c, "pglock", "during", 30)
        assert took >= 5, "refused after %.1f s: the lock did not hold the batch" % took
        assert "has not answered" in s.log_text()
        assert health(hport)[0] == 503
        foreground_round_trip(s, "pglock-fg")
        locker.stdin.write(b"ROLLBACK;\n\\q\n")
        locker.stdin.close()
        locker.wait(timeout=10)
        after = stored_again_within(c, "pglock", 20)
        wait_until(lambda: health(hport) == (200, "ok"), timeout=5, what="/health to be green again")
        assert handles(store.rows()) == [first, after], store.rows()
    finally:
        if locker and locker.poll() is None:
            locker.kill()
            locker.wait()
        stop_ok(s)


def _refused_alone(store, bad_submit, bad_what):
    """A job the backend cannot store gets QUEUE_ERROR; another client's job
    sent at the same moment is stored as usual.  Returns the bad job's
    handle if the backend did store it (then it must replay intact)."""
    with srv(store) as s:
        c_bad, c_good = s.conn(), s.conn()
        submit(c_good, "SUBMIT_JOB_BG", "ok", "warm", "warm-up")
        bad_submit(c_bad)
        c_good.send_packet("SUBMIT_JOB_BG", "ok", "", "sent together with " + bad_what)
        p_bad = c_bad.recv_packet()
        p_good = c_good.recv_packet()
        assert p_good.name == "JOB_CREATED", \
            "a good job sent with %s got %r (%r for the bad one)" % (bad_what, p_good, p_bad)
        assert p_bad.name == "JOB_CREATED" or \
            (p_bad.name == "ERROR" and p_bad.fields(2)[0] == b"QUEUE_ERROR"), p_bad
        # and the server goes on storing: the refusal did not take the backend down
        c_good.send_packet("SUBMIT_JOB_BG", "ok", "", "right after " + bad_what)
        p = c_good.recv_packet()
        assert p.name == "JOB_CREATED", "a job submitted right after %s got %r" % (bad_what, p)
        assert p.data.decode() in handles(store.rows())
        return p_bad.data.decode() if p_bad.name == "JOB_CREATED" else None


@per_backend("postgres")
def test_job_postgres_cannot_store_fails_alone(store):
    def long_function(c):
        c.send_packet("SUBMIT_JOB_BG", "f" * 300, "", "function name longer than 255")
    _refused_alone(store, long_function, "a 300-byte function name")


@per_backend("postgres")
def test_unique_key_that_is_not_utf8_is_stored_or_refused_alone(store):
    unique = b"\xff\xfe-latin1-\xe9"

    def not_utf8(c):
        c.send_packet("SUBMIT_JOB_BG", "ok", unique, "binary unique")
    h = _refused_alone(store, not_utf8, "a unique key that is not UTF-8")
    if h is not None:
        with srv(store) as s:
            w = worker(s, "ok")
            got = {j[0]: j[2] for j in drain(w)}
            assert got.get(h) == unique, "stored with unique %r, replayed as %r" % (unique, got.get(h))


@per_backend("mysql")
def test_job_larger_than_max_allowed_packet_fails_alone_and_nothing_else_stops(store):
    # gearmand 1.1.20 retried such a job forever (its issue 126)
    def too_big(c):
        c.send_packet("SUBMIT_JOB_BG", "ok", "", b"x" * (17 << 20))
    assert _refused_alone(store, too_big, "a 17 MiB job (max_allowed_packet is 16 MiB)") is None


@per_backend("memcached")
def test_job_too_big_for_memcached_fails_alone(store):
    def too_big(c):
        c.send_packet("SUBMIT_JOB_BG", "ok", "", b"x" * (2 << 20))
    _refused_alone(store, too_big, "a 2 MiB job")


class SlowMemcached(gmtest.StubServer):
    """A memcached stand-in that answers the text protocol (version, set,
    delete, get/gets, lru_crawler metadump) from a dict, but holds every
    reply for `delay` seconds while `slow` is set: a memcached that stalls
    in the middle of a batch."""

    def __init__(self, delay):
        self.delay = delay
        self.slow = False
        self.items = {}
        super().__init__()
        self.servers = "127.0.0.1:%d" % self.port

    def _answer(self, line, body):
        words = line.split()
        cmd = words[0] if words else b""
        if cmd == b"version":
            return b"VERSION 1.6.18\r\n"
        if cmd == b"set":
            self.items[words[1]] = (int(words[2]), body)
            return b"STORED\r\n"
        if cmd == b"delete":
            return b"DELETED\r\n" if self.items.pop(words[1], None) is not None else b"NOT_FOUND\r\n"
        if cmd in (b"get", b"gets"):
            out = b""
            for k in words[1:]:
                if k in self.items:
                    flags, v = self.items[k]
                    out += b"VALUE %s %d %d%s\r\n%s\r\n" % (k, flags, len(v), b" 1" if cmd == b"gets" else b"", v)
            return out + b"END\r\n"
        if line.startswith(b"lru_crawler metadump"):
            return b"".join(b"key=%s exp=-1 la=0 cas=1 fetch=no cls=1 size=%d\n" % (k, len(v))
                            for k, (_, v) in self.items.items()) + b"END\r\n"
        return b"ERROR\r\n"

    def serve(self, c):
        buf = b""
        with c:
            while True:
                try:
                    data = c.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                out = b""
                while b"\r\n" in buf:
                    line, rest = buf.split(b"\r\n", 1)
                    body = None
                    if line.startswith(b"set "):
                        n = int(line.split()[4])
                        if len(rest) < n + 2:
                            break
                        body, rest = rest[:n], rest[n + 2:]
                    buf = rest
                    out += self._answer(line, body)
                if out:
                    if self.slow:
                        time.sleep(self.delay)
                    try:
                        c.sendall(out)
                    except OSError:
                        return


@test
def test_memcached_stalling_in_the_middle_of_a_big_batch_refuses_it_and_the_server_lives_on():
    # Batches of over 64 KiB once made libmemcached read replies back in the
    # middle of the write; a stall there closed the socket and the server
    # aborted in the next write.  Now the batch is refused (or stored), the
    # server stays up, and jobs are taken again once memcached answers.
    mc = SlowMemcached(delay=3)
    s = Server("--job-handle-prefix", PREFIX, "-q", "libmemcached", "--libmemcached-servers", mc.servers,
               "--queue-batch-delay", "50", log_level="WARNING").start()
    try:
        c = s.conn(timeout=30)
        submit(c, "SUBMIT_JOB_BG", "warm", "", b"w")
        mc.slow = True
        n = 120
        c.send(b"".join(gmtest.packet("SUBMIT_JOB_BG", "big", "", b"%d:" % i + b"x" * 2000) for i in range(n)))
        answers = [c.recv_packet() for _ in range(n)]
        mc.slow = False
        assert s.proc.poll() is None, "gearmand died: " + s.log_text()[-2000:]
        names = {p.name for p in answers}
        assert names <= {"JOB_CREATED", "ERROR"}, names
        for p in answers:
            if p.name == "ERROR":
                assert p.fields(2)[0] == b"QUEUE_ERROR", p
        submit(c, "SUBMIT_JOB_BG", "after", "", b"a")
        w = worker(s, "big", "after")
        created = sum(1 for p in answers if p.name == "JOB_CREATED")
        assert len(drain(w)) == created + 1
    finally:
        stop_ok(s)
        mc.close()


# ----------------------------------------------------------------------
# Queues written by gearmand 1.1.20 with the other backends


@per_backend("postgres")
def test_postgres_queue_written_by_gearmand_1_1_20_replays(store):
    if not os.path.exists(DEBIAN_GEARMAND):
        fail("%s is needed (Debian's gearman-job-server, which CI installs)" % DEBIAN_GEARMAND)
    old = Server(*store.args(), binary=DEBIAN_GEARMAND).start()
    try:
        c = old.conn()
        for ptype, u, data in (("SUBMIT_JOB_LOW_BG", "u-low", b"low"), ("SUBMIT_JOB_BG", "u-normal", b"nor\0mal"),
                               ("SUBMIT_JOB_HIGH_BG", "u-high", b"high")):
            submit(c, ptype, "old-pg", u, data)
    finally:
        stop_ok(old)
    s = srv(store).start()
    try:
        rows = store.rows()
        assert [r.unique for r in rows] == [b"u-low", b"u-normal", b"u-high"], rows
        assert [r.priority for r in rows] == [2, 1, 0], rows
        w = worker(s, "old-pg")
        got = [(j[2], j[3]) for j in drain(w)]
        assert got == [(b"u-high", b"high"), (b"u-normal", b"nor\0mal"), (b"u-low", b"low")], got
    finally:
        stop_ok(s)


@per_backend("redis")
def test_redis_queue_written_by_gearmand_1_1_20_replays(store):
    # gearmand 1.1.20 itself writes its keys ("<prefix>-<function>-<unique>",
    # a hash of data and priority); ours migrates them at start-up
    if not os.path.exists(DEBIAN_GEARMAND):
        fail("%s is needed (Debian's gearman-job-server, which CI installs)" % DEBIAN_GEARMAND)
    uuid = "0f8a1b2c-3d4e-11f1-8a9b-02fc00000001"
    old = Server(*store.args(), binary=DEBIAN_GEARMAND).start()
    try:
        c = old.conn()
        for ptype, fn, u, data in (("SUBMIT_JOB_LOW_BG", "oldrd", "u-low", b"low"),
                                   ("SUBMIT_JOB_BG", "oldrd", "u-normal", b"nor\0mal"),
                                   ("SUBMIT_JOB_HIGH_BG", "oldrd", "u-high", b"high"),
                                   ("SUBMIT_JOB_BG", "old-rd", uuid, b"dash in the function")):
            submit(c, ptype, fn, u, data)
    finally:
        stop_ok(old)
    old_keys = sorted(k.decode() for k in store.rd.scan(store.prefix + "-*"))
    assert old_keys == sorted("%s-%s" % (store.prefix, k) for k in (
        "oldrd-u-low", "oldrd-u-normal", "oldrd-u-high", "old-rd-" + uuid)), old_keys
    s = srv(store).start()
    try:
        assert "migrated 4 jobs" in s.log_text(), s.log_text()[-2000:]
        assert store.rd.scan(store.prefix + "-*") == [], "the old keys are still there"
        rows = store.rows()
        assert len(rows) == 4 and all(hnum(r.handle) for r in rows), rows
        w = worker(s, "oldrd", "old-rd")
        got = [(j[1], j[2], j[3]) for j in drain(w)]
        assert got[0] == ("oldrd", b"u-high", b"high"), got
        assert sorted(got[1:3]) == [("old-rd", uuid.encode(), b"dash in the function"),
                                    ("oldrd", b"u-normal", b"nor\0mal")], got
        assert got[3] == ("oldrd", b"u-low", b"low"), got
        c = s.conn()
        h_new = submit(c, "SUBMIT_JOB_BG", "oldrd", "", "new")
        assert hnum(h_new) > max(hnum(r.handle) for r in rows), (h_new, rows)
    finally:
        stop_ok(s)


@per_backend("redis")
def test_redis_without_appendonly_is_named_in_the_log(store):
    # acknowledged jobs are only as durable as Redis' own settings
    # (docs/persistence.md): a Redis that would lose them is named at start-up
    store.rd.command("CONFIG", "SET", "appendonly", "no")
    try:
        with srv(store) as s:
            lines = [ln for ln in s.log_text().splitlines() if "appendonly no" in ln]
            assert lines and "WARNING" in lines[0], s.log_text()[-2000:]
    finally:
        store.rd.command("CONFIG", "SET", "appendonly", "yes")
    with srv(store) as s:
        assert "appendonly" not in s.log_text() and "appendfsync" not in s.log_text(), s.log_text()[-2000:]


@per_backend("redis")
def test_redis_start_up_errors_name_the_option(store):
    def refused(*args):
        """Start-up must fail: returns what the server said (stderr, log)."""
        s = Server("-q", "redis", *args)
        try:
            s.start()
        except RuntimeError as e:
            return str(e) + s.log_text()
        stop_ok(s)
        fail("gearmand started with %r" % (args,))
    out = refused("--redis-port", str(gmtest.free_port()))
    assert "--redis-port" in out, out[-1000:]
    out = refused("--redis-port", str(store.rd.port), "--redis-password", "wrong")
    assert "--redis-password" in out, out[-1000:]
    with services.Redis(password="s3cret") as locked:
        out = refused("--redis-port", str(locked.port))
        assert "--redis-password" in out, out[-1000:]
        with Server("-q", "redis", "--redis-port", str(locked.port), "--redis-password", "s3cret") as s:
            c = s.conn()
            h = submit(c, "SUBMIT_JOB_BG", "pw", "u", "with a password")
            assert locked.command("HGET", "_gear_:job:" + h, "data") == b"with a password"


@per_backend("memcached")
def test_memcached_queue_written_by_gearmand_1_1_20_replays(store):
    if not os.path.exists(DEBIAN_GEARMAND):
        fail("%s is needed (Debian's gearman-job-server, which CI installs)" % DEBIAN_GEARMAND)
    old = Server(*store.args(), binary=DEBIAN_GEARMAND).start()
    try:
        c = old.conn()
        for ptype, u, data in (("SUBMIT_JOB_LOW_BG", "u-low", b"low"), ("SUBMIT_JOB_BG", "u-normal", b"nor\0mal"),
                               ("SUBMIT_JOB_HIGH_BG", "u-high", b"high")):
            submit(c, ptype, "oldmc", u, data)
    finally:
        stop_ok(old)
    assert sorted(store.keys()) == ["oldmc-u-high", "oldmc-u-low", "oldmc-u-normal"], store.keys()
    s = srv(store).start()
    try:
        w = worker(s, "oldmc")
        got = [(j[2], j[3]) for j in drain(w, complete=False)]
        assert got == [(b"u-high", b"high"), (b"u-normal", b"nor\0mal"), (b"u-low", b"low")], got
        # rewritten under handles; the old keys are gone
        keys = store.keys()
        assert not [k for k in keys if k.startswith("oldmc-")], keys
        assert len(keys) == 3 and all(k.startswith(PREFIX + ":") for k in keys), keys
    finally:
        stop_ok(s)


@per_backend("mysql")
def test_mysql_queue_written_by_gearmand_1_1_20_replays(store):
    if not os.path.exists(DEBIAN_GEARMAND):
        fail("%s is needed (Debian's gearman-job-server, which CI installs)" % DEBIAN_GEARMAND)
    now = int(time.time())
    old = Server(*store.args(), binary=DEBIAN_GEARMAND).start()
    try:
        c = old.conn()
        for ptype, u, data in (("SUBMIT_JOB_LOW_BG", "u-low", b"low"), ("SUBMIT_JOB_BG", "u-normal", b"nor\0mal"),
                               ("SUBMIT_JOB_HIGH_BG", "u-high", b"high"), ("SUBMIT_JOB_BG", "", b"empty unique")):
            submit(c, ptype, "old-my", u, data)
        submit(c, "SUBMIT_JOB_EPOCH", "old-my", b"u-epoch", b"later", str(now + 86400))
    finally:
        stop_ok(old)
    cols = [r[0] for r in store.my.sql("SELECT column_name FROM information_schema.columns WHERE "
                                       "table_schema = 'gearman' AND table_name = '%s'" % store.table)]
    assert "job_handle" not in cols and "unique_key" in cols, "not gearmand 1.1.20's table: %r" % cols
    s = srv(store).start()
    try:
        rows = store.rows()
        assert [r.unique for r in rows] == [b"u-low", b"u-normal", b"u-high", b"", b"u-epoch"], rows
        assert [r.priority for r in rows] == [2, 1, 0, 1, 1], rows
        assert all(hnum(r.handle) for r in rows), "migrated handles are not %s:<n>: %r" % (PREFIX, rows)
        assert rows[4].when == now + 86400, rows[4]
        c = s.conn()
        assert status(c, rows[4].handle) == (True, False)
        w = worker(s, "old-my")
        got = [(j[2], j[3]) for j in drain(w)]
        assert got == [(b"u-high", b"high"), (b"u-normal", b"nor\0mal"), (b"", b"empty unique"), (b"u-low", b"low")], got
        # the old (unique_key, function_name) key is gone: jobs with an empty unique key each
        # get their own row (1.1.20 refused the second), with handles above the migrated ones
        hs = [submit(c, "SUBMIT_JOB_BG", "old-my", b"", b"new %d" % i) for i in range(2)]
        assert min(hnum(h) for h in hs) > max(hnum(r.handle) for r in rows), (hs, rows)
        wait_until(lambda: handles(store.rows()) == [rows[4].handle] + hs, timeout=5,
                   what="the epoch job and the two new ones stored (have %r)" % store.rows())
    finally:
        stop_ok(s)


@per_backend("mysql")
def test_libdrizzle_spellings_and_a_unix_socket_reach_the_mysql_queue(store):
    # gearmand's libdrizzle plugin spoke to MySQL: -q libdrizzle with its
    # option names (--libdrizzle-uds: the server's socket) is -q MySQL
    my = store.my
    args = ["-q", "libdrizzle", "--libdrizzle-uds", my.socket, "--libdrizzle-user", my.user,
            "--libdrizzle-password", my.password, "--libdrizzle-db", my.db, "--libdrizzle-table", store.table,
            "--libdrizzle-mysql"]
    with Server("--job-handle-prefix", PREFIX, *args) as s:
        c = s.conn()
        h = submit(c, "SUBMIT_JOB_BG", "drizzle", "u", "over the socket")
        rows = store.rows()
        assert handles(rows) == [h] and rows[0].data == b"over the socket", rows


# ----------------------------------------------------------------------
# Tokyo Cabinet specifics


@per_backend("tokyocabinet")
def test_tokyocabinet_queue_in_gearmand_1_1_20s_layout_replays(store):
    # Debian's gearmand 1.1.20 is built without Tokyo Cabinet (its --help has
    # no libtokyocabinet options), so the file is written here with the
    # library, in reference 5.8's layout.
    now = int(time.time())
    old = [(b"old-a", b"u-low", 2, b"low", 0), (b"old-a", b"u-normal", 1, b"nor\0mal", 0),
           (b"old-b", b"u-high", 0, b"high", 0), (b"old-b", b"", 1, b"empty unique", 0),
           (b"old-a", b"u-epoch", 1, b"later", now + 86400)]
    for fn, u, prio, data, when in old:
        tcfile.put_1_1_20(store.path, fn, u, prio, data, when)
    with tcfile.TcFile(store.path) as db:
        db.put(b"stray", b"not a job in any layout")
        order = [k for k in db.keys() if k != b"stray"]   # the file's order is the migration's
    s = srv(store).start()
    try:
        log = s.log_text()
        assert "stray" in log, "the unreadable record is not logged:\n%s" % log[-2000:]
        rows = store.rows()
        assert len(rows) == 5, rows
        assert all(hnum(r.handle) for r in rows), "migrated handles are not %s:<n>: %r" % (PREFIX, rows)
        assert [r.function + b"-" + r.unique for r in rows] == order, (rows, order)
        c = s.conn()
        epoch = [r for r in rows if r.unique == b"u-epoch"][0]
        assert status(c, epoch.handle) == (True, False)
        assert epoch.when == now + 86400, epoch
        w = worker(s, "old-a", "old-b")
        got = [(j[1], j[2], j[3]) for j in drain(w)]
        # high, then the normal ones in the file's order, then low (the epoch job waits)
        want = [("old-b", b"u-high", b"high")] + [
            (f.decode(), u, d) for k in order for f, u, p, d, when in old
            if p == 1 and when == 0 and k == f + b"-" + u] + [("old-a", b"u-low", b"low")]
        assert got == want, (got, want, log[-2000:])
        h_new = submit(c, "SUBMIT_JOB_BG", "old-a", "", "new")
        assert hnum(h_new) > max(hnum(r.handle) for r in rows), (h_new, rows)
    finally:
        stop_ok(s)
    with tcfile.TcFile(store.path, "r") as db:
        assert db.get(b"stray") == b"not a job in any layout", "the unreadable record was not kept"


def start_fails(s):
    """Starts s, which must exit (not listen): its messages (stderr, log)."""
    try:
        s.start(wait=20)
    except RuntimeError as e:
        return str(e) + s.log_text()
    s.stop()
    fail("gearmand started with %r" % s.args)


@per_backend("tokyocabinet")
def test_tokyocabinet_start_up_errors_name_the_option(store):
    cases = [
        ([], "--libtokyocabinet-file"),
        (["--libtokyocabinet-file", os.path.join(store.dir, "no-such-dir", "q.tch")], "--libtokyocabinet-file"),
        (["--libtokyocabinet-file", os.path.join(store.dir, "q.txt")], "--libtokyocabinet-file"),
        (["--libtokyocabinet-file", "*"], "--libtokyocabinet-file"),
        (["--libtokyocabinet-file", store.path, "--libtokyocabinet-optimize", "maybe"],
         "--libtokyocabinet-optimize"),
    ]
    for extra, named in cases:
        out = start_fails(Server("-q", "libtokyocabinet", *extra))
        assert named in out, "%r: the message does not name %s:\n%s" % (extra, named, out[-2000:])


@per_backend("tokyocabinet")
def test_tokyocabinet_file_a_running_server_holds_stops_a_second_one_at_once(store):
    with srv(store) as s:
        c = s.conn()
        h = submit(c, "SUBMIT_JOB_BG", "held", "u", "d")
        t0 = time.time()
        out = start_fails(srv(store))
        assert "--libtokyocabinet-file" in out, out[-2000:]
        # the first one goes on
        assert status(c, h) == (True, False)
        assert time.time() - t0 < 20


@test
def test_tokyocabinet_on_a_full_disk_refuses_new_jobs_lives_on_and_holds_completions_until_there_is_room():
    # Tokyo Cabinet writes through a memory map: without the space reserved
    # before each batch, the full disk was SIGBUS and the server died
    disk = Tmpfs("4m")
    store = TokyoStore()
    store.dir, store.path = disk.dir, os.path.join(disk.dir, "queue.tch")
    s = srv(store).start()
    try:
        c = s.conn()
        made = fill_the_disk(c)
        assert s.proc.poll() is None, "gearmand died on the full disk (status %s)" % s.proc.returncode
        w = worker(s, "full")
        done = [j[0] for j in drain(w)]
        assert sorted(done) == sorted(made), (done, made)
        sync(w)
        disk.resize("16m")
        wait_until(lambda: store.rows() == [], timeout=20, what="the held completions written")
        s = kill9_and_restart(s, store)
        c = s.conn()
        back = [h for h in made if status(c, h)[0]]
        assert not back, "completed jobs came back after the restart: %s" % back
    finally:
        stop_ok(s)
        disk.close()

if __name__ == "__main__":
    gmtest.main()
