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
