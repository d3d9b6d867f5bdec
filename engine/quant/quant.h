/* quant.h - quantizing a loaded model by recipe, with calibration.
 *
 * calib_*: runs the FP32 model over calibration tokens and gathers, for
 * every matmul input site of every layer, H = sum x x^T (for GPTQ and the
 * Hessian-aware importance) and the per-channel mean of x (for the static
 * SQ activation importance |mean(A_j) * sum_i W_ij|, Algorithm 2).
 *
 * quant_apply: replaces each layer's weights by the dequantized values of
 * the recipe's integer codes (SQ-format tensors are built and validated on
 * the way) and prepares the activation quantizer, which the forward pass
 * runs on every matmul input through its hook. The integer kernels
 * compute exactly these products (integer arithmetic is exact; only the
 * float scaling order differs), so accuracy measured this way is the
 * accuracy of the deployed format.
 *
 * GPTQ is sequential (calib.h): layer l's Hessians come from the inputs
 * the already quantized layers 0..l-1 produce, as in the GPTQ paper;
 * ":oneshot" keeps the old shortcut (every H from the FP32 model at once)
 * for comparison. ":smooth" migrates activation outliers into the weights
 * first (smooth.h). The lm head and embeddings keep their GGUF types.
 */
#ifndef QUANT_H
#define QUANT_H

#include "../compute/forward.h"
#include "../model/recipe.h"

/* Progress of a long phase: done of total steps (windows, sequences,
 * layers), called after each step when non-NULL. */
typedef void (*quant_progress_fn)(void *ud, int done, int total);

typedef struct {
    int n_layer;
    long dim[N_SITES];
    float *H[N_SITES];       /* [layer] dim x dim, NULL when not gathered */
    double *sum[N_SITES];    /* [layer] dim */
    float *amax[N_SITES];    /* [layer] dim: largest |x| seen */
    long n_tokens;
    /* the tokens themselves, for the sequential passes of quant_apply */
    int32_t *ids;
    long n_ids;
    int window;
    k_pool_t *pool;
} calib_t;

/* Gathers the FP32 model's channel means and maxima and keeps a copy of
 * the tokens (and of pool and window) for quant_apply's sequential passes;
 * want_H also gathers every layer's H at once, which only one-shot GPTQ
 * (":gptq:oneshot") reads. */
int calib_run(const model_t *m, k_pool_t *pool, const int32_t *ids, long n_ids, int window,
              int want_H, calib_t *c, quant_progress_fn progress, void *ud, char *err, size_t errlen);
void calib_free(calib_t *c);
/* Tokens the model generates itself from short seeds (the --calib self
 * default): n sequences of len tokens, fixed seed. *out is malloc'd. */
int calib_self_text(const model_t *m, k_pool_t *pool, int n_seqs, int len, int32_t **out,
                    long *n_out, quant_progress_fn progress, void *ud, char *err, size_t errlen);

/* A layer matrix as integer codes (kept for writing a .sqm). */
typedef struct {
    char name[48];
    wq_kind_t kind;
    long n, k;
    sq_tensor_t sq;        /* WQ_SQ */
    int bits;              /* WQ_INT */
    long group;
    int8_t *codes;         /* WQ_INT: n*k */
    float *scales;         /* WQ_INT: n*(k/group) */
} qtensor_t;

typedef struct {
    act_quant_t acts;      /* the activation quantizer (compute/act_quant.h runs it) */
    wrecipe_t w;
    qtensor_t *qt;         /* when quant_apply was asked to keep codes */
    int n_qt;
    float **owned;         /* dequantized weight buffers */
    int n_owned;
    double w_bits;         /* average effective bits per weight */
    /* ":smooth": the alpha chosen per site (summed over layers, for the
       mean), and how many layer sites kept s = 1 */
    int smoothed;
    double alpha_sum[N_SITES];
    int n_unsmoothed[N_SITES];
} quant_state_t;

/* Quantizes m's layer weights in place (m then owns F32 copies through
 * qs) and prepares activation quantization. c may be NULL for RTN
 * weights without static SQ activations. */
int quant_apply(model_t *m, const calib_t *c, const wrecipe_t *w, const arecipe_t *a, int keep_codes,
                quant_state_t *qs, void (*progress)(void *ud, int done, int total), void *ud,
                char *err, size_t errlen);
void quant_free(quant_state_t *qs);
#endif
