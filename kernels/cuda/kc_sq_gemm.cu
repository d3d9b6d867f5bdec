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
 * Scratch. One weight buffer (a slice of at most 128 Mi FP16 weights or
 * 256 Mi INT8 ones: a larger matrix, such as a 70B output layer, is
 * expanded and multiplied a slice of rows at a time, in slices of equal
 * whole tiles: slice_step) and one FP16 activation buffer, grown to powers
 * of two on demand and never freed while the process runs (CUDA graphs
 * captured earlier keep their addresses, as in kc_sq_mm.cu).
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

/* the slice of the matrix one expansion covers: tiles [t0, t0 + nt), rows
 * below `rows` (relative to the slice) written to out [rows][k] */
struct Slice {
    long t0, nt, rows;
};

/* The unit's INT8 fragment from is_frags (register i: row g + 8 (i & 1),
 * columns 16 t + 4 (i >> 1) .. + 3), stored as write_unit_i8 stores its bytes */
__device__ __forceinline__ void write_frag_i8(const uint32_t (&A)[8], int8_t *out, long n, long k, long tile,
                                              long grp, int lane) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const long row = tile * 16 + g + 8 * rh;
        if (row < n) *(uint4 *)(out + row * k + grp * 64 + 16 * t) = make_uint4(A[rh], A[2 + rh], A[4 + rh], A[6 + rh]);
    }
}

/* The explicit fast layout (4-bit lo, one subgroup a group, 4 slots a
 * lane): one warp a unit, decoded by group_frags as the matmul kernels do.
 * Integer bank scales with half scales (every model the
 * converter and the synthetic weights make) decode with is_frags, the unit
 * decoder of the INT32 decode and wgmma kernels: the low codes times k_g in
 * 16-bit SIMD lanes, the highs ORed in, the bytes write_unit_i8 computes
 * one at a time with a division a row for k_g (1-3 % less time for the
 * INT8 path on the H200; loading each warp's next unit ahead as well gained
 * nothing more). */
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
        if constexpr (I8 && S16) {
            uint32_t A[8];
            is_frags(c, (unsigned)(u0 + u), tl, a, lane, A);
            __syncwarp(); /* every lane has read its operands before the next scatter */
            write_frag_i8(A, (int8_t *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
        } else {
            uint32_t Alo[1][8], Ahi[1][8];
            group_frags<4, 1, 4, S16, false>(c, 0, tl, a, lane, Alo, Ahi); /* signed low codes */
            __syncwarp();
            float sc[4];
            unit_scales<S16>(c[0].sc, sc);
            if (I8) write_unit_i8(Alo[0], Ahi[0], sc, (int8_t *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
            else write_unit(Alo[0], Ahi[0], sc, (__half *)out, sl.rows, a.k, u / a.ngroups, u % a.ngroups, lane);
        }
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

/* Expands the rows [r0, r0 + rows) (r0 a multiple of 16) into the scratch
 * and multiplies them: y[t][i] (leading dimension ldy) for the slice's rows
 * i (the INT8 path scales them here; the FP16 one after, by the caller). */
static int slice_gemm(const kc_sq *w, const TwoStep &ts, long r0, long rows, float *y, long ldy) {
    const Slice sl = {r0 / 16, (rows + 15) / 16, rows};
    const long units = sl.nt * w->ngroups;
    const unsigned blocks = (unsigned)((units + 7) / 8 < 4096 ? (units + 7) / 8 : 4096); /* grid-stride */
    void *out = g_w16;
    if (w->compact) {
        if (ts.i8) w->s16 ? k_sqc_expand<true, true><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out)
                          : k_sqc_expand<false, true><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out);
        else w->s16 ? k_sqc_expand<true, false><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out)
                    : k_sqc_expand<false, false><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out);
    } else {
        if (ts.i8) w->s16 ? k_sq_expand<true, true><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out)
                          : k_sq_expand<false, true><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out);
        else w->s16 ? k_sq_expand<true, false><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out)
                    : k_sq_expand<false, false><<<blocks, 256, 0, KC_STREAM>>>(ts.a, sl, out);
    }
    if (kc_check_launch("k_sq_expand")) return -1;
    if (!ts.i8) return kc_f16_gemm(g_w16, rows, w->k, g_a16, ts.m, y, ldy);
    return kc_i8_matmul(ts.qx, (const int8_t *)g_w16, ts.m, rows, w->k, ts.sx, w->rs + r0, y, ldy);
}

