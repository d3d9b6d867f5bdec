/* kc_attn_tc.cu - prompt-chunk attention on the tensor cores (TF32).
 *
 * The FP32 tiled kernel (kc_attn.cu) reads each K/V row once per block but
 * does its 2 x 2 x T^2/2 x head_dim x heads FLOPs a layer on the CUDA cores:
 * at 2048 prompt tokens of an 8B model that is ~1.1 TFLOP a prompt, more
 * time than all of its matmuls. Here the same tiling runs both products
 * (scores = Q K^T and out += P V) as mma.sync m16n8k8 with TF32 inputs and
 * FP32 sums, FlashAttention-2 style:
 *
 * - a block takes TC_Q = 64 query vectors (R consecutive rows x the `group`
 *   query heads sharing one K/V head), 16 a warp; they stay in shared
 *   memory, rounded to TF32 once;
 * - the sequence's K and V stream through shared memory TC_KT positions at
 *   a time with cp.async, double-buffered: tile i+1 is in flight while
 *   tile i is multiplied;
 * - a warp's scores (16 x TC_KT) stay in the mma accumulators; the causal
 *   mask, the online-softmax max/sum and the rescaling of the output
 *   accumulators are done there, then the probabilities go through a small
 *   per-warp shared buffer to become the A operand of P V (the TF32 m16n8k8
 *   accumulator and A layouts differ);
 * - smem row strides are padded so that every fragment load of a warp hits
 *   32 different banks.
 *
 * Precision: K, V, Q and P rounded to TF32 (10-bit mantissa, FP32 range:
 * no overflow whatever the activations), products summed in FP32. That is
 * the precision of the FP16 two-step matmul path the same prompt chunks
 * already take; test_kc_ops holds it to the double reference, and
 * tests/gpu/run.sh's perplexity pairs end to end. The FP32 tiles stay for
 * KC_ATTN_TC=0 and kc_attn_set_tensor_cores(0).
 */
#include "kc.h"
#include "kc_internal.h"

#include <math.h>

#define TC_WARPS 4
#define TC_Q (16 * TC_WARPS) /* query vectors a block */
#define TC_KT 32             /* positions a K/V tile */

