/* sq_quant.h - quantizers that produce SQ-format tensors (model/sq.h) and
 * the uniform integer baselines, by round-to-nearest or with GPTQ error
 * compensation (gptq.h). */
#ifndef SQ_QUANT_H
#define SQ_QUANT_H

#include "../model/sq.h"

/* Quantizes W[n][k] (float, row-major). With hinv_diag (k values of
 * [H^-1]_ii) the high elements of each bank are chosen by the paper's
 * importance w^2 / [H^-1]_ii^2, else by magnitude (RTN). With hinv_chol
 * (the upper Cholesky factor of H^-1, k x k row-major) quantization error
 * is compensated GPTQ-style, column by column; W is modified then. */
int sq_quantize(sq_tensor_t *t, float *W, const double *hinv_diag, const double *hinv_chol);
/* The same with GPTQ's act-order column permutation (gptq.h; NULL: none). */
int sq_quantize_perm(sq_tensor_t *t, float *W, const double *hinv_diag, const double *hinv_chol,
                     const long *perm);

/* Integer bank scales (the recipe option ":iscale", QServe's progressive
 * group quantization applied to SQ). Every row r gets one scale s_r; its
 * high codes are 8-bit at s_r (s_hi = s_r in every group) and the low part
 * of group g is scaled by k_g * s_r with k_g an integer in 0..kmax, kmax =
 * 127 / qmax(h_low) (18 for 4-bit codes), so that every weight is an
 * INT8 value times s_r:  w = s_r * (k_g * lo  or  hi),  |k_g * lo| <= 127.
 * A GPU can then run the layer as one INT8 x INT8 matmul with exact INT32
 * sums over the whole row (kernels/cuda/kc_sq_gemm.cu) instead of two sums
 * per group combined in float. The file format is unchanged: the scales
 * are still a (s_lo, s_hi) pair of halves per group; s_r has at most
 * 11 - bits(kmax) significant bits so that k_g * s_r is an exact half.
 * What it costs: the high part is quantized per row rather than per group,
 * and the low scales are rounded up to a multiple of s_r (docs/accuracy.md
 * measures it). Needs h_high 8 (sq_iscale_check). */
const char *sq_iscale_check(const sq_cfg_t *c);
int sq_iscale_kmax(const sq_cfg_t *c);
/* The row scale for a row whose largest |w| is amax: the smallest value
 * >= amax / 127 with sq_iscale's mantissa bound (0 for amax 0). */
float sq_iscale_row(float amax, const sq_cfg_t *c);
/* 1 if t's scales have the structure above: per row one s_r (every
 * s_hi), every s_lo = k * s_r with an integer 0 <= k <= kmax. */
int sq_is_iscale(const sq_tensor_t *t);
/* sq_quantize_perm with options: SQ_Q_ISCALE makes integer bank scales. */
#define SQ_Q_ISCALE 1
int sq_quantize_opt(sq_tensor_t *t, float *W, const double *hinv_diag, const double *hinv_chol,
                    const long *perm, unsigned opts);

/* Uniform symmetric integer quantization of W[n][k] in place (fake-quant:
 * W receives the dequantized values), bits 2..8, groups of g (g = k for
 * per-channel). With hinv_chol, GPTQ error compensation. */
void uq_quantize(float *W, long n, long k, int bits, long g, const double *hinv_chol);
/* The same, also recording the integer codes (n*k, one per byte) and the
 * scales (n * k/g) when those are non-NULL. 0, or -1 when out of memory. */
int uq_quantize_codes(float *W, long n, long k, int bits, long g, const double *hinv_chol,
                      int8_t *codes, float *scales);
/* ... with GPTQ's act-order permutation (gptq.h; NULL: none). */
int uq_quantize_perm(float *W, long n, long k, int bits, long g, const double *hinv_chol,
                     const long *perm, int8_t *codes, float *scales);

#endif
