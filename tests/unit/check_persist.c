/*
 * check_persist.c: unit tests for the persistence thread
 * (libgearman-server/persist/persist.h) over a fake in-memory backend.
 *
 * The test plays the dispatcher: it pushes struct gm_prec records on the
 * channel's ring, wakes the thread, and reads struct gm_pack
 * acknowledgements back; the fake backend records every batch it is given
 * and can be told to fail, refuse, or stall.  Covered: ADD/DONE pairs
 * cancelling inside a batch, batch_max and the batch delay, the final
 * flush at stop, a backend that goes down (refusals, held DONEs,
 * reconnect), a live backend refusing DONEs, a full ack ring, and a
 * backend call that does not return (issue 12.5).  Needs no services.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/persist/persist.h"
#include "libgearman-server/persist/queue_backend.h"
#include "tests/unit/queue_harness.h"

#define FAKE_MAX 8192

/* What the fake backend was given: one entry per record it wrote, with
   the batch it came in. */
struct fake_rec {
    unsigned batch;
    uint8_t op;
    char handle[GM_HANDLE_MAX];
};

static struct {
    pthread_mutex_t mu;
    int fail;            /* write_batch fails while set (the backend is down) */
    int refuse_dones;    /* a batch with a DONE is refused while set (the backend is up) */
    int refuse_multi;    /* a batch of more than one record is refused (the backend is up) */
    int stall;           /* write_batch waits while set */
    int reconnect_ok;    /* reconnect succeeds while set */
    int lock_other;      /* another server holds the --ha lock while set */
    unsigned leads;      /* lead calls */
    unsigned attempts;   /* write_batch calls */
    unsigned batches;    /* successful write_batch calls */
    unsigned reconnects; /* reconnect calls */
    unsigned closed;
    size_t nrec;
    struct fake_rec rec[FAKE_MAX];
    size_t batch_size[FAKE_MAX];
} F;

static int
fake_write(void *state, const struct gm_qrecord *recs, size_t n, char *err, size_t errlen)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    F.attempts++;
    while (F.stall) {
        pthread_mutex_unlock(&F.mu);
        sleep_ms(1);
        pthread_mutex_lock(&F.mu);
    }
    if (F.fail) {
        pthread_mutex_unlock(&F.mu);
        snprintf(err, errlen, "fake backend is down");
        return -1;
    }
    bool has_done = false;
    for (size_t i = 0; i < n; i++)
        has_done |= recs[i].op == GM_QOP_DONE;
    if ((F.refuse_dones && has_done) || (F.refuse_multi && n > 1)) {
        pthread_mutex_unlock(&F.mu);
        snprintf(err, errlen, "fake backend refuses this batch");
        return -1;
    }
    F.batch_size[F.batches] = n;
    for (size_t i = 0; i < n && F.nrec < FAKE_MAX; i++) {
        struct fake_rec *r = &F.rec[F.nrec++];
        r->batch = F.batches;
        r->op = recs[i].op;
        if (recs[i].op == GM_QOP_COUNTER)
            snprintf(r->handle, sizeof r->handle, "%lld", (long long)recs[i].when);
        else
            snprintf(r->handle, sizeof r->handle, "%.*s", (int)recs[i].handle_len, recs[i].handle);
    }
    F.batches++;
    pthread_mutex_unlock(&F.mu);
    return 0;
}

static int
fake_reconnect(void *state, char *err, size_t errlen)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    F.reconnects++;
    int ok = F.reconnect_ok;
    pthread_mutex_unlock(&F.mu);
    if (!ok) {
        snprintf(err, errlen, "still down");
        return -1;
    }
    return 0;
}

static bool
fake_alive(void *state)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    bool up = !F.fail;
    pthread_mutex_unlock(&F.mu);
    return up;
}

/* --ha: the lock is ours unless another server holds it; the session is
   lost while the backend is down. */
