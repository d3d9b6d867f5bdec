/* sched.c - continuous batching (see sched.h for the step). */
#include "sched.h"

#include "../compute/forward.h"
#include "gen.h"
#include "shadow.h"
#include "stepcost.h"
#include "stop.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* ---- helpers ----------------------------------------------------------------- */

static void seq_free(seq_t *q) {
    if (!q) return;
    for (int i = 0; i < SCHED_MAX_STOPS; i++) free(q->stops[i]);
    free(q->tokens);
    free(q->bias_ids);
    free(q->bias);
    free(q->emb);
    sampler_free(&q->smp);
    gmatch_free(q->gm);
    stop_free(&q->stop);
    free(q);
}

static void emit_done(sched_t *s, seq_t *q, const char *finish, const char *error) {
    double now = gen_now();
    stats_lock(&s->stats);
    stats_data_t *d = &s->stats.d;
    d->finished++;
    if (!strcmp(finish, "stop")) d->finished_stop++;
    else if (!strcmp(finish, "length")) d->finished_length++;
    if (!strcmp(finish, "cancelled") || !strcmp(finish, "timeout")) d->cancellations++;
    hist_observe(&d->e2e, now - q->t_submit);
    hist_observe(&d->prompt_len, q->n_prompt);
    hist_observe(&d->output_len, q->n_gen);
    stats_unlock(&s->stats);
    sched_event_t ev = {.type = SCHED_DONE, .finish = finish, .error = error,
                        .n_prompt = q->n_prompt, .n_gen = q->n_gen, .n_cached = q->n_cached};
    if (q->p.embed && !strcmp(finish, "stop")) {
        ev.embedding = q->emb;
        ev.n_embd = s->m->hp.dim;
    }
    q->p.sink(q->p.ud, &ev);
}

static void release_slot(sched_t *s, seq_t *q) {
    if (q->slot < 0) return;
    kv_seq_release(&s->kv, q->slot);
    s->free_slots[s->n_free_slots++] = q->slot;
    q->slot = -1;
    q->n_done = 0;
}

static void remove_running(sched_t *s, int i) {
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof(seq_t *));
    s->n_running--;
}


/* Ends a running sequence: frees its blocks and its slot, reports DONE. */
static void finish_running(sched_t *s, int i, const char *finish, const char *error) {
    seq_t *q = s->running[i];
    if (!strcmp(finish, "stop") || !strcmp(finish, "length")) shadow_offer(&s->sh, q->tokens, q->n_prompt);
    remove_running(s, i);
    release_slot(s, q);
    emit_done(s, q, finish, error);
    seq_free(q);
}

static void wait_push_front(sched_t *s, seq_t *q) {
    q->next = s->wait_head;
    s->wait_head = q;
    if (!s->wait_tail) s->wait_tail = q;
}

static void wait_push_back(sched_t *s, seq_t *q) {
    q->next = NULL;
    if (s->wait_tail) s->wait_tail->next = q;
    else s->wait_head = q;
    s->wait_tail = q;
}

static seq_t *wait_pop(sched_t *s) {
    seq_t *q = s->wait_head;
    if (q) {
        s->wait_head = q->next;
        if (!s->wait_head) s->wait_tail = NULL;
        q->next = NULL;
    }
    return q;
}

/* ---- inbox: requests and cancellations from other threads ----------------------- */

static void drop_waiting(sched_t *s, seq_t *victim, const char *finish) {
    seq_t **pp = &s->wait_head, *prev = NULL;
    while (*pp && *pp != victim) { prev = *pp; pp = &(*pp)->next; }
    if (!*pp) return;
    *pp = victim->next;
    if (s->wait_tail == victim) s->wait_tail = prev;
    pthread_mutex_lock(&s->mu);
    s->n_queued--;
    pthread_mutex_unlock(&s->mu);
    emit_done(s, victim, finish, NULL);
    seq_free(victim);
}

static void cancel_id(sched_t *s, uint64_t id, const char *finish) {
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id) {
            finish_running(s, i, finish, NULL);
            return;
        }
    for (seq_t *q = s->wait_head; q; q = q->next)
        if (q->id == id) {
            drop_waiting(s, q, finish);
            return;
        }
}

