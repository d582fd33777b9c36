/*
 * check_dispatcher.c: unit tests for the dispatcher and the job store
 * (dispatcher.h, jobs.h), fed synthetic messages: no sockets, no threads.
 *
 * The test plays the I/O threads.  It builds each request packet in a
 * reference-counted block as an I/O thread would, pushes a struct gm_in on
 * the inbound ring of the connection's thread, runs gm_disp_drain() and
 * gm_disp_flush(), then takes every struct gm_out off the outbound rings,
 * appends its bytes (head, then body) to the receiving connection's byte
 * stream and drops the body reference.  Expectations read whole packets
 * (or admin text) off the front of those streams.  The dispatcher's clock
 * is the test's: hooks.now_ms returns H.now, and timers run only when a
 * test calls gm_disp_run_timers().
 *
 * Each test case is its own TCase (so that the TAP line carries its name)
 * with a checked fixture that builds the dispatcher over two channels and
 * frees everything afterwards, so AddressSanitizer's leak check sees the
 * teardown of every job state.
 */
#include "config.h"

#include <check.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/base/block.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/dispatch/dispatcher_int.h"
#include "libgearman-server/dispatch/jobs.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/persist/persist.h"
#include "libgearman-server/proto/protocol.h"
#include "libgearman-server/config/server_config.h"
#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* The harness                                                         */
/* ------------------------------------------------------------------ */

#define NCHAN 2
#define MAXCONN 32
#define T0 INT64_C(1700000000000) /* 2023-11-14 22:13:20 UTC, in ms */

/* One connection as the test sees it: the bytes the dispatcher sent it. */
struct tconn {
    gm_conn_id id;
    char name[16];
    char *buf;
    size_t len, cap, off;
    unsigned closes; /* GM_OUT_CLOSE messages seen */
};

static struct {
    struct gm_server_config cfg;
    struct gm_channel ch[NCHAN];
    struct gm_dispatcher *d;
    int64_t now;
    unsigned wakes[NCHAN];
    unsigned shutdowns;
    struct tconn conns[MAXCONN];
    unsigned nconns;
    uint32_t next_slot[NCHAN];
    struct gm_persist_channel pc; /* durable_attach: the test plays the persistence thread */
    bool durable;
} H;

/* malloc is wrapped (-Wl,--wrap=malloc): with malloc_budget >= 0, that
   many more mallocs succeed and the rest fail, until it is set back to -1. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static long malloc_budget = -1;

void *
__wrap_malloc(size_t size)
{
    if (malloc_budget == 0)
        return NULL;
    if (malloc_budget > 0)
        malloc_budget--;
    return __real_malloc(size);
}

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

static void
setup(void)
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
static size_t
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
static void
pump(void)
{
    gm_disp_drain(H.d, 1u << 20);
    collect();
}

static void
teardown(void)
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

/* Pushes one inbound message (making room by draining if the ring is full). */
static void
push_in(const struct gm_in *m)
{
    struct gm_in_ring *r = &H.ch[gm_conn_thread(m->conn)].in;
    if (!gm_in_ring_push(r, m)) {
        gm_in_ring_publish(r);
        gm_disp_drain(H.d, 1u << 20);
        ck_assert(gm_in_ring_push(r, m));
    }
    gm_in_ring_publish(r);
}

static struct tconn *
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
static gm_conn_id
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
static gm_conn_id
conn_open(const char *name, unsigned thread)
{
    uint32_t slot = ++H.next_slot[thread];
    return open_id(name, gm_conn_id_make(thread, slot, 1000 + slot), "127.0.0.1");
}

static void
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
   a packet it read alone, and pushes it without running the dispatcher.
   Returns the block (whose one reference the message holds). */
static struct gm_block *
send_nopump(gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    size_t size = gm_payload_size(f, n);
    struct gm_block *b = gm_block_new(GM_HEADER_SIZE + size);
    ck_assert_ptr_nonnull(b);
    gm_packet_encode(b->data, GM_MAGIC_REQ, type, f, n);
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = c;
    m.kind = GM_IN_PACKET;
    m.flags = GM_IN_OWN_BLOCK;
    m.type = (uint16_t)type;
    m.len = (uint32_t)size;
    m.payload = b->data + GM_HEADER_SIZE;
    m.blk = b;
    ck_assert_int_eq(gm_fields_split(type, m.payload, m.len, &m.u.fields), GM_PARSE_OK);
    push_in(&m);
    return b;
}

static void
send_pkt(gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    send_nopump(c, type, f, n);
    pump();
}

#define FR(s) ((struct gm_field_ref){(s), strlen(s)})

static void
send0(gm_conn_id c, uint32_t type)
{
    send_pkt(c, type, NULL, 0);
}

static void
send1(gm_conn_id c, uint32_t type, const char *a)
{
    struct gm_field_ref f[1] = {FR(a)};
    send_pkt(c, type, f, 1);
}

static void
send2(gm_conn_id c, uint32_t type, const char *a, const char *b)
{
    struct gm_field_ref f[2] = {FR(a), FR(b)};
    send_pkt(c, type, f, 2);
}

static void
send3(gm_conn_id c, uint32_t type, const char *a, const char *b, const char *x)
{
    struct gm_field_ref f[3] = {FR(a), FR(b), FR(x)};
    send_pkt(c, type, f, 3);
}

static void
submit(gm_conn_id c, uint32_t type, const char *fn, const char *unique, const char *data)
{
    send3(c, type, fn, unique, data);
}

static void
submit_epoch(gm_conn_id c, const char *fn, const char *unique, const char *epoch, const char *data)
{
    struct gm_field_ref f[4] = {FR(fn), FR(unique), FR(epoch), FR(data)};
    send_pkt(c, GM_PKT_SUBMIT_JOB_EPOCH, f, 4);
}

static void
submit_sched(gm_conn_id c, const char *fn, const char *unique, const char *mi, const char *h,
             const char *dom, const char *mon, const char *dow, const char *data)
{
    struct gm_field_ref f[8] = {FR(fn), FR(unique), FR(mi), FR(h), FR(dom), FR(mon), FR(dow), FR(data)};
    send_pkt(c, GM_PKT_SUBMIT_JOB_SCHED, f, 8);
}

static void
submit_reduce(gm_conn_id c, uint32_t type, const char *fn, const char *unique, const char *reducer,
              const char *data)
{
    struct gm_field_ref f[5] = {FR(fn), FR(unique), FR(reducer), FR(""), FR(data)};
    send_pkt(c, type, f, 5);
}

static void can_do(gm_conn_id w, const char *fn) { send1(w, GM_PKT_CAN_DO, fn); }
static void cant_do(gm_conn_id w, const char *fn) { send1(w, GM_PKT_CANT_DO, fn); }
static void pre_sleep(gm_conn_id w) { send0(w, GM_PKT_PRE_SLEEP); }
static void grab(gm_conn_id w) { send0(w, GM_PKT_GRAB_JOB); }

static void
can_do_timeout(gm_conn_id w, const char *fn, const char *ms)
{
    send2(w, GM_PKT_CAN_DO_TIMEOUT, fn, ms);
}

/* WORK_COMPLETE / WORK_DATA / WORK_WARNING / WORK_EXCEPTION */
static void
work(gm_conn_id w, uint32_t type, const char *handle, const char *data)
{
    send2(w, type, handle, data);
}

/* Sends an admin text line (without its end of line). */
static void
admin(gm_conn_id c, const char *line)
{
    size_t len = strlen(line);
    struct gm_block *b = gm_block_new(len + 2);
    ck_assert_ptr_nonnull(b);
    memcpy(b->data, line, len);
    memcpy(b->data + len, "\r\n", 2);
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = c;
    m.kind = GM_IN_TEXT;
    m.flags = GM_IN_CRLF;
    m.type = GM_PKT_TEXT;
    m.len = (uint32_t)len;
    m.payload = b->data;
    m.blk = b;
    gm_admin_split(m.payload, len, &m.u.words);
    push_in(&m);
    pump();
}

/* Runs the timers at the test clock and collects what they sent. */
static int64_t
run_timers(void)
{
    int64_t next = gm_disp_run_timers(H.d, H.now);
    collect();
    return next;
}

/* ---- reading what a connection received ---- */

static struct tconn *
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

/* Takes the next packet off c's stream and checks its type and fields
   (NULL = any value).  Returns the payload's fields for further checks. */
struct pkt {
    uint32_t type, size;
    const char *payload;
    struct gm_fields f;
};

static struct pkt
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

#define ANY NULL
#define NARGS(...) (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define EXPECT(c, type, ...) \
    expect_pkt(__LINE__, (c), (type), (const char *const[]){__VA_ARGS__}, NARGS(__VA_ARGS__))
#define EXPECT0(c, type) expect_pkt(__LINE__, (c), (type), NULL, 0)

/* Nothing more was sent to c. */
#define EXPECT_NOTHING(c) expect_nothing(__LINE__, (c))
static void
expect_nothing(int line, gm_conn_id c)
{
    struct tconn *tc = must_find(c);
    char desc[512];
    ck_assert_msg(tc->len == tc->off, "line %d: %s: expected nothing, got %s", line, tc->name,
                  describe_front(tc, desc, sizeof desc));
}

/* The next bytes on c are exactly `text` (admin replies). */
#define EXPECT_TEXT(c, text) expect_text(__LINE__, (c), (text))
static void
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
static bool
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
static const char *
assign_data(const struct pkt *p, char *buf, size_t cap)
{
    uint32_t i = p->f.count - 1;
    snprintf(buf, cap, "%.*s", (int)p->f.len[i], p->payload + p->f.start[i]);
    return buf;
}

