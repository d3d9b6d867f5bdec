/* gptq.h - column-wise quantization with optional GPTQ error feedback.
 *
 * A quantizer is two callbacks: group_start (choose scales for columns
 * [j0, j1) from the current, already error-compensated weights) and
 * quant (one element -> its dequantized value, recording codes). The
 * driver walks the columns; with the upper Cholesky factor U of H^-1 it
 * spreads each column's error over the columns not yet quantized
 * (GPTQ, Frantar et al. 2022), in blocks of 128 with the trailing update
 * done by OpenBLAS sgemm. Without U it is plain round-to-nearest.
 */
#ifndef GPTQ_H
#define GPTQ_H

typedef struct {
    void (*group_start)(void *ctx, const float *W, long n, long k, long j0, long j1);
    float (*quant)(void *ctx, long r, long j, float w);
    void *ctx;
    long G; /* group size: a multiple that divides k */
} colq_t;

/* W[n][k] row-major is replaced by its dequantized values. 0 or -1 (OOM).
 * perm (NULL: columns in order) is the act-order of gptq_prepare_ordered:
 * column perm[p] is quantized p-th, U is then the factor of the permuted
 * H, and every group's scale is chosen before the pass ("static groups":
 * the layout and the quantizer's callbacks stay in stored column order,
 * at the price of scales that do not see the compensated weights). */
int gptq_run(float *W, long n, long k, const colq_t *q, const double *U, const long *perm);

/* From H = sum x x^T (k x k, row-major), computes diag(H^-1) and the upper
 * Cholesky factor U of H^-1 (both malloc'd) with LAPACK, after the usual
 * dampening (1% of the mean diagonal; dead inputs get H_ii = 1).
 * Returns 0, or -1 when H is not positive definite even after damping. */
int gptq_prepare(const double *H, long k, double damp, double **hinv_diag, double **U);

/* gptq_prepare with act-order: with act_order, *perm (malloc'd) lists the
 * columns by descending diag(H), U factors the permuted H^-1, and
 * hinv_diag is returned in stored column order; without, *perm = NULL. */
int gptq_prepare_ordered(const double *H, long k, double damp, int act_order, double **hinv_diag,
                         double **U, long **perm);

#endif
