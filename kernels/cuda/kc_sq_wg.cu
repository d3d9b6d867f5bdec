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
 * Work. An item is one 64-column group of one tile (NTOK tokens x 128 rows:
 * two warpgroups, a unit row a warp). The grid is stream-k: as many blocks
 * as fit on the GPU at once, each taking an equal run of consecutive items
 * (a tile's groups in order, then the next tile's). A tile whose groups all
 * fall in one run is stored by it; the runs sharing a tile leave their
 * INT32 partial sums in memory, and the last to arrive adds them and
 * stores (wg_split_last). Why: one block per tile left the SMs unevenly
 * loaded, a whole tile's difference (8B gate_up: 224 tiles on 132 SMs;
 * 70B gate_up: 448 tiles for 396 block slots, a second wave of 52; Nsight
 * Compute, thirteenth session). Against a block a tile (bench_gemm --wg,
 * H200, 408ff80, 16..128 tokens), stream-k took 0.88-0.93x the time on 70B
 * gate_up, 0.71-0.87x on 70B qkv, 0.47-0.56x on 70B down (64 tiles), and
 * 0.99-1.06x on 8B gate_up, where the partial sums cost what the balance
 * gains.
 *
 * Pipeline. Items go through a ring of S stages in shared memory, filled
 * S - 2 items ahead: a stage holds the item's activations (B, NTOK x 64
 * bytes, K-major with the 64-byte swizzle, laid out so in memory by k_wg_x)
 * and the 8 warps' units. The units come by per-lane cp.async; B by one
 * cp.async.bulk from thread 0 on the stage's mbarrier (the async proxy,
 * which wgmma reads through: no proxy fence a step). Each item: wait for
 * the stage's units, one barrier (everyone's copies landed; every warp's
 * wgmma of two items back retired, so its stage can be refilled), refill,
 * decode the warp's unit into A registers, wait on the stage's mbarrier for
 * B, 2 wgmma, and wait for the previous item's wgmma only: the decode of
 * item j + 1 runs while the tensor cores work on item j (the A registers
 * alternate between two sets). H200, fourteenth session: 1-6 % faster than
 * B by cp.async behind a fence.proxy.async (MEMBAR.ALL.CTA) a step. Tried
 * and dropped (thirteenth session): the units too by cp.async.bulk, the
 * last warp done with a stage refilling it and no block barrier: 1.2-1.3x
 * the time.
 *
 * The activations are permuted first (k_wg_x): the unit stores a lane's 16
 * columns contiguously (kc_sq_frag.cuh's fragment map), so logical k of
 * wgmma's fragment is a permutation of the group's columns, a 4 x 4
 * transpose of its 32-bit words; B must follow it.
 *
 * Sums are INT32 over the whole row (exact: KC_SQ_IS_KMAX), scaled once:
 * y = (s_row * acc) * sx, the INT8 path's order; partial sums are added as
 * integers, so the result does not depend on the split.
 *
 * sm_90a only (kc_sm90a): elsewhere kc_sq_wg_applies is false.
 */
#include "kc_sq_mm.cuh"
#include "kc_sk_plan.h"

namespace {

constexpr int WG_WARPS = 8;                   /* two warpgroups: 128 rows a block */
constexpr int WG_UB = UG<4, 4, true>::ub;     /* a unit's bytes (half scales): 832 */

template <int NTOK>
struct WgStage {
    static constexpr int BX = NTOK * 64; /* the item's activations */
    static constexpr int BYTES = (BX + WG_WARPS * WG_UB + 511) / 512 * 512; /* + the 8 warps' units */
    /* + a scatter tile a warp, + the swizzle atom's alignment */
    static constexpr size_t smem(int S) { return (size_t)S * BYTES + WG_WARPS * SQ_TILE + 512; }
};

/* ---- wgmma (PTX ISA 8.0, sm_90a) ---------------------------------- */

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
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
/* one arrival that also expects tx more bytes this phase */
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(tx) : "memory");
}
/* until the phase of this parity has completed (acquire: the bytes are visible) */
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}
/* bytes global -> shared by the async proxy (what wgmma reads), completing on bar */
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void *src, uint32_t bytes, uint32_t bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
                 "l"(src), "r"(bytes), "r"(bar)
                 : "memory");
}

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


