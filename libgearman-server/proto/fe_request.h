/*
 * fe_request.h: a front-end (HTTP) request as it travels on the inbound
 * ring (struct gm_in, GM_IN_FRONTEND): what kind it is and where its parts
 * lie in its bytes.  Kept apart from frontend.h, the front-end's contract,
 * so that the ring messages (msg.h) depend on this much only.  Plain data;
 * any thread.
 */
#ifndef GM_FE_REQUEST_H
#define GM_FE_REQUEST_H

#include <stdint.h>

enum gm_fe_kind {
    GM_FE_SUBMIT = 1, /* run a job: function, unique, priority, background, data */
    GM_FE_SERVE       /* answer from the state view (pages, API, metrics, health) */
};

enum gm_fe_flags {
    GM_FE_BACKGROUND = 1 << 0,
    GM_FE_HIGH = 1 << 1,
    GM_FE_LOW = 1 << 2,
    GM_FE_HAS_UNIQUE = 1 << 3, /* else the front-end's default unique applies */
    GM_FE_KEEP_ALIVE = 1 << 4,
    GM_FE_POST = 1 << 5,       /* a state-changing method (POST/PUT/DELETE) */
    GM_FE_HEAD = 1 << 6        /* HEAD: headers only */
};

/* A parsed request: offsets into the request's bytes (at most 64 KiB of
   head; the body may be longer). */
struct gm_fe_req {
    uint8_t kind;       /* enum gm_fe_kind */
    uint8_t flags;      /* enum gm_fe_flags */
    uint8_t minor;      /* HTTP/1.<minor> */
    uint16_t path_off, path_len;     /* GM_FE_SUBMIT: the function name */
    uint16_t query_off, query_len;
    uint16_t unique_off, unique_len;
    uint16_t auth_off, auth_len;     /* the token of `Authorization: Bearer TOKEN`; auth_off 0: none */
    uint32_t body_off, body_len;
};

#endif /* GM_FE_REQUEST_H */
