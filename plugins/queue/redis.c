/*
 * plugins/queue/redis.c: the Redis durable queue (-q redis), on hiredis.
 *
 * Owns one hiredis connection, used only by the persistence thread (and by
 * the main thread for open/replay before that thread starts).  Every call
 * on it is bounded (hiredis' socket timeouts): connecting, AUTH and PING
 * included, by RD_CONNECT_S, each answer by RD_ANSWER_S; a connection
 * that fails once is given up (alive() false) and reconnect() builds a new
 * one, which the persistence thread calls with its backoff (0.1 s doubling
 * to 5 s).
 *
 * Storage, with P the --redis-prefix (default "_gear_", gearmand's):
 *   P:job:<handle>   a hash per job: function, unique, data, priority
 *                    (0..2, text), when (Unix time, text), seq (replay
 *                    order, text) and lifecycle (the core's bytes, empty
 *                    for most jobs).  Every field is binary-safe.
 *   P:seq            the seq the next job gets
 *   P:next_handle    the handle counter (GM_QOP_COUNTER)
 *   P:policies       a hash: function -> run-time policy text
 *
 * A batch is one pipelined MULTI ... EXEC, written in one send and read in
 * one pass: Redis runs it as a whole or, when a command is refused as it
 * is queued (out of memory, say), not at all.  An ADD is DEL then HSET of
 * its key, so that it replaces whatever was there and no command can fail
 * at EXEC time.  How durable an EXEC is depends on the server's
 * appendonly/appendfsync settings (docs/persistence.md); open() logs a
 * warning for a server that would lose acknowledged jobs.
 *
 * Replay lists P:job:* with SCAN (never KEYS, which blocks Redis), reads
 * every job's seq with pipelined HGETs, sorts, then reads the jobs in that
 * order with pipelined HMGETs, 256 at a time.  A key that is no job of
 * ours (another type, fields missing or odd) is logged and kept.
 *
 * gearmand 1.1.20's keys, "P-<function>-<unique>" holding a hash with
 * data and priority (a plain string of data before 1.1.16), are migrated
 * by open(): each becomes P:job:<handle prefix>:<n>, with n from the
 * stored handle counter on, in one MULTI/EXEC that also removes the old
 * keys.  The key is split at the first '-' unless it ends in "-<UUID>" (the
 * unique key gearman's tools make), where the function may hold dashes.
 */
#include "config.h"

#include "plugins/queue/backends.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "libgearman-server/base/clock.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/protocol.h"

#define RD_CONNECT_S 5      /* connecting (as long as the longest reconnect backoff) */
#define RD_ANSWER_S 15      /* each answer; a batch not answered by then is refused */
#define RD_LOADING_WAIT_MS 60000 /* open() waits this long for a Redis still loading its data */
#define REPLAY_CHUNK 256    /* keys per pipelined read */
#define SCAN_COUNT "1000"

/* A request being written in Redis' protocol (RESP), reused. */
struct resp {
    char *p;
    size_t len, cap;
    bool oom;
};

struct rd {
    redisContext *c;     /* NULL once given up, until reconnect() */
    bool down;           /* the server said it cannot serve now (LOADING, READONLY, ...) */
    char *server;        /* host name or address, or a Unix socket path (starts with '/') */
    int port;
    int wait_s;          /* the answer timeout in force: RD_CONNECT_S while connecting */
    char *password;      /* NULL: no AUTH */
    char *where;         /* "host:port" or the path, for messages */
    char *prefix;
    size_t prefix_len;
    char *handle_prefix; /* for migrated jobs */
    uint64_t next_seq;   /* the seq the next ADD gets */
    struct resp out;
};

/* ---- writing requests ---- */

