/*
 * job_store.c: the jobs (model layer of the dispatcher): their handle and
 * unique-key indexes, creation, placing (queue or timer heap), their
 * states and counts, the ends of a job (done, failed, taken back,
 * cancelled), failing a function's waiting jobs, and the graceful stop
 * that waits for the last job.  Dispatcher thread only; owns every struct
 * gm_job.  What happens after a failed attempt, the timers and dropping a
 * function are lifecycle.c's.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

/* The unique-key index (d->by_unique) holds every indexed job under one of
   two hashes, told apart by their top bit:
   - (function, key), top bit clear: the job of that function holding the
     key, found by job_unique_find when a submit may coalesce;
   - the key alone, top bit set: the head, the newest job holding a (not
     data-keyed) key in any function.  GET_STATUS_UNIQUE finds it in one
     bucket, not one lookup per function.
   The jobs that hold one key in several functions form a ring (same_key),
   newest first from the head; when the head goes, the next one heads.
   The bucket is chosen by the low bits, so the top bit costs nothing. */
#define UNIQUE_HEAD_BIT 0x80000000u

static uint64_t
unique_key_hash(const char *key, size_t len)
{
    return gm_hash_bytes(GM_HASH_SEED, key, len);
}

static uint32_t
unique_head_hash(uint64_t key_hash)
{
    return gm_hash_fold(key_hash) | UNIQUE_HEAD_BIT;
}

static uint32_t
unique_fn_hash(uint64_t key_hash, const struct gm_function *fn, bool data_keyed)
{
    uint64_t h = gm_hash_bytes(key_hash, &data_keyed, 1);
    return gm_hash_fold(gm_hash_bytes(h, &fn, sizeof fn)) & ~UNIQUE_HEAD_BIT;
}

static bool
unique_is_head(const struct gm_job *j)
{
    return (j->by_unique.hash & UNIQUE_HEAD_BIT) != 0;
}

static struct gm_job *
unique_head_find(struct gm_dispatcher *d, const char *key, size_t len, uint64_t key_hash)
{
    uint32_t h = unique_head_hash(key_hash);
    for (struct gm_hnode *n = gm_htab_bucket(&d->by_unique, h); n; n = n->next) {
        d->visits++;
        struct gm_job *j = gm_container_of(n, struct gm_job, by_unique);
        if (n->hash == h && j->unique_len == len && memcmp(gm_job_unique(j), key, len) == 0)
            return j;
    }
    return NULL;
}

struct gm_job *
job_unique_head(struct gm_dispatcher *d, const char *key, size_t len)
{
    return unique_head_find(d, key, len, unique_key_hash(key, len));
}

struct gm_job *
job_unique_find(struct gm_dispatcher *d, const struct gm_function *fn, bool data_keyed,
            const char *key, size_t len)
{
    uint64_t kh = unique_key_hash(key, len);
    if (!data_keyed) {
        /* no head: no function holds the key */
        struct gm_job *head = unique_head_find(d, key, len, kh);
        if (!head || head->fn == fn)
            return head;
    }
    uint32_t h = unique_fn_hash(kh, fn, data_keyed);
    for (struct gm_hnode *n = gm_htab_bucket(&d->by_unique, h); n; n = n->next) {
        d->visits++;
        if (n->hash != h)
            continue;
        struct gm_job *j = gm_container_of(n, struct gm_job, by_unique);
        if (j->fn != fn || !!(j->flags & GM_JOB_DATA_KEYED) != data_keyed)
            continue;
        if (data_keyed) {
            if (j->data_len == len && memcmp(gm_job_data(j), key, len) == 0)
                return j;
        } else if (j->unique_len == len && memcmp(gm_job_unique(j), key, len) == 0) {
            return j;
        }
    }
    return NULL;
}

struct gm_job *
job_find_handle(struct gm_dispatcher *d, const char *h, size_t len)
{
    uint32_t hash = gm_disp_handle_hash(h, len);
    for (struct gm_hnode *n = gm_htab_bucket(&d->by_handle, hash); n; n = n->next) {
        struct gm_job *j = gm_container_of(n, struct gm_job, by_handle);
        if (n->hash == hash && j->handle_len == len && memcmp(gm_job_handle(j), h, len) == 0)
            return j;
    }
    return NULL;
}

struct gm_job *
gm_disp_job_by_handle(struct gm_dispatcher *d, const char *h, size_t len)
{
    struct gm_job *j = job_find_handle(d, h, len);
    return j && j->state != GM_JOB_DEAD ? j : NULL;
}

