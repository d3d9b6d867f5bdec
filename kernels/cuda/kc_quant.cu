/* kc_quant.cu - activation quantization on the GPU: the per-token INT8
 * rows the SQ and integer matmuls read (kc_quant_i8), and static SQ
 * activations as two INT8 rows a token (kc_quant_static_i8), each alone
 * and fused into the RMSNorm and SwiGLU kernels that produce the row.
 *
 * Why fused. A decode step quantizes one row per site on one block; the
 * kernel before it wrote that row. Doing both in one kernel saves a launch
 * and a pass over global memory, both on the step's critical path. Every
 * variant computes what the op followed by the standalone quantization
 * computes, bit for bit (tests/gpu/test_kc_ops.c), and the codes and scales
 * are the CPU's (k_quant_row_i8, k_quant_row_static): the max is exact in
 * any order and the division and rounding are IEEE (kc_q8, qs_code).
 *
 * Rows that fit stay in registers, loaded at once at clamped indices (one
 * memory latency for the row instead of one per element); longer rows take
 * loops over global memory.
 */
#include "kc.h"
#include "kc_rows.cuh"

#include <math.h>
#include <stdint.h>

/* Row max |out| over the block, then out quantized as k_quant_i8 does (the
 * row was written by this block: __syncthreads makes it visible). */
__device__ void quant_row_q8(const float *o, int dim, int8_t *q, float *sx) {
    float mx = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) mx = fmaxf(mx, fabsf(o[j]));
    const float s = kc_q8_scale(block_max(mx));
    if (threadIdx.x == 0) sx[blockIdx.x] = s;
    int8_t *qr = q + (size_t)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) qr[j] = kc_q8(o[j], s);
}

/* Rows of up to RMS_REG x blockDim values stay in registers: the row is read
 * once and the normalised values are quantized without reading them back
 * (decode runs one row on one block: each pass over global memory is a
 * latency on the step's critical path). Same operations, same order, same
 * results as the general path below. */
#define RMS_REG 32

/* The block's row of RMSNorm in registers: v[e] = out[tid + e * blockDim]
 * (for the indices below dim), also stored to o. Every load is issued
 * before the first use, at a clamped index (no branch between them): one
 * memory latency for the row, not one per element. The weights do not
 * depend on the kernel before, so they are in flight while it finishes. */
template <int N>
__device__ __forceinline__ void rms_row_regs(float (&v)[N], const float *xr, const float *w, float *o, int dim,
                                             float eps) {
    float wv[N];
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        wv[e] = __ldg(w + (j < dim ? j : dim - 1));
    }
    kc_pdl_wait();
    kc_pdl_trigger();
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        v[e] = xr[j < dim ? j : dim - 1];
    }
    double ss = 0;
#pragma unroll
    for (int e = 0; e < N; e++)
        if (threadIdx.x + e * blockDim.x < dim) ss += (double)v[e] * v[e];
    const float scale = rms_finish(ss, dim, eps);
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < dim) v[e] = v[e] * scale * wv[e], o[j] = v[e];
    }
}

__global__ void __launch_bounds__(256) rmsnorm_q8_kernel(float *out, const float *x, const float *w, int dim,
                                                         float eps, int8_t *q, float *sx) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    if (dim > RMS_REG * (int)blockDim.x) {
        kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
        kc_pdl_trigger();
        const float scale = rms_scale(xr, dim, eps);
        for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = xr[j] * scale * w[j];
        __syncthreads();
        quant_row_q8(o, dim, q, sx);
        return;
    }
    float v[RMS_REG];
    rms_row_regs(v, xr, w, o, dim, eps);
    float mx = 0.0f;
#pragma unroll
    for (int e = 0; e < RMS_REG; e++)
        if (threadIdx.x + e * blockDim.x < dim) mx = fmaxf(mx, fabsf(v[e]));
    const float s = kc_q8_scale(block_max(mx));
    if (threadIdx.x == 0) sx[blockIdx.x] = s;
    int8_t *qr = q + (size_t)blockIdx.x * dim;
#pragma unroll
    for (int e = 0; e < RMS_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < dim) qr[j] = kc_q8(v[e], s);
    }
}

extern "C" int kc_rmsnorm_q8(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                             int8_t *d_qx, float *d_sx) {
    if (n <= 0) return 0;
    if (dim <= 0) { /* the register path clamps indices to dim - 1 */
        kc_set_error("kc_rmsnorm_q8: row length %d", dim);
        return -1;
    }
    return kc_launch_pdl("rmsnorm_q8", rmsnorm_q8_kernel, n, 256, 0, d_out, d_x, d_w, dim, eps, d_qx, d_sx);
}

