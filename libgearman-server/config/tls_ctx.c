/*
 * tls_ctx.c: building the server's TLS context from its files (see
 * tls_ctx.h).  Main thread (loading); references from any thread.
 */
#include "config.h"

#include "libgearman-server/config/tls_ctx.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifdef HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* The reason OpenSSL gives for the failure (its first, most specific
   error: "no start line" rather than "PEM lib"), or `fallback`. */
static const char *
ssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : fallback;
}

/* Whether the file can be opened for reading; else err says why. */
static bool
readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

struct gm_tls_ctx *
gm_tls_ctx_load(const struct gm_server_config *cfg, char *err, size_t errlen)
{
    ERR_clear_error();
    const char *cert = cfg->ssl_certificate, *key = cfg->ssl_key, *ca = cfg->ssl_ca_file;
    if (!cert || !key) {
        snprintf(err, errlen, "--ssl needs --ssl-certificate and --ssl-key");
        return NULL;
    }
    if (!readable("--ssl-certificate", cert, err, errlen) || !readable("--ssl-key", key, err, errlen) ||
        (ca && !readable("--ssl-ca-file", ca, err, errlen)))
        return NULL;
    SSL_CTX *x = SSL_CTX_new(TLS_server_method());
    if (!x) {
        snprintf(err, errlen, "cannot make a TLS context: %s", ssl_reason("out of memory"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION);
    SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF); /* a peer gone without close_notify has just closed */
    /* Idle connections give their buffers back; the writer hands the same
       bytes again from wherever they are after a partial write. */
    SSL_CTX_set_mode(x, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Records are read as many as the socket has in one read(2), not a
       header and a body each; what is left over is pending (reader.c). */
    SSL_CTX_set_read_ahead(x, 1);
    static const unsigned char sid[] = "gearmand";
    SSL_CTX_set_session_id_context(x, sid, sizeof sid - 1);
    if (SSL_CTX_use_certificate_chain_file(x, cert) != 1) {
        snprintf(err, errlen, "--ssl-certificate %s: not a usable PEM certificate (%s)", cert,
                 ssl_reason("unreadable"));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(x, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen, "--ssl-key %s does not match --ssl-certificate %s", key, cert);
        } else {
            snprintf(err, errlen, "--ssl-key %s: not a usable PEM private key (%s)", key,
                     ssl_reason("unreadable"));
        }
        goto fail;
    }
    if (SSL_CTX_check_private_key(x) != 1) {
        snprintf(err, errlen, "--ssl-key %s does not match --ssl-certificate %s: %s", key, cert,
                 ssl_reason("mismatch"));
        goto fail;
    }
    if (ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (!names || SSL_CTX_load_verify_locations(x, ca, NULL) != 1) {
            if (names)
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, errlen, "--ssl-ca-file %s: no usable PEM certificate (%s)", ca, ssl_reason("none in it"));
            goto fail;
        }
        SSL_CTX_set_client_CA_list(x, names);
        SSL_CTX_set_verify(x, SSL_VERIFY_PEER | (cfg->ssl_verify_client ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
    } else {
        SSL_CTX_set_verify(x, SSL_VERIFY_NONE, NULL);
    }
    return (struct gm_tls_ctx *)x;
fail:
    SSL_CTX_free(x);
    return NULL;
}

void
gm_tls_ctx_ref(struct gm_tls_ctx *x)
{
    if (x)
        SSL_CTX_up_ref((SSL_CTX *)x);
}

void
gm_tls_ctx_unref(struct gm_tls_ctx *x)
{
    if (x)
        SSL_CTX_free((SSL_CTX *)x);
}

#else /* no OpenSSL: --ssl is refused before anything gets here */

struct gm_tls_ctx *
gm_tls_ctx_load(const struct gm_server_config *cfg, char *err, size_t errlen)
{
    (void)cfg;
    snprintf(err, errlen, "--ssl is not supported by this build");
    return NULL;
}

void
gm_tls_ctx_ref(struct gm_tls_ctx *x)
{
    (void)x;
}

void
gm_tls_ctx_unref(struct gm_tls_ctx *x)
{
    (void)x;
}

#endif
