/*
 * plugins/queue/mysql.c: the MySQL / MariaDB durable queue (-q MySQL,
 * aliases mysql, libdrizzle), on libmariadb.
 *
 * Owns one connection, used only by the persistence thread (and by the
 * main thread for open/replay before that thread starts).  A batch is one
 * transaction sent as one multi-statement query, in one round trip unless
 * it is larger than the server's max_allowed_packet: BEGIN, one multi-row
 * INSERT of every job it adds (ON DUPLICATE KEY UPDATE: an ADD of a stored
 * handle replaces it), one DELETE ... WHERE job_handle IN (...) of every
 * job it finishes, its policies, the handle counter, COMMIT.  A statement
 * that fails stops the rest; the transaction is then rolled back, so the
 * batch is durable (or not) as a whole.  The table is InnoDB; the server's
 * innodb_flush_log_at_trx_commit decides how durable a COMMIT is (1, the
 * default, is what the guarantee of docs/persistence.md needs).
 *
 * Values travel as escaped literals over a connection whose character set
 * is binary, into VARBINARY/BLOB columns: bytes are stored as given.
 *
 * Bounds.  The persistence thread's session (made at its first batch, and
 * by reconnect()) has client-side read and write timeouts (MY_ANSWER_S)
 * and server-side max_statement_time and lock wait timeouts
 * (MY_STATEMENT_S): a server that stops answering or a lock held on the
 * table fails the batch in bounded time and marks the backend down
 * (alive() false); reconnect() builds a new connection.  Never libmariadb's
 * own reconnect and no retry loop here: the persistence thread retries with
 * backoff.  A session given up while the server may still run its batch
 * is ended (KILL) before the new session writes anything (end_orphan()).
 * A connection idle for a second is pinged before a batch, and replaced
 * if the server (wait_timeout) or a firewall closed it meanwhile.
 * A job too big for max_allowed_packet fails its batch with the
 * backend still alive, so the persistence thread retries record by record
 * and only that job is refused.  Open and replay at start-up have no read
 * timeout (a migration or a big replay takes time); their connect is
 * bounded by MY_CONNECT_S.
 *
 * Table layout: job_handle (the row's identity, unique), seq (insertion
 * order for replay, the InnoDB clustered key), unique_key, function_name,
 * priority, data, when_to_run, lifecycle.  A table written by gearmand
 * 1.1.20 (its columns, keyed on (unique_key, function_name)) is migrated
 * when opened: seq numbers the rows in their stored order and each gets
 * the handle "<prefix>:<seq>".  Run-time policies go to gearmand_policies
 * and the handle counter to gearmand_meta, in the batch's transaction.
 */
#include "config.h"

#include "plugins/queue/backends.h"
#include "plugins/queue/last_record.h"

#include <errno.h>
#include <inttypes.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/base/clock.h"
#include "libgearman-server/base/log.h"

#define MY_CONNECT_S 5   /* connect, also the longest reconnect backoff */
#define MY_ANSWER_S 15   /* a request with no answer: the connection is given up */
#define MY_STATEMENT_S 10 /* server side: a statement or a lock wait ends in an error */
#define MY_PACKET_SLACK 1024 /* bytes kept free of max_allowed_packet */
#define MY_IDLE_PING_MS 1000 /* a connection idle this long is pinged before a batch */
#define MY_STR_(x) #x
#define MY_STR(x) MY_STR_(x)

/* A growing text buffer for the query being built. */
struct qbuf {
    char *s;
    size_t len, cap;
    bool oom;
};

struct my {
    MYSQL *conn;          /* NULL once given up, until reconnect() */
    bool bounded;         /* conn has the persistence thread's deadlines */
    bool down;            /* a failure no batch can follow on this connection */
    char *host, *user, *password, *db, *socket;
    unsigned port;
    char *table;          /* `quoted` */
    char *table_lit;      /* 'quoted' string literal, for information_schema and the policies */
    char *counter_lit;    /* the handle counter's name in gearmand_meta, as a literal */
    char *prefix;         /* of migrated handles */
    char *add_head, *del_head; /* the batch's INSERT and DELETE up to their values */
    size_t max_query;     /* max_allowed_packet less slack */
    unsigned answer_s;    /* MY_ANSWER_S, or the test's "mysql-answer-timeout" */
    long long server_start; /* when this session's server started (Unix time) */
    unsigned long orphan_id; /* session given up with a batch it may still run, 0 = none */
    long long orphan_start;  /* ... on the server that started then */
    uint64_t last_used;   /* gm_mono_ms() of the last batch (bounded session) */
    struct qbuf q;
    struct gm_qlast last;
};

static void
set_err(struct my *m, char *err, size_t errlen, const char *what)
{
    if (m->conn)
        snprintf(err, errlen, "%s: %s (%u)", what, mysql_error(m->conn), mysql_errno(m->conn));
    else
        snprintf(err, errlen, "%s: not connected", what);
}

