/*
 * io_thread.c: connections, reading, parsing, writing (see io_thread.h).
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

#include "libgearman-server/io/io_thread.h"
#include "libgearman-server/base/busy_poll.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/base/log.h"

#define READ_BLOCK_SIZE (64u * 1024)
#define READ_MIN_SPACE (4u * 1024)    /* start a new block when less room is left */
#define BIG_PACKET (32u * 1024)       /* larger packets get a block of their own */
#define BIG_FIRST_CAP (64u * 1024)
#define READS_PER_EVENT 8             /* fairness between connections */
#define WRITE_IOVS 128
#define OUT_POOL_MAX 4096             /* output nodes kept for reuse */
#define NEWFD_RING 4096
#define REPLY_SLACK (4u * 1024)       /* a reply's fields besides the payload it carries */

enum conn_flags {
    CF_DIRTY = 1 << 0,      /* on the dirty list: has output to write */
    CF_CLOSING = 1 << 1,    /* close once the output is written; read nothing more */
    CF_STALLED = 1 << 2,    /* inbound ring was full: reading paused */
    CF_DISPATCHED = 1 << 3, /* has sent requests to the dispatcher (ECHO goes there too) */
    CF_WRITING = 1 << 4,    /* write watcher armed */
    CF_DEAD = 1 << 5,       /* closed; freed at the end of the iteration */
    CF_FE_PAUSED = 1 << 6,  /* front-end: reading paused while a request is answered */
    CF_LAZY = 1 << 7        /* on the lazy list: its output may wait (see flush_lazy) */
};

struct out_node {
    struct out_node *next;
    struct gm_out msg;
};

struct conn {
    struct gm_io_thread *t;
    int fd;
    uint32_t slot, gen;
    uint32_t flags;
    ev_io rw, ww;
    /* input: unparsed bytes (a partial packet) */
    struct gm_block *in_blk;
    const char *in_ptr;
    uint32_t in_len;
    /* input: a big packet being read into a block of its own */
    struct gm_block *big;
    uint32_t big_have, big_total;
    /* output */
    struct out_node *out_head, *out_tail;
    uint32_t out_off;       /* bytes of out_head already written */
    size_t out_bytes;       /* bytes queued */
    struct conn *dirty_next;
    struct conn *lazy_next;
    struct conn *stalled_next;
    struct conn *dead_next;
    /* front-end (HTTP) connections only */
    void *fe;               /* the front-end's per-connection state */
    bool fe_busy;           /* a request is with the dispatcher: parse no further */
    char *fe_acc;           /* reply packet bytes being assembled */
    size_t fe_acc_len, fe_acc_cap;
    struct gm_in_spill_node *close_node; /* reserved for the close notice (see in_push_ctrl) */
    uint16_t port;
    char addr[GM_ADDR_MAX];
};

struct slot {
    struct conn *c;
    uint32_t gen;
    uint32_t next_free;
};

struct gm_io_thread {
    unsigned index;
    const struct gm_server_config *cfg;
    struct gm_channel *ch;
    gm_io_wake_fn wake_disp;
    void *wake_arg;
    struct ev_loop *loop;
    ev_async wake;
    ev_prepare prepare;
    struct gm_busy_poll poll;   /* --busy-poll */
    struct gm_fd_ring newfds;
    _Atomic int stop;
    _Atomic unsigned nconns;

    struct slot *slots;
    uint32_t nslots, free_head; /* free_head: UINT32_MAX = none */

    struct gm_block *rblk;      /* current read block (the thread holds a reference) */
    uint32_t rused;
    struct gm_block *ref_blk;   /* references taken but not yet counted (see take_ref) */
    uint32_t ref_n;

    struct conn *dirty, *stalled, *dead;
    struct conn *lazy;          /* connections whose output may wait (--reply-batch) */
    double lazy_since, lazy_max; /* ev_now() the oldest started waiting; the limit */
    bool iter_active;           /* this loop iteration had activity (a read or a wake-up) */
    size_t out_limit;           /* unsent bytes that close a connection (see gm_io_new) */
    struct out_node *pool;
    unsigned pool_n;
    struct gm_in_spill spill;   /* open/close notices that met a full ring, in order */
    struct gm_dispatcher *colo;   /* the dispatcher this thread also runs, or NULL */
    char name[16];
};

static void conn_close(struct conn *c, int level, const char *why);
static void conn_read(struct conn *c);
static void flush_lazy(struct gm_io_thread *t);

/* Block references are counted in batches: parsing one read takes many
   references to the same block, added with one atomic operation by
   flush_refs().  Anything that could drop a reference (closing a
   connection, publishing the ring) flushes first, so the count is never
   behind what others can see. */
static void
flush_refs(struct gm_io_thread *t)
{
    if (t->ref_n)
        gm_block_ref_n(t->ref_blk, t->ref_n);
    t->ref_blk = NULL;
    t->ref_n = 0;
}

