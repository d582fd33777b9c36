/*
 * persist.h: the persistence thread, which owns the durable queue backend
 * and writes what the dispatcher hands it in batches (group commit).
 *
 * The dispatcher produces records (ADD a background job, DONE a job) on
 * the `records` ring, each with a sequence number.  The persistence thread
 * takes everything waiting (up to batch_max), drops an ADD and a DONE of
 * the same job found in the same batch, writes the rest in one backend
 * transaction and answers on the `acks` ring: "every record up to seq N is
 * durable" or "the records up to N failed".  The dispatcher sends
 * JOB_CREATED for a background job only after its ADD is acknowledged.
 *
 * When the backend fails, the thread reconnects with backoff; meanwhile
 * ADDs are refused at once (the submitter gets ERROR QUEUE_ERROR) and DONEs
 * are kept and written when the backend is back.  A DONE the backend
 * refuses while it is up (a full disk) is kept too, and retried with
 * backoff.  The thread never waits for the dispatcher: acks that do not fit
 * the ring wait in a list of its own (runs of equal answers merged into
 * one) until the dispatcher has drained the ring.  A backend call that has
 * not returned for stall_ms makes the queue unhealthy (gm_persist_healthy)
 * until it does.
 *
 * With --ha the thread also holds the server's role (docs/ha.md), since
 * leadership is a lock on the backend's session, which it owns.  A
 * standby tries the lock every GM_HA_TRY_MS (reconnecting first when the
 * session is gone) and refuses every record; an active server checks its
 * session as often when no batch has just done so.  Either change (the
 * lock taken; the session, and so the lock, lost) is reported once to the
 * main thread, which rebuilds the server around the backend
 * (gm_persist_detach): it never changes role in place.  An active server
 * that loses the lock refuses every ADD from that moment and does not
 * reconnect.
 *
 * Threads: gm_persist_new/free by the main thread; gm_persist_thread_main
 * on the persistence thread; wake/stop from any thread.  The rings are the
 * only shared state.
 */
#ifndef GM_PERSIST_H
#define GM_PERSIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/proto/protocol.h"
#include "libgearman-server/persist/queue_backend.h"
#include "libgearman-server/base/ring.h"

/* One stored job has four shapes, one per hop:
     gm_prec   dispatcher -> persistence thread, on the records ring: refers
               to the job's bytes by block reference, no copy (this file);
     gm_pack   persistence thread -> dispatcher, on the acks ring: "records
               up to seq N are stored, or refused" (this file);
     gm_qrecord persistence thread -> backend (queue_backend.h): the fields
               a backend writes, as plain pointers, no blocks;
     gm_qrow   backend -> replay at start-up (queue_backend.h): a row read
               back, valid during the callback only.
   The ring types hold what a hop needs and nothing the next hop has no use
   for (sequence numbers, block references). */

/* dispatcher -> persistence: one record.  ADD points into the job's block
   (and data_blk when the data lives apart), for which it holds references;
   DONE carries a copy of the handle. */
struct gm_prec {
    uint64_t seq;
    uint8_t op;            /* enum gm_qop (COUNTER: the value is in `when`) */
    bool update;           /* ADD of a job stored before (its lifecycle changed): if the batch
                              fails, its old record stands, nothing is undone */
    uint8_t priority;
    uint8_t handle_len;
    int64_t when;
    struct gm_block *blk;  /* ADD: the job's block (handle, unique, function) */
    struct gm_block *data_blk; /* ADD: the data's block if not blk */
    const char *function, *unique, *data;
    uint32_t function_len, unique_len, data_len;
    struct gm_block *life_blk; /* ADD: the lifecycle bytes (gm_qrecord.lifecycle), or NULL */
    uint32_t life_len;
    const char *handle;    /* ADD: in blk; DONE: NULL, see handle_copy */
    char handle_copy[GM_HANDLE_MAX];
};

/* persistence -> dispatcher: records up to `upto` are durable (ok) or were
   refused (!ok). */
struct gm_pack {
    uint64_t upto;
    bool ok;
    char reason[120];
};

/* Drops the block references a record holds. */
void gm_prec_release(struct gm_prec *r);