/* Errors that say the server could not serve this connection any more,
   rather than that a record was bad: the client's own (lost connection,
   timeout), a statement cancelled (max_statement_time, a shutdown, a
   kill), a lock wait that timed out. */
static bool
server_gave_up(unsigned e)
{
    return (e >= 2000 && e < 3000) || e == ER_LOCK_WAIT_TIMEOUT || e == ER_LOCK_DEADLOCK ||
           e == ER_QUERY_INTERRUPTED || e == ER_SERVER_SHUTDOWN || e == ER_STATEMENT_TIMEOUT ||
           e == ER_CONNECTION_KILLED || e == ER_NET_PACKET_TOO_LARGE;
}

static void
drop_conn(struct my *m)
{
    if (m->conn)
        mysql_close(m->conn);
    m->conn = NULL;
    m->bounded = false;
}

/* ---- building queries ---- */

static bool
qb_reserve(struct qbuf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

static void
qb_put(struct qbuf *b, const char *s, size_t n)
{
    if (!qb_reserve(b, n))
        return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void
qb_str(struct qbuf *b, const char *s)
{
    qb_put(b, s, strlen(s));
}

static void
qb_fmt(struct qbuf *b, const char *f, ...) __attribute__((format(printf, 2, 3)));

static void
qb_fmt(struct qbuf *b, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char tmp[64];
    int n = vsnprintf(tmp, sizeof tmp, f, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof tmp)
        qb_put(b, tmp, (size_t)n);
    else
        b->oom = true;
}

/* (qb_fmt is for numbers: what it prints must fit in 64 bytes.) */

/* Appends 'bytes', escaped for this connection (binary character set). */
static void
qb_lit(struct my *m, const char *s, size_t n)
{
    if (!qb_reserve(&m->q, 2 * n + 2))
        return;
    char *o = m->q.s + m->q.len;
    *o++ = '\'';
    o += mysql_real_escape_string(m->conn, o, s ? s : "", (unsigned long)n);
    *o++ = '\'';
    m->q.len = (size_t)(o - m->q.s);
    m->q.s[m->q.len] = '\0';
}

/* `name` as an identifier (backquotes doubled), malloc'd. */
static char *
quote_ident(const char *name)
{
    size_t n = strlen(name);
    char *q = malloc(2 * n + 3), *o = q;
    if (!q)
        return NULL;
    *o++ = '`';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '`')
            *o++ = '`';
        *o++ = name[i];
    }
    *o++ = '`';
    *o = '\0';
    return q;
}

/* 'text' as a string literal, escaped without a connection (backslashes
   and quotes), malloc'd; for names chosen on the command line. */
static char *
quote_text(const char *text)
{
    size_t n = strlen(text);
    char *q = malloc(2 * n + 3), *o = q;
    if (!q)
        return NULL;
    *o++ = '\'';
    for (size_t i = 0; i < n; i++) {
        if (text[i] == '\'' || text[i] == '\\')
            *o++ = text[i] == '\'' ? '\'' : '\\';
        *o++ = text[i];
    }
    *o++ = '\'';
    *o = '\0';
    return q;
}

/* ---- running queries ---- */

/*
 * Sends sql (one or more statements) and reads every result.  Returns 0
 * if all succeeded, else -1 with err saying `what` failed and why (the
 * statements after a failed one are not run).  *rows, when asked for,
 * gets the first result set (mysql_store_result), NULL if none.  A failure
 * of the connection or a statement the server cancelled marks m down.
 */
static int
run_sql(struct my *m, const char *sql, size_t len, MYSQL_RES **rows, const char *what, char *err,
        size_t errlen)
{
    if (rows)
        *rows = NULL;
    if (!m->conn) {
        set_err(m, err, errlen, what);
        return -1;
    }
    int rc = 0;
    if (mysql_real_query(m->conn, sql, (unsigned long)len) != 0) {
        rc = -1;
    } else {
        for (;;) {
            MYSQL_RES *r = mysql_store_result(m->conn);
            if (r && rows && !*rows)
                *rows = r;
            else if (r)
                mysql_free_result(r);
            else if (mysql_field_count(m->conn) != 0) {
                rc = -1;
                break;
            }
            int next = mysql_next_result(m->conn);
            if (next < 0)
                break;
            if (next > 0) {
                rc = -1;
                break;
            }
        }
    }
    if (rc < 0) {
        set_err(m, err, errlen, what);
        if (server_gave_up(mysql_errno(m->conn)))
            m->down = true;
        if (rows && *rows) {
            mysql_free_result(*rows);
            *rows = NULL;
        }
    }
    return rc;
}

static int
run(struct my *m, const char *sql, char *err, size_t errlen)
{
    return run_sql(m, sql, strlen(sql), NULL, sql, err, errlen);
}

static int
run_fmt(struct my *m, char *err, size_t errlen, const char *f, ...) __attribute__((format(printf, 4, 5)));

