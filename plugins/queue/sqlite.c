/*
 * plugins/queue/sqlite.c: the SQLite durable queue (-q libsqlite3, alias
 * sqlite), the embedded default for durability.
 *
 * Owns one database connection, used only by the persistence thread (and
 * by the main thread for open/replay before that thread starts).  Each
 * batch is one transaction in WAL mode with synchronous=FULL, so one fsync
 * makes a whole batch durable.
 *
 * Table layout: gearmand 1.1.20's columns (unique_key, function_name,
 * priority, data, when_to_run) plus job_handle, the row's identity, so that
 * jobs with empty or repeated unique keys each keep their row, and
 * lifecycle (the core's bytes about a job's attempts and death, NULL for
 * most jobs; added to a table made before it existed).  A table in
 * 1.1.20's layout is migrated when opened, in one transaction: its rows keep
 * their order and get the handles "<prefix>:<rowid>".
 */
#include "config.h"

#include "plugins/queue/backends.h"
#include "plugins/queue/sql_ident.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

struct sq {
    sqlite3 *db;
    char *table;          /* quoted identifier */
    char *counter_name;   /* the handle counter's row in gearmand_meta */
    bool store_on_shutdown;
    sqlite3_stmt *insert, *delete, *counter, *begin, *commit, *rollback;
};

static void
set_err(char *err, size_t len, const char *what, sqlite3 *db)
{
    snprintf(err, len, "%s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

/* Returns "name" quoted as an SQL identifier (caller frees). */
static int
exec_sql(struct sq *s, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Runs SQL built with sqlite3_vmprintf (%Q quotes a literal). */
static int
exec_fmt(struct sq *s, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    if (!sql) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = exec_sql(s, sql, err, errlen);
    sqlite3_free(sql);
    return rc;
}

/* Which layout the table has: 0 none, 1 ours, 2 gearmand 1.1.20's (with
   when_to_run), 3 older gearmand (no when_to_run), -1 unknown.  *life:
   it has the lifecycle column. */
static int
table_layout(struct sq *s, bool *life)
{
    char *sql = sqlite3_mprintf("PRAGMA table_info(%s)", s->table);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK)
        return -1;
    int cols = 0;
    bool handle = false, when = false, unique = false, fn = false, prio = false, data = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        cols++;
        if (!name)
            continue;
        handle |= strcmp(name, "job_handle") == 0;
        *life |= strcmp(name, "lifecycle") == 0;
        when |= strcmp(name, "when_to_run") == 0;
        unique |= strcmp(name, "unique_key") == 0;
        fn |= strcmp(name, "function_name") == 0;
        prio |= strcmp(name, "priority") == 0;
        data |= strcmp(name, "data") == 0;
    }
    sqlite3_finalize(st);
    if (cols == 0)
        return 0;
    if (!(unique && fn && prio && data))
        return -1;
    if (handle)
        return when ? 1 : -1;
    return when ? 2 : 3;
}

static int
create_table(struct sq *s, const char *name, char *err, size_t errlen)
{
    return exec_fmt(s, err, errlen,
                    "CREATE TABLE %s (unique_key TEXT, function_name TEXT, priority INTEGER, "
                    "data BLOB, when_to_run INTEGER, job_handle TEXT PRIMARY KEY, lifecycle BLOB)",
                    name);
}

/* Rebuilds a gearmand 1.1.20 table in our layout, in one transaction. */
static int
migrate(struct sq *s, int layout, const char *prefix, char *err, size_t errlen)
{
    char *old = sqlite3_mprintf("\"gearmand_1_1_migration\"");
    if (!old) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = -1;
    if (exec_sql(s, "BEGIN IMMEDIATE", err, errlen) < 0)
        goto out;
    if (exec_fmt(s, err, errlen, "ALTER TABLE %s RENAME TO %s", s->table, old) < 0 ||
        create_table(s, s->table, err, errlen) < 0 ||
        exec_fmt(s, err, errlen,
                 "INSERT INTO %s (unique_key, function_name, priority, data, when_to_run, job_handle) "
                 "SELECT unique_key, function_name, priority, data, %s, %Q || ':' || rowid "
                 "FROM %s ORDER BY rowid",
                 s->table, layout == 2 ? "when_to_run" : "0", prefix, old) < 0 ||
        exec_fmt(s, err, errlen, "DROP TABLE %s", old) < 0 || exec_sql(s, "COMMIT", err, errlen) < 0) {
        char ignored[64];
        exec_sql(s, "ROLLBACK", ignored, sizeof ignored);
        goto out;
    }
    gm_log(GM_LOG_NOTICE, "libsqlite3: migrated table %s from gearmand 1.1 layout", s->table);
    rc = 0;
out:
    sqlite3_free(old);
    return rc;
}

static void sq_close(void *state);

static int
prepare(struct sq *s, sqlite3_stmt **st, const char *sql, char *err, size_t errlen)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        set_err(err, errlen, sql, s->db);
        return -1;
    }
    return 0;
}

