/* kc_sq_frag.cuh - the per-lane pieces of the SQ kernels: streaming loads,
 * the INT8 mma wrappers, and the decoding of one weight unit (16 rows x 64
 * columns) into mma A fragments, for the explicit layout (unpack_lo and the
 * slot scatter) and the compact one (frag_compact). kc_sq_mm.cu (the
 * fused SQ x INT8 kernels) and kc_sq_gemm.cu (the expansion into FP16 for
 * the tensor-core GEMM path) both decode units with exactly these
 * functions, so the two paths cannot disagree about the layout (kc_sq.cuh).
 *
 * Fragment map (m16n8k32 s8 A operand, the k permutation of kc_sq.cuh):
 * register A[kc * 4 + r] of lane (g = lane >> 2, t = lane & 3) holds row
 * g + 8 (r & 1), byte i at column 16 t + 8 kc + 4 (r >> 1) + i of the
 * unit: every lane owns 16 consecutive columns of two rows.
 */
#ifndef KC_SQ_FRAG_CUH
#define KC_SQ_FRAG_CUH

#include "kc_sq.cuh"

#include <cuda_fp16.h>
/* ---- the matmul --------------------------------------------------------------------------- */

#define MAGIC_I 0x4B400000 /* bit pattern of 1.5 * 2^23 */
#define MAGIC_F 12582912.0f

