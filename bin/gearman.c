/*
 * bin/gearman.c: the `gearman` tool: a client that submits jobs and
 * prints their results, or (-w) a worker that runs jobs, itself or through
 * a command.  Accepts the options of gearman-tools 1.1.20, minus its bugs:
 * it exits non-zero when a job fails or no server can be reached, and a
 * line-mode worker (-n) sends each output line once.  -S (--ssl) and the
 * --ssl-* files make its connections TLS (bin/client_tls.c).
 * Single-threaded (a command-running worker forks a child per job).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bin/client.h"

#define MAX_FUNCTIONS 128

struct opts {
    const char *functions[MAX_FUNCTIONS];
    size_t nfunctions;
    const char *host, *port, *pidfile, *unique;
    const char *ssl_ca_file, *ssl_certificate, *ssl_key;
    int timeout_ms;
    bool ssl, verbose, background, high, low, per_line, strip_newline, prefix, no_stdin, worker, daemon;
    long count;
    char **rest;   /* client: workloads; worker: command and arguments */
    int nrest;
};

static const char *prog = "gearman";

static void
usage(FILE *out)
{
    fprintf(out,
            "Client mode: %s [options] [<data>]\n"
            "Worker mode: %s -w [options] [<command> [<args> ...]]\n"
            "\n"
            "Common options to both client and worker modes.\n"
            "\t-f <function> - Function name to use for jobs (can give many)\n"
            "\t-h <host>     - Job server host (host:port, or several separated by commas)\n"
            "\t-H            - Print this help menu\n"
            "\t-v            - Print diagnostic information to stdout(false)\n"
            "\t-p <port>     - Job server port\n"
            "\t-t <timeout>  - Timeout in milliseconds\n"
            "\t-i <pidfile>  - Create a pidfile for the process\n"
            "\t-S, --ssl     - Connect with TLS (1.2 or newer), verifying the server's\n"
            "\t                certificate and that it names the -h host\n"
            "\t--ssl-ca-file <file>     - CA certificates to verify the server's with\n"
            "\t                           (default: the system's)\n"
            "\t--ssl-certificate <file> - Our certificate, for servers that verify clients\n"
            "\t--ssl-key <file>         - Its private key (default: in the certificate's file)\n"
            "\n"
            "Client options:\n"
            "\t-b            - Run jobs in the background(false)\n"
            "\t-I            - Run jobs as high priority\n"
            "\t-L            - Run jobs as low priority\n"
            "\t-n            - Run one job per line(false)\n"
            "\t-N            - Same as -n, but strip off the newline(false)\n"
            "\t-P            - Prefix all output lines with functions names\n"
            "\t-s            - Send job without reading from standard input\n"
            "\t-u <unique>   - Unique key to use for job\n"
            "\n"
            "Worker options:\n"
            "\t-c <count>    - Number of jobs for worker to run before exiting\n"
            "\t-n            - Send data packet for each line(false)\n"
            "\t-N            - Same as -n, but strip off the newline(false)\n"
            "\t-w            - Run in worker mode(false)\n"
            "\n"
            "The environment variable GEARMAN_SERVER (host:port,host:port) replaces -h and -p.\n"
            "Exit status: 0 on success, 1 when a job fails, a server cannot be reached or\n"
            "an option is wrong.\n",
            prog, prog);
}

