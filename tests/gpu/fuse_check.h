/* fuse_check.h - test_kc_sq's sections on what the dp4a GEMV finishes in
 * its tile ends (kc_sq_gemv_ep.cuh): RoPE with the K/V store, SwiGLU split
 * over gate/up and down, RMSNorm split over the residual matmul and the
 * next one, and the attention output quantized by the o matmul. Each
 * compares the fused launches with the plain ones, bit for bit. Included
 * by test_kc_sq.c after its helpers (verdict, fill_x, quick). */
#ifndef FUSE_CHECK_H
#define FUSE_CHECK_H

/* a device array, downloaded (freed by the caller) */
static float *dev_down(const float *d, long count) {
    float *h = malloc(count * 4);
    OK(kc_download(h, d, count * 4));
    return h;
}

/* how many of count floats differ in their bits between two device arrays */
static long dev_diff(const float *da, const float *db, long count) {
    float *a = dev_down(da, count), *b = dev_down(db, count);
    long bad = 0;
    for (long i = 0; i < count; i++) bad += memcmp(&a[i], &b[i], 4) != 0;
    free(a), free(b);
    return bad;
}

/* how many of count floats of a device array differ from host values (a
 * reference that did change its output, so a comparison is not vacuous) */
static long dev_moved(const float *d, const float *host, long count) {
    float *a = dev_down(d, count);
    long moved = 0;
    for (long i = 0; i < count; i++) moved += a[i] != host[i];
    free(a);
    return moved;
}

/* ---- RoPE and the K/V store in the q/k/v matmul's epilogue (kc_sq_matmul_qkv_rope) ---------
 *
 * A fused q/k/v matrix (4 q heads and 2 k/v heads of 64, or of 128) at
 * 1-4 tokens, each at its own position and cache block: q, k, v and the
 * cache after the fused call are bit for bit kc_sq_matmul_parts followed
 * by kc_rope_kv_store, with the whole head rotated and with half of it, on
 * both layouts (half and float scales), the staged and register kernels. */
static void rope_case(kc_sq_t *w, int HD, long m, int rot_dim, const char *what) {
    enum { NH = 4, NKV = 2, BS = 16, NB = 4, NL = 2, LAYER = 1 };
    const int KVD = NKV * HD;
    const long k = 64 * 5, nq = NH * HD, cache = (long)NB * NL * BS * KVD;
    static const int32_t pos[4] = {5, 37, 20, 2}, off[4] = {0, 4, 8, 12};
    static const int32_t blk[16] = {3, 1, 0, 2, 2, 0, 1, 3, 0, 2, 3, 1, 1, 0, 2, 3};
    float inv[64] = {0}, *x = malloc(m * k * 4); /* (HD <= 128) */
    for (int i = 0; i < rot_dim / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / rot_dim);
    fill_x(x, m, k);
    float *dx = dmalloc(m * k * 4), *dsx = dmalloc(16), *dinv = dmalloc(sizeof inv), *dcs = dmalloc(m * HD * 4);
    int8_t *dqx = dmalloc(m * k);
    int32_t *dpos = dmalloc(sizeof pos), *doff = dmalloc(sizeof off), *dblk = dmalloc(sizeof blk);
    OK(kc_upload(dx, x, m * k * 4));
    OK(kc_upload(dinv, inv, sizeof inv));
    OK(kc_upload(dpos, pos, sizeof pos));
    OK(kc_upload(doff, off, sizeof off));
    OK(kc_upload(dblk, blk, sizeof blk));
    OK(kc_quant_i8(dx, m, k, dqx, dsx));
    float *y[2][3];
    kc_kv_t kv[2];
    for (int v = 0; v < 2; v++) {
        const long nn[3] = {nq, KVD, KVD};
        for (int p = 0; p < 3; p++) {
            y[v][p] = dmalloc(m * nn[p] * 4);
            OK(kc_memset(y[v][p], 0xFF, m * nn[p] * 4));
        }
        kv[v] = (kc_kv_t){dmalloc(cache * 4), dmalloc(cache * 4), NL, KVD, BS};
        OK(kc_memset(kv[v].d_k, 0x3C, cache * 4));
        OK(kc_memset(kv[v].d_v, 0x3C, cache * 4));
    }
    OK(kc_sq_matmul_parts(w, dqx, dsx, m, y[0]));
    OK(kc_rope_kv_store(y[0][0], y[0][1], y[0][2], (int)m, NH, NKV, HD, rot_dim, dinv, &kv[0], LAYER, dpos, dblk, doff));
    OK(kc_rope_table(dcs, dpos, (int)m, rot_dim, dinv));
    const kc_rope_t r = {dcs, dpos, dblk, doff, kv[1], LAYER, HD, rot_dim};
    const int rc = kc_sq_matmul_qkv_rope(w, dqx, dsx, m, y[1], &r);
    const int same = rc == 1 && !dev_diff(y[0][0], y[1][0], m * nq) && !dev_diff(y[0][1], y[1][1], m * KVD) &&
                     !dev_diff(y[0][2], y[1][2], m * KVD) && !dev_diff(kv[0].d_k, kv[1].d_k, cache) &&
                     !dev_diff(kv[0].d_v, kv[1].d_v, cache);
    char line[300];
    snprintf(line, sizeof line, "q/k/v + RoPE (%d of %d) + K/V store in the epilogue, %s, m = %ld: q, k, v, cache bit-exact (rc %d)",
             rot_dim, HD, what, m, rc);
    verdict(same, line);
    for (int v = 0; v < 2; v++) {
        for (int p = 0; p < 3; p++) kc_free(y[v][p]);
        kc_free(kv[v].d_k), kc_free(kv[v].d_v);
    }
    free(x);
    kc_free(dx), kc_free(dsx), kc_free(dinv), kc_free(dcs), kc_free(dqx), kc_free(dpos), kc_free(doff), kc_free(dblk);
}

