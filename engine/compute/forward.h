/* forward.h - the Llama forward pass over a batch of tokens.
 *
 * A batch is a list of (token, position, kv slot) rows, so one call can
 * advance several sequences at once (the scheduler's continuous batching)
 * or push a whole prompt through one sequence: every weight matrix is
 * read once per call, whatever the batch holds. Rows of the same slot
 * must come in increasing position order; a row attends to positions
 * 0..pos of its slot, including rows earlier in the same batch.
 *
 * K/V rows live in the paged cache (kv.h): the caller reserves blocks for
 * every position a batch writes (kv_seq_reserve) and commits them after
 * (kv_seq_commit), which is where prefix blocks become shareable.
 */
#ifndef FORWARD_H
#define FORWARD_H

#include <stdint.h>

#include "kv.h"
#include "../model/model.h"

typedef struct {
    int n;
    const int32_t *tok, *pos, *slot;
    const uint8_t *want_logits; /* NULL: logits for the last row only */
} batch_t;

/* The hook sees (and may rewrite in place, e.g. fake-quantize) each matmul
 * input site of a layer (SITE_*, model/recipe.h) before its matmuls run. */
typedef void (*fwd_hook_fn)(void *ud, int layer, int site, float *x, long n, long dim);

typedef struct fwd_backend fwd_backend_t;

typedef struct fwd {
    const model_t *m;
    kv_cache_t *kv;
    fwd_hook_fn hook;  /* NULL: none */
    void *hook_ud;
    k_pool_t *pool;
    int n_max, n_ctx;
    const fwd_backend_t *be; /* the CPU's, or the device's when the model is on one */
    void *be_state;          /* the backend's own buffers and bookkeeping */
    /* activations, in the backend's memory (device pointers on a GPU) */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *sel, *logits;
    /* NULL, or host memory where fwd_run also delivers the final normed
     * hidden state (the lm head's input, dim floats) of each row that
     * wants logits, in row order: embeddings are pooled from these */
    float *hidden;
    const batch_t *b;        /* the batch being run */
} fwd_t;

/* n_max: rows per batch; n_ctx: longest sequence (positions) it will see. */
int fwd_init(fwd_t *f, const model_t *m, kv_cache_t *kv, k_pool_t *pool, int n_max, int n_ctx);
void fwd_free(fwd_t *f);
/* Says which buffer (rows x n_vocab floats) fwd_run will be given for the
 * logits, so the backend can prepare it: on the GPU it is page-locked and
 * the logits copy runs at about twice the rate (a batch of 128 downloads
 * 65 MB of logits a step on a Llama-3 vocabulary). The buffer must outlive
 * fwd_free, or be released first with fwd_pin_logits(f, NULL, 0). Best
 * effort: 0 when prepared, -1 when not (fwd_run works the same). */
int fwd_pin_logits(fwd_t *f, float *logits, size_t rows);
/* Marks the start (on) and end of work for an external profiler where the
 * backend has the notion (CUDA: cudaProfilerStart/Stop); 0 elsewhere. */
int fwd_profile_range(fwd_t *f, int on);

/* Runs the batch; writes n_vocab logits for each row that wants them, in
 * row order, to `logits`. Returns 0, or -1 with a message in err (bad
 * token id, position or slot; out of memory). */
int fwd_run(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen);

#endif
