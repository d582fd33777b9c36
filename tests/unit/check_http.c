/*
 * check_http.c: unit tests for the HTTP front-end (plugins/protocol/http/):
 * the sizes parse() accepts and the size of what it answers, where a
 * 32-bit block must never be asked to hold more than 4 GiB, and the UTF-8
 * that the JSON and Prometheus encoders write, and what they cost.
 *
 * The front-end is linked as built (libgm-http.a) and its parts reached
 * through its internal header, http_int.h.  Sizes near 4 GiB are tested
 * without allocating them: the checks must come first.  Single-threaded.
 */
#include "config.h"

#include <check.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/protocol/http/http.h"
#include "plugins/protocol/http/http_int.h"

#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* vsnprintf is wrapped (-Wl,--wrap=vsnprintf, include.am): the calls the
   front-end makes are counted. */
int __real_vsnprintf(char *s, size_t n, const char *fmt, va_list ap);
int __wrap_vsnprintf(char *s, size_t n, const char *fmt, va_list ap);
static unsigned long vsnprintf_calls;

int
__wrap_vsnprintf(char *s, size_t n, const char *fmt, va_list ap)
{
    vsnprintf_calls++;
    return __real_vsnprintf(s, n, fmt, ap);
}

/* The old upper bound of --max-packet-size: what parse() may be given. */
#define OLD_MAX_BODY (UINT32_MAX - 12)

static long
parse_text(const char *text, uint32_t max_body, struct gm_fe_req *req, uint64_t *need,
           struct gm_fe_output *err)
{
    void *st = gm_http_frontend.conn_new(0);
    ck_assert_ptr_nonnull(st);
    memset(err, 0, sizeof *err);
    *need = 0;
    long used = gm_http_frontend.parse(st, text, strlen(text), max_body, req, need, err);
    gm_http_frontend.conn_free(st);
    return used;
}

/* The status code of a response (0 if there is none); frees it. */
static int
status_of(struct gm_fe_output *o)
{
    int status = 0;
    if (o->blk && o->len > 12 && memcmp(o->blk->data, "HTTP/1.", 7) == 0)
        status = atoi(o->blk->data + 9);
    free(o->blk);
    o->blk = NULL;
    return status;
}

/* A POST with this Content-Length value and no body yet. */
static const char *
post_with_length(const char *value)
{
    static char text[256];
    snprintf(text, sizeof text, "POST /f HTTP/1.1\r\nHost: localhost\r\nContent-Length: %s\r\n\r\n", value);
    return text;
}

/* http_json_str or http_label of s[0..n), NUL-terminated in out. */
static void
encode(bool json, const char *s, size_t n, char *out, size_t outlen)
{
    struct gm_bytes w = {0};
    if (json)
        http_json_str(&w, s, n);
    else
        http_label(&w, s, n);
    ck_assert(!w.failed);
    ck_assert_uint_lt(w.len, outlen);
    memcpy(out, w.b ? w.b->data : "", w.len);
    out[w.len] = '\0';
    free(w.b);
}

/* ------------------------------------------------------------------ */
/* Sizes                                                               */
/* ------------------------------------------------------------------ */

START_TEST(test_head_and_body_past_4_gib_are_413_before_anything_is_allocated)
{
    struct gm_fe_req req;
    struct gm_fe_output err;
    uint64_t need;
    /* head + body = UINT32_MAX exactly: asked for, in one size that fits */
    char digits[16];
    size_t head = strlen(post_with_length("4294967000"));
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)(UINT32_MAX - head));
    ck_assert_int_eq(parse_text(post_with_length(digits), OLD_MAX_BODY, &req, &need, &err), 0);
    ck_assert_uint_eq(need, UINT32_MAX);
    ck_assert_ptr_null(err.blk);
    /* one byte more, and the old bound's largest body: refused, nothing needed */
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)(UINT32_MAX - head + 1));
    ck_assert_int_eq(parse_text(post_with_length(digits), OLD_MAX_BODY, &req, &need, &err), -1);
    ck_assert_uint_eq(need, 0);
    ck_assert_int_eq(status_of(&err), 413);
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)OLD_MAX_BODY);
    ck_assert_int_eq(parse_text(post_with_length(digits), OLD_MAX_BODY, &req, &need, &err), -1);
    ck_assert_uint_eq(need, 0);
    ck_assert_int_eq(status_of(&err), 413);
    /* above --max-packet-size */
    ck_assert_int_eq(parse_text(post_with_length("1025"), 1024, &req, &need, &err), -1);
    ck_assert_int_eq(status_of(&err), 413);
}
END_TEST

