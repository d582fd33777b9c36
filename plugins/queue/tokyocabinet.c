/*
 * plugins/queue/tokyocabinet.c: the Tokyo Cabinet queue (-q libtokyocabinet,
 * alias tokyocabinet): a hash (.tch) or B+ tree (.tcb) database file named
 * by --libtokyocabinet-file (tcadbopen's name, tuning parameters after '#'),
 * optimized when opened unless --libtokyocabinet-optimize=false.
 *
 * Owns one Tokyo Cabinet handle, used only by the persistence thread (and by
 * the main thread for open/replay before that thread starts).  Each batch is
 * one Tokyo Cabinet transaction (its write-ahead log undoes a batch cut short
 * by a crash) followed by one sync (msync + fsync) of the database file.  The
 * file is locked without waiting: a file another process holds is a start-up
 * error, not a hang.  Tokyo Cabinet writes through a memory map, where a full
 * disk is SIGBUS rather than an error: the file's blocks are allocated when
 * it is opened, and room past its end is reserved (fallocate) before every
 * batch, which is refused, untouched, when there is none.  A batch that
 * failed inside Tokyo Cabinet (commit, sync) makes alive() false, and
 * reconnect() opens the file again (its log undoes the rest).
 *
 * Records (every key of ours starts with a NUL byte, which no gearmand key
 * does, since function names cannot hold one):
 *   "\0J" handle    a job: version 1 (1 byte), priority (1), sequence (8),
 *                   run time (8), then the lengths (4 bytes each) of the
 *                   function, unique key, data and lifecycle bytes, then those
 *                   bytes.  Integers big-endian.  The sequence number orders
 *                   replay (a hash file's order is not its writing order).
 *   "\0C"           the handle counter (8 bytes).
 *   "\0S"           the next sequence number (8 bytes).
 *   "\0P" function  a run-time policy: sequence (8 bytes), then its text.
 * Keys without the leading NUL are gearmand 1.1.20's (reference 5.8: key
 * function "-" unique, value function NUL unique NUL priority digit NUL run
 * time NUL data).  open() migrates them in one transaction, in the file's
 * order, each given the handle "<prefix>:<n>"; one it cannot read is logged
 * and left where it is, and replay() logs it again and goes on.
 */
#include "config.h"

#include "plugins/queue/backends.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <tcadb.h>
#include <tcbdb.h>
#include <tchdb.h>
#include <tcutil.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"

#define TC_FILE_OPT "libtokyocabinet-file"
#define TC_OPTIMIZE_OPT "libtokyocabinet-optimize"
#define TC_JOB_HEADER 34        /* version, priority, sequence, when, four lengths */
#define TC_BAD_LOGGED_MAX 20    /* bad records logged one by one per replay; then a count */
#define TC_RECORD_SLACK 64      /* Tokyo Cabinet's own bytes around a record, at most (padding, header) */
#define TC_RESERVE_MIN (1u << 20) /* space reserved past the file's end before every batch, at least */

struct tc {
    TCADB *adb;
    char *name;            /* as tcadbopen takes it, with the lock mode */
    char *path;            /* the file, without tuning parameters (for messages) */
    bool broken;           /* a commit, sync or abort failed: reopen before the next batch */
    int fd;                /* our own descriptor of the file: space is reserved through it */
    uint64_t seq;          /* the next sequence number */
    char *buf;             /* a job's key or value being built */
    size_t cap;
};

static void
put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t
get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Tokyo Cabinet's message for the last error of the open database. */
static const char *
tc_errmsg(struct tc *s)
{
    void *db = tcadbreveal(s->adb);
    if (!db)
        return "no database";
    switch (tcadbomode(s->adb)) {
    case ADBOHDB:
        return tchdberrmsg(tchdbecode(db));
    case ADBOBDB:
        return tcbdberrmsg(tcbdbecode(db));
    default:
        return "error";
    }
}