static bool
parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !*s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Returns 0 with *o filled, 1 when help was printed (exit 0), -1 on error. */
static int
parse(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = -1;
    int ch;
    long v;
    opterr = 0;
    enum { OPT_CA = 1000, OPT_CERT, OPT_KEY };
    static const struct option longopts[] = {{"ssl", no_argument, NULL, 'S'},
                                             {"ssl-ca-file", required_argument, NULL, OPT_CA},
                                             {"ssl-certificate", required_argument, NULL, OPT_CERT},
                                             {"ssl-key", required_argument, NULL, OPT_KEY},
                                             {NULL, 0, NULL, 0}};
    /* "+": stop at the first non-option, so a worker's command keeps its own options */
    while ((ch = getopt_long(argc, argv, "+f:h:Hvp:t:i:SbILnNPsu:c:wd", longopts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            if (o->nfunctions == MAX_FUNCTIONS) {
                fprintf(stderr, "%s: too many functions (at most %d)\n", prog, MAX_FUNCTIONS);
                return -1;
            }
            o->functions[o->nfunctions++] = optarg;
            break;
        case 'h': o->host = optarg; break;
        case 'H': usage(stdout); return 1;
        case 'v': o->verbose = true; break;
        case 'p': o->port = optarg; break;
        case 't':
            if (!parse_long(optarg, 0, 86400000, &v)) {
                fprintf(stderr, "%s: bad timeout '%s' (milliseconds)\n", prog, optarg);
                return -1;
            }
            o->timeout_ms = v == 0 ? -1 : (int)v;
            break;
        case 'i': o->pidfile = optarg; break;
        case 'S': o->ssl = true; break;
        case OPT_CA: o->ssl_ca_file = optarg; break;
        case OPT_CERT: o->ssl_certificate = optarg; break;
        case OPT_KEY: o->ssl_key = optarg; break;
        case 'b': o->background = true; break;
        case 'I': o->high = true; break;
        case 'L': o->low = true; break;
        case 'n': o->per_line = true; break;
        case 'N': o->per_line = o->strip_newline = true; break;
        case 'P': o->prefix = true; break;
        case 's': o->no_stdin = true; break;
        case 'u': o->unique = optarg; break;
        case 'c':
            if (!parse_long(optarg, 0, 1L << 40, &v)) {
                fprintf(stderr, "%s: bad count '%s'\n", prog, optarg);
                return -1;
            }
            o->count = v;
            break;
        case 'w': o->worker = true; break;
        case 'd': o->daemon = true; break;
        default:
            if (optopt >= OPT_CA)
                fprintf(stderr, "%s: option %s needs a value\n", prog, argv[optind - 1]);
            else if (optopt && strchr("fhptiuc", optopt))
                fprintf(stderr, "%s: option -%c needs a value\n", prog, optopt);
            else if (optopt)
                fprintf(stderr, "%s: unknown option -%c\n", prog, optopt);
            else
                fprintf(stderr, "%s: unknown option %s\n", prog, argv[optind - 1]);
            return -1;
        }
    }
    if (!o->ssl && (o->ssl_ca_file || o->ssl_certificate || o->ssl_key)) {
        fprintf(stderr, "%s: the --ssl-* files need -S (--ssl)\n", prog);
        return -1;
    }
    o->rest = argv + optind;
    o->nrest = argc - optind;
    if (o->nfunctions == 0) {
        fprintf(stderr, "%s: no function given (-f)\n\n", prog);
        usage(stderr);
        return -1;
    }
    if (o->high && o->low) {
        fprintf(stderr, "%s: -I and -L exclude each other\n", prog);
        return -1;
    }
    return 0;
}

static int
setup_servers(struct gmc *c, const struct opts *o)
{
    const char *env = getenv("GEARMAN_SERVER");
    if (!env || !*env)
        env = getenv("GEARMAN_SERVERS");
    const char *port = o->port ? o->port : "4730";
    if (env && *env)
        return gmc_add_servers(c, env, port);
    char one[320];
    const char *host = o->host ? o->host : "localhost";
    /* -h may already carry a port, or be a list */
    if (strchr(host, ',') || (strchr(host, ':') && !o->port) || host[0] == '[')
        return gmc_add_servers(c, host, port);
    snprintf(one, sizeof one, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    return gmc_add_servers(c, one, port);
}

static void
make_uuid(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)(rand() >> 7);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void
write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: cannot write pid file %s: %s\n", prog, path, strerror(errno));
        return;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
}

/* ------------------------------------------------------------------ */
/* Client                                                              */
/* ------------------------------------------------------------------ */

struct job {
    const char *function;
    char *data;
    size_t len;
    char unique[65];
    char handle[GM_HANDLE_MAX];
    bool created, done;
};

static bool
add_job(struct job **jobs, size_t *n, size_t *cap, const char *fn, const char *data, size_t len,
        const char *unique)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        struct job *j = realloc(*jobs, c * sizeof *j);
        if (!j)
            return false;
        *jobs = j;
        *cap = c;
    }
    struct job *j = &(*jobs)[(*n)++];
    memset(j, 0, sizeof *j);
    j->function = fn;
    j->data = malloc(len ? len : 1);
    if (!j->data)
        return false;
    memcpy(j->data, data, len);
    j->len = len;
    if (unique)
        snprintf(j->unique, sizeof j->unique, "%s", unique);
    else
        make_uuid(j->unique);
    return true;
}

/* Reads all of stdin into a malloc'd buffer. */
static char *
read_all(FILE *in, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, in);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
    }
    *len = n;
    return b;
}