static void
take_ref(struct gm_io_thread *t, struct gm_block *b)
{
    if (b != t->ref_blk) {
        flush_refs(t);
        t->ref_blk = b;
    }
    t->ref_n++;
}

/* ------------------------------------------------------------------ */
/* Inbound ring                                                        */
/* ------------------------------------------------------------------ */

/* Returns a slot for a request, or NULL when the ring is full (the caller
   stalls).  Requests wait while control notices are on the spill list. */
static struct gm_in *
in_alloc(struct gm_io_thread *t)
{
    return gm_in_spill_slot(&t->spill, &t->ch->in, &t->ch->io_wants_space);
}

/* Queues a connection notice: in the ring, or when it is full (or notices
   already wait) on the spill list, in `spare` if given, else in a new
   node.  `spare` is used or freed either way.  Returns false only when the
   ring is full and memory is short (never with a spare): a connection's
   close notice travels in the node reserved when it opened, so it can
   always be queued, and nothing here waits for the dispatcher (which may
   run on this very thread). */
static bool
in_push_ctrl(struct gm_io_thread *t, const struct gm_in *m, struct gm_in_spill_node *spare)
{
    int rc = gm_in_spill_put(&t->spill, &t->ch->in, m, spare);
    if (rc == 0)
        atomic_store(&t->ch->io_wants_space, 1);
    return rc >= 0;
}

static void
in_flush_overflow(struct gm_io_thread *t)
{
    gm_in_spill_move(&t->spill, &t->ch->in, &t->ch->io_wants_space);
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static struct out_node *
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

static void
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

static void
mark_dirty(struct conn *c)
{
    if (!(c->flags & (CF_DIRTY | CF_WRITING))) {
        c->flags |= CF_DIRTY;
        c->dirty_next = c->t->dirty;
        c->t->dirty = c;
    }
}

/* Output that may wait (--reply-batch): replies to a client that has other
   jobs in flight (GM_OUT_F_MAY_WAIT) go on the lazy list instead of being
   written at the end of this iteration.  They are written as soon as the
   loop finds nothing new to read, or is about to sleep, or the oldest has
   waited the limit; until then more replies for the same client join them,
   and one write (and one wake-up of the client) carries them all. */
static void
mark_lazy(struct conn *c)
{
    struct gm_io_thread *t = c->t;
    if (c->flags & (CF_DIRTY | CF_WRITING | CF_LAZY))
        return;
    if (!t->lazy)
        t->lazy_since = ev_now(t->loop);
    c->flags |= CF_LAZY;
    c->lazy_next = t->lazy;
    t->lazy = c;
}

/* Appends a message to the connection's output (the node takes over the
   message's body reference).  Returns false if the connection was closed
   instead (memory, or too much unsent output). */
static bool
conn_queue(struct conn *c, const struct gm_out *msg)
{
    struct out_node *n = node_get(c->t);
    if (!n) {
        gm_block_unref(msg->body.blk);
        conn_close(c, GM_LOG_ERROR, "out of memory for output");
        return false;
    }
    n->msg = *msg;
    n->next = NULL;
    if (c->out_tail)
        c->out_tail->next = n;
    else
        c->out_head = n;
    c->out_tail = n;
    c->out_bytes += msg->head_len + msg->body.len;
    if ((msg->flags & GM_OUT_F_MAY_WAIT) && c->t->lazy_max > 0)
        mark_lazy(c);
    else
        mark_dirty(c);
    if (c->out_bytes > c->t->out_limit) {
        conn_close(c, GM_LOG_ERROR, "too much unsent output (slow reader)");
        return false;
    }
    return true;
}

/* Queues a packet built here (protocol errors). */
static void
conn_send_packet(struct conn *c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    struct gm_out msg = {0};
    msg.conn = gm_conn_id_make(c->t->index, c->slot, c->gen);
    msg.kind = GM_OUT_SEND;
    size_t size = GM_HEADER_SIZE + gm_payload_size(f, n);
    if (size <= GM_OUT_INLINE) {
        msg.head_len = (uint8_t)gm_packet_encode(msg.head, GM_MAGIC_RES, type, f, n);
    } else {
        struct gm_block *b = gm_block_new(size);
        if (!b)
            return;
        msg.body.blk = b;
        msg.body.ptr = b->data;
        msg.body.len = (uint32_t)gm_packet_encode(b->data, GM_MAGIC_RES, type, f, n);
    }
    conn_queue(c, &msg);
}

static void
conn_send_error(struct conn *c, const char *code, const char *text)
{
    struct gm_field_ref f[2] = {{code, strlen(code)}, {text, strlen(text)}};
    gm_log(GM_LOG_ERROR, "GEARMAN_%s:%s (%s:%u)", code, text, c->addr, c->port);
    conn_send_packet(c, GM_PKT_ERROR, f, 2);
}

/* Writes as much queued output as the socket takes, with one writev per
   WRITE_IOVS pieces.  Arms the write watcher when the socket is full. */
static void
conn_flush(struct conn *c)
{
    struct gm_io_thread *t = c->t;
    while (c->out_head) {
        struct iovec iov[WRITE_IOVS];
        int n = 0;
        size_t want = 0;
        uint32_t off = c->out_off;
        for (struct out_node *node = c->out_head; node && n < WRITE_IOVS - 1; node = node->next) {
            struct gm_out *m = &node->msg;
            if (off < m->head_len) {
                iov[n].iov_base = m->head + off;
                iov[n].iov_len = m->head_len - off;
                want += iov[n++].iov_len;
                off = 0;
            } else {
                off -= m->head_len;
            }
            if (off < m->body.len) {
                iov[n].iov_base = (void *)(m->body.ptr + off);
                iov[n].iov_len = m->body.len - off;
                want += iov[n++].iov_len;
                off = 0;
            } else {
                off -= m->body.len;
            }
        }
        if (n == 0) {
            /* only empty messages: drop them */
            struct out_node *node = c->out_head;
            c->out_head = node->next;
            node_put(t, node);
            continue;
        }
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c, GM_LOG_INFO, "write failed");
            return;
        }
        c->out_bytes -= (size_t)w;
        size_t left = (size_t)w + c->out_off;
        while (c->out_head) {
            struct out_node *node = c->out_head;
            size_t len = node->msg.head_len + node->msg.body.len;
            if (left < len)
                break;
            left -= len;
            c->out_head = node->next;
            node_put(t, node);
        }
        c->out_off = (uint32_t)left;
        if (!c->out_head)
            c->out_tail = NULL;
        if ((size_t)w < want)
            break; /* the socket is full */
    }
    if (!c->out_head) {
        c->out_tail = NULL;
        c->out_off = 0;
        if (c->flags & CF_WRITING) {
            ev_io_stop(t->loop, &c->ww);
            c->flags &= ~CF_WRITING;
        }
        if (c->flags & CF_CLOSING)
            conn_close(c, GM_LOG_INFO, "closed by the server");
        return;
    }
    if (!(c->flags & CF_WRITING)) {
        ev_io_start(t->loop, &c->ww);
        c->flags |= CF_WRITING;
    }
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