/* True if the last failed operation only missed a record. */
static bool
tc_no_record(struct tc *s)
{
    void *db = tcadbreveal(s->adb);
    int mode = tcadbomode(s->adb);
    int ec = !db ? -1 : mode == ADBOHDB ? tchdbecode(db) : mode == ADBOBDB ? tcbdbecode(db) : -1;
    return ec == TCENOREC;
}

static int
grow(struct tc *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < n)
        cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b)
        return -1;
    s->buf = b;
    s->cap = cap;
    return 0;
}

/* Builds "\0" kind name in s->buf; returns its length, or -1. */
static int
make_key(struct tc *s, char kind, const char *name, size_t len)
{
    if (len > (size_t)INT32_MAX - 2 || grow(s, len + 2) < 0)
        return -1;
    s->buf[0] = '\0';
    s->buf[1] = kind;
    if (len)
        memcpy(s->buf + 2, name, len);
    return (int)(len + 2);
}

static bool
put_u64(struct tc *s, char kind, uint64_t v)
{
    char key[2] = {'\0', kind};
    unsigned char val[8];
    put_be(val, v, 8);
    return tcadbput(s->adb, key, 2, val, 8);
}

/* Reads the 8-byte record "\0" kind into *v (0 if absent); false if it is
   there with another size. */
static bool
get_u64(struct tc *s, char kind, uint64_t *v)
{
    char key[2] = {'\0', kind};
    int len = 0;
    void *val = tcadbget(s->adb, key, 2, &len);
    *v = 0;
    if (!val)
        return true;
    bool ok = len == 8;
    if (ok)
        *v = get_be(val, 8);
    tcfree(val);
    return ok;
}

/* A job's value: appends it to s->buf after koff bytes (its key). */
static int
encode_job(struct tc *s, size_t koff, const struct gm_qrecord *r, uint64_t seq)
{
    size_t n = koff + TC_JOB_HEADER + (size_t)r->function_len + r->unique_len + r->data_len + r->lifecycle_len;
    if (n - koff > (size_t)INT32_MAX || grow(s, n) < 0)
        return -1;
    unsigned char *p = (unsigned char *)s->buf + koff;
    p[0] = 1;
    p[1] = r->priority;
    put_be(p + 2, seq, 8);
    put_be(p + 10, (uint64_t)r->when, 8);
    put_be(p + 18, r->function_len, 4);
    put_be(p + 22, r->unique_len, 4);
    put_be(p + 26, r->data_len, 4);
    put_be(p + 30, r->lifecycle_len, 4);
    p += TC_JOB_HEADER;
    const char *parts[4] = {r->function, r->unique, r->data, r->lifecycle};
    uint32_t lens[4] = {r->function_len, r->unique_len, r->data_len, r->lifecycle_len};
    for (int i = 0; i < 4; i++) {
        if (lens[i])
            memcpy(p, parts[i], lens[i]);
        p += lens[i];
    }
    return (int)(n - koff);
}

/* Reads a job's value into row (pointing into val); false if it is not one
   this server wrote. */
static bool
decode_job(const unsigned char *val, size_t len, struct gm_qrow *row, uint64_t *seq)
{
    if (len < TC_JOB_HEADER || val[0] != 1)
        return false;
    uint64_t lens[4];
    uint64_t total = TC_JOB_HEADER;
    for (int i = 0; i < 4; i++) {
        lens[i] = get_be(val + 18 + 4 * i, 4);
        total += lens[i];
    }
    if (total != len)
        return false;
    row->priority = val[1];
    *seq = get_be(val + 2, 8);
    row->when = (int64_t)get_be(val + 10, 8);
    const char *p = (const char *)val + TC_JOB_HEADER;
    row->function = p;
    row->function_len = (uint32_t)lens[0];
    p += lens[0];
    row->unique = p;
    row->unique_len = (uint32_t)lens[1];
    p += lens[1];
    row->data = p;
    row->data_len = (uint32_t)lens[2];
    p += lens[2];
    row->lifecycle = lens[3] ? p : NULL;
    row->lifecycle_len = (uint32_t)lens[3];
    return true;
}

