/* test_kc_ops.c - the GPU transformer ops (kernels/cuda/kc_ops.cu, the
 * cuBLAS FP32 GEMM) against the CPU kernels and double-precision
 * references, on fresh random inputs of several shapes, odd ones included.
 * Every output buffer is poisoned (all bytes 0xFF: NaN) before the kernel
 * runs, so an element a kernel forgets to write fails the comparison.
 *
 * Bounds (relative to the reference's magnitude): elementwise ops and
 * RMSNorm, which follow the CPU arithmetic, 1e-6; RoPE 1e-6; FP32 GEMM
 * (summation order differs) 1e-5; attention (online softmax vs a double
 * reference) 1e-5, 4e-3 for the TF32 tensor-core tiles; fake quantization
 * bit-exact.
 *
 *   build/gpu/test_kc_ops [--quick]     (exit 0 when all pass)
 */
#include "../../kernels/cuda/kc.h"
#include "../../kernels/k_ops.h"
#include "../../kernels/k_sq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail, quick;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = frand() * scale;
}

static void check(const char *what, const float *got, const float *want, size_t n, double tol) {
    double worst = 0, mag = 1e-30;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) mag = fmax(mag, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double e = isfinite(got[i]) ? fabs((double)got[i] - want[i]) / mag : INFINITY;
        if (!(e <= worst)) { worst = e; at = i; }
    }
    int ok = worst <= tol;
    printf("%s %-44s max rel err %.3g (bound %.0e)%s\n", ok ? "PASS" : "FAIL", what, worst, tol,
           ok ? "" : " <--");
    if (!ok) printf("     at %zu: got %.9g want %.9g\n", at, got[at], want[at]);
    ok ? n_pass++ : n_fail++;
}

/* device copy of a host array / a poisoned device buffer */
static void *dup_to(const void *h, size_t bytes) {
    void *d = kc_malloc(bytes);
    if (!d || kc_upload(d, h, bytes)) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); }
    return d;
}
static void *poisoned(size_t bytes) {
    void *d = kc_malloc(bytes);
    if (!d || kc_memset(d, 0xFF, bytes)) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); }
    return d;
}
static void back(void *h, const void *d, size_t bytes) {
    if (kc_download(h, d, bytes)) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); }
}
#define OK(call) do { if ((call) != 0) { fprintf(stderr, "GPU: %s\n", kc_error()); exit(2); } } while (0)

static void tally(int ok, const char *what) {
    printf("%s %s\n", ok ? "PASS" : "FAIL", what);
    ok ? n_pass++ : n_fail++;
}

static void test_rmsnorm(int n, int dim) {
    size_t sz = (size_t)n * dim * 4;
    float *x = malloc(sz), *w = malloc((size_t)dim * 4), *want = malloc(sz), *got = malloc(sz);
    fill(x, (size_t)n * dim, 3), fill(w, (size_t)dim, 1);
    for (int i = 0; i < n; i++) k_rmsnorm(want + (size_t)i * dim, x + (size_t)i * dim, w, dim, 1e-5f);
    float *dx = dup_to(x, sz), *dw = dup_to(w, (size_t)dim * 4), *dy = poisoned(sz);
    OK(kc_rmsnorm(dy, dx, dw, n, dim, 1e-5f));
    back(got, dy, sz);
    char what[64];
    snprintf(what, sizeof what, "rmsnorm n=%d dim=%d", n, dim);
    check(what, got, want, (size_t)n * dim, 1e-6);
    OK(kc_rmsnorm(dx, dx, dw, n, dim, 1e-5f)); /* in place, as the logits path uses it */
    back(got, dx, sz);
    snprintf(what, sizeof what, "rmsnorm in place n=%d dim=%d", n, dim);
    check(what, got, want, (size_t)n * dim, 1e-6);
    kc_free(dx), kc_free(dw), kc_free(dy);
    free(x), free(w), free(want), free(got);
}

/* The fused norm / SwiGLU + INT8 kernels equal the two-launch sequence bit
 * for bit: the float output and the codes and scales of kc_quant_i8. */
