/*
 * check_queue_redis.c: unit tests for the Redis queue backend
 * (gm_queue_redis, through its vtable) against a throwaway redis-server
 * (appendonly yes, appendfsync always): the cases every backend passes
 * (queue_backend_cases.c), and Redis' own: a batch is one MULTI/EXEC,
 * replay lists with SCAN (never KEYS) and keeps the order across many
 * chunks, keys that are no job are kept and skipped, a batch Redis refuses
 * writes nothing, the server going away and coming back, start-up errors
 * naming the option, and gearmand 1.1.20's keys migrated.
 *
 * Run by tests/unit/check_queue_redis.sh, which starts Redis
 * (tests/lib/with_services.py) and names it in GM_TEST_REDIS (host:port),
 * with GM_TEST_REDIS_SOCKET (its Unix socket) and GM_TEST_REDIS_STOP /
 * GM_TEST_REDIS_START (shell commands that kill and start it) for the
 * outage case.  When a variable is missing the cases
 * that need it FAIL, not skip: CI always provides the services.
 */
#include "config.h"

#include <check.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifdef HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#include "plugins/queue/backends.h"
#include "tests/unit/queue_harness.h"

#ifdef HAVE_HIREDIS

static char t_prefix[64];

static const char *
rd_addr(void)
{
    return service_env("GM_TEST_REDIS", "Redis", "check_queue_redis.sh");
}

static int
rd_port(void)
{
    const char *colon = strrchr(rd_addr(), ':');
    ck_assert_ptr_nonnull(colon);
    return atoi(colon + 1);
}

static char port_text[16];

static void
rd_options(struct gm_queue_options *o, const char *prefix)
{
    snprintf(port_text, sizeof port_text, "%d", rd_port());
    gm_queue_opt_set(o, "redis-server", "127.0.0.1");
    gm_queue_opt_set(o, "redis-port", port_text);
    gm_queue_opt_set(o, "redis-prefix", prefix);
}

static void
rd_fresh(struct gm_queue_options *o)
{
    fresh_common(o);
    snprintf(t_prefix, sizeof t_prefix, "gmq%d_%u", (int)getpid(), name_seq);
    rd_options(o, t_prefix);
}

static void
rd_cleanup(const struct gm_queue_options *o)
{
    (void)o; /* the keys die with the throwaway Redis */
}

static const struct bk BK_RD = {"redis", &gm_queue_redis, rd_fresh, rd_cleanup, 8 * MIB};

BACKEND_CASES(redis, BK_RD)

/* ---- the test's own client ---- */

static redisContext *
rd_client(void)
{
    redisContext *c = redisConnect("127.0.0.1", rd_port());
    ck_assert_msg(c && !c->err, "connecting to Redis at %s: %s", rd_addr(), c ? c->errstr : "no memory");
    return c;
}

/* Runs a command (printf-like, %b for binary) and returns its reply; an
   error reply fails the case unless allowed. */
static redisReply *
rd_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "%s: %s", fmt, c->errstr);
    return r;
}

static void
rd_ok(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    ck_assert_msg(r != NULL, "%s: %s", fmt, c->errstr);
    ck_assert_msg(r->type != REDIS_REPLY_ERROR, "%s: %s", fmt, r->str);
    freeReplyObject(r);
}

static bool
rd_exists(redisContext *c, const char *key)
{
    redisReply *r = rd_cmd(c, "EXISTS %s", key);
    bool e = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return e;
}

/* calls of one command since the last CONFIG RESETSTAT (INFO commandstats) */
static long
rd_calls(redisContext *c, const char *cmd)
{
    redisReply *r = rd_cmd(c, "INFO commandstats");
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    char needle[64];
    snprintf(needle, sizeof needle, "cmdstat_%s:calls=", cmd);
    const char *at = strstr(r->str, needle);
    long n = at ? atol(at + strlen(needle)) : 0;
    freeReplyObject(r);
    return n;
}

/* ---- cases ---- */

START_TEST(test_redis_open_succeeds_against_a_running_server)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_RD, &o);
    struct rows rs;
    bk_replay(&BK_RD, st, &rs);
    ck_assert_uint_eq(rs.n, 0);
    rows_free(&rs);
    ck_assert(gm_queue_redis.alive(st));
    gm_queue_redis.close(st);
}
END_TEST

