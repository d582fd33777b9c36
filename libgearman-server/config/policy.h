/*
 * policy.h: a function's lifecycle policy as its text gives it: the
 * "key=value" pairs of `--policy FUNC:retries=5,backoff=2000` and of the
 * admin command `policy FUNC retries=5 backoff=2000`.
 *
 * Pure parsing, no state: the main thread (options) and the dispatcher
 * (admin command, start-up) both call it.
 */
#ifndef GM_POLICY_H
#define GM_POLICY_H

#include <stddef.h>
#include <stdint.h>

struct gm_policy_values {
    uint32_t retries;        /* failed attempts retried: a job is handed out at most retries + 1 times */
    uint32_t backoff_ms;     /* wait before the first retry; doubles for each one after */
    uint32_t max_backoff_ms; /* longest wait */
    uint32_t timeout_s;      /* longest an attempt may run; 0 = no limit */
    uint32_t concurrency;    /* most jobs of the function running at once; 0 = no limit */
};

#define GM_POLICY_RETRIES_MAX 254 /* attempts are counted in a byte */
#define GM_POLICY_PAIRS_MAX 5     /* key=value pairs in one admin `policy` line */
#define GM_POLICY_SPECS_MAX 256   /* --policy options */

/* The values a function gets when a policy is first set on it. */
void gm_policy_defaults(struct gm_policy_values *v);

/* Applies one "key=value" (len bytes, not NUL-terminated) to v.  Returns
   NULL, or why it is refused (v unchanged). */
const char *gm_policy_apply_pair(struct gm_policy_values *v, const char *pair, size_t len);

/* Applies "key=value,key=value" (len bytes) to *v, all or nothing.
   Returns NULL, or why it is refused. */
const char *gm_policy_apply_list(struct gm_policy_values *v, const char *list, size_t len);

/* Writes v as "retries=N,backoff=MS,max_backoff=MS,timeout=S,concurrency=N"
   (what gm_policy_apply_list reads) into buf; returns its length. */
size_t gm_policy_format(const struct gm_policy_values *v, char *buf, size_t cap);
#define GM_POLICY_TEXT_MAX 128

/* Splits a --policy value "FUNC:key=value,key=value" into the function's
   name (*name, *name_len: inside spec) and the values, applied over *v.
   Returns NULL, or why it is refused. */
const char *gm_policy_parse_spec(const char *spec, const char **name, size_t *name_len,
                                 struct gm_policy_values *v);

#endif /* GM_POLICY_H */
