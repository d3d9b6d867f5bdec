/* metrics.c - Prometheus text exposition (format 0.0.4).
 *
 * Reads the engine's stats snapshot and the HTTP counters; computes
 * nothing itself beyond the cumulative bucket sums the format wants.
 */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *buf; size_t len, cap; int oom; } out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...) {
    for (;;) {
        if (o->oom) return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        char *nb = realloc(o->buf, cap);
        if (!nb) { o->oom = 1; return; }
        o->buf = nb;
        o->cap = cap;
    }
}

static void counter(out_t *o, const char *name, const char *help, uint64_t v) {
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name, (unsigned long long)v);
}

static void gauge(out_t *o, const char *name, const char *help, double v) {
    put(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void histogram(out_t *o, const char *name, const char *help, const hist_t *h) {
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->count[i];
        put(o, "%s_bucket{le=\"%.17g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n", name,
        (unsigned long long)h->total, name, h->sum, name, (unsigned long long)h->total);
}

/* Label values may hold any byte; escape as the format requires. */
static void label_value(out_t *o, const char *v) {
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') put(o, "\\%c", *v);
        else if (*v == '\n') put(o, "\\n");
        else put(o, "%c", *v);
    }
}

/* --metrics-compat vllm: the same numbers under vLLM's names, labelled
 * model_name, so dashboards and alert rules written for vLLM work. */
static void vgauge(out_t *o, const srv_t *s, const char *name, const char *help, double v) {
    put(o, "# HELP %s %s\n# TYPE %s gauge\n%s{model_name=\"", name, help, name, name);
    label_value(o, s->model_id);
    put(o, "\"} %.17g\n", v);
}

static void vcounter(out_t *o, const srv_t *s, const char *name, const char *help, uint64_t v) {
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s{model_name=\"", name, help, name, name);
    label_value(o, s->model_id);
    put(o, "\"} %llu\n", (unsigned long long)v);
}

static void vhist(out_t *o, const srv_t *s, const char *name, const char *help, const hist_t *h) {
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n; i++) {
        cum += h->count[i];
        put(o, "%s_bucket{model_name=\"", name);
        label_value(o, s->model_id);
        if (i < h->n) put(o, "\",le=\"%.17g\"} %llu\n", h->le[i], (unsigned long long)cum);
        else put(o, "\",le=\"+Inf\"} %llu\n", (unsigned long long)h->total);
    }
    put(o, "%s_sum{model_name=\"", name);
    label_value(o, s->model_id);
    put(o, "\"} %.17g\n%s_count{model_name=\"", h->sum, name);
    label_value(o, s->model_id);
    put(o, "\"} %llu\n", (unsigned long long)h->total);
}

static void vllm_names(out_t *o, const srv_t *s, const stats_data_t *d) {
    vgauge(o, s, "vllm:num_requests_running", "Sequences in the running batch.", d->running);
    vgauge(o, s, "vllm:num_requests_waiting", "Sequences waiting for a slot or KV blocks.", d->waiting);
    vgauge(o, s, "vllm:kv_cache_usage_perc", "KV-cache usage; 1 means 100 percent.",
           d->kv_total ? (double)d->kv_used / d->kv_total : 0);
    vcounter(o, s, "vllm:prompt_tokens_total", "Prompt tokens, prefix-cache hits included.",
             d->prompt_tokens + d->prefix_hit_tokens);
    vcounter(o, s, "vllm:generation_tokens_total", "Tokens generated.", d->gen_tokens);
    vcounter(o, s, "vllm:num_preemptions_total", "Sequences preempted for KV blocks.", d->preemptions);
    vcounter(o, s, "vllm:prefix_cache_hits_total", "Prompt tokens served from the prefix cache.", d->prefix_hit_tokens);
    put(o, "# HELP vllm:request_success_total Sequences that finished, by finish reason.\n"
           "# TYPE vllm:request_success_total counter\n");
    const char *why[2] = {"stop", "length"};
    uint64_t n[2] = {d->finished_stop, d->finished_length};
    for (int i = 0; i < 2; i++) {
        put(o, "vllm:request_success_total{model_name=\"");
        label_value(o, s->model_id);
        put(o, "\",finished_reason=\"%s\"} %llu\n", why[i], (unsigned long long)n[i]);
    }
    vhist(o, s, "vllm:time_to_first_token_seconds", "Time from arrival to the first token.", &d->ttft);
    vhist(o, s, "vllm:time_per_output_token_seconds", "Time between consecutive tokens of a sequence.", &d->itl);
    vhist(o, s, "vllm:inter_token_latency_seconds", "Time between consecutive tokens of a sequence.", &d->itl);
    vhist(o, s, "vllm:e2e_request_latency_seconds", "Time from arrival to the end of a sequence.", &d->e2e);
    vhist(o, s, "vllm:request_queue_time_seconds", "Time from arrival to admission.", &d->queue);
    vhist(o, s, "vllm:request_prompt_tokens", "Prompt length per sequence.", &d->prompt_len);
    vhist(o, s, "vllm:request_generation_tokens", "Generated tokens per sequence.", &d->output_len);
    vhist(o, s, "vllm:iteration_tokens_total", "Tokens per engine step.", &d->step_tokens);
}

