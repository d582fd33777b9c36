/*
 * check_queue_tokyocabinet.c: unit tests for the Tokyo Cabinet queue
 * backend (gm_queue_tokyocabinet, through its vtable) against real database
 * files in a temporary directory: the cases every backend passes
 * (queue_backend_cases.c) on a hash file, and Tokyo Cabinet's own: a B+ tree
 * file, migrating records in gearmand 1.1.20's layout (reference 5.8, written
 * here with the library, since Debian's gearmand is built without Tokyo
 * Cabinet), records it cannot read, a failed batch, the options' errors,
 * files it cannot open, a file another process holds, and a writer killed
 * with SIGKILL between and inside batches (every acknowledged batch is
 * there, the one in flight wholly or not at all).  Needs no services.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef HAVE_TOKYOCABINET
#include <tcadb.h>
#include <tcutil.h>
#endif

#include "plugins/queue/backends.h"
#include "tests/unit/queue_harness.h"

#ifdef HAVE_TOKYOCABINET

static char t_path[512], t_dir[400];

static void
fresh_in(struct gm_queue_options *o, const char *file)
{
    fresh_common(o);
    snprintf(t_dir, sizeof t_dir, "%s/tc-%d-%u", base_dir, (int)getpid(), name_seq);
    ck_assert_msg(mkdir(t_dir, 0700) == 0, "mkdir %s: %s", t_dir, strerror(errno));
    snprintf(t_path, sizeof t_path, "%s/%s", t_dir, file);
    gm_queue_opt_set(o, "libtokyocabinet-file", t_path);
}

static void
tc_fresh(struct gm_queue_options *o)
{
    fresh_in(o, "queue.tch");
}

static void
tcb_fresh(struct gm_queue_options *o)
{
    fresh_in(o, "queue.tcb");
}

static void
tc_cleanup(const struct gm_queue_options *o)
{
    (void)o; /* the run's directory is removed by queue_main() */
}

static const struct bk BK_TC = {"tokyocabinet", &gm_queue_tokyocabinet, tc_fresh, tc_cleanup, MIB};
static const struct bk BK_TCB = {"tokyocabinet-btree", &gm_queue_tokyocabinet, tcb_fresh, tc_cleanup, MIB};

BACKEND_CASES(tc, BK_TC)
BACKEND_CASES(tcb, BK_TCB)

/* The test's own handle on a file the backend has closed. */
static TCADB *
tc_db(const char *path)
{
    TCADB *db = tcadbnew();
    ck_assert_msg(tcadbopen(db, path), "tcadbopen %s", path);
    return db;
}

static void
tc_db_close(TCADB *db)
{
    ck_assert(tcadbclose(db));
    tcadbdel(db);
}

static char *
open_error(const struct gm_queue_options *o)
{
    static char err[512];
    err[0] = '\0';
    void *st = gm_queue_tokyocabinet.open(o, err, sizeof err);
    ck_assert_msg(st == NULL, "open succeeded");
    ck_assert_msg(err[0] != '\0', "no message");
    return err;
}

/* A record as gearmand 1.1.20 stores it (reference 5.8): key function "-"
   unique, value function NUL unique NUL priority digit NUL when NUL data. */
static void
put_1_1_20(TCADB *db, const struct gm_qrecord *r)
{
    TCXSTR *k = tcxstrnew(), *v = tcxstrnew();
    tcxstrcat(k, r->function, (int)r->function_len);
    tcxstrcat(k, "-", 1);
    tcxstrcat(k, r->unique, (int)r->unique_len);
    tcxstrcat(v, r->function, (int)r->function_len);
    tcxstrcat(v, "\0", 1);
    tcxstrcat(v, r->unique, (int)r->unique_len);
    tcxstrcat(v, "\0", 1);
    tcxstrprintf(v, "%d", r->priority);
    tcxstrcat(v, "\0", 1);
    tcxstrprintf(v, "%lld", (long long)r->when);
    tcxstrcat(v, "\0", 1);
    tcxstrcat(v, r->data, (int)r->data_len);
    ck_assert(tcadbput(db, tcxstrptr(k), tcxstrsize(k), tcxstrptr(v), tcxstrsize(v)));
    tcxstrdel(k);
    tcxstrdel(v);
}

