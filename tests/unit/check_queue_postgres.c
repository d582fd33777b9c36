/*
 * check_queue_postgres.c: unit tests for the PostgreSQL queue backend
 * (gm_queue_postgres, through its vtable) against a throwaway PostgreSQL
 * server: the cases every backend passes (queue_backend_cases.c), and
 * PostgreSQL's own: the table it creates, migrating gearmand 1.1.20's
 * table, a failed batch, and the server going away, stopping answering or
 * holding a lock (issue 12.5): writes fail in bounded time and reconnect()
 * restores the backend.
 *
 * Run by tests/unit/check_queue_postgres.sh, which starts the server
 * (tests/lib/with_services.py) and names it in GM_TEST_PG_CONNINFO, with
 * GM_TEST_PG_STOP / GM_TEST_PG_START (shell commands that stop and start
 * it) for the outage case.  When a variable is missing the cases that need
 * it FAIL, not skip: CI always provides the services.
 */
#include "config.h"

#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif

#include "plugins/queue/backends.h"
#include "tests/unit/queue_harness.h"

#ifdef HAVE_LIBPQ

static char t_table[64];

static const char *
pg_conninfo(void)
{
    return service_env("GM_TEST_PG_CONNINFO", "PostgreSQL", "check_queue_postgres.sh");
}

static PGconn *
pg_admin(void)
{
    PGconn *c = PQconnectdb(pg_conninfo());
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connecting to %s: %s", pg_conninfo(),
                  PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static void
pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    ck_assert_msg(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQerrorMessage(c));
    PQclear(r);
}

static long long
pg_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", sql,
                  PQerrorMessage(c));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void
pg_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_table, sizeof t_table, "gmq_%d_%u", (int)getpid(), name_seq);
    PGconn *c = pg_admin();
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS \"%s\"", t_table);
    pg_exec(c, sql);
    PQfinish(c);
    gm_queue_opt_set(o, "libpq-conninfo", pg_conninfo());
    gm_queue_opt_set(o, "libpq-table", t_table);
}

static void
pg_cleanup(const struct gm_queue_options *o)
{
    PGconn *c = pg_admin();
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS \"%s\"", gm_queue_opt(o, "libpq-table"));
    pg_exec(c, sql);
    PQfinish(c);
}

static const struct bk BK_PG = {"postgres", &gm_queue_postgres, pg_fresh, pg_cleanup, MIB};

BACKEND_CASES(postgres, BK_PG)

static bool
pg_has_column(PGconn *c, const char *table, const char *column)
{
    const char *params[2] = {table, column};
    PGresult *r = PQexecParams(c,
                               "SELECT count(*) FROM information_schema.columns WHERE "
                               "table_name = $1 AND column_name = $2",
                               2, NULL, params, NULL, NULL, 0);
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    bool yes = atoi(PQgetvalue(r, 0, 0)) == 1;
    PQclear(r);
    return yes;
}

START_TEST(test_postgres_open_creates_the_table)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_PG, &o);
    PGconn *c = pg_admin();
    static const char *const cols[] = {"unique_key", "function_name", "priority", "data",
                                       "when_to_run", "job_handle"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        ck_assert_msg(pg_has_column(c, t_table, cols[i]), "no column %s in %s", cols[i], t_table);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM \"%s\"", t_table);
    ck_assert_int_eq(pg_int(c, sql), 0);
    PQfinish(c);
    gm_queue_postgres.close(st);
    /* opening an existing table again is fine */
    st = bk_open(&BK_PG, &o);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

/* A table of ours made before the lifecycle column existed gets it when
   opened, and keeps its rows; one that has it is not altered (an ALTER's
   exclusive lock would stop the writes of a --ha pair's active server). */
