"""services: throwaway PostgreSQL, MariaDB, memcached and Redis servers for tests.

Tests that need a database start their own, here, from the Debian packages
(postgresql, mariadb-server, memcached, redis-server) that tests/run-suite installs; nothing depends on a
service started by hand.  Each server lives in a temporary directory on a
free port and is stopped by stop() (or the with-block).

    with services.Postgres() as pg:
        Server("-q", "Postgres", "--libpq-conninfo", pg.conninfo) ...
        pg.restart()          # for reconnect tests
        pg.pause() ... pg.resume()   # a server that stops answering (SIGSTOP)
    with services.PostgresReplica(pg) as rep:   # a streaming replica (pg_basebackup)
        pg.synchronous(); ... rep.promote()
    with services.MariaDB() as my:
        Server("-q", "MySQL", *my.args()) ...   # --mysql-host/-port/-user/-password/-db
        my.restart(); my.pause() ... my.resume(); my.sql("SELECT ...")
    with services.Memcached() as mc:
        Server("-q", "libmemcached", "--libmemcached-servers", mc.servers) ...
    with services.Redis() as rd:
        Server("-q", "redis", "--redis-port", str(rd.port)) ...
        rd.restart()          # kill -9 and start again on the same data
        rd.command("HGETALL", key)

When the package is missing, the constructor raises services.Unavailable;
`with services.running(services.Postgres) as pg:` starts one and skips the
test instead; services.shared(services.Postgres) is one for every test of
the process.
"""

import atexit
import contextlib
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from gmtest import free_port, skip


class Unavailable(Exception):
    pass


_shared = {}


def shared(cls):
    """One started server of class cls for the whole test process (the
    first call starts it; it is stopped at exit), so the tests of one file
    save a start each; they keep apart by names of their own (tables,
    prefixes).  Skips the test (gmtest.skip) when it cannot start."""
    if cls not in _shared:
        try:
            svc = cls().start()
        except Unavailable as e:
            _shared[cls] = e
        else:
            _shared[cls] = svc
            atexit.register(svc.__exit__, None, None, None)
    svc = _shared[cls]
    if isinstance(svc, Unavailable):
        skip(str(svc))
    return svc


@contextlib.contextmanager
def running(cls):
    """A started throwaway server of class cls (Postgres, MariaDB, Redis,
    Memcached) for a with-block, stopped at its end; skips the test
    (gmtest.skip) when the package is missing or the server cannot start."""
    try:
        svc = cls().start()
    except Unavailable as e:
        skip(str(e))
    try:
        yield svc
    finally:
        svc.__exit__(None, None, None)


def _pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not dirs or not os.path.exists(os.path.join(dirs[-1], "initdb")):
        raise Unavailable("PostgreSQL server binaries not found (apt-get install postgresql)")
    return dirs[-1]


def _as_postgres(args, **kw):
    """Runs a command as the `postgres` user when we are root (initdb and
    the server refuse to run as root)."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


class Postgres:
    """A private PostgreSQL cluster on 127.0.0.1:<free port>, trust auth."""

    def __init__(self):
        self.bindir = _pg_bindir()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gmtest-pg-")
        os.chmod(self.dir, 0o777)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.conninfo = "host=127.0.0.1 port=%d user=postgres dbname=postgres" % self.port
        self.paused = []  # pids pause() stopped
        r = _as_postgres([os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust",
                          "-U", "postgres", "--no-sync"])
        if r.returncode != 0:
            raise Unavailable("initdb failed: %s" % r.stdout.decode(errors="replace")[-500:])

    def start(self):
        r = _as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "30",
                          "-l", os.path.join(self.dir, "server.log"), "-o",
                          "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on" % (self.port, self.dir),
                          "start"])
        if r.returncode != 0:
            raise Unavailable("pg_ctl start failed: %s" % r.stdout.decode(errors="replace")[-500:])
        return self

    def stop(self, mode="fast"):
        _as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-m", mode, "stop"])

    def restart(self, down_seconds=0.0):
        """Stops the server (immediate mode: like a crash), waits, starts it."""
        self.stop("immediate")
        time.sleep(down_seconds)
        self.start()

    def processes(self):
        """The postmaster's pid and those of all its children."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == master:
                children.append(int(stat.split("/")[2]))
        return [master] + children

    def pause(self):
        """Stops every process of the server with SIGSTOP: the server then
        answers nothing (its sockets stay open, and the kernel goes on
        accepting connections and acknowledging bytes).  The postmaster is
        stopped first, so it cannot fork a child that escapes.  Call
        resume() in a finally block: stop() cannot stop a paused server."""
        master = self.processes()[0]
        self.paused = [master]
        os.kill(master, signal.SIGSTOP)
        children = self.processes()[1:]
        self.paused += children
        for pid in children:
            os.kill(pid, signal.SIGSTOP)

    def resume(self):
        """Undoes pause() (harmless when not paused)."""
        for pid in self.paused:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.paused = []

    def synchronous(self, timeout=30):
        """Waits until a replica streams from this server, then makes every
        commit wait for it (synchronous_standby_names '*')."""
        deadline = time.time() + timeout
        while self.psql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").strip() in ("", "0"):
            if time.time() > deadline:
                raise RuntimeError("no replica streams from the server on port %d" % self.port)
            time.sleep(0.05)
        self.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.psql("SELECT pg_reload_conf()")

    def psql(self, sql):
        """Runs SQL with psql; returns stdout as text (raises on error)."""
        r = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("psql: %s" % r.stderr.decode(errors="replace"))
        return r.stdout.decode()

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.resume()
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresReplica(Postgres):
    """A streaming replica of the running Postgres `primary`
    (pg_basebackup -R) on its own free port; promote() makes it a primary.
    primary.synchronous() makes the primary's commits wait for it."""

    def __init__(self, primary):
        self.bindir = primary.bindir
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gmtest-pgrep-")
        os.chmod(self.dir, 0o777)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.conninfo = "host=127.0.0.1 port=%d user=postgres dbname=postgres" % self.port
        self.paused = []
        r = _as_postgres([os.path.join(self.bindir, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                          "-U", "postgres", "-D", self.data, "-R", "-X", "stream", "--no-sync"])
        if r.returncode != 0:
            raise Unavailable("pg_basebackup failed: %s" % r.stdout.decode(errors="replace")[-500:])

    def promote(self):
        """Ends recovery: the replica accepts writes from then on."""
        r = _as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "30", "promote"])
        if r.returncode != 0:
            raise RuntimeError("pg_ctl promote: %s" % r.stdout.decode(errors="replace")[-500:])