START_TEST(test_content_length_is_plain_digits_that_fit_in_64_bits)
{
    struct gm_fe_req req;
    struct gm_fe_output err;
    uint64_t need;
    static const char *const bad[] = {"18446744073709551616", "99999999999999999999999", "+5", "-0", "0x10",
                                      "1e3", "5 5", "", " ", "\xd9\xa5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(parse_text(post_with_length(bad[i]), 1024, &req, &need, &err) == -1, "%s", bad[i]);
        ck_assert_msg(status_of(&err) == 400, "Content-Length: %s", bad[i]);
    }
    /* a number that fits but is too large is 413, not 400 */
    ck_assert_int_eq(parse_text(post_with_length("18446744073709551615"), 1024, &req, &need, &err), -1);
    ck_assert_int_eq(status_of(&err), 413);
    /* leading zeros are digits */
    const char *ok = "POST /f HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0003\r\n\r\nabc";
    ck_assert_int_eq(parse_text(ok, 1024, &req, &need, &err), (long)strlen(ok));
    ck_assert_uint_eq(req.body_len, 3);
    ck_assert_uint_eq(req.body_off, strlen(ok) - 3);
}
END_TEST

START_TEST(test_response_buffer_refuses_to_pass_4_gib)
{
    struct gm_bytes w = {0};
    w.len = UINT32_MAX - 4; /* as if that much were written */
    gm_bytes_add(&w, "0123456789", 10);
    ck_assert(w.failed);
    ck_assert_ptr_null(w.b);
}
END_TEST

/* A reply packet of job "H:x:1" whose data is n bytes of fill (in a
   static buffer). */
static const char *
job_packet(char fill, size_t n, uint32_t *len)
{
    static char p[6 + 4096] = "H:x:1";
    ck_assert_uint_le(n, 4096);
    memset(p + 6, fill, n);
    *len = (uint32_t)(6 + n);
    return p;
}

/* Whether the response o holds the text t. */
static bool
holds(const struct gm_fe_output *o, const char *t)
{
    return o->blk && memmem(o->blk->data, o->len, t, strlen(t)) != NULL;
}

START_TEST(test_a_result_that_would_pass_4_gib_is_answered_502_at_once_not_cut)
{
    struct http_conn *h = gm_http_frontend.conn_new(0); /* no limit of the server's: RESULT_MAX */
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(h->body.max, RESULT_MAX);
    h->minor = 1;
    h->keep_alive = true;
    snprintf(h->handle, sizeof h->handle, "H:x:1");
    h->body.len = RESULT_MAX - 100; /* as if the chunks so far held that much */
    uint32_t len;
    const char *chunk = job_packet('d', 200, &len);
    struct gm_fe_output out = {0};
    ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_DATA, chunk, len, &out), 1);
    ck_assert_ptr_null(h->body.b); /* nothing was allocated for it */
    ck_assert_uint_eq(h->body.len, 0);
    ck_assert(out.close);
    ck_assert_int_eq(status_of(&out), 502);
    /* the job's end is not answered again */
    ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_COMPLETE, "H:x:1\0end", 9, &out), 0);
    ck_assert_ptr_null(out.blk);
    gm_http_frontend.conn_free(h);
}
END_TEST

/* A worker that streams WORK_DATA and never completes: past the limit the
   connection was given (--max-output-size) the request is answered 502 at
   once and closes, the body is freed, and the job's later packets are
   ignored.  A result of exactly the limit is answered whole. */