static void *
sq_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    const char *path = gm_queue_opt_or(opts, "libsqlite3-db", GM_SQLITE_DEFAULT_DB);
    struct sq *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->store_on_shutdown = opts->store_on_shutdown;
    const char *table = gm_queue_opt_or(opts, "libsqlite3-table", "gearman_queue");
    s->table = gm_sql_quote_ident(table);
    if (!s->table) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 6000);
    /* WAL: a commit appends to the log and fsyncs it once (synchronous=FULL). */
    if (exec_sql(s, "PRAGMA journal_mode=WAL", err, errlen) < 0 ||
        exec_sql(s, "PRAGMA synchronous=FULL", err, errlen) < 0)
        goto fail;
    bool life = false;
    int layout = table_layout(s, &life);
    if (layout < 0) {
        snprintf(err, errlen, "table %s exists with columns this server does not know", s->table);
        goto fail;
    }
    if (layout == 0 && create_table(s, s->table, err, errlen) < 0)
        goto fail;
    if (exec_sql(s, "CREATE TABLE IF NOT EXISTS gearmand_meta (name TEXT PRIMARY KEY, value INTEGER)", err,
                 errlen) < 0)
        goto fail;
    s->counter_name = sqlite3_mprintf("next_handle:%s", table);
    if (!s->counter_name) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if ((layout == 2 || layout == 3) &&
        migrate(s, layout, opts->handle_prefix ? opts->handle_prefix : "H:migrated", err, errlen) < 0)
        goto fail;
    if (layout == 1 && !life && exec_fmt(s, err, errlen, "ALTER TABLE %s ADD COLUMN lifecycle BLOB", s->table) < 0)
        goto fail;
    char *sql = sqlite3_mprintf("INSERT OR REPLACE INTO %s (job_handle, unique_key, function_name, "
                                "priority, data, when_to_run, lifecycle) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                s->table);
    int rc = sql ? prepare(s, &s->insert, sql, err, errlen) : -1;
    sqlite3_free(sql);
    if (rc < 0)
        goto fail;
    sql = sqlite3_mprintf("DELETE FROM %s WHERE job_handle = ?1", s->table);
    rc = sql ? prepare(s, &s->delete, sql, err, errlen) : -1;
    sqlite3_free(sql);
    if (rc < 0 ||
        prepare(s, &s->counter, "INSERT OR REPLACE INTO gearmand_meta (name, value) VALUES (?1, ?2)", err,
                errlen) < 0 ||
        prepare(s, &s->begin, "BEGIN IMMEDIATE", err, errlen) < 0 ||
        prepare(s, &s->commit, "COMMIT", err, errlen) < 0 ||
        prepare(s, &s->rollback, "ROLLBACK", err, errlen) < 0)
        goto fail;
    return s;
fail:
    sq_close(s);
    return NULL;
}

static const char *
text_or_empty(sqlite3_stmt *st, int col, uint32_t *len)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    *len = t ? (uint32_t)sqlite3_column_bytes(st, col) : 0;
    return t ? t : "";
}

