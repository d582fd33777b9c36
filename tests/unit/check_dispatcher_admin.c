/*
 * check_dispatcher_admin.c: unit tests for what the admin listings show and
 * the admin commands set: names that would cut or forge a `status` or
 * `workers` line (control characters, over 512 bytes) refused by CAN_DO,
 * the submits, SET_CLIENT_ID, `create function` and replay (issue 12,
 * item 7), maxqueue limits per function and priority, and the pages of the
 * jobs view (/api/jobs).  The harness (disp_harness.h) plays the I/O
 * threads.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

/* ------------------------------------------------------------------ */
/* Names the listings print (issue 12, item 7)                         */
/* ------------------------------------------------------------------ */

/* Names holding a byte that would cut or forge a `status` or `workers`
   line, each with its length (so a NUL counts).  A NUL can only be in a
   packet's last field (CAN_DO's name): elsewhere it ends the field. */
static const struct gm_field_ref bad_names[] = {
    {"a\nb", 3}, {"a\tb", 3}, {"a\rb", 3}, {"a\0b", 3}, {"\x01", 1}, {"x\x1f", 2}, {"del\x7f", 4},
    {"f\t9\t9\t9\nforged", 15}};
#define NBAD (sizeof bad_names / sizeof bad_names[0])

static bool
has_nul(const struct gm_field_ref *f)
{
    return memchr(f->ptr, '\0', f->len) != NULL;
}
#define CONTROL_TEXT "Function name holds a control character"
#define TOO_LONG_TEXT "Function name is longer than 512 bytes"

/* A name of n bytes 'n' (NUL-terminated in buf). */
static const char *
long_name(char *buf, size_t n)
{
    memset(buf, 'n', n);
    buf[n] = '\0';
    return buf;
}

/* The admin listing `cmd` on adm, whole. */
static void
expect_listing(gm_conn_id adm, const char *cmd, const char *want)
{
    admin(adm, cmd);
    EXPECT_TEXT(adm, want);
    EXPECT_NOTHING(adm);
}

START_TEST(test_can_do_with_a_control_character_in_the_name_is_refused)
{
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("admin", 0);
    for (size_t i = 0; i < NBAD; i++) {
        send_pkt(w, GM_PKT_CAN_DO, &bad_names[i], 1);
        EXPECT(w, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        if (has_nul(&bad_names[i]))
            continue;
        struct gm_field_ref f[2] = {bad_names[i], FR("1000")};
        send_pkt(w, GM_PKT_CAN_DO_TIMEOUT, f, 2);
        EXPECT(w, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
    }
    EXPECT_NOTHING(w);
    ck_assert_uint_eq(must_find(w)->closes, 0); /* the stream is fine: it stays */
    expect_listing(adm, "status", ".\n");
    expect_listing(adm, "workers", "101 127.0.0.1 - :\n101 127.0.0.1 - :\n.\n");
    can_do(w, "after");
    EXPECT_NOTHING(w);
    expect_listing(adm, "status", "after\t0\t0\t1\n.\n");
}
END_TEST

START_TEST(test_submit_with_a_control_character_in_the_function_name_creates_no_job)
{
    static const uint32_t types[] = {GM_PKT_SUBMIT_JOB,        GM_PKT_SUBMIT_JOB_BG,   GM_PKT_SUBMIT_JOB_HIGH,
                                     GM_PKT_SUBMIT_JOB_HIGH_BG, GM_PKT_SUBMIT_JOB_LOW, GM_PKT_SUBMIT_JOB_LOW_BG};
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id adm = conn_open("admin", 1);
    for (size_t i = 0; i < NBAD; i++) {
        if (has_nul(&bad_names[i]))
            continue;
        for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
            struct gm_field_ref f[3] = {bad_names[i], FR("u"), FR("d")};
            send_pkt(c, types[t], f, 3);
            EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        }
        struct gm_field_ref e[4] = {bad_names[i], FR("u"), FR("0"), FR("d")};
        send_pkt(c, GM_PKT_SUBMIT_JOB_EPOCH, e, 4);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        struct gm_field_ref sc[8] = {bad_names[i], FR("u"), FR(""), FR(""), FR(""), FR(""), FR(""), FR("d")};
        send_pkt(c, GM_PKT_SUBMIT_JOB_SCHED, sc, 8);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        struct gm_field_ref r[5] = {bad_names[i], FR("u"), FR("red"), FR(""), FR("d")};
        send_pkt(c, GM_PKT_SUBMIT_REDUCE_JOB, r, 5);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
        send_pkt(c, GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND, r, 5);
        EXPECT(c, GM_PKT_ERROR, "INVALID_ARGUMENT", CONTROL_TEXT);
    }
    EXPECT_NOTHING(c);
    ck_assert_uint_eq(must_find(c)->closes, 0);
    expect_listing(adm, "status", ".\n");
    expect_listing(adm, "show jobs", ".\n");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "d", "H:test:1"); /* the refusals used no handle */
}
END_TEST

