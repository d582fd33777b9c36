/*
 * workers.c: the worker registry (model layer of the dispatcher): a
 * worker's registrations (CAN_DO), removing them (their running jobs go
 * back to the queue), and choosing the job it runs next.  Dispatcher thread
 * only.
 *
 * One registration per (worker, function): a repeated CAN_DO counts on it
 * (gearmand keeps each one, and `workers` and `status` show them), so the
 * cost of GRAB_JOB, PRE_SLEEP and CANT_DO follows the functions a worker
 * has, at most GM_WORKER_REGS_MAX, never how often it named them.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

/* Finds the job this worker should run next: the highest priority among all
   its functions, functions of equal priority taking turns from the cursor.
   One pass over the registrations.  Returns the job and its registration,
   or NULL. */
struct gm_job *
pick_job(struct gm_dispatcher *d, struct gm_peer *p, struct gm_reg **reg_out, uint32_t *idx_out)
{
    uint32_t n = p->nregs, best_i = 0;
    int best = GM_PRIO_COUNT;
    struct gm_list *best_first = NULL;
    for (uint32_t k = 0, i = p->rr; k < n && best > 0; k++, i = i + 1 < n ? i + 1 : 0) {
        d->visits++;
        struct gm_function *fn = p->regs[i]->fn;
        if (!gm_function_open(fn))
            continue;
        for (int prio = 0; prio < best; prio++) {
            struct gm_list *first = gm_list_first(&fn->queue[prio]);
            if (first) {
                best = prio;
                best_i = i;
                best_first = first;
                break;
            }
        }
    }
    if (!best_first)
        return NULL;
    *reg_out = p->regs[best_i];
    *idx_out = best_i;
    return gm_container_of(best_first, struct gm_job, link);
}

/* The worker's registration of fn, or NULL. */
struct gm_reg *
find_reg(struct gm_dispatcher *d, const struct gm_peer *p, const struct gm_function *fn, uint32_t *idx)
{
    for (uint32_t i = 0; i < p->nregs; i++) {
        d->visits++;
        if (p->regs[i]->fn == fn) {
            if (idx)
                *idx = i;
            return p->regs[i];
        }
    }
    return NULL;
}

bool
add_reg(struct gm_dispatcher *d, struct gm_peer *p, struct gm_function *fn, uint32_t timeout_ms)
{
    struct gm_reg *reg = find_reg(d, p, fn, NULL);
    if (reg) {
        /* the latest timeout applies to the jobs it takes from now on */
        reg->timeout_ms = timeout_ms;
        if (p->nreg_total < GM_WORKER_REGS_MAX) {
            reg->count++;
            p->nreg_total++;
            fn->worker_count++;
        }
        return true;
    }
    if (p->nreg_total >= GM_WORKER_REGS_MAX)
        return false;
    if (p->nregs == p->regs_cap) {
        uint32_t n = p->regs_cap ? p->regs_cap * 2 : 4;
        struct gm_reg **r = realloc(p->regs, n * sizeof *r);
        if (!r)
            goto oom;
        p->regs = r;
        p->regs_cap = n;
    }
    reg = calloc(1, sizeof *reg);
    if (!reg)
        goto oom;
    reg->fn = fn;
    reg->peer = p;
    reg->timeout_ms = timeout_ms;
    reg->count = 1;
    gm_list_init(&reg->sleep_link);
    gm_list_init(&reg->running);
    p->regs[p->nregs++] = reg;
    p->nreg_total++;
    fn->worker_count++;
    if (peer_in_sleepers(p)) {
        bool has_work = false;
        for (int prio = 0; prio < GM_PRIO_COUNT && gm_function_open(fn); prio++)
            has_work |= !gm_list_empty(&fn->queue[prio]);
        if (has_work) {
            send_simple(d, p->id, GM_PKT_NOOP);
            p->noop_sent = true;
            peer_leave_sleepers(p);
        } else {
            gm_list_push_back(&fn->sleepers, &reg->sleep_link);
        }
    }
    return true;
oom:
    gm_log(GM_LOG_ERROR, "out of memory registering %s for %s", fn->name, p->addr);
    return true;
}

/* Removes registration i: its running jobs go back to the queue. */
void
remove_reg(struct gm_dispatcher *d, struct gm_peer *p, uint32_t i)
{
    struct gm_reg *reg = p->regs[i];
    struct gm_list *n;
    while ((n = gm_list_first(&reg->running)))
        job_requeue(d, gm_container_of(n, struct gm_job, link), "worker dropped the function");
    if (gm_list_linked(&reg->sleep_link))
        gm_list_remove(&reg->sleep_link);
    reg->fn->worker_count -= reg->count;
    p->nreg_total -= reg->count;
    memmove(&p->regs[i], &p->regs[i + 1], (p->nregs - i - 1) * sizeof *p->regs);
    p->nregs--;
    if (p->rr > i)
        p->rr--;
    if (p->rr >= p->nregs)
        p->rr = 0;
    free(reg);
}
