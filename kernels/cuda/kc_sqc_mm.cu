/* kc_sqc_mm.cu - the SQ x INT8 matmul on the compact layout, for more
 * tokens than the dp4a kernel takes (kc_sq_gemv.cu; kc_sq_mm.cu has the
 * explicit layout's kernels and the dispatch).
 *
 * The compact layout (kc_sq.cuh: the mask implicit in a reserved low code)
 * has kernels with the structure of kc_sq_mm.cu's: k_sqc_dec (stream-k
 * decode, one unit a step), k_sqc_dec2 (two units a step: both decoded and
 * multiplied in one basic block, for instruction-level parallelism) and
 * k_sqc_pre (prefill).
 * Their unit decoding (frag_compact) needs no shared memory: the reserved
 * nibble gives the high flags (3 integer ops a word), two quad shuffles the
 * count of highs in the lanes before, one multiply per word the PRMT
 * selectors, and 6 PRMT + 2 AND per word the high A fragments. It costs
 * more instructions than the explicit layout's slot scatter: on the H200 the
 * compact decode kernels issue ~1.4x the instructions of the explicit ones
 * for the same matrix and are issue/latency bound at ~14 resident warps per
 * SM (docs/perf-gpu.md has the profile).
 */
#include "kc_sq_mm.cuh"

#include <stdlib.h>

/* One compact unit (16 rows x 64 columns, one scale group) against NT x 8
 * tokens; B fragments as in kc_sq_mm.cu's do_group. */
template <int NT, bool S16, bool OFFS, bool BPRE>
__device__ __forceinline__ void do_group_c(float (&acc)[NT][4], const RawC<S16> &cur, const uint4 *bsrc, long bst,
                                           uint32_t tvalid, const uint4 &bpre, int lane) {
    const uint32_t NEG = 0xF8F8F8F8u;
    uint32_t Alo[8], Ahi[8];
    frag_compact<!OFFS, S16>(cur, Alo, Ahi, lane & 3);
    float sl0, sh0, sl1, sh1;
    if (S16) {
        sl0 = half_lo(cur.sc[0]), sh0 = half_hi(cur.sc[0]);
        sl1 = half_lo(cur.sc[1]), sh1 = half_hi(cur.sc[1]);
    } else {
        sl0 = __uint_as_float(cur.sc[0]), sh0 = __uint_as_float(cur.sc[1]);
        sl1 = __uint_as_float(cur.sc[2]), sh1 = __uint_as_float(cur.sc[3]);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int mg[4] = {MAGIC_I, MAGIC_I, MAGIC_I, MAGIC_I};
        int ilo[4], ihi[4];
        const uint4 bv = BPRE ? bpre : (tvalid >> t) & 1 ? __ldg(bsrc + t * bst) : make_uint4(0, 0, 0, 0);
        mma_s8c(ilo, Alo[0], Alo[1], Alo[2], Alo[3], bv.x, bv.y, mg);
        mma_s8(ilo, Alo[4], Alo[5], Alo[6], Alo[7], bv.z, bv.w);
        if (OFFS) {
            mma_s8(ilo, NEG, NEG, NEG, NEG, bv.x, bv.y);
            mma_s8(ilo, NEG, NEG, NEG, NEG, bv.z, bv.w);
        }
        mma_s8c(ihi, Ahi[0], Ahi[1], Ahi[2], Ahi[3], bv.x, bv.y, mg);
        mma_s8(ihi, Ahi[4], Ahi[5], Ahi[6], Ahi[7], bv.z, bv.w);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float sl = e < 2 ? sl0 : sl1, sh = e < 2 ? sh0 : sh1;
            acc[t][e] = fmaf(sl, __int_as_float(ilo[e]) - MAGIC_F, acc[t][e]);
            acc[t][e] = fmaf(sh, __int_as_float(ihi[e]) - MAGIC_F, acc[t][e]);
        }
    }
}

/* decode on the compact layout: stream-k over (tile, group) items as
 * k_sq_dec, DEPTH units loaded ahead (DEPTH + 1 register sets) */
