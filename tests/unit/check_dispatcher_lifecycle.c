/*
 * check_dispatcher_lifecycle.c: unit tests for the job lifecycle
 * (lifecycle.c, issue 15): retries with backoff on the dispatcher's clock,
 * dead letters and their reasons, the time limit, a lost worker, the
 * concurrency limit, pause and resume, purge, --dead-letter-max, and the
 * state view's dead letters and lifecycle actions (view.c).  The
 * test owns the clock (H.now) and runs the timers; the harness
 * (disp_harness.h) plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

static gm_conn_id adm;

static void
admin_ok(const char *line)
{
    admin(adm, line);
    EXPECT_TEXT(adm, "OK\r\n");
}

/* The dead letters' lines without their DIED_AT column (the clock is the
   test's: checked apart). */
static void
expect_dead(const char *line_cmd, const char *want)
{
    admin(adm, line_cmd);
    struct tconn *t = must_find(adm);
    char got[2048];
    size_t g = 0;
    const char *p = t->buf + t->off, *end = t->buf + t->len;
    while (p < end && g + 1 < sizeof got) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        ck_assert_ptr_nonnull(nl);
        /* drop the fifth field */
        const char *f = p;
        for (int tab = 0; tab < 4 && f < nl; f++)
            if (*f == '\t')
                tab++;
        const char *f5end = memchr(f, '\t', (size_t)(nl - f));
        if (f5end && f > p) {
            memcpy(got + g, p, (size_t)(f - p));
            g += (size_t)(f - p);
            memcpy(got + g, f5end + 1, (size_t)(nl - f5end));
            g += (size_t)(nl - f5end);
        } else {
            memcpy(got + g, p, (size_t)(nl - p + 1));
            g += (size_t)(nl - p + 1);
        }
        p = nl + 1;
    }
    got[g] = '\0';
    t->off = t->len;
    ck_assert_str_eq(got, want);
}

/* Grabs (expecting an assignment) after the retry's wait, which must be in
   [lo, hi] ms from now. */
static void
retry_due_within(gm_conn_id w, int64_t lo, int64_t hi)
{
    int64_t start = H.now;
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB); /* waiting for its retry */
    pre_sleep(w);
    int64_t due = run_timers();
    ck_assert_int_ge(due - start, lo);
    ck_assert_int_le(due - start, hi);
    H.now = due - 1;
    run_timers();
    EXPECT_NOTHING(w);
    H.now = due;
    run_timers();
    EXPECT0(w, GM_PKT_NOOP);
}

START_TEST(test_failed_background_job_is_retried_with_backoff_then_dead)
{
    adm = conn_open("adm", 0);
    admin_ok("policy f retries=3 backoff=1000 max_backoff=3000");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    admin(adm, "status");
    EXPECT_TEXT(adm, "f\t1\t0\t1\n.\n"); /* waiting: counted as queued */
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "H:test:1\tf\tu\tscheduled\t1\t0\n.\n");
    retry_due_within(w, 1000, 1250);
    GRABBED(w, "H:test:1", "f", "d");
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "H:test:1\tf\tu\trunning\t2\t0\n.\n");
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    retry_due_within(w, 2000, 2500);
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:1", "boom");
    retry_due_within(w, 3000, 3750); /* 4000, capped at max_backoff */
    GRABBED(w, "H:test:1", "f", "d");
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    /* four attempts: dead, nothing waits, the client was never told */
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    ck_assert_int_eq(run_timers(), -1);
    EXPECT_NOTHING(c);
    admin(adm, "status");
    EXPECT_TEXT(adm, "f\t0\t0\t1\n.\n");
    expect_dead("show dead", "H:test:1\tf\tu\t4\tfail\n.\n");
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "H:test:1\tf\tu\tdead\t4\t0\n.\n");
    ck_assert_uint_eq(gm_disp_job_count(H.d), 0);
    /* sent back: attempts from 0, same handle, its unique key again */
    admin_ok("retry dead H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "u", "d", "H:test:1");
    expect_dead("show dead", ".\n");
    GRABBED(w, "H:test:1", "f", "d");
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "H:test:1\tf\tu\trunning\t1\t0\n.\n");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "ok");
    admin(adm, "show job H:test:1"); /* its outcome (--keep-results) */
    EXPECT_TEXT(adm, "H:test:1\tf\tu\tcomplete\t1\t2\n.\n");
}
END_TEST

