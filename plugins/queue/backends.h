/*
 * plugins/queue/backends.h: the durable queue backends this folder
 * provides, each implementing libgearman-server/persist/queue_backend.h.  Which
 * ones are linked depends on the libraries configure found; gearmand/
 * lists them in one table.
 */
#ifndef GM_PLUGINS_QUEUE_BACKENDS_H
#define GM_PLUGINS_QUEUE_BACKENDS_H

#include "libgearman-server/persist/queue_backend.h"

/* Where -q libsqlite3 keeps its queue when --libsqlite3-db is not given:
   a file in the working directory. */
#define GM_SQLITE_DEFAULT_DB "gearmand-queue.sqlite"

extern const struct gm_queue_backend gm_queue_sqlite;    /* sqlite.c */
extern const struct gm_queue_backend gm_queue_postgres;  /* postgres.c */
extern const struct gm_queue_backend gm_queue_memcached; /* memcached.c */
extern const struct gm_queue_backend gm_queue_redis;     /* redis.c */
extern const struct gm_queue_backend gm_queue_mysql;     /* mysql.c */
extern const struct gm_queue_backend gm_queue_tokyocabinet; /* tokyocabinet.c */

#endif /* GM_PLUGINS_QUEUE_BACKENDS_H */
