/*
 * dispatcher_int.h: the dispatcher's state and its model layer, shared by
 * the files that make up the dispatcher (see dispatcher.c for the list).
 * The model files call only each other, bottom up in the order declared
 * here; the handlers (handlers.h) call the model; dispatcher.c calls both.
 * Dispatcher thread only; nothing here is visible to I/O threads.
 */
#ifndef GM_DISPATCHER_INT_H
#define GM_DISPATCHER_INT_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "libgearman-server/base/busy_poll.h"
#include "libgearman-server/base/heap.h"
#include "libgearman-server/config/acl.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/dispatch/jobs.h"
#include "libgearman-server/persist/persist.h"

/* The dispatcher's side of one I/O thread. */
struct gm_disp_port {
    struct gm_channel *ch;
    struct gm_peer **peers;      /* by connection slot */
    uint32_t npeers;             /* size of peers[] */
    struct gm_out_spill spill;   /* replies that found the ring full, in order */
    bool produced;               /* replies produced since the last publish */
    uint32_t round;              /* advances each time its I/O thread has taken every reply */
    uint32_t held;               /* its peers with requests held back */
};

/* A request of a peer held back, in order (dispatcher.c). */
struct gm_held {
    struct gm_held *next;
    struct gm_in m;
};

/* A background job waiting for its ADD to be acknowledged. */
struct gm_pending {
    uint64_t seq;
    struct gm_job *job;
};

/* The dispatcher's side of the persistence thread. */
struct gm_disp_persist {
    bool active;                 /* background jobs are written as they come and go */
    bool on_shutdown;            /* --store-queue-on-shutdown: written only at a clean stop */
    bool stores_epoch;           /* the backend keeps run times */
    bool standby;                /* --ha standby: another server is active; every submit is
                                    refused (QUEUE_ERROR) */
    struct gm_persist_channel *ch;
    void (*wake)(void *arg);
    void *arg;
    uint64_t seq;                /* last sequence number given to a record */
    uint64_t handle_hw;          /* handle numbers below this are covered by a stored counter */
    bool produced;               /* records produced since the last publish */
    struct gm_prec_spill spill;  /* records that found the ring full, in order */
    struct gm_pending *pend;     /* FIFO ring of jobs waiting for their ack */
    uint32_t pend_head, pend_len, pend_cap;
};

/* Identities whose denials are logged at most once a second each
   (access.c), by hash. */
#define GM_DENIAL_LOG_SLOTS 64
struct gm_denial_log {
    uint32_t hash;
    bool used;
    struct gm_log_limit lim;
};

/* Owner: the dispatcher thread writes and reads every field, except
   stop_flag and graceful_flag, atomics that any thread sets (gm_disp_stop,
   gm_disp_request_graceful) and the dispatcher reads and clears, and
   acl_next, which any thread sets (gm_disp_set_acl) and the dispatcher
   takes. */
struct gm_dispatcher {
    const struct gm_server_config *cfg;
    struct gm_disp_hooks hooks;
    struct gm_disp_port *ports;
    unsigned nports;

    struct gm_htab functions;    /* gm_function.hnode, by name */
    struct gm_list function_list;/* creation order, for `status` */
    uint32_t function_count;
    struct gm_htab by_handle;    /* gm_job.by_handle */
    struct gm_htab by_unique;    /* gm_job.by_unique, keyed by (function, unique or data), and
                                    each unique key's newest job by the key alone (job_store.c) */
    uint64_t next_handle;
    uint64_t job_count;          /* jobs in existence (queued, future, running) */
    struct gm_list jobs;         /* gm_job.all_link: every job in creation order */
    struct gm_list dead;         /* gm_job.link of the dead letters, oldest first (lifecycle.c) */
    uint64_t dead_dropped;       /* dead letters dropped past --dead-letter-max */
    uint64_t rng;                /* retry jitter (lifecycle.c) */
    struct {
        struct gm_htab index;    /* gm_outcome.by_handle (outcomes.c); made at the first */
        struct gm_list fifo;     /* oldest first */
        size_t bytes;
        uint64_t count, dropped; /* kept now; dropped early for memory */
    } outcomes;
    uint64_t nstate[GM_JOB_STATES]; /* jobs in each state (job_set_state) */
    uint64_t peer_count;
    uint64_t visits;             /* entries looked at by the searches whose length depends on
                                    the state (the unique index, a worker's registrations, job
                                    listings): tests pin their bounds with it */

