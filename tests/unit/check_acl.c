/*
 * check_acl.c: unit tests for the access table (config/acl.h): the ACL
 * file's and the token file's errors with their line numbers, globs,
 * ip: networks (IPv4, IPv6, IPv4-mapped), what each permission includes,
 * tokens, and reading the files from disk.
 */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libgearman-server/base/log.h"
#include "libgearman-server/config/acl.h"
#include "tests/unit/check_tap.h"

static char err[512];

/* A table of ACL text alone (NULL when refused: the reason in err). */
static struct gm_acl *
acl_of(const char *text)
{
    err[0] = '\0';
    return gm_acl_parse(text, strlen(text), "test.acl", NULL, 0, NULL, err, sizeof err);
}

/* A table of tokens alone. */
static struct gm_acl *
tokens_of(const char *text)
{
    err[0] = '\0';
    return gm_acl_parse(NULL, 0, NULL, text, strlen(text), "test.tokens", err, sizeof err);
}

static bool
allows(const struct gm_acl *a, const char *id, enum gm_perm p, const char *fn)
{
    return gm_acl_allows(a, id, strlen(id), p, fn, strlen(fn));
}

/* The ACL text is refused with exactly this message. */
static void
refused_with(const char *text, const char *want)
{
    struct gm_acl *a = acl_of(text);
    ck_assert_msg(a == NULL, "accepted: %s", text);
    ck_assert_str_eq(err, want);
}

/* ------------------------------------------------------------------ */

START_TEST(test_glob_matches_runs_of_any_characters)
{
#define G(p, s) gm_acl_glob((p), strlen(p), (s), strlen(s))
    ck_assert(G("*", ""));
    ck_assert(G("*", "anything"));
    ck_assert(G("billing", "billing"));
    ck_assert(!G("billing", "billing2"));
    ck_assert(!G("billing", "billin"));
    ck_assert(G("billing.*", "billing.invoice"));
    ck_assert(G("billing.*", "billing."));
    ck_assert(!G("billing.*", "billing"));
    ck_assert(G("*.resize", "image.resize"));
    ck_assert(!G("*.resize", "image.resize2"));
    ck_assert(G("a*b*c", "abc"));
    ck_assert(G("a*b*c", "aXXbYYbZZc"));
    ck_assert(!G("a*b*c", "aXXbYYbZZ"));
    ck_assert(G("**x", "x"));
    ck_assert(!G("", "x"));
    ck_assert(G("", ""));
    ck_assert(G("cn:img-*", "cn:img-worker-7"));
    ck_assert(!G("cn:img-*", "ip:img-worker-7"));
#undef G
}
END_TEST

START_TEST(test_comments_blank_lines_and_crlf_are_ignored)
{
    struct gm_acl *a = acl_of("# who may do what\n"
                              "\n"
                              "   \t \n"
                              "ip:127.0.0.1 submit billing   # the billing clients\r\n"
                              "  # an indented comment\n"
                              "cn:worker\twork\t*\n"
                              "*   admin-read  *");
    ck_assert_msg(a != NULL, "%s", err);
    ck_assert_uint_eq(gm_acl_rule_count(a), 3);
    ck_assert(gm_acl_enforced(a));
    ck_assert(allows(a, "ip:127.0.0.1", GM_PERM_SUBMIT, "billing"));
    ck_assert(allows(a, "cn:worker", GM_PERM_WORK, "anything"));
    ck_assert(allows(a, "cn:somebody", GM_PERM_ADMIN_READ, ""));
    /* a function whose name holds # (not at a field's start) is a name */
    gm_acl_free(a);
    a = acl_of("* submit jobs#1\n");
    ck_assert_msg(a != NULL, "%s", err);
    ck_assert(allows(a, "ip:10.0.0.1", GM_PERM_SUBMIT, "jobs#1"));
    ck_assert(!allows(a, "ip:10.0.0.1", GM_PERM_SUBMIT, "jobs"));
    gm_acl_free(a);
    /* an empty file: enforced, and nothing is granted */
    a = acl_of("");
    ck_assert(a && gm_acl_enforced(a));
    ck_assert(!allows(a, "ip:127.0.0.1", GM_PERM_ADMIN_READ, ""));
    gm_acl_free(a);
}
END_TEST

