/* kc_sq_gemv.cu - the SQ x INT8 matmul for one to four tokens on the CUDA
 * cores (dp4a), reading the compact or the explicit fast layout of kc_sq.cuh.
 *
 * Why. Batch-1 decode reads every weight once per token: it is a
 * bandwidth problem, and the kernel's job is to keep enough bytes in flight
 * and spend few instructions per byte. The stream-k mma kernels of
 * kc_sq_mm.cu (k_sq_dec) run a 16 x 64 unit through six chained
 * m16n8k32 mma for a single token (7/8 of each wasted), scatter the highs
 * through shared memory, and at ~106 registers keep only 3-4 warps per
 * scheduler with two units in flight: Nsight Compute put them at 21-59 %
 * of copy bandwidth on the 8B shapes at M = 1 (docs/perf-gpu.md). Here a
 * unit costs a warp 98 SASS instructions at M = 1 on the explicit layout
 * with the weights in registers, 121 staged through shared memory (the
 * cp.async copies included; cuobjdump of the loops, against 142 before the
 * changes marked * below):
 *   low part   the lane's 16 bytes of nibbles (rows g and g + 8, columns
 *              16 t .. 16 t + 15 of the unit: the fragment map of
 *              kc_sq_frag.cuh) are unpacked with one AND (and a shift) per
 *              four codes and multiplied by the activations with dp4a
 *              (unsigned offset-binary codes x signed INT8), starting from
 *              -8 x the activations' sum (kept per 16 columns in shared
 *              memory).
 *   high part  the explicit layout gives every high code with its byte
 *              offset in the mma scatter tile (slot_off); the column comes
 *              back out of the offset with a few bit operations for four
 *              highs at once, the four activations are gathered from shared
 *              memory into one word and one dp4a multiplies them. Lanes 2r
 *              and 2r + 1 hold row r's highs.
 *   combine *  each lane's integer sums are exact; the lane multiplies them
 *              by their scales and keeps float sums of its own across the
 *              warp's units of a tile (rows g and g + 8, and the high part
 *              of row lane >> 1 with that row's high scale, one more 2-byte
 *              load). The lanes of a row are added once a tile, not once a
 *              unit: no shuffles per unit (there were seven).
 *   stream  *  by default (k_sq_gemv_st) each warp copies its units with
 *              cp.async into a ring of GEMV_STAGES in shared memory, so six
 *              are in flight without costing registers; k_sq_gemv
 *              (KC_SQ_GEMV_STAGE=0) holds them in registers instead: the
 *              lane's addresses advanced, not recomputed from the unit
 *              index, and the units in flight rotating through
 *              gemv_depth() + 1 register sets by index, none copied.
 * Work split. Persistent blocks (as many as fit at once, at most one per
 * tile) walk the 16-row tiles b, b + grid, ...; a block's warps split k
 * into contiguous ranges of units, the same for every tile, so each warp
 * copies its range of the activations into shared memory once, and its
 * units form one stream over all its tiles, loaded ahead across tile
 * boundaries (GEMV_STAGES units staged, or gemv_depth() in registers). Each warp leaves one partial sum per row in
 * shared memory (two buffers, one barrier per tile); the block adds them
 * in warp order and stores the tile. Results are deterministic; the float
 * summation differs from k_sq_combine's by the split of k and of each
 * group over lanes (a few more roundings, far inside the bound
 * test_kc_sq holds every SQ kernel to: (2 groups + 4) float roundings of
 * the sum of |scale x group sum|). The warp count per block comes from a cost
 * model (gemv_config): rounds of tiles x units per warp and tile.
 * M = 2..4 run the same kernel with the per-token work repeated. On the
 * H200 the staged kernel beats k_sq_dec at M = 2 on every 8B and 70B
 * shape (decode at batch 2: 1.26x on 8B, 1.17x on 70B) and loses at M = 4
 * on the larger ones (70B batch 4: 0.90x), so by default M = 1 and 2 come
 * here (docs/perf-gpu.md, ninth session).
 * The compact layout (kc_sq.cuh: the mask implicit in a reserved low code,
 * 5.5 bits per weight with half scales against 6.5) runs through the same
 * kernel with its own unit decoding (gemv_unit_c): frag_compact turns the
 * lane's words into low codes (code 0 at the high positions) and high codes
 * in the same byte positions, so the high part is four more dp4a against
 * the activation bytes the low part already loaded: no gather from shared
 * memory, no column arithmetic, 704 bytes a unit instead of 832.
 *
 * Epilogues. Besides the store (and the residual add, a.acc), the kernel
 * can finish the operation that follows it where every block can do its
 * own share with no block waiting for another (a norm's row reduction
 * cannot: two placements of it were measured slower and backed out, see
 * docs/perf-gpu.md): RoPE and the K/V store after q/k/v (a.rope), and
 * SwiGLU split over the gate/up and down matmuls (a.sw, the staged kernel's
 * template mode SW): the gate/up blocks take a gate tile and its up tile in
 * turn and write h = silu(g) u with a max |h| per block, and the down
 * blocks quantize h as they copy it, at the max of those maxima.
 *
 * When. kc_sq_matmul takes this path for m <= kc_sq_gemv_max() tokens
 * (KC_SQ_GEMV overrides the limit, 0 turns the path off) on the compact
 * layout and the explicit fast one (4-bit storage, b <= 64, <= 8 highs per
 * row and 64 columns).
 */
