/*
 * fuzz_http.c: libFuzzer target for the HTTP front-end's request side: the
 * input is one connection's byte stream, delivered in chunks as reads
 * would, and cut into requests by parse() the way frontend_conn.c does
 * (the bytes accumulate; parse() runs after each chunk until it wants
 * more).  Each request is then answered as the server would: serve() over
 * a small fixed state view, or, for a job submission, the reply packets of
 * an echoing worker through on_packet().  Every result is checked against
 * what the contract in frontend.h and fe_request.h promises (bounds of the
 * parsed fields, the same answer for the request's bytes alone, `need`
 * consistent with the request's size, a well-formed response whose
 * Content-Length is its body's) and a violation aborts.  Single-threaded;
 * everything is freed per input, so leaks show.
 *
 * Input: byte 0 chooses max_body, whether the peer is on loopback, remote
 * actions and how a job ends; byte 1 the number of chunk boundaries, then
 * two bytes each (an offset into the stream); the rest is the stream.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"
#include "plugins/protocol/http/http.h"
#include "plugins/protocol/http/http_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "fuzz_http: %s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

/* ------------------------------------------------------------------ */
/* A small, fixed state view for serve()                               */
/* ------------------------------------------------------------------ */

static void
view_server(void *d, struct gm_view_server *s)
{
    (void)d;
    memset(s, 0, sizeof *s);
    s->version = "fuzz";
    s->pid = 1;
    s->uptime_ms = 1234;
    s->io_threads = 1;
    s->connections = 3;
    s->queue_backend = "builtin";
    s->queue_healthy = true;
    s->jobs = 2;
    s->queued = 1;
    s->running = 1;
    s->functions = 2;
    s->workers = 1;
}

static void
view_functions(void *d, void (*cb)(void *arg, const struct gm_view_function *f), void *arg)
{
    (void)d;
    struct gm_view_function f;
    memset(&f, 0, sizeof f);
    f.name = "f";
    f.name_len = 1;
    f.queued[1] = 1;
    f.running = 1;
    f.workers = 1;
    f.oldest_queued_ms = 5;
    cb(arg, &f);
    /* a name with what JSON and Prometheus must escape, and bytes that are not UTF-8 */
    static const char odd[] = "q\"\\\n\x01\xff\xc3";
    f.name = odd;
    f.name_len = sizeof odd - 1;
    f.oldest_queued_ms = -1;
    /* a policy (paused), shown in /api/policies, /api/status and /metrics */
    static const struct gm_view_policy pol = {.listed = true, .paused = true, .retries = 3, .backoff_ms = 1000,
                                              .max_backoff_ms = 300000, .timeout_s = 30, .retried = 4,
                                              .timeouts = 1, .dead = 2, .died = 2};
    f.policy = &pol;
    cb(arg, &f);
}

static void
view_workers(void *d, void (*cb)(void *arg, const struct gm_view_worker *w), void *arg)
{
    (void)d;
    static const char *const fns[] = {"f", "q\"\\\n"};
    struct gm_view_worker w = {.fd = 9, .addr = "127.0.0.1", .port = 4730, .client_id = "-",
                               .identity = "ip:127.0.0.1",
                               .functions = fns, .nfunctions = 2, .current_job = "H:fuzz:1",
                               .running = 1};
    cb(arg, &w);
}

/* The three jobs above as the dispatcher's view pages them: a cursor
   (after=) that names one of them starts after it; partial (with its
   next_after) when the state filter passed over one. */
static void
view_jobs(void *d, const struct gm_view_jobs_query *q, struct gm_view_jobs_result *res,
          void (*cb)(void *arg, const struct gm_view_job *j), void *arg)
{
    (void)d;
    memset(res, 0, sizeof *res);
    static const struct gm_view_job jobs[] = {
        {.handle = "H:fuzz:1", .function = "f", .unique = "u\0x", .unique_len = 3, .priority = 1,
         .state = "running", .age_ms = 10, .clients = 1},
        {.handle = "H:fuzz:2", .function = "f", .unique = "", .priority = 0, .state = "queued",
         .background = true},
        {.handle = "H:fuzz:3", .function = "q\"\\\n", .unique = "\xff", .unique_len = 1, .priority = 2,
         .state = "scheduled", .run_at = 1900000000},
    };
    size_t i = 0, count = sizeof jobs / sizeof jobs[0];
    if (q->after) {
        while (i < count && (strlen(jobs[i].handle) != q->after_len || memcmp(jobs[i].handle, q->after, q->after_len)))
            i++;
        if (i == count) {
            res->after_unknown = true;
            return;
        }
        i++;
    }
    uint64_t n = 0;
    for (; i < count; i++) {
        const struct gm_view_job *j = &jobs[i];
        if (q->function &&
            (strlen(j->function) != q->function_len || memcmp(j->function, q->function, q->function_len)))
            continue;
        if (q->state && *q->state && strcmp(q->state, j->state)) {
            res->partial = true;
            snprintf(res->next, sizeof res->next, "%s", j->handle);
            continue;
        }
        if (n >= q->offset && n - q->offset < q->limit)
            cb(arg, j);
        n++;
    }
    res->total = n;
}

