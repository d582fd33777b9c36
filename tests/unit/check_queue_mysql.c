/*
 * check_queue_mysql.c: unit tests for the MySQL / MariaDB queue backend
 * (gm_queue_mysql, through its vtable) against a throwaway MariaDB: the
 * cases every backend passes (queue_backend_cases.c), and MySQL's own: the
 * table it creates (InnoDB), migrating gearmand 1.1.20's table, rows it
 * cannot replay (logged, kept), a failed batch and a job too big for
 * max_allowed_packet (nothing of the batch written, the backend still up),
 * the server killed or the connection killed (writes fail, reconnect()
 * restores the backend), a session given up (ended before the reconnect
 * writes on), and start-up errors that name the option.
 *
 * Run by tests/unit/check_queue_mysql.sh, which starts the server
 * (tests/lib/with_services.py --only mariadb) and names it in
 * GM_TEST_MYSQL (host:port; user, password and database "gearman"), with
 * GM_TEST_MYSQL_STOP / GM_TEST_MYSQL_START (shell commands that kill and
 * start it).  When a variable is missing the cases that need it FAIL, not
 * skip: CI always provides the services.
 */
#include "config.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBMARIADB
#include <mysql.h>
#endif

#include "plugins/queue/backends.h"
#include "tests/unit/queue_harness.h"

#ifdef HAVE_LIBMARIADB

static char t_table[64];
static char t_host[64], t_port[16];

static void
my_server(void)
{
    const char *v = service_env("GM_TEST_MYSQL", "MariaDB", "check_queue_mysql.sh");
    const char *colon = strrchr(v, ':');
    ck_assert_ptr_nonnull(colon);
    snprintf(t_host, sizeof t_host, "%.*s", (int)(colon - v), v);
    snprintf(t_port, sizeof t_port, "%s", colon + 1);
}

static MYSQL *
my_admin(void)
{
    my_server();
    MYSQL *c = mysql_init(NULL);
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(mysql_real_connect(c, t_host, "gearman", "gearman", "gearman", (unsigned)atoi(t_port), NULL,
                                     CLIENT_MULTI_STATEMENTS) != NULL,
                  "connecting to %s:%s: %s", t_host, t_port, mysql_error(c));
    return c;
}

static void
my_exec(MYSQL *c, const char *sql)
{
    ck_assert_msg(mysql_query(c, sql) == 0, "%s: %s", sql, mysql_error(c));
    do {
        MYSQL_RES *r = mysql_store_result(c);
        if (r)
            mysql_free_result(r);
    } while (mysql_next_result(c) == 0);
}

static long long
my_int(MYSQL *c, const char *sql)
{
    ck_assert_msg(mysql_query(c, sql) == 0, "%s: %s", sql, mysql_error(c));
    MYSQL_RES *r = mysql_store_result(c);
    ck_assert_ptr_nonnull(r);
    MYSQL_ROW row = mysql_fetch_row(r);
    ck_assert_msg(row && row[0], "%s: no value", sql);
    long long v = atoll(row[0]);
    mysql_free_result(r);
    return v;
}

static void
my_options(struct gm_queue_options *o)
{
    my_server();
    gm_queue_opt_set(o, "mysql-host", t_host);
    gm_queue_opt_set(o, "mysql-port", t_port);
    gm_queue_opt_set(o, "mysql-user", "gearman");
    gm_queue_opt_set(o, "mysql-password", "gearman");
    gm_queue_opt_set(o, "mysql-db", "gearman");
}

static void
my_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_table, sizeof t_table, "gmq_%d_%u", (int)getpid(), name_seq);
    MYSQL *c = my_admin();
    char sql[256];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS `%s`; DELETE FROM gearmand_meta WHERE name LIKE '%%:%s'", t_table,
             t_table);
    if (mysql_query(c, sql) == 0) /* gearmand_meta may not exist yet */
        while (mysql_next_result(c) == 0)
            ;
    mysql_close(c);
    my_options(o);
    gm_queue_opt_set(o, "mysql-table", t_table);
}

static void
my_cleanup(const struct gm_queue_options *o)
{
    MYSQL *c = my_admin();
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS `%s`", gm_queue_opt(o, "mysql-table"));
    my_exec(c, sql);
    mysql_close(c);
}

