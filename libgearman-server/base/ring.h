/*
 * ring.h: a bounded single-producer single-consumer ring on C11 atomics.
 *
 * GM_RING_DEFINE(name, T) declares `struct name` and static inline functions
 * (T must be a type name that `const T *` qualifies correctly: use a typedef
 * for a pointer type)
 * `name_*` that move values of type T from exactly one producer thread to
 * exactly one consumer thread without locks.  Slots hold T by value, so a
 * message crosses threads without an allocation; ownership of whatever the
 * value points to passes with it.
 *
 * Layout: the consumer's index and its cached copy of the producer's index
 * share one cache line; the producer's indices share another; the read-only
 * mask and slot pointer a third.  Each side re-reads the other's index only
 * when its cached copy says the ring looks full (producer) or empty
 * (consumer), so in a burst the shared lines bounce once, not per item.
 *
 * Bursts are published once: the producer fills slots with name_alloc() +
 * name_produce() (or name_push()) and makes them all visible with one
 * release store in name_publish().  The consumer reads with name_peek() +
 * name_consume() and hands the slots back with one release store in
 * name_release().  Indices are free-running size_t counters; the capacity is
 * a power of two.
 *
 * Threads: name_init/name_destroy by the owner before/after both sides run;
 * alloc/produce/push/publish/free_space only by the producer; peek/consume/
 * release/pending only by the consumer.
 *
 * GM_SPILL_DEFINE(name, ring, T) declares a producer's spill list for a
 * ring `ring` of T: a producer that must not wait for the consumer keeps
 * what finds the ring full in order on the list (struct name), and moves it
 * into the ring later (name_move).  While anything waits on the list new
 * values go behind it, so order is kept.  The wants-space handshake: a
 * producer that finds the ring full sets the consumer's flag `wants` (the
 * consumer wakes the producer once it has drained the ring), then looks
 * once more, in case the consumer drained in between.  Producer thread
 * only.
 */
#ifndef GM_RING_H
#define GM_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define GM_CACHE_LINE 64