START_TEST(test_a_result_past_its_limit_is_answered_502_at_once_and_the_rest_ignored)
{
    enum { LIMIT = 1000 };
    struct gm_fe_output out = {0};
    uint32_t len;
    for (int complete = 0; complete < 2; complete++) {
        /* exactly the limit: in chunks, or in WORK_COMPLETE alone */
        struct http_conn *h = gm_http_frontend.conn_new(LIMIT);
        ck_assert_ptr_nonnull(h);
        h->minor = 1;
        h->keep_alive = true;
        ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_JOB_CREATED, "H:x:1", 5, &out), 0);
        if (!complete) {
            const char *p = job_packet('a', 600, &len);
            ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_DATA, p, len, &out), 0);
            p = job_packet('b', 400, &len);
            ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_DATA, p, len, &out), 0);
            p = job_packet('c', 0, &len);
            ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_COMPLETE, p, len, &out), 1);
        } else {
            const char *p = job_packet('c', LIMIT, &len);
            ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_COMPLETE, p, len, &out), 1);
        }
        ck_assert(!out.close);
        ck_assert(holds(&out, "\r\nContent-Length: 1000\r\n"));
        ck_assert_int_eq(status_of(&out), 200);
        gm_http_frontend.conn_free(h);
    }
    for (int complete = 0; complete < 2; complete++) {
        /* one byte more: at the chunk, or at WORK_COMPLETE, that passes it */
        struct http_conn *h = gm_http_frontend.conn_new(LIMIT);
        ck_assert_ptr_nonnull(h);
        h->minor = 1;
        h->keep_alive = true;
        ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_JOB_CREATED, "H:x:1", 5, &out), 0);
        const char *p = job_packet('a', 1000, &len);
        ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_DATA, p, len, &out), 0);
        ck_assert_ptr_nonnull(h->body.b);
        p = job_packet('b', 1, &len);
        ck_assert_int_eq(gm_http_frontend.on_packet(h, complete ? GM_PKT_WORK_COMPLETE : GM_PKT_WORK_DATA, p, len,
                                                    &out), 1);
        ck_assert(out.close);
        ck_assert_ptr_null(h->body.b);
        ck_assert(holds(&out, "\r\nX-Gearman-Job-Handle: H:x:1\r\n"));
        ck_assert(holds(&out, complete ? "\r\nX-Gearman-Command: WORK_COMPLETE\r\n"
                                       : "\r\nX-Gearman-Command: WORK_DATA\r\n"));
        ck_assert(holds(&out, "Connection: close\r\n"));
        ck_assert(holds(&out, "the job's result passed 1000 bytes"));
        ck_assert_int_eq(status_of(&out), 502);
        /* the stream goes on: nothing is joined or answered any more */
        for (int i = 0; i < 3; i++) {
            p = job_packet('z', 4096, &len);
            ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_DATA, p, len, &out), 0);
        }
        ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_COMPLETE, "H:x:1\0end", 9, &out), 0);
        ck_assert_ptr_null(out.blk);
        ck_assert_ptr_null(h->body.b);
        gm_http_frontend.conn_free(h);
    }
}
END_TEST

/* A foreground job's WORK_DATA and WORK_COMPLETE data are its body, sent
   whole; the connection then holds no block (it used to keep the one the
   result was joined in, as large as the largest result, for as long as the
   connection stayed open). */