#include "kc_sq_gemv_ep.cuh"

#include <stdlib.h>
#include <string.h>

/* Units in flight per warp (k_sq_gemv): 2 for one token on the explicit
 * layout, whose 64 registers (two blocks of 512 threads an SM) hold three
 * units' words without spilling or recomputing addresses (a third unit in
 * flight spills: ptxas -v); 3 where the register budget is larger. Two
 * units of 832 bytes a warp are ~53 KB in flight an SM, above the ~32 KB
 * that the H200's bandwidth x latency asks for. (Four units a warp at
 * up to 128 registers, half the warps an SM, took 6-35 % longer on every
 * shape: docs/perf-gpu.md, ninth session.) */
template <int NT, bool C>
__host__ __device__ constexpr int gemv_depth() { return NT == 1 && !C ? 2 : 3; }
#define GEMV_MAXW 16   /* warps per block, at most */
#define GEMV_STAGES 6  /* units in flight per warp, staged in shared memory (k_sq_gemv_st) */


/* Shared memory of a block: per token, the k activation bytes, then per
 * token and 16-column chunk 8 x the chunk's activation sum (the offset of
 * the low codes), then the warps' partial sums, two buffers. */
struct GemvSmem {
    uint32_t x, off, red; /* shared-space addresses */
};

/* The unit's scales of rows g and g + 8: (s_lo g, s_hi g, s_lo g + 8, s_hi g + 8) */
template <bool S16>
__device__ __forceinline__ float4 unit_scales(const uint32_t *sc) {
    if (S16) {
        const float2 fg = __half22float2(*(const __half2 *)&sc[0]), f8 = __half22float2(*(const __half2 *)&sc[1]);
        return make_float4(fg.x, fg.y, f8.x, f8.y);
    }
    return make_float4(__uint_as_float(sc[0]), __uint_as_float(sc[1]), __uint_as_float(sc[2]), __uint_as_float(sc[3]));
}

/* One unit (16 rows x 64 columns) against NT tokens. xa / oa: the unit's
 * activations / chunk sums of token 0 (token t at + t * k / + t * k / 4).
 * Every lane keeps its own partial sums in float across the warp's units
 * of a tile (rows g and g + 8 of its 16 columns: ag, a8; the high part of
 * row lane >> 1: ah, with that row's high scale sh) and the lanes of a
 * row are added once a tile (gemv_flush), not once a unit: each lane's
 * integer sum is exact, and a unit costs no shuffles. */
template <int NT, bool S16>
__device__ __forceinline__ void gemv_unit(float (&ag)[NT], float (&a8)[NT], float (&ah)[NT], const Raw<4, 4, S16> &u,
                                          uint32_t sh, uint32_t xa, uint32_t oa, uint32_t k, int lane) {
    const int tig = lane & 3;
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
    const float4 S = unit_scales<S16>(u.sc);
    const float s_h = S16 ? half_hi(sh) : __uint_as_float(sh);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const uint32_t xt = xa + t * k;
        const uint4 X = lds_v4(xt + 16 * tig);
        const int off = lds_s32(oa + t * (k >> 2) + 4 * tig);
        const int lg = dp4a_us(ug0, X.x, dp4a_us(ug1, X.y, dp4a_us(ug2, X.z, dp4a_us(ug3, X.w, -off))));
        const int l8 = dp4a_us(u80, X.x, dp4a_us(u81, X.y, dp4a_us(u82, X.z, dp4a_us(u83, X.w, -off))));
        const uint32_t xg = __byte_perm(__byte_perm(lds_u8(xt + c0), lds_u8(xt + c1), 0x0040),
                                        __byte_perm(lds_u8(xt + c2), lds_u8(xt + c3), 0x0040), 0x5410);
        const int hs = __dp4a((int)cv, (int)xg, 0);
        ag[t] = fmaf(S.x, __int2float_rn(lg), ag[t]);
        a8[t] = fmaf(S.z, __int2float_rn(l8), a8[t]);
        ah[t] = fmaf(s_h, __int2float_rn(hs), ah[t]);
    }
}

/* The same for a unit of the compact layout (kc_sq.cuh): frag_compact
 * (kc_sq_frag.cuh) gives the lane's low codes with the high positions set
 * to code 0 and its high codes in the same byte positions (zero where low),
 * so both parts are four dp4a against the same 16 activation bytes, and the
 * high part needs no gather from shared memory. Both parts of rows g and
 * g + 8 go into the lane's ag / a8 (ah stays zero). */