GM_RING_DEFINE(gm_prec_ring, struct gm_prec)
GM_RING_DEFINE(gm_pack_ring, struct gm_pack)
GM_SPILL_DEFINE(gm_prec_spill, gm_prec_ring, struct gm_prec)
GM_SPILL_DEFINE(gm_pack_spill, gm_pack_ring, struct gm_pack)

/* The rings between the dispatcher and the persistence thread.  Owner: set
   up by the main thread before either side runs; otherwise each field as
   marked. */
struct gm_persist_channel {
    struct gm_prec_ring records;  /* producer: the dispatcher; consumer: the persistence thread */
    struct gm_pack_ring acks;     /* producer: the persistence thread; consumer: the dispatcher */
    _Atomic int disp_wants_space; /* records ring was full: set by the dispatcher, cleared by
                                     the persistence thread, which then wakes it */
    _Atomic int persist_wants_space; /* acks ring was full: set by the persistence thread,
                                        cleared by the dispatcher, which then wakes it */
};

#define GM_PERSIST_STALL_MS 5000 /* a backend call this long makes the queue unhealthy */

struct gm_persist_config {
    uint32_t batch_max;      /* records per transaction */
    uint32_t delay_ms;       /* wait this long for more records before a commit */
    uint32_t stall_ms;       /* a backend call longer than this is a stall; 0 = the default */
};

struct gm_persist;

/* Creates the thread's state over an opened backend; NULL if memory is
   short.  wake_disp(arg) tells the dispatcher that acks are waiting. */
struct gm_persist *gm_persist_new(const struct gm_queue_backend *be, void *state,
                                  const struct gm_persist_config *cfg,
                                  struct gm_persist_channel *ch,
                                  void (*wake_disp)(void *arg), void *arg);

/* Closes the backend and frees everything (after the thread stopped). */
void gm_persist_free(struct gm_persist *p);

/* Thread entry: runs until gm_persist_stop(), then writes what is left. */
void *gm_persist_thread_main(void *persist);

/* Any thread: records are waiting. */
void gm_persist_wake(struct gm_persist *p);

/* Any thread: finish the records already queued, then return. */
void gm_persist_stop(struct gm_persist *p);

/* Any thread: true while the backend is usable and answering (for
   /health): not down, and no call to it waiting longer than stall_ms. */
bool gm_persist_healthy(const struct gm_persist *p);

/* Any thread: how long the backend call in progress has been waiting, in
   ms (0 when none is). */
uint64_t gm_persist_waiting_ms(const struct gm_persist *p);

/* Main thread, about once a second: logs when a backend call has been
   waiting longer than stall_ms, and when the backend answers again (once
   per episode each). */
void gm_persist_watch(struct gm_persist *p);

/* Any thread: counters (approximate). */
void gm_persist_stats(const struct gm_persist *p, struct gm_queue_stats *out);

#define GM_HA_TRY_MS 500

enum gm_ha_role { GM_HA_NONE, GM_HA_ACTIVE, GM_HA_STANDBY };
enum gm_ha_event { GM_HA_QUIET, GM_HA_TOOK_LOCK, GM_HA_LOST_LOCK };

/* Main thread, before the thread starts: this server's --ha role, and the
   hook (any thread may run it: the persistence thread does) that tells the
   main thread of an event. */
void gm_persist_set_ha(struct gm_persist *p, enum gm_ha_role role, void (*changed)(void *arg), void *arg);

/* Any thread: the event reported (GM_HA_QUIET before one); for LOST, why
   in reason (copied, NUL-terminated). */
enum gm_ha_event gm_persist_ha_event(const struct gm_persist *p, char *reason, size_t len);

/* Main thread, after the thread stopped: takes the backend's state out of
   p (gm_persist_free no longer closes it), for the next server to use. */
void *gm_persist_detach(struct gm_persist *p);

/* Sets up / tears down the rings (releasing references still in them). */
int gm_persist_channel_init(struct gm_persist_channel *ch, size_t slots);
void gm_persist_channel_destroy(struct gm_persist_channel *ch);

#endif /* GM_PERSIST_H */
