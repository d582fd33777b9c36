/*
 * parser.c: cutting Gearman packets and admin text lines out of a
 * connection's bytes and handing them to the dispatcher (see io_int.h): by
 * reference into the read block, a big packet in a block of its own; ECHO
 * answered here when nothing of the connection is in flight; protocol
 * errors answered here.  I/O thread only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <stdio.h>
#include <string.h>

#include "libgearman-server/proto/admin_split.h"

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
    struct gm_in *m =
        in_begin(c, GM_IN_PACKET, own ? GM_IN_OWN_BLOCK : 0, (uint16_t)h.type, h.size, payload, blk);
    if (!m)
        return PKT_STALL;
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
    struct gm_in *m = in_begin(c, GM_IN_TEXT, crlf ? GM_IN_CRLF : 0, GM_PKT_TEXT, len, p, c->in_blk);
    if (!m)
        return PKT_STALL;
    gm_admin_split(p, len, &m->u.words);
    take_ref(t, c->in_blk);
    gm_in_ring_produce(&t->ch->in);
    c->flags |= CF_DISPATCHED;
    return PKT_DONE;
}

/* Moves a partial packet too big for the shared blocks into a block of its
   own, sized to what has arrived (it doubles later as more arrives). */
bool
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

/* The end of a parse: the references taken for it are counted before
   anything can release one (a written ECHO reply, a closed connection); a
   connection with nothing left unparsed gives its block back; a fatal
   error closes it once the error is written. */
void
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

/* Cuts every complete packet and line out of the connection's unparsed
   bytes.  Stops at a partial packet, a full ring (stall) or a fatal error
   (close after the error is written). */
void
packet_parse(struct conn *c)
{
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

/* Hands on a big Gearman packet, b, whose bytes are all in (its
   reference is ours: conn_finish_big took it off the connection). */
void
packet_finish_big(struct conn *c, struct gm_block *b)
{
    enum packet_result r = handle_packet(c, b, b->data, true);
    if (r == PKT_STALL) {
        c->big = b;
        stall(c);
        return;
    }
    if (r == PKT_CLOSE)
        close_after_output(c, "bad packet");
}
