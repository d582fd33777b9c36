/*
 * bin/gearadmin.c: the `gearadmin` tool: runs admin text commands against
 * a job server and prints their replies as gearadmin 1.1.20 does, but reads
 * each reply to its terminating line (instead of stopping after 5 ms of
 * silence) and exits non-zero when the server answers ERR or cannot be
 * reached.  Besides 1.1.20's options it has one for each of our job
 * lifecycle commands (docs/lifecycle.md), printed the same way.  -S (--ssl)
 * and the --ssl-* files make the connection TLS (bin/client_tls.c).
 * Single-threaded.
 */
#include "config.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bin/client.h"

/* A_OPTIONAL: the value is "--opt=VALUE", or the next argument unless it
   starts with '-'; without one the command is sent bare. */
enum arg_kind { A_NONE, A_VALUE, A_OPTIONAL };

struct action {
    const char *option;   /* long option */
    int kind;             /* enum arg_kind: takes a value? */
    const char *command;  /* admin command (value appended after a space) */
    bool list;            /* the reply is a list ending with "." */
    const char *help;
};

static const struct action actions[] = {
    {"server-version", A_NONE, "version", false, "Fetch the version number for the server."},
    {"server-verbose", A_NONE, "verbose", false, "Fetch the verbose setting for the server."},
    {"create-function", A_VALUE, "create function", false, "Create the function from the server."},
    {"cancel-job", A_VALUE, "cancel job", false, "Remove a given job from the server's queue"},
    {"drop-function", A_VALUE, "drop function", false, "Drop the function from the server."},
    {"show-unique-jobs", A_NONE, "show unique jobs", true, "Show unique IDs of jobs on the server."},
    {"show-jobs", A_NONE, "show jobs", true, "Show all jobs on the server."},
    {"getpid", A_NONE, "getpid", false, "Get Process ID for the server."},
    {"status", A_NONE, "status", true, "Status for the server."},
    {"priority-status", A_NONE, "prioritystatus", true, "Queued jobs status by priority."},
    {"workers", A_NONE, "workers", true, "Workers for the server."},
    /* the job lifecycle (docs/lifecycle.md) */
    {"show-policies", A_NONE, "show policies", true, "Show the functions that have a lifecycle policy or are paused."},
    {"policy", A_VALUE, "policy", false,
     "Set a function's policy: \"FUNC key=value ...\" or FUNC:key=value[,key=value...]."},
    {"pause", A_VALUE, "pause", false, "Hand out no job of the function until --resume."},
    {"resume", A_VALUE, "resume", false, "Hand out the function's jobs again."},
    {"purge", A_VALUE, "purge", false, "Remove the function's queued and waiting jobs."},
    {"show-dead", A_OPTIONAL, "show dead", true, "Show the dead letters (of one function if given)."},
    {"retry-dead", A_VALUE, "retry dead", false, "Send the dead letter with this handle back to its queue."},
    {"retry-dead-all", A_VALUE, "retry dead all", false, "Send the function's dead letters back to its queue."},
    {"discard-dead", A_VALUE, "discard dead", false, "Discard the dead letter with this handle."},
    {"discard-dead-all", A_VALUE, "discard dead all", false, "Discard the function's dead letters."},
    {"show-job", A_VALUE, "show job", true, "Show a job's state and attempts."},
    {"shutdown", A_NONE, "shutdown", false,
     "Shut the server down (with --graceful: once no job is queued or running)."},
};
#define NACTIONS (sizeof actions / sizeof actions[0])

static void
usage(FILE *out)
{
    fprintf(out, "Usage: gearadmin [OPTION]...\n\nOptions:\n");
    fprintf(out, "  %-31s%s\n", "--help", "Print this help and exit.");
    fprintf(out, "  %-31s%s\n", "-h [ --host ] arg (=localhost)", "Connect to the host");
    fprintf(out, "  %-31s%s\n", "-p [ --port ] arg (=4730)", "Port number or service to use for connection");
    fprintf(out, "  %-31s%s\n", "-t [ --timeout ] arg (=10000)", "Milliseconds to wait for each reply");
    for (size_t i = 0; i < NACTIONS; i++) {
        char left[64];
        static const char *const arg[] = {[A_NONE] = "", [A_VALUE] = " arg", [A_OPTIONAL] = " [arg]"};
        snprintf(left, sizeof left, "--%s%s", actions[i].option, arg[actions[i].kind]);
        fprintf(out, "  %-31s%s\n", left, actions[i].help);
    }
    fprintf(out, "  %-31s%s\n", "--graceful", "With --shutdown: wait for queued and running jobs.");
    fprintf(out, "  %-31s%s\n", "-S [ --ssl ]",
            "Connect with TLS (1.2 or newer), verifying the server's certificate and that it names the host.");
    fprintf(out, "  %-31s%s\n", "--ssl-ca-file arg", "CA certificates to verify the server's with (default: the system's).");
    fprintf(out, "  %-31s%s\n", "--ssl-certificate arg", "Our certificate, for servers that verify clients.");
    fprintf(out, "  %-31s%s\n", "--ssl-key arg", "Its private key (default: in the certificate's file).");
    fprintf(out, "\nCommands run in the order given, over one connection.\n");
}