static const struct bk BK_MY = {"mysql", &gm_queue_mysql, my_fresh, my_cleanup, MIB};

BACKEND_CASES(mysql, BK_MY)

START_TEST(test_mysql_open_creates_an_innodb_table)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    MYSQL *c = my_admin();
    char sql[256];
    static const char *const cols[] = {"unique_key", "function_name", "priority", "data", "when_to_run",
                                       "job_handle", "seq", "lifecycle"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'gearman' AND "
                 "table_name = '%s' AND column_name = '%s'",
                 t_table, cols[i]);
        ck_assert_msg(my_int(c, sql) == 1, "no column %s in %s", cols[i], t_table);
    }
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'gearman' AND "
             "table_name = '%s' AND engine = 'InnoDB'",
             t_table);
    ck_assert_int_eq(my_int(c, sql), 1);
    mysql_close(c);
    gm_queue_mysql.close(st);
    st = bk_open(&BK_MY, &o); /* opening an existing table again is fine */
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* gearmand 1.1.20's table and rows, as its MySQL plugin writes them
   (reference section 5.5), on a server whose default engine was MyISAM. */
START_TEST(test_mysql_gearmand_1_1_20_table_is_migrated_by_open)
{
    struct gm_queue_options o;
    my_fresh(&o);
    MYSQL *c = my_admin();
    char sql[1024];
    snprintf(sql, sizeof sql,
             "CREATE TABLE `%s` (unique_key VARCHAR(64), function_name VARCHAR(255), priority INT, "
             "data LONGBLOB, when_to_run INT, unique key (unique_key, function_name)) ENGINE=MyISAM;"
             "INSERT INTO `%s` (unique_key, function_name, priority, data, when_to_run) VALUES "
             "('u-low', 'old', 2, 'low', 0), ('u-normal', 'old', 1, 'nor\\0mal', 0), "
             "('u-high', 'old', 0, 'high', 0), ('', 'old', 1, 'empty unique', 0), "
             "('u-epoch', 'old', 1, 'later', 2000000000)",
             t_table, t_table);
    my_exec(c, sql);
    mysql_close(c);
    void *st = bk_open(&BK_MY, &o);
    struct gm_qrecord want_recs[] = {
        rec_add("H:test:1", "old", "u-low", 5, "low", 3, 2, 0),
        rec_add("H:test:2", "old", "u-normal", 8, "nor\0mal", 7, 1, 0),
        rec_add("H:test:3", "old", "u-high", 6, "high", 4, 0, 0),
        rec_add("H:test:4", "old", "", 0, "empty unique", 12, 1, 0),
        rec_add("H:test:5", "old", "u-epoch", 7, "later", 5, 1, 2000000000),
    };
    const char *want[] = {"H:test:1", "H:test:2", "H:test:3", "H:test:4", "H:test:5"};
    expect_replay(&BK_MY, st, want, 5, want_recs);
    /* the old key is gone: a job with a stored (unique, function) gets a
       row of its own, and a DONE removes one job */
    struct gm_qrecord more[] = {rec_add("H:test:9", "old", "u-low", 5, "again", 5, 2, FAR_FUTURE),
                                rec_done("H:test:2")};
    bk_write(&BK_MY, st, more, 2);
    const char *want2[] = {"H:test:1", "H:test:3", "H:test:4", "H:test:5", "H:test:9"};
    st = expect_reopen_replay(&BK_MY, st, &o, want2, 5, NULL);
    /* and the table is InnoDB now (gearmand's was MyISAM here): a batch is a transaction */
    c = my_admin();
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'gearman' AND "
             "table_name = '%s' AND engine = 'InnoDB'",
             t_table);
    ck_assert_int_eq(my_int(c, sql), 1);
    mysql_close(c);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

static int
count_row(void *arg, const struct gm_qrow *row)
{
    (void)row;
    (*(int *)arg)++;
    return 0;
}

/* Rows a replay cannot use (NULL function or priority, a priority that
   is no number) are logged and kept; the others replay. */