__device__ __forceinline__ uint4 ld_stream4(const void *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 ld_stream2(const void *p) {
    uint2 v;
    asm("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}
__device__ __forceinline__ uint32_t ld_stream1(const void *p) {
    uint32_t v;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

/* cp.async: 16 bytes global -> shared, bypassing L1 and registers (the
 * staged kernels' weight and activation streams); one commit a group of
 * copies, waited for by count */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

/* shared-memory loads by 32-bit shared address */
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
__device__ __forceinline__ uint2 lds_v2(uint32_t a) {
    uint2 v;
    asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(a));
    return v;
}
__device__ __forceinline__ uint4 lds_v4(uint32_t a) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
    return v;
}

__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* d = a . b + c (c: the bit pattern of 1.5 * 2^23, starting a chain) */
__device__ __forceinline__ void mma_s8c(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1, const int (&c)[4]) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
}

/* A fragments (index kc * 4 + reg) of the low codes from the lane's raw
 * words: as stored (offset-binary, u = c + 8 / c + 2; the caller subtracts
 * 8 / 2 times the activation sums with one more mma) or, SIGNED, as
 * two's complement bytes: (u + 0x78) ^ 0x80 is c's byte (u + 0x78 <= 0x87,
 * so no carry crosses a byte; 0x7E for 2-bit codes), two operations a
 * word where xor, mask and a sign-extending multiply-add took three. */
template <int LOBITS, bool SIGNED>
HD void unpack_lo(const uint32_t *raw, uint32_t *A) {
    if (LOBITS == 4) {
        for (int q = 0; q < 4; q++) {
            const int kc = q >> 1, rh = q & 1;
            uint32_t v0 = raw[q] & 0x0F0F0F0Fu, v1 = (raw[q] >> 4) & 0x0F0F0F0Fu;
            if (SIGNED) v0 = (v0 + 0x78787878u) ^ 0x80808080u, v1 = (v1 + 0x78787878u) ^ 0x80808080u;
            A[kc * 4 + rh] = v0, A[kc * 4 + 2 + rh] = v1;
        }
    } else {
        for (int p = 0; p < 2; p++)
            for (int c = 0; c < 4; c++) {
                uint32_t v = (raw[p] >> (2 * c)) & 0x03030303u;
                if (SIGNED) v = (v + 0x7E7E7E7Eu) ^ 0x80808080u;
                A[(c >> 1) * 4 + (c & 1) * 2 + p] = v;
            }
    }
}

/* the lane's hi A operands (index kc * 4 + reg) in the scatter tile */
HD int hi_off(int lane, int kc) { return (lane >> 2) * 320 + kc * 128 + (lane & 3) * 16; }

HD void scatter4(uint8_t *tile, int rowbase, uint32_t vals, uint32_t pos) {
    for (int i = 0; i < 4; i++) tile[rowbase + ((pos >> (8 * i)) & 255)] = (uint8_t)(vals >> (8 * i));
}

#ifdef __CUDACC__
/* scatter4 by a whole warp, the lane's four highs taken in an order rotated
 * by (lane >> 2) & 3. Why: the rows r whose tile bytes share banks (same r
 * & 1 and r >> 3; the 320-byte stride puts row pairs 16 banks apart) are
 * the four of lanes with different (lane >> 2) & 3, and a row's slots hold
 * its highs in column order, so unrotated the i-th store of those lanes
 * hits columns of the same quarter, the same banks: 5.1-way conflicts on
 * average (Nsight Compute on k_sq_wg, twelfth session). */
__device__ __forceinline__ void scatter4_warp(uint8_t *tile, int rowbase, uint32_t vals, uint32_t pos, int lane) {
    const uint32_t sh = 8 * ((lane >> 2) & 3);
    scatter4(tile, rowbase, __funnelshift_r(vals, vals, sh), __funnelshift_r(pos, pos, sh));
}
#endif

/* raw per-lane words of one unit, loaded ahead of their use */
template <int LOBITS, int S2C, bool S16>
struct Raw {
    uint32_t lo[LOBITS == 4 ? 4 : 2];
    uint32_t sl[S2C == 4 ? 2 : 1];
    uint32_t sc[S16 ? 2 : 4];
};

/* kc_sq_matmul_qkv_rope's RoPE on the q and k parts and the store of k
 * and v into the paged cache (kc_rope_kv_store's work and numbers) */
struct GemvRope {
    int on, layer, head_dim, rot_half;
    const float *cs; /* kc_rope_table's [token][rot_half] (cos, sin) */
    const int32_t *pos, *blk, *blk_off;
    kc_kv_t kv;
};

/* Float rows in and out of the dp4a launches (kc_sq_matmul_swiglu,
 * kc_sq_matmul_acc_h): SW_PAIRS walks the fused gate/up matrix's tiles in
 * pairs (gate tile t, then up tile t + half, on one block), writes h =
 * silu(gate) up over the gate part's output and each block's max |h| per
 * token into hmax[token][block]; SW_FLOAT_IN (SwiGLU's down, or the o
 * projection after kc_attention_max) reads float rows h and quantizes them
 * to INT8 at the scale of the max over nslot slots as it copies them. */
enum { SW_OFF = 0, SW_PAIRS = 1, SW_FLOAT_IN = 2 };
struct GemvSwiglu {
    int mode;   /* SW_* */
    int nslot;  /* SW_FLOAT_IN: the slots a row (the gate/up launch's blocks, or the heads) */
    long half;  /* SW_PAIRS: 16-row tiles of the gate part (the up part has as many) */
    float *hmax;
    const float *h; /* SW_FLOAT_IN: [m][k] */
};

/* RMSNorm split over the dp4a launches around it (kc_sq_matmul_acc_ns and
 * the *_ns matmuls): with out, the residual matmul (acc) leaves for each
 * 16-row tile and token the tile's sum of squares of the new y and its
 * candidates for the max (kc_rows.cuh, ns_tile); with in, the next matmul
 * finishes the sum in the canonical order, normalises its input row x with
 * the norm's weights w and quantizes it to INT8 as it copies it. */
struct GemvNorm {
    int in, out;
    const float *x;  /* in: the rows [m][k] (the residual stream) */
    const float *w;  /* the norm's weights (out: [n]; in: [k]) */
    float eps;
    double *ss;      /* [token][ntile] */
    float4 *cand;    /* [token][ntile] */
    long ntile;
};

struct MmArgs {
    const uint8_t *w;
    long n, ntiles, nsub, ngroups, m, k;
    int unit_bytes, lo_bytes, slot_bytes, s2, tpb;
    const int8_t *qx;
    const uint4 *xf; /* prefill: the activations in fragment order */
    const float *sx;
    float *y;
    float *part;     /* decode: stream-k partial sums, [warp][2][NT * 4][32] */
    int *cnt;        /* decode: per-tile arrival counters, zero between launches */
    long nw;         /* decode: warps in the grid */
    long tok0;       /* first token of this launch */
    int np;          /* > 1: fused parts, part p's rows [pstart[p], pstart[p+1]) go to py[p] */
    long pstart[KC_SQ_MAX_PARTS + 1];
    float *py[KC_SQ_MAX_PARTS];
    int acc;         /* the dp4a path: y += x . W^T (the residual add in the epilogue) */
    const float *rs; /* integer bank scales (kc_sq.cuh): the row scales, else NULL */
    GemvRope rope;   /* the dp4a path on fused q/k/v: RoPE and the K/V store in the epilogue (rope.on) */
    GemvSwiglu sw;   /* float rows in or out of the dp4a path (sw.mode) */
    GemvNorm nm;     /* the dp4a path around RMSNorm (nm.in, nm.out) */
};

/* where row r of the (fused) matrix goes: its part's output, that output's
 * row length *ldy and the row's index there *rr */
__device__ __forceinline__ float *y_route(const MmArgs &a, long r, long *ldy, long *rr, int *part = nullptr) {
    if (a.np <= 1) return *ldy = a.n, *rr = r, part ? *part = 0 : 0, a.y;
    int p = 0;
    while (p + 1 < a.np && r >= a.pstart[p + 1]) p++;
    if (part) *part = p;
    return *ldy = a.pstart[p + 1] - a.pstart[p], *rr = r - a.pstart[p], a.py[p];
}

/* the dp4a path for one to four tokens (kc_sq_gemv.cu) */
extern "C" int kc_sq_gemv_applies(const kc_sq *w, long m);
extern "C" int kc_sq_gemv(const kc_sq *w, const MmArgs *a, long *grid_used = nullptr);
extern "C" int kc_sq_gemv_staged(void); /* the staged kernel runs (KC_SQ_GEMV_STAGE) */
/* The staged kernel's mode (k_sq_gemv_st's template argument) for a's
 * epilogue and activations: bits 0-1 the activations (0 INT8, 1 SwiGLU's
 * float h, 2 the norm's row), bits 2-3 the tile end (0 the store, 1
 * SwiGLU's pairs, 2 the store and the norm's slots) */
__host__ __device__ inline int gemv_mode(const MmArgs &a) {
    return (a.sw.mode == SW_FLOAT_IN ? 1 : a.nm.in ? 2 : 0) | (a.sw.mode == SW_PAIRS ? 1 : a.nm.out ? 2 : 0) << 2;
}
/* whether the staged kernel in mode `mode` (gemv_mode; half: the pairs'
 * tiles a part) fits the plain kernel's block shape for m tokens */
extern "C" int kc_sq_gemv_mode_fits(const kc_sq *w, long m, int mode, long half);

/* unit geometry: compile-time on the fast path (4-bit lo, 4 slots a lane) */
template <int LOBITS, int S2C, bool S16>
struct UG {
    static constexpr bool fixed = LOBITS == 4 && S2C == 4;
    static constexpr int lo = 512, sl = 256, ub = 512 + 256 + (S16 ? 64 : 128);
};

/* the lane's addresses in unit 0 (lo, slots, scales of rows g and g + 8) */
struct LanePtr {
    const uint8_t *lo, *sl, *sc0, *sc1;
};

template <int LOBITS, int S2C, bool S16>
__device__ __forceinline__ LanePtr lane_ptrs(const MmArgs &a, int lane) {
    typedef UG<LOBITS, S2C, S16> G;
    const int lob = G::fixed ? G::lo : a.lo_bytes, slb = G::fixed ? G::sl : a.slot_bytes, g = lane >> 2;
    LanePtr p;
    p.lo = a.w + lane * (LOBITS == 4 ? 16 : 8);
    p.sl = a.w + lob + lane * 8;
    p.sc0 = a.w + lob + slb + g * (S16 ? 4 : 8);
    p.sc1 = p.sc0 + 8 * (S16 ? 4 : 8);
    return p;
}

/* unit number u's words for this lane */
template <int LOBITS, int S2C, bool S16>
__device__ __forceinline__ void load_unit(Raw<LOBITS, S2C, S16> &r, const LanePtr &p, unsigned u, unsigned ub) {
    const size_t o = (size_t)u * ub;
    if (LOBITS == 4) {
        uint4 v = ld_stream4(p.lo + o);
        r.lo[0] = v.x, r.lo[1] = v.y, r.lo[2] = v.z, r.lo[3] = v.w;
    } else {
        uint2 v = ld_stream2(p.lo + o);
        r.lo[0] = v.x, r.lo[1] = v.y;
    }
    if (S2C == 4) {
        uint2 v = ld_stream2(p.sl + o);
        r.sl[0] = v.x, r.sl[1] = v.y;
    }
    if (S16) {
        r.sc[0] = ld_stream1(p.sc0 + o), r.sc[1] = ld_stream1(p.sc1 + o);
    } else {
        uint2 v0 = ld_stream2(p.sc0 + o), v1 = ld_stream2(p.sc1 + o);
        r.sc[0] = v0.x, r.sc[1] = v0.y, r.sc[2] = v1.x, r.sc[3] = v1.y;
    }
}

/* the SPG units of scale group `item` (= tile * ngroups + group) */
template <int LOBITS, int SPG, int S2C, bool S16>
__device__ __forceinline__ void load_group(Raw<LOBITS, S2C, S16> (&r)[SPG], unsigned item, const MmArgs &a,
                                           const LanePtr &p) {
    typedef UG<LOBITS, S2C, S16> G;
    const unsigned ub = G::fixed ? (unsigned)G::ub : (unsigned)a.unit_bytes;
#pragma unroll
    for (int s = 0; s < SPG; s++) load_unit(r[s], p, item * SPG + s, ub);
}

__device__ __forceinline__ float half_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xFFFFu))); }
__device__ __forceinline__ float half_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