    struct gm_heap timers;       /* gm_job by due time: future jobs and running-job deadlines */

    struct gm_disp_persist persist;

    struct gm_list held_peers;   /* gm_peer.held_link: peers with requests held back */
    uint64_t round_limit;        /* listing bytes a peer may have queued in one round */

    struct gm_block *unref_blk;  /* references released in batches (see release_in) */
    uint32_t unref_n;

    struct gm_state_view view;   /* what a front-end may read (view.c) */
    struct gm_peer *serving;     /* whose front-end request serve() answers now (the
                                    view's actions log it); NULL outside serve() */
    const char *serving_who;     /* and the request's identity (token:NAME), or NULL: its peer's */
    const char *serving_path;    /* and its path, serving_path_len bytes (denials name it) */
    size_t serving_path_len;

    /* access control (access.c) */
    _Atomic(struct gm_acl *) acl_next; /* a table handed over, not taken yet */
    struct gm_acl *acl;          /* the table in force (with tokens, or rules, or both); NULL: none */
    bool acl_enforced;           /* an ACL file is in force: what it does not grant is denied */
    uint32_t acl_gen;            /* advances with every table taken: peers' cached grants are stale */
    uint64_t next_fn_serial;     /* the serial number the next function gets (gm_function.serial) */
    uint64_t denied[GM_PERM_COUNT]; /* requests denied, by the permission they lacked */
    char denied_text[320];       /* why the last request was denied ("WHO lacks PERM for ...") */
    struct gm_denial_log denial_log[GM_DENIAL_LOG_SLOTS];
    int64_t start_ms;
    int64_t drain_now_ms;   /* the clock, read once per gm_disp_drain; 0 outside one */

    bool graceful;               /* stop once job_count reaches 0 */
    bool shutdown_requested;
    bool tearing_down;           /* gm_disp_free: replies go nowhere */

    /* libev (only when run as a thread) */
    struct ev_loop *loop;
    ev_async wake;
    ev_prepare prepare;
    ev_timer timer;
    ev_idle more;                /* runs while the rings hold more than one budget */
    bool hosted;                 /* hosted: runs on the one I/O thread's loop (-t 1) */
    struct gm_busy_poll poll;    /* --busy-poll on its own loop (a shared loop's thread polls) */
    _Atomic int stop_flag;
    _Atomic int graceful_flag;
};

/* A job submission, from a packet, a front-end request or a replayed row. */
struct submit {
    const char *handle; size_t handle_len; /* replay: the stored handle; else NULL */
    const char *fn; size_t fn_len;
    const char *unique; size_t unique_len;
    const char *reducer; size_t reducer_len;
    const char *data; size_t data_len;
    uint8_t prio;
    bool background;
    int64_t when;          /* 0 = now */
    const char *who;       /* an HTTP request's identity (token:NAME); NULL: its peer's */
};

/* The time, in ms.  Inside gm_disp_drain it is the time the drain began:
   one clock read per batch of packets rather than one per job. */
static inline int64_t
now_ms(struct gm_dispatcher *d)
{
    return d->drain_now_ms ? d->drain_now_ms : d->hooks.now_ms(d->hooks.arg);
}

/* reply.c: replies queued for a connection's I/O thread. */

/* Replies at least this big are written at once: copying their bytes costs
   more than the write, and holding them would only add delay (measured:
   64 KiB foreground jobs lost 14 % when they waited). */
