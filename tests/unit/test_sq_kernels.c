/* test_sq_kernels.c - the SQ (and uniform integer) x INT8 kernels: every
 * path this CPU has (AVX-512 panels, AVX2 with AVX-VNNI or maddubs,
 * portable) against the portable reference, bit for bit; the view's
 * dequantization; static SQ activations; the activation quantizer. (The
 * format, the quantizers and the recipes are test_sq.c's.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/model/sq.h"
#include "../../engine/quant/sq_quant.h"
#include "../../kernels/k_pool.h"
#include "../../kernels/k_quant.h"
#include "../../kernels/k_sq.h"

#include "sq_test_rand.h"

/* Every kernel path, best first: AVX-512 panels, AVX2 panels with
 * AVX-VNNI vpdpbusd, AVX2 panels with maddubs, portable. Each test runs
 * the ones this CPU has (SQSERVE_ISA names; k_sq_path says which ran). */
static const char *ISAS[] = {"avx512", "avxvnni", "avx2", "portable"};
#define N_ISAS 4

/* The end of a test over every path: the default path back, the pool
 * freed, then which kernel paths the test reached on this CPU. The portable
 * one always runs, and so does AVX2 on any CPU that has it (every x86
 * server this project targets), so a shape that silently left the AVX2
 * panels fails. */
static void paths_done(k_pool_t *pool, const char *what, const int seen[N_ISAS]) {
    k_sq_force_isa(NULL);
    k_pool_free(pool);
    printf("%s, paths exercised on this CPU: avx512 %s, avxvnni %s, avx2 %s, portable %s\n", what,
           seen[0] ? "yes" : "no", seen[1] ? "yes" : "no", seen[2] ? "yes" : "no", seen[3] ? "yes" : "no");
    assert_true(seen[3]);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) assert_true(seen[2]);
}

/* Two matrices of n rows on path `isa`: the first alone, then both as one
 * group, each equal to want (the first's m x n, then the second's) bit for bit. */
static void pair_matches(k_pool_t *pool, const char *isa, k_sq_t *const kv[2], const float *x, long m, long n,
                         float *y, const float *want) {
    k_sq_force_isa(isa);
    assert_int_equal(k_sq_matmul(pool, kv[0], x, m, y), 0);
    assert_memory_equal(y, want, (size_t)(m * n) * sizeof *y);
    float *ys[2] = {y, y + m * n};
    memset(y, 0, (size_t)(2 * m * n) * sizeof *y);
    assert_int_equal(k_sq_matmul_group(pool, (const k_sq_t *const *)kv, ys, 2, x, m), 0);
    assert_memory_equal(y, want, (size_t)(2 * m * n) * sizeof *y);
}

static k_sq_t view(const sq_tensor_t *t) {
    return (k_sq_t){t->cfg.h_low, t->cfg.b, t->h, t->G, t->n, t->k, t->lo, t->hi, t->idx, t->s_lo, t->s_hi,
                    NULL, 0, 0, 0, NULL, 0, 0, NULL, 0};
}

/* The kernels' view dequantizes to exactly the tensor's own values (the
 * GPU path uploads these rows for views its SQ kernels do not take). */
static void test_view_dequant_matches_tensor(void **state) {
    (void)state;
    const sq_cfg_t cfgs[] = {{8, 4, 64, 0.875}, {8, 2, 16, 0.75}, {4, 2, 128, 0.9375}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        long n = 7, k = 384;
        float *W = malloc((size_t)(n * k) * sizeof(float)), *a = malloc((size_t)k * 4), *b = malloc((size_t)k * 4);
        for (long i = 0; i < n * k; i++) W[i] = (float)((i * 7919 % 1000) - 500) / 250.0f;
        sq_tensor_t t;
        assert_int_equal(sq_alloc(&t, &cfgs[c], n, k), 0);
        assert_int_equal(sq_quantize(&t, W, NULL, NULL), 0);
        k_sq_t v = view(&t);
        for (long r = 0; r < n; r++) {
            sq_dequant_row(&t, r, a);
            k_sq_dequant_row(&v, r, b);
            assert_memory_equal(a, b, (size_t)k * sizeof(float));
        }
        sq_free(&t);
        free(W), free(a), free(b);
    }
}

