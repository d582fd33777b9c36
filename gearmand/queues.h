/*
 * gearmand/queues.h: the table of durable queue backends linked into this
 * gearmand, which -q chooses from (the one place that names the plugins).
 */
#ifndef GM_GEARMAND_QUEUES_H
#define GM_GEARMAND_QUEUES_H

#include "libgearman-server/persist/queue_backend.h"

/* NULL-terminated; "builtin" (memory only) is not in it: it is no backend. */
extern const struct gm_queue_backend *const gm_linked_queues[];

#endif /* GM_GEARMAND_QUEUES_H */
