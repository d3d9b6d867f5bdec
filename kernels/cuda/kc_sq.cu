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
 * warp streams its units with coalesced 16-byte loads:
 *   lo     512 B for 4-bit storage (h_low 4 or 3), 256 B for 2-bit: lane L's
 *          16 (8) bytes are exactly the codes of its A-fragment registers,
 *          offset-binary (c + 8, c + 2 for 2-bit). 4-bit: word q holds
 *          (row g + 8 (q & 1), k-chunk q >> 1); its low nibbles are one
 *          fragment register, its high nibbles the next, so unpacking is one
 *          AND (and a shift) per register. Within a subgroup the k order is
 *          permuted (k-slot 16 j + 4 t + i holds column 16 t + 4 j + i) so
 *          that a lane's B fragment is one 16-byte load of 16 consecutive
 *          activation bytes.
 *   slots  32 lanes x (S2 codes, S2 offsets): the subgroup's high codes, row
 *          r's in lanes 2r and 2r+1, each with its byte offset in the row's
 *          part of the warp's scatter tile, padded with zero codes aimed at a
 *          low position of the same row. A warp scatters them into shared
 *          memory (4 byte stores a lane for 8 highs per row), and each lane
 *          reads its two hi A operands back as 16-byte vectors in operand
 *          order and clears them (one __syncwarp per subgroup; a tile is
 *          reused two or three subgroups later).
 *   scales 16 rows x (s_lo, s_hi): float, or half when every scale of the
 *          matrix is exactly a half (then 6.5 bits per weight for 8/4 b64
 *          s0.875 instead of 7).
 * The offset of the low codes comes back out with one more mma per k-chunk
 * (A = -8 in every byte) in the decode kernels, or by an XOR and a sign
 * extension (AND + IMAD) in the prefill kernel, where the unpacking is
 * shared by 16 n-tiles. A group of 128 (b = 128) is two subgroups whose
 * integer sums are added before the float combination; each subgroup then
 * carries up to min(h, 64) slots (the bank's highs fall unevenly into its
 * halves).
 *
 * Kernels.
 *   decode (m <= 64): stream-k. The (tile, group) items of the matrix are
 *     split evenly over one full wave of warps (4 a block); each warp walks
 *     its contiguous range, weight units (and for m <= 8 the activations)
 *     loaded one or two groups ahead into registers, bypassing L1. A tile
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
    if (h < 0 || h > b / 2) return "the high count per bank must be in [0, b/2]";
    int G = b > 64 ? b : 64;
    if (n < 1 || k < G || k % G) return "k must be a positive multiple of the scale group";
    if (k / 64 > (1L << 24) || n > (1L << 30)) return "matrix too large";
    memset(w, 0, sizeof *w);
    w->n = n, w->k = k, w->h_low = h_low, w->lobits = h_low == 2 ? 2 : 4;
    w->b = b, w->h = h, w->G = G, w->spg = G / 64;
    w->S = b <= 64 ? h * (64 / b) : (h < 64 ? h : 64);
    w->s2 = ((w->S + 1) / 2 + 3) / 4 * 4; /* 0 when there are no highs */
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

/* The warp's scatter tile (per buffer 8 x 320 bytes): lane (g, t) finds its
 * two hi A operands as 16-byte vectors at g * 320 + t * 16 (+ 128 for the
 * second k-chunk), words in operand order (row g, row g + 8, row g, row g
 * + 8 for k-slots j = 2kc, 2kc, 2kc + 1, 2kc + 1); the 320-byte row stride
 * keeps every quarter-warp's 16-byte accesses on distinct banks.
 * Byte offset of column c (0..63; k-slot j = (c >> 2) & 3 of lane t = c >> 4)
 * within a row's part of the tile, and the row's base: */
HD int slot_off(int c) { return ((c >> 3) & 1) * 128 + (c >> 4) * 16 + ((c >> 2) & 1) * 8 + (c & 3); }
HD int scatter_rowbase(int lane) { int r = lane >> 1; return (r & 7) * 320 + (r >> 3) * 4; }
#define SQ_TILE 2560 /* bytes of one scatter tile */