static void test_fused_q8(int n, int dim) {
    size_t cnt = (size_t)n * dim, sz = cnt * 4;
    float *x = malloc(sz), *u = malloc(sz), *w = malloc((size_t)dim * 4);
    float *y1 = malloc(sz), *y2 = malloc(sz), *s1 = malloc((size_t)n * 4), *s2 = malloc((size_t)n * 4);
    int8_t *q1 = malloc(cnt), *q2 = malloc(cnt);
    fill(x, cnt, 3), fill(u, cnt, 2), fill(w, (size_t)dim, 1);
    float *dx = dup_to(x, sz), *du = dup_to(u, sz), *dw = dup_to(w, (size_t)dim * 4);
    float *da = poisoned(sz), *db = poisoned(sz), *dsa = poisoned((size_t)n * 4), *dsb = poisoned((size_t)n * 4);
    int8_t *dqa = poisoned(cnt), *dqb = poisoned(cnt);
    for (int op = 0; op < 2; op++) {
        if (op == 0) {
            OK(kc_rmsnorm(da, dx, dw, n, dim, 1e-5f));
            OK(kc_rmsnorm_q8(db, dx, dw, n, dim, 1e-5f, dqb, dsb));
        } else {
            OK(kc_upload(da, x, sz));
            OK(kc_upload(db, x, sz));
            OK(kc_silu_mul(da, du, (long)cnt));
            OK(kc_silu_mul_q8(db, du, n, dim, dqb, dsb));
        }
        OK(kc_quant_i8(da, n, dim, dqa, dsa));
        back(y1, da, sz), back(y2, db, sz), back(q1, dqa, cnt), back(q2, dqb, cnt);
        back(s1, dsa, (size_t)n * 4), back(s2, dsb, (size_t)n * 4);
        int same = !memcmp(y1, y2, sz) && !memcmp(q1, q2, cnt) && !memcmp(s1, s2, (size_t)n * 4);
        char what[80];
        snprintf(what, sizeof what, "%s fused with INT8 quantization n=%d dim=%d: bit-identical",
                 op ? "silu_mul" : "rmsnorm", n, dim);
        tally(same, what);
    }
    kc_free(dx), kc_free(du), kc_free(dw), kc_free(da), kc_free(db), kc_free(dsa), kc_free(dsb);
    kc_free(dqa), kc_free(dqb);
    free(x), free(u), free(w), free(y1), free(y2), free(s1), free(s2), free(q1), free(q2);
}

/* Static SQ activations: kc_quant_static_i8 gives k_quant_row_static's
 * codes and scales bit for bit (its register path and its loops: k % 4 and
 * rows past 32768 values), and the norm / SwiGLU kernels fused with it
 * equal the op followed by kc_quant_static_i8, bit for bit in the float
 * output, the codes and the scales. Masks: a random eighth of the channels
 * high, then every channel low and every channel high (a class with no
 * channel: its scale 0, its codes 0). */
