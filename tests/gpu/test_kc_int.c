/* test_kc_int.c - the uniform integer weights on the GPU (kernels/cuda/kc_int.cu:
 * the W8A8 and W4A8 baselines) against the CPU reference (kernels/k_sq.h).
 *
 * - Views from k_sq_new_int on random codes (the full symmetric range) and
 *   scales (float, and exact halves so the 16-bit layout applies): int8 with
 *   one scale a row, int4 in groups of 64; odd row counts, k from 64 to
 *   14336, m on both sides of the GEMV limit (1..9, 17, 64, 130).
 *   Expected: k_sq_group_sums_ref + k_sq_combine on the codes kc_quant_i8
 *   produced. int8 (GEMV and cuBLAS INT8): bit for bit. int4 GEMV: the
 *   k_sq.h bound, (2 n_groups + 4) 2^-23 sx sum_g |s_g lo_g|. int4 on the
 *   tensor cores (FP16 weights): that plus 2^-9 sx sum_j |w_j q_j|.
 *   Outputs are poisoned (NaN bytes) before every run and a guard past
 *   them must stay untouched.
 * - y += x W^T (the residual add in the GEMV epilogue): exactly y + the
 *   stored product; refused past the GEMV limit.
 * - Fused parts (q/k/v-like 3 parts, gate/up-like 2): each part's output
 *   against its own reference, on both paths.
 * - kc_int_random: its matrix (downloaded) through the same check; codes in
 *   range; the stated bits per weight (4.25 for int4 g64 with half scales).
 * - Static SQ activations on these kernels: kc_quant_static_i8 against
 *   k_quant_row_static (bit for bit), the 2m-row matmul + kc_add_pairs
 *   against the CPU's high part + low part, and kc_int_matmul_pairs (the
 *   sum in the GEMV's epilogue, with and without the residual add, fused
 *   parts) against that matmul + kc_add_pairs, bit for bit.
 * - Views the kernels do not take (int4 g32, int8 in groups, k not a
 *   multiple of 64, SQ views with highs) are refused with a message.
 *
 *   build/gpu/test_kc_int [--quick]
 * Prints "test_kc_int: N passed, M failed"; exits 1 on any failure.
 */
#include "../../kernels/cuda/kc.h"
#include "../../kernels/k_sq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int quick;

#define TEST_RNG_SEED 0x13198A2E03707344ull
#include "test_rng.h"
#include "test_util.h"

static void *hmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* a host matrix: codes [n][k], scales [n][k/g] */
typedef struct {
    long n, k, g;
    int bits;
    int8_t *codes;
    float *scales;
} hmat_t;

static hmat_t hmat_random(long n, long k, int bits, long g, int half_scales) {
    hmat_t h = {n, k, g, bits, hmalloc((size_t)(n * k)), hmalloc((size_t)(n * (k / g)) * 4)};
    const int lim = (1 << (bits - 1)) - 1;
    for (long i = 0; i < n * k; i++) h.codes[i] = (int8_t)((long)(next() % (uint64_t)(2 * lim + 1)) - lim);
    for (long i = 0; i < n * (k / g); i++) {
        const int e = -8 + (int)(next() % 5);
        /* 11 significant bits: exactly a half */
        h.scales[i] = half_scales ? ldexpf((float)(1024 + next() % 1024), e - 10) : ldexpf(1.0f + 0.5f * frand(), e);
    }
    return h;
}

static void hmat_free(hmat_t *h) { free(h->codes), free(h->scales); }

