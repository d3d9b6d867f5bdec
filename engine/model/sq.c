/* sq.c - SQ-format tensors and the SQ / uniform quantizers (see sq.h). */
#include "sq.h"

#include "../quant/gptq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int qmax(int bits) { return (1 << (bits - 1)) - 1; } /* symmetric: -qmax..qmax */
static int lo_storage_bits(int h_low) { return h_low <= 2 ? 2 : 4; }

int sq_highs_per_bank(const sq_cfg_t *c) { return (int)lround((1.0 - c->s) * c->b); }

static int group_of(const sq_cfg_t *c) { return c->b > 64 ? c->b : 64; }

const char *sq_cfg_check(const sq_cfg_t *c, long k) {
    if (!((c->h_high == 8 && (c->h_low == 4 || c->h_low == 3 || c->h_low == 2)) ||
          (c->h_high == 4 && c->h_low == 2)))
        return "precision pair must be 8/4, 8/3, 8/2 or 4/2";
    if (c->b < 4 || c->b > 128 || (c->b & (c->b - 1)))
        return "bank size must be a power of two in [4, 128]";
    if (!(c->s >= 0.5 && c->s < 1)) return "sparsity must be in [0.5, 1)";
    int h = sq_highs_per_bank(c);
    if (h < 1 || fabs((1.0 - c->s) * c->b - h) > 1e-9)
        return "(1 - s) * b must be a whole number of at least 1";
    if (k > 0 && k % group_of(c) != 0) return "the row length is not a multiple of the scale group";
    return NULL;
}

const char *sq_cfg_fit(const sq_cfg_t *c, long k, int grouped, sq_cfg_t *out) {
    const char *why = sq_cfg_check(c, 0);
    if (why) return why;
    for (sq_cfg_t t = *c; t.b >= 4; t.b /= 2)
        if (!sq_cfg_check(&t, 0) && k % (grouped ? group_of(&t) : t.b) == 0) {
            *out = t;
            return NULL;
        }
    return grouped ? "the row length is not a multiple of the scale group of any bank that keeps (1-s)*b whole"
                   : "the width is not a multiple of any bank that keeps (1-s)*b whole";
}

double sq_bits_per_element(const sq_cfg_t *c) {
    return lo_storage_bits(c->h_low) + (1.0 - c->s) * (8 + 8) + 2.0 * 32 / group_of(c); /* float scales */
}

int sq_alloc(sq_tensor_t *t, const sq_cfg_t *c, long n, long k) {
    memset(t, 0, sizeof *t);
    t->cfg = *c;
    t->n = n;
    t->k = k;
    t->h = sq_highs_per_bank(c);
    t->G = group_of(c);
    size_t banks = (size_t)(n * (k / c->b)), groups = (size_t)(n * (k / t->G));
    t->lo = calloc((size_t)(n * k) * (size_t)lo_storage_bits(c->h_low) / 8, 1);
    t->hi = calloc(banks * (size_t)t->h, 1);
    t->idx = calloc(banks * (size_t)t->h, 1);
    t->s_lo = calloc(groups, sizeof(float));
    t->s_hi = calloc(groups, sizeof(float));
    if (!t->lo || !t->hi || !t->idx || !t->s_lo || !t->s_hi) {
        sq_free(t);
        return -1;
    }
    return 0;
}

void sq_free(sq_tensor_t *t) {
    free(t->lo); free(t->hi); free(t->idx); free(t->s_lo); free(t->s_hi);
    memset(t, 0, sizeof *t);
}

static int get_lo(const sq_tensor_t *t, long r, long j) {
    size_t e = (size_t)(r * t->k + j);
    if (lo_storage_bits(t->cfg.h_low) == 4) {
        int v = (t->lo[e / 2] >> (4 * (e % 2))) & 15;
        return v >= 8 ? v - 16 : v;
    }
    int v = (t->lo[e / 4] >> (2 * (e % 4))) & 3;
    return v >= 2 ? v - 4 : v;
}

static void set_lo(sq_tensor_t *t, long r, long j, int v) {
    size_t e = (size_t)(r * t->k + j);
    if (lo_storage_bits(t->cfg.h_low) == 4) {
        int sh = 4 * (int)(e % 2);
        t->lo[e / 2] = (uint8_t)((t->lo[e / 2] & ~(15 << sh)) | ((v & 15) << sh));
    } else {
        int sh = 2 * (int)(e % 4);
        t->lo[e / 4] = (uint8_t)((t->lo[e / 4] & ~(3 << sh)) | ((v & 3) << sh));
    }
}

void sq_dequant_row(const sq_tensor_t *t, long r, float *out) {
    long nb = t->k / t->cfg.b, ng = t->k / t->G;
    for (long j = 0; j < t->k; j++) out[j] = t->s_lo[r * ng + j / t->G] * (float)get_lo(t, r, j);
    for (long bk = 0; bk < nb; bk++)
        for (int i = 0; i < t->h; i++) {
            size_t e = (size_t)((r * nb + bk) * t->h + i);
            long j = bk * t->cfg.b + t->idx[e];
            out[j] += t->s_hi[r * ng + j / t->G] * (float)t->hi[e];
        }
}

