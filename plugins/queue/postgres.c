/*
 * plugins/queue/postgres.c: the PostgreSQL durable queue (-q Postgres,
 * aliases postgres, libpq).
 *
 * Owns one libpq connection, used only by the persistence thread (and by
 * the main thread for open/replay before that thread starts).  A batch is
 * at most three statements, whatever its size: one INSERT of every job it
 * adds (the columns travel as binary arrays and are unnested), one DELETE
 * of every job it finishes, and the handle counter.  They go out in
 * pipeline mode with one Sync, in a single round trip, and the server runs
 * them as one implicit transaction, so the batch is durable (or not) as a
 * whole.
 *
 * Every call the persistence thread makes returns within a bounded time
 * (the deadlines below): the connection is non-blocking, and each request
 * goes through finish(), which flushes it and waits for its results with
 * poll() against a deadline.  A server that does not answer in time, or
 * that cancels a statement for a timeout, fails the batch and marks the
 * backend down (alive() false); reconnect() then builds a new connection
 * and prepares the statements again.  Open and replay at start-up wait as
 * long as they must (a migration or the replay of a big table takes
 * time), but their connect is bounded by connect_timeout.
 *
 * Table layout: gearmand 1.1.20's columns plus job_handle (the row's
 * identity), seq (insertion order for replay) and lifecycle (the core's
 * bytes about a job's attempts and death, NULL for most jobs; added to a
 * table made before it existed).  A 1.1.20 table is migrated when opened,
 * in one transaction.  Run-time policies (GM_QOP_POLICY) go to
 * gearmand_policies, keyed by (queue table, function), in the batch's
 * transaction.
 */
#include "config.h"

#include "plugins/queue/backends.h"
#include "plugins/queue/last_record.h"
#include "plugins/queue/sql_ident.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/base/clock.h"
#include "libgearman-server/base/log.h"

/*
 * Deadlines.  A batch normally takes milliseconds; these bound what a
 * PostgreSQL that stops answering (stopped, partitioned, a lock held on
 * the table) can cost: the batch is refused (its submitters get
 * QUEUE_ERROR), and the persistence thread reconnects with its backoff
 * (0.1 s doubling to 5 s) instead of waiting forever.
 *
 * - PG_ANSWER_MS, client side: a request with no complete answer after
 *   15 s gives the connection up.  It is the only limit for a server that
 *   says nothing at all (SIGSTOP, a partition: TCP may go on acknowledging,
 *   and statement_timeout cannot fire).  Longer than statement_timeout, so
 *   that where the server can cancel a statement itself, it does first and
 *   the answer says why.
 * - statement_timeout 10 s, server side, on the persistence thread's
 *   session only (not the replay at start-up, which can take long on a big
 *   table): a statement waiting on a lock, or running long, ends in an
 *   error.  It also covers lock waits, so no separate lock_timeout is set.
 *   A value chosen for this connection, its role or its database
 *   (`options` in --libpq-conninfo, PGOPTIONS, ALTER ROLE/DATABASE ... SET)
 *   is kept; a server-wide one (postgresql.conf) is not.
 * - connection parameters (pg_conn_defaults): connect_timeout 5 s, as long
 *   as the longest reconnect backoff; TCP keepalives after 10 s idle, every
 *   5 s, 3 lost (a dead peer of an idle connection seen in 25 s);
 *   tcp_user_timeout 15 s (sent data unacknowledged that long closes the
 *   connection: a partition during a send).  Values given in
 *   --libpq-conninfo win (and PGCONNECT_TIMEOUT over our connect_timeout).
 *
 * With --ha (option "ha-timeout", T seconds) an active server must see a
 * lost PostgreSQL within T, and PostgreSQL must see a lost server soon, so
 * that its session, and the lock with it, ends (docs/ha.md): the answer
 * deadline is T, statement_timeout 3/4 of it, connect_timeout T,
 * keepalives after 1 s idle, every 1 s, T lost, tcp_user_timeout T; and the
 * session asks the server for the same keepalives and tcp_user_timeout on
 * its side (tcp_keepalives_*, per session), and for a check every second
 * that we are still there while a statement runs
 * (client_connection_check_interval): a session whose server is gone must
 * not keep the lock.
 */
#define PG_ANSWER_MS 15000
#define PG_STATEMENT_TIMEOUT_MS 10000

static const struct {
    const char *key, *value, *env;
    char ha; /* its value with --ha: 's' T (seconds), 'm' T in ms, '1' one, 0 the same */
} pg_conn_defaults[] = {
    {"connect_timeout", "5", "PGCONNECT_TIMEOUT", 's'},
    {"keepalives", "1", NULL, 0},
    {"keepalives_idle", "10", NULL, '1'},
    {"keepalives_interval", "5", NULL, '1'},
    {"keepalives_count", "3", NULL, 's'},
    {"tcp_user_timeout", "15000", NULL, 'm'},
};
#define PG_NDEFAULTS (sizeof pg_conn_defaults / sizeof pg_conn_defaults[0])

/* A one-dimensional array parameter in PostgreSQL's binary format, built
   in place and reused from batch to batch. */
struct pg_array {
    char *buf;
    size_t len, cap;
    uint32_t n;
    uint32_t elem_oid;
};

/* The columns of a batch's INSERT, and the handles of its DELETE. */
enum { COL_HANDLE, COL_UNIQUE, COL_FUNCTION, COL_PRIORITY, COL_DATA, COL_WHEN, COL_LIFE, COL_DONE, NCOLS };
#define NADD COL_DONE /* the INSERT's columns */

