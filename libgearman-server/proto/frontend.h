/*
 * frontend.h: the contract for a protocol front-end other than Gearman's
 * own (the HTTP plugin, plugins/protocol/http/), and the read-only view of
 * the dispatcher's state that a front-end may format.
 *
 * A front-end's connections are accepted on their own port and owned by an
 * I/O thread like any other.  The I/O thread asks the front-end to cut
 * requests out of the bytes read (parse) and sends each to the dispatcher.
 * The dispatcher either runs it as a job submission (the reply packets then
 * come back to the connection as for any client, and the front-end turns
 * them into its own response: on_packet), or asks the front-end to answer
 * it from a view of the state (serve), which runs on the dispatcher thread
 * and only reads what the view gives it.
 *
 * Threads: conn_new/conn_free/parse/on_packet on the connection's I/O
 * thread; serve on the dispatcher thread.  Front-ends keep no global state
 * that changes once the server's threads run.
 */
#ifndef GM_FRONTEND_H
#define GM_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/proto/fe_request.h"
#include "libgearman-server/proto/protocol.h"

/* Bytes a front-end hands back to the I/O thread to write. */
struct gm_fe_output {
    struct gm_block *blk; /* one reference, owned by the caller afterwards */
    size_t len;
    bool close;           /* close the connection once written */
};

/* ---- the state view (dispatcher thread) ---- */

/*
 * The statistics of the view, each named once.  Both lists are X-macros:
 * a user defines X and expands the list, once for each use.  They give the
 * members of struct gm_view_server and struct gm_view_function below, the
 * counting that dispatch/view.c does for every function counter, and the
 * HTTP front-end's JSON (/api/status) and Prometheus text (/metrics).  A new
 * statistic is one line in a list, plus the code that counts it.  A
 * Prometheus name that ends in "_total" is a counter, any other a gauge.
 *
 * GM_VIEW_FUNCTION_COUNTERS(X, arg) calls X(arg, field, json, metric, help)
 * for each counter a function keeps, in the order the JSON and /metrics
 * show them: its member of struct gm_view_function (uint64_t) and of the
 * dispatcher's struct gm_function, its key in a function's JSON object, and
 * its Prometheus counter (labelled with the function) with that counter's
 * help.  `arg` is handed to X untouched; the server list below uses it to
 * have each counter's sum over all functions as a server total too.
 */
#define GM_VIEW_FUNCTION_COUNTERS(X, arg) \
    X(arg, submitted, "submitted", "gearman_jobs_submitted_total", "Jobs of the function submitted.") \
    X(arg, completed, "completed", "gearman_jobs_completed_total", "Jobs of the function that completed.") \
    X(arg, failed, "failed", "gearman_jobs_failed_total", "Jobs of the function that failed, threw or were cancelled.")

/*
 * GM_VIEW_SERVER_STATS(X) calls X(kind, field, json, metric) for each
 * statistic of the server:
 *   kind   how the member is typed and written: STR (const char *; as a
 *          metric an info sample, worth 1), BOOL (true/false; as a metric
 *          1/0), U64, I64, MS (int64_t milliseconds, written as seconds
 *          with three decimals);
 *   field  its member of struct gm_view_server;
 *   json   its dotted path in /api/status ("server.queue.pending"), or
 *          NULL; the list is in the order of the JSON;
 *   metric GM_NO_METRIC, or a sample of /metrics: GM_METRIC(place, name,
 *          help), or GM_METRIC_LABEL(place, name, label, help) with label
 *          GM_LABEL(name, "value") or GM_LABEL_FROM(name, member), whose
 *          value is that string member.  /metrics keeps an order of its
 *          own: the server's samples go by their places (1, 2, ...), the
 *          strings' before the functions' families and the others after
 *          them; HELP and TYPE open a family, and a sample named as the one
 *          before it joins that family.
 */
