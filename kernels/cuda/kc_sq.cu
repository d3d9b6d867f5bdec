/* kc_sq.cu - SQ-format weights on the GPU: layout, upload, random matrices,
 * per-token INT8 activation quantization and the SQ x INT8 matmul (kc.h,
 * "SQ-format weights"; the host format and the contract are in k_sq.h).
 *
 * Precision mapping. sm_90 has no INT4 tensor cores (mma s4 is emulated,
 * ~50 TOPS), so the low codes are widened in registers to INT8 and the
 * high codes scattered into a second INT8 tile; both go through
 * mma.sync.m16n8k32 s8 x s8 -> s32 against the INT8 activations. Every
 * 64-column subgroup therefore gives two EXACT int32 sums per (row, token),
 * lo_g and hi_g, which are combined in float with the group's two scales
 * (acc += s_lo * lo_g; acc += s_hi * hi_g; y = acc * sx). The integer sums
 * equal k_sq_group_sums_ref's; only the float summation order (and the
 * split of k across warps, reduced in a fixed order) differs from
 * k_sq_combine, so |y_gpu - y_cpu| <= (2 * n_groups + 4) * 2^-23 *
 * sx * sum_g (|s_lo * lo_g| + |s_hi * hi_g|).
 * The int32 -> float conversion is free: the mma accumulators start at the
 * bit pattern of 1.5 * 2^23 and one FADD removes it (exact for |sum| < 2^22;
 * a group sum is at most 128 * 127 * 127 < 2^21).
 *
 * GPU layout. Rows are cut into tiles of 16 (the M side of the mma; the
 * last tile is padded with zero rows) and k into 64-column subgroups. A
 * "unit" (one tile x one subgroup) is stored contiguously, tile-major, so a
 * warp streams its units with 16-byte coalesced loads:
 *   lo     512 B for 4-bit storage (h_low 4 or 3), 256 B for 2-bit: lane L's
 *          16 (8) bytes are exactly the codes of its A-fragment registers.
 *          4-bit: word q holds (row g + 8(q&1), k-chunk q>>1): its low
 *          nibbles are the fragment register for columns 4t..4t+3, its high
 *          nibbles the one for columns 16+4t..; sign extension of 4 codes is
 *          one AND and one IMAD ((v & 0x08080808) * 0x1E + v).
 *   slots  32 lanes x (S2 codes, S2 offsets): the subgroup's high codes, row
 *          r's in lanes 2r and 2r+1, each with its byte offset in the
 *          warp's 1 KB scatter tile (which is laid out in fragment order),
 *          padded with zero codes aimed at a low position of the same row.
 *          A warp scatters them into shared memory (4 byte stores a lane for
 *          8 highs per row), reads its 32 bytes back as the hi fragments and
 *          clears them (double-buffered: one __syncwarp per subgroup).
 *   scales 16 rows x (s_lo, s_hi): float, or half when every scale of the
 *          matrix is exactly a half (then the layout reads 6.5 bits per
 *          weight for 8/4 b64 s0.875 instead of 7).
 * A group of 128 (b = 128) is two subgroups whose integer sums are added
 * before the float combination; each subgroup then carries up to
 * min(h, 64) slots (the bank's highs fall unevenly into its halves).
 *
 * Kernels.
 *   decode (m <= 64): one warp per (tile, k-range); a block holds the
 *     k-split warps of one or more tiles and reduces them in shared memory
 *     in a fixed order (deterministic). Up to 64 tokens (8 n-tiles of the
 *     mma) reuse each unpacked weight fragment; activations come through L1.
 *     Weight units are loaded one group ahead, bypassing L1.
 *   prefill (m > 64, fast layout): the same warp code with 128 tokens per
 *     warp, 8 warps (128 rows) a block, the block's token chunk read from
 *     an activation copy repacked in fragment order (one 16-byte load per
 *     lane per n-tile and subgroup, shared by the block's warps through L1);
 *     blocks walk the token chunks of a row block consecutively so the
 *     weights are re-read from L2.
 *   Other shapes (2-bit storage, b = 128, other high counts) take the same
 *     code with run-time slot counts and float scales; beyond 64 tokens they
 *     run in chunks of 64.
 */
#include "kc.h"
#include "kc_internal.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- geometry --------------------------------------------------------------------- */

struct kc_sq {
    long n, k;
    int h_low, lobits, b, h, G, spg;
    int S;          /* slots per row per subgroup (highest possible high count) */
    int s2;         /* slots per lane, a multiple of 4 */
    int s16;        /* scales stored as half */
    long ntiles, nsub, ngroups;
    int lo_bytes, slot_bytes, scale_bytes, unit_bytes;
    uint8_t *d;
    size_t bytes;
    char desc[96];
};

/* the parts of the geometry the kernels and the repacking need */
struct Geo {
    long n, k, ntiles, nsub, ngroups;
    int lobits, b, h, G, spg, s2, s16, lo_bytes, slot_bytes, unit_bytes;
};

static Geo geo_of(const kc_sq *w) {
    Geo g;
    g.n = w->n, g.k = w->k, g.ntiles = w->ntiles, g.nsub = w->nsub, g.ngroups = w->ngroups;
    g.lobits = w->lobits, g.b = w->b, g.h = w->h, g.G = w->G, g.spg = w->spg, g.s2 = w->s2;
    g.s16 = w->s16, g.lo_bytes = w->lo_bytes, g.slot_bytes = w->slot_bytes;
    g.unit_bytes = w->unit_bytes;
    return g;
}