static void test_rope(void) {
    kc_sq_set_rope(1);
    kc_sq_set_gemv_max(4);
    for (int st = 1; st >= 0; st--) {
        kc_sq_set_gemv_stage(st);
        for (int f = 0; f < 4; f++) { /* compact half, explicit half, explicit float scales; head size 128 */
            const int flags = (int[]){KC_SQ_F16_SCALES, KC_SQ_NO_COMPACT | KC_SQ_F16_SCALES, KC_SQ_NO_COMPACT,
                                      KC_SQ_F16_SCALES}[f];
            const int hd = f == 3 ? 128 : 64; /* 4 q heads and 2 k/v heads of hd */
            kc_sq_t *p[3] = {kc_sq_random_ex(4 * hd, 64 * 5, 4, 64, 8, 11, flags),
                             kc_sq_random_ex(2 * hd, 64 * 5, 4, 64, 8, 12, flags),
                             kc_sq_random_ex(2 * hd, 64 * 5, 4, 64, 8, 13, flags)};
            kc_sq_t *w = p[0] && p[1] && p[2] ? kc_sq_fuse((const kc_sq_t *const *)p, 3) : NULL;
            for (int i = 0; i < 3; i++) kc_sq_free(p[i]);
            if (!w) {
                verdict(0, kc_error());
                continue;
            }
            char what[200];
            snprintf(what, sizeof what, "%s, %s kernel", kc_sq_describe(w), st ? "staged" : "register");
            for (long m = 1; m <= 4; m++) rope_case(w, hd, m, hd, what), rope_case(w, hd, m, hd / 2, what);
            kc_sq_free(w);
        }
    }
    kc_sq_set_gemv_stage(-1);
    kc_sq_set_gemv_max(-1);
    kc_sq_set_rope(-1);
}

/* ---- SwiGLU by the gate/up and down matmuls (kc_sq_matmul_swiglu, kc_sq_matmul_acc_h) -------
 *
 * A fused gate/up matrix (rows x dim each part) and a down matrix (dim' x
 * rows) at 1-4 tokens: h and the residual stream after the two fused calls
 * are bit for bit kc_sq_matmul_parts + kc_silu_mul_q8 + kc_sq_matmul_acc.
 * Grids capped to 7, 1 and 3 blocks as well (kc_sq_set_gemv_grid; the
 * fused launch must then have that many slots), so blocks walk many
 * pairs, in even and uneven shares; a zero input row (fill_x's row 1 at m > 2:
 * h = 0, scale 0); the slots poisoned with a huge value. */
/* returns the fused launch's slots (its grid); want_slots > 0: the count it must be */
static int swiglu_case(kc_sq_t *gu, kc_sq_t *down, long dim, long ffn, long m, int want_slots, const char *what) {
    float *x = malloc(m * dim * 4), *r = malloc(m * dim * 4);
    fill_x(x, m, dim);
    float *dx = dmalloc(m * dim * 4), *dsx = dmalloc(16), *dsx2 = dmalloc(16), *dg = dmalloc(m * ffn * 4);
    float *du = dmalloc(m * ffn * 4), *dh = dmalloc(m * ffn * 4), *dy[2];
    const long cap = kc_sq_swiglu_slots(gu);
    float *dmax = dmalloc(cap * 4);
    int8_t *dqx = dmalloc(m * dim), *dqh = dmalloc(m * ffn);
    OK(kc_upload(dx, x, m * dim * 4));
    OK(kc_quant_i8(dx, m, dim, dqx, dsx));
    /* the residual at each row's own scale, that of what the layer adds to
     * it: a row of magnitude 2^-20 adds ~2^-40, which a residual of ~1 would
     * absorb whole, leaving the x + h down^T comparison vacuous (the first
     * GPU run failed its `moved` check so at one token) */
    for (int v = 0; v < 2; v++) {
        dy[v] = dmalloc(m * dim * 4);
        OK(kc_memset(dy[v], 0, m * dim * 4));
    }
    OK(kc_sq_matmul_parts(gu, dqx, dsx, m, (float *const[]){dg, du}));
    OK(kc_silu_mul_q8(dg, du, (int)m, (int)ffn, dqh, dsx2));
    OK(kc_sq_matmul_acc(down, dqh, dsx2, m, dy[0]));
    float *add = dev_down(dy[0], m * dim);
    for (long i = 0; i < m; i++) {
        float mx = 0.0f;
        for (long j = 0; j < dim; j++) mx = fmaxf(mx, fabsf(add[i * dim + j]));
        for (long j = 0; j < dim; j++) r[i * dim + j] = frand() * mx;
    }
    free(add);
    for (int v = 0; v < 2; v++) OK(kc_upload(dy[v], r, m * dim * 4));
    OK(kc_memset(dg, 0xFF, m * ffn * 4));
    OK(kc_memset(dh, 0xFF, m * ffn * 4));
    OK(kc_memset(dmax, 0x7F, cap * 4)); /* ~3.4e38: a slot left unwritten would set the scale (NaN would be skipped) */
    /* the reference: the three launches the backend runs without the fusion */
    OK(kc_sq_matmul_parts(gu, dqx, dsx, m, (float *const[]){dg, du}));
    OK(kc_silu_mul_q8(dg, du, (int)m, (int)ffn, dqh, dsx2));
    OK(kc_sq_matmul_acc(down, dqh, dsx2, m, dy[0]));
    int nslot = 0;
    const int rc1 = kc_sq_matmul_swiglu(gu, down, dqx, dsx, NULL, NULL, m, dh, dmax, cap, &nslot);
    const int rc2 = rc1 ? -1 : kc_sq_matmul_acc_h(down, dh, dmax, nslot, m, dy[1], NULL);
    if (rc1 || rc2) printf("  %s\n", kc_error()), kc_clear_error();
    const long bad_h = dev_diff(dg, dh, m * ffn), bad_y = dev_diff(dy[0], dy[1], m * dim);
    const long moved = dev_moved(dy[0], r, m * dim); /* the reference did add something to the residual */
    char line[600];
    snprintf(line, sizeof line,
             "SwiGLU by the matmuls, %s, %ld x %ld, m = %ld, %d slots: h (%ld differ) and x + h down^T (%ld differ) "
             "bit-exact",
             what, ffn, dim, m, nslot, bad_h, bad_y);
    verdict(!rc1 && !rc2 && nslot >= 1 && nslot <= cap / 4 && (!want_slots || nslot == want_slots) && !bad_h &&
                !bad_y && moved,
            line);
    free(x), free(r);
    kc_free(dx), kc_free(dsx), kc_free(dsx2), kc_free(dg), kc_free(du), kc_free(dh), kc_free(dmax), kc_free(dqx);
    kc_free(dqh), kc_free(dy[0]), kc_free(dy[1]);
    return nslot;
}

