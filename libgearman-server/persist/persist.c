/*
 * persist.c: the persistence thread (see persist.h).
 *
 * Runs on its own thread with its own libev loop and owns the backend's
 * state, the batch being written and the DONE records held while the
 * backend is down.  Group commit falls out of the loop: while one batch is
 * being made durable (an fsync, a round trip), the next one accumulates in
 * the ring, so the batch size follows the load.
 *
 * Nothing here waits for the dispatcher: acks that find the ring full wait
 * in p->spill, and the dispatcher wakes the thread once it has drained the
 * ring (persist_wants_space).  The main thread reads busy_since to report a
 * backend call that does not return (gm_persist_watch, /health).  The
 * --ha role is persist_ha.c's; the state both share is persist_int.h.
 */
#include "config.h"

#include "libgearman-server/persist/persist_int.h"
#include "libgearman-server/base/clock.h"

#include <ev.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/base/hashtab.h"
#include "libgearman-server/base/log.h"

#define ACK_SLOTS 4096
#define BACKOFF_FIRST 0.1
#define BACKOFF_MAX 5.0


int
gm_persist_channel_init(struct gm_persist_channel *ch, size_t slots)
{
    atomic_init(&ch->disp_wants_space, 0);
    atomic_init(&ch->persist_wants_space, 0);
    if (gm_prec_ring_init(&ch->records, slots) < 0)
        return -1;
    if (gm_pack_ring_init(&ch->acks, ACK_SLOTS) < 0) {
        gm_prec_ring_destroy(&ch->records);
        return -1;
    }
    return 0;
}

void
gm_prec_release(struct gm_prec *r)
{
    gm_block_unref(r->blk);
    gm_block_unref(r->data_blk);
    gm_block_unref(r->life_blk);
    r->blk = r->data_blk = r->life_blk = NULL;
}

void
gm_persist_channel_destroy(struct gm_persist_channel *ch)
{
    struct gm_prec *r;
    gm_prec_ring_publish(&ch->records);
    while ((r = gm_prec_ring_peek(&ch->records))) {
        gm_prec_release(r);
        gm_prec_ring_consume(&ch->records);
    }
    gm_prec_ring_destroy(&ch->records);
    gm_pack_ring_destroy(&ch->acks);
}

uint64_t
gm_persist_waiting_ms(const struct gm_persist *p)
{
    uint64_t since = atomic_load(&((struct gm_persist *)p)->busy_since);
    return since ? gm_mono_ms() - since : 0;
}

bool
gm_persist_healthy(const struct gm_persist *p)
{
    return atomic_load(&((struct gm_persist *)p)->healthy) != 0 &&
           gm_persist_waiting_ms(p) <= p->cfg.stall_ms;
}

void
gm_persist_watch(struct gm_persist *p)
{
    uint64_t waiting = gm_persist_waiting_ms(p);
    if (waiting > p->cfg.stall_ms && !p->stall_logged) {
        gm_log(GM_LOG_ERROR, "persistence: the %s backend has not answered for %.1f s; "
               "background submits wait, /health reports the queue unhealthy",
               p->be->name, waiting / 1000.0);
        p->stall_logged = true;
    } else if (waiting <= p->cfg.stall_ms && p->stall_logged) {
        gm_log(GM_LOG_NOTICE, "persistence: the %s backend answers again", p->be->name);
        p->stall_logged = false;
    }
}

void
gm_persist_stats(const struct gm_persist *p, struct gm_queue_stats *out)
{
    struct gm_persist *q = (struct gm_persist *)p;
    memset(out, 0, sizeof *out);
    out->batches = atomic_load(&q->batches);
    out->records = atomic_load(&q->records);
    out->failures = atomic_load(&q->failures);
}

/* Moves waiting acks into the ring while it has room and tells the
   dispatcher; returns true when none is left waiting.  When some are, the
   dispatcher is asked to wake this thread once it has drained the ring. */
static bool
acks_flush(struct gm_persist *p)
{
    if (gm_pack_spill_move(&p->spill, &p->ch->acks, &p->ch->persist_wants_space)) {
        gm_pack_ring_publish(&p->ch->acks);
        p->wake_disp(p->wake_arg);
    }
    return p->spill.head == NULL;
}

/* Keeps an ack that found the ring full, merged into the last one kept
   when it gives the same answer (acks are cumulative: "up to seq N").
   Returns false if memory is short. */
