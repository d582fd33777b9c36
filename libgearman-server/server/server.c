/*
 * server.c: listeners, threads and the main loop (see server.h).
 *
 * Runs on the main thread, which owns the listening sockets and the signal
 * watchers.  Accepted sockets are handed to I/O threads in turn over each
 * thread's socket ring.  Running out of descriptors does not clog the
 * listen queue: a spare descriptor, held for the purpose, is given up for a
 * moment to accept each waiting connection and close it at once (counted,
 * logged once per episode), so a connection that arrives once a descriptor
 * is free again is served at once.  Out of memory (or without a spare)
 * accepting pauses for a moment instead of spinning on a readable listener.
 */
#include "config.h"

#include "libgearman-server/server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/io/io_thread.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/persist/persist.h"

#define PERSIST_RING_SLOTS 65536
#define IN_RING_SLOTS 16384
#define OUT_RING_SLOTS 16384
#define MAX_LISTENERS 16
#define ACCEPTS_PER_EVENT 64
#define ACCEPT_PAUSE_SECONDS 0.1

struct listener {
    int fd;
    uint8_t frontend;   /* accepts front-end (HTTP) connections */
    ev_io w;
    struct gm_server *s;
};

/* Owner: the main thread (the accept loop) writes and reads every field,
   except stop_requested and stop_accepting_requested, atomics the
   dispatcher sets through its request_shutdown hook (then wakes `control`),
   and cfg and persist, set before the threads start and only read after:
   the dispatcher's view hook (fill_server_view) reads them.  The other
   threads get their own pieces (channels, config) before they start. */
struct gm_server {
    const struct gm_server_config *cfg;
    unsigned nthreads;
    struct gm_channel *chans;
    struct gm_io_thread **io;
    struct gm_dispatcher *disp;
    pthread_t *io_tids;
    pthread_t disp_tid;
    unsigned started_io;
    bool disp_started;
    bool hosted;                /* one I/O thread, which also runs the dispatcher */
    struct gm_persist_channel pch;
    bool pch_ready;
    struct gm_persist *persist;
    pthread_t persist_tid;
    bool persist_started;

    struct ev_loop *loop;
    struct listener ls[MAX_LISTENERS];
    unsigned nls;
    unsigned port;
    unsigned frontend_port;
    ev_signal sig_term, sig_int, sig_usr1, sig_hup;
    ev_async control;           /* the dispatcher asks for a stop */
    _Atomic int stop_requested;
    _Atomic int stop_accepting_requested;
    ev_timer accept_resume;
    ev_timer persist_watch;     /* logs a queue backend that stops answering */
    bool accept_paused;
    bool accept_starved;        /* accept failed for lack of descriptors; logged once */
    int spare_fd;               /* held to accept and close while the table is full */
    unsigned long turned_away;  /* connections closed at once in this episode */
    bool graceful;
    unsigned next_io;
};

/* ------------------------------------------------------------------ */
/* Wiring the threads together                                         */
/* ------------------------------------------------------------------ */

static void
wake_dispatcher(void *arg)
{
    gm_disp_wake(arg);
}

static void
wake_io(void *arg, unsigned thread)
{
    struct gm_server *s = arg;
    /* A hosted dispatcher runs on I/O thread 0, which reads its replies
       before it sleeps: no wake-up needed. */
    if (!s->hosted)
        gm_io_wake(s->io[thread]);
}

static void
dispatcher_wants_stop(void *arg, int how)
{
    struct gm_server *s = arg;
    atomic_store(how == GM_STOP_NOW ? &s->stop_requested : &s->stop_accepting_requested, 1);
    ev_async_send(s->loop, &s->control);
}

/* Dispatcher thread (through its hook): what only the server knows. */
static void
fill_server_view(void *arg, struct gm_view_server *out)
{
    struct gm_server *s = arg;
    if (!s->cfg->queue)
        return;
    out->queue_backend = s->cfg->queue->name;
    if (s->persist) {
        struct gm_queue_stats st;
        gm_persist_stats(s->persist, &st);
        out->queue_healthy = gm_persist_healthy(s->persist);
        out->queue_stalled = gm_persist_waiting_ms(s->persist) > GM_PERSIST_STALL_MS;
        out->queue_batches = st.batches;
        out->queue_records = st.records;
        out->queue_failures = st.failures;
    }
}