static uint32_t
block_refs(struct gm_block *b)
{
    return atomic_load(&b->refs);
}

/* ------------------------------------------------------------------ */
/* Submitting and grabbing                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_job_created_handles_count_up_from_one)
{
    gm_conn_id c = conn_open("c", 0);
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u1", "d1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "u2", "d2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit(c, GM_PKT_SUBMIT_JOB_HIGH, "g", "", "d3");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    submit(c, GM_PKT_SUBMIT_JOB_LOW_BG, "h", "", "");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:4");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_grab_job_assigns_handle_function_and_data)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "reverse");
    EXPECT_NOTHING(w);
    submit(c, GM_PKT_SUBMIT_JOB, "reverse", "u", "payload bytes");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "reverse", "payload bytes");
    EXPECT_NOTHING(w);
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_grab_job_with_nothing_queued_gives_no_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    grab(w); /* no abilities at all */
    EXPECT0(w, GM_PKT_NO_JOB);
    can_do(w, "f");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "for another function");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_grab_job_uniq_carries_the_unique)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "my-unique", "data");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send0(w, GM_PKT_GRAB_JOB_UNIQ);
    EXPECT(w, GM_PKT_JOB_ASSIGN_UNIQ, "H:test:1", "f", "my-unique", "data");
}
END_TEST

/* A function name long enough that the reply's head does not fit the
   inline space: it travels as a block, then the data by reference. */
START_TEST(test_long_function_name_assign_arrives_whole)
{
    char fn[201];
    memset(fn, 'n', 200);
    fn[200] = '\0';
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, fn);
    submit(c, GM_PKT_SUBMIT_JOB, fn, "u", "the data");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", fn, "the data");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Priorities                                                          */
/* ------------------------------------------------------------------ */

/* Grabs n jobs for w and writes their data fields ("pa-H1", ...) into out. */
static void
grab_n(gm_conn_id w, int n, char out[][32])
{
    for (int i = 0; i < n; i++) {
        grab(w);
        struct pkt p = EXPECT(w, GM_PKT_JOB_ASSIGN, ANY, ANY, ANY);
        assign_data(&p, out[i], 32);
    }
}

/* The reference's scenario (issue #173): pa:{H,H,N,N,L,L}, pb:{H,L}; in
   1.1.20 the worker's last-registered function wins, so LOW of pb runs
   before HIGH of pa.  Here priority is global across the functions. */
static void
check_global_priority(bool pa_first)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, pa_first ? "pa" : "pb");
    can_do(w, pa_first ? "pb" : "pa");
    static const struct {
        uint32_t type;
        const char *fn, *data;
    } jobs[] = {
        {GM_PKT_SUBMIT_JOB_LOW_BG, "pa", "pa-L1"}, {GM_PKT_SUBMIT_JOB_BG, "pa", "pa-N1"},
        {GM_PKT_SUBMIT_JOB_HIGH_BG, "pa", "pa-H1"}, {GM_PKT_SUBMIT_JOB_LOW_BG, "pb", "pb-L1"},
        {GM_PKT_SUBMIT_JOB_LOW_BG, "pa", "pa-L2"}, {GM_PKT_SUBMIT_JOB_BG, "pa", "pa-N2"},
        {GM_PKT_SUBMIT_JOB_HIGH_BG, "pb", "pb-H1"}, {GM_PKT_SUBMIT_JOB_HIGH_BG, "pa", "pa-H2"},
    };
    for (size_t i = 0; i < 8; i++) {
        submit(c, jobs[i].type, jobs[i].fn, "", jobs[i].data);
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    char got[8][32];
    grab_n(w, 8, got);
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    static const char prio_order[] = "HHHNNLLL";
    for (int i = 0; i < 8; i++)
        ck_assert_msg(got[i][3] == prio_order[i],
                      "grab %d got %s; order was %s %s %s %s %s %s %s %s", i, got[i], got[0], got[1],
                      got[2], got[3], got[4], got[5], got[6], got[7]);
    /* FIFO inside each (function, priority) */
    int pos_h1 = -1, pos_h2 = -1, pos_n1 = -1, pos_n2 = -1, pos_l1 = -1, pos_l2 = -1;
    for (int i = 0; i < 8; i++) {
        if (!strcmp(got[i], "pa-H1")) pos_h1 = i;
        if (!strcmp(got[i], "pa-H2")) pos_h2 = i;
        if (!strcmp(got[i], "pa-N1")) pos_n1 = i;
        if (!strcmp(got[i], "pa-N2")) pos_n2 = i;
        if (!strcmp(got[i], "pa-L1")) pos_l1 = i;
        if (!strcmp(got[i], "pa-L2")) pos_l2 = i;
    }
    ck_assert_int_lt(pos_h1, pos_h2);
    ck_assert_int_lt(pos_n1, pos_n2);
    ck_assert_int_lt(pos_l1, pos_l2);
    ck_assert_int_ge(pos_h1, 0);
    ck_assert_int_ge(pos_n1, 0);
    ck_assert_int_ge(pos_l1, 0);
}

START_TEST(test_high_runs_before_low_across_functions)
{
    check_global_priority(true);
}
END_TEST

START_TEST(test_high_runs_before_low_whatever_the_registration_order)
{
    check_global_priority(false);
}
END_TEST

/* Three functions each holding one job of a different priority, the LOW one
   registered last (1.1.20 would hand it out first). */
START_TEST(test_low_of_last_registered_function_waits_for_high_of_others)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "a");
    can_do(w, "b");
    can_do(w, "c");
    submit(c, GM_PKT_SUBMIT_JOB_LOW, "c", "", "c-low");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB, "b", "", "b-normal");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit(c, GM_PKT_SUBMIT_JOB_HIGH, "a", "", "a-high");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:3", "a", "a-high");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "b", "b-normal");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "c", "c-low");
}
END_TEST

START_TEST(test_functions_of_equal_priority_take_turns)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "a");
    can_do(w, "b");
    for (int i = 1; i <= 3; i++) {
        char d[32];
        snprintf(d, sizeof d, "a%d", i);
        submit(c, GM_PKT_SUBMIT_JOB_BG, "a", "", d);
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    for (int i = 1; i <= 3; i++) {
        char d[32];
        snprintf(d, sizeof d, "b%d", i);
        submit(c, GM_PKT_SUBMIT_JOB_BG, "b", "", d);
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    char got[6][32];
    grab_n(w, 6, got);
    for (int i = 1; i < 6; i++)
        ck_assert_msg(got[i][0] != got[i - 1][0], "no turn taking: %s %s %s %s %s %s", got[0],
                      got[1], got[2], got[3], got[4], got[5]);
    /* FIFO within each function */
    int na = 0, nb = 0;
    for (int i = 0; i < 6; i++) {
        char want[32];
        snprintf(want, sizeof want, "%c%d", got[i][0], got[i][0] == 'a' ? ++na : ++nb);
        ck_assert_str_eq(got[i], want);
    }
}
END_TEST

START_TEST(test_jobs_of_one_priority_run_in_submission_order)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    for (int i = 1; i <= 5; i++) {
        char d[32];
        snprintf(d, sizeof d, "j%d", i);
        submit(c, GM_PKT_SUBMIT_JOB, "f", "", d);
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    for (int i = 1; i <= 5; i++) {
        char h[32], d[32];
        snprintf(h, sizeof h, "H:test:%d", i);
        snprintf(d, sizeof d, "j%d", i);
        grab(w);
        EXPECT(w, GM_PKT_JOB_ASSIGN, h, "f", d);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Unique-key coalescing                                               */
/* ------------------------------------------------------------------ */

START_TEST(test_same_unique_coalesces_foreground_clients_onto_one_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "u", "first");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c2, GM_PKT_SUBMIT_JOB_HIGH, "f", "u", "second"); /* data and priority ignored */
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "first");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "result");
    EXPECT(c1, GM_PKT_WORK_COMPLETE, "H:test:1", "result");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "result");
    EXPECT_NOTHING(c1);
    EXPECT_NOTHING(c2);
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_foreground_submit_coalesces_onto_background_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c1, GM_PKT_SUBMIT_JOB_BG, "f", "u", "bg");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u", "fg");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c1, GM_PKT_SUBMIT_JOB_LOW_BG, "f", "u", "bg again"); /* BG onto it too */
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "bg");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(c1); /* background submitters hear nothing */
}
END_TEST

START_TEST(test_submit_coalesces_onto_a_running_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "u", "x");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "x");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    EXPECT(c1, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u", "y");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB); /* no second job */
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "2", "2");
    EXPECT(c1, GM_PKT_WORK_STATUS, "H:test:1", "2", "2");
    EXPECT(c2, GM_PKT_WORK_STATUS, "H:test:1", "2", "2");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
    EXPECT(c1, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
}
END_TEST

START_TEST(test_dash_unique_coalesces_on_identical_data)
{
    gm_conn_id c = conn_open("c", 0);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "same");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "same");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "different");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "-", "same"); /* other function */
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    /* an explicit unique equal to the data is another key */
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "same", "same");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:4");
    /* empty data with "-" never coalesces */
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:5");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:6");
}
END_TEST

START_TEST(test_empty_unique_never_coalesces)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "same");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "same");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "same");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "same");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "same");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:3", "f", "same");
}
END_TEST

START_TEST(test_same_unique_under_another_function_is_another_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    can_do(w, "g");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u", "for f");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB, "g", "u", "for g");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "for f");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "g", "for g");
}
END_TEST

START_TEST(test_unique_is_free_again_after_the_job_ends)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u", "one");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "one");
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u", "two");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "two");
}
END_TEST

