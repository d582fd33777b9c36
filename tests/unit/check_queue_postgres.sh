#!/bin/sh
# tests/unit/check_queue_postgres.sh: runs tests/unit/check_queue_postgres under run_with_services.sh
exec sh "$(dirname "$0")/run_with_services.sh" check_queue_postgres postgres
