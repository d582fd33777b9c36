/*
 * disp_harness.c: the dispatcher unit tests' harness (see disp_harness.h):
 * the fixture that builds and frees a dispatcher over two channels with
 * the test's clock, the I/O threads' side of the rings (opening and
 * closing connections, sending packets and admin lines, collecting the
 * replies into per-connection byte streams), and reading those streams.
 */
#include "config.h"

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/proto/admin_split.h"
#include "tests/unit/disp_harness.h"

struct disp_state H;

static int64_t
hook_now(void *arg)
{
    (void)arg;
    return H.now;
}

static void
hook_wake(void *arg, unsigned thread)
{
    (void)arg;
    ck_assert_uint_lt(thread, NCHAN);
    H.wakes[thread]++;
}

static void
hook_shutdown(void *arg, int how)
{
    (void)arg;
    (void)how;
    H.shutdowns++;
}

void
disp_setup(void)
{
    memset(&H, 0, sizeof H);
    if (!getenv("GM_TEST_LOG"))
        gm_log_level = -1; /* silence: errors are what many tests provoke */
    gm_server_config_defaults(&H.cfg);
    strcpy(H.cfg.handle_prefix, "H:test");
    H.now = T0;
    for (unsigned t = 0; t < NCHAN; t++)
        ck_assert_int_eq(gm_channel_init(&H.ch[t], 1024, 1024), 0);
    struct gm_disp_hooks hooks = {
        .arg = NULL, .wake_io = hook_wake, .request_shutdown = hook_shutdown, .now_ms = hook_now};
    H.d = gm_disp_new(&H.cfg, H.ch, NCHAN, &hooks);
    ck_assert_ptr_nonnull(H.d);
}

static struct tconn *
conn_find(gm_conn_id id)
{
    for (unsigned i = 0; i < H.nconns; i++)
        if (H.conns[i].id == id)
            return &H.conns[i];
    return NULL;
}

static void
append(struct tconn *tc, const void *p, size_t n)
{
    if (!n)
        return;
    if (tc->len + n > tc->cap) {
        size_t cap = tc->cap ? tc->cap : 256;
        while (cap < tc->len + n)
            cap *= 2;
        tc->buf = realloc(tc->buf, cap);
        ck_assert_ptr_nonnull(tc->buf);
        tc->cap = cap;
    }
    memcpy(tc->buf + tc->len, p, n);
    tc->len += n;
}

/* Plays the I/O threads' side of the outbound rings: flush, take every
   message, repeat while the dispatcher still had replies waiting in its
   overflow lists.  Returns the number of messages taken. */
size_t
collect(void)
{
    size_t total = 0;
    for (;;) {
        gm_disp_flush(H.d);
        size_t n = 0;
        for (unsigned t = 0; t < NCHAN; t++) {
            struct gm_out *o;
            while ((o = gm_out_ring_peek(&H.ch[t].out))) {
                ck_assert_msg(gm_conn_thread(o->conn) == t,
                              "a reply for thread %u's connection came on ring %u",
                              gm_conn_thread(o->conn), t);
                struct tconn *tc = conn_find(o->conn);
                ck_assert_msg(tc != NULL, "a reply for a connection the test never opened");
                if (o->kind == GM_OUT_SEND) {
                    ck_assert_uint_le(o->head_len, GM_OUT_INLINE);
                    append(tc, o->head, o->head_len);
                    if (o->body.len)
                        append(tc, o->body.ptr, o->body.len);
                } else {
                    ck_assert_int_eq(o->kind, GM_OUT_CLOSE);
                    tc->closes++;
                }
                gm_block_unref(o->body.blk);
                gm_out_ring_consume(&H.ch[t].out);
                n++;
            }
            gm_out_ring_release(&H.ch[t].out);
        }
        if (!n)
            break;
        total += n;
    }
    return total;
}

/* Runs the dispatcher over whatever the test pushed, then collects. */
void
pump(void)
{
    gm_disp_drain(H.d, 1u << 20);
    collect();
}

void
disp_teardown(void)
{
    if (H.d) {
        collect();
        gm_disp_free(H.d);
        H.d = NULL;
    }
    if (H.durable)
        gm_persist_channel_destroy(&H.pc);
    for (unsigned t = 0; t < NCHAN; t++)
        gm_channel_destroy(&H.ch[t]);
    for (unsigned i = 0; i < H.nconns; i++)
        free(H.conns[i].buf);
    memset(&H, 0, sizeof H);
}