#define BATCH_REPLY_MAX 4096

/* Queues one packet: the fields are copied, `body` (if any) is appended as
   the last field by reference (a new reference is taken). */
void send_packet_flagged(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type,
                         const struct gm_field_ref *f, size_t n, const struct gm_slice *body,
                         uint8_t flags);
void send_packet(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type, const struct gm_field_ref *f,
                 size_t n, const struct gm_slice *body);
void send_simple(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type);
/* ERROR code text (and a log line, limited per connection: gm_log_peer). */
void send_error(struct gm_dispatcher *d, gm_conn_id conn, const char *code, const char *text);
/* ERROR for a name gm_name_check refuses; true if it was refused. */
bool refuse_bad_name(struct gm_dispatcher *d, gm_conn_id conn, enum gm_name_kind kind, const char *name,
                     size_t len);
void send_job_created(struct gm_dispatcher *d, gm_conn_id conn, const struct gm_job *job, uint8_t flags);
/* GM_OUT_F_MAY_WAIT if the client waits on another job besides this one. */
uint8_t more_replies_coming(const struct gm_peer *p);
/* Queues bytes for a connection by copying them (admin replies). */
void gm_disp_send_bytes(struct gm_dispatcher *d, gm_conn_id conn, const void *p, size_t len);
/* Queues a block's bytes by reference (takes over the caller's reference). */
void gm_disp_send_block(struct gm_dispatcher *d, gm_conn_id conn, struct gm_block *b, size_t len);
/* Queues a front-end's answer, raw bytes of a block (takes over the
   reference; released if it cannot be queued); false if it could not. */
bool send_raw(struct gm_dispatcher *d, gm_conn_id conn, struct gm_block *b, size_t len);
/* Asks the I/O thread to close the connection after what is queued. */
void gm_disp_send_close(struct gm_dispatcher *d, gm_conn_id conn);

/* functions.c: the function table. */
uint32_t gm_disp_name_hash(const char *name, size_t len);
struct gm_function *gm_disp_function_find(struct gm_dispatcher *d, const char *name, size_t len);
/* Finds or creates; NULL if memory is short. */
struct gm_function *gm_disp_function_get(struct gm_dispatcher *d, const char *name, size_t len);

/* sleepers.c: workers asleep on their functions. */
void peer_join_sleepers(struct gm_peer *p);
void peer_leave_sleepers(struct gm_peer *p);
bool peer_in_sleepers(const struct gm_peer *p);
/* NOOP to sleeping workers of fn: every one, or -w N of them. */
void wake_workers(struct gm_dispatcher *d, struct gm_function *fn);
/* A job of fn stopped running: under a concurrency limit (lifecycle.c),
   a sleeping worker may take the next. */
void wake_for_concurrency(struct gm_dispatcher *d, struct gm_function *fn);

/* records.c: records to the persistence thread. */
/* Adds a connection to a waiting list (grown as needed). */
bool waiters_add(struct gm_waiters **w, gm_conn_id conn);
/* The job's ADD, tracked in the pending FIFO until acknowledged. */
bool persist_add(struct gm_dispatcher *d, struct gm_job *job);
void persist_done(struct gm_dispatcher *d, struct gm_job *job);
/* The bytes stored with a job about its lifecycle (gm_qrecord.lifecycle,
   read back by lifecycle_replayed): version, failed attempts, the death's
   reason or 0, its time (8 bytes, big-endian), then the exception's bytes;
   in a new block, *len of them; NULL for a job that never failed. */
#define GM_LIFE_VERSION 1
#define GM_LIFE_HEAD 11
struct gm_block *persist_lifecycle_bytes(const struct gm_job *job, uint32_t *len);
/* A function's policy changed at run time: stored (or forgotten, once
   reset) when a durable queue is configured. */
