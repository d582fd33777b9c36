/*
 * on_worker.c: worker requests (handler layer of the dispatcher): CAN_DO,
 * CANT_DO, RESET_ABILITIES, PRE_SLEEP, GRAB_JOB and the WORK_* results,
 * forwarded to the job's clients by reference.  With an ACL file, CAN_DO
 * needs the permission work on the function (GRAB_JOB and WORK_* then
 * concern only functions so registered).  Dispatcher thread only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include "libgearman-server/dispatch/handlers.h"

#include <string.h>

void
on_can_do(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *name = field(m, 0, &len);
    uint32_t timeout = 0;
    if (m->type == GM_PKT_CAN_DO_TIMEOUT) {
        size_t tl;
        const char *ts = field(m, 1, &tl);
        int64_t v = 0;
        if (!gm_parse_i64(ts, tl, &v) || v < 0) {
            v = 0; /* gearmand reads junk as 0: no timeout */
        }
        if (v > 0 && v < 1000)
            v = 1000;
        timeout = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    }
    if (refuse_bad_name(d, p->id, GM_NAME_FUNCTION, name, len))
        return;
    if (!peer_may(d, p, GM_PERM_WORK, NULL, name, len)) {
        access_send_denied(d, p); /* not registered; the connection stays */
        return;
    }
    struct gm_function *fn = gm_disp_function_get(d, name, len);
    if (!fn) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    _Static_assert(GM_WORKER_REGS_MAX == 10000, "the error text names the limit");
    if (!add_reg(d, p, fn, timeout))
        send_error(d, p->id, "ARGUMENT_TOO_LARGE", "Worker has 10000 registrations already");
}

void
on_cant_do(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *name = field(m, 0, &len);
    struct gm_function *fn = gm_disp_function_find(d, name, len);
    uint32_t i;
    if (fn && find_reg(d, p, fn, &i))
        remove_reg(d, p, i); /* every CAN_DO of it, as gearmand */
}

void
on_reset_abilities(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    (void)m;
    while (p->nregs)
        remove_reg(d, p, p->nregs - 1);
}

void
on_pre_sleep(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    (void)m;
    struct gm_reg *reg;
    uint32_t idx;
    if (pick_job(d, p, &reg, &idx)) {
        send_simple(d, p->id, GM_PKT_NOOP);
        p->sleeping = true;
        p->noop_sent = true;
        peer_leave_sleepers(p);
        return;
    }
    p->sleeping = true;
    p->noop_sent = false;
    peer_join_sleepers(p);
}

void
on_grab(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    if (peer_in_sleepers(p))
        peer_leave_sleepers(p);
    p->sleeping = false;
    p->noop_sent = false;
    struct gm_reg *reg;
    uint32_t idx;
    struct gm_job *job = pick_job(d, p, &reg, &idx);
    if (!job) {
        send_simple(d, p->id, GM_PKT_NO_JOB);
        return;
    }
    struct gm_function *fn = job->fn;
    p->rr = p->nregs ? (idx + 1) % p->nregs : 0;
    gm_list_remove(&job->link);
    fn->queued[job->prio]--;
    job_set_state(d, job, GM_JOB_RUNNING);
    job->status.numerator = job->status.denominator = 0; /* `when` is past: its place holds WORK_STATUS */
    job->reg = reg;
    gm_list_push_back(&reg->running, &job->link);
    p->nrunning++;
    uint32_t limit_ms = lifecycle_run_limit_ms(fn, reg->timeout_ms);
    if (limit_ms)
        gm_heap_push(&d->timers, job, now_ms(d) + limit_ms);

    struct gm_field_ref f[4];
    size_t n = 0;
    uint32_t type = GM_PKT_JOB_ASSIGN;
    f[n++] = (struct gm_field_ref){gm_job_handle(job), job->handle_len};
    f[n++] = (struct gm_field_ref){fn->name, fn->name_len};
    if (m->type == GM_PKT_GRAB_JOB_UNIQ || m->type == GM_PKT_GRAB_JOB_ALL) {
        type = GM_PKT_JOB_ASSIGN_UNIQ;
        f[n++] = (struct gm_field_ref){gm_job_unique(job), job->unique_len};
        if (m->type == GM_PKT_GRAB_JOB_ALL && job->reducer_len) {
            type = GM_PKT_JOB_ASSIGN_ALL;
            f[n++] = (struct gm_field_ref){gm_job_reducer(job), job->reducer_len};
        }
    }
    struct gm_slice body = {job->data_blk ? job->data_blk : gm_job_block(job), gm_job_data(job),
                            job->data_len};
    send_packet(d, p->id, type, f, n, &body);
}

