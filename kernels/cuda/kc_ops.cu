/* kc_ops.cu - the transformer's small ops on the GPU (see kc.h).
 *
 * Each op follows the CPU kernel's arithmetic (kernels/cpu/k_ops.c) where
 * that is cheap: RMSNorm sums squares in double, RoPE takes cos/sin of a
 * double angle, SiLU uses expf. So FP32 GPU and CPU runs differ only by
 * summation order in the matmuls and attention, which keeps greedy
 * decoding on the same tokens. The per-token INT8 quantization of an SQ
 * matmul's input (kc_quant_i8, and fused after RMSNorm and SwiGLU) is
 * bit-identical to the CPU's k_quant_row_i8.
 * Attention is in kc_attn.cu.
 */
#include "kc.h"
#include "kc_internal.h"

#include <float.h>
#include <math.h>


__global__ void embed_kernel(float *out, const float *table, const int32_t *tok, int dim) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    const float *src = table + (size_t)tok[blockIdx.x] * dim;
    float *dst = out + (size_t)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = src[j];
}

extern "C" int kc_embed(float *d_out, const float *d_table, const int32_t *d_tok, int n, int dim) {
    if (n <= 0) return 0;
    return kc_launch_pdl("embed", embed_kernel, n, 256, 0, d_out, d_table, d_tok, dim);
}

/* 1 / rms(row) from each thread's part of the sum of squares (in double, as
 * the CPU does; the thread's elements j = tid, tid + blockDim, ... added in
 * that order, then the block's parts in a fixed order) */
__device__ float rms_finish(double ss, int dim, float eps) {
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

__device__ float rms_scale(const float *xr, int dim, float eps) {
    double ss = 0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += (double)xr[j] * xr[j];
    return rms_finish(ss, dim, eps);
}

/* the block's max |v| over all threads */
__device__ float block_max(float mx) {
    __shared__ float red[32];
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) mx = fmaxf(mx, red[i]);
    return mx;
}

__global__ void rmsnorm_kernel(float *out, const float *x, const float *w, int dim, float eps) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    const float scale = rms_scale(xr, dim, eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = xr[j] * scale * w[j];
}

extern "C" int kc_rmsnorm(float *d_out, const float *d_x, const float *d_w, int n, int dim,
                          float eps) {
    if (n <= 0) return 0;
    return kc_launch_pdl("rmsnorm", rmsnorm_kernel, n, 256, 0, d_out, d_x, d_w, dim, eps);
}

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

/* The register path holds up to Q8_REG float4 of g and of u a thread, all
 * loaded at once (decode: one row on one block, 448 threads for the 8B
 * FFN, 896 for the 70B); longer rows take the loop. At 1024 threads a block
 * ptxas caps it at 64 registers and spills ~70 bytes a thread (measured with
 * the spill: docs/perf-gpu.md, third session). Same operations as silu_mul_kernel
 * followed by k_quant_i8, so the same numbers. */
#define Q8_REG 8

__device__ __forceinline__ float absmax4(float4 v) {
    return fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
}
__device__ __forceinline__ float silu_mul1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

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
    float4 a[Q8_REG], b[Q8_REG];
#pragma unroll
    for (int e = 0; e < Q8_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x, jc = j < n4 ? j : n4 - 1;
        a[e] = ((const float4 *)gr)[jc], b[e] = __ldg((const float4 *)ur + jc);
    }
    float mx = 0.0f;
#pragma unroll
    for (int e = 0; e < Q8_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < n4) {
            a[e] = make_float4(silu_mul1(a[e].x, b[e].x), silu_mul1(a[e].y, b[e].y), silu_mul1(a[e].z, b[e].z),
                               silu_mul1(a[e].w, b[e].w));
            ((float4 *)gr)[j] = a[e];
            mx = fmaxf(mx, absmax4(a[e]));
        }
    }
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

/* The angle depends on (position, frequency) only: each block computes the
 * row's rot_half cos/sin pairs once (in double, as the CPU does) into shared
 * memory (cs[rot_half][2]) and every head reuses them, instead of n_heads
 * times over. */
__device__ void rope_angles(float *cs, int32_t pos, int rot_half, const float *inv_freq) {
    const double p = (double)(float)pos;
    for (int i = threadIdx.x; i < rot_half; i += blockDim.x) {
        const double theta = p * inv_freq[i];
        cs[2 * i] = (float)cos(theta), cs[2 * i + 1] = (float)sin(theta);
    }
    __syncthreads();
}