START_TEST(test_postgres_table_without_the_lifecycle_column_gets_it_and_keeps_its_rows)
{
    struct gm_queue_options o;
    pg_fresh(&o);
    PGconn *c = pg_admin();
    char sql[400];
    snprintf(sql, sizeof sql,
             "CREATE TABLE \"%s\" (unique_key TEXT, function_name TEXT, priority INTEGER, data BYTEA, "
             "when_to_run BIGINT, job_handle TEXT PRIMARY KEY, seq BIGSERIAL)", t_table);
    pg_exec(c, sql);
    snprintf(sql, sizeof sql,
             "INSERT INTO \"%s\" (unique_key, function_name, priority, data, when_to_run, job_handle) "
             "VALUES ('u', 'f', 1, 'old', 0, 'H:old:1')", t_table);
    pg_exec(c, sql);
    void *st = bk_open(&BK_PG, &o);
    ck_assert(pg_has_column(c, t_table, "lifecycle"));
    struct rows rs = {0};
    bk_replay(&BK_PG, st, &rs);
    static const char *const want[] = {"H:old:1"};
    expect_handles(&rs, want, 1);
    rows_free(&rs);
    gm_queue_postgres.close(st);
    /* opened again: no ALTER (a table lock held elsewhere would make one wait) */
    PGconn *holder = pg_admin();
    pg_exec(holder, "BEGIN");
    snprintf(sql, sizeof sql, "LOCK TABLE \"%s\" IN ACCESS SHARE MODE", t_table);
    pg_exec(holder, sql);
    char ci[512];
    snprintf(ci, sizeof ci, "%s options='-c lock_timeout=1s'", pg_conninfo());
    struct gm_queue_options o2 = o;
    gm_queue_opt_set(&o2, "libpq-conninfo", ci);
    st = bk_open(&BK_PG, &o2);
    pg_exec(holder, "ROLLBACK");
    PQfinish(holder);
    PQfinish(c);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

/* Inserts a row the way gearmand 1.1.20's add does (data as binary BYTEA). */
static void
pg_insert_1_1_20(PGconn *c, const char *table, const struct gm_qrecord *r)
{
    char sql[256], prio[12], when[24];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (priority, unique_key, function_name, data, when_to_run) "
             "VALUES($1,$2,$3,$4::BYTEA,$5)",
             table);
    snprintf(prio, sizeof prio, "%d", r->priority);
    snprintf(when, sizeof when, "%lld", (long long)r->when);
    char *u = dup_bytes(r->unique, r->unique_len), *f = dup_bytes(r->function, r->function_len);
    const char *v[5] = {prio, u, f, r->data, when};
    int len[5] = {0, 0, 0, (int)r->data_len, 0};
    int fmt[5] = {0, 0, 0, 1, 0};
    PGresult *res = PQexecParams(c, sql, 5, NULL, v, len, fmt, 0);
    ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(res);
    free(u);
    free(f);
}

