/*
 * plugins/queue/memcached.c: the memcached queue (-q libmemcached, alias
 * memcached).  NOT durable: memcached forgets everything when it restarts
 * and may evict jobs when it is full; see docs/persistence.md.
 *
 * Owns one libmemcached handle, used only by the persistence thread (and
 * by the main thread for open/replay before that thread starts).
 *
 * Storage: one item per job, key "<prefix><handle>", flags = priority,
 * value = "GMQ1", priority (1 byte), run time (8 bytes, big-endian),
 * function length (2 bytes) and function, unique length (1 byte) and
 * unique, then the data; a job with lifecycle bytes (queue_backend.h) is
 * stored as "GMQ2", the same with a 2-byte length and those bytes between
 * the unique key and the data.  A job whose function name (64 KiB or more) or
 * unique key (256 bytes or more) does not fit those lengths is refused, its
 * batch with it, never stored cut short.  Items written by gearmand 1.1.20 (key
 * "<prefix><function>-<unique>", value = data) are found by replay, given a
 * handle, rewritten in this form and their old key deleted.  Replay lists
 * keys with "lru_crawler metadump hash" (memcached 1.6.9+), a walk of the
 * hash table that sees every item however memcached moves it between its
 * LRUs meanwhile; on older servers with "lru_crawler metadump all"
 * (1.4.31+), a walk of the LRUs, done twice since an item moved between
 * LRUs during one walk can be missed by it; and on servers without either
 * with libmemcached's cachedump listing (which misses items in memcached's
 * HOT LRU).
 */
#include "config.h"

#include "plugins/queue/backends.h"

#include <libmemcached/memcached.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/protocol.h"

#define MAGIC "GMQ1"
#define MAGIC_LIFE "GMQ2" /* with lifecycle bytes */
#define LIFE_MAX 0xFFFFu   /* the 2-byte lifecycle length */
#define HEAD_LEN (4 + 1 + 8 + 2)
#define FUNCTION_MAX 0xFFFFu /* the 2-byte function length */
#define UNIQUE_MAX 0xFFu     /* the 1-byte unique length */

struct mc {
    memcached_st *m;
    char *servers;    /* as given, for listing keys */
    char *prefix;
    size_t prefix_len;
    char *handle_prefix;
    char *value;      /* scratch for encoding */
    size_t value_cap;
    bool suspect;     /* a call failed since the connection was last checked */
};

/* With buffered requests libmemcached neither reconnects nor checks the
   socket before appending a command (it asserts on a closed one), and it
   closes the socket itself after an I/O error or a timeout.  So after any
   failure the connection is reopened before anything is buffered again:
   memcached_version talks to a server whose socket was closed (closing
   forgets the version) and reconnects it; on an open one it costs nothing.
   Returns 0 when usable. */
static int
ensure_connected(struct mc *c, char *err, size_t errlen)
{
    if (!c->suspect)
        return 0;
    memcached_return_t rc = memcached_version(c->m);
    if (rc != MEMCACHED_SUCCESS) {
        snprintf(err, errlen, "memcached: %s", memcached_strerror(c->m, rc));
        return -1;
    }
    c->suspect = false;
    return 0;
}

static void mc_close(void *state);