START_TEST(test_mysql_rows_that_cannot_be_replayed_are_kept_and_the_rest_replays)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    struct gm_qrecord good[] = {rec_add_s("H:test:1", "f", "a", "one", 1), rec_add_s("H:test:5", "f", "b", "two", 2)};
    bk_write(&BK_MY, st, good, 2);
    MYSQL *c = my_admin();
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO `%s` (job_handle, unique_key, function_name, priority, data, when_to_run) VALUES "
             "('H:test:2', 'u', NULL, 1, 'no function', 0), ('H:test:3', 'u', 'f', NULL, 'no priority', 0)",
             t_table);
    my_exec(c, sql);
    int n = 0;
    char err[256] = "";
    ck_assert_msg(gm_queue_mysql.replay(st, count_row, &n, err, sizeof err) == 0, "replay: %s", err);
    ck_assert_int_eq(n, 2);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM `%s`", t_table);
    ck_assert_int_eq(my_int(c, sql), 4);
    mysql_close(c);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* A record the server refuses (a function name longer than the column,
   in strict mode) fails the whole batch, leaves nothing behind, and the
   backend stays up (alive(): the persistence thread retries record by
   record). */
START_TEST(test_mysql_failed_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    struct gm_qrecord first[] = {rec_counter(100), rec_add_s("H:test:1", "f", "a", "one", 1)};
    bk_write(&BK_MY, st, first, 2);
    char *long_fn = repeated('f', 5000);
    struct gm_qrecord bad[] = {rec_done("H:test:1"), rec_add_s("H:test:2", "f", "b", "two", 1),
                               rec_add_s("H:test:3", long_fn, "c", "three", 1), rec_counter(200)};
    char err[256] = "";
    ck_assert_int_eq(gm_queue_mysql.write_batch(st, bad, 4, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "function_name") != NULL, "reason: %s", err);
    ck_assert_msg(gm_queue_mysql.alive(st), "alive() false after a refused record");
    free(long_fn);
    /* as expect_failed_batch_leaves_nothing(), which cannot show err */
    ck_assert_uint_eq(bk_counter(&BK_MY, st), 100);
    struct gm_qrecord next = rec_add_s("H:test:4", "f", "d", "after", 1);
    bk_write(&BK_MY, st, &next, 1);
    const char *want[] = {"H:test:1", "H:test:4"};
    st = expect_reopen_replay(&BK_MY, st, &o, want, 2, NULL);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* A job larger than the server's max_allowed_packet fails its batch with
   a message, nothing of the batch is stored, the backend stays up, and
   the next batch works (gearmand 1.1.20 retried such a packet forever,
   its issue 126). */
START_TEST(test_mysql_job_larger_than_max_allowed_packet_fails_alone)
{
    MYSQL *c = my_admin();
    my_exec(c, "SET GLOBAL max_allowed_packet = 1048576");
    mysql_close(c);
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    struct gm_qrecord first[] = {rec_counter(100), rec_add_s("H:test:1", "f", "a", "one", 1)};
    bk_write(&BK_MY, st, first, 2);
    char *big = repeated('x', 2 * MIB);
    struct gm_qrecord bad[] = {rec_add_s("H:test:2", "f", "b", "two", 1),
                               rec_add("H:test:3", "f", "c", 1, big, 2 * MIB, 1, 0), rec_counter(200)};
    char err[256] = "";
    int rc = gm_queue_mysql.write_batch(st, bad, 3, err, sizeof err);
    bool alive = gm_queue_mysql.alive(st);
    /* many small jobs still fit: they go out in more than one query */
    struct gm_qrecord *many = calloc(3000, sizeof *many);
    char (*handles)[32] = calloc(3000, 32);
    char *data = repeated('d', 1000);
    for (int i = 0; i < 3000; i++) {
        snprintf(handles[i], 32, "H:test:%d", 1000 + i);
        many[i] = rec_add(handles[i], "f", "", 0, data, 1000, 1, 0);
    }
    char err2[256] = "";
    int rc_many = gm_queue_mysql.write_batch(st, many, 3000, err2, sizeof err2);
    c = my_admin();
    my_exec(c, "SET GLOBAL max_allowed_packet = 16777216");
    mysql_close(c);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err, "max_allowed_packet") != NULL, "reason: %s", err);
    ck_assert_msg(alive, "alive() false after a job too big");
    ck_assert_msg(rc_many == 0, "3000 jobs of 1000 bytes: %s", err2);
    struct rows rs;
    st = bk_reopen_replay(&BK_MY, st, &o, &rs);
    ck_assert_uint_eq(rs.n, 3001);
    ck_assert_str_eq(rs.r[0].handle, "H:test:1");
    ck_assert_str_eq(rs.r[3000].handle, "H:test:3999");
    rows_free(&rs);
    ck_assert_uint_eq(bk_counter(&BK_MY, st), 100);
    free(big);
    free(many);
    free(handles);
    free(data);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