/* RMSNorm + INT8 with the sum of squares in the canonical order of the norm
 * split over the matmuls (kc_rows.cuh, ns_*): the numbers that split gives,
 * bit for bit (its tests' reference). One row a block of 256 threads, loops
 * over memory: not a decode-speed kernel. */
__global__ void __launch_bounds__(256) rmsnorm_q8_canon_kernel(float *out, const float *x, const float *w, int dim,
                                                               float eps, int8_t *q, float *sx) {
    kc_pdl_wait();
    kc_pdl_trigger();
    __shared__ double ts[256];
    __shared__ double total;
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    const int ntile = (dim + 15) / 16;
    double lane = 0.0; /* warp 0: lane l's tiles l, l + 32, ... */
    for (int t0 = 0; t0 < ntile; t0 += 256) {
        const int t = t0 + (int)threadIdx.x;
        if (t < ntile) {
            const int nv = min(16, dim - 16 * t);
            double s2 = 0.0;
            for (int i = 0; i < nv; i++) s2 += (double)xr[16 * t + i] * xr[16 * t + i];
            ts[threadIdx.x] = s2;
        }
        __syncthreads();
        if (threadIdx.x < 32)
            for (int j = threadIdx.x; j < min(256, ntile - t0); j += 32) lane += ts[j];
        __syncthreads();
    }
    if (threadIdx.x < 32) {
        lane = ns_lanes(lane);
        if (threadIdx.x == 0) total = lane;
    }
    __syncthreads();
    const float scale = ns_inv(total, dim, eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = xr[j] * scale * w[j];
    __syncthreads();
    quant_row_q8(o, dim, q, sx);
}

extern "C" int kc_rmsnorm_q8_canon(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                                   int8_t *d_qx, float *d_sx) {
    if (n <= 0) return 0;
    if (dim <= 0) {
        kc_set_error("kc_rmsnorm_q8_canon: row length %d", dim);
        return -1;
    }
    return kc_launch_pdl("rmsnorm_q8_canon", rmsnorm_q8_canon_kernel, n, 256, 0, d_out, d_x, d_w, dim, eps, d_qx,
                         d_sx);
}

/* The register path holds up to Q8_REG float4 of g and of u a thread, all
 * loaded at once (decode: one row on one block, 448 threads for the 8B
 * FFN, 896 for the 70B); longer rows take the loop. At 1024 threads a block
 * ptxas caps it at 64 registers and spills ~70 bytes a thread (measured with
 * the spill: docs/perf-gpu.md, third session). Same operations as silu_mul_kernel
 * followed by k_quant_i8, so the same numbers. */
#define Q8_REG 8


/* SwiGLU of the block's row in float4 registers: a[e] = g[tid + e * blockDim]
 * for those below n4, also stored to g; every load issued at once */
template <int N>
__device__ __forceinline__ void silu_row_f4(float4 (&a)[N], float *gr, const float *ur, int n4) {
    float4 b[N];
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x, jc = j < n4 ? j : n4 - 1;
        a[e] = ((const float4 *)gr)[jc], b[e] = __ldg((const float4 *)ur + jc);
    }
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < n4) {
            a[e] = make_float4(silu_mul1(a[e].x, b[e].x), silu_mul1(a[e].y, b[e].y), silu_mul1(a[e].z, b[e].z),
                               silu_mul1(a[e].w, b[e].w));
            ((float4 *)gr)[j] = a[e];
        }
    }
}

__global__ void __launch_bounds__(1024) silu_mul_q8_kernel(float *g, const float *u, int dim, int8_t *q, float *sx) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    float *gr = g + (size_t)blockIdx.x * dim;
    const float *ur = u + (size_t)blockIdx.x * dim;
    const int n4 = dim / 4;
    if ((dim & 3) || n4 > Q8_REG * (int)blockDim.x) {
        for (int j = threadIdx.x; j < dim; j += blockDim.x) gr[j] = silu_mul1(gr[j], ur[j]);
        __syncthreads();
        quant_row_q8(gr, dim, q, sx);
        return;
    }
    float4 a[Q8_REG];
    silu_row_f4(a, gr, ur, n4);
    float mx = 0.0f;
