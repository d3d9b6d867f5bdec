/* bench_gemm.cu - sqserve's SQ-format matmul against cuBLAS(Lt) BF16, FP8
 * (e4m3, per-tensor scales) and INT8 (int8 -> int32) on the GEMM shapes of
 * Llama-3-8B and -70B at M = 1, 16, 128, 1024, 4096 tokens.
 *
 *   build/gpu/bench_gemm [--quick] [--reps N] [--shape NAME] [--m M] [--decode | --twostep | --isdec | --stages | --wg | --baselines]
 * (--isdec: the fused decode kernels on integer bank scales, INT32 sums against the float combination)
 * (--stages: the stream-k decode kernel from 9 tokens, loads into registers against a ring of 2..4 stages)
 * (--wg: integer bank scales on the wgmma kernel against the path taken without it, and BF16)
 * (--twostep: the many-token paths by M, the INT8 path of integer bank scales included)
 * (--shape / --m run one shape / one M, e.g. under a profiler)
 *
 * Method: every kernel is timed alone with CUDA events, after an L2 flush
 * (a read of 256 MB, so weights are never L2-resident: 50 MB L2, and the
 * lines left behind are clean; BENCH_FLUSH below), median of
 * N runs (default 9) after 3 warm-up runs. The same random weights are used
 * for all runs of a kernel (values do not change the timing of these
 * kernels, but zeros are avoided). SQ is 8/4 b64 s0.875 (h = 8 highs per
 * 64) from kc_sq_random: "SQ" with float scales (the layout sq_quantize's
 * scales get: 6.0 bits/weight in the compact layout, 7.0 in the explicit
 * one), "SQh" with scales that are exact halves (5.5 / 6.5 bits/weight).
 * --decode: M = 1..16, SQ kernels only, plus q/k/v and gate/up fused into
 * one launch (kc_sq_fuse) against one launch per part.
 * SQ times are kc_sq_matmul alone (activations already
 * INT8, as for cuBLAS INT8); kc_quant_i8 is timed separately.
 * Bytes are the compulsory traffic: weights + activations read, outputs
 * written (SQ float, BF16/FP8 bf16, INT8 int32). TB/s = bytes / time.
 * "bound" = SQ bytes / measured copy bandwidth; "4-bit" = N*K/2 bytes / the
 * same. The copy bandwidth is measured here (device-to-device memcpy,
 * read + write counted).
 * cuBLASLt constraints: FP8 and INT8 need the TN layout (used for all) and
 * may refuse small M; where no algorithm is found for M, M is padded to the
 * next of 4, 8, 16 and the row is footnoted.
 */
#include "../../kernels/cuda/kc.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#define CK(x)                                                                                         \
    do {                                                                                              \
        cudaError_t e_ = (x);                                                                         \
        if (e_ != cudaSuccess) {                                                                      \
            fprintf(stderr, "bench_gemm: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__); \
            exit(2);                                                                                  \
        }                                                                                             \
    } while (0)
#define KC(x)                                                                  \
    do {                                                                       \
        if ((x) != 0) {                                                        \
            fprintf(stderr, "bench_gemm: %s: %s\n", #x, kc_error());           \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

static cudaStream_t st;
static cublasLtHandle_t lt;
static void *wksp;
static const size_t WKSP = 64u << 20;
static void *flushbuf;
static const size_t FLUSH = 256u << 20;
/* BENCH_FLUSH: how L2 is emptied before each timed launch. read (the
 * default) leaves it clean, as a decode step does (its other kernels write
 * little); memset (the method of the tables before 2026-12-04) leaves it
 * full of dirty lines that the timed kernel's reads then write back, 5-14 %
 * more time on the decode shapes (docs/perf-gpu.md); none times the kernel
 * with L2 as the previous run left it (weights that fit then come from L2). */
static int flush_mode = 1; /* 0 memset, 1 read, 2 none */

__global__ void k_flush_read(const uint4 *p, size_t n, unsigned *sink) {
    uint32_t acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldcg(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) *sink = acc; /* keeps the loads */
}

static void flush_l2(int r) {
    if (flush_mode == 0) CK(cudaMemsetAsync(flushbuf, r & 0xFF, FLUSH, st));
    if (flush_mode == 1) {
        k_flush_read<<<1024, 256, 0, st>>>((const uint4 *)flushbuf, FLUSH / 16, (unsigned *)flushbuf);
        CK(cudaGetLastError());
    }
}
static int reps = 9;

__device__ __forceinline__ uint64_t hmix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float hrand(uint64_t i, uint64_t seed) { /* [-1, 1), never exactly 0 */
    return ((float)(hmix(i ^ seed) >> 40) + 0.5f) / 8388608.0f - 1.0f;
}
__global__ void fill_bf16(__nv_bfloat16 *p, size_t n, float sc, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(hrand(i, seed) * sc);
}
__global__ void fill_fp8(__nv_fp8_e4m3 *p, size_t n, float sc, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = __nv_fp8_e4m3(hrand(i, seed) * sc);
}
__global__ void fill_i8(int8_t *p, size_t n, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (int8_t)((int)(hmix(i ^ seed) % 255) - 127);
}
__global__ void fill_f32(float *p, size_t n, float sc, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = hrand(i, seed) * sc;
}

template <typename F>
static double time_us(F &&launch) {
    std::vector<cudaEvent_t> ev(2 * (reps + 3));
    for (auto &e : ev) CK(cudaEventCreate(&e));
    for (int r = 0; r < reps + 3; r++) {
        flush_l2(r);
        CK(cudaEventRecord(ev[2 * r], st));
        launch();
        CK(cudaEventRecord(ev[2 * r + 1], st));
    }
    CK(cudaStreamSynchronize(st));
    if (kc_sync() != 0) {
        fprintf(stderr, "bench_gemm: %s\n", kc_error());
        exit(2);
    }
    std::vector<double> t;
    for (int r = 3; r < reps + 3; r++) {
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, ev[2 * r], ev[2 * r + 1]));
        t.push_back(ms * 1e3);
    }
    for (auto &e : ev) cudaEventDestroy(e);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/* one cuBLASLt GEMM: D[N][M] (column-major, = y[M][N]) = W[N][K] . X[M][K]^T */
struct LtGemm {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
    bool ok = false;
    ~LtGemm() {
        if (op) cublasLtMatmulDescDestroy(op);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (c) cublasLtMatrixLayoutDestroy(c);
    }
};

enum Kind { BF16, FP8, INT8 };

static bool lt_setup(LtGemm &g, Kind kind, long N, long M, long K, const float *d_one) {
    cudaDataType_t ab = kind == BF16 ? CUDA_R_16BF : kind == FP8 ? CUDA_R_8F_E4M3 : CUDA_R_8I;
    cudaDataType_t cd = kind == INT8 ? CUDA_R_32I : CUDA_R_16BF;
    cublasComputeType_t ct = kind == INT8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
    cudaDataType_t sc = kind == INT8 ? CUDA_R_32I : CUDA_R_32F;
    if (cublasLtMatmulDescCreate(&g.op, ct, sc) != CUBLAS_STATUS_SUCCESS) return false;
    cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof tA);
    cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof tB);
    if (kind == FP8) {
        cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &d_one, sizeof d_one);
        cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &d_one, sizeof d_one);
    }
    if (cublasLtMatrixLayoutCreate(&g.a, ab, K, N, K) || cublasLtMatrixLayoutCreate(&g.b, ab, K, M, K) ||
        cublasLtMatrixLayoutCreate(&g.c, cd, N, M, N))
        return false;
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &WKSP, sizeof WKSP);
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt, g.op, g.a, g.b, g.c, g.c, pref, 1, &res, &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || nres == 0) return false;
    g.algo = res.algo;
    g.ok = true;
    return true;
}

