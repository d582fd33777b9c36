/*
 * fuzz_admin.c: libFuzzer target for the admin text protocol, end to end
 * inside one process: the input is cut into lines, each line is split into
 * words as an I/O thread does and run by a real dispatcher (no sockets, no
 * threads) that already holds functions, workers and queued, running and
 * future jobs.  Every reply is drained and released; the dispatcher is
 * freed at the end, so leaks and use-after-free show up under the
 * sanitizers.  Single-threaded.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/proto/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t
fixed_clock(void *arg)
{
    (void)arg;
    return 1700000000000LL;
}

/* Queues one message; its payload is copied into a fresh block. */
static void
push(struct gm_channel *ch, gm_conn_id conn, int kind, uint32_t type, const char *payload,
     size_t len)
{
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = conn;
    m.kind = (uint8_t)kind;
    m.type = (uint16_t)type;
    if (kind == GM_IN_OPEN) {
        m.u.open.fd = 7;
        memcpy(m.u.open.addr, "127.0.0.1", 10);
    } else {
        struct gm_block *b = gm_block_new(len ? len : 1);
        if (!b)
            abort();
        if (len)
            memcpy(b->data, payload, len);
        m.blk = b;
        m.payload = b->data;
        m.len = (uint32_t)len;
        if (kind == GM_IN_PACKET)
            gm_fields_split(type, b->data, (uint32_t)len, &m.u.fields);
        else
            gm_admin_split(b->data, len, &m.u.words);
    }
    while (!gm_in_ring_push(&ch->in, &m))
        abort(); /* the rings are large enough for one input */
    gm_in_ring_publish(&ch->in);
}

static void
drain_replies(struct gm_channel *ch)
{
    struct gm_out *o;
    while ((o = gm_out_ring_peek(&ch->out))) {
        gm_block_unref(o->body.blk);
        gm_out_ring_consume(&ch->out);
    }
    gm_out_ring_release(&ch->out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct gm_server_config cfg;
    gm_server_config_defaults(&cfg);
    struct gm_channel ch;
    if (gm_channel_init(&ch, 256, 1024) < 0)
        abort();
    struct gm_disp_hooks hooks = {.now_ms = fixed_clock};
    struct gm_dispatcher *d = gm_disp_new(&cfg, &ch, 1, &hooks);
    if (!d)
        abort();
    gm_conn_id worker = gm_conn_id_make(0, 1, 1), client = gm_conn_id_make(0, 2, 1),
               admin = gm_conn_id_make(0, 3, 1);
    push(&ch, worker, GM_IN_OPEN, 0, NULL, 0);
    push(&ch, client, GM_IN_OPEN, 0, NULL, 0);
    push(&ch, admin, GM_IN_OPEN, 0, NULL, 0);
    push(&ch, worker, GM_IN_PACKET, GM_PKT_CAN_DO, "f", 1);
    push(&ch, client, GM_IN_PACKET, GM_PKT_SUBMIT_JOB, "f\0u1\0data", 9);
    push(&ch, client, GM_IN_PACKET, GM_PKT_SUBMIT_JOB_BG, "g\0\0x", 4);
    push(&ch, client, GM_IN_PACKET, GM_PKT_SUBMIT_JOB_EPOCH, "f\0\0" "9999999999\0y", 15);
    push(&ch, worker, GM_IN_PACKET, GM_PKT_GRAB_JOB, "", 0);
    push(&ch, client, GM_IN_PACKET, GM_PKT_SUBMIT_JOB_LOW, "f\0-\0z", 5);
    gm_disp_drain(d, 1 << 20);
    drain_replies(&ch);

    const char *p = (const char *)data;
    size_t left = size;
    while (left) {
        const char *nl = memchr(p, '\n', left < GM_TEXT_LINE_MAX ? left : GM_TEXT_LINE_MAX);
        size_t len = nl ? (size_t)(nl - p) : (left < GM_TEXT_LINE_MAX - 1 ? left : GM_TEXT_LINE_MAX - 1);
        size_t used = nl ? len + 1 : len;
        if (len && p[len - 1] == '\r')
            len--;
        push(&ch, admin, GM_IN_TEXT, GM_PKT_TEXT, p, len);
        gm_disp_drain(d, 1 << 20);
        gm_disp_flush(d);
        drain_replies(&ch);
        p += used;
        left -= used;
    }
    push(&ch, worker, GM_IN_CLOSE, 0, NULL, 0);
    gm_disp_drain(d, 1 << 20);
    drain_replies(&ch);
    gm_disp_free(d);
    gm_channel_destroy(&ch);
    return 0;
}