static void
wake_persist(void *arg)
{
    gm_persist_wake(arg);
}

struct replay_ctx {
    struct gm_dispatcher *d;
    uint64_t replayed, duplicates, bad;
};

static int
replay_row(void *arg, const struct gm_qrow *row)
{
    struct replay_ctx *rc = arg;
    char err[128];
    int r = gm_disp_replay_row(rc->d, row, err, sizeof err);
    if (r == 0) {
        rc->replayed++;
    } else if (r == 1) {
        rc->duplicates++;
    } else {
        rc->bad++;
        gm_log(GM_LOG_ERROR, "queue: stored job %.*s (%.*s) not replayed: %s; it stays stored",
               (int)row->handle_len, row->handle, (int)row->function_len, row->function, err);
        return 1;
    }
    return 0;
}

/* Opens the durable queue, replays it into the dispatcher (before anything
   listens) and prepares the persistence thread.  Returns 0 or -1 (logged). */
static int
open_queue(struct gm_server *s)
{
    const struct gm_server_config *cfg = s->cfg;
    struct gm_queue_options opts = cfg->queue_opts;
    if (!opts.handle_prefix)
        opts.handle_prefix = cfg->handle_prefix;
    if (opts.store_on_shutdown && !cfg->queue->stores_on_shutdown) {
        /* As in gearmand, where only libsqlite3 offers it: the backend goes
           on storing every job as it comes, and keeps nothing it replayed
           twice. */
        gm_log(GM_LOG_WARNING, "--store-queue-on-shutdown applies to libsqlite3 only; the %s queue "
               "stores every background job as it comes", cfg->queue->name);
        opts.store_on_shutdown = false;
    }
    char err[256] = "";
    void *state = cfg->queue->open(&opts, err, sizeof err);
    if (!state) {
        gm_log(GM_LOG_FATAL, "queue %s: %s", cfg->queue->name, err);
        return -1;
    }
    if (gm_persist_channel_init(&s->pch, PERSIST_RING_SLOTS) < 0) {
        cfg->queue->close(state);
        return -1;
    }
    s->pch_ready = true;
    struct gm_persist_config pc = {cfg->queue_batch_max, cfg->queue_batch_delay_ms, 0};
    s->persist = gm_persist_new(cfg->queue, state, &pc, &s->pch, wake_dispatcher, s->disp);
    if (!s->persist) {
        cfg->queue->close(state);
        return -1;
    }
    gm_disp_attach_persist(s->disp, &s->pch, wake_persist, s->persist, cfg->queue->stores_epoch,
                           opts.store_on_shutdown);
    /* Replay before anything listens; the persistence thread is not
       running yet, so the backend is ours to use from here. */
    uint64_t next = 0;
    if (cfg->queue->load_counter && cfg->queue->load_counter(state, &next, err, sizeof err) < 0) {
        gm_log(GM_LOG_FATAL, "queue %s: cannot read the handle counter: %s", cfg->queue->name, err);
        return -1;
    }
    gm_disp_set_next_handle(s->disp, next);
    struct replay_ctx rc = {s->disp, 0, 0, 0};
    if (cfg->queue->replay(state, replay_row, &rc, err, sizeof err) < 0) {
        gm_log(GM_LOG_FATAL, "queue %s: cannot replay: %s", cfg->queue->name, err);
        return -1;
    }
    gm_log(GM_LOG_NOTICE, "queue %s: replayed %llu jobs (%llu already here, %llu rows kept unreplayed)",
           cfg->queue->name, (unsigned long long)rc.replayed, (unsigned long long)rc.duplicates,
           (unsigned long long)rc.bad);
    return 0;
}

