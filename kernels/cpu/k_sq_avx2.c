/* k_sq_avx2.c - SQ (and uniform int) weights x INT8 with AVX2, for CPUs
 * without AVX-512 VNNI (see k_sq.h), with an AVX-VNNI flavour chosen at
 * run time where cpuid reports it.
 *
 * The design is the AVX-512 panel kernel's (k_sq_avx512.c) at half the
 * width: k_sq_new() repacks a tensor once into panels of 8 rows in which
 * an int32 lane of a ymm register IS a weight row, so group sums come out
 * per lane (no horizontal reductions), the combine runs 8 rows wide, and
 * up to 4 activation rows share every unpacked weight vector (decode
 * batches; prefill goes 4 tokens per pass, the INT8 GEMM micro-kernel).
 * Per (panel, scale group), 32-aligned:
 *
 *   lo   per 64-element block of the group (G/64 blocks):
 *        4-bit codes: 8 x 32 B, chunk c, byte 4i+q: row i's elements 8c+q
 *        (low nibble) and 8c+4+q (high nibble), offset binary (code + 8);
 *        8-bit codes: 16 x 32 B, chunk c, byte 4i+q: element 4c+q, signed
 *   idx  hq x 32 B  chunk j, byte 4i+q: in-group position of row i's
 *                   high 4j+q (banks of b < 64 merged; highs need G = 64)
 *   hi   hq x 32 B  the matching high codes (int8); padding has code 0
 *   s    the 8 rows' s_lo and s_hi, as halves where that is exact, else
 *        floats; s_lo alone (floats) without highs (k_sq_scales.h)
 *
 * The multiply: AVX2 has no vpdpbusd, so a 4-byte dot product per lane is
 * vpmaddubsw (u8 x s8 pairs to s16, saturating) then vpmaddwd with ones.
 * 4-bit codes in offset binary are 0..15, so a pair is at most 2*15*127
 * and eight of them still fit in 16 bits: the s16 sums are widened once
 * per 8 chunks, not per chunk (about 2 multiply uops per 32 MACs instead
 * of 3). 8-bit codes would saturate in offset binary, so they are stored
 * signed and multiplied as |w| x (x with w's sign), one widening each.
 * With AVX-VNNI, vpdpbusd does either in one instruction (exact, no
 * saturation); the layout is the same.
 *
 * The highs: AVX2 has no 64-byte byte permute (vpermb), so row i's
 * activations at its high positions are gathered with four in-lane
 * vpshufb over the group's four 16-byte quarters, merged by bits 4 and 5
 * of the position (vpblendvb), then multiplied with the sign trick.
 *
 * The integers equal the portable path's exactly and the float combine
 * follows k_sq_combine's order (no FMA contraction: see opaque()), so the
 * results are bit-identical to the reference. Trade-off, as on AVX-512:
 * the panels are a second copy of the codes (6.5 bits per weight for SQ
 * 8/4 with half scales); the mapped file is not read after load.
 */
#include "../k_sq.h"
#include "k_sq_codes.h"
#include "k_sq_scales.h"

#include <immintrin.h>
#include <string.h>

#define PR 8 /* rows per panel = int32 lanes of a ymm */
#ifndef SQ_PF_DIST
#define SQ_PF_DIST 2048 /* decode's software prefetch distance, bytes */
#endif

/* Bytes of one 64-element block of low codes in a panel. */
static size_t lo_block(const k_sq_t *w) { return w->h_low == 8 ? 512 : 256; }

size_t k_sq_pack_bytes_avx2(const k_sq_t *w, int s16, int *hq, size_t *gbytes) {
    int hg = w->h ? w->h * (w->G / w->b) : 0; /* highs per scale group (G = 64 when h > 0) */
    *hq = (hg + 3) / 4;
    *gbytes = (size_t)(w->G / 64) * lo_block(w) + 64 * (size_t)*hq + k_sq_panel_scale_bytes(PR, *hq, s16);
    return (size_t)((w->n + PR - 1) / PR) * (size_t)(w->k / w->G) * *gbytes;
}