template <int NT, bool S16>
__device__ __forceinline__ void gemv_unit_c(float (&ag)[NT], float (&a8)[NT], const RawC<S16> &u, uint32_t xa,
                                            uint32_t oa, uint32_t k, int lane) {
    const int tig = lane & 3;
    uint32_t Alo[8], Ahi[8];
    frag_compact<false, S16>(u, Alo, Ahi, tig);
    const float4 S = unit_scales<S16>(u.sc);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const uint32_t xt = xa + t * k;
        const uint4 X = lds_v4(xt + 16 * tig);
        const int off = lds_s32(oa + t * (k >> 2) + 4 * tig);
        /* register A[kc * 4 + r]: row g + 8 (r & 1), columns 16 t + 8 kc + 4 (r >> 1) + 0..3 */
        const int lg = dp4a_us(Alo[0], X.x, dp4a_us(Alo[2], X.y, dp4a_us(Alo[4], X.z, dp4a_us(Alo[6], X.w, -off))));
        const int l8 = dp4a_us(Alo[1], X.x, dp4a_us(Alo[3], X.y, dp4a_us(Alo[5], X.z, dp4a_us(Alo[7], X.w, -off))));
        const int hg = __dp4a((int)Ahi[0], (int)X.x, __dp4a((int)Ahi[2], (int)X.y,
                              __dp4a((int)Ahi[4], (int)X.z, __dp4a((int)Ahi[6], (int)X.w, 0))));
        const int h8 = __dp4a((int)Ahi[1], (int)X.x, __dp4a((int)Ahi[3], (int)X.y,
                              __dp4a((int)Ahi[5], (int)X.z, __dp4a((int)Ahi[7], (int)X.w, 0))));
        ag[t] = fmaf(S.y, __int2float_rn(hg), fmaf(S.x, __int2float_rn(lg), ag[t]));
        a8[t] = fmaf(S.w, __int2float_rn(h8), fmaf(S.z, __int2float_rn(l8), a8[t]));
    }
}

/* The two layouts' unit streams, for the one kernel below. HI: the layout
 * keeps the high part in its own per-lane sum (ah, see gemv_unit). */
template <bool S16>
struct GemvRaw { /* an explicit unit's words for this lane, and the high scale of row lane >> 1 */
    Raw<4, 4, S16> u;
    uint32_t sh;
};
struct GemvPtr {
    LanePtr p;
    const uint8_t *sh;
};
template <bool C, bool S16>
struct GemvLayout { /* explicit slots */
    typedef GemvRaw<S16> R;
    typedef GemvPtr P;
    static constexpr bool HI = true;
    static constexpr int ub = UG<4, 4, S16>::ub;
    static constexpr int rowsc = S16 ? 4 : 8; /* bytes of a row's two scales */
    static __device__ __forceinline__ P ptrs(const MmArgs &a, int lane) {
        P p;
        p.p = lane_ptrs<4, 4, S16>(a, lane);
        /* row lane >> 1's (s_lo, s_hi): the half pair's word, or the float s_hi */
        p.sh = a.w + UG<4, 4, S16>::lo + UG<4, 4, S16>::sl + (lane >> 1) * rowsc + (S16 ? 0 : 4);
        return p;
    }
    static __device__ __forceinline__ void load(R &r, const P &p) {
        load_unit<4, 4, S16>(r.u, p.p, 0, ub);
        r.sh = ld_stream1(p.sh);
    }
    template <typename T>
    static __device__ __forceinline__ void step(P &p, T d) {
        p.p.lo += d, p.p.sl += d, p.p.sc0 += d, p.p.sc1 += d, p.sh += d;
    }
    /* the lane's words of a unit staged in shared memory at s (ptrs' offsets) */
    static __device__ __forceinline__ void load_s(R &r, uint32_t s, int lane) {
        const uint4 v = lds_v4(s + 16 * lane);
        const uint2 l = lds_v2(s + 512 + 8 * lane);
        r.u.lo[0] = v.x, r.u.lo[1] = v.y, r.u.lo[2] = v.z, r.u.lo[3] = v.w, r.u.sl[0] = l.x, r.u.sl[1] = l.y;
        const uint32_t sc = s + 768 + (lane >> 2) * rowsc;
        if (S16) {
            r.u.sc[0] = (uint32_t)lds_s32(sc), r.u.sc[1] = (uint32_t)lds_s32(sc + 32);
        } else {
            const uint2 a = lds_v2(sc), b = lds_v2(sc + 64);
            r.u.sc[0] = a.x, r.u.sc[1] = a.y, r.u.sc[2] = b.x, r.u.sc[3] = b.y;
        }
        r.sh = (uint32_t)lds_s32(s + 768 + (lane >> 1) * rowsc + (S16 ? 0 : 4));
    }
    template <int NT>
    static __device__ __forceinline__ void unit(float (&ag)[NT], float (&a8)[NT], float (&ah)[NT], const R &r,
                                                uint32_t xa, uint32_t oa, uint32_t k, int lane) {
        gemv_unit<NT, S16>(ag, a8, ah, r.u, r.sh, xa, oa, k, lane);
    }
};
template <bool S16>
struct GemvLayout<true, S16> { /* compact */
    typedef RawC<S16> R;
    typedef LanePtrC P;
    static constexpr bool HI = false;
    static __device__ __forceinline__ P ptrs(const MmArgs &a, int lane) { return lane_ptrs_c<S16>(a.w, lane); }
    static constexpr int ub = UGC<S16>::ub;
    static __device__ __forceinline__ void load(R &r, const P &p) { load_unit_c<S16>(r, p, 0); }
    template <typename T>
    static __device__ __forceinline__ void step(P &p, T d) { p.lo += d, p.cd += d, p.sc += d; }
    static __device__ __forceinline__ void load_s(R &r, uint32_t s, int lane) { /* lane_ptrs_c's offsets */
        const uint4 v = lds_v4(s + 16 * lane), c = lds_v4(s + SQC_LO + 16 * (lane >> 2));
        r.lo[0] = v.x, r.lo[1] = v.y, r.lo[2] = v.z, r.lo[3] = v.w;
        r.cd[0] = c.x, r.cd[1] = c.y, r.cd[2] = c.z, r.cd[3] = c.w;
        const uint32_t sc = s + SQC_LO + SQC_CODES + (lane >> 2) * (S16 ? 8 : 16);
        if (S16) {
            const uint2 a = lds_v2(sc);
            r.sc[0] = a.x, r.sc[1] = a.y;
        } else {
            const uint4 a = lds_v4(sc);
            r.sc[0] = a.x, r.sc[1] = a.y, r.sc[2] = a.z, r.sc[3] = a.w;
        }
    }
    template <int NT>
    static __device__ __forceinline__ void unit(float (&ag)[NT], float (&a8)[NT], float (&)[NT], const R &r,
                                                uint32_t xa, uint32_t oa, uint32_t k, int lane) {
        gemv_unit_c<NT, S16>(ag, a8, r, xa, oa, k, lane);
    }
};

