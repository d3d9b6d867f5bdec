/* test_rng.h - the GPU tests' deterministic random numbers: xorshift64,
 * seeded per test program (define TEST_RNG_SEED before including), so a
 * failure reproduces exactly and the programs draw independent streams. */
#ifndef TEST_RNG_H
#define TEST_RNG_H

#include <stdint.h>

#ifndef TEST_RNG_SEED
#error "define TEST_RNG_SEED before including test_rng.h"
#include <math.h>

/* activations [m][k]: each row at its own magnitude, 2^-20 .. 2^19 (the
 * INT8 scale must follow any range), and a zero row when m > 2 */
static inline void fill_x(float *x, long m, long k) {
    for (long i = 0; i < m; i++) {
        float sc = (i == 1 && m > 2) ? 0.0f : ldexpf(1.0f, (int)(next() % 40) - 20);
        for (long j = 0; j < k; j++) x[i * k + j] = frand() * sc;
    }
}

#endif

static uint64_t rng = TEST_RNG_SEED;

static inline uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* uniform in [-1, 1), 24 random bits */
static inline float frand(void) { return (float)((next() >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f; }

#include <math.h>

/* activations [m][k]: each row at its own magnitude, 2^-20 .. 2^19 (the
 * INT8 scale must follow any range), and a zero row when m > 2 */
static inline void fill_x(float *x, long m, long k) {
    for (long i = 0; i < m; i++) {
        float sc = (i == 1 && m > 2) ? 0.0f : ldexpf(1.0f, (int)(next() % 40) - 20);
        for (long j = 0; j < k; j++) x[i * k + j] = frand() * sc;
    }
}

#endif
