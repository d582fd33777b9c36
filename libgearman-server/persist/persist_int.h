/*
 * persist_int.h: the persistence thread's state, shared by persist.c (the
 * batches, acks and reconnects) and persist_ha.c (the --ha role), and the
 * backend calls both make, timed for the stall watch.
 * Persistence thread, but for the fields the Owner comment names.
 */
#ifndef GM_PERSIST_INT_H
#define GM_PERSIST_INT_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/base/clock.h"
#include "libgearman-server/persist/persist.h"

/* Owner: the persistence thread writes and reads every field, except: stop
   (set by any thread through gm_persist_stop); healthy, batches, records,
   failures and busy_since (atomics it writes and others read: the
   dispatcher's view through gm_persist_healthy, gm_persist_stats and
   gm_persist_waiting_ms; the main thread through gm_persist_watch);
   stall_logged (the main thread's own); ha_event and ha_reason (written
   once by this thread, read by the main thread through
   gm_persist_ha_event); and what gm_persist_new and gm_persist_set_ha set
   before the thread starts. */
struct gm_persist {
    const struct gm_queue_backend *be;
    void *state;
    struct gm_persist_config cfg;
    struct gm_persist_channel *ch;
    void (*wake_disp)(void *arg);
    void *wake_arg;

    struct ev_loop *loop;
    ev_async wake;
    ev_timer retry;
    ev_timer delay;
    ev_timer held_retry;         /* DONEs refused while the backend is up (a full disk) */
    _Atomic int stop;
    _Atomic int healthy;
    double backoff, held_backoff;

    struct gm_prec *batch;       /* records taken from the ring for this batch */
    size_t batch_cap;
    struct gm_qrecord *recs;     /* what goes to the backend */
    size_t recs_cap;
    bool *dropped;               /* batch[i] cancelled by a later DONE */
    struct gm_prec *held;        /* DONEs waiting for the backend to come back */
    size_t nheld, held_cap;
    struct gm_pack_spill spill;  /* acks waiting for room in the ring, in order */

    _Atomic uint64_t batches, records, failures;
    _Atomic uint64_t busy_since; /* monotonic ms a backend call began; 0 = none under way */

    enum gm_ha_role ha_role;     /* --ha; GM_HA_NONE without */
    ev_timer ha_timer;           /* every GM_HA_TRY_MS: the lock tried, or the session checked */
    uint64_t last_answer_ms;     /* when the backend last completed a call (monotonic) */
    bool ha_down_logged;         /* a standby's failed attempt was logged (once an episode) */
    void (*ha_changed)(void *arg);
    void *ha_arg;
    _Atomic int ha_event;        /* enum gm_ha_event; the reason is written before it */
    char ha_reason[160];
    bool stall_logged;           /* main thread (gm_persist_watch) */
};

/* The backend calls, timed for the stall watch. */
static inline int
be_write(struct gm_persist *p, const struct gm_qrecord *q, size_t n, char *err, size_t errlen)
{
    atomic_store(&p->busy_since, gm_mono_ms());
    int rc = p->be->write_batch(p->state, q, n, err, errlen);
    atomic_store(&p->busy_since, 0);
    if (rc == 0)
        p->last_answer_ms = gm_mono_ms();
    return rc;
}

static inline int
be_reconnect(struct gm_persist *p, char *err, size_t errlen)
{
    atomic_store(&p->busy_since, gm_mono_ms());
    int rc = p->be->reconnect(p->state, err, errlen);
    atomic_store(&p->busy_since, 0);
    return rc;
}

static inline int
be_lead(struct gm_persist *p, char *err, size_t errlen)
{
    atomic_store(&p->busy_since, gm_mono_ms());
    int rc = p->be->lead(p->state, err, errlen);
    atomic_store(&p->busy_since, 0);
    if (rc >= 0)
        p->last_answer_ms = gm_mono_ms();
    return rc;
}

/* persist_ha.c */
/* gm_persist_new: the --ha timer and event, idle until gm_persist_set_ha. */
void persist_ha_init(struct gm_persist *p);
/* Reports an event to the main thread, once; the lock timer stops. */
void persist_ha_report(struct gm_persist *p, enum gm_ha_event e, const char *reason);

#endif /* GM_PERSIST_INT_H */
