/*
 * options.c: the option table, the parser for the command line and the
 * config file, and --help (see options.h).  Main thread only.
 */
#include "config.h"

#include "gearmand/options.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/config/policy.h"
#include "libgearman-server/proto/protocol.h"

#ifndef GM_LOCALSTATEDIR
#define GM_LOCALSTATEDIR "/var"
#endif
#ifndef GM_SYSCONFDIR
#define GM_SYSCONFDIR "/etc"
#endif

#define DEFAULT_LOG_FILE GM_LOCALSTATEDIR "/log/gearmand.log"
#define DEFAULT_PID_FILE GM_LOCALSTATEDIR "/run/gearmand.pid"
#define DEFAULT_CONFIG_FILE GM_SYSCONFDIR "/gearmand.conf"

enum opt_kind {
    K_FLAG,    /* bool */
    K_STR,     /* const char * */
    K_INT,     /* int within [min, max] */
    K_UINT,    /* unsigned within [min, max] */
    K_U32,     /* uint32_t within [min, max] */
    K_LONG,    /* long within [min, max] */
    K_VERBOSE, /* int: a log level name */
    K_PREFIX,  /* the job handle prefix (char array) */
    K_POLICY   /* --policy: repeatable, appended to server.policy_specs */
};

struct opt {
    const char *name;      /* long name, without "--" */
    char short_name;       /* 0 if none */
    uint8_t kind;
    const char *section;   /* heading in --help */
    const char *shown_default; /* "(=32)" in --help, or NULL */
    size_t offset;         /* field in struct gm_options */
    long min, max;
    const char *help;
};

#define O(f) offsetof(struct gm_options, f)

