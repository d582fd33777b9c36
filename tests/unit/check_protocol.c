/*
 * check_protocol.c: unit tests for the codec (protocol.h), the admin line
 * splitter (admin_split.h) and the schedule of SUBMIT_JOB_SCHED (sched.h).
 *
 * Pure functions only: every packet type encoded and parsed back under both
 * magics, the framer fed every prefix of a mixed binary/text stream (each
 * prefix in an allocation of exactly its size, so that AddressSanitizer
 * catches a read past the end), malformed headers and payloads, the number
 * parsers' edges, admin word splitting and the next-run computation.
 * Single-threaded.
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/proto/protocol.h"
#include "libgearman-server/proto/sched.h"
#include "tests/unit/check_tap.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

/* The protocol's field counts and directions (reference section 1.2). */
struct expected_type {
    uint32_t type;
    const char *name;
    unsigned nfields;
    int dir;
};

#define REQ GM_DIR_REQUEST
#define RES GM_DIR_RESPONSE
#define BOTH (GM_DIR_REQUEST | GM_DIR_RESPONSE)

static const struct expected_type expected_types[] = {
    {1, "CAN_DO", 1, REQ},
    {2, "CANT_DO", 1, REQ},
    {3, "RESET_ABILITIES", 0, REQ},
    {4, "PRE_SLEEP", 0, REQ},
    {5, "UNUSED", 0, GM_DIR_NONE},
    {6, "NOOP", 0, RES},
    {7, "SUBMIT_JOB", 3, REQ},
    {8, "JOB_CREATED", 1, RES},
    {9, "GRAB_JOB", 0, REQ},
    {10, "NO_JOB", 0, RES},
    {11, "JOB_ASSIGN", 3, RES},
    {12, "WORK_STATUS", 3, BOTH},
    {13, "WORK_COMPLETE", 2, BOTH},
    {14, "WORK_FAIL", 1, BOTH},
    {15, "GET_STATUS", 1, REQ},
    {16, "ECHO_REQ", 1, REQ},
    {17, "ECHO_RES", 1, RES},
    {18, "SUBMIT_JOB_BG", 3, REQ},
    {19, "ERROR", 2, RES},
    {20, "STATUS_RES", 5, RES},
    {21, "SUBMIT_JOB_HIGH", 3, REQ},
    {22, "SET_CLIENT_ID", 1, REQ},
    {23, "CAN_DO_TIMEOUT", 2, REQ},
    {24, "ALL_YOURS", 0, REQ},
    {25, "WORK_EXCEPTION", 2, BOTH},
    {26, "OPTION_REQ", 1, REQ},
    {27, "OPTION_RES", 1, RES},
    {28, "WORK_DATA", 2, BOTH},
    {29, "WORK_WARNING", 2, BOTH},
    {30, "GRAB_JOB_UNIQ", 0, REQ},
    {31, "JOB_ASSIGN_UNIQ", 4, RES},
    {32, "SUBMIT_JOB_HIGH_BG", 3, REQ},
    {33, "SUBMIT_JOB_LOW", 3, REQ},
    {34, "SUBMIT_JOB_LOW_BG", 3, REQ},
    {35, "SUBMIT_JOB_SCHED", 8, REQ},
    {36, "SUBMIT_JOB_EPOCH", 4, REQ},
    {37, "SUBMIT_REDUCE_JOB", 5, REQ},
    {38, "SUBMIT_REDUCE_JOB_BACKGROUND", 5, REQ},
    {39, "GRAB_JOB_ALL", 0, REQ},
    {40, "JOB_ASSIGN_ALL", 5, RES},
    {41, "GET_STATUS_UNIQUE", 1, REQ},
    {42, "STATUS_RES_UNIQUE", 6, RES},
};

#define NTYPES (sizeof expected_types / sizeof expected_types[0])

/* Copies len bytes into a fresh allocation of exactly len bytes (at least
   1), so that a read past the end is caught by AddressSanitizer. */
static char *
exact_copy(const void *p, size_t len)
{
    char *c = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(c);
    if (len)
        memcpy(c, p, len);
    return c;
}

