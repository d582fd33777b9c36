/*
 * bin/client_tls.c: TLS for the tools' client module (see client_tls.h),
 * on OpenSSL: the context built once from the --ssl-* files, one session
 * per connection, and error text that says what went wrong (which file,
 * the certificate verification error, a plain-text port, an alert from
 * the server) instead of OpenSSL's error codes.  Without OpenSSL, the same
 * calls exist and gmc_tls_new() says the build has no TLS.
 *
 * Single-threaded (the tools are).
 */
#include "config.h"

#include "bin/client_tls.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_OPENSSL

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct gmc_tls {
    SSL_CTX *ctx;
    SSL *ssl;       /* the current connection's session, or NULL */
};

/* The reason of OpenSSL's oldest queued error (the queue is emptied). */
static const char *
queued_reason(void)
{
    unsigned long l = ERR_get_error();
    const char *r = l ? ERR_reason_error_string(l) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* Whether path can be opened for reading; if not, err says why, naming
   the file and what it was for. */
static int
readable(const char *path, const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the %s %s: %s", what, path, strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

/* Loads our certificate and its key (from the certificate's file when no
   key file is given) into ctx.  Returns 0, or -1 with err. */
static int
load_identity(SSL_CTX *ctx, const struct gmc_tls_files *f, char *err, size_t errlen)
{
    const char *key = f->key ? f->key : f->certificate;
    if (!readable(f->certificate, "certificate", err, errlen) || !readable(key, "key", err, errlen))
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, f->certificate) != 1) {
        snprintf(err, errlen, "no usable certificate in %s: %s", f->certificate, queued_reason());
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long l = ERR_peek_error();
        if (ERR_GET_LIB(l) == ERR_LIB_X509 && ERR_GET_REASON(l) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, errlen, "the key in %s does not match the certificate in %s", key, f->certificate);
        else if (!f->key)
            snprintf(err, errlen, "no private key in %s (give its file with --ssl-key)", key);
        else
            snprintf(err, errlen, "no private key that OpenSSL can read in %s (%s)", key, queued_reason());
        ERR_clear_error();
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "the key in %s does not match the certificate in %s", key, f->certificate);
        return -1;
    }
    return 0;
}

struct gmc_tls *
gmc_tls_new(const struct gmc_tls_files *f, char *err, size_t errlen)
{
    if (f->key && !f->certificate) {
        snprintf(err, errlen, "--ssl-key needs --ssl-certificate");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        snprintf(err, errlen, "cannot set up TLS: %s", queued_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1); /* one read(2) for what the socket holds, not two per record */
    int rc = 0;
    if (f->ca_file) {
        if (!readable(f->ca_file, "CA file", err, errlen)) {
            rc = -1;
        } else if (SSL_CTX_load_verify_locations(ctx, f->ca_file, NULL) != 1) {
            snprintf(err, errlen, "no usable CA certificate in %s: %s", f->ca_file, queued_reason());
            rc = -1;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "cannot load the system's CA certificates: %s", queued_reason());
        rc = -1;
    }
    if (rc == 0 && f->certificate)
        rc = load_identity(ctx, f, err, errlen);
    struct gmc_tls *t = rc == 0 ? calloc(1, sizeof *t) : NULL;
    if (!t) {
        if (rc == 0)
            snprintf(err, errlen, "out of memory");
        SSL_CTX_free(ctx);
        return NULL;
    }
    t->ctx = ctx;
    return t;
}

void
gmc_tls_free(struct gmc_tls *t)
{
    if (!t)
        return;
    gmc_tls_end(t);
    SSL_CTX_free(t->ctx);
    free(t);
}

int
gmc_tls_begin(struct gmc_tls *t, int fd, const char *host, char *why, size_t whylen)
{
    gmc_tls_end(t);
    t->ssl = SSL_new(t->ctx);
    if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1) {
        snprintf(why, whylen, "cannot start TLS: %s", queued_reason());
        gmc_tls_end(t);
        return -1;
    }
    /* the certificate must name the host we were given: an IP address
       against its IP entries, a name against its DNS names (and sent as SNI) */
    X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
    unsigned char ip[16];
    int ok;
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(vp, host);
    } else {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = X509_VERIFY_PARAM_set1_host(vp, host, 0) && SSL_set_tlsext_host_name(t->ssl, host);
    }
    if (!ok) {
        snprintf(why, whylen, "cannot check the server's certificate against '%s': %s", host, queued_reason());
        gmc_tls_end(t);
        return -1;
    }
    SSL_set_connect_state(t->ssl);
    return 0;
}

/* What a failed SSL_* call (its return value ret) means: WANT_READ/WRITE,
   or -1 with why in words. */
