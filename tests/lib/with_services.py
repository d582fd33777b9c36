"""with_services: runs a command with a throwaway PostgreSQL, memcached and Redis.

    python3 tests/lib/with_services.py COMMAND [ARG...]

Starts the servers with services.py (each in a temporary directory on a
free port), runs COMMAND with these variables set, stops the servers and
exits with COMMAND's status:

    GM_TEST_PG_CONNINFO   libpq connection string of the PostgreSQL
    GM_TEST_PG_STOP       shell command that stops it (immediate mode, like a crash)
    GM_TEST_PG_START      shell command that starts it again on the same port
    GM_TEST_MEMCACHED     host:port of the memcached
    GM_TEST_REDIS         host:port of the Redis (appendonly yes, appendfsync always)
    GM_TEST_REDIS_SOCKET  the path of its Unix socket
    GM_TEST_REDIS_STOP    shell command that kills it (-9, like a crash)
    GM_TEST_REDIS_START   shell command that starts it again on the same port and data

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


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: with_services.py COMMAND [ARG...]\n")
        return 2
    env = dict(os.environ)
    pg = mc = rd = None
    try:
        try:
            pg = services.Postgres().start()
            env["GM_TEST_PG_CONNINFO"] = pg.conninfo
            env["GM_TEST_PG_STOP"] = pg_ctl_command(pg, "stop")
            env["GM_TEST_PG_START"] = pg_ctl_command(pg, "start")
        except services.Unavailable as e:
            sys.stderr.write("with_services: PostgreSQL unavailable: %s\n" % e)
            pg = None
        try:
            mc = services.Memcached().start()
            env["GM_TEST_MEMCACHED"] = mc.servers
        except services.Unavailable as e:
            sys.stderr.write("with_services: memcached unavailable: %s\n" % e)
            mc = None
        try:
            rd = services.Redis().start()
            env["GM_TEST_REDIS"] = "127.0.0.1:%d" % rd.port
            env["GM_TEST_REDIS_SOCKET"] = rd.socket
            env["GM_TEST_REDIS_STOP"] = rd.shell("stop")
            env["GM_TEST_REDIS_START"] = rd.shell("start")
        except services.Unavailable as e:
            sys.stderr.write("with_services: Redis unavailable: %s\n" % e)
            rd = None
        return subprocess.call(sys.argv[1:], env=env)
    finally:
        if rd:
            rd.__exit__(None, None, None)
        if mc:
            mc.stop()
        if pg:
            pg.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
