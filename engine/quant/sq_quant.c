/* sq_quant.c - SQ-format and uniform quantizers: RTN and GPTQ (sq_quant.h).
 * The format they write is model/sq.h's. */
#include "sq_quant.h"

#include "gptq.h"
#include "../../kernels/k_sq.h"

#include <math.h>
#include <stdlib.h>

/* ---- the SQ column quantizer ------------------------------------------------------ */

typedef struct {
    sq_tensor_t *t;
    uint8_t *mask;  /* n * k: 1 where high */
    int *slot;      /* n * k: index of a high element within its bank */
    float *srow;    /* n: integer bank scales' row scales (NULL: free halves) */
} sqq_t;

/* ---- integer bank scales (sq_quant.h) ---------------------------------------------- */

const char *sq_iscale_check(const sq_cfg_t *c) {
    return c->h_high == 8 ? NULL : "integer bank scales (:iscale) need 8-bit high codes";
}

int sq_iscale_kmax(const sq_cfg_t *c) { return 127 / sq_qmax(c->h_low); }

/* significant bits s_r may have so that k * s_r (k <= kmax) fits a half's 11 */
static int iscale_mant_bits(const sq_cfg_t *c) {
    int kb = 0;
    for (int v = sq_iscale_kmax(c); v; v >>= 1) kb++;
    return 11 - kb;
}

float sq_iscale_row(float amax, const sq_cfg_t *c) {
    if (!(amax > 0)) return 0;
    const int mb = iscale_mant_bits(c);
    const double t = (double)amax / 127.0;
    int e;
    frexp(t, &e);      /* t in [2^(e-1), 2^e) */
    e -= mb;           /* steps of 2^e give mb significant bits */
    if (e < -24) e = -24; /* halves' finest step: every multiple of 2^-24 up to 2^-13 is one */
    double m = ceil(t / ldexp(1.0, e));
    return (float)ldexp(m, e); /* m <= 2^mb: still exact, k * s_r too */
}

int sq_is_iscale(const sq_tensor_t *t) {
    return !sq_iscale_check(&t->cfg) && k_sq_iscale_rows(t->s_lo, t->s_hi, t->n, t->k / t->G, t->cfg.h_low, NULL);
}

static float round_clamp(float x, int q) {
    float v = nearbyintf(x);
    return v > q ? (float)q : v < -q ? (float)-q : v;
}

static void sqq_group(void *ctx, const float *W, long n, long k, long j0, long j1) {
    sqq_t *c = ctx;
    sq_tensor_t *t = c->t;
    long ng = k / t->G, g = j0 / t->G;
    for (long r = 0; r < n; r++) {
        float mlo = 0, mhi = 0;
        for (long j = j0; j < j1; j++) {
            float a = fabsf(W[r * k + j]);
            if (c->mask[r * k + j]) mhi = a > mhi ? a : mhi;
            else mlo = a > mlo ? a : mlo;
        }
        if (c->srow) { /* the low scale: the smallest multiple of s_r that clips nothing, up to kmax */
            const float sr = c->srow[r];
            const int kmax = sq_iscale_kmax(&t->cfg);
            double q = sr > 0 ? ceil((double)mlo / sq_qmax(t->cfg.h_low) / sr) : 0;
            t->s_lo[r * ng + g] = (float)(q > kmax ? kmax : q) * sr;
            t->s_hi[r * ng + g] = sr;
            continue;
        }
        /* halves, rounded up (no code clips): the file stores them exactly */
        t->s_lo[r * ng + g] = sq_scale_up_to_half(mlo / (float)sq_qmax(t->cfg.h_low));
        t->s_hi[r * ng + g] = sq_scale_up_to_half(mhi / (float)sq_qmax(t->cfg.h_high));
    }
}

static float sqq_quant(void *ctx, long r, long j, float w) {
    sqq_t *c = ctx;
    sq_tensor_t *t = c->t;
    long ng = t->k / t->G, nb = t->k / t->cfg.b;
    if (c->mask[r * t->k + j]) {
        float s = t->s_hi[r * ng + j / t->G];
        float q = s > 0 ? round_clamp(w / s, sq_qmax(t->cfg.h_high)) : 0;
        long bk = j / t->cfg.b;
        size_t e = (size_t)((r * nb + bk) * t->h + c->slot[r * t->k + j]);
        t->hi[e] = (int8_t)q;
        t->idx[e] = (uint8_t)(j % t->cfg.b);
        sq_set_lo(t, r, j, 0);
        return q * s;
    }
    float s = t->s_lo[r * ng + j / t->G];
    float q = s > 0 ? round_clamp(w / s, sq_qmax(t->cfg.h_low)) : 0;
    sq_set_lo(t, r, j, (int)q);
    return q * s;
}

