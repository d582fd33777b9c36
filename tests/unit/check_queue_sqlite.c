/*
 * check_queue_sqlite.c: unit tests for the SQLite queue backend
 * (gm_queue_sqlite, through its vtable) against a real database file in a
 * temporary directory: the cases every backend passes
 * (queue_backend_cases.c), and SQLite's own: the table it creates or is
 * named, migrating gearmand 1.1.20's tables, store-on-shutdown, rows it
 * cannot read, a failed batch, and files it cannot open.  Needs no
 * services.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HAVE_SQLITE3
#include <sqlite3.h>
#endif

#include "plugins/queue/backends.h"
#include "tests/unit/queue_harness.h"

#ifdef HAVE_SQLITE3

static char t_path[512], t_dir[400];

static void
sqlite_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_dir, sizeof t_dir, "%s/sq-%d-%u", base_dir, (int)getpid(), name_seq);
    ck_assert_msg(mkdir(t_dir, 0700) == 0, "mkdir %s: %s", t_dir, strerror(errno));
    snprintf(t_path, sizeof t_path, "%s/queue.sqlite", t_dir);
    gm_queue_opt_set(o, "libsqlite3-db", t_path);
}

static void
sqlite_cleanup(const struct gm_queue_options *o)
{
    (void)o; /* the run's directory is removed by queue_main() */
}

static const struct bk BK_SQLITE = {"sqlite", &gm_queue_sqlite, sqlite_fresh, sqlite_cleanup, MIB};

/* Runs SQL on the test's own connection to a sqlite file. */
static sqlite3 *
sq_db(const char *path)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void
sq_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
}

static long long
sq_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

BACKEND_CASES(sqlite, BK_SQLITE)

/* gearmand 1.1.20's table, exactly (reference section 5.3). */
#define GEARMAND_1_1_20_SQLITE_TABLE                                                        \
    "CREATE TABLE gearman_queue ( unique_key TEXT, function_name TEXT, priority INTEGER, " \
    "data BLOB, when_to_run INTEGER, PRIMARY KEY (unique_key, function_name))"

/* Inserts a row the way gearmand 1.1.20's add does. */
static void
sq_insert_1_1_20(sqlite3 *db, const char *table, const struct gm_qrecord *r, bool with_when)
{
    char sql[256];
    if (with_when)
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO %s (priority, unique_key, function_name, data, when_to_run) "
                 "VALUES (?,?,?,?,?)",
                 table);
    else
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO %s (priority, unique_key, function_name, data) "
                 "VALUES (?,?,?,?)",
                 table);
    sqlite3_stmt *st = NULL;
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_int(st, 1, r->priority);
    sqlite3_bind_text(st, 2, r->unique, (int)r->unique_len, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, r->function, (int)r->function_len, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 4, r->data, (int)r->data_len, SQLITE_TRANSIENT);
    if (with_when)
        sqlite3_bind_int64(st, 5, r->when);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static bool
sq_has_column(sqlite3 *db, const char *table, const char *column)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'", table,
             column);
    return sq_int(db, sql) == 1;
}