static uint8_t code_at(const k_sq_t *w, long r, long j) { /* 8-bit: signed; 2-4 bit: offset-binary nibble */
    int c = k_sq_lo_code(w->lo, w->h_low, (size_t)(r * w->k + j));
    return (uint8_t)(w->h_low == 8 ? c : c + 8);
}

static void pack_row(const k_sq_t *w, long r, long g, int i, int hq, int s16, uint8_t *P) {
    long nb = w->k / w->b, ng = w->k / w->G, nsub = w->G / 64;
    for (long u = 0; u < nsub; u++) {
        uint8_t *L = P + (size_t)u * lo_block(w);
        long j0 = g * w->G + 64 * u;
        if (w->h_low == 3 || w->h_low == 4) { /* nibbles: the row's 64 codes in place (j0 is even) */
            k_sq_pack_nib_row(w->lo + (size_t)(r * w->k + j0) / 2, L, 32, i);
            continue;
        }
        for (int c = 0; c < (w->h_low == 8 ? 16 : 8); c++)
            for (int q = 0; q < 4; q++)
                L[32 * c + 4 * i + q] = w->h_low == 8 ? code_at(w, r, j0 + 4 * c + q)
                                                      : (uint8_t)(code_at(w, r, j0 + 8 * c + q) |
                                                                  code_at(w, r, j0 + 8 * c + 4 + q) << 4);
    }
    uint8_t *I = P + (size_t)nsub * lo_block(w);
    for (int u = 0, bpg = w->G / w->b; w->h && u < w->h * bpg; u++) {
        long bank = g * bpg + u / w->h;
        size_t at = (size_t)((r * nb + bank) * w->h + u % w->h);
        size_t o = (size_t)(32 * (u / 4) + 4 * i + u % 4);
        I[o] = (uint8_t)((u / w->h) * w->b + w->idx[at]);
        I[32 * hq + o] = (uint8_t)w->hi[at];
    }
    k_sq_panel_scales(w, r * ng + g, i, PR, hq, s16, I + 64 * hq);
}

void k_sq_pack_avx2(const k_sq_t *w, int s16, uint8_t *dst) {
    int hq;
    size_t gb;
    k_sq_pack_bytes_avx2(w, s16, &hq, &gb);
    long ng = w->k / w->G, np = (w->n + PR - 1) / PR;
    for (long p = 0; p < np; p++)
        for (long g = 0; g < ng; g++) {
            uint8_t *P = dst + (size_t)(p * ng + g) * gb;
            memset(P, 0, gb);
            for (int i = 0; i < PR && p * PR + i < w->n; i++) pack_row(w, p * PR + i, g, i, hq, s16, P);
        }
}

/* Byte offset (and nibble shift) of element e (0..63) of row i in a
 * 64-element block of low codes. */
static size_t elem_at(const k_sq_t *w, int i, int e, int *shift) {
    *shift = w->h_low == 8 || e % 8 < 4 ? 0 : 4;
    return w->h_low == 8 ? (size_t)(32 * (e / 4) + 4 * i + e % 4) : (size_t)(32 * (e / 8) + 4 * i + e % 4);
}

/* Permutes the low codes of every panel row in place: new position q of
 * each 64-block holds old position perm[q] (absolute column indices). */
void k_sq_permute_avx2(const k_sq_t *w, const uint16_t *perm) {
    long ng = w->k / w->G, nsub = w->G / 64, np = (w->n + PR - 1) / PR;
    uint8_t *base = (uint8_t *)(uintptr_t)w->pack, mask = w->h_low == 8 ? 0xff : 15;
    for (long p = 0; p < np; p++)
        for (long g = 0; g < ng; g++)
            for (long u = 0; u < nsub; u++) {
                uint8_t *L = base + (size_t)(p * ng + g) * w->pack_gbytes + (size_t)u * lo_block(w);
                long j0 = g * w->G + 64 * u;
                for (int i = 0; i < PR; i++) {
                    uint8_t old[64];
                    int sh;
                    for (int e = 0; e < 64; e++) {
                        size_t o = elem_at(w, i, e, &sh); /* sets sh: a separate statement */
                        old[e] = (uint8_t)(L[o] >> sh) & mask;
                    }
                    for (int e = 0; e < 64; e++) {
                        uint8_t *b = &L[elem_at(w, i, e, &sh)];
                        *b = (uint8_t)((*b & ~(mask << sh)) | old[perm[j0 + e] - j0] << sh);
                    }
                }
            }
}

