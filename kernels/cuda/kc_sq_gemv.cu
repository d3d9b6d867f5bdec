/* kc_sq_gemv.cu - the SQ x INT8 matmul for one to four tokens on the CUDA
 * cores (dp4a), reading the explicit fast layout of kc_sq.cuh.
 *
 * Why. Batch-1 decode reads every weight once per token: it is a
 * bandwidth problem, and the kernel's job is to keep enough bytes in flight
 * and spend few instructions per byte. The stream-k mma kernels of
 * kc_sq_mm.cu (k_sq_dec) run a 16 x 64 unit through six chained
 * m16n8k32 mma for a single token (7/8 of each wasted), scatter the highs
 * through shared memory, and at ~106 registers keep only 3-4 warps per
 * scheduler with two units in flight: Nsight Compute put them at 21-59 %
 * of copy bandwidth on the 8B shapes at M = 1 (docs/perf-gpu.md). Here a
 * unit costs a warp ~150 instructions at M = 1 (Nsight Compute; ~130 of
 * them arithmetic):
 *   low part   the lane's 16 bytes of nibbles (rows g and g + 8, columns
 *              16 t .. 16 t + 15 of the unit: the fragment map of
 *              kc_sq_frag.cuh) are unpacked with one AND (and a shift) per
 *              four codes and multiplied by the activations with dp4a
 *              (unsigned offset-binary codes x signed INT8), starting from
 *              -8 x the activations' sum (kept per 16 columns in shared
 *              memory). The four lanes of a quad add their parts with two
 *              shuffles per row.
 *   high part  the explicit layout gives every high code with its byte
 *              offset in the mma scatter tile (slot_off); the column comes
 *              back out of the offset with a few bit operations for four
 *              highs at once, the four activations are gathered from shared
 *              memory into one word and one dp4a multiplies them. Lanes 2r
 *              and 2r + 1 hold row r's highs: one shuffle adds them, two
 *              more bring rows g and g + 8 to quad g.
 *   combine    per (row, unit): acc += s_lo * lo + s_hi * hi in float, from
 *              EXACT integer group sums.
 * Work split. Persistent blocks (as many as fit at once, at most one per
 * tile) walk the 16-row tiles b, b + grid, ...; a block's warps split k
 * into contiguous ranges of units, the same for every tile, so each warp
 * copies its range of the activations into shared memory once, and its
 * units form one stream over all its tiles, loaded GEMV_DEPTH units ahead
 * across tile boundaries. Each warp leaves one partial sum per row in
 * shared memory (two buffers, one barrier per tile); the block adds them
 * in warp order and stores the tile. Results are deterministic; the float
 * summation differs from k_sq_combine's only by the split of k (the error
 * bound of kc_sq.cuh holds). The warp count per block comes from a cost
 * model (gemv_config): rounds of tiles x units per warp and tile.
 * M = 2..4 run the same kernel with the per-token work repeated; on the
 * H200 they lose to k_sq_dec on the larger shapes, so by default only
 * M = 1 comes here.
 *
 * When. kc_sq_matmul takes this path for m <= kc_sq_gemv_max() tokens
 * (KC_SQ_GEMV overrides the limit, 0 turns the path off) on the explicit
 * fast layout (4-bit storage, b <= 64, <= 8 highs per row and 64 columns).
 */
#include "kc_sq_frag.cuh"

#include <stdlib.h>

#define GEMV_DEPTH 3   /* units in flight per warp */
#define GEMV_MAXW 16   /* warps per block, at most */

__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) { /* unsigned a x signed b bytes */
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

__device__ __forceinline__ uint32_t lds_u8(uint32_t a) {
    uint32_t v;
    asm volatile("ld.shared.u8 %0, [%1];" : "=r"(v) : "r"(a));
    return v;
}
__device__ __forceinline__ int lds_s32(uint32_t a) {
    int v;
    asm volatile("ld.shared.s32 %0, [%1];" : "=r"(v) : "r"(a));
    return v;
}
__device__ __forceinline__ uint4 lds_v4(uint32_t a) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
    return v;
}

/* Shared memory of a block: per token, the k activation bytes, then per
 * token and 16-column chunk 8 x the chunk's activation sum (the offset of
 * the low codes), then the warps' partial sums, two buffers. */
struct GemvSmem {
    uint32_t x, off, red; /* shared-space addresses */
};

