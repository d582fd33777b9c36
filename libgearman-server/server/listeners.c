/*
 * listeners.c: the listening sockets and accepting (see server_int.h):
 * binding each address of --listen/--port (and the front-end's port),
 * accepting, naming the peer, and handing each socket to the I/O threads
 * in turn over their socket rings.
 *
 * A --ha standby (server.c) listens on the front-end's port only.
 *
 * Running out of descriptors does not clog the listen queue: a spare
 * descriptor, held for the purpose, is given up for a moment to accept each
 * waiting connection and close it at once (counted, logged once per
 * episode), so a connection that arrives once a descriptor is free again is
 * served at once.  Out of memory (or without a spare) accepting pauses for
 * a moment instead of spinning on a readable listener.
 *
 * Main thread only.
 */
#include "config.h"

#include "libgearman-server/server/server_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/io/io_thread.h"

#define ACCEPTS_PER_EVENT 64
#define ACCEPT_PAUSE_SECONDS 0.1

static void
pause_accepting(struct gm_server *s)
{
    if (s->accept_paused)
        return;
    s->accept_paused = true;
    for (unsigned i = 0; i < s->nls; i++)
        ev_io_stop(s->loop, &s->ls[i].w);
    ev_timer_set(&s->accept_resume, ACCEPT_PAUSE_SECONDS, 0.);
    ev_timer_start(s->loop, &s->accept_resume);
}

static void
on_accept_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct gm_server *s = w->data;
    (void)loop;
    (void)revents;
    s->accept_paused = false;
    if (s->graceful)
        return;
    for (unsigned i = 0; i < s->nls; i++)
        ev_io_start(s->loop, &s->ls[i].w);
}

static void
peer_name(const struct sockaddr_storage *ss, char *addr, size_t len, uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
        *port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
        /* Show IPv4-mapped peers as plain IPv4, as tools expect. */
        if (strncmp(addr, "::ffff:", 7) == 0 && strchr(addr + 7, '.'))
            memmove(addr, addr + 7, strlen(addr + 7) + 1);
        *port = ntohs(in6->sin6_port);
    } else {
        snprintf(addr, len, "unknown");
        *port = 0;
    }
}

/* Takes the spare descriptor back (an eventfd: no file system needed, and
   unlike a duplicate of a listener it keeps no socket listening); -1 while
   none is free. */
static void
spare_take(struct gm_server *s)
{
    if (s->spare_fd < 0)
        s->spare_fd = eventfd(0, EFD_CLOEXEC);
}

/* The descriptor table is full: gives up the spare to accept the next
   waiting connection of l and close it at once, then takes the spare back.
   Returns false when nothing was waiting or no spare is held. */
static bool
turn_away(struct gm_server *s, struct listener *l)
{
    if (s->spare_fd < 0)
        return false;
    close(s->spare_fd);
    s->spare_fd = -1;
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        s->turned_away++;
    }
    spare_take(s);
    return fd >= 0;
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct listener *l = w->data;
    struct gm_server *s = l->s;
    (void)loop;
    (void)revents;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                if (!s->accept_starved)
                    gm_log(GM_LOG_ERROR,
                           "accept: %s; closing new connections at once until a descriptor is free",
                           strerror(errno));
                s->accept_starved = true;
                if (turn_away(s, l))
                    continue;
                if (s->spare_fd < 0)
                    pause_accepting(s);
            } else if (errno == ENOBUFS || errno == ENOMEM) {
                if (!s->accept_starved)
                    gm_log(GM_LOG_ERROR, "accept: %s; pausing new connections until it passes",
                           strerror(errno));
                s->accept_starved = true;
                pause_accepting(s);
            }
            return;
        }
        if (s->accept_starved) {
            s->accept_starved = false;
            gm_log(GM_LOG_NOTICE,
                   "accepting connections again; %lu turned away while out of descriptors",
                   s->turned_away);
            s->turned_away = 0;
        }
        spare_take(s);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        struct gm_new_fd nf;
        memset(&nf, 0, sizeof nf);
        nf.fd = fd;
        nf.frontend = l->frontend;
        peer_name(&ss, nf.addr, sizeof nf.addr, &nf.port);
        struct gm_io_thread *t = s->io[s->next_io];
        s->next_io = (s->next_io + 1) % s->nthreads;
        if (gm_io_add_fd(t, &nf) < 0) {
            gm_log(GM_LOG_ERROR, "I/O thread hand-off queue full; dropping %s:%u", nf.addr,
                   nf.port);
            close(fd);
        }
    }
}

