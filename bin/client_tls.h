/*
 * bin/client_tls.h: TLS for the tools' client module, on OpenSSL
 * (client_tls.c).  Used by client.c only: the tools ask for TLS through
 * gmc_use_tls() (client.h), and client.c runs every connection of a struct
 * gmc through these calls when it has one.
 *
 * These calls never wait: on a non-blocking socket they return
 * GMC_TLS_WANT_READ or GMC_TLS_WANT_WRITE, and client.c polls the socket
 * with its own deadline (one mechanism for every time-out of the tools).
 * A build without OpenSSL has the same calls; gmc_tls_new() then fails with
 * "this build has no TLS".
 *
 * Single-threaded: a struct gmc_tls belongs to the struct gmc that holds it.
 */
#ifndef GM_BIN_CLIENT_TLS_H
#define GM_BIN_CLIENT_TLS_H

#include <stddef.h>
#include <sys/types.h>

/* The files of the TLS options; NULL when not given. */
struct gmc_tls_files {
    const char *ca_file;        /* --ssl-ca-file: the CAs the server's certificate must chain to
                                   (NULL: the system's default CA store) */
    const char *certificate;    /* --ssl-certificate: ours, for a server that verifies clients */
    const char *key;            /* --ssl-key (NULL: the key is in the certificate's file) */
};

/* The context (files loaded once) and the session of the current connection. */
struct gmc_tls;

#define GMC_TLS_WANT_READ (-2)
#define GMC_TLS_WANT_WRITE (-3)

/* Loads the files into a new context: TLS 1.2 and newer, the server's
   certificate verified.  Returns it, or NULL with a reason naming the file
   (or saying that this build has no TLS) in err. */
struct gmc_tls *gmc_tls_new(const struct gmc_tls_files *files, char *err, size_t errlen);

/* Frees the context and any session. */
void gmc_tls_free(struct gmc_tls *t);

/* Starts a session on the connected, non-blocking socket fd, to check the
   server's certificate against host (a DNS name or an IP address).
   Returns 0, or -1 with why. */
int gmc_tls_begin(struct gmc_tls *t, int fd, const char *host, char *why, size_t whylen);

/* One step of the handshake: 0 when it is done, GMC_TLS_WANT_READ/WRITE,
   or -1 with why (the verification error, or what the server did). */
int gmc_tls_handshake(struct gmc_tls *t, char *why, size_t whylen);

/* Decrypted bytes into buf: their count (> 0), GMC_TLS_WANT_READ/WRITE,
   or -1 with why (also when the server closed the connection). */
ssize_t gmc_tls_read(struct gmc_tls *t, void *buf, size_t len, char *why, size_t whylen);

/* Whether the session holds bytes already read from the socket (the
   socket may be empty while a read would still return data). */
int gmc_tls_pending(const struct gmc_tls *t);

/* Encrypts up to len bytes: the count taken (> 0), GMC_TLS_WANT_READ/WRITE,
   or -1 with why. */
ssize_t gmc_tls_write(struct gmc_tls *t, const void *buf, size_t len, char *why, size_t whylen);

/* Ends the session (a close_notify if the socket takes it at once); the
   caller closes the socket. */
void gmc_tls_end(struct gmc_tls *t);

#endif /* GM_BIN_CLIENT_TLS_H */
