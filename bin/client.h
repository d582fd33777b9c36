/*
 * bin/client.h: the small client module behind the `gearman` and
 * `gearadmin` tools: a blocking connection to one of a list of job
 * servers (fail-over to the next), binary packets through the server's
 * own codec (libgearman-server/proto/protocol.h), admin text commands read to
 * their terminating line, and timeouts on every wait.  With gmc_use_tls()
 * every connection is TLS (client_tls.c): handshake, certificate and host
 * name checks, under the same time-outs and fail-over.
 *
 * Single-threaded: one struct gmc belongs to one thread.
 */
#ifndef GM_BIN_CLIENT_H
#define GM_BIN_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/proto/protocol.h"

#define GMC_MAX_SERVERS 32

struct gmc_tls;

struct gmc_server {
    char host[256];
    char port[32];
};

/* A packet read from the server; pointers stay valid until the next read. */
struct gmc_packet {
    uint32_t type;
    uint32_t size;
    const char *payload;
    struct gm_fields fields; /* split by the type's field count */
};

struct gmc {
    struct gmc_server servers[GMC_MAX_SERVERS];
    size_t nservers;
    size_t current;         /* the server connected to, or to try next */
    int fd;                 /* -1 when not connected */
    int timeout_ms;         /* every wait; -1 = none */
    struct gmc_tls *tls;    /* NULL: plain text; else TLS (client_tls.h) */
    char *buf;              /* received, not yet consumed bytes */
    size_t start, len, cap;
    char err[512];
};

/* Initialises c with no servers and no connection. */
void gmc_init(struct gmc *c);

/* Adds servers from "host[:port][,host[:port]...]" ("[v6addr]:port" for
   IPv6); a server without a port gets default_port.  Returns 0, or -1 with
   c->err set for a malformed list. */
int gmc_add_servers(struct gmc *c, const char *list, const char *default_port);

/* Makes every connection of c TLS (1.2 or newer): the server's certificate
   is verified against ca_file (NULL: the system's CAs) and must name the
   server's host; certificate and key (NULL: none; key NULL: in the
   certificate's file) are ours, for servers that verify clients.  Returns
   0, or -1 with c->err naming the file at fault (or saying that the build
   has no TLS). */
int gmc_use_tls(struct gmc *c, const char *ca_file, const char *certificate, const char *key);

/* Connects to the current server, or the next ones in turn (fail-over),
   with the TLS handshake when c has TLS; connecting and the handshake each
   wait at most c->timeout_ms (10 s when it is -1).  Returns 0, or -1 with
   c->err naming every server that failed and why. */
int gmc_connect(struct gmc *c);

/* Closes the connection (the server list stays). */
void gmc_close(struct gmc *c);

/* Frees everything. */
void gmc_free(struct gmc *c);

/* Sends one request packet; returns 0 or -1 (c->err set, connection closed). */
int gmc_send(struct gmc *c, uint32_t type, const struct gm_field_ref *f, size_t n);

/* Sends raw bytes; returns 0 or -1. */
int gmc_send_raw(struct gmc *c, const void *p, size_t len);

/* Reads one binary packet, waiting at most timeout_ms (-1: c->timeout_ms).
   Returns 1 with *p filled, 0 on timeout, -1 on error or EOF (c->err). */
int gmc_recv(struct gmc *c, struct gmc_packet *p, int timeout_ms);

/* Sends an admin command line (the "\r\n" is added) and reads its whole
   reply: for a list command (list = true) up to its "." line, otherwise
   one line; an "ERR ..." line ends either.  Returns 0 with *reply
   (malloc'd, NUL-terminated) and *len, or -1 (c->err). */
int gmc_admin(struct gmc *c, const char *line, bool list, char **reply, size_t *len);

/* Field i of a packet, as pointer and length. */
const char *gmc_field(const struct gmc_packet *p, int i, size_t *len);

#endif /* GM_BIN_CLIENT_H */