static int
view_cancel(void *d, const char *handle, size_t len)
{
    (void)d;
    return len == 8 && memcmp(handle, "H:fuzz:1", 8) == 0 ? 0 : -1;
}

/* Two dead letters, the second one's exception bytes what JSON must
   escape; paged as the dispatcher's view pages them. */
static void
view_dead(void *d, const struct gm_view_dead_query *q, uint64_t *total,
          void (*cb)(void *arg, const struct gm_view_dead *x), void *arg)
{
    (void)d;
    static const char exc[] = "e\"\\\n\x01\xff";
    static const struct gm_view_dead dead[] = {
        {.handle = "H:fuzz:4", .function = "f", .unique = "u", .unique_len = 1, .attempts = 1,
         .died_at = 1900000000, .reason = "fail"},
        {.handle = "H:fuzz:5", .function = "q\"\\\n", .unique = "\xff\0", .unique_len = 2, .attempts = 255,
         .died_at = 1, .reason = "exception", .exception = exc, .exception_len = sizeof exc - 1},
    };
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof dead / sizeof dead[0]; i++) {
        if (q->function &&
            (strlen(dead[i].function) != q->function_len || memcmp(dead[i].function, q->function, q->function_len)))
            continue;
        if (n >= q->offset && n - q->offset < q->limit)
            cb(arg, &dead[i]);
        n++;
    }
    *total = n;
}

/* Knows H:fuzz:1 (running) and H:fuzz:4 (a kept outcome). */
static int
view_job(void *d, const char *handle, size_t len, struct gm_view_job_state *out)
{
    (void)d;
    memset(out, 0, sizeof *out);
    out->function = "f";
    out->function_len = 1;
    out->unique = "u\0x";
    out->unique_len = 3;
    out->handle_len = 8;
    if (len == 8 && memcmp(handle, "H:fuzz:1", 8) == 0) {
        out->handle = "H:fuzz:1";
        out->state = "running";
        out->attempts = 1;
        return 0;
    }
    if (len == 8 && memcmp(handle, "H:fuzz:4", 8) == 0) {
        out->handle = "H:fuzz:4";
        out->state = "complete";
        out->result = "kept\0";
        out->result_len = 5;
        return 0;
    }
    return GM_VIEW_UNKNOWN;
}

static int
view_dead_action(void *d, const char *handle, size_t len, bool retry)
{
    (void)d;
    (void)retry;
    return len == 8 && memcmp(handle, "H:fuzz:4", 8) == 0 ? 0 : GM_VIEW_UNKNOWN;
}

/* "f" is known; a name with a control byte is refused; others unknown. */
static int
view_function_action(void *d, const char *name, size_t len, enum gm_view_function_action what, uint64_t *purged)
{
    (void)d;
    *purged = what == GM_VIEW_PURGE ? 7 : 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20)
            return GM_VIEW_BAD_NAME;
    return len == 1 && name[0] == 'f' ? 0 : GM_VIEW_UNKNOWN;
}

/* The peer of the input (its first byte): on loopback (4), remote actions
   allowed (8); actions are permitted as the server permits them without
   an ACL file. */
static unsigned access_cfg;

static bool
view_permitted(void *d, enum gm_view_need need, struct gm_view_refusal *why)
{
    (void)d;
    why->by_acl = false;
    why->identity = "ip:192.0.2.1";
    why->permission = need == GM_VIEW_ACT ? "admin" : "admin-read";
    return need == GM_VIEW_READ || (access_cfg & 12) != 0;
}

static const struct gm_state_view view = {
    .permitted = view_permitted,
    .server = view_server,
    .each_function = view_functions,
    .each_worker = view_workers,
    .jobs = view_jobs,
    .cancel = view_cancel,
    .dead = view_dead,
    .job = view_job,
    .dead_action = view_dead_action,
    .function_action = view_function_action,
};

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

/* A response as the front-end builds it: a status line, headers, a blank
   line, and a body as long as Content-Length says (none for HEAD); it is
   freed here.  Returns the status. */
