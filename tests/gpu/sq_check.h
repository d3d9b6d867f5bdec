/* sq_check.h - test_kc_sq's checking machinery: one SQ matmul on the GPU
 * against the CPU reference (test_mm: fresh random tokens, outputs poisoned,
 * a guard past the output, the bound in test_kc_sq.c's header), and the
 * ways the tests make their matrices (sq_quantize on random weights,
 * kc_sq_random_ex, kc_sq_fuse) and run them at a list of token counts.
 * Static functions for the one test that includes it (after test_util.h
 * and test_rng.h); the test plan itself stays in test_kc_sq.c. */
#ifndef SQ_CHECK_H
#define SQ_CHECK_H

/* test hook in kc_sq.cu: device layout vs a host repack of t */
long kc_sq_debug_compare(const kc_sq_t *w, const k_sq_t *t, long *first);

static k_sq_t view(const sq_tensor_t *t) {
    k_sq_t w = {.h_low = t->cfg.h_low, .b = t->cfg.b, .h = t->h, .G = t->G, .n = t->n, .k = t->k,
                .lo = t->lo, .hi = t->hi, .idx = t->idx, .s_lo = t->s_lo, .s_hi = t->s_hi};
    return w;
}


/* runs the matmul of dw (the device copy of t) on m fresh random tokens and
 * compares with the CPU reference */
/* Set while the tensor-core two-step path (kc_sq_gemm.cu) is on: the
 * weights are rounded to FP16 (relative 2^-11; the INT8 activations are
 * exact) before FP32 sums, so the bound grows by 2^-9 x sum_j |w_j q_j sx|
 * of the row (twice the rounding, for margin). */
static int g_twostep;
static int g_upload_flags; /* kc_sq_upload_ex flags of test_fuse and test_big */
static long g_fuse_k = 64 * 7; /* test_fuse's row length */

static double twostep_slack(const k_sq_t *w, long r, const int8_t *qx, float sx) {
    if (!g_twostep) return 0;
    float *row = malloc((size_t)w->k * 4);
    if (!row) exit(2);
    k_sq_dequant_row(w, r, row);
    double s = 0;
    for (long j = 0; j < w->k; j++) s += fabs((double)row[j] * qx[j]);
    free(row);
    return ldexp(1.0, -9) * sx * s;
}

