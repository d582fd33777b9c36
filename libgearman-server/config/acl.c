/*
 * acl.c: the access table (acl.h): reading --acl-file and --http-token-file
 * into an immutable table, and matching identities, permissions and
 * functions against it.
 *
 * Loading runs on the main thread (start-up, SIGHUP); the questions are
 * pure and run on whichever thread holds the table (the dispatcher).
 */
#include "config.h"

#include "libgearman-server/config/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "libgearman-server/base/log.h"

/* The largest file read (either kind). */
#define FILE_MAX (16u << 20)

enum id_kind {
    ID_ANY = 0, /* `*` */
    ID_NET,     /* ip:ADDRESS or ip:ADDRESS/BITS */
    ID_GLOB     /* the whole identity against a pattern */
};

struct acl_rule {
    uint8_t perms;            /* GM_PERM_BIT()s granted (admin brings admin-read) */
    uint8_t id_kind;          /* enum id_kind */
    uint8_t bits;             /* ID_NET: prefix length, over the 128 bits of net */
    bool fn_any;              /* the function pattern is `*` */
    unsigned char net[16];    /* ID_NET: the network, IPv4 as ::ffff:a.b.c.d */
    char *id;                 /* ID_GLOB: the identity pattern */
    size_t id_len;
    char *fn;                 /* the function pattern */
    size_t fn_len;
};

struct acl_token {
    char *identity;           /* "token:NAME" */
    char *token;
    size_t token_len;
    unsigned line;
};

struct gm_acl {
    bool enforced;
    size_t nrules, ntokens;
    struct acl_rule *rules;
    struct acl_token *tokens;
};

static const char *const perm_names[GM_PERM_COUNT] = {
    [GM_PERM_SUBMIT] = "submit", [GM_PERM_WORK] = "work", [GM_PERM_ADMIN_READ] = "admin-read",
    [GM_PERM_ADMIN] = "admin"};

const char *
gm_perm_name(enum gm_perm p)
{
    return (unsigned)p < GM_PERM_COUNT ? perm_names[p] : "?";
}

/* ------------------------------------------------------------------ */
/* Matching                                                            */
/* ------------------------------------------------------------------ */

bool
gm_acl_glob(const char *p, size_t pn, const char *s, size_t n)
{
    /* The last `*` seen and where in s it was tried: on a mismatch it
       takes one more character.  Linear in pn * n at worst, no recursion. */
    size_t pi = 0, si = 0, star = (size_t)-1, star_s = 0;
    while (si < n) {
        if (pi < pn && p[pi] == '*') {
            star = pi++;
            star_s = si;
        } else if (pi < pn && p[pi] == s[si]) {
            pi++;
            si++;
        } else if (star != (size_t)-1) {
            pi = star + 1;
            si = ++star_s;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

/* An address (text, not NUL-terminated) as 16 bytes, IPv4 mapped into
   IPv6 (::ffff:a.b.c.d); false if it is not one. */
static bool
parse_addr(const char *s, size_t n, unsigned char out[16])
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    struct in_addr v4;
    if (inet_pton(AF_INET, buf, &v4) == 1) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &v4, 4);
        return true;
    }
    return inet_pton(AF_INET6, buf, out) == 1;
}

static bool
in_net(const unsigned char addr[16], const unsigned char net[16], unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(addr, net, whole) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (addr[whole] & mask) == (net[whole] & mask);
}

/* An identity as the rules see it: its text, and its address if it is an
   ip: identity. */
struct who {
    const char *id;
    size_t len;
    bool has_addr;
    unsigned char addr[16];
};

static void
who_init(struct who *w, const char *id, size_t len)
{
    w->id = id;
    w->len = len;
    w->has_addr = len > 3 && memcmp(id, "ip:", 3) == 0 && parse_addr(id + 3, len - 3, w->addr);
}

static bool
rule_matches_who(const struct acl_rule *r, const struct who *w)
{
    switch (r->id_kind) {
    case ID_ANY:
        return true;
    case ID_NET:
        return w->has_addr && in_net(w->addr, r->net, r->bits);
    default:
        return gm_acl_glob(r->id, r->id_len, w->id, w->len);
    }
}

void
gm_acl_grants(const struct gm_acl *a, const char *id, size_t id_len, struct gm_acl_grants *out)
{
    out->everywhere = out->somewhere = 0;
    struct who w;
    who_init(&w, id, id_len);
    for (size_t i = 0; i < a->nrules; i++) {
        const struct acl_rule *r = &a->rules[i];
        if (!rule_matches_who(r, &w))
            continue;
        out->somewhere |= r->perms;
        if (r->fn_any)
            out->everywhere |= r->perms;
    }
}

