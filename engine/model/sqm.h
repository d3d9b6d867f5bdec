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
 *               stay in their GGUF type (embeddings, norms, lm head);
 *               RMSNorm weights that SmoothQuant rewrote are stored F32
 *   data        the quantized layer matrices: SQ tensors as laid out in
 *               sq.h (lo, hi, idx, s_lo, s_hi), uniform ones as codes
 *               packed in 2/4/8-bit fields (sq_pack_codes) + float
 *               scales; activation masks (uint8 per channel)
 *
 * Writing (quant/sqm_write.c) goes to "<out>.tmp.<pid>", is fsync'd and
 * renamed, so an interrupted convert never leaves a partial file under the
 * output name. Loading (sqm.c) maps the file, verifies size and checksum
 * before trusting any offset, checks every SQ tensor's invariants, and
 * builds the model: layer matrices become integer-kernel views where the
 * activation recipe has a kernel (k_sq.h), FP32 rows otherwise. Loading
 * needs no quantizer: the activation recipe and its masks become the
 * model's act_quant_t (recipe.h).
 */
#ifndef SQM_H
#define SQM_H

#include <stdint.h>

#include "model.h"

/* 2: integer codes packed (sq_code_bits: 2, 4 or 8 bits a code), the
 * recorded evaluation names its reference */
#define SQM_VERSION 2
#define SQM_ALIGN 64

typedef struct {
    char magic[4];
    uint32_t version;
    uint64_t file_size, checksum;
    uint64_t json_off, json_len, gguf_off, gguf_len, data_off;
} sqm_header_t; /* 64 bytes */

_Static_assert(sizeof(sqm_header_t) == 64, "the header is 64 bytes");

/* Loads a .sqm into m (called by model_load when the magic matches). */
int sqm_load_model(model_t *m, const char *path, char *err, size_t errlen);

/* The activation quantizer a .sqm carries (NULL when its acts are FP32):
 * install as fwd_t.hook = act_quant_hook with this as hook_ud. */
act_quant_t *sqm_act_state(const model_t *m);

#endif
