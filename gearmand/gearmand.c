/*
 * gearmand.c: the daemon's main: options and config file, log, daemonizing,
 * pid file, user switch, then the server (libgearman-server/server/server.h).
 *
 * Runs on the main thread, which after start-up becomes the server's main
 * loop (accepting connections and handling signals).  Start-up order: parse
 * the command line and the config file, answer --check-args / --help /
 * --version, raise the descriptor limit, daemonize (the parent waits until
 * the child listens), open the log, write the pid file, build the server,
 * bind, switch user, tell the parent, serve (and a service manager, through
 * server/notify.h; under one, -d is ignored).  SIGTERM, SIGINT, SIGUSR1 and
 * SIGHUP are held back from the start and acted on once the main loop runs.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gearmand/options.h"
#include "gearmand/queues.h"
#include "plugins/protocol/http/http.h"
#include "libgearman-server/base/log.h"
#include "libgearman-server/config/tls_ctx.h"
#include "libgearman-server/server/notify.h"
#include "libgearman-server/server/server.h"

static const char *prog = "gearmand";
static const char *pid_file_written;
static sigset_t mask_at_start; /* the signal mask main() was started with */

/* Holds back the signals the server handles (SIGTERM, SIGINT, SIGUSR1,
   SIGHUP) from the start of main: until the main loop takes them over (its
   signalfd reads what is pending), a signal that arrives during start-up,
   a long replay included, waits instead of killing the process with its
   default action.  Threads started later inherit the mask. */
static void
defer_server_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &mask_at_start);
}

/* Forks; the parent waits for the child's one-byte "ready" on a pipe and
   exits 0, or with the child's status if the child dies first.  Returns
   the write end of the pipe in the child, or -1 if forking failed. */
static int
daemonize(void)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        /* the parent only waits: signals act on it as usual */
        sigprocmask(SIG_SETMASK, &mask_at_start, NULL);
        close(fds[1]);
        char c;
        ssize_t n;
        do
            n = read(fds[0], &c, 1);
        while (n < 0 && errno == EINTR);
        if (n == 1)
            _exit(0);
        int status = 0;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
            _exit(WEXITSTATUS(status) ? WEXITSTATUS(status) : 1);
        _exit(1);
    }
    close(fds[0]);
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        if (devnull > STDERR_FILENO)
            close(devnull);
    }
    return fds[1];
}

/* Redirects stderr to /dev/null once the daemon's log is elsewhere. */
static void
detach_stderr(void)
{
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
        dup2(devnull, STDERR_FILENO);
        close(devnull);
    }
}

static int
write_pid_file(const char *path, bool required)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (required)
            fprintf(stderr, "%s: Could not open pid file %s: %s\n", prog, path, strerror(errno));
        return required ? -1 : 0;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    ssize_t w = write(fd, buf, (size_t)n);
    close(fd);
    if (w != n) {
        if (required)
            fprintf(stderr, "%s: Could not write pid file %s\n", prog, path);
        unlink(path);
        return required ? -1 : 0;
    }
    pid_file_written = path;
    return 0;
}

static int
switch_user(const char *user)
{
    if (getuid() != 0 && geteuid() != 0) {
        fprintf(stderr, "%s: Must be root to switch users.\n", prog);
        return -1;
    }
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        fprintf(stderr, "%s: Could not find user %s\n", prog, user);
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        fprintf(stderr, "%s: Could not switch to user %s: %s\n", prog, user, strerror(errno));
        return -1;
    }
    return 0;
}

static void
open_log(const struct gm_options *o)
{
    gm_log_level = o->verbose;
    if (o->syslog)
        gm_log_use_syslog(true);
    if (gm_log_open(o->log_file) == 0)
        return;
    /* Like gearmand: a log file that cannot be opened falls back to stderr,
       with a warning. */
    fprintf(stderr, "%s: could not open log file %s (%s), logging to stderr\n", prog, o->log_file,
            strerror(errno));
    gm_log_open("stderr");
}