/* One unit (16 rows x 64 columns) against NT tokens. xa / oa: the unit's
 * activations / chunk sums of token 0 (token t at + t * k / + t * k / 4). */
template <int NT, bool S16>
__device__ __forceinline__ void gemv_unit(float (&ag)[NT], float (&a8)[NT], const Raw<4, 4, S16> &u, uint32_t xa,
                                          uint32_t oa, uint32_t k, int lane) {
    const int g = lane >> 2, tig = lane & 3;
    const uint32_t M = 0x0F0F0F0Fu;
    const uint32_t w0 = u.lo[0], w1 = u.lo[1], w2 = u.lo[2], w3 = u.lo[3];
    const uint32_t ug0 = w0 & M, ug1 = (w0 >> 4) & M, ug2 = w2 & M, ug3 = (w2 >> 4) & M;
    const uint32_t u80 = w1 & M, u81 = (w1 >> 4) & M, u82 = w3 & M, u83 = (w3 >> 4) & M;
    /* the lane's row r = lane >> 1: four high codes and their columns
     * (slot_off of kc_sq.cuh inverted, four bytes at once) */
    const uint32_t cv = u.sl[0], P = u.sl[1];
    const uint32_t C = (P & 0x33333333u) | ((P >> 4) & 0x08080808u) | ((P >> 1) & 0x04040404u);
    const uint32_t c0 = __byte_perm(C, 0, 0x4440), c1 = __byte_perm(C, 0, 0x4441);
    const uint32_t c2 = __byte_perm(C, 0, 0x4442), c3 = __byte_perm(C, 0, 0x4443);
    float slg, shg, sl8, sh8;
    if (S16) {
        const float2 fg = __half22float2(*(const __half2 *)&u.sc[0]), f8 = __half22float2(*(const __half2 *)&u.sc[1]);
        slg = fg.x, shg = fg.y, sl8 = f8.x, sh8 = f8.y;
    } else {
        slg = __uint_as_float(u.sc[0]), shg = __uint_as_float(u.sc[1]);
        sl8 = __uint_as_float(u.sc[2]), sh8 = __uint_as_float(u.sc[3]);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const uint32_t xt = xa + t * k;
        const uint4 X = lds_v4(xt + 16 * tig);
        const int off = lds_s32(oa + t * (k >> 2) + 4 * tig);
        int lg = dp4a_us(ug0, X.x, dp4a_us(ug1, X.y, dp4a_us(ug2, X.z, dp4a_us(ug3, X.w, -off))));
        int l8 = dp4a_us(u80, X.x, dp4a_us(u81, X.y, dp4a_us(u82, X.z, dp4a_us(u83, X.w, -off))));
        lg += __shfl_xor_sync(0xffffffffu, lg, 1);
        l8 += __shfl_xor_sync(0xffffffffu, l8, 1);
        lg += __shfl_xor_sync(0xffffffffu, lg, 2);
        l8 += __shfl_xor_sync(0xffffffffu, l8, 2);
        const uint32_t xg = __byte_perm(__byte_perm(lds_u8(xt + c0), lds_u8(xt + c1), 0x0040),
                                        __byte_perm(lds_u8(xt + c2), lds_u8(xt + c3), 0x0040), 0x5410);
        int hs = __dp4a((int)cv, (int)xg, 0);
        hs += __shfl_xor_sync(0xffffffffu, hs, 1);
        const int hg = __shfl_sync(0xffffffffu, hs, 2 * g), h8 = __shfl_sync(0xffffffffu, hs, 2 * g + 16);
        ag[t] = fmaf(slg, __int2float_rn(lg), ag[t]);
        ag[t] = fmaf(shg, __int2float_rn(hg), ag[t]);
        a8[t] = fmaf(sl8, __int2float_rn(l8), a8[t]);
        a8[t] = fmaf(sh8, __int2float_rn(h8), a8[t]);
    }
}

/* The warps' partial sums of one tile are added in warp order and stored
 * (lane (g, 0) of every warp left row g, lane (g, 1) row g + 8). */