static void
migrates(const char *file)
{
    struct gm_queue_options o;
    fresh_in(&o, file);
    o.handle_prefix = "H:old";
    char *bin = binary_payload(300);
    struct gm_qrecord old[] = {
        rec_add("", "reverse", "u1", 2, "first", 5, 0, 0),
        rec_add("", "reverse", "u2", 2, bin, 300, 2, 0),
        rec_add("", "resize", "", 0, "", 0, 1, FAR_FUTURE),
        rec_add("", "resize", "u1", 2, "last\0", 5, 1, 1700000000),
    };
    TCADB *db = tc_db(t_path);
    for (size_t i = 0; i < 4; i++)
        put_1_1_20(db, &old[i]);
    ck_assert(tcadbput2(db, "broken-record", "no NULs here, so not gearmand's"));
    /* the file's order is the migration's order: the handles follow it */
    struct gm_qrecord want_recs[4];
    char handles[4][16];
    const char *want[4];
    size_t n = 0;
    tcadbiterinit(db);
    int ksz;
    char *k;
    while ((k = tcadbiternext(db, &ksz))) {
        for (size_t i = 0; i < 4; i++) {
            char key[64];
            int kl = snprintf(key, sizeof key, "%.*s-%.*s", (int)old[i].function_len, old[i].function,
                              (int)old[i].unique_len, old[i].unique);
            if (kl == ksz && memcmp(key, k, (size_t)ksz) == 0) {
                ck_assert_uint_lt(n, 4);
                snprintf(handles[n], sizeof handles[n], "H:old:%zu", n + 1);
                want_recs[n] = old[i];
                want_recs[n].handle = want[n] = handles[n];
                want_recs[n].handle_len = (uint32_t)strlen(handles[n]);
                n++;
            }
        }
        tcfree(k);
    }
    ck_assert_uint_eq(n, 4);
    tc_db_close(db);

    void *st = bk_open(&BK_TC, &o);
    expect_replay(&BK_TC, st, want, 4, want_recs);
    /* a job written after the migration comes after them, and the old key
       (function, unique) no longer holds anyone: a twin is a job of its own */
    struct gm_qrecord twin = rec_add_s("H:test:9", "reverse", "u1", "twin", 1);
    bk_write(&BK_TC, st, &twin, 1);
    const char *want2[] = {want[0], want[1], want[2], want[3], "H:test:9"};
    st = expect_reopen_replay(&BK_TC, st, &o, want2, 5, NULL);
    gm_queue_tokyocabinet.close(st);
    /* the migrated records are gone; the unreadable one is kept as it was */
    db = tc_db(t_path);
    ck_assert_int_lt(tcadbvsiz2(db, "reverse-u1"), 0);
    char *kept = tcadbget2(db, "broken-record");
    ck_assert_ptr_nonnull(kept);
    ck_assert_str_eq(kept, "no NULs here, so not gearmand's");
    tcfree(kept);
    tc_db_close(db);
    free(bin);
}

START_TEST(test_tc_gearmand_1_1_20_hash_records_are_migrated_by_open)
{
    migrates("queue.tch");
}
END_TEST

START_TEST(test_tc_gearmand_1_1_20_btree_records_are_migrated_by_open)
{
    migrates("queue.tcb");
}
END_TEST

START_TEST(test_tc_unreadable_job_record_is_kept_and_the_rest_replays)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_TC, &o);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "a", "one", 1),
        rec_add_s("H:test:2", "f", "b", "two", 1),
        rec_add_s("H:test:3", "f", "c", "three", 2),
    };
    bk_write(&BK_TC, st, recs, 3);
    gm_queue_tokyocabinet.close(st);
    TCADB *db = tc_db(t_path);
    static const char key[] = "\0JH:test:2";
    ck_assert(tcadbput(db, key, (int)sizeof key - 1, "\1garbage", 8));
    tc_db_close(db);
    st = bk_open(&BK_TC, &o);
    const char *want[] = {"H:test:1", "H:test:3"};
    const struct gm_qrecord kept[] = {recs[0], recs[2]};
    st = expect_reopen_replay(&BK_TC, st, &o, want, 2, kept);
    gm_queue_tokyocabinet.close(st);
    db = tc_db(t_path);
    ck_assert_int_eq(tcadbvsiz(db, key, (int)sizeof key - 1), 8);
    tc_db_close(db);
}
END_TEST

START_TEST(test_tc_failed_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_TC, &o);
    struct gm_qrecord keep[] = {rec_counter(100), rec_add_s("H:test:1", "f", "a", "kept", 1)};
    bk_write(&BK_TC, st, keep, 2);
    struct gm_qrecord bad[] = {
        rec_add_s("H:test:2", "f", "b", "first of a doomed batch", 1),
        rec_counter(200),
        rec_done("H:test:1"),
        rec_add_s("", "f", "c", "a job without a handle is refused", 1),
    };
    st = expect_failed_batch_leaves_nothing(&BK_TC, st, &o, bad, 4);
    gm_queue_tokyocabinet.close(st);
}
END_TEST

