/* kc_gguf.cu - GGUF weight matrices on the GPU without an FP32 copy (kc.h).
 *
 * Storage. Q4_0, Q4_1, Q8_0, Q4_K and Q6_K stay in their GGUF blocks,
 * repacked at load into two arrays per matrix: the blocks' quant bytes
 * [n][nb][QB] (QB a multiple of 16: Q4_0/Q4_1 16, Q8_0 32, Q4_K its whole
 * 144-byte block, Q6_K its first 208 bytes: ql, qh, scales) and their 16-bit
 * headers [n][nb][DB] (Q4_0/Q8_0/Q6_K d; Q4_1 d and m; none for Q4_K, whose
 * header sits inside its 144 bytes). Why repack: as stored, blocks of 18, 20,
 * 34 and 210 bytes are only 2-byte aligned, so no lane could load 4, 8 or 16
 * bytes of quants at once; split, every quant run is 16-byte aligned and the
 * device bytes still equal the file's bytes (the repack is a copy at load).
 * Every other type that the CPU dequantizes (F32, Q5_0, Q5_1, Q5_K) goes to
 * the device as FP16 (the CPU's dequantized value rounded to nearest even),
 * or BF16 where a value exceeds FP16's range; F16 and BF16 stay as stored
 * (exact). Two bytes a weight instead of the FP32 path's four.
 *
 * Numbers. The device dequantization of a block is the CPU reference's
 * (kernels/cpu/k_quant.c) operation for operation, with the products and
 * sums written as __fmul_rn/__fadd_rn/__fsub_rn so nvcc cannot contract
 * them into FMAs: the FP32 values are the CPU's bit for bit (test_kc_gguf).
 *
 * Few tokens (m <= kc_gguf_gemv_max(w): 8, 4 for Q4_0/Q4_1, the crossover
 * measured on the H200; groups of up to 8 activation rows): k_gemv. A block
 * of 256 threads takes R rows (8, 4 or 2 by m and type) and splits their
 * blocks into small chunks (8 or 16 values: 8 quant bytes of Q4_0/Q4_1/
 * Q8_0/Q4_K, 3 x 4 of Q6_K, 16 bytes of F16/BF16), consecutive threads on
 * consecutive bytes, so a warp's weight load and its activation load (FP32,
 * through the caches) each cover contiguous memory. A thread dequantizes its
 * chunk of all R rows into registers, loads the activation chunk once for
 * them, sums in FP32; a warp reduction and one over the 8 warps finish (a
 * fixed order: deterministic). Each weight byte is read once per group of 8
 * activation rows. A first version gave a lane a whole 32-block (one 16-byte
 * load): its activation loads touched 32 cache lines per instruction and the
 * GEMV ran at ~0.5 TB/s; this layout reaches 1.4-1.7 TB/s on 8B Q4_0
 * matrices and 2.6 on Q8_0 (docs/perf-gpu.md): dequantization instructions,
 * not bytes, now bound the 4-bit types.
 *
 * Many tokens: the weights of a slice of rows are dequantized into an FP16
 * scratch matrix (BF16 for BF16 storage; a 16-bit matrix needs no
 * expansion), the activations converted to the same type, and cuBLAS's
 * tensor-core GEMM sums in FP32 (the llama.cpp way). The result differs
 * from the FP32 path by one 16-bit rounding of each weight and activation
 * (2^-11 relative with FP16, 2^-8 with BF16); an activation past FP16's
 * range (65504) would overflow there, as in llama.cpp. The scratch follows
 * kc_sq_gemm.cu: slices of at most 128 Mi weights, buffers grown to powers
 * of two and never freed (captured CUDA graphs keep their addresses).
 */
#include "kc_internal.h"
extern "C" {
#include "../k_quant.h" /* a C header without C++ guards */
}

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* device formats */
enum { F_Q4_0, F_Q4_1, F_Q8_0, F_Q4_K, F_Q6_K, F_F16, F_BF16, F_COUNT };