START_TEST(test_unique_longer_than_64_bytes_is_too_large)
{
    char u65[66], u64[65];
    memset(u65, 'u', 65);
    u65[65] = '\0';
    memset(u64, 'u', 64);
    u64[64] = '\0';
    gm_conn_id c = conn_open("c", 0);
    submit(c, GM_PKT_SUBMIT_JOB, "f", u65, "d");
    EXPECT(c, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", "Unique value too large");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", u65, "d");
    EXPECT(c, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", "Unique value too large");
    submit(c, GM_PKT_SUBMIT_JOB, "f", u64, "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1"); /* the refusals used no handle */
    submit(c, GM_PKT_SUBMIT_JOB, "f", u64, "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1"); /* and all 64 bytes are the key */
    send1(c, GM_PKT_GET_STATUS_UNIQUE, u64);
    EXPECT(c, GM_PKT_STATUS_RES_UNIQUE, u64, "1", "0", "0", "0", "2");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Worker failure, retries, wake-ups                                   */
/* ------------------------------------------------------------------ */

START_TEST(test_worker_disconnect_requeues_its_job_at_the_head)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    can_do(w1, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d1");
    send3(w1, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    EXPECT(c, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    conn_close(w1);
    EXPECT_NOTHING(c); /* the client is not told */
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "0", "0", "0"); /* queued, progress reset */
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    grab(w2);
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d1"); /* before d2 */
    grab(w2);
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "d2");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
}
END_TEST

START_TEST(test_worker_disconnect_wakes_a_sleeping_worker)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    pre_sleep(w2);
    EXPECT_NOTHING(w2);
    conn_close(w1);
    EXPECT0(w2, GM_PKT_NOOP);
    EXPECT_NOTHING(w2);
    EXPECT_NOTHING(c);
    grab(w2);
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
}
END_TEST

START_TEST(test_job_fails_after_job_retries_worker_deaths)
{
    H.cfg.job_retries = 2;
    gm_conn_id c = conn_open("c", 0);
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    gm_conn_id w1 = conn_open("w1", 1);
    can_do(w1, "f");
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    conn_close(w1); /* first attempt */
    EXPECT_NOTHING(c);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    grab(w2);
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    conn_close(w2); /* second attempt: that was the last */
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT_NOTHING(c);
    gm_conn_id w3 = conn_open("w3", 1);
    can_do(w3, "f");
    grab(w3);
    EXPECT0(w3, GM_PKT_NO_JOB);
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
}
END_TEST

START_TEST(test_job_retries_zero_requeues_without_limit)
{
    gm_conn_id c = conn_open("c", 0);
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "w%d", i);
        gm_conn_id w = conn_open(name, 1);
        can_do(w, "f");
        grab(w);
        EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
        conn_close(w);
        EXPECT_NOTHING(c);
    }
}
END_TEST

START_TEST(test_cant_do_requeues_the_running_job_of_that_function)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w1, "g");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    cant_do(w1, "g"); /* unrelated: the job stays with w1 */
    can_do(w2, "f");
    grab(w2);
    EXPECT0(w2, GM_PKT_NO_JOB);
    cant_do(w1, "f");
    grab(w2);
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "late");
    EXPECT(w1, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    EXPECT_NOTHING(c);
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
}
END_TEST

START_TEST(test_pre_sleep_then_new_job_wakes_every_sleeping_worker)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 0);
    gm_conn_id w3 = conn_open("w3", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    can_do(w3, "g");
    pre_sleep(w1);
    pre_sleep(w2);
    pre_sleep(w3);
    EXPECT_NOTHING(w1);
    EXPECT_NOTHING(w2);
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "one");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT0(w1, GM_PKT_NOOP);
    EXPECT0(w2, GM_PKT_NOOP);
    EXPECT_NOTHING(w3); /* asleep on another function */
    /* one NOOP per sleep: a second job does not wake them again */
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "two");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    EXPECT_NOTHING(w1);
    EXPECT_NOTHING(w2);
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "one");
    grab(w2);
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "two");
    /* after a GRAB, sleeping again arms a new NOOP */
    pre_sleep(w1);
    EXPECT_NOTHING(w1);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "three");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    EXPECT0(w1, GM_PKT_NOOP);
    EXPECT_NOTHING(w2); /* w2 did not go to sleep */
    EXPECT_NOTHING(w3);
}
END_TEST

START_TEST(test_worker_wakeup_one_wakes_a_single_sleeper_per_job)
{
    H.cfg.worker_wakeup = 1;
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w[3];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "w%d", i);
        w[i] = conn_open(name, 1);
        can_do(w[i], "f");
        pre_sleep(w[i]);
    }
    bool woken[3] = {false, false, false};
    for (int j = 0; j < 3; j++) {
        submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d");
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
        int n = 0;
        for (int i = 0; i < 3; i++) {
            if (next_is(w[i], GM_PKT_NOOP)) {
                EXPECT0(w[i], GM_PKT_NOOP);
                ck_assert_msg(!woken[i], "job %d woke w%d a second time", j, i);
                woken[i] = true;
                n++;
            }
            EXPECT_NOTHING(w[i]);
        }
        ck_assert_msg(n == 1, "job %d woke %d workers, expected 1", j, n);
    }
    /* everyone has been woken once; a fourth job has nobody left to wake */
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    for (int i = 0; i < 3; i++)
        EXPECT_NOTHING(w[i]);
}
END_TEST

START_TEST(test_pre_sleep_with_a_queued_job_gets_noop_at_once)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    pre_sleep(w);
    EXPECT0(w, GM_PKT_NOOP);
    pre_sleep(w);
    EXPECT0(w, GM_PKT_NOOP); /* every PRE_SLEEP while work waits */
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_registering_a_function_with_work_wakes_a_sleeping_worker)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    pre_sleep(w);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT_NOTHING(w);
    can_do(w, "g");
    EXPECT0(w, GM_PKT_NOOP);
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "g", "d");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Jobs that run later                                                 */
/* ------------------------------------------------------------------ */

START_TEST(test_future_epoch_job_waits_for_its_time_and_blocks_nothing)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    char epoch[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)(T0 / 1000 + 60));
    submit_epoch(c, "f", "", epoch, "later");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB_LOW, "f", "", "low");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "low"); /* the LOW job is not blocked */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:2", "");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:2", "");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    EXPECT_NOTHING(w); /* the future job is nothing to wake up for */

    H.now = T0 + 59999;
    ck_assert_int_eq(run_timers(), T0 + 60000);
    EXPECT_NOTHING(w);
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    EXPECT_NOTHING(w);

    H.now = T0 + 60000;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT0(w, GM_PKT_NOOP);
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "later");
    EXPECT_NOTHING(c); /* epoch jobs are background jobs */
}
END_TEST

START_TEST(test_epoch_in_the_past_runs_at_once)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit_epoch(c, "f", "", "1000", "old");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit_epoch(c, "f", "", "0", "zero");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit_epoch(c, "f", "", "-5", "negative");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "old");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "zero");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:3", "f", "negative");
    ck_assert_int_eq(run_timers(), -1);
}
END_TEST

/* An epoch so far ahead that its value in milliseconds does not fit in 64
   bits must still be "later", never "now". */
START_TEST(test_epoch_far_in_the_future_is_not_grabbable)
{
    static const char *const epochs[] = {"100000000000000000", "9223372036854775807"};
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    for (size_t i = 0; i < 2; i++) {
        submit_epoch(c, "f", "", epochs[i], "far");
        if (next_is(c, GM_PKT_ERROR)) {
            EXPECT(c, GM_PKT_ERROR, ANY, ANY); /* refusing it is fine too */
            continue;
        }
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
        grab(w);
        EXPECT0(w, GM_PKT_NO_JOB);
    }
}
END_TEST

START_TEST(test_sched_job_waits_for_its_next_matching_minute)
{
    struct tm tm = {.tm_year = 124, .tm_mon = 0, .tm_mday = 1, .tm_hour = 0, .tm_min = 0, .tm_sec = 30};
    int64_t start = (int64_t)timegm(&tm);
    H.now = start * 1000;
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit_sched(c, "f", "", "5", "", "", "", "", "at five past");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    int64_t due = (start - 30 + 5 * 60) * 1000; /* 00:05:00 */
    ck_assert_int_eq(run_timers(), due);
    EXPECT_NOTHING(w);
    H.now = due;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT0(w, GM_PKT_NOOP);
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "at five past");
}
END_TEST

/* Design section 9: the minute now counts; with day and month given, the
   next match after it would be a year away. */
START_TEST(test_sched_job_matching_the_current_minute_runs_now)
{
    struct tm tm = {.tm_year = 124, .tm_mon = 0, .tm_mday = 1, .tm_hour = 0, .tm_min = 5, .tm_sec = 30};
    H.now = (int64_t)timegm(&tm) * 1000; /* 2024-01-01 00:05:30 UTC */
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit_sched(c, "f", "", "5", "0", "1", "1", "", "this minute");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "this minute");
}
END_TEST

START_TEST(test_sched_job_with_a_bad_or_impossible_schedule_is_refused)
{
    gm_conn_id c = conn_open("c", 0);
    submit_sched(c, "f", "", "0", "0", "31", "2", "", "never");
    EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", "Schedule never matches");
    submit_sched(c, "f", "", "61", "", "", "", "", "bad");
    EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", "Invalid minute in schedule");
    submit_sched(c, "f", "", "", "", "", "13", "", "bad");
    EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", "Invalid month in schedule");
    submit_sched(c, "f", "", "", "", "", "", "", "any minute");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1"); /* no handle used by the refusals */
}
END_TEST

