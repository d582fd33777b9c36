/*
 * options.h: gearmand's command line and config file.
 *
 * One table describes every option of gearmand 1.1.20 (same long and short
 * names, same defaults) plus ours; the same parser reads the command line
 * and the config file's tokens, and the same table prints --help.  Main
 * thread only, before any other thread starts.
 */
#ifndef GM_OPTIONS_H
#define GM_OPTIONS_H

#include <stdbool.h>
#include <stdio.h>

#include "libgearman-server/config/server_config.h"

#define GM_OPT_SLOTS 96

struct gm_options {
    struct gm_server_config server;

    /* general */
    bool daemon;
    bool help;
    bool version;
    bool check_args;
    bool syslog;
    bool coredump;
    long file_descriptors;      /* -1: leave the limit alone */
    const char *log_file;
    const char *pid_file;
    const char *user;
    const char *protocol;       /* -r */
    const char *queue_type;     /* -q */
    const char *config_file;
    int verbose;                /* enum gm_log_level */
    unsigned http_port;
    bool http_remote_actions;
    const char *http_hosts;     /* --http-host */

    /* queue plugins (the names gearmand uses) */
    const char *libsqlite3_db;
    const char *libsqlite3_table;
    bool store_queue_on_shutdown;
    const char *libpq_conninfo;
    const char *libpq_table;
    const char *libmemcached_servers;
    const char *libmemcached_prefix;
    const char *redis_server, *redis_port, *redis_password, *redis_prefix;
    const char *mysql_host, *mysql_user, *mysql_password, *mysql_db, *mysql_table;
    unsigned mysql_port;
    const char *mysql_socket;   /* --libdrizzle-uds */
    bool libdrizzle_mysql;      /* --libdrizzle-mysql: accepted, always so */
    const char *libtokyocabinet_file, *libtokyocabinet_optimize;

    /* bookkeeping */
    bool set[GM_OPT_SLOTS];     /* which options were given (by table index) */
    char *owned[GM_OPT_SLOTS];  /* strings allocated for option values */
};

/* Fills o with the defaults. */
void gm_options_defaults(struct gm_options *o);

/* Parses argv (argv[0] is the program).  Returns 0, or -1 after printing
   "<prog>: <reason>" on err. */
int gm_options_parse_argv(struct gm_options *o, int argc, char **argv, FILE *err);

/* Reads the config file named by --config-file (or the default): tokens
   separated by white space, `#` to the end of a line is a comment; options
   given on the command line win.  A missing default file is fine; a missing
   named file is an error.  Returns 0, or -1 after printing the reason. */
int gm_options_read_config(struct gm_options *o, const char *prog, FILE *err);

/* Checks values that depend on each other; returns 0 or -1 after printing. */
int gm_options_validate(struct gm_options *o, const char *prog, FILE *err);

/* Returns true if the option (long name) was given on the command line or
   in the config file. */
bool gm_options_given(const struct gm_options *o, const char *name);

/* Prints --help. */
void gm_options_help(FILE *out);

/* Frees the strings the options own. */
void gm_options_free(struct gm_options *o);

#endif /* GM_OPTIONS_H */
