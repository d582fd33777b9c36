/*
 * busy_poll.c: the adaptive busy-polling window (see busy_poll.h).  Runs on
 * the thread of the loop it is attached to; holds no shared state.
 */
#include "config.h"

#include "libgearman-server/base/busy_poll.h"

#include <sched.h>

#define POLL_START_FRACTION 0.25 /* a closed window reopens at this share of the maximum */
#define POLL_MIN 10e-6           /* below this a window closes entirely */

/* Runs when a zero-timeout poll found nothing: yields the CPU to any thread
   waiting for it, then polls again until the window since the last
   activity has passed. */
static void
on_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct gm_busy_poll *bp = w->data;
    sched_yield();
    ev_now_update(loop);
    if (ev_now(loop) - bp->last_activity >= bp->window)
        ev_idle_stop(loop, w);
}

void
gm_busy_poll_init(struct gm_busy_poll *bp, unsigned max_us)
{
    ev_idle_init(&bp->idle, on_idle);
    bp->idle.data = bp;
    bp->max = max_us / 1e6;
    bp->window = 0;
    bp->last_activity = 0;
}

void
gm_busy_poll_activity(struct gm_busy_poll *bp, struct ev_loop *loop)
{
    if (bp->max <= 0)
        return;
    double now = ev_now(loop);
    double gap = now - bp->last_activity;
    bp->last_activity = now;
    if (gap > bp->window) {
        if (gap <= bp->max) {
            double w = bp->window * 2;
            if (w < bp->max * POLL_START_FRACTION)
                w = bp->max * POLL_START_FRACTION;
            bp->window = w < bp->max ? w : bp->max;
        } else {
            bp->window /= 2;
            if (bp->window < POLL_MIN)
                bp->window = 0;
        }
    }
    if (bp->window > 0 && !ev_is_active(&bp->idle))
        ev_idle_start(loop, &bp->idle);
}
