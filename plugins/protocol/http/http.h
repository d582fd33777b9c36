/*
 * plugins/protocol/http/http.h: the HTTP front-end (see http.c), an
 * implementation of libgearman-server/proto/frontend.h that gearmand/ wires in
 * for -r http.
 */
#ifndef GM_PLUGINS_HTTP_H
#define GM_PLUGINS_HTTP_H

#include <stddef.h>

#include "libgearman-server/proto/frontend.h"

extern const struct gm_frontend gm_http_frontend;

/* Sets the names a request's Host header may give besides IP addresses:
   localhost, this machine's host name, listen_host (-L; NULL for none) and
   the comma-separated names (--http-host; NULL for none, "*" for any
   Host).  Call it before the server's threads start.  Returns 0, or -1
   with the reason in err (errlen bytes). */
int gm_http_set_hosts(const char *names, const char *listen_host, char *err, size_t errlen);

#endif /* GM_PLUGINS_HTTP_H */