static void
on_conn_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    c->t->iter_active = true;
    gm_busy_poll_activity(&c->t->poll, c->t->loop);
    conn_read(c);
}

static void
on_conn_write(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_flush(w->data);
}

static int
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

static void
slot_free(struct gm_io_thread *t, uint32_t slot)
{
    t->slots[slot].next_free = t->free_head;
    t->free_head = slot;
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
    if (c && nf->frontend && t->cfg->frontend && !(c->fe = t->cfg->frontend->conn_new())) {
        free(c->close_node);
        free(c);
        c = NULL;
    }
    struct gm_in m;
    memset(&m, 0, sizeof m);
    if (c) {
        c->t = t;
        c->fd = nf->fd;
        c->slot = (uint32_t)slot;
        c->gen = t->slots[slot].gen;
        c->port = nf->port;
        memcpy(c->addr, nf->addr, sizeof c->addr);
        m.conn = gm_conn_id_make(t->index, c->slot, c->gen);
        m.kind = GM_IN_OPEN;
        m.u.open.fd = c->fd;
        m.u.open.port = c->port;
        memcpy(m.u.open.addr, c->addr, sizeof m.u.open.addr);
        if (!in_push_ctrl(t, &m, NULL)) {
            if (c->fe)
                t->cfg->frontend->conn_free(c->fe);
            free(c->close_node);
            free(c);
            c = NULL;
        }
    }
    if (!c) {
        if (slot >= 0)
            slot_free(t, (uint32_t)slot);
        gm_log(GM_LOG_ERROR, "out of memory accepting %s:%u", nf->addr, nf->port);
        close(nf->fd);
        return;
    }
    t->slots[slot].c = c;
    ev_io_init(&c->rw, on_conn_read, c->fd, EV_READ);
    c->rw.data = c;
    ev_io_init(&c->ww, on_conn_write, c->fd, EV_WRITE);
    c->ww.data = c;
    ev_io_start(t->loop, &c->rw);
    atomic_fetch_add(&t->nconns, 1);
    gm_log(GM_LOG_INFO, "Accepted connection from %s:%u", c->addr, c->port);
}

/* Closes the socket, drops buffers and queued output, frees the slot and
   tells the dispatcher.  The struct itself is freed at the end of the loop
   iteration, so callers up the stack may still look at its flags. */