static int
run_fmt(struct my *m, char *err, size_t errlen, const char *f, ...)
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
    int rc = run(m, sql, err, errlen);
    free(sql);
    return rc;
}

/* Runs a query that gives rows; returns them, or NULL with err. */
static MYSQL_RES *
query_rows(struct my *m, const char *what, char *err, size_t errlen, const char *f, ...)
    __attribute__((format(printf, 5, 6)));

static MYSQL_RES *
query_rows(struct my *m, const char *what, char *err, size_t errlen, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *sql = NULL;
    int n = vasprintf(&sql, f, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    MYSQL_RES *r = NULL;
    if (run_sql(m, sql, (size_t)n, &r, what, err, errlen) == 0 && !r)
        snprintf(err, errlen, "%s: no rows", what);
    free(sql);
    return r;
}

/* ---- the session ---- */

/* Connects; with `bounded`, reads and writes time out (MY_ANSWER_S). */
static int
my_connect(struct my *m, bool bounded, const char *what, char *err, size_t errlen)
{
    drop_conn(m);
    m->down = false;
    m->conn = mysql_init(NULL);
    if (!m->conn) {
        snprintf(err, errlen, "%s: out of memory", what);
        return -1;
    }
    unsigned connect_s = MY_CONNECT_S, answer_s = m->answer_s;
    my_bool off = 0;
    mysql_options(m->conn, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
    if (bounded) {
        mysql_options(m->conn, MYSQL_OPT_READ_TIMEOUT, &answer_s);
        mysql_options(m->conn, MYSQL_OPT_WRITE_TIMEOUT, &answer_s);
    }
    mysql_options(m->conn, MYSQL_OPT_RECONNECT, &off);
    mysql_options(m->conn, MYSQL_SET_CHARSET_NAME, "binary");
    if (!mysql_real_connect(m->conn, m->host, m->user, m->password, m->db, m->port, m->socket,
                            CLIENT_MULTI_STATEMENTS)) {
        /* the option to look at first */
        unsigned e = mysql_errno(m->conn);
        const char *opt = e == ER_ACCESS_DENIED_ERROR ? "--mysql-user/--mysql-password: credentials refused"
                          : e == ER_BAD_DB_ERROR || e == ER_DBACCESS_DENIED_ERROR ? "--mysql-db: no such database or no access"
                          : m->socket ? "--libdrizzle-uds: cannot reach the server"
                                      : "--mysql-host/--mysql-port: cannot reach the server";
        snprintf(err, errlen, "%s: %s (MySQL at %s:%u, database %s, user %s): %s (%u)", what, opt, m->host,
                 m->port, m->db, m->user ? m->user : "(none)", mysql_error(m->conn), e);
        drop_conn(m);
        return -1;
    }
    m->bounded = bounded;
    return 0;
}

/* Which columns the table has: 0 no table, 1 ours, 2 gearmand 1.1's, -1 other. */
static int
table_layout(struct my *m, char *err, size_t errlen)
{
    MYSQL_RES *r = query_rows(m, "reading information_schema", err, errlen,
                              "SELECT column_name FROM information_schema.columns "
                              "WHERE table_schema = DATABASE() AND table_name = %s",
                              m->table_lit);
    if (!r)
        return -1;
    bool handle = false, seq = false, unique = false, fn = false, prio = false, data = false;
    MYSQL_ROW row;
    unsigned long n = 0;
    while ((row = mysql_fetch_row(r))) {
        const char *c = row[0] ? row[0] : "";
        n++;
        handle |= strcasecmp(c, "job_handle") == 0;
        seq |= strcasecmp(c, "seq") == 0;
        unique |= strcasecmp(c, "unique_key") == 0;
        fn |= strcasecmp(c, "function_name") == 0;
        prio |= strcasecmp(c, "priority") == 0;
        data |= strcasecmp(c, "data") == 0;
    }
    mysql_free_result(r);
    if (n == 0)
        return 0;
    if (!(unique && fn && prio && data)) {
        snprintf(err, errlen, "table %s exists with columns this server does not know", m->table);
        return -1;
    }
    return handle && seq ? 1 : 2;
}

/* 1 if the table has an index named `name`, 0 if not, -1 on error. */
static int
has_index(struct my *m, const char *name, char *err, size_t errlen)
{
    MYSQL_RES *r = query_rows(m, "reading information_schema", err, errlen,
                              "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = "
                              "DATABASE() AND table_name = %s AND index_name = '%s'",
                              m->table_lit, name);
    if (!r)
        return -1;
    MYSQL_ROW row = mysql_fetch_row(r);
    int yes = row && row[0] && atoi(row[0]) > 0;
    mysql_free_result(r);
    return yes;
}

/*
 * gearmand 1.1.20's table: one ALTER (atomic in InnoDB) adds seq, numbering
 * the rows in their stored order, job_handle and lifecycle, widens
 * when_to_run past 2038, drops the (unique_key, function_name) key and
 * makes the table InnoDB (a server whose default engine is MyISAM gave
 * gearmand a table without transactions);
 * then every row gets its handle and job_handle its unique key.  A crash
 * half-way is finished by the next open (rows without a handle get one).
 */
static int
migrate(struct my *m, char *err, size_t errlen)
{
    MYSQL_RES *r = query_rows(m, "reading information_schema", err, errlen,
                              "SELECT DISTINCT index_name FROM information_schema.statistics WHERE "
                              "table_schema = DATABASE() AND table_name = %s AND non_unique = 0",
                              m->table_lit);
    if (!r)
        return -1;
    struct qbuf drops = {0};
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r))) {
        char *q = quote_ident(row[0] ? row[0] : "");
        if (!q) {
            drops.oom = true;
            break;
        }
        qb_str(&drops, ", DROP INDEX ");
        qb_str(&drops, q);
        free(q);
    }
    mysql_free_result(r);
    if (drops.oom) {
        free(drops.s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = run_fmt(m, err, errlen,
                     "ALTER TABLE %s ADD COLUMN seq BIGINT NOT NULL AUTO_INCREMENT, ADD UNIQUE KEY seq (seq), "
                     "ADD COLUMN job_handle VARBINARY(255) NULL, ADD COLUMN lifecycle BLOB NULL, "
                     "MODIFY when_to_run BIGINT%s, ENGINE=InnoDB",
                     m->table, drops.s ? drops.s : "");
    free(drops.s);
    if (rc == 0)
        gm_log(GM_LOG_NOTICE, "MySQL: migrated table %s from gearmand 1.1 layout", m->table);
    return rc;
}

/* Gives every row without a handle one (rows a migration numbered), then
   makes job_handle the unique key, unless it is already. */
static int
finish_handles(struct my *m, char *err, size_t errlen)
{
    int idx = has_index(m, "job_handle", err, errlen);
    if (idx != 0)
        return idx < 0 ? -1 : 0;
    char *prefix = quote_text(m->prefix);
    if (!prefix) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = run_fmt(m, err, errlen, "UPDATE %s SET job_handle = CONCAT(%s, ':', seq) WHERE job_handle IS NULL",
                     m->table, prefix);
    free(prefix);
    if (rc == 0)
        rc = run_fmt(m, err, errlen, "ALTER TABLE %s MODIFY job_handle VARBINARY(255) NOT NULL, "
                                     "ADD UNIQUE KEY job_handle (job_handle)",
                     m->table);
    return rc;
}

static int
setup_table(struct my *m, char *err, size_t errlen)
{
    if (run(m,
            "CREATE TABLE IF NOT EXISTS gearmand_meta (name VARBINARY(255) NOT NULL PRIMARY KEY, "
            "value BIGINT NOT NULL) ENGINE=InnoDB",
            err, errlen) < 0 ||
        run(m,
            "CREATE TABLE IF NOT EXISTS gearmand_policies (queue VARBINARY(255) NOT NULL, "
            "function VARBINARY(512) NOT NULL, policy BLOB NOT NULL, PRIMARY KEY (queue, function)) "
            "ENGINE=InnoDB",
            err, errlen) < 0)
        return -1;
    int layout = table_layout(m, err, errlen);
    if (layout < 0)
        return -1;
    if (layout == 0)
        return run_fmt(m, err, errlen,
                       "CREATE TABLE IF NOT EXISTS %s (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
                       "job_handle VARBINARY(255) NOT NULL, unique_key VARBINARY(1024), "
                       "function_name VARBINARY(1024), priority INT, data LONGBLOB, when_to_run BIGINT, "
                       "lifecycle BLOB, UNIQUE KEY job_handle (job_handle)) ENGINE=InnoDB",
                       m->table);
    if (layout == 2 && migrate(m, err, errlen) < 0)
        return -1;
    return finish_handles(m, err, errlen);
}

/* The session settings every connection gets; with the persistence
   thread's deadlines when bounded. */
static int
session_settings(struct my *m, char *err, size_t errlen)
{
    /* max_statement_time is MariaDB's (MySQL's max_execution_time covers
       SELECT only: there the lock wait timeouts and the client's read
       timeout are the bounds) */
    bool mariadb = strstr(mysql_get_server_info(m->conn), "MariaDB") != NULL;
    char sql[512];
    int n = snprintf(sql, sizeof sql,
                     "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', SESSION autocommit = 1%s%s;"
                     "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                     m->bounded ? ", SESSION innodb_lock_wait_timeout = " MY_STR(MY_STATEMENT_S)
                                  ", SESSION lock_wait_timeout = " MY_STR(MY_STATEMENT_S)
                                : "",
                     m->bounded && mariadb ? ", SESSION max_statement_time = " MY_STR(MY_STATEMENT_S) : "");
    if (run_sql(m, sql, (size_t)n, NULL, "session settings", err, errlen) < 0)
        return -1;
    MYSQL_RES *r = query_rows(m, "reading max_allowed_packet", err, errlen,
                              "SELECT @@max_allowed_packet, UNIX_TIMESTAMP()");
    if (!r)
        return -1;
    MYSQL_ROW row = mysql_fetch_row(r);
    unsigned long long max = row && row[0] ? strtoull(row[0], NULL, 10) : 0;
    long long now = row && row[1] ? strtoll(row[1], NULL, 10) : 0;
    mysql_free_result(r);
    /* when the server started (SHOW, not information_schema.global_status,
       which MySQL 8 no longer has) */
    if (!(r = query_rows(m, "reading Uptime", err, errlen, "SHOW GLOBAL STATUS LIKE 'Uptime'")))
        return -1;
    row = mysql_fetch_row(r);
    m->server_start = row && row[1] ? now - strtoll(row[1], NULL, 10) : 0;
    mysql_free_result(r);
    m->max_query = max > 2 * MY_PACKET_SLACK ? (size_t)max - MY_PACKET_SLACK : MY_PACKET_SLACK;
    return 0;
}

/*
 * A session given up in the middle of a batch (no answer in time) may
 * still run it, and commit it, once the server gets to it: a batch whose
 * submitters were told QUEUE_ERROR.  The persistence thread removes such
 * jobs by writing their DONEs after reconnect(), so the old session must
 * be gone first.  Ends it (KILL CONNECTION) if it is still there, on the
 * same server (same start time, give or take the second the uptime is
 * counted in), and waits up to 5 s for it to go.  Returns 0 when it is
 * gone, -1 with err while it is not (reconnect() fails, and is tried
 * again).
 */
static int
end_orphan(struct my *m, char *err, size_t errlen)
{
    if (!m->orphan_id)
        return 0;
    long long d = m->server_start - m->orphan_start;
    if (d < -2 || d > 2 || m->orphan_id == mysql_thread_id(m->conn)) {
        m->orphan_id = 0; /* another server: the old session died with the old one */
        return 0;
    }
    char sql[96];
    snprintf(sql, sizeof sql, "KILL CONNECTION %lu", m->orphan_id);
    if (mysql_query(m->conn, sql) != 0 && mysql_errno(m->conn) != ER_NO_SUCH_THREAD) {
        set_err(m, err, errlen, "ending the connection given up");
        return -1;
    }
    for (int i = 0; i < 100; i++) {
        MYSQL_RES *r = query_rows(m, "ending the connection given up", err, errlen,
                                  "SELECT COUNT(*) FROM information_schema.processlist WHERE id = %lu",
                                  m->orphan_id);
        if (!r)
            return -1;
        MYSQL_ROW row = mysql_fetch_row(r);
        bool gone = !row || !row[0] || atoi(row[0]) == 0;
        mysql_free_result(r);
        if (gone) {
            gm_log(GM_LOG_NOTICE, "MySQL: ended session %lu, of the connection given up, before writing on",
                   m->orphan_id);
            m->orphan_id = 0;
            return 0;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    snprintf(err, errlen, "the connection given up (session %lu) has not ended yet", m->orphan_id);
    return -1;
}

/* Connects and makes the table ready; returns 0, or -1 with err. */
static int
start_session(struct my *m, bool bounded, const char *what, char *err, size_t errlen)
{
    if (my_connect(m, bounded, what, err, errlen) < 0)
        return -1;
    return session_settings(m, err, errlen) < 0 || (bounded && end_orphan(m, err, errlen) < 0) ||
                   setup_table(m, err, errlen) < 0
               ? -1
               : 0;
}

static void my_close(void *state);

static void *
my_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    struct my *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *host = gm_queue_opt_or(opts, "mysql-host", "localhost");
    const char *port = gm_queue_opt_or(opts, "mysql-port", "3306");
    const char *user = gm_queue_opt(opts, "mysql-user");
    const char *password = gm_queue_opt(opts, "mysql-password");
    const char *db = gm_queue_opt(opts, "mysql-db");
    const char *sock = gm_queue_opt(opts, "libdrizzle-uds");
    const char *t = gm_queue_opt_or(opts, "mysql-table", "gearman_queue");
    char *end;
    unsigned long pn = strtoul(port, &end, 10);
    if (*end || pn == 0 || pn > 65535) {
        snprintf(err, errlen, "--mysql-port %s: not a port number", port);
        goto fail;
    }
    m->port = (unsigned)pn;
    /* tests shorten the client's deadline (not a gearmand option) */
    const char *answer = gm_queue_opt(opts, "mysql-answer-timeout");
    m->answer_s = answer ? (unsigned)strtoul(answer, NULL, 10) : MY_ANSWER_S;
    if (m->answer_s == 0)
        m->answer_s = MY_ANSWER_S;
    if (!db || !*db) {
        snprintf(err, errlen, "--mysql-db is required (the database that holds the queue table)");
        goto fail;
    }
    m->host = strdup(host);
    m->user = user && *user ? strdup(user) : NULL;
    m->password = password ? strdup(password) : NULL;
    m->db = strdup(db);
    m->socket = sock && *sock ? strdup(sock) : NULL;
    m->table = quote_ident(t);
    m->table_lit = quote_text(t);
    m->prefix = strdup(opts->handle_prefix ? opts->handle_prefix : "H:migrated");
    if (asprintf(&m->add_head, "INSERT INTO %s (job_handle, unique_key, function_name, priority, data, "
                               "when_to_run, lifecycle) VALUES ", m->table ? m->table : "") < 0)
        m->add_head = NULL;
    if (asprintf(&m->del_head, "DELETE FROM %s WHERE job_handle IN (", m->table ? m->table : "") < 0)
        m->del_head = NULL;
    char *cname = NULL;
    if (asprintf(&cname, "next_handle:%s", t) >= 0) {
        m->counter_lit = quote_text(cname);
        free(cname);
    }
    if (!m->host || (user && *user && !m->user) || (password && !m->password) || !m->db ||
        (sock && *sock && !m->socket) || !m->table || !m->table_lit || !m->prefix || !m->counter_lit ||
        !m->add_head || !m->del_head) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (start_session(m, false, "cannot connect", err, errlen) < 0)
        goto fail;
    return m;
fail:
    my_close(m);
    return NULL;
}

/* Hands one stored row to cb, or logs it as bad; returns what cb returned
   (0 for a bad row or a NULL cb). */
static int
replay_row(struct my *m, MYSQL_ROW row, const unsigned long *len, gm_qrow_cb cb, void *arg)
{
    char *end = NULL;
    long prio = row[3] ? strtol(row[3], &end, 10) : 0;
    bool when_ok = true;
    long long when = 0;
    if (row[5]) {
        char *wend;
        errno = 0;
        when = strtoll(row[5], &wend, 10);
        when_ok = *wend == '\0' && errno == 0;
    }
    if (!row[0] || !row[2] || !row[3] || !end || *end || !when_ok || prio < INT32_MIN || prio > INT32_MAX) {
        gm_log(GM_LOG_ERROR, "MySQL: a row of %s (handle %.*s) has NULL or odd columns; kept, not replayed",
               m->table, row[0] ? (int)len[0] : 6, row[0] ? row[0] : "(NULL)");
        return 0;
    }
    if (!cb)
        return 0;
    struct gm_qrow r;
    memset(&r, 0, sizeof r);
    r.handle = row[0];
    r.handle_len = (uint32_t)len[0];
    r.unique = row[1] ? row[1] : "";
    r.unique_len = row[1] ? (uint32_t)len[1] : 0;
    r.function = row[2];
    r.function_len = (uint32_t)len[2];
    r.priority = (int)prio;
    r.data = row[4] ? row[4] : "";
    r.data_len = row[4] ? (uint32_t)len[4] : 0;
    r.when = when;
    if (row[6]) {
        r.lifecycle = row[6];
        r.lifecycle_len = (uint32_t)len[6];
    }
    return cb(arg, &r);
}

static int
my_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct my *m = state;
    char *sql = NULL;
    int n = asprintf(&sql, "SELECT job_handle, unique_key, function_name, priority, data, when_to_run, "
                           "lifecycle FROM %s ORDER BY seq",
                     m->table);
    if (n < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = m->conn && mysql_real_query(m->conn, sql, (unsigned long)n) == 0 ? 0 : -1;
    free(sql);
    /* rows are taken one by one as they come (a big table need not fit
       in memory twice) */
    MYSQL_RES *r = rc == 0 ? mysql_use_result(m->conn) : NULL;
    if (!r) {
        set_err(m, err, errlen, "replay");
        return -1;
    }
    MYSQL_ROW row;
    bool stop = false;
    while ((row = mysql_fetch_row(r))) {
        if (replay_row(m, row, mysql_fetch_lengths(r), stop ? NULL : cb, arg) < 0)
            stop = true; /* cb asked to stop: read the rest, replay no more */
    }
    if (mysql_errno(m->conn)) {
        set_err(m, err, errlen, "replay");
        rc = -1;
    }
    mysql_free_result(r);
    return rc;
}

/* ---- writing a batch ---- */

/* Starts a query of the batch: BEGIN in the first one. */
static void
q_begin(struct my *m, bool first)
{
    m->q.len = 0;
    m->q.oom = false;
    qb_str(&m->q, first ? "BEGIN;" : "");
}

/*
 * The parts of a batch, in order; one statement each, except the INSERT
 * and the DELETE, which are split into more statements (and queries) only
 * when a query would outgrow max_allowed_packet.
 */
static const char ADD_TAIL[] =
    " ON DUPLICATE KEY UPDATE unique_key = VALUES(unique_key), function_name = VALUES(function_name), "
    "priority = VALUES(priority), data = VALUES(data), when_to_run = VALUES(when_to_run), "
    "lifecycle = VALUES(lifecycle);";

/* Sends the query built so far (part of the open transaction); returns 0,
   or -1 with err. */
static int
q_send(struct my *m, char *err, size_t errlen)
{
    if (m->q.oom) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return run_sql(m, m->q.s, m->q.len, NULL, "batch", err, errlen);
}

/* Room in the current query for `more` bytes plus the statement's end? If
   not, ends the statement, sends the query and starts a new one; returns
   1 when the caller must open its statement again, 0 when there is room,
   -1 on failure.  *sent counts the queries sent. */
static int
q_room(struct my *m, size_t more, const char *tail, unsigned *sent, char *err, size_t errlen)
{
    if (m->q.len + more + strlen(tail) + 16 <= m->max_query)
        return 0;
    qb_str(&m->q, tail);
    if (q_send(m, err, errlen) < 0)
        return -1;
    (*sent)++;
    q_begin(m, false);
    return 1;
}

/* Appends the ADD record r as a row of the INSERT. */
static void
add_row(struct my *m, const struct gm_qrecord *r, bool first)
{
    qb_str(&m->q, first ? "(" : ",(");
    qb_lit(m, r->handle, r->handle_len);
    qb_str(&m->q, ",");
    qb_lit(m, r->unique, r->unique_len);
    qb_str(&m->q, ",");
    qb_lit(m, r->function, r->function_len);
    qb_fmt(&m->q, ",%d,", (int)r->priority);
    qb_lit(m, r->data, r->data_len);
    qb_fmt(&m->q, ",%" PRId64 ",", r->when);
    if (r->lifecycle_len)
        qb_lit(m, r->lifecycle, r->lifecycle_len);
    else
        qb_str(&m->q, "NULL");
    qb_str(&m->q, ")");
}

static size_t
add_row_max(const struct gm_qrecord *r)
{
    return 2 * ((size_t)r->handle_len + r->unique_len + r->function_len + r->data_len + r->lifecycle_len) + 80;
}

/* Builds and sends the batch; returns 0 when everything up to the COMMIT
   succeeded, -1 with err (the transaction may be open: the caller rolls
   back).  *sent counts the queries sent. */
static int
send_batch(struct my *m, const struct gm_qrecord *recs, size_t n, unsigned *sent, char *err, size_t errlen)
{
    q_begin(m, true);
    /* the jobs added */
    const char *add_head = m->add_head;
    bool open = false;
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        if (r->op != GM_QOP_ADD || !m->last.last[i])
            continue;
        size_t need = add_row_max(r);
        if (need + strlen(add_head) + sizeof ADD_TAIL + 32 > m->max_query) {
            snprintf(err, errlen,
                     "a job of %zu bytes is larger than the server's max_allowed_packet allows (%zu)",
                     (size_t)r->data_len + r->function_len + r->unique_len, m->max_query + MY_PACKET_SLACK);
            return -1;
        }
        int room = q_room(m, need, open ? ADD_TAIL : "", sent, err, errlen);
        if (room < 0)
            return -1;
        if (room > 0 || !open) {
            qb_str(&m->q, add_head);
            add_row(m, r, true);
            open = true;
        } else {
            add_row(m, r, false);
        }
    }
    if (open)
        qb_str(&m->q, ADD_TAIL);
    /* the jobs done */
    const char *del_head = m->del_head;
    open = false;
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        if (r->op != GM_QOP_DONE || !m->last.last[i])
            continue;
        int room = q_room(m, 2 * (size_t)r->handle_len + 4 + strlen(del_head), open ? ");" : "", sent, err, errlen);
        if (room < 0)
            return -1;
        if (room > 0 || !open) {
            qb_str(&m->q, del_head);
            open = true;
        } else {
            qb_str(&m->q, ",");
        }
        qb_lit(m, r->handle, r->handle_len);
    }
    if (open)
        qb_str(&m->q, ");");
    /* policies (rare), in their order; the handle counter */
    long long counter = -1;
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        if (r->op == GM_QOP_COUNTER && r->when > counter)
            counter = r->when;
        if (r->op != GM_QOP_POLICY)
            continue;
        if (q_room(m, 2 * ((size_t)r->function_len + r->data_len) + 200, "", sent, err, errlen) < 0)
            return -1;
        if (r->data_len) {
            qb_str(&m->q, "INSERT INTO gearmand_policies (queue, function, policy) VALUES (");
            qb_str(&m->q, m->table_lit);
            qb_str(&m->q, ",");
            qb_lit(m, r->function, r->function_len);
            qb_str(&m->q, ",");
            qb_lit(m, r->data, r->data_len);
            qb_str(&m->q, ") ON DUPLICATE KEY UPDATE policy = VALUES(policy);");
        } else {
            qb_str(&m->q, "DELETE FROM gearmand_policies WHERE queue = ");
            qb_str(&m->q, m->table_lit);
            qb_str(&m->q, " AND function = ");
            qb_lit(m, r->function, r->function_len);
            qb_str(&m->q, ";");
        }
    }
    if (counter >= 0) {
        qb_str(&m->q, "INSERT INTO gearmand_meta (name, value) VALUES (");
        qb_str(&m->q, m->counter_lit);
        qb_fmt(&m->q, ",%lld", counter);
        qb_str(&m->q, ") ON DUPLICATE KEY UPDATE value = GREATEST(value, VALUES(value));");
    }
    qb_str(&m->q, "COMMIT");
    int rc = q_send(m, err, errlen);
    (*sent)++;
    return rc;
}