struct pg {
    PGconn *conn;
    unsigned ha_s;        /* --ha-timeout, 0 without --ha */
    unsigned answer_ms;   /* PG_ANSWER_MS, or ha_s seconds */
    bool leader;          /* this session holds the --ha lock */
    char lock_key[24];    /* the lock: a bigint from the table's name */         /* non-blocking; NULL once given up, until reconnect() */
    bool bounded;         /* calls have deadlines: the persistence thread uses it */
    bool timeouts_set;    /* this session's statement_timeout is settled */
    bool down;            /* the server cancelled a statement for a timeout, or the
                             connection is in a state no batch can follow */
    char server_start[64];/* pg_postmaster_start_time() of this session's server */
    int orphan_pid;       /* backend of a connection given up, maybe still running */
    char orphan_start[64];/* ... on the server that started then */
    char *counter_name;   /* the handle counter's row in gearmand_meta */
    char *conninfo;
    char *table;      /* quoted identifier */
    char *table_raw;  /* as given, for information_schema */
    char *prefix;
    struct pg_array col[NCOLS];
    struct gm_qlast last; /* which record decides each handle (last_record.h) */
};

/* Element type OIDs (pg_type.h): text, bytea, int4, int8. */
#define OID_TEXT 25
#define OID_BYTEA 17
#define OID_INT4 23
#define OID_INT8 20

static void
set_err(char *err, size_t len, const char *what, PGconn *c)
{
    const char *msg = c ? PQerrorMessage(c) : "not connected";
    snprintf(err, len, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
}

/* Server warnings go to our log, not to stderr (libpq's default). */
static void
log_notice(void *arg, const char *message)
{
    (void)arg;
    gm_log(GM_LOG_WARNING, "Postgres: %.*s", (int)strcspn(message, "\n"), message);
}

/* Connects with our defaults first (with --ha, its bounds: see the top)
   and the user's conninfo last, expanded as a connection string (libpq
   keeps the last value of a keyword, so the user's win), and makes the
   connection non-blocking.  Returns NULL only when memory is short; check
   PQstatus. */
static PGconn *
pg_connect(const char *conninfo, unsigned ha_s)
{
    const char *keys[PG_NDEFAULTS + 2], *values[PG_NDEFAULTS + 2];
    char t_s[12], t_ms[16];
    snprintf(t_s, sizeof t_s, "%u", ha_s);
    snprintf(t_ms, sizeof t_ms, "%u", ha_s * 1000);
    size_t n = 0;
    for (size_t i = 0; i < PG_NDEFAULTS; i++) {
        if (pg_conn_defaults[i].env && getenv(pg_conn_defaults[i].env))
            continue;
        char ha = ha_s ? pg_conn_defaults[i].ha : 0;
        keys[n] = pg_conn_defaults[i].key;
        values[n++] = ha == 's' ? t_s : ha == 'm' ? t_ms : ha == '1' ? "1" : pg_conn_defaults[i].value;
    }
    if (*conninfo) {
        keys[n] = "dbname";
        values[n++] = conninfo;
    }
    keys[n] = values[n] = NULL;
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (c && PQstatus(c) == CONNECTION_OK) {
        (void)PQsetnonblocking(c, 1); /* fails only when a send is pending: none is */
        PQsetNoticeProcessor(c, log_notice, NULL);
    }
    return c;
}

/* Closes the connection without waiting for the server (it is
   non-blocking, so even the goodbye cannot block). */
static void
drop_conn(struct pg *p)
{
    if (p->conn)
        PQfinish(p->conn);
    p->conn = NULL;
    p->timeouts_set = false;
    p->leader = false;
}

enum pg_wait { PG_READY, PG_LATE, PG_BROKEN };

/* Waits until the socket is ready for `events`; deadline 0 waits as long
   as it takes. */
static enum pg_wait
wait_socket(PGconn *c, short events, uint64_t deadline)
{
    struct pollfd pfd = {.fd = PQsocket(c), .events = events};
    if (pfd.fd < 0)
        return PG_BROKEN;
    for (;;) {
        int ms = -1;
        if (deadline) {
            uint64_t now = gm_mono_ms();
            if (now >= deadline)
                return PG_LATE;
            ms = (int)(deadline - now);
        }
        int n = poll(&pfd, 1, ms);
        if (n > 0)
            return PG_READY;
        if (n < 0 && errno != EINTR)
            return PG_BROKEN;
    }
}

/* Sends everything queued on the connection, reading input meanwhile (the
   server may answer before it has read all of a big batch). */
static enum pg_wait
flush_request(PGconn *c, uint64_t deadline)
{
    int f;
    while ((f = PQflush(c)) == 1) {
        enum pg_wait w = wait_socket(c, POLLIN | POLLOUT, deadline);
        if (w != PG_READY)
            return w;
        if (!PQconsumeInput(c))
            return PG_BROKEN;
    }
    return f == 0 ? PG_READY : PG_BROKEN;
}

/* Reads input until a result (or the end of one command's results, NULL
   in *r) can be taken without blocking. */
static enum pg_wait
next_result(PGconn *c, uint64_t deadline, PGresult **r)
{
    *r = NULL;
    while (PQisBusy(c)) {
        enum pg_wait w = wait_socket(c, POLLIN, deadline);
        if (w != PG_READY)
            return w;
        if (!PQconsumeInput(c))
            return PG_BROKEN;
    }
    *r = PQgetResult(c);
    return PG_READY;
}

/* The error classes that say the server could not serve us, not that a
   record was bad: 57 (a statement cancelled: statement_timeout, a shutdown),
   55P03 (lock_timeout), 08 (connection). */
static bool
server_gave_up(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return state && (strncmp(state, "57", 2) == 0 || strcmp(state, "55P03") == 0 ||
                     strncmp(state, "08", 2) == 0);
}

/* Reports a wait that did not end in a result: past the deadline, or a
   broken connection.  Either way the connection is given up. */
static int
lost(struct pg *p, enum pg_wait w, const char *what, char *err, size_t errlen)
{
    if (w == PG_LATE)
        snprintf(err, errlen, "%s: no answer from PostgreSQL within %u s", what, p->answer_ms / 1000);
    else
        set_err(err, errlen, what, p->conn);
    if (p->timeouts_set && !p->orphan_pid) {
        /* its backend may still run a batch it was sent: see end_orphan()
           (a session given up before that one ended wrote no job) */
        p->orphan_pid = PQbackendPID(p->conn);
        memcpy(p->orphan_start, p->server_start, sizeof p->orphan_start);
    }
    drop_conn(p);
    return -1;
}

/* Takes one result of a request (and frees it, or keeps it in *rows when
   rows are wanted and all went well so far); rc is the request's outcome
   so far, and the first error is the one err tells.  Returns the new rc. */
static int
take_result(struct pg *p, PGresult *r, PGresult **rows, int rc, const char *what, char *err,
            size_t errlen)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && rows && rc == 0) {
        PQclear(*rows);
        *rows = r;
        return 0;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_PIPELINE_SYNC) {
        if (rc == 0) {
            const char *m = PQresultErrorMessage(r);
            snprintf(err, errlen, "%s: %.*s", what, (int)strcspn(m, "\n"), m);
        }
        rc = -1;
        p->down |= server_gave_up(r);
    }
    PQclear(r);
    return rc;
}