#define GM_RING_DEFINE(name, T)                                                    \
    struct name {                                                                  \
        /* consumer side */                                                        \
        _Alignas(GM_CACHE_LINE) _Atomic size_t head; /* published consumer pos */  \
        size_t head_local;  /* consumer's position, ahead of head until release */ \
        size_t tail_cache;  /* consumer's last view of tail */                     \
        /* producer side */                                                        \
        _Alignas(GM_CACHE_LINE) _Atomic size_t tail; /* published producer pos */  \
        size_t tail_local;  /* producer's position, ahead of tail until publish */ \
        size_t head_cache;  /* producer's last view of head */                     \
        /* read-only after init */                                                 \
        _Alignas(GM_CACHE_LINE) size_t mask;                                       \
        T *slots;                                                                  \
    };                                                                             \
                                                                                   \
    /* Allocates 'capacity' slots (rounded up to a power of two, at least 2);   \
       returns 0, or -1 with the ring unusable if memory is short. */            \
    static inline int name##_init(struct name *r, size_t capacity)                 \
    {                                                                              \
        size_t cap = 2;                                                            \
        while (cap < capacity)                                                     \
            cap <<= 1;                                                             \
        memset(r, 0, sizeof *r);                                                   \
        r->slots = calloc(cap, sizeof(T));                                         \
        if (!r->slots)                                                             \
            return -1;                                                             \
        r->mask = cap - 1;                                                         \
        atomic_init(&r->head, 0);                                                  \
        atomic_init(&r->tail, 0);                                                  \
        return 0;                                                                  \
    }                                                                              \
                                                                                   \
    /* Frees the slots; the values still in the ring are the caller's concern. */ \
    static inline void name##_destroy(struct name *r)                              \
    {                                                                              \
        free(r->slots);                                                            \
        r->slots = NULL;                                                           \
    }                                                                              \
                                                                                   \
    static inline size_t name##_capacity(const struct name *r)                     \
    {                                                                              \
        return r->mask + 1;                                                        \
    }                                                                              \
                                                                                   \
    /* Producer: returns the next free slot to fill, or NULL if the ring is     \
       full.  The slot becomes part of the ring at name_produce(). */            \
    static inline T *name##_alloc(struct name *r)                                  \
    {                                                                              \
        if (r->tail_local - r->head_cache > r->mask) {                             \
            r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);  \
            if (r->tail_local - r->head_cache > r->mask)                           \
                return NULL;                                                       \
        }                                                                          \
        return &r->slots[r->tail_local & r->mask];                                 \
    }                                                                              \
                                                                                   \
    /* Producer: whether the consumer has taken every value produced so far   \
       (published or not). */                                                    \
    static inline bool name##_drained(struct name *r)                              \
    {                                                                              \
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);      \
        return r->head_cache == r->tail_local;                                     \
    }                                                                              \
                                                                                   \
    /* Producer: commits the slot returned by the last name_alloc(); it stays   \
       invisible to the consumer until name_publish(). */                        \
    static inline void name##_produce(struct name *r)                              \
    {                                                                              \
        r->tail_local++;                                                           \
    }                                                                              \
                                                                                   \
    /* Producer: copies *v into the ring; returns false (nothing done) if full. */ \
    static inline bool name##_push(struct name *r, const T *v)                     \
    {                                                                              \
        T *slot = name##_alloc(r);                                                 \
        if (!slot)                                                                 \
            return false;                                                          \
        *slot = *v;                                                                \
        name##_produce(r);                                                         \
        return true;                                                               \
    }                                                                              \
                                                                                   \
    /* Producer: makes every produced slot visible with one release store;      \
       returns true if anything new was published. */                           \
    static inline bool name##_publish(struct name *r)                              \
    {                                                                              \
        if (atomic_load_explicit(&r->tail, memory_order_relaxed) == r->tail_local) \
            return false;                                                          \
        atomic_store_explicit(&r->tail, r->tail_local, memory_order_release);      \
        return true;                                                               \
    }                                                                              \
                                                                                   \
    /* Producer: number of slots it could still fill (a lower bound). */         \
    static inline size_t name##_free_space(struct name *r)                         \
    {                                                                              \
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);      \
        return r->mask + 1 - (r->tail_local - r->head_cache);                      \
    }                                                                              \
                                                                                   \
    /* Consumer: returns the oldest unconsumed slot, or NULL if the ring is     \
       empty.  The slot stays valid until name_release(). */                     \
    static inline T *name##_peek(struct name *r)                                   \
    {                                                                              \
        if (r->head_local == r->tail_cache) {                                      \
            r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);  \
            if (r->head_local == r->tail_cache)                                    \
                return NULL;                                                       \
        }                                                                          \
        return &r->slots[r->head_local & r->mask];                                 \
    }                                                                              \
                                                                                   \
    /* Consumer: moves past the slot returned by the last name_peek(). */        \
    static inline void name##_consume(struct name *r)                              \
    {                                                                              \
        r->head_local++;                                                           \
    }                                                                              \
                                                                                   \
    /* Consumer: pops the oldest value into *v; returns false if empty.  The    \
       slot is handed back at the next name_release(). */                        \
    static inline bool name##_pop(struct name *r, T *v)                            \
    {                                                                              \
        T *slot = name##_peek(r);                                                  \
        if (!slot)                                                                 \
            return false;                                                          \
        *v = *slot;                                                                \
        name##_consume(r);                                                         \
        return true;                                                               \
    }                                                                              \
                                                                                   \
    /* Consumer: hands every consumed slot back to the producer with one        \
       release store. */                                                         \
    static inline void name##_release(struct name *r)                              \
    {                                                                              \
        if (atomic_load_explicit(&r->head, memory_order_relaxed) != r->head_local) \
            atomic_store_explicit(&r->head, r->head_local, memory_order_release);  \
    }                                                                              \
                                                                                   \
    /* Consumer: number of published, unconsumed values (a lower bound). */      \
    static inline size_t name##_pending(struct name *r)                            \
    {                                                                              \
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);      \
        return r->tail_cache - r->head_local;                                      \
    }