__device__ __forceinline__ void zero_tiles(uint8_t *wsm, int ntiles, int lane) { /* tiles start zero, padding too */
    for (int i = lane; i < ntiles * SQ_TILE / 16; i += 32) ((uint4 *)wsm)[i] = make_uint4(0, 0, 0, 0);
    __syncwarp();
}

/* ---- the compact layout (kc_sq.cuh) ------------------------------------------------------- */

template <bool S16>
struct RawC {
    uint32_t lo[4]; /* the lane's 16 lo bytes */
    uint32_t cd[4]; /* code lists of rows g (cd[0..1]) and g + 8 (cd[2..3]) */
    uint32_t sc[S16 ? 2 : 4];
};

template <bool S16>
struct UGC {
    static constexpr int ub = SQC_LO + SQC_CODES + (S16 ? 64 : 128);
};

struct LanePtrC {
    const uint8_t *lo, *cd, *sc;
};

template <bool S16>
__device__ __forceinline__ LanePtrC lane_ptrs_c(const uint8_t *w, int lane) {
    LanePtrC p;
    p.lo = w + lane * 16;
    p.cd = w + SQC_LO + (lane >> 2) * 16;
    p.sc = w + SQC_LO + SQC_CODES + (lane >> 2) * (S16 ? 8 : 16);
    return p;
}

