/*
 * queue_backend.h: the contract between the core and a durable queue
 * backend (plugins/queue/: SQLite, PostgreSQL, memcached; "builtin" is no
 * backend at all).
 *
 * A backend stores background jobs and gives them back at start-up.  It is
 * driven by exactly one thread, the persistence thread (persist.c), which
 * hands it batches: write_batch() must make the whole batch durable (one
 * transaction, one fsync) or none of it, and say which.  Nothing here is
 * called from the dispatcher or the I/O threads.
 *
 * Stored job identity is the job handle: every acknowledged background
 * job has its own row, whatever its unique key (gearmand 1.1.20 keyed rows
 * on (unique, function), so jobs with an empty or repeated unique key
 * overwrote each other).  A queue written by gearmand 1.1.20 (its table
 * layout, without handles) is migrated by open() in one transaction: each
 * row gets the handle "<handle_prefix>:<n>" with n from its old row order.
 */
#ifndef GM_QUEUE_BACKEND_H
#define GM_QUEUE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gm_qop {
    GM_QOP_ADD = 1,    /* store this job */
    GM_QOP_DONE = 2,   /* forget the job with this handle */
    GM_QOP_COUNTER = 3,/* remember `when` as the next handle number (never reuse a handle) */
    GM_QOP_POLICY = 4  /* remember the lifecycle policy of `function`, given as text in `data`
                          ("retries=3,backoff=1000,..."); 0 bytes: forget it.  No handle.
                          Ignored by a backend without load_policies. */
};

/* One record of a batch.  Pointers stay valid for the call. */
struct gm_qrecord {
    uint8_t op;          /* enum gm_qop */
    uint8_t priority;    /* 0 high, 1 normal, 2 low (gearmand's numbering) */
    int64_t when;        /* Unix time to run at; 0 = now */
    const char *handle;
    const char *function;
    const char *unique;
    const char *data;
    uint32_t handle_len, function_len, unique_len, data_len;
    /* ADD: bytes the core keeps with the job (its attempts and, for a dead
       letter, why and when it died: dispatch/lifecycle.c), opaque to the
       backend, stored as given and given back by replay(); 0 bytes for a
       job that never failed. */
    const char *lifecycle;
    uint32_t lifecycle_len;
};

/* One stored job, as replay() reports it. */
struct gm_qrow {
    const char *handle;
    const char *function;
    const char *unique;
    const char *data;
    uint32_t handle_len, function_len, unique_len, data_len;
    int priority;            /* 0..2; other values are reported as bad rows */
    int64_t when;
    const char *lifecycle;   /* as stored by ADD (NULL or 0 bytes: none) */
    uint32_t lifecycle_len;
};

/* Called by load_policies() for each stored policy (GM_QOP_POLICY). */
typedef void (*gm_qpolicy_cb)(void *arg, const char *function, size_t function_len, const char *policy,
                              size_t policy_len);

/* Called by replay() for each row; returns 0 when the row was replayed, 1
   when it was not (it stays stored; the callback logs why), -1 to stop
   (that row not replayed). */
typedef int (*gm_qrow_cb)(void *arg, const struct gm_qrow *row);

#define GM_QUEUE_OPTS_MAX 32

/* What a backend is opened with: the core's own settings, and the
   backend's options as name/value pairs named as gearmand's options are
   without their dashes ("libsqlite3-db"), so the core names no backend:
   gearmand/ fills them, each backend reads its own (gm_queue_opt).  With
   --ha, "ha-timeout" (seconds) is given too: the most any call may wait. */
struct gm_queue_options {
    bool store_on_shutdown;         /* --store-queue-on-shutdown */
    const char *handle_prefix;      /* for handles given to migrated rows */
    struct {
        const char *name, *value;
    } opt[GM_QUEUE_OPTS_MAX];
    unsigned nopt;
};

/* The value of backend option name, or NULL if it was not given. */
const char *gm_queue_opt(const struct gm_queue_options *o, const char *name);

/* The value of backend option name, or dflt if it was not given or is
   empty. */
const char *gm_queue_opt_or(const struct gm_queue_options *o, const char *name, const char *dflt);

/* Sets backend option name (a later value replaces an earlier one; value
   NULL removes it); returns -1 if the table is full. */
int gm_queue_opt_set(struct gm_queue_options *o, const char *name, const char *value);

struct gm_queue_stats {
    uint64_t batches, records, failures;
};

struct gm_queue_backend {
    const char *name;          /* "libsqlite3", "Postgres", "libmemcached" */
    const char *const *aliases;/* NULL-terminated other names for -q */
    bool stores_epoch;         /* false: epoch/sched jobs are refused (QUEUE_ERROR) */
    bool stores_on_shutdown;   /* honours --store-queue-on-shutdown (gearmand: libsqlite3
                                  only); other backends store every job as it comes */

    /* Connects/opens and prepares storage (creating the table if needed).
       Returns a backend state, or NULL with a reason in err. */
    void *(*open)(const struct gm_queue_options *opts, char *err, size_t errlen);

    /* Streams every stored job to cb, in the order they were stored.  A row
       that cannot be read is logged and kept.
       With store_on_shutdown, the rows cb replayed are removed afterwards
       and only those.  Returns 0, or -1 with a reason in err if the storage
       cannot be read. */
    int (*replay)(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen);

    /* Applies a batch atomically: returns 0 if every record is durable, -1
       (reason in err) if none is.  ADD of a handle already stored replaces
       it; DONE of an unknown handle is not an error. */
    int (*write_batch)(void *state, const struct gm_qrecord *recs, size_t n, char *err,
                       size_t errlen);

    /* Gives every stored policy (GM_QOP_POLICY) to cb, the oldest first;
       returns 0 or -1 with a reason in err.  NULL: policies are not stored
       (the backend ignores GM_QOP_POLICY). */
    int (*load_policies)(void *state, gm_qpolicy_cb cb, void *arg, char *err, size_t errlen);

    /* Reads the stored handle counter (GM_QOP_COUNTER) into *next, 0 if
       none was stored; returns 0 or -1 with a reason in err. */
    int (*load_counter)(void *state, uint64_t *next, char *err, size_t errlen);

    /* After a failed write_batch: true if the backend itself is still fine
       (a record was refused, not the connection lost), so the batch may be
       retried record by record.  NULL: never. */
    bool (*alive)(void *state);

    /* Tries to restore a lost connection; returns 0 when usable again. */
    int (*reconnect)(void *state, char *err, size_t errlen);

    /* --ha (servers sharing one queue, one of them active at a time): takes
       the lock that makes this server the active one, on the backend's own
       session, if it is free; once held, checks that the session, and so
       the lock, is still there.  Returns 1 (held), 0 (another server holds
       it), -1 (the session is lost, and the lock with it; reason in err).
       Bounded by the "ha-timeout" option.  NULL: the queue cannot be
       shared (--ha is refused). */
    int (*lead)(void *state, char *err, size_t errlen);

    /* Closes and frees the state. */
    void (*close)(void *state);
};

/* The backends linked into this build, NULL-terminated (gearmand/ fills it
   from plugins/; the core never names a plugin). */
const struct gm_queue_backend *gm_queue_backend_find(const struct gm_queue_backend *const *table,
                                                     const char *name);

#endif /* GM_QUEUE_BACKEND_H */