#define GM_SPILL_DEFINE(name, ring, T)                                             \
    struct name##_node {                                                           \
        struct name##_node *next;                                                  \
        T v;                                                                       \
    };                                                                             \
    struct name {                                                                  \
        struct name##_node *head, *tail;                                           \
        size_t len;         /* values waiting on the list */                       \
    };                                                                             \
                                                                                   \
    /* A ring slot for one value, if nothing waits on the list and the ring has \
       room; else NULL.  With wants, a full ring sets it and is tried again. */  \
    static inline T *name##_slot(struct name *s, struct ring *r, _Atomic int *wants) \
    {                                                                              \
        if (s->head)                                                               \
            return NULL;                                                           \
        T *slot = ring##_alloc(r);                                                 \
        if (slot || !wants)                                                        \
            return slot;                                                           \
        atomic_store(wants, 1);                                                    \
        atomic_thread_fence(memory_order_seq_cst);                                 \
        return ring##_alloc(r);                                                    \
    }                                                                              \
                                                                                   \
    /* Puts node (its value filled in) at the end of the list. */                \
    static inline void name##_append(struct name *s, struct name##_node *n)        \
    {                                                                              \
        n->next = NULL;                                                            \
        if (s->tail)                                                               \
            s->tail->next = n;                                                     \
        else                                                                       \
            s->head = n;                                                           \
        s->tail = n;                                                               \
        s->len++;                                                                  \
    }                                                                              \
                                                                                   \
    /* Copies *v into the ring (produced, not yet published) if nothing waits \
       and there is room: returns 1 (spare, if any, is freed).  Else onto the   \
       list, in spare or a new node: returns 0; -1 if memory is short (never    \
       with a spare). */                                                         \
    static inline int name##_put(struct name *s, struct ring *r, const T *v,       \
                                 struct name##_node *spare)                        \
    {                                                                              \
        T *slot = name##_slot(s, r, NULL);                                         \
        if (slot) {                                                                \
            *slot = *v;                                                            \
            ring##_produce(r);                                                     \
            free(spare);                                                           \
            return 1;                                                              \
        }                                                                          \
        struct name##_node *n = spare ? spare : malloc(sizeof *n);                 \
        if (!n)                                                                    \
            return -1;                                                             \
        n->v = *v;                                                                 \
        name##_append(s, n);                                                       \
        return 0;                                                                  \
    }                                                                              \
                                                                                   \
    /* Moves waiting values into the ring, in order, while it has room (the     \
       handshake on wants when it is full); returns true if it moved any. */     \
    static inline bool name##_move(struct name *s, struct ring *r, _Atomic int *wants) \
    {                                                                              \
        bool moved = false;                                                        \
        while (s->head) {                                                          \
            T *slot = ring##_alloc(r);                                             \
            if (!slot) {                                                           \
                atomic_store(wants, 1);                                            \
                atomic_thread_fence(memory_order_seq_cst);                         \
                if (!(slot = ring##_alloc(r)))                                     \
                    break;                                                         \
            }                                                                      \
            struct name##_node *n = s->head;                                       \
            *slot = n->v;                                                          \
            ring##_produce(r);                                                     \
            moved = true;                                                          \
            s->head = n->next;                                                     \
            s->len--;                                                              \
            if (!s->head)                                                          \
                s->tail = NULL;                                                    \
            free(n);                                                               \
        }                                                                          \
        return moved;                                                              \
    }                                                                              \
                                                                                   \
    /* The last value waiting on the list (to merge into), or NULL. */           \
    static inline T *name##_last(struct name *s)                                   \
    {                                                                              \
        return s->tail ? &s->tail->v : NULL;                                       \
    }                                                                              \
                                                                                   \
    /* Empties the list, passing each value to drop (if not NULL) first. */      \
    static inline void name##_clear(struct name *s, void (*drop)(T *))             \
    {                                                                              \
        while (s->head) {                                                          \
            struct name##_node *n = s->head;                                       \
            s->head = n->next;                                                     \
            if (drop)                                                              \
                drop(&n->v);                                                       \
            free(n);                                                               \
        }                                                                          \
        s->tail = NULL;                                                            \
        s->len = 0;                                                                \
    }

#endif /* GM_RING_H */
