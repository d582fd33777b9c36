/*
 * dispatcher.c: requests, job flow and replies (see dispatcher.h).
 *
 * Runs on the dispatcher thread only and owns everything in jobs.h.  The
 * file reads top-down: replies out, peers, functions, jobs and the timer
 * heap, the job life cycle (submit, take, requeue, finish), one handler per
 * request type, then the drain/flush cycle and the libev glue.
 *
 * Compatibility notes live next to the code they concern; the deliberate
 * differences from gearmand 1.1.20 (global priority, epoch timer, SCHED,
 * CAN_DO_TIMEOUT failing the job, clean WORK_FAIL) are listed in
 * docs/compatibility.md.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/sched.h"

#define DRAIN_BURST 64      /* messages taken from one ring before visiting the next */
#define LOOP_BUDGET 4096    /* messages per loop iteration before timers and flushing */

/* ------------------------------------------------------------------ */
/* Replies                                                             */
/* ------------------------------------------------------------------ */

struct out_ctx {
    struct gm_disp_port *port;
    struct gm_out *msg;
    struct gm_out_overflow *node;
};

/* Finds room for one reply to conn: a ring slot, or an overflow node when
   the ring is full (or already overflowing, to keep the order).  Returns
   false if even that fails (memory); the reply is then dropped. */
static bool
out_begin(struct gm_dispatcher *d, gm_conn_id conn, struct out_ctx *o)
{
    unsigned t = gm_conn_thread(conn);
    if (t >= d->nports || d->tearing_down)
        return false;
    o->port = &d->ports[t];
    o->node = NULL;
    o->msg = o->port->ovf_head ? NULL : gm_out_ring_alloc(&o->port->ch->out);
    if (!o->msg) {
        o->node = malloc(sizeof *o->node);
        if (!o->node) {
            gm_log(GM_LOG_ERROR, "out of memory queueing a reply; reply dropped");
            return false;
        }
        o->msg = &o->node->msg;
    }
    o->msg->conn = conn;
    o->msg->kind = GM_OUT_SEND;
    o->msg->flags = 0;
    o->msg->head_len = 0;
    o->msg->body.blk = NULL;
    o->msg->body.ptr = NULL;
    o->msg->body.len = 0;
    return true;
}

static void
out_end(struct out_ctx *o)
{
    if (o->node) {
        o->node->next = NULL;
        if (o->port->ovf_tail)
            o->port->ovf_tail->next = o->node;
        else
            o->port->ovf_head = o->node;
        o->port->ovf_tail = o->node;
    } else {
        gm_out_ring_produce(&o->port->ch->out);
        o->port->produced = true;
    }
}

/* Queues one packet: the fields are copied, `body` (if any) is appended as
   the last field by reference (a new reference is taken).  A head too big
   for the inline space goes out as a block of its own, followed by the body
   as a second message, so the body is never copied. */
static void
send_packet_flagged(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type,
                    const struct gm_field_ref *f, size_t n, const struct gm_slice *body,
                    uint8_t flags)
{
    size_t head_payload = body ? gm_payload_size(f, n) + (n ? 1 : 0) : gm_payload_size(f, n);
    size_t size = head_payload + (body ? body->len : 0);
    size_t head_len = GM_HEADER_SIZE + head_payload;
    struct out_ctx o;
    if (!out_begin(d, conn, &o))
        return;
    o.msg->flags = flags;
    unsigned char *dst;
    struct gm_block *hb = NULL;
    if (head_len <= GM_OUT_INLINE) {
        dst = (unsigned char *)o.msg->head;
        o.msg->head_len = (uint8_t)head_len;
    } else {
        hb = gm_block_new(head_len);
        if (!hb) {
            /* keep the slot consistent: send nothing but an empty message */
            out_end(&o);
            return;
        }
        dst = (unsigned char *)hb->data;
        o.msg->body.blk = hb;
        o.msg->body.ptr = hb->data;
        o.msg->body.len = (uint32_t)head_len;
    }
    gm_header_encode(dst, GM_MAGIC_RES, type, (uint32_t)size);
    unsigned char *p = dst + GM_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        if (f[i].len)
            memcpy(p, f[i].ptr, f[i].len);
        p += f[i].len;
        if (i + 1 < n || body)
            *p++ = '\0';
    }
    if (body && body->len) {
        if (!hb) {
            o.msg->body = *body;
            if (body->blk)
                gm_block_ref(body->blk);
        } else {
            out_end(&o);
            if (!out_begin(d, conn, &o))
                return;
            o.msg->flags = flags;
            o.msg->body = *body;
            if (body->blk)
                gm_block_ref(body->blk);
        }
    }
    out_end(&o);
}

static void
send_packet(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type,
            const struct gm_field_ref *f, size_t n, const struct gm_slice *body)
{
    send_packet_flagged(d, conn, type, f, n, body, 0);
}

/* Replies at least this big are written at once: copying their bytes costs
   more than the write, and holding them would only add delay (measured:
   64 KiB foreground jobs lost 14 % when they waited). */
#define BATCH_REPLY_MAX 4096

/* Whether the client waits on another job besides the one being answered:
   then more replies are coming, and this one may wait to go out with them. */
static uint8_t
more_replies_coming(const struct gm_peer *p)
{
    const struct gm_list *first = p->waits.next;
    return first != &p->waits && first->next != &p->waits ? GM_OUT_F_MAY_WAIT : 0;
}

static void
send_simple(struct gm_dispatcher *d, gm_conn_id conn, uint32_t type)
{
    send_packet(d, conn, type, NULL, 0, NULL);
}

static void
send_error(struct gm_dispatcher *d, gm_conn_id conn, const char *code, const char *text)
{
    struct gm_field_ref f[2] = {{code, strlen(code)}, {text, strlen(text)}};
    gm_log(GM_LOG_ERROR, "GEARMAN_%s:%s", code, text);
    send_packet(d, conn, GM_PKT_ERROR, f, 2, NULL);
}

/* A name that would cut or forge the `status` or `workers` listings
   (gm_name_check) gets an ERROR, and the connection stays: the stream is
   fine.  Returns true if the name was refused. */
static bool
refuse_bad_name(struct gm_dispatcher *d, gm_conn_id conn, enum gm_name_kind kind, const char *name,
                size_t len)
{
    const struct gm_name_fault *bad = gm_name_check(kind, name, len);
    if (bad)
        send_error(d, conn, bad->code, bad->text);
    return bad != NULL;
}

void
gm_disp_send_bytes(struct gm_dispatcher *d, gm_conn_id conn, const void *p, size_t len)
{
    struct out_ctx o;
    if (len <= GM_OUT_INLINE) {
        if (!out_begin(d, conn, &o))
            return;
        memcpy(o.msg->head, p, len);
        o.msg->head_len = (uint8_t)len;
        out_end(&o);
        return;
    }
    struct gm_block *b = gm_block_new(len);
    if (!b)
        return;
    memcpy(b->data, p, len);
    gm_disp_send_block(d, conn, b, len);
}

void
gm_disp_send_block(struct gm_dispatcher *d, gm_conn_id conn, struct gm_block *b, size_t len)
{
    struct out_ctx o;
    if (!out_begin(d, conn, &o)) {
        gm_block_unref(b);
        return;
    }
    o.msg->body.blk = b;
    o.msg->body.ptr = b->data;
    o.msg->body.len = (uint32_t)len;
    out_end(&o);
}

void
gm_disp_send_close(struct gm_dispatcher *d, gm_conn_id conn)
{
    struct out_ctx o;
    if (!out_begin(d, conn, &o))
        return;
    o.msg->kind = GM_OUT_CLOSE;
    out_end(&o);
}

/* ------------------------------------------------------------------ */
/* Peers                                                               */
/* ------------------------------------------------------------------ */

struct gm_peer *
gm_disp_peer(struct gm_dispatcher *d, gm_conn_id id)
{
    unsigned t = gm_conn_thread(id);
    uint32_t slot = gm_conn_slot(id);
    if (t >= d->nports || slot >= d->ports[t].npeers)
        return NULL;
    struct gm_peer *p = d->ports[t].peers[slot];
    return p && p->id == id ? p : NULL;
}

static bool
addr_is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
           strncmp(addr, "::ffff:127.", 11) == 0;
}

