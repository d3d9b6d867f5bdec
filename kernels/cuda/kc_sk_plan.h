/* kc_sk_plan.h - the stream-k plans of the SQ kernels, in C that both nvcc
 * and the CPU build compile, so tests/unit/test_sk_plan.c checks on any
 * machine the arithmetic the kernels run on the GPU: the decode kernels
 * (kc_sq_mm.cuh's sk_flush: a run a warp) and the wgmma kernel (kc_sq_wg.cu:
 * a run a block).
 *
 * W items (item x: group x mod ng of tile x / ng) go to G runs, run b
 * taking [sk_run(b), sk_run(b + 1)): equal runs within one item. A run
 * walks its items a tile at a time; a tile whose groups all fall in one run
 * is stored by it, the others' runs each leave a part of it in one of their
 * two slots: 0 if the tile is the run's first (the run began inside or at
 * the start of it), 1 if it is its last. Nothing here touches memory.
 */
#ifndef KC_SK_PLAN_H
#define KC_SK_PLAN_H

#ifdef __CUDACC__
#define SK_PLAN_FN __host__ __device__ __forceinline__
#else
#define SK_PLAN_FN static inline
#endif

/* the first item of run b */
SK_PLAN_FN long sk_run(long b, long W, long G) { return b * W / G; }

/* the run that holds item x: the largest b with sk_run(b) <= x */
SK_PLAN_FN long sk_run_of(long x, long W, long G) { return ((x + 1) * G - 1) / W; }

/* the slot run c leaves its part of the tile whose first item is t0 in */
SK_PLAN_FN int sk_slot(long c, long t0, long W, long G) { return sk_run(c, W, G) >= t0 ? 0 : 1; }

/* the wgmma kernel's runs for W items in `tiles` tiles: stream-k over the P
 * blocks the GPU holds at once (split), each run at least WG_MIN_RUN items
 * (shorter, a run spends more on its ring's fill and its tiles' partial
 * sums than it gains); else a run a tile */
#define WG_MIN_RUN 16
SK_PLAN_FN long wg_grid(long W, long tiles, long P, int split) {
    if (!split) return tiles;
    const long g = W / WG_MIN_RUN < P ? W / WG_MIN_RUN : P;
    return g < 1 ? 1 : g;
}

#endif
