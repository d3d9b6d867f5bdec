/* sq_test_rand.h - the random tensors test_sq.c and test_sq_kernels.c
 * draw from: a fixed-seed xorshift, normal values, and weights with a few
 * large outliers per row, like real layers. */
#ifndef SQ_TEST_RAND_H
#define SQ_TEST_RAND_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 88172645463325252ull;
static inline double urand(void) { /* xorshift64, fixed seed */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static inline double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* Weights with a few large outliers per row, like real layers. */
static inline float *make_w(long n, long k) {
    float *w = malloc((size_t)(n * k) * sizeof *w);
    for (long i = 0; i < n * k; i++) w[i] = (float)(nrand() * (urand() < 0.02 ? 8 : 1));
    return w;
}

#endif