struct todo {
    const struct action *a;
    const char *value;
};

/* Prints one reply the way gearadmin does; returns false for an ERR reply
   (one "ERR ..." line ending in "\r\n"; a list line may start with "ERR"
   too, but ends with a bare "\n"). */
static bool
print_reply(const char *r, size_t len)
{
    const char *nl = memchr(r, '\n', len);
    bool err = len >= 5 && memcmp(r, "ERR ", 4) == 0 && nl == r + len - 1 && nl[-1] == '\r';
    if (err) {
        size_t n = len - 4;
        while (n && (r[4 + n - 1] == '\n' || r[4 + n - 1] == '\r'))
            n--;
        fprintf(stderr, "Error: %.*s\n", (int)n, r + 4);
        return false;
    }
    if (len >= 2 && memcmp(r, "OK", 2) == 0 && (len == 2 || r[2] == '\r' || r[2] == '\n' || r[2] == ' ')) {
        const char *v = len > 2 && r[2] == ' ' ? r + 3 : r;
        size_t n = (size_t)(r + len - v);
        while (n && (v[n - 1] == '\n' || v[n - 1] == '\r'))
            n--;
        printf("%.*s\n", (int)n, v);
        return true;
    }
    fwrite(r, 1, len, stdout);
    return true;
}

/* What the command line asks for. */
struct admin_opts {
    const char *host, *port;
    bool ssl;               /* -S: TLS */
    const char *ssl_ca_file, *ssl_certificate, *ssl_key;
    int timeout;            /* milliseconds, for each reply */
    bool graceful;          /* --shutdown waits for queued and running jobs */
    struct todo todo[64];   /* the commands, in the order given */
    size_t ntodo;
};

/* The value of option --name taken from the next argument (*i moves on to
   it).  Returns it, or NULL after printing that it is missing. */
static const char *
next_value(int argc, char **argv, int *i, const char *name)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "gearadmin: the required argument for option '--%s' is missing\n", name);
        return NULL;
    }
    return argv[++*i];
}

/* Adds the command of "--<name>[=val]" (len: the name's length) to the
   list, taking its value from the next argument if it needs one.  Returns
   0, or -1 after printing why not. */
static int
add_action(struct admin_opts *o, const char *a, size_t len, const char *val, int argc, char **argv, int *i)
{
    const struct action *act = NULL;
    for (size_t k = 0; k < NACTIONS; k++)
        if (strlen(actions[k].option) == len && strncmp(actions[k].option, a + 2, len) == 0)
            act = &actions[k];
    if (!act) {
        fprintf(stderr, "gearadmin: unrecognised option '%s'\n", a);
        return -1;
    }
    if (act->kind == A_VALUE && !val && !(val = next_value(argc, argv, i, act->option)))
        return -1;
    if (act->kind == A_OPTIONAL && !val && *i + 1 < argc && argv[*i + 1][0] != '-')
        val = argv[++*i];
    if (act->kind == A_NONE && val) {
        fprintf(stderr, "gearadmin: option '--%s' does not take an argument\n", act->option);
        return -1;
    }
    if (o->ntodo == sizeof o->todo / sizeof o->todo[0]) {
        fprintf(stderr, "gearadmin: too many commands\n");
        return -1;
    }
    o->todo[o->ntodo++] = (struct todo){act, val};
    return 0;
}

/* Sets the connection option which ("host", "port", "timeout" or one of
   the "ssl-*" files) to val.  Returns 0, or -1 after printing why not. */
static int
set_connection_option(struct admin_opts *o, const char *which, const char *val)
{
    if (strcmp(which, "ssl-ca-file") == 0) {
        o->ssl_ca_file = val;
    } else if (strcmp(which, "ssl-certificate") == 0) {
        o->ssl_certificate = val;
    } else if (strcmp(which, "ssl-key") == 0) {
        o->ssl_key = val;
    } else if (which[0] == 'h') {
        o->host = val;
    } else if (which[0] == 'p') {
        o->port = val;
    } else {
        char *end;
        long t = strtol(val, &end, 10);
        if (*end || t < 1 || t > 3600000) {
            fprintf(stderr, "gearadmin: the argument ('%s') for option '--timeout' is invalid\n", val);
            return -1;
        }
        o->timeout = (int)t;
    }
    return 0;
}

/* Returns 0 with *o filled, 1 when help was printed (exit 0), -1 on error
   or when no command was given (exit 1). */
