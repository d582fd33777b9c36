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
 * A job is "/<function>" (GET, POST, PUT; headers X-Gearman-Unique,
 * X-Gearman-Background: true, X-Gearman-Priority: high|low), answered with
 * X-Gearman-Job-Handle and X-Gearman-Command as gearmand does; the other
 * routes are serve()'s (http_serve.c).  Every request's Host, and the
 * Origin of those that change state, are checked by the rules of hosts.c.
 *
 * This file owns the vtable and a connection's state, made and freed on
 * its I/O thread; the parts are parse() in http_parse.c, on_packet() in
 * http_reply.c, serve() in http_serve.c (with http_stats.c), and the
 * responses they build in http_resp.c; http_int.h is what they share.
 */
#include "config.h"

#include "plugins/protocol/http/http.h"

#include <stdlib.h>

#include "plugins/protocol/http/http_int.h"

static void *
http_conn_new(size_t max_reply)
{
    struct http_conn *h = calloc(1, sizeof *h);
    if (h)
        h->body.max = max_reply && max_reply < RESULT_MAX ? max_reply : RESULT_MAX;
    return h;
}

static void
http_conn_free(void *st)
{
    struct http_conn *h = st;
    if (h)
        free(h->body.b);
    free(h);
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