template <int NT, bool S16, int DEPTH, int MINB>
__global__ void __launch_bounds__(128, MINB) k_sqc_dec(MmArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    SkWarp sw;
    if (!sk_warp<NT>(a, lane, warp, sw)) return;
    const auto [w, i0, i1, tvalid, xrow, ng, xst] = sw;
    const LanePtrC lp = lane_ptrs_c<S16>(a.w, lane);
    constexpr bool OFFS = NT <= 2, BPRE = NT == 1;
    RawC<S16> r0, r1, r2, r3;
    uint4 x0, x1, x2, x3;
    const bool xv = tvalid & 1;
    unsigned lgrp = i0 % ng; /* group of the next unit to load */
#define SQC_LOAD(R, X, item)                                                   \
    {                                                                          \
        load_unit_c<S16>(R, lp, item);                                         \
        if (BPRE) X = xv ? __ldg(xrow + lgrp * 4) : make_uint4(0, 0, 0, 0);    \
    }                                                                          \
    if (++lgrp == ng) lgrp = 0;
    SQC_LOAD(r0, x0, i0)
    if constexpr (DEPTH >= 2) {
        if (i0 + 1 < i1) SQC_LOAD(r1, x1, i0 + 1)
    }
    if constexpr (DEPTH >= 3) {
        if (i0 + 2 < i1) SQC_LOAD(r2, x2, i0 + 2)
    }
    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    unsigned it = i0, tile = i0 / ng, grp = i0 % ng, ts = i0;
#define SQC_STEP(C, XC, L, XL)                                                                          \
    {                                                                                                   \
        if (it + DEPTH < i1) SQC_LOAD(L, XL, it + DEPTH)                                                \
        do_group_c<NT, S16, OFFS, BPRE>(acc, C, xrow + grp * 4, xst, tvalid, XC, lane);                 \
        it++;                                                                                           \
        if (++grp == ng || it == i1) {                                                                  \
            sk_flush<NT>(acc, a, tile, ts, it, w, lane);                                                \
            _Pragma("unroll") for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f; \
            tile++, grp = 0, ts = it;                                                                   \
        }                                                                                               \
        if (it == i1) return;                                                                           \
    }
    if constexpr (DEPTH == 1) {
        for (;;) {
            SQC_STEP(r0, x0, r1, x1)
            SQC_STEP(r1, x1, r0, x0)
        }
    } else if constexpr (DEPTH == 2) {
        for (;;) {
            SQC_STEP(r0, x0, r2, x2)
            SQC_STEP(r1, x1, r0, x0)
            SQC_STEP(r2, x2, r1, x1)
        }
    } else {
        for (;;) {
            SQC_STEP(r0, x0, r3, x3)
            SQC_STEP(r1, x1, r0, x0)
            SQC_STEP(r2, x2, r1, x1)
            SQC_STEP(r3, x3, r2, x2)
        }
    }
#undef SQC_STEP
#undef SQC_LOAD
}

/* The mma part of one compact unit: exact int32 sums (low, high) per n-tile,
 * as bit patterns biased by 1.5 * 2^23 (see MAGIC_I). */
template <int NT, bool OFFS>
__device__ __forceinline__ void mma_unit(int (&ilo)[NT][4], int (&ihi)[NT][4], const uint32_t (&Alo)[8],
                                         const uint32_t (&Ahi)[8], const uint4 (&bv)[NT]) {
    const uint32_t NEG = 0xF8F8F8F8u;
    const int mg[4] = {MAGIC_I, MAGIC_I, MAGIC_I, MAGIC_I};
#pragma unroll
    for (int t = 0; t < NT; t++) {
        mma_s8c(ilo[t], Alo[0], Alo[1], Alo[2], Alo[3], bv[t].x, bv[t].y, mg);
        mma_s8(ilo[t], Alo[4], Alo[5], Alo[6], Alo[7], bv[t].z, bv[t].w);
        if (OFFS) {
            mma_s8(ilo[t], NEG, NEG, NEG, NEG, bv[t].x, bv[t].y);
            mma_s8(ilo[t], NEG, NEG, NEG, NEG, bv[t].z, bv[t].w);
        }
        mma_s8c(ihi[t], Ahi[0], Ahi[1], Ahi[2], Ahi[3], bv[t].x, bv[t].y, mg);
        mma_s8(ihi[t], Ahi[4], Ahi[5], Ahi[6], Ahi[7], bv[t].z, bv[t].w);
    }
}

template <int NT>
__device__ __forceinline__ void combine_unit(float (&acc)[NT][4], const int (&ilo)[NT][4], const int (&ihi)[NT][4],
                                             const float (&sc)[4]) {
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float sl = e < 2 ? sc[0] : sc[2], sh = e < 2 ? sc[1] : sc[3];
            acc[t][e] = fmaf(sl, __int_as_float(ilo[t][e]) - MAGIC_F, acc[t][e]);
            acc[t][e] = fmaf(sh, __int_as_float(ihi[t][e]) - MAGIC_F, acc[t][e]);
        }
}

template <bool S16>
__device__ __forceinline__ void scales_c(const RawC<S16> &r, float (&sc)[4]) {
    if (S16) {
        sc[0] = half_lo(r.sc[0]), sc[1] = half_hi(r.sc[0]), sc[2] = half_lo(r.sc[1]), sc[3] = half_hi(r.sc[1]);
    } else {
        sc[0] = __uint_as_float(r.sc[0]), sc[1] = __uint_as_float(r.sc[1]);
        sc[2] = __uint_as_float(r.sc[2]), sc[3] = __uint_as_float(r.sc[3]);
    }
}

