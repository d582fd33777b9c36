/*
 * io_int.h: an I/O thread's state, shared by the files that make up the
 * thread (see io_thread.c for the list).  I/O thread only: nothing here is
 * seen by other threads except through the channel's rings, the new-socket
 * ring and the atomics marked in struct gm_io_thread.
 *
 * Reading: every connection of the thread reads into the thread's current
 * 64 KiB block; whole packets are handed to the dispatcher as references
 * into it (one atomic increment per read, not per packet).  A trailing
 * partial packet stays where it is and the next read appends to it when
 * nothing else was read in between, else it is copied to the current block.
 * An idle connection holds no buffer at all.  A packet bigger than
 * BIG_PACKET gets a block of its own, grown as its bytes arrive (never
 * sized from the header alone), which a job can keep without pinning
 * anybody else's bytes.
 *
 * Writing: replies are queued per connection and written with one writev
 * per connection at the end of the loop iteration (ev_prepare); the write
 * watcher is armed only when the socket is full.  Replies to a client with
 * other jobs in flight may wait a little longer while the thread stays busy
 * (--reply-batch, see mark_lazy).
 *
 * Waiting: after activity the thread keeps polling for a while instead of
 * sleeping (--busy-poll, an adaptive window; see busy_poll.h).
 *
 * TLS (--ssl): a connection accepted while the thread holds a TLS context
 * does its handshake first (CF_HANDSHAKE) and is announced to the
 * dispatcher after it; then it reads and writes through conn_recv and
 * conn_writev like any other (tls_session.c, tls_handshake.c).
 *
 * Timing: a packet begun and left incomplete, or an HTTP request not sent
 * in time, closes its connection; a small partial packet left waiting in
 * a block the thread moved past gets a block of its own (deadlines.c).
 *
 * The files, from the bottom up: tls_session.c, conn_table.c, writer.c,
 * parser.c, frontend_conn.c, reader.c, deadlines.c, tls_handshake.c,
 * io_thread.c.
 */
#ifndef GM_IO_INT_H
#define GM_IO_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/base/busy_poll.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/io/io_thread.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/proto/protocol.h"

#define READ_BLOCK_SIZE (64u * 1024)
#define READ_MIN_SPACE (4u * 1024)    /* start a new block when less room is left */
#define BIG_PACKET (32u * 1024)       /* larger packets get a block of their own */
#define BIG_FIRST_CAP (64u * 1024)
#define READS_PER_EVENT 8             /* fairness between connections */
#define WRITE_IOVS 128
#define OUT_POOL_MAX 4096             /* output nodes kept for reuse */
#define NEWFD_RING 4096

enum conn_flags {
    CF_DIRTY = 1 << 0,      /* on the dirty list: has output to write */
    CF_CLOSING = 1 << 1,    /* close once the output is written; read nothing more */
    CF_STALLED = 1 << 2,    /* inbound ring was full: reading paused */
    CF_DISPATCHED = 1 << 3, /* has sent requests to the dispatcher (ECHO goes there too) */
    CF_WRITING = 1 << 4,    /* write watcher armed */
    CF_DEAD = 1 << 5,       /* closed; freed at the end of the iteration */
    CF_FE_PAUSED = 1 << 6,  /* front-end: reading paused while a request is answered */
    CF_LAZY = 1 << 7,       /* on the lazy list: its output may wait (see flush_lazy) */
    CF_OUT_FULL = 1 << 8,   /* unsent output over out_soft: reading paused until below half */
    CF_HANDSHAKE = 1 << 9,  /* TLS handshake under way: nothing is read or written for it */
    CF_ANNOUNCED = 1 << 10  /* the dispatcher was told (GM_IN_OPEN): it hears of the close */
};

struct out_node {
    struct out_node *next;
    struct gm_out msg;
};