/* The stored form is the documented one (docs/persistence.md): a hash per
   job under P:job:<handle>, the counter under P:next_handle. */
START_TEST(test_redis_job_is_a_hash_under_its_handle)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_RD, &o);
    struct gm_qrecord recs[] = {rec_counter(42), rec_add("H:test:7", "fn", "u", 1, "d\0d", 3, 2, 1700000000)};
    bk_write(&BK_RD, st, recs, 2);
    redisContext *c = rd_client();
    char key[128];
    snprintf(key, sizeof key, "%s:job:H:test:7", t_prefix);
    redisReply *r = rd_cmd(c, "HMGET %s function unique data priority when", key);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(r->elements, 5);
    ck_assert_str_eq(r->element[0]->str, "fn");
    ck_assert_str_eq(r->element[1]->str, "u");
    ck_assert_uint_eq(r->element[2]->len, 3);
    ck_assert_int_eq(memcmp(r->element[2]->str, "d\0d", 3), 0);
    ck_assert_str_eq(r->element[3]->str, "2");
    ck_assert_str_eq(r->element[4]->str, "1700000000");
    freeReplyObject(r);
    r = rd_cmd(c, "GET %s:next_handle", t_prefix);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    ck_assert_str_eq(r->str, "42");
    freeReplyObject(r);
    redisFree(c);
    gm_queue_redis.close(st);
}
END_TEST

/* A batch, whatever its size, is one MULTI and one EXEC; replay lists the
   keys with SCAN and never with KEYS (which blocks Redis). */
START_TEST(test_redis_batch_is_one_transaction_and_replay_uses_scan_not_keys)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_RD, &o);
    redisContext *c = rd_client();
    rd_ok(c, "CONFIG RESETSTAT");
    enum { N = 500 };
    static char h[N][24];
    static struct gm_qrecord recs[N + 2];
    for (int i = 0; i < N; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", i + 1);
        recs[i] = rec_add_s(h[i], "f", "", "data", i % 3);
    }
    recs[N] = rec_done("H:test:1");
    recs[N + 1] = rec_counter(1000);
    bk_write(&BK_RD, st, recs, N + 2);
    ck_assert_int_eq(rd_calls(c, "multi"), 1);
    ck_assert_int_eq(rd_calls(c, "exec"), 1);
    ck_assert_int_eq(rd_calls(c, "hset"), N);
    struct rows rs;
    bk_replay(&BK_RD, st, &rs);
    ck_assert_uint_eq(rs.n, N - 1);
    rows_free(&rs);
    ck_assert_int_ge(rd_calls(c, "scan"), 1);
    ck_assert_int_eq(rd_calls(c, "keys"), 0);
    redisFree(c);
    gm_queue_redis.close(st);
}
END_TEST

/* Replay reads in chunks; the order of storing survives across them and
   across reopening (handles are not in text order: 10 after 9). */
START_TEST(test_redis_replay_keeps_the_order_of_thousands_of_jobs)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_RD, &o);
    enum { N = 1500 };
    static char h[N][24];
    static struct gm_qrecord recs[N];
    for (int i = 0; i < N; i++) {
        snprintf(h[i], sizeof h[i], "H:test:%d", N - i); /* stored from the highest handle down */
        recs[i] = rec_add_s(h[i], "f", h[i], h[i], 1);
    }
    bk_write(&BK_RD, st, recs, 700);
    bk_write(&BK_RD, st, recs + 700, N - 700);
    struct rows rs;
    st = bk_reopen_replay(&BK_RD, st, &o, &rs);
    ck_assert_uint_eq(rs.n, N);
    for (int i = 0; i < N; i++)
        ck_assert_str_eq(rs.r[i].handle, h[i]);
    rows_free(&rs);
    /* jobs stored after a reopen come after the replayed ones */
    struct gm_qrecord more = rec_add_s("H:test:99999", "f", "x", "x", 1);
    bk_write(&BK_RD, st, &more, 1);
    st = bk_reopen_replay(&BK_RD, st, &o, &rs);
    ck_assert_uint_eq(rs.n, N + 1);
    ck_assert_str_eq(rs.r[N].handle, "H:test:99999");
    rows_free(&rs);
    gm_queue_redis.close(st);
}
END_TEST