START_TEST(test_tc_open_without_the_file_option_names_it)
{
    struct gm_queue_options o;
    fresh_common(&o);
    ck_assert_ptr_nonnull(strstr(open_error(&o), "--libtokyocabinet-file"));
}
END_TEST

START_TEST(test_tc_bad_optimize_value_names_the_option)
{
    struct gm_queue_options o;
    tc_fresh(&o);
    gm_queue_opt_set(&o, "libtokyocabinet-optimize", "perhaps");
    ck_assert_ptr_nonnull(strstr(open_error(&o), "--libtokyocabinet-optimize"));
    /* false is a value: the queue opens and works without optimizing */
    gm_queue_opt_set(&o, "libtokyocabinet-optimize", "false");
    void *st = bk_open(&BK_TC, &o);
    struct gm_qrecord a = rec_add_s("H:test:1", "f", "a", "one", 0);
    bk_write(&BK_TC, st, &a, 1);
    const char *want[] = {"H:test:1"};
    st = expect_reopen_replay(&BK_TC, st, &o, want, 1, &a);
    gm_queue_tokyocabinet.close(st);
}
END_TEST

START_TEST(test_tc_open_of_files_it_cannot_use_names_the_option)
{
    struct gm_queue_options o;
    tc_fresh(&o);
    char path[600];
    const char *bad[] = {"no-such-dir/queue.tch", "queue.db", "", "*", "+", "queue.tcf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (bad[i][0] == '*' || bad[i][0] == '+')
            snprintf(path, sizeof path, "%s", bad[i]); /* an on-memory database: not durable */
        else
            snprintf(path, sizeof path, "%s/%s", t_dir, bad[i]); /* "": the directory itself */
        gm_queue_opt_set(&o, "libtokyocabinet-file", path);
        char *err = open_error(&o);
        ck_assert_msg(strstr(err, "--libtokyocabinet-file") != NULL, "%s: %s", path, err);
    }
    /* a text file is no database */
    snprintf(path, sizeof path, "%s/text.tch", t_dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a tokyo cabinet database\n", f);
    fclose(f);
    gm_queue_opt_set(&o, "libtokyocabinet-file", path);
    ck_assert_ptr_nonnull(strstr(open_error(&o), "--libtokyocabinet-file"));
}
END_TEST

START_TEST(test_tc_file_another_process_holds_is_refused_at_once)
{
    struct gm_queue_options o;
    tc_fresh(&o);
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        TCADB *db = tcadbnew();
        char c = tcadbopen(db, t_path) ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c = 0;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    ck_assert_int_eq(c, 'y');
    char *err = open_error(&o); /* at once: the case's timeout catches a wait */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(ready[0]);
    close(ready[1]);
    ck_assert_msg(strstr(err, "--libtokyocabinet-file") != NULL, "%s", err);
    /* once it is gone the file opens */
    void *st = bk_open(&BK_TC, &o);
    gm_queue_tokyocabinet.close(st);
}
END_TEST

START_TEST(test_tc_records_of_other_kinds_are_no_jobs)
{
    /* the counter, the sequence and policies share the file with the jobs */
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_TC, &o);
    struct gm_qrecord recs[] = {rec_counter(7), rec_add_s("H:test:1", "f", "", "one", 1)};
    bk_write(&BK_TC, st, recs, 2);
    gm_queue_tokyocabinet.close(st);
    TCADB *db = tc_db(t_path);
    ck_assert_uint_eq(tcadbrnum(db), 3); /* job, counter, sequence */
    tc_db_close(db);
    st = bk_open(&BK_TC, &o);
    const char *want[] = {"H:test:1"};
    expect_replay(&BK_TC, st, want, 1, &recs[1]);
    ck_assert_uint_eq(bk_counter(&BK_TC, st), 7);
    gm_queue_tokyocabinet.close(st);
}
END_TEST

/* Batch b of the kill test: ADDs "H:k:<b>:<j>" for j in 0..9, DONEs of batch
   b-2's j in 0..4, and the counter b. */
