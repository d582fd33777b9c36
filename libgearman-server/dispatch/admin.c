/*
 * admin.c: the admin text commands (dispatcher side).
 *
 * Runs on the dispatcher thread, which owns the state the commands read.
 * Each reply is built whole in one block and queued as one message, so it
 * leaves in one burst (gearadmin stops reading after 5 ms of silence).
 * Formats are gearmand 1.1.20's byte for byte, including its mix of "\n"
 * and "\r\n" and the exact ERR strings; see the reference, section 3.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/dispatch/handlers.h"
#include "libgearman-server/base/log.h"

static void
reply_u64(struct gm_bytes *r, uint64_t v)
{
    char buf[20];
    gm_bytes_add(r, buf, gm_fmt_u64(buf, v));
}

static void
reply_send(struct gm_dispatcher *d, struct gm_peer *p, struct gm_bytes *r)
{
    if (r->failed || !r->b) {
        free(r->b);
        gm_disp_send_bytes(d, p->id, "ERR UNKNOWN_ERROR\r\n", 19);
        return;
    }
    gm_disp_send_block(d, p->id, r->b, r->len);
}

static void
send_str(struct gm_dispatcher *d, struct gm_peer *p, const char *s)
{
    gm_disp_send_bytes(d, p->id, s, strlen(s));
}

/* The words of the line, as (pointer, length). */
struct words {
    unsigned n;
    const char *w[GM_ADMIN_MAX_WORDS];
    size_t len[GM_ADMIN_MAX_WORDS];
    bool more;
};

static bool
word_is(const struct words *w, unsigned i, const char *s)
{
    return i < w->n && w->len[i] == strlen(s) && strncasecmp(w->w[i], s, w->len[i]) == 0;
}

