/*
 * persist_ha.c: the persistence thread's part in --ha (see persist.h):
 * the server's role, held as the lock on the backend's session.  A
 * standby tries the lock every GM_HA_TRY_MS (reconnecting first); an
 * active server checks its session as often when no batch has just done
 * so; either change is reported once to the main thread, which rebuilds
 * the server around the backend (gm_persist_detach).
 *
 * Runs on the persistence thread, but for gm_persist_set_ha (main thread,
 * before the thread starts), gm_persist_ha_event (any thread) and
 * gm_persist_detach (main thread, after it stopped).
 */
#include "config.h"

#include "libgearman-server/persist/persist_int.h"

#include <stdio.h>

#include "libgearman-server/base/clock.h"
#include "libgearman-server/base/log.h"

/* --ha: reports an event to the main thread, once. */
void
persist_ha_report(struct gm_persist *p, enum gm_ha_event e, const char *reason)
{
    ev_timer_stop(p->loop, &p->ha_timer);
    snprintf(p->ha_reason, sizeof p->ha_reason, "%s", reason ? reason : "");
    atomic_store(&p->ha_event, (int)e);
    p->ha_changed(p->ha_arg);
}

/* --ha, every GM_HA_TRY_MS.  Active: checks the session unless a batch
   just did.  Standby: reconnects if need be, then tries the lock. */
static void
on_ha_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_persist *p = w->data;
    (void)loop;
    (void)revents;
    char err[160] = "";
    if (atomic_load(&p->stop) || atomic_load(&p->ha_event) != GM_HA_QUIET)
        return;
    if (p->ha_role == GM_HA_ACTIVE) {
        if (gm_mono_ms() - p->last_answer_ms < GM_HA_TRY_MS)
            return;
        if (be_lead(p, err, sizeof err) != 1) {
            atomic_store(&p->healthy, 0);
            persist_ha_report(p, GM_HA_LOST_LOCK, err[0] ? err : "another server holds the lock");
        }
        return;
    }
    int rc = -1;
    if (!p->be->alive(p->state) && (!p->be->reconnect || be_reconnect(p, err, sizeof err) < 0))
        rc = -1;
    else
        rc = be_lead(p, err, sizeof err);
    if (rc < 0 && !p->ha_down_logged) {
        gm_log(GM_LOG_WARNING, "ha: standby cannot reach the %s queue: %s (trying every %d ms)", p->be->name, err,
               GM_HA_TRY_MS);
        p->ha_down_logged = true;
    } else if (rc >= 0 && p->ha_down_logged) {
        gm_log(GM_LOG_NOTICE, "ha: standby reaches the %s queue again", p->be->name);
        p->ha_down_logged = false;
    }
    if (rc == 1)
        persist_ha_report(p, GM_HA_TOOK_LOCK, NULL);
}

void
gm_persist_set_ha(struct gm_persist *p, enum gm_ha_role role, void (*changed)(void *arg), void *arg)
{
    p->ha_role = role;
    p->ha_changed = changed;
    p->ha_arg = arg;
    p->last_answer_ms = gm_mono_ms();
    /* a standby stores nothing: whatever reaches it is refused */
    atomic_store(&p->healthy, role != GM_HA_STANDBY);
    if (role != GM_HA_NONE) {
        ev_timer_set(&p->ha_timer, GM_HA_TRY_MS / 1000.0, GM_HA_TRY_MS / 1000.0);
        ev_timer_start(p->loop, &p->ha_timer);
    }
}

enum gm_ha_event
gm_persist_ha_event(const struct gm_persist *p, char *reason, size_t len)
{
    int e = atomic_load(&((struct gm_persist *)p)->ha_event);
    if (reason && len)
        snprintf(reason, len, "%s", e == GM_HA_QUIET ? "" : p->ha_reason);
    return (enum gm_ha_event)e;
}

void *
gm_persist_detach(struct gm_persist *p)
{
    void *state = p->state;
    p->state = NULL;
    return state;
}

void
persist_ha_init(struct gm_persist *p)
{
    ev_timer_init(&p->ha_timer, on_ha_timer, 0., 0.);
    p->ha_timer.data = p;
    atomic_init(&p->ha_event, GM_HA_QUIET);
}