static void
conn_close(struct conn *c, int level, const char *why)
{
    if (c->flags & CF_DEAD)
        return;
    struct gm_io_thread *t = c->t;
    flush_refs(t);
    gm_log(level, "Disconnected %s:%u: %s", c->addr, c->port, why);
    ev_io_stop(t->loop, &c->rw);
    ev_io_stop(t->loop, &c->ww);
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

    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m.kind = GM_IN_CLOSE;
    in_push_ctrl(t, &m, c->close_node);
    c->close_node = NULL;
}

static struct conn *
conn_lookup(struct gm_io_thread *t, gm_conn_id id)
{
    uint32_t slot = gm_conn_slot(id);
    if (slot >= t->nslots)
        return NULL;
    struct conn *c = t->slots[slot].c;
    return c && c->gen == gm_conn_gen(id) ? c : NULL;
}

/* ------------------------------------------------------------------ */
/* Parsing                                                             */
/* ------------------------------------------------------------------ */

enum packet_result {
    PKT_DONE,   /* handled */
    PKT_STALL,  /* inbound ring full: try again later, nothing was taken */
    PKT_CLOSE   /* the stream cannot be trusted: close after the error */
};

static void
stall(struct conn *c)
{
    if (c->flags & CF_STALLED)
        return;
    c->flags |= CF_STALLED;
    ev_io_stop(c->t->loop, &c->rw);
    c->stalled_next = c->t->stalled;
    c->t->stalled = c;
}

/* Gives a reference to the packet's bytes to whoever now holds them: for a
   packet in a shared block a new (batched) reference; a packet in its own
   block hands over the one it has. */
static void
give_ref(struct conn *c, struct gm_block *blk, bool own)
{
    if (!own)
        take_ref(c->t, blk);
}

/* Handles one complete binary packet at p inside blk (own: blk holds only
   this packet, and its reference is ours to hand on or drop). */
static enum packet_result
handle_packet(struct conn *c, struct gm_block *blk, const char *p, bool own)
{
    struct gm_io_thread *t = c->t;
    struct gm_header h;
    gm_header_decode((const unsigned char *)p, UINT32_MAX, &h);
    const char *payload = p + GM_HEADER_SIZE;
    enum packet_result result = PKT_DONE;
    if (h.magic == GM_MAGIC_RES) {
        /* A response magic on a request: gearmand answers and carries on. */
        conn_send_error(c, "INVALID_MAGIC", "Request magic expected");
        goto drop;
    }
    const struct gm_packet_info *info = gm_packet_info(h.type);
    if (!(info->dir & GM_DIR_REQUEST)) {
        conn_send_error(c, "INVALID_COMMAND", "Command not expected");
        goto drop;
    }
    struct gm_fields f;
    if (gm_fields_split(h.type, payload, h.size, &f) != GM_PARSE_OK) {
        char text[96];
        snprintf(text, sizeof text, "%s needs %u NUL-separated fields", info->name,
                 (unsigned)info->nfields);
        conn_send_error(c, "INVALID_PACKET", text);
        result = PKT_CLOSE;
        goto drop;
    }
    if (h.type == GM_PKT_ECHO_REQ && !(c->flags & CF_DISPATCHED)) {
        /* Nothing of this connection is in flight at the dispatcher, so
           answering here keeps the replies in order. */
        struct gm_out msg;
        msg.conn = gm_conn_id_make(t->index, c->slot, c->gen);
        msg.kind = GM_OUT_SEND;
        msg.flags = 0;
        gm_header_encode((unsigned char *)msg.head, GM_MAGIC_RES, GM_PKT_ECHO_RES, h.size);
        msg.head_len = GM_HEADER_SIZE;
        msg.body.blk = blk;
        msg.body.ptr = payload;
        msg.body.len = h.size;
        give_ref(c, blk, own);
        conn_queue(c, &msg);
        return PKT_DONE;
    }
    struct gm_in *m = in_alloc(t);
    if (!m)
        return PKT_STALL;
    m->conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m->kind = GM_IN_PACKET;
    m->flags = own ? GM_IN_OWN_BLOCK : 0;
    m->type = (uint16_t)h.type;
    m->len = h.size;
    m->payload = payload;
    m->blk = blk;
    m->u.fields = f;
    give_ref(c, blk, own);
    gm_in_ring_produce(&t->ch->in);
    c->flags |= CF_DISPATCHED;
    return PKT_DONE;
drop:
    if (own)
        gm_block_unref(blk);
    return result;
}