START_TEST(test_can_do_timeout_expiry_fails_the_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "2000");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "slow");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "slow");
    H.now = T0 + 1999;
    ck_assert_int_eq(run_timers(), T0 + 2000);
    EXPECT_NOTHING(c);
    H.now = T0 + 2000;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT_NOTHING(c);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "too late");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    EXPECT_NOTHING(c);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    grab(w2);
    EXPECT0(w2, GM_PKT_NO_JOB);
}
END_TEST

START_TEST(test_can_do_timeout_below_one_second_counts_as_one_second)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "500");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    H.now = T0 + 999;
    run_timers();
    EXPECT_NOTHING(c);
    H.now = T0 + 1000;
    run_timers();
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
}
END_TEST

START_TEST(test_can_do_timeout_ends_with_the_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "2000");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    ck_assert_int_eq(gm_disp_run_timers(H.d, H.now), T0 + 2000);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "quick");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "quick");
    H.now = T0 + 5000;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT_NOTHING(c);
    EXPECT_NOTHING(w);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_work_packets_reach_every_attached_client_in_order)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "u", "x");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u", "x");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "x");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "1", "4");
    work(w, GM_PKT_WORK_DATA, "H:test:1", "d1");
    work(w, GM_PKT_WORK_WARNING, "H:test:1", "careful");
    work(w, GM_PKT_WORK_DATA, "H:test:1", "d2");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", " 3", "4x"); /* forwarded as sent */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "all done");
    gm_conn_id cs[2] = {c1, c2};
    for (int i = 0; i < 2; i++) {
        EXPECT(cs[i], GM_PKT_WORK_STATUS, "H:test:1", "1", "4");
        EXPECT(cs[i], GM_PKT_WORK_DATA, "H:test:1", "d1");
        EXPECT(cs[i], GM_PKT_WORK_WARNING, "H:test:1", "careful");
        EXPECT(cs[i], GM_PKT_WORK_DATA, "H:test:1", "d2");
        EXPECT(cs[i], GM_PKT_WORK_STATUS, "H:test:1", " 3", "4x");
        EXPECT(cs[i], GM_PKT_WORK_COMPLETE, "H:test:1", "all done");
        EXPECT_NOTHING(cs[i]);
    }
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_get_status_reports_known_running_and_progress)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id other = conn_open("other", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    send1(c, GM_PKT_GET_STATUS, "H:test:99");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:99", "0", "0", "0", "0");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send1(other, GM_PKT_GET_STATUS, "H:test:1"); /* any connection may ask */
    EXPECT(other, GM_PKT_STATUS_RES, "H:test:1", "1", "0", "0", "0");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "1", "0", "0");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "3", "10");
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "1", "3", "10");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", " 7abc", "-1"); /* read like atoi */
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "1", "7", "4294967295");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "");
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_get_status_unique_reports_the_attached_client_count)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    send1(c1, GM_PKT_GET_STATUS_UNIQUE, "same");
    EXPECT(c1, GM_PKT_STATUS_RES_UNIQUE, "same", "0", "0", "0", "0", "0");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "same", "d");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "same", "d");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    send1(c1, GM_PKT_GET_STATUS_UNIQUE, "same");
    EXPECT(c1, GM_PKT_STATUS_RES_UNIQUE, "same", "1", "0", "0", "0", "2");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "5", "6");
    EXPECT(c1, GM_PKT_WORK_STATUS, ANY, ANY, ANY);
    EXPECT(c2, GM_PKT_WORK_STATUS, ANY, ANY, ANY);
    send1(c1, GM_PKT_GET_STATUS_UNIQUE, "same");
    EXPECT(c1, GM_PKT_STATUS_RES_UNIQUE, "same", "1", "1", "5", "6", "2");
    /* a background job counts no clients; another function's unique is found too */
    submit(c1, GM_PKT_SUBMIT_JOB_BG, "g", "bgu", "d");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:2");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "bgu");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "bgu", "1", "0", "0", "0", "0");
    /* an empty unique never matches, even with an empty-unique job queued */
    submit(c1, GM_PKT_SUBMIT_JOB_BG, "g", "", "d");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:3");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "", "0", "0", "0", "0", "0");
}
END_TEST

