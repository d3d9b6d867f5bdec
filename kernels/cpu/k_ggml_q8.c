/* k_ggml_q8.c - GGUF weights x 8-bit block activations: the activation
 * quantizer, the portable reference, ISA dispatch and the threaded driver
 * (see k_q8.h for the definition every path computes).
 *
 * The driver quantizes every activation row once per call, in the block
 * sizes the group's weight types need, then splits each matrix's rows
 * across the pool in groups of 8. With several activation rows a thread
 * builds each group's panel once in its scratch buffer (a few KB to ~30
 * KB: it stays in L1/L2) and runs every activation row of the call over
 * it, so prefill pays the unpacking once per 8 weight rows; with one
 * (decode) the kernel reads the 8 rows in place, each block once.
 *
 * The reference computes one row at a time with fmaf(), which this file's
 * flags (no FMA) turn into a libm call: slow, but the portable path only
 * runs on CPUs without AVX2.
 */
#include "../k_cpu.h"
#include "../k_q8.h"
#include "../k_quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* k_ggml_q8_avx2.c: flavour 0 avx2, 1 avx-vnni, 2 avx512-vnni */
void k_q8_rows_avx2(int flavour, uint32_t type, const uint8_t *w, size_t rb, int nr, const k_q8_row_t *x, long m,
                    long k, float *y, long ldy, uint8_t *scratch);
size_t k_q8_scratch_bytes_avx2(uint32_t type, long k);

int k_q8_block(uint32_t type) {
    switch (type) {
    case K_Q4_0: case K_Q4_1: case K_Q8_0: return 32;
    case K_Q4_K: case K_Q6_K: return 256;
    default: return 0;
    }
}

int k_q8_supports(uint32_t type, long k) {
    int b = k_q8_block(type);
    return b > 0 && k > 0 && k % b == 0;
}