/* Persistent blocks: block b takes tiles b, b + gridDim.x, ...; its warps
 * split k (warp w owns subgroups [s0, s1), the same for every tile), so
 * each warp copies its activations into shared memory once, and its units
 * form one stream over all its tiles, loaded gemv_depth() units ahead across
 * tile boundaries. One barrier per tile (double-buffered partial sums). */
template <int NT, bool S16, bool C>
__global__ void __launch_bounds__(GEMV_MAXW * 32, NT == 1 && !C ? 2 : 1) k_sq_gemv(MmArgs a) {
    extern __shared__ __align__(16) uint8_t smem[];
    typedef GemvLayout<C, S16> L;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const uint32_t k = (uint32_t)a.k, nsub = (uint32_t)a.nsub;
    const uint32_t s0 = warp * nsub / nw, s1 = (warp + 1) * nsub / nw, n = s1 - s0;
    const uint32_t sx = (uint32_t)__cvta_generic_to_shared(smem), so = sx + NT * k;
    float *red = (float *)(smem + NT * k + NT * k / 4);
    const long ntiles = a.ntiles, tile0 = blockIdx.x, tstep = gridDim.x;
    const uint32_t ntl = (uint32_t)((ntiles - tile0 + tstep - 1) / tstep); /* tiles of this block */
    const uint32_t total = n * ntl;
    /* the weight stream: unit index of the next load, steps into the tile */
    /* the lane's addresses in the next unit to load: a step is one unit, or
     * at the end of the warp's range in a tile, a jump to its range in the
     * block's next tile (pointers advanced, not recomputed: fewer
     * instructions a unit, and nothing the compiler rematerializes) */
    typename L::P lp = L::ptrs(a, lane);
    L::step(lp, (size_t)(tile0 * nsub + s0) * L::ub);
    const uint32_t jump = (uint32_t)((tstep * nsub - n + 1) * L::ub); /* < 4 GB: within the matrix */
    uint32_t lstep = 0;
    /* gemv_depth() units in flight, one more set of registers for the unit
     * being multiplied: iteration j of a round loads into the set iteration
     * j - 1 consumed, so the sets rotate by index at compile time and no
     * unit is copied between registers */
    constexpr int D = gemv_depth<NT, C>(), R = D + 1;
    typename L::R r[R];
#pragma unroll
    for (int i = 0; i < D; i++)
        if (i < (int)total) {
            L::load(r[i], lp);
            L::step(lp, ++lstep == n ? (lstep = 0, jump) : (uint32_t)L::ub);
        }
    /* the weights do not depend on the kernel before (kc_launch_pdl): their
     * first loads are in flight while it finishes; its output is read from here */
    kc_pdl_wait();
    kc_pdl_trigger();
    gemv_acts<NT>(a, smem, s0, n, lane);
    float ag[NT], a8[NT], ah[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) ag[t] = a8[t] = ah[t] = 0.0f;
    uint32_t cstep = 0, buf = 0;
    long tile = tile0;
    for (uint32_t i = 0; i < total; i += R) {
#pragma unroll
        for (int j = 0; j < R; j++) {
            if (i + j < total) {
                if (i + j + D < total) {
                    L::load(r[(j + D) % R], lp);
                    L::step(lp, ++lstep == n ? (lstep = 0, jump) : (uint32_t)L::ub);
                }
                const uint32_t sub = s0 + cstep;
                L::template unit<NT>(ag, a8, ah, r[j], sx + sub * 64, so + sub * 16, k, lane);
                if (++cstep == n) {
                    gemv_flush<NT, L::HI, 0>(ag, a8, ah, a, red + buf * (GEMV_MAXW * NT * 16), GemvSw{}, tile, warp,
                                             nw, lane);
                    cstep = 0, buf ^= 1, tile += tstep;
                }
            }
        }
    }
}

