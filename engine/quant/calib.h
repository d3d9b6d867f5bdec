/* calib.h - layer-by-layer calibration for sequential GPTQ and smoothing
 * (calib.c says how the passes run; quant.h holds the whole-model calib_t).
 */
#ifndef CALIB_H
#define CALIB_H

#include "quant.h"

/* One layer's input statistics, per site (SITE_*). */
typedef struct {
    long dim[N_SITES];
    float *Hf[N_SITES];      /* dim x dim, sum x x^T (full), NULL when not asked */
    double *sum[N_SITES];    /* dim: channel sums */
    float *amax[N_SITES];    /* dim: largest |x| */
    float *X[N_SITES];       /* n_x rows of dim: inputs sampled evenly over the tokens */
    int n_x[N_SITES], max_x;
    long n_tokens;
} layer_stats_t;

/* Runs m (layers < layer as quantized so far, acts their activation
 * quantizer or NULL) over c's tokens up to layer `layer` and gathers its
 * inputs: H when want_H, and up to max_x sample rows per site. m is
 * truncated for the pass and restored. 0, or -1 with err. */
int calib_layer(model_t *m, const calib_t *c, int layer, const act_quant_t *acts, int want_H, int max_x,
                layer_stats_t *ls, char *err, size_t errlen);
void layer_stats_free(layer_stats_t *ls);

#endif
