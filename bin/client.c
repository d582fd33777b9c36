/*
 * bin/client.c: blocking Gearman client connections (see client.h).  A
 * plain connection blocks in send() and waits for input with poll(); a TLS
 * one stays non-blocking, and every wait of its handshake, reads and
 * writes is a poll() here too (client_tls.c never waits).
 */
#include "config.h"

#include "bin/client.h"
#include "bin/client_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void
gmc_init(struct gmc *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->timeout_ms = -1;
}

int
gmc_add_servers(struct gmc *c, const char *list, const char *default_port)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0) {
            p += end ? 1 : 0;
            if (!end)
                break;
            continue;
        }
        if (c->nservers == GMC_MAX_SERVERS) {
            snprintf(c->err, sizeof c->err, "too many servers (at most %d)", GMC_MAX_SERVERS);
            return -1;
        }
        struct gmc_server *s = &c->servers[c->nservers];
        const char *host = p, *port = NULL;
        size_t hlen = len, plen = 0;
        if (*p == '[') { /* [v6]:port */
            const char *rb = memchr(p, ']', len);
            if (!rb) {
                snprintf(c->err, sizeof c->err, "bad server address '%.*s'", (int)len, p);
                return -1;
            }
            host = p + 1;
            hlen = (size_t)(rb - p - 1);
            if (rb + 1 < p + len && rb[1] == ':') {
                port = rb + 2;
                plen = (size_t)(p + len - port);
            }
        } else {
            const char *colon = memchr(p, ':', len);
            /* a bare IPv6 address has several colons: no port then */
            if (colon && !memchr(colon + 1, ':', (size_t)(p + len - colon - 1))) {
                hlen = (size_t)(colon - p);
                port = colon + 1;
                plen = (size_t)(p + len - port);
            }
        }
        if (hlen == 0 || hlen >= sizeof s->host || plen >= sizeof s->port) {
            snprintf(c->err, sizeof c->err, "bad server address '%.*s'", (int)len, p);
            return -1;
        }
        memcpy(s->host, host, hlen);
        s->host[hlen] = '\0';
        if (plen) {
            memcpy(s->port, port, plen);
            s->port[plen] = '\0';
        } else {
            snprintf(s->port, sizeof s->port, "%s", default_port);
        }
        c->nservers++;
        if (!end)
            break;
        p = end + 1;
    }
    if (c->nservers == 0) {
        snprintf(c->err, sizeof c->err, "no server given");
        return -1;
    }
    return 0;
}

int
gmc_use_tls(struct gmc *c, const char *ca_file, const char *certificate, const char *key)
{
    struct gmc_tls_files f = {ca_file, certificate, key};
    struct gmc_tls *t = gmc_tls_new(&f, c->err, sizeof c->err);
    if (!t)
        return -1;
    gmc_tls_free(c->tls);
    c->tls = t;
    return 0;
}

static int
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Waits until fd is ready for events (POLLIN or POLLOUT) or the deadline
   (now_ms() time; -1: none) passes.  Returns 1 when ready, 0 on timeout,
   -1 on a poll error (errno). */