void persist_policy(struct gm_dispatcher *d, const struct gm_function *fn);
/* A stored job's lifecycle changed (a retry waits, it died, it was sent
   back): stores it again with the bytes in life (the reference is taken;
   NULL: none).  Nothing for a job that is not stored. */
void persist_lifecycle(struct gm_dispatcher *d, struct gm_job *job, struct gm_block *life, uint32_t life_len);
void persist_counter(struct gm_dispatcher *d);
/* Publishes records (moving spilled ones into the ring first) and wakes
   the persistence thread. */
void persist_flush(struct gm_dispatcher *d);
void persist_store_all(struct gm_dispatcher *d);

/* job_store.c: the jobs. */
struct gm_job *job_create(struct gm_dispatcher *d, struct gm_function *fn, const struct submit *s,
                          struct gm_block *own);
/* The job's unique key as submitted: false if it has none to index
   (empty, or "-" with empty data); else the key (the unique key, or the
   data for "-") and whether it is the data. */
bool submit_unique_key(const struct submit *s, bool *data_keyed, const char **key, size_t *len);
struct gm_job *job_unique_find(struct gm_dispatcher *d, const struct gm_function *fn, bool data_keyed,
                               const char *key, size_t len);
void job_index_unique(struct gm_dispatcher *d, struct gm_job *job, bool data_keyed, const char *key,
                      size_t len);
/* The newest job holding this (not data-keyed) unique key in any function,
   or NULL: what GET_STATUS_UNIQUE reports, as gearmand's first hash hit. */
struct gm_job *job_unique_head(struct gm_dispatcher *d, const char *key, size_t len);
void job_enqueue(struct gm_dispatcher *d, struct gm_job *job, bool at_head);
/* A queued job goes to the timer heap if its time is to come, else to
   its queue.  False only if the heap had no memory for it (then nothing
   is done unless or_now: it is queued now). */
bool job_place(struct gm_dispatcher *d, struct gm_job *job, bool or_now);
bool job_attach_client(struct gm_job *job, struct gm_peer *p);
void job_detach(struct gm_attach *a);
void job_tell_clients(struct gm_dispatcher *d, struct gm_job *job, uint32_t type, const struct gm_slice *body);
void job_free(struct gm_dispatcher *d, struct gm_job *job);
/* Moves a job to another state, keeping the counts of its function and of
   the dispatcher (nstate): every change of gm_job.state goes through it,
   except a freed job's GM_JOB_FREED. */
void job_set_state(struct gm_dispatcher *d, struct gm_job *job, int state);
void job_requeue(struct gm_dispatcher *d, struct gm_job *job, const char *why);
void job_take_back(struct gm_dispatcher *d, struct gm_job *job);
void job_uncount(struct gm_dispatcher *d);
/* WORK_FAIL to the job's clients, counted as failed, then freed. */
void job_fail(struct gm_dispatcher *d, struct gm_job *job);
void job_unindex_unique(struct gm_dispatcher *d, struct gm_job *job);
void job_reindex_unique(struct gm_dispatcher *d, struct gm_job *job);
/* The by-handle index's hash: a handle that ends in a number (ours all do:
   prefix, then the job counter) hashes to that number, so consecutive jobs
   sit in consecutive buckets.  A queue of millions of jobs then fills and
   empties its buckets in order, one cache miss per cache line of buckets
   instead of one per job.  Other handles hash by their bytes. */
static inline uint32_t
gm_disp_handle_hash(const char *h, size_t len)
{
    uint64_t number = 0, scale = 1;
    size_t digits = 0;
    while (digits < len && digits < 19 && h[len - 1 - digits] >= '0' && h[len - 1 - digits] <= '9') {
        number += (uint64_t)(h[len - 1 - digits] - '0') * scale;
        scale *= 10;
        digits++;
    }
    return digits ? (uint32_t)number : gm_disp_name_hash(h, len);
}