static bool
spill_ack(struct gm_persist *p, const struct gm_pack *a)
{
    struct gm_pack *last = gm_pack_spill_last(&p->spill);
    if (last && last->ok == a->ok && strcmp(last->reason, a->reason) == 0) {
        last->upto = a->upto;
        return true;
    }
    struct gm_pack_spill_node *n = malloc(sizeof *n);
    if (!n)
        return false;
    n->v = *a;
    gm_pack_spill_append(&p->spill, n);
    return true;
}

/* Tells the dispatcher about records up to seq `upto`.  Never waits for
   it: an ack that finds the ring full waits in the spill list (when
   stopping, the dispatcher is gone and such an ack is dropped). */
static void
ack(struct gm_persist *p, uint64_t upto, bool ok, const char *reason)
{
    struct gm_pack a;
    memset(&a, 0, sizeof a);
    a.upto = upto;
    a.ok = ok;
    if (reason)
        snprintf(a.reason, sizeof a.reason, "%s", reason);
    if (acks_flush(p) && gm_pack_ring_push(&p->ch->acks, &a)) {
        gm_pack_ring_publish(&p->ch->acks);
        p->wake_disp(p->wake_arg);
        return;
    }
    if (atomic_load(&p->stop))
        return;
    while (!spill_ack(p, &a)) {
        /* no memory to keep it: the dispatcher must hear it, so wait */
        acks_flush(p);
        if (gm_pack_ring_push(&p->ch->acks, &a)) {
            gm_pack_ring_publish(&p->ch->acks);
            p->wake_disp(p->wake_arg);
            return;
        }
        usleep(1000);
    }
    acks_flush(p);
}

static void
to_qrecord(const struct gm_prec *r, struct gm_qrecord *q)
{
    memset(q, 0, sizeof *q);
    q->op = r->op;
    q->priority = r->priority;
    q->when = r->when;
    q->handle = r->handle ? r->handle : r->handle_copy;
    q->handle_len = r->handle_len;
    q->function = r->function;
    q->function_len = r->function_len;
    q->unique = r->unique;
    q->unique_len = r->unique_len;
    q->data = r->data;
    q->data_len = r->data_len;
    q->lifecycle = r->life_blk ? r->life_blk->data : NULL;
    q->lifecycle_len = r->life_len;
}

static bool
same_handle(const struct gm_prec *a, const struct gm_prec *b)
{
    const char *ha = a->handle ? a->handle : a->handle_copy;
    const char *hb = b->handle ? b->handle : b->handle_copy;
    return a->handle_len == b->handle_len && memcmp(ha, hb, a->handle_len) == 0;
}

/* Marks ADD/DONE pairs of the same job within the batch as dropped: the
   job came and went between two commits, so storage need not see it. */
static void
cancel_pairs(struct gm_persist *p, size_t n)
{
    memset(p->dropped, 0, n * sizeof *p->dropped);
    uint32_t buckets = 1;
    while (buckets < n * 2)
        buckets <<= 1;
    int32_t *slot = malloc(buckets * sizeof *slot);
    if (!slot)
        return; /* no cancelling: still correct, just more writes */
    for (uint32_t i = 0; i < buckets; i++)
        slot[i] = -1;
    for (size_t i = 0; i < n; i++) {
        struct gm_prec *r = &p->batch[i];
        if (r->op == GM_QOP_COUNTER || r->op == GM_QOP_POLICY)
            continue;
        const char *h = r->handle ? r->handle : r->handle_copy;
        uint32_t pos = gm_hash_fold(gm_hash_bytes(GM_HASH_SEED, h, r->handle_len)) & (buckets - 1);
        while (slot[pos] >= 0 && !same_handle(&p->batch[slot[pos]], r))
            pos = (pos + 1) & (buckets - 1);
        if (r->op == GM_QOP_ADD) {
            /* a later ADD of the same job (its lifecycle changed)
               replaces the earlier one */
            if (slot[pos] >= 0 && p->batch[slot[pos]].op == GM_QOP_ADD && !p->dropped[slot[pos]])
                p->dropped[slot[pos]] = true;
            slot[pos] = (int32_t)i;
        } else if (slot[pos] >= 0 && p->batch[slot[pos]].op == GM_QOP_ADD &&
                   !p->dropped[slot[pos]]) {
            p->dropped[slot[pos]] = true;
            p->dropped[i] = true;
        }
    }
    free(slot);
}