/* The same work split with the weight stream staged through shared memory
 * (cp.async, GEMV_STAGES units a warp in flight) instead of registers: the
 * bytes in flight no longer cost registers, so a kernel whose unit decoding
 * needs many (the compact layout's) keeps both its occupancy and its loads
 * in flight. Each lane copies one or two 16-byte chunks of a unit; a unit is
 * one cp.async group, waited for GEMV_STAGES - 1 groups behind the newest. */
template <int UB>
__device__ __forceinline__ void gemv_stage(uint32_t slot, const uint8_t *unit, int lane) {
    if (lane < UB / 16) cp_async16(slot + 16 * lane, unit + 16 * lane);
    if (lane + 32 < UB / 16) cp_async16(slot + 16 * (lane + 32), unit + 16 * (lane + 32));
    cp_async_commit();
}

/* (The modes reading the norm's row keep to 64 registers, two blocks of 512
 * threads an SM: their slot loops took them to 71-86, and ptxas fits them
 * in 64 without spilling.) */
template <int NT, bool S16, bool C, int SW>
__global__ void __launch_bounds__(GEMV_MAXW * 32, (SW & 3) == 2 || (NT <= 2 && SW) ? 2 : 1) k_sq_gemv_st(MmArgs a) {
    extern __shared__ __align__(16) uint8_t smem[];
    typedef GemvLayout<C, S16> L;
    constexpr int UB = L::ub, D = GEMV_STAGES;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const uint32_t k = (uint32_t)a.k, nsub = (uint32_t)a.nsub;
    const uint32_t s0 = warp * nsub / nw, s1 = (warp + 1) * nsub / nw, n = s1 - s0;
    const uint32_t sx = (uint32_t)__cvta_generic_to_shared(smem), so = sx + NT * k;
    float *red = (float *)(smem + NT * k + NT * k / 4);
    const uint32_t swb = NT * k + NT * k / 4 + 2 * GEMV_MAXW * NT * 16 * 4; /* SwiGLU's state, then the rings */
    const GemvSw sw = gemv_sw<NT>(smem + swb);
    const uint32_t ring = sx + swb + (SW ? gemv_sw_bytes<NT>() : 0) + warp * D * UB;
    const long ntiles = a.ntiles, tile0 = blockIdx.x, tstep = gridDim.x;
    /* the block's tiles: tile0, tile0 + tstep, ...; in SwiGLU's pairs (mode 1)
     * tile0, tile0 + half, tile0 + tstep, tile0 + tstep + half, ... (a step
     * alternates between ta and tb tiles) */
    constexpr int ACT = SW & 3, EP = SW >> 2; /* gemv_mode's fields */
    constexpr bool pairs = EP == 1;
    const long half = a.sw.half, ta = pairs ? half : tstep, tb = pairs ? tstep - half : tstep;
    const uint32_t ntl = pairs ? (uint32_t)(2 * ((half - tile0 + tstep - 1) / tstep))
                               : (uint32_t)((ntiles - tile0 + tstep - 1) / tstep);
    const uint32_t total = n * ntl;
    /* the unit index's step from a tile's last unit of the warp's range to
     * its first in the next tile (mod 2^32: tb is negative in pairs) */
    const uint32_t ja = (uint32_t)(ta * nsub - n + 1), jb = (uint32_t)(tb * nsub - n + 1);
    uint32_t lu = (uint32_t)(tile0 * nsub + s0), lstep = 0, lpar = 0;
#pragma unroll
    for (int i = 0; i < D; i++) {
        if (i < (int)total) {
            gemv_stage<UB>(ring + i * UB, a.w + (size_t)lu * UB, lane);
            lu += ++lstep == n ? (lstep = 0, pairs && !(lpar ^= 1) ? jb : ja) : 1;
        } else {
            cp_async_commit(); /* every iteration below waits on a count of groups */
        }
    }
    kc_pdl_wait();
    kc_pdl_trigger();
    if (ACT == 1) gemv_acts_h<NT>(a, smem, sw, s0, n, warp, lane);
    else if (ACT == 2) gemv_acts_n<NT>(a, smem, sw, s0, n, warp, lane);
    else gemv_acts<NT>(a, smem, s0, n, lane);
    if (pairs && threadIdx.x < NT) sw.mx[threadIdx.x] = 0u; /* read after the first flush's barrier */
    float ag[NT], a8[NT], ah[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) ag[t] = a8[t] = ah[t] = 0.0f;
    uint32_t cstep = 0, buf = 0, slot = 0, cpar = 0;
    long tile = tile0;
    for (uint32_t i = 0; i < total; i++) {
        cp_async_wait<D - 1>();
        __syncwarp();
        typename L::R cur;
        L::load_s(cur, ring + slot * UB, lane);
        __syncwarp(); /* every lane has read the slot before it is refilled */
        if (i + D < total) {
            gemv_stage<UB>(ring + slot * UB, a.w + (size_t)lu * UB, lane);
            lu += ++lstep == n ? (lstep = 0, pairs && !(lpar ^= 1) ? jb : ja) : 1;
        } else {
            cp_async_commit();
        }
        slot = slot + 1 == D ? 0 : slot + 1;
        const uint32_t sub = s0 + cstep;
        L::template unit<NT>(ag, a8, ah, cur, sx + sub * 64, so + sub * 16, k, lane);
        if (++cstep == n) {
            gemv_flush<NT, L::HI, SW>(ag, a8, ah, a, red + buf * (GEMV_MAXW * NT * 16), sw, tile, warp, nw, lane);
            cstep = 0, buf ^= 1, tile += pairs && !(cpar ^= 1) ? tb : ta;
        }
    }
    cp_async_wait<0>();
    if (pairs) { /* the block's max |h| per token, into its slot */
        __syncthreads();
        if (threadIdx.x < NT && a.tok0 + threadIdx.x < a.m)
            a.sw.hmax[(a.tok0 + threadIdx.x) * gridDim.x + blockIdx.x] = __uint_as_float(sw.mx[threadIdx.x]);
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
        const int v = e && *e ? atoi(e) : 2;
        g_max_m = v < 0 ? 0 : v > 4 ? 4 : v;
    }
    return g_max_m;
}

