/* kc_int.cu - uniform integer weights on the GPU: the W8A8 and W4A8
 * baselines (k_sq_new_int views, h = 0) against INT8 activations.
 *
 * Why. The SQ-format paper argues against exactly these two formats, so
 * they need real kernels on the same footing as SQ's: INT8 activations
 * quantized per token on the device, exact integer sums, a CUDA-core GEMV
 * for decode and the tensor cores for many tokens. Before this file they
 * were expanded to FP32 and run through SGEMM, which says nothing about
 * either format's speed.
 *
 * Layout (device memory = the stated bits per weight, nothing else):
 *   codes   row-major, row r at r * k * bits / 8.
 *           8-bit: the codes as int8.
 *           4-bit: two's complement nibbles; within every 8 columns 8q..8q+7
 *           byte j (0..3) holds column 8q + j in its low nibble and column
 *           8q + 4 + j in its high nibble, so one word unpacks (AND, shift,
 *           sign extension by one multiply-add) into two dp4a operands that
 *           meet two consecutive activation words.
 *   scales  [n][k / g]: half when every scale of the matrix is exactly a
 *           half (4.25 bits per weight for int4 g64 instead of 4.5), else float.
 * Shapes taken: 8-bit codes with one scale a row (g = k, the `int8` recipe)
 * and 4-bit codes in groups of 64 (`int4:g64`); k a multiple of 64. Other
 * views are refused (the caller keeps them in FP32, as before).
 *
 * Kernels.
 *   decode (m <= kc_int_gemv_max(w): 16 for 4-bit, 8 for 8-bit): k_int4_gemv /
 *     k_int8_gemv, a warp per two rows (four from four tokens on),
 *     every lane owning whole groups (int4: 64 columns, 32 bytes a row) or
 *     16-byte chunks (int8), the activations read through L1 (every warp of
 *     a block reads the same ones), up to 8 tokens a launch.
 *     Integer sums are exact. int4: acc += s_g * sum_g in float per lane,
 *     then a shuffle tree, the k_sq.h error bound with k/64 groups. int8: the
 *     whole row's sum stays an integer (|sum| <= k * 127^2 < 2^31 for k <
 *     133000) and y = (s * (float)sum) * sx, k_sq_combine's operations in
 *     its order: bit for bit the CPU's.
 *   many tokens: 8-bit: kc_i8_matmul (kc_i8_gemm.cu), INT8 x INT8 on the
 *     tensor cores with y = (s * (float)acc) * sx in the GEMM's epilogue
 *     (or cuBLAS -> INT32 and that pass): again the CPU's bits. 4-bit:
 *     the honest two-step path of kc_sq_gemm.cu: the rows expanded to FP16
 *     (s_g * code, rounded: 2^-11 relative) in slices, cuBLAS's FP16 GEMM
 *     with FP32 sums, the per-token scale on the output.
 * Fused parts (q/k/v, gate/up): rows are row-major, so fusing is
 * concatenation; part p's rows go to its own output.
 */
#include "kc_internal.h"

#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct kc_int {
    long n, k, g;
    int bits, s16;
    uint8_t *codes;   /* n * k * bits / 8 */
    void *scales;     /* [n][k / g], half or float */
    float *rs32;      /* 8-bit codes with half scales: the scales as floats (kc_i8_matmul reads floats) */
    int nparts;
    long part_n[KC_SQ_MAX_PARTS];
    size_t bytes;
    char desc[96];
};

#define WARPS 8     /* warps a block; a warp takes R rows (2, or 4 from 4 tokens on) */

struct IntArgs {
    const uint8_t *w;
    const void *sc;
    long n, k, ng, m, tok0;
    const int8_t *qx;
    const float *sx;
    float *y;
    int acc;          /* y += product (the residual add) */
    int pairs;        /* static SQ activations: rows 2t, 2t + 1 are token t's high and low parts */
    int np;
    long pstart[KC_SQ_MAX_PARTS + 1];
    float *py[KC_SQ_MAX_PARTS];
};

__device__ __forceinline__ float load_scale(const void *sc, size_t i, bool s16) {
    return s16 ? __half2float(((const __half *)sc)[i]) : ((const float *)sc)[i];
}

