/*
 * check_dispatcher_messages.c: unit tests for the dispatcher's side of the
 * rings and blocks: ECHO, response types from a peer, messages for unknown
 * or stale connections, which I/O threads a flush wakes, replies that do
 * not fit the outbound ring, block references (shared blocks, payloads by
 * reference, gm_disp_free releasing jobs in every state), and the
 * by-handle index.  The harness (disp_harness.h) plays the I/O threads.
 */
#include "config.h"

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/disp_harness.h"

/* ------------------------------------------------------------------ */
/* Messages, references, rings                                         */
/* ------------------------------------------------------------------ */

START_TEST(test_echo_req_is_answered_with_the_same_bytes)
{
    gm_conn_id c = conn_open("c", 0);
    send1(c, GM_PKT_ECHO_REQ, "hello");
    EXPECT(c, GM_PKT_ECHO_RES, "hello");
    send1(c, GM_PKT_ECHO_REQ, "");
    EXPECT(c, GM_PKT_ECHO_RES, "");
}
END_TEST

START_TEST(test_response_type_from_a_peer_gives_invalid_command)
{
    gm_conn_id c = conn_open("c", 0);
    send0(c, GM_PKT_NOOP);
    EXPECT(c, GM_PKT_ERROR, "INVALID_COMMAND", "Command not expected");
    send1(c, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT(c, GM_PKT_ERROR, "INVALID_COMMAND", "Command not expected");
    send0(c, GM_PKT_ALL_YOURS); /* accepted and ignored */
    EXPECT_NOTHING(c);
}
END_TEST

START_TEST(test_messages_for_unknown_or_stale_connections_are_dropped)
{
    /* never opened */
    gm_conn_id ghost = gm_conn_id_make(0, 500, 1);
    conn_register("ghost", ghost);
    submit(ghost, GM_PKT_SUBMIT_JOB, "f", "", "d");
    EXPECT_NOTHING(ghost);
    /* a slot reused by a newer connection: the old generation is gone */
    gm_conn_id old = open_id("old", gm_conn_id_make(1, 9, 1), "10.0.0.1");
    conn_close(old);
    gm_conn_id fresh = open_id("fresh", gm_conn_id_make(1, 9, 2), "10.0.0.2");
    submit(old, GM_PKT_SUBMIT_JOB, "f", "", "d");
    conn_close(old); /* a late close for the old generation must not drop the new one */
    EXPECT_NOTHING(old);
    EXPECT_NOTHING(fresh);
    SUBMITTED(fresh, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1"); /* no job was made for the others */
}
END_TEST

START_TEST(test_flush_wakes_only_io_threads_with_news)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    memset(H.wakes, 0, sizeof H.wakes);
    can_do(w, "f");
    ck_assert_uint_eq(H.wakes[0] + H.wakes[1], 0); /* no reply, no wake */
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "", "d", "H:test:1");
    ck_assert_uint_eq(H.wakes[0], 1);
    ck_assert_uint_eq(H.wakes[1], 0);
    GRABBED(w, ANY, ANY, ANY);
    ck_assert_uint_eq(H.wakes[0], 1);
    ck_assert_uint_eq(H.wakes[1], 1);
}
END_TEST

/* More replies than the outbound ring holds: the rest wait in the
   dispatcher, in order, and it asks to be told when there is room. */
START_TEST(test_replies_that_do_not_fit_the_out_ring_wait_in_order)
{
    gm_conn_id c = conn_open("c", 0);
    const int n = 3000;
    for (int i = 0; i < n; i++) {
        char h[32];
        snprintf(h, sizeof h, "x%d", i);
        struct gm_field_ref f[1] = {FR(h)};
        send_nopump(c, GM_PKT_GET_STATUS, f, 1);
        if (i % 500 == 499)
            gm_disp_drain(H.d, 1u << 20);
    }
    gm_disp_drain(H.d, 1u << 20);
    gm_disp_flush(H.d);
    ck_assert_uint_eq(gm_out_ring_pending(&H.ch[0].out), gm_out_ring_capacity(&H.ch[0].out));
    ck_assert_int_eq(atomic_load(&H.ch[0].disp_wants_space), 1);
    collect();
    for (int i = 0; i < n; i++) {
        char h[32];
        snprintf(h, sizeof h, "x%d", i);
        EXPECT(c, GM_PKT_STATUS_RES, h, "0", "0", "0", "0");
    }
    EXPECT_NOTHING(c);
}
END_TEST

/* Several packets read into one block: each message holds one reference,
   the dispatcher drops each once (jobs copy small data). */
