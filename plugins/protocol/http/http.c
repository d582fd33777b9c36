/*
 * plugins/protocol/http/http.c: the HTTP front-end (-r http --http-port N):
 * gearmand-compatible job submission, the built-in web monitor, JSON
 * views, Prometheus /metrics and /health.
 *
 * Implements libgearman-server/proto/frontend.h.  parse() and on_packet() run on
 * the connection's I/O thread and touch only that connection's state
 * (struct http_conn); serve() runs on the dispatcher thread and reads the
 * server only through the state view it is given.  HTTP/1.1 with
 * keep-alive; one request at a time per connection; bodies by
 * Content-Length (chunked requests get 411).
 *
 * Routes: "/" the monitor page; "/health"; "/metrics"; "/api/status",
 * "/api/workers", "/api/jobs"; POST "/api/jobs/cancel"; anything else is
 * "/<function>": a job (GET, POST, PUT; headers X-Gearman-Unique,
 * X-Gearman-Background: true, X-Gearman-Priority: high|low), answered with
 * X-Gearman-Job-Handle and X-Gearman-Command as gearmand does.
 *
 * Every request's Host, and the Origin of those that change state, are
 * checked by the rules of hosts.c; a refused request is answered 403 by
 * serve() like any page (parse marks it), so that it is well framed and
 * logged once.
 */
#include "config.h"

#include "plugins/protocol/http/http.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/protocol.h"
#include "plugins/protocol/http/hosts.h"

#define HEAD_MAX 65536
/* The largest response (or request, head and body) a block holds: its
   capacity is 32 bits. */
#define WHOLE_MAX ((size_t)UINT32_MAX)
/* A request's size is returned as a long. */
#define REQUEST_MAX ((uint64_t)(LONG_MAX < UINT32_MAX ? LONG_MAX : UINT32_MAX))
/* The joined result of a job: what fits in a response with its head. */
#define RESULT_MAX (WHOLE_MAX - 4096)

/* A request refused by the Host or Origin rules: parse() sends it to
   serve() as a page with this flag, its path pointing at the header line
   that was refused.  The bit is not one of frontend.h's flags. */
#define HTTP_F_REFUSED 0x80
_Static_assert((HTTP_F_REFUSED & (GM_FE_BACKGROUND | GM_FE_HIGH | GM_FE_LOW | GM_FE_HAS_UNIQUE |
                                  GM_FE_KEEP_ALIVE | GM_FE_POST | GM_FE_HEAD)) == 0,
               "HTTP_F_REFUSED collides with a frontend.h flag");

extern const unsigned char gm_monitor_page[];
extern const size_t gm_monitor_page_len;

/* ------------------------------------------------------------------ */
/* Responses are built in a gm_bytes (block.h): a block, handed over    */
/* when done.                                                          */
/* ------------------------------------------------------------------ */

static void
buf_fmt(struct gm_bytes *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
buf_fmt(struct gm_bytes *w, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        gm_bytes_add(w, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        w->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gm_bytes_add(w, big, (size_t)n);
    free(big);
}

/* Measures the UTF-8 sequence that starts s[0..n) (n >= 1): returns its
   length (1 to 4) with *valid set, or, for bytes that are not UTF-8 (a
   stray continuation byte, C0, C1, F5-FF, an overlong form, a surrogate,
   a code point above U+10FFFF, a sequence cut short), the length of the
   longest start of a valid sequence there (at least 1) with *valid false:
   those bytes stand for one U+FFFD, as in browsers' decoders. */
static size_t
utf8_next(const unsigned char *s, size_t n, bool *valid)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf; /* range of the second byte */
    size_t len;
    *valid = false;
    if (c < 0x80) {
        *valid = true;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;  /* overlong */
        hi = c == 0xed ? 0x9f : 0xbf;  /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;  /* overlong */
        hi = c == 0xf4 ? 0x8f : 0xbf;  /* above U+10FFFF */
    } else {
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        if (k >= n || s[k] < lo || s[k] > hi)
            return k;
        lo = 0x80;
        hi = 0xbf;
    }
    *valid = true;
    return len;
}

/* JSON string: quotes, escapes; what is not UTF-8 is shown as U+FFFD. */
static void
buf_json_str(struct gm_bytes *w, const char *s, size_t n)
{
    gm_bytes_add(w, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        bool valid;
        size_t k = utf8_next((const unsigned char *)s + i, n - i, &valid);
        if (!valid)
            gm_bytes_str(w, "\\ufffd");
        else if (c == '"' || c == '\\')
            gm_bytes_add(w, (const char[]){'\\', (char)c}, 2);
        else if (c < 0x20)
            buf_fmt(w, "\\u%04x", c);
        else
            gm_bytes_add(w, s + i, k);
        i += k;
    }
    gm_bytes_add(w, "\"", 1);
}

static void
buf_json_cstr(struct gm_bytes *w, const char *s)
{
    buf_json_str(w, s, strlen(s));
}

/* Prometheus label value: backslash, quote and newline escaped; what is
   not UTF-8 is written as U+FFFD. */
static void
buf_label(struct gm_bytes *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        bool valid;
        size_t k = utf8_next((const unsigned char *)s + i, n - i, &valid);
        if (!valid)
            gm_bytes_str(w, "\xef\xbf\xbd");
        else if (c == '\\' || c == '"')
            gm_bytes_add(w, (const char[]){'\\', (char)c}, 2);
        else if (c == '\n')
            gm_bytes_str(w, "\\n");
        else
            gm_bytes_add(w, s + i, k);
        i += k;
    }
}

