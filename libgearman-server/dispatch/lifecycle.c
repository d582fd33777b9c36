/*
 * lifecycle.c: what happens to a job of a function with a policy (model
 * layer of the dispatcher): retries with backoff, the time limit, dead
 * letters, the concurrency limit and pause.
 *
 * Owns each function's struct gm_policy (NULL until a policy is set or the
 * function is paused: every other function behaves as in gearmand 1.1.20)
 * and the dead letters (d->dead by gm_job.link, and each function's
 * fn->dead by gm_job.fn_link, oldest first).  A dead letter is the job
 * itself, kept in state GM_JOB_DEAD: out of the queues, the creation-order
 * lists, the unique index and the job count, still in the handle index
 * (`show job`, `retry dead`), its fields reused: `when` the time it died,
 * `dead.why` the enum gm_death, `exception`/`dead.exception_len` the first
 * GM_EXCEPTION_KEPT bytes of its WORK_EXCEPTION data.
 *
 * With a durable queue a stored job is stored again (an ADD that replaces
 * its record) when its lifecycle changes: a retry's wait (its run time and
 * attempts), its death (a dead letter's record), its revival; a dead
 * letter's record goes when it is discarded.  The bytes stored with it are
 * opaque to the backend (records.c: persist_lifecycle_bytes); replay reads them back
 * (lifecycle_replayed).
 *
 * What the operator does to them (pause, resume, purge, retry, discard,
 * `show job`'s state) is here too, once, for both who ask: the admin
 * commands (admin.c) and a front-end's state view (view.c).
 *
 * Also the ends of an attempt that are not the worker's answer: a worker
 * leaving (job_requeue), the timers (future jobs, time limits:
 * gm_disp_run_timers), and dropping a function with its jobs.
 *
 * Dispatcher thread only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

#define GM_EXCEPTION_KEPT 4096

static const char *const death_names[] = {
    [GM_DIED_FAIL] = "fail",
    [GM_DIED_EXCEPTION] = "exception",
    [GM_DIED_TIMEOUT] = "timeout",
    [GM_DIED_WORKER_LOST] = "worker-lost",
};

const char *
lifecycle_death_name(unsigned why)
{
    return why < sizeof death_names / sizeof death_names[0] && death_names[why] ? death_names[why] : "fail";
}

struct gm_policy *
lifecycle_policy(struct gm_function *fn)
{
    if (!fn->policy) {
        fn->policy = calloc(1, sizeof *fn->policy);
        if (fn->policy)
            gm_policy_defaults(&fn->policy->v);
    }
    return fn->policy;
}

void
lifecycle_init(struct gm_dispatcher *d)
{
    d->rng = (uint64_t)d->hooks.now_ms(d->hooks.arg) * 0x9E3779B97F4A7C15ull | 1;
    lifecycle_apply_options(d);
}

void
lifecycle_apply_options(struct gm_dispatcher *d)
{
    /* --policy: validated when the options were read */
    for (unsigned i = 0; i < d->cfg->npolicy_specs; i++) {
        const char *name;
        size_t len;
        struct gm_policy_values v;
        gm_policy_defaults(&v);
        if (gm_policy_parse_spec(d->cfg->policy_specs[i], &name, &len, &v))
            continue;
        struct gm_function *fn = gm_disp_function_get(d, name, len);
        struct gm_policy *p = fn ? lifecycle_policy(fn) : NULL;
        if (!p) {
            gm_log(GM_LOG_ERROR, "out of memory: --policy %s not applied", d->cfg->policy_specs[i]);
            continue;
        }
        p->v = v;
        p->set = true;
    }
}

void
lifecycle_free(struct gm_dispatcher *d)
{
    struct gm_list *n;
    while ((n = gm_list_first(&d->dead)))
        job_free(d, gm_container_of(n, struct gm_job, link));
}

