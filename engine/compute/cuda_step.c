/* cuda_step.c - what brackets the CUDA backend's operations (cuda_step.h):
 * the per-forward state and its buffers, the activation recipe a batch
 * asks for, the batch's description uploaded in begin(), the CUDA graphs a
 * decode step replays in launch(), and the logits read back in end(). Per
 * step that is one small upload and one download, so a decode step costs
 * the kernels plus two transfers.
 */
#include "backend_cuda.h"

#ifdef SQ_CUDA

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_step.h"

static int graphs_wanted(void) {
    const char *v = getenv("SQSERVE_CUDA_GRAPHS");
    return !v || strcmp(v, "0") != 0;
}

static void *kv_dev_alloc(size_t bytes) { return kc_malloc(bytes); }

void cuda_free(fwd_t *f) {
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

int cuda_init(fwd_t *f) {
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



int cuda_pin_logits(fwd_t *f, float *logits, size_t bytes) {
    gfwd_t *g = f->be_state;
    if (g->pinned) kc_host_unpin(g->pinned);
    g->pinned = NULL;
    if (!logits) return 0;
    if (kc_host_pin(logits, bytes) != 0) return -1;
    g->pinned = logits;
    return 0;
}

int cuda_begin(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
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
int cuda_launch(fwd_t *f, int n, int n_out, fwd_pass_fn pass) {
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

int cuda_end(fwd_t *f, int n_out) {
    gfwd_t *g = f->be_state;
    if (n_out > 0 && f->hidden &&
        kc_download(f->hidden, f->sel, (size_t)n_out * (size_t)f->m->hp.dim * sizeof(float)) != 0)
        return -1;
    if (n_out > 0 && g->logits_host)
        return kc_download(g->logits_host, f->logits, (size_t)n_out * (size_t)f->m->hp.n_vocab * sizeof(float));
    return kc_sync(); /* no logits wanted, or left on the device (benchmarks) */
}

int cuda_profile_range(fwd_t *f, int on) {
    (void)f;
    return kc_profiler_range(on);
}

void cuda_error(fwd_t *f, char *err, size_t errlen) {
    (void)f;
    snprintf(err, errlen, "GPU: %s", kc_error());
}

#endif