static void take_inbox(sched_t *s) {
    pthread_mutex_lock(&s->mu);
    seq_t *in = s->inbox_head;
    s->inbox_head = s->inbox_tail = NULL;
    int n = s->n_cancels;
    uint64_t ids[64];
    if (n > 64) n = 64;
    if (n > 0) { /* cancels is NULL until the first sched_cancel: no memcpy from NULL */
        memcpy(ids, s->cancels, (size_t)n * sizeof *ids);
        memmove(s->cancels, s->cancels + n, (size_t)(s->n_cancels - n) * sizeof *ids);
        s->n_cancels -= n;
    }
    int more = s->n_cancels > 0;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        seq_t *next = in->next;
        wait_push_back(s, in);
        in = next;
    }
    for (int i = 0; i < n; i++) cancel_id(s, ids[i], "cancelled");
    if (more) uv_async_send(&s->wake);
}

/* ---- sampling and output ----------------------------------------------------------- */

/* Log-softmax of the raw logits: the chosen token's logprob and the top-n. */
static float logprobs(sched_t *s, const float *l, int32_t chosen, int n_top) {
    return sample_logprobs(l, s->m->hp.n_vocab, chosen, n_top, s->top_ids, s->top_lp);
}

/* Releases text held back for stop strings or incomplete UTF-8 (the
 * sequence is ending without a stop string). */
static void flush_tail(seq_t *q) {
    char piece[1024];
    const char *out = "";
    size_t out_len = 0;
    size_t n = tok_stream_flush(&q->ts, piece, sizeof piece);
    if (stop_feed(&q->stop, piece, n, &out, &out_len) != 0) return;
    char *tail = malloc(out_len + q->stop.held_len + 1);
    if (!tail) return;
    memcpy(tail, out, out_len);
    const char *h;
    size_t hl;
    stop_flush(&q->stop, &h, &hl);
    memcpy(tail + out_len, h, hl);
    sched_event_t t = {.type = SCHED_TOKEN, .text = tail, .len = out_len + hl, .token = -1};
    if (t.len) q->p.sink(q->p.ud, &t);
    free(tail);
}

/* Samples the next token of running[i]; returns 1 if the sequence ended. */
static int next_token(sched_t *s, int i, float *l, double now) {
    seq_t *q = s->running[i];
    int n_top = q->p.n_logprobs > 0 ? q->p.n_logprobs : 0;
    float *raw = NULL;
    if (q->p.n_logprobs >= 0) { /* the sampler edits logits; keep the model's view */
        raw = malloc((size_t)s->m->hp.n_vocab * sizeof(float));
        if (raw) memcpy(raw, l, (size_t)s->m->hp.n_vocab * sizeof(float));
    }
    for (int k = 0; k < q->p.n_bias; k++) /* after the copy: logprobs stay the model's */
        l[q->bias_ids[k]] = q->bias[k] <= -100 ? -INFINITY : l[q->bias_ids[k]] + q->bias[k];
    if (q->gm && gmatch_apply(q->gm, l) <= 0) {
        free(raw);
        finish_running(s, i, "error", "the grammar allows no next token (or is too ambiguous, or out of memory)");
        return 1;
    }
    int32_t id = sampler_next(&q->smp, l);
    float lp = raw ? logprobs(s, raw, id, n_top) : 0.0f;
    free(raw);
    if (q->gm && gmatch_accept_token(q->gm, id) != 0) {
        finish_running(s, i, "error", "the sampled token does not fit the grammar");
        return 1;
    }
    sampler_accept(&q->smp, id);
    q->tokens[q->n_tokens++] = id;
    q->n_gen++;
    stats_lock(&s->stats);
    s->stats.d.gen_tokens++;
    if (q->n_gen == 1) hist_observe(&s->stats.d.ttft, now - q->t_submit);
    else hist_observe(&s->stats.d.itl, now - q->t_last);
    stats_unlock(&s->stats);
    if (q->n_gen == 1) q->t_first = now;
    q->t_last = now;

    /* with a grammar, an end token is allowed only where the grammar ends */
    if ((!q->p.ignore_eos || q->gm) && tok_is_eog(s->m->tok, id)) {
        finish_running(s, i, "stop", NULL);
        return 1;
    }
    char piece[1024];
    size_t n = tok_stream_push(s->m->tok, &q->ts, id, 0, piece, sizeof piece);
    const char *out = "";
    size_t out_len = 0;
    int hit = stop_feed(&q->stop, piece, n, &out, &out_len);
    if (hit < 0) {
        finish_running(s, i, "error", "out of memory");
        return 1;
    }
    sched_event_t ev = {.type = SCHED_TOKEN, .text = out, .len = out_len, .token = id,
                        .logprob = lp, .n_top = raw || n_top == 0 ? n_top : 0,
                        .top_ids = s->top_ids, .top_logprobs = s->top_lp};
    q->p.sink(q->p.ud, &ev);
    if (hit) {
        finish_running(s, i, "stop", NULL);
        return 1;
    }
    int done = q->gm && gmatch_done(q->gm); /* the grammar is complete: nothing may follow */
    if (done || q->n_gen >= q->p.max_tokens) {
        flush_tail(q);
        finish_running(s, i, done ? "stop" : "length", NULL);
        return 1;
    }
    return 0;
}

