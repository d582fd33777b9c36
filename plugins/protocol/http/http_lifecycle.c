/*
 * plugins/protocol/http/http_lifecycle.c: the job lifecycle over HTTP
 * (docs/lifecycle.md, docs/monitoring.md): what the admin commands `show
 * dead`, `show policies`, `show job`, `retry dead`, `discard dead`,
 * `pause`, `resume` and `purge` do, as
 *
 *   GET  /api/dead (?function= &offset= &limit=)   dead letters, oldest first
 *   GET  /api/policies                              functions with a policy or paused
 *   GET  /api/jobs/HANDLE                           a job's (or dead letter's) state
 *   POST /api/dead/HANDLE/retry | /discard
 *   POST /api/functions/FUNC/pause | /resume | /purge
 *
 * HANDLE and FUNC are percent-decoded path segments.  Everything is read
 * and done through the dispatcher's state view, whose callbacks call what
 * the admin commands call (dispatch/lifecycle.c): both ways do the same.
 * The actions pass the gate POST /api/jobs/cancel passes
 * (http_action_refused); parse() applied the Host and Origin rules.
 *
 * The two lists are bare JSON arrays, kept within the page's limit as the
 * other lists are (struct http_list): how many matched and whether the
 * array was cut are in the headers X-Gearman-Total and
 * X-Gearman-Truncated.
 *
 * Runs on the dispatcher thread, inside serve() (http_serve.c); keeps no
 * state.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/protocol/http/http_int.h"

/* The longest function name a path may give: one longer is refused as
   the server refuses it anywhere. */
#define NAME_MAX_BYTES GM_FUNCTION_NAME_MAX

/* The response of a list: the array in *w (its items added through l)
   closed, with how many matched in all. */
static struct gm_fe_output
serve_list(const struct gm_fe_req *r, struct gm_bytes *w, const struct http_list *l, uint64_t total)
{
    gm_bytes_str(w, "]\n");
    char more[96];
    snprintf(more, sizeof more, "X-Gearman-Total: %llu\r\nX-Gearman-Truncated: %s\r\n", (unsigned long long)total,
             l->cut ? "true" : "false");
    return http_serve_json(r, w, more);
}

/* A JSON error {"error": why, key: value} with status. */
static struct gm_fe_output
serve_error(int status, const struct gm_fe_req *r, const char *why, const char *key, const char *value,
            size_t value_len)
{
    struct gm_bytes w = {0};
    gm_bytes_str(&w, "{\"error\":");
    http_json_cstr(&w, why);
    http_fmt(&w, ",\"%s\":", key);
    http_json_str(&w, value, value_len);
    gm_bytes_str(&w, "}\n");
    return http_serve_bytes(status, r, "application/json", NULL, &w);
}

/* ---- GET /api/dead ---- */

/* A dead letter's object in the array (a list of the page). */
static void
add_dead_json(void *arg, const struct gm_view_dead *x)
{
    struct http_list *l = arg;
    struct gm_bytes *w = l->w;
    if (!http_item_begin(l))
        return;
    http_json_sep(w);
    http_json_job_names(w, x->handle, strlen(x->handle), x->function, strlen(x->function), x->unique,
                        x->unique_len);
    http_fmt(w, ",\"attempts\":%u,\"died_at\":%lld,\"reason\":", x->attempts, (long long)x->died_at);
    http_json_cstr(w, x->reason);
    if (strcmp(x->reason, "exception") == 0) {
        gm_bytes_str(w, ",\"exception\":");
        http_json_str(w, x->exception ? x->exception : "", x->exception_len);
    }
    gm_bytes_str(w, "}");
    http_item_end(l);
}