START_TEST(test_packets_sharing_one_block_are_released_once_each)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    struct gm_field_ref f[3][3] = {
        {FR("f"), FR("u1"), FR("one")}, {FR("f"), FR("u2"), FR("two")}, {FR("f"), FR("u1"), FR("one")}};
    size_t sizes[3], total = 0;
    for (int i = 0; i < 3; i++) {
        sizes[i] = GM_HEADER_SIZE + gm_payload_size(f[i], 3);
        total += sizes[i];
    }
    struct gm_block *b = gm_block_new(total);
    ck_assert_ptr_nonnull(b);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        gm_packet_encode(b->data + off, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB, f[i], 3);
        off += sizes[i];
    }
    gm_block_ref_n(b, 3); /* one per message; the test keeps the first */
    off = 0;
    for (int i = 0; i < 3; i++) {
        struct gm_in m;
        memset(&m, 0, sizeof m);
        m.conn = c;
        m.kind = GM_IN_PACKET;
        m.type = GM_PKT_SUBMIT_JOB;
        m.len = (uint32_t)(sizes[i] - GM_HEADER_SIZE);
        m.payload = b->data + off + GM_HEADER_SIZE;
        m.blk = b;
        ck_assert_int_eq(gm_fields_split(m.type, m.payload, m.len, &m.u.fields), GM_PARSE_OK);
        push_in(&m);
        off += sizes[i];
    }
    pump();
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:2");
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(block_refs(b), 1);
    GRABBED(w, "H:test:1", "f", "one");
    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    ck_assert_uint_eq(block_refs(b), 1);
    gm_block_unref(b);
}
END_TEST

/* A packet in a block of its own: the job keeps the payload by reference,
   JOB_ASSIGN sends it by reference, and the reference goes with the job. */
START_TEST(test_payload_in_its_own_block_travels_by_reference)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    size_t big = 100000;
    char *data = malloc(big + 1);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    data[big] = '\0';
    struct gm_field_ref f[3] = {FR("f"), FR("u"), {data, big}};
    struct gm_block *b = send_nopump(c, GM_PKT_SUBMIT_JOB, f, 3);
    gm_block_ref(b);
    pump();
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    ck_assert_uint_eq(block_refs(b), 2); /* the test's and the job's */

    GRABBED(w, "H:test:1", "f", data); /* collect() copies the bytes and drops the reply's reference */
    ck_assert_uint_eq(block_refs(b), 2);
    SUBMITTED(c, GM_PKT_SUBMIT_JOB, "f", "u", "coalesced", "H:test:1"); /* onto the running job */
    ck_assert_uint_eq(block_refs(b), 2);

    work(w, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    EXPECT(c, GM_PKT_WORK_COMPLETE, "H:test:1", "r");
    ck_assert_uint_eq(block_refs(b), 1); /* the job let go */
    gm_block_unref(b);
    free(data);
}
END_TEST

START_TEST(test_job_assign_body_references_the_submitted_block)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    static char data[5000];
    memset(data, 'q', sizeof data);
    struct gm_field_ref f[3] = {FR("f"), FR(""), {data, sizeof data}};
    struct gm_block *b = send_nopump(c, GM_PKT_SUBMIT_JOB, f, 3);
    gm_block_ref(b);
    pump();
    EXPECT(c, GM_PKT_JOB_CREATED, "H:test:1");
    send_nopump(w, GM_PKT_GRAB_JOB, NULL, 0);
    gm_disp_drain(H.d, 1u << 20);
    gm_disp_flush(H.d);
    /* Look at the replies on thread 1's ring before the I/O side takes them
       (consumer-side slots from head_local on). */
    struct gm_out_ring *r = &H.ch[1].out;
    size_t pending = gm_out_ring_pending(r);
    ck_assert_uint_ge(pending, 1);
    bool by_ref = false;
    for (size_t i = 0; i < pending; i++) {
        const struct gm_out *o = &r->slots[(r->head_local + i) & r->mask];
        if (o->body.blk == b && o->body.len == sizeof data && o->body.ptr >= b->data &&
            o->body.ptr + o->body.len <= b->data + b->cap)
            by_ref = true;
    }
    ck_assert_msg(by_ref, "JOB_ASSIGN does not carry the payload by reference");
    collect();
    EXPECT(w, GM_PKT_JOB_ASSIGN, "H:test:1", "f", ANY);
    gm_block_unref(b);
}
END_TEST

/* gm_disp_free with jobs in every state releases every reference. */
START_TEST(test_free_releases_jobs_in_every_state)
{
    gm_conn_id c = conn_open("c", 0);
    gm_conn_id w = conn_open("w", 1);
    can_do(w, "f");
    static char big[3][4000];
    struct gm_block *b[3];
    char epoch[32];
    snprintf(epoch, sizeof epoch, "%lld", (long long)(T0 / 1000 + 3600));
    for (int i = 0; i < 3; i++) {
        memset(big[i], 'a' + i, sizeof big[i]);
        if (i == 2) {
            struct gm_field_ref f[4] = {FR("f"), FR(""), FR(epoch), {big[i], sizeof big[i]}};
            b[i] = send_nopump(c, GM_PKT_SUBMIT_JOB_EPOCH, f, 4); /* future */
        } else {
            struct gm_field_ref f[3] = {FR("f"), FR(""), {big[i], sizeof big[i]}};
            b[i] = send_nopump(c, GM_PKT_SUBMIT_JOB, f, 3);
        }
        gm_block_ref(b[i]);
        pump();
        EXPECT(c, GM_PKT_JOB_CREATED, ANY);
    }
    GRABBED(w, "H:test:1", "f", ANY); /* job 1 running, job 2 queued, job 3 in the future */
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(block_refs(b[i]), 2);
    collect();
    gm_disp_free(H.d);
    H.d = NULL;
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(block_refs(b[i]) == 1, "job %d's block has %u references after free", i + 1,
                      block_refs(b[i]));
        gm_block_unref(b[i]);
    }
}
END_TEST