static uint32_t
be32_at(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Builds a 12-byte header by hand (independently of gm_header_encode). */
static void
raw_header(unsigned char *p, uint32_t magic, uint32_t type, uint32_t size)
{
    uint32_t v[3] = {magic, type, size};
    for (int i = 0; i < 3; i++) {
        p[4 * i] = (unsigned char)(v[i] >> 24);
        p[4 * i + 1] = (unsigned char)(v[i] >> 16);
        p[4 * i + 2] = (unsigned char)(v[i] >> 8);
        p[4 * i + 3] = (unsigned char)v[i];
    }
}

/* Encodes (magic, type, fields) into a new buffer; *len gets its size. */
static unsigned char *
encode(uint32_t magic, uint32_t type, const struct gm_field_ref *f, size_t n, size_t *len)
{
    size_t total = GM_HEADER_SIZE + gm_payload_size(f, n);
    unsigned char *buf = malloc(total);
    ck_assert_ptr_nonnull(buf);
    size_t wrote = gm_packet_encode(buf, magic, type, f, n);
    ck_assert_uint_eq(wrote, total);
    *len = total;
    return buf;
}

/* ------------------------------------------------------------------ */
/* Packet table, encoding and splitting                                */
/* ------------------------------------------------------------------ */

START_TEST(test_packet_table_has_every_type_with_its_field_count)
{
    ck_assert_uint_eq(NTYPES, 42);
    for (size_t i = 0; i < NTYPES; i++) {
        const struct expected_type *e = &expected_types[i];
        const struct gm_packet_info *info = gm_packet_info(e->type);
        ck_assert_msg(info != NULL, "type %u has no table entry", e->type);
        ck_assert_str_eq(info->name, e->name);
        ck_assert_str_eq(gm_packet_name(e->type), e->name);
        ck_assert_msg(info->nfields == e->nfields, "%s: %u fields, expected %u", e->name,
                      info->nfields, e->nfields);
        ck_assert_msg(info->dir == e->dir, "%s: direction %u, expected %d", e->name, info->dir,
                      e->dir);
    }
    ck_assert_ptr_null(gm_packet_info(0));
    ck_assert_ptr_null(gm_packet_info(43));
    ck_assert_ptr_null(gm_packet_info(0xffffffffu));
    ck_assert_str_eq(gm_packet_name(0), "UNKNOWN");
    ck_assert_str_eq(gm_packet_name(43), "UNKNOWN");
    ck_assert_str_eq(gm_packet_name(1000), "UNKNOWN");
}
END_TEST

/* Encodes every type under both magics with fields of varied shapes (an
   empty one, a long one, a last field holding NULs) and parses it back. */
START_TEST(test_every_type_round_trips_under_both_magics)
{
    static const uint32_t magics[2] = {GM_MAGIC_REQ, GM_MAGIC_RES};
    char longfield[300];
    for (size_t i = 0; i < sizeof longfield; i++)
        longfield[i] = (char)('a' + i % 26);
    static const char lastdata[] = "d\0a\0t\0a\0"; /* NULs inside the last field */

    for (int shape = 0; shape < 3; shape++) {
        for (int mi = 0; mi < 2; mi++) {
            for (size_t t = 0; t < NTYPES; t++) {
                const struct expected_type *e = &expected_types[t];
                struct gm_field_ref f[GM_MAX_FIELDS];
                char names[GM_MAX_FIELDS][32];
                for (unsigned k = 0; k < e->nfields; k++) {
                    int n = snprintf(names[k], sizeof names[k], "f%u-%s", k, e->name);
                    f[k].ptr = names[k];
                    f[k].len = (size_t)n;
                    if (shape == 1 && k == 0) {
                        f[k].len = 0; /* an empty first field */
                    } else if (shape == 2 && k + 1 < e->nfields && k == 1) {
                        f[k].ptr = longfield;
                        f[k].len = sizeof longfield;
                    }
                    if (k + 1 == e->nfields && shape != 1) {
                        f[k].ptr = lastdata;
                        f[k].len = sizeof lastdata - 1;
                    }
                }
                size_t len;
                unsigned char *buf = encode(magics[mi], e->type, f, e->nfields, &len);

                /* The header, by hand. */
                ck_assert_uint_eq(be32_at(buf), magics[mi]);
                ck_assert_uint_eq(be32_at(buf + 4), e->type);
                ck_assert_uint_eq(be32_at(buf + 8), len - GM_HEADER_SIZE);

                struct gm_header h;
                ck_assert_int_eq(gm_header_decode(buf, UINT32_MAX, &h), GM_PARSE_OK);
                ck_assert_uint_eq(h.magic, magics[mi]);
                ck_assert_uint_eq(h.type, e->type);
                ck_assert_uint_eq(h.size, len - GM_HEADER_SIZE);

                /* Split from an exact-size copy of the payload. */
                char *payload = exact_copy(buf + GM_HEADER_SIZE, h.size);
                struct gm_fields fl;
                memset(&fl, 0xa5, sizeof fl);
                ck_assert_int_eq(gm_fields_split(h.type, payload, h.size, &fl), GM_PARSE_OK);
                ck_assert_uint_eq(fl.count, e->nfields);
                for (unsigned k = 0; k < e->nfields; k++) {
                    ck_assert_msg(fl.len[k] == f[k].len, "%s shape %d field %u: len %u, expected %zu",
                                  e->name, shape, k, fl.len[k], f[k].len);
                    ck_assert_uint_le(fl.start[k] + fl.len[k], h.size);
                    ck_assert_msg(memcmp(payload + fl.start[k], f[k].ptr, f[k].len) == 0,
                                  "%s shape %d field %u differs", e->name, shape, k);
                }

                /* And the whole packet through the framer. */
                char *whole = exact_copy(buf, len);
                struct gm_frame fr;
                gm_frame_next(whole, len, UINT32_MAX, &fr);
                ck_assert_int_eq(fr.kind, GM_FRAME_PACKET);
                ck_assert_uint_eq(fr.length, len);
                ck_assert_uint_eq(fr.h.type, e->type);
                ck_assert_uint_eq(fr.h.magic, magics[mi]);
                free(whole);
                free(payload);
                free(buf);
            }
        }
    }
}
END_TEST

START_TEST(test_encode_joins_fields_with_single_nuls_and_no_trailing_nul)
{
    struct gm_field_ref f[3] = {{"fn", 2}, {"", 0}, {"data", 4}};
    ck_assert_uint_eq(gm_payload_size(f, 3), 8);
    ck_assert_uint_eq(gm_payload_size(f, 0), 0);
    ck_assert_uint_eq(gm_payload_size(f, 1), 2);
    unsigned char buf[64];
    memset(buf, 'x', sizeof buf);
    size_t n = gm_packet_encode(buf, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB, f, 3);
    ck_assert_uint_eq(n, 20);
    ck_assert_mem_eq(buf, "\0REQ\0\0\0\x07\0\0\0\x08" "fn\0\0data", 20);
    ck_assert_int_eq(buf[20], 'x'); /* nothing written past the packet */

    n = gm_packet_encode(buf, GM_MAGIC_RES, GM_PKT_NOOP, NULL, 0);
    ck_assert_uint_eq(n, 12);
    ck_assert_mem_eq(buf, "\0RES\0\0\0\x06\0\0\0\0", 12);
}
END_TEST

START_TEST(test_header_encode_is_big_endian)
{
    unsigned char p[12];
    gm_header_encode(p, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB_HIGH_BG, 0x01020304u);
    ck_assert_mem_eq(p, "\0REQ\0\0\0\x20\x01\x02\x03\x04", 12);
    gm_header_encode(p, GM_MAGIC_RES, 0x0a0b0c0du, 0xffffffffu);
    ck_assert_mem_eq(p, "\0RES\x0a\x0b\x0c\x0d\xff\xff\xff\xff", 12);
}
END_TEST

START_TEST(test_header_with_bad_magic_is_rejected)
{
    static const char *const bad[] = {"\0REP", "REQ\0", "\0req", "\0\0\0\0", "\1REQ", "\0RQE"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char p[12];
        memcpy(p, bad[i], 4);
        memcpy(p + 4, "\0\0\0\x07\0\0\0\0", 8);
        struct gm_header h;
        ck_assert_int_eq(gm_header_decode(p, 1024, &h), GM_PARSE_BAD_MAGIC);
        ck_assert_uint_eq(h.magic, be32_at(p));

        struct gm_frame f;
        char *c = exact_copy(p, 12);
        gm_frame_next(c, 12, 1024, &f);
        if (p[0] == '\0') {
            ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
            ck_assert_int_eq(f.error, GM_PARSE_BAD_MAGIC);
        } else {
            /* a non-NUL first byte starts a text line */
            ck_assert_int_ne(f.kind, GM_FRAME_PACKET);
        }
        free(c);
    }
}
END_TEST

START_TEST(test_header_with_type_0_or_43_and_above_is_rejected)
{
    static const uint32_t bad[] = {0, 43, 44, 255, 256, 0x01000007u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int mi = 0; mi < 2; mi++) {
            unsigned char p[12];
            raw_header(p, mi ? GM_MAGIC_RES : GM_MAGIC_REQ, bad[i], 0);
            struct gm_header h;
            ck_assert_int_eq(gm_header_decode(p, 1024, &h), GM_PARSE_BAD_TYPE);
            ck_assert_uint_eq(h.type, bad[i]);
            struct gm_frame f;
            char *c = exact_copy(p, 12);
            gm_frame_next(c, 12, 1024, &f);
            ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
            ck_assert_int_eq(f.error, GM_PARSE_BAD_TYPE);
            ck_assert_uint_eq(f.h.type, bad[i]);
            free(c);
        }
    }
    /* The edges of the valid range decode. */
    unsigned char p[12];
    struct gm_header h;
    raw_header(p, GM_MAGIC_REQ, 1, 0);
    ck_assert_int_eq(gm_header_decode(p, 0, &h), GM_PARSE_OK);
    raw_header(p, GM_MAGIC_REQ, 42, 0);
    ck_assert_int_eq(gm_header_decode(p, 0, &h), GM_PARSE_OK);
}
END_TEST