/* gearmand's atoi: leading digits, junk reads as 0. */
static long
word_atol(const struct words *w, unsigned i)
{
    char buf[32];
    size_t n = w->len[i] < sizeof buf - 1 ? w->len[i] : sizeof buf - 1;
    memcpy(buf, w->w[i], n);
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

static void
err_unknown_command(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    struct gm_bytes r = {0};
    gm_bytes_str(&r, "ERR UNKNOWN_COMMAND Unknown+server+command");
    gm_bytes_add(&r, w->w[0], w->len[0]);
    gm_bytes_str(&r, "\r\n");
    reply_send(d, p, &r);
}

static void
err_invalid_arguments(struct gm_dispatcher *d, struct gm_peer *p, const char *command)
{
    struct gm_bytes r = {0};
    gm_bytes_str(&r, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+");
    gm_bytes_str(&r, command);
    gm_bytes_str(&r, "\r\n");
    reply_send(d, p, &r);
}

/* `ERR <code> <text>` for a name gm_name_check refused, the text's spaces
   written as '+' like gearmand's other ERR texts. */
static void
err_bad_name(struct gm_dispatcher *d, struct gm_peer *p, const struct gm_name_fault *bad)
{
    char line[160];
    snprintf(line, sizeof line, "ERR %s %s\r\n", bad->code, bad->text);
    for (char *c = line + 4 + strlen(bad->code) + 1; *c; c++)
        if (*c == ' ')
            *c = '+';
    send_str(d, p, line);
}

static void
cmd_workers(struct gm_dispatcher *d, struct gm_peer *asker)
{
    struct gm_bytes r = {0};
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        for (uint32_t s = 0; s < port->npeers; s++) {
            struct gm_peer *p = port->peers[s];
            if (!p)
                continue;
            reply_u64(&r, (uint64_t)(p->fd < 0 ? 0 : p->fd));
            gm_bytes_str(&r, " ");
            gm_bytes_str(&r, p->addr);
            gm_bytes_str(&r, " ");
            gm_bytes_str(&r, peer_client_id(p));
            gm_bytes_str(&r, " :");
            /* newest first, a function as often as it was registered */
            for (uint32_t i = p->nregs; i-- > 0;) {
                for (uint32_t k = 0; k < p->regs[i]->count; k++) {
                    gm_bytes_str(&r, " ");
                    gm_bytes_add(&r, p->regs[i]->fn->name, p->regs[i]->fn->name_len);
                }
            }
            gm_bytes_str(&r, "\n");
        }
    }
    gm_bytes_str(&r, ".\n");
    reply_send(d, asker, &r);
}

static void
cmd_status(struct gm_dispatcher *d, struct gm_peer *p, bool by_priority)
{
    struct gm_bytes r = {0};
    struct gm_list *n;
    gm_list_each(n, &d->function_list)
    {
        struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        gm_bytes_add(&r, fn->name, fn->name_len);
        gm_bytes_str(&r, "\t");
        if (by_priority) {
            for (int prio = 0; prio < GM_PRIO_COUNT; prio++) {
                reply_u64(&r, fn->queued[prio]);
                gm_bytes_str(&r, "\t");
            }
        } else {
            reply_u64(&r, gm_function_total(fn));
            gm_bytes_str(&r, "\t");
            reply_u64(&r, gm_function_running(fn));
            gm_bytes_str(&r, "\t");
        }
        reply_u64(&r, fn->worker_count);
        gm_bytes_str(&r, "\n");
    }
    gm_bytes_str(&r, ".\n");
    reply_send(d, p, &r);
}

/* Jobs in creation order (handle order for the handles of one prefix). */
static void
cmd_show_jobs(struct gm_dispatcher *d, struct gm_peer *p, bool unique)
{
    struct gm_bytes r = {0};
    struct gm_list *n;
    gm_list_each(n, &d->jobs)
    {
        const struct gm_job *job = gm_container_of(n, struct gm_job, all_link);
        if (unique) {
            gm_bytes_add(&r, gm_job_unique(job), job->unique_len);
            gm_bytes_str(&r, "\n");
            continue;
        }
        gm_bytes_add(&r, gm_job_handle(job), job->handle_len);
        gm_bytes_str(&r, "\t");
        reply_u64(&r, job->retries);
        gm_bytes_str(&r, (job->flags & GM_JOB_IGNORED) ? "\t1\t" : "\t0\t");
        /* gearmand's job_queued: set for background jobs (even with the
           memory queue), cleared for foreground ones. */
        gm_bytes_str(&r, (job->flags & GM_JOB_BACKGROUND) ? "1\n" : "0\n");
    }
    gm_bytes_str(&r, ".\n");
    reply_send(d, p, &r);
}

static void
cmd_maxqueue(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    if (w->n < 2) {
        err_invalid_arguments(d, p, "maxqueue");
        return;
    }
    if (w->n > 5 || w->more) {
        err_invalid_arguments(d, p, "maxqueue");
        return;
    }
    long lim[GM_PRIO_COUNT] = {0, 0, 0};
    if (w->n == 3) {
        lim[0] = lim[1] = lim[2] = word_atol(w, 2);
    } else {
        for (unsigned i = 2; i < w->n; i++)
            lim[i - 2] = word_atol(w, i);
    }
    struct gm_function *fn = gm_disp_function_find(d, w->w[1], w->len[1]);
    if (fn)
        for (int prio = 0; prio < GM_PRIO_COUNT; prio++)
            fn->max_queue[prio] = lim[prio] < 0 ? 0 : lim[prio] > UINT32_MAX ? UINT32_MAX : (uint32_t)lim[prio];
    send_str(d, p, "OK\r\n");
}

static void
cmd_cancel(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    if (w->n < 3) {
        err_unknown_command(d, p, w);
        return;
    }
    if (w->n != 3 || w->more || !word_is(w, 1, "job")) {
        send_str(d, p, "ERR UNKNOWN_ERROR\r\n");
        return;
    }
    struct gm_job *job = gm_disp_job_by_handle(d, w->w[2], w->len[2]);
    if (!job || (job->flags & GM_JOB_CANCELLED)) { /* unknown, or cancelled already */
        send_str(d, p, "ERR UNKNOWN_JOB\r\n");
        return;
    }
    gm_disp_job_cancel(d, job);
    send_str(d, p, "OK\r\n");
}

/* "<command> function NAME": true if w is that, else answers the error. */
static bool
function_command(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w, const char *command)
{
    if (w->n == 3 && !w->more && word_is(w, 1, "function"))
        return true;
    err_invalid_arguments(d, p, command);
    return false;
}

static void
cmd_create_function(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    if (!function_command(d, p, w, "create"))
        return;
    const struct gm_name_fault *bad = gm_name_check(GM_NAME_FUNCTION, w->w[2], w->len[2]);
    if (bad) {
        err_bad_name(d, p, bad);
        return;
    }
    if (!gm_disp_function_get(d, w->w[2], w->len[2])) {
        struct gm_bytes r = {0};
        gm_bytes_str(&r, "ERR CREATE_FUNCTION ");
        gm_bytes_add(&r, w->w[2], w->len[2]);
        gm_bytes_str(&r, "\r\n");
        reply_send(d, p, &r);
        return;
    }
    send_str(d, p, "OK\r\n");
}

static void
cmd_drop_function(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    if (!function_command(d, p, w, "drop"))
        return;
    struct gm_list *n;
    gm_list_each(n, &d->function_list)
    {
        struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        if (fn->name_len != w->len[2] || strncasecmp(fn->name, w->w[2], w->len[2]) != 0)
            continue;
        if (fn->worker_count || gm_function_running(fn) || fn->nstate[GM_JOB_PERSISTING]) {
            send_str(d, p, "ERR there are still connected workers or executing clients\r\n");
            return;
        }
        gm_disp_function_drop(d, fn);
        send_str(d, p, "OK\r\n");
        return;
    }
    send_str(d, p, "ERR function not found\r\n");
}

/* ------------------------------------------------------------------ */
/* Job lifecycle (lifecycle.c): policies, pause, purge, dead letters    */
/* ------------------------------------------------------------------ */

/* `ERR <code> <text>`, the text's spaces written as '+'. */
static void
err_text(struct gm_dispatcher *d, struct gm_peer *p, const char *code, const char *text)
{
    struct gm_bytes r = {0};
    gm_bytes_str(&r, "ERR ");
    gm_bytes_str(&r, code);
    gm_bytes_str(&r, " ");
    size_t at = r.len;
    gm_bytes_str(&r, text);
    gm_bytes_str(&r, "\r\n");
    for (size_t i = at; !r.failed && i < r.len; i++)
        if (r.b->data[i] == ' ')
            r.b->data[i] = '+';
    reply_send(d, p, &r);
}

/* Answers lifecycle_function's error err (bad: the name's fault). */
static void
err_lifecycle(struct gm_dispatcher *d, struct gm_peer *p, int err, const struct gm_name_fault *bad)
{
    if (err == LIFECYCLE_BAD_NAME)
        err_bad_name(d, p, bad);
    else if (err == LIFECYCLE_UNKNOWN)
        err_text(d, p, "UNKNOWN_FUNCTION", "no such function");
    else
        err_text(d, p, "UNKNOWN_ERROR", "out of memory");
}

/* policy FUNC key=value ... | policy FUNC reset */
static void
cmd_policy(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    if (w->n < 3 || w->more || w->n - 2 > GM_POLICY_PAIRS_MAX) {
        err_text(d, p, "INVALID_ARGUMENTS", "policy FUNCTION key=value ... (1 to 5 pairs) or policy FUNCTION reset");
        return;
    }
    bool reset = w->n == 3 && word_is(w, 2, "reset");
    struct gm_policy_values v;
    gm_policy_defaults(&v);
    struct gm_function *known = gm_disp_function_find(d, w->w[1], w->len[1]);
    if (known && known->policy && known->policy->set)
        v = known->policy->v;
    for (unsigned i = 2; !reset && i < w->n; i++) {
        const char *why = gm_policy_apply_pair(&v, w->w[i], w->len[i]);
        if (why) {
            err_text(d, p, "INVALID_ARGUMENTS", why);
            return;
        }
    }
    int err = 0;
    const struct gm_name_fault *bad = NULL;
    struct gm_function *fn = lifecycle_function(d, w->w[1], w->len[1], true, &err, &bad);
    if (!fn) {
        err_lifecycle(d, p, err, bad);
        return;
    }
    if (reset)
        gm_policy_defaults(&v);
    fn->policy->v = v;
    fn->policy->set = !reset;
    persist_policy(d, fn);
    gm_log(GM_LOG_NOTICE, "policy of %s %s by %s:%u%s", fn->name, reset ? "reset" : "set", p->addr, p->port,
           p->log_name);
    wake_workers(d, fn); /* a raised concurrency limit */
    send_str(d, p, "OK\r\n");
}

static void
cmd_show_policies(struct gm_dispatcher *d, struct gm_peer *p)
{
    struct gm_bytes r = {0};
    struct gm_list *n;
    gm_list_each(n, &d->function_list)
    {
        const struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        const struct gm_policy *pol = fn->policy;
        if (!lifecycle_listed(fn))
            continue;
        gm_bytes_add(&r, fn->name, fn->name_len);
        const uint32_t vals[] = {pol->v.retries, pol->v.backoff_ms, pol->v.max_backoff_ms, pol->v.timeout_s,
                                 pol->v.concurrency, pol->paused};
        static const char *const keys[] = {"\tretries=", "\tbackoff=", "\tmax_backoff=", "\ttimeout=",
                                           "\tconcurrency=", "\tpaused="};
        for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
            gm_bytes_str(&r, keys[i]);
            reply_u64(&r, vals[i]);
        }
        gm_bytes_str(&r, "\n");
    }
    gm_bytes_str(&r, ".\n");
    reply_send(d, p, &r);
}