/* Handles one admin text line: len bytes at p, without its end of line. */
static enum packet_result
handle_line(struct conn *c, const char *p, uint32_t len, bool crlf)
{
    struct gm_io_thread *t = c->t;
    struct gm_in *m = in_alloc(t);
    if (!m)
        return PKT_STALL;
    m->conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m->kind = GM_IN_TEXT;
    m->flags = crlf ? GM_IN_CRLF : 0;
    m->type = GM_PKT_TEXT;
    m->len = len;
    m->payload = p;
    m->blk = c->in_blk;
    gm_admin_split(p, len, &m->u.words);
    take_ref(t, c->in_blk);
    gm_in_ring_produce(&t->ch->in);
    c->flags |= CF_DISPATCHED;
    return PKT_DONE;
}

/* Moves a partial packet too big for the shared blocks into a block of its
   own, sized to what has arrived (it doubles later as more arrives). */
static bool
start_big(struct conn *c, uint64_t total)
{
    if (total > UINT32_MAX || total < c->in_len)
        return false;
    uint32_t cap = BIG_FIRST_CAP;
    while (cap < c->in_len * 2u && cap < total)
        cap *= 2;
    if (cap > total)
        cap = total;
    struct gm_block *b = gm_block_new(cap);
    if (!b)
        return false;
    memcpy(b->data, c->in_ptr, c->in_len);
    c->big = b;
    c->big_have = c->in_len;
    c->big_total = (uint32_t)total;
    gm_block_unref(c->in_blk);
    c->in_blk = NULL;
    c->in_ptr = NULL;
    c->in_len = 0;
    return true;
}

/* Stops reading and closes once the queued output (the error) is out. */
static void
close_after_output(struct conn *c, const char *why)
{
    if (c->flags & CF_DEAD)
        return;
    c->flags |= CF_CLOSING;
    ev_io_stop(c->t->loop, &c->rw);
    if (!c->out_head)
        conn_close(c, GM_LOG_ERROR, why);
    else
        gm_log(GM_LOG_ERROR, "closing %s:%u after an error: %s", c->addr, c->port, why);
}

static void
send_line_too_long(struct conn *c)
{
    static const char msg[] = "ERR LINE_TOO_LONG Text+command+lines+are+limited+to+8192+bytes\r\n";
    struct gm_out out;
    memset(&out, 0, sizeof out);
    out.conn = gm_conn_id_make(c->t->index, c->slot, c->gen);
    out.kind = GM_OUT_SEND;
    out.body.ptr = msg;
    out.body.len = sizeof msg - 1;
    conn_queue(c, &out);
}

/* Queues a front-end's own bytes (an error or a response) for writing. */
static void
conn_queue_fe_output(struct conn *c, struct gm_fe_output *o)
{
    if (!o->blk)
        return;
    struct gm_out msg;
    memset(&msg, 0, sizeof msg);
    msg.conn = gm_conn_id_make(c->t->index, c->slot, c->gen);
    msg.kind = GM_OUT_SEND;
    msg.body.blk = o->blk;
    msg.body.ptr = o->blk->data;
    msg.body.len = (uint32_t)o->len;
    o->blk = NULL;
    conn_queue(c, &msg);
}

static void close_after_output(struct conn *c, const char *why);

/* Hands one front-end request (len bytes at p in blk) to the dispatcher. */
static enum packet_result
handle_fe_request(struct conn *c, struct gm_block *blk, const char *p, uint32_t len,
                  const struct gm_fe_req *req, bool own)
{
    struct gm_io_thread *t = c->t;
    struct gm_in *m = in_alloc(t);
    if (!m)
        return PKT_STALL;
    m->conn = gm_conn_id_make(t->index, c->slot, c->gen);
    m->kind = GM_IN_FRONTEND;
    m->flags = own ? GM_IN_OWN_BLOCK : 0;
    m->type = 0;
    m->len = len;
    m->payload = p;
    m->blk = blk;
    m->u.fe = *req;
    if (!own)
        take_ref(t, blk);
    gm_in_ring_produce(&t->ch->in);
    c->fe_busy = true;
    return PKT_DONE;
}

/* The end of a parse: the references taken for it are counted before
   anything can release one (a written ECHO reply, a closed connection); a
   connection with nothing left unparsed gives its block back; a fatal
   error closes it once the error is written. */
static void
parse_done(struct conn *c, const char *close_why)
{
    flush_refs(c->t);
    if (c->in_len == 0 && c->in_blk) {
        gm_block_unref(c->in_blk);
        c->in_blk = NULL;
        c->in_ptr = NULL;
    }
    if (close_why)
        close_after_output(c, close_why);
}

/* The front-end counterpart of conn_parse: one request at a time; the next
   is parsed once the previous one's response is queued. */
