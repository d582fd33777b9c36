/*
 * queue_backend.c: finding a backend by the name given to -q (see
 * queue_backend.h).  Main thread, at start-up.
 */
#include "config.h"

#include "libgearman-server/persist/queue_backend.h"

#include <string.h>
#include <strings.h>

const char *
gm_queue_opt(const struct gm_queue_options *o, const char *name)
{
    for (unsigned i = 0; i < o->nopt; i++)
        if (strcmp(o->opt[i].name, name) == 0)
            return o->opt[i].value;
    return NULL;
}

const char *
gm_queue_opt_or(const struct gm_queue_options *o, const char *name, const char *dflt)
{
    const char *v = gm_queue_opt(o, name);
    return v && *v ? v : dflt;
}

int
gm_queue_opt_set(struct gm_queue_options *o, const char *name, const char *value)
{
    for (unsigned i = 0; i < o->nopt; i++)
        if (strcmp(o->opt[i].name, name) == 0) {
            if (value) {
                o->opt[i].value = value;
            } else {
                o->opt[i] = o->opt[--o->nopt];
            }
            return 0;
        }
    if (!value)
        return 0;
    if (o->nopt == GM_QUEUE_OPTS_MAX)
        return -1;
    o->opt[o->nopt].name = name;
    o->opt[o->nopt++].value = value;
    return 0;
}

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
