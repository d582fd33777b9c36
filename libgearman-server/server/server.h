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
   reason, if memory is short.  cfg must outlive the server.  With --ha
   (cfg->ha) the server is active if it takes the queue's lock, and then
   replays the queue, or else standby (docs/ha.md). */
struct gm_server *gm_server_new(const struct gm_server_config *cfg);

/* gm_server_run's status when, with --ha, the server took the queue's lock
   (standby) or lost it (active): its role changes by building the next
   server around the same queue connection, gm_server_rebuild. */
#define GM_SERVER_REBUILD 2

/* After GM_SERVER_REBUILD: frees s and returns the next server, built
   (active and replayed if it holds the lock, else standby) and listening;
   NULL, logged, if it cannot be. */
struct gm_server *gm_server_rebuild(struct gm_server *s);

/* Opens the listening sockets (-L/-p); returns 0, or -1 after logging why
   (address in use, bad host, ...). */
int gm_server_listen(struct gm_server *s);

/* Starts the threads and serves until SIGTERM/SIGINT, a graceful stop
   (SIGUSR1 or `shutdown graceful`) with no jobs left, or `shutdown`.
   Returns 0 on a clean stop, 1 if the threads could not start, or
   GM_SERVER_REBUILD (--ha) with every thread stopped and every connection
   closed. */
int gm_server_run(struct gm_server *s);

/* Frees everything (after gm_server_run returned, or instead of it). */
void gm_server_free(struct gm_server *s);

#endif /* GM_SERVER_H */
