"""with_services: runs a command with throwaway servers.

    python3 tests/lib/with_services.py [--only NAME[,NAME...]] COMMAND [ARG...]

Starts PostgreSQL, memcached, Redis and MariaDB (or, with --only, the named
ones: postgres, memcached, redis, mariadb) with services.py (each in a
temporary directory on a free port), runs COMMAND with these variables set,
stops the servers and exits with COMMAND's status:

    GM_TEST_PG_CONNINFO   libpq connection string of the PostgreSQL
    GM_TEST_PG_STOP       shell command that stops it (immediate mode, like a crash)
    GM_TEST_PG_START      shell command that starts it again on the same port
    GM_TEST_MEMCACHED     host:port of the memcached
    GM_TEST_REDIS         host:port of the Redis (appendonly yes, appendfsync always)
    GM_TEST_REDIS_SOCKET  the path of its Unix socket
    GM_TEST_REDIS_STOP    shell command that kills it (-9, like a crash)
    GM_TEST_REDIS_START   shell command that starts it again on the same port and data
    GM_TEST_MYSQL         host:port of the MariaDB (user, password and
                          database: gearman)
    GM_TEST_MYSQL_STOP    shell command that kills it (kill -9, like a crash)
    GM_TEST_MYSQL_START   shell command that starts it again on the same port

A service that cannot start is reported on stderr and its variables are
left unset; the command still runs (and its cases that need the service
fail, saying so).
"""

import os
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import services  # noqa: E402


def pg_ctl_command(pg, action):
    """The shell command services.Postgres runs to start or stop `pg`."""
    ctl = os.path.join(pg.bindir, "pg_ctl")
    if action == "stop":
        args = [ctl, "-D", pg.data, "-w", "-m", "immediate", "stop"]
    else:
        args = [ctl, "-D", pg.data, "-w", "-t", "30", "-l", os.path.join(pg.dir, "server.log"), "-o",
                "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on" % (pg.port, pg.dir), "start"]
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--"] + args
    return " ".join(shlex.quote(a) for a in args)


def start_postgres(env):
    pg = services.Postgres().start()
    env["GM_TEST_PG_CONNINFO"] = pg.conninfo
    env["GM_TEST_PG_STOP"] = pg_ctl_command(pg, "stop")
    env["GM_TEST_PG_START"] = pg_ctl_command(pg, "start")
    return pg.__exit__


def start_memcached(env):
    mc = services.Memcached().start()
    env["GM_TEST_MEMCACHED"] = mc.servers
    return mc.__exit__


def start_redis(env):
    rd = services.Redis().start()
    env["GM_TEST_REDIS"] = "127.0.0.1:%d" % rd.port
    env["GM_TEST_REDIS_SOCKET"] = rd.socket
    env["GM_TEST_REDIS_STOP"] = rd.shell("stop")
    env["GM_TEST_REDIS_START"] = rd.shell("start")
    return rd.__exit__


def start_mariadb(env):
    my = services.MariaDB().start()
    env["GM_TEST_MYSQL"] = "127.0.0.1:%d" % my.port
    env["GM_TEST_MYSQL_STOP"] = my.shell("stop")
    env["GM_TEST_MYSQL_START"] = my.shell("start")
    return my.__exit__


# name (for --only), what the message calls it, its starter: each sets the
# service's variables in env and returns what stops it.
SERVICES = [
    ("postgres", "PostgreSQL", start_postgres),
    ("memcached", "memcached", start_memcached),
    ("redis", "Redis", start_redis),
    ("mariadb", "MariaDB", start_mariadb),
]


def main():
    args = sys.argv[1:]
    wanted = [name for name, _, _ in SERVICES]
    if len(args) > 1 and args[0] == "--only":
        wanted = args[1].split(",")
        unknown = set(wanted) - set(name for name, _, _ in SERVICES)
        if unknown:
            sys.stderr.write("with_services: unknown service %s\n" % ", ".join(sorted(unknown)))
            return 2
        args = args[2:]
    if not args:
        sys.stderr.write("usage: with_services.py [--only NAME[,NAME...]] COMMAND [ARG...]\n")
        return 2
    env = dict(os.environ)
    stops = []
    try:
        for name, label, start in SERVICES:
            if name not in wanted:
                continue
            try:
                stops.append(start(env))
            except services.Unavailable as e:
                sys.stderr.write("with_services: %s unavailable: %s\n" % (label, e))
        return subprocess.call(args, env=env)
    finally:
        for stop in reversed(stops):
            stop(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