static int
check_response(struct gm_fe_output *o, bool head_only)
{
    CHECK(o->blk != NULL);
    CHECK(o->len > 0 && o->len <= o->blk->cap);
    const char *r = o->blk->data;
    CHECK(o->len > 13 && memcmp(r, "HTTP/1.", 7) == 0 && (r[7] == '0' || r[7] == '1') && r[8] == ' ');
    int status = atoi(r + 9);
    CHECK(status >= 200 && status <= 599);
    const char *end = memmem(r, o->len, "\r\n\r\n", 4);
    CHECK(end != NULL);
    size_t head = (size_t)(end + 4 - r);
    const char *cl = memmem(r, head, "\r\nContent-Length: ", 18);
    CHECK(cl != NULL);
    unsigned long long clen = strtoull(cl + 18, NULL, 10);
    CHECK(head_only ? o->len == head : o->len - head == clen);
    free(o->blk);
    o->blk = NULL;
    return status;
}

/* The fields of a request parse() returned (used bytes): inside them. */
static void
check_request(const char *buf, long used, const struct gm_fe_req *req, uint32_t max_body)
{
    CHECK(req->kind == GM_FE_SUBMIT || req->kind == GM_FE_SERVE);
    CHECK(req->minor <= 1);
    CHECK((uint64_t)req->path_off + req->path_len <= (uint64_t)used);
    CHECK((uint64_t)req->query_off + req->query_len <= (uint64_t)used);
    if (req->flags & GM_FE_HAS_UNIQUE)
        CHECK((uint64_t)req->unique_off + req->unique_len <= (uint64_t)used);
    if (req->auth_off) /* a bearer token: inside the head */
        CHECK((uint64_t)req->auth_off + req->auth_len < (uint64_t)req->body_off);
    else
        CHECK(req->auth_len == 0);
    CHECK((uint64_t)req->body_off + req->body_len == (uint64_t)used);
    CHECK(req->body_len <= max_body);
    /* the head ends with its blank line */
    CHECK(req->body_off >= 3);
    CHECK(memcmp(buf + req->body_off - 2, "\n\n", 2) == 0 ||
          memcmp(buf + req->body_off - 3, "\n\r\n", 3) == 0);
    CHECK(!(req->kind == GM_FE_SUBMIT && (req->flags & GM_FE_HEAD)));
}

/* parse() is a function of the request's bytes: given exactly them it
   gives the same request; given one byte fewer it asks for more, and once
   the head is in it knows how many. */
static void
check_prefixes(const char *buf, long used, const struct gm_fe_req *req, uint32_t max_body)
{
    void *st = gm_http_frontend.conn_new(0);
    CHECK(st != NULL);
    struct gm_fe_req again;
    uint64_t need = 0;
    struct gm_fe_output err = {0};
    long u2 = gm_http_frontend.parse(st, buf, (size_t)used, max_body, &again, &need, &err);
    CHECK(u2 == used && err.blk == NULL);
    CHECK(again.kind == req->kind && again.flags == req->flags && again.minor == req->minor &&
          again.path_off == req->path_off && again.path_len == req->path_len &&
          again.query_off == req->query_off && again.query_len == req->query_len &&
          again.auth_off == req->auth_off && again.auth_len == req->auth_len &&
          again.body_off == req->body_off && again.body_len == req->body_len);
    need = 0;
    u2 = gm_http_frontend.parse(st, buf, (size_t)used - 1, max_body, &again, &need, &err);
    CHECK(u2 == 0 && err.blk == NULL);
    if (req->body_len)
        CHECK(need == (uint64_t)used);
    gm_http_frontend.conn_free(st);
}

/* ------------------------------------------------------------------ */
/* Answering a request                                                 */
/* ------------------------------------------------------------------ */

/* Packs one reply packet's payload: handle, NUL, data. */
static uint32_t
reply_payload(char *out, size_t cap, const char *data, size_t len)
{
    static const char handle[] = "H:fuzz:7";
    size_t n = sizeof handle;
    if (n + len > cap)
        len = cap - n;
    memcpy(out, handle, n);
    memcpy(out + n, data, len);
    return (uint32_t)(n + len);
}

/* A job submission answered by an echoing worker: JOB_CREATED, then (for
   a foreground job) WORK_DATA with the body's first half and the end
   `how` picks with the second half.  Returns whether the connection
   stays open. */