const char *sq_validate(const sq_tensor_t *t) {
    if (sq_cfg_check(&t->cfg, t->k)) return sq_cfg_check(&t->cfg, t->k);
    long nb = t->k / t->cfg.b, ng = t->k / t->G;
    int ql = qmax(t->cfg.h_low), qh = qmax(t->cfg.h_high);
    for (long r = 0; r < t->n; r++) {
        for (long g = 0; g < ng; g++)
            if (!(t->s_lo[r * ng + g] >= 0) || !(t->s_hi[r * ng + g] >= 0) ||
                !isfinite(t->s_lo[r * ng + g]) || !isfinite(t->s_hi[r * ng + g]))
                return "a scale is negative or not finite";
        for (long j = 0; j < t->k; j++)
            if (abs(get_lo(t, r, j)) > ql) return "a low code is out of range";
        for (long bk = 0; bk < nb; bk++) {
            const uint8_t *ix = t->idx + (r * nb + bk) * t->h;
            const int8_t *hv = t->hi + (r * nb + bk) * t->h;
            for (int i = 0; i < t->h; i++) {
                if (ix[i] >= t->cfg.b) return "a high position is outside its bank";
                if (i > 0 && ix[i] <= ix[i - 1]) return "high positions are not sorted and distinct";
                if (abs(hv[i]) > qh) return "a high code is out of range";
                if (get_lo(t, r, bk * t->cfg.b + ix[i]) != 0) return "a high position has a nonzero low code";
            }
        }
    }
    return NULL;
}

/* ---- the SQ column quantizer ------------------------------------------------------ */

typedef struct {
    sq_tensor_t *t;
    uint8_t *mask;  /* n * k: 1 where high */
    int *slot;      /* n * k: index of a high element within its bank */
} sqq_t;

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
        t->s_lo[r * ng + g] = mlo / (float)qmax(t->cfg.h_low);
        t->s_hi[r * ng + g] = mhi / (float)qmax(t->cfg.h_high);
    }
}

static float sqq_quant(void *ctx, long r, long j, float w) {
    sqq_t *c = ctx;
    sq_tensor_t *t = c->t;
    long ng = t->k / t->G, nb = t->k / t->cfg.b;
    if (c->mask[r * t->k + j]) {
        float s = t->s_hi[r * ng + j / t->G];
        float q = s > 0 ? round_clamp(w / s, qmax(t->cfg.h_high)) : 0;
        long bk = j / t->cfg.b;
        size_t e = (size_t)((r * nb + bk) * t->h + c->slot[r * t->k + j]);
        t->hi[e] = (int8_t)q;
        t->idx[e] = (uint8_t)(j % t->cfg.b);
        set_lo(t, r, j, 0);
        return q * s;
    }
    float s = t->s_lo[r * ng + j / t->G];
    float q = s > 0 ? round_clamp(w / s, qmax(t->cfg.h_low)) : 0;
    set_lo(t, r, j, (int)q);
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
    sqq_t c = {t, calloc((size_t)(t->n * t->k), 1), malloc((size_t)(t->n * t->k) * sizeof(int))};
    int rc = -1;
    if (c.mask && c.slot) {
        choose_highs(&c, W, hinv_diag);
        colq_t q = {sqq_group, sqq_quant, &c, t->G};
        rc = gptq_run(W, t->n, t->k, &q, hinv_chol);
    }
    free(c.mask);
    free(c.slot);
    return rc;
}

/* ---- uniform symmetric baselines ---------------------------------------------------- */

typedef struct { float *scale; long n, k, g; int bits; int8_t *codes; float *scales_out; } uqq_t;

static void uqq_group(void *ctx, const float *W, long n, long k, long j0, long j1) {
    uqq_t *c = ctx;
    for (long r = 0; r < n; r++) {
        float m = 0;
        for (long j = j0; j < j1; j++) m = fabsf(W[r * k + j]) > m ? fabsf(W[r * k + j]) : m;
        c->scale[r] = m / (float)qmax(c->bits);
        if (c->scales_out) c->scales_out[r * (k / c->g) + j0 / c->g] = c->scale[r];
    }
}

static float uqq_quant(void *ctx, long r, long j, float w) {
    uqq_t *c = ctx;
    float s = c->scale[r];
    float q = s > 0 ? round_clamp(w / s, qmax(c->bits)) : 0;
    if (c->codes) c->codes[r * c->k + j] = (int8_t)q;
    return q * s;
}

void uq_quantize(float *W, long n, long k, int bits, long g, const double *hinv_chol) {
    uq_quantize_codes(W, n, k, bits, g, hinv_chol, NULL, NULL);
}

void uq_quantize_codes(float *W, long n, long k, int bits, long g, const double *hinv_chol,
                       int8_t *codes, float *scales) {
    uqq_t c = {malloc((size_t)n * sizeof(float)), n, k, g, bits, codes, scales};
    if (!c.scale) return;
    colq_t q = {uqq_group, uqq_quant, &c, g};
    gptq_run(W, n, k, &q, hinv_chol);
    free(c.scale);
}