static int is_fast(const kc_sq *w) { return w->lobits == 4 && w->spg == 1 && w->s2 == 4; }

/* Fills the geometry; NULL if the shape is supported, else why not. */
static const char *geo_init(kc_sq *w, long n, long k, int h_low, int b, int h, int s16) {
    if (h_low != 2 && h_low != 3 && h_low != 4) return "h_low must be 2, 3 or 4";
    if (b < 4 || b > 128 || (b & (b - 1))) return "the bank size must be a power of two in [4, 128]";
    if (h < 1 || h > b / 2) return "the high count per bank must be in [1, b/2]";
    int G = b > 64 ? b : 64;
    if (n < 1 || k < G || k % G) return "k must be a positive multiple of the scale group";
    if (k / 64 > (1L << 24) || n > (1L << 30)) return "matrix too large";
    memset(w, 0, sizeof *w);
    w->n = n, w->k = k, w->h_low = h_low, w->lobits = h_low == 2 ? 2 : 4;
    w->b = b, w->h = h, w->G = G, w->spg = G / 64;
    w->S = b <= 64 ? h * (64 / b) : (h < 64 ? h : 64);
    w->s2 = ((w->S + 1) / 2 + 3) / 4 * 4;
    w->ntiles = (n + 15) / 16, w->nsub = k / 64, w->ngroups = k / G;
    w->lo_bytes = 16 * 64 * w->lobits / 8;
    w->slot_bytes = 32 * 2 * w->s2;
    w->s16 = s16 && is_fast(w);
    w->scale_bytes = 16 * (w->s16 ? 4 : 8);
    w->unit_bytes = w->lo_bytes + w->slot_bytes + w->scale_bytes;
    w->bytes = (size_t)w->ntiles * w->nsub * w->unit_bytes;
    snprintf(w->desc, sizeof w->desc, "SQ %d-bit b%d h%d: %s path, %s scales, %.3f bits/weight",
             h_low, b, h, is_fast(w) ? "fast" : "generic", w->s16 ? "half" : "float",
             8.0 * w->bytes / ((double)n * k));
    return NULL;
}

/* ---- shared host/device pieces -------------------------------------------------------- */

#define HD __host__ __device__ __forceinline__

/* the host format (k_sq.h), as raw pointers valid where the code runs */
struct RawView {
    const uint8_t *lo;
    const int8_t *hi;
    const uint8_t *idx;
    const float *s_lo, *s_hi;
};

HD int raw_lo_bits(const RawView &v, const Geo &g, long r, long j) { /* stored bit pattern */
    size_t e = (size_t)r * g.k + j;
    if (g.lobits == 4) return (v.lo[e >> 1] >> (4 * (e & 1))) & 15;
    return (v.lo[e >> 2] >> (2 * (e & 3))) & 3;
}

/* byte offset of column c (0..63) within a row's part of the scatter tile */
HD int slot_off(int c) { return ((c >> 2) & 3) * 32 + ((c >> 4) << 2) + (c & 3); }

HD void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* Writes lane `lane`'s share of unit (tile, sub): its lo bytes, its slots and
 * (lanes 0..15) row `lane`'s scales. */
