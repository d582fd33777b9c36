/*
 * reply.c: replies to connections, queued for their I/O thread (model
 * layer of the dispatcher).
 *
 * Dispatcher thread only.  Owns each port's outbound spill: a reply that
 * finds the outbound ring full (or replies already waiting) waits in order
 * on the port's spill list until gm_disp_flush moves it into the ring.
 * Packets are built in the message's inline space, or in a block of their
 * own when the head is bigger; bodies go by reference, never copied.
 * Listings and front-end responses (the replies that can be much bigger
 * than their request) are counted per peer and round (charge_reply).
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <string.h>

#include "libgearman-server/base/log.h"

struct out_ctx {
    struct gm_disp_port *port;
    struct gm_out *msg;
    struct gm_out_spill_node *node;
};

/* Finds room for one reply to conn: a ring slot, or a spill node when the
   ring is full (or replies already wait, to keep the order).  Returns
   false if even that fails (memory); the reply is then dropped. */
static bool
out_begin(struct gm_dispatcher *d, gm_conn_id conn, struct out_ctx *o)
{
    unsigned t = gm_conn_thread(conn);
    if (t >= d->nports || d->tearing_down)
        return false;
    o->port = &d->ports[t];
    o->node = NULL;
    o->msg = gm_out_spill_slot(&o->port->spill, &o->port->ch->out, NULL);
    if (!o->msg) {
        o->node = malloc(sizeof *o->node);
        if (!o->node) {
            gm_log(GM_LOG_ERROR, "out of memory queueing a reply; reply dropped");
            return false;
        }
        o->msg = &o->node->v;
    }
    o->msg->conn = conn;
    o->msg->kind = GM_OUT_SEND;
    o->msg->flags = 0;
    o->msg->head_len = 0;
    o->msg->body.blk = NULL;
    o->msg->body.ptr = NULL;
    o->msg->body.len = 0;
    return true;
}

static void
out_end(struct out_ctx *o)
{
    if (o->node) {
        gm_out_spill_append(&o->port->spill, o->node);
    } else {
        gm_out_ring_produce(&o->port->ch->out);
        o->port->produced = true;
    }
}

/* Queues one packet: the fields are copied, `body` (if any) is appended as
   the last field by reference (a new reference is taken).  A head too big
   for the inline space goes out as a block of its own, followed by the body
   as a second message, so the body is never copied. */
void
send_packet_flagged(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type,
                    const struct gm_field_ref *f, size_t n, const struct gm_slice *body,
                    uint8_t flags)
{
    size_t head_payload = body ? gm_payload_size(f, n) + (n ? 1 : 0) : gm_payload_size(f, n);
    size_t size = head_payload + (body ? body->len : 0);
    size_t head_len = GM_HEADER_SIZE + head_payload;
    struct out_ctx o;
    if (!out_begin(d, conn, &o))
        return;
    o.msg->flags = flags;
    unsigned char *dst;
    struct gm_block *hb = NULL;
    if (head_len <= GM_OUT_INLINE) {
        dst = (unsigned char *)o.msg->head;
        o.msg->head_len = (uint8_t)head_len;
    } else {
        hb = gm_block_new(head_len);
        if (!hb) {
            /* keep the slot consistent: send nothing but an empty message */
            out_end(&o);
            return;
        }
        dst = (unsigned char *)hb->data;
        o.msg->body.blk = hb;
        o.msg->body.ptr = hb->data;
        o.msg->body.len = (uint32_t)head_len;
    }
    gm_header_encode(dst, GM_MAGIC_RES, type, (uint32_t)size);
    unsigned char *p = dst + GM_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        if (f[i].len)
            memcpy(p, f[i].ptr, f[i].len);
        p += f[i].len;
        if (i + 1 < n || body)
            *p++ = '\0';
    }
    if (body && body->len) {
        if (!hb) {
            o.msg->body = *body;
            if (body->blk)
                gm_block_ref(body->blk);
        } else {
            out_end(&o);
            if (!out_begin(d, conn, &o))
                return;
            o.msg->flags = flags;
            o.msg->body = *body;
            if (body->blk)
                gm_block_ref(body->blk);
        }
    }
    out_end(&o);
}

void
send_packet(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type,
            const struct gm_field_ref *f, size_t n, const struct gm_slice *body)
{
    send_packet_flagged(d, conn, type, f, n, body, 0);
}

/* Whether the client waits on another job besides the one being answered:
   then more replies are coming, and this one may wait to go out with them. */