static uint32_t
submit_type(const struct opts *o)
{
    if (o->background)
        return o->high ? GM_PKT_SUBMIT_JOB_HIGH_BG : o->low ? GM_PKT_SUBMIT_JOB_LOW_BG : GM_PKT_SUBMIT_JOB_BG;
    return o->high ? GM_PKT_SUBMIT_JOB_HIGH : o->low ? GM_PKT_SUBMIT_JOB_LOW : GM_PKT_SUBMIT_JOB;
}

/* The first unfinished job with this handle: jobs the server coalesced
   (same unique key) share one handle and each gets its own replies. */
static struct job *
find_job(struct job *jobs, size_t n, const char *h, size_t hl)
{
    for (size_t i = 0; i < n; i++)
        if (jobs[i].created && !jobs[i].done && strlen(jobs[i].handle) == hl &&
            memcmp(jobs[i].handle, h, hl) == 0)
            return &jobs[i];
    return NULL;
}

static void
out_data(const struct opts *o, FILE *f, const struct job *j, const char *d, size_t len)
{
    if (o->prefix)
        fprintf(f, "%s: ", j->function);
    fwrite(d, 1, len, f);
    fflush(f);
}

/* The client's jobs and what their replies have shown so far. */
struct client_run {
    const struct opts *o;
    struct job *jobs;
    size_t n, cap;
    size_t next_created;    /* the next job a JOB_CREATED (or ERROR) answers */
    size_t remaining;       /* jobs not done yet */
    bool option_answered;   /* the server has answered OPTION_REQ */
    int status;             /* the exit status so far */
};

/* Adds one job per line of input for function fn (-n; -N strips the
   newline).  Returns false when out of memory. */
static bool
add_line_jobs(struct client_run *r, const char *fn, const char *input, size_t len)
{
    const struct opts *o = r->o;
    bool ok = true;
    size_t pos = 0;
    while (pos < len && ok) {
        const char *nl = memchr(input + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - input) + 1 : len;
        size_t l = end - pos;
        if (o->strip_newline && nl)
            l--;
        ok = add_job(&r->jobs, &r->n, &r->cap, fn, input + pos, l, o->unique);
        pos = end;
    }
    return ok;
}

/* Builds the job list: for each function, one job per argument, or else
   one from standard input (one per line with -n/-N; none read with -s).
   Returns 0, or 1 after printing why not. */
static int
collect_jobs(struct client_run *r)
{
    const struct opts *o = r->o;
    bool ok = true;
    for (size_t f = 0; f < o->nfunctions && ok; f++) {
        for (int i = 0; i < o->nrest && ok; i++)
            ok = add_job(&r->jobs, &r->n, &r->cap, o->functions[f], o->rest[i], strlen(o->rest[i]), o->unique);
    }
    if (o->nrest == 0) {
        size_t len = 0;
        char *input = o->no_stdin ? NULL : read_all(stdin, &len);
        if (!o->no_stdin && !input) {
            fprintf(stderr, "%s: cannot read standard input\n", prog);
            return 1;
        }
        for (size_t f = 0; f < o->nfunctions && ok; f++) {
            if (o->per_line)
                ok = add_line_jobs(r, o->functions[f], input, len);
            else
                ok = add_job(&r->jobs, &r->n, &r->cap, o->functions[f], input ? input : "", len, o->unique);
        }
        free(input);
    }
    if (!ok) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    return 0;
}

/* Sends OPTION_REQ "exceptions", then submits every job.  Returns 0, or
   -1 with c->err set. */
static int
submit_jobs(struct gmc *c, const struct client_run *r)
{
    /* Ask for WORK_EXCEPTION so that exception text can be shown. */
    struct gm_field_ref opt = {"exceptions", 10};
    if (gmc_send(c, GM_PKT_OPTION_REQ, &opt, 1) < 0)
        return -1;
    uint32_t type = submit_type(r->o);
    for (size_t i = 0; i < r->n; i++) {
        const struct job *j = &r->jobs[i];
        struct gm_field_ref f[3] = {{j->function, strlen(j->function)},
                                    {j->unique, strlen(j->unique)},
                                    {j->data, j->len}};
        if (gmc_send(c, type, f, 3) < 0)
            return -1;
    }
    return 0;
}

/* JOB_CREATED answers the oldest submit not yet answered; a background job
   is done with it. */