__device__ __forceinline__ uint4 ld_nc4(const void *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

/* a word of 8 nibbles -> (columns 0..3, columns 4..7) as signed bytes */
__device__ __forceinline__ void unpack4(uint32_t w, uint32_t &lo, uint32_t &hi) {
    const uint32_t M = 0x0F0F0F0Fu, S = 0x08080808u;
    lo = w & M, hi = (w >> 4) & M;
    lo += (lo & S) * 30u, hi += (hi & S) * 30u; /* bit 3 set: + 240, the byte's sign */
}

/* the output of row r, token t: y, or the fused part's own output */
__device__ __forceinline__ void int_store(const IntArgs &a, long r, long tok, float p) {
    float *y = a.y;
    long ny = a.n;
    if (a.np > 1) {
        int q = 0;
        while (q + 1 < a.np && r >= a.pstart[q + 1]) q++;
        y = a.py[q], ny = a.pstart[q + 1] - a.pstart[q], r -= a.pstart[q];
    }
    float *o = y + tok * ny + r;
    *o = a.acc ? __fadd_rn(*o, p) : p;
}

/* The warp's sums of every (row i, token t) (a butterfly: every lane gets
 * them all, in the same order); lane i * NT + t returns sum (i, t). */
template <typename T, int R, int NT>
__device__ __forceinline__ T warp_sums(T (&acc)[R][NT], int lane) {
    T v = 0;
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
#pragma unroll
            for (int o = 16; o >= 1; o >>= 1) acc[i][t] += __shfl_xor_sync(0xffffffffu, acc[i][t], o);
            if (lane == i * NT + t) v = acc[i][t];
        }
    return v;
}

/* 4-bit codes, groups of 64: lane takes groups lane, lane + 32, ... */
template <int NT, int R, bool S16>
__global__ void __launch_bounds__(WARPS * 32) k_int4_gemv(IntArgs a) {
    const int lane = threadIdx.x & 31;
    const long r0 = ((long)blockIdx.x * WARPS + (threadIdx.x >> 5)) * R;
    kc_pdl_wait();
    kc_pdl_trigger();
    if (r0 >= a.n) return;
    const long rowb = a.k / 2;
    float acc[R][NT];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0.0f;
    long rr[R]; /* rows past the end (the last warp): the last row again, computed and not stored */
#pragma unroll
    for (int i = 0; i < R; i++) rr[i] = r0 + i < a.n ? r0 + i : a.n - 1;
#pragma unroll(NT >= 4 ? 1 : 2) /* many tokens: registers go to the accumulators */
    for (long gi = lane; gi < a.ng; gi += 32) {
        uint4 wv[R][2];
        float s[R];
#pragma unroll
        for (int i = 0; i < R; i++) {
            const uint8_t *p = a.w + rr[i] * rowb + gi * 32;
            wv[i][0] = ld_nc4(p), wv[i][1] = ld_nc4(p + 16);
            s[i] = load_scale(a.sc, (size_t)rr[i] * a.ng + gi, S16);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const long tok = a.tok0 + t < a.m ? a.tok0 + t : a.m - 1;
            const uint4 *xp = (const uint4 *)(a.qx + tok * a.k + gi * 64);
            const uint4 x0 = __ldg(xp), x1 = __ldg(xp + 1), x2 = __ldg(xp + 2), x3 = __ldg(xp + 3);
            const uint32_t X[16] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w,
                                    x2.x, x2.y, x2.z, x2.w, x3.x, x3.y, x3.z, x3.w};
#pragma unroll
            for (int i = 0; i < R; i++) {
                const uint32_t W[8] = {wv[i][0].x, wv[i][0].y, wv[i][0].z, wv[i][0].w,
                                       wv[i][1].x, wv[i][1].y, wv[i][1].z, wv[i][1].w};
                int sum = 0;
#pragma unroll
                for (int q = 0; q < 8; q++) {
                    uint32_t lo, hi;
                    unpack4(W[q], lo, hi);
                    sum = __dp4a((int)lo, (int)X[2 * q], __dp4a((int)hi, (int)X[2 * q + 1], sum));
                }
                acc[i][t] = fmaf(s[i], __int2float_rn(sum), acc[i][t]);
            }
        }
    }
    const float v = warp_sums<float, R, NT>(acc, lane);
    if (a.pairs) { /* token t = (high row's product) + (low row's), in k_add_pairs's order */
        const float vl = __shfl_down_sync(0xffffffffu, v, 1);
        const long r = r0 + lane / NT, tok = a.tok0 + lane % NT;
        if (lane < R * NT && !(lane & 1) && r < a.n && tok < a.m)
            int_store(a, r, tok / 2, __fadd_rn(__fmul_rn(v, __ldg(a.sx + tok)), __fmul_rn(vl, __ldg(a.sx + tok + 1))));
        return;
    }
    if (lane < R * NT) {
        const long r = r0 + lane / NT, tok = a.tok0 + lane % NT;
        if (r < a.n && tok < a.m) int_store(a, r, tok, __fmul_rn(v, __ldg(a.sx + tok)));
    }
}