/* Pushes one inbound message, draining once (without collecting) if the
   ring is full; false if it is still full (the dispatcher took nothing). */
bool
offer_in(const struct gm_in *m)
{
    struct gm_in_ring *r = &H.ch[gm_conn_thread(m->conn)].in;
    if (!gm_in_ring_push(r, m)) {
        gm_in_ring_publish(r);
        gm_disp_drain(H.d, 1u << 20);
        if (!gm_in_ring_push(r, m))
            return false;
    }
    gm_in_ring_publish(r);
    return true;
}

/* Pushes one inbound message (making room by draining if the ring is full). */
void
push_in(const struct gm_in *m)
{
    ck_assert(offer_in(m));
}

struct tconn *
conn_register(const char *name, gm_conn_id id)
{
    ck_assert_uint_lt(H.nconns, MAXCONN);
    struct tconn *tc = &H.conns[H.nconns++];
    memset(tc, 0, sizeof *tc);
    tc->id = id;
    snprintf(tc->name, sizeof tc->name, "%s", name);
    return tc;
}

/* Announces a connection with an explicit id (GM_IN_OPEN). */
gm_conn_id
open_id(const char *name, gm_conn_id id, const char *addr)
{
    if (!conn_find(id))
        conn_register(name, id);
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = id;
    m.kind = GM_IN_OPEN;
    m.u.open.fd = 100 + (int)gm_conn_slot(id);
    m.u.open.port = (uint16_t)(40000 + gm_conn_slot(id));
    snprintf(m.u.open.addr, sizeof m.u.open.addr, "%s", addr);
    push_in(&m);
    pump();
    return id;
}

/* Opens a new connection on I/O thread `thread`. */
gm_conn_id
conn_open(const char *name, unsigned thread)
{
    uint32_t slot = ++H.next_slot[thread];
    return open_id(name, gm_conn_id_make(thread, slot, 1000 + slot), "127.0.0.1");
}

void
conn_close(gm_conn_id c)
{
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = c;
    m.kind = GM_IN_CLOSE;
    push_in(&m);
    pump();
}

/* Builds a request packet in a block of its own, as an I/O thread does for
   a packet it read alone. */
void
packet_in(struct gm_in *m, gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    size_t size = gm_payload_size(f, n);
    struct gm_block *b = gm_block_new(GM_HEADER_SIZE + size);
    ck_assert_ptr_nonnull(b);
    gm_packet_encode(b->data, GM_MAGIC_REQ, type, f, n);
    memset(m, 0, sizeof *m);
    m->conn = c;
    m->kind = GM_IN_PACKET;
    m->flags = GM_IN_OWN_BLOCK;
    m->type = (uint16_t)type;
    m->len = (uint32_t)size;
    m->payload = b->data + GM_HEADER_SIZE;
    m->blk = b;
    ck_assert_int_eq(gm_fields_split(type, m->payload, m->len, &m->u.fields), GM_PARSE_OK);
}

/* Pushes a request packet without running the dispatcher; returns its
   block (whose one reference the message holds). */
struct gm_block *
send_nopump(gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    struct gm_in m;
    packet_in(&m, c, type, f, n);
    push_in(&m);
    return m.blk;
}

void
send_pkt(gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    send_nopump(c, type, f, n);
    pump();
}

void
send0(gm_conn_id c, uint32_t type)
{
    send_pkt(c, type, NULL, 0);
}

void
send1(gm_conn_id c, uint32_t type, const char *a)
{
    struct gm_field_ref f[1] = {FR(a)};
    send_pkt(c, type, f, 1);
}

void
send2(gm_conn_id c, uint32_t type, const char *a, const char *b)
{
    struct gm_field_ref f[2] = {FR(a), FR(b)};
    send_pkt(c, type, f, 2);
}

void
send3(gm_conn_id c, uint32_t type, const char *a, const char *b, const char *x)
{
    struct gm_field_ref f[3] = {FR(a), FR(b), FR(x)};
    send_pkt(c, type, f, 3);
}

void
submit(gm_conn_id c, uint32_t type, const char *fn, const char *unique, const char *data)
{
    send3(c, type, fn, unique, data);
}

