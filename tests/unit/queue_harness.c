/*
 * queue_harness.c: the helpers the queue unit tests share (see
 * queue_harness.h): time and logs, copying replayed rows and checking them
 * against the records written, opening, writing and replaying a backend
 * under test, and the main() of the backend test programs (a temporary
 * directory for the run, removed after it).
 */
#include "config.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "libgearman-server/base/log.h"
#include "tests/unit/queue_harness.h"

char base_dir[256];
unsigned name_seq;

void
quiet_logs(void)
{
    if (!getenv("GM_TEST_LOG"))
        gm_log_level = -1; /* many cases provoke errors on purpose */
}

double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A TCP port on 127.0.0.1 that nothing listens on right now. */
int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

char *
dup_bytes(const char *p, size_t n)
{
    char *c = malloc(n + 1);
    ck_assert_ptr_nonnull(c);
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    return c;
}

int
collect_row(void *arg, const struct gm_qrow *row)
{
    struct rows *rs = arg;
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? rs->cap * 2 : 16;
        rs->r = realloc(rs->r, rs->cap * sizeof *rs->r);
        ck_assert_ptr_nonnull(rs->r);
    }
    struct crow *c = &rs->r[rs->n++];
    c->handle = dup_bytes(row->handle, row->handle_len);
    c->function = dup_bytes(row->function, row->function_len);
    c->unique = dup_bytes(row->unique, row->unique_len);
    c->data = dup_bytes(row->data, row->data_len);
    c->lifecycle = dup_bytes(row->lifecycle ? row->lifecycle : "", row->lifecycle_len);
    c->lifecycle_len = row->lifecycle_len;
    c->handle_len = row->handle_len;
    c->function_len = row->function_len;
    c->unique_len = row->unique_len;
    c->data_len = row->data_len;
    c->priority = row->priority;
    c->when = row->when;
    return 0;
}

void
rows_free(struct rows *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->r[i].handle);
        free(rs->r[i].function);
        free(rs->r[i].unique);
        free(rs->r[i].data);
        free(rs->r[i].lifecycle);
    }
    free(rs->r);
    memset(rs, 0, sizeof *rs);
}

const struct crow *
rows_find(const struct rows *rs, const char *handle)
{
    for (size_t i = 0; i < rs->n; i++)
        if (strcmp(rs->r[i].handle, handle) == 0)
            return &rs->r[i];
    return NULL;
}

/* A record of op op, every other field zero. */
static struct gm_qrecord
rec_op(uint8_t op)
{
    struct gm_qrecord r;
    memset(&r, 0, sizeof r);
    r.op = op;
    return r;
}

struct gm_qrecord
rec_add(const char *handle, const char *fn, const char *unique, size_t unique_len, const char *data,
        size_t data_len, int prio, int64_t when)
{
    struct gm_qrecord r = rec_op(GM_QOP_ADD);
    r.priority = (uint8_t)prio;
    r.when = when;
    r.handle = handle;
    r.handle_len = (uint32_t)strlen(handle);
    r.function = fn;
    r.function_len = (uint32_t)strlen(fn);
    r.unique = unique;
    r.unique_len = (uint32_t)unique_len;
    r.data = data;
    r.data_len = (uint32_t)data_len;
    return r;
}

/* An ADD with text unique and data. */
struct gm_qrecord
rec_add_s(const char *handle, const char *fn, const char *unique, const char *data, int prio)
{
    return rec_add(handle, fn, unique, strlen(unique), data, strlen(data), prio, 0);
}

struct gm_qrecord
rec_done(const char *handle)
{
    struct gm_qrecord r = rec_op(GM_QOP_DONE);
    r.handle = handle;
    r.handle_len = (uint32_t)strlen(handle);
    return r;
}

struct gm_qrecord
rec_counter(int64_t next)
{
    struct gm_qrecord r = rec_op(GM_QOP_COUNTER);
    r.when = next;
    return r;
}

/* Checks that a replayed row carries exactly what the ADD stored. */
void
expect_row(const struct crow *c, const struct gm_qrecord *q)
{
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(c->handle_len == q->handle_len && memcmp(c->handle, q->handle, q->handle_len) == 0,
                  "handle: got '%s', want '%.*s'", c->handle, (int)q->handle_len, q->handle);
    ck_assert_msg(c->function_len == q->function_len &&
                      memcmp(c->function, q->function, q->function_len) == 0,
                  "%s: function: got '%.80s' (%u bytes), want '%.*s' (%u bytes)", c->handle,
                  c->function, c->function_len, (int)(q->function_len < 80 ? q->function_len : 80),
                  q->function, q->function_len);
    ck_assert_msg(c->unique_len == q->unique_len &&
                      (q->unique_len == 0 || memcmp(c->unique, q->unique, q->unique_len) == 0),
                  "%s: unique: got '%.80s' (%u bytes), want '%.*s' (%u bytes)", c->handle,
                  c->unique, c->unique_len, (int)(q->unique_len < 80 ? q->unique_len : 80),
                  q->unique ? q->unique : "", q->unique_len);
    ck_assert_msg(c->data_len == q->data_len &&
                      (q->data_len == 0 || memcmp(c->data, q->data, q->data_len) == 0),
                  "%s: data differs: got %u bytes, want %u", c->handle, c->data_len, q->data_len);
    ck_assert_msg(c->priority == q->priority, "%s: priority: got %d, want %d", c->handle,
                  c->priority, q->priority);
    ck_assert_msg(c->when == q->when, "%s: when: got %lld, want %lld", c->handle,
                  (long long)c->when, (long long)q->when);
    ck_assert_msg(c->lifecycle_len == q->lifecycle_len &&
                      (q->lifecycle_len == 0 || memcmp(c->lifecycle, q->lifecycle, q->lifecycle_len) == 0),
                  "%s: lifecycle differs: got %u bytes, want %u", c->handle, c->lifecycle_len, q->lifecycle_len);
}