static bool
resp_reserve(struct resp *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void
resp_bytes(struct resp *b, const void *p, size_t n)
{
    if (n && resp_reserve(b, n)) {
        memcpy(b->p + b->len, p, n);
        b->len += n;
    }
}

static void
resp_head(struct resp *b, char kind, size_t n)
{
    char h[32];
    int l = snprintf(h, sizeof h, "%c%zu\r\n", kind, n);
    resp_bytes(b, h, (size_t)l);
}

/* "*argc": a command of argc arguments follows. */
static void
resp_cmd(struct resp *b, size_t argc)
{
    resp_head(b, '*', argc);
}

/* One argument made of up to three pieces (a key: prefix, kind, name). */
static void
resp_arg3(struct resp *b, const void *a, size_t al, const void *x, size_t xl, const void *y, size_t yl)
{
    resp_head(b, '$', al + xl + yl);
    resp_bytes(b, a, al);
    resp_bytes(b, x, xl);
    resp_bytes(b, y, yl);
    resp_bytes(b, "\r\n", 2);
}

static void
resp_arg(struct resp *b, const void *p, size_t n)
{
    resp_arg3(b, p, n, NULL, 0, NULL, 0);
}

static void
resp_str(struct resp *b, const char *s)
{
    resp_arg(b, s, strlen(s));
}

static void
resp_num(struct resp *b, long long v)
{
    char n[24];
    resp_arg(b, n, (size_t)snprintf(n, sizeof n, "%lld", v));
}

/* The key P<kind><name> (kind ":job:", ":seq", ...). */
static void
resp_key(struct rd *r, struct resp *b, const char *kind, const char *name, size_t name_len)
{
    resp_arg3(b, r->prefix, r->prefix_len, kind, strlen(kind), name, name_len);
}

static void
resp_reset(struct resp *b)
{
    b->len = 0;
    b->oom = false;
}

/* ---- the connection ---- */

static void
drop_conn(struct rd *r)
{
    if (r->c)
        redisFree(r->c);
    r->c = NULL;
}

/* Reports a connection that failed (I/O error, no answer in time, closed
   by the server) and gives it up.  Returns -1. */
static int
lost(struct rd *r, const char *what, char *err, size_t errlen)
{
    const char *why = !r->c ? "not connected" : r->c->errstr[0] ? r->c->errstr : "connection lost";
    /* hiredis reports its socket timeout as the errno of the read */
    if (strstr(why, "temporarily unavailable"))
        snprintf(err, errlen, "%s: Redis at %s: no answer within %d s", what, r->where, r->wait_s);
    else
        snprintf(err, errlen, "%s: Redis at %s: %s", what, r->where, why);
    drop_conn(r);
    return -1;
}

/* The error replies that say the server cannot serve us now, rather than
   that it refused a record (OOM is the latter: like a full disk). */
static bool
server_cannot_serve(const char *e)
{
    static const char *const codes[] = {"LOADING", "MASTERDOWN", "READONLY", "MISCONF", "NOAUTH",
                                        "WRONGPASS", "BUSY", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN",
                                        "NOPERM"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        size_t n = strlen(codes[i]);
        if (strncmp(e, codes[i], n) == 0 && (e[n] == ' ' || e[n] == '\0'))
            return true;
    }
    return false;
}

/* Runs one command given as argv; returns its reply (the caller frees it),
   or NULL with err when the connection failed (given up). */
static redisReply *
command(struct rd *r, int argc, const char **argv, const size_t *lens, const char *what, char *err,
        size_t errlen)
{
    if (!r->c) {
        lost(r, what, err, errlen);
        return NULL;
    }
    redisReply *rep = redisCommandArgv(r->c, argc, argv, lens);
    if (!rep)
        lost(r, what, err, errlen);
    return rep;
}

/* A reply that is an error: says so in err (and marks the backend down
   if the server cannot serve); returns true. */
static bool
reply_failed(struct rd *r, const redisReply *rep, const char *what, char *err, size_t errlen)
{
    if (rep->type != REDIS_REPLY_ERROR)
        return false;
    snprintf(err, errlen, "%s: Redis at %s: %.*s", what, r->where, (int)rep->len, rep->str);
    if (server_cannot_serve(rep->str))
        r->down = true;
    return true;
}

#define CONNECT_LOADING (-2)

/* Connects, authenticates and checks that the server answers; returns 0,
   CONNECT_LOADING while it is loading its data, or -1, with err naming the
   option to look at. */
static int
connect_server(struct rd *r, char *err, size_t errlen)
{
    drop_conn(r);
    r->down = false;
    struct timeval tv = {RD_CONNECT_S, 0};
    redisContext *c = r->server[0] == '/' ? redisConnectUnixWithTimeout(r->server, tv)
                                          : redisConnectWithTimeout(r->server, r->port, tv);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s (--redis-server, --redis-port): %s", r->where,
                 c->errstr);
        redisFree(c);
        return -1;
    }
    r->c = c;
    /* AUTH and PING get the connect's deadline: a reconnect that finds a
       Redis which accepts but does not answer (SIGSTOP, a partition) gives
       up as soon as a connect would, and the persistence thread refuses
       the waiting submits sooner */
    redisSetTimeout(c, tv);
    r->wait_s = RD_CONNECT_S;
    if (r->server[0] != '/')
        redisEnableKeepAlive(c);
    redisReply *rep;
    if (r->password) {
        const char *argv[2] = {"AUTH", r->password};
        size_t lens[2] = {4, strlen(r->password)};
        if (!(rep = command(r, 2, argv, lens, "AUTH", err, errlen)))
            return -1;
        if (rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "Redis at %s refused --redis-password: %.*s", r->where, (int)rep->len,
                     rep->str);
            freeReplyObject(rep);
            drop_conn(r);
            return -1;
        }
        freeReplyObject(rep);
    }
    const char *ping[1] = {"PING"};
    size_t ping_len[1] = {4};
    if (!(rep = command(r, 1, ping, ping_len, "PING", err, errlen)))
        return -1;
    int rc = 0;
    if (rep->type == REDIS_REPLY_ERROR) {
        bool noauth = strncmp(rep->str, "NOAUTH", 6) == 0;
        rc = strncmp(rep->str, "LOADING", 7) == 0 ? CONNECT_LOADING : -1;
        snprintf(err, errlen, "Redis at %s%s: %.*s", r->where,
                 noauth ? " wants a password (--redis-password)" : "", (int)rep->len, rep->str);
        drop_conn(r);
    }
    freeReplyObject(rep);
    if (rc == 0) {
        struct timeval answer = {RD_ANSWER_S, 0};
        redisSetTimeout(c, answer);
        r->wait_s = RD_ANSWER_S;
    }
    return rc;
}

/* Sends b as is (pipelined commands) and reads n replies, each handed to
   take(arg, i, reply), which frees it.  Returns 0, or -1 with err when the
   connection failed (given up). */
static int
pipeline(struct rd *r, const struct resp *b, size_t n, void (*take)(void *arg, size_t i, redisReply *rep),
         void *arg, const char *what, char *err, size_t errlen)
{
    if (b->oom) {
        snprintf(err, errlen, "%s: out of memory", what);
        return -1;
    }
    if (!r->c)
        return lost(r, what, err, errlen);
    if (redisAppendFormattedCommand(r->c, b->p, b->len) != REDIS_OK)
        return lost(r, what, err, errlen);
    for (size_t i = 0; i < n; i++) {
        void *rep;
        if (redisGetReply(r->c, &rep) != REDIS_OK || !rep)
            return lost(r, what, err, errlen);
        take(arg, i, rep);
    }
    return 0;
}