void
submit_epoch(gm_conn_id c, const char *fn, const char *unique, const char *epoch, const char *data)
{
    struct gm_field_ref f[4] = {FR(fn), FR(unique), FR(epoch), FR(data)};
    send_pkt(c, GM_PKT_SUBMIT_JOB_EPOCH, f, 4);
}

void
submit_sched(gm_conn_id c, const char *fn, const char *unique, const char *mi, const char *h,
             const char *dom, const char *mon, const char *dow, const char *data)
{
    struct gm_field_ref f[8] = {FR(fn), FR(unique), FR(mi), FR(h), FR(dom), FR(mon), FR(dow), FR(data)};
    send_pkt(c, GM_PKT_SUBMIT_JOB_SCHED, f, 8);
}

void
submit_reduce(gm_conn_id c, uint32_t type, const char *fn, const char *unique, const char *reducer,
              const char *data)
{
    struct gm_field_ref f[5] = {FR(fn), FR(unique), FR(reducer), FR(""), FR(data)};
    send_pkt(c, type, f, 5);
}

void can_do(gm_conn_id w, const char *fn) { send1(w, GM_PKT_CAN_DO, fn); }
void cant_do(gm_conn_id w, const char *fn) { send1(w, GM_PKT_CANT_DO, fn); }
void pre_sleep(gm_conn_id w) { send0(w, GM_PKT_PRE_SLEEP); }
void grab(gm_conn_id w) { send0(w, GM_PKT_GRAB_JOB); }

void
can_do_timeout(gm_conn_id w, const char *fn, const char *ms)
{
    send2(w, GM_PKT_CAN_DO_TIMEOUT, fn, ms);
}

/* WORK_COMPLETE / WORK_DATA / WORK_WARNING / WORK_EXCEPTION */
void
work(gm_conn_id w, uint32_t type, const char *handle, const char *data)
{
    send2(w, type, handle, data);
}

/* Sends an admin text line (without its end of line). */
void
text_in(struct gm_in *m, gm_conn_id c, const char *line)
{
    size_t len = strlen(line);
    struct gm_block *b = gm_block_new(len + 2);
    ck_assert_ptr_nonnull(b);
    memcpy(b->data, line, len);
    memcpy(b->data + len, "\r\n", 2);
    memset(m, 0, sizeof *m);
    m->conn = c;
    m->kind = GM_IN_TEXT;
    m->flags = GM_IN_CRLF;
    m->type = GM_PKT_TEXT;
    m->len = (uint32_t)len;
    m->payload = b->data;
    m->blk = b;
    gm_admin_split(m->payload, len, &m->u.words);
}

void
admin(gm_conn_id c, const char *line)
{
    struct gm_in m;
    text_in(&m, c, line);
    push_in(&m);
    pump();
}

/* Runs the timers at the test clock and collects what they sent. */
int64_t
run_timers(void)
{
    int64_t next = gm_disp_run_timers(H.d, H.now);
    collect();
    return next;
}

/* ---- reading what a connection received ---- */

struct tconn *
must_find(gm_conn_id c)
{
    struct tconn *tc = conn_find(c);
    ck_assert_msg(tc != NULL, "unknown test connection");
    return tc;
}

/* Describes the front of a connection's stream for failure messages. */
static const char *
describe_front(const struct tconn *tc, char *out, size_t cap)
{
    size_t avail = tc->len - tc->off;
    const char *p = tc->buf + tc->off;
    if (avail == 0)
        return "nothing";
    size_t o = 0;
    if (p[0] != '\0' || avail < GM_HEADER_SIZE) {
        o += (size_t)snprintf(out + o, cap - o, "text \"");
        for (size_t i = 0; i < avail && o + 8 < cap; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (ch >= 32 && ch < 127)
                o += (size_t)snprintf(out + o, cap - o, "%c", ch);
            else
                o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
        }
        snprintf(out + o, cap - o, "\"");
        return out;
    }
    struct gm_header h;
    gm_header_decode((const unsigned char *)p, UINT32_MAX, &h);
    o += (size_t)snprintf(out + o, cap - o, "%s [", gm_packet_name(h.type));
    for (size_t i = 0; i < h.size && GM_HEADER_SIZE + i < avail && o + 8 < cap; i++) {
        unsigned char ch = (unsigned char)p[GM_HEADER_SIZE + i];
        if (ch == 0)
            o += (size_t)snprintf(out + o, cap - o, "|");
        else if (ch >= 32 && ch < 127)
            o += (size_t)snprintf(out + o, cap - o, "%c", ch);
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
    }
    snprintf(out + o, cap - o, "]");
    return out;
}

