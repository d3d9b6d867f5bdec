/* test_kc_sq.c - the SQ-format GPU kernels (kernels/cuda/kc_sq.cu, kc_sq_mm.cu) against
 * the CPU reference (kernels/k_sq.h) on fresh random inputs.
 *
 * - kc_quant_i8 against k_quant_row_i8: codes and scales bit-exact (odd
 *   row lengths, a zero row, exact .5 ties, tiny and large magnitudes).
 * - kc_sq_matmul on every supported shape: h_low 4, 3, 2 (h_high 8) and
 *   4/2, b = 4..128, h from 1 to b/2 (and views with no highs, h = 0, as the
 *   uniform INT4/INT2 baselines make), matrices from sq_quantize on random
 *   weights (uploaded with kc_sq_upload), odd row counts, odd group counts,
 *   m in {1, 3, 8, 17, 64, 130, 512} on the headline shape (8/4 b64 h8,
 *   fast path, float and half scales) and {1, 17, 130} on the others.
 *   Expected: k_sq_group_sums_ref + k_sq_combine per (token, row) on the
 *   codes kc_quant_i8 produced. The integer group sums are exact on both
 *   sides, so the only difference is float summation order:
 *       |y_gpu - y_cpu| <= (2 * n_groups + 4) * 2^-23 * sx * sum_g (|s_lo lo_g| + |s_hi hi_g|)
 *   Outputs are poisoned (0xFF bytes, NaN) before every run, and a poisoned
 *   guard past the output must stay untouched.
 * - kc_sq_random(_ex): the device generator's matrix equals
 *   kc_sq_random_host's (validated with sq_validate), through the matmul.
 * - The compact layout (kc_sq.cuh): chosen exactly where it applies, 5.5
 *   bits at 8/4 b64 h8 with half scales; every decode M 1..16 (and 24, 32,
 *   33, 64, 65) with float and half scales, 8/3 and other banks; a tensor
 *   with the reserved low code -8 keeps the explicit layout, exactly; the
 *   explicit layout itself through KC_SQ_NO_COMPACT; kc_sq_fuse +
 *   kc_sq_matmul_parts (each part against its own reference, and equal to
 *   the unfused [m][n_total] output); the Llama-3 8B/70B shapes at full K.
 * - The dp4a kernel (kc_sq_gemv.cu) at M = 1..5 on both layouts, with its
 *   weights staged in shared memory and held in registers, and k_sq_dec at
 *   the same M.
 * - Integer bank scales: the INT8 path, the INT32 decode kernel, and the
 *   wgmma kernel (kc_sq_wg.cu) at 1..300 tokens with every ring shape,
 *   split groups, fused parts, and its default range by matrix size.
 * The matmul check itself and the matrix makers are in sq_check.h.
 *   KC_SQ_DEC=0..4 in the environment selects the decode kernel variant.
 *
 * - RoPE and the K/V store in the q/k/v matmul's epilogue
 *   (kc_sq_matmul_qkv_rope): bit-exact against the matmul and kc_rope_kv_store.
 * - SwiGLU by the gate/up and down matmuls (kc_sq_matmul_swiglu +
 *   kc_sq_matmul_acc_h): h and the residual stream bit-exact against the
 *   matmul, kc_silu_mul_q8 and kc_sq_matmul_acc.
 * - RMSNorm split over the matmuls (kc_sq_matmul_acc_ns, kc_sq_matmul_parts_ns):
 *   a layer's chain bit-exact against the plain launches with
 *   kc_rmsnorm_q8_canon, SwiGLU fused or not, and tiles whose candidates overflow.
 * - The attention output quantized by the o matmul (kc_attention_max +
 *   kc_sq_matmul_acc_h): bit-exact against kc_attention + kc_quant_i8 + the matmul.
 *   build/gpu/test_kc_sq [--quick] [--wg] [--rope] [--swiglu] [--norm] [--attq]   (--quick:
 *   fewer shapes, for compute-sanitizer; --wg ... --attq: that section alone)
 * Prints "test_kc_sq: N passed, M failed"; exits 1 on any failure.
 */
#include "../../engine/model/sq.h"
#include "../../engine/quant/sq_quant.h"
#include "../../kernels/cuda/kc.h"
#include "../../kernels/k_sq.h"
#include "../../kernels/cpu/k_sq_codes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int quick;

#define TEST_RNG_SEED 0x243F6A8885A308D3ull
#include "test_rng.h"
#include "test_util.h"
#include "sq_check.h" /* test_mm and the matrix makers */

/* ---- kc_quant_i8 ------------------------------------------------------------------- */