/* the reference of row r, token i, and the error bound the GPU must meet */
static void reference(const k_sq_t *v, const hmat_t *h, long r, const int8_t *qx, float sx, int tensor, float *want,
                      double *bound) {
    const long ng = h->k / h->g;
    int32_t *lo = hmalloc((size_t)ng * 4), *hi = hmalloc((size_t)ng * 4);
    k_sq_group_sums_ref(v, r, qx, lo, hi);
    *want = k_sq_combine(v, r, sx, lo, hi);
    if (h->bits == 8) {
        *bound = 0; /* the CPU's bits */
    } else {
        double mag = 0, abs_prod = 0;
        for (long g = 0; g < ng; g++) mag += fabs((double)h->scales[r * ng + g] * lo[g]);
        for (long j = 0; j < h->k; j++) abs_prod += fabs((double)h->scales[r * ng + j / h->g] * h->codes[r * h->k + j] * qx[j]);
        *bound = (2.0 * ng + 4) * ldexp(1.0, -23) * sx * mag + 1e-37 + (tensor ? ldexp(1.0, -9) * sx * abs_prod : 0);
    }
    free(lo), free(hi);
}

/* m tokens through dw (parts: outputs of the fused parts, rows part_n each)
 * against the reference of the host matrices hs[] (one per part) */
static void check_mm(const char *label, kc_int_t *dw, const hmat_t *hs, int nparts, long m) {
    const long k = hs[0].k;
    const size_t guard = 64;
    long ntot = 0;
    for (int p = 0; p < nparts; p++) ntot += hs[p].n;
    k_sq_t *views[KC_SQ_MAX_PARTS];
    for (int p = 0; p < nparts; p++)
        if (!(views[p] = k_sq_new_int(hs[p].codes, hs[p].scales, hs[p].n, k, hs[p].bits, hs[p].g))) exit(2);
    float *x = hmalloc((size_t)(m * k) * 4), *sx = hmalloc((size_t)m * 4);
    int8_t *qx = hmalloc((size_t)(m * k)), *gq = hmalloc((size_t)(m * k));
    fill_x(x, m, k);
    for (long i = 0; i < m; i++) sx[i] = k_quant_row_i8(x + i * k, k, qx + i * k, NULL);
    float *dx = dmalloc((size_t)(m * k) * 4), *dsx = dmalloc((size_t)m * 4);
    int8_t *dq = dmalloc((size_t)(m * k));
    OK(kc_upload(dx, x, (size_t)(m * k) * 4));
    OK(kc_quant_i8(dx, m, k, dq, dsx));
    OK(kc_download(gq, dq, (size_t)(m * k)));
    const long qbad = memcmp(gq, qx, (size_t)(m * k)) != 0;
    float *dy[KC_SQ_MAX_PARTS], *got[KC_SQ_MAX_PARTS];
    for (int p = 0; p < nparts; p++) {
        const size_t cnt = (size_t)(m * hs[p].n) + guard;
        dy[p] = dmalloc(cnt * 4), got[p] = hmalloc(cnt * 4);
        OK(kc_memset(dy[p], 0xFF, cnt * 4));
    }
    const int tensor = m > kc_int_gemv_max(dw);
    if (nparts > 1) OK(kc_int_matmul_parts(dw, dq, dsx, m, dy));
    else OK(kc_int_matmul(dw, dq, dsx, m, dy[0]));
    double worst = 0;
    long bad = 0, gbad = 0;
    for (int p = 0; p < nparts; p++) {
        const long n = hs[p].n;
        OK(kc_download(got[p], dy[p], ((size_t)(m * n) + guard) * 4));
        for (long i = 0; i < m; i++)
            for (long r = 0; r < n; r++) {
                float want;
                double bound;
                reference(views[p], &hs[p], r, qx + i * k, sx[i], tensor, &want, &bound);
                const float gv = got[p][i * n + r];
                const double e = fabs((double)gv - want);
                if (!isfinite(gv) || (bound == 0 ? memcmp(&gv, &want, 4) != 0 : e > bound)) bad++;
                const double rel = bound > 0 ? e / bound : e > 0;
                if (rel > worst || !isfinite(gv)) worst = isfinite(gv) ? rel : INFINITY;
            }
        for (size_t i = 0; i < guard; i++) {
            uint32_t u;
            memcpy(&u, &got[p][(size_t)(m * n) + i], 4);
            gbad += u != 0xFFFFFFFFu;
        }
    }
    char what[240];
    snprintf(what, sizeof what, "%s n=%ld k=%ld m=%ld (%s, %d part%s): %ld wrong, worst %s %.3g%s%s", label, ntot,
             k, m, tensor ? "tensor cores" : "GEMV", nparts, nparts > 1 ? "s" : "", bad,
             hs[0].bits == 8 ? "abs err (want 0)" : "err/bound", worst, gbad ? ", WROTE PAST THE OUTPUT" : "",
             qbad ? ", quant codes differ" : "");
    verdict(bad == 0 && gbad == 0 && !qbad, what);

    /* y += x W^T where the GEMV takes it: y + the stored product, bit for bit */
    if (nparts == 1) {
        const long n = hs[0].n;
        const size_t cnt = (size_t)(m * n) + guard;
        if (kc_int_acc_applies(dw, m)) {
            float *y0 = hmalloc(cnt * 4), *acc = hmalloc(cnt * 4);
            fill_x(y0, m, n);
            memset(y0 + m * n, 0xFF, guard * 4);
            OK(kc_upload(dy[0], y0, cnt * 4));
            OK(kc_int_matmul_acc(dw, dq, dsx, m, dy[0]));
            OK(kc_download(acc, dy[0], cnt * 4));
            long abad = 0;
            for (size_t i = 0; i < cnt; i++) {
                const float want = i < (size_t)(m * n) ? y0[i] + got[0][i] : y0[i];
                abad += memcmp(&want, &acc[i], 4) != 0;
            }
            snprintf(what, sizeof what, "%s n=%ld k=%ld m=%ld: y += x W^T, %ld values differ from y + product", label,
                     n, k, m, abad);
            verdict(abad == 0, what);
            free(y0), free(acc);
        } else {
            const int rc = kc_int_matmul_acc(dw, dq, dsx, m, dy[0]);
            kc_clear_error();
            snprintf(what, sizeof what, "%s m=%ld: y += x W^T refused past the GEMV", label, m);
            verdict(rc == -1, what);
        }
    }
    for (int p = 0; p < nparts; p++) kc_free(dy[p]), free(got[p]), free(views[p]);
    kc_free(dx), kc_free(dsx), kc_free(dq);
    free(x), free(sx), free(qx), free(gq);
}

