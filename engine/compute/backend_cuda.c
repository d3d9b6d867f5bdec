/* backend_cuda.c - the forward pass's operations on a CUDA GPU (backend.h).
 *
 * Every operation is a kernel from kernels/cuda/kc.h on one stream, on the
 * device view of the weights (cuda_model.c); the host only prepares the
 * batch description (token ids, positions, block tables) in begin() and
 * reads the logits back in end(). Per step that is one small upload and
 * one download, so a decode step costs the kernels plus two transfers.
 *
 * Activation recipes run as they do on the CPU through act_quant_hook:
 * per-token integer fake quantization and static SQ activations (the
 * high-channel masks are copied to the device). Dynamic SQ activations and
 * other hooks (calibration) are CPU-only and refused with a message.
 */
#include "backend_cuda.h"

#ifdef SQ_CUDA

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"
#include "act_quant.h"

#define GRAPH_MAX 256

/* The activation recipe the hook stands for, as GPU work. */
typedef struct {
    int kind; /* AQ_* */
    int bits, bits_hi;
} gact_t;

typedef struct {
    int8_t *qx;
    float *sx;
    int32_t *d_ints, *h_ints; /* tok, pos, blk_off, sel, then block ids */
    long n_ints, n_used;       /* capacity; ints the current batch fills (uploaded) */
    int *slot_seen;           /* per kv slot: offset of its table in this batch, or -1 */
    kc_kv_t kv;
    gact_t acts;              /* this batch's activation recipe */
    float *logits_host;       /* where end() delivers the logits, or NULL */
    float *pinned;            /* the page-locked logits buffer (fwd_pin_logits), or NULL */
    const void *mask_src;     /* the act_quant_t the masks were copied from */
    uint8_t *masks[N_SITES];  /* [layer][dim] static SQ high channels */
    kc_graph_t *graph[GRAPH_MAX + 1]; /* decode steps by batch size */
    uint8_t graph_state[GRAPH_MAX + 1]; /* 0 unseen, 1 ran once eagerly, 2 capture failed */
    int no_graphs, graph_acts;        /* graphs off; the activation recipe they were made for */
    int n_seqs;                       /* sequences in the current batch */
    /* qx/sx already hold the INT8 form of q_of[q_m][q_k]: set by the fused
     * norm/SwiGLU + quantization kernels, used (and cleared) by the next
     * matmul, cleared by anything that changes the activations between */
    const float *q_of;
    long q_m, q_k;
    /* static SQ activations on the integer kernels: two INT8 rows a token,
     * their scales, the 2n-row products (allocated at the first such batch) */
    int8_t *qx2;
    float *sx2, *y2;
    const float *qs_of; /* qx2/sx2 hold the static form of qs_of[qs_m][qs_k] (as q_of above) */
    long qs_m, qs_k;
    int int_layers; /* some layer matrix is an integer one (kc_int): set at init */
    /* RoPE and the K/V store in the q/k/v matmul's epilogue (KC_SQ_ROPE=1):
     * the step's angle table, filled at its first layer; roped: layer + 1
     * whose rope_store the matmul already did */
    float *rope_cs;
    int cs_ready, roped;
    /* SwiGLU by the gate/up and down matmuls (KC_SQ_SWIGLU=1): the gate/up
     * blocks' max |h| slots (hmax_n floats); swig: layer + 1 whose SwiGLU
     * the gate/up matmul did, into swig_h, with swig_nslot slots */
    float *hmax;
    long hmax_n;
    int swig, swig_nslot;
    const float *swig_h;
    /* RMSNorm split over the matmuls around it (KC_SQ_NORM=1): the slots
     * (kc_norm_split_t, for 4 tokens of dim values); ns_of: the norm output
     * the next matmul reads as ns_x's norm (the norm launched nothing) */
    double *ns_ss;
    float *ns_cand;
    const float *ns_of, *ns_x;
    /* the attention output quantized by the o matmul (KC_SQ_ATTQ=1): each
     * (row, head)'s max |out| (4 rows); attq: layer + 1 whose attention left them */
    float *amax;
    int attq;
} gfwd_t;

static int graphs_wanted(void) {
    const char *v = getenv("SQSERVE_CUDA_GRAPHS");
    return !v || strcmp(v, "0") != 0;
}

static void *kv_dev_alloc(size_t bytes) { return kc_malloc(bytes); }

static void cuda_free(fwd_t *f) {
    gfwd_t *g = f->be_state;
    kc_prof_report(stderr);
    float *fb[] = {f->x, f->xb, f->q, f->k, f->v, f->att, f->hb, f->hb2, f->sel, f->logits};
    for (size_t i = 0; i < sizeof fb / sizeof fb[0]; i++) kc_free(fb[i]);
    if (!g) return;
    kc_host_unpin(g->pinned);
    kc_free(g->sx);
    kc_free(g->qx);
    kc_free(g->qx2), kc_free(g->sx2), kc_free(g->y2);
    kc_free(g->d_ints);
    kc_free(g->rope_cs);
    kc_free(g->hmax);
    kc_free(g->ns_ss), kc_free(g->ns_cand), kc_free(g->amax);
    for (int s = 0; s < N_SITES; s++) kc_free(g->masks[s]);
    for (int i = 0; i <= GRAPH_MAX; i++) kc_graph_free(g->graph[i]);
    free(g->h_ints);
    free(g->slot_seen);
    free(g);
    f->be_state = NULL;
}

static int has_int_layers(const fwd_t *f);