START_TEST(test_header_with_size_above_max_is_too_large)
{
    unsigned char p[12];
    struct gm_header h;
    raw_header(p, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 4097);
    ck_assert_int_eq(gm_header_decode(p, 4096, &h), GM_PARSE_TOO_LARGE);
    ck_assert_uint_eq(h.size, 4097);
    raw_header(p, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 4096);
    ck_assert_int_eq(gm_header_decode(p, 4096, &h), GM_PARSE_OK);
    raw_header(p, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 1);
    ck_assert_int_eq(gm_header_decode(p, 0, &h), GM_PARSE_TOO_LARGE);
    raw_header(p, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 0xffffffffu);
    ck_assert_int_eq(gm_header_decode(p, 0xfffffffeu, &h), GM_PARSE_TOO_LARGE);
    ck_assert_int_eq(gm_header_decode(p, 0xffffffffu, &h), GM_PARSE_OK);

    /* The framer says so from the header alone, before any payload. */
    raw_header(p, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB, 64u << 20 | 1);
    char *c = exact_copy(p, 12);
    struct gm_frame f;
    gm_frame_next(c, 12, 64u << 20, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
    ck_assert_int_eq(f.error, GM_PARSE_TOO_LARGE);
    ck_assert_uint_eq(f.h.size, 64u << 20 | 1);
    /* Exactly the limit: wait for the payload, and say how much is needed. */
    raw_header((unsigned char *)c, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB, 64u << 20);
    gm_frame_next(c, 12, 64u << 20, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
    ck_assert_uint_eq(f.need, (uint64_t)12 + (64u << 20));
    /* The largest size the header can hold does not overflow `need`. */
    raw_header((unsigned char *)c, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 0xffffffffu);
    gm_frame_next(c, 12, 0xffffffffu, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
    ck_assert_uint_eq(f.need, (uint64_t)12 + 0xffffffffu);
    free(c);
}
END_TEST

START_TEST(test_fields_split_reports_missing_nul)
{
    struct gm_fields f;
    /* SUBMIT_JOB needs two NULs. */
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, "fnonly", 6, &f), GM_PARSE_MISSING_NUL);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, "fn\0uniq", 7, &f), GM_PARSE_MISSING_NUL);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, "", 0, &f), GM_PARSE_MISSING_NUL);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, "fn\0u\0", 5, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.count, 3);
    ck_assert_uint_eq(f.len[2], 0);
    ck_assert_uint_eq(f.start[2], 5);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, "\0\0", 2, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.len[0] + f.len[1] + f.len[2], 0);

    /* A reduce job has four NUL-terminated fields before its data (3 is not enough). */
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_REDUCE_JOB, "f\0u\0r\0data", 10, &f),
                     GM_PARSE_MISSING_NUL);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_REDUCE_JOB, "f\0u\0r\0\0data", 11, &f),
                     GM_PARSE_OK);
    ck_assert_uint_eq(f.count, 5);
    ck_assert_uint_eq(f.len[3], 0);
    ck_assert_uint_eq(f.start[4], 7);
    ck_assert_uint_eq(f.len[4], 4);

    /* The search is bounded by the size: a NUL just past it does not count. */
    char *p = exact_copy("fn\0uniq\0data", 12);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, p, 7, &f), GM_PARSE_MISSING_NUL);
    ck_assert_int_eq(gm_fields_split(GM_PKT_SUBMIT_JOB, p, 8, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.len[2], 0);
    free(p);
    p = exact_copy("h\0" "1", 3);
    ck_assert_int_eq(gm_fields_split(GM_PKT_WORK_STATUS, p, 3, &f), GM_PARSE_MISSING_NUL);
    free(p);

    /* One-field types take the whole payload, NULs included, even empty. */
    ck_assert_int_eq(gm_fields_split(GM_PKT_ECHO_REQ, "a\0b", 3, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.count, 1);
    ck_assert_uint_eq(f.len[0], 3);
    ck_assert_int_eq(gm_fields_split(GM_PKT_CAN_DO, "", 0, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.count, 1);
    ck_assert_uint_eq(f.len[0], 0);
    /* Extra NULs go to the last field. */
    ck_assert_int_eq(gm_fields_split(GM_PKT_WORK_COMPLETE, "H:x:1\0\0\0", 8, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.len[0], 5);
    ck_assert_uint_eq(f.len[1], 2);
}
END_TEST

START_TEST(test_fields_split_of_zero_field_type_ignores_payload)
{
    struct gm_fields f;
    ck_assert_int_eq(gm_fields_split(GM_PKT_GRAB_JOB, "junk", 4, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.count, 0);
    ck_assert_int_eq(gm_fields_split(GM_PKT_NOOP, "", 0, &f), GM_PARSE_OK);
    ck_assert_uint_eq(f.count, 0);
}
END_TEST

START_TEST(test_fields_split_rejects_bad_type)
{
    struct gm_fields f;
    ck_assert_int_eq(gm_fields_split(0, "a", 1, &f), GM_PARSE_BAD_TYPE);
    ck_assert_int_eq(gm_fields_split(43, "a", 1, &f), GM_PARSE_BAD_TYPE);
    ck_assert_int_eq(gm_fields_split(0xffffffffu, "a", 1, &f), GM_PARSE_BAD_TYPE);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Framing                                                             */
/* ------------------------------------------------------------------ */

struct exp_frame {
    int kind;
    uint32_t offset, length;
    uint32_t text_len;   /* TEXT */
    uint32_t magic, type, size; /* PACKET */
};

struct stream {
    char buf[4096];
    size_t len;
    struct exp_frame fr[32];
    size_t n;
};

static void
stream_packet(struct stream *s, uint32_t magic, uint32_t type, const struct gm_field_ref *f,
              size_t n)
{
    size_t size = gm_payload_size(f, n);
    ck_assert_uint_le(s->len + GM_HEADER_SIZE + size, sizeof s->buf);
    size_t w = gm_packet_encode(s->buf + s->len, magic, type, f, n);
    s->fr[s->n++] = (struct exp_frame){GM_FRAME_PACKET, (uint32_t)s->len, (uint32_t)w, 0,
                                       magic, type, (uint32_t)size};
    s->len += w;
}

static void
stream_text(struct stream *s, const char *line, uint32_t text_len)
{
    size_t n = strlen(line);
    memcpy(s->buf + s->len, line, n);
    s->fr[s->n++] = (struct exp_frame){GM_FRAME_TEXT, (uint32_t)s->len, (uint32_t)n, text_len,
                                       0, 0, 0};
    s->len += n;
}

static void
build_stream(struct stream *s)
{
    memset(s, 0, sizeof *s);
    static char big[300];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 7 == 0 ? '\0' : 'A' + i % 26);
    struct gm_field_ref submit[3] = {{"fn", 2}, {"uniq", 4}, {"data", 4}};
    struct gm_field_ref echo[1] = {{big, sizeof big}};
    struct gm_field_ref all[5] = {{"H:x:1", 5}, {"f", 1}, {"u", 1}, {"r", 1}, {"d\0d", 3}};
    struct gm_field_ref empty_fields[3] = {{"", 0}, {"", 0}, {"", 0}};

    stream_packet(s, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB, submit, 3);
    stream_text(s, "status\r\n", 6);
    stream_packet(s, GM_MAGIC_RES, GM_PKT_NOOP, NULL, 0);
    stream_text(s, "workers\n", 7);
    stream_packet(s, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, echo, 1);
    stream_text(s, "\n", 0);
    stream_text(s, "\r\n", 0);
    stream_packet(s, GM_MAGIC_RES, GM_PKT_JOB_ASSIGN_ALL, all, 5);
    stream_text(s, "maxqueue f 1 2 3\r\n", 16);
    stream_packet(s, GM_MAGIC_REQ, GM_PKT_SUBMIT_JOB_BG, empty_fields, 3);
    stream_text(s, "a\rb\n", 3); /* only a final \r is dropped */
    stream_packet(s, GM_MAGIC_REQ, GM_PKT_GRAB_JOB, NULL, 0);
    stream_text(s, "\tshow jobs \n", 11);
    stream_packet(s, GM_MAGIC_RES, GM_PKT_JOB_CREATED, submit, 1);
}

static void
assert_frame_is(const struct gm_frame *f, const struct exp_frame *e, size_t k, size_t i)
{
    ck_assert_msg(f->kind == e->kind, "prefix %zu frame %zu: kind %d, expected %d", k, i, f->kind,
                  e->kind);
    ck_assert_msg(f->length == e->length, "prefix %zu frame %zu: length %u, expected %u", k, i,
                  f->length, e->length);
    if (e->kind == GM_FRAME_TEXT) {
        ck_assert_msg(f->text_len == e->text_len, "prefix %zu frame %zu: text_len %u, expected %u",
                      k, i, f->text_len, e->text_len);
    } else {
        ck_assert_uint_eq(f->h.magic, e->magic);
        ck_assert_uint_eq(f->h.type, e->type);
        ck_assert_uint_eq(f->h.size, e->size);
    }
}

/* For every prefix length k of the stream (each in an exact-size buffer):
   the whole frames inside it come out identical to the ones built, and the
   rest is reported as NEED_MORE, with `need` once a header is whole. */
START_TEST(test_frame_stream_cut_at_every_byte_boundary)
{
    static struct stream s;
    build_stream(&s);
    for (size_t k = 0; k <= s.len; k++) {
        char *buf = exact_copy(s.buf, k);
        size_t off = 0, i = 0;
        for (;;) {
            struct gm_frame f;
            if (off == k)
                break;
            gm_frame_next(buf + off, k - off, 1u << 20, &f);
            if (f.kind == GM_FRAME_NEED_MORE) {
                ck_assert_msg(i < s.n, "prefix %zu: NEED_MORE past the last frame", k);
                const struct exp_frame *e = &s.fr[i];
                ck_assert_msg(k - off < e->length,
                              "prefix %zu: NEED_MORE for frame %zu with %zu of %u bytes", k, i,
                              k - off, e->length);
                if (e->kind == GM_FRAME_PACKET && k - off >= GM_HEADER_SIZE)
                    ck_assert_msg(f.need == e->length, "prefix %zu: need %llu, expected %u", k,
                                  (unsigned long long)f.need, e->length);
                else
                    ck_assert_uint_eq(f.need, 0);
                break;
            }
            ck_assert_msg(i < s.n, "prefix %zu: more frames than built", k);
            ck_assert_msg(off == s.fr[i].offset, "prefix %zu: frame %zu at %zu, expected %u", k, i,
                          off, s.fr[i].offset);
            assert_frame_is(&f, &s.fr[i], k, i);
            off += f.length;
            i++;
        }
        /* Every frame that ends inside the prefix came out. */
        size_t whole = 0;
        while (whole < s.n && s.fr[whole].offset + s.fr[whole].length <= k)
            whole++;
        ck_assert_msg(i == whole, "prefix %zu: %zu frames, expected %zu", k, i, whole);
        free(buf);
    }
}
END_TEST

/* Feeding the stream as an I/O thread would, in two reads cut at every
   byte, and then one byte per read: the same frames come out. */
START_TEST(test_frame_stream_fed_in_pieces_gives_the_same_frames)
{
    static struct stream s;
    build_stream(&s);
    for (size_t cut = 0; cut <= s.len + 1; cut++) {
        /* cut == s.len + 1 stands for "one byte per read" */
        char pending[4096];
        size_t have = 0, fed = 0, i = 0;
        while (fed < s.len) {
            size_t chunk = cut == s.len + 1 ? 1 : (fed < cut ? cut - fed : s.len - fed);
            if (chunk == 0)
                chunk = s.len - fed;
            memcpy(pending + have, s.buf + fed, chunk);
            have += chunk;
            fed += chunk;
            for (;;) {
                if (have == 0)
                    break;
                char *c = exact_copy(pending, have);
                struct gm_frame f;
                gm_frame_next(c, have, 1u << 20, &f);
                free(c);
                if (f.kind == GM_FRAME_NEED_MORE)
                    break;
                ck_assert_msg(i < s.n, "cut %zu: extra frame", cut);
                assert_frame_is(&f, &s.fr[i], cut, i);
                memmove(pending, pending + f.length, have - f.length);
                have -= f.length;
                i++;
            }
        }
        ck_assert_msg(i == s.n && have == 0, "cut %zu: %zu frames, %zu bytes left", cut, i, have);
    }
}
END_TEST

START_TEST(test_frame_text_line_length_with_crlf_and_lf)
{
    struct gm_frame f;
    char *c = exact_copy("status\r\nworkers\n", 16);
    gm_frame_next(c, 16, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_TEXT);
    ck_assert_uint_eq(f.length, 8);
    ck_assert_uint_eq(f.text_len, 6);
    gm_frame_next(c + 8, 8, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_TEXT);
    ck_assert_uint_eq(f.length, 8);
    ck_assert_uint_eq(f.text_len, 7);
    /* a line not yet ended: wait, even if it ends in \r */
    gm_frame_next(c, 7, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
    ck_assert_uint_eq(f.need, 0);
    free(c);
    c = exact_copy("\r\n", 2);
    gm_frame_next(c, 2, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_TEXT);
    ck_assert_uint_eq(f.length, 2);
    ck_assert_uint_eq(f.text_len, 0);
    gm_frame_next(c, 1, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
    free(c);
    c = exact_copy("\r\r\n", 3);
    gm_frame_next(c, 3, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_TEXT);
    ck_assert_uint_eq(f.text_len, 1);
    free(c);
    /* len 0 is "need more" */
    gm_frame_next("", 0, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
}
END_TEST

START_TEST(test_frame_text_line_without_newline_at_8192_bytes_is_too_long)
{
    ck_assert_int_eq(GM_TEXT_LINE_MAX, 8192);
    char *line = malloc(20000);
    ck_assert_ptr_nonnull(line);
    memset(line, 'a', 20000);
    struct gm_frame f;

    char *c = exact_copy(line, 8191);
    gm_frame_next(c, 8191, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
    free(c);

    c = exact_copy(line, 8192);
    gm_frame_next(c, 8192, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
    ck_assert_int_eq(f.error, GM_PARSE_LINE_TOO_LONG);
    free(c);

    gm_frame_next(line, 20000, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
    ck_assert_int_eq(f.error, GM_PARSE_LINE_TOO_LONG);

    /* 8191 bytes and "\n": exactly fits. */
    line[8191] = '\n';
    c = exact_copy(line, 8192);
    gm_frame_next(c, 8192, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_TEXT);
    ck_assert_uint_eq(f.length, 8192);
    ck_assert_uint_eq(f.text_len, 8191);
    free(c);
    /* the same with more bytes after it */
    gm_frame_next(line, 20000, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_TEXT);
    ck_assert_uint_eq(f.length, 8192);

    /* 8192 bytes, then "\n": one byte too long. */
    line[8191] = 'a';
    line[8192] = '\n';
    gm_frame_next(line, 8193, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
    ck_assert_int_eq(f.error, GM_PARSE_LINE_TOO_LONG);
    free(line);
}
END_TEST

START_TEST(test_frame_packet_header_in_pieces_needs_more)
{
    unsigned char p[12 + 100];
    raw_header(p, GM_MAGIC_REQ, GM_PKT_ECHO_REQ, 100);
    memset(p + 12, 'z', 100);
    for (size_t k = 1; k < sizeof p; k++) {
        char *c = exact_copy(p, k);
        struct gm_frame f;
        gm_frame_next(c, k, 1024, &f);
        ck_assert_int_eq(f.kind, GM_FRAME_NEED_MORE);
        ck_assert_uint_eq(f.need, k < 12 ? 0 : 112);
        free(c);
    }
    char *c = exact_copy(p, sizeof p);
    struct gm_frame f;
    gm_frame_next(c, sizeof p, 1024, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_PACKET);
    ck_assert_uint_eq(f.length, 112);
    /* 99 is the limit: the same header is now too large */
    gm_frame_next(c, 12, 99, &f);
    ck_assert_int_eq(f.kind, GM_FRAME_ERROR);
    ck_assert_int_eq(f.error, GM_PARSE_TOO_LARGE);
    free(c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Numbers                                                             */
/* ------------------------------------------------------------------ */

static bool
pu64(const char *s, uint64_t max, uint64_t *v)
{
    char *c = exact_copy(s, strlen(s));
    bool ok = gm_parse_u64(c, strlen(s), max, v);
    free(c);
    return ok;
}

static bool
pi64(const char *s, int64_t *v)
{
    char *c = exact_copy(s, strlen(s));
    bool ok = gm_parse_i64(c, strlen(s), v);
    free(c);
    return ok;
}

START_TEST(test_parse_u64_accepts_digits_up_to_max_only)
{
    uint64_t v = 99;
    ck_assert(pu64("0", UINT64_MAX, &v));
    ck_assert_uint_eq(v, 0);
    ck_assert(pu64("0007", UINT64_MAX, &v));
    ck_assert_uint_eq(v, 7);
    ck_assert(pu64("00000000000000000000000000000000001", UINT64_MAX, &v));
    ck_assert_uint_eq(v, 1);
    ck_assert(pu64("18446744073709551615", UINT64_MAX, &v));
    ck_assert_uint_eq(v, UINT64_MAX);
    v = 99;
    ck_assert(!pu64("18446744073709551616", UINT64_MAX, &v));
    ck_assert(!pu64("99999999999999999999", UINT64_MAX, &v));
    ck_assert(!pu64("184467440737095516150", UINT64_MAX, &v));
    ck_assert_uint_eq(v, 99); /* untouched on failure */
    ck_assert(pu64("1000", 1000, &v));
    ck_assert_uint_eq(v, 1000);
    ck_assert(!pu64("1001", 1000, &v));
    ck_assert(!pu64("10000", 1000, &v));
    ck_assert(!pu64("", UINT64_MAX, &v));
    ck_assert(!pu64("12a", UINT64_MAX, &v));
    ck_assert(!pu64("a12", UINT64_MAX, &v));
    ck_assert(!pu64("-1", UINT64_MAX, &v));
    ck_assert(!pu64("+1", UINT64_MAX, &v));
    ck_assert(!pu64(" 1", UINT64_MAX, &v));
    ck_assert(!pu64("1 ", UINT64_MAX, &v));
    ck_assert(!pu64("1/", UINT64_MAX, &v));
    ck_assert(!pu64("1:", UINT64_MAX, &v));
    /* exactly len bytes */
    ck_assert(gm_parse_u64("123456", 3, UINT64_MAX, &v));
    ck_assert_uint_eq(v, 123);
    ck_assert(!gm_parse_u64("1\0" "2", 3, UINT64_MAX, &v));
}
END_TEST

/* A max below 9: a single digit above it must still be refused. */
START_TEST(test_parse_u64_rejects_a_digit_above_a_small_max)
{
    uint64_t v = 99;
    ck_assert(pu64("0", 0, &v));
    ck_assert_uint_eq(v, 0);
    ck_assert(pu64("5", 5, &v));
    ck_assert_uint_eq(v, 5);
    v = 99;
    ck_assert_msg(!pu64("1", 0, &v), "\"1\" accepted with max 0 (got %llu)", (unsigned long long)v);
    ck_assert_msg(!pu64("7", 5, &v), "\"7\" accepted with max 5 (got %llu)", (unsigned long long)v);
    ck_assert_msg(!pu64("19", 5, &v), "\"19\" accepted with max 5 (got %llu)", (unsigned long long)v);
}
END_TEST

START_TEST(test_parse_i64_accepts_sign_and_full_range)
{
    int64_t v = 5;
    ck_assert(pi64("9223372036854775807", &v));
    ck_assert(v == INT64_MAX);
    ck_assert(pi64("-9223372036854775808", &v));
    ck_assert(v == INT64_MIN);
    ck_assert(pi64("-1", &v));
    ck_assert(v == -1);
    ck_assert(pi64("+42", &v));
    ck_assert(v == 42);
    ck_assert(pi64("-0", &v));
    ck_assert(v == 0);
    ck_assert(pi64("0", &v));
    ck_assert(v == 0);
    v = 5;
    ck_assert(!pi64("9223372036854775808", &v));
    ck_assert(!pi64("-9223372036854775809", &v));
    ck_assert(!pi64("18446744073709551615", &v));
    ck_assert(!pi64("", &v));
    ck_assert(!pi64("-", &v));
    ck_assert(!pi64("+", &v));
    ck_assert(!pi64("--1", &v));
    ck_assert(!pi64("+-1", &v));
    ck_assert(!pi64("1-", &v));
    ck_assert(!pi64(" 1", &v));
    ck_assert(!pi64("1.5", &v));
    ck_assert(!pi64("0x10", &v));
    ck_assert(v == 5);
}
END_TEST

static uint32_t
atou(const char *s)
{
    char *c = exact_copy(s, strlen(s));
    uint32_t v = gm_atou32_lenient(c, strlen(s));
    free(c);
    return v;
}

START_TEST(test_atou32_lenient_reads_like_atoi_cast_to_uint32)
{
    ck_assert_uint_eq(atou("42"), 42);
    ck_assert_uint_eq(atou("  42"), 42);
    ck_assert_uint_eq(atou("42abc"), 42);
    ck_assert_uint_eq(atou("4 2"), 4);
    ck_assert_uint_eq(atou("abc"), 0);
    ck_assert_uint_eq(atou(""), 0);
    ck_assert_uint_eq(atou("-"), 0);
    ck_assert_uint_eq(atou("+7"), 7);
    ck_assert_uint_eq(atou("-1"), 4294967295u);
    ck_assert_uint_eq(atou("-2"), 4294967294u);
    ck_assert_uint_eq(atou("4294967295"), 4294967295u);
    ck_assert_uint_eq(atou("4294967296"), 0);
    ck_assert_uint_eq(atou("4294967297"), 1);
    ck_assert_uint_eq(atou("8589934593"), 1);
    ck_assert_uint_eq(atou("- 3"), 0);
    ck_assert_uint_eq(atou("007"), 7);
    /* bounded by len */
    ck_assert_uint_eq(gm_atou32_lenient("123", 2), 12);
    ck_assert_uint_eq(gm_atou32_lenient("123", 0), 0);
}
END_TEST

/* Every byte value alone, then the length limits: control bytes are
   refused in both kinds of name, anything else (spaces, UTF-8) is not;
   only a function name has a length limit (a client id is cut later). */
START_TEST(test_name_check_refuses_control_bytes_and_function_names_over_512_bytes)
{
    for (int c = 0; c < 256; c++) {
        char b = (char)c;
        bool control = c < 0x20 || c == 0x7f;
        for (int kind = GM_NAME_FUNCTION; kind <= GM_NAME_CLIENT_ID; kind++) {
            const struct gm_name_fault *f = gm_name_check(kind, &b, 1);
            ck_assert_msg((f != NULL) == control, "byte 0x%02x in a name of kind %d: %s", c, kind,
                          f ? f->text : "accepted");
            if (f)
                ck_assert_str_eq(f->code, "INVALID_ARGUMENT");
        }
    }
    ck_assert_ptr_null(gm_name_check(GM_NAME_FUNCTION, "", 0));
    ck_assert_ptr_null(gm_name_check(GM_NAME_FUNCTION, "with space", 10));
    ck_assert_ptr_nonnull(gm_name_check(GM_NAME_FUNCTION, "ok\0", 3)); /* a NUL counts */
    char big[1024];
    memset(big, 'n', sizeof big);
    ck_assert_ptr_null(gm_name_check(GM_NAME_FUNCTION, big, GM_FUNCTION_NAME_MAX));
    const struct gm_name_fault *f = gm_name_check(GM_NAME_FUNCTION, big, GM_FUNCTION_NAME_MAX + 1);
    ck_assert_ptr_nonnull(f);
    ck_assert_str_eq(f->code, "ARGUMENT_TOO_LARGE");
    ck_assert_str_eq(f->text, "Function name is longer than 512 bytes");
    ck_assert_ptr_null(gm_name_check(GM_NAME_CLIENT_ID, big, sizeof big));
    big[700] = '\n'; /* past any limit, still a control byte */
    ck_assert_ptr_nonnull(gm_name_check(GM_NAME_CLIENT_ID, big, sizeof big));
}
END_TEST

START_TEST(test_fmt_u64_writes_decimal_without_nul)
{
    static const struct {
        uint64_t v;
        const char *s;
    } cases[] = {
        {0, "0"},
        {9, "9"},
        {10, "10"},
        {1000000, "1000000"},
        {4294967295u, "4294967295"},
        {4294967296u, "4294967296"},
        {UINT64_MAX, "18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        memset(buf, 'x', sizeof buf);
        size_t n = gm_fmt_u64(buf, cases[i].v);
        ck_assert_uint_eq(n, strlen(cases[i].s));
        ck_assert_mem_eq(buf, cases[i].s, n);
        ck_assert_int_eq(buf[n], 'x');
    }
    /* Round trip through the parser at every power of ten and its neighbours. */
    uint64_t p = 1;
    for (int e = 0; e < 20; e++, p *= 10) {
        uint64_t vals[3] = {p - 1, p, p + 1};
        for (int j = 0; j < 3; j++) {
            char buf[20];
            size_t n = gm_fmt_u64(buf, vals[j]);
            ck_assert_uint_le(n, 20);
            uint64_t back;
            ck_assert(gm_parse_u64(buf, n, UINT64_MAX, &back));
            ck_assert_uint_eq(back, vals[j]);
        }
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Admin line splitting                                                */
/* ------------------------------------------------------------------ */

static void
split(const char *line, struct gm_admin_words *w)
{
    size_t len = strlen(line);
    char *c = exact_copy(line, len);
    memset(w, 0xa5, sizeof *w);
    gm_admin_split(c, len, w);
    free(c);
}

static void
assert_word(const char *line, const struct gm_admin_words *w, unsigned i, const char *expect)
{
    ck_assert_msg(i < w->count, "\"%s\": no word %u (count %u)", line, i, w->count);
    ck_assert_msg(w->len[i] == strlen(expect) &&
                      memcmp(line + w->start[i], expect, strlen(expect)) == 0,
                  "\"%s\": word %u is \"%.*s\", expected \"%s\"", line, i, (int)w->len[i],
                  line + w->start[i], expect);
}

START_TEST(test_admin_split_single_and_multiple_spaces)
{
    struct gm_admin_words w;
    const char *l = "status";
    split(l, &w);
    ck_assert_uint_eq(w.count, 1);
    ck_assert_uint_eq(w.more, 0);
    assert_word(l, &w, 0, "status");

    l = "maxqueue f 1";
    split(l, &w);
    ck_assert_uint_eq(w.count, 3);
    assert_word(l, &w, 0, "maxqueue");
    assert_word(l, &w, 1, "f");
    assert_word(l, &w, 2, "1");
    ck_assert_uint_eq(w.start[2], 11);

    l = "show    unique  jobs";
    split(l, &w);
    ck_assert_uint_eq(w.count, 3);
    assert_word(l, &w, 0, "show");
    assert_word(l, &w, 1, "unique");
    assert_word(l, &w, 2, "jobs");
}
END_TEST

START_TEST(test_admin_split_leading_and_trailing_spaces_give_empty_words)
{
    /* gearmand's rule: a run of spaces is one separator, so a leading run
       makes an empty first word and a trailing run an empty last word. */
    struct gm_admin_words w;
    const char *l = "  status";
    split(l, &w);
    ck_assert_uint_eq(w.count, 2);
    assert_word(l, &w, 0, "");
    assert_word(l, &w, 1, "status");

    l = "status   ";
    split(l, &w);
    ck_assert_uint_eq(w.count, 2);
    assert_word(l, &w, 0, "status");
    assert_word(l, &w, 1, "");

    l = " ";
    split(l, &w);
    ck_assert_uint_eq(w.count, 2);
    assert_word(l, &w, 0, "");
    assert_word(l, &w, 1, "");
}
END_TEST

START_TEST(test_admin_split_empty_line_is_one_empty_word)
{
    struct gm_admin_words w;
    memset(&w, 0xa5, sizeof w);
    gm_admin_split("", 0, &w);
    ck_assert_uint_eq(w.count, 1);
    ck_assert_uint_eq(w.more, 0);
    ck_assert_uint_eq(w.len[0], 0);
}
END_TEST

START_TEST(test_admin_split_more_than_eight_words_sets_more)
{
    struct gm_admin_words w;
    const char *l = "a b c d e f g h";
    split(l, &w);
    ck_assert_uint_eq(w.count, 8);
    ck_assert_uint_eq(w.more, 0);
    assert_word(l, &w, 7, "h");

    l = "a b c d e f g h i";
    split(l, &w);
    ck_assert_uint_eq(w.count, GM_ADMIN_MAX_WORDS);
    ck_assert_uint_eq(w.more, 1);
    assert_word(l, &w, 7, "h");

    l = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16";
    split(l, &w);
    ck_assert_uint_eq(w.count, 8);
    ck_assert_uint_eq(w.more, 1);
    assert_word(l, &w, 0, "1");
    assert_word(l, &w, 7, "8");
}
END_TEST

START_TEST(test_admin_split_tabs_are_not_separators)
{
    struct gm_admin_words w;
    const char *l = "drop\tfunction f";
    split(l, &w);
    ck_assert_uint_eq(w.count, 2);
    assert_word(l, &w, 0, "drop\tfunction");
    assert_word(l, &w, 1, "f");
    l = "\tstatus\t";
    split(l, &w);
    ck_assert_uint_eq(w.count, 1);
    assert_word(l, &w, 0, "\tstatus\t");
    /* a tab after a space starts the next word, it is not skipped */
    l = "show \tjobs";
    split(l, &w);
    ck_assert_uint_eq(w.count, 2);
    assert_word(l, &w, 0, "show");
    assert_word(l, &w, 1, "\tjobs");
}
END_TEST

START_TEST(test_admin_split_offsets_reach_a_long_line)
{
    size_t len = GM_TEXT_LINE_MAX - 1;
    char *line = malloc(len);
    ck_assert_ptr_nonnull(line);
    memset(line, 'x', len);
    line[4] = ' ';
    line[len - 3] = ' ';
    struct gm_admin_words w;
    gm_admin_split(line, len, &w);
    ck_assert_uint_eq(w.count, 3);
    ck_assert_uint_eq(w.start[0], 0);
    ck_assert_uint_eq(w.len[0], 4);
    ck_assert_uint_eq(w.start[1], 5);
    ck_assert_uint_eq(w.len[1], len - 3 - 5);
    ck_assert_uint_eq(w.start[2], len - 2);
    ck_assert_uint_eq(w.len[2], 2);
    free(line);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Schedules                                                           */
/* ------------------------------------------------------------------ */

static int
sched_parse_str(const char *mi, const char *h, const char *dom, const char *mon, const char *dow,
                struct gm_sched *s)
{
    const char *f[5] = {mi, h, dom, mon, dow};
    size_t l[5];
    for (int i = 0; i < 5; i++)
        l[i] = strlen(f[i]);
    return gm_sched_parse(f, l, s);
}

static int64_t
utc(int y, int mon, int d, int h, int mi, int s)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm);
}

static struct gm_sched
sched(const char *mi, const char *h, const char *dom, const char *mon, const char *dow)
{
    struct gm_sched s;
    int rc = sched_parse_str(mi, h, dom, mon, dow, &s);
    ck_assert_msg(rc == 0, "schedule \"%s %s %s %s %s\" rejected at field %d", mi, h, dom, mon, dow,
                  rc);
    return s;
}

START_TEST(test_sched_parse_wildcards_numbers_and_bad_fields)
{
    struct gm_sched s;
    ck_assert_int_eq(sched_parse_str("", "", "", "", "", &s), 0);
    ck_assert_int_eq(s.minute, -1);
    ck_assert_int_eq(s.hour, -1);
    ck_assert_int_eq(s.mday, -1);
    ck_assert_int_eq(s.month, -1);
    ck_assert_int_eq(s.wday, -1);
    ck_assert_int_eq(sched_parse_str("*", "*", "*", "*", "*", &s), 0);
    ck_assert_int_eq(s.minute, -1);
    ck_assert_int_eq(s.wday, -1);
    ck_assert_int_eq(sched_parse_str("59", "23", "31", "12", "6", &s), 0);
    ck_assert_int_eq(s.minute, 59);
    ck_assert_int_eq(s.hour, 23);
    ck_assert_int_eq(s.mday, 31);
    ck_assert_int_eq(s.month, 12);
    ck_assert_int_eq(s.wday, 6);
    ck_assert_int_eq(sched_parse_str("0", "0", "1", "1", "0", &s), 0);
    ck_assert_int_eq(s.minute, 0);
    ck_assert_int_eq(s.hour, 0);
    ck_assert_int_eq(sched_parse_str("", "", "", "", "7", &s), 0);
    ck_assert_int_eq(s.wday, 0); /* 7 is Sunday too */

    ck_assert_int_eq(sched_parse_str("60", "", "", "", "", &s), 1);
    ck_assert_int_eq(sched_parse_str("-1", "", "", "", "", &s), 1);
    ck_assert_int_eq(sched_parse_str("x", "", "", "", "", &s), 1);
    ck_assert_int_eq(sched_parse_str("**", "", "", "", "", &s), 1);
    ck_assert_int_eq(sched_parse_str("1,2", "", "", "", "", &s), 1);
    ck_assert_int_eq(sched_parse_str("", "24", "", "", "", &s), 2);
    ck_assert_int_eq(sched_parse_str("", "", "0", "", "", &s), 3);
    ck_assert_int_eq(sched_parse_str("", "", "32", "", "", &s), 3);
    ck_assert_int_eq(sched_parse_str("", "", "", "0", "", &s), 4);
    ck_assert_int_eq(sched_parse_str("", "", "", "13", "", &s), 4);
    ck_assert_int_eq(sched_parse_str("", "", "", "", "8", &s), 5);
    ck_assert_int_eq(sched_parse_str("", "", "", "", " 1", &s), 5);
    /* the first bad field is the one reported */
    ck_assert_int_eq(sched_parse_str("", "99", "", "99", "", &s), 2);
}
END_TEST

START_TEST(test_sched_next_all_wildcards_is_the_current_minute)
{
    struct gm_sched s = sched("", "*", "", "*", "");
    int64_t t = utc(2024, 3, 10, 12, 34, 0);
    ck_assert_int_eq(gm_sched_next(&s, t), t);            /* a whole minute is its own answer */
    ck_assert_int_eq(gm_sched_next(&s, t + 1), t);        /* and so is any second in it */
    ck_assert_int_eq(gm_sched_next(&s, t + 59), t);
    ck_assert_int_eq(gm_sched_next(&s, t - 1), t - 60);
}
END_TEST

/* Design section 9: the minute now counts, so a job whose fields match it
   runs now, not at the next match (a year later with day and month given). */
START_TEST(test_sched_next_fields_matching_the_current_minute_run_now)
{
    /* every field given, all matching 2024-03-10 12:34 (a Sunday) */
    struct gm_sched s = sched("34", "12", "10", "3", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 34, 5)), utc(2024, 3, 10, 12, 34, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 34, 59)), utc(2024, 3, 10, 12, 34, 0));
    s = sched("34", "12", "10", "3", "0");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 34, 30)), utc(2024, 3, 10, 12, 34, 0));
    /* one minute later it is gone for a year */
    s = sched("34", "12", "10", "3", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 35, 0)), utc(2025, 3, 10, 12, 34, 0));
    /* a minute already passed this hour: the next hour */
    s = sched("10", "", "", "", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 34, 5)), utc(2024, 3, 10, 13, 10, 0));
    /* the last minute of the year, at 23:59:30 on 31 December */
    s = sched("59", "23", "31", "12", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 12, 31, 23, 59, 30)),
                     utc(2024, 12, 31, 23, 59, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2025, 1, 1, 0, 0, 0)), utc(2025, 12, 31, 23, 59, 0));
    /* from that same second, the first minute of the next year */
    s = sched("0", "0", "1", "1", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 12, 31, 23, 59, 30)), utc(2025, 1, 1, 0, 0, 0));
    s = sched("", "", "", "", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 12, 31, 23, 59, 30)),
                     utc(2024, 12, 31, 23, 59, 0));
}
END_TEST

