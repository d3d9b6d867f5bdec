/* k_ggml_q8_avx2.c - GGUF weights x 8-bit block activations in 256-bit
 * SIMD: the panel kernels of k_q8.h (k_ggml_q8_panel.inc) in three
 * multiply flavours, chosen by the driver (k_ggml_q8.c):
 *   avx2     vpmaddubsw + vpmaddwd: u8 x s8 pairs to s16, then to s32. The
 *            weights' unsigned side is at most 63 (K types, Q4) or 128
 *            (|Q8_0|) and the activations at most 127 in magnitude, so a
 *            pair never saturates.
 *   avxvnni  VEX vpdpbusd (Alder Lake, Zen 4+).
 *   avx512   EVEX vpdpbusd on ymm (AVX-512 VNNI + VL without AVX-VNNI).
 * All three give the same int32 lanes; the float steps are lane-wise
 * copies of the reference's (a product only ever an FMA's multiplicand,
 * so -ffp-contract=fast, this file's flag, has nothing to fuse
 * differently), which makes the results bit-identical to it.
 */
#include "../k_q8.h"
#include "../k_quant.h"

#include <immintrin.h>
#include <string.h>

#define PB32 576 /* panel bytes per 32-block: W, S, d_w, m_w */
#define PBK 2624 /* per K super-block: W[64], sc/m (or sc[16]), d, dmin */

/* Q4_K's 6-bit (scale, min) pairs of the 12 packed bytes, all eight. */
static void scales_k4(const uint8_t *q, int *sc, int *m) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0xf) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
}

size_t k_q8_scratch_bytes_avx2(uint32_t type, long k) {
    return type == K_Q4_K || type == K_Q6_K ? (size_t)(k / 256) * PBK : (size_t)(k / 32) * PB32;
}

#define FLAV avx2
#define TGT __attribute__((target("avx2,fma,f16c")))
#define MUL_ACC(acc, u, s) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#define MUL_SC(u, s, sc16, sc32) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), (sc16))
#define SIGNED_Q8 1
#include "k_ggml_q8_panel.inc"
#undef FLAV
#undef TGT
#undef MUL_ACC
#undef MUL_SC
#undef SIGNED_Q8

#define FLAV vnni
#define TGT __attribute__((target("avx2,fma,f16c,avxvnni")))
#define MUL_ACC(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#define MUL_SC(u, s, sc16, sc32) _mm256_mullo_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s)), (sc32))
#define SIGNED_Q8 0
#include "k_ggml_q8_panel.inc"
#undef FLAV
#undef TGT
#undef MUL_ACC
#undef MUL_SC
#undef SIGNED_Q8

#define FLAV evex
#define TGT __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define MUL_ACC(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#define MUL_SC(u, s, sc16, sc32) _mm256_mullo_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s)), (sc32))
#define SIGNED_Q8 0
#include "k_ggml_q8_panel.inc"
#undef FLAV
#undef TGT
#undef MUL_ACC
#undef MUL_SC
#undef SIGNED_Q8

void k_q8_rows_avx2(int flavour, uint32_t type, const uint8_t *w, size_t rb, int nr, const k_q8_row_t *x, long m,
                    long k, float *y, long ldy, uint8_t *scratch) {
    if (flavour == 0) rows_avx2(type, w, rb, nr, x, m, k, y, ldy, scratch);
    else if (flavour == 1) rows_vnni(type, w, rb, nr, x, m, k, y, ldy, scratch);
    else rows_evex(type, w, rb, nr, x, m, k, y, ldy, scratch);
}