template <int NT>
__device__ __forceinline__ void gemv_flush(const float (&ag)[NT], const float (&a8)[NT], const MmArgs &a, float *red,
                                        long tile, int warp, int nw, int lane) {
    const int g = lane >> 2, tig = lane & 3;
    if (tig < 2)
#pragma unroll
        for (int t = 0; t < NT; t++) red[(warp * NT + t) * 16 + g + 8 * tig] = tig ? a8[t] : ag[t];
    __syncthreads();
    for (int e = threadIdx.x; e < NT * 16; e += blockDim.x) { /* a block may have fewer threads than outputs */
        const int row = e & 15, t = e >> 4;
        const long tok = a.tok0 + t;
        float v = 0.0f;
        for (int q = 0; q < nw; q++) v += red[(q * NT + t) * 16 + row];
        float *y = a.y;
        long ny = a.n, r0 = tile * 16;
        if (a.np > 1) { /* the tile lies in one part (parts but the last are whole tiles) */
            int p = 0;
            while (p + 1 < a.np && r0 >= a.pstart[p + 1]) p++;
            y = a.py[p], ny = a.pstart[p + 1] - a.pstart[p], r0 -= a.pstart[p];
        }
        if (r0 + row < ny && tok < a.m) {
            /* the product rounded, then the add rounded: the numbers of a separate kc_add */
            float *o = y + tok * ny + r0 + row;
            const float p = __fmul_rn(v, __ldg(a.sx + tok));
            *o = a.acc ? __fadd_rn(*o, p) : p;
        }
    }
}

/* Persistent blocks: block b takes tiles b, b + gridDim.x, ...; its warps
 * split k (warp w owns subgroups [s0, s1), the same for every tile), so
 * each warp copies its activations into shared memory once, and its units
 * form one stream over all its tiles, loaded GEMV_DEPTH units ahead across
 * tile boundaries. One barrier per tile (double-buffered partial sums). */
template <int NT, bool S16>
__global__ void __launch_bounds__(GEMV_MAXW * 32, NT == 1 ? 2 : 1) k_sq_gemv(MmArgs a) {
    extern __shared__ __align__(16) uint8_t smem[];
    typedef UG<4, 4, S16> G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const uint32_t k = (uint32_t)a.k, nsub = (uint32_t)a.nsub;
    const uint32_t s0 = warp * nsub / nw, s1 = (warp + 1) * nsub / nw, n = s1 - s0;
    const uint32_t sx = (uint32_t)__cvta_generic_to_shared(smem), so = sx + NT * k;
    float *red = (float *)(smem + NT * k + NT * k / 4);
    const long ntiles = a.ntiles, tile0 = blockIdx.x, tstep = gridDim.x;
    const uint32_t ntl = (uint32_t)((ntiles - tile0 + tstep - 1) / tstep); /* tiles of this block */
    const uint32_t total = n * ntl;
    /* the weight stream: unit index of the next load, steps into the tile */
    const LanePtr lp = lane_ptrs<4, 4, S16>(a, lane);
    const uint32_t jump = (uint32_t)(tstep * nsub - n + 1);
    uint32_t lu = (uint32_t)(tile0 * nsub + s0), lstep = 0;
    Raw<4, 4, S16> r[GEMV_DEPTH];
#pragma unroll
    for (int i = 0; i < GEMV_DEPTH; i++)
        if (i < (int)total) {
            load_unit<4, 4, S16>(r[i], lp, lu, G::ub);
            lu += ++lstep == n ? (lstep = 0, jump) : 1;
        }
    /* the weights do not depend on the kernel before (kc_launch_pdl): their
     * first loads are in flight while it finishes; its output is read from here */
    kc_pdl_wait();
    kc_pdl_trigger();
    /* the warp's range of every token's activations (zero past m) and the
     * chunk sums of the code offset */
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
    float ag[NT], a8[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) ag[t] = a8[t] = 0.0f;
    uint32_t cstep = 0, buf = 0;
    long tile = tile0;
    for (uint32_t i = 0; i < total; i += GEMV_DEPTH) {
#pragma unroll
        for (int j = 0; j < GEMV_DEPTH; j++) {
            if (i + j < total) {
                const Raw<4, 4, S16> cur = r[j];
                if (i + j + GEMV_DEPTH < total) {
                    load_unit<4, 4, S16>(r[j], lp, lu, G::ub);
                    lu += ++lstep == n ? (lstep = 0, jump) : 1;
                }
                const uint32_t sub = s0 + cstep;
                gemv_unit<NT, S16>(ag, a8, cur, sx + sub * 64, so + sub * 16, k, lane);
                if (++cstep == n) {
                    gemv_flush<NT>(ag, a8, a, red + buf * (GEMV_MAXW * NT * 16), tile, warp, nw, lane);
#pragma unroll
                    for (int t = 0; t < NT; t++) ag[t] = a8[t] = 0.0f;
                    cstep = 0, buf ^= 1, tile += tstep;
                }
            }
        }
    }
}

