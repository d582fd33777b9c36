/*
 * block.c: growing blocks and the byte builder of block.h.  No state of its
 * own; a block being grown or built belongs to one thread until handed on.
 */
#include "config.h"

#include "libgearman-server/base/block.h"

#include <string.h>

bool
gm_block_grow(struct gm_block **b, size_t need, size_t first_cap, size_t max)
{
    size_t cap = *b ? (*b)->cap : 0;
    if (need <= cap)
        return true;
    if (need > max || max > UINT32_MAX)
        return false;
    size_t n = cap ? cap : (first_cap ? first_cap : 1);
    while (n < need)
        n = n > max / 2 ? max : n * 2;
    struct gm_block *nb = realloc(*b, sizeof *nb + n);
    if (!nb)
        return false;
    if (!*b)
        atomic_init(&nb->refs, 1);
    nb->cap = (uint32_t)n;
    *b = nb;
    return true;
}

void
gm_bytes_add(struct gm_bytes *w, const void *p, size_t n)
{
    if (w->failed || n == 0)
        return;
    size_t max = w->max ? w->max : UINT32_MAX;
    if (n > max - w->len || !gm_block_grow(&w->b, w->len + n, 256, max)) {
        w->failed = true;
        return;
    }
    memcpy(w->b->data + w->len, p, n);
    w->len += n;
}

void
gm_bytes_str(struct gm_bytes *w, const char *s)
{
    gm_bytes_add(w, s, strlen(s));
}
