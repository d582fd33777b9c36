/*
 * jobs.h: the job store: functions, jobs, workers' registrations, attached
 * clients, the handle and unique indexes, per-priority queues and the timer
 * heap for jobs that run later.
 *
 * Everything here is owned by the dispatcher thread and touched by nobody
 * else, so nothing is locked.  The one exception is a job's memory: a job
 * lives inside a reference-counted block (block.h) together with its handle,
 * unique key and (small) data, so that an I/O thread still writing a
 * JOB_ASSIGN can hold the bytes after the dispatcher is done with the job.
 * The I/O thread only ever reads the data bytes through its reference.
 *
 * Data model (gearmand 1.1.20 terms in brackets):
 *   gm_function  one per function name: three FIFO queues (HIGH, NORMAL,
 *                LOW) of runnable jobs, counts, maxqueue limits, and the
 *                list of registrations whose worker is asleep.
 *   gm_job       one per job: handle, unique, data, priority, state.
 *   gm_peer      one per connection (client, worker, admin or all three).
 *   gm_reg       one per (worker, function), counting repeated CAN_DOs
 *                [one worker record per CAN_DO].
 *   gm_attach    one per (foreground client, job) [client record].
 */
#ifndef GM_JOBS_H
#define GM_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/base/hashtab.h"
#include "libgearman-server/base/list.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/config/policy.h"
#include "libgearman-server/proto/msg.h"

enum gm_priority { GM_PRIO_HIGH = 0, GM_PRIO_NORMAL = 1, GM_PRIO_LOW = 2, GM_PRIO_COUNT = 3 };

#define GM_EPOCH_MAX 253402300799LL /* 9999-12-31T23:59:59Z */

enum gm_job_state {
    GM_JOB_QUEUED = 1, /* in fn->queue[prio], runnable now */
    GM_JOB_FUTURE,     /* in the timer heap until `when` */
    GM_JOB_RUNNING,    /* assigned to reg->peer, in its running list */
    GM_JOB_PERSISTING, /* background job waiting for its durable write (in the pending FIFO) */
    GM_JOB_DEAD,       /* a dead letter (lifecycle.c): in d->dead and the handle index only */
    GM_JOB_FREED       /* freed while GM_JOB_STORING: only its block, handle and waiters
                          remain, for the pending FIFO to answer the waiters */
};
/* The states a job is counted in (gm_function.nstate, gm_dispatcher.nstate):
   0 (just made, not yet placed) up to GM_JOB_DEAD; a freed job is in
   none. */
#define GM_JOB_STATES GM_JOB_FREED

enum gm_job_flags {
    GM_JOB_BACKGROUND = 1 << 0, /* submitted as background: survives its clients */
    GM_JOB_IGNORED = 1 << 1,    /* running, but abandoned or cancelled: results go nowhere */
    GM_JOB_UNIQUE_INDEXED = 1 << 2,
    GM_JOB_DATA_KEYED = 1 << 3, /* unique "-": coalesces on identical data */
    GM_JOB_PERSISTED = 1 << 4,  /* stored in the durable queue [job_queued] */
    GM_JOB_FN_COPY = 1 << 5,    /* text holds a copy of the function name (for storage) */
    GM_JOB_CANCELLED = 1 << 6,  /* cancelled (admin or HTTP) while running or being stored */
    GM_JOB_STORING = 1 << 7     /* a foreground job that a background submit joined: its ADD
                                   is on the way to storage (in the pending FIFO), the
                                   background submitters wait in `waiters` */
};

/* Background submitters waiting for a PERSISTING or STORING job's
   JOB_CREATED. */
struct gm_waiters {
    uint32_t n, cap;
    gm_conn_id conn[];
};

/* Why a dead letter died (lifecycle.c). */
enum gm_death {
    GM_DIED_FAIL = 1,     /* WORK_FAIL */
    GM_DIED_EXCEPTION,    /* WORK_EXCEPTION */
    GM_DIED_TIMEOUT,      /* ran past its policy's timeout */
    GM_DIED_WORKER_LOST   /* its worker left, or dropped the function */
};

/* A function's lifecycle (lifecycle.c): allocated when a policy is first
   set on it or it is paused; NULL for every other function, which then
   behaves as in gearmand 1.1.20. */
struct gm_policy {
    struct gm_policy_values v;
    bool set;                    /* a policy is set: retries, time limit and dead letters apply */
    bool paused;                 /* no job of it is handed out */
    uint64_t retried, timeouts, died; /* since start: retries scheduled, attempts timed out,
                                         dead letters made */
};