static const struct opt table[] = {
    {"backlog", 'b', K_INT, "General", "32", O(server.backlog), 1, INT_MAX,
     "Number of backlog connections for listen."},
    {"busy-poll", 0, K_UINT, "General", "200", O(server.busy_poll_us), 0, 100000,
     "Microseconds an I/O or dispatcher thread keeps polling, instead of sleeping, "
     "after activity: the most it waits for the next packet awake (the window adapts "
     "to the traffic and closes when packets are far apart; polling yields to any "
     "thread that needs the CPU). 0 turns busy polling off."},
    {"daemon", 'd', K_FLAG, "General", NULL, O(daemon), 0, 0,
     "Daemon, detach and run in the background."},
    {"exceptions", 0, K_FLAG, "General", NULL, O(server.exceptions), 0, 0,
     "Enable protocol exceptions by default."},
    {"file-descriptors", 'f', K_LONG, "General", NULL, O(file_descriptors), 1, LONG_MAX,
     "Number of file descriptors to allow for the process (total connections will be slightly "
     "less). Default is max allowed for user."},
    {"help", 'h', K_FLAG, "General", NULL, O(help), 0, 0, "Print this help menu."},
    {"job-retries", 'j', K_UINT, "General", "0", O(server.job_retries), -1, 255,
     "Number of attempts to run the job before the job server removes it. This is helpful to "
     "ensure a bad job does not crash all available workers. Default is no limit (0; -1 is "
     "read as 0)."},
    {"job-handle-prefix", 0, K_PREFIX, "General", NULL, 0, 1, GM_PREFIX_MAX,
     "Prefix used to generate a job handle string. If not provided, the default "
     "\"H:<host_name>\" is used."},
    {"hashtable-buckets", 0, K_U32, "General", "991", O(server.hashtable_buckets), 1, 1 << 30,
     "Initial number of buckets in the job handle and unique key indexes; they grow as jobs "
     "are added, so this only saves rehashing for very large queues."},
    {"keepalive", 0, K_FLAG, "General", NULL, O(server.keepalive), 0, 0,
     "Enable keepalive on sockets."},
    {"keepalive-idle", 0, K_INT, "General", "-1", O(server.keepalive_idle), -1, INT_MAX,
     "If keepalive is enabled, set the value for TCP_KEEPIDLE. -1 keeps the system default."},
    {"keepalive-interval", 0, K_INT, "General", "-1", O(server.keepalive_interval), -1, INT_MAX,
     "If keepalive is enabled, set the value for TCP_KEEPINTVL. -1 keeps the system default."},
    {"keepalive-count", 0, K_INT, "General", "-1", O(server.keepalive_count), -1, INT_MAX,
     "If keepalive is enabled, set the value for TCP_KEEPCNT. -1 keeps the system default."},
    {"log-file", 'l', K_STR, "General", DEFAULT_LOG_FILE, O(log_file), 0, 0,
     "Log file to write errors and information to. If the log-file parameter is specified as "
     "'stderr', then output will go to stderr. If 'none', then no logfile will be generated."},
    {"listen", 'L', K_STR, "General", NULL, O(server.listen_host), 0, 0,
     "Address the server should listen on. Default is INADDR_ANY."},
    {"pid-file", 'P', K_STR, "General", DEFAULT_PID_FILE, O(pid_file), 0, 0,
     "File to write process ID out to."},
    {"protocol", 'r', K_STR, "General", NULL, O(protocol), 0, 0,
     "Load protocol module: http (job submission, web monitor, JSON, /metrics and /health on "
     "--http-port)."},
    {"round-robin", 'R', K_FLAG, "General", NULL, O(server.round_robin), 0, 0,
     "Assign work in round-robin order per worker connection. (Always on here: a worker's "
     "functions take turns at each priority.)"},
    {"queue-type", 'q', K_STR, "General", "builtin", O(queue_type), 0, 0,
     "Persistent queue type to use: builtin (memory only), libsqlite3, Postgres, MySQL "
     "(also libdrizzle), redis, libtokyocabinet or libmemcached (the last is not durable)."},
    {"config-file", 0, K_STR, "General", DEFAULT_CONFIG_FILE, O(config_file), 0, 0,
     "Configuration file: the same options as the command line, one or more per line, '#' "
     "starts a comment. The command line wins."},
    {"syslog", 0, K_FLAG, "General", NULL, O(syslog), 0, 0, "Use syslog."},
    {"coredump", 0, K_FLAG, "General", NULL, O(coredump), 0, 0,
     "Whether to create a core dump for uncaught signals."},
    {"reply-batch", 0, K_UINT, "General", "1000", O(server.reply_batch_us), 0, 100000,
     "Microseconds a reply to a client with other jobs in flight may wait, while the "
     "server stays busy, to be written together with the next ones (fewer writes and "
     "wake-ups under load; nothing waits when the server has nothing else to do). Needs "
     "--busy-poll. 0 writes every reply at once."},
    {"threads", 't', K_UINT, "General", "0", O(server.io_threads), 0, 255,
     "Number of I/O threads to use; 0 (the default) means one per CPU besides the "
     "dispatcher's (CPUs - 1), and one on 1-2 CPUs. With one, that thread hosts the "
     "dispatcher instead of a thread of its own (hosted mode)."},
    {"user", 'u', K_STR, "General", NULL, O(user), 0, 0,
     "Switch to given user after startup."},
    {"verbose", 0, K_VERBOSE, "General", "ERROR", O(verbose), 0, 0,
     "Set verbose level (FATAL, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG)."},
    {"version", 'V', K_FLAG, "General", NULL, O(version), 0, 0,
     "Display the version of gearmand and exit."},
    {"worker-wakeup", 'w', K_UINT, "General", "0", O(server.worker_wakeup), 0, 255,
     "Number of workers to wakeup for each job received. The default is to wakeup all "
     "available workers."},
    {"max-packet-size", 0, K_U32, "General", "67108864", O(server.max_packet_size), 1024,
     GM_MAX_PACKET_LIMIT,
     "Largest packet payload accepted, in bytes (1024 to 1073741824, 1 GiB); a bigger packet "
     "gets an ERROR and its connection is closed."},
    {"max-output-size", 0, K_U32, "General", "67108864", O(server.max_output), 1 << 20, UINT32_MAX,
     "Most unsent output, in bytes, a client that does not read may leave queued besides one "
     "reply (1048576 to 4294967295): such a client is no longer read from once 4 MiB wait (its "
     "requests wait in its socket), and at this limit it is closed and the log says so.  Also the "
     "most an HTTP job's result may hold (or --max-packet-size if larger): past it the request "
     "gets 502; and the most an HTTP page (/metrics, /api/...) may hold: its list is cut there."},
    {"packet-timeout", 0, K_UINT, "General", "300", O(server.packet_timeout_s), 0, 86400,
     "Seconds a packet begun but not complete may go without a byte before its connection is "
     "closed (0: no limit). Between packets there is no limit: idle workers are normal."},
    {"queue-batch-size", 0, K_U32, "General", "4096", O(server.queue_batch_max), 1, 1 << 20,
     "Most background-job records (adds and completions) written to the durable queue in one "
     "transaction."},
    {"queue-batch-delay", 0, K_U32, "General", "0", O(server.queue_batch_delay_ms), 0, 10000,
     "Milliseconds to wait for more records before committing a batch to the durable queue "
     "(0: commit as soon as the previous commit is done)."},
    {"check-args", 0, K_FLAG, NULL, NULL, O(check_args), 0, 0, NULL},

    {"http-port", 0, K_UINT, "HTTP", "8080", O(http_port), 0, 65535, "Port to listen on."},
    {"http-timeout", 0, K_UINT, "HTTP", "30", O(server.http_timeout_s), 0, 86400,
     "Seconds an HTTP connection may take to send a complete request, counted from its "
     "accept or its previous response (0: no limit); past it the connection is closed."},
    {"http-allow-remote-actions", 0, K_FLAG, "HTTP", NULL, O(http_remote_actions), 0, 0,
     "Accept state-changing requests (cancelling a job) from other hosts too; by default only "
     "from this host."},
    {"http-host", 0, K_STR, "HTTP", NULL, O(http_hosts), 0, 0,
     "Other names of this server, comma-separated, that a request's Host header may give "
     "besides localhost, the host name, the --listen address and any IP address ('*': any "
     "name). A request for another name gets 403 (a defence against DNS rebinding)."},

    {"policy", 0, K_POLICY, "Job lifecycle", NULL, 0, 0, 0,
     "FUNCTION:key=value[,key=value...]: the function's lifecycle policy, repeatable (one per "
     "function; also `policy` on the admin port). Keys: retries (a failed background job is "
     "handed out again at most N more times, 0-254), backoff (ms before the first retry, "
     "doubling after each, default 1000), max_backoff (ms, default 300000), timeout (seconds an "
     "attempt may run, 0 = no limit), concurrency (most of its jobs running at once, 0 = no "
     "limit). Any policy keeps the background jobs whose last attempt failed as dead letters."},
    {"dead-letter-max", 0, K_U32, "Job lifecycle", "10000", O(server.dead_letter_max), 0, 10000000,
     "Dead letters kept (background jobs whose last attempt failed, on functions with a "
     "policy); past it the oldest are dropped, and counted."},
    {"keep-results", 0, K_U32, "Job lifecycle", "300", O(server.keep_results_s), 0, 31536000,
     "Seconds a finished background job's outcome (complete or failed, its attempts, the start "
     "of its result) stays readable by its handle (`show job`, /api/jobs/HANDLE); 0 keeps none. "
     "64 MiB of outcomes at most: past it the oldest go first."},
    {"keep-results-bytes", 0, K_U32, "Job lifecycle", "4096", O(server.keep_results_bytes), 0, 1048576,
     "Most bytes of a finished job's result kept with its outcome."},

    {"port", 'p', K_STR, "Gear", "4730", O(server.port), 0, 0,
     "Port the server should listen on."},
    {"ssl", 0, K_FLAG, "Gear", NULL, O(server.ssl), 0, 0,
     "Speak only TLS (1.2 and newer) on the Gear port and the HTTP port; needs a build with "
     "OpenSSL. The files are read at start and again on SIGHUP."},
    {"ssl-ca-file", 0, K_STR, "Gear", NULL, O(server.ssl_ca_file), 0, 0,
     "CA file (PEM): a client certificate signed by it is verified and names the connection "
     "cn:NAME. Default $GEARMAND_CA_CERTIFICATE, else " GM_SSL_DEFAULT_DIR "/gearmand-ca.pem if it "
     "exists (else no client certificate is asked for)."},
    {"ssl-certificate", 0, K_STR, "Gear", NULL, O(server.ssl_certificate), 0, 0,
     "The server's certificate (PEM, chain allowed). Default $GEARMAND_SERVER_PEM, else "
     GM_SSL_DEFAULT_DIR "/gearmand.pem."},
    {"ssl-key", 0, K_STR, "Gear", NULL, O(server.ssl_key), 0, 0,
     "The certificate's private key (PEM). Default $GEARMAND_SERVER_KEY, else "
     GM_SSL_DEFAULT_DIR "/gearmand.key."},
    {"ssl-verify-client", 0, K_FLAG, "Gear", NULL, O(server.ssl_verify_client), 0, 0,
     "Require a client certificate signed by the CA (without it one is asked for and verified "
     "when offered)."},
    {"ssl-handshake-timeout", 0, K_UINT, "Gear", "10", O(server.ssl_handshake_timeout_s), 1, 3600,
     "Seconds a connection may take to finish its TLS handshake; past it it is closed."},
    {"acl-file", 0, K_STR, "Access control", NULL, O(server.acl_file), 0, 0,
     "Lines `IDENTITY PERMISSION FUNCTION-PATTERN` (docs/security.md): who may submit, work, "
     "read the admin views, or administer. With it anything not granted is denied. Reloaded on "
     "SIGHUP."},
    {"http-token-file", 0, K_STR, "Access control", NULL, O(server.http_token_file), 0, 0,
     "Lines `NAME TOKEN`: an HTTP request with `Authorization: Bearer TOKEN` has the identity "
     "token:NAME. Reloaded on SIGHUP."},

    {"libmemcached-servers", 0, K_STR, "libmemcached", NULL, O(libmemcached_servers), 0, 0,
     "List of Memcached servers to use."},
    {"libmemcached-prefix", 0, K_STR, "libmemcached", "gear_", O(libmemcached_prefix), 0, 0,
     "Prefix to use in memcached keys"},

    {"libsqlite3-db", 0, K_STR, "libsqlite3", NULL, O(libsqlite3_db), 0, 0,
     "Database file to use."},
    {"store-queue-on-shutdown", 0, K_FLAG, "libsqlite3", NULL, O(store_queue_on_shutdown), 0, 0,
     "Store queue on shutdown."},
    {"libsqlite3-table", 0, K_STR, "libsqlite3", "gearman_queue", O(libsqlite3_table), 0, 0,
     "Table to use."},

    {"libpq-conninfo", 0, K_STR, "Postgres", NULL, O(libpq_conninfo), 0, 0,
     "PostgreSQL connection information string."},
    {"libpq-table", 0, K_STR, "Postgres", "queue", O(libpq_table), 0, 0, "Table to use."},
    {"ha", 0, K_FLAG, "Postgres", NULL, O(server.ha), 0, 0,
     "Active/standby (docs/ha.md): every server with this conninfo and table takes part; the "
     "one holding the table's PostgreSQL advisory lock is active (replays the queue, opens the "
     "Gear port), the others wait with the Gear port closed and take over when it is free."},
    {"ha-timeout", 0, K_UINT, "Postgres", "5", O(server.ha_timeout_s), 1, 3600,
     "With --ha: seconds after which an active server that cannot reach PostgreSQL stops "
     "serving (closes the Gear port and its connections); also its connection's keepalive and "
     "tcp_user_timeout bound."},

    /* no defaults shown, as in gearmand 1.1.20; plugins/queue/redis.c has them */
    {"redis-server", 0, K_STR, "redis", NULL, O(redis_server), 0, 0,
     "Redis server (127.0.0.1 if not given; a path starting with / is its Unix socket)"},
    {"redis-port", 0, K_STR, "redis", NULL, O(redis_port), 0, 0,
     "Redis server port/service (6379 if not given)"},
    {"redis-password", 0, K_STR, "redis", NULL, O(redis_password), 0, 0,
     "Redis server password (AUTH)"},
    {"redis-prefix", 0, K_STR, "redis", NULL, O(redis_prefix), 0, 0,
     "Prefix to use in redis keys (_gear_ if not given)"},

    {"mysql-host", 0, K_STR, "MySQL", "localhost", O(mysql_host), 0, 0,
     "MySQL host (localhost: the server's Unix socket)."},
    {"mysql-port", 0, K_UINT, "MySQL", "3306", O(mysql_port), 1, 65535,
     "Port of server. (by default 3306)"},
    {"mysql-user", 0, K_STR, "MySQL", NULL, O(mysql_user), 0, 0, "MySQL user."},
    {"mysql-password", 0, K_STR, "MySQL", NULL, O(mysql_password), 0, 0, "MySQL user password."},
    {"mysql-db", 0, K_STR, "MySQL", NULL, O(mysql_db), 0, 0, "MySQL database (required)."},
    {"mysql-table", 0, K_STR, "MySQL", "gearman_queue", O(mysql_table), 0, 0,
     "MySQL table name."},
    /* gearmand's libdrizzle plugin spoke to MySQL too: its spellings set
       the same settings (-q libdrizzle is -q MySQL) */
    {"libdrizzle-host", 0, K_STR, "libdrizzle", NULL, O(mysql_host), 0, 0, "Same as --mysql-host."},
    {"libdrizzle-port", 0, K_UINT, "libdrizzle", NULL, O(mysql_port), 1, 65535, "Same as --mysql-port."},
    {"libdrizzle-uds", 0, K_STR, "libdrizzle", NULL, O(mysql_socket), 0, 0,
     "Unix socket of the MySQL server (instead of --mysql-host/--mysql-port)."},
    {"libdrizzle-user", 0, K_STR, "libdrizzle", NULL, O(mysql_user), 0, 0, "Same as --mysql-user."},
    {"libdrizzle-password", 0, K_STR, "libdrizzle", NULL, O(mysql_password), 0, 0,
     "Same as --mysql-password."},
    {"libdrizzle-db", 0, K_STR, "libdrizzle", NULL, O(mysql_db), 0, 0, "Same as --mysql-db."},
    {"libdrizzle-table", 0, K_STR, "libdrizzle", NULL, O(mysql_table), 0, 0,
     "Same as --mysql-table (whose default, gearman_queue, applies: gearmand's libdrizzle "
     "used `queue`)."},
    {"libdrizzle-mysql", 0, K_FLAG, "libdrizzle", NULL, O(libdrizzle_mysql), 0, 0,
     "Use the MySQL protocol (always so here)."},

    {"libtokyocabinet-file", 0, K_STR, "libtokyocabinet", NULL, O(libtokyocabinet_file), 0, 0,
     "File name of the database: a hash (.tch) or B+ tree (.tcb) file, tuning parameters after "
     "'#' as tcadbopen() takes them (e.g. queue.tch#bnum=1000000#opts=l)."},
    {"libtokyocabinet-optimize", 0, K_STR, "libtokyocabinet", "true", O(libtokyocabinet_optimize), 0, 0,
     "Optimize database on open (true or false)."},
};