static void
peer_open(struct gm_dispatcher *d, const struct gm_in *m)
{
    unsigned t = gm_conn_thread(m->conn);
    uint32_t slot = gm_conn_slot(m->conn);
    if (t >= d->nports)
        return;
    struct gm_disp_port *port = &d->ports[t];
    if (slot >= port->npeers) {
        uint32_t n = port->npeers ? port->npeers : 64;
        while (n <= slot)
            n *= 2;
        struct gm_peer **np = realloc(port->peers, n * sizeof *np);
        if (!np) {
            gm_log(GM_LOG_ERROR, "out of memory for connection %s:%u", m->u.open.addr,
                   m->u.open.port);
            gm_disp_send_close(d, m->conn);
            return;
        }
        memset(np + port->npeers, 0, (n - port->npeers) * sizeof *np);
        port->peers = np;
        port->npeers = n;
    }
    struct gm_peer *p = calloc(1, sizeof *p);
    if (!p) {
        gm_log(GM_LOG_ERROR, "out of memory for connection %s:%u", m->u.open.addr, m->u.open.port);
        gm_disp_send_close(d, m->conn);
        return;
    }
    p->id = m->conn;
    p->fd = m->u.open.fd;
    p->port = m->u.open.port;
    memcpy(p->addr, m->u.open.addr, sizeof p->addr);
    p->addr[sizeof p->addr - 1] = '\0';
    p->is_loopback = addr_is_loopback(p->addr);
    p->exceptions = d->cfg->exceptions;
    gm_list_init(&p->running);
    gm_list_init(&p->waits);
    port->peers[slot] = p;
    d->peer_count++;
}

/* ------------------------------------------------------------------ */
/* Functions                                                           */
/* ------------------------------------------------------------------ */

static uint32_t
name_hash(const char *name, size_t len)
{
    return gm_hash_fold(gm_hash_bytes(GM_HASH_SEED, name, len));
}

struct gm_function *
gm_disp_function_find(struct gm_dispatcher *d, const char *name, size_t len)
{
    uint32_t h = name_hash(name, len);
    for (struct gm_hnode *n = gm_htab_bucket(&d->functions, h); n; n = n->next) {
        struct gm_function *f = gm_container_of(n, struct gm_function, hnode);
        if (n->hash == h && f->name_len == len && memcmp(f->name, name, len) == 0)
            return f;
    }
    return NULL;
}

struct gm_function *
gm_disp_function_get(struct gm_dispatcher *d, const char *name, size_t len)
{
    struct gm_function *f = gm_disp_function_find(d, name, len);
    if (f)
        return f;
    f = calloc(1, sizeof *f + len + 1);
    if (!f)
        return NULL;
    for (int i = 0; i < GM_PRIO_COUNT; i++)
        gm_list_init(&f->queue[i]);
    gm_list_init(&f->sleepers);
    f->name_len = (uint32_t)len;
    memcpy(f->name, name, len);
    f->name[len] = '\0';
    gm_htab_insert(&d->functions, &f->hnode, name_hash(name, len));
    gm_list_push_back(&d->function_list, &f->link);
    d->function_count++;
    return f;
}

/* ------------------------------------------------------------------ */
/* Timer heap (future jobs by `when`, running jobs by their deadline)  */
/* ------------------------------------------------------------------ */

static void
heap_set(struct gm_dispatcher *d, uint32_t i, struct gm_timer_entry e)
{
    d->heap[i] = e;
    e.job->heap_idx = i;
}

static void
heap_up(struct gm_dispatcher *d, uint32_t i)
{
    struct gm_timer_entry e = d->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (d->heap[parent].due_ms <= e.due_ms)
            break;
        heap_set(d, i, d->heap[parent]);
        i = parent;
    }
    heap_set(d, i, e);
}

static void
heap_down(struct gm_dispatcher *d, uint32_t i)
{
    struct gm_timer_entry e = d->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= d->heap_len)
            break;
        if (c + 1 < d->heap_len && d->heap[c + 1].due_ms < d->heap[c].due_ms)
            c++;
        if (d->heap[c].due_ms >= e.due_ms)
            break;
        heap_set(d, i, d->heap[c]);
        i = c;
    }
    heap_set(d, i, e);
}

static bool
heap_push(struct gm_dispatcher *d, struct gm_job *job, int64_t due_ms)
{
    if (d->heap_len == d->heap_cap) {
        uint32_t n = d->heap_cap ? d->heap_cap * 2 : 64;
        struct gm_timer_entry *h = realloc(d->heap, n * sizeof *h);
        if (!h)
            return false;
        d->heap = h;
        d->heap_cap = n;
    }
    d->heap[d->heap_len] = (struct gm_timer_entry){due_ms, job};
    job->heap_idx = d->heap_len++;
    heap_up(d, job->heap_idx);
    return true;
}

static void
heap_remove(struct gm_dispatcher *d, struct gm_job *job)
{
    uint32_t i = job->heap_idx;
    if (i == UINT32_MAX)
        return;
    job->heap_idx = UINT32_MAX;
    d->heap_len--;
    if (i == d->heap_len)
        return;
    struct gm_timer_entry last = d->heap[d->heap_len];
    heap_set(d, i, last);
    heap_up(d, i);
    heap_down(d, last.job->heap_idx);
}

/* ------------------------------------------------------------------ */
/* Jobs: indexes                                                       */
/* ------------------------------------------------------------------ */

static uint32_t
unique_hash(const struct gm_function *fn, bool data_keyed, const char *key, size_t len)
{
    uint64_t h = gm_hash_bytes(GM_HASH_SEED, &fn, sizeof fn);
    h = gm_hash_bytes(h, &data_keyed, 1);
    return gm_hash_fold(gm_hash_bytes(h, key, len));
}

static struct gm_job *
unique_find(struct gm_dispatcher *d, const struct gm_function *fn, bool data_keyed,
            const char *key, size_t len)
{
    uint32_t h = unique_hash(fn, data_keyed, key, len);
    for (struct gm_hnode *n = gm_htab_bucket(&d->by_unique, h); n; n = n->next) {
        if (n->hash != h)
            continue;
        struct gm_job *j = gm_container_of(n, struct gm_job, by_unique);
        if (j->fn != fn || !!(j->flags & GM_JOB_DATA_KEYED) != data_keyed)
            continue;
        if (data_keyed) {
            if (j->data_len == len && memcmp(j->data, key, len) == 0)
                return j;
        } else if (j->unique_len == len && memcmp(gm_job_unique(j), key, len) == 0) {
            return j;
        }
    }
    return NULL;
}

/* The by-handle index's hash: a handle that ends in a number (ours all do:
   prefix, then the job counter) hashes to that number, so consecutive jobs
   sit in consecutive buckets.  A queue of millions of jobs then fills and
   empties its buckets in order, one cache miss per cache line of buckets
   instead of one per job.  Other handles hash by their bytes. */
static uint32_t
handle_hash(const char *h, size_t len)
{
    uint64_t number = 0, scale = 1;
    size_t digits = 0;
    while (digits < len && digits < 19 && h[len - 1 - digits] >= '0' && h[len - 1 - digits] <= '9') {
        number += (uint64_t)(h[len - 1 - digits] - '0') * scale;
        scale *= 10;
        digits++;
    }
    return digits ? (uint32_t)number : name_hash(h, len);
}

