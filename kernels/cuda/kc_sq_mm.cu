/* kc_sq_mm.cu - the SQ x INT8 matmul on the GPU (kc.h; the weight layout is
 * kc_sq.cuh; the per-token INT8 quantization of its input is in kc_ops.cu).
 *
 * Kernels.
 *   decode (m <= 64): stream-k. The (tile, group) items of the matrix are
 *     split evenly over one full wave of warps (4 a block); each warp walks
 *     its contiguous range. On the fast layout (k_sq_dec_st) each item's
 *     weight unit and activations are copied by cp.async into a ring of
 *     stages in shared memory, S - 1 items ahead (two by default); the other layouts
 *     (k_sq_dec) load weight units (and for m <= 8 the activations) one or
 *     two groups ahead into registers, bypassing L1. A tile
 *     split between warps is finished by the last of them to arrive (an
 *     atomic counter per tile), which adds the parts in warp order: results
 *     are deterministic. No tail wave, no partial-tile waste.
 *   prefill (m > 64, fast layout): one warp per 16-row tile x 128 tokens
 *     (16 n-tiles reuse each unpacked weight fragment), 4 or 8 warps a block
 *     sharing the token chunk's activations (first copied into fragment
 *     order: one contiguous 512-byte warp load per n-tile and subgroup)
 *     through L1; blocks walk the token chunks of a row block consecutively
 *     so weights are re-read from L2.
 *   Other shapes (2-bit storage, b = 128, other high counts, no highs) take
 *     the decode kernel with run-time slot counts and float scales; beyond
 *     64 tokens, in chunks of 64.
 * The compact layout (kc_sq.cuh) has its own kernels in kc_sqc_mm.cu;
 * what the two files share is in kc_sq_mm.cuh.
 * Several matrices that share the input (q/k/v, gate/up) run as one launch
 * over a fused matrix (kc_sq_fuse, kc_sq_matmul_parts): store_y sends each
 * 16-row tile to its part's output.
 */
#include "kc_sq_mm.cuh"

#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* One scale group (SPG subgroups) of one 16-row tile against NT x 8 tokens:
 * unpack, scatter the highs, 4 mma per subgroup and n-tile, combine. The
 * lane's B fragment of n-tile t, subgroup s is bload(t, s) (16 bytes, zero
 * for a token past the end): from global memory, registers or a stage in
 * shared memory, as the kernel keeps them. */
template <int NT, int LOBITS, int SPG, int S2C, bool S16, bool OFFS, class BL>
__device__ __forceinline__ void do_group(float (&acc)[NT][4], const Raw<LOBITS, S2C, S16> (&cur)[SPG], unsigned item,
                                         uint8_t *tiles, const MmArgs &a, const BL &bload, int lane) {
    const uint32_t NEG = LOBITS == 4 ? 0xF8F8F8F8u : 0xFEFEFEFEu; /* -8 / -2 in every byte */
    uint32_t Alo[SPG][8], Ahi[SPG][8];
    group_frags<LOBITS, SPG, S2C, S16, OFFS>(cur, item, tiles, a, lane, Alo, Ahi);
    float sl0, sh0, sl1, sh1;
    if (S16) {
        sl0 = half_lo(cur[0].sc[0]), sh0 = half_hi(cur[0].sc[0]);
        sl1 = half_lo(cur[0].sc[1]), sh1 = half_hi(cur[0].sc[1]);
    } else {
        sl0 = __uint_as_float(cur[0].sc[0]), sh0 = __uint_as_float(cur[0].sc[1]);
        sl1 = __uint_as_float(cur[0].sc[2]), sh1 = __uint_as_float(cur[0].sc[3]);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int mg[4] = {MAGIC_I, MAGIC_I, MAGIC_I, MAGIC_I};
        int ilo[4], ihi[4];
#pragma unroll
        for (int s = 0; s < SPG; s++) {
            const uint4 bv = bload(t, s);
            if (s == 0) mma_s8c(ilo, Alo[s][0], Alo[s][1], Alo[s][2], Alo[s][3], bv.x, bv.y, mg);
            else mma_s8(ilo, Alo[s][0], Alo[s][1], Alo[s][2], Alo[s][3], bv.x, bv.y);
            mma_s8(ilo, Alo[s][4], Alo[s][5], Alo[s][6], Alo[s][7], bv.z, bv.w);
            if (OFFS) { /* remove the code offset: - 8 (2) x the activation sum */
                mma_s8(ilo, NEG, NEG, NEG, NEG, bv.x, bv.y);
                mma_s8(ilo, NEG, NEG, NEG, NEG, bv.z, bv.w);
            }
            if (s == 0) mma_s8c(ihi, Ahi[s][0], Ahi[s][1], Ahi[s][2], Ahi[s][3], bv.x, bv.y, mg);
            else mma_s8(ihi, Ahi[s][0], Ahi[s][1], Ahi[s][2], Ahi[s][3], bv.x, bv.y);
            mma_s8(ihi, Ahi[s][4], Ahi[s][5], Ahi[s][6], Ahi[s][7], bv.z, bv.w);
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float sl = e < 2 ? sl0 : sl1, sh = e < 2 ? sh0 : sh1;
            acc[t][e] = fmaf(sl, __int_as_float(ilo[e]) - MAGIC_F, acc[t][e]);
            acc[t][e] = fmaf(sh, __int_as_float(ihi[e]) - MAGIC_F, acc[t][e]);
        }
    }
}