struct conn {
    struct gm_io_thread *t;
    int fd;
    uint32_t slot, gen;
    uint32_t flags;
    ev_io rw, ww;
    /* input: unparsed bytes (a partial packet) */
    struct gm_block *in_blk;
    const char *in_ptr;
    uint32_t in_len;
    /* input: a big packet being read into a block of its own */
    struct gm_block *big;
    uint32_t big_have, big_total;
    /* output */
    struct out_node *out_head, *out_tail;
    uint32_t out_off;       /* bytes of out_head already written */
    size_t out_bytes;       /* bytes queued */
    struct conn *dirty_next;
    struct conn *lazy_next;
    struct conn *stalled_next;
    struct conn *dead_next;
    /* front-end (HTTP) connections only */
    void *fe;               /* the front-end's per-connection state */
    bool fe_busy;           /* a request is with the dispatcher: parse no further */
    char *fe_acc;           /* reply packet bytes being assembled */
    size_t fe_acc_len, fe_acc_cap;
    struct gm_in_spill_node *close_node; /* reserved for the close notice (see in_push_ctrl) */
    struct ssl_st *ssl;     /* its TLS session (tls_session.c), or NULL: plain text */
    double last_read;       /* ev_now() of the last bytes read (--packet-timeout); of the
                               accept during a TLS handshake (--ssl-handshake-timeout) */
    double ready_since;     /* front-end: ev_now() it became ready for a request (--http-timeout) */
    struct gm_log_limit log_limit; /* the lines it causes (gm_log_peer) */
    uint16_t port;
    char addr[GM_ADDR_MAX];
};

struct slot {
    struct conn *c;
    uint32_t gen;
    uint32_t next_free;
};

/* Owner: the I/O thread writes and reads every field, except stop (an
   atomic any thread sets through gm_io_stop) and nconns (an atomic the
   thread updates and any thread reads, gm_io_connection_count); newfds is
   a ring whose producer is the accepting thread.  hosted is set before
   the thread starts. */
struct gm_io_thread {
    unsigned index;
    const struct gm_server_config *cfg;
    struct gm_channel *ch;
    gm_io_wake_fn wake_disp;
    void *wake_arg;
    struct ev_loop *loop;
    ev_async wake;
    ev_prepare prepare;
    struct gm_busy_poll poll;   /* --busy-poll */
    struct gm_fd_ring newfds;
    _Atomic int stop;
    _Atomic unsigned nconns;

    struct slot *slots;
    uint32_t nslots, free_head; /* free_head: UINT32_MAX = none */

    struct gm_block *rblk;      /* current read block (the thread holds a reference) */
    uint32_t rused;
    struct gm_block *ref_blk;   /* references taken but not yet counted (see take_ref) */
    uint32_t ref_n;

    struct conn *dirty, *stalled, *dead;
    struct conn *lazy;          /* connections whose output may wait (--reply-batch) */
    double lazy_since, lazy_max; /* ev_now() the oldest started waiting; the limit */
    bool iter_active;           /* this loop iteration had activity (a read or a wake-up) */
    size_t out_limit;           /* unsent bytes past which a new reply closes the connection */
    size_t out_soft;            /* unsent bytes that pause reading (CF_OUT_FULL) */
    struct out_node *pool;
    unsigned pool_n;
    struct gm_in_spill spill;   /* open/close notices that met a full ring, in order */
    struct gm_dispatcher *hosted; /* the dispatcher this thread also runs (one-thread mode), or NULL */
    ev_timer sweep;             /* once a second: deadlines.c */
    struct gm_tls_ctx *tls;     /* --ssl: new connections speak TLS with it (a reference), or NULL */
    _Atomic(struct gm_tls_ctx *) tls_next; /* a newer one handed over (gm_io_set_tls), or NULL */
    char *tls_buf;              /* one TLS record being written (tls_session.c) */
    char name[16];
};

enum packet_result {
    PKT_DONE,   /* handled */
    PKT_STALL,  /* inbound ring full: try again later, nothing was taken */
    PKT_CLOSE   /* the stream cannot be trusted: close after the error */
};

/* tls_session.c (below everything else: it calls nothing of the thread's) */
/* Begins a TLS session on a new connection: false if memory is short. */
bool tls_conn_start(struct conn *c);
void tls_conn_free(struct conn *c);
/* read() and writev() of the connection, through its TLS session if it has
   one: bytes, 0 for the end, -1 with errno (EAGAIN: wait for the socket). */
ssize_t conn_recv(struct conn *c, char *buf, size_t len);
ssize_t conn_writev(struct conn *c, const struct iovec *iov, int n);
/* Whether bytes already decrypted (or received) wait in the session: the
   socket will not say so. */
