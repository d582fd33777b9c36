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
 * whole.  When the server goes away the batch fails; reconnect() resets
 * the connection and prepares the statements again.
 *
 * Table layout: gearmand 1.1.20's columns plus job_handle (the row's
 * identity) and seq (insertion order for replay).  A 1.1.20 table is
 * migrated when opened, in one transaction.
 */
#include "config.h"

#include "plugins/queue/backends.h"
#include "plugins/queue/sql_ident.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/log.h"

/* A one-dimensional array parameter in PostgreSQL's binary format, built
   in place and reused from batch to batch. */
struct pg_array {
    char *buf;
    size_t len, cap;
    uint32_t n;
    uint32_t elem_oid;
};

/* The columns of a batch's INSERT, and the handles of its DELETE. */
enum { COL_HANDLE, COL_UNIQUE, COL_FUNCTION, COL_PRIORITY, COL_DATA, COL_WHEN, COL_DONE, NCOLS };

struct pg {
    PGconn *conn;
    char *counter_name;   /* the handle counter's row in gearmand_meta */
    char *conninfo;
    char *table;      /* quoted identifier */
    char *table_raw;  /* as given, for information_schema */
    char *prefix;
    struct pg_array col[NCOLS];
    size_t *order;    /* scratch: record indices sorted by handle */
    bool *last;       /* scratch: the record is its handle's last in the batch */
    size_t scratch_cap;
};

/* Element type OIDs (pg_type.h): text, bytea, int4, int8. */
#define OID_TEXT 25
#define OID_BYTEA 17
#define OID_INT4 23
#define OID_INT8 20

static void
set_err(char *err, size_t len, const char *what, PGconn *c)
{
    const char *msg = c ? PQerrorMessage(c) : "out of memory";
    snprintf(err, len, "%s: %.*s", what, (int)strcspn(msg, "\n"), msg);
}

/* Runs one command; returns 0 if it succeeded. */
static int
run(struct pg *p, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(p->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc < 0)
        set_err(err, errlen, sql, p->conn);
    PQclear(r);
    return rc;
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
    PGresult *r = PQexecParams(p->conn, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        return r;
    set_err(err, errlen, what, p->conn);
    PQclear(r);
    return NULL;
}

/* Which columns the table has: 0 no table, 1 ours, 2 gearmand 1.1's, -1 other. */
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
    bool handle = false, seq = false, unique = false, fn = false, prio = false, data = false;
    for (int i = 0; i < n; i++) {
        const char *c = PQgetvalue(r, i, 0);
        handle |= strcmp(c, "job_handle") == 0;
        seq |= strcmp(c, "seq") == 0;
        unique |= strcmp(c, "unique_key") == 0;
        fn |= strcmp(c, "function_name") == 0;
        prio |= strcmp(c, "priority") == 0;
        data |= strcmp(c, "data") == 0;
    }
    PQclear(r);
    if (n == 0)
        return 0;
    if (!(unique && fn && prio && data)) {
        snprintf(err, errlen, "table %s exists with columns this server does not know", p->table);
        return -1;
    }
    return handle && seq ? 1 : 2;
}