/* ---- the passes, in two multiply flavours ------------------------------------------------ */

#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define TGT_VNNI __attribute__((target("avx2,fma,avxvnni")))

/* A register barrier: keeps -ffp-contract=fast (this file's flags) from
 * fusing the combine's multiply and add into an FMA, which would round
 * differently from k_sq_combine. */
TGT_AVX2 static inline __m256 opaque(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

TGT_AVX2 static inline __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 32 bytes x[pos[i]] for positions 0..63 (s4, s5: bits 4 and 5 of each
 * position shifted to the byte's top bit): each 16-byte quarter of x is
 * shuffled by the low 4 bits, and the right quarter picked per byte. */
TGT_AVX2 static inline __m256i gather64(const int8_t *x, __m256i pos, __m256i s4, __m256i s5) {
    __m256i q0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x));
    __m256i q1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x + 16)));
    __m256i q2 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x + 32)));
    __m256i q3 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x + 48)));
    __m256i a = _mm256_blendv_epi8(_mm256_shuffle_epi8(q0, pos), _mm256_shuffle_epi8(q1, pos), s4);
    __m256i b = _mm256_blendv_epi8(_mm256_shuffle_epi8(q2, pos), _mm256_shuffle_epi8(q3, pos), s4);
    return _mm256_blendv_epi8(a, b, s5);
}

/* Plain AVX2: ACC4 adds a 4-byte dot product into 16-bit pairs (the
 * caller bounds how many), FLUSH widens them to the int32 lane sum;
 * DOT32 is the exact int32 form for operands whose pairs fill 16 bits. */
#define SQ_TGT TGT_AVX2
#define ACC4(acc, u, s) _mm256_add_epi16((acc), _mm256_maddubs_epi16((u), (s)))
#define FLUSH(acc) _mm256_madd_epi16((acc), _mm256_set1_epi16(1))
#define DOT32(acc, u, s) _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#define SQ_T 4
#define SQ_LO8 0
#define SQ_PASS pass4
#include "k_sq_panel_avx2.inc"
#define SQ_T 2
#define SQ_LO8 0
#define SQ_PASS pass2
#include "k_sq_panel_avx2.inc"
#define SQ_T 1
#define SQ_LO8 0
#define SQ_PASS pass1
#include "k_sq_panel_avx2.inc"
#define SQ_T 4
#define SQ_LO8 1
#define SQ_PASS pass4_8
#include "k_sq_panel_avx2.inc"
#define SQ_T 2
#define SQ_LO8 1
#define SQ_PASS pass2_8
#include "k_sq_panel_avx2.inc"
#define SQ_T 1
#define SQ_LO8 1
#define SQ_PASS pass1_8
#include "k_sq_panel_avx2.inc"
#define SQ_T 4
#define SQ_LO8 0
#define SQ_PASS split4
#include "k_sq_split_avx2.inc"
#define SQ_T 2
#define SQ_LO8 0
#define SQ_PASS split2
#include "k_sq_split_avx2.inc"
#define SQ_T 1
#define SQ_LO8 0
#define SQ_PASS split1
#include "k_sq_split_avx2.inc"
#define SQ_T 4
#define SQ_LO8 1
#define SQ_PASS split4_8
#include "k_sq_split_avx2.inc"
#define SQ_T 2
#define SQ_LO8 1
#define SQ_PASS split2_8
#include "k_sq_split_avx2.inc"
#define SQ_T 1
#define SQ_LO8 1
#define SQ_PASS split1_8
#include "k_sq_split_avx2.inc"
#undef SQ_TGT
#undef ACC4
#undef FLUSH
#undef DOT32