/* pairs (2i, 2i + 1) of the first 2 rot_half values of each head, in
 * place. Up to ROPE_REG pairs a thread are all loaded (at clamped indices,
 * no branch between the loads) before the first store: decode runs one row
 * on one block, and a loop of dependent loads costs a latency each. */
#define ROPE_REG 8

/* One RoPE rotation, every product and sum rounded on its own (no FMA
 * contraction), so that every kernel rotating a pair gets the same bits. */
__device__ __forceinline__ void rope_rot(float a, float b, float c, float s, float *x0, float *x1) {
    *x0 = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    *x1 = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

__device__ void rope_heads(float *xr, int n_heads, int head_dim, int rot_half, const float *cs) {
    const int total = n_heads * rot_half;
    for (int u0 = threadIdx.x; u0 < total; u0 += ROPE_REG * blockDim.x) {
        float a[ROPE_REG], b[ROPE_REG];
#pragma unroll
        for (int e = 0; e < ROPE_REG; e++) {
            const int u = u0 + e * blockDim.x, uc = u < total ? u : total - 1;
            const float *v = xr + (size_t)(uc / rot_half) * head_dim + 2 * (uc % rot_half);
            a[e] = v[0], b[e] = v[1];
        }
#pragma unroll
        for (int e = 0; e < ROPE_REG; e++) {
            const int u = u0 + e * blockDim.x;
            if (u < total) {
                const int h = u / rot_half, i = u % rot_half;
                const float c = cs[2 * i], s = cs[2 * i + 1];
                float *v = xr + (size_t)h * head_dim + 2 * i;
                rope_rot(a[e], b[e], c, s, &v[0], &v[1]);
            }
        }
    }
}

__global__ void rope_kernel(float *x, const int32_t *pos, int n_heads, int head_dim, int rot_half,
                            const float *inv_freq) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    extern __shared__ float cs[];
    rope_angles(cs, pos[blockIdx.x], rot_half, inv_freq);
    rope_heads(x + (size_t)blockIdx.x * n_heads * head_dim, n_heads, head_dim, rot_half, cs);
}

extern "C" int kc_rope(float *d_x, const int32_t *d_pos, int n, int n_heads, int head_dim,
                       int rot_dim, const float *d_inv_freq) {
    if (n <= 0) return 0;
    return kc_launch_pdl("rope", rope_kernel, n, 256, (size_t)rot_dim * sizeof(float), d_x, d_pos, n_heads,
                         head_dim, rot_dim / 2, d_inv_freq);
}

__global__ void silu_mul_kernel(float *g, const float *u, long count) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < count;
         i += (long)gridDim.x * blockDim.x)
        g[i] = silu_mul1(g[i], u[i]);
}

__global__ void add_kernel(float *y, const float *x, long count) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < count;
         i += (long)gridDim.x * blockDim.x)
        y[i] += x[i];
}

