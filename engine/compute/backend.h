/* backend.h - the operations the forward pass is written in.
 *
 * forward.c says what a Llama block does, top to bottom, as calls into
 * this table; a backend (backend_cpu.c, backend_cuda.c) says how, on its
 * own memory and with its own copy of the weights. The split follows
 * llama2.c's forward pass with the kernels swapped underneath: one place
 * to add an architecture or a fused step, one table entry per backend to
 * add an operation.
 *
 * Conventions. Activation pointers are the fwd_t's (f->x, f->xb, ...),
 * which fwd_init has the backend allocate in its memory: host floats on
 * the CPU, device floats on a GPU. Weights are named, not passed: (layer,
 * W_*) for the layer matrices and (-1, W_OUT) for the lm head; norms by
 * (layer, NORM_*). Each backend keeps its own view of a weight (GGUF
 * blocks or integer kernels on the CPU, SQ tiles or FP32 on the GPU),
 * chosen when the model was loaded or moved to the device. Positions,
 * slots and tokens of the rows come from the batch given to begin().
 *
 * Operations return 0, or -1 after which fwd_run asks error() for one
 * line. A backend may record the ops between begin() and end() and replay
 * them (CUDA graphs): launch() receives the pass as a function for that.
 */
#ifndef BACKEND_H
#define BACKEND_H

#include "forward.h"

enum { W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN, W_OUT };
enum { NORM_ATTN, NORM_FFN, NORM_OUT, NORM_Q, NORM_K };

typedef int (*fwd_pass_fn)(fwd_t *f, int n, int n_out);

struct fwd_backend {
    const char *name;
    /* buffers for f->n_max rows and f->n_ctx positions; f->x ... set */
    int (*init)(fwd_t *f);
    void (*free)(fwd_t *f);
    /* Takes a checked batch (and where its logits go); returns the number
     * of rows wanting logits, or -1 with err set. */
    int (*begin)(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen);
    /* Runs pass(f, n, n_out), directly or as a recorded graph. */
    int (*launch)(fwd_t *f, int n, int n_out, fwd_pass_fn pass);
    /* Delivers the logits to the pointer given to begin(), and the final
     * normed rows (f->sel, dim floats each) to f->hidden when it is set. */
    int (*end)(fwd_t *f, int n_out);
    /* Optional: the buffer (bytes long) that later begin() calls will be
     * given for the logits, to prepare for (CUDA: page-lock it); NULL
     * releases it. Best effort: 0 or -1, results the same either way. */
    int (*pin_logits)(fwd_t *f, float *logits, size_t bytes);
    /* Optional: marks the start (on) and end of work an external profiler
     * should look at (CUDA: Nsight Compute's --profile-from-start off). */
    int (*profile_range)(fwd_t *f, int on);
    /* One line saying why the last operation failed. */
    void (*error)(fwd_t *f, char *err, size_t errlen);

    /* x[i] = embedding of the batch's token i */
    int (*embed)(fwd_t *f, float *x, int n);
    /* y = RMSNorm(x) * weight (y == x allowed) */
    int (*rmsnorm)(fwd_t *f, float *y, const float *x, int layer, int norm, int n);
    /* the activation recipe (or calibration) at a matmul input site */
    int (*act_quant)(fwd_t *f, int layer, int site, float *x, int n, int dim);
    /* y[j] = x . W_ids[j]^T for count matrices sharing the input x */
    int (*matmul)(fwd_t *f, int layer, const int *ids, float *const *y, int count, const float *x, int n);
    /* y[i] += bias of (layer, W_Q | W_K | W_V) for n rows (arch->qkv_bias) */
    int (*bias)(fwd_t *f, int layer, int id, float *y, int n);
    /* per-head RMSNorm * (layer, NORM_Q | NORM_K) weight, in place, on n
     * rows of n_heads heads (arch->qk_norm) */
    int (*head_norm)(fwd_t *f, float *x, int layer, int norm, int n_heads, int n);
    /* rotary embedding of f->q (hp->n_head heads a row) and f->k
     * (hp->n_head_kv) at the batch's positions, paired as
     * hp->arch->rope_style says (ROPE_NORM or ROPE_NEOX); then the f->k,
     * f->v rows into the cache at the batch's (slot, position). One
     * operation, so that a GPU runs it as one launch. */
    int (*rope_store)(fwd_t *f, int layer, int n);
    /* f->att = causal grouped-query attention of f->q over the cache; with
     * hp->n_swa > 0 a query at position p sees positions p - n_swa + 1 .. p */
    int (*attention)(fwd_t *f, int layer, int n);
    /* y += x . W_id^T for one layer matrix (the residual connections; x
     * is not f->xb, which a backend may use for the product) */
    int (*matmul_add)(fwd_t *f, int layer, int id, float *y, const float *x, int n);
    int (*silu_mul)(fwd_t *f, int layer, float *g, const float *u, long count); /* g = silu(g) * u */
    /* y = the rows of x that want logits, in order (n_out of them) */
    int (*gather)(fwd_t *f, float *y, const float *x, int n_out);
};

extern const fwd_backend_t fwd_backend_cpu;

#endif