/* Reads the command line, then the config file, validates them, and
   applies GEARMAND_PORT.  Returns 0, or -1 after printing why not. */
static int
load_options(struct gm_options *o, int argc, char **argv)
{
    if (gm_options_parse_argv(o, argc, argv, stderr) < 0 ||
        gm_options_read_config(o, prog, stderr) < 0 || gm_options_validate(o, prog, stderr) < 0)
        return -1;
    /* gearmand's environment override: only when -p was not given. */
    const char *env_port = getenv("GEARMAND_PORT");
    if (env_port && *env_port && !gm_options_given(o, "port"))
        o->server.port = env_port;
    return 0;
}

/* The end of --help: the -q types this build has, and those it lacks;
   then whether it can tell systemd it is ready. */
static void
print_build_features(FILE *out)
{
    fprintf(out, "Queue types in this build (-q): builtin");
    for (size_t i = 0; gm_linked_queues[i]; i++)
        fprintf(out, ", %s", gm_linked_queues[i]->name);
    fprintf(out, ".\n");
    for (const struct gm_queue_missing *m = gm_missing_queues; m->name; m++)
        fprintf(out, "Not built (configure did not find %s): %s.\n", m->library, m->name);
    if (gm_notify_supported())
        fprintf(out, "Readiness notification to systemd (Type=notify): built in (libsystemd).\n");
    else
        fprintf(out, "Not built (configure did not find libsystemd): readiness notification to systemd "
                "(Type=notify).\n");
}

/* Answers --check-args, --help or --version; returns true if one was given
   (the process then exits 0 without serving). */
static bool
answer_without_serving(const struct gm_options *o)
{
    if (o->check_args)
        return true;
    if (o->help) {
        gm_options_help(stdout);
        print_build_features(stdout);
        return true;
    }
    if (o->version) {
        printf("\ngearmand %s - %s\n", PACKAGE_VERSION, PACKAGE_BUGREPORT);
        return true;
    }
    return false;
}

/* The TLS files of --ssl: an option, else gearmand's variable, else the
   default path (the CA's only if that file exists).  Refuses --ssl in a
   build without OpenSSL.  Returns 0, or -1 after printing why not. */
static int
configure_tls(struct gm_options *o)
{
    static char ca[4096], cert[4096], key[4096]; /* the server keeps pointing at them */
    struct gm_server_config *c = &o->server;
    if (!c->ssl)
        return 0;
#ifndef HAVE_OPENSSL
    fprintf(stderr, "%s: --ssl is not supported by this build (configure found no OpenSSL)\n", prog);
    return -1;
#else
    const char *env;
    if (!c->ssl_ca_file) {
        if ((env = getenv("GEARMAND_CA_CERTIFICATE")) && *env)
            c->ssl_ca_file = env;
        else if (snprintf(ca, sizeof ca, "%s/gearmand-ca.pem", GM_SSL_DEFAULT_DIR) > 0 &&
                 access(ca, F_OK) == 0)
            c->ssl_ca_file = ca;
    }
    if (!c->ssl_certificate) {
        env = getenv("GEARMAND_SERVER_PEM");
        snprintf(cert, sizeof cert, "%s", env && *env ? env : GM_SSL_DEFAULT_DIR "/gearmand.pem");
        c->ssl_certificate = cert;
    }
    if (!c->ssl_key) {
        env = getenv("GEARMAND_SERVER_KEY");
        snprintf(key, sizeof key, "%s", env && *env ? env : GM_SSL_DEFAULT_DIR "/gearmand.key");
        c->ssl_key = key;
    }
    if (c->ssl_verify_client && !c->ssl_ca_file) {
        fprintf(stderr, "%s: --ssl-verify-client needs --ssl-ca-file\n", prog);
        return -1;
    }
    /* Read them now, to say what is wrong on the terminal; the server reads
       them again for itself (and on SIGHUP). */
    char err[600];
    struct gm_tls_ctx *x = gm_tls_ctx_load(c, err, sizeof err);
    if (!x) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    gm_tls_ctx_unref(x);
    return 0;
#endif
}

