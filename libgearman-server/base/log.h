/*
 * log.h: one-line log records with level, time, thread and message.
 *
 * Owns the log file descriptor and the level.  The level and destination are
 * set by the main thread before other threads start (and the file reopened
 * on SIGHUP, which swaps the descriptor atomically with dup2).  gm_log() is
 * a macro that tests the level before evaluating its arguments, so a record
 * below the configured level costs one comparison and no formatting.
 * Any thread may log; each record is written with a single write(2).
 *
 * Records a connection causes (a bad request, a protocol error, a close
 * for bad input) go through gm_log_peer(), which rate-limits them at
 * WARNING and above: at most GM_LOG_PEER_LINES per GM_LOG_WINDOW_MS for one
 * connection (the budget, struct gm_log_limit, lives in the per-connection
 * struct of the thread that logs), and GM_LOG_THREAD_LINES per window for
 * all the connections of one thread together (a thread-local budget), so
 * neither one peer nor ten thousand can flood the log.  What a budget holds
 * back is counted and reported in one line: before the next line it lets
 * through, or when a connection closes (gm_log_peer_close).  Records
 * about the server itself (start-up, backends) use gm_log() and are never
 * limited.  No locks: every budget belongs to one thread.
 */
#ifndef GM_LOG_H
#define GM_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum gm_log_level {
    GM_LOG_FATAL = 0,
    GM_LOG_ALERT,
    GM_LOG_CRITICAL,
    GM_LOG_ERROR,
    GM_LOG_WARNING,
    GM_LOG_NOTICE,
    GM_LOG_INFO,
    GM_LOG_DEBUG,
    GM_LOG_LEVEL_COUNT
};

extern int gm_log_level;

#define gm_log(level, ...)                                                     \
    do {                                                                       \
        if ((level) <= gm_log_level)                                           \
            gm_log_write((level), __VA_ARGS__);                                \
    } while (0)

/* Formats and writes one record; use gm_log() so the level is tested first. */
void gm_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The budgets of gm_log_peer(): lines one connection may cause per window,
   lines all the connections of one thread may cause per window. */
#define GM_LOG_PEER_LINES 10
#define GM_LOG_THREAD_LINES 100
#define GM_LOG_WINDOW_MS 10000
/* Records less severe than this (NOTICE, INFO, DEBUG: asked for with -v)
   are not limited. */
#define GM_LOG_LIMITED GM_LOG_WARNING

/* A budget of "max lines per window".  All zero is a fresh budget.  Owned by
   one thread (the one that logs through it); no locks. */
struct gm_log_limit {
    uint64_t window_start; /* clock (ms) when the current window began; 0: none yet */
    uint64_t suppressed;   /* lines held back since the last report */
    uint32_t lines;        /* lines let through in the current window */
    int worst;             /* the most severe level held back (valid if suppressed) */
};

/* Counts one line of `level` at time now (ms) against a budget of max lines
   per window_ms: returns true if it may be written, or false after counting
   it as suppressed.  A window begins with the first line after the last
   one ended.  now is never 0 (gm_mono_ms). */
bool gm_log_limit_take(struct gm_log_limit *l, uint64_t now, uint32_t max, uint32_t window_ms, int level);

/* A record caused by the connection addr:port, limited by its budget lim
   and the thread's (see the top); lim NULL (and addr unused): only the
   thread's, for a record that comes once per connection.  Tests the level
   first, like gm_log(). */
#define gm_log_peer(lim, addr, port, level, ...)                               \
    do {                                                                       \
        if ((level) <= gm_log_level)                                           \
            gm_log_peer_write((lim), (addr), (port), (level), __VA_ARGS__);    \
    } while (0)

void gm_log_peer_write(struct gm_log_limit *lim, const char *addr, unsigned port, int level,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* At a connection's close: reports what its budget held back, if anything
   (one line, still under the thread's budget), and what the thread's
   budget held back if its window is over. */
void gm_log_peer_close(struct gm_log_limit *lim, const char *addr, unsigned port);

/* The clock of the budgets (tests drive it by hand); NULL restores
   gm_mono_ms.  Also starts a fresh budget for the calling thread. */
void gm_log_set_clock(uint64_t (*now_ms)(void));

/* Sends records to path: "stderr" for standard error, "none" for nowhere,
   anything else a file opened for appending.  Returns 0, or -1 with errno
   set if the file cannot be opened (the destination is then unchanged). */
int gm_log_open(const char *path);

/* Reopens the log file by name (for log rotation on SIGHUP); does nothing
   when logging to stderr or nowhere.  Returns 0 or -1 with errno. */
int gm_log_reopen(void);

/* Also sends records to syslog (facility LOG_USER, ident "gearmand"). */
void gm_log_use_syslog(bool on);

/* Names the calling thread in its records ("main", "disp", "io-0", ...). */
void gm_log_thread_name(const char *name);

/* Returns "ERROR" etc. for a level, or "UNKNOWN". */
const char *gm_log_level_name(int level);

/* Returns the level named exactly (upper case, as gearmand accepts), or -1. */
int gm_log_level_parse(const char *name);

/* Closes the log file (at exit). */
void gm_log_close(void);

#endif /* GM_LOG_H */