class MariaDB:
    """A private MariaDB (mariadb-install-db into a temporary directory,
    mariadbd on 127.0.0.1:<free port> and its own socket there), with a
    database `gearman` and a user `gearman` (password `gearman`) that may
    do anything; root has no password on the socket."""

    user = password = db = "gearman"

    def __init__(self):
        self.mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        install = shutil.which("mariadb-install-db")
        if not os.path.exists(self.mariadbd) or not install:
            raise Unavailable("MariaDB server not found (apt-get install mariadb-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gmtest-mariadb-")
        self.data = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.run_as = ["--user=mysql"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mysql")
        self.proc = None
        self.paused = False
        r = subprocess.run([install, "--no-defaults", "--datadir=" + self.data, "--auth-root-authentication-method=normal",
                            "--skip-test-db"] + self.run_as, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise Unavailable("mariadb-install-db failed: %s" % r.stdout.decode(errors="replace")[-500:])
        self.created = False

    def args(self):
        """gearmand's options for this server."""
        return ["--mysql-host", "127.0.0.1", "--mysql-port", str(self.port), "--mysql-user", self.user,
                "--mysql-password", self.password, "--mysql-db", self.db]

    def command(self):
        """mariadbd's command line."""
        return [self.mariadbd, "--no-defaults", "--datadir=" + self.data, "--port=%d" % self.port,
                "--bind-address=127.0.0.1", "--socket=" + self.socket, "--pid-file=" + self.pidfile,
                "--log-error=" + os.path.join(self.dir, "error.log"), "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=32M", "--character-set-server=utf8mb4",
                "--innodb-flush-log-at-trx-commit=1"] + self.run_as

    @property
    def pidfile(self):
        return os.path.join(self.dir, "pid")

    def shell(self, action):
        """A shell command that stops (kill -9, a crash) or starts this
        server, for programs that are not Python (the unit tests); start
        returns once the server answers.  (Redis.shell is the same.)"""
        stop = "kill -9 $(cat %s) 2>/dev/null; sleep 0.2" % shlex.quote(self.pidfile)
        start = ("%s >/dev/null 2>&1 & for i in $(seq 300); do mariadb --no-defaults -S %s -uroot -e 'SELECT 1' "
                 ">/dev/null 2>&1 && exit 0; sleep 0.1; done; exit 1"
                 % (" ".join(shlex.quote(a) for a in self.command()), shlex.quote(self.socket)))
        return stop if action == "stop" else start

    def start(self):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            r = subprocess.run(["mariadb", "--no-defaults", "-S", self.socket, "-uroot", "-e", "SELECT 1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                break
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise Unavailable("mariadbd did not start; see %s/error.log" % self.dir)
            time.sleep(0.1)
        if not self.created:
            self.sql("CREATE DATABASE IF NOT EXISTS gearman; CREATE USER 'gearman'@'%' IDENTIFIED BY 'gearman'; "
                     "GRANT ALL ON *.* TO 'gearman'@'%'", db="mysql")
            self.created = True
        return self

    def stop(self, kill=False):
        """Stops the server: SIGTERM and a wait (a clean shutdown), or
        SIGKILL when kill (like a crash)."""
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # one that shell("start") ran is no child of ours
        try:
            with open(self.pidfile) as f:
                os.kill(int(f.read().split()[0]), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    def restart(self, down_seconds=0.0):
        """Kills the server (SIGKILL: like a crash), waits, starts it."""
        self.stop(kill=True)
        time.sleep(down_seconds)
        self.start()

    def pause(self):
        """SIGSTOP: the server answers nothing; call resume() in a finally block."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.paused and self.proc:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def sql(self, sql, db=None, raw=False):
        """Runs SQL as root over the socket; returns the rows as lists of
        str (tab-separated output, NULL as None), or the output's bytes
        when raw (raises on error)."""
        r = subprocess.run(["mariadb", "--no-defaults", "-S", self.socket, "-uroot", "-B", "-N",
                            "-D", db or self.db, "-e", sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("mariadb: %s" % r.stderr.decode(errors="replace"))
        if raw:
            return r.stdout
        return [[None if f == "NULL" else f for f in line.split("\t")]
                for line in r.stdout.decode(errors="replace").splitlines()]

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class Memcached:
    """A private memcached on 127.0.0.1:<free port>."""

    def __init__(self, memory_mb=64):
        self.binary = shutil.which("memcached") or "/usr/bin/memcached"
        if not os.path.exists(self.binary):
            raise Unavailable("memcached not found (apt-get install memcached)")
        self.port = free_port()
        self.servers = "127.0.0.1:%d" % self.port
        self.memory_mb = memory_mb
        self.proc = None

    def start(self):
        args = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-m", str(self.memory_mb), "-U", "0"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise Unavailable("memcached did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


class Redis:
    """A private redis-server on 127.0.0.1:<free port>, its data in a
    temporary directory, with appendonly yes and appendfsync always (so
    nothing it acknowledged is lost when it is killed).  It runs as a
    daemon with a pid file, so that shell commands can stop and start it
    too (python3 services.py redis stop|start DIR PORT, which
    with_services.py hands to the unit tests)."""

    def __init__(self, password=None, port=None, dir=None):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            raise Unavailable("redis-server not found (apt-get install redis-server)")
        self.port = port or free_port()
        self.dir = dir or tempfile.mkdtemp(prefix="gmtest-redis-")
        self.pidfile = os.path.join(self.dir, "redis.pid")
        self.socket = os.path.join(self.dir, "redis.sock")   # it listens there too
        self.password = password
        self.paused = False

    def argv(self):
        a = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--unixsocket", self.socket, "--daemonize", "yes", "--pidfile", self.pidfile, "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            a += ["--requirepass", self.password]
        return a

    def start(self, wait=30):
        r = subprocess.run(self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise Unavailable("redis-server failed: %s" % r.stdout.decode(errors="replace")[-500:])
        deadline = time.time() + wait
        while True:
            try:
                if self.command("PING") == b"PONG":
                    return self
            except (OSError, RedisError):
                pass        # not listening yet, or still loading its data
            if time.time() > deadline:
                raise Unavailable("redis-server did not answer; log: %s" % self.log()[-500:])
            time.sleep(0.05)

    def pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def stop(self):
        """kill -9 (like a crash); returns once it no longer listens."""
        pid = self.pid()
        if pid is None:
            return
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        self.paused = False
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                break
            time.sleep(0.02)
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass

    def restart(self, down_seconds=0.0):
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def pause(self):
        """SIGSTOP: Redis answers nothing (the kernel still accepts
        connections).  Call resume() in a finally block."""
        os.kill(self.pid(), signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.paused and self.pid():
            os.kill(self.pid(), signal.SIGCONT)
        self.paused = False

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def command(self, *args):
        """Runs one command; returns the reply (bytes, int, list or None);
        raises RedisError for an error reply."""
        return self.pipeline([args])[0]

    def pipeline(self, commands):
        """Sends the commands at once; returns their replies (an error
        reply is returned as a RedisError, not raised)."""
        out = b""
        if self.password:
            commands = [("AUTH", self.password)] + list(commands)
        for args in commands:
            out += b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(out)
            f = s.makefile("rb")
            replies = [_resp_read(f) for _ in commands]
        if self.password:
            replies = replies[1:]
        if len(replies) == 1 and isinstance(replies[0], RedisError):
            raise replies[0]
        return replies

    def scan(self, pattern):
        """Every key matching pattern (SCAN), sorted."""
        keys, cursor = set(), b"0"
        while True:
            cursor, batch = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys.update(batch)
            if cursor == b"0":
                return sorted(keys)

    def shell(self, action):
        """A shell command that stops (kill -9) or starts this server."""
        return " ".join(shlex.quote(a) for a in (sys.executable, os.path.abspath(__file__), "redis", action,
                                                 self.dir, str(self.port)))

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise OSError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_resp_read(f) for _ in range(n)]
    raise OSError("odd reply from Redis: %r" % line[:80])


if __name__ == "__main__":
    # python3 services.py redis stop|start DIR PORT: for the unit tests'
    # GM_TEST_REDIS_STOP / GM_TEST_REDIS_START (with_services.py)
    if len(sys.argv) != 5 or sys.argv[1] != "redis" or sys.argv[2] not in ("stop", "start"):
        sys.stderr.write("usage: services.py redis stop|start DIR PORT\n")
        sys.exit(2)
    rd = Redis(port=int(sys.argv[4]), dir=sys.argv[3])
    rd.stop() if sys.argv[2] == "stop" else rd.start()
