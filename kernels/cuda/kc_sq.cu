/* kc_sq.cu - SQ-format weights on the GPU: upload (repacking into the
 * layout of kc_sq.cuh), random matrices for tests and benchmarks, and the
 * host API around them (kc.h, "SQ-format weights"; the host format and its
 * contract are in k_sq.h; the matmul is kc_sq_mm.cu). */
#include "kc_sq.cuh"
#include "../cpu/k_sq_codes.h"

#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills the geometry; NULL if the shape is supported, else why not. */
static const char *geo_init(kc_sq *w, long n, long k, int h_low, int b, int h, int s16, int compact_ok) {
    if (h_low != 2 && h_low != 3 && h_low != 4) return "h_low must be 2, 3 or 4";
    if (b < 4 || b > 128 || (b & (b - 1))) return "the bank size must be a power of two in [4, 128]";
    if (h < 0 || h > b / 2) return "the high count per bank must be in [0, b/2]";
    int G = b > 64 ? b : 64;
    if (n < 1 || k < G || k % G) return "k must be a positive multiple of the scale group";
    if (k / 64 > (1L << 24) || n > (1L << 30)) return "matrix too large";
    memset(w, 0, sizeof *w);
    w->n = n, w->k = k, w->h_low = h_low, w->lobits = h_low == 2 ? 2 : 4;
    w->b = b, w->h = h, w->G = G, w->spg = G / 64;
    w->S = b <= 64 ? h * (64 / b) : (h < 64 ? h : 64);
    w->s2 = ((w->S + 1) / 2 + 3) / 4 * 4; /* 0 when there are no highs */
    w->ntiles = (n + 15) / 16, w->nsub = k / 64, w->ngroups = k / G;
    w->nparts = 1, w->part_n[0] = n;
    w->compact = compact_ok && compact_fits(w->lobits, b, h);
    w->lo_bytes = 16 * 64 * w->lobits / 8;
    w->slot_bytes = w->compact ? SQC_CODES : 32 * 2 * w->s2;
    w->s16 = s16 && (w->compact || is_fast(w));
    w->scale_bytes = 16 * (w->s16 ? 4 : 8);
    w->unit_bytes = w->lo_bytes + w->slot_bytes + w->scale_bytes;
    w->bytes = (size_t)w->ntiles * w->nsub * w->unit_bytes;
    snprintf(w->desc, sizeof w->desc, "SQ %d-bit b%d h%d: %s, %s scales, %.3f bits/weight", h_low, b, h,
             w->compact ? "compact (implicit mask)" : is_fast(w) ? "fast path" : "generic path",
             w->s16 ? "half" : "float", 8.0 * w->bytes / ((double)n * k));
    return NULL;
}

/* ---- repacking into the GPU layout ------------------------------------------------------- */

/* The half with the same value as x, which must be one (kc_sq_upload checks,
 * gen_scales makes them so), by integer arithmetic: CUDA 13.0's ptxas turned
 * a byte store of a cvt.rn.f16.f32 result into a float -> u8 conversion
 * (F2I.U8.F16), which zeroed the scales' low mantissa bytes on the device. */
HD uint32_t half_bits(float x) {
    uint32_t f;
    memcpy(&f, &x, 4);
    const uint32_t sign = (f >> 16) & 0x8000u, m = f & 0x7FFFFFu;
    const int e = (int)((f >> 23) & 255) - 127 + 15; /* half exponent field */
    if ((f & 0x7FFFFFFFu) == 0) return sign;
    if (e >= 1) return sign | (uint32_t)e << 10 | m >> 13;
    return sign | (m | 0x800000u) >> (14 - e); /* subnormal half */
}

HD void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* the high positions of row r in subgroup sub (bit c = column 64 sub + c) and
 * their codes by column; (b <= 64 only) */
HD uint64_t row_highs(const RawView &v, const Geo &g, long r, long sub, int8_t *code) {
    uint64_t m = 0;
    if (r >= g.n) return 0;
    const long nbk = g.k / g.b;
    const int per = 64 / g.b;
    for (int bi = 0; bi < per; bi++) {
        size_t e0 = ((size_t)r * nbk + (size_t)(sub * per + bi)) * g.h;
        for (int e = 0; e < g.h; e++) {
            int c = bi * g.b + v.idx[e0 + e];
            m |= 1ull << c;
            code[c] = v.hi[e0 + e];
        }
    }
    return m;
}

