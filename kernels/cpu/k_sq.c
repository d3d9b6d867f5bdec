/* k_sq.c - SQ x INT8: the portable reference, ISA dispatch and the
 * threaded matmul driver (see k_sq.h).
 *
 * The driver quantizes every activation row once per call (shared by all
 * matrices of a group), then splits the weight rows across the pool: in
 * 16-row panels for the AVX-512 kernel (up to 8 activation rows per pass
 * over a panel), in 8-row panels for the AVX2 / AVX-VNNI one (up to 4),
 * in rows of 4 on the stored layout otherwise.
 *
 * A view's panels belong to the ISA level in effect when k_sq_new made
 * them; the kind is kept in a private header around the public k_sq_t
 * (view_blk_t). What the passes read of the panels' geometry (pack_hq,
 * pack_gbytes, pack_s16) is in k_sq_t itself, in its kernel-private part.
 */
#include "../k_cpu.h"
#include "../k_ops.h"
#include "../k_quant.h"
#include "../k_sq.h"
#include "k_sq_codes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* k_sq_avx512.c */
size_t k_sq_pack_bytes_avx512(const k_sq_t *w, int s16, int *hq, size_t *gbytes);
void k_sq_pack_avx512(const k_sq_t *w, int s16, uint8_t *dst);
void k_sq_panels_avx512(const k_sq_t *w, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                        const float *sx, long m, float *y);
void k_sq_panels_split_avx512(const k_sq_t *w, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                              const float *sx, long m, float *y);
void k_sq_permute_avx512(const k_sq_t *w, const uint16_t *perm);
float k_quant_row_i8_avx512(const float *x, long k, int8_t *qx, int32_t *xsum64);
/* k_sq_avx2.c */
size_t k_sq_pack_bytes_avx2(const k_sq_t *w, int s16, int *hq, size_t *gbytes);
void k_sq_pack_avx2(const k_sq_t *w, int s16, uint8_t *dst);
void k_sq_panels_avx2(const k_sq_t *w, int vnni, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                      const float *sx, long m, float *y);
void k_sq_panels_split_avx2(const k_sq_t *w, int vnni, long p0, long p1, const int8_t *qx, const int32_t *xsum,
                            const float *sx, long m, float *y);
void k_sq_permute_avx2(const k_sq_t *w, const uint16_t *perm);
float k_quant_row_i8_avx2(const float *x, long k, int8_t *qx, int32_t *xsum64);

/* Levels in order; "avxvnni" is AVX2 plus the VEX-encoded vpdpbusd
 * (Alder Lake, Zen 4), which AVX-512 VNNI does not imply. */
enum { ISA_PORTABLE, ISA_AVX2, ISA_AVXVNNI, ISA_AVX512 };

static int has_avxvnni(void) { return k_cpu_avxvnni(); }

static int cpu_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512vbmi"))
        return ISA_AVX512;
    if (has_avxvnni()) return ISA_AVXVNNI;
    return __builtin_cpu_supports("avx2") ? ISA_AVX2 : ISA_PORTABLE;
}

static int level_of(const char *want, int cpu) {
    int w = !want                     ? cpu
            : !strcmp(want, "portable") ? ISA_PORTABLE
            : !strcmp(want, "avx2")     ? ISA_AVX2
            : !strcmp(want, "avxvnni")  ? (has_avxvnni() ? ISA_AVXVNNI : ISA_AVX2)
                                        : cpu;
    return w < cpu ? w : cpu; /* a request only lowers the level */
}

static int isa_level = -1;

static int sq_isa(void) {
    if (isa_level < 0) isa_level = level_of(getenv("SQSERVE_ISA"), cpu_level());
    return isa_level;
}

void k_sq_force_isa(const char *name) { isa_level = level_of(name, cpu_level()); }

/* Panels (either ISA): 8-bit low codes, or 2- to 4-bit ones widened to
 * the 4-bit panels (a 2- or 3-bit code is a nibble there: its panel takes 4
 * bits a weight, as a 4-bit tensor's does, and runs the same kernel; the
 * portable kernel took 35-49x longer: SQ 8/2 eval on a Zen 4, 194.8 s
 * against 5.5 on the AVX2 panels and 4.0 on AVX-512), in scale groups of
 * 64k; highs (if any) in 64-element groups. */