START_TEST(test_every_bad_line_is_refused_with_its_line_number)
{
    refused_with("# ok\n* submit *\nip:1.2.3.4 submit\n",
                 "test.acl:3: expected IDENTITY PERMISSION FUNCTION-PATTERN, found 2 fields");
    refused_with("* submit a b\n", "test.acl:1: expected IDENTITY PERMISSION FUNCTION-PATTERN, found 4 fields");
    refused_with("\n\n* sumbit *\n", "test.acl:3: unknown permission \"sumbit\" (submit, work, admin-read, admin)");
    refused_with("* admin billing\n", "test.acl:1: admin is server-wide: its function pattern must be *");
    refused_with("* admin-read x*\n", "test.acl:1: admin-read is server-wide: its function pattern must be *");
    refused_with("user:bob submit *\n",
                 "test.acl:1: unknown identity \"user:bob\" (an identity is *, ip:ADDRESS[/BITS], cn:NAME or "
                 "token:NAME)");
    refused_with("cn: submit *\n",
                 "test.acl:1: unknown identity \"cn:\" (an identity is *, ip:ADDRESS[/BITS], cn:NAME or "
                 "token:NAME)");
    refused_with("ip:localhost submit *\n",
                 "test.acl:1: \"localhost\" is not an IPv4 or IPv6 address (an identity is *, ip:ADDRESS[/BITS], "
                 "cn:NAME or token:NAME; a pattern uses *)");
    refused_with("ip:10.0.0.0/33 submit *\n", "test.acl:1: bad prefix length in \"ip:10.0.0.0/33\" (0 to 32)");
    refused_with("ip:::/129 submit *\n", "test.acl:1: bad prefix length in \"ip:::/129\" (0 to 128)");
    refused_with("ip:10.0.0.0/ submit *\n", "test.acl:1: bad prefix length in \"ip:10.0.0.0/\" (0 to 32)");
    refused_with("ip:10.0.0.0/8x submit *\n", "test.acl:1: bad prefix length in \"ip:10.0.0.0/8x\" (0 to 32)");
    refused_with("ip:10.1.2.3/8 submit *\n",
                 "test.acl:1: \"ip:10.1.2.3/8\" has bits set past its prefix length (the network's address is "
                 "meant)");
    refused_with("ip:2001:db8::1/32 submit *\n",
                 "test.acl:1: \"ip:2001:db8::1/32\" has bits set past its prefix length (the network's address is "
                 "meant)");
    refused_with("* submit a\x01z\n", "test.acl:1: the function pattern holds a control character");
    /* a line longer than the limit */
    char *big = malloc(GM_ACL_LINE_MAX + 64);
    strcpy(big, "* submit *\n* submit ");
    size_t n = strlen(big);
    memset(big + n, 'f', GM_ACL_LINE_MAX);
    big[n + GM_ACL_LINE_MAX] = '\0';
    refused_with(big, "test.acl:2: the line is longer than 4096 bytes");
    free(big);
}
END_TEST

START_TEST(test_a_nul_byte_in_a_line_is_refused)
{
    const char text[] = "* submit *\n* sub\0mit *\n";
    struct gm_acl *a = gm_acl_parse(text, sizeof text - 1, "test.acl", NULL, 0, NULL, err, sizeof err);
    ck_assert(a == NULL);
    ck_assert_str_eq(err, "test.acl:2: the line holds a NUL byte");
}
END_TEST

START_TEST(test_identity_patterns_match_their_kind_only)
{
    struct gm_acl *a = acl_of("cn:billing-* submit billing.*\n"
                              "token:ops admin *\n"
                              "ip:10.1.* work images\n"
                              "* work public\n");
    ck_assert_msg(a != NULL, "%s", err);
    ck_assert(allows(a, "cn:billing-eu", GM_PERM_SUBMIT, "billing.invoice"));
    ck_assert(!allows(a, "cn:billing-eu", GM_PERM_SUBMIT, "payroll"));
    ck_assert(!allows(a, "cn:billing-eu", GM_PERM_WORK, "billing.invoice"));
    ck_assert(!allows(a, "token:billing-eu", GM_PERM_SUBMIT, "billing.invoice"));
    ck_assert(!allows(a, "ip:billing-eu", GM_PERM_SUBMIT, "billing.invoice"));
    ck_assert(allows(a, "token:ops", GM_PERM_ADMIN, ""));
    ck_assert(!allows(a, "token:ops2", GM_PERM_ADMIN, ""));
    ck_assert(!allows(a, "cn:ops", GM_PERM_ADMIN, ""));
    ck_assert(allows(a, "ip:10.1.2.3", GM_PERM_WORK, "images"));
    ck_assert(!allows(a, "ip:10.10.2.3", GM_PERM_WORK, "images"));
    ck_assert(allows(a, "ip:10.10.2.3", GM_PERM_WORK, "public"));
    ck_assert(allows(a, "cn:anyone", GM_PERM_WORK, "public"));
    ck_assert(!allows(a, "cn:anyone", GM_PERM_SUBMIT, "public"));
    gm_acl_free(a);
}
END_TEST