static void test_mm(const char *label, const k_sq_t *t, kc_sq_t *dw, long m) {
    const long n = t->n, k = t->k, ng = k / t->G;
    const size_t guard = 256;
    k_sq_t w = *t;
    float *x = malloc((size_t)(m * k) * 4), *sx = malloc((size_t)m * 4);
    int8_t *qx = malloc((size_t)(m * k));
    float *got = malloc(((size_t)(m * n) + guard) * 4);
    int32_t *lo = malloc((size_t)ng * 4), *hi = malloc((size_t)ng * 4);
    fill_x(x, m, k);
    for (long i = 0; i < m; i++) sx[i] = k_quant_row_i8(x + i * k, k, qx + i * k, NULL);
    float *dx = dmalloc((size_t)(m * k) * 4), *dsx = dmalloc((size_t)m * 4), *dy = dmalloc(((size_t)(m * n) + guard) * 4);
    int8_t *dq = dmalloc((size_t)(m * k));
    OK(kc_upload(dx, x, (size_t)(m * k) * 4));
    OK(kc_quant_i8(dx, m, k, dq, dsx));
    OK(kc_memset(dy, 0xFF, ((size_t)(m * n) + guard) * 4));
    OK(kc_sq_matmul(dw, dq, dsx, m, dy));
    OK(kc_download(got, dy, ((size_t)(m * n) + guard) * 4));
    /* the codes the GPU used must be the CPU's (checked bit-exact in test_quant too) */
    int8_t *gq = malloc((size_t)(m * k));
    OK(kc_download(gq, dq, (size_t)(m * k)));
    long qbad = memcmp(gq, qx, (size_t)(m * k)) != 0;
    free(gq);
    double worst = 0;
    long bad = 0, at_i = -1, at_r = -1;
    float want_at = 0, got_at = 0;
    for (long i = 0; i < m; i++)
        for (long r = 0; r < n; r++) {
            k_sq_group_sums_ref(&w, r, qx + i * k, lo, hi);
            float want = k_sq_combine(&w, r, sx[i], lo, hi);
            double mag = 0;
            for (long g = 0; g < ng; g++)
                mag += fabs((double)t->s_lo[r * ng + g] * lo[g]) + fabs((double)t->s_hi[r * ng + g] * hi[g]);
            double bound = (2.0 * ng + 4) * ldexp(1.0, -23) * sx[i] * mag + 1e-37 + twostep_slack(&w, r, qx + i * k, sx[i]);
            float gv = got[i * n + r];
            double e = isfinite(gv) ? fabs((double)gv - want) / bound : INFINITY;
            if (!(e <= 1)) bad++;
            if (!(e <= worst)) worst = e, at_i = i, at_r = r, want_at = want, got_at = gv;
        }
    long gbad = 0;
    for (size_t i = 0; i < guard; i++) {
        uint32_t u;
        memcpy(&u, &got[(size_t)(m * n) + i], 4);
        gbad += u != 0xFFFFFFFFu;
    }
    char what[200];
    snprintf(what, sizeof what, "%s n=%ld k=%ld m=%ld: worst err/bound %.3g%s%s", label, n, k, m, worst,
             gbad ? ", WROTE PAST THE OUTPUT" : "", qbad ? ", quant codes differ" : "");
    int ok = bad == 0 && gbad == 0 && qbad == 0;
    verdict(ok, what);
    if (!ok && at_i >= 0) {
        k_sq_group_sums_ref(&w, at_r, qx + at_i * k, lo, hi);
        double pl = 0, ph = 0;
        for (long g = 0; g < ng; g++)
            pl += (double)t->s_lo[at_r * ng + g] * lo[g] * sx[at_i], ph += (double)t->s_hi[at_r * ng + g] * hi[g] * sx[at_i];
        printf("     %ld bad; worst at token %ld row %ld: got %.9g want %.9g (low part %.6g, high part %.6g)\n", bad,
               at_i, at_r, got_at, want_at, pl, ph);
    }
    /* y += x . W^T in the dp4a epilogue: exactly the stored product added
     * to the old y (float add, round to nearest), nothing past the output;
     * refused where the dp4a path does not take the matrix */
    if (kc_sq_acc_applies(dw, m)) {
        float *y0 = malloc(((size_t)(m * n) + guard) * 4), *acc = malloc(((size_t)(m * n) + guard) * 4);
        fill_x(y0, m, n);
        memset(y0 + m * n, 0xFF, guard * 4);
        OK(kc_upload(dy, y0, ((size_t)(m * n) + guard) * 4));
        OK(kc_sq_matmul_acc(dw, dq, dsx, m, dy));
        OK(kc_download(acc, dy, ((size_t)(m * n) + guard) * 4));
        long abad = 0;
        for (size_t i = 0; i < (size_t)(m * n) + guard; i++) {
            float want = i < (size_t)(m * n) ? y0[i] + got[i] : y0[i];
            abad += memcmp(&want, &acc[i], 4) != 0;
        }
        snprintf(what, sizeof what, "%s n=%ld k=%ld m=%ld: y += x W^T (dp4a epilogue) %ld values differ from y + product",
                 label, n, k, m, abad);
        verdict(abad == 0, what);
        free(y0), free(acc);
    } else if (m >= 1) {
        int rc = kc_sq_matmul_acc(dw, dq, dsx, m, dy);
        kc_clear_error();
        snprintf(what, sizeof what, "%s n=%ld k=%ld m=%ld: kc_sq_matmul_acc refused off the dp4a path", label, n, k, m);
        verdict(rc == -1, what);
    }
    kc_free(dx), kc_free(dsx), kc_free(dy), kc_free(dq);
    free(x), free(sx), free(qx), free(got), free(lo), free(hi);
}

