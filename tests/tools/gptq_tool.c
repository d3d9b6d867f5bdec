/* gptq_tool.c - sqserve's uniform GPTQ on a matrix given as files, for
 * tests/test_gptq_ref.py (which checks it against tests/reference/ref_gptq.py).
 *
 *   gptq_tool W.f32 X.f32 n k m bits group damp act_order OUT.f32
 *
 * W: n x k float32 row-major; X: m x k calibration inputs; H = X^T X is
 * built here the way calibration builds it (ssyrk, float), then
 * gptq_prepare_ordered and uq_quantize_perm, exactly as quant_apply calls
 * them. OUT receives the dequantized weights. */
#include "../../engine/quant/gptq.h"
#include "../../engine/quant/sq_quant.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

static float *read_f32(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    float *p = malloc(count * sizeof *p);
    if (!f || !p || fread(p, sizeof *p, count, f) != count) {
        if (f) fclose(f);
        free(p);
        return NULL;
    }
    fclose(f);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: gptq_tool W X n k m bits group damp act_order OUT\n");
        return 2;
    }
    long n = atol(argv[3]), k = atol(argv[4]), m = atol(argv[5]), g = atol(argv[7]);
    int bits = atoi(argv[6]), act = atoi(argv[9]);
    double damp = atof(argv[8]);
    float *W = read_f32(argv[1], (size_t)(n * k)), *X = read_f32(argv[2], (size_t)(m * k));
    float *Hf = calloc((size_t)(k * k), sizeof *Hf);
    double *H = malloc((size_t)(k * k) * sizeof *H), *diag = NULL, *U = NULL;
    long *perm = NULL;
    if (!W || !X || !Hf || !H) {
        fprintf(stderr, "gptq_tool: cannot read the inputs\n");
        return 1;
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)m, 1.0f, X, (int)k, 0.0f, Hf, (int)k);
    for (long i = 0; i < k; i++)
        for (long j = 0; j < k; j++) H[i * k + j] = j >= i ? Hf[i * k + j] : Hf[j * k + i];
    if (gptq_prepare_ordered(H, k, damp, act, &diag, &U, &perm) != 0 ||
        uq_quantize_perm(W, n, k, bits, g, U, perm, NULL, NULL) != 0) {
        fprintf(stderr, "gptq_tool: GPTQ failed\n");
        return 1;
    }
    FILE *f = fopen(argv[10], "wb");
    if (!f || fwrite(W, sizeof *W, (size_t)(n * k), f) != (size_t)(n * k) || fclose(f) != 0) {
        fprintf(stderr, "gptq_tool: cannot write %s\n", argv[10]);
        return 1;
    }
    free(W); free(X); free(Hf); free(H); free(diag); free(U); free(perm);
    return 0;
}