template <bool S16>
__device__ __forceinline__ void load_unit_c(RawC<S16> &r, const LanePtrC &p, unsigned u) {
    const size_t o = (size_t)u * UGC<S16>::ub;
    const uint4 v = ld_stream4(p.lo + o), c = ld_stream4(p.cd + o);
    r.lo[0] = v.x, r.lo[1] = v.y, r.lo[2] = v.z, r.lo[3] = v.w;
    r.cd[0] = c.x, r.cd[1] = c.y, r.cd[2] = c.z, r.cd[3] = c.w;
    if (S16) {
        const uint2 sv = ld_stream2(p.sc + o);
        r.sc[0] = sv.x, r.sc[1] = sv.y;
    } else {
        const uint4 sv = ld_stream4(p.sc + o);
        r.sc[0] = sv.x, r.sc[1] = sv.y, r.sc[2] = sv.z, r.sc[3] = sv.w;
    }
}

/* The A fragments of one compact unit (frag_flags / frag_highs in kc_sq.cuh,
 * with the quad's prefix sum in between). All 32 lanes must take part. */
template <bool SIGNED, bool S16>
__device__ __forceinline__ void frag_compact(const RawC<S16> &r, uint32_t (&Alo)[8], uint32_t (&Ahi)[8], int tig) {
    uint32_t hn[4], w[4];
    const uint32_t c = frag_flags(r.lo, hn, w);
    unpack_lo<4, SIGNED>(w, Alo);
    uint32_t x = c, y;
    y = __shfl_up_sync(0xffffffffu, x, 1, 4);
    if (tig >= 1) x += y;
    y = __shfl_up_sync(0xffffffffu, x, 2, 4);
    if (tig >= 2) x += y;
    frag_highs(hn, r.cd, x - c, Ahi);
}


/* ---- one unit of the fast layout, staged in shared memory (kc_sq_mm.cu, kc_sq_wg.cu) ---- */

