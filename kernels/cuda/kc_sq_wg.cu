/* kc_sq_wg.cu - SQ with integer bank scales x INT8 on Hopper's warpgroup
 * MMA (wgmma): the weights decoded in registers, never written out.
 *
 * Why. With integer bank scales every weight of a unit is one INT8 value
 * (k_g lo + hi, kc_sq_frag.cuh's is_frags) times its row's scale, so the
 * product is a pure INT8 GEMM once the unit is decoded. Below this kernel
 * there were two ways to run it for many tokens, both measured on the H200
 * (docs/perf-gpu.md): the mma.sync decode kernels (kc_sq_mm.cu), issue-
 * bound on ~150 instructions a unit of per-unit work plus 2 mma.sync a unit
 * and n-tile; and the two-step path (kc_sq_gemm.cu: expand the matrix to
 * INT8 in memory, then the CUTLASS INT8 GEMM), which writes and rereads a
 * byte a weight: at 128 tokens that pass costs about what the GEMM does.
 *
 * Design (Machete / Marlin's "swap AB" for narrow weights): the weights are
 * wgmma's A operand, which may come from registers, and the tokens are its
 * N. A warp's 16 rows of the 64-row wgmma tile are exactly one SQ unit's
 * rows, and the register fragment of wgmma's A (per warp) is mma.m16n8k32's,
 * so is_frags's output feeds it unchanged. One wgmma a 32-column half of a
 * unit then covers all NTOK tokens: the per-unit decode is paid once per
 * NTOK tokens, and the tensor cores see one instruction where mma.sync
 * needed NTOK / 8.
 *
 * A block is two warpgroups (128 rows = 8 unit rows, one per warp) by NTOK
 * tokens, walking k U 64-column groups (U = 1 or 2) a step through a ring
 * of S stages in shared memory filled by cp.async, S - 2 steps ahead: a
 * stage holds each group's activations (B, NTOK x 64 bytes in wgmma's
 * K-major layout with the 64-byte swizzle: token n's 64 bytes at 64 n,
 * chunk c at 16 (c ^ (n / 2 mod 4))) and the 8 warps' units. Each step:
 * wait for the stage, one barrier, refill the slot two steps old (its
 * wgmma retired: every warp waited for it before the barrier), decode the
 * warp's units into A registers, 2 U wgmma, and wait for the previous
 * step's wgmma only: the decode of step i + 1 runs while the tensor cores
 * work on step i (the A registers alternate between two sets).
 *
 * The activations are permuted first (k_wg_x): the unit stores a lane's 16
 * columns contiguously (kc_sq_frag.cuh's fragment map), so logical k of
 * wgmma's fragment is a permutation of the group's columns, a 4 x 4
 * transpose of its 32-bit words; B must follow it.
 *
 * Sums are INT32 over the whole row (exact: kc_sq_mm.cu's bound), scaled
 * once: y = (s_row * acc) * sx, the INT8 path's order. Where the grid would
 * leave SMs idle, the groups of a row are split over blocks (kspl), which
 * add their INT32 sums into a zeroed scratch with atomics (integers: the
 * order does not matter, the result is exact and repeatable); the last
 * block of a tile to arrive converts, stores and zeroes the scratch.
 *
 * sm_90a only (kc_sm90a): elsewhere kc_sq_wg_applies is false.
 */
#include "kc_sq_mm.cuh"

#include <stdlib.h>
#include <string.h>

