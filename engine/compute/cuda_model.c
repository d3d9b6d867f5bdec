/* cuda_model.c - a model's weights on a CUDA GPU (backend_cuda.h).
 *
 * Weights: K_SQ matrices go to the SQ kernels' tile layout (INT8
 * activations quantized per token on the device, exactly as
 * k_quant_row_i8 does). GGUF matrices go to kc_gguf (kc_gguf.cu): Q4_0,
 * Q4_1, Q8_0, Q4_K and Q6_K stay in their blocks (the file's bytes), the
 * other types the CPU computes with (F32, F16, BF16, Q5_0, Q5_1, Q5_K) as
 * 16-bit values; a few rows run a dequantizing GEMV with FP32 activations,
 * many rows a 16-bit expansion and cuBLAS's tensor-core GEMM. What is left
 * in FP32 (cuBLAS SGEMM with TF32 off): K_SQ views the SQ kernels do not
 * take (the non-SQ recipes: int8, int4, static SQ activation masks) and
 * 16-bit rows of a length kc_gguf refuses (not a multiple of 8).
 * The embedding table stays in its GGUF form where kc_gguf_embed gives the
 * CPU's rows bit for bit (the block types, F16, BF16); F32, Q5_x and SQ
 * tables stay FP32 as before (kc_embed). A tied output projection reads
 * the same copy. Device memory for a Q4_0/Q4_K/Q6_K/Q8_0 model is thus its
 * file's weight bytes plus the KV cache and activation buffers.
 * Synthetic models (random SQ weights in a real architecture's shapes) are
 * built here too, on the device only.
 */
#include "backend_cuda.h"

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

/* The weight formats a synthetic model can have (bench --synthetic-weights).
 * SQ scales are halves, as sq_quantize makes them (the 16-bit-scale layout
 * a converted model gets); ":iscale" draws integer bank scales. */
enum { SW_SQ, SW_SQ_ISCALE, SW_INT4, SW_INT8, SW_F16 };
static const struct {
    const char *name, *tag;
    int kind;
} SYNTH_W[] = {
    {"sq:8/4:b64:s0.875", "sq8/4-b64-s0.875", SW_SQ}, {"sq", "sq8/4-b64-s0.875", SW_SQ},
    {"sq:8/4:b64:s0.875:iscale", "sq8/4-b64-s0.875-iscale", SW_SQ_ISCALE},
    {"int4:g64", "int4-g64", SW_INT4},                {"int4", "int4-g64", SW_INT4},
    {"int8", "int8", SW_INT8},                        {"f16", "f16", SW_F16},
};

/* the SYNTH_W entry of `weights` (NULL: SQ), or -1 with err set */
static int synth_weights(const char *weights, char *err, size_t errlen) {
    for (size_t i = 0; i < sizeof SYNTH_W / sizeof SYNTH_W[0]; i++)
        if (!strcmp(SYNTH_W[i].name, weights ? weights : "sq")) return (int)i;
    snprintf(err, errlen, "unknown synthetic weights '%s' (sq:8/4:b64:s0.875[:iscale], int4:g64, int8, f16)", weights);
    return -1;
}

int model_synthetic_int_weights(const char *weights) {
    char err[128];
    const int i = synth_weights(weights, err, sizeof err);
    return i >= 0 && (SYNTH_W[i].kind == SW_INT4 || SYNTH_W[i].kind == SW_INT8);
}

#ifndef SQ_CUDA

#define NO_CUDA "this sqserve was built without CUDA (rebuild with make CUDA=1 where nvcc is installed)"

int dev_cuda_built(void) { return 0; }
int model_to_gpu(model_t *m, int ordinal, char *err, size_t errlen) {
    (void)m; (void)ordinal;
    snprintf(err, errlen, NO_CUDA);
    return -1;
}
int model_synthetic(model_t *m, const char *name, const char *weights, int ordinal, char *err, size_t errlen) {
    (void)m; (void)name; (void)ordinal;
    if (synth_weights(weights, err, errlen) < 0) return -1;
    snprintf(err, errlen, NO_CUDA);
    return -1;
}
const char *model_gpu_name(const model_t *m) { (void)m; return "none"; }
size_t model_gpu_weight_bytes(const model_t *m) { (void)m; return 0; }
double model_gpu_bandwidth(const model_t *m) { (void)m; return 0; }
#else

