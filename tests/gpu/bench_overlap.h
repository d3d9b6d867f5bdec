/* bench_overlap.h - bench_gemm's --overlap table, kept apart so that
 * bench_gemm.cu stays readable: static functions for the one file that
 * includes it, after its timing helpers (time_us, lt_time, GemmBufs). */
#ifndef BENCH_OVERLAP_H
#define BENCH_OVERLAP_H

/* --overlap: the INT8 path of integer bank scales, serial (each slice
 * expanded, then multiplied) against the overlap (kc_sq_gemm.cu: the next
 * slice expanded on the side stream while this slice's GEMM runs on the
 * other SMs) with S = 8..48 SMs for the expansion (its grid S x the blocks
 * an SM holds; "fill": a block for every 8 units, S = 16 for the GEMM),
 * beside W8A8 (the same GEMM on stored INT8 weights: the floor) and
 * cuBLASLt BF16; the shapes where the expansion is a large share. */
static int overlap_table(const char *only_shape, long only_m, const float *d_one) {
    static const struct {
        const char *name;
        long N, K;
    } shapes[] = {{"70B down", 8192, 28672}, {"70B gate_up", 57344, 8192}, {"8B gate_up", 28672, 4096},
                  {"8B down", 4096, 14336}};
    static const long Ms[] = {512, 1024, 2048};
    static const int S[] = {8, 16, 24, 32, 48};
    const int nS = 5;
    kc_sq_set_wg(0, 0); /* (up to 256 tokens; none of these M) */
    printf("| shape (N x K) | M | serial us | S=8 | S=16 | S=24 | S=32 | S=48 | S=16 fill | W8A8 us | BF16 us | "
           "serial/BF16 | best/BF16 | best S | slices (S=16) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto &sh : shapes) {
        if (only_shape && strcmp(only_shape, sh.name)) continue;
        kc_sq_t *sqi = kc_sq_random_ex(sh.N, sh.K, 4, 64, 8, 78, KC_SQ_INT_SCALES | KC_SQ_NO_COMPACT);
        kc_int_t *w8 = kc_int_random(sh.N, sh.K, 8, 79);
        if (!sqi || !w8) {
            fprintf(stderr, "bench_gemm: %s\n", kc_error());
            return 2;
        }
        if (sh.name == shapes[0].name) printf("(layout: %s)\n", kc_sq_describe(sqi));
        GemmBufs b(sh.N, sh.K, 2048, 31);
        for (long M : Ms) {
            if (only_m && M != only_m) continue;
            auto sq = [&] { KC(kc_sq_matmul(sqi, b.xi, b.sx, M, b.ys)); };
            kc_sq_set_overlap(0, -1);
            const double ser = time_us(sq);
            double t[6], best = INFINITY;
            int best_s = 0;
            char cell[6][24];
            for (int i = 0; i <= nS; i++) {
                kc_sq_set_overlap_fill(i == nS);
                kc_sq_set_overlap(1, i < nS ? S[i] : 16);
                const long c0 = kc_sq_overlap_count();
                t[i] = time_us(sq);
                const bool ran = kc_sq_overlap_count() > c0;
                snprintf(cell[i], sizeof cell[i], ran ? "%.1f" : "(%.1f serial)", t[i]);
                if (ran && t[i] < best) best = t[i], best_s = i < nS ? S[i] : -16;
            }
            kc_sq_set_overlap_fill(-1);
            kc_sq_set_overlap(1, 16);
            const long rows = kc_sq_overlap_rows(sqi, M);
            kc_sq_set_overlap(-1, -1);
            const double t8 = time_us([&] { KC(kc_int_matmul(w8, b.xi, b.sx, M, b.ys)); });
            long mbf = 0;
            const double bf = lt_time(BF16, sh.N, M, sh.K, b.wb, b.xb, b.ob, d_one, &mbf);
            printf("| %s %ldx%ld | %ld | %.1f | %s | %s | %s | %s | %s | %s | %.1f | %.1f | %.2fx | %.2fx | %s%d | %ld x %ld |\n",
                   sh.name, sh.N, sh.K, M, ser, cell[0], cell[1], cell[2], cell[3], cell[4], cell[5], t8, bf, bf / ser,
                   bf / best, best_s < 0 ? "fill " : "", best_s < 0 ? -best_s : best_s,
                   rows ? (sh.N + rows - 1) / rows : 0L, rows);
            fflush(stdout);
        }
        kc_sq_free(sqi), kc_int_free(w8);
    }
    kc_sq_set_wg(-1, -1);
    printf("\n(S: SMs left to the expansion, the GEMM's persistent grid on the others; serial/BF16 and best/BF16: "
           "BF16's time over ours; slices: count x rows)\n");
    return 0;
}

#endif