/* The half with the same value as x, which must be one (kc_sq_upload checks,
 * gen_scales makes them so), by integer arithmetic: CUDA 13.0's ptxas turned
 * a byte store of a cvt.rn.f16.f32 result into a float -> u8 conversion
 * (F2I.U8.F16), which zeroed the scales' low mantissa bytes on the device. */
HD uint32_t half_bits(float x) {
    uint32_t f;
    memcpy(&f, &x, 4);
    const uint32_t sign = (f >> 16) & 0x8000u, m = f & 0x7FFFFFu;
    const int e = (int)((f >> 23) & 255) - 127 + 15; /* half exponent field */
    if ((f & 0x7FFFFFFFu) == 0) return sign;
    if (e >= 1) return sign | (uint32_t)e << 10 | m >> 13;
    return sign | (m | 0x800000u) >> (14 - e); /* subnormal half */
}

HD void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* Writes lane `lane`'s share of unit (tile, sub): its lo bytes, its slots and
 * (lanes 0..15) row `lane`'s scales. */
HD void repack_lane(const RawView &v, const Geo &g, long tile, long sub, int lane, uint8_t *unit) {
    const int gi = lane >> 2, tig = lane & 3;
    const long j0 = sub * 64;
    if (g.lobits == 4) { /* codes stored offset-binary: c + 8 (c + 2 for 2-bit), so 0 is 0x8 */
        for (int q = 0; q < 4; q++) {
            int kc = q >> 1, rh = q & 1;
            long r = tile * 16 + gi + 8 * rh;
            uint32_t w = 0;
            if (r < g.n)
                for (int i = 0; i < 4; i++) { /* k-slots j = 2kc, 2kc+1 hold columns 16t + 4j + i */
                    int c0 = 16 * tig + 8 * kc + i;
                    w |= (uint32_t)raw_lo_bits(v, g, r, j0 + c0) << (8 * i);
                    w |= (uint32_t)raw_lo_bits(v, g, r, j0 + c0 + 4) << (8 * i + 4);
                }
            put32(unit + lane * 16 + q * 4, w ^ 0x88888888u);
        }
    } else {
        for (int p = 0; p < 2; p++) {
            long r = tile * 16 + gi + 8 * p;
            uint32_t w = 0;
            if (r < g.n)
                for (int c = 0; c < 4; c++)
                    for (int i = 0; i < 4; i++)
                        w |= (uint32_t)raw_lo_bits(v, g, r, j0 + 16 * tig + 4 * c + i) << (8 * i + 2 * c);
            put32(unit + lane * 8 + p * 4, w ^ 0xAAAAAAAAu);
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
            put32(sc + lane * 4, half_bits(sl) | half_bits(sh) << 16);
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

/* d = a . b + c (c: the bit pattern of 1.5 * 2^23, starting a chain) */
__device__ __forceinline__ void mma_s8c(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1, const int (&c)[4]) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
}

/* A fragments (index kc * 4 + reg) of the low codes from the lane's raw
 * words: as stored (offset-binary, c + 8 / c + 2; the caller subtracts
 * 8 / 2 times the activation sums with one more mma) or, SIGNED, as
 * two's complement bytes (xor the offset away, sign-extend with a
 * multiply-add: no carries cross bytes). */
template <int LOBITS, bool SIGNED>
HD void unpack_lo(const uint32_t *raw, uint32_t *A) {
    if (LOBITS == 4) {
        for (int q = 0; q < 4; q++) {
            const int kc = q >> 1, rh = q & 1;
            uint32_t v0 = raw[q] & 0x0F0F0F0Fu, v1 = (raw[q] >> 4) & 0x0F0F0F0Fu;
            if (SIGNED) {
                v0 ^= 0x08080808u, v1 ^= 0x08080808u;
                v0 = (v0 & 0x08080808u) * 0x1Eu + v0, v1 = (v1 & 0x08080808u) * 0x1Eu + v1;
            }
            A[kc * 4 + rh] = v0, A[kc * 4 + 2 + rh] = v1;
        }
    } else {
        for (int p = 0; p < 2; p++)
            for (int c = 0; c < 4; c++) {
                uint32_t v = (raw[p] >> (2 * c)) & 0x03030303u;
                if (SIGNED) v ^= 0x02020202u, v = (v & 0x02020202u) * 0x7Eu + v;
                A[(c >> 1) * 4 + (c & 1) * 2 + p] = v;
            }
    }
}

/* the lane's hi A operands (index kc * 4 + reg) in the scatter tile */
HD int hi_off(int lane, int kc) { return (lane >> 2) * 320 + kc * 128 + (lane & 3) * 16; }

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
    int unit_bytes, lo_bytes, slot_bytes, s2, tpb;
    const int8_t *qx;
    const uint4 *xf; /* prefill: the activations in fragment order */
    const float *sx;
    float *y;
    float *part;     /* decode: stream-k partial sums, [warp][2][NT * 4][32] */
    int *cnt;        /* decode: per-tile arrival counters, zero between launches */
    long nw;         /* decode: warps in the grid */
    long tok0;       /* first token of this launch */
};

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

/* One scale group (SPG subgroups) of one 16-row tile against NT x 8 tokens:
 * unpack, scatter the highs, 4 mma per subgroup and n-tile, combine. The
 * lane's B fragment of n-tile t, subgroup s is bsrc[t * bst + s * bss]
 * (16 bytes), zero where bit t of tvalid is clear. */
template <int NT, int LOBITS, int SPG, int S2C, bool S16, bool OFFS, bool BPRE>
__device__ __forceinline__ void do_group(float (&acc)[NT][4], const Raw<LOBITS, S2C, S16> (&cur)[SPG], unsigned item,
                                         uint8_t *tiles, const MmArgs &a, const uint4 *bsrc, long bst,
                                         int bss, uint32_t tvalid, const uint4 *bpre, int lane) {
    const int rowbase = scatter_rowbase(lane);
    const uint32_t NEG = LOBITS == 4 ? 0xF8F8F8F8u : 0xFEFEFEFEu; /* -8 / -2 in every byte */
    uint32_t Alo[SPG][8], Ahi[SPG][8];
#pragma unroll
    for (int s = 0; s < SPG; s++) {
        unpack_lo<LOBITS, !OFFS>(cur[s].lo, Alo[s]);
        uint8_t *tileb = tiles + s * SQ_TILE; /* (reused by the same lanes only after another __syncwarp) */
        if (S2C == 4) {
            scatter4(tileb, rowbase, cur[s].sl[0], cur[s].sl[1]);
        } else {
            const uint8_t *sp = a.w + (size_t)(item * SPG + s) * a.unit_bytes + a.lo_bytes + lane * 2 * a.s2;
            for (int q = 0; q < a.s2; q += 4) scatter4(tileb, rowbase, ld_stream1(sp + q), ld_stream1(sp + a.s2 + q));
        }
        __syncwarp();
        uint4 *h0p = (uint4 *)(tileb + hi_off(lane, 0)), *h1p = (uint4 *)(tileb + hi_off(lane, 1));
        const uint4 h0 = *h0p, h1 = *h1p, z = make_uint4(0, 0, 0, 0);
        *h0p = z, *h1p = z; /* own bytes back to zero (next used two subgroups later) */
        Ahi[s][0] = h0.x, Ahi[s][1] = h0.y, Ahi[s][2] = h0.z, Ahi[s][3] = h0.w;
        Ahi[s][4] = h1.x, Ahi[s][5] = h1.y, Ahi[s][6] = h1.z, Ahi[s][7] = h1.w;
    }
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
            const uint4 bv = BPRE ? bpre[s]
                                  : (tvalid >> t) & 1 ? __ldg(bsrc + t * bst + s * bss) : make_uint4(0, 0, 0, 0);
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

template <int NT>
__device__ __forceinline__ void store_y(const float (&v)[NT][4], const MmArgs &a, long tile, long tok0, int lane) {
    const int g = lane >> 2, tig = lane & 3;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const long row = tile * 16 + g + 8 * (e >> 1), tok = tok0 + t * 8 + 2 * tig + (e & 1);
            if (row < a.n && tok < a.m) a.y[tok * a.n + row] = v[t][e] * __ldg(a.sx + tok);
        }
}

/* stream-k bookkeeping: warp w owns items [w U / W, (w+1) U / W) */
__device__ __forceinline__ long sk_owner(long x, long W, long U) { return ((x + 1) * W - 1) / U; }
__device__ __forceinline__ long sk_slot(long w, long tile, long W, long U, long ng) {
    return 2 * w + ((w * U / W) / ng == tile ? 0 : 1);
}

/* A warp finished its part [ts, te) of `tile`: a whole tile is stored; a
 * part goes to the warp's partial slot, and the last of the tile's
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
    float *p = a.part + (size_t)sk_slot(w, tile, W, U, ng) * (NT * 128);
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) __stcg(p + (t * 4 + e) * 32 + lane, acc[t][e]);
    __threadfence();
    __syncwarp();
    const long wf = sk_owner(tile * ng, W, U), wl = sk_owner((tile + 1) * ng - 1, W, U);
    int last = 0;
    if (lane == 0) last = atomicAdd(a.cnt + tile, 1) == (int)(wl - wf);
    last = __shfl_sync(0xffffffffu, last, 0);
    if (!last) return;
    __threadfence();
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    for (long q = wf; q <= wl; q++) { /* own part included, read back: the same order whoever is last */
        const float *o = a.part + (size_t)sk_slot(q, tile, W, U, ng) * (NT * 128);
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[t][e] += __ldcg(o + (t * 4 + e) * 32 + lane);
    }
    if (lane == 0) a.cnt[tile] = 0; /* ready for the next launch */
    store_y(acc, a, tile, a.tok0, lane);
}