/* column of nibble j of lane t's raw word for k-chunk kc (lane order) */
HD int lane_col(int t, int kc, int j) { return 16 * t + 8 * kc + (j >> 1) + 4 * (j & 1); }

/* the compact layout (kc_sq.cuh): lane `lane`'s 16 lo bytes, and (lanes with
 * t < 2) row g + 8 t's code list and scales */
HD void repack_lane_c(const RawView &v, const Geo &g, long tile, long sub, int lane, uint8_t *unit) {
    const int gi = lane >> 2, tig = lane & 3;
    const long j0 = sub * 64;
    int8_t code[2][64];
    uint64_t hm[2];
    for (int rh = 0; rh < 2; rh++) hm[rh] = row_highs(v, g, tile * 16 + gi + 8 * rh, sub, code[rh]);
    for (int q = 0; q < 4; q++) {
        int kc = q >> 1, rh = q & 1;
        long r = tile * 16 + gi + 8 * rh;
        uint32_t w = 0;
        if (r < g.n)
            for (int i = 0; i < 4; i++) {
                int c0 = 16 * tig + 8 * kc + i;
                uint32_t a = (hm[rh] >> c0) & 1 ? 8u : (uint32_t)raw_lo_bits(v, g, r, j0 + c0);
                uint32_t b = (hm[rh] >> (c0 + 4)) & 1 ? 8u : (uint32_t)raw_lo_bits(v, g, r, j0 + c0 + 4);
                w |= a << (8 * i) | b << (8 * i + 4);
            }
        put32(unit + lane * 16 + q * 4, w ^ 0x88888888u); /* -8 (the reserved code) is stored as 0 */
    }
    if (tig >= 2) return;
    const int rh = tig;
    const long r = tile * 16 + gi + 8 * rh;
    uint8_t list[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int cnt = 0;
    for (int t = 0; t < 4; t++)
        for (int kc = 0; kc < 2; kc++)
            for (int j = 0; j < 8; j++) {
                int c = lane_col(t, kc, j);
                if ((hm[rh] >> c) & 1) list[cnt++ & 7] = (uint8_t)code[rh][c];
            }
    uint8_t *cp = unit + SQC_LO + gi * 16 + rh * 8;
    for (int i = 0; i < 8; i++) cp[i] = list[i];
    long grp = sub / g.spg;
    float sl = r < g.n ? v.s_lo[r * g.ngroups + grp] : 0.0f;
    float sh = r < g.n ? v.s_hi[r * g.ngroups + grp] : 0.0f;
    uint8_t *sc = unit + SQC_LO + SQC_CODES;
    if (g.s16) {
        put32(sc + gi * 8 + rh * 4, half_bits(sl) | half_bits(sh) << 16);
    } else {
        uint32_t ua, ub;
        memcpy(&ua, &sl, 4), memcpy(&ub, &sh, 4);
        put32(sc + gi * 16 + rh * 8, ua), put32(sc + gi * 16 + rh * 8 + 4, ub);
    }
}

/* Writes lane `lane`'s share of unit (tile, sub): its lo bytes, its slots and
 * (lanes 0..15) row `lane`'s scales. */
HD void repack_lane(const RawView &v, const Geo &g, long tile, long sub, int lane, uint8_t *unit) {
    if (g.compact) {
        repack_lane_c(v, g, tile, sub, lane, unit);
        return;
    }
    const int gi = lane >> 2, tig = lane & 3;
    const long j0 = sub * 64;
    if (g.lobits == 4) { /* codes stored offset-binary: c + 8 (c + 2 for 2-bit), so 0 is 0x8 */
        for (int q = 0; q < 4; q++) {
            int kc = q >> 1, rh = q & 1;
            long r = tile * 16 + gi + 8 * rh;
            uint32_t w = 0;
            if (r < g.n)
                for (int i = 0; i < 4; i++) { /* k-slots j = 2kc, 2kc+1 hold columns 16t + 4j + i */
                    int c0 = 16 * tig + 8 * kc + i;
                    w |= (uint32_t)raw_lo_bits(v, g, r, j0 + c0) << (8 * i);
                    w |= (uint32_t)raw_lo_bits(v, g, r, j0 + c0 + 4) << (8 * i + 4);
                }
            put32(unit + lane * 16 + q * 4, w ^ 0x88888888u);
        }
    } else {
        for (int p = 0; p < 2; p++) {
            long r = tile * 16 + gi + 8 * p;
            uint32_t w = 0;
            if (r < g.n)
                for (int c = 0; c < 4; c++)
                    for (int i = 0; i < 4; i++)
                        w |= (uint32_t)raw_lo_bits(v, g, r, j0 + 16 * tig + 4 * c + i) << (8 * i + 2 * c);
            put32(unit + lane * 8 + p * 4, w ^ 0xAAAAAAAAu);
        }
    }
    /* slots: the row's highs in this subgroup in position order; this lane
     * takes list entries [half * s2, half * s2 + s2) */
    const long r = tile * 16 + (lane >> 1);
    const int first = (lane & 1) * g.s2;
    uint8_t *sv = unit + g.lo_bytes + lane * 2 * g.s2, *sp = sv + g.s2;
    int cnt = 0, c_low = 0, gap = 0;
    if (r < g.n) {
        const long nbk = g.k / g.b;
        if (g.b <= 64) {
            const int per = 64 / g.b;
            for (int bi = 0; bi < per; bi++) {
                size_t e0 = ((size_t)r * nbk + (size_t)(j0 / g.b + bi)) * g.h;
                for (int e = 0; e < g.h; e++) {
                    int c = bi * g.b + v.idx[e0 + e];
                    if (!gap) { if (c == c_low) c_low++; else gap = 1; }
                    if (cnt >= first && cnt < first + g.s2)
                        sv[cnt - first] = (uint8_t)v.hi[e0 + e], sp[cnt - first] = (uint8_t)slot_off(c);
                    cnt++;
                }
            }
        } else { /* b = 128: this subgroup is one half of a bank */
            const int half = (int)(sub & 1);
            size_t e0 = ((size_t)r * nbk + (size_t)(j0 / 128)) * g.h;
            for (int e = 0; e < g.h; e++) {
                int c = v.idx[e0 + e] - 64 * half;
                if (c < 0 || c >= 64) continue;
                if (!gap) { if (c == c_low) c_low++; else gap = 1; }
                if (cnt >= first && cnt < first + g.s2)
                    sv[cnt - first] = (uint8_t)v.hi[e0 + e], sp[cnt - first] = (uint8_t)slot_off(c);
                cnt++;
            }
        }
    }
    /* padding: zero codes at a low position of this row (c_low < 64 whenever
     * the row has fewer highs here than slots), so no two lanes ever write
     * different values to one byte */
    for (int s = cnt > first ? cnt - first : 0; s < g.s2; s++) sv[s] = 0, sp[s] = (uint8_t)slot_off(c_low & 63);
    if (lane < 16) {
        long rr = tile * 16 + lane, grp = sub / g.spg;
        float sl = rr < g.n ? v.s_lo[rr * g.ngroups + grp] : 0.0f;
        float sh = rr < g.n ? v.s_hi[rr * g.ngroups + grp] : 0.0f;
        uint8_t *sc = unit + g.lo_bytes + g.slot_bytes;
        if (g.s16) {
            put32(sc + lane * 4, half_bits(sl) | half_bits(sh) << 16);
        } else {
            uint32_t ua, ub;
            memcpy(&ua, &sl, 4), memcpy(&ub, &sh, 4);
            put32(sc + lane * 8, ua), put32(sc + lane * 8 + 4, ub);
        }
    }
}

/* ---- random SQ matrices (same values on host and device) ------------------------------ */

HD uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct GenP {
    long n, k;
    int h_low, lobits, b, h, G, f16, iscale;
    uint64_t seed;
};

/* One bank: h distinct positions (sorted by construction), high codes in
 * [-127, 127], low codes in the symmetric h_low range and 0 at high
 * positions. lo must be zero-initialised (the bank's bytes are OR-ed). */
HD void gen_bank(const GenP &p, long r, long bk, uint8_t *lo, int8_t *hi, uint8_t *idx) {
    const long nbk = p.k / p.b;
    const uint64_t st = mix64(p.seed ^ mix64((uint64_t)(r * nbk + bk) * 0x2545F4914F6CDD1Dull));
    uint64_t m0 = 0, m1 = 0;
    int cnt = 0;
    for (uint64_t i = 0; cnt < p.h; i++) {
        int pos = (int)(mix64(st + i) % (uint64_t)p.b);
        uint64_t bit = 1ull << (pos & 63);
        uint64_t &m = pos < 64 ? m0 : m1;
        if (!(m & bit)) m |= bit, cnt++;
    }
    const int q = (1 << (p.h_low - 1)) - 1;
    size_t hb = ((size_t)r * nbk + bk) * p.h;
    int slot = 0;
    for (int pos = 0; pos < p.b; pos++) {
        int high = (int)(((pos < 64 ? m0 : m1) >> (pos & 63)) & 1);
        uint64_t d = mix64(st ^ (0xD1B54A32D192ED03ull * (uint64_t)(pos + 1)));
        int code = 0;
        if (high) {
            idx[hb + slot] = (uint8_t)pos;
            hi[hb + slot] = (int8_t)((int)(d % 255) - 127);
            slot++;
        } else {
            code = (int)(d % (uint64_t)(2 * q + 1)) - q;
        }
        size_t e = (size_t)r * p.k + (size_t)bk * p.b + pos;
        if (p.lobits == 4) lo[e >> 1] |= (uint8_t)((code & 15) << (4 * (e & 1)));
        else lo[e >> 2] |= (uint8_t)((code & 3) << (2 * (e & 3)));
    }
}

/* Positive scales built from integers (exact on host and device): s_lo in
 * [2^-9, 2^-8), s_hi in [2^-12, 2^-10); 11-bit mantissas with f16 (exact
 * halves), 24-bit otherwise. */
/* KC_SQ_INT_SCALES: row r's scale (6-bit mantissa, in [2^-12, 2^-11)) */
HD float gen_row_scale(const GenP &p, long r) {
    const uint64_t d = mix64(p.seed ^ mix64(0x1705CA1Eull + (uint64_t)r * 0x9E3779B97F4A7C15ull));
    return ldexpf((float)(32 + (d & 31)), -17);
}

HD void gen_scales(const GenP &p, long r, long grp, float *s_lo, float *s_hi) {
    const long ng = p.k / p.G;
    uint64_t d = mix64(p.seed ^ mix64(0x5CA1E5ull + (uint64_t)(r * ng + grp) * 0x9E3779B97F4A7C15ull));
    float a, b;
    if (p.iscale) { /* s_hi = the row's scale, s_lo = 1..kmax times it: exact halves */
        const int qmax = (1 << (p.h_low - 1)) - 1;
        b = gen_row_scale(p, r);
        a = (float)(1 + (int)(d % (uint64_t)(127 / qmax))) * b;
    } else if (p.f16) {
        a = ldexpf((float)(1024 + (d & 1023)), -19);
        b = ldexpf((float)(1024 + ((d >> 10) & 1023)), -22 + (int)((d >> 62) & 1));
    } else {
        a = ldexpf((float)(0x800000 | (d & 0x7FFFFF)), -32);
        b = ldexpf((float)(0x800000 | ((d >> 23) & 0x7FFFFF)), -35 + (int)((d >> 62) & 1));
    }
    s_lo[r * ng + grp] = a, s_hi[r * ng + grp] = b;
}

/* ---- device kernels: generation and repacking ------------------------------------------- */

__global__ void k_gen_banks(GenP p, uint8_t *lo, int8_t *hi, uint8_t *idx) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, nbk = p.k / p.b;
    if (t < p.n * nbk) gen_bank(p, t / nbk, t % nbk, lo, hi, idx);
}