/* decode on the compact layout, two units (consecutive items) per step: both
 * decoded and multiplied in one basic block (twice the independent work in
 * flight per warp), then combined in item order, so the float sums are the
 * same as k_sqc_dec's. Units are loaded one pair ahead (after a pair is
 * decoded, its registers take the pair after next). */
template <int NT, bool S16, int MINB>
__global__ void __launch_bounds__(128, MINB) k_sqc_dec2(MmArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    SkWarp sw;
    if (!sk_warp<NT>(a, lane, warp, sw)) return;
    const auto [w, i0, i1, tvalid, xrow, ng, xst] = sw;
    const int tig = lane & 3;
    const LanePtrC lp = lane_ptrs_c<S16>(a.w, lane);
    constexpr bool OFFS = NT <= 2, BPRE = NT == 1;
    const uint4 z = make_uint4(0, 0, 0, 0);
    const bool xv = tvalid & 1;
    const unsigned last = i1 - 1;
    unsigned lg = i0 % ng; /* group of the next item to load */
    RawC<S16> xa, xb, ya, yb;
    uint4 bxa = z, bxb = z, bya = z, byb = z;
#define SQC2_LOAD(RA, RB, XA, XB, item)                                                   \
    {                                                                                     \
        const unsigned ua_ = (item) < i1 ? (item) : last, ub_ = (item) + 1 < i1 ? (item) + 1 : last; \
        load_unit_c<S16>(RA, lp, ua_);                                                    \
        load_unit_c<S16>(RB, lp, ub_);                                                    \
        const unsigned g2_ = lg + 1 == ng ? 0 : lg + 1;                                   \
        if (BPRE) {                                                                       \
            XA = xv ? __ldg(xrow + lg * 4) : z;                                           \
            XB = xv ? __ldg(xrow + g2_ * 4) : z;                                          \
        }                                                                                 \
        lg = g2_ + 1 == ng ? 0 : g2_ + 1;                                                 \
    }
    SQC2_LOAD(xa, xb, bxa, bxb, i0)
    if (i0 + 2 < i1) SQC2_LOAD(ya, yb, bya, byb, i0 + 2)
    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    unsigned it = i0, tile = i0 / ng, grp = i0 % ng, ts = i0;
#define SQC2_END_ITEM                                                                                   \
    it++;                                                                                               \
    if (++grp == ng || it == i1) {                                                                      \
        sk_flush<NT>(acc, a, tile, ts, it, w, lane);                                                    \
        _Pragma("unroll") for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f; \
        tile++, grp = 0, ts = it;                                                                       \
    }                                                                                                   \
    if (it == i1) return;
#define SQC2_STEP(RA, RB, XA, XB)                                                                       \
    {                                                                                                   \
        uint32_t Alo0[8], Ahi0[8], Alo1[8], Ahi1[8];                                                    \
        float s0[4], s1[4];                                                                             \
        uint4 b0[NT], b1[NT];                                                                           \
        frag_compact<!OFFS, S16>(RA, Alo0, Ahi0, tig);                                                  \
        frag_compact<!OFFS, S16>(RB, Alo1, Ahi1, tig);                                                  \
        scales_c<S16>(RA, s0);                                                                          \
        scales_c<S16>(RB, s1);                                                                          \
        const unsigned gb_ = grp + 1 == ng ? 0 : grp + 1;                                               \
        if (BPRE) {                                                                                     \
            b0[0] = XA, b1[0] = XB;                                                                     \
        } else {                                                                                        \
            _Pragma("unroll") for (int t = 0; t < NT; t++) {                                            \
                b0[t] = (tvalid >> t) & 1 ? __ldg(xrow + grp * 4 + t * xst) : z;                        \
                b1[t] = (tvalid >> t) & 1 ? __ldg(xrow + gb_ * 4 + t * xst) : z;                        \
            }                                                                                           \
        }                                                                                               \
        if (it + 4 < i1) SQC2_LOAD(RA, RB, XA, XB, it + 4)                                              \
        int l0[NT][4], h0[NT][4], l1[NT][4], h1[NT][4];                                                 \
        mma_unit<NT, OFFS>(l0, h0, Alo0, Ahi0, b0);                                                     \
        mma_unit<NT, OFFS>(l1, h1, Alo1, Ahi1, b1);                                                     \
        combine_unit<NT>(acc, l0, h0, s0);                                                              \
        SQC2_END_ITEM                                                                                   \
        combine_unit<NT>(acc, l1, h1, s1);                                                              \
        SQC2_END_ITEM                                                                                   \
    }
    for (;;) {
        SQC2_STEP(xa, xb, bxa, bxb)
        SQC2_STEP(ya, yb, bya, byb)
    }
#undef SQC2_STEP
#undef SQC2_END_ITEM
#undef SQC2_LOAD
}

