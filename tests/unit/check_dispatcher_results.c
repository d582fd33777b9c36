/*
 * check_dispatcher_results.c: unit tests for what clients hear about their
 * jobs: WORK_* packets to every attached client in order, GET_STATUS and
 * GET_STATUS_UNIQUE, WORK_EXCEPTION with and without the exceptions option,
 * OPTION_REQ, work results from connections not holding the job, and
 * clients leaving (abandoned jobs, jobs taken up again by a new client).
 * The harness (disp_harness.h) plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

/* ------------------------------------------------------------------ */
/* Results                                                             */
/* ------------------------------------------------------------------ */

START_TEST(test_work_packets_reach_every_attached_client_in_order)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "u", "x", "H:test:1");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u", "x", "H:test:1");
    GRABBED(w, "H:test:1", "f", "x");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "1", "4");
    work(w, GM_PKT_WORK_DATA, "H:test:1", "d1");
    work(w, GM_PKT_WORK_WARNING, "H:test:1", "careful");
    work(w, GM_PKT_WORK_DATA, "H:test:1", "d2");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", " 3", "4x"); /* forwarded as sent */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "all done");
    gm_conn_id cs[2] = {c1, c2};
    for (int i = 0; i < 2; i++) {
        EXPECT(cs[i], GM_PKT_WORK_STATUS, "H:test:1", "1", "4");
        EXPECT(cs[i], GM_PKT_WORK_DATA, "H:test:1", "d1");
        EXPECT(cs[i], GM_PKT_WORK_WARNING, "H:test:1", "careful");
        EXPECT(cs[i], GM_PKT_WORK_DATA, "H:test:1", "d2");
        EXPECT(cs[i], GM_PKT_WORK_STATUS, "H:test:1", " 3", "4x");
        EXPECT(cs[i], GM_PKT_WORK_COMPLETE, "H:test:1", "all done");
        EXPECT_NOTHING(cs[i]);
    }
    EXPECT_NOTHING(w);
}
END_TEST

START_TEST(test_get_status_reports_known_running_and_progress)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id other = conn_open("other", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    send1(c, GM_PKT_GET_STATUS, "H:test:99");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:99", "0", "0", "0", "0");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", "H:test:1");
    send1(other, GM_PKT_GET_STATUS, "H:test:1"); /* any connection may ask */
    EXPECT(other, GM_PKT_STATUS_RES, "H:test:1", "1", "0", "0", "0");
    GRABBED(w, "H:test:1", "f", "d");
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "1", "0", "0");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "3", "10");
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "1", "3", "10");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", " 7abc", "-1"); /* read like atoi */
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "1", "1", "7", "4294967295");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "");
    send1(c, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(c, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_get_status_unique_reports_the_attached_client_count)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    send1(c1, GM_PKT_GET_STATUS_UNIQUE, "same");
    EXPECT(c1, GM_PKT_STATUS_RES_UNIQUE, "same", "0", "0", "0", "0", "0");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "same", "d", "H:test:1");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "same", "d", "H:test:1");
    send1(c1, GM_PKT_GET_STATUS_UNIQUE, "same");
    EXPECT(c1, GM_PKT_STATUS_RES_UNIQUE, "same", "1", "0", "0", "0", "2");
    GRABBED(w, "H:test:1", "f", "d");
    send3(w, GM_PKT_WORK_STATUS, "H:test:1", "5", "6");
    EXPECT(c1, GM_PKT_WORK_STATUS, ANY, ANY, ANY);
    EXPECT(c2, GM_PKT_WORK_STATUS, ANY, ANY, ANY);
    send1(c1, GM_PKT_GET_STATUS_UNIQUE, "same");
    EXPECT(c1, GM_PKT_STATUS_RES_UNIQUE, "same", "1", "1", "5", "6", "2");
    /* a background job counts no clients; another function's unique is found too */
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB_BG, "g", "bgu", "d", "H:test:2");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "bgu");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "bgu", "1", "0", "0", "0", "0");
    /* an empty unique never matches, even with an empty-unique job queued */
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB_BG, "g", "", "d", "H:test:3");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "", "0", "0", "0", "0", "0");
}
END_TEST

/* Issue 14.5: GET_STATUS_UNIQUE looked the key up in every function, one
   hash lookup each; it now reads the key's head, whatever the number of
   functions. */
