/* sqm.h - the .sqm model file: everything inference needs, quantized.
 *
 * Layout (little-endian, every section 64-byte aligned):
 *   [0, 64)     header: "SQM1", version, file size, XXH3-64 checksum of
 *               every byte after the header, offsets of the sections
 *   manifest    JSON: format version, source, recipe (weights, acts),
 *               calibration summary, the tensor table (kind, shape, SQ
 *               configuration, offset/length of each array) and the
 *               static activation masks
 *   gguf        an embedded GGUF with the source's metadata verbatim
 *               (config, tokenizer, chat template) and the tensors that
 *               stay in their GGUF type (embeddings, norms, lm head)
 *   data        the quantized layer matrices: SQ tensors as laid out in
 *               sq.h (lo, hi, idx, s_lo, s_hi), uniform ones as int8
 *               codes + float scales; activation masks (uint8 per channel)
 *
 * Writing goes to "<out>.tmp.<pid>", is fsync'd and renamed, so an
 * interrupted convert never leaves a partial file under the output name.
 * Loading maps the file, verifies size and checksum before trusting any
 * offset, checks every SQ tensor's invariants, and builds the model. Until
 * the integer SQ kernels land, layer matrices are expanded to FP32 at load.
 */
#ifndef SQM_H
#define SQM_H

#include "../quant/quant.h"

typedef struct {
    const char *weights, *acts;   /* recipe strings as given */
    const char *calib;            /* "self", a file name, or "none" */
    long calib_tokens;
    const char *source;           /* the input file name */
    int have_eval;                /* measured against FP32 at convert time */
    double eval_ppl, eval_ppl_ref, eval_kl, eval_top1;
    long eval_tokens;
} sqm_meta_t;

/* Writes m (quantized by quant_apply with keep_codes) to path atomically. */
int sqm_write(const char *path, const model_t *m, const quant_state_t *qs, const sqm_meta_t *meta,
              char *err, size_t errlen);

/* Loads a .sqm into m (called by model_load when the magic matches). */
int sqm_load_model(model_t *m, const char *path, char *err, size_t errlen);

/* The activation quantizer a .sqm carries (NULL when its acts are FP32):
 * install as fwd_t.hook = quant_act_hook with this as hook_ud. */
quant_state_t *sqm_act_state(const model_t *m);

#endif