/* 8-bit codes, one scale a row: lane takes 16-byte chunks lane, lane + 32, ...;
 * the row's sum stays an integer */
template <int NT, int R, bool S16>
__global__ void __launch_bounds__(WARPS * 32) k_int8_gemv(IntArgs a) {
    const int lane = threadIdx.x & 31;
    const long r0 = ((long)blockIdx.x * WARPS + (threadIdx.x >> 5)) * R;
    kc_pdl_wait();
    kc_pdl_trigger();
    if (r0 >= a.n) return;
    int acc[R][NT];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0;
    long rr[R];
#pragma unroll
    for (int i = 0; i < R; i++) rr[i] = r0 + i < a.n ? r0 + i : a.n - 1;
    const long nch = a.k / 16;
#pragma unroll 4 /* one 16-byte load a row an iteration: four in flight (bench_gemm: 1.5-2.7x at M = 4, 8) */
    for (long c = lane; c < nch; c += 32) {
        uint4 wv[R];
#pragma unroll
        for (int i = 0; i < R; i++) wv[i] = ld_nc4(a.w + rr[i] * a.k + c * 16);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const long tok = a.tok0 + t < a.m ? a.tok0 + t : a.m - 1;
            const uint4 x = __ldg((const uint4 *)(a.qx + tok * a.k) + c);
#pragma unroll
            for (int i = 0; i < R; i++)
                acc[i][t] = __dp4a((int)wv[i].x, (int)x.x, __dp4a((int)wv[i].y, (int)x.y,
                            __dp4a((int)wv[i].z, (int)x.z, __dp4a((int)wv[i].w, (int)x.w, acc[i][t]))));
        }
    }
    const int v = warp_sums<int, R, NT>(acc, lane); /* exact: the row's sum stays an integer */
    if (a.pairs) {
        const int vl = __shfl_down_sync(0xffffffffu, v, 1);
        const long r = r0 + lane / NT, tok = a.tok0 + lane % NT;
        if (lane < R * NT && !(lane & 1) && r < a.n && tok < a.m) {
            const float s = load_scale(a.sc, (size_t)r, S16);
            int_store(a, r, tok / 2, __fadd_rn(__fmul_rn(__fmul_rn(s, __int2float_rn(v)), __ldg(a.sx + tok)),
                                               __fmul_rn(__fmul_rn(s, __int2float_rn(vl)), __ldg(a.sx + tok + 1))));
        }
        return;
    }
    if (lane < R * NT) {
        const long r = r0 + lane / NT, tok = a.tok0 + lane % NT;
        if (r < a.n && tok < a.m) {
            const float s = load_scale(a.sc, (size_t)r, S16);
            int_store(a, r, tok, __fmul_rn(__fmul_rn(s, __int2float_rn(v)), __ldg(a.sx + tok)));
        }
    }
}

/* rows [r0, r0 + rows) of a 4-bit matrix as FP16 s_g * code, 8 codes a thread */
template <bool S16>
__global__ void k_int4_expand(const uint8_t *w, const void *sc, long k, long ng, long r0, long rows, __half *out) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x, per = k / 8;
    if (i >= rows * per) return;
    const long r = r0 + i / per, c8 = i % per;
    const uint32_t word = *(const uint32_t *)(w + r * (k / 2) + c8 * 4);
    const float s = load_scale(sc, (size_t)r * ng + c8 / 8, S16);
    uint32_t lo, hi;
    unpack4(word, lo, hi);
    __half2 v[4];
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const uint32_t b = p ? hi : lo;
        v[2 * p] = __floats2half2_rn(s * (float)(int8_t)b, s * (float)(int8_t)(b >> 8));
        v[2 * p + 1] = __floats2half2_rn(s * (float)(int8_t)(b >> 16), s * (float)(int8_t)(b >> 24));
    }
    *(uint4 *)(out + (i / per) * k + c8 * 8) = *(const uint4 *)v;
}

