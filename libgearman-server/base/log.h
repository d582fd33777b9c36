/*
 * log.h: one-line log records with level, time, thread and message.
 *
 * Owns the log file descriptor and the level.  The level and destination are
 * set by the main thread before other threads start (and the file reopened
 * on SIGHUP, which swaps the descriptor atomically with dup2).  gm_log() is
 * a macro that tests the level before evaluating its arguments, so a record
 * below the configured level costs one comparison and no formatting.
 * Any thread may log; each record is written with a single write(2).
 */
#ifndef GM_LOG_H
#define GM_LOG_H

#include <stdbool.h>

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
