/*
 * fuzz_io.c: libFuzzer target for the whole input path of an I/O thread:
 * bytes written to its sockets in, requests on its inbound ring out.  A
 * real I/O thread (io_thread.c and the files under it, unchanged) owns
 * three connections over Unix socket pairs: two Gearman ones and one of
 * the HTTP front-end.  Its libev loop is run here, one iteration at a
 * time, on this thread, and this target plays the dispatcher: it takes the
 * requests off the inbound ring (some at once, some later, a few kept for
 * a while), answers the front-end's, closes connections, sends replies big
 * enough to reach the output limits, and reads what the thread writes.
 *
 * The input is a program: chunks of bytes for a connection (so reads end
 * where the input says, and a packet can arrive in pieces), runs of one
 * byte (so a small input makes a packet bigger than a read block, the
 * big-packet path), Gearman and HTTP heads of a chosen size, and the
 * dispatcher's moves.  A small --max-packet-size, a small inbound ring and
 * small output limits can be chosen, so that the limits, stalls on a full
 * ring and backpressure are reached.
 *
 * Checked, against a model that frames what was written with the codec's
 * own functions (gm_frame_next, gm_fields_split, the front-end's parse):
 * every request arrives once, in order, with the bytes that were sent and
 * fields inside them; its bytes stay intact while the "dispatcher" holds
 * them, even as the thread reuses its read blocks; ECHO answered by the
 * thread echoes what was sent; what the thread writes is well framed; a
 * connection closes after a protocol error and only for a reason; at the
 * end, everything complete that was sent has arrived.  A violation aborts;
 * everything is freed per input, so leaks show.  Single-threaded.
 */
#include "config.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/io/io_thread.h"
#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/proto/protocol.h"
#include "plugins/protocol/http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "fuzz_io: %s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

/* FUZZ_IO_TRACE=1 in the environment prints the program and the end state. */
static int trace = -1;
#define TRACE(...)                                                                              \
    do {                                                                                        \
        if (trace > 0)                                                                          \
            fprintf(stderr, __VA_ARGS__);                                                       \
    } while (0)

#define NPEERS 3   /* 0 and 1: Gearman; 2: the HTTP front-end */
#define FE 2
#define HOLD_MAX 8 /* requests the "dispatcher" keeps before releasing them */
#define FILL_MAX (128u * 1024) /* twice a read block, and past a big packet's first block */
#define SENT_MAX (1u << 20)    /* bytes written per input, over all peers */
#define BULK_MAX (256u * 1024) /* bytes of big replies per input */

/* A growing byte buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        CHECK(b->p != NULL);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* What the model says the thread must hand on next for a connection. */
struct expect {
    uint8_t kind;        /* GM_IN_PACKET, GM_IN_TEXT, GM_IN_FRONTEND */
    bool crlf;           /* TEXT */
    uint16_t type;       /* PACKET */
    size_t off;          /* the payload's offset in the stream */
    uint32_t len;        /* the payload's length */
    struct gm_fe_req fe; /* FRONTEND */
};

struct peer {
    int fd;              /* the test's end; -1 once closed */
    int server_fd;       /* the thread's end (its number names it in GM_IN_OPEN) */
    bool write_shut;     /* the test sent EOF */
    bool unread;         /* written to since the thread was last seen to have read it all */
    gm_conn_id id;
    bool opened, closed; /* GM_IN_OPEN, GM_IN_CLOSE seen */
    /* the model of the input: every byte the thread could read, how far
       the model has framed it, and what it expects, in order */
    struct buf sent;
    size_t framed;
    struct expect *exp;
    size_t nexp, exp_head, exp_cap;
    bool dispatched;     /* a request went to the dispatcher: ECHO is no longer answered locally */
    bool ended;          /* a protocol error or a closing response: the connection must close */
    void *fe_model;      /* the front-end's state for the model's parse() */
    /* the front-end's request being answered (one at a time) */
    bool fe_waiting;
    struct gm_fe_req fe_req;
    /* the dispatcher's doings that may close it */
    bool out_close_sent, out_limit_possible;
    /* ECHO payloads the thread answers itself (offsets, lengths), in order */
    struct buf echo;     /* pairs of size_t */
    size_t necho, echo_head;
    /* what the thread wrote */
    struct buf out;
    size_t out_parsed;
};

