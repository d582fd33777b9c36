/*
 * plugins/protocol/http/http_serve.c: the HTTP front-end's serve(): the
 * requests that are not job submissions, answered from the dispatcher's
 * state view.
 *
 * Routes: "/" (and "/index.html") the monitor page; "/favicon.ico" (none);
 * "/health"; "/metrics"; "/api/status", "/api/workers", "/api/jobs"
 * (?function= &state= &offset= &limit=); POST "/api/jobs/cancel"
 * (handle=; the gate every action passes is http_action_refused, in
 * http_api.c); the job lifecycle's routes (http_lifecycle.c); any other
 * "/api..." is 404.
 *
 * Who may: "/health" and "/favicon.ico" anyone; every other page needs
 * the view's permission to read (with an ACL file, admin-read), and every
 * action the permission to act (admin; without an ACL file, from this
 * host unless --http-allow-remote-actions); a refusal is a 403 whose JSON
 * says who asked and what it lacks.  Anything else is "/<function>", a job submission,
 * which parse() (http_parse.c) does not send here.  A request the Host or
 * Origin rules refused (HTTP_F_REFUSED) is answered 403 here.
 *
 * A page built from the view holds at most --max-output-size (serve()'s
 * max_response): its lists (functions, workers, jobs) end where the next
 * item would pass it, and say so ("truncated"; /metrics:
 * gearman_metrics_truncated), so one request costs at most that much.
 *
 * Runs on the dispatcher thread: it only reads the view it is given (and
 * cancels through it), and keeps no state.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/protocol/http/hosts.h"
#include "plugins/protocol/http/http_int.h"

extern const unsigned char gm_monitor_page[];
extern const size_t gm_monitor_page_len;

/* ------------------------------------------------------------------ */
/* The workers' and jobs' JSON                                         */
/* ------------------------------------------------------------------ */

/* A worker's object in the "workers" array of /api/workers (a list of
   the page). */
static void
add_worker_json(void *arg, const struct gm_view_worker *wk)
{
    struct http_list *l = arg;
    struct gm_bytes *w = l->w;
    if (!http_item_begin(l))
        return;
    http_json_sep(w);
    http_fmt(w, "{\"fd\":%d,\"address\":", wk->fd);
    http_json_cstr(w, wk->addr);
    http_fmt(w, ",\"port\":%u,\"client_id\":", wk->port);
    http_json_cstr(w, wk->client_id);
    gm_bytes_str(w, ",\"identity\":");
    http_json_cstr(w, wk->identity);
    gm_bytes_str(w, ",\"functions\":[");
    for (uint32_t i = 0; i < wk->nfunctions; i++) {
        if (i)
            gm_bytes_str(w, ",");
        http_json_cstr(w, wk->functions[i]);
    }
    gm_bytes_str(w, "],\"current_job\":");
    if (wk->current_job)
        http_json_cstr(w, wk->current_job);
    else
        gm_bytes_str(w, "null");
    http_fmt(w, ",\"running\":%u,\"sleeping\":%s}", wk->running, wk->sleeping ? "true" : "false");
    http_item_end(l);
}

/* A job's object in the "jobs" array of /api/jobs (a list of the page). */
static void
add_job_json(void *arg, const struct gm_view_job *j)
{
    struct http_list *l = arg;
    struct gm_bytes *w = l->w;
    if (!http_item_begin(l))
        return;
    http_json_sep(w);
    http_json_job_names(w, j->handle, strlen(j->handle), j->function, strlen(j->function), j->unique, j->unique_len);
    http_fmt(w, ",\"priority\":\"%s\",\"state\":\"%s\",\"age_s\":%.3f,\"run_at\":%lld,\"retries\":%u,"
                "\"clients\":%u,\"background\":%s,\"cancelled\":%s}",
             http_prio_name[j->priority % 3], j->state, j->age_ms / 1000.0, (long long)j->run_at, j->retries,
             j->clients, j->background ? "true" : "false", j->cancelled ? "true" : "false");
    http_item_end(l);
}

/* ------------------------------------------------------------------ */
/* Routes                                                              */
/* ------------------------------------------------------------------ */

