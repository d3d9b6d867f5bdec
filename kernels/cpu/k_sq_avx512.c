/* k_sq_avx512.c - SQ (and uniform int) weights x INT8 with AVX-512 VNNI + VBMI.
 *
 * The stored layout (engine/sq.h) keeps one row's codes together, which
 * makes a kernel reduce each group's 16 vpdpbusd lanes horizontally: two
 * reductions per row and group, the main cost of the first version. So a
 * tensor is repacked once, at load (k_sq_new), into panels of 16 rows in
 * which a vector lane IS a row. Per (panel, scale group), 64-aligned:
 *
 *   lo   per 64-element block of the group (G/64 blocks):
 *        4-bit codes: 8 x 64 B, chunk c, byte 4i+q: row i's elements 8c+q
 *        (low nibble) and 8c+4+q (high nibble), offset binary (code + 8);
 *        8-bit codes: 16 x 64 B, chunk c, byte 4i+q: element 4c+q, code + 128
 *   idx  hq x 64 B  chunk j, byte 4i+q: in-group position of row i's
 *                   high 4j+q (banks of b < 64 are merged; highs need G = 64)
 *   hi   hq x 64 B  the matching high codes (int8); padding has code 0
 *   s    the 16 rows' s_lo and s_hi, as halves where that is exact, else
 *        floats; s_lo alone (floats) without highs (k_sq_scales.h)
 *
 * Then a group is: 16 vpdpbusd of unpacked nibbles against broadcast
 * activation quads (lane i accumulates row i), hq vpermb gathers of the
 * activations at the high positions (lane = row again) multiplied with
 * vpdpbusd via the sign trick (|hi| unsigned, sign moved onto x), and the
 * float combine done 16 rows wide in k_sq_combine's exact order, so the
 * results are bit-identical to the portable path. Activation rows (tokens)
 * are processed T = 8/4/2/1 per pass, sharing every unpacked weight vector.
 *
 * Trade-off: the panels are a second copy of the codes (6.5 bits per
 * weight for SQ 8/4 b64 with half scales, 7 with float ones); the mapped
 * file is not read after load. Rows past n are zero
 * padding and masked off on store.
 */
#include "../k_sq.h"
#include "k_sq_codes.h"
#include "k_sq_scales.h"

#include <immintrin.h>
#include <string.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
#define PR 16 /* rows per panel = int32 lanes */

/* Bytes of one 64-element block of low codes in a panel (16 rows). */
static size_t lo_block(const k_sq_t *w) { return w->h_low == 8 ? 1024 : 512; }

size_t k_sq_pack_bytes_avx512(const k_sq_t *w, int s16, int *hq, size_t *gbytes) {
    int hg = w->h ? w->h * (w->G / w->b) : 0; /* highs per scale group (G = 64 when h > 0) */
    *hq = (hg + 3) / 4;
    *gbytes = (size_t)(w->G / 64) * lo_block(w) + 128 * (size_t)*hq + k_sq_panel_scale_bytes(PR, *hq, s16);
    return (size_t)((w->n + PR - 1) / PR) * (size_t)(w->k / w->G) * *gbytes;
}

static unsigned code_ob(const k_sq_t *w, long r, long j) { /* offset-binary low code (2-4 bit: a nibble) */
    int c = k_sq_lo_code(w->lo, w->h_low, (size_t)(r * w->k + j));
    return (unsigned)(w->h_low == 8 ? c + 128 : c + 8);
}

static void pack_row(const k_sq_t *w, long r, long g, int i, int hq, int s16, uint8_t *P) {
    long nb = w->k / w->b, ng = w->k / w->G, nsub = w->G / 64;
    for (long u = 0; u < nsub; u++) {
        uint8_t *L = P + (size_t)u * lo_block(w);
        long j0 = g * w->G + 64 * u;
        if (w->h_low == 3 || w->h_low == 4) { /* nibbles: the row's 64 codes in place (j0 is even) */
            k_sq_pack_nib_row(w->lo + (size_t)(r * w->k + j0) / 2, L, 64, i);
            continue;
        }
        for (int c = 0; c < (w->h_low == 8 ? 16 : 8); c++)
            for (int q = 0; q < 4; q++)
                L[64 * c + 4 * i + q] = (uint8_t)(w->h_low == 8 ? code_ob(w, r, j0 + 4 * c + q)
                                                               : code_ob(w, r, j0 + 8 * c + q) |
                                                                     code_ob(w, r, j0 + 8 * c + 4 + q) << 4);
    }
    uint8_t *I = P + (size_t)nsub * lo_block(w);
    for (int u = 0, bpg = w->G / w->b; u < w->h * bpg; u++) {
        long bank = g * bpg + u / w->h;
        size_t at = (size_t)((r * nb + bank) * w->h + u % w->h);
        size_t o = (size_t)(64 * (u / 4) + 4 * i + u % 4);
        I[o] = (uint8_t)((u / w->h) * w->b + w->idx[at]);
        I[64 * hq + o] = (uint8_t)w->hi[at];
    }
    k_sq_panel_scales(w, r * ng + g, i, PR, hq, s16, I + 128 * hq);
}