static int
step_done(struct sq *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Ends the transaction: COMMIT, or ROLLBACK if that fails (0 or -1). */
static int
commit(struct sq *s, char *err, size_t errlen)
{
    if (step_done(s, s->commit) == 0)
        return 0;
    set_err(err, errlen, "COMMIT", s->db);
    step_done(s, s->rollback);
    return -1;
}

/* Rows replay handed over, as runs of consecutive rows in rowid order (a
   row left stored ends a run): with --store-queue-on-shutdown exactly these
   are deleted after replay, usually with a single statement. */
struct runs {
    sqlite3_int64 (*r)[2]; /* first and last rowid of each run */
    size_t n, cap;
    bool open;             /* the last run may still grow */
};

/* Adds rowid (above every rowid added so far) to the current run, or starts
   one; returns 0, or -1 if memory is short. */
static int
runs_take(struct runs *rs, sqlite3_int64 rowid)
{
    if (rs->open) {
        rs->r[rs->n - 1][1] = rowid;
        return 0;
    }
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 16;
        void *r = realloc(rs->r, cap * sizeof *rs->r);
        if (!r)
            return -1;
        rs->r = r;
        rs->cap = cap;
    }
    rs->r[rs->n][0] = rs->r[rs->n][1] = rowid;
    rs->n++;
    rs->open = true;
    return 0;
}

/* Deletes the rows of every run, in one transaction; returns 0 or -1. */
static int
delete_runs(struct sq *s, const struct runs *rs, char *err, size_t errlen)
{
    if (rs->n == 0)
        return 0;
    char *sql = sqlite3_mprintf("DELETE FROM %s WHERE rowid BETWEEN ?1 AND ?2", s->table);
    if (!sql) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sqlite3_stmt *del = NULL;
    int rc = prepare(s, &del, sql, err, errlen);
    sqlite3_free(sql);
    if (rc < 0)
        return -1;
    if (step_done(s, s->begin) < 0) {
        set_err(err, errlen, "BEGIN", s->db);
        sqlite3_finalize(del);
        return -1;
    }
    for (size_t i = 0; i < rs->n; i++) {
        sqlite3_bind_int64(del, 1, rs->r[i][0]);
        sqlite3_bind_int64(del, 2, rs->r[i][1]);
        if (step_done(s, del) < 0) {
            set_err(err, errlen, "deleting the replayed rows", s->db);
            sqlite3_finalize(del);
            step_done(s, s->rollback);
            return -1;
        }
    }
    sqlite3_finalize(del);
    return commit(s, err, errlen);
}

static int
sq_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct sq *s = state;
    struct runs taken = {NULL, 0, 0, false};
    gm_log(GM_LOG_NOTICE, "libsqlite3: replaying table %s", s->table); /* may take a while */
    char *sql = sqlite3_mprintf("SELECT job_handle, unique_key, function_name, priority, data, "
                                "when_to_run, rowid, lifecycle FROM %s ORDER BY rowid",
                                s->table);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        set_err(err, errlen, "replay", s->db);
        return -1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct gm_qrow row;
        memset(&row, 0, sizeof row);
        long long rowid = sqlite3_column_int64(st, 6);
        if (sqlite3_column_type(st, 0) != SQLITE_TEXT || sqlite3_column_type(st, 2) != SQLITE_TEXT ||
            sqlite3_column_type(st, 3) != SQLITE_INTEGER) {
            gm_log(GM_LOG_ERROR, "libsqlite3: row %lld of %s has bad column types; kept, not replayed",
                   rowid, s->table);
            taken.open = false;
            continue;
        }
        row.handle = text_or_empty(st, 0, &row.handle_len);
        row.unique = text_or_empty(st, 1, &row.unique_len);
        row.function = text_or_empty(st, 2, &row.function_len);
        row.priority = sqlite3_column_int(st, 3);
        row.data = sqlite3_column_blob(st, 4);
        row.data_len = (uint32_t)sqlite3_column_bytes(st, 4);
        if (!row.data)
            row.data = "";
        row.when = sqlite3_column_int64(st, 5);
        row.lifecycle = sqlite3_column_blob(st, 7);
        row.lifecycle_len = row.lifecycle ? (uint32_t)sqlite3_column_bytes(st, 7) : 0;
        int r = cb(arg, &row);
        if (r != 0) {
            taken.open = false;
            if (r < 0)
                break;
        } else if (s->store_on_shutdown && runs_take(&taken, rowid) < 0) {
            snprintf(err, errlen, "out of memory");
            sqlite3_finalize(st);
            free(taken.r);
            return -1;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        set_err(err, errlen, "replay", s->db);
        free(taken.r);
        return -1;
    }
    /* With --store-queue-on-shutdown the replayed jobs are written again at
       the next clean stop; rows left stored (unreadable, or refused by the
       server) stay where they are. */
    int out = delete_runs(s, &taken, err, errlen);
    free(taken.r);
    return out;
}