/* ---- static SQ activations on these kernels (W4A(SQ), the paper's Hopper mapping) ---- */

/* y[t][r] = y2[2t][r] + y2[2t + 1][r]: the high part's product plus the low part's */
__global__ void k_add_pairs(float *y, const float *y2, long m, long n) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * n) return;
    const long t = i / n, r = i % n;
    y[i] = __fadd_rn(y2[2 * t * n + r], y2[(2 * t + 1) * n + r]);
}

extern "C" int kc_add_pairs(float *d_y, const float *d_y2, long m, long n) {
    if (!d_y || !d_y2 || m < 0 || n < 1) {
        kc_set_error("kc_add_pairs: bad arguments");
        return -1;
    }
    if (m == 0) return 0;
    k_add_pairs<<<kc_blocks(m * n, 256), 256, 0, KC_STREAM>>>(d_y, d_y2, m, n);
    return kc_check_launch("k_add_pairs");
}

/* ---- generation (synthetic models) --------------------------------------------------- */

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
    x ^= x >> 30, x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27, x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* codes uniform in [-(2^(bits-1) - 1), 2^(bits-1) - 1], 8 a thread (one word of 4-bit, two of 8-bit) */
__global__ void k_int_gen_codes(uint8_t *w, long n8, int bits, uint64_t seed) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    const uint64_t h = mix64(seed ^ mix64((uint64_t)i));
    const int lim = (1 << (bits - 1)) - 1, span = 2 * lim + 1;
    uint32_t v[2] = {0, 0};
    for (int j = 0; j < 8; j++) {
        const int c = (int)((h >> (8 * j)) & 255) % span - lim;
        if (bits == 4) v[0] |= ((uint32_t)c & 15u) << (4 * j);
        else v[j >> 2] |= ((uint32_t)c & 255u) << (8 * (j & 3));
    }
    if (bits == 4) ((uint32_t *)w)[i] = v[0];
    else ((uint2 *)w)[i] = make_uint2(v[0], v[1]);
}

/* scales exact in half, 2^-9 .. 2^-7 (the magnitude RTN gives unit-variance rows) */
__global__ void k_int_gen_scales(__half *s, long cnt, uint64_t seed) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= cnt) return;
    const uint64_t h = mix64(seed ^ 0x5CA1Eull ^ mix64((uint64_t)i));
    s[i] = __float2half_rn(ldexpf((float)(1024 + (h & 1023)), -19 + (int)((h >> 20) & 1)));
}

/* ---- host side ----------------------------------------------------------------------- */

static long g_gemv_max = -1;
static int g_env_read; /* KC_INT_GEMV_M looked at (once, not at every matmul) */

extern "C" void kc_int_set_gemv_max(long m) { /* -1: KC_INT_GEMV_M, else the default */
    g_gemv_max = m < 0 ? -1 : m;
    g_env_read = 0;
}

/* The defaults from bench_gemm --baselines on the H200 (docs/perf-gpu.md):
 * 8-bit: cuBLAS INT8 from 9 tokens on; 4-bit: the FP16 two-step path
 * costs an expansion pass that two GEMV launches of 8 tokens beat up to 16 */
extern "C" long kc_int_gemv_max(const kc_int_t *w) {
    if (g_gemv_max < 0 && !g_env_read) {
        const char *e = getenv("KC_INT_GEMV_M");
        if (e && *e) g_gemv_max = atol(e) < 0 ? 0 : atol(e);
        g_env_read = 1;
    }
    return g_gemv_max >= 0 ? g_gemv_max : w->bits == 4 ? 16 : 8;
}

static const char *int_shape(long n, long k, int bits, long g) {
    if (n < 1 || k < 64 || k % 64) return "k must be a positive multiple of 64";
    if (bits == 8 && g != k) return "8-bit codes: one scale a row only";
    if (bits == 4 && g != 64) return "4-bit codes: groups of 64 only";
    if (bits != 4 && bits != 8) return "4- or 8-bit codes only";
    if (k > 130048 || n > 0x7fffffffL) return "matrix too large";
    return NULL;
}

