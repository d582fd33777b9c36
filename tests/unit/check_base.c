/*
 * check_base.c: unit tests for the generic pieces of base/ that more than
 * one part of the server uses: the timer heap (heap.h: the dispatcher's
 * future jobs and deadlines) and growing blocks and the byte builder
 * (block.h: admin replies, HTTP responses, big packets being read), and
 * the budgets of log lines about connections (log.h: gm_log_peer, used by
 * the dispatcher and the I/O threads).  The ring and its spill list have
 * check_ring.c.
 */
#include "config.h"

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/base/heap.h"
#include "libgearman-server/base/log.h"
#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* The timer heap                                                      */
/* ------------------------------------------------------------------ */

struct item {
    int64_t due;
    uint32_t pos; /* the heap's: GM_HEAP_NONE when out */
};

static void
items_init(struct item *it, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        it[i].due = (int64_t)(seed >> 40) % 1000; /* plenty of equal times */
        it[i].pos = GM_HEAP_NONE;
    }
}

/* Items come out in due order whatever order they went in. */
START_TEST(test_heap_pops_in_due_order)
{
    enum { N = 5000 };
    static struct item it[N];
    items_init(it, N, 42);
    struct gm_heap h;
    gm_heap_init(&h, offsetof(struct item, pos));
    ck_assert_ptr_null(gm_heap_top(&h));
    ck_assert_int_eq(gm_heap_top_due(&h), -1);
    for (size_t i = 0; i < N; i++)
        ck_assert(gm_heap_push(&h, &it[i], it[i].due));
    int64_t last = -1;
    for (size_t i = 0; i < N; i++) {
        struct item *top = gm_heap_top(&h);
        ck_assert_ptr_nonnull(top);
        ck_assert_int_eq(gm_heap_top_due(&h), top->due);
        ck_assert_int_ge(top->due, last);
        last = top->due;
        gm_heap_remove(&h, top);
        ck_assert_uint_eq(top->pos, GM_HEAP_NONE);
    }
    ck_assert_ptr_null(gm_heap_top(&h));
    gm_heap_destroy(&h);
}
END_TEST

/* Removing items from the middle keeps every position right and the order
   intact; removing one that is out of the heap does nothing. */
START_TEST(test_heap_removes_any_item_and_keeps_positions)
{
    enum { N = 2000 };
    static struct item it[N];
    items_init(it, N, 7);
    struct gm_heap h;
    gm_heap_init(&h, offsetof(struct item, pos));
    for (size_t i = 0; i < N; i++)
        ck_assert(gm_heap_push(&h, &it[i], it[i].due));
    for (size_t i = 0; i < N; i += 3)
        gm_heap_remove(&h, &it[i]);
    gm_heap_remove(&h, &it[0]); /* out already */
    for (uint32_t k = 0; k < h.len; k++) {
        struct item *x = h.e[k].item;
        ck_assert_uint_eq(x->pos, k);
        if (k)
            ck_assert_int_le(h.e[(k - 1) / 2].due_ms, h.e[k].due_ms);
    }
    ck_assert_uint_eq(h.len, N - (N + 2) / 3);
    int64_t last = -1;
    struct item *top;
    while ((top = gm_heap_top(&h))) {
        ck_assert_int_ge(top->due, last);
        last = top->due;
        gm_heap_remove(&h, top);
    }
    gm_heap_destroy(&h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Growing blocks and the byte builder                                 */
/* ------------------------------------------------------------------ */

/* A NULL block becomes a new one with one reference; growth doubles, keeps
   the bytes and stops at max; a need over max is refused. */
START_TEST(test_block_grow_doubles_keeps_bytes_and_stops_at_max)
{
    struct gm_block *b = NULL;
    ck_assert(gm_block_grow(&b, 10, 16, 100));
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->cap, 16);
    ck_assert_uint_eq(atomic_load(&b->refs), 1);
    memcpy(b->data, "0123456789abcdef", 16);
    ck_assert(gm_block_grow(&b, 17, 16, 100));
    ck_assert_uint_eq(b->cap, 32);
    ck_assert(memcmp(b->data, "0123456789abcdef", 16) == 0);
    ck_assert(gm_block_grow(&b, 70, 16, 100));
    ck_assert_uint_eq(b->cap, 100); /* 32, 64, then max rather than 128 */
    ck_assert(gm_block_grow(&b, 50, 16, 100)); /* room already */
    ck_assert_uint_eq(b->cap, 100);
    ck_assert(!gm_block_grow(&b, 101, 16, 100));
    ck_assert_uint_eq(b->cap, 100);
    ck_assert(!gm_block_grow(&b, 200, 16, (size_t)UINT32_MAX + 1)); /* max beyond 32 bits */
    gm_block_unref(b);
}
END_TEST

/* The builder appends, and once an addition would pass its max it fails
   for good and adds nothing more. */
START_TEST(test_bytes_builder_appends_and_fails_for_good_past_max)
{
    struct gm_bytes w = {0};
    gm_bytes_str(&w, "hello, ");
    gm_bytes_add(&w, "world", 5);
    gm_bytes_add(&w, NULL, 0);
    ck_assert(!w.failed);
    ck_assert_uint_eq(w.len, 12);
    ck_assert(memcmp(w.b->data, "hello, world", 12) == 0);
    char big[1000];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 100; i++)
        gm_bytes_add(&w, big, sizeof big);
    ck_assert_uint_eq(w.len, 12 + 100 * sizeof big);
    ck_assert_uint_ge(w.b->cap, w.len);
    gm_block_unref(w.b);

    struct gm_bytes small = {.max = 8};
    gm_bytes_str(&small, "12345678");
    ck_assert(!small.failed);
    gm_bytes_str(&small, "9");
    ck_assert(small.failed);
    ck_assert_uint_eq(small.len, 8);
    gm_bytes_str(&small, "");
    ck_assert(small.failed);
    gm_block_unref(small.b);
}
END_TEST