__global__ void k_gen_scales(GenP p, float *s_lo, float *s_hi) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, ng = p.k / p.G;
    if (t < p.n * ng) gen_scales(p, t / ng, t % ng, s_lo, s_hi);
}

__global__ void k_repack(RawView v, Geo g, uint8_t *d) {
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x, unit = t >> 5;
    if (unit >= g.ntiles * g.nsub) return;
    repack_lane(v, g, unit / g.nsub, unit % g.nsub, (int)(t & 31), d + (size_t)unit * g.unit_bytes);
}

/* ---- host side ------------------------------------------------------------------------- */

static kc_sq *sq_new(long n, long k, int h_low, int b, int h, int s16, int compact_ok) {
    kc_sq *w = (kc_sq *)calloc(1, sizeof *w);
    if (!w) {
        kc_set_error("out of host memory");
        return NULL;
    }
    const char *why = geo_init(w, n, k, h_low, b, h, s16, compact_ok);
    if (why) {
        kc_set_error("SQ matrix %ld x %ld (h_low %d, b %d, h %d) not supported: %s", n, k, h_low, b, h, why);
        free(w);
        return NULL;
    }
    if (!(w->d = (uint8_t *)kc_malloc(w->bytes))) {
        free(w);
        return NULL;
    }
    return w;
}

