/* act_quant.c - activation quantization at the matmul input sites, as the
 * forward pass's hook (act_quant.h).
 *
 * Fake quantization: each row is rounded to the recipe's integer grid and
 * back to floats in place, so the matmul that follows (FP32 or an integer
 * kernel that quantizes the same way) computes on exactly the values the
 * deployed format would. Per token, symmetric: int (one scale), static SQ
 * (the site's high channels and the rest, one scale each; with ":bank" the
 * rest one scale per bank), dynamic SQ (the h largest of every bank high,
 * chosen per token).
 */
#include "act_quant.h"

#include <math.h>
#include <string.h>

static int qmax_of(int bits) { return (1 << (bits - 1)) - 1; }

static void fake_quant(float *x, long n, const uint8_t *mask, int want, int bits) {
    float mx = 0;
    for (long j = 0; j < n; j++)
        if (!mask || mask[j] == want) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
    int q = qmax_of(bits);
    float s = mx / (float)q;
    for (long j = 0; j < n; j++) {
        if (mask && mask[j] != want) continue;
        float v = s > 0 ? nearbyintf(x[j] / s) : 0;
        v = v > q ? (float)q : v < -q ? (float)-q : v;
        x[j] = v * s;
    }
}

/* The h largest |x| of one bank (ties to the lower index). */
static void bank_top(const float *x, int b, int h, uint8_t *sel) {
    memset(sel, 0, (size_t)b);
    for (int pick = 0; pick < h; pick++) {
        int best = -1;
        for (int i = 0; i < b; i++)
            if (!sel[i] && (best < 0 || fabsf(x[i]) > fabsf(x[best]))) best = i;
        sel[best] = 1;
    }
}

/* Dynamic SQ activations of one token: the bank maxima are chosen twice
 * (once for the two scales, once to quantize) so that no row-sized mask is
 * needed, whatever the width. Channels past the last whole bank count as
 * low (recipe_check_acts keeps them from existing). */
static void fake_quant_dynamic(float *x, long dim, const sq_cfg_t *sq) {
    uint8_t sel[128];
    int h = sq_highs_per_bank(sq), b = sq->b, q[2] = {qmax_of(sq->h_low), qmax_of(sq->h_high)};
    long whole = dim / b * b;
    float mx[2] = {0, 0}, s[2];
    for (long j0 = 0; j0 < dim; j0 += b) {
        int w = j0 < whole ? b : (int)(dim - j0);
        if (j0 < whole) bank_top(x + j0, b, h, sel);
        else memset(sel, 0, (size_t)w);
        for (int i = 0; i < w; i++) mx[sel[i]] = fabsf(x[j0 + i]) > mx[sel[i]] ? fabsf(x[j0 + i]) : mx[sel[i]];
    }
    s[0] = mx[0] / (float)q[0];
    s[1] = mx[1] / (float)q[1];
    for (long j0 = 0; j0 < dim; j0 += b) {
        int w = j0 < whole ? b : (int)(dim - j0);
        if (j0 < whole) bank_top(x + j0, b, h, sel);
        else memset(sel, 0, (size_t)w);
        for (int i = 0; i < w; i++) {
            int c = sel[i];
            float v = s[c] > 0 ? nearbyintf(x[j0 + i] / s[c]) : 0;
            v = v > q[c] ? (float)q[c] : v < -q[c] ? (float)-q[c] : v;
            x[j0 + i] = v * s[c];
        }
    }
}

void act_quant_hook(void *ud, int layer, int site, float *x, long n, long dim) {
    const act_quant_t *qs = ud;
    const arecipe_t *a = &qs->a;
    if (a->kind == AQ_NONE || qs->kernel_acts) return;
    sq_cfg_t fit = a->sq; /* the bank this width takes (recipe_check_acts: one fits) */
    if (a->kind == AQ_SQ_DYNAMIC || a->bank_lo) sq_cfg_fit(&a->sq, dim, 0, &fit);
    for (long i = 0; i < n; i++) {
        float *r = x + i * dim;
        if (a->kind == AQ_INT) {
            fake_quant(r, dim, NULL, 0, a->bits);
        } else if (a->kind == AQ_SQ_DYNAMIC) {
            fake_quant_dynamic(r, dim, &fit);
        } else {
            const uint8_t *mask = qs->hi_mask[site] + (size_t)layer * dim;
            fake_quant(r, dim, mask, 1, a->sq.h_high);
            if (a->bank_lo) /* one low-part scale per bank: one bank's outlier coarsens only its bank */
                for (long j0 = 0; j0 < dim; j0 += fit.b)
                    fake_quant(r + j0, dim - j0 < fit.b ? dim - j0 : fit.b, mask + j0, 0, a->sq.h_low);
            else
                fake_quant(r, dim, mask, 0, a->sq.h_low);
        }
    }
}
