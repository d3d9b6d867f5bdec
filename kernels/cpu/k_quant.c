/* k_quant.c - GGML block types: size table and scalar dequantization.
 *
 * Dequantization is the reference path every fast kernel is tested
 * against, so it is written as plainly as the block layouts allow; speed
 * lives in the fused dot products (k_dot.c). Layouts follow GGML's
 * definitions: 32-element blocks for Q4_0..Q8_0, 256-element super-blocks
 * with packed 6-bit sub-block scales for the K types.
 */
#include "../k_quant.h"

#include <math.h>
#include <string.h>

static const k_type_info_t type_table[K_TYPE_MAX] = {
    [K_F32]  = {"F32", 1, 4, 1},
    [K_F16]  = {"F16", 1, 2, 1},
    [K_Q4_0] = {"Q4_0", 32, 18, 1},
    [K_Q4_1] = {"Q4_1", 32, 20, 1},
    [K_Q5_0] = {"Q5_0", 32, 22, 1},
    [K_Q5_1] = {"Q5_1", 32, 24, 1},
    [K_Q8_0] = {"Q8_0", 32, 34, 1},
    [K_Q8_1] = {"Q8_1", 32, 36, 0},
    [K_Q2_K] = {"Q2_K", 256, 84, 0},
    [K_Q3_K] = {"Q3_K", 256, 110, 0},
    [K_Q4_K] = {"Q4_K", 256, 144, 1},
    [K_Q5_K] = {"Q5_K", 256, 176, 1},
    [K_Q6_K] = {"Q6_K", 256, 210, 1},
    [K_Q8_K] = {"Q8_K", 256, 292, 0},
    [K_I8]   = {"I8", 1, 1, 0},
    [K_I16]  = {"I16", 1, 2, 0},
    [K_I32]  = {"I32", 1, 4, 0},
    [K_I64]  = {"I64", 1, 8, 0},
    [K_F64]  = {"F64", 1, 8, 0},
    [K_BF16] = {"BF16", 1, 2, 1},
};

const k_type_info_t *k_type_info(uint32_t type) {
    if (type >= K_TYPE_MAX || type_table[type].name == NULL) return NULL;
    return &type_table[type];
}

size_t k_row_bytes(uint32_t type, size_t n) {
    const k_type_info_t *t = k_type_info(type);
    return t ? n / t->block_elems * t->block_bytes : 0;
}

/* ---- scalar conversions ------------------------------------------------ */

float k_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);          /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);  /* normal */
    } else if (mant == 0) {
        bits = sign;                                       /* +-0 */
    } else {                                               /* subnormal */
        float f = ldexpf((float)mant, -24);
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

uint16_t k_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u)                     /* inf or nan */
        return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
    if (absx >= 0x477ff000u) return sign | 0x7c00; /* overflow -> inf */
    if (absx < 0x38800000u) {                    /* subnormal or zero */
        float a;
        memcpy(&a, &absx, 4);
        return sign | (uint16_t)lrintf(a * 16777216.0f); /* 2^24 */
    }
    /* round to nearest even on the 13 dropped bits */
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

float k_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float rd_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return k_f16_to_f32(h);
}

/* ---- 32-element blocks ------------------------------------------------- */

/* In every 4/5-bit 32-block, byte j holds element j (low nibble) and
 * element j + 16 (high nibble). */
static void dq_q4_0(const uint8_t *b, float *y) {
    float d = rd_f16(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = ((int)(qs[j] & 0xf) - 8) * d;
        y[j + 16] = ((int)(qs[j] >> 4) - 8) * d;
    }
}

static void dq_q4_1(const uint8_t *b, float *y) {
    float d = rd_f16(b), m = rd_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (qs[j] & 0xf) * d + m;
        y[j + 16] = (qs[j] >> 4) * d + m;
    }
}

static void dq_q5(const uint8_t *qh4, const uint8_t *qs, float d, float m,
                  int offset, float *y) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0xf) | (((qh >> j) & 1) << 4);
        int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        y[j] = (lo - offset) * d + m;
        y[j + 16] = (hi - offset) * d + m;
    }
}

static void dq_q5_0(const uint8_t *b, float *y) {
    dq_q5(b + 2, b + 6, rd_f16(b), 0.0f, 16, y);
}

static void dq_q5_1(const uint8_t *b, float *y) {
    dq_q5(b + 4, b + 8, rd_f16(b), rd_f16(b + 2), 0, y);
}

static void dq_q8_0(const uint8_t *b, float *y) {
    float d = rd_f16(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
}

/* ---- 256-element K super-blocks ---------------------------------------- */

/* Q4_K/Q5_K pack eight 6-bit (scale, min) pairs into 12 bytes: the first
 * four pairs in the low 6 bits of bytes 0..7, the last four split between
 * the nibbles of bytes 8..11 and the top 2 bits of bytes 0..7. */
static void k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void dq_q4_k(const uint8_t *b, float *y) {
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int is = 0; is < 8; is += 2, q += 32) {
        int sc, m;
        k_scale_min(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        k_scale_min(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xf) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
    }
}

static void dq_q5_k(const uint8_t *b, float *y) {
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        int sc, m;
        k_scale_min(is, scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        k_scale_min(is + 1, scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * ((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
}

/* Q6_K: 4 low bits in ql, 2 high bits in qh, signed 8-bit scale per 16. */
static void dq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = rd_f16(b + 208);
    for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
    }
}

void k_dequant_row(uint32_t type, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    void (*blk)(const uint8_t *, float *) = NULL;
    switch (type) {
    case K_F32: memcpy(dst, src, n * 4); return;
    case K_F16:
        for (size_t i = 0; i < n; i++) dst[i] = rd_f16(s + 2 * i);
        return;
    case K_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = k_bf16_to_f32(h);
        }
        return;
    case K_Q4_0: blk = dq_q4_0; break;
    case K_Q4_1: blk = dq_q4_1; break;
    case K_Q5_0: blk = dq_q5_0; break;
    case K_Q5_1: blk = dq_q5_1; break;
    case K_Q8_0: blk = dq_q8_0; break;
    case K_Q4_K: blk = dq_q4_k; break;
    case K_Q5_K: blk = dq_q5_k; break;
    case K_Q6_K: blk = dq_q6_k; break;
    default: return; /* callers check k_type_info()->dequant first */
    }
    const k_type_info_t *t = &type_table[type];
    for (size_t i = 0; i < n / t->block_elems; i++)
        blk(s + i * t->block_bytes, dst + i * t->block_elems);
}
