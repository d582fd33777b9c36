/*
 * disp_harness.h: what the dispatcher unit tests share (check_dispatcher_*):
 * the dispatcher and the job store (dispatcher.h, jobs.h) fed synthetic
 * messages, with no sockets and no threads.
 *
 * The test plays the I/O threads.  It builds each request packet in a
 * reference-counted block as an I/O thread would, pushes a struct gm_in on
 * the inbound ring of the connection's thread, runs gm_disp_drain() and
 * gm_disp_flush(), then takes every struct gm_out off the outbound rings,
 * appends its bytes (head, then body) to the receiving connection's byte
 * stream and drops the body reference.  Expectations read whole packets
 * (or admin text) off the front of those streams.  The dispatcher's clock
 * is the test's: hooks.now_ms returns H.now, and timers run only when a
 * test calls run_timers().
 *
 * Each test case is its own TCase (DISP_ADD, so that the TAP line carries
 * its name) with a checked fixture that builds the dispatcher over two
 * channels and frees everything afterwards, so AddressSanitizer's leak
 * check sees the teardown of every job state.
 */
#ifndef GM_TESTS_UNIT_DISP_HARNESS_H
#define GM_TESTS_UNIT_DISP_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/dispatch/dispatcher.h"
#include "libgearman-server/dispatch/dispatcher_int.h"
#include "libgearman-server/dispatch/jobs.h"
#include "libgearman-server/persist/persist.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/proto/protocol.h"
#include "libgearman-server/config/server_config.h"
#include "tests/unit/check_tap.h"

#define NCHAN 2
#define MAXCONN 32
#define T0 INT64_C(1700000000000) /* 2023-11-14 22:13:20 UTC, in ms */

/* One connection as the test sees it: the bytes the dispatcher sent it. */
struct tconn {
    gm_conn_id id;
    char name[16];
    char *buf;
    size_t len, cap, off;
    unsigned closes; /* GM_OUT_CLOSE messages seen */
};

struct disp_state {
    struct gm_server_config cfg;
    struct gm_channel ch[NCHAN];
    struct gm_dispatcher *d;
    int64_t now;
    unsigned wakes[NCHAN];
    unsigned shutdowns;
    struct tconn conns[MAXCONN];
    unsigned nconns;
    uint32_t next_slot[NCHAN];
    struct gm_persist_channel pc; /* durable tests: the test plays the persistence thread */
    bool durable;                 /* pc is set up (teardown destroys it) */
};
extern struct disp_state H;

/* The checked fixture of every case: a dispatcher over NCHAN channels. */
void disp_setup(void);
void disp_teardown(void);
#define DISP_ADD(s, t) gm_check_add((s), #t, t, 60, disp_setup, disp_teardown)

/* ---- playing the I/O threads ---- */

/* Takes every reply off the outbound rings (flushing first, again while
   replies still wait in the dispatcher); returns how many it took. */
size_t collect(void);
/* Runs the dispatcher over whatever the test pushed, then collects. */
void pump(void);
/* Pushes one inbound message (making room by draining if the ring is full). */
void push_in(const struct gm_in *m);
/* Pushes one inbound message, draining once (without collecting) if the
   ring is full; false if it is still full: the dispatcher took nothing. */
bool offer_in(const struct gm_in *m);
/* Builds an inbound packet / admin line (its block is the message's). */
void packet_in(struct gm_in *m, gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n);
void text_in(struct gm_in *m, gm_conn_id c, const char *line);
/* Makes c a connection the test reads, without announcing it. */
struct tconn *conn_register(const char *name, gm_conn_id id);
/* Announces a connection with an explicit id (GM_IN_OPEN). */
gm_conn_id open_id(const char *name, gm_conn_id id, const char *addr);
/* Opens a new connection on I/O thread `thread`. */
gm_conn_id conn_open(const char *name, unsigned thread);
void conn_close(gm_conn_id c);
/* Pushes a request packet in a block of its own without running the
   dispatcher; returns the block (whose one reference the message holds). */