/* The reasons, the dead letter's time, discard, and the exception kept. */
START_TEST(test_dead_letters_say_why_and_can_be_discarded)
{
    adm = conn_open("adm", 0);
    admin_ok("policy f retries=0");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "a", "d", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "b", "d", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "c", "d", "H:test:3");
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_EXCEPTION, "H:test:1", "stack trace");
    GRABBED(w, "H:test:2", "f", "d");
    send1(w, GM_PKT_WORK_FAIL, "H:test:2");
    H.now += 5000;
    GRABBED(w, "H:test:3", "f", "d");
    conn_close(w);
    expect_dead("show dead", "H:test:1\tf\ta\t1\texception\nH:test:2\tf\tb\t1\tfail\n"
                             "H:test:3\tf\tc\t1\tworker-lost\n.\n");
    struct gm_job *j = job_find_handle(H.d, "H:test:1", 8);
    ck_assert_int_eq(j->state, GM_JOB_DEAD);
    ck_assert_int_eq(j->when, T0 / 1000);
    ck_assert_uint_eq(j->dead.exception_len, 11);
    ck_assert(memcmp(j->exception, "stack trace", 11) == 0);
    ck_assert_int_eq(job_find_handle(H.d, "H:test:3", 8)->when, T0 / 1000 + 5);
    expect_dead("show dead g", ".\n");
    admin_ok("discard dead H:test:2");
    admin(adm, "discard dead H:test:2");
    EXPECT_TEXT(adm, "ERR UNKNOWN_JOB no+dead+letter+has+that+handle\r\n");
    admin_ok("discard dead all f");
    expect_dead("show dead", ".\n");
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_foreground_job_is_never_retried)
{
    adm = conn_open("adm", 0);
    admin_ok("policy f retries=5");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    GRABBED(w, "H:test:1", "f", "d");
    send1(w, GM_PKT_WORK_FAIL, "H:test:1");
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:1");
    ck_assert_int_eq(run_timers(), -1);
    expect_dead("show dead", ".\n");
    ck_assert_uint_eq(gm_disp_job_count(H.d), 0);
}
END_TEST

/* timeout=2: the job is taken back at 2 s; the worker's late result is
   dropped without an answer; a foreground client gets WORK_FAIL. */
START_TEST(test_time_limit_takes_the_job_back)
{
    adm = conn_open("adm", 0);
    admin_ok("policy f retries=1 timeout=2 backoff=0");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w, "f");
    can_do(w2, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "bg", "H:test:1");
    GRABBED(w, "H:test:1", "f", "bg");
    ck_assert_int_eq(run_timers(), T0 + 2000);
    H.now = T0 + 2000;
    run_timers(); /* taken back, retried after 0 ms */
    run_timers();
    GRABBED(w2, "H:test:1", "f", "bg");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "late");
    EXPECT_NOTHING(w); /* no JOB_NOT_FOUND: dropped */
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "H:test:1\tf\t\trunning\t2\t0\n.\n");
    H.now = T0 + 4000;
    run_timers();
    expect_dead("show dead", "H:test:1\tf\t\t2\ttimeout\n.\n");
    work(w2, GM_PKT_WORK_COMPLETE, "H:test:1", "late");
    EXPECT_NOTHING(w2);
    /* foreground */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "fg", "H:test:2");
    GRABBED(w, "H:test:2", "f", "fg");
    H.now = T0 + 6000;
    run_timers();
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:2");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:2", "late"); /* the job is gone: still no answer */
    EXPECT_NOTHING(w);
    EXPECT_NOTHING(c);
    expect_dead("show dead f", "H:test:1\tf\t\t2\ttimeout\n.\n");
    ck_assert_uint_eq(gm_disp_job_count(H.d), 0);
}
END_TEST

/* concurrency=1 with two workers: the second waits, and is woken when the
   first one's job ends. */
START_TEST(test_concurrency_limit_holds_across_workers)
{
    adm = conn_open("adm", 0);
    admin_ok("policy f concurrency=1");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w1 = conn_open("w1", 1);
    gm_conn_id w2 = conn_open("w2", 1);
    can_do(w1, "f");
    can_do(w2, "f");
    can_do(w2, "g");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "1", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "2", "H:test:2");
    GRABBED(w1, "H:test:1", "f", "1");
    grab(w2);
    EXPECT0(w2, GM_PKT_NO_JOB);
    pre_sleep(w2);
    EXPECT_NOTHING(w2);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "3", "H:test:3");
    EXPECT_NOTHING(w2); /* at its limit: not woken */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "4", "H:test:4");
    EXPECT0(w2, GM_PKT_NOOP); /* another function's work is */
    GRABBED(w2, "H:test:4", "g", "4");
    pre_sleep(w2);
    work(w1, GM_PKT_WORK_COMPLETE, "H:test:1", "");
    EXPECT0(w2, GM_PKT_NOOP);
    GRABBED(w2, "H:test:2", "f", "2");
    grab(w1);
    EXPECT0(w1, GM_PKT_NO_JOB);
    admin_ok("policy f concurrency=2");
    GRABBED(w1, "H:test:3", "f", "3");
}
END_TEST