/* repacks raw device arrays into w->d */
static int sq_repack(kc_sq *w, const RawView &v) {
    long threads = w->ntiles * w->nsub * 32;
    k_repack<<<kc_blocks(threads, 256), 256, 0, KC_STREAM>>>(v, geo_of(w), w->d);
    return kc_check_launch("k_repack");
}

static int half_exact(const float *s, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (__half2float(__float2half_rn(s[i])) != s[i]) return 0;
    return 1;
}

/* the reserved code -8 (bit pattern 8) at some low position of a 4-bit
 * tensor: a nibble of x ^ 0x88.. is zero there (eight nibbles a word) */
static int has_reserved_code(const k_sq_t *t) {
    if (t->h_low == 2) return 0;
    const size_t nb = (size_t)t->n * t->k / 2, nw = nb / 8;
    for (size_t i = 0; i < nw; i++) {
        uint64_t x;
        memcpy(&x, t->lo + 8 * i, 8);
        x ^= 0x8888888888888888ull;
        if ((x - 0x1111111111111111ull) & ~x & 0x8888888888888888ull) return 1;
    }
    for (size_t i = nw * 8; i < nb; i++)
        if ((t->lo[i] & 0x0F) == 8 || (t->lo[i] & 0xF0) == 0x80) return 1;
    return 0;
}

