/*
 * plugins/protocol/http/hosts.h: the HTTP front-end's Host and Origin rules
 * (see hosts.c).  Internal to the plugin; gm_http_set_hosts() is in http.h.
 */
#ifndef GM_PLUGINS_HTTP_HOSTS_H
#define GM_PLUGINS_HTTP_HOSTS_H

#include <stdbool.h>
#include <stddef.h>

/* A request header the rules read, pointing into the request. */
struct gm_http_hdr {
    const char *line, *v; /* the line (its name first), its value */
    size_t n;             /* the value's length */
    unsigned count;       /* how often it came; 0: absent */
};

/* Returns whether a Host header value is host, host:port or [v6]:port,
   with a port of at most 65535. */
bool gm_http_host_valid(const char *v, size_t n);

/* Returns the header (host, origin or referer) whose value the rules
   refuse, or NULL: a Host must name this server; a request that changes
   state (changes_state) with an Origin, or else a Referer, must come from
   the origin it was sent to. */
const struct gm_http_hdr *gm_http_refused_by(const struct gm_http_hdr *host, const struct gm_http_hdr *origin,
                                             const struct gm_http_hdr *referer, bool changes_state);

/* Writes into out (outlen bytes, NUL-terminated) why a request was
   refused, given the refused header line line[0..n). */
void gm_http_refusal_text(const char *line, size_t n, char *out, size_t outlen);

/* Copies s[0..n) into out (outlen bytes, NUL-terminated, cut to fit) with
   '?' for each byte that is not printable ASCII, so that a log line or a
   message shows what a request sent without passing its control bytes on. */
void gm_http_printable(char *out, size_t outlen, const char *s, size_t n);

#endif /* GM_PLUGINS_HTTP_HOSTS_H */