START_TEST(test_sched_next_minute_and_hour_fields)
{
    struct gm_sched s = sched("30", "", "", "", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 34, 5)), utc(2024, 3, 10, 13, 30, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 30, 0)), utc(2024, 3, 10, 12, 30, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 29, 59)), utc(2024, 3, 10, 12, 30, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 30, 1)), utc(2024, 3, 10, 12, 30, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 3, 10, 12, 31, 0)), utc(2024, 3, 10, 13, 30, 0));
    s = sched("0", "0", "", "", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 15, 10, 0, 0)), utc(2024, 1, 16, 0, 0, 0));
    s = sched("", "7", "", "", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 15, 6, 59, 30)), utc(2024, 1, 15, 7, 0, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 15, 7, 59, 30)), utc(2024, 1, 15, 7, 59, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 15, 8, 0, 0)), utc(2024, 1, 16, 7, 0, 0));
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 15, 7, 20, 30)), utc(2024, 1, 15, 7, 20, 0));
    /* across the end of a year */
    s = sched("0", "0", "1", "1", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 12, 31, 23, 59, 30)), utc(2025, 1, 1, 0, 0, 0));
}
END_TEST

START_TEST(test_sched_next_impossible_date_never_matches)
{
    struct gm_sched s = sched("0", "0", "31", "2", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 1, 0, 0, 0)), -1);
    s = sched("", "", "30", "2", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 1, 0, 0, 0)), -1);
    s = sched("", "", "31", "4", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 1, 1, 0, 0, 0)), -1);
    /* 29 February waits for the next leap year */
    s = sched("0", "0", "29", "2", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2025, 3, 1, 0, 0, 0)), utc(2028, 2, 29, 0, 0, 0));
}
END_TEST

