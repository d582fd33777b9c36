"""with_services: runs a command with throwaway servers.

    python3 tests/lib/with_services.py [--only mariadb] COMMAND [ARG...]

Starts PostgreSQL and memcached (or, with --only mariadb, a MariaDB alone)
with services.py (each in a temporary directory on a free port), runs
COMMAND with these variables set, stops the servers and exits with
COMMAND's status:

    GM_TEST_PG_CONNINFO   libpq connection string of the PostgreSQL
    GM_TEST_PG_STOP       shell command that stops it (immediate mode, like a crash)
    GM_TEST_PG_START      shell command that starts it again on the same port
    GM_TEST_MEMCACHED     host:port of the memcached
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


def with_mariadb(env, command):
    my = None
    try:
        try:
            my = services.MariaDB().start()
            env["GM_TEST_MYSQL"] = "127.0.0.1:%d" % my.port
            env["GM_TEST_MYSQL_STOP"], env["GM_TEST_MYSQL_START"] = my.shell_commands()
        except services.Unavailable as e:
            sys.stderr.write("with_services: MariaDB unavailable: %s\n" % e)
            my = None
        return subprocess.call(command, env=env)
    finally:
        if my:
            my.__exit__(None, None, None)


def main():
    if len(sys.argv) < 2:
        sys.stderr.write("usage: with_services.py COMMAND [ARG...]\n")
        return 2
    env = dict(os.environ)
    if sys.argv[1] == "--only" and len(sys.argv) > 3 and sys.argv[2] == "mariadb":
        return with_mariadb(env, sys.argv[3:])
    pg = mc = None
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
        return subprocess.call(sys.argv[1:], env=env)
    finally:
        if mc:
            mc.stop()
        if pg:
            pg.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