/* ------------------------------------------------------------------ */
/* Responses                                                           */
/* ------------------------------------------------------------------ */

static const char *
reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* A whole response; extra = more header lines ("Name: value\r\n"...). */
static struct gm_fe_output
respond(int status, uint8_t minor, bool keep_alive, bool head_only, const char *type, const char *extra,
        const void *body, size_t len)
{
    struct gm_bytes w = {0};
    buf_fmt(&w, "HTTP/1.%u %d %s\r\n", minor, status, reason(status));
    if (extra)
        gm_bytes_str(&w, extra);
    if (type)
        buf_fmt(&w, "Content-Type: %s\r\n", type);
    buf_fmt(&w, "Content-Length: %zu\r\nServer: gearmand-c/%s\r\nConnection: %s\r\n\r\n", len,
            PACKAGE_VERSION, keep_alive ? "keep-alive" : "close");
    if (!head_only && len)
        gm_bytes_add(&w, body, len);
    struct gm_fe_output o = {0};
    if (w.failed) {
        free(w.b);
        if (status == 500)
            return o; /* nothing left to say */
        static const char why[] = "500 Internal Server Error: the response is too large or memory is short\n";
        return respond(500, minor, false, false, "text/plain; charset=utf-8", NULL, why, sizeof why - 1);
    }
    o.blk = w.b;
    o.len = w.len;
    o.close = !keep_alive;
    return o;
}

static struct gm_fe_output
respond_error(int status, uint8_t minor, const char *why)
{
    char body[512];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, reason(status), why);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    return respond(status, minor, false, false, "text/plain; charset=utf-8", NULL, body, len);
}

/* ------------------------------------------------------------------ */
/* I/O thread side: parsing requests, turning job replies into answers */
/* ------------------------------------------------------------------ */

struct http_conn {
    uint8_t minor;
    bool keep_alive, background, head_only;
    char handle[GM_HANDLE_MAX];
    char *body;            /* WORK_DATA chunks joined, then WORK_COMPLETE's data */
    size_t body_len, body_cap;
    bool body_lost;        /* a chunk did not fit (RESULT_MAX or memory): answer 500 */
};

static void *
http_conn_new(void)
{
    return calloc(1, sizeof(struct http_conn));
}

static void
http_conn_free(void *st)
{
    struct http_conn *h = st;
    if (h)
        free(h->body);
    free(h);
}

/* Case-insensitive "name:" match at the start of a header line; returns
   the value (spaces skipped) or NULL. */
static const char *
header_value(const char *line, const char *end, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    if ((size_t)(end - line) <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    const char *v = line + n + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    const char *e = end;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        e--;
    *vlen = (size_t)(e - v);
    return v;
}

static bool
value_is(const char *v, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(v, word, n) == 0;
}

/* Whether a comma-separated header value (Connection: TE, close) holds word. */
static bool
list_has(const char *v, size_t n, const char *word)
{
    const char *end = v + n;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *t = v;
        while (v < end && *v != ',')
            v++;
        const char *e = v;
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (value_is(t, (size_t)(e - t), word))
            return true;
    }
    return false;
}

static bool
is_serve_path(const char *p, size_t n)
{
    return n == 0 || (n == 10 && memcmp(p, "index.html", 10) == 0) || (n == 6 && memcmp(p, "health", 6) == 0) ||
           (n == 11 && memcmp(p, "favicon.ico", 11) == 0) ||
           (n == 7 && memcmp(p, "metrics", 7) == 0) || (n >= 4 && memcmp(p, "api/", 4) == 0) ||
           (n == 3 && memcmp(p, "api", 3) == 0);
}

/* ------------------------------------------------------------------ */
/* Parsing a request                                                   */
/* ------------------------------------------------------------------ */

/* What parse() keeps of a request's header lines. */
struct head {
    uint64_t clen;
    bool has_len, keep_alive;
    struct gm_http_hdr host, origin, referer;
};

/* The end of the head (after its blank line) in buf[0..len), or NULL. */
static const char *
head_end(const char *buf, size_t len)
{
    size_t look = len < HEAD_MAX ? len : HEAD_MAX;
    for (size_t i = 0; i + 1 < look; i++) {
        if (buf[i] == '\n' && (buf[i + 1] == '\n' || (i + 2 < look && buf[i + 1] == '\r' && buf[i + 2] == '\n')))
            return buf + i + (buf[i + 1] == '\n' ? 2 : 3);
    }
    return NULL;
}