START_TEST(test_ip_networks_v4_v6_and_v4_mapped)
{
    struct gm_acl *a = acl_of("ip:192.168.0.0/16 submit lan\n"
                              "ip:127.0.0.1 submit one\n"
                              "ip:2001:db8::/32 submit doc\n"
                              "ip:::1 submit v6lo\n"
                              "ip:::ffff:10.0.0.0/104 submit mapped\n"
                              "ip:0.0.0.0/0 submit any4\n");
    ck_assert_msg(a != NULL, "%s", err);
    /* an IPv4 network */
    ck_assert(allows(a, "ip:192.168.7.9", GM_PERM_SUBMIT, "lan"));
    ck_assert(!allows(a, "ip:192.169.7.9", GM_PERM_SUBMIT, "lan"));
    /* ... matches the IPv4-mapped IPv6 peer too */
    ck_assert(allows(a, "ip:::ffff:192.168.7.9", GM_PERM_SUBMIT, "lan"));
    ck_assert(allows(a, "ip:::ffff:c0a8:0709", GM_PERM_SUBMIT, "lan"));
    ck_assert(!allows(a, "ip:::ffff:192.169.7.9", GM_PERM_SUBMIT, "lan"));
    /* an address alone is the address, in any spelling */
    ck_assert(allows(a, "ip:127.0.0.1", GM_PERM_SUBMIT, "one"));
    ck_assert(allows(a, "ip:::ffff:127.0.0.1", GM_PERM_SUBMIT, "one"));
    ck_assert(!allows(a, "ip:127.0.0.2", GM_PERM_SUBMIT, "one"));
    ck_assert(allows(a, "ip:0:0:0:0:0:0:0:1", GM_PERM_SUBMIT, "v6lo"));
    ck_assert(!allows(a, "ip:::2", GM_PERM_SUBMIT, "v6lo"));
    /* IPv6 networks */
    ck_assert(allows(a, "ip:2001:db8:ffff::42", GM_PERM_SUBMIT, "doc"));
    ck_assert(!allows(a, "ip:2001:db9::42", GM_PERM_SUBMIT, "doc"));
    /* an IPv6 rule over the mapped range matches a plain IPv4 peer */
    ck_assert(allows(a, "ip:10.200.0.1", GM_PERM_SUBMIT, "mapped"));
    ck_assert(!allows(a, "ip:11.0.0.1", GM_PERM_SUBMIT, "mapped"));
    /* 0.0.0.0/0 is every IPv4 peer, not every IPv6 one */
    ck_assert(allows(a, "ip:8.8.8.8", GM_PERM_SUBMIT, "any4"));
    ck_assert(!allows(a, "ip:2001:db8::1", GM_PERM_SUBMIT, "any4"));
    /* what is not an ip: identity, or no address, matches no network */
    ck_assert(!allows(a, "cn:192.168.7.9", GM_PERM_SUBMIT, "lan"));
    ck_assert(!allows(a, "ip:garbage", GM_PERM_SUBMIT, "lan"));
    ck_assert(!allows(a, "ip:", GM_PERM_SUBMIT, "any4"));
    gm_acl_free(a);
    /* ::/0 is every peer */
    a = acl_of("ip:::/0 submit all\n");
    ck_assert(allows(a, "ip:2001:db8::1", GM_PERM_SUBMIT, "all"));
    ck_assert(allows(a, "ip:1.2.3.4", GM_PERM_SUBMIT, "all"));
    gm_acl_free(a);
}
END_TEST