static int
fake_lead(void *state, char *err, size_t errlen)
{
    (void)state;
    pthread_mutex_lock(&F.mu);
    F.leads++;
    int rc = F.fail ? -1 : F.lock_other ? 0 : 1;
    pthread_mutex_unlock(&F.mu);
    if (rc < 0)
        snprintf(err, errlen, "fake session lost");
    return rc;
}

static void
fake_close(void *state)
{
    (void)state;
    F.closed++;
}

static const struct gm_queue_backend FAKE = {
    .name = "fake",
    .aliases = NULL,
    .stores_epoch = true,
    .open = NULL,
    .replay = NULL,
    .write_batch = fake_write,
    .alive = fake_alive,
    .reconnect = fake_reconnect,
    .lead = fake_lead,
    .close = fake_close,
};

/* The dispatcher's side of one persistence thread. */
static struct {
    struct gm_persist_channel ch;
    struct gm_persist *p;
    pthread_t tid;
    bool running;
    uint64_t seq;
    _Atomic unsigned wakes;
    _Atomic unsigned ha_reports; /* the --ha hook's calls */
} P;

static void
p_ha_changed(void *arg)
{
    (void)arg;
    atomic_fetch_add(&P.ha_reports, 1);
}

static void
p_wake_disp(void *arg)
{
    (void)arg;
    atomic_fetch_add(&P.wakes, 1);
}

static uint32_t p_stall_ms; /* the next p_start's stall_ms (0: the default) */

/* Starts a persistence thread over the fake backend, with a --ha role. */
static void
p_start_role(uint32_t batch_max, uint32_t delay_ms, enum gm_ha_role role)
{
    quiet_logs();
    memset(&F, 0, sizeof F);
    pthread_mutex_init(&F.mu, NULL);
    F.reconnect_ok = 1;
    memset(&P, 0, sizeof P);
    ck_assert_int_eq(gm_persist_channel_init(&P.ch, 1024), 0);
    struct gm_persist_config cfg = {batch_max, delay_ms, p_stall_ms};
    P.p = gm_persist_new(&FAKE, (void *)&F, &cfg, &P.ch, p_wake_disp, NULL);
    ck_assert_ptr_nonnull(P.p);
    if (role != GM_HA_NONE)
        gm_persist_set_ha(P.p, role, p_ha_changed, NULL);
    ck_assert_int_eq(pthread_create(&P.tid, NULL, gm_persist_thread_main, P.p), 0);
    P.running = true;
}

static void
p_start(uint32_t batch_max, uint32_t delay_ms)
{
    p_start_role(batch_max, delay_ms, GM_HA_NONE);
}

/* Waits up to `timeout` s for the --ha event; returns it. */
static enum gm_ha_event
p_ha_wait(double timeout, char *why, size_t len)
{
    double end = now_s() + timeout;
    enum gm_ha_event e;
    while ((e = gm_persist_ha_event(P.p, why, len)) == GM_HA_QUIET && now_s() < end)
        sleep_ms(5);
    return e;
}

/* Stops the thread (final flush), frees everything. */
static void
p_stop(void)
{
    if (P.running) {
        gm_persist_stop(P.p);
        pthread_join(P.tid, NULL);
        P.running = false;
    }
    gm_persist_free(P.p);
    P.p = NULL;
    gm_persist_channel_destroy(&P.ch);
}

/* Queues a handle counter record, as the dispatcher does. */
static uint64_t
p_push_counter(int64_t next)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++P.seq;
    r.op = GM_QOP_COUNTER;
    r.when = next;
    ck_assert(gm_prec_ring_push(&P.ch.records, &r));
    return r.seq;
}

/* Queues one record (not yet visible: see p_publish); `update`: an ADD of
   a job stored before (gm_prec.update).  Returns its seq. */
