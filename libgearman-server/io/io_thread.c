/*
 * io_thread.c: an I/O thread: its loop, new sockets, replies taken off the
 * outbound ring, the end of each loop iteration (write, publish, wake the
 * dispatcher, or run it when hosted) (see io_thread.h).  The rest of the
 * thread: tls_session.c, conn_table.c, writer.c, parser.c,
 * frontend_conn.c, reader.c, deadlines.c, tls_handshake.c;
 * their shared state is io_int.h.
 *
 * Runs on one I/O thread and owns that thread's connections, read blocks,
 * output queues and the free list of output nodes.  Nothing here is shared
 * except through the channel's rings and the new-socket ring.
 *
 * Reading: every connection of the thread reads into the thread's current
 * 64 KiB block; whole packets are handed to the dispatcher as references
 * into it (one atomic increment per read, not per packet).  A trailing
 * partial packet stays where it is and the next read appends to it when
 * nothing else was read in between, else it is copied to the current block.
 * An idle connection holds no buffer at all.  A packet bigger than
 * BIG_PACKET gets a block of its own, grown as its bytes arrive (never
 * sized from the header alone), which a job can keep without pinning
 * anybody else's bytes.
 *
 * Writing: replies are queued per connection and written with one writev
 * per connection at the end of the loop iteration (ev_prepare); the write
 * watcher is armed only when the socket is full.  Replies to a client with
 * other jobs in flight may wait a little longer while the thread stays busy
 * (--reply-batch, see mark_lazy).
 *
 * Waiting: after activity the thread keeps polling for a while instead of
 * sleeping (--busy-poll, an adaptive window; see busy_poll.h).
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/config/tls_ctx.h"
#include "libgearman-server/dispatch/dispatcher.h"

static void
on_conn_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    c->t->iter_active = true;
    gm_busy_poll_activity(&c->t->poll, c->t->loop);
    if (c->flags & CF_HANDSHAKE)
        tls_handshake(c);
    else
        conn_read(c);
}

static void
on_conn_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (c->flags & CF_HANDSHAKE)
        tls_handshake(c);
    else
        conn_flush(c);
}

/* The most a front-end connection holds of one job's reply (an HTTP job's
   joined result): --max-output-size, or one packet if that is larger. */
static size_t
fe_max_reply(const struct gm_server_config *cfg)
{
    return cfg->max_output > cfg->max_packet_size ? cfg->max_output : cfg->max_packet_size;
}

static void
conn_open(struct gm_io_thread *t, const struct gm_new_fd *nf)
{
    int slot = slot_alloc(t);
    struct conn *c = slot < 0 ? NULL : calloc(1, sizeof *c);
    if (c && !(c->close_node = malloc(sizeof *c->close_node))) {
        free(c);
        c = NULL;
    }
    if (c && nf->frontend && t->cfg->frontend && !(c->fe = t->cfg->frontend->conn_new(fe_max_reply(t->cfg)))) {
        free(c->close_node);
        free(c);
        c = NULL;
    }
    if (!c) {
        if (slot >= 0)
            slot_free(t, (uint32_t)slot);
        gm_log(GM_LOG_ERROR, "out of memory accepting %s:%u", nf->addr, nf->port);
        close(nf->fd);
        return;
    }
    c->t = t;
    c->fd = nf->fd;
    c->slot = (uint32_t)slot;
    c->gen = t->slots[slot].gen;
    c->port = nf->port;
    memcpy(c->addr, nf->addr, sizeof c->addr);
    t->slots[slot].c = c;
    ev_io_init(&c->rw, on_conn_read, c->fd, EV_READ);
    c->rw.data = c;
    ev_io_init(&c->ww, on_conn_write, c->fd, EV_WRITE);
    c->ww.data = c;
    atomic_fetch_add(&t->nconns, 1);
    gm_log(GM_LOG_INFO, "Accepted connection from %s:%u", c->addr, c->port);
    if (t->tls ? !tls_conn_start(c) : !conn_announce(c, NULL, 0)) {
        if (!(c->flags & CF_DEAD))
            conn_close(c, GM_LOG_ERROR, "out of memory for a TLS session");
        return;
    }
    ev_io_start(t->loop, &c->rw);
    conn_mark_read(c);
    conn_mark_ready(c);
}