namespace {

constexpr int WG_WARPS = 8;                   /* two warpgroups: 128 rows a block */
constexpr int WG_UB = UG<4, 4, true>::ub;     /* a unit's bytes (half scales): 832 */

template <int NTOK, int U>
struct WgStage {
    static constexpr int BX = U * NTOK * 64; /* U groups' activations */
    static constexpr int BYTES = (BX + U * WG_WARPS * WG_UB + 511) / 512 * 512; /* + the 8 warps' units */
    /* + a scatter tile a warp and group of the step (two independent decodes) */
    static constexpr size_t smem(int S) { return (size_t)S * BYTES + U * WG_WARPS * SQ_TILE + 512; }
};

/* ---- wgmma (PTX ISA 8.0, sm_90a) --------------------------------------------------------- */

/* the wgmma code exists in the sm_90a pass (and the host's); the compute_90
 * PTX gets a kernel that traps */
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KC_WG_ON 1
#else
#define KC_WG_ON 0
#endif
#if KC_WG_ON

/* shared-memory matrix descriptor, K-major with the 64-byte swizzle: an
 * atom of 8 rows x 64 bytes, sbo = bytes between 8-row groups (lbo unused).
 * Without a swizzle (core matrices of 8 rows x 16 bytes, the two k chunks
 * of an instruction apart) the same kernel took 1.1-1.8x the time at 32 to
 * 1024 tokens (bench_gemm --wg, H200, twelfth session): bank conflicts. */
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((saddr & 0x3FFFFu) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 | 2ull << 62;
}
/* cp.async of 16 bytes, or (valid false) 16 zero bytes, reading nothing */
__device__ __forceinline__ void cp_async16_z(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
/* the generic proxy's writes (cp.async) made visible to wgmma's reads */
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

/* d (64 x N, INT32) += A (registers A[4h..4h+3]: the unit's k-half h) x B (desc) */
template <int N>
__device__ __forceinline__ void wgmma_rs(int (&d)[N / 2], const uint32_t (&A)[8], int h, uint64_t desc);

template <>
__device__ __forceinline__ void wgmma_rs<32>(int (&d)[16], const uint32_t (&A)[8], int h, uint64_t desc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k32.s32.s8.s8 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                 "}, {%16, %17, %18, %19}, %20, p;\n}\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
                   "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15])
                 : "r"(A[4 * h]), "r"(A[4 * h + 1]), "r"(A[4 * h + 2]), "r"(A[4 * h + 3]), "l"(desc), "n"(1));
}

template <>
__device__ __forceinline__ void wgmma_rs<64>(int (&d)[32], const uint32_t (&A)[8], int h, uint64_t desc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, {%32, %33, %34, %35}, %36, p;\n}\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
                   "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
                   "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
                   "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31])
                 : "r"(A[4 * h]), "r"(A[4 * h + 1]), "r"(A[4 * h + 2]), "r"(A[4 * h + 3]), "l"(desc), "n"(1));
}

template <>
__device__ __forceinline__ void wgmma_rs<128>(int (&d)[64], const uint32_t (&A)[8], int h, uint64_t desc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, {%64, %65, %66, %67}, %68, p;\n}\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
                   "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
                   "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
                   "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
                   "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
                   "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
                   "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
                   "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
                 : "r"(A[4 * h]), "r"(A[4 * h + 1]), "r"(A[4 * h + 2]), "r"(A[4 * h + 3]), "l"(desc), "n"(1));
}

#endif /* KC_WG_ON */

/* ---- the kernels --------------------------------------------------------------------------- */

/* activations [m][k] -> the same with each 64-column group's 16 words
 * transposed as a 4 x 4 matrix: word 4 c + t of the output is word 4 t + c
 * of the input, so 16-byte chunk 2 h' + h of a group holds wgmma step h''s
 * logical k 16 h .. 16 h + 15 (the fragment map: lane t's register pair h
 * of step kc is columns 16 t + 8 kc + 4 h ..) */
__global__ void k_wg_x(const int8_t *qx, long groups, int8_t *xw) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= groups) return;
    const uint4 *s = (const uint4 *)(qx + i * 64);
    const uint4 a = __ldg(s), b = __ldg(s + 1), c = __ldg(s + 2), d = __ldg(s + 3);
    uint4 *o = (uint4 *)(xw + i * 64);
    o[0] = make_uint4(a.x, b.x, c.x, d.x);
    o[1] = make_uint4(a.y, b.y, c.y, d.y);
    o[2] = make_uint4(a.z, b.z, c.z, d.z);
    o[3] = make_uint4(a.w, b.w, c.w, d.w);
}

/* a warp's 16 rows x NTOK tokens of INT32 sums, scaled and stored: wgmma's
 * accumulator layout is mma.m16n8's repeated over n (register 4 j + e =
 * n-tile j, element e), so the decode kernels' epilogue takes it as is */
template <int NTOK>
__device__ __forceinline__ void wg_store(const int (&acc)[NTOK / 2], const MmArgs &a, long tile, long tok0, int lane) {
    float v[NTOK / 8][4];
    is_to_float<NTOK / 8>(*reinterpret_cast<const int(*)[NTOK / 8][4]>(&acc), v, a, tile, lane);
    store_y<NTOK / 8>(v, a, tile, tok0, lane);
}