/* Embeddings: the final normed row of each prompt position is summed. */
static void pool_row(sched_t *s, seq_t *q, const float *h) {
    for (int d = 0; d < s->m->hp.dim; d++) q->emb[d] += h[d];
}

/* The mean is L2-normalized, which is the sum L2-normalized. */
static void finish_embedding(sched_t *s, int i) {
    seq_t *q = s->running[i];
    double ss = 0;
    for (int d = 0; d < s->m->hp.dim; d++) ss += (double)q->emb[d] * q->emb[d];
    float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (int d = 0; d < s->m->hp.dim; d++) q->emb[d] *= inv;
    finish_running(s, i, "stop", NULL);
}

/* The row at position pos predicts prompt token pos + 1: report its
 * logprob once (a preempted sequence recomputes rows already reported). */
static void prompt_logprob(sched_t *s, seq_t *q, int pos, const float *l) {
    int j = pos + 1;
    if (j >= q->n_prompt || j < q->plp_next) return;
    int n_top = q->p.n_logprobs > 0 ? q->p.n_logprobs : 0;
    float lp = logprobs(s, l, q->tokens[j], n_top);
    sched_event_t ev = {.type = SCHED_PROMPT, .text = "", .token = q->tokens[j], .pos = j, .logprob = lp,
                        .n_top = n_top, .top_ids = s->top_ids, .top_logprobs = s->top_lp};
    q->p.sink(q->p.ud, &ev);
    q->plp_next = j + 1;
}

/* ---- one engine step --------------------------------------------------------------- */

static void preempt(sched_t *s, int i) {
    seq_t *q = s->running[i];
    remove_running(s, i);
    release_slot(s, q);
    wait_push_front(s, q);
    pthread_mutex_lock(&s->mu);
    s->n_queued++;
    pthread_mutex_unlock(&s->mu);
    stats_lock(&s->stats);
    s->stats.d.preemptions++;
    stats_unlock(&s->stats);
}

static void admit(sched_t *s, double now) {
    while (s->wait_head && s->n_running < s->cfg.max_seqs) {
        seq_t *q = s->wait_head;
        int slot = s->free_slots[s->n_free_slots - 1];
        /* the last prompt token is always recomputed: its logits are needed;
         * embeddings need every row, prompt logprobs the rows not yet reported */
        int limit = q->p.embed ? 0 : q->p.prompt_logprobs ? q->plp_next - 1 : q->n_tokens - 1;
        int hit = kv_seq_match_prefix(&s->kv, slot, q->tokens, q->n_tokens, limit);
        if (kv_seq_blocks_needed(&s->kv, slot, q->n_tokens) > s->kv.n_free) {
            kv_seq_release(&s->kv, slot);
            break; /* wait for blocks rather than preempt to admit */
        }
        wait_pop(s);
        s->n_free_slots--;
        q->slot = slot;
        q->n_done = hit;
        q->n_cached = hit < q->n_prompt ? hit : q->n_prompt;
        if (q->emb) memset(q->emb, 0, (size_t)s->m->hp.dim * sizeof(float));
        q->t_admit = now;
        s->running[s->n_running++] = q;
        pthread_mutex_lock(&s->mu);
        s->n_queued--;
        pthread_mutex_unlock(&s->mu);
        stats_lock(&s->stats);
        s->stats.d.prefix_hit_tokens += (uint64_t)hit;
        hist_observe(&s->stats.d.queue, now - q->t_submit);
        stats_unlock(&s->stats);
    }
}