/* Reads the decimal number of a string reply; false if it is not one. */
static bool
reply_u64(const redisReply *rep, uint64_t *v)
{
    if (!rep || rep->type != REDIS_REPLY_STRING || rep->len == 0 || rep->len > 20)
        return false;
    char num[24], *end;
    memcpy(num, rep->str, rep->len);
    num[rep->len] = '\0';
    errno = 0;
    unsigned long long x = strtoull(num, &end, 10);
    if (errno || *end || num[0] == '-')
        return false;
    *v = x;
    return true;
}

/* The key P<kind> (":seq", ":policies", ...) in key[cap]; false if it
   does not fit (err says so). */
static bool
key_of(const struct rd *r, const char *kind, char *key, size_t cap, char *err, size_t errlen)
{
    if ((size_t)snprintf(key, cap, "%s%s", r->prefix, kind) >= cap) {
        snprintf(err, errlen, "--redis-prefix is too long");
        return false;
    }
    return true;
}

/* GET of P<kind> as a number: 0 when missing.  Returns 0 or -1 with err. */
static int
get_number(struct rd *r, const char *kind, uint64_t *v, char *err, size_t errlen)
{
    char key[1024];
    *v = 0;
    if (!key_of(r, kind, key, sizeof key, err, errlen))
        return -1;
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    redisReply *rep = command(r, 2, argv, lens, "GET", err, errlen);
    if (!rep)
        return -1;
    int rc = 0;
    if (reply_failed(r, rep, "GET", err, errlen)) {
        rc = -1;
    } else if (rep->type != REDIS_REPLY_NIL && !reply_u64(rep, v)) {
        snprintf(err, errlen, "%s%s in Redis at %s is not a number", r->prefix, kind, r->where);
        rc = -1;
    }
    freeReplyObject(rep);
    return rc;
}

/* Tells, once at open, what the server's persistence settings mean for
   the jobs it acknowledges (docs/persistence.md). */
static void
log_durability(struct rd *r)
{
    char err[256];
    char val[2][16] = {"", ""};
    static const char *const names[2] = {"appendonly", "appendfsync"};
    for (int i = 0; i < 2; i++) {
        const char *argv[3] = {"CONFIG", "GET", names[i]};
        size_t lens[3] = {6, 3, strlen(names[i])};
        redisReply *rep = command(r, 3, argv, lens, "CONFIG GET", err, sizeof err);
        if (!rep)
            return;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[1]->type == REDIS_REPLY_STRING)
            snprintf(val[i], sizeof val[i], "%.*s", (int)rep->element[1]->len, rep->element[1]->str);
        freeReplyObject(rep);
    }
    if (!val[0][0]) {
        gm_log(GM_LOG_NOTICE, "redis: cannot read the persistence settings of Redis at %s (CONFIG GET); "
               "jobs are as durable as its appendonly/appendfsync make them", r->where);
    } else if (strcmp(val[0], "yes") != 0) {
        gm_log(GM_LOG_WARNING, "redis: Redis at %s has appendonly %s: background jobs acknowledged since its "
               "last snapshot are lost if it stops (see docs/persistence.md)", r->where, val[0]);
    } else if (strcmp(val[1], "always") != 0) {
        gm_log(GM_LOG_NOTICE, "redis: Redis at %s has appendfsync %s: a crash of its machine can lose the "
               "background jobs of about the last second (appendfsync always loses none)", r->where, val[1]);
    }
}

/* ---- replay: listing and reading keys ---- */

struct jobkey {
    char *key;
    size_t len;
    uint64_t seq;
    bool bad;
};

struct keys {
    struct jobkey *k;
    size_t n, cap;
};

static void
keys_free(struct keys *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        free(ks->k[i].key);
    free(ks->k);
    ks->k = NULL;
    ks->n = ks->cap = 0;
}

static bool
keys_add(struct keys *ks, const char *key, size_t len)
{
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 1024;
        struct jobkey *k = realloc(ks->k, cap * sizeof *k);
        if (!k)
            return false;
        ks->k = k;
        ks->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return false;
    memcpy(copy, key, len);
    copy[len] = '\0';
    ks->k[ks->n++] = (struct jobkey){copy, len, UINT64_MAX, false};
    return true;
}

static int
cmp_key_bytes(const struct jobkey *a, const struct jobkey *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int d = memcmp(a->key, b->key, n);
    return d ? d : (a->len > b->len) - (a->len < b->len);
}

static int
cmp_by_key(const void *x, const void *y)
{
    return cmp_key_bytes(x, y);
}

static int
cmp_by_seq(const void *x, const void *y)
{
    const struct jobkey *a = x, *b = y;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return cmp_key_bytes(a, b);
}

/* Sorts the keys and drops those listed twice (SCAN may name a key more
   than once). */
static void
keys_unique(struct keys *ks)
{
    if (ks->n == 0)
        return;
    qsort(ks->k, ks->n, sizeof *ks->k, cmp_by_key);
    size_t m = 1;
    for (size_t i = 1; i < ks->n; i++) {
        if (cmp_key_bytes(&ks->k[m - 1], &ks->k[i]) == 0)
            free(ks->k[i].key);
        else
            ks->k[m++] = ks->k[i];
    }
    ks->n = m;
}

