/*
 * check_dispatcher_acl.c: unit tests for the permissions on the dispatcher
 * (dispatch/access.c, config/acl.h): a connection's identity from its
 * OPEN (cn:NAME from a verified certificate, else ip:ADDRESS), checked and
 * shown in `workers`; the cached answers going stale with a new table; a
 * table handed over twice before it is taken; a reload taking functions
 * from workers; denials counted in the view and logged at most once a
 * second per identity; and the loopback rule of shutdown without an ACL
 * file, now counted.  The harness (disp_harness.h) plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/disp_harness.h"

/* A table of ACL text (and tokens, or NULL) handed to the dispatcher. */
static void
use_acl(const char *acl, const char *tokens)
{
    char err[256];
    struct gm_acl *a = gm_acl_parse(acl, acl ? strlen(acl) : 0, "test.acl", tokens, tokens ? strlen(tokens) : 0,
                                    "test.tokens", err, sizeof err);
    ck_assert_msg(a != NULL, "%s", err);
    gm_disp_set_acl(H.d, a);
}

/* Opens a connection on thread 0 from addr whose OPEN carries payload
   (the I/O thread's "cn:NAME" for a verified client certificate). */
static gm_conn_id
open_as(const char *name, const char *addr, const char *payload)
{
    uint32_t slot = ++H.next_slot[0];
    gm_conn_id id = gm_conn_id_make(0, slot, 1000 + slot);
    conn_register(name, id);
    struct gm_in m;
    memset(&m, 0, sizeof m);
    m.conn = id;
    m.kind = GM_IN_OPEN;
    m.u.open.fd = 100 + (int)slot;
    m.u.open.port = (uint16_t)(40000 + slot);
    snprintf(m.u.open.addr, sizeof m.u.open.addr, "%s", addr);
    if (payload) {
        size_t len = strlen(payload);
        struct gm_block *b = gm_block_new(len);
        ck_assert_ptr_nonnull(b);
        memcpy(b->data, payload, len);
        m.payload = b->data;
        m.len = (uint32_t)len;
        m.blk = b;
    }
    push_in(&m);
    pump();
    return id;
}

#define DENIED(c, text) EXPECT((c), GM_PKT_ERROR, "PERMISSION_DENIED", (text))

static struct gm_view_server
view_now(void)
{
    struct gm_view_server v;
    H.d->view.server(H.d, &v);
    return v;
}

/* ------------------------------------------------------------------ */