static int
wait_fd(int fd, short events, int deadline)
{
    for (;;) {
        int wait = -1;
        if (deadline >= 0) {
            wait = deadline - now_ms();
            if (wait < 0)
                return 0;
        }
        struct pollfd pfd = {fd, events, 0};
        int r = poll(&pfd, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 ? -1 : r;
    }
}

/* Connects with a timeout; returns the socket, still non-blocking, or -1
   (reason in why). */
static int
connect_one(const struct gmc_server *s, int timeout_ms, char *why, size_t whylen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(s->host, s->port, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "%s", gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    snprintf(why, whylen, "no address");
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            int err = 0;
            socklen_t el = sizeof err;
            if (poll(&pfd, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
                err == 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                break;
            }
            snprintf(why, whylen, "%s", err ? strerror(err) : "timed out");
        } else {
            snprintf(why, whylen, "%s", strerror(errno));
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The TLS handshake on the new connection fd to server s, within
   timeout_ms.  Returns 0, or -1 with why (the session is ended; the caller
   closes fd). */
static int
tls_handshake(struct gmc *c, int fd, const struct gmc_server *s, int timeout_ms, char *why, size_t whylen)
{
    if (gmc_tls_begin(c->tls, fd, s->host, why, whylen) < 0)
        return -1;
    int deadline = now_ms() + timeout_ms;
    for (;;) {
        int r = gmc_tls_handshake(c->tls, why, whylen);
        if (r == 0)
            return 0;
        if (r == -1)
            break;
        int w = wait_fd(fd, r == GMC_TLS_WANT_READ ? POLLIN : POLLOUT, deadline);
        if (w == 0) {
            snprintf(why, whylen, "no TLS handshake within %d ms (is it a TLS port?)", timeout_ms);
            break;
        }
        if (w < 0) {
            snprintf(why, whylen, "%s", strerror(errno));
            break;
        }
    }
    gmc_tls_end(c->tls);
    return -1;
}

int
gmc_connect(struct gmc *c)
{
    gmc_close(c);
    char all[sizeof c->err] = "";
    size_t used = 0;
    int timeout = c->timeout_ms < 0 ? 10000 : c->timeout_ms;
    for (size_t k = 0; k < c->nservers; k++) {
        size_t i = (c->current + k) % c->nservers;
        char why[256];
        int fd = connect_one(&c->servers[i], timeout, why, sizeof why);
        if (fd >= 0 && c->tls && tls_handshake(c, fd, &c->servers[i], timeout, why, sizeof why) < 0) {
            close(fd);
            fd = -1;
        } else if (fd >= 0 && !c->tls) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        }
        if (fd >= 0) {
            c->fd = fd;
            c->current = i;
            c->start = c->len = 0;
            return 0;
        }
        int n = snprintf(all + used, sizeof all - used, "%s%s:%s (%s)", used ? ", " : "",
                         c->servers[i].host, c->servers[i].port, why);
        if (n > 0 && (size_t)n < sizeof all - used)
            used += (size_t)n;
    }
    snprintf(c->err, sizeof c->err, "could not connect to %s", all);
    return -1;
}

void
gmc_close(struct gmc *c)
{
    if (c->fd >= 0 && c->tls)
        gmc_tls_end(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->start = c->len = 0;
}

void
gmc_free(struct gmc *c)
{
    gmc_close(c);
    gmc_tls_free(c->tls);
    c->tls = NULL;
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
}

/* Sends some of p[0..len) over TLS, waiting (without a deadline, as a
   plain send() blocks) until the socket takes it.  Returns the count sent,
   or -1 with why. */
static ssize_t
tls_send_some(struct gmc *c, const void *p, size_t len, char *why, size_t whylen)
{
    for (;;) {
        ssize_t w = gmc_tls_write(c->tls, p, len, why, whylen);
        if (w == -1) {
            /* A server that refused us after the handshake (TLS 1.3: no or
               a bad client certificate) sent an alert saying why, then
               closed; the write only sees the reset.  The alert is still in
               the socket's input: read it for the reason. */
            char alert[256], because[256];
            if (gmc_tls_read(c->tls, alert, sizeof alert, because, sizeof because) == -1 &&
                strncmp(because, "TLS:", 4) == 0)
                snprintf(why, whylen, "%s", because);
            return -1;
        }
        if (w > 0)
            return w;
        if (wait_fd(c->fd, w == GMC_TLS_WANT_READ ? POLLIN : POLLOUT, -1) < 0) {
            snprintf(why, whylen, "%s", strerror(errno));
            return -1;
        }
    }
}

int
gmc_send_raw(struct gmc *c, const void *p, size_t len)
{
    const char *s = p;
    while (len) {
        char why[256];
        ssize_t w = c->tls ? tls_send_some(c, s, len, why, sizeof why) : send(c->fd, s, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (!c->tls && errno == EINTR)
                continue;
            if (!c->tls)
                snprintf(why, sizeof why, "%s", strerror(errno));
            snprintf(c->err, sizeof c->err, "send to %s:%s: %s", c->servers[c->current].host,
                     c->servers[c->current].port, why);
            gmc_close(c);
            return -1;
        }
        s += w;
        len -= (size_t)w;
    }
    return 0;
}

int
gmc_send(struct gmc *c, uint32_t type, const struct gm_field_ref *f, size_t n)
{
    size_t size = GM_HEADER_SIZE + gm_payload_size(f, n);
    char stackbuf[1024];
    char *b = size <= sizeof stackbuf ? stackbuf : malloc(size);
    if (!b) {
        snprintf(c->err, sizeof c->err, "out of memory");
        return -1;
    }
    gm_packet_encode(b, GM_MAGIC_REQ, type, f, n);
    int rc = gmc_send_raw(c, b, size);
    if (b != stackbuf)
        free(b);
    return rc;
}

/* Receives into the buffer's free space, waiting until the deadline:
   returns the count (> 0), 0 on timeout, -1 with why on error or EOF. */
static ssize_t
recv_some(struct gmc *c, int deadline, char *why, size_t whylen)
{
    for (;;) {
        int r = wait_fd(c->fd, POLLIN, deadline);
        if (r == 0)
            return 0;
        ssize_t n = r < 0 ? -1 : recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0)
            return n;
        snprintf(why, whylen, "%s", n == 0 ? "closed the connection" : strerror(errno));
        return -1;
    }
}

/* The same over TLS: bytes already decrypted come first, then it waits
   for whatever the session needs (usually more input). */
static ssize_t
tls_recv_some(struct gmc *c, int deadline, char *why, size_t whylen)
{
    for (;;) {
        ssize_t n = gmc_tls_read(c->tls, c->buf + c->len, c->cap - c->len, why, whylen);
        if (n > 0 || n == -1)
            return n;
        int r = wait_fd(c->fd, n == GMC_TLS_WANT_READ ? POLLIN : POLLOUT, deadline);
        if (r == 0)
            return 0;
        if (r < 0) {
            snprintf(why, whylen, "%s", strerror(errno));
            return -1;
        }
    }
}

/* Reads more bytes into the buffer; returns 1, 0 on timeout, -1 on
   error/EOF. */
static int
fill(struct gmc *c, int deadline)
{
    if (c->start && c->start == c->len)
        c->start = c->len = 0;
    if (c->len == c->cap) {
        if (c->start) {
            memmove(c->buf, c->buf + c->start, c->len - c->start);
            c->len -= c->start;
            c->start = 0;
        } else {
            size_t cap = c->cap ? c->cap * 2 : 65536;
            char *b = realloc(c->buf, cap);
            if (!b) {
                snprintf(c->err, sizeof c->err, "out of memory");
                return -1;
            }
            c->buf = b;
            c->cap = cap;
        }
    }
    char why[256];
    ssize_t n = c->tls ? tls_recv_some(c, deadline, why, sizeof why) : recv_some(c, deadline, why, sizeof why);
    if (n == 0)
        return 0;
    if (n < 0) {
        snprintf(c->err, sizeof c->err, "%s:%s %s", c->servers[c->current].host, c->servers[c->current].port, why);
        gmc_close(c);
        return -1;
    }
    c->len += (size_t)n;
    return 1;
}

static int
deadline_for(const struct gmc *c, int timeout_ms)
{
    int t = timeout_ms == -1 ? c->timeout_ms : timeout_ms;
    return t < 0 ? -1 : now_ms() + t;
}

int
gmc_recv(struct gmc *c, struct gmc_packet *p, int timeout_ms)
{
    if (c->fd < 0) {
        snprintf(c->err, sizeof c->err, "not connected");
        return -1;
    }
    int deadline = deadline_for(c, timeout_ms);
    for (;;) {
        size_t have = c->len - c->start;
        if (have >= GM_HEADER_SIZE) {
            struct gm_header h;
            const unsigned char *b = (const unsigned char *)c->buf + c->start;
            int rc = gm_header_decode(b, UINT32_MAX - GM_HEADER_SIZE, &h);
            if (rc != GM_PARSE_OK || h.magic != GM_MAGIC_RES) {
                snprintf(c->err, sizeof c->err, "the server sent something that is not a response packet");
                gmc_close(c);
                return -1;
            }
            if (have >= GM_HEADER_SIZE + (size_t)h.size) {
                p->type = h.type;
                p->size = h.size;
                p->payload = c->buf + c->start + GM_HEADER_SIZE;
                if (gm_fields_split(h.type, p->payload, h.size, &p->fields) != GM_PARSE_OK) {
                    snprintf(c->err, sizeof c->err, "malformed %s packet from the server",
                             gm_packet_name(h.type));
                    gmc_close(c);
                    return -1;
                }
                c->start += GM_HEADER_SIZE + h.size;
                return 1;
            }
            /* make room for the whole packet */
            size_t need = GM_HEADER_SIZE + (size_t)h.size;
            if (c->cap - c->start < need) {
                memmove(c->buf, c->buf + c->start, have);
                c->len = have;
                c->start = 0;
                if (c->cap < need) {
                    char *nb = realloc(c->buf, need);
                    if (!nb) {
                        snprintf(c->err, sizeof c->err, "out of memory");
                        return -1;
                    }
                    c->buf = nb;
                    c->cap = need;
                }
            }
        }
        int r = fill(c, deadline);
        if (r <= 0)
            return r;
    }
}

const char *
gmc_field(const struct gmc_packet *p, int i, size_t *len)
{
    if (i >= p->fields.count) {
        *len = 0;
        return "";
    }
    *len = p->fields.len[i];
    return p->payload + p->fields.start[i];
}

/* Length of a complete reply at the front of b[0..have), or 0.  A list
   reply ends with a "." line; a single-line reply ("OK...", or "ERR ..."
   for any command) ends at its first newline.  An error line is told from
   a list line by its "\r\n" end (list lines end with a bare "\n"). */
static size_t
reply_length(const char *b, size_t have, bool list)
{
    const char *nl = memchr(b, '\n', have);
    if (!nl)
        return 0;
    size_t first = (size_t)(nl - b) + 1;
    bool err_line = first >= 5 && memcmp(b, "ERR ", 4) == 0 && nl[-1] == '\r';
    if (!list || err_line)
        return first;
    if (first == 2 && b[0] == '.')
        return 2;
    for (size_t i = 0; i + 2 < have; i++)
        if (b[i] == '\n' && b[i + 1] == '.' && b[i + 2] == '\n')
            return i + 3;
    return 0;
}

int
gmc_admin(struct gmc *c, const char *line, bool list, char **reply, size_t *len)
{
    size_t ll = strlen(line);
    char *cmd = malloc(ll + 2);
    if (!cmd) {
        snprintf(c->err, sizeof c->err, "out of memory");
        return -1;
    }
    memcpy(cmd, line, ll);
    memcpy(cmd + ll, "\r\n", 2);
    int rc = gmc_send_raw(c, cmd, ll + 2);
    free(cmd);
    if (rc < 0)
        return -1;
    int deadline = deadline_for(c, -1);
    for (;;) {
        size_t have = c->len - c->start;
        size_t end = have ? reply_length(c->buf + c->start, have, list) : 0;
        if (end) {
            *reply = malloc(end + 1);
            if (!*reply) {
                snprintf(c->err, sizeof c->err, "out of memory");
                return -1;
            }
            memcpy(*reply, c->buf + c->start, end);
            (*reply)[end] = '\0';
            *len = end;
            c->start += end;
            return 0;
        }
        int r = fill(c, deadline);
        if (r == 0) {
            snprintf(c->err, sizeof c->err, "timed out waiting for the reply to '%s'", line);
            return -1;
        }
        if (r < 0)
            return -1;
    }
}