/* pause FUNC | resume FUNC | purge FUNC */
static void
cmd_function_state(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    if (w->n != 2 || w->more) {
        err_text(d, p, "INVALID_ARGUMENTS", "give one function name");
        return;
    }
    enum lifecycle_action what = word_is(w, 0, "pause")   ? LIFECYCLE_PAUSE
                                 : word_is(w, 0, "purge") ? LIFECYCLE_PURGE
                                                          : LIFECYCLE_RESUME;
    uint64_t purged = 0;
    const struct gm_name_fault *bad = NULL;
    int err = lifecycle_function_action(d, w->w[1], w->len[1], what, p, &purged, &bad);
    if (err) {
        err_lifecycle(d, p, err, bad);
        return;
    }
    send_str(d, p, "OK\r\n");
}

/* "HANDLE\tFUNC\tUNIQUE\t", the start of a `show dead` or `show job` line. */
static void
reply_job_names(struct gm_bytes *r, const struct gm_job *job)
{
    gm_bytes_add(r, gm_job_handle(job), job->handle_len);
    gm_bytes_str(r, "\t");
    gm_bytes_add(r, job->fn->name, job->fn->name_len);
    gm_bytes_str(r, "\t");
    gm_bytes_add(r, gm_job_unique(job), job->unique_len);
    gm_bytes_str(r, "\t");
}