/* Prompt tokens a step that already holds n_decode decode rows may add
 * within the latency budget (stepcost.h); all it may take without decodes. */
static int prefill_cap(const sched_t *s, int n_decode) {
    if (s->cfg.step_budget_s <= 0 || n_decode == 0) return s->cfg.max_batch_tokens;
    return stepcost_prefill_cap(&s->cost, s->cfg.step_budget_s, n_decode, SCHED_MIN_PREFILL,
                                s->cfg.max_batch_tokens);
}

/* Chooses rows: decodes first, then prefill chunks (within the latency
 * budget while decodes wait on the step), reserving blocks; preempts the
 * youngest sequence when the pool is exhausted. Returns the number of rows. */
static int plan_batch(sched_t *s) {
    for (;;) {
        int budget = s->cfg.max_batch_tokens, ok = 1, all_left = SCHED_ALL_ROWS;
        for (int i = 0; i < s->n_running; i++) {
            seq_t *q = s->running[i];
            q->take = 0;
            q->all_rows = q->p.embed || (q->p.prompt_logprobs && q->n_done < q->n_prompt);
        }
        for (int pass = 0; pass < 2 && ok; pass++) {
            if (pass == 1) { /* prompt chunks: bounded so that the decodes above do not stall */
                int n_decode = s->cfg.max_batch_tokens - budget, cap = prefill_cap(s, n_decode);
                budget = budget < cap ? budget : cap;
            }
            for (int i = 0; i < s->n_running && budget > 0; i++) {
                seq_t *q = s->running[i];
                int want = q->n_tokens - q->n_done;
                if (want <= 0 || (pass == 0) != (want == 1)) continue;
                int take = want < budget ? want : budget;
                if (q->all_rows) { /* bounded by the output rows set aside for them */
                    if (take > all_left) take = all_left;
                    if (take == 0) continue;
                    all_left -= take;
                }
                if (kv_seq_reserve(&s->kv, q->slot, q->n_done + take) != 0) {
                    /* out of blocks: the youngest other sequence gives way */
                    int victim = s->n_running - 1;
                    if (victim == i) victim = i > 0 ? i - 1 : -1;
                    if (victim < 0) /* alone and still too big: cannot happen by sched_submit's check */
                        finish_running(s, i, "error", "the KV cache cannot hold this sequence");
                    else
                        preempt(s, victim);
                    ok = 0;
                    break;
                }
                q->take = take;
                budget -= take;
            }
        }
        if (!ok) {
            if (s->n_running == 0) return 0;
            continue; /* replan with the freed blocks */
        }
        int n = 0;
        for (int i = 0; i < s->n_running; i++) {
            seq_t *q = s->running[i];
            for (int t = 0; t < q->take; t++, n++) {
                s->b_tok[n] = q->tokens[q->n_done + t];
                s->b_pos[n] = q->n_done + t;
                s->b_slot[n] = q->slot;
                s->b_want[n] = q->all_rows || (t == q->take - 1 && q->n_done + q->take == q->n_tokens);
            }
        }
        return n;
    }
}

static void expire(sched_t *s, double now) {
    for (int i = s->n_running - 1; i >= 0; i--) {
        seq_t *q = s->running[i];
        if (q->p.timeout_s > 0 && now - q->t_submit > q->p.timeout_s) finish_running(s, i, "timeout", NULL);
    }
    for (seq_t *q = s->wait_head, *next; q; q = next) {
        next = q->next;
        if (q->p.timeout_s > 0 && now - q->t_submit > q->p.timeout_s) drop_waiting(s, q, "timeout");
    }
}

static void update_gauges(sched_t *s) {
    stats_lock(&s->stats);
    s->stats.d.running = s->n_running;
    int w = 0;
    for (seq_t *q = s->wait_head; q; q = q->next) w++;
    s->stats.d.waiting = w;
    s->stats.d.kv_used = kv_blocks_used(&s->kv);
    s->stats.d.kv_total = s->kv.n_blocks;
    stats_unlock(&s->stats);
}