/*
 * The one way a request is waited for.  After a PQsend* (`sent` is what it
 * returned), or a pipeline ended by PQpipelineSync, flushes the request
 * and reads its results up to the end (of a pipeline: its Sync), within
 * PG_ANSWER_MS once the connection is bounded.  Returns 0 if every result
 * succeeded, else -1 with err saying `what` failed and why (the first
 * error).  *rows, when asked for, gets the last result with rows (NULL on
 * failure).  Past the deadline, or when the connection breaks, it is
 * given up (p->conn NULL).
 */
static int
finish(struct pg *p, int sent, bool pipeline, PGresult **rows, const char *what, char *err,
       size_t errlen)
{
    if (rows)
        *rows = NULL;
    if (!sent) {
        set_err(err, errlen, what, p->conn);
        return -1;
    }
    uint64_t deadline = p->bounded ? gm_mono_ms() + p->answer_ms : 0;
    enum pg_wait w = flush_request(p->conn, deadline);
    int rc = 0;
    bool gap = false; /* a NULL just ended one statement of the pipeline */
    while (w == PG_READY) {
        PGresult *r;
        if ((w = next_result(p->conn, deadline, &r)) != PG_READY)
            break;
        bool up = PQstatus(p->conn) == CONNECTION_OK;
        if (!r && up && pipeline && !gap) {
            gap = true;
            continue;
        }
        if (!r && (!up || pipeline)) {
            /* the connection broke, or the pipeline ended without its Sync */
            if (rc == 0)
                set_err(err, errlen, what, p->conn);
            rc = -1;
            p->down = true;
        }
        if (!r)
            break;
        gap = false;
        bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        rc = take_result(p, r, rows, rc, what, err, errlen);
        if (sync)
            break;
    }
    if (w != PG_READY)
        rc = lost(p, w, what, err, errlen);
    if (rc < 0 && rows) {
        PQclear(*rows);
        *rows = NULL;
    }
    return rc;
}

/* Runs one command; returns 0 if it succeeded. */
static int
run(struct pg *p, const char *sql, char *err, size_t errlen)
{
    return finish(p, PQsendQuery(p->conn, sql), false, NULL, sql, err, errlen);
}

static char *
fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static int
run_fmt(struct pg *p, char *err, size_t errlen, const char *f, ...) __attribute__((format(printf, 4, 5)));

