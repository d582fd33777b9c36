/*
 * tls_handshake.c: the TLS handshake of a new connection (--ssl; see
 * io_int.h), a connection state (CF_HANDSHAKE) driven by its socket's
 * readiness, never a loop: a client that stalls holds its connection, not
 * the thread, until --ssl-handshake-timeout (deadlines.c) closes it.  The
 * dispatcher hears of the connection (conn_announce, with the identity a
 * verified client certificate gives) only once the handshake is done;
 * then it is read like any other.  I/O thread only.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <errno.h>
#include <stdio.h>

#include "libgearman-server/base/log.h"

#ifdef HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/ssl.h>

void
tls_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->flags &= ~CF_HANDSHAKE;
        if (c->flags & CF_WRITING) {
            ev_io_stop(c->t->loop, &c->ww);
            c->flags &= ~CF_WRITING;
        }
        char id[GM_CN_MAX + 4];
        size_t n = tls_identity(c, id, sizeof id);
        if (!conn_announce(c, id, n))
            return;
        gm_log(GM_LOG_INFO, "TLS %s with %s:%u%s%.*s", SSL_get_version(c->ssl), c->addr, c->port,
               n ? " as " : "", (int)n, id);
        conn_mark_read(c);
        conn_mark_ready(c);
        conn_read(c); /* the client may have sent its first request with its Finished */
        return;
    }
    int code = SSL_get_error(c->ssl, r);
    if (code == SSL_ERROR_WANT_READ)
        return;
    if (code == SSL_ERROR_WANT_WRITE) {
        if (!(c->flags & CF_WRITING)) {
            ev_io_start(c->t->loop, &c->ww);
            c->flags |= CF_WRITING;
        }
        return;
    }
    if (code == SSL_ERROR_ZERO_RETURN ||
        (code == SSL_ERROR_SYSCALL && !ERR_peek_error() && (r == 0 || errno == ECONNRESET))) {
        /* a port check, or a client that gave up: nothing went wrong here */
        conn_close(c, GM_LOG_INFO, "closed by the peer during the TLS handshake");
        return;
    }
    char why[200], line[240];
    tls_reason(c, r, code, why, sizeof why);
    snprintf(line, sizeof line, "TLS handshake failed: %s", why);
    conn_close(c, GM_LOG_ERROR, line); /* as a bad packet is: rate-limited per connection and thread */
}

#else /* no OpenSSL: no session is ever begun */

void
tls_handshake(struct conn *c)
{
    conn_close(c, GM_LOG_ERROR, "no TLS in this build");
}

#endif