static bool
hold_done(struct gm_persist *p, const struct gm_prec *r)
{
    if (p->nheld == p->held_cap) {
        size_t n = p->held_cap ? p->held_cap * 2 : 64;
        struct gm_prec *h = realloc(p->held, n * sizeof *h);
        if (!h)
            return false;
        p->held = h;
        p->held_cap = n;
    }
    struct gm_prec *c = &p->held[p->nheld++];
    memset(c, 0, sizeof *c);
    c->op = GM_QOP_DONE;
    c->handle_len = r->handle_len;
    memcpy(c->handle_copy, r->handle ? r->handle : r->handle_copy, r->handle_len);
    return true;
}

static void schedule_retry(struct gm_persist *p);
static void schedule_held_retry(struct gm_persist *p);

/* Writes the held DONEs on their own; returns true if none is left. */
static bool
flush_held(struct gm_persist *p)
{
    if (!p->nheld)
        return true;
    char err[160];
    struct gm_qrecord *q = malloc(p->nheld * sizeof *q);
    if (!q)
        return false;
    for (size_t i = 0; i < p->nheld; i++)
        to_qrecord(&p->held[i], &q[i]);
    if (be_write(p, q, p->nheld, err, sizeof err) == 0)
        p->nheld = 0;
    else
        gm_log(GM_LOG_ERROR, "persistence: cannot remove %zu completed jobs: %s", p->nheld, err);
    free(q);
    return p->nheld == 0;
}

/* Takes up to `max` records off the ring into p->batch; returns how many. */
static size_t
collect(struct gm_persist *p, size_t max)
{
    size_t n = 0;
    struct gm_prec *r;
    while (n < max && (r = gm_prec_ring_peek(&p->ch->records))) {
        if (n == p->batch_cap) {
            size_t cap = p->batch_cap ? p->batch_cap * 2 : 256;
            struct gm_prec *b = realloc(p->batch, cap * sizeof *b);
            if (b)
                p->batch = b;
            bool *dr = b ? realloc(p->dropped, cap * sizeof *dr) : NULL;
            if (dr)
                p->dropped = dr;
            if (!b || !dr)
                break;
            p->batch_cap = cap;
        }
        p->batch[n++] = *r;
        gm_prec_ring_consume(&p->ch->records);
    }
    if (n) {
        gm_prec_ring_release(&p->ch->records);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&p->ch->disp_wants_space, memory_order_relaxed) &&
            atomic_exchange(&p->ch->disp_wants_space, 0))
            p->wake_disp(p->wake_arg);
    }
    return n;
}

/* Whether a record of a failed batch leaves a DONE to write once the
   backend is back: a DONE itself, and a new job's ADD (refused to its
   submitter, but its commit may have happened unseen).  Not an update of
   a stored job (its old record stands) nor a counter. */
static bool
undone_on_failure(const struct gm_prec *r)
{
    return r->op == GM_QOP_DONE || (r->op == GM_QOP_ADD && !r->update);
}

/* Retries a failed batch one record at a time, acknowledging each, so that
   one job the backend cannot store (too big, bad bytes) fails alone. */
static void
write_one_by_one(struct gm_persist *p, size_t n)
{
    char err[160] = "";
    flush_held(p);
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = p->batch[i].seq;
        if (p->dropped[i]) {
            ack(p, seq, true, NULL);
            continue;
        }
        struct gm_qrecord q;
        to_qrecord(&p->batch[i], &q);
        if (atomic_load(&p->healthy) && be_write(p, &q, 1, err, sizeof err) == 0) {
            atomic_fetch_add(&p->records, 1);
            ack(p, seq, true, NULL);
            continue;
        }
        if (atomic_load(&p->healthy) && p->be->alive(p->state)) {
            gm_log(GM_LOG_ERROR, "persistence: %s refused one record: %s", p->be->name, err);
            if (p->batch[i].op == GM_QOP_DONE) {
                /* a completion is never dropped: it is written once the
                   backend takes it (a full disk that has room again) */
                if (hold_done(p, &p->batch[i]))
                    schedule_held_retry(p);
                else
                    gm_log(GM_LOG_ERROR, "persistence: out of memory; a completed job may run again after a restart");
            }
            ack(p, seq, false, err);
            continue;
        }
        /* the connection went meanwhile: the rest waits for the backend */
        if (undone_on_failure(&p->batch[i]))
            hold_done(p, &p->batch[i]);
        /* unhealthy before the refusal is heard: a submitter that asks
           /health on its QUEUE_ERROR finds the queue down */
        if (atomic_exchange(&p->healthy, 0))
            schedule_retry(p);
        ack(p, seq, false, err[0] ? err : "the queue backend is unavailable");
    }
    atomic_fetch_add(&p->batches, 1);
}

