/*
 * dispatcher.h: the dispatcher, the one thread that owns all job state.
 *
 * It drains every I/O thread's inbound ring, runs each request against the
 * job store (jobs.h) and answers by producing messages on the outbound ring
 * of the connection's I/O thread.  It never blocks and takes no locks: when
 * an outbound ring is full the reply waits in an overflow list.  Timers
 * (epoch and scheduled jobs, CAN_DO_TIMEOUT) run on its loop.
 *
 * The dispatcher can be driven two ways: by its own libev loop on its own
 * thread (gm_disp_thread_main, used by the server), or by hand (the unit
 * tests push messages on the rings, call gm_disp_drain() and read the
 * replies off the outbound rings; no sockets, no threads).
 */
#ifndef GM_DISPATCHER_H
#define GM_DISPATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/proto/frontend.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/config/server_config.h"

struct gm_dispatcher;

enum gm_stop_how { GM_STOP_NOW = 0, GM_STOP_ACCEPTING = 1 };

/* Callbacks from the dispatcher to the rest of the server (all optional). */
struct gm_disp_hooks {
    void *arg;
    /* Wakes I/O thread `thread`: its outbound ring has news or room. */
    void (*wake_io)(void *arg, unsigned thread);
    /* Asks the server to stop (GM_STOP_NOW: `shutdown`, or a graceful
       shutdown whose last job ended) or to stop accepting connections
       (GM_STOP_ACCEPTING: `shutdown graceful`). */
    void (*request_shutdown)(void *arg, int how);
    /* Returns the wall clock in milliseconds (tests replace it). */
    int64_t (*now_ms)(void *arg);
    /* Adds what the server knows (queue backend, its health and figures)
       to a state view being built, on the dispatcher thread. */
    void (*fill_server_view)(void *arg, struct gm_view_server *out);
};

/* Creates a dispatcher over n channels (one per I/O thread); returns NULL if
   memory is short.  cfg must outlive it. */
struct gm_dispatcher *gm_disp_new(const struct gm_server_config *cfg, struct gm_channel *chans,
                                  unsigned n, const struct gm_disp_hooks *hooks);

/* Frees every job, function and peer, and releases every reference held. */
void gm_disp_free(struct gm_dispatcher *d);

/* Handles up to `budget` inbound messages across all rings; returns how many
   were handled (fewer than budget means the rings were empty). */
size_t gm_disp_drain(struct gm_dispatcher *d, size_t budget);

/* Publishes produced replies, moves overflow into rings with room, wakes
   I/O threads that have news.  Called once per loop iteration. */
void gm_disp_flush(struct gm_dispatcher *d);

/* Runs the timers due at now_ms; returns the time of the next one, or -1. */
int64_t gm_disp_run_timers(struct gm_dispatcher *d, int64_t now_ms);

/* Enters graceful mode: asks for shutdown once no job is queued or running
   (at once if none is). */
void gm_disp_begin_graceful(struct gm_dispatcher *d);

struct gm_persist_channel;
struct gm_qrow;

/* Connects the dispatcher to the persistence thread (before it runs).
   on_shutdown: write background jobs only at a clean stop
   (--store-queue-on-shutdown); stores_epoch: the backend keeps run times
   (otherwise epoch and scheduled jobs are refused with QUEUE_ERROR). */
void gm_disp_attach_persist(struct gm_dispatcher *d, struct gm_persist_channel *ch,
                            void (*wake)(void *arg), void *arg, bool stores_epoch, bool on_shutdown);

/* Main thread, before the dispatcher runs: this server is a --ha standby
   (docs/ha.md); it refuses every submit, from any port, with ERROR
   QUEUE_ERROR, for as long as it runs. */
void gm_disp_set_standby(struct gm_dispatcher *d);

/* Main thread, before the dispatcher runs: recreates one stored job (it
   keeps its handle; new handles continue above the highest replayed one).
   Returns 0, 1 if the job is already here (replay is idempotent), or -1
   with a reason in err for a row that cannot be used. */
int gm_disp_replay_row(struct gm_dispatcher *d, const struct gm_qrow *row, char *err, size_t errlen);
/* Applies the --policy options again (over the stored policies). */
void gm_disp_reapply_policy_options(struct gm_dispatcher *d);
/* A policy the queue stored (a run-time `policy`), given back at start-up
   (gm_qpolicy_cb; arg is the dispatcher): applied unless it cannot be
   read (logged).  The --policy options are applied again after them. */
void gm_disp_replay_policy(void *arg, const char *function, size_t function_len, const char *policy,
                           size_t policy_len);

/* Main thread, before the dispatcher runs: new handles start at least at
   `next` (the stored handle counter). */
void gm_disp_set_next_handle(struct gm_dispatcher *d, uint64_t next);

/* Number of jobs in existence (main thread, before the dispatcher runs). */
uint64_t gm_disp_job_count(const struct gm_dispatcher *d);

struct ev_loop;

/* Thread side: sets up the libev watchers on a loop of its own (host ==
   NULL: run it with gm_disp_thread_main) or, hosted (one I/O thread, -t 1),
   on the I/O thread's loop, whose prepare step then calls gm_disp_prepare.
   Returns 0 or -1. */
int gm_disp_loop_init(struct gm_dispatcher *d, struct ev_loop *host);

/* Hosted only: end of an iteration (publish replies, arm the timer). */
void gm_disp_prepare(struct gm_dispatcher *d);

/* Host loop only, at stop: what the dispatcher does before it stops (write
   the queue with --store-queue-on-shutdown, publish last replies). */
void gm_disp_final(struct gm_dispatcher *d);

/* Thread entry: runs the loop until gm_disp_stop(). */
void *gm_disp_thread_main(void *dispatcher);

/* Any thread: wakes the dispatcher (new inbound messages, or room). */
void gm_disp_wake(struct gm_dispatcher *d);

/* Any thread: makes the loop return; ring contents stay for gm_disp_free. */
void gm_disp_stop(struct gm_dispatcher *d);

struct gm_acl;
/* Any thread (the main thread, at start-up and on SIGHUP): hands the
   dispatcher a new access table (config/acl.h), taken before its next
   request; it frees the one it replaces.  A table handed over before the
   one before it was taken replaces that one, freed here. */
void gm_disp_set_acl(struct gm_dispatcher *d, struct gm_acl *acl);

/* Any thread: begins graceful mode from outside the dispatcher thread. */
void gm_disp_request_graceful(struct gm_dispatcher *d);

#endif /* GM_DISPATCHER_H */
