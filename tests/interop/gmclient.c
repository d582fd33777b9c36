/*
 * gmclient: a small libgearman client and worker for the interop tests.
 *
 * It is compiled by tests/interop/test_libgearman.py at run time
 * (cc -o gmclient gmclient.c -lgearman) against Debian's libgearman, so it
 * exercises the real C library against the server under test.
 *
 * HOST PORT names one server; a server list "h1:p1,h2:p2,..." as HOST with
 * "-" as PORT adds them all (gearman_client_add_servers /
 * gearman_worker_add_servers): a worker then serves every server, a client
 * submits to the first one that answers, moving on to the next when a
 * connection is refused, as libgearman does.
 *
 * Worker:
 *   gmclient worker HOST PORT FUNC[,FUNC...] [-c COUNT] [-s SLEEP_MS] [-i ID] [-t TIMEOUT]
 *                   [-T WAIT_MS]
 *     Registers every FUNC (with CAN_DO_TIMEOUT TIMEOUT when -t is given:
 *     libgearman's timeout argument) and serves jobs; exits after COUNT jobs
 *     (0 or no -c: forever).  For every job it prints
 *     "JOB <func> <handle> <unique or -> <workload>" (workloads over 200
 *     bytes as "<N bytes>") and then, by workload:
 *       "fail"       gearman_job_send_fail()            -> WORK_FAIL
 *       "exception"  gearman_job_send_exception("boom") -> WORK_EXCEPTION
 *       anything     WORK_STATUS 1/2, sleeps SLEEP_MS (or N ms for a workload
 *                    "sleep:N..."), WORK_DATA "chunk", then WORK_COMPLETE
 *                    with the workload reversed.
 *     Errors from gearman_worker_work() (lost connection, server down) are
 *     printed as "WERR <rc>" and the loop goes on, so the worker reconnects.
 *     -T sets gearman_worker_set_timeout(WAIT_MS): an idle worker's wait
 *     for jobs then ends every WAIT_MS (GEARMAN_TIMEOUT, not printed) and
 *     the next gearman_worker_work() connects again to a server that was
 *     down; without it, a worker idle on its other servers never retries a
 *     server it lost.
 *
 * Client:
 *   gmclient client HOST PORT SCENARIO ARGS... [-x] [-u UNIQUE]
 *     -x asks the server for exceptions (GEARMAN_CLIENT_EXCEPTION);
 *     -u gives "do" a unique key (default: libgearman generates a UUID).
 *   Scenarios:
 *     do FUNC normal|high|low WORKLOAD
 *         one gearman_client_do*(); prints "RC <name>" and "RESULT <size> <data>".
 *     priorities FUNC
 *         gearman_client_do, _do_high, _do_low; each result must be "chunk"
 *         (the worker's WORK_DATA, which do() prepends) + the reversed workload.
 *     order FUNC
 *         add_task_low, add_task, add_task_high, then run_tasks; prints
 *         "CREATED 3" once all three have handles (the driver then starts a
 *         worker) and "DONE <workload>" in completion order.
 *     background FUNC
 *         do_background, do_high_background, do_low_background; checks that
 *         gearman_client_job_status knows each job, prints "SUBMITTED" (the
 *         driver then starts a worker) and polls job_status until none is
 *         known; reports whether a running job with 1/2 was seen.
 *     parallel FUNC N
 *         N x gearman_client_add_task, one gearman_client_run_tasks, checks
 *         every result in the complete callback and afterwards.
 *     big FUNC SIZE
 *         one gearman_client_do with a SIZE-byte workload; checks the result.
 *     epoch FUNC WHEN WORKLOAD
 *         gearman_execute with gearman_task_attr_init_epoch(WHEN): a
 *         SUBMIT_JOB_EPOCH background job due at WHEN (seconds since the
 *         epoch); prints "HANDLE <handle>".
 *     bgloop FUNC TAG N [PAUSE_MS]
 *         N background jobs, workloads (and unique keys) "TAG-<i>", one
 *         gearman_client_do_background at a time (PAUSE_MS between them);
 *         prints "ACK TAG-<i> <handle>" for each acknowledged job, and
 *         "NACK TAG-<i> <rc>" for a refused or lost submission, which is
 *         then tried again (up to 600 times, 50 ms apart) before the next
 *         job; "END <acked> <nacks>" at the end.
 *     callbacks FUNC WORKLOAD
 *         one task with created/data/status/complete/fail/exception
 *         callbacks; prints each event ("STATUS 1/2", "DATA chunk",
 *         "COMPLETE <data>", "FAIL", "EXCEPTION <data>") and "RC <name>".
 *   Check lines are "ok - <what>" / "not ok - <what>: <detail>"; the exit
 *   status is 0 when every check passed, 1 otherwise, 2 on usage errors.
 */