/* every low code of a 3-bit tensor (two nibbles a byte) within +-3 */
static int lo3_in_range(const k_sq_t *t) {
    const size_t nb = (size_t)t->n * t->k / 2;
    for (size_t i = 0; i < nb; i++) {
        const unsigned a = (t->lo[i] + 3u) & 15u, b = ((t->lo[i] >> 4) + 3u) & 15u; /* c + 3 in 0..6 */
        if (a > 6 || b > 6) return 0;
    }
    return 1;
}

/* a low code other than 0 at some high position: the quantizer writes 0
 * there (sq_validate refuses others), the compact layout has no room for
 * it, and it would make a weight two INT8 codes under integer scales */
static int lo_at_highs(const k_sq_t *t) {
    const long nbk = t->k / t->b;
    for (long r = 0; r < t->n; r++)
        for (long bk = 0; bk < nbk; bk++) {
            const uint8_t *ix = t->idx + (size_t)(r * nbk + bk) * t->h;
            for (int i = 0; i < t->h; i++)
                if (k_sq_lo_code(t->lo, t->h_low, (size_t)(r * t->k + bk * t->b + ix[i])) != 0) return 1;
        }
    return 0;
}

/* Integer bank scales make every weight the INT8 value k_g lo + hi, which
 * the INT8 path expands to (kc_sq_gemm.cu) and the fused decode kernel
 * builds its A fragments from (k_g lo ORed with the highs, kc_sq_mm.cu's
 * do_group_is). Exact only as the quantizer
 * writes a tensor: every low code within +-qmax (a 4-bit -8 times k_g
 * passes -128 from k_g = 17) and 0 at every high position. Another tensor
 * keeps the free-scale kernels (2-bit storage has no INT8 path). */
/* The two scans of the codes above, run once an upload and only where a
 * layout or the scales ask (each reads every code of the tensor: seconds
 * for a 70B model, which a free-scale explicit upload does not pay). */
struct CodeScan {
    int done, reserved, lah;
};
static const CodeScan &scan_codes(const k_sq_t *t, CodeScan &s) {
    if (!s.done) s.reserved = has_reserved_code(t), s.lah = lo_at_highs(t), s.done = 1;
    return s;
}

static int iscale_exact(const k_sq_t *t, CodeScan &cs) {
    const CodeScan &s = scan_codes(t, cs);
    return !s.lah && (t->h_low == 4 ? !s.reserved : t->h_low == 3 && lo3_in_range(t));
}

