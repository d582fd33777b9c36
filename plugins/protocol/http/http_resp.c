/*
 * plugins/protocol/http/http_resp.c: building the HTTP front-end's
 * responses (status line, headers, body) in a gm_bytes (block.h), a block
 * handed over when done, and the encoders of the text put in them: JSON
 * strings, Prometheus label values and base64, whatever bytes they are
 * given; and the percent-decoding of the text requests carry (query
 * parameters, form bodies, path segments).
 *
 * Also the lists of a page kept within its limit (struct http_list).
 *
 * Pure functions with no state: they run on the thread that calls them,
 * the I/O thread (parse errors, job replies) or the dispatcher (pages).
 */
#include "config.h"

#include "plugins/protocol/http/http_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
http_fmt(struct gm_bytes *w, const char *fmt, ...)
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

/* ------------------------------------------------------------------ */
/* Text: JSON strings and Prometheus label values                      */
/* ------------------------------------------------------------------ */

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

/* s[0..n) escaped for a JSON string (json) or a Prometheus label value:
   both escape backslash and quote; JSON writes other control bytes as
   \uXXXX and what is not UTF-8 as the escape \ufffd, a label escapes only
   newline and writes U+FFFD itself.  Linear and cheap: the bytes that stay
   as they are go to w in runs, one addition a run, and an escape is a few
   bytes written directly (no printf); a builder that has failed stops the
   walk. */
static void
escape(struct gm_bytes *w, const char *s, size_t n, bool json)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    const unsigned char *run = p; /* the bytes from run to p stay as they are */
    if (w->failed)
        return;
    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x80) {
            bool valid;
            size_t k = utf8_next(p, (size_t)(end - p), &valid);
            if (valid) {
                p += k;
                continue;
            }
            gm_bytes_add(w, run, (size_t)(p - run));
            gm_bytes_str(w, json ? "\\ufffd" : "\xef\xbf\xbd");
            run = p += k;
        } else if (c == '"' || c == '\\') {
            gm_bytes_add(w, run, (size_t)(p - run));
            gm_bytes_add(w, (const char[]){'\\', (char)c}, 2);
            run = ++p;
        } else if (json && c < 0x20) {
            gm_bytes_add(w, run, (size_t)(p - run));
            gm_bytes_add(w, (const char[]){'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]}, 6);
            run = ++p;
        } else if (!json && c == '\n') {
            gm_bytes_add(w, run, (size_t)(p - run));
            gm_bytes_add(w, "\\n", 2);
            run = ++p;
        } else {
            p++;
            continue;
        }
        if (w->failed)
            return;
    }
    gm_bytes_add(w, run, (size_t)(p - run));
}

void
http_json_str(struct gm_bytes *w, const char *s, size_t n)
{
    gm_bytes_add(w, "\"", 1);
    escape(w, s, n, true);
    gm_bytes_add(w, "\"", 1);
}

void
http_json_cstr(struct gm_bytes *w, const char *s)
{
    if (!s)
        gm_bytes_str(w, "null"); /* a view that has no value for it */
    else
        http_json_str(w, s, strlen(s));
}

void
http_json_sep(struct gm_bytes *w)
{
    if (w->len && w->b->data[w->len - 1] == '}')
        gm_bytes_str(w, ",");
}

void
http_label(struct gm_bytes *w, const char *s, size_t n)
{
    escape(w, s, n, false);
}

void
http_json_base64(struct gm_bytes *w, const void *data, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char quad[4];
    gm_bytes_str(w, "\"");
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        quad[0] = abc[v >> 18 & 63];
        quad[1] = abc[v >> 12 & 63];
        quad[2] = i + 1 < n ? abc[v >> 6 & 63] : '=';
        quad[3] = i + 2 < n ? abc[v & 63] : '=';
        gm_bytes_add(w, quad, 4);
    }
    gm_bytes_str(w, "\"");
}