/* the device layout equals the host repacking of the same tensor */
static void check_layout(const char *label, const kc_sq_t *dw, const k_sq_t *w) {
    long first = -1, d = kc_sq_debug_compare(dw, w, &first);
    char what[220];
    snprintf(what, sizeof what, "%s layout: %ld bytes differ from the host repack%s", label, d, d ? "" : "");
    verdict(d == 0, what);
    if (d) printf("     first at byte %ld; row 0 scales %.9g %.9g\n", first, w->s_lo[0], w->s_hi[0]);
}

static int make_sq(sq_tensor_t *t, int h_high, int h_low, int b, int h, long n, long k) {
    sq_cfg_t c = {h_high, h_low, b, 1.0 - (double)h / b};
    const char *why = sq_cfg_check(&c, k);
    if (why) {
        printf("SKIP %d/%d b%d h%d: %s\n", h_high, h_low, b, h, why);
        return -1;
    }
    if (sq_alloc(t, &c, n, k)) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    float *W = malloc((size_t)(n * k) * 4);
    for (long i = 0; i < n * k; i++) W[i] = frand() * (next() % 16 == 0 ? 4.0f : 0.5f); /* some outliers */
    int rc = sq_quantize(t, W, NULL, NULL);
    free(W);
    const char *bad = rc ? "sq_quantize failed" : sq_validate(t);
    if (bad) {
        printf("FAIL making %d/%d b%d h%d: %s\n", h_high, h_low, b, h, bad);
        n_fail++;
        sq_free(t);
        return -1;
    }
    return 0;
}

static void test_shape_ex(int h_high, int h_low, int b, int h, long n, long groups, const long *ms, int nm,
                          int flags) {
    sq_tensor_t t;
    long G = b > 64 ? b : 64;
    if (make_sq(&t, h_high, h_low, b, h, n, G * groups)) return;
    k_sq_t w = view(&t);
    kc_sq_t *dw = kc_sq_upload_ex(&w, flags);
    if (!dw) {
        printf("FAIL kc_sq_upload %d/%d b%d h%d: %s\n", h_high, h_low, b, h, kc_error());
        n_fail++;
        kc_clear_error();
        sq_free(&t);
        return;
    }
    char label[160];
    snprintf(label, sizeof label, "sq_matmul %d/%d b%d h%d [%s]", h_high, h_low, b, h, kc_sq_describe(dw));
    check_layout(label, dw, &w);
    for (int i = 0; i < nm; i++) test_mm(label, &w, dw, ms[i]);
    kc_sq_free(dw);
    sq_free(&t);
}

static void test_shape(int h_high, int h_low, int b, int h, long n, long groups, const long *ms, int nm) {
    test_shape_ex(h_high, h_low, b, h, n, groups, ms, nm, 0);
}

