/* serve.c - `sqserve serve`: model + scheduler + HTTP until drained.
 *
 * Shutdown: SIGTERM/SIGINT reach the scheduler's loop (uv_signal), which
 * flips /health to 503 and refuses new work, lets running and queued
 * sequences finish for up to --drain-timeout, then stops; main then waits
 * for the last bytes of open responses to leave and exits 0.
 */
#include "cli.h"
#include "server.h"

#include "../engine/compute/backend_cuda.h"
#include "../engine/runtime/gen.h"
#include "../engine/compute/act_quant.h"
#include "../engine/model/sqm.h"

#include <libgen.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int fail(const char *msg) {
    fprintf(stderr, "error: %s\n", msg);
    return 1;
}

/* Lifecycle lines: "sqserve: ..." in text mode, one JSON object in json
 * mode, so a JSON log never carries a plain line. */
static void slog(int json, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void slog(int json, const char *event, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!json) {
        fprintf(stderr, "sqserve: %s\n", msg);
        return;
    }
    json_t *j = json_pack("{s:s, s:s}", "event", event, "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text) fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(j);
}

static void model_id_of(const char *path, char *out, size_t n) {
    char *copy = strdup(path);
    const char *base = copy ? basename(copy) : path;
    snprintf(out, n, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
    free(copy);
}

/* Measures the served format against FP32 on text the model writes itself,
 * so the numbers exist without any external data; exported as
 * sqserve_model_eval. */
static void startup_eval(model_t *m, quant_state_t *qs, k_pool_t *pool, const char *path, int tokens,
                         srv_t *srv) {
    cmp_result_t r;
    double t0 = gen_now();
    char err[256];
    if (tokens < 128 || cli_eval_vs_fp32(m, qs, pool, path, tokens, 0, &r, err, sizeof err) != 0) return;
    srv->have_eval = 1;
    srv->eval_ppl = r.q.ppl;
    srv->eval_ppl_ref = r.ref.ppl;
    srv->eval_kl = r.kl;
    srv->eval_top1 = r.top1;
    srv->eval_tokens = r.q.n_pred;
    const char *slash = strrchr(path, '/');
    snprintf(srv->eval_ref, sizeof srv->eval_ref, "%s", slash ? slash + 1 : path);
    fprintf(stderr, "startup eval (%ld self-generated tokens, %.1fs): ppl %.4f vs FP32 %.4f, "
            "KL %.5f, top-1 %.4f\n", r.q.n_pred, gen_now() - t0, r.q.ppl, r.ref.ppl, r.kl, r.top1);
}

/* Every connection holds a socket: make sure --max-connections of them
 * fit under the open-file limit (raising the soft limit as far as the hard
 * one allows), so a full table is refused by sqserve, not by accept(). */
static int raise_fd_limit(rlim_t want, char *err, size_t errlen) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0; /* unknown: leave it */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        rl.rlim_cur = cur;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || cur < want) {
            snprintf(err, errlen, "--max-connections %llu needs %llu open files, but the limit is %llu "
                     "(raise ulimit -n or lower --max-connections)", (unsigned long long)(want - 64),
                     (unsigned long long)want, (unsigned long long)cur);
            return -1;
        }
    }
    return 0;
}

