/*
 * protocol.h: the Gearman binary protocol codec.
 *
 * Owns nothing: pure functions over caller buffers, safe from any thread.
 * Used by the server's I/O threads (parsing requests, answering ECHO), by
 * the dispatcher (building replies), and by the command-line tools and the
 * benchmark (building requests, parsing replies).
 *
 * A packet is a 12-byte header (magic "\0REQ" or "\0RES", big-endian type,
 * big-endian payload size) followed by the payload.  The payload is a list
 * of fields separated by single NUL bytes; every field but the last is
 * NUL-terminated and the last runs to the end of the payload, so it may hold
 * NULs (it is the opaque data of the packets that carry data).  Each packet
 * type has a fixed field count, given by gm_packet_info().  Parsing is
 * always bounded by the size field: a missing NUL is an error, never a
 * reason to look at the next packet's bytes.
 */
#ifndef GM_PROTOCOL_H
#define GM_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_HEADER_SIZE 12
#define GM_MAX_FIELDS 8
#define GM_MAGIC_REQ 0x00524551u /* "\0REQ" */
#define GM_MAGIC_RES 0x00524553u /* "\0RES" */
#define GM_UNIQUE_MAX 64         /* longest accepted unique key */
#define GM_HANDLE_MAX 64         /* longest job handle, bytes */
#define GM_FUNCTION_NAME_MAX 512 /* longest function name, bytes (libgearman's own limit) */
#define GM_CLIENT_ID_MAX 127     /* SET_CLIENT_ID keeps this many bytes, as gearmand */

/* Packet types, numbered as on the wire. */
enum gm_packet_type {
    GM_PKT_TEXT = 0, /* not a wire type: stands for an admin text line */
    GM_PKT_CAN_DO = 1,
    GM_PKT_CANT_DO = 2,
    GM_PKT_RESET_ABILITIES = 3,
    GM_PKT_PRE_SLEEP = 4,
    GM_PKT_UNUSED = 5,
    GM_PKT_NOOP = 6,
    GM_PKT_SUBMIT_JOB = 7,
    GM_PKT_JOB_CREATED = 8,
    GM_PKT_GRAB_JOB = 9,
    GM_PKT_NO_JOB = 10,
    GM_PKT_JOB_ASSIGN = 11,
    GM_PKT_WORK_STATUS = 12,
    GM_PKT_WORK_COMPLETE = 13,
    GM_PKT_WORK_FAIL = 14,
    GM_PKT_GET_STATUS = 15,
    GM_PKT_ECHO_REQ = 16,
    GM_PKT_ECHO_RES = 17,
    GM_PKT_SUBMIT_JOB_BG = 18,
    GM_PKT_ERROR = 19,
    GM_PKT_STATUS_RES = 20,
    GM_PKT_SUBMIT_JOB_HIGH = 21,
    GM_PKT_SET_CLIENT_ID = 22,
    GM_PKT_CAN_DO_TIMEOUT = 23,
    GM_PKT_ALL_YOURS = 24,
    GM_PKT_WORK_EXCEPTION = 25,
    GM_PKT_OPTION_REQ = 26,
    GM_PKT_OPTION_RES = 27,
    GM_PKT_WORK_DATA = 28,
    GM_PKT_WORK_WARNING = 29,
    GM_PKT_GRAB_JOB_UNIQ = 30,
    GM_PKT_JOB_ASSIGN_UNIQ = 31,
    GM_PKT_SUBMIT_JOB_HIGH_BG = 32,
    GM_PKT_SUBMIT_JOB_LOW = 33,
    GM_PKT_SUBMIT_JOB_LOW_BG = 34,
    GM_PKT_SUBMIT_JOB_SCHED = 35,
    GM_PKT_SUBMIT_JOB_EPOCH = 36,
    GM_PKT_SUBMIT_REDUCE_JOB = 37,
    GM_PKT_SUBMIT_REDUCE_JOB_BACKGROUND = 38,
    GM_PKT_GRAB_JOB_ALL = 39,
    GM_PKT_JOB_ASSIGN_ALL = 40,
    GM_PKT_GET_STATUS_UNIQUE = 41,
    GM_PKT_STATUS_RES_UNIQUE = 42,
    GM_PKT_TYPE_COUNT = 43
};

/* Who may send a packet type. */
enum gm_packet_dir {
    GM_DIR_NONE = 0,    /* never valid on the wire (0 and 5) */
    GM_DIR_REQUEST = 1, /* sent by clients/workers to the server */
    GM_DIR_RESPONSE = 2 /* sent by the server */
};

struct gm_packet_info {
    const char *name;  /* "SUBMIT_JOB", ... */
    uint8_t nfields;   /* NUL-separated fields in the payload */
    uint8_t dir;       /* enum gm_packet_dir */
};

/* Header as decoded from the wire. */
struct gm_header {
    uint32_t magic;
    uint32_t type;
    uint32_t size;
};

/* Field boundaries of one payload: field i starts at start[i]; its length is
   len[i].  Offsets are relative to the payload. */
struct gm_fields {
    uint8_t count;
    uint32_t start[GM_MAX_FIELDS];
    uint32_t len[GM_MAX_FIELDS];
};

/* One piece of a packet being encoded. */
struct gm_field_ref {
    const void *ptr;
    size_t len;
};

