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

/* Waits up to 5 s for the server to close fd (EOF, or a reset when it
   closed with our bytes unread), skipping what it sends before (a TLS
   alert); true if it did. */
static bool
closed_by_server(int fd)
{
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[256];
    ssize_t n;
    while ((n = recv(fd, b, sizeof b, 0)) > 0)
        continue;
    return n == 0 || errno == ECONNRESET;
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

#ifdef HAVE_OPENSSL
/* ------------------------------------------------------------------ */
/* TLS (--ssl, tls_session.c, tls_handshake.c)                        */
/* ------------------------------------------------------------------ */

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "libgearman-server/config/tls_ctx.h"

static char tls_dir[64];

/* A CA, a server certificate and a client certificate (CN=billing) made
   with the openssl tool in a scratch directory, once. */
static void
tls_files(void)
{
    if (tls_dir[0])
        return;
    snprintf(tls_dir, sizeof tls_dir, "/tmp/check_io_tls.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tls_dir));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && K='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes' && "
             "openssl req -x509 $K -keyout ca.key -out ca.pem -days 2 -subj /CN=ca && "
             "openssl req $K -keyout srv.key -out srv.csr -subj /CN=localhost && "
             "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 && "
             "openssl req $K -keyout cli.key -out cli.csr -subj /CN=billing && "
             "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cli.pem -days 2",
             tls_dir);
    ck_assert_msg(system(cmd) == 0, "openssl could not make the test certificates");
}

/* Starts the harness with a TLS context on the thread. */
static void
tls_harness_start(struct harness *h, unsigned handshake_timeout_s)
{
    static char cert[128], key[128], ca[128];
    tls_files();
    harness_config(h, 64u << 20, 0);
    snprintf(cert, sizeof cert, "%s/srv.pem", tls_dir);
    snprintf(key, sizeof key, "%s/srv.key", tls_dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
    h->cfg.ssl = true;
    h->cfg.ssl_certificate = cert;
    h->cfg.ssl_key = key;
    h->cfg.ssl_ca_file = ca;
    h->cfg.ssl_handshake_timeout_s = handshake_timeout_s;
    harness_launch(h, 1024);
    char err[600];
    struct gm_tls_ctx *x = gm_tls_ctx_load(&h->cfg, err, sizeof err);
    ck_assert_msg(x != NULL, "%s", err);
    gm_io_set_tls(h->io, x); /* before any connection: the thread takes it first */
    gm_tls_ctx_unref(x);
}

/* The test's TLS client over fd, with the client certificate if asked. */
static SSL *
tls_client(int fd, bool with_cert)
{
    char path[128], kpath[128];
    SSL_CTX *cx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(cx);
    snprintf(path, sizeof path, "%s/ca.pem", tls_dir);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(cx, path, NULL), 1);
    SSL_CTX_set_verify(cx, SSL_VERIFY_PEER, NULL);
    if (with_cert) {
        snprintf(path, sizeof path, "%s/cli.pem", tls_dir);
        snprintf(kpath, sizeof kpath, "%s/cli.key", tls_dir);
        ck_assert_int_eq(SSL_CTX_use_certificate_file(cx, path, SSL_FILETYPE_PEM), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(cx, kpath, SSL_FILETYPE_PEM), 1);
    }
    SSL *s = SSL_new(cx);
    SSL_CTX_free(cx); /* the session keeps it */
    SSL_set_fd(s, fd);
    ck_assert_msg(SSL_connect(s) == 1, "TLS handshake failed");
    return s;
}

static void
tls_client_free(SSL *s)
{
    SSL_shutdown(s);
    SSL_free(s);
}

/* An ECHO round trip through the client's session. */
static void
tls_echo(SSL *s, size_t size)
{
    static char req[GM_HEADER_SIZE + (100u << 10)], got[sizeof req];
    ck_assert_uint_le(size, sizeof req - GM_HEADER_SIZE);
    gm_header_encode((unsigned char *)req, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, (uint32_t)size);
    for (size_t i = 0; i < size; i++)
        req[GM_HEADER_SIZE + i] = (char)('a' + i % 26);
    ck_assert_int_eq(SSL_write(s, req, (int)(GM_HEADER_SIZE + size)), (int)(GM_HEADER_SIZE + size));
    size_t have = 0;
    while (have < GM_HEADER_SIZE + size) {
        int n = SSL_read(s, got + have, (int)(GM_HEADER_SIZE + size - have));
        ck_assert_msg(n > 0, "no ECHO_RES over TLS");
        have += (size_t)n;
    }
    ck_assert(memcmp(got + GM_HEADER_SIZE, req + GM_HEADER_SIZE, size) == 0);
}

/* The next connection notice on the inbound ring, copied (its payload
   into id), 5 s at most; kind 0 if none came. */
static uint8_t
next_notice(struct harness *h, char *id, size_t idlen, int wait_ms)
{
    for (int i = 0; i < wait_ms; i++) {
        struct gm_in *m = gm_in_ring_peek(&h->ch.in);
        if (!m) {
            usleep(1000);
            continue;
        }
        uint8_t kind = m->kind;
        snprintf(id, idlen, "%.*s", (int)m->len, m->payload ? m->payload : "");
        gm_block_unref(m->blk);
        gm_in_ring_consume(&h->ch.in);
        gm_in_ring_release(&h->ch.in);
        return kind;
    }
    return 0;
}

/* The dispatcher hears of a TLS connection only once its handshake is
   done, with the name of its verified client certificate; decrypted
   requests (a big one too, over several records) are served as usual. */
START_TEST(test_tls_connection_is_announced_after_its_handshake_with_its_certificate_name)
{
    struct harness h;
    tls_harness_start(&h, 10);
    char id[128];
    int a = harness_connect(&h);
    wait_connections(&h, 1);
    ck_assert_msg(next_notice(&h, id, sizeof id, 300) == 0, "announced before its handshake");
    SSL *sa = tls_client(a, true);
    ck_assert_int_eq(next_notice(&h, id, sizeof id, 5000), GM_IN_OPEN);
    ck_assert_str_eq(id, "cn:billing");
    tls_echo(sa, 5);
    tls_echo(sa, 100u << 10);
    int b = harness_connect(&h);
    SSL *sb = tls_client(b, false);
    ck_assert_int_eq(next_notice(&h, id, sizeof id, 5000), GM_IN_OPEN);
    ck_assert_str_eq(id, ""); /* no certificate: known by its address */
    tls_echo(sb, 1000);
    tls_client_free(sa);
    close(a);
    ck_assert_int_eq(next_notice(&h, id, sizeof id, 5000), GM_IN_CLOSE);
    tls_client_free(sb);
    close(b);
    wait_connections(&h, 0);
    harness_stop(&h);
}
END_TEST

/* Plain text sent to a TLS connection and a handshake never begun both
   end in a close (the stalled one after --ssl-handshake-timeout), and the
   dispatcher hears of neither, not even a close. */
START_TEST(test_tls_failed_or_stalled_handshake_is_closed_and_never_announced)
{
    struct harness h;
    tls_harness_start(&h, 1);
    char id[128];
    int plain = harness_connect(&h);
    int stalled = harness_connect(&h);
    wait_connections(&h, 2);
    static const char req[] = "\0REQ\0\0\0\x10\0\0\0\x05hello";
    ck_assert(send_all(plain, req, sizeof req - 1));
    ck_assert_msg(closed_by_server(plain), "plain text to a TLS connection was not closed");
    ck_assert_msg(closed_by_server(stalled), "a stalled handshake was never timed out");
    wait_connections(&h, 0);
    ck_assert_msg(next_notice(&h, id, sizeof id, 200) == 0, "the dispatcher heard of a connection "
                  "that never finished its handshake");
    int ok = harness_connect(&h);
    SSL *s = tls_client(ok, true);
    tls_echo(s, 5);
    tls_client_free(s);
    close(plain);
    close(stalled);
    close(ok);
    wait_connections(&h, 0);
    harness_stop(&h);
}
END_TEST
#endif /* HAVE_OPENSSL */

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
#ifdef HAVE_OPENSSL
    ADD(s, test_tls_connection_is_announced_after_its_handshake_with_its_certificate_name, 30);
    ADD(s, test_tls_failed_or_stalled_handshake_is_closed_and_never_announced, 30);
#endif
    return s;
}

int
main(void)
{
    gm_log_level = GM_LOG_CRITICAL; /* the errors these tests provoke are expected */
    int rc = gm_check_run_tap(io_thread_suite());
#ifdef HAVE_OPENSSL
    if (tls_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tls_dir);
    }
#endif
    return rc;
}
