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
 * `numerator` the enum gm_death, `exception`/`denominator` the first
 * GM_EXCEPTION_KEPT bytes of its WORK_EXCEPTION data.  Its durable record,
 * if any, stays stored until it is discarded (a restart replays it as a
 * queued job: dead letters themselves are not stored yet).
 *
 * What the operator does to them (pause, resume, purge, retry, discard,
 * `show job`'s state) is here too, once, for both who ask: the admin
 * commands (admin.c) and a front-end's state view (view.c).
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

/* The job (taken back from its worker, state 0) becomes a dead letter. */
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
    job_unindex_unique(d, job);
    gm_list_remove(&job->all_link);
    gm_list_remove(&job->fn_link);
    gm_list_push_back(&fn->dead, &job->fn_link);
    fn->queued[job->prio]--;
    job_set_state(d, job, GM_JOB_DEAD);
    job->when = now_ms(d) / 1000;
    job->numerator = why;
    job->exception = NULL;
    job->denominator = 0;
    if (exception_len) {
        size_t kept = exception_len < GM_EXCEPTION_KEPT ? exception_len : GM_EXCEPTION_KEPT;
        if ((job->exception = malloc(kept))) {
            memcpy(job->exception, exception, kept);
            job->denominator = (uint32_t)kept;
        }
    }
    gm_list_push_back(&d->dead, &job->link);
    job_uncount(d);
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
    if (gm_heap_push(&d->timers, job, now_ms(d) + (int64_t)wait))
        job_set_state(d, job, GM_JOB_FUTURE);
    else
        job_enqueue(d, job, false); /* no memory for the wait: at once */
}

bool
lifecycle_timed_out(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_policy *p = job->fn->policy;
    if (!p || !p->set)
        return false;
    p->timeouts++;
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
lifecycle_running_ended(struct gm_dispatcher *d, struct gm_function *fn)
{
    if (fn->policy && fn->policy->v.concurrency && !d->tearing_down)
        wake_workers(d, fn);
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
    job->numerator = job->denominator = 0;
    job->when = 0;
    job->retries = 0;
    gm_list_push_back(&d->jobs, &job->all_link);
    gm_list_push_back(&fn->jobs, &job->fn_link);
    d->job_count++;
    job_reindex_unique(d, job);
    fn->queued[job->prio]++;
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

const char *
lifecycle_job_state(const struct gm_job *job, unsigned *attempts)
{
    *attempts = job->retries;
    switch (job->state) {
    case GM_JOB_FUTURE:
        return "scheduled";
    case GM_JOB_RUNNING:
        (*attempts)++; /* the attempt running counts */
        return "running";
    case GM_JOB_DEAD:
        return "dead";
    default:
        return "queued"; /* being stored too: it is queued once stored */
    }
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
    const char *addr = by ? by->addr : "-";
    unsigned port = by ? by->port : 0;
    if (what == LIFECYCLE_PURGE) {
        *purged = gm_disp_function_fail_waiting(d, fn);
        gm_log(GM_LOG_NOTICE, "purge of %s by %s:%u: %llu jobs removed", fn->name, addr, port,
               (unsigned long long)*purged);
    } else if (what == LIFECYCLE_PAUSE || fn->policy) {
        lifecycle_set_paused(d, fn, what == LIFECYCLE_PAUSE);
        gm_log(GM_LOG_NOTICE, "%s %s by %s:%u", fn->name, what == LIFECYCLE_PAUSE ? "paused" : "resumed", addr, port);
    }
    return 0;
}