START_TEST(test_postgres_gearmand_1_1_20_table_is_migrated_by_open)
{
    struct gm_queue_options o;
    pg_fresh(&o);
    o.handle_prefix = "H:old";
    PGconn *c = pg_admin();
    char sql[512];
    /* gearmand 1.1.20's table, exactly (reference section 5.4) */
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s (unique_key VARCHAR(64), function_name VARCHAR(255), "
             "priority INTEGER, data BYTEA, when_to_run INTEGER, UNIQUE (unique_key, function_name))",
             t_table);
    pg_exec(c, sql);
    char *bin = binary_payload(300);
    struct gm_qrecord old[] = {
        rec_add("H:old:1", "reverse", "u1", 2, "first", 5, 0, 0),
        rec_add("H:old:2", "reverse", "u2", 2, bin, 300, 2, 0),
        rec_add("H:old:3", "resize", "", 0, "", 0, 1, 2000000000),
        rec_add("H:old:4", "resize", "u1", 2, "last\0", 5, 1, 1700000000),
    };
    for (size_t i = 0; i < 4; i++)
        pg_insert_1_1_20(c, t_table, &old[i]);
    void *st = bk_open(&BK_PG, &o);
    const char *want[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4"};
    expect_replay(&BK_PG, st, want, 4, old);
    ck_assert(pg_has_column(c, t_table, "job_handle"));
    /* the (unique, function) constraint is gone: a twin is stored, and a
       run time past 2038 fits */
    struct gm_qrecord more[] = {
        rec_add_s("H:test:9", "reverse", "u1", "twin", 1),
        rec_add("H:test:10", "resize", "", 0, "far", 3, 2, FAR_FUTURE),
    };
    bk_write(&BK_PG, st, more, 2);
    struct rows rs;
    st = bk_reopen_replay(&BK_PG, st, &o, &rs);
    const char *want2[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4", "H:test:9", "H:test:10"};
    expect_handles(&rs, want2, 6);
    expect_row(&rs.r[5], &more[1]);
    rows_free(&rs);
    PQfinish(c);
    free(bin);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

START_TEST(test_postgres_failed_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_PG, &o);
    struct gm_qrecord keep[] = {rec_counter(100), rec_add_s("H:test:1", "f", "a", "kept", 1)};
    bk_write(&BK_PG, st, keep, 2);
    PGconn *c = pg_admin();
    char sql[256];
    snprintf(sql, sizeof sql, "ALTER TABLE \"%s\" ADD CONSTRAINT no_boom CHECK (function_name <> 'boom')",
             t_table);
    pg_exec(c, sql);
    struct gm_qrecord bad[] = {
        rec_add_s("H:test:2", "f", "b", "first of a doomed batch", 1),
        rec_counter(200),
        rec_done("H:test:1"),
        rec_add_s("H:test:3", "boom", "c", "refused", 1),
        rec_add_s("H:test:5", "f", "e", "after the refused one", 1),
    };
    st = expect_failed_batch_leaves_nothing(&BK_PG, st, &o, bad, 5);
    PQfinish(c);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

static void
run_cmd(const char *what, char *msg, size_t msglen)
{
    const char *cmd = getenv(what);
    if (!cmd || !*cmd) {
        snprintf(msg, msglen, "%s is not set: run tests/unit/check_queue_postgres.sh", what);
        return;
    }
    char line[4096];
    snprintf(line, sizeof line, "%s >/dev/null 2>&1", cmd);
    int rc = system(line);
    if (rc != 0)
        snprintf(msg, msglen, "%s failed (%d): %s", what, rc, cmd);
}

/* In the parent, after the outage case: PostgreSQL is up whatever happened. */
static void
pg_ensure_started(void)
{
    char msg[256] = "";
    run_cmd("GM_TEST_PG_START", msg, sizeof msg); /* fails harmlessly if running */
}

START_TEST(test_postgres_write_fails_while_the_server_is_down_and_reconnect_restores_it)
{
    struct gm_queue_options o;
    pg_fresh(&o);
    ck_assert_msg(getenv("GM_TEST_PG_STOP") && getenv("GM_TEST_PG_START"),
                  "GM_TEST_PG_STOP / GM_TEST_PG_START are not set: run tests/unit/check_queue_postgres.sh");
    void *st = bk_open(&BK_PG, &o);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_PG, st, &before, 1);

    /* Everything below runs before any assertion, so the server is
       started again even when the backend misbehaves. */
    char stop_msg[256] = "", start_msg[256] = "", err_down[256] = "", err_rc_down[256] = "",
         err_rc_up[256] = "", err_after[256] = "";
    run_cmd("GM_TEST_PG_STOP", stop_msg, sizeof stop_msg);
    struct gm_qrecord during = rec_add_s("H:test:2", "f", "b", "during", 1);
    double t0 = now_s();
    int rc_down = gm_queue_postgres.write_batch(st, &during, 1, err_down, sizeof err_down);
    double write_took = now_s() - t0;
    int rc_reconnect_down = gm_queue_postgres.reconnect(st, err_rc_down, sizeof err_rc_down);
    run_cmd("GM_TEST_PG_START", start_msg, sizeof start_msg);
    int rc_reconnect_up = -1;
    for (int i = 0; i < 50 && rc_reconnect_up != 0; i++) {
        rc_reconnect_up = gm_queue_postgres.reconnect(st, err_rc_up, sizeof err_rc_up);
        if (rc_reconnect_up != 0)
            sleep_ms(100);
    }
    struct gm_qrecord after = rec_add_s("H:test:3", "f", "c", "after", 1);
    int rc_after = rc_reconnect_up == 0
                       ? gm_queue_postgres.write_batch(st, &after, 1, err_after, sizeof err_after)
                       : -1;

    ck_assert_msg(stop_msg[0] == '\0', "%s", stop_msg);
    ck_assert_msg(start_msg[0] == '\0', "%s", start_msg);
    ck_assert_msg(rc_down == -1, "write_batch succeeded with PostgreSQL stopped");
    ck_assert_msg(err_down[0] != '\0', "write_batch failed without a reason");
    ck_assert_msg(write_took < 10.0, "write_batch took %.1fs to fail", write_took);
    ck_assert_msg(rc_reconnect_down == -1, "reconnect succeeded with PostgreSQL stopped");
    ck_assert_msg(rc_reconnect_up == 0, "reconnect after the restart failed: %s", err_rc_up);
    ck_assert_msg(rc_after == 0, "write_batch after reconnect failed: %s", err_after);
    const char *want[] = {"H:test:1", "H:test:3"};
    const struct gm_qrecord kept[] = {before, after};
    st = expect_reopen_replay(&BK_PG, st, &o, want, 2, kept);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

START_TEST(test_postgres_open_with_no_server_fails_with_a_message)
{
    struct gm_queue_options o;
    fresh_common(&o);
    char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5",
             closed_port());
    gm_queue_opt_set(&o, "libpq-conninfo", ci);
    char err[256] = "";
    void *st = gm_queue_postgres.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open with nothing listening succeeded");
    ck_assert_msg(err[0] != '\0', "no message");
}
END_TEST
/* The pid of the one backend whose application_name is `app`. */
static int
pg_backend_pid_of(const char *app)
{
    PGconn *c = pg_admin();
    const char *v[1] = {app};
    PGresult *r = PQexecParams(c, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", 1, NULL, v,
                               NULL, NULL, 0);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%d backends named %s: %s",
                  PQntuples(r), app, PQerrorMessage(c));
    int pid = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return pid;
}

/* In the parent, after a case that stops a backend: every backend of the
   server runs again whatever happened. */
static void
pg_resume_backends(void)
{
    const char *ci = getenv("GM_TEST_PG_CONNINFO");
    PGconn *c = PQconnectdb(ci ? ci : "");
    PGresult *r = PQexec(c, "SELECT pid FROM pg_stat_activity");
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
        kill(atoi(PQgetvalue(r, i, 0)), SIGCONT);
    PQclear(r);
    PQfinish(c);
}

/* Opens the backend on a fresh table with `extra` added to the conninfo. */
static void *
pg_open_with(struct gm_queue_options *o, char *conninfo, size_t len, const char *extra)
{
    pg_fresh(o);
    snprintf(conninfo, len, "%s %s", pg_conninfo(), extra);
    gm_queue_opt_set(o, "libpq-conninfo", conninfo);
    return bk_open(&BK_PG, o);
}

/* Issue 12.5: the backend serving the queue stops answering in the middle
   of a batch (SIGSTOP: the kernel still takes the bytes).  write_batch used
   to wait for it forever.  Now it fails within the deadline (15 s) and the
   backend is down.  The old backend, woken up later, must not commit the
   refused batch after the DONEs that remove its jobs were written (the job
   would be replayed though its submitter got QUEUE_ERROR). */
START_TEST(test_postgres_write_to_a_backend_that_stops_answering_fails_in_bounded_time_and_never_commits_later)
{
    struct gm_queue_options o;
    char conninfo[512], app[64];
    snprintf(app, sizeof app, "gm_stall_%d", (int)getpid());
    char extra[96];
    snprintf(extra, sizeof extra, "application_name=%s", app);
    void *st = pg_open_with(&o, conninfo, sizeof conninfo, extra);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_PG, st, &before, 1);
    int pid = pg_backend_pid_of(app);

    /* Everything below runs before any assertion, so the backend runs
       again even when ours misbehaves (pg_resume_backends runs after the
       case too).  It does what the persistence thread does: after the
       failed batch, reconnect with backoff, and once connected write the
       DONEs of the refused jobs. */
    char err_w[256] = "", err_rc[256] = "", err_done[256] = "";
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    struct gm_qrecord during = rec_add_s("H:test:2", "f", "b", "during", 1);
    double t0 = now_s();
    int rc_w = gm_queue_postgres.write_batch(st, &during, 1, err_w, sizeof err_w);
    double took = now_s() - t0;
    bool alive = gm_queue_postgres.alive(st);
    struct gm_qrecord done = rec_done("H:test:2");
    int rc_rc = gm_queue_postgres.reconnect(st, err_rc, sizeof err_rc); /* the old backend still stopped */
    int rc_done = rc_rc == 0 ? gm_queue_postgres.write_batch(st, &done, 1, err_done, sizeof err_done) : 1;
    kill(pid, SIGCONT);
    for (int i = 0; i < 50 && rc_rc != 0; i++) {
        sleep_ms(100);
        rc_rc = gm_queue_postgres.reconnect(st, err_rc, sizeof err_rc);
    }
    if (rc_done == 1 && rc_rc == 0)
        rc_done = gm_queue_postgres.write_batch(st, &done, 1, err_done, sizeof err_done);
    sleep_ms(300); /* the old backend, running again, does what it does */

    ck_assert_msg(rc_w == -1, "write_batch succeeded with the backend stopped");
    ck_assert_msg(took < 20.0, "write_batch took %.1f s to fail", took);
    ck_assert_msg(strstr(err_w, "no answer from PostgreSQL") != NULL, "reason: %s", err_w);
    ck_assert_msg(!alive, "alive() after a batch with no answer");
    ck_assert_msg(rc_rc == 0, "reconnect failed: %s", err_rc);
    ck_assert_msg(rc_done == 0, "writing the DONE after reconnect failed: %s", err_done);
    const char *want[] = {"H:test:1"}; /* the refused job was not committed after its DONE */
    st = expect_reopen_replay(&BK_PG, st, &o, want, 1, NULL);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

/* Writes one job while another session holds an ACCESS EXCLUSIVE lock on
   the table; *took gets how long write_batch took, err why it failed.
   Returns what write_batch returned and, in *alive, what alive() said. */
static int
pg_write_under_lock(void *st, const struct gm_queue_options *o, double *took, bool *alive, char *err,
                    size_t errlen)
{
    PGconn *admin = pg_admin();
    char sql[160];
    snprintf(sql, sizeof sql, "LOCK TABLE \"%s\" IN ACCESS EXCLUSIVE MODE", gm_queue_opt(o, "libpq-table"));
    pg_exec(admin, "BEGIN");
    pg_exec(admin, sql);
    struct gm_qrecord during = rec_add_s("H:test:2", "f", "b", "during", 1);
    double t0 = now_s();
    int rc = gm_queue_postgres.write_batch(st, &during, 1, err, errlen);
    *took = now_s() - t0;
    *alive = gm_queue_postgres.alive(st);
    pg_exec(admin, "ROLLBACK");
    PQfinish(admin);
    return rc;
}

/* Issue 12.5: a lock held on the queue table used to make write_batch
   wait for as long as it was held.  statement_timeout (10 s) now ends the
   batch; the backend is down (a lock is no bad record: retrying the batch
   record by record would wait as long again for each), and reconnect()
   restores it once the lock is gone. */
START_TEST(test_postgres_write_waiting_on_a_table_lock_fails_at_statement_timeout_and_reconnect_restores_it)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_PG, &o);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_PG, st, &before, 1);
    double took;
    bool alive;
    char err[256] = "", err_rc[256] = "";
    int rc = pg_write_under_lock(st, &o, &took, &alive, err, sizeof err);
    ck_assert_msg(rc == -1, "write_batch succeeded under the lock");
    ck_assert_msg(took > 8.0 && took < 14.0, "write_batch failed after %.1f s", took);
    ck_assert_msg(strstr(err, "statement timeout") != NULL, "reason: %s", err);
    ck_assert_msg(!alive, "alive() after a statement timeout");
    ck_assert_msg(gm_queue_postgres.reconnect(st, err_rc, sizeof err_rc) == 0, "reconnect: %s", err_rc);
    struct gm_qrecord after = rec_add_s("H:test:3", "f", "c", "after", 1);
    bk_write(&BK_PG, st, &after, 1);
    const char *want[] = {"H:test:1", "H:test:3"};
    st = expect_reopen_replay(&BK_PG, st, &o, want, 2, NULL);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