/* The live job with that handle (a dead letter is not one), or NULL. */
struct gm_job *gm_disp_job_by_handle(struct gm_dispatcher *d, const char *h, size_t len);
/* The job or dead letter with that handle, or NULL. */
struct gm_job *job_find_handle(struct gm_dispatcher *d, const char *h, size_t len);
/* Cancels a job as `cancel job` does: clients get WORK_FAIL, a queued job is
   freed, a running one is marked ignored. */
void gm_disp_job_cancel(struct gm_dispatcher *d, struct gm_job *job);
/* Fails the function's queued and future jobs (WORK_FAIL to their
   clients); returns how many. */
uint64_t gm_disp_function_fail_waiting(struct gm_dispatcher *d, struct gm_function *fn);
/* Fails the function's queued and future jobs, discards its dead letters,
   then frees it. */
void gm_disp_function_drop(struct gm_dispatcher *d, struct gm_function *fn);
void gm_disp_function_free(struct gm_function *fn);

/* outcomes.c: what became of finished background jobs, for
   --keep-results seconds, GM_OUTCOMES_MEMORY bytes at most. */
#define GM_OUTCOMES_MEMORY (64u << 20)
enum gm_outcome_state { GM_OUTCOME_COMPLETE = 1, GM_OUTCOME_FAILED };
struct gm_outcome;
struct gm_outcome_view {
    const char *handle, *function, *unique, *result;
    uint32_t handle_len, function_len, unique_len, result_len;
    int state;                   /* enum gm_outcome_state */
    unsigned attempts;
    int64_t finished_ms;
};
/* A background job ends (before it is freed): its outcome is kept, with
   the first --keep-results-bytes of result. */
void outcome_keep(struct gm_dispatcher *d, const struct gm_job *job, enum gm_outcome_state state,
                  const char *result, size_t result_len);
/* The outcome kept for that handle, or NULL (none, or too old). */
const struct gm_outcome *outcome_find(struct gm_dispatcher *d, const char *handle, size_t len);
void outcome_view(const struct gm_outcome *o, struct gm_outcome_view *v);
void outcomes_free(struct gm_dispatcher *d);

/* lifecycle.c: policies, retries, time limits, dead letters, pause. */
void lifecycle_init(struct gm_dispatcher *d);
/* Applies --policy (the command line wins over stored policies). */
void lifecycle_apply_options(struct gm_dispatcher *d);
void lifecycle_free(struct gm_dispatcher *d);
/* The function's lifecycle record, made if it has none; NULL if memory is short. */
struct gm_policy *lifecycle_policy(struct gm_function *fn);
/* Whether a failed attempt of this job is the lifecycle's to handle: its
   function has a policy, it is a background job, not cancelled. */
static inline bool
lifecycle_takes(const struct gm_job *job)
{
    return job->fn->policy && job->fn->policy->set && (job->flags & GM_JOB_BACKGROUND) &&
           !(job->flags & GM_JOB_IGNORED);
}
/* A running job's attempt failed: taken back from its worker, then retried
   after its backoff or, its attempts used, made a dead letter. */
void lifecycle_attempt_failed(struct gm_dispatcher *d, struct gm_job *job, enum gm_death why,
                              const char *exception, size_t exception_len);
/* Whether the job with that handle was taken back from worker p by its
   time limit (lately: the last GM_TAKEN_BACK_KEPT). */
bool lifecycle_was_taken_back(const struct gm_peer *p, const char *handle, size_t len);
/* A running job's deadline passed: true if its policy dealt with it. */
bool lifecycle_timed_out(struct gm_dispatcher *d, struct gm_job *job);
/* The deadline a job of fn taken now gets, in ms from now (0 = none),
   given the registration's CAN_DO_TIMEOUT. */
uint32_t lifecycle_run_limit_ms(const struct gm_function *fn, uint32_t can_do_timeout_ms);
void lifecycle_set_paused(struct gm_dispatcher *d, struct gm_function *fn, bool paused);
/* A dead letter goes back to the queue (attempts from 0); job_free
   discards one. */