static void lt_run(LtGemm &g, Kind kind, const void *W, const void *X, void *D) {
    float one = 1.0f, zero = 0.0f;
    int32_t ione = 1, izero = 0;
    const void *al = kind == INT8 ? (const void *)&ione : (const void *)&one;
    const void *be = kind == INT8 ? (const void *)&izero : (const void *)&zero;
    cublasStatus_t s = cublasLtMatmul(lt, g.op, al, W, g.a, X, g.b, be, D, g.c, D, g.c, &g.algo, wksp, WKSP, st);
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "bench_gemm: cublasLtMatmul failed: %s\n", cublasGetStatusString(s));
        exit(2);
    }
}

/* times one cuBLASLt kind at M (padding M to 4, 8, 16 when refused); *used gets the M run */
static double lt_time(Kind kind, long N, long M, long K, const void *W, const void *X, void *D, const float *d_one,
                      long *used) {
    static const long pads[] = {1, 4, 8, 16};
    for (long p : pads) {
        long Mp = (M + p - 1) / p * p;
        if (p > 1 && Mp == M) continue;
        LtGemm g;
        if (!lt_setup(g, kind, N, Mp, K, d_one)) continue;
        *used = Mp;
        return time_us([&] { lt_run(g, kind, W, X, D); });
    }
    *used = -1;
    return NAN;
}

struct Shape {
    const char *name;
    long N, K;
};

/* --decode: the SQ decode kernels alone at M = 1..16 on every shape: SQh
 * (half scales, the compact layout's 5.5 bits/weight), SQ (float scales,
 * 6.0) and, for q/k/v and gate/up, the parts fused into one launch
 * (kc_sq_fuse + kc_sq_matmul_parts) against one launch per part. */
struct DShape {
    const char *name;
    long N, K;
    int np;
    long parts[3];
};

static int decode_table(double bw, const char *only_shape, long only_m) {
    const DShape shapes[] = {{"8B qkv", 6144, 4096, 3, {4096, 1024, 1024}}, {"8B o", 4096, 4096, 1, {4096}},
                             {"8B gate_up", 28672, 4096, 2, {14336, 14336}}, {"8B down", 4096, 14336, 1, {4096}},
                             {"70B qkv", 10240, 8192, 3, {8192, 1024, 1024}}, {"70B o", 8192, 8192, 1, {8192}},
                             {"70B gate_up", 57344, 8192, 2, {28672, 28672}}, {"70B down", 8192, 28672, 1, {8192}}};
    const long Ms[] = {1, 2, 4, 8, 16};
    printf("| shape (N x K) | M | SQh us | SQh TB/s | SQh %%copy | SQh k_sq_dec us | SQ us | SQ %%copy | SQ k_sq_dec us | "
           "fused parts us | %%copy | one launch per part us | %%copy |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const DShape &sh : shapes) {
        if (only_shape && strcmp(only_shape, sh.name)) continue;
        const long N = sh.N, K = sh.K, MMAX = 16;
        kc_sq_t *sqh = kc_sq_random_ex(N, K, 4, 64, 8, 2000, KC_SQ_F16_SCALES), *sq = kc_sq_random(N, K, 4, 64, 8, 1000);
        kc_sq_t *part[3] = {NULL, NULL, NULL}, *fused = NULL;
        for (int p = 0; p < sh.np && sh.np > 1; p++)
            part[p] = kc_sq_random_ex(sh.parts[p], K, 4, 64, 8, 3000 + p, KC_SQ_F16_SCALES);
        if (sh.np > 1) fused = kc_sq_fuse((const kc_sq_t *const *)part, sh.np);
        if (!sqh || !sq || (sh.np > 1 && !fused)) {
            fprintf(stderr, "bench_gemm: %s\n", kc_error());
            return 2;
        }
        if (sh.name == shapes[0].name) printf("(layouts: %s; %s; %s)\n\n", kc_sq_describe(sqh), kc_sq_describe(sq), kc_sq_describe(fused));
        int8_t *xi;
        float *xs, *sx, *ys, *yp[3];
        CK(cudaMalloc(&xi, (size_t)MMAX * K));
        CK(cudaMalloc(&xs, (size_t)MMAX * K * 4));
        CK(cudaMalloc(&sx, (size_t)MMAX * 4));
        CK(cudaMalloc(&ys, (size_t)MMAX * N * 4));
        for (int p = 0; p < 3; p++) CK(cudaMalloc(&yp[p], (size_t)MMAX * N * 4));
        fill_f32<<<2048, 256, 0, st>>>(xs, (size_t)MMAX * K, 1.0f, 16);
        KC(kc_quant_i8(xs, MMAX, K, xi, sx));
        for (long M : Ms) {
            if (only_m && M != only_m) continue;
            /* the default path, then (where the dp4a kernel takes M) the mma
             * decode kernel it replaced, interleaved */
            const bool gv = M <= kc_sq_gemv_max();
            double th = time_us([&] { KC(kc_sq_matmul(sqh, xi, sx, M, ys)); });
            double tf = time_us([&] { KC(kc_sq_matmul(sq, xi, sx, M, ys)); });
            double th0 = th, tf0 = tf;
            if (gv) {
                const int keep = kc_sq_gemv_max();
                kc_sq_set_gemv_max(0);
                th0 = time_us([&] { KC(kc_sq_matmul(sqh, xi, sx, M, ys)); });
                tf0 = time_us([&] { KC(kc_sq_matmul(sq, xi, sx, M, ys)); });
                kc_sq_set_gemv_max(keep);
            }
            double io = (double)M * K + M * 4 + (double)M * N * 4;
            double bh = kc_sq_bytes(sqh) + io, bf = kc_sq_bytes(sq) + io;
            char h0[32] = "same", f0[32] = "same";
            if (gv) snprintf(h0, sizeof h0, "%.1f", th0), snprintf(f0, sizeof f0, "%.1f", tf0);
            printf("| %s %ldx%ld | %ld | %.1f | %.2f | %.0f%% | %s | %.1f | %.0f%% | %s |", sh.name, N, K, M, th,
                   bh / th * 1e-6, 100 * bh / th * 1e-6 / bw, h0, tf, 100 * bf / tf * 1e-6 / bw, f0);
            if (fused) {
                double tu = time_us([&] { KC(kc_sq_matmul_parts(fused, xi, sx, M, yp)); });
                double ts = time_us([&] {
                    for (int p = 0; p < sh.np; p++) KC(kc_sq_matmul(part[p], xi, sx, M, yp[p]));
                });
                double bu = kc_sq_bytes(fused) + io;
                printf(" %.1f | %.0f%% | %.1f | %.0f%% |\n", tu, 100 * bu / tu * 1e-6 / bw, ts, 100 * bu / ts * 1e-6 / bw);
            } else {
                printf(" - | - | - | - |\n");
            }
            fflush(stdout);
        }
        kc_sq_free(sqh), kc_sq_free(sq), kc_sq_free(fused);
        for (int p = 0; p < 3; p++) kc_sq_free(part[p]), cudaFree(yp[p]);
        cudaFree(xi), cudaFree(xs), cudaFree(sx), cudaFree(ys);
    }
    kc_shutdown();
    return 0;
}

