/*
 * block.h: reference-counted byte blocks, the way payloads travel between
 * threads without being copied.
 *
 * A block is one allocation: a header with an atomic reference count and
 * its capacity, then the bytes.  Whoever holds a pointer into a block's
 * bytes holds one reference; the last gm_block_unref() frees it, on
 * whichever thread that happens.  An I/O thread reads sockets into a block,
 * the parsed packets go to the dispatcher as (block, pointer, length) and the
 * same bytes go on to the peer that receives them; the block is freed when
 * the last of them is done.
 *
 * Threads: any.  The count is the only shared state; the bytes are written
 * by the creating thread before the first reference is handed over (the
 * ring's release/acquire publishes them) and are read-only afterwards.
 */
#ifndef GM_BLOCK_H
#define GM_BLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

struct gm_block {
    _Atomic uint32_t refs;
    uint32_t cap;  /* bytes available in data[] */
    char data[];
};

/* Returns a new block of cap bytes holding one reference, or NULL if memory
   is short. */
static inline struct gm_block *
gm_block_new(size_t cap)
{
    if (cap > UINT32_MAX)
        return NULL;
    struct gm_block *b = malloc(sizeof *b + cap);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->cap = (uint32_t)cap;
    return b;
}

/* Adds n references (n >= 1). */
static inline void
gm_block_ref_n(struct gm_block *b, uint32_t n)
{
    atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
}

static inline void
gm_block_ref(struct gm_block *b)
{
    gm_block_ref_n(b, 1);
}

/* Drops n references; frees the block when none remain.  NULL is ignored. */
static inline void
gm_block_unref_n(struct gm_block *b, uint32_t n)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, n, memory_order_acq_rel) == n)
        free(b);
}

static inline void
gm_block_unref(struct gm_block *b)
{
    gm_block_unref_n(b, 1);
}

/* A reference to bytes inside a block (or to static bytes when blk is NULL). */
struct gm_slice {
    struct gm_block *blk;
    const char *ptr;
    uint32_t len;
};

/* Grows *b, a block nobody else holds a reference to yet, to at least need
   bytes: its capacity doubles (from first_cap when *b is NULL, which makes
   a new block with one reference) and stops at max (need <= max <=
   UINT32_MAX).  The bytes are kept.  False, *b unchanged, if memory is
   short. */
bool gm_block_grow(struct gm_block **b, size_t need, size_t first_cap, size_t max);

/* Bytes being built in a block that grows as they come, then handed on
   whole (the builder's reference goes with it).  Zero-initialised it is
   empty; max, if not 0, caps its length.  Once an addition fails (memory,
   or max) the builder stays failed and adds nothing more. */
struct gm_bytes {
    struct gm_block *b;
    size_t len;
    size_t max;
    bool failed;
};

void gm_bytes_add(struct gm_bytes *w, const void *p, size_t n);
void gm_bytes_str(struct gm_bytes *w, const char *s);

#endif /* GM_BLOCK_H */
