/*
 * records.c: the dispatcher's records to the persistence thread (model
 * layer): a background job's ADD (with its lifecycle bytes), a finished
 * job's DONE, a function's policy, the handle counter, the jobs waiting in order for their acknowledgement (the
 * pending FIFO) and their waiting submitters, and --store-queue-on-shutdown.
 * Dispatcher thread only; owns the records spill list (records that found
 * the ring full), moved into the ring by persist_flush.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/base/log.h"

/* Adds a connection to a waiting list (grown as needed). */
bool
waiters_add(struct gm_waiters **w, gm_conn_id conn)
{
    if (!*w || (*w)->n == (*w)->cap) {
        uint32_t cap = *w ? (*w)->cap * 2 : 2;
        struct gm_waiters *nw = realloc(*w, sizeof *nw + cap * sizeof nw->conn[0]);
        if (!nw)
            return false;
        if (!*w)
            nw->n = 0;
        nw->cap = cap;
        *w = nw;
    }
    (*w)->conn[(*w)->n++] = conn;
    return true;
}

/* Queues one record for the persistence thread; false if memory is short. */
static bool
persist_push(struct gm_dispatcher *d, const struct gm_prec *r)
{
    struct gm_disp_persist *ps = &d->persist;
    int rc = gm_prec_spill_put(&ps->spill, &ps->ch->records, r, NULL);
    if (rc == 1)
        ps->produced = true;
    return rc >= 0;
}

static bool
pending_push(struct gm_dispatcher *d, uint64_t seq, struct gm_job *job)
{
    struct gm_disp_persist *ps = &d->persist;
    if (ps->pend_len == ps->pend_cap) {
        uint32_t cap = ps->pend_cap ? ps->pend_cap * 2 : 256;
        struct gm_pending *np = malloc(cap * sizeof *np);
        if (!np)
            return false;
        for (uint32_t i = 0; i < ps->pend_len; i++)
            np[i] = ps->pend[(ps->pend_head + i) % ps->pend_cap];
        free(ps->pend);
        ps->pend = np;
        ps->pend_cap = cap;
        ps->pend_head = 0;
    }
    ps->pend[(ps->pend_head + ps->pend_len) % ps->pend_cap] = (struct gm_pending){seq, job};
    ps->pend_len++;
    return true;
}

/* Sends the job's bytes to storage (the record holds references, so the
   job may end before the record is written), with its lifecycle bytes if
   `life` (the record takes that reference).  With `track`, the job waits
   in the pending FIFO for the acknowledgement; `update`: the job is stored
   already (gm_prec.update). */
static bool
persist_record_add(struct gm_dispatcher *d, struct gm_job *job, bool track, bool update, struct gm_block *life,
                   uint32_t life_len)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++d->persist.seq;
    r.op = GM_QOP_ADD;
    r.priority = job->prio;
    r.when = gm_job_stored_when(job);
    r.blk = gm_job_block(job);
    r.handle = gm_job_handle(job);
    r.handle_len = job->handle_len;
    r.function = gm_job_fn_copy(job);
    r.function_len = job->fn->name_len;
    r.unique = gm_job_unique(job);
    r.unique_len = job->unique_len;
    r.data = gm_job_data(job);
    r.data_len = job->data_len;
    r.data_blk = job->data_blk;
    r.life_blk = life;
    r.life_len = life_len;
    r.update = update;
    if (track && !pending_push(d, r.seq, job)) {
        gm_block_unref(life);
        return false;
    }
    gm_block_ref(r.blk);
    if (r.data_blk)
        gm_block_ref(r.data_blk);
    if (!persist_push(d, &r)) {
        gm_prec_release(&r);
        if (track)
            d->persist.pend_len--;
        return false;
    }
    return true;
}

bool
persist_add(struct gm_dispatcher *d, struct gm_job *job)
{
    return persist_record_add(d, job, true, false, NULL, 0);
}

/* The lifecycle bytes (version, attempts, death reason or 0, time of
   death as 8 big-endian bytes, then the exception's bytes). */
struct gm_block *
persist_lifecycle_bytes(const struct gm_job *job, uint32_t *len)
{
    bool dead = job->state == GM_JOB_DEAD;
    *len = 0;
    if (!dead && job->retries == 0)
        return NULL; /* a job that never failed: nothing to keep */
    uint32_t n = GM_LIFE_HEAD + (dead ? job->dead.exception_len : 0);
    struct gm_block *b = gm_block_new(n);
    if (!b)
        return NULL;
    unsigned char *p = (unsigned char *)b->data;
    p[0] = GM_LIFE_VERSION;
    p[1] = job->retries;
    p[2] = dead ? (unsigned char)job->dead.why : 0;
    uint64_t t = dead ? (uint64_t)job->when : 0;
    for (int i = 0; i < 8; i++)
        p[3 + i] = (unsigned char)(t >> (56 - 8 * i));
    if (dead && job->dead.exception_len)
        memcpy(p + GM_LIFE_HEAD, job->exception, job->dead.exception_len);
    *len = n;
    return b;
}

