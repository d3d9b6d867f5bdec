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

/* Slot s's prompt: n tokens from position 0 (ids a fixed pseudo-random
 * sequence), in chunks of the pass's batch size. buf holds 3n ints. */
static int run_prompt(fwd_t *f, int32_t *buf, int s, int n, float *logits, char *err, size_t errlen) {
    int32_t *tok = buf, *pos = buf + n, *slot = pos + n;
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)(((long)i * 7919 + (long)s * 104729 + 13) % f->m->hp.n_vocab);
        pos[i] = i;
        slot[i] = s;
    }
    for (int done = 0; done < n;) {
        int c = n - done < f->n_max ? n - done : f->n_max;
        batch_t b = {c, tok + done, pos + done, slot + done, NULL};
        if (fwd_run(f, &b, logits, err, errlen) != 0) return -1;
        done += c;
    }
    return 0;
}

/* SQSERVE_PROFILE_STEP=1: the process's first timed decode step is marked
 * for an external profiler (fwd_profile_range; tests/gpu/profile.sh
 * runs Nsight Compute on it), so it sees one step's kernels, not the
 * weights' set-up or the warm-up. Once per process. */
static int profile_step(fwd_t *f, int on) {
    static int state; /* 0 not yet, 1 marking, 2 done */
    if (state == 2 || (on && state == 1) || (!on && state != 1)) return 0;
    if (on) {
        const char *e = getenv("SQSERVE_PROFILE_STEP");
        if (!e || strcmp(e, "1") != 0) return 0;
    }
    state = on ? 1 : 2;
    return fwd_profile_range(f, on);
}

int bench_decode(fwd_t *f, kv_cache_t *kv, int B, int depth, int steps, int reps, int to_host, float *logits,
                 double *sec_per_step, char *err, size_t errlen) {
    int32_t *tok = malloc((size_t)B * 3 * sizeof(int32_t)), *pos = tok + B, *slot = pos + B;
    int32_t *prompt = depth > 0 ? malloc((size_t)depth * 3 * sizeof(int32_t)) : NULL;
    double *t = malloc((size_t)reps * sizeof(double));
    uint8_t *want = malloc((size_t)B);
    int rc = -1;
    if (!tok || !t || !want || (depth > 0 && !prompt)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memset(want, 1, (size_t)B);
    for (int rep = 0; rep < reps; rep++) {
        for (int s = 0; s < B; s++) {
            kv_seq_release(kv, s);
            if (kv_seq_reserve(kv, s, depth + steps) != 0) {
                snprintf(err, errlen, "KV cache too small for %d x %d tokens", B, depth + steps);
                goto out;
            }
            slot[s] = s;
            if (depth > 0 && run_prompt(f, prompt, s, depth, logits, err, errlen) != 0) goto out;
        }
        double t0 = 0;
        for (int i = 0; i <= steps; i++) {
            if (i == 1) t0 = gen_now(); /* step 0 warms up */
            for (int s = 0; s < B; s++) {
                tok[s] = (int32_t)((i * 7919 + s * 104729 + 13) % f->m->hp.n_vocab);
                pos[s] = depth + (i < steps ? i : steps - 1);
            }
            batch_t b = {B, tok, pos, slot, want};
            if (i == 1 && profile_step(f, 1) != 0) {
                snprintf(err, errlen, "marking the step for a profiler failed");
                goto out;
            }
            if (fwd_run(f, &b, to_host ? logits : NULL, err, errlen) != 0) goto out;
            if (i == 1 && profile_step(f, 0) != 0) {
                snprintf(err, errlen, "ending the profiler's step failed");
                goto out;
            }
        }
        t[rep] = (gen_now() - t0) / steps;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    *sec_per_step = t[reps / 2];
    rc = 0;
out:
    for (int s = 0; s < B; s++) kv_seq_release(kv, s);
    free(tok);
    free(prompt);
    free(t);
    free(want);
    return rc;
}

int bench_prefill(fwd_t *f, kv_cache_t *kv, int pp, int reps, float *logits, double *tok_per_s,
                        char *err, size_t errlen) {
    int32_t *buf = malloc((size_t)pp * 3 * sizeof(int32_t));
    double *t = malloc((size_t)reps * sizeof(double));
    int rc = -1;
    if (!buf || !t) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int rep = 0; rep <= reps; rep++) { /* rep 0 warms up */
        kv_seq_release(kv, 0);
        if (kv_seq_reserve(kv, 0, pp) != 0) {
            snprintf(err, errlen, "KV cache too small for %d tokens", pp);
            goto out;
        }
        double t0 = gen_now();
        if (run_prompt(f, buf, 0, pp, logits, err, errlen) != 0) goto out;
        if (rep > 0) t[rep - 1] = pp / (gen_now() - t0);
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    *tok_per_s = t[reps / 2];
    rc = 0;
out:
    kv_seq_release(kv, 0);
    free(buf);
    free(t);
    return rc;
}

