/*
 * check_queue_memcached.c: unit tests for the memcached queue backend
 * (gm_queue_memcached, through its vtable) against a throwaway memcached:
 * the cases every backend passes (queue_backend_cases.c), and memcached's
 * own: migrating gearmand 1.1.20's items, replay finding every job however
 * memcached's LRUs move the items (reads, restarts, a busy LRU crawler,
 * other clients reading), items over the size limit, and names longer
 * than an item's layout holds.
 *
 * Run by tests/unit/check_queue_memcached.sh, which starts memcached
 * (tests/lib/with_services.py) and names it in GM_TEST_MEMCACHED
 * (host:port).  When it is missing the cases that need it FAIL, not skip:
 * CI always provides the services.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifdef HAVE_LIBMEMCACHED
#include <libmemcached/memcached.h>
#endif

#include "plugins/queue/backends.h"
#include "tests/unit/queue_harness.h"

#ifdef HAVE_LIBMEMCACHED

static char t_prefix[64];

static const char *
mc_servers(void)
{
    return service_env("GM_TEST_MEMCACHED", "memcached", "check_queue_memcached.sh");
}

static void
mc_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_prefix, sizeof t_prefix, "gmq%d_%u_", (int)getpid(), name_seq);
    gm_queue_opt_set(o, "libmemcached-servers", mc_servers());
    gm_queue_opt_set(o, "libmemcached-prefix", t_prefix);
}

static void
mc_cleanup(const struct gm_queue_options *o)
{
    (void)o; /* the keys die with the throwaway memcached */
}

/* The test's own memcached handle (for writing items as gearmand 1.1.20 did). */
static memcached_st *
mc_client(void)
{
    memcached_st *m = memcached_create(NULL);
    ck_assert_ptr_nonnull(m);
    memcached_server_st *list = memcached_servers_parse(mc_servers());
    ck_assert_ptr_nonnull(list);
    memcached_server_push(m, list);
    memcached_server_list_free(list);
    return m;
}

/* memcached stores items of at most 1 MiB (-I, the default) including its
   own header, so the big case uses the largest payload such a server
   takes; test_memcached_batch_with_an_item_too_big_writes_nothing covers
   a payload over the limit. */
static const struct bk BK_MC = {"memcached", &gm_queue_memcached, mc_fresh, mc_cleanup, MIB - 4096};

BACKEND_CASES(memcached, BK_MC)

START_TEST(test_memcached_open_with_no_server_fails_with_a_message)
{
    struct gm_queue_options o;
    fresh_common(&o);
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", closed_port());
    gm_queue_opt_set(&o, "libmemcached-servers", servers);
    gm_queue_opt_set(&o, "libmemcached-prefix", "gear_");
    char err[256] = "";
    double t0 = now_s();
    void *st = gm_queue_memcached.open(&o, err, sizeof err);
    ck_assert_msg(st == NULL, "open with nothing listening on %s succeeded", servers);
    ck_assert_msg(err[0] != '\0', "no message");
    ck_assert_msg(now_s() - t0 < 10.0, "open took %.1fs to fail", now_s() - t0);
}
END_TEST

START_TEST(test_memcached_open_succeeds_against_a_running_server)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MC, &o);
    struct rows rs;
    bk_replay(&BK_MC, st, &rs);
    ck_assert_uint_eq(rs.n, 0);
    rows_free(&rs);
    gm_queue_memcached.close(st);
}
END_TEST

START_TEST(test_memcached_gearmand_1_1_20_items_are_migrated_by_replay)
{
    struct gm_queue_options o;
    mc_fresh(&o);
    o.handle_prefix = "H:old";
    memcached_st *m = mc_client();
    /* gearmand 1.1.20: key <prefix><function>-<unique>, value = data, flags = priority */
    char key[128];
    snprintf(key, sizeof key, "%sreverse-abc", t_prefix);
    ck_assert_int_eq(memcached_set(m, key, strlen(key), "da\0ta", 5, 0, 2), MEMCACHED_SUCCESS);
    void *st = bk_open(&BK_MC, &o);
    struct rows rs;
    bk_replay(&BK_MC, st, &rs);
    ck_assert_msg(rs.n == 1, "replayed %zu rows, want 1", rs.n);
    struct gm_qrecord want = rec_add(rs.r[0].handle, "reverse", "abc", 3, "da\0ta", 5, 2, 0);
    expect_row(&rs.r[0], &want);
    ck_assert_msg(strncmp(rs.r[0].handle, "H:old:", 6) == 0, "migrated handle %s", rs.r[0].handle);
    char *handle = strdup(rs.r[0].handle);
    want.handle = handle;
    rows_free(&rs);
    /* rewritten in the new form: the next replay gives the same job again */
    st = bk_reopen_replay(&BK_MC, st, &o, &rs);
    ck_assert_msg(rs.n == 1, "second replay gave %zu rows, want 1", rs.n);
    ck_assert_str_eq(rs.r[0].handle, handle);
    expect_row(&rs.r[0], &want);
    rows_free(&rs);
    free(handle);
    memcached_free(m);
    gm_queue_memcached.close(st);
}
END_TEST