static struct gm_fe_output
serve_dead(const char *request, const struct gm_fe_req *r, struct gm_bytes *w, const struct gm_state_view *v)
{
    const char *q = request + r->query_off;
    char fn[NAME_MAX_BYTES + 1];
    struct gm_view_dead_query dq = {0};
    if (http_param(q, r->query_len, "function", fn, sizeof fn) && *fn) {
        dq.function = fn;
        dq.function_len = strlen(fn);
    }
    dq.offset = http_param_u64(q, r->query_len, "offset", 0, GM_VIEW_JOBS_OFFSET_MAX);
    dq.limit = http_param_u64(q, r->query_len, "limit", 100, GM_VIEW_JOBS_LIMIT_MAX);
    gm_bytes_str(w, "[");
    struct http_list l = {.w = w};
    uint64_t total = 0;
    v->dead(v->d, &dq, &total, add_dead_json, &l);
    return serve_list(r, w, &l, total);
}

/* ---- GET /api/policies ---- */

struct policy_list {
    struct http_list l;
    uint64_t total;
};

/* A function's object in the array, if `show policies` lists it. */
static void
add_policy_json(void *arg, const struct gm_view_function *f)
{
    struct policy_list *pl = arg;
    if (!f->policy || !f->policy->listed)
        return;
    pl->total++;
    struct gm_bytes *w = pl->l.w;
    if (!http_item_begin(&pl->l))
        return;
    http_json_sep(w);
    gm_bytes_str(w, "{\"function\":");
    http_json_str(w, f->name, f->name_len);
    gm_bytes_str(w, ",");
    http_policy_json(w, f->policy);
    gm_bytes_str(w, "}");
    http_item_end(&pl->l);
}

static struct gm_fe_output
serve_policies(const struct gm_fe_req *r, struct gm_bytes *w, const struct gm_state_view *v)
{
    gm_bytes_str(w, "[");
    struct policy_list pl = {.l = {.w = w}};
    v->each_function(v->d, add_policy_json, &pl);
    return serve_list(r, w, &pl.l, pl.total);
}

/* ---- GET /api/jobs/HANDLE ---- */

static struct gm_fe_output
serve_job(const struct gm_fe_req *r, const char *seg, size_t seg_len, struct gm_bytes *w,
          const struct gm_state_view *v)
{
    char handle[GM_HANDLE_MAX + 1];
    long n = http_pct_decode(seg, seg_len, handle, sizeof handle, false);
    struct gm_view_job_state js;
    if (n <= 0 || v->job(v->d, handle, (size_t)n, &js) < 0)
        return serve_error(404, r, "unknown job", "handle", handle, n < 0 ? strlen(handle) : (size_t)n);
    http_json_job_names(w, js.handle, js.handle_len, js.function, js.function_len, js.unique, js.unique_len);
    gm_bytes_str(w, ",\"state\":");
    http_json_cstr(w, js.state);
    http_fmt(w, ",\"attempts\":%u,\"result_b64\":", js.attempts);
    http_json_base64(w, js.result, js.result ? js.result_len : 0);
    gm_bytes_str(w, "}\n");
    return http_serve_json(r, w, NULL);
}

/* ---- the actions ---- */

/* POST /api/dead/HANDLE/retry or /discard. */
static struct gm_fe_output
serve_dead_action(const struct gm_fe_req *r, const char *seg, size_t seg_len, bool retry,
                  const struct gm_state_view *v)
{
    char handle[GM_HANDLE_MAX + 1];
    long n = http_pct_decode(seg, seg_len, handle, sizeof handle, false);
    if (n <= 0 || v->dead_action(v->d, handle, (size_t)n, retry) < 0)
        return serve_error(404, r, "no dead letter has that handle", "handle", handle,
                           n < 0 ? strlen(handle) : (size_t)n);
    struct gm_bytes w = {0};
    gm_bytes_str(&w, retry ? "{\"ok\":true,\"retried\":" : "{\"ok\":true,\"discarded\":");
    http_json_str(&w, handle, (size_t)n);
    gm_bytes_str(&w, "}\n");
    return http_serve_json(r, &w, NULL);
}