/* Refuses an unknown -r protocol; sets up the HTTP front-end for -r http.
   Returns 0, or -1 after printing why not. */
static int
configure_frontend(struct gm_options *o)
{
    static char http_port[16]; /* the server keeps pointing at it */
    if (configure_tls(o) < 0)
        return -1;
    if (o->protocol && strcasecmp(o->protocol, "http") != 0) {
        fprintf(stderr, "%s: Unknown protocol module : %s\n", prog, o->protocol);
        return -1;
    }
    if (o->protocol) {
        snprintf(http_port, sizeof http_port, "%u", o->http_port);
        o->server.frontend = &gm_http_frontend;
        o->server.frontend_port = http_port;
        o->server.frontend_remote_actions = o->http_remote_actions;
        char why[400];
        if (gm_http_set_hosts(o->http_hosts, o->server.listen_host, why, sizeof why) < 0) {
            fprintf(stderr, "%s: --http-host %s\n", prog, why);
            return -1;
        }
    }
    return 0;
}

/* Sets the descriptor limit to --file-descriptors, if given.  Returns 0,
   or -1 after printing why not. */
static int
raise_fd_limit(const struct gm_options *o)
{
    if (o->file_descriptors <= 0)
        return 0;
    struct rlimit rl = {(rlim_t)o->file_descriptors, (rlim_t)o->file_descriptors};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr, "%s: Could not set the file descriptor limit to %ld: %s\n", prog, o->file_descriptors,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Tells the waiting parent of a daemon that the server listens, then
   stops writing to the terminal. */
static void
tell_parent_ready(int ready_fd)
{
    if (write(ready_fd, "R", 1) != 1) {
        /* the parent is gone; carry on */
    }
    close(ready_fd);
    detach_stderr();
}

/* Daemonizes (-d), opens the log, writes the pid file, builds the server
   in *server (the caller frees it), binds, switches user (-u), tells a
   waiting parent, and serves until shut down.  Returns the exit status. */
static int
start_and_serve(struct gm_options *o, struct gm_server **server)
{
    int ready_fd = -1;
    /* Under a Type=notify service (Debian's PARAMS carry --daemon) the
       process systemd started must be the server: -d would make it exit. */
    bool daemon_ignored = o->daemon && gm_notify_expected();
    if (o->daemon && !daemon_ignored && (ready_fd = daemonize()) < 0) {
        fprintf(stderr, "%s: Could not daemonize: %s\n", prog, strerror(errno));
        return 1;
    }
    open_log(o);
    if (daemon_ignored)
        gm_log(GM_LOG_NOTICE, "--daemon ignored: a service manager waits for readiness (NOTIFY_SOCKET is "
               "set), so gearmand stays in the foreground");
    /* A pid file the user named must be written; the default one may fail
       quietly (an unprivileged user running a quick test). */
    if (write_pid_file(o->pid_file, gm_options_given(o, "pid-file")) < 0)
        return 1;

    *server = gm_server_new(&o->server);
    if (!*server)
        return 1;
    if (gm_server_listen(*server) < 0) {
        fprintf(stderr, "%s: could not listen on %s:%s (see the log)\n", prog,
                o->server.listen_host ? o->server.listen_host : "*", o->server.port);
        return 1;
    }
    if (o->user && switch_user(o->user) < 0)
        return 1;
    if (ready_fd >= 0)
        tell_parent_ready(ready_fd);
    int status = gm_server_run(*server);
    /* --ha: a change of role builds the server again around its queue */
    while (status == GM_SERVER_REBUILD)
        status = (*server = gm_server_rebuild(*server)) ? gm_server_run(*server) : 1;
    return status;
}

/* The backend this build lacks that -q `name` asks for, or NULL. */
static const struct gm_queue_missing *
missing_queue(const char *name)
{
    for (const struct gm_queue_missing *m = gm_missing_queues; m->name; m++) {
        if (strcasecmp(m->name, name) == 0)
            return m;
        for (const char *const *a = m->aliases; a && *a; a++)
            if (strcasecmp(*a, name) == 0)
                return m;
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    defer_server_signals();
    if (argc > 0 && argv[0])
        prog = argv[0];

    static struct gm_options o;
    gm_options_defaults(&o);
    int status = 1;
    struct gm_server *server = NULL;
    if (load_options(&o, argc, argv) < 0)
        goto out;
    if (answer_without_serving(&o)) {
        status = 0;
        goto out;
    }
    if (configure_frontend(&o) < 0)
        goto out;
    if (strcasecmp(o.queue_type, "builtin") != 0) {
        o.server.queue = gm_queue_backend_find(gm_linked_queues, o.queue_type);
        if (!o.server.queue) {
            const struct gm_queue_missing *m = missing_queue(o.queue_type);
            if (m)
                fprintf(stderr, "%s: -q %s: this gearmand was built without the %s queue: configure did "
                        "not find %s; install it and build again\n", prog, o.queue_type, m->name, m->library);
            else
                fprintf(stderr, "%s: Error while initializing the queue : %s\n", prog, o.queue_type);
            goto out;
        }
        struct gm_queue_options *q = &o.server.queue_opts;
        q->store_on_shutdown = o.store_queue_on_shutdown;
        gm_queue_opt_set(q, "libsqlite3-db", o.libsqlite3_db);
        gm_queue_opt_set(q, "libsqlite3-table", o.libsqlite3_table);
        gm_queue_opt_set(q, "libpq-conninfo", o.libpq_conninfo);
        gm_queue_opt_set(q, "libpq-table", o.libpq_table);
        gm_queue_opt_set(q, "libmemcached-servers", o.libmemcached_servers);
        gm_queue_opt_set(q, "libmemcached-prefix", o.libmemcached_prefix);
        gm_queue_opt_set(q, "redis-server", o.redis_server);
        gm_queue_opt_set(q, "redis-port", o.redis_port);
        gm_queue_opt_set(q, "redis-password", o.redis_password);
        gm_queue_opt_set(q, "redis-prefix", o.redis_prefix);
        static char mysql_port[12]; /* q keeps the pointer */
        snprintf(mysql_port, sizeof mysql_port, "%u", o.mysql_port);
        gm_queue_opt_set(q, "mysql-host", o.mysql_host);
        gm_queue_opt_set(q, "mysql-port", mysql_port);
        gm_queue_opt_set(q, "mysql-user", o.mysql_user);
        gm_queue_opt_set(q, "mysql-password", o.mysql_password);
        gm_queue_opt_set(q, "mysql-db", o.mysql_db);
        gm_queue_opt_set(q, "mysql-table", o.mysql_table);
        gm_queue_opt_set(q, "libdrizzle-uds", o.mysql_socket);
        gm_queue_opt_set(q, "libtokyocabinet-file", o.libtokyocabinet_file);
        gm_queue_opt_set(q, "libtokyocabinet-optimize", o.libtokyocabinet_optimize);
    }
    if (o.server.ha) {
        if (!o.server.queue || !o.server.queue->lead) {
            fprintf(stderr, "%s: --ha needs -q Postgres: the servers of a pair share its table and "
                    "its lock (-q %s cannot be shared)\n", prog, o.queue_type);
            goto out;
        }
        static char ha_timeout[12]; /* the queue options keep the pointer */
        snprintf(ha_timeout, sizeof ha_timeout, "%u", o.server.ha_timeout_s);
        gm_queue_opt_set(&o.server.queue_opts, "ha-timeout", ha_timeout);
    }
    if (raise_fd_limit(&o) < 0)
        goto out;
    status = start_and_serve(&o, &server);
out:
    gm_server_free(server);
    if (pid_file_written)
        unlink(pid_file_written);
    gm_log_close();
    gm_options_free(&o);
    return status;
}