static int
listen_on(struct gm_server *s, const struct addrinfo *ai, uint8_t frontend)
{
    const struct gm_server_config *cfg = s->cfg;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(host, sizeof host, "?");
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        gm_log(GM_LOG_ERROR, "socket(%s): %s", host, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (cfg->keepalive) {
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        if (cfg->keepalive_idle >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->keepalive_idle, sizeof(int));
        if (cfg->keepalive_interval >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->keepalive_interval, sizeof(int));
        if (cfg->keepalive_count >= 0)
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->keepalive_count, sizeof(int));
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        gm_log(GM_LOG_FATAL, "bind(%s:%s): %s", host, serv, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, cfg->backlog > 0 ? cfg->backlog : 32) < 0) {
        gm_log(GM_LOG_FATAL, "listen(%s:%s): %s", host, serv, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    uint16_t port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char addr[GM_ADDR_MAX];
        peer_name(&ss, addr, sizeof addr, &port);
        if (frontend)
            s->frontend_port = port;
        else
            s->port = port;
    }
    struct listener *l = &s->ls[s->nls++];
    l->fd = fd;
    l->frontend = frontend;
    l->s = s;
    ev_io_init(&l->w, on_accept, fd, EV_READ);
    l->w.data = l;
    gm_log(GM_LOG_NOTICE, "Listening on %s:%u%s", host, port,
           frontend ? (s->cfg->frontend ? " (http)" : "") : "");
    return 0;
}

/* Binds every address of -L (or all) on one port. */
static int
listen_port(struct gm_server *s, const char *port, uint8_t frontend)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(s->cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        gm_log(GM_LOG_FATAL, "cannot resolve %s:%s: %s",
               s->cfg->listen_host ? s->cfg->listen_host : "*", port, gai_strerror(rc));
        return -1;
    }
    int ok = 0, failed = 0;
    for (struct addrinfo *ai = res; ai && s->nls < MAX_LISTENERS; ai = ai->ai_next) {
        if (listen_on(s, ai, frontend) == 0) {
            ok++;
            /* With port 0 every further address must use the port the first got. */
            unsigned got = frontend ? s->frontend_port : s->port;
            if (ai->ai_next && got && strcmp(port, "0") == 0) {
                for (struct addrinfo *n = ai->ai_next; n; n = n->ai_next) {
                    if (n->ai_family == AF_INET)
                        ((struct sockaddr_in *)n->ai_addr)->sin_port = htons((uint16_t)got);
                    else if (n->ai_family == AF_INET6)
                        ((struct sockaddr_in6 *)n->ai_addr)->sin6_port = htons((uint16_t)got);
                }
            }
        } else {
            failed++;
        }
    }
    freeaddrinfo(res);
    /* Like gearmand: every address must bind (an IPv6-less host simply
       returns no IPv6 address). */
    if (!ok || failed)
        return -1;
    return 0;
}

int
gm_server_listen(struct gm_server *s)
{
    const char *port = s->cfg->port && *s->cfg->port ? s->cfg->port : GM_DEFAULT_PORT;
    /* a --ha standby keeps the Gear port closed: clients with a server
       list go to the active one */
    if (s->role != GM_HA_STANDBY && listen_port(s, port, 0) < 0)
        return -1;
    if (s->cfg->frontend) {
        const char *fport = s->cfg->frontend_port ? s->cfg->frontend_port : "8080";
        if (listen_port(s, fport, 1) < 0)
            return -1;
    }
    return 0;
}

void
stop_listening(struct gm_server *s)
{
    for (unsigned i = 0; i < s->nls; i++) {
        ev_io_stop(s->loop, &s->ls[i].w);
        close(s->ls[i].fd);
    }
    s->nls = 0;
    ev_timer_stop(s->loop, &s->accept_resume);
}

void
listeners_start(struct gm_server *s)
{
    ev_timer_init(&s->accept_resume, on_accept_resume, ACCEPT_PAUSE_SECONDS, 0.);
    s->accept_resume.data = s;
    spare_take(s);
    for (unsigned i = 0; i < s->nls; i++)
        ev_io_start(s->loop, &s->ls[i].w);
}

void
listeners_close(struct gm_server *s)
{
    stop_listening(s); /* the timer is zeroed if listeners_start never ran */
    if (s->spare_fd >= 0)
        close(s->spare_fd);
    s->spare_fd = -1;
}