#define NOPTS (sizeof table / sizeof table[0])
_Static_assert(sizeof table / sizeof table[0] <= GM_OPT_SLOTS, "raise GM_OPT_SLOTS");

void
gm_options_defaults(struct gm_options *o)
{
    memset(o, 0, sizeof *o);
    gm_server_config_defaults(&o->server);
    o->server.version = PACKAGE_VERSION;
    o->file_descriptors = -1;
    o->log_file = DEFAULT_LOG_FILE;
    o->pid_file = DEFAULT_PID_FILE;
    o->queue_type = "builtin";
    o->config_file = DEFAULT_CONFIG_FILE;
    o->verbose = GM_LOG_ERROR;
    o->http_port = 8080;
    o->libsqlite3_table = "gearman_queue";
    o->libpq_table = "queue";
    o->libmemcached_prefix = "gear_";
    o->mysql_host = "localhost";
    o->mysql_port = 3306;
    o->mysql_table = "gearman_queue";
    o->libtokyocabinet_optimize = "true";
}

void
gm_options_free(struct gm_options *o)
{
    for (size_t i = 0; i < GM_OPT_SLOTS; i++) {
        free(o->owned[i]);
        o->owned[i] = NULL;
    }
    for (unsigned i = 0; i < o->server.npolicy_specs; i++)
        free((char *)o->server.policy_specs[i]);
    o->server.npolicy_specs = 0;
}

