/*
 * protocol.c: the Gearman binary protocol codec (see protocol.h).
 *
 * Owns the packet table (read-only).  Pure functions, any thread.
 */
#include "config.h"

#include "libgearman-server/proto/protocol.h"

#include <string.h>

/* Field counts follow one rule: all fields but the last end with a NUL, the
   last runs to the end of the payload.  So "func\0unique\0data" is 3. */
static const struct gm_packet_info packet_table[GM_PKT_TYPE_COUNT] = {
    [GM_PKT_TEXT] = {"TEXT", 0, GM_DIR_NONE},
    [GM_PKT_CAN_DO] = {"CAN_DO", 1, GM_DIR_REQUEST},
    [GM_PKT_CANT_DO] = {"CANT_DO", 1, GM_DIR_REQUEST},
    [GM_PKT_RESET_ABILITIES] = {"RESET_ABILITIES", 0, GM_DIR_REQUEST},
    [GM_PKT_PRE_SLEEP] = {"PRE_SLEEP", 0, GM_DIR_REQUEST},
    [GM_PKT_UNUSED] = {"UNUSED", 0, GM_DIR_NONE},
    [GM_PKT_NOOP] = {"NOOP", 0, GM_DIR_RESPONSE},
    [GM_PKT_SUBMIT_JOB] = {"SUBMIT_JOB", 3, GM_DIR_REQUEST},
    [GM_PKT_JOB_CREATED] = {"JOB_CREATED", 1, GM_DIR_RESPONSE},
    [GM_PKT_GRAB_JOB] = {"GRAB_JOB", 0, GM_DIR_REQUEST},
    [GM_PKT_NO_JOB] = {"NO_JOB", 0, GM_DIR_RESPONSE},
    [GM_PKT_JOB_ASSIGN] = {"JOB_ASSIGN", 3, GM_DIR_RESPONSE},
    [GM_PKT_WORK_STATUS] = {"WORK_STATUS", 3, GM_DIR_REQUEST | GM_DIR_RESPONSE},
    [GM_PKT_WORK_COMPLETE] = {"WORK_COMPLETE", 2, GM_DIR_REQUEST | GM_DIR_RESPONSE},
    [GM_PKT_WORK_FAIL] = {"WORK_FAIL", 1, GM_DIR_REQUEST | GM_DIR_RESPONSE},
    [GM_PKT_GET_STATUS] = {"GET_STATUS", 1, GM_DIR_REQUEST},
    [GM_PKT_ECHO_REQ] = {"ECHO_REQ", 1, GM_DIR_REQUEST},
    [GM_PKT_ECHO_RES] = {"ECHO_RES", 1, GM_DIR_RESPONSE},
    [GM_PKT_SUBMIT_JOB_BG] = {"SUBMIT_JOB_BG", 3, GM_DIR_REQUEST},
    [GM_PKT_ERROR] = {"ERROR", 2, GM_DIR_RESPONSE},
    [GM_PKT_STATUS_RES] = {"STATUS_RES", 5, GM_DIR_RESPONSE},
    [GM_PKT_SUBMIT_JOB_HIGH] = {"SUBMIT_JOB_HIGH", 3, GM_DIR_REQUEST},
    [GM_PKT_SET_CLIENT_ID] = {"SET_CLIENT_ID", 1, GM_DIR_REQUEST},
    [GM_PKT_CAN_DO_TIMEOUT] = {"CAN_DO_TIMEOUT", 2, GM_DIR_REQUEST},
    [GM_PKT_ALL_YOURS] = {"ALL_YOURS", 0, GM_DIR_REQUEST},
    [GM_PKT_WORK_EXCEPTION] = {"WORK_EXCEPTION", 2, GM_DIR_REQUEST | GM_DIR_RESPONSE},
    [GM_PKT_OPTION_REQ] = {"OPTION_REQ", 1, GM_DIR_REQUEST},
    [GM_PKT_OPTION_RES] = {"OPTION_RES", 1, GM_DIR_RESPONSE},
    [GM_PKT_WORK_DATA] = {"WORK_DATA", 2, GM_DIR_REQUEST | GM_DIR_RESPONSE},
    [GM_PKT_WORK_WARNING] = {"WORK_WARNING", 2, GM_DIR_REQUEST | GM_DIR_RESPONSE},
    [GM_PKT_GRAB_JOB_UNIQ] = {"GRAB_JOB_UNIQ", 0, GM_DIR_REQUEST},
    [GM_PKT_JOB_ASSIGN_UNIQ] = {"JOB_ASSIGN_UNIQ", 4, GM_DIR_RESPONSE},
    [GM_PKT_SUBMIT_JOB_HIGH_BG] = {"SUBMIT_JOB_HIGH_BG", 3, GM_DIR_REQUEST},
    [GM_PKT_SUBMIT_JOB_LOW] = {"SUBMIT_JOB_LOW", 3, GM_DIR_REQUEST},
    [GM_PKT_SUBMIT_JOB_LOW_BG] = {"SUBMIT_JOB_LOW_BG", 3, GM_DIR_REQUEST},
    [GM_PKT_SUBMIT_JOB_SCHED] = {"SUBMIT_JOB_SCHED", 8, GM_DIR_REQUEST},
    [GM_PKT_SUBMIT_JOB_EPOCH] = {"SUBMIT_JOB_EPOCH", 4, GM_DIR_REQUEST},
    [GM_PKT_SUBMIT_REDUCE_JOB] = {"SUBMIT_REDUCE_JOB", 5, GM_DIR_REQUEST},
    [GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND] = {"SUBMIT_REDUCE_JOB_BACKGROUND", 5, GM_DIR_REQUEST},
    [GM_PKT_GRAB_JOB_ALL] = {"GRAB_JOB_ALL", 0, GM_DIR_REQUEST},
    [GM_PKT_JOB_ASSIGN_ALL] = {"JOB_ASSIGN_ALL", 5, GM_DIR_RESPONSE},
    [GM_PKT_GET_STATUS_UNIQUE] = {"GET_STATUS_UNIQUE", 1, GM_DIR_REQUEST},
    [GM_PKT_STATUS_RES_UNIQUE] = {"STATUS_RES_UNIQUE", 6, GM_DIR_RESPONSE},
};