/* BE elements a block; QB quant bytes and DB header bytes a block on the
 * device; a lane's chunk (CPB chunks a block) is RUNS runs of RL consecutive
 * elements. Chunks are small (8 or 16 values) and consecutive lanes take
 * consecutive quant bytes, so that a warp's weight loads and its activation
 * loads both cover contiguous memory (a lane owning a whole 32-block made
 * every activation load touch 32 cache lines: 0.5 TB/s measured). */
template <int F> struct Fmt;
template <> struct Fmt<F_Q4_0> { enum { BE = 32, QB = 16, DB = 2, CPB = 2, RUNS = 2, RL = 8 }; };
template <> struct Fmt<F_Q4_1> { enum { BE = 32, QB = 16, DB = 4, CPB = 2, RUNS = 2, RL = 8 }; };
template <> struct Fmt<F_Q8_0> { enum { BE = 32, QB = 32, DB = 2, CPB = 4, RUNS = 1, RL = 8 }; };
template <> struct Fmt<F_Q4_K> { enum { BE = 256, QB = 144, DB = 0, CPB = 16, RUNS = 2, RL = 8 }; };
template <> struct Fmt<F_Q6_K> { enum { BE = 256, QB = 208, DB = 2, CPB = 16, RUNS = 4, RL = 4 }; };
template <> struct Fmt<F_F16> { enum { BE = 8, QB = 16, DB = 0, CPB = 1, RUNS = 1, RL = 8 }; };
template <> struct Fmt<F_BF16> { enum { BE = 8, QB = 16, DB = 0, CPB = 1, RUNS = 1, RL = 8 }; };

/* host-side description of the same (GGUF block: where its header bytes are) */
static const struct {
    uint32_t ggml;
    int be, qb, db, cpb;
    int hdr_off; /* offset of the DB header bytes in the GGUF block (QB bytes are the rest) */
    const char *name;
} FMT[F_COUNT] = {
    {K_Q4_0, 32, 16, 2, 1, 0, "Q4_0"},  {K_Q4_1, 32, 16, 4, 1, 0, "Q4_1"},   {K_Q8_0, 32, 32, 2, 1, 0, "Q8_0"},
    {K_Q4_K, 256, 144, 0, 4, 0, "Q4_K"}, {K_Q6_K, 256, 208, 2, 4, 208, "Q6_K"}, {K_F16, 8, 16, 0, 1, 0, "F16"},
    {K_BF16, 8, 16, 0, 1, 0, "BF16"},
};

struct kc_gguf {
    uint32_t type; /* the GGUF type it came from */
    int fmt;       /* F_* on the device */
    long n, k, nb; /* nb: blocks a row */
    uint8_t *qs, *dd;
    size_t bytes;
    char desc[64];
};

/* Element offset inside the block of run j of chunk c. */
template <int F> __device__ __forceinline__ int run_off(int c, int j) {
    if (F == F_Q4_0 || F == F_Q4_1) return 8 * c + 16 * j; /* bytes 8c..8c+7: low nibbles, then high */
    if (F == F_Q8_0) return 8 * c;
    if (F == F_Q4_K) return 64 * (c >> 2) + 8 * (c & 3) + 32 * j; /* 8 bytes of a 32-byte pair */
    if (F == F_Q6_K) return 128 * (c >> 3) + 4 * (c & 7) + 32 * j; /* l = 4(c & 7) .. + 3 of a half */
    return 0;
}

__device__ __forceinline__ float ld_half(const uint8_t *p) { return __half2float(__ldg((const __half *)p)); }
__device__ __forceinline__ int byte_of(uint32_t w, int i) { return (int)((w >> (8 * i)) & 0xff); }
__device__ __forceinline__ int byte_of(const uint4 &v, int i) {
    return byte_of(i < 4 ? v.x : i < 8 ? v.y : i < 12 ? v.z : v.w, i & 3);
}

/* Chunk c of block blk (row * nb + b) as FP32, v[j * RL + i] = run j's
 * element i: the CPU reference's arithmetic, uncontracted. */