static int
failure(struct gmc_tls *t, int ret, int handshake, char *why, size_t whylen)
{
    int saved_errno = errno;
    int e = SSL_get_error(t->ssl, ret);
    if (e == SSL_ERROR_WANT_READ)
        return GMC_TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return GMC_TLS_WANT_WRITE;
    unsigned long l = ERR_peek_error();
    if (e == SSL_ERROR_ZERO_RETURN) {
        snprintf(why, whylen, "ended the TLS session");
    } else if (e == SSL_ERROR_SYSCALL && !l) {
        if (ret < 0 && saved_errno)
            snprintf(why, whylen, "%s", strerror(saved_errno));
        else if (handshake)
            snprintf(why, whylen, "closed the connection during the TLS handshake (is it a TLS port?)");
        else
            snprintf(why, whylen, "closed the connection");
    } else if (ERR_GET_LIB(l) == ERR_LIB_SSL && ERR_GET_REASON(l) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(t->ssl);
        snprintf(why, whylen, "TLS: the server's certificate was not accepted: %s",
                 X509_verify_cert_error_string(v));
    } else if (handshake && ERR_GET_LIB(l) == ERR_LIB_SSL &&
               (ERR_GET_REASON(l) == SSL_R_WRONG_VERSION_NUMBER || ERR_GET_REASON(l) == SSL_R_PACKET_LENGTH_TOO_LONG ||
                ERR_GET_REASON(l) == SSL_R_UNKNOWN_PROTOCOL)) {
        snprintf(why, whylen, "TLS: the server did not answer in TLS (is it a plain-text port?)");
    } else if (ERR_GET_LIB(l) == ERR_LIB_SSL && ERR_GET_REASON(l) == SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED) {
        snprintf(why, whylen, "TLS: the server requires a client certificate (--ssl-certificate, --ssl-key)");
    } else if (ERR_GET_LIB(l) == ERR_LIB_SSL &&
               (ERR_GET_REASON(l) == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
                ERR_GET_REASON(l) == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
                ERR_GET_REASON(l) == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED)) {
        snprintf(why, whylen, "TLS: the server did not accept our certificate (%s)", ERR_reason_error_string(l));
    } else {
        const char *r = l ? ERR_reason_error_string(l) : NULL;
        snprintf(why, whylen, "TLS: %s", r ? r : "unknown error");
    }
    ERR_clear_error();
    return -1;
}

int
gmc_tls_handshake(struct gmc_tls *t, char *why, size_t whylen)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    return r == 1 ? 0 : failure(t, r, 1, why, whylen);
}

ssize_t
gmc_tls_read(struct gmc_tls *t, void *buf, size_t len, char *why, size_t whylen)
{
    ERR_clear_error();
    int n = SSL_read(t->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : failure(t, n, 0, why, whylen);
}

int
gmc_tls_pending(const struct gmc_tls *t)
{
    return t->ssl && SSL_has_pending(t->ssl);
}

ssize_t
gmc_tls_write(struct gmc_tls *t, const void *buf, size_t len, char *why, size_t whylen)
{
    ERR_clear_error();
    int n = SSL_write(t->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    return n > 0 ? n : failure(t, n, 0, why, whylen);
}

void
gmc_tls_end(struct gmc_tls *t)
{
    if (!t->ssl)
        return;
    if (SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl); /* once, without waiting: the socket is closed next */
    SSL_free(t->ssl);
    t->ssl = NULL;
    ERR_clear_error();
}

#else /* !HAVE_OPENSSL */

struct gmc_tls {
    int unused;
};

struct gmc_tls *
gmc_tls_new(const struct gmc_tls_files *f, char *err, size_t errlen)
{
    (void)f;
    snprintf(err, errlen, "this build has no TLS (it was built without OpenSSL)");
    return NULL;
}

void
gmc_tls_free(struct gmc_tls *t)
{
    free(t);
}

int
gmc_tls_begin(struct gmc_tls *t, int fd, const char *host, char *why, size_t whylen)
{
    (void)t, (void)fd, (void)host;
    snprintf(why, whylen, "this build has no TLS");
    return -1;
}

int
gmc_tls_handshake(struct gmc_tls *t, char *why, size_t whylen)
{
    (void)t;
    snprintf(why, whylen, "this build has no TLS");
    return -1;
}

ssize_t
gmc_tls_read(struct gmc_tls *t, void *buf, size_t len, char *why, size_t whylen)
{
    (void)t, (void)buf, (void)len;
    snprintf(why, whylen, "this build has no TLS");
    return -1;
}

int
gmc_tls_pending(const struct gmc_tls *t)
{
    (void)t;
    return 0;
}

ssize_t
gmc_tls_write(struct gmc_tls *t, const void *buf, size_t len, char *why, size_t whylen)
{
    (void)t, (void)buf, (void)len;
    snprintf(why, whylen, "this build has no TLS");
    return -1;
}

void
gmc_tls_end(struct gmc_tls *t)
{
    (void)t;
}

#endif /* HAVE_OPENSSL */