/* The compact layout is opt-in (KC_SQ_COMPACT=1): on the H200 its decode
 * kernels spend more instructions per byte decoding the high part than the
 * bytes they save, so end to end the explicit layout decodes faster (8B
 * batch 1: 205.8 vs 187.7 tokens/s; 70B: 36.6 vs 31.6; docs/perf-gpu.md)
 * at 6.5 instead of 5.5 bits per weight in device memory. */
static int compact_default(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("KC_SQ_COMPACT");
        v = e ? atoi(e) != 0 : 0;
    }
    return v;
}


/* marks w as having integer bank scales and uploads its row scales */
static int set_iscale(kc_sq *w, const float *rs_host) {
    if (!(w->rs = (float *)kc_malloc((size_t)w->n * sizeof(float)))) return -1;
    if (kc_upload(w->rs, rs_host, (size_t)w->n * sizeof(float))) return -1;
    w->iscale = 1;
    size_t dl = strlen(w->desc);
    snprintf(w->desc + dl, sizeof w->desc - dl, ", integer bank scales");
    return 0;
}

extern "C" int kc_sq_iscale(const kc_sq_t *w) { return w && w->iscale; }

extern "C" kc_sq_t *kc_sq_upload(const k_sq_t *t) { return kc_sq_upload_ex(t, 0); }

extern "C" kc_sq_t *kc_sq_upload_ex(const k_sq_t *t, int flags) {
    if (!t || !t->lo || !t->hi || !t->idx || !t->s_lo || !t->s_hi) {
        kc_set_error("kc_sq_upload: incomplete SQ tensor");
        return NULL;
    }
    if (t->G != (t->b > 64 ? t->b : 64)) {
        kc_set_error("kc_sq_upload: scale group %d does not match bank size %d", t->G, t->b);
        return NULL;
    }
    size_t ng = (size_t)t->n * (t->k / t->G);
    int s16 = half_exact(t->s_lo, ng) && half_exact(t->s_hi, ng);
    /* the compact layout reserves the low code -8 and keeps none at high
     * positions; a tensor with either (no valid SQ tensor has them) keeps
     * the explicit slots */
    CodeScan cs = {0, 0, 0};
    const int compact_ok = compact_default() && !(flags & KC_SQ_NO_COMPACT) && !scan_codes(t, cs).reserved &&
                           !scan_codes(t, cs).lah;
    kc_sq *w = sq_new(t->n, t->k, t->h_low, t->b, t->h, s16, compact_ok);
    if (!w) return NULL;
    size_t lob = (size_t)t->n * t->k * w->lobits / 8, hib = (size_t)t->n * (t->k / t->b) * t->h;
    uint8_t *lo = (uint8_t *)kc_malloc(lob), *idx = (uint8_t *)kc_malloc(hib);
    int8_t *hi = (int8_t *)kc_malloc(hib);
    float *sl = (float *)kc_malloc(ng * 4), *sh = (float *)kc_malloc(ng * 4);
    int rc = -1;
    if (lo && idx && hi && sl && sh && !kc_upload(lo, t->lo, lob) && !kc_upload(hi, t->hi, hib) &&
        !kc_upload(idx, t->idx, hib) && !kc_upload(sl, t->s_lo, ng * 4) && !kc_upload(sh, t->s_hi, ng * 4)) {
        RawView v = {lo, hi, idx, sl, sh};
        rc = sq_repack(w, v);
        if (!rc) rc = kc_sync();
    }
    kc_free(lo), kc_free(idx), kc_free(hi), kc_free(sl), kc_free(sh);
    if (!rc) {
        float *rs = (float *)malloc((size_t)t->n * sizeof(float));
        if (!rs) {
            kc_set_error("out of host memory");
            rc = -1;
        } else if (k_sq_iscale_rows(t->s_lo, t->s_hi, t->n, t->k / t->G, t->h_low, rs) && iscale_exact(t, cs)) {
            rc = set_iscale(w, rs);
        }
        free(rs);
    }
    if (rc) {
        kc_sq_free(w);
        return NULL;
    }
    return w;
}

static GenP gen_params(long n, long k, int h_low, int b, int h, uint64_t seed, int flags) {
    GenP p;
    p.n = n, p.k = k, p.h_low = h_low, p.lobits = h_low == 2 ? 2 : 4, p.b = b, p.h = h;
    p.G = b > 64 ? b : 64, p.f16 = (flags & KC_SQ_F16_SCALES) != 0, p.seed = seed;
    p.iscale = (flags & KC_SQ_INT_SCALES) != 0;
    if (p.iscale) p.f16 = 1; /* 6-bit row scales times 1..127 are halves */
    return p;
}

