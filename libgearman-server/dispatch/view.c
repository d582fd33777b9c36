/*
 * view.c: the read-only view of the dispatcher's state that a front-end
 * formats (frontend.h: struct gm_state_view).
 *
 * Dispatcher thread only: the view's functions are called by the front-end's
 * serve(), which the dispatcher runs; they read the job store directly and
 * hand out pointers that are valid during the callback only.  Its actions
 * (cancel, and the job lifecycle's: retry and discard a dead letter, pause,
 * resume and purge a function) call what the admin commands call, so both
 * ways do the same.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/dispatch/handlers.h"

/* Adds a function's counters (frontend.h: GM_VIEW_FUNCTION_COUNTERS), those
   of `fn` in scope, into dst: a struct gm_view_function or the server's
   totals. */
#define VIEW_ADD_COUNTER(dst, field, json, metric, help) (dst)->field += fn->field;

static int64_t
view_now(struct gm_dispatcher *d)
{
    return d->hooks.now_ms(d->hooks.arg);
}

static void
view_server(void *arg, struct gm_view_server *out)
{
    struct gm_dispatcher *d = arg;
    memset(out, 0, sizeof *out);
    out->version = d->cfg->version ? d->cfg->version : PACKAGE_VERSION;
    out->pid = (long)getpid();
    out->uptime_ms = view_now(d) - d->start_ms;
    out->io_threads = d->nports;
    out->connections = d->peer_count;
    out->jobs = d->job_count;
    out->functions = d->function_count;
    struct gm_list *n;
    gm_list_each(n, &d->function_list)
    {
        struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        out->queued += fn->queued[0] + fn->queued[1] + fn->queued[2];
        out->running += gm_function_running(fn);
        GM_VIEW_FUNCTION_COUNTERS(VIEW_ADD_COUNTER, out)
    }
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        for (uint32_t s = 0; s < port->npeers; s++)
            if (port->peers[s] && port->peers[s]->nregs)
                out->workers++;
        out->in_ring_pending += gm_in_ring_pending(&port->ch->in);
        out->out_ring_pending += gm_out_ring_capacity(&port->ch->out) - gm_out_ring_free_space(&port->ch->out);
        out->ring_capacity += gm_in_ring_capacity(&port->ch->in) + gm_out_ring_capacity(&port->ch->out);
    }
    out->dead = d->nstate[GM_JOB_DEAD];
    out->dead_dropped = d->dead_dropped;
    out->denied_submit = d->denied[GM_PERM_SUBMIT];
    out->denied_work = d->denied[GM_PERM_WORK];
    out->denied_admin_read = d->denied[GM_PERM_ADMIN_READ];
    out->denied_admin = d->denied[GM_PERM_ADMIN];
    out->queue_backend = "builtin";
    out->queue_healthy = true;
    out->queue_pending = d->persist.pend_len;
    out->ha_role = "standalone";
    out->ha_active = !d->persist.standby;
    if (d->hooks.fill_server_view)
        d->hooks.fill_server_view(d->hooks.arg, out);
}

static void
view_each_function(void *arg, void (*cb)(void *, const struct gm_view_function *), void *cb_arg)
{
    struct gm_dispatcher *d = arg;
    int64_t now_s = (view_now(d) - d->start_ms) / 1000;
    struct gm_list *n;
    gm_list_each(n, &d->function_list)
    {
        struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        struct gm_view_function v;
        memset(&v, 0, sizeof v);
        v.name = fn->name;
        v.name_len = fn->name_len;
        for (int p = 0; p < GM_PRIO_COUNT; p++) {
            v.queued[p] = fn->queued[p];
            v.max_queue[p] = fn->max_queue[p];
        }
        v.running = gm_function_running(fn);
        v.workers = fn->worker_count;
        GM_VIEW_FUNCTION_COUNTERS(VIEW_ADD_COUNTER, &v)
        struct gm_view_policy pol;
        if (fn->policy) {
            const struct gm_policy *p = fn->policy;
            pol = (struct gm_view_policy){.listed = lifecycle_listed(fn), .paused = p->paused,
                                          .retries = p->v.retries, .backoff_ms = p->v.backoff_ms,
                                          .max_backoff_ms = p->v.max_backoff_ms, .timeout_s = p->v.timeout_s,
                                          .concurrency = p->v.concurrency, .retried = p->retried,
                                          .timeouts = p->timeouts, .dead = fn->nstate[GM_JOB_DEAD],
                                          .died = p->died};
            v.policy = &pol;
        }
        /* The head of each queue is its oldest job (requeued ones go back
           to the head, and are older still). */
        v.oldest_queued_ms = -1;
        for (int p = 0; p < GM_PRIO_COUNT; p++) {
            struct gm_list *first = gm_list_first(&fn->queue[p]);
            if (!first)
                continue;
            const struct gm_job *j = gm_container_of(first, struct gm_job, link);
            int64_t age = (now_s - (int64_t)gm_job_created_s(j)) * 1000;
            if (age > v.oldest_queued_ms)
                v.oldest_queued_ms = age;
        }
        cb(cb_arg, &v);
    }
}