static const struct opt *
find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return &table[i];
    return NULL;
}

static const struct opt *
find_short(char c)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (table[i].short_name == c)
            return &table[i];
    return NULL;
}

static bool
parse_long(const char *v, long min, long max, long *out)
{
    if (!*v || isspace((unsigned char)*v))
        return false;
    errno = 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < min || x > max)
        return false;
    *out = x;
    return true;
}

/* Stores value into the option's field; returns false for a bad value. */
static bool
apply(struct gm_options *o, const struct opt *opt, const char *value)
{
    void *field = (char *)o + opt->offset;
    long v;
    size_t idx = (size_t)(opt - table);
    switch (opt->kind) {
    case K_FLAG:
        *(bool *)field = true;
        return true;
    case K_STR: {
        char *copy = strdup(value);
        if (!copy)
            return false;
        free(o->owned[idx]);
        o->owned[idx] = copy;
        *(const char **)field = copy;
        return true;
    }
    case K_INT:
        if (!parse_long(value, opt->min, opt->max, &v))
            return false;
        *(int *)field = (int)v;
        return true;
    case K_UINT:
        if (!parse_long(value, opt->min, opt->max, &v))
            return false;
        *(unsigned *)field = v < 0 ? 0 : (unsigned)v; /* -j -1: gearmand 2.x's "no limit" */
        return true;
    case K_U32:
        if (!parse_long(value, opt->min, opt->max, &v))
            return false;
        *(uint32_t *)field = (uint32_t)v;
        return true;
    case K_LONG:
        if (!parse_long(value, opt->min, opt->max, &v))
            return false;
        *(long *)field = v;
        return true;
    case K_VERBOSE: {
        int level = gm_log_level_parse(value);
        if (level < 0)
            return false;
        *(int *)field = level;
        return true;
    }
    case K_POLICY: {
        struct gm_server_config *c = &o->server;
        const char *name;
        size_t name_len;
        struct gm_policy_values pv;
        gm_policy_defaults(&pv);
        if (c->npolicy_specs >= GM_POLICY_SPECS_MAX || gm_policy_parse_spec(value, &name, &name_len, &pv) ||
            gm_name_check(GM_NAME_FUNCTION, name, name_len))
            return false;
        char *copy = strdup(value);
        if (!copy)
            return false;
        c->policy_specs[c->npolicy_specs++] = copy;
        return true;
    }
    case K_PREFIX: {
        size_t len = strlen(value);
        if (len < (size_t)opt->min || len > (size_t)opt->max || strchr(value, '\0') != value + len)
            return false;
        memcpy(o->server.handle_prefix, value, len + 1);
        return true;
    }
    }
    return false;
}