static void *
mc_open(const struct gm_queue_options *opts, char *err, size_t errlen)
{
    struct mc *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *servers = gm_queue_opt_or(opts, "libmemcached-servers", "127.0.0.1:11211");
    const char *prefix = gm_queue_opt(opts, "libmemcached-prefix");
    c->prefix = strdup(prefix ? prefix : "gear_");
    c->servers = strdup(servers);
    c->handle_prefix = strdup(opts->handle_prefix ? opts->handle_prefix : "H:migrated");
    c->m = memcached_create(NULL);
    memcached_server_st *list = memcached_servers_parse(servers);
    if (!c->prefix || !c->servers || !c->handle_prefix || !c->m || !list) {
        snprintf(err, errlen, "cannot use --libmemcached-servers=%s", servers);
        memcached_server_list_free(list);
        mc_close(c);
        return NULL;
    }
    c->prefix_len = strlen(c->prefix);
    memcached_server_push(c->m, list);
    memcached_server_list_free(list);
    /* Writes are buffered and sent a batch at a time (memcached_flush_buffers).
       Set once: changing this behaviour makes libmemcached reconnect, and a
       command still unread on the old connection could then be overtaken. */
    memcached_behavior_set(c->m, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
    /* Never "purge" (read back buffered replies in the middle of writing a
       batch): when that read times out, libmemcached closes the socket, drops
       the buffered commands and goes on writing the batch into the closed
       socket, where it asserts.  A batch's replies are read by the
       multi-get that checks it instead (at most --queue-batch-size replies
       of a few bytes each wait on the socket meanwhile). */
    memcached_behavior_set(c->m, MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK, UINT32_MAX);
    memcached_behavior_set(c->m, MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK, UINT32_MAX);
    /* Check that a server answers now rather than at the first job. */
    memcached_return_t rc = memcached_version(c->m);
    if (rc != MEMCACHED_SUCCESS) {
        snprintf(err, errlen, "memcached at %s: %s", servers, memcached_strerror(c->m, rc));
        mc_close(c);
        return NULL;
    }
    return c;
}

static char *
key_for(struct mc *c, const char *handle, size_t len, size_t *klen)
{
    char *k = malloc(c->prefix_len + len + 1);
    if (!k)
        return NULL;
    memcpy(k, c->prefix, c->prefix_len);
    memcpy(k + c->prefix_len, handle, len);
    k[c->prefix_len + len] = '\0';
    *klen = c->prefix_len + len;
    return k;
}

/* Encodes a job into c->value; returns its length, or 0 if memory is short. */
static size_t
encode(struct mc *c, const struct gm_qrecord *r)
{
    uint8_t prio = r->priority;
    int64_t when = r->when;
    const char *fn = r->function, *u = r->unique, *data = r->data;
    uint32_t fn_len = r->function_len, u_len = r->unique_len, data_len = r->data_len;
    uint32_t life_len = r->lifecycle_len <= LIFE_MAX ? r->lifecycle_len : 0;
    size_t need = HEAD_LEN + fn_len + 1 + u_len + (life_len ? 2 + life_len : 0) + data_len;
    if (need > c->value_cap) {
        char *v = realloc(c->value, need);
        if (!v)
            return 0;
        c->value = v;
        c->value_cap = need;
    }
    char *p = c->value;
    memcpy(p, life_len ? MAGIC_LIFE : MAGIC, 4);
    p[4] = (char)prio;
    uint64_t w = (uint64_t)when;
    for (int i = 0; i < 8; i++)
        p[5 + i] = (char)(w >> (56 - 8 * i));
    p[13] = (char)(fn_len >> 8);
    p[14] = (char)fn_len;
    p += HEAD_LEN;
    memcpy(p, fn, fn_len);
    p += fn_len;
    *p++ = (char)u_len;
    memcpy(p, u, u_len);
    p += u_len;
    if (life_len) {
        *p++ = (char)(life_len >> 8);
        *p++ = (char)life_len;
        memcpy(p, r->lifecycle, life_len);
        p += life_len;
    }
    if (data_len)
        memcpy(p, data, data_len);
    return need;
}

/* One stored item a batch expects to find when it checks its writes. */
struct expect {
    char *key;
    size_t klen;
    size_t vlen;   /* 0: any length (the handle counter) */
    size_t seq;    /* the record's place in the batch */
    bool removed;  /* a DONE: the key should be gone */
    bool found;
};

static int
cmp_key_only(const struct expect *x, const struct expect *y)
{
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int d = memcmp(x->key, y->key, n);
    return d ? d : (x->klen > y->klen) - (x->klen < y->klen);
}

static int
cmp_expect(const void *a, const void *b)
{
    const struct expect *x = a, *y = b;
    int d = cmp_key_only(x, y);
    return d ? d : (x->seq > y->seq) - (x->seq < y->seq);
}

static int
cmp_expect_key(const void *a, const void *b)
{
    return cmp_key_only(a, b);
}

/* Removes the jobs this batch stored (removals already made were for
   finished jobs: they stay removed). */
static void
undo_adds(struct mc *c, const struct gm_qrecord *recs, size_t n)
{
    char err[128];
    if (ensure_connected(c, err, sizeof err) < 0) {
        gm_log(GM_LOG_WARNING, "libmemcached: cannot take back a refused batch (%s); its jobs "
               "may run once more than asked after a restart", err);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        if (recs[k].op != GM_QOP_ADD)
            continue;
        size_t ul;
        char *uk = key_for(c, recs[k].handle, recs[k].handle_len, &ul);
        if (uk)
            memcached_delete(c->m, uk, ul, 0);
        free(uk);
    }
    memcached_flush_buffers(c->m);
}

/* Sends the batch's sets and deletes without waiting for each reply
   (libmemcached's buffered requests: one write for many commands), then
   asks for every stored key back in one multi-get: a set memcached refused
   (an item too big, out of memory) shows up as a key missing or of the
   wrong length.  Two round trips per batch instead of one per job. */
static int
send_batch(struct mc *c, const struct gm_qrecord *recs, size_t n, struct expect *ex, size_t *nex,
           char *err, size_t errlen)
{
    *nex = 0;
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        size_t klen, vlen = 0;
        char *key = r->op == GM_QOP_COUNTER ? key_for(c, "__next_handle", 13, &klen)
                                            : key_for(c, r->handle, r->handle_len, &klen);
        if (!key) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcached_return_t rc;
        if (r->op == GM_QOP_COUNTER) {
            char v[24];
            int vl = snprintf(v, sizeof v, "%lld", (long long)r->when);
            rc = memcached_set(c->m, key, klen, v, (size_t)vl, 0, 0);
        } else if (r->op == GM_QOP_ADD) {
            vlen = encode(c, r);
            rc = vlen ? memcached_set(c->m, key, klen, c->value, vlen, 0, r->priority)
                      : MEMCACHED_MEMORY_ALLOCATION_FAILURE;
        } else {
            rc = memcached_delete(c->m, key, klen, 0);
            if (rc == MEMCACHED_NOTFOUND)
                rc = MEMCACHED_SUCCESS;
        }
        if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_BUFFERED) {
            snprintf(err, errlen, "%s: %s",
                     r->op == GM_QOP_DONE ? "delete" : r->op == GM_QOP_ADD ? "set" : "set counter",
                     memcached_strerror(c->m, rc));
            free(key);
            return -1;
        }
        ex[*nex] = (struct expect){key, klen, vlen, i, r->op == GM_QOP_DONE, false};
        (*nex)++;
    }
    memcached_return_t rc = memcached_flush_buffers(c->m);
    if (rc != MEMCACHED_SUCCESS) {
        snprintf(err, errlen, "sending the batch: %s", memcached_strerror(c->m, rc));
        return -1;
    }
    return 0;
}

