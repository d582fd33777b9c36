/*
 * check_io_thread.c: unit tests for the I/O thread (io_thread.c) driven
 * through its public API: a real I/O thread on its own libev loop, fed
 * one end of a Unix socket pair per connection, with this test playing
 * the dispatcher (it reads the connection notices off the inbound ring).
 *
 * Unix sockets keep what the kernel buffers small and fixed (no TCP
 * autotuning), so the server's unsent output, and with it the moment a
 * slow reader passes the output limit, is under the test's control.
 *
 * malloc is wrapped (-Wl,--wrap=malloc): a test can make every malloc of
 * the I/O thread fail, to prove what the thread does when memory is short.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "libgearman-server/io/io_thread.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/proto/msg.h"
#include "libgearman-server/proto/protocol.h"
#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* malloc failure injection                                            */
/* ------------------------------------------------------------------ */

void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);

static _Atomic int fail_io_malloc;
static pthread_t io_tid;

/* Fails every malloc of the I/O thread while fail_io_malloc is set. */
void *
__wrap_malloc(size_t size)
{
    if (atomic_load(&fail_io_malloc) && pthread_equal(pthread_self(), io_tid))
        return NULL;
    return __real_malloc(size);
}

/* ------------------------------------------------------------------ */
/* Harness                                                             */
/* ------------------------------------------------------------------ */

struct harness {
    struct gm_server_config cfg;
    struct gm_channel ch;
    struct gm_io_thread *io;
    pthread_t th;
};

static void
no_wake(void *arg)
{
    (void)arg;
}

/* output_soft: where reading pauses (0: the server's default;
   UINT32_MAX: never, so the tests can reach max_output). */
static void
harness_config(struct harness *h, uint32_t max_output, uint32_t output_soft)
{
    memset(h, 0, sizeof *h);
    gm_server_config_defaults(&h->cfg);
    h->cfg.max_output = max_output;
    h->cfg.output_soft = output_soft;
    h->cfg.max_packet_size = 128u << 10;
    h->cfg.busy_poll_us = 0;
    h->cfg.reply_batch_us = 0;
}

/* Starts the I/O thread with h->cfg (set before: the thread reads it). */
static void
harness_launch(struct harness *h, size_t in_slots)
{
    ck_assert_int_eq(gm_channel_init(&h->ch, in_slots, 1024), 0);
    h->io = gm_io_new(0, &h->cfg, &h->ch, no_wake, NULL);
    ck_assert_ptr_nonnull(h->io);
    ck_assert_int_eq(pthread_create(&h->th, NULL, gm_io_thread_main, h->io), 0);
    io_tid = h->th;
}

static void
harness_start(struct harness *h, size_t in_slots, uint32_t max_output, uint32_t output_soft)
{
    harness_config(h, max_output, output_soft);
    harness_launch(h, in_slots);
}

static void
harness_stop(struct harness *h)
{
    atomic_store(&fail_io_malloc, 0);
    gm_io_stop(h->io);
    pthread_join(h->th, NULL);
    gm_io_free(h->io);
    gm_channel_destroy(&h->ch);
}

/* Hands the I/O thread a new connection; returns the test's end (blocking,
   with 10 s time-outs).  The server's end has a small send buffer. */
static int
harness_connect(struct harness *h)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    struct timeval tv = {10, 0};
    setsockopt(sv[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct gm_new_fd nf;
    memset(&nf, 0, sizeof nf);
    nf.fd = sv[0];
    nf.port = 1;
    snprintf(nf.addr, sizeof nf.addr, "unix-test");
    ck_assert_int_eq(gm_io_add_fd(h->io, &nf), 0);
    return sv[1];
}

/* Waits until the I/O thread holds n connections (5 s at most). */
static void
wait_connections(struct harness *h, unsigned n)
{
    for (int i = 0; i < 5000 && gm_io_connection_count(h->io) != n; i++)
        usleep(1000);
    ck_assert_uint_eq(gm_io_connection_count(h->io), n);
}

/* Sends a whole buffer; returns false once the server has closed. */
static bool
send_all(int fd, const void *p, size_t len)
{
    const char *b = p;
    while (len) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        b += n;
        len -= (size_t)n;
    }
    return true;
}