#pragma unroll
    for (int e = 0; e < Q8_REG; e++)
        if (threadIdx.x + e * blockDim.x < n4) mx = fmaxf(mx, absmax4(a[e]));
    const float s = kc_q8_scale(block_max(mx));
    if (threadIdx.x == 0) sx[blockIdx.x] = s;
    char4 *qr = (char4 *)(q + (size_t)blockIdx.x * dim);
#pragma unroll
    for (int e = 0; e < Q8_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < n4) {
            char4 o;
            o.x = kc_q8(a[e].x, s), o.y = kc_q8(a[e].y, s), o.z = kc_q8(a[e].z, s), o.w = kc_q8(a[e].w, s);
            qr[j] = o;
        }
    }
}

/* threads for a register path of Q8_REG float4 a thread over k values: 128..1024 */
static int q8_threads(long k) {
    long t = (k / 4 + Q8_REG - 1) / Q8_REG;
    t = (t + 31) / 32 * 32;
    return (int)(t < 128 ? 128 : t > 1024 ? 1024 : t);
}

extern "C" int kc_silu_mul_q8(float *d_g, const float *d_u, int n, int dim, int8_t *d_qx, float *d_sx) {
    if (n <= 0) return 0;
    if (dim <= 0) { /* the register path clamps indices to dim - 1 */
        kc_set_error("kc_silu_mul_q8: row length %d", dim);
        return -1;
    }
    return kc_launch_pdl("silu_mul_q8", silu_mul_q8_kernel, n, q8_threads(dim), 0, d_g, d_u, dim, d_qx, d_sx);
}

/* ---- per-token INT8 quantization (bit-identical to k_quant_row_i8) ----------------- */

/* A row of up to Q8_REG x blockDim float4 stays in registers, loaded at
 * once (decode quantizes one row on one block: a loop of dependent loads
 * costs a memory latency per iteration, twice). The max is exact in any
 * order, so the codes equal the loop's. */

__global__ void __launch_bounds__(1024) k_quant_i8(const float *x, long k, int8_t *q, float *sx) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    const float *xr = x + (size_t)blockIdx.x * k;
    int8_t *qr = q + (size_t)blockIdx.x * k;
#define QV(xv) kc_q8((xv), s)
    const long n4 = k / 4;
    if ((k & 3) == 0 && n4 <= Q8_REG * (long)blockDim.x) {
        float4 v[Q8_REG];
#pragma unroll
        for (int e = 0; e < Q8_REG; e++) {
            const long j = threadIdx.x + (long)e * blockDim.x;
            v[e] = __ldg((const float4 *)xr + (j < n4 ? j : n4 - 1));
        }
        float mx = 0.0f;
#pragma unroll
        for (int e = 0; e < Q8_REG; e++)
            if (threadIdx.x + (long)e * blockDim.x < n4) mx = fmaxf(mx, absmax4(v[e]));
        const float s = kc_q8_scale(block_max(mx));
        if (threadIdx.x == 0) sx[blockIdx.x] = s;
#pragma unroll
        for (int e = 0; e < Q8_REG; e++) {
            const long j = threadIdx.x + (long)e * blockDim.x;
            if (j < n4) {
                char4 o;
                o.x = QV(v[e].x), o.y = QV(v[e].y), o.z = QV(v[e].z), o.w = QV(v[e].w);
                ((char4 *)qr)[j] = o;
            }
        }
        return;
    }
    const bool vec = (k & 3) == 0;
    float mx = 0.0f;
    if (vec)
        for (long j = threadIdx.x; j < n4; j += blockDim.x) mx = fmaxf(mx, absmax4(__ldg((const float4 *)xr + j)));
    else
        for (long j = threadIdx.x; j < k; j += blockDim.x) mx = fmaxf(mx, fabsf(xr[j]));
    const float s = kc_q8_scale(block_max(mx));
    if (threadIdx.x == 0) sx[blockIdx.x] = s;
    if (vec)
        for (long j = threadIdx.x; j < n4; j += blockDim.x) {
            float4 v = __ldg((const float4 *)xr + j);
            char4 o;
            o.x = QV(v.x), o.y = QV(v.y), o.z = QV(v.z), o.w = QV(v.w);
            ((char4 *)qr)[j] = o;
        }
    else
        for (long j = threadIdx.x; j < k; j += blockDim.x) qr[j] = QV(xr[j]);
#undef QV
}

