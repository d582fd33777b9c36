/*
 * bench/gearman-bench.c: the project's load generator.  Raw sockets and the
 * server's own codec (no libgearman), all in one process: the client and
 * worker connections are spread over a few event-loop threads (--threads,
 * each an epoll loop over non-blocking sockets), so the generator spends its
 * CPU on jobs rather than on thread wake-ups; the main thread only sets up
 * connections, waits for the end of each phase and reports.
 *
 * Modes:
 *   fg     C clients keep K foreground jobs each in flight (JOB_CREATED
 *          matched by order, WORK_COMPLETE by handle); W workers echo the
 *          payload back; reports jobs/s and latency percentiles.
 *   bg     C clients keep K background submits each in flight for a fixed
 *          time (or count); then (unless --no-drain) W workers drain every
 *          job and the payloads are checked.
 *   drain  fill the queue with N background jobs, then W workers drain it.
 *   echo   C connections keep K ECHO_REQs each in flight.
 *   rss    queue N background jobs and report the server's RSS per job.
 *   conns  open N idle connections and report the server's RSS per connection.
 *   handshake  C threads each open a new connection, send one ECHO_REQ, read
 *          its ECHO_RES and close, over and over: new connections per
 *          second (with --tls, each a full TLS handshake: no session is
 *          resumed).
 * --idle-workers N adds N registered, sleeping workers (plain sockets held
 * by the main thread) before the measured phase.  --tls makes every
 * connection of fg, bg, drain, echo, rss and handshake TLS, through the
 * tools' TLS module (bin/client_tls.c): the server's certificate verified
 * against --tls-ca, a client certificate with --tls-certificate.
 * Every payload is checked and every job counted: a lost, duplicated or
 * corrupted job is an error (exit 1), not a number.  With --pid, the
 * server's CPU seconds and RSS are read from /proc for the measured span.
 *
 * Output: one line of key=value pairs (for bench/compare) plus a readable
 * summary on stderr.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bin/client_tls.h"
#include "libgearman-server/proto/protocol.h"

struct cfg {
    const char *host, *port, *mode;
    int clients, workers, depth, functions;
    size_t payload;
    bool unique, drain;
    double seconds;         /* time window (bg, fg, echo); 0 = use count */
    long count;             /* jobs per run when seconds == 0 */
    long pid;               /* server pid for /proc figures; 0 = none */
    int idle_workers;       /* extra registered, sleeping workers */
    int priority;           /* 0 high, 1 normal, 2 low */
    int threads;            /* event-loop threads */
    bool tls;               /* every connection TLS */
    struct gmc_tls_files tls_files; /* --tls-ca, --tls-certificate, --tls-key */
};

static struct cfg C = {"127.0.0.1", "4730", "fg", 8, 8, 16, 1, 64, false, true, 5.0, 0, 0, 0, 1, 1, false, {NULL, NULL, NULL}};

/* Shared state of one phase.  Loop threads publish progress once per loop
   iteration (a counter bumped per job would bounce its cache line between
   CPUs and slow the generator). */
static _Atomic long errors;
static _Atomic int clients_left;    /* clients of this phase still running */
static _Atomic long worker_jobs;    /* jobs finished by workers this phase */
static _Atomic long progress;       /* anything answered this phase */
static _Atomic int phase_over;      /* set by the main thread: loops return */
static _Atomic double clients_done_at;

static double
clock_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
now(void)
{
    return clock_seconds(CLOCK_MONOTONIC);
}

static void
fail(const char *what)
{
    fprintf(stderr, "gearman-bench: %s\n", what);
    atomic_fetch_add(&errors, 1);
}

/* The server's address, resolved once (main thread, before any loop). */
static struct sockaddr_storage server_addr;
static socklen_t server_addrlen;

static int
resolve_server(void)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(C.host, C.port, &hints, &res) != 0)
        return -1;
    memcpy(&server_addr, res->ai_addr, res->ai_addrlen);
    server_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int
