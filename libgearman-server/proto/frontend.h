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

enum gm_fe_kind {
    GM_FE_SUBMIT = 1, /* run a job: function, unique, priority, background, data */
    GM_FE_SERVE       /* answer from the state view (pages, API, metrics, health) */
};

enum gm_fe_flags {
    GM_FE_BACKGROUND = 1 << 0,
    GM_FE_HIGH = 1 << 1,
    GM_FE_LOW = 1 << 2,
    GM_FE_HAS_UNIQUE = 1 << 3, /* else the front-end's default unique applies */
    GM_FE_KEEP_ALIVE = 1 << 4,
    GM_FE_POST = 1 << 5,       /* a state-changing method (POST/PUT/DELETE) */
    GM_FE_HEAD = 1 << 6        /* HEAD: headers only */
};

/* A parsed request: offsets into the request's bytes (at most 64 KiB of
   head; the body may be longer). */
struct gm_fe_req {
    uint8_t kind;       /* enum gm_fe_kind */
    uint8_t flags;      /* enum gm_fe_flags */
    uint8_t minor;      /* HTTP/1.<minor> */
    uint16_t path_off, path_len;     /* GM_FE_SUBMIT: the function name */
    uint16_t query_off, query_len;
    uint16_t unique_off, unique_len;
    uint32_t body_off, body_len;
};

/* Bytes a front-end hands back to the I/O thread to write. */
struct gm_fe_output {
    struct gm_block *blk; /* one reference, owned by the caller afterwards */
    size_t len;
    bool close;           /* close the connection once written */
};

/* ---- the state view (dispatcher thread) ---- */

struct gm_view_server {
    const char *version;
    long pid;
    int64_t uptime_ms;
    unsigned io_threads;
    uint64_t connections;
    uint64_t jobs, functions, workers;
    uint64_t queued, running;
    uint64_t submitted, completed, failed;
    const char *queue_backend;  /* "builtin" when memory only */
    bool queue_healthy;
    bool queue_stalled;         /* a call to the backend has not returned for a while */
    uint64_t queue_batches, queue_records, queue_failures, queue_pending;
    uint64_t in_ring_pending, out_ring_pending; /* messages waiting in rings now */
    uint64_t ring_capacity;
};

struct gm_view_function {
    const char *name;
    uint32_t name_len;
    uint32_t queued[3];        /* high, normal, low (future jobs included) */
    uint32_t running, workers;
    uint32_t max_queue[3];
    uint64_t submitted, completed, failed;
    int64_t oldest_queued_ms;  /* age of the oldest runnable queued job; -1 if none */
};

struct gm_view_worker {
    int fd;
    const char *addr;
    uint16_t port;
    const char *client_id;     /* "-" when unset */
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

struct gm_state_view {
    void *d;
    void (*server)(void *d, struct gm_view_server *out);
    void (*each_function)(void *d, void (*cb)(void *arg, const struct gm_view_function *f), void *arg);
    void (*each_worker)(void *d, void (*cb)(void *arg, const struct gm_view_worker *w), void *arg);
    /* Jobs in handle order, optionally only those of one function (NULL =
       all) or in one state; skips `offset`, gives at most `limit`; returns
       how many match in all. */
    uint64_t (*jobs)(void *d, const char *function, size_t function_len, const char *state,
                     uint64_t offset, uint64_t limit,
                     void (*cb)(void *arg, const struct gm_view_job *j), void *arg);
    /* Cancels a job as the admin `cancel job` does; returns 0, or -1 if
       unknown or already cancelled. */
    int (*cancel)(void *d, const char *handle, size_t len);
};

struct gm_frontend {
    const char *name;
    const char *default_unique;   /* unique key of a submission that gives none */

    void *(*conn_new)(void);
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

    /* Dispatcher thread: answers a GM_FE_SERVE request from the view;
       `loopback` says whether the peer is on this host (state-changing
       actions may require it).  Returns the whole response. */
    struct gm_fe_output (*serve)(const char *request, const struct gm_fe_req *req, bool loopback,
                                 bool allow_remote_actions, const struct gm_state_view *view);
};

#endif /* GM_FRONTEND_H */
