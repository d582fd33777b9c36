/*
 * deadlines.c: time limits on a connection's input, and partial packets
 * moved out of read blocks the thread has left behind (see io_int.h).
 * Once a second the thread looks at each of its connections:
 *
 *  - Gear: a packet begun but not complete that has received no byte for
 *    --packet-timeout seconds closes its connection.  Between packets there
 *    is no limit: idle workers are normal.
 *  - Front-end (HTTP): a connection ready for a request (accepted, or its
 *    previous response written) that has not sent a complete one within
 *    --http-timeout seconds is closed, however the bytes trickle in.
 *  - A connection the server itself keeps waiting (a request in flight, a
 *    full inbound ring, a response not yet written) is not timed; its clock
 *    starts again when the peer's turn comes.
 *  - TLS: a connection whose handshake is not done --ssl-handshake-timeout
 *    seconds after its accept is closed.
 *  - A partial packet that has waited a second in a read block the thread
 *    has moved past is copied into a block of its own size, so a one-byte
 *    partial does not pin a 64 KiB block.
 *
 * The clocks are ev_now() stamps kept in the connection by the reader and
 * the front-end code (conn_mark_read, conn_mark_ready).  I/O thread only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <string.h>

#include "libgearman-server/base/log.h"

#define SWEEP_SECONDS 1.0
/* Partial packets up to this size are moved out of a shared block once
   they have waited a sweep; a bigger one uses much of its block anyway. */
#define COMPACT_MAX (READ_BLOCK_SIZE / 4)

void
conn_mark_read(struct conn *c)
{
    c->last_read = ev_now(c->t->loop);
}

void
conn_mark_ready(struct conn *c)
{
    c->ready_since = ev_now(c->t->loop);
}

/* The partial packet of c, left in a block the thread has moved past,
   copied into a block of its own size. */
static void
compact_partial(struct conn *c)
{
    struct gm_io_thread *t = c->t;
    struct gm_block *b = gm_block_new(c->in_len);
    if (!b)
        return; /* it stays where it is */
    memcpy(b->data, c->in_ptr, c->in_len);
    flush_refs(t);
    gm_block_unref(c->in_blk);
    c->in_blk = b;
    c->in_ptr = b->data;
}

/* Whether the peer is the one keeping c waiting (else the server is). */
static bool
peers_turn(const struct conn *c)
{
    if (c->flags & (CF_STALLED | CF_OUT_FULL | CF_CLOSING | CF_DEAD))
        return false;
    if (c->fe)
        return !c->fe_busy && c->out_bytes == 0;
    return true;
}

static void
check_conn(struct conn *c, double now)
{
    const struct gm_server_config *cfg = c->t->cfg;
    if (c->flags & CF_HANDSHAKE) {
        if (now - c->last_read >= cfg->ssl_handshake_timeout_s)
            conn_close(c, GM_LOG_WARNING, "TLS handshake not done within --ssl-handshake-timeout");
        return;
    }
    if (!peers_turn(c)) {
        c->last_read = now;
        c->ready_since = now;
        return;
    }
    if (c->fe) {
        if (cfg->http_timeout_s && now - c->ready_since >= cfg->http_timeout_s) {
            conn_close(c, GM_LOG_INFO, "no complete request within --http-timeout");
            return;
        }
    } else if ((c->in_len || c->big) && cfg->packet_timeout_s &&
               now - c->last_read >= cfg->packet_timeout_s) {
        conn_close(c, GM_LOG_WARNING, "incomplete packet: no byte within --packet-timeout");
        return;
    }
    if (c->in_len && c->in_len <= COMPACT_MAX && c->in_blk != c->t->rblk &&
        c->in_blk->cap > c->in_len && now - c->last_read >= SWEEP_SECONDS)
        compact_partial(c);
}

static void
on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct gm_io_thread *t = w->data;
    double now = ev_now(loop);
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i].c)
            check_conn(t->slots[i].c, now);
}

void
deadlines_start(struct gm_io_thread *t)
{
    ev_timer_init(&t->sweep, on_sweep, SWEEP_SECONDS, SWEEP_SECONDS);
    t->sweep.data = t;
    ev_timer_start(t->loop, &t->sweep);
}