/* Multi-gets the keys in ex (sorted, one per key) and marks those found
   with the expected length; returns 0 if all were. */
static int
check_stored(struct mc *c, struct expect *ex, size_t nex, char *err, size_t errlen)
{
    if (nex == 0)
        return 0;
    const char **keys = malloc(nex * sizeof *keys);
    size_t *lens = malloc(nex * sizeof *lens);
    if (!keys || !lens) {
        free(keys);
        free(lens);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < nex; i++) {
        keys[i] = ex[i].key;
        lens[i] = ex[i].klen;
    }
    memcached_return_t rc = memcached_mget(c->m, keys, lens, nex);
    free(keys);
    free(lens);
    if (rc != MEMCACHED_SUCCESS) {
        snprintf(err, errlen, "checking the batch: %s", memcached_strerror(c->m, rc));
        return -1;
    }
    memcached_result_st *res;
    while ((res = memcached_fetch_result(c->m, NULL, &rc)) != NULL) {
        struct expect probe = {.key = (char *)memcached_result_key_value(res),
                               .klen = memcached_result_key_length(res)};
        struct expect *e = bsearch(&probe, ex, nex, sizeof *ex, cmp_expect_key);
        if (e && (e->vlen == 0 || e->vlen == memcached_result_length(res)))
            e->found = true;
        memcached_result_free(res);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        snprintf(err, errlen, "checking the batch: %s", memcached_strerror(c->m, rc));
        return -1;
    }
    for (size_t i = 0; i < nex; i++)
        if (!ex[i].found) {
            snprintf(err, errlen, "set %.*s: memcached did not store it", (int)ex[i].klen,
                     ex[i].key);
            return -1;
        }
    return 0;
}