/* A statement_timeout given in --libpq-conninfo is kept (ours is only the
   default).  A guard on that rule: it holds before issue 12.5 too. */
START_TEST(test_postgres_statement_timeout_given_in_the_conninfo_wins)
{
    struct gm_queue_options o;
    char conninfo[512];
    void *st = pg_open_with(&o, conninfo, sizeof conninfo, "options='-c statement_timeout=1s'");
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_PG, st, &before, 1);
    double took;
    bool alive;
    char err[256] = "";
    int rc = pg_write_under_lock(st, &o, &took, &alive, err, sizeof err);
    ck_assert_msg(rc == -1, "write_batch succeeded under the lock");
    ck_assert_msg(took < 5.0, "write_batch failed after %.1f s, not at the 1 s asked for", took);
    ck_assert_msg(strstr(err, "statement timeout") != NULL, "reason: %s", err);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

/* --ha: lead() until it answers want, for up to `seconds` (a session that
   ends frees its lock as its backend exits, a moment later). */
static int
pg_lead_until(void *st, int want, double seconds, char *err, size_t len)
{
    double end = now_s() + seconds;
    int rc;
    while ((rc = gm_queue_postgres.lead(st, err, len)) != want && now_s() < end)
        sleep_ms(50);
    return rc;
}

/* --ha: of the servers on one table, one session holds the lock; it
   stays held while that session lives (lead() checks it), and passes to
   another once the session ends.  Another table has a lock of its own. */
