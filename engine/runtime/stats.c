/* stats.c - bucket layouts and the snapshot (see stats.h). */
#include "stats.h"

#include <string.h>

static void hist_set(hist_t *h, const double *le, int n) {
    memset(h, 0, sizeof *h);
    h->n = n;
    memcpy(h->le, le, (size_t)n * sizeof *le);
}

void stats_init(stats_t *s) {
    static const double latency[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1, 2.5, 5, 10, 30, 60, 120};
    static const double itl[] = {0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56};
    static const double seqs[] = {1, 2, 4, 8, 16, 32, 64, 128};
    static const double tokens[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    hist_set(&s->d.ttft, latency, 14);
    hist_set(&s->d.e2e, latency, 14);
    hist_set(&s->d.queue, latency, 14);
    hist_set(&s->d.itl, itl, 11);
    hist_set(&s->d.step_seqs, seqs, 8);
    hist_set(&s->d.step_tokens, tokens, 13);
    hist_set(&s->d.prompt_len, tokens, 13);
    hist_set(&s->d.output_len, tokens, 13);
}

void stats_destroy(stats_t *s) { pthread_mutex_destroy(&s->mu); }
void stats_lock(stats_t *s) { pthread_mutex_lock(&s->mu); }
void stats_unlock(stats_t *s) { pthread_mutex_unlock(&s->mu); }

void stats_snapshot(stats_t *s, stats_data_t *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->d;
    pthread_mutex_unlock(&s->mu);
}

void hist_observe(hist_t *h, double v) {
    int i = 0;
    while (i < h->n && v > h->le[i]) i++;
    h->count[i]++;
    h->sum += v;
    h->total++;
}
