/* test_q8.c - GGUF weights x 8-bit block activations (kernels/k_q8.h):
 * the activation quantizer's bounds, the reference against the scalar
 * dequantizer (what the integers mean), every SIMD path against the
 * reference bit for bit on odd sizes, and the threaded driver. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/k_ops.h"
#include "../../kernels/k_pool.h"
#include "../../kernels/k_q8.h"
#include "../../kernels/k_quant.h"

static const uint32_t TYPES[] = {K_Q4_0, K_Q4_1, K_Q8_0, K_Q4_K, K_Q6_K};
#define N_TYPES 5
static const char *PATHS[] = {"portable", "avx2", "avxvnni", "avx512"};

static uint64_t rng = 88172645463325252ull;
static uint32_t urand32(void) { /* xorshift64, fixed seed */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)urand32() / 4294967296.0f * 2 - 1; } /* [-1, 1) */

static void put_f16(uint8_t *p, float f) {
    uint16_t h = k_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* n rows of random blocks with finite, positive-or-signed scales. */
static uint8_t *make_rows(uint32_t type, long n, long k) {
    const k_type_info_t *ti = k_type_info(type);
    size_t rb = k_row_bytes(type, (size_t)k);
    uint8_t *w = malloc((size_t)n * rb);
    for (size_t i = 0; i < (size_t)n * rb; i++) w[i] = (uint8_t)urand32();
    for (size_t b = 0; b < (size_t)n * rb / ti->block_bytes; b++) {
        uint8_t *blk = w + b * ti->block_bytes;
        if (type == K_Q6_K) put_f16(blk + 208, frand() * 0.01f);
        else put_f16(blk, frand() * 0.05f);
        if (type == K_Q4_1 || type == K_Q4_K) put_f16(blk + 2, frand() * 0.05f);
    }
    if (type == K_Q8_0) w[2] = 0x80; /* -128: the most negative code still multiplies exactly */
    return w;
}

static float *make_x(long m, long k) {
    float *x = malloc((size_t)(m * k) * sizeof *x);
    for (long i = 0; i < m * k; i++) x[i] = frand() * (urand32() % 50 == 0 ? 20 : 1);
    return x;
}

/* Quantized rows with their own storage (freed by free_rows). */
typedef struct { k_q8_row_t *r; int n; } rows_t;

static void quant_rows(rows_t *R, const float *x, long m, long k, int blk) {
    R->n = (int)m;
    R->r = malloc((size_t)m * sizeof *R->r);
    assert_non_null(R->r);
    for (long i = 0; i < m; i++) {
        int8_t *q = malloc((size_t)k);
        float *d = malloc((size_t)(k / 32) * sizeof *d), *s = malloc((size_t)(k / 32) * sizeof *s);
        int32_t *s32 = malloc((size_t)(k / 32) * sizeof *s32);
        int16_t *s16 = malloc((size_t)(k / 16) * sizeof *s16);
        k_q8_quant_row(x + i * k, k, blk, q, d, s, s32, s16);
        R->r[i] = (k_q8_row_t){q, d, s, s32, s16};
    }
}

static void free_rows(rows_t *R) {
    for (int i = 0; i < R->n; i++) {
        free((void *)R->r[i].q);
        free((void *)R->r[i].d);
        free((void *)R->r[i].s);
        free((void *)R->r[i].s32);
        free((void *)R->r[i].s16);
    }
    free(R->r);
}

static int path_available(const char *p) {
    k_q8_force_isa(p);
    int ok = strcmp(k_q8_path(), p) == 0;
    k_q8_force_isa(NULL);
    return ok;
}

static void test_quant_row_bounds(void **state) {
    (void)state;
    long k = 512;
    float *x = make_x(1, k);
    x[300] = 0; /* a block of zeros quantizes to zeros with d = 0 */
    for (int j = 256; j < 288; j++) x[j] = 0;
    for (int blk = 32; blk <= 256; blk *= 8) {
        int8_t q[512];
        float d[16], s[16];
        int32_t s32[16];
        int16_t bs[32];
        k_q8_quant_row(x, k, blk, q, d, s, s32, bs);
        for (long j = 0; j < k; j++) {
            float mx = 0;
            for (long t = j / blk * blk; t < (j / blk + 1) * blk; t++) mx = fmaxf(mx, fabsf(x[t]));
            assert_true(d[j / blk] == mx / 127.0f);
            assert_true(q[j] >= -127 && q[j] <= 127);
            assert_true(fabsf(x[j] - d[j / blk] * q[j]) <= 0.5f * d[j / blk] * 1.0001f + 1e-12f);
        }
        if (blk == 32) assert_true(d[8] == 0 && q[260] == 0);
        for (long g = 0; g < k / 16 && blk == 256; g++) {
            int t = 0;
            for (int j = 0; j < 16; j++) t += q[g * 16 + j];
            assert_int_equal(bs[g], t);
        }
        for (long g = 0; g < k / 32; g++) {
            int t = 0;
            for (int j = 0; j < 32; j++) t += q[g * 32 + j];
            assert_int_equal(s32[g], t);
            if (blk == 32) assert_true(s[g] == d[g] * (float)t);
        }
    }
    free(x);
}

/* The reference is the dot product of the dequantized weights with the
 * dequantized activations, up to float rounding. */
static void test_ref_matches_dequant(void **state) {
    (void)state;
    for (int t = 0; t < N_TYPES; t++) {
        uint32_t type = TYPES[t];
        long k = k_q8_block(type) == 32 ? 608 : 768;
        uint8_t *w = make_rows(type, 3, k);
        float *x = make_x(2, k), *wf = malloc((size_t)k * sizeof *wf);
        rows_t R;
        quant_rows(&R, x, 2, k, k_q8_block(type));
        float all[6];
        k_q8_rows_ref(type, w, k_row_bytes(type, (size_t)k), 3, R.r, 2, k, all, 3);
        for (long r = 0; r < 3; r++) {
            float got[2] = {all[r], all[3 + r]};
            k_dequant_row(type, w + r * k_row_bytes(type, (size_t)k), wf, (size_t)k);
            for (int i = 0; i < 2; i++) {
                double want = 0, mag = 0;
                int blk = k_q8_block(type);
                for (long j = 0; j < k; j++) {
                    double xv = (double)R.r[i].d[j / blk] * R.r[i].q[j];
                    want += (double)wf[j] * xv;
                    mag += fabs((double)wf[j] * xv);
                }
                assert_true(fabs(got[i] - want) <= 1e-5 * mag + 1e-9);
                /* and close to the FP32-activation product: what 8 bits cost */
                double exact = 0;
                for (long j = 0; j < k; j++) exact += (double)wf[j] * x[i * k + j];
                assert_true(fabs(got[i] - exact) <= 0.02 * mag + 1e-6);
            }
        }
        free_rows(&R);
        free(w);
        free(x);
        free(wf);
    }
}

/* Every path the CPU has equals the reference bit for bit: odd numbers of
 * blocks, 1..8 weight rows per panel, 1..5 activation rows. */
static void test_paths_bit_exact(void **state) {
    (void)state;
    static const long K32[] = {32, 96, 608, 1504}, KK[] = {256, 768, 1280};
    int tested = 0;
    for (int p = 0; p < 4; p++) {
        if (!path_available(PATHS[p])) {
            printf("# path %s: not on this CPU, skipped\n", PATHS[p]);
            continue;
        }
        tested++;
        for (int t = 0; t < N_TYPES; t++) {
            uint32_t type = TYPES[t];
            int blk = k_q8_block(type), nk = blk == 32 ? 4 : 3;
            for (int ki = 0; ki < nk; ki++) {
                long k = blk == 32 ? K32[ki] : KK[ki];
                size_t rb = k_row_bytes(type, (size_t)k);
                uint8_t *w = make_rows(type, 8, k);
                float *x = make_x(5, k);
                void *scratch = aligned_alloc(64, (k_q8_scratch_bytes(type, k) + 63) / 64 * 64);
                rows_t R;
                quant_rows(&R, x, 5, k, blk);
                for (int nr = 1; nr <= 8; nr += (nr < 3 ? 1 : 5))
                    for (long m = 1; m <= 5; m += 2) {
                        float want[40], got[40];
                        k_q8_rows_ref(type, w, rb, nr, R.r + 5 - m, m, k, want, 8);
                        k_q8_force_isa(PATHS[p]);
                        k_q8_rows(type, w, rb, nr, R.r + 5 - m, m, k, got, 8, scratch);
                        k_q8_force_isa(NULL);
                        for (long i = 0; i < m; i++)
                            if (memcmp(want + i * 8, got + i * 8, (size_t)nr * sizeof(float)) != 0)
                                fail_msg("%s type %u k %ld nr %d m %ld row %ld: %.9g vs %.9g", PATHS[p], type, k, nr,
                                         m, i, got[i * 8], want[i * 8]);
                    }
                free_rows(&R);
                free(scratch);
                free(w);
                free(x);
            }
        }
    }
    assert_true(tested >= 1);
}

/* The threaded driver (groups, ragged rows, several activation rows)
 * gives the reference's numbers on every path, through k_matmul too. */
static void test_matmul_group(void **state) {
    (void)state;
    k_pool_t *pool = k_pool_new(3);
    assert_non_null(pool);
    for (int p = 0; p < 4; p++) {
        if (!path_available(PATHS[p])) continue;
        k_q8_force_isa(PATHS[p]);
        for (int t = 0; t < N_TYPES; t++) {
            uint32_t type = TYPES[t];
            long k = k_q8_block(type) == 32 ? 96 : 512, ns[3] = {37, 5, 64};
            long ms[] = {1, 6, 9, 40, 180}; /* 40 and 180 rows: the Q8 rows quantized on the pool's threads */
            for (int mi = 0; mi < 5; mi++) {
                long m = ms[mi];
                uint8_t *w[3];
                k_mat_t mats[3];
                const k_mat_t *pm[3];
                float *y[3], *x = make_x(m, k);
                for (int i = 0; i < 3; i++) {
                    w[i] = make_rows(type, ns[i], k);
                    mats[i] = (k_mat_t){type, w[i], ns[i], k, k_row_bytes(type, (size_t)k), 1};
                    pm[i] = &mats[i];
                    y[i] = malloc((size_t)(m * ns[i]) * sizeof(float));
                }
                assert_int_equal(k_matmul_group(pool, pm, y, 3, x, m), 0);
                rows_t R;
                quant_rows(&R, x, m, k, k_q8_block(type));
                for (int i = 0; i < 3; i++)
                    for (long r = 0; r < ns[i]; r++)
                        for (long j = 0; j < m; j++) {
                            float want;
                            k_q8_rows_ref(type, w[i] + r * mats[i].row_bytes, mats[i].row_bytes, 1, R.r + j, 1, k,
                                          &want, 1);
                            assert_memory_equal(&want, &y[i][j * ns[i] + r], sizeof(float));
                        }
                /* one matrix through k_matmul: the same path; int_acts = 0 is the FP32
                 * one, within what 8-bit activations with 2 % outliers of 20x lose */
                float *y1 = malloc((size_t)(m * ns[0]) * sizeof(float));
                assert_int_equal(k_matmul(pool, &mats[0], x, m, y1), 0);
                assert_memory_equal(y1, y[0], (size_t)(m * ns[0]) * sizeof(float));
                mats[0].int_acts = 0;
                assert_int_equal(k_matmul(pool, &mats[0], x, m, y1), 0);
                int differs = 0;
                float big = 0, worst = 0;
                for (long e = 0; e < m * ns[0]; e++) big = fmaxf(big, fabsf(y1[e]));
                for (long e = 0; e < m * ns[0]; e++) {
                    differs |= y1[e] != y[0][e];
                    worst = fmaxf(worst, fabsf(y1[e] - y[0][e]));
                }
                if (worst > 0.1f * big) fail_msg("type %u: int8 vs FP32 off by %g of %g", type, worst, big);
                assert_true(differs);
                free(y1);
                free_rows(&R);
                for (int i = 0; i < 3; i++) {
                    free(w[i]);
                    free(y[i]);
                }
                free(x);
            }
        }
        k_q8_force_isa(NULL);
    }
    k_pool_free(pool);
}

static void test_supports_and_paths(void **state) {
    (void)state;
    assert_true(k_q8_supports(K_Q4_1, 576));
    assert_false(k_q8_supports(K_Q4_1, 577));
    assert_false(k_q8_supports(K_Q4_K, 576)); /* not a whole super-block */
    assert_true(k_q8_supports(K_Q6_K, 768));
    assert_false(k_q8_supports(K_Q5_0, 576));
    assert_false(k_q8_supports(K_F32, 576));
    /* a matrix of an unsupported type marked int_acts falls back to FP32 */
    float w[64], x[64], y;
    for (int i = 0; i < 64; i++) w[i] = x[i] = 0.5f;
    k_mat_t m = {K_F32, w, 1, 64, 256, 1};
    assert_int_equal(k_matmul(NULL, &m, x, 1, &y), 0);
    assert_true(y == 16.0f);
    k_q8_force_isa("portable");
    assert_string_equal(k_q8_path(), "portable");
    k_q8_force_isa("no-such-isa"); /* unknown: the CPU's own level */
    k_q8_force_isa(NULL);
}

int main(void) {
    k_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_row_bounds),
        cmocka_unit_test(test_ref_matches_dequant),
        cmocka_unit_test(test_paths_bit_exact),
        cmocka_unit_test(test_matmul_group),
        cmocka_unit_test(test_supports_and_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