START_TEST(test_a_job_result_is_answered_whole_and_its_block_not_kept)
{
    struct http_conn *h = gm_http_frontend.conn_new(0);
    ck_assert_ptr_nonnull(h);
    h->minor = 1;
    h->keep_alive = true;
    enum { CHUNK = 256 << 10 };
    char *chunk = malloc(6 + CHUNK);
    ck_assert_ptr_nonnull(chunk);
    memcpy(chunk, "H:x:1", 6);
    struct gm_fe_output out = {0};
    ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_JOB_CREATED, "H:x:1", 5, &out), 0);
    for (int i = 0; i < 4; i++) {
        memset(chunk + 6, 'a' + i, CHUNK);
        ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_DATA, chunk, 6 + CHUNK, &out), 0);
    }
    ck_assert_int_eq(gm_http_frontend.on_packet(h, GM_PKT_WORK_COMPLETE, "H:x:1\0end", 9, &out), 1);
    ck_assert(!out.close);
    ck_assert_ptr_null(h->body.b);
    ck_assert_uint_eq(h->body.len, 0);
    const char *end = memmem(out.blk->data, out.len, "\r\n\r\n", 4);
    ck_assert_ptr_nonnull(end);
    const char *body = end + 4;
    ck_assert_uint_eq(out.len - (size_t)(body - out.blk->data), 4 * CHUNK + 3);
    static const char length[] = "Content-Length: 1048579\r\n";
    ck_assert(memmem(out.blk->data, (size_t)(body - out.blk->data), length, sizeof length - 1));
    for (int i = 0; i < 4; i++)
        ck_assert(body[i * CHUNK] == 'a' + i && body[(i + 1) * CHUNK - 1] == 'a' + i);
    ck_assert(memcmp(body + 4 * CHUNK, "end", 3) == 0);
    ck_assert_int_eq(status_of(&out), 200);
    free(chunk);
    gm_http_frontend.conn_free(h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Pages kept within their limit                                       */
/* ------------------------------------------------------------------ */

/* A state view of fake_functions functions, each named with 500 quotes
   (which escape to twice their size) and its number. */
static uint32_t fake_functions;

static void
fake_server(void *d, struct gm_view_server *out)
{
    (void)d;
    memset(out, 0, sizeof *out);
    out->version = "test";
    out->queue_backend = "builtin";
    out->queue_healthy = true;
    out->functions = fake_functions;
}

static void
fake_each_function(void *d, void (*cb)(void *arg, const struct gm_view_function *f), void *arg)
{
    (void)d;
    char name[512];
    memset(name, '"', 500);
    for (uint32_t i = 0; i < fake_functions; i++) {
        struct gm_view_function f;
        memset(&f, 0, sizeof f);
        f.name = name;
        f.name_len = 500 + (uint32_t)snprintf(name + 500, sizeof name - 500, "%06u", i);
        f.queued[0] = i;
        f.queued[1] = i + 1;
        f.queued[2] = i + 2;
        f.workers = 1;
        f.oldest_queued_ms = -1;
        cb(arg, &f);
    }
}

static const struct gm_state_view fake_view = {.server = fake_server, .each_function = fake_each_function};

/* How many times t occurs in w. */
static size_t
count(const struct gm_bytes *w, const char *t)
{
    size_t n = 0, tl = strlen(t);
    for (const char *p = w->b->data, *end = p + w->len; (p = memmem(p, (size_t)(end - p), t, tl)); p += tl)
        n++;
    return n;
}

/* The families of a function's samples in /metrics, each at a line's start. */
static const char *const fn_metrics[] = {"\ngearman_jobs{", "\ngearman_jobs_running{", "\ngearman_jobs_waiting{",
                                         "\ngearman_workers{", "\ngearman_jobs_submitted_total{",
                                         "\ngearman_jobs_completed_total{", "\ngearman_jobs_failed_total{"};

/* 5,000 functions of 506-byte names would make /metrics 50 MB (and
   /api/status 5 MB): given a page of 1 MiB, each lists the functions that
   fit, in order, the same ones in every family, and says the page was
   cut.  They used to build it all (here: fail at the builder's max). */
START_TEST(test_metrics_and_status_stay_within_the_page_and_say_they_were_cut)
{
    enum { PAGE = 1 << 20 };
    fake_functions = 5000;
    struct gm_bytes w = {.max = PAGE};
    http_metrics(&w, &fake_view);
    ck_assert(!w.failed);
    ck_assert_uint_le(w.len, PAGE);
    ck_assert_uint_gt(w.len, PAGE / 10 * 9); /* not cut far short of it either */
    size_t k = count(&w, fn_metrics[0]);
    ck_assert_uint_gt(k, 0);
    ck_assert_uint_lt(k, 5000);
    for (size_t i = 1; i < sizeof fn_metrics / sizeof fn_metrics[0]; i++)
        ck_assert_uint_eq(count(&w, fn_metrics[i]), k);
    ck_assert_uint_eq(count(&w, "\ngearman_jobs_queued{"), 3 * k);
    char line[160];
    snprintf(line, sizeof line, "\n# %zu of 5000 functions listed: this page stops at --max-output-size (%d bytes)\n",
             k, PAGE);
    ck_assert_uint_eq(count(&w, line), 1);
    ck_assert_uint_eq(count(&w, "\ngearman_metrics_truncated 1\n"), 1);
    /* the last function listed is whole, in every family, and the next is not there */
    snprintf(line, sizeof line, "\\\"%06zu\",priority=\"low\"} %zu\n", k - 1, k + 1);
    ck_assert_uint_eq(count(&w, line), 1);
    snprintf(line, sizeof line, "\\\"%06zu\"", k);
    ck_assert_uint_eq(count(&w, line), 0);
    free(w.b);

    w = (struct gm_bytes){.max = PAGE};
    http_status_json(&w, &fake_view);
    ck_assert(!w.failed);
    ck_assert_uint_le(w.len, PAGE);
    k = count(&w, "{\"name\":");
    ck_assert_uint_gt(k, 0);
    ck_assert_uint_lt(k, 5000);
    static const char end[] = "null}],\"truncated\":true}\n";
    ck_assert(w.len > sizeof end && memcmp(w.b->data + w.len - (sizeof end - 1), end, sizeof end - 1) == 0);
    free(w.b);

    /* a few functions: all of them, and not cut */
    fake_functions = 10;
    w = (struct gm_bytes){.max = PAGE};
    http_metrics(&w, &fake_view);
    ck_assert(!w.failed);
    for (size_t i = 0; i < sizeof fn_metrics / sizeof fn_metrics[0]; i++)
        ck_assert_uint_eq(count(&w, fn_metrics[i]), 10);
    ck_assert_uint_eq(count(&w, "\ngearman_metrics_truncated 0\n"), 1);
    ck_assert_uint_eq(count(&w, " functions listed"), 0);
    free(w.b);
    w = (struct gm_bytes){.max = PAGE};
    http_status_json(&w, &fake_view);
    ck_assert_uint_eq(count(&w, "{\"name\":"), 10);
    ck_assert_uint_eq(count(&w, "],\"truncated\":false}\n"), 1);
    free(w.b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* UTF-8                                                               */
/* ------------------------------------------------------------------ */

#define FFFD "\xef\xbf\xbd"

/* Input, its JSON string, its Prometheus label value. */
static const struct {
    const char *in, *json, *label;
} utf8_cases[] = {
    {"plain", "\"plain\"", "plain"},
    {"\xc2\x80|\xdf\xbf", "\"\xc2\x80|\xdf\xbf\"", "\xc2\x80|\xdf\xbf"},                   /* U+0080, U+07FF */
    {"\xe0\xa0\x80|\xed\x9f\xbf|\xee\x80\x80", "\"\xe0\xa0\x80|\xed\x9f\xbf|\xee\x80\x80\"",  /* U+0800, U+D7FF, */
     "\xe0\xa0\x80|\xed\x9f\xbf|\xee\x80\x80"},                                            /* U+E000 */
    {"\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf", "\"\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf\"",           /* U+10000, */
     "\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf"},                                                 /* U+10FFFF */
    {"a\xf5\x80\x80" "b", "\"a\\ufffd\\ufffd\\ufffdb\"", "a" FFFD FFFD FFFD "b"},            /* F5: never a lead */
    {"\xff\xfe", "\"\\ufffd\\ufffd\"", FFFD FFFD},
    {"\xc0\xaf\xc1\xbf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"", FFFD FFFD FFFD FFFD},          /* overlong */
    {"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\"", FFFD FFFD FFFD},                          /* overlong */
    {"\xf0\x8f\xbf\xbf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"", FFFD FFFD FFFD FFFD},          /* overlong */
    {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"", FFFD FFFD FFFD},                          /* surrogate */
    {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"", FFFD FFFD FFFD FFFD},          /* > U+10FFFF */
    {"cut\xe2\x82", "\"cut\\ufffd\"", "cut" FFFD},                                          /* cut short */
    {"\xe2\x82" "x\x80", "\"\\ufffdx\\ufffd\"", FFFD "x" FFFD},
    {"q\"b\\n\nc\x01", "\"q\\\"b\\\\n\\u000ac\\u0001\"", "q\\\"b\\\\n\\nc\x01"},          /* escapes */
};

START_TEST(test_json_strings_are_utf8_with_u_fffd_for_the_rest)
{
    char out[256];
    for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
        encode(true, utf8_cases[i].in, strlen(utf8_cases[i].in), out, sizeof out);
        ck_assert_msg(strcmp(out, utf8_cases[i].json) == 0, "case %zu: %s", i, out);
    }
}
END_TEST

START_TEST(test_prometheus_labels_are_utf8_and_escaped)
{
    char out[256];
    for (size_t i = 0; i < sizeof utf8_cases / sizeof utf8_cases[0]; i++) {
        encode(false, utf8_cases[i].in, strlen(utf8_cases[i].in), out, sizeof out);
        ck_assert_msg(strcmp(out, utf8_cases[i].label) == 0, "case %zu: %s", i, out);
    }
}
END_TEST

/* Every byte value, and every byte value after each escape, many times
   over: the encoders' output is what one byte at a time would give, and
   they call no printf for it (they used to call one per control byte). */
START_TEST(test_escaping_is_byte_exact_and_calls_no_printf)
{
    enum { ROUNDS = 64 };
    char in[ROUNDS * 512];
    size_t n = 0;
    for (int r = 0; r < ROUNDS; r++)
        for (int c = 0; c < 256; c++) {
            in[n++] = (char)c;
            in[n++] = (char)(r % 2 ? '"' : 'a');
        }
    for (int json = 0; json < 2; json++) {
        /* what one byte at a time gives (each byte alone: one that is not
           ASCII is not UTF-8 alone, and none here starts a sequence with
           the next, 'a' or '"') */
        struct gm_bytes want = {0};
        if (json)
            gm_bytes_str(&want, "\"");
        for (size_t i = 0; i < n; i++) {
            struct gm_bytes one = {0};
            if (json)
                http_json_str(&one, in + i, 1); /* its quotes are left out below */
            else
                http_label(&one, in + i, 1);
            ck_assert(!one.failed);
            gm_bytes_add(&want, one.b->data + json, one.len - 2 * (size_t)json);
            free(one.b);
        }
        if (json)
            gm_bytes_str(&want, "\"");
        ck_assert(!want.failed);
        vsnprintf_calls = 0;
        struct gm_bytes w = {0};
        if (json)
            http_json_str(&w, in, n);
        else
            http_label(&w, in, n);
        ck_assert_uint_eq(vsnprintf_calls, 0);
        ck_assert(!w.failed);
        ck_assert_uint_eq(w.len, want.len);
        ck_assert(memcmp(w.b->data, want.b->data, w.len) == 0);
        free(w.b);
        free(want.b);
    }
}
END_TEST

/* RFC 4648's test vectors, and every byte value. */
START_TEST(test_base64_is_rfc_4648_padded)
{
    static const char *const cases[][2] = {{"", "\"\""},          {"f", "\"Zg==\""},         {"fo", "\"Zm8=\""},
                                           {"foo", "\"Zm9v\""},   {"foob", "\"Zm9vYg==\""}, {"fooba", "\"Zm9vYmE=\""},
                                           {"foobar", "\"Zm9vYmFy\""}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gm_bytes w = {0};
        http_json_base64(&w, cases[i][0], strlen(cases[i][0]));
        gm_bytes_add(&w, "", 1);
        ck_assert_msg(!w.failed && strcmp(w.b->data, cases[i][1]) == 0, "%s: %s", cases[i][0], w.b->data);
        free(w.b);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    struct gm_bytes w = {0};
    http_json_base64(&w, all, sizeof all);
    ck_assert_uint_eq(w.len, 2 + 4 * ((256 + 2) / 3));
    ck_assert(memcmp(w.b->data, "\"AAECAwQF", 9) == 0 && memcmp(w.b->data + w.len - 5, "/w==\"", 5) == 0);
    free(w.b);
}
END_TEST

/* Path segments keep '+', form values make it a space; a bad escape is
   kept as it is; what does not fit is reported. */
START_TEST(test_percent_decoding_of_paths_and_forms)
{
    char out[8];
    ck_assert_int_eq(http_pct_decode("H%3A1+x", 7, out, sizeof out, false), 5);
    ck_assert_str_eq(out, "H:1+x");
    ck_assert_int_eq(http_pct_decode("a+b%2f", 6, out, sizeof out, true), 4);
    ck_assert_str_eq(out, "a b/");
    ck_assert_int_eq(http_pct_decode("%zz%4", 5, out, sizeof out, false), 5);
    ck_assert_str_eq(out, "%zz%4");
    ck_assert_int_eq(http_pct_decode("%00x", 4, out, sizeof out, false), 2);
    ck_assert(out[0] == '\0' && out[1] == 'x');
    ck_assert_int_eq(http_pct_decode("12345678", 8, out, sizeof out, false), -1);
    ck_assert_str_eq(out, "1234567");
    ck_assert_int_eq(http_pct_decode("1234567", 7, out, sizeof out, false), 7);
}
END_TEST

/* ------------------------------------------------------------------ */

#define ADD(s, t) gm_check_add((s), #t, t, 60, NULL, NULL)

static Suite *
http_suite(void)
{
    Suite *s = suite_create("http");
    ADD(s, test_head_and_body_past_4_gib_are_413_before_anything_is_allocated);
    ADD(s, test_content_length_is_plain_digits_that_fit_in_64_bits);
    ADD(s, test_response_buffer_refuses_to_pass_4_gib);
    ADD(s, test_a_result_that_would_pass_4_gib_is_answered_502_at_once_not_cut);
    ADD(s, test_a_result_past_its_limit_is_answered_502_at_once_and_the_rest_ignored);
    ADD(s, test_a_job_result_is_answered_whole_and_its_block_not_kept);
    ADD(s, test_metrics_and_status_stay_within_the_page_and_say_they_were_cut);
    ADD(s, test_json_strings_are_utf8_with_u_fffd_for_the_rest);
    ADD(s, test_prometheus_labels_are_utf8_and_escaped);
    ADD(s, test_escaping_is_byte_exact_and_calls_no_printf);
    ADD(s, test_base64_is_rfc_4648_padded);
    ADD(s, test_percent_decoding_of_paths_and_forms);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(http_suite());
}
