/* backend_cpu.c - the forward pass's operations on the host (backend.h).
 *
 * Weights are the model's own views (k_mat_t): GGUF blocks through the
 * fused dequantizing kernels, integer-kernel views (SQ, W4A8, W8A8) from a
 * .sqm or a recipe, or FP32 expansions. Matmuls and attention run on the
 * thread pool; the small per-row steps (norms, RoPE, K/V copies) run on the
 * calling thread, where they cost a few percent of a step.
 *
 * Attention splits into (batch row, query head) units, each reading its
 * slot's K/V blocks through a per-thread table of block pointers, so the
 * paged cache costs one pointer lookup per block, not per position. A
 * sliding window (hp->n_swa) only moves where the scan starts: the cache
 * still holds every position (memory is not saved, the result is exact).
 */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *scores;          /* per thread, score_rows x n_ctx */
    int score_rows;         /* the query heads k_attn_heads takes at once: min(group, K_ATTN_HEADS_MAX) */
    const float **blk_ptrs; /* per thread, 2 x blocks per context */
    float *rope_cs;         /* per batch row, rope_dim: its RoPE table (k_rope_cs), made in cpu_begin */
} cpu_state_t;

static void cpu_free(fwd_t *f) {
    cpu_state_t *c = f->be_state;
    float *bufs[] = {f->x, f->xb, f->q, f->att, f->k, f->v, f->hb, f->hb2, f->sel};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    if (c) {
        free(c->scores);
        free(c->blk_ptrs);
        free(c->rope_cs);
        free(c);
    }
    f->be_state = NULL;
}