static void
on_job_created(struct client_run *r, const char *h, size_t hl)
{
    if (r->next_created == r->n)
        return;
    struct job *j = &r->jobs[r->next_created++];
    j->created = true;
    snprintf(j->handle, sizeof j->handle, "%.*s", (int)hl, h);
    if (r->o->verbose)
        printf("Task created: %s\n", j->handle);
    if (r->o->background) {
        j->done = true;
        r->remaining--;
    }
}

/* An ERROR fails the oldest submit not yet answered, except the
   UNKNOWN_OPTION of an old server to our OPTION_REQ. */
static void
on_server_error(struct client_run *r, const struct gmc_packet *p)
{
    size_t cl, tl;
    const char *code = gmc_field(p, 0, &cl);
    const char *text = gmc_field(p, 1, &tl);
    if (!r->option_answered && cl == 14 && memcmp(code, "UNKNOWN_OPTION", 14) == 0) {
        r->option_answered = true; /* an old server: carry on without exceptions */
        return;
    }
    fprintf(stderr, "%s: server error %.*s: %.*s\n", prog, (int)cl, code, (int)tl, text);
    r->status = 1;
    if (r->next_created < r->n) { /* the error answers the oldest submit */
        r->jobs[r->next_created++].done = true;
        r->remaining--;
    }
}

/* Shows a WORK_* reply to job j; COMPLETE, EXCEPTION and FAIL end the job
   (the last two with exit status 1). */
static void
on_work_reply(struct client_run *r, const struct gmc_packet *p, struct job *j)
{
    const struct opts *o = r->o;
    size_t dl;
    const char *d = gmc_field(p, 1, &dl);
    if (p->type == GM_PKT_WORK_DATA) {
        out_data(o, stdout, j, d, dl);
    } else if (p->type == GM_PKT_WORK_WARNING) {
        out_data(o, stderr, j, d, dl);
    } else if (p->type == GM_PKT_WORK_STATUS) {
        size_t nl2, dl2;
        const char *num = gmc_field(p, 1, &nl2);
        const char *den = gmc_field(p, 2, &dl2);
        unsigned long long a = strtoull(num, NULL, 10), b = strtoull(den, NULL, 10);
        if (o->prefix)
            printf("%s: ", j->function);
        printf("%llu%% Complete\n", b ? a * 100 / b : 0);
        fflush(stdout);
    } else {
        if (p->type == GM_PKT_WORK_COMPLETE) {
            out_data(o, stdout, j, d, dl);
        } else if (p->type == GM_PKT_WORK_EXCEPTION) {
            out_data(o, stderr, j, d, dl);
            fputc('\n', stderr);
            fprintf(stderr, "Job failed\n");
            r->status = 1;
        } else {
            fprintf(stderr, "Job failed\n");
            r->status = 1;
        }
        j->done = true;
        r->remaining--;
    }
}

/* Reads replies until every job is done, or the server stays silent past
   the timeout (status 1).  Returns 0, or -1 with c->err set. */
static int
await_replies(struct gmc *c, struct client_run *r)
{
    r->remaining = r->n;
    while (r->remaining) {
        struct gmc_packet p;
        int rc = gmc_recv(c, &p, -1);
        if (rc == 0) {
            fprintf(stderr, "%s: timed out waiting for the server\n", prog);
            r->status = 1;
            return 0;
        }
        if (rc < 0)
            return -1;
        size_t hl;
        const char *h = gmc_field(&p, 0, &hl);
        struct job *j;
        switch (p.type) {
        case GM_PKT_OPTION_RES:
            r->option_answered = true;
            break;
        case GM_PKT_JOB_CREATED:
            on_job_created(r, h, hl);
            break;
        case GM_PKT_ERROR:
            on_server_error(r, &p);
            break;
        case GM_PKT_WORK_DATA:
        case GM_PKT_WORK_WARNING:
        case GM_PKT_WORK_COMPLETE:
        case GM_PKT_WORK_EXCEPTION:
        case GM_PKT_WORK_FAIL:
        case GM_PKT_WORK_STATUS:
            j = find_job(r->jobs, r->n, h, hl);
            if (j)
                on_work_reply(r, &p, j);
            break;
        default:
            break;
        }
    }
    return 0;
}