static kc_int *int_new(long n, long k, int bits, long g, int s16) {
    const char *why = int_shape(n, k, bits, g);
    if (why) {
        kc_set_error("kc_int: %s (n %ld, k %ld, bits %d, group %ld)", why, n, k, bits, g);
        return NULL;
    }
    kc_int *w = (kc_int *)calloc(1, sizeof *w);
    if (!w) {
        kc_set_error("kc_int: out of host memory");
        return NULL;
    }
    w->n = n, w->k = k, w->g = g, w->bits = bits, w->s16 = s16, w->nparts = 1, w->part_n[0] = n;
    const size_t cb = (size_t)n * k * bits / 8, sb = (size_t)n * (k / g) * (s16 ? 2 : 4);
    const size_t rb = bits == 8 && s16 ? (size_t)n * sizeof(float) : 0;
    w->codes = (uint8_t *)kc_malloc(cb);
    w->scales = kc_malloc(sb);
    w->rs32 = rb ? (float *)kc_malloc(rb) : NULL;
    if (!w->codes || !w->scales || (rb && !w->rs32)) {
        kc_free(w->codes), kc_free(w->scales), kc_free(w->rs32), free(w);
        return NULL;
    }
    w->bytes = cb + sb + rb;
    snprintf(w->desc, sizeof w->desc, "%d-bit codes, %s, %s scales, %.3f bits/weight stored", bits,
             g == k ? "one scale a row" : "groups of 64", s16 ? "half" : "float", 8.0 * w->bytes / ((double)n * k));
    return w;
}

extern "C" void kc_int_free(kc_int_t *w) {
    if (!w) return;
    kc_free(w->codes), kc_free(w->scales), kc_free(w->rs32), free(w);
}

__global__ void k_half_to_float(const __half *h, long n, float *f) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) f[i] = __half2float(h[i]);
}

/* rs32 from the half scales, once they are in place (stream-ordered) */
static int int_fill_rs32(kc_int *w) {
    if (!w->rs32) return 0;
    k_half_to_float<<<kc_blocks(w->n, 256), 256, 0, KC_STREAM>>>((const __half *)w->scales, w->n, w->rs32);
    return kc_check_launch("k_half_to_float");
}

extern "C" size_t kc_int_bytes(const kc_int_t *w) { return w ? w->bytes : 0; }
extern "C" const char *kc_int_describe(const kc_int_t *w) { return w->desc; }

static int half_exact(const float *s, size_t cnt) {
    for (size_t i = 0; i < cnt; i++)
        if ((float)__float2half_rn(s[i]) != s[i]) return 0;
    return 1;
}

/* the host view's codes (k_sq_new_int: 4-bit packed two a byte, even
 * element in the low nibble; 8-bit as int8) into the device layout */
static void pack_row4(const uint8_t *lo, long r, long k, uint8_t *out) {
    for (long j0 = 0; j0 < k; j0 += 8)
        for (int j = 0; j < 4; j++) {
            const size_t e0 = (size_t)r * k + j0 + j, e1 = e0 + 4;
            const uint8_t a = (lo[e0 / 2] >> (4 * (e0 & 1))) & 15, b = (lo[e1 / 2] >> (4 * (e1 & 1))) & 15;
            out[j0 / 2 + j] = (uint8_t)(a | b << 4);
        }
}

extern "C" kc_int_t *kc_int_upload(const k_sq_t *v) {
    if (!v || v->h != 0 || !v->lo || !v->s_lo || (v->h_low != 4 && v->h_low != 8)) {
        kc_set_error("kc_int_upload: not a uniform integer view (h = 0, 4- or 8-bit codes)");
        return NULL;
    }
    const long n = v->n, k = v->k, g = v->G, ng = k / (g > 0 ? g : 1);
    if (int_shape(n, k, v->h_low, g)) {
        kc_set_error("kc_int_upload: %s", int_shape(n, k, v->h_low, g));
        return NULL;
    }
    const int s16 = half_exact(v->s_lo, (size_t)n * ng);
    kc_int *w = int_new(n, k, v->h_low, g, s16);
    if (!w) return NULL;
    const size_t rowb = (size_t)k * v->h_low / 8;
    uint8_t *codes = (uint8_t *)malloc((size_t)n * rowb);
    void *sc = malloc((size_t)n * ng * 4);
    int rc = -1;
    if (codes && sc) {
        for (long r = 0; r < n; r++) {
            if (v->h_low == 8) memcpy(codes + r * rowb, v->lo + r * k, rowb);
            else pack_row4(v->lo, r, k, codes + r * rowb);
        }
        if (s16)
            for (size_t i = 0; i < (size_t)n * ng; i++) ((__half *)sc)[i] = __float2half_rn(v->s_lo[i]);
        else memcpy(sc, v->s_lo, (size_t)n * ng * 4);
        rc = kc_upload(w->codes, codes, (size_t)n * rowb) || kc_upload(w->scales, sc, (size_t)n * ng * (s16 ? 2 : 4)) ||
             int_fill_rs32(w) || kc_sync();
    } else {
        kc_set_error("kc_int_upload: out of host memory");
    }
    free(codes), free(sc);
    if (rc) {
        kc_int_free(w);
        return NULL;
    }
    return w;
}

