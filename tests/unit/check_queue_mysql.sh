#!/bin/sh
# tests/unit/check_queue_mysql.sh: runs tests/unit/check_queue_mysql under run_with_services.sh, with a MariaDB
exec sh "$(dirname "$0")/run_with_services.sh" check_queue_mysql mariadb