static uint64_t
p_push_record(uint8_t op, const char *handle, bool update)
{
    struct gm_prec r;
    memset(&r, 0, sizeof r);
    r.seq = ++P.seq;
    r.op = op;
    r.update = update;
    r.priority = 1;
    r.handle_len = (uint8_t)strlen(handle);
    if (op == GM_QOP_ADD) {
        r.handle = handle; /* string literals: they outlive the record */
        r.function = "fn";
        r.function_len = 2;
        r.unique = "";
        r.data = "data";
        r.data_len = 4;
    } else {
        memcpy(r.handle_copy, handle, r.handle_len);
    }
    ck_assert(gm_prec_ring_push(&P.ch.records, &r));
    return r.seq;
}

static uint64_t
p_push(uint8_t op, const char *handle)
{
    return p_push_record(op, handle, false);
}

static void
p_publish(void)
{
    gm_prec_ring_publish(&P.ch.records);
    gm_persist_wake(P.p);
}

/* Waits for the next acknowledgement. */
static struct gm_pack
p_ack(double timeout)
{
    double end = now_s() + timeout;
    for (;;) {
        struct gm_pack *a = gm_pack_ring_peek(&P.ch.acks);
        if (a) {
            struct gm_pack copy = *a;
            gm_pack_ring_consume(&P.ch.acks);
            gm_pack_ring_release(&P.ch.acks);
            /* as the dispatcher does: room for acks the thread kept */
            if (atomic_exchange(&P.ch.persist_wants_space, 0))
                gm_persist_wake(P.p);
            return copy;
        }
        ck_assert_msg(now_s() < end, "no acknowledgement within %.1fs", timeout);
        sleep_ms(1);
    }
}

static bool
p_no_ack(unsigned ms)
{
    sleep_ms(ms);
    return gm_pack_ring_peek(&P.ch.acks) == NULL;
}

static unsigned
f_get(unsigned *field)
{
    pthread_mutex_lock(&F.mu);
    unsigned v = *field;
    pthread_mutex_unlock(&F.mu);
    return v;
}

/* Sets one of the fake backend's switches. */
static void
f_set(int *field, int value)
{
    pthread_mutex_lock(&F.mu);
    *field = value;
    pthread_mutex_unlock(&F.mu);
}

/* The fake backend goes down (writes and reconnects fail) or comes back. */
static void
f_down(int down)
{
    pthread_mutex_lock(&F.mu);
    F.fail = down;
    F.reconnect_ok = !down;
    pthread_mutex_unlock(&F.mu);
}

/* Handles the fake backend was given, as "+H:1 -H:2 | +H:3" (| between batches). */
static void
f_log(char *out, size_t len)
{
    pthread_mutex_lock(&F.mu);
    out[0] = '\0';
    for (size_t i = 0; i < F.nrec; i++) {
        if (i && F.rec[i].batch != F.rec[i - 1].batch)
            strncat(out, "| ", len - strlen(out) - 1);
        char one[80];
        snprintf(one, sizeof one, "%c%s ",
                 F.rec[i].op == GM_QOP_ADD ? '+' : F.rec[i].op == GM_QOP_DONE ? '-' : '#', F.rec[i].handle);
        strncat(out, one, len - strlen(out) - 1);
    }
    pthread_mutex_unlock(&F.mu);
}

/* Publishes what was pushed: every record up to last is acknowledged as
   stored, and the backend was given exactly `want` (as f_log writes it). */
static void
p_expect_stored(uint64_t last, const char *want)
{
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_msg(a.ok, "batch refused: %s", a.reason);
    ck_assert_uint_eq(a.upto, last);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, want) == 0, "backend saw: %s", log);
}

START_TEST(test_persist_add_and_done_of_one_job_in_a_batch_never_reach_the_backend)
{
    p_start(4096, 0);
    p_push(GM_QOP_ADD, "H:p:1");
    p_push(GM_QOP_ADD, "H:p:2");
    p_push(GM_QOP_DONE, "H:p:1");
    uint64_t last = p_push(GM_QOP_ADD, "H:p:3");
    p_expect_stored(last, "+H:p:2 +H:p:3 ");

    /* a batch that cancels out entirely is acknowledged without a write */
    unsigned attempts = f_get(&F.attempts);
    p_push(GM_QOP_ADD, "H:p:4");
    last = p_push(GM_QOP_DONE, "H:p:4");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_msg(a.ok, "batch refused: %s", a.reason);
    ck_assert_uint_eq(a.upto, last);
    ck_assert_uint_eq(f_get(&F.attempts), attempts);

    /* a DONE whose ADD was written in an earlier batch does reach it */
    last = p_push(GM_QOP_DONE, "H:p:2");
    p_publish();
    a = p_ack(5);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.upto, last);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:2 +H:p:3 | -H:p:2 ") == 0, "backend saw: %s", log);
    ck_assert(p_no_ack(50));
    p_stop();
}
END_TEST

