/* k_ops.c - ISA dispatch, the threaded matmul driver and small vector ops.
 *
 * Matmul strategy, by batch size m:
 * - m <= FUSED_MAX_M with a fused type (F32, Q4_0, Q4_1, Q8_0): stream each
 *   weight row once, unpacking each block once for up to 8 x rows at a
 *   time. Decode is bound by weight bytes, so the weights stay in their
 *   4/8-bit form, and batched decode reuses every unpacked block.
 * - otherwise: dequantize 32 weight rows at a time into a transposed
 *   per-thread panel and run the 6x32 outer-product micro-kernel over all
 *   x rows, so the dequant cost is paid once per weight row for the whole
 *   batch (prompt processing) and no horizontal sums are needed.
 * Rows of W are split across threads in multiples of 32 (4 when fused).
 * SQ weights (K_SQ) go to k_sq_matmul (k_sq.h), which has its own driver;
 * GGUF weights marked int_acts to k_q8_matmul_group (k_q8.h), which
 * quantizes the activations to 8 bits per block: this file's kernels are
 * the FP32-activation reference path.
 */
#include "../k_ops.h"
#include "../k_quant.h"
#include "../k_q8.h"
#include "../k_sq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

extern const k_isa_t k_isa_generic, k_isa_avx2, k_isa_avx512;

static const k_isa_t *isa = &k_isa_generic;

void k_init(void) {
    const char *want = getenv("SQSERVE_ISA");
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512vnni");
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    isa = has512 ? &k_isa_avx512 : has2 ? &k_isa_avx2 : &k_isa_generic;
    /* a request can only lower the level: asking for avx512 on an AVX2
     * machine must not execute illegal instructions */
    if (want && strcmp(want, "portable") == 0) isa = &k_isa_generic;
    /* avxvnni only changes the SQ kernels' multiply (k_sq.c): AVX2 here */
    else if (want && (strcmp(want, "avx2") == 0 || strcmp(want, "avxvnni") == 0) && has2) isa = &k_isa_avx2;
    else if (want && strcmp(want, "avx512") == 0 && has512) isa = &k_isa_avx512;
}

const char *k_isa_name(void) { return isa->name; }
const k_isa_t *k_isa(void) { return isa; }

#define FUSED_MAX_M 32 /* beyond this, dequantize once into panels */
#define PANEL 32 /* weight rows per packed panel (two 16-lane vectors) */

typedef struct {
    const k_mat_t *w;
    const float *x;
    long m;
    float *y;
    const float *xsum32; /* per-32 sums of each x row (Q4_1) */
    int fused, failed;
} mm_ctx_t;

static int has_fused(uint32_t type) {
    return type == K_F32 || type == K_Q4_0 || type == K_Q4_1 || type == K_Q8_0;
}

static float fused_dot(const mm_ctx_t *c, long r, long i) {
    const k_mat_t *w = c->w;
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    const float *x = c->x + i * w->k;
    switch (w->type) {
    case K_F32: return isa->dot_f32((const float *)row, x, w->k);
    case K_Q4_0: return isa->dot_q4_0(row, x, w->k);
    case K_Q4_1: return isa->dot_q4_1(row, x, c->xsum32 + i * (w->k / 32), w->k);
    default: return isa->dot_q8_0(row, x, w->k);
    }
}

static void mm_task(void *arg, int ith, int nth) {
    mm_ctx_t *c = arg;
    const k_mat_t *w = c->w;
    long b, e, k = w->k;
    k_split(w->n, ith, nth, c->fused ? 4 : PANEL, &b, &e);
    if (b >= e) return;
    if (c->fused && c->m == 1) {
        for (long r = b; r < e; r++) c->y[r] = fused_dot(c, r, 0);
        return;
    }
    if (c->fused) {
        float out[8];
        for (long r = b; r < e; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            for (long i = 0; i < c->m; i += 8) {
                int nx = c->m - i < 8 ? (int)(c->m - i) : 8;
                isa->multi_dot(w->type, row, c->x + i * k, k, nx, k, out);
                for (int j = 0; j < nx; j++) c->y[(i + j) * w->n + r] = out[j];
            }
        }
        return;
    }
    float *rows = malloc((size_t)k * PANEL * sizeof(float));
    float *panel = aligned_alloc(64, (size_t)k * PANEL * sizeof(float));
    if (!rows || !panel) {
        free(rows);
        free(panel);
        c->failed = 1;
        return;
    }
    for (long r = b; r < e; r += PANEL) {
        int nw = e - r < PANEL ? (int)(e - r) : PANEL;
        for (int j = 0; j < nw; j++)
            k_dequant_row(w->type, (const uint8_t *)w->data + (size_t)(r + j) * w->row_bytes,
                          rows + j * k, (size_t)k);
        for (long p = 0; p < k; p++) { /* transpose; zero-pad ragged panels */
            for (int j = 0; j < nw; j++) panel[p * PANEL + j] = rows[j * k + p];
            for (int j = nw; j < PANEL; j++) panel[p * PANEL + j] = 0;
        }
        for (long i = 0; i < c->m; i += 6) {
            int nx = c->m - i < 6 ? (int)(c->m - i) : 6;
            isa->gemm_panel(panel, k, c->x + i * k, k, nx, c->y + i * w->n + r, w->n, nw);
        }
    }
    free(rows);
    free(panel);
}

