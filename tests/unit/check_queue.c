/*
 * check_queue.c: unit tests for the durable queue backends (through their
 * vtables, libgearman-server/persist/queue_backend.h, against real storage) and for
 * the persistence thread (persist.h) over a fake in-memory backend.
 *
 * Backends: gm_queue_sqlite needs nothing but a temporary directory;
 * gm_queue_postgres and gm_queue_memcached need a running server, named by
 * GM_TEST_PG_CONNINFO (a libpq connection string) and GM_TEST_MEMCACHED
 * (host:port).  tests/unit/check_queue.sh starts a throwaway PostgreSQL
 * cluster and memcached (tests/lib/with_services.py) and sets them, with
 * GM_TEST_PG_STOP / GM_TEST_PG_START (shell commands that stop and start
 * that PostgreSQL) for the outage test.  When a variable is missing the
 * cases that need it FAIL, not skip: CI always provides the services, so a
 * missing one is a broken set-up, not a reason to test less.
 *
 * Every backend case runs on fresh storage of its own (a new sqlite file, a
 * new PostgreSQL table, a new memcached key prefix), writes with
 * write_batch(), closes, opens again (so what it reads back was really
 * committed) and replays.  Each case is its own TCase, so that the TAP line
 * carries its name; Check forks per case, so one crash fails one case.
 *
 * The persistence-thread cases play the dispatcher: they push struct
 * gm_prec records on the channel's ring, wake the thread, and read struct
 * gm_pack acknowledgements back; the fake backend records every batch it is
 * given and can be told to fail.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifdef HAVE_SQLITE3
#include <sqlite3.h>
#endif
#ifdef HAVE_LIBPQ
#include <libpq-fe.h>
#endif
#ifdef HAVE_LIBMEMCACHED
#include <libmemcached/memcached.h>
#endif

#include "libgearman-server/base/log.h"
#include "libgearman-server/persist/persist.h"
#include "libgearman-server/persist/queue_backend.h"
#include "plugins/queue/backends.h"
#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* Shared helpers                                                      */
/* ------------------------------------------------------------------ */

#define FAR_FUTURE INT64_C(253402300799) /* 9999-12-31T23:59:59Z, past 2038 */
#define MIB (1u << 20)

static char base_dir[256]; /* made by main(), removed after the run */
static unsigned name_seq;  /* fresh names within one process */

static void
quiet_logs(void)
{
    if (!getenv("GM_TEST_LOG"))
        gm_log_level = -1; /* many cases provoke errors on purpose */
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A TCP port on 127.0.0.1 that nothing listens on right now. */
static int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* One row as replay() reported it, copied. */
struct crow {
    char *handle, *function, *unique, *data;
    uint32_t handle_len, function_len, unique_len, data_len;
    int priority;
    int64_t when;
};

struct rows {
    struct crow *r;
    size_t n, cap;
};

static char *
dup_bytes(const char *p, size_t n)
{
    char *c = malloc(n + 1);
    ck_assert_ptr_nonnull(c);
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

static int
collect_row(void *arg, const struct gm_qrow *row)
{
    struct rows *rs = arg;
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 16;
        rs->r = realloc(rs->r, rs->cap * sizeof *rs->r);
        ck_assert_ptr_nonnull(rs->r);
    }
    struct crow *c = &rs->r[rs->n++];
    c->handle = dup_bytes(row->handle, row->handle_len);
    c->function = dup_bytes(row->function, row->function_len);
    c->unique = dup_bytes(row->unique, row->unique_len);
    c->data = dup_bytes(row->data, row->data_len);
    c->handle_len = row->handle_len;
    c->function_len = row->function_len;
    c->unique_len = row->unique_len;
    c->data_len = row->data_len;
    c->priority = row->priority;
    c->when = row->when;
    return 0;
}

static void
rows_free(struct rows *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->r[i].handle);
        free(rs->r[i].function);
        free(rs->r[i].unique);
        free(rs->r[i].data);
    }
    free(rs->r);
    memset(rs, 0, sizeof *rs);
}

static const struct crow *
rows_find(const struct rows *rs, const char *handle)
{
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->r[i].handle, handle) == 0)
            return &rs->r[i];
    return NULL;
}

static struct gm_qrecord
rec_add(const char *handle, const char *fn, const char *unique, size_t unique_len, const char *data,
        size_t data_len, int prio, int64_t when)
{
    struct gm_qrecord r;
    memset(&r, 0, sizeof r);
    r.op = GM_QOP_ADD;
    r.priority = (uint8_t)prio;
    r.when = when;
    r.handle = handle;
    r.handle_len = (uint32_t)strlen(handle);
    r.function = fn;
    r.function_len = (uint32_t)strlen(fn);
    r.unique = unique;
    r.unique_len = (uint32_t)unique_len;
    r.data = data;
    r.data_len = (uint32_t)data_len;
    return r;
}

/* An ADD with text unique and data. */
static struct gm_qrecord
rec_add_s(const char *handle, const char *fn, const char *unique, const char *data, int prio)
{
    return rec_add(handle, fn, unique, strlen(unique), data, strlen(data), prio, 0);
}

static struct gm_qrecord
rec_done(const char *handle)
{
    struct gm_qrecord r;
    memset(&r, 0, sizeof r);
    r.op = GM_QOP_DONE;
    r.handle = handle;
    r.handle_len = (uint32_t)strlen(handle);
    return r;
}

static struct gm_qrecord
rec_counter(int64_t next)
{
    struct gm_qrecord r;
    memset(&r, 0, sizeof r);
    r.op = GM_QOP_COUNTER;
    r.when = next;
    return r;
}

/* Checks that a replayed row carries exactly what the ADD stored. */
static void
expect_row(const struct crow *c, const struct gm_qrecord *q)
{
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(c->handle_len == q->handle_len && memcmp(c->handle, q->handle, q->handle_len) == 0,
                  "handle: got '%s', want '%.*s'", c->handle, (int)q->handle_len, q->handle);
    ck_assert_msg(c->function_len == q->function_len &&
                      memcmp(c->function, q->function, q->function_len) == 0,
                  "%s: function: got '%.80s' (%u bytes), want '%.*s' (%u bytes)", c->handle,
                  c->function, c->function_len, (int)(q->function_len < 80 ? q->function_len : 80),
                  q->function, q->function_len);
    ck_assert_msg(c->unique_len == q->unique_len &&
                      (q->unique_len == 0 || memcmp(c->unique, q->unique, q->unique_len) == 0),
                  "%s: unique: got '%.80s' (%u bytes), want '%.*s' (%u bytes)", c->handle,
                  c->unique, c->unique_len, (int)(q->unique_len < 80 ? q->unique_len : 80),
                  q->unique ? q->unique : "", q->unique_len);
    ck_assert_msg(c->data_len == q->data_len &&
                      (q->data_len == 0 || memcmp(c->data, q->data, q->data_len) == 0),
                  "%s: data differs: got %u bytes, want %u", c->handle, c->data_len, q->data_len);
    ck_assert_msg(c->priority == q->priority, "%s: priority: got %d, want %d", c->handle,
                  c->priority, q->priority);
    ck_assert_msg(c->when == q->when, "%s: when: got %lld, want %lld", c->handle,
                  (long long)c->when, (long long)q->when);
}

/* Checks the replayed handles, in order. */
static void
expect_handles(const struct rows *rs, const char *const *want, size_t n)
{
    char got[2048] = "";
    for (size_t i = 0; i < rs->n; i++) {
        strncat(got, rs->r[i].handle, sizeof got - strlen(got) - 2);
        strncat(got, " ", sizeof got - strlen(got) - 1);
    }
    ck_assert_msg(rs->n == n, "replayed %zu rows, want %zu: %s", rs->n, n, got);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(strcmp(rs->r[i].handle, want[i]) == 0, "row %zu is %s, want %s (order: %s)", i,
                      rs->r[i].handle, want[i], got);
}

/* ------------------------------------------------------------------ */
/* Backends under test                                                 */
/* ------------------------------------------------------------------ */

/* How a case gets fresh storage for one backend. */
struct bk {
    const char *name;
    const struct gm_queue_backend *be;
    void (*fresh)(struct gm_queue_options *o); /* new empty storage; aborts if unavailable */
    void (*cleanup)(const struct gm_queue_options *o);
    size_t big_payload; /* the large-payload case's size */
};

static char t_path[512], t_table[64], t_prefix[64], t_dir[400];

static void
fresh_common(struct gm_queue_options *o)
{
    quiet_logs();
    memset(o, 0, sizeof *o);
    o->handle_prefix = "H:test";
    name_seq++;
}

