/* forward.h - the Llama forward pass over a batch of tokens.
 *
 * A batch is a list of (token, position, kv slot) rows, so one call can
 * advance several sequences at once (the scheduler's continuous batching)
 * or push a whole prompt through one sequence: every weight matrix is
 * read once per call, whatever the batch holds. Rows of the same slot
 * must come in increasing position order; a row attends to positions
 * 0..pos of its slot, including rows earlier in the same batch.
 *
 * The KV cache here is contiguous per slot ([layer][slot][pos][kv_dim],
 * FP32): simple and exact.
 */
#ifndef FORWARD_H
#define FORWARD_H

#include <stdint.h>

#include "model.h"

typedef struct {
    int n_layer, n_slot, n_ctx, kv_dim;
    float *k, *v;
} kv_cache_t;

int kv_init(kv_cache_t *kv, const hparams_t *hp, int n_slot, int n_ctx);
void kv_free(kv_cache_t *kv);

typedef struct {
    int n;
    const int32_t *tok, *pos, *slot;
    const uint8_t *want_logits; /* NULL: logits for the last row only */
} batch_t;

typedef struct {
    const model_t *m;
    kv_cache_t *kv;
    k_pool_t *pool;
    int n_max;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *sel;
    float *scores; /* per thread, n_ctx each */
} fwd_t;

int fwd_init(fwd_t *f, const model_t *m, kv_cache_t *kv, k_pool_t *pool, int n_max);
void fwd_free(fwd_t *f);

/* Runs the batch; writes n_vocab logits for each row that wants them, in
 * row order, to `logits`. Returns 0, or -1 with a message in err (bad
 * token id, position or slot; out of memory). */
int fwd_run(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen);

#endif
