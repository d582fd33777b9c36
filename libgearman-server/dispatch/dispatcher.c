/*
 * dispatcher.c: the dispatcher on top of its model and handler layers (see
 * dispatcher.h): creation and teardown, draining the inbound rings into
 * the handler of each message (a table by packet type), flushing replies
 * and records, and the libev glue (its own loop, or one I/O thread's).
 *
 * Replies are bounded before they exist: a peer whose listings (admin
 * text replies, front-end responses) queued since its I/O thread last took
 * every reply pass round_limit gets its next admin line, and everything
 * after it, held back in order until the I/O thread has taken them
 * (hold_request); and no request is taken while a port's spill list holds
 * SPILL_MAX replies.  A client that pipelines `status` lines and never
 * reads thus costs the dispatcher one round's worth at a time, and the I/O
 * thread closes it at --max-output-size.
 *
 * Runs on the dispatcher thread only (the unit tests drive it by hand).
 * The files of the dispatcher, from the bottom up:
 *   model:    reply.c, functions.c, sleepers.c, records.c, job_store.c,
 *             acks.c, replay.c, workers.c, access.c, peers.c (dispatcher_int.h)
 *   handlers: on_client.c, on_worker.c, admin.c, view.c (handlers.h)
 *   top:      dispatcher.c
 * Compatibility notes live next to the code they concern; the deliberate
 * differences from gearmand 1.1.20 (global priority, epoch timer, SCHED,
 * CAN_DO_TIMEOUT failing the job, clean WORK_FAIL) are listed in
 * docs/compatibility.md.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include "libgearman-server/dispatch/handlers.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/base/clock.h"
#include "libgearman-server/base/log.h"

#define DRAIN_BURST 64      /* messages taken from one ring before visiting the next */
#define LOOP_BUDGET 4096    /* messages per loop iteration before timers and flushing */
/* Replies waiting off a full outbound ring past which no request is taken
   until the I/O thread has taken some: the spill list stays bounded. */
#define SPILL_MAX 65536

/* The handler of each packet type a peer may send.  The I/O thread
   answers types a client may not send; anything else without a handler is
   a server-to-client type. */
static gm_disp_handler *const handlers[] = {
    [GM_PKT_SUBMIT_JOB] = on_submit,
    [GM_PKT_SUBMIT_JOB_BG] = on_submit,
    [GM_PKT_SUBMIT_JOB_HIGH] = on_submit,
    [GM_PKT_SUBMIT_JOB_HIGH_BG] = on_submit,
    [GM_PKT_SUBMIT_JOB_LOW] = on_submit,
    [GM_PKT_SUBMIT_JOB_LOW_BG] = on_submit,
    [GM_PKT_SUBMIT_JOB_EPOCH] = on_submit,
    [GM_PKT_SUBMIT_JOB_SCHED] = on_submit,
    [GM_PKT_SUBMIT_REDUCE_JOB] = on_submit,
    [GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND] = on_submit,
    [GM_PKT_CAN_DO] = on_can_do,
    [GM_PKT_CAN_DO_TIMEOUT] = on_can_do,
    [GM_PKT_CANT_DO] = on_cant_do,
    [GM_PKT_RESET_ABILITIES] = on_reset_abilities,
    [GM_PKT_PRE_SLEEP] = on_pre_sleep,
    [GM_PKT_GRAB_JOB] = on_grab,
    [GM_PKT_GRAB_JOB_UNIQ] = on_grab,
    [GM_PKT_GRAB_JOB_ALL] = on_grab,
    [GM_PKT_WORK_STATUS] = on_work,
    [GM_PKT_WORK_COMPLETE] = on_work,
    [GM_PKT_WORK_FAIL] = on_work,
    [GM_PKT_WORK_EXCEPTION] = on_work,
    [GM_PKT_WORK_DATA] = on_work,
    [GM_PKT_WORK_WARNING] = on_work,
    [GM_PKT_GET_STATUS] = on_get_status,
    [GM_PKT_GET_STATUS_UNIQUE] = on_get_status_unique,
    [GM_PKT_OPTION_REQ] = on_option,
    [GM_PKT_SET_CLIENT_ID] = on_set_client_id,
    [GM_PKT_ECHO_REQ] = on_echo,
};

