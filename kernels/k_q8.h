/* k_q8.h - GGUF weights times activations quantized to 8 bits per block.
 *
 * How llama.cpp runs a GGUF on a CPU, with sqserve's own code: each
 * activation row is quantized once per matmul, to int8 codes with one
 * float scale per block (per 32 elements for Q4_0, Q4_1 and Q8_0, like
 * GGML's Q8_0/Q8_1; per 256 with sums of every 16 codes for the K types,
 * like Q8_K), and every weight block meets it in an exact integer dot
 * product. Only the per-block scaling is float.
 *
 * The definition every path computes (k_q8_dot_ref is it, in plain C):
 * for a weight row and an activation row, lane l (0..7) of a block is the
 * integer sum of the products at elements 4l..4l+3 of each 32-element run
 * (for the K types, each run's sum first times its sub-block scale, summed
 * over the super-block's runs). Then, block by block in order,
 *     acc[l] = fmaf(d_w * d_x, (float)lane[l], acc[l])
 * and the result is ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)) plus the
 * offset term (Q4_1's m_w * d_x * sum(codes), Q4_K's -dmin * d_x * sum
 * of min-scaled code sums), itself one fmaf per block in order. The lanes
 * are what one vpmaddubsw + vpmaddwd, or one vpdpbusd, yields from 32
 * bytes, so the SIMD paths are bit-identical to the reference, not merely
 * close.
 *
 * Paths (run-time cpuid; SQSERVE_ISA=portable|avx2|avxvnni|avx512 can only
 * lower the level): portable C; AVX2 maddubs/madd; AVX-VNNI (VEX
 * vpdpbusd); AVX-512 VNNI (EVEX vpdpbusd on ymm). All run 256-bit.
 *
 * Accuracy: the activations lose what 8 bits per block lose (measured in
 * docs/accuracy.md); k_mat_t.int_acts = 0 keeps the FP32-activation
 * kernels (k_ops.c), the exact reference.
 */
#ifndef K_Q8_H
#define K_Q8_H

#include <stdint.h>

#include "k_ops.h"

/* 1 when this GGML type has integer kernels here (Q4_0, Q4_1, Q8_0, Q4_K,
 * Q6_K) and rows of k elements fit them (k a multiple of the block). */
int k_q8_supports(uint32_t type, long k);

/* One quantized activation row. Blocks of 32 (Q8_0-style): d[k/32] and
 * s[k/32] = d * (sum of the block's codes); blocks of 256 (Q8_K-style):
 * d[k/256] and bs[k/16], the sums of every 16 codes. */
typedef struct {
    const int8_t *q;
    const float *d, *s;
    const int16_t *bs;
} k_q8_row_t;

/* The activation block a weight type needs: 32 or 256 (0: unsupported). */
int k_q8_block(uint32_t type);

/* Quantizes x[k] in blocks of blk (32 or 256): d = max|x| / 127 per block,
 * q = nearbyint(x * (127 / max|x|)); writes q[k], d[k/blk] and s[k/32]
 * (blk 32) or bs[k/16] (blk 256). */
void k_q8_quant_row(const float *x, long k, int blk, int8_t *q, float *d, float *s, int16_t *bs);

/* out[i] = weight row . x[i] for i < nx (1..4), the definition above in
 * plain C: the reference the SIMD paths must equal bit for bit. */
void k_q8_dot_ref(uint32_t type, const void *row, const k_q8_row_t *x, int nx, long k, float *out);
/* The same on the current path (tests compare the two). */
void k_q8_dot(uint32_t type, const void *row, const k_q8_row_t *x, int nx, long k, float *out);

/* y[i] = x . W[i]^T for count <= 4 matrices with int_acts set and equal k:
 * x quantized once per block size, rows of W split across the pool, up to
 * 4 x rows per pass over a weight row. 0, or -1 on out of memory. */
int k_q8_matmul_group(k_pool_t *pool, const k_mat_t *const *w, float *const *y, int count, const float *x,
                      long m);

/* "avx512", "avxvnni", "avx2" or "portable". */
const char *k_q8_path(void);
/* Tests: run as if SQSERVE_ISA were name (never above what the CPU has). */
void k_q8_force_isa(const char *name);

#endif