uint8_t
more_replies_coming(const struct gm_peer *p)
{
    const struct gm_list *first = p->waits.next;
    return first != &p->waits && first->next != &p->waits ? GM_OUT_F_MAY_WAIT : 0;
}

void
send_simple(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type)
{
    send_packet(d, conn, type, NULL, 0, NULL);
}

void
send_error(struct gm_dispatcher *d, gm_conn_id conn, const char *code, const char *text)
{
    struct gm_field_ref f[2] = {{code, strlen(code)}, {text, strlen(text)}};
    /* (while gm_disp_free tears down, the peer tables are gone) */
    struct gm_peer *p = d->tearing_down ? NULL : gm_disp_peer(d, conn);
    if (p)
        gm_log_peer(&p->log_limit, p->addr, p->port, GM_LOG_ERROR, "GEARMAN_%s:%s (%s:%u%s)", code, text,
                    p->addr, p->port, p->log_name);
    else
        gm_log_peer(NULL, NULL, 0, GM_LOG_ERROR, "GEARMAN_%s:%s", code, text);
    send_packet(d, conn, GM_PKT_ERROR, f, 2, NULL);
}

/* A name that would cut or forge the `status` or `workers` listings
   (gm_name_check) gets an ERROR, and the connection stays: the stream is
   fine.  Returns true if the name was refused. */
bool
refuse_bad_name(struct gm_dispatcher *d, gm_conn_id conn, enum gm_name_kind kind, const char *name,
                size_t len)
{
    const struct gm_name_fault *bad = gm_name_check(kind, name, len);
    if (bad)
        send_error(d, conn, bad->code, bad->text);
    return bad != NULL;
}

void
send_job_created(struct gm_dispatcher *d, gm_conn_id conn, const struct gm_job *job, uint8_t flags)
{
    struct gm_field_ref h = {gm_job_handle(job), job->handle_len};
    send_packet_flagged(d, conn, GM_PKT_JOB_CREATED, &h, 1, NULL, flags);
}

void
gm_disp_send_bytes(struct gm_dispatcher *d, gm_conn_id conn, const void *p, size_t len)
{
    struct out_ctx o;
    if (len <= GM_OUT_INLINE) {
        if (!out_begin(d, conn, &o))
            return;
        memcpy(o.msg->head, p, len);
        o.msg->head_len = (uint8_t)len;
        out_end(&o);
        return;
    }
    struct gm_block *b = gm_block_new(len);
    if (!b)
        return;
    memcpy(b->data, p, len);
    gm_disp_send_block(d, conn, b, len);
}

void
charge_reply(struct gm_dispatcher *d, gm_conn_id conn, size_t len)
{
    struct gm_peer *p = gm_disp_peer(d, conn);
    if (!p)
        return;
    uint32_t round = d->ports[gm_conn_thread(conn)].round;
    if (p->round != round) {
        p->round = round;
        p->round_bytes = 0;
    }
    p->round_bytes += len;
}

bool
over_round(const struct gm_dispatcher *d, const struct gm_peer *p)
{
    return p->round == d->ports[gm_conn_thread(p->id)].round && p->round_bytes >= d->round_limit;
}

void
gm_disp_send_block(struct gm_dispatcher *d, gm_conn_id conn, struct gm_block *b, size_t len)
{
    struct out_ctx o;
    charge_reply(d, conn, len);
    if (!out_begin(d, conn, &o)) {
        gm_block_unref(b);
        return;
    }
    o.msg->body.blk = b;
    o.msg->body.ptr = b->data;
    o.msg->body.len = (uint32_t)len;
    out_end(&o);
}

bool
send_raw(struct gm_dispatcher *d, gm_conn_id conn, struct gm_block *b, size_t len)
{
    struct out_ctx o;
    charge_reply(d, conn, len);
    if (!out_begin(d, conn, &o)) {
        gm_block_unref(b);
        return false;
    }
    o.msg->flags = GM_OUT_F_RAW;
    o.msg->body.blk = b;
    o.msg->body.ptr = b->data;
    o.msg->body.len = (uint32_t)len;
    out_end(&o);
    return true;
}

void
gm_disp_send_close(struct gm_dispatcher *d, gm_conn_id conn)
{
    struct out_ctx o;
    if (!out_begin(d, conn, &o))
        return;
    o.msg->kind = GM_OUT_CLOSE;
    out_end(&o);
}