bool
gm_acl_allows(const struct gm_acl *a, const char *id, size_t id_len, enum gm_perm p, const char *fn, size_t fn_len)
{
    struct who w;
    who_init(&w, id, id_len);
    for (size_t i = 0; i < a->nrules; i++) {
        const struct acl_rule *r = &a->rules[i];
        if (!(r->perms & GM_PERM_BIT(p)) || !rule_matches_who(r, &w))
            continue;
        if (r->fn_any || (p != GM_PERM_ADMIN && p != GM_PERM_ADMIN_READ && gm_acl_glob(r->fn, r->fn_len, fn, fn_len)))
            return true;
    }
    return false;
}

/* Whether a[0..alen) equals the secret b[0..blen), in time that depends
   on blen only (not on where they differ). */
static bool
same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    volatile unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        diff |= (unsigned char)(x ^ (unsigned char)b[i]);
    }
    return diff == 0;
}

const char *
gm_acl_token_identity(const struct gm_acl *a, const char *token, size_t len)
{
    const char *found = NULL;
    for (size_t i = 0; a && i < a->ntokens; i++) /* no early exit: every token costs the same */
        if (same_secret(token, len, a->tokens[i].token, a->tokens[i].token_len))
            found = a->tokens[i].identity;
    return found;
}

bool
gm_acl_enforced(const struct gm_acl *a)
{
    return a && a->enforced;
}

size_t
gm_acl_rule_count(const struct gm_acl *a)
{
    return a ? a->nrules : 0;
}

size_t
gm_acl_token_count(const struct gm_acl *a)
{
    return a ? a->ntokens : 0;
}

void
gm_acl_free(struct gm_acl *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nrules; i++) {
        free(a->rules[i].id);
        free(a->rules[i].fn);
    }
    for (size_t i = 0; i < a->ntokens; i++) {
        free(a->tokens[i].identity);
        if (a->tokens[i].token) {
            memset(a->tokens[i].token, 0, a->tokens[i].token_len);
            free(a->tokens[i].token);
        }
    }
    free(a->rules);
    free(a->tokens);
    free(a);
}

/* ------------------------------------------------------------------ */
/* Reading                                                             */
/* ------------------------------------------------------------------ */

/* Where a parse is: the file's name and line, and the error buffer. */
struct reader {
    const char *name;
    unsigned line;
    char *err;
    size_t errlen;
};

