/*
 * check_ring.c: unit tests for the single-producer single-consumer ring
 * (ring.h, GM_RING_DEFINE).
 *
 * Single-thread semantics first (capacity, empty/full, visibility only
 * after publish, slots handed back only after release, wrap-around of the
 * slot index and of the free-running counters), then two-thread stress
 * tests: one producer and one consumer move millions of items in bursts of
 * varying size and the consumer checks that each arrives exactly once and
 * in order.  GM_RING_STRESS_ITEMS (default 10000000) sets the item count of
 * the big stress test, so that ThreadSanitizer builds can use fewer.
 * Then the spill list (GM_SPILL_DEFINE), which every producer that must
 * not wait uses, by hand and with a consumer thread.
 */
#include "config.h"

#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/base/ring.h"
#include "tests/unit/check_tap.h"

GM_RING_DEFINE(u64_ring, uint64_t)

struct item {
    uint64_t seq;
    uint32_t check;
    char tag[20];
};

GM_RING_DEFINE(item_ring, struct item)
/* A pointer type goes through a typedef: the macro writes `const T *`. */
typedef uint64_t *u64_ptr;
GM_RING_DEFINE(ptr_ring, u64_ptr)
GM_SPILL_DEFINE(u64_spill, u64_ring, uint64_t)

/* ------------------------------------------------------------------ */
/* Single thread                                                       */
/* ------------------------------------------------------------------ */

START_TEST(test_capacity_rounds_up_to_a_power_of_two)
{
    static const struct {
        size_t asked, got;
    } cases[] = {{0, 2}, {1, 2}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {1000, 1024}, {1024, 1024},
                 {1025, 2048}, {65536, 65536}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct u64_ring r;
        ck_assert_int_eq(u64_ring_init(&r, cases[i].asked), 0);
        ck_assert_msg(u64_ring_capacity(&r) == cases[i].got, "asked %zu: capacity %zu, expected %zu",
                      cases[i].asked, u64_ring_capacity(&r), cases[i].got);
        /* and that many values really fit, one more does not */
        uint64_t v = 0;
        for (size_t k = 0; k < cases[i].got; k++, v++)
            ck_assert_msg(u64_ring_push(&r, &v), "asked %zu: push %zu refused", cases[i].asked, k);
        ck_assert(!u64_ring_push(&r, &v));
        u64_ring_destroy(&r);
        ck_assert_ptr_null(r.slots);
    }
}
END_TEST

START_TEST(test_new_ring_is_empty)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 8), 0);
    uint64_t v = 7;
    ck_assert_ptr_null(u64_ring_peek(&r));
    ck_assert(!u64_ring_pop(&r, &v));
    ck_assert_uint_eq(v, 7);
    ck_assert_uint_eq(u64_ring_pending(&r), 0);
    ck_assert_uint_eq(u64_ring_free_space(&r), 8);
    ck_assert(!u64_ring_publish(&r)); /* nothing to publish */
    u64_ring_release(&r);             /* nothing to release: harmless */
    ck_assert_uint_eq(u64_ring_free_space(&r), 8);
    u64_ring_destroy(&r);
}
END_TEST

START_TEST(test_produced_values_are_invisible_until_publish)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 8), 0);
    for (uint64_t v = 1; v <= 3; v++)
        ck_assert(u64_ring_push(&r, &v));
    ck_assert_ptr_null(u64_ring_peek(&r));
    ck_assert_uint_eq(u64_ring_pending(&r), 0);
    ck_assert_uint_eq(u64_ring_free_space(&r), 5);
    ck_assert(u64_ring_publish(&r));
    ck_assert(!u64_ring_publish(&r)); /* already published */
    ck_assert_uint_eq(u64_ring_pending(&r), 3);
    uint64_t *p = u64_ring_peek(&r);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(*p, 1);

    /* one more produced but not published stays invisible after the three */
    uint64_t four = 4;
    ck_assert(u64_ring_push(&r, &four));
    uint64_t v;
    for (uint64_t want = 1; want <= 3; want++) {
        ck_assert(u64_ring_pop(&r, &v));
        ck_assert_uint_eq(v, want);
    }
    ck_assert(!u64_ring_pop(&r, &v));
    ck_assert(u64_ring_publish(&r));
    ck_assert(u64_ring_pop(&r, &v));
    ck_assert_uint_eq(v, 4);
    u64_ring_destroy(&r);
}
END_TEST