struct gm_job *
gm_disp_job_by_handle(struct gm_dispatcher *d, const char *h, size_t len)
{
    uint32_t hash = handle_hash(h, len);
    for (struct gm_hnode *n = gm_htab_bucket(&d->by_handle, hash); n; n = n->next) {
        struct gm_job *j = gm_container_of(n, struct gm_job, by_handle);
        if (n->hash == hash && j->handle_len == len && memcmp(gm_job_handle(j), h, len) == 0)
            return j;
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Jobs: life cycle                                                    */
/* ------------------------------------------------------------------ */

/* Sends NOOP to sleeping workers of fn: every one, or -w N of them.  A woken
   worker leaves every sleepers list, so the next job wakes the next ones. */
static void peer_leave_sleepers(struct gm_peer *p);

static void
wake_workers(struct gm_dispatcher *d, struct gm_function *fn)
{
    unsigned woken = 0;
    struct gm_list *n;
    while ((n = gm_list_first(&fn->sleepers))) {
        struct gm_reg *r = gm_container_of(n, struct gm_reg, sleep_link);
        struct gm_peer *p = r->peer;
        send_simple(d, p->id, GM_PKT_NOOP);
        p->noop_sent = true;
        peer_leave_sleepers(p);
        if (d->cfg->worker_wakeup && ++woken >= d->cfg->worker_wakeup)
            break;
    }
}

static void
job_enqueue(struct gm_dispatcher *d, struct gm_job *job, bool at_head)
{
    job->state = GM_JOB_QUEUED;
    if (at_head)
        gm_list_push_front(&job->fn->queue[job->prio], &job->link);
    else
        gm_list_push_back(&job->fn->queue[job->prio], &job->link);
    wake_workers(d, job->fn);
}

static void
detach(struct gm_attach *a)
{
    gm_list_remove(&a->job_link);
    gm_list_remove(&a->peer_link);
    a->job->nclients--;
    free(a);
}

static void persist_done(struct gm_dispatcher *d, struct gm_job *job);
static void persist_counter(struct gm_dispatcher *d);

/* Frees a job in any state: unlinks it from queue/worker/heap and indexes,
   detaches its clients, adjusts the function's counts, and tells storage
   the job is gone if it was stored (or is being stored).  A STORING job's
   block and waiters stay behind (state GM_JOB_FREED) until its ADD is
   acknowledged: the pending FIFO still points at it (pending_release). */
static void
job_free(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_function *fn = job->fn;
    if (job->state == GM_JOB_RUNNING)
        fn->running--;
    else
        fn->queued[job->prio]--;
    if (job->state == GM_JOB_PERSISTING) {
        fn->persisting--;
        free(job->waiters);
        job->waiters = NULL;
    }
    if ((job->flags & (GM_JOB_PERSISTED | GM_JOB_STORING)) && !d->tearing_down)
        persist_done(d, job);
    gm_list_remove(&job->link);
    heap_remove(d, job);
    gm_htab_remove(&d->by_handle, &job->by_handle);
    if (job->flags & GM_JOB_UNIQUE_INDEXED)
        gm_htab_remove(&d->by_unique, &job->by_unique);
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &job->clients) detach(gm_container_of(n, struct gm_attach, job_link));
    gm_block_unref(job->data_blk);
    job->data_blk = NULL;
    if (job->flags & GM_JOB_STORING)
        job->state = GM_JOB_FREED;
    else
        gm_block_unref(gm_job_block(job));
    d->job_count--;
    if (d->graceful && d->job_count == 0)
        gm_disp_request_shutdown(d, GM_STOP_NOW);
}

/* Sends a packet made of the job handle (plus an optional body) to every
   attached client, in attach order. */
static void
tell_clients(struct gm_dispatcher *d, struct gm_job *job, uint32_t type, const struct gm_slice *body)
{
    struct gm_field_ref h = {gm_job_handle(job), job->handle_len};
    struct gm_list *n;
    gm_list_each(n, &job->clients)
    {
        struct gm_attach *a = gm_container_of(n, struct gm_attach, job_link);
        send_packet(d, a->peer->id, type, &h, 1, body);
    }
}

/* Ends a job that did not complete: WORK_FAIL to its clients, then free. */
static void
job_fail(struct gm_dispatcher *d, struct gm_job *job)
{
    job->fn->failed++;
    tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
    job_free(d, job);
}

/* Takes a running job away from its worker (the worker died, dropped the
   function, or timed out): back to the head of its queue, or failed when it
   has used its -j attempts. */
static void
job_requeue(struct gm_dispatcher *d, struct gm_job *job, const char *why)
{
    struct gm_function *fn = job->fn;
    gm_list_remove(&job->link);
    heap_remove(d, job);
    job->reg = NULL;
    job->numerator = job->denominator = 0;
    if (job->retries < UINT8_MAX)
        job->retries++;
    fn->running--;
    fn->queued[job->prio]++;
    job->state = GM_JOB_QUEUED;
    if (job->flags & GM_JOB_IGNORED) {
        job_free(d, job);
        return;
    }
    if (d->cfg->job_retries && job->retries >= d->cfg->job_retries) {
        gm_log(GM_LOG_NOTICE, "Dropped job due to max retry count: %s %s (%s)", fn->name,
               gm_job_handle(job), why);
        job_fail(d, job);
        return;
    }
    gm_log(GM_LOG_WARNING, "requeueing %s %s: %s", fn->name, gm_job_handle(job), why);
    job_enqueue(d, job, true);
}

/* Detaches a leaving client from its jobs; a foreground job nobody waits
   for any more is dropped if queued, or left to finish unheard if running. */
static void
peer_abandon_jobs(struct gm_dispatcher *d, struct gm_peer *p)
{
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &p->waits)
    {
        struct gm_attach *a = gm_container_of(n, struct gm_attach, peer_link);
        struct gm_job *job = a->job;
        detach(a);
        if (job->nclients || (job->flags & (GM_JOB_BACKGROUND | GM_JOB_STORING)))
            continue;
        if (job->state == GM_JOB_RUNNING)
            job->flags |= GM_JOB_IGNORED;
        else
            job_free(d, job);
    }
}

void
gm_disp_job_cancel(struct gm_dispatcher *d, struct gm_job *job)
{
    tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &job->clients) detach(gm_container_of(n, struct gm_attach, job_link));
    job->fn->failed++;
    if (job->state == GM_JOB_RUNNING || job->state == GM_JOB_PERSISTING) {
        /* It runs on unheard (or, not yet stored, is dropped once it is);
           new submissions of its unique key start a new job rather than
           join a cancelled one. */
        job->flags |= GM_JOB_IGNORED | GM_JOB_CANCELLED;
        job->flags &= (uint8_t)~GM_JOB_BACKGROUND;
        if (job->flags & GM_JOB_UNIQUE_INDEXED) {
            gm_htab_remove(&d->by_unique, &job->by_unique);
            job->flags &= (uint8_t)~GM_JOB_UNIQUE_INDEXED;
        }
    } else {
        job_free(d, job);
    }
}

/* ------------------------------------------------------------------ */
/* Workers: registrations, sleep, choosing a job                       */
/* ------------------------------------------------------------------ */

static void
peer_join_sleepers(struct gm_peer *p)
{
    for (uint32_t i = 0; i < p->nregs; i++)
        if (!gm_list_linked(&p->regs[i]->sleep_link))
            gm_list_push_back(&p->regs[i]->fn->sleepers, &p->regs[i]->sleep_link);
}

static void
peer_leave_sleepers(struct gm_peer *p)
{
    for (uint32_t i = 0; i < p->nregs; i++)
        if (gm_list_linked(&p->regs[i]->sleep_link))
            gm_list_remove(&p->regs[i]->sleep_link);
}

static bool
peer_in_sleepers(const struct gm_peer *p)
{
    return p->sleeping && !p->noop_sent;
}

/* Finds the job this worker should run next: the highest priority among all
   its functions, functions of equal priority taking turns from the cursor.
   Returns the job and its registration, or NULL. */
static struct gm_job *
pick_job(struct gm_peer *p, struct gm_reg **reg_out, uint32_t *idx_out)
{
    uint32_t n = p->nregs;
    for (int prio = 0; prio < GM_PRIO_COUNT; prio++) {
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = (p->rr + k) % n;
            struct gm_list *first = gm_list_first(&p->regs[i]->fn->queue[prio]);
            if (first) {
                *reg_out = p->regs[i];
                *idx_out = i;
                return gm_container_of(first, struct gm_job, link);
            }
        }
    }
    return NULL;
}

static void
add_reg(struct gm_dispatcher *d, struct gm_peer *p, struct gm_function *fn, uint32_t timeout_ms)
{
    if (p->nregs == p->regs_cap) {
        uint32_t n = p->regs_cap ? p->regs_cap * 2 : 4;
        struct gm_reg **r = realloc(p->regs, n * sizeof *r);
        if (!r)
            goto oom;
        p->regs = r;
        p->regs_cap = n;
    }
    struct gm_reg *reg = calloc(1, sizeof *reg);
    if (!reg)
        goto oom;
    reg->fn = fn;
    reg->peer = p;
    reg->timeout_ms = timeout_ms;
    gm_list_init(&reg->sleep_link);
    p->regs[p->nregs++] = reg;
    fn->worker_count++;
    if (peer_in_sleepers(p)) {
        bool has_work = false;
        for (int prio = 0; prio < GM_PRIO_COUNT; prio++)
            has_work |= !gm_list_empty(&fn->queue[prio]);
        if (has_work) {
            send_simple(d, p->id, GM_PKT_NOOP);
            p->noop_sent = true;
            peer_leave_sleepers(p);
        } else {
            gm_list_push_back(&fn->sleepers, &reg->sleep_link);
        }
    }
    return;
oom:
    gm_log(GM_LOG_ERROR, "out of memory registering %s for %s", fn->name, p->addr);
}