START_TEST(test_postgres_ha_lock_is_held_by_one_session_and_passes_on_when_it_ends)
{
    struct gm_queue_options o;
    pg_fresh(&o);
    gm_queue_opt_set(&o, "ha-timeout", "2");
    void *a = bk_open(&BK_PG, &o), *b = bk_open(&BK_PG, &o);
    char err[256] = "";
    ck_assert_int_eq(gm_queue_postgres.lead(a, err, sizeof err), 1);
    ck_assert_int_eq(gm_queue_postgres.lead(b, err, sizeof err), 0);
    ck_assert_int_eq(gm_queue_postgres.lead(a, err, sizeof err), 1);
    ck_assert_int_eq(gm_queue_postgres.lead(b, err, sizeof err), 0);

    struct gm_queue_options o2;
    pg_fresh(&o2);
    gm_queue_opt_set(&o2, "ha-timeout", "2");
    void *c = bk_open(&BK_PG, &o2);
    ck_assert_int_eq(gm_queue_postgres.lead(c, err, sizeof err), 1);
    bk_finish(&BK_PG, c, &o2);

    gm_queue_postgres.close(a);
    ck_assert_int_eq(pg_lead_until(b, 1, 5, err, sizeof err), 1);
    bk_finish(&BK_PG, b, &o);
}
END_TEST