uint32_t
lifecycle_run_limit_ms(const struct gm_function *fn, uint32_t can_do_timeout_ms)
{
    const struct gm_policy *p = fn->policy;
    if (!p || !p->set || !p->v.timeout_s)
        return can_do_timeout_ms;
    uint32_t limit = p->v.timeout_s * 1000u;
    return can_do_timeout_ms && can_do_timeout_ms < limit ? can_do_timeout_ms : limit;
}

/* The wait before retry k (k >= 1): min(max_backoff, backoff * 2^(k-1)),
   plus up to a quarter of it at random. */
static uint64_t
retry_delay_ms(struct gm_dispatcher *d, const struct gm_policy_values *v, unsigned k)
{
    uint64_t base = v->backoff_ms;
    for (unsigned i = 1; i < k && base < v->max_backoff_ms; i++)
        base *= 2;
    if (base > v->max_backoff_ms)
        base = v->max_backoff_ms;
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return base + (base / 4 ? d->rng % (base / 4 + 1) : 0);
}

/* Drops the oldest dead letters past --dead-letter-max. */
static void
dead_trim(struct gm_dispatcher *d)
{
    struct gm_list *n;
    while (d->nstate[GM_JOB_DEAD] > d->cfg->dead_letter_max && (n = gm_list_first(&d->dead))) {
        struct gm_job *old = gm_container_of(n, struct gm_job, link);
        if (d->dead_dropped++ % 1000 == 0)
            gm_log(GM_LOG_NOTICE, "dead letters: %u kept (--dead-letter-max); dropping the oldest, %s of %s "
                   "(%llu dropped so far)", d->cfg->dead_letter_max, gm_job_handle(old), old->fn->name,
                   (unsigned long long)d->dead_dropped);
        job_free(d, old);
    }
}

/* Stores the job again with its lifecycle (a stored job only). */
static void
store_lifecycle(struct gm_dispatcher *d, struct gm_job *job)
{
    uint32_t len;
    struct gm_block *b = persist_lifecycle_bytes(job, &len);
    persist_lifecycle(d, job, b, len);
}

/* The job (taken back from its worker, state 0, or replayed) becomes a
   dead letter that died at died_at (Unix time). */
static void
become_dead(struct gm_dispatcher *d, struct gm_job *job, unsigned why, int64_t died_at, const char *exception,
            size_t exception_len)
{
    struct gm_function *fn = job->fn;
    job_unindex_unique(d, job);
    gm_list_remove(&job->all_link);
    gm_list_remove(&job->fn_link);
    gm_list_push_back(&fn->dead, &job->fn_link);
    fn->queued[job->prio]--;
    job_set_state(d, job, GM_JOB_DEAD);
    job->when = died_at;
    job->dead.why = why;
    job->exception = NULL;
    job->dead.exception_len = 0;
    if (exception_len) {
        size_t kept = exception_len < GM_EXCEPTION_KEPT ? exception_len : GM_EXCEPTION_KEPT;
        if ((job->exception = malloc(kept))) {
            memcpy(job->exception, exception, kept);
            job->dead.exception_len = (uint32_t)kept;
        }
    }
    gm_list_push_back(&d->dead, &job->link);
    job_uncount(d);
}

/* The job (taken back from its worker, state 0) failed its last attempt. */
static void
kill_job(struct gm_dispatcher *d, struct gm_job *job, enum gm_death why, const char *exception,
         size_t exception_len)
{
    struct gm_function *fn = job->fn;
    fn->failed++;
    fn->policy->died++;
    gm_log(GM_LOG_NOTICE, "%s %s failed its last attempt (%u, %s): kept as a dead letter", fn->name,
           gm_job_handle(job), job->retries, lifecycle_death_name(why));
    job_tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &job->clients) job_detach(gm_container_of(n, struct gm_attach, job_link));
    become_dead(d, job, why, now_ms(d) / 1000, exception, exception_len);
    store_lifecycle(d, job);
    dead_trim(d);
}

