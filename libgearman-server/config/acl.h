/*
 * acl.h: access control (docs/security.md, "Identities and permissions"):
 * the table compiled from --acl-file and --http-token-file, and the
 * questions asked of it.
 *
 * A connection's identity is "cn:NAME" (the subject CN of a verified
 * client certificate), else "ip:ADDRESS" (an IPv4-mapped IPv6 address
 * written as IPv4); an HTTP request with `Authorization: Bearer TOKEN`
 * whose token is on a line `NAME TOKEN` of the token file is "token:NAME".
 *
 * The ACL file's lines are `IDENTITY PERMISSION FUNCTION-PATTERN`:
 *   IDENTITY  `*`, `ip:ADDRESS`, `ip:ADDRESS/BITS` (IPv4 or IPv6; an IPv4
 *             rule also matches the IPv4-mapped IPv6 peer ::ffff:a.b.c.d),
 *             or `ip:`, `cn:`, `token:` followed by a pattern where `*`
 *             stands for any run of characters (`cn:billing-*`, `ip:10.1.*`);
 *   PERMISSION one of
 *     submit      SUBMIT_JOB* (every variant: HIGH/LOW, BG, EPOCH, SCHED,
 *                 REDUCE) and GET_STATUS / GET_STATUS_UNIQUE for a job of a
 *                 matching function; an HTTP job submission;
 *     work        CAN_DO, CAN_DO_TIMEOUT of a matching function (GRAB_JOB*
 *                 and WORK_* then concern only the functions so registered);
 *     admin-read  the admin commands that only read (status,
 *                 prioritystatus, workers, show ..., version, getpid,
 *                 verbose) and the HTTP views (the monitor page, /api/...
 *                 GETs, /metrics);
 *     admin       everything admin-read allows, and every admin command and
 *                 web action that changes the server: cancel, create and
 *                 drop function, maxqueue, policy, pause, resume, purge,
 *                 retry and discard dead, shutdown, POST /api/....
 *                 admin does NOT include submit or work: an identity that
 *                 administers and submits needs a submit line too;
 *   FUNCTION-PATTERN a function name, `*` standing for any run of
 *             characters; admin-read and admin are server-wide, so their
 *             pattern must be `*`.
 * `#` at the start of a line or of a field begins a comment; blank lines
 * are ignored.  An action is allowed when any line grants it.  With an ACL
 * file everything not granted is denied; /health and the Gearman ECHO,
 * OPTION_REQ, SET_CLIENT_ID, CANT_DO, RESET_ABILITIES, PRE_SLEEP packets
 * need nothing.
 *
 * The token file's lines are `NAME TOKEN` (`#` comments, blank lines); a
 * token is at least GM_ACL_TOKEN_MIN printable characters; names and tokens
 * are unique; a token is compared in constant time.
 *
 * Threads: the main thread builds a table (start-up, SIGHUP) and hands it
 * to the dispatcher (gm_disp_set_acl), which alone reads it from then on
 * and frees it once replaced.  A table never changes once built, and its
 * questions are pure, so any thread may ask them of a table it holds.
 */
#ifndef GM_ACL_H
#define GM_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gm_perm {
    GM_PERM_SUBMIT = 0,
    GM_PERM_WORK,
    GM_PERM_ADMIN_READ,
    GM_PERM_ADMIN,
    GM_PERM_COUNT
};
#define GM_PERM_BIT(p) ((uint8_t)(1u << (p)))

/* "submit", "work", "admin-read", "admin". */
const char *gm_perm_name(enum gm_perm p);

/* The shortest token the token file accepts, and the longest line of
   either file. */
#define GM_ACL_TOKEN_MIN 16
#define GM_ACL_LINE_MAX 4096

struct gm_acl;

/* Reads the files (either may be NULL: none) into a new table.  Returns it,
   or NULL with "FILE:LINE: why" (or "FILE: why") in err.  A token file
   that other users may read is accepted with a warning in the log. */
struct gm_acl *gm_acl_load(const char *acl_file, const char *token_file, char *err, size_t errlen);

/* The same from text in memory (NULL: no such file); the names are those
   the errors give. */
struct gm_acl *gm_acl_parse(const char *acl_text, size_t acl_len, const char *acl_name, const char *token_text,
                            size_t token_len, const char *token_name, char *err, size_t errlen);

void gm_acl_free(struct gm_acl *a);

/* Whether an ACL file was read: then anything not granted is denied (a
   table of tokens alone only names HTTP requests). */
bool gm_acl_enforced(const struct gm_acl *a);
size_t gm_acl_rule_count(const struct gm_acl *a);
size_t gm_acl_token_count(const struct gm_acl *a);

/* What the lines that match an identity grant, as GM_PERM_BIT()s:
   everywhere, for every function (pattern `*`); somewhere, for at least
   one function. */
struct gm_acl_grants {
    uint8_t everywhere, somewhere;
};
void gm_acl_grants(const struct gm_acl *a, const char *id, size_t id_len, struct gm_acl_grants *out);

/* Whether a line grants identity id the permission p on function fn
   (fn ignored for admin-read and admin). */
bool gm_acl_allows(const struct gm_acl *a, const char *id, size_t id_len, enum gm_perm p, const char *fn,
                   size_t fn_len);

/* The identity ("token:NAME", NUL-terminated) of a bearer token, or NULL
   if no line has it.  Every line's token is compared, each in time that
   does not depend on where the bytes differ. */
const char *gm_acl_token_identity(const struct gm_acl *a, const char *token, size_t len);

/* Whether s[0..n) matches pattern p[0..pn), where `*` stands for any run
   of characters (also none) and every other character for itself. */
bool gm_acl_glob(const char *p, size_t pn, const char *s, size_t n);

#endif /* GM_ACL_H */