/* do_group for integer bank scales (fast layout, one subgroup a group, half
 * scales): every weight is the INT8 value k_g lo + hi (k_g = s_lo / s_hi,
 * an integer), so a group is ONE A fragment, k_g times the low codes with
 * the highs ORed in (a byte has one of them nonzero: kc_sq.cu's upload
 * checks), two mma a token tile from 0, added to INT32 accumulators that
 * run over the whole row; the only float work is at the end (is_to_float).
 * Exact: |k_g lo + hi| <= 127, so |sum| <= k * 127 * 127 < 2^31 for rows
 * of k < 133000. Measured against the low and high parts as two mma chains
 * (the low sum times k_g by IMAD, the high chain started from the running
 * sum): 0.92-0.99x their time at 48 and 64 tokens; starting that chain
 * from 0 instead (nothing but an add on the loop-carried path) took
 * 1.20-1.60x (bench_gemm --isdec, docs/perf-gpu.md, tenth session). */
template <int NT, class BL>
__device__ __forceinline__ void do_group_is(int (&iacc)[NT][4], const Raw<4, 4, true> (&cur)[1], unsigned item,
                                            uint8_t *tiles, const MmArgs &a, const BL &bload, int lane) {
    uint32_t A[8];
    is_frags(cur, item, tiles, a, lane, A);
    const int z[4] = {0, 0, 0, 0};
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d[4];
        const uint4 bv = bload(t, 0);
        mma_s8c(d, A[0], A[1], A[2], A[3], bv.x, bv.y, z);
        mma_s8(d, A[4], A[5], A[6], A[7], bv.z, bv.w);
#pragma unroll
        for (int e = 0; e < 4; e++) iacc[t][e] += d[e];
    }
}

template <int NT>
__device__ __forceinline__ void zero_sums(float (&acc)[NT][4], int (&iacc)[NT][4]) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
        acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
        iacc[t][0] = iacc[t][1] = iacc[t][2] = iacc[t][3] = 0;
    }
}

/* a decode warp's tile ends (its last group, or the end of its items at
 * it): the sums go out (sk_flush) and restart for the next tile */
template <int NT, bool IS>
__device__ __forceinline__ void tile_end(float (&acc)[NT][4], int (&iacc)[NT][4], const MmArgs &a, unsigned &tile,
                                         unsigned &grp, unsigned &ts, unsigned it, long w, int lane) {
    if constexpr (IS) is_to_float<NT>(iacc, acc, a, tile, lane);
    sk_flush<NT>(acc, a, tile, ts, it, w, lane);
    zero_sums<NT>(acc, iacc);
    tile++, grp = 0, ts = it;
}

/* decode: stream-k over (tile, group) items, 4 warps a block, weight units
 * loaded D groups ahead (D + 1 register sets, the loop unrolled by D + 1) */