void
lifecycle_replayed(struct gm_dispatcher *d, struct gm_job *job, const char *bytes, size_t len)
{
    const unsigned char *p = (const unsigned char *)bytes;
    if (len < GM_LIFE_HEAD || p[0] != GM_LIFE_VERSION) {
        gm_log(GM_LOG_WARNING, "replay: %s has lifecycle bytes this server does not know; replayed as a "
               "new job", gm_job_handle(job));
        return;
    }
    job->retries = p[1];
    if (!p[2])
        return;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t << 8 | p[3 + i];
    /* placed by replay: out of its queue (or the timer heap) again */
    gm_list_remove(&job->link);
    gm_heap_remove(&d->timers, job);
    job_set_state(d, job, 0);
    become_dead(d, job, p[2], (int64_t)t, bytes + GM_LIFE_HEAD, len - GM_LIFE_HEAD);
    dead_trim(d);
}

void
lifecycle_attempt_failed(struct gm_dispatcher *d, struct gm_job *job, enum gm_death why,
                         const char *exception, size_t exception_len)
{
    struct gm_policy *p = job->fn->policy;
    job_take_back(d, job);
    unsigned k = job->retries; /* failed attempts so far */
    if (k > p->v.retries) {
        kill_job(d, job, why, exception, exception_len);
        return;
    }
    p->retried++;
    uint64_t wait = retry_delay_ms(d, &p->v, k);
    gm_log(GM_LOG_INFO, "%s %s: attempt %u failed (%s), retried in %llu ms", job->fn->name, gm_job_handle(job),
           k, lifecycle_death_name(why), (unsigned long long)wait);
    int64_t due = now_ms(d) + (int64_t)wait;
    job->when = (due + 999) / 1000; /* stored: a restart keeps the wait */
    store_lifecycle(d, job);
    if (gm_heap_push(&d->timers, job, due))
        job_set_state(d, job, GM_JOB_FUTURE);
    else
        job_enqueue(d, job, false); /* no memory for the wait: at once */
}

bool
lifecycle_was_taken_back(const struct gm_peer *p, const char *handle, size_t len)
{
    const struct gm_taken_back *t = p->taken_back;
    for (unsigned i = 0; t && i < GM_TAKEN_BACK_KEPT; i++)
        if (t->len[i] == len && memcmp(t->handle[i], handle, len) == 0)
            return true;
    return false;
}

/* Remembers that the worker's time ran out on the job (a worker that will
   not answer for it any more: fine to forget the oldest). */
static void
note_taken_back(struct gm_peer *p, const struct gm_job *job)
{
    if (!p->taken_back && !(p->taken_back = calloc(1, sizeof *p->taken_back)))
        return;
    struct gm_taken_back *t = p->taken_back;
    unsigned i = t->next++ % GM_TAKEN_BACK_KEPT;
    t->len[i] = job->handle_len;
    memcpy(t->handle[i], gm_job_handle(job), job->handle_len);
}

bool
lifecycle_timed_out(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_policy *p = job->fn->policy;
    if (!p || !p->set)
        return false;
    p->timeouts++;
    note_taken_back(job->reg->peer, job);
    gm_log(GM_LOG_WARNING, "%s %s ran past its time limit: taken back from its worker", job->fn->name,
           gm_job_handle(job));
    if (lifecycle_takes(job)) {
        lifecycle_attempt_failed(d, job, GM_DIED_TIMEOUT, NULL, 0);
        return true;
    }
    /* a foreground (or cancelled) job is never retried: its clients get
       WORK_FAIL */
    job_take_back(d, job);
    if (job->flags & GM_JOB_IGNORED)
        job_free(d, job);
    else
        job_fail(d, job);
    return true;
}

void
lifecycle_set_paused(struct gm_dispatcher *d, struct gm_function *fn, bool paused)
{
    fn->policy->paused = paused;
    if (!paused)
        wake_workers(d, fn);
}

void
lifecycle_revive(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_function *fn = job->fn;
    gm_list_remove(&job->link);
    gm_list_remove(&job->fn_link);
    free(job->exception);
    job->exception = NULL;
    job->dead.why = job->dead.exception_len = 0;
    job->when = 0;
    job->retries = 0;
    gm_list_push_back(&d->jobs, &job->all_link);
    gm_list_push_back(&fn->jobs, &job->fn_link);
    d->job_count++;
    job_reindex_unique(d, job);
    fn->queued[job->prio]++;
    store_lifecycle(d, job); /* stored as a plain job again */
    job_enqueue(d, job, false);
}