START_TEST(test_function_name_of_512_bytes_is_accepted_and_513_refused)
{
    char name[514];
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    gm_conn_id adm = conn_open("admin", 0);
    can_do(w, long_name(name, 513));
    EXPECT(w, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", TOO_LONG_TEXT);
    can_do_timeout(w, name, "1000");
    EXPECT(w, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", TOO_LONG_TEXT);
    submit(c, GM_PKT_SUBMIT_JOB_BG, name, "", "d");
    EXPECT(c, GM_PKT_ERROR, "ARGUMENT_TOO_LARGE", TOO_LONG_TEXT);
    admin(adm, "create function nnnnn"); /* a short one, to see status */
    EXPECT_TEXT(adm, "OK\r\n");
    expect_listing(adm, "status", "nnnnn\t0\t0\t0\n.\n");
    can_do(w, long_name(name, 512));
    EXPECT_NOTHING(w);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, name, "", "d", "H:test:1");
    GRABBED(w, "H:test:1", name, "d");
    ck_assert_ptr_nonnull(gm_disp_function_find(H.d, name, 512));
    ck_assert_ptr_null(gm_disp_function_find(H.d, name, 511));
}
END_TEST

START_TEST(test_set_client_id_with_a_control_character_is_refused_and_keeps_the_id)
{
    gm_conn_id w = conn_open("w", 0);
    gm_conn_id adm = conn_open("admin", 1);
    send1(w, GM_PKT_SET_CLIENT_ID, "w1 with spaces");
    EXPECT_NOTHING(w);
    static const struct gm_field_ref bad_ids[] = {
        {"x\n1 10.0.0.1 forged : f", 23}, {"x\ty", 3}, {"x\0y", 3}, {"x\ry", 3}, {"\x7f", 1}};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        send_pkt(w, GM_PKT_SET_CLIENT_ID, &bad_ids[i], 1);
        EXPECT(w, GM_PKT_ERROR, "INVALID_ARGUMENT", "Client id holds a control character");
    }
    ck_assert_uint_eq(must_find(w)->closes, 0);
    expect_listing(adm, "workers", "101 127.0.0.1 w1 with spaces :\n101 127.0.0.1 - :\n.\n");
    char id[201];
    send1(w, GM_PKT_SET_CLIENT_ID, long_name(id, 200)); /* cut to 127 bytes, as gearmand */
    EXPECT_NOTHING(w);
    char want[256];
    snprintf(want, sizeof want, "101 127.0.0.1 %.127s :\n101 127.0.0.1 - :\n.\n", id);
    expect_listing(adm, "workers", want);
}
END_TEST

START_TEST(test_create_function_with_a_control_character_or_over_512_bytes_is_refused)
{
    gm_conn_id adm = conn_open("admin", 0);
    admin(adm, "create function a\tb");
    EXPECT_TEXT(adm, "ERR INVALID_ARGUMENT Function+name+holds+a+control+character\r\n");
    admin(adm, "create function a\rb\x7f");
    EXPECT_TEXT(adm, "ERR INVALID_ARGUMENT Function+name+holds+a+control+character\r\n");
    char line[600], name[514];
    snprintf(line, sizeof line, "create function %s", long_name(name, 513));
    admin(adm, line);
    EXPECT_TEXT(adm, "ERR ARGUMENT_TOO_LARGE Function+name+is+longer+than+512+bytes\r\n");
    expect_listing(adm, "status", ".\n");
    snprintf(line, sizeof line, "create function %s", long_name(name, 512));
    admin(adm, line);
    EXPECT_TEXT(adm, "OK\r\n");
    char want[600];
    snprintf(want, sizeof want, "%s\t0\t0\t0\n.\n", name);
    expect_listing(adm, "status", want);
}
END_TEST

