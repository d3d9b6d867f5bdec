/* bench.c - timing the forward pass on synthetic batches (bench.h). */
#include "bench.h"

#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_decode(fwd_t *f, kv_cache_t *kv, int B, int steps, int reps, int to_host, float *logits,
                       double *sec_per_step, char *err, size_t errlen) {
    int32_t *tok = malloc((size_t)B * 3 * sizeof(int32_t)), *pos = tok + B, *slot = pos + B;
    double *t = malloc((size_t)reps * sizeof(double));
    uint8_t *want = malloc((size_t)B);
    int rc = -1;
    if (!tok || !t || !want) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memset(want, 1, (size_t)B);
    for (int rep = 0; rep < reps; rep++) {
        for (int s = 0; s < B; s++) {
            kv_seq_release(kv, s);
            if (kv_seq_reserve(kv, s, steps) != 0) {
                snprintf(err, errlen, "KV cache too small for %d x %d tokens", B, steps);
                goto out;
            }
            slot[s] = s;
        }
        double t0 = 0;
        for (int i = 0; i <= steps; i++) {
            if (i == 1) t0 = gen_now(); /* step 0 warms up */
            for (int s = 0; s < B; s++) {
                tok[s] = (int32_t)((i * 7919 + s * 104729 + 13) % f->m->hp.n_vocab);
                pos[s] = i < steps ? i : steps - 1;
            }
            batch_t b = {B, tok, pos, slot, want};
            if (fwd_run(f, &b, to_host ? logits : NULL, err, errlen) != 0) goto out;
        }
        t[rep] = (gen_now() - t0) / steps;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    *sec_per_step = t[reps / 2];
    rc = 0;
out:
    for (int s = 0; s < B; s++) kv_seq_release(kv, s);
    free(tok);
    free(t);
    free(want);
    return rc;
}

int bench_prefill(fwd_t *f, kv_cache_t *kv, int pp, int reps, float *logits, double *tok_per_s,
                        char *err, size_t errlen) {
    int32_t *tok = malloc((size_t)pp * 3 * sizeof(int32_t)), *pos = tok + pp, *slot = pos + pp;
    double *t = malloc((size_t)reps * sizeof(double));
    int rc = -1;
    if (!tok || !t) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int i = 0; i < pp; i++) {
        tok[i] = (int32_t)((i * 7919 + 13) % f->m->hp.n_vocab);
        pos[i] = i;
        slot[i] = 0;
    }
    for (int rep = 0; rep <= reps; rep++) { /* rep 0 warms up */
        kv_seq_release(kv, 0);
        if (kv_seq_reserve(kv, 0, pp) != 0) {
            snprintf(err, errlen, "KV cache too small for %d tokens", pp);
            goto out;
        }
        double t0 = gen_now();
        for (int done = 0; done < pp;) {
            int n = pp - done < f->n_max ? pp - done : f->n_max;
            batch_t b = {n, tok + done, pos + done, slot + done, NULL};
            if (fwd_run(f, &b, logits, err, errlen) != 0) goto out;
            done += n;
        }
        if (rep > 0) t[rep - 1] = pp / (gen_now() - t0);
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    *tok_per_s = t[reps / 2];
    rc = 0;
out:
    kv_seq_release(kv, 0);
    free(tok);
    free(t);
    return rc;
}