START_TEST(test_sqlite_open_creates_the_table)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_SQLITE, &o);
    sqlite3 *db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'gearman_queue'"),
                     1);
    /* gearmand's columns, plus the handle */
    static const char *const cols[] = {"unique_key", "function_name", "priority", "data",
                                       "when_to_run", "job_handle"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        ck_assert_msg(sq_has_column(db, "gearman_queue", cols[i]), "no column %s", cols[i]);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 0);
    sqlite3_close(db);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_table_option_names_the_table)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    gm_queue_opt_set(&o, "libsqlite3-table", "my \"odd\" queue");
    void *st = bk_open(&BK_SQLITE, &o);
    struct gm_qrecord a = rec_add_s("H:test:1", "f", "u", "d", 2);
    bk_write(&BK_SQLITE, st, &a, 1);
    struct rows rs;
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    ck_assert_uint_eq(rs.n, 1);
    expect_row(&rs.r[0], &a);
    rows_free(&rs);
    sqlite3 *db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM \"my \"\"odd\"\" queue\""), 1);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'gearman_queue'"), 0);
    sqlite3_close(db);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_gearmand_1_1_20_table_is_migrated_by_open)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    o.handle_prefix = "H:old";
    sqlite3 *db = sq_db(t_path);
    sq_exec(db, GEARMAND_1_1_20_SQLITE_TABLE);
    char *bin = binary_payload(300);
    /* 1.1.20 cannot hold two rows with the same (unique, function): distinct ones */
    struct gm_qrecord old[] = {
        rec_add("H:old:1", "reverse", "u1", 2, "first", 5, 0, 0),
        rec_add("H:old:2", "reverse", "u2", 2, bin, 300, 2, 0),
        rec_add("H:old:3", "resize", "", 0, "", 0, 1, FAR_FUTURE),
        rec_add("H:old:4", "resize", "u1", 2, "last\0", 5, 1, 1700000000),
    };
    for (size_t i = 0; i < 4; i++)
        sq_insert_1_1_20(db, "gearman_queue", &old[i], true);
    sqlite3_close(db);

    void *st = bk_open(&BK_SQLITE, &o);
    const char *want[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4"};
    expect_replay(&BK_SQLITE, st, want, 4, old);

    /* migrated: now in our layout, and a second open changes nothing */
    db = sq_db(t_path);
    ck_assert(sq_has_column(db, "gearman_queue", "job_handle"));
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 4);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name NOT IN ('gearman_queue', 'gearmand_meta', 'gearmand_policies')"),
                     0);
    sqlite3_close(db);
    /* the (unique, function) key is gone: a twin of u1/reverse is stored */
    struct gm_qrecord twin = rec_add_s("H:test:9", "reverse", "u1", "twin", 1);
    bk_write(&BK_SQLITE, st, &twin, 1);
    const char *want2[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4", "H:test:9"};
    st = expect_reopen_replay(&BK_SQLITE, st, &o, want2, 5, NULL);
    free(bin);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_gearmand_table_without_when_to_run_is_migrated)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    o.handle_prefix = "H:older";
    sqlite3 *db = sq_db(t_path);
    sq_exec(db, "CREATE TABLE gearman_queue ( unique_key TEXT, function_name TEXT, priority INTEGER, "
                "data BLOB, PRIMARY KEY (unique_key, function_name))");
    struct gm_qrecord old[] = {
        rec_add_s("H:older:1", "f", "a", "one", 2),
        rec_add_s("H:older:2", "f", "b", "two", 0),
    };
    for (size_t i = 0; i < 2; i++)
        sq_insert_1_1_20(db, "gearman_queue", &old[i], false);
    sqlite3_close(db);
    void *st = bk_open(&BK_SQLITE, &o);
    const char *want[] = {"H:older:1", "H:older:2"};
    expect_replay(&BK_SQLITE, st, want, 2, old);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_store_on_shutdown_truncates_the_table_after_replay)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    o.store_on_shutdown = true;
    void *st = bk_open(&BK_SQLITE, &o);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "a", "one", 0),
        rec_add_s("H:test:2", "f", "", "two", 2),
    };
    bk_write(&BK_SQLITE, st, recs, 2); /* what the shutdown writes */
    const char *want[] = {"H:test:1", "H:test:2"};
    st = expect_reopen_replay(&BK_SQLITE, st, &o, want, 2, recs);
    sqlite3 *db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 0);
    sqlite3_close(db);
    /* the next start replays nothing until the next clean stop writes */
    struct rows rs;
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    ck_assert_uint_eq(rs.n, 0);
    rows_free(&rs);
    gm_queue_sqlite.close(st);
}
END_TEST

/* A replay callback that takes every row but one, which it leaves stored
   (as the server does with a row it cannot replay, e.g. a bad priority). */
struct declining {
    struct rows taken;
    const char *decline; /* this handle is not replayed */
};

static int
collect_all_but_one(void *arg, const struct gm_qrow *row)
{
    struct declining *dc = arg;
    if (row->handle_len == strlen(dc->decline) &&
        memcmp(row->handle, dc->decline, row->handle_len) == 0)
        return 1;
    return collect_row(&dc->taken, row);
}