START_TEST(test_get_status_unique_looks_in_one_place_whatever_the_functions)
{
    gm_conn_id c = conn_open("c", 0);
    char fn[16], u[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(fn, sizeof fn, "f%d", i);
        snprintf(u, sizeof u, "u%d", i);
        submit(c, GM_PKT_SUBMIT_JOB_BG, fn, u, "d");
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    uint64_t before = H.d->visits;
    send1(c, GM_PKT_GET_STATUS_UNIQUE, "nope");
    EXPECT(c, GM_PKT_STATUS_RES_UNIQUE, "nope", "0", "0", "0", "0", "0");
    send1(c, GM_PKT_GET_STATUS_UNIQUE, "u1999");
    EXPECT(c, GM_PKT_STATUS_RES_UNIQUE, "u1999", "1", "0", "0", "0", "0");
    ck_assert_uint_le(H.d->visits - before, 20); /* was about 4,000 */
}
END_TEST

/* One unique key in several functions: as gearmand's first hash hit, the
   newest job holding it answers; when it ends, the next newest does.
   Coalescing stays per function. */
START_TEST(test_get_status_unique_of_a_key_in_several_functions_is_the_newest_job)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "a", "k", "d", "H:test:1");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "a", "k", "d", "H:test:1");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB_BG, "b", "k", "d", "H:test:2");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "c", "k", "d", "H:test:3");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "0", "0", "0", "1"); /* c's job */
    /* a's job is still found for coalescing, with c's job at the head */
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "a", "k", "d", "H:test:1");
    can_do(w, "c");
    GRABBED(w, "H:test:3", "c", "d");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "1", "0", "0", "1");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:3", "r");
    EXPECT(c1, GM_PKT_WORK_COMPLETE, "H:test:3", "r");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "0", "0", "0", "0"); /* b's job */
    can_do(w, "b");
    GRABBED(w, "H:test:2", "b", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:2", "r");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "0", "0", "0", "3"); /* a's, 3 clients */
    /* a new job in b heads again; cancelling it hands the head back */
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB_BG, "b", "k", "d", "H:test:4");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "0", "0", "0", "0");
    admin(c2, "cancel job H:test:4");
    EXPECT_TEXT(c2, "OK\r\n");
    send1(c2, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c2, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "0", "0", "0", "3");
    conn_close(c1);
    conn_close(c2); /* a's job loses its last client and goes */
    gm_conn_id c3 = conn_open("c3", 0);
    send1(c3, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c3, GM_PKT_STATUS_RES_UNIQUE, "k", "0", "0", "0", "0", "0");
    SUBMITTED(c3, GM_PKT_SUBMIT_JOB_BG, "a", "k", "d", "H:test:5");
    send1(c3, GM_PKT_GET_STATUS_UNIQUE, "k");
    EXPECT(c3, GM_PKT_STATUS_RES_UNIQUE, "k", "1", "0", "0", "0", "0");
}
END_TEST

