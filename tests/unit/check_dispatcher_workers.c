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

/* ------------------------------------------------------------------ */
/* What a worker's registrations cost (issue 14.5)                     */
/* ------------------------------------------------------------------ */

/* n CAN_DOs of each name in turn (a b a b ...), pushed as one burst. */
static void
can_do_interleaved(gm_conn_id w, const char *a, const char *b, int n)
{
    for (int i = 0; i < n; i++) {
        struct gm_field_ref fa = FR(a), fb = FR(b);
        send_nopump(w, GM_PKT_CAN_DO, &fa, 1);
        send_nopump(w, GM_PKT_CAN_DO, &fb, 1);
    }
    pump();
}

/* The status line of one function. */
static void
expect_status_line(gm_conn_id adm, const char *want)
{
    admin(adm, "status");
    struct tconn *tc = must_find(adm);
    const char *text = tc->buf + tc->off;
    size_t len = tc->len - tc->off;
    ck_assert_msg(memmem(text, len, want, strlen(want)) != NULL, "no \"%s\" in status:\n%.*s", want,
                  (int)len, text);
    tc->off = tc->len;
}

/* Repeated CAN_DOs are counted, as gearmand shows them, but stored once:
   GRAB_JOB and CANT_DO cost what the worker's functions cost (it was
   O(registrations) per GRAB and O(n^2) memmove for an interleaved
   CANT_DO). */
START_TEST(test_repeated_can_do_is_counted_not_stored)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("adm", 0);
    can_do_interleaved(w, "a", "b", 3000);
    EXPECT_NOTHING(w);
    expect_status_line(adm, "a\t0\t0\t3000\n");
    expect_status_line(adm, "b\t0\t0\t3000\n");
    uint64_t before = H.d->visits;
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    ck_assert_uint_le(H.d->visits - before, 4); /* was 18,000 */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "b", "", "x", "H:test:1");
    before = H.d->visits;
    cant_do(w, "a");
    ck_assert_uint_le(H.d->visits - before, 4);
    GRABBED(w, "H:test:1", "b", "x");
    expect_status_line(adm, "a\t0\t0\t0\n");
    expect_status_line(adm, "b\t1\t1\t3000\n");
    /* `workers` still names b as often as it was registered */
    admin(adm, "workers");
    struct tconn *tc = must_find(adm);
    char *line = memmem(tc->buf + tc->off, tc->len - tc->off, "- : b b", 7);
    ck_assert_ptr_nonnull(line);
    size_t names = 0;
    for (char *q = line + 3; *q == ' ' && q[1] == 'b'; q += 2)
        names++;
    ck_assert_uint_eq(names, 3000);
    tc->off = tc->len;
}
END_TEST

/* A worker holds at most GM_WORKER_REGS_MAX registrations: past it a new
   function is refused with an ERROR (the connection stays), a repeat is
   accepted but not counted. */
START_TEST(test_worker_registrations_stop_at_the_limit)
{
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("adm", 0);
    can_do_interleaved(w, "a", "b", 4000);
    char fn[16];
    for (int i = 0; i < GM_WORKER_REGS_MAX - 8000; i++) {
        snprintf(fn, sizeof fn, "f%d", i);
        struct gm_field_ref f = FR(fn);
        send_nopump(w, GM_PKT_CAN_DO, &f, 1);
    }
    pump();
    EXPECT_NOTHING(w);
    can_do(w, "one-too-many");
    EXPECT(w, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", "Worker has 10000 registrations already");
    can_do(w, "a");
    can_do_timeout(w, "f7", "1000");
    EXPECT_NOTHING(w);
    ck_assert_uint_eq(must_find(w)->closes, 0);
    expect_status_line(adm, "a\t0\t0\t4000\n");
    expect_status_line(adm, "\nf7\t0\t0\t1\n");
    expect_status_line(adm, "one-too-many\t0\t0\t0\n");
    /* the repeat's timeout applies */
    gm_conn_id c = conn_open("c", 0);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f7", "", "x", "H:test:1");
    GRABBED(w, "H:test:1", "f7", "x");
    H.now = T0 + 1000;
    run_timers();
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    /* room again after a CANT_DO */
    cant_do(w, "f0");
    can_do(w, "one-too-many");
    EXPECT_NOTHING(w);
    expect_status_line(adm, "one-too-many\t0\t0\t1\n");
}
END_TEST

/* CANT_DO requeues the jobs taken through that function without looking
   at the worker's other running jobs. */
START_TEST(test_cant_do_looks_only_at_the_jobs_of_that_function)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w, "many");
    for (int i = 0; i < 2000; i++) {
        struct gm_field_ref f[3] = {FR("many"), FR(""), FR("x")};
        send_nopump(c, GM_PKT_SUBMIT_JOB_BG, f, 3);
        send_nopump(w, GM_PKT_GRAB_JOB, NULL, 0);
    }
    pump();
    must_find(c)->off = must_find(c)->len; /* 2000 JOB_CREATED */
    can_do(w, "one");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "one", "", "y", "H:test:2001");
    must_find(w)->off = must_find(w)->len;
    GRABBED(w, "H:test:2001", "one", "y");
    uint64_t before = H.d->visits;
    cant_do(w, "one");
    ck_assert_uint_le(H.d->visits - before, 4);
    can_do(w2, "one");
    GRABBED(w2, "H:test:2001", "one", "y"); /* requeued */
    gm_conn_id adm = conn_open("adm", 0);
    expect_status_line(adm, "many\t2000\t2000\t1\n");
    conn_close(w); /* every job it held goes back */
    expect_status_line(adm, "many\t2000\t0\t0\n");
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
    DISP_ADD(s, test_repeated_can_do_is_counted_not_stored);
    DISP_ADD(s, test_worker_registrations_stop_at_the_limit);
    DISP_ADD(s, test_cant_do_looks_only_at_the_jobs_of_that_function);
    return gm_check_run_tap(s);
}