static int cuda_init(fwd_t *f) {
    const hparams_t *hp = &f->m->hp;
    gfwd_t *g = calloc(1, sizeof *g);
    if (!g) return -1;
    f->be_state = g;
    size_t n = (size_t)f->n_max, d = (size_t)hp->dim, kvd = (size_t)f->kv->kv_dim,
           ffn = (size_t)hp->ffn_dim, wide = ffn > d ? ffn : d;
    long max_blocks = (f->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    long seqs = f->kv->max_seqs < f->n_max ? f->kv->max_seqs : f->n_max;
    g->n_ints = 4 * (long)n + seqs * max_blocks;
    g->hmax_n = 4 * ((long)ffn / 16 + 1); /* kc_sq_swiglu_slots of a gate/up pair of ffn rows, at most */
    int ok = (f->x = kc_malloc(n * d * 4)) && (f->xb = kc_malloc(n * d * 4)) &&
             (f->q = kc_malloc(n * d * 4)) && (f->att = kc_malloc(n * d * 4)) &&
             (f->k = kc_malloc(n * kvd * 4)) && (f->v = kc_malloc(n * kvd * 4)) &&
             (f->hb = kc_malloc(n * ffn * 4)) && (f->hb2 = kc_malloc(n * ffn * 4)) &&
             (f->sel = kc_malloc(n * d * 4)) &&
             (f->logits = kc_malloc(n * (size_t)hp->n_vocab * 4)) && (g->qx = kc_malloc(n * wide)) &&
             (g->sx = kc_malloc(n * 4)) && (g->d_ints = kc_malloc((size_t)g->n_ints * 4)) &&
             (g->rope_cs = kc_malloc(n * (size_t)(hp->rope_dim > 0 ? hp->rope_dim : 1) * 4)) &&
             (g->hmax = kc_malloc((size_t)g->hmax_n * 4)) &&
             (g->ns_ss = kc_malloc(4 * (size_t)kc_norm_split_tiles((long)d) * sizeof(double))) &&
             (g->ns_cand = kc_malloc(4 * (size_t)kc_norm_split_tiles((long)d) * 4 * sizeof(float))) &&
             (g->amax = kc_malloc(4 * (size_t)hp->n_head * sizeof(float))) &&
             (g->h_ints = malloc((size_t)g->n_ints * 4)) &&
             (g->slot_seen = malloc((size_t)f->kv->max_seqs * sizeof(int)));
    /* the cache's K/V rows move to the device; its bookkeeping stays on the host */
    if (ok && f->kv->release != kc_free) ok = kv_set_storage(f->kv, kv_dev_alloc, kc_free) == 0;
    if (!ok) return -1;
    g->kv = (kc_kv_t){f->kv->k, f->kv->v, f->kv->n_layer, f->kv->kv_dim, KV_BLOCK};
    g->no_graphs = !graphs_wanted() || kc_prof_enabled(); /* events cannot be read per replay */
    for (int s = 0; s < f->kv->max_seqs; s++) g->slot_seen[s] = -1;
    g->int_layers = has_int_layers(f);
    return 0;
}

/* The integer kernels' static-SQ scratch, sized for the widest input (dim,
 * the attention output's q_dim or ffn) and the widest set of outputs (q/k/v,
 * gate/up or o) of n_max tokens, two rows each. */
static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

static int static_scratch(fwd_t *f, gfwd_t *g) {
    const hparams_t *hp = &f->m->hp;
    const size_t n2 = 2 * (size_t)f->n_max, kvd = (size_t)f->kv->kv_dim;
    const size_t wide = max_size(max_size((size_t)hp->ffn_dim, (size_t)hp->dim), (size_t)hp->q_dim);
    const size_t outs = max_size(max_size(2 * (size_t)hp->ffn_dim, (size_t)hp->q_dim + 2 * kvd), (size_t)hp->dim);
    if ((g->qx2 = kc_malloc(n2 * wide)) && (g->sx2 = kc_malloc(n2 * sizeof(float))) &&
        (g->y2 = kc_malloc(n2 * outs * sizeof(float))))
        return 0;
    kc_free(g->qx2), kc_free(g->sx2), kc_free(g->y2);
    g->qx2 = NULL, g->sx2 = NULL, g->y2 = NULL;
    return -1;
}

/* whether any layer matrix is an integer one (kc_int): then static SQ
 * activations run on its kernels and need the scratch above (once, at init) */
static int has_int_layers(const fwd_t *f) {
    const gpu_model_t *gm = f->m->dev;
    for (int l = 0; l < gm->n_layer; l++)
        for (int i = 0; i < 7; i++)
            if (gm->layers[l].w[i].kind == GM_INT || gm->layers[l].qkv_i || gm->layers[l].gate_up_i) return 1;
    return 0;
}

static int resolve_acts(fwd_t *f, gfwd_t *g, gact_t *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (!f->hook) return 0;
    if (f->hook != act_quant_hook) {
        snprintf(err, errlen, "this forward hook (calibration) runs on the CPU only");
        return -1;
    }
    const act_quant_t *qs = f->hook_ud;
    if (qs->kernel_acts) return 0; /* the SQ kernels quantize their own inputs, as on the CPU */
    a->kind = qs->a.kind;
    switch (qs->a.kind) {
    case AQ_NONE: return 0;
    case AQ_INT: a->bits = qs->a.bits; return 0;
    case AQ_SQ_STATIC:
        if (qs->a.bank_lo) {
            snprintf(err, errlen, "static SQ activations with per-bank low scales (:bank) run on the CPU only");
            return -1;
        }
        a->bits = qs->a.sq.h_low, a->bits_hi = qs->a.sq.h_high;
        break;
    default:
        snprintf(err, errlen, "dynamic SQ activations run on the CPU only (use static, int8 or fp32 on the GPU)");
        return -1;
    }
    if (!g->qx2 && g->int_layers && static_scratch(f, g) != 0) {
        snprintf(err, errlen, "GPU: scratch for static SQ activations: %s", kc_error());
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
    if (a->kind == AQ_INT || a->kind == AQ_SQ_STATIC) g->q_of = NULL, g->qs_of = NULL; /* x changes */
    if (a->kind == AQ_INT) return kc_fake_quant(x, n, dim, NULL, 0, a->bits);
    if (a->kind == AQ_SQ_STATIC)
        return kc_fake_quant(x, n, dim, g->masks[site] + (size_t)layer * dim, a->bits_hi, a->bits);
    return 0;
}

/* x to INT8 per token (g->qx, g->sx) unless `quantized` says this x already
 * is (q/k/v and gate/up share one input). */
static int quant_input(gfwd_t *g, const float *x, int m, long k, int *quantized) {
    if (*quantized) return 0;
    if (x == g->q_of && m == g->q_m && k == g->q_k) { /* a fused kernel did it */
        *quantized = 1;
        return 0;
    }
    if (kc_quant_i8(x, m, k, g->qx, g->sx) != 0) return -1;
    *quantized = 1;
    return 0;
}

/* y = x . W^T. */
static int gmatmul(gfwd_t *g, const gmat_t *w, const float *x, int m, float *y, int *quantized) {
    if (w->kind == GM_FUSED) return -1; /* only with its whole set (forward.c never splits one) */
    if (w->kind == GM_GGUF) return kc_gguf_matmul(w->gg, x, m, y);
    if (w->kind == GM_F32) return kc_gemm_f32(w->f32, w->n, w->k, x, m, y);
    if (w->kind == GM_F32_A8) { /* x is a scratch input (norm output, attention, SwiGLU) */
        if (!*quantized && kc_fake_quant((float *)x, m, (int)w->k, NULL, 0, 8) != 0) return -1;
        *quantized = 1;
        return kc_gemm_f32(w->f32, w->n, w->k, x, m, y);
    }
    if (quant_input(g, x, m, w->k, quantized) != 0) return -1;
    if (w->kind == GM_INT) return kc_int_matmul(w->in, g->qx, g->sx, m, y);
    return kc_sq_matmul(w->sq, g->qx, g->sx, m, y);
}

/* tok, pos, blk_off, sel (rows wanting logits) and the block tables of the
 * batch's slots, each once. Returns the number of logit rows, or -1 when
 * the tables outgrow the buffer (more blocks than n_ctx needs). */
static int pack_batch(fwd_t *f, gfwd_t *g, const batch_t *b) {
    int32_t *tok = g->h_ints, *pos = tok + f->n_max, *off = pos + f->n_max, *sel = off + f->n_max;
    int32_t *blk = sel + f->n_max;
    long used = 0;
    int n_out = 0, n_seqs = 0;
    for (int i = 0; i < b->n; i++) {
        int s = b->slot[i];
        if (g->slot_seen[s] < 0) {
            const kv_seq_t *q = &f->kv->seqs[s];
            if (4L * f->n_max + used + q->n_blocks > g->n_ints) {
                for (int j = 0; j < i; j++) g->slot_seen[b->slot[j]] = -1;
                return -1;
            }
            g->slot_seen[s] = (int)used;
            n_seqs++;
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
    g->n_seqs = n_seqs;
    return n_out;
}


/* The device-side batch description, in d_ints. */
#define D_TOK(f, g) ((g)->d_ints)
#define D_POS(f, g) ((g)->d_ints + (f)->n_max)
#define D_OFF(f, g) ((g)->d_ints + 2 * (f)->n_max)
#define D_SEL(f, g) ((g)->d_ints + 3 * (f)->n_max)
#define D_BLK(f, g) ((g)->d_ints + 4 * (f)->n_max)

static int cuda_pin_logits(fwd_t *f, float *logits, size_t bytes) {
    gfwd_t *g = f->be_state;
    if (g->pinned) kc_host_unpin(g->pinned);
    g->pinned = NULL;
    if (!logits) return 0;
    if (kc_host_pin(logits, bytes) != 0) return -1;
    g->pinned = logits;
    return 0;
}

static int cuda_begin(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
    gfwd_t *g = f->be_state;
    f->b = b;
    g->logits_host = logits;
    if (resolve_acts(f, g, &g->acts, err, errlen) != 0) return -1;
    g->q_of = NULL, g->qs_of = NULL; /* nothing carries over from an earlier (perhaps failed) pass */
    kc_clear_error();
    int n_out = pack_batch(f, g, b);
    if (n_out < 0) {
        snprintf(err, errlen, "the batch's block tables exceed what context %d needs", f->n_ctx);
        return -1;
    }
    if (kc_upload(g->d_ints, g->h_ints, (size_t)g->n_used * sizeof(int32_t)) != 0) {
        snprintf(err, errlen, "GPU: %s", kc_error());
        return -1;
    }
    return n_out;
}

/* Decode steps (every row wants logits, n <= GRAPH_MAX) replay a CUDA
 * graph per batch size: the same kernels with the same pointers every
 * step, only the device-side batch description changes. That removes
 * the per-launch host overhead (~20 launches a layer). A batch size runs
 * eagerly once first, so kernels that size their scratch buffers on first
 * use do it outside the capture; a size whose capture fails keeps running
 * launch by launch. Off with SQSERVE_CUDA_GRAPHS=0. */
static int cuda_launch(fwd_t *f, int n, int n_out, fwd_pass_fn pass) {
    gfwd_t *g = f->be_state;
    if (n_out != n || n > GRAPH_MAX || g->no_graphs) return pass(f, n, n_out);
    const gact_t *acts = &g->acts;
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
            return pass(f, n, n);
        }
        if (kc_graph_begin() != 0) return -1;
        int rc = pass(f, n, n);
        kc_graph_t *gr = kc_graph_end();
        if (rc != 0 || !gr) {
            kc_graph_free(gr);
            g->graph_state[n] = 2;
            kc_clear_error();
            return pass(f, n, n);
        }
        g->graph[n] = gr;
    }
    return kc_graph_launch(g->graph[n]);
}

static int cuda_end(fwd_t *f, int n_out) {
    gfwd_t *g = f->be_state;
    if (n_out > 0 && f->hidden &&
        kc_download(f->hidden, f->sel, (size_t)n_out * (size_t)f->m->hp.dim * sizeof(float)) != 0)
        return -1;
    if (n_out > 0 && g->logits_host)
        return kc_download(g->logits_host, f->logits, (size_t)n_out * (size_t)f->m->hp.n_vocab * sizeof(float));
    return kc_sync(); /* no logits wanted, or left on the device (benchmarks) */
}

static int cuda_profile_range(fwd_t *f, int on) {
    (void)f;
    return kc_profiler_range(on);
}

static void cuda_error(fwd_t *f, char *err, size_t errlen) {
    (void)f;
    snprintf(err, errlen, "GPU: %s", kc_error());
}

static const gpu_model_t *gpu_model(const fwd_t *f) { return f->m->dev; }

/* whether the matmul that reads this layer's norm / SwiGLU output quantizes
 * it to INT8 (an SQ matrix): then the fused kernel produces both */
static int reads_int8(const gfwd_t *g, const glayer_t *L, int id) {
    const int kind = L->w[id].kind;
    /* an INT or static-SQ activation hook rewrites the input first: the
     * quantization would be discarded */
    return (kind == GM_SQ || kind == GM_FUSED || kind == GM_INT) && g->acts.kind != AQ_INT &&
           g->acts.kind != AQ_SQ_STATIC;
}

/* The layer's fused matrix serving ids[0..count) (q/k/v or gate/up), SQ or
 * integer, or both NULL when they run one by one. */
static void fused_of(const glayer_t *L, const int *ids, int count, const kc_sq_t **sq, const kc_int_t **in) {
    const int qkv = count == 3 && ids[0] == W_Q && ids[1] == W_K && ids[2] == W_V;
    const int gu = count == 2 && ids[0] == W_GATE && ids[1] == W_UP;
    *sq = qkv ? L->qkv : gu ? L->gate_up : NULL;
    *in = qkv ? L->qkv_i : gu ? L->gate_up_i : NULL;
}

/* the activation site a matrix reads (-1: the output projection) */
static int site_of(int id) {
    switch (id) {
    case W_Q: case W_K: case W_V: return SITE_QKV;
    case W_O: return SITE_O;
    case W_GATE: case W_UP: return SITE_UPGATE;
    case W_DOWN: return SITE_DOWN;
    default: return -1;
    }
}

/* Static SQ activations where the site's matrices are integer ones
 * (kc_int.cu): the matmul quantizes its float input into the high and low
 * rows itself (k_quant_row_static), instead of the hook's fake quantization
 * in float. The CPU runs the hook and then quantizes its output again: the
 * same codes, a scale that may differ in its last bit (fl(fl(q s) / q) for s). */
static int static_on_int(const gfwd_t *g, const glayer_t *L, int site) {
    if (g->acts.kind != AQ_SQ_STATIC || site < 0) return 0;
    const int id = site == SITE_QKV ? W_Q : site == SITE_O ? W_O : site == SITE_UPGATE ? W_GATE : W_DOWN;
    const gmat_t *w = &L->w[id];
    return w->kind == GM_INT || (w->kind == GM_FUSED && (site == SITE_QKV ? L->qkv_i : L->gate_up_i) != NULL);
}

/* y[i] = x . W_ids[i]^T (acc: y[0] += x . W_ids[0]^T) with static SQ
 * activations on the integer kernels: x as 2n rows (unless the norm or
 * SwiGLU kernel before quantized it), then where the rows fit the GEMV one
 * launch whose epilogue adds each token's two products (fused parts in one
 * launch); else the matmul of the 2n rows and y = high part + low part
 * (the CPU's k_sq_matmul_group). */
static int static_matmul(fwd_t *f, int layer, int site, const int *ids, float *const *y, int count, const float *x,
                         int n, int acc) {
    gfwd_t *g = f->be_state;
    const glayer_t *L = &gpu_model(f)->layers[layer];
    const long k = L->w[ids[0]].k;
    const int ready = x == g->qs_of && n == g->qs_m && k == g->qs_k;
    g->qs_of = NULL;
    if (!ready && kc_quant_static_i8(x, n, k, g->masks[site] + (size_t)layer * (size_t)k, g->acts.bits_hi,
                                     g->acts.bits, g->qx2, g->sx2) != 0)
        return -1;
    const kc_sq_t *unused;
    const kc_int_t *fused;
    fused_of(L, ids, count, &unused, &fused);
    if (fused && kc_int_pairs_applies(fused, n)) return kc_int_matmul_pairs(fused, g->qx2, g->sx2, n, y, acc);
    if (fused) {
        float *parts[KC_SQ_MAX_PARTS];
        size_t off = 0;
        for (int i = 0; i < count; i++) parts[i] = g->y2 + off, off += 2 * (size_t)n * (size_t)L->w[ids[i]].n;
        if (kc_int_matmul_parts(fused, g->qx2, g->sx2, 2L * n, parts) != 0) return -1;
        for (int i = 0; i < count; i++)
            if (kc_add_pairs(y[i], parts[i], n, L->w[ids[i]].n) != 0) return -1;
        return 0;
    }
    for (int i = 0; i < count; i++) {
        const gmat_t *w = &L->w[ids[i]];
        if (kc_int_pairs_applies(w->in, n)) {
            if (kc_int_matmul_pairs(w->in, g->qx2, g->sx2, n, &y[i], acc) != 0) return -1;
            continue;
        }
        float *sum = acc ? f->xb : y[i];
        if (kc_int_matmul(w->in, g->qx2, g->sx2, 2L * n, g->y2) != 0 || kc_add_pairs(sum, g->y2, n, w->n) != 0 ||
            (acc && kc_add(y[i], sum, (long)n * w->n) != 0))
            return -1;
    }
    return 0;
}

/* SQSERVE_CUDA_PROFILE: each operation bracketed for kc_prof (kc_prof.cu) */
static inline int prof_end(int rc) {
    kc_prof_pop();
    return rc;
}
#define PROFILED(name, call) (kc_prof_push(name), prof_end(call))

static const char *matmul_name(const int *ids, int count) {
    if (count == 3) return "matmul q/k/v";
    switch (ids[0]) {
    case W_O: return "matmul o";
    case W_GATE: return "matmul gate/up";
    case W_DOWN: return "matmul down";
    case W_OUT: return "matmul output";
    default: return "matmul";
    }
}

static int cuda_embed(fwd_t *f, float *x, int n) {
    const gpu_model_t *gm = gpu_model(f);
    gfwd_t *g = f->be_state;
    /* every pass starts here (also the eager pass after a failed capture, which recorded one) */
    g->cs_ready = 0, g->roped = 0, g->swig = 0, g->ns_of = NULL, g->attq = 0;
    const int32_t *tok = D_TOK(f, (gfwd_t *)f->be_state);
    if (gm->embd_gg) return PROFILED("embed", kc_gguf_embed(x, gm->embd_gg, tok, n));
    return PROFILED("embed", kc_embed(x, gm->embd, tok, n, f->m->hp.dim));
}

static int norm_split(const fwd_t *f, int layer, int norm, int n);

static int cuda_rmsnorm(fwd_t *f, float *y, const float *x, int layer, int norm, int n) {
    const gpu_model_t *gm = gpu_model(f);
    if (norm_split(f, layer, norm, n)) { /* the matmuls around it do it */
        gfwd_t *g = f->be_state;
        g->ns_of = y, g->ns_x = x;
        return 0;
    }
    const float *w = norm == NORM_OUT    ? gm->out_norm
                     : norm == NORM_ATTN ? gm->layers[layer].attn_norm
                                         : gm->layers[layer].ffn_norm;
    const int site = norm == NORM_ATTN ? SITE_QKV : SITE_UPGATE;
    if (norm != NORM_OUT && static_on_int(f->be_state, &gm->layers[layer], site)) {
        gfwd_t *g = f->be_state;
        const int dim = f->m->hp.dim;
        g->qs_of = y, g->qs_m = n, g->qs_k = dim;
        return PROFILED("rmsnorm+qs", kc_rmsnorm_qs(y, x, w, n, dim, f->m->hp.rms_eps,
                                                     g->masks[site] + (size_t)layer * (size_t)dim, g->acts.bits_hi,
                                                     g->acts.bits, g->qx2, g->sx2));
    }
    if (norm != NORM_OUT && reads_int8(f->be_state, &gm->layers[layer], norm == NORM_ATTN ? W_Q : W_GATE)) {
        gfwd_t *g = f->be_state;
        g->q_of = y, g->q_m = n, g->q_k = f->m->hp.dim;
        return PROFILED("rmsnorm+q8", kc_rmsnorm_q8(y, x, w, n, f->m->hp.dim, f->m->hp.rms_eps, g->qx, g->sx));
    }
    return PROFILED("rmsnorm", kc_rmsnorm(y, x, w, n, f->m->hp.dim, f->m->hp.rms_eps));
}

static int cuda_act_quant(fwd_t *f, int layer, int site, float *x, int n, int dim) {
    gfwd_t *g = f->be_state;
    if (layer >= 0 && static_on_int(g, &gpu_model(f)->layers[layer], site)) return 0; /* the matmul quantizes */
    return PROFILED("act_quant", act_quant(g, &g->acts, layer, site, x, n, dim));
}

/* RoPE and the K/V store in the q/k/v matmul's epilogue where asked for
 * (KC_SQ_ROPE=1) and nothing comes between them in the forward pass (no
 * q/k/v biases, no q/k norms) */
static int rope_fusable(const fwd_t *f, int n) {
    const hparams_t *hp = &f->m->hp;
    return kc_sq_rope_on() && !hp->arch->qkv_bias && !hp->arch->qk_norm && n <= kc_sq_gemv_max();
}

static int qkv_rope(fwd_t *f, int layer, const kc_sq_t *w, float *const *y, int n) {
    gfwd_t *g = f->be_state;
    const hparams_t *hp = &f->m->hp;
    if (!g->cs_ready) { /* the step's angles, once for all layers */
        if (kc_rope_table(g->rope_cs, D_POS(f, g), n, hp->rope_dim, gpu_model(f)->inv_freq) != 0) return -1;
        g->cs_ready = 1;
    }
    const kc_rope_t r = {g->rope_cs, D_POS(f, g), D_BLK(f, g), D_OFF(f, g), g->kv, layer, hp->head_dim, hp->rope_dim};
    const int rc = kc_sq_matmul_qkv_rope(w, g->qx, g->sx, n, y, &r);
    if (rc == 1) g->roped = layer + 1;
    return rc < 0 ? -1 : 0;
}

/* SwiGLU by the gate/up matmul (h = silu(gate) up over f->hb, with each
 * block's max |h|) and the down matmul (which quantizes h as it reads it)
 * where asked for (KC_SQ_SWIGLU=1) and both take it: the silu_mul launch
 * goes, with the same numbers (kc_sq_matmul_swiglu) */
static int swiglu_fusable(const fwd_t *f, const glayer_t *L, int n) {
    const gfwd_t *g = f->be_state;
    return L->gate_up && L->w[W_DOWN].kind == GM_SQ && reads_int8(g, L, W_DOWN) &&
           kc_sq_swiglu_slots(L->gate_up) <= g->hmax_n && kc_sq_swiglu_applies(L->gate_up, L->w[W_DOWN].sq, n);
}

static int swiglu_gate_up(fwd_t *f, int layer, float *h, int n) {
    gfwd_t *g = f->be_state;
    const glayer_t *L = &gpu_model(f)->layers[layer];
    int nslot = 0;
    if (kc_sq_matmul_swiglu(L->gate_up, L->w[W_DOWN].sq, g->qx, g->sx, NULL, NULL, n, h, g->hmax, g->hmax_n, &nslot) != 0)
        return -1;
    g->swig = layer + 1, g->swig_nslot = nslot, g->swig_h = h;
    return 0;
}

/* The attention output quantized to INT8 by the o matmul as it copies it,
 * from each head's max |out| the decode attention kernel leaves
 * (kc_attention_max), where asked for (KC_SQ_ATTQ=1): the kc_quant_i8
 * launch between them goes, with the same codes */
static int attq_fusable(const fwd_t *f, const glayer_t *L, int n) {
    const gfwd_t *g = f->be_state;
    return kc_sq_attq_on() && n <= 4 && n < 8 * g->n_seqs && L->w[W_O].kind == GM_SQ && reads_int8(g, L, W_O) &&
           kc_sq_gemv_mode_applies(L->w[W_O].sq, n, KC_GEMV_ACTS_H);
}

/* RMSNorm split over the matmuls around it where asked for (KC_SQ_NORM=1)
 * at one or two tokens: the residual matmul before the norm (o for the
 * FFN's norm, the previous layer's down for the attention's) leaves the
 * new rows' slots, the norm launches nothing, and the fused matmul after it
 * (gate/up, q/k/v) normalises and quantizes the row as it reads it
 * (kc_norm_split_t). Decided from the shapes alone, so the three steps
 * agree; the first layer's attention norm and the output norm stay. */
static int norm_split(const fwd_t *f, int layer, int norm, int n) {
    const gfwd_t *g = f->be_state;
    const gpu_model_t *gm = gpu_model(f);
    if (!kc_sq_norm_on() || n > 2 || layer < 0 || layer >= gm->n_layer || (norm != NORM_ATTN && norm != NORM_FFN) ||
        (norm == NORM_ATTN && layer == 0))
        return 0;
    const glayer_t *L = &gm->layers[layer], *P = norm == NORM_ATTN ? &gm->layers[layer - 1] : L;
    const int pid = norm == NORM_ATTN ? W_DOWN : W_O, cid = norm == NORM_ATTN ? W_Q : W_GATE;
    const kc_sq_t *cw = norm == NORM_ATTN ? L->qkv : L->gate_up;
    if (P->w[pid].kind != GM_SQ || !cw || !reads_int8(g, P, pid) || !reads_int8(g, L, cid)) return 0;
    const int hin = norm == NORM_ATTN ? swiglu_fusable(f, P, n) : attq_fusable(f, L, n); /* the producer's float input */
    const int pmode = KC_GEMV_END_NORM | (hin ? KC_GEMV_ACTS_H : 0);
    const int cmode = KC_GEMV_ACTS_NORM | (norm == NORM_FFN && swiglu_fusable(f, L, n) ? KC_GEMV_END_PAIRS : 0);
    return kc_sq_gemv_mode_applies(P->w[pid].sq, n, pmode) && kc_sq_gemv_mode_applies(cw, n, cmode);
}

static kc_norm_split_t norm_slots(const fwd_t *f, int layer, int norm) {
    const gfwd_t *g = f->be_state;
    const glayer_t *L = &gpu_model(f)->layers[layer];
    return (kc_norm_split_t){norm == NORM_ATTN ? L->attn_norm : L->ffn_norm, f->m->hp.rms_eps, g->ns_ss, g->ns_cand};
}

/* Matrices sharing an input quantize it to INT8 once; q/k/v and gate/up
 * run as one launch over their fused matrix when the layer has one. */
static int matmul_do(fwd_t *f, int layer, const int *ids, float *const *y, int count, const float *x, int n) {
    const gpu_model_t *gm = gpu_model(f);
    int quantized = 0;
    if (layer >= 0 && static_on_int(f->be_state, &gm->layers[layer], site_of(ids[0])))
        return static_matmul(f, layer, site_of(ids[0]), ids, y, count, x, n, 0);
    if (layer >= 0) {
        const glayer_t *L = &gm->layers[layer];
        const kc_sq_t *fused;
        const kc_int_t *fused_i;
        fused_of(L, ids, count, &fused, &fused_i);
        gfwd_t *gs = f->be_state;
        if (fused && x == gs->ns_of) { /* the norm before left its slots (norm_split) */
            const kc_norm_split_t ns = norm_slots(f, layer, count == 3 ? NORM_ATTN : NORM_FFN);
            gs->ns_of = NULL;
            if (count == 2 && swiglu_fusable(f, L, n)) {
                int nslot = 0;
                if (kc_sq_matmul_swiglu(fused, L->w[W_DOWN].sq, NULL, NULL, gs->ns_x, &ns, n, y[0], gs->hmax,
                                        gs->hmax_n, &nslot) != 0)
                    return -1;
                gs->swig = layer + 1, gs->swig_nslot = nslot, gs->swig_h = y[0];
                return 0;
            }
            const hparams_t *hp = &f->m->hp;
            kc_rope_t r;
            const int rope = count == 3 && rope_fusable(f, n);
            if (rope) {
                if (!gs->cs_ready) {
                    if (kc_rope_table(gs->rope_cs, D_POS(f, gs), n, hp->rope_dim, gpu_model(f)->inv_freq) != 0) return -1;
                    gs->cs_ready = 1;
                }
                r = (kc_rope_t){gs->rope_cs, D_POS(f, gs), D_BLK(f, gs), D_OFF(f, gs), gs->kv, layer, hp->head_dim,
                                hp->rope_dim};
            }
            const int rc = kc_sq_matmul_parts_ns(fused, gs->ns_x, &ns, n, y, rope ? &r : NULL);
            if (rc == 1) gs->roped = layer + 1;
            return rc < 0 ? -1 : 0;
        }
        if (fused || fused_i) {
            if (quant_input(f->be_state, x, n, L->w[ids[0]].k, &quantized) != 0) return -1;
            gfwd_t *g = f->be_state;
            if (fused && count == 3 && rope_fusable(f, n)) return qkv_rope(f, layer, fused, y, n);
            if (fused && count == 2 && swiglu_fusable(f, L, n)) return swiglu_gate_up(f, layer, y[0], n);
            return fused ? kc_sq_matmul_parts(fused, g->qx, g->sx, n, y)
                         : kc_int_matmul_parts(fused_i, g->qx, g->sx, n, y);
        }
    }
    for (int i = 0; i < count; i++) {
        const gmat_t *w = ids[i] == W_OUT ? &gm->out : &gm->layers[layer].w[ids[i]];
        if (ids[i] == W_OUT && w->kind == GM_F32_A8 && !quantized) {
            /* its fake quantization works in place: on a copy (xb is free
             * by now), so the hidden states embeddings read stay as computed */
            if (kc_copy(f->xb, x, (size_t)n * (size_t)w->k * sizeof(float)) != 0) return -1;
            x = f->xb;
        }
        if (gmatmul(f->be_state, w, x, n, y[i], &quantized) != 0) return -1;
    }
    return 0;
}

static int cuda_matmul(fwd_t *f, int layer, const int *ids, float *const *y, int count, const float *x, int n) {
    gfwd_t *g = f->be_state;
    int rc = PROFILED(matmul_name(ids, count), matmul_do(f, layer, ids, y, count, x, n));
    g->q_of = NULL, g->qs_of = NULL; /* good for one matmul call only */
    return rc;
}


static int cuda_rope_store(fwd_t *f, int layer, int n) {
    gfwd_t *g = f->be_state;
    if (g->roped == layer + 1) { /* the q/k/v matmul did it (qkv_rope) */
        g->roped = 0;
        return 0;
    }
    const hparams_t *hp = &f->m->hp;
    return PROFILED("rope+kv_store", kc_rope_kv_store(f->q, f->k, f->v, n, hp->n_head, hp->n_head_kv, hp->head_dim,
                                                      hp->rope_dim, gpu_model(f)->inv_freq, &g->kv, layer,
                                                      D_POS(f, g), D_BLK(f, g), D_OFF(f, g)));
}

static int cuda_attention(fwd_t *f, int layer, int n) {
    gfwd_t *g = f->be_state;
    const hparams_t *hp = &f->m->hp;
    /* the tiled kernel when rows share sequences (prompt chunks): 8 rows a sequence on average */
    const int prefill = n >= 8 * g->n_seqs;
    if (attq_fusable(f, &gpu_model(f)->layers[layer], n)) { /* each head's max |out| for the o matmul */
        g->attq = layer + 1;
        return PROFILED("attention rows + max",
                        kc_attention_max(f->att, f->q, &g->kv, layer, n, D_POS(f, g), D_BLK(f, g), D_OFF(f, g),
                                         hp->n_head, hp->n_head_kv, hp->head_dim, f->n_ctx, g->amax));
    }
    return PROFILED(prefill ? "attention tiles" : "attention rows",
                    kc_attention(f->att, f->q, &g->kv, layer, n, D_POS(f, g), D_BLK(f, g), D_OFF(f, g), hp->n_head,
                                 hp->n_head_kv, hp->head_dim, f->n_ctx, prefill));
}

/* The residual add in the dp4a kernel's epilogue where it takes the
 * matrix (an SQ matrix at decode batch sizes: one launch fewer, same
 * numbers); elsewhere the product into f->xb, then an add. */
static int matmul_add_do(fwd_t *f, int layer, int id, float *y, const float *x, int n) {
    gfwd_t *g = f->be_state;
    const gmat_t *w = &gpu_model(f)->layers[layer].w[id];
    if (static_on_int(g, &gpu_model(f)->layers[layer], site_of(id)))
        return static_matmul(f, layer, site_of(id), &id, &y, 1, x, n, 1);
    /* the next norm split over this matmul and the one after it (norm_split) */
    const int nlayer = id == W_DOWN ? layer + 1 : layer, nnorm = id == W_DOWN ? NORM_ATTN : NORM_FFN;
    const int split = (id == W_O || id == W_DOWN) && norm_split(f, nlayer, nnorm, n);
    const kc_norm_split_t ns = split ? norm_slots(f, nlayer, nnorm) : (kc_norm_split_t){0};
    if (id == W_O && g->attq == layer + 1 && x == f->att) { /* the attention output in float, its heads' maxima */
        g->attq = 0;
        return kc_sq_matmul_acc_h(w->sq, x, g->amax, f->m->hp.n_head, n, y, split ? &ns : NULL);
    }
    if (id == W_DOWN && g->swig == layer + 1 && x == g->swig_h) { /* h in float: swiglu_gate_up */
        g->swig = 0;
        return kc_sq_matmul_acc_h(w->sq, x, g->hmax, g->swig_nslot, n, y, split ? &ns : NULL);
    }
    if (split) {
        int quantized = 0;
        if (quant_input(g, x, n, w->k, &quantized) != 0) return -1;
        return kc_sq_matmul_acc_ns(w->sq, g->qx, g->sx, n, y, &ns);
    }
    if ((w->kind == GM_SQ && kc_sq_acc_applies(w->sq, n)) || (w->kind == GM_INT && kc_int_acc_applies(w->in, n))) {
        int quantized = 0;
        if (quant_input(g, x, n, w->k, &quantized) != 0) return -1;
        return w->kind == GM_SQ ? kc_sq_matmul_acc(w->sq, g->qx, g->sx, n, y) : kc_int_matmul_acc(w->in, g->qx, g->sx, n, y);
    }
    return gmatmul(g, w, x, n, f->xb, &(int){0}) != 0 ? -1 : kc_add(y, f->xb, (long)n * w->n);
}

static int cuda_matmul_add(fwd_t *f, int layer, int id, float *y, const float *x, int n) {
    gfwd_t *g = f->be_state;
    int rc = PROFILED(id == W_O ? "matmul o + residual" : "matmul down + residual",
                      matmul_add_do(f, layer, id, y, x, n));
    g->q_of = NULL, g->qs_of = NULL;
    return rc;
}

static int cuda_silu_mul(fwd_t *f, int layer, float *g, const float *u, long count) {
    const glayer_t *L = &gpu_model(f)->layers[layer];
    const long ffn = f->m->hp.ffn_dim;
    gfwd_t *gs = f->be_state;
    if (gs->swig == layer + 1 && g == gs->swig_h) return 0; /* the gate/up matmul did it (swiglu_gate_up) */
    /* the fused kernels give a row to one block and load it at once
     * (kc_ops.cu), so at batch 1 they also beat the two launches they replace */
    if (count % ffn == 0 && static_on_int(gs, L, SITE_DOWN)) {
        gs->qs_of = g, gs->qs_m = count / ffn, gs->qs_k = ffn;
        return PROFILED("silu_mul+qs", kc_silu_mul_qs(g, u, (int)(count / ffn), (int)ffn,
                                                      gs->masks[SITE_DOWN] + (size_t)layer * (size_t)ffn,
                                                      gs->acts.bits_hi, gs->acts.bits, gs->qx2, gs->sx2));
    }
    if (count % ffn == 0 && reads_int8(gs, L, W_DOWN)) {
        gs->q_of = g, gs->q_m = count / ffn, gs->q_k = ffn;
        return PROFILED("silu_mul+q8", kc_silu_mul_q8(g, u, (int)(count / ffn), (int)ffn, gs->qx, gs->sx));
    }
    return PROFILED("silu_mul", kc_silu_mul(g, u, count));
}

/* a gather of the rows that want logits, by the embedding kernel */
static int cuda_gather(fwd_t *f, float *y, const float *x, int n_out) {
    return PROFILED("gather", kc_embed(y, x, D_SEL(f, (gfwd_t *)f->be_state), n_out, f->m->hp.dim));
}

const fwd_backend_t fwd_backend_cuda = {
    .name = "cuda",
    .init = cuda_init,
    .free = cuda_free,
    .begin = cuda_begin,
    .pin_logits = cuda_pin_logits,
    .launch = cuda_launch,
    .end = cuda_end,
    .profile_range = cuda_profile_range,
    .error = cuda_error,
    .embed = cuda_embed,
    .rmsnorm = cuda_rmsnorm,
    .act_quant = cuda_act_quant,
    .matmul = cuda_matmul,
    .rope_store = cuda_rope_store,
    .attention = cuda_attention,
    .matmul_add = cuda_matmul_add,
    .silu_mul = cuda_silu_mul,
    .gather = cuda_gather,
};

#endif