/* The scalar reference for y[m][n]: portable quantizer, integer group
 * sums, k_sq_combine. */
static void ref_matmul(const k_sq_t *v, const float *x, long m, float *y) {
    int8_t *qx = malloc((size_t)v->k);
    int32_t lo[64], hi[64];
    k_sq_force_isa("portable");
    for (long i = 0; i < m; i++) {
        float sx = k_quant_row_i8(x + i * v->k, v->k, qx, NULL);
        for (long r = 0; r < v->n; r++) {
            k_sq_group_sums_ref(v, r, qx, lo, hi);
            y[i * v->n + r] = k_sq_combine(v, r, sx, lo, hi);
        }
    }
    free(qx);
}

/* Every path this CPU has (AVX-512 panels, AVX2, portable) gives the
 * reference's floats bit for bit, on fresh random tensors of odd sizes:
 * 37 rows (a ragged 16-row panel), 5/25 groups (3/13 at b128), every
 * supported h, and m = 1, 2, 3, 8, 13 activation rows (every token block
 * of the multi-row kernel), through one matrix and a group of two; with
 * scales that are exact halves (as the quantizer makes them, for .sqm
 * files), which the panels store as halves (k_sq_scales.h), and with one
 * scale one ulp above (not a half: float scales in the panels), the last
 * s_hi of the first matrix and the first s_lo of the second; the test
 * checks that each took its layout. */
static void test_sq_int8_kernel_bit_exact(void **state) {
    (void)state;
    sq_cfg_t cfgs[] = {{8, 4, 64, 0.875}, {8, 4, 64, 0.75}, {8, 4, 64, 0.9375}, {8, 4, 64, 0.5},
                       {8, 4, 16, 0.75},  {8, 4, 32, 0.875}, {8, 4, 16, 0.9375}, {8, 2, 64, 0.875},
                       {8, 3, 64, 0.875}, {4, 2, 128, 0.9375}, {8, 4, 128, 0.875}};
    long ms[] = {1, 2, 3, 8, 13};
    k_pool_t *pool = k_pool_new(2);
    assert_non_null(pool);
    int seen[N_ISAS] = {0};
    for (size_t c = 0; c < 4 * sizeof cfgs / sizeof cfgs[0]; c++) {
        const sq_cfg_t *cfg = &cfgs[c / 4];
        const int halves = (c / 2) % 2;
        long n = 37, k = c % 2 ? 1600 : 320;
        if (cfg->b == 128) k = c % 2 ? 1664 : 384;
        float *w = make_w(2 * n, k), *x = malloc((size_t)(13 * k) * sizeof *x);
        float *y = malloc((size_t)(2 * 13 * n) * sizeof *y), *want = malloc((size_t)(2 * 13 * n) * sizeof *want);
        sq_tensor_t t[2];
        for (int j = 0; j < 2; j++) {
            assert_int_equal(sq_alloc(&t[j], cfg, n, k), 0);
            assert_int_equal(sq_quantize(&t[j], w + j * n * k, NULL, NULL), 0);
            const long ns = n * (k / t[j].G);
            for (long g = 0; g < ns; g++) {
                assert_true(k_f16_to_f32(k_f32_to_f16(t[j].s_lo[g])) == t[j].s_lo[g]);
                assert_true(k_f16_to_f32(k_f32_to_f16(t[j].s_hi[g])) == t[j].s_hi[g]);
            }
            float *s = j ? &t[j].s_lo[0] : &t[j].s_hi[ns - 1];
            if (!halves) *s = nextafterf(*s, INFINITY);
        }
        k_sq_t v0 = view(&t[0]), v1 = view(&t[1]);
        int panels = 0;
        for (size_t p = 0; p < N_ISAS; p++) {
            k_sq_force_isa(ISAS[p]);
            k_sq_t *kv[2] = {k_sq_new(&v0), k_sq_new(&v1)};
            assert_true(kv[0] && kv[1]);
            if (strcmp(k_sq_path(kv[0]), ISAS[p]) != 0) { /* not on this CPU, or not this shape */
                free(kv[0]); free(kv[1]);
                continue;
            }
            seen[p] = 1;
            panels |= p < 3;
            /* half scales in the panels exactly when every scale is a half */
            assert_int_equal(kv[0]->pack_s16, p < 3 && halves);
            assert_int_equal(kv[1]->pack_s16, p < 3 && halves);
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                long m = ms[mi];
                for (long j = 0; j < m * k; j++) x[j] = (float)(nrand() * (urand() < 0.05 ? 20 : 1));
                ref_matmul(&v0, x, m, want);
                ref_matmul(&v1, x, m, want + m * n);
                pair_matches(pool, ISAS[p], kv, x, m, n, y, want);
            }
            free(kv[0]);
            free(kv[1]);
        }
        /* every bank of <= 64 takes the panels, 2- and 3-bit low codes too
         * (widened to nibbles): the portable kernel is 35-49x slower (k_sq.c) */
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && cfg->b <= 64) assert_true(panels);
        /* and the reference itself is the dequantized product */
        float *row = malloc((size_t)k * sizeof *row);
        int8_t *qx = malloc((size_t)k);
        k_sq_force_isa("portable");
        float sx = k_quant_row_i8(x, k, qx, NULL);
        ref_matmul(&v0, x, 1, want);
        for (long r = 0; r < n; r++) {
            sq_dequant_row(&t[0], r, row);
            double d = 0, mag = 0;
            for (long j = 0; j < k; j++) {
                d += (double)row[j] * qx[j] * sx;
                mag += fabs((double)row[j] * qx[j] * sx);
            }
            assert_true(fabs(want[r] - d) <= 1e-5 * mag + 1e-6);
        }
        free(row); free(qx);
        sq_free(&t[0]); sq_free(&t[1]);
        free(w); free(x); free(y); free(want);
    }
    paths_done(pool, "SQ x INT8 kernel", seen);
}

