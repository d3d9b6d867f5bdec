/* bench.h - end-to-end speed of the forward pass, the way llama-bench
 * measures it: decode steps of B sequences advanced one token at a time
 * from position 0 (or from a depth their prompts filled), and prefill of one sequence in chunks of the pass's
 * batch size. Token ids are a fixed pseudo-random sequence, so any model
 * (a loaded one, or a synthetic one of real shapes) can be timed without
 * a tokenizer. Each figure is the median of `reps` runs after a warm-up.
 */
#ifndef BENCH_H
#define BENCH_H

#include "../compute/forward.h"

/* Median seconds per step of `steps` decode steps for B sequences (slots
 * 0..B-1 of kv, released after), each holding `depth` positions first (its
 * prompt run before the timed steps, like llama-bench's -d). to_host = 0
 * leaves the logits on the device (fwd_run with logits NULL) to show the
 * cost of the copy. */
int bench_decode(fwd_t *f, kv_cache_t *kv, int B, int depth, int steps, int reps, int to_host, float *logits,
                 double *sec_per_step, char *err, size_t errlen);
/* Median prefill tokens/s of a pp-token prompt in slot 0. */
int bench_prefill(fwd_t *f, kv_cache_t *kv, int pp, int reps, float *logits, double *tok_per_s,
                  char *err, size_t errlen);

#endif
