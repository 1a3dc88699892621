/* test.h: a minimal TAP producer for unit tests: each RUN() is one test case;
 * CHECK failures print a diagnostic and fail the case. tests/run counts them. */
#ifndef AV_TEST_H
#define AV_TEST_H

#include <stdio.h>
#include <string.h>

static int t_case_failed, t_cases, t_failed_cases;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            printf("# %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);       \
            t_case_failed = 1;                                                      \
        }                                                                           \
    } while (0)

#define CHECK_STR(got, want)                                                        \
    do {                                                                            \
        const char *g_ = (got), *w_ = (want);                                       \
        if (g_ == NULL || w_ == NULL ? g_ != w_ : strcmp(g_, w_) != 0) {            \
            printf("# %s:%d: %s\n#   got:  %s\n#   want: %s\n", __FILE__, __LINE__, \
                   #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)");                   \
            t_case_failed = 1;                                                      \
        }                                                                           \
    } while (0)

#define CHECK_INT(got, want)                                                        \
    do {                                                                            \
        long long g_ = (long long)(got), w_ = (long long)(want);                    \
        if (g_ != w_) {                                                             \
            printf("# %s:%d: %s: got %lld, want %lld\n", __FILE__, __LINE__, #got,  \
                   g_, w_);                                                         \
            t_case_failed = 1;                                                      \
        }                                                                           \
    } while (0)

#define RUN(fn)                                                                     \
    do {                                                                            \
        t_case_failed = 0;                                                          \
        fn();                                                                       \
        t_cases++;                                                                  \
        if (t_case_failed)                                                          \
            t_failed_cases++;                                                       \
        printf("%s %d - %s\n", t_case_failed ? "not ok" : "ok", t_cases, #fn);      \
        fflush(stdout);                                                             \
    } while (0)

#define TEST_DONE()                                                                 \
    do {                                                                            \
        printf("1..%d\n", t_cases);                                                 \
        return t_failed_cases ? 1 : 0;                                              \
    } while (0)

#endif
