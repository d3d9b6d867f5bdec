/* cuda_model.h - the GPU's view of a model's weights, shared by
 * cuda_model.c (upload, synthetic models) and backend_cuda.c (the forward
 * pass's operations). Only built with CUDA. */
#ifndef CUDA_MODEL_H
#define CUDA_MODEL_H

#include "../../kernels/cuda/kc.h"
#include "backend.h"

/* GM_F32_A8: an integer-kernel matrix (K_SQ view) whose shape the GPU SQ
 * kernels do not take (e.g. the int8 codes of W8A8): FP32 weights, and
 * its input quantized to INT8 per token first, which is what the CPU
 * kernel computes up to float rounding. */
/* GM_FUSED: an SQ matrix whose rows live in its layer's fused matrix
 * (qkv or gate_up): no storage of its own. */
/* GM_GGUF: a GGUF matrix in its blocks or in 16 bits (kc_gguf.cu). */
/* GM_INT: uniform integer codes, the W8A8 / W4A8 baselines (kc_int.cu). */
enum { GM_F32 = 1, GM_SQ = 2, GM_F32_A8 = 3, GM_FUSED = 4, GM_GGUF = 5, GM_INT = 6 };

typedef struct {
    int kind;
    long n, k;
    float *f32;
    kc_sq_t *sq;
    kc_gguf_t *gg;
    kc_int_t *in;
} gmat_t;

typedef struct {
    float *attn_norm, *ffn_norm;
    gmat_t w[7]; /* q k v o gate up down */
    /* q/k/v and gate/up as one device matrix each (kc_sq_fuse / kc_int_fuse:
     * one launch reads all their bytes), or NULL where they are not all SQ
     * (or all integer) matrices of one layout (then w[] runs them one by one) */
    kc_sq_t *qkv, *gate_up;
    kc_int_t *qkv_i, *gate_up_i;
} glayer_t;

typedef struct {
    /* the embedding table: embd_gg (GGUF blocks or 16 bits, looked up by
     * kc_gguf_embed) where kc_gguf takes its type exactly, else embd
     * ([n_vocab][dim] FP32) */
    float *embd;
    kc_gguf_t *embd_gg;
    gmat_t out;  /* the embedding's own storage when tied */
    int tied;
    float *out_norm, *inv_freq;
    glayer_t *layers;
    int n_layer;
    size_t bytes; /* weight bytes a forward pass reads (embedding excluded) */
} gpu_model_t;


extern const fwd_backend_t fwd_backend_cuda;

#endif