struct gm_server *
gm_server_new(const struct gm_server_config *cfg)
{
    struct gm_server *s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->cfg = cfg;
    atomic_init(&s->stop_requested, 0);
    atomic_init(&s->stop_accepting_requested, 0);
    unsigned n = cfg->io_threads;
    if (n == 0) {
        /* One busy thread per CPU, counting the dispatcher: CPUs - 1 I/O
           threads beside it, and on one or two CPUs a single I/O thread
           that runs the dispatcher too (no hand-offs; measured faster on
           two CPUs for every foreground scenario, docs/performance.md). */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 2 ? (unsigned)cpus - 1 : 1;
    }
    if (n > GM_MAX_IO_THREADS)
        n = GM_MAX_IO_THREADS;
    s->nthreads = n;
    for (unsigned i = 0; i < MAX_LISTENERS; i++)
        s->ls[i].fd = -1;
    s->spare_fd = -1;
    s->loop = ev_default_loop(EVFLAG_AUTO | EVFLAG_SIGNALFD);
    s->chans = calloc(n, sizeof *s->chans);
    s->io = calloc(n, sizeof *s->io);
    s->io_tids = calloc(n, sizeof *s->io_tids);
    if (!s->loop || !s->chans || !s->io || !s->io_tids)
        goto oom;
    for (unsigned i = 0; i < n; i++)
        if (gm_channel_init(&s->chans[i], IN_RING_SLOTS, OUT_RING_SLOTS) < 0)
            goto oom;
    struct gm_disp_hooks hooks = {.arg = s, .wake_io = wake_io,
                                  .request_shutdown = dispatcher_wants_stop,
                                  .fill_server_view = fill_server_view};
    s->disp = gm_disp_new(cfg, s->chans, n, &hooks);
    if (!s->disp)
        goto oom;
    for (unsigned i = 0; i < n; i++)
        if (!(s->io[i] = gm_io_new(i, cfg, &s->chans[i], wake_dispatcher, s->disp)))
            goto oom;
    /* With one I/O thread, a separate dispatcher thread would only add a
       hand-off (two wake-ups) to every request: the I/O thread runs it,
       as gearmand's -t 1 runs its commands on its I/O thread. */
    s->hosted = n == 1;
    if (gm_disp_loop_init(s->disp, s->hosted ? gm_io_loop(s->io[0]) : NULL) < 0)
        goto oom;
    if (s->hosted)
        gm_io_host_dispatcher(s->io[0], s->disp);
    if (cfg->queue && open_queue(s) < 0) {
        gm_server_free(s);
        return NULL;
    }
    return s;
oom:
    gm_log(GM_LOG_FATAL, "out of memory creating the server");
    gm_server_free(s);
    return NULL;
}

void
gm_server_free(struct gm_server *s)
{
    if (!s)
        return;
    gm_persist_free(s->persist);
    if (s->pch_ready)
        gm_persist_channel_destroy(&s->pch);
    for (unsigned i = 0; i < s->nls; i++) {
        ev_io_stop(s->loop, &s->ls[i].w);
        close(s->ls[i].fd);
    }
    if (s->spare_fd >= 0)
        close(s->spare_fd);
    for (unsigned i = 0; s->io && i < s->nthreads; i++)
        gm_io_free(s->io[i]);
    gm_disp_free(s->disp);
    for (unsigned i = 0; s->chans && i < s->nthreads; i++)
        if (s->chans[i].in.slots)
            gm_channel_destroy(&s->chans[i]);
    free(s->chans);
    free(s->io);
    free(s->io_tids);
    free(s);
}

/* ------------------------------------------------------------------ */
/* Listening and accepting                                             */
/* ------------------------------------------------------------------ */

static void
pause_accepting(struct gm_server *s)
{
    if (s->accept_paused)
        return;
    s->accept_paused = true;
    for (unsigned i = 0; i < s->nls; i++)
        ev_io_stop(s->loop, &s->ls[i].w);
    ev_timer_set(&s->accept_resume, ACCEPT_PAUSE_SECONDS, 0.);
    ev_timer_start(s->loop, &s->accept_resume);
}