template <int NT, int LOBITS, int SPG, int S2C, bool S16, bool IS>
__global__ void __launch_bounds__(128, NT <= 4 ? 4 : 3) k_sq_dec(MmArgs a) {
    constexpr unsigned D = NT <= 2 && SPG == 1 ? 2 : 1; /* units in flight ahead (registers allowing) */
    constexpr int NTL = (D + 1) * SPG;                   /* scatter tiles: one set per unrolled step */
    __shared__ __align__(16) uint8_t sm[4 * NTL * SQ_TILE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *wsm = sm + warp * NTL * SQ_TILE;
    zero_tiles(wsm, NTL, lane);
    SkWarp sw;
    if (!sk_warp<NT>(a, lane, warp, sw)) return;
    const auto [w, i0, i1, tvalid, xrow, ng, xst] = sw;
    const LanePtr lp = lane_ptrs<LOBITS, S2C, S16>(a, lane);
    /* one n-tile: offset codes + 2 more mma beat sign extension; two: sign
     * extension is 1-4 % faster (bench_gemm --isdec at 16 tokens, H200,
     * tenth session; at 8 tokens it is 1-4 % slower) */
    constexpr bool OFFS = NT == 1;
    constexpr bool BPRE = NT == 1;          /* activations loaded with the weights, ahead */
    Raw<LOBITS, S2C, S16> c0[SPG], c1[SPG], c2[SPG];
    uint4 b0[SPG], b1[SPG], b2[SPG];
    const bool xv = tvalid & 1;
#define SQ_LOADB(B, grp_)                                                                              \
    if (BPRE)                                                                                          \
        _Pragma("unroll") for (int s_ = 0; s_ < SPG; s_++) B[s_] = xv ? __ldg(xrow + ((grp_) * SPG + s_) * 4) \
                                                                      : make_uint4(0, 0, 0, 0);
    unsigned lgrp = i0 % ng; /* group of the next item to load */
    load_group<LOBITS, SPG, S2C, S16>(c0, i0, a, lp);
    SQ_LOADB(b0, lgrp)
    if (++lgrp == ng) lgrp = 0;
    if (D == 2 && i0 + 1 < i1) {
        load_group<LOBITS, SPG, S2C, S16>(c1, i0 + 1, a, lp);
        SQ_LOADB(b1, lgrp)
    }
    if (D == 2 && ++lgrp == ng) lgrp = 0;
    float acc[NT][4];
    int iacc[NT][4]; /* IS: the INT32 sums of the tile so far */
    zero_sums<NT>(acc, iacc);
    unsigned it = i0, tile = i0 / ng, grp = i0 % ng, ts = i0;
#define SQ_STEP(C, L, BC, BL, TL)                                                                              \
    {                                                                                                      \
        if (it + D < i1) {                                                                                 \
            load_group<LOBITS, SPG, S2C, S16>(L, it + D, a, lp);                                         \
            SQ_LOADB(BL, lgrp)                                                                             \
        }                                                                                                  \
        if (++lgrp == ng) lgrp = 0;                                                                        \
        {                                                                                                  \
            const uint4 *bsrc = xrow + grp * (SPG * 4);                                                    \
            const auto bload = [&, tv = tvalid, xs = xst](int t, int s) {                                  \
                return BPRE ? BC[s] : (tv >> t) & 1 ? __ldg(bsrc + t * xs + s * 4) : make_uint4(0, 0, 0, 0); \
            };                                                                                             \
            if constexpr (IS)                                                                              \
                do_group_is<NT>(iacc, C, it, wsm + (TL) * SQ_TILE, a, bload, lane);                        \
            else                                                                                           \
                do_group<NT, LOBITS, SPG, S2C, S16, OFFS>(acc, C, it, wsm + (TL) * SPG * SQ_TILE, a, bload, lane); \
        }                                                                                                  \
        it++;                                                                                              \
        if (++grp == ng || it == i1) tile_end<NT, IS>(acc, iacc, a, tile, grp, ts, it, w, lane);          \
        if (it == i1) break;                                                                               \
    }
    if constexpr (D == 2) {
        for (;;) {
            SQ_STEP(c0, c2, b0, b2, 0)
            SQ_STEP(c1, c0, b1, b0, 1)
            SQ_STEP(c2, c1, b2, b1, 2)
        }
    } else {
        for (;;) {
            SQ_STEP(c0, c1, b0, b1, 0)
            SQ_STEP(c1, c0, b1, b0, 1)
        }
    }
#undef SQ_STEP
#undef SQ_LOADB
}

/* decode, staged (the fast layout from 9 tokens; k_sq_dec above keeps one
 * n-tile, where staging lost, 1-13 % at 3 and 8 tokens in bench_gemm and
 * 13-22 % end to end at batch 4 and 8, and the other layouts). Same
 * stream-k walk and the same group
 * arithmetic (do_group, do_group_is), but each warp copies its items with
 * cp.async into a ring of S stages in shared memory, a stage holding an
 * item's weight unit AND its NT n-tiles of B fragments (the activations of
 * the group's 64 columns). Why: Nsight Compute on k_sq_dec (70B gate_up,
 * 32 tokens, H200, eleventh session) put 37 % of the warps' stalls on long
 * scoreboards, nearly all at the mma waiting for its B fragment (loaded
 * from L1/L2 where it is used) or at the unpack waiting for a unit loaded
 * only one group ahead; and its 128-register cap spilled the register sets
 * that held the units in flight. A ring stage costs no registers, so S - 1
 * items (weights and activations) are in flight while one is multiplied.
 * One scatter tile a warp suffices: the __syncwarp after each wait orders
 * the last group's reads of it before the next scatter. */
template <int NT, bool S16>
struct DecRing {
    static constexpr int UB = UG<4, 4, S16>::ub; /* the unit's bytes: 52 or 56 chunks of 16 */
    static constexpr int BYTES = UB + NT * 512;  /* a stage: the unit, then n-tile t's fragments at UB + 512 t */
    static constexpr __host__ __device__ size_t warp_bytes(int S) { return (size_t)S * BYTES + SQ_TILE; }
};

/* one item into the stage at st (one cp.async group): the unit at u (the
 * lane's first chunk), the lane's B fragment of n-tile t at xg + xo[t] */
template <int NT, bool S16>
__device__ __forceinline__ void dec_stage(uint32_t st, const uint8_t *u, const uint8_t *xg, const uint32_t (&xo)[NT],
                                          int lane) {
    constexpr int UB = DecRing<NT, S16>::UB;
    cp_async16(st + 16 * lane, u);
    if (lane < UB / 16 - 32) cp_async16(st + 512 + 16 * lane, u + 512);
#pragma unroll
    for (int t = 0; t < NT; t++) cp_async16(st + UB + t * 512 + 16 * lane, xg + xo[t]);
    cp_async_commit();
}

template <int NT, bool S16, bool IS, int S>
__global__ void __launch_bounds__(128, NT <= 4 ? 4 : 3) k_sq_dec_st(MmArgs a) {
    typedef DecRing<NT, S16> R;
    extern __shared__ __align__(16) uint8_t dsm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *wsm = dsm + warp * R::warp_bytes(S), *tile_b = wsm + S * R::BYTES;
    zero_tiles(tile_b, 1, lane);
    SkWarp sw;
    if (!sk_warp<NT>(a, lane, warp, sw)) return;
    /* (not bound as in k_sq_dec: C++17 lambdas cannot capture bindings) */
    const unsigned i0 = sw.i0, i1 = sw.i1, ng = sw.ng;
    const uint32_t ring = (uint32_t)__cvta_generic_to_shared(wsm);
    /* The lane's activation rows: token tok0 + 8 t + g of n-tile t, or where
     * that is past the end, n-tile 0's row of the lane (any bytes would do:
     * a B column feeds only its own token's outputs, which store_y drops),
     * so neither the copies nor the mma need a predicate. Not one row for
     * all such lanes: copies of one address by many lanes took 1.1-1.5x
     * the time at 9 and 48 tokens; nor a predicate a copy (warp-uniform,
     * on the n-tiles that hold no token): 4-12 % slower with all valid.
     * (Where n-tile 0's row is past the end too, fewer than 8 tokens in
     * the launch, the last token's row: only the tests take this kernel
     * there, kc_sq_set_isdec_min(3).) */
    const uint8_t *const xrow = (const uint8_t *)a.qx + 16 * (lane & 3);
    uint32_t xo[NT]; /* < 2^32: at most 64 tokens of k < 2^26 bytes (sq_matmul checks both) */
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const long tok = a.tok0 + 8 * t + (lane >> 2);
        const long tok_0 = a.tok0 + (lane >> 2);
        xo[t] = (uint32_t)((tok < a.m ? tok : tok_0 < a.m ? tok_0 : a.m - 1) * a.k);
    }
    /* the load stream: next item lit, its unit lu (the lane's chunk), its group's columns lx */
    const uint8_t *lu = a.w + (size_t)i0 * R::UB + 16 * lane;
    unsigned lit = i0, lgrp = i0 % ng;
    const uint8_t *lx = xrow + lgrp * 64;
    const auto load_next = [&](uint32_t st) {
        if (lit < i1) {
            dec_stage<NT, S16>(st, lu, lx, xo, lane);
            lit++, lu += R::UB, lx += 64;
            if (++lgrp == ng) lgrp = 0, lx = xrow;
        } else {
            cp_async_commit(); /* an empty group: the wait below counts groups */
        }
    };
#pragma unroll
    for (int s = 0; s < S; s++) load_next(ring + s * R::BYTES);
    float acc[NT][4];
    int iacc[NT][4]; /* IS: the INT32 sums of the tile so far */
    zero_sums<NT>(acc, iacc);
    unsigned it = i0, tile = i0 / ng, grp = i0 % ng, ts = i0;
    /* the stage in use, rotated by its size (addresses advanced, not
     * recomputed from a slot index: 20 instructions an item fewer) */
    const uint32_t ring_l = ring + 16 * lane, ring_end = ring_l + S * R::BYTES;
    const StOffs<S16> so(lane);
    uint32_t stl = ring_l;
    for (;;) {
        cp_async_wait<S - 1>();
        __syncwarp();
        const uint32_t st = stl - 16 * lane;
        Raw<4, 4, S16> cur[1];
        lds_unit<S16>(cur[0], stl, so);
        const auto bload = [&](int t, int) { return lds_v4(stl + R::UB + t * 512); };
        if constexpr (IS)
            do_group_is<NT>(iacc, cur, it, tile_b, a, bload, lane);
        else
            do_group<NT, 4, 1, 4, S16, false>(acc, cur, it, tile_b, a, bload, lane);
        /* every lane read its weights from the slot before the scatter's
         * __syncwarp, and its own fragments before its mma: refill it */
        load_next(st);
        stl = stl + R::BYTES == ring_end ? ring_l : stl + R::BYTES;
        it++;
        if (++grp == ng || it == i1) tile_end<NT, IS>(acc, iacc, a, tile, grp, ts, it, sw.w, lane);
        if (it == i1) break;
    }
    cp_async_wait<0>();
}

