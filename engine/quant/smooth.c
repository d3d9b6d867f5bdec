/* smooth.c - SmoothQuant scales, chosen by output error (smooth.h). */
#include "smooth.h"

#include "../compute/act_quant.h"
#include "sq_quant.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void smooth_mask_from_importance(const double *imp, long k, const sq_cfg_t *sq, uint8_t *mask) {
    sq_cfg_t fit = *sq; /* the site's bank: recipe_check_acts checked that one fits */
    sq_cfg_fit(sq, k, 0, &fit);
    int h = sq_highs_per_bank(&fit), b = fit.b;
    memset(mask, 0, (size_t)k);
    for (long j0 = 0; j0 + b <= k; j0 += b)
        for (int pick = 0; pick < h; pick++) {
            long best = -1;
            for (long j = j0; j < j0 + b; j++)
                if (!mask[j] && (best < 0 || imp[j] > imp[best])) best = j;
            mask[best] = 1;
        }
}

void smooth_importance(const double *sum, const float *amax, long n_tokens, long k, float *const *mats,
                       const long *rows, int n_mats, int by_max, double *imp) {
    memset(imp, 0, (size_t)k * sizeof *imp);
    if (!by_max)
        for (int m = 0; m < n_mats; m++)
            for (long r = 0; r < rows[m]; r++)
                for (long j = 0; j < k; j++) imp[j] += mats[m][r * k + j];
    for (long j = 0; j < k; j++)
        imp[j] = by_max ? amax[j] : fabs(imp[j] * sum[j] / (double)n_tokens);
}

/* Round-to-nearest by the weight recipe, in place (dequantized values). */
static int rtn(float *W, long n, long k, const wrecipe_t *w) {
    if (w->kind == WQ_INT) {
        long g = w->group ? w->group : k;
        return uq_quantize_perm(W, n, k, w->bits, g, NULL, NULL, NULL, NULL);
    }
    if (w->kind != WQ_SQ) return 0;
    sq_cfg_t cfg;
    if (sq_cfg_fit(&w->sq, k, 1, &cfg)) return 0; /* quant_matrix reports it */
    sq_tensor_t t;
    if (sq_alloc(&t, &cfg, n, k) != 0) return -1;
    int rc = sq_quantize_opt(&t, W, NULL, NULL, NULL, w->iscale ? SQ_Q_ISCALE : 0);
    sq_free(&t);
    return rc;
}

static void scales_for(double alpha, const float *amax, const float *wmax, long k, const long *grp,
                       long n_grp, float *gx, float *gw, float *s) {
    if (alpha <= 0) {
        for (long j = 0; j < k; j++) s[j] = 1;
        return;
    }
    long ng = grp ? n_grp : k;
    for (long g = 0; g < ng; g++) gx[g] = gw[g] = 0;
    for (long j = 0; j < k; j++) {
        long g = grp ? grp[j] : j;
        gx[g] = amax[j] > gx[g] ? amax[j] : gx[g];
        gw[g] = wmax[j] > gw[g] ? wmax[j] : gw[g];
    }
    for (long j = 0; j < k; j++) {
        long g = grp ? grp[j] : j;
        double v = gx[g] > 0 && gw[g] > 0 ? pow(gx[g], alpha) / pow(gw[g], 1 - alpha) : 1;
        s[j] = (float)(v < 1e-4 ? 1e-4 : v > 1e4 ? 1e4 : v);
    }
}