static void
on_packet(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    if (m->type == GM_PKT_ALL_YOURS)
        return; /* accepted and ignored: it only tells us the worker is ours */
    if (m->type < sizeof handlers / sizeof handlers[0] && handlers[m->type])
        handlers[m->type](d, p, m);
    else
        send_error(d, p->id, "INVALID_COMMAND", "Command not expected");
}

/* Drops one message's block reference; consecutive messages from the same
   block (the common case: one socket read) cost one atomic operation. */
static void
release_in(struct gm_dispatcher *d, struct gm_block *b)
{
    if (!b)
        return;
    if (b == d->unref_blk) {
        d->unref_n++;
        return;
    }
    if (d->unref_blk)
        gm_block_unref_n(d->unref_blk, d->unref_n);
    d->unref_blk = b;
    d->unref_n = 1;
}

static void
release_flush(struct gm_dispatcher *d)
{
    if (d->unref_blk)
        gm_block_unref_n(d->unref_blk, d->unref_n);
    d->unref_blk = NULL;
    d->unref_n = 0;
}

/* One message to its handler; p is its peer (NULL: none, or an OPEN). */
static void
handle_in(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    switch (m->kind) {
    case GM_IN_OPEN:
        peer_open(d, m);
        break;
    case GM_IN_CLOSE:
        peer_close(d, m->conn);
        break;
    case GM_IN_PACKET:
        if (p)
            on_packet(d, p, m);
        break;
    case GM_IN_TEXT:
        if (p)
            gm_admin_execute(d, p, m);
        break;
    case GM_IN_FRONTEND:
        if (p)
            on_frontend(d, p, m);
        break;
    default:
        break;
    }
    release_in(d, m->blk);
}

/* Holds m back behind p's other held requests (taking over its block
   reference); false if memory is short (it is handled now instead). */
static bool
hold_request(struct gm_dispatcher *d, struct gm_peer *p, const struct gm_in *m)
{
    struct gm_held *h = malloc(sizeof *h);
    if (!h)
        return false;
    h->next = NULL;
    h->m = *m;
    if (p->held_tail)
        p->held_tail->next = h;
    else
        p->held_head = h;
    p->held_tail = h;
    if (!gm_list_linked(&p->held_link)) {
        gm_list_push_back(&d->held_peers, &p->held_link);
        d->ports[gm_conn_thread(p->id)].held++;
    }
    return true;
}

static void
unlist_held(struct gm_dispatcher *d, struct gm_peer *p)
{
    if (gm_list_linked(&p->held_link)) {
        gm_list_remove(&p->held_link);
        d->ports[gm_conn_thread(p->id)].held--;
    }
}

/* Teardown: p's held requests go unanswered. */
static void
drop_held(struct gm_dispatcher *d, struct gm_peer *p)
{
    while (p->held_head) {
        struct gm_held *h = p->held_head;
        p->held_head = h->next;
        release_in(d, h->m.blk);
        free(h);
    }
    p->held_tail = NULL;
    unlist_held(d, p);
}

/* Hands p's held requests to their handlers in order: while its round
   allows listings, or all of them when it is leaving (leaving: its admin
   lines and front-end requests are dropped, since nobody will read their
   answers; its packets still count: a submit is a submit). */
static void
run_held(struct gm_dispatcher *d, struct gm_peer *p, bool leaving)
{
    size_t dropped = 0;
    while (p->held_head) {
        struct gm_held *h = p->held_head;
        bool listing = h->m.kind == GM_IN_TEXT || h->m.kind == GM_IN_FRONTEND;
        if (!leaving && h->m.kind == GM_IN_TEXT && over_round(d, p))
            break;
        p->held_head = h->next;
        if (!p->held_head)
            p->held_tail = NULL;
        if (leaving && listing) {
            release_in(d, h->m.blk);
            dropped++;
        } else {
            handle_in(d, p, &h->m);
        }
        free(h);
    }
    if (dropped)
        gm_log(GM_LOG_WARNING, "%s:%u left with %zu requests unanswered (its replies were not read)",
               p->addr, (unsigned)p->port, dropped);
    if (!p->held_head)
        unlist_held(d, p);
}