START_TEST(test_sched_next_day_of_month_or_day_of_week_as_cron)
{
    /* 2024-09-10 is a Tuesday. */
    time_t tue = (time_t)utc(2024, 9, 10, 0, 0, 0);
    struct tm tm;
    gmtime_r(&tue, &tm);
    ck_assert_int_eq(tm.tm_wday, 2);
    /* 11th or Friday: the 11th (a Wednesday) comes first */
    struct gm_sched s = sched("0", "0", "11", "", "5");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 9, 10, 12, 0, 0)), utc(2024, 9, 11, 0, 0, 0));
    /* from the 12th on, Friday the 13th comes before 11 October */
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 9, 12, 0, 0, 1)), utc(2024, 9, 13, 0, 0, 0));
    /* day of week alone */
    s = sched("0", "0", "", "", "1");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 9, 10, 0, 0, 0)), utc(2024, 9, 16, 0, 0, 0));
    s = sched("0", "0", "", "", "7"); /* Sunday */
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 9, 10, 0, 0, 0)), utc(2024, 9, 15, 0, 0, 0));
    /* day of month alone */
    s = sched("0", "0", "1", "", "");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 9, 10, 0, 0, 0)), utc(2024, 10, 1, 0, 0, 0));
    /* with a month: 31 February or any Monday in February */
    s = sched("0", "12", "31", "2", "1");
    ck_assert_int_eq(gm_sched_next(&s, utc(2024, 9, 10, 0, 0, 0)), utc(2025, 2, 3, 12, 0, 0));
}
END_TEST

