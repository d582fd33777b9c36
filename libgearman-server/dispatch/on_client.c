/*
 * on_client.c: client requests (handler layer of the dispatcher): the
 * SUBMIT_JOB family in gearmand's order (unique key, function, coalescing,
 * maxqueue, create, queue or store), GET_STATUS, OPTION_REQ,
 * SET_CLIENT_ID, ECHO, and front-end (HTTP) requests.  Dispatcher thread
 * only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include "libgearman-server/dispatch/handlers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/sched.h"

static uint8_t
type_priority(uint32_t type)
{
    switch (type) {
    case GM_PKT_SUBMIT_JOB_HIGH:
    case GM_PKT_SUBMIT_JOB_HIGH_BG:
        return GM_PRIO_HIGH;
    case GM_PKT_SUBMIT_JOB_LOW:
    case GM_PKT_SUBMIT_JOB_LOW_BG:
        return GM_PRIO_LOW;
    default:
        return GM_PRIO_NORMAL;
    }
}

static bool
type_background(uint32_t type)
{
    return type == GM_PKT_SUBMIT_JOB_BG || type == GM_PKT_SUBMIT_JOB_HIGH_BG ||
           type == GM_PKT_SUBMIT_JOB_LOW_BG || type == GM_PKT_SUBMIT_JOB_EPOCH ||
           type == GM_PKT_SUBMIT_JOB_SCHED || type == GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND;
}

/* A background submit joins a job that is not stored: one on its way to
   storage (PERSISTING, STORING) gains a waiter; a foreground job starts
   its way there (STORING), wanted now by a background submitter, so it
   outlives its clients.  The submitter hears JOB_CREATED after the
   commit (persist_acked), or an ERROR. */