template <int F>
__device__ __forceinline__ void dq(const uint8_t *__restrict__ qs, const uint8_t *__restrict__ dd, long blk, int c,
                                   float (&v)[Fmt<F>::RUNS * Fmt<F>::RL]) {
    if (F == F_Q4_0 || F == F_Q4_1) {
        const uint2 q = __ldg((const uint2 *)(qs + blk * 16 + 8 * c));
        const float d = ld_half(dd + blk * Fmt<F>::DB), m = F == F_Q4_1 ? ld_half(dd + blk * 4 + 2) : 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int b = byte_of(j < 4 ? q.x : q.y, j & 3);
            if (F == F_Q4_0) {
                v[j] = __fmul_rn((float)((b & 0xf) - 8), d);
                v[8 + j] = __fmul_rn((float)((b >> 4) - 8), d);
            } else {
                v[j] = __fadd_rn(__fmul_rn((float)(b & 0xf), d), m);
                v[8 + j] = __fadd_rn(__fmul_rn((float)(b >> 4), d), m);
            }
        }
    } else if (F == F_Q8_0) {
        const uint2 q = __ldg((const uint2 *)(qs + blk * 32 + 8 * c));
        const float d = ld_half(dd + blk * 2);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            v[j] = __fmul_rn((float)(int8_t)byte_of(q.x, j), d);
            v[4 + j] = __fmul_rn((float)(int8_t)byte_of(q.y, j), d);
        }
    } else if (F == F_Q4_K) {
        const uint8_t *b = qs + blk * 144;
        const uint4 h = __ldg((const uint4 *)b); /* d, dmin, 12 scale bytes: one line for the block's 16 lanes */
        const uint2 q = __ldg((const uint2 *)(b + 16 + 8 * c));
        const float d = __half2float(__ushort_as_half((unsigned short)(h.x & 0xffff)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(h.x >> 16)));
        float d12[2], m12[2];
#pragma unroll
        for (int s = 0; s < 2; s++) { /* k_scale_min(2 (c / 4) + s) over scale bytes 4..15 of the block */
            const int j = 2 * (c >> 2) + s;
            int sc, mn;
            if (j < 4) {
                sc = byte_of(h, 4 + j) & 63;
                mn = byte_of(h, 8 + j) & 63;
            } else {
                sc = (byte_of(h, 8 + j) & 0xf) | ((byte_of(h, j) >> 6) << 4);
                mn = (byte_of(h, 8 + j) >> 4) | ((byte_of(h, 4 + j) >> 6) << 4);
            }
            d12[s] = __fmul_rn(d, (float)sc);
            m12[s] = __fmul_rn(dmin, (float)mn);
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int b8 = byte_of(j < 4 ? q.x : q.y, j & 3);
            v[j] = __fsub_rn(__fmul_rn(d12[0], (float)(b8 & 0xf)), m12[0]);
            v[8 + j] = __fsub_rn(__fmul_rn(d12[1], (float)(b8 >> 4)), m12[1]);
        }
    } else if (F == F_Q6_K) {
        const uint8_t *b = qs + blk * 208;
        const int hh = c >> 3, l0 = 4 * (c & 7), is = l0 >> 4;
        const uint32_t l0w = __ldg((const uint32_t *)(b + 64 * hh + l0));
        const uint32_t l1w = __ldg((const uint32_t *)(b + 64 * hh + 32 + l0));
        const uint32_t qh = __ldg((const uint32_t *)(b + 128 + 32 * hh + l0));
        const uint2 scv = __ldg((const uint2 *)(b + 192 + 8 * hh));
        const float d = ld_half(dd + blk * 2);
        float s[4];
#pragma unroll
        for (int j = 0; j < 4; j++) { /* sc[is + 2j]: d * sc first, as the CPU's d * sc[is] * q */
            const int i = is + 2 * j;
            const int8_t sc = (int8_t)((i < 4 ? scv.x : scv.y) >> (8 * (i & 3)));
            s[j] = __fmul_rn(d, (float)sc);
        }
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const int a = byte_of(l0w, l), bb = byte_of(l1w, l), hi = byte_of(qh, l);
            v[l] = __fmul_rn(s[0], (float)(((a & 0xf) | ((hi & 3) << 4)) - 32));
            v[4 + l] = __fmul_rn(s[1], (float)(((bb & 0xf) | (((hi >> 2) & 3) << 4)) - 32));
            v[8 + l] = __fmul_rn(s[2], (float)(((a >> 4) | (((hi >> 4) & 3) << 4)) - 32));
            v[12 + l] = __fmul_rn(s[3], (float)(((bb >> 4) | (((hi >> 6) & 3) << 4)) - 32));
        }
    } else { /* F16 / BF16: 8 stored values */
        const uint4 q = __ldg((const uint4 *)(qs + blk * 16));
        const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (F == F_F16) {
                v[2 * i] = __half2float(__ushort_as_half((unsigned short)(w[i] & 0xffff)));
                v[2 * i + 1] = __half2float(__ushort_as_half((unsigned short)(w[i] >> 16)));
            } else {
                v[2 * i] = __uint_as_float(w[i] << 16);
                v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
            }
        }
    }
}

