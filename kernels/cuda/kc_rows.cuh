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

/* The sum of squares in the canonical order of RMSNorm split over the
 * matmuls around it (kc_sq_gemv_ep.cuh; kc_rmsnorm_q8_canon is the one-row
 * kernel that computes the same numbers): in double, each tile of 16
 * consecutive values added in order from 0.0 (ns_tile_ss), then lane l of
 * a warp adds the tile sums l, l + 32, l + 64, ... in order from 0.0, and
 * the 32 lanes' sums are added by a butterfly (every lane ends with the
 * same bits, since a + b = b + a). The order does not depend on how the
 * row was produced, so the matmul that writes the row can leave its tiles'
 * sums and the one that reads it can finish them. (The plain norm kernels
 * keep their own order, one thread per strided set of values.) */
static __device__ __forceinline__ double ns_lanes(double s) {
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}

/* 1 / rms from the row's sum of squares (the plain kernels' expression) */
static __device__ __forceinline__ float ns_inv(double ss, int dim, float eps) {
    return (float)(1.0 / sqrt(ss / dim + eps));
}

/* The candidates for a row's max |x r w| (r, the norm's 1 / rms, unknown
 * when x is written): within a tile, a value whose |fl(x w)| is below
 * NS_WINDOW x the tile's largest cannot be the largest |fl(fl(x r) w)|
 * after the two roundings (6 units in the last place of slack against 32),
 * so a tile keeps its largest and at most one more within that window, as
 * (|x|, |w|, |x'|, |w'|), or is flagged (w' = -1: the reader goes through
 * its 16 values). A tile whose largest |fl(x w)| overflows, or is below
 * 2^-100 (where rounding among subnormal numbers breaks the argument), is
 * flagged too. */
#define NS_WINDOW 0.9999980926513671875f /* 1 - 2^-19 */
#define NS_TINY 7.8886090522101181e-31f     /* 2^-100 */

/* the 16 values of a tile (v[i] = x, wv[i] = the norm's weight; rows past
 * the row count as 0): its sum of squares and its candidates. (A float
 * squared is exact in double, so whether the compiler contracts the add
 * into an FMA does not change the sum.) */
static __device__ __forceinline__ void ns_tile(const float *v, const float *wv, int nvalid, double *ss, float4 *cand) {
    double s = 0.0;
    float p1 = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; i++)
        if (i < nvalid) {
            s += (double)v[i] * v[i];
            p1 = fmaxf(p1, fabsf(__fmul_rn(v[i], wv[i])));
        }
    float4 c = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int nc = 0;
    /* overflow, or products so small that the window's rounding (subnormal
     * numbers) breaks the argument: the reader takes the tile's values */
    if (!(p1 < INFINITY) || (p1 > 0.0f && p1 < NS_TINY)) nc = 3;
    else if (p1 > 0.0f) {
        const float th = __fmul_rn(p1, NS_WINDOW);
#pragma unroll
        for (int i = 0; i < 16; i++)
            if (i < nvalid && fabsf(__fmul_rn(v[i], wv[i])) >= th) {
                if (nc == 0) c.x = fabsf(v[i]), c.y = fabsf(wv[i]);
                else if (nc == 1) c.z = fabsf(v[i]), c.w = fabsf(wv[i]);
                nc++;
            }
    }
    if (nc > 2) c.w = -1.0f;
    *ss = s, *cand = c;
}

/* max |fl(fl(x r) w)| over a tile: from its candidates (c.w >= 0), or for
 * a flagged tile from its values (rare, kept out of line) */
static __device__ __forceinline__ float ns_cand_max(float4 c, float r) {
    return fmaxf(__fmul_rn(__fmul_rn(c.x, r), c.y), __fmul_rn(__fmul_rn(c.z, r), c.w));
}
static __device__ __forceinline__ float ns_tile_values_max(float r, const float *x, const float *w, int nvalid) {
    float m = 0.0f;
    for (int i = 0; i < nvalid; i++) m = fmaxf(m, fabsf(__fmul_rn(__fmul_rn(x[i], r), w[i])));
    return m;
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