bool conn_recv_pending(const struct conn *c);
/* Why the session's last call (ret, its SSL_get_error code) failed, in
   words; the identity "cn:NAME" of a verified client certificate whose CN
   is 1 to GM_CN_MAX printable characters without a space, or 0 bytes. */
void tls_reason(struct conn *c, int ret, int code, char *out, size_t n);
size_t tls_identity(struct conn *c, char *out, size_t n);
/* Takes a context handed over by the main thread. */
void tls_adopt(struct gm_io_thread *t);

/* conn_table.c */
/* Block references are counted in batches: parsing one read takes many
   references to the same block, added with one atomic operation by
   flush_refs().  Anything that could drop a reference (closing a
   connection, publishing the ring) flushes first. */
void flush_refs(struct gm_io_thread *t);
void take_ref(struct gm_io_thread *t, struct gm_block *b);
/* A ring slot for a request of connection c, its conn, kind, flags, type,
   length, payload and block filled in, or NULL when the ring is full
   (stall).  The caller fills the rest, then gm_in_ring_produce(). */
struct gm_in *in_begin(struct conn *c, uint8_t kind, uint8_t flags, uint16_t type, uint32_t len,
                       const char *payload, struct gm_block *blk);
/* A connection notice: never waits (the spill list); false only if memory
   is short and no spare node was given. */
bool in_push_ctrl(struct gm_io_thread *t, const struct gm_in *m, struct gm_in_spill_node *spare);
void in_flush_overflow(struct gm_io_thread *t);
struct out_node *node_get(struct gm_io_thread *t);
void node_put(struct gm_io_thread *t, struct out_node *n);
int slot_alloc(struct gm_io_thread *t);
void slot_free(struct gm_io_thread *t, uint32_t slot);
struct conn *conn_lookup(struct gm_io_thread *t, gm_conn_id id);
/* Pauses reading until the inbound ring has room (retry_stalled). */
void stall(struct conn *c);
/* Reads again unless something still pauses it (a full ring, unsent
   output, a front-end request in flight, a close under way). */
void conn_resume_reading(struct conn *c);
/* Frees what the connection holds: socket, buffers, front-end state,
   queued output. */
void conn_release(struct conn *c);
void conn_close(struct conn *c, int level, const char *why);
/* Tells the dispatcher of the connection (GM_IN_OPEN) with its identity
   (id[0..n), empty: its address); false if it was closed instead (memory). */
bool conn_announce(struct conn *c, const char *id, size_t n);

/* writer.c */
void mark_dirty(struct conn *c);
/* Appends a message to the output (taking its body reference); false if
   the connection was closed instead (memory, or a slow reader). */
bool conn_queue(struct conn *c, const struct gm_out *msg);
void conn_send_error(struct conn *c, const char *code, const char *text);
void conn_flush(struct conn *c);
void flush_dirty(struct gm_io_thread *t);
void flush_lazy(struct gm_io_thread *t);
void close_after_output(struct conn *c, const char *why);
void send_line_too_long(struct conn *c);
void conn_queue_fe_output(struct conn *c, struct gm_fe_output *o);

/* parser.c */
bool start_big(struct conn *c, uint64_t total);
void parse_done(struct conn *c, const char *close_why);
/* Cuts every complete packet and line out of the connection's bytes. */
void packet_parse(struct conn *c);
/* Hands on a big Gearman packet once all its bytes are in. */
void packet_finish_big(struct conn *c, struct gm_block *b);

/* frontend_conn.c */
void fe_parse(struct conn *c);
void fe_finish_big(struct conn *c, struct gm_block *b);
void fe_reply(struct conn *c, struct gm_out *m);

/* deadlines.c */
/* Stamps: bytes were read; a front-end connection is ready for a request. */
void conn_mark_read(struct conn *c);
void conn_mark_ready(struct conn *c);
void deadlines_start(struct gm_io_thread *t);

/* reader.c */
void conn_read(struct conn *c);
/* Parses what the connection has unparsed (Gearman or front-end). */
void conn_parse(struct conn *c);
void retry_stalled(struct gm_io_thread *t);

/* tls_handshake.c */
/* Drives the handshake on; once done, announces the connection and reads. */
void tls_handshake(struct conn *c);

#endif /* GM_IO_INT_H */
