/* sched_int.h - the scheduler's state, shared by sched.c (the loop
 * thread's callbacks, the inbox, the public API), sched_step.c (one
 * engine step: batch planning, the forward pass, sampling) and
 * sched_seq.c (the sequences and their lists, below both). Not part of the
 * runtime's interface: everything outside engine/runtime/sched*.c sees only
 * the opaque sched_t of sched.h.
 *
 * The state is the loop thread's, except what `mu` guards (the inbox, the
 * cancellations, n_queued), which other threads touch through
 * sched_submit/sched_cancel. The three files run on the loop thread, so
 * the functions below take `mu` only where they change n_queued.
 *
 * The sequence lists are sched_seq.c's: sched.c creates sequences, and it
 * and the step move them between the waiting FIFO and the running set,
 * and free them, only through the sch_ functions below, so a sequence's
 * slot and KV blocks are released, and DONE reported, in one place. The
 * calls run one way: sched.c -> sched_step.c -> sched_seq.c, and sched.c
 * -> sched_seq.c.
 */
#ifndef SCHED_INT_H
#define SCHED_INT_H

#include "sched.h"

#include "../compute/forward.h"
#include "shadow.h"
#include "stepcost.h"
#include "stop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct seq {
    uint64_t id;
    sched_params_t p;
    char *stops[SCHED_MAX_STOPS];
    int32_t *tokens;          /* prompt, then generated */
    int n_tokens, n_prompt, n_gen;
    int n_done;               /* positions whose K/V are in the cache */
    int slot;                 /* -1 while waiting */
    sampler_t smp;
    gmatch_t *gm;             /* grammar state, or NULL */
    stop_t stop;
    tok_stream_t ts;
    double t_submit, t_admit, t_first, t_last;
    int take;                 /* rows in the current batch */
    int all_rows;             /* this step every row of it wants output (embedding, prompt logprobs) */
    int plp_next;             /* prompt_logprobs: the next prompt position to report */
    int n_cached;             /* prompt positions reused from the prefix cache at (re)admission */
    int32_t *bias_ids;        /* logit_bias, copied */
    float *bias;
    float *emb;               /* embed: running sum of the final normed rows */
    struct seq *next;
} seq_t;

struct sched {
    model_t *m;
    sched_config_t cfg;
    k_pool_t *pool;
    kv_cache_t kv;
    fwd_t f;
    stats_t stats;

    uv_loop_t loop;
    uv_async_t wake;
    uv_idle_t idle;
    uv_timer_t tick, drain_timer;
    uv_signal_t sigterm, sigint;
    pthread_t thread;
    int started, idle_on;

    pthread_mutex_t mu;        /* guards inbox, cancels, n_queued */
    seq_t *inbox_head, *inbox_tail;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    int n_queued;              /* inbox + waiting: bounded by max_queue */
    uint64_t next_id;
    atomic_int draining;       /* set on the loop thread when the drain starts */
    atomic_int drain_req;      /* sched_drain() from any thread */
    int loop_ready, drain_armed;

    /* loop thread only */
    stepcost_t cost;           /* step time against rows (stepcost.h) */
    seq_t *wait_head, *wait_tail;
    seq_t **running;           /* admission order, oldest first */
    int n_running;
    int *free_slots, n_free_slots;
    int32_t *b_tok, *b_pos, *b_slot;
    uint8_t *b_want;
    float *logits;             /* max_seqs + SCHED_ALL_ROWS rows */
    float *hidden;             /* the same rows' final normed hidden states */
    int32_t top_ids[SCHED_MAX_LOGPROBS];
    float top_lp[SCHED_MAX_LOGPROBS];

    shadow_t sh;               /* shadow evaluation (loop thread only) */
    gvocab_t *gv;              /* the token trie for grammars (built at start) */
};

/* sched_seq.c: the sequences and their lists (loop thread only) */
void sch_seq_free(seq_t *q);
void sch_release_slot(sched_t *s, seq_t *q);
void sch_remove_running(sched_t *s, int i);
void sch_finish_running(sched_t *s, int i, const char *finish, const char *error);
void sch_wait_push_front(sched_t *s, seq_t *q);
void sch_wait_push_back(sched_t *s, seq_t *q);
seq_t *sch_wait_pop(sched_t *s);
void sch_drop_waiting(sched_t *s, seq_t *victim, const char *finish);

/* sched_step.c: run by the loop callbacks of sched.c */
void sch_step(sched_t *s);
void sch_expire(sched_t *s, double now);
void sch_update_gauges(sched_t *s);

#endif