static void
view_each_worker(void *arg, void (*cb)(void *, const struct gm_view_worker *), void *cb_arg)
{
    struct gm_dispatcher *d = arg;
    const char **names = NULL;
    uint32_t cap = 0;
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        for (uint32_t s = 0; s < port->npeers; s++) {
            struct gm_peer *p = port->peers[s];
            if (!p || !p->nregs)
                continue; /* clients and admin connections are not workers */
            if (p->nreg_total > cap) {
                const char **nn = realloc(names, p->nreg_total * sizeof *nn);
                if (!nn)
                    continue;
                names = nn;
                cap = p->nreg_total;
            }
            /* a function as often as it was registered, as `workers` */
            uint32_t k = 0;
            const struct gm_job *current = NULL;
            for (uint32_t i = 0; i < p->nregs; i++) {
                for (uint32_t c = 0; c < p->regs[i]->count; c++)
                    names[k++] = p->regs[i]->fn->name;
                struct gm_list *first = gm_list_first(&p->regs[i]->running);
                if (first && !current)
                    current = gm_container_of(first, struct gm_job, link);
            }
            struct gm_view_worker w;
            memset(&w, 0, sizeof w);
            w.fd = p->fd;
            w.addr = p->addr;
            w.port = p->port;
            w.client_id = peer_client_id(p);
            w.identity = p->identity;
            w.functions = names;
            w.nfunctions = k;
            w.current_job = current ? gm_job_handle(current) : NULL;
            w.running = p->nrunning;
            w.sleeping = p->sleeping;
            cb(cb_arg, &w);
        }
    }
    free(names);
}

/* The states /api/jobs names, by enum gm_job_state. */
static const char *const state_names[GM_JOB_STATES] = {
    [GM_JOB_QUEUED] = "queued",
    [GM_JOB_FUTURE] = "scheduled",
    [GM_JOB_RUNNING] = "running",
    [GM_JOB_PERSISTING] = "persisting",
};

static int
state_by_name(const char *name)
{
    for (int s = 1; s < GM_JOB_STATES; s++)
        if (state_names[s] && strcmp(state_names[s], name) == 0)
            return s;
    return -1;
}

static void
view_job(struct gm_dispatcher *d, const struct gm_job *j, void (*cb)(void *, const struct gm_view_job *),
         void *cb_arg)
{
    int64_t now_s = (view_now(d) - d->start_ms) / 1000;
    struct gm_view_job vj;
    memset(&vj, 0, sizeof vj);
    vj.handle = gm_job_handle(j);
    vj.function = j->fn->name;
    vj.unique = gm_job_unique(j);
    vj.unique_len = j->unique_len;
    vj.priority = j->prio;
    vj.state = state_names[j->state] ? state_names[j->state] : "queued";
    vj.age_ms = (now_s - (int64_t)gm_job_created_s(j)) * 1000;
    vj.run_at = j->state == GM_JOB_FUTURE ? j->when : 0;
    vj.retries = j->retries;
    vj.clients = j->nclients;
    vj.background = (j->flags & GM_JOB_BACKGROUND) != 0;
    vj.cancelled = (j->flags & GM_JOB_CANCELLED) != 0;
    cb(cb_arg, &vj);
}

