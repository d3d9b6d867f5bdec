/* test_util.h - what the GPU kernel tests share: pass/fail counting, a
 * verdict line per check, and GPU calls that end the program (exit 2, the
 * error printed) when the device itself fails, so a FAIL line always means
 * a wrong result, never a broken setup. Include after kc.h. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

static int n_pass, n_fail;

#define OK(call)                                                  \
    do {                                                          \
        if ((call) != 0) {                                        \
            fprintf(stderr, "GPU: %s (%s)\n", kc_error(), #call); \
            exit(2);                                              \
        }                                                         \
    } while (0)

static inline void *dmalloc(size_t bytes) {
    void *d = kc_malloc(bytes);
    if (!d) {
        fprintf(stderr, "GPU: %s\n", kc_error());
        exit(2);
    }
    return d;
}

static inline void verdict(int ok, const char *what) {
    printf("%s %s%s\n", ok ? "PASS" : "FAIL", what, ok ? "" : " <--");
    ok ? n_pass++ : n_fail++;
}

#endif