HD void repack_lane(const RawView &v, const Geo &g, long tile, long sub, int lane, uint8_t *unit) {
    const int gi = lane >> 2, tig = lane & 3;
    const long j0 = sub * 64;
    if (g.lobits == 4) {
        for (int q = 0; q < 4; q++) {
            int kc = q >> 1, rh = q & 1;
            long r = tile * 16 + gi + 8 * rh;
            uint32_t w = 0;
            if (r < g.n)
                for (int i = 0; i < 4; i++) {
                    int c0 = 32 * kc + 4 * tig + i;
                    w |= (uint32_t)raw_lo_bits(v, g, r, j0 + c0) << (8 * i);
                    w |= (uint32_t)raw_lo_bits(v, g, r, j0 + c0 + 16) << (8 * i + 4);
                }
            put32(unit + lane * 16 + q * 4, w);
        }
    } else {
        for (int p = 0; p < 2; p++) {
            long r = tile * 16 + gi + 8 * p;
            uint32_t w = 0;
            if (r < g.n)
                for (int c = 0; c < 4; c++)
                    for (int i = 0; i < 4; i++)
                        w |= (uint32_t)raw_lo_bits(v, g, r, j0 + 16 * c + 4 * tig + i) << (8 * i + 2 * c);
            put32(unit + lane * 8 + p * 4, w);
        }
    }
    /* slots: the row's highs in this subgroup in position order; this lane
     * takes list entries [half * s2, half * s2 + s2) */
    const long r = tile * 16 + (lane >> 1);
    const int first = (lane & 1) * g.s2;
    uint8_t *sv = unit + g.lo_bytes + lane * 2 * g.s2, *sp = sv + g.s2;
    int cnt = 0, c_low = 0, gap = 0;
    if (r < g.n) {
        const long nbk = g.k / g.b;
        if (g.b <= 64) {
            const int per = 64 / g.b;
            for (int bi = 0; bi < per; bi++) {
                size_t e0 = ((size_t)r * nbk + (size_t)(j0 / g.b + bi)) * g.h;
                for (int e = 0; e < g.h; e++) {
                    int c = bi * g.b + v.idx[e0 + e];
                    if (!gap) { if (c == c_low) c_low++; else gap = 1; }
                    if (cnt >= first && cnt < first + g.s2)
                        sv[cnt - first] = (uint8_t)v.hi[e0 + e], sp[cnt - first] = (uint8_t)slot_off(c);
                    cnt++;
                }
            }
        } else { /* b = 128: this subgroup is one half of a bank */
            const int half = (int)(sub & 1);
            size_t e0 = ((size_t)r * nbk + (size_t)(j0 / 128)) * g.h;
            for (int e = 0; e < g.h; e++) {
                int c = v.idx[e0 + e] - 64 * half;
                if (c < 0 || c >= 64) continue;
                if (!gap) { if (c == c_low) c_low++; else gap = 1; }
                if (cnt >= first && cnt < first + g.s2)
                    sv[cnt - first] = (uint8_t)v.hi[e0 + e], sp[cnt - first] = (uint8_t)slot_off(c);
                cnt++;
            }
        }
    }
    /* padding: zero codes at a low position of this row (c_low < 64 whenever
     * the row has fewer highs here than slots), so no two lanes ever write
     * different values to one byte */
    for (int s = cnt > first ? cnt - first : 0; s < g.s2; s++) sv[s] = 0, sp[s] = (uint8_t)slot_off(c_low & 63);
    if (lane < 16) {
        long rr = tile * 16 + lane, grp = sub / g.spg;
        float sl = rr < g.n ? v.s_lo[rr * g.ngroups + grp] : 0.0f;
        float sh = rr < g.n ? v.s_hi[rr * g.ngroups + grp] : 0.0f;
        uint8_t *sc = unit + g.lo_bytes + g.slot_bytes;
        if (g.s16) {
            __half a = __float2half_rn(sl), b = __float2half_rn(sh);
            uint16_t ua, ub;
            memcpy(&ua, &a, 2), memcpy(&ub, &b, 2);
            put32(sc + lane * 4, (uint32_t)ua | (uint32_t)ub << 16);
        } else {
            uint32_t ua, ub;
            memcpy(&ua, &sl, 4), memcpy(&ub, &sh, 4);
            put32(sc + lane * 8, ua), put32(sc + lane * 8 + 4, ub);
        }
    }
}

/* ---- random SQ matrices (same values on host and device) ------------------------------ */

HD uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct GenP {
    long n, k;
    int h_low, lobits, b, h, G, f16;
    uint64_t seed;
};

/* One bank: h distinct positions (sorted by construction), high codes in
 * [-127, 127], low codes in the symmetric h_low range and 0 at high
 * positions. lo must be zero-initialised (the bank's bytes are OR-ed). */
HD void gen_bank(const GenP &p, long r, long bk, uint8_t *lo, int8_t *hi, uint8_t *idx) {
    const long nbk = p.k / p.b;
    const uint64_t st = mix64(p.seed ^ mix64((uint64_t)(r * nbk + bk) * 0x2545F4914F6CDD1Dull));
    uint64_t m0 = 0, m1 = 0;
    int cnt = 0;
    for (uint64_t i = 0; cnt < p.h; i++) {
        int pos = (int)(mix64(st + i) % (uint64_t)p.b);
        uint64_t bit = 1ull << (pos & 63);
        uint64_t &m = pos < 64 ? m0 : m1;
        if (!(m & bit)) m |= bit, cnt++;
    }
    const int q = (1 << (p.h_low - 1)) - 1;
    size_t hb = ((size_t)r * nbk + bk) * p.h;
    int slot = 0;
    for (int pos = 0; pos < p.b; pos++) {
        int high = (int)(((pos < 64 ? m0 : m1) >> (pos & 63)) & 1);
        uint64_t d = mix64(st ^ (0xD1B54A32D192ED03ull * (uint64_t)(pos + 1)));
        int code = 0;
        if (high) {
            idx[hb + slot] = (uint8_t)pos;
            hi[hb + slot] = (int8_t)((int)(d % 255) - 127);
            slot++;
        } else {
            code = (int)(d % (uint64_t)(2 * q + 1)) - q;
        }
        size_t e = (size_t)r * p.k + (size_t)bk * p.b + pos;
        if (p.lobits == 4) lo[e >> 1] |= (uint8_t)((code & 15) << (4 * (e & 1)));
        else lo[e >> 2] |= (uint8_t)((code & 3) << (2 * (e & 3)));
    }
}

/* Positive scales built from integers (exact on host and device): s_lo in
 * [2^-9, 2^-8), s_hi in [2^-12, 2^-10); 11-bit mantissas with f16 (exact
 * halves), 24-bit otherwise. */
HD void gen_scales(const GenP &p, long r, long grp, float *s_lo, float *s_hi) {
    const long ng = p.k / p.G;
    uint64_t d = mix64(p.seed ^ mix64(0x5CA1E5ull + (uint64_t)(r * ng + grp) * 0x9E3779B97F4A7C15ull));
    float a, b;
    if (p.f16) {
        a = ldexpf((float)(1024 + (d & 1023)), -19);
        b = ldexpf((float)(1024 + ((d >> 10) & 1023)), -22 + (int)((d >> 62) & 1));
    } else {
        a = ldexpf((float)(0x800000 | (d & 0x7FFFFF)), -32);
        b = ldexpf((float)(0x800000 | ((d >> 23) & 0x7FFFFF)), -35 + (int)((d >> 62) & 1));
    }
    s_lo[r * ng + grp] = a, s_hi[r * ng + grp] = b;
}

