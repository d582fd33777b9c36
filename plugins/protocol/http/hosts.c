/*
 * plugins/protocol/http/hosts.c: the HTTP front-end's Host and Origin
 * rules, against DNS rebinding and against other sites' pages acting
 * through a visitor's browser.
 *
 * A request's Host must name this server: an IP address (a page that
 * rebinds needs a DNS name of its own, so an address is never one), or one
 * of the names set by gm_http_set_hosts(): localhost, the host name, the -L
 * address, --http-host.  The port is not compared.  A request that changes
 * state and carries an Origin (or, without one, a Referer) must come from
 * the origin it was sent to: http or https, the Host's host and port.
 *
 * The name set is the one piece of state the HTTP front-end shares between
 * connections: it is written by gm_http_set_hosts() on the main thread
 * before the server's threads start, and only read after (by the I/O
 * threads' parse()).
 */
#include "config.h"

#include "plugins/protocol/http/hosts.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "plugins/protocol/http/http.h"

#define HOSTS_MAX 32
#define HOSTNAME_LEN 253

/* The names a Host header may give besides IP addresses.  Written by
   gm_http_set_hosts() before the server's threads start; read-only after. */
static struct {
    bool any; /* "*": every Host is accepted */
    size_t n;
    char name[HOSTS_MAX][HOSTNAME_LEN + 1];
} http_hosts = {false, 1, {"localhost"}};

/* host, host:port or [v6]:port, cut up. */
struct authority {
    const char *host; /* without the brackets */
    size_t host_len;
    bool v6;          /* bracketed */
    long port;        /* -1 when absent */
};

static bool
name_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* Whether s[0..n) is an IPv4 address, or an IPv6 one if v6. */
static bool
is_ip_literal(const char *s, size_t n, bool v6)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    unsigned char addr[16];
    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(v6 ? AF_INET6 : AF_INET, tmp, addr) == 1;
}

/* Cuts an authority into *a; false if it is none: an empty host, a
   character no host name has, a port that is not a number up to 65535. */
static bool
split_authority(const char *v, size_t n, struct authority *a)
{
    const char *end = v + n, *p = v;
    a->v6 = n > 0 && v[0] == '[';
    a->port = -1;
    if (a->v6) {
        const char *close = memchr(v, ']', n);
        if (!close)
            return false;
        a->host = v + 1;
        a->host_len = (size_t)(close - a->host);
        p = close + 1;
    } else {
        while (p < end && name_char(*p))
            p++;
        a->host = v;
        a->host_len = (size_t)(p - v);
    }
    if (a->host_len == 0)
        return false;
    if (p == end)
        return true;
    if (*p++ != ':' || end - p > 5)
        return false;
    long port = 0;
    for (const char *d = p; d < end; d++) {
        if (*d < '0' || *d > '9')
            return false;
        port = port * 10 + (*d - '0');
    }
    if (port > 65535)
        return false;
    if (p < end)
        a->port = port;
    return true;
}

/* Whether a Host (or an origin's host) names this server: any IP address
   (a DNS name is what a rebinding page needs), or one of http_hosts' names
   (case and a final dot aside). */
static bool
host_is_ours(const struct authority *a)
{
    if (http_hosts.any || is_ip_literal(a->host, a->host_len, a->v6))
        return true;
    size_t n = a->host_len;
    if (a->v6)
        return false;
    if (n > 1 && a->host[n - 1] == '.')
        n--;
    for (size_t i = 0; i < http_hosts.n; i++)
        if (strlen(http_hosts.name[i]) == n && strncasecmp(http_hosts.name[i], a->host, n) == 0)
            return true;
    return false;
}

/* Adds a name to http_hosts ("*": any; an IP address: nothing, they are
   all accepted).  Returns 0, or -1 with *why. */
static int
hosts_add(const char *s, size_t n, const char **why)
{
    if (n == 1 && s[0] == '*') {
        http_hosts.any = true;
        return 0;
    }
    if (is_ip_literal(s, n, false) || is_ip_literal(s, n, true) ||
        (n > 2 && s[0] == '[' && s[n - 1] == ']' && is_ip_literal(s + 1, n - 2, true)))
        return 0;
    if (n > 1 && s[n - 1] == '.')
        n--;
    for (size_t i = 0; i < n; i++) {
        if (!name_char(s[i])) {
            *why = "not a host name (letters, digits, '-', '.', '_'), an IP address or *";
            return -1;
        }
    }
    if (n == 0 || n > HOSTNAME_LEN) {
        *why = "a host name has 1 to 253 characters";
        return -1;
    }
    for (size_t i = 0; i < http_hosts.n; i++)
        if (strlen(http_hosts.name[i]) == n && strncasecmp(http_hosts.name[i], s, n) == 0)
            return 0;
    if (http_hosts.n == HOSTS_MAX) {
        *why = "more than 32 names";
        return -1;
    }
    char *d = http_hosts.name[http_hosts.n++];
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)s[i]);
    d[n] = '\0';
    return 0;
}