/* The buffers of one shape's comparison with cuBLASLt BF16: BF16 weights and
 * activations, their output, and the same activations as INT8 codes + scales
 * (kc_quant_i8 of FP32 ones) for the SQ and integer kernels; freed at scope end. */
struct GemmBufs {
    __nv_bfloat16 *wb, *xb, *ob;
    int8_t *xi;
    float *xs, *sx, *ys;
    GemmBufs(long N, long K, long MMAX, uint64_t seed) {
        CK(cudaMalloc(&wb, (size_t)N * K * 2));
        CK(cudaMalloc(&xb, (size_t)MMAX * K * 2));
        CK(cudaMalloc(&ob, (size_t)MMAX * N * 2));
        CK(cudaMalloc(&xi, (size_t)MMAX * K));
        CK(cudaMalloc(&xs, (size_t)MMAX * K * 4));
        CK(cudaMalloc(&sx, (size_t)MMAX * 4));
        CK(cudaMalloc(&ys, (size_t)MMAX * N * 4));
        fill_bf16<<<2048, 256, 0, st>>>(wb, (size_t)N * K, 0.02f, seed);
        fill_bf16<<<2048, 256, 0, st>>>(xb, (size_t)MMAX * K, 1.0f, seed + 1);
        fill_f32<<<2048, 256, 0, st>>>(xs, (size_t)MMAX * K, 1.0f, seed + 2);
        CK(cudaGetLastError());
        KC(kc_quant_i8(xs, MMAX, K, xi, sx));
    }
    ~GemmBufs() { cudaFree(wb), cudaFree(xb), cudaFree(ob), cudaFree(xi), cudaFree(xs), cudaFree(sx), cudaFree(ys); }
    GemmBufs(const GemmBufs &) = delete;
    GemmBufs &operator=(const GemmBufs &) = delete;
};

/* --twostep: the paths SQ has for many tokens, by M: the fused SQ x INT8
 * kernels (up to M = 256; far behind above), the FP16 two-step path
 * (expansion + cuBLAS + the per-token scale pass, kc_sq_gemm.cu), and for
 * integer bank scales (KC_SQ_INT_SCALES) the INT8 path (INT8 expansion +
 * the INT8 GEMM with both scales in its epilogue, kc_i8_gemm.cu; and with
 * cuBLAS INT8 + the scale pass instead); beside them W8A8 (kc_int: the same
 * two GEMMs on stored INT8 weights, the floor of the INT8 path without its
 * expansion) and cuBLASLt BF16. The tables the default crossovers (kc_sq_twostep_min,
 * kc_sq_i8_min) come from. */