/* The 403 for a request parse() refused (its path is the refused header
   line); the connection closes after it. */
static struct gm_fe_output
refusal(const char *request, const struct gm_fe_req *r)
{
    char why[400], body[512];
    gm_http_refusal_text(request + r->path_off, r->path_len, why, sizeof why);
    int n = snprintf(body, sizeof body, "403 Forbidden: %s\n", why);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    return http_respond(403, r->minor, false, (r->flags & GM_FE_HEAD) != 0, "text/plain; charset=utf-8", NULL,
                        body, len);
}

/* /health: 200 when the server can take jobs (its queue backend is
   usable, and with --ha it is the active server), else 503; with --ha its
   role too. */
static struct gm_fe_output
serve_health(const struct gm_fe_req *r, const struct gm_state_view *v)
{
    struct gm_bytes w = {0};
    struct gm_view_server s;
    v->server(v->d, &s);
    /* a view without a role (NULL) is a server without --ha */
    bool standby = s.ha_role && strcmp(s.ha_role, "standby") == 0;
    bool ready = s.queue_healthy && !standby;
    http_fmt(&w, "{\"live\":true,\"ready\":%s,\"status\":\"%s\"", ready ? "true" : "false",
             ready              ? "ok"
             : standby          ? "standby: not holding the queue lock"
             : s.queue_stalled  ? "queue backend not answering"
                                : "queue backend unavailable");
    if (s.ha_role && strcmp(s.ha_role, "standalone") != 0) {
        http_fmt(&w, ",\"role\":");
        http_json_cstr(&w, s.ha_role);
    }
    http_fmt(&w, ",\"queue\":{\"backend\":");
    http_json_cstr(&w, s.queue_backend);
    http_fmt(&w, ",\"healthy\":%s}}\n", s.queue_healthy ? "true" : "false");
    return http_serve_bytes(ready ? 200 : 503, r, "application/json", NULL, &w);
}

/* /api/jobs's body: the jobs the query (q[0..qlen)) asks for.  False
   (nothing written) when its after= names no job. */
static bool
serve_jobs(struct gm_bytes *w, const char *q, size_t qlen, const struct gm_state_view *v)
{
    char fn[512], state[32], after[GM_HANDLE_MAX + 1];
    struct gm_view_jobs_query jq = {0};
    if (http_param(q, qlen, "function", fn, sizeof fn) && *fn) {
        jq.function = fn;
        jq.function_len = strlen(fn);
    }
    if (http_param(q, qlen, "state", state, sizeof state))
        jq.state = state;
    if (http_param(q, qlen, "after", after, sizeof after) && *after) {
        jq.after = after;
        jq.after_len = strlen(after);
    }
    jq.offset = http_param_u64(q, qlen, "offset", 0, GM_VIEW_JOBS_OFFSET_MAX);
    jq.limit = http_param_u64(q, qlen, "limit", 100, GM_VIEW_JOBS_LIMIT_MAX);
    gm_bytes_str(w, "{\"jobs\":[");
    struct http_list l = {.w = w};
    struct gm_view_jobs_result res;
    v->jobs(v->d, &jq, &res, add_job_json, &l);
    if (res.after_unknown) {
        w->len = 0;
        return false;
    }
    http_fmt(w, "],\"total\":%llu,\"offset\":%llu,\"limit\":%llu,\"truncated\":%s,\"partial\":%s",
             (unsigned long long)res.total, (unsigned long long)jq.offset, (unsigned long long)jq.limit,
             l.cut ? "true" : "false", res.partial ? "true" : "false");
    if (res.partial) {
        gm_bytes_str(w, ",\"next_after\":");
        http_json_cstr(w, res.next);
        http_fmt(w, ",\"next_offset\":%llu", (unsigned long long)res.next_offset);
    }
    gm_bytes_str(w, "}\n");
    return true;
}

/* POST /api/jobs/cancel: cancels the job handle= names (in the query or
   the form body). */