/* Uniform integer weights (W8A8, W4A8 baselines) through the same
 * kernels: every path bit for bit against the reference, and the reference
 * against the plain combine y = sx * sum_g (s[g] * isum[g]). Sizes as
 * above; per-group (32: portable only, 64, 128) and per-channel. */
static void test_int_weights_int8_kernel_bit_exact(void **state) {
    (void)state;
    int bits_list[] = {4, 8, 3};
    long ms[] = {1, 3, 8, 13};
    k_pool_t *pool = k_pool_new(2);
    assert_non_null(pool);
    int seen[N_ISAS] = {0};
    for (size_t bi = 0; bi < 3; bi++)
        for (int kk = 0; kk < 2; kk++) {
            long n = 37, k = kk ? 1600 : 320, gs[] = {64, 128, k, 32};
            int q = (1 << (bits_list[bi] - 1)) - 1;
            for (size_t gi = 0; gi < 4; gi++) {
                long g = gs[gi];
                if (k % g) continue;
                int8_t *codes = malloc((size_t)(n * k)), *qx = malloc((size_t)k);
                float *sc = malloc((size_t)(n * (k / g)) * sizeof *sc), *x = malloc((size_t)(13 * k) * sizeof *x);
                float *y = malloc((size_t)(13 * n) * sizeof *y), *want = malloc((size_t)(13 * n) * sizeof *want);
                for (long j = 0; j < n * k; j++) codes[j] = (int8_t)((long)(urand() * (2 * q + 1)) - q);
                for (long j = 0; j < n * (k / g); j++) sc[j] = (float)(urand() * 0.01);
                k_sq_force_isa("portable");
                k_sq_t *ref = k_sq_new_int(codes, sc, n, k, bits_list[bi], g);
                assert_non_null(ref);
                for (long j = 0; j < 13 * k; j++) x[j] = (float)(nrand() * (urand() < 0.05 ? 20 : 1));
                /* the reference is the combine without highs */
                int32_t lo[64], hi[64];
                float sx = k_quant_row_i8(x, k, qx, NULL);
                for (long r = 0; r < n; r++) {
                    k_sq_group_sums_ref(ref, r, qx, lo, hi);
                    float acc = 0;
                    for (long gg = 0; gg < k / g; gg++) {
                        int32_t t = 0;
                        for (long j = gg * g; j < (gg + 1) * g; j++) t += codes[r * k + j] * qx[j];
                        assert_int_equal(t, lo[gg]);
                        assert_int_equal(hi[gg], 0);
                        acc += sc[r * (k / g) + gg] * (float)t;
                    }
                    float got = k_sq_combine(ref, r, sx, lo, hi), plain = acc * sx;
                    assert_memory_equal(&got, &plain, sizeof got);
                }
                for (size_t p = 0; p < N_ISAS; p++) {
                    k_sq_force_isa(ISAS[p]);
                    k_sq_t *v = k_sq_new_int(codes, sc, n, k, bits_list[bi], g);
                    assert_non_null(v);
                    if (strcmp(k_sq_path(v), ISAS[p]) != 0) {
                        free(v);
                        continue;
                    }
                    seen[p] = 1;
                    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                        long m = ms[mi];
                        ref_matmul(ref, x, m, want);
                        k_sq_force_isa(ISAS[p]);
                        assert_int_equal(k_sq_matmul(pool, v, x, m, y), 0);
                        assert_memory_equal(y, want, (size_t)(m * n) * sizeof *y);
                    }
                    free(v);
                }
                free(ref); free(codes); free(qx); free(sc); free(x); free(y); free(want);
            }
        }
    paths_done(pool, "int weights x INT8 kernel", seen);
}