/* A Content-Length value: plain decimal digits that fit in 64 bits. */
static bool
parse_length(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        uint64_t d = (uint64_t)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* The request line (METHOD SP target SP HTTP/1.x) into req; returns the
   end of the line, or NULL with the error response in *err_out. */
static const char *
parse_request_line(const char *buf, const char *end, struct gm_fe_req *req, struct gm_fe_output *err_out)
{
    const char *line_end = memchr(buf, '\n', (size_t)(end - buf));
    const char *sp1 = memchr(buf, ' ', (size_t)(line_end - buf));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (!sp1 || !sp2) {
        *err_out = respond_error(400, 1, "malformed request line");
        return NULL;
    }
    size_t mlen = (size_t)(sp1 - buf);
    const char *ver = sp2 + 1;
    size_t vlen = (size_t)(line_end - ver);
    if (vlen && ver[vlen - 1] == '\r')
        vlen--;
    if (vlen != 8 || strncmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '0' && ver[7] != '1')) {
        *err_out = respond_error(505, 1, "only HTTP/1.0 and HTTP/1.1 are spoken here");
        return NULL;
    }
    req->minor = (uint8_t)(ver[7] - '0');
    if (mlen == 3 && memcmp(buf, "GET", 3) == 0) {
    } else if ((mlen == 4 && memcmp(buf, "POST", 4) == 0) || (mlen == 3 && memcmp(buf, "PUT", 3) == 0) ||
               (mlen == 6 && memcmp(buf, "DELETE", 6) == 0)) {
        req->flags |= GM_FE_POST;
    } else if (mlen == 4 && memcmp(buf, "HEAD", 4) == 0) {
        req->flags |= GM_FE_HEAD;
    } else {
        *err_out = respond_error(501, req->minor, "method not supported (GET, HEAD, POST, PUT, DELETE)");
        return NULL;
    }
    /* target: leading slashes stripped (as gearmand), query after '?' */
    const char *t = sp1 + 1;
    while (t < sp2 && *t == '/')
        t++;
    const char *q = memchr(t, '?', (size_t)(sp2 - t));
    const char *path_end = q ? q : sp2;
    if ((size_t)(path_end - buf) > UINT16_MAX || (size_t)(sp2 - buf) > UINT16_MAX) {
        *err_out = respond_error(431, req->minor, "the request line is too long");
        return NULL;
    }
    req->path_off = (uint16_t)(t - buf);
    req->path_len = (uint16_t)(path_end - t);
    if (q) {
        req->query_off = (uint16_t)(q + 1 - buf);
        req->query_len = (uint16_t)(sp2 - q - 1);
    }
    return line_end;
}

/* Notes a header the Host and Origin rules read; returns false if it came
   twice (which of the two would count is then unclear). */
static bool
note_header(struct gm_http_hdr *h, const char *line, const char *v, size_t n)
{
    h->line = line;
    h->v = v;
    h->n = n;
    return ++h->count == 1;
}

/* One header line into req and *hd; returns 0, or -1 with the error
   response in *err_out. */
static int
parse_header(const char *buf, const char *l, const char *e, struct gm_fe_req *req, struct head *hd,
             struct gm_fe_output *err_out)
{
    size_t n;
    const char *v;
    const char *bad = NULL;
    int status = 400;
    if ((v = header_value(l, e, "Content-Length", &n))) {
        uint64_t this_len = 0;
        if (!parse_length(v, n, &this_len))
            bad = "bad Content-Length";
        /* Two different lengths make the framing ambiguous (request
           smuggling): refuse. */
        else if (hd->has_len && this_len != hd->clen)
            bad = "conflicting Content-Length headers";
        hd->clen = this_len;
        hd->has_len = true;
    } else if ((v = header_value(l, e, "Transfer-Encoding", &n)) && !value_is(v, n, "identity")) {
        bad = "chunked bodies are not supported: send Content-Length";
        status = 411;
    } else if ((v = header_value(l, e, "Host", &n))) {
        if (!note_header(&hd->host, l, v, n))
            bad = "more than one Host header";
    } else if ((v = header_value(l, e, "Origin", &n))) {
        if (!note_header(&hd->origin, l, v, n))
            bad = "more than one Origin header";
    } else if ((v = header_value(l, e, "Referer", &n))) {
        if (!note_header(&hd->referer, l, v, n))
            bad = "more than one Referer header";
    } else if ((v = header_value(l, e, "X-Gearman-Unique", &n))) {
        if ((size_t)(v - buf) > UINT16_MAX || n > UINT16_MAX) {
            bad = "X-Gearman-Unique too long";
            status = 431;
        }
        req->flags |= GM_FE_HAS_UNIQUE;
        req->unique_off = (uint16_t)(v - buf);
        req->unique_len = (uint16_t)n;
    } else if ((v = header_value(l, e, "X-Gearman-Background", &n))) {
        if (value_is(v, n, "true"))
            req->flags |= GM_FE_BACKGROUND;
    } else if ((v = header_value(l, e, "X-Gearman-Priority", &n))) {
        if (value_is(v, n, "high"))
            req->flags |= GM_FE_HIGH;
        else if (value_is(v, n, "low"))
            req->flags |= GM_FE_LOW;
    } else if ((v = header_value(l, e, "Connection", &n))) {
        if (list_has(v, n, "close"))
            hd->keep_alive = false;
        else if (list_has(v, n, "keep-alive"))
            hd->keep_alive = true;
    }
    if (!bad)
        return 0;
    *err_out = respond_error(status, req->minor, bad);
    return -1;
}

/* Checks what can be checked before the body is in: its size against
   max_body and what a block holds, and the Host header.  Returns 0, or -1
   with the error response in *err_out. */
static int
check_head(const struct gm_fe_req *req, const struct head *hd, size_t head, uint32_t max_body,
           struct gm_fe_output *err_out)
{
    if (hd->clen > max_body) {
        *err_out = respond_error(413, req->minor, "the body is larger than --max-packet-size");
        return -1;
    }
    if (hd->clen > REQUEST_MAX - head) {
        *err_out = respond_error(413, req->minor, "the request is larger than 4 GiB");
        return -1;
    }
    if (req->minor == 1 && !hd->host.count) {
        *err_out = respond_error(400, req->minor, "an HTTP/1.1 request needs a Host header");
        return -1;
    }
    if (hd->host.count && !gm_http_host_valid(hd->host.v, hd->host.n)) {
        *err_out = respond_error(400, req->minor, "bad Host header");
        return -1;
    }
    return 0;
}

/* Marks a request refused by the Host or Origin rules (it goes to serve(),
   which answers 403) and logs why, once. */
