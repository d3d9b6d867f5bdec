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
 * The kernels that read this layout are described in kc_sq_mm.cu.
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

static inline Geo geo_of(const kc_sq *w) {
    Geo g;
    g.n = w->n, g.k = w->k, g.ntiles = w->ntiles, g.nsub = w->nsub, g.ngroups = w->ngroups;
    g.lobits = w->lobits, g.b = w->b, g.h = w->h, g.G = w->G, g.spg = w->spg, g.s2 = w->s2;
    g.s16 = w->s16, g.lo_bytes = w->lo_bytes, g.slot_bytes = w->slot_bytes;
    g.unit_bytes = w->unit_bytes;
    return g;
}

static inline int is_fast(const kc_sq *w) { return w->lobits == 4 && w->spg == 1 && w->s2 == 4; }

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

#endif