START_TEST(test_sqlite_store_on_shutdown_keeps_the_rows_replay_did_not_take)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    o.store_on_shutdown = true;
    void *st = bk_open(&BK_SQLITE, &o);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "a", "one", 1),
        rec_add_s("H:test:2", "f", "b", "declined", 1),
        rec_add_s("H:test:4", "f", "d", "four", 1),
        rec_add_s("H:test:5", "f", "e", "five", 1),
    };
    bk_write(&BK_SQLITE, st, recs, 2);
    sqlite3 *db = sq_db(t_path);
    sq_exec(db, "INSERT INTO gearman_queue (job_handle, unique_key, function_name, priority, data, "
                "when_to_run) VALUES ('H:test:3', 'c', 'f', 'not a number', x'00', 0)");
    sqlite3_close(db);
    bk_write(&BK_SQLITE, st, &recs[2], 2);
    gm_queue_sqlite.close(st);
    st = bk_open(&BK_SQLITE, &o);
    struct declining dc = {{0}, "H:test:2"};
    char err[256] = "";
    ck_assert_msg(gm_queue_sqlite.replay(st, collect_all_but_one, &dc, err, sizeof err) == 0, "%s",
                  err);
    const char *want[] = {"H:test:1", "H:test:4", "H:test:5"};
    expect_handles(&dc.taken, want, 3);
    rows_free(&dc.taken);
    /* the replayed rows are gone; the declined one and the unreadable one stay */
    db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 2);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue WHERE job_handle IN "
                                "('H:test:2', 'H:test:3')"), 2);
    sqlite3_close(db);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_without_store_on_shutdown_replay_keeps_the_rows)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_SQLITE, &o);
    struct gm_qrecord a = rec_add_s("H:test:1", "f", "a", "one", 0);
    bk_write(&BK_SQLITE, st, &a, 1);
    struct rows rs;
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    rows_free(&rs);
    sqlite3 *db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 1);
    sqlite3_close(db);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_unreadable_row_is_kept_and_the_rest_replays)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_SQLITE, &o);
    struct gm_qrecord a = rec_add_s("H:test:1", "f", "a", "one", 1);
    bk_write(&BK_SQLITE, st, &a, 1);
    sqlite3 *db = sq_db(t_path);
    sq_exec(db, "INSERT INTO gearman_queue (job_handle, unique_key, function_name, priority, data, "
                "when_to_run) VALUES ('H:test:2', 'b', 'f', 'not a number', x'00', 0)");
    sq_exec(db, "INSERT INTO gearman_queue (job_handle, unique_key, function_name, priority, data, "
                "when_to_run) VALUES ('H:test:3', 'c', NULL, 1, x'00', 0)");
    sqlite3_close(db);
    struct gm_qrecord c = rec_add_s("H:test:4", "f", "d", "four", 2);
    bk_write(&BK_SQLITE, st, &c, 1);
    const char *want[] = {"H:test:1", "H:test:4"};
    const struct gm_qrecord kept[] = {a, c};
    st = expect_reopen_replay(&BK_SQLITE, st, &o, want, 2, kept);
    db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 4);
    sqlite3_close(db);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_failed_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_SQLITE, &o);
    sqlite3 *db = sq_db(t_path);
    sq_exec(db, "CREATE TRIGGER boom BEFORE INSERT ON gearman_queue WHEN NEW.function_name = 'boom' "
                "BEGIN SELECT RAISE(ABORT, 'boom refused'); END");
    sqlite3_close(db);
    struct gm_qrecord keep[] = {rec_counter(100), rec_add_s("H:test:1", "f", "a", "kept", 1)};
    bk_write(&BK_SQLITE, st, keep, 2);
    struct gm_qrecord bad[] = {
        rec_add_s("H:test:2", "f", "b", "first of a doomed batch", 1),
        rec_counter(200),
        rec_done("H:test:1"),
        rec_add_s("H:test:3", "boom", "c", "refused", 1),
    };
    st = expect_failed_batch_leaves_nothing(&BK_SQLITE, st, &o, bad, 4);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_open_of_an_unwritable_path_fails_with_a_message)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    char path[600];
    snprintf(path, sizeof path, "%s/no-such-dir/queue.sqlite", t_dir);
    gm_queue_opt_set(&o, "libsqlite3-db", path);
    char err[256] = "";
    void *st = gm_queue_sqlite.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open of %s succeeded", path);
    ck_assert_msg(err[0] != '\0', "no message for %s", path);
    /* a directory is no database either (root ignores permissions) */
    gm_queue_opt_set(&o, "libsqlite3-db", t_dir);
    err[0] = '\0';
    st = gm_queue_sqlite.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open of the directory %s succeeded", t_dir);
    ck_assert_msg(err[0] != '\0', "no message for a directory");
}
END_TEST

START_TEST(test_sqlite_open_of_a_file_that_is_not_a_database_fails_with_a_message)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    FILE *f = fopen(t_path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite database\n", f);
    fclose(f);
    char err[256] = "";
    void *st = gm_queue_sqlite.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open of a text file succeeded");
    ck_assert_msg(err[0] != '\0', "no message");
}
END_TEST

START_TEST(test_sqlite_table_with_unknown_columns_is_refused)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    sqlite3 *db = sq_db(t_path);
    sq_exec(db, "CREATE TABLE gearman_queue (something_else TEXT)");
    sqlite3_close(db);
    char err[256] = "";
    void *st = gm_queue_sqlite.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "a foreign table was accepted");
    ck_assert_msg(err[0] != '\0', "no message");
}
END_TEST
#endif /* HAVE_SQLITE3 */

int
main(void)
{
    Suite *s = suite_create("queue_sqlite");
#ifdef HAVE_SQLITE3
    ADD(s, test_sqlite_open_creates_the_table);
    ADD_BACKEND_CASES(s, sqlite);
    ADD(s, test_sqlite_table_option_names_the_table);
    ADD(s, test_sqlite_gearmand_1_1_20_table_is_migrated_by_open);
    ADD(s, test_sqlite_gearmand_table_without_when_to_run_is_migrated);
    ADD(s, test_sqlite_store_on_shutdown_truncates_the_table_after_replay);
    ADD(s, test_sqlite_store_on_shutdown_keeps_the_rows_replay_did_not_take);
    ADD(s, test_sqlite_without_store_on_shutdown_replay_keeps_the_rows);
    ADD(s, test_sqlite_unreadable_row_is_kept_and_the_rest_replays);
    ADD(s, test_sqlite_failed_batch_writes_nothing_and_the_next_one_works);
    ADD(s, test_sqlite_open_of_an_unwritable_path_fails_with_a_message);
    ADD(s, test_sqlite_open_of_a_file_that_is_not_a_database_fails_with_a_message);
    ADD(s, test_sqlite_table_with_unknown_columns_is_refused);
#else
    queue_add_missing_backend(s);
#endif
    return queue_main(s);
}
