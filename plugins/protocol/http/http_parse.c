/*
 * plugins/protocol/http/http_parse.c: the HTTP front-end's parse(): cuts
 * the next request out of the bytes a connection has read, and the limits
 * it holds requests to.
 *
 * Runs on the connection's I/O thread and touches only that connection's
 * state (struct http_conn, which it resets for the request) and the
 * request it fills.  HTTP/1.0 and 1.1; one request at a time; the head at
 * most HEAD_MAX bytes; a body only by Content-Length (chunked requests get
 * 411), at most --max-packet-size and, with its head, what a block holds.
 * An error is answered here, and the connection closes after it.
 *
 * Every request's Host, and the Origin (or Referer) of those that change
 * state, are checked by the rules of hosts.c; a refused request is not
 * answered here but marked (HTTP_F_REFUSED) and sent to serve(), which
 * answers 403, so that it is well framed and logged once.
 */
#include "config.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

#include "libgearman-server/base/log.h"
#include "plugins/protocol/http/hosts.h"
#include "plugins/protocol/http/http_int.h"

#define HEAD_MAX 65536
/* A request's size is returned as a long. */
#define REQUEST_MAX ((uint64_t)(LONG_MAX < UINT32_MAX ? LONG_MAX : UINT32_MAX))

/* ------------------------------------------------------------------ */
/* Header lines                                                        */
/* ------------------------------------------------------------------ */

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

/* Whether a request's path (leading slashes stripped) is one of serve()'s
   pages (http_serve.c) rather than a function to submit a job to. */
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
    bool has_auth;
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
        *err_out = http_respond_error(400, 1, "malformed request line");
        return NULL;
    }
    size_t mlen = (size_t)(sp1 - buf);
    const char *ver = sp2 + 1;
    size_t vlen = (size_t)(line_end - ver);
    if (vlen && ver[vlen - 1] == '\r')
        vlen--;
    if (vlen != 8 || strncmp(ver, "HTTP/1.", 7) != 0 || (ver[7] != '0' && ver[7] != '1')) {
        *err_out = http_respond_error(505, 1, "only HTTP/1.0 and HTTP/1.1 are spoken here");
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
        *err_out = http_respond_error(501, req->minor, "method not supported (GET, HEAD, POST, PUT, DELETE)");
        return NULL;
    }
    /* target: leading slashes stripped (as gearmand), query after '?' */
    const char *t = sp1 + 1;
    while (t < sp2 && *t == '/')
        t++;
    const char *q = memchr(t, '?', (size_t)(sp2 - t));
    const char *path_end = q ? q : sp2;
    if ((size_t)(path_end - buf) > UINT16_MAX || (size_t)(sp2 - buf) > UINT16_MAX) {
        *err_out = http_respond_error(431, req->minor, "the request line is too long");
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
    } else if ((v = header_value(l, e, "Authorization", &n))) {
        /* a bearer token names the request (docs/security.md); another
           scheme is not ours and is ignored */
        if (hd->has_auth) {
            bad = "more than one Authorization header";
        } else if (n >= 6 && strncasecmp(v, "Bearer", 6) == 0 && (n == 6 || v[6] == ' ' || v[6] == '\t')) {
            const char *t = v + 6;
            while (t < v + n && (*t == ' ' || *t == '\t'))
                t++;
            if ((size_t)(t - buf) > UINT16_MAX || (size_t)(v + n - t) > UINT16_MAX) {
                bad = "Authorization too long";
                status = 431;
            } else {
                req->auth_off = (uint16_t)(t - buf); /* after the request line: never 0 */
                req->auth_len = (uint16_t)(v + n - t);
            }
        }
        hd->has_auth = true;
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
    *err_out = http_respond_error(status, req->minor, bad);
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
        *err_out = http_respond_error(413, req->minor, "the body is larger than --max-packet-size");
        return -1;
    }
    if (hd->clen > REQUEST_MAX - head) {
        *err_out = http_respond_error(413, req->minor, "the request is larger than 4 GiB");
        return -1;
    }
    if (req->minor == 1 && !hd->host.count) {
        *err_out = http_respond_error(400, req->minor, "an HTTP/1.1 request needs a Host header");
        return -1;
    }
    if (hd->host.count && !gm_http_host_valid(hd->host.v, hd->host.n)) {
        *err_out = http_respond_error(400, req->minor, "bad Host header");
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
    /* a refusal closes the connection: only the thread's budget applies */
    gm_log_peer(NULL, NULL, 0, GM_LOG_WARNING, "http: refused %s /%s: %s", method, path, why);
    req->kind = GM_FE_SERVE;
    req->flags |= HTTP_F_REFUSED;
    req->path_off = (uint16_t)(bad->line - buf);
    req->path_len = (uint16_t)n;
}

/* frontend.h's parse(): a request, or 0 for more bytes, or -1 with the
   error response; the connection's state is reset for the request. */
long
http_parse(void *st, const char *buf, size_t len, uint32_t max_body, struct gm_fe_req *req, uint64_t *need,
           struct gm_fe_output *err_out)
{
    struct http_conn *h = st;
    const char *end = head_end(buf, len);
    if (!end) {
        if (len >= HEAD_MAX) {
            *err_out = http_respond_error(431, 1, "the request head is larger than 64 KiB");
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
        *err_out = http_respond_error(405, req->minor, "HEAD cannot submit a job");
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
    h->body.len = 0;
    h->body.failed = false;
    h->handle[0] = '\0';
    return (long)(head + hd.clen);
}