START_TEST(test_replayed_row_with_a_bad_function_name_is_kept_unreplayed)
{
    char name[514];
    long_name(name, 513);
    struct gm_qrow row = {.handle = "H:old:1", .unique = "", .data = "d", .handle_len = 7, .data_len = 1,
                          .priority = 1};
    char err[128];
    for (size_t i = 0; i < NBAD; i++) {
        row.function = bad_names[i].ptr;
        row.function_len = (uint32_t)bad_names[i].len;
        ck_assert_int_eq(gm_disp_replay_row(H.d, &row, err, sizeof err), -1);
        ck_assert_str_eq(err, CONTROL_TEXT);
    }
    row.function = name;
    row.function_len = 513;
    ck_assert_int_eq(gm_disp_replay_row(H.d, &row, err, sizeof err), -1);
    ck_assert_str_eq(err, TOO_LONG_TEXT);
    ck_assert_uint_eq(gm_disp_job_count(H.d), 0);
    gm_conn_id adm = conn_open("admin", 0);
    expect_listing(adm, "status", ".\n");
    row.function_len = 512;
    ck_assert_int_eq(gm_disp_replay_row(H.d, &row, err, sizeof err), 0);
    ck_assert_uint_eq(gm_disp_job_count(H.d), 1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* maxqueue                                                            */
/* ------------------------------------------------------------------ */

START_TEST(test_maxqueue_full_gives_queue_error)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id c2 = conn_open("c2", 0);
    gm_conn_id adm = conn_open("admin", 1);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u1", "1", "H:test:1");
    admin(adm, "maxqueue f 1");
    EXPECT_TEXT(adm, "OK\r\n");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u2", "2");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    submit(c, GM_PKT_SUBMIT_JOB_HIGH_BG, "f", "u2", "2");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    /* coalescing onto the existing job is never refused */
    SUBMITTED(c2, GM_PKT_SUBMIT_JOB, "f", "u1", "1", "H:test:1");
    /* a running job still counts */
    GRABBED(w, "H:test:1", "f", "1");
    submit(c, GM_PKT_SUBMIT_JOB, "f", "u3", "3");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c2, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u4", "4", "H:test:2"); /* refusals used no handle */
    EXPECT_NOTHING(c);
    /* "maxqueue f" alone lifts the limit */
    admin(adm, "maxqueue f");
    EXPECT_TEXT(adm, "OK\r\n");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u5", "5", "H:test:3");
}
END_TEST

START_TEST(test_maxqueue_on_an_unknown_function_changes_nothing)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id adm = conn_open("admin", 1);
    admin(adm, "maxqueue g 1");
    EXPECT_TEXT(adm, "OK\r\n");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "1", "H:test:1");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "g", "", "2", "H:test:2");
}
END_TEST

START_TEST(test_maxqueue_limits_each_priority_against_the_function_total)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id adm = conn_open("admin", 1);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "n1", "H:test:1");
    admin(adm, "maxqueue f 0 2 1"); /* HIGH unlimited, NORMAL 2, LOW 1 */
    EXPECT_TEXT(adm, "OK\r\n");
    struct gm_function *fn = gm_disp_function_find(H.d, "f", 1);
    ck_assert_ptr_nonnull(fn);
    ck_assert_uint_eq(fn->max_queue[GM_PRIO_HIGH], 0);
    ck_assert_uint_eq(fn->max_queue[GM_PRIO_NORMAL], 2);
    ck_assert_uint_eq(fn->max_queue[GM_PRIO_LOW], 1);
    submit(c, GM_PKT_SUBMIT_JOB_LOW_BG, "f", "", "l1"); /* total 1 >= 1 */
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "n2", "H:test:2"); /* total 1 < 2 */
    submit(c, GM_PKT_SUBMIT_JOB_BG, "f", "", "n3"); /* total 2 */
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
    SUBMITTED(c, GM_PKT_SUBMIT_JOB_HIGH_BG, "f", "", "h1", "H:test:3");
    /* set directly through the function: HIGH limited to 3 now */
    fn->max_queue[GM_PRIO_HIGH] = 3;
    submit(c, GM_PKT_SUBMIT_JOB_HIGH, "f", "", "h2");
    EXPECT(c, GM_PKT_ERROR, "QUEUE_ERROR", "Job queue is full");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Listings for a client that does not read (issue 14.2)               */