/* The rows a slice takes: as many as the scratch holds (KC_F16_SLICE FP16
 * weights, or twice as many INT8 ones: the same bytes), then the slices
 * made equal, in whole tiles. Why both: each slice's GEMM ends in a round
 * of tiles the GPU's SMs only partly fill, and 70B down (235 M weights)
 * in FP16-sized slices of 4672 + 3520 rows took the INT8 GEMM 5 rounds at
 * 1024 tokens where the whole matrix takes 4 (the INT8 path 484 us
 * against 304 for the GEMM on stored weights; 421 us in one slice).
 * Smaller slices, whose INT8 weights would stay in L2 between the
 * expansion and the GEMM, measured slower on every shape: more rounds. */
static long g_slice; /* kc_sq_set_slice (tests): FP16 weights a slice, 0 for KC_F16_SLICE */

extern "C" void kc_sq_set_slice(long weights) { g_slice = weights > 0 && weights < KC_F16_SLICE ? weights : 0; }

static long slice_step(const kc_sq *w, bool i8) {
    long step = (i8 ? 2 : 1) * (g_slice ? g_slice : KC_F16_SLICE) / w->k / 16 * 16;
    if (step < 16) return 16;
    const long n = w->n, slices = (n + step - 1) / step, even = ((n + slices - 1) / slices + 15) / 16 * 16;
    return even < step ? even : step;
}

/* rows [r0, r1) of the matrix into y (ldy), in slices of whole tiles */
static int rows_gemm(const kc_sq *w, const TwoStep &ts, long r0, long r1, float *y, long ldy) {
    const long step = slice_step(w, ts.i8);
    for (long r = r0; r < r1; r += step) {
        const long rows = r1 - r < step ? r1 - r : step;
        if (slice_gemm(w, ts, r, rows, y + (r - r0), ldy)) return -1;
        /* the FP16 path's token scale, on the slice's columns once they are final */
        if (!ts.i8 && kc_f16_scale_rows(y + (r - r0), ldy, ts.m, rows, ts.sx)) return -1;
    }
    return 0;
}

extern "C" int kc_sq_twostep(const kc_sq *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y,
                             float *const *parts) {
    TwoStep ts;
    memset(&ts, 0, sizeof ts);
    ts.i8 = i8_applies(w, m), ts.qx = d_qx, ts.sx = d_sx, ts.m = m;
    const long step = slice_step(w, ts.i8), slice_rows = w->n < step ? w->n : step;
    /* the INT8 scratch takes a byte a weight: half the FP16 buffer's halves */
    if (grow(&g_w16, &g_w16_n, ts.i8 ? ((size_t)slice_rows * w->k + 1) / 2 : (size_t)slice_rows * w->k)) return -1;
    if (!ts.i8 && grow(&g_a16, &g_a16_n, (size_t)m * w->k)) return -1;
    MmArgs &a = ts.a;
    a.w = w->d, a.n = w->n, a.k = w->k, a.ntiles = w->ntiles, a.nsub = w->nsub, a.ngroups = w->ngroups;
    a.unit_bytes = w->unit_bytes, a.lo_bytes = w->lo_bytes, a.slot_bytes = w->slot_bytes, a.s2 = w->s2;
    if (!ts.i8 && !kc_f16_acts(d_qx, m, w->k)) return -1;
    if (!parts || w->nparts <= 1) return rows_gemm(w, ts, 0, w->n, d_y, w->n);
    long r0 = 0; /* every part but the last is whole tiles: slices start on tiles */
    for (int p = 0; p < w->nparts; p++) {
        const long np = w->part_n[p];
        if (rows_gemm(w, ts, r0, r0 + np, parts[p], np)) return -1;
        r0 += np;
    }
    return 0;
}
