/*
 * check_tap.h: runs a Check suite and prints one TAP line per test case, so
 * that automake's TAP driver (and the CI summary) counts every case.
 * Header-only; included once by each check_<module>.c's main().
 */
#ifndef GM_CHECK_TAP_H
#define GM_CHECK_TAP_H

#include <check.h>
#include <stdio.h>

/* Adds test t to suite s as a test case of its own, named name (so the TAP
   line carries the test's name), with a time-out in seconds and an
   optional checked fixture (setup and teardown may be NULL). */
static inline void
gm_check_add(Suite *s, const char *name, const TTest *t, double timeout, SFun setup, SFun teardown)
{
    TCase *tc = tcase_create(name);
    if (setup || teardown)
        tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, t);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
}

/* Runs every test of suite s; prints "1..N" and "ok"/"not ok" lines.
   Returns 0 (the TAP lines carry the verdict). */
static inline int
gm_check_run_tap(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_SILENT);
    int n = srunner_ntests_run(sr);
    TestResult **results = srunner_results(sr);
    printf("1..%d\n", n);
    for (int i = 0; i < n; i++) {
        TestResult *r = results[i];
        if (tr_rtype(r) == CK_PASS) {
            printf("ok %d - %s\n", i + 1, tr_tcname(r));
        } else {
            printf("not ok %d - %s\n", i + 1, tr_tcname(r));
            printf("# %s:%d: %s\n", tr_lfile(r) ? tr_lfile(r) : "?", tr_lno(r),
                   tr_msg(r) ? tr_msg(r) : "");
        }
    }
    free(results);
    srunner_free(sr);
    return 0;
}

#endif /* GM_CHECK_TAP_H */