static void test_quant(long m, long k, int ties) {
    size_t nx = (size_t)(m * k);
    float *x = malloc(nx * 4), *sx = malloc((size_t)m * 4), *gsx = malloc((size_t)m * 4);
    int8_t *q = malloc(nx), *gq = malloc(nx);
    fill_x(x, m, k);
    if (ties) /* sx = 1 exactly: x / sx lands on .5 ties */
        for (long i = 0; i < m; i++)
            for (long j = 0; j < k; j++) x[i * k + j] = j == 0 ? 127.0f : (float)((long)(next() % 255) - 127) + 0.5f * (float)(j & 1);
    for (long i = 0; i < m; i++) sx[i] = k_quant_row_i8(x + i * k, k, q + i * k, NULL);
    float *dx = dmalloc(nx * 4), *dsx = dmalloc((size_t)m * 4);
    int8_t *dq = dmalloc(nx);
    OK(kc_upload(dx, x, nx * 4));
    OK(kc_memset(dq, 0xFF, nx));
    OK(kc_memset(dsx, 0xFF, (size_t)m * 4));
    OK(kc_quant_i8(dx, m, k, dq, dsx));
    OK(kc_download(gq, dq, nx));
    OK(kc_download(gsx, dsx, (size_t)m * 4));
    long bad = 0;
    for (size_t i = 0; i < nx; i++) bad += gq[i] != q[i];
    for (long i = 0; i < m; i++) bad += memcmp(&gsx[i], &sx[i], 4) != 0;
    char what[96];
    snprintf(what, sizeof what, "quant_i8 m=%ld k=%ld%s: bit-exact (%ld mismatches)", m, k, ties ? " (ties)" : "", bad);
    verdict(bad == 0, what);
    kc_free(dx), kc_free(dsx), kc_free(dq);
    free(x), free(sx), free(gsx), free(q), free(gq);
}

/* ---- kc_sq_matmul ------------------------------------------------------------------ */

/* a view without highs (the uniform INT4 / INT2 baselines: k_sq_new_int's h = 0) */
static void test_no_highs(int h_low, int b, long n, long groups, const long *ms, int nm) {
    sq_tensor_t t;
    long G = b > 64 ? b : 64;
    if (make_sq(&t, 8, h_low, b, b / 8, n, G * groups)) return;
    k_sq_t w = view(&t);
    w.h = 0; /* the low codes alone (0 where the highs were): a valid uniform tensor */
    kc_sq_t *dw = kc_sq_upload(&w);
    char label[160];
    snprintf(label, sizeof label, "sq_matmul %d-bit b%d h0 (no highs) [%s]", h_low, b, dw ? kc_sq_describe(dw) : "refused");
    if (!dw) {
        printf("FAIL %s: %s\n", label, kc_error());
        n_fail++;
        kc_clear_error();
    } else {
        for (int i = 0; i < nm; i++) test_mm(label, &w, dw, ms[i]);
        kc_sq_free(dw);
    }
    sq_free(&t);
}

/* the compact layout is chosen exactly where it applies (kc_sq.cuh) */
static void test_layout_choice(void) {
    static const int cfg[][3] = {{4, 64, 8}, {3, 64, 8}, {4, 32, 4}, {4, 16, 2}, {4, 8, 1}, {4, 64, 4}, {4, 64, 1},
                                 {4, 64, 16}, {4, 128, 16}, {2, 64, 8}, {4, 4, 2}};
    static const int want[] = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    for (int i = 0; i < (int)(sizeof want / sizeof *want); i++) {
        kc_sq_t *w = kc_sq_random_ex(20, 256, cfg[i][0], cfg[i][1], cfg[i][2], 7, KC_SQ_F16_SCALES);
        int got = w && strstr(kc_sq_describe(w), "compact") != NULL;
        char what[200];
        snprintf(what, sizeof what, "layout of %d-bit b%d h%d: %s (%s expected)", cfg[i][0], cfg[i][1], cfg[i][2],
                 w ? kc_sq_describe(w) : kc_error(), want[i] ? "compact" : "explicit slots");
        verdict(w && got == want[i], what);
        kc_sq_free(w);
    }
    kc_sq_t *w = kc_sq_random_ex(20, 256, 4, 64, 8, 7, KC_SQ_F16_SCALES);
    double bits = w ? 8.0 * (double)kc_sq_bytes(w) / (20.0 * 256) : 0; /* 20 rows: 2 tiles of 16 */
    double want_bits = 5.5 * 32 / 20;
    char what[160];
    snprintf(what, sizeof what, "8/4 b64 h8 half scales: %.3f bits per stored weight (5.5 per padded row)", bits * 20 / 32);
    verdict(w && fabs(bits - want_bits) < 1e-9, what);
    kc_sq_free(w);
}

/* a low code -8 (the compact layout's reserved code; no valid SQ tensor has
 * one) makes kc_sq_upload keep the explicit-slot layout, with exact results */