/* ---- few tokens: dequantizing GEMV ------------------------------------------------ */

/* y[t][row] (ldy) = x[t] . W[row] for t < M and the block's R rows: the
 * block's 256 threads split the rows' chunks (consecutive threads,
 * consecutive bytes), each dequantizes its chunk of all R rows and
 * multiplies them with the one activation chunk it loads; then a warp
 * reduction and one across the 8 warps (a fixed order: deterministic). */
template <int F, int M, int R>
__global__ void __launch_bounds__(256) k_gemv(const uint8_t *__restrict__ qs, const uint8_t *__restrict__ dd, long n,
                                              long nb, const float *__restrict__ x, long k, float *__restrict__ y,
                                              long ldy) {
    typedef Fmt<F> T;
    enum { V = T::RUNS * T::RL };
    __shared__ float part[8][R * M];
    const long row0 = (long)blockIdx.x * R;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long nch = nb * T::CPB;
    long rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = (row0 + r < n ? row0 + r : n - 1) * nb; /* past n: computed, not stored */
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[r][t] = 0.0f;
#pragma unroll 2
    for (long c = tid; c < nch; c += 256) {
        const long b = c / T::CPB;
        const int cb = (int)(c % T::CPB);
        float v[R][V];
#pragma unroll
        for (int r = 0; r < R; r++) dq<F>(qs, dd, rows[r] + b, cb, v[r]);
#pragma unroll
        for (int t = 0; t < M; t++) {
            const float *xr = x + t * k + b * T::BE;
            float xv[V];
#pragma unroll
            for (int j = 0; j < T::RUNS; j++)
#pragma unroll
                for (int i = 0; i < T::RL / 4; i++) {
                    const float4 a = __ldg((const float4 *)(xr + run_off<F>(cb, j)) + i);
                    xv[j * T::RL + 4 * i] = a.x, xv[j * T::RL + 4 * i + 1] = a.y;
                    xv[j * T::RL + 4 * i + 2] = a.z, xv[j * T::RL + 4 * i + 3] = a.w;
                }
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int e = 0; e < V; e++) acc[r][t] = fmaf(v[r][e], xv[e], acc[r][t]);
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < M; t++) {
            float s = acc[r][t];
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (lane == 0) part[warp][r * M + t] = s;
        }
    __syncthreads();
    if (tid < R * M) {
        const int r = tid / M, t = tid % M;
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; w++) s += part[w][tid];
        if (row0 + r < n) y[t * ldy + row0 + r] = s;
    }
}

/* ---- dequantization into a matrix (GEMM scratch, embedding rows, tests) ---------- */

