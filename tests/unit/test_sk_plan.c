/* test_sk_plan.c - the stream-k plans of the GPU's SQ kernels
 * (kernels/cuda/kc_sk_plan.h: the decode kernels' runs a warp, the wgmma
 * kernel's a block), checked on the CPU: a kernel walks each run a tile at
 * a time and finishes split tiles from the runs' parts, and these tests
 * walk the runs the same way over every small plan (and sampled
 * large ones) to check what that relies on:
 * - the runs cover the items once, none empty, none shorter than the
 *   grid promises;
 * - a tile's parts add up to its groups, the parts of a split tile come
 *   from exactly the runs sk_run_of names for its first and last item;
 * - a run never leaves two parts in one slot, and the slot the last run
 *   reads for run c (sk_slot) is the one run c wrote: 0 for the run's
 *   first tile, 1 for a later one (only a run's first tile can begin in an
 *   earlier run, only its last can end in a later one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../kernels/cuda/kc_sk_plan.h"

/* walks G runs over tiles x ng items as k_sq_wg and sk_flush do; returns the number of
 * split tiles (checks fail the test) */
static long walk(unsigned ng, unsigned tiles, long G) {
    const unsigned W = ng * tiles;
    unsigned *sum = calloc(tiles, sizeof *sum), *parts = calloc(tiles, sizeof *parts);
    long *first_run = malloc(tiles * sizeof *first_run), *last_run = malloc(tiles * sizeof *last_run);
    assert_non_null(sum);
    assert_non_null(parts);
    assert_non_null(first_run);
    assert_non_null(last_run);
    unsigned covered = 0;
    for (long b = 0; b < G; b++) {
        const unsigned s0 = sk_run(b, W, G), nj = sk_run(b + 1, W, G) - s0;
        assert_int_equal(s0, covered); /* runs tile the items in order */
        assert_true(nj >= 1);
        assert_true(nj >= W / G); /* equal within one item */
        assert_true(nj <= W / G + 1);
        covered += nj;
        int used[2] = {0, 0}, seg = 0;
        unsigned j = 0, T = s0 / ng, ga = s0 - T * ng;
        while (j < nj) { /* the kernel's loop: one tile's groups [ga, ga + len) a pass */
            const unsigned len = ng - ga < nj - j ? ng - ga : nj - j;
            assert_true(T < tiles);
            if (ga > 0) assert_int_equal(seg, 0); /* only a run's first tile began earlier */
            if (len < ng) { /* a part: its slot, as the writer picks it and as the reader will */
                const int slot = sk_slot(b, T * ng, W, G);
                assert_int_equal(slot, seg == 0 ? 0 : 1);
                assert_int_equal(used[slot], 0);
                used[slot] = 1;
                if (seg > 0) assert_true(j + len == nj); /* a later part: the run's last tile */
            }
            if (parts[T] == 0) first_run[T] = b;
            last_run[T] = b;
            parts[T]++, sum[T] += len;
            j += len, T++, ga = 0, seg++;
        }
    }
    assert_int_equal(covered, W);
    long split = 0;
    for (unsigned T = 0; T < tiles; T++) {
        assert_int_equal(sum[T], ng);
        const long c0 = sk_run_of(T * ng, W, G), c1 = sk_run_of(T * ng + ng - 1, W, G);
        assert_int_equal(c0, first_run[T]);
        assert_int_equal(c1, last_run[T]);
        assert_int_equal(c1 - c0 + 1, parts[T]); /* one part a run */
        split += parts[T] > 1;
    }
    free(sum), free(parts), free(first_run), free(last_run);
    return split;
}

/* sk_run_of(x) is the run whose items hold x, for every item */
static void test_run_of(void **state) {
    (void)state;
    for (unsigned W = 1; W <= 300; W++)
        for (long G = 1; G <= W; G++)
            for (long b = 0; b < G; b++)
                for (unsigned x = sk_run(b, W, G); x < sk_run(b + 1, W, G); x++) assert_int_equal(sk_run_of(x, W, G), b);
}

/* every grid of every small plan: 1..24 groups, 1..12 tiles, 1..W runs */
static void test_small_plans(void **state) {
    (void)state;
    long plans = 0, with_splits = 0;
    for (unsigned ng = 1; ng <= 24; ng++)
        for (unsigned tiles = 1; tiles <= 12; tiles++)
            for (long G = 1; G <= (long)(ng * tiles); G++) plans++, with_splits += walk(ng, tiles, G) > 0;
    printf("    %ld plans, %ld with split tiles\n", plans, with_splits);
    assert_true(with_splits > plans / 2);
}

/* the grids kc_sq_wg.cu picks for the H200's shapes (132 SMs, 2 or 3 blocks
 * each) and a few odd ones, at 1..4 token blocks */
static void test_kernel_grids(void **state) {
    (void)state;
    static const unsigned shapes[][2] = {{64, 224}, {128, 448}, {448, 64}, {128, 80}, {128, 64}, {224, 32},
                                         {64, 48},  {64, 32},   {7, 1},    {37, 2},   {5, 7},    {2062, 3}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (unsigned tb = 1; tb <= 4; tb++)
            for (long occ = 1; occ <= 3; occ++) {
                const unsigned ng = shapes[i][0], tiles = shapes[i][1] * tb;
                const long W = (long)ng * tiles, G = wg_grid(W, tiles, 132 * occ, 1);
                assert_true(G >= 1 && G <= 132 * occ && G <= W);
                assert_true(G == 1 || W / G >= WG_MIN_RUN);
                walk(ng, tiles, G);
                assert_int_equal(wg_grid(W, tiles, 132 * occ, 0), tiles); /* a block a tile */
                assert_int_equal(walk(ng, tiles, tiles), 0);
            }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_of),
        cmocka_unit_test(test_small_plans),
        cmocka_unit_test(test_kernel_grids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