static void test_static_q(int n, int dim) {
    const size_t cnt = (size_t)n * dim, sz = cnt * 4;
    float *x = malloc(sz), *u = malloc(sz), *w = malloc((size_t)dim * 4), *y1 = malloc(sz), *y2 = malloc(sz);
    float *s1 = malloc((size_t)n * 8), *s2 = malloc((size_t)n * 8), *sc = malloc((size_t)n * 8);
    int8_t *q1 = malloc(2 * cnt), *q2 = malloc(2 * cnt), *qc = malloc(2 * cnt);
    uint8_t *mask = malloc((size_t)dim), *none = calloc((size_t)dim, 1), *all = malloc((size_t)dim);
    if (!x || !u || !w || !y1 || !y2 || !s1 || !s2 || !sc || !q1 || !q2 || !qc || !mask || !none || !all) exit(2);
    memset(all, 1, (size_t)dim);
    fill(x, cnt, 3), fill(u, cnt, 2), fill(w, (size_t)dim, 1);
    for (int j = 0; j < dim; j++) mask[j] = frand() < -0.75f;
    float *dx = dup_to(x, sz), *du = dup_to(u, sz), *dw = dup_to(w, (size_t)dim * 4);
    const uint8_t *hmask[3] = {mask, none, all};
    static const char *mname[3] = {"", " (all low)", " (all high)"};
    uint8_t *dmask[3];
    for (int mk = 0; mk < 3; mk++) dmask[mk] = dup_to(hmask[mk], (size_t)dim);
    float *da = poisoned(sz), *db = poisoned(sz), *dsa = poisoned((size_t)n * 8), *dsb = poisoned((size_t)n * 8);
    int8_t *dqa = poisoned(2 * cnt), *dqb = poisoned(2 * cnt);
    for (int mk = 0; mk < 3; mk++) {
        const uint8_t *dm = dmask[mk];
        OK(kc_quant_static_i8(dx, n, dim, dm, 8, 4, dqa, dsa));
        back(q1, dqa, 2 * cnt), back(s1, dsa, (size_t)n * 8);
        for (int i = 0; i < n; i++)
            k_quant_row_static(x + (size_t)i * dim, dim, hmask[mk], 8, 4, qc + 2 * (size_t)i * dim,
                               qc + (2 * (size_t)i + 1) * dim, sc + 2 * i);
        char what[120];
        snprintf(what, sizeof what, "kc_quant_static_i8 n=%d dim=%d%s: the CPU's codes and scales", n, dim,
                 mname[mk]);
        tally(!memcmp(q1, qc, 2 * cnt) && !memcmp(s1, sc, (size_t)n * 8), what);
        for (int op = 0; op < 2; op++) {
            if (op == 0) {
                OK(kc_rmsnorm(da, dx, dw, n, dim, 1e-5f));
                OK(kc_rmsnorm_qs(db, dx, dw, n, dim, 1e-5f, dm, 8, 4, dqb, dsb));
            } else {
                OK(kc_upload(da, x, sz));
                OK(kc_upload(db, x, sz));
                OK(kc_silu_mul(da, du, (long)cnt));
                OK(kc_silu_mul_qs(db, du, n, dim, dm, 8, 4, dqb, dsb));
            }
            OK(kc_quant_static_i8(da, n, dim, dm, 8, 4, dqa, dsa));
            back(y1, da, sz), back(y2, db, sz), back(q1, dqa, 2 * cnt), back(q2, dqb, 2 * cnt);
            back(s1, dsa, (size_t)n * 8), back(s2, dsb, (size_t)n * 8);
            snprintf(what, sizeof what, "%s fused with static SQ quantization n=%d dim=%d%s: bit-identical",
                     op ? "silu_mul" : "rmsnorm", n, dim, mname[mk]);
            tally(!memcmp(y1, y2, sz) && !memcmp(q1, q2, 2 * cnt) && !memcmp(s1, s2, (size_t)n * 8), what);
        }
    }
    for (int mk = 0; mk < 3; mk++) kc_free(dmask[mk]);
    kc_free(dx), kc_free(du), kc_free(dw), kc_free(da), kc_free(db);
    kc_free(dsa), kc_free(dsb), kc_free(dqa), kc_free(dqb);
    free(x), free(u), free(w), free(y1), free(y2), free(s1), free(s2), free(sc), free(q1), free(q2), free(qc);
    free(mask), free(none), free(all);
}

static void test_rope(int n, int heads, int hd, int rot) {
    size_t cnt = (size_t)n * heads * hd, sz = cnt * 4;
    float *x = malloc(sz), *want = malloc(sz), *got = malloc(sz), *inv = malloc((size_t)rot / 2 * 4);
    int32_t *pos = malloc((size_t)n * 4);
    fill(x, cnt, 2);
    for (int i = 0; i < rot / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / rot);
    for (int i = 0; i < n; i++) pos[i] = (i * 37 + 5) % 4000;
    memcpy(want, x, sz);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++) k_rope(want + ((size_t)i * heads + h) * hd, rot, (float)pos[i], inv);
    float *dx = dup_to(x, sz), *dinv = dup_to(inv, (size_t)rot / 2 * 4);
    int32_t *dpos = dup_to(pos, (size_t)n * 4);
    OK(kc_rope(dx, dpos, n, heads, hd, rot, dinv));
    back(got, dx, sz);
    char what[64];
    snprintf(what, sizeof what, "rope n=%d heads=%d hd=%d rot=%d", n, heads, hd, rot);
    check(what, got, want, cnt, 1e-6);
    kc_free(dx), kc_free(dinv), kc_free(dpos);
    free(x), free(want), free(got), free(inv), free(pos);
}

