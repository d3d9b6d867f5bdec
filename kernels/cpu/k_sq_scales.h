/* k_sq_scales.h - the scales block at the end of a panel group, shared by
 * both panel packers (k_sq_avx2.c, k_sq_avx512.c) and read by their passes
 * (k_sq_panel*.inc, k_sq_split*.inc). For a panel of pr rows:
 *
 *   no highs (hq = 0)   pr floats s_lo: the high sums are 0, so the
 *                       reference adds s_hi x 0 = +-0 where the passes add
 *                       0 x 0 = +0; the same sums, since the accumulator
 *                       starts at +0 and never becomes -0 (round to nearest),
 *                       and s_hi is finite (sq_validate, k_sq_new_int)
 *   highs, s16          pr halves s_lo, then pr halves s_hi: chosen where
 *                       every scale of the tensor is exactly a half (a .sqm
 *                       file stores halves, so its tensors always are);
 *                       converted back exactly (vcvtph2ps), the same floats
 *   highs, float        pr floats s_lo, then pr floats s_hi
 *
 * Why: decode streams every panel once a token and is bound by the bytes
 * it reads; half scales take SQ 8/4 b64 from 7.0 to 6.5 bits a weight, and
 * dropping s_hi takes the 4-bit uniform baseline (W4A8 g64) from 5.0 to 4.5.
 * Every size keeps the group a multiple of the vector width (aligned loads).
 */
#ifndef K_SQ_SCALES_H
#define K_SQ_SCALES_H

#include "../k_quant.h"
#include "../k_sq.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline size_t k_sq_panel_scale_bytes(int pr, int hq, int s16) {
    return !hq ? (size_t)pr * sizeof(float) : s16 ? (size_t)2 * pr * sizeof(uint16_t) : (size_t)2 * pr * sizeof(float);
}

/* row i's scales (scale group index sg of the tensor) into the block S */
static inline void k_sq_panel_scales(const k_sq_t *w, size_t sg, int i, int pr, int hq, int s16, uint8_t *S) {
    if (!hq) {
        memcpy(S + (size_t)i * sizeof(float), &w->s_lo[sg], sizeof(float));
    } else if (s16) {
        const uint16_t lo = k_f32_to_f16(w->s_lo[sg]), hi = k_f32_to_f16(w->s_hi[sg]);
        memcpy(S + (size_t)i * 2, &lo, 2);
        memcpy(S + (size_t)(pr + i) * 2, &hi, 2);
    } else {
        memcpy(S + (size_t)i * sizeof(float), &w->s_lo[sg], sizeof(float));
        memcpy(S + (size_t)(pr + i) * sizeof(float), &w->s_hi[sg], sizeof(float));
    }
}

#endif