/* The by-handle index hashes a handle by its trailing number: handles of
   other servers (replayed from a queue) that end in the same number, or in
   none, or in one too long for 64 bits, are still told apart, and a table
   grown to thousands of jobs still finds every one. */
static void
replay_job(const char *handle)
{
    struct gm_qrow row = {.handle = handle, .function = "f", .unique = "", .data = "d",
                          .handle_len = (uint32_t)strlen(handle), .function_len = 1, .data_len = 1,
                          .priority = 1};
    char err[128];
    ck_assert_msg(gm_disp_replay_row(H.d, &row, err, sizeof err) == 0, "%s: %s", handle, err);
}

static void
expect_indexed(const char *handle)
{
    struct gm_job *j = gm_disp_job_by_handle(H.d, handle, strlen(handle));
    ck_assert_msg(j != NULL, "%s is not found", handle);
    ck_assert_msg(j->handle_len == strlen(handle) && memcmp(gm_job_handle(j), handle, j->handle_len) == 0,
                  "looking up %s found %.*s", handle, (int)j->handle_len, gm_job_handle(j));
}

START_TEST(test_handles_ending_in_the_same_number_are_told_apart)
{
    static const char *const handles[] = {"H:old:7", "H:other:7", "7", "H:test:007", "H:no-number",
                                          "H:long:123456789012345678901234567", "H:long:923456789012345678901234567"};
    size_t n = sizeof handles / sizeof handles[0];
    for (size_t i = 0; i < n; i++)
        replay_job(handles[i]);
    for (size_t i = 0; i < n; i++)
        expect_indexed(handles[i]);
    ck_assert_ptr_null(gm_disp_job_by_handle(H.d, "H:old:8", 7));
    ck_assert_ptr_null(gm_disp_job_by_handle(H.d, "H:test:7", 8));
    char h[32];
    for (int i = 1; i <= 20000; i++) {
        snprintf(h, sizeof h, "H:grow:%d", i);
        replay_job(h);
    }
    for (int i = 1; i <= 20000; i++) {
        snprintf(h, sizeof h, "H:grow:%d", i);
        expect_indexed(h);
    }
    for (size_t i = 0; i < n; i++)
        expect_indexed(handles[i]);
}
END_TEST

/* A dispatcher whose I/O thread takes no replies stops taking requests
   once SPILL_MAX replies wait off the full outbound ring (issue 14.2: the
   list used to grow without bound); every reply arrives once the thread
   takes them. */
START_TEST(test_overflow_list_is_bounded_and_requests_wait_in_the_ring)
{
    gm_conn_id a = conn_open("a", 1);
    struct gm_field_ref f = {"e", 1};
    size_t sent = 0;
    for (; sent < 200000; sent++) {
        struct gm_in m;
        packet_in(&m, a, GM_PKT_ECHO_REQ, &f, 1);
        if (!offer_in(&m)) {
            gm_block_unref(m.blk);
            break;
        }
    }
    ck_assert_msg(sent < 200000, "the dispatcher took every request: nothing bounds its overflow list");
    ck_assert_uint_le(H.d->ports[1].spill.len, 65536 + gm_in_ring_capacity(&H.ch[1].in));
    /* the I/O thread takes them: everything sent is answered, in order */
    for (int i = 0; i < 1000 && gm_in_ring_peek(&H.ch[1].in); i++)
        pump();
    pump();
    struct tconn *tc = must_find(a);
    ck_assert_uint_eq(tc->len - tc->off, sent * (GM_HEADER_SIZE + 1));
    tc->off = tc->len;
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("dispatcher_messages");
    DISP_ADD(s, test_overflow_list_is_bounded_and_requests_wait_in_the_ring);
    DISP_ADD(s, test_handles_ending_in_the_same_number_are_told_apart);
    DISP_ADD(s, test_echo_req_is_answered_with_the_same_bytes);
    DISP_ADD(s, test_response_type_from_a_peer_gives_invalid_command);
    DISP_ADD(s, test_messages_for_unknown_or_stale_connections_are_dropped);
    DISP_ADD(s, test_flush_wakes_only_io_threads_with_news);
    DISP_ADD(s, test_replies_that_do_not_fit_the_out_ring_wait_in_order);
    DISP_ADD(s, test_packets_sharing_one_block_are_released_once_each);
    DISP_ADD(s, test_payload_in_its_own_block_travels_by_reference);
    DISP_ADD(s, test_job_assign_body_references_the_submitted_block);
    DISP_ADD(s, test_free_releases_jobs_in_every_state);
    return gm_check_run_tap(s);
}
