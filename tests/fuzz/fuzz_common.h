/* fuzz_common.h - shared by the libFuzzer harnesses (docs/fuzzing.md).
 * Header-only: each harness is one translation unit linked with
 * build/fuzz/libsqserve.a. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "../../engine/compute/act_quant.h"
#include "../../engine/compute/forward.h"
#include "../../engine/model/model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The input in a fresh 64-byte-aligned buffer, as a mapped file would be
 * (libFuzzer's own buffer is only malloc-aligned). */
static inline uint8_t *fuzz_aligned_copy(const uint8_t *data, size_t size) {
    uint8_t *p = aligned_alloc(64, (size + 63) / 64 * 64 + 64);
    if (p) memcpy(p, data, size);
    return p;
}

/* One forward pass of two tokens with INT8 activation quantization, for a
 * model small enough to keep every input fast. */
static inline void fuzz_forward_once(model_t *m) {
    const hparams_t *hp = &m->hp;
    if (hp->dim > 256 || hp->n_layer > 4 || hp->n_vocab > 4096 || hp->ffn_dim > 1024 || hp->n_ctx_train < 4)
        return; /* keep each input fast: the loader is the target */
    k_pool_t *pool = k_pool_new(1);
    kv_cache_t kv;
    fwd_t f;
    act_quant_t aq;
    memset(&aq, 0, sizeof aq);
    char err[256];
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int kv_ok = 0, f_ok = 0;
    if (!pool || !logits || recipe_parse_a("int8", &aq.a, err, sizeof err) != 0) goto out;
    aq.n_layer = hp->n_layer;
    aq.dim[SITE_QKV] = aq.dim[SITE_O] = aq.dim[SITE_UPGATE] = hp->dim;
    aq.dim[SITE_DOWN] = hp->ffn_dim;
    if (kv_init(&kv, hp->n_layer, hp->head_dim * hp->n_head_kv, 1, 1) != 0) goto out;
    kv_ok = 1;
    if (fwd_init(&f, m, &kv, pool, 2, KV_BLOCK) != 0) goto out;
    f_ok = 1;
    f.hook = act_quant_hook;
    f.hook_ud = &aq;
    int32_t tok[2] = {0, hp->n_vocab - 1}, pos[2] = {0, 1}, slot[2] = {0, 0};
    uint8_t want[2] = {0, 1};
    batch_t b = {2, tok, pos, slot, want};
    if (kv_seq_reserve(&kv, 0, 2) == 0) (void)fwd_run(&f, &b, logits, err, sizeof err);
out:
    if (f_ok) fwd_free(&f);
    if (kv_ok) kv_free(&kv);
    free(logits);
    if (pool) k_pool_free(pool);
}

#endif