/* Submits the jobs and prints their results; returns the exit status. */
static int
run_client(struct opts *o, struct gmc *c)
{
    struct client_run r = {.o = o};
    if (collect_jobs(&r) != 0) {
        r.status = 1;
    } else if (gmc_connect(c) < 0 || submit_jobs(c, &r) < 0 || await_replies(c, &r) < 0) {
        fprintf(stderr, "%s: %s\n", prog, c->err);
        r.status = 1;
    }
    for (size_t i = 0; i < r.n; i++)
        free(r.jobs[i].data);
    free(r.jobs);
    fflush(stdout);
    return r.status;
}

/* ------------------------------------------------------------------ */
/* Worker                                                              */
/* ------------------------------------------------------------------ */

static int
send_work(struct gmc *c, uint32_t type, const char *handle, const char *d, size_t len)
{
    struct gm_field_ref f[2] = {{handle, strlen(handle)}, {d, len}};
    return gmc_send(c, type, f, type == GM_PKT_WORK_FAIL ? 1 : 2);
}

/* Sends the complete lines buffered in *out as WORK_DATA, each once; keeps
   the partial last line.  Returns 0 or -1. */
static int
send_lines(struct gmc *c, const struct opts *o, const char *handle, char *out, size_t *len, bool all)
{
    size_t pos = 0;
    while (pos < *len) {
        char *nl = memchr(out + pos, '\n', *len - pos);
        if (!nl && !all)
            break;
        size_t end = nl ? (size_t)(nl - out) + 1 : *len;
        size_t l = end - pos;
        if (o->strip_newline && nl)
            l--;
        if (send_work(c, GM_PKT_WORK_DATA, handle, out + pos, l) < 0)
            return -1;
        pos = end;
    }
    memmove(out, out + pos, *len - pos);
    *len -= pos;
    return 0;
}

/* Runs the command with the workload on its stdin; returns its exit status
   (or -1 if it could not run) and its output in *out and *out_len; in line
   mode, complete lines are sent as WORK_DATA as they come. */
