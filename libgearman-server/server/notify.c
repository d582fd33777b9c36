/*
 * notify.c: readiness for a service manager (see notify.h), on libsystemd's
 * sd_notify when configure found it, no-ops otherwise.
 *
 * Runs on the main thread.
 */
#include "config.h"

#include "libgearman-server/server/notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/log.h"

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>

bool
gm_notify_supported(void)
{
    return true;
}

bool
gm_notify_expected(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    return s && *s;
}

void
gm_notify_ready(const char *status_fmt, ...)
{
    if (!gm_notify_expected())
        return;
    char status[256];
    va_list ap;
    va_start(ap, status_fmt);
    vsnprintf(status, sizeof status, status_fmt, ap);
    va_end(ap);
    /* a newline would end the STATUS= field and start another */
    for (char *p = status; (p = strchr(p, '\n')); )
        *p = ' ';
    int rc = sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    if (rc < 0)
        gm_log(GM_LOG_WARNING, "could not tell the service manager we are ready (NOTIFY_SOCKET %s): %s",
               getenv("NOTIFY_SOCKET"), strerror(-rc));
}

#else /* !HAVE_LIBSYSTEMD */

bool
gm_notify_supported(void)
{
    return false;
}

bool
gm_notify_expected(void)
{
    return false;
}

void
gm_notify_ready(const char *status_fmt, ...)
{
    (void)status_fmt;
}

#endif