/* ---- device kernels: generation and repacking ------------------------------------------- */

__global__ void k_gen_banks(GenP p, uint8_t *lo, int8_t *hi, uint8_t *idx) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, nbk = p.k / p.b;
    if (t < p.n * nbk) gen_bank(p, t / nbk, t % nbk, lo, hi, idx);
}

__global__ void k_gen_scales(GenP p, float *s_lo, float *s_hi) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, ng = p.k / p.G;
    if (t < p.n * ng) gen_scales(p, t / ng, t % ng, s_lo, s_hi);
}

__global__ void k_repack(RawView v, Geo g, uint8_t *d) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, unit = t >> 5;
    if (unit >= g.ntiles * g.nsub) return;
    repack_lane(v, g, unit / g.nsub, unit % g.nsub, (int)(t & 31), d + (size_t)unit * g.unit_bytes);
}

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

__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* A fragments (index kc * 4 + reg) of the low codes from the lane's raw words */
template <int LOBITS>
HD void unpack_lo(const uint32_t *raw, uint32_t *A) {
    if (LOBITS == 4) {
        for (int q = 0; q < 4; q++) {
            const int kc = q >> 1, rh = q & 1;
            uint32_t w = raw[q], w4 = w >> 4;
            A[kc * 4 + rh] = (w & 0x08080808u) * 0x1Eu + (w & 0x0F0F0F0Fu);
            A[kc * 4 + 2 + rh] = (w4 & 0x08080808u) * 0x1Eu + (w4 & 0x0F0F0F0Fu);
        }
    } else {
        for (int p = 0; p < 2; p++)
            for (int c = 0; c < 4; c++) {
                uint32_t v = raw[p] >> (2 * c);
                A[(c >> 1) * 4 + (c & 1) * 2 + p] = (v & 0x02020202u) * 0x7Eu + (v & 0x03030303u);
            }
    }
}

/* the lane's 32 bytes of the scatter tile as hi A fragments */
HD void hi_frags(const uint32_t *w8, uint32_t *A) {
    A[0] = w8[0], A[2] = w8[1], A[4] = w8[2], A[6] = w8[3];
    A[1] = w8[4], A[3] = w8[5], A[5] = w8[6], A[7] = w8[7];
}

HD int scatter_rowbase(int lane) { int r = lane >> 1; return (r & 7) * 128 + (r >> 3) * 16; }

HD void scatter4(uint8_t *tile, int rowbase, uint32_t vals, uint32_t pos) {
    for (int i = 0; i < 4; i++) tile[rowbase + ((pos >> (8 * i)) & 255)] = (uint8_t)(vals >> (8 * i));
}

/* raw per-lane words of one unit, loaded ahead of their use */
template <int LOBITS, int S2C, bool S16>
struct Raw {
    uint32_t lo[LOBITS == 4 ? 4 : 2];
    uint32_t sl[S2C == 4 ? 2 : 1];
    uint32_t sc[S16 ? 2 : 4];
};

struct MmArgs {
    const uint8_t *w;
    long n, ntiles, nsub, ngroups, m, k;
    int unit_bytes, lo_bytes, slot_bytes, s2, ks, tpb;
    const int8_t *qx;
    const uint4 *xf; /* activations in fragment order (prefill) */
    const float *sx;
    float *y;
};

template <int LOBITS, int S2C, bool S16>
__device__ __forceinline__ void load_unit(Raw<LOBITS, S2C, S16> &r, const uint8_t *u, const MmArgs &a,
                                          int lane) {
    if (LOBITS == 4) {
        uint4 v = ld_stream4(u + lane * 16);
        r.lo[0] = v.x, r.lo[1] = v.y, r.lo[2] = v.z, r.lo[3] = v.w;
    } else {
        uint2 v = ld_stream2(u + lane * 8);
        r.lo[0] = v.x, r.lo[1] = v.y;
    }
    if (S2C == 4) {
        uint2 v = ld_stream2(u + a.lo_bytes + lane * 8);
        r.sl[0] = v.x, r.sl[1] = v.y;
    }
    const uint8_t *sc = u + a.lo_bytes + a.slot_bytes;
    const int g = lane >> 2;
    if (S16) {
        r.sc[0] = ld_stream1(sc + g * 4), r.sc[1] = ld_stream1(sc + (g + 8) * 4);
    } else {
        uint2 v0 = ld_stream2(sc + g * 8), v1 = ld_stream2(sc + (g + 8) * 8);
        r.sc[0] = v0.x, r.sc[1] = v0.y, r.sc[2] = v1.x, r.sc[3] = v1.y;
    }
}

template <bool BFRAG, int NT>
__host__ __device__ constexpr int warp_smem() {
    return BFRAG ? 2048 : (NT * 512 > 2048 ? NT * 512 : 2048);
}

