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
day_matches(const struct gm_sched *s, const struct tm *tm)
{
    if (s->month >= 0 && s->month != tm->tm_mon + 1)
        return 0;
    int dom = s->mday < 0 || s->mday == tm->tm_mday;
    int dow = s->wday < 0 || s->wday == tm->tm_wday;
    if (s->mday >= 0 && s->wday >= 0)
        return s->mday == tm->tm_mday || s->wday == tm->tm_wday;
    return dom && dow;
}

int64_t
gm_sched_next(const struct gm_sched *s, int64_t now)
{
    /* Start at the minute now is in: a job whose fields match it runs now
       (design section 9), not at the next match, which with day and month
       given is a year away. */
    time_t t = (time_t)(now - (now % 60 + 60) % 60);
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return -1;
    int first_hour = tm.tm_hour, first_min = tm.tm_min;
    for (int day = 0; day < 366 * 8; day++) {
        if (day_matches(s, &tm)) {
            for (int h = day ? 0 : first_hour; h < 24; h++) {
                if (s->hour >= 0 && s->hour != h)
                    continue;
                int m0 = (day == 0 && h == first_hour) ? first_min : 0;
                for (int m = m0; m < 60; m++) {
                    if (s->minute >= 0 && s->minute != m)
                        continue;
                    struct tm hit = tm;
                    hit.tm_hour = h;
                    hit.tm_min = m;
                    hit.tm_sec = 0;
                    return (int64_t)timegm(&hit);
                }
            }
        }
        tm.tm_mday++;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        time_t next = timegm(&tm);
        if (!gmtime_r(&next, &tm))
            return -1;
    }
    return -1;
}