static void test_reserved_code(void) {
    sq_tensor_t t;
    if (make_sq(&t, 8, 4, 64, 8, 37, 64 * 3)) return;
    long hits = 0;
    for (long e = 0; e < t.n * t.k && hits < 5; e += 97) { /* a few low positions of nonzero code */
        int v = (t.lo[e >> 1] >> (4 * (e & 1))) & 15;
        if (v == 0) continue;
        t.lo[e >> 1] = (uint8_t)((t.lo[e >> 1] & ~(15 << (4 * (e & 1)))) | (8 << (4 * (e & 1))));
        hits++;
    }
    k_sq_t w = view(&t);
    kc_sq_t *dw = kc_sq_upload(&w);
    char what[200];
    snprintf(what, sizeof what, "a low code -8 (%ld of them) keeps the explicit layout: %s", hits,
             dw ? kc_sq_describe(dw) : kc_error());
    verdict(dw && !strstr(kc_sq_describe(dw), "compact"), what);
    if (dw) {
        static const long ms[] = {1, 5, 130};
        for (int i = 0; i < 3; i++) test_mm("sq_matmul with -8 codes", &w, dw, ms[i]);
        kc_sq_free(dw);
    }
    sq_free(&t);
}

/* sq_quantize_opt's integer bank scales (:iscale) are found at upload (and
 * free scales are not), and the INT8 path then gives the reference's sums;
 * 4- and 3-bit low codes */
static void test_iscale_upload(const long *ms, int nm) {
    const long n = 45, k = 64 * 6;
    for (int hl = 4; hl >= 3; hl--)
        for (int want = 0; want < 2; want++) {
            sq_cfg_t c = {8, hl, 64, 1.0 - 8.0 / 64};
            sq_tensor_t t;
            if (sq_alloc(&t, &c, n, k)) exit(2);
            float *W = malloc((size_t)(n * k) * 4);
            for (long i = 0; i < n * k; i++) W[i] = frand() * (next() % 16 == 0 ? 4.0f : 0.5f);
            OK(sq_quantize_opt(&t, W, NULL, NULL, NULL, want ? SQ_Q_ISCALE : 0));
            free(W);
            k_sq_t w = view(&t);
            kc_sq_t *dw = kc_sq_upload(&w);
            if (!dw) {
                fprintf(stderr, "GPU: %s\n", kc_error());
                exit(2);
            }
            const int compact = strstr(kc_sq_describe(dw), "compact") != NULL;
            char label[240];
            snprintf(label, sizeof label, "kc_sq_upload of sq_quantize_opt(%s), %d-bit: kc_sq_iscale %d [%s]",
                     want ? "SQ_Q_ISCALE" : "0", hl, kc_sq_iscale(dw), kc_sq_describe(dw));
            verdict(kc_sq_iscale(dw) == want, label);
            for (int i = 0; i < nm; i++) test_mm(label, &w, dw, ms[i]);
            kc_sq_free(dw);
            /* A tensor the quantizer would not write (sq_validate refuses
             * both): a low code past -qmax (-8 k_g passes -128 from k_g = 17;
             * upload refuses any), or a nonzero low code at a high position
             * (two codes in one INT8 weight; no room in the compact layout
             * either). Integer scales are then not taken, nor, for the
             * second, the compact layout (where the clean tensor had it; it
             * holds any low code but -8); the sums stay exact. */
            for (int bad = 0; want && bad < 2; bad++) {
                const long r = 3, g = 2, nb = k / 64;
                const uint8_t *ix = t.idx + (r * nb + g) * t.h;
                long j = g * 64 + ix[0];
                if (!bad) /* a low position: the first column that is not high */
                    for (long col = 0; col < 64; col++) {
                        int high = 0;
                        for (int i = 0; i < t.h; i++) high |= ix[i] == col;
                        if (!high) {
                            j = g * 64 + col;
                            break;
                        }
                    }
                const int old = k_sq_lo_code(w.lo, w.h_low, (size_t)(r * k + j));
                sq_set_lo(&t, r, j, bad ? 1 : -(1 << (hl - 1)));
                k_sq_t wb = view(&t);
                kc_sq_t *db = kc_sq_upload(&wb);
                if (!db) {
                    fprintf(stderr, "GPU: %s\n", kc_error());
                    exit(2);
                }
                snprintf(label, sizeof label,
                         "kc_sq_upload of %d-bit integer bank scales with %s: kc_sq_iscale %d [%s] (clean: %s)", hl,
                         bad ? "a low code at a high position" : "a low code past -qmax", kc_sq_iscale(db),
                         kc_sq_describe(db), compact ? "compact" : "explicit");
                verdict(!kc_sq_iscale(db) && !(bad && strstr(kc_sq_describe(db), "compact")), label);
                for (int i = 0; i < nm; i++) test_mm(label, &wb, db, ms[i]);
                kc_sq_free(db);
                sq_set_lo(&t, r, j, old);
            }
            sq_free(&t);
        }
}

