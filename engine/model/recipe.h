/* recipe.h - quantization recipes as strings (the convert/eval flags).
 *
 *   weights: fp32 | int8 | int4 | int4:g64 | int4:g64:gptq | sq:8/4:b64:s0.875[:gptq]
 *            then options, in any order: [:act] [:damp<f>] [:oneshot] [:smooth[<alpha>]]
 *            [:iscale] (SQ with 8-bit highs: integer bank scales, quant/sq_quant.h)
 *   acts:    fp32 | a16 | int8 | int4 | sq:8/4:b64:s0.875:static | ...:static-max
 *            | ...:dynamic, static ones optionally [:bank], then [:smooth[<alpha>]]
 * int<bits> alone is per output channel; :g<N> groups N inputs per scale.
 * GPTQ options: ":act" quantizes columns by descending diag(H) (act-order,
 * with the group scales fixed before the pass, so the stored layout is
 * unchanged); ":damp<f>" adds f * mean(diag H) to the diagonal (default
 * 0.01); ":oneshot" gathers every layer's H from the FP32 model at once
 * (the old behaviour, kept for comparison) instead of layer by layer
 * through the already quantized layers. ":smooth" is SmoothQuant's
 * migration (quant/smooth.h) with alpha chosen per site on calibration
 * data, ":smooth0.5" with a fixed alpha; on either recipe it smooths the
 * model once, for the weights and the activation masks alike.
 * "fp32" weights keep the GGUF tensors as loaded; "fp32"/"a16" activations
 * stay FP32 (sqserve computes in FP32, so A16 is represented by FP32).
 */
#ifndef RECIPE_H
#define RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "sq.h"

typedef enum { WQ_NONE, WQ_INT, WQ_SQ } wq_kind_t;
typedef enum { AQ_NONE, AQ_INT, AQ_SQ_STATIC, AQ_SQ_DYNAMIC } aq_kind_t;

typedef struct {
    wq_kind_t kind;
    int bits;      /* WQ_INT */
    long group;    /* WQ_INT: 0 = per channel */
    sq_cfg_t sq;   /* WQ_SQ */
    int gptq;
    int act_order; /* GPTQ: columns by descending diag(H) */
    int oneshot;   /* GPTQ: H from the FP32 model for every layer at once */
    double damp;   /* GPTQ: fraction of mean(diag H) added to the diagonal */
    int smooth;    /* SmoothQuant migration before quantizing */
    double alpha;  /* its migration strength; 0 = chosen per site on calibration data */
    int iscale;    /* WQ_SQ: integer bank scales under a row scale (sq_quant.h) */
} wrecipe_t;

typedef struct {
    aq_kind_t kind;
    int bits;      /* AQ_INT */
    sq_cfg_t sq;   /* AQ_SQ_* */
    int by_max;    /* AQ_SQ_STATIC ":static-max": channels ranked by their largest
                      |A_j| in calibration instead of the paper's |mean(A_j) sum_i W_ij| */
    int bank_lo;   /* AQ_SQ_STATIC ":bank": the low part scaled per token and bank
                      (a float scale per b channels) instead of per token; the
                      fake-quant hook only (CPU) */
    int smooth;    /* as wrecipe_t's */
    double alpha;
} arecipe_t;

int recipe_parse_w(const char *s, wrecipe_t *r, char *err, size_t errlen);
int recipe_parse_a(const char *s, arecipe_t *r, char *err, size_t errlen);
/* Effective bits per element (storage, scales included); 32 for none. */
double recipe_w_bits(const wrecipe_t *r, long k);
double recipe_a_bits(const arecipe_t *r);
/* 0 if SQ activations (static or dynamic) fit both activation widths
 * (dim and ffn_dim, sq_cfg_fit), else -1 with why in err. */
int recipe_check_acts(const arecipe_t *a, long dim, long ffn_dim, char *err, size_t errlen);

/* Matmul input sites of a Llama layer: where activations are quantized. */
enum { SITE_QKV = 0, SITE_O = 1, SITE_UPGATE = 2, SITE_DOWN = 3, N_SITES = 4 };

/* A model's activation quantizer, as data: the recipe and, for static SQ
 * activations, the high channels of every site of every layer (chosen by
 * calibration, or read from a .sqm). The forward pass runs it through
 * act_quant_hook (compute/act_quant.h). */
typedef struct {
    arecipe_t a;
    int n_layer;
    long dim[N_SITES];
    uint8_t *hi_mask[N_SITES]; /* [layer] dim: static SQ high channels */
    int kernel_acts;           /* every layer matmul runs on an integer kernel that
                                  quantizes its own input exactly as the hook would:
                                  the hook then has nothing to do */
} act_quant_t;

/* Frees the masks and zeroes *q. */
void act_quant_release(act_quant_t *q);

#endif