/* Keys under P:job: that are no readable job (another type, a field
   missing, a priority out of range) are logged and kept; the rest
   replays. */
START_TEST(test_redis_key_that_is_no_job_is_kept_and_the_rest_replays)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_RD, &o);
    struct gm_qrecord recs[] = {rec_add_s("H:test:1", "f", "a", "one", 1), rec_add_s("H:test:5", "f", "e", "five", 0)};
    bk_write(&BK_RD, st, recs, 2);
    redisContext *c = rd_client();
    char k[4][128];
    snprintf(k[0], sizeof k[0], "%s:job:H:test:2", t_prefix);
    snprintf(k[1], sizeof k[1], "%s:job:H:test:3", t_prefix);
    snprintf(k[2], sizeof k[2], "%s:job:H:test:4", t_prefix);
    snprintf(k[3], sizeof k[3], "%s:job:H:test:6", t_prefix);
    rd_ok(c, "RPUSH %s not-a-hash", k[0]);
    rd_ok(c, "HSET %s unique u data d priority 1 when 0 seq 1", k[1]);            /* no function */
    rd_ok(c, "HSET %s function f unique u data d priority 7 when 0 seq 1", k[2]); /* priority 7 */
    rd_ok(c, "SET %s a-string", k[3]);
    struct rows rs;
    st = bk_reopen_replay(&BK_RD, st, &o, &rs);
    const char *want[] = {"H:test:1", "H:test:5"};
    expect_handles(&rs, want, 2);
    expect_row(&rs.r[0], &recs[0]);
    expect_row(&rs.r[1], &recs[1]);
    rows_free(&rs);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(rd_exists(c, k[i]), "%s was removed by replay", k[i]);
    redisFree(c);
    gm_queue_redis.close(st);
}
END_TEST

/* A batch Redis refuses (out of memory: maxmemory reached) writes
   nothing, and the backend stays alive (a refusal, not a lost connection:
   the persistence thread then retries record by record). */
START_TEST(test_redis_refused_batch_writes_nothing_and_the_next_one_works)
{
    struct gm_queue_options o;
    void *st = bk_fresh_open(&BK_RD, &o);
    struct gm_qrecord keep[] = {rec_counter(100), rec_add_s("H:test:1", "f", "a", "kept", 1)};
    bk_write(&BK_RD, st, keep, 2);
    struct gm_qrecord bad[] = {
        rec_add_s("H:test:2", "f", "b", "first of a doomed batch", 1),
        rec_counter(200),
        rec_done("H:test:1"),
        rec_add_s("H:test:3", "f", "c", "refused", 1),
    };
    redisContext *c = rd_client();
    /* everything before the assertions, so maxmemory is reset whatever happens */
    rd_ok(c, "CONFIG SET maxmemory 1");
    char err[256] = "";
    int rc = gm_queue_redis.write_batch(st, bad, 4, err, sizeof err);
    bool alive = gm_queue_redis.alive(st);
    rd_ok(c, "CONFIG SET maxmemory 0");
    redisFree(c);
    ck_assert_msg(rc == -1, "a batch was taken by a Redis out of memory");
    ck_assert_msg(strstr(err, "OOM"), "the reason should be Redis' own: %s", err);
    ck_assert_msg(alive, "a refused batch marked the backend down");
    ck_assert_uint_eq(bk_counter(&BK_RD, st), 100);
    struct gm_qrecord next = rec_add_s("H:test:4", "f", "d", "after", 1);
    bk_write(&BK_RD, st, &next, 1);
    const char *want[] = {"H:test:1", "H:test:4"};
    const struct gm_qrecord kept[] = {keep[1], next};
    st = expect_reopen_replay(&BK_RD, st, &o, want, 2, kept);
    bk_finish(&BK_RD, st, &o);
}
END_TEST

static void
run_cmd(const char *what, char *msg, size_t msglen)
{
    const char *cmd = getenv(what);
    if (!cmd || !*cmd) {
        snprintf(msg, msglen, "%s is not set: run tests/unit/check_queue_redis.sh", what);
        return;
    }
    char line[4096];
    snprintf(line, sizeof line, "%s >/dev/null 2>&1", cmd);
    int rc = system(line);
    if (rc != 0)
        snprintf(msg, msglen, "%s failed (%d): %s", what, rc, cmd);
}