/* a flag another block sets, read with acquire semantics */
__device__ __forceinline__ int ld_acquire(const int *p) {
    int v;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* A run's part [ga, ga + len) of tile T (its first item t0 = T ng) is done.
 * cnt[2 T] counts the tile's groups that arrived, cnt[2 T + 1] the runs
 * whose INT32 sums are written. The run that completes the groups adds
 * every other run's part to its own sums and returns true (it stores the
 * tile), after waiting for their parts to be written; the others write
 * their parts to their slot (sk_slot: 0 the run's first tile, 1 its last)
 * and return false. Arriving before writing spares the last run its write
 * (every part but one written and read once), and the last run waits only
 * for runs that have arrived, so are on the GPU: no block waits for one not
 * yet started, whatever the grid. (Writing first and counting after, the
 * last run also wrote its part: 1.04-1.06x the time at 96..128 tokens on
 * 8B gate_up, thirteenth session.) INT32 sums: the order of the adds does
 * not change the result. */
template <int NTOK>
__device__ __forceinline__ bool wg_split_last(int (&acc)[NTOK / 2], int *part, int *cnt, long b, unsigned T,
                                              unsigned len, unsigned t0, unsigned ng, unsigned W, long nb, int tid) {
    __shared__ int last;
    constexpr long SLOT = (NTOK / 8) * 256; /* int4 a slot */
    int4 *const p = (int4 *)part + tid;
    const long c0 = sk_run_of(t0, W, nb), c1 = sk_run_of(t0 + ng - 1, W, nb); /* the tile's runs */
    int *const arrived = cnt + 2 * (long)T, *const written = arrived + 1;
    if (tid == 0) last = atomicAdd(arrived, (int)len) + (int)len == (int)ng;
    __syncthreads();
    if (!last) {
        const int mine = sk_slot(b, t0, W, nb);
#pragma unroll
        for (int v = 0; v < NTOK / 8; v++)
            __stcg(p + (2 * b + mine) * SLOT + v * 256,
                   make_int4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]));
        /* the barrier orders every thread's stores before thread 0's fence,
         * whose cumulativity publishes them with the count (CUTLASS's
         * generic barrier does the same: one fence a block, not a thread) */
        __syncthreads();
        if (tid == 0) {
            __threadfence();
            atomicAdd(written, 1);
        }
        return false;
    }
    if (tid == 0) {
        while (ld_acquire(written) < (int)(c1 - c0)) {
        }
        *arrived = 0, *written = 0; /* (every run of the tile is past its counts: zero for the next launch) */
        __threadfence();
    }
    __syncthreads();
    for (long c = c0; c <= c1; c++) {
        if (c == b) continue;
        const int4 *q = p + (2 * c + sk_slot(c, t0, W, nb)) * SLOT;
#pragma unroll
        for (int v = 0; v < NTOK / 8; v++) {
            const int4 u = __ldcg(q + v * 256);
            acc[4 * v] += u.x, acc[4 * v + 1] += u.y, acc[4 * v + 2] += u.z, acc[4 * v + 3] += u.w;
        }
    }
    return true;
}

#endif /* KC_WG_ON */

/* ---- the kernels --------------------------------------------------------------------------- */

/* activations [m][k] -> xw, tile by tile: tile b's tokens b ntok + n (zeros
 * past m) of group g are the ntok x 64 bytes at ((b ng + g) ntok) 64, a
 * 64-byte row a token, each row's 16 words transposed as a 4 x 4 matrix
 * (word 4 c + t of the row is word 4 t + c of the input: 16-byte chunk 2 h'
 * + h then holds wgmma step h''s logical k 16 h .. 16 h + 15, as the
 * fragment map has it: lane t's register pair h of step kc is columns 16 t
 * + 8 kc + 4 h ..) and chunk c stored at 16 (c ^ (n / 2 mod 4)), the
 * 64-byte swizzle: a stage's B is then a plain copy of 16-byte chunks. */
__global__ void k_wg_x(const int8_t *qx, long m, long k, long rows, int ntok, int8_t *xw) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x, ng = k / 64;
    if (i >= rows * ng) return;
    const long t = i % rows, g = i / rows, n = t % ntok;
    uint4 a = make_uint4(0, 0, 0, 0), b = a, c = a, d = a;
    if (t < m) {
        const uint4 *s = (const uint4 *)(qx + t * k + g * 64);
        a = __ldg(s), b = __ldg(s + 1), c = __ldg(s + 2), d = __ldg(s + 3);
    }
    const int sw = (int)(n >> 1) & 3;
    uint4 *o = (uint4 *)(xw + (((t / ntok) * ng + g) * ntok + n) * 64);
    o[0 ^ sw] = make_uint4(a.x, b.x, c.x, d.x);
    o[1 ^ sw] = make_uint4(a.y, b.y, c.y, d.y);
    o[2 ^ sw] = make_uint4(a.z, b.z, c.z, d.z);
    o[3 ^ sw] = make_uint4(a.w, b.w, c.w, d.w);
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