void k_sq_pack_avx512(const k_sq_t *w, int s16, uint8_t *dst) {
    int hq;
    size_t gb;
    k_sq_pack_bytes_avx512(w, s16, &hq, &gb);
    long ng = w->k / w->G, np = (w->n + PR - 1) / PR;
    for (long p = 0; p < np; p++)
        for (long g = 0; g < ng; g++) {
            uint8_t *P = dst + (size_t)(p * ng + g) * gb;
            memset(P, 0, gb);
            for (int i = 0; i < PR && p * PR + i < w->n; i++) pack_row(w, p * PR + i, g, i, hq, s16, P);
        }
}

/* A register barrier: keeps -ffp-contract=fast (this file's flags) from
 * fusing the combine's multiply and add into an FMA, which would round
 * differently from k_sq_combine. */
TGT static inline __m512 opaque(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}

TGT static inline __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

#define SQ_T 8
#define SQ_LO8 0
#define SQ_PASS pass8
#include "k_sq_panel.inc"
#define SQ_T 4
#define SQ_LO8 0
#define SQ_PASS pass4
#include "k_sq_panel.inc"
#define SQ_T 2
#define SQ_LO8 0
#define SQ_PASS pass2
#include "k_sq_panel.inc"
#define SQ_T 1
#define SQ_LO8 0
#define SQ_PASS pass1
#include "k_sq_panel.inc"
#define SQ_T 8
#define SQ_LO8 1
#define SQ_PASS pass8_8
#include "k_sq_panel.inc"
#define SQ_T 4
#define SQ_LO8 1
#define SQ_PASS pass4_8
#include "k_sq_panel.inc"
#define SQ_T 2
#define SQ_LO8 1
#define SQ_PASS pass2_8
#include "k_sq_panel.inc"
#define SQ_T 1
#define SQ_LO8 1
#define SQ_PASS pass1_8
#include "k_sq_panel.inc"

typedef void (*pass_fn)(const uint8_t *, long, long, int, int, size_t, const int8_t *const *, const int32_t *const *,
                        const float *, float *const *, __mmask16);

#define SQ_T 4
#define SQ_LO8 0
#define SQ_PASS split4
#include "k_sq_split.inc"
#define SQ_T 2
#define SQ_LO8 0
#define SQ_PASS split2
#include "k_sq_split.inc"
#define SQ_T 1
#define SQ_LO8 0
#define SQ_PASS split1
#include "k_sq_split.inc"
#define SQ_T 4
#define SQ_LO8 1
#define SQ_PASS split4_8
#include "k_sq_split.inc"
#define SQ_T 2
#define SQ_LO8 1
#define SQ_PASS split2_8
#include "k_sq_split.inc"
#define SQ_T 1
#define SQ_LO8 1
#define SQ_PASS split1_8
#include "k_sq_split.inc"

/* Walks panels [p0, p1) over the m activation rows, largest pass first:
 * passes[v] takes 2^(n_pass-1-v) tokens at a time. Each token has xs_per
 * sums per 64-block (2 with static SQ activations: high, low) and sx_per
 * scales; iarg is the pass's per-panel count (pack_hq, or the split). */