static int
fail(struct reader *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes "NAME:LINE: why" into the error buffer; returns -1. */
static int
fail(struct reader *rd, const char *fmt, ...)
{
    int n = snprintf(rd->err, rd->errlen, "%s:%u: ", rd->name, rd->line);
    if (n >= 0 && (size_t)n < rd->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rd->err + n, rd->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A line's fields (at most max; *count may say there were more). */
struct fields {
    unsigned n;
    const char *f[4];
    size_t len[4];
};

/* Splits line[0..len) at spaces and tabs, up to a field that starts with
   `#` (a comment to the end of the line). */
static void
split(const char *line, size_t len, struct fields *out)
{
    out->n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i == len || line[i] == '#')
            return;
        size_t start = i;
        while (i < len && line[i] != ' ' && line[i] != '\t')
            i++;
        if (out->n < 4) {
            out->f[out->n] = line + start;
            out->len[out->n] = i - start;
        }
        out->n++;
    }
}

/* Whether every byte is printable ASCII or UTF-8 (no control byte). */
static bool
printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static char *
dup_n(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

/* The identity field of a rule into r; 0 or -1 (the reason written). */
static int
parse_identity(struct reader *rd, const char *s, size_t n, struct acl_rule *r)
{
    static const char kinds[] = "an identity is *, ip:ADDRESS[/BITS], cn:NAME or token:NAME";
    if (n == 1 && s[0] == '*') {
        r->id_kind = ID_ANY;
        return 0;
    }
    if (!printable(s, n))
        return fail(rd, "the identity holds a control character");
    if (n > 3 && memcmp(s, "ip:", 3) == 0) {
        const char *a = s + 3, *slash = memchr(a, '/', n - 3);
        size_t alen = slash ? (size_t)(slash - a) : n - 3;
        if (!slash && memchr(a, '*', alen)) {
            r->id_kind = ID_GLOB; /* ip:10.1.* */
        } else {
            unsigned char net[16];
            if (!parse_addr(a, alen, net))
                return fail(rd, "\"%.*s\" is not an IPv4 or IPv6 address (%s; a pattern uses *)", (int)alen, a,
                            kinds);
            bool v4 = memchr(a, '.', alen) && !memchr(a, ':', alen);
            unsigned max = v4 ? 32 : 128, bits = max;
            if (slash) {
                const char *b = slash + 1, *end = s + n;
                if (b == end || end - b > 3)
                    return fail(rd, "bad prefix length in \"%.*s\" (0 to %u)", (int)n, s, max);
                bits = 0;
                for (; b < end; b++) {
                    if (*b < '0' || *b > '9')
                        return fail(rd, "bad prefix length in \"%.*s\" (0 to %u)", (int)n, s, max);
                    bits = bits * 10 + (unsigned)(*b - '0');
                }
                if (bits > max)
                    return fail(rd, "bad prefix length in \"%.*s\" (0 to %u)", (int)n, s, max);
            }
            unsigned all = v4 ? bits + 96 : bits;
            unsigned char masked[16];
            memcpy(masked, net, 16);
            for (unsigned i = 0; i < 16; i++) {
                unsigned keep = all >= (i + 1) * 8 ? 8 : all > i * 8 ? all - i * 8 : 0;
                masked[i] &= (unsigned char)(keep ? 0xff << (8 - keep) : 0);
            }
            if (memcmp(masked, net, 16) != 0)
                return fail(rd, "\"%.*s\" has bits set past its prefix length (the network's address is "
                                "meant)", (int)n, s);
            r->id_kind = ID_NET;
            r->bits = (uint8_t)all;
            memcpy(r->net, net, 16);
            return 0;
        }
    } else if (!((n > 3 && memcmp(s, "cn:", 3) == 0) || (n > 6 && memcmp(s, "token:", 6) == 0))) {
        return fail(rd, "unknown identity \"%.*s\" (%s)", (int)(n > 200 ? 200 : n), s, kinds);
    }
    r->id_kind = ID_GLOB;
    r->id_len = n;
    if (!(r->id = dup_n(s, n)))
        return fail(rd, "out of memory");
    return 0;
}

/* One line of the ACL file (split into f) into a new rule of a. */
static int
acl_line(struct reader *rd, const struct fields *f, struct gm_acl *a, size_t *cap)
{
    if (f->n != 3)
        return fail(rd, "expected IDENTITY PERMISSION FUNCTION-PATTERN, found %u field%s", f->n,
                    f->n == 1 ? "" : "s");
    struct acl_rule r = {0};
    int p = -1;
    for (int i = 0; i < GM_PERM_COUNT; i++)
        if (f->len[1] == strlen(perm_names[i]) && memcmp(f->f[1], perm_names[i], f->len[1]) == 0)
            p = i;
    if (p < 0)
        return fail(rd, "unknown permission \"%.*s\" (submit, work, admin-read, admin)",
                    (int)(f->len[1] > 64 ? 64 : f->len[1]), f->f[1]);
    r.perms = GM_PERM_BIT(p);
    if (p == GM_PERM_ADMIN)
        r.perms |= GM_PERM_BIT(GM_PERM_ADMIN_READ);
    r.fn_any = f->len[2] == 1 && f->f[2][0] == '*';
    if ((p == GM_PERM_ADMIN || p == GM_PERM_ADMIN_READ) && !r.fn_any)
        return fail(rd, "%s is server-wide: its function pattern must be *", perm_names[p]);
    if (!printable(f->f[2], f->len[2]))
        return fail(rd, "the function pattern holds a control character");
    if (parse_identity(rd, f->f[0], f->len[0], &r) < 0)
        return -1;
    r.fn_len = f->len[2];
    if (!(r.fn = dup_n(f->f[2], f->len[2]))) {
        free(r.id);
        return fail(rd, "out of memory");
    }
    if (a->nrules == *cap) {
        size_t n = *cap ? *cap * 2 : 16;
        struct acl_rule *nr = realloc(a->rules, n * sizeof *nr);
        if (!nr) {
            free(r.id);
            free(r.fn);
            return fail(rd, "out of memory");
        }
        a->rules = nr;
        *cap = n;
    }
    a->rules[a->nrules++] = r;
    return 0;
}

/* One line of the token file (split into f) into a new token of a. */
static int
token_line(struct reader *rd, const struct fields *f, struct gm_acl *a, size_t *cap)
{
    if (f->n != 2)
        return fail(rd, "expected NAME TOKEN, found %u field%s", f->n, f->n == 1 ? "" : "s");
    const char *name = f->f[0], *tok = f->f[1];
    size_t nlen = f->len[0], tlen = f->len[1];
    for (size_t i = 0; i < nlen; i++)
        if ((unsigned char)name[i] <= 0x20 || (unsigned char)name[i] >= 0x7f)
            return fail(rd, "a token's name is printable ASCII");
    for (size_t i = 0; i < tlen; i++)
        if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f)
            return fail(rd, "a token is printable ASCII");
    if (tlen < GM_ACL_TOKEN_MIN)
        return fail(rd, "the token of %.*s is shorter than %u characters", (int)nlen, name, GM_ACL_TOKEN_MIN);
    for (size_t i = 0; i < a->ntokens; i++) {
        const struct acl_token *t = &a->tokens[i];
        if (strlen(t->identity + 6) == nlen && memcmp(t->identity + 6, name, nlen) == 0)
            return fail(rd, "the name %.*s is on line %u already", (int)nlen, name, t->line);
        if (t->token_len == tlen && memcmp(t->token, tok, tlen) == 0) /* loading: no timing to hide */
            return fail(rd, "the token of %.*s is the token of line %u", (int)nlen, name, t->line);
    }
    if (a->ntokens == *cap) {
        size_t n = *cap ? *cap * 2 : 8;
        struct acl_token *nt = realloc(a->tokens, n * sizeof *nt);
        if (!nt)
            return fail(rd, "out of memory");
        a->tokens = nt;
        *cap = n;
    }
    struct acl_token t = {NULL, dup_n(tok, tlen), tlen, rd->line};
    t.identity = malloc(6 + nlen + 1);
    if (!t.identity || !t.token) {
        free(t.identity);
        free(t.token);
        return fail(rd, "out of memory");
    }
    memcpy(t.identity, "token:", 6);
    memcpy(t.identity + 6, name, nlen);
    t.identity[6 + nlen] = '\0';
    a->tokens[a->ntokens++] = t;
    return 0;
}

/* Every line of text[0..len) through one_line.  0 or -1. */
static int
parse_lines(struct reader *rd, const char *text, size_t len, struct gm_acl *a,
            int (*one_line)(struct reader *, const struct fields *, struct gm_acl *, size_t *))
{
    size_t cap = 0;
    const char *p = text, *end = text + len;
    rd->line = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        rd->line++;
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n > GM_ACL_LINE_MAX)
            return fail(rd, "the line is longer than %u bytes", GM_ACL_LINE_MAX);
        if (memchr(p, '\0', n))
            return fail(rd, "the line holds a NUL byte");
        struct fields f;
        split(p, n, &f);
        if (f.n && one_line(rd, &f, a, &cap) < 0)
            return -1;
        p = nl ? nl + 1 : end;
    }
    return 0;
}

