/*
 * hashtab.h: an intrusive chained hash table that grows, and the hash
 * function the server uses for names, handles and unique keys.
 *
 * Elements embed `struct gm_hnode` (next pointer + cached hash).  The table
 * stores no keys: lookups walk one bucket and let the caller compare, so
 * one table type serves every index (functions by name, jobs by handle,
 * jobs by (function, unique)).  The bucket array doubles when the count
 * passes the bucket count, so chains stay short from 10 to 10 million
 * entries; it never shrinks below its initial size.
 * Threads: the owner of the indexed objects (the dispatcher).
 */
#ifndef GM_HASHTAB_H
#define GM_HASHTAB_H

#include <stddef.h>
#include <stdint.h>

struct gm_hnode {
    struct gm_hnode *next;
    uint32_t hash;
    uint32_t owner_word; /* never touched by the table: 4 bytes (else padding) the element may use */
};

struct gm_htab {
    struct gm_hnode **buckets;
    uint32_t mask;    /* buckets - 1 */
    uint32_t count;
    uint32_t min_buckets;
};

/* Hashes len bytes (64-bit FNV-1a folded to 32 bits) continuing from seed;
   start with GM_HASH_SEED. */
#define GM_HASH_SEED 0xcbf29ce484222325ull
uint64_t gm_hash_bytes(uint64_t seed, const void *p, size_t len);

static inline uint32_t gm_hash_fold(uint64_t h)
{
    return (uint32_t)(h ^ (h >> 32));
}

/* Initialises a table with at least `buckets` buckets (rounded up to a power
   of two); returns 0 or -1 if memory is short. */
int gm_htab_init(struct gm_htab *t, uint32_t buckets);

/* Frees the bucket array (the elements are the caller's). */
void gm_htab_destroy(struct gm_htab *t);

/* Adds n with hash h; grows the table when it gets crowded (if growing fails
   the insert still succeeds, with longer chains). */
void gm_htab_insert(struct gm_htab *t, struct gm_hnode *n, uint32_t h);

/* Removes n, which must be in the table. */
void gm_htab_remove(struct gm_htab *t, struct gm_hnode *n);

/* First node of the bucket for hash h; walk with ->next and compare ->hash. */
static inline struct gm_hnode *gm_htab_bucket(const struct gm_htab *t, uint32_t h)
{
    return t->buckets[h & t->mask];
}

#endif /* GM_HASHTAB_H */
