/*
 * msg.h: the messages that cross threads, and the rings that carry them.
 *
 * Each I/O thread owns two rings with the dispatcher: `gm_in_ring` (I/O ->
 * dispatcher, parsed requests and connection events) and `gm_out_ring`
 * (dispatcher -> I/O, bytes to send and commands).  The main thread hands
 * accepted sockets to an I/O thread on a `gm_fd_ring`.  Messages are values
 * in the ring slots; payload bytes stay in reference-counted blocks and
 * their references travel with the message (block.h).
 *
 * A connection is named across threads by gm_conn_id: the I/O thread index,
 * its slot in that thread's connection table and the slot's generation.  A
 * message for a connection whose generation has moved on is dropped by the
 * receiver; nobody holds a pointer into another thread's memory.
 */
#ifndef GM_MSG_H
#define GM_MSG_H

#include <stdint.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/proto/fe_request.h"
#include "libgearman-server/proto/protocol.h"
#include "libgearman-server/base/ring.h"

/* (thread:8, slot:24, generation:32) */
typedef uint64_t gm_conn_id;

static inline gm_conn_id
gm_conn_id_make(unsigned thread, uint32_t slot, uint32_t gen)
{
    return (uint64_t)(thread & 0xff) << 56 | (uint64_t)(slot & 0xffffff) << 32 | gen;
}
static inline unsigned gm_conn_thread(gm_conn_id id) { return (unsigned)(id >> 56); }
static inline uint32_t gm_conn_slot(gm_conn_id id) { return (uint32_t)(id >> 32) & 0xffffff; }
static inline uint32_t gm_conn_gen(gm_conn_id id) { return (uint32_t)id; }

#define GM_MAX_IO_THREADS 255
#define GM_MAX_SLOTS 0xffffff
#define GM_ADMIN_MAX_WORDS 8
#define GM_ADDR_MAX 48
/* The longest client certificate CN that names a connection ("cn:NAME", X.509's bound). */
#define GM_CN_MAX 64

/* I/O thread -> dispatcher */
enum gm_in_kind {
    GM_IN_PACKET = 1,  /* a binary request: type, payload, fields */
    GM_IN_TEXT,        /* an admin text line: payload = line without EOL, words */
    GM_IN_OPEN,        /* a connection was accepted (and its TLS handshake done): fd, peer
                          address; payload: "cn:NAME" of a verified client certificate, or empty */
    GM_IN_CLOSE,       /* the connection is gone; forget it */
    GM_IN_FRONTEND     /* a front-end (HTTP) request: payload = its bytes, u.fe */
};

/* The words of an admin text line, as offsets into the line. */
struct gm_admin_words {
    uint8_t count;                         /* words stored (at most GM_ADMIN_MAX_WORDS) */
    uint8_t more;                          /* 1 if the line had more words than stored */
    uint16_t start[GM_ADMIN_MAX_WORDS];
    uint16_t len[GM_ADMIN_MAX_WORDS];
};

enum gm_in_flags {
    GM_IN_OWN_BLOCK = 1 << 0, /* blk holds this packet alone: a job may keep it */
    GM_IN_CRLF = 1 << 1       /* GM_IN_TEXT: the line ended with \r\n */
};

struct gm_in {
    gm_conn_id conn;
    uint8_t kind;           /* enum gm_in_kind */
    uint8_t flags;          /* enum gm_in_flags */
    uint16_t type;          /* GM_IN_PACKET: packet type */
    uint32_t len;           /* payload length */
    const char *payload;    /* inside blk (PACKET, TEXT) */
    struct gm_block *blk;   /* the reference this message holds, or NULL */
    union {
        struct gm_fields fields;            /* GM_IN_PACKET */
        struct gm_admin_words words;        /* GM_IN_TEXT */
        struct gm_fe_req fe;                /* GM_IN_FRONTEND */
        struct {                            /* GM_IN_OPEN */
            int fd;
            uint16_t port;
            char addr[GM_ADDR_MAX];
        } open;
    } u;
};