#ifdef HAVE_SQLITE3
static void
sqlite_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_dir, sizeof t_dir, "%s/sq-%d-%u", base_dir, (int)getpid(), name_seq);
    ck_assert_msg(mkdir(t_dir, 0700) == 0, "mkdir %s: %s", t_dir, strerror(errno));
    snprintf(t_path, sizeof t_path, "%s/queue.sqlite", t_dir);
    o->sqlite_db = t_path;
}

static void
sqlite_cleanup(const struct gm_queue_options *o)
{
    (void)o; /* the run's directory is removed by main() */
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
#endif

#ifdef HAVE_LIBPQ
static const char *
pg_conninfo(void)
{
    const char *c = getenv("GM_TEST_PG_CONNINFO");
    ck_assert_msg(c && *c, "GM_TEST_PG_CONNINFO is not set: run tests/unit/check_queue.sh, which "
                           "starts PostgreSQL (CI always does)");
    return c;
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
    o->pg_conninfo = pg_conninfo();
    o->pg_table = t_table;
}

static void
pg_cleanup(const struct gm_queue_options *o)
{
    PGconn *c = pg_admin();
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS \"%s\"", o->pg_table);
    pg_exec(c, sql);
    PQfinish(c);
}

static const struct bk BK_PG = {"postgres", &gm_queue_postgres, pg_fresh, pg_cleanup, MIB};
#endif

#ifdef HAVE_LIBMEMCACHED
static const char *
mc_servers(void)
{
    const char *s = getenv("GM_TEST_MEMCACHED");
    ck_assert_msg(s && *s, "GM_TEST_MEMCACHED is not set: run tests/unit/check_queue.sh, which "
                           "starts memcached (CI always does)");
    return s;
}

static void
mc_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_prefix, sizeof t_prefix, "gmq%d_%u_", (int)getpid(), name_seq);
    o->mc_servers = mc_servers();
    o->mc_prefix = t_prefix;
}

static void
mc_cleanup(const struct gm_queue_options *o)
{
    (void)o; /* the keys die with the throwaway memcached */
}

/* The test's own memcached handle (for writing items as gearmand 1.1.20 did). */
static memcached_st *
mc_client(void)
{
    memcached_st *m = memcached_create(NULL);
    ck_assert_ptr_nonnull(m);
    memcached_server_st *list = memcached_servers_parse(mc_servers());
    ck_assert_ptr_nonnull(list);
    memcached_server_push(m, list);
    memcached_server_list_free(list);
    return m;
}

/* memcached stores items of at most 1 MiB (-I, the default) including its
   own header, so the big case uses the largest payload such a server
   takes; test_memcached_batch_with_an_item_too_big_writes_nothing covers
   a payload over the limit. */
static const struct bk BK_MC = {"memcached", &gm_queue_memcached, mc_fresh, mc_cleanup, MIB - 4096};
#endif

static void *
bk_open(const struct bk *b, const struct gm_queue_options *o)
{
    char err[256] = "";
    void *st = b->be->open(o, err, sizeof err);
    ck_assert_msg(st != NULL, "%s: open failed: %s", b->name, err);
    return st;
}

static void
bk_write(const struct bk *b, void *st, const struct gm_qrecord *recs, size_t n)
{
    char err[256] = "";
    int rc = b->be->write_batch(st, recs, n, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: write_batch of %zu records failed: %s", b->name, n, err);
}

static void
bk_replay(const struct bk *b, void *st, struct rows *out)
{
    char err[256] = "";
    memset(out, 0, sizeof *out);
    int rc = b->be->replay(st, collect_row, out, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: replay failed: %s", b->name, err);
}

/* Closes, opens again and replays: what comes back was committed. */
static void *
bk_reopen_replay(const struct bk *b, void *st, const struct gm_queue_options *o, struct rows *out)
{
    b->be->close(st);
    st = bk_open(b, o);
    bk_replay(b, st, out);
    return st;
}

/* ------------------------------------------------------------------ */
/* Backend cases, written once and instantiated for each backend       */
/* ------------------------------------------------------------------ */

/* Bytes 0..255 repeated: NULs, high bytes, everything. */
static char *
binary_payload(size_t n)
{
    char *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(i * 7 + i / 256);
    return p;
}

static void
case_roundtrip_keeps_every_field(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
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
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:2", "H:test:3", "H:test:4", "H:test:5"};
    expect_handles(&rs, want, n);
    for (size_t i = 0; i < n; i++)
        expect_row(&rs.r[i], &recs[i]);
    rows_free(&rs);
    free(all_bytes);
    b->be->close(st);
    b->cleanup(&o);
}

static void
roundtrip_payload(const struct bk *b, size_t size)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
    char *big = binary_payload(size);
    struct gm_qrecord recs[] = {
        rec_add("H:test:1", "big", "one-mib", 7, big, size, 1, 0),
        rec_add_s("H:test:2", "small", "after-big", "tail", 2),
    };
    bk_write(b, st, recs, 2);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:2"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &recs[0]);
    expect_row(&rs.r[1], &recs[1]);
    rows_free(&rs);
    free(big);
    b->be->close(st);
    b->cleanup(&o);
}

static void
case_roundtrip_keeps_a_large_payload(const struct bk *b)
{
    roundtrip_payload(b, b->big_payload);
}

static void
case_done_removes_the_job(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
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
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:3"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &adds[0]);
    expect_row(&rs.r[1], &adds[2]);
    rows_free(&rs);
    b->be->close(st);
    b->cleanup(&o);
}

static void
case_done_of_an_unknown_handle_is_not_an_error(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
    struct gm_qrecord alone[] = {rec_done("H:test:999")};
    bk_write(b, st, alone, 1);
    struct gm_qrecord mixed[] = {
        rec_add_s("H:test:1", "f", "a", "1", 1),
        rec_done("H:test:998"),
        rec_add_s("H:test:2", "f", "b", "2", 0),
    };
    bk_write(b, st, mixed, 3);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:2"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &mixed[0]);
    expect_row(&rs.r[1], &mixed[2]);
    rows_free(&rs);
    b->be->close(st);
    b->cleanup(&o);
}

static void
case_add_of_a_stored_handle_replaces_it(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
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
    b->be->close(st);
    b->cleanup(&o);
}

static void
case_replay_returns_rows_in_insertion_order(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
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
    b->be->close(st);
    b->cleanup(&o);
}

static void
case_same_function_and_unique_keep_separate_rows(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "same", "one", 1),
        rec_add_s("H:test:2", "f", "same", "two", 1),
        rec_add_s("H:test:3", "f", "", "three", 1),
        rec_add_s("H:test:4", "f", "", "four", 0),
        rec_add_s("H:test:5", "g", "same", "five", 2),
    };
    bk_write(b, st, recs, 3);
    bk_write(b, st, recs + 3, 2);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:2", "H:test:3", "H:test:4", "H:test:5"};
    expect_handles(&rs, want, 5);
    for (size_t i = 0; i < 5; i++)
        expect_row(&rs.r[i], &recs[i]);
    rows_free(&rs);
    /* DONE is by handle: the twin with the same unique key stays */
    struct gm_qrecord done[] = {rec_done("H:test:1"), rec_done("H:test:3")};
    bk_write(b, st, done, 2);
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *left[] = {"H:test:2", "H:test:4", "H:test:5"};
    expect_handles(&rs, left, 3);
    rows_free(&rs);
    b->be->close(st);
    b->cleanup(&o);
}

static void
case_replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
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
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1"};
    expect_handles(&rs, want, 1);
    expect_row(&rs.r[0], &a);
    rows_free(&rs);
    b->be->close(st);
    b->cleanup(&o);
}

static uint64_t
bk_counter(const struct bk *b, void *st)
{
    char err[256] = "";
    uint64_t next = 12345;
    ck_assert_msg(b->be->load_counter != NULL, "%s has no load_counter", b->name);
    ck_assert_msg(b->be->load_counter(st, &next, err, sizeof err) == 0, "%s: load_counter: %s", b->name,
                  err);
    return next;
}

static void
case_handle_counter_is_stored_and_loaded_and_is_no_job(const struct bk *b)
{
    struct gm_queue_options o;
    b->fresh(&o);
    void *st = bk_open(b, &o);
    ck_assert_uint_eq(bk_counter(b, st), 0);
    struct gm_qrecord first[] = {rec_counter(65537), rec_add_s("H:test:1", "f", "u", "d", 1)};
    bk_write(b, st, first, 2);
    struct rows rs;
    st = bk_reopen_replay(b, st, &o, &rs);
    const char *want[] = {"H:test:1"};
    expect_handles(&rs, want, 1); /* the counter is not replayed as a job */
    rows_free(&rs);
    ck_assert_uint_eq(bk_counter(b, st), 65537);
    struct gm_qrecord second = rec_counter(131073);
    bk_write(b, st, &second, 1);
    b->be->close(st);
    st = bk_open(b, &o);
    ck_assert_uint_eq(bk_counter(b, st), 131073);
    b->be->close(st);
    b->cleanup(&o);
}