/* A `show dead` line (lifecycle_each_dead's callback). */
static bool
reply_dead_line(void *arg, const struct gm_job *job)
{
    struct gm_bytes *r = arg;
    reply_job_names(r, job);
    reply_u64(r, job->retries);
    gm_bytes_str(r, "\t");
    reply_u64(r, (uint64_t)job->when);
    gm_bytes_str(r, "\t");
    gm_bytes_str(r, lifecycle_death_name(job->dead.why));
    gm_bytes_str(r, "\n");
    return true;
}

/* show dead [FUNC] */
static void
cmd_show_dead(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    const struct gm_function *only = NULL;
    if (w->n == 3 && !(only = gm_disp_function_find(d, w->w[2], w->len[2]))) {
        send_str(d, p, ".\n");
        return;
    }
    struct gm_bytes r = {0};
    lifecycle_each_dead(d, only, 0, reply_dead_line, &r);
    gm_bytes_str(&r, ".\n");
    reply_send(d, p, &r);
}

/* retry dead HANDLE | retry dead all FUNC | discard dead HANDLE |
   discard dead all FUNC */
static void
cmd_dead(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    bool retry = word_is(w, 0, "retry");
    bool all = w->n == 4 && word_is(w, 2, "all");
    if (w->more || !word_is(w, 1, "dead") || !(w->n == 3 || all)) {
        err_text(d, p, "INVALID_ARGUMENTS", retry ? "retry dead HANDLE or retry dead all FUNCTION"
                                                  : "discard dead HANDLE or discard dead all FUNCTION");
        return;
    }
    if (all) {
        struct gm_function *fn = gm_disp_function_find(d, w->w[3], w->len[3]);
        uint64_t count = lifecycle_dead_all(d, fn, retry);
        if (fn)
            gm_log(GM_LOG_NOTICE, "%s dead letters of %s by %s:%u%s: %llu", retry ? "retry" : "discard", fn->name,
                   p->addr, p->port, p->log_name, (unsigned long long)count);
        send_str(d, p, "OK\r\n");
        return;
    }
    if (lifecycle_dead_one(d, w->w[2], w->len[2], retry) < 0) {
        err_text(d, p, "UNKNOWN_JOB", "no dead letter has that handle");
        return;
    }
    send_str(d, p, "OK\r\n");
}