START_TEST(test_admin_includes_admin_read_and_nothing_else)
{
    struct gm_acl *a = acl_of("cn:root admin *\ncn:monitor admin-read *\ncn:client submit *\n");
    ck_assert_msg(a != NULL, "%s", err);
    ck_assert(allows(a, "cn:root", GM_PERM_ADMIN, ""));
    ck_assert(allows(a, "cn:root", GM_PERM_ADMIN_READ, ""));
    ck_assert(!allows(a, "cn:root", GM_PERM_SUBMIT, "f"));
    ck_assert(!allows(a, "cn:root", GM_PERM_WORK, "f"));
    ck_assert(allows(a, "cn:monitor", GM_PERM_ADMIN_READ, ""));
    ck_assert(!allows(a, "cn:monitor", GM_PERM_ADMIN, ""));
    ck_assert(allows(a, "cn:client", GM_PERM_SUBMIT, "f"));
    ck_assert(!allows(a, "cn:client", GM_PERM_WORK, "f"));
    ck_assert(!allows(a, "cn:client", GM_PERM_ADMIN_READ, ""));
    struct gm_acl_grants g;
    gm_acl_grants(a, "cn:root", 7, &g);
    ck_assert_uint_eq(g.everywhere, GM_PERM_BIT(GM_PERM_ADMIN) | GM_PERM_BIT(GM_PERM_ADMIN_READ));
    gm_acl_free(a);
    ck_assert_str_eq(gm_perm_name(GM_PERM_ADMIN_READ), "admin-read");
}
END_TEST

START_TEST(test_grants_say_what_is_everywhere_and_what_somewhere)
{
    struct gm_acl *a = acl_of("* submit *\nip:127.0.0.0/8 work images.*\nip:127.0.0.1 work thumbs\n");
    ck_assert_msg(a != NULL, "%s", err);
    struct gm_acl_grants g;
    gm_acl_grants(a, "ip:127.0.0.1", 12, &g);
    ck_assert_uint_eq(g.everywhere, GM_PERM_BIT(GM_PERM_SUBMIT));
    ck_assert_uint_eq(g.somewhere, GM_PERM_BIT(GM_PERM_SUBMIT) | GM_PERM_BIT(GM_PERM_WORK));
    gm_acl_grants(a, "ip:10.0.0.1", 11, &g);
    ck_assert_uint_eq(g.somewhere, GM_PERM_BIT(GM_PERM_SUBMIT));
    /* any line that grants is enough */
    ck_assert(allows(a, "ip:127.0.0.1", GM_PERM_WORK, "thumbs"));
    ck_assert(allows(a, "ip:127.0.0.1", GM_PERM_WORK, "images.big"));
    ck_assert(!allows(a, "ip:127.0.0.2", GM_PERM_WORK, "thumbs"));
    gm_acl_free(a);
}
END_TEST