#define _POSIX_C_SOURCE 200809L

#include <libgearman/gearman.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

/* Prints "ok - what", or "not ok - what: <detail>" and counts a failure. */
static void
check(bool cond, const char *what, const char *fmt, ...)
{
    if (cond) {
        printf("ok - %s\n", what);
    } else {
        va_list ap;
        failures++;
        printf("not ok - %s: ", what);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
    }
    fflush(stdout);
}

/* Returns a malloc'd, NUL-terminated copy of s[0..n) reversed; exits if out of memory. */
static char *
reversed(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (r == NULL) {
        perror("malloc");
        exit(3);
    }
    for (size_t i = 0; i < n; i++) {
        r[i] = s[n - 1 - i];
    }
    r[n] = '\0';
    return r;
}

/* Sleeps for ms milliseconds. */
static void
msleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Returns a monotonic time in seconds. */
static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ */
/* worker */

static long jobs_done;
static long sleep_ms;

/* The worker function (gearman_worker_fn): see the header comment for what it
 * does with each workload.  Returns the reversed workload, or NULL after a
 * fail or an exception. */
static void *
work_fn(gearman_job_st *job, void *context, size_t *result_size, gearman_return_t *ret_ptr)
{
    (void)context;
    const char *w = gearman_job_workload(job);
    size_t n = gearman_job_workload_size(job);

    const char *unique = gearman_job_unique(job);
    if (n > 200)
        printf("JOB %s %s %s <%zu bytes>\n", gearman_job_function_name(job),
               gearman_job_handle(job), unique && *unique ? unique : "-", n);
    else
        printf("JOB %s %s %s %.*s\n", gearman_job_function_name(job), gearman_job_handle(job),
               unique && *unique ? unique : "-", (int)n, w ? w : "");
    fflush(stdout);
    jobs_done++;
    *result_size = 0;

    if (n == 4 && memcmp(w, "fail", 4) == 0) {
        gearman_return_t rc = gearman_job_send_fail(job);
        if (rc != GEARMAN_SUCCESS) {
            printf("WERR send_fail %s\n", gearman_strerror(rc));
        }
        *ret_ptr = GEARMAN_WORK_FAIL;
        return NULL;
    }
    if (n == 9 && memcmp(w, "exception", 9) == 0) {
        gearman_return_t rc = gearman_job_send_exception(job, "boom", 4);
        if (rc != GEARMAN_SUCCESS) {
            printf("WERR send_exception %s\n", gearman_strerror(rc));
        }
        *ret_ptr = GEARMAN_WORK_EXCEPTION;
        return NULL;
    }

    gearman_return_t rc = gearman_job_send_status(job, 1, 2);
    if (rc != GEARMAN_SUCCESS) {
        printf("WERR send_status %s\n", gearman_strerror(rc));
    }
    long pause = sleep_ms;
    if (n > 6 && memcmp(w, "sleep:", 6) == 0) {
        char num[16] = {0};
        memcpy(num, w + 6, n - 6 < sizeof num - 1 ? n - 6 : sizeof num - 1);
        pause = atol(num);
    }
    if (pause > 0) {
        msleep(pause);
    }
    rc = gearman_job_send_data(job, "chunk", 5);
    if (rc != GEARMAN_SUCCESS) {
        printf("WERR send_data %s\n", gearman_strerror(rc));
    }
    fflush(stdout);

    *result_size = n;
    *ret_ptr = GEARMAN_SUCCESS;
    return reversed(w ? w : "", n);
}

/* Runs the worker until COUNT jobs are done (forever without -c); returns
 * the exit status. */