/* prefill (fast layout): one warp per 16-row tile x 128 tokens, tpb warps a
 * block sharing the token chunk's fragment-order activations through L1 */
template <bool S16>
__global__ void __launch_bounds__(256, 1) k_sq_pre(MmArgs a) {
    __shared__ __align__(16) uint8_t sm[8 * 2 * SQ_TILE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *wsm = sm + warp * 2 * SQ_TILE;
    zero_tiles(wsm, 2, lane);
    const long tile = (long)blockIdx.y * a.tpb + warp, tok0 = (long)blockIdx.x * 128;
    const unsigned ng = (unsigned)a.ngroups;
    if (tile >= a.ntiles) return;
    /* the lane's B fragments, n-tile t, subgroup s: xb[t * xst + s * 32] */
    const uint4 *xb = a.xf + (tok0 >> 3) * a.nsub * 32 + lane;
    const long xst = a.nsub * 32;
    Raw<4, 4, S16> c0[1], c1[1];
    const LanePtr lp = lane_ptrs<4, 4, S16>(a, lane);
    const unsigned i0 = (unsigned)(tile * ng);
    load_group<4, 1, 4, S16>(c0, i0, a, lp);
    float acc[16][4];
#pragma unroll
    for (int t = 0; t < 16; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    for (unsigned grp = 0; grp < ng; grp++) {
        if (grp + 1 < ng) load_group<4, 1, 4, S16>(c1, i0 + grp + 1, a, lp);
        const uint4 *bsrc = xb + grp * 32;
        do_group<16, 4, 1, 4, S16, false>(acc, c0, i0 + grp, wsm + (grp & 1) * SQ_TILE, a,
                                          [&](int t, int) { return __ldg(bsrc + t * xst); }, lane);
        c0[0] = c1[0];
    }
    store_y(acc, a, tile, tok0, lane);
}

/* activations [m][k] -> [token tile of 8][subgroup][lane] x 16 B, zero past m:
 * lane (g, t) gets token 8 tt + g, columns 16 t .. 16 t + 15 of the subgroup,
 * so a warp's B fragments for one n-tile and subgroup are 512 contiguous bytes */
__global__ void k_frag_x(const int8_t *qx, long m, long k, long ntt, uint4 *xf) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, nsub = k / 64;
    if (t >= ntt * nsub * 32) return;
    int lane = (int)(t & 31);
    long sub = (t >> 5) % nsub, tt = (t >> 5) / nsub, tok = tt * 8 + (lane >> 2);
    xf[t] = tok < m ? __ldg((const uint4 *)(qx + tok * k + sub * 64 + 16 * (lane & 3))) : make_uint4(0, 0, 0, 0);
}

/* ---- host side ------------------------------------------------------------------------- */

/* stream-k scratch (the decode kernels, and the wgmma kernel's split
 * tiles: one stream, so they take turns): partial sums and per-tile
 * counters. Grown on demand and never freed while the process runs: CUDA
 * graphs captured earlier keep pointing at the old buffers, which therefore
 * stay valid (the counters reset themselves at the end of every launch). */
static float *g_part;
static size_t g_part_bytes;
static int *g_cnt;
static long g_cnt_n;

int kc_sk_scratch(size_t part_bytes, long ntiles, MmArgs *a) {
    if (kc_grow((void **)&g_part, &g_part_bytes, part_bytes, (size_t)4 << 20)) return -1;
    if (ntiles > g_cnt_n) { /* new counters start at zero; launches leave them so */
        long want = ntiles < 65536 ? 65536 : ntiles;
        int *c = (int *)kc_malloc((size_t)want * sizeof(int));
        if (!c || kc_memset(c, 0, (size_t)want * sizeof(int))) return -1;
        g_cnt = c, g_cnt_n = want;
    }
    a->part = g_part, a->cnt = g_cnt;
    return 0;
}

template <int NT, int LOBITS, int SPG, int S2C, bool S16, bool IS = false>
static int launch_decode(const kc_sq *w, MmArgs a) {
    static int occ;
    return kc_sk_launch<NT>(k_sq_dec<NT, LOBITS, SPG, S2C, S16, IS>, &occ, "k_sq_dec", w, a, 0);
}

/* Stages of k_sq_dec_st's ring, 0 for k_sq_dec (registers) on the fast
 * layout too: KC_SQ_DEC_STAGES or kc_sq_set_dec_stages (2..4). */
static long g_dec_stages = -1;
extern "C" long kc_sq_dec_stages(void) {
    const long s = kc_threshold(&g_dec_stages, "KC_SQ_DEC_STAGES", 3);
    return s == 0 ? 0 : s < 2 ? 2 : s > 4 ? 4 : s;
}
extern "C" void kc_sq_set_dec_stages(long s) { g_dec_stages = s; }

template <int NT, bool S16, bool IS, int S>
static int launch_st(const kc_sq *w, MmArgs a) {
    static int occ;
    return kc_sk_launch<NT>(k_sq_dec_st<NT, S16, IS, S>, &occ, "k_sq_dec_st", w, a,
                            4 * DecRing<NT, S16>::warp_bytes(S));
}

/* the fast layout from 9 tokens: staged when kc_sq_dec_stages() says so.
 * On the H200 (bench_gemm --stages, eleventh session) the ring takes
 * 0.56-0.80x k_sq_dec's time on every 8B and 70B shape at 9..64 tokens with
 * free half scales (8B qkv and o at 9..16: 0.93-1.01x), 0.90-0.99x with
 * the INT32 kernel; 2, 3 and 4 stages within a few % of each other. */
template <int NT, bool S16, bool IS>
static int dispatch_st(const kc_sq *w, const MmArgs &a) {
    switch (kc_sq_dec_stages()) {
    case 2: return launch_st<NT, S16, IS, 2>(w, a);
    case 3: return launch_st<NT, S16, IS, 3>(w, a);
    case 4: return launch_st<NT, S16, IS, 4>(w, a);
    default: return launch_decode<NT, 4, 1, 4, S16, IS>(w, a);
    }
}

template <int LOBITS, int SPG, int S2C, bool S16>
static int dispatch_nt(const kc_sq *w, const MmArgs &a) {
    if (a.m <= 8) return launch_decode<1, LOBITS, SPG, S2C, S16>(w, a);
    if constexpr (LOBITS == 4 && SPG == 1 && S2C == 4) {
        if (a.m <= 16) return dispatch_st<2, S16, false>(w, a);
        if (a.m <= 32) return dispatch_st<4, S16, false>(w, a);
        return dispatch_st<8, S16, false>(w, a);
    }
    return launch_decode<8, LOBITS, SPG, S2C, S16>(w, a); /* other layouts: eight n-tiles, run-time slots */
}

/* integer bank scales on the explicit fast layout: the decode kernel with
 * one INT8 A fragment a group and INT32 sums over the row (do_group_is)
 * from kc_sq_isdec_min(w) tokens to 64; KC_SQ_ISDEC=N or
 * kc_sq_set_isdec_min moves the start to N tokens for every matrix (N <=
 * 32: four n-tiles; 1 and 2 tokens stay on the dp4a kernel), 0 or N > 64
 * keeps the float combination (measurements).
 * On the H200 (bench_gemm --isdec, docs/perf-gpu.md): in the tenth session
 * (registers) it took 0.57-0.79x the float kernel's time at 48 and 64
 * tokens but 1.17-1.33x at 32, so it started at 33. With the ring of
 * stages and one MUFU.RCP for k_g (eleventh session), INT32 / float time
 * at 32 and 17 tokens: 70B qkv 0.94 and 1.02, gate_up 0.89 and 0.98, down
 * 0.91 and 0.91, 8B gate_up 0.98 and 0.96 (the matrices of 80 M weights
 * and more); 8B qkv 1.31, o 1.10, down 0.98, 70B o 1.00 at 32 tokens: it
 * starts at 17 on the former, 33 on the rest. */
static long g_isdec_min = -1; /* -1: not looked up; -2: per matrix (the default) */
extern "C" long kc_sq_isdec_min(const kc_sq_t *w) {
    if (kc_override(&g_isdec_min, "KC_SQ_ISDEC") >= 0) return g_isdec_min;
    return w && (double)w->n * w->k >= 8e7 ? 17 : 33;
}
extern "C" void kc_sq_set_isdec_min(long m) { g_isdec_min = m < 0 ? -1 : m; }

static int dispatch_is(const kc_sq *w, const MmArgs &a) {
    if (a.m <= 32) return dispatch_st<4, true, true>(w, a);
    return dispatch_st<8, true, true>(w, a);
}

/* prefill scratch: the fragment-order activations (never freed, as above) */
static uint4 *g_xf;
static size_t g_xf_bytes;

int kc_sq_frag_acts(const kc_sq *w, MmArgs *a, dim3 *grid) {
    const long chunks = (a->m + 127) / 128, ntt = chunks * 16; /* token tiles of 8, whole chunks of 128 */
    if (kc_grow((void **)&g_xf, &g_xf_bytes, (size_t)ntt * w->nsub * 32 * sizeof(uint4), 0)) return -1;
    const long th = ntt * w->nsub * 32;
    k_frag_x<<<kc_blocks(th, 256), 256, 0, KC_STREAM>>>(a->qx, a->m, a->k, ntt, g_xf);
    if (kc_check_launch("k_frag_x")) return -1;
    /* 8 tiles a block, or 4 when that leaves the GPU short of blocks */
    a->xf = g_xf, a->tok0 = 0, a->tpb = (w->ntiles + 7) / 8 * chunks >= 2L * kc_sm_count() ? 8 : 4;
    *grid = dim3((unsigned)chunks, (unsigned)((w->ntiles + a->tpb - 1) / a->tpb));
    return 0;
}

template <bool S16>
static int launch_prefill(const kc_sq *w, MmArgs a) {
    dim3 grid;
    if (kc_sq_frag_acts(w, &a, &grid)) return -1;
    k_sq_pre<S16><<<grid, a.tpb * 32, 0, KC_STREAM>>>(a);
    return kc_check_launch("k_sq_pre");
}

/* the kernels' view of a matmul over one output (parts, acc: set after) */
static MmArgs mm_args(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    MmArgs a;
    memset(&a, 0, sizeof a);
    a.w = w->d, a.n = w->n, a.ntiles = w->ntiles, a.nsub = w->nsub, a.ngroups = w->ngroups;
    a.m = m, a.k = w->k, a.unit_bytes = w->unit_bytes, a.lo_bytes = w->lo_bytes;
    a.slot_bytes = w->slot_bytes, a.s2 = w->s2, a.qx = d_qx, a.sx = d_sx, a.y = d_y;
    a.np = 1, a.rs = w->rs;
    return a;
}

/* a fused matrix's parts: part p's rows go to parts[p] */
static void parts_args(MmArgs *a, const kc_sq_t *w, float *const *parts) {
    a->np = w->nparts, a->pstart[0] = 0;
    for (int p = 0; p < w->nparts; p++) a->py[p] = parts[p], a->pstart[p + 1] = a->pstart[p] + w->part_n[p];
}

static int sq_matmul(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y, float *const *parts) {
    if (m == 0) return 0;
    MmArgs a = mm_args(w, d_qx, d_sx, m, d_y);
    if (parts) parts_args(&a, w, parts);
    if (kc_sq_wg_applies(w, m)) return kc_sq_wg(w, a); /* kc_sq_wg.cu */
    if (kc_sq_twostep_applies(w, m)) return kc_sq_twostep(w, d_qx, d_sx, m, d_y, parts); /* kc_sq_gemm.cu */
    if ((m + 127) / 128 > 0x7fffffffL || w->k >= (1L << 26)) { /* (k: k_sq_dec_st's 32-bit row offsets) */
        kc_set_error("kc_sq_matmul: too many tokens (%ld) or inputs (%ld)", m, w->k);
        return -1;
    }
    if (kc_sq_gemv_applies(w, m)) return kc_sq_gemv(w, &a); /* kc_sq_gemv.cu */
    if (w->compact) return kc_sqc_matmul(w, a); /* kc_sqc_mm.cu */
    if (is_fast(w)) {
        if (m > 64) return w->s16 ? launch_prefill<true>(w, a) : launch_prefill<false>(w, a);
        if (w->iscale && w->s16 && w->k < KC_SQ_IS_KMAX) {
            const long is0 = kc_sq_isdec_min(w);
            if (is0 > 0 && m >= is0) return dispatch_is(w, a);
        }
        return w->s16 ? dispatch_nt<4, 1, 4, true>(w, a) : dispatch_nt<4, 1, 4, false>(w, a);
    }
    if (w->lobits == 4)
        return w->spg == 1 ? dispatch_nt<4, 1, 0, false>(w, a) : dispatch_nt<4, 2, 0, false>(w, a);
    return w->spg == 1 ? dispatch_nt<2, 1, 0, false>(w, a) : dispatch_nt<2, 2, 0, false>(w, a);
}

extern "C" int kc_sq_matmul(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0) {
        kc_set_error("kc_sq_matmul: bad arguments");
        return -1;
    }
    return sq_matmul(w, d_qx, d_sx, m, d_y, NULL);
}

