/*
 * hashtab.c: the intrusive hash table (see hashtab.h).  Dispatcher thread.
 */
#include "config.h"

#include "libgearman-server/base/hashtab.h"

#include <stdlib.h>

uint64_t
gm_hash_bytes(uint64_t seed, const void *p, size_t len)
{
    const unsigned char *s = p;
    uint64_t h = seed;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int
gm_htab_init(struct gm_htab *t, uint32_t buckets)
{
    uint32_t n = 16;
    while (n < buckets && n < (1u << 30))
        n <<= 1;
    t->buckets = calloc(n, sizeof *t->buckets);
    if (!t->buckets)
        return -1;
    t->mask = n - 1;
    t->count = 0;
    t->min_buckets = n;
    return 0;
}

void
gm_htab_destroy(struct gm_htab *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->count = 0;
}

static void
grow(struct gm_htab *t)
{
    uint32_t n = (t->mask + 1) * 2;
    if (n == 0 || n > (1u << 30))
        return;
    struct gm_hnode **nb = calloc(n, sizeof *nb);
    if (!nb)
        return;
    for (uint32_t i = 0; i <= t->mask; i++) {
        struct gm_hnode *e = t->buckets[i];
        while (e) {
            struct gm_hnode *next = e->next;
            struct gm_hnode **slot = &nb[e->hash & (n - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = nb;
    t->mask = n - 1;
}

void
gm_htab_insert(struct gm_htab *t, struct gm_hnode *n, uint32_t h)
{
    if (t->count >= t->mask + 1)
        grow(t);
    n->hash = h;
    struct gm_hnode **slot = &t->buckets[h & t->mask];
    n->next = *slot;
    *slot = n;
    t->count++;
}

void
gm_htab_remove(struct gm_htab *t, struct gm_hnode *n)
{
    struct gm_hnode **pp = &t->buckets[n->hash & t->mask];
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = n->next;
        t->count--;
    }
    n->next = NULL;
}