struct gm_function {
    struct gm_hnode hnode;       /* in functions, by name */
    uint64_t serial;             /* unique among the functions made since start (access.c's cache) */
    struct gm_policy *policy;    /* NULL: no policy, not paused */
    struct gm_list link;         /* in the creation-order list */
    struct gm_list queue[GM_PRIO_COUNT];
    uint32_t queued[GM_PRIO_COUNT]; /* waiting jobs per priority, future ones included */
    uint32_t nstate[GM_JOB_STATES]; /* its jobs in each state (job_set_state) */
    uint32_t max_queue[GM_PRIO_COUNT]; /* 0 = unlimited */
    uint32_t worker_count;       /* registrations */
    struct gm_list jobs;         /* gm_job.fn_link: its jobs in creation order */
    struct gm_list dead;         /* gm_job.fn_link of its dead letters, oldest first (lifecycle.c) */
    struct gm_list sleepers;     /* gm_reg.sleep_link of sleeping, un-NOOPed workers */
    uint64_t submitted, completed, failed;
    uint32_t name_len;
    char name[];                 /* NUL-terminated */
};

struct gm_peer;
struct gm_held;

/* A worker's registrations, repeats included (gearmand: unlimited).  Past
   it a CAN_DO of a new function is refused with an ERROR; a repeat is
   accepted but no longer counted. */
#define GM_WORKER_REGS_MAX 10000

struct gm_reg {
    struct gm_function *fn;
    struct gm_peer *peer;
    uint32_t timeout_ms;         /* CAN_DO_TIMEOUT (the latest given); 0 = none */
    uint32_t count;              /* CAN_DOs of fn, repeats included (gearmand keeps each) */
    struct gm_list sleep_link;   /* in fn->sleepers while the peer sleeps */
    struct gm_list running;      /* gm_job.link of the jobs taken through it */
};

struct gm_peer {
    gm_conn_id id;
    int fd;
    uint16_t port;
    bool sleeping;      /* sent PRE_SLEEP, no GRAB since */
    bool noop_sent;     /* woken since it went to sleep */
    bool exceptions;    /* receives WORK_EXCEPTION (OPTION_REQ exceptions) */
    bool is_loopback;   /* peer address is 127.0.0.0/8 or ::1 */
    bool id_listed;     /* its identity stands for an unset client id in `workers` (a cn:) */
    char *client_id;    /* SET_CLIENT_ID; NULL shows as "-" */
    struct gm_reg **regs;        /* one per function, in order of its first CAN_DO */
    uint32_t nregs, regs_cap;
    uint32_t nreg_total;         /* CAN_DOs counted: the sum of regs[i]->count */
    uint32_t rr;                 /* where the next GRAB starts looking */
    uint32_t nrunning;           /* jobs this worker holds (on its regs' running lists) */
    struct gm_list waits;        /* gm_attach.peer_link: jobs this client waits on */
    /* Requests held back while its listings are not taken (dispatcher.c) */
    struct gm_held *held_head, *held_tail;
    struct gm_list held_link;    /* in the dispatcher's held_peers while held_head */
    uint64_t round_bytes;        /* listing bytes queued for it in its port's round */
    uint32_t round;              /* the round round_bytes counts */
    struct gm_log_limit log_limit; /* the lines it causes (gm_log_peer) */
    struct gm_taken_back *taken_back; /* jobs its time limit took from it (lifecycle.c), or NULL */
    /* What the access table grants its identity (access.c), worked out for
       table acl_gen: GM_PERM_BIT()s for every function, for some; and the
       answer for submit on the function with serial acl_fn_serial (0:
       none). */
    uint32_t acl_gen;
    uint8_t acl_everywhere, acl_somewhere;
    bool acl_fn_ok;
    uint64_t acl_fn_serial;
    char addr[GM_ADDR_MAX];
    const char *identity;        /* "cn:NAME" (verified client certificate) or "ip:ADDRESS" */
    uint32_t identity_len;
    const char *log_name;        /* " cn:NAME" for the log lines about it, or "" (an ip: is its address) */
    char id_buf[];               /* " " and the identity */
};

/* The last jobs a time limit took back from a worker: its later WORK_*
   packets for them are dropped without an answer. */
#define GM_TAKEN_BACK_KEPT 8
struct gm_taken_back {
    uint32_t next;
    uint8_t len[GM_TAKEN_BACK_KEPT];
    char handle[GM_TAKEN_BACK_KEPT][GM_HANDLE_MAX];
};

struct gm_attach {
    struct gm_list job_link;     /* in job->clients, in attach order */
    struct gm_list peer_link;    /* in peer->waits */
    struct gm_job *job;
    struct gm_peer *peer;
};