/* the wgmma kernel (kc_sq_wg.cu) on integer bank scales at every token
 * count, whatever the default range: 32, 64 and 128 tokens a block and
 * several token blocks (1..300), rows past the matrix in the last block
 * (45, 131 rows), an odd and an even number of groups (the two A
 * register sets), fewer groups than stages (45 x 448 with 8 stages; 800 x
 * 320: 5 groups, and a run that stores whole tiles, then leaves a part of
 * the next in its second slot), stream-k runs that split tiles (131 x
 * 2368: 4 runs over 2 tiles; 2048 x 8192: a tile's 128 groups over up to
 * 8 runs, the last to arrive adding the others' sums), fused parts (k = 64
 * x 37: split too), sums past 2^24, each ring (4, 6, 8 stages) and a block
 * a tile; each matrix at several M in turn, so the arrival counts must have
 * been left zero by the launch before. (Which tiles split depends on the
 * grid, so on the GPU's SM count: these are the cases on a 132-SM H200.) */
static void test_wg(void) {
    static const long mw[] = {1, 3, 8, 17, 32, 33, 64, 65, 100, 128, 129, 300}, mwq[] = {3, 33, 65, 129};
    static const long mbig[] = {16, 64, 128, 200}, mbigq[] = {64, 200};
    static const long qkv[] = {64, 32, 37}, gu[] = {48, 48}, mf[] = {5, 40, 100, 130};
    const long c0 = kc_sq_wg_count();
    kc_sq_set_wg(1, 1L << 30);
    static const long ring[][2] = {{4, 1}, {6, 1}, {8, 1}, {6, 0}};
    for (int r = 0; r < 4; r++) {
        kc_sq_set_wg_ring(ring[r][0], ring[r][1]);
        printf("-- the wgmma kernel, %ld stages, %s\n", kc_sq_wg_stages(),
               kc_sq_wg_split() ? "stream-k" : "a block a tile");
        test_random(4, 64, 8, 45, 64 * 7, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? mwq : mw, quick ? 4 : 12);
        test_random(4, 64, 8, 131, 64 * 37, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? mwq : mw, quick ? 4 : 12);
        test_random(4, 64, 8, 256, 64 * 16, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, mwq, 4);
        test_random(4, 64, 8, 2048, 8192, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? mbigq : mbig, quick ? 2 : 4);
        if (!quick) test_random(4, 64, 8, 256, 14336, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, mbigq, 2);
        test_random(4, 64, 8, 800, 320, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? mwq : mw, quick ? 4 : 12);
        g_upload_flags = KC_SQ_NO_COMPACT;
        test_fuse(qkv, 3, KC_SQ_INT_SCALES, mf, 4);
        test_fuse(gu, 2, KC_SQ_INT_SCALES, mf, 4);
        g_fuse_k = 64 * 37;
        test_fuse(qkv, 3, KC_SQ_INT_SCALES, mf, 4);
        g_fuse_k = 64 * 7;
        g_upload_flags = 0;
    }
    kc_sq_set_wg_ring(-1, -1);
    kc_sq_set_wg(-1, -1);
    if (!getenv("KC_SQ_WG_MIN") && !getenv("KC_SQ_WG_MAX")) { /* the measured default, by the matrix's size */
        static const long shp[4][2] = {{8192, 28672}, {28672, 4096}, {8192, 10240}, {4096, 4096}},
                          want[4][2] = {{17, 256}, {17, 128}, {33, 128}, {0, 0}};
        for (int i = 0; i < 4; i++) {
            kc_sq_t *w = kc_sq_random_ex(shp[i][0], shp[i][1], 4, 64, 8, 5 + i, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
            char dw[160];
            snprintf(dw, sizeof dw, "wgmma tokens by default on %ldx%ld: %ld..%ld (want %ld..%ld)", shp[i][0], shp[i][1],
                     w ? kc_sq_wg_min(w) : -1L, w ? kc_sq_wg_max(w) : -1L, want[i][0], want[i][1]);
            verdict(w && kc_sq_wg_min(w) == want[i][0] && kc_sq_wg_max(w) == want[i][1], dw);
            kc_sq_free(w);
        }
    }
    char what[120];
    snprintf(what, sizeof what, "the wgmma kernel ran %ld times (sm_90a device: %d)", kc_sq_wg_count() - c0,
             kc_sm90a());
    verdict(kc_sm90a() ? kc_sq_wg_count() > c0 : kc_sq_wg_count() == c0, what);
}

#include "fuse_check.h" /* test_rope, test_swiglu, test_norm_split */

int main(int argc, char **argv) {
    /* --wg / --rope / --swiglu / --norm / --attq: that section alone */
    int only_wg = 0, only_rope = 0, only_swiglu = 0, only_norm = 0, only_attq = 0;
    for (int i = 1; i < argc; i++)
        quick |= !strcmp(argv[i], "--quick"), only_wg |= !strcmp(argv[i], "--wg"), only_rope |= !strcmp(argv[i], "--rope"),
            only_swiglu |= !strcmp(argv[i], "--swiglu"), only_norm |= !strcmp(argv[i], "--norm"),
            only_attq |= !strcmp(argv[i], "--attq");
    /* the compact layout is opt-in in the product (kc_sq.cu): test it where it
     * applies, and the explicit layout through KC_SQ_NO_COMPACT */
    setenv("KC_SQ_COMPACT", "1", 0);
    if (kc_init(0)) {
        fprintf(stderr, "test_kc_sq: %s\n", kc_error());
        return 2;
    }
    printf("test_kc_sq on %s%s\n", kc_device_name(), quick ? " (quick)" : "");
    /* the fused kernels at every M first; the two-step path has its own section */
    kc_sq_set_twostep_min(0);
    if (only_wg || only_rope || only_swiglu || only_norm || only_attq) {
        if (only_wg) test_wg();
        if (only_rope) test_rope();
        if (only_swiglu) test_swiglu();
        if (only_norm) test_norm_split();
        if (only_attq) test_attq();
        goto done;
    }

    /* quantization */
    test_quant(1, 1, 0);
    test_quant(3, 7, 0);
    test_quant(5, 576, 0);
    test_quant(4, 1000, 1);
    if (!quick) test_quant(17, 4096, 0), test_quant(130, 1536, 0);
    /* one decode row: the register path (up to 8 float4 a thread) and past it */
    test_quant(1, 4096, 0), test_quant(1, 14336, 0), test_quant(2, 28672, 1), test_quant(1, 36000, 0);

    /* the headline shape: fast path (decode and prefill kernels), float scales
     * from sq_quantize, half scales through the random matrices */
    static const long m_full[] = {1, 3, 8, 17, 64, 130, 512}, m_quick[] = {1, 17, 130};
    const long *ms = quick ? m_quick : m_full;
    int nm = quick ? 3 : 7;
    test_layout_choice();
    test_shape(8, 4, 64, 8, quick ? 37 : 1001, quick ? 3 : 27, ms, nm);
    test_random(4, 64, 8, quick ? 40 : 523, 64 * (quick ? 3 : 21), KC_SQ_F16_SCALES, ms, nm);
    test_random(4, 64, 8, quick ? 21 : 300, 64 * 5, 0, ms, quick ? 1 : 3);
    /* every decode M (1..16) and the kernel boundaries, compact layout (float
     * scales from sq_quantize, half scales from the generator), and the
     * explicit-slot layout the same way */
    {
        long mdec[24];
        int nd = 0;
        for (long m = 1; m <= 16; m++) mdec[nd++] = m;
        mdec[nd++] = 24, mdec[nd++] = 32, mdec[nd++] = 33, mdec[nd++] = 64, mdec[nd++] = 65;
        static const long mq[] = {1, 2, 9, 16, 65};
        test_shape(8, 4, 64, 8, quick ? 45 : 333, quick ? 2 : 13, quick ? mq : mdec, quick ? 5 : nd);
        test_random(4, 64, 8, quick ? 45 : 301, 64 * (quick ? 2 : 11), KC_SQ_F16_SCALES, quick ? mq : mdec,
                    quick ? 5 : nd);
        test_shape_ex(8, 4, 64, 8, quick ? 37 : 301, quick ? 3 : 9, quick ? m_quick : m_full, quick ? 3 : 7,
                      KC_SQ_NO_COMPACT);
        test_shape(8, 3, 64, 8, 53, 5, quick ? mq : mdec, quick ? 5 : nd);
        test_shape(8, 4, 32, 4, 53, 5, mq, 5);
        test_shape(8, 4, 64, 4, 53, 5, mq, 5);
    }
    test_reserved_code();
    /* the dp4a kernel (kc_sq_gemv.cu, M <= 4) on both layouts it reads
     * (compact, explicit fast), its weights staged in shared memory and held
     * in registers, and, with it turned off, k_sq_dec at the same
     * M: float scales from sq_quantize, half scales from the generator, fused
     * parts, the 8B/70B shapes */
    for (int run = 0; run < 3; run++) /* dp4a staged, dp4a from registers, k_sq_dec */
        for (int lay = 0; lay < 2; lay++) {
            const int gv = run < 2 ? 4 : 0;
            static const long m5[] = {1, 2, 3, 4, 5}, mq5[] = {1, 3, 5}, mb[] = {1, 4};
            static const long qkv[] = {64, 32, 37}, gu[] = {48, 48};
            const int fl = lay ? KC_SQ_NO_COMPACT : 0;
            kc_sq_set_gemv_max(gv);
            kc_sq_set_gemv_stage(run == 0);
            printf("-- M <= 4 on %s, %s layout\n",
                   run == 0 ? "the dp4a kernel (kc_sq_gemv), weights staged in shared memory"
                   : run == 1 ? "the dp4a kernel (kc_sq_gemv), weights in registers"
                              : "k_sq_dec (KC_SQ_GEMV=0)",
                   lay ? "explicit" : "compact");
            g_upload_flags = fl;
            test_shape_ex(8, 4, 64, 8, quick ? 37 : 301, quick ? 3 : 9, quick ? mq5 : m5, quick ? 3 : 5, fl);
            test_shape_ex(8, 4, 64, 8, 16, 1, mq5, 3, fl); /* one tile, one unit */
            test_shape_ex(8, 4, 32, 4, 53, 5, mq5, 3, fl);
            test_shape_ex(8, 4, 64, 4, 53, 5, mq5, 3, fl);
            if (!lay) test_shape_ex(8, 3, 64, 8, 53, 5, mq5, 3, fl), test_shape_ex(8, 4, 16, 2, 37, 4, mq5, 3, fl);
            test_random(4, 64, 8, quick ? 45 : 301, 64 * (quick ? 4 : 67), KC_SQ_F16_SCALES | fl, quick ? mq5 : m5,
                        quick ? 3 : 5);
            test_fuse(qkv, 3, KC_SQ_F16_SCALES, mq5, 3);
            test_fuse(gu, 2, 0, mq5, 3);
            if (!quick && run == 0) {
                test_big(6144, 4096, mb, 2);
                test_big(4096, 14336, mb, 2);
                test_big(1024, 28672, mb, 2);
            }
            g_upload_flags = 0;
        }
    kc_sq_set_gemv_max(-1);
    kc_sq_set_gemv_stage(-1);
    {
        static const long qkv[] = {64, 32, 37}, gu[] = {48, 48}, mf[] = {1, 7, 16, 40, 130}, mfq[] = {1, 16};
        test_fuse(qkv, 3, KC_SQ_F16_SCALES, quick ? mfq : mf, quick ? 2 : 5);
        test_fuse(gu, 2, 0, quick ? mfq : mf, quick ? 2 : 5);
    }
    if (!quick) { /* Llama-3 8B's q/k/v, o, gate/up, down and a 70B row block at full K */
        static const long mb[] = {1, 16}, mb1[] = {3};
        test_big(6144, 4096, mb, 2);
        test_big(4096, 4096, mb1, 1);
        test_big(28672, 4096, mb1, 1);
        test_big(4096, 14336, mb, 2);
        test_big(1024, 28672, mb1, 1);
        test_big(2048, 8192, mb, 2);
    }

    /* every supported shape */
    static const long m_some[] = {1, 17, 130}, m_one[] = {3};
    static const int pairs[][2] = {{8, 4}, {8, 3}, {8, 2}, {4, 2}};
    for (int p = 0; p < 4; p++)
        for (int b = 4; b <= 128; b *= 2) {
            int hs[4] = {1, b / 8, b / 4, b / 2}, last = 0;
            for (int i = 0; i < 4; i++) {
                int h = hs[i];
                if (h < 1 || h <= last) continue;
                last = h;
                if (p == 0 && b == 64 && h == 8) continue; /* above */
                int thorough = !quick && (i == 1 || i == 3 || b == 128);
                if (quick && !(i == 3 || (p == 2 && b == 128))) continue;
                test_shape(pairs[p][0], pairs[p][1], b, h, 37, b > 64 ? 3 : 5, thorough ? m_some : m_one,
                           thorough ? 3 : 1);
            }
        }
    if (!quick) test_random(2, 128, 32, 50, 128 * 3, 0, m_some, 3);
    test_no_highs(4, 64, 37, 3, m_some, quick ? 1 : 3);
    test_no_highs(2, 128, 37, 3, m_one, 1);

    /* the tensor-core two-step path (expansion to FP16 + cuBLAS) on every
     * layout it takes, from M = 1 up, fused parts included */
    {
        kc_sq_set_twostep_min(1);
        g_twostep = 1;
        static const long m2[] = {1, 17, 130, 300}, mf2[] = {1, 40, 130};
        static const long qkv[] = {64, 32, 37}, gu[] = {48, 48};
        test_random(4, 64, 8, 45, 64 * 7, KC_SQ_F16_SCALES, m2, quick ? 2 : 4);
        test_random(4, 64, 8, 29, 64 * 5, 0, m2, quick ? 2 : 4);
        test_shape_ex(8, 4, 64, 8, 37, 3, m2, quick ? 2 : 4, KC_SQ_NO_COMPACT);
        test_shape(8, 3, 64, 8, 53, 5, m2, quick ? 2 : 4);
        test_fuse(qkv, 3, KC_SQ_F16_SCALES, mf2, 3);
        test_fuse(gu, 2, 0, mf2, 3);
        if (!quick) test_big(4096, 14336, m2 + 1, 1);
        /* slices of 48 rows (a matrix too large for the scratch, made small): 5 slices, and fused parts across them */
        kc_sq_set_slice(48 * 64 * 7);
        test_random(4, 64, 8, 200, 64 * 7, KC_SQ_F16_SCALES, m2 + 1, 2);
        test_fuse(qkv, 3, KC_SQ_F16_SCALES, mf2, 3);
        kc_sq_set_slice(0);
        kc_sq_set_twostep_min(0);
        g_twostep = 0;
    }

    /* integer bank scales: the exact INT8 path (expansion to INT8 values +
     * cuBLAS INT8, kc_sq_gemm.cu) from M = 1, on both layouts, 8/4 and 8/3,
     * fused parts; the k_sq.h bound (no FP16 slack: the sums are exact) */
    {
        kc_sq_set_i8_min(1);
        /* 100 and 130+: the INT8 GEMM with the scales in its epilogue (kc_i8_gemm.cu) where rows suit it */
        static const long m8[] = {1, 100, 17, 64, 130, 300}, mf8[] = {1, 40, 100, 130};
        static const long qkv[] = {64, 32, 37}, gu[] = {48, 48};
        test_random(4, 64, 8, 45, 64 * 7, KC_SQ_INT_SCALES, m8, quick ? 3 : 6);
        test_random(4, 64, 8, 37, 64 * 5, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, m8, quick ? 3 : 6);
        test_random(3, 64, 8, 29, 64 * 5, KC_SQ_INT_SCALES, m8, quick ? 2 : 6);
        test_random(4, 64, 8, 64, 64 * 5, KC_SQ_INT_SCALES, m8, quick ? 2 : 6);
        test_iscale_upload(m8 + 3, quick ? 2 : 3);
        g_upload_flags = 0;
        test_fuse(qkv, 3, KC_SQ_INT_SCALES, mf8, 4);
        test_fuse(gu, 2, KC_SQ_INT_SCALES, mf8, 4);
        /* INT8 slices of at most 96 rows made equal (80, 80, 40 on 200 rows; 80-row slices on the parts {64, 32, 37})
         * on both layouts, the fused-epilogue GEMM at 100+ tokens */
        kc_sq_set_slice(48 * 64 * 7);
        test_random(4, 64, 8, 200, 64 * 7, KC_SQ_INT_SCALES, m8, quick ? 3 : 6);
        test_random(4, 64, 8, 200, 64 * 7, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, m8 + 1, 2);
        test_fuse(qkv, 3, KC_SQ_INT_SCALES, mf8, 4);
        static const long split[] = {96, 96, 37}; /* 80-row slices: each 96-row part in two */
        test_fuse(split, 3, KC_SQ_INT_SCALES, mf8, 4);
        kc_sq_set_slice(0);
        if (!quick) {
            static const long mb[] = {300};
            test_random(4, 64, 8, 256, 14336, KC_SQ_INT_SCALES, mb, 1); /* sums over 14336: |acc| past 2^24 */
        }
        {   /* the 64-row matrices at 100+ tokens took the fused-epilogue GEMM, not the fallback */
            char what[120];
            snprintf(what, sizeof what, "the fused INT8 GEMM ran %ld times (sm_90a device: %d)", kc_i8_gemm_count(),
                     kc_sm90a());
            verdict(kc_sm90a() ? kc_i8_gemm_count() > 0 : kc_i8_gemm_count() == 0, what);
        }
        /* with the path off, the same matrices take the fused kernels: on the
         * explicit layout the float combination up to 32 tokens and from 33
         * the INT32 kernel (do_group_is, kc_sq_isdec_min), the stream-k
         * splits of a long row; the compact layout's float combination */
        kc_sq_set_i8_min(0);
        static const long mis[] = {5, 9, 16, 17, 24, 32, 33, 48, 64}, misq[] = {9, 17, 33, 64};
        test_random(4, 64, 8, 45, 64 * 7, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? misq : mis, quick ? 4 : 9);
        test_random(4, 64, 8, 131, 64 * 37, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, misq, 4);
        test_random(4, 64, 8, 45, 64 * 7, KC_SQ_INT_SCALES, m8, 3);
        if (!quick) test_random(4, 64, 8, 256, 14336, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, misq + 2, 2);
        g_upload_flags = KC_SQ_NO_COMPACT;
        test_fuse(qkv, 3, KC_SQ_INT_SCALES, mf8, 2);
        g_upload_flags = 0;
        /* and from 3 tokens on (kc_sq_set_isdec_min): four n-tiles, most
         * of them empty, the row split over warps */
        kc_sq_set_isdec_min(3);
        static const long mlow[] = {3, 8, 5, 9, 16, 17};
        test_random(4, 64, 8, 45, 64 * 7, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, mlow, quick ? 3 : 6);
        test_random(4, 64, 8, 131, 64 * 37, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, mlow, quick ? 3 : 6);
        test_random(3, 64, 8, 29, 64 * 5, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, mlow, quick ? 2 : 6);
        kc_sq_set_isdec_min(-1);
        if (!getenv("KC_SQ_ISDEC")) { /* the measured default start: 17 tokens from 80 M weights, else 33 */
            kc_sq_t *big = kc_sq_random_ex(8192, 10240, 4, 64, 8, 5, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
            kc_sq_t *small = kc_sq_random_ex(8192, 8192, 4, 64, 8, 6, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
            char what[120];
            snprintf(what, sizeof what, "INT32 decode kernel from %ld tokens (8192x10240), %ld (8192x8192)",
                     big ? kc_sq_isdec_min(big) : -1L, small ? kc_sq_isdec_min(small) : -1L);
            verdict(big && small && kc_sq_isdec_min(big) == 17 && kc_sq_isdec_min(small) == 33, what);
            kc_sq_free(big), kc_sq_free(small);
        }
        kc_sq_set_i8_min(-1);
    }

    /* the fast layout's stream-k decode kernel from 9 tokens (3..8: the
     * one-n-tile k_sq_dec; 65: the prefill kernel): the runs above took its
     * default ring of three stages (k_sq_dec_st); here the kernel that
     * loads into registers (k_sq_dec, 0 stages) and every ring depth, float,
     * half and integer bank scales (the INT32 kernel from 33 tokens, and
     * from 3 with kc_sq_set_isdec_min), rows split over warps, fused parts,
     * and a matrix of 16384 items, whose warps (at most one wave) walk more
     * items than the ring holds: each stage refilled many times, across
     * tile boundaries (the small matrices give a warp at most 4 items) */
    {
        static const long st[] = {0, 2, 3, 4};
        static const long md[] = {3, 8, 9, 16, 17, 24, 32, 33, 48, 64, 65}, mdq[] = {3, 9, 17, 33, 64};
        static const long mlow[] = {3, 9, 17, 32}, mbig[] = {9, 33, 64}, mbigq[] = {33};
        static const long qkv[] = {64, 32, 37};
        kc_sq_set_i8_min(0);
        for (int i = 0; i < 4; i++) {
            kc_sq_set_dec_stages(st[i]);
            printf("-- 3..65 tokens, explicit layout: %s (kc_sq_dec_stages %ld)\n",
                   st[i] ? "k_sq_dec_st, weights and activations staged" : "k_sq_dec, loads into registers",
                   kc_sq_dec_stages());
            test_shape_ex(8, 4, 64, 8, quick ? 37 : 301, quick ? 3 : 9, quick ? mdq : md, quick ? 5 : 11,
                          KC_SQ_NO_COMPACT);
            test_random(4, 64, 8, 45, 64 * 7, KC_SQ_F16_SCALES | KC_SQ_NO_COMPACT, quick ? mdq : md, quick ? 5 : 11);
            test_random(4, 64, 8, 131, 64 * 37, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? mdq : md,
                        quick ? 5 : 11);
            g_upload_flags = KC_SQ_NO_COMPACT;
            test_fuse(qkv, 3, KC_SQ_F16_SCALES, mdq, quick ? 3 : 5);
            g_upload_flags = 0;
            test_random(4, 64, 8, 2048, 8192, KC_SQ_F16_SCALES | KC_SQ_NO_COMPACT, quick ? mbigq : mbig,
                        quick ? 1 : 3);
            test_random(4, 64, 8, 2048, 8192, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, quick ? mbigq : mbig,
                        quick ? 1 : 3);
            kc_sq_set_isdec_min(3);
            test_random(4, 64, 8, 131, 64 * 37, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT, mlow, quick ? 2 : 4);
            kc_sq_set_isdec_min(-1);
        }
        kc_sq_set_dec_stages(-1);
        kc_sq_set_i8_min(-1);
    }

    test_wg();
    test_rope();
    test_swiglu();
    test_norm_split();
    test_attq();

    /* errors are reported, not crashed on */
    kc_sq_t *bad = kc_sq_random(16, 100, 4, 64, 8, 1); /* k not a multiple of 64 */
    verdict(bad == NULL && strstr(kc_error(), "not supported") != NULL, "unsupported shape is refused with a message");
    kc_clear_error();
    kc_sq_free(bad);

done:
    printf("test_kc_sq: %d passed, %d failed\n", n_pass, n_fail);
    kc_shutdown();
    return n_fail ? 1 : 0;
}