void k_q8_quant_row(const float *x, long k, int blk, int8_t *q, float *d, float *s, int32_t *s32, int16_t *s16) {
    for (long b = 0; b < k / blk; b++) {
        const float *xb = x + b * blk;
        int8_t *qb = q + b * blk;
        float mx = 0;
        for (int j = 0; j < blk; j++) mx = fabsf(xb[j]) > mx ? fabsf(xb[j]) : mx;
        float id = mx > 0 ? 127.0f / mx : 0.0f;
        d[b] = mx / 127.0f;
        for (int j = 0; j < blk; j++) {
            float v = nearbyintf(xb[j] * id);
            qb[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
    }
    for (long g = 0; g < k / 16; g++) {
        int t = 0;
        for (int j = 0; j < 16; j++) t += q[g * 16 + j];
        if (g % 2 == 0) s32[g / 2] = t;
        else s32[g / 2] += t;
        if (blk == 256) s16[g] = (int16_t)t;
    }
    for (long g = 0; blk == 32 && g < k / 32; g++) s[g] = d[g] * (float)s32[g];
}

/* ---- the reference ------------------------------------------------------------------------ */

static float f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return k_f16_to_f32(h);
}

/* Weight code of element e (0..31) of a 32-block, as a signed value. */
static int code32(uint32_t type, const uint8_t *blk, int e) {
    switch (type) {
    case K_Q4_0: return ((blk[2 + e % 16] >> (e / 16 * 4)) & 15) - 8;
    case K_Q4_1: return (blk[4 + e % 16] >> (e / 16 * 4)) & 15;
    default: return (int8_t)blk[2 + e];
    }
}

static float ref32(uint32_t type, const uint8_t *row, const k_q8_row_t *x, long k) {
    size_t bb = k_type_info(type)->block_bytes;
    float acc = 0;
    for (long b = 0; b < k / 32; b++) {
        const uint8_t *blk = row + b * bb;
        int32_t i = 0;
        for (int e = 0; e < 32; e++) i += code32(type, blk, e) * x->q[b * 32 + e];
        acc = fmaf(f16(blk) * x->d[b], (float)i, acc);
        if (type == K_Q4_1) acc = fmaf(f16(blk + 2), x->s[b], acc);
    }
    return acc;
}

/* Q4_K/Q5_K's 6-bit (scale, min) pair j of the 12 packed bytes. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static float ref_q4_k(const uint8_t *row, const k_q8_row_t *x, long k) {
    float acc = 0, accm = 0;
    for (long b = 0; b < k / 256; b++) {
        const uint8_t *blk = row + b * 144, *qs = blk + 16;
        const int8_t *xq = x->q + b * 256;
        int32_t P = 0, M = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m, i = 0;
            scale_min_k4(j, blk + 4, &sc, &m);
            for (int e = 0; e < 32; e++) i += ((qs[32 * (j / 2) + e] >> (4 * (j % 2))) & 15) * xq[32 * j + e];
            P += sc * i;
            M += m * x->s32[b * 8 + j];
        }
        acc = fmaf(f16(blk) * x->d[b], (float)P, acc);
        accm = fmaf(f16(blk + 2) * x->d[b], (float)M, accm);
    }
    return acc - accm;
}

/* Q6_K code of element e (0..255) of a super-block, 0..63 (offset 32). */
static int code_q6_k(const uint8_t *blk, int e) {
    const uint8_t *ql = blk + 64 * (e / 128), *qh = blk + 128 + 32 * (e / 128);
    int i = e % 128, quarter = i / 32, l = i % 32;
    int lo = (ql[l + 32 * (quarter & 1)] >> (4 * (quarter >> 1))) & 15;
    return lo | ((qh[l] >> (2 * quarter)) & 3) << 4;
}

static float ref_q6_k(const uint8_t *row, const k_q8_row_t *x, long k) {
    float acc = 0;
    for (long b = 0; b < k / 256; b++) {
        const uint8_t *blk = row + b * 210;
        const int8_t *sc = (const int8_t *)(blk + 192), *xq = x->q + b * 256;
        int32_t P = 0;
        for (int j = 0; j < 16; j++) {
            int32_t i = 0;
            for (int e = 16 * j; e < 16 * j + 16; e++) i += (code_q6_k(blk, e) - 32) * xq[e];
            P += sc[j] * i;
        }
        acc = fmaf(f16(blk + 208) * x->d[b], (float)P, acc);
    }
    return acc;
}

void k_q8_rows_ref(uint32_t type, const void *w, size_t row_bytes, int nr, const k_q8_row_t *x, long m, long k,
                   float *y, long ldy) {
    for (int r = 0; r < nr; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;
        for (long i = 0; i < m; i++)
            y[i * ldy + r] = type == K_Q4_K   ? ref_q4_k(row, x + i, k)
                             : type == K_Q6_K ? ref_q6_k(row, x + i, k)
                                              : ref32(type, row, x + i, k);
    }
}

/* ---- dispatch ----------------------------------------------------------------------------- */

enum { LV_PORTABLE, LV_AVX2, LV_AVXVNNI, LV_AVX512 };

static int cpu_level(void) {
    __builtin_cpu_init();
    int has2 = k_cpu_avx2();
    if (has2 && k_cpu_avxvnni()) return LV_AVXVNNI; /* VEX vpdpbusd: preferred where both exist */
    if (has2 && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) return LV_AVX512;
    return has2 ? LV_AVX2 : LV_PORTABLE;
}

static int level_of(const char *want, int cpu) {
    if (!want) return cpu;
    int w = !strcmp(want, "portable") ? LV_PORTABLE
            : !strcmp(want, "avx2")   ? LV_AVX2
            : !strcmp(want, "avxvnni") ? (k_cpu_avxvnni() ? LV_AVXVNNI : LV_AVX2)
            : !strcmp(want, "avx512") ? LV_AVX512
                                      : cpu;
    if (w == LV_AVX512) { /* only where EVEX VNNI exists, whatever cpu_level preferred */
        __builtin_cpu_init();
        int has = cpu >= LV_AVX2 && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
        return has ? LV_AVX512 : cpu;
    }
    return w < cpu ? w : cpu; /* a request only lowers the level */
}

static int q8_level = -1;

static int level(void) {
    if (q8_level < 0) q8_level = level_of(getenv("SQSERVE_ISA"), cpu_level());
    return q8_level;
}

void k_q8_force_isa(const char *name) { q8_level = level_of(name, cpu_level()); }

const char *k_q8_path(void) {
    static const char *names[] = {"portable", "avx2", "avxvnni", "avx512"};
    return names[level()];
}

size_t k_q8_scratch_bytes(uint32_t type, long k) { return k_q8_scratch_bytes_avx2(type, k); }

static void rows_at(int lv, uint32_t type, const void *w, size_t rb, int nr, const k_q8_row_t *x, long m, long k,
                    float *y, long ldy, void *scratch) {
    if (lv == LV_PORTABLE) k_q8_rows_ref(type, w, rb, nr, x, m, k, y, ldy);
    else k_q8_rows_avx2(lv == LV_AVX2 ? 0 : lv == LV_AVXVNNI ? 1 : 2, type, w, rb, nr, x, m, k, y, ldy, scratch);
}

void k_q8_rows(uint32_t type, const void *w, size_t row_bytes, int nr, const k_q8_row_t *x, long m, long k,
               float *y, long ldy, void *scratch) {
    rows_at(level(), type, w, row_bytes, nr, x, m, k, y, ldy, scratch);
}

/* ---- the driver --------------------------------------------------------------------------- */

#define PR 8 /* weight rows per panel */

typedef struct {
    const k_mat_t *const *w;
    float *const *y;
    int count, lv, failed;
    long m;
    const k_q8_row_t *x32, *x256; /* m rows each, for the weight types that need them */
} q8_ctx_t;

static void q8_task(void *arg, int ith, int nth) {
    q8_ctx_t *c = arg;
    size_t need = 0;
    for (int i = 0; i < c->count; i++) {
        size_t b = k_q8_scratch_bytes(c->w[i]->type, c->w[i]->k);
        need = b > need ? b : need;
    }
    void *scratch = c->lv == LV_PORTABLE ? NULL : aligned_alloc(64, (need + 63) / 64 * 64);
    if (c->lv != LV_PORTABLE && !scratch) {
        c->failed = 1;
        return;
    }
    for (int i = 0; i < c->count; i++) {
        const k_mat_t *w = c->w[i];
        const k_q8_row_t *x = k_q8_block(w->type) == 32 ? c->x32 : c->x256;
        long b, e;
        k_split(w->n, ith, nth, PR, &b, &e);
        for (long r = b; r < e; r += PR)
            rows_at(c->lv, w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes, w->row_bytes,
                    e - r < PR ? (int)(e - r) : PR, x, c->m, w->k, c->y[i] + r, w->n, scratch);
    }
    free(scratch);
}

typedef struct {
    const float *x;
    long k;
    int blk;
    size_t nd, ns, n32, n16, per;
    uint8_t *base; /* row i's codes, scales and sums at base + i * per */
    k_q8_row_t *rows;
} q8_quant_t;

static void quant_rows_task(void *arg, long begin, long end) {
    const q8_quant_t *a = arg;
    for (long i = begin; i < end; i++) {
        float *d = (float *)(a->base + (size_t)i * a->per), *s = d + a->nd;
        int32_t *s32 = (int32_t *)(s + a->ns);
        int16_t *s16 = (int16_t *)(s32 + a->n32);
        int8_t *q = (int8_t *)(s16 + a->n16);
        k_q8_quant_row(a->x + i * a->k, a->k, a->blk, q, d, s, s32, s16);
        a->rows[i] = (k_q8_row_t){q, d, a->ns ? s : NULL, s32, a->n16 ? s16 : NULL};
    }
}

/* One block size's codes, scales and sums for m rows, in one allocation
 * (over a prompt, the rows are quantized on the pool's threads). */
static k_q8_row_t *quant_rows(k_pool_t *pool, const float *x, long m, long k, int blk) {
    size_t nd = (size_t)(k / blk), ns = blk == 32 ? (size_t)(k / 32) : 0, n32 = (size_t)(k / 32),
           n16 = blk == 256 ? (size_t)(k / 16) : 0;
    size_t per = (nd + ns) * sizeof(float) + n32 * sizeof(int32_t) + n16 * sizeof(int16_t) + (size_t)k;
    per = (per + 3) / 4 * 4;
    uint8_t *mem = malloc((size_t)m * (sizeof(k_q8_row_t) + per));
    if (!mem) return NULL;
    q8_quant_t a = {x, k, blk, nd, ns, n32, n16, per, mem + (size_t)m * sizeof(k_q8_row_t), (k_q8_row_t *)mem};
    k_pool_for(pool, m, 1, K_ROWS_GRAIN(k), quant_rows_task, &a);
    return a.rows;
}

int k_q8_matmul_group(k_pool_t *pool, const k_mat_t *const *w, float *const *y, int count, const float *x,
                      long m) {
    long k = w[0]->k;
    int need32 = 0, need256 = 0;
    if (count < 1 || count > 4) return -1;
    for (int i = 0; i < count; i++) {
        if (w[i]->k != k || !k_q8_supports(w[i]->type, k)) return -1;
        need32 |= k_q8_block(w[i]->type) == 32;
        need256 |= k_q8_block(w[i]->type) == 256;
    }
    q8_ctx_t c = {w, y, count, level(), 0, m, NULL, NULL};
    k_q8_row_t *x32 = need32 ? quant_rows(pool, x, m, k, 32) : NULL;
    k_q8_row_t *x256 = need256 ? quant_rows(pool, x, m, k, 256) : NULL;
    int rc = -1;
    if ((!need32 || x32) && (!need256 || x256)) {
        c.x32 = x32;
        c.x256 = x256;
        k_pool_run(pool, q8_task, &c);
        rc = c.failed ? -1 : 0;
    }
    free(x32);
    free(x256);
    return rc;
}
