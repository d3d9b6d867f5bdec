/* kc_i8_gemm.cu - INT8 x INT8 GEMM with the two scales in its epilogue, for
 * Hopper (CUTLASS 3: TMA loads, warp-specialized wgmma mainloop).
 *
 *   y[t][r] (ldy) = (rs[r] * (float)sum_k qx[t][k] * w8[r][k]) * sx[t]
 *
 * Why: the INT8 paths (SQ with integer bank scales, kc_sq_gemm.cu; W8A8,
 * kc_int.cu) had cuBLAS write the INT32 sums and a second kernel read them
 * back to scale them: 12 bytes of traffic an output where a BF16 GEMM writes
 * 2, which held W8A8 to 1.04-1.32x cuBLAS BF16 on the H200 although the
 * INT8 tensor cores run at twice BF16's rate. Here the scales are applied
 * as the accumulators leave the registers (CUTLASS's epilogue visitor tree:
 * a per-column vector rs, a per-row vector sx) and y is written once as
 * FP32. The products round exactly as the scale pass of the two-kernel
 * path (k_i8_out below, the fallback) does: rs times the sum, then times
 * sx; the bits are the same.
 *
 * Two tile shapes, picked by the token count as vLLM's sm90 INT8 kernels
 * do: 64x128x128 up to 128 tokens, 128x128x128 beyond, both ping-pong
 * (two consumer warp groups alternate between the mainloop and the
 * epilogue, so one's stores hide behind the other's wgmma), on clusters
 * of 2 along the tokens (the weight tile is multicast).
 *
 * From 65 tokens only (KC_I8_MIN_M moves the start). Below, bench_gemm times
 * this kernel faster than cuBLAS + the scale pass on most shapes, yet the
 * W8A8 decode step end to end is slower with it at 16 and 32 tokens
 * (0.95x and 0.87x, logits on the GPU) and even at 48 and 64 (H200,
 * 808e1d3, two runs each interleaved; docs/perf-gpu.md, ninth session).
 *
 * Operands TMA can describe are required: k a multiple of 16, rows and ldy
 * of 4, the pointers 16-byte aligned; otherwise (and below 65 tokens, or
 * with KC_I8_FUSED=0) kc_i8_matmul runs the two steps it replaces, cuBLAS
 * INT8 -> INT32 and the scale pass, which give the same bits; so it does on
 * any device but compute capability 9.0 (this is sm_90a code: newer GPUs
 * run the compute_90 PTX, where CUTLASS leaves a stub that writes nothing).
 * The CUTLASS headers come from PyPI's nvidia-cutlass wheel (BSD-3;
 * kernels/cuda/fetch-cutlass.sh unpacks them into .deps/).
 */
#include "kc_internal.h"

#include <stdlib.h>
#include <string.h>

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp>
#include <cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

using namespace cute;

namespace {

template <class Tile, class Cluster> struct ScaledI8 {
    using Acc = cutlass::epilogue::fusion::Sm90AccFetch;
    /* rs: one float a weight row = a column of y; sx: one a token = a row */
    using RowScale = cutlass::epilogue::fusion::Sm90RowBroadcast<0, Tile, float, float, Stride<_0, _1, _0>, 4, false>;
    using ColScale = cutlass::epilogue::fusion::Sm90ColBroadcast<0, Tile, float, float, Stride<_1, _0, _0>, 1, false>;
    using Mul = cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float,
                                                       cutlass::FloatRoundStyle::round_to_nearest>;
    using RowTimesAcc = cutlass::epilogue::fusion::Sm90EVT<Mul, RowScale, Acc>;
    using Fusion = cutlass::epilogue::fusion::Sm90EVT<Mul, ColScale, RowTimesAcc>;

    using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
        cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, void, cutlass::layout::RowMajor, 4, float,
        cutlass::layout::RowMajor, 4, cutlass::epilogue::TmaWarpSpecialized, Fusion>::CollectiveOp;

    using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, int8_t,
        cutlass::layout::ColumnMajor, 16, int32_t, Tile, Cluster,
        cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
            sizeof(typename Epilogue::SharedStorage))>,
        cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;

