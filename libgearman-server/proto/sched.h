/*
 * sched.h: the schedule of SUBMIT_JOB_SCHED: five cron-like fields
 * (minute, hour, day of month, month, day of week), each a number or empty
 * / "*" for "any", evaluated in UTC.  Pure functions, any thread.
 */
#ifndef GM_SCHED_H
#define GM_SCHED_H

#include <stddef.h>
#include <stdint.h>

struct gm_sched {
    int minute;  /* 0-59, or -1 for any */
    int hour;    /* 0-23 */
    int mday;    /* 1-31 */
    int month;   /* 1-12 */
    int wday;    /* 0-6, Sunday = 0 (7 is read as 0) */
};

/* Parses the five fields (ptr/len pairs in the order above); returns 0, or
   the 1-based index of the first bad field. */
int gm_sched_parse(const char *const field[5], const size_t len[5], struct gm_sched *s);

/* Returns the start (Unix seconds) of the first minute matching s, counting
   the minute `now` is in, so the answer may be up to 59 seconds before now
   (a job due then runs at once); -1 if no minute matches within eight years
   (e.g. 31 February).  Day of month and day of week combine as in cron:
   when both are given, a day matching either one matches.  A schedule that
   can never match (day 30 of February, 31 of April, with no day of week)
   is answered at once; any other walks at most 2,928 days, stepped by
   arithmetic (a month that is not the one asked for in one step). */
int64_t gm_sched_next(const struct gm_sched *s, int64_t now);

/* gm_sched_next that also reports the steps its walk took (days, or the
   rest of a month, skipped), for tests that pin its cost. */
int64_t gm_sched_next_counted(const struct gm_sched *s, int64_t now, uint32_t *steps);

#endif /* GM_SCHED_H */