static int
my_write_batch(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    struct my *m = state;
    if (!m->bounded || !m->conn) {
        /* the persistence thread's first batch: its own session, with
           deadlines (open and replay had none) */
        if (start_session(m, true, "connect", err, errlen) < 0) {
            m->down = true;
            return -1;
        }
    }
    /* The server closes a connection idle past its wait_timeout (8 h by
       default), and so may a firewall: a batch sent on it would fail, and
       its jobs be refused, with the database fine.  After a pause the
       connection is checked first (a round trip, only when the queue was
       idle), and replaced if it is gone: nothing was sent on it. */
    if (gm_mono_ms() - m->last_used > MY_IDLE_PING_MS && mysql_ping(m->conn) != 0) {
        gm_log(GM_LOG_NOTICE, "MySQL: the idle connection is gone (%s); connecting again", mysql_error(m->conn));
        if (start_session(m, true, "connect", err, errlen) < 0) {
            m->down = true;
            return -1;
        }
    }
    if (!gm_qlast_mark(&m->last, recs, n)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    unsigned sent = 0;
    int rc = send_batch(m, recs, n, &sent, err, errlen);
    if (rc < 0 && m->conn && !m->down && sent > 0) {
        /* a statement failed: the rest did not run, and the transaction
           is still open */
        char ignored[64];
        if (run(m, "ROLLBACK", ignored, sizeof ignored) < 0)
            m->down = true;
    }
    m->last_used = gm_mono_ms();
    if (rc < 0 && m->down) {
        /* the server rolls back what a closed session left, once it
           notices: see end_orphan() */
        if (sent > 0 && !m->orphan_id && m->conn) {
            m->orphan_id = mysql_thread_id(m->conn);
            m->orphan_start = m->server_start;
        }
        drop_conn(m);
    }
    return rc;
}

static int
my_load_policies(void *state, gm_qpolicy_cb cb, void *arg, char *err, size_t errlen)
{
    struct my *m = state;
    MYSQL_RES *r = query_rows(m, "reading the policies", err, errlen,
                              "SELECT function, policy FROM gearmand_policies WHERE queue = %s ORDER BY function",
                              m->table_lit);
    if (!r)
        return -1;
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r))) {
        unsigned long *len = mysql_fetch_lengths(r);
        if (row[0] && row[1])
            cb(arg, row[0], len[0], row[1], len[1]);
    }
    mysql_free_result(r);
    return 0;
}