/* ---- host side ------------------------------------------------------------------------- */

/* The largest m this path takes. Default from bench_gemm on the H200
 * (docs/perf-gpu.md: where the dp4a kernel stops beating k_sq_dec). */
static int g_max_m = -1;

extern "C" void kc_sq_set_gemv_max(int m) { g_max_m = m < 0 ? -1 : m > 4 ? 4 : m; }

extern "C" int kc_sq_gemv_max(void) {
    if (g_max_m < 0) {
        const char *e = getenv("KC_SQ_GEMV");
        const int v = e && *e ? atoi(e) : 1;
        g_max_m = v < 0 ? 0 : v > 4 ? 4 : v;
    }
    return g_max_m;
}

extern "C" int kc_sq_gemv_applies(const kc_sq *w, long m) { return is_fast(w) && m >= 1 && m <= kc_sq_gemv_max(); }

static size_t gemv_smem(long k, int nt) { /* activations, chunk sums, 2 x partial sums */
    return (size_t)nt * k + (size_t)nt * k / 4 + 2 * (size_t)GEMV_MAXW * nt * 16 * sizeof(float);
}

/* Warps per block and blocks: a block's time is (its tiles) x (its warps'
 * units per tile), so pick the warp count that minimises
 * ceil(tiles / resident blocks) x ceil(units / warps). */
template <int NT, bool S16>
static int gemv_config(const kc_sq *w, size_t sm, int *nw_out, long *grid_out) {
    static int occ[GEMV_MAXW + 1];
    long best = -1;
    double best_bal = 0;
    for (int nw = 1; nw <= GEMV_MAXW && nw <= w->nsub; nw *= 2) { /* every warp >= 1 unit a tile */
        if (!occ[nw] && (kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[nw], k_sq_gemv<NT, S16>,
                                                                                  nw * 32, sm),
                                  "cudaOccupancyMaxActiveBlocksPerMultiprocessor(k_sq_gemv)") ||
                         occ[nw] < 1))
            return -1;
        const long cap = (long)occ[nw] * kc_sm_count(), grid = w->ntiles < cap ? w->ntiles : cap;
        const long waves = (w->ntiles + grid - 1) / grid, cost = waves * ((w->nsub + nw - 1) / nw);
        /* equal cost: the better balanced (a last round of tiles on few blocks leaves the rest idle) */
        const double bal = (double)w->ntiles / ((double)grid * waves);
        if (best < 0 || cost < best || (cost == best && bal >= best_bal))
            best = cost, best_bal = bal, *nw_out = nw, *grid_out = grid;
    }
    return 0;
}

template <int NT, bool S16>
static int launch_gemv(const kc_sq *w, MmArgs a) {
    const size_t sm = gemv_smem(w->k, NT);
    static size_t opted; /* dynamic shared memory this instance is allowed */
    if (sm > 48 * 1024 && sm > opted) {
        if (kc_check(cudaFuncSetAttribute(k_sq_gemv<NT, S16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm),
                     "cudaFuncSetAttribute(k_sq_gemv)"))
            return -1;
        opted = sm;
    }
    int nw = 4;
    long grid = 1;
    if (gemv_config<NT, S16>(w, sm, &nw, &grid)) return -1;
    for (long t0 = 0; t0 < a.m; t0 += NT) {
        a.tok0 = t0;
        if (kc_launch_pdl("k_sq_gemv", k_sq_gemv<NT, S16>, (unsigned)grid, nw * 32, sm, a)) return -1;
    }
    return 0;
}

extern "C" int kc_sq_gemv(const kc_sq *w, const MmArgs *a) {
    if (a->m == 1) return w->s16 ? launch_gemv<1, true>(w, *a) : launch_gemv<1, false>(w, *a);
    if (a->m == 2) return w->s16 ? launch_gemv<2, true>(w, *a) : launch_gemv<2, false>(w, *a);
    return w->s16 ? launch_gemv<4, true>(w, *a) : launch_gemv<4, false>(w, *a);
}
