/*
 * check_dispatcher_submit.c: unit tests for how the dispatcher takes jobs
 * in and hands them out: JOB_CREATED and its handles, GRAB_JOB and its
 * variants (JOB_ASSIGN, _UNIQ, _ALL, reduce jobs), priorities across
 * functions (issue #173) and FIFO within one, and unique-key coalescing
 * (foreground and background, "-" uniques, the 64-byte limit).  The
 * harness (disp_harness.h) plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

/* ------------------------------------------------------------------ */
/* Submitting and grabbing                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_job_created_handles_count_up_from_one)
{
    gm_conn_id c = conn_open("c", 0);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u1", "d1", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "u2", "d2", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_HIGH, "g", "", "d3", "H:test:3");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_LOW_BG, "h", "", "", "H:test:4");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_grab_job_assigns_handle_function_and_data)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "reverse");
    EXPECT_NOTHING(w);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "reverse", "u", "payload bytes", "H:test:1");
    GRABBED(w, "H:test:1", "reverse", "payload bytes");
    EXPECT_NOTHING(w);
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_grab_job_with_nothing_queued_gives_no_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    grab(w); /* no abilities at all */
    EXPECT0(w, GM_PKT_NO_JOB);
    can_do(w, "f");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "for another function", "H:test:1");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_grab_job_uniq_carries_the_unique)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "my-unique", "data", "H:test:1");
    send0(w, GM_PKT_GRAB_JOB_UNIQ);
    EXPECT(w, GM_PKT_JOB_ASSIGN_UNIQ, "H:test:1", "f", "my-unique", "data");
}
END_TEST

/* A function name long enough that the reply's head does not fit the
   inline space: it travels as a block, then the data by reference. */
START_TEST(test_long_function_name_assign_arrives_whole)
{
    char fn[201];
    memset(fn, 'n', 200);
    fn[200] = '\0';
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, fn);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, fn, "u", "the data", "H:test:1");
    GRABBED(w, "H:test:1", fn, "the data");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Priorities                                                          */
/* ------------------------------------------------------------------ */

/* Grabs n jobs for w and writes their data fields ("pa-H1", ...) into out. */
static void
grab_n(gm_conn_id w, int n, char out[][32])
{
    for (int i = 0; i < n; i++) {
        grab(w);
        struct pkt p = EXPECT(w, GM_PKT_JOB_ASSIGN, ANY, ANY, ANY);
        assign_data(&p, out[i], 32);
    }
}

/* The reference's scenario (issue #173): pa:{H,H,N,N,L,L}, pb:{H,L}; in
   1.1.20 the worker's last-registered function wins, so LOW of pb runs
   before HIGH of pa.  Here priority is global across the functions. */
static void
check_global_priority(bool pa_first)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, pa_first ? "pa" : "pb");
    can_do(w, pa_first ? "pb" : "pa");
    static const struct {
        uint32_t type;
        const char *fn, *data;
    } jobs[] = {
        {GM_PKT_SUBMIT_JOB_LOW_BG, "pa", "pa-L1"}, {GM_PKT_SUBMIT_JOB_BG, "pa", "pa-N1"},
        {GM_PKT_SUBMIT_JOB_HIGH_BG, "pa", "pa-H1"}, {GM_PKT_SUBMIT_JOB_LOW_BG, "pb", "pb-L1"},
        {GM_PKT_SUBMIT_JOB_LOW_BG, "pa", "pa-L2"}, {GM_PKT_SUBMIT_JOB_BG, "pa", "pa-N2"},
        {GM_PKT_SUBMIT_JOB_HIGH_BG, "pb", "pb-H1"}, {GM_PKT_SUBMIT_JOB_HIGH_BG, "pa", "pa-H2"},
    };
    for (size_t i = 0; i < 8; i++) {
        SUBMITTED(c, jobs[i].type, jobs[i].fn, "", jobs[i].data, ANY);
    }
    char got[8][32];
    grab_n(w, 8, got);
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    static const char prio_order[] = "HHHNNLLL";
    for (int i = 0; i < 8; i++)
        ck_assert_msg(got[i][3] == prio_order[i],
                      "grab %d got %s; order was %s %s %s %s %s %s %s %s", i, got[i], got[0], got[1],
                      got[2], got[3], got[4], got[5], got[6], got[7]);
    /* FIFO inside each (function, priority) */
    int pos_h1 = -1, pos_h2 = -1, pos_n1 = -1, pos_n2 = -1, pos_l1 = -1, pos_l2 = -1;
    for (int i = 0; i < 8; i++) {
        if (!strcmp(got[i], "pa-H1")) pos_h1 = i;
        if (!strcmp(got[i], "pa-H2")) pos_h2 = i;
        if (!strcmp(got[i], "pa-N1")) pos_n1 = i;
        if (!strcmp(got[i], "pa-N2")) pos_n2 = i;
        if (!strcmp(got[i], "pa-L1")) pos_l1 = i;
        if (!strcmp(got[i], "pa-L2")) pos_l2 = i;
    }
    ck_assert_int_lt(pos_h1, pos_h2);
    ck_assert_int_lt(pos_n1, pos_n2);
    ck_assert_int_lt(pos_l1, pos_l2);
    ck_assert_int_ge(pos_h1, 0);
    ck_assert_int_ge(pos_n1, 0);
    ck_assert_int_ge(pos_l1, 0);
}

