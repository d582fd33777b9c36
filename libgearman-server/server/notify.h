/*
 * notify.h: telling a service manager (systemd, Type=notify) how the
 * server stands: READY=1 once it serves, with a STATUS= line.  Built on
 * libsystemd's sd_notify when configure found it; otherwise every call is
 * a no-op and the unit is installed as Type=exec.
 *
 * Threads: main thread only (start-up).  Owns no state: sd_notify reads
 * $NOTIFY_SOCKET on each call.
 */
#ifndef GM_NOTIFY_H
#define GM_NOTIFY_H

#include <stdbool.h>

/* Whether this build can notify (configure found libsystemd). */
bool gm_notify_supported(void);

/* Whether a service manager waits for our READY=1: $NOTIFY_SOCKET is set
   and this build can answer it.  gearmand then stays in the foreground
   (it ignores -d), as a Type=notify service must. */
bool gm_notify_expected(void);

/* Sends READY=1 and STATUS=<the formatted text> to the service manager,
   if one expects it; call it once the server serves (queue replayed,
   listeners open), or with --ha once a standby is up, and again at each
   change of role (READY=1 again is harmless; STATUS changes).  Never fails the caller: a send that fails is logged
   at WARNING. */
void gm_notify_ready(const char *status_fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* GM_NOTIFY_H */