/* gate/up (ffn x dim each) and down (dim x ffn) of one layout */
static void swiglu_shape(long dim, long ffn, int flags, const char *label) {
    kc_sq_t *p[2] = {kc_sq_random_ex(ffn, dim, 4, 64, 8, 21, flags), kc_sq_random_ex(ffn, dim, 4, 64, 8, 22, flags)};
    kc_sq_t *down = kc_sq_random_ex(dim, ffn, 4, 64, 8, 23, flags);
    kc_sq_t *gu = p[0] && p[1] ? kc_sq_fuse((const kc_sq_t *const *)p, 2) : NULL;
    kc_sq_free(p[0]), kc_sq_free(p[1]);
    if (!gu || !down) {
        verdict(0, kc_error());
        kc_clear_error();
    } else {
        /* the grid as the kernels size it, then capped (the numbers do not
         * depend on it): blocks with one pair of tiles, with several, and
         * with an uneven share of the pairs */
        static const long caps[] = {0, 7, 1, 3};
        int sized[5] = {0};
        for (int c = 0; c < (quick ? 2 : 4); c++) {
            kc_sq_set_gemv_grid(caps[c]);
            char what[256], grid[32] = "grid as sized";
            if (caps[c]) snprintf(grid, sizeof grid, "grid capped at %ld", caps[c]);
            snprintf(what, sizeof what, "%s (%s), %s", label, kc_sq_describe(gu), grid);
            for (long m = 1; m <= 4; m++) {
                const int want = !caps[c] ? 0 : caps[c] < sized[m] ? (int)caps[c] : sized[m];
                const int got = swiglu_case(gu, down, dim, ffn, m, want, what);
                if (!caps[c]) sized[m] = got;
            }
        }
        kc_sq_set_gemv_grid(0);
    }
    kc_sq_free(gu), kc_sq_free(down);
}