#define GM_VIEW_SERVER_STATS(X) \
    X(STR, version, "server.version", GM_METRIC_LABEL(1, "gearman_version_info", GM_LABEL_FROM("version", version), "The job server's version.")) \
    X(I64, pid, "server.pid", GM_NO_METRIC) \
    X(MS, uptime_ms, "server.uptime_s", GM_METRIC(3, "gearman_uptime_seconds", "Seconds since the server started.")) \
    X(U64, io_threads, "server.io_threads", GM_NO_METRIC) \
    X(U64, connections, "server.connections", GM_METRIC(2, "gearman_connections", "Open connections (clients, workers, admin, http).")) \
    X(STR, queue_backend, "server.queue.backend", GM_NO_METRIC) /* "builtin" when memory only */ \
    X(BOOL, queue_healthy, "server.queue.healthy", GM_METRIC_LABEL(5, "gearman_queue_healthy", GM_LABEL_FROM("backend", queue_backend), "Whether the durable queue backend is usable.")) \
    X(U64, queue_batches, "server.queue.batches", GM_METRIC(6, "gearman_queue_batches_total", "Transactions written to the durable queue.")) \
    X(U64, queue_records, "server.queue.records", GM_METRIC(7, "gearman_queue_records_total", "Job records (adds and removals) written to the durable queue.")) \
    X(U64, queue_failures, "server.queue.failures", GM_METRIC(8, "gearman_queue_failures_total", "Batches the durable queue refused.")) \
    X(U64, queue_pending, "server.queue.pending", GM_METRIC(9, "gearman_queue_pending_jobs", "Background jobs waiting for their durable write (the lag).")) \
    X(STR, ha_role, "server.ha.role", GM_NO_METRIC) /* "standalone", or with --ha "active" or "standby" */ \
    X(U64, denied_submit, "server.denied.submit", GM_METRIC_LABEL(14, "gearman_denied_total", GM_LABEL("permission", "submit"), "Requests denied (docs/security.md), by the permission they lacked.")) \
    X(U64, denied_work, "server.denied.work", GM_METRIC_LABEL(15, "gearman_denied_total", GM_LABEL("permission", "work"), NULL)) \
    X(U64, denied_admin_read, "server.denied.admin-read", GM_METRIC_LABEL(16, "gearman_denied_total", GM_LABEL("permission", "admin-read"), NULL)) \
    X(U64, denied_admin, "server.denied.admin", GM_METRIC_LABEL(17, "gearman_denied_total", GM_LABEL("permission", "admin"), NULL)) \
    X(U64, jobs, "totals.jobs", GM_METRIC(4, "gearman_jobs_total_in_memory", "Jobs the server holds (queued, scheduled, running).")) \
    X(U64, queued, "totals.queued", GM_NO_METRIC) \
    X(U64, running, "totals.running", GM_NO_METRIC) \
    X(U64, functions, "totals.functions", GM_NO_METRIC) \
    X(U64, workers, "totals.workers", GM_NO_METRIC) \
    GM_VIEW_FUNCTION_COUNTERS(GM_VIEW_TOTAL, X) \
    X(U64, dead, "totals.dead", GM_NO_METRIC) /* dead letters held (not among the jobs) */ \
    X(BOOL, queue_stalled, NULL, GM_NO_METRIC) /* a call to the backend has not returned for a while */ \
    X(U64, in_ring_pending, NULL, GM_METRIC_LABEL(10, "gearman_ring_messages", GM_LABEL("direction", "in"), "Messages waiting in the thread rings.")) \
    X(U64, out_ring_pending, NULL, GM_METRIC_LABEL(11, "gearman_ring_messages", GM_LABEL("direction", "out"), NULL)) \
    X(U64, ring_capacity, NULL, GM_METRIC(12, "gearman_ring_capacity", "Slots in all thread rings.")) \
    X(U64, dead_dropped, NULL, GM_METRIC(13, "gearman_dead_jobs_dropped_total", "Dead letters dropped, the oldest first, past --dead-letter-max.")) \
    X(BOOL, ha_active, NULL, GM_METRIC(18, "gearman_ha_active", "Whether this server serves: 0 for a --ha standby (docs/ha.md)."))