struct gm_acl *
gm_acl_parse(const char *acl_text, size_t acl_len, const char *acl_name, const char *token_text, size_t token_len,
             const char *token_name, char *err, size_t errlen)
{
    struct gm_acl *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct reader rd = {acl_name, 0, err, errlen};
    if (acl_text) {
        a->enforced = true;
        if (parse_lines(&rd, acl_text, acl_len, a, acl_line) < 0)
            goto bad;
    }
    if (token_text) {
        rd.name = token_name;
        if (parse_lines(&rd, token_text, token_len, a, token_line) < 0)
            goto bad;
    }
    return a;
bad:
    gm_acl_free(a);
    return NULL;
}

/* The bytes of a file, NUL-terminated, in a new buffer (*len of them);
   NULL with "FILE: why" in err. */
static char *
read_file(const char *path, size_t *len, bool secret, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && secret && (st.st_mode & 077))
        gm_log(GM_LOG_WARNING, "%s: other users may read the tokens (mode %03o): chmod 600 it", path,
               (unsigned)(st.st_mode & 0777));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap >= FILE_MAX) {
                snprintf(err, errlen, "%s: larger than %u MiB", path, FILE_MAX >> 20);
                free(buf);
                fclose(f);
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (!buf || ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, buf ? strerror(errno ? errno : EIO) : "out of memory");
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

struct gm_acl *
gm_acl_load(const char *acl_file, const char *token_file, char *err, size_t errlen)
{
    size_t alen = 0, tlen = 0;
    char *atext = NULL, *ttext = NULL;
    struct gm_acl *a = NULL;
    if (acl_file && !(atext = read_file(acl_file, &alen, false, err, errlen)))
        goto out;
    if (token_file && !(ttext = read_file(token_file, &tlen, true, err, errlen)))
        goto out;
    a = gm_acl_parse(atext, alen, acl_file, ttext, tlen, token_file, err, errlen);
out:
    free(atext);
    if (ttext) {
        memset(ttext, 0, tlen);
        free(ttext);
    }
    return a;
}
