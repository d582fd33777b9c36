/*
 * server.c: threads and the main loop (see server.h): the server built
 * (channels, dispatcher, I/O threads, queue opened and replayed), the
 * threads started and stopped in order, signals (SIGHUP: the log
 * reopened, the TLS files and the access table read again), the watch
 * on the queue backend, and with --ha the server's role: a server is
 * active or standby for its whole life, and a change of role (the lock
 * taken or lost, as the persistence thread reports) stops it and builds
 * the next one around the same queue connection (gm_server_rebuild), so a
 * server that takes over replays exactly as one starting, and one that
 * loses the lock keeps nothing: no job, no connection, no Gear port.  Listening and accepting are listeners.c; the state both
 * share is server_int.h.
 *
 * Runs on the main thread.
 */
#include "config.h"

#include "libgearman-server/server/server_int.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/config/acl.h"
#include "libgearman-server/config/tls_ctx.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/io/io_thread.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/persist/persist.h"
#include "libgearman-server/server/notify.h"

#define PERSIST_RING_SLOTS 65536
#define IN_RING_SLOTS 16384
#define OUT_RING_SLOTS 16384

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
    if (s->role != GM_HA_NONE)
        out->ha_role = s->role == GM_HA_ACTIVE ? "active" : "standby";
}

/* Persistence thread (through its --ha hook): the lock was taken or lost;
   on_control reads which. */
