/*
 * dispatcher_int.h: the dispatcher's state, shared by the files that make up
 * the dispatcher (dispatcher.c: requests and job flow; admin.c: the text
 * commands).  Dispatcher thread only; nothing here is visible to I/O threads.
 */
#ifndef GM_DISPATCHER_INT_H
#define GM_DISPATCHER_INT_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "libgearman-server/base/busy_poll.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/dispatch/jobs.h"
#include "libgearman-server/persist/persist.h"

/* A reply that did not fit in a full outbound ring. */
struct gm_out_overflow {
    struct gm_out_overflow *next;
    struct gm_out msg;
};

/* The dispatcher's side of one I/O thread. */
struct gm_disp_port {
    struct gm_channel *ch;
    struct gm_peer **peers;      /* by connection slot */
    uint32_t npeers;             /* size of peers[] */
    struct gm_out_overflow *ovf_head, *ovf_tail;
    bool produced;               /* replies produced since the last publish */
};

/* A background job waiting for its ADD to be acknowledged. */
struct gm_pending {
    uint64_t seq;
    struct gm_job *job;
};

struct gm_prec_overflow {
    struct gm_prec_overflow *next;
    struct gm_prec rec;
};

/* The dispatcher's side of the persistence thread. */
struct gm_disp_persist {
    bool active;                 /* background jobs are written as they come and go */
    bool on_shutdown;            /* --store-queue-on-shutdown: written only at a clean stop */
    bool stores_epoch;           /* the backend keeps run times */
    struct gm_persist_channel *ch;
    void (*wake)(void *arg);
    void *arg;
    uint64_t seq;                /* last sequence number given to a record */
    uint64_t handle_hw;          /* handle numbers below this are covered by a stored counter */
    bool produced;               /* records produced since the last publish */
    struct gm_prec_overflow *ovf_head, *ovf_tail;
    struct gm_pending *pend;     /* FIFO ring of jobs waiting for their ack */
    uint32_t pend_head, pend_len, pend_cap;
};

struct gm_timer_entry {
    int64_t due_ms;
    struct gm_job *job;
};

struct gm_dispatcher {
    const struct gm_server_config *cfg;
    struct gm_disp_hooks hooks;
    struct gm_disp_port *ports;
    unsigned nports;

    struct gm_htab functions;    /* gm_function.hnode, by name */
    struct gm_list function_list;/* creation order, for `status` */
    uint32_t function_count;
    struct gm_htab by_handle;    /* gm_job.by_handle */
    struct gm_htab by_unique;    /* gm_job.by_unique, keyed by (function, unique or data) */
    uint64_t next_handle;
    uint64_t job_count;          /* jobs in existence (queued, future, running) */
    uint64_t peer_count;

    struct gm_timer_entry *heap; /* min-heap on due_ms: future jobs and running-job deadlines */
    uint32_t heap_len, heap_cap;

    struct gm_disp_persist persist;

    struct gm_block *unref_blk;  /* references released in batches (see release_in) */
    uint32_t unref_n;

    struct gm_state_view view;   /* what a front-end may read (view.c) */
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
    bool loop_shared;            /* runs on an I/O thread's loop (one I/O thread) */
    struct gm_busy_poll poll;    /* --busy-poll on its own loop (a shared loop's thread polls) */
    _Atomic int stop_flag;
    _Atomic int graceful_flag;
};

/* Shared helpers (dispatcher.c) used by admin.c. */
struct gm_peer *gm_disp_peer(struct gm_dispatcher *d, gm_conn_id id);
struct gm_function *gm_disp_function_find(struct gm_dispatcher *d, const char *name, size_t len);
struct gm_function *gm_disp_function_get(struct gm_dispatcher *d, const char *name, size_t len);
void gm_disp_function_drop(struct gm_dispatcher *d, struct gm_function *fn);
struct gm_job *gm_disp_job_by_handle(struct gm_dispatcher *d, const char *h, size_t len);
/* Cancels a job as `cancel job` does: clients get WORK_FAIL, a queued job is
   freed, a running one is marked ignored. */
void gm_disp_job_cancel(struct gm_dispatcher *d, struct gm_job *job);
/* Queues bytes for a connection by copying them (admin replies). */
void gm_disp_send_bytes(struct gm_dispatcher *d, gm_conn_id conn, const void *p, size_t len);
/* Queues a block's bytes by reference (takes over the caller's reference). */
void gm_disp_send_block(struct gm_dispatcher *d, gm_conn_id conn, struct gm_block *b, size_t len);
/* Asks the I/O thread to close the connection after what is queued. */
void gm_disp_send_close(struct gm_dispatcher *d, gm_conn_id conn);
/* Passes a stop request (enum gm_stop_how) to the server; GM_STOP_NOW only
   once. */
void gm_disp_request_shutdown(struct gm_dispatcher *d, int how);

/* view.c: sets up d->view. */
void gm_disp_view_init(struct gm_dispatcher *d);

/* Sorted list of every job (handle order); caller frees; NULL if memory is
   short.  Shared by `show jobs` and the view. */
struct gm_job **gm_disp_jobs_sorted(struct gm_dispatcher *d, size_t *count);

/* admin.c: runs one text command for peer p. */
void gm_admin_execute(struct gm_dispatcher *d, struct gm_peer *p, const struct gm_in *m);

#endif /* GM_DISPATCHER_INT_H */