/* The SCAN pattern P<tail>, with P's glob characters escaped. */
static char *
scan_pattern(const struct rd *r, const char *tail)
{
    char *p = malloc(2 * r->prefix_len + strlen(tail) + 1);
    if (!p)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < r->prefix_len; i++) {
        if (strchr("*?[]\\^", r->prefix[i]))
            p[n++] = '\\';
        p[n++] = r->prefix[i];
    }
    strcpy(p + n, tail);
    return p;
}

/* Lists every key matching P<tail> into ks with SCAN.  Returns 0 or -1
   with err. */
static int
scan_keys(struct rd *r, const char *tail, struct keys *ks, char *err, size_t errlen)
{
    char *pattern = scan_pattern(r, tail);
    if (!pattern) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char cursor[32] = "0";
    int rc = 0;
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT};
        size_t lens[6] = {4, strlen(cursor), 5, strlen(pattern), 5, strlen(SCAN_COUNT)};
        redisReply *rep = command(r, 6, argv, lens, "SCAN", err, errlen);
        if (!rep) {
            rc = -1;
            break;
        }
        if (reply_failed(r, rep, "SCAN", err, errlen) || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= sizeof cursor ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            if (rep->type != REDIS_REPLY_ERROR)
                snprintf(err, errlen, "SCAN: Redis at %s gave an odd answer", r->where);
            freeReplyObject(rep);
            rc = -1;
            break;
        }
        memcpy(cursor, rep->element[0]->str, rep->element[0]->len);
        cursor[rep->element[0]->len] = '\0';
        const redisReply *list = rep->element[1];
        for (size_t i = 0; i < list->elements && rc == 0; i++)
            if (list->element[i]->type == REDIS_REPLY_STRING &&
                !keys_add(ks, list->element[i]->str, list->element[i]->len)) {
                snprintf(err, errlen, "out of memory");
                rc = -1;
            }
        freeReplyObject(rep);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    free(pattern);
    if (rc == 0)
        keys_unique(ks);
    return rc;
}

/* The job's seq, from a pipelined HGET (phase one of replay). */
static void
take_seq(void *arg, size_t i, redisReply *rep)
{
    struct jobkey *k = (struct jobkey *)arg + i;
    if (rep->type == REDIS_REPLY_ERROR) {
        gm_log(GM_LOG_ERROR, "redis: key %s is no job (%.*s); kept, not replayed", k->key, (int)rep->len,
               rep->str);
        k->bad = true;
    } else if (!reply_u64(rep, &k->seq)) {
        k->seq = UINT64_MAX; /* none (written by hand?): replayed last, if it is a job */
    }
    freeReplyObject(rep);
}

/* What phase two of replay hands over for one chunk. */
struct replay_chunk {
    struct rd *r;
    struct jobkey *k;
    gm_qrow_cb cb;
    void *arg;
    bool stop;
    uint64_t max_seq;
};

enum { F_FUNCTION, F_UNIQUE, F_DATA, F_PRIORITY, F_WHEN, F_LIFECYCLE, NFIELDS };
static const char *const job_fields[NFIELDS] = {"function", "unique", "data", "priority", "when", "lifecycle"};

