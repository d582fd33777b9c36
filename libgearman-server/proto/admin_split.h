/*
 * admin_split.h: the admin text protocol's line parsing (I/O thread side).
 *
 * A connection's message whose first byte is not NUL is a text line ending
 * in "\n" (an optional "\r" before it is dropped).  The I/O thread splits it
 * into words here and hands the words to the dispatcher, which runs the
 * command (admin.c).  Pure functions, any thread.
 */
#ifndef GM_ADMIN_H
#define GM_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "libgearman-server/proto/msg.h"

/* Splits line[0..len) (no end-of-line bytes; len < GM_TEXT_LINE_MAX) at
   spaces; a run of spaces is one separator, tabs are not separators, and an
   empty line is one empty word. */
void gm_admin_split(const char *line, size_t len, struct gm_admin_words *w);

#endif /* GM_ADMIN_H */