/* A string of n copies of ch (caller frees). */
static char *
repeated(char ch, size_t n)
{
    char *p = malloc(n + 1);
    ck_assert_ptr_nonnull(p);
    memset(p, ch, n);
    p[n] = '\0';
    return p;
}

/* Names longer than a backend's layout holds (a 70,000-byte function name,
   a 300-byte unique key) come back whole or their batch is refused with a
   reason and leaves nothing behind; never stored cut short. */
static void
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
        b->fresh(&o);
        void *st = bk_open(b, &o);
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
        b->be->close(st);
        b->cleanup(&o);
    }
    free(long_fn);
    free(long_unique);
}

/* One START_TEST per backend for a generic case. */
#define BACKEND_CASE(prefix, BK, name)                                         \
    START_TEST(test_##prefix##_##name) { case_##name(&BK); }                   \
    END_TEST

#ifdef HAVE_SQLITE3
BACKEND_CASE(sqlite, BK_SQLITE, roundtrip_keeps_every_field)
BACKEND_CASE(sqlite, BK_SQLITE, roundtrip_keeps_a_large_payload)
BACKEND_CASE(sqlite, BK_SQLITE, done_removes_the_job)
BACKEND_CASE(sqlite, BK_SQLITE, done_of_an_unknown_handle_is_not_an_error)
BACKEND_CASE(sqlite, BK_SQLITE, add_of_a_stored_handle_replaces_it)
BACKEND_CASE(sqlite, BK_SQLITE, replay_returns_rows_in_insertion_order)
BACKEND_CASE(sqlite, BK_SQLITE, same_function_and_unique_keep_separate_rows)
BACKEND_CASE(sqlite, BK_SQLITE, replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows)
BACKEND_CASE(sqlite, BK_SQLITE, handle_counter_is_stored_and_loaded_and_is_no_job)
BACKEND_CASE(sqlite, BK_SQLITE, long_names_are_stored_whole_or_refused)
#endif
#ifdef HAVE_LIBPQ
BACKEND_CASE(postgres, BK_PG, roundtrip_keeps_every_field)
BACKEND_CASE(postgres, BK_PG, roundtrip_keeps_a_large_payload)
BACKEND_CASE(postgres, BK_PG, done_removes_the_job)
BACKEND_CASE(postgres, BK_PG, done_of_an_unknown_handle_is_not_an_error)
BACKEND_CASE(postgres, BK_PG, add_of_a_stored_handle_replaces_it)
BACKEND_CASE(postgres, BK_PG, replay_returns_rows_in_insertion_order)
BACKEND_CASE(postgres, BK_PG, same_function_and_unique_keep_separate_rows)
BACKEND_CASE(postgres, BK_PG, replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows)
BACKEND_CASE(postgres, BK_PG, handle_counter_is_stored_and_loaded_and_is_no_job)
BACKEND_CASE(postgres, BK_PG, long_names_are_stored_whole_or_refused)
#endif
#ifdef HAVE_LIBMEMCACHED
BACKEND_CASE(memcached, BK_MC, roundtrip_keeps_every_field)
BACKEND_CASE(memcached, BK_MC, roundtrip_keeps_a_large_payload)
BACKEND_CASE(memcached, BK_MC, done_removes_the_job)
BACKEND_CASE(memcached, BK_MC, done_of_an_unknown_handle_is_not_an_error)
BACKEND_CASE(memcached, BK_MC, add_of_a_stored_handle_replaces_it)
BACKEND_CASE(memcached, BK_MC, replay_returns_rows_in_insertion_order)
BACKEND_CASE(memcached, BK_MC, same_function_and_unique_keep_separate_rows)
BACKEND_CASE(memcached, BK_MC, replay_of_an_empty_queue_gives_nothing_and_reopen_keeps_rows)
BACKEND_CASE(memcached, BK_MC, handle_counter_is_stored_and_loaded_and_is_no_job)
BACKEND_CASE(memcached, BK_MC, long_names_are_stored_whole_or_refused)
#endif

/* ------------------------------------------------------------------ */
/* SQLite                                                              */
/* ------------------------------------------------------------------ */

#ifdef HAVE_SQLITE3

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
    sqlite_fresh(&o);
    void *st = bk_open(&BK_SQLITE, &o);
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
    o.sqlite_table = "my \"odd\" queue";
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
    struct rows rs;
    bk_replay(&BK_SQLITE, st, &rs);
    const char *want[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4"};
    expect_handles(&rs, want, 4);
    for (size_t i = 0; i < 4; i++)
        expect_row(&rs.r[i], &old[i]);
    rows_free(&rs);

    /* migrated: now in our layout, and a second open changes nothing */
    db = sq_db(t_path);
    ck_assert(sq_has_column(db, "gearman_queue", "job_handle"));
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 4);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name NOT IN ('gearman_queue', 'gearmand_meta')"),
                     0);
    sqlite3_close(db);
    /* the (unique, function) key is gone: a twin of u1/reverse is stored */
    struct gm_qrecord twin = rec_add_s("H:test:9", "reverse", "u1", "twin", 1);
    bk_write(&BK_SQLITE, st, &twin, 1);
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    const char *want2[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4", "H:test:9"};
    expect_handles(&rs, want2, 5);
    rows_free(&rs);
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
    struct rows rs;
    bk_replay(&BK_SQLITE, st, &rs);
    const char *want[] = {"H:older:1", "H:older:2"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &old[0]);
    expect_row(&rs.r[1], &old[1]);
    rows_free(&rs);
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
    struct rows rs;
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:2"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &recs[0]);
    expect_row(&rs.r[1], &recs[1]);
    rows_free(&rs);
    sqlite3 *db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 0);
    sqlite3_close(db);
    /* the next start replays nothing until the next clean stop writes */
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
    sqlite_fresh(&o);
    void *st = bk_open(&BK_SQLITE, &o);
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
    sqlite_fresh(&o);
    void *st = bk_open(&BK_SQLITE, &o);
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
    struct rows rs;
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:4"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &a);
    expect_row(&rs.r[1], &c);
    rows_free(&rs);
    db = sq_db(t_path);
    ck_assert_int_eq(sq_int(db, "SELECT count(*) FROM gearman_queue"), 4);
    sqlite3_close(db);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_failed_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    void *st = bk_open(&BK_SQLITE, &o);
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
    char err[256] = "";
    ck_assert_int_eq(gm_queue_sqlite.write_batch(st, bad, 4, err, sizeof err), -1);
    ck_assert_uint_eq(bk_counter(&BK_SQLITE, st), 100);
    ck_assert_msg(err[0] != '\0', "a failed batch must say why");
    struct gm_qrecord next = rec_add_s("H:test:4", "f", "d", "after", 1);
    bk_write(&BK_SQLITE, st, &next, 1);
    struct rows rs;
    st = bk_reopen_replay(&BK_SQLITE, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:4"};
    expect_handles(&rs, want, 2);
    rows_free(&rs);
    gm_queue_sqlite.close(st);
}
END_TEST