START_TEST(test_tokens_name_requests_and_bad_token_files_are_refused)
{
    struct gm_acl *a = tokens_of("# name token\n"
                                 "ops   0123456789abcdef\n"
                                 "\n"
                                 "ci    ZYXWVUTSRQPONMLKJIH-_.~+/=\r\n");
    ck_assert_msg(a != NULL, "%s", err);
    ck_assert(!gm_acl_enforced(a)); /* tokens alone deny nothing */
    ck_assert_uint_eq(gm_acl_token_count(a), 2);
    ck_assert_str_eq(gm_acl_token_identity(a, "0123456789abcdef", 16), "token:ops");
    ck_assert_str_eq(gm_acl_token_identity(a, "ZYXWVUTSRQPONMLKJIH-_.~+/=", 26), "token:ci");
    ck_assert(gm_acl_token_identity(a, "0123456789abcde", 15) == NULL);  /* a prefix */
    ck_assert(gm_acl_token_identity(a, "0123456789abcdef0", 17) == NULL); /* longer */
    ck_assert(gm_acl_token_identity(a, "0123456789abcdeF", 16) == NULL);
    ck_assert(gm_acl_token_identity(a, "", 0) == NULL);
    gm_acl_free(a);

    static const struct {
        const char *text, *why;
    } bad[] = {
        {"ops 0123456789abcde\n", "test.tokens:1: the token of ops is shorter than 16 characters"},
        {"ops\n", "test.tokens:1: expected NAME TOKEN, found 1 field"},
        {"ops a b\n", "test.tokens:1: expected NAME TOKEN, found 3 fields"},
        {"ops 0123456789abcdef\n#\nops fedcba9876543210\n", "test.tokens:3: the name ops is on line 1 already"},
        {"ops 0123456789abcdef\nci 0123456789abcdef\n", "test.tokens:2: the token of ci is the token of line 1"},
        {"ops 0123456789abcd\x01f\n", "test.tokens:1: a token is printable ASCII"},
        {"\xc3\xa9 0123456789abcdef\n", "test.tokens:1: a token's name is printable ASCII"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = tokens_of(bad[i].text);
        ck_assert_msg(a == NULL, "accepted %s", bad[i].text);
        ck_assert_str_eq(err, bad[i].why);
        ck_assert_msg(!strstr(err, "0123456789abcdef"), "a token is in the message: %s", err);
    }
}
END_TEST

/* A file in a fresh directory holding text. */
static char dir[64];

static const char *
write_file(const char *name, const char *text, mode_t mode)
{
    static char path[2][128];
    static int k;
    char *p = path[k++ % 2];
    snprintf(p, sizeof path[0], "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert(f != NULL);
    fputs(text, f);
    fclose(f);
    chmod(p, mode);
    return p;
}

START_TEST(test_files_are_read_and_their_errors_name_them)
{
    strcpy(dir, "/tmp/check_acl.XXXXXX");
    ck_assert(mkdtemp(dir) != NULL);
    gm_log_open("none");
    const char *acl = write_file("gearmand.acl", "ip:127.0.0.1 admin *\ncn:w work *\n", 0644);
    const char *tok = write_file("tokens", "ops 0123456789abcdef\n", 0600);
    struct gm_acl *a = gm_acl_load(acl, tok, err, sizeof err);
    ck_assert_msg(a != NULL, "%s", err);
    ck_assert_uint_eq(gm_acl_rule_count(a), 2);
    ck_assert_uint_eq(gm_acl_token_count(a), 1);
    ck_assert(gm_acl_enforced(a));
    gm_acl_free(a);
    /* tokens alone */
    a = gm_acl_load(NULL, tok, err, sizeof err);
    ck_assert(a && !gm_acl_enforced(a));
    gm_acl_free(a);
    /* a bad line: the file's name and the line */
    acl = write_file("bad.acl", "# fine\n* submit *\n* work\n", 0644);
    ck_assert(gm_acl_load(acl, tok, err, sizeof err) == NULL);
    char want[256];
    snprintf(want, sizeof want, "%s:3: expected IDENTITY PERMISSION FUNCTION-PATTERN, found 2 fields", acl);
    ck_assert_str_eq(err, want);
    /* a file that is not there */
    snprintf(want, sizeof want, "%s/missing.acl", dir);
    ck_assert(gm_acl_load(want, NULL, err, sizeof err) == NULL);
    ck_assert(strstr(err, "missing.acl: No such file or directory") != NULL);
    /* a bad token file names itself */
    tok = write_file("short.tokens", "x short\n", 0600);
    ck_assert(gm_acl_load(NULL, tok, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s:1: the token of x is shorter than 16 characters", tok);
    ck_assert_str_eq(err, want);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

#define ADD(s, t) gm_check_add((s), #t, t, 30, NULL, NULL)

static Suite *
acl_suite(void)
{
    Suite *s = suite_create("acl");
    ADD(s, test_glob_matches_runs_of_any_characters);
    ADD(s, test_comments_blank_lines_and_crlf_are_ignored);
    ADD(s, test_every_bad_line_is_refused_with_its_line_number);
    ADD(s, test_a_nul_byte_in_a_line_is_refused);
    ADD(s, test_identity_patterns_match_their_kind_only);
    ADD(s, test_ip_networks_v4_v6_and_v4_mapped);
    ADD(s, test_admin_includes_admin_read_and_nothing_else);
    ADD(s, test_grants_say_what_is_everywhere_and_what_somewhere);
    ADD(s, test_tokens_name_requests_and_bad_token_files_are_refused);
    ADD(s, test_files_are_read_and_their_errors_name_them);
    return s;
}

int
main(void)
{
    return gm_check_run_tap(acl_suite());
}