extern "C" kc_int_t *kc_int_random(long n, long k, int bits, uint64_t seed) {
    kc_int *w = int_new(n, k, bits, bits == 8 ? k : 64, 1);
    if (!w) return NULL;
    const long n8 = n * k / 8, ns = n * (k / w->g);
    k_int_gen_codes<<<kc_blocks(n8, 256), 256, 0, KC_STREAM>>>(w->codes, n8, bits, seed);
    k_int_gen_scales<<<kc_blocks(ns, 256), 256, 0, KC_STREAM>>>((__half *)w->scales, ns, seed);
    if (kc_check_launch("k_int_gen") || int_fill_rs32(w) || kc_sync()) {
        kc_int_free(w);
        return NULL;
    }
    return w;
}

extern "C" int kc_int_download(const kc_int_t *w, int8_t *codes, float *scales) {
    const long n = w->n, k = w->k, ng = k / w->g;
    const size_t rowb = (size_t)k * w->bits / 8;
    uint8_t *raw = (uint8_t *)malloc((size_t)n * rowb);
    void *sc = malloc((size_t)n * ng * 4);
    int rc = -1;
    if (raw && sc && !kc_download(raw, w->codes, (size_t)n * rowb) &&
        !kc_download(sc, w->scales, (size_t)n * ng * (w->s16 ? 2 : 4))) {
        for (long r = 0; r < n; r++)
            for (long j = 0; j < k; j++) {
                int c;
                if (w->bits == 8) c = (int8_t)raw[r * rowb + j];
                else {
                    const long j0 = j / 8 * 8, jj = j - j0;
                    const uint8_t b = raw[r * rowb + j0 / 2 + (jj & 3)];
                    c = (jj < 4 ? b : b >> 4) & 15;
                    c = c >= 8 ? c - 16 : c;
                }
                codes[r * k + j] = (int8_t)c;
            }
        for (size_t i = 0; i < (size_t)n * ng; i++)
            scales[i] = w->s16 ? __half2float(((const __half *)sc)[i]) : ((const float *)sc)[i];
        rc = 0;
    }
    if (rc && (!raw || !sc)) kc_set_error("kc_int_download: out of host memory");
    free(raw), free(sc);
    return rc;
}

extern "C" kc_int_t *kc_int_fuse(const kc_int_t *const *parts, int count) {
    if (count < 1 || count > KC_SQ_MAX_PARTS) {
        kc_set_error("kc_int_fuse: 1 to %d parts", KC_SQ_MAX_PARTS);
        return NULL;
    }
    long n = 0;
    for (int p = 0; p < count; p++) {
        const kc_int *q = parts[p];
        if (!q || q->nparts != 1 || q->k != parts[0]->k || q->bits != parts[0]->bits || q->g != parts[0]->g ||
            q->s16 != parts[0]->s16) {
            kc_set_error("kc_int_fuse: the parts differ in k, bits, group or scale type");
            return NULL;
        }
        n += q->n;
    }
    kc_int *w = int_new(n, parts[0]->k, parts[0]->bits, parts[0]->g, parts[0]->s16);
    if (!w) return NULL;
    size_t co = 0, so = 0;
    for (int p = 0; p < count; p++) {
        const kc_int *q = parts[p];
        const size_t cb = (size_t)q->n * q->k * q->bits / 8, sb = (size_t)q->n * (q->k / q->g) * (q->s16 ? 2 : 4);
        if (kc_check(cudaMemcpyAsync(w->codes + co, q->codes, cb, cudaMemcpyDeviceToDevice, KC_STREAM), "kc_int_fuse") ||
            kc_check(cudaMemcpyAsync((uint8_t *)w->scales + so, q->scales, sb, cudaMemcpyDeviceToDevice, KC_STREAM),
                     "kc_int_fuse")) {
            kc_int_free(w);
            return NULL;
        }
        co += cb, so += sb;
        w->part_n[p] = q->n;
    }
    w->nparts = count;
    if (int_fill_rs32(w) || kc_sync()) {
        kc_int_free(w);
        return NULL;
    }
    return w;
}