static kc_int_t *upload(const hmat_t *h) {
    k_sq_t *v = k_sq_new_int(h->codes, h->scales, h->n, h->k, h->bits, h->g);
    if (!v) exit(2);
    kc_int_t *d = kc_int_upload(v);
    free(v);
    if (!d) {
        fprintf(stderr, "kc_int_upload: %s\n", kc_error());
        exit(2);
    }
    return d;
}

static void test_shape(int bits, long n, long k, int half_scales, const long *ms, int nm) {
    hmat_t h = hmat_random(n, k, bits, bits == 8 ? k : 64, half_scales);
    kc_int_t *d = upload(&h);
    char label[160];
    snprintf(label, sizeof label, "int%d %s", bits, kc_int_describe(d));
    /* 8-bit codes with half scales also keep them as floats (a float a row), for the fused INT8 GEMM */
    const double want_bits = bits + (half_scales ? 16.0 : 32.0) / (double)h.g + (bits == 8 && half_scales ? 32.0 / k : 0);
    const double got_bits = 8.0 * (double)kc_int_bytes(d) / ((double)n * k);
    char what[200];
    snprintf(what, sizeof what, "int%d n=%ld k=%ld: %.4f bits/weight stored (want %.4f)", bits, n, k, got_bits, want_bits);
    verdict(fabs(got_bits - want_bits) < 1e-9, what);
    for (int i = 0; i < nm; i++) check_mm(label, d, &h, 1, ms[i]);
    kc_int_free(d);
    hmat_free(&h);
}