static int shape_panels(const k_sq_t *w) {
    int nib = w->h_low >= 2 && w->h_low <= 4;
    return (nib || w->h_low == 8) && w->G % 64 == 0 && w->k % w->G == 0 &&
           (w->h == 0 || (nib && w->G == 64 && w->b <= 64));
}

enum { PACK_NONE, PACK_AVX2, PACK_AVX512 };

/* Every view with panels comes from view_new, which allocates this. */
typedef struct {
    k_sq_t v; /* first: a k_sq_t * to it is the view */
    int pack_kind;
} view_blk_t;

/* The panels the current level can run: PACK_AVX512 and PACK_AVX2 need
 * their ISA (a view packed for AVX-512 under a lowered level runs on the
 * stored layout). */
static int panels(const k_sq_t *w) {
    if (!w->pack) return PACK_NONE;
    int kind = ((const view_blk_t *)w)->pack_kind;
    if (kind == PACK_AVX512) return sq_isa() == ISA_AVX512 ? kind : PACK_NONE;
    return sq_isa() >= ISA_AVX2 ? kind : PACK_NONE;
}

/* The AVX2 panels' multiply: vpdpbusd where the level allows AVX-VNNI. */
static int use_vnni(void) { return sq_isa() == ISA_AVXVNNI || (sq_isa() == ISA_AVX512 && has_avxvnni()); }

const char *k_sq_path(const k_sq_t *w) {
    switch (panels(w)) {
    case PACK_AVX512: return "avx512";
    case PACK_AVX2: return use_vnni() ? "avxvnni" : "avx2";
    default: return "portable";
    }
}

/* Whether the panels may hold the scales as halves (cpu/k_sq_scales.h):
 * the tensor has highs (without, only s_lo is kept, as floats) and every
 * s_lo and s_hi comes back from binary16 unchanged, so the kernels see the
 * same floats. F16C converts them (every AVX2 CPU has it; k_cpu_avx2 checks).
 * One pass over the scales, 1/64 of the weights. */
static int scales_are_halves(const k_sq_t *w) {
    if (!w->h || !k_cpu_avx2()) return 0;
    const size_t ns = (size_t)w->n * (size_t)(w->k / w->G);
    for (size_t i = 0; i < ns; i++)
        if (k_f16_to_f32(k_f32_to_f16(w->s_lo[i])) != w->s_lo[i] || k_f16_to_f32(k_f32_to_f16(w->s_hi[i])) != w->s_hi[i])
            return 0;
    return 1;
}

/* One block: the view, then `nib` bytes of 4-bit codes packed from
 * `codes` (uniform int4 weights) when nib > 0, then the 64-aligned panels
 * of the current level's ISA when the shape has a panel kernel. */
static k_sq_t *view_new(const k_sq_t *src, const int8_t *codes, size_t nib) {
    int hq = 0, kind = PACK_NONE, s16 = 0;
    size_t gbytes = 0, bytes = 0;
    if (shape_panels(src) && sq_isa() >= ISA_AVX2) s16 = scales_are_halves(src);
    if (shape_panels(src) && sq_isa() == ISA_AVX512) {
        bytes = k_sq_pack_bytes_avx512(src, s16, &hq, &gbytes);
        kind = PACK_AVX512;
    } else if (shape_panels(src) && sq_isa() >= ISA_AVX2) {
        bytes = k_sq_pack_bytes_avx2(src, s16, &hq, &gbytes);
        kind = PACK_AVX2;
    }
    size_t head = (sizeof(view_blk_t) + 63) / 64 * 64;
    /* panels without weight highs may be permuted for static activations */
    size_t perm = bytes && src->h == 0 && src->k <= 65536 ? (size_t)src->k * sizeof(uint16_t) : 0;
    uint8_t *blk = malloc(head + perm + nib + (bytes ? bytes + 64 : 0));
    if (!blk) return NULL;
    view_blk_t *vb = (view_blk_t *)blk;
    k_sq_t *v = &vb->v;
    *v = *src;
    vb->pack_kind = bytes ? kind : PACK_NONE;
    v->pack = NULL;
    v->pack_hq = 0, v->pack_gbytes = 0, v->pack_s16 = 0;
    v->perm = perm ? (uint16_t *)(blk + head) : NULL;
    v->split = 0;
    head += perm;
    if (nib) { /* two's complement nibbles, element e at byte e/2 (low nibble first) */
        uint8_t *lo = blk + head;
        memset(lo, 0, nib);
        for (size_t e = 0; e < (size_t)(src->n * src->k); e++) lo[e / 2] |= (uint8_t)((codes[e] & 15) << (4 * (e % 2)));
        v->lo = lo;
    }
    if (bytes) { /* the panels start 64-aligned inside the block */
        uint8_t *p = blk + head + nib;
        p += (64 - (uintptr_t)p % 64) % 64;
        if (kind == PACK_AVX512) k_sq_pack_avx512(v, s16, p);
        else k_sq_pack_avx2(v, s16, p);
        v->pack = p;
        v->pack_hq = hq;
        v->pack_gbytes = gbytes;
        v->pack_s16 = s16;
    }
    return v;
}