/* show job HANDLE */
static void
cmd_show_job(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    struct gm_view_job_state js;
    if (lifecycle_describe(d, w->w[2], w->len[2], &js) < 0) {
        err_text(d, p, "UNKNOWN_JOB", "no job has that handle");
        return;
    }
    struct gm_bytes r = {0};
    const char *const fields[] = {js.handle, js.function, js.unique, js.state};
    const size_t lens[] = {js.handle_len, js.function_len, js.unique_len, strlen(js.state)};
    for (int i = 0; i < 4; i++) {
        gm_bytes_add(&r, fields[i], lens[i]);
        gm_bytes_str(&r, "\t");
    }
    reply_u64(&r, js.attempts);
    gm_bytes_str(&r, "\t");
    reply_u64(&r, js.result_len);
    gm_bytes_str(&r, "\n.\n");
    reply_send(d, p, &r);
}

static void
cmd_shutdown(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    bool graceful = word_is(w, 1, "graceful");
    if (w->n > 2 || (w->n == 2 && !graceful)) {
        send_str(d, p, "ERR UNKNOWN_ARGUMENTS shutdown+takes+no+argument+but+graceful\r\n");
        return;
    }
    if (!d->acl_enforced && !p->is_loopback) {
        /* without an ACL file, gearmand's rule (with one, it decided) */
        access_denied(d, p, p->identity, GM_PERM_ADMIN, "", "shutdown", 8);
        send_str(d, p, "ERR PERMISSION_DENIED shutdown+is+accepted+only+from+loopback\r\n");
        return;
    }
    gm_log(GM_LOG_NOTICE, "shutdown%s requested by %s:%u%s", graceful ? " graceful" : "", p->addr,
           p->port, p->log_name);
    send_str(d, p, "OK\r\n");
    if (graceful) {
        gm_disp_request_shutdown(d, GM_STOP_ACCEPTING);
        gm_disp_begin_graceful(d);
    } else {
        gm_disp_request_shutdown(d, GM_STOP_NOW);
    }
}

/* The commands that only read (admin-read); every other known command
   changes the server (admin).  Unknown commands need nothing: they are
   answered UNKNOWN_COMMAND and do nothing. */
static const char *const reading_commands[] = {"workers", "status", "prioritystatus", "show",
                                               "version", "getpid", "verbose"};
static const char *const changing_commands[] = {"cancel", "create", "drop", "policy", "pause", "resume",
                                                "purge", "retry", "discard", "maxqueue", "shutdown"};

/* With an ACL file, whether p may run the command w names; if not, the
   ERR is answered. */