START_TEST(test_sqlite_open_of_an_unwritable_path_fails_with_a_message)
{
    struct gm_queue_options o;
    sqlite_fresh(&o);
    char path[600];
    snprintf(path, sizeof path, "%s/no-such-dir/queue.sqlite", t_dir);
    o.sqlite_db = path;
    char err[256] = "";
    void *st = gm_queue_sqlite.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open of %s succeeded", path);
    ck_assert_msg(err[0] != '\0', "no message for %s", path);
    /* a directory is no database either (root ignores permissions) */
    o.sqlite_db = t_dir;
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

/* ------------------------------------------------------------------ */
/* PostgreSQL                                                          */
/* ------------------------------------------------------------------ */

#ifdef HAVE_LIBPQ

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
    pg_fresh(&o);
    void *st = bk_open(&BK_PG, &o);
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
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
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
    struct rows rs;
    bk_replay(&BK_PG, st, &rs);
    const char *want[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4"};
    expect_handles(&rs, want, 4);
    for (size_t i = 0; i < 4; i++)
        expect_row(&rs.r[i], &old[i]);
    rows_free(&rs);
    ck_assert(pg_has_column(c, t_table, "job_handle"));
    /* the (unique, function) constraint is gone: a twin is stored, and a
       run time past 2038 fits */
    struct gm_qrecord more[] = {
        rec_add_s("H:test:9", "reverse", "u1", "twin", 1),
        rec_add("H:test:10", "resize", "", 0, "far", 3, 2, FAR_FUTURE),
    };
    bk_write(&BK_PG, st, more, 2);
    st = bk_reopen_replay(&BK_PG, st, &o, &rs);
    const char *want2[] = {"H:old:1", "H:old:2", "H:old:3", "H:old:4", "H:test:9", "H:test:10"};
    expect_handles(&rs, want2, 6);
    expect_row(&rs.r[5], &more[1]);
    rows_free(&rs);
    PQfinish(c);
    free(bin);
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
}
END_TEST

START_TEST(test_postgres_failed_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    pg_fresh(&o);
    void *st = bk_open(&BK_PG, &o);
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
    char err[256] = "";
    ck_assert_int_eq(gm_queue_postgres.write_batch(st, bad, 5, err, sizeof err), -1);
    ck_assert_uint_eq(bk_counter(&BK_PG, st), 100);
    ck_assert_msg(err[0] != '\0', "a failed batch must say why");
    struct gm_qrecord next = rec_add_s("H:test:4", "f", "d", "after", 1);
    bk_write(&BK_PG, st, &next, 1);
    struct rows rs;
    st = bk_reopen_replay(&BK_PG, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:4"};
    expect_handles(&rs, want, 2);
    rows_free(&rs);
    PQfinish(c);
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
}
END_TEST

static void
run_cmd(const char *what, char *msg, size_t msglen)
{
    const char *cmd = getenv(what);
    if (!cmd || !*cmd) {
        snprintf(msg, msglen, "%s is not set: run tests/unit/check_queue.sh", what);
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
                  "GM_TEST_PG_STOP / GM_TEST_PG_START are not set: run tests/unit/check_queue.sh");
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
    struct rows rs;
    st = bk_reopen_replay(&BK_PG, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:3"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &before);
    expect_row(&rs.r[1], &after);
    rows_free(&rs);
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
}
END_TEST

START_TEST(test_postgres_open_with_no_server_fails_with_a_message)
{
    struct gm_queue_options o;
    fresh_common(&o);
    char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5",
             closed_port());
    o.pg_conninfo = ci;
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
    o->pg_conninfo = conninfo;
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
    struct rows rs;
    st = bk_reopen_replay(&BK_PG, st, &o, &rs);
    const char *want[] = {"H:test:1"}; /* the refused job was not committed after its DONE */
    expect_handles(&rs, want, 1);
    rows_free(&rs);
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
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
    snprintf(sql, sizeof sql, "LOCK TABLE \"%s\" IN ACCESS EXCLUSIVE MODE", o->pg_table);
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
    pg_fresh(&o);
    void *st = bk_open(&BK_PG, &o);
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
    struct rows rs;
    st = bk_reopen_replay(&BK_PG, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:3"};
    expect_handles(&rs, want, 2);
    rows_free(&rs);
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
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
    gm_queue_postgres.close(st);
    pg_cleanup(&o);
}
END_TEST
#endif /* HAVE_LIBPQ */

/* ------------------------------------------------------------------ */
/* memcached                                                           */
/* ------------------------------------------------------------------ */

#ifdef HAVE_LIBMEMCACHED

START_TEST(test_memcached_open_with_no_server_fails_with_a_message)
{
    struct gm_queue_options o;
    fresh_common(&o);
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", closed_port());
    o.mc_servers = servers;
    o.mc_prefix = "gear_";
    char err[256] = "";
    double t0 = now_s();
    void *st = gm_queue_memcached.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open with nothing listening on %s succeeded", servers);
    ck_assert_msg(err[0] != '\0', "no message");
    ck_assert_msg(now_s() - t0 < 10.0, "open took %.1fs to fail", now_s() - t0);
}
END_TEST

START_TEST(test_memcached_open_succeeds_against_a_running_server)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    struct rows rs;
    bk_replay(&BK_MC, st, &rs);
    ck_assert_uint_eq(rs.n, 0);
    rows_free(&rs);
    gm_queue_memcached.close(st);
}
END_TEST

START_TEST(test_memcached_gearmand_1_1_20_items_are_migrated_by_replay)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    o.handle_prefix = "H:old";
    memcached_st *m = mc_client();
    /* gearmand 1.1.20: key <prefix><function>-<unique>, value = data, flags = priority */
    char key[128];
    snprintf(key, sizeof key, "%sreverse-abc", t_prefix);
    ck_assert_int_eq(memcached_set(m, key, strlen(key), "da\0ta", 5, 0, 2), MEMCACHED_SUCCESS);
    void *st = bk_open(&BK_MC, &o);
    struct rows rs;
    bk_replay(&BK_MC, st, &rs);
    ck_assert_msg(rs.n == 1, "replayed %zu rows, want 1", rs.n);
    struct gm_qrecord want = rec_add(rs.r[0].handle, "reverse", "abc", 3, "da\0ta", 5, 2, 0);
    expect_row(&rs.r[0], &want);
    ck_assert_msg(strncmp(rs.r[0].handle, "H:old:", 6) == 0, "migrated handle %s", rs.r[0].handle);
    char *handle = strdup(rs.r[0].handle);
    want.handle = handle;
    rows_free(&rs);
    /* rewritten in the new form: the next replay gives the same job again */
    st = bk_reopen_replay(&BK_MC, st, &o, &rs);
    ck_assert_msg(rs.n == 1, "second replay gave %zu rows, want 1", rs.n);
    ck_assert_str_eq(rs.r[0].handle, handle);
    expect_row(&rs.r[0], &want);
    rows_free(&rs);
    free(handle);
    memcached_free(m);
    gm_queue_memcached.close(st);
}
END_TEST

START_TEST(test_memcached_replay_finds_jobs_written_just_before)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    char h[10][24];
    struct gm_qrecord r[10];
    for (int i = 0; i < 10; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        r[i] = rec_add_s(h[i], "f", h[i], "data", 1);
    }
    bk_write(&BK_MC, st, r, 10);
    /* a restart right after the writes: the items are still in memcached's
       HOT LRU, which "stats cachedump" does not walk */
    gm_queue_memcached.close(st);
    st = bk_open(&BK_MC, &o);
    struct rows rs;
    bk_replay(&BK_MC, st, &rs);
    ck_assert_msg(rs.n == 10, "replay right after the writes found %zu of 10 jobs", rs.n);
    rows_free(&rs);
    gm_queue_memcached.close(st);
}
END_TEST

START_TEST(test_memcached_replay_finds_every_job_however_often_it_ran)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    char h[10][24];
    struct gm_qrecord r[10];
    for (int i = 0; i < 10; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        r[i] = rec_add_s(h[i], "f", h[i], "data", 1);
    }
    bk_write(&BK_MC, st, r, 10);
    /* four restarts: each replay reads every item; memcached's LRU moves
       items read twice to its WARM LRU, which "stats cachedump" (the
       listing libmemcached's memcached_dump uses) does not walk */
    for (int round = 1; round <= 4; round++) {
        struct rows rs;
        st = bk_reopen_replay(&BK_MC, st, &o, &rs);
        ck_assert_msg(rs.n == 10, "replay number %d found %zu of 10 jobs", round, rs.n);
        rows_free(&rs);
        sleep_ms(300); /* the LRU maintainer's moves are asynchronous */
    }
    gm_queue_memcached.close(st);
}
END_TEST

/* A TCP connection to the memcached "host:port" of servers, or -1. */
static int
connect_to(const char *servers)
{
    char host[64] = "127.0.0.1", port[16] = "11211";
    const char *colon = strrchr(servers, ':');
    if (colon) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - servers), servers);
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Keeps memcached's LRU crawler busy: metadump after metadump on a
   connection of its own, until told to stop. */
static _Atomic int crawl_stop;

