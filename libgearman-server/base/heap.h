/*
 * heap.h: a binary min-heap of items ordered by a due time in ms.
 *
 * Each item keeps its own position in the heap (a uint32_t at pos_off
 * bytes into the item, GM_HEAP_NONE while it is not in the heap), so that
 * removing an arbitrary item is O(log n) with no search.  The heap holds
 * pointers only and owns nothing they point to.
 *
 * Threads: none of its own; one thread at a time (the dispatcher uses it
 * for future jobs and running jobs' deadlines).
 */
#ifndef GM_HEAP_H
#define GM_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_HEAP_NONE UINT32_MAX

struct gm_heap_entry {
    int64_t due_ms;
    void *item;
};

struct gm_heap {
    struct gm_heap_entry *e;
    uint32_t len, cap;
    size_t pos_off; /* offset of the item's uint32_t position */
};

/* An empty heap for items whose position lives at pos_off. */
static inline void
gm_heap_init(struct gm_heap *h, size_t pos_off)
{
    h->e = NULL;
    h->len = h->cap = 0;
    h->pos_off = pos_off;
}

/* Frees the heap's array (not the items). */
void gm_heap_destroy(struct gm_heap *h);

/* Adds item, due at due_ms; false (nothing done) if memory is short. */
bool gm_heap_push(struct gm_heap *h, void *item, int64_t due_ms);

/* Removes item if it is in the heap. */
void gm_heap_remove(struct gm_heap *h, void *item);

/* The item due first, or NULL; its due time, or -1 when empty. */
static inline void *
gm_heap_top(const struct gm_heap *h)
{
    return h->len ? h->e[0].item : NULL;
}

static inline int64_t
gm_heap_top_due(const struct gm_heap *h)
{
    return h->len ? h->e[0].due_ms : -1;
}

#endif /* GM_HEAP_H */