START_TEST(test_work_exception_is_a_plain_work_fail_without_the_exceptions_option)
{
    gm_conn_id plain = conn_open("plain", 0);
    gm_conn_id opted = conn_open("opted", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    send1(opted, GM_PKT_OPTION_REQ, "exceptions");
    EXPECT(opted, GM_PKT_OPTION_RES, "exceptions");
    submit(plain, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(plain, GM_PKT_JOB_CREATED, "H:test:1");
    submit(opted, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(opted, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    /* exactly the handle: no trailing NUL (field length is compared) */
    struct pkt p = EXPECT(plain, GM_PKT_WORK_FAIL, "H:test:1");
    ck_assert_uint_eq(p.size, 8);
    EXPECT(opted, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    EXPECT_NOTHING(plain);
    EXPECT_NOTHING(opted);
    /* the exception ended the job */
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
}
END_TEST

START_TEST(test_exceptions_setting_forwards_work_exception_to_every_client)
{
    H.cfg.exceptions = true;
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    EXPECT(c, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
}
END_TEST

START_TEST(test_option_req_echoes_the_name_as_sent)
{
    gm_conn_id c = conn_open("c", 0);
    send1(c, GM_PKT_OPTION_REQ, "EXCEPTIONS");
    EXPECT(c, GM_PKT_OPTION_RES, "EXCEPTIONS");
    send1(c, GM_PKT_OPTION_REQ, "Exceptions");
    EXPECT(c, GM_PKT_OPTION_RES, "Exceptions");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_option_req_unknown_gives_unknown_option)
{
    gm_conn_id c = conn_open("c", 0);
    static const char *const opts[] = {"foo", "exceptionsX", "exception", ""};
    for (size_t i = 0; i < 4; i++) {
        send1(c, GM_PKT_OPTION_REQ, opts[i]);
        EXPECT(c, GM_PKT_ERROR, "UNKNOWN_OPTION", "Server does not recognize given option");
    }
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_work_result_for_an_unknown_handle_gives_job_not_found)
{
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    send1(w, GM_PKT_WORK_FAIL, "H:test:42");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    send3(w, GM_PKT_WORK_STATUS, "H:test:42", "1", "2");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    work(w, GM_PKT_WORK_DATA, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job does not exist on server");
    work(w, GM_PKT_WORK_WARNING, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job does not exist on server");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND",
           "An exception was received for a job that does not exist");
    EXPECT_NOTHING(w);
}
END_TEST

/* A job exists but the sender does not hold it: a queued job, a client
   that sends results, another worker's job. */
START_TEST(test_work_result_from_a_connection_not_holding_the_job_gives_job_not_found)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "not grabbed yet");
    EXPECT(w1, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "not mine");
    EXPECT(w2, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    work(c, GM_PKT_WORK_COMPLETE, "H:test:1", "client");
    EXPECT(c, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    EXPECT_NOTHING(c);
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "mine");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "mine");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Clients leaving                                                     */
/* ------------------------------------------------------------------ */

START_TEST(test_client_disconnect_abandons_its_queued_foreground_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id other = conn_open("other", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("admin", 0);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "fg");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "bg");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    conn_close(c);
    send1(other, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(other, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
    admin(adm, "status");
    EXPECT_TEXT(adm, "f\t1\t0\t1\n.\n");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "f", "bg"); /* the background job stays */
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
}
END_TEST

START_TEST(test_client_disconnect_keeps_a_job_another_client_waits_on)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    conn_close(c1);
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(c1);
}
END_TEST

START_TEST(test_abandoned_running_job_finishes_unheard)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id other = conn_open("other", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    conn_close(c);
    work(w, GM_PKT_WORK_DATA, "H:test:1", "partial");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(w); /* the worker is not told off */
    send1(other, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(other, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
}
END_TEST

/* A client takes up (coalesces onto) a running job whose first client left;
   when the worker then dies, the new client must still get an answer:
   the job runs again, or at least the client hears WORK_FAIL. */
START_TEST(test_abandoned_job_taken_up_again_survives_worker_death)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    can_do(w1, "f");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w1);
    EXPECT(w1, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    conn_close(c1);
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    conn_close(w1);
    if (next_is(c2, GM_PKT_WORK_FAIL)) {
        EXPECT(c2, GM_PKT_WORK_FAIL, "H:test:1");
        return;
    }
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    grab(w2);
    ck_assert_msg(next_is(w2, GM_PKT_JOB_ASSIGN),
                  "the job c2 waits on vanished when its worker died: c2 got no WORK_FAIL and "
                  "no worker can grab it");
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
}
END_TEST

/* The same situation when the job's CAN_DO_TIMEOUT expires instead. */
START_TEST(test_abandoned_job_taken_up_again_fails_its_new_client_on_timeout)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "1000");
    submit(c1, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c1, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    conn_close(c1);
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    H.now = T0 + 1000;
    run_timers();
    EXPECT(c2, GM_PKT_WORK_FAIL, "H:test:1");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Names the listings print (issue 12, item 7)                         */
/* ------------------------------------------------------------------ */

/* Names holding a byte that would cut or forge a `status` or `workers`
   line, each with its length (so a NUL counts).  A NUL can only be in a
   packet's last field (CAN_DO's name): elsewhere it ends the field. */
static const struct gm_field_ref bad_names[] = {
    {"a\nb", 3}, {"a\tb", 3}, {"a\rb", 3}, {"a\0b", 3}, {"\x01", 1}, {"x\x1f", 2}, {"del\x7f", 4},
    {"f\t9\t9\t9\nforged", 15}};
#define NBAD (sizeof bad_names / sizeof bad_names[0])

static bool
has_nul(const struct gm_field_ref *f)
{
    return memchr(f->ptr, '\0', f->len) != NULL;
}
#define CONTROL_TEXT "Function name holds a control character"
#define TOO_LONG_TEXT "Function name is longer than 512 bytes"

/* A name of n bytes 'n' (NUL-terminated in buf). */
static const char *
long_name(char *buf, size_t n)
{
    memset(buf, 'n', n);
    buf[n] = '\0';
    return buf;
}

/* The admin listing `cmd` on adm, whole. */
static void
expect_listing(gm_conn_id adm, const char *cmd, const char *want)
{
    admin(adm, cmd);
    EXPECT_TEXT(adm, want);
    EXPECT_NOTHING(adm);
}

START_TEST(test_can_do_with_a_control_character_in_the_name_is_refused)
{
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("admin", 0);
    for (size_t i = 0; i < NBAD; i++) {
        send_pkt(w, GM_PKT_CAN_DO, &bad_names[i], 1);
        EXPECT(w, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        if (has_nul(&bad_names[i]))
            continue;
        struct gm_field_ref f[2] = {bad_names[i], FR("1000")};
        send_pkt(w, GM_PKT_CAN_DO_TIMEOUT, f, 2);
        EXPECT(w, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
    }
    EXPECT_NOTHING(w);
    ck_assert_uint_eq(must_find(w)->closes, 0); /* the stream is fine: it stays */
    expect_listing(adm, "status", ".\n");
    expect_listing(adm, "workers", "101 127.0.0.1 - :\n101 127.0.0.1 - :\n.\n");
    can_do(w, "after");
    EXPECT_NOTHING(w);
    expect_listing(adm, "status", "after\t0\t0\t1\n.\n");
}
END_TEST

START_TEST(test_submit_with_a_control_character_in_the_function_name_creates_no_job)
{
    static const uint32_t types[] = {GM_PKT_SUBMIT_JOB,        GM_PKT_SUBMIT_JOB_BG,   GM_PKT_SUBMIT_JOB_HIGH,
                                     GM_PKT_SUBMIT_JOB_HIGH_BG, GM_PKT_SUBMIT_JOB_LOW, GM_PKT_SUBMIT_JOB_LOW_BG};
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id adm = conn_open("admin", 1);
    for (size_t i = 0; i < NBAD; i++) {
        if (has_nul(&bad_names[i]))
            continue;
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            struct gm_field_ref f[3] = {bad_names[i], FR("u"), FR("d")};
            send_pkt(c, types[t], f, 3);
            EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        }
        struct gm_field_ref e[4] = {bad_names[i], FR("u"), FR("0"), FR("d")};
        send_pkt(c, GM_PKT_SUBMIT_JOB_EPOCH, e, 4);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        struct gm_field_ref sc[8] = {bad_names[i], FR("u"), FR(""), FR(""), FR(""), FR(""), FR(""), FR("d")};
        send_pkt(c, GM_PKT_SUBMIT_JOB_SCHED, sc, 8);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        struct gm_field_ref r[5] = {bad_names[i], FR("u"), FR("red"), FR(""), FR("d")};
        send_pkt(c, GM_PKT_SUBMIT_REDUCE_JOB, r, 5);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        send_pkt(c, GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND, r, 5);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
    }
    EXPECT_NOTHING(c);
    ck_assert_uint_eq(must_find(c)->closes, 0);
    expect_listing(adm, "status", ".\n");
    expect_listing(adm, "show jobs", ".\n");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1"); /* the refusals used no handle */
}
END_TEST

START_TEST(test_function_name_of_512_bytes_is_accepted_and_513_refused)
{
    char name[514];
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("admin", 0);
    can_do(w, long_name(name, 513));
    EXPECT(w, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", TOO_LONG_TEXT);
    can_do_timeout(w, name, "1000");
    EXPECT(w, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", TOO_LONG_TEXT);
    submit(c, GM_PKT_SUBMIT_JOB_BG, name, "", "d");
    EXPECT(c, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", TOO_LONG_TEXT);
    admin(adm, "create function nnnnn"); /* a short one, to see status */
    EXPECT_TEXT(adm, "OK\r\n");
    expect_listing(adm, "status", "nnnnn\t0\t0\t0\n.\n");
    can_do(w, long_name(name, 512));
    EXPECT_NOTHING(w);
    submit(c, GM_PKT_SUBMIT_JOB, name, "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", name, "d");
    ck_assert_ptr_nonnull(gm_disp_function_find(H.d, name, 512));
    ck_assert_ptr_null(gm_disp_function_find(H.d, name, 511));
}
END_TEST

START_TEST(test_set_client_id_with_a_control_character_is_refused_and_keeps_the_id)
{
    gm_conn_id w = conn_open("w", 0);
    gm_conn_id adm = conn_open("admin", 1);
    send1(w, GM_PKT_SET_CLIENT_ID, "w1 with spaces");
    EXPECT_NOTHING(w);
    static const struct gm_field_ref bad_ids[] = {
        {"x\n1 10.0.0.1 forged : f", 23}, {"x\ty", 3}, {"x\0y", 3}, {"x\ry", 3}, {"\x7f", 1}};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        send_pkt(w, GM_PKT_SET_CLIENT_ID, &bad_ids[i], 1);
        EXPECT(w, GM_PKT_ERROR, "INVALID_ARGUMENT", "Client id holds a control character");
    }
    ck_assert_uint_eq(must_find(w)->closes, 0);
    expect_listing(adm, "workers", "101 127.0.0.1 w1 with spaces :\n101 127.0.0.1 - :\n.\n");
    char id[201];
    send1(w, GM_PKT_SET_CLIENT_ID, long_name(id, 200)); /* cut to 127 bytes, as gearmand */
    EXPECT_NOTHING(w);
    char want[256];
    snprintf(want, sizeof want, "101 127.0.0.1 %.127s :\n101 127.0.0.1 - :\n.\n", id);
    expect_listing(adm, "workers", want);
}
END_TEST

START_TEST(test_create_function_with_a_control_character_or_over_512_bytes_is_refused)
{
    gm_conn_id adm = conn_open("admin", 0);
    admin(adm, "create function a\tb");
    EXPECT_TEXT(adm, "ERR INVALID_ARGUMENT Function+name+holds+a+control+character\r\n");
    admin(adm, "create function a\rb\x7f");
    EXPECT_TEXT(adm, "ERR INVALID_ARGUMENT Function+name+holds+a+control+character\r\n");
    char line[600], name[514];
    snprintf(line, sizeof line, "create function %s", long_name(name, 513));
    admin(adm, line);
    EXPECT_TEXT(adm, "ERR ARGUMENT_TOO_LARGE Function+name+is+longer+than+512+bytes\r\n");
    expect_listing(adm, "status", ".\n");
    snprintf(line, sizeof line, "create function %s", long_name(name, 512));
    admin(adm, line);
    EXPECT_TEXT(adm, "OK\r\n");
    char want[600];
    snprintf(want, sizeof want, "%s\t0\t0\t0\n.\n", name);
    expect_listing(adm, "status", want);
}
END_TEST

START_TEST(test_replayed_row_with_a_bad_function_name_is_kept_unreplayed)
{
    char name[514];
    long_name(name, 513);
    struct gm_qrow row = {.handle = "H:old:1", .unique = "", .data = "d", .handle_len = 7, .data_len = 1,
                          .priority = 1};
    char err[128];
    for (size_t i = 0; i < NBAD; i++) {
        row.function = bad_names[i].ptr;
        row.function_len = (uint32_t)bad_names[i].len;
        ck_assert_int_eq(gm_disp_replay_row(H.d, &row, err, sizeof err), -1);
        ck_assert_str_eq(err, CONTROL_TEXT);
    }
    row.function = name;
    row.function_len = 513;
    ck_assert_int_eq(gm_disp_replay_row(H.d, &row, err, sizeof err), -1);
    ck_assert_str_eq(err, TOO_LONG_TEXT);
    ck_assert_uint_eq(gm_disp_job_count(H.d), 0);
    gm_conn_id adm = conn_open("admin", 0);
    expect_listing(adm, "status", ".\n");
    row.function_len = 512;
    ck_assert_int_eq(gm_disp_replay_row(H.d, &row, err, sizeof err), 0);
    ck_assert_uint_eq(gm_disp_job_count(H.d), 1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* maxqueue                                                            */
/* ------------------------------------------------------------------ */

START_TEST(test_maxqueue_full_gives_queue_error)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id adm = conn_open("admin", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u1", "1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    admin(adm, "maxqueue f 1");
    EXPECT_TEXT(adm, "OK\r\n");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u2", "2");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    submit(c, GM_PKT_SUBMIT_JOB_HIGH_BG, "f", "u2", "2");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    /* coalescing onto the existing job is never refused */
    submit(c2, GM_PKT_SUBMIT_JOB, "f", "u1", "1");
    EXPECT(c2, GM_PKT_JOB_CREATED, "H:test:1");
    /* a running job still counts */
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "1");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u3", "3");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u4", "4");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2"); /* refusals used no handle */
    EXPECT_NOTHING(c);
    /* "maxqueue f" alone lifts the limit */
    admin(adm, "maxqueue f");
    EXPECT_TEXT(adm, "OK\r\n");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u5", "5");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
}
END_TEST

START_TEST(test_maxqueue_on_an_unknown_function_changes_nothing)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id adm = conn_open("admin", 1);
    admin(adm, "maxqueue g 1");
    EXPECT_TEXT(adm, "OK\r\n");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
}
END_TEST

START_TEST(test_maxqueue_limits_each_priority_against_the_function_total)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id adm = conn_open("admin", 1);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "n1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    admin(adm, "maxqueue f 0 2 1"); /* HIGH unlimited, NORMAL 2, LOW 1 */
    EXPECT_TEXT(adm, "OK\r\n");
    struct gm_function *fn = gm_disp_function_find(H.d, "f", 1);
    ck_assert_ptr_nonnull(fn);
    ck_assert_uint_eq(fn->max_queue[GM_PRIO_HIGH], 0);
    ck_assert_uint_eq(fn->max_queue[GM_PRIO_NORMAL], 2);
    ck_assert_uint_eq(fn->max_queue[GM_PRIO_LOW], 1);
    submit(c, GM_PKT_SUBMIT_JOB_LOW_BG, "f", "", "l1"); /* total 1 >= 1 */
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "n2"); /* total 1 < 2 */
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "n3"); /* total 2 */
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    submit(c, GM_PKT_SUBMIT_JOB_HIGH_BG, "f", "", "h1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    /* set directly through the function: HIGH limited to 3 now */
    fn->max_queue[GM_PRIO_HIGH] = 3;
    submit(c, GM_PKT_SUBMIT_JOB_HIGH, "f", "", "h2");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Reduce jobs                                                         */
/* ------------------------------------------------------------------ */

START_TEST(test_reduce_job_grabbed_with_grab_job_all_gives_job_assign_all)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "map");
    submit_reduce(c, GM_PKT_SUBMIT_REDUCE_JOB, "map", "u", "reduce-fn", "the data");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send0(w, GM_PKT_GRAB_JOB_ALL);
    EXPECT(w, GM_PKT_JOB_ASSIGN_ALL, "H:test:1", "map", "u", "reduce-fn", "the data");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "reduced");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "reduced");
}
END_TEST

START_TEST(test_reduce_job_grabbed_with_grab_job_uniq_gives_job_assign_uniq)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "map");
    submit_reduce(c, GM_PKT_SUBMIT_REDUCE_JOB, "map", "u1", "red", "d1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit_reduce(c, GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND, "map", "u2", "red", "d2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    send0(w, GM_PKT_GRAB_JOB_UNIQ);
    EXPECT(w, GM_PKT_JOB_ASSIGN_UNIQ, "H:test:1", "map", "u1", "d1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:2", "map", "d2");
}
END_TEST

START_TEST(test_grab_job_all_for_a_plain_job_gives_job_assign_uniq)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send0(w, GM_PKT_GRAB_JOB_ALL);
    EXPECT(w, GM_PKT_JOB_ASSIGN_UNIQ, "H:test:1", "f", "u", "d");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Messages, references, rings                                         */
/* ------------------------------------------------------------------ */

START_TEST(test_echo_req_is_answered_with_the_same_bytes)
{
    gm_conn_id c = conn_open("c", 0);
    send1(c, GM_PKT_ECHO_REQ, "hello");
    EXPECT(c, GM_PKT_ECHO_RES, "hello");
    send1(c, GM_PKT_ECHO_REQ, "");
    EXPECT(c, GM_PKT_ECHO_RES, "");
}
END_TEST

START_TEST(test_response_type_from_a_peer_gives_invalid_command)
{
    gm_conn_id c = conn_open("c", 0);
    send0(c, GM_PKT_NOOP);
    EXPECT(c, GM_PKT_ERROR, "INVALID_COMMAND", "Command not expected");
    send1(c, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT(c, GM_PKT_ERROR, "INVALID_COMMAND", "Command not expected");
    send0(c, GM_PKT_ALL_YOURS); /* accepted and ignored */
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_messages_for_unknown_or_stale_connections_are_dropped)
{
    /* never opened */
    gm_conn_id ghost = gm_conn_id_make(0, 500, 1);
    conn_register("ghost", ghost);
    submit(ghost, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT_NOTHING(ghost);
    /* a slot reused by a newer connection: the old generation is gone */
    gm_conn_id old = open_id("old", gm_conn_id_make(1, 9, 1), "10.0.0.1");
    conn_close(old);
    gm_conn_id fresh = open_id("fresh", gm_conn_id_make(1, 9, 2), "10.0.0.2");
    submit(old, GM_PKT_SUBMIT_JOB, "f", "", "d");
    conn_close(old); /* a late close for the old generation must not drop the new one */
    EXPECT_NOTHING(old);
    EXPECT_NOTHING(fresh);
    submit(fresh, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(fresh, GM_PKT_JOB_CREATED, "H:test:1"); /* no job was made for the others */
}
END_TEST

START_TEST(test_flush_wakes_only_io_threads_with_news)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    memset(H.wakes, 0, sizeof H.wakes);
    can_do(w, "f");
    ck_assert_uint_eq(H.wakes[0] + H.wakes[1], 0); /* no reply, no wake */
    submit(c, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(H.wakes[0], 1);
    ck_assert_uint_eq(H.wakes[1], 0);
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, ANY, ANY, ANY);
    ck_assert_uint_eq(H.wakes[0], 1);
    ck_assert_uint_eq(H.wakes[1], 1);
}
END_TEST

/* More replies than the outbound ring holds: the rest wait in the
   dispatcher, in order, and it asks to be told when there is room. */
START_TEST(test_replies_that_do_not_fit_the_out_ring_wait_in_order)
{
    gm_conn_id c = conn_open("c", 0);
    const int n = 3000;
    for (int i = 0; i < n; i++) {
        char h[32];
        snprintf(h, sizeof h, "x%d", i);
        struct gm_field_ref f[1] = {FR(h)};
        send_nopump(c, GM_PKT_GET_STATUS, f, 1);
        if (i % 500 == 499)
            gm_disp_drain(H.d, 1u << 20);
    }
    gm_disp_drain(H.d, 1u << 20);
    gm_disp_flush(H.d);
    ck_assert_uint_eq(gm_out_ring_pending(&H.ch[0].out), gm_out_ring_capacity(&H.ch[0].out));
    ck_assert_int_eq(atomic_load(&H.ch[0].disp_wants_space), 1);
    collect();
    for (int i = 0; i < n; i++) {
        char h[32];
        snprintf(h, sizeof h, "x%d", i);
        EXPECT(c, GM_PKT_STATUS_RES, h, "0", "0", "0", "0");
    }
    EXPECT_NOTHING(c);
}
END_TEST

/* Several packets read into one block: each message holds one reference,
   the dispatcher drops each once (jobs copy small data). */
START_TEST(test_packets_sharing_one_block_are_released_once_each)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    struct gm_field_ref f[3][3] = {
        {FR("f"), FR("u1"), FR("one")}, {FR("f"), FR("u2"), FR("two")}, {FR("f"), FR("u1"), FR("one")}};
    size_t sizes[3], total = 0;
    for (int i = 0; i < 3; i++) {
        sizes[i] = GM_HEADER_SIZE + gm_payload_size(f[i], 3);
        total += sizes[i];
    }
    struct gm_block *b = gm_block_new(total);
    ck_assert_ptr_nonnull(b);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        gm_packet_encode(b->data + off, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB, f[i], 3);
        off += sizes[i];
    }
    gm_block_ref_n(b, 3); /* one per message; the test keeps the first */
    off = 0;
    for (int i = 0; i < 3; i++) {
        struct gm_in m;
        memset(&m, 0, sizeof m);
        m.conn = c;
        m.kind = GM_IN_PACKET;
        m.type = GM_PKT_SUBMIT_JOB;
        m.len = (uint32_t)(sizes[i] - GM_HEADER_SIZE);
        m.payload = b->data + off + GM_HEADER_SIZE;
        m.blk = b;
        ck_assert_int_eq(gm_fields_split(m.type, m.payload, m.len, &m.u.fields), GM_PARSE_OK);
        push_in(&m);
        off += sizes[i];
    }
    pump();
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(block_refs(b), 1);
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "one");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    ck_assert_uint_eq(block_refs(b), 1);
    gm_block_unref(b);
}
END_TEST

/* A packet in a block of its own: the job keeps the payload by reference,
   JOB_ASSIGN sends it by reference, and the reference goes with the job. */
START_TEST(test_payload_in_its_own_block_travels_by_reference)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    size_t big = 100000;
    char *data = malloc(big + 1);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    data[big] = '\0';
    struct gm_field_ref f[3] = {FR("f"), FR("u"), {data, big}};
    struct gm_block *b = send_nopump(c, GM_PKT_SUBMIT_JOB, f, 3);
    gm_block_ref(b);
    pump();
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(block_refs(b), 2); /* the test's and the job's */

    grab(w); /* collect() copies the bytes and drops the reply's reference */
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", data);
    ck_assert_uint_eq(block_refs(b), 2);
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u", "coalesced"); /* onto the running job */
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(block_refs(b), 2);

    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    ck_assert_uint_eq(block_refs(b), 1); /* the job let go */
    gm_block_unref(b);
    free(data);
}
END_TEST