/* Takes replies off the outbound ring and queues them per connection. */
static void
drain_outbound(struct gm_io_thread *t)
{
    struct gm_out *m;
    bool any = false;
    while ((m = gm_out_ring_peek(&t->ch->out))) {
        any = true;
        struct conn *c = conn_lookup(t, m->conn);
        if (!c || (c->flags & CF_DEAD)) {
            gm_block_unref(m->body.blk);
        } else if (m->kind == GM_OUT_CLOSE) {
            c->flags |= CF_CLOSING;
            ev_io_stop(t->loop, &c->rw);
            mark_dirty(c);
        } else if (c->fe) {
            fe_reply(c, m);
            if (!c->fe_busy && !(c->flags & (CF_DEAD | CF_CLOSING | CF_STALLED))) {
                if (c->in_len)
                    conn_parse(c); /* the next request was waiting */
                if (!c->fe_busy && (c->flags & CF_FE_PAUSED) && !(c->flags & (CF_DEAD | CF_CLOSING))) {
                    c->flags &= ~CF_FE_PAUSED;
                    conn_resume_reading(c);
                }
            }
        } else {
            conn_queue(c, m);
        }
        gm_out_ring_consume(&t->ch->out);
    }
    if (!any)
        return;
    gm_out_ring_release(&t->ch->out);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&t->ch->disp_wants_space, memory_order_relaxed) &&
        atomic_exchange(&t->ch->disp_wants_space, 0))
        t->wake_disp(t->wake_arg);
}

static void
drain_newfds(struct gm_io_thread *t)
{
    struct gm_new_fd nf;
    bool any = false;
    while (gm_fd_ring_pop(&t->newfds, &nf)) {
        conn_open(t, &nf);
        any = true;
    }
    if (any)
        gm_fd_ring_release(&t->newfds);
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct gm_io_thread *t = w->data;
    (void)revents;
    if (atomic_load(&t->stop)) {
        /* Write what is already queued (one attempt each), then stop. */
        if (t->hosted)
            gm_disp_final(t->hosted);
        drain_outbound(t);
        flush_dirty(t);
        flush_lazy(t);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    t->iter_active = true;
    gm_busy_poll_activity(&t->poll, t->loop);
    tls_adopt(t);
    drain_newfds(t);
    drain_outbound(t);
    if (t->stalled)
        retry_stalled(t);
}

/* Writes what is queued, publishes requests and wakes the dispatcher. */
static void
write_and_publish(struct gm_io_thread *t)
{
    flush_refs(t);
    in_flush_overflow(t);
    flush_dirty(t);
    if (t->lazy && (!ev_is_active(&t->poll.idle) || !t->iter_active ||
                    ev_now(t->loop) - t->lazy_since >= t->lazy_max))
        flush_lazy(t);
    flush_refs(t);
    if (gm_in_ring_publish(&t->ch->in) && !t->hosted)
        t->wake_disp(t->wake_arg);
}

/* One I/O thread with the dispatcher on board: requests published this
   iteration are answered and the answers written before the loop sleeps,
   with no hand-off to another thread. */
static void
run_hosted_dispatcher(struct gm_io_thread *t)
{
    for (int round = 0; round < 8; round++) {
        size_t n = gm_disp_drain(t->hosted, 4096);
        gm_disp_prepare(t->hosted);
        bool replies = gm_out_ring_peek(&t->ch->out) != NULL;
        if (replies)
            drain_outbound(t);
        /* The drain made room in the inbound ring: the wake-up a dispatcher
           thread would send the stalled connections is ours to give. */
        bool resumed = n && t->stalled;
        if (resumed)
            retry_stalled(t);
        if (replies || resumed)
            write_and_publish(t);
        if (!n && !replies)
            return;
    }
}

/* End of the loop iteration: write, publish, wake the dispatcher once. */
static void
on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct gm_io_thread *t = w->data;
    (void)loop;
    (void)revents;
    write_and_publish(t);
    if (t->hosted)
        run_hosted_dispatcher(t);
    t->iter_active = false;
    if (t->dead && t->lazy) {
        struct conn **pp = &t->lazy;
        while (*pp) {
            if ((*pp)->flags & CF_DEAD)
                *pp = (*pp)->lazy_next;
            else
                pp = &(*pp)->lazy_next;
        }
    }
    while (t->dead) {
        struct conn *c = t->dead;
        t->dead = c->dead_next;
        free(c);
    }
}

