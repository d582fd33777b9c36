# m4/gm_checks.m4: the project's own configure probes.
#
# GM_CHECK_C11_ATOMICS  fails unless <stdatomic.h> works for the ring's
#                       64-bit indices without extra libraries.
# GM_CHECK_PTHREAD      finds the flag that gives POSIX threads.
# GM_CHECK_LIBEV        probes ev.h and -lev directly: Debian's libev-dev
#                       ships no pkg-config file.
# GM_WARNINGS           -Wall -Wextra, and -Werror with --enable-werror.
# GM_SANITIZERS         --enable-asan (address + undefined) and --enable-tsan.
# GM_FUZZERS            --enable-fuzzers builds libFuzzer targets (clang).

AC_DEFUN([GM_CHECK_C11_ATOMICS], [
  AC_MSG_CHECKING([for C11 atomics])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <stdatomic.h>
#include <stdint.h>
static _Atomic uint64_t v;]],
      [[atomic_store_explicit(&v, 1, memory_order_release);
        return (int)atomic_load_explicit(&v, memory_order_acquire) - 1;]])],
    [AC_MSG_RESULT([yes])],
    [AC_MSG_RESULT([no])
     AC_MSG_ERROR([a C11 compiler with <stdatomic.h> is required])])
])

AC_DEFUN([GM_CHECK_PTHREAD], [
  AC_MSG_CHECKING([for the -pthread flag])
  gm_save_CFLAGS=$CFLAGS
  CFLAGS="$CFLAGS -pthread"
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>
static void *run(void *a) { return a; }]],
      [[pthread_t t; pthread_create(&t, 0, run, 0); pthread_join(t, 0);]])],
    [AC_MSG_RESULT([yes]); PTHREAD_CFLAGS=-pthread; PTHREAD_LIBS=-pthread],
    [AC_MSG_RESULT([no])
     AC_CHECK_LIB([pthread], [pthread_create], [PTHREAD_LIBS=-lpthread],
                  [AC_MSG_ERROR([POSIX threads are required])])])
  CFLAGS=$gm_save_CFLAGS
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])

AC_DEFUN([GM_CHECK_LIBEV], [
  AC_ARG_WITH([libev],
    [AS_HELP_STRING([--with-libev=PREFIX], [libev install prefix (default: system)])],
    [LIBEV_CFLAGS="-I$withval/include"; LIBEV_LDFLAGS="-L$withval/lib"], [])
  gm_save_CPPFLAGS=$CPPFLAGS
  gm_save_LDFLAGS=$LDFLAGS
  CPPFLAGS="$CPPFLAGS $LIBEV_CFLAGS"
  LDFLAGS="$LDFLAGS $LIBEV_LDFLAGS"
  AC_CHECK_HEADER([ev.h], [],
    [AC_MSG_ERROR([libev headers not found (apt-get install libev-dev)])])
  AC_CHECK_LIB([ev], [ev_loop_new], [LIBEV_LIBS="$LIBEV_LDFLAGS -lev"],
    [AC_MSG_ERROR([libev not found (apt-get install libev-dev)])], [-lm])
  CPPFLAGS=$gm_save_CPPFLAGS
  LDFLAGS=$gm_save_LDFLAGS
  AC_SUBST([LIBEV_CFLAGS])
  AC_SUBST([LIBEV_LIBS])
])

AC_DEFUN([GM_WARNINGS], [
  AC_ARG_ENABLE([werror],
    [AS_HELP_STRING([--enable-werror], [treat compiler warnings as errors (CI)])],
    [], [enable_werror=no])
  GM_WARN_CFLAGS="-Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter"
  AS_IF([test "x$enable_werror" = xyes], [GM_WARN_CFLAGS="$GM_WARN_CFLAGS -Werror"])
  AC_SUBST([GM_WARN_CFLAGS])
])

AC_DEFUN([GM_SANITIZERS], [
  AC_ARG_ENABLE([asan],
    [AS_HELP_STRING([--enable-asan], [build with AddressSanitizer and UndefinedBehaviorSanitizer])],
    [], [enable_asan=no])
  AC_ARG_ENABLE([tsan],
    [AS_HELP_STRING([--enable-tsan], [build with ThreadSanitizer])],
    [], [enable_tsan=no])
  AS_IF([test "x$enable_asan" = xyes && test "x$enable_tsan" = xyes],
    [AC_MSG_ERROR([--enable-asan and --enable-tsan cannot be combined])])
  GM_SAN_CFLAGS=
  AS_IF([test "x$enable_asan" = xyes],
    [GM_SAN_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"])
  AS_IF([test "x$enable_tsan" = xyes],
    [GM_SAN_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer"])
  AS_IF([test -n "$GM_SAN_CFLAGS"], [
    gm_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS $GM_SAN_CFLAGS"
    AC_MSG_CHECKING([whether $CC supports $GM_SAN_CFLAGS])
    AC_LINK_IFELSE([AC_LANG_PROGRAM([], [])], [AC_MSG_RESULT([yes])],
      [AC_MSG_RESULT([no]); AC_MSG_ERROR([the compiler cannot build with $GM_SAN_CFLAGS])])
    CFLAGS=$gm_save_CFLAGS])
  AM_CONDITIONAL([GM_TSAN], [test "x$enable_tsan" = xyes])
  AM_CONDITIONAL([GM_ASAN], [test "x$enable_asan" = xyes])
  AC_SUBST([GM_SAN_CFLAGS])
])

AC_DEFUN([GM_FUZZERS], [
  AC_ARG_ENABLE([fuzzers],
    [AS_HELP_STRING([--enable-fuzzers], [build libFuzzer targets (needs clang)])],
    [], [enable_fuzzers=no])
  AS_IF([test "x$enable_fuzzers" = xyes], [
    gm_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -fsanitize=fuzzer"
    AC_MSG_CHECKING([whether $CC supports -fsanitize=fuzzer])
    AC_LINK_IFELSE([AC_LANG_SOURCE([[#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }]])],
      [AC_MSG_RESULT([yes])],
      [AC_MSG_RESULT([no]); AC_MSG_ERROR([--enable-fuzzers needs clang with libFuzzer (CC=clang)])])
    CFLAGS=$gm_save_CFLAGS])
  AM_CONDITIONAL([GM_FUZZERS], [test "x$enable_fuzzers" = xyes])
])