extern "C" kc_sq_t *kc_sq_random_ex(long n, long k, int h_low, int b, int h, uint64_t seed, int flags) {
    GenP p = gen_params(n, k, h_low, b, h, seed, flags);
    kc_sq *w = sq_new(n, k, h_low, b, h, p.f16, compact_default() && !(flags & KC_SQ_NO_COMPACT));
    if (!w) return NULL;
    size_t lob = (size_t)n * k * w->lobits / 8, hib = (size_t)n * (k / b) * h, ng = (size_t)n * (k / w->G);
    uint8_t *lo = (uint8_t *)kc_malloc(lob), *idx = (uint8_t *)kc_malloc(hib);
    int8_t *hi = (int8_t *)kc_malloc(hib);
    float *sl = (float *)kc_malloc(ng * 4), *sh = (float *)kc_malloc(ng * 4);
    int rc = -1;
    if (lo && idx && hi && sl && sh && !kc_memset(lo, 0, lob)) {
        long nb = n * (k / b);
        k_gen_banks<<<kc_blocks(nb, 256), 256, 0, KC_STREAM>>>(p, lo, hi, idx);
        k_gen_scales<<<kc_blocks((long)ng, 256), 256, 0, KC_STREAM>>>(p, sl, sh);
        RawView v = {lo, hi, idx, sl, sh};
        if (!kc_check_launch("k_gen_banks") && !sq_repack(w, v)) rc = kc_sync();
    }
    kc_free(lo), kc_free(idx), kc_free(hi), kc_free(sl), kc_free(sh);
    if (!rc && p.iscale && h_low != 2) { /* as kc_sq_upload: no INT8 path on 2-bit storage */
        float *rs = (float *)malloc((size_t)n * sizeof(float));
        rc = -1;
        if (!rs) kc_set_error("out of host memory");
        else {
            for (long r = 0; r < n; r++) rs[r] = gen_row_scale(p, r);
            rc = set_iscale(w, rs);
        }
        free(rs);
    }
    if (rc) {
        kc_sq_free(w);
        return NULL;
    }
    return w;
}

extern "C" kc_sq_t *kc_sq_random(long n, long k, int h_low, int b, int h, uint64_t seed) {
    return kc_sq_random_ex(n, k, h_low, b, h, seed, 0);
}

extern "C" int kc_sq_random_host(long n, long k, int h_low, int b, int h, uint64_t seed, int flags, uint8_t *lo,
                                 int8_t *hi, uint8_t *idx, float *s_lo, float *s_hi) {
    kc_sq tmp;
    const char *why = geo_init(&tmp, n, k, h_low, b, h, 0, 0);
    if (why) {
        kc_set_error("kc_sq_random_host: %s", why);
        return -1;
    }
    GenP p = gen_params(n, k, h_low, b, h, seed, flags);
    memset(lo, 0, (size_t)n * k * tmp.lobits / 8);
    for (long r = 0; r < n; r++) {
        for (long bk = 0; bk < k / b; bk++) gen_bank(p, r, bk, lo, hi, idx);
        for (long grp = 0; grp < k / p.G; grp++) gen_scales(p, r, grp, s_lo, s_hi);
    }
    return 0;
}

extern "C" void kc_sq_free(kc_sq_t *w) {
    if (!w) return;
    kc_free(w->d);
    kc_free(w->rs);
    free(w);
}

extern "C" size_t kc_sq_bytes(const kc_sq_t *w) { return w ? w->bytes : 0; }

