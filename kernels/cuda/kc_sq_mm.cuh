/* kc_sq_mm.cuh - what the two SQ x INT8 matmul files share: kc_sq_mm.cu
 * (the explicit slot layout, the host dispatch) and kc_sqc_mm.cu (the
 * compact layout's kernels). Both layouts' decode kernels are stream-k over
 * (tile, group) items with the same bookkeeping, finish a split tile the
 * same way, and store through store_y (which also routes fused parts); the
 * prefill kernels read the activations in fragment order (k_frag_x).
 */
#ifndef KC_SQ_MM_CUH
#define KC_SQ_MM_CUH

#include "kc_sk_plan.h"
#include "kc_sq_frag.cuh"

template <int NT>
__device__ __forceinline__ void store_y(const float (&v)[NT][4], const MmArgs &a, long tile, long tok0, int lane) {
    const int g = lane >> 2, tig = lane & 3;
    long n, r0; /* (the tile lies in one part: parts but the last are whole tiles) */
    float *y = y_route(a, tile * 16, &n, &r0);
    const long nvalid = n - r0;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const long rr = g + 8 * (e >> 1), tok = tok0 + t * 8 + 2 * tig + (e & 1);
            if (rr < nvalid && tok < a.m) y[tok * n + r0 + rr] = v[t][e] * __ldg(a.sx + tok);
        }
}

/* the INT32 sums of a tile's rows g, g + 8 as floats times their row scales
 * (integer bank scales: y = (s_row x acc) x sx, sx applied by store_y) */
template <int NT>
__device__ __forceinline__ void is_to_float(const int (&iacc)[NT][4], float (&acc)[NT][4], const MmArgs &a, long tile,
                                            int lane) {
    const long r0 = tile * 16 + (lane >> 2), r1 = r0 + 8;
    const float s0 = r0 < a.n ? __ldg(a.rs + r0) : 0.0f, s1 = r1 < a.n ? __ldg(a.rs + r1) : 0.0f;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[t][e] = (e < 2 ? s0 : s1) * __int2float_rn(iacc[t][e]);
}

/* A warp finished its part [ts, te) of `tile` (stream-k: warp w holds
 * kc_sk_plan.h's run w of the U items over the W warps): a whole tile is
 * stored; a part goes to the warp's partial slot, and the last of the tile's
 * contributors to arrive adds all parts in warp order (deterministic) and
 * stores the tile. */
template <int NT>
__device__ __forceinline__ void sk_flush(float (&acc)[NT][4], const MmArgs &a, long tile, long ts, long te, long w,
                                         int lane) {
    const long ng = a.ngroups, U = a.ntiles * ng, W = a.nw;
    if (ts == tile * ng && te == (tile + 1) * ng) {
        store_y(acc, a, tile, a.tok0, lane);
        return;
    }
    float *p = a.part + (size_t)(2 * w + sk_slot(w, tile * ng, U, W)) * (NT * 128);
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) __stcg(p + (t * 4 + e) * 32 + lane, acc[t][e]);
    __threadfence();
    __syncwarp();
    const long wf = sk_run_of(tile * ng, U, W), wl = sk_run_of((tile + 1) * ng - 1, U, W);
    int last = 0;
    if (lane == 0) last = atomicAdd(a.cnt + tile, 1) == (int)(wl - wf);
    last = __shfl_sync(0xffffffffu, last, 0);
    if (!last) return;
    __threadfence();
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    for (long q = wf; q <= wl; q++) { /* own part included, read back: the same order whoever is last */
        const float *o = a.part + (size_t)(2 * q + sk_slot(q, tile * ng, U, W)) * (NT * 128);
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[t][e] += __ldcg(o + (t * 4 + e) * 32 + lane);
    }
    if (lane == 0) a.cnt[tile] = 0; /* ready for the next launch */
    store_y(acc, a, tile, a.tok0, lane);
}

