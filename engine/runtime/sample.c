/* sample.c - the sampling pipeline (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

sample_params_t sample_defaults(void) {
    return (sample_params_t){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                             .repeat_penalty = 1.0f, .presence_penalty = 0.0f,
                             .frequency_penalty = 0.0f, .penalty_last_n = 64, .seed = 0};
}

const char *sample_validate(const sample_params_t *p) {
    if (!(p->temperature >= 0 && p->temperature <= 100)) return "temperature must be in [0, 100]";
    if (p->top_k < 0) return "top_k must be >= 0";
    if (!(p->top_p > 0 && p->top_p <= 1)) return "top_p must be in (0, 1]";
    if (!(p->min_p >= 0 && p->min_p <= 1)) return "min_p must be in [0, 1]";
    if (!(p->repeat_penalty > 0 && p->repeat_penalty <= 10)) return "repeat_penalty must be in (0, 10]";
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2)) return "presence_penalty must be in [-2, 2]";
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2)) return "frequency_penalty must be in [-2, 2]";
    if (p->penalty_last_n < 0 || p->penalty_last_n > 1 << 20) return "penalty_last_n must be in [0, 1048576]";
    return NULL;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t next_u64(uint64_t s[4]) { /* xoshiro256** */
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return r;
}

static double next_unit(uint64_t s[4]) { return (next_u64(s) >> 11) * 0x1.0p-53; }

int sampler_init(sampler_t *s, const sample_params_t *p, int n_vocab) {
    memset(s, 0, sizeof *s);
    s->p = *p;
    s->n_vocab = n_vocab;
    uint64_t seed = p->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix(&seed);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->hist = malloc((size_t)(p->penalty_last_n > 0 ? p->penalty_last_n : 1) * sizeof *s->hist);
    if (!s->count || !s->cand || !s->hist) {
        sampler_free(s);
        return -1;
    }
    return 0;
}

void sampler_free(sampler_t *s) {
    free(s->count);
    free(s->cand);
    free(s->hist);
    memset(s, 0, sizeof *s);
}

void sampler_accept(sampler_t *s, int32_t id) {
    int n = s->p.penalty_last_n;
    if (n <= 0 || id < 0 || id >= s->n_vocab) return;
    if (s->hist_len == n) s->count[s->hist[s->hist_pos]]--; /* evict the oldest */
    else s->hist_len++;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % n;
    s->count[id]++;
}

static void apply_penalties(sampler_t *s, float *logits) {
    const sample_params_t *p = &s->p;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0 && p->frequency_penalty == 0) return;
    for (int i = 0; i < s->hist_len; i++) {
        int32_t id = s->hist[i];
        int c = s->count[id];
        if (c <= 0) continue; /* already handled (duplicates in the window) */
        float *l = &logits[id];
        if (p->repeat_penalty != 1.0f) *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= p->presence_penalty + p->frequency_penalty * (float)c;
        s->count[id] = -c; /* mark; restored below */
    }
    for (int i = 0; i < s->hist_len; i++)
        if (s->count[s->hist[i]] < 0) s->count[s->hist[i]] = -s->count[s->hist[i]];
}

static int cmp_cand(const void *a, const void *b) {
    const struct sample_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id - y->id; /* deterministic ties */
}

int32_t sampler_next(sampler_t *s, float *logits) {
    const sample_params_t *p = &s->p;
    int n = s->n_vocab;
    /* NaN (from broken weights) would make every comparison below lie */
    for (int i = 0; i < n; i++)
        if (logits[i] != logits[i]) logits[i] = -INFINITY;
    apply_penalties(s, logits);
    if (p->temperature <= 0) {
        int32_t best = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    /* Candidates more than 28 nats below the best have relative probability
     * < 7e-13 even at temperature 1: dropping them changes no cut by more
     * than float rounding, and spares sorting the whole vocabulary. */
    float best = logits[0];
    for (int i = 1; i < n; i++) best = logits[i] > best ? logits[i] : best;
    float floor_keep = best - 28.0f * (p->temperature > 1 ? p->temperature : 1.0f);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] >= floor_keep) s->cand[m++] = (struct sample_cand){logits[i], i};
    n = m;
    /* keep only the top_k candidates (partial selection, then sort those) */
    int k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    if (k < n) {
        /* quickselect the k largest into cand[0..k) */
        int lo = 0, hi = n - 1;
        while (lo < hi) {
            float pivot = s->cand[(lo + hi) / 2].logit;
            int i = lo, j = hi;
            while (i <= j) {
                while (s->cand[i].logit > pivot) i++;
                while (s->cand[j].logit < pivot) j--;
                if (i <= j) {
                    struct sample_cand t = s->cand[i]; s->cand[i] = s->cand[j]; s->cand[j] = t;
                    i++; j--;
                }
            }
            if (k - 1 <= j) hi = j;
            else if (k - 1 >= i) lo = i;
            else break;
        }
    }
    /* only nucleus sampling needs the candidates in order */
    double mx = best;
    int keep = k;
    if (p->top_p < 1.0f) {
        qsort(s->cand, (size_t)k, sizeof *s->cand, cmp_cand);
        double sum = 0, cum = 0;
        for (int i = 0; i < k; i++) sum += exp(s->cand[i].logit - mx);
        for (int i = 0; i < k; i++) {
            cum += exp(s->cand[i].logit - mx) / sum;
            if (cum >= p->top_p) { keep = i + 1; break; }
        }
    }
    if (p->min_p > 0) { /* p_i >= min_p * p_max, in any order */
        double floor_logit = mx + log(p->min_p);
        int m2 = 0;
        for (int i = 0; i < keep; i++)
            if (s->cand[i].logit >= floor_logit) s->cand[m2++] = s->cand[i];
        keep = m2;
    }
    double z = 0;
    for (int i = 0; i < keep; i++) z += exp((s->cand[i].logit - mx) / p->temperature);
    double r = next_unit(s->rng) * z, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += exp((s->cand[i].logit - mx) / p->temperature);
        if (r < acc) return s->cand[i].id;
    }
    return s->cand[keep - 1].id;
}

float sample_logprobs(const float *l, int nv, int32_t chosen, int n_top, int32_t *top_ids, float *top_lp) {
    float mx = l[0];
    for (int i = 1; i < nv; i++) mx = l[i] > mx ? l[i] : mx;
    double sum = 0;
    for (int i = 0; i < nv; i++) sum += exp((double)l[i] - mx);
    float lse = mx + (float)log(sum);
    for (int k = 0; k < n_top; k++) top_ids[k] = -1;
    for (int i = 0; i < nv; i++) { /* insertion into a small sorted list */
        if (n_top == 0 || (top_ids[n_top - 1] >= 0 && l[i] <= top_lp[n_top - 1])) continue;
        int k = n_top - 1;
        while (k > 0 && (top_ids[k - 1] < 0 || l[i] > top_lp[k - 1])) {
            top_ids[k] = top_ids[k - 1];
            top_lp[k] = top_lp[k - 1];
            k--;
        }
        top_ids[k] = i;
        top_lp[k] = l[i];
    }
    for (int k = 0; k < n_top; k++) top_lp[k] -= lse;
    return l[chosen] - lse;
}
