/*
 * queue_backend_cases.c: the cases every durable queue backend must pass,
 * written once against struct bk (queue_harness.h) and instantiated per
 * backend by BACKEND_CASES in check_queue_sqlite.c, check_queue_postgres.c,
 * check_queue_redis.c and check_queue_memcached.c: every field of a job survives a write and a
 * reopen (binary data, NULs, large payloads, far-future run times), DONE
 * removes by handle, an ADD of a stored handle replaces it, replay keeps
 * insertion order and consumes nothing, the handle counter is stored and
 * is no job, and over-long names are stored whole or refused, never cut.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/queue_harness.h"

void
case_roundtrip_keeps_every_field(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    static const char nul_data[] = "a\0b\0\0c";
    char u64[65];
    for (int i = 0; i < 64; i++)
        u64[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[i % 36];
    u64[64] = '\0';
    char *all_bytes = binary_payload(512);
    struct gm_qrecord recs[] = {
        rec_add("H:test:1", "reverse", "", 0, nul_data, sizeof nul_data - 1, 1, 0),
        rec_add("H:test:2", "reverse", u64, 64, "", 0, 0, 0),
        rec_add("H:test:3", "fn-with-dash", "u-3", 3, all_bytes, 512, 2, FAR_FUTURE),
        rec_add("H:test:4", "reverse", "-", 1, "x", 1, 1, 1),
        rec_add("H:test:5", "other", "five", 4, "\0", 1, 2, 1700000000),
    };
    size_t n = sizeof recs / sizeof recs[0];
    bk_write(b, st, recs, n);
    const char *want[] = {"H:test:1", "H:test:2", "H:test:3", "H:test:4", "H:test:5"};
    st = expect_reopen_replay(b, st, &o, want, n, recs);
    free(all_bytes);
    bk_finish(b, st, &o);
}

static void
roundtrip_payload(const struct bk *b, size_t size)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    char *big = binary_payload(size);
    struct gm_qrecord recs[] = {
        rec_add("H:test:1", "big", "one-mib", 7, big, size, 1, 0),
        rec_add_s("H:test:2", "small", "after-big", "tail", 2),
    };
    bk_write(b, st, recs, 2);
    const char *want[] = {"H:test:1", "H:test:2"};
    st = expect_reopen_replay(b, st, &o, want, 2, recs);
    free(big);
    bk_finish(b, st, &o);
}

void
case_roundtrip_keeps_a_large_payload(const struct bk *b)
{
    roundtrip_payload(b, b->big_payload);
}

void
case_done_removes_the_job(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    struct gm_qrecord adds[] = {
        rec_add_s("H:test:1", "f", "a", "1", 1),
        rec_add_s("H:test:2", "f", "b", "2", 1),
        rec_add_s("H:test:3", "f", "c", "3", 1),
    };
    bk_write(b, st, adds, 3);
    struct gm_qrecord done[] = {rec_done("H:test:2")};
    bk_write(b, st, done, 1);
    /* an ADD and its DONE in one batch: nothing stays */
    struct gm_qrecord pair[] = {rec_add_s("H:test:4", "f", "d", "4", 1), rec_done("H:test:4")};
    bk_write(b, st, pair, 2);
    const char *want[] = {"H:test:1", "H:test:3"};
    const struct gm_qrecord kept[] = {adds[0], adds[2]};
    st = expect_reopen_replay(b, st, &o, want, 2, kept);
    bk_finish(b, st, &o);
}

void
case_done_of_an_unknown_handle_is_not_an_error(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    struct gm_qrecord alone[] = {rec_done("H:test:999")};
    bk_write(b, st, alone, 1);
    struct gm_qrecord mixed[] = {
        rec_add_s("H:test:1", "f", "a", "1", 1),
        rec_done("H:test:998"),
        rec_add_s("H:test:2", "f", "b", "2", 0),
    };
    bk_write(b, st, mixed, 3);
    const char *want[] = {"H:test:1", "H:test:2"};
    const struct gm_qrecord kept[] = {mixed[0], mixed[2]};
    st = expect_reopen_replay(b, st, &o, want, 2, kept);
    bk_finish(b, st, &o);
}

void
case_add_of_a_stored_handle_replaces_it(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    struct gm_qrecord first[] = {rec_add("H:test:1", "old-fn", "old", 3, "old data", 8, 2, 0)};
    bk_write(b, st, first, 1);
    struct gm_qrecord second[] = {rec_add("H:test:1", "new-fn", "new", 3, "new\0data", 8, 0, 4000000000LL)};
    bk_write(b, st, second, 1);
    /* twice in one batch: the later one wins */
    struct gm_qrecord twice[] = {
        rec_add_s("H:test:2", "f", "first", "first", 1),
        rec_add_s("H:test:2", "g", "second", "second", 2),
    };
    bk_write(b, st, twice, 2);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    ck_assert_msg(rs.n == 2, "replayed %zu rows, want 2", rs.n);
    expect_row(rows_find(&rs, "H:test:1"), &second[0]);
    expect_row(rows_find(&rs, "H:test:2"), &twice[1]);
    rows_free(&rs);
    bk_finish(b, st, &o);
}