static int cpu_init(fwd_t *f) {
    const hparams_t *hp = &f->m->hp;
    size_t n = (size_t)f->n_max, d = (size_t)hp->dim, qd = (size_t)hp->q_dim, kvd = (size_t)f->kv->kv_dim;
    size_t nth = (size_t)k_pool_size(f->pool), max_blocks = (size_t)(f->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    cpu_state_t *c = calloc(1, sizeof *c);
    f->be_state = c;
    f->x = malloc(n * d * sizeof(float));
    f->xb = malloc(n * d * sizeof(float));
    f->q = malloc(n * qd * sizeof(float));
    f->att = malloc(n * qd * sizeof(float));
    f->k = malloc(n * kvd * sizeof(float));
    f->v = malloc(n * kvd * sizeof(float));
    f->hb = malloc(n * (size_t)hp->ffn_dim * sizeof(float));
    f->hb2 = malloc(n * (size_t)hp->ffn_dim * sizeof(float));
    f->sel = malloc(n * d * sizeof(float));
    if (!c || !f->x || !f->xb || !f->q || !f->att || !f->k || !f->v || !f->hb || !f->hb2 || !f->sel)
        return -1;
    int group = hp->n_head / hp->n_head_kv;
    c->score_rows = group < K_ATTN_HEADS_MAX ? group : K_ATTN_HEADS_MAX;
    c->scores = malloc(nth * (size_t)c->score_rows * (size_t)f->n_ctx * sizeof(float));
    c->blk_ptrs = malloc(nth * 2 * max_blocks * sizeof(float *));
    c->rope_cs = malloc(n * (size_t)(hp->rope_dim > 0 ? hp->rope_dim : 1) * sizeof(float));
    return c->scores && c->blk_ptrs && c->rope_cs ? 0 : -1;
}

static int cpu_begin(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
    (void)err; (void)errlen;
    const cpu_state_t *c = f->be_state;
    const long rd = f->m->hp.rope_dim;
    f->b = b;
    f->logits = logits;
    for (int i = 0; rd > 0 && i < b->n; i++) /* every layer's and head's rotation of row i */
        k_rope_cs(c->rope_cs + (size_t)i * (size_t)rd, rd, (float)b->pos[i], f->m->rope_inv_freq);
    int n_out = 0;
    for (int i = 0; i < b->n; i++) n_out += b->want_logits ? b->want_logits[i] != 0 : i == b->n - 1;
    return n_out;
}

static int cpu_launch(fwd_t *f, int n, int n_out, fwd_pass_fn pass) { return pass(f, n, n_out); }

static int cpu_end(fwd_t *f, int n_out) {
    if (f->hidden && n_out > 0)
        memcpy(f->hidden, f->sel, (size_t)n_out * (size_t)f->m->hp.dim * sizeof(float));
    return 0;
}

/* The only way a host operation fails is an allocation in the matmul. */
static void cpu_error(fwd_t *f, char *err, size_t errlen) {
    (void)f;
    snprintf(err, errlen, "out of memory in the forward pass");
}

static int cpu_embed(fwd_t *f, float *x, int n) {
    for (int i = 0; i < n; i++) k_mat_row(&f->m->tok_embd, f->b->tok[i], x + (size_t)i * f->m->hp.dim);
    return 0;
}

/* ---- row-wise steps, over the pool's threads when the batch is long ---- */

typedef struct {
    float *y;
    const float *x, *w;
    long width;
    float eps;
} rows_t;

static void norm_rows(void *arg, long begin, long end) {
    const rows_t *r = arg;
    for (long i = begin; i < end; i++) k_rmsnorm(r->y + i * r->width, r->x + i * r->width, r->w, r->width, r->eps);
}

/* y[i] += w (a row of width floats) for every row i */
static void add_row_rows(void *arg, long begin, long end) {
    const rows_t *r = arg;
    for (long i = begin; i < end; i++) k_add(r->y + i * r->width, r->w, r->width);
}

/* y += x over a flat range */
static void add_range(void *arg, long begin, long end) {
    const rows_t *r = arg;
    k_add(r->y + begin, r->x + begin, end - begin);
}

/* y = silu(y) * x over a flat range */
static void silu_mul_range(void *arg, long begin, long end) {
    const rows_t *r = arg;
    k_silu_mul(r->y + begin, r->x + begin, end - begin);
}

static void rows_norm(fwd_t *f, float *y, const float *x, const float *w, long width, long n) {
    rows_t r = {y, x, w, width, f->m->hp.rms_eps};
    k_pool_for(f->pool, n, 1, K_ROWS_GRAIN(width), norm_rows, &r);
}

/* flat element ranges: 64 values (a cache line's multiple) per unit */
static void flat_for(fwd_t *f, k_range_fn fn, float *y, const float *x, long count) {
    rows_t r = {y, x, NULL, 0, 0};
    k_pool_for(f->pool, count, 64, 8192, fn, &r);
}

static int cpu_rmsnorm(fwd_t *f, float *y, const float *x, int layer, int norm, int n) {
    const float *w = norm == NORM_OUT    ? f->m->output_norm
                     : norm == NORM_ATTN ? f->m->layers[layer].attn_norm
                                         : f->m->layers[layer].ffn_norm;
    rows_norm(f, y, x, w, f->m->hp.dim, n);
    return 0;
}

/* The CPU runs any hook: activation recipes and calibration alike. */
static int cpu_act_quant(fwd_t *f, int layer, int site, float *x, int n, int dim) {
    if (f->hook) f->hook(f->hook_ud, layer, site, x, n, dim);
    return 0;
}

static const k_mat_t *cpu_weight(const model_t *m, int layer, int id) {
    if (id == W_OUT) return &m->output;
    const layer_t *L = &m->layers[layer];
    const k_mat_t *w[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return w[id];
}

static int cpu_matmul(fwd_t *f, int layer, const int *ids, float *const *y, int count, const float *x, int n) {
    if (count == 1) return k_matmul(f->pool, cpu_weight(f->m, layer, ids[0]), x, n, y[0]);
    const k_mat_t *w[8];
    if (count > 8) return -1;
    for (int i = 0; i < count; i++) w[i] = cpu_weight(f->m, layer, ids[i]);
    return k_matmul_group(f->pool, w, y, count, x, n);
}

static int cpu_bias(fwd_t *f, int layer, int id, float *y, int n) {
    const layer_t *L = &f->m->layers[layer];
    const float *b = id == W_Q ? L->bq : id == W_K ? L->bk : L->bv;
    rows_t r = {y, NULL, b, id == W_Q ? f->m->hp.q_dim : f->kv->kv_dim, 0};
    k_pool_for(f->pool, n, 1, K_ROWS_GRAIN(r.width), add_row_rows, &r);
    return 0;
}

static int cpu_head_norm(fwd_t *f, float *x, int layer, int norm, int n_heads, int n) {
    const layer_t *L = &f->m->layers[layer];
    rows_norm(f, x, x, norm == NORM_Q ? L->q_norm : L->k_norm, f->m->hp.head_dim, (long)n * n_heads);
    return 0;
}

typedef struct {
    fwd_t *f;
    int layer;
} layer_ctx_t;

static void rope_rows(const fwd_t *f, float *x, int n_heads, long begin, long end) {
    const hparams_t *hp = &f->m->hp;
    const cpu_state_t *c = f->be_state;
    void (*rot)(float *, long, const float *) =
        hp->arch->rope_style == ROPE_NEOX ? k_rope_neox_cs_apply : k_rope_cs_apply;
    long stride = (long)n_heads * hp->head_dim;
    for (long i = begin; i < end; i++)
        for (int h = 0; h < n_heads; h++)
            rot(x + i * stride + (long)h * hp->head_dim, hp->rope_dim, c->rope_cs + i * (long)hp->rope_dim);
}

/* rows [begin, end): RoPE on q and k, then k and v into the cache */
static void rope_store_rows(void *arg, long begin, long end) {
    const layer_ctx_t *a = arg;
    fwd_t *f = a->f;
    rope_rows(f, f->q, f->m->hp.n_head, begin, end);
    rope_rows(f, f->k, f->m->hp.n_head_kv, begin, end);
    long kvd = f->kv->kv_dim;
    for (long i = begin; i < end; i++) {
        memcpy(kv_k_row(f->kv, a->layer, f->b->slot[i], f->b->pos[i]), f->k + i * kvd, (size_t)kvd * sizeof(float));
        memcpy(kv_v_row(f->kv, a->layer, f->b->slot[i], f->b->pos[i]), f->v + i * kvd, (size_t)kvd * sizeof(float));
    }
}

static int cpu_rope_store(fwd_t *f, int layer, int n) {
    layer_ctx_t a = {f, layer};
    k_pool_for(f->pool, n, 1, K_ROWS_GRAIN(f->m->hp.q_dim), rope_store_rows, &a);
    return 0;
}

/* The first position a query at `pos` reads (a sliding window moves it). */
static int attn_t0(const hparams_t *hp, int pos) {
    return hp->n_swa > 0 && pos + 1 > hp->n_swa ? pos + 1 - hp->n_swa : 0;
}

/* A unit's cost: the positions its row reads, plus a fixed part for the
 * query's load and the output's store. */
static long attn_row_cost(const fwd_t *f, int i) {
    int pos = f->b->pos[i];
    return pos + 1 - attn_t0(&f->m->hp, pos) + 16;
}

/* Units of a row: its K/V heads, each cut into `chunks` runs of query
 * heads. A prompt's many rows take whole groups (each K/V row read once);
 * a few rows (decode) cut the groups until every thread has ~4 units, so
 * that e.g. SmolLM2's 3 groups still spread over 8 threads. */
static int attn_chunks(const fwd_t *f, int nth) {
    long per_row = f->m->hp.n_head_kv, want = nth > 1 ? 4L * nth : 0;
    int group = f->m->hp.n_head / f->m->hp.n_head_kv, chunks = 1;
    while (chunks < group && (long)f->b->n * per_row * chunks < want) chunks++;
    int run = (group + chunks - 1) / chunks;
    return (group + run - 1) / run; /* no empty runs (group 8 in 6 chunks is 4 runs of 2) */
}

static long attn_unit_cost_total(const fwd_t *f, long per_row) {
    long total = 0;
    for (int i = 0; i < f->b->n; i++) total += attn_row_cost(f, i);
    return total * per_row;
}

/* The first unit whose units before it cost at least `target` (a row's
 * units cost the same). */
static long attn_unit_at(const fwd_t *f, long per_row, long target) {
    long acc = 0;
    for (int i = 0; i < f->b->n; i++) {
        long c = attn_row_cost(f, i);
        if (acc + c * per_row > target) return i * per_row + (target - acc + c - 1) / c;
        acc += c * per_row;
    }
    return f->b->n * per_row;
}

/* One task unit = (batch row, K/V head, run of its query heads): the query
 * heads of a run read each K and V row once between them (k_attn_heads).
 * A prefill's rows read more positions down the batch, so equal counts of
 * units would leave the last thread ~3/4 of a long prompt's attention at
 * two threads: each thread takes a contiguous range of equal cost instead
 * (every thread computes the same boundaries; a head's result does not
 * depend on which thread or run computes it). */
static void attn_task(void *arg, int ith, int nth) {
    layer_ctx_t *a = arg;
    fwd_t *f = a->f;
    cpu_state_t *c = f->be_state;
    const hparams_t *hp = &f->m->hp;
    const kv_cache_t *kv = f->kv;
    const k_isa_t *isa = k_isa();
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    int chunks = attn_chunks(f, nth), run = (group + chunks - 1) / chunks;
    long per_row = (long)hp->n_head_kv * chunks;
    float scale = 1.0f / sqrtf((float)hd);
    float *sc = c->scores + (size_t)ith * (size_t)c->score_rows * (size_t)f->n_ctx;
    int max_blocks = (f->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    const float **kb = c->blk_ptrs + (size_t)ith * 2 * max_blocks, **vb = kb + max_blocks;
    long total = attn_unit_cost_total(f, per_row);
    long begin = attn_unit_at(f, per_row, total * ith / nth), end = attn_unit_at(f, per_row, total * (ith + 1) / nth);
    for (long u = begin; u < end; u++) {
        int i = (int)(u / per_row), g = (int)(u % per_row / chunks), h0 = (int)(u % chunks) * run;
        int heads = group - h0 < run ? group - h0 : run;
        int pos = f->b->pos[i], slot = f->b->slot[i];
        int t0 = attn_t0(hp, pos);
        for (int blk = t0 / KV_BLOCK; blk <= pos / KV_BLOCK; blk++) {
            kb[blk] = kv_k_row(kv, a->layer, slot, blk * KV_BLOCK) + g * hd;
            vb[blk] = kv_v_row(kv, a->layer, slot, blk * KV_BLOCK) + g * hd;
        }
        size_t q0 = (size_t)i * hp->q_dim + ((size_t)g * group + h0) * hd; /* the run's first query head */
        isa->attn_heads(f->q + q0, heads, kb, vb, KV_BLOCK, kv->kv_dim, t0, pos + 1, hd, scale, sc, f->n_ctx,
                        f->att + q0);
    }
}

static int cpu_attention(fwd_t *f, int layer, int n) {
    (void)n; /* the tasks read the batch */
    layer_ctx_t a = {f, layer};
    k_pool_run(f->pool, attn_task, &a);
    return 0;
}

static int cpu_matmul_add(fwd_t *f, int layer, int id, float *y, const float *x, int n) {
    const k_mat_t *w = cpu_weight(f->m, layer, id);
    if (k_matmul(f->pool, w, x, n, f->xb) != 0) return -1;
    flat_for(f, add_range, y, f->xb, (long)n * w->n);
    return 0;
}

static int cpu_silu_mul(fwd_t *f, int layer, float *g, const float *u, long count) {
    (void)layer;
    flat_for(f, silu_mul_range, g, u, count);
    return 0;
}

static int cpu_gather(fwd_t *f, float *y, const float *x, int n_out) {
    const batch_t *b = f->b;
    long dim = f->m->hp.dim, j = 0;
    for (long i = 0; i < b->n && j < n_out; i++)
        if (b->want_logits ? b->want_logits[i] : i == b->n - 1)
            memcpy(y + j++ * dim, x + i * dim, (size_t)dim * sizeof(float));
    return 0;
}

const fwd_backend_t fwd_backend_cpu = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .begin = cpu_begin,
    .launch = cpu_launch,
    .end = cpu_end,
    .error = cpu_error,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .act_quant = cpu_act_quant,
    .matmul = cpu_matmul,
    .bias = cpu_bias,
    .head_norm = cpu_head_norm,
    .rope_store = cpu_rope_store,
    .attention = cpu_attention,
    .matmul_add = cpu_matmul_add,
    .silu_mul = cpu_silu_mul,
    .gather = cpu_gather,
};