static int
run_fmt(struct pg *p, char *err, size_t errlen, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *sql = NULL;
    int n = vasprintf(&sql, f, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = run(p, sql, err, errlen);
    free(sql);
    return rc;
}

/* Runs a query with one text parameter; returns its rows, or NULL with
   err saying what failed. */
static PGresult *
query1(struct pg *p, const char *sql, const char *param, const char *what, char *err, size_t errlen)
{
    const char *params[1] = {param};
    PGresult *r;
    finish(p, PQsendQueryParams(p->conn, sql, 1, NULL, params, NULL, NULL, 0), false, &r, what, err,
           errlen);
    return r;
}

/* Which columns the table has: 0 no table, 1 ours, 3 ours without the
   lifecycle column (made before it), 2 gearmand 1.1's, -1 other. */
static int
table_layout(struct pg *p, char *err, size_t errlen)
{
    PGresult *r = query1(p,
                         "SELECT column_name FROM information_schema.columns "
                         "WHERE table_name = $1 AND table_schema = current_schema()",
                         p->table_raw, "reading information_schema", err, errlen);
    if (!r)
        return -1;
    int n = PQntuples(r);
    bool handle = false, seq = false, unique = false, fn = false, prio = false, data = false, life = false;
    for (int i = 0; i < n; i++) {
        const char *c = PQgetvalue(r, i, 0);
        handle |= strcmp(c, "job_handle") == 0;
        seq |= strcmp(c, "seq") == 0;
        unique |= strcmp(c, "unique_key") == 0;
        fn |= strcmp(c, "function_name") == 0;
        prio |= strcmp(c, "priority") == 0;
        data |= strcmp(c, "data") == 0;
        life |= strcmp(c, "lifecycle") == 0;
    }
    PQclear(r);
    if (n == 0)
        return 0;
    if (!(unique && fn && prio && data)) {
        snprintf(err, errlen, "table %s exists with columns this server does not know", p->table);
        return -1;
    }
    return handle && seq ? (life ? 1 : 3) : 2;
}

/* Prepares one named statement; returns 0 if it succeeded. */
static int
prepare1(struct pg *p, const char *name, const char *sql, int nparams, char *err, size_t errlen)
{
    char what[32];
    snprintf(what, sizeof what, "prepare %s", name);
    return finish(p, PQsendPrepare(p->conn, name, sql, nparams, NULL), false, NULL, what, err, errlen);
}

static int
prepare(struct pg *p, char *err, size_t errlen)
{
    /* Rows are inserted in array order (seq is replay order). */
    char *add = fmt("INSERT INTO %s (job_handle, unique_key, function_name, priority, data, "
                    "when_to_run, lifecycle) SELECT h, u, f, p, d, w, NULLIF(l, ''::bytea) FROM "
                    "unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::bytea[], $6::bigint[], "
                    "$7::bytea[]) WITH ORDINALITY AS x(h, u, f, p, d, w, l, o) ORDER BY o "
                    "ON CONFLICT (job_handle) DO UPDATE SET unique_key = EXCLUDED.unique_key, "
                    "function_name = EXCLUDED.function_name, priority = EXCLUDED.priority, "
                    "data = EXCLUDED.data, when_to_run = EXCLUDED.when_to_run, "
                    "lifecycle = EXCLUDED.lifecycle",
                    p->table);
    char *done = fmt("DELETE FROM %s WHERE job_handle = ANY($1::text[])", p->table);
    int rc = -1;
    if (!add || !done)
        snprintf(err, errlen, "out of memory");
    else
        rc = prepare1(p, "gm_counter",
                      "INSERT INTO gearmand_meta (name, value) VALUES ($1, $2::bigint) "
                      "ON CONFLICT (name) DO UPDATE SET value = GREATEST(gearmand_meta.value, EXCLUDED.value)",
                      2, err, errlen) < 0 ||
                     prepare1(p, "gm_add", add, NADD, err, errlen) < 0 ||
                     prepare1(p, "gm_done", done, 1, err, errlen) < 0 ||
                     prepare1(p, "gm_policy_set",
                              "INSERT INTO gearmand_policies (queue, function, policy) VALUES ($1, $2, $3) "
                              "ON CONFLICT (queue, function) DO UPDATE SET policy = EXCLUDED.policy",
                              3, err, errlen) < 0 ||
                     prepare1(p, "gm_policy_del", "DELETE FROM gearmand_policies WHERE queue = $1 AND function = $2",
                              2, err, errlen) < 0
                 ? -1
                 : 0;
    free(add);
    free(done);
    return rc;
}

/* Drops the table's unique and primary-key constraints (gearmand 1.1's
   UNIQUE (unique_key, function_name)). */
static int
drop_key_constraints(struct pg *p, char *err, size_t errlen)
{
    PGresult *r = query1(p, "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass "
                            "AND contype IN ('u', 'p')",
                         p->table, "reading constraints", err, errlen);
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        char *name = gm_sql_quote_ident(PQgetvalue(r, i, 0));
        rc = name ? run_fmt(p, err, errlen, "ALTER TABLE %s DROP CONSTRAINT %s", p->table, name) : -1;
        free(name);
    }
    PQclear(r);
    return rc;
}