/* One inbound message: to its handler, or held back behind its peer's
   held requests, or (an admin line of a peer over its round) held first. */
static void
take_in(struct gm_dispatcher *d, struct gm_in *m)
{
    struct gm_peer *p = m->kind == GM_IN_OPEN ? NULL : gm_disp_peer(d, m->conn);
    if (p && p->held_head) {
        if (m->kind == GM_IN_CLOSE)
            run_held(d, p, true);
        else if (hold_request(d, p, m))
            return;
    } else if (p && m->kind == GM_IN_TEXT && over_round(d, p) && hold_request(d, p, m)) {
        return;
    }
    handle_in(d, p, m);
}

/* Starts a new round on each port whose I/O thread has taken every reply
   queued so far, and runs the held requests of its peers. */
static void
next_rounds(struct gm_dispatcher *d)
{
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        if (!port->spill.head && gm_out_ring_drained(&port->ch->out))
            port->round++;
    }
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &d->held_peers)
        run_held(d, gm_container_of(n, struct gm_peer, held_link), false);
}

/* Whether a port's spill list is full (after moving what fits into its
   ring): then no request is taken until its I/O thread takes replies. */
static bool
spill_full(struct gm_dispatcher *d)
{
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        if (port->spill.len < SPILL_MAX)
            continue;
        if (gm_out_spill_move(&port->spill, &port->ch->out, &port->ch->disp_wants_space))
            port->produced = true;
        if (port->spill.len >= SPILL_MAX)
            return true;
    }
    return false;
}

size_t
gm_disp_drain(struct gm_dispatcher *d, size_t budget)
{
    size_t done = 0;
    bool any = true;
    if (spill_full(d))
        return 0;
    drain_acks(d);
    d->drain_now_ms = d->hooks.now_ms(d->hooks.arg);
    if (atomic_load_explicit(&d->acl_next, memory_order_relaxed))
        access_take_table(d);
    next_rounds(d);
    while (any && done < budget) {
        any = false;
        for (unsigned t = 0; t < d->nports; t++) {
            struct gm_in_ring *r = &d->ports[t].ch->in;
            for (int k = 0; k < DRAIN_BURST && done < budget; k++) {
                struct gm_in *m = gm_in_ring_peek(r);
                if (!m)
                    break;
                take_in(d, m);
                gm_in_ring_consume(r);
                done++;
                any = true;
            }
            gm_in_ring_release(r);
        }
    }
    d->drain_now_ms = 0;
    release_flush(d);
    return done;
}

void
gm_disp_flush(struct gm_dispatcher *d)
{
    release_flush(d);
    drain_acks(d);
    persist_flush(d);
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        struct gm_channel *ch = port->ch;
        bool wake = false;
        if (gm_out_spill_move(&port->spill, &ch->out, &ch->disp_wants_space))
            port->produced = true;
        if (port->produced) {
            gm_out_ring_publish(&ch->out);
            port->produced = false;
            wake = true;
        }
        if (port->held)
            atomic_store(&ch->disp_wants_space, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (port->held && gm_out_ring_drained(&ch->out) && d->loop)
            gm_disp_wake(d); /* taken already: the I/O thread may not have seen the flag */
        if (atomic_load_explicit(&ch->io_wants_space, memory_order_relaxed) &&
            atomic_exchange(&ch->io_wants_space, 0))
            wake = true;
        if (wake && d->hooks.wake_io)
            d->hooks.wake_io(d->hooks.arg, t);
    }
}

static int64_t
wall_clock_ms(void *arg)
{
    (void)arg;
    return gm_wall_ms();
}