/* Opens fresh storage and writes ten jobs, H:test:1 .. H:test:10 of
   function f (each with its handle as unique key), in one batch. */
static void *
open_with_ten_jobs(struct gm_queue_options *o)
{
    void *st = bk_fresh_open(&BK_MC, o);
    char h[10][24];
    struct gm_qrecord r[10];
    for (int i = 0; i < 10; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        r[i] = rec_add_s(h[i], "f", h[i], "data", 1);
    }
    bk_write(&BK_MC, st, r, 10);
    return st;
}

START_TEST(test_memcached_replay_finds_jobs_written_just_before)
{
    struct gm_queue_options o;
    void *st = open_with_ten_jobs(&o);
    /* a restart right after the writes: the items are still in memcached's
       HOT LRU, which "stats cachedump" does not walk */
    gm_queue_memcached.close(st);
    st = bk_open(&BK_MC, &o);
    struct rows rs;
    bk_replay(&BK_MC, st, &rs);
    ck_assert_msg(rs.n == 10, "replay right after the writes found %zu of 10 jobs", rs.n);
    rows_free(&rs);
    gm_queue_memcached.close(st);
}
END_TEST

START_TEST(test_memcached_replay_finds_every_job_however_often_it_ran)
{
    struct gm_queue_options o;
    void *st = open_with_ten_jobs(&o);
    /* four restarts: each replay reads every item; memcached's LRU moves
       items read twice to its WARM LRU, which "stats cachedump" (the
       listing libmemcached's memcached_dump uses) does not walk */
    for (int round = 1; round <= 4; round++) {
        struct rows rs;
        st = bk_reopen_replay(&BK_MC, st, &o, &rs);
        ck_assert_msg(rs.n == 10, "replay number %d found %zu of 10 jobs", round, rs.n);
        rows_free(&rs);
        sleep_ms(300); /* the LRU maintainer's moves are asynchronous */
    }
    gm_queue_memcached.close(st);
}
END_TEST

/* A TCP connection to the memcached "host:port" of servers, or -1. */
static int
connect_to(const char *servers)
{
    char host[64] = "127.0.0.1", port[16] = "11211";
    const char *colon = strrchr(servers, ':');
    if (colon) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - servers), servers);
        snprintf(port, sizeof port, "%s", colon + 1);
    }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Reads one answer from fd into buf (cap bytes, NUL-terminated) until
   done(buf, have) says it is complete, keeping only the tail of a long
   one.  Returns false when the connection ends or fails first. */
static bool
recv_answer(int fd, char *buf, size_t cap, bool (*done)(const char *buf, size_t have))
{
    size_t have = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + have, cap - have - 1, 0);
        if (r <= 0)
            return false;
        have += (size_t)r;
        buf[have] = '\0';
        if (done(buf, have))
            return true;
        if (have > cap / 2) { /* keep the tail only */
            memmove(buf, buf + have - 16, 16);
            have = 16;
        }
    }
}

/* The threads beside a replay (keep_crawler_busy, keep_reading) run until
   this is set. */
static _Atomic int peers_stop;

/* A metadump's answer ends with END (or is BUSY). */
static bool
metadump_done(const char *buf, size_t have)
{
    (void)have;
    return strstr(buf, "END\r\n") || strstr(buf, "BUSY");
}

/* Keeps memcached's LRU crawler busy: metadump after metadump on a
   connection of its own, until told to stop. */
static void *
keep_crawler_busy(void *arg)
{
    int fd = connect_to(arg);
    if (fd < 0)
        return NULL;
    char buf[65536];
    while (!atomic_load(&peers_stop)) {
        static const char cmd[] = "lru_crawler metadump all\r\n";
        if (send(fd, cmd, sizeof cmd - 1, MSG_NOSIGNAL) < 0 || !recv_answer(fd, buf, sizeof buf, metadump_done))
            break;
    }
    close(fd);
    return NULL;
}