struct pkt
expect_pkt(int line, gm_conn_id c, uint32_t type, const char *const *fields, size_t n)
{
    struct tconn *tc = must_find(c);
    char desc[512];
    size_t avail = tc->len - tc->off;
    const char *p = tc->buf + tc->off;
    ck_assert_msg(avail >= GM_HEADER_SIZE && p[0] == '\0',
                  "line %d: %s: expected %s, got %s", line, tc->name, gm_packet_name(type),
                  describe_front(tc, desc, sizeof desc));
    struct gm_header h;
    ck_assert_msg(gm_header_decode((const unsigned char *)p, UINT32_MAX, &h) == GM_PARSE_OK,
                  "line %d: %s: bad header", line, tc->name);
    ck_assert_msg(h.magic == GM_MAGIC_RES, "line %d: %s: reply without \\0RES magic", line, tc->name);
    ck_assert_msg(avail >= GM_HEADER_SIZE + (size_t)h.size, "line %d: %s: truncated %s", line,
                  tc->name, gm_packet_name(h.type));
    ck_assert_msg(h.type == type, "line %d: %s: expected %s, got %s", line, tc->name,
                  gm_packet_name(type), describe_front(tc, desc, sizeof desc));
    struct pkt r = {h.type, h.size, p + GM_HEADER_SIZE, {0}};
    ck_assert_msg(gm_fields_split(h.type, r.payload, h.size, &r.f) == GM_PARSE_OK,
                  "line %d: %s: %s with too few fields: %s", line, tc->name, gm_packet_name(type),
                  describe_front(tc, desc, sizeof desc));
    ck_assert_msg(r.f.count == n, "line %d: test expects %zu fields of %s, the type has %u", line, n,
                  gm_packet_name(type), r.f.count);
    for (size_t i = 0; i < n; i++) {
        if (!fields[i])
            continue;
        size_t el = strlen(fields[i]);
        ck_assert_msg(r.f.len[i] == el && memcmp(r.payload + r.f.start[i], fields[i], el) == 0,
                      "line %d: %s: %s field %zu is \"%.*s\" (%u bytes), expected \"%s\"; packet %s",
                      line, tc->name, gm_packet_name(type), i, (int)r.f.len[i],
                      r.payload + r.f.start[i], r.f.len[i], fields[i],
                      describe_front(tc, desc, sizeof desc));
    }
    tc->off += GM_HEADER_SIZE + h.size;
    return r;
}

/* Nothing more was sent to c. */
void
expect_nothing(int line, gm_conn_id c)
{
    struct tconn *tc = must_find(c);
    char desc[512];
    ck_assert_msg(tc->len == tc->off, "line %d: %s: expected nothing, got %s", line, tc->name,
                  describe_front(tc, desc, sizeof desc));
}

/* The next bytes on c are exactly `text` (admin replies). */
void
expect_text(int line, gm_conn_id c, const char *text)
{
    struct tconn *tc = must_find(c);
    char desc[512];
    size_t n = strlen(text);
    ck_assert_msg(tc->len - tc->off >= n && memcmp(tc->buf + tc->off, text, n) == 0,
                  "line %d: %s: expected text \"%s\", got %s", line, tc->name, text,
                  describe_front(tc, desc, sizeof desc));
    tc->off += n;
}

/* True if the next packet on c is of this type (without taking it). */
bool
next_is(gm_conn_id c, uint32_t type)
{
    struct tconn *tc = must_find(c);
    if (tc->len - tc->off < GM_HEADER_SIZE || tc->buf[tc->off] != '\0')
        return false;
    struct gm_header h;
    gm_header_decode((const unsigned char *)tc->buf + tc->off, UINT32_MAX, &h);
    return h.type == type;
}

/* The data field of a JOB_ASSIGN, as a string in buf. */
const char *
assign_data(const struct pkt *p, char *buf, size_t cap)
{
    uint32_t i = p->f.count - 1;
    snprintf(buf, cap, "%.*s", (int)p->f.len[i], p->payload + p->f.start[i]);
    return buf;
}

uint32_t
block_refs(struct gm_block *b)
{
    return atomic_load(&b->refs);
}