void
case_replay_returns_rows_in_insertion_order(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    /* handles as the server makes them: increasing, past 9 (so that "10"
       sorting before "9" as text would show) */
    char h[12][24], d[12][16];
    struct gm_qrecord r[12];
    for (int i = 0; i < 12; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        snprintf(d[i], sizeof d[i], "d%d", i + 1);
        r[i] = rec_add(h[i], i % 2 ? "f2" : "f1", d[i], strlen(d[i]), d[i], strlen(d[i]), 2 - i % 3, 0);
    }
    bk_write(b, st, r, 3);
    bk_write(b, st, r + 3, 5);
    struct gm_qrecord done5 = rec_done("H:test:5");
    bk_write(b, st, &done5, 1);
    bk_write(b, st, r + 8, 4);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:2", "H:test:3",  "H:test:4",  "H:test:6",
                          "H:test:7", "H:test:8", "H:test:9", "H:test:10", "H:test:11", "H:test:12"};
    expect_handles(&rs, want, 11);
    for (size_t i = 0; i < rs.n; i++) {
        int k = atoi(rs.r[i].handle + 7) - 1;
        expect_row(&rs.r[i], &r[k]);
    }
    rows_free(&rs);
    bk_finish(b, st, &o);
}

void
case_same_function_and_unique_keep_separate_rows(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "same", "one", 1),
        rec_add_s("H:test:2", "f", "same", "two", 1),
        rec_add_s("H:test:3", "f", "", "three", 1),
        rec_add_s("H:test:4", "f", "", "four", 0),
        rec_add_s("H:test:5", "g", "same", "five", 2),
    };
    bk_write(b, st, recs, 3);
    bk_write(b, st, recs + 3, 2);
    const char *want[] = {"H:test:1", "H:test:2", "H:test:3", "H:test:4", "H:test:5"};
    st = expect_reopen_replay(b, st, &o, want, 5, recs);
    /* DONE is by handle: the twin with the same unique key stays */
    struct gm_qrecord done[] = {rec_done("H:test:1"), rec_done("H:test:3")};
    bk_write(b, st, done, 2);
    const char *left[] = {"H:test:2", "H:test:4", "H:test:5"};
    st = expect_reopen_replay(b, st, &o, left, 3, NULL);
    bk_finish(b, st, &o);
}

void
case_replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    struct rows rs;
    bk_replay(b, st, &rs);
    ck_assert_msg(rs.n == 0, "a fresh queue replayed %zu rows", rs.n);
    rows_free(&rs);
    struct gm_qrecord a = rec_add_s("H:test:1", "f", "u", "d", 1);
    bk_write(b, st, &a, 1);
    /* open twice more: opening an existing queue neither clears nor
       duplicates it, and replay does not consume rows */
    st = bk_reopen_replay(b, st, &o, &rs);
    rows_free(&rs);
    const char *want[] = {"H:test:1"};
    st = expect_reopen_replay(b, st, &o, want, 1, &a);
    bk_finish(b, st, &o);
}

void
case_handle_counter_is_stored_and_loaded_and_is_no_job(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    ck_assert_uint_eq(bk_counter(b, st), 0);
    struct gm_qrecord first[] = {rec_counter(65537), rec_add_s("H:test:1", "f", "u", "d", 1)};
    bk_write(b, st, first, 2);
    const char *want[] = {"H:test:1"}; /* the counter is not replayed as a job */
    st = expect_reopen_replay(b, st, &o, want, 1, NULL);
    ck_assert_uint_eq(bk_counter(b, st), 65537);
    struct gm_qrecord second = rec_counter(131073);
    bk_write(b, st, &second, 1);
    b->be->close(st);
    st = bk_open(b, &o);
    ck_assert_uint_eq(bk_counter(b, st), 131073);
    bk_finish(b, st, &o);
}

/* Names longer than a backend's layout holds (a 70,000-byte function name,
   a 300-byte unique key) come back whole or their batch is refused with a
   reason and leaves nothing behind; never stored cut short. */
void
case_long_names_are_stored_whole_or_refused(const struct bk *b)
{
    char *long_fn = repeated('f', 70000);
    char *long_unique = repeated('u', 300);
    struct gm_qrecord longs[] = {
        rec_add("H:test:2", long_fn, "u2", 2, "data-2", 6, 1, 0),
        rec_add("H:test:4", "fn", long_unique, 300, "data-4", 6, 1, 0),
    };
    for (size_t k = 0; k < sizeof longs / sizeof longs[0]; k++) {
        struct gm_queue_options o;
        void *st = bk_fresh_open(b, &o);
        struct gm_qrecord recs[] = {
            rec_add_s("H:test:1", "fn", "u1", "before", 1),
            longs[k],
            rec_add_s("H:test:3", "fn", "u3", "after", 1),
        };
        char err[256] = "";
        int rc = b->be->write_batch(st, recs, 3, err, sizeof err);
        struct rows rs;
        st = bk_reopen_replay(b, st, &o, &rs);
        if (rc == 0) {
            const char *want[] = {"H:test:1", longs[k].handle, "H:test:3"};
            expect_handles(&rs, want, 3);
            for (size_t i = 0; i < 3; i++)
                expect_row(&rs.r[i], &recs[i]);
        } else {
            ck_assert_msg(err[0] != '\0', "%s: a refused batch must say why", b->name);
            ck_assert_msg(rs.n == 0, "%s: write_batch refused (%s) but %zu rows are stored",
                          b->name, err, rs.n);
        }
        rows_free(&rs);
        bk_finish(b, st, &o);
    }
    free(long_fn);
    free(long_unique);
}

