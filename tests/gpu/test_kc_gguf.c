/* test_kc_gguf.c - GGUF weights on the GPU (kernels/cuda/kc_gguf.cu)
 * against the CPU reference (k_dequant_row, kernels/cpu/k_quant.c).
 *
 * For every type the CPU dequantizes (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K in their
 * blocks; Q5_0, Q5_1, Q5_K, F16, BF16, F32 in 16 bits), on random valid
 * blocks and odd shapes (n not a multiple of the 8 rows a GEMV block
 * computes, k several blocks):
 * - dequantization: kc_gguf_dequant's FP32 values equal k_dequant_row's bit
 *   for bit (16-bit storage: equal to the CPU value rounded to FP16/BF16
 *   as kc_gguf_describe says it stored them, F16/BF16 exact); an F32 matrix
 *   with a value past FP16's range must come out as BF16;
 * - embedding lookup: rows picked by token ids, bit for bit likewise;
 * - matmul at m = 1, 2, 3, 8, 9, 64, 130, 600 (the default path by m, and
 *   the other path forced at 1, 8 and 64): every output within
 *   bound x sum_k |w x| of a double-precision product of the CPU's
 *   weights and the FP32 activations, where the bound is 2e-5 for the GEMV
 *   (exact weights, FP32 sums), 1.2e-3 for the FP16 GEMM (weights and
 *   activations rounded to FP16: 2 x 2^-11, plus FP32 sums) and 8e-3 for
 *   BF16 (2 x 2^-8).
 * Every output buffer is poisoned (0xFF bytes: NaN) before the kernel runs,
 * and 64 floats past its end are poisoned too and must stay so.
 *
 *   build/gpu/test_kc_gguf [--quick]     (exit 0 when all pass)
 *   build/gpu/test_kc_gguf --bench       (Llama-3-8B shapes: time by path and m)
 */
#include "../../kernels/cuda/kc.h"
#include "../../kernels/k_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;
#define TEST_RNG_SEED 0x2545f4914f6cdd1dull
#include "test_rng.h"

#define OK(call) do { if ((call) != 0) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); } } while (0)
#define GUARD 64