__device__ __forceinline__ void store4(float *p, const float *v) { *(float4 *)p = make_float4(v[0], v[1], v[2], v[3]); }
__device__ __forceinline__ void store4(__half *p, const float *v) {
    __half2 h[2] = {__floats2half2_rn(v[0], v[1]), __floats2half2_rn(v[2], v[3])};
    *(uint2 *)p = *(const uint2 *)h;
}
__device__ __forceinline__ void store4(__nv_bfloat16 *p, const float *v) {
    __nv_bfloat162 h[2] = {__floats2bfloat162_rn(v[0], v[1]), __floats2bfloat162_rn(v[2], v[3])};
    *(uint2 *)p = *(const uint2 *)h;
}

/* out[i][k] = row (idx ? idx[i] : r0 + i) of W, i < rows; one thread a chunk */
template <int F, typename O>
__global__ void k_dequant(const uint8_t *__restrict__ qs, const uint8_t *__restrict__ dd, long nb, long k, long r0,
                          long rows, const int32_t *__restrict__ idx, O *__restrict__ out) {
    typedef Fmt<F> T;
    const long nch = nb * T::CPB;
    const long id = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= rows * nch) return;
    const long i = id / nch, c = id % nch, b = c / T::CPB;
    const int cb = (int)(c % T::CPB);
    const long row = idx ? (long)idx[i] : r0 + i;
    float v[T::RUNS * T::RL];
    dq<F>(qs, dd, row * nb + b, cb, v);
    O *o = out + i * k + b * T::BE;
#pragma unroll
    for (int j = 0; j < T::RUNS; j++)
#pragma unroll
        for (int e = 0; e < T::RL; e += 4) store4(o + run_off<F>(cb, j) + e, v + j * T::RL + e);
}

template <typename O> __global__ void k_to16(const float *__restrict__ x, long count4, O *__restrict__ out) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count4) return;
    const float4 a = __ldg((const float4 *)x + i);
    const float v[4] = {a.x, a.y, a.z, a.w};
    store4(out + 4 * i, v);
}

/* ---- dispatch over formats -------------------------------------------------------- */

/* rows a block: 4 up to 4 tokens, 2 beyond (registers: R x M sums, R
 * chunks); Q4_0/Q4_1 at one token 8 (more weight bytes in flight per thread,
 * each activation chunk loaded once for all of them: 19.6 against 24.5 us on
 * an 8B down matrix; the other types measured slower with 8) */
#define RB(M_) ((M_) == 1 && (F == F_Q4_0 || F == F_Q4_1) ? 8 : (M_) <= 4 ? 4 : 2)
template <int F> static int gemv_f(const kc_gguf *w, const float *x, long m, float *y, long ldy) {
    for (long t0 = 0; t0 < m; t0 += 8) {
        const long mm = m - t0 < 8 ? m - t0 : 8;
        const float *xs = x + t0 * w->k;
        float *ys = y + t0 * ldy;
        switch (mm) {
#define G(M_)                                                                                              \
    case M_:                                                                                               \
        k_gemv<F, M_, RB(M_)><<<(unsigned)((w->n + RB(M_) - 1) / RB(M_)), 256, 0, KC_STREAM>>>(                 \
            w->qs, w->dd, w->n, w->nb, xs, w->k, ys, ldy);                                                       \
        break;
            G(1) G(2) G(3) G(4) G(5) G(6) G(7) G(8)
#undef G
        }
        if (kc_check_launch("k_gemv (GGUF)")) return -1;
    }
    return 0;
}

template <int F, typename O>
static int dequant_f(const kc_gguf *w, long r0, long rows, const int32_t *idx, O *out) {
    const long chunks = rows * w->nb * Fmt<F>::CPB;
    if (chunks <= 0) return 0;
    k_dequant<F, O><<<kc_blocks(chunks, 128), 128, 0, KC_STREAM>>>(w->qs, w->dd, w->nb, w->k, r0, rows, idx, out);
    return kc_check_launch("k_dequant (GGUF)");
}