    using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue,
                                                        cutlass::gemm::PersistentScheduler>;
    using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

using Small = ScaledI8<Shape<_64, _128, _128>, Shape<_2, _1, _1>>;
using Large = ScaledI8<Shape<_128, _128, _128>, Shape<_2, _1, _1>>;

/* the workspace, grown and never freed (captured graphs may hold it) */
void *g_ws;
size_t g_ws_n;

/* a (rows x cols, L) operand's stride, ld elements between rows */
template <class S> S row_stride(long ld, long rows) {
    S s{};
    get<0>(s) = ld;
    if constexpr (!is_static<decltype(get<2>(s))>::value) get<2>(s) = ld * rows;
    return s;
}

template <class G>
int run(const int8_t *qx, const int8_t *w8, long m, long n, long k, const float *sx, const float *rs, float *y,
        long ldy) {
    using Gemm = typename G::Gemm;
    using Kernel = typename G::Kernel;
    const auto sa = row_stride<typename Kernel::StrideA>(k, m);
    const auto sb = row_stride<typename Kernel::StrideB>(k, n);
    const auto sd = row_stride<typename Kernel::StrideD>(ldy, m);
    const auto sc = row_stride<typename Kernel::StrideC>(ldy, m);
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {(int)m, (int)n, (int)k, 1},
                                  {qx, sa, w8, sb},
                                  {{}, nullptr, sc, y, sd}};
    args.hw_info.sm_count = kc_sm_count(); /* else CUTLASS asks the driver at every call */
    /* the tree's arguments, leaves first: sx, then (rs, acc, rs * acc), then sx * that */
    args.epilogue.thread = {{sx}, {{rs}, {}, {}}, {}};
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 1;
    const size_t ws = Gemm::get_workspace_size(args);
    if (kc_grow(&g_ws, &g_ws_n, ws, 0)) return -1;
    cutlass::Status s = gemm.initialize(args, g_ws, KC_STREAM);
    if (s == cutlass::Status::kSuccess) s = gemm.run(KC_STREAM);
    if (s != cutlass::Status::kSuccess) {
        kc_set_error("CUTLASS INT8 GEMM (%ld x %ld x %ld) failed: %s", m, n, k, cutlassGetStatusString(s));
        return -1;
    }
    return kc_check_launch("kc_i8_gemm");
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

} // namespace

/* the fewest tokens the fused GEMM takes: 65, or KC_I8_MIN_M (an A/B knob
 * for the question above) */
static long min_m(void) {
    static long v = -1;
    if (v < 0) {
        const char *e = getenv("KC_I8_MIN_M");
        v = e && *e && atol(e) > 0 ? atol(e) : 65;
    }
    return v;
}

static int g_on = -1;
static long g_count; /* fused GEMMs run */

extern "C" long kc_i8_gemm_count(void) { return g_count; }

extern "C" void kc_i8_gemm_set(int on) { g_on = on != 0; }

extern "C" int kc_i8_gemm_on(void) {
    if (g_on < 0) {
        const char *e = getenv("KC_I8_FUSED");
        g_on = !(e && !strcmp(e, "0"));
    }
    return g_on;
}

static int fits(const int8_t *d_qx, const int8_t *d_w8, long m, long n, long k, const float *d_rs, const float *d_y,
                long ldy) {
    return kc_i8_gemm_on() && kc_sm90a() && m >= min_m() && k % 16 == 0 && n % 4 == 0 && ldy % 4 == 0 &&
           m <= 0x7fffffffL && n <= 0x7fffffffL && k <= 0x7fffffffL && ldy <= 0x7fffffffL && aligned16(d_qx) &&
           aligned16(d_w8) && aligned16(d_rs) && aligned16(d_y);
}

/* ---- the fallback: cuBLAS INT8 -> INT32, then the scale pass ---------------------------- */

/* y[t][r] (ldy) = (rs[r] * (float)acc[t][r]) * sx[t]: the epilogue's order */
__global__ void k_i8_out(const int32_t *acc, long n, long m, const float *rs, const float *sx, float *y, long ldy) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * n) return;
    const long t = i / n, r = i % n;
    y[t * ldy + r] = __fmul_rn(__fmul_rn(__ldg(rs + r), __int2float_rn(acc[i])), __ldg(sx + t));
}

/* the INT32 products, grown and never freed (captured graphs may hold them) */
static int32_t *g_acc;
static size_t g_acc_n;

static int cublas_i8(const int8_t *d_qx, const int8_t *d_w8, long m, long n, long k, const float *d_sx,
                     const float *d_rs, float *d_y, long ldy) {
    if (kc_grow((void **)&g_acc, &g_acc_n, (size_t)m * n * sizeof(int32_t), (size_t)16 << 20) ||
        kc_gemm_nt(KC_GEMM_I8, d_w8, n, k, d_qx, m, g_acc, n))
        return -1;
    k_i8_out<<<kc_blocks(m * n, 256), 256, 0, KC_STREAM>>>(g_acc, n, m, d_rs, d_sx, d_y, ldy);
    return kc_check_launch("k_i8_out");
}

extern "C" int kc_i8_matmul(const int8_t *d_qx, const int8_t *d_w8, long m, long n, long k, const float *d_sx,
                            const float *d_rs, float *d_y, long ldy) {
    if (m == 0 || n == 0) return 0;
    if (!fits(d_qx, d_w8, m, n, k, d_rs, d_y, ldy)) return cublas_i8(d_qx, d_w8, m, n, k, d_sx, d_rs, d_y, ldy);
    const int rc = m <= 128 ? run<Small>(d_qx, d_w8, m, n, k, d_sx, d_rs, d_y, ldy)
                            : run<Large>(d_qx, d_w8, m, n, k, d_sx, d_rs, d_y, ldy);
    if (rc == 0) g_count++;
    /* CUTLASS refused what fits() let through: the fallback, not an error */
    return rc == 1 ? cublas_i8(d_qx, d_w8, m, n, k, d_sx, d_rs, d_y, ldy) : rc;
}
