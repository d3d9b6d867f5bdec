/* k_sq.h - SQ-format weights times INT8 activations.
 *
 * A kernel-side view of an SQ tensor (layout in engine/sq.h). For one
 * weight row and one activation row quantized to int8 (per-token scale
 * sx), the product is computed exactly in integers per scale group g:
 *     lo[g] = sum_{j in g} lo_code[j] * qx[j]
 *     hi[g] = sum_{high j in g} hi_code[j] * qx[j]
 * and combined in float in one fixed order, shared by every ISA:
 *     y = sx * sum_g (s_lo[g] * lo[g] + s_hi[g] * hi[g])
 * so each SIMD path is bit-exact against the scalar reference.
 *
 * SIMD: AVX-512 VNNI + VBMI for h_low = 4 and b = 64 (the dense nibbles
 * through vpdpbusd, the high elements gathered with vpermb and multiplied
 * with vpdpwssd); every other shape, and CPUs without those extensions,
 * take the portable path.
 */
#ifndef K_SQ_H
#define K_SQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int h_low, b, h, G;
    long n, k;
    const uint8_t *lo;    /* packed low codes, row-major */
    const int8_t *hi;     /* [n][k/b][h] */
    const uint8_t *idx;   /* [n][k/b][h] */
    const float *s_lo, *s_hi; /* [n][k/G] */
} k_sq_t;

/* Per-token int8 quantization: qx = round(x / sx), sx = max|x| / 127,
 * and (when xsum64 is non-NULL) the sums of each 64 codes, which the
 * offset-binary low product needs. Returns sx. */
float k_quant_row_i8(const float *x, long k, int8_t *qx, int32_t *xsum64);

/* Integer group sums of row r against qx (nb groups = k/G). */
void k_sq_group_sums_ref(const k_sq_t *w, long r, const int8_t *qx, int32_t *lo, int32_t *hi);
void k_sq_group_sums(const k_sq_t *w, long r, const int8_t *qx, const int32_t *xsum64, int32_t *lo,
                     int32_t *hi);

/* The shared float combination. */
float k_sq_combine(const k_sq_t *w, long r, float sx, const int32_t *lo, const int32_t *hi);

/* 1 when the fast path applies to this tensor on this CPU. */
int k_sq_simd(const k_sq_t *w);

#endif
