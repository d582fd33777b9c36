/*
 * server_int.h: the server's state, shared by server.c (threads, signals,
 * the main loop) and listeners.c (listening and accepting).  Main thread,
 * but for the fields the Owner comment names.
 */
#ifndef GM_SERVER_INT_H
#define GM_SERVER_INT_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "libgearman-server/persist/persist.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/server/server.h"

#define MAX_LISTENERS 16

struct listener {
    int fd;
    uint8_t frontend;   /* accepts front-end (HTTP) connections */
    ev_io w;
    struct gm_server *s;
};

/* Owner: the main thread (the accept loop) writes and reads every field,
   except stop_requested and stop_accepting_requested, atomics the
   dispatcher sets through its request_shutdown hook (then wakes `control`),
   and cfg, persist and role, set before the threads start and only read
   after: the dispatcher's view hook (fill_server_view) reads them.  The other
   threads get their own pieces (channels, config) before they start. */
struct gm_server {
    const struct gm_server_config *cfg;
    unsigned nthreads;
    struct gm_channel *chans;
    struct gm_io_thread **io;
    struct gm_dispatcher *disp;
    pthread_t *io_tids;
    pthread_t disp_tid;
    unsigned started_io;
    bool disp_started;
    bool hosted;                /* one I/O thread, which also runs the dispatcher */
    struct gm_persist_channel pch;
    bool pch_ready;
    struct gm_persist *persist;
    pthread_t persist_tid;
    bool persist_started;

    struct ev_loop *loop;
    struct listener ls[MAX_LISTENERS];
    unsigned nls;
    unsigned port;
    unsigned frontend_port;
    ev_signal sig_term, sig_int, sig_usr1, sig_hup;
    ev_async control;           /* the dispatcher asks for a stop */
    _Atomic int stop_requested;
    _Atomic int stop_accepting_requested;
    ev_timer accept_resume;
    ev_timer persist_watch;     /* logs a queue backend that stops answering */
    bool accept_paused;
    bool accept_starved;        /* accept failed for lack of descriptors; logged once */
    int spare_fd;               /* held to accept and close while the table is full */
    unsigned long turned_away;  /* connections closed at once in this episode */
    bool graceful;
    unsigned next_io;
    enum gm_ha_role role;       /* --ha: fixed for this server's life (server.c) */
    bool rebuild;               /* --ha: the role must change; gm_server_run says so */
};

/* listeners.c */
/* Takes the spare descriptor and starts watching the listeners. */
void listeners_start(struct gm_server *s);
/* Stops accepting and closes the listening sockets (shutdown, graceful or
   not). */
void stop_listening(struct gm_server *s);
/* gm_server_free: whatever listeners.c still holds (sockets, the spare). */
void listeners_close(struct gm_server *s);

#endif /* GM_SERVER_INT_H */