static void *dev(size_t bytes) {
    void *d = kc_malloc(bytes);
    if (!d) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); }
    return d;
}
static void *dup_to(const void *h, size_t bytes) {
    void *d = dev(bytes);
    OK(kc_upload(d, h, bytes));
    return d;
}
static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}
static void result(int ok, const char *what) {
    printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    ok ? n_pass++ : n_fail++;
}
/* the GUARD floats after `count` are still the 0xFF poison */
static int guard_intact(const float *d, size_t count) {
    uint32_t g[GUARD];
    OK(kc_download(g, d + count, sizeof g));
    for (int i = 0; i < GUARD; i++)
        if (g[i] != 0xFFFFFFFFu) return 0;
    return 1;
}
static float *poisoned(size_t count) {
    float *d = dev((count + GUARD) * sizeof(float));
    OK(kc_memset(d, 0xFF, (count + GUARD) * sizeof(float)));
    return d;
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = k_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random valid rows of `type`: random code bytes, block scales of a
 * realistic size (d ~ 1e-3..3e-2, so weights stay far from FP16's range). */
static uint8_t *random_rows(uint32_t type, long n, long k, float big) {
    const size_t rb = k_row_bytes(type, (size_t)k), sz = rb * (size_t)n;
    uint8_t *w = xmalloc(sz);
    for (size_t i = 0; i < sz; i++) w[i] = (uint8_t)next();
    const k_type_info_t *t = k_type_info(type);
    for (long r = 0; r < n; r++) {
        uint8_t *row = w + (size_t)r * rb;
        if (type == K_F32 || type == K_F16 || type == K_BF16) {
            for (long j = 0; j < k; j++) {
                float v = frand() * 0.1f;
                if (type == K_F32) memcpy(row + 4 * j, &v, 4);
                else if (type == K_F16) put_f16(row + 2 * j, v);
                else {
                    uint32_t b;
                    memcpy(&b, &v, 4);
                    uint16_t h = (uint16_t)(b >> 16);
                    memcpy(row + 2 * j, &h, 2);
                }
            }
            if (big != 0 && r == n / 2 && type == K_F32) memcpy(row + 4 * (k / 3), &big, 4);
            continue;
        }
        for (long b = 0; b < k / (long)t->block_elems; b++) {
            uint8_t *blk = row + (size_t)b * t->block_bytes;
            const float d = (0.001f + 0.03f * fabsf(frand())) * (frand() < 0 ? -1 : 1);
            const float m = 0.02f * frand();
            switch (type) {
            case K_Q4_0: case K_Q8_0: case K_Q5_0: put_f16(blk, d); break;
            case K_Q4_1: case K_Q5_1: put_f16(blk, d), put_f16(blk + 2, m); break;
            case K_Q4_K: case K_Q5_K: put_f16(blk, fabsf(d) * 0.1f), put_f16(blk + 2, fabsf(m) * 0.1f); break;
            case K_Q6_K: put_f16(blk + 208, d * 0.05f); break;
            default: break;
            }
        }
    }
    return w;
}

static const char *tname(uint32_t type) { return k_type_info(type)->name; }

/* the value the device holds for a CPU value, by the storage it reports */
static float stored(float v, const kc_gguf_t *w) {
    const char *d = kc_gguf_describe(w);
    if (strstr(d, "blocks") || strstr(d, "as stored")) return v;
    if (strstr(d, "as BF16")) {
        uint32_t b;
        memcpy(&b, &v, 4);
        b = (b + 0x7fffu + ((b >> 16) & 1)) & 0xffff0000u;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    return k_f16_to_f32(k_f32_to_f16(v));
}

static void test_type(uint32_t type, long n, long k, const int *ms, int n_ms, float big) {
    char what[160];
    const size_t rb = k_row_bytes(type, (size_t)k), cnt = (size_t)n * k;
    uint8_t *rows = random_rows(type, n, k, big);
    float *want = xmalloc(cnt * 4), *got = xmalloc(cnt * 4);
    for (long r = 0; r < n; r++) k_dequant_row(type, rows + (size_t)r * rb, want + (size_t)r * k, (size_t)k);
    kc_gguf_t *w = kc_gguf_upload(type, n, k, rows, rb);
    if (!w) {
        snprintf(what, sizeof what, "%s n=%ld k=%ld upload (%s)", tname(type), n, k, kc_error());
        result(0, what);
        kc_clear_error();
        free(rows), free(want), free(got);
        return;
    }
    for (size_t i = 0; i < cnt; i++) want[i] = stored(want[i], w);
    const int native = kc_gguf_native(type);
    const size_t bytes = kc_gguf_bytes(w);
    snprintf(what, sizeof what, "%s n=%ld k=%ld: %s, %zu device bytes (%s)", tname(type), n, k,
             kc_gguf_describe(w), bytes, native ? "= the file's" : "2 a weight");
    result(native ? bytes == rb * (size_t)n : bytes == cnt * 2, what);
    if (big != 0) {
        snprintf(what, sizeof what, "%s with a value of %g past FP16's range stored as BF16", tname(type), big);
        result(strstr(kc_gguf_describe(w), "BF16") != NULL, what);
    }

    /* dequantization, all rows */
    float *dy = poisoned(cnt);
    OK(kc_gguf_dequant(w, 0, n, dy));
    OK(kc_download(got, dy, cnt * 4));
    size_t bad = 0, at = 0;
    for (size_t i = 0; i < cnt; i++)
        if (memcmp(got + i, want + i, 4) && !bad++) at = i;
    snprintf(what, sizeof what, "%s n=%ld k=%ld dequant bit-exact vs CPU (%zu differ%s)", tname(type), n, k, bad,
             guard_intact(dy, cnt) ? "" : ", guard overwritten");
    result(!bad && guard_intact(dy, cnt), what);
    if (bad) printf("     first at %zu: got %.9g want %.9g\n", at, got[at], want[at]);
    kc_free(dy);

    /* embedding rows by token id, the first and last rows among them */
    const int nt = 7;
    int32_t tok[7] = {0, (int32_t)(n - 1), 3 % (int32_t)n, (int32_t)(n / 2), 1 % (int32_t)n, (int32_t)(n - 1), 2 % (int32_t)n};
    int32_t *dtok = dup_to(tok, sizeof tok);
    float *de = poisoned((size_t)nt * k);
    OK(kc_gguf_embed(de, w, dtok, nt));
    OK(kc_download(got, de, (size_t)nt * k * 4));
    bad = 0;
    for (int i = 0; i < nt; i++) bad += memcmp(got + (size_t)i * k, want + (size_t)tok[i] * k, (size_t)k * 4) != 0;
    snprintf(what, sizeof what, "%s n=%ld k=%ld embedding rows bit-exact%s", tname(type), n, k,
             guard_intact(de, (size_t)nt * k) ? "" : " (guard overwritten)");
    result(!bad && guard_intact(de, (size_t)nt * k), what);
    kc_free(de), kc_free(dtok);

    /* matmul by m and path */
    const int bf16 = strstr(kc_gguf_describe(w), "BF16") != NULL;
    for (int mi = 0; mi < n_ms; mi++) {
        const long m = ms[mi];
        float *x = xmalloc((size_t)m * k * 4), *y = xmalloc((size_t)m * n * 4);
        for (size_t i = 0; i < (size_t)m * k; i++) x[i] = frand() * 2;
        float *dx = dup_to(x, (size_t)m * k * 4);
        for (int pass = 0; pass < 2; pass++) {
            const int dflt = m <= kc_gguf_gemv_max(w) ? 1 : 2;
            if (pass == 1 && m != 1 && m != 8 && m != 64) break;
            const int path = pass == 0 ? dflt : 3 - dflt;
            float *dyo = poisoned((size_t)m * n);
            OK(kc_gguf_matmul_path(w, dx, m, dyo, path));
            OK(kc_download(y, dyo, (size_t)m * n * 4));
            const double bound = path == 1 ? 2e-5 : bf16 ? 8e-3 : 1.2e-3;
            double worst = 0;
            for (long t = 0; t < m; t++)
                for (long r = 0; r < n; r++) {
                    double s = 0, a = 0;
                    const float *wr = want + (size_t)r * k, *xr = x + (size_t)t * k;
                    for (long j = 0; j < k; j++) s += (double)wr[j] * xr[j], a += fabs((double)wr[j] * xr[j]);
                    const float g = y[(size_t)t * n + r];
                    const double e = isfinite(g) ? fabs(g - s) / (a > 0 ? a : 1) : INFINITY;
                    if (!(e <= worst)) worst = e;
                }
            const int gi = guard_intact(dyo, (size_t)m * n);
            snprintf(what, sizeof what, "%s n=%ld k=%ld m=%ld %s%s: max err / sum|wx| %.3g (bound %.1e)%s",
                     tname(type), n, k, m, path == 1 ? "GEMV" : bf16 ? "BF16 GEMM" : "FP16 GEMM",
                     pass ? " (forced)" : "", worst, bound, gi ? "" : " guard overwritten");
            result(worst <= bound && gi, what);
            kc_free(dyo);
        }
        kc_free(dx);
        free(x), free(y);
    }
    kc_gguf_free(w);
    free(rows), free(want), free(got);
}

/* ---- --bench: Llama-3-8B matrices, time per call by path and m ------------------- */

static void bench(void) {
    const uint32_t types[] = {K_Q4_0, K_Q4_K, K_Q6_K, K_Q8_0};
    const long shapes[][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}};
    const int ms[] = {1, 2, 4, 8, 16, 32, 64, 128, 512};
    float *dx = dev((size_t)512 * 14336 * 4), *dy = dev((size_t)512 * 128256 * 4);
    OK(kc_fill(dx, (size_t)512 * 14336, 0, 1.0f, 7));
    printf("| type | n x k | m | GEMV us | GEMV GB/s | GEMM us | GEMM TFLOP/s |\n|---|---|---|---|---|---|---|\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const long n = shapes[si][0], k = shapes[si][1];
            if (n == 128256 && types[ti] != K_Q6_K && types[ti] != K_Q4_0) continue;
            uint8_t *rows = random_rows(types[ti], n, k, 0);
            kc_gguf_t *w = kc_gguf_upload(types[ti], n, k, rows, k_row_bytes(types[ti], (size_t)k));
            free(rows);
            if (!w) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); }
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const long m = ms[mi];
                double us[3] = {0, 0, 0};
                for (int path = 1; path <= 2; path++) {
                    if (path == 1 && m > 64) continue;
                    OK(kc_gguf_matmul_path(w, dx, m, dy, path)); /* warm-up, scratch */
                    const int reps = 20;
                    kc_timer_t *t = kc_timer_start();
                    for (int r = 0; r < reps; r++) OK(kc_gguf_matmul_path(w, dx, m, dy, path));
                    us[path] = kc_timer_stop_ms(t) * 1e3 / reps;
                }
                const double gbs = us[1] > 0 ? kc_gguf_bytes(w) / (us[1] * 1e3) : 0;
                printf("| %s | %ld x %ld | %ld | %.1f | %.0f | %.1f | %.1f |\n", tname(types[ti]), n, k, m, us[1], gbs,
                       us[2], 2.0 * m * n * k / (us[2] * 1e6));
            }
            kc_gguf_free(w);
        }
    kc_free(dx), kc_free(dy);
}

