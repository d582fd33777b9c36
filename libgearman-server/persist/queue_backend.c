/*
 * queue_backend.c: finding a backend by the name given to -q (see
 * queue_backend.h).  Main thread, at start-up.
 */
#include "config.h"

#include "libgearman-server/persist/queue_backend.h"

#include <strings.h>

const struct gm_queue_backend *
gm_queue_backend_find(const struct gm_queue_backend *const *table, const char *name)
{
    for (size_t i = 0; table && table[i]; i++) {
        if (strcasecmp(table[i]->name, name) == 0)
            return table[i];
        for (const char *const *a = table[i]->aliases; a && *a; a++)
            if (strcasecmp(*a, name) == 0)
                return table[i];
    }
    return NULL;
}
