/* finite.c - finding NaN/Inf in weights (see finite.h).
 *
 * Cost matters: this runs over every weight at every load. For the block
 * types that are d*q (+ m) with small integer codes q (Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0) a block holds a non-finite value exactly when one of its
 * FP16 scales is non-finite (|d*q + m| <= 65504*255 + 65504 cannot
 * overflow FP32), so only the scales are read: 2-4 bytes per 32 weights.
 * F32, F16 and BF16 are tested by their exponent bits (integer ops the
 * compiler vectorises). Every other type is dequantized in slices and the
 * floats tested; when a fast path finds a bad block, that block is
 * dequantized too so the index names the exact element.
 */
#include "finite.h"

#include "../../kernels/k_quant.h"

#include <string.h>

#define SLICE 4096 /* elements per dequantized slice: a multiple of every block size */

static int bad32(const float *x) {
    uint32_t w;
    memcpy(&w, x, 4); /* the bits, without breaking aliasing rules */
    return (w & 0x7f800000u) == 0x7f800000u;
}

long finite_first_bad_f32(const float *x, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) { /* branch-free inner loop, then locate */
        int any = 0;
        for (size_t j = 0; j < 64; j++) any |= bad32(x + i + j);
        if (any) break;
    }
    for (; i < n; i++)
        if (bad32(x + i)) return (long)i;
    return -1;
}

static long first_bad_half(const uint8_t *p, size_t n, uint16_t exp_mask) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint16_t any = 0;
        for (size_t j = 0; j < 64; j++) {
            uint16_t h;
            memcpy(&h, p + 2 * (i + j), 2);
            any |= (uint16_t)((h & exp_mask) == exp_mask);
        }
        if (any) break;
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        if ((h & exp_mask) == exp_mask) return (long)i;
    }
    return -1;
}

/* Dequantizes [from, from + n) and returns the index of the first bad
 * value in it (relative to the array), or -1. */
static long scan_dequant(uint32_t type, const k_type_info_t *ti, const uint8_t *p, size_t from, size_t n) {
    float buf[SLICE];
    for (size_t o = from; o < from + n; o += SLICE) {
        size_t m = from + n - o < SLICE ? from + n - o : SLICE;
        k_dequant_row(type, p + o / ti->block_elems * ti->block_bytes, buf, m);
        long b = finite_first_bad_f32(buf, m);
        if (b >= 0) return (long)o + b;
    }
    return -1;
}

long finite_first_bad(uint32_t type, const void *data, size_t n) {
    const k_type_info_t *ti = k_type_info(type);
    if (!ti || !ti->dequant || n == 0) return -1;
    const uint8_t *p = data;
    if (type == K_F32) return finite_first_bad_f32(data, n);
    if (type == K_F16) return first_bad_half(p, n, 0x7c00);
    if (type == K_BF16) return first_bad_half(p, n, 0x7f80);
    /* scale-only fast path: FP16 scales at the start of each block */
    int n_scales = 0;
    switch (type) {
    case K_Q4_0: case K_Q5_0: case K_Q8_0: n_scales = 1; break;
    case K_Q4_1: case K_Q5_1: n_scales = 2; break;
    default: break;
    }
    if (n_scales == 0) return scan_dequant(type, ti, p, 0, n);
    size_t blocks = n / ti->block_elems;
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *blk = p + b * ti->block_bytes;
        for (int s = 0; s < n_scales; s++) {
            uint16_t h;
            memcpy(&h, blk + 2 * s, 2);
            if ((h & 0x7c00) == 0x7c00) {
                long at = scan_dequant(type, ti, p, b * ti->block_elems, ti->block_elems);
                return at >= 0 ? at : (long)(b * ti->block_elems);
            }
        }
    }
    return -1;
}
