/*
 * gearmand/queues.h: the table of durable queue backends linked into this
 * gearmand, which -q chooses from (the one place that names the plugins).
 */
#ifndef GM_GEARMAND_QUEUES_H
#define GM_GEARMAND_QUEUES_H

#include "libgearman-server/persist/queue_backend.h"

/* NULL-terminated; "builtin" (memory only) is not in it: it is no backend. */
extern const struct gm_queue_backend *const gm_linked_queues[];

/* The backends this build lacks because configure did not find their
   library: -q with one of their names says so.  Ends with a NULL name. */
struct gm_queue_missing {
    const char *name;
    const char *const *aliases; /* NULL-terminated */
    const char *library;        /* what to install, for the message */
};
extern const struct gm_queue_missing gm_missing_queues[];

#endif /* GM_GEARMAND_QUEUES_H */