/* Writes one batch (plus held DONEs); acknowledges it. */
static void
write_batch(struct gm_persist *p, size_t n)
{
    uint64_t upto = p->batch[n - 1].seq;
    char err[160] = "";
    if (!atomic_load(&p->healthy)) {
        /* Down: refuse the ADDs now, keep the DONEs for later. */
        for (size_t i = 0; i < n; i++)
            if (p->batch[i].op == GM_QOP_DONE && !hold_done(p, &p->batch[i]))
                gm_log(GM_LOG_ERROR, "persistence: out of memory; a completed job may run again after a restart");
        ack(p, upto, false, "the queue backend is unavailable");
        return;
    }
    if (p->recs_cap < n + p->nheld) {
        struct gm_qrecord *q = realloc(p->recs, (n + p->nheld) * sizeof *q);
        if (!q) {
            ack(p, upto, false, "out of memory");
            return;
        }
        p->recs = q;
        p->recs_cap = n + p->nheld;
    }
    cancel_pairs(p, n);
    size_t m = 0;
    for (size_t i = 0; i < p->nheld; i++)
        to_qrecord(&p->held[i], &p->recs[m++]);
    for (size_t i = 0; i < n; i++)
        if (!p->dropped[i])
            to_qrecord(&p->batch[i], &p->recs[m++]);
    int rc = m ? be_write(p, p->recs, m, err, sizeof err) : 0;
    if (rc == 0) {
        atomic_fetch_add(&p->batches, 1);
        atomic_fetch_add(&p->records, m);
        p->nheld = 0;
        ack(p, upto, true, NULL);
        return;
    }
    atomic_fetch_add(&p->failures, 1);
    gm_log(GM_LOG_ERROR, "persistence: %s backend failed a batch of %zu records: %s", p->be->name, m,
           err);
    if (p->be->alive && p->be->alive(p->state)) {
        /* The backend refused a record, not the connection: find the bad
           ones and refuse only those jobs. */
        write_one_by_one(p, n);
        return;
    }
    /* A failed commit may still have happened (the connection died before
       the answer came): the ADDs of this batch are refused to their
       submitters, so their rows, if any, must go too.  DONEs for them are
       held with the batch's own DONEs and written when the backend is back. */
    for (size_t i = 0; i < n; i++)
        if (!p->dropped[i] && undone_on_failure(&p->batch[i]))
            hold_done(p, &p->batch[i]);
    atomic_store(&p->healthy, 0); /* before the refusal is heard (see write_one_by_one) */
    schedule_retry(p);
    ack(p, upto, false, err);
}

/* Writes everything waiting, batch by batch (all in one batch when
   stopping, so a final flush is all or nothing). */
static void
run(struct gm_persist *p, bool final)
{
    size_t n;
    while ((n = collect(p, final ? SIZE_MAX : p->cfg.batch_max)) > 0) {
        write_batch(p, n);
        for (size_t i = 0; i < n; i++)
            gm_prec_release(&p->batch[i]);
    }
}