static void
refuse(const char *buf, struct gm_fe_req *req, const struct gm_http_hdr *bad)
{
    size_t n = (size_t)(bad->v + bad->n - bad->line);
    if (n > 200)
        n = 200;
    char why[400], method[16], path[120];
    gm_http_refusal_text(bad->line, n, why, sizeof why);
    gm_http_printable(method, sizeof method, buf, (size_t)((const char *)memchr(buf, ' ', req->path_off) - buf));
    gm_http_printable(path, sizeof path, buf + req->path_off, req->path_len);
    gm_log(GM_LOG_WARNING, "http: refused %s /%s: %s", method, path, why);
    req->kind = GM_FE_SERVE;
    req->flags |= HTTP_F_REFUSED;
    req->path_off = (uint16_t)(bad->line - buf);
    req->path_len = (uint16_t)n;
}

static long
http_parse(void *st, const char *buf, size_t len, uint32_t max_body, struct gm_fe_req *req, uint64_t *need,
           struct gm_fe_output *err_out)
{
    struct http_conn *h = st;
    const char *end = head_end(buf, len);
    if (!end) {
        if (len >= HEAD_MAX) {
            *err_out = respond_error(431, 1, "the request head is larger than 64 KiB");
            return -1;
        }
        return 0;
    }
    memset(req, 0, sizeof *req);
    const char *line_end = parse_request_line(buf, end, req, err_out);
    if (!line_end)
        return -1;
    struct head hd = {.keep_alive = req->minor == 1};
    for (const char *l = line_end + 1, *e; l < end && (e = memchr(l, '\n', (size_t)(end - l))); l = e + 1) {
        if (parse_header(buf, l, e, req, &hd, err_out) < 0)
            return -1;
    }
    size_t head = (size_t)(end - buf);
    if (check_head(req, &hd, head, max_body, err_out) < 0)
        return -1;
    if (len < head + hd.clen) {
        *need = head + hd.clen; /* at most REQUEST_MAX: fits 32 bits */
        return 0;
    }
    req->body_off = (uint32_t)head;
    req->body_len = (uint32_t)hd.clen;
    if (hd.keep_alive)
        req->flags |= GM_FE_KEEP_ALIVE;
    req->kind = is_serve_path(buf + req->path_off, req->path_len) ? GM_FE_SERVE : GM_FE_SUBMIT;
    if (req->kind == GM_FE_SUBMIT && (req->flags & GM_FE_HEAD)) {
        *err_out = respond_error(405, req->minor, "HEAD cannot submit a job");
        return -1;
    }
    bool changes_state = req->kind == GM_FE_SUBMIT || (req->flags & GM_FE_POST);
    const struct gm_http_hdr *bad = gm_http_refused_by(&hd.host, &hd.origin, &hd.referer, changes_state);
    if (bad)
        refuse(buf, req, bad);
    h->minor = req->minor;
    h->keep_alive = hd.keep_alive;
    h->background = (req->flags & GM_FE_BACKGROUND) != 0;
    h->head_only = (req->flags & GM_FE_HEAD) != 0;
    h->body_len = 0;
    h->body_lost = false;
    h->handle[0] = '\0';
    return (long)(head + hd.clen);
}

static void
body_add(struct http_conn *h, const char *p, size_t n)
{
    if (n == 0 || h->body_lost)
        return;
    if (h->body_len > RESULT_MAX || n > RESULT_MAX - h->body_len) {
        h->body_lost = true;
        return;
    }
    if (h->body_len + n > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 256;
        while (cap < h->body_len + n)
            cap *= 2;
        char *b = realloc(h->body, cap);
        if (!b) {
            h->body_lost = true;
            return;
        }
        h->body = b;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, p, n);
    h->body_len += n;
}

static struct gm_fe_output
job_response(struct http_conn *h, int status, const char *command, const char *extra)
{
    char headers[256];
    snprintf(headers, sizeof headers, "X-Gearman-Job-Handle: %s\r\nX-Gearman-Command: %s\r\n%s", h->handle,
             command, extra ? extra : "");
    struct gm_fe_output o;
    if (h->body_lost) {
        static const char why[] = "500 Internal Server Error: the job's result is larger than 4 GiB "
                                  "or memory is short\n";
        o = respond(500, h->minor, false, false, "text/plain; charset=utf-8", headers, why, sizeof why - 1);
    } else {
        o = respond(status, h->minor, h->keep_alive, false, "application/octet-stream", headers, h->body,
                    h->body_len);
    }
    h->body_len = 0;
    h->body_lost = false;
    return o;
}