/* Parse results. */
enum gm_parse_result {
    GM_PARSE_OK = 0,
    GM_PARSE_BAD_MAGIC = -1,     /* neither \0REQ nor \0RES */
    GM_PARSE_BAD_TYPE = -2,      /* 0 or >= GM_PKT_TYPE_COUNT */
    GM_PARSE_MISSING_NUL = -3,   /* fewer NUL separators than the type needs */
    GM_PARSE_TOO_LARGE = -4      /* size field above the configured limit */
};

/* Framing a byte stream: what the bytes at the front of a connection's
   input are.  The first byte decides: NUL starts a binary packet, anything
   else an admin text line ending in "\n". */
enum gm_frame_kind {
    GM_FRAME_NEED_MORE = 0, /* incomplete: read more */
    GM_FRAME_PACKET,        /* a whole binary packet of `length` bytes */
    GM_FRAME_TEXT,          /* a whole text line of `length` bytes incl. "\n" */
    GM_FRAME_ERROR          /* the stream cannot be parsed further: `error` */
};

#define GM_TEXT_LINE_MAX 8192 /* a text line (with its "\n") must fit in this */
#define GM_PARSE_LINE_TOO_LONG (-5)

struct gm_frame {
    int kind;              /* enum gm_frame_kind */
    uint32_t length;       /* PACKET/TEXT: bytes the frame occupies */
    uint64_t need;         /* NEED_MORE: total bytes of the frame once known (0 = unknown) */
    struct gm_header h;    /* PACKET, and ERROR from a header */
    uint32_t text_len;     /* TEXT: line length without "\n" or "\r\n" */
    int error;             /* ERROR: GM_PARSE_BAD_MAGIC, _BAD_TYPE, _TOO_LARGE, _LINE_TOO_LONG */
};

/* Looks at buf[0..len) (len > 0) and says what its first frame is.  Packets
   whose payload exceeds max_size are an error; so is a text line without
   "\n" in its first GM_TEXT_LINE_MAX bytes.  Never reads past len. */
void gm_frame_next(const char *buf, size_t len, uint32_t max_size, struct gm_frame *f);

/* Returns the table entry for a type, or NULL if the type is not a protocol
   packet type (0, or >= GM_PKT_TYPE_COUNT). */
const struct gm_packet_info *gm_packet_info(uint32_t type);

/* Returns the type's name ("ECHO_REQ"), or "UNKNOWN" for a bad type. */
const char *gm_packet_name(uint32_t type);

/* Decodes the 12 header bytes at p into *h; returns GM_PARSE_OK, or
   GM_PARSE_BAD_MAGIC, GM_PARSE_BAD_TYPE, GM_PARSE_TOO_LARGE (when size >
   max_size) with *h filled in as far as it could be read. */
int gm_header_decode(const unsigned char *p, uint32_t max_size, struct gm_header *h);

/* Writes a 12-byte header for (magic, type, size) at p. */
void gm_header_encode(unsigned char *p, uint32_t magic, uint32_t type, uint32_t size);

/* Splits a payload of a given type into its fields.  Returns GM_PARSE_OK
   with *f filled, or GM_PARSE_MISSING_NUL if the payload has fewer
   separators than the type needs, or GM_PARSE_BAD_TYPE.  Packets with no
   fields ignore their payload (count 0). */
int gm_fields_split(uint32_t type, const char *payload, uint32_t size, struct gm_fields *f);

/* Returns the payload size of a packet made of these fields joined by NULs. */
size_t gm_payload_size(const struct gm_field_ref *fields, size_t n);

/* Encodes a whole packet (header + fields joined by NULs) into dst, which
   must hold GM_HEADER_SIZE + gm_payload_size(fields, n) bytes; returns the
   number of bytes written. */
size_t gm_packet_encode(void *dst, uint32_t magic, uint32_t type,
                        const struct gm_field_ref *fields, size_t n);

/* What a name chosen by a peer will be used as. */
enum gm_name_kind {
    GM_NAME_FUNCTION = 0, /* CAN_DO, SUBMIT_*, `create function`, a stored job's function */
    GM_NAME_CLIENT_ID = 1 /* SET_CLIENT_ID */
};

/* Why a name is refused, as an ERROR packet says it. */
struct gm_name_fault {
    const char *code; /* "INVALID_ARGUMENT" or "ARGUMENT_TOO_LARGE" */
    const char *text; /* a short sentence, without the name */
};

/* Checks a name that the `status` and `workers` listings print as it is:
   returns NULL if name[0..len) holds no ASCII control byte (0x00-0x1f,
   0x7f: a NUL, TAB or line end would cut or forge a listing line) and,
   for a function name, is at most GM_FUNCTION_NAME_MAX bytes; otherwise
   what is wrong with it.  Empty names and spaces are allowed, as in
   gearmand. */
const struct gm_name_fault *gm_name_check(enum gm_name_kind kind, const char *name, size_t len);

/* Formats an unsigned number in decimal at dst (no NUL); returns its length
   (at most 20). */
size_t gm_fmt_u64(char *dst, uint64_t v);

/* Parses an unsigned decimal of exactly len bytes; returns false on an empty
   string, a non-digit or overflow past max. */
bool gm_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

/* Parses an optionally signed decimal of exactly len bytes into int64;
   returns false on empty, junk or overflow. */
bool gm_parse_i64(const char *s, size_t len, int64_t *out);

/* Lenient atoi as gearmand uses for WORK_STATUS numbers: leading digits of
   s[0..len) after optional spaces and sign; junk stops the scan; the result
   wraps modulo 2^32 as a C cast would. */
uint32_t gm_atou32_lenient(const char *s, size_t len);

#endif /* GM_PROTOCOL_H */