/* Finds the job a WORK_* packet names, if this worker holds it. */
static struct gm_job *
worker_job(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *h = field(m, 0, &len);
    struct gm_job *job = gm_disp_job_by_handle(d, h, len);
    if (!job || job->state != GM_JOB_RUNNING || job->reg->peer != p)
        return NULL;
    return job;
}

void
on_work(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    struct gm_job *job = worker_job(d, p, m);
    if (!job) {
        size_t hl;
        const char *h = field(m, 0, &hl);
        const struct gm_job *other = job_find_handle(d, h, hl);
        if ((other && other->fn->policy && other->fn->policy->set) || lifecycle_was_taken_back(p, h, hl))
            return; /* taken back from this worker (its time limit): its results are dropped */
        const char *text = "Job given in work result not found";
        if (m->type == GM_PKT_WORK_DATA || m->type == GM_PKT_WORK_WARNING)
            text = "Job does not exist on server";
        else if (m->type == GM_PKT_WORK_EXCEPTION)
            text = "An exception was received for a job that does not exist";
        send_error(d, p->id, "JOB_NOT_FOUND", text);
        return;
    }
    if ((m->type == GM_PKT_WORK_FAIL || m->type == GM_PKT_WORK_EXCEPTION) && lifecycle_takes(job)) {
        /* a failed attempt: retried, or a dead letter (its clients hear
           of it then) */
        size_t el = 0;
        const char *e = m->type == GM_PKT_WORK_EXCEPTION ? field(m, 1, &el) : NULL;
        lifecycle_attempt_failed(d, job, m->type == GM_PKT_WORK_FAIL ? GM_DIED_FAIL : GM_DIED_EXCEPTION, e, el);
        return;
    }
    if (m->type == GM_PKT_WORK_STATUS) {
        size_t nl, dl;
        const char *num = field(m, 1, &nl);
        const char *den = field(m, 2, &dl);
        job->status.numerator = gm_atou32_lenient(num, nl);
        job->status.denominator = gm_atou32_lenient(den, dl);
    }
    /* Forward the worker's packet verbatim: same type, same payload bytes,
       by reference. */
    struct gm_slice whole = {m->blk, m->payload, m->len};
    struct gm_list *n;
    gm_list_each(n, &job->clients)
    {
        struct gm_attach *a = gm_container_of(n, struct gm_attach, job_link);
        uint8_t flags = m->len < BATCH_REPLY_MAX ? more_replies_coming(a->peer) : 0;
        if (m->type == GM_PKT_WORK_EXCEPTION && !a->peer->exceptions) {
            struct gm_field_ref h = {gm_job_handle(job), job->handle_len};
            send_packet_flagged(d, a->peer->id, GM_PKT_WORK_FAIL, &h, 1, NULL, flags);
        } else {
            send_packet_flagged(d, a->peer->id, m->type, NULL, 0, &whole, flags);
        }
    }
    switch (m->type) {
    case GM_PKT_WORK_COMPLETE:
    case GM_PKT_WORK_FAIL:
    case GM_PKT_WORK_EXCEPTION:
        /* a cancelled job was already counted as failed */
        if (!(job->flags & GM_JOB_CANCELLED)) {
            if (m->type == GM_PKT_WORK_COMPLETE)
                job->fn->completed++;
            else
                job->fn->failed++;
            size_t rl = 0;
            const char *result = m->type == GM_PKT_WORK_FAIL ? NULL : field(m, 1, &rl);
            outcome_keep(d, job, m->type == GM_PKT_WORK_COMPLETE ? GM_OUTCOME_COMPLETE : GM_OUTCOME_FAILED, result,
                         rl);
        }
        job_free(d, job);
        break;
    default:
        break;
    }
}
