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

#include "../../engine/quant/gptq.h"
#include "../../engine/compute/act_quant.h"
#include "../../engine/quant/quant.h"
#include "../../engine/model/recipe.h"
#include "../../engine/model/sq.h"
#include "../../engine/quant/sq_quant.h"
#include "../../kernels/k_pool.h"
#include "../../kernels/k_quant.h"
#include "../../kernels/k_sq.h"

#include "sq_test_rand.h"

/* Integer bank scales (":iscale"): every weight an INT8 value times its
 * row's scale, halves all (the file stores them), codes within half a step
 * of the weight except where the row's step caps a group's scale. */
static void test_iscale_structure(void **state) {
    (void)state;
    sq_cfg_t cfgs[] = {{8, 4, 64, 0.875}, {8, 3, 64, 0.875}, {8, 2, 16, 0.75}, {8, 4, 128, 0.9375}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        long n = 9, k = 512;
        float *w = make_w(n, k), *orig = malloc((size_t)(n * k) * sizeof *orig), row[512];
        for (long j = 0; j < k; j++) w[2 * k + j] = 0;            /* a zero row */
        for (long j = 0; j < 128; j++) w[3 * k + j] *= 1e-3f;     /* quiet groups: k_g of 1 */
        w[4 * k + 7] = 60.0f;                                    /* one huge outlier: low scales cap */
        memcpy(orig, w, (size_t)(n * k) * sizeof *w);
        sq_tensor_t t;
        assert_int_equal(sq_alloc(&t, &cfgs[c], n, k), 0);
        assert_int_equal(sq_quantize_opt(&t, w, NULL, NULL, NULL, SQ_Q_ISCALE), 0);
        assert_null(sq_validate(&t));
        assert_true(sq_is_iscale(&t));
        const long ng = k / t.G;
        const int kmax = sq_iscale_kmax(&cfgs[c]), ql = sq_qmax(cfgs[c].h_low);
        assert_int_equal(kmax, 127 / ql);
        int kbits = 0;
        for (int v = kmax; v; v >>= 1) kbits++;
        const float up = 1.0f + ldexpf(1.0f, 1 - (11 - kbits)); /* s_r's rounding up: 11 - kbits significant bits */
        for (long r = 0; r < n; r++) {
            float amax = 0;
            for (long j = 0; j < k; j++) amax = fmaxf(amax, fabsf(orig[r * k + j]));
            const float sr = t.s_hi[r * ng];
            assert_true(sr >= amax / 127.0f && (amax == 0 || sr <= amax / 127.0f * up));
            assert_true(sr == sq_scale_up_to_half(sr)); /* a half */
            sq_dequant_row(&t, r, row);
            for (long g = 0; g < ng; g++) {
                const float sl = t.s_lo[r * ng + g];
                assert_true(sl == sq_scale_up_to_half(sl));
                const float kg = sr > 0 ? sl / sr : 0;
                assert_true(kg == nearbyintf(kg) && kg >= 0 && kg <= kmax);
                for (long j = g * t.G; j < (g + 1) * t.G; j++) {
                    /* the value an INT8 matmul multiplies: |w / s_r| an integer <= 127 */
                    const float q = sr > 0 ? row[j] / sr : 0;
                    assert_true(q == nearbyintf(q) && fabsf(q) <= 127);
                    if (kg < kmax) assert_true(fabsf(row[j] - orig[r * k + j]) <= 0.5f * fmaxf(sl, sr) * 1.0001f);
                }
            }
        }
        /* the file keeps them exactly */
        sq_file_sizes_t z = sq_file_sizes(&cfgs[c], n, k);
        uint8_t *codes = malloc(z.codes), *hi = malloc(z.hi + 1);
        uint16_t *s1 = malloc(z.scales), *s2 = malloc(z.scales);
        assert_int_equal(sq_encode(&t, codes, hi, s1, s2), 0);
        sq_tensor_t u;
        assert_int_equal(sq_alloc(&u, &t.cfg, n, k), 0);
        assert_null(sq_decode(&u, codes, hi, s1, s2));
        assert_true(sq_is_iscale(&u));
        /* a tensor of free half scales is not taken for one */
        sq_tensor_t v;
        memcpy(w, orig, (size_t)(n * k) * sizeof *w);
        assert_int_equal(sq_alloc(&v, &cfgs[c], n, k), 0);
        assert_int_equal(sq_quantize(&v, w, NULL, NULL), 0);
        assert_false(sq_is_iscale(&v));
        sq_free(&t), sq_free(&u), sq_free(&v);
        free(codes), free(hi), free(s1), free(s2), free(w), free(orig);
    }
    /* 4-bit highs have no INT8 row scale */
    sq_cfg_t c42 = {4, 2, 64, 0.875};
    assert_non_null(sq_iscale_check(&c42));
    sq_tensor_t t;
    float *w = make_w(2, 64);
    assert_int_equal(sq_alloc(&t, &c42, 2, 64), 0);
    assert_int_equal(sq_quantize_opt(&t, w, NULL, NULL, NULL, SQ_Q_ISCALE), -1);
    sq_free(&t), free(w);
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

/* The stored (compact) layout: every configuration round-trips exactly
 * through its bytes (sizes as sq_file_sizes says), scales are halves, and
 * a bank with a marker too many or too few is refused. */
static void test_compact_layout_round_trip(void **state) {
    (void)state;
    sq_cfg_t cfgs[] = {{8, 4, 64, 0.875}, {8, 2, 16, 0.75}, {4, 2, 128, 0.9375}, {8, 4, 32, 0.5},
                       {8, 3, 64, 0.875}, {4, 2, 32, 0.75}, {4, 2, 64, 0.984375}};
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        /* {4, 2, 64, 0.984375} on 5 x 192: 15 banks of one 4-bit high, an odd nibble count */
        long n = 5, k = cfgs[c].b == 128 ? 256 : 192;
        float *w = make_w(n, k);
        sq_tensor_t t, u;
        assert_int_equal(sq_alloc(&t, &cfgs[c], n, k), 0);
        assert_int_equal(sq_quantize(&t, w, NULL, NULL), 0);
        sq_file_sizes_t z = sq_file_sizes(&cfgs[c], n, k);
        assert_true(fabs(8.0 * (double)(z.codes + z.hi + 2 * z.scales) / (double)(n * k) -
                         sq_bits_per_element(&cfgs[c])) <= 8.0 / (double)(n * k)); /* a padding byte at most */
        uint8_t *codes = malloc(z.codes), *hi = malloc(z.hi);
        uint16_t *s_lo = malloc(z.scales), *s_hi = malloc(z.scales);
        assert_int_equal(sq_encode(&t, codes, hi, s_lo, s_hi), 0);
        assert_int_equal(sq_alloc(&u, &cfgs[c], n, k), 0);
        assert_null(sq_decode(&u, codes, hi, s_lo, s_hi));
        assert_null(sq_validate(&u));
        size_t lo_bytes = (size_t)(n * k) * (cfgs[c].h_low <= 2 ? 2 : 4) / 8;
        size_t banks = (size_t)(n * (k / cfgs[c].b) * t.h), groups = (size_t)(n * (k / t.G));
        assert_memory_equal(u.lo, t.lo, lo_bytes);
        assert_memory_equal(u.hi, t.hi, banks);
        assert_memory_equal(u.idx, t.idx, banks);
        assert_memory_equal(u.s_lo, t.s_lo, groups * sizeof(float));
        assert_memory_equal(u.s_hi, t.s_hi, groups * sizeof(float));
        /* a low code at a low position turned into the marker: one high too many */
        int lob = cfgs[c].h_low <= 2 ? 2 : 4, at = 0;
        for (int q = 0; q < t.h; q++) /* a low position of bank 0 (idx is sorted) */
            if (t.idx[q] == at) at++;
        uint8_t save = codes[at * lob / 8];
        codes[at * lob / 8] = (uint8_t)((codes[at * lob / 8] & ~(((1u << lob) - 1) << (at * lob % 8))) |
                                        ((1u << (lob - 1)) << (at * lob % 8)));
        assert_string_equal(sq_decode(&u, codes, hi, s_lo, s_hi),
                            "a bank has more high positions than the configuration allows");
        codes[at * lob / 8] = save;
        /* a marker cleared: one high too few */
        int hp = t.idx[0];
        codes[hp * lob / 8] &= (uint8_t)~(((1u << lob) - 1) << (hp * lob % 8));
        assert_string_equal(sq_decode(&u, codes, hi, s_lo, s_hi),
                            "a bank has fewer high positions than the configuration requires");
        /* a float scale that is not a half cannot be stored */
        t.s_lo[0] = nextafterf(t.s_lo[0] > 0 ? t.s_lo[0] : 1.0f, 10.0f);
        assert_int_equal(sq_encode(&t, codes, hi, s_lo, s_hi), -1);
        free(codes); free(hi); free(s_lo); free(s_hi);
        sq_free(&t);
        sq_free(&u);
        free(w);
    }
    /* rounding up to a half never lowers a scale and lands on a half */
    float xs[] = {1e-3f, 0.0123456f, 1.0f, 3.14159f, 6e-8f, 0};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        float h = sq_scale_up_to_half(xs[i]);
        assert_true(h >= xs[i] && h <= xs[i] * 1.001f + 6e-8f);
    }
}