__device__ __forceinline__ uint32_t tf32_of(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

/* c += a (16x8, row) . b (8x8, col), TF32 in, FP32 sums */
__device__ __forceinline__ void mma_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void cp_async16(float *dst, const float *src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_wait_one(void) { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

template <int HD> struct TcLayout {
    static constexpr int QS = HD + 4; /* Q and K rows: a fragment's (row g, col t) -> bank 4g + t */
    static constexpr int VS = HD + 8; /* V rows: (position t, dim g) -> bank 8t + g */
    static constexpr int PS = TC_KT + 4;
    static constexpr size_t floats = (size_t)TC_Q * QS + 2 * TC_KT * (QS + VS) + (size_t)TC_WARPS * 16 * PS;
};

/* positions t0 .. t0 + TC_KT - 1 of K and V (head kvh) into one stage;
 * positions past max_pos repeat max_pos's row (finite, masked later) */
template <int HD>
__device__ __forceinline__ void tc_load_tile(float *Ks, float *Vs, const kc_kv_t &kv, int layer, const int32_t *blk,
                                             int off, int kvh, int t0, int max_pos) {
    using L = TcLayout<HD>;
    for (int e = threadIdx.x; e < TC_KT * (HD / 4); e += 32 * TC_WARPS) {
        const int kk = e / (HD / 4), c = 4 * (e % (HD / 4)), t = min(t0 + kk, max_pos);
        const size_t at = kv_row(kv, layer, blk, off, t) + (size_t)kvh * HD + c;
        cp_async16(Ks + kk * L::QS + c, kv.d_k + at);
        cp_async16(Vs + kk * L::VS + c, kv.d_v + at);
    }
}

template <int HD>
__global__ void __launch_bounds__(32 * TC_WARPS) attention_tc_kernel(float *out, const float *q, kc_kv_t kv, int layer,
                                                                     int n, const int32_t *pos, const int32_t *blk,
                                                                     const int32_t *blk_off, int n_head, int group,
                                                                     int rows, float scale) {
    using L = TcLayout<HD>;
    constexpr int QS = L::QS, VS = L::VS, PS = L::PS, NJ = HD / 8;
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm, *Ks = Qs + TC_Q * QS, *Vs = Ks + 2 * TC_KT * QS, *Ps = Vs + 2 * TC_KT * VS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.y, r0 = blockIdx.x * rows, rend = min(n, r0 + rows);
    for (int e = tid; e < TC_Q * (HD / 4); e += 32 * TC_WARPS) { /* the block's query vectors, as TF32 */
        const int v = e / (HD / 4), c = 4 * (e % (HD / 4)), row = r0 + v / group, h = kvh * group + v % group;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (v < rows * group && row < rend) x = *(const float4 *)(q + ((size_t)row * n_head + h) * HD + c);
        *(uint4 *)(Qs + v * QS + c) = make_uint4(tf32_of(x.x), tf32_of(x.y), tf32_of(x.z), tf32_of(x.w));
    }
    /* this thread's two query vectors (accumulator rows gq and gq + 8 of its warp) */
    const int va = 16 * warp + gq, vb = va + 8;
    const bool oka = va < rows * group && r0 + va / group < rend, okb = vb < rows * group && r0 + vb / group < rend;
    const int rowa = r0 + va / group, rowb = r0 + vb / group;
    const int posa = oka ? pos[rowa] : -1, posb = okb ? pos[rowb] : -1;
    float *Pw = Ps + warp * 16 * PS;

    for (int s0 = r0; s0 < rend;) { /* one segment per sequence */
        const int off = blk_off[s0];
        int s1 = s0 + 1, max_pos = pos[s0];
        while (s1 < rend && blk_off[s1] == off) max_pos = max(max_pos, pos[s1]), s1++;
        const int pa = oka && rowa >= s0 && rowa < s1 ? posa : -1, pb = okb && rowb >= s0 && rowb < s1 ? posb : -1;
        int wmax = max(pa, pb); /* the warp's last position: tiles past it are skipped */
        for (int o = 16; o > 0; o >>= 1) wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
        float acc[NJ][4], ma = -INFINITY, mb = -INFINITY, la = 0.f, lb = 0.f;
#pragma unroll
        for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
        const int n_tiles = max_pos / TC_KT + 1;
        __syncthreads(); /* Q stored; the previous segment is done with both stages */
        tc_load_tile<HD>(Ks, Vs, kv, layer, blk, off, kvh, 0, max_pos);
        cp_commit();
        for (int it = 0; it < n_tiles; it++) {
            const int st = it & 1, t0 = it * TC_KT;
            if (it + 1 < n_tiles)
                tc_load_tile<HD>(Ks + (st ^ 1) * TC_KT * QS, Vs + (st ^ 1) * TC_KT * VS, kv, layer, blk, off, kvh,
                                 t0 + TC_KT, max_pos);
            cp_commit(); /* (an empty group on the last tile keeps the count) */
            cp_wait_one();
            __syncthreads(); /* tile it has landed, for every thread */
            if (t0 <= wmax) {
                const float *Kt = Ks + st * TC_KT * QS, *Vt = Vs + st * TC_KT * VS;
                float s[TC_KT / 8][4];
#pragma unroll
                for (int j = 0; j < TC_KT / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
                for (int k0 = 0; k0 < HD; k0 += 8) { /* scores = Q K^T */
                    const float *qa = Qs + va * QS + k0 + tq;
                    const uint32_t a0 = __float_as_uint(qa[0]), a1 = __float_as_uint(qa[8 * QS]);
                    const uint32_t a2 = __float_as_uint(qa[4]), a3 = __float_as_uint(qa[8 * QS + 4]);
#pragma unroll
                    for (int j = 0; j < TC_KT / 8; j++) {
                        const float *kb = Kt + (8 * j + gq) * QS + k0 + tq;
                        mma_tf32(s[j], a0, a1, a2, a3, tf32_of(kb[0]), tf32_of(kb[4]));
                    }
                }
                float mxa = -INFINITY, mxb = -INFINITY;
#pragma unroll
                for (int j = 0; j < TC_KT / 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) { /* scale after the dot product, causal mask by position */
                        const int t = t0 + 8 * j + 2 * tq + e;
                        s[j][e] = t <= pa ? s[j][e] * scale : -INFINITY;
                        s[j][2 + e] = t <= pb ? s[j][2 + e] * scale : -INFINITY;
                        mxa = fmaxf(mxa, s[j][e]), mxb = fmaxf(mxb, s[j][2 + e]);
                    }
                mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
                mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
                mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
                mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
                const float mna = fmaxf(ma, mxa), mnb = fmaxf(mb, mxb);
                /* a vector with no position yet (-inf max) keeps its zero state */
                const float ca = mna == -INFINITY ? 1.f : expf(ma - mna), cb = mnb == -INFINITY ? 1.f : expf(mb - mnb);
                float psa = 0.f, psb = 0.f;
#pragma unroll
                for (int j = 0; j < TC_KT / 8; j++) {
                    float p[4];
                    p[0] = mna == -INFINITY ? 0.f : expf(s[j][0] - mna);
                    p[1] = mna == -INFINITY ? 0.f : expf(s[j][1] - mna);
                    p[2] = mnb == -INFINITY ? 0.f : expf(s[j][2] - mnb);
                    p[3] = mnb == -INFINITY ? 0.f : expf(s[j][3] - mnb);
                    psa += p[0] + p[1], psb += p[2] + p[3];
                    float *pw = Pw + gq * PS + 8 * j + 2 * tq;
                    *(uint2 *)pw = make_uint2(tf32_of(p[0]), tf32_of(p[1]));
                    *(uint2 *)(pw + 8 * PS) = make_uint2(tf32_of(p[2]), tf32_of(p[3]));
                }
                la = la * ca + psa, lb = lb * cb + psb; /* partial sums: the quad adds them at the end */
                ma = mna, mb = mnb;
#pragma unroll
                for (int j = 0; j < NJ; j++) acc[j][0] *= ca, acc[j][1] *= ca, acc[j][2] *= cb, acc[j][3] *= cb;
                __syncwarp(); /* P written */
#pragma unroll
                for (int k0 = 0; k0 < TC_KT; k0 += 8) { /* out += P V */
                    const float *pa_ = Pw + gq * PS + k0 + tq;
                    const uint32_t a0 = __float_as_uint(pa_[0]), a1 = __float_as_uint(pa_[8 * PS]);
                    const uint32_t a2 = __float_as_uint(pa_[4]), a3 = __float_as_uint(pa_[8 * PS + 4]);
#pragma unroll
                    for (int j = 0; j < NJ; j++) {
                        const float *vb_ = Vt + (k0 + tq) * VS + 8 * j + gq;
                        mma_tf32(acc[j], a0, a1, a2, a3, tf32_of(vb_[0]), tf32_of(vb_[4 * VS]));
                    }
                }
                __syncwarp(); /* P read before the next tile writes it */
            }
            __syncthreads(); /* stage st read by every warp before it is loaded again */
        }
        la += __shfl_xor_sync(0xffffffffu, la, 1);
        la += __shfl_xor_sync(0xffffffffu, la, 2);
        lb += __shfl_xor_sync(0xffffffffu, lb, 1);
        lb += __shfl_xor_sync(0xffffffffu, lb, 2);
        if (pa >= 0) {
            float *o = out + ((size_t)rowa * n_head + kvh * group + va % group) * HD + 2 * tq;
#pragma unroll
            for (int j = 0; j < NJ; j++) *(float2 *)(o + 8 * j) = make_float2(acc[j][0] / la, acc[j][1] / la);
        }
        if (pb >= 0) {
            float *o = out + ((size_t)rowb * n_head + kvh * group + vb % group) * HD + 2 * tq;
#pragma unroll
            for (int j = 0; j < NJ; j++) *(float2 *)(o + 8 * j) = make_float2(acc[j][2] / lb, acc[j][3] / lb);
        }
        s0 = s1;
    }
}

template <int HD>
static int launch_tc(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n, const int32_t *d_pos,
                     const int32_t *d_blk, const int32_t *d_blk_off, int n_head, int group, float scale) {
    const int rows = min(16, TC_Q / group);
    const size_t smem = TcLayout<HD>::floats * sizeof(float);
    static int attr_set;
    if (!attr_set) {
        if (kc_check(cudaFuncSetAttribute(attention_tc_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)smem),
                     "cudaFuncSetAttribute(attention_tc)"))
            return -1;
        attr_set = 1;
    }
    dim3 grid((unsigned)((n + rows - 1) / rows), (unsigned)(n_head / group));
    attention_tc_kernel<HD><<<grid, 32 * TC_WARPS, smem, KC_STREAM>>>(d_out, d_q, *kv, layer, n, d_pos, d_blk,
                                                                      d_blk_off, n_head, group, rows, scale);
    return kc_check_launch("attention_tc");
}

extern "C" int kc_attention_tc(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n,
                               const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off, int n_head,
                               int group, int head_dim, float scale) {
    if (head_dim == 64) return launch_tc<64>(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, group, scale);
    if (head_dim == 128)
        return launch_tc<128>(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, group, scale);
    return 1; /* not taken: the caller runs another kernel */
}