static int
my_load_counter(void *state, uint64_t *next, char *err, size_t errlen)
{
    struct my *m = state;
    *next = 0;
    MYSQL_RES *r = query_rows(m, "reading the handle counter", err, errlen,
                              "SELECT value FROM gearmand_meta WHERE name = %s", m->counter_lit);
    if (!r)
        return -1;
    MYSQL_ROW row = mysql_fetch_row(r);
    if (row && row[0])
        *next = strtoull(row[0], NULL, 10);
    mysql_free_result(r);
    return 0;
}

static bool
my_alive(void *state)
{
    struct my *m = state;
    return m->conn && !m->down;
}

static int
my_reconnect(void *state, char *err, size_t errlen)
{
    struct my *m = state;
    int rc = start_session(m, true, "reconnect", err, errlen);
    if (rc < 0)
        drop_conn(m);
    return rc;
}

static void
my_close(void *state)
{
    struct my *m = state;
    if (!m)
        return;
    drop_conn(m);
    free(m->host);
    free(m->user);
    free(m->password);
    free(m->db);
    free(m->socket);
    free(m->table);
    free(m->table_lit);
    free(m->counter_lit);
    free(m->prefix);
    free(m->add_head);
    free(m->del_head);
    free(m->q.s);
    gm_qlast_free(&m->last);
    free(m);
}

static const char *const my_aliases[] = {"mysql", "libdrizzle", "mariadb", NULL};

const struct gm_queue_backend gm_queue_mysql = {
    .name = "MySQL",
    .aliases = my_aliases,
    .stores_epoch = true,
    .open = my_open,
    .replay = my_replay,
    .write_batch = my_write_batch,
    .load_counter = my_load_counter,
    .load_policies = my_load_policies,
    .alive = my_alive,
    .reconnect = my_reconnect,
    .close = my_close,
};