struct held {
    int peer;
    size_t off;
    uint32_t len;
    const char *payload;
    struct gm_block *blk;
};

struct harness {
    struct gm_server_config cfg;
    struct gm_channel ch;
    struct gm_io_thread *io;
    struct ev_loop *loop;
    struct peer peers[NPEERS];
    struct held held[HOLD_MAX];
    size_t nheld;
    bool small_output;
    size_t sent_total, bulk_total;
};

static void
no_wake(void *arg)
{
    (void)arg;
}

/* ------------------------------------------------------------------ */
/* The model                                                           */
/* ------------------------------------------------------------------ */

static void
expect_push(struct peer *p, const struct expect *e)
{
    if (p->nexp == p->exp_cap) {
        p->exp_cap = p->exp_cap ? p->exp_cap * 2 : 16;
        p->exp = realloc(p->exp, p->exp_cap * sizeof *p->exp);
        CHECK(p->exp != NULL);
    }
    p->exp[p->nexp++] = *e;
}

/* Frames what was sent on a Gearman connection as packet_parse() must:
   requests to expect, ECHOs answered locally, errors that end it. */
static void
model_gearman(struct harness *h, struct peer *p)
{
    while (!p->ended && p->framed < p->sent.len) {
        const char *s = p->sent.p + p->framed;
        size_t left = p->sent.len - p->framed;
        struct gm_frame f;
        gm_frame_next(s, left, h->cfg.max_packet_size, &f);
        if (f.kind == GM_FRAME_NEED_MORE)
            return;
        if (f.kind == GM_FRAME_ERROR) {
            p->ended = true;
            return;
        }
        struct expect e = {0};
        if (f.kind == GM_FRAME_TEXT) {
            e.kind = GM_IN_TEXT;
            e.crlf = f.length != f.text_len + 1;
            e.off = p->framed;
            e.len = f.text_len;
            expect_push(p, &e);
            p->dispatched = true;
            p->framed += f.length;
            continue;
        }
        p->framed += f.length;
        const struct gm_packet_info *info = gm_packet_info(f.h.type);
        if (f.h.magic == GM_MAGIC_RES || !(info->dir & GM_DIR_REQUEST))
            continue; /* an error answered, the stream goes on */
        struct gm_fields fields;
        if (gm_fields_split(f.h.type, s + GM_HEADER_SIZE, f.h.size, &fields) != GM_PARSE_OK) {
            p->ended = true;
            return;
        }
        if (f.h.type == GM_PKT_ECHO_REQ && !p->dispatched) {
            size_t pair[2] = {p->framed - f.h.size, f.h.size};
            buf_add(&p->echo, pair, sizeof pair);
            p->necho++;
            continue;
        }
        e.kind = GM_IN_PACKET;
        e.type = (uint16_t)f.h.type;
        e.off = p->framed - f.h.size;
        e.len = f.h.size;
        expect_push(p, &e);
        p->dispatched = true;
    }
}

/* Cuts what was sent on the front-end connection into requests with the
   front-end's own parse(), as fe_parse() must. */
static void
model_frontend(struct harness *h, struct peer *p)
{
    while (!p->ended && p->framed < p->sent.len) {
        struct gm_fe_req req;
        uint64_t need = 0;
        struct gm_fe_output err = {0};
        long used = gm_http_frontend.parse(p->fe_model, p->sent.p + p->framed, p->sent.len - p->framed,
                                           h->cfg.max_packet_size, &req, &need, &err);
        free(err.blk);
        if (used == 0)
            return;
        if (used < 0) {
            p->ended = true;
            return;
        }
        struct expect e = {.kind = GM_IN_FRONTEND, .off = p->framed, .len = (uint32_t)used, .fe = req};
        expect_push(p, &e);
        p->framed += (size_t)used;
    }
}

static void
model_advance(struct harness *h, int i)
{
    if (i == FE)
        model_frontend(h, &h->peers[i]);
    else
        model_gearman(h, &h->peers[i]);
}

/* ------------------------------------------------------------------ */
/* Running the thread                                                  */
/* ------------------------------------------------------------------ */

/* Bytes written by the test that the thread has not read yet (in all).
   A peer found drained is not asked again until it is written to (system
   calls are most of what this target costs). */