static void
join_unstored(struct gm_dispatcher *d, struct gm_peer *p, struct gm_job *job)
{
    if (!waiters_add(&job->waiters, p->id)) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    if (job->state == GM_JOB_PERSISTING || (job->flags & GM_JOB_STORING))
        return;
    if (!persist_add(d, job)) {
        job->waiters->n--;
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    job->flags |= GM_JOB_STORING;
    job->flags &= (uint8_t)~GM_JOB_IGNORED;
}

/* The submission path, in gearmand's order: unique check, function,
   coalescing, maxqueue, create, queue (or timer), wake, attach, reply. */
static void
submit_job(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m, const struct submit *s)
{
    if (d->persist.standby) {
        send_error(d, p->id, "QUEUE_ERROR", "standby: this server does not hold the queue lock (--ha)");
        return;
    }
    if (s->unique_len > GM_UNIQUE_MAX) {
        send_error(d, p->id, "ARGUMENT_TOO_LARGE", "Unique value too large");
        return;
    }
    if (refuse_bad_name(d, p->id, GM_NAME_FUNCTION, s->fn, s->fn_len))
        return;
    struct gm_function *fn = gm_disp_function_find(d, s->fn, s->fn_len);
    if (!(s->who ? access_request(d, p, s->who, GM_PERM_SUBMIT, fn, s->fn, s->fn_len)
                 : peer_may(d, p, GM_PERM_SUBMIT, fn, s->fn, s->fn_len))) {
        access_send_denied(d, p); /* before the function is made: nothing of it is left */
        return;
    }
    if (!fn && !(fn = gm_disp_function_get(d, s->fn, s->fn_len))) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    bool data_keyed;
    const char *key;
    size_t key_len;
    bool indexed = submit_unique_key(s, &data_keyed, &key, &key_len);
    if (indexed) {
        struct gm_job *old = job_unique_find(d, fn, data_keyed, key, key_len);
        if (old) {
            if (s->background && d->persist.active && !(old->flags & GM_JOB_PERSISTED)) {
                /* Not stored (yet): this submitter hears JOB_CREATED once
                   the job is durable. */
                join_unstored(d, p, old);
                return;
            }
            if (!s->background && !job_attach_client(old, p)) {
                send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
                return;
            }
            /* Somebody wants this job again: if its last client had left it
               running unheard, it is wanted again; a background submitter
               makes it a background job (it must outlive its clients). */
            old->flags &= (uint8_t)~GM_JOB_IGNORED;
            if (s->background)
                old->flags |= GM_JOB_BACKGROUND;
            send_job_created(d, p->id, old, s->background ? 0 : more_replies_coming(p));
            return;
        }
    }
    uint32_t limit = fn->max_queue[s->prio];
    if (limit && gm_function_total(fn) >= limit) {
        send_error(d, p->id, "QUEUE_ERROR", "Job queue is full");
        return;
    }
    bool durable = s->background && d->persist.active;
    if (durable && s->when > 0 && !d->persist.stores_epoch) {
        /* as gearmand with a backend that has no run-time column */
        send_error(d, p->id, "QUEUE_ERROR", "QUEUE_ERROR");
        return;
    }
    struct gm_block *own = (m->flags & GM_IN_OWN_BLOCK) ? m->blk : NULL;
    struct gm_job *job = job_create(d, fn, s, own);
    if (!job) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    if (own)
        m->blk = NULL; /* the job keeps the message's reference */
    if (indexed)
        job_index_unique(d, job, data_keyed, key, key_len);
    if (!s->background && !job_attach_client(job, p)) {
        fn->queued[job->prio]++;
        job_set_state(d, job, GM_JOB_QUEUED);
        job_free(d, job);
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    if (durable) {
        /* JOB_CREATED waits for the commit (persist_acked). */
        fn->queued[job->prio]++;
        fn->submitted++;
        job_set_state(d, job, GM_JOB_PERSISTING);
        job->waiters = NULL;
        if (!waiters_add(&job->waiters, p->id) || !persist_add(d, job)) {
            job_free(d, job);
            send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
            return;
        }
        gm_log(GM_LOG_NOTICE, "accepted,%s,%s,%lld", fn->name, gm_job_unique(job),
               (long long)s->when);
        return;
    }
    fn->queued[job->prio]++;
    fn->submitted++;
    if (!job_place(d, job, false)) {
        job_set_state(d, job, GM_JOB_QUEUED);
        job_free(d, job);
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    send_job_created(d, p->id, job, s->background ? 0 : more_replies_coming(p));
    gm_log(GM_LOG_NOTICE, "accepted,%s,%s,%lld", fn->name, gm_job_unique(job), (long long)s->when);
}

void
on_submit(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    struct submit s = {0};
    s.fn = field(m, 0, &s.fn_len);
    s.unique = field(m, 1, &s.unique_len);
    s.prio = type_priority(m->type);
    s.background = type_background(m->type);
    int data_field = 2;
    switch (m->type) {
    case GM_PKT_SUBMIT_JOB_EPOCH: {
        size_t len;
        const char *e = field(m, 2, &len);
        int64_t when = 0;
        if (len && !gm_parse_i64(e, len, &when)) {
            send_error(d, p->id, "INVALID_ARGUMENT", "Epoch time is not a number");
            return;
        }
        if (when > GM_EPOCH_MAX) {
            send_error(d, p->id, "INVALID_ARGUMENT", "Epoch time is beyond the year 9999");
            return;
        }
        s.when = when > 0 ? when : 0;
        data_field = 3;
        break;
    }
    case GM_PKT_SUBMIT_JOB_SCHED: {
        const char *f[5];
        size_t l[5];
        for (int i = 0; i < 5; i++)
            f[i] = field(m, 2 + i, &l[i]);
        struct gm_sched sched;
        int bad = gm_sched_parse(f, l, &sched);
        if (bad) {
            static const char *const msg[] = {"", "Invalid minute in schedule",
                                              "Invalid hour in schedule",
                                              "Invalid day of month in schedule",
                                              "Invalid month in schedule",
                                              "Invalid day of week in schedule"};
            send_error(d, p->id, "INVALID_ARGUMENT", msg[bad]);
            return;
        }
        int64_t next = gm_sched_next(&sched, now_ms(d) / 1000);
        if (next < 0) {
            send_error(d, p->id, "INVALID_ARGUMENT", "Schedule never matches");
            return;
        }
        s.when = next;
        data_field = 7;
        break;
    }
    case GM_PKT_SUBMIT_REDUCE_JOB:
    case GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND:
        s.reducer = field(m, 2, &s.reducer_len);
        if (s.reducer_len > UINT16_MAX) {
            send_error(d, p->id, "ARGUMENT_TOO_LARGE", "Reducer name too large");
            return;
        }
        data_field = 4; /* field 3, the aggregator, is ignored as in gearmand */
        break;
    default:
        break;
    }
    s.data = field(m, data_field, &s.data_len);
    submit_job(d, p, m, &s);
}

/* Whether p may ask about job (NULL: unknown, which reveals nothing): it
   needs submit on the job's function.  If not, the ERROR is sent; its
   text does not name the function (the handle is all the asker knew). */
static bool
may_ask_about(struct gm_dispatcher *d, struct gm_peer *p, const struct gm_job *job)
{
    if (!job || peer_may(d, p, GM_PERM_SUBMIT, job->fn, job->fn->name, job->fn->name_len))
        return true;
    snprintf(d->denied_text, sizeof d->denied_text, "%s lacks submit for the function of that job", p->identity);
    access_send_denied(d, p);
    return false;
}

/* The fields of STATUS_RES (the first five) and STATUS_RES_UNIQUE (all
   six): the key asked about, known, running, numerator, denominator, and
   the number of clients waiting; zeros for an unknown job. */
struct status_reply {
    struct gm_field_ref f[6];
    char num[20], den[20], cnt[20];
};

static void
status_fill(struct status_reply *r, const char *key, size_t len, const struct gm_job *job)
{
    r->f[0] = (struct gm_field_ref){key, len};
    for (int i = 1; i < 6; i++)
        r->f[i] = (struct gm_field_ref){"0", 1};
    if (!job)
        return;
    r->f[1].ptr = "1";
    r->f[2].ptr = job->state == GM_JOB_RUNNING ? "1" : "0";
    r->f[3] = (struct gm_field_ref){r->num, gm_fmt_u64(r->num, gm_job_numerator(job))};
    r->f[4] = (struct gm_field_ref){r->den, gm_fmt_u64(r->den, gm_job_denominator(job))};
    r->f[5] = (struct gm_field_ref){r->cnt, gm_fmt_u64(r->cnt, job->nclients)};
}

void
on_get_status(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *h = field(m, 0, &len);
    struct gm_job *job = gm_disp_job_by_handle(d, h, len);
    if (!may_ask_about(d, p, job))
        return;
    struct status_reply r;
    status_fill(&r, h, len, job);
    send_packet(d, p->id, GM_PKT_STATUS_RES, r.f, 5, NULL);
}

void
on_get_status_unique(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *u = field(m, 0, &len);
    struct gm_job *job = len ? job_unique_head(d, u, len) : NULL;
    if (!may_ask_about(d, p, job))
        return;
    struct status_reply r;
    status_fill(&r, u, len, job);
    send_packet(d, p->id, GM_PKT_STATUS_RES_UNIQUE, r.f, 6, NULL);
}

void
on_option(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *opt = field(m, 0, &len);
    if (len == 10 && strncasecmp(opt, "exceptions", 10) == 0) {
        p->exceptions = true;
        struct gm_field_ref f = {opt, len};
        send_packet(d, p->id, GM_PKT_OPTION_RES, &f, 1, NULL);
        return;
    }
    send_error(d, p->id, "UNKNOWN_OPTION", "Server does not recognize given option");
}

void
on_set_client_id(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *id = field(m, 0, &len);
    if (refuse_bad_name(d, p->id, GM_NAME_CLIENT_ID, id, len))
        return; /* the id stays as it was */
    if (len > GM_CLIENT_ID_MAX)
        len = GM_CLIENT_ID_MAX; /* as gearmand */
    char *copy = malloc(len + 1);
    if (!copy) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    memcpy(copy, id, len);
    copy[len] = '\0';
    free(p->client_id);
    p->client_id = copy;
}

void
on_echo(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    struct gm_slice body = {m->blk, m->payload, m->len};
    send_packet(d, p->id, GM_PKT_ECHO_RES, NULL, 0, &body);
}

/* A front-end request: a job submission (the replies go back as packets,
   which the front-end turns into its response), or a question the
   front-end answers from the state view.  A request with a bearer token
   (when a token file is loaded) is made as the token's identity,
   token:NAME; a token no line has is answered UNAUTHORIZED (HTTP 401). */
void
on_frontend(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    const struct gm_frontend *fe = d->cfg->frontend;
    const struct gm_fe_req *r = &m->u.fe;
    if (!fe)
        return;
    const char *who = NULL;
    if (r->auth_off && gm_acl_token_count(d->acl)) {
        who = gm_acl_token_identity(d->acl, m->payload + r->auth_off, r->auth_len);
        if (!who) {
            send_error(d, p->id, "UNAUTHORIZED", "the bearer token is not one of --http-token-file");
            return;
        }
    }
    if (r->kind == GM_FE_SUBMIT) {
        struct submit s = {0};
        s.who = who;
        s.fn = m->payload + r->path_off;
        s.fn_len = r->path_len;
        if (r->flags & GM_FE_HAS_UNIQUE) {
            s.unique = m->payload + r->unique_off;
            s.unique_len = r->unique_len;
        } else {
            s.unique = fe->default_unique ? fe->default_unique : "";
            s.unique_len = strlen(s.unique);
        }
        s.data = m->payload + r->body_off;
        s.data_len = r->body_len;
        s.prio = (r->flags & GM_FE_HIGH) ? GM_PRIO_HIGH : (r->flags & GM_FE_LOW) ? GM_PRIO_LOW : GM_PRIO_NORMAL;
        s.background = (r->flags & GM_FE_BACKGROUND) != 0;
        submit_job(d, p, m, &s);
        return;
    }
    d->serving = p;
    d->serving_who = who;
    d->serving_path = m->payload + r->path_off;
    d->serving_path_len = r->path_len;
    struct gm_fe_output o = fe->serve(m->payload, r, d->cfg->max_output, &d->view);
    d->serving = NULL;
    d->serving_who = NULL;
    if (!o.blk || !send_raw(d, p->id, o.blk, o.len)) {
        gm_disp_send_close(d, p->id);
        return;
    }
    if (o.close)
        gm_disp_send_close(d, p->id);
}