/* exactly where kc_sq_matmul would take the dp4a kernel (so y += x W^T has
 * kc_sq_matmul's numbers): not where the wgmma kernel or the two-step path
 * comes first */
static int gemv_takes(const kc_sq_t *w, long m) {
    return !kc_sq_wg_applies(w, m) && !kc_sq_twostep_applies(w, m) && kc_sq_gemv_applies(w, m);
}

extern "C" int kc_sq_acc_applies(const kc_sq_t *w, long m) { return w && w->nparts <= 1 && gemv_takes(w, m); }

extern "C" int kc_sq_matmul_acc(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0 || !kc_sq_acc_applies(w, m)) {
        kc_set_error("kc_sq_matmul_acc: bad arguments, or a matrix or m the dp4a path does not take");
        return -1;
    }
    if (m == 0) return 0;
    MmArgs a = mm_args(w, d_qx, d_sx, m, d_y);
    a.acc = 1;
    return kc_sq_gemv(w, &a);
}

static long g_rope = -1; /* KC_SQ_ROPE, kc_sq_set_rope: on unless KC_SQ_ROPE=0 (8B decode 1.06x, H200) */

extern "C" void kc_sq_set_rope(int on) { g_rope = on < 0 ? -1 : on != 0; }

extern "C" int kc_sq_rope_on(void) { return kc_threshold(&g_rope, "KC_SQ_ROPE", 1) != 0; }

