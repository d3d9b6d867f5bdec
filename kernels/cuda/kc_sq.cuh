/* kc_sq.cuh - the GPU layout of SQ-format weights, shared by kc_sq.cu
 * (upload, repacking, random matrices) and kc_sq_mm.cu (the SQ x INT8
 * matmul and the per-token INT8 quantization of its activations). The API
 * is kc.h, "SQ-format weights"; the host format and its contract k_sq.h.
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
 * COMPACT layout (the default where it applies: 4-bit storage, h_low 4 or
 * 3, b <= 64 and at most 8 highs per row and 64 columns, so 8/4 and 8/3 at
 * b64 h8, b32 h4, b16 h2, b8 h1 and fewer highs): the mask is implicit.
 * A unit (16 rows x 64 columns) is
 *   lo     512 B, as above (offset-binary, fragment order), except that a
 *          high position holds the RESERVED nibble 0 (the code -8, which
 *          no valid SQ tensor has at a low position: symmetric codes are
 *          -7..7, -3..3 for h_low 3; kc_sq_upload checks every code and
 *          takes the layout above if a -8 ever appears).
 *   codes  128 B: rows g and g + 8 (16 bytes at 16 g), each row's high codes
 *          (int8) in "lane order": lane t (columns 16t..16t+15), then its
 *          k-chunk kc, then nibble j of the lane's raw word, i.e. column
 *          16t + 8kc + (j >> 1) + 4 (j & 1); unused bytes 0.
 *   scales rows g and g + 8 at 8 g (half s_lo | s_hi << 16 each: 64 B) or
 *          at 16 g (float s_lo, s_hi each: 128 B).
 * Bits per weight: 4 + 8 * 8 / 64 + 2 * 16 / 64 = 5.5 with half scales,
 * 6.0 with float scales (used unless every scale of the matrix is exactly
 * a half; the numbers are never changed).
 * Decoding (kc_sqc_mm.cu and kc_sq_gemv.cu, frag_compact): a lane finds its high nibbles in
 * its raw words with three integer ops a word, the count of highs in the
 * quad's lower lanes with two shuffles, and gathers each high code with one
 * PRMT whose selector nibbles (the code's index in the row's list) come out
 * of one 64-bit multiply of the flag nibbles (an exclusive prefix sum).
 *
 * The kernels that read this layout are described in kc_sq_mm.cu,
 * kc_sqc_mm.cu and kc_sq_gemv.cu.
 */
#ifndef KC_SQ_CUH
#define KC_SQ_CUH

#include "kc.h"
#include "kc_internal.h"

#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

/* ---- geometry --------------------------------------------------------------------- */

struct kc_sq {
    long n, k;
    int h_low, lobits, b, h, G, spg;
    int S;          /* slots per row per subgroup (highest possible high count) */
    int s2;         /* slots per lane, a multiple of 4 */
    int s16;        /* scales stored as half */
    int compact;    /* the compact layout (implicit mask, see above) */
    int iscale;     /* integer bank scales (sq_quant.h's :iscale): every weight an INT8 value
                       times its row's scale rs[row], so many tokens take one INT8 GEMM
                       (kc_sq_gemm.cu) and 17..64 INT32 sums over the row (kc_sq_mm.cu) */
    float *rs;      /* device [n]: those row scales (NULL unless iscale) */
    int nparts;     /* > 1: rows fused from several matrices (kc_sq_fuse) */
    long part_n[KC_SQ_MAX_PARTS];
    long ntiles, nsub, ngroups;
    int lo_bytes, slot_bytes, scale_bytes, unit_bytes;
    uint8_t *d;
    size_t bytes;
    char desc[128];
};

/* the parts of the geometry the kernels and the repacking need */
struct Geo {
    long n, k, ntiles, nsub, ngroups;
    int lobits, b, h, G, spg, s2, s16, lo_bytes, slot_bytes, unit_bytes, compact;
};

static inline Geo geo_of(const kc_sq *w) {
    Geo g;
    g.n = w->n, g.k = w->k, g.ntiles = w->ntiles, g.nsub = w->nsub, g.ngroups = w->ngroups;
    g.lobits = w->lobits, g.b = w->b, g.h = w->h, g.G = w->G, g.spg = w->spg, g.s2 = w->s2;
    g.s16 = w->s16, g.lo_bytes = w->lo_bytes, g.slot_bytes = w->slot_bytes;
    g.unit_bytes = w->unit_bytes, g.compact = w->compact;
    return g;
}

