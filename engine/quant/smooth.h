/* smooth.h - SmoothQuant's migration (Xiao et al. 2023), the step that
 * Algorithms 1 and 2 of the SQ-format paper start from (W', A' = Smooth).
 *
 * For a matmul input site X (n x k) read by weights W (rows x k), a
 * per-channel scale s_j = max|X_j|^alpha / max_i |W_ij|^(1 - alpha)
 * divides channel j of X and multiplies column j of W: the product is
 * unchanged, the activation outliers are flattened and the weights take
 * part of them. The division is folded into the operation that produces
 * X, so it costs nothing at run time (quant.c does the folding): the
 * RMSNorm weight before q/k/v and gate/up, the rows of W_v before W_o
 * (attention is linear in V; with grouped KV heads the scales of the
 * query heads sharing one KV head are tied), the rows of W_up before
 * W_down (silu(g) * u is linear in u).
 *
 * alpha is chosen per site from a small grid, by the site's output error
 * sum_W ||X W^T - Qa(X / s) Qw(W s)^T||^2 on sampled calibration rows,
 * with Qw round-to-nearest by the weight recipe (GPTQ is too slow to try
 * seven times) and Qa the activation recipe; "no smoothing" (s = 1) is one
 * of the candidates, so a site that smoothing would hurt keeps s = 1.
 */
#ifndef SMOOTH_H
#define SMOOTH_H

#include "../model/recipe.h"

/* One site's scales. X: n_x sampled rows (k wide) of its inputs; amax:
 * each channel's largest |x| over all calibration tokens, sum their sums
 * over n_tokens (for a static mask's importance); mats[i]: rows[i] x k
 * float weights reading the site; grp: NULL, or each channel's group id
 * (0..n_grp-1) for scales that must be equal; alpha_fixed > 0 fixes alpha.
 * Writes s (k) and *alpha (0 when s = 1 won). 0, or -1 when out of memory. */
int smooth_choose(const float *X, int n_x, const float *amax, const double *sum, long n_tokens, long k,
                  float *const *mats, const long *rows, int n_mats, const long *grp, long n_grp,
                  const wrecipe_t *w, const arecipe_t *a, int site, double alpha_fixed, float *s,
                  double *alpha);

/* The static SQ activation mask of one site from per-channel importance
 * (k values): in every bank of the recipe's (fitted) size, the h most
 * important channels are high (mask 1). */
void smooth_mask_from_importance(const double *imp, long k, const sq_cfg_t *sq, uint8_t *mask);

/* Importance of Algorithm 2, |mean(A_j) * sum_i W'_ij| (or, by_max, the
 * largest |A_j|), for float weights. imp: k values. */
void smooth_importance(const double *sum, const float *amax, long n_tokens, long k, float *const *mats,
                       const long *rows, int n_mats, int by_max, double *imp);

#endif