static unsigned grid_for(long count) {
    long b = (count + 255) / 256;
    return (unsigned)(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

extern "C" int kc_silu_mul(float *d_g, const float *d_u, long count) {
    if (count <= 0) return 0;
    return kc_launch_pdl("silu_mul", silu_mul_kernel, grid_for(count), 256, 0, d_g, d_u, count);
}

extern "C" int kc_add(float *d_y, const float *d_x, long count) {
    if (count <= 0) return 0;
    return kc_launch_pdl("add", add_kernel, grid_for(count), 256, 0, d_y, d_x, count);
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

/* row t held as float4 a thread (element 4 (tid + e blockDim) + c), masks loaded alike */
template <int N>
__device__ __forceinline__ void qs_row_f4(const float4 (&v)[N], const uchar4 (&m)[N], long n4, const QStatic &qs,
                                          long t) {
    float mh = 0.0f, ml = 0.0f;
#pragma unroll
    for (int e = 0; e < N; e++)
        if (threadIdx.x + (long)e * blockDim.x < n4) {
            qs_max(v[e].x, m[e].x, mh, ml), qs_max(v[e].y, m[e].y, mh, ml);
            qs_max(v[e].z, m[e].z, mh, ml), qs_max(v[e].w, m[e].w, mh, ml);
        }
    const float2 s = qs_scales(mh, ml, qs, t);
    char4 *oh = (char4 *)(qs.q2 + 2 * t * 4 * n4), *ol = oh + n4;
#define QSH(c) (m[e].c == 1 ? qs_code(v[e].c, s.x, qs.qh) : (int8_t)0)
#define QSL(c) (m[e].c == 0 ? qs_code(v[e].c, s.y, qs.ql) : (int8_t)0)
#pragma unroll
    for (int e = 0; e < N; e++) {
        const long j = threadIdx.x + (long)e * blockDim.x;
        if (j < n4) {
            oh[j] = make_char4(QSH(x), QSH(y), QSH(z), QSH(w));
            ol[j] = make_char4(QSL(x), QSL(y), QSL(z), QSL(w));
        }
    }
#undef QSH
#undef QSL
}

/* the masks of a float4 register row; they depend on no kernel, so callers load them before kc_pdl_wait */
template <int N>
__device__ __forceinline__ void qs_masks_f4(uchar4 (&m)[N], const uint8_t *mask, long n4) {
#pragma unroll
    for (int e = 0; e < N; e++) {
        const long j = threadIdx.x + (long)e * blockDim.x;
        m[e] = __ldg((const uchar4 *)mask + (j < n4 ? j : n4 - 1));
    }
}

__global__ void __launch_bounds__(1024) k_quant_static(const float *x, long k, QStatic qs) {
    const long t = blockIdx.x, n4 = k / 4;
    const float *xr = x + t * k;
    if ((k & 3) || n4 > Q8_REG * (long)blockDim.x) {
        kc_pdl_wait();
        kc_pdl_trigger();
        qs_row_loop(xr, k, qs, t);
        return;
    }
    uchar4 m[Q8_REG];
    qs_masks_f4(m, qs.mask, n4);
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    float4 v[Q8_REG];
#pragma unroll
    for (int e = 0; e < Q8_REG; e++) {
        const long j = threadIdx.x + (long)e * blockDim.x;
        v[e] = ((const float4 *)xr)[j < n4 ? j : n4 - 1];
    }
    qs_row_f4(v, m, n4, qs, t);
}

__global__ void __launch_bounds__(256) rmsnorm_qs_kernel(float *out, const float *x, const float *w, int dim,
                                                         float eps, QStatic qs) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *o = out + (size_t)blockIdx.x * dim;
    if (dim > RMS_REG * (int)blockDim.x) {
        kc_pdl_wait();
        kc_pdl_trigger();
        const float scale = rms_scale(xr, dim, eps);
        for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = xr[j] * scale * w[j];
        __syncthreads();
        qs_row_loop(o, dim, qs, blockIdx.x);
        return;
    }
    uint8_t m[RMS_REG];
#pragma unroll
    for (int e = 0; e < RMS_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        m[e] = __ldg(qs.mask + (j < dim ? j : dim - 1));
    }
    float v[RMS_REG];
    rms_row_regs(v, xr, w, o, dim, eps);
    float mh = 0.0f, ml = 0.0f;
#pragma unroll
    for (int e = 0; e < RMS_REG; e++)
        if (threadIdx.x + e * blockDim.x < dim) qs_max(v[e], m[e], mh, ml);
    const float2 s = qs_scales(mh, ml, qs, blockIdx.x);
    int8_t *oh = qs.q2 + 2 * (size_t)blockIdx.x * dim, *ol = oh + dim;
#pragma unroll
    for (int e = 0; e < RMS_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < dim) {
            oh[j] = m[e] == 1 ? qs_code(v[e], s.x, qs.qh) : 0;
            ol[j] = m[e] == 0 ? qs_code(v[e], s.y, qs.ql) : 0;
        }
    }
}

__global__ void __launch_bounds__(1024) silu_mul_qs_kernel(float *g, const float *u, int dim, QStatic qs) {
    float *gr = g + (size_t)blockIdx.x * dim;
    const float *ur = u + (size_t)blockIdx.x * dim;
    const int n4 = dim / 4;
    if ((dim & 3) || n4 > Q8_REG * (int)blockDim.x) {
        kc_pdl_wait();
        kc_pdl_trigger();
        for (int j = threadIdx.x; j < dim; j += blockDim.x) gr[j] = silu_mul1(gr[j], ur[j]);
        __syncthreads();
        qs_row_loop(gr, dim, qs, blockIdx.x);
        return;
    }
    uchar4 m[Q8_REG];
    qs_masks_f4(m, qs.mask, n4);
    kc_pdl_wait();
    kc_pdl_trigger();
    float4 a[Q8_REG], b[Q8_REG];
#pragma unroll
    for (int e = 0; e < Q8_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x, jc = j < n4 ? j : n4 - 1;
        a[e] = ((const float4 *)gr)[jc], b[e] = __ldg((const float4 *)ur + jc);
    }
#pragma unroll
    for (int e = 0; e < Q8_REG; e++) {
        const int j = threadIdx.x + e * blockDim.x;
        if (j < n4) {
            a[e] = make_float4(silu_mul1(a[e].x, b[e].x), silu_mul1(a[e].y, b[e].y), silu_mul1(a[e].z, b[e].z),
                               silu_mul1(a[e].w, b[e].w));
            ((float4 *)gr)[j] = a[e];
        }
    }
    qs_row_f4(a, m, n4, qs, blockIdx.x);
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
    return kc_launch_pdl("k_quant_static", k_quant_static, (unsigned)m, q8_threads(k), 0, d_x, k, qs);
}

extern "C" int kc_rmsnorm_qs(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                             const uint8_t *d_mask, int hi_bits, int lo_bits, int8_t *d_q2, float *d_sx2) {
    QStatic qs;
    if (qs_args("kc_rmsnorm_qs", dim, d_mask, hi_bits, lo_bits, d_q2, d_sx2, &qs)) return -1;
    if (n <= 0) return 0;
    return kc_launch_pdl("rmsnorm_qs", rmsnorm_qs_kernel, n, 256, 0, d_out, d_x, d_w, dim, eps, qs);
}

extern "C" int kc_silu_mul_qs(float *d_g, const float *d_u, int n, int dim, const uint8_t *d_mask, int hi_bits,
                              int lo_bits, int8_t *d_q2, float *d_sx2) {
    QStatic qs;
    if (qs_args("kc_silu_mul_qs", dim, d_mask, hi_bits, lo_bits, d_q2, d_sx2, &qs)) return -1;
    if (n <= 0) return 0;
    return kc_launch_pdl("silu_mul_qs", silu_mul_qs_kernel, n, q8_threads(dim), 0, d_g, d_u, dim, qs);
}

/* ---- activation fake quantization ---------------------------------------- */

__device__ float block_absmax(const float *x, int dim, const uint8_t *mask, int want, float *red) {
    float mx = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        if (!mask || mask[j] == want) mx = fmaxf(mx, fabsf(x[j]));
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    __syncthreads(); /* red may still be read from the previous call */
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    float t = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) t = fmaxf(t, red[i]);
    return t;
}