static int
prepare(struct pg *p, char *err, size_t errlen)
{
    /* Rows are inserted in array order (seq is replay order). */
    char *add = fmt("INSERT INTO %s (job_handle, unique_key, function_name, priority, data, "
                    "when_to_run) SELECT h, u, f, p, d, w FROM unnest($1::text[], $2::text[], "
                    "$3::text[], $4::integer[], $5::bytea[], $6::bigint[]) WITH ORDINALITY "
                    "AS x(h, u, f, p, d, w, o) ORDER BY o "
                    "ON CONFLICT (job_handle) DO UPDATE SET unique_key = EXCLUDED.unique_key, "
                    "function_name = EXCLUDED.function_name, priority = EXCLUDED.priority, "
                    "data = EXCLUDED.data, when_to_run = EXCLUDED.when_to_run",
                    p->table);
    char *done = fmt("DELETE FROM %s WHERE job_handle = ANY($1::text[])", p->table);
    PGresult *cr = PQprepare(p->conn, "gm_counter",
                             "INSERT INTO gearmand_meta (name, value) VALUES ($1, $2::bigint) "
                             "ON CONFLICT (name) DO UPDATE SET value = GREATEST(gearmand_meta.value, EXCLUDED.value)",
                             2, NULL);
    if (PQresultStatus(cr) != PGRES_COMMAND_OK) {
        set_err(err, errlen, "prepare counter", p->conn);
        PQclear(cr);
        free(add);
        free(done);
        return -1;
    }
    PQclear(cr);
    int rc = -1;
    if (!add || !done) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    PGresult *r = PQprepare(p->conn, "gm_add", add, 6, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        set_err(err, errlen, "prepare add", p->conn);
        PQclear(r);
        goto out;
    }
    PQclear(r);
    r = PQprepare(p->conn, "gm_done", done, 1, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        set_err(err, errlen, "prepare done", p->conn);
        PQclear(r);
        goto out;
    }
    PQclear(r);
    rc = 0;
out:
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
    if (run(p, "CREATE TABLE IF NOT EXISTS gearmand_meta (name TEXT PRIMARY KEY, value BIGINT)", err, errlen) < 0)
        return -1;
    int layout = table_layout(p, err, errlen);
    if (layout < 0)
        return -1;
    if (layout == 0)
        return run_fmt(p, err, errlen,
                       "CREATE TABLE IF NOT EXISTS %s (unique_key TEXT, function_name TEXT, "
                       "priority INTEGER, data BYTEA, when_to_run BIGINT, "
                       "job_handle TEXT PRIMARY KEY, seq BIGSERIAL)",
                       p->table);
    if (layout == 1)
        return 0;
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

static void pg_close(void *state);
static void *
pg_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    struct pg *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *t = opts->pg_table && *opts->pg_table ? opts->pg_table : "queue";
    p->conninfo = strdup(opts->pg_conninfo ? opts->pg_conninfo : "");
    p->table = gm_sql_quote_ident(t);
    p->table_raw = strdup(t);
    p->prefix = strdup(opts->handle_prefix ? opts->handle_prefix : "H:migrated");
    p->counter_name = fmt("next_handle:%s", t);
    if (!p->conninfo || !p->table || !p->table_raw || !p->prefix || !p->counter_name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    p->conn = PQconnectdb(p->conninfo);
    if (!p->conn || PQstatus(p->conn) != CONNECTION_OK) {
        set_err(err, errlen, "cannot connect", p->conn);
        goto fail;
    }
    if (run(p, "SET client_min_messages = warning", err, errlen) < 0 ||
        setup_table(p, err, errlen) < 0 || prepare(p, err, errlen) < 0)
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

static int
pg_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct pg *p = state;
    char *sql = fmt("SELECT job_handle, unique_key, function_name, priority, data, when_to_run, seq "
                    "FROM %s ORDER BY seq",
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
    int rc = 0;
    PGresult *r;
    while ((r = PQgetResult(p->conn))) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            struct gm_qrow row;
            memset(&row, 0, sizeof row);
            if (PQgetisnull(r, 0, 0) || PQgetisnull(r, 0, 2) || PQgetisnull(r, 0, 3) ||
                PQgetlength(r, 0, 3) != 4 || (!PQgetisnull(r, 0, 5) && PQgetlength(r, 0, 5) != 8)) {
                gm_log(GM_LOG_ERROR, "Postgres: a row of %s has NULL or odd columns; kept, not replayed",
                       p->table);
            } else {
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
                if (rc == 0 && cb(arg, &row) < 0)
                    rc = 1;
            }
        } else if (st != PGRES_TUPLES_OK) {
            set_err(err, errlen, "replay", p->conn);
            rc = -1;
        }
        PQclear(r);
    }
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

static const struct gm_qrecord *sort_recs; /* for cmp_by_handle; persistence thread only */

static int
cmp_by_handle(const void *x, const void *y)
{
    const struct gm_qrecord *a = &sort_recs[*(const size_t *)x], *b = &sort_recs[*(const size_t *)y];
    uint32_t n = a->handle_len < b->handle_len ? a->handle_len : b->handle_len;
    int d = memcmp(a->handle, b->handle, n);
    if (d == 0)
        d = (a->handle_len > b->handle_len) - (a->handle_len < b->handle_len);
    if (d == 0)
        d = (*(const size_t *)x > *(const size_t *)y) - (*(const size_t *)x < *(const size_t *)y);
    return d;
}

/* Marks in p->last the records that decide their handle's final state:
   the later of an ADD and a DONE of one handle is what the batch means,
   and one statement may not touch a row twice. */
static bool
mark_last_per_handle(struct pg *p, const struct gm_qrecord *recs, size_t n)
{
    if (n > p->scratch_cap) {
        size_t *o = realloc(p->order, n * sizeof *o);
        if (o)
            p->order = o;
        bool *l = realloc(p->last, n * sizeof *l);
        if (l)
            p->last = l;
        if (!o || !l)
            return false;
        p->scratch_cap = n;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        p->last[i] = false;
        if (recs[i].op != GM_QOP_COUNTER)
            p->order[m++] = i;
    }
    sort_recs = recs;
    qsort(p->order, m, sizeof *p->order, cmp_by_handle);
    for (size_t k = 0; k < m; k++) {
        const struct gm_qrecord *a = &recs[p->order[k]], *b = k + 1 < m ? &recs[p->order[k + 1]] : NULL;
        if (!b || a->handle_len != b->handle_len || memcmp(a->handle, b->handle, a->handle_len) != 0)
            p->last[p->order[k]] = true;
    }
    return true;
}

/* Fills the column arrays from the batch; *counter gets the highest handle
   counter in it (-1: none).  Returns false if memory ran out. */
static bool
fill_arrays(struct pg *p, const struct gm_qrecord *recs, size_t n, long long *counter)
{
    static const uint32_t oids[NCOLS] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT4, OID_BYTEA, OID_INT8, OID_TEXT};
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
        if (!p->last[i])
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
             array_put(&p->col[COL_WHEN], when, 8);
    }
    for (int c = 0; c < NCOLS && ok; c++)
        array_finish(&p->col[c]);
    return ok;
}