const struct gm_packet_info *
gm_packet_info(uint32_t type)
{
    if (type == GM_PKT_TEXT || type >= GM_PKT_TYPE_COUNT)
        return NULL;
    return &packet_table[type];
}

const char *
gm_packet_name(uint32_t type)
{
    const struct gm_packet_info *info = gm_packet_info(type);
    return info ? info->name : "UNKNOWN";
}

static uint32_t
load_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
store_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

int
gm_header_decode(const unsigned char *p, uint32_t max_size, struct gm_header *h)
{
    h->magic = load_be32(p);
    h->type = load_be32(p + 4);
    h->size = load_be32(p + 8);
    if (h->magic != GM_MAGIC_REQ && h->magic != GM_MAGIC_RES)
        return GM_PARSE_BAD_MAGIC;
    if (!gm_packet_info(h->type))
        return GM_PARSE_BAD_TYPE;
    if (h->size > max_size)
        return GM_PARSE_TOO_LARGE;
    return GM_PARSE_OK;
}

void
gm_header_encode(unsigned char *p, uint32_t magic, uint32_t type, uint32_t size)
{
    store_be32(p, magic);
    store_be32(p + 4, type);
    store_be32(p + 8, size);
}

void
gm_frame_next(const char *buf, size_t len, uint32_t max_size, struct gm_frame *f)
{
    f->kind = GM_FRAME_NEED_MORE;
    f->need = 0;
    f->length = 0;
    f->error = GM_PARSE_OK;
    if (len == 0)
        return;
    if (buf[0] != '\0') {
        size_t look = len < GM_TEXT_LINE_MAX ? len : GM_TEXT_LINE_MAX;
        const char *nl = memchr(buf, '\n', look);
        if (!nl) {
            if (len >= GM_TEXT_LINE_MAX) {
                f->kind = GM_FRAME_ERROR;
                f->error = GM_PARSE_LINE_TOO_LONG;
            }
            return;
        }
        uint32_t n = (uint32_t)(nl - buf);
        f->kind = GM_FRAME_TEXT;
        f->length = n + 1;
        f->text_len = n && buf[n - 1] == '\r' ? n - 1 : n;
        return;
    }
    if (len < GM_HEADER_SIZE)
        return;
    int rc = gm_header_decode((const unsigned char *)buf, max_size, &f->h);
    if (rc != GM_PARSE_OK) {
        f->kind = GM_FRAME_ERROR;
        f->error = rc;
        return;
    }
    uint64_t total = (uint64_t)GM_HEADER_SIZE + f->h.size;
    if (len < total) {
        f->need = total;
        return;
    }
    f->kind = GM_FRAME_PACKET;
    f->length = (uint32_t)total;
}