static void test_bits_and_recipes(void **state) {
    (void)state;
    sq_cfg_t c = {8, 4, 64, 0.875};
    assert_float_equal(sq_bits_per_element(&c), 5.5, 1e-12);   /* stored: implicit mask, half scales */
    assert_float_equal(sq_bits_in_memory(&c), 7.0, 1e-12);     /* explicit positions, float scales */
    c = (sq_cfg_t){8, 2, 64, 0.875};
    assert_float_equal(sq_bits_per_element(&c), 3.5, 1e-12);
    assert_float_equal(sq_bits_in_memory(&c), 5.0, 1e-12);
    c = (sq_cfg_t){4, 2, 32, 0.75}; /* 4-bit highs two per byte, G = 64 */
    assert_float_equal(sq_bits_per_element(&c), 2 + 0.25 * 4 + 0.5, 1e-12);
    c = (sq_cfg_t){8, 4, 128, 0.875}; /* G = 128 */
    assert_float_equal(sq_bits_per_element(&c), 5.25, 1e-12);
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
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:static", &a, err, sizeof err), 0);
    assert_true(a.kind == AQ_SQ_STATIC && !a.by_max);
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:static-max", &a, err, sizeof err), 0);
    assert_true(a.kind == AQ_SQ_STATIC && a.by_max);
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:sometimes", &a, err, sizeof err), -1);
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:static-maxx", &a, err, sizeof err), -1);
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:dynamic-max", &a, err, sizeof err), -1);
    /* ":bank" (a low-part scale per bank) on static ones only; it costs 32 / b bits */
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:static:bank", &a, err, sizeof err), 0);
    assert_true(a.kind == AQ_SQ_STATIC && !a.by_max && a.bank_lo);
    assert_float_equal(recipe_a_bits(&a), 0.125 * 8 + 0.875 * 4 + 0.5, 1e-12);
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:static-max:bank:smooth", &a, err, sizeof err), 0);
    assert_true(a.kind == AQ_SQ_STATIC && a.by_max && a.bank_lo && a.smooth);
    const char *bad_a[] = {"sq:8/4:b64:s0.875:dynamic:bank", "sq:8/4:b64:s0.875:bank", "sq:8/4:b64:s0.875:static:bank:bank",
                           "int8:bank", "sq:8/4:b64:s0.875:bank:static"};
    for (size_t i = 0; i < sizeof bad_a / sizeof bad_a[0]; i++) {
        err[0] = 0;
        assert_int_equal(recipe_parse_a(bad_a[i], &a, err, sizeof err), -1);
        assert_non_null(strstr(err, ":bank"));
    }
}