static void test_fused(int bits, const long *ns, int count, long k, const long *ms, int nm) {
    hmat_t hs[KC_SQ_MAX_PARTS];
    kc_int_t *parts[KC_SQ_MAX_PARTS];
    for (int p = 0; p < count; p++) hs[p] = hmat_random(ns[p], k, bits, bits == 8 ? k : 64, 1), parts[p] = upload(&hs[p]);
    kc_int_t *f = kc_int_fuse((const kc_int_t *const *)parts, count);
    if (!f) {
        fprintf(stderr, "kc_int_fuse: %s\n", kc_error());
        exit(2);
    }
    char what[96];
    snprintf(what, sizeof what, "int%d fused %d parts: kc_int_parts", bits, count);
    verdict(kc_int_parts(f) == count, what);
    for (int i = 0; i < nm; i++) check_mm(bits == 8 ? "int8 fused" : "int4 fused", f, hs, count, ms[i]);
    kc_int_free(f);
    for (int p = 0; p < count; p++) kc_int_free(parts[p]), hmat_free(&hs[p]);
}

static void test_random(int bits, long n, long k, const long *ms, int nm) {
    kc_int_t *d = kc_int_random(n, k, bits, 77);
    if (!d) {
        fprintf(stderr, "kc_int_random: %s\n", kc_error());
        exit(2);
    }
    const long g = bits == 8 ? k : 64;
    hmat_t h = {n, k, g, bits, hmalloc((size_t)(n * k)), hmalloc((size_t)(n * (k / g)) * 4)};
    OK(kc_int_download(d, h.codes, h.scales));
    const int lim = (1 << (bits - 1)) - 1;
    long out = 0;
    for (long i = 0; i < n * k; i++) out += h.codes[i] < -lim || h.codes[i] > lim;
    char what[160];
    snprintf(what, sizeof what, "kc_int_random int%d n=%ld k=%ld: codes in +-%d (%ld outside), %.4f bits/weight", bits,
             n, k, lim, out, 8.0 * (double)kc_int_bytes(d) / ((double)n * k));
    const double want_bits = bits + 16.0 / g + (bits == 8 ? 32.0 / k : 0); /* half scales, and their float copy */
    verdict(out == 0 && fabs(8.0 * (double)kc_int_bytes(d) / ((double)n * k) - want_bits) < 1e-9, what);
    for (int i = 0; i < nm; i++) check_mm("kc_int_random", d, &h, 1, ms[i]);
    kc_int_free(d);
    hmat_free(&h);
}

/* kc_int_matmul_pairs against `want`, what the 2m-row matmul + kc_add_pairs
 * gave for the same rows: bit for bit, into a poisoned output and, with
 * acc, added to a random y (y + want, as kc_add rounds it); nothing written
 * past the m x n outputs. */
static void check_pairs(const kc_int_t *d, const int8_t *dq, const float *dsx, long m, long n, const float *want) {
    const size_t cnt = (size_t)(m * n), sz = (cnt + 64) * 4;
    float *dy = dmalloc(sz), *got = hmalloc(sz), *y0 = hmalloc(cnt * 4);
    for (int acc = 0; acc <= 1; acc++) {
        OK(kc_memset(dy, 0xFF, sz));
        if (acc) {
            for (size_t i = 0; i < cnt; i++) y0[i] = frand() * 8.0f;
            OK(kc_upload(dy, y0, cnt * 4));
        }
        OK(kc_int_matmul_pairs(d, dq, dsx, m, &dy, acc));
        OK(kc_download(got, dy, sz));
        long bad = 0, past = 0;
        for (size_t i = 0; i < cnt; i++) {
            const float w = acc ? y0[i] + want[i] : want[i];
            bad += memcmp(&got[i], &w, 4) != 0;
        }
        for (size_t i = cnt; i < cnt + 64; i++) {
            uint32_t u;
            memcpy(&u, &got[i], 4);
            past += u != 0xFFFFFFFFu;
        }
        char what[160];
        snprintf(what, sizeof what, "static SQ pairs in the GEMV epilogue%s, n=%ld m=%ld: %ld differ from matmul + "
                 "add_pairs%s", acc ? " + residual" : "", n, m, bad, past ? ", WROTE PAST THE OUTPUT" : "");
        verdict(bad == 0 && past == 0, what);
    }
    kc_free(dy), free(got), free(y0);
}

