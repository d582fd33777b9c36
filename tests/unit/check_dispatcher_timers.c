/*
 * check_dispatcher_timers.c: unit tests for what runs on the dispatcher's
 * clock: epoch jobs (future, past, beyond 64 bits of milliseconds),
 * scheduled jobs (the next matching minute, this minute, impossible
 * schedules) and CAN_DO_TIMEOUT expiring a running job.  The test owns the
 * clock (H.now) and runs the timers itself; the harness (disp_harness.h)
 * plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/unit/disp_harness.h"

/* ------------------------------------------------------------------ */
/* Jobs that run later                                                 */
/* ------------------------------------------------------------------ */

START_TEST(test_future_epoch_job_waits_for_its_time_and_blocks_nothing)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    char epoch[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)(T0 / 1000 + 60));
    submit_epoch(c, "f", "", epoch, "later");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_LOW, "f", "", "low", "H:test:2");
    GRABBED(w, "H:test:2", "f", "low"); /* the LOW job is not blocked */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:2", "");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:2", "");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    EXPECT_NOTHING(w); /* the future job is nothing to wake up for */

    H.now = T0 + 59999;
    ck_assert_int_eq(run_timers(), T0 + 60000);
    EXPECT_NOTHING(w);
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    EXPECT_NOTHING(w);

    H.now = T0 + 60000;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT0(w, GM_PKT_NOOP);
    GRABBED(w, "H:test:1", "f", "later");
    EXPECT_NOTHING(c); /* epoch jobs are background jobs */
}
END_TEST

START_TEST(test_epoch_in_the_past_runs_at_once)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit_epoch(c, "f", "", "1000", "old");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit_epoch(c, "f", "", "0", "zero");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    submit_epoch(c, "f", "", "-5", "negative");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:3");
    GRABBED(w, "H:test:1", "f", "old");
    GRABBED(w, "H:test:2", "f", "zero");
    GRABBED(w, "H:test:3", "f", "negative");
    ck_assert_int_eq(run_timers(), -1);
}
END_TEST

/* An epoch so far ahead that its value in milliseconds does not fit in 64
   bits must still be "later", never "now". */
START_TEST(test_epoch_far_in_the_future_is_not_grabbable)
{
    static const char *const epochs[] = {"100000000000000000", "9223372036854775807"};
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    for (size_t i = 0; i < 2; i++) {
        submit_epoch(c, "f", "", epochs[i], "far");
        if (next_is(c, GM_PKT_ERROR)) {
            EXPECT(c, GM_PKT_ERROR, ANY, ANY); /* refusing it is fine too */
            continue;
        }
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
        grab(w);
        EXPECT0(w, GM_PKT_NO_JOB);
    }
}
END_TEST

START_TEST(test_sched_job_waits_for_its_next_matching_minute)
{
    struct tm tm = {.tm_year = 124, .tm_mon = 0, .tm_mday = 1, .tm_hour = 0, .tm_min = 0, .tm_sec = 30};
    int64_t start = (int64_t)timegm(&tm);
    H.now = start * 1000;
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit_sched(c, "f", "", "5", "", "", "", "", "at five past");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    int64_t due = (start - 30 + 5 * 60) * 1000; /* 00:05:00 */
    ck_assert_int_eq(run_timers(), due);
    EXPECT_NOTHING(w);
    H.now = due;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT0(w, GM_PKT_NOOP);
    GRABBED(w, "H:test:1", "f", "at five past");
}
END_TEST

/* Design section 9: the minute now counts; with day and month given, the
   next match after it would be a year away. */
START_TEST(test_sched_job_matching_the_current_minute_runs_now)
{
    struct tm tm = {.tm_year = 124, .tm_mon = 0, .tm_mday = 1, .tm_hour = 0, .tm_min = 5, .tm_sec = 30};
    H.now = (int64_t)timegm(&tm) * 1000; /* 2024-01-01 00:05:30 UTC */
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    submit_sched(c, "f", "", "5", "0", "1", "1", "", "this minute");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    GRABBED(w, "H:test:1", "f", "this minute");
}
END_TEST

START_TEST(test_sched_job_with_a_bad_or_impossible_schedule_is_refused)
{
    gm_conn_id c = conn_open("c", 0);
    submit_sched(c, "f", "", "0", "0", "31", "2", "", "never");
    EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", "Schedule never matches");
    submit_sched(c, "f", "", "61", "", "", "", "", "bad");
    EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", "Invalid minute in schedule");
    submit_sched(c, "f", "", "", "", "", "13", "", "bad");
    EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", "Invalid month in schedule");
    submit_sched(c, "f", "", "", "", "", "", "", "any minute");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1"); /* no handle used by the refusals */
}
END_TEST

START_TEST(test_can_do_timeout_expiry_fails_the_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "2000");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "slow", "H:test:1");
    GRABBED(w, "H:test:1", "f", "slow");
    H.now = T0 + 1999;
    ck_assert_int_eq(run_timers(), T0 + 2000);
    EXPECT_NOTHING(c);
    H.now = T0 + 2000;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT_NOTHING(c);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "too late");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    EXPECT_NOTHING(c);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    grab(w2);
    EXPECT0(w2, GM_PKT_NO_JOB);
}
END_TEST

START_TEST(test_can_do_timeout_below_one_second_counts_as_one_second)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "500");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    H.now = T0 + 999;
    run_timers();
    EXPECT_NOTHING(c);
    H.now = T0 + 1000;
    run_timers();
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
}
END_TEST

START_TEST(test_can_do_timeout_ends_with_the_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "2000");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    ck_assert_int_eq(gm_disp_run_timers(H.d, H.now), T0 + 2000);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "quick");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "quick");
    H.now = T0 + 5000;
    ck_assert_int_eq(run_timers(), -1);
    EXPECT_NOTHING(c);
    EXPECT_NOTHING(w);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_timers");
    DISP_ADD(s, test_future_epoch_job_waits_for_its_time_and_blocks_nothing);
    DISP_ADD(s, test_epoch_in_the_past_runs_at_once);
    DISP_ADD(s, test_epoch_far_in_the_future_is_not_grabbable);
    DISP_ADD(s, test_sched_job_waits_for_its_next_matching_minute);
    DISP_ADD(s, test_sched_job_matching_the_current_minute_runs_now);
    DISP_ADD(s, test_sched_job_with_a_bad_or_impossible_schedule_is_refused);
    DISP_ADD(s, test_can_do_timeout_expiry_fails_the_job);
    DISP_ADD(s, test_can_do_timeout_below_one_second_counts_as_one_second);
    DISP_ADD(s, test_can_do_timeout_ends_with_the_job);
    return gm_check_run_tap(s);
}