__device__ __forceinline__ void zero_tiles(uint8_t *wsm, int ntiles, int lane) { /* tiles start zero, padding too */
    for (int i = lane; i < ntiles * SQ_TILE / 16; i += 32) ((uint4 *)wsm)[i] = make_uint4(0, 0, 0, 0);
    __syncwarp();
}

/* decode: stream-k over (tile, group) items, 4 warps a block, weight units
 * loaded D groups ahead (D + 1 register sets, the loop unrolled by D + 1) */
template <int NT, int LOBITS, int SPG, int S2C, bool S16>
__global__ void __launch_bounds__(128, NT <= 4 ? 4 : 3) k_sq_dec(MmArgs a) {
    constexpr unsigned D = NT <= 2 && SPG == 1 ? 2 : 1; /* units in flight ahead (registers allowing) */
    constexpr int NTL = (D + 1) * SPG;                   /* scatter tiles: one set per unrolled step */
    __shared__ __align__(16) uint8_t sm[4 * NTL * SQ_TILE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *wsm = sm + warp * NTL * SQ_TILE;
    zero_tiles(wsm, NTL, lane);
    const long W = a.nw, w = (long)blockIdx.x * 4 + warp;
    if (w >= W) return;
    const unsigned ng = (unsigned)a.ngroups, U = (unsigned)(a.ntiles * a.ngroups);
    const unsigned i0 = (unsigned)(w * U / W), i1 = (unsigned)((w + 1) * U / W);
    if (i0 >= i1) return;
    /* the lane's activation row (token tok0 + g of n-tile 0), columns 16 tig.. */
    const int g = lane >> 2, tig = lane & 3;
    uint32_t tvalid = 0;
#pragma unroll
    for (int t = 0; t < NT; t++) tvalid |= (a.tok0 + t * 8 + g < a.m ? 1u : 0u) << t;
    const uint4 *xrow = (const uint4 *)(a.qx + (tvalid ? (a.tok0 + g) * a.k : 0) + 16 * tig);
    const long xst = a.k / 2; /* 8 tokens, in 16-byte units */
    const LanePtr lp = lane_ptrs<LOBITS, S2C, S16>(a, lane);
    constexpr bool OFFS = NT <= 2;          /* offset codes + 2 more mma beat sign extension */
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
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
    unsigned it = i0, tile = i0 / ng, grp = i0 % ng, ts = i0;
#define SQ_STEP(C, L, BC, BL, TL)                                                                              \
    {                                                                                                      \
        if (it + D < i1) {                                                                                 \
            load_group<LOBITS, SPG, S2C, S16>(L, it + D, a, lp);                                         \
            SQ_LOADB(BL, lgrp)                                                                             \
        }                                                                                                  \
        if (++lgrp == ng) lgrp = 0;                                                                        \
        do_group<NT, LOBITS, SPG, S2C, S16, OFFS, BPRE>(acc, C, it, wsm + (TL) * SPG * SQ_TILE, a,             \
                                                        xrow + grp * (SPG * 4), xst, 4,                    \
                                                        tvalid, BC, lane);                                 \
        it++;                                                                                              \
        if (++grp == ng || it == i1) {                                                                     \
            sk_flush<NT>(acc, a, tile, ts, it, w, lane);                                                   \
            _Pragma("unroll") for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f; \
            tile++, grp = 0, ts = it;                                                                      \
        }                                                                                                  \
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
        do_group<16, 4, 1, 4, S16, false, false>(acc, c0, i0 + grp, wsm + (grp & 1) * SQ_TILE, a, xb + grp * 32, xst, 32, 0xFFFFu,
                                                 nullptr, lane);
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

/* stream-k scratch (decode): partial sums and per-tile counters. Grown on
 * demand and never freed while the process runs: CUDA graphs captured
 * earlier keep pointing at the old buffers, which therefore stay valid
 * (the counters reset themselves at the end of every launch). */
static float *g_part;
static size_t g_part_bytes;
static int *g_cnt;
static long g_cnt_n;

static int scratch(size_t part_bytes, long ntiles) {
    if (part_bytes > g_part_bytes) {
        size_t want = part_bytes < (4u << 20) ? (4u << 20) : part_bytes;
        float *p = (float *)kc_malloc(want);
        if (!p) return -1;
        g_part = p, g_part_bytes = want; /* the old one stays allocated (see above) */
    }
    if (ntiles > g_cnt_n) {
        long want = ntiles < 65536 ? 65536 : ntiles;
        int *c = (int *)kc_malloc((size_t)want * sizeof(int));
        if (!c || kc_memset(c, 0, (size_t)want * sizeof(int))) return -1;
        g_cnt = c, g_cnt_n = want;
    }
    return 0;
}

template <int NT, int LOBITS, int SPG, int S2C, bool S16>
static int launch_decode(const kc_sq *w, MmArgs a) {
    static int occ; /* resident blocks per SM for this instance */
    if (!occ && (kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_sq_dec<NT, LOBITS, SPG, S2C, S16>, 128, 0),
                          "cudaOccupancyMaxActiveBlocksPerMultiprocessor") || occ < 1))
        return -1;
    /* one full wave of warps, each at least 4 groups long */
    const long U = w->ntiles * w->ngroups;
    long W = (long)n_sm() * occ * 4;
    if (W > (U + 3) / 4) W = (U + 3) / 4;
    if (W < 1) W = 1;
    if (scratch((size_t)W * 2 * NT * 128 * sizeof(float), w->ntiles)) return -1;
    a.part = g_part, a.cnt = g_cnt, a.nw = W;
    for (long t0 = 0; t0 < a.m; t0 += NT * 8) { /* beyond 64 tokens (generic shapes): chunks */
        a.tok0 = t0;
        k_sq_dec<NT, LOBITS, SPG, S2C, S16><<<(unsigned)((W + 3) / 4), 128, 0, KC_STREAM>>>(a);
        if (kc_check_launch("k_sq_dec")) return -1;
    }
    return 0;
}

template <int LOBITS, int SPG, int S2C, bool S16>
static int dispatch_nt(const kc_sq *w, const MmArgs &a) {
    if (a.m <= 8) return launch_decode<1, LOBITS, SPG, S2C, S16>(w, a);
    if (S2C == 4 && a.m <= 16) return launch_decode<2, LOBITS, SPG, S2C, S16>(w, a);
    if (S2C == 4 && a.m <= 32) return launch_decode<4, LOBITS, SPG, S2C, S16>(w, a);
    return launch_decode<8, LOBITS, SPG, S2C, S16>(w, a);
}

/* prefill scratch: the fragment-order activations (same growth policy) */
static uint4 *g_xf;
static size_t g_xf_bytes;

template <bool S16>
static int launch_prefill(const kc_sq *w, MmArgs a) {
    const long chunks = (a.m + 127) / 128, ntt = chunks * 16; /* token tiles of 8, whole chunks of 128 */
    const size_t need = (size_t)ntt * w->nsub * 32 * sizeof(uint4);
    if (need > g_xf_bytes) {
        uint4 *p = (uint4 *)kc_malloc(need);
        if (!p) return -1;
        g_xf = p, g_xf_bytes = need; /* the old one stays allocated (graphs may hold it) */
    }
    const long th = ntt * w->nsub * 32;
    k_frag_x<<<kc_blocks(th, 256), 256, 0, KC_STREAM>>>(a.qx, a.m, a.k, ntt, g_xf);
    if (kc_check_launch("k_frag_x")) return -1;
    /* 8 tiles a block, or 4 when that leaves the GPU short of blocks */
    a.xf = g_xf, a.tok0 = 0, a.tpb = (w->ntiles + 7) / 8 * chunks >= 2L * n_sm() ? 8 : 4;
    dim3 grid((unsigned)chunks, (unsigned)((w->ntiles + a.tpb - 1) / a.tpb));
    k_sq_pre<S16><<<grid, a.tpb * 32, 0, KC_STREAM>>>(a);
    return kc_check_launch("k_sq_pre");
}

extern "C" int kc_sq_matmul(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0) {
        kc_set_error("kc_sq_matmul: bad arguments");
        return -1;
    }
    if (m == 0) return 0;
    if ((m + 127) / 128 > 0x7fffffffL) {
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

/* Test hook (declared in tests/gpu/test_kc_sq.c, not in kc.h): repacks the
 * host tensor t on the host into w's layout and compares it with w's device
 * bytes. Returns the number of differing bytes (first offset in *first), or
 * -1 on error. */
extern "C" long kc_sq_debug_compare(const kc_sq_t *w, const k_sq_t *t, long *first) {
    if (!w || !t || t->n != w->n || t->k != w->k) return -1;
    uint8_t *host = (uint8_t *)malloc(w->bytes), *dev = (uint8_t *)malloc(w->bytes);
    if (!host || !dev || kc_download(dev, w->d, w->bytes)) {
        free(host), free(dev);
        return -1;
    }
    RawView v = {t->lo, t->hi, t->idx, t->s_lo, t->s_hi};
    Geo g = geo_of(w);
    for (long u = 0; u < w->ntiles * w->nsub; u++)
        for (int l = 0; l < 32; l++) repack_lane(v, g, u / w->nsub, u % w->nsub, l, host + (size_t)u * w->unit_bytes);
    long diff = 0;
    *first = -1;
    for (size_t i = 0; i < w->bytes; i++)
        if (host[i] != dev[i]) {
            if (*first < 0) *first = (long)i;
            if (diff < 8) printf("     byte %zu (unit %zu, offset %zu): host %02x device %02x\n", i, i / w->unit_bytes,
                                 i % w->unit_bytes, host[i], dev[i]);
            diff++;
        }
    free(host), free(dev);
    return diff;
}