/* POST /api/functions/FUNC/pause, /resume or /purge. */
static struct gm_fe_output
serve_function_action(const struct gm_fe_req *r, const char *seg, size_t seg_len, enum gm_view_function_action what,
                      const struct gm_state_view *v)
{
    char name[NAME_MAX_BYTES + 1];
    long n = http_pct_decode(seg, seg_len, name, sizeof name, false);
    if (n <= 0)
        return serve_error(400, r, "not a function name the server takes", "function", name,
                           n < 0 ? strlen(name) : 0);
    uint64_t purged = 0;
    int err = v->function_action(v->d, name, (size_t)n, what, &purged);
    if (err == GM_VIEW_UNKNOWN)
        return serve_error(404, r, "no such function", "function", name, (size_t)n);
    if (err == GM_VIEW_BAD_NAME)
        return serve_error(400, r, "not a function name the server takes", "function", name, (size_t)n);
    if (err)
        return http_respond_error(500, r->minor, "out of memory");
    struct gm_bytes w = {0};
    gm_bytes_str(&w, "{\"ok\":true,\"function\":");
    http_json_str(&w, name, (size_t)n);
    if (what == GM_VIEW_PURGE)
        http_fmt(&w, ",\"purged\":%llu}\n", (unsigned long long)purged);
    else
        http_fmt(&w, ",\"paused\":%s}\n", what == GM_VIEW_PAUSE ? "true" : "false");
    return http_serve_json(r, &w, NULL);
}

/* The actions of a path prefix: the word after the segment's last '/'. */
struct action {
    const char *word;
    int what;
};

static const struct action dead_actions[] = {{"retry", 1}, {"discard", 0}, {NULL, 0}};
static const struct action function_actions[] = {
    {"pause", GM_VIEW_PAUSE}, {"resume", GM_VIEW_RESUME}, {"purge", GM_VIEW_PURGE}, {NULL, 0}};

/* If path[0..len) is prefix, a segment, '/' and one of the actions' words:
   the segment in *seg, *seg_len and the action; else NULL. */
static const struct action *
action_path(const char *path, size_t len, const char *prefix, const struct action *acts, const char **seg,
            size_t *seg_len)
{
    size_t plen = strlen(prefix);
    if (len <= plen || memcmp(path, prefix, plen) != 0)
        return NULL;
    const char *rest = path + plen, *end = path + len, *slash = NULL;
    for (const char *c = rest; c < end; c++)
        if (*c == '/')
            slash = c;
    if (!slash || slash == rest)
        return NULL;
    for (const struct action *a = acts; a->word; a++) {
        if ((size_t)(end - slash - 1) == strlen(a->word) && memcmp(slash + 1, a->word, strlen(a->word)) == 0) {
            *seg = rest;
            *seg_len = (size_t)(slash - rest);
            return a;
        }
    }
    return NULL;
}

bool
http_lifecycle_serve(const char *request, const struct gm_fe_req *r, struct gm_bytes *w, const struct gm_state_view *v,
                     struct gm_fe_output *out)
{
    const char *path = request + r->path_off;
    size_t len = r->path_len;
    const char *seg;
    size_t seg_len;
    const struct action *a;
    if (http_path_is(request, r, "api/dead")) {
        *out = serve_dead(request, r, w, v);
    } else if (http_path_is(request, r, "api/policies")) {
        *out = serve_policies(r, w, v);
    } else if ((a = action_path(path, len, "api/dead/", dead_actions, &seg, &seg_len))) {
        if (!http_action_refused(r, v, out))
            *out = serve_dead_action(r, seg, seg_len, a->what != 0, v);
    } else if ((a = action_path(path, len, "api/functions/", function_actions, &seg, &seg_len))) {
        if (!http_action_refused(r, v, out))
            *out = serve_function_action(r, seg, seg_len, (enum gm_view_function_action)a->what, v);
    } else if (len > 9 && memcmp(path, "api/jobs/", 9) == 0 && !memchr(path + 9, '/', len - 9)) {
        *out = serve_job(r, path + 9, len - 9, w, v);
    } else {
        return false;
    }
    free(w->b); /* the page, unless the answer took it */
    w->b = NULL;
    return true;
}
