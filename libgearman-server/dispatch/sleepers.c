/*
 * sleepers.c: workers asleep (PRE_SLEEP) on each of their functions, and
 * waking them with NOOP when a job comes (model layer of the dispatcher).
 * Dispatcher thread only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

void
peer_join_sleepers(struct gm_peer *p)
{
    for (uint32_t i = 0; i < p->nregs; i++)
        if (!gm_list_linked(&p->regs[i]->sleep_link))
            gm_list_push_back(&p->regs[i]->fn->sleepers, &p->regs[i]->sleep_link);
}

void
peer_leave_sleepers(struct gm_peer *p)
{
    for (uint32_t i = 0; i < p->nregs; i++)
        if (gm_list_linked(&p->regs[i]->sleep_link))
            gm_list_remove(&p->regs[i]->sleep_link);
}

bool
peer_in_sleepers(const struct gm_peer *p)
{
    return p->sleeping && !p->noop_sent;
}

void
wake_workers(struct gm_dispatcher *d, struct gm_function *fn)
{
    unsigned woken = 0;
    struct gm_list *n;
    if (!gm_function_open(fn))
        return; /* paused, or at its concurrency limit */
    while ((n = gm_list_first(&fn->sleepers))) {
        struct gm_reg *r = gm_container_of(n, struct gm_reg, sleep_link);
        struct gm_peer *p = r->peer;
        send_simple(d, p->id, GM_PKT_NOOP);
        p->noop_sent = true;
        peer_leave_sleepers(p);
        if (d->cfg->worker_wakeup && ++woken >= d->cfg->worker_wakeup)
            break;
    }
}

void
wake_for_concurrency(struct gm_dispatcher *d, struct gm_function *fn)
{
    if (fn->policy && fn->policy->v.concurrency && !d->tearing_down)
        wake_workers(d, fn);
}