struct gm_dispatcher *
gm_disp_new(const struct gm_server_config *cfg, struct gm_channel *chans, unsigned n,
            const struct gm_disp_hooks *hooks)
{
    struct gm_dispatcher *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cfg = cfg;
    if (hooks)
        d->hooks = *hooks;
    if (!d->hooks.now_ms)
        d->hooks.now_ms = wall_clock_ms;
    d->nports = n;
    d->next_handle = 1;
    gm_list_init(&d->function_list);
    gm_list_init(&d->jobs);
    gm_list_init(&d->dead);
    gm_list_init(&d->outcomes.fifo);
    gm_list_init(&d->held_peers);
    d->round_limit = gm_server_config_output_soft(cfg);
    gm_heap_init(&d->timers, offsetof(struct gm_job, by_handle.owner_word));
    atomic_init(&d->stop_flag, 0);
    atomic_init(&d->graceful_flag, 0);
    atomic_init(&d->acl_next, NULL);
    d->acl_gen = 1; /* a new peer's grants (generation 0) are stale */
    d->next_fn_serial = 1;
    d->ports = calloc(n, sizeof *d->ports);
    if (!d->ports || gm_htab_init(&d->functions, 64) < 0 ||
        gm_htab_init(&d->by_handle, cfg->hashtable_buckets) < 0 ||
        gm_htab_init(&d->by_unique, cfg->hashtable_buckets) < 0) {
        gm_disp_free(d);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++)
        d->ports[i].ch = &chans[i];
    d->start_ms = d->hooks.now_ms(d->hooks.arg);
    gm_disp_view_init(d);
    lifecycle_init(d);
    return d;
}

static void
drop_reply(struct gm_out *m)
{
    gm_block_unref(m->body.blk);
}

void
gm_disp_free(struct gm_dispatcher *d)
{
    if (!d)
        return;
    d->tearing_down = true;
    d->graceful = false;
    for (unsigned t = 0; d->ports && t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        for (uint32_t s = 0; s < port->npeers; s++)
            if (port->peers[s]) {
                drop_held(d, port->peers[s]);
                peer_close(d, port->peers[s]->id);
            }
        free(port->peers);
        gm_out_spill_clear(&port->spill, drop_reply);
    }
    lifecycle_free(d);
    outcomes_free(d);
    /* Whatever is left is queued or waiting for its time. */
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &d->function_list)
    {
        struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        for (int prio = 0; prio < GM_PRIO_COUNT; prio++) {
            struct gm_list *jn, *jt;
            gm_list_each_safe(jn, jt, &fn->queue[prio])
                job_free(d, gm_container_of(jn, struct gm_job, link));
        }
    }
    struct gm_job *job;
    while ((job = gm_heap_top(&d->timers)))
        job_free(d, job);
    while (d->persist.pend_len) {
        job = d->persist.pend[d->persist.pend_head].job;
        d->persist.pend_head = (d->persist.pend_head + 1) % d->persist.pend_cap;
        d->persist.pend_len--;
        bool husk = job->state == GM_JOB_FREED || (job->flags & GM_JOB_STORING);
        if (job->state != GM_JOB_FREED)
            job_free(d, job);
        if (husk)
            pending_release(d, job, false);
    }
    free(d->persist.pend);
    gm_prec_spill_clear(&d->persist.spill, gm_prec_release);
    gm_list_each_safe(n, tmp, &d->function_list)
        gm_disp_function_free(gm_container_of(n, struct gm_function, link));
    release_flush(d);
    access_free(d);
    gm_heap_destroy(&d->timers);
    gm_htab_destroy(&d->functions);
    gm_htab_destroy(&d->by_handle);
    gm_htab_destroy(&d->by_unique);
    free(d->ports);
    if (d->loop && !d->hosted)
        ev_loop_destroy(d->loop);
    free(d);
}

