/* fwd_cuda.c - the Llama forward pass on a CUDA GPU (see fwd_cuda.h).
 *
 * The same block as forward.c, top to bottom, with every step a kernel
 * from kernels/cuda/kc.h on one stream; the host only prepares the batch
 * description (token ids, positions, block tables) and reads the logits
 * back. Per call that is one small upload and one download, so a decode
 * step costs the kernels plus two transfers.
 *
 * Weights: K_SQ matrices go to the SQ kernels (INT8 activations quantized
 * per token on the device, exactly as k_quant_row_i8 does); everything
 * else is expanded to FP32 once at load and multiplied by cuBLAS SGEMM
 * with TF32 off. The embedding table is FP32 on the device; a tied output
 * projection reads the same copy.
 */
#include "fwd_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dev_parse(const char *s, int *ordinal, char *err, size_t errlen) {
    char *end;
    if (!strcmp(s, "cpu")) {
        *ordinal = -1;
        return 0;
    }
    if (!strcmp(s, "cuda")) {
        *ordinal = 0;
        return 0;
    }
    if (!strncmp(s, "cuda:", 5)) {
        long v = strtol(s + 5, &end, 10);
        if (end != s + 5 && !*end && v >= 0 && v < 64) {
            *ordinal = (int)v;
            return 0;
        }
    }
    snprintf(err, errlen, "bad device '%s' (cpu, cuda or cuda:N)", s);
    return -1;
}

#ifndef SQ_CUDA

#define NO_CUDA "this sqserve was built without CUDA (rebuild with make CUDA=1 where nvcc is installed)"

int dev_cuda_built(void) { return 0; }
int model_to_gpu(model_t *m, int ordinal, char *err, size_t errlen) {
    (void)m; (void)ordinal;
    snprintf(err, errlen, NO_CUDA);
    return -1;
}
int model_synthetic(model_t *m, const char *name, int ordinal, char *err, size_t errlen) {
    (void)m; (void)name; (void)ordinal;
    snprintf(err, errlen, NO_CUDA);
    return -1;
}
void model_gpu_free(model_t *m) { (void)m; }
const char *model_gpu_name(const model_t *m) { (void)m; return "none"; }
size_t model_gpu_weight_bytes(const model_t *m) { (void)m; return 0; }
double model_gpu_bandwidth(const model_t *m) { (void)m; return 0; }
int fwd_cuda_init(fwd_t *f) { (void)f; return -1; }
int fwd_cuda_run(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
    (void)f; (void)b; (void)logits;
    snprintf(err, errlen, NO_CUDA);
    return -1;
}
void fwd_cuda_free(fwd_t *f) { (void)f; }

#else


#include "../kernels/cuda/kc.h"
#include "../kernels/k_quant.h"
#include "quant.h"

int dev_cuda_built(void) { return 1; }

/* ---- weights on the device -------------------------------------------------- */

/* GM_F32_A8: an integer-kernel matrix (K_SQ view) whose shape the GPU SQ
 * kernels do not take (e.g. the int8 codes of W8A8): FP32 weights, and
 * its input quantized to INT8 per token first, which is what the CPU
 * kernel computes up to float rounding. */
enum { GM_F32 = 1, GM_SQ = 2, GM_F32_A8 = 3 };

typedef struct {
    int kind;
    long n, k;
    float *f32;
    kc_sq_t *sq;
} gmat_t;

typedef struct {
    float *attn_norm, *ffn_norm;
    gmat_t w[7]; /* q k v o gate up down */
} glayer_t;

typedef struct {
    float *embd; /* [n_vocab][dim] */
    gmat_t out;  /* out.f32 == embd when tied */
    int tied;
    float *out_norm, *inv_freq;
    glayer_t *layers;
    int n_layer;
    size_t bytes; /* weight bytes a forward pass reads (embedding excluded) */
} gpu_model_t;

static void gmat_free(gmat_t *g) {
    kc_free(g->f32);
    kc_sq_free(g->sq);
    memset(g, 0, sizeof *g);
}

static size_t gmat_bytes(const gmat_t *g) {
    return g->kind == GM_SQ ? kc_sq_bytes(g->sq) : (size_t)g->n * (size_t)g->k * sizeof(float);
}

