/* kc_sq_gemv_ep.cuh - the dp4a GEMV's (kc_sq_gemv.cu) ends of a tile and
 * its activation copies: what a block does once its warps' units of a tile
 * are summed (the store, the residual add, and the epilogues that finish
 * the next operation: RoPE with the K/V store, SwiGLU's two halves), and
 * how a warp copies its range of the activations into shared memory (INT8
 * codes, or SwiGLU's floats quantized on the way).
 *
 * Why here. The epilogues are the part of the kernel that knows about the
 * model (heads, the paged cache, SwiGLU); the main loops and their cost
 * model in kc_sq_gemv.cu do not. Every epilogue gives the numbers of the
 * launches it replaces, bit for bit (test_kc_sq --rope / --swiglu).
 */
#ifndef KC_SQ_GEMV_EP_CUH
#define KC_SQ_GEMV_EP_CUH

#include "kc_rows.cuh" /* silu_mul1: the SwiGLU kernels' expression */
#include "kc_sq_frag.cuh"

__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) { /* unsigned a x signed b bytes */
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* RoPE and the K/V store in the q/k/v matmul's epilogue (kc_sq_matmul_qkv_rope).
 *
 * Why. At batch 1 the fused q/k/v GEMV is followed by one block of RoPE +
 * K/V store (kc_ops.cu's rope_kv_kernel: 3.8 us of an 84 us 8B layer in the
 * CUDA graph, fourteenth session). Unlike a norm (kc_sq_matmul_acc_norm,
 * measured and backed out: its row reduction made one block work alone
 * after all the others), RoPE is a rotation of the pairs (2i, 2i + 1) of a
 * head, and a pair's two rows are the same tile's, so each block rotates
 * and stores its own outputs as it writes them: no block waits, no tail.
 * The pair's other value comes from the neighbouring thread. The angles
 * come from a table kc_rope_table fills once a step with rope_angles'
 * numbers (computing them here in double made the kernel spill), and
 * rope_rot rounds as the kernel's: the same bits (test_kc_sq --rope).
 * part: 0 q, 1 k, 2 v; r: the row within its part. */
__device__ __forceinline__ void gemv_rope_store(const GemvRope &rp, float p, float other, int part, long r, long tok,
                                                float *o) {
    const int j = (int)(r % rp.head_dim), i = j >> 1;
    if (part < 2 && i < rp.rot_half) {
        const float c = rp.cs[(tok * rp.rot_half + i) * 2], s = rp.cs[(tok * rp.rot_half + i) * 2 + 1];
        float x0, x1;
        if (j & 1) rope_rot(other, p, c, s, &x0, &x1), p = x1;
        else rope_rot(p, other, c, s, &x0, &x1), p = x0;
    }
    *o = p;
    if (part == 0) return;
    const size_t at = kv_row(rp.kv, rp.layer, rp.blk, rp.blk_off[tok], rp.pos[tok]);
    (part == 1 ? rp.kv.d_k : rp.kv.d_v)[at + r] = p;
}

/* The modes' state in a block's shared memory (gemv_mode): SwiGLU's pairs
 * keep a gate tile's products until its up tile (gate, NT x 16) and the
 * running max |h| of each token (mx, float bits: |h| >= 0 orders as an
 * unsigned int); the norm's slots stage a tile's new values in gate; the
 * modes whose activations are not INT8 already keep the scale each token
 * was quantized at (sx). */
struct GemvSw {
    float *gate;
    unsigned *mx;
    float *sx;
    float *r; /* the norm's 1 / rms per token (gemv_acts_n) */
};
template <int NT> /* (a multiple of 16: the rings after it take 16-byte cp.async) */
__host__ __device__ constexpr uint32_t gemv_sw_bytes() { return ((NT * 16 + 3 * NT) * 4 + 15) / 16 * 16; }
template <int NT>
__device__ __forceinline__ GemvSw gemv_sw(uint8_t *at) {
    return GemvSw{(float *)at, (unsigned *)at + NT * 16, (float *)at + NT * 16 + NT, (float *)at + NT * 16 + 2 * NT};
}

/* The end of a tile: each row's lanes are added (the quad's for rows g and
 * g + 8, and with HI the pair 2 r, 2 r + 1 that holds row r's high part),
 * then the warps' row sums in warp order, and the tile is stored. The
 * accumulators restart at zero. */
template <int NT, bool HI, int SW>
__device__ __forceinline__ void gemv_flush(float (&ag)[NT], float (&a8)[NT], float (&ah)[NT], const MmArgs &a,
                                        float *red, GemvSw sw, long tile, int warp, int nw, int lane) {
    constexpr int ACT = SW & 3, EP = SW >> 2; /* gemv_mode's fields */
    const int g = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        ag[t] += __shfl_xor_sync(0xffffffffu, ag[t], 1);
        a8[t] += __shfl_xor_sync(0xffffffffu, a8[t], 1);
        ag[t] += __shfl_xor_sync(0xffffffffu, ag[t], 2);
        a8[t] += __shfl_xor_sync(0xffffffffu, a8[t], 2);
        if (HI) {
            ah[t] += __shfl_xor_sync(0xffffffffu, ah[t], 1);
            ag[t] += __shfl_sync(0xffffffffu, ah[t], 2 * g);
            a8[t] += __shfl_sync(0xffffffffu, ah[t], 2 * g + 16);
        }
    }
    if (tig < 2)
#pragma unroll
        for (int t = 0; t < NT; t++) red[(warp * NT + t) * 16 + g + 8 * tig] = tig ? a8[t] : ag[t];
#pragma unroll
    for (int t = 0; t < NT; t++) ag[t] = a8[t] = ah[t] = 0.0f;
    __syncthreads();
    for (int e = threadIdx.x; e < NT * 16; e += blockDim.x) { /* a block may have fewer threads than outputs */
        const int row = e & 15, t = e >> 4;
        const long tok = a.tok0 + t;
        float v = 0.0f;
        for (int q = 0; q < nw; q++) v += red[(q * NT + t) * 16 + row];
        long ny, r0; /* (the tile lies in one part: parts but the last are whole tiles) */
        int part;
        float *y = y_route(a, tile * 16, &ny, &r0, &part);
        const bool ok = r0 + row < ny && tok < a.m;
        /* the token's activation scale: kept by this launch where it quantized its own input (ACT) */
        const float p = ok ? __fmul_rn(v, ACT ? sw.sx[t] : __ldg(a.sx + tok)) : 0.0f;
        if (EP == 1) { /* gate/up in pairs: keep the gate tile's products, then h from the up tile's */
            if (tile < a.sw.half) {
                sw.gate[e] = p;
            } else if (ok) {
                const float h = silu_mul1(sw.gate[e], p);
                a.py[0][tok * ny + r0 + row] = h; /* (r0: the row within its part) */
                if (h == h) atomicMax(sw.mx + t, __float_as_uint(fabsf(h))); /* block_max's fmaxf skips NaN */
            }
            continue;
        }
        if (a.rope.on) { /* q/k/v, no acc: row 2i + 1 is the other thread of the pair (e ^ 1) */
            /* the lanes in this loop: 16 for one token (warp 0's first half), else whole warps */
            const float other = __shfl_xor_sync(NT == 1 ? 0x0000FFFFu : 0xFFFFFFFFu, p, 1);
            if (ok) gemv_rope_store(a.rope, p, other, part, r0 + row, tok, y + tok * ny + r0 + row);
            continue;
        }
        if (ok) {
            /* the product rounded, then the add rounded: the numbers of a separate kc_add */
            float *o = y + tok * ny + r0 + row;
            const float yn = a.acc ? __fadd_rn(*o, p) : p;
            *o = yn;
            if (EP == 2) sw.gate[e] = yn;
        } else if (EP == 2) {
            sw.gate[e] = 0.0f;
        }
    }
    if (EP == 2 && threadIdx.x < 32) { /* the norm's slots of this tile (NT <= 2: warp 0 staged the values) */
        __syncwarp();
        const int t = threadIdx.x >> 4;
        const long tok = a.tok0 + t;
        if ((threadIdx.x & 15) == 0 && t < NT && tok < a.m) {
            const long r0 = tile * 16;
            const int nv = a.n - r0 < 16 ? (int)(a.n - r0) : 16;
            float v[16], wv[16];
#pragma unroll
            for (int i = 0; i < 16; i++) {
                v[i] = sw.gate[16 * t + i];
                wv[i] = __ldg(a.nm.w + (r0 + i < a.n ? r0 + i : a.n - 1));
            }
            double ss;
            float4 c;
            ns_tile(v, wv, nv, &ss, &c);
            a.nm.ss[tok * a.nm.ntile + tile] = ss;
            a.nm.cand[tok * a.nm.ntile + tile] = c;
        }
    }
}