/* Reads a gearmand 1.1.20 value (function NUL unique NUL priority NUL when
   NUL data) into r; false if it is not one. */
static bool
decode_legacy(const char *val, size_t len, struct gm_qrecord *r)
{
    const char *end = val + len, *f[4];
    size_t flen[4];
    const char *p = val;
    for (int i = 0; i < 4; i++) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        if (!nul)
            return false;
        f[i] = p;
        flen[i] = (size_t)(nul - p);
        p = nul + 1;
    }
    if (flen[0] == 0 || flen[0] > UINT32_MAX || flen[1] > UINT32_MAX)
        return false;
    if (flen[2] != 1 || f[2][0] < '0' || f[2][0] > '2')
        return false;
    int64_t when = 0;
    for (size_t i = 0; i < flen[3]; i++) {
        if (f[3][i] < '0' || f[3][i] > '9' || when > (INT64_MAX - 9) / 10)
            return false;
        when = when * 10 + (f[3][i] - '0');
    }
    memset(r, 0, sizeof *r);
    r->op = GM_QOP_ADD;
    r->function = f[0];
    r->function_len = (uint32_t)flen[0];
    r->unique = f[1];
    r->unique_len = (uint32_t)flen[1];
    r->priority = (uint8_t)(f[2][0] - '0');
    r->when = when;
    r->data = p;
    r->data_len = (uint32_t)(end - p);
    return true;
}

static bool
commit_and_sync(struct tc *s, char *err, size_t errlen)
{
    if (!tcadbtrancommit(s->adb)) {
        snprintf(err, errlen, "%s: commit: %s", s->path, tc_errmsg(s));
        tcadbtranabort(s->adb);
        s->broken = true;
        return false;
    }
    if (!tcadbsync(s->adb)) {
        snprintf(err, errlen, "%s: sync: %s", s->path, tc_errmsg(s));
        s->broken = true;
        return false;
    }
    return true;
}

/* Gives the records gearmand 1.1.20 wrote our layout, in one transaction. */
static int
migrate(struct tc *s, const char *prefix, char *err, size_t errlen)
{
    TCLIST *old = tclistnew();
    int ksz;
    char *k;
    tcadbiterinit(s->adb);
    while ((k = tcadbiternext(s->adb, &ksz))) {
        if (ksz > 0 && k[0] != '\0')
            tclistpush(old, k, ksz);
        tcfree(k);
    }
    if (tclistnum(old) == 0) {
        tclistdel(old);
        return 0;
    }
    if (!tcadbtranbegin(s->adb)) {
        snprintf(err, errlen, "%s: begin: %s", s->path, tc_errmsg(s));
        tclistdel(old);
        return -1;
    }
    unsigned long long n = 0, moved = 0, kept = 0;
    size_t plen = strlen(prefix);
    for (int i = 0; i < tclistnum(old); i++) {
        int oksz;
        const char *okey = tclistval(old, i, &oksz);
        int vsz;
        char *val = tcadbget(s->adb, okey, oksz, &vsz);
        struct gm_qrecord r;
        if (!val || !decode_legacy(val, (size_t)vsz, &r)) {
            gm_log(GM_LOG_ERROR, "libtokyocabinet: %s: record %.*s is not in gearmand 1.1.20's layout; kept, "
                   "not replayed", s->path, oksz > 200 ? 200 : oksz, okey);
            tcfree(val);
            kept++;
            continue;
        }
        char handle[300];
        int klen;
        do { /* a handle no job of ours has */
            snprintf(handle, sizeof handle, "%.*s:%llu", (int)(plen > 250 ? 250 : plen), prefix, ++n);
            klen = make_key(s, 'J', handle, strlen(handle));
        } while (klen > 0 && tcadbvsiz(s->adb, s->buf, klen) >= 0);
        r.handle = handle;
        r.handle_len = (uint32_t)strlen(handle);
        int vlen = klen < 0 ? -1 : encode_job(s, (size_t)klen, &r, s->seq++);
        bool ok = vlen >= 0 && tcadbput(s->adb, s->buf, klen, s->buf + klen, vlen) &&
                  tcadbout(s->adb, okey, oksz);
        tcfree(val);
        if (!ok) {
            snprintf(err, errlen, "%s: migrating gearmand 1.1.20's records: %s", s->path,
                     vlen < 0 ? "out of memory" : tc_errmsg(s));
            tcadbtranabort(s->adb);
            tclistdel(old);
            return -1;
        }
        moved++;
    }
    tclistdel(old);
    if (moved == 0) { /* only records it cannot read: nothing to write */
        tcadbtranabort(s->adb);
        return 0;
    }
    if (!put_u64(s, 'S', s->seq)) {
        snprintf(err, errlen, "%s: %s", s->path, tc_errmsg(s));
        tcadbtranabort(s->adb);
        return -1;
    }
    if (!commit_and_sync(s, err, errlen))
        return -1;
    gm_log(GM_LOG_NOTICE, "libtokyocabinet: %s: migrated %llu records from gearmand 1.1.20's layout (%llu kept as "
           "they were)", s->path, moved, kept);
    return 0;
}