/* --ha: opens the backend on a fresh table with --ha-timeout 2, its
   session named app_prefix_<pid> (written to app) for pg_stat_activity. */
static void *
pg_open_ha_named(struct gm_queue_options *o, char *conninfo, size_t len, const char *app_prefix, char app[64])
{
    char extra[96];
    snprintf(app, 64, "%s_%d", app_prefix, (int)getpid());
    snprintf(extra, sizeof extra, "application_name=%s", app);
    pg_fresh(o);
    gm_queue_opt_set(o, "ha-timeout", "2");
    snprintf(conninfo, len, "%s %s", pg_conninfo(), extra);
    gm_queue_opt_set(o, "libpq-conninfo", conninfo);
    return bk_open(&BK_PG, o);
}

/* --ha: the holder's session ended by the database (pg_terminate_backend)
   is seen as lost at the next check, and the lock is the other's; the
   holder, reconnected, no longer has it. */
START_TEST(test_postgres_ha_terminated_session_loses_the_lock_to_the_other)
{
    struct gm_queue_options o;
    char conninfo[512], app[64];
    void *a = pg_open_ha_named(&o, conninfo, sizeof conninfo, "gm_ha", app);
    struct gm_queue_options ob = o; /* b: the same table, another application_name */
    gm_queue_opt_set(&ob, "libpq-conninfo", pg_conninfo());
    void *b = bk_open(&BK_PG, &ob);
    char err[256] = "";
    ck_assert_int_eq(gm_queue_postgres.lead(a, err, sizeof err), 1);
    ck_assert_int_eq(gm_queue_postgres.lead(b, err, sizeof err), 0);

    PGconn *c = pg_admin();
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '%s'",
             app);
    pg_exec(c, sql);
    PQfinish(c);
    ck_assert_int_eq(pg_lead_until(a, -1, 5, err, sizeof err), -1);
    ck_assert_msg(err[0] != '\0', "a lost lock must say why");
    ck_assert(!gm_queue_postgres.alive(a));
    ck_assert_int_eq(pg_lead_until(b, 1, 5, err, sizeof err), 1);
    ck_assert_int_eq(gm_queue_postgres.reconnect(a, err, sizeof err), 0);
    ck_assert_int_eq(gm_queue_postgres.lead(a, err, sizeof err), 0);
    gm_queue_postgres.close(a);
    bk_finish(&BK_PG, b, &o);
}
END_TEST