static int
http_on_packet(void *st, uint32_t type, const char *payload, uint32_t len, struct gm_fe_output *out)
{
    struct http_conn *h = st;
    const char *nul = memchr(payload, '\0', len);
    const char *data = nul ? nul + 1 : payload + len;
    size_t dlen = (size_t)(payload + len - data);
    switch (type) {
    case GM_PKT_JOB_CREATED:
        snprintf(h->handle, sizeof h->handle, "%.*s", (int)(len < GM_HANDLE_MAX ? len : GM_HANDLE_MAX), payload);
        if (!h->background)
            return 0;
        h->body_len = 0;
        *out = job_response(h, 200, "JOB_CREATED", NULL);
        return 1;
    case GM_PKT_WORK_DATA:
        body_add(h, data, dlen);
        return 0;
    case GM_PKT_WORK_COMPLETE:
        body_add(h, data, dlen);
        *out = job_response(h, 200, "WORK_COMPLETE", NULL);
        return 1;
    case GM_PKT_WORK_FAIL:
        h->body_len = 0;
        h->body_lost = false;
        *out = job_response(h, 200, "WORK_FAIL", NULL);
        return 1;
    case GM_PKT_WORK_EXCEPTION:
        h->body_len = 0;
        h->body_lost = false;
        body_add(h, data, dlen);
        *out = job_response(h, 200, "WORK_EXCEPTION", NULL);
        return 1;
    case GM_PKT_ERROR: {
        size_t clen = nul ? (size_t)(nul - payload) : len;
        int status = clen == 11 && memcmp(payload, "QUEUE_ERROR", 11) == 0 ? 503 : 400;
        char extra[128];
        snprintf(extra, sizeof extra, "X-Gearman-Error: %.*s\r\n", (int)(clen < 64 ? clen : 64), payload);
        char body[320];
        int n = snprintf(body, sizeof body, "%.*s: %.*s\n", (int)(clen < 64 ? clen : 64), payload,
                         (int)(dlen < 200 ? dlen : 200), data);
        *out = respond(status, h->minor, h->keep_alive, false, "text/plain; charset=utf-8", extra, body,
                       (size_t)n);
        return 1;
    }
    default:
        return 0; /* WORK_STATUS, WORK_WARNING: nothing to show in a response */
    }
}

/* ------------------------------------------------------------------ */
/* Dispatcher side: pages, JSON, metrics, health                       */
/* ------------------------------------------------------------------ */

/* Value of a query (or form body) parameter, percent-decoded into out. */
static bool
param(const char *q, size_t qlen, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = q, *end = q + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            size_t o = 0;
            for (const char *s = p + nlen + 1; s < e && o + 1 < outlen; s++) {
                if (*s == '%' && e - s >= 3 && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
                    char hex[3] = {s[1], s[2], 0};
                    out[o++] = (char)strtol(hex, NULL, 16);
                    s += 2;
                } else {
                    out[o++] = *s == '+' ? ' ' : *s;
                }
            }
            out[o] = '\0';
            return true;
        }
        p = e + 1;
    }
    return false;
}

static uint64_t
param_u64(const char *q, size_t qlen, const char *name, uint64_t dflt, uint64_t max)
{
    char v[32];
    if (!param(q, qlen, name, v, sizeof v) || !*v)
        return dflt;
    char *e;
    unsigned long long x = strtoull(v, &e, 10);
    if (*e)
        return dflt;
    return x > max ? max : x;
}

static const char *const prio_name[3] = {"high", "normal", "low"};

/* ---- the server's statistics (frontend.h: GM_VIEW_SERVER_STATS) ---- */

enum stat_kind { STAT_STR, STAT_BOOL, STAT_U64, STAT_I64, STAT_MS };

/* One statistic of struct gm_view_server: where it is and how it shows. */
struct server_stat {
    enum stat_kind kind;
    size_t off;                 /* its member */
    const char *json;           /* dotted path in /api/status, or NULL */
    unsigned place;             /* its place among the server's samples of /metrics; 0: none */
    const char *metric, *help;
    const char *label;          /* label name, or NULL */
    const char *label_value;    /* the label's value, or NULL: */
    size_t label_off;           /* the string member that holds it */
};