/* Static SQ activations (kc_quant_static_i8 + the 2m-row matmul +
 * kc_add_pairs): the codes and scales k_quant_row_static gives, bit for
 * bit; y = combine(high row) + combine(low row) as the CPU's
 * k_sq_matmul_group adds them (int8: bit for bit; int4: the sum of the two
 * rows' bounds). Masks: 8 random high channels of every 64. */
static void test_static(int bits, long n, long k, const long *ms, int nm) {
    hmat_t h = hmat_random(n, k, bits, bits == 8 ? k : 64, 1);
    kc_int_t *d = upload(&h);
    k_sq_t *v = k_sq_new_int(h.codes, h.scales, n, k, bits, h.g);
    uint8_t *mask = hmalloc((size_t)k);
    memset(mask, 0, (size_t)k);
    for (long j0 = 0; j0 < k; j0 += 64)
        for (int c = 0; c < 8;) {
            uint8_t *p = mask + j0 + next() % 64;
            if (!*p) *p = 1, c++;
        }
    uint8_t *dmask = dmalloc((size_t)k);
    OK(kc_upload(dmask, mask, (size_t)k));
    for (int mi = 0; mi < nm; mi++) {
        const long m = ms[mi];
        float *x = hmalloc((size_t)(m * k) * 4), *sx = hmalloc((size_t)m * 8), *gsx = hmalloc((size_t)m * 8);
        int8_t *q = hmalloc((size_t)(2 * m * k)), *gq = hmalloc((size_t)(2 * m * k));
        fill_x(x, m, k);
        for (long i = 0; i < m; i++)
            k_quant_row_static(x + i * k, k, mask, 8, 4, q + 2 * i * k, q + (2 * i + 1) * k, sx + 2 * i);
        float *dx = dmalloc((size_t)(m * k) * 4), *dsx = dmalloc((size_t)m * 8), *dy2 = dmalloc((size_t)(2 * m * n) * 4);
        float *dy = dmalloc(((size_t)(m * n) + 64) * 4), *got = hmalloc(((size_t)(m * n) + 64) * 4);
        int8_t *dq = dmalloc((size_t)(2 * m * k));
        OK(kc_upload(dx, x, (size_t)(m * k) * 4));
        OK(kc_memset(dy, 0xFF, ((size_t)(m * n) + 64) * 4));
        OK(kc_quant_static_i8(dx, m, k, dmask, 8, 4, dq, dsx));
        OK(kc_download(gq, dq, (size_t)(2 * m * k)));
        OK(kc_download(gsx, dsx, (size_t)m * 8));
        long qbad = 0;
        for (long i = 0; i < 2 * m * k; i++) qbad += gq[i] != q[i];
        for (long i = 0; i < 2 * m; i++) qbad += memcmp(&gsx[i], &sx[i], 4) != 0;
        OK(kc_int_matmul(d, dq, dsx, 2 * m, dy2));
        OK(kc_add_pairs(dy, dy2, m, n));
        OK(kc_download(got, dy, ((size_t)(m * n) + 64) * 4));
        const int tensor = 2 * m > kc_int_gemv_max(d);
        long bad = 0, gbad = 0;
        double worst = 0;
        for (long i = 0; i < m; i++)
            for (long r = 0; r < n; r++) {
                float wh, wl;
                double bh, bl;
                reference(v, &h, r, q + 2 * i * k, sx[2 * i], tensor, &wh, &bh);
                reference(v, &h, r, q + (2 * i + 1) * k, sx[2 * i + 1], tensor, &wl, &bl);
                const float want = wh + wl, gv = got[i * n + r];
                const double bound = bh + bl == 0 ? 0 : bh + bl + fabs((double)want) * ldexp(1.0, -23);
                const double e = fabs((double)gv - want);
                if (!isfinite(gv) || (bound == 0 ? memcmp(&gv, &want, 4) != 0 : e > bound)) bad++;
                const double rel = bound > 0 ? e / bound : e > 0;
                if (rel > worst || !isfinite(gv)) worst = isfinite(gv) ? rel : INFINITY;
            }
        for (int i = 0; i < 64; i++) {
            uint32_t u;
            memcpy(&u, &got[m * n + i], 4);
            gbad += u != 0xFFFFFFFFu;
        }
        char what[200];
        snprintf(what, sizeof what, "static SQ acts, int%d n=%ld k=%ld m=%ld (%s): %ld codes/scales differ, %ld wrong, "
                 "worst %.3g%s", bits, n, k, m, tensor ? "tensor cores" : "GEMV", qbad, bad, worst,
                 gbad ? ", WROTE PAST THE OUTPUT" : "");
        verdict(qbad == 0 && bad == 0 && gbad == 0, what);
        if (kc_int_pairs_applies(d, m)) check_pairs(d, dq, dsx, m, n, got);
        kc_free(dx), kc_free(dsx), kc_free(dy2), kc_free(dy), kc_free(dq);
        free(x), free(sx), free(gsx), free(q), free(gq), free(got);
    }
    kc_free(dmask);
    free(mask), free(v);
    kc_int_free(d);
    hmat_free(&h);
}

