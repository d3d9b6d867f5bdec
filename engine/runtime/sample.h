/* sample.h - logits -> next token, per sequence.
 *
 * Order of the pipeline (the common llama.cpp / OpenAI reading):
 *   penalties (repetition, presence, frequency over the last N tokens)
 *   -> top_k -> top_p -> min_p -> temperature -> draw.
 * temperature <= 0 is greedy (argmax after penalties). The RNG is a
 * per-sampler xoshiro256** seeded from `seed`, so the same seed and the
 * same logits give the same tokens.
 */
#ifndef SAMPLE_H
#define SAMPLE_H

#include <stdint.h>

typedef struct {
    float temperature;   /* <= 0: greedy */
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float repeat_penalty;    /* 1: off (CTRL-style divide/multiply) */
    float presence_penalty;  /* 0: off (OpenAI semantics) */
    float frequency_penalty; /* 0: off */
    int penalty_last_n;      /* window of recent tokens the penalties see */
    uint64_t seed;
} sample_params_t;

sample_params_t sample_defaults(void);
/* NULL when valid, else a message naming the bad parameter. */
const char *sample_validate(const sample_params_t *p);

typedef struct {
    sample_params_t p;
    uint64_t rng[4];
    int n_vocab;
    int32_t *hist;       /* ring of recent tokens */
    int hist_len, hist_pos;
    int32_t *count;      /* occurrences per token within the window */
    struct sample_cand { float logit; int32_t id; } *cand;
} sampler_t;

int sampler_init(sampler_t *s, const sample_params_t *p, int n_vocab);
void sampler_free(sampler_t *s);
/* Records a token (prompt or generated) for the penalties. */
void sampler_accept(sampler_t *s, int32_t id);
/* Log-softmax of raw logits: returns the logprob of `chosen` and fills the
 * n_top most likely tokens, best first (top_ids[k] = -1 past the vocabulary). */
float sample_logprobs(const float *l, int n_vocab, int32_t chosen, int n_top, int32_t *top_ids, float *top_lp);

/* Picks the next token; logits may be modified. */
int32_t sampler_next(sampler_t *s, float *logits);

#endif