static void
ha_changed(void *arg)
{
    struct gm_server *s = arg;
    ev_async_send(s->loop, &s->control);
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

/* With --ha: takes this server's role from the queue's lock (held: active,
   else standby) and tells the persistence thread and, for a standby, the
   dispatcher. */
static void
take_role(struct gm_server *s, void *state)
{
    const struct gm_server_config *cfg = s->cfg;
    char err[256] = "";
    int held = cfg->queue->lead(state, err, sizeof err);
    s->role = held == 1 ? GM_HA_ACTIVE : GM_HA_STANDBY;
    gm_persist_set_ha(s->persist, s->role, ha_changed, s);
    if (held == 1) {
        gm_log(GM_LOG_NOTICE, "ha: active: this server holds the %s queue's lock; replaying it", cfg->queue->name);
        return;
    }
    gm_disp_set_standby(s->disp);
    if (held == 0)
        gm_log(GM_LOG_NOTICE, "ha: standby: another server holds the queue lock; the Gear port opens when "
               "this server takes it (tried every %d ms)", GM_HA_TRY_MS);
    else
        gm_log(GM_LOG_WARNING, "ha: standby: the %s queue cannot be reached (%s); trying every %d ms",
               cfg->queue->name, err, GM_HA_TRY_MS);
}

/* Opens the durable queue (or takes the one `kept` from the server before,
   with --ha), replays it into the dispatcher (before anything listens)
   unless this server is a standby, and prepares the persistence thread.
   Returns 0 or -1 (logged). */
static int
open_queue(struct gm_server *s, void *kept)
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
    void *state = kept ? kept : cfg->queue->open(&opts, err, sizeof err);
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
    if (cfg->ha) {
        take_role(s, state);
        if (s->role == GM_HA_STANDBY)
            return 0; /* the active server has the queue: nothing to replay */
    }
    /* Replay before anything listens; the persistence thread is not
       running yet, so the backend is ours to use from here. */
    uint64_t next = 0;
    if (cfg->queue->load_counter && cfg->queue->load_counter(state, &next, err, sizeof err) < 0) {
        gm_log(GM_LOG_FATAL, "queue %s: cannot read the handle counter: %s", cfg->queue->name, err);
        return -1;
    }
    gm_disp_set_next_handle(s->disp, next);
    if (cfg->queue->load_policies) {
        if (cfg->queue->load_policies(state, gm_disp_replay_policy, s->disp, err, sizeof err) < 0) {
            gm_log(GM_LOG_FATAL, "queue %s: cannot read the stored policies: %s", cfg->queue->name, err);
            return -1;
        }
        gm_disp_reapply_policy_options(s->disp);
    }
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

/* Reads --acl-file and --http-token-file into a new access table and hands
   it to the dispatcher, which frees the one it replaces.  Returns 0, or -1
   if a file cannot be used (logged with its name and line; at start-up
   that stops the server, on SIGHUP the table in force stays). */
static int
load_access(struct gm_server *s, bool at_start)
{
    const struct gm_server_config *cfg = s->cfg;
    if (!cfg->acl_file && !cfg->http_token_file)
        return 0;
    char err[512];
    struct gm_acl *a = gm_acl_load(cfg->acl_file, cfg->http_token_file, err, sizeof err);
    if (!a) {
        gm_log(at_start ? GM_LOG_FATAL : GM_LOG_ERROR, "%s%s", err,
               at_start ? "" : " (SIGHUP: the access rules in force stay)");
        return -1;
    }
    size_t rules = gm_acl_rule_count(a), tokens = gm_acl_token_count(a);
    gm_disp_set_acl(s->disp, a); /* the dispatcher's from here on: taken before its next request */
    gm_log(GM_LOG_NOTICE, "access control%s: %zu ACL lines%s%s, %zu tokens%s%s", at_start ? "" : " reloaded",
           rules, cfg->acl_file ? " from " : " (no --acl-file: everything allowed)",
           cfg->acl_file ? cfg->acl_file : "", tokens, cfg->http_token_file ? " from " : "",
           cfg->http_token_file ? cfg->http_token_file : "");
    return 0;
}

/* Reads the TLS files and hands the context to every I/O thread (at
   start, and on SIGHUP: a set that fails to load leaves the one in use).
   Returns 0, or -1 after logging why. */
static int
load_tls(struct gm_server *s, bool reload)
{
    char err[600];
    struct gm_tls_ctx *x = gm_tls_ctx_load(s->cfg, err, sizeof err);
    if (!x) {
        gm_log(reload ? GM_LOG_ERROR : GM_LOG_FATAL, "%s%s", err,
               reload ? " (SIGHUP: the files read before stay in use)" : "");
        return -1;
    }
    for (unsigned i = 0; i < s->nthreads; i++)
        gm_io_set_tls(s->io[i], x);
    gm_tls_ctx_unref(x);
    return 0;
}

/* Builds a server; kept: the queue's state from the server before (--ha),
   or NULL to open it. */
static struct gm_server *
server_build(const struct gm_server_config *cfg, void *kept)
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
    if ((cfg->ssl && load_tls(s, false) < 0) || load_access(s, true) < 0)
        goto fail;
    if (cfg->queue && open_queue(s, kept) < 0) {
        kept = NULL; /* open_queue's, closed or the persistence state's */
        goto fail;
    }
    return s;
oom:
    gm_log(GM_LOG_FATAL, "out of memory creating the server");
fail:
    if (kept)
        cfg->queue->close(kept);
    gm_server_free(s);
    return NULL;
}

struct gm_server *
gm_server_new(const struct gm_server_config *cfg)
{
    return server_build(cfg, NULL);
}

struct gm_server *
gm_server_rebuild(struct gm_server *s)
{
    const struct gm_server_config *cfg = s->cfg;
    void *kept = s->persist ? gm_persist_detach(s->persist) : NULL;
    gm_server_free(s);
    struct gm_server *n = server_build(cfg, kept);
    if (n && gm_server_listen(n) < 0) {
        gm_server_free(n);
        n = NULL;
    }
    return n;
}

void
gm_server_free(struct gm_server *s)
{
    if (!s)
        return;
    gm_persist_free(s->persist);
    if (s->pch_ready)
        gm_persist_channel_destroy(&s->pch);
    listeners_close(s);
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
/* Watching the queue backend                                          */
/* ------------------------------------------------------------------ */

static void
on_persist_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    gm_persist_watch(w->data);
}