/* The warp's range [s0, s0 + n) of every token's activations (zero past m)
 * into shared memory, and the chunk sums of the code offset. */
template <int NT>
__device__ __forceinline__ void gemv_acts(const MmArgs &a, uint8_t *smem, uint32_t s0, uint32_t n, int lane) {
    const uint32_t k = (uint32_t)a.k;
    for (int t = 0; t < NT; t++) {
        const long tok = a.tok0 + t;
        const uint4 *src = (const uint4 *)(a.qx + tok * a.k) + s0 * 4;
        uint4 *dst = (uint4 *)(smem + t * k) + s0 * 4;
        int *osum = (int *)(smem + NT * k + t * k / 4) + s0 * 4;
        for (uint32_t i = lane; i < n * 4; i += 32) {
            const uint4 v = tok < a.m ? __ldg(src + i) : make_uint4(0, 0, 0, 0);
            dst[i] = v;
            osum[i] = dp4a_us(0x08080808u, v.x, dp4a_us(0x08080808u, v.y, dp4a_us(0x08080808u, v.z,
                              dp4a_us(0x08080808u, v.w, 0))));
        }
    }
    __syncwarp();
}

/* four floats' INT8 codes at scale s (kc_q8), in memory order */
__device__ __forceinline__ uint32_t q8_word(float4 f, float s) {
    return (uint32_t)(uint8_t)kc_q8(f.x, s) | (uint32_t)(uint8_t)kc_q8(f.y, s) << 8 |
           (uint32_t)(uint8_t)kc_q8(f.z, s) << 16 | (uint32_t)(uint8_t)kc_q8(f.w, s) << 24;
}

