/*
 * sched.c: next-run computation for SUBMIT_JOB_SCHED (see sched.h).
 */
#include "config.h"

#include "libgearman-server/proto/sched.h"

#include <time.h>

#include "libgearman-server/proto/protocol.h"

static int
parse_field(const char *p, size_t len, int lo, int hi, int *out)
{
    if (len == 0 || (len == 1 && p[0] == '*')) {
        *out = -1;
        return 0;
    }
    uint64_t v;
    if (!gm_parse_u64(p, len, 1000, &v) || (int)v < lo || (int)v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int
gm_sched_parse(const char *const field[5], const size_t len[5], struct gm_sched *s)
{
    if (parse_field(field[0], len[0], 0, 59, &s->minute) < 0)
        return 1;
    if (parse_field(field[1], len[1], 0, 23, &s->hour) < 0)
        return 2;
    if (parse_field(field[2], len[2], 1, 31, &s->mday) < 0)
        return 3;
    if (parse_field(field[3], len[3], 1, 12, &s->month) < 0)
        return 4;
    if (parse_field(field[4], len[4], 0, 7, &s->wday) < 0)
        return 5;
    if (s->wday == 7)
        s->wday = 0;
    return 0;
}

static int
is_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

/* Days in month `mon` (1-12) of `year`. */
static int
month_days(int year, int mon)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return mon == 2 && is_leap(year) ? 29 : days[mon - 1];
}

/* A day as the walk sees it: the civil date and its weekday, stepped by
   arithmetic rather than a timegm/gmtime pair per day. */
struct day {
    int year, mon, mday, wday; /* mon 1-12, wday 0-6 (Sunday = 0) */
};

static int
day_matches(const struct gm_sched *s, const struct day *d)
{
    if (s->month >= 0 && s->month != d->mon)
        return 0;
    if (s->mday >= 0 && s->wday >= 0)
        return s->mday == d->mday || s->wday == d->wday;
    return (s->mday < 0 || s->mday == d->mday) && (s->wday < 0 || s->wday == d->wday);
}

/* Moves d forward by n days, n at most to the first of the next month. */
static void
day_advance(struct day *d, int n)
{
    d->wday = (d->wday + n) % 7;
    d->mday += n;
    if (d->mday > month_days(d->year, d->mon)) {
        d->mday = 1;
        if (++d->mon > 12) {
            d->mon = 1;
            d->year++;
        }
    }
}

#define SCHED_DAYS (366 * 8) /* how far the walk looks: 29 February 2096, then 2104 */

int64_t
gm_sched_next_counted(const struct gm_sched *s, int64_t now, uint32_t *steps)
{
    uint32_t nsteps = 0;
    int64_t result = -1;
    /* With no day of week to fall back on, a fixed month that lacks the day
       never matches (29 February does, in leap years). */
    static const int max_mday[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (s->wday < 0 && s->month >= 1 && s->month <= 12 && s->mday > max_mday[s->month - 1])
        goto out;
    /* Start at the minute now is in: a job whose fields match it runs now
       (design section 9), not at the next match, which with day and month
       given is a year away. */
    time_t t = (time_t)(now - (now % 60 + 60) % 60);
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        goto out;
    struct day d = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_wday};
    int first_hour = tm.tm_hour, first_min = tm.tm_min;
    /* Each step is one day, or the rest of a month that is not the one
       asked for: at most SCHED_DAYS steps, fewer than 400 with a month. */
    for (int day = 0; day < SCHED_DAYS; nsteps++) {
        if (s->month >= 0 && s->month != d.mon) {
            int rest = month_days(d.year, d.mon) - d.mday + 1;
            day_advance(&d, rest);
            day += rest;
            continue;
        }
        if (day_matches(s, &d)) {
            for (int h = day ? 0 : first_hour; h < 24; h++) {
                if (s->hour >= 0 && s->hour != h)
                    continue;
                int m0 = (day == 0 && h == first_hour) ? first_min : 0;
                for (int m = m0; m < 60; m++) {
                    if (s->minute >= 0 && s->minute != m)
                        continue;
                    struct tm hit = {.tm_year = d.year - 1900, .tm_mon = d.mon - 1, .tm_mday = d.mday,
                                     .tm_hour = h, .tm_min = m};
                    result = (int64_t)timegm(&hit);
                    nsteps++;
                    goto out;
                }
            }
        }
        day_advance(&d, 1);
        day++;
    }
out:
    if (steps)
        *steps = nsteps;
    return result;
}

int64_t
gm_sched_next(const struct gm_sched *s, int64_t now)
{
    return gm_sched_next_counted(s, now, NULL);
}
