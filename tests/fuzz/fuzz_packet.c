/*
 * fuzz_packet.c: libFuzzer target for the packet parser: the input is a
 * connection's byte stream; it is framed exactly as an I/O thread frames it
 * (gm_frame_next), each binary packet split into fields (gm_fields_split)
 * and each text line into words (gm_admin_split), and the results are
 * checked against the bounds they must respect.  Single-threaded.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "libgearman-server/proto/admin_split.h"
#include "libgearman-server/proto/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t left = size;
    /* A small limit so that the "too large" path is reachable. */
    const uint32_t max_packet = 4096;
    while (left) {
        struct gm_frame f;
        gm_frame_next(p, left, max_packet, &f);
        if (f.kind == GM_FRAME_NEED_MORE || f.kind == GM_FRAME_ERROR)
            break;
        if (f.length == 0 || f.length > left)
            abort();
        if (f.kind == GM_FRAME_TEXT) {
            if (f.text_len >= f.length || f.length > GM_TEXT_LINE_MAX)
                abort();
            struct gm_admin_words w;
            gm_admin_split(p, f.text_len, &w);
            for (unsigned i = 0; i < w.count; i++)
                if ((size_t)w.start[i] + w.len[i] > f.text_len)
                    abort();
        } else {
            if (f.h.size > max_packet || f.length != GM_HEADER_SIZE + f.h.size)
                abort();
            struct gm_fields fields;
            if (gm_fields_split(f.h.type, p + GM_HEADER_SIZE, f.h.size, &fields) == GM_PARSE_OK) {
                for (unsigned i = 0; i < fields.count; i++)
                    if ((uint64_t)fields.start[i] + fields.len[i] > f.h.size)
                        abort();
            }
        }
        p += f.length;
        left -= f.length;
    }
    return 0;
}
