/* k_sq.h - SQ-format weights times INT8 activations.
 *
 * A kernel-side view of an SQ tensor (layout in engine/sq.h). For one
 * weight row and one activation row quantized to int8 (per-token scale
 * sx), the product is computed exactly in integers per scale group g:
 *     lo[g] = sum_{j in g} lo_code[j] * qx[j]
 *     hi[g] = sum_{high j in g} hi_code[j] * qx[j]
 * and combined in float in one fixed order, shared by every ISA:
 *     y = sx * sum_g (s_lo[g] * lo[g] + s_hi[g] * hi[g])
 * (k_sq_combine is the definition), so every path is bit-exact against
 * the scalar reference, not merely close.
 *
 * Four paths, chosen at run time (SQSERVE_ISA=portable|avx2|avxvnni|avx512
 * can only lower the level the CPU supports):
 * - avx512 (VNNI + VBMI), h_low 2-4 (widened to 4-bit) or 8, G a multiple of 64 (G = 64 and b <= 64
 *   when there are highs): k_sq_new() repacks the
 *   tensor once into 16-row panels (see k_sq_avx512.c) so that vpdpbusd
 *   lanes are weight rows: group sums come out per lane with no horizontal
 *   reductions, the combine runs 16 rows wide, and several activation rows
 *   (prefill, batched decode) share every unpacked weight vector. The
 *   repack costs one copy of the tensor in memory (the file mapping is not
 *   read again), which buys a 2-4x faster decode than the stored layout.
 * - avx2 (maddubs/madd) and avxvnni (VEX vpdpbusd, where cpuid has it),
 *   same shapes: the same panel design at half the width (8-row panels,
 *   up to 4 activation rows per pass; see k_sq_avx2.c).
 * - portable C for every shape.
 */
#ifndef K_SQ_H
#define K_SQ_H

#include <stddef.h>
#include <stdint.h>

#include "k_pool.h"

#ifdef __cplusplus
extern "C" { /* the CUDA upload reads k_sq_iscale_rows */
#endif

typedef struct {
    int h_low, b, h, G;   /* h_low 2/3/4 (SQ) or 8 (uniform int8 codes); h = 0: no highs */
    long n, k;
    const uint8_t *lo;    /* packed low codes, row-major */
    const int8_t *hi;     /* [n][k/b][h] */
    const uint8_t *idx;   /* [n][k/b][h] */
    const float *s_lo, *s_hi; /* [n][k/G] */
    /* kernel-private, set by k_sq_new: the AVX-512 or AVX2 panels, or NULL */
    const uint8_t *pack;
    int pack_hq;          /* 4-high chunks per group in a panel */
    size_t pack_gbytes;   /* bytes per (panel, group) */
    int pack_s16;         /* the panels' scales are halves (cpu/k_sq_scales.h) */
    /* static SQ activations (k_sq_static_acts), or NULL: per-token int8 */
    const uint8_t *amask; /* [k]: 1 = high channel */
    int a_hi, a_lo;       /* bits of the high and low channels */
    /* kernel-private: room for a column permutation (k entries, in the
     * view's block) and, once the panels are permuted so that each
     * 64-block's high channels come first, their count per block (else 0) */
    uint16_t *perm;
    int split;
} k_sq_t;

/* A view for the kernels: a copy of *src plus, when the AVX-512 path
 * applies, its repacked panels, all in ONE allocation (free() releases
 * it). The arrays src points to must outlive the view. NULL on OOM. */
k_sq_t *k_sq_new(const k_sq_t *src);
/* Uniform integer weights (the W8A8 / W4A8 baselines) as a view with no
 * highs: codes[n][k] int8 with |code| <= 2^(bits-1) - 1, scales[n][k/g],
 * bits 2..8, g dividing k. Codes of <= 4 bits are packed into the view's
 * block; wider ones are read in place (they must outlive the view). The
 * same kernels run it (AVX-512 panels for g a multiple of 64, AVX2 for
 * 4-bit g = 64, else portable), bit-exact against k_sq_combine. */
k_sq_t *k_sq_new_int(const int8_t *codes, const float *scales, long n, long k, int bits, long g);

/* Static SQ activations for this view (the paper's Algorithm 2): channel
 * j is high when mask[j], and each token is quantized to a_hi bits over
 * its high channels and a_lo bits over its low ones, one scale each. The
 * kernels run such a token as TWO int8 rows (the high codes with zeros at
 * low channels, and the reverse) through the same multi-row passes, so
 * every weight vector is read once for both and
 *     y = k_sq_combine(H, sx_hi) + k_sq_combine(L, sx_lo).
 * Trade-off: twice the integer work of int8 activations, no permuted
 * weight copy, and every ISA path for free; decode stays one pass over
 * the weights. mask (k bytes) must outlive the view. */
void k_sq_static_acts(k_sq_t *w, const uint8_t *mask, int hi_bits, int lo_bits);
/* One token's static quantization: qh (high codes, 0 at low channels),
 * ql (the reverse); sx[0], sx[1] the scales. Exactly the fake-quant of
 * engine/quant.c: s = max|x| / (2^(bits-1) - 1) over the class,
 * q = nearbyint(x / s) clamped. */
void k_quant_row_static(const float *x, long k, const uint8_t *mask, int hi_bits, int lo_bits, int8_t *qh,
                        int8_t *ql, float *sx);

/* y[m][n] = x[m][k] . W^T: each x row quantized to int8 once, then rows
 * of W split across the pool. 0, or -1 on out of memory. */
int k_sq_matmul(k_pool_t *pool, const k_sq_t *w, const float *x, long m, float *y);
/* Several SQ matrices reading the same x (q/k/v, gate/up): one
 * quantization of x and one fork-join for all of them (static SQ
 * activations: only when they share one mask). */
int k_sq_matmul_group(k_pool_t *pool, const k_sq_t *const *w, float *const *y, int count,
                      const float *x, long m);

/* Per-token int8 quantization: qx = round(x / sx), sx = max|x| / 127,
 * and (when xsum64 is non-NULL) the sums of each 64 codes, which the
 * offset-binary low product needs. Returns sx. */
float k_quant_row_i8(const float *x, long k, int8_t *qx, int32_t *xsum64);

/* Integer group sums of row r against qx (nb groups = k/G). */
void k_sq_group_sums_ref(const k_sq_t *w, long r, const int8_t *qx, int32_t *lo, int32_t *hi);

/* Row r of the view as floats (s_lo * lo code, s_hi * high code): the
 * weights the integer kernels multiply by (e.g. for a device without them). */
void k_sq_dequant_row(const k_sq_t *w, long r, float *out);

/* The shared float combination. */
float k_sq_combine(const k_sq_t *w, long r, float sx, const int32_t *lo, const int32_t *hi);
/* Integer bank scales (engine/quant/sq_quant.h's :iscale), read off the
 * scales of n rows of ng groups: per row one s_r (every s_hi), every s_lo
 * an integer k times it with |k * qmax(h_low)| <= 127, so every weight is
 * an INT8 value times s_r. 1 if so (rs, when not NULL, gets the s_r). */
int k_sq_iscale_rows(const float *s_lo, const float *s_hi, long n, long ng, int h_low, float *rs);

/* The path a view runs on: "avx512", "avx2" or "portable". */
const char *k_sq_path(const k_sq_t *w);
/* Tests: run as if SQSERVE_ISA were `name` (never above what the CPU has).
 * Views made before keep their panels; k_sq_new after this decides anew. */
void k_sq_force_isa(const char *name);

#ifdef __cplusplus
}
#endif

#endif