START_TEST(test_work_exception_is_a_plain_work_fail_without_the_exceptions_option)
{
    gm_conn_id plain = conn_open("plain", 0);
    gm_conn_id opted = conn_open("opted", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    send1(opted, GM_PKT_OPTION_REQ, "exceptions");
    EXPECT(opted, GM_PKT_OPTION_RES, "exceptions");
    SUBMITTED(plain, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    SUBMITTED(opted, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    /* exactly the handle: no trailing NUL (field length is compared) */
    struct pkt p = EXPECT(plain, GM_PKT_WORK_FAIL, "H:test:1");
    ck_assert_uint_eq(p.size, 8);
    EXPECT(opted, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    EXPECT_NOTHING(plain);
    EXPECT_NOTHING(opted);
    /* the exception ended the job */
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
}
END_TEST

START_TEST(test_exceptions_setting_forwards_work_exception_to_every_client)
{
    H.cfg.exceptions = true;
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    EXPECT(c, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
}
END_TEST

START_TEST(test_option_req_echoes_the_name_as_sent)
{
    gm_conn_id c = conn_open("c", 0);
    send1(c, GM_PKT_OPTION_REQ, "EXCEPTIONS");
    EXPECT(c, GM_PKT_OPTION_RES, "EXCEPTIONS");
    send1(c, GM_PKT_OPTION_REQ, "Exceptions");
    EXPECT(c, GM_PKT_OPTION_RES, "Exceptions");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_option_req_unknown_gives_unknown_option)
{
    gm_conn_id c = conn_open("c", 0);
    static const char *const opts[] = {"foo", "exceptionsX", "exception", ""};
    for (size_t i = 0; i < 4; i++) {
        send1(c, GM_PKT_OPTION_REQ, opts[i]);
        EXPECT(c, GM_PKT_ERROR, "UNKNOWN_OPTION", "Server does not recognize given option");
    }
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_work_result_for_an_unknown_handle_gives_job_not_found)
{
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    send1(w, GM_PKT_WORK_FAIL, "H:test:42");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    send3(w, GM_PKT_WORK_STATUS, "H:test:42", "1", "2");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    work(w, GM_PKT_WORK_DATA, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job does not exist on server");
    work(w, GM_PKT_WORK_WARNING, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job does not exist on server");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:42", "x");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND",
           "An exception was received for a job that does not exist");
    EXPECT_NOTHING(w);
}
END_TEST

/* A job exists but the sender does not hold it: a queued job, a client
   that sends results, another worker's job. */
START_TEST(test_work_result_from_a_connection_not_holding_the_job_gives_job_not_found)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "not grabbed yet");
    EXPECT(w1, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    GRABBED(w1, "H:test:1", "f", "d");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "not mine");
    EXPECT(w2, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    work(c, GM_PKT_WORK_COMPLETE, "H:test:1", "client");
    EXPECT(c, GM_PKT_ERROR, "JOB_NOT_FOUND", "Job given in work result not found");
    EXPECT_NOTHING(c);
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "mine");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "mine");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Clients leaving                                                     */
/* ------------------------------------------------------------------ */

START_TEST(test_client_disconnect_abandons_its_queued_foreground_job)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id other = conn_open("other", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("admin", 0);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "fg", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "bg", "H:test:2");
    conn_close(c);
    send1(other, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(other, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
    admin(adm, "status");
    EXPECT_TEXT(adm, "f\t1\t0\t1\n.\n");
    GRABBED(w, "H:test:2", "f", "bg"); /* the background job stays */
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
}
END_TEST

START_TEST(test_client_disconnect_keeps_a_job_another_client_waits_on)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    conn_close(c1);
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(c1);
}
END_TEST

START_TEST(test_abandoned_running_job_finishes_unheard)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id other = conn_open("other", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    conn_close(c);
    work(w, GM_PKT_WORK_DATA, "H:test:1", "partial");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(w); /* the worker is not told off */
    send1(other, GM_PKT_GET_STATUS, "H:test:1");
    EXPECT(other, GM_PKT_STATUS_RES, "H:test:1", "0", "0", "0", "0");
}
END_TEST

/* A client takes up (coalesces onto) a running job whose first client left;
   when the worker then dies, the new client must still get an answer:
   the job runs again, or at least the client hears WORK_FAIL. */
START_TEST(test_abandoned_job_taken_up_again_survives_worker_death)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    can_do(w1, "f");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    GRABBED(w1, "H:test:1", "f", "d");
    conn_close(c1);
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    conn_close(w1);
    if (next_is(c2, GM_PKT_WORK_FAIL)) {
        EXPECT(c2, GM_PKT_WORK_FAIL, "H:test:1");
        return;
    }
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w2, "f");
    grab(w2);
    ck_assert_msg(next_is(w2, GM_PKT_JOB_ASSIGN),
                  "the job c2 waits on vanished when its worker died: c2 got no WORK_FAIL and "
                  "no worker can grab it");
    EXPECT(w2, GM_PKT_JOB_ASSIGN, "H:test:1", "f", "d");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
}
END_TEST

/* The same situation when the job's CAN_DO_TIMEOUT expires instead. */
START_TEST(test_abandoned_job_taken_up_again_fails_its_new_client_on_timeout)
{
    gm_conn_id c1 = conn_open("c1", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do_timeout(w, "f", "1000");
    SUBMITTED(c1, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    conn_close(c1);
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    H.now = T0 + 1000;
    run_timers();
    EXPECT(c2, GM_PKT_WORK_FAIL, "H:test:1");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_results");
    DISP_ADD(s, test_work_packets_reach_every_attached_client_in_order);
    DISP_ADD(s, test_get_status_reports_known_running_and_progress);
    DISP_ADD(s, test_get_status_unique_reports_the_attached_client_count);
    DISP_ADD(s, test_get_status_unique_looks_in_one_place_whatever_the_functions);
    DISP_ADD(s, test_get_status_unique_of_a_key_in_several_functions_is_the_newest_job);
    DISP_ADD(s, test_work_exception_is_a_plain_work_fail_without_the_exceptions_option);
    DISP_ADD(s, test_exceptions_setting_forwards_work_exception_to_every_client);
    DISP_ADD(s, test_option_req_echoes_the_name_as_sent);
    DISP_ADD(s, test_option_req_unknown_gives_unknown_option);
    DISP_ADD(s, test_work_result_for_an_unknown_handle_gives_job_not_found);
    DISP_ADD(s, test_work_result_from_a_connection_not_holding_the_job_gives_job_not_found);
    DISP_ADD(s, test_client_disconnect_abandons_its_queued_foreground_job);
    DISP_ADD(s, test_client_disconnect_keeps_a_job_another_client_waits_on);
    DISP_ADD(s, test_abandoned_running_job_finishes_unheard);
    DISP_ADD(s, test_abandoned_job_taken_up_again_survives_worker_death);
    DISP_ADD(s, test_abandoned_job_taken_up_again_fails_its_new_client_on_timeout);
    return gm_check_run_tap(s);
}