/* ------------------------------------------------------------------ */

/* Registers 200 functions of 500-byte names: `status` is about 100 KB. */
static void
many_long_functions(void)
{
    gm_conn_id w = conn_open("w", 0);
    char name[501];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "%0500d", i);
        can_do(w, name);
    }
}

/* Pipelines n `status` lines from c, without running the dispatcher. */
static void
pipeline_status(gm_conn_id c, int n)
{
    for (int i = 0; i < n; i++) {
        struct gm_in m;
        text_in(&m, c, "status");
        push_in(&m);
    }
}

/* Listings (ending "\n.\n") c has received. */
static unsigned
listings(gm_conn_id c)
{
    struct tconn *tc = must_find(c);
    unsigned n = 0;
    for (size_t i = 2; i < tc->len; i++)
        if (tc->buf[i] == '\n' && tc->buf[i - 1] == '.' && tc->buf[i - 2] == '\n')
            n++;
    return n;
}

/* 50 pipelined `status` lines in one drain: the dispatcher queues one
   round's worth (here 64 KiB, so one listing) until the I/O thread has
   taken it, then the next; a packet sent after them waits its turn.  Each
   listing used to be built at once: 50 x 100 KB for a client that may
   never read. */
START_TEST(test_pipelined_listings_are_built_only_as_the_io_thread_takes_them)
{
    H.d->round_limit = 64u << 10;
    many_long_functions();
    gm_conn_id a = conn_open("a", 1);
    pipeline_status(a, 50);
    struct gm_field_ref f = {"f", 1};
    send_nopump(a, GM_PKT_ECHO_REQ, &f, 1);
    gm_disp_drain(H.d, 1u << 20);
    collect();
    ck_assert_uint_eq(listings(a), 1);
    for (int i = 2; i <= 50; i++) {
        ck_assert(!next_is(a, GM_PKT_ECHO_RES));
        pump();
        ck_assert_uint_eq(listings(a), (unsigned)i);
    }
    pump();
    /* the 50 listings, whole and in order, then the ECHO */
    struct tconn *tc = must_find(a);
    for (int i = 0; i < 50; i++) {
        char *end = memmem(tc->buf + tc->off, tc->len - tc->off, "\n.\n", 3);
        ck_assert_ptr_nonnull(end);
        tc->off = (size_t)(end + 3 - tc->buf);
    }
    EXPECT(a, GM_PKT_ECHO_RES, "f");
    EXPECT_NOTHING(a);
}
END_TEST

/* A client that leaves with requests held back: its admin lines go
   unanswered (nobody would read them), its packets are still handled. */