static void
on_persist_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    gm_persist_watch(w->data);
}

static void
on_accept_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_server *s = w->data;
    (void)loop;
    (void)revents;
    s->accept_paused = false;
    if (s->graceful)
        return;
    for (unsigned i = 0; i < s->nls; i++)
        ev_io_start(s->loop, &s->ls[i].w);
}

static void
peer_name(const struct sockaddr_storage *ss, char *addr, size_t len, uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
        /* Show IPv4-mapped peers as plain IPv4, as tools expect. */
        if (strncmp(addr, "::ffff:", 7) == 0 && strchr(addr + 7, '.'))
            memmove(addr, addr + 7, strlen(addr + 7) + 1);
        *port = ntohs(in6->sin6_port);
    } else {
        snprintf(addr, len, "unknown");
        *port = 0;
    }
}

/* Takes the spare descriptor back (an eventfd: no file system needed, and
   unlike a duplicate of a listener it keeps no socket listening); -1 while
   none is free. */
static void
spare_take(struct gm_server *s)
{
    if (s->spare_fd < 0)
        s->spare_fd = eventfd(0, EFD_CLOEXEC);
}

/* The descriptor table is full: gives up the spare to accept the next
   waiting connection of l and close it at once, then takes the spare back.
   Returns false when nothing was waiting or no spare is held. */
static bool
turn_away(struct gm_server *s, struct listener *l)
{
    if (s->spare_fd < 0)
        return false;
    close(s->spare_fd);
    s->spare_fd = -1;
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        s->turned_away++;
    }
    spare_take(s);
    return fd >= 0;
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct listener *l = w->data;
    struct gm_server *s = l->s;
    (void)loop;
    (void)revents;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                if (!s->accept_starved)
                    gm_log(GM_LOG_ERROR,
                           "accept: %s; closing new connections at once until a descriptor is free",
                           strerror(errno));
                s->accept_starved = true;
                if (turn_away(s, l))
                    continue;
                if (s->spare_fd < 0)
                    pause_accepting(s);
            } else if (errno == ENOBUFS || errno == ENOMEM) {
                if (!s->accept_starved)
                    gm_log(GM_LOG_ERROR, "accept: %s; pausing new connections until it passes",
                           strerror(errno));
                s->accept_starved = true;
                pause_accepting(s);
            }
            return;
        }
        if (s->accept_starved) {
            s->accept_starved = false;
            gm_log(GM_LOG_NOTICE,
                   "accepting connections again; %lu turned away while out of descriptors",
                   s->turned_away);
            s->turned_away = 0;
        }
        spare_take(s);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        struct gm_new_fd nf;
        memset(&nf, 0, sizeof nf);
        nf.fd = fd;
        nf.frontend = l->frontend;
        peer_name(&ss, nf.addr, sizeof nf.addr, &nf.port);
        struct gm_io_thread *t = s->io[s->next_io];
        s->next_io = (s->next_io + 1) % s->nthreads;
        if (gm_io_add_fd(t, &nf) < 0) {
            gm_log(GM_LOG_ERROR, "I/O thread hand-off queue full; dropping %s:%u", nf.addr,
                   nf.port);
            close(fd);
        }
    }
}