void
lifecycle_forget_function(struct gm_dispatcher *d, struct gm_function *fn)
{
    struct gm_list *n;
    while ((n = gm_list_first(&fn->dead)))
        job_free(d, gm_container_of(n, struct gm_job, fn_link));
}

/* ------------------------------------------------------------------ */
/* What an operator asks (admin commands, a front-end's view)           */
/* ------------------------------------------------------------------ */

int
lifecycle_describe(struct gm_dispatcher *d, const char *handle, size_t len, struct gm_view_job_state *out)
{
    memset(out, 0, sizeof *out);
    const struct gm_job *job = job_find_handle(d, handle, len);
    if (!job || job->state == GM_JOB_FREED) {
        const struct gm_outcome *o = outcome_find(d, handle, len);
        if (!o)
            return -1;
        struct gm_outcome_view v;
        outcome_view(o, &v);
        *out = (struct gm_view_job_state){
            .handle = v.handle, .handle_len = v.handle_len, .function = v.function,
            .function_len = v.function_len, .unique = v.unique, .unique_len = v.unique_len,
            .state = v.state == GM_OUTCOME_COMPLETE ? "complete" : "failed", .attempts = v.attempts,
            .result = v.result, .result_len = v.result_len};
        return 0;
    }
    out->handle = gm_job_handle(job);
    out->handle_len = job->handle_len;
    out->function = job->fn->name;
    out->function_len = job->fn->name_len;
    out->unique = gm_job_unique(job);
    out->unique_len = job->unique_len;
    out->attempts = job->retries;
    switch (job->state) {
    case GM_JOB_FUTURE:
        out->state = "scheduled";
        break;
    case GM_JOB_RUNNING:
        out->state = "running";
        out->attempts++; /* the attempt running counts */
        break;
    case GM_JOB_DEAD:
        out->state = "dead";
        break;
    default:
        out->state = "queued"; /* being stored too: it is queued once stored */
        break;
    }
    return 0;
}

void
lifecycle_each_dead(struct gm_dispatcher *d, const struct gm_function *fn, uint64_t skip,
                    bool (*cb)(void *arg, const struct gm_job *job), void *arg)
{
    const struct gm_list *head = fn ? &fn->dead : &d->dead;
    for (const struct gm_list *n = head->next; n != head; n = n->next) {
        d->visits++;
        if (skip) {
            skip--;
            continue;
        }
        const struct gm_job *job = fn ? gm_container_of(n, const struct gm_job, fn_link)
                                      : gm_container_of(n, const struct gm_job, link);
        if (!cb(arg, job))
            return;
    }
}

/* The dead letter goes back to its queue (retry) or is discarded. */
static void
dead_act(struct gm_dispatcher *d, struct gm_job *job, bool retry)
{
    if (retry)
        lifecycle_revive(d, job);
    else
        job_free(d, job);
}

int
lifecycle_dead_one(struct gm_dispatcher *d, const char *handle, size_t len, bool retry)
{
    struct gm_job *job = job_find_handle(d, handle, len);
    if (!job || job->state != GM_JOB_DEAD)
        return -1;
    dead_act(d, job, retry);
    return 0;
}

uint64_t
lifecycle_dead_all(struct gm_dispatcher *d, struct gm_function *fn, bool retry)
{
    uint64_t count = 0;
    struct gm_list *n;
    while (fn && (n = gm_list_first(&fn->dead))) {
        dead_act(d, gm_container_of(n, struct gm_job, fn_link), retry);
        count++;
    }
    return count;
}

