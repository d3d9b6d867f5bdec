/* backend_cuda.h - the model on a CUDA GPU, and the backend that runs it.
 *
 * model_to_gpu copies a loaded model's weights to the device: SQ-format
 * matrices that the CPU runs with INT8 activations (k_mat_t of type K_SQ)
 * stay SQ-format and run on the SQ kernels; every other matrix (GGUF
 * types, FP32 expansions of a recipe) becomes FP32 for cuBLAS, so the GPU
 * computes what the CPU computes. The copy is the model's device view
 * (model_t.dev) and names its backend, so from then on fwd_init/fwd_run
 * (forward.h) run the same forward pass on the GPU's operations
 * (backend_cuda.c): same batch contract, same paged KV cache bookkeeping
 * (kv.h), with the K/V storage moved to the device.
 *
 * Activation recipes run on the GPU as they do on the CPU through
 * quant_act_hook: per-token integer fake quantization and static SQ
 * activations (the high-channel masks are copied to the device). Dynamic
 * SQ activations and other hooks (calibration) are CPU-only and are
 * refused with a message.
 *
 * Built without CUDA (make CUDA=0), every entry point fails with a clear
 * message and the CPU path is untouched.
 */
#ifndef BACKEND_CUDA_H
#define BACKEND_CUDA_H

#include <stddef.h>

#include "forward.h"
#include "../model/model.h"

/* "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; -1 with a message otherwise. */
int dev_parse(const char *s, int *ordinal, char *err, size_t errlen);
/* 1 when this binary carries the CUDA backend. */
int dev_cuda_built(void);

int model_to_gpu(model_t *m, int ordinal, char *err, size_t errlen);
/* "NVIDIA H100 80GB HBM3", device weight bytes, peak bandwidth (GB/s);
 * "none", 0, 0 for a model that is not on a GPU. On a GPU, fwd_run takes
 * logits = NULL: computed but left on the device (benchmarks). */
const char *model_gpu_name(const model_t *m);
size_t model_gpu_weight_bytes(const model_t *m);
double model_gpu_bandwidth(const model_t *m);

/* A model of a known architecture's shapes with random weights, on the
 * device only (no tokenizer): `bench --synthetic`. names: "llama3-8b",
 * "llama3-70b" (if it fits), "smollm2-135m"; weights (NULL: SQ):
 * "sq:8/4:b64:s0.875" (or "sq"), "int4:g64" (or "int4"), "int8", "f16"
 * (every matrix and the lm head in that format). */
int model_synthetic(model_t *m, const char *name, const char *weights, int ordinal, char *err, size_t errlen);
/* whether those weights run on the integer kernels (kc_int: int4:g64, int8) */
int model_synthetic_int_weights(const char *weights);

#endif