static size_t
unread_by_thread(struct harness *h)
{
    size_t sum = 0;
    for (int i = 0; i < NPEERS; i++) {
        struct peer *p = &h->peers[i];
        int q = 0;
        if (p->unread && p->fd >= 0 && ioctl(p->fd, SIOCOUTQ, &q) == 0 && q > 0)
            sum += (size_t)q;
        else
            p->unread = false;
    }
    return sum;
}

/* Runs loop iterations until the thread has read what it will read and
   published what it parsed. */
static void
settle(struct harness *h)
{
    for (int i = 0, quiet = 0; i < 64 && quiet < 2; i++) {
        size_t before = unread_by_thread(h);
        ev_run(h->loop, EVRUN_NOWAIT);
        quiet = unread_by_thread(h) == before ? quiet + 1 : 0;
    }
}

/* Writes n bytes to a peer (as much as the socket takes while the thread
   reads); what was taken becomes part of the model's stream. */
static void
peer_write(struct harness *h, int i, const void *data, size_t n)
{
    struct peer *p = &h->peers[i];
    const char *s = data;
    int stuck = 0;
    if (n > SENT_MAX - h->sent_total)
        n = SENT_MAX - h->sent_total;
    while (n && p->fd >= 0 && !p->write_shut && stuck < 3) {
        ssize_t w = send(p->fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p->unread = true;
            buf_add(&p->sent, s, (size_t)w);
            h->sent_total += (size_t)w;
            s += w;
            n -= (size_t)w;
            stuck = 0;
            if (n)
                settle(h);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            settle(h); /* the thread may read some: try again, a few times */
            stuck++;
            continue;
        }
        break; /* the thread closed its end */
    }
    model_advance(h, i);
}

/* ------------------------------------------------------------------ */
/* What the thread writes                                              */
/* ------------------------------------------------------------------ */

/* Checks the complete items the thread wrote to a Gearman peer: response
   packets (ECHO_RES with the payload sent, ERROR, the NOOPs this target
   sends) and ERR lines. */
static void
check_gearman_output(struct peer *p)
{
    for (;;) {
        size_t left = p->out.len - p->out_parsed;
        if (left == 0)
            return;
        const char *s = p->out.p + p->out_parsed;
        if (s[0] != '\0') {
            const char *nl = memchr(s, '\n', left);
            if (!nl)
                return;
            static const char err[] = "ERR LINE_TOO_LONG ";
            CHECK((size_t)(nl - s) > sizeof err && memcmp(s, err, sizeof err - 1) == 0 && nl[-1] == '\r');
            p->out_parsed += (size_t)(nl - s) + 1;
            continue;
        }
        if (left < GM_HEADER_SIZE)
            return;
        struct gm_header hd;
        gm_header_decode((const unsigned char *)s, UINT32_MAX, &hd);
        CHECK(hd.magic == GM_MAGIC_RES);
        CHECK(hd.type == GM_PKT_ECHO_RES || hd.type == GM_PKT_ERROR || hd.type == GM_PKT_NOOP);
        if (left < GM_HEADER_SIZE + (size_t)hd.size)
            return;
        if (hd.type == GM_PKT_ECHO_RES) {
            CHECK(p->echo_head < p->necho);
            size_t pair[2];
            memcpy(pair, p->echo.p + p->echo_head * sizeof pair, sizeof pair);
            size_t off = pair[0], len = pair[1];
            p->echo_head++;
            CHECK(hd.size == len && memcmp(s + GM_HEADER_SIZE, p->sent.p + off, len) == 0);
        } else if (hd.type == GM_PKT_ERROR) {
            CHECK(memchr(s + GM_HEADER_SIZE, '\0', hd.size) != NULL);
        }
        p->out_parsed += GM_HEADER_SIZE + hd.size;
    }
}

/* Checks the complete HTTP responses written to the front-end peer: a
   status line, headers, and as many body bytes as Content-Length says. */
static void
check_http_output(struct peer *p)
{
    for (;;) {
        size_t left = p->out.len - p->out_parsed;
        if (left == 0)
            return;
        const char *s = p->out.p + p->out_parsed;
        if (left < 7)
            return;
        CHECK(memcmp(s, "HTTP/1.", 7) == 0);
        const char *end = memmem(s, left, "\r\n\r\n", 4);
        if (!end)
            return;
        size_t head = (size_t)(end + 4 - s);
        const char *cl = memmem(s, head, "\r\nContent-Length: ", 18);
        CHECK(cl != NULL);
        size_t clen = strtoull(cl + 18, NULL, 10);
        if (left < head + clen)
            return;
        p->out_parsed += head + clen;
    }
}