k_sq_t *k_sq_new(const k_sq_t *src) { return view_new(src, NULL, 0); }

k_sq_t *k_sq_new_int(const int8_t *codes, const float *scales, long n, long k, int bits, long g) {
    static const uint8_t none[1]; /* h = 0: the high arrays are never read */
    if (bits < 2 || bits > 8 || g < 1 || k % g || g > 1L << 30) return NULL;
    /* s_hi = s_lo: every high sum is 0 and s * 0 adds +-0, which leaves the
     * combine's result bit for bit what a combine without highs gives */
    k_sq_t src = {bits <= 4 ? 4 : 8, (int)g, 0, (int)g, n, k, (const uint8_t *)codes, (const int8_t *)none,
                  none, scales, scales, NULL, 0, 0, 0, NULL, 0, 0, NULL, 0};
    return view_new(&src, codes, bits <= 4 ? (size_t)(n * k + 1) / 2 : 0);
}

/* ---- the portable reference ------------------------------------------------------------- */

static float quant_row_ref(const float *x, long k, int8_t *qx, int32_t *xsum64) {
    float mx = 0;
    for (long j = 0; j < k; j++) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
    float sx = mx / 127.0f;
    for (long j = 0; j < k; j++) {
        float v = sx > 0 ? nearbyintf(x[j] / sx) : 0;
        qx[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    for (long g = 0; xsum64 && g < k / 64; g++) {
        int32_t t = 0;
        for (int j = 0; j < 64; j++) t += qx[g * 64 + j];
        xsum64[g] = t;
    }
    return sx;
}

/* The AVX-512 version divides and rounds exactly as this one does (IEEE
 * division, round-to-nearest-even), so both give the same codes. */
float k_quant_row_i8(const float *x, long k, int8_t *qx, int32_t *xsum64) {
    if (sq_isa() == ISA_AVX512 && k % 16 == 0) return k_quant_row_i8_avx512(x, k, qx, xsum64);
    if (sq_isa() >= ISA_AVX2 && k % 32 == 0) return k_quant_row_i8_avx2(x, k, qx, xsum64);
    return quant_row_ref(x, k, qx, xsum64);
}

void k_sq_dequant_row(const k_sq_t *w, long r, float *out) {
    long ng = w->k / w->G, nb = w->h ? w->k / w->b : 0;
    for (long j = 0; j < w->k; j++)
        out[j] = w->s_lo[r * ng + j / w->G] * (float)k_sq_lo_code(w->lo, w->h_low, (size_t)(r * w->k + j));
    for (long bk = 0; bk < nb; bk++) { /* the low code is 0 at a high position */
        const int8_t *hv = w->hi + (r * nb + bk) * w->h;
        const uint8_t *ix = w->idx + (r * nb + bk) * w->h;
        for (int i = 0; i < w->h; i++) {
            long j = bk * w->b + ix[i];
            out[j] = w->s_hi[r * ng + j / w->G] * (float)hv[i];
        }
    }
}

void k_sq_group_sums_ref(const k_sq_t *w, long r, const int8_t *qx, int32_t *lo, int32_t *hi) {
    long ng = w->k / w->G, nb = w->k / w->b;
    for (long g = 0; g < ng; g++) {
        int32_t s = 0;
        for (long j = g * w->G; j < (g + 1) * w->G; j++) s += k_sq_lo_code(w->lo, w->h_low, (size_t)(r * w->k + j)) * qx[j];
        lo[g] = s;
        hi[g] = 0;
    }
    for (long bk = 0; bk < nb; bk++) {
        const int8_t *hv = w->hi + (r * nb + bk) * w->h;
        const uint8_t *ix = w->idx + (r * nb + bk) * w->h;
        long j0 = bk * w->b;
        for (int i = 0; i < w->h; i++) hi[(j0 + ix[i]) / w->G] += hv[i] * qx[j0 + ix[i]];
    }
}

int k_sq_iscale_rows(const float *s_lo, const float *s_hi, long n, long ng, int h_low, float *rs) {
    const int qmax = (1 << (h_low - 1)) - 1;
    for (long r = 0; r < n; r++) {
        const float sr = s_hi[r * ng];
        for (long g = 0; g < ng; g++) {
            const float sl = s_lo[r * ng + g];
            if (s_hi[r * ng + g] != sr) return 0;
            if (sr == 0) {
                if (sl != 0) return 0;
                continue;
            }
            const float q = nearbyintf(sl / sr);
            if (!(q >= 0) || q * qmax > 127 || q * sr != sl) return 0;
        }
        if (rs) rs[r] = sr;
    }
    return 1;
}

float k_sq_combine(const k_sq_t *w, long r, float sx, const int32_t *lo, const int32_t *hi) {
    long ng = w->k / w->G;
    const float *sl = w->s_lo + r * ng, *sh = w->s_hi + r * ng;
    float acc = 0;
    for (long g = 0; g < ng; g++) acc += sl[g] * (float)lo[g] + sh[g] * (float)hi[g];
    return acc * sx;
}

/* With room for a permutation and the same number hb (a multiple of 4)
 * of high channels in every 64-block, the panels (either ISA) are permuted so
 * each block's high channels come first: one dense pass per token then
 * gives both sums, split by chunk (k_sq_split.inc). */
void k_sq_static_acts(k_sq_t *w, const uint8_t *mask, int hi_bits, int lo_bits) {
    w->amask = mask;
    w->a_hi = hi_bits;
    w->a_lo = lo_bits;
    if (!w->perm || !w->pack || w->split || w->k % 64) return;
    int hb = -1;
    for (long j0 = 0; j0 < w->k; j0 += 64) {
        int c = 0;
        for (int e = 0; e < 64; e++) c += mask[j0 + e] != 0;
        if ((hb >= 0 && c != hb) || c % 4) return;
        hb = c;
    }
    for (long j0 = 0; j0 < w->k; j0 += 64) {
        int at = 0;
        for (int want = 1; want >= 0; want--) /* the highs, then the lows, in order */
            for (int e = 0; e < 64; e++)
                if ((mask[j0 + e] != 0) == want) w->perm[j0 + at++] = (uint16_t)(j0 + e);
    }
    if (((const view_blk_t *)w)->pack_kind == PACK_AVX512) k_sq_permute_avx512(w, w->perm);
    else k_sq_permute_avx2(w, w->perm);
    w->split = hb > 0 ? hb : 0;
}

static float quant_class(const float *x, long k, const uint8_t *mask, int want, int bits, int8_t *q) {
    float mx = 0;
    for (long j = 0; j < k; j++)
        if (mask[j] == want) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
    int qm = (1 << (bits - 1)) - 1;
    float s = mx / (float)qm;
    for (long j = 0; j < k; j++) {
        float v = mask[j] == want && s > 0 ? nearbyintf(x[j] / s) : 0;
        q[j] = (int8_t)(v > qm ? qm : v < -qm ? -qm : v);
    }
    return s;
}

void k_quant_row_static(const float *x, long k, const uint8_t *mask, int hi_bits, int lo_bits, int8_t *qh,
                        int8_t *ql, float *sx) {
    sx[0] = quant_class(x, k, mask, 1, hi_bits, qh);
    sx[1] = quant_class(x, k, mask, 0, lo_bits, ql);
}

static void group_sums64(const int8_t *q, long k, int32_t *xsum64) {
    for (long g = 0; g < k / 64; g++) {
        int32_t t = 0;
        for (int j = 0; j < 64; j++) t += q[g * 64 + j];
        xsum64[g] = t;
    }
}

/* ---- the driver ------------------------------------------------------------------------ */

#define SQ_MAX_GROUPS 512

typedef struct {
    const k_sq_t *const *w;
    float *const *y;
    int count;
    const int8_t *qx;
    const int32_t *xsum;
    const float *sx;
    long m;
    int split; /* permuted panels, static SQ activations */
    int vnni;  /* AVX2 panels: the vpdpbusd flavour (decided here, not in the pool's threads) */
} sq_ctx_t;

/* One row of W against every activation row, on the stored layout. */
static void rows_stored(const k_sq_t *w, long b, long e, const sq_ctx_t *c, float *y) {
    int32_t lo[SQ_MAX_GROUPS], hi[SQ_MAX_GROUPS];
    for (long r = b; r < e; r++)
        for (long i = 0; i < c->m; i++) {
            k_sq_group_sums_ref(w, r, c->qx + i * w->k, lo, hi);
            y[i * w->n + r] = k_sq_combine(w, r, c->sx[i], lo, hi);
        }
}

static void sq_task(void *arg, int ith, int nth) {
    const sq_ctx_t *c = arg;
    for (int i = 0; i < c->count; i++) {
        const k_sq_t *w = c->w[i];
        long b, e;
        int kind = panels(w), vnni = c->vnni;
        if (kind == PACK_AVX512) {
            k_split((w->n + 15) / 16, ith, nth, 1, &b, &e);
            if (b < e && c->split) k_sq_panels_split_avx512(w, b, e, c->qx, c->xsum, c->sx, c->m, c->y[i]);
            else if (b < e) k_sq_panels_avx512(w, b, e, c->qx, c->xsum, c->sx, c->m, c->y[i]);
        } else if (kind == PACK_AVX2) {
            k_split((w->n + 7) / 8, ith, nth, 1, &b, &e);
            if (b < e && c->split) k_sq_panels_split_avx2(w, vnni, b, e, c->qx, c->xsum, c->sx, c->m, c->y[i]);
            else if (b < e) k_sq_panels_avx2(w, vnni, b, e, c->qx, c->xsum, c->sx, c->m, c->y[i]);
        } else {
            k_split(w->n, ith, nth, 4, &b, &e);
            rows_stored(w, b, e, c, c->y[i]);
        }
    }
}

/* Static SQ activations: token i becomes rows 2i (high codes) and 2i+1
 * (low codes); the pairs are summed into y afterwards. */
static void quant_static(const k_sq_t *w, const float *x, long m, int8_t *qx, int32_t *xsum, float *sx) {
    long k = w->k;
    for (long i = 0; i < m; i++) {
        int8_t *qh = qx + 2 * i * k, *ql = qh + k;
        k_quant_row_static(x + i * k, k, w->amask, w->a_hi, w->a_lo, qh, ql, sx + 2 * i);
        if (k % 64 == 0) {
            group_sums64(qh, k, xsum + 2 * i * (k / 64));
            group_sums64(ql, k, xsum + (2 * i + 1) * (k / 64));
        }
    }
}

/* Static SQ activations on permuted panels: one row per token, the codes
 * in panel order, (high, low) sums per 64-block, (sx_hi, sx_lo) pairs. */
static int quant_split(const k_sq_t *w, const float *x, long m, int8_t *qx, int32_t *xsum, float *sx) {
    long k = w->k;
    int8_t *qh = malloc((size_t)k), *ql = malloc((size_t)k);
    if (!qh || !ql) {
        free(qh);
        free(ql);
        return -1;
    }
    for (long i = 0; i < m; i++) {
        k_quant_row_static(x + i * k, k, w->amask, w->a_hi, w->a_lo, qh, ql, sx + 2 * i);
        int8_t *q = qx + i * k;
        for (long j = 0; j < k; j++) q[j] = w->amask[w->perm[j]] ? qh[w->perm[j]] : ql[w->perm[j]];
        for (long b = 0; b < k / 64; b++) {
            int32_t th = 0, tl = 0;
            for (int e = 0; e < 64; e++) {
                long j = b * 64 + e;
                th += e < w->split ? q[j] : 0;
                tl += e < w->split ? 0 : q[j];
            }
            xsum[(i * (k / 64) + b) * 2] = th;
            xsum[(i * (k / 64) + b) * 2 + 1] = tl;
        }
    }
    free(qh);
    free(ql);
    return 0;
}

static int split_matmul(k_pool_t *pool, const k_sq_t *const *w, float *const *y, int count, const float *x,
                        long m);

/* The activations' INT8 rows, quantized on the pool's threads over a prompt. */
typedef struct {
    const float *x;
    long k;
    int8_t *qx;
    int32_t *xsum;
    float *sx;
} quant_rows_t;

static void quant_rows_task(void *arg, long begin, long end) {
    const quant_rows_t *q = arg;
    long k = q->k;
    for (long i = begin; i < end; i++)
        q->sx[i] = k_quant_row_i8(q->x + i * k, k, q->qx + i * k, k % 64 ? NULL : q->xsum + i * (k / 64));
}

int k_sq_matmul_group(k_pool_t *pool, const k_sq_t *const *w, float *const *y, int count,
                      const float *x, long m) {
    long k = w[0]->k;
    for (int i = 0; i < count; i++)
        if (w[i]->k != k || w[i]->k / w[i]->G > SQ_MAX_GROUPS) return -1;
    int split = w[0]->split > 0 && panels(w[0]) != PACK_NONE;
    for (int i = 1; i < count; i++)
        if (w[i]->amask != w[0]->amask || (w[i]->split > 0 && panels(w[i]) != PACK_NONE) != split ||
            w[i]->split != w[0]->split) { /* different activation layouts: one at a time */
            for (int j = 0; j < count; j++)
                if (k_sq_matmul_group(pool, &w[j], &y[j], 1, x, m) != 0) return -1;
            return 0;
        }
    if (split) return split_matmul(pool, w, y, count, x, m);
    int st = w[0]->amask != NULL, rows = st ? 2 : 1;
    long mr = m * rows;
    int8_t *qx = malloc((size_t)(mr * k));
    int32_t *xsum = malloc((size_t)(mr * (k / 64 + 1)) * sizeof *xsum);
    float *sx = malloc((size_t)mr * sizeof *sx), *ys[4] = {0};
    int rc = -1, ok = qx && xsum && sx && count <= 4;
    for (int i = 0; ok && st && i < count; i++) ok = (ys[i] = malloc((size_t)(mr * w[i]->n) * sizeof(float))) != NULL;
    if (ok) {
        if (st) quant_static(w[0], x, m, qx, xsum, sx);
        else {
            quant_rows_t q = {x, k, qx, xsum, sx};
            k_pool_for(pool, m, 1, K_ROWS_GRAIN(k), quant_rows_task, &q);
        }
        sq_ctx_t c = {w, st ? ys : y, count, qx, xsum, sx, mr, 0, use_vnni()};
        k_pool_run(pool, sq_task, &c);
        for (int i = 0; st && i < count; i++) /* y = (high part) + (low part) */
            for (long t = 0; t < m; t++)
                for (long r = 0; r < w[i]->n; r++)
                    y[i][t * w[i]->n + r] = ys[i][2 * t * w[i]->n + r] + ys[i][(2 * t + 1) * w[i]->n + r];
        rc = 0;
    }
    for (int i = 0; i < 4; i++) free(ys[i]);
    free(qx);
    free(xsum);
    free(sx);
    return rc;
}

static int split_matmul(k_pool_t *pool, const k_sq_t *const *w, float *const *y, int count, const float *x,
                        long m) {
    long k = w[0]->k;
    int8_t *qx = malloc((size_t)(m * k));
    int32_t *xsum = malloc((size_t)(m * (k / 64) * 2) * sizeof *xsum);
    float *sx = malloc((size_t)(2 * m) * sizeof *sx);
    int rc = -1;
    if (qx && xsum && sx && quant_split(w[0], x, m, qx, xsum, sx) == 0) {
        sq_ctx_t c = {w, y, count, qx, xsum, sx, m, 1, use_vnni()};
        k_pool_run(pool, sq_task, &c);
        rc = 0;
    }
    free(qx);
    free(xsum);
    free(sx);
    return rc;
}

int k_sq_matmul(k_pool_t *pool, const k_sq_t *w, const float *x, long m, float *y) {
    return k_sq_matmul_group(pool, &w, &y, 1, x, m);
}