/* Sets the names a request's Host header may give besides IP addresses:
   localhost, this machine's host name, listen_host (-L; NULL for none) and
   the comma-separated names (--http-host; NULL for none, "*" for any Host).
   Call it before the server's threads start.  Returns 0, or -1 with the
   reason in err. */
int
gm_http_set_hosts(const char *names, const char *listen_host, char *err, size_t errlen)
{
    const char *why = NULL;
    char me[HOSTNAME_LEN + 2] = "";
    http_hosts.any = false;
    http_hosts.n = 0;
    hosts_add("localhost", 9, &why);
    if (gethostname(me, sizeof me - 1) == 0 && me[0])
        hosts_add(me, strlen(me), &why); /* an odd host name is just left out */
    if (listen_host && strcmp(listen_host, "*") != 0)
        hosts_add(listen_host, strlen(listen_host), &why);
    for (const char *p = names; p && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *t = p;
        while (n && isspace((unsigned char)*t))
            t++, n--;
        while (n && isspace((unsigned char)t[n - 1]))
            n--;
        if (n && hosts_add(t, n, &why) < 0) {
            snprintf(err, errlen, "'%.*s': %s", (int)(n < 300 ? n : 300), t, why);
            return -1;
        }
        p = e ? e + 1 : p + strlen(p);
    }
    return 0;
}

/* Whether an Origin, or a Referer's scheme://host:port, is the origin the
   request went to: http or https, the Host header's host and port (a port
   left out is the scheme's default); without a Host header (HTTP/1.0), a
   host of this server's, any port.  "null" and other schemes are not. */
static bool
origin_is_ours(const struct gm_http_hdr *o, bool referer, const struct authority *host)
{
    const char *v = o->v, *end = o->v + o->n;
    long dflt;
    if (o->n >= 7 && strncasecmp(v, "http://", 7) == 0) {
        v += 7;
        dflt = 80;
    } else if (o->n >= 8 && strncasecmp(v, "https://", 8) == 0) {
        v += 8;
        dflt = 443;
    } else {
        return false;
    }
    const char *ae = v;
    while (ae < end && *ae != '/' && *ae != '?' && *ae != '#')
        ae++;
    struct authority a;
    if ((ae != end && !referer) || !split_authority(v, (size_t)(ae - v), &a))
        return false;
    if (!host)
        return host_is_ours(&a);
    return a.v6 == host->v6 && a.host_len == host->host_len && strncasecmp(a.host, host->host, a.host_len) == 0 &&
           (a.port < 0 ? dflt : a.port) == (host->port < 0 ? dflt : host->port);
}

/* Returns whether a Host header value is host, host:port or [v6]:port,
   with a port of at most 65535. */
bool
gm_http_host_valid(const char *v, size_t n)
{
    struct authority a;
    return split_authority(v, n, &a);
}

/* Returns the header (host, origin or referer) whose value the rules
   refuse, or NULL: a Host must name this server; a request that changes
   state (changes_state) with an Origin, or else a Referer, must come from
   the origin it was sent to. */
const struct gm_http_hdr *
gm_http_refused_by(const struct gm_http_hdr *host, const struct gm_http_hdr *origin,
                   const struct gm_http_hdr *referer, bool changes_state)
{
    struct authority h;
    if (host->count && (!split_authority(host->v, host->n, &h) || !host_is_ours(&h)))
        return host;
    if (!changes_state)
        return NULL;
    const struct authority *ours = host->count ? &h : NULL;
    if (origin->count)
        return origin_is_ours(origin, false, ours) ? NULL : origin;
    if (referer->count && !origin_is_ours(referer, true, ours))
        return referer;
    return NULL;
}

/* Copies s[0..n) into out (outlen bytes, NUL-terminated, cut to fit) with
   '?' for each byte that is not printable ASCII, so that a log line or a
   message shows what a request sent without passing its control bytes on. */
void
gm_http_printable(char *out, size_t outlen, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < outlen; i++)
        out[o++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[o] = '\0';
}

/* Writes into out (outlen bytes, NUL-terminated) why a request was
   refused, given the refused header line line[0..n). */
void
gm_http_refusal_text(const char *line, size_t n, char *out, size_t outlen)
{
    char shown[160];
    gm_http_printable(shown, sizeof shown, line, n);
    if (n >= 4 && strncasecmp(line, "Host", 4) == 0)
        snprintf(out, outlen, "\"%s\" does not name this server (its names are given with --http-host)", shown);
    else
        snprintf(out, outlen,
                 "\"%s\" is another site: jobs are submitted or changed only from this server's own "
                 "pages or by clients that send no Origin or Referer",
                 shown);
}