static int twostep_table(const char *only_shape, long only_m, const float *d_one) {
    const struct {
        const char *name;
        long N, K;
    } shapes[] = {{"8B qkv", 6144, 4096},  {"8B o", 4096, 4096},  {"8B gate_up", 28672, 4096}, {"8B down", 4096, 14336},
                  {"70B qkv", 10240, 8192}, {"70B o", 8192, 8192}, {"70B gate_up", 57344, 8192}, {"70B down", 8192, 28672}};
    const long Ms[] = {16, 32, 48, 64, 128, 256, 512, 1024, 2048, 4096};
    const long MMAX = 4096;
    kc_sq_set_wg(0, 0); /* (the wgmma kernel, ahead of both paths where it applies, has its own table: --wg) */
    printf("| shape (N x K) | M | fused us | fused (iscale) us | FP16 two-step us | INT8 path (iscale) us | "
           "INT8 path, cuBLAS us | W8A8 us | W8A8, cuBLAS us | BF16 us | FP16 two-step/BF16 | INT8 path/BF16 | "
           "W8A8/BF16 | INT8 path/W8A8 time |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto &sh : shapes) {
        if (only_shape && strcmp(only_shape, sh.name)) continue;
        const long N = sh.N, K = sh.K;
        kc_sq_t *sqh = kc_sq_random_ex(N, K, 4, 64, 8, 77, KC_SQ_F16_SCALES);
        kc_sq_t *sqi = kc_sq_random_ex(N, K, 4, 64, 8, 78, KC_SQ_INT_SCALES);
        kc_int_t *w8 = kc_int_random(N, K, 8, 79);
        if (!sqh || !sqi || !w8) {
            fprintf(stderr, "bench_gemm: %s\n", kc_error());
            return 2;
        }
        if (sh.name == shapes[0].name) printf("(layouts: %s; %s)\n", kc_sq_describe(sqh), kc_sq_describe(sqi));
        GemmBufs b(N, K, MMAX, 31);
        __nv_bfloat16 *wb = b.wb, *xb = b.xb, *ob = b.ob;
        int8_t *xi = b.xi;
        float *sx = b.sx, *ys = b.ys;
        for (long M : Ms) {
            if (only_m && M != only_m) continue;
            kc_sq_set_twostep_min(0), kc_sq_set_i8_min(0);
            const double fu = M <= 256 ? time_us([&] { KC(kc_sq_matmul(sqh, xi, sx, M, ys)); }) : NAN;
            /* the fused kernels on integer bank scales (INT32 accumulation for 9..64 tokens) */
            const double fi = M <= 64 ? time_us([&] { KC(kc_sq_matmul(sqi, xi, sx, M, ys)); }) : NAN;
            kc_sq_set_twostep_min(1);
            const double ts = time_us([&] { KC(kc_sq_matmul(sqh, xi, sx, M, ys)); });
            kc_sq_set_twostep_min(0), kc_sq_set_i8_min(1);
            /* the INT8 GEMMs with the scales in the epilogue (kc_i8_gemm.cu), then cuBLAS + the scale pass */
            const double ti = time_us([&] { KC(kc_sq_matmul(sqi, xi, sx, M, ys)); });
            const double t8 = time_us([&] { KC(kc_int_matmul(w8, xi, sx, M, ys)); });
            const int fused_on = kc_i8_gemm_on();
            kc_i8_gemm_set(0);
            const double tic = time_us([&] { KC(kc_sq_matmul(sqi, xi, sx, M, ys)); });
            const double t8c = time_us([&] { KC(kc_int_matmul(w8, xi, sx, M, ys)); });
            kc_i8_gemm_set(fused_on);
            long mbf = 0;
            const double bf = lt_time(BF16, N, M, K, wb, xb, ob, d_one, &mbf);
            printf("| %s %ldx%ld | %ld | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx | %.2fx | "
                   "%.2f |\n", sh.name, N, K, M, fu, fi, ts, ti, tic, t8, t8c, bf, bf / ts, bf / ti, bf / t8, ti / t8);
            fflush(stdout);
        }
        kc_sq_set_twostep_min(-1), kc_sq_set_i8_min(-1); /* back to the defaults (environment or built-in) */
        kc_sq_free(sqh), kc_sq_free(sqi), kc_int_free(w8);
    }
    kc_sq_set_wg(-1, -1);
    printf("\ndefault crossovers: FP16 two-step (kc_sq_twostep_min) M >= %ld, INT8 path (kc_sq_i8_min) M >= %ld\n",
           kc_sq_twostep_min(), kc_sq_i8_min());
    return 0;
}

/* the eight matrices of the 8B and 70B layers, unfused */
static const DShape kPlainShapes[] = {{"8B qkv", 6144, 4096, 1, {0}},      {"8B o", 4096, 4096, 1, {0}},
                                      {"8B gate_up", 28672, 4096, 1, {0}}, {"8B down", 4096, 14336, 1, {0}},
                                      {"70B qkv", 10240, 8192, 1, {0}},    {"70B o", 8192, 8192, 1, {0}},
                                      {"70B gate_up", 57344, 8192, 1, {0}}, {"70B down", 8192, 28672, 1, {0}}};

/* an N x K random SQ 8/4 b64 matrix on the explicit layout with free half
 * scales (*h) and one with integer bank scales (*i); 0, or -1 with the error printed */