/* Static SQ activations (high channels 8-bit, low 4-bit, one scale each)
 * on int4 g64, int8 g64 (AVX-512: permuted panels, one pass per token)
 * and SQ 8/4 weights (two rows per token): every path bit for bit against
 *     y = combine(H, sx_hi) + combine(L, sx_lo)
 * with H, L the reference group sums of the high-only and low-only codes,
 * single and grouped; the quantizer against the fake-quant formula of
 * engine/quant.c. */
static void test_static_sq_acts_bit_exact(void **state) {
    (void)state;
    long ms[] = {1, 3, 8};
    /* 8, 16 and 4 high channels per 64: hb = 4 splits a 4-bit chunk (A high, B low) */
    sq_cfg_t acfgs[] = {{8, 4, 64, 0.875}, {8, 4, 16, 0.75}, {8, 4, 64, 0.9375}};
    k_pool_t *pool = k_pool_new(2);
    assert_non_null(pool);
    int seen[N_ISAS] = {0};
    for (int wk = 0; wk < 3; wk++) /* int4 g64, SQ 8/4, int8 g64 weights */
        for (size_t ac = 0; ac < sizeof acfgs / sizeof acfgs[0]; ac++) {
            long n = 37, k = 320;
            int hpb = sq_highs_per_bank(&acfgs[ac]), b = acfgs[ac].b;
            uint8_t *mask = calloc((size_t)k, 1);
            for (long j0 = 0; j0 < k; j0 += b) /* h distinct random channels per bank */
                for (int c = 0; c < hpb;) {
                    long j = j0 + (long)(urand() * b);
                    if (!mask[j]) { mask[j] = 1; c++; }
                }
            float *w = make_w(2 * n, k), *x = malloc((size_t)(8 * k) * sizeof *x);
            float *y = malloc((size_t)(2 * 8 * n) * sizeof *y), *want = malloc((size_t)(2 * 8 * n) * sizeof *want);
            sq_tensor_t t[2];
            int8_t *codes = malloc((size_t)(2 * n * k));
            float *sc = malloc((size_t)(2 * n * (k / 64)) * sizeof *sc);
            k_sq_t views[2];
            for (int j = 0; j < 2; j++) {
                if (wk == 1) {
                    sq_cfg_t c = {8, 4, 64, 0.875};
                    assert_int_equal(sq_alloc(&t[j], &c, n, k), 0);
                    assert_int_equal(sq_quantize(&t[j], w + j * n * k, NULL, NULL), 0);
                    views[j] = view(&t[j]);
                } else {
                    (void)uq_quantize_codes(w + j * n * k, n, k, wk ? 8 : 4, 64, NULL, codes + j * n * k,
                                      sc + j * n * (k / 64));
                }
            }
            int8_t *qh = malloc((size_t)k), *ql = malloc((size_t)k);
            for (size_t p = 0; p < N_ISAS; p++) {
                k_sq_force_isa(ISAS[p]);
                k_sq_t *kv[2];
                for (int j = 0; j < 2; j++) {
                    kv[j] = wk == 1 ? k_sq_new(&views[j])
                                    : k_sq_new_int(codes + j * n * k, sc + j * n * (k / 64), n, k, wk ? 8 : 4, 64);
                    assert_non_null(kv[j]);
                    k_sq_static_acts(kv[j], mask, 8, 4);
                    /* int weights on panels (either ISA): the permuted single-pass kernel */
                    if (wk != 1 && !strcmp(k_sq_path(kv[j]), ISAS[p]) && p < 3) assert_true(kv[j]->split > 0);
                }
                if (strcmp(k_sq_path(kv[0]), ISAS[p]) != 0) {
                    free(kv[0]); free(kv[1]);
                    continue;
                }
                seen[p] = 1;
                for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                    long m = ms[mi];
                    for (long j = 0; j < m * k; j++) x[j] = (float)(nrand() * (urand() < 0.05 ? 20 : 1));
                    for (int v = 0; v < 2; v++)
                        for (long i = 0; i < m; i++) {
                            float sx[2];
                            int32_t lo[8], hi[8];
                            k_quant_row_static(x + i * k, k, mask, 8, 4, qh, ql, sx);
                            for (long j = 0; j < k; j++) { /* the fake-quant of engine/quant.c */
                                float s = mask[j] ? sx[0] : sx[1], q = mask[j] ? 127.0f : 7.0f;
                                float e = s > 0 ? fminf(fmaxf(nearbyintf(x[i * k + j] / s), -q), q) : 0;
                                assert_true((float)(mask[j] ? qh[j] : ql[j]) == e);
                                assert_int_equal(mask[j] ? ql[j] : qh[j], 0);
                            }
                            for (long r = 0; r < n; r++) {
                                k_sq_group_sums_ref(kv[v], r, qh, lo, hi);
                                float yh = k_sq_combine(kv[v], r, sx[0], lo, hi);
                                k_sq_group_sums_ref(kv[v], r, ql, lo, hi);
                                want[(v * m + i) * n + r] = yh + k_sq_combine(kv[v], r, sx[1], lo, hi);
                            }
                        }
                    pair_matches(pool, ISAS[p], kv, x, m, n, y, want);
                }
                free(kv[0]); free(kv[1]);
            }
            if (wk == 1) { sq_free(&t[0]); sq_free(&t[1]); }
            free(mask); free(w); free(x); free(y); free(want); free(codes); free(sc); free(qh); free(ql);
        }
    paths_done(pool, "static SQ activations", seen);
}

