/* forward.c - Llama block, top to bottom (names as in the paper):
 *
 *   x   = embed(tokens)
 *   for each layer:
 *     xb  = RMSNorm(x) * w_attn_norm
 *     q, k, v = xb Wq, xb Wk, xb Wv;  RoPE(q, k)
 *     x  += softmax(q k^T / sqrt(d_head)) v  Wo      (causal, grouped KV)
 *     xb  = RMSNorm(x) * w_ffn_norm
 *     x  += (silu(xb Wgate) * (xb Wup)) Wdown        (SwiGLU)
 *   logits = RMSNorm(x) * w_out_norm  Wout
 */
#include "forward.h"

#include "fwd_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fwd_init(fwd_t *f, const model_t *m, kv_cache_t *kv, k_pool_t *pool, int n_max, int n_ctx) {
    memset(f, 0, sizeof *f);
    const hparams_t *hp = &m->hp;
    f->m = m;
    f->kv = kv;
    f->pool = pool;
    f->n_max = n_max;
    f->n_ctx = n_ctx;
    if (m->gpu) return fwd_cuda_init(f); /* buffers live on the device */
    size_t n = (size_t)n_max, d = (size_t)hp->dim, kvd = (size_t)kv->kv_dim;
    size_t nth = (size_t)k_pool_size(pool), max_blocks = (size_t)(n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    f->x = malloc(n * d * sizeof(float));
    f->xb = malloc(n * d * sizeof(float));
    f->q = malloc(n * d * sizeof(float));
    f->att = malloc(n * d * sizeof(float));
    f->k = malloc(n * kvd * sizeof(float));
    f->v = malloc(n * kvd * sizeof(float));
    f->hb = malloc(n * (size_t)hp->ffn_dim * sizeof(float));
    f->hb2 = malloc(n * (size_t)hp->ffn_dim * sizeof(float));
    f->sel = malloc(n * d * sizeof(float));
    f->scores = malloc(nth * (size_t)n_ctx * sizeof(float));
    f->blk_ptrs = malloc(nth * 2 * max_blocks * sizeof(float *));
    if (!f->x || !f->xb || !f->q || !f->att || !f->k || !f->v || !f->hb || !f->hb2 ||
        !f->sel || !f->scores || !f->blk_ptrs) {
        fwd_free(f);
        return -1;
    }
    return 0;
}

void fwd_free(fwd_t *f) {
    fwd_cuda_free(f);
    free(f->x); free(f->xb); free(f->q); free(f->att); free(f->k); free(f->v);
    free(f->hb); free(f->hb2); free(f->sel); free(f->scores); free(f->blk_ptrs);
    memset(f, 0, sizeof *f);
}

/* ---- attention: one task unit = (batch row, query head) ------------------ */

typedef struct {
    fwd_t *f;
    const batch_t *b;
    int layer;
} attn_ctx_t;