static bool
day_matches_at(const struct gm_sched *s, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (s->month >= 0 && s->month != tm.tm_mon + 1)
        return false;
    if (s->mday >= 0 && s->wday >= 0)
        return s->mday == tm.tm_mday || s->wday == tm.tm_wday;
    return (s->mday < 0 || s->mday == tm.tm_mday) && (s->wday < 0 || s->wday == tm.tm_wday);
}

static bool
minute_matches(const struct gm_sched *s, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (s->minute >= 0 && s->minute != tm.tm_min)
        return false;
    if (s->hour >= 0 && s->hour != tm.tm_hour)
        return false;
    return day_matches_at(s, t);
}

/* Against a brute-force walk over every minute: the answer is a whole
   minute, not before the minute now is in, it matches, and no minute in
   between does. */
START_TEST(test_sched_next_is_the_first_matching_whole_minute)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 300; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t r = seed >> 11;
        char mi[4] = "", h[4] = "", dom[4] = "", mon[4] = "", dow[4] = "";
        if (r & 1)
            snprintf(mi, sizeof mi, "%u", (unsigned)(r >> 8) % 60);
        if (r & 2)
            snprintf(h, sizeof h, "%u", (unsigned)(r >> 16) % 24);
        if (r & 4)
            snprintf(dom, sizeof dom, "%u", 1 + (unsigned)(r >> 24) % 28);
        if ((r & 8) && !(r & 4))
            snprintf(dow, sizeof dow, "%u", (unsigned)(r >> 32) % 8);
        if ((r & 0x30) == 0x30)
            snprintf(mon, sizeof mon, "%u", 1 + (unsigned)(r >> 40) % 12);
        struct gm_sched s = sched(mi, h, dom, mon, dow);
        int64_t now = utc(2023, 1, 1, 0, 0, 0) + (int64_t)((r >> 3) % (4ull * 365 * 86400));
        int64_t next = gm_sched_next(&s, now);
        ck_assert_msg(next >= now - now % 60, "round %d: %lld before the minute of %lld", round,
                      (long long)next, (long long)now);
        ck_assert_msg(next % 60 == 0, "round %d: %lld is not a whole minute", round,
                      (long long)next);
        ck_assert_msg(minute_matches(&s, next), "round %d: %lld does not match", round,
                      (long long)next);
        /* Every minute in between, skipping whole days that do not match
           (the day test does not depend on the time of day). */
        int64_t t = now - now % 60;
        while (t < next) {
            if (!day_matches_at(&s, t)) {
                t = t - t % 86400 + 86400;
                continue;
            }
            ck_assert_msg(!minute_matches(&s, t), "round %d: %lld matches before %lld", round,
                          (long long)t, (long long)next);
            t += 60;
        }
    }
}
END_TEST