static int
setup_table(struct pg *p, char *err, size_t errlen)
{
    if (run(p, "CREATE TABLE IF NOT EXISTS gearmand_meta (name TEXT PRIMARY KEY, value BIGINT)", err, errlen) < 0 ||
        run(p,
            "CREATE TABLE IF NOT EXISTS gearmand_policies (queue TEXT, function TEXT, policy TEXT, "
            "PRIMARY KEY (queue, function))",
            err, errlen) < 0)
        return -1;
    int layout = table_layout(p, err, errlen);
    if (layout < 0)
        return -1;
    if (layout == 0)
        return run_fmt(p, err, errlen,
                       "CREATE TABLE IF NOT EXISTS %s (unique_key TEXT, function_name TEXT, "
                       "priority INTEGER, data BYTEA, when_to_run BIGINT, "
                       "job_handle TEXT PRIMARY KEY, seq BIGSERIAL, lifecycle BYTEA)",
                       p->table);
    if (layout == 1)
        return 0; /* no ALTER: its exclusive lock would stop the writes of a --ha pair's active server */
    if (layout == 3)
        return run_fmt(p, err, errlen, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS lifecycle BYTEA", p->table);
    /* gearmand 1.1: give every row a handle and an order, drop the
       (unique_key, function_name) constraint, in one transaction. */
    char *prefix = PQescapeLiteral(p->conn, p->prefix, strlen(p->prefix));
    if (!prefix) {
        set_err(err, errlen, "escape", p->conn);
        return -1;
    }
    int rc = -1;
    if (run(p, "BEGIN", err, errlen) < 0)
        goto out;
    if (run_fmt(p, err, errlen, "ALTER TABLE %s ADD COLUMN seq BIGSERIAL", p->table) < 0 ||
        run_fmt(p, err, errlen, "ALTER TABLE %s ADD COLUMN job_handle VARCHAR(64)", p->table) < 0 ||
        run_fmt(p, err, errlen, "UPDATE %s SET job_handle = %s || ':' || seq", p->table, prefix) < 0 ||
        run_fmt(p, err, errlen, "ALTER TABLE %s ALTER COLUMN when_to_run TYPE BIGINT", p->table) < 0 ||
        drop_key_constraints(p, err, errlen) < 0 ||
        run_fmt(p, err, errlen, "ALTER TABLE %s ADD PRIMARY KEY (job_handle)", p->table) < 0 ||
        run_fmt(p, err, errlen, "ALTER TABLE %s ADD COLUMN lifecycle BYTEA", p->table) < 0 ||
        run(p, "COMMIT", err, errlen) < 0) {
        char ignored[64];
        run(p, "ROLLBACK", ignored, sizeof ignored);
        goto out;
    }
    gm_log(GM_LOG_NOTICE, "Postgres: migrated table %s from gearmand 1.1 layout", p->table);
    rc = 0;
out:
    PQfreemem(prefix);
    return rc;
}

/* Gives the session its server-side deadline (see PG_STATEMENT_TIMEOUT_MS;
   with --ha 3/4 of its timeout), unless this connection, its role or its
   database chose one, and with --ha the server's side of the keepalives,
   and a check every second that the client is still there while a
   statement runs (those the server has: tcp_user_timeout is 12 and later,
   client_connection_check_interval 14); notes which server it is on.  Returns 0, or -1 with err. */
static int
set_timeouts(struct pg *p, char *err, size_t errlen)
{
    static const char sql[] =
        "SELECT pg_postmaster_start_time()::text, (SELECT set_config('statement_timeout', $1, false) "
        "FROM pg_settings WHERE name = 'statement_timeout' "
        "AND source NOT IN ('client', 'user', 'database', 'database user')), "
        "(SELECT count(set_config(s.name, w.v, false)) FROM (VALUES ('tcp_keepalives_idle', '1'), "
        "('tcp_keepalives_interval', '1'), ('tcp_keepalives_count', $2), ('tcp_user_timeout', $3), "
        "('client_connection_check_interval', '1000')) "
        "AS w(name, v) JOIN pg_settings s ON s.name = w.name WHERE $2 <> '0')";
    char st[16], t_s[12], t_ms[16];
    snprintf(st, sizeof st, "%ums", p->ha_s ? p->ha_s * 750 : PG_STATEMENT_TIMEOUT_MS);
    snprintf(t_s, sizeof t_s, "%u", p->ha_s);
    snprintf(t_ms, sizeof t_ms, "%u", p->ha_s * 1000);
    const char *v[3] = {st, t_s, t_ms};
    PGresult *r;
    if (finish(p, PQsendQueryParams(p->conn, sql, 3, NULL, v, NULL, NULL, 0), false, &r,
               "setting statement_timeout", err, errlen) < 0)
        return -1;
    snprintf(p->server_start, sizeof p->server_start, "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    p->timeouts_set = true;
    return 0;
}

#define ORPHAN_SQL(terminate_args)                                                              \
    "SELECT pg_terminate_backend(pid" terminate_args ") FROM pg_stat_activity WHERE pid = $1::int " \
    "AND pid <> pg_backend_pid() AND pg_postmaster_start_time()::text = $2"

/*
 * A connection given up in the middle of a batch leaves a backend that may
 * still run it, and commit it, once the server answers again: a batch whose
 * submitters were told QUEUE_ERROR.  The persistence thread removes such
 * jobs by writing their DONEs after reconnect(), so the old backend must be
 * gone first.  Ends it (pg_terminate_backend, waiting up to 5 s for it to
 * exit where the server can wait: 14 and later) if it is still there, on
 * the same server (same start time).  Returns 0 when it is gone, -1 with
 * err while it is not (reconnect() fails, and is tried again).
 */
static int
end_orphan(struct pg *p, char *err, size_t errlen)
{
    if (!p->orphan_pid)
        return 0;
    bool waits = PQserverVersion(p->conn) >= 140000;
    const char *sql = waits ? ORPHAN_SQL(", 5000") : ORPHAN_SQL("");
    char pid[16];
    snprintf(pid, sizeof pid, "%d", p->orphan_pid);
    const char *v[2] = {pid, p->orphan_start};
    PGresult *r;
    if (finish(p, PQsendQueryParams(p->conn, sql, 2, NULL, v, NULL, NULL, 0), false, &r,
               "ending the connection given up", err, errlen) < 0)
        return -1;
    bool found = PQntuples(r) == 1;
    bool gone = !found || (waits && strcmp(PQgetvalue(r, 0, 0), "t") == 0);
    PQclear(r);
    if (!gone) {
        snprintf(err, errlen, "the connection given up (backend %d) has not ended yet", p->orphan_pid);
        return -1;
    }
    if (found)
        gm_log(GM_LOG_NOTICE, "Postgres: ended backend %d, of the connection given up, before writing on",
               p->orphan_pid);
    p->orphan_pid = 0;
    return 0;
}

/* An advisory lock's key, as text: a bigint made (FNV-1a) of what and
   name. */
static void
lock_key(const char *what, const char *name, char out[24])
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *c = what; *c; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ULL;
    for (const char *c = name; *c; c++)
        h = (h ^ (uint8_t)*c) * 0x100000001b3ULL;
    snprintf(out, 24, "%lld", (long long)h);
}

/* Makes the tables ready one server at a time: servers starting together
   (a --ha pair) would otherwise race in CREATE TABLE IF NOT EXISTS, which
   PostgreSQL does not make safe.  The lock is the session's until
   released, or until the session ends. */
static int
setup_tables_alone(struct pg *p, char *err, size_t errlen)
{
    char key[24];
    lock_key("gearmand-setup", "", key);
    PGresult *r = query1(p, "SELECT pg_advisory_lock($1::bigint)", key, "waiting for the table set-up lock", err,
                         errlen);
    if (!r)
        return -1;
    PQclear(r);
    int rc = setup_table(p, err, errlen);
    char ignored[64];
    r = query1(p, "SELECT pg_advisory_unlock($1::bigint)", key, "releasing the table set-up lock",
               rc < 0 ? ignored : err, rc < 0 ? sizeof ignored : errlen);
    if (!r)
        return -1;
    PQclear(r);
    return rc;
}

/* Connects and makes the table and statements ready; returns 0, or -1
   with err (the connection, if any, stays for pg_close or reconnect). */
static int
start_session(struct pg *p, const char *what, char *err, size_t errlen)
{
    drop_conn(p);
    p->down = false;
    p->conn = pg_connect(p->conninfo, p->ha_s);
    if (!p->conn) {
        snprintf(err, errlen, "%s: out of memory", what);
        return -1;
    }
    if (PQstatus(p->conn) != CONNECTION_OK) {
        set_err(err, errlen, what, p->conn);
        return -1;
    }
    if (p->bounded && (set_timeouts(p, err, errlen) < 0 || end_orphan(p, err, errlen) < 0))
        return -1;
    return run(p, "SET client_min_messages = warning", err, errlen) < 0 ||
                   setup_tables_alone(p, err, errlen) < 0 || prepare(p, err, errlen) < 0
               ? -1
               : 0;
}

static void pg_close(void *state);
static void *
pg_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    struct pg *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *t = gm_queue_opt_or(opts, "libpq-table", "queue");
    p->conninfo = strdup(gm_queue_opt_or(opts, "libpq-conninfo", ""));
    p->table = gm_sql_quote_ident(t);
    p->table_raw = strdup(t);
    p->prefix = strdup(opts->handle_prefix ? opts->handle_prefix : "H:migrated");
    p->counter_name = fmt("next_handle:%s", t);
    const char *ha = gm_queue_opt(opts, "ha-timeout");
    p->ha_s = ha ? (unsigned)strtoul(ha, NULL, 10) : 0;
    p->answer_ms = p->ha_s ? p->ha_s * 1000 : PG_ANSWER_MS;
    /* every server on this table (in this database) contends for one lock */
    lock_key("gearmand-ha:", t, p->lock_key);
    if (!p->conninfo || !p->table || !p->table_raw || !p->prefix || !p->counter_name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (start_session(p, "cannot connect", err, errlen) < 0)
        goto fail;
    return p;
fail:
    pg_close(p);
    return NULL;
}

static uint32_t
be32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

static int64_t
be64(const char *p)
{
    uint64_t hi = be32(p), lo = be32(p + 4);
    return (int64_t)(hi << 32 | lo);
}

/* Hands one stored row to cb, or logs it as bad (NULL or odd columns);
   returns what cb returned (0 for a bad row or a NULL cb). */
static int
replay_row(struct pg *p, const PGresult *r, gm_qrow_cb cb, void *arg)
{
    if (PQgetisnull(r, 0, 0) || PQgetisnull(r, 0, 2) || PQgetisnull(r, 0, 3) ||
        PQgetlength(r, 0, 3) != 4 || (!PQgetisnull(r, 0, 5) && PQgetlength(r, 0, 5) != 8)) {
        gm_log(GM_LOG_ERROR, "Postgres: a row of %s has NULL or odd columns; kept, not replayed",
               p->table);
        return 0;
    }
    if (!cb)
        return 0;
    struct gm_qrow row;
    memset(&row, 0, sizeof row);
    row.handle = PQgetvalue(r, 0, 0);
    row.handle_len = (uint32_t)PQgetlength(r, 0, 0);
    row.unique = PQgetisnull(r, 0, 1) ? "" : PQgetvalue(r, 0, 1);
    row.unique_len = (uint32_t)PQgetlength(r, 0, 1);
    row.function = PQgetvalue(r, 0, 2);
    row.function_len = (uint32_t)PQgetlength(r, 0, 2);
    row.priority = (int)(int32_t)be32(PQgetvalue(r, 0, 3));
    row.data = PQgetisnull(r, 0, 4) ? "" : PQgetvalue(r, 0, 4);
    row.data_len = (uint32_t)PQgetlength(r, 0, 4);
    row.when = PQgetisnull(r, 0, 5) ? 0 : be64(PQgetvalue(r, 0, 5));
    if (!PQgetisnull(r, 0, 7)) {
        row.lifecycle = PQgetvalue(r, 0, 7);
        row.lifecycle_len = (uint32_t)PQgetlength(r, 0, 7);
    }
    return cb(arg, &row);
}

static int
pg_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct pg *p = state;
    /* A session with our statement_timeout (--ha: a server taking over
       replays on the session that holds the lock) lifts it for the replay,
       which takes what a big table takes. */
    bool lifted = p->timeouts_set;
    if (lifted && (run(p, "BEGIN", err, errlen) < 0 || run(p, "SET LOCAL statement_timeout = 0", err, errlen) < 0))
        return -1;
    char *sql = fmt("SELECT job_handle, unique_key, function_name, priority, data, when_to_run, seq, "
                    "lifecycle FROM %s ORDER BY seq",
                    p->table);
    if (!sql) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* binary results: int4/int8 arrive big-endian, bytea as its bytes */
    int ok = PQsendQueryParams(p->conn, sql, 0, NULL, NULL, NULL, NULL, 1);
    free(sql);
    if (!ok || !PQsetSingleRowMode(p->conn)) {
        set_err(err, errlen, "replay", p->conn);
        return -1;
    }
    /* Rows are taken one by one as they come.  Replay runs at start-up,
       before the persistence thread: no deadline (a big table takes time). */
    enum pg_wait w = flush_request(p->conn, 0);
    int rc = 0;
    PGresult *r;
    while (w == PG_READY && (w = next_result(p->conn, 0, &r)) == PG_READY && r) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            if (replay_row(p, r, rc == 0 ? cb : NULL, arg) < 0)
                rc = 1; /* cb asked to stop: read the rest, replay no more */
        } else if (st != PGRES_TUPLES_OK) {
            set_err(err, errlen, "replay", p->conn);
            rc = -1;
        }
        PQclear(r);
    }
    if (w != PG_READY)
        rc = lost(p, w, "replay", err, errlen);
    else if (lifted && run(p, "COMMIT", err, errlen) < 0)
        rc = -1;
    return rc < 0 ? -1 : 0;
}

