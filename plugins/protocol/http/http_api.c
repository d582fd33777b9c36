/*
 * plugins/protocol/http/http_api.c: what the API's routes share
 * (http_serve.c, http_lifecycle.c): query parameters, a request's path, a
 * job's names in JSON, JSON and text answers, and the gate every action
 * (a POST that changes the server's state) passes, http_action_refused.
 *
 * Pure functions with no state; run on the dispatcher thread, in serve().
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/protocol/http/http_int.h"

bool
http_param(const char *q, size_t qlen, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);
    const char *p = q, *end = q + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            http_pct_decode(p + nlen + 1, (size_t)(e - p - nlen - 1), out, outlen, true);
            return true;
        }
        p = e + 1;
    }
    return false;
}

uint64_t
http_param_u64(const char *q, size_t qlen, const char *name, uint64_t dflt, uint64_t max)
{
    char v[32];
    if (!http_param(q, qlen, name, v, sizeof v) || !*v)
        return dflt;
    char *e;
    unsigned long long x = strtoull(v, &e, 10);
    if (*e)
        return dflt;
    return x > max ? max : x;
}

void
http_json_job_names(struct gm_bytes *w, const char *handle, size_t handle_len, const char *function,
                    size_t function_len, const char *unique, size_t unique_len)
{
    gm_bytes_str(w, "{\"handle\":");
    http_json_str(w, handle, handle_len);
    gm_bytes_str(w, ",\"function\":");
    http_json_str(w, function, function_len);
    gm_bytes_str(w, ",\"unique\":");
    http_json_str(w, unique, unique_len);
}

bool
http_path_is(const char *req, const struct gm_fe_req *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(req + r->path_off, p, r->path_len) == 0;
}

struct gm_fe_output
http_serve_bytes(int status, const struct gm_fe_req *r, const char *type, const char *extra, struct gm_bytes *w)
{
    return http_respond_take(status, r->minor, (r->flags & GM_FE_KEEP_ALIVE) != 0, (r->flags & GM_FE_HEAD) != 0,
                             type, extra, w);
}

struct gm_fe_output
http_serve_text(int status, const struct gm_fe_req *r, const char *extra, const char *e)
{
    return http_respond(status, r->minor, (r->flags & GM_FE_KEEP_ALIVE) != 0, (r->flags & GM_FE_HEAD) != 0,
                        "application/json", extra, e, strlen(e));
}

struct gm_fe_output
http_serve_json(const struct gm_fe_req *r, struct gm_bytes *w, const char *more)
{
    if (w->failed) {
        free(w->b);
        return http_respond_error(500, r->minor, "out of memory");
    }
    char extra[256];
    snprintf(extra, sizeof extra, "Cache-Control: no-cache\r\n%s", more ? more : "");
    return http_serve_bytes(200, r, "application/json", extra, w);
}

struct gm_fe_output
http_permission_refused(const struct gm_fe_req *r, const struct gm_view_refusal *why)
{
    if (!why->by_acl)
        return http_serve_text(403, r, NULL,
                               "{\"error\":\"actions are accepted only from this host "
                               "(see --http-allow-remote-actions)\"}\n");
    struct gm_bytes w = {0};
    gm_bytes_str(&w, "{\"error\":\"permission denied\",\"identity\":");
    http_json_cstr(&w, why->identity);
    gm_bytes_str(&w, ",\"permission\":");
    http_json_cstr(&w, why->permission);
    gm_bytes_str(&w, "}\n");
    return http_serve_bytes(403, r, "application/json", NULL, &w);
}

bool
http_action_refused(const struct gm_fe_req *r, const struct gm_state_view *v, struct gm_fe_output *out)
{
    struct gm_view_refusal why;
    if (!(r->flags & GM_FE_POST))
        *out = http_serve_text(405, r, "Allow: POST\r\n", "{\"error\":\"use POST\"}\n");
    else if (!v->permitted(v->d, GM_VIEW_ACT, &why))
        *out = http_permission_refused(r, &why);
    else
        return false;
    return true;
}