static void
conn_parse_fe(struct conn *c)
{
    const struct gm_frontend *fe = c->t->cfg->frontend;
    const char *close_why = NULL;
    while (c->in_len && !c->fe_busy && !(c->flags & (CF_CLOSING | CF_DEAD))) {
        struct gm_fe_req req;
        uint64_t need = 0;
        struct gm_fe_output err = {0};
        long used = fe->parse(c->fe, c->in_ptr, c->in_len, c->t->cfg->max_packet_size, &req, &need, &err);
        if (used > (long)c->in_len)
            used = -1; /* a front-end bug: the stream cannot be trusted */
        if (used < 0) {
            conn_queue_fe_output(c, &err);
            close_why = "bad request";
            break;
        }
        if (used == 0) {
            if (need > BIG_PACKET && need > c->in_len && !start_big(c, need))
                close_why = "out of memory for a large request";
            break;
        }
        if (handle_fe_request(c, c->in_blk, c->in_ptr, (uint32_t)used, &req, false) == PKT_STALL) {
            stall(c);
            break;
        }
        c->in_ptr += used;
        c->in_len -= (uint32_t)used;
    }
    parse_done(c, close_why);
}

/* A reply for a front-end connection: a whole response from the
   dispatcher (raw), or Gearman packet bytes that the front-end turns into
   its response once the job is done. */
static void
fe_reply(struct conn *c, struct gm_out *m)
{
    if (m->flags & GM_OUT_F_RAW) {
        conn_queue(c, m);
        c->fe_busy = false;
        return;
    }
    size_t add = m->head_len + m->body.len;
    if (add == 0) {
        gm_block_unref(m->body.blk);
        return;
    }
    if (c->fe_acc_len + add > c->fe_acc_cap) {
        size_t cap = c->fe_acc_cap ? c->fe_acc_cap : 1024;
        while (cap < c->fe_acc_len + add)
            cap *= 2;
        char *nb = realloc(c->fe_acc, cap);
        if (!nb) {
            gm_block_unref(m->body.blk);
            conn_close(c, GM_LOG_ERROR, "out of memory for a response");
            return;
        }
        c->fe_acc = nb;
        c->fe_acc_cap = cap;
    }
    memcpy(c->fe_acc + c->fe_acc_len, m->head, m->head_len);
    if (m->body.len)
        memcpy(c->fe_acc + c->fe_acc_len + m->head_len, m->body.ptr, m->body.len);
    c->fe_acc_len += add;
    gm_block_unref(m->body.blk);
    size_t pos = 0;
    while (c->fe_acc_len - pos >= GM_HEADER_SIZE) {
        struct gm_header h;
        gm_header_decode((const unsigned char *)c->fe_acc + pos, UINT32_MAX, &h);
        if (c->fe_acc_len - pos < GM_HEADER_SIZE + (size_t)h.size)
            break;
        struct gm_fe_output out = {0};
        int done = c->t->cfg->frontend->on_packet(c->fe, h.type, c->fe_acc + pos + GM_HEADER_SIZE,
                                                  h.size, &out);
        pos += GM_HEADER_SIZE + h.size;
        if (done) {
            conn_queue_fe_output(c, &out);
            c->fe_busy = false;
            if (out.close) {
                c->flags |= CF_CLOSING;
                ev_io_stop(c->t->loop, &c->rw);
                mark_dirty(c);
            }
        }
    }
    memmove(c->fe_acc, c->fe_acc + pos, c->fe_acc_len - pos);
    c->fe_acc_len -= pos;
}

/* Cuts every complete packet and line out of the connection's unparsed
   bytes.  Stops at a partial packet, a full ring (stall) or a fatal error
   (close after the error is written). */
static void
conn_parse(struct conn *c)
{
    if (c->fe) {
        conn_parse_fe(c);
        return;
    }
    const struct gm_server_config *cfg = c->t->cfg;
    const char *close_why = NULL;
    while (c->in_len && !(c->flags & (CF_CLOSING | CF_DEAD))) {
        struct gm_frame f;
        gm_frame_next(c->in_ptr, c->in_len, cfg->max_packet_size, &f);
        enum packet_result r;
        if (f.kind == GM_FRAME_NEED_MORE) {
            if (f.need > BIG_PACKET && !start_big(c, f.need))
                close_why = "out of memory for a large packet";
            break;
        }
        if (f.kind == GM_FRAME_ERROR) {
            char text[128];
            switch (f.error) {
            case GM_PARSE_LINE_TOO_LONG:
                send_line_too_long(c);
                break;
            case GM_PARSE_BAD_MAGIC:
                conn_send_error(c, "INVALID_MAGIC", "Packet magic is neither \\0REQ nor \\0RES");
                break;
            case GM_PARSE_BAD_TYPE:
                snprintf(text, sizeof text, "Unknown packet type %u", f.h.type);
                conn_send_error(c, "INVALID_COMMAND", text);
                break;
            default:
                snprintf(text, sizeof text,
                         "Packet of %u bytes is larger than --max-packet-size (%u)", f.h.size,
                         cfg->max_packet_size);
                conn_send_error(c, "ARGUMENT_TOO_LARGE", text);
                break;
            }
            close_why = f.error == GM_PARSE_LINE_TOO_LONG ? "admin line too long" : "bad packet";
            break;
        }
        if (f.kind == GM_FRAME_TEXT)
            r = handle_line(c, c->in_ptr, f.text_len, f.length != f.text_len + 1);
        else
            r = handle_packet(c, c->in_blk, c->in_ptr, false);
        if (r == PKT_STALL) {
            stall(c);
            break;
        }
        c->in_ptr += f.length;
        c->in_len -= f.length;
        if (r == PKT_CLOSE) {
            close_why = "bad packet";
            break;
        }
    }
    parse_done(c, close_why);
}

