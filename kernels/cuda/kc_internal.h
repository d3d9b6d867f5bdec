/* kc_internal.h - helpers shared by the .cu files (not part of the API). */
#ifndef KC_INTERNAL_H
#define KC_INTERNAL_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Records the first error (printf-style); later ones are dropped. */
void kc_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 0 on cudaSuccess, else records "CUDA error in what: ..." and returns -1. */
int kc_check(int cuda_err, const char *what);
/* Checks the launch that just happened (configuration errors). */
int kc_check_launch(const char *kernel);

#ifdef __cplusplus
}
#endif

#define KC_STREAM ((cudaStream_t)kc_stream())

static inline unsigned kc_blocks(long n, int per_block) {
    return (unsigned)((n + per_block - 1) / per_block);
}

#endif