/* Rows of an integer-kernel view as floats (GGUF types: k_mat_row). */
static void view_row(const k_mat_t *w, long r, float *out) { k_sq_dequant_row(w->data, r, out); }

/* Rows dequantized into a host staging buffer, uploaded in chunks. */
static int upload_rows_f32(float *d, const k_mat_t *w, void (*row)(const k_mat_t *, long, float *),
                           float *stage, long stage_rows) {
    for (long r0 = 0; r0 < w->n; r0 += stage_rows) {
        long cnt = w->n - r0 < stage_rows ? w->n - r0 : stage_rows;
        for (long r = 0; r < cnt; r++) row(w, r0 + r, stage + r * w->k);
        if (kc_upload(d + r0 * w->k, stage, (size_t)(cnt * w->k) * sizeof(float)) || kc_sync()) return -1;
    }
    return 0;
}

static int gmat_upload(gmat_t *g, const k_mat_t *w, float *stage, long stage_rows) {
    g->n = w->n;
    g->k = w->k;
    if (w->type == K_SQ) {
        const k_sq_t *v = w->data;
        /* the GPU SQ kernels quantize activations per token; a view with a
         * static SQ activation mask runs as FP32 behind the hook's masked
         * fake quantization (which runs for such models), one the SQ kernels
         * do not take as FP32 with INT8 inputs */
        if (!v->amask && (g->sq = kc_sq_upload(v))) {
            g->kind = GM_SQ;
            return 0;
        }
        kc_clear_error();
        g->kind = v->amask ? GM_F32 : GM_F32_A8;
        if (!(g->f32 = kc_malloc((size_t)(w->n * w->k) * sizeof(float)))) return -1;
        return upload_rows_f32(g->f32, w, view_row, stage, stage_rows);
    }
    g->kind = GM_F32;
    if (!(g->f32 = kc_malloc((size_t)(w->n * w->k) * sizeof(float)))) return -1;
    return upload_rows_f32(g->f32, w, k_mat_row, stage, stage_rows);
}

static float *upload_vec(const float *v, long n) {
    float *d = kc_malloc((size_t)n * sizeof(float));
    if (d && kc_upload(d, v, (size_t)n * sizeof(float)) != 0) {
        kc_free(d);
        return NULL;
    }
    return d;
}

static void gpu_model_free(gpu_model_t *g) {
    if (!g) return;
    if (!g->tied) gmat_free(&g->out);
    kc_free(g->embd);
    kc_free(g->out_norm);
    kc_free(g->inv_freq);
    for (int l = 0; g->layers && l < g->n_layer; l++) {
        kc_free(g->layers[l].attn_norm);
        kc_free(g->layers[l].ffn_norm);
        for (int i = 0; i < 7; i++) gmat_free(&g->layers[l].w[i]);
    }
    free(g->layers);
    free(g);
}

static int gpu_fail(gpu_model_t *g, char *err, size_t errlen, const char *what) {
    snprintf(err, errlen, "GPU: %s: %s", what, kc_error());
    gpu_model_free(g);
    return -1;
}

