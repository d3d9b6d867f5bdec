/* sched.c - continuous batching (see sched.h for the step): the loop
 * thread's callbacks, the inbox that carries requests and cancellations
 * into it, and the public API. The step itself (batch planning, the
 * forward pass, sampling) is in sched_step.c, the sequences and their
 * lists (free, DONE, the running set, the waiting FIFO) in sched_seq.c,
 * below both; sched_int.h holds what the three share. This file is the
 * top: it calls the other two, and neither calls it.
 */
#include "sched_int.h"

#include "gen.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- inbox: requests and cancellations from other threads ----------------------- */

static void cancel_id(sched_t *s, uint64_t id, const char *finish) {
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id) {
            sch_finish_running(s, i, finish, NULL);
            return;
        }
    for (seq_t *q = s->wait_head; q; q = q->next)
        if (q->id == id) {
            sch_drop_waiting(s, q, finish);
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
        sch_wait_push_back(s, in);
        in = next;
    }
    for (int i = 0; i < n; i++) cancel_id(s, ids[i], "cancelled");
    if (more) uv_async_send(&s->wake);
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
    if (has_work(s)) sch_step(s);
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
    sch_expire(s, gen_now());
    sch_update_gauges(s);
    maybe_stop(s);
}

static void on_drain_timeout(uv_timer_t *h) {
    sched_t *s = h->data;
    while (s->n_running > 0) sch_finish_running(s, 0, "cancelled", NULL);
    for (seq_t *q; (q = s->wait_head);) sch_drop_waiting(s, q, "cancelled");
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
    sch_update_gauges(s);
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
        sch_seq_free(q);
    }
    for (seq_t *q; (q = sch_wait_pop(s));) sch_seq_free(q);
    for (seq_t *q = s->inbox_head, *n; q; q = n) { n = q->next; sch_seq_free(q); }
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
        sch_seq_free(q);
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
    sch_seq_free(q);
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