/* The value of a hex digit (one isxdigit accepts). */
static int
hex_value(char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

long
http_pct_decode(const char *s, size_t n, char *out, size_t outlen, bool form)
{
    size_t o = 0;
    const char *end = s + n;
    for (; s < end; s++) {
        if (o + 1 >= outlen) {
            out[o] = '\0';
            return -1;
        }
        if (*s == '%' && end - s >= 3 && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
            out[o++] = (char)(hex_value(s[1]) << 4 | hex_value(s[2]));
            s += 2;
        } else {
            out[o++] = form && *s == '+' ? ' ' : *s;
        }
    }
    out[o] = '\0';
    return (long)o;
}

/* ------------------------------------------------------------------ */
/* Lists kept within a page's limit                                    */
/* ------------------------------------------------------------------ */

bool
http_item_begin(struct http_list *l)
{
    if (l->cut || l->w->failed)
        return false;
    l->mark = l->w->len;
    return true;
}

void
http_item_end(struct http_list *l)
{
    struct gm_bytes *w = l->w;
    size_t max = w->max ? w->max : UINT32_MAX;
    if (!w->failed && w->len <= max - PAGE_ROOM) {
        l->shown++;
        return;
    }
    /* the builder's block is intact up to mark: a failed addition (past
       w->max, or memory) adds nothing */
    w->len = l->mark;
    w->failed = false;
    l->cut = true;
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
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The status line and headers of a response whose body is len bytes. */
static void
head(struct gm_bytes *w, int status, uint8_t minor, bool keep_alive, const char *type, const char *extra,
     size_t len)
{
    http_fmt(w, "HTTP/1.%u %d %s\r\n", minor, status, reason(status));
    if (extra)
        gm_bytes_str(w, extra);
    if (type)
        http_fmt(w, "Content-Type: %s\r\n", type);
    http_fmt(w, "Content-Length: %zu\r\nServer: gearmand-c/%s\r\nConnection: %s\r\n\r\n", len,
             PACKAGE_VERSION, keep_alive ? "keep-alive" : "close");
}

/* The whole response in *w handed over, or, if building it failed, the
   500 that closes (its block freed). */
static struct gm_fe_output
finish(struct gm_bytes *w, int status, uint8_t minor, bool keep_alive)
{
    struct gm_fe_output o = {0};
    if (w->failed) {
        free(w->b);
        if (status == 500)
            return o; /* nothing left to say */
        static const char why[] = "500 Internal Server Error: the response is too large or memory is short\n";
        return http_respond(500, minor, false, false, "text/plain; charset=utf-8", NULL, why, sizeof why - 1);
    }
    o.blk = w->b;
    o.len = w->len;
    o.close = !keep_alive;
    return o;
}

struct gm_fe_output
http_respond(int status, uint8_t minor, bool keep_alive, bool head_only, const char *type, const char *extra,
             const void *body, size_t len)
{
    struct gm_bytes w = {0};
    head(&w, status, minor, keep_alive, type, extra, len);
    if (!head_only && len)
        gm_bytes_add(&w, body, len);
    return finish(&w, status, minor, keep_alive);
}

struct gm_fe_output
http_respond_take(int status, uint8_t minor, bool keep_alive, bool head_only, const char *type,
                  const char *extra, struct gm_bytes *body)
{
    struct gm_bytes b = *body, w = {0};
    body->b = NULL;
    body->len = 0;
    body->failed = false;
    if (b.failed)
        return finish(&b, status, minor, keep_alive);
    head(&w, status, minor, keep_alive, type, extra, b.len);
    if (head_only || !b.len || w.failed) {
        free(b.b);
        return finish(&w, status, minor, keep_alive);
    }
    /* the head goes in front of the body, in the body's block: grown to
       exactly what it needs, the bytes moved up, none copied elsewhere */
    size_t need = w.len + b.len;
    if (need > UINT32_MAX || !gm_block_grow(&b.b, need, 0, need)) {
        free(w.b);
        b.failed = true;
        return finish(&b, status, minor, keep_alive);
    }
    memmove(b.b->data + w.len, b.b->data, b.len);
    memcpy(b.b->data, w.b->data, w.len);
    b.len = need;
    free(w.b);
    return finish(&b, status, minor, keep_alive);
}

struct gm_fe_output
http_respond_error(int status, uint8_t minor, const char *why)
{
    char body[512];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, reason(status), why);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    return http_respond(status, minor, false, false, "text/plain; charset=utf-8", NULL, body, len);
}
