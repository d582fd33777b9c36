/*
 * list.h: intrusive circular doubly-linked lists.
 *
 * A list is a sentinel `struct gm_list`; an element embeds a `struct
 * gm_list` node and is found from it with gm_container_of().  Insertion and
 * removal are O(1) and allocate nothing.  A removed node points at itself,
 * so gm_list_linked() tells whether a node is on some list.
 * Threads: whoever owns the containing structures (the dispatcher, for job
 * and worker lists; an I/O thread, for its connection lists).
 */
#ifndef GM_LIST_H
#define GM_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct gm_list {
    struct gm_list *next, *prev;
};

#define gm_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void gm_list_init(struct gm_list *l) { l->next = l->prev = l; }
static inline bool gm_list_empty(const struct gm_list *l) { return l->next == l; }
static inline bool gm_list_linked(const struct gm_list *n) { return n->next != n; }

static inline void
gm_list_insert_between(struct gm_list *n, struct gm_list *prev, struct gm_list *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

/* Appends n at the tail of l. */
static inline void gm_list_push_back(struct gm_list *l, struct gm_list *n)
{
    gm_list_insert_between(n, l->prev, l);
}

/* Inserts n at the head of l. */
static inline void gm_list_push_front(struct gm_list *l, struct gm_list *n)
{
    gm_list_insert_between(n, l, l->next);
}

/* Unlinks n from its list and leaves it pointing at itself. */
static inline void gm_list_remove(struct gm_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

/* Returns the first node of l, or NULL if l is empty. */
static inline struct gm_list *gm_list_first(const struct gm_list *l)
{
    return l->next == l ? NULL : l->next;
}

#define gm_list_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)

/* Iterates where the body may unlink pos. */
#define gm_list_each_safe(pos, tmp, head)                                      \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif /* GM_LIST_H */
