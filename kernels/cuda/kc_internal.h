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
/* the process's cuBLAS handle (a cublasHandle_t), bound to KC_STREAM */
void *kc_blas_handle(void);

#ifdef __cplusplus
}
#endif

#define KC_STREAM ((cudaStream_t)kc_stream())

static inline unsigned kc_blocks(long n, int per_block) {
    return (unsigned)((n + per_block - 1) / per_block);
}

/* the paged K/V row of position t of a sequence whose block ids start at blk[off] */
#ifdef __CUDACC__
__device__ __forceinline__ size_t kv_row(const kc_kv_t kv, int layer, const int32_t *blk,
                                         int off, int t) {
    int b = blk[off + t / kv.block_size];
    return (((size_t)b * kv.n_layer + layer) * kv.block_size + t % kv.block_size) * kv.kv_dim;
}
#endif

#endif