TGT static void drive_panels(const k_sq_t *w, long p0, long p1, const pass_fn *passes, int n_pass, int iarg,
                             const int8_t *qx, const int32_t *xsum, int xs_per, const float *sx, int sx_per,
                             long m, float *y) {
    long ng = w->k / w->G, nsub = w->G / 64;
    for (long p = p0; p < p1; p++) {
        const uint8_t *P = w->pack + (size_t)(p * ng) * w->pack_gbytes;
        long rows = w->n - p * PR < PR ? w->n - p * PR : PR;
        __mmask16 rm = (__mmask16)((1u << rows) - 1);
        for (long t0 = 0; t0 < m;) {
            int v = 0;
            while ((1L << (n_pass - 1 - v)) > m - t0) v++;
            long nt = 1L << (n_pass - 1 - v);
            const int8_t *xq[8];
            const int32_t *xs[8];
            float *yo[8];
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

/* Static SQ activations on permuted panels (w->split highs first in
 * every 64-block): qx rows hold each token's permuted codes, xsum pairs
 * (high, low) per 64-block, sx pairs (sx_hi, sx_lo). Tokens 4, 2, 1 at a
 * time. */
TGT void k_sq_panels_split_avx512(const k_sq_t *w, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                                  const float *sx, long m, float *y) {
    static const pass_fn passes[2][3] = {{split4, split2, split1}, {split4_8, split2_8, split1_8}};
    drive_panels(w, p0, p1, passes[w->h_low == 8], 3, w->split, qx, xsum, 2, sx, 2, m, y);
}

/* Permutes the low codes of every panel row in place: new position q of
 * each 64-block holds old position perm[q] (absolute column indices). */
void k_sq_permute_avx512(const k_sq_t *w, const uint16_t *perm) {
    long ng = w->k / w->G, nsub = w->G / 64, np = (w->n + PR - 1) / PR;
    uint8_t *base = (uint8_t *)(uintptr_t)w->pack;
    for (long p = 0; p < np; p++)
        for (long g = 0; g < ng; g++)
            for (long u = 0; u < nsub; u++) {
                uint8_t *L = base + (size_t)(p * ng + g) * w->pack_gbytes + (size_t)u * lo_block(w);
                long j0 = g * w->G + 64 * u;
                for (int i = 0; i < PR; i++) {
                    uint8_t old[64], nw[64];
                    for (int e = 0; e < 64; e++) /* position e of row i in this block */
                        old[e] = w->h_low == 8 ? L[64 * (e / 4) + 4 * i + e % 4]
                                               : (L[64 * (e / 8) + 4 * i + e % 4] >> (e % 8 >= 4 ? 4 : 0)) & 15;
                    for (int e = 0; e < 64; e++) nw[e] = old[perm[j0 + e] - j0];
                    for (int e = 0; e < 64; e++) {
                        if (w->h_low == 8) {
                            L[64 * (e / 4) + 4 * i + e % 4] = nw[e];
                        } else {
                            uint8_t *b = &L[64 * (e / 8) + 4 * i + e % 4];
                            int sh = e % 8 >= 4 ? 4 : 0;
                            *b = (uint8_t)((*b & ~(15 << sh)) | nw[e] << sh);
                        }
                    }
                }
            }
}

/* Panels [p0, p1) against all m activation rows: y[i][r] for r in the
 * panels' rows. Tokens go 8 at a time, then 4, 2, 1. */
TGT void k_sq_panels_avx512(const k_sq_t *w, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                            const float *sx, long m, float *y) {
    static const pass_fn passes[2][4] = {{pass8, pass4, pass2, pass1}, {pass8_8, pass4_8, pass2_8, pass1_8}};
    drive_panels(w, p0, p1, passes[w->h_low == 8], 4, w->pack_hq, qx, xsum, 1, sx, 1, m, y);
}

/* k_quant_row_i8 for k % 16 == 0: the same IEEE division and
 * round-to-nearest-even as the scalar code, so the same codes. */
TGT float k_quant_row_i8_avx512(const float *x, long k, int8_t *qx, int32_t *xsum64) {
    __m512 mv = _mm512_setzero_ps();
    for (long j = 0; j < k; j += 16) mv = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j)), mv);
    float sx = _mm512_reduce_max_ps(mv) / 127.0f;
    __m512 s = _mm512_set1_ps(sx), lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    __m512i gsum = _mm512_setzero_si512();
    for (long j = 0; j < k; j += 16) {
        __m512i q = _mm512_setzero_si512();
        if (sx > 0) {
            __m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + j), s),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, nlim), lim));
        }
        _mm_storeu_si128((__m128i *)(qx + j), _mm512_cvtsepi32_epi8(q));
        gsum = _mm512_add_epi32(gsum, q);
        if (xsum64 && j % 64 == 48) {
            xsum64[j / 64] = _mm512_reduce_add_epi32(gsum);
            gsum = _mm512_setzero_si512();
        }
    }
    return sx;
}
