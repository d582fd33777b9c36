/*
 * access.c: permissions on the dispatcher (model layer): the access table
 * (config/acl.h) the main thread hands over, what each peer's identity is
 * granted (worked out once per table and cached on the peer, with the
 * answer for the last function it submitted to), the checks the handlers
 * make, the count of denials (/metrics: gearman_denied_total) and their
 * log lines, at most one a second per identity.
 *
 * Without an ACL file every check is one test of d->acl_enforced; with one
 * that grants a permission for every function (pattern `*`) it is three
 * comparisons on the peer.  Only a mixed table looks at its lines, once
 * per peer and function while nothing changes.
 *
 * Dispatcher thread only, but for d->acl_next, which the main thread sets
 * (gm_disp_set_acl, dispatcher.c) and this file takes.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

/* The worker's registrations the table in force no longer grants go, as
   if it had sent CANT_DO for each (their running jobs are requeued). */
static void
revoke_abilities(struct gm_dispatcher *d)
{
    for (unsigned t = 0; t < d->nports; t++) {
        struct gm_disp_port *port = &d->ports[t];
        for (uint32_t s = 0; s < port->npeers; s++) {
            struct gm_peer *p = port->peers[s];
            for (uint32_t i = p ? p->nregs : 0; i-- > 0;) {
                const struct gm_function *fn = p->regs[i]->fn;
                if (gm_acl_allows(d->acl, p->identity, p->identity_len, GM_PERM_WORK, fn->name, fn->name_len))
                    continue;
                gm_log(GM_LOG_NOTICE, "%s (%s:%u) loses the function %s: the new ACL does not grant it work",
                       p->identity, p->addr, p->port, fn->name);
                remove_reg(d, p, i);
            }
        }
    }
}

void
access_take_table(struct gm_dispatcher *d)
{
    struct gm_acl *a = atomic_exchange(&d->acl_next, NULL);
    if (!a)
        return;
    gm_acl_free(d->acl);
    d->acl = a;
    d->acl_enforced = gm_acl_enforced(a);
    d->acl_gen++;
    if (d->acl_enforced)
        revoke_abilities(d);
}

void
access_free(struct gm_dispatcher *d)
{
    gm_acl_free(atomic_exchange(&d->acl_next, NULL));
    gm_acl_free(d->acl);
    d->acl = NULL;
}

void
access_denied(struct gm_dispatcher *d, const struct gm_peer *p, const char *who, enum gm_perm perm, const char *object,
       const char *name, size_t len)
{
    d->denied[perm]++;
    if (len > 200)
        len = 200;
    snprintf(d->denied_text, sizeof d->denied_text, "%s lacks %s for %s%.*s", who, gm_perm_name(perm), object,
             (int)len, name);
    /* One budget of a line a second per identity, in a small table by its
       hash: two identities that share a slot share a budget, and the
       thread's budget (gm_log_peer) bounds them all. */
    uint32_t h = gm_disp_name_hash(who, strlen(who));
    struct gm_denial_log *slot = &d->denial_log[h % GM_DENIAL_LOG_SLOTS];
    uint64_t now = (uint64_t)now_ms(d);
    if (slot->hash != h || !slot->used) {
        memset(&slot->lim, 0, sizeof slot->lim);
        slot->hash = h;
        slot->used = true;
    }
    if (!gm_log_limit_take(&slot->lim, now ? now : 1, 1, 1000, GM_LOG_WARNING))
        return;
    uint64_t more = slot->lim.suppressed;
    slot->lim.suppressed = 0;
    if (more)
        gm_log_peer(NULL, NULL, 0, GM_LOG_WARNING, "permission denied: %s (%s:%u) (and %llu more since)",
                    d->denied_text, p->addr, p->port, (unsigned long long)more);
    else
        gm_log_peer(NULL, NULL, 0, GM_LOG_WARNING, "permission denied: %s (%s:%u)", d->denied_text, p->addr,
                    p->port);
}

/* What an object of perm is called in the texts. */
static const char *
object_of(enum gm_perm perm)
{
    return perm == GM_PERM_SUBMIT || perm == GM_PERM_WORK ? "function " : "";
}

static bool
access_peer_slow(struct gm_dispatcher *d, struct gm_peer *p, enum gm_perm perm, const struct gm_function *fn,
                 const char *name, size_t len)
{
    uint8_t bit = GM_PERM_BIT(perm);
    if (p->acl_gen != d->acl_gen) {
        struct gm_acl_grants g;
        gm_acl_grants(d->acl, p->identity, p->identity_len, &g);
        p->acl_everywhere = g.everywhere;
        p->acl_somewhere = g.somewhere;
        p->acl_fn_serial = 0;
        p->acl_gen = d->acl_gen;
    }
    bool ok;
    if (p->acl_everywhere & bit) {
        ok = true;
    } else if (!(p->acl_somewhere & bit)) {
        ok = false;
    } else if (perm == GM_PERM_SUBMIT) {
        /* the answer for the function asked about last is kept, by its
           serial number (a function dropped and made again is new) */
        if (fn && fn->serial == p->acl_fn_serial) {
            ok = p->acl_fn_ok;
        } else {
            ok = gm_acl_allows(d->acl, p->identity, p->identity_len, perm, name, len);
            if (fn) {
                p->acl_fn_serial = fn->serial;
                p->acl_fn_ok = ok;
            }
        }
    } else {
        ok = gm_acl_allows(d->acl, p->identity, p->identity_len, perm, name, len);
    }
    if (!ok)
        access_denied(d, p, p->identity, perm, object_of(perm), name, len);
    return ok;
}

bool
peer_may(struct gm_dispatcher *d, struct gm_peer *p, enum gm_perm perm, const struct gm_function *fn,
         const char *name, size_t len)
{
    if (!d->acl_enforced)
        return true;
    if (p->acl_gen == d->acl_gen &&
        ((p->acl_everywhere & GM_PERM_BIT(perm)) ||
         (perm == GM_PERM_SUBMIT && fn && fn->serial == p->acl_fn_serial && p->acl_fn_ok)))
        return true;
    return access_peer_slow(d, p, perm, fn, name, len);
}

bool
access_request(struct gm_dispatcher *d, struct gm_peer *p, const char *who, enum gm_perm perm,
               const struct gm_function *fn, const char *name, size_t len)
{
    if (!who)
        return peer_may(d, p, perm, fn, name, len);
    if (!d->acl_enforced || gm_acl_allows(d->acl, who, strlen(who), perm, name, len))
        return true;
    access_denied(d, p, who, perm, object_of(perm), name, len);
    return false;
}

void
access_send_denied(struct gm_dispatcher *d, struct gm_peer *p)
{
    /* an ERROR packet, logged by access_denied() already (send_error would log
       it again, under another budget) */
    struct gm_field_ref f[2] = {{"PERMISSION_DENIED", 17}, {d->denied_text, strlen(d->denied_text)}};
    send_packet(d, p->id, GM_PKT_ERROR, f, 2, NULL);
}
