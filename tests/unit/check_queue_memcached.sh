#!/bin/sh
# tests/unit/check_queue_memcached.sh: runs tests/unit/check_queue_memcached under run_with_services.sh
exec sh "$(dirname "$0")/run_with_services.sh" check_queue_memcached memcached
