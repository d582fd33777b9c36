/*
 * plugins/protocol/http/http_int.h: what the files of the HTTP front-end
 * share, internal to the plugin (others use http.h).
 *
 *   http.c        the gm_frontend vtable and a connection's state
 *   http_parse.c  cutting requests out of the bytes read (I/O thread)
 *   http_reply.c  a submitted job's reply packets into a response (I/O thread)
 *   http_serve.c  routes, the monitor page, JSON, health (dispatcher thread)
 *   http_lifecycle.c  the job lifecycle's views and actions: dead letters,
 *                 policies, a job's state (dispatcher thread)
 *   http_stats.c  the view's statistics in /api/status and /metrics
 *                 (dispatcher thread)
 *   http_resp.c   building responses and encoding text in them (pure; both)
 *   hosts.c       the Host and Origin rules (hosts.h)
 *
 * Nothing here is global state: every function works on what it is given.
 */
#ifndef GM_PLUGINS_HTTP_INT_H
#define GM_PLUGINS_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/proto/frontend.h"
#include "libgearman-server/proto/protocol.h"

/* The largest response (or request, head and body) a block holds: its
   capacity is 32 bits. */
#define WHOLE_MAX ((size_t)UINT32_MAX)
/* The joined result of a job, or a page built from the view: what fits
   in a response with its head. */
#define RESULT_MAX (WHOLE_MAX - 4096)
/* What a page keeps free after its lists for what follows them (the ends
   of its JSON, /metrics's family heads and last samples). */
#define PAGE_ROOM (16u << 10)

/* A request refused by the Host or Origin rules: parse() sends it to
   serve() as a page with this flag, its path pointing at the header line
   that was refused.  The bit is not one of frontend.h's flags. */
#define HTTP_F_REFUSED 0x80
_Static_assert((HTTP_F_REFUSED & (GM_FE_BACKGROUND | GM_FE_HIGH | GM_FE_LOW | GM_FE_HAS_UNIQUE |
                                  GM_FE_KEEP_ALIVE | GM_FE_POST | GM_FE_HEAD)) == 0,
               "HTTP_F_REFUSED collides with a frontend.h flag");

/* A connection's state, owned by its I/O thread: what parse() learnt of
   the request in progress, and the reply of its job as it comes
   (http_reply.c). */
struct http_conn {
    uint8_t minor;
    bool keep_alive, background, head_only;
    char handle[GM_HANDLE_MAX];
    /* WORK_DATA chunks joined, then WORK_COMPLETE's data; its max is what
       conn_new() was given (--max-output-size, or --max-packet-size if
       larger), at most RESULT_MAX: past it the request is answered 502 at
       once and the connection closes.  failed says memory was short: the
       answer is a 500 when the job ends. */
    struct gm_bytes body;
    /* Answered before its job ended (its result passed body.max): the
       job's later packets are ignored until the connection closes. */
    bool answered;
};

/* ---- http_resp.c: responses and the text in them ---- */