bool
submit_unique_key(const struct submit *s, bool *data_keyed, const char **key, size_t *len)
{
    *data_keyed = s->unique_len == 1 && s->unique[0] == '-';
    *key = *data_keyed ? s->data : s->unique;
    *len = *data_keyed ? s->data_len : s->unique_len;
    return s->unique_len > 0 && !(*data_keyed && s->data_len == 0);
}

void
job_index_unique(struct gm_dispatcher *d, struct gm_job *job, bool data_keyed, const char *key, size_t len)
{
    job->flags |= GM_JOB_UNIQUE_INDEXED | (data_keyed ? GM_JOB_DATA_KEYED : 0);
    gm_list_init(&job->same_key);
    uint64_t kh = unique_key_hash(key, len);
    if (data_keyed) {
        gm_htab_insert(&d->by_unique, &job->by_unique, unique_fn_hash(kh, job->fn, true));
        return;
    }
    struct gm_job *head = unique_head_find(d, key, len, kh);
    if (head) {
        /* the new job heads the ring; the old head stays under its function */
        gm_htab_remove(&d->by_unique, &head->by_unique);
        gm_htab_insert(&d->by_unique, &head->by_unique, unique_fn_hash(kh, head->fn, false));
        gm_list_insert_between(&job->same_key, head->same_key.prev, &head->same_key);
    }
    gm_htab_insert(&d->by_unique, &job->by_unique, unique_head_hash(kh));
}

/* Takes a job out of the unique-key index: a head hands its place to the
   next newest job holding the key. */
void
job_unindex_unique(struct gm_dispatcher *d, struct gm_job *job)
{
    if (!(job->flags & GM_JOB_UNIQUE_INDEXED))
        return;
    job->flags &= (uint8_t)~GM_JOB_UNIQUE_INDEXED;
    gm_htab_remove(&d->by_unique, &job->by_unique);
    if (unique_is_head(job) && gm_list_linked(&job->same_key)) {
        struct gm_job *next = gm_container_of(job->same_key.next, struct gm_job, same_key);
        gm_htab_remove(&d->by_unique, &next->by_unique);
        gm_htab_insert(&d->by_unique, &next->by_unique, job->by_unique.hash);
    }
    gm_list_remove(&job->same_key);
}

void
job_enqueue(struct gm_dispatcher *d, struct gm_job *job, bool at_head)
{
    job_set_state(d, job, GM_JOB_QUEUED);
    if (at_head)
        gm_list_push_front(&job->fn->queue[job->prio], &job->link);
    else
        gm_list_push_back(&job->fn->queue[job->prio], &job->link);
    wake_workers(d, job->fn);
}

bool
job_place(struct gm_dispatcher *d, struct gm_job *job, bool or_now)
{
    if (job->when > 0 && job->when * 1000 > now_ms(d)) {
        if (gm_heap_push(&d->timers, job, job->when * 1000)) {
            job_set_state(d, job, GM_JOB_FUTURE);
            return true;
        }
        if (!or_now)
            return false;
    }
    job_enqueue(d, job, false);
    return true;
}

void
job_detach(struct gm_attach *a)
{
    gm_list_remove(&a->job_link);
    gm_list_remove(&a->peer_link);
    a->job->nclients--;
    free(a);
}

/* Frees a job in any state: unlinks it from queue/worker/heap and indexes,
   detaches its clients, adjusts the function's counts, and tells storage
   the job is gone if it was stored (or is being stored).  A STORING job's
   block and waiters stay behind (state GM_JOB_FREED) until its ADD is
   acknowledged: the pending FIFO still points at it (pending_release). */
void
job_set_state(struct gm_dispatcher *d, struct gm_job *job, int state)
{
    int was = job->state;
    job->fn->nstate[was]--;
    d->nstate[was]--;
    job->state = (uint8_t)state;
    job->fn->nstate[state]++;
    d->nstate[state]++;
    if (was == GM_JOB_RUNNING)
        wake_for_concurrency(d, job->fn);
}

/* A running job leaves its worker (job_requeue, lifecycle.c): out of the
   worker's running list and the timer heap, one more failed attempt; it is
   then counted as waiting again, in state 0 until its caller places it. */
void
job_take_back(struct gm_dispatcher *d, struct gm_job *job)
{
    gm_list_remove(&job->link);
    gm_heap_remove(&d->timers, job);
    job->reg->peer->nrunning--;
    job->reg = NULL;
    job->when = 0; /* its WORK_STATUS goes; it runs again now or after what its caller sets */
    if (job->retries < UINT8_MAX)
        job->retries++;
    job->fn->queued[job->prio]++;
    job_set_state(d, job, 0);
}