extern "C" int kc_quant_i8(const float *d_x, long m, long k, int8_t *d_qx, float *d_sx) {
    if (m <= 0 || k <= 0) return 0;
    if (m > 0x7fffffffL) {
        kc_set_error("kc_quant_i8: too many rows (%ld)", m);
        return -1;
    }
    return kc_launch_pdl("k_quant_i8", k_quant_i8, (unsigned)m, q8_threads(k), 0, d_x, k, d_qx, d_sx);
}

/* ---- static SQ activations on the integer kernels: two INT8 rows a token ---------- */

/* The paper's Hopper mapping of W4A(SQ): token t's high channels (mask 1)
 * go to q2 row 2t at qh levels, its low channels (mask 0) to row 2t + 1 at
 * ql, each class with its own scale (sx2[2t], sx2[2t + 1]); channels of
 * the other class are 0 in a row. k_quant_row_static's arithmetic: max
 * exact in any order, IEEE division, round half to even, clamp; so every
 * kernel below gives the CPU's codes. kc_quant_static_i8 quantizes a row
 * on its own (the attention output); kc_rmsnorm_qs and kc_silu_mul_qs do
 * it in the norm / SwiGLU kernel that produced the row, as the INT8 path
 * does (one launch a site instead of two; the row stays in registers). */
struct QStatic {
    const uint8_t *mask; /* [k] of this layer and site */
    int qh, ql;          /* 2^(bits - 1) - 1 of each class */
    int8_t *q2;          /* [2m][k] */
    float *sx2;          /* [2m] */
};

__device__ __forceinline__ int8_t qs_code(float v, float s, int q) {
    return (int8_t)(s > 0.0f ? fminf(fmaxf(rintf(__fdiv_rn(v, s)), (float)-q), (float)q) : 0.0f);
}

/* both classes' block max in one barrier; the scales of row t, stored by thread 0 */
__device__ float2 qs_scales(float mh, float ml, const QStatic &qs, long t) {
    __shared__ float red[2][32];
    for (int off = 16; off > 0; off >>= 1) {
        mh = fmaxf(mh, __shfl_xor_sync(0xffffffffu, mh, off));
        ml = fmaxf(ml, __shfl_xor_sync(0xffffffffu, ml, off));
    }
    if ((threadIdx.x & 31) == 0) red[0][threadIdx.x >> 5] = mh, red[1][threadIdx.x >> 5] = ml;
    __syncthreads();
    mh = 0.0f, ml = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) mh = fmaxf(mh, red[0][i]), ml = fmaxf(ml, red[1][i]);
    const float2 s = make_float2(__fdiv_rn(mh, (float)qs.qh), __fdiv_rn(ml, (float)qs.ql));
    if (threadIdx.x == 0) qs.sx2[2 * t] = s.x, qs.sx2[2 * t + 1] = s.y;
    return s;
}

__device__ __forceinline__ void qs_max(float v, uint8_t m, float &mh, float &ml) {
    if (m == 1) mh = fmaxf(mh, fabsf(v));
    else if (m == 0) ml = fmaxf(ml, fabsf(v));
}

/* row t of x (k values, in global memory) through loops: rows too long
 * for the register paths */
__device__ void qs_row_loop(const float *xr, long k, const QStatic &qs, long t) {
    float mh = 0.0f, ml = 0.0f;
    for (long j = threadIdx.x; j < k; j += blockDim.x) qs_max(xr[j], qs.mask[j], mh, ml);
    const float2 s = qs_scales(mh, ml, qs, t);
    int8_t *oh = qs.q2 + 2 * t * k, *ol = oh + k;
    for (long j = threadIdx.x; j < k; j += blockDim.x) {
        const float v = xr[j];
        const uint8_t m = qs.mask[j];
        oh[j] = m == 1 ? qs_code(v, s.x, qs.qh) : 0;
        ol[j] = m == 0 ? qs_code(v, s.y, qs.ql) : 0;
    }
}

/* Masks ride in registers four to a word (byte c of word e is the class of
 * element c of float4 e): a byte a register spilled at 64 registers. */
__device__ __forceinline__ uint32_t qs_cls(uint32_t w, int c) { return (w >> (8 * c)) & 0xFFu; }