struct gm_function *
lifecycle_function(struct gm_dispatcher *d, const char *name, size_t len, bool make, int *err,
                   const struct gm_name_fault **bad)
{
    *bad = gm_name_check(GM_NAME_FUNCTION, name, len);
    if (*bad) {
        *err = LIFECYCLE_BAD_NAME;
        return NULL;
    }
    struct gm_function *fn = make ? gm_disp_function_get(d, name, len) : gm_disp_function_find(d, name, len);
    if (!fn || (make && !lifecycle_policy(fn))) {
        *err = make ? LIFECYCLE_NO_MEMORY : LIFECYCLE_UNKNOWN;
        return NULL;
    }
    return fn;
}

int
lifecycle_function_action(struct gm_dispatcher *d, const char *name, size_t len, enum lifecycle_action what,
                          const struct gm_peer *by, uint64_t *purged, const struct gm_name_fault **bad)
{
    int err = 0;
    struct gm_function *fn = lifecycle_function(d, name, len, what == LIFECYCLE_PAUSE, &err, bad);
    if (!fn)
        return err;
    const char *addr = by ? by->addr : "-", *who = by ? by->log_name : "";
    unsigned port = by ? by->port : 0;
    if (what == LIFECYCLE_PURGE) {
        *purged = gm_disp_function_fail_waiting(d, fn);
        gm_log(GM_LOG_NOTICE, "purge of %s by %s:%u%s: %llu jobs removed", fn->name, addr, port, who,
               (unsigned long long)*purged);
    } else if (what == LIFECYCLE_PAUSE || fn->policy) {
        lifecycle_set_paused(d, fn, what == LIFECYCLE_PAUSE);
        gm_log(GM_LOG_NOTICE, "%s %s by %s:%u%s", fn->name, what == LIFECYCLE_PAUSE ? "paused" : "resumed", addr,
               port, who);
    }
    return 0;
}

/* Takes a running job away from its worker (the worker died, dropped the
   function, or timed out): back to the head of its queue, or failed when it
   has used its -j attempts. */
void
job_requeue(struct gm_dispatcher *d, struct gm_job *job, const char *why)
{
    struct gm_function *fn = job->fn;
    if (lifecycle_takes(job)) {
        lifecycle_attempt_failed(d, job, GM_DIED_WORKER_LOST, NULL, 0);
        return;
    }
    job_take_back(d, job);
    if (job->flags & GM_JOB_IGNORED) {
        job_free(d, job);
        return;
    }
    if (d->cfg->job_retries && job->retries >= d->cfg->job_retries) {
        gm_log(GM_LOG_NOTICE, "Dropped job due to max retry count: %s %s (%s)", fn->name,
               gm_job_handle(job), why);
        job_fail(d, job);
        return;
    }
    gm_log(GM_LOG_WARNING, "requeueing %s %s: %s", fn->name, gm_job_handle(job), why);
    job_enqueue(d, job, true);
}

int64_t
gm_disp_run_timers(struct gm_dispatcher *d, int64_t now)
{
    struct gm_job *job;
    while ((job = gm_heap_top(&d->timers)) && gm_heap_top_due(&d->timers) <= now) {
        gm_heap_remove(&d->timers, job);
        if (job->state == GM_JOB_FUTURE) {
            job_enqueue(d, job, false);
        } else if (job->state == GM_JOB_RUNNING && !lifecycle_timed_out(d, job) && job->reg->timeout_ms) {
            /* CAN_DO_TIMEOUT: the protocol says the job fails. */
            gm_log(GM_LOG_WARNING, "Worker timeout reached on job %s, failing it",
                   gm_job_handle(job));
            if (job->flags & GM_JOB_IGNORED)
                job_free(d, job);
            else
                job_fail(d, job);
        }
    }
    return gm_heap_top_due(&d->timers);
}

void
gm_disp_function_drop(struct gm_dispatcher *d, struct gm_function *fn)
{
    gm_disp_function_fail_waiting(d, fn);
    lifecycle_forget_function(d, fn);
    gm_htab_remove(&d->functions, &fn->hnode);
    gm_list_remove(&fn->link);
    d->function_count--;
    gm_disp_function_free(fn);
}