/*
 * GM_VIEW_POLICY_STATS(X, arg) calls X(arg, field, metric, help) for each
 * statistic of a function's job lifecycle (struct gm_view_policy's
 * uint64_t members): its Prometheus sample, labelled with the function,
 * shown for the functions that have (or had) a policy or a pause.
 */
#define GM_VIEW_POLICY_STATS(X, arg) \
    X(arg, retried, "gearman_job_retries_total", "Retries of the function's jobs scheduled after a failed attempt.") \
    X(arg, timeouts, "gearman_job_timeouts_total", "Attempts of the function's jobs that ran past its time limit.") \
    X(arg, dead, "gearman_dead_jobs", "Dead letters of the function held now.") \
    X(arg, died, "gearman_dead_jobs_total", "Jobs of the function that became dead letters.")

/* A function counter's sum over all functions, as a server statistic. */
#define GM_VIEW_TOTAL(X, field, json, metric, help) X(U64, field, "totals." json, GM_NO_METRIC)

/* What a `metric` of GM_VIEW_SERVER_STATS stands for, in this order: place,
   name, help, label name, label value, and the offset of the member that
   holds the label's value (GM_VIEW_NO_MEMBER when it is given). */
#define GM_VIEW_NO_MEMBER ((size_t)-1)
#define GM_LABEL(name, value) name, value, GM_VIEW_NO_MEMBER
#define GM_LABEL_FROM(name, member) name, NULL, offsetof(struct gm_view_server, member)
#define GM_METRIC_LABEL(place, name, label, help) place, name, help, label
#define GM_METRIC(place, name, help) GM_METRIC_LABEL(place, name, GM_LABEL(NULL, NULL), help)
#define GM_NO_METRIC GM_METRIC(0, NULL, NULL)

#define GM_VIEW_CTYPE_STR const char *
#define GM_VIEW_CTYPE_BOOL bool
#define GM_VIEW_CTYPE_U64 uint64_t
#define GM_VIEW_CTYPE_I64 int64_t
#define GM_VIEW_CTYPE_MS int64_t
#define GM_VIEW_SERVER_MEMBER(kind, field, json, metric) GM_VIEW_CTYPE_##kind field;
#define GM_VIEW_COUNTER_MEMBER(type, field, json, metric, help) type field;
#define GM_VIEW_POLICY_MEMBER(type, field, metric, help) type field;

struct gm_view_server {
    GM_VIEW_SERVER_STATS(GM_VIEW_SERVER_MEMBER)
};

/* A function's job lifecycle (docs/lifecycle.md): its policy, whether it
   is paused, and its statistics. */
struct gm_view_policy {
    bool listed;               /* a policy is set or it is paused: `show policies` lists it */
    bool paused;
    uint32_t retries, backoff_ms, max_backoff_ms, timeout_s, concurrency;
    GM_VIEW_POLICY_STATS(GM_VIEW_POLICY_MEMBER, uint64_t)
};

struct gm_view_function {
    const char *name;
    uint32_t name_len;
    uint32_t queued[3];        /* high, normal, low (future jobs included) */
    uint32_t running, workers;
    uint32_t max_queue[3];
    GM_VIEW_FUNCTION_COUNTERS(GM_VIEW_COUNTER_MEMBER, uint64_t)
    int64_t oldest_queued_ms;  /* age of the oldest runnable queued job; -1 if none */
    const struct gm_view_policy *policy; /* NULL: it never had a policy or a pause */
};

struct gm_view_worker {
    int fd;
    const char *addr;
    uint16_t port;
    const char *client_id;     /* "-" when unset (its identity when that is a cn:, as `workers`) */
    const char *identity;      /* "ip:ADDRESS" or "cn:NAME" (docs/security.md) */
    const char *const *functions;
    uint32_t nfunctions;
    const char *current_job;   /* handle of a job it runs, or NULL */
    uint32_t running;          /* jobs it runs */
    bool sleeping;
};

struct gm_view_job {
    const char *handle, *function, *unique;
    uint32_t unique_len;
    int priority;              /* 0 high, 1 normal, 2 low */
    const char *state;         /* "queued", "running", "scheduled", "persisting" */
    int64_t age_ms;
    int64_t run_at;            /* Unix time for scheduled jobs, else 0 */
    uint32_t retries, clients;
    bool background;
    bool cancelled;            /* cancelled while running: its result goes nowhere */
};