static int
run_worker(const char *host, int port, char *funcs, int argc, char **argv)
{
    long count = 0;
    long timeout = 0;
    int wait_ms = -1;
    const char *id = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            count = atol(argv[++i]);
        } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            sleep_ms = atol(argv[++i]);
        } else if (strcmp(argv[i], "-i") == 0 && i + 1 < argc) {
            id = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            timeout = atol(argv[++i]);
        } else if (strcmp(argv[i], "-T") == 0 && i + 1 < argc) {
            wait_ms = atoi(argv[++i]);
        } else {
            fprintf(stderr, "worker: unknown argument %s\n", argv[i]);
            return 2;
        }
    }

    gearman_worker_st *worker = gearman_worker_create(NULL);
    if (worker == NULL) {
        fprintf(stderr, "gearman_worker_create failed\n");
        return 1;
    }
    gearman_return_t added = port == 0 ? gearman_worker_add_servers(worker, host)
                                       : gearman_worker_add_server(worker, host, (in_port_t)port);
    if (added != GEARMAN_SUCCESS) {
        fprintf(stderr, "add_server: %s\n", gearman_worker_error(worker));
        return 1;
    }
    if (id) {
        gearman_worker_set_identifier(worker, id, strlen(id));
    }
    if (wait_ms >= 0) {
        gearman_worker_set_timeout(worker, wait_ms);
    }
    for (char *f = strtok(funcs, ","); f; f = strtok(NULL, ",")) {
        if (gearman_worker_add_function(worker, f, (uint32_t)timeout, work_fn, NULL) !=
            GEARMAN_SUCCESS) {
            fprintf(stderr, "add_function %s: %s\n", f, gearman_worker_error(worker));
            return 1;
        }
    }
    printf("WORKER STARTED\n");
    fflush(stdout);

    while (count == 0 || jobs_done < count) {
        gearman_return_t rc = gearman_worker_work(worker);
        if (rc == GEARMAN_TIMEOUT && wait_ms >= 0)
            continue;
        if (rc != GEARMAN_SUCCESS) {
            printf("WERR %s\n", gearman_strerror(rc));
            fflush(stdout);
            msleep(100);
        }
    }
    printf("WORKER EXIT %ld\n", jobs_done);
    fflush(stdout);
    gearman_worker_free(worker);
    return 0;
}

/* ------------------------------------------------------------------ */
/* client scenarios: each sc_* returns 0 when it ran (its checks count in
 * `failures`), 2 on bad arguments, 3 when out of memory. */

/* Returns 0, 1, 2 for normal, high, low; exits on anything else. */
static int
prio_of(const char *s)
{
    if (strcmp(s, "normal") == 0)
        return 0;
    if (strcmp(s, "high") == 0)
        return 1;
    if (strcmp(s, "low") == 0)
        return 2;
    fprintf(stderr, "bad priority %s\n", s);
    exit(2);
}

static const char *unique_opt; /* -u: the unique key for "do" */

/* gearman_client_do at the given priority; returns the result as do() does. */
static void *
do_prio(gearman_client_st *c, int prio, const char *func, const char *w, size_t *size,
        gearman_return_t *rc)
{
    switch (prio) {
    case 1:
        return gearman_client_do_high(c, func, unique_opt, w, strlen(w), size, rc);
    case 2:
        return gearman_client_do_low(c, func, unique_opt, w, strlen(w), size, rc);
    default:
        return gearman_client_do(c, func, unique_opt, w, strlen(w), size, rc);
    }
}

static int
sc_do(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 3)
        return 2;
    size_t size = 0;
    gearman_return_t rc;
    char *res = do_prio(c, prio_of(argv[1]), argv[0], argv[2], &size, &rc);
    printf("RC %s\n", gearman_strerror(rc));
    printf("RESULT %zu %.*s\n", size, (int)size, res ? res : "");
    if (rc != GEARMAN_SUCCESS)
        printf("# error: %s\n", gearman_client_error(c));
    free(res);
    return 0;
}