static int
run_command(struct gmc *c, const struct opts *o, const char *handle, const char *data, size_t len,
            char **out, size_t *out_len, bool *send_failed)
{
    int in[2], outp[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(outp, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(outp[0]);
        close(outp[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(outp[1], STDOUT_FILENO);
        execvp(o->rest[0], o->rest);
        fprintf(stderr, "%s: cannot run %s: %s\n", prog, o->rest[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t cap = 4096, n = 0, written = 0;
    char *buf = malloc(cap);
    bool in_open = true;
    if (len == 0) {
        close(in[1]);
        in_open = false;
    }
    for (;;) {
        struct pollfd pfd[2] = {{outp[0], POLLIN, 0}, {in_open ? in[1] : -1, POLLOUT, 0}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (in_open && (pfd[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(in[1], data + written, len - written);
            if (w > 0)
                written += (size_t)w;
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                written = len; /* the command does not read: stop feeding it */
            if (written == len) {
                close(in[1]);
                in_open = false;
            }
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (buf && n == cap) {
                char *nb = realloc(buf, cap * 2);
                if (nb) {
                    buf = nb;
                    cap *= 2;
                }
            }
            ssize_t r = buf && n < cap ? read(outp[0], buf + n, cap - n) : -1;
            if (r <= 0) {
                if (r < 0 && errno == EINTR)
                    continue;
                break;
            }
            n += (size_t)r;
            if (o->per_line && !*send_failed && send_lines(c, o, handle, buf, &n, false) < 0)
                *send_failed = true;
        }
    }
    if (in_open)
        close(in[1]);
    close(outp[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    *out = buf;
    *out_len = n;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Runs one assigned job; returns 0, or -1 if the connection failed. */
static int
do_job(struct gmc *c, const struct opts *o, const struct gmc_packet *p)
{
    size_t hl, dl;
    const char *h = gmc_field(p, 0, &hl);
    const char *d = gmc_field(p, 2, &dl);
    char handle[GM_HANDLE_MAX];
    snprintf(handle, sizeof handle, "%.*s", (int)hl, h);
    char *data = malloc(dl ? dl : 1); /* the packet buffer is reused by the next read */
    if (!data)
        return send_work(c, GM_PKT_WORK_FAIL, handle, NULL, 0);
    memcpy(data, d, dl);
    int rc;
    if (o->nrest == 0) {
        fwrite(data, 1, dl, stdout);
        fflush(stdout);
        rc = send_work(c, GM_PKT_WORK_COMPLETE, handle, "", 0);
    } else {
        char *out = NULL;
        size_t out_len = 0;
        bool send_failed = false;
        int status = run_command(c, o, handle, data, dl, &out, &out_len, &send_failed);
        if (send_failed) {
            rc = -1;
        } else if (status == 0) {
            if (o->per_line) {
                rc = send_lines(c, o, handle, out, &out_len, true);
                if (rc == 0)
                    rc = send_work(c, GM_PKT_WORK_COMPLETE, handle, "", 0);
            } else {
                rc = send_work(c, GM_PKT_WORK_COMPLETE, handle, out ? out : "", out_len);
            }
        } else {
            /* what the command printed still reaches the client, then the failure */
            rc = 0;
            if (o->per_line)
                rc = send_lines(c, o, handle, out, &out_len, true);
            else if (out_len)
                rc = send_work(c, GM_PKT_WORK_DATA, handle, out, out_len);
            if (rc == 0)
                rc = send_work(c, GM_PKT_WORK_FAIL, handle, NULL, 0);
        }
        free(out);
    }
    free(data);
    return rc;
}

static int
worker_register(struct gmc *c, const struct opts *o)
{
    for (size_t i = 0; i < o->nfunctions; i++) {
        struct gm_field_ref f = {o->functions[i], strlen(o->functions[i])};
        if (gmc_send(c, GM_PKT_CAN_DO, &f, 1) < 0)
            return -1;
    }
    return 0;
}

static int
run_worker(struct opts *o, struct gmc *c)
{
    long done = 0;
    bool connected_once = false;
    for (;;) {
        if (c->fd < 0) {
            if (gmc_connect(c) < 0 || worker_register(c, o) < 0) {
                if (!connected_once) {
                    fprintf(stderr, "%s: %s\n", prog, c->err);
                    return 1;
                }
                fprintf(stderr, "%s: %s; retrying in 1 s\n", prog, c->err);
                sleep(1);
                c->current = (c->current + 1) % c->nservers;
                continue;
            }
            connected_once = true;
        }
        if (gmc_send(c, GM_PKT_GRAB_JOB, NULL, 0) < 0)
            continue;
        struct gmc_packet p;
        bool lost = false;
        for (;;) {
            int r = gmc_recv(c, &p, -1);
            if (r <= 0) {
                lost = true;
                break;
            }
            if (p.type == GM_PKT_NO_JOB) {
                if (gmc_send(c, GM_PKT_PRE_SLEEP, NULL, 0) < 0) {
                    lost = true;
                    break;
                }
                continue; /* wait for NOOP */
            }
            if (p.type == GM_PKT_NOOP)
                break; /* grab again */
            if (p.type == GM_PKT_JOB_ASSIGN) {
                if (do_job(c, o, &p) < 0) {
                    lost = true;
                    break;
                }
                done++;
                if (o->count && done >= o->count)
                    return 0;
                break;
            }
            if (p.type == GM_PKT_ERROR) {
                size_t cl, tl;
                const char *code = gmc_field(&p, 0, &cl);
                const char *text = gmc_field(&p, 1, &tl);
                fprintf(stderr, "%s: server error %.*s: %.*s\n", prog, (int)cl, code, (int)tl, text);
            }
        }
        if (lost) {
            fprintf(stderr, "%s: %s; reconnecting\n", prog, c->err);
            gmc_close(c);
            c->current = (c->current + 1) % c->nservers;
        }
    }
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct opts o;
    int r = parse(argc, argv, &o);
    if (r != 0)
        return r > 0 ? 0 : 1;
    struct gmc c;
    gmc_init(&c);
    c.timeout_ms = o.timeout_ms;
    if (setup_servers(&c, &o) < 0 ||
        (o.ssl && gmc_use_tls(&c, o.ssl_ca_file, o.ssl_certificate, o.ssl_key) < 0)) {
        fprintf(stderr, "%s: %s\n", prog, c.err);
        gmc_free(&c);
        return 1;
    }
    if (o.daemon) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "%s: cannot daemonize: %s\n", prog, strerror(errno));
            return 1;
        }
        if (pid > 0)
            return 0;
        setsid();
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
    }
    if (o.pidfile)
        write_pidfile(o.pidfile);
    int status;
    if (o.worker) {
        c.timeout_ms = -1; /* a worker sleeps until there is work */
        status = run_worker(&o, &c);
    } else {
        status = run_client(&o, &c);
    }
    gmc_free(&c);
    if (o.pidfile)
        unlink(o.pidfile);
    return status;
}
