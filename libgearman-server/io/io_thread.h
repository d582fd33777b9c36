/*
 * io_thread.h: an I/O thread: one libev loop that owns a set of client
 * connections, their sockets, read and write buffers and packet parsing.
 *
 * It reads sockets into shared reference-counted blocks, cuts whole packets
 * out of them (binary, bounded by the size field, or admin text lines),
 * answers what needs no job state (ECHO on a connection that has nothing in
 * flight, protocol errors) and sends the rest to the dispatcher on its
 * inbound ring.  Replies come back on the outbound ring and are written with
 * writev at the end of the loop iteration; the write watcher is armed only
 * when the socket says EAGAIN.  It never touches job state.
 *
 * Threads: gm_io_new/gm_io_free by the main thread while the I/O thread is
 * not running; gm_io_thread_main on the I/O thread; gm_io_add_fd,
 * gm_io_wake and gm_io_stop from any thread.
 */
#ifndef GM_IO_THREAD_H
#define GM_IO_THREAD_H

#include "libgearman-server/proto/msg.h"
#include "libgearman-server/config/server_config.h"

struct gm_io_thread;

/* Called by an I/O thread when it has published to the inbound ring. */
typedef void (*gm_io_wake_fn)(void *arg);

/* Creates I/O thread number `index` over channel ch; returns NULL if memory
   is short.  wake_disp(arg) is how it wakes the dispatcher. */
struct gm_io_thread *gm_io_new(unsigned index, const struct gm_server_config *cfg,
                               struct gm_channel *ch, gm_io_wake_fn wake_disp, void *arg);

/* Closes every connection and frees the thread's memory (after it stopped). */
void gm_io_free(struct gm_io_thread *t);

/* Thread entry: runs the loop until gm_io_stop(). */
void *gm_io_thread_main(void *io_thread);

/* Main thread: hands an accepted, non-blocking socket to this thread.
   Returns 0, or -1 if the hand-off queue is full (the caller closes fd). */
int gm_io_add_fd(struct gm_io_thread *t, const struct gm_new_fd *nf);

/* Any thread: wakes the loop (outbound ring has news or room). */
void gm_io_wake(struct gm_io_thread *t);

/* Any thread: makes the loop return. */
void gm_io_stop(struct gm_io_thread *t);

struct gm_tls_ctx;
/* Any thread (the main thread, at start and on SIGHUP): connections
   accepted from now on speak TLS with x (the thread takes a reference of
   its own; open ones keep theirs).  Set before the listeners open. */
void gm_io_set_tls(struct gm_io_thread *t, struct gm_tls_ctx *x);

struct gm_dispatcher;
struct ev_loop;

/* Before the thread starts: this (single) I/O thread hosts the dispatcher
   (one-thread mode, -t 1), whose watchers are on this thread's loop; requests and
   replies still go through the rings, without thread hand-offs. */
void gm_io_host_dispatcher(struct gm_io_thread *t, struct gm_dispatcher *d);

/* The thread's loop (for gm_disp_loop_init). */
struct ev_loop *gm_io_loop(struct gm_io_thread *t);

/* Number of open connections (approximate, any thread). */
unsigned gm_io_connection_count(const struct gm_io_thread *t);

#endif /* GM_IO_THREAD_H */