int cmd_serve(const config_t *c) {
    const char *fmt = cfg_str(c, "log-format");
    if (strcmp(fmt, "text") && strcmp(fmt, "json")) return fail("--log-format must be text or json");
    signal(SIGPIPE, SIG_IGN); /* a vanished client must not kill the server */
    k_init();
    static model_t m;
    char err[512];
    err[0] = 0;
    double t0 = gen_now();
    if (model_load(&m, cfg_str(c, "model"), err, sizeof err) != 0) return fail(err);
    int log_json = !strcmp(fmt, "json");
    if (cfg_str(c, "chat-template") && chat_tmpl_override(&m.chat, cfg_str(c, "chat-template"), err, sizeof err))
        err[0] = 0; /* kept in m.chat.error, logged below: chat requests fail, the rest serves */
    if (m.chat.error) slog(log_json, "chat_template", "warning: %s; chat requests will fail", m.chat.error);
    else slog(log_json, "chat_template", "chat template: %s", m.chat.origin);
    char id[256];
    if (cfg_str(c, "model-name")) snprintf(id, sizeof id, "%s", cfg_str(c, "model-name"));
    else model_id_of(cfg_str(c, "model"), id, sizeof id);

    long threads = cfg_int(c, "threads");
    if (threads <= 0) threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;

    /* listen first: while the engine is prepared (quantization and the
     * startup evaluation can take a while) /health answers 503 loading */
    static srv_t srv;
    srv.m = &m;
    srv.model_id = id;
    srv.api_key = cfg_str(c, "api-key");
    srv.max_body = (size_t)cfg_int(c, "max-body");
    srv.request_timeout_s = cfg_float(c, "request-timeout");
    srv.log_json = !strcmp(fmt, "json");
    srv.sp_default = sample_defaults();
    srv.sp_default.temperature = (float)cfg_float(c, "temp");
    srv.sp_default.top_k = (int)cfg_int(c, "top-k");
    srv.sp_default.top_p = (float)cfg_float(c, "top-p");
    srv.sp_default.min_p = (float)cfg_float(c, "min-p");
    srv.default_max_tokens = (int)cfg_int(c, "default-max-tokens");
    srv.max_tokens_limit = (int)cfg_int(c, "max-tokens-limit");
    srv.progress_every = (int)cfg_int(c, "progress-every");
    srv.cors_origin = cfg_str(c, "cors-origin");
    const char *compat = cfg_str(c, "metrics-compat");
    if (compat && strcmp(compat, "vllm")) {
        model_free(&m);
        return fail("--metrics-compat must be vllm");
    }
    srv.metrics_vllm = compat != NULL;
    srv.max_connections = (unsigned)cfg_int(c, "max-connections");
    srv.receive_timeout_s = cfg_float(c, "receive-timeout");
    srv.metrics_need_key = cfg_bool(c, "protect-metrics");
    if (srv.metrics_need_key && !srv.api_key) {
        model_free(&m);
        return fail("--protect-metrics needs --api-key");
    }
    if (raise_fd_limit(srv.max_connections + 64, err, sizeof err) != 0) {
        model_free(&m);
        return fail(err);
    }
    srv.recipe = "gguf";
    int port;
    if (http_start(&srv, cfg_str(c, "host"), (int)cfg_int(c, "port"), &port, err, sizeof err) != 0) {
        model_free(&m);
        return fail(err);
    }
    slog(srv.log_json, "listening", "listening on http://%s:%d, loading %s", cfg_str(c, "host"), port, id);

    /* convert at load time when recipes are given; keep the FP32 model as
     * the reference for the startup evaluation and shadow evaluation */
    static quant_state_t qs;
    static model_t ref;
    int quantized = 0, have_ref = 0;
    char recipe[160] = "gguf";
    k_pool_t *tmp_pool = k_pool_new((int)threads);
    if (!tmp_pool) { http_stop(&srv); model_free(&m); return fail("cannot start threads"); }
    if (cli_quantize(&m, tmp_pool, c, &qs, &quantized, 0) != 0) {
        k_pool_free(tmp_pool);
        http_stop(&srv);
        model_free(&m);
        return 1;
    }
    if (quantized) {
        snprintf(recipe, sizeof recipe, "weights=%s acts=%s", cfg_str(c, "weights"), cfg_str(c, "acts"));
        if (model_load(&ref, cfg_str(c, "model"), err, sizeof err) != 0) {
            k_pool_free(tmp_pool);
            quant_free(&qs);
            http_stop(&srv);
            model_free(&m);
            return fail(err);
        }
        have_ref = 1;
        startup_eval(&m, &qs, tmp_pool, cfg_str(c, "model"), (int)cfg_int(c, "startup-eval"), &srv);
    } else if (m.have_eval) { /* recorded by convert in the .sqm */
        snprintf(recipe, sizeof recipe, "%s", m.recipe);
        srv.have_eval = 1;
        srv.eval_ppl = m.eval[0];
        srv.eval_ppl_ref = m.eval[1];
        srv.eval_kl = m.eval[2];
        srv.eval_top1 = m.eval[3];
        srv.eval_tokens = (long)m.eval[4];
        snprintf(srv.eval_ref, sizeof srv.eval_ref, "%s", m.eval_ref);
    } else if (m.file_map) {
        snprintf(recipe, sizeof recipe, "%s", m.recipe);
    }
    k_pool_free(tmp_pool);
    int n_ctx = (int)cfg_int(c, "ctx");
    int ord; /* the served model moves to the GPU; the FP32 reference stays on the CPU */
    if (dev_parse(cfg_str(c, "device"), &ord, err, sizeof err) != 0) {
        http_stop(&srv);
        if (have_ref) model_free(&ref);
        if (quantized) quant_free(&qs);
        model_free(&m);
        return fail(err);
    }
    /* on the CPU, matrices in GGUF types take the integer kernels, 8-bit
     * block activations (kernels/k_q8.h), as cli_int_acts_wanted decides:
     * all of a GGUF served as stored, the output projection of a recipe's
     * model (whose recipe label stays what the file holds) */
    int want_int = cli_int_acts_wanted(c);
    if (want_int < 0) {
        http_stop(&srv);
        if (have_ref) model_free(&ref);
        if (quantized) quant_free(&qs);
        model_free(&m);
        return 1;
    }
    if (want_int && ord < 0 && model_set_int_acts(&m, 1) > 0 && !quantized && !m.file_map)
        snprintf(recipe, sizeof recipe, "gguf acts=q8-block");
    if (n_ctx <= 0) n_ctx = m.hp.n_ctx_train < 4096 ? m.hp.n_ctx_train : 4096;
    if (n_ctx > m.hp.n_ctx_train) {
        model_free(&m);
        snprintf(err, sizeof err, "--ctx %d exceeds the model's context of %d", n_ctx, m.hp.n_ctx_train);
        return fail(err);
    }
    if (ord >= 0 && model_to_gpu(&m, ord, err, sizeof err) != 0) {
        http_stop(&srv);
        if (have_ref) model_free(&ref);
        if (quantized) quant_free(&qs);
        model_free(&m);
        return fail(err);
    }
    sched_config_t sc = {.max_seqs = (int)cfg_int(c, "max-seqs"), .max_queue = (int)cfg_int(c, "max-queue"),
                         .max_batch_tokens = (int)cfg_int(c, "max-batch-tokens"), .n_ctx = n_ctx,
                         .threads = (int)threads,
                         .kv_mem = (size_t)(cfg_float(c, "kv-cache-mem") * 1024 * 1024),
                         .drain_timeout_s = cfg_float(c, "drain-timeout"),
                         .step_budget_s = cfg_float(c, "step-budget-ms") / 1000.0,
                         .act_hook = (quantized && qs.acts.a.kind != AQ_NONE) || sqm_act_state(&m) ? act_quant_hook : NULL,
                         .act_hook_ud = quantized ? (void *)&qs.acts : (void *)sqm_act_state(&m),
                         .ref = have_ref ? &ref : NULL,
                         .shadow_rate = cfg_float(c, "shadow-rate")};
    sched_t *sched = sched_new(&m, &sc, err, sizeof err);
    if (!sched) {
        http_stop(&srv);
        if (have_ref) model_free(&ref);
        if (quantized) quant_free(&qs);
        model_free(&m);
        return fail(err);
    }
    srv.sched = sched;
    srv.recipe = recipe;
    srv.device = m.dev ? model_gpu_name(&m) : "cpu";
    /* recipes that leave the weights alone report their GGUF bits */
    double gguf_bits = 8.0 * (double)model_weight_bytes(&m) / (double)model_weight_elems(&m);
    double q_bits = quantized ? qs.w_bits : m.w_bits > 0 ? m.w_bits : 32;
    srv.w_bits = q_bits < 32 ? q_bits : gguf_bits;
    if (sched_start(sched) != 0) {
        http_stop(&srv);
        sched_free(sched);
        if (have_ref) model_free(&ref);
        if (quantized) quant_free(&qs);
        model_free(&m);
        return fail("cannot start the engine thread");
    }
    atomic_store_explicit(&srv.ready, 1, memory_order_release);
    stats_data_t d;
    stats_snapshot(sched_stats(sched), &d);
    slog(srv.log_json, "serving", "serving %s (%s, %.2f bits/weight) on http://%s:%d (%d threads, %s kernels, "
            "ctx %d, %d KV blocks of %d tokens, max %d seqs; ready in %.2f s)", id, recipe, srv.w_bits,
            cfg_str(c, "host"), port, (int)threads, m.dev ? model_gpu_name(&m) : k_isa_name(), n_ctx, d.kv_total, KV_BLOCK,
            sc.max_seqs, gen_now() - t0);
    sched_join(sched); /* returns once drained (SIGTERM/SIGINT) */
    for (int i = 0; i < 100; i++) { /* let the last response bytes leave */
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!info || info->num_connections == 0) break;
        usleep(20000);
    }
    http_stop(&srv);
    sched_free(sched);
    if (have_ref) model_free(&ref);
    if (quantized) quant_free(&qs);
    model_free(&m);
    slog(srv.log_json, "exit", "drained, exiting");
    return 0;
}