/* row t held as float4 a thread (element 4 (tid + e blockDim) + c), masks loaded alike */
template <int N>
__device__ __forceinline__ void qs_row_f4(const float4 (&v)[N], const uint32_t (&m)[N], long n4, const QStatic &qs,
                                          long t) {
    float mh = 0.0f, ml = 0.0f;
#pragma unroll
    for (int e = 0; e < N; e++)
        if (threadIdx.x + (long)e * blockDim.x < n4) {
            qs_max(v[e].x, qs_cls(m[e], 0), mh, ml), qs_max(v[e].y, qs_cls(m[e], 1), mh, ml);
            qs_max(v[e].z, qs_cls(m[e], 2), mh, ml), qs_max(v[e].w, qs_cls(m[e], 3), mh, ml);
        }
    const float2 s = qs_scales(mh, ml, qs, t);
    char4 *oh = (char4 *)(qs.q2 + 2 * t * 4 * n4), *ol = oh + n4;
#define QSH(c, f) (qs_cls(m[e], c) == 1 ? qs_code(v[e].f, s.x, qs.qh) : (int8_t)0)
#define QSL(c, f) (qs_cls(m[e], c) == 0 ? qs_code(v[e].f, s.y, qs.ql) : (int8_t)0)
#pragma unroll
    for (int e = 0; e < N; e++) {
        const long j = threadIdx.x + (long)e * blockDim.x;
        if (j < n4) {
            oh[j] = make_char4(QSH(0, x), QSH(1, y), QSH(2, z), QSH(3, w));
            ol[j] = make_char4(QSL(0, x), QSL(1, y), QSL(2, z), QSL(3, w));
        }
    }
#undef QSH
#undef QSL
}

template <int N>
__device__ __forceinline__ void qs_masks_f4(uint32_t (&m)[N], const uint8_t *mask, long n4) {
#pragma unroll
    for (int e = 0; e < N; e++) {
        const long j = threadIdx.x + (long)e * blockDim.x;
        m[e] = __ldg((const unsigned int *)mask + (j < n4 ? j : n4 - 1));
    }
}

template <int N>
__global__ void __launch_bounds__(1024) k_quant_static(const float *x, long k, QStatic qs) {
    const long t = blockIdx.x, n4 = k / 4;
    const float *xr = x + t * k;
    if ((k & 3) || n4 > N * (long)blockDim.x) {
        kc_pdl_wait();
        kc_pdl_trigger();
        qs_row_loop(xr, k, qs, t);
        return;
    }
    uint32_t m[N];
    qs_masks_f4(m, qs.mask, n4); /* they depend on no kernel: loaded before the wait */
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    float4 v[N];
#pragma unroll
    for (int e = 0; e < N; e++) {
        const long j = threadIdx.x + (long)e * blockDim.x;
        v[e] = ((const float4 *)xr)[j < n4 ? j : n4 - 1];
    }
    qs_row_f4(v, m, n4, qs, t);
}

/* N values a thread in registers (N = 16 covers 4096 values, 32 covers
 * 8192: a register array sized for the row, not for the longest row) */
template <int N>
__global__ void __launch_bounds__(256) rmsnorm_qs_kernel(float *out, const float *x, const float *w, int dim,
                                                         float eps, QStatic qs) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    if (dim > N * (int)blockDim.x) {
        kc_pdl_wait();
        kc_pdl_trigger();
        const float scale = rms_scale(xr, dim, eps);
        for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = xr[j] * scale * w[j];
        __syncthreads();
        qs_row_loop(o, dim, qs, blockIdx.x);
        return;
    }
    uint32_t m[N / 4] = {}; /* element e's class in byte e % 4 of word e / 4 */
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        m[e / 4] |= (uint32_t)__ldg(qs.mask + (j < dim ? j : dim - 1)) << (8 * (e % 4));
    }
    float v[N];
    rms_row_regs(v, xr, w, o, dim, eps);
    float mh = 0.0f, ml = 0.0f;
#pragma unroll
    for (int e = 0; e < N; e++)
        if (threadIdx.x + e * blockDim.x < dim) qs_max(v[e], qs_cls(m[e / 4], e % 4), mh, ml);
    const float2 s = qs_scales(mh, ml, qs, blockIdx.x);
    int8_t *oh = qs.q2 + 2 * (size_t)blockIdx.x * dim, *ol = oh + dim;
#pragma unroll
    for (int e = 0; e < N; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < dim) {
            const uint32_t c = qs_cls(m[e / 4], e % 4);
            oh[j] = c == 1 ? qs_code(v[e], s.x, qs.qh) : 0;
            ol[j] = c == 0 ? qs_code(v[e], s.y, qs.ql) : 0;
        }
    }
}