/* Starts two threads running peer(arg), waits settle_ms, closes, opens
   and replays `rounds` times (found[] gets how many jobs each replay
   listed), then stops the threads.  Returns the backend's state. */
static void *
replay_beside_peers(void *st, const struct gm_queue_options *o, void *(*peer)(void *), void *arg,
                    unsigned settle_ms, size_t *found, int rounds)
{
    atomic_store(&peers_stop, 0);
    pthread_t peers[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&peers[i], NULL, peer, arg), 0);
    if (settle_ms)
        sleep_ms(settle_ms);
    for (int round = 0; round < rounds; round++) {
        struct rows rs;
        st = bk_reopen_replay(&BK_MC, st, o, &rs);
        found[round] = rs.n;
        rows_free(&rs);
    }
    atomic_store(&peers_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(peers[i], NULL);
    return st;
}

/* While somebody else keeps the LRU crawler busy, replay still lists every
   job: a BUSY answer to "lru_crawler metadump" is waited out, not taken
   for "unsupported" (whose fallback, cachedump, misses the items already
   read twice: a replay found none of them). */
START_TEST(test_memcached_replay_waits_out_a_busy_lru_crawler)
{
    struct gm_queue_options o;
    void *st = open_with_ten_jobs(&o);
    struct rows rs;
    for (int round = 0; round < 2; round++) { /* read twice: WARM, where cachedump does not look */
        st = bk_reopen_replay(&BK_MC, st, &o, &rs);
        ck_assert_uint_eq(rs.n, 10);
        rows_free(&rs);
        sleep_ms(300);
    }
    size_t found[5];
    st = replay_beside_peers(st, &o, keep_crawler_busy, (void *)gm_queue_opt(&o, "libmemcached-servers"), 50, found, 5);
    for (int round = 0; round < 5; round++)
        ck_assert_msg(found[round] == 10, "replay %d beside a busy crawler found %zu of 10 jobs", round,
                      found[round]);
    gm_queue_memcached.close(st);
}
END_TEST

/* Reads keys[0..n) over and over on a connection of its own, until told
   to stop: every read may make memcached move the item between its LRU
   segments (HOT, WARM, COLD), as other clients of a shared memcached do. */
struct reader_args {
    const char *servers;
    char keys[10][64];
    int n;
};

/* A get's answer ends with END. */
static bool
get_done(const char *buf, size_t have)
{
    return have >= 5 && strcmp(buf + have - 5, "END\r\n") == 0;
}

static void *
keep_reading(void *arg)
{
    struct reader_args *a = arg;
    int fd = connect_to(a->servers);
    if (fd < 0)
        return NULL;
    char buf[4096];
    while (!atomic_load(&peers_stop)) {
        char cmd[1024] = "get";
        for (int i = 0; i < a->n; i++)
            snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", a->keys[i]);
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "\r\n");
        if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0 || !recv_answer(fd, buf, sizeof buf, get_done))
            break;
    }
    close(fd);
    return NULL;
}

/* Replay lists every job while other clients keep reading them, so that
   memcached keeps moving the items between its LRU segments: a walk of the
   LRUs ("lru_crawler metadump all") misses an item moved from one not yet
   walked to one already walked, and a replay lost jobs that way. */
START_TEST(test_memcached_replay_finds_every_job_while_other_clients_read_them)
{
    struct gm_queue_options o;
    void *st = open_with_ten_jobs(&o);
    static struct reader_args ra;
    ra.servers = gm_queue_opt(&o, "libmemcached-servers");
    ra.n = 10;
    for (int i = 0; i < 10; i++)
        snprintf(ra.keys[i], sizeof ra.keys[i], "%sH:test:%d", gm_queue_opt(&o, "libmemcached-prefix"), i + 1);
    enum { ROUNDS = 40 };
    size_t found[ROUNDS];
    st = replay_beside_peers(st, &o, keep_reading, &ra, 0, found, ROUNDS);
    for (int round = 0; round < ROUNDS; round++)
        ck_assert_msg(found[round] == 10, "replay %d beside readers found %zu of 10 jobs", round, found[round]);
    gm_queue_memcached.close(st);
}
END_TEST

/* memcached refuses items over its item size limit (1 MiB by default); a
   batch holding one must still be all or nothing. */