START_TEST(test_persist_counter_records_reach_the_backend_and_cancel_nothing)
{
    p_start(4096, 0);
    p_push_counter(65537);
    p_push(GM_QOP_ADD, "H:p:1");
    p_push(GM_QOP_DONE, "H:p:1");
    uint64_t last = p_push(GM_QOP_ADD, "H:p:2");
    p_expect_stored(last, "#65537 +H:p:2 ");
    p_stop();
}
END_TEST

START_TEST(test_persist_failing_backend_refuses_adds_and_holds_dones_until_reconnect)
{
    p_start(4096, 0);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:0");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok && a.upto == s);
    ck_assert(gm_persist_healthy(P.p));

    /* the backend fails a batch: every record in it is refused */
    f_down(1);
    p_push(GM_QOP_ADD, "H:p:1");
    s = p_push(GM_QOP_DONE, "H:p:0");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(!a.ok, "a failed write was acknowledged as durable");
    ck_assert_uint_eq(a.upto, s);
    ck_assert_msg(a.reason[0] != '\0', "a refusal must say why");
    ck_assert(!gm_persist_healthy(P.p));

    /* while down: ADDs are refused at once, without trying the backend */
    unsigned attempts = f_get(&F.attempts);
    s = p_push(GM_QOP_ADD, "H:p:2");
    p_publish();
    a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    s = p_push(GM_QOP_DONE, "H:p:9");
    p_publish();
    a = p_ack(5);
    ck_assert_uint_eq(a.upto, s);
    ck_assert_uint_eq(f_get(&F.attempts), attempts);

    /* reconnect is retried (with backoff) while it fails */
    double end = now_s() + 5;
    while (f_get(&F.reconnects) < 2 && now_s() < end)
        sleep_ms(5);
    ck_assert_msg(f_get(&F.reconnects) >= 2, "reconnect tried %u times", f_get(&F.reconnects));
    ck_assert(!gm_persist_healthy(P.p));
    ck_assert_uint_eq(f_get(&F.batches), 1);

    /* back: the held DONEs are written (with removals for the ADDs of the
       failed batch, whose commit may have happened unseen); the refused
       ADDs are never written */
    f_down(0);
    end = now_s() + 10;
    while (f_get(&F.batches) < 2 && now_s() < end)
        sleep_ms(5);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strncmp(log, "+H:p:0 | ", 9) == 0 && strstr(log, "-H:p:0 ") && strstr(log, "-H:p:9 ") &&
                      !strstr(log, "+H:p:1") && !strstr(log, "+H:p:2") && !strchr(log + 9, '|'),
                  "backend saw: %s", log);
    ck_assert(gm_persist_healthy(P.p));
    s = p_push(GM_QOP_ADD, "H:p:3");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(a.ok && a.upto == s, "after reconnect: ok=%d upto=%llu (%s)", a.ok,
                  (unsigned long long)a.upto, a.reason);
    char log2[1024];
    f_log(log2, sizeof log2);
    ck_assert_msg(strncmp(log2, log, strlen(log)) == 0 && strcmp(log2 + strlen(log), "| +H:p:3 ") == 0,
                  "backend saw: %s", log2);
    p_stop();
}
END_TEST

/* A stored job stored again (its lifecycle changed: gm_prec.update) in a
   batch that fails: its old record stands, so no DONE is held for it (a
   new job's ADD in the same batch still gets one), and once the backend is
   back the job is still stored. */