__device__ void fake_quant_class(float *x, int dim, const uint8_t *mask, int want, int bits,
                                 float *red) {
    float mx = block_absmax(x, dim, mask, want, red);
    float q = (float)((1 << (bits - 1)) - 1), s = mx / q;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        if (mask && mask[j] != want) continue;
        float v = s > 0.0f ? rintf(x[j] / s) : 0.0f;
        v = v > q ? q : v < -q ? -q : v;
        x[j] = v * s;
    }
}

__global__ void fake_quant_kernel(float *x, int dim, const uint8_t *mask, int bits_hi, int bits) {
    __shared__ float red[32];
    float *xr = x + (size_t)blockIdx.x * dim;
    if (mask) fake_quant_class(xr, dim, mask, 1, bits_hi, red);
    fake_quant_class(xr, dim, mask, 0, bits, red);
}

extern "C" int kc_fake_quant(float *d_x, int n, int dim, const uint8_t *d_mask, int bits_hi,
                             int bits) {
    if (n <= 0) return 0;
    fake_quant_kernel<<<n, 256, 0, KC_STREAM>>>(d_x, dim, d_mask, bits_hi, bits);
    return kc_check_launch("fake_quant");
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_kernel(float *x, size_t count, float value, float scale, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        if (scale > 0.0f) {
            uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + i);
            x[i] = scale * (2.0f * (float)(r >> 40) / (float)(1ull << 24) - 1.0f);
        } else {
            x[i] = value;
        }
    }
}

extern "C" int kc_fill(float *d_x, size_t count, float value, float scale, uint64_t seed) {
    if (!count) return 0;
    fill_kernel<<<grid_for((long)(count < (1ul << 40) ? count : 1ul << 40)), 256, 0, KC_STREAM>>>(
        d_x, count, value, scale, seed);
    return kc_check_launch("fill");
}