/* gemv_acts for float input rows (a.sw.mode SW_FLOAT_IN: SwiGLU's h, or
 * the attention output): each warp quantizes its range as it copies it, at
 * kc_quant_i8's scale: the max over the slots the launch before left (the
 * max is exact in any order, so the codes are kc_quant_i8's and
 * silu_mul_q8's). Every warp reduces the slots itself, so no warp waits for
 * another; warp 0 keeps the scales for the epilogue (sw.sx, read after the
 * flush's barrier). */
template <int NT>
__device__ __forceinline__ void gemv_acts_h(const MmArgs &a, uint8_t *smem, GemvSw sw, uint32_t s0, uint32_t n,
                                            int warp, int lane) {
    const uint32_t k = (uint32_t)a.k;
    for (int t = 0; t < NT; t++) {
        const long tok = a.tok0 + t;
        float mx = 0.0f;
        if (tok < a.m) { /* the slots 256 at a time, every load issued at once (clamped: a repeat is harmless) */
            const float *hm = a.sw.hmax + tok * a.sw.nslot;
            const int ns = a.sw.nslot;
            for (int j0 = 0; j0 < ns; j0 += 256) {
                float v[8];
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    const int j = j0 + lane + 32 * e;
                    v[e] = __ldg(hm + (j < ns ? j : ns - 1));
                }
#pragma unroll
                for (int e = 0; e < 8; e++) mx = fmaxf(mx, v[e]);
            }
        }
        for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float s = kc_q8_scale(mx);
        if (warp == 0 && lane == 0) sw.sx[t] = s;
        const float4 *src = (const float4 *)(a.sw.h + tok * a.k) + s0 * 16;
        uint4 *dst = (uint4 *)(smem + t * k) + s0 * 4;
        int *osum = (int *)(smem + NT * k + t * k / 4) + s0 * 4;
#pragma unroll 2
        for (uint32_t i = lane; i < n * 4; i += 32) {
            uint4 v = make_uint4(0, 0, 0, 0);
            if (tok < a.m) {
                const float4 f0 = __ldg(src + 4 * i), f1 = __ldg(src + 4 * i + 1), f2 = __ldg(src + 4 * i + 2),
                             f3 = __ldg(src + 4 * i + 3);
                v = make_uint4(q8_word(f0, s), q8_word(f1, s), q8_word(f2, s), q8_word(f3, s));
            }
            dst[i] = v;
            osum[i] = dp4a_us(0x08080808u, v.x, dp4a_us(0x08080808u, v.y, dp4a_us(0x08080808u, v.z,
                              dp4a_us(0x08080808u, v.w, 0))));
        }
    }
    __syncwarp();
}

/* gemv_acts for a matmul that reads RMSNorm's output (a.nm.in): the
 * activations are the norm of the row x, finished here from the slots the
 * residual matmul before left (GemvNorm). Warp 0 adds the tiles' sums of
 * squares in the canonical order (kc_rows.cuh) and takes the max over the
 * tiles' candidates at the norm's 1 / rms r, and leaves r and the scale in
 * shared memory (sw.r, sw.sx); after one barrier every warp quantizes its
 * range of x r w as it copies it, with the codes and scale
 * kc_rmsnorm_q8_canon gives. (Every warp reading the slots itself, as
 * first written, read them 16 times a block: 24 bytes a tile and token,
 * ~25 MB of L2 reads a launch for 8B q/k/v against its 17 MB of weights.
 * The barrier is within the block: no block waits for another.) */