extern "C" int kc_int_parts(const kc_int_t *w) { return w->nparts; }

static IntArgs int_args(const kc_int *w, const int8_t *qx, const float *sx, long m, float *y, float *const *parts) {
    IntArgs a;
    memset(&a, 0, sizeof a);
    a.w = w->codes, a.sc = w->scales, a.n = w->n, a.k = w->k, a.ng = w->k / w->g, a.m = m;
    a.qx = qx, a.sx = sx, a.y = y, a.np = 1;
    if (parts && w->nparts > 1) {
        a.np = w->nparts, a.pstart[0] = 0;
        for (int p = 0; p < w->nparts; p++) a.py[p] = parts[p], a.pstart[p + 1] = a.pstart[p] + w->part_n[p];
    }
    return a;
}

/* a warp per R rows, a block per R x WARPS rows */
template <int NT>
static int gemv_nt(const kc_int *w, const IntArgs &a) {
    constexpr int R = NT >= 4 ? 4 : 2; /* more rows share each activation load when tokens are many */
    const unsigned blocks = (unsigned)((w->n + R * WARPS - 1) / (R * WARPS));
    if (w->bits == 4)
        return w->s16 ? kc_launch_pdl("k_int4_gemv", k_int4_gemv<NT, R, true>, blocks, WARPS * 32, 0, a)
                      : kc_launch_pdl("k_int4_gemv", k_int4_gemv<NT, R, false>, blocks, WARPS * 32, 0, a);
    return w->s16 ? kc_launch_pdl("k_int8_gemv", k_int8_gemv<NT, R, true>, blocks, WARPS * 32, 0, a)
                  : kc_launch_pdl("k_int8_gemv", k_int8_gemv<NT, R, false>, blocks, WARPS * 32, 0, a);
}

static int int_gemv(const kc_int *w, IntArgs a) {
    for (long t0 = 0; t0 < a.m; t0 += 8) {
        const long left = a.m - t0;
        a.tok0 = t0;
        const int rc = left == 1 ? gemv_nt<1>(w, a) : left == 2 ? gemv_nt<2>(w, a) : left <= 4 ? gemv_nt<4>(w, a)
                                                                                             : gemv_nt<8>(w, a);
        if (rc) return -1;
    }
    return 0;
}

/* many tokens, 8-bit: kc_i8_matmul, part by part (float row scales: the
 * scales themselves, or the float copy of half ones) */
static int int8_tensor(const kc_int *w, IntArgs a) {
    for (int p = 0; p < a.np; p++) {
        const long r0 = a.np > 1 ? a.pstart[p] : 0, rows = a.np > 1 ? a.pstart[p + 1] - r0 : w->n;
        const float *rs = (w->rs32 ? w->rs32 : (const float *)w->scales) + r0;
        if (kc_i8_matmul(a.qx, (const int8_t *)w->codes + r0 * w->k, a.m, rows, w->k, a.sx, rs,
                         a.np > 1 ? a.py[p] : a.y, rows))
            return -1;
    }
    return 0;
}

/* many tokens, 4-bit: FP16 expansion of slices of rows, cuBLAS FP16 (kc_sq_gemm.cu's scratch) */
static int int4_tensor(const kc_int *w, IntArgs a) {
    void *a16 = kc_f16_acts(a.qx, a.m, w->k);
    if (!a16) return -1;
    /* whole 16-row steps: each slice's output starts 64-byte aligned, as cuBLAS's fast kernels want
     * (an unaligned one cost 20x on the 70B down projection) */
    long step = KC_F16_SLICE / w->k / 16 * 16;
    if (step < 16) step = 16;
    long r0 = 0;
    for (int p = 0; p < a.np; p++) {
        const long pn = a.np > 1 ? a.pstart[p + 1] - a.pstart[p] : w->n;
        float *y = a.np > 1 ? a.py[p] : a.y;
        for (long r = 0; r < pn; r += step) {
            const long rows = pn - r < step ? pn - r : step;
            void *w16 = kc_f16_weights((size_t)rows * w->k);
            if (!w16) return -1;
            const long th = rows * (w->k / 8);
            if (w->s16) k_int4_expand<true><<<kc_blocks(th, 256), 256, 0, KC_STREAM>>>(w->codes, w->scales, w->k, a.ng, r0 + r, rows, (__half *)w16);
            else k_int4_expand<false><<<kc_blocks(th, 256), 256, 0, KC_STREAM>>>(w->codes, w->scales, w->k, a.ng, r0 + r, rows, (__half *)w16);
            if (kc_check_launch("k_int4_expand") || kc_f16_gemm(w16, rows, w->k, a16, a.m, y + r, pn)) return -1;
        }
        if (kc_f16_scale_rows(y, pn, a.m, pn, a.sx)) return -1;
        r0 += pn;
    }
    return 0;
}