static void step(sched_t *s) {
    double now = gen_now();
    expire(s, now);
    admit(s, now);
    int n = plan_batch(s);
    update_gauges(s);
    if (n == 0) return;
    char err[256];
    batch_t b = {n, s->b_tok, s->b_pos, s->b_slot, s->b_want};
    int pooling = 0; /* the hidden rows are read back only for steps that pool them */
    for (int i = 0; i < s->n_running; i++) pooling |= s->running[i]->take && s->running[i]->p.embed;
    s->f.hidden = pooling ? s->hidden : NULL;
    double t0 = gen_now();
    if (fwd_run(&s->f, &b, s->logits, err, sizeof err) != 0) {
        while (s->n_running > 0) finish_running(s, 0, "error", err);
        return;
    }
    now = gen_now();
    stepcost_observe(&s->cost, n, now - t0);
    int n_seqs = 0, row = 0;
    uint64_t prompt_rows = 0;
    for (int i = 0; i < s->n_running; i++) {
        seq_t *q = s->running[i];
        if (q->take == 0) continue;
        n_seqs++;
        int prompt_part = q->n_prompt - q->n_done;
        if (prompt_part > 0) prompt_rows += (uint64_t)(prompt_part < q->take ? prompt_part : q->take);
        q->n_done += q->take;
        kv_seq_commit(&s->kv, q->slot, q->tokens, q->n_done);
    }
    stats_lock(&s->stats);
    s->stats.d.steps++;
    s->stats.d.prompt_tokens += prompt_rows;
    hist_observe(&s->stats.d.step_seqs, n_seqs);
    hist_observe(&s->stats.d.step_tokens, n);
    stats_unlock(&s->stats);
    /* sample in batch order; finishing removes entries, so walk by id */
    int m = s->n_running;
    seq_t **order = malloc((size_t)m * sizeof *order);
    if (!order) return;
    memcpy(order, s->running, (size_t)m * sizeof *order);
    size_t nv = (size_t)s->m->hp.n_vocab;
    for (int k = 0; k < m; k++) {
        seq_t *q = order[k];
        if (q->take == 0) continue;
        if (q->all_rows) /* every row has output: pool it or score the prompt token it predicts */
            for (int t = 0; t < q->take; t++, row++) {
                if (q->p.embed) pool_row(s, q, s->hidden + (size_t)row * s->m->hp.dim);
                else prompt_logprob(s, q, q->n_done - q->take + t, s->logits + (size_t)row * nv);
            }
        else if (q->n_done == q->n_tokens)
            row++;
        if (q->n_done != q->n_tokens) continue;
        float *l = s->logits + (size_t)(row - 1) * nv;
        for (int i = 0; i < s->n_running; i++) {
            if (s->running[i] != q) continue;
            if (q->p.embed) finish_embedding(s, i);
            else if (q->p.max_tokens == 0) finish_running(s, i, "length", NULL); /* prompt scoring only */
            else next_token(s, i, l, now);
            break;
        }
    }
    free(order);
    update_gauges(s);
}

/* ---- loop callbacks ------------------------------------------------------------------ */

static void start_drain(sched_t *s);

static int has_work(const sched_t *s) { return s->n_running > 0 || s->wait_head != NULL; }

static void maybe_stop(sched_t *s) {
    if (atomic_load(&s->draining) && !has_work(s)) {
        pthread_mutex_lock(&s->mu);
        int inbox = s->inbox_head != NULL;
        pthread_mutex_unlock(&s->mu);
        if (!inbox) uv_stop(&s->loop);
    }
}

static void on_idle(uv_idle_t *h) {
    sched_t *s = h->data;
    if (has_work(s)) step(s);
    else if (shadow_pending(&s->sh) && !atomic_load(&s->draining)) shadow_step(&s->sh, &s->stats); /* idle time only */
    if (!has_work(s) && (!shadow_pending(&s->sh) || atomic_load(&s->draining))) {
        uv_idle_stop(&s->idle);
        s->idle_on = 0;
    }
    maybe_stop(s);
}

static void kick(sched_t *s) {
    if ((has_work(s) || shadow_pending(&s->sh)) && !s->idle_on) {
        uv_idle_start(&s->idle, on_idle);
        s->idle_on = 1;
    }
}