template <int N>
__global__ void __launch_bounds__(1024) silu_mul_qs_kernel(float *g, const float *u, int dim, QStatic qs) {
    float *gr = g + (size_t)blockIdx.x * dim;
    const float *ur = u + (size_t)blockIdx.x * dim;
    const int n4 = dim / 4;
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    if ((dim & 3) || n4 > N * (int)blockDim.x) {
        for (int j = threadIdx.x; j < dim; j += blockDim.x) gr[j] = silu_mul1(gr[j], ur[j]);
        __syncthreads();
        qs_row_loop(gr, dim, qs, blockIdx.x);
        return;
    }
    float4 a[N];
    silu_row_f4(a, gr, ur, n4);
    /* the masks after the SwiGLU (u's registers free by then; before it they
     * spilled at 1024 threads' 64 registers) */
    uint32_t m[N];
    qs_masks_f4(m, qs.mask, n4);
    qs_row_f4(a, m, n4, qs, blockIdx.x);
}

/* threads for a register row of N float4 a thread: 128..1024. The static
 * kernels hold a second array (the masks) and two rows of codes, so rows of
 * up to 16384 values take N = 4 (more threads, no spills at 64 registers) */
static int qs_threads(long k, int n) {
    long t = (k / 4 + n - 1) / n;
    t = (t + 31) / 32 * 32;
    return (int)(t < 128 ? 128 : t > 1024 ? 1024 : t);
}

static int qs_args(const char *who, long k, const uint8_t *mask, int hi_bits, int lo_bits, int8_t *q2, float *sx2,
                   QStatic *qs) {
    /* the register paths load 4 mask bytes at once where k % 4 == 0 */
    if (!mask || !q2 || !sx2 || k < 1 || hi_bits < 2 || hi_bits > 8 || lo_bits < 2 || lo_bits > 8 ||
        (k % 4 == 0 && ((uintptr_t)mask & 3))) {
        kc_set_error("%s: bad arguments", who);
        return -1;
    }
    *qs = QStatic{mask, (1 << (hi_bits - 1)) - 1, (1 << (lo_bits - 1)) - 1, q2, sx2};
    return 0;
}

extern "C" int kc_quant_static_i8(const float *d_x, long m, long k, const uint8_t *d_mask, int hi_bits, int lo_bits,
                                  int8_t *d_q2, float *d_sx2) {
    QStatic qs;
    if (!d_x || m < 0 || m > 0x7fffffffL) {
        kc_set_error("kc_quant_static_i8: bad arguments");
        return -1;
    }
    if (qs_args("kc_quant_static_i8", k, d_mask, hi_bits, lo_bits, d_q2, d_sx2, &qs)) return -1;
    if (m == 0) return 0;
    return k <= 16384 ? kc_launch_pdl("k_quant_static", k_quant_static<4>, (unsigned)m, qs_threads(k, 4), 0, d_x, k, qs)
                      : kc_launch_pdl("k_quant_static", k_quant_static<8>, (unsigned)m, qs_threads(k, 8), 0, d_x, k, qs);
}

extern "C" int kc_rmsnorm_qs(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                             const uint8_t *d_mask, int hi_bits, int lo_bits, int8_t *d_q2, float *d_sx2) {
    QStatic qs;
    if (qs_args("kc_rmsnorm_qs", dim, d_mask, hi_bits, lo_bits, d_q2, d_sx2, &qs)) return -1;
    if (n <= 0) return 0;
    return dim <= 16 * 256 ? kc_launch_pdl("rmsnorm_qs", rmsnorm_qs_kernel<16>, n, 256, 0, d_out, d_x, d_w, dim, eps, qs)
                           : kc_launch_pdl("rmsnorm_qs", rmsnorm_qs_kernel<RMS_REG>, n, 256, 0, d_out, d_x, d_w, dim,
                                           eps, qs);
}

extern "C" int kc_silu_mul_qs(float *d_g, const float *d_u, int n, int dim, const uint8_t *d_mask, int hi_bits,
                              int lo_bits, int8_t *d_q2, float *d_sx2) {
    QStatic qs;
    if (qs_args("kc_silu_mul_qs", dim, d_mask, hi_bits, lo_bits, d_q2, d_sx2, &qs)) return -1;
    if (n <= 0) return 0;
    return dim <= 16384 ? kc_launch_pdl("silu_mul_qs", silu_mul_qs_kernel<4>, n, qs_threads(dim, 4), 0, d_g, d_u, dim, qs)
                        : kc_launch_pdl("silu_mul_qs", silu_mul_qs_kernel<8>, n, qs_threads(dim, 8), 0, d_g, d_u, dim,
                                        qs);
}