static int
sc_priorities(gearman_client_st *c, int argc, char **argv)
{
    static const char *names[] = {"normal", "high", "low"};
    if (argc < 1)
        return 2;
    for (int p = 0; p < 3; p++) {
        char w[64], what[96];
        snprintf(w, sizeof w, "payload-%s", names[p]);
        snprintf(what, sizeof what, "do %s returns WORK_DATA then the reversed workload", names[p]);
        size_t size = 0;
        gearman_return_t rc;
        char *res = do_prio(c, p, argv[0], w, &size, &rc);
        /* libgearman's do() appends every WORK_DATA chunk to the result */
        char *rev = reversed(w, strlen(w));
        char *want = malloc(strlen(rev) + 6);
        if (want == NULL)
            return 3;
        sprintf(want, "chunk%s", rev);
        free(rev);
        check(rc == GEARMAN_SUCCESS && res && size == strlen(want) && memcmp(res, want, size) == 0,
              what, "rc=%s size=%zu result=%.*s want=%s (%s)", gearman_strerror(rc), size,
              (int)size, res ? res : "", want, gearman_client_error(c));
        free(want);
        free(res);
    }
    return 0;
}

static int created_count;
static int created_target;

static gearman_return_t
on_created_count(gearman_task_st *task)
{
    (void)task;
    if (++created_count == created_target) {
        printf("CREATED %d\n", created_count);
        fflush(stdout);
    }
    return GEARMAN_SUCCESS;
}

static gearman_return_t
on_complete_order(gearman_task_st *task)
{
    printf("DONE %s\n", (const char *)gearman_task_context(task));
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static int
sc_order(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 1)
        return 2;
    const char *func = argv[0];
    gearman_return_t r1, r2, r3;
    gearman_client_set_created_fn(c, on_created_count);
    gearman_client_set_complete_fn(c, on_complete_order);
    created_target = 3;
    gearman_client_add_task_low(c, NULL, "low", func, NULL, "low", 3, &r1);
    gearman_client_add_task(c, NULL, "normal", func, NULL, "normal", 6, &r2);
    gearman_client_add_task_high(c, NULL, "high", func, NULL, "high", 4, &r3);
    check(r1 == GEARMAN_SUCCESS && r2 == GEARMAN_SUCCESS && r3 == GEARMAN_SUCCESS,
          "three tasks added", "%s %s %s", gearman_strerror(r1), gearman_strerror(r2),
          gearman_strerror(r3));
    gearman_return_t rc = gearman_client_run_tasks(c);
    check(rc == GEARMAN_SUCCESS, "run_tasks succeeds", "rc=%s (%s)", gearman_strerror(rc),
          gearman_client_error(c));
    return 0;
}

static int
sc_background(gearman_client_st *c, int argc, char **argv)
{
    static const char *names[] = {"normal", "high", "low"};
    if (argc < 1)
        return 2;
    const char *func = argv[0];
    gearman_job_handle_t handles[3];
    bool done[3] = {false, false, false};

    for (int p = 0; p < 3; p++) {
        char w[64], what[96];
        snprintf(w, sizeof w, "bg-%s", names[p]);
        gearman_return_t rc;
        memset(handles[p], 0, sizeof handles[p]);
        if (p == 1)
            rc = gearman_client_do_high_background(c, func, NULL, w, strlen(w), handles[p]);
        else if (p == 2)
            rc = gearman_client_do_low_background(c, func, NULL, w, strlen(w), handles[p]);
        else
            rc = gearman_client_do_background(c, func, NULL, w, strlen(w), handles[p]);
        snprintf(what, sizeof what, "do_%sbackground returns a job handle",
                 p == 0 ? "" : (p == 1 ? "high_" : "low_"));
        check(rc == GEARMAN_SUCCESS && handles[p][0] != '\0', what, "rc=%s handle=%s (%s)",
              gearman_strerror(rc), handles[p], gearman_client_error(c));
        printf("HANDLE %s %s\n", names[p], handles[p]);
    }

    for (int p = 0; p < 3; p++) {
        bool known = false, running = true;
        uint32_t num = 99, den = 99;
        char what[96];
        gearman_return_t rc =
            gearman_client_job_status(c, handles[p], &known, &running, &num, &den);
        snprintf(what, sizeof what, "job_status of queued %s job: known, not running, 0/0",
                 names[p]);
        check(rc == GEARMAN_SUCCESS && known && !running && num == 0 && den == 0, what,
              "rc=%s known=%d running=%d %u/%u", gearman_strerror(rc), known, running, num, den);
    }
    printf("SUBMITTED\n");
    fflush(stdout);

    bool saw_progress = false;
    int remaining = 3;
    double deadline = now() + 20.0;
    gearman_return_t last_rc = GEARMAN_SUCCESS;
    while (remaining > 0 && now() < deadline) {
        for (int p = 0; p < 3; p++) {
            if (done[p])
                continue;
            bool known = false, running = false;
            uint32_t num = 0, den = 0;
            gearman_return_t rc =
                gearman_client_job_status(c, handles[p], &known, &running, &num, &den);
            if (rc != GEARMAN_SUCCESS) {
                last_rc = rc;
                continue;
            }
            if (!known) {
                done[p] = true;
                remaining--;
                printf("FINISHED %s\n", names[p]);
                fflush(stdout);
            } else if (running && num == 1 && den == 2) {
                saw_progress = true;
            }
        }
        msleep(10);
    }
    check(remaining == 0, "job_status polling sees every background job finish",
          "%d still known after 20 s (last rc %s)", remaining, gearman_strerror(last_rc));
    check(saw_progress, "job_status reported a running job at 1/2",
          "never saw running=1 numerator=1 denominator=2");
    return 0;
}

