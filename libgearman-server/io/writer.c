/*
 * writer.c: a connection's output (see io_int.h): queueing replies (with
 * the unsent-output limit that closes a slow reader), errors built here,
 * writing with writev at the end of the loop iteration, replies that may
 * wait to go out together (--reply-batch), and closing once the output is
 * out.  I/O thread only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "libgearman-server/base/log.h"

void
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
   instead (memory, or output already over --max-output-size: a client that
   reads nothing holds at most that besides one reply).  Past out_soft the
   connection is not read from until its output is down to half of it. */
bool
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
    size_t before = c->out_bytes;
    c->out_bytes += msg->head_len + msg->body.len;
    if ((msg->flags & GM_OUT_F_MAY_WAIT) && c->t->lazy_max > 0)
        mark_lazy(c);
    else
        mark_dirty(c);
    if (before > c->t->out_limit) {
        /* the node is queued first: closing frees it with the rest */
        conn_close(c, GM_LOG_ERROR, "too much unsent output (slow reader)");
        return false;
    }
    if (c->out_bytes > c->t->out_soft && !(c->flags & CF_OUT_FULL)) {
        /* Backpressure: a client that does not read its replies is not
           read from either; its requests wait in its own socket. */
        c->flags |= CF_OUT_FULL;
        ev_io_stop(c->t->loop, &c->rw);
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

void
conn_send_error(struct conn *c, const char *code, const char *text)
{
    struct gm_field_ref f[2] = {{code, strlen(code)}, {text, strlen(text)}};
    gm_log_peer(&c->log_limit, c->addr, c->port, GM_LOG_ERROR, "GEARMAN_%s:%s (%s:%u)", code, text,
                c->addr, c->port);
    conn_send_packet(c, GM_PKT_ERROR, f, 2);
}

/* Writes as much queued output as the socket takes, with one writev per
   WRITE_IOVS pieces.  Arms the write watcher when the socket is full. */
void
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
        ssize_t w = conn_writev(c, iov, n);
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
        if ((size_t)w < want && !c->ssl)
            break; /* the socket is full (TLS writes a record at a time: on until EAGAIN) */
    }
    if ((c->flags & CF_OUT_FULL) && c->out_bytes <= t->out_soft / 2) {
        c->flags &= ~CF_OUT_FULL;
        conn_resume_reading(c);
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

/* Writes the output of every connection on the dirty list. */
void
flush_dirty(struct gm_io_thread *t)
{
    while (t->dirty) {
        struct conn *c = t->dirty;
        t->dirty = c->dirty_next;
        c->flags &= ~CF_DIRTY;
        if (!(c->flags & CF_DEAD))
            conn_flush(c);
    }
}

void
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

/* Stops reading and closes once the queued output (the error) is out. */
void
close_after_output(struct conn *c, const char *why)
{
    if (c->flags & CF_DEAD)
        return;
    c->flags |= CF_CLOSING;
    ev_io_stop(c->t->loop, &c->rw);
    if (!c->out_head)
        conn_close(c, GM_LOG_ERROR, why);
    else
        gm_log_peer(&c->log_limit, c->addr, c->port, GM_LOG_ERROR, "closing %s:%u after an error: %s",
                    c->addr, c->port, why);
}

void
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
void
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