int main(int argc, char **argv) {
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    if (kc_init(0) != 0) {
        fprintf(stderr, "test_kc_gguf: %s\n", kc_error());
        return 2;
    }
    printf("device: %s, GEMV up to m = %ld (Q4_0, Q4_1: 4) unless overridden\n", kc_device_name(), kc_gguf_gemv_max(NULL));
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        bench();
        kc_shutdown();
        return 0;
    }
    const int all_m[] = {1, 2, 3, 8, 9, 64, 130, 600}, quick_m[] = {1, 3, 9, 130};
    const int *ms = quick ? quick_m : all_m, n_ms = quick ? 4 : 8;
    const uint32_t types[] = {K_Q4_0, K_Q4_1, K_Q8_0, K_Q4_K, K_Q6_K, K_Q5_0, K_Q5_1, K_Q5_K, K_F16, K_BF16, K_F32};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        test_type(types[i], 37, 768, ms, n_ms, 0);   /* 3 super-blocks, 24 blocks; n odd */
        if (!quick) test_type(types[i], 261, 1280, ms, n_ms, 0); /* n past a multiple of 8 */
    }
    test_type(K_F32, 21, 256, ms, 2, 1e6f); /* out of FP16's range: BF16 */
    printf("test_kc_gguf: %d passed, %d failed\n", n_pass, n_fail);
    kc_shutdown();
    return n_fail ? 1 : 0;
}
