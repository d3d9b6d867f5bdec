/* gen.h - single-sequence generation and perplexity, for the CLI tools.
 *
 * gen_run() drives one sequence through prompt processing (in chunks of
 * the forward pass's batch size) and sampling until max tokens, an
 * end-of-generation token or a stop string. Text leaves through a sink
 * callback, already UTF-8-safe and stop-string-safe. The server's
 * scheduler reuses the same pieces (sampler, stop matcher, detokenizer)
 * for many sequences at once.
 */
#ifndef GEN_H
#define GEN_H

#include <stddef.h>
#include <stdint.h>

#include "../compute/forward.h"
#include "sample.h"
#include "stop.h"

typedef struct {
    int max_tokens;
    sample_params_t sp;
    const char *const *stops;
    int n_stops;
    int ignore_eos;
} gen_opts_t;

typedef struct {
    int n_prompt, n_gen;
    double t_prompt_s, t_gen_s;
    const char *finish; /* "stop" (EOS or stop string) or "length" */
} gen_stats_t;

/* Return nonzero from the sink to cancel. */
typedef int (*gen_sink_fn)(void *ud, const char *text, size_t len);

int gen_run(fwd_t *f, const int32_t *prompt, int n_prompt, const gen_opts_t *o,
            gen_sink_fn sink, void *ud, gen_stats_t *st, char *err, size_t errlen);

typedef struct {
    double ppl, nll;
    long n_pred;
    int n_windows;
    double seconds;
} ppl_result_t;

/* Perplexity over non-overlapping windows of ctx tokens of `ids`: every
 * window starts from an empty cache and scores predictions 1..ctx-1.
 * Only full windows count. Reports per window through cb when non-NULL. */
int eval_ppl(fwd_t *f, const int32_t *ids, long n_ids, int ctx, ppl_result_t *r,
             void (*cb)(void *ud, int window, double nll, long n), void *ud,
             char *err, size_t errlen);

typedef struct {
    ppl_result_t q, ref;
    double kl;        /* mean KL(P_ref || P_q) per prediction, nats */
    double top1;      /* fraction of predictions with the same argmax */
} cmp_result_t;

/* eval_ppl for two forward states over the same windows (each with its
 * own model and cache), comparing their next-token distributions. */
int eval_compare(fwd_t *fq, fwd_t *fref, const int32_t *ids, long n_ids, int ctx, cmp_result_t *r,
                 void (*cb)(void *ud, int window, const cmp_result_t *sofar), void *ud,
                 char *err, size_t errlen);

/* One next-token position: log-sum-exp and argmax of each logits row and
 * KL(P_ref || P_q) in nats. Shared by eval --ref and shadow evaluation. */
typedef struct { double kl, lse_q, lse_ref; int argmax_q, argmax_ref; } pos_cmp_t;
void logits_compare(const float *q, const float *ref, int n_vocab, pos_cmp_t *out);

double gen_now(void);

#endif