static void
report(FILE *err, const char *prog, const char *fmt, const char *a, const char *b)
{
    fprintf(err, "%s: ", prog);
    fprintf(err, fmt, a, b);
    fputc('\n', err);
}

/* Parses one token list (the command line, or the config file's tokens).
   from_file: options already given are skipped instead of refused, and
   stray words are ignored with a warning, as gearmand does. */
static int
parse_tokens(struct gm_options *o, int n, char **tok, const char *prog, FILE *err, bool from_file)
{
    bool seen[GM_OPT_SLOTS] = {false};
    for (int i = 0; i < n; i++) {
        const char *a = tok[i];
        const struct opt *opt = NULL;
        const char *value = NULL;
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            opt = find_long(a + 2, len);
            if (eq)
                value = eq + 1;
        } else if (a[0] == '-' && a[1] && a[1] != '-') {
            opt = find_short(a[1]);
            if (opt && a[2])
                value = a[2] == '=' ? a + 3 : a + 2;
        } else {
            if (from_file) {
                fprintf(err, "%s: ignoring '%s' in the config file (not an option)\n", prog, a);
                continue;
            }
            report(err, prog, "unrecognised option '%s'%s", a, "");
            return -1;
        }
        if (!opt) {
            report(err, prog, "unrecognised option '%s'%s", a, "");
            return -1;
        }
        char longname[64];
        snprintf(longname, sizeof longname, "--%s", opt->name);
        if (opt->kind == K_FLAG) {
            if (value && a[1] != '-') {
                /* grouped short flags: -dR */
                for (const char *c = a + 1; *c; c++) {
                    const struct opt *f = find_short(*c);
                    if (!f || f->kind != K_FLAG) {
                        report(err, prog, "unrecognised option '%s'%s", a, "");
                        return -1;
                    }
                    size_t fi = (size_t)(f - table);
                    if (!(from_file && o->set[fi]))
                        apply(o, f, NULL);
                    seen[fi] = o->set[fi] = true;
                }
                continue;
            }
            if (value) {
                report(err, prog, "option '%s' does not take any arguments%s", longname, "");
                return -1;
            }
        } else if (!value) {
            /* The next token is the value, unless it is itself an option
               ("-d", "--daemon"; "-1" is a value). */
            const char *next = i + 1 < n ? tok[i + 1] : NULL;
            bool next_is_option = next && next[0] == '-' &&
                                  (next[1] == '-' || (next[1] && !isdigit((unsigned char)next[1])));
            if (!next || next_is_option) {
                report(err, prog, "the required argument for option '%s' is missing%s", longname, "");
                return -1;
            }
            value = tok[++i];
        }
        size_t idx = (size_t)(opt - table);
        if (seen[idx] && opt->kind != K_POLICY) {
            report(err, prog, "option '%s' cannot be specified more than once%s", longname, "");
            return -1;
        }
        seen[idx] = true;
        if (from_file && o->set[idx])
            continue; /* the command line wins */
        if (!apply(o, opt, value)) {
            if (opt->kind == K_VERBOSE)
                report(err, prog, "Invalid value for --verbose supplied%s%s", "", "");
            else
                report(err, prog, "the argument ('%s') for option '%s' is invalid", value, longname);
            return -1;
        }
        o->set[idx] = true;
    }
    return 0;
}