#define NS_LD 4 /* slot loads a lane issues at once (8 raised the kernel past 100 registers) */

template <int NT>
__device__ __forceinline__ void gemv_acts_n(const MmArgs &a, uint8_t *smem, GemvSw sw, uint32_t s0, uint32_t n,
                                            int warp, int lane) {
    const uint32_t k = (uint32_t)a.k;
    const long T = a.nm.ntile;
    for (int t = 0; warp == 0 && t < NT; t++) {
        const long tok = a.tok0 + t;
        float r = 0.0f, s = 0.0f;
        if (tok < a.m) {
            const double *ssr = a.nm.ss + tok * T;
            double acc = 0.0; /* this lane's tiles lane, lane + 32, ..., in order, NS_LD loads at once */
            for (long q0 = 0; 32 * q0 < T; q0 += NS_LD) {
                double v[NS_LD];
#pragma unroll
                for (int e = 0; e < NS_LD; e++) {
                    const long j = lane + 32 * (q0 + e);
                    v[e] = __ldg(ssr + (j < T ? j : T - 1));
                }
#pragma unroll
                for (int e = 0; e < NS_LD; e++)
                    if (lane + 32 * (q0 + e) < T) acc += v[e];
            }
            r = ns_inv(ns_lanes(acc), (int)k, a.nm.eps);
            const float4 *cr = a.nm.cand + tok * T;
            const float *xr = a.nm.x + tok * a.k;
            float mx = 0.0f;
            bool flagged = false;
            for (long j0 = 0; j0 < T; j0 += 32 * NS_LD) {
                float4 c[NS_LD];
#pragma unroll
                for (int e = 0; e < NS_LD; e++) {
                    const long j = j0 + lane + 32 * e;
                    c[e] = __ldg(cr + (j < T ? j : T - 1));
                }
#pragma unroll
                for (int e = 0; e < NS_LD; e++) {
                    const long j = j0 + lane + 32 * e;
                    if (j < T && c[e].w >= 0.0f) mx = fmaxf(mx, ns_cand_max(c[e], r));
                    flagged |= j < T && c[e].w < 0.0f;
                }
            }
            if (__any_sync(0xffffffffu, flagged)) /* rare: a tile whose candidates did not fit, from its values */
                for (long j = lane; j < T; j += 32)
                    if (__ldg(&cr[j].w) < 0.0f)
                        mx = fmaxf(mx, ns_tile_values_max(r, xr + 16 * j, a.nm.w + 16 * j,
                                                          a.k - 16 * j < 16 ? (int)(a.k - 16 * j) : 16));
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            s = kc_q8_scale(mx);
        }
        if (lane == 0) sw.sx[t] = s, sw.r[t] = r;
    }
    __syncthreads();
    for (int t = 0; t < NT; t++) {
        const long tok = a.tok0 + t;
        const float r = sw.r[t], s = sw.sx[t];
        const float4 *src = (const float4 *)(a.nm.x + tok * a.k) + s0 * 16, *wsrc = (const float4 *)a.nm.w + s0 * 16;
        uint4 *dst = (uint4 *)(smem + t * k) + s0 * 4;
        int *osum = (int *)(smem + NT * k + t * k / 4) + s0 * 4;
#pragma unroll 1 /* (x and w: 32 registers an iteration already) */
        for (uint32_t i = lane; i < n * 4; i += 32) {
            uint4 v = make_uint4(0, 0, 0, 0);
            if (tok < a.m) {
                uint32_t wd[4];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const float4 f = __ldg(src + 4 * i + q), g = __ldg(wsrc + 4 * i + q);
                    /* x r w as the norm kernels round it: (x r) w */
                    wd[q] = q8_word(make_float4(__fmul_rn(__fmul_rn(f.x, r), g.x), __fmul_rn(__fmul_rn(f.y, r), g.y),
                                                __fmul_rn(__fmul_rn(f.z, r), g.z), __fmul_rn(__fmul_rn(f.w, r), g.w)),
                                    s);
                }
                v = make_uint4(wd[0], wd[1], wd[2], wd[3]);
            }
            dst[i] = v;
            osum[i] = dp4a_us(0x08080808u, v.x, dp4a_us(0x08080808u, v.y, dp4a_us(0x08080808u, v.z,
                              dp4a_us(0x08080808u, v.w, 0))));
        }
    }
    __syncwarp();
}

#endif