/* Removes registration i: its running jobs go back to the queue. */
static void
remove_reg(struct gm_dispatcher *d, struct gm_peer *p, uint32_t i)
{
    struct gm_reg *reg = p->regs[i];
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &p->running)
    {
        struct gm_job *job = gm_container_of(n, struct gm_job, link);
        if (job->reg == reg)
            job_requeue(d, job, "worker dropped the function");
    }
    if (gm_list_linked(&reg->sleep_link))
        gm_list_remove(&reg->sleep_link);
    reg->fn->worker_count--;
    memmove(&p->regs[i], &p->regs[i + 1], (p->nregs - i - 1) * sizeof *p->regs);
    p->nregs--;
    if (p->rr > i)
        p->rr--;
    if (p->rr >= p->nregs)
        p->rr = 0;
    free(reg);
}

static void
peer_close(struct gm_dispatcher *d, gm_conn_id id)
{
    struct gm_peer *p = gm_disp_peer(d, id);
    if (!p)
        return;
    /* Out of the sleepers first, so requeued jobs wake somebody else. */
    if (peer_in_sleepers(p))
        peer_leave_sleepers(p);
    p->sleeping = false;
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &p->running)
        job_requeue(d, gm_container_of(n, struct gm_job, link), "worker disconnected");
    while (p->nregs)
        remove_reg(d, p, p->nregs - 1);
    peer_abandon_jobs(d, p);
    d->ports[gm_conn_thread(id)].peers[gm_conn_slot(id)] = NULL;
    free(p->regs);
    free(p->client_id);
    free(p);
    d->peer_count--;
}

/* ------------------------------------------------------------------ */
/* Submission                                                          */
/* ------------------------------------------------------------------ */

struct submit {
    const char *handle; size_t handle_len; /* replay: the stored handle; else NULL */
    const char *fn; size_t fn_len;
    const char *unique; size_t unique_len;
    const char *reducer; size_t reducer_len;
    const char *data; size_t data_len;
    uint8_t prio;
    bool background;
    int64_t when;          /* 0 = now */
};

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

/* The time, in ms.  Inside gm_disp_drain it is the time the drain began:
   one clock read per batch of packets rather than one per job. */
static int64_t
now_ms(struct gm_dispatcher *d)
{
    return d->drain_now_ms ? d->drain_now_ms : d->hooks.now_ms(d->hooks.arg);
}

static bool
attach_client(struct gm_job *job, struct gm_peer *p)
{
    struct gm_attach *a = malloc(sizeof *a);
    if (!a)
        return false;
    a->job = job;
    a->peer = p;
    gm_list_push_back(&job->clients, &a->job_link);
    gm_list_push_back(&p->waits, &a->peer_link);
    job->nclients++;
    return true;
}

static void
send_job_created(struct gm_dispatcher *d, gm_conn_id conn, const struct gm_job *job, uint8_t flags)
{
    struct gm_field_ref h = {gm_job_handle(job), job->handle_len};
    send_packet_flagged(d, conn, GM_PKT_JOB_CREATED, &h, 1, NULL, flags);
}

/* Builds a new job (not yet queued or indexed by unique).  Small data is
   copied next to the job; data in a block of its own (`own`, a big packet)
   is kept by reference.  Returns NULL if memory is short. */
static struct gm_job *
job_create(struct gm_dispatcher *d, struct gm_function *fn, const struct submit *s,
           struct gm_block *own)
{
    char made[GM_HANDLE_MAX];
    const char *handle = s->handle;
    size_t hlen = s->handle_len;
    if (!handle) {
        size_t plen = strlen(d->cfg->handle_prefix);
        memcpy(made, d->cfg->handle_prefix, plen);
        made[plen] = ':';
        hlen = plen + 1 + gm_fmt_u64(made + plen + 1, d->next_handle);
        handle = made;
    }
    /* While a durable queue is configured every job keeps a copy of its
       function's name, since the persistence thread reads only the job's
       own bytes: a background job is stored, and so is a foreground job
       that a background submit joins (submit_job). */
    bool fn_copy = d->persist.active || d->persist.on_shutdown;
    size_t text = hlen + 1 + s->unique_len + 1 + s->reducer_len + 1 +
                  (fn_copy ? fn->name_len + 1 : 0);
    size_t inline_data = own ? 0 : s->data_len;
    struct gm_block *b = gm_block_new(sizeof(struct gm_job) + text + inline_data);
    if (!b)
        return NULL;
    if (!s->handle) {
        d->next_handle++;
        if (d->persist.active && d->next_handle >= d->persist.handle_hw)
            persist_counter(d);
    }
    struct gm_job *job = (struct gm_job *)(void *)b->data;
    memset(job, 0, sizeof *job);
    job->fn = fn;
    gm_list_init(&job->link);
    gm_list_init(&job->clients);
    job->heap_idx = UINT32_MAX;
    job->prio = s->prio;
    job->when = s->when;
    job->created_s = (uint32_t)((now_ms(d) - d->start_ms) / 1000);
    job->handle_len = (uint8_t)hlen;
    job->unique_len = (uint8_t)s->unique_len;
    job->reducer_len = (uint16_t)s->reducer_len;
    char *t = job->text;
    memcpy(t, handle, hlen);
    t[hlen] = '\0';
    t += hlen + 1;
    if (s->unique_len)
        memcpy(t, s->unique, s->unique_len);
    t[s->unique_len] = '\0';
    t += s->unique_len + 1;
    if (s->reducer_len)
        memcpy(t, s->reducer, s->reducer_len);
    t[s->reducer_len] = '\0';
    t += s->reducer_len + 1;
    if (fn_copy) {
        memcpy(t, fn->name, fn->name_len + 1);
        t += fn->name_len + 1;
        job->flags |= GM_JOB_FN_COPY;
    }
    if (own) {
        job->data = s->data;
        job->data_blk = own;
    } else {
        if (s->data_len)
            memcpy(t, s->data, s->data_len);
        job->data = t;
    }
    job->data_len = (uint32_t)s->data_len;
    if (s->background)
        job->flags |= GM_JOB_BACKGROUND;
    gm_htab_insert(&d->by_handle, &job->by_handle, handle_hash(handle, hlen));
    d->job_count++;
    return job;
}

/* ------------------------------------------------------------------ */
/* Persistence (records out, acknowledgements in)                      */
/* ------------------------------------------------------------------ */

/* Adds a connection to a waiting list (grown as needed). */
static bool
waiters_add(struct gm_waiters **w, gm_conn_id conn)
{
    if (!*w || (*w)->n == (*w)->cap) {
        uint32_t cap = *w ? (*w)->cap * 2 : 2;
        struct gm_waiters *nw = realloc(*w, sizeof *nw + cap * sizeof nw->conn[0]);
        if (!nw)
            return false;
        if (!*w)
            nw->n = 0;
        nw->cap = cap;
        *w = nw;
    }
    (*w)->conn[(*w)->n++] = conn;
    return true;
}

/* Queues one record for the persistence thread; false if memory is short. */
static bool
persist_push(struct gm_dispatcher *d, const struct gm_prec *r)
{
    struct gm_disp_persist *ps = &d->persist;
    if (!ps->ovf_head && gm_prec_ring_push(&ps->ch->records, r)) {
        ps->produced = true;
        return true;
    }
    struct gm_prec_overflow *node = malloc(sizeof *node);
    if (!node)
        return false;
    node->rec = *r;
    node->next = NULL;
    if (ps->ovf_tail)
        ps->ovf_tail->next = node;
    else
        ps->ovf_head = node;
    ps->ovf_tail = node;
    return true;
}

static bool
pending_push(struct gm_dispatcher *d, uint64_t seq, struct gm_job *job)
{
    struct gm_disp_persist *ps = &d->persist;
    if (ps->pend_len == ps->pend_cap) {
        uint32_t cap = ps->pend_cap ? ps->pend_cap * 2 : 256;
        struct gm_pending *np = malloc(cap * sizeof *np);
        if (!np)
            return false;
        for (uint32_t i = 0; i < ps->pend_len; i++)
            np[i] = ps->pend[(ps->pend_head + i) % ps->pend_cap];
        free(ps->pend);
        ps->pend = np;
        ps->pend_cap = cap;
        ps->pend_head = 0;
    }
    ps->pend[(ps->pend_head + ps->pend_len) % ps->pend_cap] = (struct gm_pending){seq, job};
    ps->pend_len++;
    return true;
}