/* The A fragments of one scale group: low codes unpacked (offset-binary
 * with OFFS, else signed), highs scattered through the warp's tiles. */
template <int LOBITS, int SPG, int S2C, bool S16, bool OFFS>
__device__ __forceinline__ void group_frags(const Raw<LOBITS, S2C, S16> (&cur)[SPG], unsigned item, uint8_t *tiles,
                                            const MmArgs &a, int lane, uint32_t (&Alo)[SPG][8],
                                            uint32_t (&Ahi)[SPG][8]) {
    const int rowbase = scatter_rowbase(lane);
#pragma unroll
    for (int s = 0; s < SPG; s++) {
        unpack_lo<LOBITS, !OFFS>(cur[s].lo, Alo[s]);
        uint8_t *tileb = tiles + s * SQ_TILE; /* (reused by the same lanes only after another __syncwarp) */
        if (S2C == 4) {
            scatter4_warp(tileb, rowbase, cur[s].sl[0], cur[s].sl[1], lane);
        } else {
            const uint8_t *sp = a.w + (size_t)(item * SPG + s) * a.unit_bytes + a.lo_bytes + lane * 2 * a.s2;
            for (int q = 0; q < a.s2; q += 4) scatter4(tileb, rowbase, ld_stream1(sp + q), ld_stream1(sp + a.s2 + q));
        }
        __syncwarp();
        uint4 *h0p = (uint4 *)(tileb + hi_off(lane, 0)), *h1p = (uint4 *)(tileb + hi_off(lane, 1));
        const uint4 h0 = *h0p, h1 = *h1p, z = make_uint4(0, 0, 0, 0);
        *h0p = z, *h1p = z; /* own bytes back to zero (the tile's next scatter comes after another __syncwarp) */
        Ahi[s][0] = h0.x, Ahi[s][1] = h0.y, Ahi[s][2] = h0.z, Ahi[s][3] = h0.w;
        Ahi[s][4] = h1.x, Ahi[s][5] = h1.y, Ahi[s][6] = h1.z, Ahi[s][7] = h1.w;
    }
}

/* 1 / x to within an ulp or two (one MUFU.RCP; __frcp_rn adds a slow path
 * with a branch) */