/* Opens our descriptor of the (possibly rebuilt) file and backs every byte
   it already has with disk blocks: Tokyo Cabinet writes its bucket array
   through a memory map, and a write to a page the disk has no room for is
   SIGBUS, not an error.  Returns false with errno set. */
static bool
reserve_open(struct tc *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = open(s->path, O_RDWR | O_CLOEXEC);
    if (s->fd < 0)
        return false;
    off_t size = lseek(s->fd, 0, SEEK_END);
    if (size > 0) {
        int rc = posix_fallocate(s->fd, 0, size);
        if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
            errno = rc;
            return false;
        }
    }
    return true;
}

/* Reserves room past the end of the file for a batch of about bytes: the
   records go where Tokyo Cabinet's memory map reaches, so they must never
   meet a full disk there (SIGBUS); a batch there is no room for is refused
   before anything is written.  Returns false with errno set. */
static bool
reserve(struct tc *s, uint64_t bytes)
{
#ifdef FALLOC_FL_KEEP_SIZE
    uint64_t need = bytes * 2 + TC_RESERVE_MIN;
    if (fallocate(s->fd, FALLOC_FL_KEEP_SIZE, (off_t)tcadbsize(s->adb), (off_t)need) == 0)
        return true;
    return errno == EOPNOTSUPP || errno == EINVAL ? true : false; /* a file system without it: no reserve */
#else
    (void)s;
    (void)bytes;
    return true;
#endif
}

static void tc_close(void *state);

/* --libtokyocabinet-optimize's value: 1, 0, or -1 if it is no boolean. */
static int
parse_bool(const char *v)
{
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
        if (strcasecmp(v, no[i]) == 0)
            return 0;
    }
    return -1;
}