connect_server(void)
{
    int fd = socket(server_addr.ss_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&server_addr, server_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* ------------------------------------------------------------------ */
/* TLS (--tls): bin/client_tls.c, which never waits; we poll           */
/* ------------------------------------------------------------------ */

/* A TLS context with the --tls-* files, or NULL after fail(). */
static struct gmc_tls *
tls_new(void)
{
    char err[512];
    struct gmc_tls *t = gmc_tls_new(&C.tls_files, err, sizeof err);
    if (!t)
        fail(err);
    return t;
}

/* Waits (at most until the deadline, a now() time) for what a TLS call
   asked for: 1 when the socket is ready, 0 on timeout. */
static int
tls_wait(int fd, ssize_t want, double deadline)
{
    for (;;) {
        int ms = (int)((deadline - now()) * 1000);
        if (ms <= 0)
            return 0;
        struct pollfd pfd = {fd, want == GMC_TLS_WANT_WRITE ? POLLOUT : POLLIN, 0};
        int r = poll(&pfd, 1, ms);
        if (r > 0 || (r < 0 && errno != EINTR))
            return 1;
    }
}

/* A full TLS handshake on the connected, non-blocking socket fd (t's
   previous session, if any, is ended).  Returns 0, or -1 after fail(). */
static int
tls_handshake(struct gmc_tls *t, int fd)
{
    char why[512];
    double deadline = now() + 10;
    if (gmc_tls_begin(t, fd, C.host, why, sizeof why) < 0) {
        fail(why);
        return -1;
    }
    for (;;) {
        int r = gmc_tls_handshake(t, why, sizeof why);
        if (r == 0)
            return 0;
        if (r == -1) {
            fail(why);
            return -1;
        }
        if (!tls_wait(fd, r, deadline)) {
            fail("no TLS handshake within 10 s");
            return -1;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Connection buffers (non-blocking sockets)                           */
/* ------------------------------------------------------------------ */

struct io {
    int fd;
    struct gmc_tls *tls;        /* --tls: the connection's session */
    char *in;
    size_t start, len, cap;     /* unparsed input is in[start, len) */
    char *out;
    size_t ooff, olen, ocap;    /* unsent output is out[ooff, olen) */
};

static int
io_open(struct io *io)
{
    memset(io, 0, sizeof *io);
    io->fd = connect_server();
    io->cap = 1 << 18;
    io->in = malloc(io->cap);
    io->ocap = 1 << 16;
    io->out = malloc(io->ocap);
    if (io->fd >= 0)
        fcntl(io->fd, F_SETFL, fcntl(io->fd, F_GETFL) | O_NONBLOCK);
    if (io->fd >= 0 && C.tls && (!(io->tls = tls_new()) || tls_handshake(io->tls, io->fd) < 0))
        return -1;
    return io->fd >= 0 && io->in && io->out ? 0 : -1;
}

static void
io_close(struct io *io)
{
    gmc_tls_free(io->tls);
    if (io->fd >= 0)
        close(io->fd);
    free(io->in);
    free(io->out);
}

static void
io_put(struct io *io, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    size_t need = GM_HEADER_SIZE + gm_payload_size(f, n);
    if (io->olen + need > io->ocap) {
        while (io->olen + need > io->ocap)
            io->ocap *= 2;
        io->out = realloc(io->out, io->ocap);
    }
    io->olen += gm_packet_encode(io->out + io->olen, GM_MAGIC_REQ, type, f, n);
}

/* Sends what the socket takes; 0 (output may remain: see io->olen), -1 error. */
static int
io_flush(struct io *io)
{
    while (io->ooff < io->olen) {
        char why[256];
        ssize_t w = io->tls ? gmc_tls_write(io->tls, io->out + io->ooff, io->olen - io->ooff, why, sizeof why)
                            : send(io->fd, io->out + io->ooff, io->olen - io->ooff, MSG_NOSIGNAL);
        if (io->tls && w < 0) {
            if (w == -1)
                return -1;
            return 0; /* the session waits for the socket */
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        io->ooff += (size_t)w;
    }
    io->ooff = io->olen = 0;
    return 0;
}

/* TLS: reads until the session holds nothing more (so that no byte waits
   in it while epoll, which sees only the socket, sleeps); what the socket
   still holds wakes epoll again.  1 bytes read, 0 nothing ready, -1 closed
   or error. */
static int
io_fill_tls(struct io *io)
{
    int got = 0;
    for (;;) {
        if (io->len == io->cap) {
            io->cap *= 2;
            io->in = realloc(io->in, io->cap);
        }
        char why[256];
        size_t room = io->cap - io->len;
        ssize_t r = gmc_tls_read(io->tls, io->in + io->len, room, why, sizeof why);
        if (r > 0) {
            io->len += (size_t)r;
            got = 1;
            if ((size_t)r < room && !gmc_tls_pending(io->tls))
                return 1;
            continue;
        }
        return r == -1 && !got ? -1 : got; /* bytes before an error are handled first */
    }
}

/* One recv into the input buffer: >0 bytes read, 0 nothing ready, -1 closed or error. */
static int
io_fill(struct io *io)
{
    size_t have = io->len - io->start;
    if (io->start && (have == 0 || io->cap - io->len < 65536)) {
        memmove(io->in, io->in + io->start, have);
        io->len = have;
        io->start = 0;
    }
    size_t want = io->cap;
    if (have >= GM_HEADER_SIZE) {
        struct gm_header h;
        gm_header_decode((unsigned char *)io->in + io->start, UINT32_MAX - 12, &h);
        if (GM_HEADER_SIZE + (size_t)h.size > want)
            want = (GM_HEADER_SIZE + (size_t)h.size) * 2;
    }
    if (io->len == io->cap && want == io->cap)
        want = io->cap * 2;
    if (want != io->cap) {
        io->in = realloc(io->in, want);
        io->cap = want;
    }
    if (io->tls)
        return io_fill_tls(io);
    for (;;) {
        ssize_t r = recv(io->fd, io->in + io->len, io->cap - io->len, 0);
        if (r > 0) {
            io->len += (size_t)r;
            return 1;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1;
    }
}

struct pkt {
    uint32_t type, size;
    const char *p;
    struct gm_fields f;
};

/* The next whole packet already buffered: 1, or 0 when there is none. */
static int
io_next(struct io *io, struct pkt *k)
{
    size_t have = io->len - io->start;
    if (have < GM_HEADER_SIZE)
        return 0;
    struct gm_header h;
    gm_header_decode((unsigned char *)io->in + io->start, UINT32_MAX - 12, &h);
    size_t total = GM_HEADER_SIZE + h.size;
    if (have < total)
        return 0;
    k->type = h.type;
    k->size = h.size;
    k->p = io->in + io->start + GM_HEADER_SIZE;
    gm_fields_split(h.type, k->p, h.size, &k->f);
    io->start += total;
    return 1;
}

static const char *
field(const struct pkt *k, int i, size_t *len)
{
    *len = k->f.len[i];
    return k->p + k->f.start[i];
}

/* ------------------------------------------------------------------ */
/* Payloads: "<client>:<seq>:" then filler derived from both          */
/* ------------------------------------------------------------------ */

/* The payload of job seq of a client: "<client>:<seq>:" and then letters
   a..z running on from (client * 7 + seq * 13 + offset) % 26, up to
   C.payload bytes.  buf holds C.payload + 64 bytes. */
static size_t
make_payload(char *buf, int client, long seq)
{
    size_t n = gm_fmt_u64(buf, (uint64_t)client);
    buf[n++] = ':';
    n += gm_fmt_u64(buf + n, (uint64_t)seq);
    buf[n++] = ':';
    size_t len = C.payload > n ? C.payload : n;
    int letter = (int)(((long)client * 7 + seq * 13 + (long)n) % 26);
    for (size_t i = n; i < len; i++) {
        buf[i] = (char)('a' + letter);
        if (++letter == 26)
            letter = 0;
    }
    return len;
}

/* Reads "<client>:<seq>:" off a payload and checks the rest is that job's. */
static bool
check_payload(const char *p, size_t len, int *client, long *seq)
{
    long v[2] = {0, 0};
    size_t i = 0;
    for (int k = 0; k < 2; k++) {
        size_t digits = 0;
        while (i < len && p[i] >= '0' && p[i] <= '9' && digits < 18) {
            v[k] = v[k] * 10 + (p[i++] - '0');
            digits++;
        }
        if (!digits || i >= len || p[i++] != ':')
            return false;
    }
    *client = (int)v[0];
    *seq = v[1];
    if (len != (C.payload > i ? C.payload : i))
        return false;
    char tmp[1 << 16];
    char *b = len + 64 <= sizeof tmp ? tmp : malloc(len + 64);
    bool ok = make_payload(b, *client, *seq) == len && memcmp(b, p, len) == 0;
    if (b != tmp)
        free(b);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Latencies                                                           */
/* ------------------------------------------------------------------ */

struct lat {
    double *v;
    size_t n, cap;
};

static void
lat_add(struct lat *l, double x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = x;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ */
/* Connections and what each role does with a packet                  */
/* ------------------------------------------------------------------ */

enum role { ROLE_WORKER, ROLE_CLIENT_FG, ROLE_CLIENT_BG, ROLE_CLIENT_ECHO };

/* A foreground job between JOB_CREATED and WORK_COMPLETE. */
struct inflight {
    char handle[GM_HANDLE_MAX];
    uint8_t hlen;
    long seq;
    double t0;
    bool used;
};

struct conn {
    struct io io;
    enum role role;
    int id;
    bool dead;          /* closed by the server or failed: no longer polled */
    bool out_armed;     /* EPOLLOUT is registered (output is waiting) */
    bool finished;      /* client: nothing more to send, nothing in flight */
    long jobs;          /* worker: jobs done */
    long done, sent, inflight;      /* client */
    struct lat lat;
    char *buf;          /* payload scratch, C.payload + 64 bytes */
    /* submits (and ECHOs) waiting for their answer, in order: seq and time */
    long *fifo_seq;
    double *fifo_t;
    size_t fh, fl;
    /* fg: handle -> job, open addressing */
    struct inflight *tab;
    uint32_t slots;
    long expect;        /* echo: next sequence number */
};

static double t_end;
static long per_client_count;

static void
fn_name(char *buf, size_t len, int i)
{
    snprintf(buf, len, "bench%d", i);
}

static bool
more_to_send(const struct conn *c)
{
    if (C.seconds > 0)
        return now() < t_end;
    return c->sent < per_client_count;
}

static uint32_t
submit_type(bool bg)
{
    static const uint32_t fg_t[3] = {GM_PKT_SUBMIT_JOB_HIGH, GM_PKT_SUBMIT_JOB, GM_PKT_SUBMIT_JOB_LOW};
    static const uint32_t bg_t[3] = {GM_PKT_SUBMIT_JOB_HIGH_BG, GM_PKT_SUBMIT_JOB_BG, GM_PKT_SUBMIT_JOB_LOW_BG};
    return bg ? bg_t[C.priority] : fg_t[C.priority];
}

static void
fifo_push(struct conn *c)
{
    size_t at = (c->fh + c->fl) % (size_t)C.depth;
    c->fifo_seq[at] = c->sent;
    c->fifo_t[at] = now();
    c->fl++;
}

static void
fifo_pop(struct conn *c)
{
    c->fh = (c->fh + 1) % (size_t)C.depth;
    c->fl--;
}

/* Queues the client's next request (a submit or an ECHO_REQ). */
static void
send_next(struct conn *c)
{
    fifo_push(c);
    size_t len = make_payload(c->buf, c->id, c->sent);
    if (c->role == ROLE_CLIENT_ECHO) {
        struct gm_field_ref f = {c->buf, len};
        io_put(&c->io, GM_PKT_ECHO_REQ, &f, 1);
    } else {
        char fn[32], uq[48];
        fn_name(fn, sizeof fn, (int)(c->sent % C.functions));
        int ul = C.unique ? snprintf(uq, sizeof uq, "u-%d-%ld", c->id, c->sent) : 0;
        struct gm_field_ref f[3] = {{fn, strlen(fn)}, {uq, (size_t)ul}, {c->buf, len}};
        io_put(&c->io, submit_type(c->role == ROLE_CLIENT_BG), f, 3);
    }
    c->sent++;
    c->inflight++;
}

/* One request answered: send another while the run lasts; a client with
   nothing left in flight is finished. */
static void
client_answered(struct conn *c)
{
    c->inflight--;
    if (more_to_send(c))
        send_next(c);
    if (c->inflight == 0 && !c->finished) {
        c->finished = true;
        if (atomic_fetch_sub(&clients_left, 1) == 1)
            atomic_store(&clients_done_at, now());
    }
}

static uint32_t
hhash(const char *h, size_t n)
{
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < n; i++)
        x = (x ^ (unsigned char)h[i]) * 16777619u;
    return x;
}

static void
fg_created(struct conn *c, const struct pkt *k)
{
    if (!c->fl) {
        fail("JOB_CREATED without a submit");
        return;
    }
    size_t hl;
    const char *h = field(k, 0, &hl);
    if (hl >= GM_HANDLE_MAX) {
        fail("job handle too long");
        return;
    }
    uint32_t pos = hhash(h, hl) & (c->slots - 1);
    while (c->tab[pos].used)
        pos = (pos + 1) & (c->slots - 1);
    struct inflight *e = &c->tab[pos];
    e->used = true;
    memcpy(e->handle, h, hl);
    e->hlen = (uint8_t)hl;
    e->seq = c->fifo_seq[c->fh];
    e->t0 = c->fifo_t[c->fh];
    fifo_pop(c);
}

static void
fg_complete(struct conn *c, const struct pkt *k)
{
    size_t hl, dl;
    const char *h = field(k, 0, &hl);
    const char *d = field(k, 1, &dl);
    uint32_t mask = c->slots - 1, pos = hhash(h, hl) & mask;
    while (c->tab[pos].used && !(c->tab[pos].hlen == hl && memcmp(c->tab[pos].handle, h, hl) == 0))
        pos = (pos + 1) & mask;
    if (!c->tab[pos].used) {
        fail("WORK_COMPLETE for an unknown or finished handle (duplicate?)");
        return;
    }
    int cid;
    long seq;
    if (!check_payload(d, dl, &cid, &seq) || cid != c->id || seq != c->tab[pos].seq)
        fail("corrupted result payload");
    lat_add(&c->lat, now() - c->tab[pos].t0);
    /* delete with backward shift, so later probes still find their keys */
    c->tab[pos].used = false;
    for (uint32_t j = pos;;) {
        j = (j + 1) & mask;
        if (!c->tab[j].used)
            break;
        uint32_t want = hhash(c->tab[j].handle, c->tab[j].hlen) & mask;
        if ((j > pos && (want <= pos || want > j)) || (j < pos && want <= pos && want > j)) {
            c->tab[pos] = c->tab[j];
            c->tab[j].used = false;
            pos = j;
        }
    }
    c->done++;
    client_answered(c);
}

/* What a connection does with one packet from the server. */
static void
on_packet(struct conn *c, const struct pkt *k)
{
    switch (c->role) {
    case ROLE_WORKER:
        if (k->type == GM_PKT_JOB_ASSIGN) {
            size_t hl, dl;
            const char *h = field(k, 0, &hl);
            const char *d = field(k, 2, &dl);
            struct gm_field_ref f[2] = {{h, hl}, {d, dl}}; /* echo the payload back */
            io_put(&c->io, GM_PKT_WORK_COMPLETE, f, 2);
            io_put(&c->io, GM_PKT_GRAB_JOB, NULL, 0);
            c->jobs++;
        } else if (k->type == GM_PKT_NO_JOB) {
            io_put(&c->io, GM_PKT_PRE_SLEEP, NULL, 0);
        } else if (k->type == GM_PKT_NOOP) {
            io_put(&c->io, GM_PKT_GRAB_JOB, NULL, 0);
        } else if (k->type == GM_PKT_ERROR) {
            fail("worker got an ERROR");
        }
        return;
    case ROLE_CLIENT_FG:
        if (k->type == GM_PKT_JOB_CREATED) {
            fg_created(c, k);
        } else if (k->type == GM_PKT_WORK_COMPLETE) {
            fg_complete(c, k);
        } else if (k->type == GM_PKT_WORK_FAIL || k->type == GM_PKT_ERROR) {
            fail(k->type == GM_PKT_ERROR ? "client got an ERROR" : "a job failed");
            client_answered(c);
        }
        return;
    case ROLE_CLIENT_BG:
        if (!c->fl) {
            fail("an answer without a submit");
            return;
        }
        if (k->type == GM_PKT_JOB_CREATED) {
            lat_add(&c->lat, now() - c->fifo_t[c->fh]);
            c->done++;
        } else {
            fail(k->type == GM_PKT_ERROR ? "background submit refused" : "unexpected answer to a submit");
        }
        fifo_pop(c);
        client_answered(c);
        return;
    case ROLE_CLIENT_ECHO: {
        int cid;
        long seq;
        if (!c->fl || k->type != GM_PKT_ECHO_RES || !check_payload(k->p, k->size, &cid, &seq) || cid != c->id ||
            seq != c->expect)
            fail("bad ECHO_RES");
        c->expect++;
        if (c->fl) {
            lat_add(&c->lat, now() - c->fifo_t[c->fh]);
            fifo_pop(c);
        }
        c->done++;
        client_answered(c);
        return;
    }
    }
}

/* Opens a connection and queues what it sends first (written when its loop starts). */
static struct conn *
conn_new(enum role role, int id)
{
    struct conn *c = calloc(1, sizeof *c);
    c->role = role;
    c->id = id;
    if (io_open(&c->io) < 0) {
        fail(role == ROLE_WORKER ? "worker cannot connect" : "client cannot connect");
        c->dead = true;
        c->finished = true;
        return c;
    }
    char name[32];
    if (role == ROLE_WORKER) {
        for (int i = 0; i < C.functions; i++) {
            fn_name(name, sizeof name, i);
            struct gm_field_ref f = {name, strlen(name)};
            io_put(&c->io, GM_PKT_CAN_DO, &f, 1);
        }
        io_put(&c->io, GM_PKT_GRAB_JOB, NULL, 0);
        return c;
    }
    c->buf = malloc(C.payload + 64);
    c->fifo_seq = calloc((size_t)C.depth, sizeof *c->fifo_seq);
    c->fifo_t = calloc((size_t)C.depth, sizeof *c->fifo_t);
    if (role == ROLE_CLIENT_FG) {
        c->slots = 1;
        while (c->slots < (uint32_t)C.depth * 4)
            c->slots <<= 1;
        c->tab = calloc(c->slots, sizeof *c->tab);
    }
    return c;
}

/* A client's first K requests, queued as its phase begins. */
static void
conn_begin(struct conn *c)
{
    if (c->role == ROLE_WORKER)
        return;
    if (c->dead) { /* could not connect (already an error): nothing to wait for */
        atomic_fetch_sub(&clients_left, 1);
        return;
    }
    while (c->inflight < C.depth && more_to_send(c))
        send_next(c);
    if (c->inflight == 0) {
        c->finished = true;
        atomic_fetch_sub(&clients_left, 1);
    }
}

static void
conn_free(struct conn *c)
{
    io_close(&c->io);
    free(c->lat.v);
    free(c->buf);
    free(c->fifo_seq);
    free(c->fifo_t);
    free(c->tab);
    free(c);
}

/* ------------------------------------------------------------------ */
/* Event loops and phases                                              */
/* ------------------------------------------------------------------ */

static long drain_target = -1;      /* worker jobs that end a drain; -1: none */
static _Atomic double drained_at;

struct loop {
    pthread_t thread;
    struct conn **conns;
    int n;
};

/* The server closed the connection, or a write failed. */
static void
conn_lost(int epfd, struct conn *c)
{
    if (!atomic_load(&phase_over))
        fail(c->role == ROLE_WORKER ? "worker lost its connection" : "client lost its connection");
    c->dead = true;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->io.fd, NULL);
    if (c->role != ROLE_WORKER && !c->finished) {
        c->finished = true;
        if (atomic_fetch_sub(&clients_left, 1) == 1)
            atomic_store(&clients_done_at, now());
    }
}

/* Writes queued output; waits for EPOLLOUT only while some remains. */
static void
conn_flush(int epfd, struct conn *c)
{
    if (c->io.olen && io_flush(&c->io) < 0) {
        conn_lost(epfd, c);
        return;
    }
    bool want_out = c->io.olen > 0;
    if (want_out != c->out_armed) {
        struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->io.fd, &ev);
        c->out_armed = want_out;
    }
}

/* Adds what one loop iteration finished to the phase's shared counters. */
static void
publish(long jobs, long answered)
{
    if (jobs) {
        long before = atomic_fetch_add(&worker_jobs, jobs);
        if (drain_target >= 0 && before < drain_target && before + jobs >= drain_target)
            atomic_store(&drained_at, now());
    }
    if (answered || jobs)
        atomic_fetch_add(&progress, answered + jobs);
}

/* One event-loop thread: reads every ready connection, hands each whole
   packet to its role, then writes what that queued, until the phase ends. */
static void *
loop_main(void *arg)
{
    struct loop *L = arg;
    int epfd = epoll_create1(0);
    for (int i = 0; i < L->n; i++) {
        struct conn *c = L->conns[i];
        if (c->dead)
            continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->io.fd, &ev);
        conn_flush(epfd, c);
    }
    struct epoll_event evs[256];
    while (!atomic_load(&phase_over)) {
        int n = epoll_wait(epfd, evs, 256, 10);
        long jobs = 0, answered = 0;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (io_fill(&c->io) < 0) {
                    conn_lost(epfd, c);
                    continue;
                }
                long jobs0 = c->jobs, done0 = c->done;
                struct pkt k;
                while (io_next(&c->io, &k))
                    on_packet(c, &k);
                jobs += c->jobs - jobs0;
                answered += c->done - done0;
            }
            conn_flush(epfd, c);
        }
        publish(jobs, answered);
    }
    close(epfd);
    return NULL;
}

static bool
clients_finished(void)
{
    return atomic_load(&clients_left) <= 0;
}

static bool
drain_finished(void)
{
    return atomic_load(&worker_jobs) >= drain_target;
}

/* Runs the connections on C.threads event loops until finished() holds, or
   until no answer has come for 10 s after the time window (jobs are missing). */
static void
run_phase(struct conn **conns, int n, bool (*finished)(void))
{
    int nl = C.threads < n ? C.threads : n;
    if (nl < 1)
        return;
    struct loop *loops = calloc((size_t)nl, sizeof *loops);
    for (int i = 0; i < nl; i++)
        loops[i].conns = calloc((size_t)n, sizeof(struct conn *));
    for (int i = 0; i < n; i++) {
        struct loop *L = &loops[i % nl];
        L->conns[L->n++] = conns[i];
    }
    atomic_store(&phase_over, 0);
    for (int i = 0; i < nl; i++)
        pthread_create(&loops[i].thread, NULL, loop_main, &loops[i]);
    long last = -1;
    double last_change = now();
    while (!finished()) {
        usleep(2000);
        long p = atomic_load(&progress);
        double t = now();
        if (p != last) {
            last = p;
            last_change = t;
        } else if (t - last_change > 10 && (C.seconds <= 0 || t > t_end)) {
            fail("stalled: no answer for 10 s, jobs are missing");
            break;
        }
    }
    atomic_store(&phase_over, 1);
    for (int i = 0; i < nl; i++) {
        pthread_join(loops[i].thread, NULL);
        free(loops[i].conns);
    }
    free(loops);
}

/* Opens n registered, sleeping workers (CAN_DO, PRE_SLEEP) on plain
   sockets; an ECHO answered on each proves the server has taken them in. */
static int *
open_idle_workers(int n)
{
    int *fds = calloc((size_t)n + 1, sizeof *fds);
    char out[128], name[32];
    for (int i = 0; i < n; i++) {
        fds[i] = connect_server();
        if (fds[i] < 0) {
            fail("cannot open an idle worker (raise ulimit -n?)");
            continue;
        }
        struct timeval tv = {10, 0}; /* a server that never answers is an error, not a hang */
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        snprintf(name, sizeof name, "idle%d", i % 50);
        struct gm_field_ref f = {name, strlen(name)}, x = {"x", 1};
        size_t len = gm_packet_encode(out, GM_MAGIC_REQ, GM_PKT_CAN_DO, &f, 1);
        len += gm_packet_encode(out + len, GM_MAGIC_REQ, GM_PKT_PRE_SLEEP, NULL, 0);
        len += gm_packet_encode(out + len, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, &x, 1);
        if (send(fds[i], out, len, MSG_NOSIGNAL) != (ssize_t)len)
            fail("idle worker: send failed");
    }
    for (int i = 0; i < n; i++) {
        char r[GM_HEADER_SIZE + 1];
        size_t got = 0;
        while (fds[i] >= 0 && got < sizeof r) {
            ssize_t k = recv(fds[i], r + got, sizeof r - got, 0);
            if (k <= 0) {
                fail("an idle worker was not answered");
                break;
            }
            got += (size_t)k;
        }
    }
    return fds;
}

/* ------------------------------------------------------------------ */
/* Server figures from /proc                                           */
/* ------------------------------------------------------------------ */

/* CPU seconds this process (the load generator) has used. */
static double
self_cpu(void)
{
    return clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
}

static double
proc_cpu(long pid)
{
    if (!pid)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long
proc_rss_kb(long pid)
{
    if (!pid)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* Opens --count idle connections (each proves it is served with one
   ECHO), then reports the server's RSS growth per connection. */
static int
idle_connections(void)
{
    long n = C.count ? C.count : 1000;
    int *fds = calloc((size_t)n, sizeof *fds);
    long rss0 = proc_rss_kb(C.pid);
    long open_ok = 0;
    for (long i = 0; i < n; i++) {
        fds[i] = connect_server();
        if (fds[i] < 0) {
            fail("cannot open another connection (raise ulimit -n?)");
            break;
        }
        open_ok++;
    }
    static const char echo[] = "\0REQ\0\0\0\x10\0\0\0\x01x";
    for (long i = 0; i < open_ok; i++)
        if (send(fds[i], echo, sizeof echo - 1, MSG_NOSIGNAL) < 0)
            fail("send");
    for (long i = 0; i < open_ok; i++) {
        char r[13];
        size_t got = 0;
        while (got < sizeof r) {
            ssize_t k = recv(fds[i], r + got, sizeof r - got, 0);
            if (k <= 0) {
                fail("an idle connection was not answered");
                break;
            }
            got += (size_t)k;
        }
    }
    usleep(200000);
    long rss1 = proc_rss_kb(C.pid);
    for (long i = 0; i < open_ok; i++)
        close(fds[i]);
    free(fds);
    double per = open_ok ? (rss1 - rss0) * 1024.0 / open_ok : 0;
    printf("mode=conns ops=%ld secs=0 rate=0 rss_before_kb=%ld rss_kb=%ld rss_per_conn_b=%.0f errors=%ld\n", open_ok,
           rss0, rss1, per, (long)atomic_load(&errors));
    fprintf(stderr, "conns: %ld idle connections: %.0f bytes of server RSS each\n", open_ok, per);
    return atomic_load(&errors) ? 1 : 0;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: gearman-bench [--host H] [--port P] --mode fg|bg|drain|echo|rss|conns|handshake\n"
            "       [--clients C] [--workers W] [--depth K] [--payload BYTES] [--functions N] [--unique]\n"
            "       [--seconds S | --count N] [--pid SERVER_PID] [--idle-workers N] [--no-drain]\n"
            "       [--priority high|normal|low] [--threads N]\n"
            "       [--tls --tls-ca FILE [--tls-certificate FILE [--tls-key FILE]]]\n");
}

/* Reads the options into C.  Returns 0, 1 when --help was asked for (exit
   0), or -1 for a bad option or value (exit 2); both print the usage. */
static int
parse_options(int argc, char **argv)
{
    static struct option opts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"mode", 1, 0, 'm'}, {"clients", 1, 0, 'c'},
        {"workers", 1, 0, 'w'}, {"depth", 1, 0, 'k'}, {"payload", 1, 0, 's'}, {"functions", 1, 0, 'f'},
        {"unique", 0, 0, 'u'}, {"seconds", 1, 0, 't'}, {"count", 1, 0, 'n'}, {"pid", 1, 0, 'P'},
        {"idle-workers", 1, 0, 'i'}, {"no-drain", 0, 0, 'D'}, {"priority", 1, 0, 'r'}, {"threads", 1, 0, 'T'},
        {"tls", 0, 0, 'S'}, {"tls-ca", 1, 0, 'A'}, {"tls-certificate", 1, 0, 'C'}, {"tls-key", 1, 0, 'K'},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'H': C.host = optarg; break;
        case 'p': C.port = optarg; break;
        case 'm': C.mode = optarg; break;
        case 'c': C.clients = atoi(optarg); break;
        case 'w': C.workers = atoi(optarg); break;
        case 'k': C.depth = atoi(optarg); break;
        case 's': C.payload = (size_t)atol(optarg); break;
        case 'f': C.functions = atoi(optarg); break;
        case 'u': C.unique = true; break;
        case 't': C.seconds = atof(optarg); break;
        case 'n': C.count = atol(optarg); C.seconds = 0; break;
        case 'P': C.pid = atol(optarg); break;
        case 'i': C.idle_workers = atoi(optarg); break;
        case 'D': C.drain = false; break;
        case 'r': C.priority = strcmp(optarg, "high") == 0 ? 0 : strcmp(optarg, "low") == 0 ? 2 : 1; break;
        case 'T': C.threads = atoi(optarg); break;
        case 'S': C.tls = true; break;
        case 'A': C.tls_files.ca_file = optarg; break;
        case 'C': C.tls_files.certificate = optarg; break;
        case 'K': C.tls_files.key = optarg; break;
        default: usage(); return ch == 'h' ? 1 : -1;
        }
    }
    if (C.clients < 1 || C.depth < 1 || C.functions < 1 || C.workers < 0 || C.threads < 1 || C.idle_workers < 0) {
        usage();
        return -1;
    }
    if (C.tls && (!C.tls_files.ca_file || C.idle_workers || strcmp(C.mode, "conns") == 0)) {
        fprintf(stderr, "gearman-bench: --tls needs --tls-ca, and works with neither --idle-workers nor conns\n");
        return -1;
    }
    return 0;
}

/* What the measured phase saw, for the report. */
struct result {
    long done;              /* jobs (or echoes) the clients saw answered */
    struct lat all;         /* their latencies, in seconds */
    double span, cpu;       /* the measured span, and the server's CPU seconds in it */
    double self_cpu_s;      /* the generator's CPU seconds in it */
    long rss_before, rss_loaded;
    long drained;           /* jobs the drain phase's workers took */
    double drain_rate;
};

/* Phase 1: the clients (and, for fg, the workers) run until every client
   is finished; fills in everything in *res but the drain figures. */
static void
run_clients(bool fg, bool echo, struct result *res)
{
    int nw = fg ? C.workers : 0, n = nw + C.clients;
    struct conn **conns = calloc((size_t)n, sizeof *conns);
    for (int i = 0; i < nw; i++)
        conns[i] = conn_new(ROLE_WORKER, i);
    enum role client_role = fg ? ROLE_CLIENT_FG : echo ? ROLE_CLIENT_ECHO : ROLE_CLIENT_BG;
    for (int i = 0; i < C.clients; i++)
        conns[nw + i] = conn_new(client_role, i);
    res->rss_before = proc_rss_kb(C.pid);
    atomic_store(&clients_left, C.clients);
    double cpu0 = proc_cpu(C.pid), t0 = now(), self0 = self_cpu();
    t_end = t0 + C.seconds;
    for (int i = nw; i < n; i++)
        conn_begin(conns[i]);
    run_phase(conns, n, clients_finished);
    double t1 = atomic_load(&clients_done_at);
    if (t1 <= t0)
        t1 = now();
    double cpu1 = proc_cpu(C.pid);
    res->self_cpu_s = self_cpu() - self0;
    res->rss_loaded = proc_rss_kb(C.pid);
    for (int i = nw; i < n; i++) {
        res->done += conns[i]->done;
        for (size_t k = 0; k < conns[i]->lat.n; k++)
            lat_add(&res->all, conns[i]->lat.v[k]);
    }
    for (int i = 0; i < n; i++)
        conn_free(conns[i]);
    free(conns);
    res->span = t1 - t0;
    res->cpu = cpu1 - cpu0;
}

/* Phase 2 (bg, drain, rss): workers drain every acknowledged job, checking
   each; in drain mode this phase is the one measured. */
static void
run_drain(bool drain, struct result *res)
{
    int nd = C.workers ? C.workers : 1;
    struct conn **ws = calloc((size_t)nd, sizeof *ws);
    for (int i = 0; i < nd; i++)
        ws[i] = conn_new(ROLE_WORKER, i);
    atomic_store(&worker_jobs, 0);
    drain_target = res->done;
    double d0 = now(), dc0 = proc_cpu(C.pid), ds0 = self_cpu();
    run_phase(ws, nd, drain_finished);
    double d1 = atomic_load(&drained_at);
    if (d1 <= d0)
        d1 = now();
    res->drained = atomic_load(&worker_jobs);
    res->drain_rate = res->drained / (d1 - d0);
    if (drain) {
        res->span = d1 - d0;
        res->cpu = proc_cpu(C.pid) - dc0;
        res->self_cpu_s = self_cpu() - ds0;
    }
    if (res->drained != res->done)
        fail("drained a different number of jobs than were acknowledged");
    for (int i = 0; i < nd; i++)
        conn_free(ws[i]);
    free(ws);
}

/* ------------------------------------------------------------------ */
/* New connections (handshake mode)                                    */
/* ------------------------------------------------------------------ */

/* One connecting thread and what it saw. */
struct connector {
    pthread_t thread;
    int id;
    long done;
    struct lat lat;
};

/* Sends all of p on the non-blocking socket fd (through its TLS session t
   when there is one) before the deadline.  Returns 0, or -1 after fail(). */
static int
send_all(int fd, struct gmc_tls *t, const char *p, size_t len, double deadline)
{
    while (len) {
        char why[256];
        ssize_t w = t ? gmc_tls_write(t, p, len, why, sizeof why) : send(fd, p, len, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        if (t ? w == -1 : (errno != EAGAIN && errno != EINTR)) {
            fail(t ? why : strerror(errno));
            return -1;
        }
        if (!tls_wait(fd, t ? w : GMC_TLS_WANT_WRITE, deadline)) {
            fail("send: no progress within 10 s");
            return -1;
        }
    }
    return 0;
}

/* Reads exactly len bytes into b, as send_all() writes.  0, or -1 after fail(). */
static int
recv_exact(int fd, struct gmc_tls *t, char *b, size_t len, double deadline)
{
    while (len) {
        char why[256];
        ssize_t r = t ? gmc_tls_read(t, b, len, why, sizeof why) : recv(fd, b, len, 0);
        if (r > 0) {
            b += r;
            len -= (size_t)r;
            continue;
        }
        if (t ? r == -1 : (r == 0 || (errno != EAGAIN && errno != EINTR))) {
            fail(t ? why : r == 0 ? "the server closed the connection" : strerror(errno));
            return -1;
        }
        if (!tls_wait(fd, t ? r : GMC_TLS_WANT_READ, deadline)) {
            fail("no ECHO_RES within 10 s");
            return -1;
        }
    }
    return 0;
}

/* A connecting thread: new connection, (TLS handshake,) one ECHO checked
   byte for byte, close; again until the window or its count is over. */
static void *
connector_main(void *arg)
{
    struct connector *k = arg;
    struct gmc_tls *t = C.tls ? tls_new() : NULL; /* one context, a new session each time */
    size_t cap = C.payload + 64;
    char *payload = malloc(cap), *req = malloc(cap + GM_HEADER_SIZE), *res = malloc(cap + GM_HEADER_SIZE);
    while ((!C.tls || t) && (C.seconds > 0 ? now() < t_end : k->done < per_client_count)) {
        double t0 = now(), deadline = t0 + 10;
        int fd = connect_server();
        if (fd < 0) {
            fail("cannot connect");
            break;
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        size_t len = make_payload(payload, k->id, k->done);
        struct gm_field_ref f = {payload, len};
        size_t n = gm_packet_encode(req, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, &f, 1);
        bool ok = (!t || tls_handshake(t, fd) == 0) && send_all(fd, t, req, n, deadline) == 0 &&
                  recv_exact(fd, t, res, n, deadline) == 0;
        if (ok) {
            struct gm_header h;
            if (gm_header_decode((unsigned char *)res, UINT32_MAX - GM_HEADER_SIZE, &h) != GM_PARSE_OK ||
                h.magic != GM_MAGIC_RES || h.type != GM_PKT_ECHO_RES || h.size != len ||
                memcmp(res + GM_HEADER_SIZE, payload, len) != 0) {
                fail("bad ECHO_RES");
                ok = false;
            }
        }
        if (t)
            gmc_tls_end(t);
        close(fd);
        if (!ok)
            break;
        lat_add(&k->lat, now() - t0);
        k->done++;
    }
    gmc_tls_free(t);
    free(payload);
    free(req);
    free(res);
    return NULL;
}

/* handshake mode: C connecting threads for the window (or count). */
static void
run_connectors(struct result *res)
{
    struct connector *ks = calloc((size_t)C.clients, sizeof *ks);
    res->rss_before = proc_rss_kb(C.pid);
    double cpu0 = proc_cpu(C.pid), t0 = now(), self0 = self_cpu();
    t_end = t0 + C.seconds;
    for (int i = 0; i < C.clients; i++) {
        ks[i].id = i;
        pthread_create(&ks[i].thread, NULL, connector_main, &ks[i]);
    }
    for (int i = 0; i < C.clients; i++)
        pthread_join(ks[i].thread, NULL);
    res->span = now() - t0;
    res->cpu = proc_cpu(C.pid) - cpu0;
    res->self_cpu_s = self_cpu() - self0;
    res->rss_loaded = proc_rss_kb(C.pid);
    for (int i = 0; i < C.clients; i++) {
        res->done += ks[i].done;
        for (size_t j = 0; j < ks[i].lat.n; j++)
            lat_add(&res->all, ks[i].lat.v[j]);
        free(ks[i].lat.v);
    }
    free(ks);
}

/* Prints the key=value line on stdout and the summary on stderr. */
static void
report(bool drain, bool rss, struct result *res)
{
    struct lat *all = &res->all;
    qsort(all->v, all->n, sizeof *all->v, cmp_double);
    double p50 = all->n ? all->v[all->n / 2] : 0, p99 = all->n ? all->v[(size_t)(all->n * 0.99)] : 0;
    double p999 = all->n ? all->v[(size_t)(all->n * 0.999)] : 0;
    double span = res->span, cpu = res->cpu;
    double rate = drain ? res->drain_rate : res->done / span;
    long ops = drain ? res->drained : res->done;
    long rss_before = res->rss_before, rss_loaded = res->rss_loaded;
    printf("mode=%s ops=%ld secs=%.3f rate=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f server_cpu_s=%.3f "
           "ops_per_cpu_s=%.0f gen_cpu_s=%.3f rss_before_kb=%ld rss_kb=%ld rss_per_job_b=%.0f drained=%ld "
           "drain_rate=%.0f errors=%ld\n",
           C.mode, ops, span, rate, p50 * 1e6, p99 * 1e6, p999 * 1e6, cpu, cpu > 0 ? ops / cpu : 0,
           res->self_cpu_s, rss_before, rss_loaded,
           rss && res->done ? (rss_loaded - rss_before) * 1024.0 / res->done : 0, res->drained, res->drain_rate,
           (long)atomic_load(&errors));
    fprintf(stderr, "%s: %ld ops in %.2fs = %.0f/s; latency p50 %.0f us, p99 %.0f us; server cpu %.2fs; generator cpu %.2fs; errors %ld\n",
            C.mode, ops, span, rate, p50 * 1e6, p99 * 1e6, cpu, res->self_cpu_s, (long)atomic_load(&errors));
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a TLS session writes with write(): a closed socket is an error */
    int r = parse_options(argc, argv);
    if (r != 0)
        return r > 0 ? 0 : 2;
    if (resolve_server() < 0) {
        fprintf(stderr, "gearman-bench: cannot resolve %s:%s\n", C.host, C.port);
        return 2;
    }
    bool fg = strcmp(C.mode, "fg") == 0, bg = strcmp(C.mode, "bg") == 0, echo = strcmp(C.mode, "echo") == 0;
    bool drain = strcmp(C.mode, "drain") == 0, rss = strcmp(C.mode, "rss") == 0;
    if (strcmp(C.mode, "conns") == 0)
        return idle_connections();
    if (strcmp(C.mode, "handshake") == 0) {
        per_client_count = C.count ? (C.count + C.clients - 1) / C.clients : 0;
        struct result res = {0};
        run_connectors(&res);
        report(false, false, &res);
        free(res.all.v);
        return atomic_load(&errors) ? 1 : 0;
    }
    if (!fg && !bg && !echo && !drain && !rss) {
        usage();
        return 2;
    }
    if ((drain || rss) && C.count == 0)
        C.count = 100000;
    per_client_count = C.count ? (C.count + C.clients - 1) / C.clients : 0;

    int *idle_fds = open_idle_workers(C.idle_workers);
    struct result res = {0};
    run_clients(fg, echo, &res);
    if ((bg || drain || rss) && (C.drain || drain))
        run_drain(drain, &res);
    for (int i = 0; i < C.idle_workers; i++)
        if (idle_fds[i] >= 0)
            close(idle_fds[i]);
    free(idle_fds);

    report(drain, rss, &res);
    free(res.all.v);
    return atomic_load(&errors) ? 1 : 0;
}