START_TEST(test_persist_failed_update_of_a_stored_job_removes_nothing)
{
    p_start(4096, 0);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:0");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok && a.upto == s);
    f_set(&F.fail, 1); /* down, but reconnect succeeds: the next batch goes at once */
    p_push(GM_QOP_ADD, "H:p:1");
    s = p_push_record(GM_QOP_ADD, "H:p:0", true);
    p_publish();
    a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    f_down(0);
    double end = now_s() + 10;
    while (f_get(&F.batches) < 2 && now_s() < end)
        sleep_ms(5);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:0 | -H:p:1 ") == 0, "backend saw: %s", log);
    p_stop();
}
END_TEST

START_TEST(test_persist_held_dones_go_with_the_next_batch_if_flush_on_reconnect_fails)
{
    p_start(4096, 0);
    f_set(&F.fail, 1);
    uint64_t s = p_push(GM_QOP_DONE, "H:p:7");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    /* reconnect succeeds but the first write still fails */
    double end = now_s() + 5;
    while (f_get(&F.attempts) < 2 && now_s() < end)
        sleep_ms(5);
    f_set(&F.fail, 0);
    /* whatever the timing, H:p:7's DONE is written eventually, once */
    end = now_s() + 10;
    char log[1024] = "";
    while (now_s() < end) {
        s = p_push(GM_QOP_ADD, "H:p:8");
        p_publish();
        a = p_ack(5);
        if (a.ok)
            break;
        sleep_ms(100);
    }
    ck_assert_msg(a.ok, "the backend never came back: %s", a.reason);
    f_log(log, sizeof log);
    ck_assert_msg(strstr(log, "-H:p:7") != NULL, "held DONE never written: %s", log);
    const char *first = strstr(log, "-H:p:7");
    ck_assert_msg(strstr(first + 1, "-H:p:7") == NULL, "held DONE written twice: %s", log);
    p_stop();
}
END_TEST

START_TEST(test_persist_batches_respect_batch_max)
{
    p_start(3, 0);
    static const char *const h[] = {"H:p:1", "H:p:2", "H:p:3", "H:p:4", "H:p:5",
                                    "H:p:6", "H:p:7", "H:p:8", "H:p:9", "H:p:10"};
    for (size_t i = 0; i < 10; i++)
        p_push(GM_QOP_ADD, h[i]);
    p_publish();
    uint64_t uptos[10];
    size_t nacks = 0;
    for (;;) {
        struct gm_pack a = p_ack(5);
        ck_assert_msg(a.ok, "batch refused: %s", a.reason);
        uptos[nacks++] = a.upto;
        if (a.upto == 10)
            break;
        ck_assert_uint_lt(nacks, 10);
    }
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 +H:p:2 +H:p:3 | +H:p:4 +H:p:5 +H:p:6 | +H:p:7 +H:p:8 +H:p:9 | "
                              "+H:p:10 ") == 0,
                  "backend saw: %s", log);
    for (unsigned b = 0; b < F.batches; b++)
        ck_assert_uint_le(F.batch_size[b], 3);
    ck_assert_uint_eq(nacks, 4);
    ck_assert_uint_eq(uptos[0], 3);
    ck_assert_uint_eq(uptos[1], 6);
    ck_assert_uint_eq(uptos[2], 9);
    p_stop();
}
END_TEST

START_TEST(test_persist_stop_writes_everything_queued_in_a_final_flush)
{
    /* a long batch delay: nothing is written before the stop */
    p_start(4096, 10000);
    p_push(GM_QOP_ADD, "H:p:1");
    p_push(GM_QOP_ADD, "H:p:2");
    p_publish();
    ck_assert(p_no_ack(100));
    ck_assert_uint_eq(f_get(&F.attempts), 0);
    p_push(GM_QOP_ADD, "H:p:3");
    p_push(GM_QOP_DONE, "H:p:0");
    p_push(GM_QOP_ADD, "H:p:4");
    gm_prec_ring_publish(&P.ch.records); /* no wake: the stop must find them */
    double t0 = now_s();
    gm_persist_stop(P.p);
    pthread_join(P.tid, NULL);
    P.running = false;
    ck_assert_msg(now_s() - t0 < 5.0, "stop waited %.1fs for the batch delay", now_s() - t0);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 +H:p:2 +H:p:3 -H:p:0 +H:p:4 ") == 0, "backend saw: %s", log);
    struct gm_pack a = p_ack(1);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.upto, 5);
    ck_assert(p_no_ack(10));
    p_stop();
    ck_assert_uint_eq(F.closed, 1);
}
END_TEST