/* Keeps, for each key, only the batch's last word on it (a later ADD or
   DONE of the same handle overrides an earlier one), and drops the keys
   that end removed; returns how many remain. */
static size_t
final_state(struct expect *ex, size_t nex)
{
    qsort(ex, nex, sizeof *ex, cmp_expect);
    size_t kept = 0;
    for (size_t i = 0; i < nex; i++) {
        bool last = i + 1 == nex || cmp_key_only(&ex[i], &ex[i + 1]) != 0;
        if (last && !ex[i].removed)
            ex[kept++] = ex[i];
        else
            free(ex[i].key);
    }
    return kept;
}

/* Reads back the keys the batch stored and checks each is there with the
   length written; returns 0 if all were, -1 with the first missing one
   named in err.  Frees the keys of ex either way. */
static int
check_batch(struct mc *c, struct expect *ex, size_t nex, char *err, size_t errlen)
{
    nex = final_state(ex, nex);
    int r = check_stored(c, ex, nex, err, errlen);
    for (size_t i = 0; i < nex; i++)
        free(ex[i].key);
    return r;
}

/* Returns 0 if every job of the batch fits an item's length fields, or -1
   with the first that does not named in err (checked before anything is
   sent, so a refused batch has written nothing). */
static int
check_lengths(const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const struct gm_qrecord *r = &recs[i];
        if (r->op != GM_QOP_ADD)
            continue;
        if (r->function_len > FUNCTION_MAX) {
            snprintf(err, errlen, "job %.*s: a function name of %u bytes does not fit the "
                     "memcached queue (at most %u)", (int)r->handle_len, r->handle,
                     r->function_len, FUNCTION_MAX);
            return -1;
        }
        if (r->unique_len > UNIQUE_MAX) {
            snprintf(err, errlen, "job %.*s: a unique key of %u bytes does not fit the "
                     "memcached queue (at most %u)", (int)r->handle_len, r->handle,
                     r->unique_len, UNIQUE_MAX);
            return -1;
        }
    }
    return 0;
}

static int
mc_write_batch(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    struct mc *c = state;
    if (check_lengths(recs, n, err, errlen) < 0)
        return -1;
    struct expect *ex = malloc((n ? n : 1) * sizeof *ex);
    if (!ex) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t nex = 0;
    if (ensure_connected(c, err, errlen) < 0) {
        free(ex);
        return -1;
    }
    int r = send_batch(c, recs, n, ex, &nex, err, errlen);
    if (r == 0) {
        r = check_batch(c, ex, nex, err, errlen);
    } else {
        for (size_t i = 0; i < nex; i++)
            free(ex[i].key);
    }
    free(ex);
    if (r != 0) {
        c->suspect = true;
        undo_adds(c, recs, n); /* all or nothing */
    }
    return r;
}

/* Keys found by the dump, then read one by one. */
struct keylist {
    char **key;
    size_t n, cap;
    const char *prefix;
    size_t prefix_len;
};

