/* sched.h - the scheduler: continuous batching on its own libuv loop.
 *
 * Requests arrive from any thread (sched_submit) through a mutex-guarded
 * inbox and uv_async; cancellations the same way, by id. The loop thread
 * owns everything else: the waiting FIFO, the running set, the paged KV
 * cache and the forward pass. Each step:
 *   1. admits waiting sequences while a slot and their prompt's blocks are
 *      free, reusing cached prefix blocks;
 *   2. packs a batch under --max-batch-tokens: one token for every
 *      decoding sequence first (latency), then prompt chunks (prefill);
 *   3. when the pool runs out, preempts the youngest running sequence
 *      (frees its blocks, requeues it at the front to be recomputed);
 *   4. runs one forward pass for the whole batch, samples, and reports
 *      tokens to each request's sink.
 * Sinks run on the loop thread and must only copy data and return.
 */
#ifndef SCHED_H
#define SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "../model/model.h"
#include "grammar.h"
#include "sample.h"
#include "stats.h"

#define SCHED_MAX_STOPS 4
#define SCHED_MAX_LOGPROBS 20
/* Output rows a step may spend on requests that want every prompt row
 * (prompt logprobs, embeddings), beyond one per running sequence. */
#define SCHED_ALL_ROWS 64

/* SCHED_PROMPT: the logprob of prompt token `pos` (1..n_prompt-1) given
 * the tokens before it, for requests with prompt_logprobs. */
typedef enum { SCHED_TOKEN, SCHED_PROMPT, SCHED_DONE } sched_ev_type_t;

typedef struct {
    sched_ev_type_t type;
    /* SCHED_TOKEN: text released by this token (may be empty while a
     * stop string or a UTF-8 character is incomplete) and its logprobs */
    const char *text;
    size_t len;
    int32_t token;
    float logprob;
    int n_top;
    const int32_t *top_ids;
    const float *top_logprobs;
    int pos;               /* SCHED_PROMPT: the prompt token's position */
    /* SCHED_DONE: "stop", "length", "cancelled", "timeout" or "error" */
    const char *finish;
    const char *error;
    int n_prompt, n_gen;
    int n_cached;          /* prompt tokens whose K/V came from the prefix cache */
    const float *embedding; /* embed requests that finished: n_embd floats, L2-normalized */
    int n_embd;
} sched_event_t;

typedef void (*sched_sink_fn)(void *ud, const sched_event_t *ev);

typedef struct {
    const int32_t *prompt; /* copied by sched_submit */
    int n_prompt;
    int max_tokens;
    sample_params_t sp;
    const char *stops[SCHED_MAX_STOPS]; /* copied */
    int n_stops;
    int ignore_eos;
    int n_logprobs;        /* -1: none; 0..20: chosen token (+ top-n) */
    int prompt_logprobs;   /* also SCHED_PROMPT events for prompt tokens 1.. (needs n_logprobs >= 0);
                              max_tokens may then be 0: the prompt is scored, nothing generated */
    /* logit_bias (copied): added to these tokens' logits before sampling;
     * -100 or below bans the token. Logprobs stay the model's. */
    const int32_t *bias_ids;
    const float *bias;
    int n_bias;
    /* an embedding request: max_tokens 0, the prompt is run and DONE
     * carries the mean over its tokens of the final normed hidden state,
     * L2-normalized (SCHED_TOKEN events never come) */
    int embed;
    double timeout_s;      /* <= 0: none */
    /* constrained decoding (NULL: none): each step's logits are masked to the
     * tokens the grammar allows; an end-of-generation token only where it can
     * end, and the sequence stops ("stop") once nothing may follow. The
     * scheduler takes its own reference. */
    grammar_t *grammar;
    sched_sink_fn sink;
    void *ud;
} sched_params_t;

typedef struct {
    int max_seqs, max_queue, max_batch_tokens, n_ctx, threads;
    size_t kv_mem;
    double drain_timeout_s;
    /* Latency budget of a step that carries decodes (seconds, 0 = none):
     * prompt chunks are cut so that such a step is predicted to take at most
     * this long (never below SCHED_MIN_PREFILL tokens, so prompts progress);
     * a step without decodes takes max_batch_tokens. */
    double step_budget_s;
    /* the served format's activation quantizer (fwd_t.hook), or NULL */
    void (*act_hook)(void *ud, int layer, int site, float *x, long n, long dim);
    void *act_hook_ud;
    /* shadow evaluation: with probability shadow_rate a finished request's
     * prompt is replayed in idle time through the served path and through
     * ref (the unquantized model) and their next-token distributions are
     * compared. ref NULL or rate 0: off. */
    const model_t *ref;
    double shadow_rate;
} sched_config_t;

/* Prompt tokens a step with decodes takes at least, whatever the budget. */
#define SCHED_MIN_PREFILL 16

typedef struct sched sched_t;

enum { SCHED_OK = 0, SCHED_EINVAL = -1, SCHED_EFULL = -2, SCHED_EDRAIN = -3, SCHED_ENOMEM = -4 };

sched_t *sched_new(model_t *m, const sched_config_t *cfg, char *err, size_t errlen);
/* Starts the loop thread (which also handles SIGTERM/SIGINT: drain). */
int sched_start(sched_t *s);
/* Blocks until the loop has drained and stopped. */
void sched_join(sched_t *s);
void sched_free(sched_t *s);

/* Returns SCHED_OK with *id set, or an error code with a message. Every
 * accepted request gets exactly one SCHED_DONE event, even if cancelled. */
int sched_submit(sched_t *s, const sched_params_t *p, uint64_t *id, char *err, size_t errlen);
void sched_cancel(sched_t *s, uint64_t id);
/* Begins draining (what SIGTERM does). */
void sched_drain(sched_t *s);
int sched_draining(const sched_t *s);

stats_t *sched_stats(sched_t *s);
const sched_config_t *sched_config(const sched_t *s);

#endif
