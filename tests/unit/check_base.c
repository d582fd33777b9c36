/*
 * check_base.c: unit tests for the generic pieces of base/ that more than
 * one part of the server uses: the timer heap (heap.h: the dispatcher's
 * future jobs and deadlines) and growing blocks and the byte builder
 * (block.h: admin replies, HTTP responses, big packets being read).  The
 * ring and its spill list have check_ring.c.
 */
#include "config.h"

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/block.h"
#include "libgearman-server/base/heap.h"
#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* The timer heap                                                      */
/* ------------------------------------------------------------------ */

struct item {
    int64_t due;
    uint32_t pos; /* the heap's: GM_HEAP_NONE when out */
};

static void
items_init(struct item *it, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        it[i].due = (int64_t)(seed >> 40) % 1000; /* plenty of equal times */
        it[i].pos = GM_HEAP_NONE;
    }
}

/* Items come out in due order whatever order they went in. */
START_TEST(test_heap_pops_in_due_order)
{
    enum { N = 5000 };
    static struct item it[N];
    items_init(it, N, 42);
    struct gm_heap h;
    gm_heap_init(&h, offsetof(struct item, pos));
    ck_assert_ptr_null(gm_heap_top(&h));
    ck_assert_int_eq(gm_heap_top_due(&h), -1);
    for (size_t i = 0; i < N; i++)
        ck_assert(gm_heap_push(&h, &it[i], it[i].due));
    int64_t last = -1;
    for (size_t i = 0; i < N; i++) {
        struct item *top = gm_heap_top(&h);
        ck_assert_ptr_nonnull(top);
        ck_assert_int_eq(gm_heap_top_due(&h), top->due);
        ck_assert_int_ge(top->due, last);
        last = top->due;
        gm_heap_remove(&h, top);
        ck_assert_uint_eq(top->pos, GM_HEAP_NONE);
    }
    ck_assert_ptr_null(gm_heap_top(&h));
    gm_heap_destroy(&h);
}
END_TEST

/* Removing items from the middle keeps every position right and the order
   intact; removing one that is out of the heap does nothing. */
START_TEST(test_heap_removes_any_item_and_keeps_positions)
{
    enum { N = 2000 };
    static struct item it[N];
    items_init(it, N, 7);
    struct gm_heap h;
    gm_heap_init(&h, offsetof(struct item, pos));
    for (size_t i = 0; i < N; i++)
        ck_assert(gm_heap_push(&h, &it[i], it[i].due));
    for (size_t i = 0; i < N; i += 3)
        gm_heap_remove(&h, &it[i]);
    gm_heap_remove(&h, &it[0]); /* out already */
    for (uint32_t k = 0; k < h.len; k++) {
        struct item *x = h.e[k].item;
        ck_assert_uint_eq(x->pos, k);
        if (k)
            ck_assert_int_le(h.e[(k - 1) / 2].due_ms, h.e[k].due_ms);
    }
    ck_assert_uint_eq(h.len, N - (N + 2) / 3);
    int64_t last = -1;
    struct item *top;
    while ((top = gm_heap_top(&h))) {
        ck_assert_int_ge(top->due, last);
        last = top->due;
        gm_heap_remove(&h, top);
    }
    gm_heap_destroy(&h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Growing blocks and the byte builder                                 */
/* ------------------------------------------------------------------ */

/* A NULL block becomes a new one with one reference; growth doubles, keeps
   the bytes and stops at max; a need over max is refused. */
START_TEST(test_block_grow_doubles_keeps_bytes_and_stops_at_max)
{
    struct gm_block *b = NULL;
    ck_assert(gm_block_grow(&b, 10, 16, 100));
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->cap, 16);
    ck_assert_uint_eq(atomic_load(&b->refs), 1);
    memcpy(b->data, "0123456789abcdef", 16);
    ck_assert(gm_block_grow(&b, 17, 16, 100));
    ck_assert_uint_eq(b->cap, 32);
    ck_assert(memcmp(b->data, "0123456789abcdef", 16) == 0);
    ck_assert(gm_block_grow(&b, 70, 16, 100));
    ck_assert_uint_eq(b->cap, 100); /* 32, 64, then max rather than 128 */
    ck_assert(gm_block_grow(&b, 50, 16, 100)); /* room already */
    ck_assert_uint_eq(b->cap, 100);
    ck_assert(!gm_block_grow(&b, 101, 16, 100));
    ck_assert_uint_eq(b->cap, 100);
    ck_assert(!gm_block_grow(&b, 200, 16, (size_t)UINT32_MAX + 1)); /* max beyond 32 bits */
    gm_block_unref(b);
}
END_TEST

/* The builder appends, and once an addition would pass its max it fails
   for good and adds nothing more. */
START_TEST(test_bytes_builder_appends_and_fails_for_good_past_max)
{
    struct gm_bytes w = {0};
    gm_bytes_str(&w, "hello, ");
    gm_bytes_add(&w, "world", 5);
    gm_bytes_add(&w, NULL, 0);
    ck_assert(!w.failed);
    ck_assert_uint_eq(w.len, 12);
    ck_assert(memcmp(w.b->data, "hello, world", 12) == 0);
    char big[1000];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 100; i++)
        gm_bytes_add(&w, big, sizeof big);
    ck_assert_uint_eq(w.len, 12 + 100 * sizeof big);
    ck_assert_uint_ge(w.b->cap, w.len);
    gm_block_unref(w.b);

    struct gm_bytes small = {.max = 8};
    gm_bytes_str(&small, "12345678");
    ck_assert(!small.failed);
    gm_bytes_str(&small, "9");
    ck_assert(small.failed);
    ck_assert_uint_eq(small.len, 8);
    gm_bytes_str(&small, "");
    ck_assert(small.failed);
    gm_block_unref(small.b);
}
END_TEST

#define ADD(s, t) gm_check_add((s), #t, t, 30, NULL, NULL)

static Suite *
base_suite(void)
{
    Suite *s = suite_create("base");
    ADD(s, test_heap_pops_in_due_order);
    ADD(s, test_heap_removes_any_item_and_keeps_positions);
    ADD(s, test_block_grow_doubles_keeps_bytes_and_stops_at_max);
    ADD(s, test_bytes_builder_appends_and_fails_for_good_past_max);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(base_suite());
}
