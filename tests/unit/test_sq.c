/* test_sq.c - SQ-format invariants, quantizer error bounds, GPTQ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/gptq.h"
#include "../../engine/recipe.h"
#include "../../engine/sq.h"
#include "../../kernels/k_sq.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* xorshift64, fixed seed */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* Weights with a few large outliers per row, like real layers. */
static float *make_w(long n, long k) {
    float *w = malloc((size_t)(n * k) * sizeof *w);
    for (long i = 0; i < n * k; i++) w[i] = (float)(nrand() * (urand() < 0.02 ? 8 : 1));
    return w;
}

static void test_format_invariants(void **state) {
    (void)state;
    sq_cfg_t cfgs[] = {{8, 4, 64, 0.875}, {8, 2, 16, 0.75}, {4, 2, 128, 0.9375}, {8, 4, 32, 0.5},
                       {8, 3, 64, 0.875}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        long n = 7, k = 256;
        float *w = make_w(n, k), *orig = malloc((size_t)(n * k) * sizeof *orig), row[256];
        memcpy(orig, w, (size_t)(n * k) * sizeof *w);
        sq_tensor_t t;
        assert_null(sq_cfg_check(&cfgs[c], k));
        assert_int_equal(sq_alloc(&t, &cfgs[c], n, k), 0);
        assert_int_equal(sq_quantize(&t, w, NULL, NULL), 0);
        assert_null(sq_validate(&t));
        int h = sq_highs_per_bank(&cfgs[c]);
        int ql = (1 << (cfgs[c].h_low - 1)) - 1, qh = (1 << (cfgs[c].h_high - 1)) - 1;
        for (long r = 0; r < n; r++) {
            sq_dequant_row(&t, r, row);
            for (long j = 0; j < k; j++) {
                /* RTN writes the same values into w that the format stores */
                assert_float_equal(row[j], w[r * k + j], 1e-6);
                /* error bound per element class: half a step of its scale */
                long bank = j / cfgs[c].b, g = j / t.G;
                int high = 0;
                for (int i = 0; i < h; i++)
                    if (bank * cfgs[c].b + t.idx[(r * (k / cfgs[c].b) + bank) * h + i] == j) high = 1;
                float step = high ? t.s_hi[r * (k / t.G) + g] : t.s_lo[r * (k / t.G) + g];
                assert_true(fabsf(row[j] - orig[r * k + j]) <= 0.5f * step * (1 + 1e-5f) + 1e-7f);
                (void)ql; (void)qh;
            }
            /* RTN importance = magnitude: every high beats every low of its bank */
            for (long b0 = 0; b0 < k; b0 += cfgs[c].b) {
                float min_hi = INFINITY, max_lo = 0;
                const uint8_t *ix = t.idx + (r * (k / cfgs[c].b) + b0 / cfgs[c].b) * h;
                for (int j = 0; j < cfgs[c].b; j++) {
                    int is_hi = 0;
                    for (int i = 0; i < h; i++) is_hi |= ix[i] == j;
                    float a = fabsf(orig[r * k + b0 + j]);
                    if (is_hi) min_hi = fminf(min_hi, a);
                    else max_lo = fmaxf(max_lo, a);
                }
                assert_true(min_hi >= max_lo);
            }
        }
        /* a corrupted tensor is caught */
        t.idx[1] = t.idx[0];
        assert_non_null(sq_validate(&t));
        sq_free(&t);
        free(w);
        free(orig);
    }
}