/* kc_sq_fuse + kc_sq_matmul_parts: each part's output equals its own reference */
static void test_fuse(const long *ns, int count, int flags, const long *ms, int nm) {
    const long k = g_fuse_k;
    sq_cfg_t c = {8, 4, 64, 1.0 - 8.0 / 64};
    sq_tensor_t t[KC_SQ_MAX_PARTS];
    kc_sq_t *d[KC_SQ_MAX_PARTS];
    k_sq_t v[KC_SQ_MAX_PARTS];
    for (int p = 0; p < count; p++) {
        if (sq_alloc(&t[p], &c, ns[p], k)) exit(2);
        OK(kc_sq_random_host(ns[p], k, 4, 64, 8, next(), flags, t[p].lo, t[p].hi, t[p].idx, t[p].s_lo, t[p].s_hi));
        v[p] = view(&t[p]);
        d[p] = kc_sq_upload_ex(&v[p], g_upload_flags);
        if (!d[p]) {
            fprintf(stderr, "GPU: %s\n", kc_error());
            exit(2);
        }
    }
    kc_sq_t *f = kc_sq_fuse((const kc_sq_t *const *)d, count);
    char what[240];
    snprintf(what, sizeof what, "kc_sq_fuse of %d parts (%ld, %ld, ...): %s", count, ns[0], count > 1 ? ns[1] : 0L,
             f ? kc_sq_describe(f) : kc_error());
    verdict(f != NULL && kc_sq_parts(f) == count && kc_sq_iscale(f) == ((flags & KC_SQ_INT_SCALES) != 0), what);
    for (int i = 0; f && i < nm; i++) {
        long m = ms[i], ntot = 0;
        for (int p = 0; p < count; p++) ntot += ns[p];
        const size_t guard = 64;
        float *x = malloc((size_t)(m * k) * 4), *sx = malloc((size_t)m * 4);
        int8_t *qx = malloc((size_t)(m * k));
        fill_x(x, m, k);
        for (long r = 0; r < m; r++) sx[r] = k_quant_row_i8(x + r * k, k, qx + r * k, NULL);
        float *dsx = dmalloc((size_t)m * 4), *dy[KC_SQ_MAX_PARTS], *dall = dmalloc(((size_t)(m * ntot)) * 4);
        int8_t *dq = dmalloc((size_t)(m * k));
        OK(kc_upload(dq, qx, (size_t)(m * k)));
        OK(kc_upload(dsx, sx, (size_t)m * 4));
        for (int p = 0; p < count; p++) {
            dy[p] = dmalloc(((size_t)(m * ns[p]) + guard) * 4);
            OK(kc_memset(dy[p], 0xFF, ((size_t)(m * ns[p]) + guard) * 4));
        }
        OK(kc_memset(dall, 0xFF, (size_t)(m * ntot) * 4));
        OK(kc_sq_matmul_parts(f, dq, dsx, m, dy));
        OK(kc_sq_matmul(f, dq, dsx, m, dall));
        float *all = malloc((size_t)(m * ntot) * 4);
        OK(kc_download(all, dall, (size_t)(m * ntot) * 4));
        long bad = 0, gbad = 0, off = 0;
        double worst = 0;
        for (int p = 0; p < count; p++) {
            const long n = ns[p], ng = k / 64;
            float *got = malloc(((size_t)(m * n) + guard) * 4);
            int32_t lo[64], hi[64];
            OK(kc_download(got, dy[p], ((size_t)(m * n) + guard) * 4));
            for (long r = 0; r < m; r++)
                for (long row = 0; row < n; row++) {
                    k_sq_group_sums_ref(&v[p], row, qx + r * k, lo, hi);
                    float want = k_sq_combine(&v[p], row, sx[r], lo, hi);
                    double mag = 0;
                    for (long g = 0; g < ng; g++)
                        mag += fabs((double)t[p].s_lo[row * ng + g] * lo[g]) + fabs((double)t[p].s_hi[row * ng + g] * hi[g]);
                    double bound = (2.0 * ng + 4) * ldexp(1.0, -23) * sx[r] * mag + 1e-37 +
                                   twostep_slack(&v[p], row, qx + r * k, sx[r]);
                    float gv = got[r * n + row], av = all[r * ntot + off + row];
                    double e = isfinite(gv) ? fabs((double)gv - want) / bound : INFINITY;
                    double ea = isfinite(av) ? fabs((double)av - want) / bound : INFINITY;
                    /* one launch either way on the fused kernels: bit-equal; the two-step
                     * path runs one GEMM per part, whose summation order cuBLAS picks */
                    if (!(e <= 1) || (g_twostep ? !(ea <= 1) : memcmp(&gv, &av, 4) != 0)) bad++;
                    if (e > worst) worst = e;
                }
            for (size_t i2 = 0; i2 < guard; i2++) {
                uint32_t u;
                memcpy(&u, &got[(size_t)(m * n) + i2], 4);
                gbad += u != 0xFFFFFFFFu;
            }
            off += n;
            free(got);
            kc_free(dy[p]);
        }
        snprintf(what, sizeof what, "kc_sq_matmul_parts %d parts m=%ld: worst err/bound %.3g, %ld bad, equal to the "
                 "[m][n_total] matmul%s", count, m, worst, bad, gbad ? ", WROTE PAST AN OUTPUT" : "");
        verdict(bad == 0 && gbad == 0, what);
        kc_free(dsx), kc_free(dq), kc_free(dall);
        free(x), free(sx), free(qx), free(all);
    }
    kc_sq_free(f);
    /* a middle part that is not whole tiles is refused */
    if (count >= 2 && ns[0] % 16 == 0) {
        kc_sq_t *odd = kc_sq_random_ex(17, k, 4, 64, 8, 3, flags);
        const kc_sq_t *pp[2] = {odd, d[0]};
        kc_sq_t *bad = kc_sq_fuse(pp, 2);
        verdict(bad == NULL && strstr(kc_error(), "multiple of 16") != NULL, "kc_sq_fuse refuses a middle part of 17 rows");
        kc_clear_error();
        kc_sq_free(bad), kc_sq_free(odd);
    }
    for (int p = 0; p < count; p++) kc_sq_free(d[p]), sq_free(&t[p]);
}