/* Fused parts (q/k/v) with static SQ activations: kc_int_matmul_pairs into
 * each part's output equals each part's own 2m-row matmul + kc_add_pairs,
 * bit for bit; and the calls the pairs path must refuse are refused. */
static void test_static_fused(int bits, long k) {
    static const long ns[] = {64, 32, 37};
    hmat_t hs[3];
    kc_int_t *parts[3];
    for (int p = 0; p < 3; p++) hs[p] = hmat_random(ns[p], k, bits, bits == 8 ? k : 64, 1), parts[p] = upload(&hs[p]);
    kc_int_t *f = kc_int_fuse((const kc_int_t *const *)parts, 3);
    if (!f) {
        fprintf(stderr, "kc_int_fuse: %s\n", kc_error());
        exit(2);
    }
    uint8_t *mask = hmalloc((size_t)k);
    for (long j = 0; j < k; j++) mask[j] = next() % 8 == 0;
    uint8_t *dmask = dmalloc((size_t)k);
    OK(kc_upload(dmask, mask, (size_t)k));
    for (long m = 1; kc_int_pairs_applies(f, m); m += (m < 2 ? 1 : 3)) {
        float *x = hmalloc((size_t)(m * k) * 4);
        fill_x(x, m, k);
        float *dx = dmalloc((size_t)(m * k) * 4), *dsx = dmalloc((size_t)m * 8);
        int8_t *dq = dmalloc((size_t)(2 * m * k));
        OK(kc_upload(dx, x, (size_t)(m * k) * 4));
        OK(kc_quant_static_i8(dx, m, k, dmask, 8, 4, dq, dsx));
        float *dy[3], *dw[3], *dy2 = dmalloc((size_t)(2 * m * 64) * 4);
        long bad = 0, past = 0;
        for (int p = 0; p < 3; p++) {
            dy[p] = dmalloc((size_t)(m * ns[p] + 64) * 4), dw[p] = dmalloc((size_t)(m * ns[p]) * 4);
            OK(kc_memset(dy[p], 0xFF, (size_t)(m * ns[p] + 64) * 4));
            OK(kc_int_matmul(parts[p], dq, dsx, 2 * m, dy2));
            OK(kc_add_pairs(dw[p], dy2, m, ns[p]));
        }
        OK(kc_int_matmul_pairs(f, dq, dsx, m, dy, 0));
        for (int p = 0; p < 3; p++) {
            const size_t cnt = (size_t)(m * ns[p]);
            float *got = hmalloc((cnt + 64) * 4), *want = hmalloc(cnt * 4);
            OK(kc_download(got, dy[p], (cnt + 64) * 4));
            OK(kc_download(want, dw[p], cnt * 4));
            bad += memcmp(got, want, cnt * 4) != 0;
            for (size_t i = cnt; i < cnt + 64; i++) {
                uint32_t u;
                memcpy(&u, &got[i], 4);
                past += u != 0xFFFFFFFFu;
            }
            free(got), free(want), kc_free(dy[p]), kc_free(dw[p]);
        }
        char what[160];
        snprintf(what, sizeof what, "static SQ pairs, int%d fused q/k/v k=%ld m=%ld: %ld parts differ%s", bits, k, m, bad,
                 past ? ", WROTE PAST AN OUTPUT" : "");
        verdict(bad == 0 && past == 0, what);
        kc_free(dx), kc_free(dsx), kc_free(dq), kc_free(dy2), free(x);
    }
    /* refused: the residual add into fused parts, more rows than the GEMV takes, no output */
    float *one = dmalloc(4 * 64);
    float *outs[3] = {one, one, one}, *missing[3] = {one, one, NULL};
    const long past_gemv = kc_int_gemv_max(f) / 2 + 1;
    const int r1 = kc_int_matmul_pairs(f, (const int8_t *)one, one, 1, outs, 1);
    const int r2 = kc_int_matmul_pairs(parts[0], (const int8_t *)one, one, past_gemv, outs, 0);
    const int r3 = kc_int_matmul_pairs(f, (const int8_t *)one, one, 1, missing, 0);
    char what[160];
    snprintf(what, sizeof what, "kc_int_matmul_pairs refuses acc on parts (%d), m=%ld past the GEMV (%d), a missing "
             "output (%d)", r1, past_gemv, r2, r3);
    verdict(r1 == -1 && r2 == -1 && r3 == -1 && !kc_int_pairs_applies(parts[0], past_gemv), what);
    kc_clear_error();
    kc_free(one), kc_free(dmask), free(mask);
    kc_int_free(f);
    for (int p = 0; p < 3; p++) kc_int_free(parts[p]), hmat_free(&hs[p]);
}

