#!/bin/sh
# tests/unit/check_queue_redis.sh: runs tests/unit/check_queue_redis under run_with_services.sh
exec sh "$(dirname "$0")/run_with_services.sh" check_queue_redis redis