/* A bank that does not divide a row falls back to the largest smaller one
 * that does (SmolLM2's 576 = 4.5 x 128), never to one breaking (1-s)*b. */
static void test_bank_fit(void **state) {
    (void)state;
    struct { int b; double s; long k; int grouped, want; } cases[] = {
        {128, 0.875, 576, 1, 64}, {128, 0.875, 1536, 1, 128}, {128, 0.9375, 576, 1, 64}, {64, 0.875, 576, 1, 64},
        {16, 0.9375, 576, 1, 16}, {128, 0.75, 192, 1, 64}, {128, 0.875, 100, 1, 0}, {64, 0.875, 96, 1, 0},
        /* activations need whole banks only, not whole 64-wide scale groups */
        {64, 0.875, 96, 0, 32}, {16, 0.875, 96, 0, 16}, {128, 0.875, 100, 0, 0}, {16, 0.9375, 48, 0, 16},
        {16, 0.9375, 40, 0, 0}, /* b8 would divide 40 but hold half a high element */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sq_cfg_t c = {8, 4, cases[i].b, cases[i].s}, fit = {0, 0, 0, 0};
        const char *why = sq_cfg_fit(&c, cases[i].k, cases[i].grouped, &fit);
        if (!cases[i].want) {
            assert_non_null(why);
            continue;
        }
        assert_null(why);
        assert_int_equal(fit.b, cases[i].want);
        assert_true(fit.h_high == 8 && fit.h_low == 4 && fit.s == cases[i].s);
        assert_null(sq_cfg_check(&fit, cases[i].grouped ? cases[i].k : 0));
        assert_int_equal(cases[i].k % fit.b, 0);
    }
    sq_cfg_t bad = {8, 4, 256, 0.875}, out;
    assert_non_null(sq_cfg_fit(&bad, 1024, 1, &out)); /* an invalid recipe never shrinks into a valid one */
    /* the model-level check: both activation widths must take a bank */
    hparams_t hp = {.dim = 64, .ffn_dim = 96};
    arecipe_t a = {.kind = AQ_SQ_DYNAMIC, .sq = {8, 4, 64, 0.875}};
    char err[256];
    assert_int_equal(recipe_check_acts(&a, hp.dim, hp.ffn_dim, err, sizeof err), 0);
    hp.ffn_dim = 100;
    assert_int_equal(recipe_check_acts(&a, hp.dim, hp.ffn_dim, err, sizeof err), -1);
    assert_non_null(strstr(err, "100 channels"));
    /* bits follow the bank each row takes: b64 on 576 rows, b128 on 1536 */
    wrecipe_t w = {.kind = WQ_SQ, .sq = {8, 4, 128, 0.875}};
    sq_cfg_t b64 = {8, 4, 64, 0.875}, b128 = w.sq;
    assert_float_equal(recipe_w_bits(&w, 576), sq_bits_per_element(&b64), 1e-12);
    assert_float_equal(recipe_w_bits(&w, 1536), sq_bits_per_element(&b128), 1e-12);
}

