/*
 * log.c: the log writer (see log.h).
 *
 * Owns the log descriptor, its path and the syslog switch, and each
 * thread's budget for records about connections (thread-local, so no
 * locks).  Records are formatted on the caller's stack and written with one
 * write(2), so lines from different threads never interleave.
 */
#include "config.h"

#include "libgearman-server/base/log.h"

#include "libgearman-server/base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int gm_log_level = GM_LOG_ERROR;

static int log_fd = STDERR_FILENO;  /* -1: nowhere */
static char *log_path;              /* NULL unless logging to a named file */
static bool log_syslog;
static _Thread_local char thread_tag[16] = "main";
/* All the connections of this thread together (gm_log_peer) */
static _Thread_local struct gm_log_limit thread_limit;
static uint64_t (*log_clock)(void) = gm_mono_ms;

static const char *const level_names[GM_LOG_LEVEL_COUNT] = {
    "FATAL", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG",
};

static const int syslog_priority[GM_LOG_LEVEL_COUNT] = {
    LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG,
};

const char *
gm_log_level_name(int level)
{
    return level >= 0 && level < GM_LOG_LEVEL_COUNT ? level_names[level] : "UNKNOWN";
}

int
gm_log_level_parse(const char *name)
{
    for (int i = 0; i < GM_LOG_LEVEL_COUNT; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void
gm_log_thread_name(const char *name)
{
    snprintf(thread_tag, sizeof thread_tag, "%s", name);
}

void
gm_log_use_syslog(bool on)
{
    if (on && !log_syslog)
        openlog("gearmand", LOG_PID | LOG_NDELAY, LOG_USER);
    else if (!on && log_syslog)
        closelog();
    log_syslog = on;
}

static int
open_append(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* Makes fd (with path, owned; NULL for stderr or nowhere) the destination. */
static void
set_destination(int fd, char *path)
{
    if (log_fd > STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    free(log_path);
    log_path = path;
}

int
gm_log_open(const char *path)
{
    if (strcmp(path, "stderr") == 0) {
        set_destination(STDERR_FILENO, NULL);
        return 0;
    }
    if (strcmp(path, "none") == 0) {
        set_destination(-1, NULL);
        return 0;
    }
    int fd = open_append(path);
    if (fd < 0)
        return -1;
    char *copy = strdup(path);
    if (!copy) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    set_destination(fd, copy);
    return 0;
}

int
gm_log_reopen(void)
{
    if (!log_path || log_fd < 0)
        return 0;
    int fd = open_append(log_path);
    if (fd < 0)
        return -1;
    /* dup2 swaps the file under the same descriptor number, so a thread
       writing at this moment writes to the old or the new file, never to a
       closed descriptor. */
    if (dup2(fd, log_fd) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    return 0;
}

void
gm_log_close(void)
{
    set_destination(STDERR_FILENO, NULL);
    if (log_syslog)
        closelog();
    log_syslog = false;
}

static void
log_vwrite(int level, const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%7s %04d-%02d-%02d %02d:%02d:%02d.%06ld [%6s ] ",
                     gm_log_level_name(level), tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec, thread_tag);
    size_t head = n > 0 ? (size_t)n : 0;
    int m = vsnprintf(line + head, sizeof line - head - 1, fmt, ap);
    size_t len = head + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    if (log_fd >= 0) {
        ssize_t w = write(log_fd, line, len);
        (void)w;
    }
    if (log_syslog && level >= 0 && level < GM_LOG_LEVEL_COUNT)
        syslog(syslog_priority[level], "%.*s", (int)(len - 1 - head), line + head);
}

void
gm_log_write(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

bool
gm_log_limit_take(struct gm_log_limit *l, uint64_t now, uint32_t max, uint32_t window_ms, int level)
{
    /* now < window_start (a clock set back by a test) also starts one */
    if (!l->window_start || now - l->window_start >= window_ms) {
        l->window_start = now;
        l->lines = 0;
    }
    if (l->lines < max) {
        l->lines++;
        return true;
    }
    if (!l->suppressed || level < l->worst)
        l->worst = level;
    l->suppressed++;
    return false;
}

/* The line that says what the thread's budget held back, if anything. */
static void
report_thread(void)
{
    if (!thread_limit.suppressed)
        return;
    gm_log_write(thread_limit.worst,
                 "%llu more lines about connections suppressed (over %u in %u s on this thread)",
                 (unsigned long long)thread_limit.suppressed, GM_LOG_THREAD_LINES,
                 GM_LOG_WINDOW_MS / 1000);
    thread_limit.suppressed = 0;
}

/* The line that says what a connection's budget held back. */
static void
report_peer(struct gm_log_limit *lim, const char *addr, unsigned port)
{
    gm_log_write(lim->worst, "%s:%u: %llu more lines suppressed (over %u in %u s from one connection)",
                 addr, port, (unsigned long long)lim->suppressed, GM_LOG_PEER_LINES,
                 GM_LOG_WINDOW_MS / 1000);
    lim->suppressed = 0;
}

void
gm_log_peer_write(struct gm_log_limit *lim, const char *addr, unsigned port, int level,
                  const char *fmt, ...)
{
    if (level <= GM_LOG_LIMITED) {
        uint64_t now = log_clock();
        if (lim && !gm_log_limit_take(lim, now, GM_LOG_PEER_LINES, GM_LOG_WINDOW_MS, level))
            return;
        if (!gm_log_limit_take(&thread_limit, now, GM_LOG_THREAD_LINES, GM_LOG_WINDOW_MS, level))
            return;
        report_thread();
        if (lim && lim->suppressed)
            report_peer(lim, addr, port);
    }
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void
gm_log_peer_close(struct gm_log_limit *lim, const char *addr, unsigned port)
{
    bool mine = lim && lim->suppressed && lim->worst <= gm_log_level;
    if (!mine && !thread_limit.suppressed)
        return;
    uint64_t now = log_clock();
    if (!mine) {
        /* The thread's count, once its window is over, need not wait for
           the next line: any connection's close says it. */
        if (now - thread_limit.window_start >= GM_LOG_WINDOW_MS &&
            gm_log_limit_take(&thread_limit, now, GM_LOG_THREAD_LINES, GM_LOG_WINDOW_MS,
                              thread_limit.worst))
            report_thread();
        return;
    }
    if (!gm_log_limit_take(&thread_limit, now, GM_LOG_THREAD_LINES, GM_LOG_WINDOW_MS, lim->worst)) {
        /* the report itself is held back: the thread's count takes over
           the lines it would have counted (one of them counted already) */
        thread_limit.suppressed += lim->suppressed - 1;
        lim->suppressed = 0;
        return;
    }
    report_thread();
    report_peer(lim, addr, port);
}

void
gm_log_set_clock(uint64_t (*now_ms)(void))
{
    log_clock = now_ms ? now_ms : gm_mono_ms;
    memset(&thread_limit, 0, sizeof thread_limit);
}