/* Issue 14.5: a schedule that can never match costs no walk at all (it
   walked 2,928 days, a timegm and a gmtime each), and the longest walk that
   finds a match (29 February, from 2096 to 2104) steps a month at a time
   outside February. */
START_TEST(test_sched_next_impossible_schedule_is_answered_without_walking)
{
    static const char *const never[][2] = {{"30", "2"}, {"31", "2"}, {"31", "4"}, {"31", "6"},
                                           {"31", "9"}, {"31", "11"}};
    uint32_t steps = 12345;
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
        struct gm_sched s = sched("0", "0", never[i][0], never[i][1], "");
        ck_assert_int_eq(gm_sched_next_counted(&s, utc(2024, 1, 1, 0, 0, 0), &steps), -1);
        ck_assert_msg(steps == 0, "%s/%s walked %u steps", never[i][0], never[i][1], steps);
    }
    /* with a day of week the day of month is only one way to match */
    struct gm_sched s = sched("0", "0", "30", "2", "3");
    ck_assert_int_eq(gm_sched_next_counted(&s, utc(2024, 3, 1, 0, 0, 0), &steps), utc(2025, 2, 5, 0, 0, 0));
    ck_assert_uint_lt(steps, 400);
    /* the longest wait there is: 2100 is not a leap year */
    s = sched("0", "0", "29", "2", "");
    ck_assert_int_eq(gm_sched_next_counted(&s, utc(2096, 3, 1, 0, 0, 0), &steps), utc(2104, 2, 29, 0, 0, 0));
    ck_assert_uint_lt(steps, 400);
    /* a fixed month and day: at most a year of months and a month of days */
    s = sched("0", "0", "10", "3", "");
    ck_assert_int_eq(gm_sched_next_counted(&s, utc(2024, 3, 11, 0, 0, 0), &steps), utc(2025, 3, 10, 0, 0, 0));
    ck_assert_uint_lt(steps, 12 + 31);
}
END_TEST

