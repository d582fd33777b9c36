/*
 * queue_harness.h: what the queue unit tests share.  Used by
 * check_queue_sqlite, check_queue_postgres, check_queue_redis and
 * check_queue_memcached (the
 * durable queue backends through their vtables,
 * libgearman-server/persist/queue_backend.h, against real storage) and by
 * check_persist (the persistence thread over a fake backend).
 *
 * Every backend case runs on fresh storage of its own (struct bk's fresh():
 * a new sqlite file, a new PostgreSQL table, a new Redis or memcached key
 * prefix),
 * writes with write_batch(), closes, opens again (so what it reads back was
 * really committed) and replays.  The cases every backend must pass are
 * written once (queue_backend_cases.c) and instantiated per backend with
 * BACKEND_CASES; each is its own TCase, so that the TAP line carries its
 * name, and Check forks per case, so one crash fails one case.
 *
 * PostgreSQL, memcached, Redis and MariaDB come from the environment
 * (GM_TEST_PG_CONNINFO, GM_TEST_PG_STOP, GM_TEST_PG_START, GM_TEST_MEMCACHED,
 * GM_TEST_REDIS, GM_TEST_REDIS_STOP, GM_TEST_REDIS_START, GM_TEST_MYSQL,
 * GM_TEST_MYSQL_STOP, GM_TEST_MYSQL_START), which
 * tests/unit/run_with_services.sh sets (through tests/lib/with_services.py)
 * for the programs that need them.
 */
#ifndef GM_TESTS_UNIT_QUEUE_HARNESS_H
#define GM_TESTS_UNIT_QUEUE_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/persist/queue_backend.h"
#include "tests/unit/check_tap.h"

#define FAR_FUTURE INT64_C(253402300799) /* 9999-12-31T23:59:59Z, past 2038 */
#define MIB (1u << 20)

extern char base_dir[256]; /* made by queue_main(), removed after the run */
extern unsigned name_seq;  /* fresh names within one process */

/* ---- time, logs, ports ---- */

void quiet_logs(void);
double now_s(void);
void sleep_ms(unsigned ms);
/* A TCP port on 127.0.0.1 that nothing listens on right now. */
int closed_port(void);

/* ---- rows replayed, records written ---- */

/* One row as replay() reported it, copied. */
struct crow {
    char *handle, *function, *unique, *data, *lifecycle;
    uint32_t handle_len, function_len, unique_len, data_len, lifecycle_len;
    int priority;
    int64_t when;
};

struct rows {
    struct crow *r;
    size_t n, cap;
};

char *dup_bytes(const char *p, size_t n);
/* A replay callback that appends every row to the struct rows at arg. */
int collect_row(void *arg, const struct gm_qrow *row);
void rows_free(struct rows *rs);
const struct crow *rows_find(const struct rows *rs, const char *handle);

struct gm_qrecord rec_add(const char *handle, const char *fn, const char *unique, size_t unique_len,
                          const char *data, size_t data_len, int prio, int64_t when);
/* An ADD with text unique and data. */
struct gm_qrecord rec_add_s(const char *handle, const char *fn, const char *unique, const char *data,
                            int prio);
struct gm_qrecord rec_done(const char *handle);
struct gm_qrecord rec_counter(int64_t next);

/* Checks that a replayed row carries exactly what the ADD stored. */
void expect_row(const struct crow *c, const struct gm_qrecord *q);
/* Checks the replayed handles, in order. */
void expect_handles(const struct rows *rs, const char *const *want, size_t n);

/* Bytes 0..255 repeated: NULs, high bytes, everything (caller frees). */
char *binary_payload(size_t n);
/* A string of n copies of ch (caller frees). */
char *repeated(char ch, size_t n);

/* ---- a backend under test ---- */

/* How a case gets fresh storage for one backend. */
struct bk {
    const char *name;
    const struct gm_queue_backend *be;
    void (*fresh)(struct gm_queue_options *o); /* new empty storage; aborts if unavailable */
    void (*cleanup)(const struct gm_queue_options *o);
    size_t big_payload; /* the large-payload case's size */
};

/* What every fresh() starts with: quiet logs, zeroed options, a new name. */
void fresh_common(struct gm_queue_options *o);
/* The environment variable var, which names a service the wrapper starts;
   fails the case (does not skip it) when it is missing. */
const char *service_env(const char *var, const char *service, const char *wrapper);

void *bk_open(const struct bk *b, const struct gm_queue_options *o);
/* fresh() storage, opened. */
void *bk_fresh_open(const struct bk *b, struct gm_queue_options *o);
/* Closes and cleans up after a case. */
void bk_finish(const struct bk *b, void *st, const struct gm_queue_options *o);
void bk_write(const struct bk *b, void *st, const struct gm_qrecord *recs, size_t n);
void bk_replay(const struct bk *b, void *st, struct rows *out);
/* Closes, opens again and replays: what comes back was committed. */
void *bk_reopen_replay(const struct bk *b, void *st, const struct gm_queue_options *o, struct rows *out);
uint64_t bk_counter(const struct bk *b, void *st);
/* Replays; checks that exactly the handles want[0..n) come back, in that
   order, and with recs (n records in the same order) that each row
   carries what its record stored. */