int
gm_options_parse_argv(struct gm_options *o, int argc, char **argv, FILE *err)
{
    return parse_tokens(o, argc - 1, argv + 1, argv[0], err, false);
}

int
gm_options_read_config(struct gm_options *o, const char *prog, FILE *err)
{
    size_t idx = (size_t)(find_long("config-file", 11) - table);
    bool named = o->set[idx];
    FILE *f = fopen(o->config_file, "r");
    if (!f) {
        if (!named && errno == ENOENT)
            return 0;
        if (!named && errno == EACCES)
            return 0;
        fprintf(err, "%s: Could not open configuration file: %s: %s\n", prog, o->config_file,
                strerror(errno));
        return -1;
    }
    char **tok = NULL;
    int ntok = 0, cap = 0, rc = 0;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        for (char *save = NULL, *t = strtok_r(line, " \t\r\n", &save); t;
             t = strtok_r(NULL, " \t\r\n", &save)) {
            if (ntok == cap) {
                cap = cap ? cap * 2 : 16;
                char **nt = realloc(tok, (size_t)cap * sizeof *nt);
                if (!nt) {
                    rc = -1;
                    goto out;
                }
                tok = nt;
            }
            if (!(tok[ntok] = strdup(t))) {
                rc = -1;
                goto out;
            }
            ntok++;
        }
    }
    rc = parse_tokens(o, ntok, tok, prog, err, true);