/* The device and an empty model of hp's shape, or NULL with err set. */
static gpu_model_t *gpu_model_new(const hparams_t *hp, int ordinal, char *err, size_t errlen) {
    kc_clear_error();
    if (kc_init(ordinal) != 0) {
        snprintf(err, errlen, "--device cuda: %s", kc_error());
        return NULL;
    }
    gpu_model_t *g = calloc(1, sizeof *g);
    if (!g || !(g->layers = calloc((size_t)hp->n_layer, sizeof *g->layers))) {
        free(g);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    g->n_layer = hp->n_layer;
    return g;
}

/* Weight bytes a decode step reads: the layer matrices and the lm head
 * (the embedding table when tied). */
static size_t gpu_weight_bytes(const gpu_model_t *g, const hparams_t *hp) {
    size_t b = g->tied ? (size_t)hp->n_vocab * hp->dim * sizeof(float) : gmat_bytes(&g->out);
    for (int l = 0; l < g->n_layer; l++)
        for (int i = 0; i < 7; i++) b += gmat_bytes(&g->layers[l].w[i]);
    return b;
}

int model_to_gpu(model_t *m, int ordinal, char *err, size_t errlen) {
    const hparams_t *hp = &m->hp;
    gpu_model_t *g = gpu_model_new(hp, ordinal, err, errlen);
    if (!g) return -1;
    long widest = hp->ffn_dim > hp->dim ? hp->ffn_dim : hp->dim, stage_rows = 1024;
    float *stage = malloc((size_t)(stage_rows * widest) * sizeof(float));
    if (!stage) {
        gpu_model_free(g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int ok = (g->embd = kc_malloc((size_t)hp->n_vocab * (size_t)hp->dim * sizeof(float))) &&
             upload_rows_f32(g->embd, &m->tok_embd, k_mat_row, stage, stage_rows) == 0;
    g->tied = m->output.data == m->tok_embd.data && m->output.type == m->tok_embd.type;
    if (ok && g->tied) g->out = (gmat_t){GM_F32, m->output.n, m->output.k, g->embd, NULL};
    else if (ok) ok = gmat_upload(&g->out, &m->output, stage, stage_rows) == 0;
    ok = ok && (g->out_norm = upload_vec(m->output_norm, hp->dim)) &&
         (g->inv_freq = upload_vec(m->rope_inv_freq, hp->rope_dim / 2));
    for (int l = 0; ok && l < hp->n_layer; l++) {
        const layer_t *L = &m->layers[l];
        const k_mat_t *w[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        glayer_t *G = &g->layers[l];
        ok = (G->attn_norm = upload_vec(L->attn_norm, hp->dim)) &&
             (G->ffn_norm = upload_vec(L->ffn_norm, hp->dim));
        for (int i = 0; ok && i < 7; i++) ok = gmat_upload(&G->w[i], w[i], stage, stage_rows) == 0;
    }
    free(stage);
    if (!ok || kc_sync() != 0) return gpu_fail(g, err, errlen, "copying the weights");
    g->bytes = gpu_weight_bytes(g, hp);
    m->gpu = g;
    return 0;
}

void model_gpu_free(model_t *m) {
    gpu_model_free(m->gpu);
    m->gpu = NULL;
}

const char *model_gpu_name(const model_t *m) { return m->gpu ? kc_device_name() : "none"; }
size_t model_gpu_weight_bytes(const model_t *m) { return m->gpu ? ((gpu_model_t *)m->gpu)->bytes : 0; }
double model_gpu_bandwidth(const model_t *m) { return m->gpu ? kc_mem_bandwidth_gbs() : 0; }

/* ---- synthetic models (benchmarks) ------------------------------------------ */

typedef struct {
    const char *name;
    hparams_t hp;
} synth_t;

static const synth_t SYNTH[] = {
    {"llama3-8b", {32, 4096, 32, 8, 128, 14336, 128256, 8192, 128, 500000.0f, 1.0f, 1e-5f}},
    {"llama3-70b", {80, 8192, 64, 8, 128, 28672, 128256, 8192, 128, 500000.0f, 1.0f, 1e-5f}},
    {"smollm2-135m", {30, 576, 9, 3, 64, 1536, 49152, 8192, 64, 100000.0f, 1.0f, 1e-5f}},
};

int model_synthetic(model_t *m, const char *name, int ordinal, char *err, size_t errlen) {
    const synth_t *s = NULL;
    for (size_t i = 0; i < sizeof SYNTH / sizeof SYNTH[0]; i++)
        if (!strcmp(SYNTH[i].name, name)) s = &SYNTH[i];
    if (!s) {
        snprintf(err, errlen, "unknown synthetic model '%s' (llama3-8b, llama3-70b, smollm2-135m)", name);
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->hp = s->hp;
    snprintf(m->name, sizeof m->name, "synthetic-%s-sq8/4-b64-s0.875", name);
    const hparams_t *hp = &m->hp;
    gpu_model_t *g = gpu_model_new(hp, ordinal, err, errlen);
    if (!g) return -1;
    float *inv = malloc((size_t)(hp->rope_dim / 2) * sizeof(float));
    if (!inv) {
        gpu_model_free(g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    model_rope_inv_freq(hp, NULL, inv);
    size_t ne = (size_t)hp->n_vocab * hp->dim;
    int ok = (g->embd = kc_malloc(ne * sizeof(float))) && kc_fill(g->embd, ne, 0, 0.05f, 1) == 0 &&
             (g->out_norm = kc_malloc((size_t)hp->dim * sizeof(float))) &&
             kc_fill(g->out_norm, (size_t)hp->dim, 1.0f, 0, 0) == 0 &&
             (g->inv_freq = upload_vec(inv, hp->rope_dim / 2));
    free(inv);
    long kvd = (long)hp->n_head_kv * hp->head_dim;
    long shape[7][2] = {{hp->dim, hp->dim}, {kvd, hp->dim}, {kvd, hp->dim}, {hp->dim, hp->dim},
                        {hp->ffn_dim, hp->dim}, {hp->ffn_dim, hp->dim}, {hp->dim, hp->ffn_dim}};
    uint64_t seed = 100;
    if (ok) {
        g->out = (gmat_t){GM_SQ, hp->n_vocab, hp->dim, NULL, kc_sq_random(hp->n_vocab, hp->dim, 4, 64, 8, seed++)};
        ok = g->out.sq != NULL;
    }
    for (int l = 0; ok && l < hp->n_layer; l++) {
        glayer_t *G = &g->layers[l];
        ok = (G->attn_norm = kc_malloc((size_t)hp->dim * sizeof(float))) &&
             (G->ffn_norm = kc_malloc((size_t)hp->dim * sizeof(float))) &&
             kc_fill(G->attn_norm, (size_t)hp->dim, 1.0f, 0, 0) == 0 &&
             kc_fill(G->ffn_norm, (size_t)hp->dim, 1.0f, 0, 0) == 0;
        for (int i = 0; ok && i < 7; i++) {
            G->w[i] = (gmat_t){GM_SQ, shape[i][0], shape[i][1], NULL,
                               kc_sq_random(shape[i][0], shape[i][1], 4, 64, 8, seed++)};
            ok = G->w[i].sq != NULL;
        }
    }
    if (!ok || kc_sync() != 0) return gpu_fail(g, err, errlen, "building the synthetic model");
    g->bytes = gpu_weight_bytes(g, hp);
    m->gpu = g;
    return 0;
}

/* ---- the forward pass ------------------------------------------------------- */

#define GRAPH_MAX 256

typedef struct {
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *sel, *logits;
    int8_t *qx;
    float *sx;
    int32_t *d_ints, *h_ints; /* tok, pos, blk_off, sel, then block ids */
    long n_ints, n_used;       /* capacity; ints the current batch fills (uploaded) */
    int *slot_seen;           /* per kv slot: offset of its table in this batch, or -1 */
    kc_kv_t kv;
    const void *mask_src;     /* the quant_state_t the masks were copied from */
    uint8_t *masks[N_SITES];  /* [layer][dim] static SQ high channels */
    kc_graph_t *graph[GRAPH_MAX + 1]; /* decode steps by batch size */
    uint8_t graph_state[GRAPH_MAX + 1]; /* 0 unseen, 1 ran once eagerly, 2 capture failed */
    int no_graphs, graph_acts;        /* graphs off; the activation recipe they were made for */
} gfwd_t;

static int graphs_wanted(void) {
    const char *v = getenv("SQSERVE_CUDA_GRAPHS");
    return !v || strcmp(v, "0") != 0;
}

static void *kv_dev_alloc(size_t bytes) { return kc_malloc(bytes); }

void fwd_cuda_free(fwd_t *f) {
    gfwd_t *g = f->gpu;
    if (!g) return;
    float *fb[] = {g->x, g->xb, g->q, g->k, g->v, g->att, g->hb, g->hb2, g->sel, g->logits, g->sx};
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++) kc_free(fb[i]);
    kc_free(g->qx);
    kc_free(g->d_ints);
    for (int s = 0; s < N_SITES; s++) kc_free(g->masks[s]);
    for (int i = 0; i <= GRAPH_MAX; i++) kc_graph_free(g->graph[i]);
    free(g->h_ints);
    free(g->slot_seen);
    free(g);
    f->gpu = NULL;
}

int fwd_cuda_init(fwd_t *f) {
    const hparams_t *hp = &f->m->hp;
    gfwd_t *g = calloc(1, sizeof *g);
    if (!g) return -1;
    f->gpu = g;
    size_t n = (size_t)f->n_max, d = (size_t)hp->dim, kvd = (size_t)f->kv->kv_dim,
           ffn = (size_t)hp->ffn_dim, wide = ffn > d ? ffn : d;
    long max_blocks = (f->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    long seqs = f->kv->max_seqs < f->n_max ? f->kv->max_seqs : f->n_max;
    g->n_ints = 4 * (long)n + seqs * max_blocks;
    int ok = (g->x = kc_malloc(n * d * 4)) && (g->xb = kc_malloc(n * d * 4)) &&
             (g->q = kc_malloc(n * d * 4)) && (g->att = kc_malloc(n * d * 4)) &&
             (g->k = kc_malloc(n * kvd * 4)) && (g->v = kc_malloc(n * kvd * 4)) &&
             (g->hb = kc_malloc(n * ffn * 4)) && (g->hb2 = kc_malloc(n * ffn * 4)) &&
             (g->sel = kc_malloc(n * d * 4)) &&
             (g->logits = kc_malloc(n * (size_t)hp->n_vocab * 4)) && (g->qx = kc_malloc(n * wide)) &&
             (g->sx = kc_malloc(n * 4)) && (g->d_ints = kc_malloc((size_t)g->n_ints * 4)) &&
             (g->h_ints = malloc((size_t)g->n_ints * 4)) &&
             (g->slot_seen = malloc((size_t)f->kv->max_seqs * sizeof(int)));
    /* the cache's K/V rows move to the device; its bookkeeping stays on the host */
    if (ok && f->kv->release != kc_free) ok = kv_set_storage(f->kv, kv_dev_alloc, kc_free) == 0;
    if (!ok) {
        fwd_cuda_free(f);
        return -1;
    }
    g->kv = (kc_kv_t){f->kv->k, f->kv->v, f->kv->n_layer, f->kv->kv_dim, KV_BLOCK};
    g->no_graphs = !graphs_wanted();
    for (int s = 0; s < f->kv->max_seqs; s++) g->slot_seen[s] = -1;
    return 0;
}

/* The activation recipe the hook stands for, as GPU work. */
typedef struct {
    int kind; /* AQ_* */
    int bits, bits_hi;
} gact_t;

static int resolve_acts(fwd_t *f, gfwd_t *g, gact_t *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (!f->hook) return 0;
    if (f->hook != quant_act_hook) {
        snprintf(err, errlen, "this forward hook (calibration) runs on the CPU only");
        return -1;
    }
    const quant_state_t *qs = f->hook_ud;
    if (qs->kernel_acts) return 0; /* the SQ kernels quantize their own inputs, as on the CPU */
    a->kind = qs->a.kind;
    switch (qs->a.kind) {
    case AQ_NONE: return 0;
    case AQ_INT: a->bits = qs->a.bits; return 0;
    case AQ_SQ_STATIC: a->bits = qs->a.sq.h_low; a->bits_hi = qs->a.sq.h_high; break;
    default:
        snprintf(err, errlen, "dynamic SQ activations run on the CPU only (use static, int8 or fp32 on the GPU)");
        return -1;
    }
    if (g->mask_src == qs) return 0;
    for (int i = 0; i <= GRAPH_MAX; i++) { /* they hold the old mask pointers */
        kc_graph_free(g->graph[i]);
        g->graph[i] = NULL;
    }
    for (int s = 0; s < N_SITES; s++) {
        size_t bytes = (size_t)qs->n_layer * (size_t)qs->dim[s];
        kc_free(g->masks[s]);
        if (!(g->masks[s] = kc_malloc(bytes)) || kc_upload(g->masks[s], qs->hi_mask[s], bytes) != 0) {
            snprintf(err, errlen, "GPU: copying the activation masks: %s", kc_error());
            return -1;
        }
    }
    g->mask_src = qs;
    return 0;
}

static int act_quant(gfwd_t *g, const gact_t *a, int layer, int site, float *x, int n, int dim) {
    if (a->kind == AQ_INT) return kc_fake_quant(x, n, dim, NULL, 0, a->bits);
    if (a->kind == AQ_SQ_STATIC)
        return kc_fake_quant(x, n, dim, g->masks[site] + (size_t)layer * dim, a->bits_hi, a->bits);
    return 0;
}

/* y = x . W^T; for SQ, x is quantized to INT8 first unless `quantized`
 * says this x already is (q/k/v and gate/up share one input). */
static int gmatmul(gfwd_t *g, const gmat_t *w, const float *x, int m, float *y, int *quantized) {
    if (w->kind == GM_F32) return kc_gemm_f32(w->f32, w->n, w->k, x, m, y);
    if (w->kind == GM_F32_A8) { /* x is a scratch input (norm output, attention, SwiGLU) */
        if (!*quantized && kc_fake_quant((float *)x, m, (int)w->k, NULL, 0, 8) != 0) return -1;
        *quantized = 1;
        return kc_gemm_f32(w->f32, w->n, w->k, x, m, y);
    }
    if (!*quantized) {
        if (kc_quant_i8(x, m, w->k, g->qx, g->sx) != 0) return -1;
        *quantized = 1;
    }
    return kc_sq_matmul(w->sq, g->qx, g->sx, m, y);
}

/* tok, pos, blk_off, sel (rows wanting logits) and the block tables of the
 * batch's slots, each once. Returns the number of logit rows, or -1 when
 * the tables outgrow the buffer (more blocks than n_ctx needs). */
static int pack_batch(fwd_t *f, gfwd_t *g, const batch_t *b) {
    int32_t *tok = g->h_ints, *pos = tok + f->n_max, *off = pos + f->n_max, *sel = off + f->n_max;
    int32_t *blk = sel + f->n_max;
    long used = 0;
    int n_out = 0;
    for (int i = 0; i < b->n; i++) {
        int s = b->slot[i];
        if (g->slot_seen[s] < 0) {
            const kv_seq_t *q = &f->kv->seqs[s];
            if (4L * f->n_max + used + q->n_blocks > g->n_ints) {
                for (int j = 0; j < i; j++) g->slot_seen[b->slot[j]] = -1;
                return -1;
            }
            g->slot_seen[s] = (int)used;
            memcpy(blk + used, q->blocks, (size_t)q->n_blocks * sizeof(int32_t));
            used += q->n_blocks;
        }
        tok[i] = b->tok[i];
        pos[i] = b->pos[i];
        off[i] = g->slot_seen[s];
        if (b->want_logits ? b->want_logits[i] : i == b->n - 1) sel[n_out++] = i;
    }
    for (int i = 0; i < b->n; i++) g->slot_seen[b->slot[i]] = -1;
    g->n_used = 4L * f->n_max + used;
    return n_out;
}

#define K(call) do { if ((call) != 0) return -1; } while (0)

/* The whole pass after the batch description is on the device: every
 * kernel, no transfer, so it can also be captured into a CUDA graph. */
static int enqueue(fwd_t *f, gfwd_t *g, const gact_t *acts, int n, int n_out) {
    const gpu_model_t *gm = f->m->gpu;
    const hparams_t *hp = &f->m->hp;
    const int dim = hp->dim, ffn = hp->ffn_dim, hd = hp->head_dim;
    const int32_t *d_tok = g->d_ints, *d_pos = d_tok + f->n_max, *d_off = d_pos + f->n_max,
                  *d_sel = d_off + f->n_max, *d_blk = d_sel + f->n_max;
    K(kc_embed(g->x, gm->embd, d_tok, n, dim));
    for (int l = 0; l < hp->n_layer; l++) {
        const glayer_t *L = &gm->layers[l];
        int qd = 0;
        K(kc_rmsnorm(g->xb, g->x, L->attn_norm, n, dim, hp->rms_eps));
        K(act_quant(g, acts, l, SITE_QKV, g->xb, n, dim));
        K(gmatmul(g, &L->w[0], g->xb, n, g->q, &qd));
        K(gmatmul(g, &L->w[1], g->xb, n, g->k, &qd));
        K(gmatmul(g, &L->w[2], g->xb, n, g->v, &qd));
        K(kc_rope(g->q, d_pos, n, hp->n_head, hd, hp->rope_dim, gm->inv_freq));
        K(kc_rope(g->k, d_pos, n, hp->n_head_kv, hd, hp->rope_dim, gm->inv_freq));
        K(kc_kv_store(&g->kv, l, g->k, g->v, n, d_pos, d_blk, d_off));
        K(kc_attention(g->att, g->q, &g->kv, l, n, d_pos, d_blk, d_off, hp->n_head, hp->n_head_kv,
                       hd, f->n_ctx));
        K(act_quant(g, acts, l, SITE_O, g->att, n, dim));
        qd = 0;
        K(gmatmul(g, &L->w[3], g->att, n, g->xb, &qd));
        K(kc_add(g->x, g->xb, (long)n * dim));

        K(kc_rmsnorm(g->xb, g->x, L->ffn_norm, n, dim, hp->rms_eps));
        K(act_quant(g, acts, l, SITE_UPGATE, g->xb, n, dim));
        qd = 0;
        K(gmatmul(g, &L->w[4], g->xb, n, g->hb, &qd));
        K(gmatmul(g, &L->w[5], g->xb, n, g->hb2, &qd));
        K(kc_silu_mul(g->hb, g->hb2, (long)n * ffn));
        K(act_quant(g, acts, l, SITE_DOWN, g->hb, n, ffn));
        qd = 0;
        K(gmatmul(g, &L->w[6], g->hb, n, g->xb, &qd));
        K(kc_add(g->x, g->xb, (long)n * dim));
    }
    if (n_out > 0) {
        int qd = 0;
        K(kc_embed(g->sel, g->x, d_sel, n_out, dim)); /* a gather of the rows that want logits */
        K(kc_rmsnorm(g->sel, g->sel, gm->out_norm, n_out, dim, hp->rms_eps));
        K(gmatmul(g, &gm->out, g->sel, n_out, g->logits, &qd));
    }
    return 0;
}

/* Decode steps (every row wants logits, n <= GRAPH_MAX) replay a CUDA
 * graph per batch size: the same kernels with the same pointers every
 * step, only the device-side batch description changes. That removes
 * the per-launch host overhead (~20 launches a layer). A batch size runs
 * eagerly once first, so kernels that size their scratch buffers on first
 * use do it outside the capture; a size whose capture fails keeps running
 * launch by launch. Off with SQSERVE_CUDA_GRAPHS=0. */
static int run_graph(fwd_t *f, gfwd_t *g, const gact_t *acts, int n) {
    int key = acts->kind * 64 + acts->bits * 8 + acts->bits_hi;
    if (key != g->graph_acts) { /* another recipe: other kernels */
        for (int i = 0; i <= GRAPH_MAX; i++) {
            kc_graph_free(g->graph[i]);
            g->graph[i] = NULL;
            g->graph_state[i] = 0;
        }
        g->graph_acts = key;
    }
    if (!g->graph[n]) {
        if (g->graph_state[n] != 1) { /* first sight (warm-up), or a failed capture */
            if (g->graph_state[n] == 0) g->graph_state[n] = 1;
            return enqueue(f, g, acts, n, n);
        }
        if (kc_graph_begin() != 0) return -1;
        int rc = enqueue(f, g, acts, n, n);
        kc_graph_t *gr = kc_graph_end();
        if (rc != 0 || !gr) {
            kc_graph_free(gr);
            g->graph_state[n] = 2;
            kc_clear_error();
            return enqueue(f, g, acts, n, n);
        }
        g->graph[n] = gr;
    }
    return kc_graph_launch(g->graph[n]);
}

int fwd_cuda_run(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
    gfwd_t *g = f->gpu;
    const hparams_t *hp = &f->m->hp;
    const int n = b->n;
    gact_t acts;
    if (resolve_acts(f, g, &acts, err, errlen) != 0) return -1;
    kc_clear_error();
    int n_out = pack_batch(f, g, b);
    if (n_out < 0) {
        snprintf(err, errlen, "the batch's block tables exceed what context %d needs", f->n_ctx);
        return -1;
    }
    int rc = kc_upload(g->d_ints, g->h_ints, (size_t)g->n_used * sizeof(int32_t));
    if (rc == 0 && n_out == n && n <= GRAPH_MAX && !g->no_graphs) rc = run_graph(f, g, &acts, n);
    else if (rc == 0) rc = enqueue(f, g, &acts, n, n_out);
    if (rc == 0 && n_out > 0 && logits)
        rc = kc_download(logits, g->logits, (size_t)n_out * (size_t)hp->n_vocab * sizeof(float));
    else if (rc == 0)
        rc = kc_sync(); /* no logits wanted, or left on the device (benchmarks) */
    if (rc != 0) {
        snprintf(err, errlen, "GPU: %s", kc_error());
        return -1;
    }
    return 0;
}

#endif