#define FMT_SWITCH(fmt, CALL)                                                                              \
    switch (fmt) {                                                                                         \
    case F_Q4_0: return CALL(F_Q4_0);                                                                      \
    case F_Q4_1: return CALL(F_Q4_1);                                                                      \
    case F_Q8_0: return CALL(F_Q8_0);                                                                      \
    case F_Q4_K: return CALL(F_Q4_K);                                                                      \
    case F_Q6_K: return CALL(F_Q6_K);                                                                      \
    case F_F16: return CALL(F_F16);                                                                        \
    default: return CALL(F_BF16);                                                                          \
    }

static int gemv(const kc_gguf *w, const float *x, long m, float *y) {
#define C(F) gemv_f<F>(w, x, m, y, w->n)
    FMT_SWITCH(w->fmt, C)
#undef C
}

template <typename O> static int dequant_to(const kc_gguf *w, long r0, long rows, const int32_t *idx, O *out) {
#define C(F) dequant_f<F, O>(w, r0, rows, idx, out)
    FMT_SWITCH(w->fmt, C)
#undef C
}

/* ---- host side -------------------------------------------------------------------- */

static long g_gemv_max = -1;
static void *g_w16, *g_a16; /* scratch: weights of one slice, activations (16-bit) */
static size_t g_w16_n, g_a16_n; /* their bytes */
#define SLICE_WEIGHTS (128L << 20)

extern "C" void kc_gguf_set_gemv_max(long m) { g_gemv_max = m; }

/* The crossover measured on the H200 (test_kc_gguf --bench, docs/perf-gpu.md):
 * the GEMV beats the expansion + GEMM up to 8 rows (Q4_0/Q4_1: 4, whose
 * 16-value chunks cost registers at 8 rows); KC_GGUF_GEMV_M or
 * kc_gguf_set_gemv_max overrides it for every type. */
extern "C" long kc_gguf_gemv_max(const kc_gguf_t *w) {
    if (g_gemv_max == -1) {
        const char *e = getenv("KC_GGUF_GEMV_M");
        g_gemv_max = e && *e && atol(e) >= 0 ? atol(e) : -2; /* -2: the per-type default */
    }
    if (g_gemv_max >= 0) return g_gemv_max;
    return w && (w->fmt == F_Q4_0 || w->fmt == F_Q4_1) ? 4 : 8;
}

static int grow(void **buf, size_t *have_bytes, size_t need_halves) {
    return kc_grow(buf, have_bytes, need_halves * 2, (size_t)32 << 20);
}

static int f_of(uint32_t type) {
    for (int f = 0; f < F_COUNT; f++)
        if (FMT[f].ggml == type) return f;
    return -1;
}

extern "C" int kc_gguf_native(uint32_t type) {
    const int f = f_of(type);
    return f >= 0 && f < F_F16;
}

/* BF16 of a float, round to nearest even (NaN kept quiet) */
static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* rows [r0, r0 + cnt) of a block type, repacked into qs/dd staging */
static void repack(const kc_gguf *w, const uint8_t *rows, size_t row_bytes, long r0, long cnt, uint8_t *sq,
                   uint8_t *sd) {
    const int f = w->fmt, bb = (int)k_type_info(w->type)->block_bytes, qb = FMT[f].qb, db = FMT[f].db,
              ho = FMT[f].hdr_off;
    for (long r = 0; r < cnt; r++) {
        const uint8_t *src = rows + (size_t)(r0 + r) * row_bytes;
        for (long b = 0; b < w->nb; b++) {
            const uint8_t *blk = src + (size_t)b * bb;
            const size_t o = (size_t)r * w->nb + b;
            if (db) memcpy(sd + o * db, blk + ho, (size_t)db);
            memcpy(sq + o * qb, ho == 0 ? blk + db : blk, (size_t)qb);
        }
    }
}

/* rows [r0, r0 + cnt) of any dequantizable type as 16-bit values; -1 when
 * FP16 was asked for and a value does not fit it */
