/*
 * frontend_conn.c: connections of the front-end (HTTP, frontend.h) on an
 * I/O thread: one request at a time handed to the dispatcher, and its
 * replies turned into the front-end's response.  I/O thread only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

/* Hands one front-end request (len bytes at p in blk) to the dispatcher. */
static enum packet_result
handle_fe_request(struct conn *c, struct gm_block *blk, const char *p, uint32_t len,
                  const struct gm_fe_req *req, bool own)
{
    struct gm_io_thread *t = c->t;
    struct gm_in *m = in_begin(c, GM_IN_FRONTEND, own ? GM_IN_OWN_BLOCK : 0, 0, len, p, blk);
    if (!m)
        return PKT_STALL;
    m->u.fe = *req;
    if (!own)
        take_ref(t, blk);
    gm_in_ring_produce(&t->ch->in);
    c->fe_busy = true;
    return PKT_DONE;
}

/* The front-end counterpart of packet_parse: one request at a time; the next
   is parsed once the previous one's response is queued. */
void
fe_parse(struct conn *c)
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
void
fe_reply(struct conn *c, struct gm_out *m)
{
    if (m->flags & GM_OUT_F_RAW) {
        conn_queue(c, m);
        c->fe_busy = false;
        conn_mark_ready(c);
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
            conn_mark_ready(c);
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

/* Hands on a big front-end request, b, whose bytes are all in (its
   reference is ours: conn_finish_big took it off the connection). */
void
fe_finish_big(struct conn *c, struct gm_block *b)
{
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
}