START_TEST(test_persist_batch_delay_gathers_records_into_one_batch)
{
    p_start(4096, 300);
    for (int i = 0; i < 5; i++) {
        static const char *const h[] = {"H:p:1", "H:p:2", "H:p:3", "H:p:4", "H:p:5"};
        p_push(GM_QOP_ADD, h[i]);
        p_publish();
        sleep_ms(2);
    }
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok);
    ck_assert_uint_eq(a.upto, 5);
    ck_assert_uint_eq(f_get(&F.batches), 1);
    p_stop();
}
END_TEST

START_TEST(test_persist_stop_while_the_backend_is_down_refuses_what_is_left)
{
    p_start(4096, 0);
    f_down(1);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:1");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(!a.ok && a.upto == s);
    s = p_push(GM_QOP_ADD, "H:p:2");
    gm_prec_ring_publish(&P.ch.records);
    gm_persist_stop(P.p);
    pthread_join(P.tid, NULL);
    P.running = false;
    a = p_ack(1);
    ck_assert_msg(!a.ok && a.upto == s, "a record left at stop must be answered (refused)");
    ck_assert_uint_eq(f_get(&F.batches), 0);
    p_stop();
}
END_TEST

/* Issue 12.5: a completion the backend refuses while it is up (SQLite on a
   full disk) is kept and written once the backend takes it, even when no
   new batch comes along; it used to be dropped, so the job ran again after
   a restart. */
START_TEST(test_persist_done_refused_by_a_live_backend_is_held_and_written_later)
{
    p_start(4096, 0);
    uint64_t s = p_push(GM_QOP_ADD, "H:p:1");
    p_publish();
    ck_assert(p_ack(5).ok);
    f_set(&F.refuse_dones, 1);
    s = p_push(GM_QOP_DONE, "H:p:1");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_uint_eq(a.upto, s);
    ck_assert(gm_persist_healthy(P.p)); /* up: only the record was refused */
    sleep_ms(300);
    char log[1024];
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 ") == 0, "backend saw: %s", log);
    f_set(&F.refuse_dones, 0);
    double end = now_s() + 10;
    while (f_get(&F.batches) < 2 && now_s() < end)
        sleep_ms(5);
    f_log(log, sizeof log);
    ck_assert_msg(strcmp(log, "+H:p:1 | -H:p:1 ") == 0,
                  "the refused completion was not written when the backend took it again: %s", log);
    p_stop();
}
END_TEST

/* Issue 12.5: more acknowledgements than the ring holds (one per record
   when a batch is retried record by record) while the dispatcher does not
   drain them: the thread goes on writing, keeps the acks (merged), and
   stops when asked.  It used to spin until the dispatcher drained, and
   nothing drains after the dispatcher's final flush. */