#include "../../kernels/k_quant.h"
#include "cuda_model.h"

int dev_cuda_built(void) { return 1; }

/* ---- weights on the device -------------------------------------------------- */

static void gmat_free(gmat_t *g) {
    kc_free(g->f32);
    kc_sq_free(g->sq);
    kc_gguf_free(g->gg);
    kc_int_free(g->in);
    memset(g, 0, sizeof *g);
}

static size_t gmat_bytes(const gmat_t *g) {
    if (g->kind == GM_FUSED) return 0; /* counted with its fused matrix */
    if (g->kind == GM_GGUF) return kc_gguf_bytes(g->gg);
    if (g->kind == GM_INT) return kc_int_bytes(g->in);
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
        /* uniform integer codes (W8A8, W4A8, and W4A(SQ static): the
         * activation mask is the forward pass's business): their own kernels
         * where they take the shape (kc_int.cu), else on as before */
        if (!v->h && (g->in = kc_int_upload(v))) {
            g->kind = GM_INT;
            return 0;
        }
        kc_clear_error();
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
    if ((g->gg = kc_gguf_upload(w->type, w->n, w->k, w->data, w->row_bytes))) {
        g->kind = GM_GGUF;
        return 0;
    }
    /* a type or row length kc_gguf does not take (16-bit rows of a length
     * not a multiple of 8): FP32 as before */
    kc_clear_error();
    g->kind = GM_F32;
    if (!(g->f32 = kc_malloc((size_t)(w->n * w->k) * sizeof(float)))) return -1;
    return upload_rows_f32(g->f32, w, k_mat_row, stage, stage_rows);
}

/* The embedding table: in kc_gguf's form where its lookup gives exactly
 * the CPU's rows (the block types, F16, BF16), else FP32 as before (F32,
 * Q5_x, SQ views). */