/* --ha: a holder whose database stops answering (SIGSTOP: the kernel
   still acknowledges the bytes, as across a partition) gives the session
   up within --ha-timeout instead of the usual 15 s. */
START_TEST(test_postgres_ha_check_with_no_answer_fails_within_the_ha_timeout)
{
    struct gm_queue_options o;
    char conninfo[512], app[64];
    void *st = pg_open_ha_named(&o, conninfo, sizeof conninfo, "gm_hastop", app);
    char err[256] = "";
    ck_assert_int_eq(gm_queue_postgres.lead(st, err, sizeof err), 1);
    int pid = pg_backend_pid_of(app);
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    double t0 = now_s();
    int rc = gm_queue_postgres.lead(st, err, sizeof err);
    double took = now_s() - t0;
    kill(pid, SIGCONT);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(took < 5.0, "the check failed after %.1f s (--ha-timeout 2)", took);
    ck_assert_msg(strstr(err, "within 2 s") != NULL, "reason: %s", err);
    bk_finish(&BK_PG, st, &o);
}
END_TEST

/* Adds test t with restore, which runs in this process after the case
   (an unchecked fixture) whatever happened in the case's own process. */
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
#endif /* HAVE_LIBPQ */

int
main(void)
{
    Suite *s = suite_create("queue_postgres");
#ifdef HAVE_LIBPQ
    ADD(s, test_postgres_open_creates_the_table);
    ADD_BACKEND_CASES(s, postgres);
    ADD(s, test_postgres_gearmand_1_1_20_table_is_migrated_by_open);
    ADD(s, test_postgres_table_without_the_lifecycle_column_gets_it_and_keeps_its_rows);
    ADD(s, test_postgres_failed_batch_writes_nothing_and_the_next_one_works);
    ADD_RESTORING(s, test_postgres_write_fails_while_the_server_is_down_and_reconnect_restores_it,
                  pg_ensure_started);
    ADD(s, test_postgres_open_with_no_server_fails_with_a_message);
    ADD_RESTORING(s,
                  test_postgres_write_to_a_backend_that_stops_answering_fails_in_bounded_time_and_never_commits_later,
                  pg_resume_backends);
    ADD(s, test_postgres_write_waiting_on_a_table_lock_fails_at_statement_timeout_and_reconnect_restores_it);
    ADD(s, test_postgres_statement_timeout_given_in_the_conninfo_wins);
    ADD(s, test_postgres_ha_lock_is_held_by_one_session_and_passes_on_when_it_ends);
    ADD(s, test_postgres_ha_terminated_session_loses_the_lock_to_the_other);
    ADD_RESTORING(s, test_postgres_ha_check_with_no_answer_fails_within_the_ha_timeout, pg_resume_backends);
#else
    queue_add_missing_backend(s);
#endif
    return queue_main(s);
}