/* One job fewer in existence (freed, or become a dead letter). */
void
job_uncount(struct gm_dispatcher *d)
{
    d->job_count--;
    if (d->graceful && d->job_count == 0)
        gm_disp_request_shutdown(d, GM_STOP_NOW);
}

void
job_free(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_function *fn = job->fn;
    int was = job->state;
    if (was == GM_JOB_RUNNING)
        job->reg->peer->nrunning--;
    else if (was != GM_JOB_DEAD)
        fn->queued[job->prio]--;
    if (was == GM_JOB_PERSISTING) {
        free(job->waiters);
        job->waiters = NULL;
    }
    if (was == GM_JOB_DEAD) {
        free(job->exception);
        job->exception = NULL;
    }
    fn->nstate[was]--;
    d->nstate[was]--;
    gm_list_remove(&job->all_link);
    gm_list_remove(&job->fn_link);
    if ((job->flags & (GM_JOB_PERSISTED | GM_JOB_STORING)) && !d->tearing_down)
        persist_done(d, job);
    gm_list_remove(&job->link);
    gm_heap_remove(&d->timers, job);
    gm_htab_remove(&d->by_handle, &job->by_handle);
    job_unindex_unique(d, job);
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &job->clients) job_detach(gm_container_of(n, struct gm_attach, job_link));
    gm_block_unref(job->data_blk);
    job->data_blk = NULL;
    if (job->flags & GM_JOB_STORING)
        job->state = GM_JOB_FREED;
    else
        gm_block_unref(gm_job_block(job));
    if (was == GM_JOB_RUNNING)
        wake_for_concurrency(d, fn);
    if (was != GM_JOB_DEAD)
        job_uncount(d);
}

/* Sends a packet made of the job handle (plus an optional body) to every
   attached client, in attach order. */
void
job_tell_clients(struct gm_dispatcher *d, struct gm_job *job, uint32_t type, const struct gm_slice *body)
{
    struct gm_field_ref h = {gm_job_handle(job), job->handle_len};
    struct gm_list *n;
    gm_list_each(n, &job->clients)
    {
        struct gm_attach *a = gm_container_of(n, struct gm_attach, job_link);
        send_packet(d, a->peer->id, type, &h, 1, body);
    }
}

/* Ends a job that did not complete: WORK_FAIL to its clients, then free. */
void
job_fail(struct gm_dispatcher *d, struct gm_job *job)
{
    outcome_keep(d, job, GM_OUTCOME_FAILED, NULL, 0);
    job->fn->failed++;
    job_tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
    job_free(d, job);
}

void
gm_disp_job_cancel(struct gm_dispatcher *d, struct gm_job *job)
{
    outcome_keep(d, job, GM_OUTCOME_FAILED, NULL, 0);
    job_tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &job->clients) job_detach(gm_container_of(n, struct gm_attach, job_link));
    job->fn->failed++;
    if (job->state == GM_JOB_RUNNING || job->state == GM_JOB_PERSISTING) {
        /* It runs on unheard (or, not yet stored, is dropped once it is);
           new submissions of its unique key start a new job rather than
           join a cancelled one. */
        job->flags |= GM_JOB_IGNORED | GM_JOB_CANCELLED;
        job->flags &= (uint8_t)~GM_JOB_BACKGROUND;
        job_unindex_unique(d, job);
    } else {
        job_free(d, job);
    }
}

bool
job_attach_client(struct gm_job *job, struct gm_peer *p)
{
    struct gm_attach *a = malloc(sizeof *a);
    if (!a)
        return false;
    a->job = job;
    a->peer = p;
    gm_list_push_back(&job->clients, &a->job_link);
    gm_list_push_back(&p->waits, &a->peer_link);
    job->nclients++;
    return true;
}

/* Builds a new job (not yet queued or indexed by unique).  Small data is
   copied next to the job; data in a block of its own (`own`, a big packet)
   is kept by reference.  Returns NULL if memory is short. */