/* AVX-VNNI: vpdpbusd accumulates the 4-byte dot products in int32. */
#define SQ_TGT TGT_VNNI
#define ACC4(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#define FLUSH(acc) (acc)
#define DOT32(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#define SQ_T 4
#define SQ_LO8 0
#define SQ_PASS vpass4
#include "k_sq_panel_avx2.inc"
#define SQ_T 2
#define SQ_LO8 0
#define SQ_PASS vpass2
#include "k_sq_panel_avx2.inc"
#define SQ_T 1
#define SQ_LO8 0
#define SQ_PASS vpass1
#include "k_sq_panel_avx2.inc"
#define SQ_T 4
#define SQ_LO8 1
#define SQ_PASS vpass4_8
#include "k_sq_panel_avx2.inc"
#define SQ_T 2
#define SQ_LO8 1
#define SQ_PASS vpass2_8
#include "k_sq_panel_avx2.inc"
#define SQ_T 1
#define SQ_LO8 1
#define SQ_PASS vpass1_8
#include "k_sq_panel_avx2.inc"
#define SQ_T 4
#define SQ_LO8 0
#define SQ_PASS vsplit4
#include "k_sq_split_avx2.inc"
#define SQ_T 2
#define SQ_LO8 0
#define SQ_PASS vsplit2
#include "k_sq_split_avx2.inc"
#define SQ_T 1
#define SQ_LO8 0
#define SQ_PASS vsplit1
#include "k_sq_split_avx2.inc"
#define SQ_T 4
#define SQ_LO8 1
#define SQ_PASS vsplit4_8
#include "k_sq_split_avx2.inc"
#define SQ_T 2
#define SQ_LO8 1
#define SQ_PASS vsplit2_8
#include "k_sq_split_avx2.inc"
#define SQ_T 1
#define SQ_LO8 1
#define SQ_PASS vsplit1_8
#include "k_sq_split_avx2.inc"
#undef SQ_TGT
#undef ACC4
#undef FLUSH
#undef DOT32

typedef void (*pass_fn)(const uint8_t *, long, long, int, int, size_t, const int8_t *const *, const int32_t *const *,
                        const float *, float *const *, __m256i);

/* [vnni][8-bit codes][4, 2, 1 tokens] */
static const pass_fn plain_passes[2][2][3] = {
    {{pass4, pass2, pass1}, {pass4_8, pass2_8, pass1_8}},
    {{vpass4, vpass2, vpass1}, {vpass4_8, vpass2_8, vpass1_8}},
};
static const pass_fn split_passes[2][2][3] = {
    {{split4, split2, split1}, {split4_8, split2_8, split1_8}},
    {{vsplit4, vsplit2, vsplit1}, {vsplit4_8, vsplit2_8, vsplit1_8}},
};

/* Panels [p0, p1) against tokens [t_begin, t_end). */
TGT_AVX2 static void drive_block(const k_sq_t *w, long p0, long p1, const pass_fn *passes, int iarg,
                                 const int8_t *qx, const int32_t *xsum, int xs_per, const float *sx, int sx_per,
                                 long t_begin, long t_end, float *y) {
    long ng = w->k / w->G, nsub = w->G / 64;
    for (long p = p0; p < p1; p++) {
        const uint8_t *P = w->pack + (size_t)(p * ng) * w->pack_gbytes;
        long rows = w->n - p * PR < PR ? w->n - p * PR : PR;
        __m256i rm = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (long t0 = t_begin; t0 < t_end;) {
            long left = t_end - t0;
            int v = left >= 4 ? 0 : left >= 2 ? 1 : 2;
            long nt = 4 >> v;
            const int8_t *xq[4];
            const int32_t *xs[4];
            float *yo[4];
            for (long t = 0; t < nt; t++) {
                xq[t] = qx + (t0 + t) * w->k;
                xs[t] = xsum + (t0 + t) * xs_per * (w->k / 64);
                yo[t] = y + (t0 + t) * w->n + p * PR;
            }
            passes[v](P, ng, nsub, iarg, w->pack_s16, w->pack_gbytes, xq, xs, sx + sx_per * t0, yo, rm);
            t0 += nt;
        }
    }
}