static void test_swiglu(void) {
    kc_sq_set_gemv_max(4);
    kc_sq_set_swiglu(0);
    kc_sq_t *a[2] = {kc_sq_random_ex(64, 128, 4, 64, 8, 1, 0), kc_sq_random_ex(64, 128, 4, 64, 8, 2, 0)};
    kc_sq_t *gu = kc_sq_fuse((const kc_sq_t *const *)a, 2), *dn = kc_sq_random_ex(128, 64, 4, 64, 8, 3, 0);
    verdict(gu && dn && !kc_sq_swiglu_applies(gu, dn, 1), "SwiGLU by the matmuls: off unless asked for");
    kc_sq_set_swiglu(1);
    verdict(gu && dn && kc_sq_swiglu_applies(gu, dn, 1) && !kc_sq_swiglu_applies(gu, dn, 5) &&
                !kc_sq_swiglu_applies(dn, dn, 1) && !kc_sq_swiglu_applies(gu, gu, 1),
            "SwiGLU by the matmuls: taken for a gate/up pair and its down matrix at 1-4 tokens only");
    kc_sq_set_gemv_stage(0);
    verdict(gu && dn && !kc_sq_swiglu_applies(gu, dn, 1), "SwiGLU by the matmuls: not with the register kernel");
    kc_sq_set_gemv_stage(1); /* (whatever KC_SQ_GEMV_STAGE says) */
    int ns = 0;
    verdict(kc_sq_matmul_swiglu(dn, dn, (const int8_t *)dn, (const float *)dn, NULL, NULL, 1, (float *)dn, (float *)dn,
                                1 << 20, &ns) == -1 && strstr(kc_error(), "kc_sq_matmul_swiglu") != NULL,
            "SwiGLU by the matmuls: a matrix it does not take is refused with a message");
    kc_clear_error();
    kc_sq_free(a[0]), kc_sq_free(a[1]), kc_sq_free(gu), kc_sq_free(dn);
    static const int fl[4] = {KC_SQ_F16_SCALES, KC_SQ_F16_SCALES | KC_SQ_NO_COMPACT, 0, KC_SQ_NO_COMPACT};
    static const char *fn[4] = {"half scales", "explicit, half scales", "float scales", "explicit, float scales"};
    for (int f = 0; f < 4; f++) {
        swiglu_shape(320, 192, fl[f], fn[f]);                  /* 12 pairs */
        if (!quick) swiglu_shape(512, 64 * 150, fl[f], fn[f]); /* 600 pairs, and the down matrix's k of 9600 */
    }
    if (!quick) swiglu_shape(4096, 14336, KC_SQ_F16_SCALES, "Llama-3-8B"); /* the real FFN */
    kc_sq_set_swiglu(-1);
    kc_sq_set_gemv_stage(-1);
    kc_sq_set_gemv_max(-1);
}

/* ---- RMSNorm split over the matmuls around it (kc_sq_matmul_acc_ns, kc_sq_matmul_parts_ns) -----
 *
 * One layer's chain at 1-2 tokens, from the attention output to the next
 * layer's q/k/v: o + residual, RMSNorm, gate/up, SwiGLU, down + residual,
 * RMSNorm, q/k/v. Against the plain launches with kc_rmsnorm_q8_canon for
 * the norms: the residual stream after o and after down, h (or the gate
 * output) and q, k, v, bit for bit, with SwiGLU done by the matmuls and
 * without. A second case makes every tile of a token's row a tie (a zero
 * input and a constant residual row): the candidates overflow and the
 * reading matmul takes the tiles' values. */
typedef struct {
    kc_sq_t *o, *gu, *down, *qkv;
    long dim, q, kv, ffn;
} NsLayer;

/* the paged cache and angles of a RoPE case (rope_case's, for heads of 64) */
typedef struct {
    float *dinv, *dcs;
    int32_t *dpos, *dblk, *doff;
    kc_kv_t kv[2];
    long cache;
} NsRope;

static void ns_rope_init(NsRope *R, long m, long kvd) {
    enum { HD = 64, BS = 16, NB = 4, NL = 2 };
    static const int32_t pos[4] = {5, 37, 20, 2}, off[4] = {0, 4, 8, 12};
    static const int32_t blk[16] = {3, 1, 0, 2, 2, 0, 1, 3, 0, 2, 3, 1, 1, 0, 2, 3};
    float inv[HD / 2];
    for (int i = 0; i < HD / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / HD);
    R->dinv = dmalloc(sizeof inv), R->dcs = dmalloc(m * HD * 4);
    R->dpos = dmalloc(sizeof pos), R->doff = dmalloc(sizeof off), R->dblk = dmalloc(sizeof blk);
    OK(kc_upload(R->dinv, inv, sizeof inv));
    OK(kc_upload(R->dpos, pos, sizeof pos));
    OK(kc_upload(R->doff, off, sizeof off));
    OK(kc_upload(R->dblk, blk, sizeof blk));
    R->cache = (long)NB * NL * BS * kvd;
    for (int v = 0; v < 2; v++) {
        R->kv[v] = (kc_kv_t){dmalloc(R->cache * 4), dmalloc(R->cache * 4), NL, (int)kvd, BS};
        OK(kc_memset(R->kv[v].d_k, 0x3C, R->cache * 4));
        OK(kc_memset(R->kv[v].d_v, 0x3C, R->cache * 4));
    }
}

static void ns_rope_free(NsRope *R) {
    for (int v = 0; v < 2; v++) kc_free(R->kv[v].d_k), kc_free(R->kv[v].d_v);
    kc_free(R->dinv), kc_free(R->dcs), kc_free(R->dpos), kc_free(R->doff), kc_free(R->dblk);
}