/* The core's lifecycle bytes (binary, NULs included) are stored with an
   ADD and given back by replay; an ADD of the same handle without them
   clears them, and the later of two ADDs in one batch wins. */
void
case_lifecycle_bytes_are_kept_and_replaced(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    static const char life[] = "\001\003\002\0\0\0\0\x65\x5a\x3b\x40stack\0trace";
    static const char life2[] = "\001\001\0\0\0\0\0\0\0\0\0";
    struct gm_qrecord first[] = {rec_add_s("H:test:1", "f", "u", "d", 1), rec_add_s("H:test:2", "f", "v", "e", 0),
                                 rec_add_s("H:test:3", "f", "w", "x", 2)};
    first[0].lifecycle = life;
    first[0].lifecycle_len = sizeof life - 1;
    first[1].lifecycle = life2;
    first[1].lifecycle_len = sizeof life2 - 1;
    bk_write(b, st, first, 3);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    ck_assert_uint_eq(rs.n, 3);
    for (int i = 0; i < 3; i++)
        expect_row(rows_find(&rs, first[i].handle), &first[i]);
    rows_free(&rs);
    /* H:test:1 loses its bytes; H:test:2 is written twice in a batch */
    struct gm_qrecord second[] = {rec_add_s("H:test:1", "f", "u", "d", 1), rec_add_s("H:test:2", "f", "v", "e", 0),
                                  rec_add_s("H:test:2", "f", "v", "e", 0)};
    second[2].lifecycle = life;
    second[2].lifecycle_len = sizeof life - 1;
    bk_write(b, st, second, 3);
    st = bk_reopen_replay(b, st, &o, &rs);
    ck_assert_uint_eq(rs.n, 3);
    expect_row(rows_find(&rs, "H:test:1"), &second[0]);
    expect_row(rows_find(&rs, "H:test:2"), &second[2]);
    expect_row(rows_find(&rs, "H:test:3"), &first[2]);
    rows_free(&rs);
    bk_finish(b, st, &o);
}

struct policies_seen {
    char text[512];
};

static void
collect_policy(void *arg, const char *fn, size_t fn_len, const char *policy, size_t policy_len)
{
    struct policies_seen *p = arg;
    size_t at = strlen(p->text);
    snprintf(p->text + at, sizeof p->text - at, "%.*s=%.*s;", (int)fn_len, fn, (int)policy_len, policy);
}

/* GM_QOP_POLICY: the last one of a function wins, 0 bytes forget it, they
   are no jobs; a backend without load_policies takes them and keeps
   nothing. */
void
case_policies_are_stored_apart_from_jobs(const struct bk *b)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(b, &o);
    struct gm_qrecord recs[] = {rec_add_s("H:test:1", "f", "u", "d", 1), rec_add_s("H:test:1", "f", "u", "d", 1),
                                rec_add_s("H:test:1", "f", "u", "d", 1), rec_add_s("H:test:1", "f", "u", "d", 1)};
    static const char *const fns[] = {"f", "g", "f", "g"};
    static const char *const pols[] = {"retries=1", "timeout=5", "retries=2,backoff=9", ""};
    for (int i = 0; i < 4; i++) {
        recs[i].op = GM_QOP_POLICY;
        recs[i].handle = NULL;
        recs[i].handle_len = 0;
        recs[i].function = fns[i];
        recs[i].function_len = 1;
        recs[i].data = pols[i];
        recs[i].data_len = (uint32_t)strlen(pols[i]);
    }
    bk_write(b, st, recs, 2);
    bk_write(b, st, recs + 2, 2);
    struct gm_qrecord job = rec_add_s("H:test:2", "f", "u", "d", 1);
    bk_write(b, st, &job, 1);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    ck_assert_uint_eq(rs.n, 1);
    expect_row(rows_find(&rs, "H:test:2"), &job);
    rows_free(&rs);
    struct policies_seen seen = {""};
    if (b->be->load_policies) {
        char err[200];
        ck_assert_int_eq(b->be->load_policies(st, collect_policy, &seen, err, sizeof err), 0);
        ck_assert_str_eq(seen.text, "f=retries=2,backoff=9;");
    }
    bk_finish(b, st, &o);
}