START_TEST(test_redis_write_fails_while_the_server_is_down_and_reconnect_restores_it)
{
    struct gm_queue_options o;
    rd_fresh(&o);
    void *st = bk_open(&BK_RD, &o);
    struct gm_qrecord before = rec_add_s("H:test:1", "f", "a", "before", 1);
    bk_write(&BK_RD, st, &before, 1);

    /* Everything below runs before any assertion, so the server is
       started again even when the backend misbehaves. */
    char stop_msg[256] = "", start_msg[256] = "", err_down[256] = "", err_rc_down[256] = "",
         err_rc_up[256] = "", err_after[256] = "";
    run_cmd("GM_TEST_REDIS_STOP", stop_msg, sizeof stop_msg);
    struct gm_qrecord during = rec_add_s("H:test:2", "f", "b", "during", 1);
    double t0 = now_s();
    int rc_down = gm_queue_redis.write_batch(st, &during, 1, err_down, sizeof err_down);
    double write_took = now_s() - t0;
    bool alive_down = gm_queue_redis.alive(st);
    int rc_reconnect_down = gm_queue_redis.reconnect(st, err_rc_down, sizeof err_rc_down);
    run_cmd("GM_TEST_REDIS_START", start_msg, sizeof start_msg);
    int rc_reconnect_up = -1;
    for (int i = 0; i < 50 && rc_reconnect_up != 0; i++) {
        rc_reconnect_up = gm_queue_redis.reconnect(st, err_rc_up, sizeof err_rc_up);
        if (rc_reconnect_up != 0)
            sleep_ms(100);
    }
    struct gm_qrecord after = rec_add_s("H:test:3", "f", "c", "after", 1);
    int rc_after =
        rc_reconnect_up == 0 ? gm_queue_redis.write_batch(st, &after, 1, err_after, sizeof err_after) : -1;

    ck_assert_msg(stop_msg[0] == '\0', "%s", stop_msg);
    ck_assert_msg(start_msg[0] == '\0', "%s", start_msg);
    ck_assert_msg(rc_down == -1, "write_batch succeeded with Redis killed");
    ck_assert_msg(err_down[0] != '\0', "write_batch failed without a reason");
    ck_assert_msg(write_took < 10.0, "write_batch took %.1fs to fail", write_took);
    ck_assert_msg(!alive_down, "alive() after the connection was lost");
    ck_assert_msg(rc_reconnect_down == -1, "reconnect succeeded with Redis killed");
    ck_assert_msg(rc_reconnect_up == 0, "reconnect after the restart failed: %s", err_rc_up);
    ck_assert_msg(rc_after == 0, "write_batch after reconnect failed: %s", err_after);
    /* killed with appendfsync always: what was acknowledged before is there */
    const char *want[] = {"H:test:1", "H:test:3"};
    const struct gm_qrecord kept[] = {before, after};
    st = expect_reopen_replay(&BK_RD, st, &o, want, 2, kept);
    bk_finish(&BK_RD, st, &o);
}
END_TEST

/* Start-up errors name the option to look at, and come in bounded time. */
START_TEST(test_redis_open_errors_name_the_option)
{
    struct {
        const char *server, *port, *password, *want;
    } cases[] = {
        {"127.0.0.1", NULL, NULL, "--redis-port"},         /* nothing listens there */
        {"127.0.0.1", "no-such-service", NULL, "--redis-port"},
        {"no-such-host.invalid", "6379", NULL, "--redis-server"},
        {"127.0.0.1", port_text, "wrong", "--redis-password"}, /* a server with no password */
    };
    char closed[16];
    snprintf(closed, sizeof closed, "%d", closed_port());
    cases[0].port = closed;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct gm_queue_options o;
        rd_fresh(&o);
        gm_queue_opt_set(&o, "redis-server", cases[i].server);
        gm_queue_opt_set(&o, "redis-port", cases[i].port);
        if (cases[i].password)
            gm_queue_opt_set(&o, "redis-password", cases[i].password);
        char err[256] = "";
        double t0 = now_s();
        void *st = gm_queue_redis.open(&o, err, sizeof err);
        ck_assert_msg(st == NULL, "open of %s:%s succeeded", cases[i].server, cases[i].port);
        ck_assert_msg(strstr(err, cases[i].want), "case %zu: the message should name %s: %s", i, cases[i].want,
                      err);
        ck_assert_msg(now_s() - t0 < 10.0, "open took %.1fs to fail", now_s() - t0);
    }
}
END_TEST