/* ------------------------------------------------------------------ */
/* Budgets of log lines about connections                              */
/* ------------------------------------------------------------------ */

/* max lines per window go through; the rest are counted, with the most
   severe level among them; the first line after the window ends opens a
   new one (the count stays until its owner reports it). */
START_TEST(test_log_limit_lets_max_lines_per_window_through_and_counts_the_rest)
{
    struct gm_log_limit l = {0};
    for (int i = 0; i < 3; i++)
        ck_assert(gm_log_limit_take(&l, 1000 + (uint64_t)i, 3, 100, GM_LOG_ERROR));
    ck_assert(!gm_log_limit_take(&l, 1010, 3, 100, GM_LOG_WARNING));
    ck_assert_int_eq(l.worst, GM_LOG_WARNING);
    ck_assert(!gm_log_limit_take(&l, 1050, 3, 100, GM_LOG_ERROR));
    ck_assert(!gm_log_limit_take(&l, 1099, 3, 100, GM_LOG_WARNING));
    ck_assert_uint_eq(l.suppressed, 3);
    ck_assert_int_eq(l.worst, GM_LOG_ERROR);
    /* 100 ms after the window began: a new one */
    ck_assert(gm_log_limit_take(&l, 1100, 3, 100, GM_LOG_ERROR));
    ck_assert_uint_eq(l.lines, 1);
    ck_assert_uint_eq(l.suppressed, 3);
    ck_assert(gm_log_limit_take(&l, 1101, 3, 100, GM_LOG_ERROR));
    ck_assert(gm_log_limit_take(&l, 1102, 3, 100, GM_LOG_ERROR));
    ck_assert(!gm_log_limit_take(&l, 1199, 3, 100, GM_LOG_ERROR));
    ck_assert_uint_eq(l.suppressed, 4);
    /* a long silence: the next window begins at the next line, not on a grid */
    ck_assert(gm_log_limit_take(&l, 5555, 3, 100, GM_LOG_ERROR));
    ck_assert_uint_eq(l.window_start, 5555);
}
END_TEST

static uint64_t fake_now = 1;

static uint64_t
fake_clock(void)
{
    return fake_now;
}

static char log_path[64];

