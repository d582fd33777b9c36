/*
 * plugins/protocol/http/http.h: the HTTP front-end (see http.c), an
 * implementation of libgearman-server/frontend.h that gearmand/ wires in
 * for -r http.
 */
#ifndef GM_PLUGINS_HTTP_H
#define GM_PLUGINS_HTTP_H

#include "libgearman-server/frontend.h"

extern const struct gm_frontend gm_http_frontend;

#endif /* GM_PLUGINS_HTTP_H */
