/*
 * check_dispatcher_durable.c: unit tests for the dispatcher with a durable
 * queue attached: the test plays the persistence thread (it reads the
 * records the dispatcher publishes and writes the acknowledgements) as
 * well as the I/O threads (disp_harness.h).  Covered: a background submit
 * joining a queued foreground job (issue 12.4) before, after and without
 * the commit, and memory failing at each step of a durable submit (issue
 * 12.3; malloc is wrapped, -Wl,--wrap=malloc).
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

/* malloc is wrapped (-Wl,--wrap=malloc): with malloc_budget >= 0, that
   many more mallocs succeed and the rest fail, until it is set back to -1. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static long malloc_budget = -1;

void *
__wrap_malloc(size_t size)
{
    if (malloc_budget == 0)
        return NULL;
    if (malloc_budget > 0)
        malloc_budget--;
    return __real_malloc(size);
}

/* ------------------------------------------------------------------ */
/* A durable queue: the test plays the persistence thread              */
/* ------------------------------------------------------------------ */

/* Attaches a persistence channel whose records the test reads and whose
   acknowledgements it writes. */
static void
durable_attach(void)
{
    ck_assert_int_eq(gm_persist_channel_init(&H.pc, 1024), 0);
    H.durable = true;
    gm_disp_attach_persist(H.d, &H.pc, NULL, NULL, true, false);
}

/* One record as the test saw it. */
struct trec {
    uint64_t seq;
    uint8_t op;
    char handle[GM_HANDLE_MAX + 1];
    char function[64];
};

/* Takes every record the dispatcher has published; returns how many ADDs
   and DONEs there were (at most max are kept in out; handle counter records
   are left out).  *last gets the last sequence number, if not NULL. */
static size_t
take_records(struct trec *out, size_t max, uint64_t *last)
{
    gm_disp_flush(H.d);
    size_t n = 0;
    struct gm_prec *r;
    while ((r = gm_prec_ring_peek(&H.pc.records))) {
        if (last)
            *last = r->seq;
        if (r->op == GM_QOP_COUNTER) {
            gm_prec_ring_consume(&H.pc.records);
            continue;
        }
        if (n < max) {
            out[n].seq = r->seq;
            out[n].op = r->op;
            const char *h = r->handle ? r->handle : r->handle_copy;
            snprintf(out[n].handle, sizeof out[n].handle, "%.*s", (int)r->handle_len, h);
            snprintf(out[n].function, sizeof out[n].function, "%.*s", (int)r->function_len,
                     r->function ? r->function : "");
        }
        n++;
        gm_block_unref(r->blk);
        gm_block_unref(r->data_blk);
        gm_prec_ring_consume(&H.pc.records);
    }
    gm_prec_ring_release(&H.pc.records);
    return n;
}

/* Answers every record up to seq: stored (ok) or refused. */
static void
ack(uint64_t upto, bool ok)
{
    struct gm_pack a;
    memset(&a, 0, sizeof a);
    a.upto = upto;
    a.ok = ok;
    snprintf(a.reason, sizeof a.reason, "refused by the test");
    ck_assert(gm_pack_ring_push(&H.pc.acks, &a));
    gm_pack_ring_publish(&H.pc.acks);
    pump();
}

/* Takes the records and expects exactly the ops given, ADD or DONE, of the
   handle given; returns the last sequence number. */
static uint64_t
expect_records(int line, const uint8_t *ops, size_t n, const char *handle)
{
    struct trec r[16];
    uint64_t last = 0;
    size_t got = take_records(r, 16, &last);
    size_t k = 0;
    for (size_t i = 0; i < got && i < 16; i++) {
        ck_assert_msg(k < n, "line %d: an unexpected record (op %u of %s)", line, r[i].op,
                      r[i].handle);
        ck_assert_msg(r[i].op == ops[k] && strcmp(r[i].handle, handle) == 0,
                      "line %d: record %zu is op %u of %s, expected op %u of %s", line, k, r[i].op,
                      r[i].handle, ops[k], handle);
        k++;
    }
    ck_assert_msg(k == n && got == n, "line %d: %zu records, expected %zu", line, got, n);
    return last;
}
#define EXPECT_RECORDS(handle, ...)                                                              \
    expect_records(__LINE__, (const uint8_t[]){__VA_ARGS__},                                    \
                   sizeof((const uint8_t[]){__VA_ARGS__}), (handle))

