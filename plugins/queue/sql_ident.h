/*
 * plugins/queue/sql_ident.h: quoting an SQL identifier (a table name given
 * on the command line) for SQLite and PostgreSQL, which share the rule.
 */
#ifndef GM_SQL_IDENT_H
#define GM_SQL_IDENT_H

#include <stdlib.h>
#include <string.h>

/* Returns name as a double-quoted identifier (quotes doubled), malloc'd;
   NULL if memory is short. */
static inline char *
gm_sql_quote_ident(const char *name)
{
    size_t n = strlen(name);
    char *q = malloc(2 * n + 3), *o = q;
    if (!q)
        return NULL;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '"')
            *o++ = '"';
        *o++ = name[i];
    }
    *o++ = '"';
    *o = '\0';
    return q;
}

#endif /* GM_SQL_IDENT_H */