static void *
keep_crawler_busy(void *arg)
{
    int fd = connect_to(arg);
    if (fd < 0)
        return NULL;
    char buf[65536];
    while (!atomic_load(&crawl_stop)) {
        static const char cmd[] = "lru_crawler metadump all\r\n";
        if (send(fd, cmd, sizeof cmd - 1, MSG_NOSIGNAL) < 0)
            break;
        size_t have = 0;
        for (;;) { /* up to END (or BUSY) */
            ssize_t r = recv(fd, buf + have, sizeof buf - have - 1, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
            buf[have] = '\0';
            if (strstr(buf, "END\r\n") || strstr(buf, "BUSY"))
                break;
            if (have > sizeof buf / 2) { /* keep the tail only */
                memmove(buf, buf + have - 16, 16);
                have = 16;
            }
        }
    }
out:
    close(fd);
    return NULL;
}

/* While somebody else keeps the LRU crawler busy, replay still lists every
   job: a BUSY answer to "lru_crawler metadump" is waited out, not taken
   for "unsupported" (whose fallback, cachedump, misses the items already
   read twice: a replay found none of them). */
START_TEST(test_memcached_replay_waits_out_a_busy_lru_crawler)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    char h[10][24];
    struct gm_qrecord r[10];
    for (int i = 0; i < 10; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        r[i] = rec_add_s(h[i], "f", h[i], "data", 1);
    }
    bk_write(&BK_MC, st, r, 10);
    struct rows rs;
    for (int round = 0; round < 2; round++) { /* read twice: WARM, where cachedump does not look */
        st = bk_reopen_replay(&BK_MC, st, &o, &rs);
        ck_assert_uint_eq(rs.n, 10);
        rows_free(&rs);
        sleep_ms(300);
    }
    atomic_store(&crawl_stop, 0);
    pthread_t busy[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&busy[i], NULL, keep_crawler_busy, (void *)o.mc_servers), 0);
    sleep_ms(50);
    size_t found[5];
    for (int round = 0; round < 5; round++) {
        st = bk_reopen_replay(&BK_MC, st, &o, &rs);
        found[round] = rs.n;
        rows_free(&rs);
    }
    atomic_store(&crawl_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(busy[i], NULL);
    for (int round = 0; round < 5; round++)
        ck_assert_msg(found[round] == 10, "replay %d beside a busy crawler found %zu of 10 jobs", round,
                      found[round]);
    gm_queue_memcached.close(st);
}
END_TEST

/* Reads keys[0..n) over and over on a connection of its own, until told
   to stop: every read may make memcached move the item between its LRU
   segments (HOT, WARM, COLD), as other clients of a shared memcached do. */
struct reader_args {
    const char *servers;
    char keys[10][64];
    int n;
};

static void *
keep_reading(void *arg)
{
    struct reader_args *a = arg;
    int fd = connect_to(a->servers);
    if (fd < 0)
        return NULL;
    char buf[4096];
    while (!atomic_load(&crawl_stop)) {
        char cmd[1024] = "get";
        for (int i = 0; i < a->n; i++)
            snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", a->keys[i]);
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "\r\n");
        if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0)
            break;
        size_t have = 0;
        for (;;) { /* up to END */
            ssize_t r = recv(fd, buf + have, sizeof buf - have - 1, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
            buf[have] = '\0';
            if (have >= 5 && strcmp(buf + have - 5, "END\r\n") == 0)
                break;
            if (have > sizeof buf / 2) { /* keep the tail only */
                memmove(buf, buf + have - 16, 16);
                have = 16;
            }
        }
    }
out:
    close(fd);
    return NULL;
}

/* Replay lists every job while other clients keep reading them, so that
   memcached keeps moving the items between its LRU segments: a walk of the
   LRUs ("lru_crawler metadump all") misses an item moved from one not yet
   walked to one already walked, and a replay lost jobs that way. */
START_TEST(test_memcached_replay_finds_every_job_while_other_clients_read_them)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    static struct reader_args ra;
    ra.servers = o.mc_servers;
    ra.n = 10;
    char h[10][24];
    struct gm_qrecord r[10];
    for (int i = 0; i < 10; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        r[i] = rec_add_s(h[i], "f", h[i], "data", 1);
        snprintf(ra.keys[i], sizeof ra.keys[i], "%s%s", o.mc_prefix, h[i]);
    }
    bk_write(&BK_MC, st, r, 10);
    atomic_store(&crawl_stop, 0);
    pthread_t readers[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&readers[i], NULL, keep_reading, &ra), 0);
    enum { ROUNDS = 40 };
    size_t found[ROUNDS];
    for (int round = 0; round < ROUNDS; round++) {
        struct rows rs;
        st = bk_reopen_replay(&BK_MC, st, &o, &rs);
        found[round] = rs.n;
        rows_free(&rs);
    }
    atomic_store(&crawl_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(readers[i], NULL);
    for (int round = 0; round < ROUNDS; round++)
        ck_assert_msg(found[round] == 10, "replay %d beside readers found %zu of 10 jobs", round, found[round]);
    gm_queue_memcached.close(st);
}
END_TEST

/* memcached refuses items over its item size limit (1 MiB by default); a
   batch holding one must still be all or nothing. */
START_TEST(test_memcached_batch_with_an_item_too_big_writes_nothing)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    size_t size = 2 * MIB;
    char *big = binary_payload(size);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "a", "small, before the big one", 1),
        rec_add("H:test:2", "f", "b", 1, big, size, 1, 0),
        rec_add_s("H:test:3", "f", "c", "small, after", 1),
    };
    char err[256] = "";
    int rc = gm_queue_memcached.write_batch(st, recs, 3, err, sizeof err);
    struct rows rs;
    st = bk_reopen_replay(&BK_MC, st, &o, &rs);
    if (rc == 0) {
        const char *want[] = {"H:test:1", "H:test:2", "H:test:3"};
        expect_handles(&rs, want, 3);
    } else {
        ck_assert_msg(err[0] != '\0', "a failed batch must say why");
        ck_assert_msg(rs.n == 0,
                      "write_batch returned -1 (%s) but %zu of its records are stored (first: %s): "
                      "a failed batch must leave nothing behind",
                      err, rs.n, rs.n ? rs.r[0].handle : "");
    }
    rows_free(&rs);
    free(big);
    gm_queue_memcached.close(st);
}
END_TEST

/* An item stores the function name's length in 2 bytes and the unique
   key's in 1: a record with a longer one is refused (its batch writes
   nothing, the rest goes through alone), never stored cut short. */
START_TEST(test_memcached_function_name_over_64_kib_is_refused_not_cut_short)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    void *st = bk_open(&BK_MC, &o);
    char *long_fn = repeated('f', 70000);
    char *longest_fn = repeated('g', 65535);
    char *long_unique = repeated('u', 256);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "fn", "u1", "before", 1),
        rec_add("H:test:2", long_fn, "u2", 2, "data-2", 6, 1, 0),
        rec_add_s("H:test:3", "fn", "u3", "after", 1),
    };
    char err[256] = "";
    int rc = gm_queue_memcached.write_batch(st, recs, 3, err, sizeof err);
    ck_assert_msg(rc == -1, "a batch with a 70000-byte function name was accepted");
    ck_assert_msg(strstr(err, "function name") && strstr(err, "H:test:2"),
                  "the reason should name the record and its function name: %s", err);
    /* refused alone too; the others go through without it (what the
       persistence thread does after a refused batch) */
    ck_assert_int_eq(gm_queue_memcached.write_batch(st, &recs[1], 1, err, sizeof err), -1);
    struct gm_qrecord rest[] = {
        recs[0],
        recs[2],
        rec_add("H:test:5", longest_fn, "u5", 2, "data-5", 6, 2, 0),
    };
    bk_write(&BK_MC, st, rest, 3);
    struct gm_qrecord bad_unique = rec_add("H:test:6", "fn", long_unique, 256, "d", 1, 1, 0);
    err[0] = '\0';
    ck_assert_int_eq(gm_queue_memcached.write_batch(st, &bad_unique, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "unique"), "the reason should name the unique key: %s", err);
    struct rows rs;
    st = bk_reopen_replay(&BK_MC, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:3", "H:test:5"};
    expect_handles(&rs, want, 3);
    for (size_t i = 0; i < 3; i++)
        expect_row(&rs.r[i], &rest[i]);
    rows_free(&rs);
    free(long_fn);
    free(longest_fn);
    free(long_unique);
    gm_queue_memcached.close(st);
}
END_TEST
#endif /* HAVE_LIBMEMCACHED */

/* ------------------------------------------------------------------ */
/* The persistence thread over a fake backend                          */
/* ------------------------------------------------------------------ */

#define FAKE_MAX 8192

/* What the fake backend was given: one entry per record it wrote, with
   the batch it came in. */
struct fake_rec {
    unsigned batch;
    uint8_t op;
    char handle[GM_HANDLE_MAX];
};