/* Reads a decimal, possibly negative, number of a string reply. */
static bool
reply_i64(const redisReply *rep, int64_t *v)
{
    if (rep->type != REDIS_REPLY_STRING || rep->len == 0 || rep->len > 20)
        return false;
    char num[24], *end;
    memcpy(num, rep->str, rep->len);
    num[rep->len] = '\0';
    errno = 0;
    long long x = strtoll(num, &end, 10);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

/* One job from a pipelined HMGET (phase two): handed to the callback, or
   logged and kept when it cannot be read. */
static void
take_job(void *arg, size_t i, redisReply *rep)
{
    struct replay_chunk *ch = arg;
    struct jobkey *k = &ch->k[i];
    size_t skip = ch->r->prefix_len + 5; /* "P:job:" */
    const redisReply *f[NFIELDS];
    bool ok = rep->type == REDIS_REPLY_ARRAY && rep->elements == NFIELDS;
    bool gone = ok;
    for (int j = 0; ok && j < NFIELDS; j++) {
        f[j] = rep->element[j];
        ok = f[j]->type == REDIS_REPLY_STRING || f[j]->type == REDIS_REPLY_NIL;
        gone = gone && f[j]->type == REDIS_REPLY_NIL;
    }
    if (ok && gone) { /* removed since it was listed */
        freeReplyObject(rep);
        return;
    }
    struct gm_qrow row;
    memset(&row, 0, sizeof row);
    int64_t prio = -1;
    if (ok && (f[F_FUNCTION]->type != REDIS_REPLY_STRING || f[F_FUNCTION]->len == 0 ||
               f[F_DATA]->type != REDIS_REPLY_STRING || !reply_i64(f[F_PRIORITY], &prio) || prio < 0 ||
               prio > 2 || (f[F_WHEN]->type != REDIS_REPLY_NIL && !reply_i64(f[F_WHEN], &row.when)) ||
               k->len - skip > GM_HANDLE_MAX))
        ok = false;
    if (!ok) {
        gm_log(GM_LOG_ERROR, "redis: key %s is no job this server can read (a field missing or odd); "
               "kept, not replayed", k->key);
        freeReplyObject(rep);
        return;
    }
    row.handle = k->key + skip;
    row.handle_len = (uint32_t)(k->len - skip);
    row.function = f[F_FUNCTION]->str;
    row.function_len = (uint32_t)f[F_FUNCTION]->len;
    row.unique = f[F_UNIQUE]->type == REDIS_REPLY_STRING ? f[F_UNIQUE]->str : "";
    row.unique_len = f[F_UNIQUE]->type == REDIS_REPLY_STRING ? (uint32_t)f[F_UNIQUE]->len : 0;
    row.data = f[F_DATA]->str;
    row.data_len = (uint32_t)f[F_DATA]->len;
    row.priority = (int)prio;
    if (f[F_LIFECYCLE]->type == REDIS_REPLY_STRING && f[F_LIFECYCLE]->len) {
        row.lifecycle = f[F_LIFECYCLE]->str;
        row.lifecycle_len = (uint32_t)f[F_LIFECYCLE]->len;
    }
    if (!ch->stop && ch->cb(ch->arg, &row) < 0)
        ch->stop = true;
    freeReplyObject(rep);
}

static int
rd_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct rd *r = state;
    struct keys ks = {0};
    if (scan_keys(r, ":job:*", &ks, err, errlen) < 0) {
        keys_free(&ks);
        return -1;
    }
    int rc = 0;
    /* phase one: every job's seq, to replay in the order they were stored */
    for (size_t base = 0; base < ks.n && rc == 0; base += REPLAY_CHUNK) {
        size_t n = ks.n - base < REPLAY_CHUNK ? ks.n - base : REPLAY_CHUNK;
        resp_reset(&r->out);
        for (size_t i = 0; i < n; i++) {
            resp_cmd(&r->out, 3);
            resp_str(&r->out, "HGET");
            resp_arg(&r->out, ks.k[base + i].key, ks.k[base + i].len);
            resp_str(&r->out, "seq");
        }
        rc = pipeline(r, &r->out, n, take_seq, ks.k + base, "replay", err, errlen);
    }
    size_t m = 0; /* keys that are no hash are dropped (logged, kept in Redis) */
    for (size_t i = 0; i < ks.n; i++) {
        if (ks.k[i].bad)
            free(ks.k[i].key);
        else
            ks.k[m++] = ks.k[i];
    }
    ks.n = m;
    if (rc == 0 && ks.n)
        qsort(ks.k, ks.n, sizeof *ks.k, cmp_by_seq);
    /* phase two: the jobs, in that order */
    struct replay_chunk ch = {r, NULL, cb, arg, false, 0};
    for (size_t base = 0; base < ks.n && rc == 0 && !ch.stop; base += REPLAY_CHUNK) {
        size_t n = ks.n - base < REPLAY_CHUNK ? ks.n - base : REPLAY_CHUNK;
        resp_reset(&r->out);
        for (size_t i = 0; i < n; i++) {
            const struct jobkey *k = &ks.k[base + i];
            if (k->seq != UINT64_MAX && k->seq >= ch.max_seq)
                ch.max_seq = k->seq + 1;
            resp_cmd(&r->out, 2 + NFIELDS);
            resp_str(&r->out, "HMGET");
            resp_arg(&r->out, k->key, k->len);
            for (int j = 0; j < NFIELDS; j++)
                resp_str(&r->out, job_fields[j]);
        }
        ch.k = ks.k + base;
        rc = pipeline(r, &r->out, n, take_job, &ch, "replay", err, errlen);
    }
    if (ch.max_seq > r->next_seq)
        r->next_seq = ch.max_seq;
    keys_free(&ks);
    return rc;
}

/* ---- migrating gearmand 1.1.20's keys ---- */

