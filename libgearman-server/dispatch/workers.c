/*
 * workers.c: the worker registry (model layer of the dispatcher): a
 * worker's registrations (CAN_DO), removing them (its running jobs go back
 * to the queue), and choosing the job it runs next.  Dispatcher thread
 * only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

/* Finds the job this worker should run next: the highest priority among all
   its functions, functions of equal priority taking turns from the cursor.
   Returns the job and its registration, or NULL. */
struct gm_job *
pick_job(struct gm_peer *p, struct gm_reg **reg_out, uint32_t *idx_out)
{
    uint32_t n = p->nregs;
    for (int prio = 0; prio < GM_PRIO_COUNT; prio++) {
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = (p->rr + k) % n;
            struct gm_list *first = gm_list_first(&p->regs[i]->fn->queue[prio]);
            if (first) {
                *reg_out = p->regs[i];
                *idx_out = i;
                return gm_container_of(first, struct gm_job, link);
            }
        }
    }
    return NULL;
}

void
add_reg(struct gm_dispatcher *d, struct gm_peer *p, struct gm_function *fn, uint32_t timeout_ms)
{
    if (p->nregs == p->regs_cap) {
        uint32_t n = p->regs_cap ? p->regs_cap * 2 : 4;
        struct gm_reg **r = realloc(p->regs, n * sizeof *r);
        if (!r)
            goto oom;
        p->regs = r;
        p->regs_cap = n;
    }
    struct gm_reg *reg = calloc(1, sizeof *reg);
    if (!reg)
        goto oom;
    reg->fn = fn;
    reg->peer = p;
    reg->timeout_ms = timeout_ms;
    gm_list_init(&reg->sleep_link);
    p->regs[p->nregs++] = reg;
    fn->worker_count++;
    if (peer_in_sleepers(p)) {
        bool has_work = false;
        for (int prio = 0; prio < GM_PRIO_COUNT; prio++)
            has_work |= !gm_list_empty(&fn->queue[prio]);
        if (has_work) {
            send_simple(d, p->id, GM_PKT_NOOP);
            p->noop_sent = true;
            peer_leave_sleepers(p);
        } else {
            gm_list_push_back(&fn->sleepers, &reg->sleep_link);
        }
    }
    return;
oom:
    gm_log(GM_LOG_ERROR, "out of memory registering %s for %s", fn->name, p->addr);
}

/* Removes registration i: its running jobs go back to the queue. */
void
remove_reg(struct gm_dispatcher *d, struct gm_peer *p, uint32_t i)
{
    struct gm_reg *reg = p->regs[i];
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &p->running)
    {
        struct gm_job *job = gm_container_of(n, struct gm_job, link);
        if (job->reg == reg)
            job_requeue(d, job, "worker dropped the function");
    }
    if (gm_list_linked(&reg->sleep_link))
        gm_list_remove(&reg->sleep_link);
    reg->fn->worker_count--;
    memmove(&p->regs[i], &p->regs[i + 1], (p->nregs - i - 1) * sizeof *p->regs);
    p->nregs--;
    if (p->rr > i)
        p->rr--;
    if (p->rr >= p->nregs)
        p->rr = 0;
    free(reg);
}