static void
on_delay(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    run(w->data, false);
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct gm_persist *p = w->data;
    (void)revents;
    if (p->spill.head)
        acks_flush(p);
    if (atomic_load(&p->stop)) {
        run(p, true);
        if (atomic_load(&p->healthy))
            flush_held(p);
        if (p->nheld)
            gm_log(GM_LOG_WARNING, "persistence: %zu completed jobs not removed from the queue; they will run again after a restart",
                   p->nheld);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (p->cfg.delay_ms && !ev_is_active(&p->delay)) {
        ev_timer_set(&p->delay, p->cfg.delay_ms / 1000.0, 0.);
        ev_timer_start(loop, &p->delay);
        return;
    }
    if (!p->cfg.delay_ms)
        run(p, false);
}

/* Arms a retry timer unless it is armed already. */
static void
schedule(struct gm_persist *p, ev_timer *t, double after)
{
    if (ev_is_active(t))
        return;
    ev_timer_set(t, after, 0.);
    ev_timer_start(p->loop, t);
}

/* The backend is down: reconnect with backoff, or with --ha, when active,
   the lock is gone with the session: nothing more is written here. */
static void
schedule_retry(struct gm_persist *p)
{
    if (p->ha_role == GM_HA_ACTIVE) {
        if (atomic_load(&p->ha_event) == GM_HA_QUIET)
            persist_ha_report(p, GM_HA_LOST_LOCK, "the connection to the queue was lost");
        return;
    }
    if (p->ha_role == GM_HA_STANDBY)
        return; /* the lock timer reconnects */
    schedule(p, &p->retry, p->backoff);
}

/* Completions the backend refused while up are tried again with backoff,
   even when no new batch comes to carry them. */
static void
schedule_held_retry(struct gm_persist *p)
{
    schedule(p, &p->held_retry, p->held_backoff);
}

static void
on_held_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_persist *p = w->data;
    (void)loop;
    (void)revents;
    if (!atomic_load(&p->healthy) || flush_held(p)) {
        /* written, or the reconnect path will write them */
        p->held_backoff = BACKOFF_FIRST;
        return;
    }
    p->held_backoff = p->held_backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : p->held_backoff * 2;
    schedule_held_retry(p);
}

static void
on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_persist *p = w->data;
    (void)loop;
    (void)revents;
    char err[160] = "";
    if (p->be->reconnect && be_reconnect(p, err, sizeof err) == 0) {
        gm_log(GM_LOG_NOTICE, "persistence: %s backend is back", p->be->name);
        atomic_store(&p->healthy, 1);
        p->backoff = BACKOFF_FIRST;
        flush_held(p);
        run(p, false);
        return;
    }
    gm_log(GM_LOG_WARNING, "persistence: %s backend still unavailable: %s (next try in %.1fs)",
           p->be->name, err, p->backoff);
    p->backoff = p->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : p->backoff * 2;
    schedule_retry(p);
}

struct gm_persist *
gm_persist_new(const struct gm_queue_backend *be, void *state, const struct gm_persist_config *cfg,
               struct gm_persist_channel *ch, void (*wake_disp)(void *arg), void *arg)
{
    struct gm_persist *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->be = be;
    p->state = state;
    p->cfg = *cfg;
    if (p->cfg.batch_max == 0)
        p->cfg.batch_max = 1;
    if (p->cfg.stall_ms == 0)
        p->cfg.stall_ms = GM_PERSIST_STALL_MS;
    p->ch = ch;
    p->wake_disp = wake_disp;
    p->wake_arg = arg;
    p->backoff = p->held_backoff = BACKOFF_FIRST;
    atomic_init(&p->busy_since, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->healthy, 1);
    atomic_init(&p->batches, 0);
    atomic_init(&p->records, 0);
    atomic_init(&p->failures, 0);
    p->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!p->loop) {
        free(p);
        return NULL;
    }
    ev_async_init(&p->wake, on_wake);
    p->wake.data = p;
    ev_async_start(p->loop, &p->wake);
    ev_timer_init(&p->retry, on_retry, 0., 0.);
    p->retry.data = p;
    ev_timer_init(&p->delay, on_delay, 0., 0.);
    p->delay.data = p;
    ev_timer_init(&p->held_retry, on_held_retry, 0., 0.);
    p->held_retry.data = p;
    persist_ha_init(p);
    return p;
}

void
gm_persist_free(struct gm_persist *p)
{
    if (!p)
        return;
    if (p->be && p->state)
        p->be->close(p->state);
    free(p->batch);
    free(p->recs);
    free(p->dropped);
    free(p->held);
    gm_pack_spill_clear(&p->spill, NULL);
    ev_loop_destroy(p->loop);
    free(p);
}

void *
gm_persist_thread_main(void *arg)
{
    struct gm_persist *p = arg;
    gm_log_thread_name("persist");
    ev_run(p->loop, 0);
    return NULL;
}

void
gm_persist_wake(struct gm_persist *p)
{
    ev_async_send(p->loop, &p->wake);
}

void
gm_persist_stop(struct gm_persist *p)
{
    atomic_store(&p->stop, 1);
    ev_async_send(p->loop, &p->wake);
}