/* Block (x: NTOK tokens, y: 128 rows, z: groups [g0, g1) of kspl). ws:
 * kspl > 1, the zeroed INT32 scratch [token][ws_ld rows]; cnt: arrivals a
 * (x, y) tile, zero between launches. */
template <int NTOK, int S, int U>
__global__ void __launch_bounds__(256, 2)
    k_sq_wg(MmArgs a, const int8_t *xw, int kspl, int *ws, long ws_ld, int *cnt, int pfence) {
#if !KC_WG_ON
    __trap(); /* the compute_90 PTX: never launched (kc_sq_wg_applies asks for sm_90a) */
#else
    typedef WgStage<NTOK, U> G;
    constexpr int NB = (NTOK * 4 * U + 255) / 256; /* 16-byte activation copies a thread a stage */
    constexpr int UC = U * WG_UB / 16;              /* 16-byte unit copies a warp a stage */
    extern __shared__ uint8_t dsm[];
    __shared__ int last;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(dsm), ring = (s0 + 511) & ~511u; /* (the swizzle atom's alignment) */
    uint8_t *tile_b = dsm + (ring - s0) + S * G::BYTES + warp * U * SQ_TILE;
    zero_tiles(tile_b, U, lane);
    const long tok0 = (long)blockIdx.x * NTOK, tile = (long)blockIdx.y * WG_WARPS + warp;
    const unsigned ng = (unsigned)a.ngroups;
    const unsigned g0 = (unsigned)((long)blockIdx.z * ng / kspl), g1 = (unsigned)((long)(blockIdx.z + 1) * ng / kspl);
    const unsigned nsteps = (g1 - g0 + U - 1) / U;
    /* rows past the matrix (its last block) decode the last tile again and store nothing */
    const long tl = tile < a.ntiles ? tile : a.ntiles - 1;
    const uint8_t *lu = a.w + ((size_t)tl * ng + g0) * WG_UB + 16 * lane;
    const uint32_t uoff = G::BX + warp * U * WG_UB + 16 * lane;
    /* copy q = tid + 256 j: token q / 4U's chunk c of unit u (q % 4U = 4 u
     * + c: 8 threads read a token's 128 contiguous bytes at U = 2), into
     * unit u's 64-byte-swizzled tile: chunk c of token n at n x 64 + 16 (c ^
     * (n / 2 mod 4)). A token past the end gets zeros, reading nothing
     * (copying the last token's row instead made every block read the same
     * bytes: 2-3x the time at 16 and 48 tokens); so does a unit past the
     * block's last group. */
    const int8_t *bs[NB];
    uint32_t bd[NB], bu[NB];
    bool bv[NB];
#pragma unroll
    for (int j = 0; j < NB; j++) {
        const int q = tid + 256 * j, n = q / (4 * U), u = (q >> 2) % U, c = q & 3;
        bv[j] = tok0 + n < a.m, bu[j] = u;
        bs[j] = xw + (bv[j] ? tok0 + n : 0) * a.k + (long)g0 * 64 + u * 64 + c * 16;
        bd[j] = u * NTOK * 64 + n * 64 + ((c ^ ((n >> 1) & 3)) << 4);
    }
    /* the stage at st gets step f's groups: nu of them (the last step may be short) */
    const auto load = [&](uint32_t st, unsigned f) {
        const unsigned nu = g1 - g0 - f * U < U ? g1 - g0 - f * U : U;
#pragma unroll
        for (int j = 0; j < NB; j++)
            if (NTOK * 4 * U % 256 == 0 || tid + 256 * j < NTOK * 4 * U)
                cp_async16_z(st + bd[j], bv[j] && bu[j] < nu ? bs[j] : xw, bv[j] && bu[j] < nu), bs[j] += U * 64;
#pragma unroll
        for (int c = 0; c < (UC + 31) / 32; c++)
            if (lane + 32 * c < UC && (U == 1 || lane + 32 * c < (int)nu * (WG_UB / 16)))
                cp_async16(st + uoff + 512 * c, lu + 512 * c);
        lu += U * WG_UB;
        cp_async_commit();
    };
#pragma unroll
    for (unsigned s = 0; s < S - 2; s++) {
        if (s < nsteps) load(ring + s * G::BYTES, s);
        else cp_async_commit(); /* (the waits count groups) */
    }
    int acc[NTOK / 2];
#pragma unroll
    for (int i = 0; i < NTOK / 2; i++) acc[i] = 0;
    const StOffs<true> so(lane);
    const auto step = [&](unsigned i, uint32_t (&A)[U][8]) {
        cp_async_wait<S - 3>(); /* this thread's copies of step i landed */
        if (pfence) fence_async_smem(); /* (0: an experiment only, KC_SQ_WG_FENCE) */
        __syncthreads(); /* everyone's; and every warp's wgmma of step i - 2 retired */
        if (i + S - 2 < nsteps) load(ring + (i + S - 2) % S * G::BYTES, i + S - 2);
        else cp_async_commit();
        const uint32_t st = ring + i % S * G::BYTES;
        const bool two = U == 2 && (i + 1) * U <= g1 - g0; /* (block-uniform) */
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (u == 1 && !two) break;
            Raw<4, 4, true> cur[1];
            lds_unit<true>(cur[0], st + uoff + u * WG_UB, so);
            is_frags(cur, 0, tile_b + u * SQ_TILE, a, lane, A[u]); /* (own tile: the two chains overlap) */
        }
        wg_fence();
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (u == 1 && !two) break;
            const uint32_t sb = st + u * NTOK * 64;
            wgmma_rs<NTOK>(acc, A[u], 0, wg_desc(sb, 16, 512));
            wgmma_rs<NTOK>(acc, A[u], 1, wg_desc(sb + 32, 16, 512));
        }
        wg_commit();
        wg_wait<1>(); /* step i - 1's wgmma done: its A registers free */
    };
    uint32_t A0[U][8], A1[U][8];
    unsigned i = 0;
    for (; i + 2 <= nsteps; i += 2) { /* (no path writes a set while its own wgmma may run) */
        step(i, A0);
        step(i + 1, A1);
    }
    if (i < nsteps) step(i, A0);
    wg_wait<0>();
    cp_async_wait<0>();
    if (kspl == 1) {
        if (tile < a.ntiles) wg_store<NTOK>(acc, a, tile, tok0, lane);
        return;
    }
    const int g = lane >> 2, t4 = lane & 3;
    if (tile < a.ntiles)
