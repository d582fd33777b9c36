/*
 * check_dispatcher_workers.c: unit tests for workers coming and going: a
 * worker's disconnect or CANT_DO requeues its job at the head, job_retries
 * ends a job after so many worker deaths, and PRE_SLEEP/NOOP wake-ups (every
 * sleeper, or one with worker_wakeup, at once when work waits, on a new
 * CAN_DO).  The harness (disp_harness.h) plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

/* ------------------------------------------------------------------ */
/* Worker failure, retries, wake-ups                                   */
/* ------------------------------------------------------------------ */

START_TEST(test_worker_disconnect_requeues_its_job_at_the_head)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    can_do(w1, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d1", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d2", "H:test:2");
    GRABBED(w1, "H:test:1", "f", "d1");
    send3(w1, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    EXPECT(c, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    conn_close(w1);
    EXPECT_NOTHING(c); /* the client is not told */
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "0", "0", "0"); /* queued, progress reset */
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    GRABBED(w2, "H:test:1", "f", "d1"); /* before d2 */
    GRABBED(w2, "H:test:2", "f", "d2");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
}
END_TEST

START_TEST(test_worker_disconnect_wakes_a_sleeping_worker)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w1, "H:test:1", "f", "d");
    pre_sleep(w2);
    EXPECT_NOTHING(w2);
    conn_close(w1);
    EXPECT0(w2, GM_PKT_NOOP);
    EXPECT_NOTHING(w2);
    EXPECT_NOTHING(c);
    GRABBED(w2, "H:test:1", "f", "d");
}
END_TEST

START_TEST(test_job_fails_after_job_retries_worker_deaths)
{
    H.cfg.job_retries = 2;
    gm_conn_id c = conn_open("c", 0);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    gm_conn_id w1 = conn_open("w1", 1);
    can_do(w1, "f");
    GRABBED(w1, "H:test:1", "f", "d");
    conn_close(w1); /* first attempt */
    EXPECT_NOTHING(c);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    GRABBED(w2, "H:test:1", "f", "d");
    conn_close(w2); /* second attempt: that was the last */
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT_NOTHING(c);
    gm_conn_id w3 = conn_open("w3", 1);
    can_do(w3, "f");
    grab(w3);
    EXPECT0(w3, GM_PKT_NO_JOB);
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
}
END_TEST

START_TEST(test_job_retries_zero_requeues_without_limit)
{
    gm_conn_id c = conn_open("c", 0);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "w%d", i);
        gm_conn_id w = conn_open(name, 1);
        can_do(w, "f");
        GRABBED(w, "H:test:1", "f", "d");
        conn_close(w);
        EXPECT_NOTHING(c);
    }
}
END_TEST

START_TEST(test_cant_do_requeues_the_running_job_of_that_function)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w1, "g");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w1, "H:test:1", "f", "d");
    cant_do(w1, "g"); /* unrelated: the job stays with w1 */
    can_do(w2, "f");
    grab(w2);
    EXPECT0(w2, GM_PKT_NO_JOB);
    cant_do(w1, "f");
    GRABBED(w2, "H:test:1", "f", "d");
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "late");
    EXPECT(w1, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    EXPECT_NOTHING(c);
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
}
END_TEST

START_TEST(test_pre_sleep_then_new_job_wakes_every_sleeping_worker)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 0);
    gm_conn_id w3 = conn_open("w3", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    can_do(w3, "g");
    pre_sleep(w1);
    pre_sleep(w2);
    pre_sleep(w3);
    EXPECT_NOTHING(w1);
    EXPECT_NOTHING(w2);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "one", "H:test:1");
    EXPECT0(w1, GM_PKT_NOOP);
    EXPECT0(w2, GM_PKT_NOOP);
    EXPECT_NOTHING(w3); /* asleep on another function */
    /* one NOOP per sleep: a second job does not wake them again */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "two", "H:test:2");
    EXPECT_NOTHING(w1);
    EXPECT_NOTHING(w2);
    GRABBED(w1, "H:test:1", "f", "one");
    GRABBED(w2, "H:test:2", "f", "two");
    /* after a GRAB, sleeping again arms a new NOOP */
    pre_sleep(w1);
    EXPECT_NOTHING(w1);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "three", "H:test:3");
    EXPECT0(w1, GM_PKT_NOOP);
    EXPECT_NOTHING(w2); /* w2 did not go to sleep */
    EXPECT_NOTHING(w3);
}
END_TEST

START_TEST(test_worker_wakeup_one_wakes_a_single_sleeper_per_job)
{
    H.cfg.worker_wakeup = 1;
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w[3];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "w%d", i);
        w[i] = conn_open(name, 1);
        can_do(w[i], "f");
        pre_sleep(w[i]);
    }
    bool woken[3] = {false, false, false};
    for (int j = 0; j < 3; j++) {
        SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", ANY);
        int n = 0;
        for (int i = 0; i < 3; i++) {
            if (next_is(w[i], GM_PKT_NOOP)) {
                EXPECT0(w[i], GM_PKT_NOOP);
                ck_assert_msg(!woken[i], "job %d woke w%d a second time", j, i);
                woken[i] = true;
                n++;
            }
            EXPECT_NOTHING(w[i]);
        }
        ck_assert_msg(n == 1, "job %d woke %d workers, expected 1", j, n);
    }
    /* everyone has been woken once; a fourth job has nobody left to wake */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", ANY);
    for (int i = 0; i < 3; i++)
        EXPECT_NOTHING(w[i]);
}
END_TEST

START_TEST(test_pre_sleep_with_a_queued_job_gets_noop_at_once)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", "H:test:1");
    pre_sleep(w);
    EXPECT0(w, GM_PKT_NOOP);
    pre_sleep(w);
    EXPECT0(w, GM_PKT_NOOP); /* every PRE_SLEEP while work waits */
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_registering_a_function_with_work_wakes_a_sleeping_worker)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    pre_sleep(w);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "d", "H:test:1");
    EXPECT_NOTHING(w);
    can_do(w, "g");
    EXPECT0(w, GM_PKT_NOOP);
    GRABBED(w, "H:test:1", "g", "d");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_workers");
    DISP_ADD(s, test_worker_disconnect_requeues_its_job_at_the_head);
    DISP_ADD(s, test_worker_disconnect_wakes_a_sleeping_worker);
    DISP_ADD(s, test_job_fails_after_job_retries_worker_deaths);
    DISP_ADD(s, test_job_retries_zero_requeues_without_limit);
    DISP_ADD(s, test_cant_do_requeues_the_running_job_of_that_function);
    DISP_ADD(s, test_pre_sleep_then_new_job_wakes_every_sleeping_worker);
    DISP_ADD(s, test_worker_wakeup_one_wakes_a_single_sleeper_per_job);
    DISP_ADD(s, test_pre_sleep_with_a_queued_job_gets_noop_at_once);
    DISP_ADD(s, test_registering_a_function_with_work_wakes_a_sleeping_worker);
    return gm_check_run_tap(s);
}
