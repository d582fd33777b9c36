/*
 * busy_poll.h: an adaptive busy-polling window for a libev loop
 * (--busy-poll).  Used by every I/O thread and by the dispatcher thread,
 * each on its own loop; a busy poll belongs to the thread running that loop.
 *
 * Sleeping in epoll_wait and being woken by the next packet or hand-off
 * costs tens of microseconds on a virtual machine, on every hop of a job.
 * After activity the loop keeps polling without blocking (an idle watcher
 * makes libev poll with a zero timeout) for a window, and the window adapts
 * the way the kernel's guest halt-polling does: when the next activity came
 * after the loop gave up but within the maximum, a longer window would have
 * caught it, so it doubles; when it came later than the maximum, polling
 * was wasted, so it halves, down to nothing.  Each polling round first
 * yields the CPU, so polling only uses a CPU no other thread wants.
 */
#ifndef GM_BUSY_POLL_H
#define GM_BUSY_POLL_H

#include <ev.h>

struct gm_busy_poll {
    ev_idle idle;          /* active while the window is open */
    double max;            /* seconds; 0 = never poll */
    double window;         /* current window, seconds */
    double last_activity;  /* ev_now() of the last activity */
};

/* Sets up bp for loop; max_us = 0 turns polling off. */
void gm_busy_poll_init(struct gm_busy_poll *bp, unsigned max_us);

/* Call on each activity (a socket read, a wake-up from another thread):
   adapts the window and opens it. */
void gm_busy_poll_activity(struct gm_busy_poll *bp, struct ev_loop *loop);

#endif /* GM_BUSY_POLL_H */