#define SERVER_STAT(kind, field, json, metric) \
    {STAT_##kind, offsetof(struct gm_view_server, field), json, metric},
static const struct server_stat server_stats[] = {GM_VIEW_SERVER_STATS(SERVER_STAT)};
#undef SERVER_STAT
#define NSTATS (sizeof server_stats / sizeof server_stats[0])

/* The string member of s at off. */
static const char *
stat_str(const struct gm_view_server *s, size_t off)
{
    return *(const char *const *)((const char *)s + off);
}

/* A statistic's value: in JSON (a string quoted, a bool true or false) or,
   with prom, as a Prometheus sample's (a string 1, a bool 1 or 0). */
static void
stat_value(struct gm_bytes *w, const struct server_stat *st, const struct gm_view_server *s, bool prom)
{
    const void *p = (const char *)s + st->off;
    switch (st->kind) {
    case STAT_STR:
        if (prom)
            gm_bytes_str(w, "1");
        else
            buf_json_cstr(w, stat_str(s, st->off));
        break;
    case STAT_BOOL:
        gm_bytes_str(w, *(const bool *)p ? (prom ? "1" : "true") : (prom ? "0" : "false"));
        break;
    case STAT_U64:
        buf_fmt(w, "%llu", (unsigned long long)*(const uint64_t *)p);
        break;
    case STAT_I64:
        buf_fmt(w, "%lld", (long long)*(const int64_t *)p);
        break;
    case STAT_MS:
        buf_fmt(w, "%.3f", *(const int64_t *)p / 1000.0);
        break;
    }
}

/* How many objects a dotted JSON path opens (its dots). */
static size_t
path_depth(const char *path)
{
    size_t n = 0;
    for (; *path; path++)
        n += *path == '.';
    return n;
}

/* How many leading objects two dotted paths share. */
static size_t
path_common(const char *a, const char *b)
{
    size_t n = 0;
    for (size_t i = 0; a[i] && a[i] == b[i]; i++)
        n += a[i] == '.';
    return n;
}

/* The server's statistics as the members "server":{...},"totals":{...} of
   /api/status: each at its dotted path, in the list's order, the objects
   of the paths opened and closed as they go. */
static void
server_json(struct gm_bytes *w, const struct gm_view_server *s)
{
    const char *prev = NULL; /* the path written last */
    for (size_t i = 0; i < NSTATS; i++) {
        const struct server_stat *st = &server_stats[i];
        if (!st->json)
            continue;
        size_t common = prev ? path_common(prev, st->json) : 0;
        for (size_t k = prev ? path_depth(prev) : 0; k > common; k--)
            gm_bytes_str(w, "}");
        if (prev)
            gm_bytes_str(w, ",");
        const char *c = st->json;
        for (size_t k = 0; k < common; k++)
            c = strchr(c, '.') + 1;
        for (const char *dot; (dot = strchr(c, '.')); c = dot + 1)
            buf_fmt(w, "\"%.*s\":{", (int)(dot - c), c);
        buf_fmt(w, "\"%s\":", c);
        stat_value(w, st, s, false);
        prev = st->json;
    }
    for (size_t k = prev ? path_depth(prev) : 0; k > 0; k--)
        gm_bytes_str(w, "}");
}

/* The HELP and TYPE lines that open a family of /metrics: a name that ends
   in "_total" is a counter's, any other a gauge's. */
static void
family_head(struct gm_bytes *w, const char *name, const char *help)
{
    size_t n = strlen(name);
    bool counter = n >= 6 && strcmp(name + n - 6, "_total") == 0;
    buf_fmt(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, counter ? "counter" : "gauge");
}

/* One server sample of /metrics, after its family's head unless prev, the
   sample before it, is of the same family. */
static void
server_sample(struct gm_bytes *w, const struct server_stat *st, const struct server_stat *prev,
              const struct gm_view_server *s)
{
    if (!prev || strcmp(prev->metric, st->metric) != 0)
        family_head(w, st->metric, st->help);
    gm_bytes_str(w, st->metric);
    if (st->label) {
        const char *v = st->label_value ? st->label_value : stat_str(s, st->label_off);
        buf_fmt(w, "{%s=\"", st->label);
        buf_label(w, v, strlen(v));
        gm_bytes_str(w, "\"}");
    }
    gm_bytes_str(w, " ");
    stat_value(w, st, s, true);
    gm_bytes_str(w, "\n");
}

/* The server's samples of /metrics by their places: the strings' (info
   samples) with strings, else the others. */
static void
server_samples(struct gm_bytes *w, const struct gm_view_server *s, bool strings)
{
    unsigned last = 0;
    for (size_t i = 0; i < NSTATS; i++)
        if (server_stats[i].place > last)
            last = server_stats[i].place;
    const struct server_stat *prev = NULL;
    for (unsigned place = 1; place <= last; place++) {
        for (size_t i = 0; i < NSTATS; i++) {
            const struct server_stat *st = &server_stats[i];
            if (st->place != place || (st->kind == STAT_STR) != strings)
                continue;
            server_sample(w, st, prev, s);
            prev = st;
        }
    }
}

/* ---- a function's statistics ---- */

static uint64_t
fn_queued(const struct gm_view_function *f)
{
    return (uint64_t)f->queued[0] + f->queued[1] + f->queued[2];
}

static uint64_t
fn_total(const struct gm_view_function *f)
{
    return fn_queued(f) + f->running;
}

static uint64_t
fn_running(const struct gm_view_function *f)
{
    return f->running;
}

static uint64_t
fn_workers(const struct gm_view_function *f)
{
    return f->workers;
}

/* A family of /metrics with a sample for each function: a gauge computed
   by value(), or a counter of frontend.h's GM_VIEW_FUNCTION_COUNTERS, the
   uint64_t member at off, which the function's JSON object shows too. */
struct fn_family {
    const char *metric, *help;
    uint64_t (*value)(const struct gm_view_function *f); /* NULL for a counter */
    size_t off;         /* a counter's member */
    const char *json;   /* a counter's key in the function's JSON object, else NULL */
    bool by_priority;   /* a sample for each priority, of queued[] */
};

#define FN_COUNTER(unused, field, json, metric, help) \
    {metric, help, NULL, offsetof(struct gm_view_function, field), json, false},
/* The functions' families in the order of /metrics. */
static const struct fn_family fn_families[] = {
    {"gearman_jobs", "Jobs of the function, queued and running.", fn_total, 0, NULL, false},
    {"gearman_jobs_running", "Jobs of the function a worker runs now.", fn_running, 0, NULL, false},
    {"gearman_jobs_waiting", "Jobs of the function waiting for a worker.", fn_queued, 0, NULL, false},
    {"gearman_workers", "Workers registered for the function.", fn_workers, 0, NULL, false},
    GM_VIEW_FUNCTION_COUNTERS(FN_COUNTER, 0)
    {"gearman_jobs_queued", "Jobs of the function waiting, by priority.", NULL, 0, NULL, true},
};
#undef FN_COUNTER
#define NFAMILIES (sizeof fn_families / sizeof fn_families[0])

static uint64_t
fn_value(const struct fn_family *fam, const struct gm_view_function *f)
{
    return fam->value ? fam->value(f) : *(const uint64_t *)((const char *)f + fam->off);
}

static void
add_function_json(void *arg, const struct gm_view_function *f)
{
    struct gm_bytes *w = arg;
    if (w->len && w->b->data[w->len - 1] == '}')
        gm_bytes_str(w, ",");
    gm_bytes_str(w, "{\"name\":");
    buf_json_str(w, f->name, f->name_len);
    buf_fmt(w,
            ",\"total\":%llu,\"queued\":%llu,\"running\":%u,\"workers\":%u,"
            "\"queued_by_priority\":{\"high\":%u,\"normal\":%u,\"low\":%u},"
            "\"maxqueue\":{\"high\":%u,\"normal\":%u,\"low\":%u}",
            (unsigned long long)fn_total(f), (unsigned long long)fn_queued(f), f->running, f->workers,
            f->queued[0], f->queued[1], f->queued[2], f->max_queue[0], f->max_queue[1], f->max_queue[2]);
    for (size_t i = 0; i < NFAMILIES; i++)
        if (fn_families[i].json)
            buf_fmt(w, ",\"%s\":%llu", fn_families[i].json, (unsigned long long)fn_value(&fn_families[i], f));
    gm_bytes_str(w, ",\"oldest_queued_age_s\":");
    if (f->oldest_queued_ms < 0)
        gm_bytes_str(w, "null}");
    else
        buf_fmt(w, "%.3f}", f->oldest_queued_ms / 1000.0);
}

static void
add_worker_json(void *arg, const struct gm_view_worker *wk)
{
    struct gm_bytes *w = arg;
    if (w->len && w->b->data[w->len - 1] == '}')
        gm_bytes_str(w, ",");
    buf_fmt(w, "{\"fd\":%d,\"address\":", wk->fd);
    buf_json_cstr(w, wk->addr);
    buf_fmt(w, ",\"port\":%u,\"client_id\":", wk->port);
    buf_json_cstr(w, wk->client_id);
    gm_bytes_str(w, ",\"functions\":[");
    for (uint32_t i = 0; i < wk->nfunctions; i++) {
        if (i)
            gm_bytes_str(w, ",");
        buf_json_cstr(w, wk->functions[i]);
    }
    gm_bytes_str(w, "],\"current_job\":");
    if (wk->current_job)
        buf_json_cstr(w, wk->current_job);
    else
        gm_bytes_str(w, "null");
    buf_fmt(w, ",\"running\":%u,\"sleeping\":%s}", wk->running, wk->sleeping ? "true" : "false");
}

static void
add_job_json(void *arg, const struct gm_view_job *j)
{
    struct gm_bytes *w = arg;
    if (w->len && w->b->data[w->len - 1] == '}')
        gm_bytes_str(w, ",");
    gm_bytes_str(w, "{\"handle\":");
    buf_json_cstr(w, j->handle);
    gm_bytes_str(w, ",\"function\":");
    buf_json_cstr(w, j->function);
    gm_bytes_str(w, ",\"unique\":");
    buf_json_str(w, j->unique, j->unique_len);
    buf_fmt(w, ",\"priority\":\"%s\",\"state\":\"%s\",\"age_s\":%.3f,\"run_at\":%lld,\"retries\":%u,"
               "\"clients\":%u,\"background\":%s,\"cancelled\":%s}",
            prio_name[j->priority % 3], j->state, j->age_ms / 1000.0, (long long)j->run_at, j->retries, j->clients,
            j->background ? "true" : "false", j->cancelled ? "true" : "false");
}

struct metrics_ctx {
    struct gm_bytes *w;
    const struct fn_family *fam;
};

/* The sample (or, by priority, the samples) of one function in a family. */
static void
metric_fn(void *arg, const struct gm_view_function *f)
{
    struct metrics_ctx *m = arg;
    struct gm_bytes *w = m->w;
    if (!m->fam->by_priority) {
        buf_fmt(w, "%s{function=\"", m->fam->metric);
        buf_label(w, f->name, f->name_len);
        buf_fmt(w, "\"} %llu\n", (unsigned long long)fn_value(m->fam, f));
        return;
    }
    for (int p = 0; p < 3; p++) {
        buf_fmt(w, "%s{function=\"", m->fam->metric);
        buf_label(w, f->name, f->name_len);
        buf_fmt(w, "\",priority=\"%s\"} %u\n", prio_name[p], f->queued[p]);
    }
}

static void
metrics(struct gm_bytes *w, const struct gm_state_view *v)
{
    struct gm_view_server s;
    v->server(v->d, &s);
    gm_bytes_str(w, "# HELP gearman_up Whether the job server answers.\n# TYPE gearman_up gauge\ngearman_up 1\n");
    server_samples(w, &s, true);
    for (size_t i = 0; i < NFAMILIES; i++) {
        const struct fn_family *fam = &fn_families[i];
        family_head(w, fam->metric, fam->help);
        struct metrics_ctx m = {w, fam};
        v->each_function(v->d, metric_fn, &m);
    }
    server_samples(w, &s, false);
}

static bool
path_is(const char *req, const struct gm_fe_req *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(req + r->path_off, p, r->path_len) == 0;
}

/* The 403 for a request parse() refused (its path is the refused header
   line); the connection closes after it. */
static struct gm_fe_output
refusal(const char *request, const struct gm_fe_req *r)
{
    char why[400], body[512];
    gm_http_refusal_text(request + r->path_off, r->path_len, why, sizeof why);
    int n = snprintf(body, sizeof body, "403 Forbidden: %s\n", why);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    return respond(403, r->minor, false, (r->flags & GM_FE_HEAD) != 0, "text/plain; charset=utf-8", NULL, body,
                   len);
}

static struct gm_fe_output
http_serve(const char *request, const struct gm_fe_req *r, bool loopback, bool allow_remote_actions,
           const struct gm_state_view *v)
{
    bool keep = (r->flags & GM_FE_KEEP_ALIVE) != 0, head = (r->flags & GM_FE_HEAD) != 0;
    const char *q = request + r->query_off;
    size_t qlen = r->query_len;
    const char *json = "application/json";
    struct gm_bytes w = {0};
    struct gm_fe_output o;
    if (r->flags & HTTP_F_REFUSED)
        return refusal(request, r);
    if (path_is(request, r, "") || path_is(request, r, "index.html")) {
        if (r->flags & GM_FE_POST)
            return respond(405, r->minor, keep, false, "text/plain", "Allow: GET, HEAD\r\n", "405\n", 4);
        return respond(200, r->minor, keep, head, "text/html; charset=utf-8", "Cache-Control: no-cache\r\n",
                       gm_monitor_page, gm_monitor_page_len);
    }
    if (path_is(request, r, "favicon.ico"))
        return respond(204, r->minor, keep, head, NULL, "Cache-Control: max-age=86400\r\n", "", 0);
    if (path_is(request, r, "health")) {
        struct gm_view_server s;
        v->server(v->d, &s);
        bool ready = s.queue_healthy;
        buf_fmt(&w, "{\"live\":true,\"ready\":%s,\"status\":\"%s\",\"queue\":{\"backend\":", ready ? "true" : "false",
                ready ? "ok" : s.queue_stalled ? "queue backend not answering" : "queue backend unavailable");
        buf_json_cstr(&w, s.queue_backend);
        buf_fmt(&w, ",\"healthy\":%s}}\n", s.queue_healthy ? "true" : "false");
        o = respond(ready ? 200 : 503, r->minor, keep, head, json, NULL, w.b ? w.b->data : "", w.len);
        free(w.b);
        return o;
    }
    if (path_is(request, r, "metrics")) {
        metrics(&w, v);
        o = respond(200, r->minor, keep, head, "text/plain; version=0.0.4; charset=utf-8", NULL,
                    w.b ? w.b->data : "", w.len);
        free(w.b);
        return o;
    }
    if (path_is(request, r, "api/status")) {
        struct gm_view_server s;
        v->server(v->d, &s);
        gm_bytes_str(&w, "{");
        server_json(&w, &s);
        gm_bytes_str(&w, ",\"functions\":[");
        v->each_function(v->d, add_function_json, &w);
        gm_bytes_str(&w, "]}\n");
    } else if (path_is(request, r, "api/workers")) {
        gm_bytes_str(&w, "{\"workers\":[");
        v->each_worker(v->d, add_worker_json, &w);
        gm_bytes_str(&w, "]}\n");
    } else if (path_is(request, r, "api/jobs")) {
        char fn[512], state[32];
        bool has_fn = param(q, qlen, "function", fn, sizeof fn) && *fn;
        if (!param(q, qlen, "state", state, sizeof state))
            state[0] = '\0';
        uint64_t offset = param_u64(q, qlen, "offset", 0, UINT64_MAX);
        uint64_t limit = param_u64(q, qlen, "limit", 100, 1000);
        gm_bytes_str(&w, "{\"jobs\":[");
        uint64_t total = v->jobs(v->d, has_fn ? fn : NULL, has_fn ? strlen(fn) : 0, state, offset, limit,
                                 add_job_json, &w);
        buf_fmt(&w, "],\"total\":%llu,\"offset\":%llu,\"limit\":%llu}\n", (unsigned long long)total,
                (unsigned long long)offset, (unsigned long long)limit);
    } else if (path_is(request, r, "api/jobs/cancel")) {
        if (!(r->flags & GM_FE_POST)) {
            const char *e = "{\"error\":\"use POST\"}\n";
            return respond(405, r->minor, keep, head, json, "Allow: POST\r\n", e, strlen(e));
        }
        if (!loopback && !allow_remote_actions) {
            const char *e = "{\"error\":\"actions are accepted only from this host (see --http-allow-remote-actions)\"}\n";
            return respond(403, r->minor, keep, head, json, NULL, e, strlen(e));
        }
        char handle[GM_HANDLE_MAX + 1];
        if (!param(q, qlen, "handle", handle, sizeof handle) &&
            !param(request + r->body_off, r->body_len, "handle", handle, sizeof handle)) {
            const char *e = "{\"error\":\"give handle=<job handle>\"}\n";
            return respond(400, r->minor, keep, head, json, NULL, e, strlen(e));
        }
        if (v->cancel(v->d, handle, strlen(handle)) < 0) {
            gm_bytes_str(&w, "{\"error\":\"unknown job\",\"handle\":");
            buf_json_cstr(&w, handle);
            gm_bytes_str(&w, "}\n");
            o = respond(404, r->minor, keep, head, json, NULL, w.b ? w.b->data : "", w.len);
            free(w.b);
            return o;
        }
        gm_bytes_str(&w, "{\"ok\":true,\"cancelled\":");
        buf_json_cstr(&w, handle);
        gm_bytes_str(&w, "}\n");
    } else {
        const char *e = "{\"error\":\"not found\"}\n";
        return respond(404, r->minor, keep, head, json, NULL, e, strlen(e));
    }
    if (w.failed) {
        free(w.b);
        return respond_error(500, r->minor, "out of memory");
    }
    o = respond(200, r->minor, keep, head, json, "Cache-Control: no-cache\r\n", w.b ? w.b->data : "", w.len);
    free(w.b);
    return o;
}

const struct gm_frontend gm_http_frontend = {
    .name = "http",
    .default_unique = "-", /* gearmand's: identical bodies coalesce unless X-Gearman-Unique says */
    .conn_new = http_conn_new,
    .conn_free = http_conn_free,
    .parse = http_parse,
    .on_packet = http_on_packet,
    .serve = http_serve,
};