/* --redis-server may be the path of Redis' Unix socket (--redis-port is
   then not used): the same queue as over TCP. */
START_TEST(test_redis_server_given_as_a_unix_socket_path)
{
    struct gm_queue_options o;
    void *tcp = bk_fresh_open(&BK_RD, &o);
    struct gm_qrecord r = rec_add_s("H:test:1", "f", "u", "over TCP", 1);
    bk_write(&BK_RD, tcp, &r, 1);
    gm_queue_redis.close(tcp);
    gm_queue_opt_set(&o, "redis-server", service_env("GM_TEST_REDIS_SOCKET", "Redis", "check_queue_redis.sh"));
    gm_queue_opt_set(&o, "redis-port", "not used");
    void *st = bk_open(&BK_RD, &o);
    const char *want[] = {"H:test:1"};
    expect_replay(&BK_RD, st, want, 1, &r);
    gm_queue_redis.close(st);
}
END_TEST

/* A server that takes the connection and never answers (stopped, cut
   off): connecting gives up within the connect deadline (5 s), not the
   15 s a batch may take, so a reconnect attempt of the persistence thread
   holds the waiting submitters no longer than that. */
START_TEST(test_redis_open_of_a_server_that_never_answers_gives_up_within_the_connect_deadline)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 16), 0); /* the kernel accepts; nobody answers */
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    struct gm_queue_options o;
    rd_fresh(&o);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    gm_queue_opt_set(&o, "redis-port", port);
    char err[256] = "";
    double t0 = now_s();
    void *st = gm_queue_redis.open(&o, err, sizeof err);
    double took = now_s() - t0;
    close(fd);
    ck_assert_msg(st == NULL, "open of a server that never answers succeeded");
    ck_assert_msg(strstr(err, "no answer"), "the message should say so: %s", err);
    ck_assert_msg(took < 10.0, "open took %.1fs to give up (the connect deadline is 5 s)", took);
}
END_TEST

/* Two prefixes are two queues, even with glob characters in them (SCAN's
   MATCH pattern escapes them). */
START_TEST(test_redis_prefixes_with_glob_characters_keep_queues_apart)
{
    struct gm_queue_options a, b;
    fresh_common(&a);
    char pa[64], pb[64];
    snprintf(pa, sizeof pa, "gmq%d_%u_*", (int)getpid(), name_seq);
    snprintf(pb, sizeof pb, "gmq%d_%u_[x]", (int)getpid(), name_seq);
    rd_options(&a, pa);
    fresh_common(&b);
    rd_options(&b, pb);
    void *sa = bk_open(&BK_RD, &a);
    void *sb = bk_open(&BK_RD, &b);
    struct gm_qrecord ra = rec_add_s("H:test:1", "f", "a", "in a", 1);
    struct gm_qrecord rb = rec_add_s("H:test:2", "f", "b", "in b", 1);
    bk_write(&BK_RD, sa, &ra, 1);
    bk_write(&BK_RD, sb, &rb, 1);
    const char *wa[] = {"H:test:1"}, *wb[] = {"H:test:2"};
    sa = expect_reopen_replay(&BK_RD, sa, &a, wa, 1, &ra);
    sb = expect_reopen_replay(&BK_RD, sb, &b, wb, 1, &rb);
    gm_queue_redis.close(sa);
    gm_queue_redis.close(sb);
}
END_TEST

/* gearmand 1.1.20's keys (P-<function>-<unique>, a hash with data and
   priority; a plain string of data before 1.1.16) are migrated at open:
   handles from the stored counter on, the counter moved past them, the
   old keys gone, a key that is no job kept; a second open migrates
   nothing again. */