START_TEST(test_alloc_without_produce_commits_nothing)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 4), 0);
    uint64_t *a = u64_ring_alloc(&r);
    ck_assert_ptr_nonnull(a);
    *a = 11;
    ck_assert_ptr_eq(u64_ring_alloc(&r), a); /* same slot until produced */
    ck_assert(!u64_ring_publish(&r));
    ck_assert_ptr_null(u64_ring_peek(&r));
    u64_ring_produce(&r);
    uint64_t *b = u64_ring_alloc(&r);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    *b = 12;
    u64_ring_produce(&r);
    ck_assert(u64_ring_publish(&r));
    uint64_t *p = u64_ring_peek(&r);
    ck_assert_ptr_eq(p, a);
    ck_assert_ptr_eq(u64_ring_peek(&r), p); /* same slot until consumed */
    ck_assert_uint_eq(*p, 11);
    u64_ring_consume(&r);
    p = u64_ring_peek(&r);
    ck_assert_ptr_eq(p, b);
    ck_assert_uint_eq(*p, 12);
    u64_ring_consume(&r);
    ck_assert_ptr_null(u64_ring_peek(&r));
    u64_ring_destroy(&r);
}
END_TEST

START_TEST(test_full_ring_refuses_until_consumer_releases)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 4), 0);
    for (uint64_t v = 0; v < 4; v++)
        ck_assert(u64_ring_push(&r, &v));
    uint64_t extra = 99;
    ck_assert(!u64_ring_push(&r, &extra));
    ck_assert_ptr_null(u64_ring_alloc(&r));
    ck_assert_uint_eq(u64_ring_free_space(&r), 0);
    ck_assert(u64_ring_publish(&r));

    /* consumed but not yet released: still full for the producer */
    uint64_t v;
    ck_assert(u64_ring_pop(&r, &v));
    ck_assert(u64_ring_pop(&r, &v));
    ck_assert(!u64_ring_push(&r, &extra));
    ck_assert_uint_eq(u64_ring_free_space(&r), 0);

    u64_ring_release(&r);
    ck_assert_uint_eq(u64_ring_free_space(&r), 2);
    ck_assert(u64_ring_push(&r, &extra));
    extra++;
    ck_assert(u64_ring_push(&r, &extra));
    ck_assert(!u64_ring_push(&r, &extra));
    ck_assert(u64_ring_publish(&r));
    static const uint64_t want[] = {2, 3, 99, 100};
    for (size_t i = 0; i < 4; i++) {
        ck_assert(u64_ring_pop(&r, &v));
        ck_assert_uint_eq(v, want[i]);
    }
    ck_assert(!u64_ring_pop(&r, &v));
    u64_ring_destroy(&r);
}
END_TEST

START_TEST(test_values_of_a_struct_type_are_copied_whole)
{
    struct item_ring r;
    ck_assert_int_eq(item_ring_init(&r, 3), 0);
    ck_assert_uint_eq(item_ring_capacity(&r), 4);
    for (uint64_t i = 0; i < 4; i++) {
        struct item it = {.seq = i, .check = (uint32_t)(i * 2654435761u)};
        snprintf(it.tag, sizeof it.tag, "item-%llu", (unsigned long long)i);
        ck_assert(item_ring_push(&r, &it));
        memset(&it, 0, sizeof it); /* the ring holds its own copy */
    }
    ck_assert_uint_eq(item_ring_free_space(&r), 0);
    item_ring_publish(&r);
    ck_assert_uint_eq(item_ring_pending(&r), 4);
    for (uint64_t i = 0; i < 4; i++) {
        struct item it;
        ck_assert(item_ring_pop(&r, &it));
        char tag[20];
        snprintf(tag, sizeof tag, "item-%llu", (unsigned long long)i);
        ck_assert_uint_eq(it.seq, i);
        ck_assert_uint_eq(it.check, (uint32_t)(i * 2654435761u));
        ck_assert_str_eq(it.tag, tag);
    }
    item_ring_release(&r);
    ck_assert_uint_eq(item_ring_free_space(&r), 4);
    item_ring_destroy(&r);
}
END_TEST