START_TEST(test_client_leaving_with_held_requests_keeps_its_submits)
{
    H.d->round_limit = 64u << 10;
    many_long_functions();
    gm_conn_id a = conn_open("a", 1);
    pipeline_status(a, 50);
    struct gm_field_ref f[3] = {{"later", 5}, {"u1", 2}, {"data", 4}};
    send_nopump(a, GM_PKT_SUBMIT_JOB_BG, f, 3);
    gm_disp_drain(H.d, 1u << 20);
    collect();
    ck_assert_uint_eq(listings(a), 1);
    uint64_t jobs = gm_disp_job_count(H.d);
    conn_close(a); /* the drain before the close may run one more */
    ck_assert_uint_le(listings(a), 2);
    ck_assert_uint_eq(gm_disp_job_count(H.d), jobs + 1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The jobs view's pages (issue 14.5)                                  */
/* ------------------------------------------------------------------ */

struct page_seen {
    char handle[32][16];
    unsigned n;
};

static void
page_collect(void *arg, const struct gm_view_job *j)
{
    struct page_seen *p = arg;
    ck_assert_uint_lt(p->n, 32);
    snprintf(p->handle[p->n++], sizeof p->handle[0], "%s", j->handle);
}

static struct gm_view_jobs_result last_page;

static uint64_t
page_after(const char *fn, const char *state, const char *after, uint64_t offset, uint64_t limit,
           struct page_seen *seen)
{
    struct gm_view_jobs_query q = {fn, fn ? strlen(fn) : 0, state, after, after ? strlen(after) : 0, offset, limit};
    seen->n = 0;
    H.d->view.jobs(H.d, &q, &last_page, page_collect, seen);
    return last_page.total;
}

static uint64_t
page(const char *fn, const char *state, uint64_t offset, uint64_t limit, struct page_seen *seen)
{
    return page_after(fn, state, NULL, offset, limit, seen);
}

/* A page walks the creation-order index: it looks at the jobs it skips and
   lists, no others (a sort of all 3,000 made 35,000 comparisons, the
   one-pass selection after it about 3,000), and the pages put together are
   handle order (H:test:9 before H:test:10). */
START_TEST(test_jobs_view_pages_are_handle_order_without_a_sort)
{
    gm_conn_id c = conn_open("c", 0);
    enum { N = 3000 };
    for (int i = 0; i < N; i++) {
        struct gm_field_ref f[3] = {FR(i % 2 ? "b" : "a"), FR(""), FR("x")};
        send_nopump(c, GM_PKT_SUBMIT_JOB_BG, f, 3);
    }
    pump();
    struct page_seen seen;
    uint64_t before = H.d->visits;
    ck_assert_uint_eq(page(NULL, "", 0, 10, &seen), N);
    ck_assert_uint_le(H.d->visits - before, 10);
    before = H.d->visits;
    ck_assert_uint_eq(page("a", NULL, 1000, 10, &seen), N / 2);
    ck_assert_uint_le(H.d->visits - before, 1010);
    ck_assert_str_eq(seen.handle[0], "H:test:2001");
    ck_assert_uint_eq(page(NULL, "", 0, 10, &seen), N);
    ck_assert_uint_eq(seen.n, 10);
    ck_assert_str_eq(seen.handle[0], "H:test:1");
    ck_assert_str_eq(seen.handle[9], "H:test:10");
    /* every page, in order */
    unsigned next = 1;
    for (uint64_t off = 0; off < N + 7; off += 7) {
        ck_assert_uint_eq(page(NULL, NULL, off, 7, &seen), N);
        ck_assert_uint_eq(seen.n, off >= N ? 0 : off + 7 > N ? N - off : 7);
        for (unsigned i = 0; i < seen.n; i++) {
            char want[16];
            snprintf(want, sizeof want, "H:test:%u", next++);
            ck_assert_str_eq(seen.handle[i], want);
        }
    }
    ck_assert_uint_eq(next, N + 1);
    /* by function, by state */
    ck_assert_uint_eq(page("b", NULL, 2, 3, &seen), N / 2);
    ck_assert_uint_eq(seen.n, 3);
    ck_assert_str_eq(seen.handle[0], "H:test:6");
    ck_assert_str_eq(seen.handle[2], "H:test:10");
    ck_assert_uint_eq(page("nosuch", NULL, 0, 3, &seen), 0);
    ck_assert_uint_eq(page(NULL, "running", 0, 3, &seen), 0);
    ck_assert_uint_eq(page(NULL, "nosuch", 0, 3, &seen), 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "b");
    GRABBED(w, "H:test:2", "b", "x");
    ck_assert_uint_eq(page(NULL, "running", 0, 3, &seen), 1);
    ck_assert_str_eq(seen.handle[0], "H:test:2");
    ck_assert_uint_eq(page("b", "queued", 0, 1, &seen), N / 2 - 1);
    ck_assert_str_eq(seen.handle[0], "H:test:4");
    /* the deepest page is at GM_VIEW_JOBS_OFFSET_MAX */
    ck_assert_uint_eq(page(NULL, NULL, UINT64_MAX, UINT64_MAX, &seen), N);
    ck_assert_uint_eq(seen.n, 0);
    /* a cursor: after= a job, in all or in its function */
    ck_assert_uint_eq(page_after(NULL, NULL, "H:test:5", 1, 2, &seen), N);
    ck_assert_uint_eq(seen.n, 2);
    ck_assert_str_eq(seen.handle[0], "H:test:7");
    ck_assert_str_eq(seen.handle[1], "H:test:8");
    ck_assert_uint_eq(page_after("b", NULL, "H:test:6", 0, 1, &seen), N / 2);
    ck_assert_str_eq(seen.handle[0], "H:test:8");
    ck_assert(!last_page.after_unknown && !last_page.partial);
    page_after("a", NULL, "H:test:6", 0, 1, &seen); /* not one of a's */
    ck_assert(last_page.after_unknown);
    ck_assert_uint_eq(seen.n, 0);
    page_after(NULL, NULL, "H:test:99999", 0, 1, &seen);
    ck_assert(last_page.after_unknown);
}
END_TEST

/* A state that few jobs are in, behind many that are not: the walk stops
   after GM_VIEW_JOBS_VISIT_MAX of those (it looked at all of them before,
   a million-job pass) and says where to go on; the total still counts
   every match. */
START_TEST(test_jobs_view_sparse_state_walk_is_bounded_and_resumable)
{
    gm_conn_id c = conn_open("c", 0);
    enum { N = GM_VIEW_JOBS_VISIT_MAX + 10 };
    struct gm_field_ref f[3] = {FR("q"), FR(""), FR("x")};
    for (int i = 0; i < N; i++) {
        send_nopump(c, GM_PKT_SUBMIT_JOB_BG, f, 3);
        if (i % 1000 == 999)
            pump();
    }
    struct gm_field_ref g[3] = {FR("r"), FR(""), FR("y")};
    send_nopump(c, GM_PKT_SUBMIT_JOB_BG, g, 3);
    pump();
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "r");
    char want[32];
    snprintf(want, sizeof want, "H:test:%d", N + 1);
    GRABBED(w, want, "r", "y");
    struct page_seen seen;
    uint64_t before = H.d->visits;
    ck_assert_uint_eq(page(NULL, "running", 0, 5, &seen), 1);
    ck_assert_uint_le(H.d->visits - before, GM_VIEW_JOBS_VISIT_MAX + 1);
    ck_assert_uint_eq(seen.n, 0);
    ck_assert(last_page.partial);
    ck_assert_uint_eq(last_page.next_offset, 0);
    char next[sizeof last_page.next];
    memcpy(next, last_page.next, sizeof next);
    snprintf(want, sizeof want, "H:test:%d", GM_VIEW_JOBS_VISIT_MAX);
    ck_assert_str_eq(next, want);
    /* going on from there finds it */
    ck_assert_uint_eq(page_after(NULL, "running", next, 0, 5, &seen), 1);
    ck_assert(!last_page.partial);
    ck_assert_uint_eq(seen.n, 1);
    snprintf(want, sizeof want, "H:test:%d", N + 1);
    ck_assert_str_eq(seen.handle[0], want);
    /* by its function it is found at once */
    before = H.d->visits;
    ck_assert_uint_eq(page("r", "running", 0, 5, &seen), 1);
    ck_assert_uint_le(H.d->visits - before, 1);
    ck_assert_uint_eq(seen.n, 1);
    /* a state nobody is in costs nothing */
    before = H.d->visits;
    ck_assert_uint_eq(page(NULL, "scheduled", 0, 5, &seen), 0);
    ck_assert_uint_eq(H.d->visits - before, 0);
    ck_assert_uint_eq(page(NULL, "queued", 0, 5, &seen), N);
    ck_assert_uint_eq(seen.n, 5);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_admin");
    DISP_ADD(s, test_pipelined_listings_are_built_only_as_the_io_thread_takes_them);
    DISP_ADD(s, test_client_leaving_with_held_requests_keeps_its_submits);
    DISP_ADD(s, test_can_do_with_a_control_character_in_the_name_is_refused);
    DISP_ADD(s, test_submit_with_a_control_character_in_the_function_name_creates_no_job);
    DISP_ADD(s, test_function_name_of_512_bytes_is_accepted_and_513_refused);
    DISP_ADD(s, test_set_client_id_with_a_control_character_is_refused_and_keeps_the_id);
    DISP_ADD(s, test_create_function_with_a_control_character_or_over_512_bytes_is_refused);
    DISP_ADD(s, test_replayed_row_with_a_bad_function_name_is_kept_unreplayed);
    DISP_ADD(s, test_maxqueue_full_gives_queue_error);
    DISP_ADD(s, test_maxqueue_on_an_unknown_function_changes_nothing);
    DISP_ADD(s, test_maxqueue_limits_each_priority_against_the_function_total);
    DISP_ADD(s, test_jobs_view_pages_are_handle_order_without_a_sort);
    DISP_ADD(s, test_jobs_view_sparse_state_walk_is_bounded_and_resumable);
    return gm_check_run_tap(s);
}