int smooth_choose(const float *X, int n_x, const float *amax, const double *sum, long n_tokens, long k,
                  float *const *mats, const long *rows, int n_mats, const long *grp, long n_grp,
                  const wrecipe_t *w, const arecipe_t *a, int site, double alpha_fixed, float *s,
                  double *alpha) {
    static const double grid[] = {0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}; /* 0: s = 1 */
    int n_grid = (int)(sizeof grid / sizeof grid[0]);
    long max_rows = 0, tot_rows = 0;
    for (int m = 0; m < n_mats; m++) {
        max_rows = rows[m] > max_rows ? rows[m] : max_rows;
        tot_rows += rows[m];
    }
    float *wmax = calloc((size_t)k, sizeof *wmax), *gx = malloc((size_t)k * sizeof *gx);
    float *gw = malloc((size_t)k * sizeof *gw), *cand = malloc((size_t)k * sizeof *cand);
    float *Xq = malloc((size_t)n_x * k * sizeof *Xq), *Wq = malloc((size_t)max_rows * k * sizeof *Wq);
    float *Yref = malloc((size_t)n_x * tot_rows * sizeof *Yref), *Y = malloc((size_t)n_x * max_rows * sizeof *Y);
    double *imp = malloc((size_t)k * sizeof *imp), *ssum = malloc((size_t)k * sizeof *ssum);
    float *samax = malloc((size_t)k * sizeof *samax);
    uint8_t *mask = malloc((size_t)k);
    float **smats = calloc((size_t)n_mats, sizeof *smats);
    int rc = -1;
    if (!wmax || !gx || !gw || !cand || !Xq || !Wq || !Yref || !Y || !imp || !ssum || !samax || !mask || !smats)
        goto out;
    for (int m = 0; m < n_mats; m++)
        if (!(smats[m] = malloc((size_t)(rows[m] * k) * sizeof(float)))) goto out;
    for (int m = 0; m < n_mats; m++)
        for (long r = 0; r < rows[m]; r++)
            for (long j = 0; j < k; j++) {
                float v = fabsf(mats[m][r * k + j]);
                wmax[j] = v > wmax[j] ? v : wmax[j];
            }
    long off = 0; /* the exact outputs, once */
    for (int m = 0; m < n_mats; m++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_x, (int)rows[m], (int)k, 1.0f, X, (int)k,
                    mats[m], (int)k, 0.0f, Yref + off * n_x, (int)rows[m]);
        off += rows[m];
    }
    double best = INFINITY;
    int n_try = alpha_fixed > 0 ? 1 : n_grid;
    for (int gi = 0; gi < n_try; gi++) {
        double al = alpha_fixed > 0 ? alpha_fixed : grid[gi];
        scales_for(al, amax, wmax, k, grp, n_grp, gx, gw, cand);
        if (alpha_fixed > 0) break; /* nothing to compare */
        for (int m = 0; m < n_mats; m++)
            for (long r = 0; r < rows[m]; r++)
                for (long j = 0; j < k; j++) smats[m][r * k + j] = mats[m][r * k + j] * cand[j];
        for (long i = 0; i < (long)n_x; i++)
            for (long j = 0; j < k; j++) Xq[i * k + j] = X[i * k + j] / cand[j];
        if (a->kind != AQ_NONE) { /* the activation quantizer, on the smoothed rows */
            act_quant_t q = {*a, 1, {k, k, k, k}, {NULL}, 0};
            if (a->kind == AQ_SQ_STATIC) {
                for (long j = 0; j < k; j++) {
                    ssum[j] = sum[j] / cand[j];
                    samax[j] = amax[j] / cand[j];
                }
                smooth_importance(ssum, samax, n_tokens, k, smats, rows, n_mats, a->by_max, imp);
                smooth_mask_from_importance(imp, k, &a->sq, mask);
                q.hi_mask[site] = mask;
            }
            act_quant_hook(&q, 0, site, Xq, n_x, k);
        }
        double e = 0;
        off = 0;
        for (int m = 0; m < n_mats; m++) {
            memcpy(Wq, smats[m], (size_t)(rows[m] * k) * sizeof *Wq);
            if (rtn(Wq, rows[m], k, w) != 0) goto out;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_x, (int)rows[m], (int)k, 1.0f, Xq, (int)k,
                        Wq, (int)k, 0.0f, Y, (int)rows[m]);
            const float *yr = Yref + off * n_x;
            for (long i = 0; i < (long)n_x * rows[m]; i++) e += (double)(Y[i] - yr[i]) * (Y[i] - yr[i]);
            off += rows[m];
        }
        if (e < best) {
            best = e;
            *alpha = al;
            memcpy(s, cand, (size_t)k * sizeof *s);
        }
    }
    if (alpha_fixed > 0) {
        *alpha = alpha_fixed;
        memcpy(s, cand, (size_t)k * sizeof *s);
    }
    rc = 0;
out:
    for (int m = 0; m < n_mats && smats; m++) free(smats[m]);
    free(smats);
    free(wmax); free(gx); free(gw); free(cand); free(Xq); free(Wq); free(Yref); free(Y);
    free(imp); free(ssum); free(samax); free(mask);
    return rc;
}