#pragma unroll
        for (int j = 0; j < NTOK / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) { /* (rows past n: the last block reads and zeroes rows < n only) */
                const long tok = tok0 + 8 * j + 2 * t4 + (e & 1), r = tile * 16 + g + 8 * (e >> 1);
                if (tok < a.m && r < a.n) atomicAdd(ws + tok * ws_ld + r, acc[4 * j + e]);
            }
    __threadfence();
    __syncthreads();
    int *const c = cnt + (long)blockIdx.y * gridDim.x + blockIdx.x;
    if (tid == 0) last = atomicAdd(c, 1) == kspl - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    /* the last to arrive: the block's 128 rows x NTOK tokens, a row a thread
     * at a time (both the scratch and y are row-contiguous) */
    const long r = (long)blockIdx.y * 128 + (tid & 127);
    if (r < a.n) {
        const float sr = __ldg(a.rs + r);
        long ldy, rr;
        float *y = y_route(a, r, &ldy, &rr);
        for (long t = tid >> 7; t < NTOK && tok0 + t < a.m; t += 2) {
            int *p = ws + (tok0 + t) * ws_ld + r;
            const int v = __ldcg(p);
            __stcg(p, 0); /* zero for the next launch */
            y[(tok0 + t) * ldy + rr] = sr * __int2float_rn(v) * __ldg(a.sx + tok0 + t);
        }
    }
    if (tid == 0) *c = 0;
#endif
}

/* ---- host side ------------------------------------------------------------------------- */

/* scratch, grown and never freed (captured graphs keep the addresses): the
 * permuted activations; the split blocks' INT32 sums and arrival counters,
 * zero between launches (each launch leaves them so). Grown on first use
 * at a size: the backend runs every batch size eagerly once before it
 * captures that size into a CUDA graph (backend_cuda.c), and a capture that
 * fails keeps running launch by launch. */
int8_t *g_x;
size_t g_x_bytes;
int *g_ws, *g_cnt;
size_t g_ws_n, g_cnt_n;