static bool
answer_submit(void *st, const char *buf, const struct gm_fe_req *req, unsigned how)
{
    static char pl[GM_HANDLE_MAX + 4096];
    struct gm_fe_output out = {0};
    const char *body = buf + req->body_off;
    uint32_t half = req->body_len / 2;
    int done = gm_http_frontend.on_packet(st, GM_PKT_JOB_CREATED, "H:fuzz:7", 8, &out);
    if (!done) {
        CHECK(out.blk == NULL);
        CHECK(!(req->flags & GM_FE_BACKGROUND));
        static const uint32_t ends[] = {GM_PKT_WORK_COMPLETE, GM_PKT_WORK_FAIL, GM_PKT_WORK_EXCEPTION,
                                        GM_PKT_ERROR};
        uint32_t end = ends[how % 4];
        uint32_t n = reply_payload(pl, sizeof pl, body, half);
        CHECK(gm_http_frontend.on_packet(st, GM_PKT_WORK_DATA, pl, n, &out) == 0 && out.blk == NULL);
        CHECK(gm_http_frontend.on_packet(st, GM_PKT_WORK_STATUS, pl, n, &out) == 0 && out.blk == NULL);
        const char *rest = body + half;
        uint32_t rest_len = req->body_len - half;
        if (end == GM_PKT_ERROR) {
            /* code NUL text */
            const char *code = how & 8 ? (how & 4 ? "PERMISSION_DENIED" : "UNAUTHORIZED")
                                       : how & 4 ? "QUEUE_ERROR" : "ERR";
            size_t clen = strlen(code) + 1;
            memcpy(pl, code, clen);
            size_t tlen = rest_len < 200 ? rest_len : 200;
            memcpy(pl + clen, rest, tlen);
            n = (uint32_t)(clen + tlen);
        } else {
            n = reply_payload(pl, sizeof pl, rest, rest_len);
        }
        done = gm_http_frontend.on_packet(st, end, pl, n, &out);
    }
    CHECK(done == 1);
    bool close = out.close;
    int status = check_response(&out, false);
    CHECK(status == 200 || status == 400 || status == 401 || status == 403 || status == 503 || status == 500);
    return !close;
}

static bool
answer(void *st, const char *buf, const struct gm_fe_req *req, unsigned cfg)
{
    if (req->kind == GM_FE_SUBMIT)
        return answer_submit(st, buf, req, cfg >> 4);
    access_cfg = cfg;
    struct gm_fe_output out = gm_http_frontend.serve(buf, req, (cfg & 16) ? 4096 : 0, &view);
    bool close = out.close;
    bool head = (req->flags & GM_FE_HEAD) != 0;
    int status = check_response(&out, head);
    if (req->flags & HTTP_F_REFUSED)
        CHECK(status == 403 && close);
    return !close;
}

/* ------------------------------------------------------------------ */
/* The stream                                                          */
/* ------------------------------------------------------------------ */

static int
cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t max_bodies[4] = {0, 16, 4096, 1u << 20};
    gm_log_level = -1; /* parse() logs refusals: keep the fuzzer's output readable */
    if (size < 2)
        return 0;
    unsigned cfg = data[0];
    uint32_t max_body = max_bodies[cfg & 3];
    size_t nsplit = data[1] % 16;
    data += 2;
    size -= 2;
    if (size < 2 * nsplit)
        return 0;
    size_t cut[17];
    for (size_t i = 0; i < nsplit; i++)
        cut[i] = (size_t)(data[2 * i] | data[2 * i + 1] << 8);
    data += 2 * nsplit;
    size -= 2 * nsplit;
    for (size_t i = 0; i < nsplit; i++)
        cut[i] = size ? cut[i] % (size + 1) : 0;
    cut[nsplit++] = size;
    qsort(cut, nsplit, sizeof cut[0], cmp_size);

    void *st = gm_http_frontend.conn_new(0);
    CHECK(st != NULL);
    /* The connection's unparsed bytes, as the I/O thread holds them; a
       copy of exactly what arrived, so that reading past it shows. */
    char *buf = NULL;
    size_t have = 0, pos = 0, fed = 0;
    bool open = true;
    for (size_t i = 0; i < nsplit && open; i++) {
        if (cut[i] == fed)
            continue;
        size_t add = cut[i] - fed;
        char *nb = malloc(have + add);
        CHECK(nb != NULL);
        if (have)
            memcpy(nb, buf + pos, have);
        memcpy(nb + have, data + fed, add);
        free(buf);
        buf = nb;
        pos = 0;
        have += add;
        fed = cut[i];
        while (have && open) {
            struct gm_fe_req req;
            uint64_t need = 0;
            struct gm_fe_output err = {0};
            long used = gm_http_frontend.parse(st, buf + pos, have, max_body, &req, &need, &err);
            CHECK(used >= -1 && used <= (long)have);
            if (used < 0) {
                CHECK(err.close);
                int status = check_response(&err, false);
                CHECK(status >= 400);
                open = false;
                break;
            }
            CHECK(err.blk == NULL);
            if (used == 0) {
                CHECK(need == 0 || (need > have && need <= (uint64_t)max_body + 65536));
                break;
            }
            check_request(buf + pos, used, &req, max_body);
            check_prefixes(buf + pos, used, &req, max_body);
            open = answer(st, buf + pos, &req, cfg);
            pos += (size_t)used;
            have -= (size_t)used;
        }
    }
    free(buf);
    gm_http_frontend.conn_free(st);
    return 0;
}
