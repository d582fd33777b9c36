/*
 * conn_table.c: an I/O thread's connections (see io_int.h): the slot table
 * that names them, closing one (its buffers, output and slot go; the
 * dispatcher hears GM_IN_CLOSE), the output node pool, connections stalled
 * on a full inbound ring, and the inbound ring itself: requests, and
 * connection notices that never wait (a spill list).  Block references
 * taken while parsing are counted in batches here.  I/O thread only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"

/* Block references are counted in batches: parsing one read takes many
   references to the same block, added with one atomic operation by
   flush_refs().  Anything that could drop a reference (closing a
   connection, publishing the ring) flushes first, so the count is never
   behind what others can see. */
void
flush_refs(struct gm_io_thread *t)
{
    if (t->ref_n)
        gm_block_ref_n(t->ref_blk, t->ref_n);
    t->ref_blk = NULL;
    t->ref_n = 0;
}

void
take_ref(struct gm_io_thread *t, struct gm_block *b)
{
    if (b != t->ref_blk) {
        flush_refs(t);
        t->ref_blk = b;
    }
    t->ref_n++;
}

/* Requests wait while control notices are on the spill list. */
struct gm_in *
in_begin(struct conn *c, uint8_t kind, uint8_t flags, uint16_t type, uint32_t len, const char *payload,
         struct gm_block *blk)
{
    struct gm_io_thread *t = c->t;
    struct gm_in *m = gm_in_spill_slot(&t->spill, &t->ch->in, &t->ch->io_wants_space);
    if (!m)
        return NULL;
    m->conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m->kind = kind;
    m->flags = flags;
    m->type = type;
    m->len = len;
    m->payload = payload;
    m->blk = blk;
    return m;
}

/* Queues a connection notice: in the ring, or when it is full (or notices
   already wait) on the spill list, in `spare` if given, else in a new
   node.  `spare` is used or freed either way.  Returns false only when the
   ring is full and memory is short (never with a spare): a connection's
   close notice travels in the node reserved when it opened, so it can
   always be queued, and nothing here waits for the dispatcher (which may
   run on this very thread). */
bool
in_push_ctrl(struct gm_io_thread *t, const struct gm_in *m, struct gm_in_spill_node *spare)
{
    int rc = gm_in_spill_put(&t->spill, &t->ch->in, m, spare);
    if (rc == 0)
        atomic_store(&t->ch->io_wants_space, 1);
    return rc >= 0;
}

bool
conn_announce(struct conn *c, const char *id, size_t n)
{
    struct gm_io_thread *t = c->t;
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m.kind = GM_IN_OPEN;
    m.u.open.fd = c->fd;
    m.u.open.port = c->port;
    memcpy(m.u.open.addr, c->addr, sizeof m.u.open.addr);
    if (n) {
        if (!(m.blk = gm_block_new(n))) {
            conn_close(c, GM_LOG_ERROR, "out of memory announcing the connection");
            return false;
        }
        memcpy(m.blk->data, id, n);
        m.payload = m.blk->data;
        m.len = (uint32_t)n;
    }
    if (!in_push_ctrl(t, &m, NULL)) {
        gm_block_unref(m.blk);
        conn_close(c, GM_LOG_ERROR, "out of memory announcing the connection");
        return false;
    }
    c->flags |= CF_ANNOUNCED;
    return true;
}

void
in_flush_overflow(struct gm_io_thread *t)
{
    gm_in_spill_move(&t->spill, &t->ch->in, &t->ch->io_wants_space);
}

struct out_node *
node_get(struct gm_io_thread *t)
{
    struct out_node *n = t->pool;
    if (n) {
        t->pool = n->next;
        t->pool_n--;
        return n;
    }
    return malloc(sizeof *n);
}

void
node_put(struct gm_io_thread *t, struct out_node *n)
{
    gm_block_unref(n->msg.body.blk);
    if (t->pool_n < OUT_POOL_MAX) {
        n->next = t->pool;
        t->pool = n;
        t->pool_n++;
    } else {
        free(n);
    }
}

