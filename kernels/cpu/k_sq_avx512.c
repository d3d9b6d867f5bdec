/* k_sq_avx512.c - SQ 8/4 (b = G = 64) x INT8 group sums with AVX-512
 * VNNI + VBMI (see k_sq.h). One 64-element group per step:
 *   low:  32 packed bytes -> 64 nibbles in element order (zero-extend to
 *         16 bits, split, shift) -> offset binary (xor 8, 0..15) ->
 *         vpdpbusd against the 64 int8 activations; the +8 offset is
 *         removed with the group's activation sum.
 *   high: vpermb gathers the activations at the h in-bank positions,
 *         both sides widen to int16, vpdpwssd multiplies and adds.
 * Lanes past h are masked to zero on the weight side, so the garbage the
 * gather puts there contributes nothing. Integer results equal the
 * portable path exactly. */
#include "../k_sq.h"

#include <immintrin.h>

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
void k_sq_group_sums_avx512(const k_sq_t *w, long r, const int8_t *qx, const int32_t *xsum64,
                            int32_t *lo, int32_t *hi) {
    long ng = w->k / 64;
    int h = w->h;
    const uint8_t *lp = w->lo + (size_t)r * (size_t)w->k / 2;
    const int8_t *hp = w->hi + (size_t)r * (size_t)ng * (size_t)h;
    const uint8_t *ip = w->idx + (size_t)r * (size_t)ng * (size_t)h;
    const __mmask64 hm = (h >= 64) ? ~0ULL : ((1ULL << h) - 1);
    const __m512i low4 = _mm512_set1_epi16(0x000f), high4 = _mm512_set1_epi16(0x00f0);
    const __m512i offset = _mm512_set1_epi8(8);
    for (long g = 0; g < ng; g++) {
        __m512i x = _mm512_loadu_si512((const void *)(qx + g * 64));
        __m512i t = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(lp + g * 32)));
        __m512i u = _mm512_or_si512(_mm512_and_si512(t, low4),
                                    _mm512_slli_epi16(_mm512_and_si512(t, high4), 4));
        u = _mm512_xor_si512(u, offset); /* two's complement nibble -> value + 8 */
        __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
        lo[g] = _mm512_reduce_add_epi32(acc) - 8 * xsum64[g];
        __m512i iv = _mm512_maskz_loadu_epi8(hm, ip + g * h);
        __m512i xg = _mm512_permutexvar_epi8(iv, x);
        __m512i x16 = _mm512_cvtepi8_epi16(_mm512_castsi512_si256(xg));
        __m512i h16 = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8((__mmask32)hm, hp + g * h));
        hi[g] = _mm512_reduce_add_epi32(_mm512_dpwssd_epi32(_mm512_setzero_si512(), h16, x16));
    }
}