static bool
admin_permitted(struct gm_dispatcher *d, struct gm_peer *p, const struct words *w)
{
    enum gm_perm need = GM_PERM_COUNT;
    for (size_t i = 0; i < sizeof reading_commands / sizeof reading_commands[0]; i++)
        if (word_is(w, 0, reading_commands[i]))
            need = GM_PERM_ADMIN_READ;
    for (size_t i = 0; i < sizeof changing_commands / sizeof changing_commands[0]; i++)
        if (word_is(w, 0, changing_commands[i]))
            need = GM_PERM_ADMIN;
    if (need == GM_PERM_COUNT || peer_may(d, p, need, NULL, w->w[0], w->len[0]))
        return true;
    err_text(d, p, "PERMISSION_DENIED", d->denied_text);
    return false;
}

void
gm_admin_execute(struct gm_dispatcher *d, struct gm_peer *p, const struct gm_in *m)
{
    struct words w = {0};
    w.n = m->u.words.count;
    w.more = m->u.words.more;
    for (unsigned i = 0; i < w.n; i++) {
        w.w[i] = m->payload + m->u.words.start[i];
        w.len[i] = m->u.words.len[i];
    }
    if (w.n == 0) {
        w.n = 1;
        w.w[0] = "";
        w.len[0] = 0;
    }
    if (d->acl_enforced && !admin_permitted(d, p, &w))
        return;
    if (word_is(&w, 0, "workers")) {
        cmd_workers(d, p);
    } else if (word_is(&w, 0, "status")) {
        cmd_status(d, p, false);
    } else if (word_is(&w, 0, "prioritystatus")) {
        cmd_status(d, p, true);
    } else if (word_is(&w, 0, "show")) {
        if (w.n == 1)
            err_unknown_command(d, p, &w);
        else if (w.n == 2 && word_is(&w, 1, "jobs"))
            cmd_show_jobs(d, p, false);
        else if (w.n == 3 && word_is(&w, 1, "unique") && word_is(&w, 2, "jobs"))
            cmd_show_jobs(d, p, true);
        else if (w.n == 2 && word_is(&w, 1, "policies"))
            cmd_show_policies(d, p);
        else if ((w.n == 2 || w.n == 3) && !w.more && word_is(&w, 1, "dead"))
            cmd_show_dead(d, p, &w);
        else if (w.n == 3 && !w.more && word_is(&w, 1, "job"))
            cmd_show_job(d, p, &w);
        else
            send_str(d, p, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n");
    } else if (word_is(&w, 0, "cancel")) {
        cmd_cancel(d, p, &w);
    } else if (word_is(&w, 0, "create")) {
        cmd_create_function(d, p, &w);
    } else if (word_is(&w, 0, "drop")) {
        cmd_drop_function(d, p, &w);
    } else if (word_is(&w, 0, "policy")) {
        cmd_policy(d, p, &w);
    } else if (word_is(&w, 0, "pause") || word_is(&w, 0, "resume") || word_is(&w, 0, "purge")) {
        cmd_function_state(d, p, &w);
    } else if (word_is(&w, 0, "retry") || word_is(&w, 0, "discard")) {
        cmd_dead(d, p, &w);
    } else if (word_is(&w, 0, "maxqueue")) {
        cmd_maxqueue(d, p, &w);
    } else if (word_is(&w, 0, "version")) {
        struct gm_bytes r = {0};
        gm_bytes_str(&r, "OK ");
        gm_bytes_str(&r, d->cfg->version ? d->cfg->version : PACKAGE_VERSION);
        gm_bytes_str(&r, "\n");
        reply_send(d, p, &r);
    } else if (word_is(&w, 0, "getpid")) {
        struct gm_bytes r = {0};
        gm_bytes_str(&r, "OK ");
        reply_u64(&r, (uint64_t)getpid());
        gm_bytes_str(&r, "\n");
        reply_send(d, p, &r);
    } else if (word_is(&w, 0, "verbose")) {
        struct gm_bytes r = {0};
        gm_bytes_str(&r, "OK ");
        gm_bytes_str(&r, gm_log_level_name(gm_log_level));
        gm_bytes_str(&r, "\n");
        reply_send(d, p, &r);
    } else if (word_is(&w, 0, "shutdown")) {
        cmd_shutdown(d, p, &w);
    } else {
        err_unknown_command(d, p, &w);
    }
}
