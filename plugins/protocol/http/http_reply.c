/*
 * plugins/protocol/http/http_reply.c: the HTTP front-end's on_packet():
 * turns the reply packets of a connection's submitted job into its HTTP
 * response, as gearmand does (X-Gearman-Job-Handle, X-Gearman-Command).
 *
 * Runs on the connection's I/O thread and touches only that connection's
 * state (struct http_conn): a background job is answered at JOB_CREATED;
 * a foreground one joins its WORK_DATA chunks and WORK_COMPLETE's data
 * into the body, and is answered when it completes, fails or throws.  A
 * result that passes the body's limit (--max-output-size, or
 * --max-packet-size if larger: a worker that streams WORK_DATA and never
 * completes) is answered 502 at once, the connection closing after it;
 * the job goes on without this request.  An ERROR packet is a 400, or 503
 * for QUEUE_ERROR; the access rules' PERMISSION_DENIED is a 403 and
 * UNAUTHORIZED (a bearer token no line has) a 401, both with a JSON body.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/protocol/http/http_int.h"

/* Empties the body being joined (its block is freed: a connection keeps
   no block between jobs). */
static void
body_empty(struct http_conn *h)
{
    free(h->body.b);
    h->body.b = NULL;
    h->body.len = 0;
    h->body.failed = false;
}

/* The response to the job, with its handle and the reply's command: the
   body joined so far is sent (its block handed on, not copied), or, lost,
   a 500 that closes; the body is left empty. */
static struct gm_fe_output
job_response(struct http_conn *h, int status, const char *command, const char *extra)
{
    char headers[256];
    snprintf(headers, sizeof headers, "X-Gearman-Job-Handle: %s\r\nX-Gearman-Command: %s\r\n%s", h->handle,
             command, extra ? extra : "");
    if (h->body.failed) {
        static const char why[] = "500 Internal Server Error: the job's result is larger than 4 GiB "
                                  "or memory is short\n";
        body_empty(h);
        return http_respond(500, h->minor, false, false, "text/plain; charset=utf-8", headers, why, sizeof why - 1);
    }
    return http_respond_take(status, h->minor, h->keep_alive, false, "application/octet-stream", headers, &h->body);
}

/* Joins data[0..len) to the job's body.  Returns 0, or 1 with the 502
   that closes in *out if the body would pass its limit (the body is then
   freed and the job's later packets ignored). */
static int
join(struct http_conn *h, const char *command, const char *data, size_t len, struct gm_fe_output *out)
{
    if (len <= h->body.max - h->body.len) {
        gm_bytes_add(&h->body, data, len); /* memory short: failed, a 500 when the job ends */
        return 0;
    }
    char headers[256], why[320];
    snprintf(headers, sizeof headers, "X-Gearman-Job-Handle: %s\r\nX-Gearman-Command: %s\r\n", h->handle,
             command);
    int n = snprintf(why, sizeof why,
                     "502 Bad Gateway: the job's result passed %zu bytes, the most the server holds for one "
                     "response (--max-output-size, or --max-packet-size if larger)%s\n",
                     h->body.max, strcmp(command, "WORK_DATA") == 0 ? "; the job goes on without this request" : "");
    body_empty(h);
    h->answered = true;
    *out = http_respond(502, h->minor, false, false, "text/plain; charset=utf-8", headers, why,
                        n < 0 ? 0 : (size_t)n < sizeof why ? (size_t)n : sizeof why - 1);
    return 1;
}

/* Whether an ERROR packet's code (c[0..n)) is code. */
static bool
code_is(const char *c, size_t n, const char *code)
{
    return n == strlen(code) && memcmp(c, code, n) == 0;
}

/* frontend.h's on_packet(). */
int
http_on_packet(void *st, uint32_t type, const char *payload, uint32_t len, struct gm_fe_output *out)
{
    struct http_conn *h = st;
    if (h->answered)
        return 0;
    const char *nul = memchr(payload, '\0', len);
    const char *data = nul ? nul + 1 : payload + len;
    size_t dlen = (size_t)(payload + len - data);
    switch (type) {
    case GM_PKT_JOB_CREATED:
        snprintf(h->handle, sizeof h->handle, "%.*s", (int)(len < GM_HANDLE_MAX ? len : GM_HANDLE_MAX), payload);
        if (!h->background)
            return 0;
        body_empty(h);
        *out = job_response(h, 200, "JOB_CREATED", NULL);
        return 1;
    case GM_PKT_WORK_DATA:
        return join(h, "WORK_DATA", data, dlen, out);
    case GM_PKT_WORK_COMPLETE:
        if (join(h, "WORK_COMPLETE", data, dlen, out))
            return 1;
        *out = job_response(h, 200, "WORK_COMPLETE", NULL);
        return 1;
    case GM_PKT_WORK_FAIL:
        body_empty(h);
        *out = job_response(h, 200, "WORK_FAIL", NULL);
        return 1;
    case GM_PKT_WORK_EXCEPTION:
        body_empty(h);
        if (join(h, "WORK_EXCEPTION", data, dlen, out))
            return 1;
        *out = job_response(h, 200, "WORK_EXCEPTION", NULL);
        return 1;
    case GM_PKT_ERROR: {
        size_t clen = nul ? (size_t)(nul - payload) : len;
        bool unauth = code_is(payload, clen, "UNAUTHORIZED");
        if (unauth || code_is(payload, clen, "PERMISSION_DENIED")) {
            /* the access rules (docs/security.md): JSON, as the views' 403 */
            struct gm_bytes w = {0};
            gm_bytes_str(&w, unauth ? "{\"error\":\"unauthorized\",\"detail\":"
                                    : "{\"error\":\"permission denied\",\"detail\":");
            http_json_str(&w, data, dlen);
            gm_bytes_str(&w, "}\n");
            *out = http_respond_take(unauth ? 401 : 403, h->minor, h->keep_alive, h->head_only, "application/json",
                                     unauth ? "WWW-Authenticate: Bearer\r\n" : NULL, &w);
            return 1;
        }
        int status = code_is(payload, clen, "QUEUE_ERROR") ? 503 : 400;
        char extra[128];
        snprintf(extra, sizeof extra, "X-Gearman-Error: %.*s\r\n", (int)(clen < 64 ? clen : 64), payload);
        char body[320];
        int n = snprintf(body, sizeof body, "%.*s: %.*s\n", (int)(clen < 64 ? clen : 64), payload,
                         (int)(dlen < 200 ? dlen : 200), data);
        *out = http_respond(status, h->minor, h->keep_alive, false, "text/plain; charset=utf-8", extra, body,
                            (size_t)n);
        return 1;
    }
    default:
        return 0; /* WORK_STATUS, WORK_WARNING: nothing to show in a response */
    }
}
