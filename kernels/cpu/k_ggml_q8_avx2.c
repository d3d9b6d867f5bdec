/* k_ggml_q8_avx2.c - GGUF weights x 8-bit block activations in 256-bit
 * SIMD (see k_q8.h for what is computed and k_ggml_q8.c for the driver).
 *
 * Three multiply flavours of the 32-block kernels (k_ggml_q8_blk32.inc):
 * AVX2 vpmaddubsw + vpmaddwd (pairs of u8 x s8 to s16, then to s32: with
 * the weights' unsigned side at most 128 and the activations at most 127
 * in magnitude, a pair cannot saturate), AVX-VNNI (VEX vpdpbusd) and
 * AVX-512 VNNI (EVEX vpdpbusd on ymm). All three give the same int32
 * lanes. The K types keep vpmaddubsw everywhere: their sub-block scale is
 * applied by the vpmaddwd that widens the pairs, which a vpdpbusd would
 * only replace by a costlier int32 multiply.
 *
 * Float order: one FMA per block and lane, a fixed horizontal tree at the
 * end (hsum8), scalar fmaf for the offset terms, exactly as the reference;
 * a product is only ever an FMA's multiplicand, so -ffp-contract=fast
 * (this file's flags) has nothing to fuse differently.
 */
#include "../k_q8.h"
#include "../k_quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))

TGT_AVX2 static inline float f16c(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)), the reference's tree8. */
TGT_AVX2 static inline float hsum8(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

#define FLAV avx2
#define TGT TGT_AVX2
#define MUL(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1))
#include "k_ggml_q8_blk32.inc"
#undef FLAV
#undef TGT
#undef MUL

#define FLAV vnni
#define TGT __attribute__((target("avx2,fma,f16c,avxvnni")))
#define MUL(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u), (s))
#include "k_ggml_q8_blk32.inc"
#undef FLAV
#undef TGT
#undef MUL

#define FLAV evex
#define TGT __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")))
#define MUL(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (u), (s))
#include "k_ggml_q8_blk32.inc"
#undef FLAV
#undef TGT
#undef MUL

/* Q4_K's 6-bit (scale, min) pairs of the 12 packed bytes, all eight. */
static void scales_k4(const uint8_t *q, int *sc, int *m) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0xf) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
}

/* Q4_K: 8 runs of 32 per super-block; each 32 bytes hold runs 2c (low
 * nibbles) and 2c+1 (high). */
TGT_AVX2 static inline __attribute__((always_inline)) void q4_k(const uint8_t *row, const k_q8_row_t *x,
                                                                const int nx, long k, float *out) {
    const __m256i lo4 = _mm256_set1_epi8(15);
    __m256 acc[4];
    float mn[4];
    for (int i = 0; i < nx; i++) {
        acc[i] = _mm256_setzero_ps();
        mn[i] = 0;
    }
    for (long b = 0; b < k / 256; b++) {
        const uint8_t *blk = row + b * 144;
        int sc[8], m[8];
        scales_k4(blk + 4, sc, m);
        __m256i P[4];
        for (int i = 0; i < nx; i++) P[i] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
            __m256i lo = _mm256_and_si256(raw, lo4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), lo4);
            __m256i slo = _mm256_set1_epi16((short)sc[2 * c]), shi = _mm256_set1_epi16((short)sc[2 * c + 1]);
            for (int i = 0; i < nx; i++) {
                const int8_t *xq = x[i].q + b * 256 + 64 * c;
                __m256i xa = _mm256_loadu_si256((const __m256i *)xq), xb = _mm256_loadu_si256((const __m256i *)(xq + 32));
                __m256i pa = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xa), slo);
                __m256i pb = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xb), shi);
                P[i] = _mm256_add_epi32(P[i], _mm256_add_epi32(pa, pb));
            }
        }
        float d = f16c(blk), dmin = f16c(blk + 2);
        for (int i = 0; i < nx; i++) {
            const int16_t *bs = x[i].bs + b * 16;
            int msum = 0;
            for (int j = 0; j < 8; j++) msum += m[j] * (bs[2 * j] + bs[2 * j + 1]);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[i].d[b]), _mm256_cvtepi32_ps(P[i]), acc[i]);
            mn[i] = fmaf(dmin * x[i].d[b], (float)msum, mn[i]);
        }
    }
    for (int i = 0; i < nx; i++) out[i] = hsum8(acc[i]) - mn[i];
}

/* Q6_K: per half of a super-block, 64 bytes of low nibbles and 32 of high
 * bit pairs give 4 runs of 32 codes (0..63); the offset 32 is taken off
 * in 16 bits (maddubs by 32), the signed 16-element scale applied by the
 * widening vpmaddwd. */
TGT_AVX2 static inline __attribute__((always_inline)) void q6_k(const uint8_t *row, const k_q8_row_t *x,
                                                                const int nx, long k, float *out) {
    const __m256i lo4 = _mm256_set1_epi8(15), b3 = _mm256_set1_epi8(3), b30 = _mm256_set1_epi8(0x30),
                  m32 = _mm256_set1_epi8(32);
    __m256 acc[4];
    for (int i = 0; i < nx; i++) acc[i] = _mm256_setzero_ps();
    for (long b = 0; b < k / 256; b++) {
        const uint8_t *blk = row + b * 210;
        const int8_t *sc = (const int8_t *)(blk + 192);
        __m256i P[4];
        for (int i = 0; i < nx; i++) P[i] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i L0 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h));
            __m256i L1 = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32));
            __m256i H = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
            __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(L0, lo4), _mm256_slli_epi16(_mm256_and_si256(H, b3), 4)),
                _mm256_or_si256(_mm256_and_si256(L1, lo4), _mm256_and_si256(_mm256_slli_epi16(H, 2), b30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), lo4), _mm256_and_si256(H, b30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), lo4),
                                _mm256_and_si256(_mm256_srli_epi16(H, 2), b30))};
            for (int r = 0; r < 4; r++) {
                int c = 4 * h + r;
                __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
                for (int i = 0; i < nx; i++) {
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(x[i].q + b * 256 + 32 * c));
                    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[r], xv), _mm256_maddubs_epi16(m32, xv));
                    P[i] = _mm256_add_epi32(P[i], _mm256_madd_epi16(p, scv));
                }
            }
        }
        float d = f16c(blk + 208);
        for (int i = 0; i < nx; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[i].d[b]), _mm256_cvtepi32_ps(P[i]), acc[i]);
    }
    for (int i = 0; i < nx; i++) out[i] = hsum8(acc[i]);
}

#define K_NX(F)                                \
    switch (nx) {                              \
    case 1: F(row, x, 1, k, out); break;       \
    case 2: F(row, x, 2, k, out); break;       \
    case 3: F(row, x, 3, k, out); break;       \
    default: F(row, x, 4, k, out); break;      \
    }

TGT_AVX2 static void dot_k(uint32_t type, const uint8_t *row, const k_q8_row_t *x, int nx, long k, float *out) {
    if (type == K_Q4_K) K_NX(q4_k)
    else K_NX(q6_k)
}

void k_q8_dot_avx2(int flavour, uint32_t type, const void *row, const k_q8_row_t *x, int nx, long k,
                   float *out) {
    if (type == K_Q4_K || type == K_Q6_K) dot_k(type, row, x, nx, k, out);
    else if (flavour == 0) dot32_avx2(type, row, x, nx, k, out);
    else if (flavour == 1) dot32_vnni(type, row, x, nx, k, out);
    else dot32_evex(type, row, x, nx, k, out);
}