START_TEST(test_a_certificate_identity_is_checked_and_shown_for_an_unset_client_id)
{
    use_acl("cn:billing-* submit billing.*\ncn:img work images\n* admin-read *\n", NULL);
    gm_conn_id c = open_as("client", "10.0.0.7", "cn:billing-eu");
    gm_conn_id w = open_as("worker", "10.0.0.8", "cn:img");
    gm_conn_id ip = open_as("plain", "10.0.0.9", NULL);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "billing.x", "u1", "d", ANY);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "payroll", "u2", "d");
    DENIED(c, "cn:billing-eu lacks submit for function payroll");
    submit(ip, GM_PKT_SUBMIT_JOB_BG, "billing.x", "u3", "d");
    DENIED(ip, "ip:10.0.0.9 lacks submit for function billing.x");
    can_do(w, "images");
    EXPECT_NOTHING(w);
    can_do(c, "images");
    DENIED(c, "cn:billing-eu lacks work for function images");
    /* the certificate's name stands for an unset client id; an address
       does not (it is the column before) */
    admin(ip, "workers");
    EXPECT_TEXT(ip, "101 10.0.0.7 cn:billing-eu :\n102 10.0.0.8 cn:img : images\n103 10.0.0.9 - :\n.\n");
    send1(w, GM_PKT_SET_CLIENT_ID, "resizer-1");
    admin(ip, "workers");
    EXPECT_TEXT(ip, "101 10.0.0.7 cn:billing-eu :\n102 10.0.0.8 resizer-1 : images\n103 10.0.0.9 - :\n.\n");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_a_name_that_would_cut_the_listing_is_not_shown)
{
    use_acl("* admin-read *\n", NULL);
    gm_conn_id a = open_as("spaced", "10.0.0.7", "cn:John Smith");
    gm_conn_id b = open_as("ctl", "10.0.0.8", "cn:x\ny");
    admin(a, "workers");
    EXPECT_TEXT(a, "101 10.0.0.7 - :\n102 10.0.0.8 - :\n.\n");
    /* but it is its identity */
    use_acl("cn:John* submit f\n", NULL);
    SUBMITTED(a, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d", ANY);
    submit(b, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    DENIED(b, "cn:x\ny lacks submit for function f");
}
END_TEST

START_TEST(test_an_ipv4_mapped_address_is_named_as_ipv4)
{
    use_acl("ip:10.0.0.0/8 submit f\n", NULL);
    gm_conn_id c = open_as("mapped", "::ffff:10.1.2.3", NULL);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d", ANY);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "u", "d");
    DENIED(c, "ip:10.1.2.3 lacks submit for function g");
}
END_TEST

START_TEST(test_cached_answers_go_stale_with_a_new_table)
{
    use_acl("ip:127.0.0.1 submit f\n", NULL);
    gm_conn_id c = conn_open("client", 0);
    for (int i = 0; i < 3; i++) {
        SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", ANY);
        submit(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "d");
        DENIED(c, "ip:127.0.0.1 lacks submit for function g");
    }
    ck_assert_uint_eq(view_now().denied_submit, 3); /* a cached refusal counts too */
    use_acl("ip:127.0.0.1 submit g\n", NULL);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d");
    DENIED(c, "ip:127.0.0.1 lacks submit for function f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "d", ANY);
    /* a function dropped, another made (perhaps in its memory): the
       cached answer was for the first one's serial number, never reused */
    gm_conn_id adm = conn_open("admin", 1);
    use_acl("ip:127.0.0.1 submit aa\nip:127.0.0.1 admin *\n", NULL);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "aa", "", "d", ANY); /* makes aa */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "aa", "", "d", ANY); /* cached: allowed */
    admin(adm, "drop function aa");
    EXPECT_TEXT(adm, "OK\r\n");
    admin(adm, "create function zz");
    EXPECT_TEXT(adm, "OK\r\n");
    submit(c, GM_PKT_SUBMIT_JOB_BG, "zz", "", "d");
    DENIED(c, "ip:127.0.0.1 lacks submit for function zz");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_a_table_handed_over_twice_before_it_is_taken_is_replaced)
{
    use_acl("* submit first\n", NULL);
    use_acl("* submit second\n", NULL); /* the first is freed, never seen (ASan: no leak) */
    gm_conn_id c = conn_open("client", 0);
    submit(c, GM_PKT_SUBMIT_JOB_BG, "first", "", "d");
    DENIED(c, "ip:127.0.0.1 lacks submit for function first");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "second", "", "d", ANY);
}
END_TEST

START_TEST(test_a_reload_takes_functions_from_workers_and_requeues_their_jobs)
{
    use_acl("* work *\n* submit *\n* admin-read *\n", NULL);
    gm_conn_id w = conn_open("worker", 0);
    gm_conn_id c = conn_open("client", 1);
    can_do(w, "a");
    can_do(w, "b");
    can_do(w, "b");
    const char *h = "H:test:1";
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "b", "", "d", h);
    GRABBED(w, h, "b", "d");
    use_acl("* work a\n* submit *\n* admin-read *\n", NULL);
    admin(c, "status");
    EXPECT_TEXT(c, "a\t0\t0\t1\nb\t1\t0\t0\n.\n");
    admin(c, "workers");
    EXPECT_TEXT(c, "101 127.0.0.1 - : a\n101 127.0.0.1 - :\n.\n");
    /* the job went back to the queue: another worker of b gets it */
    use_acl("* work *\n* submit *\n* admin-read *\n", NULL);
    gm_conn_id w2 = conn_open("worker2", 0);
    can_do(w2, "b");
    GRABBED(w2, h, "b", "d");
    /* the first worker's late answer is for a job it no longer holds */
    work(w, GM_PKT_WORK_COMPLETE, h, "late");
    EXPECT(w, GM_PKT_ERROR, "JOB_NOT_FOUND", ANY);
}
END_TEST