static void *
tc_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    const char *name = gm_queue_opt_or(opts, TC_FILE_OPT, NULL);
    if (!name) {
        snprintf(err, errlen, "-q libtokyocabinet needs --%s (a .tch or .tcb file)", TC_FILE_OPT);
        return NULL;
    }
    int optimize = parse_bool(gm_queue_opt_or(opts, TC_OPTIMIZE_OPT, "true"));
    if (optimize < 0) {
        snprintf(err, errlen, "--%s: '%s' is not true or false", TC_OPTIMIZE_OPT, gm_queue_opt(opts, TC_OPTIMIZE_OPT));
        return NULL;
    }
    struct tc *s = calloc(1, sizeof *s);
    if (s)
        s->fd = -1;
    if (!s || !(s->path = strdup(name)) || !(s->adb = tcadbnew())) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char *hash = strchr(s->path, '#');
    if (hash)
        *hash = '\0';
    /* lock without waiting, unless the name says otherwise */
    s->name = tcsprintf("%s%s", name, strstr(name, "#mode=") ? "" : "#mode=wcf");
    if (!tcadbopen(s->adb, s->name)) {
        snprintf(err, errlen, "--%s %s: cannot open it (a .tch or .tcb file this user may write, that no "
                 "other process holds open)", TC_FILE_OPT, name);
        goto fail;
    }
    if (tcadbomode(s->adb) != ADBOHDB && tcadbomode(s->adb) != ADBOBDB) {
        snprintf(err, errlen, "--%s %s: not a durable queue: name a hash (.tch) or B+ tree (.tcb) file",
                 TC_FILE_OPT, name);
        goto fail;
    }
    if (!get_u64(s, 'S', &s->seq)) {
        snprintf(err, errlen, "--%s %s: its sequence record is damaged", TC_FILE_OPT, name);
        goto fail;
    }
    if (migrate(s, opts->handle_prefix ? opts->handle_prefix : "H:migrated", err, errlen) < 0)
        goto fail;
    if (optimize && !tcadboptimize(s->adb, NULL)) {
        snprintf(err, errlen, "--%s %s: optimizing: %s", TC_FILE_OPT, name, tc_errmsg(s));
        goto fail;
    }
    if (!reserve_open(s)) { /* after optimizing, which writes a new file */
        snprintf(err, errlen, "--%s %s: reserving its space: %s", TC_FILE_OPT, name, strerror(errno));
        goto fail;
    }
    return s;
fail:
    tc_close(s);
    return NULL;
}

struct seqkey {
    uint64_t seq;
    char *key;
    int len;
};

static int
by_seq(const void *a, const void *b)
{
    const struct seqkey *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every record "\0" kind..., ordered by the sequence number its value
   starts at byte off of; *n of them (caller frees the keys and array), NULL
   with *n = SIZE_MAX when memory is short.  Values that are too short are
   logged and left out. */
static struct seqkey *
collect(struct tc *s, char kind, size_t off, size_t *n)
{
    struct seqkey *v = NULL;
    size_t cap = 0;
    *n = 0;
    unsigned long long foreign = 0;
    int ksz;
    char *k;
    tcadbiterinit(s->adb);
    while ((k = tcadbiternext(s->adb, &ksz))) {
        if (ksz < 2 || k[0] != '\0' || k[1] != kind) {
            if (kind == 'J' && ksz > 0 && k[0] != '\0' && foreign++ < TC_BAD_LOGGED_MAX)
                gm_log(GM_LOG_ERROR, "libtokyocabinet: %s: record %.*s is not a job of this server's; kept, not "
                       "replayed", s->path, ksz > 200 ? 200 : ksz, k);
            tcfree(k);
            continue;
        }
        int vsz;
        unsigned char *val = tcadbget(s->adb, k, ksz, &vsz);
        if (!val || (size_t)vsz < off + 8) {
            gm_log(GM_LOG_ERROR, "libtokyocabinet: %s: record %.*s is unreadable; kept, not replayed", s->path,
                   ksz - 2 > 200 ? 200 : ksz - 2, k + 2);
            tcfree(val);
            tcfree(k);
            continue;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            struct seqkey *nv = realloc(v, cap * sizeof *v);
            if (!nv) {
                tcfree(val);
                tcfree(k);
                goto oom;
            }
            v = nv;
        }
        v[*n].seq = get_be(val + off, 8);
        v[*n].key = k;
        v[*n].len = ksz;
        (*n)++;
        tcfree(val);
    }
    if (foreign > TC_BAD_LOGGED_MAX)
        gm_log(GM_LOG_ERROR, "libtokyocabinet: %s: %llu records in all are not jobs of this server's; kept", s->path,
               foreign);
    if (*n)
        qsort(v, *n, sizeof *v, by_seq);
    return v;
oom:
    for (size_t i = 0; i < *n; i++)
        tcfree(v[i].key);
    free(v);
    *n = SIZE_MAX;
    return NULL;
}

static void
free_seqkeys(struct seqkey *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tcfree(v[i].key);
    free(v);
}

static int
tc_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct tc *s = state;
    gm_log(GM_LOG_NOTICE, "libtokyocabinet: replaying %s", s->path);
    size_t n;
    struct seqkey *v = collect(s, 'J', 2, &n);
    if (n == SIZE_MAX) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int vsz;
        unsigned char *val = tcadbget(s->adb, v[i].key, v[i].len, &vsz);
        struct gm_qrow row;
        uint64_t seq;
        memset(&row, 0, sizeof row);
        if (!val || !decode_job(val, (size_t)vsz, &row, &seq)) {
            gm_log(GM_LOG_ERROR, "libtokyocabinet: %s: job record %.*s is unreadable; kept, not replayed", s->path,
                   v[i].len - 2 > 200 ? 200 : v[i].len - 2, v[i].key + 2);
            tcfree(val);
            continue;
        }
        row.handle = v[i].key + 2;
        row.handle_len = (uint32_t)(v[i].len - 2);
        int r = cb(arg, &row);
        tcfree(val);
        if (r < 0)
            break;
    }
    free_seqkeys(v, n);
    return 0;
}