void
persist_lifecycle(struct gm_dispatcher *d, struct gm_job *job, struct gm_block *life, uint32_t life_len)
{
    if (!(job->flags & GM_JOB_PERSISTED) || !d->persist.active) {
        gm_block_unref(life);
        return;
    }
    if (!persist_record_add(d, job, false, true, life, life_len))
        gm_log(GM_LOG_ERROR, "out of memory: the attempts of %s are not stored (a restart would run it "
               "as it was stored before)", gm_job_handle(job));
}

void
persist_policy(struct gm_dispatcher *d, const struct gm_function *fn)
{
    if (!d->persist.active)
        return;
    char text[GM_POLICY_TEXT_MAX];
    size_t len = fn->policy && fn->policy->set ? gm_policy_format(&fn->policy->v, text, sizeof text) : 0;
    struct gm_block *b = gm_block_new(fn->name_len + 1 + len);
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    if (b) {
        memcpy(b->data, fn->name, fn->name_len + 1);
        memcpy(b->data + fn->name_len + 1, text, len);
        r.seq = ++d->persist.seq;
        r.op = GM_QOP_POLICY;
        r.blk = b;
        r.function = b->data;
        r.function_len = fn->name_len;
        r.data = b->data + fn->name_len + 1;
        r.data_len = (uint32_t)len;
    }
    if (!b || !persist_push(d, &r)) {
        gm_block_unref(b);
        gm_log(GM_LOG_ERROR, "out of memory: the policy of %s is not stored", fn->name);
    }
}

void
persist_done(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++d->persist.seq;
    r.op = GM_QOP_DONE;
    r.handle_len = job->handle_len;
    memcpy(r.handle_copy, gm_job_handle(job), job->handle_len);
    if (!persist_push(d, &r))
        gm_log(GM_LOG_ERROR, "out of memory: %s stays stored and will run again after a restart",
               gm_job_handle(job));
}

/* Handle numbers are reserved in chunks: storage remembers a number above
   every handle given out, so a restart never hands out an old handle again
   (gearmand restarts at 1).  The counter record goes out before the ADD that
   needed it, so no job can be stored with a number the counter misses. */
#define HANDLE_CHUNK 65536

void
persist_counter(struct gm_dispatcher *d)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++d->persist.seq;
    r.op = GM_QOP_COUNTER;
    r.when = (int64_t)(d->next_handle + HANDLE_CHUNK);
    if (persist_push(d, &r))
        d->persist.handle_hw = d->next_handle + HANDLE_CHUNK;
}

void
gm_disp_set_next_handle(struct gm_dispatcher *d, uint64_t next)
{
    if (next > d->next_handle)
        d->next_handle = next;
    if (next > d->persist.handle_hw)
        d->persist.handle_hw = next;
}

/* Publishes records (moving spilled ones into the ring first) and wakes the
   persistence thread. */
void
persist_flush(struct gm_dispatcher *d)
{
    struct gm_disp_persist *ps = &d->persist;
    if (!ps->ch)
        return;
    if (gm_prec_spill_move(&ps->spill, &ps->ch->records, &ps->ch->disp_wants_space))
        ps->produced = true;
    if (ps->produced) {
        gm_prec_ring_publish(&ps->ch->records);
        ps->produced = false;
        if (ps->wake)
            ps->wake(ps->arg);
    }
}

/* --store-queue-on-shutdown: every background job still here goes to
   storage now (the persistence thread writes them after we stop). */
void
persist_store_all(struct gm_dispatcher *d)
{
    size_t n = 0;
    for (uint32_t b = 0; b <= d->by_handle.mask; b++)
        for (struct gm_hnode *h = d->by_handle.buckets[b]; h; h = h->next) {
            struct gm_job *job = gm_container_of(h, struct gm_job, by_handle);
            if ((job->flags & GM_JOB_FN_COPY) && (job->flags & GM_JOB_BACKGROUND) &&
                !(job->flags & GM_JOB_IGNORED)) {
                uint32_t life_len;
                struct gm_block *life = persist_lifecycle_bytes(job, &life_len);
                if (persist_record_add(d, job, false, false, life, life_len))
                    n++;
            }
        }
    persist_counter(d); /* so handles of this run are not given out again */
    gm_log(GM_LOG_NOTICE, "storing %zu background jobs for the next start", n);
    /* The ring may be smaller than the queue: hand it over piece by piece. */
    persist_flush(d);
    while (d->persist.spill.head) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        persist_flush(d);
    }
}

void
gm_disp_attach_persist(struct gm_dispatcher *d, struct gm_persist_channel *ch,
                       void (*wake)(void *arg), void *arg, bool stores_epoch, bool on_shutdown)
{
    d->persist.ch = ch;
    d->persist.wake = wake;
    d->persist.arg = arg;
    d->persist.stores_epoch = stores_epoch;
    d->persist.on_shutdown = on_shutdown;
    d->persist.active = !on_shutdown;
}

void
gm_disp_set_standby(struct gm_dispatcher *d)
{
    d->persist.standby = true;
}