extern "C" kc_sq_t *kc_sq_fuse(const kc_sq_t *const *parts, int count) {
    if (!parts || count < 1 || count > KC_SQ_MAX_PARTS) {
        kc_set_error("kc_sq_fuse: 1 to %d parts", KC_SQ_MAX_PARTS);
        return NULL;
    }
    const kc_sq *a = parts[0];
    long n = 0;
    for (int i = 0; i < count; i++) {
        const kc_sq *p = parts[i];
        if (!p || p->nparts != 1 || p->k != a->k || p->h_low != a->h_low || p->b != a->b || p->h != a->h ||
            p->compact != a->compact || p->s16 != a->s16 || p->unit_bytes != a->unit_bytes) {
            kc_set_error("kc_sq_fuse: part %d differs from part 0 in shape or layout (%s vs %s)", i,
                         p ? p->desc : "none", a->desc);
            return NULL;
        }
        if (i < count - 1 && p->n % 16) {
            kc_set_error("kc_sq_fuse: part %d has %ld rows, not a multiple of 16", i, p->n);
            return NULL;
        }
        n += p->n;
    }
    kc_sq *w = (kc_sq *)calloc(1, sizeof *w);
    if (!w) {
        kc_set_error("out of host memory");
        return NULL;
    }
    *w = *a;
    w->n = n, w->ntiles = (n + 15) / 16, w->bytes = (size_t)w->ntiles * w->nsub * w->unit_bytes;
    w->nparts = count;
    w->rs = NULL;
    for (int i = 0; i < count; i++) w->part_n[i] = parts[i]->n, w->iscale &= parts[i]->iscale;
    if (!(w->d = (uint8_t *)kc_malloc(w->bytes)) ||
        (w->iscale && !(w->rs = (float *)kc_malloc((size_t)n * sizeof(float))))) {
        kc_free(w->d);
        free(w);
        return NULL;
    }
    size_t off = 0;
    long roff = 0; /* parts but the last are whole tiles: rows follow each other */
    for (int i = 0; i < count; i++) {
        if (kc_check(cudaMemcpyAsync(w->d + off, parts[i]->d, parts[i]->bytes, cudaMemcpyDeviceToDevice, KC_STREAM),
                     "kc_sq_fuse copy") ||
            (w->iscale && kc_check(cudaMemcpyAsync(w->rs + roff, parts[i]->rs, (size_t)parts[i]->n * sizeof(float),
                                                   cudaMemcpyDeviceToDevice, KC_STREAM),
                                   "kc_sq_fuse copy"))) {
            kc_sq_free(w);
            return NULL;
        }
        off += parts[i]->bytes, roff += parts[i]->n;
    }
    char *is = strstr(w->desc, ", integer bank scales");
    if (is && !w->iscale) *is = 0; /* some part has free scales: the fused matrix is not one */
    size_t dl = strlen(w->desc);
    snprintf(w->desc + dl, sizeof w->desc - dl, ", %d parts", count);
    return w;
}

extern "C" int kc_sq_parts(const kc_sq_t *w) { return w ? w->nparts : 0; }
extern "C" long kc_sq_part_rows(const kc_sq_t *w, int part) {
    return w && part >= 0 && part < w->nparts ? w->part_n[part] : 0;
}

extern "C" const char *kc_sq_describe(const kc_sq_t *w) { return w ? w->desc : "none"; }

/* Test hook (declared in tests/gpu/test_kc_sq.c, not in kc.h): repacks the
 * host tensor t on the host into w's layout and compares it with w's device
 * bytes. Returns the number of differing bytes (first offset in *first), or
 * -1 on error. */
extern "C" long kc_sq_debug_compare(const kc_sq_t *w, const k_sq_t *t, long *first) {
    if (!w || !t || t->n != w->n || t->k != w->k) return -1;
    uint8_t *host = (uint8_t *)malloc(w->bytes), *dev = (uint8_t *)malloc(w->bytes);
    if (!host || !dev || kc_download(dev, w->d, w->bytes)) {
        free(host), free(dev);
        return -1;
    }
    RawView v = {t->lo, t->hi, t->idx, t->s_lo, t->s_hi};
    Geo g = geo_of(w);
    for (long u = 0; u < w->ntiles * w->nsub; u++)
        for (int l = 0; l < 32; l++) repack_lane(v, g, u / w->nsub, u % w->nsub, l, host + (size_t)u * w->unit_bytes);
    long diff = 0;
    *first = -1;
    for (size_t i = 0; i < w->bytes; i++)
        if (host[i] != dev[i]) {
            if (*first < 0) *first = (long)i;
            if (diff < 8) printf("     byte %zu (unit %zu, offset %zu): host %02x device %02x\n", i, i / w->unit_bytes,
                                 i % w->unit_bytes, host[i], dev[i]);
            diff++;
        }
    free(host), free(dev);
    return diff;
}