static struct {
    pthread_mutex_t mu;
    int fail;            /* write_batch fails while set (the backend is down) */
    int refuse_dones;    /* a batch with a DONE is refused while set (the backend is up) */
    int refuse_multi;    /* a batch of more than one record is refused (the backend is up) */
    int stall;           /* write_batch waits while set */
    int reconnect_ok;    /* reconnect succeeds while set */
    unsigned attempts;   /* write_batch calls */
    unsigned batches;    /* successful write_batch calls */
    unsigned reconnects; /* reconnect calls */
    unsigned closed;
    size_t nrec;
    struct fake_rec rec[FAKE_MAX];
    size_t batch_size[FAKE_MAX];
} F;

static int
fake_write(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    F.attempts++;
    while (F.stall) {
        pthread_mutex_unlock(&F.mu);
        sleep_ms(1);
        pthread_mutex_lock(&F.mu);
    }
    if (F.fail) {
        pthread_mutex_unlock(&F.mu);
        snprintf(err, errlen, "fake backend is down");
        return -1;
    }
    bool has_done = false;
    for (size_t i = 0; i < n; i++)
        has_done |= recs[i].op == GM_QOP_DONE;
    if ((F.refuse_dones && has_done) || (F.refuse_multi && n > 1)) {
        pthread_mutex_unlock(&F.mu);
        snprintf(err, errlen, "fake backend refuses this batch");
        return -1;
    }
    F.batch_size[F.batches] = n;
    for (size_t i = 0; i < n && F.nrec < FAKE_MAX; i++) {
        struct fake_rec *r = &F.rec[F.nrec++];
        r->batch = F.batches;
        r->op = recs[i].op;
        if (recs[i].op == GM_QOP_COUNTER)
            snprintf(r->handle, sizeof r->handle, "%lld", (long long)recs[i].when);
        else
            snprintf(r->handle, sizeof r->handle, "%.*s", (int)recs[i].handle_len, recs[i].handle);
    }
    F.batches++;
    pthread_mutex_unlock(&F.mu);
    return 0;
}

static int
fake_reconnect(void *state, char *err, size_t errlen)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    F.reconnects++;
    int ok = F.reconnect_ok;
    pthread_mutex_unlock(&F.mu);
    if (!ok) {
        snprintf(err, errlen, "still down");
        return -1;
    }
    return 0;
}

static bool
fake_alive(void *state)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    bool up = !F.fail;
    pthread_mutex_unlock(&F.mu);
    return up;
}

static void
fake_close(void *state)
{
    (void)state;
    F.closed++;
}

static const struct gm_queue_backend FAKE = {
    .name = "fake",
    .aliases = NULL,
    .stores_epoch = true,
    .open = NULL,
    .replay = NULL,
    .write_batch = fake_write,
    .alive = fake_alive,
    .reconnect = fake_reconnect,
    .close = fake_close,
};

/* The dispatcher's side of one persistence thread. */
static struct {
    struct gm_persist_channel ch;
    struct gm_persist *p;
    pthread_t tid;
    bool running;
    uint64_t seq;
    _Atomic unsigned wakes;
} P;

static void
p_wake_disp(void *arg)
{
    (void)arg;
    atomic_fetch_add(&P.wakes, 1);
}

static uint32_t p_stall_ms; /* the next p_start's stall_ms (0: the default) */

static void
p_start(uint32_t batch_max, uint32_t delay_ms)
{
    quiet_logs();
    memset(&F, 0, sizeof F);
    pthread_mutex_init(&F.mu, NULL);
    F.reconnect_ok = 1;
    memset(&P, 0, sizeof P);
    ck_assert_int_eq(gm_persist_channel_init(&P.ch, 1024), 0);
    struct gm_persist_config cfg = {batch_max, delay_ms, p_stall_ms};
    P.p = gm_persist_new(&FAKE, (void *)&F, &cfg, &P.ch, p_wake_disp, NULL);
    ck_assert_ptr_nonnull(P.p);
    ck_assert_int_eq(pthread_create(&P.tid, NULL, gm_persist_thread_main, P.p), 0);
    P.running = true;
}

/* Stops the thread (final flush), frees everything. */
static void
p_stop(void)
{
    if (P.running) {
        gm_persist_stop(P.p);
        pthread_join(P.tid, NULL);
        P.running = false;
    }
    gm_persist_free(P.p);
    P.p = NULL;
    gm_persist_channel_destroy(&P.ch);
}

/* Queues a handle counter record, as the dispatcher does. */
static uint64_t
p_push_counter(int64_t next)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++P.seq;
    r.op = GM_QOP_COUNTER;
    r.when = next;
    ck_assert(gm_prec_ring_push(&P.ch.records, &r));
    return r.seq;
}

/* Queues one record (not yet visible: see p_publish). Returns its seq. */
static uint64_t
p_push(uint8_t op, const char *handle)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++P.seq;
    r.op = op;
    r.priority = 1;
    r.handle_len = (uint8_t)strlen(handle);
    if (op == GM_QOP_ADD) {
        r.handle = handle; /* string literals: they outlive the record */
        r.function = "fn";
        r.function_len = 2;
        r.unique = "";
        r.data = "data";
        r.data_len = 4;
    } else {
        memcpy(r.handle_copy, handle, r.handle_len);
    }
    ck_assert(gm_prec_ring_push(&P.ch.records, &r));
    return r.seq;
}

static void
p_publish(void)
{
    gm_prec_ring_publish(&P.ch.records);
    gm_persist_wake(P.p);
}

/* Waits for the next acknowledgement. */
static struct gm_pack
p_ack(double timeout)
{
    double end = now_s() + timeout;
    for (;;) {
        struct gm_pack *a = gm_pack_ring_peek(&P.ch.acks);
        if (a) {
            struct gm_pack copy = *a;
            gm_pack_ring_consume(&P.ch.acks);
            gm_pack_ring_release(&P.ch.acks);
            /* as the dispatcher does: room for acks the thread kept */
            if (atomic_exchange(&P.ch.persist_wants_space, 0))
                gm_persist_wake(P.p);
            return copy;
        }
        ck_assert_msg(now_s() < end, "no acknowledgement within %.1fs", timeout);
        sleep_ms(1);
    }
}

static bool
p_no_ack(unsigned ms)
{
    sleep_ms(ms);
    return gm_pack_ring_peek(&P.ch.acks) == NULL;
}

static unsigned
f_get(unsigned *field)
{
    pthread_mutex_lock(&F.mu);
    unsigned v = *field;
    pthread_mutex_unlock(&F.mu);
    return v;
}

/* Handles the fake backend was given, as "+H:1 -H:2 | +H:3" (| between batches). */
static void
f_log(char *out, size_t len)
{
    pthread_mutex_lock(&F.mu);
    out[0] = '\0';
    for (size_t i = 0; i < F.nrec; i++) {
        if (i && F.rec[i].batch != F.rec[i - 1].batch)
            strncat(out, "| ", len - strlen(out) - 1);
        char one[80];
        snprintf(one, sizeof one, "%c%s ",
                 F.rec[i].op == GM_QOP_ADD ? '+' : F.rec[i].op == GM_QOP_DONE ? '-' : '#', F.rec[i].handle);
        strncat(out, one, len - strlen(out) - 1);
    }
    pthread_mutex_unlock(&F.mu);
}

START_TEST(test_persist_add_and_done_of_one_job_in_a_batch_never_reach_the_backend)
{
    p_start(4096, 0);
    p_push(GM_QOP_ADD, "H:p:1");
    p_push(GM_QOP_ADD, "H:p:2");
    p_push(GM_QOP_DONE, "H:p:1");
    uint64_t last = p_push(GM_QOP_ADD, "H:p:3");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_msg(a.ok, "batch refused: %s", a.reason);
    ck_assert_uint_eq(a.upto, last);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:2 +H:p:3 ") == 0, "backend saw: %s", log);

    /* a batch that cancels out entirely is acknowledged without a write */
    unsigned attempts = f_get(&F.attempts);
    p_push(GM_QOP_ADD, "H:p:4");
    last = p_push(GM_QOP_DONE, "H:p:4");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(a.ok, "batch refused: %s", a.reason);
    ck_assert_uint_eq(a.upto, last);
    ck_assert_uint_eq(f_get(&F.attempts), attempts);

    /* a DONE whose ADD was written in an earlier batch does reach it */
    last = p_push(GM_QOP_DONE, "H:p:2");
    p_publish();
    a = p_ack(5);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.upto, last);
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:2 +H:p:3 | -H:p:2 ") == 0, "backend saw: %s", log);
    ck_assert(p_no_ack(50));
    p_stop();
}
END_TEST