/* RoPE in the q/k/v GEMV's epilogue: the dp4a path in one launch (m <= its
 * widest token count), a fused q/k/v of whole heads, pairs within a head */
static int rope_fits(const kc_sq_t *w, long m, const kc_rope_t *r) {
    const long hd = r->head_dim;
    return kc_sq_rope_on() && m >= 1 && w->nparts == 3 && gemv_takes(w, m) && hd > 0 && hd % 2 == 0 &&
           r->rot_dim <= hd && w->part_n[0] % hd == 0 && w->part_n[1] == r->kv.kv_dim &&
           w->part_n[2] == r->kv.kv_dim && r->kv.kv_dim % hd == 0 && r->d_cs && r->d_pos && r->d_blk && r->d_blk_off;
}

static void rope_args(MmArgs *a, const kc_rope_t *r) {
    a->rope.on = 1, a->rope.layer = r->layer, a->rope.head_dim = r->head_dim, a->rope.rot_half = r->rot_dim / 2;
    a->rope.cs = r->d_cs, a->rope.pos = r->d_pos, a->rope.blk = r->d_blk, a->rope.blk_off = r->d_blk_off;
    a->rope.kv = r->kv;
}

extern "C" int kc_sq_matmul_qkv_rope(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m,
                                     float *const *d_y, const kc_rope_t *r) {
    if (!w || !d_qx || !d_sx || !d_y || !r || m < 0 || w->nparts != 3 || !d_y[0] || !d_y[1] || !d_y[2]) {
        kc_set_error("kc_sq_matmul_qkv_rope: bad arguments");
        return -1;
    }
    if (!rope_fits(w, m, r)) return kc_sq_matmul_parts(w, d_qx, d_sx, m, d_y) ? -1 : 0;
    MmArgs a = mm_args(w, d_qx, d_sx, m, d_y[0]);
    parts_args(&a, w, d_y);
    rope_args(&a, r);
    return kc_sq_gemv(w, &a) ? -1 : 1;
}