static void
run_cmd(const char *var, char *msg, size_t len)
{
    const char *cmd = getenv(var);
    if (!cmd || !*cmd)
        snprintf(msg, len, "%s is not set: run tests/unit/check_queue_mysql.sh", var);
    else if (system(cmd) != 0)
        snprintf(msg, len, "%s failed: %s", var, cmd);
}

/* After a case that stops the server: it runs again whatever happened. */
static void
my_ensure_started(void)
{
    const char *v = getenv("GM_TEST_MYSQL");
    if (!v)
        return;
    MYSQL *c = mysql_init(NULL);
    my_server();
    if (!mysql_real_connect(c, t_host, "gearman", "gearman", "gearman", (unsigned)atoi(t_port), NULL, 0)) {
        char msg[256] = "";
        run_cmd("GM_TEST_MYSQL_START", msg, sizeof msg);
    }
    mysql_close(c);
}

/* The server killed (kill -9) between two batches: the write fails in
   bounded time with a reason, reconnect() fails while it is down and
   works once it is back, and the next batch is stored. */
START_TEST(test_mysql_write_fails_while_the_server_is_down_and_reconnect_restores_it)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_MY, st, &before, 1);
    char stop_msg[256] = "", start_msg[256] = "", err_down[256] = "", err_rc_down[256] = "",
         err_rc_up[256] = "", err_after[256] = "";
    run_cmd("GM_TEST_MYSQL_STOP", stop_msg, sizeof stop_msg);
    struct gm_qrecord during = rec_add_s("H:test:2", "f", "b", "during", 1);
    double t0 = now_s();
    int rc_down = gm_queue_mysql.write_batch(st, &during, 1, err_down, sizeof err_down);
    double write_took = now_s() - t0;
    bool alive_down = gm_queue_mysql.alive(st);
    int rc_reconnect_down = gm_queue_mysql.reconnect(st, err_rc_down, sizeof err_rc_down);
    run_cmd("GM_TEST_MYSQL_START", start_msg, sizeof start_msg);
    int rc_reconnect_up = -1;
    for (int i = 0; i < 50 && rc_reconnect_up != 0; i++) {
        rc_reconnect_up = gm_queue_mysql.reconnect(st, err_rc_up, sizeof err_rc_up);
        if (rc_reconnect_up != 0)
            sleep_ms(100);
    }
    struct gm_qrecord after = rec_add_s("H:test:3", "f", "c", "after", 1);
    int rc_after = rc_reconnect_up == 0 ? gm_queue_mysql.write_batch(st, &after, 1, err_after, sizeof err_after)
                                        : -1;

    ck_assert_msg(stop_msg[0] == '\0', "%s", stop_msg);
    ck_assert_msg(start_msg[0] == '\0', "%s", start_msg);
    ck_assert_msg(rc_down == -1, "write_batch succeeded with MariaDB killed");
    ck_assert_msg(err_down[0] != '\0', "write_batch failed without a reason");
    ck_assert_msg(write_took < 20.0, "write_batch took %.1fs to fail", write_took);
    ck_assert_msg(!alive_down, "alive() with the server gone");
    ck_assert_msg(rc_reconnect_down == -1, "reconnect succeeded with MariaDB killed");
    ck_assert_msg(rc_reconnect_up == 0, "reconnect after the restart failed: %s", err_rc_up);
    ck_assert_msg(rc_after == 0, "write_batch after reconnect failed: %s", err_after);
    const char *want[] = {"H:test:1", "H:test:3"};
    const struct gm_qrecord kept[] = {before, after};
    st = expect_reopen_replay(&BK_MY, st, &o, want, 2, kept);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* The backend's connection killed by the server (KILL, a wait_timeout):
   the next batch fails, the backend is down, and reconnect() restores it
   (never libmariadb's own reconnect in the middle of a transaction). */
START_TEST(test_mysql_connection_killed_by_the_server_fails_a_batch_and_reconnect_restores_it)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_MY, st, &before, 1);
    MYSQL *c = my_admin();
    /* every other connection of the gearman user: the backend's */
    ck_assert_int_eq(mysql_query(c, "SELECT id FROM information_schema.processlist WHERE user = 'gearman' "
                                    "AND id <> CONNECTION_ID()"),
                     0);
    MYSQL_RES *r = mysql_store_result(c);
    MYSQL_ROW row;
    int killed = 0;
    long long ids[16];
    while ((row = mysql_fetch_row(r)) && killed < 16)
        ids[killed++] = atoll(row[0]);
    mysql_free_result(r);
    for (int i = 0; i < killed; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "KILL CONNECTION %lld", ids[i]);
        mysql_query(c, sql);
    }
    mysql_close(c);
    ck_assert_int_ge(killed, 1);
    struct gm_qrecord during = rec_add_s("H:test:2", "f", "b", "during", 1);
    char err[256] = "", err_rc[256] = "";
    /* a connection idle for a second is checked before a batch (and
       replaced): then the batch works; else it fails and reconnect()
       restores the backend */
    bool stored = gm_queue_mysql.write_batch(st, &during, 1, err, sizeof err) == 0;
    if (!stored) {
        ck_assert_msg(!gm_queue_mysql.alive(st), "alive() after the connection was killed (%s)", err);
        ck_assert_msg(gm_queue_mysql.reconnect(st, err_rc, sizeof err_rc) == 0, "reconnect: %s", err_rc);
    }
    struct gm_qrecord after = rec_add_s("H:test:3", "f", "c", "after", 1);
    bk_write(&BK_MY, st, &after, 1);
    const char *want2[] = {"H:test:1", "H:test:2", "H:test:3"}, *want1[] = {"H:test:1", "H:test:3"};
    st = expect_reopen_replay(&BK_MY, st, &o, stored ? want2 : want1, stored ? 3 : 2, NULL);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* A batch waiting on a lock is given up after the client's deadline
   (shortened here to 2 s); the session on the server still waits for the
   lock, with the batch.  reconnect() must end that session before the
   persistence thread writes the DONE of the refused job: else, once the
   lock goes, the old session would commit the job after its DONE, and a
   job whose submitter got QUEUE_ERROR would be replayed. */
