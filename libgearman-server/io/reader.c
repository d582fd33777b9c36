/*
 * reader.c: reading a connection's socket (see io_int.h): into the
 * thread's shared 64 KiB block after the connection's partial packet, or
 * into a big packet's own block as its bytes arrive, then parsing; and
 * resuming connections that stalled on a full inbound ring.  I/O thread
 * only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"

void
conn_parse(struct conn *c)
{
    if (c->fe)
        fe_parse(c);
    else
        packet_parse(c);
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
    if (c->fe)
        fe_finish_big(c, b);
    else
        packet_finish_big(c, b);
}

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
    if (c->big_have == c->big->cap && !gm_block_grow(&c->big, (size_t)c->big_have + 1, 0, c->big_total)) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t n = conn_recv(c, c->big->data + c->big_have, c->big->cap - c->big_have);
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
    ssize_t n = conn_recv(c, t->rblk->data + t->rused, *room);
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

void
conn_read(struct conn *c)
{
    for (int round = 0; round < READS_PER_EVENT; round++) {
        if (c->flags & (CF_DEAD | CF_CLOSING | CF_STALLED | CF_OUT_FULL))
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
        conn_mark_read(c);
        if (!c->big && (size_t)n < room && !conn_recv_pending(c))
            return; /* the socket is drained, or says when it has more (a TLS record) */
    }
    /* Fairness: the socket says when more is there, but not a TLS session
       holding bytes already received. */
    if (conn_recv_pending(c) && !(c->flags & (CF_DEAD | CF_CLOSING | CF_STALLED | CF_OUT_FULL)))
        ev_feed_event(c->t->loop, &c->rw, EV_READ);
}

/* Resumes connections that stalled on a full inbound ring. */
void
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
        /* Data may be waiting in the kernel already; level-triggered
           epoll reports it on the next iteration. */
        conn_resume_reading(c);
    }
}