/* SwiGLU done by the dp4a launches around it (GemvSwiglu, kc_sq_gemv.cu).
 * Off by default until measured on a GPU (KC_SQ_SWIGLU=1). */
static long g_swiglu = -1;

extern "C" void kc_sq_set_swiglu(int on) { g_swiglu = on < 0 ? -1 : on != 0; }

extern "C" int kc_sq_swiglu_on(void) { return kc_threshold(&g_swiglu, "KC_SQ_SWIGLU", 0) != 0; }

/* RMSNorm split over the dp4a launches around it (GemvNorm, kc_sq_gemv_ep.cuh).
 * Off by default until measured on a GPU (KC_SQ_NORM=1). */
static long g_norm = -1;

extern "C" void kc_sq_set_norm(int on) { g_norm = on < 0 ? -1 : on != 0; }

extern "C" int kc_sq_norm_on(void) { return kc_threshold(&g_norm, "KC_SQ_NORM", 0) != 0; }

extern "C" long kc_norm_split_tiles(long dim) { return (dim + 15) / 16; }

/* The attention output quantized by the o matmul (kc_attention_max +
 * kc_sq_matmul_acc_h). Off by default until measured on a GPU (KC_SQ_ATTQ=1). */
static long g_attq = -1;

extern "C" void kc_sq_set_attq(int on) { g_attq = on < 0 ? -1 : on != 0; }

extern "C" int kc_sq_attq_on(void) { return kc_threshold(&g_attq, "KC_SQ_ATTQ", 0) != 0; }

/* whether w at m tokens runs on the staged dp4a kernel in this mode (kc.h's
 * KC_GEMV_*), the switches of its parts on: the norm's modes at one or two
 * tokens, a tile end that adds (the norm's slots) on a matrix of one part */
extern "C" int kc_sq_gemv_mode_applies(const kc_sq_t *w, long m, int mode) {
    const int act = mode & 3, end = mode >> 2;
    const int norm = act == 2 || end == 2, swiglu = end == 1; /* (float input: SwiGLU's h or the attention's) */
    return w && m >= 1 && m <= (norm ? 2 : 4) && act != 3 && end != 3 && (!norm || kc_sq_norm_on()) &&
           (!swiglu || kc_sq_swiglu_on()) && kc_sq_gemv_staged() && gemv_takes(w, m) &&
           (end != 2 || w->nparts <= 1) && (act != 1 || w->nparts <= 1) &&
           kc_sq_gemv_mode_fits(w, m, mode, end == 1 && w->nparts == 2 ? w->part_n[0] / 16 : 0);
}

extern "C" int kc_sq_swiglu_applies_ex(const kc_sq_t *gu, const kc_sq_t *down, long m, int norm_in, int norm_out) {
    return gu && down && gu->nparts == 2 && gu->part_n[0] == gu->part_n[1] && gu->part_n[0] % 16 == 0 &&
           down->k == gu->part_n[0] &&
           kc_sq_gemv_mode_applies(gu, m, KC_GEMV_END_PAIRS | (norm_in ? KC_GEMV_ACTS_NORM : 0)) &&
           kc_sq_gemv_mode_applies(down, m, KC_GEMV_ACTS_H | (norm_out ? KC_GEMV_END_NORM : 0));
}

extern "C" int kc_sq_swiglu_applies(const kc_sq_t *gu, const kc_sq_t *down, long m) {
    return kc_sq_swiglu_applies_ex(gu, down, m, 0, 0);
}

