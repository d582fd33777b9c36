/*
 * server_config.c: the defaults of the settings the core server runs with
 * (server_config.h).
 *
 * Runs on the main thread (or a test) before any server thread starts;
 * owns no state.
 */
#include "config.h"

#include "libgearman-server/config/server_config.h"

#include <string.h>
#include <sys/utsname.h>

void
gm_server_config_defaults(struct gm_server_config *c)
{
    memset(c, 0, sizeof *c);
    c->port = GM_DEFAULT_PORT;
    c->backlog = 32;
    c->io_threads = 0;
    c->busy_poll_us = GM_DEFAULT_BUSY_POLL_US;
    c->reply_batch_us = GM_DEFAULT_REPLY_BATCH_US;
    c->max_packet_size = GM_DEFAULT_MAX_PACKET;
    c->max_output = GM_DEFAULT_MAX_OUTPUT;
    c->packet_timeout_s = GM_DEFAULT_PACKET_TIMEOUT;
    c->http_timeout_s = GM_DEFAULT_HTTP_TIMEOUT;
    c->ssl_handshake_timeout_s = GM_DEFAULT_SSL_HANDSHAKE_TIMEOUT;
    c->hashtable_buckets = GM_DEFAULT_BUCKETS;
    c->queue_batch_max = 4096;
    c->dead_letter_max = GM_DEFAULT_DEAD_LETTER_MAX;
    c->keep_results_s = 300;
    c->keep_results_bytes = 4096;
    c->ha_timeout_s = 5;
    c->keepalive_idle = c->keepalive_interval = c->keepalive_count = -1;
    struct utsname u;
    const char *node = uname(&u) == 0 ? u.nodename : "localhost";
    /* Long host names are cut so that "<prefix>:<n>" always fits a handle. */
    size_t len = strnlen(node, GM_PREFIX_MAX - 2);
    c->handle_prefix[0] = 'H';
    c->handle_prefix[1] = ':';
    memcpy(c->handle_prefix + 2, node, len);
    c->handle_prefix[2 + len] = '\0';
}

uint32_t
gm_server_config_output_soft(const struct gm_server_config *c)
{
    if (c->output_soft)
        return c->output_soft;
    return GM_OUTPUT_SOFT_LIMIT < c->max_output / 2 ? GM_OUTPUT_SOFT_LIMIT : c->max_output / 2;
}