static int int_matmul(const kc_int *w, const int8_t *qx, const float *sx, long m, float *y, float *const *parts,
                      int acc) {
    if (m == 0) return 0;
    if (m > 0x7fffffffL) {
        kc_set_error("kc_int_matmul: too many tokens (%ld)", m);
        return -1;
    }
    IntArgs a = int_args(w, qx, sx, m, y, parts);
    a.acc = acc;
    if (m <= kc_int_gemv_max(w)) return int_gemv(w, a);
    if (acc) { /* kc_int_acc_applies refuses it: the tensor paths scale y in place */
        kc_set_error("kc_int_matmul_acc: %ld tokens take the tensor-core path", m);
        return -1;
    }
    return w->bits == 8 ? int8_tensor(w, a) : int4_tensor(w, a);
}

extern "C" int kc_int_matmul(const kc_int_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0) {
        kc_set_error("kc_int_matmul: bad arguments");
        return -1;
    }
    return int_matmul(w, d_qx, d_sx, m, d_y, NULL, 0);
}

/* where y += x W^T runs (the GEMV adds in its epilogue) */
extern "C" int kc_int_acc_applies(const kc_int_t *w, long m) { return w && w->nparts == 1 && m <= kc_int_gemv_max(w); }

extern "C" int kc_int_matmul_acc(const kc_int_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0 || !kc_int_acc_applies(w, m)) {
        kc_set_error("kc_int_matmul_acc: bad arguments");
        return -1;
    }
    return int_matmul(w, d_qx, d_sx, m, d_y, NULL, 1);
}

/* Static SQ activations, m tokens as 2m rows (kc_quant_static_i8): the
 * GEMV adds each token's two products in its epilogue (k_add_pairs's sum,
 * then the residual add where acc), one launch instead of three. The 2m
 * rows must fit the GEMV; int_gemv's chunks of 8 rows keep a token's two
 * rows in one launch, and NT is even whenever rows are (2, 4 or 8). */
extern "C" int kc_int_pairs_applies(const kc_int_t *w, long m) { return w && m >= 1 && 2 * m <= kc_int_gemv_max(w); }

extern "C" int kc_int_matmul_pairs(const kc_int_t *w, const int8_t *d_q2, const float *d_sx2, long m,
                                   float *const *d_y, int acc) {
    if (!w || !d_q2 || !d_sx2 || !d_y || !kc_int_pairs_applies(w, m) || (acc && w->nparts > 1)) {
        kc_set_error("kc_int_matmul_pairs: bad arguments");
        return -1;
    }
    for (int p = 0; p < w->nparts; p++)
        if (!d_y[p]) {
            kc_set_error("kc_int_matmul_pairs: no output for part %d", p);
            return -1;
        }
    IntArgs a = int_args(w, d_q2, d_sx2, 2 * m, d_y[0], d_y);
    a.acc = acc, a.pairs = 1;
    return int_gemv(w, a);
}

extern "C" int kc_int_matmul_parts(const kc_int_t *w, const int8_t *d_qx, const float *d_sx, long m, float *const *d_y) {
    if (!w || !d_qx || !d_sx || !d_y || m < 0) {
        kc_set_error("kc_int_matmul_parts: bad arguments");
        return -1;
    }
    for (int p = 0; p < w->nparts; p++)
        if (!d_y[p]) {
            kc_set_error("kc_int_matmul_parts: no output for part %d", p);
            return -1;
        }
    return int_matmul(w, d_qx, d_sx, m, d_y[0], d_y, 0);
}