__device__ __forceinline__ float rcp_approx(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

/* 4 offset-binary low codes u = c + 8 (a byte each) as the INT8 weights
 * k c in the same bytes: in 16-bit lanes u k + 256 - 8 k = 256 + k c stays
 * within [129, 383] for |k c| <= 127, so no carry crosses a lane, and the
 * lane's low byte is k c mod 256. */
__device__ __forceinline__ uint32_t scale_codes(uint32_t u, uint32_t k, uint32_t c) {
    const uint32_t e = (u & 0x00FF00FFu) * k + c, o = ((u >> 8) & 0x00FF00FFu) * k + c;
    return __byte_perm(e, o, 0x6240);
}

/* The longest row whose INT32 sum of INT8 x INT8 products cannot overflow:
 * k x 128 x 127 < 2^31 (kc_sq_wg.cu and the INT32 decode kernel check it) */
#define KC_SQ_IS_KMAX 132000L

/* The A fragment from a unit's offset-binary low and high fragments and
 * the k_g of rows g and g + 8: the low codes times k_g less 8 k_g (the
 * offset: (256 - 8 k_g) x 0x10001 per 16-bit pair), the highs ORed in */
__device__ __forceinline__ void is_assemble(const uint32_t (&Alo)[8], const uint32_t (&Ahi)[8], uint32_t k0,
                                            uint32_t k1, uint32_t (&A)[8]) {
    const uint32_t c0 = (256u - 8u * k0) * 0x10001u, c1 = (256u - 8u * k1) * 0x10001u;
#pragma unroll
    for (int i = 0; i < 8; i++) A[i] = scale_codes(Alo[i], i & 1 ? k1 : k0, i & 1 ? c1 : c0) | Ahi[i];
}

/* The one INT8 A fragment of a unit with integer bank scales (kc_sq.cuh):
 * every weight is k_g lo + hi (k_g = s_lo / s_hi, an integer), so the low
 * codes times k_g with the highs ORed in (a byte has one of them nonzero:
 * kc_sq.cu's upload checks). Register i holds row g + 8 (i & 1). */
__device__ __forceinline__ void is_frags(const Raw<4, 4, true> (&cur)[1], unsigned item, uint8_t *tiles,
                                         const MmArgs &a, int lane, uint32_t (&A)[8]) {
    uint32_t Alo[1][8], Ahi[1][8];
    group_frags<4, 1, 4, true, true>(cur, item, tiles, a, lane, Alo, Ahi); /* low codes offset-binary */
    /* k_g of rows g and g + 8: s_lo / s_hi is an integer <= 127, so the
     * product with the rounded reciprocal is within 2^-22 of it */
    const float sl0 = half_lo(cur[0].sc[0]), sh0 = half_hi(cur[0].sc[0]);
    const float sl1 = half_lo(cur[0].sc[1]), sh1 = half_hi(cur[0].sc[1]);
    const uint32_t k0 = sh0 != 0.0f ? (uint32_t)__float2int_rn(sl0 * rcp_approx(sh0)) : 0u;
    const uint32_t k1 = sh1 != 0.0f ? (uint32_t)__float2int_rn(sl1 * rcp_approx(sh1)) : 0u;
    is_assemble(Alo[0], Ahi[0], k0, k1, A);
}

/* A row's reciprocal scale for is_frags_r: 0 for a row of zeros (its k_g
 * are 0), else rcp_approx of its scale, which with integer bank scales is
 * every unit's high scale of the row (kc_sq.cu's upload checks) */
__device__ __forceinline__ float is_rcp(float s) { return s != 0.0f ? rcp_approx(s) : 0.0f; }

/* is_frags with the rows' is_rcp given (r0, r1: rows g and g + 8): the
 * same k_g bit for bit (rint(s_lo r), r the same reciprocal), the division
 * taken out of the unit: k_g is rounded by adding 1.5 x 2^23 in the same
 * fma (k_g < 2^22). Why: the per-unit reciprocal, its zero test and the float-to-int
 * conversion were ~8 of the wgmma kernel's ~180 instructions a unit. */
__device__ __forceinline__ void is_frags_r(const Raw<4, 4, true> (&cur)[1], uint8_t *tiles, const MmArgs &a,
                                           int lane, float r0, float r1, uint32_t (&A)[8]) {
    uint32_t Alo[1][8], Ahi[1][8];
    group_frags<4, 1, 4, true, true>(cur, 0, tiles, a, lane, Alo, Ahi); /* low codes offset-binary */
    const uint32_t k0 = __float_as_uint(fmaf(half_lo(cur[0].sc[0]), r0, MAGIC_F)) - (uint32_t)MAGIC_I;
    const uint32_t k1 = __float_as_uint(fmaf(half_lo(cur[0].sc[1]), r1, MAGIC_F)) - (uint32_t)MAGIC_I;
    is_assemble(Alo[0], Ahi[0], k0, k1, A);
}

/* The lane's words of the unit staged at stl - 16 lane (lane_ptrs'
 * offsets): its low codes at stl, its slots at stl + osl, its rows' scales
 * at stl + osc (the lane's offsets, computed once). */
template <bool S16>
struct StOffs {
    uint32_t osl, osc;
    __device__ __forceinline__ explicit StOffs(int lane) {
        typedef UG<4, 4, S16> G;
        osl = G::lo + 8 * lane - 16 * lane;
        osc = G::lo + G::sl + (lane >> 2) * (S16 ? 4 : 8) - 16 * lane;
    }
};

template <bool S16>
__device__ __forceinline__ void lds_unit(Raw<4, 4, S16> &r, uint32_t stl, const StOffs<S16> &o) {
    const uint4 v = lds_v4(stl);
    const uint2 q = lds_v2(stl + o.osl);
    r.lo[0] = v.x, r.lo[1] = v.y, r.lo[2] = v.z, r.lo[3] = v.w, r.sl[0] = q.x, r.sl[1] = q.y;
    const uint32_t sc = stl + o.osc;
    if (S16) {
        r.sc[0] = (uint32_t)lds_s32(sc), r.sc[1] = (uint32_t)lds_s32(sc + 32);
    } else {
        const uint2 v0 = lds_v2(sc), v1 = lds_v2(sc + 64);
        r.sc[0] = v0.x, r.sc[1] = v0.y, r.sc[2] = v1.x, r.sc[3] = v1.y;
    }
}

#endif
