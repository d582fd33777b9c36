#!/bin/sh
# tests/unit/run_with_services.sh PROGRAM [mariadb]: runs the unit test
# program tests/unit/PROGRAM with a throwaway PostgreSQL and memcached (or,
# with "mariadb", a MariaDB alone), which tests/lib/with_services.py starts,
# names in GM_TEST_PG_CONNINFO, GM_TEST_PG_STOP, GM_TEST_PG_START and
# GM_TEST_MEMCACHED (GM_TEST_MYSQL, GM_TEST_MYSQL_STOP, GM_TEST_MYSQL_START),
# and stops after.
# Each unit test that needs the services is a one-line .sh named after its
# program that calls this one (check_queue_postgres.sh,
# check_queue_memcached.sh), so that automake runs it as a test of its own.
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
    echo "not ok 1 - python3 is available to start PostgreSQL and memcached"
    exit 0
fi
if [ "$2" = mariadb ]; then
    exec "$python" "$top_srcdir/tests/lib/with_services.py" --only mariadb "$prog"
fi
exec "$python" "$top_srcdir/tests/lib/with_services.py" "$prog"