/* Appends printf-style text to w. */
void http_fmt(struct gm_bytes *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A JSON string of s[0..n) (or of the C string s; NULL: null): quoted,
   escaped, with U+FFFD for what is not UTF-8. */
void http_json_str(struct gm_bytes *w, const char *s, size_t n);
void http_json_cstr(struct gm_bytes *w, const char *s);

/* The comma before an object of a JSON array, unless it is the first
   (w does not end with one yet). */
void http_json_sep(struct gm_bytes *w);

/* A Prometheus label value of s[0..n): backslash, quote and newline
   escaped, U+FFFD for what is not UTF-8. */
void http_label(struct gm_bytes *w, const char *s, size_t n);

/* A JSON string of n bytes of data in base64 (RFC 4648, padded). */
void http_json_base64(struct gm_bytes *w, const void *data, size_t n);

/* Percent-decodes s[0..n) into out (outlen > 0), NUL-terminated; with
   form, '+' is a space (query parameters, form bodies), else itself (a
   path segment).  A '%' not followed by two hex digits is kept as it is.
   Returns the length decoded, or -1 if out is too small (it then holds
   what fit). */
long http_pct_decode(const char *s, size_t n, char *out, size_t outlen, bool form);

/* A list of a page (a JSON array, the functions of /metrics) kept within
   the page's limit, w->max (which must be set, and more than PAGE_ROOM):
   each item is added whole or not at all.  An item that takes the page
   past w->max - PAGE_ROOM (or fails for memory) is taken back, and the
   list ends there, cut: what one request costs is bounded by the limit,
   whatever the number and size of the items. */
struct http_list {
    struct gm_bytes *w;
    size_t mark;     /* w->len where the item being added starts */
    uint64_t shown;  /* items kept */
    bool cut;        /* an item did not fit: the rest are left out */
};

/* Starts an item: false once the list is cut (leave the item out). */
bool http_item_begin(struct http_list *l);

/* Ends the item started: kept, or taken back and the list cut. */
void http_item_end(struct http_list *l);

/* A whole response; extra = more header lines ("Name: value\r\n"...).
   One that does not fit (or memory short) becomes a 500 that closes. */
struct gm_fe_output http_respond(int status, uint8_t minor, bool keep_alive, bool head_only, const char *type,
                                 const char *extra, const void *body, size_t len);

/* The same with the body built in *body, whose block is taken: the head
   is written in front of the body in that block, so a large body is not
   copied, and *body is left empty (its max kept).  A body whose building
   failed gives the 500. */
struct gm_fe_output http_respond_take(int status, uint8_t minor, bool keep_alive, bool head_only, const char *type,
                                      const char *extra, struct gm_bytes *body);

/* A plain-text error response ("<status> <reason>: why") that closes. */
struct gm_fe_output http_respond_error(int status, uint8_t minor, const char *why);

/* ---- the gm_frontend members (http.c's vtable) ---- */

/* http_parse.c */
long http_parse(void *st, const char *buf, size_t len, uint32_t max_body, struct gm_fe_req *req, uint64_t *need,
                struct gm_fe_output *err_out);

/* http_reply.c */
int http_on_packet(void *st, uint32_t type, const char *payload, uint32_t len, struct gm_fe_output *out);

/* http_serve.c */
struct gm_fe_output http_serve(const char *request, const struct gm_fe_req *r, size_t max_response,
                               const struct gm_state_view *v);

/* ---- http_api.c: what the routes of serve() share (dispatcher thread) ---- */

/* The value of the query (or form body) parameter name in q[0..qlen),
   percent-decoded into out (cut to outlen - 1 bytes); false if absent. */
bool http_param(const char *q, size_t qlen, const char *name, char *out, size_t outlen);

/* A whole-number parameter: dflt if absent, empty or not a number; at
   most max. */
uint64_t http_param_u64(const char *q, size_t qlen, const char *name, uint64_t dflt, uint64_t max);

/* A JSON answer of the API whose body is the short text e. */
struct gm_fe_output http_serve_text(int status, const struct gm_fe_req *r, const char *extra, const char *e);

/* A response of status whose body is what *w holds (its block taken),
   kept alive and HEAD as r asks. */
struct gm_fe_output http_serve_bytes(int status, const struct gm_fe_req *r, const char *type, const char *extra,
                                     struct gm_bytes *w);

/* The 200 of the API with the JSON in *w (taken), not cached, with the
   header lines more (or NULL); a 500 that closes if building it failed. */
struct gm_fe_output http_serve_json(const struct gm_fe_req *r, struct gm_bytes *w, const char *more);

/* Whether r, a request for an action (one that changes the server's
   state), is refused; if so *out is the answer: 405 unless it is a POST,
   403 unless the view permits the asker to act (with an ACL file its
   admin permission; without one, from this host unless
   --http-allow-remote-actions).  (The Host and Origin rules were applied
   by parse() to every POST already.) */
bool http_action_refused(const struct gm_fe_req *r, const struct gm_state_view *v, struct gm_fe_output *out);

/* The 403 of a request the view did not permit (why: its answer). */
struct gm_fe_output http_permission_refused(const struct gm_fe_req *r, const struct gm_view_refusal *why);

/* The start of a job's JSON object: {"handle":..,"function":..,"unique":..
   (the object left open). */
void http_json_job_names(struct gm_bytes *w, const char *handle, size_t handle_len, const char *function,
                         size_t function_len, const char *unique, size_t unique_len);

/* Whether the request's path (leading slashes stripped) is p. */
bool http_path_is(const char *req, const struct gm_fe_req *r, const char *p);

/* ---- http_lifecycle.c ---- */

/* The job lifecycle's routes (GET api/dead, api/policies, api/jobs/HANDLE;
   POST api/dead/HANDLE/retry|discard, api/functions/FUNC/pause|resume|
   purge): true with the answer in *out if r's path is one of them (the
   page *w is then taken or freed), else false and *w is untouched. */
bool http_lifecycle_serve(const char *request, const struct gm_fe_req *r, struct gm_bytes *w,
                          const struct gm_state_view *v, struct gm_fe_output *out);

/* ---- http_stats.c: the view's statistics (dispatcher thread) ---- */

/* The names of the priorities 0, 1, 2. */
extern const char *const http_prio_name[3];

/* A function's policy as the members "retries", "backoff", "max_backoff",
   "timeout", "concurrency", "paused" of a JSON object (the units of the
   admin `policy` command: ms, ms, s). */
void http_policy_json(struct gm_bytes *w, const struct gm_view_policy *p);

/* The body of /api/status: the server's statistics and the functions',
   as many functions as fit in w->max (set by the caller), "truncated"
   saying whether some were left out. */
void http_status_json(struct gm_bytes *w, const struct gm_state_view *v);

/* The body of /metrics (Prometheus text): the functions' samples for as
   many functions as fit in w->max (set by the caller), the same functions
   in every family; gearman_metrics_truncated says whether some were left
   out. */
void http_metrics(struct gm_bytes *w, const struct gm_state_view *v);

#endif /* GM_PLUGINS_HTTP_INT_H */