static void
arm_timer(struct gm_dispatcher *d, int64_t next_ms)
{
    ev_timer_stop(d->loop, &d->timer);
    if (next_ms < 0)
        return;
    double delay = (double)(next_ms - now_ms(d)) / 1000.0;
    if (delay < 0)
        delay = 0;
    ev_timer_set(&d->timer, delay, 0.);
    ev_timer_start(d->loop, &d->timer);
}

void
gm_disp_final(struct gm_dispatcher *d)
{
    if (d->persist.on_shutdown)
        persist_store_all(d);
    /* Last words (the `shutdown` command's OK) go out before we stop; the
       I/O threads stop after us and write them. */
    gm_disp_flush(d);
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct gm_dispatcher *d = w->data;
    (void)loop;
    (void)revents;
    if (atomic_load(&d->stop_flag)) {
        if (!d->hosted) {
            gm_disp_final(d);
            ev_break(d->loop, EVBREAK_ALL);
        }
        return;
    }
    gm_busy_poll_activity(&d->poll, d->loop);
    if (atomic_exchange(&d->graceful_flag, 0))
        gm_disp_begin_graceful(d);
    /* A full budget means more is waiting: the idle watcher comes back for
       it after this iteration's flush and timers. */
    if (gm_disp_drain(d, LOOP_BUDGET) == LOOP_BUDGET)
        ev_idle_start(d->loop, &d->more);
}

static void
on_more(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct gm_dispatcher *d = w->data;
    (void)revents;
    if (gm_disp_drain(d, LOOP_BUDGET) < LOOP_BUDGET)
        ev_idle_stop(loop, w);
}

void
gm_disp_prepare(struct gm_dispatcher *d)
{
    gm_disp_flush(d);
    arm_timer(d, gm_heap_top_due(&d->timers));
}

static void
on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    gm_disp_prepare(w->data);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_dispatcher *d = w->data;
    (void)loop;
    (void)revents;
    gm_disp_run_timers(d, now_ms(d));
}

int
gm_disp_loop_init(struct gm_dispatcher *d, struct ev_loop *host)
{
    d->hosted = host != NULL;
    d->loop = host ? host : ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!d->loop)
        return -1;
    ev_async_init(&d->wake, on_wake);
    d->wake.data = d;
    ev_async_start(d->loop, &d->wake);
    ev_prepare_init(&d->prepare, on_prepare);
    d->prepare.data = d;
    if (!host) /* a host loop calls gm_disp_prepare itself, in its own order */
        ev_prepare_start(d->loop, &d->prepare);
    ev_timer_init(&d->timer, on_timer, 0., 0.);
    d->timer.data = d;
    ev_idle_init(&d->more, on_more);
    d->more.data = d;
    gm_busy_poll_init(&d->poll, host ? 0 : d->cfg->busy_poll_us);
    if (host)
        ev_idle_start(d->loop, &d->more); /* work may be waiting already */
    return 0;
}

void *
gm_disp_thread_main(void *arg)
{
    struct gm_dispatcher *d = arg;
    gm_log_thread_name("disp");
    /* Messages may have arrived before the loop started. */
    ev_idle_start(d->loop, &d->more);
    ev_run(d->loop, 0);
    return NULL;
}

void
gm_disp_wake(struct gm_dispatcher *d)
{
    ev_async_send(d->loop, &d->wake);
}

void
gm_disp_set_acl(struct gm_dispatcher *d, struct gm_acl *acl)
{
    /* a table the dispatcher has not taken yet is replaced: it never saw it
       (access_take_table takes it on the dispatcher's next drain) */
    gm_acl_free(atomic_exchange(&d->acl_next, acl));
    if (d->loop)
        gm_disp_wake(d);
}

void
gm_disp_stop(struct gm_dispatcher *d)
{
    atomic_store(&d->stop_flag, 1);
    ev_async_send(d->loop, &d->wake);
}

void
gm_disp_request_graceful(struct gm_dispatcher *d)
{
    atomic_store(&d->graceful_flag, 1);
    ev_async_send(d->loop, &d->wake);
}