int
gm_fields_split(uint32_t type, const char *payload, uint32_t size, struct gm_fields *f)
{
    const struct gm_packet_info *info = gm_packet_info(type);
    if (!info)
        return GM_PARSE_BAD_TYPE;
    f->count = info->nfields;
    if (info->nfields == 0)
        return GM_PARSE_OK;
    uint32_t pos = 0;
    for (unsigned i = 0; i + 1 < info->nfields; i++) {
        const char *nul = pos < size ? memchr(payload + pos, '\0', size - pos) : NULL;
        if (!nul)
            return GM_PARSE_MISSING_NUL;
        uint32_t end = (uint32_t)(nul - payload);
        f->start[i] = pos;
        f->len[i] = end - pos;
        pos = end + 1;
    }
    f->start[info->nfields - 1] = pos;
    f->len[info->nfields - 1] = size - pos;
    return GM_PARSE_OK;
}

size_t
gm_payload_size(const struct gm_field_ref *fields, size_t n)
{
    size_t total = n ? n - 1 : 0;
    for (size_t i = 0; i < n; i++)
        total += fields[i].len;
    return total;
}

size_t
gm_packet_encode(void *dst, uint32_t magic, uint32_t type, const struct gm_field_ref *fields,
                 size_t n)
{
    unsigned char *p = dst;
    size_t size = gm_payload_size(fields, n);
    gm_header_encode(p, magic, type, (uint32_t)size);
    p += GM_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        if (fields[i].len)
            memcpy(p, fields[i].ptr, fields[i].len);
        p += fields[i].len;
        if (i + 1 < n)
            *p++ = '\0';
    }
    return GM_HEADER_SIZE + size;
}

const struct gm_name_fault *
gm_name_check(enum gm_name_kind kind, const char *name, size_t len)
{
    static const struct gm_name_fault too_long = {"ARGUMENT_TOO_LARGE",
                                                  "Function name is longer than 512 bytes"};
    static const struct gm_name_fault control[] = {
        [GM_NAME_FUNCTION] = {"INVALID_ARGUMENT", "Function name holds a control character"},
        [GM_NAME_CLIENT_ID] = {"INVALID_ARGUMENT", "Client id holds a control character"}};
    _Static_assert(GM_FUNCTION_NAME_MAX == 512, "the too_long text names the limit");
    if (kind == GM_NAME_FUNCTION && len > GM_FUNCTION_NAME_MAX)
        return &too_long;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return &control[kind];
    }
    return NULL;
}

size_t
gm_fmt_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

bool
gm_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (d > max || v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool
gm_parse_i64(const char *s, size_t len, int64_t *out)
{
    bool neg = false;
    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++;
        len--;
    }
    uint64_t v;
    if (!gm_parse_u64(s, len, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v))
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

uint32_t
gm_atou32_lenient(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    bool neg = false;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    uint32_t v = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
        v = v * 10u + (uint32_t)(s[i] - '0');
    return neg ? 0u - v : v;
}