void *
gm_io_thread_main(void *arg)
{
    struct gm_io_thread *t = arg;
    gm_log_thread_name(t->name);
    ev_run(t->loop, 0);
    return NULL;
}

struct gm_io_thread *
gm_io_new(unsigned index, const struct gm_server_config *cfg, struct gm_channel *ch,
          gm_io_wake_fn wake_disp, void *arg)
{
    struct gm_io_thread *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->index = index;
    t->cfg = cfg;
    t->ch = ch;
    t->wake_disp = wake_disp;
    t->wake_arg = arg;
    t->free_head = UINT32_MAX;
    atomic_init(&t->stop, 0);
    atomic_init(&t->nconns, 0);
    atomic_init(&t->tls_next, NULL);
    snprintf(t->name, sizeof t->name, "io-%u", index);
    if (gm_fd_ring_init(&t->newfds, NEWFD_RING) < 0) {
        free(t);
        return NULL;
    }
    t->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!t->loop) {
        gm_fd_ring_destroy(&t->newfds);
        free(t);
        return NULL;
    }
    ev_async_init(&t->wake, on_wake);
    t->wake.data = t;
    ev_async_start(t->loop, &t->wake);
    ev_prepare_init(&t->prepare, on_prepare);
    t->prepare.data = t;
    ev_prepare_start(t->loop, &t->prepare);
    gm_busy_poll_init(&t->poll, cfg->busy_poll_us);
    deadlines_start(t);
    t->lazy_max = cfg->reply_batch_us / 1e6;
    /* A slow reader may hold max_output of unsent bytes besides the reply
       that crosses it (conn_queue), so that a job as big as
       --max-packet-size can always be delivered. */
    t->out_limit = cfg->max_output;
    /* Past out_soft (4 MiB, at most half the limit) the connection is not
       read from until its output is below half of that. */
    t->out_soft = gm_server_config_output_soft(cfg);
    return t;
}

/* A notice never handed over: its reference goes (an identity's block). */
static void
drop_in(struct gm_in *m)
{
    gm_block_unref(m->blk);
}

void
gm_io_free(struct gm_io_thread *t)
{
    if (!t)
        return;
    flush_refs(t);
    for (uint32_t i = 0; i < t->nslots; i++) {
        struct conn *c = t->slots[i].c;
        if (!c)
            continue;
        conn_release(c);
        free(c->close_node);
        free(c);
    }
    while (t->dead) {
        struct conn *c = t->dead;
        t->dead = c->dead_next;
        free(c);
    }
    while (t->pool) {
        struct out_node *n = t->pool;
        t->pool = n->next;
        free(n);
    }
    gm_in_spill_clear(&t->spill, drop_in);
    struct gm_new_fd nf;
    gm_fd_ring_publish(&t->newfds);
    while (gm_fd_ring_pop(&t->newfds, &nf))
        close(nf.fd);
    gm_fd_ring_destroy(&t->newfds);
    gm_block_unref(t->rblk);
    tls_adopt(t);
    gm_tls_ctx_unref(t->tls);
    free(t->tls_buf);
    free(t->slots);
    ev_loop_destroy(t->loop);
    free(t);
}

int
gm_io_add_fd(struct gm_io_thread *t, const struct gm_new_fd *nf)
{
    if (!gm_fd_ring_push(&t->newfds, nf))
        return -1;
    gm_fd_ring_publish(&t->newfds);
    ev_async_send(t->loop, &t->wake);
    return 0;
}

void
gm_io_wake(struct gm_io_thread *t)
{
    ev_async_send(t->loop, &t->wake);
}

void
gm_io_stop(struct gm_io_thread *t)
{
    atomic_store(&t->stop, 1);
    ev_async_send(t->loop, &t->wake);
}

void
gm_io_host_dispatcher(struct gm_io_thread *t, struct gm_dispatcher *d)
{
    t->hosted = d;
}

struct ev_loop *
gm_io_loop(struct gm_io_thread *t)
{
    return t->loop;
}

unsigned
gm_io_connection_count(const struct gm_io_thread *t)
{
    return atomic_load(&((struct gm_io_thread *)t)->nconns);
}