/* A page: a walk along the creation-order index, every job's (d->jobs) or
   one function's (fn->jobs), from its start or after the cursor job. */
static void
view_jobs(void *arg, const struct gm_view_jobs_query *q, struct gm_view_jobs_result *res,
          void (*cb)(void *, const struct gm_view_job *), void *cb_arg)
{
    struct gm_dispatcher *d = arg;
    memset(res, 0, sizeof *res);
    struct gm_function *fn = NULL;
    if (q->function && !(fn = gm_disp_function_find(d, q->function, q->function_len)))
        return; /* no such function: no jobs */
    int state = 0;
    if (q->state && *q->state && (state = state_by_name(q->state)) < 0)
        return; /* no job is ever in that state */
    res->total = state ? (fn ? fn->nstate[state] : d->nstate[state]) : fn ? gm_function_total(fn) : d->job_count;
    /* the index to walk, and where */
    const struct gm_list *head = fn ? &fn->jobs : &d->jobs;
    const struct gm_list *at = head->next;
    if (q->after) {
        const struct gm_job *cursor = gm_disp_job_by_handle(d, q->after, q->after_len);
        if (!cursor || (fn && cursor->fn != fn) || cursor->state == GM_JOB_FREED) {
            res->after_unknown = true;
            return;
        }
        at = (fn ? &cursor->fn_link : &cursor->all_link)->next;
    }
    uint64_t skip = q->offset < GM_VIEW_JOBS_OFFSET_MAX ? q->offset : GM_VIEW_JOBS_OFFSET_MAX;
    uint64_t left = q->limit < GM_VIEW_JOBS_LIMIT_MAX ? q->limit : GM_VIEW_JOBS_LIMIT_MAX;
    uint64_t misses = 0;
    const struct gm_job *last = NULL;
    if (res->total == 0)
        return;
    for (; at != head && left; at = at->next) {
        const struct gm_job *j = fn ? gm_container_of(at, const struct gm_job, fn_link)
                                    : gm_container_of(at, const struct gm_job, all_link);
        d->visits++;
        if (state && j->state != state) {
            if (++misses > GM_VIEW_JOBS_VISIT_MAX) {
                res->partial = true;
                res->next_offset = skip;
                if (last) {
                    memcpy(res->next, gm_job_handle(last), last->handle_len);
                    res->next[last->handle_len] = '\0';
                }
                return;
            }
            last = j;
            continue;
        }
        last = j;
        if (skip) {
            skip--;
            continue;
        }
        view_job(d, j, cb, cb_arg);
        left--;
    }
}

static int
view_cancel(void *arg, const char *handle, size_t len)
{
    struct gm_dispatcher *d = arg;
    struct gm_job *job = gm_disp_job_by_handle(d, handle, len);
    if (!job || (job->flags & GM_JOB_CANCELLED))
        return -1;
    gm_disp_job_cancel(d, job);
    return 0;
}

/* ---- the job lifecycle ---- */

_Static_assert((int)LIFECYCLE_UNKNOWN == (int)GM_VIEW_UNKNOWN && (int)LIFECYCLE_BAD_NAME == (int)GM_VIEW_BAD_NAME &&
                   (int)LIFECYCLE_NO_MEMORY == (int)GM_VIEW_NO_MEMORY,
               "lifecycle.c's errors are the view's");

struct dead_page {
    uint64_t left;
    void (*cb)(void *, const struct gm_view_dead *);
    void *arg;
};

/* One dead letter of a page to the view's callback (lifecycle_each_dead's). */
static bool
view_dead_one(void *arg, const struct gm_job *job)
{
    struct dead_page *pg = arg;
    pg->left--; /* more than 0: the walk stops once it is 0 */
    struct gm_view_dead x = {
        .handle = gm_job_handle(job), .function = job->fn->name, .unique = gm_job_unique(job),
        .unique_len = job->unique_len, .attempts = job->retries, .died_at = job->when,
        .reason = lifecycle_death_name(job->dead.why), .exception = job->exception,
        .exception_len = job->exception ? job->dead.exception_len : 0,
    };
    pg->cb(pg->arg, &x);
    return pg->left > 0;
}