static int explicit_pair(long N, long K, kc_sq_t **h, kc_sq_t **i) {
    *h = kc_sq_random_ex(N, K, 4, 64, 8, 77, KC_SQ_F16_SCALES | KC_SQ_NO_COMPACT);
    *i = kc_sq_random_ex(N, K, 4, 64, 8, 78, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
    if (*h && *i) return 0;
    fprintf(stderr, "bench_gemm: %s\n", kc_error());
    return -1;
}

/* The decode kernels' tables (--isdec, --stages): for each of the eight
 * shapes (or only_shape) the explicit_pair matrices and M tokens of
 * activations, row(name, N, K, half, integer, bufs, M) for each of Ms (or
 * only_m); the dp4a, INT8, two-step and wgmma paths kept out meanwhile, so
 * the columns time the decode kernels they name. */
template <class Row>
static int decode_sweep(const char *only_shape, long only_m, const long *Ms, int nm, Row row) {
    kc_sq_set_gemv_max(0), kc_sq_set_i8_min(0), kc_sq_set_twostep_min(0), kc_sq_set_wg(0, 0);
    for (const DShape &sh : kPlainShapes) {
        if (only_shape && strcmp(only_shape, sh.name)) continue;
        kc_sq_t *sqh, *sqi;
        if (explicit_pair(sh.N, sh.K, &sqh, &sqi)) return 2;
        GemmBufs b(sh.N, sh.K, 64, 41);
        for (int i = 0; i < nm; i++)
            if (!only_m || Ms[i] == only_m) row(sh, sqh, sqi, b, Ms[i]);
        kc_sq_free(sqh), kc_sq_free(sqi);
    }
    kc_sq_set_gemv_max(-1), kc_sq_set_i8_min(-1), kc_sq_set_twostep_min(-1), kc_sq_set_wg(-1, -1);
    return 0;
}

/* % of the copy bandwidth bw (TB/s) that an M-token matmul on w taking us
 * microseconds moves: the weights, the INT8 activations and their scales,
 * the float outputs */
static double decode_copy_pct(const kc_sq_t *w, const DShape &sh, long M, double us, double bw) {
    const double by = kc_sq_bytes(w) + (double)M * sh.K + M * 4 + (double)M * sh.N * 4;
    return 100 * by / us * 1e-6 / bw;
}

/* --isdec: the fused decode kernels (kc_sq_mm.cu) on integer bank scales,
 * M = 3..64: INT32 sums over the row (do_group_is, kc_sq_set_isdec_min)
 * against the float combination on the same matrix, and the
 * free-half-scale matrix beside them. The table kc_sq_isdec_min comes from. */
static int isdec_table(double bw, const char *only_shape, long only_m) {
    static const long Ms[] = {3, 4, 8, 16, 17, 32, 48, 64};
    printf("| shape (N x K) | M | free half scales us | integer scales, float combination us | "
           "integer scales, INT32 sums us | %%copy | INT32 / float |\n|---|---|---|---|---|---|---|\n");
    const int rc = decode_sweep(only_shape, only_m, Ms, 8, [&](const DShape &sh, kc_sq_t *sqh, kc_sq_t *sqi,
                                                                const GemmBufs &b, long M) {
        const double th = time_us([&] { KC(kc_sq_matmul(sqh, b.xi, b.sx, M, b.ys)); });
        kc_sq_set_isdec_min(0);
        const double tf = time_us([&] { KC(kc_sq_matmul(sqi, b.xi, b.sx, M, b.ys)); });
        kc_sq_set_isdec_min(1);
        const double ti = time_us([&] { KC(kc_sq_matmul(sqi, b.xi, b.sx, M, b.ys)); });
        kc_sq_set_isdec_min(-1);
        printf("| %s %ldx%ld | %ld | %.1f | %.1f | %.1f | %.0f%% | %.2f |\n", sh.name, sh.N, sh.K, M, th, tf, ti,
               decode_copy_pct(sqi, sh, M, ti, bw), ti / tf);
        fflush(stdout);
    });
    if (rc) return rc;
    /* the default start, as kc_sq_isdec_min gives it for a small and a large matrix */
    kc_sq_t *small = kc_sq_random_ex(64, 64, 4, 64, 8, 6, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
    kc_sq_t *big = kc_sq_random_ex(8192, 10240, 4, 64, 8, 5, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
    if (!small || !big) {
        fprintf(stderr, "bench_gemm: %s\n", kc_error());
        return 2;
    }
    printf("\ndefault start of the INT32 kernel (kc_sq_isdec_min): M >= %ld on 8192 x 10240, M >= %ld on 64 x 64\n",
           kc_sq_isdec_min(big), kc_sq_isdec_min(small));
    kc_sq_free(small), kc_sq_free(big);
    return 0;
}

/* --stages: the fast layout's stream-k decode kernel from 9 tokens, its
 * weights and activations loaded into registers (k_sq_dec,
 * kc_sq_set_dec_stages(0)) against a ring of 2, 3 and 4 stages in shared
 * memory (k_sq_dec_st), on a free-half-scale matrix and (the INT32 kernel
 * from kc_sq_isdec_min(w) tokens, the float combination below) an
 * integer-bank-scale one. */
static int stages_table(double bw, const char *only_shape, long only_m) {
    static const long Ms[] = {9, 16, 32, 48, 64}, st[] = {0, 2, 3, 4};
    printf("| shape (N x K) | M | scales | registers us | 2 stages us | 3 stages us | 4 stages us | best %%copy | "
           "best / registers |\n|---|---|---|---|---|---|---|---|---|\n");
    const int rc = decode_sweep(only_shape, only_m, Ms, 5, [&](const DShape &sh, kc_sq_t *sqh, kc_sq_t *sqi,
                                                                const GemmBufs &b, long M) {
        for (int q = 0; q < 2; q++) {
            kc_sq_t *w = q ? sqi : sqh;
            double t[4];
            for (int i = 0; i < 4; i++) {
                kc_sq_set_dec_stages(st[i]);
                t[i] = time_us([&] { KC(kc_sq_matmul(w, b.xi, b.sx, M, b.ys)); });
            }
            kc_sq_set_dec_stages(-1);
            const double best = std::min(std::min(t[1], t[2]), t[3]);
            printf("| %s %ldx%ld | %ld | %s | %.1f | %.1f | %.1f | %.1f | %.0f%% | %.2f |\n", sh.name, sh.N, sh.K, M,
                   q ? "integer" : "half", t[0], t[1], t[2], t[3], decode_copy_pct(w, sh, M, best, bw), best / t[0]);
            fflush(stdout);
        }
    });
    if (rc) return rc;
    printf("\ndefault stages (kc_sq_dec_stages): %ld\n", kc_sq_dec_stages());
    return 0;
}

/* --wg: integer bank scales on the wgmma kernel (kc_sq_wg.cu: the weights
 * decoded in registers; each ring shape) against the path taken
 * without it (the fused decode kernels to 64 tokens, the INT8 path from
 * 65), with cuBLASLt BF16 and the kernel's own M = 1 time beside them:
 * issue 13's goals (M = 16..64 within 1.3x of M = 1; M = 128 >= 1.5x BF16;
 * M >= 1024 >= 1.4x BF16). The table kc_sq_wg_min / max come from. */
static int wg_table(double bw, const char *only_shape, long only_m, const float *d_one) {
    static const long Ms[] = {16, 32, 48, 64, 96, 128, 256, 512, 1024};
    printf("| shape (N x K) | M | without us | wgmma 4 us | wgmma 6 us | wgmma 8 us | wgmma 6, a block a tile us | BF16 us | "
           "best / without | BF16 / best | best / M=1 | best %%copy |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const DShape &sh : kPlainShapes) {
        if (only_shape && strcmp(only_shape, sh.name)) continue;
        kc_sq_t *sqh, *sqi;
        if (explicit_pair(sh.N, sh.K, &sqh, &sqi)) return 2;
        GemmBufs b(sh.N, sh.K, 1024, 43);
        kc_sq_set_wg(0, 0);
        const double t1 = time_us([&] { KC(kc_sq_matmul(sqi, b.xi, b.sx, 1, b.ys)); });
        for (long M : Ms) {
            if (only_m && M != only_m) continue;
            kc_sq_set_wg(0, 0);
            const double t0 = time_us([&] { KC(kc_sq_matmul(sqi, b.xi, b.sx, M, b.ys)); });
            kc_sq_set_wg(1, 1L << 30);
            static const long ring[][2] = {{4, 1}, {6, 1}, {8, 1}, {6, 0}};
            double t[4], best = INFINITY;
            for (int i = 0; i < 4; i++) {
                kc_sq_set_wg_ring(ring[i][0], ring[i][1]);
                t[i] = time_us([&] { KC(kc_sq_matmul(sqi, b.xi, b.sx, M, b.ys)); });
                best = std::min(best, t[i]);
            }
            kc_sq_set_wg_ring(-1, -1);
            long mbf = 0;
            const double bf = lt_time(BF16, sh.N, M, sh.K, b.wb, b.xb, b.ob, d_one, &mbf);
            printf("| %s %ldx%ld | %ld | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2fx | %.2fx | %.0f%% |\n",
                   sh.name, sh.N, sh.K, M, t0, t[0], t[1], t[2], t[3], bf, best / t0, bf / best, best / t1,
                   decode_copy_pct(sqi, sh, M, best, bw));
            fflush(stdout);
        }
        kc_sq_set_wg(-1, -1);
        printf("| %s: default wgmma tokens (kc_sq_wg_min..max) %ld..%ld | | | | | | | | | | | |\n", sh.name,
               kc_sq_wg_min(sqi), kc_sq_wg_max(sqi));
        kc_sq_free(sqh), kc_sq_free(sqi);
    }
    kc_sq_set_wg(-1, -1);
    printf("\n(wgmma S: a ring of S stages, stream-k over the GPU unless \"a block a tile\"; M = 1: the dp4a "
           "kernel's time; default %ld stages, %s)\n",
           kc_sq_wg_stages(), kc_sq_wg_split() ? "stream-k" : "a block a tile");
    return 0;
}

/* --baselines: the formats of the paper's comparison, each on its own
 * kernels by the product's default path: SQ 8/4 b64 s0.875 (half scales),
 * W4A8 (int4 g64, half scales) and W8A8 (int8, a scale a row) from
 * kc_int.cu, and cuBLASLt BF16, by M; %copy = the format's weight bytes
 * over the time, against the measured copy bandwidth. */
static int baselines_table(double bw, const char *only_shape, const float *d_one) {
    const struct {
        const char *name;
        long N, K;
    } shapes[] = {{"8B qkv", 6144, 4096},  {"8B o", 4096, 4096},  {"8B gate_up", 28672, 4096}, {"8B down", 4096, 14336},
                  {"70B qkv", 10240, 8192}, {"70B o", 8192, 8192}, {"70B gate_up", 57344, 8192}, {"70B down", 8192, 28672}};
    const long Ms[] = {1, 2, 4, 8, 16, 64, 128, 1024, 4096};
    const long MMAX = 4096;
    printf("| shape (N x K) | M | SQ us | %%copy | W4A8 us | %%copy | W8A8 us | %%copy | BF16 us | %%copy | SQ/W4A8 time | SQ/BF16 time |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto &sh : shapes) {
        if (only_shape && strcmp(only_shape, sh.name)) continue;
        const long N = sh.N, K = sh.K;
        kc_sq_t *sq = kc_sq_random_ex(N, K, 4, 64, 8, 91, KC_SQ_F16_SCALES);
        kc_int_t *w4 = kc_int_random(N, K, 4, 92), *w8 = kc_int_random(N, K, 8, 93);
        if (!sq || !w4 || !w8) {
            fprintf(stderr, "bench_gemm: %s\n", kc_error());
            return 2;
        }
        if (sh.name == shapes[0].name)
            printf("(layouts: %s; %s; %s)\n\n", kc_sq_describe(sq), kc_int_describe(w4), kc_int_describe(w8));
        GemmBufs b(N, K, MMAX, 41);
        __nv_bfloat16 *wb = b.wb, *xb = b.xb, *ob = b.ob;
        int8_t *xi = b.xi;
        float *sx = b.sx, *ys = b.ys;
        for (long M : Ms) {
            const double tq = time_us([&] { KC(kc_sq_matmul(sq, xi, sx, M, ys)); });
            const double t4 = time_us([&] { KC(kc_int_matmul(w4, xi, sx, M, ys)); });
            const double t8 = time_us([&] { KC(kc_int_matmul(w8, xi, sx, M, ys)); });
            long mbf = 0;
            const double tb = lt_time(BF16, N, M, K, wb, xb, ob, d_one, &mbf);
            const double pc = 1e-6 / bw * 100;
            printf("| %s %ldx%ld | %ld | %.1f | %.0f%% | %.1f | %.0f%% | %.1f | %.0f%% | %.1f | %.0f%% | %.2f | %.2f |\n",
                   sh.name, N, K, M, tq, kc_sq_bytes(sq) / tq * pc, t4, kc_int_bytes(w4) / t4 * pc, t8,
                   kc_int_bytes(w8) / t8 * pc, tb, 2.0 * N * K / tb * pc, tq / t4, tq / tb);
            fflush(stdout);
        }
        kc_sq_free(sq), kc_int_free(w4), kc_int_free(w8);
    }
    return 0;
}

int main(int argc, char **argv) {
    int quick = 0, decode = 0, twostep = 0, baselines = 0, isdec = 0, stages = 0, wg = 0;
    const char *only_shape = NULL;
    long only_m = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) only_shape = argv[++i];
        else if (!strcmp(argv[i], "--m") && i + 1 < argc) only_m = atol(argv[++i]);
        else if (!strcmp(argv[i], "--decode")) decode = 1;
        else if (!strcmp(argv[i], "--twostep")) twostep = 1;
        else if (!strcmp(argv[i], "--baselines")) baselines = 1;
        else if (!strcmp(argv[i], "--isdec")) isdec = 1;
        else if (!strcmp(argv[i], "--stages")) stages = 1;
        else if (!strcmp(argv[i], "--wg")) wg = 1;
    }
    KC(kc_init(0));
    st = (cudaStream_t)kc_stream();
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "bench_gemm: cublasLtCreate failed\n");
        return 2;
    }
    CK(cudaMalloc(&wksp, WKSP));
    CK(cudaMalloc(&flushbuf, FLUSH));
    CK(cudaMemset(flushbuf, 0, FLUSH));
    if (const char *e = getenv("BENCH_FLUSH")) {
        flush_mode = !strcmp(e, "memset") ? 0 : !strcmp(e, "read") ? 1 : !strcmp(e, "none") ? 2 : -1;
        if (flush_mode < 0) {
            fprintf(stderr, "bench_gemm: BENCH_FLUSH=%s: expected read, memset or none\n", e);
            return 2;
        }
    }
    int cuv = 0, ltv = (int)cublasLtGetVersion();
    cudaRuntimeGetVersion(&cuv);

    /* measured copy bandwidth (read + write) */
    const size_t CB = 1u << 30;
    void *ca, *cb;
    CK(cudaMalloc(&ca, CB));
    CK(cudaMalloc(&cb, CB));
    CK(cudaMemsetAsync(ca, 1, CB, st));
    double copy_us = time_us([&] { CK(cudaMemcpyAsync(cb, ca, CB, cudaMemcpyDeviceToDevice, st)); });
    double bw = 2.0 * CB / (copy_us * 1e-6) / 1e12; /* TB/s */
    CK(cudaFree(ca));
    CK(cudaFree(cb));
    printf("bench_gemm on %s (CUDA runtime %d, cuBLASLt %d): copy bandwidth %.2f TB/s (read+write), "
           "peak from attributes %.2f TB/s; median of %d runs after an L2 flush\n\n",
           kc_device_name(), cuv, ltv, bw, kc_mem_bandwidth_gbs() / 1e3, reps);

    const Shape shapes[] = {{"8B qkv", 6144, 4096},      {"8B o", 4096, 4096},       {"8B gate_up", 28672, 4096},
                            {"8B down", 4096, 14336},    {"70B qkv", 10240, 8192},   {"70B o", 8192, 8192},
                            {"70B gate_up", 57344, 8192}, {"70B down", 8192, 28672}};
    const long Ms[] = {1, 16, 128, 1024, 4096};
    if (decode) return decode_table(bw, only_shape, only_m);
    if (isdec) return isdec_table(bw, only_shape, only_m);
    if (stages) return stages_table(bw, only_shape, only_m);
    const int nshape = quick && !only_shape ? 4 : 8, nM = 5;
    const long MMAX = 4096;

    float *d_one;
    CK(cudaMalloc(&d_one, 4));
    float one = 1.0f;
    CK(cudaMemcpy(d_one, &one, 4, cudaMemcpyHostToDevice));
    if (twostep) return twostep_table(only_shape, only_m, d_one);
    if (wg) return wg_table(bw, only_shape, only_m, d_one);
    if (baselines) return baselines_table(bw, only_shape, d_one);
    kc_sq_set_twostep_min(0); /* the tables below are about the fused kernels; --twostep compares the paths */

    struct Row {
        const char *name;
        long N, K, M;
        double sq, sqh, bf, f8, i8, sq_bytes, sqh_bytes;
        long m_f8, m_i8;
    };
    std::vector<Row> rows;
    std::string footnotes;
    double quant_us[2] = {0, 0};

    for (int s = 0; s < nshape; s++) {
        const long N = shapes[s].N, K = shapes[s].K;
        if (only_shape && strcmp(only_shape, shapes[s].name)) continue;
        kc_sq_t *sq = kc_sq_random(N, K, 4, 64, 8, 1000 + s);
        kc_sq_t *sqh = kc_sq_random_ex(N, K, 4, 64, 8, 2000 + s, KC_SQ_F16_SCALES);
        if (!sq || !sqh) {
            fprintf(stderr, "bench_gemm: %s\n", kc_error());
            return 2;
        }
        if (s == 0) printf("SQ layouts: %s; %s\n\n", kc_sq_describe(sq), kc_sq_describe(sqh));
        __nv_bfloat16 *wb, *xb, *ob;
        __nv_fp8_e4m3 *wf, *xf;
        int8_t *wi, *xi;
        int32_t *oi;
        float *xs, *sx, *ys;
        CK(cudaMalloc(&wb, (size_t)N * K * 2));
        CK(cudaMalloc(&wf, (size_t)N * K));
        CK(cudaMalloc(&wi, (size_t)N * K));
        CK(cudaMalloc(&xb, (size_t)MMAX * K * 2));
        CK(cudaMalloc(&xf, (size_t)MMAX * K));
        CK(cudaMalloc(&xi, (size_t)MMAX * K));
        CK(cudaMalloc(&xs, (size_t)MMAX * K * 4));
        CK(cudaMalloc(&sx, (size_t)MMAX * 4));
        CK(cudaMalloc(&ob, (size_t)MMAX * N * 2));
        CK(cudaMalloc(&oi, (size_t)MMAX * N * 4));
        CK(cudaMalloc(&ys, (size_t)MMAX * N * 4));
        fill_bf16<<<2048, 256, 0, st>>>(wb, (size_t)N * K, 0.02f, 11 + s);
        fill_fp8<<<2048, 256, 0, st>>>(wf, (size_t)N * K, 200.0f, 12 + s);
        fill_i8<<<2048, 256, 0, st>>>(wi, (size_t)N * K, 13 + s);
        fill_bf16<<<2048, 256, 0, st>>>(xb, (size_t)MMAX * K, 1.0f, 14 + s);
        fill_fp8<<<2048, 256, 0, st>>>(xf, (size_t)MMAX * K, 200.0f, 15 + s);
        fill_f32<<<2048, 256, 0, st>>>(xs, (size_t)MMAX * K, 1.0f, 16 + s);
        CK(cudaGetLastError());
        KC(kc_quant_i8(xs, MMAX, K, xi, sx));
        CK(cudaStreamSynchronize(st));
        if (s == 0) {
            quant_us[0] = time_us([&] { KC(kc_quant_i8(xs, 1, K, xi, sx)); });
            quant_us[1] = time_us([&] { KC(kc_quant_i8(xs, MMAX, K, xi, sx)); });
        }
        for (int mi = 0; mi < nM; mi++) {
            const long M = Ms[mi];
            if (only_m && M != only_m) continue;
            Row r;
            r.name = shapes[s].name, r.N = N, r.K = K, r.M = M;
            r.sq = time_us([&] { KC(kc_sq_matmul(sq, xi, sx, M, ys)); });
            r.sqh = time_us([&] { KC(kc_sq_matmul(sqh, xi, sx, M, ys)); });
            r.sq_bytes = (double)kc_sq_bytes(sq), r.sqh_bytes = (double)kc_sq_bytes(sqh);
            long mbf = 0;
            r.bf = lt_time(BF16, N, M, K, wb, xb, ob, d_one, &mbf);
            r.f8 = lt_time(FP8, N, M, K, wf, xf, ob, d_one, &r.m_f8);
            r.i8 = lt_time(INT8, N, M, K, wi, xi, oi, d_one, &r.m_i8);
            char fn[160];
            if (mbf != M) snprintf(fn, sizeof fn, "- %s M=%ld: cuBLASLt BF16 ran M=%ld\n", r.name, M, mbf), footnotes += fn;
            if (r.m_f8 != M) snprintf(fn, sizeof fn, "- %s M=%ld: cuBLASLt FP8 %s\n", r.name, M, r.m_f8 < 0 ? "found no algorithm" : (std::string("ran M=") + std::to_string(r.m_f8) + " (padded)").c_str()), footnotes += fn;
            if (r.m_i8 != M) snprintf(fn, sizeof fn, "- %s M=%ld: cuBLASLt INT8 %s\n", r.name, M, r.m_i8 < 0 ? "found no algorithm" : (std::string("ran M=") + std::to_string(r.m_i8) + " (padded)").c_str()), footnotes += fn;
            rows.push_back(r);
            fprintf(stderr, "  %s M=%ld: SQ %.1f SQh %.1f BF16 %.1f FP8 %.1f INT8 %.1f us\n", r.name, M, r.sq, r.sqh,
                    r.bf, r.f8, r.i8);
        }
        kc_sq_free(sq), kc_sq_free(sqh);
        cudaFree(wb), cudaFree(wf), cudaFree(wi), cudaFree(xb), cudaFree(xf), cudaFree(xi), cudaFree(xs);
        cudaFree(sx), cudaFree(ob), cudaFree(oi), cudaFree(ys);
    }

    /* the table */
    printf("| shape (N x K) | M | SQ us | SQh us | BF16 us | FP8 us | INT8 us | SQ TB/s | SQh TB/s | SQ %%BW | SQ TOPS | "
           "BF16 TF/s | FP8 TF/s | INT8 TOPS | SQ/BF16 | SQ/INT8 | SQh/BF16 | SQh/INT8 | SQ bound us | 4-bit us |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (auto &r : rows) {
        double N = r.N, K = r.K, M = r.M, fl = 2 * M * N * K;
        double bsq = r.sq_bytes + M * K + M * 4 + M * N * 4, bsqh = r.sqh_bytes + M * K + M * 4 + M * N * 4;
        printf("| %s %ldx%ld | %ld | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.0f%% | %.0f | %.0f | %.0f | %.0f "
               "| %.2fx | %.2fx | %.2fx | %.2fx | %.1f | %.1f |\n",
               r.name, r.N, r.K, r.M, r.sq, r.sqh, r.bf, r.f8, r.i8, bsq / r.sq * 1e-6, bsqh / r.sqh * 1e-6,
               100 * bsq / r.sq * 1e-6 / bw, fl / r.sq * 1e-6, fl / r.bf * 1e-6, fl / r.f8 * 1e-6, fl / r.i8 * 1e-6,
               r.bf / r.sq, r.i8 / r.sq, r.bf / r.sqh, r.i8 / r.sqh, bsq / (bw * 1e12) * 1e6,
               N * K / 2 / (bw * 1e12) * 1e6);
    }
    if (!footnotes.empty()) printf("\n%s", footnotes.c_str());
    printf("\nkc_quant_i8 (K=4096): M=1 %.1f us, M=4096 %.1f us (not included above)\n", quant_us[0], quant_us[1]);

    /* goals (issue 5, section 5) */
    printf("\nGoals:\n");
    for (auto &r : rows) {
        if (!strcmp(r.name, "8B gate_up") && r.M == 1) {
            printf("- M=1 8B gate_up: SQ %.2fx BF16 (goal 3x) %s, %.2fx INT8 (goal 1.8x) %s; SQh %.2fx BF16 %s, %.2fx INT8 %s\n",
                   r.bf / r.sq, r.bf / r.sq >= 3 ? "MET" : "not met", r.i8 / r.sq, r.i8 / r.sq >= 1.8 ? "MET" : "not met",
                   r.bf / r.sqh, r.bf / r.sqh >= 3 ? "MET" : "not met", r.i8 / r.sqh, r.i8 / r.sqh >= 1.8 ? "MET" : "not met");
            double b1 = r.sq_bytes + r.K + 4 + r.N * 4, b2 = r.sqh_bytes + r.K + 4 + r.N * 4;
            printf("- M=1 8B gate_up bandwidth: SQ %.2f TB/s = %.0f%% of copy bandwidth, SQh %.2f TB/s = %.0f%% (goal 80%%)\n",
                   b1 / r.sq * 1e-6, 100 * b1 / r.sq * 1e-6 / bw, b2 / r.sqh * 1e-6, 100 * b2 / r.sqh * 1e-6 / bw);
        }
        if (r.M == 4096 && (!strcmp(r.name, "8B gate_up") || !strcmp(r.name, "70B gate_up")))
            printf("- M=4096 %s: SQ %.2fx BF16 (goal 1.5x) %s\n", r.name, r.bf / r.sq, r.bf / r.sq >= 1.5 ? "MET" : "not met");
    }
    cublasLtDestroy(lt);
    kc_shutdown();
    return 0;
}