out:
    if (rc < 0 && ntok == 0)
        fprintf(err, "%s: out of memory reading %s\n", prog, o->config_file);
    for (int i = 0; i < ntok; i++)
        free(tok[i]);
    free(tok);
    fclose(f);
    return rc;
}

int
gm_options_validate(struct gm_options *o, const char *prog, FILE *err)
{
    if (o->server.hashtable_buckets == 0) {
        fprintf(err, "%s: hashtable-buckets has to be greater than 0\n", prog);
        return -1;
    }
    return 0;
}

bool
gm_options_given(const struct gm_options *o, const char *name)
{
    const struct opt *opt = find_long(name, strlen(name));
    return opt && o->set[opt - table];
}

/* Prints text wrapped to the help's right column. */
static void
print_wrapped(FILE *out, const char *text, int col, int width)
{
    int pos = col;
    const char *p = text;
    while (*p) {
        const char *sp = strchr(p, ' ');
        int len = sp ? (int)(sp - p) : (int)strlen(p);
        if (pos > col && pos + 1 + len > width) {
            fprintf(out, "\n%*s", col, "");
            pos = col;
        }
        if (pos > col) {
            fputc(' ', out);
            pos++;
        }
        fwrite(p, 1, (size_t)len, out);
        pos += len;
        p += len;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

void
gm_options_help(FILE *out)
{
    const char *section = NULL;
    fprintf(out, "Usage: gearmand [OPTION]...\n\nAllowed options:\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *opt = &table[i];
        if (!opt->help)
            continue;
        if (!section || strcmp(section, opt->section) != 0) {
            section = opt->section;
            fprintf(out, "\n%s%s:\n", section, strcmp(section, "General") == 0 ? " options" : "");
        }
        char left[128];
        int n;
        if (opt->short_name)
            n = snprintf(left, sizeof left, "  -%c [ --%s ]", opt->short_name, opt->name);
        else
            n = snprintf(left, sizeof left, "  --%s", opt->name);
        if (opt->kind != K_FLAG)
            n += snprintf(left + n, sizeof left - (size_t)n, " arg");
        if (opt->shown_default)
            snprintf(left + n, sizeof left - (size_t)n, " (=%s)", opt->shown_default);
        const int col = 40;
        fputs(left, out);
        if ((int)strlen(left) >= col - 1)
            fprintf(out, "\n%*s", col, "");
        else
            fprintf(out, "%*s", col - (int)strlen(left), "");
        print_wrapped(out, opt->help, col, 79);
    }
    fputc('\n', out);
}