static bool
array_reserve(struct pg_array *a, size_t more)
{
    if (a->len + more <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + more)
        cap *= 2;
    char *b = realloc(a->buf, cap);
    if (!b)
        return false;
    a->buf = b;
    a->cap = cap;
    return true;
}

static void
put_be32(char *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

/* Starts an empty array: dimensions, no-null flag, element type, then the
   one dimension's length (filled in by array_finish) and lower bound. */
static void
array_start(struct pg_array *a, uint32_t elem_oid)
{
    a->len = 0;
    a->n = 0;
    a->elem_oid = elem_oid;
    if (!array_reserve(a, 20))
        return;
    put_be32(a->buf, 1);
    put_be32(a->buf + 4, 0);
    put_be32(a->buf + 8, elem_oid);
    put_be32(a->buf + 12, 0);
    put_be32(a->buf + 16, 1);
    a->len = 20;
}

static bool
array_put(struct pg_array *a, const void *data, uint32_t len)
{
    if (a->len == 0 || !array_reserve(a, 4 + (size_t)len))
        return false;
    put_be32(a->buf + a->len, len);
    if (len)
        memcpy(a->buf + a->len + 4, data, len);
    a->len += 4 + (size_t)len;
    a->n++;
    return true;
}

static void
array_finish(struct pg_array *a)
{
    put_be32(a->buf + 12, a->n);
}

/* Fills the column arrays from the batch; *counter gets the highest handle
   counter in it (-1: none).  Returns false if memory ran out. */
static bool
fill_arrays(struct pg *p, const struct gm_qrecord *recs, size_t n, long long *counter)
{
    static const uint32_t oids[NCOLS] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_BYTEA, OID_INT8, OID_BYTEA,
                                         OID_TEXT};
    for (int c = 0; c < NCOLS; c++)
        array_start(&p->col[c], oids[c]);
    *counter = -1;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const struct gm_qrecord *r = &recs[i];
        if (r->op == GM_QOP_COUNTER) {
            if (r->when > *counter)
                *counter = r->when;
            continue;
        }
        if (!p->last.last[i])
            continue;
        if (r->op == GM_QOP_DONE) {
            ok = array_put(&p->col[COL_DONE], r->handle, r->handle_len);
            continue;
        }
        char prio[4], when[8];
        put_be32(prio, r->priority);
        put_be32(when, (uint32_t)((uint64_t)r->when >> 32));
        put_be32(when + 4, (uint32_t)r->when);
        ok = array_put(&p->col[COL_HANDLE], r->handle, r->handle_len) &&
             array_put(&p->col[COL_UNIQUE], r->unique, r->unique_len) &&
             array_put(&p->col[COL_FUNCTION], r->function, r->function_len) &&
             array_put(&p->col[COL_PRIORITY], prio, 4) &&
             array_put(&p->col[COL_DATA], r->data ? r->data : "", r->data_len) &&
             array_put(&p->col[COL_WHEN], when, 8) &&
             array_put(&p->col[COL_LIFE], r->lifecycle_len ? r->lifecycle : "", r->lifecycle_len);
    }
    for (int c = 0; c < NCOLS && ok; c++)
        array_finish(&p->col[c]);
    return ok;
}