START_TEST(test_pause_keeps_jobs_queued_and_resume_wakes_workers)
{
    adm = conn_open("adm", 0);
    admin_ok("pause f");
    admin(adm, "show policies");
    EXPECT_TEXT(adm, "f\tretries=0\tbackoff=1000\tmax_backoff=300000\ttimeout=0\tconcurrency=0\tpaused=1\n.\n");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    pre_sleep(w);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    EXPECT_NOTHING(w);
    grab(w);
    EXPECT0(w, GM_PKT_NO_JOB);
    pre_sleep(w);
    admin_ok("resume f");
    EXPECT0(w, GM_PKT_NOOP);
    GRABBED(w, "H:test:1", "f", "d");
    admin(adm, "show policies");
    EXPECT_TEXT(adm, ".\n");
    admin(adm, "resume nosuch");
    EXPECT_TEXT(adm, "ERR UNKNOWN_FUNCTION no+such+function\r\n");
}
END_TEST

START_TEST(test_purge_fails_waiting_jobs_and_leaves_running_ones)
{
    adm = conn_open("adm", 0);
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "run", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "wait", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "bg", "H:test:3");
    GRABBED(w, "H:test:1", "f", "run");
    admin_ok("purge f");
    EXPECT(c, GM_PKT_WORK_FAIL, "H:test:2");
    EXPECT_NOTHING(c);
    admin(adm, "status");
    EXPECT_TEXT(adm, "f\t1\t1\t1\n.\n");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    admin(adm, "purge nosuch");
    EXPECT_TEXT(adm, "ERR UNKNOWN_FUNCTION no+such+function\r\n");
}
END_TEST

START_TEST(test_dead_letter_max_drops_the_oldest)
{
    H.cfg.dead_letter_max = 2;
    adm = conn_open("adm", 0);
    admin_ok("policy f retries=0");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    for (int i = 1; i <= 3; i++) {
        char h[16];
        snprintf(h, sizeof h, "H:test:%d", i);
        SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", h);
        GRABBED(w, h, "f", "d");
        send1(w, GM_PKT_WORK_FAIL, h);
    }
    expect_dead("show dead", "H:test:2\tf\t\t1\tfail\nH:test:3\tf\t\t1\tfail\n.\n");
    ck_assert_uint_eq(H.d->dead_dropped, 1);
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "ERR UNKNOWN_JOB no+job+has+that+handle\r\n");
}
END_TEST

/* What the view's dead-letter page collects. */
struct seen {
    char handles[8][16];
    unsigned n;
};

static void
seen_dead(void *arg, const struct gm_view_dead *x)
{
    struct seen *s = arg;
    ck_assert_uint_lt(s->n, 8);
    snprintf(s->handles[s->n++], sizeof s->handles[0], "%s", x->handle);
}

/* A page of the view's dead letters: their handles joined by spaces;
   *visits how many dead letters the walk looked at. */
static const char *
dead_page(const char *fn, uint64_t offset, uint64_t limit, uint64_t *total, uint64_t *visits)
{
    static char out[160];
    struct seen s = {0};
    struct gm_view_dead_query q = {.function = fn, .function_len = fn ? strlen(fn) : 0, .offset = offset,
                                   .limit = limit};
    uint64_t before = H.d->visits;
    H.d->view.dead(H.d, &q, total, seen_dead, &s);
    *visits = H.d->visits - before;
    out[0] = '\0';
    for (unsigned i = 0; i < s.n; i++)
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? " " : "", s.handles[i]);
    return out;
}

/* Dead letters of two functions, interleaved: a function's page walks its
   own list only (offset + limit visits); retry, discard and dropping the
   function keep both lists right; the view's actions are the admin's. */