START_TEST(test_memcached_batch_with_an_item_too_big_writes_nothing)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MC, &o);
    size_t size = 2 * MIB;
    char *big = binary_payload(size);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "f", "a", "small, before the big one", 1),
        rec_add("H:test:2", "f", "b", 1, big, size, 1, 0),
        rec_add_s("H:test:3", "f", "c", "small, after", 1),
    };
    char err[256] = "";
    int rc = gm_queue_memcached.write_batch(st, recs, 3, err, sizeof err);
    struct rows rs;
    st = bk_reopen_replay(&BK_MC, st, &o, &rs);
    if (rc == 0) {
        const char *want[] = {"H:test:1", "H:test:2", "H:test:3"};
        expect_handles(&rs, want, 3);
    } else {
        ck_assert_msg(err[0] != '\0', "a failed batch must say why");
        ck_assert_msg(rs.n == 0,
                      "write_batch returned -1 (%s) but %zu of its records are stored (first: %s): "
                      "a failed batch must leave nothing behind",
                      err, rs.n, rs.n ? rs.r[0].handle : "");
    }
    rows_free(&rs);
    free(big);
    gm_queue_memcached.close(st);
}
END_TEST

/* An item stores the function name's length in 2 bytes and the unique
   key's in 1: a record with a longer one is refused (its batch writes
   nothing, the rest goes through alone), never stored cut short. */
START_TEST(test_memcached_function_name_over_64_kib_is_refused_not_cut_short)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_MC, &o);
    char *long_fn = repeated('f', 70000);
    char *longest_fn = repeated('g', 65535);
    char *long_unique = repeated('u', 256);
    struct gm_qrecord recs[] = {
        rec_add_s("H:test:1", "fn", "u1", "before", 1),
        rec_add("H:test:2", long_fn, "u2", 2, "data-2", 6, 1, 0),
        rec_add_s("H:test:3", "fn", "u3", "after", 1),
    };
    char err[256] = "";
    int rc = gm_queue_memcached.write_batch(st, recs, 3, err, sizeof err);
    ck_assert_msg(rc == -1, "a batch with a 70000-byte function name was accepted");
    ck_assert_msg(strstr(err, "function name") && strstr(err, "H:test:2"),
                  "the reason should name the record and its function name: %s", err);
    /* refused alone too; the others go through without it (what the
       persistence thread does after a refused batch) */
    ck_assert_int_eq(gm_queue_memcached.write_batch(st, &recs[1], 1, err, sizeof err), -1);
    struct gm_qrecord rest[] = {
        recs[0],
        recs[2],
        rec_add("H:test:5", longest_fn, "u5", 2, "data-5", 6, 2, 0),
    };
    bk_write(&BK_MC, st, rest, 3);
    struct gm_qrecord bad_unique = rec_add("H:test:6", "fn", long_unique, 256, "d", 1, 1, 0);
    err[0] = '\0';
    ck_assert_int_eq(gm_queue_memcached.write_batch(st, &bad_unique, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "unique"), "the reason should name the unique key: %s", err);
    struct rows rs;
    st = bk_reopen_replay(&BK_MC, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:3", "H:test:5"};
    expect_handles(&rs, want, 3);
    for (size_t i = 0; i < 3; i++)
        expect_row(&rs.r[i], &rest[i]);
    rows_free(&rs);
    free(long_fn);
    free(longest_fn);
    free(long_unique);
    gm_queue_memcached.close(st);
}
END_TEST
#endif /* HAVE_LIBMEMCACHED */

int
main(void)
{
    Suite *s = suite_create("queue_memcached");
#ifdef HAVE_LIBMEMCACHED
    ADD(s, test_memcached_open_succeeds_against_a_running_server);
    ADD_BACKEND_CASES(s, memcached);
    ADD(s, test_memcached_gearmand_1_1_20_items_are_migrated_by_replay);
    ADD(s, test_memcached_replay_finds_jobs_written_just_before);
    ADD(s, test_memcached_replay_finds_every_job_however_often_it_ran);
    ADD(s, test_memcached_replay_waits_out_a_busy_lru_crawler);
    ADD(s, test_memcached_replay_finds_every_job_while_other_clients_read_them);
    ADD(s, test_memcached_batch_with_an_item_too_big_writes_nothing);
    ADD(s, test_memcached_function_name_over_64_kib_is_refused_not_cut_short);
    ADD(s, test_memcached_open_with_no_server_fails_with_a_message);
#else
    queue_add_missing_backend(s);
#endif
    return queue_main(s);
}