template <int NT, int LOBITS, int SPG, int S2C, bool S16, bool BFRAG>
__global__ void __launch_bounds__(BFRAG ? 256 : 512, 1) k_sq_mm(MmArgs a) {
    extern __shared__ uint4 smem_u4[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int KS = BFRAG ? 1 : a.ks;
    const int ks = warp % KS, tl = warp / KS;
    const long tile = (BFRAG ? (long)blockIdx.y : (long)blockIdx.x) * a.tpb + tl;
    const long tok0 = (BFRAG ? (long)blockIdx.x : (long)blockIdx.y) * (NT * 8);
    constexpr int PW = warp_smem<BFRAG, NT>();
    uint8_t *wsm = (uint8_t *)smem_u4 + warp * PW;
    const bool valid = tile < a.ntiles;
    const int ngr = (int)a.ngroups; /* < 2^24: 32-bit division */
    const long g0 = valid ? ks * ngr / KS : 0, g1 = valid ? (ks + 1) * ngr / KS : 0;
    const int rowbase = scatter_rowbase(lane);
    { /* the scatter tiles start (and are kept) zero; each lane owns 32 B of each */
        const uint4 z = make_uint4(0, 0, 0, 0);
        uint4 *own = (uint4 *)(wsm + lane * 32);
        own[0] = z, own[1] = z, own[64] = z, own[65] = z;
        __syncwarp();
    }

    float acc[NT][4];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;

    const uint8_t *tbase = a.w + (size_t)(valid ? tile : 0) * a.nsub * a.unit_bytes;
    Raw<LOBITS, S2C, S16> cur[SPG], nxt[SPG];
    if (g0 < g1)
#pragma unroll
        for (int s = 0; s < SPG; s++) load_unit(cur[s], tbase + (size_t)(g0 * SPG + s) * a.unit_bytes, a, lane);
    int buf = 0;
    for (long grp = g0; grp < g1; grp++) {
        if (grp + 1 < g1)
#pragma unroll
            for (int s = 0; s < SPG; s++)
                load_unit(nxt[s], tbase + (size_t)((grp + 1) * SPG + s) * a.unit_bytes, a, lane);
        uint32_t Alo[SPG][8], Ahi[SPG][8];
#pragma unroll
        for (int s = 0; s < SPG; s++) {
            unpack_lo<LOBITS>(cur[s].lo, Alo[s]);
            uint8_t *tileb = wsm + (buf & 1) * 1024;
            buf++;
            if (S2C == 4) {
                scatter4(tileb, rowbase, cur[s].sl[0], cur[s].sl[1]);
            } else {
                const uint8_t *sp = tbase + (size_t)(grp * SPG + s) * a.unit_bytes + a.lo_bytes + lane * 2 * a.s2;
                for (int q = 0; q < a.s2; q += 4)
                    scatter4(tileb, rowbase, ld_stream1(sp + q), ld_stream1(sp + a.s2 + q));
            }
            __syncwarp();
            uint4 h0 = *(const uint4 *)(tileb + lane * 32), h1 = *(const uint4 *)(tileb + lane * 32 + 16);
            const uint4 z = make_uint4(0, 0, 0, 0);
            *(uint4 *)(tileb + lane * 32) = z, *(uint4 *)(tileb + lane * 32 + 16) = z;
            const uint32_t w8[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
            hi_frags(w8, Ahi[s]);
        }
        float sl0, sh0, sl1, sh1;
        if (S16) {
            float2 f0 = __half22float2(*(const __half2 *)&cur[0].sc[0]);
            float2 f1 = __half22float2(*(const __half2 *)&cur[0].sc[1]);
            sl0 = f0.x, sh0 = f0.y, sl1 = f1.x, sh1 = f1.y;
        } else {
            sl0 = __uint_as_float(cur[0].sc[0]), sh0 = __uint_as_float(cur[0].sc[1]);
            sl1 = __uint_as_float(cur[0].sc[2]), sh1 = __uint_as_float(cur[0].sc[3]);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            int ilo[4] = {MAGIC_I, MAGIC_I, MAGIC_I, MAGIC_I}, ihi[4] = {MAGIC_I, MAGIC_I, MAGIC_I, MAGIC_I};
#pragma unroll
            for (int s = 0; s < SPG; s++) {
                const long sub = grp * SPG + s;
                uint32_t b[4];
                if (BFRAG) {
                    uint4 v = __ldg(a.xf + (((tok0 >> 3) + t) * a.nsub + sub) * 32 + lane);
                    b[0] = v.x, b[1] = v.y, b[2] = v.z, b[3] = v.w;
                } else {
                    const long tok = tok0 + t * 8 + g;
                    if (tok < a.m) {
                        const uint32_t *p = (const uint32_t *)(a.qx + tok * a.k + sub * 64 + 4 * tig);
                        b[0] = __ldg(p), b[1] = __ldg(p + 4), b[2] = __ldg(p + 8), b[3] = __ldg(p + 12);
                    } else {
                        b[0] = b[1] = b[2] = b[3] = 0;
                    }
                }
                mma_s8(ilo, Alo[s][0], Alo[s][1], Alo[s][2], Alo[s][3], b[0], b[1]);
                mma_s8(ilo, Alo[s][4], Alo[s][5], Alo[s][6], Alo[s][7], b[2], b[3]);
                mma_s8(ihi, Ahi[s][0], Ahi[s][1], Ahi[s][2], Ahi[s][3], b[0], b[1]);
                mma_s8(ihi, Ahi[s][4], Ahi[s][5], Ahi[s][6], Ahi[s][7], b[2], b[3]);
            }
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float sl = e < 2 ? sl0 : sl1, sh = e < 2 ? sh0 : sh1;
                acc[t][e] = fmaf(sl, __int_as_float(ilo[e]) - MAGIC_F, acc[t][e]);
                acc[t][e] = fmaf(sh, __int_as_float(ihi[e]) - MAGIC_F, acc[t][e]);
            }
        }
#pragma unroll
        for (int s = 0; s < SPG; s++) cur[s] = nxt[s];
    }

    if (KS > 1) { /* deterministic split-k reduction: k-split 0 adds 1, 2, ... in order */
        __syncwarp();
        float *red = (float *)wsm;
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int e = 0; e < 4; e++) red[(t * 4 + e) * 32 + lane] = acc[t][e];
        __syncthreads();
        if (ks != 0 || !valid) return;
        for (int q = 1; q < KS; q++) {
            const float *o = (const float *)((const uint8_t *)smem_u4 + (warp + q) * PW);
#pragma unroll
            for (int t = 0; t < NT; t++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[t][e] += o[(t * 4 + e) * 32 + lane];
        }
    }
    if (!valid) return;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const long row = tile * 16 + g + 8 * (e >> 1), tok = tok0 + t * 8 + 2 * tig + (e & 1);
            if (row < a.n && tok < a.m) a.y[tok * a.n + row] = acc[t][e] * __ldg(a.sx + tok);
        }
}

