/*
 * admin_split.c: splitting admin text lines into words (see admin_split.h).
 * Runs on I/O threads (and in the fuzzer); no state.
 */
#include "config.h"

#include "libgearman-server/proto/admin_split.h"

#include <string.h>

void
gm_admin_split(const char *line, size_t len, struct gm_admin_words *w)
{
    /* gearmand's rule, kept for byte compatibility: each run of spaces is
       one separator, so a leading space gives an empty first word (an
       unknown command) and a trailing space an empty last word. */
    w->count = 0;
    w->more = 0;
    size_t start = 0;
    for (;;) {
        const char *sp = start < len ? memchr(line + start, ' ', len - start) : NULL;
        size_t end = sp ? (size_t)(sp - line) : len;
        if (w->count == GM_ADMIN_MAX_WORDS) {
            w->more = 1;
            return;
        }
        w->start[w->count] = (uint16_t)start;
        w->len[w->count] = (uint16_t)(end - start);
        w->count++;
        if (!sp)
            return;
        start = end;
        while (start < len && line[start] == ' ')
            start++;
    }
}