static bool
is_uuid(const char *s, size_t n)
{
    if (n != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

/* Splits "<function>-<unique>" (after "P-"); false if there is no dash. */
static bool
split_old_key(const char *s, size_t n, size_t *fn_len)
{
    if (n > 37 && s[n - 37] == '-' && is_uuid(s + n - 36, 36)) {
        *fn_len = n - 37;
        return true;
    }
    const char *dash = memchr(s, '-', n);
    if (!dash || dash == s)
        return false;
    *fn_len = (size_t)(dash - s);
    return true;
}

struct migration {
    struct rd *r;
    struct jobkey *k;
    struct resp *tx;      /* the MULTI being written */
    size_t ncmd;          /* commands in it, MULTI and EXEC aside */
    size_t jobs;
    uint64_t next_handle; /* the number the next migrated job's handle gets */
    uint64_t seq;
    bool retry_as_string; /* some keys were no hash: read them with GET */
};

/* Adds one old job to the migration's MULTI: its new key, the old one's
   removal.  Returns false (logged, the old key kept) if it is no job. */
static void
migrate_one(struct migration *m, const struct jobkey *k, const char *data, size_t data_len, const char *prio_s,
            size_t prio_len)
{
    struct rd *r = m->r;
    const char *name = k->key + r->prefix_len + 1;
    size_t name_len = k->len - r->prefix_len - 1, fn_len;
    int prio = 1;
    if (prio_s) {
        prio = prio_len == 1 && prio_s[0] >= '0' && prio_s[0] <= '2' ? prio_s[0] - '0' : -1;
    }
    if (prio < 0 || !split_old_key(name, name_len, &fn_len)) {
        gm_log(GM_LOG_ERROR, "redis: key %s looks like gearmand 1.1's but is no job it wrote; kept, not "
               "replayed", k->key);
        return;
    }
    char handle[GM_HANDLE_MAX + 1];
    int hl = snprintf(handle, sizeof handle, "%s:%llu", r->handle_prefix, (unsigned long long)m->next_handle++);
    struct resp *b = m->tx;
    resp_cmd(b, 2);
    resp_str(b, "DEL");
    resp_key(r, b, ":job:", handle, (size_t)hl);
    resp_cmd(b, 2 + 2 * (NFIELDS + 1));
    resp_str(b, "HSET");
    resp_key(r, b, ":job:", handle, (size_t)hl);
    resp_str(b, "function");
    resp_arg(b, name, fn_len);
    resp_str(b, "unique");
    resp_arg(b, name + fn_len + 1, name_len - fn_len - 1);
    resp_str(b, "data");
    resp_arg(b, data, data_len);
    resp_str(b, "priority");
    resp_num(b, prio);
    resp_str(b, "when");
    resp_num(b, 0);
    resp_str(b, "lifecycle");
    resp_arg(b, "", 0);
    resp_str(b, "seq");
    resp_num(b, (long long)m->seq++);
    resp_cmd(b, 2);
    resp_str(b, "DEL");
    resp_arg(b, k->key, k->len);
    m->ncmd += 3;
    m->jobs++;
}

/* An old key read with HGETALL (gearmand 1.1.16 and later). */
static void
take_old_hash(void *arg, size_t i, redisReply *rep)
{
    struct migration *m = arg;
    struct jobkey *k = &m->k[i];
    if (rep->type == REDIS_REPLY_ERROR) {
        k->bad = true; /* WRONGTYPE: gearmand before 1.1.16 stored a string */
        m->retry_as_string = true;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0) {
        const redisReply *data = NULL, *prio = NULL;
        for (size_t j = 0; j + 1 < rep->elements; j += 2) {
            const redisReply *name = rep->element[j];
            if (name->type != REDIS_REPLY_STRING)
                continue;
            if (name->len == 4 && memcmp(name->str, "data", 4) == 0)
                data = rep->element[j + 1];
            else if (name->len == 8 && memcmp(name->str, "priority", 8) == 0)
                prio = rep->element[j + 1];
        }
        if (data && data->type == REDIS_REPLY_STRING)
            migrate_one(m, k, data->str, data->len, prio && prio->type == REDIS_REPLY_STRING ? prio->str : NULL,
                        prio && prio->type == REDIS_REPLY_STRING ? prio->len : 0);
        else
            gm_log(GM_LOG_ERROR, "redis: key %s has no data field; kept, not replayed", k->key);
    }
    freeReplyObject(rep);
}

/* An old key read with GET (gearmand before 1.1.16: the value is the data). */
static void
take_old_string(void *arg, size_t i, redisReply *rep)
{
    struct migration *m = arg;
    struct jobkey *k = &m->k[i];
    if (rep->type == REDIS_REPLY_STRING)
        migrate_one(m, k, rep->str, rep->len, NULL, 0);
    else if (rep->type == REDIS_REPLY_ERROR)
        gm_log(GM_LOG_ERROR, "redis: key %s is neither a hash nor a string; kept, not replayed", k->key);
    freeReplyObject(rep);
}

/* Reads the old keys ks[0..n) with cmd ("HGETALL" or "GET"), only those
   marked bad when `only_bad`, adding their jobs to the migration. */
static int
read_old_keys(struct rd *r, struct migration *m, struct jobkey *k, size_t n, const char *cmd, bool only_bad,
              void (*take)(void *, size_t, redisReply *), char *err, size_t errlen)
{
    struct resp b = {0};
    size_t sent = 0;
    struct jobkey *sel = malloc((n ? n : 1) * sizeof *sel);
    if (!sel) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (only_bad != k[i].bad)
            continue;
        sel[sent++] = k[i];
        resp_cmd(&b, 2);
        resp_str(&b, cmd);
        resp_arg(&b, k[i].key, k[i].len);
    }
    m->k = sel;
    int rc = sent ? pipeline(r, &b, sent, take, m, "reading gearmand 1.1 keys", err, errlen) : 0;
    for (size_t i = 0, j = 0; i < n && rc == 0; i++)
        if (only_bad == k[i].bad)
            k[i].bad = sel[j++].bad;
    free(sel);
    free(b.p);
    return rc;
}

/* Counts the EXEC's failures, keeping the first error text. */
struct tx_result {
    struct rd *r;
    size_t n;
    char first[200];
    redisReply *exec;
};

static void
take_tx_reply(void *arg, size_t i, redisReply *rep)
{
    struct tx_result *t = arg;
    if (i + 1 == t->n) {
        t->exec = rep;
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && !t->first[0]) {
        snprintf(t->first, sizeof t->first, "%.*s", (int)rep->len, rep->str);
        if (server_cannot_serve(rep->str))
            t->r->down = true;
    }
    freeReplyObject(rep);
}

/* Sends tx (MULTI, ncmd commands, EXEC) and reads its answers: returns 0
   if EXEC ran every command, else -1 with err (nothing was done, unless
   a command failed as it ran, which the batches here never do). */
static int
run_transaction(struct rd *r, const struct resp *tx, size_t ncmd, const char *what, char *err, size_t errlen)
{
    struct tx_result t = {r, ncmd + 2, "", NULL};
    if (pipeline(r, tx, ncmd + 2, take_tx_reply, &t, what, err, errlen) < 0) {
        if (t.exec)
            freeReplyObject(t.exec);
        return -1;
    }
    redisReply *ex = t.exec;
    int rc = 0;
    if (ex->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: Redis at %s refused it: %s", what, r->where, t.first[0] ? t.first : ex->str);
        if (server_cannot_serve(ex->str))
            r->down = true;
        rc = -1;
    } else if (ex->type != REDIS_REPLY_ARRAY || ex->elements != ncmd) {
        snprintf(err, errlen, "%s: Redis at %s did not run it", what, r->where);
        rc = -1;
    } else {
        for (size_t i = 0; i < ex->elements; i++)
            if (ex->element[i]->type == REDIS_REPLY_ERROR) {
                snprintf(err, errlen, "%s: Redis at %s: %s", what, r->where, ex->element[i]->str);
                rc = -1;
                break;
            }
    }
    freeReplyObject(ex);
    return rc;
}

/* Rewrites every key gearmand 1.1 wrote under P in our form, in one
   transaction.  Returns 0 or -1 with err. */
static int
migrate_old_keys(struct rd *r, char *err, size_t errlen)
{
    struct keys ks = {0};
    if (scan_keys(r, "-*", &ks, err, errlen) < 0) {
        keys_free(&ks);
        return -1;
    }
    if (ks.n == 0)
        return 0;
    struct resp tx = {0};
    uint64_t counter;
    int rc = get_number(r, ":next_handle", &counter, err, errlen);
    struct migration m = {r, NULL, &tx, 0, 0, counter ? counter : 1, r->next_seq, false};
    resp_cmd(&tx, 1);
    resp_str(&tx, "MULTI");
    for (size_t base = 0; base < ks.n && rc == 0; base += REPLAY_CHUNK) {
        size_t n = ks.n - base < REPLAY_CHUNK ? ks.n - base : REPLAY_CHUNK;
        rc = read_old_keys(r, &m, ks.k + base, n, "HGETALL", false, take_old_hash, err, errlen);
        if (rc == 0 && m.retry_as_string)
            rc = read_old_keys(r, &m, ks.k + base, n, "GET", true, take_old_string, err, errlen);
        m.retry_as_string = false;
    }
    if (rc == 0 && m.jobs) {
        resp_cmd(&tx, 3);
        resp_str(&tx, "SET");
        resp_key(r, &tx, ":seq", "", 0);
        resp_num(&tx, (long long)m.seq);
        resp_cmd(&tx, 3);
        resp_str(&tx, "SET");
        resp_key(r, &tx, ":next_handle", "", 0);
        resp_num(&tx, (long long)m.next_handle);
        resp_cmd(&tx, 1);
        resp_str(&tx, "EXEC");
        rc = run_transaction(r, &tx, m.ncmd + 2, "migrating gearmand 1.1 keys", err, errlen);
        if (rc == 0) {
            r->next_seq = m.seq;
            gm_log(GM_LOG_NOTICE, "redis: migrated %zu jobs from gearmand 1.1 keys (%s-<function>-<unique>)",
                   m.jobs, r->prefix);
        }
    }
    free(tx.p);
    keys_free(&ks);
    return rc;
}

/* ---- the backend ---- */

static void rd_close(void *state);

static void *
rd_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    struct rd *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *server = gm_queue_opt_or(opts, "redis-server", "127.0.0.1");
    const char *port = gm_queue_opt_or(opts, "redis-port", "6379");
    const char *password = gm_queue_opt(opts, "redis-password");
    const char *prefix = gm_queue_opt(opts, "redis-prefix");
    char *end;
    long pn = strtol(port, &end, 10);
    if (*end || end == port) {
        struct servent *se = getservbyname(port, "tcp");
        pn = se ? ntohs((uint16_t)se->s_port) : -1;
    }
    if (server[0] != '/' && (pn < 1 || pn > 65535)) {
        snprintf(err, errlen, "--redis-port %s is no port number or service name", port);
        free(r);
        return NULL;
    }
    r->port = (int)pn;
    r->server = strdup(server);
    r->password = password && *password ? strdup(password) : NULL;
    r->prefix = strdup(prefix ? prefix : "_gear_");
    r->handle_prefix = strdup(opts->handle_prefix ? opts->handle_prefix : "H:migrated");
    if (server[0] == '/')
        r->where = strdup(server);
    else if (asprintf(&r->where, "%s:%d", server, r->port) < 0)
        r->where = NULL;
    if (!r->server || (password && *password && !r->password) || !r->prefix || !r->handle_prefix || !r->where) {
        snprintf(err, errlen, "out of memory");
        rd_close(r);
        return NULL;
    }
    r->prefix_len = strlen(r->prefix);
    /* A Redis that has just started loads its data first and answers
       LOADING meanwhile: wait for it, as for a database still starting. */
    uint64_t give_up = gm_mono_ms() + RD_LOADING_WAIT_MS;
    int rc;
    bool told = false;
    while ((rc = connect_server(r, err, errlen)) == CONNECT_LOADING && gm_mono_ms() < give_up) {
        if (!told)
            gm_log(GM_LOG_NOTICE, "redis: %s; waiting", err);
        told = true;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    if (rc != 0) {
        rd_close(r);
        return NULL;
    }
    log_durability(r);
    if (get_number(r, ":seq", &r->next_seq, err, errlen) < 0 || migrate_old_keys(r, err, errlen) < 0) {
        rd_close(r);
        return NULL;
    }
    return r;
}

static int
rd_write_batch(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    struct rd *r = state;
    if (!r->c) {
        snprintf(err, errlen, "not connected to Redis at %s", r->where);
        return -1;
    }
    struct resp *b = &r->out;
    resp_reset(b);
    resp_cmd(b, 1);
    resp_str(b, "MULTI");
    size_t ncmd = 0;
    int64_t counter = -1;
    uint64_t seq = r->next_seq;
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *q = &recs[i];
        switch (q->op) {
        case GM_QOP_ADD:
            /* DEL first: the ADD replaces whatever the key held, and the
               HSET cannot meet a key of another type at EXEC time */
            resp_cmd(b, 2);
            resp_str(b, "DEL");
            resp_key(r, b, ":job:", q->handle, q->handle_len);
            resp_cmd(b, 2 + 2 * (NFIELDS + 1));
            resp_str(b, "HSET");
            resp_key(r, b, ":job:", q->handle, q->handle_len);
            resp_str(b, "function");
            resp_arg(b, q->function, q->function_len);
            resp_str(b, "unique");
            resp_arg(b, q->unique, q->unique_len);
            resp_str(b, "data");
            resp_arg(b, q->data, q->data_len);
            resp_str(b, "priority");
            resp_num(b, q->priority);
            resp_str(b, "when");
            resp_num(b, q->when);
            resp_str(b, "lifecycle");
            resp_arg(b, q->lifecycle, q->lifecycle_len);
            resp_str(b, "seq");
            resp_num(b, (long long)seq++);
            ncmd += 2;
            break;
        case GM_QOP_DONE:
            resp_cmd(b, 2);
            resp_str(b, "DEL");
            resp_key(r, b, ":job:", q->handle, q->handle_len);
            ncmd++;
            break;
        case GM_QOP_COUNTER:
            if (q->when > counter)
                counter = q->when;
            break;
        case GM_QOP_POLICY:
            resp_cmd(b, q->data_len ? 4 : 3);
            resp_str(b, q->data_len ? "HSET" : "HDEL");
            resp_key(r, b, ":policies", "", 0);
            resp_arg(b, q->function, q->function_len);
            if (q->data_len)
                resp_arg(b, q->data, q->data_len);
            ncmd++;
            break;
        default:
            break;
        }
    }
    if (seq != r->next_seq) {
        resp_cmd(b, 3);
        resp_str(b, "SET");
        resp_key(r, b, ":seq", "", 0);
        resp_num(b, (long long)seq);
        ncmd++;
    }
    if (counter >= 0) {
        resp_cmd(b, 3);
        resp_str(b, "SET");
        resp_key(r, b, ":next_handle", "", 0);
        resp_num(b, counter);
        ncmd++;
    }
    resp_cmd(b, 1);
    resp_str(b, "EXEC");
    /* never give a seq twice, whatever became of this batch */
    r->next_seq = seq;
    if (ncmd == 0)
        return 0;
    return run_transaction(r, b, ncmd, "batch", err, errlen);
}