static int
parse(int argc, char **argv, struct admin_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "-S") == 0 || strcmp(a, "--ssl") == 0) {
            o->ssl = true;
            continue;
        }
        if (strcmp(a, "--graceful") == 0) {
            o->graceful = true;
            continue;
        }
        /* -h/-p/-t with a separate or attached value; --host/--port/--timeout */
        const char *which = NULL;
        if (a[0] == '-' && a[1] && a[1] != '-' && strchr("hpt", a[1])) {
            which = a[1] == 'h' ? "host" : a[1] == 'p' ? "port" : "timeout";
            val = a[2] ? a + 2 : NULL;
        } else if (strncmp(a, "--", 2) == 0) {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            static const char *const conn_opts[] = {"host", "port", "timeout", "ssl-ca-file", "ssl-certificate",
                                                    "ssl-key"};
            for (size_t k = 0; k < sizeof conn_opts / sizeof conn_opts[0]; k++)
                if (len == strlen(conn_opts[k]) && strncmp(a + 2, conn_opts[k], len) == 0)
                    which = conn_opts[k];
            if (eq)
                val = eq + 1;
            if (!which) {
                if (add_action(o, a, len, val, argc, argv, &i) < 0)
                    return -1;
                continue;
            }
        } else {
            fprintf(stderr, "gearadmin: unrecognised option '%s'\n", a);
            return -1;
        }
        if (!val && !(val = next_value(argc, argv, &i, which)))
            return -1;
        if (set_connection_option(o, which, val) < 0)
            return -1;
    }
    if (!o->ssl && (o->ssl_ca_file || o->ssl_certificate || o->ssl_key)) {
        fprintf(stderr, "gearadmin: the --ssl-* files need -S (--ssl)\n");
        return -1;
    }
    if (o->ntodo == 0) {
        printf("No option execution operation given.\n\n");
        usage(stdout);
        return -1;
    }
    return 0;
}

/* Rewrites in place the words of `policy` that a --policy value gave: the
   admin form "FUNC key=value ..." stays as it is; gearmand's --policy form
   "FUNC:key=value,key=value" (split at its last ':', as gearmand does) gets
   that ':' and the commas made spaces.  The server checks the words. */
static void
policy_words(char *words)
{
    char *colon = strrchr(words, ':');
    if (!colon || strpbrk(words, " \t"))
        return;
    for (char *c = colon; *c; c++)
        if (*c == ':' || *c == ',')
            *c = ' ';
}

/* The admin line of command t into line (size bytes). */
static void
command_line(const struct todo *t, bool graceful, char *line, size_t size)
{
    const char *cmd = t->a->command;
    if (t->value) {
        snprintf(line, size, "%s %s", cmd, t->value);
        if (strcmp(cmd, "policy") == 0)
            policy_words(line + strlen(cmd) + 1);
    } else if (strcmp(cmd, "shutdown") == 0 && graceful) {
        snprintf(line, size, "shutdown graceful");
    } else {
        snprintf(line, size, "%s", cmd);
    }
}

/* Runs the commands in order over the connection c, printing each reply.
   Returns 0, or 1 if one was answered ERR or the connection failed (the
   commands after that are not run). */
static int
run_commands(struct gmc *c, const struct admin_opts *o)
{
    int status = 0;
    for (size_t i = 0; i < o->ntodo; i++) {
        const struct action *a = o->todo[i].a;
        char line[8192];
        command_line(&o->todo[i], o->graceful, line, sizeof line);
        char *reply;
        size_t len;
        if (gmc_admin(c, line, a->list, &reply, &len) < 0) {
            fprintf(stderr, "Error: %s\n", c->err);
            status = 1;
            break;
        }
        if (!print_reply(reply, len))
            status = 1;
        free(reply);
    }
    return status;
}

/* Connects c to the server of -h and -p (with TLS for -S).  Returns 0, or
   -1 after printing why not (c is then freed). */
static int
open_connection(struct gmc *c, const struct admin_opts *o)
{
    gmc_init(c);
    c->timeout_ms = o->timeout;
    char server[320];
    snprintf(server, sizeof server, strchr(o->host, ':') && o->host[0] != '[' ? "[%s]:%s" : "%s:%s", o->host,
             o->port);
    if (gmc_add_servers(c, server, o->port) < 0 ||
        (o->ssl && gmc_use_tls(c, o->ssl_ca_file, o->ssl_certificate, o->ssl_key) < 0) || gmc_connect(c) < 0) {
        fprintf(stderr, "Error: %s\n", c->err);
        gmc_free(c);
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a TLS session writes with write(): a closed socket is an error, not a signal */
    struct admin_opts o = {.host = "localhost", .port = "4730", .timeout = 10000};
    int r = parse(argc, argv, &o);
    if (r != 0)
        return r > 0 ? 0 : 1;
    struct gmc c;
    if (open_connection(&c, &o) < 0)
        return 1;
    int status = run_commands(&c, &o);
    fflush(stdout);
    gmc_free(&c);
    return status;
}