/* Sends the batch's statements (at most three) and a Sync. */
static bool
send_batch(struct pg *p, const struct gm_qrecord *recs, size_t n, long long counter)
{
    int fmts[NADD] = {1, 1, 1, 1, 1, 1, 1};
    if (p->col[COL_HANDLE].n) {
        const char *v[NADD];
        int len[NADD];
        for (int c = 0; c < NADD; c++) {
            v[c] = p->col[c].buf;
            len[c] = (int)p->col[c].len;
        }
        if (!PQsendQueryPrepared(p->conn, "gm_add", NADD, v, len, fmts, 0))
            return false;
    }
    if (p->col[COL_DONE].n) {
        const char *v[1] = {p->col[COL_DONE].buf};
        int len[1] = {(int)p->col[COL_DONE].len};
        if (!PQsendQueryPrepared(p->conn, "gm_done", 1, v, len, fmts, 0))
            return false;
    }
    /* policies (rare), in their order, as text */
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        if (r->op != GM_QOP_POLICY)
            continue;
        const char *v[3] = {p->table_raw, r->function, r->data};
        int len[3] = {(int)strlen(p->table_raw), (int)r->function_len, (int)r->data_len};
        int bin[3] = {0, 1, 1}; /* the names and the text go as their bytes */
        if (!PQsendQueryPrepared(p->conn, r->data_len ? "gm_policy_set" : "gm_policy_del", r->data_len ? 3 : 2, v,
                                 len, bin, 0))
            return false;
    }
    if (counter >= 0) {
        char when[24];
        snprintf(when, sizeof when, "%lld", counter);
        const char *v[2] = {p->counter_name, when};
        if (!PQsendQueryPrepared(p->conn, "gm_counter", 2, v, NULL, NULL, 0))
            return false;
    }
    return PQpipelineSync(p->conn) == 1;
}