/* activations [m][k] -> fragment order [m_pad/8][k/64][32 lanes] x 16 B, zero past m */
__global__ void k_frag_x(const int8_t *qx, long m, long k, long ntt, uint4 *xf) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, nsub = k / 64;
    if (t >= ntt * nsub * 32) return;
    int lane = (int)(t & 31);
    long sub = (t >> 5) % nsub, tt = (t >> 5) / nsub, tok = tt * 8 + (lane >> 2);
    uint4 v = make_uint4(0, 0, 0, 0);
    if (tok < m) {
        const uint32_t *p = (const uint32_t *)(qx + tok * k + sub * 64 + 4 * (lane & 3));
        v = make_uint4(__ldg(p), __ldg(p + 4), __ldg(p + 8), __ldg(p + 12));
    }
    xf[t] = v;
}

/* ---- per-token INT8 quantization (bit-identical to k_quant_row_i8) ----------------- */

__global__ void k_quant_i8(const float *x, long k, int8_t *q, float *sx) {
    const float *xr = x + (size_t)blockIdx.x * k;
    int8_t *qr = q + (size_t)blockIdx.x * k;
    const bool vec = (k & 3) == 0;
    float mx = 0.0f;
    if (vec)
        for (long j = threadIdx.x; j < k / 4; j += blockDim.x) {
            float4 v = __ldg((const float4 *)xr + j);
            mx = fmaxf(mx, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
        }
    else
        for (long j = threadIdx.x; j < k; j += blockDim.x) mx = fmaxf(mx, fabsf(xr[j]));
    __shared__ float red[32];
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = 0.0f;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) mx = fmaxf(mx, red[i]);
    const float s = __fdiv_rn(mx, 127.0f);
    if (threadIdx.x == 0) sx[blockIdx.x] = s;
#define QV(xv) ((int8_t)(s > 0.0f ? fminf(fmaxf(rintf(__fdiv_rn((xv), s)), -127.0f), 127.0f) : 0.0f))
    if (vec)
        for (long j = threadIdx.x; j < k / 4; j += blockDim.x) {
            float4 v = __ldg((const float4 *)xr + j);
            char4 o;
            o.x = QV(v.x), o.y = QV(v.y), o.z = QV(v.z), o.w = QV(v.w);
            ((char4 *)qr)[j] = o;
        }
    else
        for (long j = threadIdx.x; j < k; j += blockDim.x) qr[j] = QV(xr[j]);
#undef QV
}

/* ---- host side ------------------------------------------------------------------------- */

static int g_nsm;

static int n_sm(void) {
    if (!g_nsm) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&g_nsm, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            g_nsm = 132;
    }
    return g_nsm;
}

static kc_sq *sq_new(long n, long k, int h_low, int b, int h, int s16) {
    kc_sq *w = (kc_sq *)calloc(1, sizeof *w);
    if (!w) {
        kc_set_error("out of host memory");
        return NULL;
    }
    const char *why = geo_init(w, n, k, h_low, b, h, s16);
    if (why) {
        kc_set_error("SQ matrix %ld x %ld (h_low %d, b %d, h %d) not supported: %s", n, k, h_low, b, h, why);
        free(w);
        return NULL;
    }
    if (!(w->d = (uint8_t *)kc_malloc(w->bytes))) {
        free(w);
        return NULL;
    }
    return w;
}

/* repacks raw device arrays into w->d */
static int sq_repack(kc_sq *w, const RawView &v) {
    long threads = w->ntiles * w->nsub * 32;
    k_repack<<<kc_blocks(threads, 256), 256, 0, KC_STREAM>>>(v, geo_of(w), w->d);
    return kc_check_launch("k_repack");
}