/* A block takes the run of items [sk_run(b), sk_run(b + 1)) (item x: group x
 * mod ng of tile T = x / ng, which is token block T / rb, row block T mod rb).
 * part: two slots of INT32 partial sums a block; cnt: two counts a tile
 * (wg_split_last), zero between launches. */
template <int NTOK, int S>
__global__ void __launch_bounds__(256, NTOK == 32 ? 3 : 2)
    k_sq_wg(MmArgs a, const int8_t *xw, unsigned rb, unsigned W, int *part, int *cnt) {
#if !KC_WG_ON
    __trap(); /* the compute_90 PTX: never launched (kc_sq_wg_applies asks for sm_90a) */
#else
    typedef WgStage<NTOK> G;
    extern __shared__ uint8_t dsm[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long nb = gridDim.x, b = blockIdx.x;
    const unsigned ng = (unsigned)a.ngroups, s0 = sk_run(b, W, nb), nj = sk_run(b + 1, W, nb) - s0;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(dsm), ring = (sbase + 511) & ~511u; /* (the swizzle atom's alignment) */
    uint8_t *tile_b = dsm + (ring - sbase) + S * G::BYTES + warp * SQ_TILE;
    zero_tiles(tile_b, 1, lane);
    /* a stage's activations arrive by one bulk copy (the async proxy, so
     * wgmma needs no proxy fence after them) completing on its mbarrier */
    __shared__ __align__(8) uint64_t full[S];
    const uint32_t fb = (uint32_t)__cvta_generic_to_shared(full);
    if (tid == 0) {
        for (int s = 0; s < S; s++) mbar_init(fb + 8 * s, 1);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    /* the next item to load: its token block, row block and group, where
     * its activations and the warp's unit start (advanced one item a load;
     * computed again only when a tile ends) */
    unsigned ltk, lrb, lg;
    const int8_t *xs;
    const uint8_t *us;
    const auto seek = [&]() { /* (rows past the matrix, in its last row block, decode the last tile again) */
        const long tile = (long)lrb * WG_WARPS + warp, tl = tile < a.ntiles ? tile : a.ntiles - 1;
        xs = xw + ((size_t)ltk * ng + lg) * (NTOK * 64);
        us = a.w + ((size_t)tl * ng + lg) * WG_UB + 16 * lane;
    };
    {
        const unsigned T = s0 / ng;
        ltk = T / rb, lrb = T - ltk * rb, lg = s0 - T * ng;
        seek();
    }
    /* the next item into stage sl: its activations (laid out by k_wg_x as the
     * stage holds them) by thread 0's bulk copy, the thread's 16-byte chunks
     * of the warp's unit by cp.async */
    const auto load = [&](unsigned sl) {
        const uint32_t st = ring + sl * G::BYTES;
        if (tid == 0) mbar_expect(fb + 8 * sl, G::BX), bulk_copy(st, xs, G::BX, fb + 8 * sl);
        const uint32_t ud = st + G::BX + warp * WG_UB + 16 * lane;
        cp_async16(ud, us);
        if (lane < WG_UB / 16 - 32) cp_async16(ud + 512, us + 512);
        cp_async_commit();
        xs += NTOK * 64, us += WG_UB;
        if (++lg == ng) {
            lg = 0;
            if (++lrb == rb) lrb = 0, ltk++;
            seek();
        }
    };
#pragma unroll
    for (unsigned j = 0; j < S - 2; j++) {
        if (j < nj) load(j);
        else cp_async_commit(); /* (the waits count groups) */
    }
    int acc[NTOK / 2];
    const StOffs<true> so(lane);
    float r0 = 0.0f, r1 = 0.0f; /* is_rcp of the warp's rows g and g + 8 in the current tile */
    /* item j: wait for its stage's units (this thread's copies, then
     * everyone's: the barrier also says every warp's wgmma of item j - 2
     * retired, so its stage can be refilled), refill, decode the warp's
     * unit, wait for the activations' mbarrier, 2 wgmma, wait for item j -
     * 1's only */
    const auto step = [&](unsigned j, uint32_t(&A)[8]) {
        cp_async_wait<S - 3>();
        __syncthreads();
        if (j + S - 2 < nj) load((j + S - 2) % S);
        else cp_async_commit();
        const uint32_t st = ring + j % S * G::BYTES;
        Raw<4, 4, true> cur[1];
        lds_unit<true>(cur[0], st + G::BX + warp * WG_UB + 16 * lane, so);
        is_frags_r(cur, tile_b, a, lane, r0, r1, A);
        mbar_wait(fb + 8 * (j % S), (j / S) & 1); /* the activations (only wgmma reads them) */
        wg_fence();
        wgmma_rs<NTOK>(acc, A, 0, wg_desc(st, 16, 512));
        wgmma_rs<NTOK>(acc, A, 1, wg_desc(st + 32, 16, 512));
        wg_commit();
        wg_wait<1>();
    };
    uint32_t A0[8], A1[8];
    unsigned j = 0, T = s0 / ng, ga = s0 - T * ng;
    while (j < nj) { /* one tile's groups [ga, gb) a pass */
        const unsigned len = ng - ga < nj - j ? ng - ga : nj - j, je = j + len, gb = ga + len;
        {
            const long row = (long)(T % rb) * (WG_WARPS * 16) + warp * 16 + (lane >> 2);
            r0 = row < a.n ? is_rcp(__ldg(a.rs + row)) : 0.0f;
            r1 = row + 8 < a.n ? is_rcp(__ldg(a.rs + row + 8)) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < NTOK / 2; i++) acc[i] = 0;
        for (; j + 2 <= je; j += 2) { /* (no path writes a set while its own wgmma may run) */
            step(j, A0);
            step(j + 1, A1);
        }
        if (j < je) step(j++, A0);
        wg_wait<0>();
        const unsigned tkb = T / rb;
        const long tile = (long)(T - tkb * rb) * WG_WARPS + warp, tok0 = (long)tkb * NTOK;
        /* a whole tile, or the last of its runs to arrive (the others leave their parts) */
        if ((gb - ga == ng || wg_split_last<NTOK>(acc, part, cnt, b, T, gb - ga, T * ng, ng, W, nb, tid)) &&
            tile < a.ntiles)
            wg_store<NTOK>(acc, a, tile, tok0, lane);
        T++, ga = 0;
    }
    cp_async_wait<0>();
#endif
}

/* ---- host side ------------------------------------------------------------------------- */

/* the permuted activations, grown and never freed (captured graphs keep
 * the address): grown on first use at a size, since the backend runs every
 * batch size eagerly once before it captures that size into a CUDA graph
 * (backend_cuda.c), and a capture that fails keeps running launch by
 * launch. */
int8_t *g_x;
size_t g_x_bytes;

long g_min = -1, g_max = -1, g_stages = -1, g_split = -1;
long g_count; /* launches, for the tests */

template <int NTOK, int S>
int launch(const kc_sq *w, const MmArgs &a) {
    static int occ;
    const auto kern = k_sq_wg<NTOK, S>;
    const size_t smem = WgStage<NTOK>::smem(S);
    if (!occ && (kc_check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                          "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)") ||
                 kc_check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, 256, smem),
                          "cudaOccupancyMaxActiveBlocksPerMultiprocessor") ||
                 (occ < 1 && (kc_set_error("k_sq_wg: no block fits on an SM (%zu bytes of shared memory)", smem), 1))))
        return -1;
    const long tb = (a.m + NTOK - 1) / NTOK, rb = (w->ntiles + WG_WARPS - 1) / WG_WARPS, W = tb * rb * a.ngroups;
    if (W > 0x7fffffffL) {
        kc_set_error("kc_sq_matmul (wgmma): %ld rows x %ld tokens are too many items", w->n, a.m);
        return -1;
    }
    const long G = wg_grid(W, tb * rb, (long)kc_sm_count() * occ, (int)kc_sq_wg_split());
    if (G > 0x7fffffffL) {
        kc_set_error("kc_sq_matmul (wgmma): %ld blocks are past the grid", G);
        return -1;
    }
    /* split tiles (none with a block a tile): the decode kernels' stream-k
     * scratch, partial sums and two counts a tile, zero between launches */
    MmArgs s = a;
    if (G != tb * rb && kc_sk_scratch((size_t)G * 2 * NTOK * 128 * sizeof(int), 2 * tb * rb, &s)) return -1;
    const long rows = tb * NTOK;
    if (kc_grow((void **)&g_x, &g_x_bytes, (size_t)rows * a.k, (size_t)1 << 20)) return -1;
    k_wg_x<<<kc_blocks(rows * a.ngroups, 256), 256, 0, KC_STREAM>>>(a.qx, a.m, a.k, rows, NTOK, g_x);
    if (kc_check_launch("k_wg_x")) return -1;
    kern<<<(unsigned)G, 256, smem, KC_STREAM>>>(a, g_x, (unsigned)rb, (unsigned)W, (int *)s.part, s.cnt);
    return kc_check_launch("k_sq_wg");
}

