/*
 * server.h: the whole server: listening sockets, the I/O threads, the
 * dispatcher and the channels between them, and the main thread's loop
 * (accepting connections, signals, shutdown).
 *
 * Threads: everything here is called on the main thread.  gm_server_run
 * starts the other threads and returns once they have all been joined.
 */
#ifndef GM_SERVER_H
#define GM_SERVER_H

#include "libgearman-server/config/server_config.h"

struct gm_server;

/* Builds the server (threads not started); returns NULL, with a logged
   reason, if memory is short.  cfg must outlive the server. */
struct gm_server *gm_server_new(const struct gm_server_config *cfg);

/* Opens the listening sockets (-L/-p); returns 0, or -1 after logging why
   (address in use, bad host, ...). */
int gm_server_listen(struct gm_server *s);

/* Starts the threads and serves until SIGTERM/SIGINT, a graceful stop
   (SIGUSR1 or `shutdown graceful`) with no jobs left, or `shutdown`.
   Returns 0 on a clean stop, 1 if the threads could not start. */
int gm_server_run(struct gm_server *s);

/* Frees everything (after gm_server_run returned, or instead of it). */
void gm_server_free(struct gm_server *s);

#endif /* GM_SERVER_H */