static inline int is_fast(const kc_sq *w) { return !w->compact && w->lobits == 4 && w->spg == 1 && w->s2 == 4; }
/* the compact layout can hold this shape (4-bit storage, <= 8 highs per 64) */
static inline int compact_fits(int lobits, int b, int h) {
    return lobits == 4 && b <= 64 && h >= 1 && h * (64 / b) <= 8;
}
#define SQC_LO 512
#define SQC_CODES 128

/* the tensor-core two-step path for many tokens (kc_sq_gemm.cu) */
extern "C" int kc_sq_twostep_applies(const kc_sq *w, long m);
extern "C" int kc_sq_twostep(const kc_sq *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y,
                             float *const *parts);

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

/* ---- compact-layout decoding (kc_sq_mm.cu; host too, for tests) ----------------------- */

/* PTX prmt.b32, default mode: byte n of the result is byte (s >> 4n) & 7 of
 * {b:a}, or that byte's sign replicated when bit 3 of the nibble is set */
HD uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
#else
    const uint64_t src = (uint64_t)b << 32 | a;
    uint32_t d = 0;
    for (int n = 0; n < 4; n++) {
        const int q = (sel >> (4 * n)) & 15;
        uint32_t v = (uint32_t)(src >> (8 * (q & 7))) & 255;
        if (q & 8) v = v & 128 ? 255 : 0;
        d |= v << (8 * n);
    }
    return d;
#endif
}

/* A lane's four raw lo words: hn[q] gets bit 3 of every nibble that is the
 * reserved 0 (a high position), w[q] the words with those nibbles turned into
 * 8 (code 0). Returns the lane's high counts: row g in bits 0-15, row g + 8
 * in bits 16-31 (for the quad's exclusive prefix sum). */
HD uint32_t frag_flags(const uint32_t (&lo)[4], uint32_t (&hn)[4], uint32_t (&w)[4]) {
    for (int q = 0; q < 4; q++) {
        const uint32_t x = lo[q], t = (x & 0x77777777u) + 0x77777777u;
        hn[q] = ~(t | x) & 0x88888888u;
        w[q] = x | hn[q];
    }
#ifdef __CUDA_ARCH__
#define KC_POPC __popc
#else
#define KC_POPC __builtin_popcount
#endif
    return (uint32_t)(KC_POPC(hn[0]) + KC_POPC(hn[2])) | (uint32_t)(KC_POPC(hn[1]) + KC_POPC(hn[3])) << 16;
#undef KC_POPC
}

/* The high A fragments (index kc * 4 + reg, as unpack_lo's) from the flags,
 * the rows' code lists (cd[0..1] row g, cd[2..3] row g + 8) and the quad's
 * exclusive prefix e (as frag_flags packs it). Selector nibble j of word kc
 * = the code's index in the row list = e + highs before it in this lane: one
 * 64-bit multiply of the flag nibbles (an exclusive prefix sum; no nibble
 * exceeds 8, so no carries). */
HD void frag_highs(const uint32_t (&hn)[4], const uint32_t (&cd)[4], uint32_t e, uint32_t (&Ahi)[8]) {
#ifdef __CUDA_ARCH__
#define KC_POPC __popc
#else
#define KC_POPC __builtin_popcount
#endif
    for (int rh = 0; rh < 2; rh++) {
        /* word kc0: e + prefix in the word; word kc1: e + highs of word kc0 + prefix
         * (F * 0x11111110 with F the flag nibbles = hn * 0x02222222) */
        const uint32_t E = rh ? e >> 16 : e & 0xFFFFu;
        const uint32_t S0 = hn[rh] * 0x02222222u + E * 0x11111111u;
        const uint32_t S1 = hn[2 + rh] * 0x02222222u + (E + (uint32_t)KC_POPC(hn[rh])) * 0x11111111u;
        const uint32_t ca = cd[2 * rh], cb = cd[2 * rh + 1];
        for (int kc = 0; kc < 2; kc++) {
            const uint32_t s = kc ? S1 : S0, h = hn[kc * 2 + rh];
            const uint32_t g0 = prmt(ca, cb, s), g1 = prmt(ca, cb, s >> 16); /* nibbles 0-3, 4-7 */
            /* low nibbles (columns 0-3 of the word), high nibbles (4-7); zero where low */
            Ahi[kc * 4 + rh] = prmt(g0, g1, 0x6420) & prmt(h << 4, 0, 0xBA98);
            Ahi[kc * 4 + 2 + rh] = prmt(g0, g1, 0x7531) & prmt(h, 0, 0xBA98);
        }
    }
#undef KC_POPC
}

#endif