static int half_exact(const float *s, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (__half2float(__float2half_rn(s[i])) != s[i]) return 0;
    return 1;
}

extern "C" kc_sq_t *kc_sq_upload(const k_sq_t *t) {
    if (!t || !t->lo || !t->hi || !t->idx || !t->s_lo || !t->s_hi) {
        kc_set_error("kc_sq_upload: incomplete SQ tensor");
        return NULL;
    }
    if (t->G != (t->b > 64 ? t->b : 64)) {
        kc_set_error("kc_sq_upload: scale group %d does not match bank size %d", t->G, t->b);
        return NULL;
    }
    size_t ng = (size_t)t->n * (t->k / t->G);
    int s16 = half_exact(t->s_lo, ng) && half_exact(t->s_hi, ng);
    kc_sq *w = sq_new(t->n, t->k, t->h_low, t->b, t->h, s16);
    if (!w) return NULL;
    size_t lob = (size_t)t->n * t->k * w->lobits / 8, hib = (size_t)t->n * (t->k / t->b) * t->h;
    uint8_t *lo = (uint8_t *)kc_malloc(lob), *idx = (uint8_t *)kc_malloc(hib);
    int8_t *hi = (int8_t *)kc_malloc(hib);
    float *sl = (float *)kc_malloc(ng * 4), *sh = (float *)kc_malloc(ng * 4);
    int rc = -1;
    if (lo && idx && hi && sl && sh && !kc_upload(lo, t->lo, lob) && !kc_upload(hi, t->hi, hib) &&
        !kc_upload(idx, t->idx, hib) && !kc_upload(sl, t->s_lo, ng * 4) && !kc_upload(sh, t->s_hi, ng * 4)) {
        RawView v = {lo, hi, idx, sl, sh};
        rc = sq_repack(w, v);
        if (!rc) rc = kc_sync();
    }
    kc_free(lo), kc_free(idx), kc_free(hi), kc_free(sl), kc_free(sh);
    if (rc) {
        kc_sq_free(w);
        return NULL;
    }
    return w;
}

static GenP gen_params(long n, long k, int h_low, int b, int h, uint64_t seed, int flags) {
    GenP p;
    p.n = n, p.k = k, p.h_low = h_low, p.lobits = h_low == 2 ? 2 : 4, p.b = b, p.h = h;
    p.G = b > 64 ? b : 64, p.f16 = (flags & KC_SQ_F16_SCALES) != 0, p.seed = seed;
    return p;
}

extern "C" kc_sq_t *kc_sq_random_ex(long n, long k, int h_low, int b, int h, uint64_t seed, int flags) {
    GenP p = gen_params(n, k, h_low, b, h, seed, flags);
    kc_sq *w = sq_new(n, k, h_low, b, h, p.f16);
    if (!w) return NULL;
    size_t lob = (size_t)n * k * w->lobits / 8, hib = (size_t)n * (k / b) * h, ng = (size_t)n * (k / w->G);
    uint8_t *lo = (uint8_t *)kc_malloc(lob), *idx = (uint8_t *)kc_malloc(hib);
    int8_t *hi = (int8_t *)kc_malloc(hib);
    float *sl = (float *)kc_malloc(ng * 4), *sh = (float *)kc_malloc(ng * 4);
    int rc = -1;
    if (lo && idx && hi && sl && sh && !kc_memset(lo, 0, lob)) {
        long nb = n * (k / b);
        k_gen_banks<<<kc_blocks(nb, 256), 256, 0, KC_STREAM>>>(p, lo, hi, idx);
        k_gen_scales<<<kc_blocks((long)ng, 256), 256, 0, KC_STREAM>>>(p, sl, sh);
        RawView v = {lo, hi, idx, sl, sh};
        if (!kc_check_launch("k_gen_banks") && !sq_repack(w, v)) rc = kc_sync();
    }
    kc_free(lo), kc_free(idx), kc_free(hi), kc_free(sl), kc_free(sh);
    if (rc) {
        kc_sq_free(w);
        return NULL;
    }
    return w;
}

extern "C" kc_sq_t *kc_sq_random(long n, long k, int h_low, int b, int h, uint64_t seed) {
    return kc_sq_random_ex(n, k, h_low, b, h, seed, 0);
}

extern "C" int kc_sq_random_host(long n, long k, int h_low, int b, int h, uint64_t seed, int flags, uint8_t *lo,
                                 int8_t *hi, uint8_t *idx, float *s_lo, float *s_hi) {
    kc_sq tmp;
    const char *why = geo_init(&tmp, n, k, h_low, b, h, 0);
    if (why) {
        kc_set_error("kc_sq_random_host: %s", why);
        return -1;
    }
    GenP p = gen_params(n, k, h_low, b, h, seed, flags);
    memset(lo, 0, (size_t)n * k * tmp.lobits / 8);
    for (long r = 0; r < n; r++) {
        for (long bk = 0; bk < k / b; bk++) gen_bank(p, r, bk, lo, hi, idx);
        for (long grp = 0; grp < k / p.G; grp++) gen_scales(p, r, grp, s_lo, s_hi);
    }
    return 0;
}

extern "C" void kc_sq_free(kc_sq_t *w) {
    if (!w) return;
    kc_free(w->d);
    free(w);
}

extern "C" size_t kc_sq_bytes(const kc_sq_t *w) { return w ? w->bytes : 0; }

