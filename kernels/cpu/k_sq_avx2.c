/* k_sq_avx2.c - SQ (h_low = 4, G = 64) x INT8 group sums with AVX2, for
 * CPUs without AVX-512 VNNI (see k_sq.h). Works on the stored layout, one
 * weight row against one activation row:
 *   low:  32 packed bytes -> nibbles in offset binary (xor 0x88, 1..15 as
 *         unsigned) -> interleaved back to element order with unpack, the
 *         activations brought to the same 128-bit lane order -> maddubs
 *         (u8 x s8 pairs to s16; at most 2 * 15 * 127, no saturation) ->
 *         madd with ones to s32; the +8 offset is removed with the group's
 *         activation sum.
 *   high: h products per bank in scalar code: AVX2 has no byte permute
 *         across 32 bytes, and 1/8 of the elements does not pay for a
 *         gather.
 * The integers equal the portable path's exactly; the float combine is
 * the shared k_sq_combine. */
#include "../k_sq.h"

#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma")))

TGT static inline int32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

TGT static inline int32_t low_group(const uint8_t *lp, const int8_t *x) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256i W = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)lp), _mm256_set1_epi8((char)0x88));
    __m256i ev = _mm256_and_si256(W, m4), od = _mm256_and_si256(_mm256_srli_epi16(W, 4), m4);
    __m256i e0 = _mm256_unpacklo_epi8(ev, od); /* elements 0..15 | 32..47 */
    __m256i e1 = _mm256_unpackhi_epi8(ev, od); /* elements 16..31 | 48..63 */
    __m256i x0 = _mm256_loadu_si256((const __m256i *)x), x1 = _mm256_loadu_si256((const __m256i *)(x + 32));
    __m256i xa = _mm256_permute2x128_si256(x0, x1, 0x20), xb = _mm256_permute2x128_si256(x0, x1, 0x31);
    __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(e0, xa), ones),
                                 _mm256_madd_epi16(_mm256_maddubs_epi16(e1, xb), ones));
    return hsum8(p);
}

TGT void k_sq_group_sums_avx2(const k_sq_t *w, long r, const int8_t *qx, const int32_t *xsum64,
                              int32_t *lo, int32_t *hi) {
    long ng = w->k / 64, nb = w->k / w->b;
    const uint8_t *lp = w->lo + (size_t)r * (size_t)w->k / 2;
    for (long g = 0; g < ng; g++) {
        lo[g] = low_group(lp + 32 * g, qx + 64 * g) - 8 * xsum64[g];
        hi[g] = 0;
    }
    const int8_t *hv = w->hi + (size_t)(r * nb) * (size_t)w->h;
    const uint8_t *ix = w->idx + (size_t)(r * nb) * (size_t)w->h;
    for (long bk = 0; bk < nb; bk++, hv += w->h, ix += w->h) {
        const int8_t *xb = qx + bk * w->b;
        int32_t s = 0;
        for (int i = 0; i < w->h; i++) s += hv[i] * xb[ix[i]];
        hi[bk * w->b / 64] += s;
    }
}
