/* kc_sq_gemm.cu - the SQ matmul for many tokens in two steps: the weights
 * expanded into an FP16 matrix, then cuBLAS's tensor-core GEMM.
 *
 * Why. The fused SQ x INT8 kernels of kc_sq_mm.cu decode every weight unit
 * for every 128 tokens with mma.sync and reach ~200 TOPS from M = 1024 on:
 * a quarter of cuBLAS BF16 on the H200. Expanding the layer's weights once
 * (read 5.5-7 bits, write 16 bits per weight) and handing the product to
 * cuBLAS costs one extra pass over ~2 bytes per weight, which at M >= ~128
 * is small beside the GEMM itself. It is the issue's "honest two-step path":
 * the baseline a Hopper wgmma SQ kernel has to beat, and today the fastest
 * way this code base has for prefill and large decode batches.
 *
 * Numbers. The expansion decodes each unit with the same fragment code as
 * the fused kernels (kc_sq_frag.cuh) and stores w = s_lo * lo + s_hi * hi
 * rounded to FP16 (11 significant bits). The activations go in as their
 * INT8 codes, exact in FP16, and cuBLAS sums in FP32; the per-token scale
 * is applied to the FP32 output afterwards (one pass over it), so no
 * activation range is lost to FP16 (an earlier version folded the scale
 * into the FP16 activations and lost both very large and very small
 * tokens: test_kc_sq caught it on the H200). The result differs from the
 * exact integer path by the weights' FP16 rounding, about 2^-11 relative
 * per term: test_kc_sq checks that bound, tests/gpu/run.sh the perplexity.
 *
 * When. kc_sq_matmul takes this path from M = kc_sq_twostep_min() tokens on,
 * for the layouts the prefill kernels read (the explicit fast layout and the
 * compact one); other shapes keep the fused kernels. The crossover comes
 * from bench_gemm on the H200 (docs/perf-gpu.md); KC_SQ_TWOSTEP_M overrides
 * it (0 turns the path off).
 *
 * Integer bank scales (kc_sq_iscale, sq_quant.h's :iscale). When every
 * weight is an INT8 value times its row's scale (s_lo = k_g * s_r with a
 * small integer k_g, s_hi = s_r), the expansion writes those INT8 values
 * (k_g * lo, or the high code) instead, and an INT8 x INT8 GEMM sums each
 * row exactly over all of k with y = (s_r * acc) * sx in its epilogue
 * (kc_i8_matmul, kc_i8_gemm.cu). Half the
 * bytes of the FP16 expansion, twice the tensor-core rate, and no rounding
 * of the weights: the result is the exact sum rounded twice (k_sq.h's
 * bound holds with room). This is QServe's design (progressive group
 * quantization: the main loop is pure INT8 mma) on the SQ layout; it
 * takes M >= kc_sq_i8_min() (65, measured: docs/perf-gpu.md), KC_SQ_I8_M.
 *
 * Overlap (kc_sq_overlap_min, off by default until measured). The
 * expansion is serial with the GEMM and a large share where a row is long
 * and the tokens few (70B down at 1024 tokens: 481 us against 297 for the
 * same GEMM on stored INT8 weights). From KC_SQ_OVERLAP_M tokens the INT8
 * path cuts the matrix into 3 to 8 slices of rows and, double-buffered,
 * expands slice i + 1 on a side stream of the lowest priority while the
 * GEMM of slice i runs on the stream (highest priority) with its
 * persistent grid held to all SMs but KC_SQ_OVERLAP_SMS (16): only the
 * first slice's expansion stays exposed. The trade-offs: the GEMM gets
 * fewer CTAs a round, so the slices are whole rounds of its grid (plan_rows
 * below); the expansion must finish on the SMs left to it within a GEMM,
 * or it is the one that shows (on the whole GPU it moves ~2-3 TB/s of
 * reads and writes by bench_gemm --twostep's figures; bench_gemm --overlap
 * times S = 8..48); and the block scheduler decides
 * where blocks go. Both kernels become ready at once (the expansion of
 * slice i + 1 waits for the GEMM of i - 1, as the GEMM of i does, and for
 * the expansion of i on its own stream), the GEMM issued first and of
 * higher priority, so its CTAs should be placed first and the expansion's
 * (S x the blocks an SM holds, grid-stride) take the SMs left; were the
 * expansion placed first, its blocks would spread over the GPU and hold
 * SMs the GEMM's CTAs (a whole SM each) wait for: kc_sq_set_overlap_fill
 * instead launches a short block for every 8 units, which give each SM
 * back quickly. The GEMMs read the same sums whatever their grid (integer
 * sums, data-parallel tiles, no split of k): the bits are the serial
 * path's (test_kc_sq --overlap). The side stream waits on an event of the
 * stream first and is joined back before the call returns, so the call is
 * ordered like any other on the stream and a CUDA graph capture of the
 * stream records both. A slice whose GEMM would take the cuBLAS fallback
 * (rows not a multiple of 4, say) keeps the whole call serial: cuBLAS
 * takes every SM. Fused parts (kc_sq_fuse) overlap too: a slice crossing
 * a part's end is expanded once and multiplied in one GEMM a part.
 *
 * Scratch. One FP16 weight buffer (a slice of at most 128 Mi weights: a
 * larger matrix, such as a 70B output layer, is expanded and multiplied a
 * slice of rows at a time; with the overlap, two INT8 slices of at most
 * 128 Mi weights each, the same bytes) and one FP16 activation buffer, grown to powers of two on demand
 * and never freed while the process runs (CUDA graphs captured earlier
 * keep their addresses, as in kc_sq_mm.cu).
 */
