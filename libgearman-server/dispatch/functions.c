/*
 * functions.c: the function table (model layer of the dispatcher): find or
 * create a function by name.  Dropping one, which frees its jobs, is the
 * job store's (job_store.c).  Dispatcher thread only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdlib.h>
#include <string.h>

uint32_t
gm_disp_name_hash(const char *name, size_t len)
{
    return gm_hash_fold(gm_hash_bytes(GM_HASH_SEED, name, len));
}

struct gm_function *
gm_disp_function_find(struct gm_dispatcher *d, const char *name, size_t len)
{
    uint32_t h = gm_disp_name_hash(name, len);
    for (struct gm_hnode *n = gm_htab_bucket(&d->functions, h); n; n = n->next) {
        struct gm_function *f = gm_container_of(n, struct gm_function, hnode);
        if (n->hash == h && f->name_len == len && memcmp(f->name, name, len) == 0)
            return f;
    }
    return NULL;
}

void
gm_disp_function_free(struct gm_function *fn)
{
    free(fn->policy);
    free(fn);
}

struct gm_function *
gm_disp_function_get(struct gm_dispatcher *d, const char *name, size_t len)
{
    struct gm_function *f = gm_disp_function_find(d, name, len);
    if (f)
        return f;
    f = calloc(1, sizeof *f + len + 1);
    if (!f)
        return NULL;
    for (int i = 0; i < GM_PRIO_COUNT; i++)
        gm_list_init(&f->queue[i]);
    gm_list_init(&f->sleepers);
    gm_list_init(&f->jobs);
    gm_list_init(&f->dead);
    f->serial = d->next_fn_serial++;
    f->name_len = (uint32_t)len;
    memcpy(f->name, name, len);
    f->name[len] = '\0';
    gm_htab_insert(&d->functions, &f->hnode, gm_disp_name_hash(name, len));
    gm_list_push_back(&d->function_list, &f->link);
    d->function_count++;
    return f;
}
