/*
 * plugins/queue/last_record.h: which record of a batch decides a job's
 * final state, for the SQL backends (postgres.c, mysql.c), whose batch
 * writes every ADD in one statement and every DONE in another: the later
 * of an ADD and a DONE of one handle is what the batch means, and a
 * statement should touch a row once.  Persistence thread only (the sort
 * goes through a file-static pointer).
 */
#ifndef GM_QUEUE_LAST_RECORD_H
#define GM_QUEUE_LAST_RECORD_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/persist/queue_backend.h"

/* Scratch kept from batch to batch. */
struct gm_qlast {
    size_t *order; /* record indices sorted by handle */
    bool *last;    /* last[i]: record i is its handle's last in the batch */
    size_t cap;
};

static const struct gm_qrecord *gm_qlast_recs; /* for gm_qlast_cmp */

static inline int
gm_qlast_cmp(const void *x, const void *y)
{
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    const struct gm_qrecord *a = &gm_qlast_recs[i], *b = &gm_qlast_recs[j];
    uint32_t n = a->handle_len < b->handle_len ? a->handle_len : b->handle_len;
    int d = memcmp(a->handle, b->handle, n);
    if (d == 0)
        d = (a->handle_len > b->handle_len) - (a->handle_len < b->handle_len);
    if (d == 0)
        d = (i > j) - (i < j);
    return d;
}

/* Sets s->last[i] for the ADD or DONE records that are their handle's
   last in recs[0..n) (false for COUNTER and POLICY records).  Returns
   false if memory ran out. */
static inline bool
gm_qlast_mark(struct gm_qlast *s, const struct gm_qrecord *recs, size_t n)
{
    if (n > s->cap) {
        size_t *o = realloc(s->order, n * sizeof *o);
        if (o)
            s->order = o;
        bool *l = realloc(s->last, n * sizeof *l);
        if (l)
            s->last = l;
        if (!o || !l)
            return false;
        s->cap = n;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        s->last[i] = false;
        if (recs[i].op == GM_QOP_ADD || recs[i].op == GM_QOP_DONE)
            s->order[m++] = i;
    }
    gm_qlast_recs = recs;
    qsort(s->order, m, sizeof *s->order, gm_qlast_cmp);
    for (size_t k = 0; k < m; k++) {
        const struct gm_qrecord *a = &recs[s->order[k]], *b = k + 1 < m ? &recs[s->order[k + 1]] : NULL;
        if (!b || a->handle_len != b->handle_len || memcmp(a->handle, b->handle, a->handle_len) != 0)
            s->last[s->order[k]] = true;
    }
    return true;
}

static inline void
gm_qlast_free(struct gm_qlast *s)
{
    free(s->order);
    free(s->last);
    s->order = NULL;
    s->last = NULL;
    s->cap = 0;
}

#endif /* GM_QUEUE_LAST_RECORD_H */
