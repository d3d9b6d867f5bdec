/* sq.c - SQ-format tensors and the SQ / uniform quantizers (see sq.h). */
#include "sq.h"

#include "../../kernels/cpu/k_sq_codes.h"
#include "../../kernels/k_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sq_qmax(int bits) { return (1 << (bits - 1)) - 1; } /* symmetric: -qmax..qmax */
static int lo_storage_bits(int h_low) { return h_low <= 2 ? 2 : 4; }

int sq_highs_per_bank(const sq_cfg_t *c) { return (int)lround((1.0 - c->s) * c->b); }

static int group_of(const sq_cfg_t *c) { return c->b > 64 ? c->b : 64; }

const char *sq_cfg_check(const sq_cfg_t *c, long k) {
    if (!((c->h_high == 8 && (c->h_low == 4 || c->h_low == 3 || c->h_low == 2)) ||
          (c->h_high == 4 && c->h_low == 2)))
        return "precision pair must be 8/4, 8/3, 8/2 or 4/2";
    if (c->b < 4 || c->b > 128 || (c->b & (c->b - 1)))
        return "bank size must be a power of two in [4, 128]";
    if (!(c->s >= 0.5 && c->s < 1)) return "sparsity must be in [0.5, 1)";
    int h = sq_highs_per_bank(c);
    if (h < 1 || fabs((1.0 - c->s) * c->b - h) > 1e-9)
        return "(1 - s) * b must be a whole number of at least 1";
    if (k > 0 && k % group_of(c) != 0) return "the row length is not a multiple of the scale group";
    return NULL;
}

const char *sq_cfg_fit(const sq_cfg_t *c, long k, int grouped, sq_cfg_t *out) {
    const char *why = sq_cfg_check(c, 0);
    if (why) return why;
    for (sq_cfg_t t = *c; t.b >= 4; t.b /= 2)
        if (!sq_cfg_check(&t, 0) && k % (grouped ? group_of(&t) : t.b) == 0) {
            *out = t;
            return NULL;
        }
    return grouped ? "the row length is not a multiple of the scale group of any bank that keeps (1-s)*b whole"
                   : "the width is not a multiple of any bank that keeps (1-s)*b whole";
}

static int hi_storage_bits(int h_high) { return h_high <= 4 ? 4 : 8; }

double sq_bits_per_element(const sq_cfg_t *c) { /* the stored (compact) layout, half scales */
    return lo_storage_bits(c->h_low) + (1.0 - c->s) * hi_storage_bits(c->h_high) + 2.0 * 16 / group_of(c);
}

double sq_bits_in_memory(const sq_cfg_t *c) { /* the explicit layout: int8 highs, positions, float scales */
    return lo_storage_bits(c->h_low) + (1.0 - c->s) * (8 + 8) + 2.0 * 32 / group_of(c);
}

int sq_alloc(sq_tensor_t *t, const sq_cfg_t *c, long n, long k) {
    memset(t, 0, sizeof *t);
    t->cfg = *c;
    t->n = n;
    t->k = k;
    t->h = sq_highs_per_bank(c);
    t->G = group_of(c);
    size_t banks = (size_t)(n * (k / c->b)), groups = (size_t)(n * (k / t->G));
    t->lo = calloc((size_t)(n * k) * (size_t)lo_storage_bits(c->h_low) / 8, 1);
    t->hi = calloc(banks * (size_t)t->h, 1);
    t->idx = calloc(banks * (size_t)t->h, 1);
    t->s_lo = calloc(groups, sizeof(float));
    t->s_hi = calloc(groups, sizeof(float));
    if (!t->lo || !t->hi || !t->idx || !t->s_lo || !t->s_hi) {
        sq_free(t);
        return -1;
    }
    return 0;
}

void sq_free(sq_tensor_t *t) {
    free(t->lo); free(t->hi); free(t->idx); free(t->s_lo); free(t->s_hi);
    memset(t, 0, sizeof *t);
}

/* the kernels read the same storage through the same function */
static int get_lo(const sq_tensor_t *t, long r, long j) {
    return k_sq_lo_code(t->lo, t->cfg.h_low, (size_t)(r * t->k + j));
}

void sq_set_lo(sq_tensor_t *t, long r, long j, int v) {
    size_t e = (size_t)(r * t->k + j);
    if (lo_storage_bits(t->cfg.h_low) == 4) {
        int sh = 4 * (int)(e % 2);
        t->lo[e / 2] = (uint8_t)((t->lo[e / 2] & ~(15 << sh)) | ((v & 15) << sh));
    } else {
        int sh = 2 * (int)(e % 4);
        t->lo[e / 4] = (uint8_t)((t->lo[e / 4] & ~(3 << sh)) | ((v & 3) << sh));
    }
}

