/* k_sq_codes.h - the one reader of SQ's stored low codes (engine/model/sq.h's
 * layout): the tensor code (engine/model/sq.c), the portable kernel
 * (k_sq.c), both panel packers (k_sq_avx2.c, k_sq_avx512.c) and the GPU
 * upload's checks (kernels/cuda/kc_sq.cu) read the codes through it, so
 * they cannot disagree about the storage of 2-, 3-, 4- or 8-bit codes.
 */
#ifndef K_SQ_CODES_H
#define K_SQ_CODES_H

#include <stddef.h>
#include <stdint.h>

/* Low code e (row-major element index) of `lo` with h_low-bit codes,
 * signed: 8-bit bytes, 3/4-bit two's complement nibbles (low nibble
 * first), 2-bit two's complement crumbs (lowest bits first). */
static inline int k_sq_lo_code(const uint8_t *lo, int h_low, size_t e) {
    if (h_low == 8) return (int8_t)lo[e];
    if (h_low > 2) {
        int v = (lo[e / 2] >> (4 * (e % 2))) & 15;
        return v >= 8 ? v - 16 : v;
    }
    int v = (lo[e / 4] >> (2 * (e % 4))) & 3;
    return v >= 2 ? v - 4 : v;
}

/* The offset-binary low code (code + 8) of element m of a run of nibble
 * codes (h_low 3 or 4) that starts at an even element, B its first byte:
 * a two's complement nibble v is code + 8 = v ^ 8. The panel packers read
 * whole rows this way (k_sq_lo_code's per-element call and branches were
 * a tenth of a .sqm's load). */
static inline unsigned k_sq_nib_ob(const uint8_t *B, long m) { return ((B[m >> 1] >> (4 * (m & 1))) & 15u) ^ 8u; }

/* Row i's 64 nibble codes (B: its first byte) into a panel's 4-bit block,
 * chunk c at L + stride c (stride: 16 rows x 4 bytes on AVX-512, 8 rows
 * on AVX2): byte 4 i + q holds elements 8 c + q and 8 c + 4 + q */
static inline void k_sq_pack_nib_row(const uint8_t *B, uint8_t *L, int stride, int i) {
    for (int c = 0; c < 8; c++)
        for (int q = 0; q < 4; q++)
            L[stride * c + 4 * i + q] = (uint8_t)(k_sq_nib_ob(B, 8 * c + q) | k_sq_nib_ob(B, 8 * c + 4 + q) << 4);
}

#endif