struct gm_block *send_nopump(gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n);
void send_pkt(gm_conn_id c, uint32_t type, const struct gm_field_ref *f, size_t n);

#define FR(s) ((struct gm_field_ref){(s), strlen(s)})

void send0(gm_conn_id c, uint32_t type);
void send1(gm_conn_id c, uint32_t type, const char *a);
void send2(gm_conn_id c, uint32_t type, const char *a, const char *b);
void send3(gm_conn_id c, uint32_t type, const char *a, const char *b, const char *x);
void submit(gm_conn_id c, uint32_t type, const char *fn, const char *unique, const char *data);
void submit_epoch(gm_conn_id c, const char *fn, const char *unique, const char *epoch, const char *data);
void submit_sched(gm_conn_id c, const char *fn, const char *unique, const char *mi, const char *h,
                  const char *dom, const char *mon, const char *dow, const char *data);
void submit_reduce(gm_conn_id c, uint32_t type, const char *fn, const char *unique, const char *reducer,
                   const char *data);
void can_do(gm_conn_id w, const char *fn);
void cant_do(gm_conn_id w, const char *fn);
void pre_sleep(gm_conn_id w);
void grab(gm_conn_id w);
void can_do_timeout(gm_conn_id w, const char *fn, const char *ms);
/* WORK_COMPLETE / WORK_DATA / WORK_WARNING / WORK_EXCEPTION */
void work(gm_conn_id w, uint32_t type, const char *handle, const char *data);
/* Sends an admin text line (without its end of line). */
void admin(gm_conn_id c, const char *line);
/* Runs the timers at the test clock and collects what they sent. */
int64_t run_timers(void);

/* ---- reading what a connection received ---- */

struct tconn *must_find(gm_conn_id c);

/* A packet taken off a connection's stream, with its payload's fields. */
struct pkt {
    uint32_t type, size;
    const char *payload;
    struct gm_fields f;
};

/* Takes the next packet off c's stream and checks its type and fields
   (NULL = any value).  Returns the payload's fields for further checks. */
struct pkt expect_pkt(int line, gm_conn_id c, uint32_t type, const char *const *fields, size_t n);

#define ANY NULL
#define NARGS(...) (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define EXPECT(c, type, ...) \
    expect_pkt(__LINE__, (c), (type), (const char *const[]){__VA_ARGS__}, NARGS(__VA_ARGS__))
#define EXPECT0(c, type) expect_pkt(__LINE__, (c), (type), NULL, 0)

/* submit(), then EXPECT the JOB_CREATED carrying handle (or ANY). */
#define SUBMITTED(c, type, fn, unique, data, handle)            \
    do {                                                        \
        submit((c), (type), (fn), (unique), (data));            \
        EXPECT((c), GM_PKT_JOB_CREATED, (handle));              \
    } while (0)
/* grab(), then EXPECT a JOB_ASSIGN with these fields (handle, function,
   data; ANY for any). */
#define GRABBED(w, ...)                                         \
    do {                                                        \
        grab(w);                                                \
        EXPECT((w), GM_PKT_JOB_ASSIGN, __VA_ARGS__);            \
    } while (0)

/* Nothing more was sent to c. */
#define EXPECT_NOTHING(c) expect_nothing(__LINE__, (c))
void expect_nothing(int line, gm_conn_id c);

/* The next bytes on c are exactly `text` (admin replies). */
#define EXPECT_TEXT(c, text) expect_text(__LINE__, (c), (text))
void expect_text(int line, gm_conn_id c, const char *text);

/* True if the next packet on c is of this type (without taking it). */
bool next_is(gm_conn_id c, uint32_t type);
/* The data field of a JOB_ASSIGN, as a string in buf. */
const char *assign_data(const struct pkt *p, char *buf, size_t cap);
uint32_t block_refs(struct gm_block *b);

#endif /* GM_TESTS_UNIT_DISP_HARNESS_H */