static void test_elementwise(long cnt) {
    size_t sz = (size_t)cnt * 4;
    float *g = malloc(sz), *u = malloc(sz), *want = malloc(sz), *got = malloc(sz);
    fill(g, (size_t)cnt, 6), fill(u, (size_t)cnt, 2);
    memcpy(want, g, sz);
    k_silu_mul(want, u, cnt);
    float *dg = dup_to(g, sz), *du = dup_to(u, sz);
    OK(kc_silu_mul(dg, du, cnt));
    back(got, dg, sz);
    char what[64];
    snprintf(what, sizeof what, "silu_mul count=%ld", cnt);
    check(what, got, want, (size_t)cnt, 1e-6);
    memcpy(want, g, sz);
    k_add(want, u, cnt);
    OK(kc_upload(dg, g, sz));
    OK(kc_add(dg, du, cnt));
    back(got, dg, sz);
    snprintf(what, sizeof what, "add count=%ld", cnt);
    check(what, got, want, (size_t)cnt, 0);
    kc_free(dg), kc_free(du);
    free(g), free(u), free(want), free(got);
}

static void test_embed(int vocab, int dim, int n) {
    size_t tsz = (size_t)vocab * dim * 4, osz = (size_t)n * dim * 4;
    float *t = malloc(tsz), *want = malloc(osz), *got = malloc(osz);
    int32_t *tok = malloc((size_t)n * 4);
    fill(t, (size_t)vocab * dim, 1);
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)((i * 7919 + 3) % vocab);
        memcpy(want + (size_t)i * dim, t + (size_t)tok[i] * dim, (size_t)dim * 4);
    }
    float *dt = dup_to(t, tsz), *dout = poisoned(osz);
    int32_t *dtok = dup_to(tok, (size_t)n * 4);
    OK(kc_embed(dout, dt, dtok, n, dim));
    back(got, dout, osz);
    char what[64];
    snprintf(what, sizeof what, "embed vocab=%d dim=%d n=%d", vocab, dim, n);
    check(what, got, want, (size_t)n * dim, 0);
    kc_free(dt), kc_free(dout), kc_free(dtok);
    free(t), free(want), free(got), free(tok);
}

static void test_gemm(int m, int n, int k) {
    float *w = malloc((size_t)n * k * 4), *x = malloc((size_t)m * k * 4);
    float *want = malloc((size_t)m * n * 4), *got = malloc((size_t)m * n * 4);
    fill(w, (size_t)n * k, 1), fill(x, (size_t)m * k, 1);
    for (int i = 0; i < m; i++)
        for (int r = 0; r < n; r++) {
            double s = 0;
            for (int j = 0; j < k; j++) s += (double)x[(size_t)i * k + j] * w[(size_t)r * k + j];
            want[(size_t)i * n + r] = (float)s;
        }
    float *dw = dup_to(w, (size_t)n * k * 4), *dx = dup_to(x, (size_t)m * k * 4);
    float *dy = poisoned((size_t)m * n * 4);
    OK(kc_gemm_f32(dw, n, k, dx, m, dy));
    back(got, dy, (size_t)m * n * 4);
    char what[64];
    snprintf(what, sizeof what, "gemm_f32 m=%d n=%d k=%d", m, n, k);
    check(what, got, want, (size_t)m * n, 1e-5);
    kc_free(dw), kc_free(dx), kc_free(dy);
    free(w), free(x), free(want), free(got);
}

/* the CPU hook's arithmetic (engine/quant.c fake_quant) */
static void fq_ref(float *x, int n, const uint8_t *mask, int want, int bits) {
    float mx = 0;
    for (int j = 0; j < n; j++)
        if (!mask || mask[j] == want) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
    float q = (float)((1 << (bits - 1)) - 1), s = mx / q;
    for (int j = 0; j < n; j++) {
        if (mask && mask[j] != want) continue;
        float v = s > 0 ? nearbyintf(x[j] / s) : 0;
        v = v > q ? q : v < -q ? -q : v;
        x[j] = v * s;
    }
}