static int
listen_on(struct gm_server *s, const struct addrinfo *ai, uint8_t frontend)
{
    const struct gm_server_config *cfg = s->cfg;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(host, sizeof host, "?");
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        gm_log(GM_LOG_ERROR, "socket(%s): %s", host, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (cfg->keepalive) {
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        if (cfg->keepalive_idle >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->keepalive_idle, sizeof(int));
        if (cfg->keepalive_interval >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->keepalive_interval, sizeof(int));
        if (cfg->keepalive_count >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->keepalive_count, sizeof(int));
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        gm_log(GM_LOG_FATAL, "bind(%s:%s): %s", host, serv, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, cfg->backlog > 0 ? cfg->backlog : 32) < 0) {
        gm_log(GM_LOG_FATAL, "listen(%s:%s): %s", host, serv, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    uint16_t port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char addr[GM_ADDR_MAX];
        peer_name(&ss, addr, sizeof addr, &port);
        if (frontend)
            s->frontend_port = port;
        else
            s->port = port;
    }
    struct listener *l = &s->ls[s->nls++];
    l->fd = fd;
    l->frontend = frontend;
    l->s = s;
    ev_io_init(&l->w, on_accept, fd, EV_READ);
    l->w.data = l;
    gm_log(GM_LOG_NOTICE, "Listening on %s:%u%s", host, port,
           frontend ? (s->cfg->frontend ? " (http)" : "") : "");
    return 0;
}

/* Binds every address of -L (or all) on one port. */
static int
listen_port(struct gm_server *s, const char *port, uint8_t frontend)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(s->cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        gm_log(GM_LOG_FATAL, "cannot resolve %s:%s: %s",
               s->cfg->listen_host ? s->cfg->listen_host : "*", port, gai_strerror(rc));
        return -1;
    }
    int ok = 0, failed = 0;
    for (struct addrinfo *ai = res; ai && s->nls < MAX_LISTENERS; ai = ai->ai_next) {
        if (listen_on(s, ai, frontend) == 0) {
            ok++;
            /* With port 0 every further address must use the port the first got. */
            unsigned got = frontend ? s->frontend_port : s->port;
            if (ai->ai_next && got && strcmp(port, "0") == 0) {
                for (struct addrinfo *n = ai->ai_next; n; n = n->ai_next) {
                    if (n->ai_family == AF_INET)
                        ((struct sockaddr_in *)n->ai_addr)->sin_port = htons((uint16_t)got);
                    else if (n->ai_family == AF_INET6)
                        ((struct sockaddr_in6 *)n->ai_addr)->sin6_port = htons((uint16_t)got);
                }
            }
        } else {
            failed++;
        }
    }
    freeaddrinfo(res);
    /* Like gearmand: every address must bind (an IPv6-less host simply
       returns no IPv6 address). */
    if (!ok || failed)
        return -1;
    return 0;
}

int
gm_server_listen(struct gm_server *s)
{
    const char *port = s->cfg->port && *s->cfg->port ? s->cfg->port : GM_DEFAULT_PORT;
    if (listen_port(s, port, 0) < 0)
        return -1;
    if (s->cfg->frontend) {
        const char *fport = s->cfg->frontend_port ? s->cfg->frontend_port : "8080";
        if (listen_port(s, fport, 1) < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Signals and shutdown                                                */
/* ------------------------------------------------------------------ */

static void
stop_listening(struct gm_server *s)
{
    for (unsigned i = 0; i < s->nls; i++) {
        ev_io_stop(s->loop, &s->ls[i].w);
        close(s->ls[i].fd);
    }
    s->nls = 0;
    ev_timer_stop(s->loop, &s->accept_resume);
}

static void
on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    gm_log(GM_LOG_NOTICE, "Received %s, shutting down", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
    ev_break(loop, EVBREAK_ALL);
}

static void
on_graceful_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct gm_server *s = w->data;
    (void)loop;
    (void)revents;
    gm_log(GM_LOG_NOTICE, "Received SIGUSR1: no new connections; stopping once no job is left");
    s->graceful = true;
    stop_listening(s);
    gm_disp_request_graceful(s->disp);
}

static void
on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    if (gm_log_reopen() < 0)
        gm_log(GM_LOG_ERROR, "SIGHUP: cannot reopen the log file: %s", strerror(errno));
    else
        gm_log(GM_LOG_NOTICE, "SIGHUP, reopening log file");
}

static void
on_control(struct ev_loop *loop, ev_async *w, int revents)
{
    struct gm_server *s = w->data;
    (void)revents;
    if (atomic_exchange(&s->stop_accepting_requested, 0) && !s->graceful) {
        gm_log(GM_LOG_NOTICE, "graceful shutdown: no new connections; stopping once no job is left");
        s->graceful = true;
        stop_listening(s);
    }
    if (atomic_load(&s->stop_requested))
        ev_break(loop, EVBREAK_ALL);
}

/* Stops the dispatcher first (it publishes its last replies), then the I/O
   threads (they write what is queued, without waiting on slow sockets). */
static void
stop_threads(struct gm_server *s)
{
    if (s->disp_started) {
        gm_disp_stop(s->disp);
        pthread_join(s->disp_tid, NULL);
    }
    for (unsigned i = 0; i < s->started_io; i++)
        gm_io_stop(s->io[i]);
    for (unsigned i = 0; i < s->started_io; i++)
        pthread_join(s->io_tids[i], NULL);
    /* Last: the persistence thread writes what the dispatcher left it. */
    if (s->persist_started) {
        gm_persist_stop(s->persist);
        pthread_join(s->persist_tid, NULL);
    }
    s->started_io = 0;
    s->disp_started = false;
    s->persist_started = false;
}

int
gm_server_run(struct gm_server *s)
{
    /* Other threads never see the signals the main loop handles. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int status = 0;
    if (s->persist) {
        if (pthread_create(&s->persist_tid, NULL, gm_persist_thread_main, s->persist) != 0) {
            gm_log(GM_LOG_FATAL, "cannot start the persistence thread");
            return 1;
        }
        s->persist_started = true;
    }
    if (s->hosted) {
        /* runs on I/O thread 0 */
    } else if (pthread_create(&s->disp_tid, NULL, gm_disp_thread_main, s->disp) != 0) {
        gm_log(GM_LOG_FATAL, "cannot start the dispatcher thread");
        status = 1;
    } else {
        s->disp_started = true;
    }
    for (unsigned i = 0; status == 0 && i < s->nthreads; i++) {
        if (pthread_create(&s->io_tids[i], NULL, gm_io_thread_main, s->io[i]) != 0) {
            gm_log(GM_LOG_FATAL, "cannot start I/O thread %u", i);
            status = 1;
            break;
        }
        s->started_io++;
    }
    /* The signals stay blocked on this thread too: the main loop reads them
       through a signalfd. */
    (void)old;
    if (status) {
        stop_threads(s);
        return status;
    }

    ev_signal_init(&s->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&s->sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&s->sig_usr1, on_graceful_signal, SIGUSR1);
    ev_signal_init(&s->sig_hup, on_hup, SIGHUP);
    s->sig_usr1.data = s;
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
    ev_signal_start(s->loop, &s->sig_usr1);
    ev_signal_start(s->loop, &s->sig_hup);
    ev_async_init(&s->control, on_control);
    s->control.data = s;
    ev_async_start(s->loop, &s->control);
    ev_timer_init(&s->accept_resume, on_accept_resume, ACCEPT_PAUSE_SECONDS, 0.);
    s->accept_resume.data = s;
    if (s->persist) {
        ev_timer_init(&s->persist_watch, on_persist_watch, 1., 1.);
        s->persist_watch.data = s->persist;
        ev_timer_start(s->loop, &s->persist_watch);
    }
    spare_take(s);
    for (unsigned i = 0; i < s->nls; i++)
        ev_io_start(s->loop, &s->ls[i].w);
    gm_log(GM_LOG_NOTICE, "gearmand %s ready: %u I/O threads", s->cfg->version ? s->cfg->version : "",
           s->nthreads);

    ev_run(s->loop, 0);

    stop_listening(s);
    ev_signal_stop(s->loop, &s->sig_term);
    ev_signal_stop(s->loop, &s->sig_int);
    ev_signal_stop(s->loop, &s->sig_usr1);
    ev_signal_stop(s->loop, &s->sig_hup);
    ev_async_stop(s->loop, &s->control);
    if (s->persist)
        ev_timer_stop(s->loop, &s->persist_watch);
    stop_threads(s);
    gm_log(GM_LOG_NOTICE, "Shutdown complete");
    return 0;
}