extern "C" const char *kc_sq_describe(const kc_sq_t *w) { return w ? w->desc : "none"; }

extern "C" int kc_quant_i8(const float *d_x, long m, long k, int8_t *d_qx, float *d_sx) {
    if (m <= 0 || k <= 0) return 0;
    if (m > 0x7fffffffL) {
        kc_set_error("kc_quant_i8: too many rows (%ld)", m);
        return -1;
    }
    k_quant_i8<<<(unsigned)m, 256, 0, KC_STREAM>>>(d_x, k, d_qx, d_sx);
    return kc_check_launch("k_quant_i8");
}

/* scratch for the prefill path's fragment-order activations */
static uint4 *g_xf;
static size_t g_xf_bytes;

template <int NT, int LOBITS, int SPG, int S2C, bool S16, bool BFRAG>
static int launch(const MmArgs &a, dim3 grid, int wpb) {
    size_t smem = (size_t)wpb * warp_smem<BFRAG, NT>();
    k_sq_mm<NT, LOBITS, SPG, S2C, S16, BFRAG><<<grid, wpb * 32, smem, KC_STREAM>>>(a);
    return kc_check_launch("k_sq_mm");
}

template <int NT, int LOBITS, int SPG, int S2C, bool S16>
static int launch_decode(const kc_sq *w, MmArgs a) {
    /* enough warps to keep the memory system busy: split k (within a block,
     * in powers of two, never below one group a warp) when there are few
     * row tiles; shared memory caps the block at 32 KB */
    const long target = (long)n_sm() * 32;
    const int kmax = NT >= 8 ? 8 : 16;
    int ks = 1;
    while (ks < kmax && w->ntiles * ks < target && ks * 2 <= w->ngroups) ks *= 2;
    const int tpb = ks >= 8 ? 1 : 8 / ks;
    a.ks = ks, a.tpb = tpb;
    dim3 grid((unsigned)((w->ntiles + tpb - 1) / tpb), (unsigned)((a.m + NT * 8 - 1) / (NT * 8)));
    return launch<NT, LOBITS, SPG, S2C, S16, false>(a, grid, tpb * ks);
}

template <int LOBITS, int SPG, int S2C, bool S16>
static int dispatch_nt(const kc_sq *w, const MmArgs &a) {
    if (a.m <= 8) return launch_decode<1, LOBITS, SPG, S2C, S16>(w, a);
    if (S2C == 4 && a.m <= 16) return launch_decode<2, LOBITS, SPG, S2C, S16>(w, a);
    if (S2C == 4 && a.m <= 32) return launch_decode<4, LOBITS, SPG, S2C, S16>(w, a);
    return launch_decode<8, LOBITS, SPG, S2C, S16>(w, a); /* beyond 64 tokens: chunks of 64 */
}

template <bool S16>
static int launch_prefill(const kc_sq *w, MmArgs a) {
    const long ntt = (a.m + 127) / 128 * 16; /* token tiles of 8, padded to chunks of 128 */
    size_t need = (size_t)ntt * w->nsub * 32 * sizeof(uint4);
    if (need > g_xf_bytes) {
        kc_free(g_xf);
        g_xf_bytes = 0;
        if (!(g_xf = (uint4 *)kc_malloc(need))) return -1;
        g_xf_bytes = need;
    }
    long th = ntt * w->nsub * 32;
    k_frag_x<<<kc_blocks(th, 256), 256, 0, KC_STREAM>>>(a.qx, a.m, a.k, ntt, g_xf);
    if (kc_check_launch("k_frag_x")) return -1;
    a.xf = g_xf, a.ks = 1, a.tpb = 8;
    dim3 grid((unsigned)(ntt / 16), (unsigned)((w->ntiles + 7) / 8));
    return launch<16, 4, 1, 4, S16, true>(a, grid, 8);
}

extern "C" int kc_sq_matmul(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0) {
        kc_set_error("kc_sq_matmul: bad arguments");
        return -1;
    }
    if (m == 0) return 0;
    if ((m + 127) / 128 > 65535L * 1024) {
        kc_set_error("kc_sq_matmul: too many tokens (%ld)", m);
        return -1;
    }
    MmArgs a;
    memset(&a, 0, sizeof a);
    a.w = w->d, a.n = w->n, a.ntiles = w->ntiles, a.nsub = w->nsub, a.ngroups = w->ngroups;
    a.m = m, a.k = w->k, a.unit_bytes = w->unit_bytes, a.lo_bytes = w->lo_bytes;
    a.slot_bytes = w->slot_bytes, a.s2 = w->s2, a.qx = d_qx, a.sx = d_sx, a.y = d_y;
    if (is_fast(w)) {
        if (m > 64) return w->s16 ? launch_prefill<true>(w, a) : launch_prefill<false>(w, a);
        return w->s16 ? dispatch_nt<4, 1, 4, true>(w, a) : dispatch_nt<4, 1, 4, false>(w, a);
    }
    if (w->lobits == 4)
        return w->spg == 1 ? dispatch_nt<4, 1, 0, false>(w, a) : dispatch_nt<4, 2, 0, false>(w, a);
    return w->spg == 1 ? dispatch_nt<2, 1, 0, false>(w, a) : dispatch_nt<2, 2, 0, false>(w, a);
}
