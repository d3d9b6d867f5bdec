/* act_quant.h - runs a model's activation quantizer (model/recipe.h's
 * act_quant_t) on the forward pass's matmul inputs. */
#ifndef ACT_QUANT_H
#define ACT_QUANT_H

#include "../model/recipe.h"

/* The forward hook (fwd_t.hook) with hook_ud = an act_quant_t: quantizes
 * the n rows of x (dim wide) at `site` of `layer` in place. Does nothing
 * for FP32 activations or when the integer kernels quantize their own
 * inputs (kernel_acts). */
void act_quant_hook(void *ud, int layer, int site, float *x, long n, long dim);

#endif