/* Finishes a big packet once all its bytes are in: hands it on. */
static void
conn_finish_big(struct conn *c)
{
    /* The packet's reference leaves the connection before it is handed on:
       handing it on may queue a reply that holds it (ECHO) or an error, and
       either may close the connection, which must not drop it a second
       time.  A stall (nothing taken) gives it back. */
    struct gm_block *b = c->big;
    c->big = NULL;
    if (c->fe) {
        struct gm_fe_req req;
        uint64_t need = 0;
        struct gm_fe_output err = {0};
        long used = c->t->cfg->frontend->parse(c->fe, b->data, c->big_have, c->t->cfg->max_packet_size,
                                               &req, &need, &err);
        if (used > 0 && handle_fe_request(c, b, b->data, (uint32_t)used, &req, true) == PKT_STALL) {
            c->big = b;
            stall(c);
            return;
        }
        if (used <= 0) {
            gm_block_unref(b);
            conn_queue_fe_output(c, &err);
            close_after_output(c, "bad request");
        }
        return;
    }
    enum packet_result r = handle_packet(c, b, b->data, true);
    if (r == PKT_STALL) {
        c->big = b;
        stall(c);
        return;
    }
    if (r == PKT_CLOSE)
        close_after_output(c, "bad packet");
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

/* Makes sure the thread's block has `need` free bytes. */
static bool
read_space(struct gm_io_thread *t, uint32_t need)
{
    if (t->rblk && t->rblk->cap - t->rused >= need)
        return true;
    struct gm_block *b = gm_block_new(READ_BLOCK_SIZE);
    if (!b)
        return false;
    flush_refs(t);
    gm_block_unref(t->rblk);
    t->rblk = b;
    t->rused = 0;
    return true;
}

/* Reads into the big packet's own block, growing it as bytes arrive.
   Returns bytes read, 0 for EOF, -1 for an error (errno set). */
static ssize_t
read_big(struct conn *c)
{
    if (c->big_have == c->big->cap) {
        uint64_t cap = (uint64_t)c->big->cap * 2;
        if (cap > c->big_total)
            cap = c->big_total;
        struct gm_block *b = realloc(c->big, sizeof *b + (size_t)cap);
        if (!b) {
            errno = ENOMEM;
            return -1;
        }
        b->cap = (uint32_t)cap;
        c->big = b;
    }
    ssize_t n = read(c->fd, c->big->data + c->big_have, c->big->cap - c->big_have);
    if (n > 0) {
        c->big_have += (uint32_t)n;
        if (c->big_have == c->big_total)
            conn_finish_big(c);
    }
    return n;
}

/* Reads into the shared block after the connection's partial packet. */
static ssize_t
read_shared(struct conn *c, size_t *room)
{
    struct gm_io_thread *t = c->t;
    bool contiguous = c->in_len && c->in_blk == t->rblk &&
                      c->in_ptr + c->in_len == t->rblk->data + t->rused &&
                      t->rblk->cap - t->rused >= READ_MIN_SPACE;
    if (!contiguous) {
        if (!read_space(t, c->in_len + READ_MIN_SPACE)) {
            errno = ENOMEM;
            return -1;
        }
        char *dst = t->rblk->data + t->rused;
        if (c->in_len)
            memcpy(dst, c->in_ptr, c->in_len);
        if (c->in_blk) {
            flush_refs(t);
            gm_block_unref(c->in_blk);
        }
        c->in_blk = t->rblk;
        gm_block_ref(t->rblk);
        c->in_ptr = dst;
        t->rused += c->in_len;
    }
    *room = t->rblk->cap - t->rused;
    ssize_t n = read(c->fd, t->rblk->data + t->rused, *room);
    if (n > 0) {
        t->rused += (uint32_t)n;
        c->in_len += (uint32_t)n;
        conn_parse(c);
    } else if (c->in_len == 0) {
        gm_block_unref(c->in_blk);
        c->in_blk = NULL;
        c->in_ptr = NULL;
    }
    return n;
}

static void
conn_read(struct conn *c)
{
    for (int round = 0; round < READS_PER_EVENT; round++) {
        if (c->flags & (CF_DEAD | CF_CLOSING | CF_STALLED))
            return;
        if (c->fe && c->fe_busy) {
            /* One request at a time: what the client sends meanwhile waits
               in the socket, not in our memory. */
            ev_io_stop(c->t->loop, &c->rw);
            c->flags |= CF_FE_PAUSED;
            return;
        }
        size_t room = 0;
        ssize_t n = c->big ? read_big(c) : read_shared(c, &room);
        if (n == 0) {
            conn_close(c, GM_LOG_INFO, "Peer connection has called close()");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            conn_close(c, errno == ENOMEM ? GM_LOG_ERROR : GM_LOG_INFO,
                       errno == ENOMEM ? "out of memory reading" : "read failed");
            return;
        }
        if (!c->big && (size_t)n < room)
            return; /* the socket is drained */
    }
}

/* Resumes connections that stalled on a full inbound ring. */
static void
retry_stalled(struct gm_io_thread *t)
{
    struct conn *list = t->stalled;
    t->stalled = NULL;
    while (list) {
        struct conn *c = list;
        list = c->stalled_next;
        c->flags &= ~CF_STALLED;
        if (c->big && c->big_have == c->big_total)
            conn_finish_big(c);
        else
            conn_parse(c);
        if (!(c->flags & (CF_STALLED | CF_DEAD | CF_CLOSING))) {
            ev_io_start(t->loop, &c->rw);
            /* Data may be waiting in the kernel already; level-triggered
               epoll reports it on the next iteration. */
        }
    }
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */
/* ------------------------------------------------------------------ */

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
                    ev_io_start(t->loop, &c->rw);
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
        if (t->colo)
            gm_disp_final(t->colo);
        drain_outbound(t);
        while (t->dirty) {
            struct conn *c = t->dirty;
            t->dirty = c->dirty_next;
            c->flags &= ~CF_DIRTY;
            if (!(c->flags & CF_DEAD))
                conn_flush(c);
        }
        flush_lazy(t);
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    t->iter_active = true;
    gm_busy_poll_activity(&t->poll, t->loop);
    drain_newfds(t);
    drain_outbound(t);
    if (t->stalled)
        retry_stalled(t);
}

static void
flush_lazy(struct gm_io_thread *t)
{
    while (t->lazy) {
        struct conn *c = t->lazy;
        t->lazy = c->lazy_next;
        c->flags &= ~CF_LAZY;
        if (!(c->flags & (CF_DEAD | CF_WRITING)))
            conn_flush(c);
    }
}

/* Writes what is queued, publishes requests and wakes the dispatcher. */
static void
write_and_publish(struct gm_io_thread *t)
{
    flush_refs(t);
    in_flush_overflow(t);
    while (t->dirty) {
        struct conn *c = t->dirty;
        t->dirty = c->dirty_next;
        c->flags &= ~CF_DIRTY;
        if (!(c->flags & CF_DEAD))
            conn_flush(c);
    }
    if (t->lazy && (!ev_is_active(&t->poll.idle) || !t->iter_active ||
                    ev_now(t->loop) - t->lazy_since >= t->lazy_max))
        flush_lazy(t);
    flush_refs(t);
    if (gm_in_ring_publish(&t->ch->in) && !t->colo)
        t->wake_disp(t->wake_arg);
}

/* One I/O thread with the dispatcher on board: requests published this
   iteration are answered and the answers written before the loop sleeps,
   with no hand-off to another thread. */
static void
run_hosted_dispatcher(struct gm_io_thread *t)
{
    for (int round = 0; round < 8; round++) {
        size_t n = gm_disp_drain(t->colo, 4096);
        gm_disp_prepare(t->colo);
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
    if (t->colo)
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
    t->lazy_max = cfg->reply_batch_us / 1e6;
    /* A slow reader may hold max_output of unsent bytes besides one reply
       of the largest size, so that a job as big as --max-packet-size can
       always be delivered. */
    t->out_limit = cfg->max_output + cfg->max_packet_size + REPLY_SLACK;
    return t;
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
        ev_io_stop(t->loop, &c->rw);
        ev_io_stop(t->loop, &c->ww);
        close(c->fd);
        gm_block_unref(c->in_blk);
        gm_block_unref(c->big);
        if (c->fe)
            t->cfg->frontend->conn_free(c->fe);
        free(c->fe_acc);
        free(c->close_node);
        while (c->out_head) {
            struct out_node *n = c->out_head;
            c->out_head = n->next;
            node_put(t, n);
        }
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
    gm_in_spill_clear(&t->spill, NULL);
    struct gm_new_fd nf;
    gm_fd_ring_publish(&t->newfds);
    while (gm_fd_ring_pop(&t->newfds, &nf))
        close(nf.fd);
    gm_fd_ring_destroy(&t->newfds);
    gm_block_unref(t->rblk);
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
    t->colo = d;
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