/* The AVX-512 and AVX2 quantizers give the portable one's codes, scale
 * and group sums exactly (k = 96: AVX2 with no 64-sums, k = 48: portable
 * on AVX2). */
static void test_quant_row_i8_paths(void **state) {
    (void)state;
    long ks[] = {64, 576, 1600, 48, 96};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        long k = ks[i];
        float *x = malloc((size_t)k * sizeof *x);
        int8_t *q1 = malloc((size_t)k), *q2 = malloc((size_t)k);
        int32_t s1[32] = {0}, s2[32] = {0};
        for (int trial = 0; trial < 20; trial++) {
            for (long j = 0; j < k; j++) x[j] = (float)(nrand() * (urand() < 0.05 ? 20 : 1));
            if (trial == 0) memset(x, 0, (size_t)k * sizeof *x);
            k_sq_force_isa("portable");
            float a = k_quant_row_i8(x, k, q1, k % 64 ? NULL : s1);
            for (int p = 0; p < 2; p++) {
                k_sq_force_isa(p ? "avx2" : NULL);
                memset(s2, 0, sizeof s2);
                float b = k_quant_row_i8(x, k, q2, k % 64 ? NULL : s2);
                assert_memory_equal(&a, &b, sizeof a);
                assert_memory_equal(q1, q2, (size_t)k);
                assert_memory_equal(s1, s2, sizeof s1);
            }
        }
        k_sq_force_isa(NULL);
        free(x); free(q1); free(q2);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_dequant_matches_tensor),
        cmocka_unit_test(test_sq_int8_kernel_bit_exact),
        cmocka_unit_test(test_int_weights_int8_kernel_bit_exact),
        cmocka_unit_test(test_static_sq_acts_bit_exact),
        cmocka_unit_test(test_quant_row_i8_paths),
    };
    return cmocka_run_group_tests_name("sq kernels", tests, NULL, NULL);
}
