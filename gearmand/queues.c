/*
 * gearmand/queues.c: the backends configure found, in one table.  Main
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
#ifdef HAVE_TOKYOCABINET
    &gm_queue_tokyocabinet,
#endif
    NULL,
};