START_TEST(test_high_runs_before_low_across_functions)
{
    check_global_priority(true);
}
END_TEST

START_TEST(test_high_runs_before_low_whatever_the_registration_order)
{
    check_global_priority(false);
}
END_TEST

/* Three functions each holding one job of a different priority, the LOW one
   registered last (1.1.20 would hand it out first). */
START_TEST(test_low_of_last_registered_function_waits_for_high_of_others)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "a");
    can_do(w, "b");
    can_do(w, "c");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_LOW, "c", "", "c-low", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "b", "", "b-normal", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_HIGH, "a", "", "a-high", "H:test:3");
    GRABBED(w, "H:test:3", "a", "a-high");
    GRABBED(w, "H:test:2", "b", "b-normal");
    GRABBED(w, "H:test:1", "c", "c-low");
}
END_TEST

START_TEST(test_functions_of_equal_priority_take_turns)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "a");
    can_do(w, "b");
    for (int i = 1; i <= 3; i++) {
        char d[32];
        snprintf(d, sizeof d, "a%d", i);
        SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "a", "", d, ANY);
    }
    for (int i = 1; i <= 3; i++) {
        char d[32];
        snprintf(d, sizeof d, "b%d", i);
        SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "b", "", d, ANY);
    }
    char got[6][32];
    grab_n(w, 6, got);
    for (int i = 1; i < 6; i++)
        ck_assert_msg(got[i][0] != got[i - 1][0], "no turn taking: %s %s %s %s %s %s", got[0],
                      got[1], got[2], got[3], got[4], got[5]);
    /* FIFO within each function */
    int na = 0, nb = 0;
    for (int i = 0; i < 6; i++) {
        char want[32];
        snprintf(want, sizeof want, "%c%d", got[i][0], got[i][0] == 'a' ? ++na : ++nb);
        ck_assert_str_eq(got[i], want);
    }
}
END_TEST

START_TEST(test_jobs_of_one_priority_run_in_submission_order)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    for (int i = 1; i <= 5; i++) {
        char d[32];
        snprintf(d, sizeof d, "j%d", i);
        SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", d, ANY);
    }
    for (int i = 1; i <= 5; i++) {
        char h[32], d[32];
        snprintf(h, sizeof h, "H:test:%d", i);
        snprintf(d, sizeof d, "j%d", i);
        GRABBED(w, h, "f", d);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Unique-key coalescing                                               */
/* ------------------------------------------------------------------ */

START_TEST(test_same_unique_coalesces_foreground_clients_onto_one_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "u", "first", "H:test:1");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB_HIGH, "f", "u", "second", "H:test:1"); /* data and priority ignored */
    GRABBED(w, "H:test:1", "f", "first");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "result");
    EXPECT(c1, GM_PKT_WORK_COMPLETE, "H:test:1", "result");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "result");
    EXPECT_NOTHING(c1);
    EXPECT_NOTHING(c2);
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_foreground_submit_coalesces_onto_background_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB_BG, "f", "u", "bg", "H:test:1");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u", "fg", "H:test:1");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB_LOW_BG, "f", "u", "bg again", "H:test:1"); /* BG onto it too */
    GRABBED(w, "H:test:1", "f", "bg");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(c1); /* background submitters hear nothing */
}
END_TEST

START_TEST(test_submit_coalesces_onto_a_running_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "u", "x", "H:test:1");
    GRABBED(w, "H:test:1", "f", "x");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    EXPECT(c1, GM_PKT_WORK_STATUS, "H:test:1", "1", "2");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u", "y", "H:test:1");
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB); /* no second job */
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "2", "2");
    EXPECT(c1, GM_PKT_WORK_STATUS, "H:test:1", "2", "2");
    EXPECT(c2, GM_PKT_WORK_STATUS, "H:test:1", "2", "2");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
    EXPECT(c1, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "done");
}
END_TEST

START_TEST(test_dash_unique_coalesces_on_identical_data)
{
    gm_conn_id c = conn_open("c", 0);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "same", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "same", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "different", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "-", "same", "H:test:3"); /* other function */
    /* an explicit unique equal to the data is another key */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "same", "same", "H:test:4");
    /* empty data with "-" never coalesces */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "", "H:test:5");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "-", "", "H:test:6");
}
END_TEST