/* Sends the job's bytes to storage (the record holds references, so the
   job may end before the record is written).  With `track`, the job waits
   in the pending FIFO for the acknowledgement. */
static bool
persist_record_add(struct gm_dispatcher *d, struct gm_job *job, bool track)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++d->persist.seq;
    r.op = GM_QOP_ADD;
    r.priority = job->prio;
    r.when = job->when;
    r.blk = gm_job_block(job);
    r.handle = gm_job_handle(job);
    r.handle_len = job->handle_len;
    r.function = gm_job_fn_copy(job);
    r.function_len = job->fn->name_len;
    r.unique = gm_job_unique(job);
    r.unique_len = job->unique_len;
    r.data = job->data;
    r.data_len = job->data_len;
    r.data_blk = job->data_blk;
    if (track && !pending_push(d, r.seq, job))
        return false;
    gm_block_ref(r.blk);
    if (r.data_blk)
        gm_block_ref(r.data_blk);
    if (!persist_push(d, &r)) {
        gm_block_unref(r.blk);
        gm_block_unref(r.data_blk);
        if (track)
            d->persist.pend_len--;
        return false;
    }
    return true;
}

static bool
persist_add(struct gm_dispatcher *d, struct gm_job *job)
{
    return persist_record_add(d, job, true);
}

static void
persist_done(struct gm_dispatcher *d, struct gm_job *job)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++d->persist.seq;
    r.op = GM_QOP_DONE;
    r.handle_len = job->handle_len;
    memcpy(r.handle_copy, gm_job_handle(job), job->handle_len);
    if (!persist_push(d, &r))
        gm_log(GM_LOG_ERROR, "out of memory: %s stays stored and will run again after a restart",
               gm_job_handle(job));
}

/* Handle numbers are reserved in chunks: storage remembers a number above
   every handle given out, so a restart never hands out an old handle again
   (gearmand restarts at 1).  The counter record goes out before the ADD that
   needed it, so no job can be stored with a number the counter misses. */
#define HANDLE_CHUNK 65536

static void
persist_counter(struct gm_dispatcher *d)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++d->persist.seq;
    r.op = GM_QOP_COUNTER;
    r.when = (int64_t)(d->next_handle + HANDLE_CHUNK);
    if (persist_push(d, &r))
        d->persist.handle_hw = d->next_handle + HANDLE_CHUNK;
}

void
gm_disp_set_next_handle(struct gm_dispatcher *d, uint64_t next)
{
    if (next > d->next_handle)
        d->next_handle = next;
    if (next > d->persist.handle_hw)
        d->persist.handle_hw = next;
}

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
static void
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
        job->fn->persisting--;
        answer_waiters(d, job, a->ok);
        if (a->ok) {
            job->flags |= GM_JOB_PERSISTED;
            if (job->flags & GM_JOB_IGNORED) {
                job->state = GM_JOB_QUEUED; /* cancelled while being stored */
                job_free(d, job);
            } else if (job->when > 0 && job->when * 1000 > now_ms(d)) {
                job->state = GM_JOB_FUTURE;
                if (!heap_push(d, job, job->when * 1000))
                    job_enqueue(d, job, false);
            } else {
                job_enqueue(d, job, false);
            }
        } else {
            gm_log(GM_LOG_ERROR, "%s %s not stored: %s", job->fn->name, gm_job_handle(job),
                   a->reason);
            job->fn->failed++;
            tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
            job->state = GM_JOB_QUEUED;
            job_free(d, job);
        }
    }
}

static void
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

/* Publishes records (moving overflow into the ring first) and wakes the
   persistence thread. */
static void
persist_flush(struct gm_dispatcher *d)
{
    struct gm_disp_persist *ps = &d->persist;
    if (!ps->ch)
        return;
    while (ps->ovf_head) {
        if (!gm_prec_ring_push(&ps->ch->records, &ps->ovf_head->rec)) {
            atomic_store(&ps->ch->disp_wants_space, 1);
            atomic_thread_fence(memory_order_seq_cst);
            if (!gm_prec_ring_push(&ps->ch->records, &ps->ovf_head->rec))
                break;
        }
        struct gm_prec_overflow *node = ps->ovf_head;
        ps->ovf_head = node->next;
        if (!ps->ovf_head)
            ps->ovf_tail = NULL;
        free(node);
        ps->produced = true;
    }
    if (ps->produced) {
        gm_prec_ring_publish(&ps->ch->records);
        ps->produced = false;
        if (ps->wake)
            ps->wake(ps->arg);
    }
}

/* --store-queue-on-shutdown: every background job still here goes to
   storage now (the persistence thread writes them after we stop). */
static void
persist_store_all(struct gm_dispatcher *d)
{
    size_t n = 0;
    for (uint32_t b = 0; b <= d->by_handle.mask; b++)
        for (struct gm_hnode *h = d->by_handle.buckets[b]; h; h = h->next) {
            struct gm_job *job = gm_container_of(h, struct gm_job, by_handle);
            if ((job->flags & GM_JOB_FN_COPY) && (job->flags & GM_JOB_BACKGROUND) &&
                !(job->flags & GM_JOB_IGNORED) && persist_record_add(d, job, false))
                n++;
        }
    persist_counter(d); /* so handles of this run are not given out again */
    gm_log(GM_LOG_NOTICE, "storing %zu background jobs for the next start", n);
    /* The ring may be smaller than the queue: hand it over piece by piece. */
    persist_flush(d);
    while (d->persist.ovf_head) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        persist_flush(d);
    }
}

void
gm_disp_attach_persist(struct gm_dispatcher *d, struct gm_persist_channel *ch,
                       void (*wake)(void *arg), void *arg, bool stores_epoch, bool on_shutdown)
{
    d->persist.ch = ch;
    d->persist.wake = wake;
    d->persist.arg = arg;
    d->persist.stores_epoch = stores_epoch;
    d->persist.on_shutdown = on_shutdown;
    d->persist.active = !on_shutdown;
}

uint64_t
gm_disp_job_count(const struct gm_dispatcher *d)
{
    return d->job_count;
}

