#!/bin/sh
# tests/unit/check_queue.sh: runs the queue backend unit tests
# (tests/unit/check_queue) with a throwaway PostgreSQL and memcached, which
# tests/lib/with_services.py starts, names in GM_TEST_PG_CONNINFO,
# GM_TEST_PG_STOP, GM_TEST_PG_START and GM_TEST_MEMCACHED, and stops after.
# The program prints TAP; so does this script when it cannot run it.
top_srcdir=${TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
top_builddir=${TOP_BUILDDIR:-$top_srcdir}
prog="$top_builddir/tests/unit/check_queue"
python=${PYTHON3:-python3}

if [ ! -x "$prog" ]; then
    echo "1..1"
    echo "not ok 1 - check_queue is built ($prog missing)"
    exit 0
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "1..1"
    echo "not ok 1 - python3 is available to start PostgreSQL and memcached"
    exit 0
fi
exec "$python" "$top_srcdir/tests/lib/with_services.py" "$prog"