static void
view_dead(void *arg, const struct gm_view_dead_query *q, uint64_t *total,
          void (*cb)(void *, const struct gm_view_dead *), void *cb_arg)
{
    struct gm_dispatcher *d = arg;
    *total = 0;
    const struct gm_function *fn = NULL;
    if (q->function && !(fn = gm_disp_function_find(d, q->function, q->function_len)))
        return; /* no such function: no dead letters */
    *total = fn ? fn->nstate[GM_JOB_DEAD] : d->nstate[GM_JOB_DEAD];
    struct dead_page pg = {q->limit < GM_VIEW_JOBS_LIMIT_MAX ? q->limit : GM_VIEW_JOBS_LIMIT_MAX, cb, cb_arg};
    if (pg.left)
        lifecycle_each_dead(d, fn, q->offset < GM_VIEW_JOBS_OFFSET_MAX ? q->offset : GM_VIEW_JOBS_OFFSET_MAX,
                            view_dead_one, &pg);
}

static int
view_job_state(void *arg, const char *handle, size_t len, struct gm_view_job_state *out)
{
    return lifecycle_describe(arg, handle, len, out) < 0 ? GM_VIEW_UNKNOWN : 0;
}

static int
view_dead_action(void *arg, const char *handle, size_t len, bool retry)
{
    return lifecycle_dead_one(arg, handle, len, retry) < 0 ? GM_VIEW_UNKNOWN : 0;
}

static int
view_function_action(void *arg, const char *name, size_t len, enum gm_view_function_action what,
                     uint64_t *purged)
{
    struct gm_dispatcher *d = arg;
    static const enum lifecycle_action as[] = {
        [GM_VIEW_PAUSE] = LIFECYCLE_PAUSE, [GM_VIEW_RESUME] = LIFECYCLE_RESUME, [GM_VIEW_PURGE] = LIFECYCLE_PURGE};
    const struct gm_name_fault *bad = NULL;
    *purged = 0;
    return lifecycle_function_action(d, name, len, as[what], d->serving, purged, &bad);
}

/* Whether the asker of the request being served (d->serving, as
   d->serving_who) may read or act: the ACL's admin-read or admin; without
   an ACL file, anyone may read, and act from this host (or from anywhere
   with --http-allow-remote-actions). */
static bool
view_permitted(void *arg, enum gm_view_need need, struct gm_view_refusal *why)
{
    struct gm_dispatcher *d = arg;
    struct gm_peer *p = d->serving;
    enum gm_perm perm = need == GM_VIEW_ACT ? GM_PERM_ADMIN : GM_PERM_ADMIN_READ;
    char what[96];
    int n = snprintf(what, sizeof what, "HTTP /%.*s", (int)(d->serving_path_len < 80 ? d->serving_path_len : 80),
                     d->serving_path ? d->serving_path : "");
    size_t len = n < 0 ? 0 : (size_t)n < sizeof what ? (size_t)n : sizeof what - 1;
    why->identity = d->serving_who ? d->serving_who : p->identity;
    why->permission = gm_perm_name(perm);
    why->by_acl = d->acl_enforced;
    if (d->acl_enforced)
        return access_request(d, p, d->serving_who, perm, NULL, what, len);
    if (perm == GM_PERM_ADMIN_READ || p->is_loopback || d->cfg->frontend_remote_actions)
        return true;
    access_denied(d, p, why->identity, perm, "", what, len);
    return false;
}

void
gm_disp_view_init(struct gm_dispatcher *d)
{
    d->view.d = d;
    d->view.permitted = view_permitted;
    d->view.server = view_server;
    d->view.each_function = view_each_function;
    d->view.each_worker = view_each_worker;
    d->view.jobs = view_jobs;
    d->view.cancel = view_cancel;
    d->view.dead = view_dead;
    d->view.job = view_job_state;
    d->view.dead_action = view_dead_action;
    d->view.function_action = view_function_action;
}