static int
pg_write_batch(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    struct pg *p = state;
    p->bounded = true;
    if (PQstatus(p->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "not connected");
        return -1;
    }
    if (!p->timeouts_set && set_timeouts(p, err, errlen) < 0)
        return -1;
    long long counter;
    if (!gm_qlast_mark(&p->last, recs, n) || !fill_arrays(p, recs, n, &counter)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!PQenterPipelineMode(p->conn)) {
        set_err(err, errlen, "pipeline", p->conn);
        return -1;
    }
    /* Every result up to the Sync is read: the server ran the batch as one
       implicit transaction, so one error means none of it was kept. */
    int rc = finish(p, send_batch(p, recs, n, counter), true, NULL, "batch", err, errlen);
    if (p->conn && !PQexitPipelineMode(p->conn)) {
        /* a send that failed half-way leaves the pipeline unfinished */
        if (rc == 0)
            set_err(err, errlen, "pipeline", p->conn);
        rc = -1;
        p->down = true;
    }
    return rc;
}

static int
pg_load_policies(void *state, gm_qpolicy_cb cb, void *arg, char *err, size_t errlen)
{
    struct pg *p = state;
    PGresult *r = query1(p, "SELECT function, policy FROM gearmand_policies WHERE queue = $1 ORDER BY function",
                         p->table_raw, "reading the policies", err, errlen);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++)
        cb(arg, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), PQgetvalue(r, i, 1),
           (size_t)PQgetlength(r, i, 1));
    PQclear(r);
    return 0;
}

static int
pg_load_counter(void *state, uint64_t *next, char *err, size_t errlen)
{
    struct pg *p = state;
    *next = 0;
    PGresult *r = query1(p, "SELECT value FROM gearmand_meta WHERE name = $1", p->counter_name,
                         "reading the handle counter", err, errlen);
    if (!r)
        return -1;
    if (PQntuples(r) == 1)
        *next = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

static bool
pg_alive(void *state)
{
    struct pg *p = state;
    return p->conn && !p->down && PQstatus(p->conn) == CONNECTION_OK &&
           PQtransactionStatus(p->conn) == PQTRANS_IDLE;
}

/* Builds a new connection (never PQreset: the old one may be wedged in
   the middle of a pipeline), bounded like every call of this thread. */
static int
pg_reconnect(void *state, char *err, size_t errlen)
{
    struct pg *p = state;
    p->bounded = true;
    return start_session(p, "reconnect", err, errlen);
}

static int
pg_lead(void *state, char *err, size_t errlen)
{
    struct pg *p = state;
    p->bounded = true;
    if (!pg_alive(p)) {
        snprintf(err, errlen, "not connected");
        return -1;
    }
    if (!p->timeouts_set && set_timeouts(p, err, errlen) < 0)
        return -1;
    if (p->leader) {
        /* held for as long as the session lives */
        if (run(p, "SELECT 1", err, errlen) == 0)
            return 1;
        p->leader = false;
        return -1;
    }
    PGresult *r = query1(p, "SELECT pg_try_advisory_lock($1::bigint)", p->lock_key, "taking the queue lock", err,
                         errlen);
    if (!r)
        return -1;
    p->leader = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return p->leader ? 1 : 0;
}

static void
pg_close(void *state)
{
    struct pg *p = state;
    if (!p)
        return;
    drop_conn(p);
    free(p->conninfo);
    free(p->table);
    free(p->table_raw);
    free(p->prefix);
    free(p->counter_name);
    for (int c = 0; c < NCOLS; c++)
        free(p->col[c].buf);
    gm_qlast_free(&p->last);
    free(p);
}

static const char *const pg_aliases[] = {"postgres", "postgresql", "libpq", NULL};

const struct gm_queue_backend gm_queue_postgres = {
    .name = "Postgres",
    .aliases = pg_aliases,
    .stores_epoch = true,
    .open = pg_open,
    .replay = pg_replay,
    .write_batch = pg_write_batch,
    .load_counter = pg_load_counter,
    .load_policies = pg_load_policies,
    .alive = pg_alive,
    .reconnect = pg_reconnect,
    .lead = pg_lead,
    .close = pg_close,
};