/* Walks panels [p0, p1) over the m activation rows, 4 tokens per pass,
 * then 2, 1. Each token has xs_per sums per 64-block (2 with static SQ
 * activations: high, low) and sx_per scales; iarg is the pass's
 * per-panel count (pack_hq, or the split). Prefill goes in blocks of
 * tokens whose codes fit in half of L1 (16 KB), all panels per block:
 * a pass re-reads its tokens' codes once per panel, which then come from
 * L1, not L2 (the panels, read once per block, stream well). */
TGT_AVX2 static void drive_panels(const k_sq_t *w, long p0, long p1, const pass_fn *passes, int iarg,
                                  const int8_t *qx, const int32_t *xsum, int xs_per, const float *sx, int sx_per,
                                  long m, float *y) {
    long tb = 16384 / w->k / 4 * 4;
    tb = tb < 4 ? 4 : tb;
    for (long b0 = 0; b0 < m; b0 += tb) {
        long b1 = m - b0 < tb ? m : b0 + tb;
        drive_block(w, p0, p1, passes, iarg, qx, xsum, xs_per, sx, sx_per, b0, b1, y);
    }
}

/* Panels [p0, p1) against all m activation rows: y[i][r] for r in the
 * panels' rows; vnni selects the vpdpbusd flavour (the caller checked
 * cpuid). */
void k_sq_panels_avx2(const k_sq_t *w, int vnni, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                      const float *sx, long m, float *y) {
    drive_panels(w, p0, p1, plain_passes[vnni != 0][w->h_low == 8], w->pack_hq, qx, xsum, 1, sx, 1, m, y);
}

/* Static SQ activations on permuted panels (w->split highs first in
 * every 64-block): qx rows hold each token's permuted codes, xsum pairs
 * (high, low) per 64-block, sx pairs (sx_hi, sx_lo). */
void k_sq_panels_split_avx2(const k_sq_t *w, int vnni, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                            const float *sx, long m, float *y) {
    drive_panels(w, p0, p1, split_passes[vnni != 0][w->h_low == 8], w->split, qx, xsum, 2, sx, 2, m, y);
}

/* k_quant_row_i8 for k % 32 == 0: the same IEEE division and
 * round-to-nearest-even as the scalar code, so the same codes. */
TGT_AVX2 float k_quant_row_i8_avx2(const float *x, long k, int8_t *qx, int32_t *xsum64) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 mv = _mm256_setzero_ps();
    for (long j = 0; j < k; j += 8) mv = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), absm), mv);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float sx = _mm_cvtss_f32(m4) / 127.0f;
    const __m256 s = _mm256_set1_ps(sx), lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i gsum = _mm256_setzero_si256();
    for (long j = 0; j < k; j += 32) {
        __m256i q[4];
        for (int v = 0; v < 4; v++) {
            q[v] = _mm256_setzero_si256();
            if (sx > 0) {
                __m256 f = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + j + 8 * v), s),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[v] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(f, nlim), lim));
            }
            gsum = _mm256_add_epi32(gsum, q[v]);
        }
        /* in-lane packs interleave the 4 vectors by 128-bit halves; the
         * dword permute puts the 32 codes back in order */
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(qx + j), _mm256_permutevar8x32_epi32(b, order));
        if (xsum64 && j % 64 == 32) {
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(gsum), _mm256_extracti128_si256(gsum, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
            xsum64[j / 64] = _mm_cvtsi128_si32(t);
            gsum = _mm256_setzero_si256();
        }
    }
    return sx;
}