START_TEST(test_denials_are_logged_at_most_once_a_second_per_identity)
{
    char path[] = "/tmp/check_dispatcher_acl.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(gm_log_open(path), 0);
    gm_log_level = GM_LOG_WARNING;
    use_acl("ip:127.0.0.1 submit f\n", NULL);
    gm_conn_id a = conn_open("a", 0);
    gm_conn_id b = open_as("b", "10.0.0.2", NULL);
    for (int i = 0; i < 5; i++) {
        submit(a, GM_PKT_SUBMIT_JOB_BG, "g", "", "d");
        DENIED(a, "ip:127.0.0.1 lacks submit for function g");
        H.now += 100;
    }
    submit(b, GM_PKT_SUBMIT_JOB_BG, "f", "", "d"); /* another identity: its own budget */
    DENIED(b, "ip:10.0.0.2 lacks submit for function f");
    H.now += 600; /* a second after the first */
    submit(a, GM_PKT_SUBMIT_JOB_BG, "g", "", "d");
    DENIED(a, "ip:127.0.0.1 lacks submit for function g");
    /* a certificate's name is in the lines about its connection */
    gm_conn_id c = open_as("cert", "10.0.0.3", "cn:w");
    work(c, GM_PKT_WORK_COMPLETE, "H:test:404", "x");
    EXPECT(c, GM_PKT_ERROR, "JOB_NOT_FOUND", ANY);
    gm_log_open("none");
    gm_log_level = -1;
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int n = 0;
    const char *want[] = {"permission denied: ip:127.0.0.1 lacks submit for function g (127.0.0.1:40001)",
                          "permission denied: ip:10.0.0.2 lacks submit for function f (10.0.0.2:40002)",
                          "permission denied: ip:127.0.0.1 lacks submit for function g (127.0.0.1:40001) (and 4 "
                          "more since)",
                          "GEARMAN_JOB_NOT_FOUND:Job given in work result not found (10.0.0.3:40003 cn:w)"};
    while (fgets(line, sizeof line, f)) {
        ck_assert_int_lt(n, 4);
        ck_assert_msg(strstr(line, want[n]) && strstr(line, n < 3 ? "WARNING" : "ERROR"), "line %d: %s", n, line);
        n++;
    }
    fclose(f);
    unlink(path);
    ck_assert_int_eq(n, 4);
    ck_assert_uint_eq(view_now().denied_submit, 7);
}
END_TEST

START_TEST(test_without_an_acl_shutdown_keeps_the_loopback_rule_and_counts_it)
{
    gm_conn_id far = open_as("far", "10.0.0.2", NULL);
    admin(far, "shutdown");
    EXPECT_TEXT(far, "ERR PERMISSION_DENIED shutdown+is+accepted+only+from+loopback\r\n");
    ck_assert_uint_eq(H.shutdowns, 0);
    struct gm_view_server v = view_now();
    ck_assert_uint_eq(v.denied_admin, 1);
    ck_assert_uint_eq(v.denied_submit + v.denied_work + v.denied_admin_read, 0);
    /* everything else is for anyone, as before */
    SUBMITTED(far, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", ANY);
    admin(far, "create function g");
    EXPECT_TEXT(far, "OK\r\n");
    /* with an ACL, a remote admin may shut down */
    use_acl("ip:10.0.0.2 admin *\n", NULL);
    admin(far, "shutdown");
    EXPECT_TEXT(far, "OK\r\n");
    ck_assert_uint_eq(H.shutdowns, 1);
}
END_TEST

START_TEST(test_a_token_file_alone_denies_nothing)
{
    use_acl(NULL, "ops 0123456789abcdef\n");
    gm_conn_id c = open_as("far", "10.0.0.2", NULL);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", ANY);
    can_do(c, "f");
    admin(c, "status");
    EXPECT_TEXT(c, "f\t1\t0\t1\n.\n");
}
END_TEST

static Suite *
acl_suite(void)
{
    Suite *s = suite_create("dispatcher_acl");
    DISP_ADD(s, test_a_certificate_identity_is_checked_and_shown_for_an_unset_client_id);
    DISP_ADD(s, test_a_name_that_would_cut_the_listing_is_not_shown);
    DISP_ADD(s, test_an_ipv4_mapped_address_is_named_as_ipv4);
    DISP_ADD(s, test_cached_answers_go_stale_with_a_new_table);
    DISP_ADD(s, test_a_table_handed_over_twice_before_it_is_taken_is_replaced);
    DISP_ADD(s, test_a_reload_takes_functions_from_workers_and_requeues_their_jobs);
    DISP_ADD(s, test_denials_are_logged_at_most_once_a_second_per_identity);
    DISP_ADD(s, test_without_an_acl_shutdown_keeps_the_loopback_rule_and_counts_it);
    DISP_ADD(s, test_a_token_file_alone_denies_nothing);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(acl_suite());
}
