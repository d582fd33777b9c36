/*
 * policy.c: parsing a lifecycle policy's "key=value" pairs (policy.h).
 * No state; any thread.
 */
#include "config.h"

#include "libgearman-server/config/policy.h"

#include <stdio.h>
#include <string.h>

void
gm_policy_defaults(struct gm_policy_values *v)
{
    v->retries = 0;
    v->backoff_ms = 1000;
    v->max_backoff_ms = 300000;
    v->timeout_s = 0;
    v->concurrency = 0;
}

/* The keys, their field and their largest value. */
static const struct {
    const char *key;
    size_t offset;
    uint32_t max;
} keys[] = {
    {"retries", offsetof(struct gm_policy_values, retries), GM_POLICY_RETRIES_MAX},
    {"backoff", offsetof(struct gm_policy_values, backoff_ms), 86400000},
    {"max_backoff", offsetof(struct gm_policy_values, max_backoff_ms), 86400000},
    {"timeout", offsetof(struct gm_policy_values, timeout_s), 86400},
    {"concurrency", offsetof(struct gm_policy_values, concurrency), 1000000},
};

const char *
gm_policy_apply_pair(struct gm_policy_values *v, const char *pair, size_t len)
{
    const char *eq = memchr(pair, '=', len);
    if (!eq)
        return "expected key=value";
    size_t klen = (size_t)(eq - pair);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strlen(keys[i].key) != klen || memcmp(keys[i].key, pair, klen) != 0)
            continue;
        const char *d = eq + 1, *end = pair + len;
        if (d == end)
            return "a value must be a number";
        uint64_t x = 0;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9')
                return "a value must be a number";
            x = x * 10 + (uint64_t)(*d - '0');
            if (x > keys[i].max)
                return "value out of range (retries 0-254, backoff and max_backoff 0-86400000 ms, "
                       "timeout 0-86400 s, concurrency 0-1000000)";
        }
        *(uint32_t *)(void *)((char *)v + keys[i].offset) = (uint32_t)x;
        return NULL;
    }
    return "unknown key (retries, backoff, max_backoff, timeout, concurrency)";
}

const char *
gm_policy_parse_spec(const char *spec, const char **name, size_t *name_len, struct gm_policy_values *v)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec)
        return "expected FUNCTION:key=value[,key=value...]";
    *name = spec;
    *name_len = (size_t)(colon - spec);
    return gm_policy_apply_list(v, colon + 1, strlen(colon + 1));
}

const char *
gm_policy_apply_list(struct gm_policy_values *v, const char *list, size_t len)
{
    struct gm_policy_values t = *v;
    const char *p = list, *end = list + len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *why = gm_policy_apply_pair(&t, p, comma ? (size_t)(comma - p) : (size_t)(end - p));
        if (why)
            return why;
        if (!comma)
            break;
        p = comma + 1;
    }
    *v = t;
    return NULL;
}

size_t
gm_policy_format(const struct gm_policy_values *v, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "retries=%u,backoff=%u,max_backoff=%u,timeout=%u,concurrency=%u", v->retries,
                     v->backoff_ms, v->max_backoff_ms, v->timeout_s, v->concurrency);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}