static int to16(const kc_gguf *w, const uint8_t *rows, size_t row_bytes, long r0, long cnt, float *tmp,
                uint16_t *out) {
    for (long r = 0; r < cnt; r++) {
        const uint8_t *src = rows + (size_t)(r0 + r) * row_bytes;
        uint16_t *o = out + (size_t)r * w->k;
        if (w->type == K_F16 || w->type == K_BF16) { /* as stored */
            memcpy(o, src, (size_t)w->k * 2);
            continue;
        }
        k_dequant_row(w->type, src, tmp, (size_t)w->k);
        for (long j = 0; j < w->k; j++) {
            if (w->fmt == F_BF16) {
                o[j] = f32_to_bf16(tmp[j]);
            } else {
                if (!(fabsf(tmp[j]) <= 65504.0f)) return -1;
                o[j] = k_f32_to_f16(tmp[j]);
            }
        }
    }
    return 0;
}

extern "C" void kc_gguf_free(kc_gguf_t *w) {
    if (!w) return;
    kc_free(w->qs);
    kc_free(w->dd);
    free(w);
}

static int upload_all(kc_gguf *w, const void *rows, size_t row_bytes) {
    const int f = w->fmt;
    const int native = f < F_F16;
    const size_t qrow = native ? (size_t)w->nb * FMT[f].qb : (size_t)w->k * 2, drow = (size_t)w->nb * FMT[f].db;
    long step = (long)((64u << 20) / (qrow + drow + (native ? 0 : (size_t)w->k * 4)));
    if (step < 1) step = 1;
    uint8_t *stage = (uint8_t *)malloc((size_t)step * (qrow + drow));
    float *tmp = native ? NULL : (float *)malloc((size_t)w->k * sizeof(float));
    int rc = 0;
    if (!stage || (!native && !tmp)) {
        kc_set_error("out of host memory staging a %s matrix", FMT[f].name);
        rc = -1;
    }
    for (long r0 = 0; rc == 0 && r0 < w->n; r0 += step) {
        const long cnt = w->n - r0 < step ? w->n - r0 : step;
        uint8_t *sq = stage, *sd = stage + (size_t)cnt * qrow;
        if (native) repack(w, (const uint8_t *)rows, row_bytes, r0, cnt, sq, sd);
        else if (to16(w, (const uint8_t *)rows, row_bytes, r0, cnt, tmp, (uint16_t *)sq) != 0) rc = 1;
        if (rc == 0 && (kc_upload(w->qs + (size_t)r0 * qrow, sq, (size_t)cnt * qrow) ||
                        (drow && kc_upload(w->dd + (size_t)r0 * drow, sd, (size_t)cnt * drow)) || kc_sync()))
            rc = -1;
    }
    free(stage);
    free(tmp);
    return rc;
}

extern "C" kc_gguf_t *kc_gguf_upload(uint32_t type, long n, long k, const void *rows, size_t row_bytes) {
    const k_type_info_t *ti = k_type_info(type);
    if (!ti || !ti->dequant || n <= 0 || k <= 0 || k % ti->block_elems) {
        kc_set_error("GGUF type %u with rows of %ld elements has no GPU form", type, k);
        return NULL;
    }
    int f = f_of(type);
    if (f < 0) f = F_F16; /* F32, Q5_0, Q5_1, Q5_K: 16 bits, FP16 unless out of range */
    if (f >= F_F16 && k % 8) {
        kc_set_error("%s rows of %ld elements (not a multiple of 8) have no 16-bit GPU form", ti->name, k);
        return NULL;
    }
    kc_gguf *w = (kc_gguf *)calloc(1, sizeof *w);
    if (!w) {
        kc_set_error("out of host memory");
        return NULL;
    }
    w->type = type, w->n = n, w->k = k;
    for (int attempt = 0; attempt < 2; attempt++) {
        w->fmt = f;
        w->nb = k / FMT[f].be;
        const size_t qbytes = (size_t)n * w->nb * FMT[f].qb, dbytes = (size_t)n * w->nb * FMT[f].db;
        w->bytes = qbytes + dbytes;
        if (!(w->qs = (uint8_t *)kc_malloc(qbytes)) || (dbytes && !(w->dd = (uint8_t *)kc_malloc(dbytes)))) break;
        const int rc = upload_all(w, rows, row_bytes);
        if (rc == 0) {
            if (f < F_F16) snprintf(w->desc, sizeof w->desc, "%s blocks", ti->name);
            else if (type == K_F16 || type == K_BF16) snprintf(w->desc, sizeof w->desc, "%s as stored", ti->name);
            else snprintf(w->desc, sizeof w->desc, "%s as %s", ti->name, f == F_F16 ? "FP16" : "BF16");
            return w;
        }
        kc_free(w->qs);
        kc_free(w->dd);
        w->qs = w->dd = NULL;
        if (rc < 0) break;
        f = F_BF16; /* a value past FP16's range: BF16 keeps it */
    }
    kc_gguf_free(w);
    return NULL;
}

