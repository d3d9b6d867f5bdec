/* sched_step.c - one engine step of the scheduler (see sched.h for its
 * order): expire, admit, plan the batch, run the forward pass once for
 * every running sequence, then sample each sequence's token, pool its
 * embedding or report its prompt logprobs. It runs only on the loop thread
 * (sched.c calls it from the idle callback while there is work), so it
 * reads and changes the scheduler's state without taking `mu`, except to
 * change n_queued, which sched_submit reads.
 *
 * Output rows: the forward pass writes logits only for the rows a step
 * asks for (b_want): the last row of each sequence whose tokens this step
 * completes, plus every row of a request that wants them all (embeddings,
 * prompt logprobs), bounded by SCHED_ALL_ROWS so that the logits buffer
 * is sized once, at sched_new. The rows are read back in the order they
 * were packed, so sampling walks the batch in that order even as
 * sequences finish and leave the running set.
 *
 * Sequences end here (a stop, the length, a grammar error, a timeout)
 * through sch_finish_running, which is sched_seq.c's, below this file:
 * the lists and the release of slots and blocks stay in one place
 * (sched_int.h).
 */
#include "sched_int.h"

#include "gen.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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
        sch_finish_running(s, i, "error", "the grammar allows no next token (or is too ambiguous, or out of memory)");
        return 1;
    }
    int32_t id = sampler_next(&q->smp, l);
    float lp = raw ? logprobs(s, raw, id, n_top) : 0.0f;
    free(raw);
    if (q->gm && gmatch_accept_token(q->gm, id) != 0) {
        sch_finish_running(s, i, "error", "the sampled token does not fit the grammar");
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
        sch_finish_running(s, i, "stop", NULL);
        return 1;
    }
    char piece[1024];
    size_t n = tok_stream_push(s->m->tok, &q->ts, id, 0, piece, sizeof piece);
    const char *out = "";
    size_t out_len = 0;
    int hit = stop_feed(&q->stop, piece, n, &out, &out_len);
    if (hit < 0) {
        sch_finish_running(s, i, "error", "out of memory");
        return 1;
    }
    sched_event_t ev = {.type = SCHED_TOKEN, .text = out, .len = out_len, .token = id,
                        .logprob = lp, .n_top = raw || n_top == 0 ? n_top : 0,
                        .top_ids = s->top_ids, .top_logprobs = s->top_lp};
    q->p.sink(q->p.ud, &ev);
    if (hit) {
        sch_finish_running(s, i, "stop", NULL);
        return 1;
    }
    int done = q->gm && gmatch_done(q->gm); /* the grammar is complete: nothing may follow */
    if (done || q->n_gen >= q->p.max_tokens) {
        flush_tail(q);
        sch_finish_running(s, i, done ? "stop" : "length", NULL);
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
    sch_finish_running(s, i, "stop", NULL);
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
    sch_remove_running(s, i);
    sch_release_slot(s, q);
    sch_wait_push_front(s, q);
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
        sch_wait_pop(s);
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
                        sch_finish_running(s, i, "error", "the KV cache cannot hold this sequence");
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

void sch_expire(sched_t *s, double now) {
    for (int i = s->n_running - 1; i >= 0; i--) {
        seq_t *q = s->running[i];
        if (q->p.timeout_s > 0 && now - q->t_submit > q->p.timeout_s) sch_finish_running(s, i, "timeout", NULL);
    }
    for (seq_t *q = s->wait_head, *next; q; q = next) {
        next = q->next;
        if (q->p.timeout_s > 0 && now - q->t_submit > q->p.timeout_s) sch_drop_waiting(s, q, "timeout");
    }
}

void sch_update_gauges(sched_t *s) {
    stats_lock(&s->stats);
    s->stats.d.running = s->n_running;
    int w = 0;
    for (seq_t *q = s->wait_head; q; q = q->next) w++;
    s->stats.d.waiting = w;
    s->stats.d.kv_used = kv_blocks_used(&s->kv);
    s->stats.d.kv_total = s->kv.n_blocks;
    stats_unlock(&s->stats);
}

void sch_step(sched_t *s) {
    double now = gen_now();
    sch_expire(s, now);
    admit(s, now);
    int n = plan_batch(s);
    sch_update_gauges(s);
    if (n == 0) return;
    char err[256];
    batch_t b = {n, s->b_tok, s->b_pos, s->b_slot, s->b_want};
    int pooling = 0; /* the hidden rows are read back only for steps that pool them */
    for (int i = 0; i < s->n_running; i++) pooling |= s->running[i]->take && s->running[i]->p.embed;
    s->f.hidden = pooling ? s->hidden : NULL;
    double t0 = gen_now();
    if (fwd_run(&s->f, &b, s->logits, err, sizeof err) != 0) {
        while (s->n_running > 0) sch_finish_running(s, 0, "error", err);
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
            else if (q->p.max_tokens == 0) sch_finish_running(s, i, "length", NULL); /* prompt scoring only */
            else next_token(s, i, l, now);
            break;
        }
    }
    free(order);
    sch_update_gauges(s);
}