static int by_abs_desc(const void *a, const void *b) {
    float x = fabsf(**(const float *const *)a), y = fabsf(**(const float *const *)b);
    if (x != y) return x < y ? 1 : -1;
    return *(const float *const *)a < *(const float *const *)b ? -1 : 1; /* ties: lower index */
}

/* Dynamic SQ activations through the forward hook, against a reference by
 * sorting: per bank the h largest |x| take h_high bits, the rest h_low,
 * one absmax scale per class per token. Widths beyond 8192 (Llama-3-8B's
 * FFN is 14336) once overflowed a fixed mask buffer. */
static void test_dynamic_act_hook(void **state) {
    (void)state;
    struct { long dim; int b; double s; int fit_b; } cases[] = {
        {576, 128, 0.875, 64}, {1536, 128, 0.9375, 128}, {576, 16, 0.75, 16}, {14336, 64, 0.875, 64},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        long dim = cases[ci].dim, n = 3;
        int b = cases[ci].fit_b;
        act_quant_t qs;
        memset(&qs, 0, sizeof qs);
        qs.a = (arecipe_t){.kind = AQ_SQ_DYNAMIC, .sq = {8, 4, cases[ci].b, cases[ci].s}};
        float *x = malloc((size_t)(n * dim) * sizeof *x), *want = malloc((size_t)(n * dim) * sizeof *want);
        const float **ord = malloc((size_t)b * sizeof *ord);
        uint8_t *hi = malloc((size_t)dim);
        for (long i = 0; i < n * dim; i++) x[i] = (float)(nrand() * (urand() < 0.03 ? 30 : 1));
        int h = (int)lround((1 - cases[ci].s) * b);
        for (long t = 0; t < n; t++) {
            const float *r = x + t * dim;
            memset(hi, 0, (size_t)dim);
            for (long j0 = 0; j0 < dim; j0 += b) {
                for (int i = 0; i < b; i++) ord[i] = r + j0 + i;
                qsort(ord, (size_t)b, sizeof *ord, by_abs_desc);
                for (int i = 0; i < h; i++) hi[ord[i] - r] = 1;
            }
            float mx[2] = {0, 0};
            for (long j = 0; j < dim; j++) mx[hi[j]] = fmaxf(mx[hi[j]], fabsf(r[j]));
            float sc[2] = {mx[0] / 7.0f, mx[1] / 127.0f};
            for (long j = 0; j < dim; j++) {
                float q = hi[j] ? 127.0f : 7.0f, v = nearbyintf(r[j] / sc[hi[j]]);
                want[t * dim + j] = fminf(fmaxf(v, -q), q) * sc[hi[j]];
            }
        }
        act_quant_hook(&qs, 0, 0, x, n, dim);
        assert_memory_equal(x, want, (size_t)(n * dim) * sizeof *x);
        free(x); free(want); free(ord); free(hi);
    }
}