static struct gm_fe_output
serve_cancel(const char *request, const struct gm_fe_req *r, const struct gm_state_view *v)
{
    struct gm_fe_output refused;
    if (http_action_refused(r, v, &refused))
        return refused;
    char handle[GM_HANDLE_MAX + 1];
    if (!http_param(request + r->query_off, r->query_len, "handle", handle, sizeof handle) &&
        !http_param(request + r->body_off, r->body_len, "handle", handle, sizeof handle))
        return http_serve_text(400, r, NULL, "{\"error\":\"give handle=<job handle>\"}\n");
    struct gm_bytes w = {0};
    if (v->cancel(v->d, handle, strlen(handle)) < 0) {
        gm_bytes_str(&w, "{\"error\":\"unknown job\",\"handle\":");
        http_json_cstr(&w, handle);
        gm_bytes_str(&w, "}\n");
        return http_serve_bytes(404, r, "application/json", NULL, &w);
    }
    gm_bytes_str(&w, "{\"ok\":true,\"cancelled\":");
    http_json_cstr(&w, handle);
    gm_bytes_str(&w, "}\n");
    return http_serve_json(r, &w, NULL);
}

/* The paths under api/; w is the page, its max set. */
static struct gm_fe_output
serve_api(const char *request, const struct gm_fe_req *r, struct gm_bytes w, const struct gm_state_view *v)
{
    struct gm_fe_output out;
    if (http_path_is(request, r, "api/status")) {
        http_status_json(&w, v);
    } else if (http_path_is(request, r, "api/workers")) {
        gm_bytes_str(&w, "{\"workers\":[");
        struct http_list l = {.w = &w};
        v->each_worker(v->d, add_worker_json, &l);
        http_fmt(&w, "],\"truncated\":%s}\n", l.cut ? "true" : "false");
    } else if (http_path_is(request, r, "api/jobs")) {
        if (!serve_jobs(&w, request + r->query_off, r->query_len, v)) {
            free(w.b);
            return http_serve_text(404, r, NULL,
                                   "{\"error\":\"after= names no job (of that function): it may have ended\"}\n");
        }
    } else if (http_path_is(request, r, "api/jobs/cancel")) {
        return serve_cancel(request, r, v);
    } else if (http_lifecycle_serve(request, r, &w, v, &out)) {
        return out;
    } else {
        return http_serve_text(404, r, NULL, "{\"error\":\"not found\"}\n");
    }
    return http_serve_json(r, &w, NULL);
}

/* frontend.h's serve(). */
struct gm_fe_output
http_serve(const char *request, const struct gm_fe_req *r, size_t max_response, const struct gm_state_view *v)
{
    bool keep = (r->flags & GM_FE_KEEP_ALIVE) != 0, head = (r->flags & GM_FE_HEAD) != 0;
    /* a page built from the view: at most max_response, room for its lists */
    struct gm_bytes page = {0};
    page.max = max_response && max_response < RESULT_MAX ? max_response : RESULT_MAX;
    if (page.max < 2 * PAGE_ROOM)
        page.max = 2 * PAGE_ROOM;
    if (r->flags & HTTP_F_REFUSED)
        return refusal(request, r);
    /* open to all: the health check (load balancers, orchestrators) and
       the icon; everything else shows the server's state: admin-read */
    if (http_path_is(request, r, "favicon.ico"))
        return http_respond(204, r->minor, keep, head, NULL, "Cache-Control: max-age=86400\r\n", "", 0);
    if (http_path_is(request, r, "health"))
        return serve_health(r, v);
    struct gm_view_refusal why;
    if (!v->permitted(v->d, GM_VIEW_READ, &why))
        return http_permission_refused(r, &why);
    if (http_path_is(request, r, "") || http_path_is(request, r, "index.html")) {
        if (r->flags & GM_FE_POST)
            return http_respond(405, r->minor, keep, false, "text/plain", "Allow: GET, HEAD\r\n", "405\n", 4);
        return http_respond(200, r->minor, keep, head, "text/html; charset=utf-8", "Cache-Control: no-cache\r\n",
                            gm_monitor_page, gm_monitor_page_len);
    }
    if (http_path_is(request, r, "metrics")) {
        http_metrics(&page, v);
        return http_serve_bytes(200, r, "text/plain; version=0.0.4; charset=utf-8", NULL, &page);
    }
    return serve_api(request, r, page, v);
}