START_TEST(test_job_assign_body_references_the_submitted_block)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    static char data[5000];
    memset(data, 'q', sizeof data);
    struct gm_field_ref f[3] = {FR("f"), FR(""), {data, sizeof data}};
    struct gm_block *b = send_nopump(c, GM_PKT_SUBMIT_JOB, f, 3);
    gm_block_ref(b);
    pump();
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send_nopump(w, GM_PKT_GRAB_JOB, NULL, 0);
    gm_disp_drain(H.d, 1u << 20);
    gm_disp_flush(H.d);
    /* Look at the replies on thread 1's ring before the I/O side takes them
       (consumer-side slots from head_local on). */
    struct gm_out_ring *r = &H.ch[1].out;
    size_t pending = gm_out_ring_pending(r);
    ck_assert_uint_ge(pending, 1);
    bool by_ref = false;
    for (size_t i = 0; i < pending; i++) {
        const struct gm_out *o = &r->slots[(r->head_local + i) & r->mask];
        if (o->body.blk == b && o->body.len == sizeof data && o->body.ptr >= b->data &&
            o->body.ptr + o->body.len <= b->data + b->cap)
            by_ref = true;
    }
    ck_assert_msg(by_ref, "JOB_ASSIGN does not carry the payload by reference");
    collect();
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", ANY);
    gm_block_unref(b);
}
END_TEST