/* Logging to a fresh file with the hand-driven clock; level ERROR. */
static void
log_setup(void)
{
    snprintf(log_path, sizeof log_path, "/tmp/check_base_log_XXXXXX");
    int fd = mkstemp(log_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(gm_log_open(log_path), 0);
    gm_log_level = GM_LOG_ERROR;
    fake_now = 1;
    gm_log_set_clock(fake_clock);
}

static void
log_teardown(void)
{
    gm_log_set_clock(NULL);
    gm_log_close();
    unlink(log_path);
}

/* The lines written so far: how many contain `what` (NULL: all); the last
   one that does is copied to last (if given). */
static int
log_count(const char *what, char *last, size_t last_size)
{
    FILE *f = fopen(log_path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (what && !strstr(line, what))
            continue;
        n++;
        if (last)
            snprintf(last, last_size, "%s", line);
    }
    fclose(f);
    return n;
}

/* One connection's flood: ten lines, then one line that says how many
   were held back, at the next line after the window (or at its close). */
START_TEST(test_log_peer_holds_back_a_flood_and_says_how_many)
{
    struct gm_log_limit a = {0};
    char last[4096];
    gm_log_level = GM_LOG_WARNING;
    for (int i = 0; i < 1000; i++)
        gm_log_peer(&a, "10.0.0.1", 4000, GM_LOG_ERROR, "bad request %d", i);
    ck_assert_int_eq(log_count(NULL, NULL, 0), GM_LOG_PEER_LINES);
    ck_assert_int_eq(log_count("bad request 9\n", NULL, 0), 1);
    ck_assert_int_eq(log_count("bad request 10\n", NULL, 0), 0);
    /* the window is over: the count, then the line */
    fake_now += GM_LOG_WINDOW_MS;
    gm_log_peer(&a, "10.0.0.1", 4000, GM_LOG_WARNING, "bad request %d", 1000);
    ck_assert_int_eq(log_count("suppressed", last, sizeof last), 1);
    ck_assert_ptr_nonnull(strstr(last, "10.0.0.1:4000: 990 more lines suppressed"));
    ck_assert(strncmp(last, "  ERROR", 7) == 0); /* the worst level held back */
    ck_assert_int_eq(log_count(NULL, last, sizeof last), GM_LOG_PEER_LINES + 2);
    ck_assert_ptr_nonnull(strstr(last, "bad request 1000\n"));
    /* nothing held back since: the close says nothing */
    gm_log_peer_close(&a, "10.0.0.1", 4000);
    ck_assert_int_eq(log_count(NULL, NULL, 0), GM_LOG_PEER_LINES + 2);
    /* a flood that ends with the connection: the close says how many */
    for (int i = 0; i < 20; i++)
        gm_log_peer(&a, "10.0.0.1", 4000, GM_LOG_WARNING, "late %d", i);
    gm_log_peer_close(&a, "10.0.0.1", 4000);
    ck_assert_int_eq(log_count("late", NULL, 0), GM_LOG_PEER_LINES - 1);
    ck_assert_int_eq(log_count("suppressed", last, sizeof last), 2);
    ck_assert_ptr_nonnull(strstr(last, "10.0.0.1:4000: 11 more lines suppressed"));
    ck_assert(strncmp(last, "WARNING", 7) == 0);
}
END_TEST

/* Another connection's lines in the same window still go through. */
START_TEST(test_log_peer_budgets_are_per_connection)
{
    struct gm_log_limit a = {0}, b = {0};
    for (int i = 0; i < 500; i++)
        gm_log_peer(&a, "10.0.0.1", 4000, GM_LOG_ERROR, "from a");
    gm_log_peer(&b, "10.0.0.2", 5000, GM_LOG_ERROR, "from b");
    gm_log_peer(NULL, NULL, 0, GM_LOG_ERROR, "from nobody in particular");
    ck_assert_int_eq(log_count("from a", NULL, 0), GM_LOG_PEER_LINES);
    ck_assert_int_eq(log_count("from b", NULL, 0), 1);
    ck_assert_int_eq(log_count("from nobody", NULL, 0), 1);
    gm_log_peer_close(&b, "10.0.0.2", 5000);
    gm_log_peer_close(&a, "10.0.0.1", 4000);
    ck_assert_int_eq(log_count("suppressed", NULL, 0), 1);
    ck_assert_int_eq(log_count("10.0.0.1:4000: 490 more lines suppressed", NULL, 0), 1);
}
END_TEST

/* Many connections together: the thread's budget caps them, and its count
   (with the counts of connections that closed meanwhile) comes in one line,
   before the next line or at the next close once the window is over. */
START_TEST(test_log_peer_thread_budget_caps_many_connections)
{
    enum { N = 300 };
    static struct gm_log_limit peers[N];
    memset(peers, 0, sizeof peers);
    for (int i = 0; i < N; i++)
        gm_log_peer(&peers[i], "10.0.0.9", (unsigned)i, GM_LOG_ERROR, "one each");
    ck_assert_int_eq(log_count(NULL, NULL, 0), GM_LOG_THREAD_LINES);
    /* one connection over its own budget too, then closed: its report is
       itself held back and joins the thread's count */
    for (int i = 0; i < 15; i++)
        gm_log_peer(&peers[0], "10.0.0.9", 0, GM_LOG_ERROR, "more");
    gm_log_peer_close(&peers[0], "10.0.0.9", 0);
    ck_assert_int_eq(log_count(NULL, NULL, 0), GM_LOG_THREAD_LINES);
    /* a close in the window (of a connection with nothing held back)
       says nothing; the first line after it comes after the count */
    gm_log_peer_close(&peers[1], "10.0.0.9", 1);
    ck_assert_int_eq(log_count(NULL, NULL, 0), GM_LOG_THREAD_LINES);
    fake_now += GM_LOG_WINDOW_MS;
    char last[4096];
    gm_log_peer(&peers[1], "10.0.0.9", 1, GM_LOG_ERROR, "after");
    ck_assert_int_eq(log_count("suppressed", last, sizeof last), 1);
    /* 200 single lines, and 15 of peer 0 (its own budget held back 6 of
       them, the thread's the other 9, in the thread's count both) */
    ck_assert_ptr_nonnull(strstr(last, "215 more lines about connections suppressed"));
    ck_assert_int_eq(log_count(NULL, NULL, 0), GM_LOG_THREAD_LINES + 2);
    /* or, when no line comes, the first close after the window */
    for (int i = 0; i < 150; i++)
        gm_log_peer(&peers[i + 100], "10.0.0.9", (unsigned)i + 100, GM_LOG_ERROR, "again");
    ck_assert_int_eq(log_count("again", NULL, 0), GM_LOG_THREAD_LINES - 1);
    fake_now += GM_LOG_WINDOW_MS;
    gm_log_peer_close(&peers[2], "10.0.0.9", 2);
    ck_assert_int_eq(log_count("suppressed", last, sizeof last), 2);
    ck_assert_ptr_nonnull(strstr(last, "51 more lines about connections suppressed"));
    ck_assert_int_eq(log_count(NULL, NULL, 0), 2 * GM_LOG_THREAD_LINES + 2);
}
END_TEST

/* NOTICE, INFO and DEBUG (asked for with -v) are not limited; records
   below the level are not counted either. */
START_TEST(test_log_peer_does_not_limit_what_verbose_asks_for)
{
    struct gm_log_limit a = {0};
    for (int i = 0; i < 50; i++)
        gm_log_peer(&a, "10.0.0.1", 4000, GM_LOG_INFO, "info");
    ck_assert_int_eq(log_count(NULL, NULL, 0), 0);
    ck_assert_uint_eq(a.lines + a.suppressed, 0);
    gm_log_level = GM_LOG_DEBUG;
    for (int i = 0; i < 50; i++)
        gm_log_peer(&a, "10.0.0.1", 4000, GM_LOG_INFO, "info");
    ck_assert_int_eq(log_count("info", NULL, 0), 50);
    gm_log_peer_close(&a, "10.0.0.1", 4000);
    ck_assert_int_eq(log_count(NULL, NULL, 0), 50);
}
END_TEST

#define ADD(s, t) gm_check_add((s), #t, t, 30, NULL, NULL)
#define ADD_LOG(s, t) gm_check_add((s), #t, t, 30, log_setup, log_teardown)

static Suite *
base_suite(void)
{
    Suite *s = suite_create("base");
    ADD(s, test_heap_pops_in_due_order);
    ADD(s, test_heap_removes_any_item_and_keeps_positions);
    ADD(s, test_block_grow_doubles_keeps_bytes_and_stops_at_max);
    ADD(s, test_bytes_builder_appends_and_fails_for_good_past_max);
    ADD(s, test_log_limit_lets_max_lines_per_window_through_and_counts_the_rest);
    ADD_LOG(s, test_log_peer_holds_back_a_flood_and_says_how_many);
    ADD_LOG(s, test_log_peer_budgets_are_per_connection);
    ADD_LOG(s, test_log_peer_thread_budget_caps_many_connections);
    ADD_LOG(s, test_log_peer_does_not_limit_what_verbose_asks_for);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(base_suite());
}