/* ---- paged K/V ------------------------------------------------------------ */


__global__ void kv_store_kernel(kc_kv_t kv, int layer, const float *k, const float *v,
                                const int32_t *pos, const int32_t *blk, const int32_t *blk_off) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    int i = blockIdx.x;
    size_t at = kv_row(kv, layer, blk, blk_off[i], pos[i]);
    for (int j = threadIdx.x; j < kv.kv_dim; j += blockDim.x) {
        kv.d_k[at + j] = k[(size_t)i * kv.kv_dim + j];
        kv.d_v[at + j] = v[(size_t)i * kv.kv_dim + j];
    }
}

/* Row i: RoPE on its q and k heads, its k and v into the cache. A thread
 * takes (k, v) pairs of the row: it loads up to ROPE_REG of each at once,
 * rotates the k pairs in the rotated dimensions, and writes k back and both
 * into the cache from registers; then the q heads (rope_heads). Decode runs
 * one row on one block, so what counts is the number of dependent memory
 * latencies: the angles, the k/v loads, the q loads. */
__global__ void rope_kv_kernel(float *q, float *k, const float *v, const int32_t *pos, int n_head, int n_head_kv,
                               int head_dim, int rot_half, const float *inv_freq, kc_kv_t kv, int layer,
                               const int32_t *blk, const int32_t *blk_off) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    extern __shared__ float cs[];
    const int i = blockIdx.x, kvd = kv.kv_dim, half = head_dim / 2, total = n_head_kv * half;
    rope_angles(cs, pos[i], rot_half, inv_freq);
    const size_t at = kv_row(kv, layer, blk, blk_off[i], pos[i]);
    float *kr = k + (size_t)i * kvd;
    const float *vr = v + (size_t)i * kvd;
    for (int u0 = threadIdx.x; u0 < total; u0 += ROPE_REG * blockDim.x) { /* pair u: values 2u, 2u + 1 */
        float a[ROPE_REG], b[ROPE_REG], c[ROPE_REG], d[ROPE_REG];
#pragma unroll
        for (int e = 0; e < ROPE_REG; e++) {
            const int u = u0 + e * blockDim.x, uc = u < total ? u : total - 1;
            a[e] = kr[2 * uc], b[e] = kr[2 * uc + 1], c[e] = vr[2 * uc], d[e] = vr[2 * uc + 1];
        }
#pragma unroll
        for (int e = 0; e < ROPE_REG; e++) {
            const int u = u0 + e * blockDim.x, p = u % half;
            if (u >= total) continue;
            float x0 = a[e], x1 = b[e];
            if (p < rot_half) rope_rot(a[e], b[e], cs[2 * p], cs[2 * p + 1], &x0, &x1);
            kr[2 * u] = x0, kr[2 * u + 1] = x1;
            kv.d_k[at + 2 * u] = x0, kv.d_k[at + 2 * u + 1] = x1;
            kv.d_v[at + 2 * u] = c[e], kv.d_v[at + 2 * u + 1] = d[e];
        }
    }
    rope_heads(q + (size_t)i * n_head * head_dim, n_head, head_dim, rot_half, cs);
}

extern "C" int kc_rope_kv_store(float *d_q, float *d_k, const float *d_v, int n, int n_head, int n_head_kv,
                                int head_dim, int rot_dim, const float *d_inv_freq, const kc_kv_t *kv, int layer,
                                const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off) {
    if (n <= 0) return 0;
    if (n_head_kv * head_dim != kv->kv_dim || head_dim % 2) {
        kc_set_error("rope_kv_store: %d kv heads of %d do not fill kv_dim %d (or an odd head size)", n_head_kv,
                     head_dim, kv->kv_dim);
        return -1;
    }
    return kc_launch_pdl("rope_kv_store", rope_kv_kernel, n, 256, (size_t)rot_dim * sizeof(float), d_q, d_k, d_v,
                         d_pos, n_head, n_head_kv, head_dim, rot_dim / 2, d_inv_freq, *kv, layer, d_blk, d_blk_off);
}

extern "C" int kc_kv_store(const kc_kv_t *kv, int layer, const float *d_k, const float *d_v, int n,
                           const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off) {
    if (n <= 0) return 0;
    return kc_launch_pdl("kv_store", kv_store_kernel, n, 128, 0, *kv, layer, d_k, d_v, d_pos, d_blk, d_blk_off);
}