START_TEST(test_view_pages_dead_letters_by_function_and_acts_as_admin)
{
    adm = conn_open("adm", 0);
    admin_ok("policy f retries=0");
    admin_ok("policy g retries=0");
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    can_do(w, "g");
    static const char *const fns[] = {"f", "g", "f", "g", "g", "f"};
    for (int i = 0; i < 6; i++) {
        char h[16];
        snprintf(h, sizeof h, "H:test:%d", i + 1);
        SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, fns[i], h, "d", h);
        GRABBED(w, h, fns[i], "d");
        send1(w, GM_PKT_WORK_FAIL, h);
    }
    uint64_t total, visits;
    ck_assert_str_eq(dead_page(NULL, 0, 100, &total, &visits),
                     "H:test:1 H:test:2 H:test:3 H:test:4 H:test:5 H:test:6");
    ck_assert_uint_eq(total, 6);
    ck_assert_str_eq(dead_page("f", 0, 100, &total, &visits), "H:test:1 H:test:3 H:test:6");
    ck_assert_uint_eq(total, 3);
    ck_assert_uint_eq(visits, 3);
    ck_assert_str_eq(dead_page("g", 1, 1, &total, &visits), "H:test:4");
    ck_assert_uint_eq(visits, 2); /* one skipped, one listed: not the rest */
    ck_assert_str_eq(dead_page("nosuch", 0, 100, &total, &visits), "");
    ck_assert_uint_eq(total, 0);
    ck_assert_str_eq(dead_page(NULL, 0, 0, &total, &visits), "");
    ck_assert_uint_eq(visits, 0);
    /* a job's state, as `show job` */
    struct gm_view_job_state js;
    ck_assert_int_eq(H.d->view.job(H.d, "H:test:3", 8, &js), 0);
    ck_assert_str_eq(js.state, "dead");
    ck_assert_uint_eq(js.attempts, 1);
    ck_assert(js.result == NULL && js.result_len == 0);
    ck_assert_int_eq(H.d->view.job(H.d, "H:test:99", 9, &js), GM_VIEW_UNKNOWN);
    /* retry and discard, through the view */
    ck_assert_int_eq(H.d->view.dead_action(H.d, "H:test:3", 8, true), 0);
    ck_assert_int_eq(H.d->view.dead_action(H.d, "H:test:3", 8, true), GM_VIEW_UNKNOWN);
    ck_assert_int_eq(H.d->view.dead_action(H.d, "H:test:4", 8, false), 0);
    ck_assert_int_eq(H.d->view.job(H.d, "H:test:3", 8, &js), 0);
    ck_assert_str_eq(js.state, "queued");
    ck_assert_uint_eq(js.attempts, 0);
    ck_assert_int_eq(H.d->view.job(H.d, "H:test:4", 8, &js), GM_VIEW_UNKNOWN);
    ck_assert_str_eq(dead_page("f", 0, 100, &total, &visits), "H:test:1 H:test:6");
    ck_assert_str_eq(dead_page("g", 0, 100, &total, &visits), "H:test:2 H:test:5");
    expect_dead("show dead", "H:test:1\tf\tH:test:1\t1\tfail\nH:test:2\tg\tH:test:2\t1\tfail\n"
                             "H:test:5\tg\tH:test:5\t1\tfail\nH:test:6\tf\tH:test:6\t1\tfail\n.\n");
    GRABBED(w, "H:test:3", "f", "d"); /* the one sent back runs again */
    work(w, GM_PKT_WORK_COMPLETE, "H:test:3", "r");
    /* pause, resume, purge through the view */
    uint64_t purged = 9;
    ck_assert_int_eq(H.d->view.function_action(H.d, "h", 1, GM_VIEW_RESUME, &purged), GM_VIEW_UNKNOWN);
    ck_assert_int_eq(H.d->view.function_action(H.d, "h\x01", 2, GM_VIEW_PAUSE, &purged), GM_VIEW_BAD_NAME);
    ck_assert_int_eq(H.d->view.function_action(H.d, "g", 1, GM_VIEW_PAUSE, &purged), 0);
    ck_assert(gm_disp_function_find(H.d, "g", 1)->policy->paused);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "q", "d", "H:test:7");
    ck_assert_int_eq(H.d->view.function_action(H.d, "g", 1, GM_VIEW_PURGE, &purged), 0);
    ck_assert_uint_eq(purged, 1);
    ck_assert_int_eq(H.d->view.function_action(H.d, "g", 1, GM_VIEW_RESUME, &purged), 0);
    ck_assert(!gm_disp_function_find(H.d, "g", 1)->policy->paused);
    /* dropping g discards its dead letters, f's stay */
    conn_close(w);
    admin_ok("drop function g");
    ck_assert_str_eq(dead_page(NULL, 0, 100, &total, &visits), "H:test:1 H:test:6");
    ck_assert_uint_eq(H.d->nstate[GM_JOB_DEAD], 2);
}
END_TEST