extern "C" size_t kc_gguf_bytes(const kc_gguf_t *w) { return w ? w->bytes : 0; }
extern "C" const char *kc_gguf_describe(const kc_gguf_t *w) { return w->desc; }

extern "C" int kc_gguf_dequant(const kc_gguf_t *w, long r0, long rows, float *d_out) {
    if (r0 < 0 || rows < 0 || r0 + rows > w->n) {
        kc_set_error("kc_gguf_dequant: rows [%ld, %ld) outside %ld", r0, r0 + rows, w->n);
        return -1;
    }
    return dequant_to<float>(w, r0, rows, NULL, d_out);
}

extern "C" int kc_gguf_embed(float *d_out, const kc_gguf_t *w, const int32_t *d_tok, int n) {
    return n <= 0 ? 0 : dequant_to<float>(w, 0, n, d_tok, d_out);
}

/* y (ldy) = A16 [m][k] . W16 [n][k]^T, FP32 out and sums */
static int gemm16(const void *w16, long n, long k, const void *a16, long m, float *y, long ldy, int bf16) {
    return kc_gemm_nt(bf16 ? KC_GEMM_BF16 : KC_GEMM_F16, w16, n, k, a16, m, y, ldy);
}

static int gemm_path(const kc_gguf *w, const float *d_x, long m, float *d_y) {
    const int bf16 = w->fmt == F_BF16, stored16 = w->fmt >= F_F16;
    long step = stored16 ? w->n : SLICE_WEIGHTS / w->k;
    if (step < 1) step = 1;
    const long slice = w->n < step ? w->n : step;
    if (grow(&g_a16, &g_a16_n, (size_t)m * w->k) || (!stored16 && grow(&g_w16, &g_w16_n, (size_t)slice * w->k)))
        return -1;
    const long n4 = m * w->k / 4; /* k is a multiple of 8 */
    if (bf16) k_to16<__nv_bfloat16><<<kc_blocks(n4, 256), 256, 0, KC_STREAM>>>(d_x, n4, (__nv_bfloat16 *)g_a16);
    else k_to16<__half><<<kc_blocks(n4, 256), 256, 0, KC_STREAM>>>(d_x, n4, (__half *)g_a16);
    if (kc_check_launch("k_to16")) return -1;
    if (stored16) return gemm16(w->qs, w->n, w->k, g_a16, m, d_y, w->n, bf16);
    for (long r = 0; r < w->n; r += step) {
        const long rows = w->n - r < step ? w->n - r : step;
        if (dequant_to<__half>(w, r, rows, NULL, (__half *)g_w16) ||
            gemm16(g_w16, rows, w->k, g_a16, m, d_y + r, w->n, 0))
            return -1;
    }
    return 0;
}

extern "C" int kc_gguf_matmul_path(const kc_gguf_t *w, const float *d_x, long m, float *d_y, int path) {
    if (m <= 0) return 0;
    if (path == 0) path = m <= kc_gguf_gemv_max(w) ? 1 : 2;
    return path == 1 ? gemv(w, d_x, m, d_y) : gemm_path(w, d_x, m, d_y);
}

extern "C" int kc_gguf_matmul(const kc_gguf_t *w, const float *d_x, long m, float *d_y) {
    return kc_gguf_matmul_path(w, d_x, m, d_y, 0);
}