/* A dead letter (docs/lifecycle.md). */
struct gm_view_dead {
    const char *handle, *function, *unique;
    uint32_t unique_len;
    uint32_t attempts;
    int64_t died_at;           /* Unix time, seconds */
    const char *reason;        /* "fail", "exception", "timeout", "worker-lost" */
    const char *exception;     /* the first bytes kept of its WORK_EXCEPTION data, or NULL */
    uint32_t exception_len;
};

/* What a page of dead letters asks for (offset and limit at most
   GM_VIEW_JOBS_OFFSET_MAX and GM_VIEW_JOBS_LIMIT_MAX, as for jobs). */
struct gm_view_dead_query {
    const char *function;      /* only this function's; NULL: every function's */
    size_t function_len;
    uint64_t offset, limit;
};

/* A job, dead letter or kept outcome (--keep-results) as `show job`
   describes it.  Pointers are valid during the call that filled it. */
struct gm_view_job_state {
    const char *handle, *function, *unique;
    uint32_t handle_len, function_len, unique_len;
    const char *state;         /* "queued", "scheduled", "running", "dead", or a kept
                                  outcome's "complete", "failed" */
    uint32_t attempts;         /* hand-outs to a worker, the one running included */
    const char *result;        /* a kept outcome's first --keep-results-bytes of result; NULL */
    uint32_t result_len;       /* and 0 for the others */
};

/* What a lifecycle action of the view returns besides 0. */
enum {
    GM_VIEW_UNKNOWN = -1,      /* no such dead letter, or no such function */
    GM_VIEW_BAD_NAME = -2,     /* the function name is one the server refuses */
    GM_VIEW_NO_MEMORY = -3,
};

/* What a request asks of the view's permitted(): to read the views
   (admin-read) or to change the server's state (admin). */
enum gm_view_need { GM_VIEW_READ, GM_VIEW_ACT };

/* Why permitted() said no. */
struct gm_view_refusal {
    bool by_acl;               /* the ACL file's; false: the rule without one (actions from
                                  this host only, unless --http-allow-remote-actions) */
    const char *identity;      /* who asked: "ip:...", "cn:...", "token:NAME" */
    const char *permission;    /* what it lacks: "admin-read" or "admin" */
};

/* The function actions of the view: the admin pause, resume and purge. */
enum gm_view_function_action { GM_VIEW_PAUSE, GM_VIEW_RESUME, GM_VIEW_PURGE };

/* The deepest page and the longest one the jobs view serves (a larger
   offset or limit is taken as these), and the most jobs one request looks
   at besides those it skips or lists: what one request may cost. */
#define GM_VIEW_JOBS_OFFSET_MAX 10000
#define GM_VIEW_JOBS_LIMIT_MAX 1000
#define GM_VIEW_JOBS_VISIT_MAX 100000

/* What a jobs page asks for. */
struct gm_view_jobs_query {
    const char *function;      /* only this function's jobs; NULL: every function */
    size_t function_len;
    const char *state;         /* only jobs in this state; NULL or "": any */
    const char *after;         /* start after this job (a cursor); NULL: at the first */
    size_t after_len;
    uint64_t offset, limit;    /* skip offset matching jobs, then list up to limit */
};

/* What a jobs page found besides its jobs. */
struct gm_view_jobs_result {
    uint64_t total;            /* jobs matching function and state, in all */
    bool after_unknown;        /* `after` names no job (of that function): nothing listed */
    /* The walk met GM_VIEW_JOBS_VISIT_MAX jobs that do not match before the
       page was full: more may match.  after=next with offset=next_offset
       goes on from where it stopped. */
    bool partial;
    char next[GM_HANDLE_MAX + 1];
    uint64_t next_offset;
};

