/*
 * log.c: the log writer (see log.h).
 *
 * Owns the log descriptor, its path and the syslog switch.  Records are
 * formatted on the caller's stack and written with one write(2), so lines
 * from different threads never interleave.
 */
#include "config.h"

#include "libgearman-server/base/log.h"

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

void
gm_log_write(int level, const char *fmt, ...)
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
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + head, sizeof line - head - 1, fmt, ap);
    va_end(ap);
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
