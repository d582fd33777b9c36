/*
 * tls_ctx.h: the server's TLS context (--ssl): its certificate, key, CA
 * and rules, read from the files the configuration names.  Built by the
 * main thread, at start and on SIGHUP; immutable once built; counted
 * references: each I/O thread holds one (handed over by gm_io_set_tls),
 * and each TLS connection holds one through its session, so a reload
 * never changes a context a connection uses.  Any thread may take or drop
 * a reference.
 *
 * Rules: TLS 1.2 and newer, no renegotiation; with a CA file a client
 * certificate is asked for and, when offered, verified (a bad one ends the
 * handshake); --ssl-verify-client requires one.
 */
#ifndef GM_TLS_CTX_H
#define GM_TLS_CTX_H

#include <stddef.h>

#include "libgearman-server/config/server_config.h"

struct gm_tls_ctx; /* an OpenSSL SSL_CTX */

/* Builds a context from cfg's files.  Returns it (one reference, the
   caller's), or NULL with a message naming the file and what is wrong with
   it in err. */
struct gm_tls_ctx *gm_tls_ctx_load(const struct gm_server_config *cfg, char *err, size_t errlen);
void gm_tls_ctx_ref(struct gm_tls_ctx *x);
void gm_tls_ctx_unref(struct gm_tls_ctx *x);

#endif /* GM_TLS_CTX_H */
