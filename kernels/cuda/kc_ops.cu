/* kc_ops.cu - the transformer's small ops on the GPU (see kc.h).
 *
 * Each op follows the CPU kernel's arithmetic (kernels/cpu/k_ops.c) where
 * that is cheap: RMSNorm sums squares in double, RoPE takes cos/sin of a
 * double angle, SiLU uses expf. So FP32 GPU and CPU runs differ only by
 * summation order in the matmuls and attention, which keeps greedy
 * decoding on the same tokens. The activation quantization (alone and
 * fused with RMSNorm or SwiGLU) is in kc_quant.cu, attention in kc_attn.cu.
 */
#include "kc.h"
#include "kc_internal.h"
#include "kc_rows.cuh"

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

/* Row i's rot_half (cos, sin) pairs into cs[i] (rope_angles' numbers):
 * the q/k/v matmul's RoPE epilogue reads them, once a step for all layers */
__global__ void rope_table_kernel(float *cs, const int32_t *pos, int rot_half, const float *inv_freq) {
    kc_pdl_wait();
    kc_pdl_trigger();
    rope_angles(cs + (size_t)blockIdx.x * rot_half * 2, pos[blockIdx.x], rot_half, inv_freq);
}

extern "C" int kc_rope_table(float *d_cs, const int32_t *d_pos, int n, int rot_dim, const float *d_inv_freq) {
    if (n <= 0) return 0;
    return kc_launch_pdl("rope_table", rope_table_kernel, n, 64, 0, d_cs, d_pos, rot_dim / 2, d_inv_freq);
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