#include "kc_sq_frag.cuh"

#include <stdlib.h>

/* ---- expansion ---------------------------------------------------------------------------- */

/* Stores one decoded unit: lane (g, t) owns columns 16 t .. 16 t + 15 of
 * rows g and g + 8 (the fragment map in kc_sq_frag.cuh). */
__device__ __forceinline__ void write_unit(const uint32_t (&Alo)[8], const uint32_t (&Ahi)[8], const float (&sc)[4],
                                           __half *out, long n, long k, long tile, long grp, int lane) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const long row = tile * 16 + g + 8 * rh; /* within the slice: out's row 0 is the slice's first */
        if (row >= n) continue;
        const float sl = sc[2 * rh], sh = sc[2 * rh + 1];
        __half2 v[8];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int reg = (j >> 1) * 4 + (j & 1) * 2 + rh;
            const uint32_t lo = Alo[reg], hi = Ahi[reg];
            float f[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                f[i] = fmaf(sh, (float)(int8_t)(hi >> (8 * i)), sl * (float)(int8_t)(lo >> (8 * i)));
            v[2 * j] = __floats2half2_rn(f[0], f[1]);
            v[2 * j + 1] = __floats2half2_rn(f[2], f[3]);
        }
        uint4 *dst = (uint4 *)(out + row * k + grp * 64 + 16 * t);
        dst[0] = *(const uint4 *)&v[0];
        dst[1] = *(const uint4 *)&v[4];
    }
}

/* The same unit as INT8 values for integer bank scales: k_g * lo + hi
 * (a high position has lo 0, a low one hi 0; |k_g * lo| <= 127 by
 * kc_sq_upload's check), k_g = s_lo / s_hi (exact: an integer). */
__device__ __forceinline__ void write_unit_i8(const uint32_t (&Alo)[8], const uint32_t (&Ahi)[8], const float (&sc)[4],
                                              int8_t *out, long n, long k, long tile, long grp, int lane) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const long row = tile * 16 + g + 8 * rh;
        if (row >= n) continue;
        const float sl = sc[2 * rh], sh = sc[2 * rh + 1];
        const int kg = sh != 0.0f ? __float2int_rn(sl / sh) : 0;
        uint32_t v[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int reg = (j >> 1) * 4 + (j & 1) * 2 + rh;
            const uint32_t lo = Alo[reg], hi = Ahi[reg];
            uint32_t o = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int q = (int)(int8_t)(lo >> (8 * i)) * kg + (int)(int8_t)(hi >> (8 * i));
                o |= (uint32_t)(q & 255) << (8 * i);
            }
            v[j] = o;
        }
        *(uint4 *)(out + row * k + grp * 64 + 16 * t) = make_uint4(v[0], v[1], v[2], v[3]);
    }
}

