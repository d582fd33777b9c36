#!/bin/sh
# tests/unit/run_with_services.sh PROGRAM [SERVICE...]: runs the unit test
# program tests/unit/PROGRAM with the throwaway servers it names (postgres,
# memcached, redis, mariadb; all of them when none is named), which
# tests/lib/with_services.py starts, names in GM_TEST_PG_CONNINFO,
# GM_TEST_PG_STOP, GM_TEST_PG_START, GM_TEST_MEMCACHED, GM_TEST_REDIS,
# GM_TEST_REDIS_SOCKET, GM_TEST_REDIS_STOP, GM_TEST_REDIS_START, GM_TEST_MYSQL,
# GM_TEST_MYSQL_STOP and GM_TEST_MYSQL_START, and stops after.
# Each unit test that needs the services is a one-line .sh named after its
# program that calls this one with the servers it needs
# (check_queue_postgres.sh, check_queue_redis.sh, ...), so that automake
# runs it as a test of its own.
# The program prints TAP; so does this script when it cannot run it.
top_srcdir=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${TOP_BUILDDIR:-$top_srcdir}
name=${1:?usage: run_with_services.sh PROGRAM}
prog="$top_builddir/tests/unit/$name"
python=${PYTHON3:-python3}

if [ ! -x "$prog" ]; then
    echo "1..1"
    echo "not ok 1 - $name is built ($prog missing)"
    exit 0
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "1..1"
    echo "not ok 1 - python3 is available to start the servers"
    exit 0
fi
shift
if [ $# -gt 0 ]; then
    exec "$python" "$top_srcdir/tests/lib/with_services.py" --only "$(echo "$*" | tr ' ' ,)" "$prog"
fi
exec "$python" "$top_srcdir/tests/lib/with_services.py" "$prog"
