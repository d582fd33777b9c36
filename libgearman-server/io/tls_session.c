/*
 * tls_session.c: a connection's TLS session (--ssl; see io_int.h), the
 * bottom of the I/O thread's files: the session begun at accept, the
 * reads and writes every connection goes through (conn_recv, conn_writev:
 * plain read/writev, or decrypted bytes into the same read blocks and
 * output leaving in records of up to 16 KiB gathered in one buffer of the
 * thread), what a failed call means in words, the identity of a verified
 * client certificate, and the thread's context (gm_io_set_tls, tls_adopt).
 * The handshake that comes first is tls_handshake.c.
 *
 * I/O thread only, but for gm_io_set_tls (any thread).  The thread's
 * context is replaced by a newer one handed over by the main thread,
 * which sessions already open do not notice: each holds a reference to
 * the context it began with.
 */
#include "config.h"

#include "libgearman-server/io/io_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/config/tls_ctx.h"

#ifdef HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TLS_RECORD 16384u

void
tls_reason(struct conn *c, int ret, int code, char *out, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK && e && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(out, n, "client certificate refused: %s", X509_verify_cert_error_string(vr));
    } else if (e) {
        const char *r = ERR_reason_error_string(e);
        snprintf(out, n, "%s", r ? r : "TLS error");
    } else if (code == SSL_ERROR_SYSCALL && ret == 0) {
        snprintf(out, n, "the peer closed the connection");
    } else if (code == SSL_ERROR_SYSCALL) {
        snprintf(out, n, "%s", strerror(errno));
    } else {
        snprintf(out, n, "TLS error %d", code);
    }
    ERR_clear_error();
}

bool
tls_conn_start(struct conn *c)
{
    SSL *s = SSL_new((SSL_CTX *)c->t->tls);
    if (!s)
        return false;
    if (SSL_set_fd(s, c->fd) != 1) {
        SSL_free(s);
        return false;
    }
    SSL_set_accept_state(s);
    c->ssl = s;
    c->flags |= CF_HANDSHAKE;
    return true;
}

void
tls_conn_free(struct conn *c)
{
    if (c->ssl) {
        /* No close_notify: the socket closes whatever the peer does, and a
           peer that does not read must not hold us. */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
}

size_t
tls_identity(struct conn *c, char *out, size_t n)
{
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    if (!cert)
        return 0;
    size_t len = 0;
    char cn[GM_CN_MAX + 2];
    if (SSL_get_verify_result(c->ssl) == X509_V_OK) {
        int l = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        bool ok = l > 0 && l <= GM_CN_MAX;
        for (int i = 0; ok && i < l; i++)
            ok = cn[i] > ' ' && cn[i] < 0x7f;
        if (ok && (size_t)l + 3 < n) {
            memcpy(out, "cn:", 3);
            memcpy(out + 3, cn, (size_t)l);
            len = (size_t)l + 3;
        }
    }
    X509_free(cert);
    return len;
}

ssize_t
conn_recv(struct conn *c, char *buf, size_t len)
{
    if (!c->ssl)
        return read(c->fd, buf, len);
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (r > 0)
        return r;
    int code = SSL_get_error(c->ssl, r);
    switch (code) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: /* a key update's answer waits for room; the next read retries it */
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (r == 0 || errno == 0) {
            ERR_clear_error();
            return 0;
        }
        ERR_clear_error();
        return -1;
    default: {
        char why[200];
        tls_reason(c, r, code, why, sizeof why);
        gm_log_peer(&c->log_limit, c->addr, c->port, GM_LOG_WARNING, "TLS read from %s:%u failed: %s",
                    c->addr, c->port, why);
        errno = EPROTO;
        return -1;
    }
    }
}

bool
conn_recv_pending(const struct conn *c)
{
    return c->ssl && SSL_has_pending(c->ssl);
}

ssize_t
conn_writev(struct conn *c, const struct iovec *iov, int n)
{
    if (!c->ssl)
        return writev(c->fd, iov, n);
    /* One record's worth, gathered.  After a write that must be retried,
       the same bytes come first again: the queue only grows at its end. */
    struct gm_io_thread *t = c->t;
    if (!t->tls_buf && !(t->tls_buf = malloc(TLS_RECORD))) {
        errno = ENOMEM;
        return -1;
    }
    size_t len = 0;
    for (int i = 0; i < n && len < TLS_RECORD; i++) {
        size_t k = iov[i].iov_len < TLS_RECORD - len ? iov[i].iov_len : TLS_RECORD - len;
        memcpy(t->tls_buf + len, iov[i].iov_base, k);
        len += k;
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, t->tls_buf, (int)len);
    if (r > 0)
        return r;
    int code = SSL_get_error(c->ssl, r);
    if (code == SSL_ERROR_WANT_WRITE || code == SSL_ERROR_WANT_READ) {
        errno = EAGAIN;
        return -1;
    }
    char why[200];
    tls_reason(c, r, code, why, sizeof why);
    gm_log_peer(&c->log_limit, c->addr, c->port, GM_LOG_INFO, "TLS write to %s:%u failed: %s", c->addr,
                c->port, why);
    errno = EPIPE;
    return -1;
}

void
tls_adopt(struct gm_io_thread *t)
{
    struct gm_tls_ctx *x = atomic_exchange(&t->tls_next, NULL);
    if (!x)
        return;
    gm_tls_ctx_unref(t->tls);
    t->tls = x;
}

#else /* no OpenSSL: no context is ever handed over */

bool
tls_conn_start(struct conn *c)
{
    (void)c;
    return false;
}

void
tls_conn_free(struct conn *c)
{
    (void)c;
}

ssize_t
conn_recv(struct conn *c, char *buf, size_t len)
{
    return read(c->fd, buf, len);
}

bool
conn_recv_pending(const struct conn *c)
{
    (void)c;
    return false;
}

ssize_t
conn_writev(struct conn *c, const struct iovec *iov, int n)
{
    return writev(c->fd, iov, n);
}

void
tls_adopt(struct gm_io_thread *t)
{
    (void)t;
}

#endif

void
gm_io_set_tls(struct gm_io_thread *t, struct gm_tls_ctx *x)
{
    gm_tls_ctx_ref(x);
    gm_tls_ctx_unref(atomic_exchange(&t->tls_next, x));
    ev_async_send(t->loop, &t->wake);
}
