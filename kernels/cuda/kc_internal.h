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
/* y (row-major, ldy) = x [m][k] . w [n][k]^T through cuBLAS, both operands
 * of one type: FP16 or BF16 with FP32 sums and output, or INT8 with INT32
 * sums and output. -1 (kc_error says which GEMM) when cuBLAS refuses. */
enum { KC_GEMM_F16, KC_GEMM_BF16, KC_GEMM_I8 };
int kc_gemm_nt(int type, const void *w, long n, long k, const void *x, long m, void *y, long ldy);
/* Grows a device scratch buffer of *have bytes to hold need bytes: to the
 * next power of two of at least min_bytes, so a run of growing requests
 * (prompt chunks) reallocates O(log) times. The buffer given up stays
 * allocated: CUDA graphs captured earlier may hold it. */
int kc_grow(void **buf, size_t *have, size_t need, size_t min_bytes);
/* A path's token threshold: *cache once set (a setter's override, >= 0),
 * else the environment variable env, else dflt; negative values read as 0
 * (off). */
long kc_threshold(long *cache, const char *env, long dflt);
/* The same for a threshold whose default depends on the matrix: -2 where
 * neither a setter nor env gave one (the caller's default applies then). */
long kc_override(long *cache, const char *env);
/* whether kc_launch_pdl asks for programmatic dependent launch: a device of
 * compute capability 9.0 or later, and KC_PDL unset or not "0" */
int kc_pdl(void);
/* kc_attn.cu: the split-attention workspace (kc_init, kc_shutdown) */
int kc_attn_init(void);
void kc_attn_free(void);
/* kc_attn_tc.cu: the tiled prefill attention on the tensor cores (TF32);
 * 1 when it does not take head_dim (the caller runs the FP32 tiles) */
int kc_attention_tc(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n, const int32_t *d_pos,
                    const int32_t *d_blk, const int32_t *d_blk_off, int n_head, int group, int head_dim,
                    float scale);
/* kc_sq_gemm.cu: the two-step pieces (FP16 expansion + cuBLAS) kc_int.cu
 * shares: FP16 weight scratch of `count` halves, the INT8 activations as
 * FP16 (exact), y (ldy) = A16 . W16^T with FP32 sums, y *= sx per token. */
#define KC_F16_SLICE (128L << 20)
void *kc_f16_weights(size_t count);
void *kc_f16_acts(const int8_t *d_qx, long m, long k);
int kc_f16_gemm(const void *w16, long n, long k, const void *a16, long m, float *y, long ldy);
int kc_f16_scale_rows(float *y, long ldy, long m, long ncols, const float *d_sx);
/* kc_i8_gemm.cu: y[t][r] (ldy) = (rs[r] * (qx[t] . w8[r])) * sx[t] for m
 * tokens and n rows of k: one CUTLASS GEMM with the scales in its epilogue
 * where it suits (65 tokens on, TMA-describable operands), else cuBLAS
 * INT8 -> INT32 and a scale pass, with the same bits. 0, or -1 on error. */
int kc_i8_matmul(const int8_t *d_qx, const int8_t *d_w8, long m, long n, long k, const float *d_sx,
                 const float *d_rs, float *d_y, long ldy);

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

/* Programmatic dependent launch (Hopper). A decode step is ~15 small
 * launches a layer; between two dependent kernels the GPU drains the first,
 * then starts scheduling the second (a few microseconds each time, with
 * CUDA graphs too). A kernel launched by kc_launch_pdl may start while its
 * predecessor still runs: it does what does not depend on it (a matmul
 * issues its first weight loads), then kc_pdl_wait() blocks until the
 * predecessor has finished and its writes are visible. Every kernel
 * launched this way calls kc_pdl_wait() before it touches memory another
 * kernel writes, and may call kc_pdl_trigger() (after its own wait) to let
 * its successor start early. Without the launch attribute (KC_PDL=0, an
 * older GPU) both are no-ops and the stream orders kernels as usual. */
#ifdef __CUDACC__
__device__ __forceinline__ void kc_pdl_wait(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void kc_pdl_trigger(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* kern<<<grid, block, smem, KC_STREAM>>>(args...), with the programmatic
 * dependency attribute when kc_pdl(); 0 or -1 with the error recorded */
template <typename... P, typename... A>
static inline int kc_launch_pdl(const char *what, void (*kern)(P...), dim3 grid, dim3 block, size_t smem,
                                A... args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = KC_STREAM;
    cfg.attrs = at, cfg.numAttrs = kc_pdl() ? 1 : 0;
    return kc_check(cudaLaunchKernelEx(&cfg, kern, static_cast<P>(args)...), what);
}
#endif

/* the paged K/V row of position t of a sequence whose block ids start at blk[off] */
#ifdef __CUDACC__
/* One RoPE rotation, every product and sum rounded on its own (no FMA
 * contraction), so that every kernel rotating a pair gets the same bits
 * (kc_ops.cu's RoPE kernels, the q/k/v matmul's epilogue in kc_sq_gemv.cu). */
__device__ __forceinline__ void rope_rot(float a, float b, float c, float s, float *x0, float *x1) {
    *x0 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    *x1 = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

__device__ __forceinline__ size_t kv_row(const kc_kv_t kv, int layer, const int32_t *blk,
                                         int off, int t) {
    int b = blk[off + t / kv.block_size];
    return (((size_t)b * kv.n_layer + layer) * kv.block_size + t % kv.block_size) * kv.kv_dim;
}
#endif

#endif