static memcached_return_t
collect_key(const memcached_st *m, const char *key, size_t len, void *ctx)
{
    (void)m;
    struct keylist *kl = ctx;
    if (len < kl->prefix_len || memcmp(key, kl->prefix, kl->prefix_len) != 0)
        return MEMCACHED_SUCCESS;
    if (kl->n == kl->cap) {
        size_t cap = kl->cap ? kl->cap * 2 : 256;
        char **k = realloc(kl->key, cap * sizeof *k);
        if (!k)
            return MEMCACHED_SUCCESS;
        kl->key = k;
        kl->cap = cap;
    }
    char *copy = strndup(key, len);
    if (copy)
        kl->key[kl->n++] = copy;
    return MEMCACHED_SUCCESS;
}

/* Shorter first, then by text: handles "<prefix>:<n>" come out in n order. */
static int
cmp_key(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    if (lx != ly)
        return lx < ly ? -1 : 1;
    return strcmp(x, y);
}

static int
hexval(int ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

#define METADUMP_BUSY (-2)
#define METADUMP_NO_MODE (-3) /* the server has no such walk (older memcached) */
#define METADUMP_TRIES 250   /* 5 ms apart: a crawl of its own waits up to about 1.25 s */

/* Lists every key of one server with "lru_crawler metadump <mode>" (mode
   "hash" or "all"); returns 0, METADUMP_BUSY if the crawler is running for
   somebody else (the LRU maintainer, another client), METADUMP_NO_MODE if
   the server does not know that mode, or -1 if it has no metadump at all
   (or cannot be reached). */
static int
metadump(const char *host, const char *port, const char *mode, struct keylist *kl)
{
    struct addrinfo hints = {0}, *res;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    char cmd[64];
    int cl = snprintf(cmd, sizeof cmd, "lru_crawler metadump %s\r\n", mode);
    if (send(fd, cmd, (size_t)cl, MSG_NOSIGNAL) < 0) {
        close(fd);
        return -1;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    int rc = -1;
    while (buf) {
        char *nl;
        while ((nl = memchr(buf, '\n', len))) {
            size_t ll = (size_t)(nl - buf);
            if (ll && buf[ll - 1] == '\r')
                ll--;
            if (ll == 3 && memcmp(buf, "END", 3) == 0) {
                rc = 0;
                goto done;
            }
            if (ll >= 4 && memcmp(buf, "BUSY", 4) == 0) {
                rc = METADUMP_BUSY;
                goto done;
            }
            if (ll >= 8 && memcmp(buf, "BADCLASS", 8) == 0) {
                rc = METADUMP_NO_MODE;
                goto done;
            }
            if ((ll >= 5 && memcmp(buf, "ERROR", 5) == 0) || (ll >= 6 && memcmp(buf, "CLIENT", 6) == 0) ||
                (ll >= 6 && memcmp(buf, "SERVER", 6) == 0))
                goto done;
            if (ll > 4 && memcmp(buf, "key=", 4) == 0) {
                char key[1024];
                size_t k = 0;
                for (size_t i = 4; i < ll && buf[i] != ' ' && k + 1 < sizeof key; i++) {
                    int h1, h2;
                    if (buf[i] == '%' && i + 2 < ll && (h1 = hexval(buf[i + 1])) >= 0 && (h2 = hexval(buf[i + 2])) >= 0) {
                        key[k++] = (char)(h1 * 16 + h2);
                        i += 2;
                    } else {
                        key[k++] = buf[i];
                    }
                }
                collect_key(NULL, key, k, kl);
            }
            memmove(buf, nl + 1, len - (size_t)(nl + 1 - buf));
            len -= (size_t)(nl + 1 - buf);
        }
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
done:
    free(buf);
    close(fd);
    return rc;
}

/* metadump(), tried again while the crawler is busy with somebody else's
   crawl: falling back to cachedump then would miss every item in the WARM
   and COLD LRUs, so a replay could find nothing at all. */
static int
metadump_retrying(const char *host, const char *port, const char *mode, struct keylist *kl)
{
    int rc = METADUMP_BUSY;
    for (int i = 0; i < METADUMP_TRIES && rc == METADUMP_BUSY; i++) {
        if (i) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        rc = metadump(host, port, mode, kl);
    }
    if (rc == METADUMP_BUSY)
        gm_log(GM_LOG_WARNING, "libmemcached: the LRU crawler of %s:%s stayed busy", host, port);
    return rc;
}

/* Lists the keys of every server; falls back to cachedump. */
static void
list_keys(struct mc *c, struct keylist *kl)
{
    /* --libmemcached-servers: "host[:port][,host[:port]...]" */
    bool ok = true;
    const char *p = c->servers;
    while (ok && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char host[256], port[16] = "11211";
        const char *colon = memchr(p, ':', len);
        size_t hl = colon ? (size_t)(colon - p) : len;
        if (hl == 0 || hl >= sizeof host) {
            ok = false;
            break;
        }
        memcpy(host, p, hl);
        host[hl] = '\0';
        if (colon)
            snprintf(port, sizeof port, "%.*s", (int)(len - hl - 1), colon + 1);
        /* The hash walk sees every item.  A walk of the LRUs is no
           snapshot: an item memcached moves between LRU segments meanwhile
           (reads make it do so, asynchronously) can be missed by one pass.
           Two passes then; mc_replay drops the keys seen twice. */
        int rc = metadump_retrying(host, port, "hash", kl);
        if (rc == METADUMP_NO_MODE && (rc = metadump_retrying(host, port, "all", kl)) == 0)
            rc = metadump_retrying(host, port, "all", kl);
        ok = rc == 0;
        p = end ? end + 1 : p + len;
    }
    if (ok)
        return;
    for (size_t i = 0; i < kl->n; i++)
        free(kl->key[i]);
    kl->n = 0;
    gm_log(GM_LOG_WARNING, "libmemcached: lru_crawler metadump unavailable; listing keys with cachedump (may miss recent items)");
    memcached_dump_fn fns[1] = {collect_key};
    memcached_return_t drc = memcached_dump(c->m, fns, kl, 1);
    if (drc != MEMCACHED_SUCCESS && drc != MEMCACHED_END && kl->n == 0)
        gm_log(GM_LOG_WARNING, "libmemcached: listing keys failed (%s); nothing replayed",
               memcached_strerror(c->m, drc));
}

/* Replays one stored item (value v of vlen bytes): ours are handed to cb,
   gearmand 1.1.20's are rewritten in our form first. */
static void
replay_item(struct mc *c, const char *key, char *v, size_t vlen, uint32_t flags, gm_qrow_cb cb,
            void *arg, uint64_t *migrated_count, char *err, size_t errlen)
{
    struct gm_qrow row;
    memset(&row, 0, sizeof row);
    const char *k = key + c->prefix_len;
    if (strcmp(k, "__next_handle") == 0)
        return;
    bool with_life = vlen >= HEAD_LEN && memcmp(v, MAGIC_LIFE, 4) == 0;
    if (vlen >= HEAD_LEN && (memcmp(v, MAGIC, 4) == 0 || with_life)) {
        uint32_t fn_len = (uint32_t)((unsigned char)v[13] << 8 | (unsigned char)v[14]);
        if (HEAD_LEN + fn_len + 1 > vlen ||
            HEAD_LEN + fn_len + 1 + (unsigned char)v[HEAD_LEN + fn_len] > vlen) {
            gm_log(GM_LOG_ERROR, "libmemcached: item %s is damaged; kept, not replayed", key);
            return;
        }
        uint64_t w = 0;
        for (int b = 0; b < 8; b++)
            w = w << 8 | (unsigned char)v[5 + b];
        row.handle = k;
        row.handle_len = (uint32_t)strlen(k);
        row.priority = (unsigned char)v[4];
        row.when = (int64_t)w;
        row.function = v + HEAD_LEN;
        row.function_len = fn_len;
        row.unique_len = (unsigned char)v[HEAD_LEN + fn_len];
        row.unique = v + HEAD_LEN + fn_len + 1;
        row.data = row.unique + row.unique_len;
        if (with_life) {
            size_t at = (size_t)(row.data - v);
            if (at + 2 > vlen || at + 2 + ((size_t)(unsigned char)v[at] << 8 | (unsigned char)v[at + 1]) > vlen) {
                gm_log(GM_LOG_ERROR, "libmemcached: item %s is damaged; kept, not replayed", key);
                return;
            }
            row.lifecycle_len = (uint32_t)((unsigned char)v[at] << 8 | (unsigned char)v[at + 1]);
            row.lifecycle = v + at + 2;
            row.data = row.lifecycle + row.lifecycle_len;
        }
        row.data_len = (uint32_t)(vlen - (size_t)(row.data - v));
        cb(arg, &row);
    } else {
        /* gearmand 1.1.20: key "<prefix><function>-<unique>", value = data */
        const char *dash = strchr(k, '-');
        if (!dash) {
            gm_log(GM_LOG_ERROR, "libmemcached: item %s is not a job; kept", key);
            return;
        }
        char handle[GM_HANDLE_MAX];
        snprintf(handle, sizeof handle, "%s:mc%llu", c->handle_prefix,
                 (unsigned long long)++*migrated_count);
        struct gm_qrecord add = {GM_QOP_ADD, (uint8_t)(flags <= 2 ? flags : 1), 0, handle, k,
                                 dash + 1, v, (uint32_t)strlen(handle), (uint32_t)(dash - k),
                                 (uint32_t)strlen(dash + 1), (uint32_t)vlen, NULL, 0};
        if (mc_write_batch(c, &add, 1, err, errlen) == 0) {
            memcached_delete(c->m, key, strlen(key), 0);
            memcached_flush_buffers(c->m);
            row.handle = handle;
            row.handle_len = add.handle_len;
            row.priority = add.priority;
            row.function = k;
            row.function_len = add.function_len;
            row.unique = dash + 1;
            row.unique_len = add.unique_len;
            row.data = v;
            row.data_len = (uint32_t)vlen;
            cb(arg, &row);
        }
    }
}

#define REPLAY_CHUNK 256 /* keys per multi-get */

/* One key of a replay chunk and what the multi-get found for it. */
struct fetched {
    const char *key;
    char *val; /* NULL: gone (evicted or completed meanwhile) */
    size_t len;
    uint32_t flags;
};

static int
cmp_fetched_ptr(const void *a, const void *b)
{
    return strcmp((*(struct fetched *const *)a)->key, (*(struct fetched *const *)b)->key);
}

/* Reads the values of out[0..n)'s keys with one multi-get. */
static void
fetch_chunk(struct mc *c, struct fetched *out, size_t n)
{
    const char *keys[REPLAY_CHUNK];
    size_t lens[REPLAY_CHUNK];
    struct fetched *byname[REPLAY_CHUNK];
    for (size_t i = 0; i < n; i++) {
        keys[i] = out[i].key;
        lens[i] = strlen(out[i].key);
        byname[i] = &out[i];
    }
    qsort(byname, n, sizeof *byname, cmp_fetched_ptr);
    memcached_return_t rc = memcached_mget(c->m, keys, lens, n);
    if (rc != MEMCACHED_SUCCESS) {
        gm_log(GM_LOG_ERROR, "libmemcached: reading stored jobs: %s", memcached_strerror(c->m, rc));
        c->suspect = true;
        return;
    }
    memcached_result_st *res;
    while ((res = memcached_fetch_result(c->m, NULL, &rc)) != NULL) {
        char name[MEMCACHED_MAX_KEY + 1];
        size_t kl = memcached_result_key_length(res);
        if (kl > MEMCACHED_MAX_KEY)
            kl = MEMCACHED_MAX_KEY;
        memcpy(name, memcached_result_key_value(res), kl);
        name[kl] = '\0';
        struct fetched probe = {.key = name}, *pp = &probe;
        struct fetched **hit = bsearch(&pp, byname, n, sizeof *byname, cmp_fetched_ptr);
        size_t len = memcached_result_length(res);
        if (hit && !(*hit)->val && ((*hit)->val = malloc(len ? len : 1)) != NULL) {
            memcpy((*hit)->val, memcached_result_value(res), len);
            (*hit)->len = len;
            (*hit)->flags = memcached_result_flags(res);
        }
        memcached_result_free(res);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        gm_log(GM_LOG_ERROR, "libmemcached: reading stored jobs: %s", memcached_strerror(c->m, rc));
        c->suspect = true;
    }
}

static int
mc_replay(void *state, gm_qrow_cb cb, void *arg, char *err, size_t errlen)
{
    struct mc *c = state;
    struct keylist kl = {NULL, 0, 0, c->prefix, c->prefix_len};
    list_keys(c, &kl);
    /* memcached keeps no order: sort so older handles come first, and keep
       each key once (the listing may name it twice). */
    if (kl.n)
        qsort(kl.key, kl.n, sizeof *kl.key, cmp_key);
    size_t unique_n = 0;
    for (size_t i = 0; i < kl.n; i++) {
        if (unique_n && strcmp(kl.key[unique_n - 1], kl.key[i]) == 0)
            free(kl.key[i]);
        else
            kl.key[unique_n++] = kl.key[i];
    }
    kl.n = unique_n;
    uint64_t migrated = 0;
    struct fetched chunk[REPLAY_CHUNK];
    for (size_t base = 0; base < kl.n; base += REPLAY_CHUNK) {
        size_t n = kl.n - base < REPLAY_CHUNK ? kl.n - base : REPLAY_CHUNK;
        for (size_t i = 0; i < n; i++)
            chunk[i] = (struct fetched){.key = kl.key[base + i]};
        fetch_chunk(c, chunk, n);
        for (size_t i = 0; i < n; i++) {
            if (chunk[i].val)
                replay_item(c, chunk[i].key, chunk[i].val, chunk[i].len, chunk[i].flags, cb, arg,
                            &migrated, err, errlen);
            free(chunk[i].val);
        }
    }
    for (size_t i = 0; i < kl.n; i++)
        free(kl.key[i]);
    free(kl.key);
    /* Replay made unbuffered calls whose failures close the socket without
       telling us every time (a read timeout in a multi-get, a migrated
       item's delete): the first batch checks the connection. */
    c->suspect = true;
    return 0;
}

static int
mc_load_counter(void *state, uint64_t *next, char *err, size_t errlen)
{
    struct mc *c = state;
    size_t klen, vlen = 0;
    uint32_t flags;
    memcached_return_t rc;
    *next = 0;
    char *key = key_for(c, "__next_handle", 13, &klen);
    if (!key) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *v = memcached_get(c->m, key, klen, &vlen, &flags, &rc);
    free(key);
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        /* starting from 0 could hand out the handles of stored jobs again */
        snprintf(err, errlen, "memcached: %s", memcached_strerror(c->m, rc));
        c->suspect = true;
        free(v);
        return -1;
    }
    if (v) {
        char num[24];
        snprintf(num, sizeof num, "%.*s", (int)(vlen < 23 ? vlen : 23), v);
        *next = strtoull(num, NULL, 10);
        free(v);
    }
    return 0;
}

static bool
mc_alive(void *state)
{
    char err[128];
    struct mc *c = state;
    c->suspect = true;
    return ensure_connected(c, err, sizeof err) == 0;
}

static int
mc_reconnect(void *state, char *err, size_t errlen)
{
    struct mc *c = state;
    c->suspect = true;
    return ensure_connected(c, err, errlen);
}

static void
mc_close(void *state)
{
    struct mc *c = state;
    if (!c)
        return;
    if (c->m)
        memcached_free(c->m);
    free(c->prefix);
    free(c->servers);
    free(c->handle_prefix);
    free(c->value);
    free(c);
}

static const char *const mc_aliases[] = {"memcached", NULL};

const struct gm_queue_backend gm_queue_memcached = {
    .name = "libmemcached",
    .aliases = mc_aliases,
    .stores_epoch = true,
    .open = mc_open,
    .replay = mc_replay,
    .write_batch = mc_write_batch,
    .load_counter = mc_load_counter,
    .alive = mc_alive,
    .reconnect = mc_reconnect,
    .close = mc_close,
};
