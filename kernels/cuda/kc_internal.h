/* kc_internal.h - helpers shared by the .cu files (not part of the API). */
#ifndef KC_INTERNAL_H
#define KC_INTERNAL_H

#include <cuda_runtime.h>

#include "kc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records the first error (printf-style); later ones are dropped. */
void kc_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 0 on cudaSuccess, else records "CUDA error in what: ..." and returns -1. */
int kc_check(int cuda_err, const char *what);
/* Checks the launch that just happened (configuration errors). */
int kc_check_launch(const char *kernel);
/* streaming multiprocessors of the current device (132 if it cannot be asked) */
int kc_sm_count(void);
/* the process's cuBLAS handle (a cublasHandle_t), bound to KC_STREAM */
void *kc_blas_handle(void);

#ifdef __cplusplus
}
#endif

#define KC_STREAM ((cudaStream_t)kc_stream())

static inline unsigned kc_blocks(long n, int per_block) {
    return (unsigned)((n + per_block - 1) / per_block);
}

/* The INT8 code of v at per-token scale s, as k_quant_row_i8 computes it
 * (round half to even, clamped to +-127; s = max|x| / 127 rounded). Every
 * kernel that quantizes activations uses this one expression, so they agree
 * bit for bit. */
#ifdef __CUDACC__
__device__ __forceinline__ int8_t kc_q8(float v, float s) {
    return (int8_t)(s > 0.0f ? fminf(fmaxf(rintf(__fdiv_rn(v, s)), -127.0f), 127.0f) : 0.0f);
}
__device__ __forceinline__ float kc_q8_scale(float max_abs) { return __fdiv_rn(max_abs, 127.0f); }
#endif

/* the paged K/V row of position t of a sequence whose block ids start at blk[off] */
#ifdef __CUDACC__
__device__ __forceinline__ size_t kv_row(const kc_kv_t kv, int layer, const int32_t *blk,
                                         int off, int t) {
    int b = blk[off + t / kv.block_size];
    return (((size_t)b * kv.n_layer + layer) * kv.block_size + t % kv.block_size) * kv.kv_dim;
}
#endif

#endif