template <int S>
int dispatch(const kc_sq *w, const MmArgs &a) {
    if (a.m <= 32) return launch<32, S>(w, a);
    if (a.m <= 64) return launch<64, S>(w, a);
    return launch<128, S>(w, a);
}

} // namespace

/* Tokens this kernel takes: KC_SQ_WG_MIN..KC_SQ_WG_MAX (or kc_sq_set_wg)
 * for every matrix it applies to (min 0: off). By default, measured
 * against the path taken without it (bench_gemm --wg, H200, thirteenth
 * session, stream-k, 6 stages): on matrices of 100 M weights or more,
 * 17..128 tokens (8B gate_up 0.78x the time at 32, 0.61x at 128; 70B
 * gate_up 0.83x / 0.48x; 70B down 0.88x / 0.48x; at 16 a tie or the decode
 * kernels by 4 %); from 50 M, 33..128 (8B down 0.75-0.80x at 48..128 but
 * 1.02x at 32; 70B qkv 0.63-0.69x at 48..128, 0.98x at 32; 70B o
 * 0.68-0.75x, 0.98x at 32); below that off (8B qkv and o: not measured
 * since stream-k; one block a tile lost 1.2-2.2x there). Up to 256 tokens
 * from 200 M weights: at 256, 0.82x the INT8 path's time (expansion +
 * INT8 GEMM) on 70B gate_up and 0.71x on 70B down, and 129 tokens cost
 * this kernel what 256 do (two blocks of 128) but the INT8 path less, so
 * the smaller matrices, at 0.87-1.07x at 256, stop at 128; from 512 tokens
 * the INT8 path, whose GEMM decodes nothing per block of tokens, wins on
 * every shape (fourteenth session). */
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
    return nk >= 2e8 ? 256 : nk >= 5e7 ? 128 : 0;
}
extern "C" void kc_sq_set_wg(long lo, long hi) { g_min = lo < 0 ? -1 : lo, g_max = hi < 0 ? -1 : hi; }
/* the ring: 4, 6 (default) or 8 stages (KC_SQ_WG_STAGES); the grid:
 * stream-k (default) or a block a tile (KC_SQ_WG_SPLIT=0) */