static void test_fake_quant(int n, int dim, int masked, int bits_hi, int bits) {
    size_t sz = (size_t)n * dim * 4;
    float *x = malloc(sz), *want = malloc(sz), *got = malloc(sz);
    uint8_t *mask = malloc((size_t)dim);
    fill(x, (size_t)n * dim, 4);
    for (int j = 0; j < dim; j++) mask[j] = (frand() > 0.75f);
    if (n > 1) memset(x + dim, 0, (size_t)dim * 4); /* an all-zero row: scale 0 */
    memcpy(want, x, sz);
    for (int i = 0; i < n; i++) {
        if (masked) fq_ref(want + (size_t)i * dim, dim, mask, 1, bits_hi);
        fq_ref(want + (size_t)i * dim, dim, masked ? mask : NULL, 0, bits);
    }
    float *dx = dup_to(x, sz);
    uint8_t *dm = dup_to(mask, (size_t)dim);
    OK(kc_fake_quant(dx, n, dim, masked ? dm : NULL, bits_hi, bits));
    back(got, dx, sz);
    char what[64];
    snprintf(what, sizeof what, "fake_quant n=%d dim=%d %s %d/%d", n, dim, masked ? "masked" : "plain",
             bits_hi, bits);
    check(what, got, want, (size_t)n * dim, 0);
    kc_free(dx), kc_free(dm);
    free(x), free(want), free(got), free(mask);
}

/* the cache rows of a batch's positions, [n][kv_dim], from the device */
static void cache_rows(float *out, const kc_kv_t *kv, const float *d_cache, int layer, int n, const int32_t *dpos,
                       const int32_t *dblk, const int32_t *doff) {
    int32_t *pos = malloc((size_t)n * 4), *off = malloc((size_t)n * 4);
    back(pos, dpos, (size_t)n * 4), back(off, doff, (size_t)n * 4);
    for (int i = 0; i < n; i++) {
        int32_t b;
        back(&b, dblk + off[i] + pos[i] / kv->block_size, 4);
        size_t at = (((size_t)b * kv->n_layer + layer) * kv->block_size + pos[i] % kv->block_size) * kv->kv_dim;
        back(out + (size_t)i * kv->kv_dim, d_cache + at, (size_t)kv->kv_dim * 4);
    }
    free(pos), free(off);
}

/* kc_rope_kv_store against kc_rope on q and on k, then kc_kv_store: the
 * same bits in q, k and the cache rows (the cache poisoned in between) */
static void test_rope_kv(const kc_kv_t *kv, int layer, const float *q, const float *k, const float *dv, int n,
                         int n_head, int n_kv, int hd, int rot, const int32_t *dpos, const int32_t *dblk,
                         const int32_t *doff) {
    const int kvd = n_kv * hd;
    const size_t qs = (size_t)n * n_head * hd * 4, ks = (size_t)n * kvd * 4;
    const size_t csz = (size_t)kv->n_layer * kv->block_size * kvd * 4; /* per block */
    float *inv = malloc((size_t)rot / 2 * 4);
    for (int i = 0; i < rot / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / rot);
    float *dinv = dup_to(inv, (size_t)rot / 2 * 4);
    float *dq1 = dup_to(q, qs), *dq2 = dup_to(q, qs), *dk1 = dup_to(k, ks), *dk2 = dup_to(k, ks);
    float *h1 = malloc(qs), *h2 = malloc(qs), *r1 = malloc(2 * ks), *r2 = malloc(2 * ks);
    int32_t maxb = 0, *blk = malloc((size_t)n * 4), *off = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4);
    back(pos, dpos, (size_t)n * 4), back(off, doff, (size_t)n * 4);
    for (int i = 0; i < n; i++) back(blk + i, dblk + off[i] + pos[i] / kv->block_size, 4);
    for (int i = 0; i < n; i++) maxb = blk[i] > maxb ? blk[i] : maxb;
    OK(kc_rope(dq1, dpos, n, n_head, hd, rot, dinv));
    OK(kc_rope(dk1, dpos, n, n_kv, hd, rot, dinv));
    OK(kc_kv_store(kv, layer, dk1, dv, n, dpos, dblk, doff));
    cache_rows(r1, kv, kv->d_k, layer, n, dpos, dblk, doff);
    cache_rows(r1 + (size_t)n * kvd, kv, kv->d_v, layer, n, dpos, dblk, doff);
    OK(kc_memset(kv->d_k, 0xFF, csz * (maxb + 1)));
    OK(kc_memset(kv->d_v, 0xFF, csz * (maxb + 1)));
    OK(kc_rope_kv_store(dq2, dk2, dv, n, n_head, n_kv, hd, rot, dinv, kv, layer, dpos, dblk, doff));
    cache_rows(r2, kv, kv->d_k, layer, n, dpos, dblk, doff);
    cache_rows(r2 + (size_t)n * kvd, kv, kv->d_v, layer, n, dpos, dblk, doff);
    char what[128];
    back(h1, dq1, qs), back(h2, dq2, qs);
    snprintf(what, sizeof what, "rope_kv_store rows=%d heads=%d/%d hd=%d rot=%d (q)", n, n_head, n_kv, hd, rot);
    check(what, h2, h1, (size_t)n * n_head * hd, 0);
    back(h1, dk1, ks), back(h2, dk2, ks);
    snprintf(what, sizeof what, "rope_kv_store rows=%d heads=%d/%d hd=%d rot=%d (k)", n, n_head, n_kv, hd, rot);
    check(what, h2, h1, (size_t)n * kvd, 0);
    snprintf(what, sizeof what, "rope_kv_store rows=%d heads=%d/%d hd=%d rot=%d (cache)", n, n_head, n_kv, hd, rot);
    check(what, r2, r1, 2 * (size_t)n * kvd, 0);
    kc_free(dinv), kc_free(dq1), kc_free(dq2), kc_free(dk1), kc_free(dk2);
    free(inv), free(h1), free(h2), free(r1), free(r2), free(blk), free(off), free(pos);
}