/* fg submits job H:test:1 of function f (unique u, data d); w runs it. */
static void
run_first_job(gm_conn_id fg, gm_conn_id w)
{
    can_do(w, "f");
    SUBMITTED(fg, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
}

/* Issue 12.4: a background submit that joins a queued foreground job makes
   the job durable first: JOB_CREATED only after its ADD is acknowledged;
   the job then outlives its foreground client. */
START_TEST(test_background_submit_joining_a_queued_job_hears_job_created_after_the_commit)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    SUBMITTED(fg, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    ck_assert_uint_eq(take_records(NULL, 0, NULL), 0); /* foreground: not stored */
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    EXPECT_NOTHING(bg);
    uint64_t seq = EXPECT_RECORDS("H:test:1", GM_QOP_ADD);
    conn_close(fg); /* wanted by a background submitter: it stays */
    ack(seq, true);
    EXPECT(bg, GM_PKT_JOB_CREATED, "H:test:1");
    can_do(w, "f");
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_RECORDS("H:test:1", GM_QOP_DONE);
}
END_TEST

/* The job completes while its ADD is on its way: the DONE follows the ADD,
   the background submitter still hears JOB_CREATED, and the job's memory
   goes once the acknowledgement is in (AddressSanitizer checks both). */
START_TEST(test_joined_job_completing_before_its_commit_answers_the_waiter_and_is_done)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    run_first_job(fg, w);
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    submit(bg, GM_PKT_SUBMIT_JOB_HIGH_BG, "f", "u", "d"); /* a second waiter, no second ADD */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(fg, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT_NOTHING(bg);
    uint64_t seq = EXPECT_RECORDS("H:test:1", GM_QOP_ADD, GM_QOP_DONE);
    ack(seq, true);
    EXPECT(bg, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT(bg, GM_PKT_JOB_CREATED, "H:test:1");
    admin(fg, "status");
    EXPECT_TEXT(fg, "f\t0\t0\t1\n.\n");
}
END_TEST

/* Refused by storage: the background submitters get QUEUE_ERROR, and the
   foreground job goes on for its client as before. */
START_TEST(test_joined_job_refused_by_storage_stays_a_foreground_job)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    SUBMITTED(fg, GM_PKT_SUBMIT_JOB, "f", "u", "d", "H:test:1");
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    uint64_t seq = EXPECT_RECORDS("H:test:1", GM_QOP_ADD);
    ack(seq, false);
    EXPECT(bg, GM_PKT_ERROR, "QUEUE_ERROR", ANY);
    can_do(w, "f");
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(fg, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    ck_assert_uint_eq(take_records(NULL, 0, NULL), 0); /* never stored: no DONE */
    /* refused after its client left: nobody wants it, it goes */
    SUBMITTED(fg, GM_PKT_SUBMIT_JOB, "f", "u2", "d", "H:test:2");
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u2", "d");
    seq = EXPECT_RECORDS("H:test:2", GM_QOP_ADD);
    conn_close(fg);
    ack(seq, false);
    EXPECT(bg, GM_PKT_ERROR, "QUEUE_ERROR", ANY);
    admin(bg, "status");
    EXPECT_TEXT(bg, "f\t0\t0\t1\n.\n");
}
END_TEST

/* A worker that dies holding a joined job gives it back to the queue even
   though its foreground client has left (the background submitter wants
   it); the server stopping with the ADD still out frees everything. */
START_TEST(test_joined_job_outlives_its_client_and_worker_and_a_stop_before_the_commit)
{
    durable_attach();
    gm_conn_id fg = conn_open("fg", 0), bg = conn_open("bg", 1), w = conn_open("w", 0);
    run_first_job(fg, w);
    submit(bg, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d");
    conn_close(fg);
    conn_close(w);
    admin(bg, "status");
    EXPECT_TEXT(bg, "f\t1\t0\t0\n.\n");
    /* teardown frees the dispatcher with the ADD unanswered */
}
END_TEST

/* Issue 12.3: memory failing at any point of a durable background submit
   gives the submitter an ERROR and leaves nothing behind: no read of the
   freed job (the log line after it), no leak. */
START_TEST(test_durable_submit_with_memory_failing_at_each_step_answers_an_error)
{
    durable_attach();
    int saved = gm_log_level;
    gm_log_level = GM_LOG_NOTICE; /* the accepted,... line reads the job */
    gm_log_open("none");
    gm_conn_id c = conn_open("c", 0);
    unsigned errors = 0;
    for (long budget = 0; budget < 8; budget++) {
        char unique[16];
        snprintf(unique, sizeof unique, "u%ld", budget);
        struct gm_field_ref f[3] = {FR("f"), FR(unique), FR("d")};
        send_nopump(c, GM_PKT_SUBMIT_JOB_BG, f, 3);
        malloc_budget = budget;
        gm_disp_drain(H.d, 1u << 20);
        malloc_budget = -1;
        collect();
        if (next_is(c, GM_PKT_ERROR)) {
            EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", ANY);
            errors++;
        }
        EXPECT_NOTHING(c);
        take_records(NULL, 0, NULL);
    }
    gm_log_level = saved;
    gm_log_close();
    ck_assert_uint_gt(errors, 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_durable");
    DISP_ADD(s, test_background_submit_joining_a_queued_job_hears_job_created_after_the_commit);
    DISP_ADD(s, test_joined_job_completing_before_its_commit_answers_the_waiter_and_is_done);
    DISP_ADD(s, test_joined_job_refused_by_storage_stays_a_foreground_job);
    DISP_ADD(s, test_joined_job_outlives_its_client_and_worker_and_a_stop_before_the_commit);
    DISP_ADD(s, test_durable_submit_with_memory_failing_at_each_step_answers_an_error);
    return gm_check_run_tap(s);
}
