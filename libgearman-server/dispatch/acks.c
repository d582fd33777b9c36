/*
 * acks.c: the persistence thread's acknowledgements, taken in by the
 * dispatcher (model layer): a stored batch makes its jobs live and answers
 * their submitters, a refused one fails them.  Dispatcher thread only.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include "libgearman-server/base/log.h"

/* Answers the background submitters waiting for a job's ADD: JOB_CREATED
   once it is stored, else ERROR QUEUE_ERROR.  Frees the list. */
static void
answer_waiters(struct gm_dispatcher *d, struct gm_job *job, bool stored)
{
    struct gm_waiters *w = job->waiters;
    job->waiters = NULL;
    for (uint32_t i = 0; w && i < w->n; i++) {
        if (stored)
            send_job_created(d, w->conn[i], job, 0);
        else
            send_error(d, w->conn[i], "QUEUE_ERROR", "QUEUE_ERROR");
    }
    free(w);
}

/* What is left of a job freed while STORING (job_free) goes once its ADD
   has an answer. */
void
pending_release(struct gm_dispatcher *d, struct gm_job *job, bool stored)
{
    answer_waiters(d, job, stored);
    gm_block_unref(gm_job_block(job));
}

/* The ADD of a STORING job (a foreground job a background submit joined)
   has its answer: stored, it is a stored background job from now on;
   refused, it stays the foreground job it was, and is dropped if nobody
   waits for it any more. */
static void
storing_acked(struct gm_dispatcher *d, struct gm_job *job, const struct gm_pack *a)
{
    job->flags &= (uint8_t)~GM_JOB_STORING;
    answer_waiters(d, job, a->ok);
    if (a->ok) {
        job->flags |= GM_JOB_PERSISTED;
        if (!(job->flags & GM_JOB_CANCELLED))
            job->flags |= GM_JOB_BACKGROUND;
        return;
    }
    gm_log(GM_LOG_ERROR, "%s %s not stored for its background submitters: %s", job->fn->name,
           gm_job_handle(job), a->reason);
    if (job->nclients || (job->flags & GM_JOB_BACKGROUND))
        return;
    if (job->state == GM_JOB_RUNNING)
        job->flags |= GM_JOB_IGNORED;
    else
        job_free(d, job);
}

/* A batch was written (or refused): the jobs it held go live (or fail). */
static void
persist_acked(struct gm_dispatcher *d, const struct gm_pack *a)
{
    struct gm_disp_persist *ps = &d->persist;
    if (!a->ok)
        ps->handle_hw = 0; /* the refused batch may have held the handle counter: send it again */
    while (ps->pend_len && ps->pend[ps->pend_head].seq <= a->upto) {
        struct gm_job *job = ps->pend[ps->pend_head].job;
        ps->pend_head = (ps->pend_head + 1) % ps->pend_cap;
        ps->pend_len--;
        if (job->state == GM_JOB_FREED) {
            pending_release(d, job, a->ok);
            continue;
        }
        if (job->flags & GM_JOB_STORING) {
            storing_acked(d, job, a);
            continue;
        }
        answer_waiters(d, job, a->ok);
        if (a->ok) {
            job->flags |= GM_JOB_PERSISTED;
            if (job->flags & GM_JOB_IGNORED) {
                job_set_state(d, job, GM_JOB_QUEUED); /* cancelled while being stored */
                job_free(d, job);
            } else {
                job_place(d, job, true);
            }
        } else {
            gm_log(GM_LOG_ERROR, "%s %s not stored: %s", job->fn->name, gm_job_handle(job),
                   a->reason);
            job->fn->failed++;
            job_tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
            job_set_state(d, job, GM_JOB_QUEUED);
            job_free(d, job);
        }
    }
}

void
drain_acks(struct gm_dispatcher *d)
{
    if (!d->persist.ch)
        return;
    struct gm_pack *a;
    bool any = false;
    while ((a = gm_pack_ring_peek(&d->persist.ch->acks))) {
        persist_acked(d, a);
        gm_pack_ring_consume(&d->persist.ch->acks);
        any = true;
    }
    if (!any)
        return;
    gm_pack_ring_release(&d->persist.ch->acks);
    /* The persistence thread keeps acks that found the ring full: now
       there is room for them. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&d->persist.ch->persist_wants_space, memory_order_relaxed) &&
        atomic_exchange(&d->persist.ch->persist_wants_space, 0) && d->persist.wake)
        d->persist.wake(d->persist.arg);
}