START_TEST(test_persist_counter_records_reach_the_backend_and_cancel_nothing)
{
    p_start(4096, 0);
    p_push_counter(65537);
    p_push(GM_QOP_ADD, "H:p:1");
    p_push(GM_QOP_DONE, "H:p:1");
    uint64_t last = p_push(GM_QOP_ADD, "H:p:2");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_msg(a.ok, "batch refused: %s", a.reason);
    ck_assert_uint_eq(a.upto, last);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "#65537 +H:p:2 ") == 0, "backend saw: %s", log);
    p_stop();
}
END_TEST

START_TEST(test_persist_failing_backend_refuses_adds_and_holds_dones_until_reconnect)
{
    p_start(4096, 0);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:0");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok && a.upto == s);
    ck_assert(gm_persist_healthy(P.p));

    /* the backend fails a batch: every record in it is refused */
    pthread_mutex_lock(&F.mu);
    F.fail = 1;
    F.reconnect_ok = 0;
    pthread_mutex_unlock(&F.mu);
    p_push(GM_QOP_ADD, "H:p:1");
    s = p_push(GM_QOP_DONE, "H:p:0");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(!a.ok, "a failed write was acknowledged as durable");
    ck_assert_uint_eq(a.upto, s);
    ck_assert_msg(a.reason[0] != '\0', "a refusal must say why");
    ck_assert(!gm_persist_healthy(P.p));

    /* while down: ADDs are refused at once, without trying the backend */
    unsigned attempts = f_get(&F.attempts);
    s = p_push(GM_QOP_ADD, "H:p:2");
    p_publish();
    a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    s = p_push(GM_QOP_DONE, "H:p:9");
    p_publish();
    a = p_ack(5);
    ck_assert_uint_eq(a.upto, s);
    ck_assert_uint_eq(f_get(&F.attempts), attempts);

    /* reconnect is retried (with backoff) while it fails */
    double end = now_s() + 5;
    while (f_get(&F.reconnects) < 2 && now_s() < end)
        sleep_ms(5);
    ck_assert_msg(f_get(&F.reconnects) >= 2, "reconnect tried %u times", f_get(&F.reconnects));
    ck_assert(!gm_persist_healthy(P.p));
    ck_assert_uint_eq(f_get(&F.batches), 1);

    /* back: the held DONEs are written (with removals for the ADDs of the
       failed batch, whose commit may have happened unseen); the refused
       ADDs are never written */
    pthread_mutex_lock(&F.mu);
    F.fail = 0;
    F.reconnect_ok = 1;
    pthread_mutex_unlock(&F.mu);
    end = now_s() + 10;
    while (f_get(&F.batches) < 2 && now_s() < end)
        sleep_ms(5);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strncmp(log, "+H:p:0 | ", 9) == 0 && strstr(log, "-H:p:0 ") && strstr(log, "-H:p:9 ") &&
                      !strstr(log, "+H:p:1") && !strstr(log, "+H:p:2") && !strchr(log + 9, '|'),
                  "backend saw: %s", log);
    ck_assert(gm_persist_healthy(P.p));
    s = p_push(GM_QOP_ADD, "H:p:3");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(a.ok && a.upto == s, "after reconnect: ok=%d upto=%llu (%s)", a.ok,
                  (unsigned long long)a.upto, a.reason);
    char log2[1024];
    f_log(log2, sizeof log2);
    ck_assert_msg(strncmp(log2, log, strlen(log)) == 0 && strcmp(log2 + strlen(log), "| +H:p:3 ") == 0,
                  "backend saw: %s", log2);
    p_stop();
}
END_TEST

START_TEST(test_persist_held_dones_go_with_the_next_batch_if_flush_on_reconnect_fails)
{
    p_start(4096, 0);
    pthread_mutex_lock(&F.mu);
    F.fail = 1;
    pthread_mutex_unlock(&F.mu);
    uint64_t s = p_push(GM_QOP_DONE, "H:p:7");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    /* reconnect succeeds but the first write still fails */
    double end = now_s() + 5;
    while (f_get(&F.attempts) < 2 && now_s() < end)
        sleep_ms(5);
    pthread_mutex_lock(&F.mu);
    F.fail = 0;
    pthread_mutex_unlock(&F.mu);
    /* whatever the timing, H:p:7's DONE is written eventually, once */
    end = now_s() + 10;
    char log[1024] = "";
    while (now_s() < end) {
        s = p_push(GM_QOP_ADD, "H:p:8");
        p_publish();
        a = p_ack(5);
        if (a.ok)
            break;
        sleep_ms(100);
    }
    ck_assert_msg(a.ok, "the backend never came back: %s", a.reason);
    f_log(log, sizeof log);
    ck_assert_msg(strstr(log, "-H:p:7") != NULL, "held DONE never written: %s", log);
    const char *first = strstr(log, "-H:p:7");
    ck_assert_msg(strstr(first + 1, "-H:p:7") == NULL, "held DONE written twice: %s", log);
    p_stop();
}
END_TEST

START_TEST(test_persist_batches_respect_batch_max)
{
    p_start(3, 0);
    static const char *const h[] = {"H:p:1", "H:p:2", "H:p:3", "H:p:4", "H:p:5",
                                    "H:p:6", "H:p:7", "H:p:8", "H:p:9", "H:p:10"};
    for (size_t i = 0; i < 10; i++)
        p_push(GM_QOP_ADD, h[i]);
    p_publish();
    uint64_t uptos[10];
    size_t nacks = 0;
    for (;;) {
        struct gm_pack a = p_ack(5);
        ck_assert_msg(a.ok, "batch refused: %s", a.reason);
        uptos[nacks++] = a.upto;
        if (a.upto == 10)
            break;
        ck_assert_uint_lt(nacks, 10);
    }
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 +H:p:2 +H:p:3 | +H:p:4 +H:p:5 +H:p:6 | +H:p:7 +H:p:8 +H:p:9 | "
                              "+H:p:10 ") == 0,
                  "backend saw: %s", log);
    for (unsigned b = 0; b < F.batches; b++)
        ck_assert_uint_le(F.batch_size[b], 3);
    ck_assert_uint_eq(nacks, 4);
    ck_assert_uint_eq(uptos[0], 3);
    ck_assert_uint_eq(uptos[1], 6);
    ck_assert_uint_eq(uptos[2], 9);
    p_stop();
}
END_TEST

START_TEST(test_persist_stop_writes_everything_queued_in_a_final_flush)
{
    /* a long batch delay: nothing is written before the stop */
    p_start(4096, 10000);
    p_push(GM_QOP_ADD, "H:p:1");
    p_push(GM_QOP_ADD, "H:p:2");
    p_publish();
    ck_assert(p_no_ack(100));
    ck_assert_uint_eq(f_get(&F.attempts), 0);
    p_push(GM_QOP_ADD, "H:p:3");
    p_push(GM_QOP_DONE, "H:p:0");
    p_push(GM_QOP_ADD, "H:p:4");
    gm_prec_ring_publish(&P.ch.records); /* no wake: the stop must find them */
    double t0 = now_s();
    gm_persist_stop(P.p);
    pthread_join(P.tid, NULL);
    P.running = false;
    ck_assert_msg(now_s() - t0 < 5.0, "stop waited %.1fs for the batch delay", now_s() - t0);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 +H:p:2 +H:p:3 -H:p:0 +H:p:4 ") == 0, "backend saw: %s", log);
    struct gm_pack a = p_ack(1);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.upto, 5);
    ck_assert(p_no_ack(10));
    p_stop();
    ck_assert_uint_eq(F.closed, 1);
}
END_TEST

START_TEST(test_persist_batch_delay_gathers_records_into_one_batch)
{
    p_start(4096, 300);
    for (int i = 0; i < 5; i++) {
        static const char *const h[] = {"H:p:1", "H:p:2", "H:p:3", "H:p:4", "H:p:5"};
        p_push(GM_QOP_ADD, h[i]);
        p_publish();
        sleep_ms(2);
    }
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.upto, 5);
    ck_assert_uint_eq(f_get(&F.batches), 1);
    p_stop();
}
END_TEST

START_TEST(test_persist_stop_while_the_backend_is_down_refuses_what_is_left)
{
    p_start(4096, 0);
    pthread_mutex_lock(&F.mu);
    F.fail = 1;
    F.reconnect_ok = 0;
    pthread_mutex_unlock(&F.mu);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:1");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    s = p_push(GM_QOP_ADD, "H:p:2");
    gm_prec_ring_publish(&P.ch.records);
    gm_persist_stop(P.p);
    pthread_join(P.tid, NULL);
    P.running = false;
    a = p_ack(1);
    ck_assert_msg(!a.ok && a.upto == s, "a record left at stop must be answered (refused)");
    ck_assert_uint_eq(f_get(&F.batches), 0);
    p_stop();
}
END_TEST