extern "C" long kc_sq_wg_stages(void) {
    const long s = kc_threshold(&g_stages, "KC_SQ_WG_STAGES", 6);
    return s <= 4 ? 4 : s <= 6 ? 6 : 8;
}
extern "C" long kc_sq_wg_split(void) { return kc_threshold(&g_split, "KC_SQ_WG_SPLIT", 1) != 0; }
extern "C" void kc_sq_set_wg_ring(long stages, long split) { g_stages = stages, g_split = split; }

extern "C" int kc_sq_wg_applies(const kc_sq *w, long m) {
    if (!w || !is_fast(w) || !w->iscale || !w->s16 || !w->rs || w->k >= KC_SQ_IS_KMAX) return 0;
    const long lo = kc_sq_wg_min(w);
    if (!(lo > 0 && m >= lo && m <= kc_sq_wg_max(w) && kc_sm90a())) return 0;
    /* the items must count in 31 bits (only a KC_SQ_WG_MAX far past the default reaches it) */
    const long ntok = m <= 32 ? 32 : m <= 64 ? 64 : 128;
    return w->ngroups > 0 &&
           (m + ntok - 1) / ntok * ((w->ntiles + WG_WARPS - 1) / WG_WARPS) <= 0x7fffffffL / w->ngroups;
}

int kc_sq_wg(const kc_sq *w, const MmArgs &a) {
    const long s = kc_sq_wg_stages();
    const int rc = s == 4 ? dispatch<4>(w, a) : s == 6 ? dispatch<6>(w, a) : dispatch<8>(w, a);
    if (rc == 0) g_count++;
    return rc;
}

extern "C" long kc_sq_wg_count(void) { return g_count; }