struct gm_job {
    struct gm_hnode by_handle;   /* owner_word: the position in the timer heap, or GM_HEAP_NONE */
    struct gm_hnode by_unique;   /* see job_store.c: under (function, key), or the key's head;
                                    owner_word: seconds since the dispatcher started when the job
                                    was made (gm_job_created_s) */
    struct gm_list same_key;     /* UNIQUE_INDEXED, not data-keyed: the ring of jobs holding
                                    this unique key in other functions */
    struct gm_list link;         /* fn->queue[prio] when QUEUED; reg->running when RUNNING */
    struct gm_list all_link;     /* d->jobs: every job in creation order */
    struct gm_list fn_link;      /* fn->jobs: the function's jobs in creation order (fn->dead for a dead letter) */
    struct gm_function *fn;
    union {
        struct gm_reg *reg;      /* RUNNING: the registration it runs under */
        char *exception;         /* DEAD: the first bytes of its WORK_EXCEPTION data, or NULL */
    };
    union {
        struct gm_waiters *waiters; /* PERSISTING, STORING: who gets JOB_CREATED on commit */
        struct {
            uint32_t why;           /* enum gm_death */
            uint32_t exception_len; /* bytes at `exception` */
        } dead;                     /* DEAD */
    };
    struct gm_list clients;      /* gm_attach.job_link */
    /* data: gm_job_data(), data_off bytes into data_blk's bytes, or into the job itself */
    struct gm_block *data_blk;   /* external data block (big payloads), or NULL */
    union {
        int64_t when;            /* not RUNNING: run at/after this Unix time, 0 = now (DEAD: when
                                    it died); a running job's is past, so 0 when stored */
        struct {
            uint32_t numerator, denominator;
        } status;                /* RUNNING: its last WORK_STATUS (gm_job_numerator) */
    };
    uint32_t data_len;
    uint32_t data_off;
    uint8_t handle_len;
    uint8_t unique_len;
    uint8_t prio;
    uint8_t state;               /* enum gm_job_state */
    uint8_t retries;
    uint8_t flags;               /* enum gm_job_flags */
    uint16_t reducer_len;
    uint32_t nclients;
    char text[];                 /* handle\0unique\0reducer\0[function\0] then small data */
};

static inline const char *gm_job_handle(const struct gm_job *j) { return j->text; }
static inline const char *gm_job_data(const struct gm_job *j)
{
    return (j->data_blk ? j->data_blk->data : (const char *)j) + j->data_off;
}
static inline uint32_t gm_job_created_s(const struct gm_job *j) { return j->by_unique.owner_word; }
/* WORK_STATUS as GET_STATUS reports it: 0/0 unless the job runs. */
static inline uint32_t gm_job_numerator(const struct gm_job *j)
{
    return j->state == GM_JOB_RUNNING ? j->status.numerator : 0;
}
static inline uint32_t gm_job_denominator(const struct gm_job *j)
{
    return j->state == GM_JOB_RUNNING ? j->status.denominator : 0;
}
/* The run time a job is stored with. */
static inline int64_t gm_job_stored_when(const struct gm_job *j)
{
    return j->state == GM_JOB_RUNNING ? 0 : j->when;
}
/* The bytes of a job before its text (its allocation's fixed part). */
#define GM_JOB_HEAD offsetof(struct gm_job, text)
static inline const char *gm_job_unique(const struct gm_job *j) { return j->text + j->handle_len + 1; }
static inline const char *gm_job_reducer(const struct gm_job *j)
{
    return j->text + j->handle_len + 1 + j->unique_len + 1;
}
/* The function name stored with the job (GM_JOB_FN_COPY jobs only: every
   job while a durable queue is configured). */
static inline const char *gm_job_fn_copy(const struct gm_job *j)
{
    return gm_job_reducer(j) + j->reducer_len + 1;
}
/* The block that holds the job itself. */
static inline struct gm_block *gm_job_block(struct gm_job *j)
{
    return gm_container_of((void *)j, struct gm_block, data);
}

static inline uint32_t gm_function_total(const struct gm_function *f)
{
    return f->queued[0] + f->queued[1] + f->queued[2] + f->nstate[GM_JOB_RUNNING];
}

static inline uint32_t gm_function_running(const struct gm_function *f)
{
    return f->nstate[GM_JOB_RUNNING];
}

/* Whether a job of f may be handed out now: not paused, under its
   concurrency limit. */
static inline bool gm_function_open(const struct gm_function *f)
{
    const struct gm_policy *p = f->policy;
    return !p || (!p->paused && (!p->v.concurrency || f->nstate[GM_JOB_RUNNING] < p->v.concurrency));
}

#endif /* GM_JOBS_H */