void sq_dequant_row(const sq_tensor_t *t, long r, float *out) {
    long nb = t->k / t->cfg.b, ng = t->k / t->G;
    for (long j = 0; j < t->k; j++) out[j] = t->s_lo[r * ng + j / t->G] * (float)get_lo(t, r, j);
    for (long bk = 0; bk < nb; bk++)
        for (int i = 0; i < t->h; i++) {
            size_t e = (size_t)((r * nb + bk) * t->h + i);
            long j = bk * t->cfg.b + t->idx[e];
            out[j] += t->s_hi[r * ng + j / t->G] * (float)t->hi[e];
        }
}

/* tab[byte] = the largest |low code| among the byte's fields (a byte holds
 * whole fields, and a row whole bytes: k is a multiple of 64), so the
 * range check reads a row a byte at a time (a load of a 70B model checks
 * 60 G codes) */
static void lo_abs_max_table(int lob, uint8_t tab[256]) {
    for (int v = 0; v < 256; v++) {
        int m = 0;
        for (int f = 0; f < 8 / lob; f++) {
            const int c = k_sq_lo_code((const uint8_t *)&(uint8_t){(uint8_t)v}, lob == 4 ? 4 : 2, (size_t)f);
            m = abs(c) > m ? abs(c) : m;
        }
        tab[v] = (uint8_t)m;
    }
}

const char *sq_validate(const sq_tensor_t *t) {
    if (sq_cfg_check(&t->cfg, t->k)) return sq_cfg_check(&t->cfg, t->k);
    long nb = t->k / t->cfg.b, ng = t->k / t->G;
    int ql = sq_qmax(t->cfg.h_low), qh = sq_qmax(t->cfg.h_high), lob = lo_storage_bits(t->cfg.h_low);
    uint8_t amax[256];
    lo_abs_max_table(lob, amax);
    const size_t row_bytes = (size_t)t->k * (size_t)lob / 8;
    for (long r = 0; r < t->n; r++) {
        for (long g = 0; g < ng; g++)
            if (!(t->s_lo[r * ng + g] >= 0) || !(t->s_hi[r * ng + g] >= 0) ||
                !isfinite(t->s_lo[r * ng + g]) || !isfinite(t->s_hi[r * ng + g]))
                return "a scale is negative or not finite";
        const uint8_t *row = t->lo + (size_t)r * row_bytes;
        for (size_t i = 0; i < row_bytes; i++)
            if (amax[row[i]] > ql) return "a low code is out of range";
        for (long bk = 0; bk < nb; bk++) {
            const uint8_t *ix = t->idx + (r * nb + bk) * t->h;
            const int8_t *hv = t->hi + (r * nb + bk) * t->h;
            for (int i = 0; i < t->h; i++) {
                if (ix[i] >= t->cfg.b) return "a high position is outside its bank";
                if (i > 0 && ix[i] <= ix[i - 1]) return "high positions are not sorted and distinct";
                if (abs(hv[i]) > qh) return "a high code is out of range";
                if (get_lo(t, r, bk * t->cfg.b + ix[i]) != 0) return "a high position has a nonzero low code";
            }
        }
    }
    return NULL;
}


int sq_code_bits(int bits) { return bits <= 2 ? 2 : bits <= 4 ? 4 : 8; }

void sq_pack_codes(const int8_t *codes, int code_bits, size_t n, uint8_t *out) {
    int per = 8 / code_bits;
    unsigned mask = (1u << code_bits) - 1;
    for (size_t i = 0; i < n / (size_t)per; i++) {
        unsigned b = 0;
        for (int j = 0; j < per; j++) b |= ((unsigned)(uint8_t)codes[i * per + j] & mask) << (j * code_bits);
        out[i] = (uint8_t)b;
    }
}

void sq_unpack_codes(const uint8_t *in, int code_bits, size_t n, int8_t *codes) {
    int per = 8 / code_bits, shift = 8 - code_bits;
    for (size_t i = 0; i < n; i++) {
        unsigned field = (in[i / (size_t)per] >> ((int)(i % (size_t)per) * code_bits)) & ((1u << code_bits) - 1);
        codes[i] = (int8_t)((int8_t)(uint8_t)(field << shift) >> shift); /* sign-extend the field */
    }
}

/* ---- the stored (compact) layout -------------------------------------------------- */

/* The low-code field value that marks a high position: the most negative
 * value of the field, which symmetric quantization (-qmax..qmax) never
 * produces. */
static int marker(const sq_cfg_t *c) { return -(1 << (lo_storage_bits(c->h_low) - 1)); }

float sq_scale_up_to_half(float s) {
    if (!(s > 0)) return s;
    float h = k_f16_to_f32(k_f32_to_f16(s));
    if (h >= s) return h;
    uint16_t bits = k_f32_to_f16(s); /* rounded down: the next half up */
    return k_f16_to_f32((uint16_t)(bits + 1));
}