START_TEST(test_policy_command_checks_its_pairs)
{
    adm = conn_open("adm", 0);
    static const char *const bad[] = {
        "policy f",           "policy f retries",       "policy f retries=255", "policy f retries=-1",
        "policy f timeout=x", "policy f speed=1",       "policy f backoff=",    "policy f timeout=86401",
        "policy f concurrency=1000001",
        "policy f retries=1 retries=1 retries=1 retries=1 retries=1 retries=1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        admin(adm, bad[i]);
        struct tconn *t = must_find(adm);
        ck_assert_msg(t->len - t->off > 25 && memcmp(t->buf + t->off, "ERR INVALID_ARGUMENTS ", 22) == 0,
                      "%s", bad[i]);
        t->off = t->len;
    }
    admin(adm, "show policies");
    EXPECT_TEXT(adm, ".\n");
    admin_ok("policy f retries=254 timeout=86400 concurrency=1000000 backoff=86400000 max_backoff=5");
    admin_ok("policy f retries=2");
    admin(adm, "show policies");
    EXPECT_TEXT(adm, "f\tretries=2\tbackoff=86400000\tmax_backoff=5\ttimeout=86400\tconcurrency=1000000"
                     "\tpaused=0\n.\n");
    admin_ok("policy f reset");
    admin(adm, "show policies");
    EXPECT_TEXT(adm, ".\n");
}
END_TEST

/* --keep-results: a finished background job's outcome by its handle, for
   that long; foreground jobs leave none; the result is cut at
   --keep-results-bytes. */
START_TEST(test_outcomes_are_kept_for_their_time)
{
    H.cfg.keep_results_s = 60;
    H.cfg.keep_results_bytes = 4;
    adm = conn_open("adm", 0);
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "u1", "d", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "u2", "d", "H:test:2");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u3", "d", "H:test:3");
    GRABBED(w, "H:test:1", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "result bytes");
    GRABBED(w, "H:test:2", "f", "d");
    send1(w, GM_PKT_WORK_FAIL, "H:test:2");
    GRABBED(w, "H:test:3", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:3", "fg");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:3", "fg");
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "H:test:1\tf\tu1\tcomplete\t1\t4\n.\n");
    admin(adm, "show job H:test:2");
    EXPECT_TEXT(adm, "H:test:2\tf\tu2\tfailed\t1\t0\n.\n");
    admin(adm, "show job H:test:3");
    EXPECT_TEXT(adm, "ERR UNKNOWN_JOB no+job+has+that+handle\r\n");
    struct gm_outcome_view v;
    outcome_view(outcome_find(H.d, "H:test:1", 8), &v);
    ck_assert_uint_eq(v.result_len, 4);
    ck_assert(memcmp(v.result, "resu", 4) == 0);
    H.now = T0 + 59999;
    ck_assert_ptr_nonnull(outcome_find(H.d, "H:test:1", 8));
    H.now = T0 + 60000;
    admin(adm, "show job H:test:1");
    EXPECT_TEXT(adm, "ERR UNKNOWN_JOB no+job+has+that+handle\r\n");
    /* the next one kept frees those past their time */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", "H:test:4");
    GRABBED(w, "H:test:4", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:4", "");
    ck_assert_uint_eq(H.d->outcomes.count, 1);
    /* 0: none kept */
    H.cfg.keep_results_s = 0;
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", "H:test:5");
    GRABBED(w, "H:test:5", "f", "d");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:5", "");
    ck_assert_uint_eq(H.d->outcomes.count, 1);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_lifecycle");
    DISP_ADD(s, test_failed_background_job_is_retried_with_backoff_then_dead);
    DISP_ADD(s, test_dead_letters_say_why_and_can_be_discarded);
    DISP_ADD(s, test_foreground_job_is_never_retried);
    DISP_ADD(s, test_time_limit_takes_the_job_back);
    DISP_ADD(s, test_concurrency_limit_holds_across_workers);
    DISP_ADD(s, test_pause_keeps_jobs_queued_and_resume_wakes_workers);
    DISP_ADD(s, test_purge_fails_waiting_jobs_and_leaves_running_ones);
    DISP_ADD(s, test_dead_letter_max_drops_the_oldest);
    DISP_ADD(s, test_policy_command_checks_its_pairs);
    DISP_ADD(s, test_outcomes_are_kept_for_their_time);
    DISP_ADD(s, test_view_pages_dead_letters_by_function_and_acts_as_admin);
    return gm_check_run_tap(s);
}