/* Days 29 to 31 with and without a month: the answer is -1 exactly when no
   day in eight years matches, else the first matching day. */
START_TEST(test_sched_next_late_days_match_the_first_such_day)
{
    for (int mon = 0; mon <= 12; mon++) {
        for (int dom = 28; dom <= 31; dom++) {
            char d[4], m[4] = "";
            snprintf(d, sizeof d, "%d", dom);
            if (mon)
                snprintf(m, sizeof m, "%d", mon);
            struct gm_sched s = sched("0", "0", d, m, "");
            int64_t now = utc(2023, 5, 17, 0, 0, 1);
            int64_t want = -1;
            for (int64_t t = now - now % 86400 + 86400; t < now + 366 * 8 * INT64_C(86400); t += 86400)
                if (day_matches_at(&s, t)) {
                    want = t;
                    break;
                }
            ck_assert_msg(gm_sched_next(&s, now) == want, "day %d month %d: %lld, want %lld", dom, mon,
                          (long long)gm_sched_next(&s, now), (long long)want);
        }
    }
}
END_TEST

/* ------------------------------------------------------------------ */

#define ADD(s, t) gm_check_add((s), #t, t, 60, NULL, NULL)

static Suite *
protocol_suite(void)
{
    Suite *s = suite_create("protocol");
    ADD(s, test_packet_table_has_every_type_with_its_field_count);
    ADD(s, test_every_type_round_trips_under_both_magics);
    ADD(s, test_encode_joins_fields_with_single_nuls_and_no_trailing_nul);
    ADD(s, test_header_encode_is_big_endian);
    ADD(s, test_header_with_bad_magic_is_rejected);
    ADD(s, test_header_with_type_0_or_43_and_above_is_rejected);
    ADD(s, test_header_with_size_above_max_is_too_large);
    ADD(s, test_fields_split_reports_missing_nul);
    ADD(s, test_fields_split_of_zero_field_type_ignores_payload);
    ADD(s, test_fields_split_rejects_bad_type);
    ADD(s, test_frame_stream_cut_at_every_byte_boundary);
    ADD(s, test_frame_stream_fed_in_pieces_gives_the_same_frames);
    ADD(s, test_frame_text_line_length_with_crlf_and_lf);
    ADD(s, test_frame_text_line_without_newline_at_8192_bytes_is_too_long);
    ADD(s, test_frame_packet_header_in_pieces_needs_more);
    ADD(s, test_parse_u64_accepts_digits_up_to_max_only);
    ADD(s, test_parse_u64_rejects_a_digit_above_a_small_max);
    ADD(s, test_parse_i64_accepts_sign_and_full_range);
    ADD(s, test_atou32_lenient_reads_like_atoi_cast_to_uint32);
    ADD(s, test_name_check_refuses_control_bytes_and_function_names_over_512_bytes);
    ADD(s, test_fmt_u64_writes_decimal_without_nul);
    ADD(s, test_admin_split_single_and_multiple_spaces);
    ADD(s, test_admin_split_leading_and_trailing_spaces_give_empty_words);
    ADD(s, test_admin_split_empty_line_is_one_empty_word);
    ADD(s, test_admin_split_more_than_eight_words_sets_more);
    ADD(s, test_admin_split_tabs_are_not_separators);
    ADD(s, test_admin_split_offsets_reach_a_long_line);
    ADD(s, test_sched_parse_wildcards_numbers_and_bad_fields);
    ADD(s, test_sched_next_all_wildcards_is_the_current_minute);
    ADD(s, test_sched_next_fields_matching_the_current_minute_run_now);
    ADD(s, test_sched_next_minute_and_hour_fields);
    ADD(s, test_sched_next_impossible_date_never_matches);
    ADD(s, test_sched_next_day_of_month_or_day_of_week_as_cron);
    ADD(s, test_sched_next_is_the_first_matching_whole_minute);
    ADD(s, test_sched_next_impossible_schedule_is_answered_without_walking);
    ADD(s, test_sched_next_late_days_match_the_first_such_day);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(protocol_suite());
}