/* Bursts of every size from 1 to beyond the capacity, many times round a
   small ring: every value comes out once, in order. */
START_TEST(test_push_pop_in_bursts_wraps_around_many_times)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 8), 0);
    uint64_t next_in = 0, next_out = 0;
    for (int round = 0; round < 20000; round++) {
        size_t burst = 1 + (size_t)(round * 7 % 11); /* 1..11, capacity 8 */
        size_t room = 8 - (size_t)(next_in - next_out);
        size_t pushed = 0;
        while (pushed < burst && u64_ring_push(&r, &next_in)) {
            next_in++;
            pushed++;
        }
        ck_assert_uint_eq(pushed, burst < room ? burst : room);
        u64_ring_publish(&r);
        size_t take = 1 + (size_t)(round * 5 % 9);
        uint64_t v;
        for (size_t k = 0; k < take && u64_ring_pop(&r, &v); k++) {
            ck_assert_uint_eq(v, next_out);
            next_out++;
        }
        u64_ring_release(&r);
        ck_assert_uint_eq(u64_ring_pending(&r), next_in - next_out);
        /* drain whatever is left every few rounds so bursts can be large */
        if (round % 3 == 2) {
            while (u64_ring_pop(&r, &v)) {
                ck_assert_uint_eq(v, next_out);
                next_out++;
            }
            u64_ring_release(&r);
        }
    }
    ck_assert_uint_gt(next_out, 20000); /* went round the 8 slots thousands of times */
    u64_ring_destroy(&r);
}
END_TEST

/* The counters are free-running size_t values: starting them just below
   SIZE_MAX, the ring keeps working across their overflow. */
START_TEST(test_counters_wrapping_past_size_max_keep_working)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 4), 0);
    size_t start = SIZE_MAX - 5;
    atomic_store(&r.head, start);
    atomic_store(&r.tail, start);
    r.head_local = r.tail_cache = r.tail_local = r.head_cache = start;
    uint64_t in = 0, out = 0, v;
    for (int round = 0; round < 10; round++) {
        for (int k = 0; k < 3; k++) {
            ck_assert(u64_ring_push(&r, &in));
            in++;
        }
        ck_assert_uint_eq(u64_ring_free_space(&r), 1);
        ck_assert(u64_ring_publish(&r));
        ck_assert_uint_eq(u64_ring_pending(&r), 3);
        for (int k = 0; k < 3; k++) {
            ck_assert(u64_ring_pop(&r, &v));
            ck_assert_uint_eq(v, out);
            out++;
        }
        ck_assert(!u64_ring_pop(&r, &v));
        u64_ring_release(&r);
        ck_assert_uint_eq(u64_ring_free_space(&r), 4);
    }
    /* full and empty are still told apart after the wrap */
    for (int k = 0; k < 4; k++) {
        ck_assert(u64_ring_push(&r, &in));
        in++;
    }
    ck_assert(!u64_ring_push(&r, &in));
    u64_ring_publish(&r);
    ck_assert_uint_eq(u64_ring_pending(&r), 4);
    ck_assert_uint_lt(r.tail_local, start); /* the counter did wrap */
    u64_ring_destroy(&r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Two threads                                                         */
/* ------------------------------------------------------------------ */

static uint64_t
env_items(uint64_t dflt)
{
    const char *e = getenv("GM_RING_STRESS_ITEMS");
    if (!e || !*e)
        return dflt;
    char *end;
    unsigned long long v = strtoull(e, &end, 10);
    return *end == '\0' && v > 0 ? (uint64_t)v : dflt;
}

/* xorshift: burst sizes that vary without a pattern the ring could hide in */
static uint32_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}

struct stress {
    struct u64_ring ring;
    uint64_t items;
    uint64_t producer_full_waits;
    /* consumer's verdict */
    uint64_t received;
    uint64_t first_bad_index; /* UINT64_MAX when all good */
    uint64_t first_bad_value;
    uint64_t sum;
};