START_TEST(test_persist_never_waits_for_room_in_the_ack_ring)
{
    p_start(4096, 0);
    f_set(&F.refuse_multi, 1);
    const unsigned n = 6000;
    static char handles[6000][16];
    for (unsigned i = 0; i < n; i++) {
        snprintf(handles[i], sizeof handles[i], "H:m:%u", i);
        double end = now_s() + 10;
        while (gm_prec_ring_free_space(&P.ch.records) == 0) {
            p_publish();
            ck_assert_msg(now_s() < end, "the thread stopped taking records after %u", i);
            sleep_ms(1);
        }
        p_push(GM_QOP_ADD, handles[i]);
    }
    p_publish();
    double end = now_s() + 20;
    while (f_get(&F.batches) < n && now_s() < end)
        sleep_ms(5);
    ck_assert_msg(f_get(&F.batches) == n, "wrote %u of %u records, then waited for the dispatcher",
                  f_get(&F.batches), n);
    /* every record is acknowledged, in order, in fewer acks than records */
    uint64_t upto = 0;
    unsigned acks = 0;
    while (upto < n) {
        struct gm_pack a = p_ack(5);
        ck_assert_msg(a.ok && a.upto > upto, "ack %u: ok=%d upto=%llu after %llu", acks, a.ok,
                      (unsigned long long)a.upto, (unsigned long long)upto);
        upto = a.upto;
        acks++;
    }
    ck_assert_uint_eq(upto, n);
    ck_assert_uint_lt(acks, n);
    p_stop();
}
END_TEST

/* Issue 12.5: a backend call that does not return (a PostgreSQL that
   stopped answering, a hung disk) makes the queue unhealthy after stall_ms,
   and healthy again once it returns. */
START_TEST(test_persist_backend_call_that_does_not_return_makes_the_queue_unhealthy)
{
    p_stall_ms = 100;
    p_start(4096, 0);
    p_stall_ms = 0;
    f_set(&F.stall, 1);
    uint64_t s = p_push(GM_QOP_ADD, "H:s:1");
    p_publish();
    sleep_ms(50);
    ck_assert(gm_persist_healthy(P.p));
    sleep_ms(200);
    ck_assert_msg(!gm_persist_healthy(P.p), "a write waiting %llu ms still counts as healthy",
                  (unsigned long long)gm_persist_waiting_ms(P.p));
    ck_assert_uint_ge(gm_persist_waiting_ms(P.p), 200);
    gm_persist_watch(P.p); /* logs the stall (quietly here) */
    f_set(&F.stall, 0);
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok && a.upto == s);
    ck_assert(gm_persist_healthy(P.p));
    ck_assert_uint_eq(gm_persist_waiting_ms(P.p), 0);
    p_stop();
}
END_TEST

/* --ha standby: it stores nothing (every record refused, the backend not
   even tried) and tries the lock every GM_HA_TRY_MS; once it is free, the
   take-over is reported once, and the tries stop. */
START_TEST(test_persist_ha_standby_refuses_records_and_reports_the_lock_once_taken)
{
    p_start_role(4096, 0, GM_HA_STANDBY);
    f_set(&F.lock_other, 1);
    ck_assert(!gm_persist_healthy(P.p));
    uint64_t s = p_push(GM_QOP_ADD, "H:s:1");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert_msg(!a.ok && a.upto == s, "a standby acknowledged a job");
    ck_assert_uint_eq(f_get(&F.attempts), 0);
    double end = now_s() + 5;
    while (f_get(&F.leads) < 2 && now_s() < end)
        sleep_ms(5);
    ck_assert_msg(f_get(&F.leads) >= 2, "the lock was tried %u times", f_get(&F.leads));
    ck_assert_int_eq(gm_persist_ha_event(P.p, NULL, 0), GM_HA_QUIET);
    ck_assert_uint_eq(atomic_load(&P.ha_reports), 0);

    f_set(&F.lock_other, 0);
    ck_assert_int_eq(p_ha_wait(5, NULL, 0), GM_HA_TOOK_LOCK);
    ck_assert_uint_eq(atomic_load(&P.ha_reports), 1);
    unsigned leads = f_get(&F.leads);
    sleep_ms(2 * GM_HA_TRY_MS);
    ck_assert_uint_eq(f_get(&F.leads), leads);
    ck_assert_uint_eq(atomic_load(&P.ha_reports), 1);
    p_stop();
}
END_TEST

/* --ha active: a batch that fails with the session lost is refused, the
   loss reported (with why), and from then on every ADD is refused: no
   reconnect here, even once the backend is back (the next server does it,
   standby first). */