/* Sends one packet with the given magic, type and payload size (payload
   bytes all 'x'); returns false once the server has closed. */
static bool
send_packet(int fd, uint32_t magic, uint32_t type, size_t size)
{
    static char buf[GM_HEADER_SIZE + (200u << 10)];
    ck_assert_uint_le(size, sizeof buf - GM_HEADER_SIZE);
    gm_header_encode((unsigned char *)buf, magic, type, (uint32_t)size);
    memset(buf + GM_HEADER_SIZE, 'x', size);
    return send_all(fd, buf, GM_HEADER_SIZE + size);
}

/* Reads exactly len bytes (10 s at most); false on EOF, error or time-out. */
static bool
recv_all(int fd, void *p, size_t len)
{
    char *b = p;
    while (len) {
        ssize_t n = recv(fd, b, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        b += n;
        len -= (size_t)n;
    }
    return true;
}

/* An ECHO round trip on a fresh connection: the thread still serves. */
static void
assert_thread_serves(struct harness *h)
{
    int fd = harness_connect(h);
    static const char req[] = "\0REQ\0\0\0\x10\0\0\0\x05hello";
    static const char res[] = "\0RES\0\0\0\x11\0\0\0\x05hello";
    char got[sizeof res - 1];
    ck_assert(send_all(fd, req, sizeof req - 1));
    ck_assert_msg(recv_all(fd, got, sizeof got), "no ECHO_RES: the I/O thread is stuck");
    ck_assert(memcmp(got, res, sizeof got) == 0);
    close(fd);
}

/* Takes every published notice off the inbound ring (as the dispatcher
   would), recording kinds and slots; returns how many were read. */
static size_t
drain_notices(struct harness *h, uint8_t *kinds, uint32_t *slots, size_t max)
{
    size_t n = 0;
    struct gm_in *m;
    while ((m = gm_in_ring_peek(&h->ch.in))) {
        if (n < max) {
            kinds[n] = m->kind;
            slots[n] = gm_conn_slot(m->conn);
        }
        n++;
        gm_block_unref(m->blk);
        gm_in_ring_consume(&h->ch.in);
    }
    gm_in_ring_release(&h->ch.in);
    if (atomic_exchange(&h->ch.io_wants_space, 0))
        gm_io_wake(h->io);
    return n;
}

/* ------------------------------------------------------------------ */
/* Slow readers                                                        */
/* ------------------------------------------------------------------ */

/* A client that never reads and sends big ECHO_REQs (each in a block of
   its own, answered by reference to that block) is closed when its unsent
   output passes the limit; the block is released once, and the thread
   serves on (issue 12.1: this was a double free, a remote crash).  Reading
   does not pause here (output_soft UINT32_MAX), so the ECHOs reach the limit. */
START_TEST(test_slow_reader_of_big_echoes_is_closed_and_nothing_is_freed_twice)
{
    struct harness h;
    harness_start(&h, 1024, 1u << 20, UINT32_MAX);
    int fd = harness_connect(&h);
    int sent = 0;
    while (sent < 100 && send_packet(fd, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 100u << 10))
        sent++;
    ck_assert_msg(sent < 100, "not closed after %d ECHOs of 100 KiB (limit 1 MiB)", sent);
    ck_assert_int_ge(sent, 10);
    close(fd);
    wait_connections(&h, 0);
    assert_thread_serves(&h);
    harness_stop(&h);
}
END_TEST

/* The same limit reached by the ERROR answering a big packet with a
   response magic (also held in a block of its own): the connection is
   closed and the packet's block released once (issue 12.1, the error
   paths of handle_packet). */
START_TEST(test_error_for_a_big_packet_that_passes_the_output_limit_frees_it_once)
{
    struct harness h;
    harness_start(&h, 1024, 1u << 20, UINT32_MAX);
    /* A connection is closed when a reply comes while its unsent output
       is over max_output.  ECHO replies up to 1,000 bytes under that (less
       what the kernel holds, a few KiB): no ECHO finds it over. */
    const size_t limit = h.cfg.max_output;
    int fd = harness_connect(&h);
    size_t queued = 0;
    const size_t big = 100u << 10;
    while (queued + GM_HEADER_SIZE + big <= limit - 1000) {
        ck_assert(send_packet(fd, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, big));
        queued += GM_HEADER_SIZE + big;
    }
    size_t last = limit - 1000 - queued - GM_HEADER_SIZE;
    ck_assert(send_packet(fd, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, last));
    /* Then big packets with the response magic: each gets an ERROR of 49
       bytes, one of which passes the limit. */
    int sent = 0;
    while (sent < 2000 && send_packet(fd, GM_MAGIC_RES, GM_PKT_ECHO_REQ, big))
        sent++;
    ck_assert_msg(sent < 2000, "not closed after %d errors", sent);
    close(fd);
    wait_connections(&h, 0);
    assert_thread_serves(&h);
    harness_stop(&h);
}
END_TEST

/* Backpressure (issue 14.1): a client that does not read is no longer
   read from once its unsent output passes the soft limit (half of a 1 MiB
   limit here), so its requests wait in its own socket; it is not closed,
   the thread serves others, and once it reads, everything it sent is
   answered.  Before, the thread read on until the limit and closed it. */
START_TEST(test_slow_reader_is_not_read_from_until_it_reads_and_loses_nothing)
{
    struct harness h;
    harness_start(&h, 1024, 1u << 20, 0);
    int fd = harness_connect(&h);
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static char pkt[GM_HEADER_SIZE + (100u << 10)];
    gm_header_encode((unsigned char *)pkt, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 100u << 10);
    memset(pkt + GM_HEADER_SIZE, 'x', 100u << 10);
    size_t total = 0;
    int blocked_errno = 0;
    for (int round = 0; round < 200 && !blocked_errno; round++) {
        for (size_t off = 0; off < sizeof pkt;) {
            ssize_t n = send(fd, pkt + off, sizeof pkt - off, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                blocked_errno = n < 0 ? errno : EPIPE;
                break;
            }
            off += (size_t)n;
            total += (size_t)n;
        }
    }
    ck_assert_msg(blocked_errno == EAGAIN || blocked_errno == EWOULDBLOCK,
                  "the server kept reading (%zu bytes of ECHO sent), or closed: %s", total,
                  strerror(blocked_errno));
    ck_assert_msg(total < (4u << 20), "%zu bytes taken from a client that does not read", total);
    ck_assert_uint_eq(gm_io_connection_count(h.io), 1); /* paused, not closed */
    assert_thread_serves(&h);
    wait_connections(&h, 1);
    size_t whole = total / sizeof pkt, part = total % sizeof pkt;
    static char got[sizeof pkt];
    char want[GM_HEADER_SIZE];
    gm_header_encode((unsigned char *)want, GM_MAGIC_RES, GM_PKT_ECHO_RES, 100u << 10);
    for (size_t i = 0; i <= whole; i++) {
        if (i == whole) { /* the server reads again: the rest of the last one */
            tv.tv_sec = 10;
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            ck_assert(send_all(fd, pkt + part, sizeof pkt - part));
        }
        ck_assert_msg(recv_all(fd, got, sizeof got), "reply %zu of %zu missing", i + 1, whole + 1);
        ck_assert(memcmp(got, want, GM_HEADER_SIZE) == 0);
    }
    close(fd);
    wait_connections(&h, 0);
    harness_stop(&h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Connection notices                                                   */
/* ------------------------------------------------------------------ */

/* With the inbound ring full and no memory, a new connection is refused
   (closed, no notice) and a closing one still tells the dispatcher, from
   the node reserved when it opened; the thread never waits for the
   dispatcher, which may run on this same thread (issue 12.3: it used to
   wait for room forever). */
START_TEST(test_ring_full_and_no_memory_refuses_new_connections_and_still_reports_closes)
{
    struct harness h;
    harness_start(&h, 2, 1u << 20, 0);
    int a = harness_connect(&h);
    int b = harness_connect(&h);
    int c = harness_connect(&h); /* its OPEN waits in the overflow list */
    wait_connections(&h, 3);

    atomic_store(&fail_io_malloc, 1);
    int d = harness_connect(&h);
    char byte;
    ck_assert_msg(recv(d, &byte, 1, 0) == 0, "a connection accepted without memory was not closed");
    close(d);
    close(a);
    wait_connections(&h, 2);
    atomic_store(&fail_io_malloc, 0);

    /* b's ECHO is answered by the I/O thread itself: it is not stuck */
    static const char req[] = "\0REQ\0\0\0\x10\0\0\0\x02ok";
    static const char res[] = "\0RES\0\0\0\x11\0\0\0\x02ok";
    char got[sizeof res - 1];
    ck_assert(send_all(b, req, sizeof req - 1));
    ck_assert_msg(recv_all(b, got, sizeof got), "no ECHO_RES: the I/O thread is stuck");
    ck_assert(memcmp(got, res, sizeof got) == 0);

    uint8_t kinds[8];
    uint32_t slots[8];
    size_t n = 0;
    for (int i = 0; i < 5000 && n < 4; i++) {
        n += drain_notices(&h, kinds + n, slots + n, 8 - n);
        if (n < 4)
            usleep(1000);
    }
    ck_assert_uint_eq(n, 4);
    ck_assert_int_eq(kinds[0], GM_IN_OPEN);
    ck_assert_int_eq(kinds[1], GM_IN_OPEN);
    ck_assert_int_eq(kinds[2], GM_IN_OPEN);
    ck_assert_int_eq(kinds[3], GM_IN_CLOSE);
    ck_assert_uint_eq(slots[3], slots[0]);
    usleep(20000);
    ck_assert_uint_eq(drain_notices(&h, kinds, slots, 8), 0); /* nothing about d */
    close(b);
    close(c);
    wait_connections(&h, 0);
    harness_stop(&h);
}
END_TEST

/* ------------------------------------------------------------------ */

#define ADD(s, t, timeout) gm_check_add((s), #t, t, (timeout), NULL, NULL)

/* ------------------------------------------------------------------ */
/* Deadlines                                                           */
/* ------------------------------------------------------------------ */

/* Waits up to 5 s for the server to close fd (EOF); true if it did. */
static bool
closed_by_server(int fd)
{
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b;
    return recv(fd, &b, 1, 0) == 0;
}

/* A packet begun and left incomplete closes its connection after
   --packet-timeout without a byte; a connection idle between packets (a
   worker waiting for work) is never timed (issue 14.4). */
START_TEST(test_incomplete_packet_times_out_but_an_idle_connection_does_not)
{
    struct harness h;
    harness_config(&h, 64u << 20, 0);
    h.cfg.packet_timeout_s = 1;
    harness_launch(&h, 1024);
    int partial = harness_connect(&h);
    int idle = harness_connect(&h);
    wait_connections(&h, 2);
    ck_assert(send_all(partial, "\0REQ\0", 5));
    ck_assert_msg(closed_by_server(partial), "a 5-byte partial packet was never timed out");
    wait_connections(&h, 1);
    sleep(2); /* twice the limit: the idle one is still served */
    static const char req[] = "\0REQ\0\0\0\x10\0\0\0\x02hi";
    char got[sizeof req - 1];
    ck_assert(send_all(idle, req, sizeof req - 1));
    ck_assert_msg(recv_all(idle, got, sizeof got), "the idle connection was closed");
    close(partial);
    close(idle);
    wait_connections(&h, 0);
    harness_stop(&h);
}
END_TEST

/* Writes a CAN_DO for the one-letter function fn into buf; returns its size. */
static size_t
can_do(char *buf, char fn)
{
    gm_header_encode((unsigned char *)buf, GM_MAGIC_REQ, GM_PKT_CAN_DO, 1);
    buf[GM_HEADER_SIZE] = fn;
    return GM_HEADER_SIZE + 1;
}

/* The next packet on the inbound ring (notices skipped), 5 s at most. */
static struct gm_in
next_packet(struct harness *h)
{
    for (int i = 0; i < 5000; i++) {
        struct gm_in *m = gm_in_ring_peek(&h->ch.in);
        if (!m) {
            usleep(1000);
            continue;
        }
        struct gm_in copy = *m;
        gm_in_ring_consume(&h->ch.in);
        gm_in_ring_release(&h->ch.in);
        if (copy.kind == GM_IN_PACKET)
            return copy;
        gm_block_unref(copy.blk);
    }
    ck_abort_msg("no packet reached the dispatcher");
    struct gm_in none = {0};
    return none;
}

/* A one-byte partial packet left in a read block the thread has moved
   past gets a block of its own after a second, so the 64 KiB block is
   freed (issue 14.4: each such byte pinned a whole block); the packet is
   whole once the rest arrives. */
START_TEST(test_partial_packet_lets_go_of_the_shared_read_block)
{
    struct harness h;
    harness_start(&h, 1024, 64u << 20, 0);
    int x = harness_connect(&h);
    int y = harness_connect(&h);
    wait_connections(&h, 2);
    /* CAN_DO "f" and the first byte of CAN_DO "g", in one read */
    char buf[64], g[16];
    size_t n = can_do(buf, 'f');
    size_t gn = can_do(g, 'g');
    buf[n++] = g[0];
    ck_assert(send_all(x, buf, n));
    struct gm_in f = next_packet(&h);
    ck_assert_int_eq(f.type, GM_PKT_CAN_DO);
    ck_assert(f.len == 1 && f.payload[0] == 'f');
    struct gm_block *shared = f.blk; /* we keep this reference */
    /* y fills the rest of that block (a big ECHO), then reads into a new one */
    ck_assert(send_packet(y, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 100u << 10));
    static char echo[GM_HEADER_SIZE + (100u << 10)];
    ck_assert(recv_all(y, echo, sizeof echo));
    ck_assert(send_packet(y, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 10));
    ck_assert(recv_all(y, echo, GM_HEADER_SIZE + 10));
    /* x's byte is the block's only other holder, until it moves out */
    unsigned refs = 0;
    for (int i = 0; i < 5000; i++) {
        refs = atomic_load(&shared->refs);
        if (refs == 1)
            break;
        usleep(1000);
    }
    ck_assert_msg(refs == 1, "the partial packet still holds the 64 KiB block (%u refs)", refs);
    ck_assert(send_all(x, g + 1, gn - 1));
    struct gm_in pg = next_packet(&h);
    ck_assert_int_eq(pg.type, GM_PKT_CAN_DO);
    ck_assert(pg.len == 1 && pg.payload[0] == 'g');
    gm_block_unref(pg.blk);
    gm_block_unref(shared);
    close(x);
    close(y);
    wait_connections(&h, 0);
    harness_stop(&h);
}
END_TEST

static Suite *
io_thread_suite(void)
{
    Suite *s = suite_create("io_thread");
    ADD(s, test_slow_reader_of_big_echoes_is_closed_and_nothing_is_freed_twice, 60);
    ADD(s, test_error_for_a_big_packet_that_passes_the_output_limit_frees_it_once, 60);
    ADD(s, test_slow_reader_is_not_read_from_until_it_reads_and_loses_nothing, 60);
    ADD(s, test_ring_full_and_no_memory_refuses_new_connections_and_still_reports_closes, 30);
    ADD(s, test_incomplete_packet_times_out_but_an_idle_connection_does_not, 30);
    ADD(s, test_partial_packet_lets_go_of_the_shared_read_block, 30);
    return s;
}

int
main(void)
{
    gm_log_level = GM_LOG_CRITICAL; /* the errors these tests provoke are expected */
    return gm_check_run_tap(io_thread_suite());
}