START_TEST(test_redis_gearmand_1_1_20_keys_are_migrated_at_open)
{
    struct gm_queue_options o;
    rd_fresh(&o);
    o.handle_prefix = "H:old";
    redisContext *c = rd_client();
    char k[6][160];
    snprintf(k[0], sizeof k[0], "%s-reverse-abc", t_prefix);
    snprintf(k[1], sizeof k[1], "%s-my-fn-0f8a1b2c-3d4e-11f1-8a9b-02fc00000001", t_prefix);
    snprintf(k[2], sizeof k[2], "%s-old-plain", t_prefix);
    snprintf(k[3], sizeof k[3], "%s-nodash", t_prefix);
    snprintf(k[4], sizeof k[4], "%s-lst-x", t_prefix);
    snprintf(k[5], sizeof k[5], "%s:next_handle", t_prefix);
    rd_ok(c, "HSET %s data %b priority 2", k[0], "da\0ta", (size_t)5);
    rd_ok(c, "HSET %s data uuid priority 0", k[1]);
    rd_ok(c, "SET %s plain-data", k[2]);
    rd_ok(c, "HSET %s data d priority 1", k[3]);
    rd_ok(c, "RPUSH %s x", k[4]);
    rd_ok(c, "SET %s 10", k[5]);
    void *st = bk_open(&BK_RD, &o);
    struct rows rs;
    bk_replay(&BK_RD, st, &rs);
    ck_assert_msg(rs.n == 3, "replayed %zu rows, want 3", rs.n);
    struct gm_qrecord want[] = {
        rec_add("", "reverse", "abc", 3, "da\0ta", 5, 2, 0),
        rec_add("", "my-fn", "0f8a1b2c-3d4e-11f1-8a9b-02fc00000001", 36, "uuid", 4, 0, 0),
        rec_add("", "old", "plain", 5, "plain-data", 10, 1, 0),
    };
    for (size_t i = 0; i < 3; i++) {
        const struct crow *row = NULL;
        for (size_t j = 0; j < rs.n; j++)
            if (strcmp(rs.r[j].function, want[i].function) == 0)
                row = &rs.r[j];
        ck_assert_msg(row != NULL, "job of %s not migrated", want[i].function);
        want[i].handle = row->handle;
        want[i].handle_len = row->handle_len;
        expect_row(row, &want[i]);
        int n = atoi(row->handle + 6);
        ck_assert_msg(strncmp(row->handle, "H:old:", 6) == 0 && n >= 10 && n <= 12, "migrated handle %s",
                      row->handle);
    }
    ck_assert_uint_eq(bk_counter(&BK_RD, st), 13);
    ck_assert(!rd_exists(c, k[0]) && !rd_exists(c, k[1]) && !rd_exists(c, k[2]));
    ck_assert_msg(rd_exists(c, k[3]) && rd_exists(c, k[4]), "keys that are no job must be kept");
    rows_free(&rs);
    st = bk_reopen_replay(&BK_RD, st, &o, &rs);
    ck_assert_msg(rs.n == 3, "second replay gave %zu rows, want 3", rs.n);
    rows_free(&rs);
    redisFree(c);
    gm_queue_redis.close(st);
}
END_TEST
#endif /* HAVE_HIREDIS */

int
main(void)
{
    Suite *s = suite_create("queue_redis");
#ifdef HAVE_HIREDIS
    ADD(s, test_redis_open_succeeds_against_a_running_server);
    ADD_BACKEND_CASES(s, redis);
    ADD(s, test_redis_job_is_a_hash_under_its_handle);
    ADD(s, test_redis_batch_is_one_transaction_and_replay_uses_scan_not_keys);
    ADD(s, test_redis_replay_keeps_the_order_of_thousands_of_jobs);
    ADD(s, test_redis_key_that_is_no_job_is_kept_and_the_rest_replays);
    ADD(s, test_redis_refused_batch_writes_nothing_and_the_next_one_works);
    ADD(s, test_redis_write_fails_while_the_server_is_down_and_reconnect_restores_it);
    ADD(s, test_redis_open_errors_name_the_option);
    ADD(s, test_redis_server_given_as_a_unix_socket_path);
    ADD(s, test_redis_open_of_a_server_that_never_answers_gives_up_within_the_connect_deadline);
    ADD(s, test_redis_prefixes_with_glob_characters_keep_queues_apart);
    ADD(s, test_redis_gearmand_1_1_20_keys_are_migrated_at_open);
#else
    queue_add_missing_backend(s);
#endif
    return queue_main(s);
}