/* Applies one record inside the open transaction; false on failure. */
static bool
apply(struct tc *s, const struct gm_qrecord *r)
{
    int klen;
    switch (r->op) {
    case GM_QOP_ADD: {
        if (r->handle_len == 0 || r->function_len == 0)
            return false;
        klen = make_key(s, 'J', r->handle, r->handle_len);
        int vlen = klen < 0 ? -1 : encode_job(s, (size_t)klen, r, s->seq);
        if (vlen < 0)
            return false;
        s->seq++;
        return tcadbput(s->adb, s->buf, klen, s->buf + klen, vlen);
    }
    case GM_QOP_DONE:
        klen = make_key(s, 'J', r->handle, r->handle_len);
        return klen >= 0 && (tcadbout(s->adb, s->buf, klen) || tc_no_record(s));
    case GM_QOP_COUNTER:
        return put_u64(s, 'C', (uint64_t)r->when);
    case GM_QOP_POLICY:
        klen = make_key(s, 'P', r->function, r->function_len);
        if (klen < 0)
            return false;
        if (r->data_len == 0)
            return tcadbout(s->adb, s->buf, klen) || tc_no_record(s);
        if (grow(s, (size_t)klen + 8 + r->data_len) < 0)
            return false;
        put_be((unsigned char *)s->buf + klen, s->seq++, 8);
        memcpy(s->buf + klen + 8, r->data, r->data_len);
        return tcadbput(s->adb, s->buf, klen, s->buf + klen, 8 + (int)r->data_len);
    }
    return true; /* an op this backend does not know: nothing to store */
}

static int
tc_write_batch(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    struct tc *s = state;
    uint64_t seq0 = s->seq;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += TC_JOB_HEADER + TC_RECORD_SLACK + (uint64_t)recs[i].handle_len + recs[i].function_len +
                 recs[i].unique_len + recs[i].data_len + recs[i].lifecycle_len;
    if (!reserve(s, bytes)) {
        snprintf(err, errlen, "%s: no room for the batch: %s", s->path, strerror(errno));
        return -1;
    }
    if (!tcadbtranbegin(s->adb)) {
        snprintf(err, errlen, "%s: begin: %s", s->path, tc_errmsg(s));
        s->broken = true;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!apply(s, &recs[i])) {
            const struct gm_qrecord *r = &recs[i];
            if (r->op == GM_QOP_ADD && (r->handle_len == 0 || r->function_len == 0))
                snprintf(err, errlen, "%s: a job without a handle or function is not stored", s->path);
            else
                snprintf(err, errlen, "%s: %s: %s", s->path, r->op == GM_QOP_DONE ? "deleting a job" : "storing",
                         tc_errmsg(s));
            if (!tcadbtranabort(s->adb))
                s->broken = true;
            s->seq = seq0;
            return -1;
        }
    }
    if (s->seq != seq0 && !put_u64(s, 'S', s->seq)) {
        snprintf(err, errlen, "%s: storing the sequence: %s", s->path, tc_errmsg(s));
        if (!tcadbtranabort(s->adb))
            s->broken = true;
        s->seq = seq0;
        return -1;
    }
    return commit_and_sync(s, err, errlen) ? 0 : -1;
}

