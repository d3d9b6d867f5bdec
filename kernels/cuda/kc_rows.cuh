/* kc_rows.cuh - device helpers of the kernels that give a row to a block
 * (RMSNorm, SwiGLU, the activation quantization: kc_ops.cu, kc_quant.cu),
 * shared so that the fused kernels compute exactly what the plain ones do.
 * The sum of squares is in double and added in a fixed order, as the CPU's
 * k_rmsnorm does; the max is exact in any order. */
#ifndef KC_ROWS_CUH
#define KC_ROWS_CUH

#include "kc_internal.h"

/* 1 / rms(row) from each thread's part of the sum of squares (in double, as
 * the CPU does; the thread's elements j = tid, tid + blockDim, ... added in
 * that order, then the block's parts in a fixed order) */
static __device__ float rms_finish(double ss, int dim, float eps) {
    __shared__ double part[32];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += part[i];
        part[0] = t;
    }
    __syncthreads();
    return (float)(1.0 / sqrt(part[0] / dim + eps));
}

static __device__ float rms_scale(const float *xr, int dim, float eps) {
    double ss = 0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += (double)xr[j] * xr[j];
    return rms_finish(ss, dim, eps);
}

/* the block's max |v| over all threads */
static __device__ float block_max(float mx) {
    __shared__ float red[32];
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) mx = fmaxf(mx, red[i]);
    return mx;
}

static __device__ __forceinline__ float absmax4(float4 v) {
    return fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
}
static __device__ __forceinline__ float silu_mul1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

#endif