static void ns_case(const NsLayer *L, long m, int swiglu, int ties, int rope, const char *what) {
    const long D = L->dim, Q = L->q, KV = L->kv, F = L->ffn, nt = kc_norm_split_tiles(D);
    NsRope R;
    if (rope) ns_rope_init(&R, m, KV);
    float *att = malloc(m * Q * 4), *x0 = malloc(m * D * 4), *wf = malloc(D * 4), *wa = malloc(D * 4);
    fill_x(att, m, Q);
    for (long i = 0; i < m * D; i++) x0[i] = frand() * 4.0f;
    for (long i = 0; i < D; i++) wf[i] = 0.5f + 0.5f * frand(), wa[i] = 1.0f + 0.25f * frand();
    if (ties) { /* token 0: a zero attention output over a constant residual row, unit weights; token 1
                 * (m = 2): a zero attention output over its random row, tile 3 of it scaled to ~1e-33 */
        for (long i = 0; i < m * Q; i++) att[i] = 0.0f;
        for (long i = 0; i < D; i++) x0[i] = 0.25f, wf[i] = 1.0f, wa[i] = 1.0f;
        if (m > 1)
            for (long i = 48; i < 64; i++) x0[D + i] *= 1e-33f;
    }
    float *datt = dmalloc(m * Q * 4), *dsa = dmalloc(16), *dwf = dmalloc(D * 4), *dwa = dmalloc(D * 4);
    int8_t *dqa = dmalloc(m * Q);
    OK(kc_upload(datt, att, m * Q * 4));
    OK(kc_upload(dwf, wf, D * 4));
    OK(kc_upload(dwa, wa, D * 4));
    OK(kc_quant_i8(datt, m, Q, dqa, dsa));
    /* [0]: the plain launches, [1]: the split */
    float *dx[2], *dxb[2], *dg[2], *du[2], *dq[2], *dk[2], *dv[2], *dsx[2][2];
    int8_t *dq8[2][2];
    for (int v = 0; v < 2; v++) {
        dx[v] = dmalloc(m * D * 4), dxb[v] = dmalloc(m * D * 4), dg[v] = dmalloc(m * F * 4), du[v] = dmalloc(m * F * 4);
        dq[v] = dmalloc(m * Q * 4), dk[v] = dmalloc(m * KV * 4), dv[v] = dmalloc(m * KV * 4);
        OK(kc_upload(dx[v], x0, m * D * 4));
        float *po[] = {dg[v], du[v], dq[v], dk[v], dv[v]};
        const long pc[] = {m * F, m * F, m * Q, m * KV, m * KV};
        for (int i = 0; i < 5; i++) OK(kc_memset(po[i], 0xFF, pc[i] * 4));
        for (int i = 0; i < 2; i++) dq8[v][i] = dmalloc(m * (F > D ? F : D)), dsx[v][i] = dmalloc(16);
    }
    double *dss = dmalloc(4 * nt * sizeof(double));
    float *dcand = dmalloc(4 * nt * 16), *dh = dmalloc(4 * (F / 16) * 4);
    OK(kc_memset(dss, 0x7F, 4 * nt * sizeof(double)));
    OK(kc_memset(dcand, 0x7F, 4 * nt * 16));
    OK(kc_memset(dh, 0x7F, 4 * (F / 16) * 4)); /* ~3.4e38: a SwiGLU slot left unwritten would set the scale */
    const float eps = 1e-5f;
    /* the plain launches */
    OK(kc_sq_matmul_acc(L->o, dqa, dsa, m, dx[0]));
    long bad_x1 = 0;
    OK(kc_rmsnorm_q8_canon(dxb[0], dx[0], dwf, (int)m, (int)D, eps, dq8[0][0], dsx[0][0]));
    OK(kc_sq_matmul_parts(L->gu, dq8[0][0], dsx[0][0], m, (float *const[]){dg[0], du[0]}));
    OK(kc_silu_mul_q8(dg[0], du[0], (int)m, (int)F, dq8[0][1], dsx[0][1]));
    OK(kc_sq_matmul_acc(L->down, dq8[0][1], dsx[0][1], m, dx[0]));
    OK(kc_rmsnorm_q8_canon(dxb[0], dx[0], dwa, (int)m, (int)D, eps, dq8[0][0], dsx[0][0]));
    OK(kc_sq_matmul_parts(L->qkv, dq8[0][0], dsx[0][0], m, (float *const[]){dq[0], dk[0], dv[0]}));
    /* the split (both norms through the same slots, as the backend does) */
    const kc_norm_split_t nsf = {dwf, eps, dss, dcand}, nsa = {dwa, eps, dss, dcand};
    if (rope)
        OK(kc_rope_kv_store(dq[0], dk[0], dv[0], (int)m, (int)(Q / 64), (int)(KV / 64), 64, 64, R.dinv, &R.kv[0], 1,
                            R.dpos, R.dblk, R.doff));
    int rc = kc_sq_matmul_acc_ns(L->o, dqa, dsa, m, dx[1], &nsf);
    /* ties: token 0's tiles must all be flagged (the candidates overflow), token 1's just tile 3 (tiny) */
    long unflagged = 0;
    if (!rc && ties) {
        float *c = dev_down(dcand, m * nt * 4);
        for (long t = 0; t < nt; t++) unflagged += c[4 * t + 3] != -1.0f;
        for (long t = 0; m > 1 && t < nt; t++) unflagged += (c[4 * (nt + t) + 3] == -1.0f) != (t == 3);
        free(c);
    }
    if (!rc) { /* the residual after o, before down adds to it */
        float *tmp = dmalloc(m * D * 4);
        OK(kc_upload(tmp, x0, m * D * 4)); /* (dx[0] is past down by now: o alone again) */
        OK(kc_sq_matmul_acc(L->o, dqa, dsa, m, tmp));
        bad_x1 = dev_diff(tmp, dx[1], m * D);
        kc_free(tmp);
    }
    int nslot = 0;
    if (!rc && swiglu) {
        rc = kc_sq_matmul_swiglu(L->gu, L->down, NULL, NULL, dx[1], &nsf, m, dg[1], dh, 4 * (F / 16), &nslot);
        if (!rc) rc = kc_sq_matmul_acc_h(L->down, dg[1], dh, nslot, m, dx[1], &nsa);
    } else if (!rc) {
        rc = kc_sq_matmul_parts_ns(L->gu, dx[1], &nsf, m, (float *const[]){dg[1], du[1]}, NULL);
        if (!rc) rc = kc_silu_mul_q8(dg[1], du[1], (int)m, (int)F, dq8[1][1], dsx[1][1]);
        if (!rc) rc = kc_sq_matmul_acc_ns(L->down, dq8[1][1], dsx[1][1], m, dx[1], &nsa);
    }
    if (!rc && rope) {
        rc = kc_rope_table(R.dcs, R.dpos, (int)m, 64, R.dinv);
        const kc_rope_t r = {R.dcs, R.dpos, R.dblk, R.doff, R.kv[1], 1, 64, 64};
        if (!rc) rc = kc_sq_matmul_parts_ns(L->qkv, dx[1], &nsa, m, (float *const[]){dq[1], dk[1], dv[1]}, &r);
        if (rc == 0) printf("  RoPE not taken by kc_sq_matmul_parts_ns\n");
        rc = rc == 1 ? 0 : -1;
    } else if (!rc) {
        rc = kc_sq_matmul_parts_ns(L->qkv, dx[1], &nsa, m, (float *const[]){dq[1], dk[1], dv[1]}, NULL);
    }
    if (rc) printf("  %s\n", kc_error()), kc_clear_error();
    const long bad_x = rc ? -1 : dev_diff(dx[0], dx[1], m * D), bad_h = rc ? -1 : dev_diff(dg[0], dg[1], m * F);
    long bad_qkv = rc ? -1 : dev_diff(dq[0], dq[1], m * Q) + dev_diff(dk[0], dk[1], m * KV) + dev_diff(dv[0], dv[1], m * KV);
    if (rope && !rc) bad_qkv += dev_diff(R.kv[0].d_k, R.kv[1].d_k, R.cache) + dev_diff(R.kv[0].d_v, R.kv[1].d_v, R.cache);
    char line[400];
    snprintf(line, sizeof line,
             "norm split over the matmuls, %s, %s%s, m = %ld%s: residual after o (%ld differ), after down (%ld), "
             "h (%ld), q/k/v%s (%ld) bit-exact%s",
             what, swiglu ? "SwiGLU by the matmuls" : "SwiGLU launched", rope ? ", RoPE by q/k/v" : "", m,
             ties ? ", tied tiles" : "", bad_x1, bad_x, bad_h, rope ? " and the cache" : "", bad_qkv,
             ties ? (unflagged ? ", the flags NOT as planted" : ", the flags as planted") : "");
    verdict(!rc && !bad_x1 && !bad_x && !bad_h && !bad_qkv && !unflagged, line);
    if (rope) ns_rope_free(&R);
    for (int v = 0; v < 2; v++) {
        kc_free(dx[v]), kc_free(dxb[v]), kc_free(dg[v]), kc_free(du[v]), kc_free(dq[v]), kc_free(dk[v]), kc_free(dv[v]);
        for (int i = 0; i < 2; i++) kc_free(dq8[v][i]), kc_free(dsx[v][i]);
    }
    kc_free(datt), kc_free(dsa), kc_free(dwf), kc_free(dwa), kc_free(dqa), kc_free(dss), kc_free(dcand), kc_free(dh);
    free(att), free(x0), free(wf), free(wa);
}

