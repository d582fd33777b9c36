/*
 * peers.c: the dispatcher's side of each connection (model layer): a peer
 * comes with GM_IN_OPEN and goes with GM_IN_CLOSE, taking its
 * registrations, running jobs and waits with it.  Dispatcher thread only;
 * owns every struct gm_peer, found by connection id in its port's table.
 *
 * A peer's identity (config/acl.h) comes with GM_IN_OPEN: its payload is
 * "cn:NAME" when the connection's TLS client certificate was verified,
 * else empty, and the identity is "ip:" and the peer's address.
 */
#include "config.h"

#include "libgearman-server/dispatch/dispatcher_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

static bool
addr_is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
           strncmp(addr, "::ffff:127.", 11) == 0;
}

void
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
    /* the identity: the OPEN's payload, else ip:ADDRESS */
    char ip[3 + GM_ADDR_MAX];
    const char *id = m->payload;
    size_t id_len = m->len;
    if (!id_len || !id) {
        const char *a = m->u.open.addr;
        if (strncmp(a, "::ffff:", 7) == 0 && strchr(a + 7, '.'))
            a += 7; /* IPv4-mapped: named as IPv4, as the listeners do */
        id_len = (size_t)snprintf(ip, sizeof ip, "ip:%.*s", GM_ADDR_MAX - 1, a);
        id = ip;
    }
    struct gm_peer *p = calloc(1, sizeof *p + 1 + id_len + 1);
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
    p->id_buf[0] = ' ';
    memcpy(p->id_buf + 1, id, id_len);
    p->id_buf[1 + id_len] = '\0';
    p->identity = p->id_buf + 1;
    p->identity_len = (uint32_t)id_len;
    p->log_name = id != ip ? p->id_buf : "";
    /* a certificate's name says more than the address column: it stands
       for an unset client id, when it cannot cut a listing's line */
    p->id_listed = id != ip && !gm_name_check(GM_NAME_CLIENT_ID, id, id_len) && !memchr(id, ' ', id_len) &&
                   id_len <= GM_CLIENT_ID_MAX;
    p->exceptions = d->cfg->exceptions;
    gm_list_init(&p->waits);
    gm_list_init(&p->held_link);
    port->peers[slot] = p;
    d->peer_count++;
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
        job_detach(a);
        if (job->nclients || (job->flags & (GM_JOB_BACKGROUND | GM_JOB_STORING)))
            continue;
        if (job->state == GM_JOB_RUNNING)
            job->flags |= GM_JOB_IGNORED;
        else
            job_free(d, job);
    }
}

void
peer_close(struct gm_dispatcher *d, gm_conn_id id)
{
    struct gm_peer *p = gm_disp_peer(d, id);
    if (!p)
        return;
    /* Out of the sleepers first, so requeued jobs wake somebody else. */
    if (peer_in_sleepers(p))
        peer_leave_sleepers(p);
    p->sleeping = false;
    for (uint32_t i = 0; i < p->nregs; i++) {
        struct gm_list *n;
        while ((n = gm_list_first(&p->regs[i]->running)))
            job_requeue(d, gm_container_of(n, struct gm_job, link), "worker disconnected");
    }
    while (p->nregs)
        remove_reg(d, p, p->nregs - 1);
    peer_abandon_jobs(d, p);
    d->ports[gm_conn_thread(id)].peers[gm_conn_slot(id)] = NULL;
    gm_log_peer_close(&p->log_limit, p->addr, p->port);
    free(p->regs);
    free(p->client_id);
    free(p->taken_back);
    free(p);
    d->peer_count--;
}
