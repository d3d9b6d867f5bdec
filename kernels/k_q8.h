/* k_q8.h - GGUF weights times activations quantized to 8 bits per block.
 *
 * How llama.cpp runs a GGUF on a CPU, with sqserve's own code: each
 * activation row is quantized once per matmul, to int8 codes with one
 * float scale per block (per 32 elements for Q4_0, Q4_1 and Q8_0, like
 * GGML's Q8_0/Q8_1; per 256 with sums of every 16 codes for the K types,
 * like Q8_K), and every weight block meets it in an exact integer dot
 * product. Only the per-block scaling is float.
 *
 * The definition every path computes (k_q8_rows_ref is it, in plain C),
 * for a weight row and an activation row with codes q and block scales dx:
 * - Q4_0, Q4_1, Q8_0: per 32-block b, the exact integer i_b = sum of
 *   weight code x activation code (Q4_0's codes taken as q - 8), then in
 *   block order  acc = fmaf(d_w * dx_b, (float)i_b, acc),  and for Q4_1
 *   acc = fmaf(m_w, s_b, acc)  with s_b = dx_b * (sum of the block's codes).
 * - Q4_K: per super-block, P = sum_j sc_j * i_j over its 8 runs of 32 and
 *   M = sum_j m_j * (sum of run j's activation codes), exact integers;
 *   acc = fmaf(d * dx, (float)P, acc), accm = fmaf(dmin * dx, (float)M,
 *   accm); the result is acc - accm.
 * - Q6_K: P = sum_j sc_j * i_j over its 16 runs of 16 (codes taken as
 *   q - 32); acc = fmaf(d * dx, (float)P, acc).
 * Integer sums are exact in any order, and each float operation is the
 * same lane-wise, so the SIMD paths equal the reference bit for bit.
 *
 * The SIMD kernels work on 8 weight rows at a time, int32 lane j of a
 * register being row j. With several activation rows (prefill, batched
 * decode) the 8 rows are built once per call into a panel in a per-thread
 * scratch buffer (codes widened to bytes and transposed, 4 consecutive
 * elements per lane; block scales converted to float, 8 rows side by
 * side): one vpdpbusd (or vpmaddubsw + vpmaddwd) then adds 4 products to
 * each of 8 rows' block sums with a broadcast of 4 activation codes, the
 * float combination runs 8 rows wide, and every activation row reuses the
 * panel, two per pass. With one activation row (decode) the rows are read
 * in place (lanes = 4-element groups of one row), reduced across rows by a
 * transposed vphaddd tree, and the next 8 rows are prefetched as these are
 * read (interleaved row streams defeat the hardware prefetchers). Unsigned weight codes meet signed
 * activations; Q8_0's signed codes go in offset by 128 (the VNNI paths,
 * corrected by 128 x the activation sums) or as |w| with the sign moved
 * onto the activations (AVX2, whose 16-bit pair sums must not saturate).
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

/* One quantized activation row: codes, one scale per block (32 or 256),
 * and the sums the offset terms need. */
typedef struct {
    const int8_t *q;
    const float *d;
    const float *s;     /* blocks of 32: d * (sum of the block's codes) */
    const int32_t *s32; /* sums of every 32 codes */
    const int16_t *s16; /* blocks of 256: sums of every 16 codes */
} k_q8_row_t;

/* The activation block a weight type needs: 32 or 256 (0: unsupported). */
int k_q8_block(uint32_t type);

/* Quantizes x[k] in blocks of blk (32 or 256): d = max|x| / 127 per block,
 * q = nearbyint(x * (127 / max|x|)); writes q[k], d[k/blk], s32[k/32], and
 * s[k/32] (blk 32) or s16[k/16] (blk 256; the other may be NULL). */
void k_q8_quant_row(const float *x, long k, int blk, int8_t *q, float *d, float *s, int32_t *s32, int16_t *s16);

/* y[i * ldy + r] = row r of W . x[i] for r < nr <= 8 and i < m, the rows at
 * w, row_bytes apart: the definition above in plain C, the reference the
 * SIMD paths must equal bit for bit. */
void k_q8_rows_ref(uint32_t type, const void *w, size_t row_bytes, int nr, const k_q8_row_t *x, long m, long k,
                   float *y, long ldy);
/* The same on the current path, with scratch of k_q8_scratch_bytes(type,
 * k) bytes, 64-aligned (the panel). */
void k_q8_rows(uint32_t type, const void *w, size_t row_bytes, int nr, const k_q8_row_t *x, long m, long k,
               float *y, long ldy, void *scratch);
size_t k_q8_scratch_bytes(uint32_t type, long k);

/* y[i] = x . W[i]^T for count <= 4 matrices with int_acts set and equal k:
 * x quantized once per block size, then 8-row panels split across the
 * pool, each built once and applied to all m rows of x. 0, or -1 on out
 * of memory. */
int k_q8_matmul_group(k_pool_t *pool, const k_mat_t *const *w, float *const *y, int count, const float *x,
                      long m);

/* "avx512", "avxvnni", "avx2" or "portable". */
const char *k_q8_path(void);
/* Tests: run as if SQSERVE_ISA were name (never above what the CPU has). */
void k_q8_force_isa(const char *name);

#endif