START_TEST(test_mysql_session_given_up_is_ended_before_the_reconnect_writes_on)
{
    struct gm_queue_options o;
    my_fresh(&o);
    gm_queue_opt_set(&o, "mysql-answer-timeout", "2");
    void *st = bk_open(&BK_MY, &o);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_MY, st, &before, 1);
    /* another session holds the lock on H:test:3, the first row of the
       batch's INSERT: the batch waits before it writes H:test:2 */
    MYSQL *locker = my_admin();
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO `%s` (job_handle, function_name, priority) VALUES ('H:test:3', 'f', 1)", t_table);
    my_exec(locker, sql);
    struct gm_qrecord during[] = {rec_add_s("H:test:3", "f", "c", "during", 1),
                                  rec_add_s("H:test:2", "f", "b", "during", 1)};
    char err_w[256] = "", err_rc[256] = "", err_done[256] = "";
    double t0 = now_s();
    int rc_w = gm_queue_mysql.write_batch(st, during, 2, err_w, sizeof err_w);
    double took = now_s() - t0;
    bool alive = gm_queue_mysql.alive(st);
    int rc_rc = gm_queue_mysql.reconnect(st, err_rc, sizeof err_rc);
    struct gm_qrecord done = rec_done("H:test:2");
    int rc_done = rc_rc == 0 ? gm_queue_mysql.write_batch(st, &done, 1, err_done, sizeof err_done) : -1;
    my_exec(locker, "ROLLBACK"); /* the lock goes: an old session still there would commit now */
    mysql_close(locker);
    sleep_ms(300);

    ck_assert_msg(rc_w == -1, "write_batch succeeded under the lock");
    ck_assert_msg(took < 8.0, "write_batch took %.1f s to fail (the client's deadline is 2 s)", took);
    ck_assert_msg(!alive, "alive() after a batch with no answer");
    ck_assert_msg(rc_rc == 0, "reconnect failed: %s", err_rc);
    ck_assert_msg(rc_done == 0, "writing the DONE after reconnect failed: %s", err_done);
    const char *want[] = {"H:test:1"}; /* the refused job was not committed after its DONE */
    st = expect_reopen_replay(&BK_MY, st, &o, want, 1, NULL);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* The server closes a connection idle past its wait_timeout (8 h by
   default; 1 s here): the next batch must not fail for it (its jobs would
   be refused with the database fine): the idle connection is checked and
   replaced first. */