struct gm_state_view {
    void *d;
    /* Whether the asker of the request being served may read the views
       (GM_VIEW_READ) or change the server's state (GM_VIEW_ACT): true, or
       false with *why filled (pointers valid during serve()); the denial is
       counted (gearman_denied_total) and logged by the dispatcher. */
    bool (*permitted)(void *d, enum gm_view_need need, struct gm_view_refusal *why);
    void (*server)(void *d, struct gm_view_server *out);
    void (*each_function)(void *d, void (*cb)(void *arg, const struct gm_view_function *f), void *arg);
    void (*each_worker)(void *d, void (*cb)(void *arg, const struct gm_view_worker *w), void *arg);
    /* A page of the jobs q asks for, in creation order (the server's own
       handles in handle order; replayed jobs first), to cb; totals come from
       counters and the walk follows an index (all jobs, or one function's),
       so a page costs at most offset + limit + GM_VIEW_JOBS_VISIT_MAX
       visits whatever the number of jobs. */
    void (*jobs)(void *d, const struct gm_view_jobs_query *q, struct gm_view_jobs_result *res,
                 void (*cb)(void *arg, const struct gm_view_job *j), void *arg);
    /* Cancels a job as the admin `cancel job` does; returns 0, or -1 if
       unknown or already cancelled. */
    int (*cancel)(void *d, const char *handle, size_t len);

    /* ---- the job lifecycle (dispatch/lifecycle.c does what each asks) ---- */
    /* A page of dead letters, oldest first, to cb; *total set to how many
       match.  Costs at most offset + limit visits: each function keeps
       its own list. */
    void (*dead)(void *d, const struct gm_view_dead_query *q, uint64_t *total,
                 void (*cb)(void *arg, const struct gm_view_dead *x), void *arg);
    /* The job, dead letter or kept outcome with that handle into *out, as
       `show job` does: 0, or GM_VIEW_UNKNOWN. */
    int (*job)(void *d, const char *handle, size_t len, struct gm_view_job_state *out);
    /* `retry dead HANDLE` (retry) or `discard dead HANDLE`: 0, or
       GM_VIEW_UNKNOWN if no dead letter has that handle. */
    int (*dead_action)(void *d, const char *handle, size_t len, bool retry);
    /* `pause FUNC`, `resume FUNC` or `purge FUNC` (the jobs it removed in
       *purged): 0, GM_VIEW_UNKNOWN (resume and purge need the function;
       pause makes it), GM_VIEW_BAD_NAME or GM_VIEW_NO_MEMORY. */
    int (*function_action)(void *d, const char *name, size_t len, enum gm_view_function_action what,
                           uint64_t *purged);
};

struct gm_frontend {
    const char *name;
    const char *default_unique;   /* unique key of a submission that gives none */

    /* A connection's state; max_reply is the most it may hold of one job's
       reply packets for a request (a front-end that joins them answers
       with an error past it; 0: no limit of the server's). */
    void *(*conn_new)(size_t max_reply);
    void (*conn_free)(void *st);

    /* Cuts the next request out of buf[0..len).  Returns the bytes it uses
       (> 0) with *req filled; 0 if more bytes are needed (need, if known,
       is set to the request's whole size); or -1 with an error response in
       *err_out (the connection closes after it). */
    long (*parse)(void *st, const char *buf, size_t len, uint32_t max_body, struct gm_fe_req *req,
                  uint64_t *need, struct gm_fe_output *err_out);

    /* A reply packet for the connection's submitted job.  Returns 1 with the
       whole response in *out when the request is finished (the front-end
       says in out->close whether the connection ends), 0 while more is
       expected. */
    int (*on_packet)(void *st, uint32_t type, const char *payload, uint32_t len,
                     struct gm_fe_output *out);

    /* Dispatcher thread: answers a GM_FE_SERVE request from the view,
       asking the view's permitted() before it shows or does anything but
       the health check; `max_response` (--max-output-size) is the most a
       response built from the view may hold, which bounds what one
       request costs (lists past it are cut; 0: no limit of the server's).
       Returns the whole response. */
    struct gm_fe_output (*serve)(const char *request, const struct gm_fe_req *req, size_t max_response,
                                 const struct gm_state_view *view);
};

#endif /* GM_FRONTEND_H */