struct policy {
    const redisReply *fn, *text;
};

static int
cmp_policy(const void *x, const void *y)
{
    const struct policy *a = x, *b = y;
    size_t n = a->fn->len < b->fn->len ? a->fn->len : b->fn->len;
    int d = memcmp(a->fn->str, b->fn->str, n);
    return d ? d : (a->fn->len > b->fn->len) - (a->fn->len < b->fn->len);
}

static int
rd_load_policies(void *state, gm_qpolicy_cb cb, void *arg, char *err, size_t errlen)
{
    struct rd *r = state;
    char key[1024];
    if (!key_of(r, ":policies", key, sizeof key, err, errlen))
        return -1;
    const char *argv[2] = {"HGETALL", key};
    size_t lens[2] = {7, strlen(key)};
    redisReply *rep = command(r, 2, argv, lens, "HGETALL", err, errlen);
    if (!rep)
        return -1;
    int rc = 0;
    if (reply_failed(r, rep, "reading the policies", err, errlen)) {
        rc = -1;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) {
        size_t n = rep->elements / 2;
        struct policy *p = malloc(n * sizeof *p);
        if (!p) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        } else {
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (rep->element[2 * i]->type == REDIS_REPLY_STRING &&
                    rep->element[2 * i + 1]->type == REDIS_REPLY_STRING)
                    p[m++] = (struct policy){rep->element[2 * i], rep->element[2 * i + 1]};
            qsort(p, m, sizeof *p, cmp_policy);
            for (size_t i = 0; i < m; i++)
                cb(arg, p[i].fn->str, p[i].fn->len, p[i].text->str, p[i].text->len);
            free(p);
        }
    }
    freeReplyObject(rep);
    return rc;
}

static int
rd_load_counter(void *state, uint64_t *next, char *err, size_t errlen)
{
    return get_number(state, ":next_handle", next, err, errlen);
}

static bool
rd_alive(void *state)
{
    struct rd *r = state;
    return r->c && !r->down && r->c->err == 0;
}

static int
rd_reconnect(void *state, char *err, size_t errlen)
{
    struct rd *r = state;
    return connect_server(r, err, errlen) == 0 ? 0 : -1;
}

static void
rd_close(void *state)
{
    struct rd *r = state;
    if (!r)
        return;
    drop_conn(r);
    free(r->server);
    free(r->password);
    free(r->where);
    free(r->prefix);
    free(r->handle_prefix);
    free(r->out.p);
    free(r);
}

static const char *const rd_aliases[] = {"libhiredis", "hiredis", NULL};

const struct gm_queue_backend gm_queue_redis = {
    .name = "redis",
    .aliases = rd_aliases,
    .stores_epoch = true,
    .open = rd_open,
    .replay = rd_replay,
    .write_batch = rd_write_batch,
    .load_policies = rd_load_policies,
    .load_counter = rd_load_counter,
    .alive = rd_alive,
    .reconnect = rd_reconnect,
    .close = rd_close,
};
