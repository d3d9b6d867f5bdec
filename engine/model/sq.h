/* sq.h - the SQ-format weight tensor and its quantizers.
 *
 * SQ(W) for W[n][k]: the reduction dimension k is cut into banks of b
 * elements; in every bank of every row exactly h = (1-s)*b elements are
 * "high" (h_high-bit integers) and the rest "low" (h_low-bit integers).
 *
 * Memory layout (per row, kernel-first):
 *   lo    [k]          low codes for ALL positions, packed (h_low bits each,
 *                      two's complement), 0 at high positions. Dense, so
 *                      the low product is a plain int4/int2 dot product.
 *   hi    [k/b][h]     high codes (int8 storage; h_high <= 8), bank order
 *   idx   [k/b][h]     in-bank positions of the high codes (uint8, sorted)
 *   s_lo  [k/G]        symmetric scales of the low part, per group of G
 *   s_hi  [k/G]        symmetric scales of the high part, per group of G
 * with G = max(b, 64) so a scale group always holds whole banks.
 *
 *   w[r][j] = s_lo[r][j/G] * lo[r][j] + (j high ? s_hi[r][j/G] * hi : 0)
 *
 * Why explicit positions in memory rather than a reserved code in the
 * low part (the paper's vmask, which the file uses): a fixed count per
 * bank gives fixed strides, so a kernel finds bank i's highs at hi + i*h
 * without scanning the bank's codes.
 *
 * This explicit layout is what the kernels read, in memory:
 *   h_low + (1-s)*(h_high_storage + 8) + 2*32/G bits per element
 * e.g. 8/4 b64 s0.875: 4 + 0.125*16 + 1 = 7.0. Files store the compact
 * layout below instead (5.5 bits for 8/4 b64 s0.875). (The paper's nominal
 * (1-s)*h_high + s*h_low = 4.5 for 8/4 s0.875 leaves out scales and the
 * dense low part's slots under the highs.)
 */
#ifndef SQ_H
#define SQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int h_high, h_low;   /* bits: 8/4, 8/3, 8/2, 4/2 */
    int b;               /* bank size: 4..128, power of two */
    double s;            /* sparsity of the high part: h = (1-s)*b per bank */
} sq_cfg_t;

typedef struct {
    sq_cfg_t cfg;
    long n, k;
    int h, G;            /* highs per bank, scale group */
    uint8_t *lo;         /* n * k * h_low / 8 bytes */
    int8_t *hi;          /* n * (k/b) * h */
    uint8_t *idx;        /* n * (k/b) * h */
    float *s_lo, *s_hi;  /* n * (k/G) each */
} sq_tensor_t;

/* Checks a configuration; NULL if valid, else why not. */
const char *sq_cfg_check(const sq_cfg_t *c, long k);
/* The configuration a row of k elements gets: c itself when valid for k,
 * else the largest smaller power-of-two bank (same precisions and s) that
 * divides the row, so b128 still applies to a model whose width is 576 =
 * 4.5 x 128 (its 1536-wide rows keep b128, the 576-wide ones get b64).
 * llama.cpp does the same when a row is not a whole number of its block
 * type; refusing instead would rule b128 out for such models entirely, and
 * each tensor records its own b, so nothing is hidden. grouped: the row
 * must also hold whole scale groups (weights; activations have one scale
 * per token and class, so only whole banks). NULL and *out set on success,
 * else why no bank fits (or why c itself is invalid). */
const char *sq_cfg_fit(const sq_cfg_t *c, long k, int grouped, sq_cfg_t *out);
int sq_highs_per_bank(const sq_cfg_t *c);
/* Bits per element as stored in a .sqm (the compact layout below, half
 * scales), and as the explicit layout above takes in memory. */
double sq_bits_per_element(const sq_cfg_t *c);
double sq_bits_in_memory(const sq_cfg_t *c);

/* The stored (compact) layout, the paper's implicit mask ("vmask"):
 *   codes  [n][k]        the low-code field of EVERY position, h_low
 *                        storage bits, two's complement; a high position
 *                        holds the field's most negative value (-8 in a
 *                        4-bit field, -2 in a 2-bit one), which symmetric
 *                        quantization never emits, so no level is lost
 *   hi     [n][k/b][h]   the high codes in position order (8 bits; 4 for
 *                        h_high 4, two per byte)
 *   s_lo, s_hi [n][k/G]  IEEE half scales (the quantizer rounds scales up
 *                        to halves, so nothing is rounded here)
 * 8/4 b64 s0.875: 4 + 0.125*8 + 2*16/64 = 5.5 bits per weight (the
 * explicit layout: 7.0). Loading decodes it into the explicit layout the
 * kernels read; positions follow from counting markers, so a bank with
 * any other number of them is refused. */
typedef struct { size_t codes, hi, scales; } sq_file_sizes_t; /* bytes; scales: each of s_lo, s_hi */
sq_file_sizes_t sq_file_sizes(const sq_cfg_t *c, long n, long k);
/* -1 if a scale is not exactly a half (the quantizer rounds them). */
int sq_encode(const sq_tensor_t *t, uint8_t *codes, uint8_t *hi, uint16_t *s_lo, uint16_t *s_hi);
/* Into an sq_alloc'd t of the same shape; NULL, or why the input is not
 * a valid compact tensor. */
const char *sq_decode(sq_tensor_t *t, const uint8_t *codes, const uint8_t *hi, const uint16_t *s_lo,
                      const uint16_t *s_hi);
/* The smallest half-precision value >= s (s >= 0, within half's range). */
float sq_scale_up_to_half(float s);

int sq_alloc(sq_tensor_t *t, const sq_cfg_t *c, long n, long k);
void sq_free(sq_tensor_t *t);
/* Format invariants: exactly h sorted, distinct, in-range positions per
 * bank, low code 0 at every high position, codes within their ranges,
 * finite non-negative scales. NULL if all hold. */
const char *sq_validate(const sq_tensor_t *t);

/* Row r back to floats. */
void sq_dequant_row(const sq_tensor_t *t, long r, float *out);

/* Bits a stored integer code of `bits` bits takes: 2, 4 or 8 (fields
 * that tile a byte, so rows stay byte-addressable; 3-bit codes take 4). */
int sq_code_bits(int bits);
/* n signed codes <-> n * code_bits / 8 bytes, two's complement fields,
 * lowest bits first (n a multiple of 8 / code_bits). */
void sq_pack_codes(const int8_t *codes, int code_bits, size_t n, uint8_t *out);
void sq_unpack_codes(const uint8_t *in, int code_bits, size_t n, int8_t *codes);

/* Largest code of a symmetric signed integer of `bits` bits: codes are
 * -qmax..qmax. */
int sq_qmax(int bits);
/* Stores low code v at (r, j) (the quantizers write the format through it). */
void sq_set_lo(sq_tensor_t *t, long r, long j, int v);

#endif