void expect_replay(const struct bk *b, void *st, const char *const *want, size_t n, const struct gm_qrecord *recs);
/* The same after closing and opening again (so what comes back was
   committed).  Returns the state opened again. */
void *expect_reopen_replay(const struct bk *b, void *st, const struct gm_queue_options *o, const char *const *want,
                           size_t n, const struct gm_qrecord *recs);
/* Writes bad, a batch the storage refuses, after a batch that stored the
   handle counter 100 and job H:test:1: write_batch fails with a reason and
   leaves nothing behind (the counter is still 100), and the next batch
   (H:test:4) works.  Returns the state opened again. */
void *expect_failed_batch_leaves_nothing(const struct bk *b, void *st, const struct gm_queue_options *o,
                                         const struct gm_qrecord *bad, size_t n);

/* ---- the cases every backend must pass (queue_backend_cases.c) ---- */

void case_roundtrip_keeps_every_field(const struct bk *b);
void case_roundtrip_keeps_a_large_payload(const struct bk *b);
void case_done_removes_the_job(const struct bk *b);
void case_done_of_an_unknown_handle_is_not_an_error(const struct bk *b);
void case_add_of_a_stored_handle_replaces_it(const struct bk *b);
void case_replay_returns_rows_in_insertion_order(const struct bk *b);
void case_same_function_and_unique_keep_separate_rows(const struct bk *b);
void case_replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows(const struct bk *b);
void case_handle_counter_is_stored_and_loaded_and_is_no_job(const struct bk *b);
void case_long_names_are_stored_whole_or_refused(const struct bk *b);
void case_lifecycle_bytes_are_kept_and_replaced(const struct bk *b);
void case_policies_are_stored_apart_from_jobs(const struct bk *b);

/* One START_TEST per backend for a generic case. */
#define BACKEND_CASE(prefix, BK, name)                                         \
    START_TEST(test_##prefix##_##name) { case_##name(&BK); }                   \
    END_TEST

/* Every generic case for one backend: test_<prefix>_<case>. */
#define BACKEND_CASES(prefix, BK)                                                       \
    BACKEND_CASE(prefix, BK, roundtrip_keeps_every_field)                               \
    BACKEND_CASE(prefix, BK, roundtrip_keeps_a_large_payload)                           \
    BACKEND_CASE(prefix, BK, done_removes_the_job)                                      \
    BACKEND_CASE(prefix, BK, done_of_an_unknown_handle_is_not_an_error)                 \
    BACKEND_CASE(prefix, BK, add_of_a_stored_handle_replaces_it)                        \
    BACKEND_CASE(prefix, BK, replay_returns_rows_in_insertion_order)                    \
    BACKEND_CASE(prefix, BK, same_function_and_unique_keep_separate_rows)               \
    BACKEND_CASE(prefix, BK, replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows) \
    BACKEND_CASE(prefix, BK, handle_counter_is_stored_and_loaded_and_is_no_job)         \
    BACKEND_CASE(prefix, BK, long_names_are_stored_whole_or_refused)                    \
    BACKEND_CASE(prefix, BK, lifecycle_bytes_are_kept_and_replaced)                     \
    BACKEND_CASE(prefix, BK, policies_are_stored_apart_from_jobs)

#define ADD(s, t) gm_check_add((s), #t, t, 60, NULL, NULL)

#define ADD_BACKEND_CASES(s, prefix)                                                      \
    do {                                                                                  \
        ADD(s, test_##prefix##_roundtrip_keeps_every_field);                              \
        ADD(s, test_##prefix##_roundtrip_keeps_a_large_payload);                           \
        ADD(s, test_##prefix##_done_removes_the_job);                                     \
        ADD(s, test_##prefix##_done_of_an_unknown_handle_is_not_an_error);                \
        ADD(s, test_##prefix##_add_of_a_stored_handle_replaces_it);                       \
        ADD(s, test_##prefix##_replay_returns_rows_in_insertion_order);                   \
        ADD(s, test_##prefix##_same_function_and_unique_keep_separate_rows);              \
        ADD(s, test_##prefix##_replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows); \
        ADD(s, test_##prefix##_handle_counter_is_stored_and_loaded_and_is_no_job);         \
        ADD(s, test_##prefix##_long_names_are_stored_whole_or_refused);                   \
        ADD(s, test_##prefix##_lifecycle_bytes_are_kept_and_replaced);                    \
        ADD(s, test_##prefix##_policies_are_stored_apart_from_jobs);                      \
    } while (0)

/* Adds test_every_queue_backend_is_built, which fails: for a program whose
   backend configure did not find (CI builds all three). */
void queue_add_missing_backend(Suite *s);

/* Runs suite s with base_dir made (and removed after); prints TAP. */
int queue_main(Suite *s);

#endif /* GM_TESTS_UNIT_QUEUE_HARNESS_H */