/* Static SQ activations with ":bank": the high channels (the mask) share one
 * 8-bit scale per token, the others one 4-bit scale per token and bank (of
 * the bank the width takes: 576 channels at b128 fit banks of 64). A large
 * low value in one bank leaves the other banks' steps fine. */
static void test_static_bank_act_hook(void **state) {
    (void)state;
    struct { long dim; int b, fit_b; } cases[] = {{576, 64, 64}, {576, 128, 64}, {1536, 128, 128}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        long dim = cases[ci].dim, n = 3;
        int b = cases[ci].fit_b;
        act_quant_t qs;
        memset(&qs, 0, sizeof qs);
        qs.a = (arecipe_t){.kind = AQ_SQ_STATIC, .bank_lo = 1, .sq = {8, 4, cases[ci].b, 0.875}};
        qs.n_layer = 1;
        uint8_t *mask = calloc((size_t)dim, 1);
        for (long j = 0; j < dim; j++) mask[j] = j % 8 == 3;
        qs.hi_mask[0] = mask;
        float *x = malloc((size_t)(n * dim) * sizeof *x), *want = malloc((size_t)(n * dim) * sizeof *want);
        for (long i = 0; i < n * dim; i++) x[i] = (float)(nrand() * (urand() < 0.03 ? 30 : 1));
        x[5] = 1000.0f; /* a low-part outlier of token 0's first bank ... */
        for (long j = b; j < 2 * b; j++) x[j] = 0.01f * (float)(j % 7); /* ... and a quiet second bank */
        x[b + 1] = 0.5f;
        for (long t = 0; t < n; t++) {
            const float *r = x + t * dim;
            float mh = 0;
            for (long j = 0; j < dim; j++) if (mask[j]) mh = fmaxf(mh, fabsf(r[j]));
            for (long j0 = 0; j0 < dim; j0 += b) {
                float ml = 0;
                for (long j = j0; j < j0 + b; j++) if (!mask[j]) ml = fmaxf(ml, fabsf(r[j]));
                for (long j = j0; j < j0 + b; j++) {
                    float s = mask[j] ? mh / 127.0f : ml / 7.0f, q = mask[j] ? 127.0f : 7.0f;
                    want[t * dim + j] = fminf(fmaxf(nearbyintf(r[j] / s), -q), q) * s;
                }
            }
        }
        act_quant_hook(&qs, 0, 0, x, n, dim);
        int same = memcmp(x, want, (size_t)(n * dim) * sizeof *x) == 0;
        /* token 0's quiet bank keeps its steps: 0.5 is its largest low value,
         * where one scale per token (1000 / 7) would round it to zero */
        int quiet_kept = fabsf(x[b + 1] - 0.5f) < 0.05f;
        free(x); free(want); free(mask);
        assert_true(same);
        assert_true(quiet_kept);
    }
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_invariants),
        cmocka_unit_test(test_iscale_structure),
        cmocka_unit_test(test_compact_layout_round_trip),
        cmocka_unit_test(test_bits_and_recipes),
        cmocka_unit_test(test_bank_fit),
        cmocka_unit_test(test_dynamic_act_hook),
        cmocka_unit_test(test_static_bank_act_hook),
        cmocka_unit_test(test_gptq_beats_rtn),
    };
    return cmocka_run_group_tests_name("sq", tests, NULL, NULL);
}
