/* backend_cuda.c - the forward pass's operations on a CUDA GPU (backend.h).
 *
 * Every operation is a kernel from kernels/cuda/kc.h on one stream, on the
 * device view of the weights (cuda_model.c); what brackets them (the state,
 * the batch's upload, CUDA graphs, the logits' download) is cuda_step.c.
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

#include "cuda_step.h"

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

/* RoPE and the K/V store in the q/k/v matmul's epilogue (unless
 * KC_SQ_ROPE=0) where nothing comes between them in the forward pass (no
 * q/k/v biases, no q/k norms) */
static int rope_fusable(const fwd_t *f, int n) {
    const hparams_t *hp = &f->m->hp;
    return kc_sq_rope_on() && !hp->arch->qkv_bias && !hp->arch->qk_norm && n <= kc_sq_gemv_max();
}

/* this layer's RoPE arguments for a q/k/v epilogue, the step's angle table
 * filled at its first use (once for all layers); -1 on error */
static int rope_args_of(fwd_t *f, int layer, int n, kc_rope_t *r) {
    gfwd_t *g = f->be_state;
    const hparams_t *hp = &f->m->hp;
    if (!g->cs_ready) {
        if (kc_rope_table(g->rope_cs, D_POS(f, g), n, hp->rope_dim, gpu_model(f)->inv_freq) != 0) return -1;
        g->cs_ready = 1;
    }
    *r = (kc_rope_t){g->rope_cs, D_POS(f, g), D_BLK(f, g), D_OFF(f, g), g->kv, layer, hp->head_dim, hp->rope_dim};
    return 0;
}

static int qkv_rope(fwd_t *f, int layer, const kc_sq_t *w, float *const *y, int n) {
    gfwd_t *g = f->be_state;
    kc_rope_t r;
    if (rope_args_of(f, layer, n, &r) != 0) return -1;
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
            kc_rope_t r;
            const int rope = count == 3 && rope_fusable(f, n);
            if (rope && rope_args_of(f, layer, n, &r) != 0) return -1;
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
