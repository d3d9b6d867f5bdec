/* forward.c - the transformer block, top to bottom (names as in the paper):
 *
 *   x   = embed(tokens)
 *   for each layer:
 *     xb  = RMSNorm(x) * w_attn_norm
 *     q, k, v = xb Wq (+ bq), xb Wk (+ bk), xb Wv (+ bv)   (biases: qwen2)
 *     q, k = RMSNorm per head * w_q_norm, w_k_norm           (qwen3)
 *     RoPE(q, k); k, v into the KV cache (pairs: adjacent, or NeoX halves)
 *     x  += softmax(q k^T / sqrt(d_head)) v  Wo      (causal, grouped KV,
 *                                         optionally a sliding window)
 *     xb  = RMSNorm(x) * w_ffn_norm
 *     x  += (silu(xb Wgate) * (xb Wup)) Wdown        (SwiGLU)
 *   logits = RMSNorm(x) * w_out_norm  Wout
 *
 * Written once for every architecture and device: what an architecture
 * adds is a flag of its arch_t (model.h) read here, and each step is an
 * operation of the model's backend (backend.h; backend_cpu.c,
 * backend_cuda.c), on buffers that backend allocated. The activation hook
 * runs at the four matmul input sites (recipe.h's SITE_*), where quantized
 * recipes round activations.
 */
#include "backend.h"

#include <stdio.h>
#include <string.h>

int fwd_init(fwd_t *f, const model_t *m, kv_cache_t *kv, k_pool_t *pool, int n_max, int n_ctx) {
    memset(f, 0, sizeof *f);
    f->m = m;
    f->kv = kv;
    f->pool = pool;
    f->n_max = n_max;
    f->n_ctx = n_ctx;
    f->be = m->dev_be ? m->dev_be : &fwd_backend_cpu;
    if (f->be->init(f) != 0) {
        fwd_free(f);
        return -1;
    }
    return 0;
}

int fwd_pin_logits(fwd_t *f, float *logits, size_t rows) {
    if (!f->be || !f->be->pin_logits) return -1;
    return f->be->pin_logits(f, logits, logits ? rows * (size_t)f->m->hp.n_vocab * sizeof(float) : 0);
}

int fwd_profile_range(fwd_t *f, int on) {
    return f->be && f->be->profile_range ? f->be->profile_range(f, on) : 0;
}

void fwd_free(fwd_t *f) {
    if (f->be) f->be->free(f);
    memset(f, 0, sizeof *f);
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

#define TRY(op) do { if ((op) != 0) return -1; } while (0)

/* The pass over n rows, n_out of which want logits; every step is a
 * backend operation on the backend's buffers. */
static int fwd_pass(fwd_t *f, int n, int n_out) {
    const fwd_backend_t *be = f->be;
    const hparams_t *hp = &f->m->hp;
    const arch_t *arch = hp->arch;
    const int dim = hp->dim, ffn = hp->ffn_dim;

    TRY(be->embed(f, f->x, n));
    for (int l = 0; l < hp->n_layer; l++) {
        /* attention */
        TRY(be->rmsnorm(f, f->xb, f->x, l, NORM_ATTN, n));
        TRY(be->act_quant(f, l, SITE_QKV, f->xb, n, dim));
        TRY(be->matmul(f, l, (const int[]){W_Q, W_K, W_V}, (float *const[]){f->q, f->k, f->v}, 3, f->xb, n));
        if (arch->qkv_bias) {
            TRY(be->bias(f, l, W_Q, f->q, n));
            TRY(be->bias(f, l, W_K, f->k, n));
            TRY(be->bias(f, l, W_V, f->v, n));
        }
        if (arch->qk_norm) {
            TRY(be->head_norm(f, f->q, l, NORM_Q, hp->n_head, n));
            TRY(be->head_norm(f, f->k, l, NORM_K, hp->n_head_kv, n));
        }
        TRY(be->rope_store(f, l, n)); /* RoPE(q, k); k, v into the cache */
        TRY(be->attention(f, l, n));
        TRY(be->act_quant(f, l, SITE_O, f->att, n, hp->q_dim));
        TRY(be->matmul_add(f, l, W_O, f->x, f->att, n)); /* the residual */

        /* SwiGLU feed-forward */
        TRY(be->rmsnorm(f, f->xb, f->x, l, NORM_FFN, n));
        TRY(be->act_quant(f, l, SITE_UPGATE, f->xb, n, dim));
        TRY(be->matmul(f, l, (const int[]){W_GATE, W_UP}, (float *const[]){f->hb, f->hb2}, 2, f->xb, n));
        TRY(be->silu_mul(f, l, f->hb, f->hb2, (long)n * ffn));
        TRY(be->act_quant(f, l, SITE_DOWN, f->hb, n, ffn));
        TRY(be->matmul_add(f, l, W_DOWN, f->x, f->hb, n));
    }
    /* final norm and output projection only for the rows that want logits */
    if (n_out > 0) {
        TRY(be->gather(f, f->sel, f->x, n_out));
        TRY(be->rmsnorm(f, f->sel, f->sel, -1, NORM_OUT, n_out));
        TRY(be->matmul(f, -1, (const int[]){W_OUT}, (float *const[]){f->logits}, 1, f->sel, n_out));
    }
    return 0;
}

int fwd_run(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen) {
    if (check_batch(f, b, err, errlen) != 0) return -1;
    int n_out = f->be->begin(f, b, logits, err, errlen);
    if (n_out < 0) return -1;
    if (f->be->launch(f, b->n, n_out, fwd_pass) != 0 || f->be->end(f, n_out) != 0) {
        f->be->error(f, err, errlen);
        return -1;
    }
    return 0;
}