/* Reads what the thread wrote to a peer, and checks it. */
static void
peer_read(struct harness *h, int i)
{
    struct peer *p = &h->peers[i];
    char tmp[65536];
    while (p->fd >= 0) {
        ssize_t n = recv(p->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n > 0) {
            buf_add(&p->out, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    if (i == FE)
        check_http_output(p);
    else
        check_gearman_output(p);
}

/* ------------------------------------------------------------------ */
/* The dispatcher's side                                               */
/* ------------------------------------------------------------------ */

/* A held request's bytes are still the ones sent: the thread must not
   reuse a block a reference is out on. */
static void
release_held(struct harness *h, size_t k)
{
    struct held *x = &h->held[k];
    CHECK(memcmp(x->payload, h->peers[x->peer].sent.p + x->off, x->len) == 0);
    gm_block_unref(x->blk);
    h->held[k] = h->held[--h->nheld];
}

static int
peer_of(struct harness *h, gm_conn_id id)
{
    for (int i = 0; i < NPEERS; i++)
        if (h->peers[i].opened && h->peers[i].id == id)
            return i;
    return -1;
}

/* One request off the inbound ring, checked against the model. */
static void
take_one(struct harness *h, struct gm_in *m)
{
    CHECK(gm_conn_thread(m->conn) == 0);
    if (m->kind == GM_IN_OPEN) {
        CHECK(m->blk == NULL);
        int i = -1;
        for (int k = 0; k < NPEERS; k++)
            if (h->peers[k].server_fd == m->u.open.fd)
                i = k;
        CHECK(i >= 0 && !h->peers[i].opened);
        CHECK(peer_of(h, m->conn) < 0);
        h->peers[i].opened = true;
        h->peers[i].id = m->conn;
        return;
    }
    int i = peer_of(h, m->conn);
    CHECK(i >= 0);
    struct peer *p = &h->peers[i];
    CHECK(!p->closed);
    if (m->kind == GM_IN_CLOSE) {
        CHECK(m->blk == NULL);
        p->closed = true;
        return;
    }
    /* a request: the next the model expects, with its bytes */
    CHECK(p->exp_head < p->nexp);
    const struct expect *e = &p->exp[p->exp_head++];
    CHECK(m->kind == e->kind);
    CHECK(m->len == e->len);
    CHECK(m->blk != NULL);
    CHECK(m->payload >= m->blk->data && (size_t)(m->payload - m->blk->data) + m->len <= m->blk->cap);
    CHECK(memcmp(m->payload, p->sent.p + e->off, e->len) == 0);
    if (m->flags & GM_IN_OWN_BLOCK)
        CHECK(m->kind != GM_IN_TEXT &&
              m->payload == m->blk->data + (m->kind == GM_IN_PACKET ? GM_HEADER_SIZE : 0));
    if (m->kind == GM_IN_PACKET) {
        CHECK(i != FE && m->type == e->type && m->len <= h->cfg.max_packet_size);
        struct gm_fields f;
        CHECK(gm_fields_split(m->type, p->sent.p + e->off, e->len, &f) == GM_PARSE_OK);
        CHECK(m->u.fields.count == f.count);
        for (unsigned k = 0; k < f.count; k++)
            CHECK(m->u.fields.start[k] == f.start[k] && m->u.fields.len[k] == f.len[k]);
    } else if (m->kind == GM_IN_TEXT) {
        CHECK(i != FE && m->type == GM_PKT_TEXT && ((m->flags & GM_IN_CRLF) != 0) == e->crlf);
        struct gm_admin_words w;
        gm_admin_split(p->sent.p + e->off, e->len, &w);
        CHECK(m->u.words.count == w.count && m->u.words.more == w.more);
        for (unsigned k = 0; k < w.count; k++)
            CHECK(m->u.words.start[k] == w.start[k] && m->u.words.len[k] == w.len[k]);
    } else {
        CHECK(m->kind == GM_IN_FRONTEND && i == FE);
        /* one request at a time: the last one has had its answer */
        CHECK(!p->fe_waiting);
        const struct gm_fe_req *a = &m->u.fe, *b = &e->fe;
        CHECK(a->kind == b->kind && a->flags == b->flags && a->minor == b->minor && a->path_off == b->path_off &&
              a->path_len == b->path_len && a->query_off == b->query_off && a->query_len == b->query_len &&
              a->unique_off == b->unique_off && a->unique_len == b->unique_len && a->body_off == b->body_off &&
              a->body_len == b->body_len);
        p->fe_waiting = true;
        p->fe_req = *a;
    }
    /* keep it a while, as a job keeps its data */
    if (h->nheld == HOLD_MAX)
        release_held(h, 0);
    h->held[h->nheld++] = (struct held){i, e->off, e->len, m->payload, m->blk};
    m->blk = NULL;
}

/* Takes up to n requests off the inbound ring (0: all), then wakes the
   thread if it waits for room, as the dispatcher does. */
static void
drain(struct harness *h, size_t n)
{
    struct gm_in *m;
    size_t taken = 0;
    while ((n == 0 || taken < n) && (m = gm_in_ring_peek(&h->ch.in))) {
        take_one(h, m);
        gm_block_unref(m->blk);
        gm_in_ring_consume(&h->ch.in);
        taken++;
    }
    gm_in_ring_release(&h->ch.in);
    if (atomic_load(&h->ch.io_wants_space) && atomic_exchange(&h->ch.io_wants_space, 0))
        gm_io_wake(h->io);
}

/* Queues one reply on the outbound ring: head[0..hl) inline, the rest of
   the bytes by reference in a block of their own. */
static void
out_push(struct harness *h, int i, uint8_t kind, uint8_t flags, const char *bytes, size_t hl, size_t len)
{
    struct gm_out o;
    memset(&o, 0, sizeof o);
    o.conn = h->peers[i].id;
    o.kind = kind;
    o.flags = flags;
    if (hl > len)
        hl = len;
    if (hl > GM_OUT_INLINE)
        hl = GM_OUT_INLINE;
    memcpy(o.head, bytes, hl);
    o.head_len = (uint8_t)hl;
    if (len > hl) {
        struct gm_block *b = gm_block_new(len - hl);
        CHECK(b != NULL);
        memcpy(b->data, bytes + hl, len - hl);
        o.body = (struct gm_slice){b, b->data, (uint32_t)(len - hl)};
    }
    CHECK(gm_out_ring_push(&h->ch.out, &o)); /* the thread drains it at each settle() */
    gm_out_ring_publish(&h->ch.out);
    gm_io_wake(h->io);
}

/* The front-end request being answered is done: by a whole response, or
   by the reply packet that ends its job.  A closing response ends the
   connection. */
static void
fe_answered(struct harness *h, bool closes)
{
    struct peer *p = &h->peers[FE];
    p->fe_waiting = false;
    if (closes) {
        /* requests pipelined behind it are never read */
        p->ended = true;
        p->nexp = p->exp_head;
    }
}

static void
answer_raw(struct harness *h)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
    out_push(h, FE, GM_OUT_SEND, GM_OUT_F_RAW, resp, 17, sizeof resp - 1);
    fe_answered(h, false);
}

/* Reply packets for the front-end's job, from the input: each one a type
   (of those a client gets), the data a worker sent, and where its bytes
   are cut into ring messages.  What the dispatcher itself writes is
   realistic: a job handle first, an ERROR's code (a worker's data goes to
   the body of the response, never to its headers).  Stops at the packet
   that ends the job. */
static size_t
answer_packets(struct harness *h, const uint8_t *in, size_t left)
{
    static const uint16_t types[8] = {GM_PKT_JOB_CREATED,   GM_PKT_WORK_DATA,      GM_PKT_WORK_STATUS,
                                      GM_PKT_WORK_WARNING,  GM_PKT_WORK_COMPLETE,  GM_PKT_WORK_FAIL,
                                      GM_PKT_WORK_EXCEPTION, GM_PKT_ERROR};
    struct peer *p = &h->peers[FE];
    size_t used = 0;
    char pkt[GM_HEADER_SIZE + 256];
    while (p->fe_waiting && left - used >= 3) {
        uint16_t type = types[in[used] & 7];
        bool cut_inline = in[used] & 8;
        size_t dlen = in[used + 1] % 64;
        size_t cut = in[used + 2] % (GM_HEADER_SIZE + 96 + 1);
        used += 3;
        if (dlen > left - used)
            dlen = left - used;
        static const char *const codes[2] = {"QUEUE_ERROR", "INVALID_FUNCTION_NAME"};
        const char *first = type == GM_PKT_ERROR ? codes[in[used - 3] >> 7] : "H:fuzz:1";
        size_t flen = strlen(first);
        memcpy(pkt + GM_HEADER_SIZE, first, flen);
        size_t len = flen;
        if (type != GM_PKT_JOB_CREATED) {
            pkt[GM_HEADER_SIZE + len++] = '\0';
            memcpy(pkt + GM_HEADER_SIZE + len, in + used, dlen);
            len += dlen;
        }
        used += dlen;
        gm_header_encode((unsigned char *)pkt, GM_MAGIC_RES, type, (uint32_t)len);
        size_t total = GM_HEADER_SIZE + len;
        if (cut > total)
            cut = total;
        /* the packet's bytes in one message, or cut in two */
        if (cut && cut < total) {
            out_push(h, FE, GM_OUT_SEND, 0, pkt, cut, cut);
            out_push(h, FE, GM_OUT_SEND, 0, pkt + cut, cut_inline ? total - cut : 0, total - cut);
        } else {
            out_push(h, FE, GM_OUT_SEND, 0, pkt, GM_HEADER_SIZE, total);
        }
        bool done = type == GM_PKT_WORK_COMPLETE || type == GM_PKT_WORK_FAIL || type == GM_PKT_WORK_EXCEPTION ||
                    type == GM_PKT_ERROR || (type == GM_PKT_JOB_CREATED && (p->fe_req.flags & GM_FE_BACKGROUND));
        if (done)
            fe_answered(h, !(p->fe_req.flags & GM_FE_KEEP_ALIVE));
        settle(h);
    }
    return used;
}

/* A NOOP with a body of n bytes to a Gearman peer: output that fills
   the socket and reaches the output limits. */
static void
send_bulk(struct harness *h, int i, size_t n, bool may_wait)
{
    if (n > BULK_MAX - h->bulk_total)
        n = BULK_MAX - h->bulk_total;
    h->bulk_total += n;
    char *pkt = malloc(GM_HEADER_SIZE + n);
    CHECK(pkt != NULL);
    gm_header_encode((unsigned char *)pkt, GM_MAGIC_RES, GM_PKT_NOOP, (uint32_t)n);
    memset(pkt + GM_HEADER_SIZE, 'n', n);
    out_push(h, i, GM_OUT_SEND, may_wait ? GM_OUT_F_MAY_WAIT : 0, pkt, GM_HEADER_SIZE, GM_HEADER_SIZE + n);
    free(pkt);
}

/* ------------------------------------------------------------------ */
/* Set-up, the program, the end                                        */
/* ------------------------------------------------------------------ */

/* The peers' byte buffers, kept from input to input (they grow to a
   megabyte, and allocating that anew each time costs more than the rest). */
static struct buf kept_sent[NPEERS], kept_out[NPEERS];

static void
harness_start(struct harness *h, uint8_t conf)
{
    static const uint32_t max_packet[4] = {64, 4096, 40000, 300000};
    static const size_t ring[4] = {4, 16, 64, 256};
    memset(h, 0, sizeof *h);
    gm_server_config_defaults(&h->cfg);
    h->cfg.max_packet_size = max_packet[conf & 3];
    h->cfg.busy_poll_us = 0;
    h->cfg.reply_batch_us = conf & 0x20 ? 1000 : 0;
    h->small_output = conf & 0x10;
    if (h->small_output) {
        /* any reply may then pass the limit and close its connection */
        h->cfg.max_output = 16384;
        h->cfg.output_soft = 4096;
    }
    h->cfg.frontend = &gm_http_frontend;
    CHECK(gm_channel_init(&h->ch, ring[(conf >> 2) & 3], 256) == 0);
    h->io = gm_io_new(0, &h->cfg, &h->ch, no_wake, NULL);
    CHECK(h->io != NULL);
    h->loop = gm_io_loop(h->io);
    for (int i = 0; i < NPEERS; i++) {
        struct peer *p = &h->peers[i];
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0 && fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
        p->server_fd = sv[0];
        p->sent = kept_sent[i];
        p->out = kept_out[i];
        p->out_limit_possible = h->small_output;
        p->fd = sv[1];
        if (i == FE) {
            p->fe_model = gm_http_frontend.conn_new(0);
            CHECK(p->fe_model != NULL);
        }
        struct gm_new_fd nf;
        memset(&nf, 0, sizeof nf);
        nf.fd = sv[0];
        nf.frontend = i == FE;
        nf.port = (uint16_t)(1000 + i);
        snprintf(nf.addr, sizeof nf.addr, "127.0.0.1");
        CHECK(gm_io_add_fd(h->io, &nf) == 0);
    }
    settle(h);
    drain(h, 0);
    for (int i = 0; i < NPEERS; i++)
        CHECK(h->peers[i].opened);
}

/* The end: every request answered, every reply read, until nothing moves
   (thousands of empty lines through a ring of 4 take many rounds); then
   what was complete has arrived, and closed is what had to close. */
static void
harness_finish(struct harness *h)
{
    for (;;) {
        size_t got = 0, before = 0;
        for (int i = 0; i < NPEERS; i++)
            before += h->peers[i].out.len + h->peers[i].exp_head + h->peers[i].closed;
        drain(h, 0);
        if (h->peers[FE].fe_waiting && !h->peers[FE].closed)
            answer_raw(h);
        settle(h);
        for (int i = 0; i < NPEERS; i++)
            peer_read(h, i);
        settle(h);
        drain(h, 0);
        for (int i = 0; i < NPEERS; i++)
            got += h->peers[i].out.len + h->peers[i].exp_head + h->peers[i].closed;
        if (got == before && !(h->peers[FE].fe_waiting && !h->peers[FE].closed))
            break;
    }
    for (int i = 0; i < NPEERS; i++) {
        struct peer *p = &h->peers[i];
        TRACE("peer %d: sent %zu framed %zu expected %zu taken %zu echo %zu/%zu out %zu/%zu ended %d shut %d "
              "closed %d out_close %d limit %d fe_waiting %d\n",
              i, p->sent.len, p->framed, p->nexp, p->exp_head, p->echo_head, p->necho, p->out_parsed,
              p->out.len, p->ended, p->write_shut, p->closed, p->out_close_sent, p->out_limit_possible,
              p->fe_waiting);
        if (trace > 0) {
            fprintf(stderr, "peer %d wrote to: ", i);
            for (size_t k = 0; k < p->out.len && k < 2000; k++) {
                unsigned char c = (unsigned char)p->out.p[k];
                fprintf(stderr, c >= 32 && c < 127 ? "%c" : "\\x%02x", c);
            }
            fprintf(stderr, "\n");
        }
    }
    for (int i = 0; i < NPEERS; i++) {
        struct peer *p = &h->peers[i];
        bool may_close = p->ended || p->write_shut || p->out_close_sent || p->out_limit_possible;
        if (p->closed)
            CHECK(may_close);
        if (p->ended || p->write_shut)
            CHECK(p->closed);
        if (!p->out_close_sent && !p->out_limit_possible)
            CHECK(p->exp_head == p->nexp);
        if (!p->closed) {
            CHECK(p->echo_head == p->necho);
            CHECK(p->out_parsed == p->out.len);
        }
    }
}

static void
harness_stop(struct harness *h)
{
    while (h->nheld)
        release_held(h, h->nheld - 1);
    gm_io_free(h->io);
    gm_channel_destroy(&h->ch);
    for (int i = 0; i < NPEERS; i++) {
        struct peer *p = &h->peers[i];
        if (p->fd >= 0)
            close(p->fd);
        p->sent.len = p->out.len = 0;
        kept_sent[i] = p->sent;
        kept_out[i] = p->out;
        free(p->exp);
        free(p->echo.p);
        if (p->fe_model)
            gm_http_frontend.conn_free(p->fe_model);
    }
}

/* A Gearman request header, or an HTTP request head, announcing n bytes. */
static void
write_head(struct harness *h, int i, uint8_t type, size_t n)
{
    char head[160];
    size_t len;
    if (i == FE) {
        len = (size_t)snprintf(head, sizeof head,
                               "POST /%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %zu\r\n\r\n",
                               type & 1 ? "f" : "api/status", n);
    } else {
        gm_header_encode((unsigned char *)head, type & 0x80 ? GM_MAGIC_RES : GM_MAGIC_REQ, type & 0x3f,
                         (uint32_t)n);
        len = GM_HEADER_SIZE;
    }
    peer_write(h, i, head, len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (trace < 0)
        trace = getenv("FUZZ_IO_TRACE") != NULL;
    gm_log_level = trace ? GM_LOG_DEBUG : -1;
    if (size < 1)
        return 0;
    struct harness h;
    harness_start(&h, data[0]);
    size_t pos = 1;
    /* kept from input to input, as allocating it costs more than the rest */
    static char *fill;
    static size_t fill_len;
    static int fill_byte = -1;
    while (pos < size) {
        uint8_t op = data[pos++];
        int i = (op & 3) == 3 ? 0 : op & 3;
        struct peer *p = &h.peers[i];
        size_t left = size - pos;
        TRACE("op %u peer %d (next byte %d)\n", op >> 4, i, left ? data[pos] : -1);
        switch (op >> 4) {
        case 0: case 1: case 2: case 3: case 4: case 5: { /* a chunk of the stream */
            size_t n = left ? data[pos++] : 0;
            left = size - pos;
            if (n > left)
                n = left;
            peer_write(&h, i, data + pos, n);
            pos += n;
            break;
        }
        case 6: { /* a run of one byte */
            if (left < 4)
                break;
            size_t n = (data[pos] | (size_t)data[pos + 1] << 8 | (size_t)data[pos + 2] << 16) % (FILL_MAX + 1);
            if (!fill) {
                fill = malloc(FILL_MAX);
                CHECK(fill != NULL);
            }
            /* not a run of empty lines: each would be a request */
            int b = data[pos + 3] == '\n' ? 'N' : data[pos + 3];
            if (b != fill_byte)
                fill_len = 0;
            if (n > fill_len) {
                memset(fill + fill_len, b, n - fill_len);
                fill_len = n;
            }
            fill_byte = b;
            pos += 4;
            peer_write(&h, i, fill, n);
            break;
        }
        case 7: { /* a head announcing a size */
            if (left < 4)
                break;
            size_t n = (data[pos + 1] | (size_t)data[pos + 2] << 8 | (size_t)data[pos + 3] << 16) % (FILL_MAX + 1);
            write_head(&h, i, data[pos], n);
            pos += 4;
            break;
        }
        case 8: /* the dispatcher takes requests */
            drain(&h, left ? data[pos++] % 8 : 0);
            break;
        case 9: /* the dispatcher answers the front-end's request */
            if (p != &h.peers[FE] || !p->fe_waiting || p->closed)
                break;
            if (left && (data[pos] & 1)) {
                pos++;
                pos += answer_packets(&h, data + pos, size - pos);
            } else {
                if (left)
                    pos++;
                answer_raw(&h);
            }
            break;
        case 10: /* a big reply to a Gearman peer */
            if (i != FE && left >= 2 && !p->closed) {
                send_bulk(&h, i, data[pos] | (size_t)data[pos + 1] << 8, op & 4);
                pos += 2;
            }
            break;
        case 11: /* the dispatcher closes a connection */
            if (!p->closed) {
                p->out_close_sent = true;
                out_push(&h, i, GM_OUT_CLOSE, 0, "", 0, 0);
            }
            break;
        case 12: /* the peer reads its replies */
            peer_read(&h, i);
            break;
        case 13: /* the peer sends EOF */
            if (p->fd >= 0 && !p->write_shut) {
                shutdown(p->fd, SHUT_WR);
                p->write_shut = true;
            }
            break;
        case 14: { /* a longer chunk */
            if (left < 2)
                break;
            size_t n = data[pos] | (size_t)data[pos + 1] << 8;
            pos += 2;
            left = size - pos;
            if (n > left)
                n = left;
            peer_write(&h, i, data + pos, n);
            pos += n;
            break;
        }
        default:
            break;
        }
        settle(&h);
    }
    harness_finish(&h);
    harness_stop(&h);
    return 0;
}