static kc_sq_t *ns_fused(const long *rows, int np, long k, int flags, uint64_t seed) {
    kc_sq_t *p[3] = {NULL, NULL, NULL};
    int ok = 1;
    for (int i = 0; i < np; i++) ok &= (p[i] = kc_sq_random_ex(rows[i], k, 4, 64, 8, seed + i, flags)) != NULL;
    kc_sq_t *w = ok ? kc_sq_fuse((const kc_sq_t *const *)p, np) : NULL;
    for (int i = 0; i < np; i++) kc_sq_free(p[i]);
    return w;
}

static void ns_shape(long dim, long q, long kv, long ffn, int flags, const char *label) {
    NsLayer L = {kc_sq_random_ex(dim, q, 4, 64, 8, 41, flags), ns_fused((const long[]){ffn, ffn}, 2, dim, flags, 42),
                 kc_sq_random_ex(dim, ffn, 4, 64, 8, 44, flags), ns_fused((const long[]){q, kv, kv}, 3, dim, flags, 45),
                 dim, q, kv, ffn};
    if (!L.o || !L.gu || !L.down || !L.qkv) {
        verdict(0, kc_error());
        kc_clear_error();
    } else {
        char what[256];
        snprintf(what, sizeof what, "%s (%s), %ld x %ld, ffn %ld", label, kc_sq_describe(L.o), dim, q, ffn);
        for (long m = 1; m <= 2; m++)
            for (int sw = 0; sw < 2; sw++) ns_case(&L, m, sw, 0, 0, what);
        ns_case(&L, 2, 1, 1, 0, what), ns_case(&L, 2, 0, 1, 0, what); /* tied tiles */
        ns_case(&L, 1, 1, 0, 1, what), ns_case(&L, 2, 0, 0, 1, what); /* RoPE in the q/k/v epilogue */
    }
    kc_sq_free(L.o), kc_sq_free(L.gu), kc_sq_free(L.down), kc_sq_free(L.qkv);
}