/* ------------------------------------------------------------------ */

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
    } while (0)

#if !defined(HAVE_SQLITE3) || !defined(HAVE_LIBPQ) || !defined(HAVE_LIBMEMCACHED)
START_TEST(test_every_queue_backend_is_built)
{
    ck_abort_msg("a queue backend is not built (configure did not find sqlite3, libpq or "
                 "libmemcached); CI builds all three");
}
END_TEST
#endif

/* Issue 12.5: a completion the backend refuses while it is up (SQLite on a
   full disk) is kept and written once the backend takes it, even when no
   new batch comes along; it used to be dropped, so the job ran again after
   a restart. */
START_TEST(test_persist_done_refused_by_a_live_backend_is_held_and_written_later)
{
    p_start(4096, 0);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:1");
    p_publish();
    ck_assert(p_ack(5).ok);
    pthread_mutex_lock(&F.mu);
    F.refuse_dones = 1;
    pthread_mutex_unlock(&F.mu);
    s = p_push(GM_QOP_DONE, "H:p:1");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_uint_eq(a.upto, s);
    ck_assert(gm_persist_healthy(P.p)); /* up: only the record was refused */
    sleep_ms(300);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 ") == 0, "backend saw: %s", log);
    pthread_mutex_lock(&F.mu);
    F.refuse_dones = 0;
    pthread_mutex_unlock(&F.mu);
    double end = now_s() + 10;
    while (f_get(&F.batches) < 2 && now_s() < end)
        sleep_ms(5);
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 | -H:p:1 ") == 0,
                  "the refused completion was not written when the backend took it again: %s", log);
    p_stop();
}
END_TEST

/* Issue 12.5: more acknowledgements than the ring holds (one per record
   when a batch is retried record by record) while the dispatcher does not
   drain them: the thread goes on writing, keeps the acks (merged), and
   stops when asked.  It used to spin until the dispatcher drained, and
   nothing drains after the dispatcher's final flush. */
START_TEST(test_persist_never_waits_for_room_in_the_ack_ring)
{
    p_start(4096, 0);
    pthread_mutex_lock(&F.mu);
    F.refuse_multi = 1;
    pthread_mutex_unlock(&F.mu);
    const unsigned n = 6000;
    static char handles[6000][16];
    for (unsigned i = 0; i < n; i++) {
        snprintf(handles[i], sizeof handles[i], "H:m:%u", i);
        double end = now_s() + 10;
        while (gm_prec_ring_free_space(&P.ch.records) == 0) {
            p_publish();
            ck_assert_msg(now_s() < end, "the thread stopped taking records after %u", i);
            sleep_ms(1);
        }
        p_push(GM_QOP_ADD, handles[i]);
    }
    p_publish();
    double end = now_s() + 20;
    while (f_get(&F.batches) < n && now_s() < end)
        sleep_ms(5);
    ck_assert_msg(f_get(&F.batches) == n, "wrote %u of %u records, then waited for the dispatcher",
                  f_get(&F.batches), n);
    /* every record is acknowledged, in order, in fewer acks than records */
    uint64_t upto = 0;
    unsigned acks = 0;
    while (upto < n) {
        struct gm_pack a = p_ack(5);
        ck_assert_msg(a.ok && a.upto > upto, "ack %u: ok=%d upto=%llu after %llu", acks, a.ok,
                      (unsigned long long)a.upto, (unsigned long long)upto);
        upto = a.upto;
        acks++;
    }
    ck_assert_uint_eq(upto, n);
    ck_assert_uint_lt(acks, n);
    p_stop();
}
END_TEST

/* Issue 12.5: a backend call that does not return (a PostgreSQL that
   stopped answering, a hung disk) makes the queue unhealthy after stall_ms,
   and healthy again once it returns. */
START_TEST(test_persist_backend_call_that_does_not_return_makes_the_queue_unhealthy)
{
    p_stall_ms = 100;
    p_start(4096, 0);
    p_stall_ms = 0;
    pthread_mutex_lock(&F.mu);
    F.stall = 1;
    pthread_mutex_unlock(&F.mu);
    uint64_t s = p_push(GM_QOP_ADD, "H:s:1");
    p_publish();
    sleep_ms(50);
    ck_assert(gm_persist_healthy(P.p));
    sleep_ms(200);
    ck_assert_msg(!gm_persist_healthy(P.p), "a write waiting %llu ms still counts as healthy",
                  (unsigned long long)gm_persist_waiting_ms(P.p));
    ck_assert_uint_ge(gm_persist_waiting_ms(P.p), 200);
    gm_persist_watch(P.p); /* logs the stall (quietly here) */
    pthread_mutex_lock(&F.mu);
    F.stall = 0;
    pthread_mutex_unlock(&F.mu);
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok && a.upto == s);
    ck_assert(gm_persist_healthy(P.p));
    ck_assert_uint_eq(gm_persist_waiting_ms(P.p), 0);
    p_stop();
}
END_TEST

static Suite *
queue_suite(void)
{
    Suite *s = suite_create("queue");
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
#endif
#ifdef HAVE_LIBPQ
    ADD(s, test_postgres_open_creates_the_table);
    ADD_BACKEND_CASES(s, postgres);
    ADD(s, test_postgres_gearmand_1_1_20_table_is_migrated_by_open);
    ADD(s, test_postgres_failed_batch_writes_nothing_and_the_next_one_works);
    {
        TCase *tc = tcase_create("test_postgres_write_fails_while_the_server_is_down_and_reconnect_restores_it");
        tcase_add_unchecked_fixture(tc, NULL, pg_ensure_started);
        tcase_add_test(tc, test_postgres_write_fails_while_the_server_is_down_and_reconnect_restores_it);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    ADD(s, test_postgres_open_with_no_server_fails_with_a_message);
    {
        TCase *tc = tcase_create("test_postgres_write_to_a_backend_that_stops_answering_fails_in_bounded_time_and_never_commits_later");
        tcase_add_unchecked_fixture(tc, NULL, pg_resume_backends);
        tcase_add_test(tc, test_postgres_write_to_a_backend_that_stops_answering_fails_in_bounded_time_and_never_commits_later);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    ADD(s, test_postgres_write_waiting_on_a_table_lock_fails_at_statement_timeout_and_reconnect_restores_it);
    ADD(s, test_postgres_statement_timeout_given_in_the_conninfo_wins);
#endif
#ifdef HAVE_LIBMEMCACHED
    ADD(s, test_memcached_open_succeeds_against_a_running_server);
    ADD_BACKEND_CASES(s, memcached);
    ADD(s, test_memcached_gearmand_1_1_20_items_are_migrated_by_replay);
    ADD(s, test_memcached_replay_finds_jobs_written_just_before);
    ADD(s, test_memcached_replay_finds_every_job_however_often_it_ran);
    ADD(s, test_memcached_replay_waits_out_a_busy_lru_crawler);
    ADD(s, test_memcached_replay_finds_every_job_while_other_clients_read_them);
    ADD(s, test_memcached_batch_with_an_item_too_big_writes_nothing);
    ADD(s, test_memcached_function_name_over_64_kib_is_refused_not_cut_short);
    ADD(s, test_memcached_open_with_no_server_fails_with_a_message);
#endif
#if !defined(HAVE_SQLITE3) || !defined(HAVE_LIBPQ) || !defined(HAVE_LIBMEMCACHED)
    ADD(s, test_every_queue_backend_is_built);
#endif
    ADD(s, test_persist_add_and_done_of_one_job_in_a_batch_never_reach_the_backend);
    ADD(s, test_persist_counter_records_reach_the_backend_and_cancel_nothing);
    ADD(s, test_persist_failing_backend_refuses_adds_and_holds_dones_until_reconnect);
    ADD(s, test_persist_held_dones_go_with_the_next_batch_if_flush_on_reconnect_fails);
    ADD(s, test_persist_batches_respect_batch_max);
    ADD(s, test_persist_stop_writes_everything_queued_in_a_final_flush);
    ADD(s, test_persist_batch_delay_gathers_records_into_one_batch);
    ADD(s, test_persist_stop_while_the_backend_is_down_refuses_what_is_left);
    ADD(s, test_persist_done_refused_by_a_live_backend_is_held_and_written_later);
    ADD(s, test_persist_never_waits_for_room_in_the_ack_ring);
    ADD(s, test_persist_backend_call_that_does_not_return_makes_the_queue_unhealthy);
    return s;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int
main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base_dir, sizeof base_dir, "%s/check_queue-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = gm_check_run_tap(queue_suite());
    nftw(base_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