/* Paged attention: n_seq sequences with scattered block ids; the batch's
 * rows are the last `rows` positions of each sequence (a prefill chunk)
 * or one position (decode). Reference in double. */
static void test_attention(int n_seq, int len, int rows, int n_head, int n_kv, int hd) {
    const int bs = 16, n_layer = 2, layer = 1, kvd = n_kv * hd, bps = (len + bs - 1) / bs;
    int n_blocks = n_seq * bps + 3;
    size_t csz = (size_t)n_blocks * n_layer * bs * kvd;
    float *kc = malloc(csz * 4), *vc = malloc(csz * 4);
    int32_t *blk = malloc((size_t)n_seq * bps * 4), *perm = malloc((size_t)n_blocks * 4);
    fill(kc, csz, 1), fill(vc, csz, 1);
    for (int b = 0; b < n_blocks; b++) perm[b] = b;
    for (int b = n_blocks - 1; b > 0; b--) { /* scattered, as a real pool is */
        int j = (int)((frand() + 1) * 0.5f * (b + 1)) % (b + 1), t = perm[b];
        perm[b] = perm[j], perm[j] = t;
    }
    memcpy(blk, perm, (size_t)n_seq * bps * 4);
    int n = n_seq * rows;
    int32_t *pos = malloc((size_t)n * 4), *off = malloc((size_t)n * 4);
    float *q = malloc((size_t)n * n_head * hd * 4), *want = malloc((size_t)n * n_head * hd * 4),
          *got = malloc((size_t)n * n_head * hd * 4);
    fill(q, (size_t)n * n_head * hd, 1);
    double *sc = malloc((size_t)len * sizeof(double));
    for (int s = 0; s < n_seq; s++)
        for (int r = 0; r < rows; r++) {
            int i = s * rows + r;
            pos[i] = len - rows + r;
            off[i] = s * bps;
            for (int h = 0; h < n_head; h++) {
                int g = h / (n_head / n_kv);
                const float *qh = q + ((size_t)i * n_head + h) * hd;
                double mx = -1e300, sum = 0;
                for (int t = 0; t <= pos[i]; t++) {
                    size_t at = (((size_t)blk[off[i] + t / bs] * n_layer + layer) * bs + t % bs) * kvd + (size_t)g * hd;
                    double d = 0;
                    for (int j = 0; j < hd; j++) d += (double)qh[j] * kc[at + j];
                    sc[t] = d / sqrt((double)hd);
                    mx = fmax(mx, sc[t]);
                }
                for (int t = 0; t <= pos[i]; t++) sum += (sc[t] = exp(sc[t] - mx));
                for (int j = 0; j < hd; j++) {
                    double a = 0;
                    for (int t = 0; t <= pos[i]; t++) {
                        size_t at = (((size_t)blk[off[i] + t / bs] * n_layer + layer) * bs + t % bs) * kvd + (size_t)g * hd;
                        a += sc[t] * vc[at + j];
                    }
                    want[((size_t)i * n_head + h) * hd + j] = (float)(a / sum);
                }
            }
        }
    kc_kv_t kv = {dup_to(kc, csz * 4), dup_to(vc, csz * 4), n_layer, kvd, bs};
    float *dq = dup_to(q, (size_t)n * n_head * hd * 4), *dout = poisoned((size_t)n * n_head * hd * 4);
    int32_t *dpos = dup_to(pos, (size_t)n * 4), *doff = dup_to(off, (size_t)n * 4),
            *dblk = dup_to(blk, (size_t)n_seq * bps * 4);
    char what[112];
    /* every kernel on the same data: rows, FP32 tiles, tensor-core tiles. The
     * last rounds Q, K, V and the probabilities to TF32 (2^-11 relative each):
     * an output, a weighted mean of V rows, moves by a few 2^-11 of the
     * largest one */
    /* The rows kernel runs unsplit, split the default way and split 3 ways
     * (slices of uneven fill, some empty at short lengths), twice each: a
     * split launch's tickets must be left ready for the next one; with a
     * block for all query heads of a K/V head and with one per query head. */
    static const struct {
        const char *kind;
        int split, gqa, tiled, tc;
    } mode[] = {{"rows", 1, 1, 0, 0},          {"rows split", 0, 1, 0, 0},
                {"rows split 3", 3, 1, 0, 0},  {"rows split 3 again", 3, 1, 0, 0},
                {"rows per head", 1, 0, 0, 0}, {"rows per head split", 0, 0, 0, 0},
                {"tiles", 0, 1, 1, 0},         {"tiles TF32", 0, 1, 1, 1}};
    for (size_t k = 0; k < sizeof mode / sizeof mode[0]; k++) {
        kc_attn_set_split(mode[k].split), kc_attn_set_gqa(mode[k].gqa);
        kc_attn_set_tensor_cores(mode[k].tc);
        OK(kc_memset(dout, 0xFF, (size_t)n * n_head * hd * 4));
        OK(kc_attention(dout, dq, &kv, layer, n, dpos, dblk, doff, n_head, n_kv, hd, len, mode[k].tiled));
        back(got, dout, (size_t)n * n_head * hd * 4);
        snprintf(what, sizeof what, "attention (%s) seqs=%d len=%d rows=%d heads=%d/%d hd=%d", mode[k].kind, n_seq,
                 len, rows, n_head, n_kv, hd);
        check(what, got, want, (size_t)n * n_head * hd, mode[k].tc && hd % 64 == 0 ? 4e-3 : 1e-5);
    }
    kc_attn_set_split(-1), kc_attn_set_gqa(-1), kc_attn_set_tensor_cores(-1);

    /* kv_store: rows written at their positions, read back through the table */
    float *nk = malloc((size_t)n * kvd * 4), *nv = malloc((size_t)n * kvd * 4);
    fill(nk, (size_t)n * kvd, 1), fill(nv, (size_t)n * kvd, 1);
    float *dnk = dup_to(nk, (size_t)n * kvd * 4), *dnv = dup_to(nv, (size_t)n * kvd * 4);
    OK(kc_kv_store(&kv, layer, dnk, dnv, n, dpos, dblk, doff));
    back(kc, kv.d_k, csz * 4);
    back(vc, kv.d_v, csz * 4);
    float *gk = malloc((size_t)n * kvd * 4), *gv = malloc((size_t)n * kvd * 4);
    for (int i = 0; i < n; i++) {
        size_t at = (((size_t)blk[off[i] + pos[i] / bs] * n_layer + layer) * bs + pos[i] % bs) * kvd;
        memcpy(gk + (size_t)i * kvd, kc + at, (size_t)kvd * 4);
        memcpy(gv + (size_t)i * kvd, vc + at, (size_t)kvd * 4);
    }
    snprintf(what, sizeof what, "kv_store seqs=%d rows=%d kv_dim=%d (K)", n_seq, rows, kvd);
    check(what, gk, nk, (size_t)n * kvd, 0);
    snprintf(what, sizeof what, "kv_store seqs=%d rows=%d kv_dim=%d (V)", n_seq, rows, kvd);
    check(what, gv, nv, (size_t)n * kvd, 0);
    test_rope_kv(&kv, layer, q, nk, dnv, n, n_head, n_kv, hd, hd, dpos, dblk, doff);
    test_rope_kv(&kv, layer, q, nk, dnv, n, n_head, n_kv, hd, hd / 2, dpos, dblk, doff); /* partial rotary */
    kc_free(kv.d_k), kc_free(kv.d_v), kc_free(dq), kc_free(dout), kc_free(dpos), kc_free(doff);
    kc_free(dblk), kc_free(dnk), kc_free(dnv);
    free(kc), free(vc), free(blk), free(perm), free(pos), free(off), free(q), free(want), free(got);
    free(sc), free(nk), free(nv), free(gk), free(gv);
}