static void
backoff(unsigned *spins)
{
    if (++*spins > 64) {
        sched_yield();
        *spins = 0;
    }
}

static void *
stress_producer(void *arg)
{
    struct stress *st = arg;
    uint64_t seed = 0x12345678abcdefull;
    uint64_t next = 0;
    unsigned spins = 0;
    while (next < st->items) {
        uint32_t burst = 1 + rnd(&seed) % 97;
        uint32_t done = 0;
        while (done < burst && next < st->items) {
            uint64_t *slot = u64_ring_alloc(&st->ring);
            if (!slot) {
                /* full: publish what we have so the consumer can progress */
                u64_ring_publish(&st->ring);
                st->producer_full_waits++;
                backoff(&spins);
                continue;
            }
            *slot = next++;
            u64_ring_produce(&st->ring);
            done++;
        }
        u64_ring_publish(&st->ring);
    }
    return NULL;
}

static void *
stress_consumer(void *arg)
{
    struct stress *st = arg;
    uint64_t seed = 0xfeedfacecafebeefull;
    unsigned spins = 0;
    st->first_bad_index = UINT64_MAX;
    while (st->received < st->items) {
        uint32_t burst = 1 + rnd(&seed) % 131;
        uint32_t got = 0;
        while (got < burst && st->received < st->items) {
            uint64_t *v = u64_ring_peek(&st->ring);
            if (!v)
                break;
            if (*v != st->received && st->first_bad_index == UINT64_MAX) {
                st->first_bad_index = st->received;
                st->first_bad_value = *v;
            }
            st->sum += *v;
            u64_ring_consume(&st->ring);
            st->received++;
            got++;
        }
        u64_ring_release(&st->ring);
        if (got == 0)
            backoff(&spins);
    }
    return NULL;
}

static void
run_stress(uint64_t items, size_t capacity)
{
    struct stress *st = calloc(1, sizeof *st);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(u64_ring_init(&st->ring, capacity), 0);
    st->items = items;
    pthread_t prod, cons;
    ck_assert_int_eq(pthread_create(&cons, NULL, stress_consumer, st), 0);
    ck_assert_int_eq(pthread_create(&prod, NULL, stress_producer, st), 0);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    ck_assert_msg(st->first_bad_index == UINT64_MAX, "item %llu arrived as %llu",
                  (unsigned long long)st->first_bad_index,
                  (unsigned long long)st->first_bad_value);
    ck_assert_uint_eq(st->received, items);
    /* each value 0..items-1 exactly once: in order already, and the sum agrees */
    ck_assert_uint_eq(st->sum, items * (items - 1) / 2);
    ck_assert_ptr_null(u64_ring_peek(&st->ring));
    ck_assert_uint_eq(u64_ring_free_space(&st->ring), u64_ring_capacity(&st->ring));
    u64_ring_destroy(&st->ring);
    free(st);
}

START_TEST(test_two_threads_move_ten_million_items_in_order)
{
    uint64_t items = env_items(10000000);
    run_stress(items, 1024);
}
END_TEST

/* The smallest ring (2 slots) is full or empty almost all the time. */
START_TEST(test_two_threads_through_a_two_slot_ring)
{
    uint64_t items = env_items(10000000) / 10;
    run_stress(items ? items : 1, 2);
}
END_TEST

/* Pointers to memory written before the push: the consumer must see the
   writes (release/acquire), which ThreadSanitizer checks too. */
struct ptr_stress {
    struct ptr_ring ring;
    uint64_t items;
    uint64_t bad;
};

static void *
ptr_producer(void *arg)
{
    struct ptr_stress *st = arg;
    unsigned spins = 0;
    for (uint64_t i = 0; i < st->items;) {
        uint64_t *p = malloc(4 * sizeof *p);
        if (!p)
            abort();
        p[0] = i;
        p[1] = ~i;
        p[2] = i * 31;
        p[3] = i ^ 0x5555;
        while (!ptr_ring_push(&st->ring, &p)) {
            ptr_ring_publish(&st->ring);
            backoff(&spins);
        }
        i++;
        if (i % 16 == 0)
            ptr_ring_publish(&st->ring);
    }
    ptr_ring_publish(&st->ring);
    return NULL;
}