static int
sq_write_batch(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    struct sq *s = state;
    if (step_done(s, s->begin) < 0) {
        set_err(err, errlen, "BEGIN", s->db);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        sqlite3_stmt *st = r->op == GM_QOP_ADD ? s->insert : r->op == GM_QOP_DONE ? s->delete : s->counter;
        if (r->op == GM_QOP_COUNTER) {
            sqlite3_bind_text(st, 1, s->counter_name, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, r->when);
        } else {
            sqlite3_bind_text(st, 1, r->handle, (int)r->handle_len, SQLITE_STATIC);
        }
        if (r->op == GM_QOP_ADD) {
            sqlite3_bind_text(st, 2, r->unique, (int)r->unique_len, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, r->function, (int)r->function_len, SQLITE_STATIC);
            sqlite3_bind_int(st, 4, r->priority);
            sqlite3_bind_blob(st, 5, r->data_len ? r->data : "", (int)r->data_len, SQLITE_STATIC);
            sqlite3_bind_int64(st, 6, r->when);
            if (r->lifecycle_len)
                sqlite3_bind_blob(st, 7, r->lifecycle, (int)r->lifecycle_len, SQLITE_STATIC);
            else
                sqlite3_bind_null(st, 7);
        }
        if (step_done(s, st) < 0) {
            set_err(err, errlen, r->op == GM_QOP_DONE ? "DELETE" : "INSERT", s->db);
            sqlite3_clear_bindings(st);
            step_done(s, s->rollback);
            return -1;
        }
        sqlite3_clear_bindings(st);
    }
    return commit(s, err, errlen);
}

static int
sq_load_counter(void *state, uint64_t *next, char *err, size_t errlen)
{
    struct sq *s = state;
    sqlite3_stmt *st = NULL;
    *next = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM gearmand_meta WHERE name = ?1", -1, &st, NULL) != SQLITE_OK) {
        set_err(err, errlen, "reading the handle counter", s->db);
        return -1;
    }
    sqlite3_bind_text(st, 1, s->counter_name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0)
        *next = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return 0;
}

static bool
sq_alive(void *state)
{
    (void)state;
    return true; /* a local file: a failed batch is a refused record (or a full disk) */
}

static int
sq_reconnect(void *state, char *err, size_t errlen)
{
    (void)state;
    (void)err;
    (void)errlen;
    return 0; /* a local file: the next batch simply tries again */
}

static void
sq_close(void *state)
{
    struct sq *s = state;
    if (!s)
        return;
    sqlite3_finalize(s->insert);
    sqlite3_finalize(s->delete);
    sqlite3_finalize(s->counter);
    sqlite3_free(s->counter_name);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    sqlite3_finalize(s->rollback);
    if (s->db)
        sqlite3_close(s->db);
    free(s->table);
    free(s);
}

static const char *const sq_aliases[] = {"sqlite", "sqlite3", NULL};

const struct gm_queue_backend gm_queue_sqlite = {
    .name = "libsqlite3",
    .aliases = sq_aliases,
    .stores_epoch = true,
    .stores_on_shutdown = true,
    .open = sq_open,
    .replay = sq_replay,
    .write_batch = sq_write_batch,
    .load_counter = sq_load_counter,
    .alive = sq_alive,
    .reconnect = sq_reconnect,
    .close = sq_close,
};