START_TEST(test_mysql_connection_closed_while_idle_does_not_fail_the_next_batch)
{
    MYSQL *c = my_admin();
    my_exec(c, "SET GLOBAL wait_timeout = 1");
    mysql_close(c);
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MY, &o);
    struct gm_qrecord first = rec_add_s("H:test:1", "f", "a", "first", 1);
    char err1[256] = "", err2[256] = "";
    int rc1 = gm_queue_mysql.write_batch(st, &first, 1, err1, sizeof err1);
    sleep_ms(2500); /* the server closes the session */
    struct gm_qrecord second = rec_add_s("H:test:2", "f", "b", "second", 1);
    int rc2 = gm_queue_mysql.write_batch(st, &second, 1, err2, sizeof err2);
    c = my_admin();
    my_exec(c, "SET GLOBAL wait_timeout = 28800");
    mysql_close(c);
    ck_assert_msg(rc1 == 0, "first batch: %s", err1);
    ck_assert_msg(rc2 == 0, "the batch after an idle pause failed: %s", err2);
    const char *want[] = {"H:test:1", "H:test:2"};
    st = expect_reopen_replay(&BK_MY, st, &o, want, 2, NULL);
    bk_finish(&BK_MY, st, &o);
}
END_TEST

/* open() with err, for a start-up that must fail. */
static void
expect_open_fails(struct gm_queue_options *o, const char *needle)
{
    char err[512] = "";
    void *st = gm_queue_mysql.open(o, err, sizeof err);
    if (st)
        gm_queue_mysql.close(st);
    ck_assert_msg(st == NULL, "open succeeded, expected an error naming %s", needle);
    ck_assert_msg(strstr(err, needle) != NULL, "the error does not name %s: %s", needle, err);
}

START_TEST(test_mysql_open_errors_name_the_option)
{
    struct gm_queue_options o;
    my_fresh(&o);
    char port[16];
    snprintf(port, sizeof port, "%d", closed_port());
    gm_queue_opt_set(&o, "mysql-port", port);
    expect_open_fails(&o, "--mysql-host/--mysql-port");

    my_fresh(&o);
    gm_queue_opt_set(&o, "mysql-password", "wrong");
    expect_open_fails(&o, "--mysql-user/--mysql-password");

    my_fresh(&o);
    gm_queue_opt_set(&o, "mysql-db", "no_such_db");
    expect_open_fails(&o, "--mysql-db");

    my_fresh(&o);
    gm_queue_opt_set(&o, "mysql-db", NULL);
    expect_open_fails(&o, "--mysql-db");
}
END_TEST

#define ADD_RESTORING(s, t, restore) add_restoring((s), #t, t, (restore))

static void
add_restoring(Suite *s, const char *name, const TTest *t, SFun restore)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, NULL, restore);
    tcase_add_test(tc, t);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
}
#endif /* HAVE_LIBMARIADB */

int
main(void)
{
    Suite *s = suite_create("queue_mysql");
#ifdef HAVE_LIBMARIADB
    ADD(s, test_mysql_open_creates_an_innodb_table);
    ADD_BACKEND_CASES(s, mysql);
    ADD(s, test_mysql_gearmand_1_1_20_table_is_migrated_by_open);
    ADD(s, test_mysql_rows_that_cannot_be_replayed_are_kept_and_the_rest_replays);
    ADD(s, test_mysql_failed_batch_writes_nothing_and_the_next_one_works);
    ADD(s, test_mysql_job_larger_than_max_allowed_packet_fails_alone);
    ADD_RESTORING(s, test_mysql_write_fails_while_the_server_is_down_and_reconnect_restores_it, my_ensure_started);
    ADD(s, test_mysql_connection_killed_by_the_server_fails_a_batch_and_reconnect_restores_it);
    ADD(s, test_mysql_session_given_up_is_ended_before_the_reconnect_writes_on);
    ADD(s, test_mysql_connection_closed_while_idle_does_not_fail_the_next_batch);
    ADD(s, test_mysql_open_errors_name_the_option);
#else
    queue_add_missing_backend(s);
#endif
    return queue_main(s);
}