extern "C" int kc_sq_gemv_applies(const kc_sq *w, long m) {
    return (is_fast(w) || w->compact) && m >= 1 && m <= kc_sq_gemv_max();
}

/* Whether k_sq_gemv_st (weights staged in shared memory) runs instead of
 * k_sq_gemv (weights in registers): KC_SQ_GEMV_STAGE=0/1. On by default
 * since the per-lane sums (ninth session): on the H200 it ties the
 * register kernel on the two smallest 8B shapes and wins on the rest, up
 * to 94 % of copy bandwidth on the 70B gate_up, and decodes 8B at batch 1
 * 4 % faster end to end (docs/perf-gpu.md). Before them, with seven
 * shuffles a unit, it lost end to end (third session). */
static int g_stage = -1;

extern "C" void kc_sq_set_gemv_stage(int on) { g_stage = on < 0 ? -1 : on != 0; }

static int gemv_stage_on(void) {
    if (g_stage < 0) {
        const char *e = getenv("KC_SQ_GEMV_STAGE");
        g_stage = e && *e ? atoi(e) != 0 : 1;
    }
    return g_stage;
}

extern "C" int kc_sq_gemv_staged(void) { return gemv_stage_on(); }

typedef void (*GemvKernel)(MmArgs);

static size_t gemv_smem(long k, int nt) { /* activations, chunk sums, 2 x partial sums */
    return (size_t)nt * k + (size_t)nt * k / 4 + 2 * (size_t)GEMV_MAXW * nt * 16 * sizeof(float);
}

/* the most dynamic shared memory a block may opt in to; 0 on error */
static size_t smem_optin(void) {
    static size_t v;
    int dev = 0, x = 0;
    if (!v && !kc_check(cudaGetDevice(&dev), "cudaGetDevice") &&
        !kc_check(cudaDeviceGetAttribute(&x, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                  "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)"))
        v = (size_t)x;
    return v;
}

/* blocks of nw warps resident per SM with sm bytes of shared memory
 * (cached: the calculation runs on the host at every launch outside graphs) */
static int gemv_occupancy(GemvKernel kern, int nw, size_t sm) {
    static struct {
        GemvKernel kern;
        int nw, occ;
        size_t sm;
    } cache[64];
    static int ncache;
    for (int i = 0; i < ncache; i++)
        if (cache[i].kern == kern && cache[i].nw == nw && cache[i].sm == sm) return cache[i].occ;
    int occ = 0;
    if (kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, nw * 32, sm),
                 "cudaOccupancyMaxActiveBlocksPerMultiprocessor(k_sq_gemv)"))
        return -1;
    if (ncache < 64) cache[ncache].kern = kern, cache[ncache].nw = nw, cache[ncache].sm = sm, cache[ncache++].occ = occ;
    return occ;
}

