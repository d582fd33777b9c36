/*
 * outcomes.c: kept outcomes (model layer of the dispatcher): what became of
 * a finished background job, readable by its handle (`show job`, the HTTP
 * API) for --keep-results seconds after it ended.
 *
 * Owns the outcomes: each a copy of the job's handle, function, unique key,
 * state (complete or failed), attempts, finish time and the first
 * --keep-results-bytes of its result, in one allocation, indexed by handle
 * and kept oldest first.  Bounded: an outcome older than --keep-results is
 * never shown and is freed at the next one kept; past GM_OUTCOMES_MEMORY
 * bytes in all, the oldest go first (counted).  Only background jobs leave
 * an outcome: a foreground job's client was given its result.
 *
 * Dispatcher thread only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdlib.h>
#include <string.h>

struct gm_outcome {
    struct gm_hnode by_handle;
    struct gm_list link;         /* d->outcomes.fifo, oldest first */
    int64_t finished_ms;
    uint32_t size;               /* this allocation */
    uint32_t result_len;         /* bytes kept */
    uint32_t function_len;
    uint8_t handle_len, unique_len;
    uint8_t state;               /* enum gm_outcome_state */
    uint8_t attempts;
    char text[];                 /* handle\0function\0unique\0 then the result */
};

static void
outcome_free(struct gm_dispatcher *d, struct gm_outcome *o)
{
    gm_htab_remove(&d->outcomes.index, &o->by_handle);
    gm_list_remove(&o->link);
    d->outcomes.bytes -= o->size;
    d->outcomes.count--;
    free(o);
}

/* Frees the outcomes past their time, and the oldest while over memory. */
static void
outcomes_trim(struct gm_dispatcher *d, int64_t now)
{
    int64_t keep_ms = (int64_t)d->cfg->keep_results_s * 1000;
    struct gm_list *n;
    while ((n = gm_list_first(&d->outcomes.fifo))) {
        struct gm_outcome *o = gm_container_of(n, struct gm_outcome, link);
        if (now - o->finished_ms < keep_ms && d->outcomes.bytes <= GM_OUTCOMES_MEMORY)
            return;
        if (now - o->finished_ms < keep_ms)
            d->outcomes.dropped++;
        outcome_free(d, o);
    }
}

void
outcome_keep(struct gm_dispatcher *d, const struct gm_job *job, enum gm_outcome_state state, const char *result,
             size_t result_len)
{
    if (!d->cfg->keep_results_s || !(job->flags & GM_JOB_BACKGROUND))
        return;
    if (!d->outcomes.index.buckets && gm_htab_init(&d->outcomes.index, 1024) < 0)
        return;
    uint32_t kept = result_len < d->cfg->keep_results_bytes ? (uint32_t)result_len : d->cfg->keep_results_bytes;
    size_t size = sizeof(struct gm_outcome) + job->handle_len + 1 + job->fn->name_len + 1 + job->unique_len + 1 +
                  kept;
    struct gm_outcome *o = malloc(size);
    if (!o)
        return; /* an outcome is a convenience: the job itself is done */
    o->finished_ms = now_ms(d);
    o->size = (uint32_t)size;
    o->result_len = kept;
    o->function_len = job->fn->name_len;
    o->handle_len = job->handle_len;
    o->unique_len = job->unique_len;
    o->state = (uint8_t)state;
    /* a running job's attempt is not counted in retries yet */
    unsigned attempts = job->retries + (job->state == GM_JOB_RUNNING);
    o->attempts = attempts < UINT8_MAX ? (uint8_t)attempts : UINT8_MAX;
    char *t = o->text;
    memcpy(t, gm_job_handle(job), job->handle_len + 1u);
    t += job->handle_len + 1;
    memcpy(t, job->fn->name, job->fn->name_len + 1u);
    t += job->fn->name_len + 1;
    memcpy(t, gm_job_unique(job), job->unique_len);
    t[job->unique_len] = '\0';
    t += job->unique_len + 1;
    if (kept)
        memcpy(t, result, kept);
    /* a handle is never given twice, but a replayed queue may hold one
       that finished before: the newer outcome wins */
    struct gm_outcome *old = (struct gm_outcome *)outcome_find(d, gm_job_handle(job), job->handle_len);
    if (old)
        outcome_free(d, old);
    gm_htab_insert(&d->outcomes.index, &o->by_handle, gm_disp_handle_hash(o->text, o->handle_len));
    gm_list_push_back(&d->outcomes.fifo, &o->link);
    d->outcomes.bytes += size;
    d->outcomes.count++;
    outcomes_trim(d, o->finished_ms);
}

const struct gm_outcome *
outcome_find(struct gm_dispatcher *d, const char *handle, size_t len)
{
    if (!d->outcomes.index.buckets)
        return NULL;
    uint32_t h = gm_disp_handle_hash(handle, len);
    for (struct gm_hnode *n = gm_htab_bucket(&d->outcomes.index, h); n; n = n->next) {
        const struct gm_outcome *o = gm_container_of(n, struct gm_outcome, by_handle);
        if (n->hash == h && o->handle_len == len && memcmp(o->text, handle, len) == 0)
            return now_ms(d) - o->finished_ms < (int64_t)d->cfg->keep_results_s * 1000 ? o : NULL;
    }
    return NULL;
}

void
outcome_view(const struct gm_outcome *o, struct gm_outcome_view *v)
{
    v->handle = o->text;
    v->handle_len = o->handle_len;
    v->function = o->text + o->handle_len + 1;
    v->function_len = o->function_len;
    v->unique = v->function + o->function_len + 1;
    v->unique_len = o->unique_len;
    v->result = v->unique + o->unique_len + 1;
    v->result_len = o->result_len;
    v->state = o->state;
    v->attempts = o->attempts;
    v->finished_ms = o->finished_ms;
}

void
outcomes_free(struct gm_dispatcher *d)
{
    struct gm_list *n;
    while ((n = gm_list_first(&d->outcomes.fifo)))
        outcome_free(d, gm_container_of(n, struct gm_outcome, link));
    if (d->outcomes.index.buckets)
        gm_htab_destroy(&d->outcomes.index);
}