static void *
ptr_consumer(void *arg)
{
    struct ptr_stress *st = arg;
    unsigned spins = 0;
    for (uint64_t i = 0; i < st->items;) {
        uint64_t *p;
        if (!ptr_ring_pop(&st->ring, &p)) {
            ptr_ring_release(&st->ring);
            backoff(&spins);
            continue;
        }
        if (p[0] != i || p[1] != ~i || p[2] != i * 31 || p[3] != (i ^ 0x5555))
            st->bad++;
        free(p);
        i++;
        if (i % 8 == 0)
            ptr_ring_release(&st->ring);
    }
    ptr_ring_release(&st->ring);
    return NULL;
}

START_TEST(test_two_threads_pass_pointers_to_written_memory)
{
    struct ptr_stress *st = calloc(1, sizeof *st);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(ptr_ring_init(&st->ring, 64), 0);
    uint64_t items = env_items(10000000) / 20;
    st->items = items ? items : 1;
    pthread_t prod, cons;
    ck_assert_int_eq(pthread_create(&cons, NULL, ptr_consumer, st), 0);
    ck_assert_int_eq(pthread_create(&prod, NULL, ptr_producer, st), 0);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    ck_assert_uint_eq(st->bad, 0);
    ck_assert_ptr_null(ptr_ring_peek(&st->ring));
    ck_assert_uint_eq(ptr_ring_pending(&st->ring), 0);
    ck_assert_uint_eq(ptr_ring_free_space(&st->ring), ptr_ring_capacity(&st->ring));
    ptr_ring_destroy(&st->ring);
    free(st);
}
END_TEST

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* The spill list                                                      */
/* ------------------------------------------------------------------ */

/* Values go to the ring while it has room, then onto the list; once
   something waits on the list, new values go behind it even when the ring
   has room again, and move() brings them over in order. */
START_TEST(test_spill_keeps_order_across_a_full_ring)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 4), 0);
    struct u64_spill s = {0};
    _Atomic int wants = 0;
    for (uint64_t v = 0; v < 10; v++)
        ck_assert_int_eq(u64_spill_put(&s, &r, &v, NULL), v < 4 ? 1 : 0);
    ck_assert_ptr_null(u64_spill_slot(&s, &r, &wants)); /* values wait: no slot */
    ck_assert_int_eq(atomic_load(&wants), 0);
    u64_ring_publish(&r);
    uint64_t got, next = 0;
    for (int i = 0; i < 2; i++) { /* the consumer drains two */
        ck_assert(u64_ring_pop(&r, &got));
        ck_assert_uint_eq(got, next++);
    }
    u64_ring_release(&r);
    uint64_t v = 10;
    ck_assert_int_eq(u64_spill_put(&s, &r, &v, NULL), 0); /* room, but 4..9 wait first */
    ck_assert(u64_spill_move(&s, &r, &wants));           /* 4 and 5 fit */
    ck_assert_int_eq(atomic_load(&wants), 1);            /* full again: wake me */
    ck_assert_uint_eq(*u64_spill_last(&s), 10);
    while (s.head) {
        u64_ring_publish(&r);
        while (u64_ring_pop(&r, &got))
            ck_assert_uint_eq(got, next++);
        u64_ring_release(&r);
        atomic_store(&wants, 0);
        u64_spill_move(&s, &r, &wants);
    }
    u64_ring_publish(&r);
    while (u64_ring_pop(&r, &got))
        ck_assert_uint_eq(got, next++);
    ck_assert_uint_eq(next, 11);
    ck_assert_ptr_null(u64_spill_last(&s));
    ck_assert(!u64_spill_move(&s, &r, &wants));
    u64_ring_destroy(&r);
}
END_TEST

/* A spare node is used when the ring is full and freed when it is not
   needed (ASan reports a leak otherwise); clear() hands every waiting
   value to drop. */
static uint64_t dropped_sum;