/* Sends the batch's statements (at most three) and a Sync. */
static bool
send_batch(struct pg *p, long long counter)
{
    int fmts[6] = {1, 1, 1, 1, 1, 1};
    if (p->col[COL_HANDLE].n) {
        const char *v[6];
        int len[6];
        for (int c = 0; c < 6; c++) {
            v[c] = p->col[c].buf;
            len[c] = (int)p->col[c].len;
        }
        if (!PQsendQueryPrepared(p->conn, "gm_add", 6, v, len, fmts, 0))
            return false;
    }
    if (p->col[COL_DONE].n) {
        const char *v[1] = {p->col[COL_DONE].buf};
        int len[1] = {(int)p->col[COL_DONE].len};
        if (!PQsendQueryPrepared(p->conn, "gm_done", 1, v, len, fmts, 0))
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
    if (PQstatus(p->conn) != CONNECTION_OK) {
        snprintf(err, errlen, "not connected");
        return -1;
    }
    long long counter;
    if (!mark_last_per_handle(p, recs, n) || !fill_arrays(p, recs, n, &counter)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!PQenterPipelineMode(p->conn)) {
        set_err(err, errlen, "pipeline", p->conn);
        return -1;
    }
    int rc = 0;
    if (!send_batch(p, counter)) {
        set_err(err, errlen, "sending batch", p->conn);
        rc = -1;
    }
    /* Read every result up to the sync: the server ran the batch as one
       implicit transaction, so one error means none of it was kept.
       Results are separated by NULLs; a dead connection ends the loop. */
    if (rc == 0) {
        for (;;) {
            PGresult *r = PQgetResult(p->conn);
            if (!r) {
                if (PQstatus(p->conn) != CONNECTION_OK) {
                    set_err(err, errlen, "batch", p->conn);
                    rc = -1;
                    break;
                }
                continue;
            }
            ExecStatusType st = PQresultStatus(r);
            if (st != PGRES_COMMAND_OK && st != PGRES_PIPELINE_SYNC && rc == 0) {
                const char *m = PQresultErrorMessage(r);
                snprintf(err, errlen, "batch: %.*s", (int)strcspn(m, "\n"), m);
                rc = -1;
            }
            PQclear(r);
            if (st == PGRES_PIPELINE_SYNC)
                break;
        }
    }
    if (!PQexitPipelineMode(p->conn) && rc == 0) {
        set_err(err, errlen, "pipeline", p->conn);
        rc = -1;
    }
    return rc;
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
    return PQstatus(p->conn) == CONNECTION_OK && PQtransactionStatus(p->conn) == PQTRANS_IDLE;
}

static int
pg_reconnect(void *state, char *err, size_t errlen)
{
    struct pg *p = state;
    if (PQpipelineStatus(p->conn) != PQ_PIPELINE_OFF)
        PQexitPipelineMode(p->conn);
    PQreset(p->conn);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        set_err(err, errlen, "reconnect", p->conn);
        return -1;
    }
    if (run(p, "SET client_min_messages = warning", err, errlen) < 0 ||
        setup_table(p, err, errlen) < 0 || prepare(p, err, errlen) < 0)
        return -1;
    return 0;
}

static void
pg_close(void *state)
{
    struct pg *p = state;
    if (!p)
        return;
    if (p->conn)
        PQfinish(p->conn);
    free(p->conninfo);
    free(p->table);
    free(p->table_raw);
    free(p->prefix);
    free(p->counter_name);
    for (int c = 0; c < NCOLS; c++)
        free(p->col[c].buf);
    free(p->order);
    free(p->last);
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
    .alive = pg_alive,
    .reconnect = pg_reconnect,
    .close = pg_close,
};
