/*
 * gearmand/queues.c: the backends configure found, in one table, and those
 * it did not (gm_missing_queues: the -q error and the end of --help).  Main
 * thread, read once at start-up.
 */
#include "config.h"

#include "gearmand/queues.h"

#include "plugins/queue/backends.h"

const struct gm_queue_backend *const gm_linked_queues[] = {
#ifdef HAVE_SQLITE3
    &gm_queue_sqlite,
#endif
#ifdef HAVE_LIBPQ
    &gm_queue_postgres,
#endif
#ifdef HAVE_LIBMEMCACHED
    &gm_queue_memcached,
#endif
#ifdef HAVE_HIREDIS
    &gm_queue_redis,
#endif
#ifdef HAVE_LIBMARIADB
    &gm_queue_mysql,
#endif
#ifdef HAVE_TOKYOCABINET
    &gm_queue_tokyocabinet,
#endif
    NULL,
};

#ifndef HAVE_LIBMARIADB
static const char *const mysql_aliases[] = {"mysql", "libdrizzle", "mariadb", NULL};
#endif
#ifndef HAVE_HIREDIS
static const char *const redis_aliases[] = {"libhiredis", "hiredis", NULL};
#endif
#ifndef HAVE_TOKYOCABINET
static const char *const tokyocabinet_aliases[] = {"tokyocabinet", NULL};
#endif

const struct gm_queue_missing gm_missing_queues[] = {
#ifndef HAVE_LIBMARIADB
    {"MySQL", mysql_aliases, "libmariadb (Debian: libmariadb-dev)"},
#endif
#ifndef HAVE_HIREDIS
    {"redis", redis_aliases, "hiredis (Debian: libhiredis-dev)"},
#endif
#ifndef HAVE_TOKYOCABINET
    {"libtokyocabinet", tokyocabinet_aliases, "tokyocabinet (Debian: libtokyocabinet-dev)"},
#endif
    {NULL, NULL, NULL},
};