/* gm_disp_free with jobs in every state releases every reference. */
START_TEST(test_free_releases_jobs_in_every_state)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    static char big[3][4000];
    struct gm_block *b[3];
    char epoch[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)(T0 / 1000 + 3600));
    for (int i = 0; i < 3; i++) {
        memset(big[i], 'a' + i, sizeof big[i]);
        if (i == 2) {
            struct gm_field_ref f[4] = {FR("f"), FR(""), FR(epoch), {big[i], sizeof big[i]}};
            b[i] = send_nopump(c, GM_PKT_SUBMIT_JOB_EPOCH, f, 4); /* future */
        } else {
            struct gm_field_ref f[3] = {FR("f"), FR(""), {big[i], sizeof big[i]}};
            b[i] = send_nopump(c, GM_PKT_SUBMIT_JOB, f, 3);
        }
        gm_block_ref(b[i]);
        pump();
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    grab(w); /* job 1 running, job 2 queued, job 3 in the future */
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", ANY);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(block_refs(b[i]), 2);
    collect();
    gm_disp_free(H.d);
    H.d = NULL;
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(block_refs(b[i]) == 1, "job %d's block has %u references after free", i + 1,
                      block_refs(b[i]));
        gm_block_unref(b[i]);
    }
}
END_TEST

/* The by-handle index hashes a handle by its trailing number: handles of
   other servers (replayed from a queue) that end in the same number, or in
   none, or in one too long for 64 bits, are still told apart, and a table
   grown to thousands of jobs still finds every one. */
static void
replay_job(const char *handle)
{
    struct gm_qrow row = {.handle = handle, .function = "f", .unique = "", .data = "d",
                          .handle_len = (uint32_t)strlen(handle), .function_len = 1, .data_len = 1,
                          .priority = 1};
    char err[128];
    ck_assert_msg(gm_disp_replay_row(H.d, &row, err, sizeof err) == 0, "%s: %s", handle, err);
}

static void
expect_indexed(const char *handle)
{
    struct gm_job *j = gm_disp_job_by_handle(H.d, handle, strlen(handle));
    ck_assert_msg(j != NULL, "%s is not found", handle);
    ck_assert_msg(j->handle_len == strlen(handle) && memcmp(gm_job_handle(j), handle, j->handle_len) == 0,
                  "looking up %s found %.*s", handle, (int)j->handle_len, gm_job_handle(j));
}

