/* k_quant.h - GGML block quantization types: sizes and dequantization.
 *
 * The kernels layer knows block layouts (pure arithmetic on bytes) but
 * nothing about files: the numeric type ids equal GGML's so the GGUF
 * reader can hand them through unchanged. Every type that has a size
 * entry can be parsed and skipped; only the types with `dequant` set can
 * be computed with.
 */
#ifndef K_QUANT_H
#define K_QUANT_H

#include <stddef.h>
#include <stdint.h>

enum k_type {
    K_F32 = 0, K_F16 = 1, K_Q4_0 = 2, K_Q4_1 = 3, K_Q5_0 = 6, K_Q5_1 = 7,
    K_Q8_0 = 8, K_Q8_1 = 9, K_Q2_K = 10, K_Q3_K = 11, K_Q4_K = 12,
    K_Q5_K = 13, K_Q6_K = 14, K_Q8_K = 15, K_I8 = 24, K_I16 = 25,
    K_I32 = 26, K_I64 = 27, K_F64 = 28, K_BF16 = 30,
    K_SQ = 63, /* sqserve's own: k_mat_t.data is a k_sq_t (k_sq.h), not a GGUF type */
    K_TYPE_MAX = 64
};

typedef struct {
    const char *name;      /* GGML's name, e.g. "Q4_1"; NULL if unknown id */
    uint32_t block_elems;  /* elements per block (1 for plain types) */
    uint32_t block_bytes;  /* bytes per block */
    int dequant;           /* 1 if k_dequant_row supports it */
} k_type_info_t;

/* Returns the table entry, or NULL for an id sqserve does not know. */
const k_type_info_t *k_type_info(uint32_t type);

/* Bytes taken by n elements (n a multiple of block_elems). */
size_t k_row_bytes(uint32_t type, size_t n);

/* Dequantize n elements (a multiple of the block size) to float. */
void k_dequant_row(uint32_t type, const void *src, float *dst, size_t n);

float k_f16_to_f32(uint16_t h);
uint16_t k_f32_to_f16(float f);
float k_bf16_to_f32(uint16_t h);

#endif
