/* gen.c - one sequence: prompt, sample, stream; and perplexity. */
#include "gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double gen_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Feeds ids[0..n) at positions start.. of slot 0, in chunks of the batch
 * size; the last chunk leaves the final row's logits in `logits`. */
static int feed(fwd_t *f, const int32_t *ids, int n, int start, float *logits, char *err,
                size_t errlen) {
    int32_t *pos = malloc((size_t)f->n_max * sizeof *pos);
    int32_t *slot = calloc((size_t)f->n_max, sizeof *slot);
    int rc = -1;
    if (!pos || !slot) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (int done = 0; done < n;) {
        int c = n - done < f->n_max ? n - done : f->n_max;
        for (int i = 0; i < c; i++) pos[i] = start + done + i;
        if (kv_seq_reserve(f->kv, 0, start + done + c) != 0) {
            snprintf(err, errlen, "the KV cache is full");
            goto out;
        }
        batch_t b = {c, ids + done, pos, slot, NULL};
        if (fwd_run(f, &b, logits, err, errlen) != 0) goto out;
        done += c;
    }
    rc = 0;
out:
    free(pos);
    free(slot);
    return rc;
}

int gen_run(fwd_t *f, const int32_t *prompt, int n_prompt, const gen_opts_t *o,
            gen_sink_fn sink, void *ud, gen_stats_t *st, char *err, size_t errlen) {
    const model_t *m = f->m;
    memset(st, 0, sizeof *st);
    st->finish = "length";
    if (n_prompt < 1) {
        snprintf(err, errlen, "the prompt is empty");
        return -1;
    }
    if (n_prompt + o->max_tokens > f->n_ctx) {
        snprintf(err, errlen, "prompt (%d tokens) + max tokens (%d) exceeds the context (%d)",
                 n_prompt, o->max_tokens, f->n_ctx);
        return -1;
    }
    kv_seq_release(f->kv, 0);
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    sampler_t smp;
    stop_t stop;
    tok_stream_t ts = {0};
    char piece[1024];
    int rc = -1, stopped = 0;
    int have_sampler = 0, have_stop = 0;
    if (!logits || sampler_init(&smp, &o->sp, m->hp.n_vocab) != 0) goto oom;
    have_sampler = 1;
    if (stop_init(&stop, o->stops, o->n_stops) != 0) goto oom;
    have_stop = 1;
    for (int i = 0; i < n_prompt; i++) sampler_accept(&smp, prompt[i]);

    double t0 = gen_now();
    if (feed(f, prompt, n_prompt, 0, logits, err, errlen) != 0) goto out;
    st->n_prompt = n_prompt;
    st->t_prompt_s = gen_now() - t0;

    t0 = gen_now();
    for (int pos = n_prompt; st->n_gen < o->max_tokens && !stopped; pos++) {
        int32_t id = sampler_next(&smp, logits);
        st->n_gen++;
        sampler_accept(&smp, id);
        if (!o->ignore_eos && tok_is_eog(m->tok, id)) {
            st->finish = "stop";
            break;
        }
        size_t n = tok_stream_push(m->tok, &ts, id, 0, piece, sizeof piece);
        const char *out;
        size_t out_len;
        int hit = stop_feed(&stop, piece, n, &out, &out_len);
        if (hit < 0) goto oom;
        if (out_len && sink(ud, out, out_len)) { stopped = 1; break; }
        if (hit) {
            st->finish = "stop";
            stopped = 1;
            break;
        }
        if (st->n_gen == o->max_tokens) break;
        if (feed(f, &id, 1, pos, logits, err, errlen) != 0) goto out;
    }
    st->t_gen_s = gen_now() - t0;
    if (!stopped) { /* release what was held back for stop strings */
        size_t n = tok_stream_flush(&ts, piece, sizeof piece);
        const char *out;
        size_t out_len;
        if (stop_feed(&stop, piece, n, &out, &out_len) < 0) goto oom;
        if (out_len) sink(ud, out, out_len);
        stop_flush(&stop, &out, &out_len);
        if (out_len) sink(ud, out, out_len);
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    if (have_sampler) sampler_free(&smp);
    if (have_stop) stop_free(&stop);
    free(logits);
    return rc;
}

/* Buffers for evaluating ctx-token windows: positions 0..ctx-1 of slot 0,
 * logits for every row but the last (it predicts nothing in the window). */
typedef struct { int32_t *pos, *slot; uint8_t *want; } window_t;

static int window_init(window_t *w, int ctx) {
    w->pos = malloc((size_t)ctx * sizeof *w->pos);
    w->slot = calloc((size_t)ctx, sizeof *w->slot);
    w->want = malloc((size_t)ctx);
    if (!w->pos || !w->slot || !w->want) return -1;
    for (int i = 0; i < ctx; i++) w->pos[i] = i, w->want[i] = i < ctx - 1;
    return 0;
}

static void window_free(window_t *w) {
    free(w->pos);
    free(w->slot);
    free(w->want);
}

/* Runs one window from an empty cache. */
static int window_run(fwd_t *f, const window_t *w, const int32_t *win, int ctx, float *logits,
                      char *err, size_t errlen) {
    kv_seq_release(f->kv, 0);
    if (kv_seq_reserve(f->kv, 0, ctx) != 0) {
        snprintf(err, errlen, "the KV cache is too small for a window of %d", ctx);
        return -1;
    }
    batch_t b = {ctx, win, w->pos, w->slot, w->want};
    return fwd_run(f, &b, logits, err, errlen);
}

static double row_lse(const float *l, int nv, int *argmax);

void logits_compare(const float *q, const float *ref, int n_vocab, pos_cmp_t *o) {
    o->lse_q = row_lse(q, n_vocab, &o->argmax_q);
    o->lse_ref = row_lse(ref, n_vocab, &o->argmax_ref);
    double kl = 0;
    for (int j = 0; j < n_vocab; j++) {
        double lpr = ref[j] - o->lse_ref, lpq = q[j] - o->lse_q;
        kl += exp(lpr) * (lpr - lpq);
    }
    o->kl = kl;
}

int eval_ppl(fwd_t *f, const int32_t *ids, long n_ids, int ctx, ppl_result_t *r,
             void (*cb)(void *ud, int window, double nll, long n), void *ud,
             char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (ctx < 2 || ctx > f->n_max || ctx > f->n_ctx) {
        snprintf(err, errlen, "ctx %d must be in [2, %d]", ctx, f->n_max);
        return -1;
    }
    if (n_ids < ctx) {
        snprintf(err, errlen, "%ld tokens are fewer than one window of %d", n_ids, ctx);
        return -1;
    }
    int nv = f->m->hp.n_vocab;
    float *logits = malloc((size_t)ctx * nv * sizeof(float));
    window_t wb;
    int rc = -1;
    if (window_init(&wb, ctx) != 0 || !logits) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    double t0 = gen_now();
    for (long w = 0; (w + 1) * ctx <= n_ids; w++) {
        const int32_t *win = ids + w * ctx;
        if (window_run(f, &wb, win, ctx, logits, err, errlen) != 0) goto out;
        double nll = 0;
        for (int i = 0; i < ctx - 1; i++) {
            int am;
            const float *l = logits + (size_t)i * nv;
            nll += row_lse(l, nv, &am) - l[win[i + 1]];
        }
        r->nll += nll;
        r->n_pred += ctx - 1;
        r->n_windows++;
        if (cb) cb(ud, (int)w, nll, ctx - 1);
    }
    r->ppl = exp(r->nll / (double)r->n_pred);
    r->seconds = gen_now() - t0;
    rc = 0;
out:
    free(logits);
    window_free(&wb);
    return rc;
}

/* log-softmax statistics of one logits row: max and log-sum-exp */
static double row_lse(const float *l, int nv, int *argmax) {
    float mx = l[0];
    int am = 0;
    for (int j = 1; j < nv; j++)
        if (l[j] > mx) mx = l[j], am = j;
    double sum = 0;
    for (int j = 0; j < nv; j++) sum += exp((double)l[j] - mx);
    *argmax = am;
    return mx + log(sum);
}

int eval_compare(fwd_t *fq, fwd_t *fref, const int32_t *ids, long n_ids, int ctx, cmp_result_t *r,
                 void (*cb)(void *ud, int window, const cmp_result_t *sofar), void *ud,
                 char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (ctx < 2 || ctx > fq->n_max || ctx > fref->n_max || ctx > fq->n_ctx || ctx > fref->n_ctx) {
        snprintf(err, errlen, "ctx %d does not fit the forward states", ctx);
        return -1;
    }
    if (n_ids < ctx) {
        snprintf(err, errlen, "%ld tokens are fewer than one window of %d", n_ids, ctx);
        return -1;
    }
    int nv = fq->m->hp.n_vocab;
    float *lq = malloc((size_t)ctx * nv * sizeof(float)), *lr = malloc((size_t)ctx * nv * sizeof(float));
    window_t wb;
    int rc = -1;
    double kl = 0;
    long agree = 0;
    if (window_init(&wb, ctx) != 0 || !lq || !lr) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    double t0 = gen_now();
    for (long w = 0; (w + 1) * ctx <= n_ids; w++) {
        const int32_t *win = ids + w * ctx;
        if (window_run(fq, &wb, win, ctx, lq, err, errlen) != 0 ||
            window_run(fref, &wb, win, ctx, lr, err, errlen) != 0)
            goto out;
        for (int i = 0; i < ctx - 1; i++) {
            const float *a = lq + (size_t)i * nv, *c = lr + (size_t)i * nv;
            pos_cmp_t pc;
            logits_compare(a, c, nv, &pc);
            r->q.nll += pc.lse_q - a[win[i + 1]];
            r->ref.nll += pc.lse_ref - c[win[i + 1]];
            kl += pc.kl;
            agree += pc.argmax_q == pc.argmax_ref;
        }
        r->q.n_pred += ctx - 1;
        r->q.n_windows++;
        r->q.ppl = exp(r->q.nll / (double)r->q.n_pred);
        r->ref.n_pred = r->q.n_pred;
        r->ref.n_windows = r->q.n_windows;
        r->ref.ppl = exp(r->ref.nll / (double)r->ref.n_pred);
        r->kl = kl / (double)r->q.n_pred;
        r->top1 = (double)agree / (double)r->q.n_pred;
        if (cb) cb(ud, (int)w, r);
    }
    r->q.seconds = r->ref.seconds = gen_now() - t0;
    rc = 0;
out:
    free(lq);
    free(lr);
    window_free(&wb);
    return rc;
}