struct gm_job *
job_create(struct gm_dispatcher *d, struct gm_function *fn, const struct submit *s,
           struct gm_block *own)
{
    char made[GM_HANDLE_MAX];
    const char *handle = s->handle;
    size_t hlen = s->handle_len;
    if (!handle) {
        size_t plen = strlen(d->cfg->handle_prefix);
        memcpy(made, d->cfg->handle_prefix, plen);
        made[plen] = ':';
        hlen = plen + 1 + gm_fmt_u64(made + plen + 1, d->next_handle);
        handle = made;
    }
    /* While a durable queue is configured every job keeps a copy of its
       function's name, since the persistence thread reads only the job's
       own bytes: a background job is stored, and so is a foreground job
       that a background submit joins (submit_job). */
    bool fn_copy = d->persist.active || d->persist.on_shutdown;
    size_t text = hlen + 1 + s->unique_len + 1 + s->reducer_len + 1 +
                  (fn_copy ? fn->name_len + 1 : 0);
    size_t inline_data = own ? 0 : s->data_len;
    struct gm_block *b = gm_block_new(GM_JOB_HEAD + text + inline_data);
    if (!b)
        return NULL;
    if (!s->handle) {
        d->next_handle++;
        if (d->persist.active && d->next_handle >= d->persist.handle_hw)
            persist_counter(d);
    }
    struct gm_job *job = (struct gm_job *)(void *)b->data;
    memset(job, 0, GM_JOB_HEAD);
    job->fn = fn;
    gm_list_init(&job->link);
    gm_list_init(&job->clients);
    job->by_handle.owner_word = GM_HEAP_NONE;
    job->prio = s->prio;
    job->when = s->when;
    job->by_unique.owner_word = (uint32_t)((now_ms(d) - d->start_ms) / 1000); /* gm_job_created_s */
    job->handle_len = (uint8_t)hlen;
    job->unique_len = (uint8_t)s->unique_len;
    job->reducer_len = (uint16_t)s->reducer_len;
    char *t = job->text;
    memcpy(t, handle, hlen);
    t[hlen] = '\0';
    t += hlen + 1;
    if (s->unique_len)
        memcpy(t, s->unique, s->unique_len);
    t[s->unique_len] = '\0';
    t += s->unique_len + 1;
    if (s->reducer_len)
        memcpy(t, s->reducer, s->reducer_len);
    t[s->reducer_len] = '\0';
    t += s->reducer_len + 1;
    if (fn_copy) {
        memcpy(t, fn->name, fn->name_len + 1);
        t += fn->name_len + 1;
        job->flags |= GM_JOB_FN_COPY;
    }
    if (own) {
        job->data_off = (uint32_t)(s->data - own->data);
        job->data_blk = own;
    } else {
        if (s->data_len)
            memcpy(t, s->data, s->data_len);
        job->data_off = (uint32_t)(t - (char *)job);
    }
    job->data_len = (uint32_t)s->data_len;
    if (s->background)
        job->flags |= GM_JOB_BACKGROUND;
    gm_htab_insert(&d->by_handle, &job->by_handle, gm_disp_handle_hash(handle, hlen));
    gm_list_push_back(&d->jobs, &job->all_link);
    gm_list_push_back(&fn->jobs, &job->fn_link);
    fn->nstate[0]++;
    d->nstate[0]++;
    d->job_count++;
    return job;
}

uint64_t
gm_disp_job_count(const struct gm_dispatcher *d)
{
    return d->job_count;
}

uint64_t
gm_disp_function_fail_waiting(struct gm_dispatcher *d, struct gm_function *fn)
{
    uint64_t n = 0;
    struct gm_list *jn, *jt;
    gm_list_each_safe(jn, jt, &fn->jobs)
    {
        struct gm_job *job = gm_container_of(jn, struct gm_job, fn_link);
        if (job->state != GM_JOB_QUEUED && job->state != GM_JOB_FUTURE)
            continue;
        job_tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
        outcome_keep(d, job, GM_OUTCOME_FAILED, NULL, 0);
        job_free(d, job);
        n++;
    }
    return n;
}

/* A revived dead letter (lifecycle.c) takes its unique key back, unless a
   live job of its function has taken it since. */
void
job_reindex_unique(struct gm_dispatcher *d, struct gm_job *job)
{
    bool data_keyed = job->unique_len == 1 && gm_job_unique(job)[0] == '-';
    const char *key = data_keyed ? gm_job_data(job) : gm_job_unique(job);
    size_t len = data_keyed ? job->data_len : job->unique_len;
    if (job->unique_len == 0 || (data_keyed && len == 0) || job_unique_find(d, job->fn, data_keyed, key, len))
        return;
    job_index_unique(d, job, data_keyed, key, len);
}

void
gm_disp_request_shutdown(struct gm_dispatcher *d, int how)
{
    if (d->shutdown_requested)
        return;
    if (how == GM_STOP_NOW)
        d->shutdown_requested = true;
    if (d->hooks.request_shutdown)
        d->hooks.request_shutdown(d->hooks.arg, how);
}

void
gm_disp_begin_graceful(struct gm_dispatcher *d)
{
    d->graceful = true;
    if (d->job_count == 0)
        gm_disp_request_shutdown(d, GM_STOP_NOW);
}