static int embd_upload(gpu_model_t *g, const k_mat_t *e, float *stage, long stage_rows) {
    if (kc_gguf_native(e->type) || e->type == K_F16 || e->type == K_BF16) {
        if ((g->embd_gg = kc_gguf_upload(e->type, e->n, e->k, e->data, e->row_bytes))) return 0;
        kc_clear_error();
    }
    return (g->embd = kc_malloc((size_t)e->n * (size_t)e->k * sizeof(float))) &&
                   upload_rows_f32(g->embd, e, k_mat_row, stage, stage_rows) == 0
               ? 0
               : -1;
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
    kc_gguf_free(g->embd_gg);
    kc_free(g->out_norm);
    kc_free(g->inv_freq);
    for (int l = 0; g->layers && l < g->n_layer; l++) {
        kc_free(g->layers[l].attn_norm);
        kc_free(g->layers[l].ffn_norm);
        for (int i = 0; i < 7; i++) gmat_free(&g->layers[l].w[i]);
        kc_sq_free(g->layers[l].qkv);
        kc_sq_free(g->layers[l].gate_up);
        kc_int_free(g->layers[l].qkv_i);
        kc_int_free(g->layers[l].gate_up_i);
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

static void dev_free(void *g) { gpu_model_free(g); }

/* The model now runs on the CUDA backend; model_free frees the copy. */
static void attach(model_t *m, gpu_model_t *g) {
    m->dev = g;
    m->dev_be = &fwd_backend_cuda;
    m->dev_free = dev_free;
}

/* Weight bytes a decode step reads: the layer matrices and the lm head
 * (the embedding table when tied). */
static size_t gpu_weight_bytes(const gpu_model_t *g, const hparams_t *hp) {
    size_t b = !g->tied       ? gmat_bytes(&g->out)
               : g->embd_gg ? kc_gguf_bytes(g->embd_gg)
                            : (size_t)hp->n_vocab * hp->dim * sizeof(float);
    for (int l = 0; l < g->n_layer; l++) {
        const glayer_t *G = &g->layers[l];
        for (int i = 0; i < 7; i++) b += gmat_bytes(&G->w[i]);
        if (G->qkv) b += kc_sq_bytes(G->qkv);
        if (G->gate_up) b += kc_sq_bytes(G->gate_up);
        b += kc_int_bytes(G->qkv_i) + kc_int_bytes(G->gate_up_i);
    }
    return b;
}

static int fusing_wanted(void) {
    const char *v = getenv("SQSERVE_CUDA_FUSE");
    return !v || strcmp(v, "0") != 0;
}

/* Matrices [first, first + count) of a layer as one fused device matrix
 * when all are SQ matrices of one layout, or all integer matrices of one
 * shape; the parts' own copies are freed. A set that does not fuse keeps
 * running part by part. Off with SQSERVE_CUDA_FUSE=0 (A/B measurements). */
static void fuse(glayer_t *G, int first, int count, kc_sq_t **sq, kc_int_t **in) {
    const kc_sq_t *ps[KC_SQ_MAX_PARTS];
    const kc_int_t *pi[KC_SQ_MAX_PARTS];
    int n_sq = 0, n_in = 0;
    for (int i = 0; i < count; i++) {
        const gmat_t *w = &G->w[first + i];
        if (w->kind == GM_SQ) ps[n_sq++] = w->sq;
        if (w->kind == GM_INT) pi[n_in++] = w->in;
    }
    if (!fusing_wanted() || (n_sq != count && n_in != count)) return;
    *sq = n_sq == count ? kc_sq_fuse(ps, count) : NULL;
    *in = n_in == count ? kc_int_fuse(pi, count) : NULL;
    if (!*sq && !*in) {
        kc_clear_error();
        return;
    }
    for (int i = 0; i < count; i++) {
        gmat_t *w = &G->w[first + i];
        kc_sq_free(w->sq), kc_int_free(w->in);
        w->sq = NULL, w->in = NULL;
        w->kind = GM_FUSED;
    }
}

static void fuse_layers(gpu_model_t *g) {
    for (int l = 0; l < g->n_layer; l++) {
        glayer_t *G = &g->layers[l];
        fuse(G, 0, 3, &G->qkv, &G->qkv_i);
        fuse(G, 4, 2, &G->gate_up, &G->gate_up_i);
    }
}

int model_to_gpu(model_t *m, int ordinal, char *err, size_t errlen) {
    const hparams_t *hp = &m->hp;
    const arch_t *a = hp->arch;
    if (a->qkv_bias || a->qk_norm || a->rope_style != ROPE_NORM || hp->n_swa > 0 || hp->q_dim != hp->dim) {
        /* the CUDA backend has no bias, head_norm, NeoX RoPE or window kernels
         * yet, and sizes q and the attention output by dim */
        snprintf(err, errlen, "architecture '%s'%s runs on the CPU only for now: use --device cpu", a->name,
                 hp->n_swa > 0 ? " with a sliding window" : hp->q_dim != hp->dim ? " with head_count x key_length "
                 "!= embedding_length" : "");
        return -1;
    }
    gpu_model_t *g = gpu_model_new(hp, ordinal, err, errlen);
    if (!g) return -1;
    long widest = hp->ffn_dim > hp->dim ? hp->ffn_dim : hp->dim, stage_rows = 1024;
    float *stage = malloc((size_t)(stage_rows * widest) * sizeof(float));
    if (!stage) {
        gpu_model_free(g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int ok = embd_upload(g, &m->tok_embd, stage, stage_rows) == 0;
    g->tied = m->output.data == m->tok_embd.data && m->output.type == m->tok_embd.type;
    if (ok && g->tied && g->embd_gg) g->out = (gmat_t){GM_GGUF, m->output.n, m->output.k, NULL, NULL, g->embd_gg, NULL};
    else if (ok && g->tied) g->out = (gmat_t){GM_F32, m->output.n, m->output.k, g->embd, NULL, NULL, NULL};
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
    fuse_layers(g);
    g->bytes = gpu_weight_bytes(g, hp);
    attach(m, g);
    return 0;
}


const char *model_gpu_name(const model_t *m) { return m->dev_be == &fwd_backend_cuda ? kc_device_name() : "none"; }
size_t model_gpu_weight_bytes(const model_t *m) {
    return m->dev_be == &fwd_backend_cuda ? ((const gpu_model_t *)m->dev)->bytes : 0;
}
double model_gpu_bandwidth(const model_t *m) { return m->dev_be == &fwd_backend_cuda ? kc_mem_bandwidth_gbs() : 0; }

/* ---- synthetic models (benchmarks) ------------------------------------------ */

typedef struct {
    const char *name;
    hparams_t hp;
} synth_t;

static const synth_t SYNTH[] = {
    {"llama3-8b", {32, 4096, 32, 8, 128, 14336, 128256, 8192, 128, 500000.0f, 1.0f, 1e-5f, NULL, 0, 4096}},
    {"llama3-70b", {80, 8192, 64, 8, 128, 28672, 128256, 8192, 128, 500000.0f, 1.0f, 1e-5f, NULL, 0, 8192}},
    {"smollm2-135m", {30, 576, 9, 3, 64, 1536, 49152, 8192, 64, 100000.0f, 1.0f, 1e-5f, NULL, 0, 576}},
};


/* FP16 rows of random values of magnitude 2^-7 .. 2^-5 (made on the host, a
 * matrix at a time: kc_gguf keeps 16-bit matrices as given) */
static kc_gguf_t *f16_random(long n, long k, uint64_t seed, int *host_oom) {
    uint16_t *h = malloc((size_t)n * (size_t)k * sizeof *h);
    if (!h) {
        *host_oom = 1;
        return NULL;
    }
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < (size_t)n * (size_t)k; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        h[i] = (uint16_t)((x & 0x83FFu) | (uint16_t)((0x18 + ((x >> 16) & 3)) << 10));
    }
    kc_gguf_t *g = kc_gguf_upload(K_F16, n, k, h, (size_t)k * sizeof *h);
    free(h);
    return g;
}

static gmat_t synth_mat(int kind, long n, long k, uint64_t seed, int *host_oom) {
    gmat_t g = {0, n, k, NULL, NULL, NULL, NULL};
    if (kind == SW_SQ || kind == SW_SQ_ISCALE)
        g.kind = (g.sq = kc_sq_random_ex(n, k, 4, 64, 8, seed, kind == SW_SQ ? KC_SQ_F16_SCALES : KC_SQ_INT_SCALES))
                     ? GM_SQ : 0;
    else if (kind == SW_F16) g.kind = (g.gg = f16_random(n, k, seed, host_oom)) ? GM_GGUF : 0;
    else g.kind = (g.in = kc_int_random(n, k, kind == SW_INT4 ? 4 : 8, seed)) ? GM_INT : 0;
    return g;
}

int model_synthetic(model_t *m, const char *name, const char *weights, int ordinal, char *err, size_t errlen) {
    const synth_t *s = NULL;
    for (size_t i = 0; i < sizeof SYNTH / sizeof SYNTH[0]; i++)
        if (!strcmp(SYNTH[i].name, name)) s = &SYNTH[i];
    if (!s) {
        snprintf(err, errlen, "unknown synthetic model '%s' (llama3-8b, llama3-70b, smollm2-135m)", name);
        return -1;
    }
    const int wi = synth_weights(weights, err, errlen);
    if (wi < 0) return -1;
    const int wk = SYNTH_W[wi].kind;
    const char *tag = SYNTH_W[wi].tag;
    memset(m, 0, sizeof *m);
    m->hp = s->hp;
    m->hp.arch = model_arch("llama");
    snprintf(m->name, sizeof m->name, "synthetic-%s-%s", name, tag);
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
    int host_oom = 0;
    if (ok) { /* the lm head in the layers' format, as each recipe's comparison needs */
        g->out = synth_mat(wk, hp->n_vocab, hp->dim, seed++, &host_oom);
        ok = g->out.kind != 0;
    }
    for (int l = 0; ok && l < hp->n_layer; l++) {
        glayer_t *G = &g->layers[l];
        ok = (G->attn_norm = kc_malloc((size_t)hp->dim * sizeof(float))) &&
             (G->ffn_norm = kc_malloc((size_t)hp->dim * sizeof(float))) &&
             kc_fill(G->attn_norm, (size_t)hp->dim, 1.0f, 0, 0) == 0 &&
             kc_fill(G->ffn_norm, (size_t)hp->dim, 1.0f, 0, 0) == 0;
        for (int i = 0; ok && i < 7; i++) {
            G->w[i] = synth_mat(wk, shape[i][0], shape[i][1], seed++, &host_oom);
            ok = G->w[i].kind != 0;
        }
    }
    if (host_oom) {
        gpu_model_free(g);
        snprintf(err, errlen, "out of host memory for a synthetic FP16 matrix");
        return -1;
    }
    if (!ok || kc_sync() != 0) return gpu_fail(g, err, errlen, "building the synthetic model");
    fuse_layers(g);
    g->bytes = gpu_weight_bytes(g, hp);
    attach(m, g);
    return 0;
}

#endif