static void test_refused(void) {
    struct {
        int bits;
        long n, k, g;
        const char *what;
    } cases[] = {{4, 8, 128, 32, "int4 g32"}, {8, 8, 128, 64, "int8 in groups of 64"}, {4, 8, 96, 32, "k = 96"},
                 {3, 8, 128, 64, "int3 g64 (4-bit storage: taken)"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        hmat_t h = hmat_random(cases[c].n, cases[c].k, cases[c].bits, cases[c].g, 0);
        k_sq_t *v = k_sq_new_int(h.codes, h.scales, h.n, h.k, h.bits, h.g);
        kc_int_t *d = kc_int_upload(v);
        const int taken = cases[c].bits == 3;
        char what[200];
        snprintf(what, sizeof what, "kc_int_upload %s: %s%s%s", cases[c].what, d ? "taken" : "refused",
                 d ? "" : ": ", d ? "" : kc_error());
        verdict(taken ? d != NULL : d == NULL && kc_error()[0], what);
        if (d && taken) {
            static const long m1[] = {1, 17};
            for (int i = 0; i < 2; i++) check_mm("int3 codes", d, &h, 1, m1[i]);
        }
        kc_int_free(d);
        kc_clear_error();
        free(v);
        hmat_free(&h);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) quick |= !strcmp(argv[i], "--quick");
    if (kc_init(0)) {
        fprintf(stderr, "test_kc_int: %s\n", kc_error());
        return 2;
    }
    printf("test_kc_int on %s%s\n", kc_device_name(), quick ? " (quick)" : "");
    static const long m_full[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 64, 100, 130}, m_quick[] = {1, 3, 9, 17, 33, 100};
    const long *ms = quick ? m_quick : m_full;
    const int nm = quick ? 6 : 14;
    for (int bits = 4; bits <= 8; bits += 4) {
        test_shape(bits, quick ? 37 : 301, 64, 0, ms, nm);
        test_shape(bits, quick ? 45 : 257, 576, 1, ms, nm);
        test_shape(bits, quick ? 33 : 129, quick ? 1536 : 4096, 0, ms, nm);
        /* rows a multiple of 4: 8-bit takes the fused INT8 GEMM (kc_i8_gemm.cu) from 65 tokens */
        test_shape(bits, quick ? 48 : 320, 576, 1, ms, nm);
        test_shape(bits, quick ? 64 : 256, 1024, 0, ms, nm);
        static const long mbig[] = {1, 8, 130};
        if (!quick) test_shape(bits, 67, 14336, 1, mbig, 3);
        static const long qkv[] = {64, 32, 37}, gu[] = {48, 45};
        static const long mf[] = {1, 4, 8, 17, 100, 130}, mfq[] = {1, 9, 100};
        test_fused(bits, qkv, 3, 256, quick ? mfq : mf, quick ? 3 : 6);
        test_fused(bits, gu, 2, 320, quick ? mfq : mf, quick ? 3 : 6);
        static const long gu4[] = {48, 64}; /* every part's rows a multiple of 4: the fused INT8 GEMM, part by part */
        test_fused(bits, gu4, 2, 320, quick ? mfq : mf, quick ? 3 : 6);
        test_random(bits, quick ? 40 : 200, 64 * (quick ? 3 : 9), quick ? mfq : mf, quick ? 3 : 6);
    }
    test_refused();
    static const long mst[] = {1, 4, 9, 70}, mstq[] = {1, 9};
    test_static(4, quick ? 37 : 211, quick ? 256 : 1536, quick ? mstq : mst, quick ? 2 : 4);
    test_static(8, quick ? 37 : 211, quick ? 256 : 1536, quick ? mstq : mst, quick ? 2 : 4);
    static const long msp[] = {1, 2, 3, 4, 5, 8}, mspq[] = {1, 3};
    test_static(4, quick ? 45 : 333, quick ? 512 : 4096, quick ? mspq : msp, quick ? 2 : 6);
    test_static(8, quick ? 45 : 333, quick ? 512 : 4096, quick ? mspq : msp, quick ? 2 : 6);
    test_static_fused(4, 320);
    test_static_fused(8, 320);
    /* the GEMV limit moved: every m through the tensor-core path, then every m through the GEMV */
    kc_int_set_gemv_max(0);
    test_shape(4, 41, 256, 1, (const long[]){1, 3}, 2);
    test_shape(8, 41, 256, 1, (const long[]){1, 3}, 2);
    kc_int_set_gemv_max(40);
    test_shape(4, 41, 256, 0, (const long[]){17, 40}, 2);
    test_shape(8, 41, 256, 0, (const long[]){17, 40}, 2);
    kc_int_set_gemv_max(-1);
    {   /* 8-bit matrices whose rows suit TMA took the fused-epilogue GEMM from 65 tokens (not the fallback) */
        char what[120];
        snprintf(what, sizeof what, "the fused INT8 GEMM ran %ld times (sm_90a device: %d)", kc_i8_gemm_count(),
                 kc_sm90a());
        verdict(kc_sm90a() ? kc_i8_gemm_count() > 0 : kc_i8_gemm_count() == 0, what);
    }
    printf("test_kc_int: %d passed, %d failed\n", n_pass, n_fail);
    kc_shutdown();
    return n_fail ? 1 : 0;
}
