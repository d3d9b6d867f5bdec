/* stats.h - the engine's counters, gauges and histograms.
 *
 * The scheduler is the only writer (once per step, under the mutex); the
 * metrics endpoint takes a snapshot copy. Nothing is computed twice:
 * exposition formats read these numbers, they do not recount.
 */
#ifndef STATS_H
#define STATS_H

#include <pthread.h>
#include <stdint.h>

#define HIST_MAX_BUCKETS 16

typedef struct {
    int n;                               /* finite buckets */
    double le[HIST_MAX_BUCKETS];         /* upper bounds, ascending */
    uint64_t count[HIST_MAX_BUCKETS + 1]; /* per bucket, last = +Inf (not cumulative) */
    double sum;
    uint64_t total;
} hist_t;

typedef struct {
    uint64_t prompt_tokens, gen_tokens, preemptions, cancellations, prefix_hit_tokens;
    uint64_t finished, steps;
    uint64_t finished_stop, finished_length; /* by finish reason (the rest: cancelled, timeout, error) */
    /* shadow evaluation: served format vs the FP32 reference on traffic */
    uint64_t shadow_requests, shadow_tokens;
    double shadow_kl_sum, shadow_top1_sum;
    int running, waiting, kv_used, kv_total;
    hist_t ttft, itl, e2e, queue, step_seqs, step_tokens, prompt_len, output_len;
} stats_data_t;

typedef struct {
    pthread_mutex_t mu;
    stats_data_t d;
} stats_t;

void stats_init(stats_t *s);
void stats_destroy(stats_t *s);
void stats_lock(stats_t *s);
void stats_unlock(stats_t *s);
void stats_snapshot(stats_t *s, stats_data_t *out);
void hist_observe(hist_t *h, double v);

#endif