int
gm_disp_replay_row(struct gm_dispatcher *d, const struct gm_qrow *row, char *err, size_t errlen)
{
    if (row->handle_len == 0 || row->handle_len >= GM_HANDLE_MAX) {
        snprintf(err, errlen, "bad handle length %u", row->handle_len);
        return -1;
    }
    if (row->unique_len > GM_UNIQUE_MAX) {
        snprintf(err, errlen, "unique key longer than %d bytes", GM_UNIQUE_MAX);
        return -1;
    }
    if (row->priority < 0 || row->priority >= GM_PRIO_COUNT) {
        snprintf(err, errlen, "bad priority %d", row->priority);
        return -1;
    }
    const struct gm_name_fault *bad = gm_name_check(GM_NAME_FUNCTION, row->function, row->function_len);
    if (bad) {
        snprintf(err, errlen, "%s", bad->text);
        return -1;
    }
    if (gm_disp_job_by_handle(d, row->handle, row->handle_len))
        return 1;
    struct gm_function *fn = gm_disp_function_get(d, row->function, row->function_len);
    if (!fn) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct submit s = {0};
    s.handle = row->handle;
    s.handle_len = row->handle_len;
    s.fn = row->function;
    s.fn_len = row->function_len;
    s.unique = row->unique;
    s.unique_len = row->unique_len;
    s.data = row->data;
    s.data_len = row->data_len;
    s.prio = (uint8_t)row->priority;
    s.background = true;
    s.when = row->when > 0 && row->when <= GM_EPOCH_MAX ? row->when : 0;
    struct gm_job *job = job_create(d, fn, &s, NULL);
    if (!job) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (d->persist.active)
        job->flags |= GM_JOB_PERSISTED;
    /* Index the unique key unless another stored job already holds it:
       storage never merges jobs. */
    bool data_keyed = s.unique_len == 1 && s.unique[0] == '-';
    const char *key = data_keyed ? s.data : s.unique;
    size_t key_len = data_keyed ? s.data_len : s.unique_len;
    if (s.unique_len && !(data_keyed && !s.data_len) &&
        !unique_find(d, fn, data_keyed, key, key_len)) {
        job->flags |= GM_JOB_UNIQUE_INDEXED | (data_keyed ? GM_JOB_DATA_KEYED : 0);
        gm_htab_insert(&d->by_unique, &job->by_unique, unique_hash(fn, data_keyed, key, key_len));
    }
    fn->queued[job->prio]++;
    if (s.when > 0 && s.when * 1000 > now_ms(d) && heap_push(d, job, s.when * 1000))
        job->state = GM_JOB_FUTURE;
    else
        job_enqueue(d, job, false);
    /* New handles continue above the replayed ones of our prefix. */
    size_t plen = strlen(d->cfg->handle_prefix);
    uint64_t n;
    if (row->handle_len > plen + 1 && memcmp(row->handle, d->cfg->handle_prefix, plen) == 0 &&
        row->handle[plen] == ':' &&
        gm_parse_u64(row->handle + plen + 1, row->handle_len - plen - 1, UINT64_MAX - 1, &n) &&
        n >= d->next_handle)
        d->next_handle = n + 1;
    return 0;
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
    if (s->unique_len > GM_UNIQUE_MAX) {
        send_error(d, p->id, "ARGUMENT_TOO_LARGE", "Unique value too large");
        return;
    }
    if (refuse_bad_name(d, p->id, GM_NAME_FUNCTION, s->fn, s->fn_len))
        return;
    struct gm_function *fn = gm_disp_function_get(d, s->fn, s->fn_len);
    if (!fn) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    bool data_keyed = s->unique_len == 1 && s->unique[0] == '-';
    bool indexed = s->unique_len > 0 && !(data_keyed && s->data_len == 0);
    const char *key = data_keyed ? s->data : s->unique;
    size_t key_len = data_keyed ? s->data_len : s->unique_len;
    if (indexed) {
        struct gm_job *old = unique_find(d, fn, data_keyed, key, key_len);
        if (old) {
            if (s->background && d->persist.active && !(old->flags & GM_JOB_PERSISTED)) {
                /* Not stored (yet): this submitter hears JOB_CREATED once
                   the job is durable. */
                join_unstored(d, p, old);
                return;
            }
            if (!s->background && !attach_client(old, p)) {
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
    if (indexed) {
        job->flags |= GM_JOB_UNIQUE_INDEXED | (data_keyed ? GM_JOB_DATA_KEYED : 0);
        gm_htab_insert(&d->by_unique, &job->by_unique, unique_hash(fn, data_keyed, key, key_len));
    }
    if (!s->background && !attach_client(job, p)) {
        fn->queued[job->prio]++;
        job->state = GM_JOB_QUEUED;
        job_free(d, job);
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    if (durable) {
        /* JOB_CREATED waits for the commit (persist_acked). */
        fn->queued[job->prio]++;
        fn->persisting++;
        fn->submitted++;
        job->state = GM_JOB_PERSISTING;
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
    if (s->when > 0 && s->when * 1000 > now_ms(d)) {
        job->state = GM_JOB_FUTURE;
        if (!heap_push(d, job, s->when * 1000)) {
            job_free(d, job);
            send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
            return;
        }
    } else {
        job_enqueue(d, job, false);
    }
    send_job_created(d, p->id, job, s->background ? 0 : more_replies_coming(p));
    gm_log(GM_LOG_NOTICE, "accepted,%s,%s,%lld", fn->name, gm_job_unique(job), (long long)s->when);
}

static const char *
field(const struct gm_in *m, int i, size_t *len)
{
    *len = m->u.fields.len[i];
    return m->payload + m->u.fields.start[i];
}

static void
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

/* ------------------------------------------------------------------ */
/* Worker requests                                                     */
/* ------------------------------------------------------------------ */

static void
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
    struct gm_function *fn = gm_disp_function_get(d, name, len);
    if (!fn) {
        send_error(d, p->id, "QUEUE_ERROR", "MEMORY_ALLOCATION_FAILURE");
        return;
    }
    add_reg(d, p, fn, timeout);
}

static void
on_cant_do(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *name = field(m, 0, &len);
    for (uint32_t i = p->nregs; i-- > 0;) {
        struct gm_function *fn = p->regs[i]->fn;
        if (fn->name_len == len && memcmp(fn->name, name, len) == 0)
            remove_reg(d, p, i);
    }
}

static void
on_reset_abilities(struct gm_dispatcher *d, struct gm_peer *p)
{
    while (p->nregs)
        remove_reg(d, p, p->nregs - 1);
}

static void
on_pre_sleep(struct gm_dispatcher *d, struct gm_peer *p)
{
    struct gm_reg *reg;
    uint32_t idx;
    if (pick_job(p, &reg, &idx)) {
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

static void
on_grab(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    if (peer_in_sleepers(p))
        peer_leave_sleepers(p);
    p->sleeping = false;
    p->noop_sent = false;
    struct gm_reg *reg;
    uint32_t idx;
    struct gm_job *job = pick_job(p, &reg, &idx);
    if (!job) {
        send_simple(d, p->id, GM_PKT_NO_JOB);
        return;
    }
    struct gm_function *fn = job->fn;
    p->rr = p->nregs ? (idx + 1) % p->nregs : 0;
    gm_list_remove(&job->link);
    fn->queued[job->prio]--;
    fn->running++;
    job->state = GM_JOB_RUNNING;
    job->reg = reg;
    gm_list_push_back(&p->running, &job->link);
    if (reg->timeout_ms)
        heap_push(d, job, now_ms(d) + reg->timeout_ms);

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
    struct gm_slice body = {job->data_blk ? job->data_blk : gm_job_block(job), job->data,
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

static void
on_work(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    struct gm_job *job = worker_job(d, p, m);
    if (!job) {
        const char *text = "Job given in work result not found";
        if (m->type == GM_PKT_WORK_DATA || m->type == GM_PKT_WORK_WARNING)
            text = "Job does not exist on server";
        else if (m->type == GM_PKT_WORK_EXCEPTION)
            text = "An exception was received for a job that does not exist";
        send_error(d, p->id, "JOB_NOT_FOUND", text);
        return;
    }
    if (m->type == GM_PKT_WORK_STATUS) {
        size_t nl, dl;
        const char *num = field(m, 1, &nl);
        const char *den = field(m, 2, &dl);
        job->numerator = gm_atou32_lenient(num, nl);
        job->denominator = gm_atou32_lenient(den, dl);
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
        }
        job_free(d, job);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Client requests                                                     */
/* ------------------------------------------------------------------ */

static void
on_get_status(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *h = field(m, 0, &len);
    struct gm_job *job = gm_disp_job_by_handle(d, h, len);
    char num[20], den[20];
    struct gm_field_ref f[5] = {{h, len}, {"0", 1}, {"0", 1}, {"0", 1}, {"0", 1}};
    if (job) {
        f[1].ptr = "1";
        f[2].ptr = job->state == GM_JOB_RUNNING ? "1" : "0";
        f[3] = (struct gm_field_ref){num, gm_fmt_u64(num, job->numerator)};
        f[4] = (struct gm_field_ref){den, gm_fmt_u64(den, job->denominator)};
    }
    send_packet(d, p->id, GM_PKT_STATUS_RES, f, 5, NULL);
}

static void
on_get_status_unique(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    size_t len;
    const char *u = field(m, 0, &len);
    struct gm_job *job = NULL;
    if (len) {
        struct gm_list *n;
        gm_list_each(n, &d->function_list)
        {
            job = unique_find(d, gm_container_of(n, struct gm_function, link), false, u, len);
            if (job)
                break;
        }
    }
    char num[20], den[20], cnt[20];
    struct gm_field_ref f[6] = {{u, len}, {"0", 1}, {"0", 1}, {"0", 1}, {"0", 1}, {"0", 1}};
    if (job) {
        f[1].ptr = "1";
        f[2].ptr = job->state == GM_JOB_RUNNING ? "1" : "0";
        f[3] = (struct gm_field_ref){num, gm_fmt_u64(num, job->numerator)};
        f[4] = (struct gm_field_ref){den, gm_fmt_u64(den, job->denominator)};
        f[5] = (struct gm_field_ref){cnt, gm_fmt_u64(cnt, job->nclients)};
    }
    send_packet(d, p->id, GM_PKT_STATUS_RES_UNIQUE, f, 6, NULL);
}

static void
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

static void
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

static void
on_echo(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    struct gm_slice body = {m->blk, m->payload, m->len};
    send_packet(d, p->id, GM_PKT_ECHO_RES, NULL, 0, &body);
}

static void
on_packet(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    switch (m->type) {
    case GM_PKT_SUBMIT_JOB:
    case GM_PKT_SUBMIT_JOB_BG:
    case GM_PKT_SUBMIT_JOB_HIGH:
    case GM_PKT_SUBMIT_JOB_HIGH_BG:
    case GM_PKT_SUBMIT_JOB_LOW:
    case GM_PKT_SUBMIT_JOB_LOW_BG:
    case GM_PKT_SUBMIT_JOB_EPOCH:
    case GM_PKT_SUBMIT_JOB_SCHED:
    case GM_PKT_SUBMIT_REDUCE_JOB:
    case GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND:
        on_submit(d, p, m);
        break;
    case GM_PKT_CAN_DO:
    case GM_PKT_CAN_DO_TIMEOUT:
        on_can_do(d, p, m);
        break;
    case GM_PKT_CANT_DO:
        on_cant_do(d, p, m);
        break;
    case GM_PKT_RESET_ABILITIES:
        on_reset_abilities(d, p);
        break;
    case GM_PKT_PRE_SLEEP:
        on_pre_sleep(d, p);
        break;
    case GM_PKT_GRAB_JOB:
    case GM_PKT_GRAB_JOB_UNIQ:
    case GM_PKT_GRAB_JOB_ALL:
        on_grab(d, p, m);
        break;
    case GM_PKT_WORK_STATUS:
    case GM_PKT_WORK_COMPLETE:
    case GM_PKT_WORK_FAIL:
    case GM_PKT_WORK_EXCEPTION:
    case GM_PKT_WORK_DATA:
    case GM_PKT_WORK_WARNING:
        on_work(d, p, m);
        break;
    case GM_PKT_GET_STATUS:
        on_get_status(d, p, m);
        break;
    case GM_PKT_GET_STATUS_UNIQUE:
        on_get_status_unique(d, p, m);
        break;
    case GM_PKT_OPTION_REQ:
        on_option(d, p, m);
        break;
    case GM_PKT_SET_CLIENT_ID:
        on_set_client_id(d, p, m);
        break;
    case GM_PKT_ECHO_REQ:
        on_echo(d, p, m);
        break;
    case GM_PKT_ALL_YOURS:
        break; /* accepted and ignored: it only tells us the worker is ours */
    default:
        /* The I/O thread answers packets a client may not send; anything
           reaching here is a server-to-client type. */
        send_error(d, p->id, "INVALID_COMMAND", "Command not expected");
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Front-end (HTTP) requests                                           */
/* ------------------------------------------------------------------ */

/* A front-end request: a job submission (the replies go back as packets,
   which the front-end turns into its response), or a question the
   front-end answers from the state view. */
static void
on_frontend(struct gm_dispatcher *d, struct gm_peer *p, struct gm_in *m)
{
    const struct gm_frontend *fe = d->cfg->frontend;
    const struct gm_fe_req *r = &m->u.fe;
    if (!fe)
        return;
    if (r->kind == GM_FE_SUBMIT) {
        struct submit s = {0};
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
    struct gm_fe_output o = fe->serve(m->payload, r, p->is_loopback, d->cfg->frontend_remote_actions,
                                      &d->view);
    struct out_ctx oc;
    if (!o.blk || !out_begin(d, p->id, &oc)) {
        gm_block_unref(o.blk);
        gm_disp_send_close(d, p->id);
        return;
    }
    oc.msg->flags = GM_OUT_F_RAW;
    oc.msg->body.blk = o.blk;
    oc.msg->body.ptr = o.blk->data;
    oc.msg->body.len = (uint32_t)o.len;
    out_end(&oc);
    if (o.close)
        gm_disp_send_close(d, p->id);
}

/* ------------------------------------------------------------------ */
/* Timers                                                              */
/* ------------------------------------------------------------------ */

int64_t
gm_disp_run_timers(struct gm_dispatcher *d, int64_t now)
{
    while (d->heap_len && d->heap[0].due_ms <= now) {
        struct gm_job *job = d->heap[0].job;
        heap_remove(d, job);
        if (job->state == GM_JOB_FUTURE) {
            job_enqueue(d, job, false);
        } else if (job->state == GM_JOB_RUNNING) {
            /* CAN_DO_TIMEOUT: the protocol says the job fails. */
            gm_log(GM_LOG_WARNING, "Worker timeout reached on job %s, failing it",
                   gm_job_handle(job));
            if (job->flags & GM_JOB_IGNORED)
                job_free(d, job);
            else
                job_fail(d, job);
        }
    }
    return d->heap_len ? d->heap[0].due_ms : -1;
}

/* ------------------------------------------------------------------ */
/* Drain and flush                                                     */
/* ------------------------------------------------------------------ */

/* Drops one message's block reference; consecutive messages from the same
   block (the common case: one socket read) cost one atomic operation. */
static void
release_in(struct gm_dispatcher *d, struct gm_block *b)
{
    if (!b)
        return;
    if (b == d->unref_blk) {
        d->unref_n++;
        return;
    }
    if (d->unref_blk)
        gm_block_unref_n(d->unref_blk, d->unref_n);
    d->unref_blk = b;
    d->unref_n = 1;
}

static void
release_flush(struct gm_dispatcher *d)
{
    if (d->unref_blk)
        gm_block_unref_n(d->unref_blk, d->unref_n);
    d->unref_blk = NULL;
    d->unref_n = 0;
}

static void
handle_in(struct gm_dispatcher *d, struct gm_in *m)
{
    struct gm_peer *p;
    switch (m->kind) {
    case GM_IN_OPEN:
        peer_open(d, m);
        break;
    case GM_IN_CLOSE:
        peer_close(d, m->conn);
        break;
    case GM_IN_PACKET:
        if ((p = gm_disp_peer(d, m->conn)))
            on_packet(d, p, m);
        break;
    case GM_IN_TEXT:
        if ((p = gm_disp_peer(d, m->conn)))
            gm_admin_execute(d, p, m);
        break;
    case GM_IN_FRONTEND:
        if ((p = gm_disp_peer(d, m->conn)))
            on_frontend(d, p, m);
        break;
    default:
        break;
    }
    release_in(d, m->blk);
}

size_t
gm_disp_drain(struct gm_dispatcher *d, size_t budget)
{
    size_t done = 0;
    bool any = true;
    drain_acks(d);
    d->drain_now_ms = d->hooks.now_ms(d->hooks.arg);
    while (any && done < budget) {
        any = false;
        for (unsigned t = 0; t < d->nports; t++) {
            struct gm_in_ring *r = &d->ports[t].ch->in;
            for (int k = 0; k < DRAIN_BURST && done < budget; k++) {
                struct gm_in *m = gm_in_ring_peek(r);
                if (!m)
                    break;
                handle_in(d, m);
                gm_in_ring_consume(r);
                done++;
                any = true;
            }
            gm_in_ring_release(r);
        }
    }
    d->drain_now_ms = 0;
    release_flush(d);
    return done;
}

void
gm_disp_flush(struct gm_dispatcher *d)
{
    release_flush(d);
    drain_acks(d);
    persist_flush(d);
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        struct gm_channel *ch = port->ch;
        bool wake = false;
        while (port->ovf_head) {
            struct gm_out *slot = gm_out_ring_alloc(&ch->out);
            if (!slot) {
                /* Ask the I/O thread to wake us when it has drained, then
                   look once more in case it drained in between. */
                atomic_store(&ch->disp_wants_space, 1);
                atomic_thread_fence(memory_order_seq_cst);
                slot = gm_out_ring_alloc(&ch->out);
                if (!slot)
                    break;
            }
            struct gm_out_overflow *node = port->ovf_head;
            *slot = node->msg;
            gm_out_ring_produce(&ch->out);
            port->produced = true;
            port->ovf_head = node->next;
            if (!port->ovf_head)
                port->ovf_tail = NULL;
            free(node);
        }
        if (port->produced) {
            gm_out_ring_publish(&ch->out);
            port->produced = false;
            wake = true;
        }
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&ch->io_wants_space, memory_order_relaxed) &&
            atomic_exchange(&ch->io_wants_space, 0))
            wake = true;
        if (wake && d->hooks.wake_io)
            d->hooks.wake_io(d->hooks.arg, t);
    }
}

void
gm_disp_request_shutdown(struct gm_dispatcher *d, int how)
{
    if (d->shutdown_requested)
        return;
    if (how == GM_STOP_NOW)
        d->shutdown_requested = true;
    if (d->hooks.request_shutdown)
        d->hooks.request_shutdown(d->hooks.arg, how);
}

void
gm_disp_begin_graceful(struct gm_dispatcher *d)
{
    d->graceful = true;
    if (d->job_count == 0)
        gm_disp_request_shutdown(d, GM_STOP_NOW);
}

/* ------------------------------------------------------------------ */
/* Creation and teardown                                               */
/* ------------------------------------------------------------------ */

static int64_t
wall_clock_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct gm_dispatcher *
gm_disp_new(const struct gm_server_config *cfg, struct gm_channel *chans, unsigned n,
            const struct gm_disp_hooks *hooks)
{
    struct gm_dispatcher *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cfg = cfg;
    if (hooks)
        d->hooks = *hooks;
    if (!d->hooks.now_ms)
        d->hooks.now_ms = wall_clock_ms;
    d->nports = n;
    d->next_handle = 1;
    gm_list_init(&d->function_list);
    atomic_init(&d->stop_flag, 0);
    atomic_init(&d->graceful_flag, 0);
    d->ports = calloc(n, sizeof *d->ports);
    if (!d->ports || gm_htab_init(&d->functions, 64) < 0 ||
        gm_htab_init(&d->by_handle, cfg->hashtable_buckets) < 0 ||
        gm_htab_init(&d->by_unique, cfg->hashtable_buckets) < 0) {
        gm_disp_free(d);
        return NULL;
    }
    for (unsigned i = 0; i < n; i++)
        d->ports[i].ch = &chans[i];
    d->start_ms = d->hooks.now_ms(d->hooks.arg);
    gm_disp_view_init(d);
    return d;
}

void
gm_disp_free(struct gm_dispatcher *d)
{
    if (!d)
        return;
    d->tearing_down = true;
    d->graceful = false;
    for (unsigned t = 0; d->ports && t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        for (uint32_t s = 0; s < port->npeers; s++)
            if (port->peers[s])
                peer_close(d, port->peers[s]->id);
        free(port->peers);
        while (port->ovf_head) {
            struct gm_out_overflow *node = port->ovf_head;
            port->ovf_head = node->next;
            gm_block_unref(node->msg.body.blk);
            free(node);
        }
    }
    /* Whatever is left is queued or waiting for its time. */
    struct gm_list *n, *tmp;
    gm_list_each_safe(n, tmp, &d->function_list)
    {
        struct gm_function *fn = gm_container_of(n, struct gm_function, link);
        for (int prio = 0; prio < GM_PRIO_COUNT; prio++) {
            struct gm_list *jn, *jt;
            gm_list_each_safe(jn, jt, &fn->queue[prio])
                job_free(d, gm_container_of(jn, struct gm_job, link));
        }
    }
    while (d->heap_len)
        job_free(d, d->heap[0].job);
    while (d->persist.pend_len) {
        struct gm_job *job = d->persist.pend[d->persist.pend_head].job;
        d->persist.pend_head = (d->persist.pend_head + 1) % d->persist.pend_cap;
        d->persist.pend_len--;
        bool husk = job->state == GM_JOB_FREED || (job->flags & GM_JOB_STORING);
        if (job->state != GM_JOB_FREED)
            job_free(d, job);
        if (husk)
            pending_release(d, job, false);
    }
    free(d->persist.pend);
    while (d->persist.ovf_head) {
        struct gm_prec_overflow *node = d->persist.ovf_head;
        d->persist.ovf_head = node->next;
        gm_block_unref(node->rec.blk);
        gm_block_unref(node->rec.data_blk);
        free(node);
    }
    gm_list_each_safe(n, tmp, &d->function_list)
        free(gm_container_of(n, struct gm_function, link));
    release_flush(d);
    free(d->heap);
    gm_htab_destroy(&d->functions);
    gm_htab_destroy(&d->by_handle);
    gm_htab_destroy(&d->by_unique);
    free(d->ports);
    if (d->loop && !d->loop_shared)
        ev_loop_destroy(d->loop);
    free(d);
}

void
gm_disp_function_drop(struct gm_dispatcher *d, struct gm_function *fn)
{
    for (int prio = 0; prio < GM_PRIO_COUNT; prio++) {
        struct gm_list *jn, *jt;
        gm_list_each_safe(jn, jt, &fn->queue[prio])
        {
            struct gm_job *job = gm_container_of(jn, struct gm_job, link);
            tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
            job_free(d, job);
        }
    }
    for (uint32_t i = d->heap_len; i-- > 0;) {
        struct gm_job *job = d->heap[i].job;
        if (job->fn == fn && job->state == GM_JOB_FUTURE) {
            tell_clients(d, job, GM_PKT_WORK_FAIL, NULL);
            job_free(d, job);
            i = d->heap_len; /* the heap moved; rescan (drops are rare) */
        }
    }
    gm_htab_remove(&d->functions, &fn->hnode);
    gm_list_remove(&fn->link);
    d->function_count--;
    free(fn);
}

/* ------------------------------------------------------------------ */
/* libev glue                                                          */
/* ------------------------------------------------------------------ */

static void
arm_timer(struct gm_dispatcher *d, int64_t next_ms)
{
    ev_timer_stop(d->loop, &d->timer);
    if (next_ms < 0)
        return;
    double delay = (double)(next_ms - now_ms(d)) / 1000.0;
    if (delay < 0)
        delay = 0;
    ev_timer_set(&d->timer, delay, 0.);
    ev_timer_start(d->loop, &d->timer);
}

void
gm_disp_final(struct gm_dispatcher *d)
{
    if (d->persist.on_shutdown)
        persist_store_all(d);
    /* Last words (the `shutdown` command's OK) go out before we stop; the
       I/O threads stop after us and write them. */
    gm_disp_flush(d);
}

static void
on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct gm_dispatcher *d = w->data;
    (void)loop;
    (void)revents;
    if (atomic_load(&d->stop_flag)) {
        if (!d->loop_shared) {
            gm_disp_final(d);
            ev_break(d->loop, EVBREAK_ALL);
        }
        return;
    }
    gm_busy_poll_activity(&d->poll, d->loop);
    if (atomic_exchange(&d->graceful_flag, 0))
        gm_disp_begin_graceful(d);
    /* A full budget means more is waiting: the idle watcher comes back for
       it after this iteration's flush and timers. */
    if (gm_disp_drain(d, LOOP_BUDGET) == LOOP_BUDGET)
        ev_idle_start(d->loop, &d->more);
}

static void
on_more(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct gm_dispatcher *d = w->data;
    (void)revents;
    if (gm_disp_drain(d, LOOP_BUDGET) < LOOP_BUDGET)
        ev_idle_stop(loop, w);
}

void
gm_disp_prepare(struct gm_dispatcher *d)
{
    gm_disp_flush(d);
    arm_timer(d, d->heap_len ? d->heap[0].due_ms : -1);
}

static void
on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    gm_disp_prepare(w->data);
}

static void
on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_dispatcher *d = w->data;
    (void)loop;
    (void)revents;
    gm_disp_run_timers(d, now_ms(d));
}

int
gm_disp_loop_init(struct gm_dispatcher *d, struct ev_loop *shared)
{
    d->loop_shared = shared != NULL;
    d->loop = shared ? shared : ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!d->loop)
        return -1;
    ev_async_init(&d->wake, on_wake);
    d->wake.data = d;
    ev_async_start(d->loop, &d->wake);
    ev_prepare_init(&d->prepare, on_prepare);
    d->prepare.data = d;
    if (!shared) /* a host loop calls gm_disp_prepare itself, in its own order */
        ev_prepare_start(d->loop, &d->prepare);
    ev_timer_init(&d->timer, on_timer, 0., 0.);
    d->timer.data = d;
    ev_idle_init(&d->more, on_more);
    d->more.data = d;
    gm_busy_poll_init(&d->poll, shared ? 0 : d->cfg->busy_poll_us);
    if (shared)
        ev_idle_start(d->loop, &d->more); /* work may be waiting already */
    return 0;
}

void *
gm_disp_thread_main(void *arg)
{
    struct gm_dispatcher *d = arg;
    gm_log_thread_name("disp");
    /* Messages may have arrived before the loop started. */
    ev_idle_start(d->loop, &d->more);
    ev_run(d->loop, 0);
    return NULL;
}

void
gm_disp_wake(struct gm_dispatcher *d)
{
    ev_async_send(d->loop, &d->wake);
}

void
gm_disp_stop(struct gm_dispatcher *d)
{
    atomic_store(&d->stop_flag, 1);
    ev_async_send(d->loop, &d->wake);
}

void
gm_disp_request_graceful(struct gm_dispatcher *d)
{
    atomic_store(&d->graceful_flag, 1);
    ev_async_send(d->loop, &d->wake);
}