struct ptask {
    char workload[32];
    char *want;
    bool completed;
    bool good;
};

static int complete_calls;

static gearman_return_t
on_complete_parallel(gearman_task_st *task)
{
    struct ptask *pt = gearman_task_context(task);
    const char *data = gearman_task_data(task);
    size_t n = gearman_task_data_size(task);
    complete_calls++;
    if (pt == NULL)
        return GEARMAN_SUCCESS;
    pt->good = data && n == strlen(pt->want) && memcmp(data, pt->want, n) == 0;
    if (!pt->good)
        printf("# %s: got %.*s want %s\n", pt->workload, (int)n, data ? data : "", pt->want);
    if (pt->completed)
        printf("# %s: completed twice\n", pt->workload);
    pt->completed = true;
    return GEARMAN_SUCCESS;
}

static int
sc_parallel(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *func = argv[0];
    int n = atoi(argv[1]);
    if (n <= 0 || n > 100000)
        return 2;
    struct ptask *pts = calloc((size_t)n, sizeof *pts);
    gearman_task_st **tasks = calloc((size_t)n, sizeof *tasks);
    if (pts == NULL || tasks == NULL)
        return 3;
    gearman_client_set_complete_fn(c, on_complete_parallel);

    int added = 0;
    for (int i = 0; i < n; i++) {
        snprintf(pts[i].workload, sizeof pts[i].workload, "task-%05d-%c", i, 'a' + i % 26);
        pts[i].want = reversed(pts[i].workload, strlen(pts[i].workload));
        gearman_return_t rc;
        tasks[i] = gearman_client_add_task(c, NULL, &pts[i], func, NULL, pts[i].workload,
                                           strlen(pts[i].workload), &rc);
        if (tasks[i] && rc == GEARMAN_SUCCESS)
            added++;
    }
    check(added == n, "every add_task succeeds", "%d of %d", added, n);

    double t0 = now();
    gearman_return_t rc = gearman_client_run_tasks(c);
    check(rc == GEARMAN_SUCCESS, "run_tasks succeeds", "rc=%s (%s)", gearman_strerror(rc),
          gearman_client_error(c));
    printf("# run_tasks took %.3f s\n", now() - t0);

    int completed = 0, good = 0, task_ok = 0;
    for (int i = 0; i < n; i++) {
        completed += pts[i].completed;
        good += pts[i].good;
        if (tasks[i] && gearman_task_return(tasks[i]) == GEARMAN_SUCCESS)
            task_ok++;
    }
    check(complete_calls == n && completed == n, "complete callback ran once per task",
          "%d calls, %d tasks completed of %d", complete_calls, completed, n);
    check(good == n, "every task result is its own workload reversed", "%d of %d good", good, n);
    check(task_ok == n, "gearman_task_return is GEARMAN_SUCCESS for every task", "%d of %d",
          task_ok, n);
    for (int i = 0; i < n; i++)
        free(pts[i].want);
    free(pts);
    free(tasks);
    return 0;
}