static void
drop_u64(uint64_t *v)
{
    dropped_sum += *v;
}

START_TEST(test_spill_spare_node_and_clear)
{
    struct u64_ring r;
    ck_assert_int_eq(u64_ring_init(&r, 2), 0);
    struct u64_spill s = {0};
    uint64_t v = 1;
    ck_assert_int_eq(u64_spill_put(&s, &r, &v, malloc(sizeof(struct u64_spill_node))), 1);
    v = 2;
    ck_assert_int_eq(u64_spill_put(&s, &r, &v, NULL), 1);
    struct u64_spill_node *spare = malloc(sizeof *spare);
    v = 3;
    ck_assert_int_eq(u64_spill_put(&s, &r, &v, spare), 0);
    ck_assert_ptr_eq(s.head, spare);
    v = 4;
    ck_assert_int_eq(u64_spill_put(&s, &r, &v, NULL), 0);
    dropped_sum = 0;
    u64_spill_clear(&s, drop_u64);
    ck_assert_uint_eq(dropped_sum, 7);
    ck_assert_ptr_null(s.head);
    ck_assert_ptr_null(s.tail);
    u64_ring_destroy(&r);
}
END_TEST

/* One producer that never waits (put, then move on every turn) and one
   consumer that wakes it through the wants flag: every value arrives once,
   in order, through a two-slot ring. */
struct spill_pair {
    struct u64_ring r;
    _Atomic int wants;
    uint64_t n;
};

static void *
spill_consumer(void *arg)
{
    struct spill_pair *sp = arg;
    uint64_t next = 0, got;
    while (next < sp->n) {
        if (!u64_ring_pop(&sp->r, &got)) {
            sched_yield();
            continue;
        }
        if (got != next)
            return (void *)1;
        next++;
        u64_ring_release(&sp->r);
        atomic_store(&sp->wants, 0);
    }
    return NULL;
}

START_TEST(test_spill_producer_never_waits_and_loses_nothing)
{
    struct spill_pair sp = {.n = 200000};
    ck_assert_int_eq(u64_ring_init(&sp.r, 2), 0);
    atomic_init(&sp.wants, 0);
    struct u64_spill s = {0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, spill_consumer, &sp), 0);
    for (uint64_t v = 0; v < sp.n; v++) {
        u64_spill_move(&s, &sp.r, &sp.wants);
        ck_assert_int_ge(u64_spill_put(&s, &sp.r, &v, NULL), 0);
        u64_ring_publish(&sp.r);
    }
    while (s.head) {
        u64_spill_move(&s, &sp.r, &sp.wants);
        u64_ring_publish(&sp.r);
        sched_yield();
    }
    void *rc;
    pthread_join(th, &rc);
    ck_assert_ptr_null(rc);
    u64_ring_destroy(&sp.r);
}
END_TEST

#define ADD(s, t, timeout) gm_check_add((s), #t, t, (timeout), NULL, NULL)

static Suite *
ring_suite(void)
{
    Suite *s = suite_create("ring");
    ADD(s, test_capacity_rounds_up_to_a_power_of_two, 10);
    ADD(s, test_new_ring_is_empty, 10);
    ADD(s, test_produced_values_are_invisible_until_publish, 10);
    ADD(s, test_alloc_without_produce_commits_nothing, 10);
    ADD(s, test_full_ring_refuses_until_consumer_releases, 10);
    ADD(s, test_values_of_a_struct_type_are_copied_whole, 10);
    ADD(s, test_push_pop_in_bursts_wraps_around_many_times, 30);
    ADD(s, test_counters_wrapping_past_size_max_keep_working, 10);
    ADD(s, test_two_threads_move_ten_million_items_in_order, 120);
    ADD(s, test_two_threads_through_a_two_slot_ring, 120);
    ADD(s, test_two_threads_pass_pointers_to_written_memory, 120);
    ADD(s, test_spill_keeps_order_across_a_full_ring, 10);
    ADD(s, test_spill_spare_node_and_clear, 10);
    ADD(s, test_spill_producer_never_waits_and_loses_nothing, 120);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(ring_suite());
}