/* Warps per block and blocks: a block's time is (its tiles) x (its warps'
 * units per tile), so pick the warp count that minimises
 * ceil(tiles / resident blocks) x ceil(units / warps). Shared memory per
 * block: base + nw x per_warp. */
static int gemv_config(const kc_sq *w, GemvKernel kern, size_t base, size_t per_warp, int *nw_out, long *grid_out) {
    const size_t smem_max = smem_optin();
    if (!smem_max) return -1;
    long best = -1;
    double best_bal = 0;
    for (int nw = 1; nw <= GEMV_MAXW && nw <= w->nsub; nw *= 2) { /* every warp >= 1 unit a tile */
        const size_t sm = base + nw * per_warp;
        if (sm > smem_max) break;
        const int occ = gemv_occupancy(kern, nw, sm);
        if (occ < 0) return -1;
        if (occ < 1) continue;
        const long cap = (long)occ * kc_sm_count(), grid = w->ntiles < cap ? w->ntiles : cap;
        const long waves = (w->ntiles + grid - 1) / grid, cost = waves * ((w->nsub + nw - 1) / nw);
        /* equal cost: the better balanced (a last round of tiles on few blocks leaves the rest idle) */
        const double bal = (double)w->ntiles / ((double)grid * waves);
        if (best < 0 || cost < best || (cost == best && bal >= best_bal))
            best = cost, best_bal = bal, *nw_out = nw, *grid_out = grid;
    }
    if (best < 0) {
        kc_set_error("k_sq_gemv: no block shape fits the shared memory (k = %ld)", w->k);
        return -1;
    }
    return 0;
}

/* A test's cap on the grid (kc_sq_set_gemv_grid): the numbers do not depend
 * on it (a tile is one block's), so tests use it to give blocks many tiles. */
static long g_grid_cap;

extern "C" void kc_sq_set_gemv_grid(long cap) { g_grid_cap = cap > 0 ? cap : 0; }

/* The staged kernel's modes (gemv_mode): 0 plain; SwiGLU's pairs (4) and
 * float h (1); the norm's slots after INT8 or h activations (8, 9) and its
 * row read by a plain or a pairs matmul (2, 6). The norm's modes exist for
 * one and two tokens only (batch-1 and 2 decode, where the launches they
 * save matter; fewer kernels to build and carry). */
template <int NT, bool S16, bool C>
static GemvKernel gemv_st_kernel(int mode) {
    switch (mode) {
    case 0: return k_sq_gemv_st<NT, S16, C, 0>;
    case 1: return k_sq_gemv_st<NT, S16, C, 1>;
    case 4: return k_sq_gemv_st<NT, S16, C, 4>;
    default: break;
    }
    if constexpr (NT <= 2) {
        switch (mode) {
        case 2: return k_sq_gemv_st<NT, S16, C, 2>;
        case 6: return k_sq_gemv_st<NT, S16, C, 6>;
        case 8: return k_sq_gemv_st<NT, S16, C, 8>;
        case 9: return k_sq_gemv_st<NT, S16, C, 9>;
        default: break;
        }
    }
    return NULL;
}

/* the kernel of a mode (the register kernel, or the staged one in a mode),
 * opted in to the device's most dynamic shared memory at first use, so the
 * occupancy figures count it; NULL with an error where there is none */
template <int NT, bool S16, bool C>
static GemvKernel gemv_kernel(int st, int mode) {
    static bool opted[17];
    const int ki = st ? 1 + mode : 0;
    const GemvKernel kern = !st ? k_sq_gemv<NT, S16, C> : gemv_st_kernel<NT, S16, C>(mode);
    if (!kern || mode < 0 || mode > 15 || (!st && mode)) {
        kc_set_error("k_sq_gemv: no kernel for mode %d at %d tokens (staged: %d)", mode, NT, st);
        return NULL;
    }
    if (!opted[ki]) {
        const size_t v = smem_optin();
        if (!v || kc_check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)v),
                           "cudaFuncSetAttribute(k_sq_gemv)"))
            return NULL;
        opted[ki] = true;
    }
    return kern;
}

struct GemvPlan {
    GemvKernel kern;
    int nw;
    long grid;
    size_t sm;
};

/* A launch's kernel, block and grid. The warps a block come from the plain
 * kernel's cost model in every mode: a tile's sum depends on how many warps
 * split k, so the modes take the plain kernel's block shape and give its
 * numbers bit for bit; only their grid is their own (as many blocks as fit
 * at that shape, over the pairs of tiles with SwiGLU's pairs). -1 with an
 * error where a mode's kernel does not fit that shape. */