int grow_zeroed(int **p, size_t *have, size_t need) {
    if (need <= *have) return 0;
    size_t want = (size_t)1 << 20;
    while (want < need) want <<= 1;
    int *q = (int *)kc_malloc(want * sizeof(int));
    if (!q) return -1;
    if (kc_memset(q, 0, want * sizeof(int))) {
        kc_free(q);
        return -1;
    }
    *p = q, *have = want;
    return 0;
}

long g_min = -1, g_max = -1, g_stages = -1, g_units = -1;
/* KC_SQ_WG_FENCE=0 leaves out the proxy fence between the cp.async of the
 * activations and the wgmma that reads them: an experiment, not a mode.
 * fence.proxy.async is MEMBAR.ALL.CTA + FENCE.VIEW.ASYNC.S in SASS; if the
 * MEMBAR waits for this thread's cp.async still in flight (the later
 * stages), every step waits for a load issued one step before, which would
 * explain why 4 and 6 stages time the same. CUTLASS's cp.async + wgmma
 * pipeline (sm90_mma_multistage_gmma_ss) orders them with an mbarrier and
 * no proxy fence; the principled form is cp.async.bulk (the async proxy)
 * for the activations. To be measured (twelfth session: no device time
 * left). */
long g_fence = -1;
long g_count; /* launches, for the tests */

template <int NTOK, int S, int U>
int launch(const kc_sq *w, const MmArgs &a) {
    static int occ;
    const auto kern = k_sq_wg<NTOK, S, U>;
    const size_t smem = WgStage<NTOK, U>::smem(S);
    if (!occ && (kc_check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                          "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)") ||
                 kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, 256, smem),
                          "cudaOccupancyMaxActiveBlocksPerMultiprocessor") ||
                 (occ < 1 && (kc_set_error("k_sq_wg: no block fits on an SM (%zu bytes of shared memory)", smem), 1))))
        return -1;
    const long tb = (a.m + NTOK - 1) / NTOK, rb = (w->ntiles + WG_WARPS - 1) / WG_WARPS, P = (long)kc_sm_count() * occ;
    /* split the groups where one wave would leave SMs idle, keeping 8 groups a block */
    long kspl = tb * rb < P ? P / (tb * rb) : 1;
    if (kspl > w->ngroups / 8) kspl = w->ngroups / 8;
    if (kspl < 1) kspl = 1;
    if (rb > 65535 || tb > 0x7fffffffL) {
        kc_set_error("kc_sq_matmul (wgmma): %ld rows, %ld tokens are past the grid", w->n, a.m);
        return -1;
    }
    const long ws_ld = w->ntiles * 16;
    if (kspl > 1 && (grow_zeroed(&g_ws, &g_ws_n, (size_t)(tb * NTOK) * ws_ld) ||
                     grow_zeroed(&g_cnt, &g_cnt_n, (size_t)(tb * rb))))
        return -1;
    kern<<<dim3((unsigned)tb, (unsigned)rb, (unsigned)kspl), 256, smem, KC_STREAM>>>(a, g_x, (int)kspl, g_ws, ws_ld,
                                                                                       g_cnt, (int)g_fence);
    return kc_check_launch("k_sq_wg");
}

template <int U, int S>
int dispatch(const kc_sq *w, const MmArgs &a) {
    if (a.m <= 32) return launch<32, S, U>(w, a);
    if (a.m <= 64) return launch<64, S, U>(w, a);
    return launch<128, S, U>(w, a);
}

} // namespace