START_TEST(test_empty_unique_never_coalesces)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "same", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "same", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "same", "H:test:3");
    GRABBED(w, "H:test:1", "f", "same");
    GRABBED(w, "H:test:2", "f", "same");
    GRABBED(w, "H:test:3", "f", "same");
}
END_TEST

START_TEST(test_same_unique_under_another_function_is_another_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    can_do(w, "g");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u", "for f", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "g", "u", "for g", "H:test:2");
    GRABBED(w, "H:test:1", "f", "for f");
    GRABBED(w, "H:test:2", "g", "for g");
}
END_TEST

START_TEST(test_unique_is_free_again_after_the_job_ends)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u", "one", "H:test:1");
    GRABBED(w, "H:test:1", "f", "one");
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u", "two", "H:test:2");
    GRABBED(w, "H:test:2", "f", "two");
}
END_TEST

START_TEST(test_unique_longer_than_64_bytes_is_too_large)
{
    char u65[66], u64[65];
    memset(u65, 'u', 65);
    u65[65] = '\0';
    memset(u64, 'u', 64);
    u64[64] = '\0';
    gm_conn_id c = conn_open("c", 0);
    submit(c, GM_PKT_SUBMIT_JOB, "f", u65, "d");
    EXPECT(c, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", "Unique value too large");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", u65, "d");
    EXPECT(c, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", "Unique value too large");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", u64, "d", "H:test:1"); /* the refusals used no handle */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", u64, "d", "H:test:1"); /* and all 64 bytes are the key */
    send1(c, GM_PKT_GET_STATUS_UNIQUE, u64);
    EXPECT(c, GM_PKT_STATUS_RES_UNIQUE, u64, "1", "0", "0", "0", "2");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Reduce jobs                                                         */
/* ------------------------------------------------------------------ */

START_TEST(test_reduce_job_grabbed_with_grab_job_all_gives_job_assign_all)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "map");
    submit_reduce(c, GM_PKT_SUBMIT_REDUCE_JOB, "map", "u", "reduce-fn", "the data");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send0(w, GM_PKT_GRAB_JOB_ALL);
    EXPECT(w, GM_PKT_JOB_ASSIGN_ALL, "H:test:1", "map", "u", "reduce-fn", "the data");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "reduced");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "reduced");
}
END_TEST

START_TEST(test_reduce_job_grabbed_with_grab_job_uniq_gives_job_assign_uniq)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "map");
    submit_reduce(c, GM_PKT_SUBMIT_REDUCE_JOB, "map", "u1", "red", "d1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    submit_reduce(c, GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND, "map", "u2", "red", "d2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    send0(w, GM_PKT_GRAB_JOB_UNIQ);
    EXPECT(w, GM_PKT_JOB_ASSIGN_UNIQ, "H:test:1", "map", "u1", "d1");
    GRABBED(w, "H:test:2", "map", "d2");
}
END_TEST

START_TEST(test_grab_job_all_for_a_plain_job_gives_job_assign_uniq)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    send0(w, GM_PKT_GRAB_JOB_ALL);
    EXPECT(w, GM_PKT_JOB_ASSIGN_UNIQ, "H:test:1", "f", "u", "d");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_submit");
    DISP_ADD(s, test_job_created_handles_count_up_from_one);
    DISP_ADD(s, test_grab_job_assigns_handle_function_and_data);
    DISP_ADD(s, test_grab_job_with_nothing_queued_gives_no_job);
    DISP_ADD(s, test_grab_job_uniq_carries_the_unique);
    DISP_ADD(s, test_long_function_name_assign_arrives_whole);
    DISP_ADD(s, test_high_runs_before_low_across_functions);
    DISP_ADD(s, test_high_runs_before_low_whatever_the_registration_order);
    DISP_ADD(s, test_low_of_last_registered_function_waits_for_high_of_others);
    DISP_ADD(s, test_functions_of_equal_priority_take_turns);
    DISP_ADD(s, test_jobs_of_one_priority_run_in_submission_order);
    DISP_ADD(s, test_same_unique_coalesces_foreground_clients_onto_one_job);
    DISP_ADD(s, test_foreground_submit_coalesces_onto_background_job);
    DISP_ADD(s, test_submit_coalesces_onto_a_running_job);
    DISP_ADD(s, test_dash_unique_coalesces_on_identical_data);
    DISP_ADD(s, test_empty_unique_never_coalesces);
    DISP_ADD(s, test_same_unique_under_another_function_is_another_job);
    DISP_ADD(s, test_unique_is_free_again_after_the_job_ends);
    DISP_ADD(s, test_unique_longer_than_64_bytes_is_too_large);
    DISP_ADD(s, test_reduce_job_grabbed_with_grab_job_all_gives_job_assign_all);
    DISP_ADD(s, test_reduce_job_grabbed_with_grab_job_uniq_gives_job_assign_uniq);
    DISP_ADD(s, test_grab_job_all_for_a_plain_job_gives_job_assign_uniq);
    return gm_check_run_tap(s);
}