void lifecycle_revive(struct gm_dispatcher *d, struct gm_job *job);
/* Discards fn's dead letters (the function is dropped). */
void lifecycle_forget_function(struct gm_dispatcher *d, struct gm_function *fn);
const char *lifecycle_death_name(unsigned why);
/* Whether `show policies` (and a view's policies) lists the function: it
   has a policy set, or is paused. */
static inline bool
lifecycle_listed(const struct gm_function *fn)
{
    return fn->policy && (fn->policy->set || fn->policy->paused);
}
/* What `show job` says of the job, dead letter or kept outcome with that
   handle, into *out (frontend.h's description, its pointers valid until
   the state changes): 0, or -1 if none has it. */
int lifecycle_describe(struct gm_dispatcher *d, const char *handle, size_t len, struct gm_view_job_state *out);
/* Calls cb for the dead letters, oldest first, of fn (NULL: of every
   function), after skipping `skip` of them, until cb returns false; each
   one looked at counts in d->visits. */
void lifecycle_each_dead(struct gm_dispatcher *d, const struct gm_function *fn, uint64_t skip,
                         bool (*cb)(void *arg, const struct gm_job *job), void *arg);
/* `retry dead HANDLE` (retry) or `discard dead HANDLE`: 0, or -1 if no
   dead letter has that handle (nothing changes). */
int lifecycle_dead_one(struct gm_dispatcher *d, const char *handle, size_t len, bool retry);
/* `retry dead all FUNC` or `discard dead all FUNC` (fn NULL: none):
   returns how many dead letters went. */
uint64_t lifecycle_dead_all(struct gm_dispatcher *d, struct gm_function *fn, bool retry);
/* What the lifecycle's operator requests fail with. */
enum { LIFECYCLE_UNKNOWN = -1, LIFECYCLE_BAD_NAME = -2, LIFECYCLE_NO_MEMORY = -3 };
/* The function named name[0..len); with make, made if new, with its
   lifecycle record (a policy or a pause may come before its first job).
   NULL with *err: LIFECYCLE_BAD_NAME (gm_name_check's fault in *bad),
   LIFECYCLE_UNKNOWN (no such function, without make) or
   LIFECYCLE_NO_MEMORY. */
struct gm_function *lifecycle_function(struct gm_dispatcher *d, const char *name, size_t len, bool make,
                                       int *err, const struct gm_name_fault **bad);
enum lifecycle_action { LIFECYCLE_PAUSE, LIFECYCLE_RESUME, LIFECYCLE_PURGE };
/* `pause FUNC`, `resume FUNC` or `purge FUNC` (the jobs removed in
   *purged), logged as asked by `by` (NULL: unknown): 0, or lifecycle_function's error
   (pause makes the function; resume and purge need it to exist). */
int lifecycle_function_action(struct gm_dispatcher *d, const char *name, size_t len, enum lifecycle_action what,
                              const struct gm_peer *by, uint64_t *purged, const struct gm_name_fault **bad);
/* Replay: a job's stored lifecycle bytes (its attempts; a dead letter
   again if it died). */
void lifecycle_replayed(struct gm_dispatcher *d, struct gm_job *job, const char *bytes, size_t len);
/* Passes a stop request (enum gm_stop_how) to the server; GM_STOP_NOW only
   once. */
void gm_disp_request_shutdown(struct gm_dispatcher *d, int how);

/* acks.c: acknowledgements from the persistence thread. */
void drain_acks(struct gm_dispatcher *d);
/* What is left of a job freed while STORING goes once its ADD is answered. */
void pending_release(struct gm_dispatcher *d, struct gm_job *job, bool stored);

/* workers.c: the worker registry. */
struct gm_job *pick_job(struct gm_dispatcher *d, struct gm_peer *p, struct gm_reg **reg_out,
                        uint32_t *idx_out);