int
slot_alloc(struct gm_io_thread *t)
{
    if (t->free_head == UINT32_MAX) {
        uint32_t n = t->nslots ? t->nslots * 2 : 64;
        if (n > GM_MAX_SLOTS)
            return -1;
        struct slot *s = realloc(t->slots, n * sizeof *s);
        if (!s)
            return -1;
        for (uint32_t i = t->nslots; i < n; i++) {
            s[i].c = NULL;
            s[i].gen = 1;
            s[i].next_free = i + 1 < n ? i + 1 : UINT32_MAX;
        }
        t->free_head = t->nslots;
        t->slots = s;
        t->nslots = n;
    }
    uint32_t i = t->free_head;
    t->free_head = t->slots[i].next_free;
    return (int)i;
}

void
slot_free(struct gm_io_thread *t, uint32_t slot)
{
    t->slots[slot].next_free = t->free_head;
    t->free_head = slot;
}

struct conn *
conn_lookup(struct gm_io_thread *t, gm_conn_id id)
{
    uint32_t slot = gm_conn_slot(id);
    if (slot >= t->nslots)
        return NULL;
    struct conn *c = t->slots[slot].c;
    return c && c->gen == gm_conn_gen(id) ? c : NULL;
}

void
stall(struct conn *c)
{
    if (c->flags & CF_STALLED)
        return;
    c->flags |= CF_STALLED;
    ev_io_stop(c->t->loop, &c->rw);
    c->stalled_next = c->t->stalled;
    c->t->stalled = c;
}

void
conn_resume_reading(struct conn *c)
{
    if (!(c->flags & (CF_STALLED | CF_OUT_FULL | CF_FE_PAUSED | CF_CLOSING | CF_DEAD))) {
        ev_io_start(c->t->loop, &c->rw);
        if (conn_recv_pending(c))
            ev_feed_event(c->t->loop, &c->rw, EV_READ); /* the socket will not tell */
    }
}

void
conn_release(struct conn *c)
{
    struct gm_io_thread *t = c->t;
    ev_io_stop(t->loop, &c->rw);
    ev_io_stop(t->loop, &c->ww);
    tls_conn_free(c);
    close(c->fd);
    c->fd = -1;
    gm_block_unref(c->in_blk);
    c->in_blk = NULL;
    c->in_len = 0;
    gm_block_unref(c->big);
    c->big = NULL;
    if (c->fe)
        t->cfg->frontend->conn_free(c->fe);
    c->fe = NULL;
    free(c->fe_acc);
    c->fe_acc = NULL;
    c->fe_acc_len = c->fe_acc_cap = 0;
    while (c->out_head) {
        struct out_node *n = c->out_head;
        c->out_head = n->next;
        node_put(t, n);
    }
    c->out_tail = NULL;
}

/* Closes the socket, drops buffers and queued output, frees the slot and
   tells the dispatcher.  The struct itself is freed at the end of the loop
   iteration, so callers up the stack may still look at its flags. */
void
conn_close(struct conn *c, int level, const char *why)
{
    if (c->flags & CF_DEAD)
        return;
    struct gm_io_thread *t = c->t;
    flush_refs(t);
    gm_log_peer(&c->log_limit, c->addr, c->port, level, "Disconnected %s:%u: %s", c->addr, c->port, why);
    gm_log_peer_close(&c->log_limit, c->addr, c->port);
    conn_release(c);
    if (c->flags & CF_STALLED) {
        struct conn **pp = &t->stalled;
        while (*pp && *pp != c)
            pp = &(*pp)->stalled_next;
        if (*pp)
            *pp = c->stalled_next;
        c->flags &= ~CF_STALLED;
    }
    c->flags |= CF_DEAD;
    c->dead_next = t->dead;
    t->dead = c;

    struct slot *s = &t->slots[c->slot];
    s->c = NULL;
    s->gen++;
    slot_free(t, c->slot);
    atomic_fetch_sub(&t->nconns, 1);

    if (!(c->flags & CF_ANNOUNCED)) {
        free(c->close_node); /* the dispatcher never heard of it */
        c->close_node = NULL;
        return;
    }
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m.kind = GM_IN_CLOSE;
    in_push_ctrl(t, &m, c->close_node);
    c->close_node = NULL;
}