reply_t metrics_reply(srv_t *s) {
    stats_data_t d;
    stats_snapshot(sched_stats(s->sched), &d);
    out_t o = {malloc(8192), 0, 8192, 0};
    if (!o.buf) return reply_error(500, "server_error", NULL, "out of memory");

    put(&o, "# HELP sqserve_requests_total HTTP requests by endpoint and status code.\n"
            "# TYPE sqserve_requests_total counter\n");
    pthread_mutex_lock(&s->mu);
    for (int e = 0; e < EP_COUNT; e++)
        for (int k = 100; k < STATUS_CODES; k++)
            if (s->requests[e][k])
                put(&o, "sqserve_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                    reply_endpoint_name(e), k, (unsigned long long)s->requests[e][k]);
    pthread_mutex_unlock(&s->mu);

    counter(&o, "sqserve_prompt_tokens_total", "Prompt tokens computed (prefix-cache hits excluded).", d.prompt_tokens);
    counter(&o, "sqserve_generation_tokens_total", "Tokens generated.", d.gen_tokens);
    counter(&o, "sqserve_preemptions_total", "Sequences preempted for KV blocks (recomputed later).", d.preemptions);
    counter(&o, "sqserve_cancellations_total", "Sequences cancelled (client gone or timeout).", d.cancellations);
    counter(&o, "sqserve_prefix_cache_hit_tokens_total", "Prompt tokens served from shared KV blocks.", d.prefix_hit_tokens);
    counter(&o, "sqserve_engine_steps_total", "Forward passes run by the scheduler.", d.steps);
    gauge(&o, "sqserve_http_connections", "Open HTTP connections.", (double)conns_open(s));
    counter(&o, "sqserve_http_receive_timeouts_total",
            "Connections closed for not sending a whole request within --receive-timeout.",
            conns_receive_timeouts(s));
    gauge(&o, "sqserve_running_sequences", "Sequences in the running batch.", d.running);
    gauge(&o, "sqserve_waiting_sequences", "Sequences waiting for a slot or KV blocks.", d.waiting);
    gauge(&o, "sqserve_kv_blocks_used", "KV cache blocks in use.", d.kv_used);
    gauge(&o, "sqserve_kv_blocks_capacity", "KV cache blocks in the pool.", d.kv_total);
    put(&o, "# HELP sqserve_model_info The served model (value is always 1).\n"
            "# TYPE sqserve_model_info gauge\nsqserve_model_info{model=\"");
    label_value(&o, s->model_id);
    put(&o, "\",recipe=\"");
    label_value(&o, s->recipe ? s->recipe : "gguf");
    put(&o, "\",device=\"");
    label_value(&o, s->device ? s->device : "cpu");
    put(&o, "\",bits_per_weight=\"%.2f\"} 1\n", s->w_bits);
    if (s->have_eval) { /* measured at start against the FP32 path */
        put(&o, "# HELP sqserve_model_eval Evaluation of the served format (at start, or recorded by convert) "
                "against the reference model named in the label (its GGUF weights, FP32 activations) on "
                "self-generated text.\n# TYPE sqserve_model_eval gauge\n");
        const char *names[] = {"ppl", "ppl_fp32", "kl", "top1", "tokens"};
        double vals[] = {s->eval_ppl, s->eval_ppl_ref, s->eval_kl, s->eval_top1, (double)s->eval_tokens};
        for (int i = 0; i < 5; i++) {
            put(&o, "sqserve_model_eval{recipe=\"");
            label_value(&o, s->recipe);
            put(&o, "\",reference=\"");
            label_value(&o, s->eval_ref);
            put(&o, "\",metric=\"%s\"} %.17g\n", names[i], vals[i]);
        }
    }
    counter(&o, "sqserve_shadow_requests_total", "Requests replayed through the FP32 reference.", d.shadow_requests);
    counter(&o, "sqserve_shadow_tokens_total", "Positions compared by shadow evaluation.", d.shadow_tokens);
    gauge(&o, "sqserve_shadow_kl", "Mean KL(FP32 || served) per position over shadow traffic (nats).",
          d.shadow_tokens ? d.shadow_kl_sum / (double)d.shadow_tokens : 0);
    gauge(&o, "sqserve_shadow_top1_agreement", "Fraction of shadow positions where served and FP32 argmax agree.",
          d.shadow_tokens ? d.shadow_top1_sum / (double)d.shadow_tokens : 1);
    histogram(&o, "sqserve_time_to_first_token_seconds", "Time from arrival to the first token.", &d.ttft);
    histogram(&o, "sqserve_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.", &d.itl);
    histogram(&o, "sqserve_e2e_latency_seconds", "Time from arrival to the end of a sequence.", &d.e2e);
    histogram(&o, "sqserve_queue_time_seconds", "Time from arrival to admission.", &d.queue);
    histogram(&o, "sqserve_step_sequences", "Sequences per engine step.", &d.step_seqs);
    histogram(&o, "sqserve_step_tokens", "Tokens per engine step.", &d.step_tokens);
    histogram(&o, "sqserve_prompt_length_tokens", "Prompt length per sequence.", &d.prompt_len);
    histogram(&o, "sqserve_output_length_tokens", "Generated tokens per sequence.", &d.output_len);
    if (s->metrics_vllm) vllm_names(&o, s, &d);
    if (o.oom) {
        free(o.buf);
        return reply_error(500, "server_error", NULL, "out of memory");
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(o.len, o.buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(o.buf);
        return (reply_t){500, NULL};
    }
    MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return (reply_t){200, r};
}