static void test_bits_and_recipes(void **state) {
    (void)state;
    sq_cfg_t c = {8, 4, 64, 0.875};
    assert_float_equal(sq_bits_per_element(&c), 6.5, 1e-12);
    c = (sq_cfg_t){8, 2, 64, 0.875};
    assert_float_equal(sq_bits_per_element(&c), 4.5, 1e-12);
    wrecipe_t w;
    arecipe_t a;
    char err[256];
    assert_int_equal(recipe_parse_w("sq:8/4:b64:s0.875:gptq", &w, err, sizeof err), 0);
    assert_int_equal(w.kind, WQ_SQ);
    assert_true(w.gptq && w.sq.b == 64 && w.sq.h_low == 4);
    assert_int_equal(recipe_parse_w("int4:g64", &w, err, sizeof err), 0);
    assert_true(w.kind == WQ_INT && w.bits == 4 && w.group == 64 && !w.gptq);
    /* per-channel GPTQ: ":gptq" must not be read as a group size (a bug the grid found) */
    assert_int_equal(recipe_parse_w("int8:gptq", &w, err, sizeof err), 0);
    assert_true(w.kind == WQ_INT && w.bits == 8 && w.group == 0 && w.gptq);
    assert_int_equal(recipe_parse_a("sq:8/4:b16:s0.75:dynamic", &a, err, sizeof err), 0);
    assert_int_equal(a.kind, AQ_SQ_DYNAMIC);
    const char *bad[] = {"sq:8/4:b63:s0.875", "sq:8/5:b64:s0.875", "sq:8/4:b64:s0.3", "int9",
                         "int4:g0", "int4:g64:foo", "int4:gx", "int8:gptqq", "sq:8/4:b16:s0.9", "float"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(recipe_parse_w(bad[i], &w, err, sizeof err), -1);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:sometimes", &a, err, sizeof err), -1);
}

/* ||X (W - Wq)^T||^2 over calibration rows X[m][k]. */
static double out_err(const float *X, long m, const float *W, const float *Wq, long n, long k) {
    double e = 0;
    for (long i = 0; i < m; i++)
        for (long r = 0; r < n; r++) {
            double d = 0;
            for (long j = 0; j < k; j++) d += (double)X[i * k + j] * (W[r * k + j] - Wq[r * k + j]);
            e += d * d;
        }
    return e;
}

static void test_gptq_beats_rtn(void **state) {
    (void)state;
    long n = 48, k = 128, m = 512;
    /* correlated inputs with uneven channel scales: where GPTQ helps */
    float *X = malloc((size_t)(m * k) * sizeof *X);
    for (long i = 0; i < m; i++) {
        double common = nrand();
        for (long j = 0; j < k; j++)
            X[i * k + j] = (float)((0.7 * common + nrand()) * (1 + 3 * (j % 7 == 0)));
    }
    double *H = calloc((size_t)(k * k), sizeof *H);
    for (long i = 0; i < m; i++)
        for (long a = 0; a < k; a++)
            for (long b = 0; b < k; b++) H[a * k + b] += (double)X[i * k + a] * X[i * k + b];
    double *diag, *U;
    assert_int_equal(gptq_prepare(H, k, 0.01, &diag, &U), 0);
    float *W = make_w(n, k), *Wr = malloc((size_t)(n * k) * sizeof *Wr),
          *Wg = malloc((size_t)(n * k) * sizeof *Wg);
    /* uniform int4 per group of 64 */
    memcpy(Wr, W, (size_t)(n * k) * sizeof *W);
    memcpy(Wg, W, (size_t)(n * k) * sizeof *W);
    uq_quantize(Wr, n, k, 4, 64, NULL);
    uq_quantize(Wg, n, k, 4, 64, U);
    double e_rtn = out_err(X, m, W, Wr, n, k), e_gptq = out_err(X, m, W, Wg, n, k);
    printf("int4 g64: output error RTN %.4g, GPTQ %.4g (%.2fx lower)\n", e_rtn, e_gptq, e_rtn / e_gptq);
    assert_true(e_gptq < 0.8 * e_rtn);
    /* SQ 8/2: Hessian-aware choice + error compensation vs magnitude RTN */
    sq_cfg_t c = {8, 2, 64, 0.875};
    sq_tensor_t t1, t2;
    memcpy(Wr, W, (size_t)(n * k) * sizeof *W);
    memcpy(Wg, W, (size_t)(n * k) * sizeof *W);
    assert_int_equal(sq_alloc(&t1, &c, n, k), 0);
    assert_int_equal(sq_alloc(&t2, &c, n, k), 0);
    assert_int_equal(sq_quantize(&t1, Wr, NULL, NULL), 0);
    assert_int_equal(sq_quantize(&t2, Wg, diag, U), 0);
    assert_null(sq_validate(&t2));
    for (long r = 0; r < n; r++) sq_dequant_row(&t2, r, Wg + r * k); /* the stored format */
    e_rtn = out_err(X, m, W, Wr, n, k);
    e_gptq = out_err(X, m, W, Wg, n, k);
    printf("SQ 8/2 b64 s0.875: output error RTN %.4g, GPTQ %.4g (%.2fx lower)\n", e_rtn, e_gptq,
           e_rtn / e_gptq);
    assert_true(e_gptq < 0.8 * e_rtn);
    sq_free(&t1); sq_free(&t2);
    free(X); free(H); free(diag); free(U); free(W); free(Wr); free(Wg);
}

static k_sq_t view(const sq_tensor_t *t) {
    return (k_sq_t){t->cfg.h_low, t->cfg.b, t->h, t->G, t->n, t->k, t->lo, t->hi, t->idx, t->s_lo, t->s_hi};
}

/* Every SIMD path gives the portable path's integers exactly, on fresh
 * random inputs of odd sizes; the float result matches the dequantized
 * product. */
static void test_sq_int8_kernel_bit_exact(void **state) {
    (void)state;
    sq_cfg_t cfgs[] = {{8, 4, 64, 0.875}, {8, 4, 64, 0.75}, {8, 4, 64, 0.9375}, {8, 4, 16, 0.75},
                       {8, 2, 64, 0.875}, {4, 2, 128, 0.9375}};
    int simd_seen = 0;
    for (size_t c = 0; c < 2 * sizeof cfgs / sizeof cfgs[0]; c++) {
        /* odd row counts; 5 and 25 groups of 64 (the SIMD path works in 8s) */
        long n = 37, k = c % 2 ? 1600 : 320;
        if (cfgs[c / 2].b == 128) k = c % 2 ? 1664 : 384;
        float *w = make_w(n, k), *x = malloc((size_t)k * sizeof *x), *row = malloc((size_t)k * sizeof *row);
        sq_tensor_t t;
        assert_int_equal(sq_alloc(&t, &cfgs[c / 2], n, k), 0);
        assert_int_equal(sq_quantize(&t, w, NULL, NULL), 0);
        for (int trial = 0; trial < 3; trial++) {
            for (long j = 0; j < k; j++) x[j] = (float)(nrand() * (urand() < 0.05 ? 20 : 1));
            int8_t *qx = malloc((size_t)k);
            int32_t xs[32], lo1[32], hi1[32], lo2[32], hi2[32];
            float sx = k_quant_row_i8(x, k, qx, xs);
            k_sq_t v = view(&t);
            simd_seen |= k_sq_simd(&v);
            for (long r = 0; r < n; r++) {
                k_sq_group_sums_ref(&v, r, qx, lo1, hi1);
                k_sq_group_sums(&v, r, qx, xs, lo2, hi2);
                assert_memory_equal(lo1, lo2, (size_t)(k / t.G) * sizeof(int32_t));
                assert_memory_equal(hi1, hi2, (size_t)(k / t.G) * sizeof(int32_t));
                float y = k_sq_combine(&v, r, sx, lo2, hi2);
                sq_dequant_row(&t, r, row);
                double want = 0, mag = 0;
                for (long j = 0; j < k; j++) {
                    want += (double)row[j] * qx[j] * sx;
                    mag += fabs((double)row[j] * qx[j] * sx);
                }
                assert_true(fabs(y - want) <= 1e-5 * mag + 1e-6);
            }
            free(qx);
        }
        sq_free(&t);
        free(w); free(x); free(row);
    }
    printf("SQ x INT8 kernel: SIMD path %s on this CPU\n", simd_seen ? "exercised" : "not available");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sq_int8_kernel_bit_exact),
        cmocka_unit_test(test_format_invariants),
        cmocka_unit_test(test_bits_and_recipes),
        cmocka_unit_test(test_gptq_beats_rtn),
    };
    return cmocka_run_group_tests_name("sq", tests, NULL, NULL);
}