/* The worker's registration of fn (and its index), or NULL. */
struct gm_reg *find_reg(struct gm_dispatcher *d, const struct gm_peer *p, const struct gm_function *fn,
                        uint32_t *idx);
/* Registers fn for the worker, or counts a repeat; false if the worker has
   GM_WORKER_REGS_MAX registrations and fn is not one of them. */
bool add_reg(struct gm_dispatcher *d, struct gm_peer *p, struct gm_function *fn, uint32_t timeout_ms);
void remove_reg(struct gm_dispatcher *d, struct gm_peer *p, uint32_t i);

/* reply.c: counts len bytes of a listing or response queued for conn in
   its peer's round (dispatcher.c holds a peer's requests past round_limit). */
void charge_reply(struct gm_dispatcher *d, gm_conn_id conn, size_t len);
/* Whether peer p has queued round_limit listing bytes in this round. */
bool over_round(const struct gm_dispatcher *d, const struct gm_peer *p);

/* The peer of connection id, or NULL (gone, or a stale id).  Inline: every
   inbound message and reply looks one up, and the model files that send
   replies need it without depending on peers.c. */
static inline struct gm_peer *
gm_disp_peer(struct gm_dispatcher *d, gm_conn_id id)
{
    unsigned t = gm_conn_thread(id);
    uint32_t slot = gm_conn_slot(id);
    if (t >= d->nports || slot >= d->ports[t].npeers)
        return NULL;
    struct gm_peer *p = d->ports[t].peers[slot];
    return p && p->id == id ? p : NULL;
}

/* access.c: permissions (config/acl.h). */
/* Takes the table the main thread handed over (gm_disp_set_acl): the one
   before is freed, peers' cached grants go stale, and workers lose the
   functions it no longer grants them work on (as with CANT_DO). */
void access_take_table(struct gm_dispatcher *d);
void access_free(struct gm_dispatcher *d);
/* Whether peer p's identity may use perm on name (a function: fn, if it
   exists, keys the cached answer for submit; for admin-read and admin,
   what the texts call the request).  True without an ACL file; with one,
   answered from the peer's cache while the table and the function are the
   same; a denial is counted and logged, its reason in d->denied_text. */
bool peer_may(struct gm_dispatcher *d, struct gm_peer *p, enum gm_perm perm, const struct gm_function *fn,
              const char *name, size_t len);
/* The same for a request of p made as identity who (an HTTP request's
   token:NAME); who NULL: p's own, as peer_may. */
bool access_request(struct gm_dispatcher *d, struct gm_peer *p, const char *who, enum gm_perm perm,
                    const struct gm_function *fn, const char *name, size_t len);
/* Counts and logs a denial of perm to who (peer p's identity or its
   request's) for object name (object: "function " or ""), its reason
   in d->denied_text: the checks above call it, and the rules that apply
   without an ACL file (shutdown from loopback only, ...). */
void access_denied(struct gm_dispatcher *d, const struct gm_peer *p, const char *who, enum gm_perm perm,
                   const char *object, const char *name, size_t len);
/* ERROR PERMISSION_DENIED with d->denied_text to p. */
void access_send_denied(struct gm_dispatcher *d, struct gm_peer *p);

/* What `workers` and /api/workers show as p's client id: its
   SET_CLIENT_ID, else its identity when that is a certificate's (cn:NAME;
   an ip: identity is the address column's already), else "-" as gearmand. */
static inline const char *
peer_client_id(const struct gm_peer *p)
{
    return p->client_id ? p->client_id : p->id_listed ? p->identity : "-";
}

/* peers.c: the peers. */
void peer_open(struct gm_dispatcher *d, const struct gm_in *m);
void peer_close(struct gm_dispatcher *d, gm_conn_id id);

#endif /* GM_DISPATCHER_INT_H */