/* ------------------------------------------------------------------ */
/* Signals and shutdown                                                */
/* ------------------------------------------------------------------ */

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
    (void)revents;
    struct gm_server *s = w->data;
    if (gm_log_reopen() < 0)
        gm_log(GM_LOG_ERROR, "SIGHUP: cannot reopen the log file: %s", strerror(errno));
    else
        gm_log(GM_LOG_NOTICE, "SIGHUP, reopening log file");
    if (s->cfg->ssl && load_tls(s, true) == 0)
        gm_log(GM_LOG_NOTICE, "SIGHUP: TLS certificate, key and CA read again; new connections use them");
    load_access(s, false);
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
    char why[160];
    enum gm_ha_event e = s->persist && !s->rebuild ? gm_persist_ha_event(s->persist, why, sizeof why) : GM_HA_QUIET;
    if (e == GM_HA_TOOK_LOCK) {
        gm_log(GM_LOG_NOTICE, "ha: took the queue lock: this server becomes the active one");
    } else if (e == GM_HA_LOST_LOCK) {
        /* Nothing more is acknowledged from here (the persistence thread
           refuses every ADD); the Gear port closes now, the connections
           as the threads stop. */
        gm_log(GM_LOG_ERROR, "ha: lost the queue lock (%s): not serving; closing the Gear port and every "
               "connection, then standby", why);
        stop_listening(s);
    }
    if (e != GM_HA_QUIET) {
        s->rebuild = true;
        ev_break(loop, EVBREAK_ALL);
    }
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
    /* before any thread can ask for something through it */
    ev_async_init(&s->control, on_control);
    s->control.data = s;
    ev_async_start(s->loop, &s->control);
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
        ev_async_stop(s->loop, &s->control);
        return status;
    }

    ev_signal_init(&s->sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&s->sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&s->sig_usr1, on_graceful_signal, SIGUSR1);
    ev_signal_init(&s->sig_hup, on_hup, SIGHUP);
    s->sig_usr1.data = s;
    s->sig_hup.data = s;
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
    ev_signal_start(s->loop, &s->sig_usr1);
    ev_signal_start(s->loop, &s->sig_hup);
    if (s->persist) {
        ev_timer_init(&s->persist_watch, on_persist_watch, 1., 1.);
        s->persist_watch.data = s->persist;
        ev_timer_start(s->loop, &s->persist_watch);
    }
    listeners_start(s);
    gm_log(GM_LOG_NOTICE, "gearmand %s ready%s: %u I/O threads", s->cfg->version ? s->cfg->version : "",
           s->role == GM_HA_STANDBY ? " as a standby (no Gear port)" : s->role == GM_HA_ACTIVE ? " as the active server" : "",
           s->nthreads);
    /* A --ha standby is up (its HTTP port answers), not serving: systemd
       sees it started, and its status says which it is; each change of
       role says so again. */
    if (s->role == GM_HA_STANDBY)
        gm_notify_ready("standby (--ha): not holding the queue lock; Gear port %s closed", s->cfg->port);
    else
        gm_notify_ready("%sserving on port %s with %u I/O threads", s->role == GM_HA_ACTIVE ? "active (--ha): " : "",
                        s->cfg->port, s->nthreads);

    ev_run(s->loop, 0);

    stop_listening(s);
    ev_signal_stop(s->loop, &s->sig_term);
    ev_signal_stop(s->loop, &s->sig_int);
    ev_signal_stop(s->loop, &s->sig_usr1);
    ev_signal_stop(s->loop, &s->sig_hup);
    /* libev unblocks a signal whose watcher stops: for the next server
       (--ha), hold them back again until its loop takes them over */
    if (s->rebuild)
        pthread_sigmask(SIG_BLOCK, &block, NULL);
    ev_async_stop(s->loop, &s->control);
    if (s->persist)
        ev_timer_stop(s->loop, &s->persist_watch);
    stop_threads(s);
    if (s->rebuild)
        return GM_SERVER_REBUILD;
    gm_log(GM_LOG_NOTICE, "Shutdown complete");
    return 0;
}