static void test_norm_split(void) {
    kc_sq_set_gemv_max(4);
    kc_sq_set_gemv_stage(1);
    kc_sq_set_norm(0);
    kc_sq_t *o = kc_sq_random_ex(64, 128, 4, 64, 8, 5, 0);
    verdict(o && !kc_sq_gemv_mode_applies(o, 1, KC_GEMV_END_NORM), "norm split: off unless asked for");
    kc_sq_set_norm(1);
    verdict(o && kc_sq_gemv_mode_applies(o, 1, KC_GEMV_END_NORM) && kc_sq_gemv_mode_applies(o, 2, KC_GEMV_ACTS_NORM) &&
                !kc_sq_gemv_mode_applies(o, 3, KC_GEMV_END_NORM) && !kc_sq_gemv_mode_applies(o, 1, 3),
            "norm split: one or two tokens, modes that exist");
    kc_sq_free(o);
    kc_sq_set_swiglu(1);
    kc_sq_set_rope(1);
    static const int fl[4] = {KC_SQ_F16_SCALES, KC_SQ_F16_SCALES | KC_SQ_NO_COMPACT, 0, KC_SQ_NO_COMPACT};
    static const char *fn[4] = {"half scales", "explicit, half scales", "float scales", "explicit, float scales"};
    for (int f = 0; f < 4; f++) {
        ns_shape(320, 256, 64, 192, fl[f], fn[f]);
        if (!quick) ns_shape(1024, 1024, 256, 64 * 45, fl[f], fn[f]);
    }
    if (!quick) {
        ns_shape(8192, 1024, 256, 256, KC_SQ_F16_SCALES, "a 70B-wide row (512 tiles: the reference's rounds)");
        ns_shape(4096, 4096, 1024, 14336, KC_SQ_F16_SCALES, "Llama-3-8B");
    }
    kc_sq_set_rope(-1);
    kc_sq_set_swiglu(-1);
    kc_sq_set_norm(-1);
    kc_sq_set_gemv_stage(-1);
    kc_sq_set_gemv_max(-1);
}

/* ---- the attention output quantized by the o matmul (kc_attention_max, kc_sq_matmul_acc_h) -----
 *
 * 1-4 rows, each its own sequence at its own length (5 to 1200 positions,
 * long enough to split), 8 query heads over 2 K/V heads and 4 over 4, the
 * split off, by default and 3 ways: the attention output and the residual
 * after o bit for bit against kc_attention + kc_quant_i8 + kc_sq_matmul_acc. */