static void attn_task(void *arg, int ith, int nth) {
    attn_ctx_t *c = arg;
    fwd_t *f = c->f;
    const hparams_t *hp = &f->m->hp;
    const kv_cache_t *kv = f->kv;
    const k_isa_t *isa = k_isa();
    int hd = hp->head_dim, group = hp->n_head / hp->n_head_kv;
    float scale = 1.0f / sqrtf((float)hd);
    float *sc = f->scores + (size_t)ith * f->n_ctx;
    int max_blocks = (f->n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    const float **kb = f->blk_ptrs + (size_t)ith * 2 * max_blocks, **vb = kb + max_blocks;
    long begin, end;
    k_split((long)c->b->n * hp->n_head, ith, nth, 1, &begin, &end);
    for (long u = begin; u < end; u++) {
        int i = (int)(u / hp->n_head), h = (int)(u % hp->n_head), g = h / group;
        int pos = c->b->pos[i], slot = c->b->slot[i];
        for (int blk = 0; blk <= pos / KV_BLOCK; blk++) {
            kb[blk] = kv_k_row(kv, c->layer, slot, blk * KV_BLOCK) + g * hd;
            vb[blk] = kv_v_row(kv, c->layer, slot, blk * KV_BLOCK) + g * hd;
        }
        isa->attn_head(f->q + (size_t)i * hp->dim + (size_t)h * hd, kb, vb, KV_BLOCK,
                       kv->kv_dim, pos + 1, hd, scale, sc,
                       f->att + (size_t)i * hp->dim + (size_t)h * hd);
    }
}

static int check_batch(const fwd_t *f, const batch_t *b, char *err, size_t errlen) {
    if (b->n < 1 || b->n > f->n_max) {
        snprintf(err, errlen, "batch of %d rows (1..%d allowed)", b->n, f->n_max);
        return -1;
    }
    for (int i = 0; i < b->n; i++) {
        if (b->tok[i] < 0 || b->tok[i] >= f->m->hp.n_vocab) {
            snprintf(err, errlen, "token id %d is outside the vocabulary (0..%d)", b->tok[i],
                     f->m->hp.n_vocab - 1);
            return -1;
        }
        int slot = b->slot[i], pos = b->pos[i];
        if (slot < 0 || slot >= f->kv->max_seqs || pos < 0 || pos >= f->n_ctx ||
            pos >= f->kv->seqs[slot].n_blocks * KV_BLOCK) {
            snprintf(err, errlen, "position %d of slot %d has no reserved KV block (context %d)",
                     pos, slot, f->n_ctx);
            return -1;
        }
    }
    return 0;
}

#define HOOK(site, x, dim) \
    do { if (f->hook) f->hook(f->hook_ud, l, (site), (x), n, (dim)); } while (0)

#define MATMUL(w, in, out) \
    do { if (k_matmul(f->pool, (w), (in), n, (out)) != 0) goto oom; } while (0)

int fwd_run(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
    if (check_batch(f, b, err, errlen) != 0) return -1;
    if (f->gpu) return fwd_cuda_run(f, b, logits, err, errlen);
    const model_t *m = f->m;
    const hparams_t *hp = &m->hp;
    const long n = b->n, dim = hp->dim, kvd = f->kv->kv_dim, ffn = hp->ffn_dim;
    const int hd = hp->head_dim;

    for (long i = 0; i < n; i++) k_mat_row(&m->tok_embd, b->tok[i], f->x + i * dim);

    for (int l = 0; l < hp->n_layer; l++) {
        const layer_t *L = &m->layers[l];
        for (long i = 0; i < n; i++)
            k_rmsnorm(f->xb + i * dim, f->x + i * dim, L->attn_norm, dim, hp->rms_eps);
        HOOK(SITE_QKV, f->xb, dim);
        {
            const k_mat_t *w3[3] = {&L->wq, &L->wk, &L->wv};
            float *y3[3] = {f->q, f->k, f->v};
            if (k_matmul_group(f->pool, w3, y3, 3, f->xb, n) != 0) goto oom;
        }
        for (long i = 0; i < n; i++) {
            for (int h = 0; h < hp->n_head; h++)
                k_rope(f->q + i * dim + h * hd, hp->rope_dim, (float)b->pos[i], m->rope_inv_freq);
            for (int h = 0; h < hp->n_head_kv; h++)
                k_rope(f->k + i * kvd + h * hd, hp->rope_dim, (float)b->pos[i], m->rope_inv_freq);
            memcpy(kv_k_row(f->kv, l, b->slot[i], b->pos[i]), f->k + i * kvd,
                   (size_t)kvd * sizeof(float));
            memcpy(kv_v_row(f->kv, l, b->slot[i], b->pos[i]), f->v + i * kvd,
                   (size_t)kvd * sizeof(float));
        }
        attn_ctx_t ac = {f, b, l};
        k_pool_run(f->pool, attn_task, &ac);
        HOOK(SITE_O, f->att, dim);
        MATMUL(&L->wo, f->att, f->xb);
        k_add(f->x, f->xb, n * dim);

        for (long i = 0; i < n; i++)
            k_rmsnorm(f->xb + i * dim, f->x + i * dim, L->ffn_norm, dim, hp->rms_eps);
        HOOK(SITE_UPGATE, f->xb, dim);
        {
            const k_mat_t *w2[2] = {&L->w_gate, &L->w_up};
            float *y2[2] = {f->hb, f->hb2};
            if (k_matmul_group(f->pool, w2, y2, 2, f->xb, n) != 0) goto oom;
        }
        k_silu_mul(f->hb, f->hb2, n * ffn);
        HOOK(SITE_DOWN, f->hb, ffn);
        MATMUL(&L->w_down, f->hb, f->xb);
        k_add(f->x, f->xb, n * dim);
    }

    /* final norm and output projection only for the rows that want logits */
    long n_out = 0;
    for (long i = 0; i < n; i++) {
        int want = b->want_logits ? b->want_logits[i] : i == n - 1;
        if (want) k_rmsnorm(f->sel + n_out++ * dim, f->x + i * dim, m->output_norm, dim, hp->rms_eps);
    }
    if (n_out > 0 && k_matmul(f->pool, &m->output, f->sel, n_out, logits) != 0) goto oom;
    return 0;
oom:
    snprintf(err, errlen, "out of memory in the forward pass");
    return -1;
}