template <int NT, bool S16, bool C>
static int gemv_plan(const kc_sq *w, int mode, long half, GemvPlan *p) {
    const int st = gemv_stage_on();
    if (mode && !st) {
        kc_set_error("k_sq_gemv: the fused modes run on the staged kernel (KC_SQ_GEMV_STAGE=1)");
        return -1;
    }
    const size_t base = gemv_smem(w->k, NT), per_warp = st ? (size_t)GEMV_STAGES * GemvLayout<C, S16>::ub : 0;
    const GemvKernel k0 = gemv_kernel<NT, S16, C>(st, 0);
    if (!k0 || gemv_config(w, k0, base, per_warp, &p->nw, &p->grid)) return -1;
    p->kern = k0, p->sm = base + p->nw * per_warp;
    if (mode) {
        if (!(p->kern = gemv_kernel<NT, S16, C>(st, mode))) return -1;
        p->sm += gemv_sw_bytes<NT>();
        const int occ = p->sm <= smem_optin() ? gemv_occupancy(p->kern, p->nw, p->sm) : 0;
        if (occ < 0) return -1;
        if (occ < 1) {
            kc_set_error("k_sq_gemv: mode %d's kernel does not fit the plain kernel's block of %d warps", mode, p->nw);
            return -1;
        }
        const long nt = (mode >> 2) == 1 ? half : w->ntiles, cap = (long)occ * kc_sm_count();
        p->grid = nt < cap ? nt : cap;
    }
    if (g_grid_cap && p->grid > g_grid_cap) p->grid = g_grid_cap;
    if ((double)p->grid * w->nsub * GemvLayout<C, S16>::ub >= 4294967296.0) { /* k_sq_gemv's 32-bit jump */
        kc_set_error("k_sq_gemv: a warp's step between tiles passes 4 GB (%ld x %ld)", w->n, w->k);
        return -1;
    }
    return 0;
}

template <int NT, bool S16, bool C>
static int launch_gemv(const kc_sq *w, MmArgs a, long *grid_used) {
    const int mode = gemv_mode(a);
    if (mode && a.m > NT) { /* the slots are written by one launch */
        kc_set_error("k_sq_gemv: the fused modes take at most %d tokens", NT);
        return -1;
    }
    GemvPlan p;
    if (gemv_plan<NT, S16, C>(w, mode, a.sw.half, &p)) return -1;
    if (grid_used) *grid_used = p.grid;
    for (long t0 = 0; t0 < a.m; t0 += NT) {
        a.tok0 = t0;
        if (kc_launch_pdl("k_sq_gemv", p.kern, (unsigned)p.grid, p.nw * 32, p.sm, a)) return -1;
    }
    return 0;
}

template <bool C>
static int gemv_layout(const kc_sq *w, const MmArgs *a, long *g) {
    if (a->m == 1) return w->s16 ? launch_gemv<1, true, C>(w, *a, g) : launch_gemv<1, false, C>(w, *a, g);
    if (a->m == 2) return w->s16 ? launch_gemv<2, true, C>(w, *a, g) : launch_gemv<2, false, C>(w, *a, g);
    return w->s16 ? launch_gemv<4, true, C>(w, *a, g) : launch_gemv<4, false, C>(w, *a, g);
}

extern "C" int kc_sq_gemv(const kc_sq *w, const MmArgs *a, long *grid_used) {
    return w->compact ? gemv_layout<true>(w, a, grid_used) : gemv_layout<false>(w, a, grid_used);
}

template <bool C>
static int mode_plan(const kc_sq *w, long m, int mode, long half) {
    GemvPlan p;
    if (m == 1) return w->s16 ? gemv_plan<1, true, C>(w, mode, half, &p) : gemv_plan<1, false, C>(w, mode, half, &p);
    if (m == 2) return w->s16 ? gemv_plan<2, true, C>(w, mode, half, &p) : gemv_plan<2, false, C>(w, mode, half, &p);
    return w->s16 ? gemv_plan<4, true, C>(w, mode, half, &p) : gemv_plan<4, false, C>(w, mode, half, &p);
}

extern "C" int kc_sq_gemv_mode_fits(const kc_sq *w, long m, int mode, long half) {
    if (m < 1 || m > 4) return 0;
    /* (the first error sticks; a pending CUDA error from before is not ours to clear) */
    const bool clean = !strcmp(kc_error(), "no CUDA error recorded") && cudaPeekAtLastError() == cudaSuccess;
    if (!(w->compact ? mode_plan<true>(w, m, mode, half) : mode_plan<false>(w, m, mode, half))) return 1;
    if (clean) kc_clear_error(), (void)cudaGetLastError(); /* not taken: the caller runs the plain launches */
    return 0;
}
