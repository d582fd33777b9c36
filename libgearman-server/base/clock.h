/*
 * clock.h: the two clocks the server reads, in milliseconds.  Any thread.
 */
#ifndef GM_CLOCK_H
#define GM_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds (for deadlines and "how long since"); never 0, so
   0 can mean "none". */
static inline uint64_t
gm_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    return ms ? ms : 1;
}

/* Wall-clock milliseconds since the epoch (job run times, ages). */
static inline int64_t
gm_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif /* GM_CLOCK_H */
