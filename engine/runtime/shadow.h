/* shadow.h - shadow evaluation: the served format against its reference on
 * real traffic.
 *
 * With probability `rate` the prompt of a request that finished normally is
 * kept (at most SHADOW_QUEUE waiting, SHADOW_MAX_TOKENS each) and replayed
 * in the engine's idle time, SHADOW_CHUNK tokens a tick so new work waits
 * little, through the served path (its activation quantizer included) and
 * through the reference model; KL(P_ref || P_served) and top-1 agreement of
 * every predicted position go into the stats (sqserve_shadow_*). Loop
 * thread only.
 */
#ifndef SHADOW_H
#define SHADOW_H

#include <stdint.h>

#include "../compute/forward.h"
#include "stats.h"

#define SHADOW_QUEUE 8       /* prompts waiting for replay; more are dropped */
#define SHADOW_MAX_TOKENS 256
#define SHADOW_CHUNK 32      /* tokens per idle tick */

typedef struct {
    kv_cache_t kv[2];        /* served, reference */
    fwd_t f[2];
    int ready;
    double rate;
    int32_t *queue[SHADOW_QUEUE];
    int qlen[SHADOW_QUEUE], n_queued;
    int32_t *cur;            /* prompt being replayed */
    int cur_len, cur_done;
    float *logits[2];        /* SHADOW_CHUNK rows each */
    uint64_t rng;
} shadow_t;

/* served runs with the hook (its activation recipe), ref as loaded.
 * 0, or -1 when out of memory (sh is then freed). */
int shadow_init(shadow_t *sh, const model_t *served, const model_t *ref, k_pool_t *pool, double rate,
                fwd_hook_fn hook, void *hook_ud);
void shadow_free(shadow_t *sh);
/* Maybe keeps a finished request's prompt (its first n_prompt tokens). */
void shadow_offer(shadow_t *sh, const int32_t *tokens, int n_prompt);
/* One chunk of the replay under way (or of the next one queued). */
void shadow_step(shadow_t *sh, stats_t *stats);
int shadow_pending(const shadow_t *sh);

#endif