/* A decode warp's share of the stream-k items, [i0, i1) of the matrix's
 * (tile, group) items, and its activation row: token tok0 + g of n-tile 0
 * at columns 16 tig.., n-tile t valid where bit t of tvalid is set; with
 * the groups a row (ng) and the stride between 8-token blocks in 16-byte
 * units (xst). Each decode kernel binds it in one line, const auto [w, i0,
 * i1, tvalid, xrow, ng, xst]. sk_warp false: the warp has nothing to do. */
struct SkWarp {
    long w;
    unsigned i0, i1;
    uint32_t tvalid;
    const uint4 *xrow;
    unsigned ng;
    long xst;
};

template <int NT>
__device__ __forceinline__ bool sk_warp(const MmArgs &a, int lane, int warp, SkWarp &s) {
    const long W = a.nw;
    s.w = (long)blockIdx.x * 4 + warp;
    if (s.w >= W) return false;
    const unsigned U = (unsigned)(a.ntiles * a.ngroups);
    s.i0 = (unsigned)(s.w * U / W), s.i1 = (unsigned)((s.w + 1) * U / W);
    if (s.i0 >= s.i1) return false;
    const int g = lane >> 2, tig = lane & 3;
    s.tvalid = 0;
#pragma unroll
    for (int t = 0; t < NT; t++) s.tvalid |= (a.tok0 + t * 8 + g < a.m ? 1u : 0u) << t;
    s.xrow = (const uint4 *)(a.qx + (s.tvalid ? (a.tok0 + g) * a.k : 0) + 16 * tig);
    s.ng = (unsigned)a.ngroups, s.xst = a.k / 2;
    return true;
}

/* ---- host side ------------------------------------------------------------------------- */

/* the stream-k scratch for a launch of W warps (part_bytes of partial sums)
 * over ntiles tiles: sets a->part and a->cnt (kc_sq_mm.cu) */
int kc_sk_scratch(size_t part_bytes, long ntiles, MmArgs *a);

/* One decode launch of a stream-k kernel: one full wave of warps (4 a
 * block, *occ blocks an SM, found once per kernel, with smem bytes of
 * dynamic shared memory a block), each at least 4 groups long; beyond NT x
 * 8 tokens (generic shapes) in chunks. */
template <int NT>
int kc_sk_launch(void (*kern)(MmArgs), int *occ, const char *name, const kc_sq *w, MmArgs a, size_t smem) {
    if (!*occ && ((smem > 48 * 1024 &&
                   kc_check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                            "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)")) ||
                  kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(occ, kern, 128, smem),
                           "cudaOccupancyMaxActiveBlocksPerMultiprocessor") ||
                  *occ < 1))
        return -1;
    const long U = w->ntiles * w->ngroups;
    long W = (long)kc_sm_count() * *occ * 4;
    if (W > (U + 3) / 4) W = (U + 3) / 4;
    if (W < 1) W = 1;
    if (kc_sk_scratch((size_t)W * 2 * NT * 128 * sizeof(float), w->ntiles, &a)) return -1;
    a.nw = W;
    for (long t0 = 0; t0 < a.m; t0 += NT * 8) {
        a.tok0 = t0;
        kern<<<(unsigned)((W + 3) / 4), 128, smem, KC_STREAM>>>(a);
        if (kc_check_launch(name)) return -1;
    }
    return 0;
}

/* The activations of a prefill launch in fragment order (k_frag_x, into a
 * scratch that grows and is never freed: graphs may hold it), and the
 * launch's shape: a->xf, a->tok0, a->tpb and the grid (kc_sq_mm.cu). */
int kc_sq_frag_acts(const kc_sq *w, MmArgs *a, dim3 *grid);

/* the compact layout's matmul for more than the dp4a kernel's tokens
 * (kc_sqc_mm.cu) */
int kc_sqc_matmul(const kc_sq *w, const MmArgs &a);

/* integer bank scales on Hopper's wgmma, the weights decoded in registers
 * (kc_sq_wg.cu): where it applies (the matrix, the tokens, the device) */
extern "C" int kc_sq_wg_applies(const kc_sq *w, long m);
int kc_sq_wg(const kc_sq *w, const MmArgs &a);

#endif