/* the unit's four scales (rows g, g + 8: s_lo, s_hi) as floats */
template <bool S16>
__device__ __forceinline__ void unit_scales(const uint32_t *raw, float (&sc)[4]) {
    if (S16) {
        sc[0] = half_lo(raw[0]), sc[1] = half_hi(raw[0]);
        sc[2] = half_lo(raw[1]), sc[3] = half_hi(raw[1]);
    } else {
        for (int i = 0; i < 4; i++) sc[i] = __uint_as_float(raw[i]);
    }
}

/* the explicit fast layout (4-bit lo, one subgroup a group, 4 slots a lane):
 * one warp a unit, decoded by group_frags as the matmul kernels do */
/* the slice of the matrix one expansion covers: tiles [t0, t0 + nt), rows
 * below `rows` (relative to the slice) written to out [rows][k] */
struct Slice {
    long t0, nt, rows;
};

template <bool S16, bool I8>
__global__ void __launch_bounds__(256) k_sq_expand(MmArgs a, Slice sl, void *out) {
    __shared__ __align__(16) uint8_t sm[8 * SQ_TILE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint8_t *tl = sm + warp * SQ_TILE;
    zero_tiles(tl, 1, lane);
    const LanePtr lp = lane_ptrs<4, 4, S16>(a, lane);
    const long U = sl.nt * a.ngroups, u0 = sl.t0 * a.ngroups;
    for (long u = (long)blockIdx.x * 8 + warp; u < U; u += (long)gridDim.x * 8) {
        Raw<4, 4, S16> c[1];
        load_group<4, 1, 4, S16>(c, (unsigned)(u0 + u), a, lp);
        uint32_t Alo[1][8], Ahi[1][8];
        group_frags<4, 1, 4, S16, false>(c, 0, tl, a, lane, Alo, Ahi); /* signed low codes */
        __syncwarp(); /* every lane has read its operands before the next scatter */
        float sc[4];
        unit_scales<S16>(c[0].sc, sc);
        if (I8) write_unit_i8(Alo[0], Ahi[0], sc, (int8_t *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
        else write_unit(Alo[0], Ahi[0], sc, (__half *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
    }
}

/* the compact layout: one warp a unit, frag_compact */
template <bool S16, bool I8>
__global__ void __launch_bounds__(256) k_sqc_expand(MmArgs a, Slice sl, void *out) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const LanePtrC lp = lane_ptrs_c<S16>(a.w, lane);
    const long U = sl.nt * a.ngroups, u0 = sl.t0 * a.ngroups;
    for (long u = (long)blockIdx.x * 8 + warp; u < U; u += (long)gridDim.x * 8) {
        RawC<S16> r;
        load_unit_c<S16>(r, lp, (unsigned)(u0 + u));
        uint32_t Alo[8], Ahi[8];
        frag_compact<true, S16>(r, Alo, Ahi, lane & 3);
        float sc[4];
        unit_scales<S16>(r.sc, sc);
        if (I8) write_unit_i8(Alo, Ahi, sc, (int8_t *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
        else write_unit(Alo, Ahi, sc, (__half *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
    }
}

/* a[i][j] = fp16(q[i][j]): exact (|q| <= 127), 8 values a thread (k is a
 * multiple of 64); the per-token scale is applied to the FP32 output */
__global__ void k_act_f16(const int8_t *qx, long n8, __half *a) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    const uint2 q = __ldg((const uint2 *)(qx + i * 8));
    __half2 v[4];
#pragma unroll
    for (int p = 0; p < 4; p++) {
        const uint32_t w = p < 2 ? q.x : q.y;
        const int sh = 16 * (p & 1);
        v[p] = __floats2half2_rn((float)(int8_t)(w >> sh), (float)(int8_t)(w >> (sh + 8)));
    }
    *(uint4 *)(a + i * 8) = *(const uint4 *)v;
}

/* y[t][0..ncols) *= sx[t], rows of leading dimension ldy */
__global__ void k_scale_rows(float *y, long ldy, long m, long ncols, const float *sx) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * ncols) return;
    const long t = i / ncols, c = i % ncols;
    y[t * ldy + c] *= __ldg(sx + t);
}

/* ---- host side ------------------------------------------------------------------------- */

static __half *g_w16, *g_a16;
static size_t g_w16_n, g_a16_n; /* their bytes */
static long g_min_m = -1, g_i8_min = -1;

extern "C" void kc_sq_set_i8_min(long m) { g_i8_min = m; }

/* the crossover on the H200 (bench_gemm --twostep, docs/perf-gpu.md): the
 * INT8 path beats the float-combining fused kernels from 64 tokens on every
 * shape, but the INT32-accumulating one (explicit layout, kc_sq_mm.cu)
 * still wins at 64 on six of eight */
extern "C" long kc_sq_i8_min(void) { return kc_threshold(&g_i8_min, "KC_SQ_I8_M", 65); }

/* the INT8 path applies to w at m tokens */
static int i8_applies(const kc_sq *w, long m) {
    const long min_m = kc_sq_i8_min();
    return w->iscale && min_m > 0 && m >= min_m;
}

extern "C" void kc_sq_set_twostep_min(long m) { g_min_m = m; }

/* the crossover on the H200 (bench_gemm, docs/perf-gpu.md) */
extern "C" long kc_sq_twostep_min(void) { return kc_threshold(&g_min_m, "KC_SQ_TWOSTEP_M", 128); }


/* the scratch, in halves (bytes of kc_grow), from 16 Mi halves up */
static int grow(__half **buf, size_t *have_bytes, size_t halves) {
    return kc_grow((void **)buf, have_bytes, halves * sizeof(__half), (size_t)32 << 20);
}

/* The two-step pieces, shared with kc_int.cu (kc_internal.h). A matrix is
 * expanded and multiplied in slices of at most KC_F16_SLICE weights
 * (256 MiB of FP16), so the scratch stays bounded whatever the matrix (a
 * 70B output layer is 1.05 G weights). */
extern "C" void *kc_f16_weights(size_t count) { return grow(&g_w16, &g_w16_n, count) ? NULL : g_w16; }

extern "C" void *kc_f16_acts(const int8_t *d_qx, long m, long k) {
    if (grow(&g_a16, &g_a16_n, (size_t)m * k)) return NULL;
    const long n8 = m * (k / 8);
    k_act_f16<<<kc_blocks(n8, 256), 256, 0, KC_STREAM>>>(d_qx, n8, g_a16);
    return kc_check_launch("k_act_f16") ? NULL : g_a16;
}

/* y (ldy) = A16 [m][k] . W16 [n][k]^T, FP32 out, FP32 sums */
extern "C" int kc_f16_gemm(const void *w16, long n, long k, const void *a16, long m, float *y, long ldy) {
    return kc_gemm_nt(KC_GEMM_F16, w16, n, k, a16, m, y, ldy);
}

extern "C" int kc_f16_scale_rows(float *y, long ldy, long m, long ncols, const float *d_sx) {
    k_scale_rows<<<kc_blocks(m * ncols, 256), 256, 0, KC_STREAM>>>(y, ldy, m, ncols, d_sx);
    return kc_check_launch("k_scale_rows");
}

extern "C" int kc_sq_twostep_applies(const kc_sq *w, long m) {
    const long min_m = kc_sq_twostep_min();
    return ((min_m > 0 && m >= min_m) || i8_applies(w, m)) && (w->compact || is_fast(w)) && w->n <= 0x7fffffffL &&
           w->k <= 0x7fffffffL && m <= 0x7fffffffL;
}

/* the path's inputs besides the matrix */
struct TwoStep {
    MmArgs a;
    bool i8;          /* integer bank scales: INT8 expansion and GEMM */
    const int8_t *qx; /* the INT8 activations (the INT8 path reads them as they are) */
    const float *sx;
    long m;
};

/* the expansion kernel for w's layout and scales */
typedef void (*ExpandFn)(MmArgs, Slice, void *);
static ExpandFn expand_kernel(const kc_sq *w, bool i8) {
    if (w->compact) return i8 ? (w->s16 ? k_sqc_expand<true, true> : k_sqc_expand<false, true>)
                              : (w->s16 ? k_sqc_expand<true, false> : k_sqc_expand<false, false>);
    return i8 ? (w->s16 ? k_sq_expand<true, true> : k_sq_expand<false, true>)
              : (w->s16 ? k_sq_expand<true, false> : k_sq_expand<false, false>);
}

/* one warp a unit, at most 4096 blocks (grid-stride beyond) */
static unsigned full_grid(const kc_sq *w, const Slice &sl) {
    const long blocks = (sl.nt * w->ngroups + 7) / 8;
    return (unsigned)(blocks < 4096 ? blocks : 4096);
}

/* rows [r0, r0 + rows) (r0 a multiple of 16) expanded into out on stream s */
static int expand(const kc_sq *w, const TwoStep &ts, long r0, long rows, void *out, unsigned blocks, cudaStream_t s) {
    const Slice sl = {r0 / 16, (rows + 15) / 16, rows};
    if (!blocks) blocks = full_grid(w, sl);
    expand_kernel(w, ts.i8)<<<blocks, 256, 0, s>>>(ts.a, sl, out);
    return kc_check_launch("k_sq_expand");
}

/* Expands the rows [r0, r0 + rows) (r0 a multiple of 16) into the scratch
 * and multiplies them: y[t][i] (leading dimension ldy) for the slice's rows
 * i (the INT8 path scales them here; the FP16 one after, by the caller). */
static int slice_gemm(const kc_sq *w, const TwoStep &ts, long r0, long rows, float *y, long ldy) {
    if (expand(w, ts, r0, rows, g_w16, 0, KC_STREAM)) return -1;
    if (!ts.i8) return kc_f16_gemm(g_w16, rows, w->k, g_a16, ts.m, y, ldy);
    return kc_i8_matmul(ts.qx, (const int8_t *)g_w16, ts.m, rows, w->k, ts.sx, w->rs + r0, y, ldy);
}

/* rows [r0, r1) of the matrix into y (ldy), in slices of whole tiles */
static long slice_step(const kc_sq *w) {
    long step = KC_F16_SLICE / w->k / 16 * 16;
    return step < 16 ? 16 : step;
}

static int rows_gemm(const kc_sq *w, const TwoStep &ts, long r0, long r1, float *y, long ldy) {
    const long step = slice_step(w);
    for (long r = r0; r < r1; r += step) {
        const long rows = r1 - r < step ? r1 - r : step;
        if (slice_gemm(w, ts, r, rows, y + (r - r0), ldy)) return -1;
        /* the FP16 path's token scale, on the slice's columns once they are final */
        if (!ts.i8 && kc_f16_scale_rows(y + (r - r0), ldy, ts.m, rows, ts.sx)) return -1;
    }
    return 0;
}

/* ---- the overlap: the next slice expanded beside the GEMM of this one ---------------------- */

static long g_ov_min = -1, g_ov_sms = -1, g_ov_rows, g_ov_fill = -1;
static long g_ov_count;

extern "C" void kc_sq_set_overlap(long min_m, int sms) { g_ov_min = min_m < 0 ? -1 : min_m, g_ov_sms = sms < 0 ? -1 : sms; }
extern "C" void kc_sq_set_overlap_rows(long rows) { g_ov_rows = rows > 0 ? (rows + 15) / 16 * 16 : 0; }
extern "C" void kc_sq_set_overlap_fill(int on) { g_ov_fill = on < 0 ? -1 : on != 0; }
extern "C" long kc_sq_overlap_min(void) { return kc_threshold(&g_ov_min, "KC_SQ_OVERLAP_M", 0); }
extern "C" int kc_sq_overlap_sms(void) { return (int)kc_threshold(&g_ov_sms, "KC_SQ_OVERLAP_SMS", 16); }
extern "C" int kc_sq_overlap_fill(void) { return kc_threshold(&g_ov_fill, "KC_SQ_OVERLAP_FILL", 0) != 0; }
extern "C" long kc_sq_overlap_count(void) { return g_ov_count; }

/* the output of a row range: the parts (kc_sq_fuse) or one matrix */
struct Outs {
    int np;
    long start[KC_SQ_MAX_PARTS + 1]; /* part p: rows [start[p], start[p + 1]) */
    float *y[KC_SQ_MAX_PARTS];
};

static Outs outs_of(const kc_sq *w, float *d_y, float *const *parts) {
    Outs o;
    memset(&o, 0, sizeof o);
    o.np = parts && w->nparts > 1 ? w->nparts : 1;
    for (int p = 0; p < o.np; p++) {
        o.y[p] = o.np > 1 ? parts[p] : d_y;
        o.start[p + 1] = o.start[p] + (o.np > 1 ? w->part_n[p] : w->n);
    }
    return o;
}

/* The GEMMs of the expanded rows [s0, s1) in w8 (one a part they cross),
 * on gemm_sms SMs; with run 0 only whether each takes the CUTLASS kernel
 * (1) or the fallback (0), which the overlap must not meet: cuBLAS would
 * take every SM. */
static int slice_gemms(const kc_sq *w, const TwoStep &ts, const Outs &o, long s0, long s1, const int8_t *w8,
                       int gemm_sms, bool run) {
    for (int p = 0; p < o.np; p++) {
        const long a = s0 > o.start[p] ? s0 : o.start[p], b = s1 < o.start[p + 1] ? s1 : o.start[p + 1];
        if (a >= b) continue;
        const long ldy = o.start[p + 1] - o.start[p];
        const int8_t *wa = w8 + (a - s0) * w->k;
        float *y = o.y[p] + (a - o.start[p]);
        if (!run) {
            if (!kc_i8_fused_fits(ts.qx, wa, ts.m, b - a, w->k, w->rs + a, y, ldy)) return 0;
        } else if (kc_i8_matmul_sms(ts.qx, wa, ts.m, b - a, w->k, ts.sx, w->rs + a, y, ldy, gemm_sms)) {
            return -1;
        }
    }
    return run ? 0 : 1;
}

/* The slice's rows: whole 128-row tiles of the GEMM (its n), as many as
 * make the fewest rounds of the persistent grid over all slices, 3 to 8
 * slices (more only where a slice would outgrow its buffer, KC_F16_SLICE
 * bytes: the two buffers take the FP16 path's scratch), the smallest such
 * slice (the first expansion is the one not hidden). A round costs about
 * the same full or not, so slices that leave rounds mostly empty cost more
 * GEMM time than the expansion they hide: 70B down at 1024 tokens (8 token
 * tiles a 128 rows, 116 CTAs on 116 SMs) in four slices of 2048 rows is 8
 * rounds, in five of 1664 rows 5, what the serial path's two slices of
 * 4672 and 3520 rows take on 132. 0: too few tiles to overlap. */
static long plan_rows(const kc_sq *w, long m, int gemm_sms) {
    if (g_ov_rows > 0) return g_ov_rows;
    const long nt = (w->n + 127) / 128, per = kc_i8_tiles(m, 128), round = kc_i8_round(gemm_sms);
    long qmax = KC_F16_SLICE / (128 * w->k);
    if (qmax < 1) qmax = 1;
    const long smax = (nt + qmax - 1) / qmax > 8 ? (nt + qmax - 1) / qmax : 8;
    long best = 0, best_rounds = 0;
    for (long q = 1; q <= qmax && q <= nt; q++) {
        const long ns = (nt + q - 1) / q, last = nt - (ns - 1) * q;
        if (ns < 3 || ns > smax) continue;
        const long rounds = (ns - 1) * ((q * per + round - 1) / round) + (last * per + round - 1) / round;
        if (!best || rounds < best_rounds) best = q, best_rounds = rounds;
    }
    return best * 128;
}

/* the events of the overlap, made once: fork, gemm done (a buffer), expanded (a buffer), join */
static cudaEvent_t g_ev[6];

static int ov_events(void) {
    for (int i = 0; i < 6; i++)
        if (!g_ev[i] && kc_check(cudaEventCreateWithFlags(&g_ev[i], cudaEventDisableTiming), "cudaEventCreate"))
            return -1;
    return 0;
}

/* blocks of the side stream's expansion: `sms` SMs' worth (the block scheduler
 * may still spread them: kc_sq_overlap_fill says why the other choice) */
static unsigned side_grid(const kc_sq *w, const TwoStep &ts, long rows, int sms) {
    const Slice sl = {0, (rows + 15) / 16, rows};
    const long need = (sl.nt * w->ngroups + 7) / 8;
    if (kc_sq_overlap_fill()) return (unsigned)(need < 0x7fffffffL ? need : 0x7fffffffL);
    static ExpandFn fn[8];
    static int occ[8];
    const ExpandFn k = expand_kernel(w, ts.i8);
    int i = 0;
    while (i < 8 && fn[i] && fn[i] != k) i++;
    if (i < 8 && !fn[i]) {
        int o = 0;
        if (kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, k, 256, 0), "cudaOccupancy (k_sq_expand)"))
            return 0;
        fn[i] = k, occ[i] = o > 0 ? o : 1;
    }
    const long blocks = (long)sms * (i < 8 ? occ[i] : 1);
    return (unsigned)(blocks < need ? blocks : need);
}

static int wait_ev(cudaStream_t s, cudaEvent_t e) { return kc_check(cudaStreamWaitEvent(s, e, 0), "cudaStreamWaitEvent"); }
static int record(cudaEvent_t e, cudaStream_t s) { return kc_check(cudaEventRecord(e, s), "cudaEventRecord"); }

/* Slices of `rows` (the last shorter), double-buffered: slice i + 1 is
 * expanded on the side stream (lowest priority) into the buffer slice i - 1
 * was read from, once that GEMM is done, while the GEMM of slice i runs on
 * gemm_sms SMs of the stream (highest priority); the stream waits for an
 * expansion before its GEMM. The side stream starts by waiting on an event
 * of the stream (so it follows everything issued before, and joins a graph
 * capture of the stream) and ends joined back to it. */
static int overlap_rows(const kc_sq *w, const TwoStep &ts, const Outs &o, long rows, int side_sms, int gemm_sms) {
    cudaStream_t ms = KC_STREAM, xs = (cudaStream_t)kc_side_stream();
    cudaEvent_t *fork = &g_ev[0], *done = &g_ev[1], *ready = &g_ev[3], *join = &g_ev[5];
    const long n = w->n, ns = (n + rows - 1) / rows;
    int8_t *buf[2] = {(int8_t *)g_w16, (int8_t *)g_w16 + rows * w->k};
    const unsigned side = side_grid(w, ts, rows, side_sms);
    if (!side || expand(w, ts, 0, rows < n ? rows : n, buf[0], 0, ms) || record(*fork, ms) ||
        wait_ev(xs, *fork))
        return -1;
    int rc = 0;
    for (long i = 0; i < ns && !rc; i++) {
        const long s0 = i * rows, s1 = s0 + rows < n ? s0 + rows : n;
        /* the GEMM first: issued before the expansion it should get its SMs ahead of */
        rc = slice_gemms(w, ts, o, s0, s1, buf[i % 2], gemm_sms, true) || record(done[i % 2], ms);
        if (rc || i + 1 >= ns) break;
        const int b = (int)((i + 1) % 2);
        const long e1 = s1 + rows < n ? s1 + rows : n;
        rc = (i >= 1 && wait_ev(xs, done[b])) || expand(w, ts, s1, e1 - s1, buf[b], side, xs) ||
             record(ready[b], xs) || wait_ev(ms, ready[b]);
    }
    /* the join, also after an error: the side stream must not be left forked */
    const int jrc = record(*join, xs) || wait_ev(ms, *join);
    return rc || jrc ? -1 : 0;
}

/* the SMs of the side stream's expansion (at most half the GPU) and of the
 * GEMM (the others, whole clusters of 2); 0 if there is no room for both */
static int ov_sms(int *side, int *gemm) {
    const int all = kc_sm_count();
    *side = kc_sq_overlap_sms();
    if (*side <= 0 || all < 8) return 0;
    if (*side > all / 2) *side = all / 2;
    *gemm = (all - *side) / 2 * 2;
    return 1;
}

extern "C" long kc_sq_overlap_rows(const kc_sq *w, long m) {
    int side, gemm;
    if (!w || !ov_sms(&side, &gemm)) return 0;
    const long rows = plan_rows(w, m, gemm);
    return rows > 0 && rows < w->n ? rows : 0;
}

/* the overlap applies: INT8 path, m from kc_sq_overlap_min(), at least two
 * slices, every GEMM on the CUTLASS kernel; 1 with the slice's rows and the
 * SMs of each side, or 0 (the serial path) */
static int overlap_plan(const kc_sq *w, const TwoStep &ts, const Outs &o, long *rows_out, int *side_out,
                        int *gemm_out) {
    const long min_m = kc_sq_overlap_min();
    int side, gemm;
    if (!ts.i8 || min_m <= 0 || ts.m < min_m || !ov_sms(&side, &gemm)) return 0;
    const long rows = plan_rows(w, ts.m, gemm);
    if (rows <= 0 || rows >= w->n || (size_t)rows * w->k > (size_t)KC_F16_SLICE) return 0;
    /* the alignment of either buffer (16 x k bytes apart; the scratch, once
     * allocated, by cudaMalloc) */
    const int8_t *w8 = (const int8_t *)g_w16;
    for (long s0 = 0; s0 < w->n; s0 += rows)
        if (!slice_gemms(w, ts, o, s0, s0 + rows < w->n ? s0 + rows : w->n, w8, gemm, false)) return 0;
    *rows_out = rows, *side_out = side, *gemm_out = gemm;
    return 1;
}

extern "C" int kc_sq_twostep(const kc_sq *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y,
                             float *const *parts) {
    const long slice_rows = w->n < slice_step(w) ? w->n : slice_step(w);
    TwoStep ts;
    memset(&ts, 0, sizeof ts);
    ts.i8 = i8_applies(w, m), ts.qx = d_qx, ts.sx = d_sx, ts.m = m;
    const Outs o = outs_of(w, d_y, parts);
    long rows = 0;
    int side = 0, gemm = 0;
    const bool ov = overlap_plan(w, ts, o, &rows, &side, &gemm);
    /* the INT8 scratch takes a byte a weight: half the FP16 buffer's halves;
     * the overlap's two buffers of a slice, rows x k bytes each */
    const size_t halves = ov ? (size_t)rows * w->k
                             : ts.i8 ? ((size_t)slice_rows * w->k + 1) / 2 : (size_t)slice_rows * w->k;
    if (grow(&g_w16, &g_w16_n, halves)) return -1;
    if (!ts.i8 && grow(&g_a16, &g_a16_n, (size_t)m * w->k)) return -1;
    MmArgs &a = ts.a;
    a.w = w->d, a.n = w->n, a.k = w->k, a.ntiles = w->ntiles, a.nsub = w->nsub, a.ngroups = w->ngroups;
    a.unit_bytes = w->unit_bytes, a.lo_bytes = w->lo_bytes, a.slot_bytes = w->slot_bytes, a.s2 = w->s2;
    if (!ts.i8 && !kc_f16_acts(d_qx, m, w->k)) return -1;
    if (ov) {
        if (ov_events() || overlap_rows(w, ts, o, rows, side, gemm)) return -1;
        g_ov_count++;
        return 0;
    }
    for (int p = 0; p < o.np; p++)
        if (rows_gemm(w, ts, o.start[p], o.start[p + 1], o.y[p], o.start[p + 1] - o.start[p])) return -1;
    return 0;
}