/* Picks the h most important elements of every bank of every row. */
static void choose_highs(sqq_t *c, const float *W, const double *hinv_diag) {
    sq_tensor_t *t = c->t;
    int b = t->cfg.b, h = t->h;
    for (long r = 0; r < t->n; r++)
        for (long j0 = 0; j0 < t->k; j0 += b) {
            double score[128];
            for (int i = 0; i < b; i++) {
                double w = W[r * t->k + j0 + i];
                score[i] = hinv_diag ? w * w / (hinv_diag[j0 + i] * hinv_diag[j0 + i]) : fabs(w);
            }
            for (int pick = 0; pick < h; pick++) { /* h is small: selection by scans */
                int best = -1;
                for (int i = 0; i < b; i++)
                    if (!c->mask[r * t->k + j0 + i] && (best < 0 || score[i] > score[best])) best = i;
                c->mask[r * t->k + j0 + best] = 1;
            }
            int s = 0; /* slots in position order keep idx sorted */
            for (int i = 0; i < b; i++)
                if (c->mask[r * t->k + j0 + i]) c->slot[r * t->k + j0 + i] = s++;
        }
}

int sq_quantize(sq_tensor_t *t, float *W, const double *hinv_diag, const double *hinv_chol) {
    return sq_quantize_perm(t, W, hinv_diag, hinv_chol, NULL);
}

int sq_quantize_perm(sq_tensor_t *t, float *W, const double *hinv_diag, const double *hinv_chol,
                     const long *perm) {
    return sq_quantize_opt(t, W, hinv_diag, hinv_chol, perm, 0);
}

int sq_quantize_opt(sq_tensor_t *t, float *W, const double *hinv_diag, const double *hinv_chol,
                    const long *perm, unsigned opts) {
    if ((opts & SQ_Q_ISCALE) && sq_iscale_check(&t->cfg)) return -1;
    sqq_t c = {t, calloc((size_t)(t->n * t->k), 1), malloc((size_t)(t->n * t->k) * sizeof(int)), NULL};
    int rc = -1;
    if ((opts & SQ_Q_ISCALE) && (c.srow = malloc((size_t)t->n * sizeof(float)))) {
        /* one scale a row from the weights before any GPTQ update (later
         * columns may then clip a little, as group scales fixed by act-order do) */
        for (long r = 0; r < t->n; r++) {
            float m = 0;
            for (long j = 0; j < t->k; j++) m = fmaxf(m, fabsf(W[r * t->k + j]));
            c.srow[r] = sq_iscale_row(m, &t->cfg);
        }
    }
    if (c.mask && c.slot && (c.srow || !(opts & SQ_Q_ISCALE))) {
        choose_highs(&c, W, hinv_diag);
        colq_t q = {sqq_group, sqq_quant, &c, t->G};
        rc = gptq_run(W, t->n, t->k, &q, hinv_chol, perm);
    }
    free(c.mask);
    free(c.slot);
    free(c.srow);
    return rc;
}

/* ---- uniform symmetric baselines ---------------------------------------------------- */

typedef struct { float *scale; long n, k, g; int bits; int8_t *codes; float *scales_out; } uqq_t;

static void uqq_group(void *ctx, const float *W, long n, long k, long j0, long j1) {
    uqq_t *c = ctx;
    for (long r = 0; r < n; r++) {
        float m = 0;
        for (long j = j0; j < j1; j++) m = fabsf(W[r * k + j]) > m ? fabsf(W[r * k + j]) : m;
        c->scale[r * (k / c->g) + j0 / c->g] = m / (float)sq_qmax(c->bits);
        if (c->scales_out) c->scales_out[r * (k / c->g) + j0 / c->g] = m / (float)sq_qmax(c->bits);
    }
}

static float uqq_quant(void *ctx, long r, long j, float w) {
    uqq_t *c = ctx;
    float s = c->scale[r * (c->k / c->g) + j / c->g];
    float q = s > 0 ? round_clamp(w / s, sq_qmax(c->bits)) : 0;
    if (c->codes) c->codes[r * c->k + j] = (int8_t)q;
    return q * s;
}

void uq_quantize(float *W, long n, long k, int bits, long g, const double *hinv_chol) {
    uq_quantize_codes(W, n, k, bits, g, hinv_chol, NULL, NULL);
}

int uq_quantize_codes(float *W, long n, long k, int bits, long g, const double *hinv_chol,
                      int8_t *codes, float *scales) {
    return uq_quantize_perm(W, n, k, bits, g, hinv_chol, NULL, codes, scales);
}

int uq_quantize_perm(float *W, long n, long k, int bits, long g, const double *hinv_chol,
                     const long *perm, int8_t *codes, float *scales) {
    /* one scale per row and group: act-order (perm) fixes them all first */
    long ng = k / g;
    uqq_t c = {malloc((size_t)(n * ng) * sizeof(float)), n, k, g, bits, codes, scales};
    if (!c.scale) return -1;
    colq_t q = {uqq_group, uqq_quant, &c, g};
    int rc = gptq_run(W, n, k, &q, hinv_chol, perm);
    free(c.scale);
    return rc;
}