static void on_wake(uv_async_t *h) {
    sched_t *s = h->data;
    if (atomic_load(&s->drain_req)) start_drain(s);
    take_inbox(s);
    kick(s);
    maybe_stop(s);
}

static void on_tick(uv_timer_t *h) { /* timeouts of requests that wait while idle */
    sched_t *s = h->data;
    expire(s, gen_now());
    update_gauges(s);
    maybe_stop(s);
}

static void on_drain_timeout(uv_timer_t *h) {
    sched_t *s = h->data;
    while (s->n_running > 0) finish_running(s, 0, "cancelled", NULL);
    for (seq_t *q; (q = s->wait_head);) drop_waiting(s, q, "cancelled");
    uv_stop(&s->loop);
}

static void start_drain(sched_t *s) {
    if (s->drain_armed) return;
    s->drain_armed = 1;
    atomic_store(&s->draining, 1);
    uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)(s->cfg.drain_timeout_s * 1000), 0);
    maybe_stop(s);
}

static void on_signal(uv_signal_t *h, int signum) {
    (void)signum;
    start_drain(h->data);
}

static void *loop_main(void *arg) {
    sched_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- public API -------------------------------------------------------------------- */

sched_t *sched_new(model_t *m, const sched_config_t *cfg, char *err, size_t errlen) {
    sched_t *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->m = m;
    s->cfg = *cfg;
    const hparams_t *hp = &m->hp;
    int kv_dim = hp->head_dim * hp->n_head_kv;
    size_t bb = kv_block_bytes(hp->n_layer, kv_dim);
    int n_blocks = (int)(cfg->kv_mem / bb);
    if (n_blocks < 1) {
        snprintf(err, errlen, "--kv-cache-mem holds no KV block (one takes %zu bytes)", bb);
        free(s);
        return NULL;
    }
    int n_max = cfg->max_batch_tokens + cfg->max_seqs;
    stats_init(&s->stats);
    pthread_mutex_init(&s->mu, NULL);
    s->pool = k_pool_new(cfg->threads);
    s->running = calloc((size_t)cfg->max_seqs, sizeof *s->running);
    s->free_slots = malloc((size_t)cfg->max_seqs * sizeof *s->free_slots);
    s->b_tok = malloc((size_t)n_max * sizeof(int32_t));
    s->b_pos = malloc((size_t)n_max * sizeof(int32_t));
    s->b_slot = malloc((size_t)n_max * sizeof(int32_t));
    s->b_want = malloc((size_t)n_max);
    size_t out_rows = (size_t)cfg->max_seqs + SCHED_ALL_ROWS;
    s->logits = malloc(out_rows * hp->n_vocab * sizeof(float));
    s->hidden = malloc(out_rows * hp->dim * sizeof(float));
    if (!s->pool || !s->running || !s->free_slots || !s->b_tok || !s->b_pos || !s->b_slot ||
        !s->b_want || !s->logits || !s->hidden || kv_init(&s->kv, hp->n_layer, kv_dim, n_blocks, cfg->max_seqs) ||
        fwd_init(&s->f, m, &s->kv, s->pool, n_max, cfg->n_ctx)) {
        snprintf(err, errlen, "out of memory for the engine (KV pool of %d blocks)", n_blocks);
        sched_free(s);
        return NULL;
    }
    fwd_pin_logits(&s->f, s->logits, out_rows); /* best effort: faster logits copies on the GPU */
    if (!(s->gv = gvocab_new(m->tok))) {
        snprintf(err, errlen, "out of memory for the grammar token trie");
        sched_free(s);
        return NULL;
    }
    s->f.hook = cfg->act_hook;
    s->f.hook_ud = cfg->act_hook_ud;
    if (cfg->ref && cfg->shadow_rate > 0 &&
        shadow_init(&s->sh, m, cfg->ref, s->pool, cfg->shadow_rate, cfg->act_hook, cfg->act_hook_ud) != 0) {
        snprintf(err, errlen, "out of memory for shadow evaluation");
        sched_free(s);
        return NULL;
    }
    for (int i = 0; i < cfg->max_seqs; i++) s->free_slots[i] = cfg->max_seqs - 1 - i;
    s->n_free_slots = cfg->max_seqs;
    if (uv_loop_init(&s->loop) != 0) {
        snprintf(err, errlen, "cannot create the event loop");
        sched_free(s);
        return NULL;
    }
    s->loop_ready = 1;
    uv_async_init(&s->loop, &s->wake, on_wake);
    uv_idle_init(&s->loop, &s->idle);
    uv_timer_init(&s->loop, &s->tick);
    uv_timer_init(&s->loop, &s->drain_timer);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_init(&s->loop, &s->sigint);
    s->wake.data = s->idle.data = s->tick.data = s->drain_timer.data = s;
    s->sigterm.data = s->sigint.data = s;
    update_gauges(s);
    return s;
}

int sched_start(sched_t *s) {
    uv_timer_start(&s->tick, on_tick, 100, 100);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    if (pthread_create(&s->thread, NULL, loop_main, s) != 0) return -1;
    s->started = 1;
    return 0;
}

void sched_join(sched_t *s) {
    if (s->started) pthread_join(s->thread, NULL);
    s->started = 0;
}

static void close_cb(uv_handle_t *h) { (void)h; }

void sched_free(sched_t *s) {
    if (!s) return;
    if (s->loop_ready) {
        uv_handle_t *hs[] = {(uv_handle_t *)&s->wake, (uv_handle_t *)&s->idle,
                             (uv_handle_t *)&s->tick, (uv_handle_t *)&s->drain_timer,
                             (uv_handle_t *)&s->sigterm, (uv_handle_t *)&s->sigint};
        for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
            if (!uv_is_closing(hs[i])) uv_close(hs[i], close_cb);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    while (s->n_running > 0) {
        seq_t *q = s->running[--s->n_running];
        seq_free(q);
    }
    for (seq_t *q; (q = wait_pop(s));) seq_free(q);
    for (seq_t *q = s->inbox_head, *n; q; q = n) { n = q->next; seq_free(q); }
    fwd_free(&s->f);
    kv_free(&s->kv);
    shadow_free(&s->sh);
    gvocab_free(s->gv);
    k_pool_free(s->pool);
    free(s->running); free(s->free_slots); free(s->b_tok); free(s->b_pos); free(s->b_slot);
    free(s->b_want); free(s->logits); free(s->hidden); free(s->cancels);
    pthread_mutex_destroy(&s->mu);
    stats_destroy(&s->stats);
    free(s);
}

int sched_submit(sched_t *s, const sched_params_t *p, uint64_t *id, char *err, size_t errlen) {
    const char *bad = sample_validate(&p->sp);
    if (bad) { snprintf(err, errlen, "%s", bad); return SCHED_EINVAL; }
    if (p->n_prompt < 1) { snprintf(err, errlen, "the prompt is empty"); return SCHED_EINVAL; }
    if (p->embed ? p->max_tokens != 0 : p->max_tokens < (p->prompt_logprobs ? 0 : 1)) {
        snprintf(err, errlen, p->embed ? "an embedding generates no tokens" : "max_tokens must be at least 1");
        return SCHED_EINVAL;
    }
    if (p->prompt_logprobs && p->n_logprobs < 0) {
        snprintf(err, errlen, "prompt logprobs need n_logprobs >= 0");
        return SCHED_EINVAL;
    }
    if (p->n_bias < 0 || (p->n_bias > 0 && (!p->bias_ids || !p->bias))) {
        snprintf(err, errlen, "a bad logit_bias list");
        return SCHED_EINVAL;
    }
    for (int i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= s->m->hp.n_vocab || !(p->bias[i] >= -100 && p->bias[i] <= 100)) {
            snprintf(err, errlen, "logit_bias: token %d or its bias is out of range", p->bias_ids[i]);
            return SCHED_EINVAL;
        }
    if ((long)p->n_prompt + p->max_tokens > s->cfg.n_ctx) {
        snprintf(err, errlen, "prompt (%d tokens) + max_tokens (%d) exceeds the context of %d tokens",
                 p->n_prompt, p->max_tokens, s->cfg.n_ctx);
        return SCHED_EINVAL;
    }
    int need = (p->n_prompt + p->max_tokens + KV_BLOCK - 1) / KV_BLOCK;
    if (need > s->kv.n_blocks) {
        snprintf(err, errlen, "the request needs %d KV blocks but the cache holds %d (raise --kv-cache-mem)",
                 need, s->kv.n_blocks);
        return SCHED_EINVAL;
    }
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= s->m->hp.n_vocab) {
            snprintf(err, errlen, "token id %d is outside the vocabulary", p->prompt[i]);
            return SCHED_EINVAL;
        }
    if (atomic_load(&s->draining)) { snprintf(err, errlen, "the server is draining"); return SCHED_EDRAIN; }
    seq_t *q = calloc(1, sizeof *q);
    if (!q) goto oom;
    q->p = *p;
    q->p.bias_ids = NULL; /* the copies below, once made */
    q->p.bias = NULL;
    q->p.n_bias = 0;
    q->slot = -1;
    q->plp_next = 1;
    if (p->n_bias > 0) {
        q->bias_ids = malloc((size_t)p->n_bias * sizeof *q->bias_ids);
        q->bias = malloc((size_t)p->n_bias * sizeof *q->bias);
        if (!q->bias_ids || !q->bias) goto oom_q;
        memcpy(q->bias_ids, p->bias_ids, (size_t)p->n_bias * sizeof *q->bias_ids);
        memcpy(q->bias, p->bias, (size_t)p->n_bias * sizeof *q->bias);
        q->p.bias_ids = q->bias_ids;
        q->p.bias = q->bias;
        q->p.n_bias = p->n_bias;
    }
    if (p->embed && !(q->emb = calloc((size_t)s->m->hp.dim, sizeof *q->emb))) goto oom_q;
    q->n_prompt = q->n_tokens = p->n_prompt;
    q->tokens = malloc((size_t)(p->n_prompt + p->max_tokens) * sizeof(int32_t));
    if (!q->tokens || sampler_init(&q->smp, &p->sp, s->m->hp.n_vocab) != 0) goto oom_q;
    if (p->grammar && !(q->gm = gmatch_new(p->grammar, s->gv))) goto oom_q;
    q->p.grammar = NULL; /* the matcher holds the grammar */
    memcpy(q->tokens, p->prompt, (size_t)p->n_prompt * sizeof(int32_t));
    for (int i = 0; i < p->n_prompt; i++) sampler_accept(&q->smp, p->prompt[i]);
    for (int i = 0; i < p->n_stops && i < SCHED_MAX_STOPS; i++)
        if (!(q->stops[i] = strdup(p->stops[i]))) goto oom_q;
    if (stop_init(&q->stop, (const char *const *)q->stops, p->n_stops) != 0) goto oom_q;
    q->t_submit = gen_now();
    pthread_mutex_lock(&s->mu);
    if (s->n_queued >= s->cfg.max_queue) {
        pthread_mutex_unlock(&s->mu);
        seq_free(q);
        snprintf(err, errlen, "the queue is full (%d waiting)", s->cfg.max_queue);
        return SCHED_EFULL;
    }
    q->id = ++s->next_id;
    *id = q->id;
    if (s->inbox_tail) s->inbox_tail->next = q;
    else s->inbox_head = q;
    s->inbox_tail = q;
    s->n_queued++;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->wake);
    return SCHED_OK;
oom_q:
    seq_free(q);
oom:
    snprintf(err, errlen, "out of memory");
    return SCHED_ENOMEM;
}

void sched_cancel(sched_t *s, uint64_t id) {
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        int cap = s->cap_cancels ? s->cap_cancels * 2 : 16;
        uint64_t *c = realloc(s->cancels, (size_t)cap * sizeof *c);
        if (!c) { pthread_mutex_unlock(&s->mu); return; }
        s->cancels = c;
        s->cap_cancels = cap;
    }
    s->cancels[s->n_cancels++] = id;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->wake);
}

void sched_drain(sched_t *s) {
    /* the drain timer belongs to the loop thread: ask, it arms the timer */
    atomic_store(&s->drain_req, 1);
    atomic_store(&s->draining, 1);
    uv_async_send(&s->wake);
}

int sched_draining(const sched_t *s) { return atomic_load(&((sched_t *)s)->draining) != 0; }
stats_t *sched_stats(sched_t *s) { return &s->stats; }
const sched_config_t *sched_config(const sched_t *s) { return &s->cfg; }