static void
kill_batch(uint32_t b, char names[15][32], struct gm_qrecord *recs)
{
    size_t n = 0;
    for (int j = 0; j < 10; j++) {
        snprintf(names[n], 32, "H:k:%u:%d", b, j);
        recs[n] = rec_add_s(names[n], "f", j % 3 ? "u" : "", names[n], j % 3);
        n++;
    }
    for (int j = 0; b > 2 && j < 5; j++) {
        snprintf(names[n], 32, "H:k:%u:%d", b - 2, j);
        recs[n] = rec_done(names[n]);
        n++;
    }
    recs[n] = rec_counter(b);
}

/* What the file holds after batches 1..c: is handle there? */
static bool
kill_expected(uint32_t c, const char *handle)
{
    unsigned b, j;
    if (sscanf(handle, "H:k:%u:%u", &b, &j) != 2 || b < 1 || b > c)
        return false;
    return j >= 5 || b + 2 > c;
}

static bool
kill_matches(const struct rows *rs, uint32_t c)
{
    size_t want = 0;
    for (uint32_t b = 1; b <= c; b++)
        want += b + 2 > c ? 10 : 5;
    if (rs->n != want)
        return false;
    for (size_t i = 0; i < rs->n; i++)
        if (!kill_expected(c, rs->r[i].handle))
            return false;
    return true;
}

START_TEST(test_tc_kill9_in_the_middle_of_batches_keeps_every_committed_batch_whole)
{
    struct gm_queue_options o;
    tc_fresh(&o);
    uint32_t committed = 0;
    srand((unsigned)getpid());
    for (int round = 0; round < 6; round++) {
        int acks[2];
        ck_assert_int_eq(pipe(acks), 0);
        pid_t child = fork();
        ck_assert_int_ge(child, 0);
        if (child == 0) {
            close(acks[0]);
            char err[256];
            void *st = gm_queue_tokyocabinet.open(&o, err, sizeof err);
            if (!st)
                _exit(3);
            for (uint32_t b = committed + 1;; b++) {
                char names[15][32];
                struct gm_qrecord recs[16];
                kill_batch(b, names, recs);
                if (gm_queue_tokyocabinet.write_batch(st, recs, b > 2 ? 16 : 11, err, sizeof err) < 0)
                    _exit(4);
                if (write(acks[1], &b, sizeof b) != sizeof b)
                    _exit(5);
            }
        }
        close(acks[1]);
        uint32_t target = committed + 5 + (uint32_t)(rand() % 60), got = committed, b;
        while (got < target && read(acks[0], &b, sizeof b) == sizeof b)
            got = b;
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        while (read(acks[0], &b, sizeof b) == sizeof b)
            got = b;
        close(acks[0]);
        ck_assert_msg(WIFSIGNALED(status), "the writer exited with %d before it was killed", WEXITSTATUS(status));
        /* every acknowledged batch is there, the one in flight wholly or not at all */
        void *st = bk_open(&BK_TC, &o);
        struct rows rs = {0};
        bk_replay(&BK_TC, st, &rs);
        uint64_t counter = bk_counter(&BK_TC, st);
        gm_queue_tokyocabinet.close(st);
        if (kill_matches(&rs, got))
            committed = got;
        else if (kill_matches(&rs, got + 1))
            committed = got + 1;
        else
            ck_abort_msg("round %d: %zu jobs stored after %u acknowledged batches: neither those nor one more",
                         round, rs.n, got);
        ck_assert_uint_eq(counter, committed);
        rows_free(&rs);
    }
}
END_TEST
#endif /* HAVE_TOKYOCABINET */

int
main(void)
{
    Suite *s = suite_create("queue_tokyocabinet");
#ifdef HAVE_TOKYOCABINET
    ADD_BACKEND_CASES(s, tc);
    ADD_BACKEND_CASES(s, tcb);
    ADD(s, test_tc_gearmand_1_1_20_hash_records_are_migrated_by_open);
    ADD(s, test_tc_gearmand_1_1_20_btree_records_are_migrated_by_open);
    ADD(s, test_tc_unreadable_job_record_is_kept_and_the_rest_replays);
    ADD(s, test_tc_failed_batch_writes_nothing_and_the_next_one_works);
    ADD(s, test_tc_open_without_the_file_option_names_it);
    ADD(s, test_tc_bad_optimize_value_names_the_option);
    ADD(s, test_tc_open_of_files_it_cannot_use_names_the_option);
    ADD(s, test_tc_file_another_process_holds_is_refused_at_once);
    ADD(s, test_tc_records_of_other_kinds_are_no_jobs);
    ADD(s, test_tc_kill9_in_the_middle_of_batches_keeps_every_committed_batch_whole);
#else
    queue_add_missing_backend(s);
#endif
    return queue_main(s);
}
