/*
 * bench/gearman-bench.c: the project's load generator.  Raw sockets and the
 * server's own codec (no libgearman); one thread per client or worker
 * connection, all in one process.
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
 * Every payload is checked and every job counted: a lost, duplicated or
 * corrupted job is an error (exit 1), not a number.  With --pid, the
 * server's CPU seconds and RSS are read from /proc for the measured span.
 *
 * Output: one line of key=value pairs (for bench/compare) plus a readable
 * summary on stderr.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "libgearman-server/protocol.h"

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
};

static struct cfg C = {"127.0.0.1", "4730", "fg", 8, 8, 16, 1, 64, false, true, 5.0, 0, 0, 0, 1};

/* Totals, added once per thread at its end (a shared counter updated per
   job would bounce its cache line between CPUs and slow the generator). */
static _Atomic long submitted, errors, created;
static _Atomic int stop_flag;
static _Atomic int workers_stop;

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

static int
connect_server(void)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(C.host, C.port, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* A connection with a read buffer and an output batch. */
struct io {
    int fd;
    char *in;
    size_t start, len, cap;
    char *out;
    size_t olen, ocap;
};

static int
io_open(struct io *io)
{
    memset(io, 0, sizeof *io);
    io->fd = connect_server();
    io->cap = 1 << 20;
    io->in = malloc(io->cap);
    io->ocap = 1 << 16;
    io->out = malloc(io->ocap);
    if (io->fd >= 0) {
        /* a short receive timeout, so threads notice the end of a run quickly */
        struct timeval tv = {0, 100000};
        setsockopt(io->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return io->fd >= 0 && io->in && io->out ? 0 : -1;
}

static void
io_close(struct io *io)
{
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

static int
io_flush(struct io *io)
{
    size_t off = 0;
    while (off < io->olen) {
        ssize_t w = send(io->fd, io->out + off, io->olen - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (size_t)w;
    }
    io->olen = 0;
    return 0;
}

struct pkt {
    uint32_t type, size;
    const char *p;
    struct gm_fields f;
};

/* Next packet; 1 ok, 0 timeout (100 ms), -1 error. */
static int
io_next(struct io *io, struct pkt *k)
{
    for (;;) {
        size_t have = io->len - io->start;
        if (have >= GM_HEADER_SIZE) {
            struct gm_header h;
            gm_header_decode((unsigned char *)io->in + io->start, UINT32_MAX - 12, &h);
            size_t total = GM_HEADER_SIZE + h.size;
            if (have >= total) {
                k->type = h.type;
                k->size = h.size;
                k->p = io->in + io->start + GM_HEADER_SIZE;
                gm_fields_split(h.type, k->p, h.size, &k->f);
                io->start += total;
                return 1;
            }
            if (io->cap < total) {
                io->cap = total * 2;
                char *n = malloc(io->cap);
                memcpy(n, io->in + io->start, have);
                free(io->in);
                io->in = n;
                io->start = 0;
                io->len = have;
            }
        }
        if (io->start && io->cap - io->len < 65536) {
            memmove(io->in, io->in + io->start, have);
            io->len = have;
            io->start = 0;
        }
        ssize_t r = recv(io->fd, io->in + io->len, io->cap - io->len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        io->len += (size_t)r;
    }
}

/* Whether a whole packet is already buffered (so replies can be batched:
   flush only before waiting for the server). */
static bool
io_has_packet(const struct io *io)
{
    size_t have = io->len - io->start;
    if (have < GM_HEADER_SIZE)
        return false;
    struct gm_header h;
    gm_header_decode((unsigned char *)io->in + io->start, UINT32_MAX - 12, &h);
    return have >= GM_HEADER_SIZE + (size_t)h.size;
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

static size_t
make_payload(char *buf, int client, long seq)
{
    int n = snprintf(buf, C.payload + 64, "%d:%ld:", client, seq);
    size_t len = C.payload > (size_t)n ? C.payload : (size_t)n;
    for (size_t i = (size_t)n; i < len; i++)
        buf[i] = (char)('a' + (client * 7 + seq * 13 + (long)i) % 26);
    return len;
}

static bool
check_payload(const char *p, size_t len, int *client, long *seq)
{
    if (sscanf(p, "%d:%ld:", client, seq) != 2)
        return false;
    char tmp[1 << 16];
    char *b = len + 64 <= sizeof tmp ? tmp : malloc(len + 64);
    size_t n = make_payload(b, *client, *seq);
    bool ok = n == len && memcmp(b, p, len) == 0;
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
/* Workers                                                             */
/* ------------------------------------------------------------------ */

struct worker_arg {
    int id;
    bool idle;         /* registers a function nobody submits to, and sleeps */
    long jobs;
};

static void
fn_name(char *buf, size_t len, int i)
{
    snprintf(buf, len, "bench%d", i);
}

static void *
worker_main(void *arg)
{
    struct worker_arg *wa = arg;
    struct io io;
    if (io_open(&io) < 0) {
        fail("worker cannot connect");
        return NULL;
    }
    char name[32];
    if (wa->idle) {
        snprintf(name, sizeof name, "idle%d", wa->id % 50);
        struct gm_field_ref f = {name, strlen(name)};
        io_put(&io, GM_PKT_CAN_DO, &f, 1);
        io_put(&io, GM_PKT_PRE_SLEEP, NULL, 0);
        io_flush(&io);
        while (!atomic_load(&workers_stop)) {
            struct pkt k;
            if (io_next(&io, &k) < 0)
                break;
        }
        io_close(&io);
        return NULL;
    }
    for (int i = 0; i < C.functions; i++) {
        fn_name(name, sizeof name, i);
        struct gm_field_ref f = {name, strlen(name)};
        io_put(&io, GM_PKT_CAN_DO, &f, 1);
    }
    io_put(&io, GM_PKT_GRAB_JOB, NULL, 0);
    io_flush(&io);
    while (!atomic_load(&workers_stop)) {
        struct pkt k;
        int r = io_next(&io, &k);
        if (r < 0) {
            if (!atomic_load(&workers_stop))
                fail("worker lost its connection");
            break;
        }
        if (r == 0)
            continue;
        if (k.type == GM_PKT_JOB_ASSIGN) {
            size_t hl, dl;
            const char *h = field(&k, 0, &hl);
            const char *d = field(&k, 2, &dl);
            struct gm_field_ref f[2] = {{h, hl}, {d, dl}}; /* echo the payload back */
            io_put(&io, GM_PKT_WORK_COMPLETE, f, 2);
            io_put(&io, GM_PKT_GRAB_JOB, NULL, 0);
            wa->jobs++;
        } else if (k.type == GM_PKT_NO_JOB) {
            io_put(&io, GM_PKT_PRE_SLEEP, NULL, 0);
        } else if (k.type == GM_PKT_NOOP) {
            io_put(&io, GM_PKT_GRAB_JOB, NULL, 0);
        } else if (k.type == GM_PKT_ERROR) {
            fail("worker got an ERROR");
        }
        if (io.olen && !io_has_packet(&io) && io_flush(&io) < 0)
            break;
    }
    io_close(&io);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

struct inflight {
    char handle[GM_HANDLE_MAX];
    uint8_t hlen;
    long seq;
    double t0;
    bool used;
};

struct client_arg {
    int id;
    long done, sent;
    struct lat lat;
};

/* handle -> slot, open addressing over the in-flight table */
static uint32_t
hhash(const char *h, size_t n)
{
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < n; i++)
        x = (x ^ (unsigned char)h[i]) * 16777619u;
    return x;
}

static uint32_t
submit_type(bool bg)
{
    static const uint32_t fg_t[3] = {GM_PKT_SUBMIT_JOB_HIGH, GM_PKT_SUBMIT_JOB, GM_PKT_SUBMIT_JOB_LOW};
    static const uint32_t bg_t[3] = {GM_PKT_SUBMIT_JOB_HIGH_BG, GM_PKT_SUBMIT_JOB_BG, GM_PKT_SUBMIT_JOB_LOW_BG};
    return bg ? bg_t[C.priority] : fg_t[C.priority];
}

static double t_end;
static long per_client_count;

static bool
more_to_send(const struct client_arg *ca)
{
    if (atomic_load(&stop_flag))
        return false;
    if (C.seconds > 0)
        return now() < t_end;
    return ca->sent < per_client_count;
}

static void
put_submit(struct io *io, struct client_arg *ca, char *buf, bool bg)
{
    char fn[32], uq[48];
    fn_name(fn, sizeof fn, (int)(ca->sent % C.functions));
    size_t len = make_payload(buf, ca->id, ca->sent);
    int ul = C.unique ? snprintf(uq, sizeof uq, "u-%d-%ld", ca->id, ca->sent) : 0;
    struct gm_field_ref f[3] = {{fn, strlen(fn)}, {uq, (size_t)ul}, {buf, len}};
    io_put(io, submit_type(bg), f, 3);
    ca->sent++;
}

static void *
client_fg_main(void *arg)
{
    struct client_arg *ca = arg;
    struct io io;
    if (io_open(&io) < 0) {
        fail("client cannot connect");
        return NULL;
    }
    uint32_t slots = 1;
    while (slots < (uint32_t)C.depth * 4)
        slots <<= 1;
    struct inflight *tab = calloc(slots, sizeof *tab);
    /* FIFO of (seq, t0) waiting for JOB_CREATED */
    long *fifo_seq = calloc((size_t)C.depth, sizeof(long));
    double *fifo_t = calloc((size_t)C.depth, sizeof(double));
    size_t fh = 0, fl = 0;
    char *buf = malloc(C.payload + 64);
    long inflight = 0;
    while (inflight < C.depth && more_to_send(ca)) {
        fifo_seq[(fh + fl) % C.depth] = ca->sent;
        fifo_t[(fh + fl) % C.depth] = now();
        fl++;
        put_submit(&io, ca, buf, false);
        inflight++;
    }
    io_flush(&io);
    while (inflight > 0) {
        struct pkt k;
        int r = io_next(&io, &k);
        if (r < 0) {
            fail("client lost its connection");
            break;
        }
        if (r == 0) {
            if (atomic_load(&stop_flag))
                break;
            continue;
        }
        if (k.type == GM_PKT_JOB_CREATED) {
            if (!fl) {
                fail("JOB_CREATED without a submit");
                continue;
            }
            size_t hl;
            const char *h = field(&k, 0, &hl);
            uint32_t pos = hhash(h, hl) & (slots - 1);
            while (tab[pos].used)
                pos = (pos + 1) & (slots - 1);
            tab[pos].used = true;
            memcpy(tab[pos].handle, h, hl < GM_HANDLE_MAX ? hl : GM_HANDLE_MAX - 1);
            tab[pos].hlen = (uint8_t)hl;
            tab[pos].seq = fifo_seq[fh];
            tab[pos].t0 = fifo_t[fh];
            fh = (fh + 1) % C.depth;
            fl--;
        } else if (k.type == GM_PKT_WORK_COMPLETE) {
            size_t hl, dl;
            const char *h = field(&k, 0, &hl);
            const char *d = field(&k, 1, &dl);
            uint32_t pos = hhash(h, hl) & (slots - 1);
            while (tab[pos].used && !(tab[pos].hlen == hl && memcmp(tab[pos].handle, h, hl) == 0))
                pos = (pos + 1) & (slots - 1);
            if (!tab[pos].used) {
                fail("WORK_COMPLETE for an unknown or finished handle (duplicate?)");
                continue;
            }
            int cid;
            long seq;
            if (!check_payload(d, dl, &cid, &seq) || cid != ca->id || seq != tab[pos].seq)
                fail("corrupted result payload");
            lat_add(&ca->lat, now() - tab[pos].t0);
            /* delete with backward-shift so probes stay correct */
            tab[pos].used = false;
            uint32_t j = pos;
            for (;;) {
                j = (j + 1) & (slots - 1);
                if (!tab[j].used)
                    break;
                uint32_t want = hhash(tab[j].handle, tab[j].hlen) & (slots - 1);
                if ((j > pos && (want <= pos || want > j)) || (j < pos && want <= pos && want > j)) {
                    tab[pos] = tab[j];
                    tab[j].used = false;
                    pos = j;
                }
            }
            ca->done++;
            inflight--;
            if (more_to_send(ca)) {
                fifo_seq[(fh + fl) % C.depth] = ca->sent;
                fifo_t[(fh + fl) % C.depth] = now();
                fl++;
                put_submit(&io, ca, buf, false);
                inflight++;
            }
        } else if (k.type == GM_PKT_WORK_FAIL || k.type == GM_PKT_ERROR) {
            fail(k.type == GM_PKT_ERROR ? "client got an ERROR" : "a job failed");
            inflight--;
        }
        if (io.olen && !io_has_packet(&io) && io_flush(&io) < 0) {
            fail("client send failed");
            break;
        }
    }
    atomic_fetch_add(&submitted, ca->sent);
    free(tab);
    free(fifo_seq);
    free(fifo_t);
    free(buf);
    io_close(&io);
    return NULL;
}

static void *
client_bg_main(void *arg)
{
    struct client_arg *ca = arg;
    struct io io;
    if (io_open(&io) < 0) {
        fail("client cannot connect");
        return NULL;
    }
    char *buf = malloc(C.payload + 64);
    long inflight = 0;
    double *t0 = calloc((size_t)C.depth, sizeof(double));
    size_t th = 0;
    while (inflight < C.depth && more_to_send(ca)) {
        t0[(th + (size_t)inflight) % C.depth] = now();
        put_submit(&io, ca, buf, true);
        inflight++;
    }
    io_flush(&io);
    while (inflight > 0) {
        struct pkt k;
        int r = io_next(&io, &k);
        if (r < 0) {
            fail("client lost its connection");
            break;
        }
        if (r == 0)
            continue;
        if (k.type == GM_PKT_JOB_CREATED) {
            lat_add(&ca->lat, now() - t0[th]);
            th = (th + 1) % C.depth;
            inflight--;
            ca->done++;
            if (more_to_send(ca)) {
                t0[(th + (size_t)inflight) % C.depth] = now();
                put_submit(&io, ca, buf, true);
                inflight++;
            }
        } else if (k.type == GM_PKT_ERROR) {
            fail("background submit refused");
            th = (th + 1) % C.depth;
            inflight--;
        }
        if (io.olen && !io_has_packet(&io) && io_flush(&io) < 0)
            break;
    }
    atomic_fetch_add(&submitted, ca->sent);
    atomic_fetch_add(&created, ca->done);
    free(t0);
    free(buf);
    io_close(&io);
    return NULL;
}

static void *
client_echo_main(void *arg)
{
    struct client_arg *ca = arg;
    struct io io;
    if (io_open(&io) < 0) {
        fail("client cannot connect");
        return NULL;
    }
    char *buf = malloc(C.payload + 64);
    long inflight = 0;
    double *t0 = calloc((size_t)C.depth, sizeof(double));
    size_t th = 0;
    for (; inflight < C.depth && more_to_send(ca); inflight++) {
        size_t len = make_payload(buf, ca->id, ca->sent++);
        struct gm_field_ref f = {buf, len};
        t0[(th + (size_t)inflight) % C.depth] = now();
        io_put(&io, GM_PKT_ECHO_REQ, &f, 1);
    }
    io_flush(&io);
    long expect = 0;
    while (inflight > 0) {
        struct pkt k;
        int r = io_next(&io, &k);
        if (r <= 0) {
            if (r < 0)
                fail("echo connection lost");
            if (r < 0 || atomic_load(&stop_flag))
                break;
            continue;
        }
        int cid;
        long seq;
        if (k.type != GM_PKT_ECHO_RES || !check_payload(k.p, k.size, &cid, &seq) || cid != ca->id || seq != expect)
            fail("bad ECHO_RES");
        expect++;
        lat_add(&ca->lat, now() - t0[th]);
        th = (th + 1) % C.depth;
        inflight--;
        ca->done++;
        if (more_to_send(ca)) {
            size_t len = make_payload(buf, ca->id, ca->sent++);
            struct gm_field_ref f = {buf, len};
            t0[(th + (size_t)inflight) % C.depth] = now();
            io_put(&io, GM_PKT_ECHO_REQ, &f, 1);
            inflight++;
        }
        if (io.olen && !io_has_packet(&io) && io_flush(&io) < 0)
            break;
    }
    free(t0);
    free(buf);
    io_close(&io);
    return NULL;
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

/* ------------------------------------------------------------------ */

static void
start_workers(pthread_t *t, struct worker_arg *wa, int n, bool idle, int base)
{
    for (int i = 0; i < n; i++) {
        wa[i].id = base + i;
        wa[i].idle = idle;
        pthread_create(&t[i], NULL, worker_main, &wa[i]);
    }
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
            "usage: gearman-bench [--host H] [--port P] --mode fg|bg|drain|echo|rss|conns [--clients C]\n"
            "       [--workers W] [--depth K] [--payload BYTES] [--functions N] [--unique]\n"
            "       [--seconds S | --count N] [--pid SERVER_PID] [--idle-workers N] [--no-drain]\n"
            "       [--priority high|normal|low]\n");
}

int
main(int argc, char **argv)
{
    static struct option opts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"mode", 1, 0, 'm'}, {"clients", 1, 0, 'c'},
        {"workers", 1, 0, 'w'}, {"depth", 1, 0, 'k'}, {"payload", 1, 0, 's'}, {"functions", 1, 0, 'f'},
        {"unique", 0, 0, 'u'}, {"seconds", 1, 0, 't'}, {"count", 1, 0, 'n'}, {"pid", 1, 0, 'P'},
        {"idle-workers", 1, 0, 'i'}, {"no-drain", 0, 0, 'D'}, {"priority", 1, 0, 'r'}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
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
        default: usage(); return ch == 'h' ? 0 : 2;
        }
    }
    if (C.clients < 1 || C.depth < 1 || C.functions < 1 || C.workers < 0) {
        usage();
        return 2;
    }
    bool fg = strcmp(C.mode, "fg") == 0, bg = strcmp(C.mode, "bg") == 0, echo = strcmp(C.mode, "echo") == 0;
    bool drain = strcmp(C.mode, "drain") == 0, rss = strcmp(C.mode, "rss") == 0;
    if (strcmp(C.mode, "conns") == 0)
        return idle_connections();
    if (!fg && !bg && !echo && !drain && !rss) {
        usage();
        return 2;
    }
    if ((drain || rss) && C.count == 0)
        C.count = 100000;
    per_client_count = C.count ? (C.count + C.clients - 1) / C.clients : 0;

    pthread_t *idle_t = calloc((size_t)C.idle_workers + 1, sizeof *idle_t);
    struct worker_arg *idle_a = calloc((size_t)C.idle_workers + 1, sizeof *idle_a);
    start_workers(idle_t, idle_a, C.idle_workers, true, 100000);
    if (C.idle_workers)
        usleep(200000 + C.idle_workers * 100);

    pthread_t *wt = calloc((size_t)C.workers + 1, sizeof *wt);
    struct worker_arg *wa = calloc((size_t)C.workers + 1, sizeof *wa);
    pthread_t *ct = calloc((size_t)C.clients, sizeof *ct);
    struct client_arg *ca = calloc((size_t)C.clients, sizeof *ca);
    long rss_before = proc_rss_kb(C.pid);

    if (fg)
        start_workers(wt, wa, C.workers, false, 0);
    double cpu0 = proc_cpu(C.pid), t0 = now(), self0 = self_cpu();
    t_end = t0 + C.seconds;
    void *(*fn)(void *) = fg ? client_fg_main : echo ? client_echo_main : client_bg_main;
    for (int i = 0; i < C.clients; i++) {
        ca[i].id = i;
        pthread_create(&ct[i], NULL, fn, &ca[i]);
    }
    for (int i = 0; i < C.clients; i++)
        pthread_join(ct[i], NULL);
    double t1 = now(), cpu1 = proc_cpu(C.pid), self_cpu_s = self_cpu() - self0;
    long rss_loaded = proc_rss_kb(C.pid);
    long done = 0;
    struct lat all = {0};
    for (int i = 0; i < C.clients; i++) {
        done += ca[i].done;
        for (size_t k = 0; k < ca[i].lat.n; k++)
            lat_add(&all, ca[i].lat.v[k]);
        free(ca[i].lat.v);
    }
    double span = t1 - t0, cpu = cpu1 - cpu0;
    double drain_rate = 0;
    long drained = 0;
    if ((bg || drain || rss) && (C.drain || drain)) {
        /* drain everything that was acknowledged, checking each job */
        double d0 = now(), dc0 = proc_cpu(C.pid);
        atomic_store(&workers_stop, 0);
        start_workers(wt, wa, C.workers ? C.workers : 1, false, 0);
        int nw = C.workers ? C.workers : 1;
        long target = atomic_load(&created);
        long last = -1;
        double last_change = now();
        for (;;) {
            long sum = 0;
            for (int i = 0; i < nw; i++)
                sum += wa[i].jobs;
            if (sum >= target)
                break;
            if (sum != last) {
                last = sum;
                last_change = now();
            } else if (now() - last_change > 10) {
                fail("drain stalled: jobs are missing");
                break;
            }
            usleep(2000);
        }
        double d1 = now();
        for (int i = 0; i < nw; i++)
            drained += wa[i].jobs;
        drain_rate = drained / (d1 - d0);
        if (drain) {
            span = d1 - d0;
            cpu = proc_cpu(C.pid) - dc0;
        }
        if (drained != target)
            fail("drained a different number of jobs than were acknowledged");
        atomic_store(&workers_stop, 1);
        for (int i = 0; i < nw; i++)
            pthread_join(wt[i], NULL);
    } else if (fg) {
        atomic_store(&workers_stop, 1);
        for (int i = 0; i < C.workers; i++)
            pthread_join(wt[i], NULL);
    }
    atomic_store(&workers_stop, 1);
    for (int i = 0; i < C.idle_workers; i++) {
        shutdown(0, 0);
        pthread_cancel(idle_t[i]);
        pthread_join(idle_t[i], NULL);
    }
    qsort(all.v, all.n, sizeof *all.v, cmp_double);
    double p50 = all.n ? all.v[all.n / 2] : 0, p99 = all.n ? all.v[(size_t)(all.n * 0.99)] : 0;
    double p999 = all.n ? all.v[(size_t)(all.n * 0.999)] : 0;
    double rate = drain ? drain_rate : done / span;
    long ops = drain ? drained : done;
    printf("mode=%s ops=%ld secs=%.3f rate=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f server_cpu_s=%.3f "
           "ops_per_cpu_s=%.0f gen_cpu_s=%.3f rss_before_kb=%ld rss_kb=%ld rss_per_job_b=%.0f drained=%ld "
           "drain_rate=%.0f errors=%ld\n",
           C.mode, ops, span, rate, p50 * 1e6, p99 * 1e6, p999 * 1e6, cpu, cpu > 0 ? ops / cpu : 0,
           drain ? 0 : self_cpu_s, rss_before,
           rss_loaded, rss && done ? (rss_loaded - rss_before) * 1024.0 / done : 0, drained, drain_rate,
           (long)atomic_load(&errors));
    fprintf(stderr, "%s: %ld ops in %.2fs = %.0f/s; latency p50 %.0f us, p99 %.0f us; server cpu %.2fs; errors %ld\n",
            C.mode, ops, span, rate, p50 * 1e6, p99 * 1e6, cpu, (long)atomic_load(&errors));
    free(all.v);
    free(wt);
    free(wa);
    free(ct);
    free(ca);
    free(idle_t);
    free(idle_a);
    return atomic_load(&errors) ? 1 : 0;
}