/* Checks the replayed handles, in order. */
void
expect_handles(const struct rows *rs, const char *const *want, size_t n)
{
    char got[2048] = "";
    for (size_t i = 0; i < rs->n; i++) {
        strncat(got, rs->r[i].handle, sizeof got - strlen(got) - 2);
        strncat(got, " ", sizeof got - strlen(got) - 1);
    }
    ck_assert_msg(rs->n == n, "replayed %zu rows, want %zu: %s", rs->n, n, got);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(strcmp(rs->r[i].handle, want[i]) == 0, "row %zu is %s, want %s (order: %s)", i,
                      rs->r[i].handle, want[i], got);
}

const char *
service_env(const char *var, const char *service, const char *wrapper)
{
    const char *v = getenv(var);
    ck_assert_msg(v && *v, "%s is not set: run tests/unit/%s, which starts %s (CI always does)", var,
                  wrapper, service);
    return v;
}

void
fresh_common(struct gm_queue_options *o)
{
    quiet_logs();
    memset(o, 0, sizeof *o);
    o->handle_prefix = "H:test";
    name_seq++;
}

void *
bk_open(const struct bk *b, const struct gm_queue_options *o)
{
    char err[256] = "";
    void *st = b->be->open(o, err, sizeof err);
    ck_assert_msg(st != NULL, "%s: open failed: %s", b->name, err);
    return st;
}

void *
bk_fresh_open(const struct bk *b, struct gm_queue_options *o)
{
    b->fresh(o);
    return bk_open(b, o);
}

void
bk_finish(const struct bk *b, void *st, const struct gm_queue_options *o)
{
    b->be->close(st);
    b->cleanup(o);
}

void
bk_write(const struct bk *b, void *st, const struct gm_qrecord *recs, size_t n)
{
    char err[256] = "";
    int rc = b->be->write_batch(st, recs, n, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: write_batch of %zu records failed: %s", b->name, n, err);
}

void
bk_replay(const struct bk *b, void *st, struct rows *out)
{
    char err[256] = "";
    memset(out, 0, sizeof *out);
    int rc = b->be->replay(st, collect_row, out, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: replay failed: %s", b->name, err);
}

/* Closes, opens again and replays: what comes back was committed. */
void *
bk_reopen_replay(const struct bk *b, void *st, const struct gm_queue_options *o, struct rows *out)
{
    b->be->close(st);
    st = bk_open(b, o);
    bk_replay(b, st, out);
    return st;
}

void
expect_replay(const struct bk *b, void *st, const char *const *want, size_t n, const struct gm_qrecord *recs)
{
    struct rows rs;
    bk_replay(b, st, &rs);
    expect_handles(&rs, want, n);
    for (size_t i = 0; recs && i < n; i++)
        expect_row(&rs.r[i], &recs[i]);
    rows_free(&rs);
}

void *
expect_reopen_replay(const struct bk *b, void *st, const struct gm_queue_options *o, const char *const *want,
                     size_t n, const struct gm_qrecord *recs)
{
    b->be->close(st);
    st = bk_open(b, o);
    expect_replay(b, st, want, n, recs);
    return st;
}

void *
expect_failed_batch_leaves_nothing(const struct bk *b, void *st, const struct gm_queue_options *o,
                                   const struct gm_qrecord *bad, size_t n)
{
    char err[256] = "";
    ck_assert_int_eq(b->be->write_batch(st, bad, n, err, sizeof err), -1);
    ck_assert_uint_eq(bk_counter(b, st), 100);
    ck_assert_msg(err[0] != '\0', "a failed batch must say why");
    struct gm_qrecord next = rec_add_s("H:test:4", "f", "d", "after", 1);
    bk_write(b, st, &next, 1);
    const char *want[] = {"H:test:1", "H:test:4"};
    return expect_reopen_replay(b, st, o, want, 2, NULL);
}

/* Bytes 0..255 repeated: NULs, high bytes, everything. */
char *
binary_payload(size_t n)
{
    char *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(i * 7 + i / 256);
    return p;
}

uint64_t
bk_counter(const struct bk *b, void *st)
{
    char err[256] = "";
    uint64_t next = 12345;
    ck_assert_msg(b->be->load_counter != NULL, "%s has no load_counter", b->name);
    ck_assert_msg(b->be->load_counter(st, &next, err, sizeof err) == 0, "%s: load_counter: %s", b->name,
                  err);
    return next;
}

/* A string of n copies of ch (caller frees). */
char *
repeated(char ch, size_t n)
{
    char *p = malloc(n + 1);
    ck_assert_ptr_nonnull(p);
    memset(p, ch, n);
    p[n] = '\0';
    return p;
}

START_TEST(test_every_queue_backend_is_built)
{
    ck_abort_msg("this program's queue backend is not built (configure did not find its library: "
                 "see ./configure's \"queues:\" line); CI builds every one");
}
END_TEST

void
queue_add_missing_backend(Suite *s)
{
    ADD(s, test_every_queue_backend_is_built);
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

int
queue_main(Suite *s)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(base_dir, sizeof base_dir, "%s/check_queue-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = gm_check_run_tap(s);
    nftw(base_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