/* the benchmark's shapes (real Llama-3 sizes), random matrices with half scales */
static void test_big(long n, long k, const long *ms, int nm) {
    sq_cfg_t c = {8, 4, 64, 1.0 - 8.0 / 64};
    sq_tensor_t t;
    if (sq_alloc(&t, &c, n, k)) exit(2);
    OK(kc_sq_random_host(n, k, 4, 64, 8, next(), KC_SQ_F16_SCALES, t.lo, t.hi, t.idx, t.s_lo, t.s_hi));
    k_sq_t w = view(&t);
    kc_sq_t *dw = kc_sq_upload_ex(&w, g_upload_flags);
    if (!dw) {
        fprintf(stderr, "GPU: %s\n", kc_error());
        exit(2);
    }
    char label[160];
    snprintf(label, sizeof label, "sq_matmul big [%s]", kc_sq_describe(dw));
    for (int i = 0; i < nm; i++) test_mm(label, &w, dw, ms[i]);
    kc_sq_free(dw);
    sq_free(&t);
}

/* the device generator against the host one, through sq_validate and the matmul;
 * with `via_upload` the host copy is also uploaded (half-scale detection) */
static void test_random(int h_low, int b, int h, long n, long k, int flags, const long *ms, int nm) {
    sq_cfg_t c = {8, h_low, b, 1.0 - (double)h / b};
    sq_tensor_t t;
    if (sq_alloc(&t, &c, n, k)) exit(2);
    uint64_t seed = next();
    OK(kc_sq_random_host(n, k, h_low, b, h, seed, flags, t.lo, t.hi, t.idx, t.s_lo, t.s_hi));
    const char *why = sq_validate(&t);
    char what[200];
    snprintf(what, sizeof what, "kc_sq_random_host %d-bit b%d h%d n=%ld k=%ld flags=%d: sq_validate %s", h_low, b, h,
             n, k, flags, why ? why : "ok");
    verdict(why == NULL, what);
    kc_sq_t *dw = kc_sq_random_ex(n, k, h_low, b, h, seed, flags);
    if (!dw) {
        printf("FAIL kc_sq_random_ex: %s\n", kc_error());
        n_fail++;
        kc_clear_error();
        sq_free(&t);
        return;
    }
    char label[160];
    snprintf(label, sizeof label, "sq_random %d-bit b%d h%d [%s]", h_low, b, h, kc_sq_describe(dw));
    k_sq_t wv = view(&t);
    check_layout(label, dw, &wv);
    for (int i = 0; i < nm; i++) test_mm(label, &wv, dw, ms[i]);
    kc_sq_free(dw);
    k_sq_t w = view(&t);
    if ((dw = kc_sq_upload(&w))) {
        snprintf(label, sizeof label, "sq_upload(random) %d-bit b%d h%d [%s]", h_low, b, h, kc_sq_describe(dw));
        check_layout(label, dw, &w);
        test_mm(label, &w, dw, ms[0]);
        kc_sq_free(dw);
    } else {
        printf("FAIL kc_sq_upload: %s\n", kc_error());
        n_fail++;
        kc_clear_error();
    }
    sq_free(&t);
}

#endif