START_TEST(test_handles_ending_in_the_same_number_are_told_apart)
{
    static const char *const handles[] = {"H:old:7", "H:other:7", "7", "H:test:007", "H:no-number",
                                          "H:long:123456789012345678901234567", "H:long:923456789012345678901234567"};
    size_t n = sizeof handles / sizeof handles[0];
    for (size_t i = 0; i < n; i++)
        replay_job(handles[i]);
    for (size_t i = 0; i < n; i++)
        expect_indexed(handles[i]);
    ck_assert_ptr_null(gm_disp_job_by_handle(H.d, "H:old:8", 7));
    ck_assert_ptr_null(gm_disp_job_by_handle(H.d, "H:test:7", 8));
    char h[32];
    for (int i = 1; i <= 20000; i++) {
        snprintf(h, sizeof h, "H:grow:%d", i);
        replay_job(h);
    }
    for (int i = 1; i <= 20000; i++) {
        snprintf(h, sizeof h, "H:grow:%d", i);
        expect_indexed(h);
    }
    for (size_t i = 0; i < n; i++)
        expect_indexed(handles[i]);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A durable queue: the test plays the persistence thread              */
/* ------------------------------------------------------------------ */

/* Attaches a persistence channel whose records the test reads and whose
   acknowledgements it writes. */
static void
durable_attach(void)
{
    ck_assert_int_eq(gm_persist_channel_init(&H.pc, 1024), 0);
    H.durable = true;
    gm_disp_attach_persist(H.d, &H.pc, NULL, NULL, true, false);
}

/* One record as the test saw it. */
struct trec {
    uint64_t seq;
    uint8_t op;
    char handle[GM_HANDLE_MAX + 1];
    char function[64];
};

/* Takes every record the dispatcher has published; returns how many ADDs
   and DONEs there were (at most max are kept in out; handle counter records
   are left out).  *last gets the last sequence number, if not NULL. */
static size_t
take_records(struct trec *out, size_t max, uint64_t *last)
{
    gm_disp_flush(H.d);
    size_t n = 0;
    struct gm_prec *r;
    while ((r = gm_prec_ring_peek(&H.pc.records))) {
        if (last)
            *last = r->seq;
        if (r->op == GM_QOP_COUNTER) {
            gm_prec_ring_consume(&H.pc.records);
            continue;
        }
        if (n < max) {
            out[n].seq = r->seq;
            out[n].op = r->op;
            const char *h = r->handle ? r->handle : r->handle_copy;
            snprintf(out[n].handle, sizeof out[n].handle, "%.*s", (int)r->handle_len, h);
            snprintf(out[n].function, sizeof out[n].function, "%.*s", (int)r->function_len,
                     r->function ? r->function : "");
        }
        n++;
        gm_block_unref(r->blk);
        gm_block_unref(r->data_blk);
        gm_prec_ring_consume(&H.pc.records);
    }
    gm_prec_ring_release(&H.pc.records);
    return n;
}

/* Answers every record up to seq: stored (ok) or refused. */
static void
ack(uint64_t upto, bool ok)
{
    struct gm_pack a;
    memset(&a, 0, sizeof a);
    a.upto = upto;
    a.ok = ok;
    snprintf(a.reason, sizeof a.reason, "refused by the test");
    ck_assert(gm_pack_ring_push(&H.pc.acks, &a));
    gm_pack_ring_publish(&H.pc.acks);
    pump();
}

/* Takes the records and expects exactly the ops given, ADD or DONE, of the
   handle given; returns the last sequence number. */
static uint64_t
expect_records(int line, const uint8_t *ops, size_t n, const char *handle)
{
    struct trec r[16];
    uint64_t last = 0;
    size_t got = take_records(r, 16, &last);
    size_t k = 0;
    for (size_t i = 0; i < got && i < 16; i++) {
        ck_assert_msg(k < n, "line %d: an unexpected record (op %u of %s)", line, r[i].op,
                      r[i].handle);
        ck_assert_msg(r[i].op == ops[k] && strcmp(r[i].handle, handle) == 0,
                      "line %d: record %zu is op %u of %s, expected op %u of %s", line, k, r[i].op,
                      r[i].handle, ops[k], handle);
        k++;
    }
    ck_assert_msg(k == n && got == n, "line %d: %zu records, expected %zu", line, got, n);
    return last;
}
#define EXPECT_RECORDS(handle, ...)                                                              \
    expect_records(__LINE__, (const uint8_t[]){__VA_ARGS__},                                    \
                   sizeof((const uint8_t[]){__VA_ARGS__}), (handle))

/* fg submits job H:test:1 of function f (unique u, data d); w runs it. */
static void
run_first_job(gm_conn_id fg, gm_conn_id w)
{
    can_do(w, "f");
    submit(fg, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(fg, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
}

/* Issue 12.4: a background submit that joins a queued foreground job makes
   the job durable first: JOB_CREATED only after its ADD is acknowledged;
   the job then outlives its foreground client. */
START_TEST(test_background_submit_joining_a_queued_job_hears_job_created_after_the_commit)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    submit(fg, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(fg, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(take_records(NULL, 0, NULL), 0); /* foreground: not stored */
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    EXPECT_NOTHING(bg);
    uint64_t seq = EXPECT_RECORDS("H:test:1", GM_QOP_ADD);
    conn_close(fg); /* wanted by a background submitter: it stays */
    ack(seq, true);
    EXPECT(bg, GM_PKT_JOB_CREATED, "H:test:1");
    can_do(w, "f");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_RECORDS("H:test:1", GM_QOP_DONE);
}
END_TEST

/* The job completes while its ADD is on its way: the DONE follows the ADD,
   the background submitter still hears JOB_CREATED, and the job's memory
   goes once the acknowledgement is in (AddressSanitizer checks both). */
START_TEST(test_joined_job_completing_before_its_commit_answers_the_waiter_and_is_done)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    run_first_job(fg, w);
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    submit(bg, GM_PKT_SUBMIT_JOB_HIGH_BG, "f", "u", "d"); /* a second waiter, no second ADD */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(fg, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(bg);
    uint64_t seq = EXPECT_RECORDS("H:test:1", GM_QOP_ADD, GM_QOP_DONE);
    ack(seq, true);
    EXPECT(bg, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT(bg, GM_PKT_JOB_CREATED, "H:test:1");
    admin(fg, "status");
    EXPECT_TEXT(fg, "f\t0\t0\t1\n.\n");
}
END_TEST

/* Refused by storage: the background submitters get QUEUE_ERROR, and the
   foreground job goes on for its client as before. */
START_TEST(test_joined_job_refused_by_storage_stays_a_foreground_job)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    submit(fg, GM_PKT_SUBMIT_JOB, "f", "u", "d");
    EXPECT(fg, GM_PKT_JOB_CREATED, "H:test:1");
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    uint64_t seq = EXPECT_RECORDS("H:test:1", GM_QOP_ADD);
    ack(seq, false);
    EXPECT(bg, GM_PKT_ERROR, "QUEUE_ERROR", ANY);
    can_do(w, "f");
    grab(w);
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(fg, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    ck_assert_uint_eq(take_records(NULL, 0, NULL), 0); /* never stored: no DONE */
    /* refused after its client left: nobody wants it, it goes */
    submit(fg, GM_PKT_SUBMIT_JOB, "f", "u2", "d");
    EXPECT(fg, GM_PKT_JOB_CREATED, "H:test:2");
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u2", "d");
    seq = EXPECT_RECORDS("H:test:2", GM_QOP_ADD);
    conn_close(fg);
    ack(seq, false);
    EXPECT(bg, GM_PKT_ERROR, "QUEUE_ERROR", ANY);
    admin(bg, "status");
    EXPECT_TEXT(bg, "f\t0\t0\t1\n.\n");
}
END_TEST

/* A worker that dies holding a joined job gives it back to the queue even
   though its foreground client has left (the background submitter wants
   it); the server stopping with the ADD still out frees everything. */
START_TEST(test_joined_job_outlives_its_client_and_worker_and_a_stop_before_the_commit)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    run_first_job(fg, w);
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    conn_close(fg);
    conn_close(w);
    admin(bg, "status");
    EXPECT_TEXT(bg, "f\t1\t0\t0\n.\n");
    /* teardown frees the dispatcher with the ADD unanswered */
}
END_TEST

/* Issue 12.3: memory failing at any point of a durable background submit
   gives the submitter an ERROR and leaves nothing behind: no read of the
   freed job (the log line after it), no leak. */
START_TEST(test_durable_submit_with_memory_failing_at_each_step_answers_an_error)
{
    durable_attach();
    int saved = gm_log_level;
    gm_log_level = GM_LOG_NOTICE; /* the accepted,... line reads the job */
    gm_log_open("none");
    gm_conn_id c = conn_open("c", 0);
    unsigned errors = 0;
    for (long budget = 0; budget < 8; budget++) {
        char unique[16];
        snprintf(unique, sizeof unique, "u%ld", budget);
        struct gm_field_ref f[3] = {FR("f"), FR(unique), FR("d")};
        send_nopump(c, GM_PKT_SUBMIT_JOB_BG, f, 3);
        malloc_budget = budget;
        gm_disp_drain(H.d, 1u << 20);
        malloc_budget = -1;
        collect();
        if (next_is(c, GM_PKT_ERROR)) {
            EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", ANY);
            errors++;
        }
        EXPECT_NOTHING(c);
        take_records(NULL, 0, NULL);
    }
    gm_log_level = saved;
    gm_log_close();
    ck_assert_uint_gt(errors, 0);
}
END_TEST

/* ------------------------------------------------------------------ */

#define ADD(s, t) gm_check_add((s), #t, t, 60, setup, teardown)

static Suite *
dispatcher_suite(void)
{
    Suite *s = suite_create("dispatcher");
    ADD(s, test_job_created_handles_count_up_from_one);
    ADD(s, test_background_submit_joining_a_queued_job_hears_job_created_after_the_commit);
    ADD(s, test_joined_job_completing_before_its_commit_answers_the_waiter_and_is_done);
    ADD(s, test_joined_job_refused_by_storage_stays_a_foreground_job);
    ADD(s, test_joined_job_outlives_its_client_and_worker_and_a_stop_before_the_commit);
    ADD(s, test_durable_submit_with_memory_failing_at_each_step_answers_an_error);
    ADD(s, test_handles_ending_in_the_same_number_are_told_apart);
    ADD(s, test_grab_job_assigns_handle_function_and_data);
    ADD(s, test_grab_job_with_nothing_queued_gives_no_job);
    ADD(s, test_grab_job_uniq_carries_the_unique);
    ADD(s, test_long_function_name_assign_arrives_whole);
    ADD(s, test_high_runs_before_low_across_functions);
    ADD(s, test_high_runs_before_low_whatever_the_registration_order);
    ADD(s, test_low_of_last_registered_function_waits_for_high_of_others);
    ADD(s, test_functions_of_equal_priority_take_turns);
    ADD(s, test_jobs_of_one_priority_run_in_submission_order);
    ADD(s, test_same_unique_coalesces_foreground_clients_onto_one_job);
    ADD(s, test_foreground_submit_coalesces_onto_background_job);
    ADD(s, test_submit_coalesces_onto_a_running_job);
    ADD(s, test_dash_unique_coalesces_on_identical_data);
    ADD(s, test_empty_unique_never_coalesces);
    ADD(s, test_same_unique_under_another_function_is_another_job);
    ADD(s, test_unique_is_free_again_after_the_job_ends);
    ADD(s, test_unique_longer_than_64_bytes_is_too_large);
    ADD(s, test_worker_disconnect_requeues_its_job_at_the_head);
    ADD(s, test_worker_disconnect_wakes_a_sleeping_worker);
    ADD(s, test_job_fails_after_job_retries_worker_deaths);
    ADD(s, test_job_retries_zero_requeues_without_limit);
    ADD(s, test_cant_do_requeues_the_running_job_of_that_function);
    ADD(s, test_pre_sleep_then_new_job_wakes_every_sleeping_worker);
    ADD(s, test_worker_wakeup_one_wakes_a_single_sleeper_per_job);
    ADD(s, test_pre_sleep_with_a_queued_job_gets_noop_at_once);
    ADD(s, test_registering_a_function_with_work_wakes_a_sleeping_worker);
    ADD(s, test_future_epoch_job_waits_for_its_time_and_blocks_nothing);
    ADD(s, test_epoch_in_the_past_runs_at_once);
    ADD(s, test_epoch_far_in_the_future_is_not_grabbable);
    ADD(s, test_sched_job_waits_for_its_next_matching_minute);
    ADD(s, test_sched_job_matching_the_current_minute_runs_now);
    ADD(s, test_sched_job_with_a_bad_or_impossible_schedule_is_refused);
    ADD(s, test_can_do_timeout_expiry_fails_the_job);
    ADD(s, test_can_do_timeout_below_one_second_counts_as_one_second);
    ADD(s, test_can_do_timeout_ends_with_the_job);
    ADD(s, test_work_packets_reach_every_attached_client_in_order);
    ADD(s, test_get_status_reports_known_running_and_progress);
    ADD(s, test_get_status_unique_reports_the_attached_client_count);
    ADD(s, test_work_exception_is_a_plain_work_fail_without_the_exceptions_option);
    ADD(s, test_exceptions_setting_forwards_work_exception_to_every_client);
    ADD(s, test_option_req_echoes_the_name_as_sent);
    ADD(s, test_option_req_unknown_gives_unknown_option);
    ADD(s, test_work_result_for_an_unknown_handle_gives_job_not_found);
    ADD(s, test_work_result_from_a_connection_not_holding_the_job_gives_job_not_found);
    ADD(s, test_client_disconnect_abandons_its_queued_foreground_job);
    ADD(s, test_client_disconnect_keeps_a_job_another_client_waits_on);
    ADD(s, test_abandoned_running_job_finishes_unheard);
    ADD(s, test_abandoned_job_taken_up_again_survives_worker_death);
    ADD(s, test_abandoned_job_taken_up_again_fails_its_new_client_on_timeout);
    ADD(s, test_can_do_with_a_control_character_in_the_name_is_refused);
    ADD(s, test_submit_with_a_control_character_in_the_function_name_creates_no_job);
    ADD(s, test_function_name_of_512_bytes_is_accepted_and_513_refused);
    ADD(s, test_set_client_id_with_a_control_character_is_refused_and_keeps_the_id);
    ADD(s, test_create_function_with_a_control_character_or_over_512_bytes_is_refused);
    ADD(s, test_replayed_row_with_a_bad_function_name_is_kept_unreplayed);
    ADD(s, test_maxqueue_full_gives_queue_error);
    ADD(s, test_maxqueue_on_an_unknown_function_changes_nothing);
    ADD(s, test_maxqueue_limits_each_priority_against_the_function_total);
    ADD(s, test_reduce_job_grabbed_with_grab_job_all_gives_job_assign_all);
    ADD(s, test_reduce_job_grabbed_with_grab_job_uniq_gives_job_assign_uniq);
    ADD(s, test_grab_job_all_for_a_plain_job_gives_job_assign_uniq);
    ADD(s, test_echo_req_is_answered_with_the_same_bytes);
    ADD(s, test_response_type_from_a_peer_gives_invalid_command);
    ADD(s, test_messages_for_unknown_or_stale_connections_are_dropped);
    ADD(s, test_flush_wakes_only_io_threads_with_news);
    ADD(s, test_replies_that_do_not_fit_the_out_ring_wait_in_order);
    ADD(s, test_packets_sharing_one_block_are_released_once_each);
    ADD(s, test_payload_in_its_own_block_travels_by_reference);
    ADD(s, test_job_assign_body_references_the_submitted_block);
    ADD(s, test_free_releases_jobs_in_every_state);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(dispatcher_suite());
}
