/*
 * heap.c: the binary min-heap of heap.h.  No state of its own; runs on
 * whichever thread owns the heap.
 */
#include "config.h"

#include "libgearman-server/base/heap.h"

#include <stdlib.h>

static uint32_t *
pos_of(const struct gm_heap *h, void *item)
{
    return (uint32_t *)(void *)((char *)item + h->pos_off);
}

static void
put(struct gm_heap *h, uint32_t i, struct gm_heap_entry e)
{
    h->e[i] = e;
    *pos_of(h, e.item) = i;
}

static void
sift_up(struct gm_heap *h, uint32_t i)
{
    struct gm_heap_entry e = h->e[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->e[parent].due_ms <= e.due_ms)
            break;
        put(h, i, h->e[parent]);
        i = parent;
    }
    put(h, i, e);
}

static void
sift_down(struct gm_heap *h, uint32_t i)
{
    struct gm_heap_entry e = h->e[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= h->len)
            break;
        if (c + 1 < h->len && h->e[c + 1].due_ms < h->e[c].due_ms)
            c++;
        if (h->e[c].due_ms >= e.due_ms)
            break;
        put(h, i, h->e[c]);
        i = c;
    }
    put(h, i, e);
}

void
gm_heap_destroy(struct gm_heap *h)
{
    free(h->e);
    h->e = NULL;
    h->len = h->cap = 0;
}

bool
gm_heap_push(struct gm_heap *h, void *item, int64_t due_ms)
{
    if (h->len == h->cap) {
        uint32_t n = h->cap ? h->cap * 2 : 64;
        struct gm_heap_entry *e = realloc(h->e, n * sizeof *e);
        if (!e)
            return false;
        h->e = e;
        h->cap = n;
    }
    h->e[h->len] = (struct gm_heap_entry){due_ms, item};
    *pos_of(h, item) = h->len++;
    sift_up(h, h->len - 1);
    return true;
}

void
gm_heap_remove(struct gm_heap *h, void *item)
{
    uint32_t *pos = pos_of(h, item);
    uint32_t i = *pos;
    if (i == GM_HEAP_NONE)
        return;
    *pos = GM_HEAP_NONE;
    h->len--;
    if (i == h->len)
        return;
    struct gm_heap_entry last = h->e[h->len];
    put(h, i, last);
    sift_up(h, i);
    sift_down(h, *pos_of(h, last.item));
}