static int
tc_load_policies(void *state, gm_qpolicy_cb cb, void *arg, char *err, size_t errlen)
{
    struct tc *s = state;
    size_t n;
    struct seqkey *v = collect(s, 'P', 0, &n);
    if (n == SIZE_MAX) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int vsz;
        char *val = tcadbget(s->adb, v[i].key, v[i].len, &vsz);
        if (val && vsz >= 8)
            cb(arg, v[i].key + 2, (size_t)v[i].len - 2, val + 8, (size_t)vsz - 8);
        tcfree(val);
    }
    free_seqkeys(v, n);
    return 0;
}

static int
tc_load_counter(void *state, uint64_t *next, char *err, size_t errlen)
{
    struct tc *s = state;
    if (!get_u64(s, 'C', next)) {
        snprintf(err, errlen, "%s: the handle counter's record is damaged", s->path);
        return -1;
    }
    return 0;
}

/* After a failed batch: true if only a record was refused (the batch was
   undone and the database takes transactions), so the batch may be retried
   record by record; false sends the persistence thread to tc_reconnect. */
static bool
tc_alive(void *state)
{
    struct tc *s = state;
    if (s->broken)
        return false;
    if (!tcadbtranbegin(s->adb) || !tcadbtranabort(s->adb)) {
        s->broken = true;
        return false;
    }
    return true;
}

/* Closes and opens the file again (Tokyo Cabinet's log undoes whatever a
   failed transaction left; a database in its "fatal" state takes nothing
   until then); returns 0 when it takes transactions again. */
static int
tc_reconnect(void *state, char *err, size_t errlen)
{
    struct tc *s = state;
    if (!s->broken && tcadbtranbegin(s->adb) && tcadbtranabort(s->adb))
        return 0;
    tcadbclose(s->adb);
    if (!tcadbopen(s->adb, s->name)) {
        snprintf(err, errlen, "%s: cannot open it again", s->path);
        s->broken = true;
        return -1;
    }
    if (!tcadbtranbegin(s->adb) || !tcadbtranabort(s->adb)) {
        snprintf(err, errlen, "%s: opened again but takes no transaction: %s", s->path, tc_errmsg(s));
        s->broken = true;
        return -1;
    }
    if (!reserve_open(s)) {
        snprintf(err, errlen, "%s: reserving its space: %s", s->path, strerror(errno));
        s->broken = true;
        return -1;
    }
    s->broken = false;
    return 0;
}

static void
tc_close(void *state)
{
    struct tc *s = state;
    if (!s)
        return;
    if (s->adb) {
        tcadbclose(s->adb);
        tcadbdel(s->adb);
    }
    if (s->fd >= 0)
        close(s->fd);
    tcfree(s->name);
    free(s->path);
    free(s->buf);
    free(s);
}

static const char *const tc_aliases[] = {"tokyocabinet", NULL};

const struct gm_queue_backend gm_queue_tokyocabinet = {
    .name = "libtokyocabinet",
    .aliases = tc_aliases,
    .stores_epoch = true,
    .stores_on_shutdown = false,
    .open = tc_open,
    .replay = tc_replay,
    .write_batch = tc_write_batch,
    .load_counter = tc_load_counter,
    .load_policies = tc_load_policies,
    .alive = tc_alive,
    .reconnect = tc_reconnect,
    .close = tc_close,
};