/* prefill on the compact layout: as k_sq_pre */
template <bool S16>
__global__ void __launch_bounds__(256, 1) k_sqc_pre(MmArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const long tile = (long)blockIdx.y * a.tpb + warp, tok0 = (long)blockIdx.x * 128;
    const unsigned ng = (unsigned)a.ngroups;
    if (tile >= a.ntiles) return;
    const uint4 *xb = a.xf + (tok0 >> 3) * a.nsub * 32 + lane;
    const long xst = a.nsub * 32;
    RawC<S16> c0, c1;
    const LanePtrC lp = lane_ptrs_c<S16>(a.w, lane);
    const unsigned i0 = (unsigned)(tile * ng);
    load_unit_c<S16>(c0, lp, i0);
    float acc[16][4];
#pragma unroll
    for (int t = 0; t < 16; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    const uint4 z = make_uint4(0, 0, 0, 0);
    for (unsigned grp = 0; grp < ng; grp++) {
        if (grp + 1 < ng) load_unit_c<S16>(c1, lp, i0 + grp + 1);
        do_group_c<16, S16, false, false>(acc, c0, xb + grp * 32, xst, 0xFFFFu, z, lane);
        c0 = c1;
    }
    store_y(acc, a, tile, tok0, lane);
}

/* ---- host side ------------------------------------------------------------------------- */

template <int NT, bool S16, int DEPTH, int MINB>
static int launch_decode_c(const kc_sq *w, MmArgs a) {
    static int occ;
    return kc_sk_launch<NT>(k_sqc_dec<NT, S16, DEPTH, MINB>, &occ, "k_sqc_dec", w, a, 0);
}

/* decode variants for M <= 16, for measurements (KC_SQ_DEC in the environment):
 * 0 one unit a step, 2 ahead; 1 the same, 3 ahead; 2 one ahead at 5 blocks/SM;
 * 3 two units a step (k_sqc_dec2), 3 blocks/SM; 4 the same at 4 (spills).
 * Unset: 3 for half scales, 0 for float scales (the faster of each on the
 * H200, 2026-12-02: docs/perf-gpu.md). */
static int g_dec_variant = -2;

template <int NT, bool S16, int MINB>
static int launch_decode_c2(const kc_sq *w, MmArgs a) {
    static int occ;
    return kc_sk_launch<NT>(k_sqc_dec2<NT, S16, MINB>, &occ, "k_sqc_dec2", w, a, 0);
}

template <bool S16>
static int dispatch_c(const kc_sq *w, const MmArgs &a) {
    if (g_dec_variant == -2) {
        const char *e = getenv("KC_SQ_DEC");
        g_dec_variant = e ? atoi(e) : -1;
    }
    const int v = g_dec_variant >= 0 ? g_dec_variant : S16 ? 3 : 0;
    if (v == 3 || v == 4) { /* two units per step */
        if (a.m <= 8) return v == 3 ? launch_decode_c2<1, S16, 3>(w, a) : launch_decode_c2<1, S16, 4>(w, a);
        if (a.m <= 16) return launch_decode_c2<2, S16, 3>(w, a);
    }
    if (a.m <= 8) {
        if (v == 1) return launch_decode_c<1, S16, 3, 4>(w, a);
        if (v == 2) return launch_decode_c<1, S16, 1, 5>(w, a);
        return launch_decode_c<1, S16, 2, 4>(w, a);
    }
    if (a.m <= 16) return launch_decode_c<2, S16, 2, 4>(w, a);
    if (a.m <= 32) return launch_decode_c<4, S16, 1, 3>(w, a);
    return launch_decode_c<8, S16, 1, 2>(w, a);
}

template <bool S16>
static int launch_prefill_c(const kc_sq *w, MmArgs a) {
    dim3 grid;
    if (kc_sq_frag_acts(w, &a, &grid)) return -1;
    k_sqc_pre<S16><<<grid, a.tpb * 32, 0, KC_STREAM>>>(a);
    return kc_check_launch("k_sqc_pre");
}

int kc_sqc_matmul(const kc_sq *w, const MmArgs &a) {
    if (a.m > 64) return w->s16 ? launch_prefill_c<true>(w, a) : launch_prefill_c<false>(w, a);
    return w->s16 ? dispatch_c<true>(w, a) : dispatch_c<false>(w, a);
}