extern "C" long kc_sq_swiglu_slots(const kc_sq_t *gu) { return gu && gu->nparts == 2 ? 4 * (gu->part_n[0] / 16) : 0; }

/* the norm's row as a's input (GemvNorm.in), or its slots as a's output (.out) */
static void norm_in(MmArgs *a, const float *d_x, const kc_norm_split_t *ns) {
    a->nm.in = 1, a->nm.x = d_x, a->nm.w = ns->d_w, a->nm.eps = ns->eps, a->nm.ss = ns->d_ss;
    a->nm.cand = (float4 *)ns->d_cand, a->nm.ntile = kc_norm_split_tiles(a->k);
}
static void norm_out(MmArgs *a, const kc_norm_split_t *ns) {
    a->nm.out = 1, a->nm.w = ns->d_w, a->nm.eps = ns->eps, a->nm.ss = ns->d_ss;
    a->nm.cand = (float4 *)ns->d_cand, a->nm.ntile = kc_norm_split_tiles(a->n);
}
static int ns_ok(const kc_norm_split_t *ns) { return ns && ns->d_w && ns->d_ss && ns->d_cand; }

extern "C" int kc_sq_matmul_swiglu(const kc_sq_t *gu, const kc_sq_t *down, const int8_t *d_qx, const float *d_sx,
                                   const float *d_x, const kc_norm_split_t *ns_in, long m, float *d_h, float *d_hmax,
                                   long hmax_floats, int *nslot) {
    if ((ns_in ? !d_x || !ns_ok(ns_in) : !d_qx || !d_sx) || !d_h || !d_hmax || !nslot ||
        !kc_sq_swiglu_applies_ex(gu, down, m, ns_in != NULL, 0) || hmax_floats < kc_sq_swiglu_slots(gu)) {
        kc_set_error("kc_sq_matmul_swiglu: bad arguments, or matrices or m it does not take");
        return -1;
    }
    MmArgs a = mm_args(gu, d_qx, d_sx, m, d_h);
    float *const outs[2] = {d_h, NULL}; /* (the up part's products stay in the kernel) */
    parts_args(&a, gu, outs);
    a.sw.mode = SW_PAIRS, a.sw.half = gu->part_n[0] / 16, a.sw.hmax = d_hmax;
    if (ns_in) norm_in(&a, d_x, ns_in);
    long grid = 0;
    if (kc_sq_gemv(gu, &a, &grid)) return -1;
    *nslot = (int)grid;
    return 0;
}

extern "C" int kc_sq_matmul_acc_h(const kc_sq_t *down, const float *d_h, const float *d_hmax, int nslot, long m,
                                  float *d_y, const kc_norm_split_t *ns_out) {
    if (!down || !d_h || !d_hmax || nslot < 1 || !d_y || (ns_out && !ns_ok(ns_out)) ||
        !kc_sq_gemv_mode_applies(down, m, KC_GEMV_ACTS_H | (ns_out ? KC_GEMV_END_NORM : 0)) ||
        !kc_sq_acc_applies(down, m)) {
        kc_set_error("kc_sq_matmul_acc_h: bad arguments, or a matrix or m it does not take");
        return -1;
    }
    MmArgs a = mm_args(down, NULL, NULL, m, d_y);
    a.acc = 1;
    a.sw.mode = SW_FLOAT_IN, a.sw.nslot = nslot, a.sw.hmax = (float *)d_hmax, a.sw.h = d_h;
    if (ns_out) norm_out(&a, ns_out);
    return kc_sq_gemv(down, &a);
}

extern "C" int kc_sq_matmul_acc_ns(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y,
                                   const kc_norm_split_t *ns_out) {
    if (!d_qx || !d_sx || !d_y || !ns_ok(ns_out) || !kc_sq_gemv_mode_applies(w, m, KC_GEMV_END_NORM) ||
        !kc_sq_acc_applies(w, m)) {
        kc_set_error("kc_sq_matmul_acc_ns: bad arguments, or a matrix or m it does not take");
        return -1;
    }
    MmArgs a = mm_args(w, d_qx, d_sx, m, d_y);
    a.acc = 1;
    norm_out(&a, ns_out);
    return kc_sq_gemv(w, &a);
}

extern "C" int kc_sq_matmul_parts_ns(const kc_sq_t *w, const float *d_x, const kc_norm_split_t *ns_in, long m,
                                     float *const *d_y, const kc_rope_t *r) {
    if (!w || !d_x || !ns_ok(ns_in) || !d_y || !kc_sq_gemv_mode_applies(w, m, KC_GEMV_ACTS_NORM)) {
        kc_set_error("kc_sq_matmul_parts_ns: bad arguments, or a matrix or m it does not take");
        return -1;
    }
    for (int p = 0; p < (w->nparts > 1 ? w->nparts : 1); p++)
        if (!d_y[p]) {
            kc_set_error("kc_sq_matmul_parts_ns: no output for part %d", p);
            return -1;
        }
    MmArgs a = mm_args(w, NULL, NULL, m, d_y[0]);
    if (w->nparts > 1) parts_args(&a, w, d_y);
    norm_in(&a, d_x, ns_in);
    const int rope = r && rope_fits(w, m, r);
    if (rope) rope_args(&a, r);
    return kc_sq_gemv(w, &a) ? -1 : rope;
}

extern "C" int kc_sq_matmul_parts(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *const *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0) {
        kc_set_error("kc_sq_matmul_parts: bad arguments");
        return -1;
    }
    for (int p = 0; p < w->nparts; p++)
        if (!d_y[p]) {
            kc_set_error("kc_sq_matmul_parts: no output for part %d", p);
            return -1;
        }
    return sq_matmul(w, d_qx, d_sx, m, d_y[0], d_y);
}