/* Tokens this kernel takes: KC_SQ_WG_MIN..KC_SQ_WG_MAX (or kc_sq_set_wg)
 * for every matrix it applies to (min 0: off). By default, measured
 * against the path taken without it (bench_gemm --wg, H200, twelfth
 * session; best ring): on matrices of 100 M weights or more, 17..128 tokens
 * (8B gate_up 0.61-0.77x the time at 32..128, 70B gate_up 0.54-0.93x, 70B
 * down 0.55-0.91x; at 16 the decode kernels win by 3-11 %); from 50 M,
 * 33..96 (70B qkv 0.83-0.95x at 48..96 but 1.14x at 32, 1.04x at 128; 8B
 * down 0.74-0.93x at 48..96; 70B o 0.83x at 48, 1.04-1.08x at 64, 96);
 * below that off: a small matrix's rows are too few blocks to fill the
 * GPU, and the split of its groups over blocks lost (8B qkv 1.2-2.2x at
 * 32..128). From 256 tokens the INT8 path (expansion + INT8 GEMM), whose
 * GEMM decodes nothing per block of tokens, wins on every shape. Its ring:
 * KC_SQ_WG_UNITS groups a stage (1 or 2), KC_SQ_WG_STAGES stages (4 or 6
 * with one group, 3 or 4 with two; two blocks an SM fit except with two
 * groups x 4 stages from 64 tokens). One group x 6 stages by default:
 * measured, the four shapes were within a few % of each other up to 64
 * tokens and two groups lost from 96, but then both groups of a step shared
 * one scatter tile, their decodes serialized by a __syncwarp; each has its
 * own tile since 7fb1e71, so the two chains overlap: built, not yet
 * measured on a GPU (the next session's first call). */
/* either bound set (environment or kc_sq_set_wg): one range for every
 * matrix, the other bound open (1, or no limit) */
static bool wg_fixed(long *lo, long *hi) {
    *lo = kc_override(&g_min, "KC_SQ_WG_MIN"), *hi = kc_override(&g_max, "KC_SQ_WG_MAX");
    if (*lo < 0 && *hi < 0) return false;
    if (*lo < 0) *lo = 1;
    if (*hi < 0) *hi = 0x7fffffffL;
    return true;
}
extern "C" long kc_sq_wg_min(const kc_sq_t *w) {
    long lo, hi;
    if (wg_fixed(&lo, &hi)) return lo;
    const double nk = w ? (double)w->n * w->k : 0;
    return nk >= 1e8 ? 17 : nk >= 5e7 ? 33 : 0;
}
extern "C" long kc_sq_wg_max(const kc_sq_t *w) {
    long lo, hi;
    if (wg_fixed(&lo, &hi)) return hi;
    const double nk = w ? (double)w->n * w->k : 0;
    return nk >= 1e8 ? 128 : nk >= 5e7 ? 96 : 0;
}
extern "C" void kc_sq_set_wg(long lo, long hi) { g_min = lo < 0 ? -1 : lo, g_max = hi < 0 ? -1 : hi; }
extern "C" long kc_sq_wg_units(void) { return kc_threshold(&g_units, "KC_SQ_WG_UNITS", 1) >= 2 ? 2 : 1; }
extern "C" long kc_sq_wg_stages(void) {
    const long s = kc_threshold(&g_stages, "KC_SQ_WG_STAGES", 6);
    return kc_sq_wg_units() == 1 ? (s <= 4 ? 4 : 6) : (s <= 3 ? 3 : 4);
}
extern "C" void kc_sq_set_wg_ring(long units, long stages) { g_units = units, g_stages = stages; }

extern "C" int kc_sq_wg_applies(const kc_sq *w, long m) {
    if (!w || !is_fast(w) || !w->iscale || !w->s16 || !w->rs || w->k >= KC_SQ_IS_KMAX) return 0;
    const long lo = kc_sq_wg_min(w);
    return lo > 0 && m >= lo && m <= kc_sq_wg_max(w) && kc_sm90a();
}

int kc_sq_wg(const kc_sq *w, const MmArgs &a) {
    if (g_fence < 0) {
        const char *e = getenv("KC_SQ_WG_FENCE");
        g_fence = !(e && !strcmp(e, "0"));
    }
    const long groups = a.m * w->ngroups;
    if (kc_grow((void **)&g_x, &g_x_bytes, (size_t)a.m * a.k, (size_t)1 << 20)) return -1;
    k_wg_x<<<kc_blocks(groups, 256), 256, 0, KC_STREAM>>>(a.qx, groups, g_x);
    if (kc_check_launch("k_wg_x")) return -1;
    const long s = kc_sq_wg_stages();
    const int rc = kc_sq_wg_units() == 1 ? (s == 4 ? dispatch<1, 4>(w, a) : dispatch<1, 6>(w, a))
                                         : (s == 3 ? dispatch<2, 3>(w, a) : dispatch<2, 4>(w, a));
    if (rc == 0) g_count++;
    return rc;
}

extern "C" long kc_sq_wg_count(void) { return g_count; }
