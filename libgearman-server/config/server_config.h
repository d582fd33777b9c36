/*
 * server_config.h: the settings the core server runs with.
 *
 * Filled by gearmand/ from the command line and config file (or by tests),
 * then read-only for the life of the server: every thread may read it
 * without synchronisation because it is written before any thread starts.
 */
#ifndef GM_SERVER_CONFIG_H
#define GM_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/proto/frontend.h"
#include "libgearman-server/persist/queue_backend.h"
#include "libgearman-server/config/policy.h"

#define GM_DEFAULT_PORT "4730"
#define GM_DEFAULT_MAX_PACKET (64u << 20)
/* The largest --max-packet-size: sizes made from a payload (a reply that
   adds a handle, a function name and a unique key; an HTTP head and its
   body) then stay far below 4 GiB, so 32-bit sizes cannot wrap. */
#define GM_MAX_PACKET_LIMIT (1u << 30)
#define GM_DEFAULT_MAX_OUTPUT (64u << 20)
/* Unsent output over which a connection is no longer read from (resumed
   below half of it), and the most listing bytes the dispatcher queues for
   one connection before its I/O thread has taken them; at most half of
   max_output (gm_server_config_output_soft). */
#define GM_OUTPUT_SOFT_LIMIT (4u << 20)
#define GM_DEFAULT_PACKET_TIMEOUT 300u
#define GM_DEFAULT_HTTP_TIMEOUT 30u
#define GM_DEFAULT_DEAD_LETTER_MAX 10000u
#define GM_DEFAULT_BUCKETS 991
#define GM_DEFAULT_BUSY_POLL_US 200u /* as the kernel's guest halt-polling default */
#define GM_DEFAULT_REPLY_BATCH_US 1000u
#define GM_PREFIX_MAX 40
#define GM_DEFAULT_SSL_HANDSHAKE_TIMEOUT 10u
/* Where gearmand looks for its TLS files when no option or variable names them. */
#define GM_SSL_DEFAULT_DIR GM_SYSCONFDIR "/ssl/certs"

struct gm_server_config {
    const char *listen_host;      /* -L; NULL = every address */
    const char *port;             /* -p */
    int backlog;                  /* -b */
    unsigned io_threads;          /* -t; 0 = one per CPU counting the dispatcher */
    unsigned busy_poll_us;        /* --busy-poll: longest polling window after activity; 0 = off */
    unsigned reply_batch_us;      /* --reply-batch: longest a reply to a pipelining client waits; 0 = off */
    uint32_t max_packet_size;     /* --max-packet-size: largest payload accepted */
    uint32_t max_output;          /* --max-output-size: unsent bytes (besides one reply) that close a connection */
    uint32_t output_soft;         /* unsent bytes that pause reading; 0 = GM_OUTPUT_SOFT_LIMIT (no option:
                                     the unit tests set it to reach max_output) */
    unsigned packet_timeout_s;    /* --packet-timeout: an incomplete packet with no byte for this long closes; 0 = none */
    unsigned http_timeout_s;      /* --http-timeout: an HTTP request not complete this long after the
                                     connection was ready for it closes; 0 = none */
    unsigned job_retries;         /* -j: attempts before a job fails; 0 = unlimited */
    /* --policy FUNC:key=value,... (config/policy.h), validated, in the order given */
    const char *policy_specs[GM_POLICY_SPECS_MAX];
    unsigned npolicy_specs;
    uint32_t dead_letter_max;     /* --dead-letter-max: dead letters kept; the oldest go first */
    uint32_t keep_results_s;      /* --keep-results: a finished background job's outcome is kept this long; 0 = off */
    uint32_t keep_results_bytes;  /* --keep-results-bytes: most of its result kept */
    unsigned worker_wakeup;       /* -w: NOOPs per new job; 0 = every sleeping worker */
    bool round_robin;             /* -R: accepted; functions always take turns here */
    bool exceptions;              /* --exceptions: every connection gets WORK_EXCEPTION */
    uint32_t hashtable_buckets;   /* --hashtable-buckets: initial index size */
    char handle_prefix[GM_PREFIX_MAX + 1]; /* "H:<nodename>" or --job-handle-prefix */
    bool keepalive;               /* --keepalive on the listening socket */
    int keepalive_idle, keepalive_interval, keepalive_count; /* -1 = system default */
    const char *version;          /* reported by `version` and -V */

    /* durable queue (-q); NULL = memory only, gearmand's "builtin" */
    const struct gm_queue_backend *queue;
    struct gm_queue_options queue_opts;
    uint32_t queue_batch_max;     /* --queue-batch-size: records per transaction */
    uint32_t queue_batch_delay_ms;/* --queue-batch-delay: wait for more before committing */
    bool ha;                      /* --ha: active/standby on a shared queue (queue->lead) */
    unsigned ha_timeout_s;        /* --ha-timeout: the fencing bound */

    /* a second protocol on its own port (-r http); NULL = none */
    const struct gm_frontend *frontend;
    const char *frontend_port;    /* --http-port */
    bool frontend_remote_actions; /* --http-allow-remote-actions */

    /* TLS (--ssl): both ports speak only TLS.  The files are read by the
       main thread at start and on SIGHUP (config/tls_ctx.h). */
    bool ssl;
    const char *ssl_ca_file;      /* --ssl-ca-file; NULL: no client certificate asked for */
    const char *ssl_certificate;  /* --ssl-certificate */
    const char *ssl_key;          /* --ssl-key */
    bool ssl_verify_client;       /* --ssl-verify-client: a client certificate is required */
    unsigned ssl_handshake_timeout_s; /* --ssl-handshake-timeout */

    /* Access control (docs/security.md); NULL = none: today's rules */
    const char *acl_file;         /* --acl-file */
    const char *http_token_file;  /* --http-token-file */
};

/* Fills c with gearmand's defaults (prefix from uname's nodename). */
void gm_server_config_defaults(struct gm_server_config *c);

/* The soft output limit in force: output_soft if set, else
   GM_OUTPUT_SOFT_LIMIT, at most half of max_output. */
uint32_t gm_server_config_output_soft(const struct gm_server_config *c);

#endif /* GM_SERVER_CONFIG_H */