START_TEST(test_persist_ha_active_that_loses_its_session_refuses_everything_after)
{
    p_start_role(4096, 0, GM_HA_ACTIVE);
    ck_assert(gm_persist_healthy(P.p));
    uint64_t s = p_push(GM_QOP_ADD, "H:a:1");
    p_publish();
    struct gm_pack a = p_ack(5);
    ck_assert(a.ok && a.upto == s);

    f_down(1);
    s = p_push(GM_QOP_ADD, "H:a:2");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(!a.ok && a.upto == s, "acknowledged after the session was lost");
    char why[160];
    ck_assert_int_eq(p_ha_wait(5, why, sizeof why), GM_HA_LOST_LOCK);
    ck_assert_msg(why[0] != '\0', "the loss must say why");
    ck_assert(!gm_persist_healthy(P.p));
    ck_assert_uint_eq(atomic_load(&P.ha_reports), 1);

    f_down(0);
    sleep_ms(2 * GM_HA_TRY_MS);
    ck_assert_uint_eq(f_get(&F.reconnects), 0);
    unsigned batches = f_get(&F.batches);
    s = p_push(GM_QOP_ADD, "H:a:3");
    p_publish();
    a = p_ack(5);
    ck_assert_msg(!a.ok && a.upto == s, "a fenced server acknowledged a job");
    ck_assert_uint_eq(f_get(&F.batches), batches);
    p_stop();
}
END_TEST

/* --ha active and idle: its session is checked every GM_HA_TRY_MS, so a
   loss is seen without any batch; the state can be taken out for the next
   server (free does not close it then). */
START_TEST(test_persist_ha_active_checks_its_idle_session_and_hands_the_backend_on)
{
    p_start_role(4096, 0, GM_HA_ACTIVE);
    double end = now_s() + 5;
    while (f_get(&F.leads) < 2 && now_s() < end)
        sleep_ms(5);
    ck_assert_msg(f_get(&F.leads) >= 2, "an idle session checked %u times", f_get(&F.leads));
    ck_assert_int_eq(gm_persist_ha_event(P.p, NULL, 0), GM_HA_QUIET);
    f_set(&F.fail, 1);
    ck_assert_int_eq(p_ha_wait(5, NULL, 0), GM_HA_LOST_LOCK);
    ck_assert_uint_eq(f_get(&F.attempts), 0);
    gm_persist_stop(P.p);
    pthread_join(P.tid, NULL);
    P.running = false;
    ck_assert_ptr_eq(gm_persist_detach(P.p), (void *)&F);
    p_stop();
    ck_assert_uint_eq(F.closed, 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("persist");
    ADD(s, test_persist_add_and_done_of_one_job_in_a_batch_never_reach_the_backend);
    ADD(s, test_persist_counter_records_reach_the_backend_and_cancel_nothing);
    ADD(s, test_persist_failing_backend_refuses_adds_and_holds_dones_until_reconnect);
    ADD(s, test_persist_failed_update_of_a_stored_job_removes_nothing);
    ADD(s, test_persist_held_dones_go_with_the_next_batch_if_flush_on_reconnect_fails);
    ADD(s, test_persist_batches_respect_batch_max);
    ADD(s, test_persist_stop_writes_everything_queued_in_a_final_flush);
    ADD(s, test_persist_batch_delay_gathers_records_into_one_batch);
    ADD(s, test_persist_stop_while_the_backend_is_down_refuses_what_is_left);
    ADD(s, test_persist_done_refused_by_a_live_backend_is_held_and_written_later);
    ADD(s, test_persist_never_waits_for_room_in_the_ack_ring);
    ADD(s, test_persist_backend_call_that_does_not_return_makes_the_queue_unhealthy);
    ADD(s, test_persist_ha_standby_refuses_records_and_reports_the_lock_once_taken);
    ADD(s, test_persist_ha_active_that_loses_its_session_refuses_everything_after);
    ADD(s, test_persist_ha_active_checks_its_idle_session_and_hands_the_backend_on);
    return gm_check_run_tap(s);
}