/* dispatcher -> I/O thread */
enum gm_out_kind {
    GM_OUT_SEND = 1,   /* write head[0..head_len) then body */
    GM_OUT_CLOSE,      /* close after everything queued before it is written */
};

#define GM_OUT_INLINE 88

enum gm_out_flags {
    GM_OUT_F_RAW = 1 << 0,     /* a front-end connection's whole response: write as is */
    GM_OUT_F_MAY_WAIT = 1 << 1 /* a reply to a client with other jobs in flight: the I/O
                                  thread may hold it briefly to write it with the next ones */
};

struct gm_out {
    gm_conn_id conn;
    uint8_t kind;             /* enum gm_out_kind */
    uint8_t flags;            /* enum gm_out_flags */
    uint8_t head_len;         /* bytes used in head[] */
    char head[GM_OUT_INLINE]; /* small packets, or the header of a big one */
    struct gm_slice body;     /* payload bytes by reference (may be empty) */
};

/* main thread -> I/O thread: an accepted socket */
struct gm_new_fd {
    int fd;
    uint8_t frontend;         /* 1: accepted on the front-end (HTTP) port */
    uint16_t port;
    char addr[GM_ADDR_MAX];
};

GM_RING_DEFINE(gm_in_ring, struct gm_in)
GM_RING_DEFINE(gm_out_ring, struct gm_out)
GM_SPILL_DEFINE(gm_in_spill, gm_in_ring, struct gm_in)
GM_SPILL_DEFINE(gm_out_spill, gm_out_ring, struct gm_out)
GM_RING_DEFINE(gm_fd_ring, struct gm_new_fd)

/* The pair of rings between one I/O thread and the dispatcher, plus the two
   flags each side raises when it is waiting for the other to make room:
   the I/O thread stops reading sockets while `in` is full and sets
   io_wants_space; the dispatcher parks replies in a spill list while
   `out` is full and sets disp_wants_space (GM_SPILL_DEFINE, ring.h).
   Whoever drains the ring clears the flag and wakes the waiter.
   Owner: set up and torn down by the server's main thread while neither
   side runs; otherwise each field as marked. */
struct gm_channel {
    struct gm_in_ring in;    /* producer: the I/O thread; consumer: the dispatcher */
    struct gm_out_ring out;  /* producer: the dispatcher; consumer: the I/O thread */
    _Atomic int io_wants_space;   /* set by the I/O thread; cleared by the dispatcher */
    _Atomic int disp_wants_space; /* set by the dispatcher; cleared by the I/O thread */
};

/* Sizes the rings; returns 0 or -1 if memory is short. */
static inline int
gm_channel_init(struct gm_channel *ch, size_t in_slots, size_t out_slots)
{
    atomic_init(&ch->io_wants_space, 0);
    atomic_init(&ch->disp_wants_space, 0);
    if (gm_in_ring_init(&ch->in, in_slots) < 0)
        return -1;
    if (gm_out_ring_init(&ch->out, out_slots) < 0) {
        gm_in_ring_destroy(&ch->in);
        return -1;
    }
    return 0;
}

/* Releases the references held by messages still in the rings, then the
   rings.  Only once both threads have stopped. */
static inline void
gm_channel_destroy(struct gm_channel *ch)
{
    struct gm_in *in;
    gm_in_ring_publish(&ch->in);
    while ((in = gm_in_ring_peek(&ch->in))) {
        gm_block_unref(in->blk);
        gm_in_ring_consume(&ch->in);
    }
    struct gm_out *out;
    gm_out_ring_publish(&ch->out);
    while ((out = gm_out_ring_peek(&ch->out))) {
        gm_block_unref(out->body.blk);
        gm_out_ring_consume(&ch->out);
    }
    gm_in_ring_destroy(&ch->in);
    gm_out_ring_destroy(&ch->out);
}

#endif /* GM_MSG_H */
