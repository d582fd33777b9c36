/*
 * view.c: the read-only view of the dispatcher's state that a front-end
 * formats (frontend.h: struct gm_state_view).
 *
 * Dispatcher thread only: the view's functions are called by the front-end's
 * serve(), which the dispatcher runs; they read the job store directly and
 * hand out pointers that are valid during the callback only.
 */
#include "config.h"

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
        out->running += fn->running;
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
    out->queue_backend = "builtin";
    out->queue_healthy = true;
    out->queue_pending = d->persist.pend_len;
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
        v.running = fn->running;
        v.workers = fn->worker_count;
        GM_VIEW_FUNCTION_COUNTERS(VIEW_ADD_COUNTER, &v)
        /* The head of each queue is its oldest job (requeued ones go back
           to the head, and are older still). */
        v.oldest_queued_ms = -1;
        for (int p = 0; p < GM_PRIO_COUNT; p++) {
            struct gm_list *first = gm_list_first(&fn->queue[p]);
            if (!first)
                continue;
            const struct gm_job *j = gm_container_of(first, struct gm_job, link);
            int64_t age = (now_s - (int64_t)j->created_s) * 1000;
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
            w.client_id = p->client_id ? p->client_id : "-";
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

static const char *
state_name(const struct gm_job *j)
{
    switch (j->state) {
    case GM_JOB_RUNNING:
        return "running";
    case GM_JOB_FUTURE:
        return "scheduled";
    case GM_JOB_PERSISTING:
        return "persisting";
    default:
        return "queued";
    }
}

/* What /api/jobs asks for: one function (or any) and one state (or any). */
struct job_filter {
    const struct gm_function *fn;
    const char *state;
};

static bool
job_filter_keep(const struct gm_job *j, const void *arg)
{
    const struct job_filter *f = arg;
    return (!f->fn || j->fn == f->fn) && (!f->state || strcmp(f->state, state_name(j)) == 0);
}

static uint64_t
view_jobs(void *arg, const char *function, size_t function_len, const char *state, uint64_t offset,
          uint64_t limit, void (*cb)(void *, const struct gm_view_job *), void *cb_arg)
{
    struct gm_dispatcher *d = arg;
    struct job_filter f = {NULL, state && *state ? state : NULL};
    if (function && !(f.fn = gm_disp_function_find(d, function, function_len)))
        return 0; /* no such function: no jobs */
    if (f.state && strcmp(f.state, "queued") != 0 && strcmp(f.state, "running") != 0 &&
        strcmp(f.state, "scheduled") != 0 && strcmp(f.state, "persisting") != 0)
        return 0; /* no job is ever in that state */
    if (offset > GM_VIEW_JOBS_OFFSET_MAX)
        offset = GM_VIEW_JOBS_OFFSET_MAX;
    if (limit > GM_VIEW_JOBS_LIMIT_MAX)
        limit = GM_VIEW_JOBS_LIMIT_MAX;
    struct gm_job **v;
    uint64_t matched;
    long n = gm_disp_jobs_page(d, f.fn || f.state ? job_filter_keep : NULL, &f, offset, limit, &v, &matched);
    if (n < 0)
        return 0;
    int64_t now_s = (view_now(d) - d->start_ms) / 1000;
    for (long i = 0; i < n; i++) {
        const struct gm_job *j = v[i];
        struct gm_view_job vj;
        memset(&vj, 0, sizeof vj);
        vj.handle = gm_job_handle(j);
        vj.function = j->fn->name;
        vj.unique = gm_job_unique(j);
        vj.unique_len = j->unique_len;
        vj.priority = j->prio;
        vj.state = state_name(j);
        vj.age_ms = (now_s - (int64_t)j->created_s) * 1000;
        vj.run_at = j->state == GM_JOB_FUTURE ? j->when : 0;
        vj.retries = j->retries;
        vj.clients = j->nclients;
        vj.background = (j->flags & GM_JOB_BACKGROUND) != 0;
        vj.cancelled = (j->flags & GM_JOB_CANCELLED) != 0;
        cb(cb_arg, &vj);
    }
    free(v);
    return matched;
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

void
gm_disp_view_init(struct gm_dispatcher *d)
{
    d->view.d = d;
    d->view.server = view_server;
    d->view.each_function = view_each_function;
    d->view.each_worker = view_each_worker;
    d->view.jobs = view_jobs;
    d->view.cancel = view_cancel;
}