int k_matmul(k_pool_t *pool, const k_mat_t *w, const float *x, long m, float *y) {
    if (w->type == K_SQ) return k_sq_matmul(pool, w->data, x, m, y);
    if (w->int_acts && k_q8_supports(w->type, w->k)) return k_q8_matmul_group(pool, &w, &y, 1, x, m);
    const k_type_info_t *ti = k_type_info(w->type);
    if (!ti || !ti->dequant) return -1;
    mm_ctx_t c = {w, x, m, y, NULL, m <= FUSED_MAX_M && has_fused(w->type), 0};
    float *xsum = NULL;
    if (c.fused && m == 1 && w->type == K_Q4_1) { /* the single-row kernel's min term */
        long nb = w->k / 32;
        if (!(xsum = malloc((size_t)(m * nb) * sizeof(float)))) return -1;
        for (long i = 0; i < m; i++)
            for (long j = 0; j < nb; j++) {
                float s = 0;
                for (int t = 0; t < 32; t++) s += x[i * w->k + j * 32 + t];
                xsum[i * nb + j] = s;
            }
        c.xsum32 = xsum;
    }
    k_pool_run(pool, mm_task, &c);
    free(xsum);
    return c.failed ? -1 : 0;
}

typedef struct {
    mm_ctx_t ctx[4];
    int count;
} mm_group_t;

static void mm_group_task(void *arg, int ith, int nth) {
    mm_group_t *g = arg;
    for (int i = 0; i < g->count; i++) mm_task(&g->ctx[i], ith, nth);
}

int k_matmul_group(k_pool_t *pool, const k_mat_t *const *w, float *const *y, int count,
                   const float *x, long m) {
    /* only the fused single-row path is grouped: it is the one whose
     * per-matrix work is small enough for the fork-join to matter */
    int simple = count <= 4 && m == 1, sq = count <= 4, q8 = count <= 4; /* has_fused() is false for K_SQ */
    for (int i = 0; i < count; i++) {
        simple = simple && has_fused(w[i]->type) && !w[i]->int_acts;
        sq = sq && w[i]->type == K_SQ && w[i]->k == w[0]->k;
        q8 = q8 && w[i]->int_acts && k_q8_supports(w[i]->type, w[i]->k) && w[i]->k == w[0]->k;
    }
    if (q8) return k_q8_matmul_group(pool, w, y, count, x, m); /* x quantized once for all of them */
    if (sq) { /* INT8 activations: quantize x once for all of them */
        const k_sq_t *v[4];
        for (int i = 0; i < count; i++) v[i] = w[i]->data;
        return k_sq_matmul_group(pool, v, y, count, x, m);
    }
    if (!simple) {
        for (int i = 0; i < count; i++)
            if (k_matmul(pool, w[i], x, m, y[i]) != 0) return -1;
        return 0;
    }
    mm_group_t g = {.count = count};
    float *xsum = NULL;
    for (int i = 0; i < count; i++) {
        g.ctx[i] = (mm_ctx_t){w[i], x, m, y[i], NULL, 1, 0};
        if (w[i]->type == K_Q4_1) {
            if (!xsum) {
                long nb = w[i]->k / 32;
                if (!(xsum = malloc((size_t)nb * sizeof(float)))) return -1;
                for (long j = 0; j < nb; j++) {
                    float t = 0;
                    for (int u = 0; u < 32; u++) t += x[j * 32 + u];
                    xsum[j] = t;
                }
            }
            g.ctx[i].xsum32 = xsum;
        }
    }
    k_pool_run(pool, mm_group_task, &g);
    free(xsum);
    return 0;
}

void k_mat_row(const k_mat_t *w, long r, float *out) {
    k_dequant_row(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes, out, (size_t)w->k);
}

void k_rmsnorm(float *out, const float *x, const float *w, long n, float eps) {
    double ss = 0;
    for (long i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (long i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* one rotated pair (every product and sum rounded on its own: this file
 * is built by gcc in -std=c11, which does not contract into FMAs, the fuzz
 * build included; the GPU's kc_rope does the same) */
static inline void rope_pair(float *xa, float *xb, float c, float s) {
    const float a = *xa, b = *xb;
    *xa = a * c - b * s;
    *xb = a * s + b * c;
}

void k_rope(float *x, long rot_dim, float pos, const float *inv_freq) {
    for (long i = 0; i < rot_dim / 2; i++) {
        double theta = (double)pos * inv_freq[i];
        rope_pair(&x[2 * i], &x[2 * i + 1], (float)cos(theta), (float)sin(theta));
    }
}

void k_rope_neox(float *x, long rot_dim, float pos, const float *inv_freq) {
    for (long i = 0, half = rot_dim / 2; i < half; i++) {
        double theta = (double)pos * inv_freq[i];
        rope_pair(&x[i], &x[i + half], (float)cos(theta), (float)sin(theta));
    }
}

void k_rope_cs(float *cs, long rot_dim, float pos, const float *inv_freq) {
    for (long i = 0; i < rot_dim / 2; i++) {
        double theta = (double)pos * inv_freq[i];
        cs[2 * i] = (float)cos(theta), cs[2 * i + 1] = (float)sin(theta);
    }
}

void k_rope_cs_apply(float *x, long rot_dim, const float *cs) {
    for (long i = 0; i < rot_dim / 2; i++) rope_pair(&x[2 * i], &x[2 * i + 1], cs[2 * i], cs[2 * i + 1]);
}

void k_rope_neox_cs_apply(float *x, long rot_dim, const float *cs) {
    for (long i = 0, half = rot_dim / 2; i < half; i++) rope_pair(&x[i], &x[i + half], cs[2 * i], cs[2 * i + 1]);
}

/* g / (1 + expf(-g)) u, every ISA the same bits (k_attn.inc) */
void k_silu_mul(float *g, const float *u, long n) { k_isa()->silu_mul(g, u, n); }

void k_add(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}

void k_softmax(float *x, long n) {
    float mx = x[0];
    for (long i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (long i = 0; i < n; i++) sum += (x[i] = expf(x[i] - mx));
    float inv = (float)(1.0 / sum);
    for (long i = 0; i < n; i++) x[i] *= inv;
}