int main(int argc, char **argv) {
    quick = argc > 1 && !strcmp(argv[1], "--quick");
    if (kc_init(0) != 0) {
        fprintf(stderr, "test_kc_ops: %s\n", kc_error());
        return 2;
    }
    printf("device: %s\n", kc_device_name());
    test_rmsnorm(3, 576), test_rmsnorm(5, 577), test_rmsnorm(1, 4096);
    test_fused_q8(3, 576), test_fused_q8(5, 1537), test_fused_q8(2, 14336);
    /* decode rows (one block a row): the register paths at 8B/70B sizes, and past them */
    test_fused_q8(1, 4096), test_fused_q8(1, 8192), test_fused_q8(1, 8193), test_fused_q8(1, 28672);
    test_static_q(1, 4096), test_static_q(3, 576), test_static_q(1, 8192), test_static_q(2, 8193);
    test_static_q(1, 14336), test_static_q(1, 28672), test_static_q(1, 36000), test_static_q(4, 4097);
    test_rope(3, 9, 64, 64), test_rope(2, 8, 128, 128), test_rope(4, 3, 64, 32);
    test_rope(1, 32, 128, 128), test_rope(1, 64, 128, 128), test_rope(2, 33, 128, 96);
    test_elementwise(1001), test_elementwise(1 << 16);
    test_embed(1000, 576, 17), test_embed(333, 77, 5);
    test_gemm(1, 577, 320), test_gemm(7, 576, 576), test_gemm(64, 1536, 576);
    if (!quick) test_gemm(300, 2049, 1000);
    test_fake_quant(3, 576, 0, 0, 8), test_fake_quant(3, 576, 0, 0, 4), test_fake_quant(4, 1536, 1, 8, 4);
    test_attention(1, 1, 1, 9, 3, 64);     /* the first token */
    test_attention(3, 37, 1, 9, 3, 64);    /* decode, odd length, several sequences */
    test_attention(2, 100, 23, 8, 2, 128); /* chunked prefill rows */
    test_attention(1, 130, 7, 4, 4, 80);   /* hd not a multiple of 32, no grouping */
    test_attention(3, 50, 50, 9, 3, 64);   /* whole prompts: tiles straddle sequences (group 3) */
    test_attention(2, 75, 40, 32, 8, 128); /* Llama-3 heads, chunks not multiples of the tile */
    test_attention(1, 700, 1, 32, 8, 128); /* decode deep enough to split: slices of 256, 256, 188 */
    test_attention(2, 1500, 1, 9, 3, 64);  /* split rows of two sequences */
    test_attention(3, 600, 1, 16, 2, 128); /* 8 query heads a K/V head (70B's group) */
    test_attention(2, 300, 1, 8, 4, 256);  /* hd 256: group 2 in a block */
    test_attention(2, 530, 2, 8, 8, 64);   /* no grouping */
    /* a GQA block leaves a split state per query head: 2048 (8B heads, 32 rows,
     * 2 slices) and 2560 (70B's group of 8, 8 rows, 5 slices) states, past
     * what the blocks alone count (an overflow of the state buffer before 2026-12-03) */
    test_attention(32, 600, 1, 32, 8, 128);
    if (!quick) test_attention(8, 1300, 1, 64, 8, 128);
    if (!quick) test_attention(2, 2000, 3, 32, 8, 128), test_attention(1, 1100, 1100, 32, 8, 128);
    printf("test_kc_ops: %d passed, %d failed\n", n_pass, n_fail);
    kc_shutdown();
    return n_fail ? 1 : 0;
}