static gearman_return_t
cb_created(gearman_task_st *t)
{
    printf("CREATED %s\n", gearman_task_job_handle(t));
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static gearman_return_t
cb_data(gearman_task_st *t)
{
    printf("DATA %.*s\n", (int)gearman_task_data_size(t), (const char *)gearman_task_data(t));
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static gearman_return_t
cb_status(gearman_task_st *t)
{
    printf("STATUS %u/%u\n", gearman_task_numerator(t), gearman_task_denominator(t));
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static gearman_return_t
cb_complete(gearman_task_st *t)
{
    printf("COMPLETE %.*s\n", (int)gearman_task_data_size(t), (const char *)gearman_task_data(t));
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static gearman_return_t
cb_fail(gearman_task_st *t)
{
    (void)t;
    printf("FAIL\n");
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static gearman_return_t
cb_exception(gearman_task_st *t)
{
    printf("EXCEPTION %.*s\n", (int)gearman_task_data_size(t), (const char *)gearman_task_data(t));
    fflush(stdout);
    return GEARMAN_SUCCESS;
}

static int
sc_callbacks(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 2)
        return 2;
    gearman_client_set_created_fn(c, cb_created);
    gearman_client_set_data_fn(c, cb_data);
    gearman_client_set_status_fn(c, cb_status);
    gearman_client_set_complete_fn(c, cb_complete);
    gearman_client_set_fail_fn(c, cb_fail);
    gearman_client_set_exception_fn(c, cb_exception);
    gearman_return_t rc;
    gearman_task_st *task =
        gearman_client_add_task(c, NULL, NULL, argv[0], NULL, argv[1], strlen(argv[1]), &rc);
    if (task == NULL || rc != GEARMAN_SUCCESS) {
        printf("RC %s\n", gearman_strerror(rc));
        return 0;
    }
    rc = gearman_client_run_tasks(c);
    printf("RUN %s\n", gearman_strerror(rc));
    printf("RC %s\n", gearman_strerror(gearman_task_return(task)));
    return 0;
}

static int
sc_big(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 2)
        return 2;
    size_t n = (size_t)atol(argv[1]);
    char *w = malloc(n + 1);
    if (w == NULL)
        return 3;
    for (size_t i = 0; i < n; i++)
        w[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    w[n] = '\0';
    size_t size = 0;
    gearman_return_t rc;
    char *res = gearman_client_do(c, argv[0], NULL, w, n, &size, &rc);
    check(rc == GEARMAN_SUCCESS, "do with a big workload succeeds", "rc=%s (%s)",
          gearman_strerror(rc), gearman_client_error(c));
    bool good = res && size == n + 5 && memcmp(res, "chunk", 5) == 0;
    for (size_t i = 0; good && i < n; i++)
        good = res[5 + i] == w[n - 1 - i];
    check(good, "the big result is WORK_DATA + the workload reversed", "size %zu, want %zu", size,
          n + 5);
    free(res);
    free(w);
    return 0;
}

static int
sc_epoch(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 3)
        return 2;
    gearman_task_attr_t attr =
        gearman_task_attr_init_epoch((time_t)atoll(argv[1]), GEARMAN_JOB_PRIORITY_NORMAL);
    gearman_argument_t arg = gearman_argument_make(NULL, 0, argv[2], strlen(argv[2]));
    gearman_task_st *task =
        gearman_execute(c, argv[0], strlen(argv[0]), NULL, 0, &attr, &arg, NULL);
    const char *handle = task ? gearman_task_job_handle(task) : NULL;
    check(task && handle && *handle, "gearman_execute with an epoch returns a job handle", "%s",
          gearman_client_error(c));
    printf("HANDLE %s\n", handle ? handle : "");
    if (task)
        gearman_task_free(task);
    return 0;
}

static int
sc_bgloop(gearman_client_st *c, int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *func = argv[0], *tag = argv[1];
    long n = atol(argv[2]);
    long pause = argc > 3 ? atol(argv[3]) : 0;
    long acked = 0, nacks = 0;
    for (long i = 0; i < n; i++) {
        char w[128];
        snprintf(w, sizeof w, "%s-%ld", tag, i);
        for (int attempt = 0;; attempt++) {
            gearman_job_handle_t handle;
            memset(handle, 0, sizeof handle);
            gearman_return_t rc = gearman_client_do_background(c, func, w, w, strlen(w), handle);
            if (rc == GEARMAN_SUCCESS && handle[0] != '\0') {
                printf("ACK %s %s\n", w, handle);
                acked++;
                break;
            }
            printf("NACK %s %s\n", w, gearman_strerror(rc));
            nacks++;
            if (attempt >= 600) {
                printf("END %ld %ld\n", acked, nacks);
                return 1;
            }
            msleep(50);
        }
        if (pause > 0)
            msleep(pause);
    }
    printf("END %ld %ld\n", acked, nacks);
    return 0;
}

/* Adds the server (host, port), or the list host ("h1:p1,h2:p2") when port
 * is 0; returns the libgearman result. */
static gearman_return_t
client_servers(gearman_client_st *c, const char *host, int port)
{
    if (port == 0)
        return gearman_client_add_servers(c, host);
    return gearman_client_add_server(c, host, (in_port_t)port);
}

static int
run_client(const char *host, int port, int argc, char **argv)
{
    bool exceptions = false;
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-x") == 0)
            exceptions = true;
        else if (strcmp(argv[i], "-u") == 0 && i + 1 < argc)
            unique_opt = argv[++i];
        else
            argv[n++] = argv[i];
    }
    argc = n;
    if (argc < 1)
        return 2;

    gearman_client_st *c = gearman_client_create(NULL);
    if (c == NULL) {
        fprintf(stderr, "gearman_client_create failed\n");
        return 1;
    }
    if (client_servers(c, host, port) != GEARMAN_SUCCESS) {
        fprintf(stderr, "add_server: %s\n", gearman_client_error(c));
        return 1;
    }
    gearman_client_set_timeout(c, 20000);
    if (exceptions) {
        gearman_client_add_options(c, GEARMAN_CLIENT_EXCEPTION);
        check(gearman_client_has_option(c, GEARMAN_CLIENT_EXCEPTION),
              "server accepted OPTION_REQ exceptions", "%s", gearman_client_error(c));
    }

    const char *sc = argv[0];
    int rc;
    if (strcmp(sc, "do") == 0)
        rc = sc_do(c, argc - 1, argv + 1);
    else if (strcmp(sc, "priorities") == 0)
        rc = sc_priorities(c, argc - 1, argv + 1);
    else if (strcmp(sc, "order") == 0)
        rc = sc_order(c, argc - 1, argv + 1);
    else if (strcmp(sc, "background") == 0)
        rc = sc_background(c, argc - 1, argv + 1);
    else if (strcmp(sc, "parallel") == 0)
        rc = sc_parallel(c, argc - 1, argv + 1);
    else if (strcmp(sc, "callbacks") == 0)
        rc = sc_callbacks(c, argc - 1, argv + 1);
    else if (strcmp(sc, "big") == 0)
        rc = sc_big(c, argc - 1, argv + 1);
    else if (strcmp(sc, "epoch") == 0)
        rc = sc_epoch(c, argc - 1, argv + 1);
    else if (strcmp(sc, "bgloop") == 0)
        rc = sc_bgloop(c, argc - 1, argv + 1);
    else {
        fprintf(stderr, "unknown scenario %s\n", sc);
        rc = 2;
    }
    gearman_client_free(c);
    if (rc != 0)
        return rc;
    return failures ? 1 : 0;
}

/* The port argument: a number, or "-" (0) when HOST is a server list. */
static int
port_arg(const char *s)
{
    return strcmp(s, "-") == 0 ? 0 : atoi(s);
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 5 && strcmp(argv[1], "worker") == 0)
        return run_worker(argv[2], port_arg(argv[3]), argv[4], argc - 5, argv + 5);
    if (argc >= 5 && strcmp(argv[1], "client") == 0)
        return run_client(argv[2], port_arg(argv[3]), argc - 4, argv + 4);
    fprintf(
        stderr,
        "usage: %s worker HOST PORT FUNC[,FUNC...] [-c COUNT] [-s SLEEP_MS] [-i ID] [-t TIMEOUT] [-T WAIT_MS]\n"
        "       %s client HOST PORT SCENARIO ARGS... [-x] [-u UNIQUE]\n"
        "       (HOST PORT: one server, or a list h1:p1,h2:p2,... and -)\n",
        argv[0], argv[0]);
    return 2;
}
