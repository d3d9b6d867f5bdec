/* gptq.c - the column driver and the LAPACK preparation (see gptq.h). */
#include "gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 128

int gptq_prepare(const double *H, long k, double damp, double **hinv_diag, double **U) {
    double *A = malloc((size_t)(k * k) * sizeof *A);
    *hinv_diag = malloc((size_t)k * sizeof(double));
    *U = NULL;
    if (!A || !*hinv_diag) goto fail;
    memcpy(A, H, (size_t)(k * k) * sizeof *A);
    double mean = 0;
    for (long i = 0; i < k; i++) mean += A[i * k + i];
    mean /= (double)k;
    if (!(mean > 0)) mean = 1;
    for (long i = 0; i < k; i++) {
        if (A[i * k + i] == 0) A[i * k + i] = 1; /* an input that never fired */
        A[i * k + i] += damp * mean;
    }
    /* H^-1 via Cholesky: potrf (lower) then potri; mirror to the upper half */
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)k, A, (lapack_int)k) != 0 ||
        LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)k, A, (lapack_int)k) != 0)
        goto fail;
    for (long i = 0; i < k; i++)
        for (long j = i + 1; j < k; j++) A[i * k + j] = A[j * k + i];
    for (long i = 0; i < k; i++) (*hinv_diag)[i] = A[i * k + i];
    /* upper factor of H^-1: H^-1 = U^T U */
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)k, A, (lapack_int)k) != 0) goto fail;
    for (long i = 0; i < k; i++)
        for (long j = 0; j < i; j++) A[i * k + j] = 0;
    *U = A;
    return 0;
fail:
    free(A);
    free(*hinv_diag);
    *hinv_diag = NULL;
    return -1;
}

int gptq_run(float *W, long n, long k, const colq_t *q, const double *U, const long *perm) {
    if (!U) { /* round to nearest, group by group */
        for (long j0 = 0; j0 < k; j0 += q->G) {
            q->group_start(q->ctx, W, n, k, j0, j0 + q->G);
            for (long r = 0; r < n; r++)
                for (long j = j0; j < j0 + q->G; j++) W[r * k + j] = q->quant(q->ctx, r, j, W[r * k + j]);
        }
        return 0;
    }
    float *err = malloc((size_t)(n * BLOCK) * sizeof *err);     /* [n][BLOCK] */
    float *Ub = malloc((size_t)(BLOCK * k) * sizeof *Ub);       /* rows of U, float */
    float *Wp = perm ? malloc((size_t)(n * k) * sizeof *Wp) : W; /* columns in quantization order */
    if (!err || !Ub || !Wp) {
        free(err);
        free(Ub);
        if (perm) free(Wp);
        return -1;
    }
    if (perm) {
        /* act-order: static groups, every scale chosen up front from the
         * uncompensated weights, so that a group's columns, visited out of
         * order, share one scale and the stored layout stays the plain one */
        for (long j0 = 0; j0 < k; j0 += q->G) q->group_start(q->ctx, W, n, k, j0, j0 + q->G);
        for (long r = 0; r < n; r++)
            for (long p = 0; p < k; p++) Wp[r * k + p] = W[r * k + perm[p]];
    }
    for (long b0 = 0; b0 < k; b0 += BLOCK) {
        long b1 = b0 + BLOCK < k ? b0 + BLOCK : k, bw = b1 - b0;
        for (long i = b0; i < b1; i++)
            for (long j = 0; j < k; j++) Ub[(i - b0) * k + j] = (float)U[i * k + j];
        for (long j = b0; j < b1; j++) {
            if (!perm && (j % q->G) == 0) q->group_start(q->ctx, Wp, n, k, j, j + q->G);
            long col = perm ? perm[j] : j; /* the column in the stored layout */
            float d = Ub[(j - b0) * k + j];
            for (long r = 0; r < n; r++) {
                float w = Wp[r * k + j], dq = q->quant(q->ctx, r, col, w);
                float e = (w - dq) / d;
                Wp[r * k + j] = dq;
                err[r * BLOCK + (j - b0)] = e;
                /* within the block: feed the error forward column by column */
                const float *u = Ub + (j - b0) * k;
                float *wr = Wp + r * k;
                for (long jj = j + 1; jj < b1; jj++) wr[jj] -= e * u[jj];
            }
        }
        /* beyond the block, in one GEMM: W[:, b1:] -= err[:, :bw] * U[b0:b1, b1:] */
        if (b1 < k)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)(k - b1), (int)bw,
                        -1.0f, err, BLOCK, Ub + b1, (int)k, 1.0f, Wp + b1, (int)k);
    }
    if (perm) {
        for (long r = 0; r < n; r++)
            for (long p = 0; p < k; p++) W[r * k + perm[p]] = Wp[r * k + p];
        free(Wp);
    }
    free(err);
    free(Ub);
    return 0;
}

/* Descending diag(H), ties by index (qsort is not stable). */
static const double *sort_diag;
static int by_diag_desc(const void *a, const void *b) {
    long i = *(const long *)a, j = *(const long *)b;
    double di = sort_diag[i], dj = sort_diag[j];
    return di > dj ? -1 : di < dj ? 1 : (i > j) - (i < j);
}

int gptq_prepare_ordered(const double *H, long k, double damp, int act_order, double **hinv_diag,
                         double **U, long **perm) {
    *perm = NULL;
    if (!act_order) return gptq_prepare(H, k, damp, hinv_diag, U);
    long *p = malloc((size_t)k * sizeof *p);
    double *d = malloc((size_t)k * sizeof *d), *Hp = malloc((size_t)(k * k) * sizeof *Hp);
    double *dp = NULL;
    int rc = -1;
    if (!p || !d || !Hp) goto out;
    for (long i = 0; i < k; i++) {
        p[i] = i;
        d[i] = H[i * k + i];
    }
    sort_diag = d; /* quantization runs single-threaded: a file static is enough */
    qsort(p, (size_t)k, sizeof *p, by_diag_desc);
    sort_diag = NULL;
    for (long i = 0; i < k; i++)
        for (long j = 0; j < k; j++) Hp[i * k + j] = H[p[i] * k + p[j]];
    if (gptq_prepare(Hp, k, damp, &dp, U) != 0) goto out;
    *hinv_diag = d; /* back to the stored layout */
    for (long i = 0; i < k; i++) d[p[i]] = dp[i];
    d = NULL;
    *perm = p;
    p = NULL;
    rc = 0;
out:
    free(p);
    free(d);
    free(dp);
    free(Hp);
    return rc;
}