static void attq_case(kc_sq_t *o, long dim, int n_head, int n_kv, int HD, long m, int split, const char *what) {
    enum { BS = 16, NL = 2, LAYER = 1, BPS = 1216 / 16 };
    static const int32_t lens[4] = {700, 37, 1200, 5};
    const long q = (long)n_head * HD, kvd = (long)n_kv * HD, cache = m * BPS * NL * BS * kvd;
    int32_t pos[4], off[4], *blk = malloc(m * BPS * 4);
    for (long i = 0; i < m; i++) pos[i] = lens[i] - 1, off[i] = (int32_t)(i * BPS);
    for (long j = 0; j < m * BPS; j++) blk[j] = (int32_t)((j * 7) % (m * BPS)); /* a scattered table */
    kc_kv_t kv = {dmalloc(cache * 4), dmalloc(cache * 4), NL, (int)kvd, BS};
    OK(kc_fill(kv.d_k, cache, 0.0f, 1.0f, 71));
    OK(kc_fill(kv.d_v, cache, 0.0f, 1.0f, 72));
    float *dq = dmalloc(m * q * 4), *dmax = dmalloc(4 * n_head * 4), *dsx = dmalloc(16), *r = malloc(m * dim * 4);
    int32_t *dpos = dmalloc(sizeof pos), *doff = dmalloc(sizeof off), *dblk = dmalloc(m * BPS * 4);
    int8_t *dqx = dmalloc(m * q);
    OK(kc_fill(dq, m * q, 0.0f, 2.0f, 73));
    OK(kc_upload(dpos, pos, m * 4));
    OK(kc_upload(doff, off, m * 4));
    OK(kc_upload(dblk, blk, m * BPS * 4));
    OK(kc_memset(dmax, 0x7F, 4 * n_head * 4));
    for (long i = 0; i < m * dim; i++) r[i] = frand();
    float *dout[2], *dy[2];
    for (int v = 0; v < 2; v++) {
        dout[v] = dmalloc(m * q * 4), dy[v] = dmalloc(m * dim * 4);
        OK(kc_memset(dout[v], 0xFF, m * q * 4));
        OK(kc_upload(dy[v], r, m * dim * 4));
    }
    kc_attn_set_split(split);
    OK(kc_attention(dout[0], dq, &kv, LAYER, (int)m, dpos, dblk, doff, n_head, n_kv, HD, 1216, 0));
    OK(kc_quant_i8(dout[0], m, q, dqx, dsx));
    OK(kc_sq_matmul_acc(o, dqx, dsx, m, dy[0]));
    int rc = kc_attention_max(dout[1], dq, &kv, LAYER, (int)m, dpos, dblk, doff, n_head, n_kv, HD, 1216, dmax);
    long bad_slot = 0; /* each (row, head)'s slot: the max |out| of that head, as the host takes it */
    if (!rc) {
        float *a = dev_down(dout[1], m * q), *mx = dev_down(dmax, m * n_head);
        for (long h = 0; h < m * n_head; h++) {
            float want = 0.0f;
            for (long j = 0; j < HD; j++) want = fmaxf(want, fabsf(a[h * HD + j]));
            bad_slot += memcmp(&want, &mx[h], 4) != 0;
        }
        free(a), free(mx);
    }
    if (!rc) rc = kc_sq_matmul_acc_h(o, dout[1], dmax, n_head, m, dy[1], NULL);
    long bad_ns = 0; /* one and two rows: the same launch leaving the next norm's slots, against the INT8 input's */
    if (!rc && m <= 2) {
        const long nt = kc_norm_split_tiles(dim);
        double *ss[2];
        float *cd[2], *yy[2], *wn = dmalloc(dim * 4);
        OK(kc_fill(wn, dim, 0.0f, 1.0f, 74));
        for (int v = 0; v < 2; v++) {
            ss[v] = dmalloc(m * nt * 8), cd[v] = dmalloc(m * nt * 16), yy[v] = dmalloc(m * dim * 4);
            OK(kc_memset(ss[v], 0x7F, m * nt * 8));
            OK(kc_memset(cd[v], 0x7F, m * nt * 16));
            OK(kc_upload(yy[v], r, m * dim * 4));
        }
        const kc_norm_split_t n0 = {wn, 1e-5f, ss[0], cd[0]}, n1 = {wn, 1e-5f, ss[1], cd[1]};
        rc = kc_sq_matmul_acc_ns(o, dqx, dsx, m, yy[0], &n0);
        if (!rc) rc = kc_sq_matmul_acc_h(o, dout[1], dmax, n_head, m, yy[1], &n1);
        if (!rc)
            bad_ns = dev_diff(yy[0], yy[1], m * dim) + dev_diff((const float *)ss[0], (const float *)ss[1], 2 * m * nt) +
                     dev_diff(cd[0], cd[1], 4 * m * nt) + dev_diff(yy[0], dy[0], m * dim);
        for (int v = 0; v < 2; v++) kc_free(ss[v]), kc_free(cd[v]), kc_free(yy[v]);
        kc_free(wn);
    }
    kc_attn_set_split(-1);
    if (rc) printf("  %s\n", kc_error()), kc_clear_error();
    const long bad_a = rc ? -1 : dev_diff(dout[0], dout[1], m * q), bad_y = rc ? -1 : dev_diff(dy[0], dy[1], m * dim);
    const long moved = dev_moved(dy[0], r, m * dim); /* the reference did add something */
    char line[300];
    snprintf(line, sizeof line,
             "attention output quantized by the o matmul, %s, heads %d/%d of %d, m = %ld, split %d: attention (%ld "
             "differ), heads' maxima (%ld), x + att o^T (%ld), with the norm's slots (%ld) bit-exact",
             what, n_head, n_kv, HD, m, split, bad_a, bad_slot, bad_y, bad_ns);
    verdict(!rc && !bad_a && !bad_slot && !bad_y && !bad_ns && moved, line);
    for (int v = 0; v < 2; v++) kc_free(dout[v]), kc_free(dy[v]);
    kc_free(kv.d_k), kc_free(kv.d_v), kc_free(dq), kc_free(dmax), kc_free(dsx), kc_free(dpos), kc_free(doff);
    kc_free(dblk), kc_free(dqx);
    free(blk), free(r);
}

static void test_attq(void) {
    kc_sq_set_attq(-1);
    verdict(!kc_sq_attq_on() || getenv("KC_SQ_ATTQ"), "attention output by the o matmul: off unless asked for");
    kc_sq_set_gemv_max(4);
    kc_sq_set_gemv_stage(1);
    kc_sq_set_norm(1); /* (the variant that also leaves the norm's slots) */
    /* heads, kv heads, head size: GQA and MHA at 64, and 128 (the Llama shapes' rows kernel) */
    static const int heads[3][3] = {{8, 2, 64}, {4, 4, 64}, {4, 1, 128}};
    for (int f = 0; f < 3; f++) { /* compact half, explicit half, explicit float scales */
        const int flags = (int[]){KC_SQ_F16_SCALES, KC_SQ_F16_SCALES | KC_SQ_NO_COMPACT, KC_SQ_NO_COMPACT}[f];
        for (int hh = 0; hh < 3; hh++) {
            const long dim = 320, q = (long)heads[hh][0] * heads[hh][2];
            kc_sq_t *o = kc_sq_random_ex(dim, q, 4, 64, 8, 81 + hh, flags);
            if (!o) {
                verdict(0, kc_error());
                kc_clear_error();
                continue;
            }
            for (long m = 1; m <= 4; m++)
                for (int sp = 0; sp < (quick ? 2 : 3); sp++)
                    attq_case(o, dim, heads[hh][0], heads[hh][1], heads[hh][2], m, (int[]){1, 0, 3}[sp],
                              kc_sq_describe(o));
            kc_sq_free(o);
        }
    }
    kc_sq_set_norm(-1);
    kc_sq_set_gemv_stage(-1);
    kc_sq_set_gemv_max(-1);
}

#endif
