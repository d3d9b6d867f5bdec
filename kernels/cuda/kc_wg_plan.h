/* kc_wg_plan.h - the stream-k plan of the wgmma kernel (kc_sq_wg.cu), in C
 * that both nvcc and the CPU build compile, so tests/unit/test_wg_plan.c
 * checks on any machine the arithmetic the kernel runs on the GPU.
 *
 * W items (item x: group x mod ng of tile x / ng) go to G runs, run b
 * taking [wg_run(b), wg_run(b + 1)): equal runs within one item. A run
 * walks its items a tile at a time; a tile whose groups all fall in one run
 * is stored by it, the others' runs each leave a part of it (kc_sq_wg.cu's
 * wg_split_last) in one of their two slots: 0 if the tile is the run's
 * first (the run began inside or at the start of it), 1 if it is its last.
 * Nothing here touches memory.
 */
#ifndef KC_WG_PLAN_H
#define KC_WG_PLAN_H

#ifdef __CUDACC__
#define WG_PLAN_FN __host__ __device__ __forceinline__
#else
#define WG_PLAN_FN static inline
#endif

/* a run shorter than this spends more on its ring's fill and its tiles'
 * partial sums than it gains (kc_sq_wg.cu) */
#define WG_MIN_RUN 16

/* the first item of run b */
WG_PLAN_FN unsigned wg_run(long b, unsigned W, long G) { return (unsigned)(b * (long)W / G); }

/* the run that holds item x: the largest b with wg_run(b) <= x */
WG_PLAN_FN long wg_run_of(unsigned x, unsigned W, long G) { return (((long)x + 1) * G - 1) / W; }

/* the slot run c leaves its part of the tile whose first item is t0 in */
WG_PLAN_FN int wg_slot(long c, unsigned t0, unsigned W, long G) { return wg_run(c, W, G) >= t0 ? 0 : 1; }

/* the runs for W items in `tiles` tiles: stream-k over the P blocks the
 * GPU holds at once (split), each run at least WG_MIN_RUN items; else a
 * run a tile */
WG_PLAN_FN long wg_grid(long W, long tiles, long P, int split) {
    if (!split) return tiles;
    const long g = W / WG_MIN_RUN < P ? W / WG_MIN_RUN : P;
    return g < 1 ? 1 : g;
}

#endif