sq_file_sizes_t sq_file_sizes(const sq_cfg_t *c, long n, long k) {
    sq_file_sizes_t z;
    int h = sq_highs_per_bank(c);
    z.codes = (size_t)(n * k) * (size_t)lo_storage_bits(c->h_low) / 8;
    z.hi = ((size_t)(n * (k / c->b)) * (size_t)h * (size_t)hi_storage_bits(c->h_high) + 7) / 8;
    z.scales = (size_t)(n * (k / group_of(c))) * 2; /* each of s_lo, s_hi, as halves */
    return z;
}

/* The codes array is the explicit layout's lo with markers in place of the
 * zeros under the highs (both pack fields lowest bits first), so both ways
 * are a copy plus one pass over each bank's bytes. */
static void hi_pack(const int8_t *src, size_t n, int hib, uint8_t *dst) {
    if (hib == 8) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i += 2) /* an odd count leaves the last high nibble 0 */
        dst[i / 2] = (uint8_t)(((unsigned)src[i] & 15) | (i + 1 < n ? ((unsigned)src[i + 1] & 15) << 4 : 0));
}

static void hi_unpack(const uint8_t *src, size_t n, int hib, int8_t *dst) {
    if (hib == 8) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = (int8_t)((int8_t)(uint8_t)((src[i / 2] >> (4 * (i % 2))) << 4) >> 4);
}

int sq_encode(const sq_tensor_t *t, uint8_t *codes, uint8_t *hi, uint16_t *s_lo, uint16_t *s_hi) {
    long ng = t->n * (t->k / t->G);
    for (long g = 0; g < ng; g++)
        if (k_f16_to_f32(s_lo[g] = k_f32_to_f16(t->s_lo[g])) != t->s_lo[g] ||
            k_f16_to_f32(s_hi[g] = k_f32_to_f16(t->s_hi[g])) != t->s_hi[g])
            return -1;
    int lob = lo_storage_bits(t->cfg.h_low), per = 8 / lob;
    unsigned mk = (unsigned)marker(&t->cfg) & ((1u << lob) - 1);
    size_t nb = (size_t)(t->n * (t->k / t->cfg.b)), h = (size_t)t->h;
    memcpy(codes, t->lo, (size_t)(t->n * t->k) / (size_t)per);
    for (size_t bank = 0; bank < nb; bank++)
        for (size_t q = 0; q < h; q++) { /* the low field under a high holds 0: set the marker */
            size_t at = bank * (size_t)t->cfg.b + t->idx[bank * h + q];
            codes[at / (size_t)per] |= (uint8_t)(mk << (at % (size_t)per * (size_t)lob));
        }
    hi_pack(t->hi, nb * h, hi_storage_bits(t->cfg.h_high), hi);
    return 0;
}

const char *sq_decode(sq_tensor_t *t, const uint8_t *codes, const uint8_t *hi, const uint16_t *s_lo,
                      const uint16_t *s_hi) {
    int lob = lo_storage_bits(t->cfg.h_low), per = 8 / lob, b = t->cfg.b;
    unsigned fmask = (1u << lob) - 1, mk = (unsigned)marker(&t->cfg) & fmask;
    size_t nb = (size_t)(t->n * (t->k / b)), h = (size_t)t->h, bank_bytes = (size_t)(b / per);
    long ng = t->n * (t->k / t->G);
    for (long g = 0; g < ng; g++) {
        t->s_lo[g] = k_f16_to_f32(s_lo[g]);
        t->s_hi[g] = k_f16_to_f32(s_hi[g]);
    }
    memcpy(t->lo, codes, nb * bank_bytes);
    /* per byte value: which fields hold the marker (a bit each), and the
     * byte with those fields 0 (the explicit layout holds 0 there); a bank
     * is then read without a branch per byte (a quarter of the bytes hold
     * a marker at 8/4 b64 s0.875, in no pattern a branch could learn) */
    uint8_t marks[256], cleared[256];
    for (int v = 0; v < 256; v++) {
        marks[v] = 0, cleared[v] = (uint8_t)v;
        for (int f = 0; f < per; f++)
            if ((((unsigned)v >> (f * lob)) & fmask) == mk) {
                marks[v] |= (uint8_t)(1u << f);
                cleared[v] &= (uint8_t)~(fmask << (f * lob));
            }
    }
    for (size_t bank = 0; bank < nb; bank++) {
        uint8_t *p = t->lo + bank * bank_bytes, pos[128 + 4];
        size_t count = 0;
        for (size_t i = 0; i < bank_bytes; i++) {
            const unsigned mb = marks[p[i]];
            for (int f = 0; f < per; f++) { /* every field written, the count advanced at markers */
                pos[count] = (uint8_t)(i * (size_t)per + (size_t)f);
                count += mb >> f & 1;
            }
            p[i] = cleared[p[i]];
        }
        if (count > h) return "a bank has more high positions than the configuration allows";
        if (count < h) return "a bank has fewer high positions than the configuration requires";
        memcpy(t->idx + bank * h, pos, h);
    }
    hi_unpack(hi, nb * h, hi_storage_bits(t->cfg.h_high), t->hi);
    return NULL;
}
