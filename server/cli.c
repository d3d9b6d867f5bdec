/* cli.c - the offline subcommands: generate, eval, inspect, tokenize, bench.
 *
 * Each command loads the model, does one job, and reports errors as a
 * single "error: ..." line on stderr with exit status 1 (usage errors 2).
 *
 * Quantization at load (--weights/--acts), the accuracy check against the
 * FP32 model and convert are in cli_convert.c; bench --synthetic is in
 * cli_bench.c. What the commands here share with cli_convert.c (the
 * runtime a command loads and frees, the error and input helpers) is in
 * cli_rt.c, below both, declared in cli_int.h. This file is the top: it
 * calls cli_convert.c and cli_rt.c, and neither calls it.
 */
#include "cli_int.h"

#include "../engine/compute/backend_cuda.h"
#include "../engine/runtime/gen.h"
#include "../engine/quant/quant.h"
#include "../engine/compute/act_quant.h"
#include "../engine/model/sqm.h"
#include "../kernels/k_q8.h"
#include "../kernels/k_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_GEN_CTX 4096

/* Moves the model to the --device (a no-op for cpu or when already there). */
static int rt_device(rt_t *r, const config_t *c) {
    int ord;
    char err[512];
    if (dev_parse(cfg_str(c, "device"), &ord, err, sizeof err) != 0) return cli_die("%s", err);
    if (ord >= 0 && !r->m.dev && model_to_gpu(&r->m, ord, err, sizeof err) != 0) return cli_die("%s", err);
    return 0;
}

static int rt_compute(rt_t *r, const config_t *c, int n_ctx) {
    const hparams_t *hp = &r->m.hp;
    if (rt_device(r, c)) return 1;
    if (kv_init(&r->kv, hp->n_layer, hp->head_dim * hp->n_head_kv,
                (n_ctx + KV_BLOCK - 1) / KV_BLOCK, 1) != 0)
        return cli_die("out of memory for a %d-token KV cache", n_ctx);
    r->kv_ready = 1;
    int batch = (int)cfg_int(c, "batch");
    if (fwd_init(&r->f, &r->m, &r->kv, r->pool, batch < n_ctx ? batch : n_ctx, n_ctx) != 0)
        return cli_die("out of %s memory for the forward pass", r->m.dev ? "GPU" : "host");
    r->fwd_ready = 1;
    if (r->quantized && r->qs.acts.a.kind != AQ_NONE) {
        r->f.hook = act_quant_hook;
        r->f.hook_ud = &r->qs.acts;
    } else if (sqm_act_state(&r->m)) { /* a .sqm carries its activation recipe */
        r->f.hook = act_quant_hook;
        r->f.hook_ud = sqm_act_state(&r->m);
    }
    return 0;
}

/* What the activations of a GGUF as stored are, for the reports. */
static const char *gguf_acts(const rt_t *r) { return r->int_acts ? "q8-block" : "fp32"; }

static int rt_quantize(rt_t *r, const config_t *c) {
    return cli_quantize(&r->m, r->pool, c, &r->qs, &r->quantized, 0);
}

static int write_all(void *ud, const char *s, size_t n) {
    (void)ud;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    return 0;
}

int cmd_generate(const config_t *c) {
    const char *prompt = cfg_str(c, "prompt");
    if (!prompt) return cli_die("generate needs a prompt (-p TEXT)");
    rt_t r;
    int rc = 1;
    if (cli_rt_open(&r, c)) return 1;
    char *text = NULL;
    int32_t *ids = NULL;
    long n_ids = 0;
    if (rt_quantize(&r, c)) goto out;
    if (cfg_bool(c, "chat")) {
        chat_msg_t msgs[2];
        int n = 0;
        if (cfg_str(c, "system")) msgs[n++] = (chat_msg_t){"system", cfg_str(c, "system")};
        msgs[n++] = (chat_msg_t){"user", prompt};
        char msg[1024];
        if (chat_render(&r.m.chat, msgs, (size_t)n, 1, &text, msg, sizeof msg)) { cli_die("%s", msg); goto out; }
    } else if (!(text = strdup(prompt))) { cli_die("out of memory"); goto out; }
    if (cli_encode(r.m.tok, text, strlen(text), 1, &ids, &n_ids)) goto out;
    int32_t *framed = realloc(ids, (size_t)(n_ids + 2) * sizeof *ids);
    if (!framed) { cli_die("out of memory"); goto out; }
    ids = framed;
    n_ids = tok_frame(r.m.tok, ids, n_ids);
    gen_opts_t o = {.max_tokens = (int)cfg_int(c, "n-predict"), .sp = sample_defaults()};
    o.sp.temperature = (float)cfg_float(c, "temp");
    o.sp.top_k = (int)cfg_int(c, "top-k");
    o.sp.top_p = (float)cfg_float(c, "top-p");
    o.sp.min_p = (float)cfg_float(c, "min-p");
    o.sp.repeat_penalty = (float)cfg_float(c, "repeat-penalty");
    o.sp.presence_penalty = (float)cfg_float(c, "presence-penalty");
    o.sp.frequency_penalty = (float)cfg_float(c, "frequency-penalty");
    o.sp.penalty_last_n = (int)cfg_int(c, "repeat-last-n");
    long seed = cfg_int(c, "seed");
    o.sp.seed = seed >= 0 ? (uint64_t)seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    o.n_stops = cfg_list(c, "stop", &o.stops);
    o.ignore_eos = cfg_bool(c, "ignore-eos");
    const char *bad = sample_validate(&o.sp);
    if (bad) { cli_die("%s", bad); goto out; }
    int n_ctx = (int)cfg_int(c, "ctx");
    if (n_ctx == 0) n_ctx = DEFAULT_GEN_CTX < r.m.hp.n_ctx_train ? DEFAULT_GEN_CTX : r.m.hp.n_ctx_train;
    if (n_ids + o.max_tokens > n_ctx) {
        cli_die("prompt (%ld tokens) + n-predict (%d) exceeds the context of %d (raise --ctx)", n_ids,
            o.max_tokens, n_ctx);
        goto out;
    }
    if (rt_compute(&r, c, n_ctx)) goto out;
    if (cli_rt_int_acts(&r, c)) goto out;
    gen_stats_t st;
    char err[256];
    if (gen_run(&r.f, ids, (int)n_ids, &o, write_all, NULL, &st, err, sizeof err) != 0) {
        cli_die("%s", err);
        goto out;
    }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prompt: %d tokens, %.1f tokens/s | generation: %d tokens, %.1f tokens/s "
            "| %d threads, %s%s%s | finish: %s\n", st.n_prompt,
            st.t_prompt_s > 0 ? st.n_prompt / st.t_prompt_s : 0.0, st.n_gen,
            st.t_gen_s > 0 ? st.n_gen / st.t_gen_s : 0.0, k_pool_size(r.pool), k_isa_name(),
            !r.int_acts ? "" : cli_recipe_out_q8(&r) ? ", output projection on q8-block activations, "
                                                 : ", q8-block activations on ",
            r.int_acts ? k_q8_path() : "", st.finish);
    rc = 0;
out:
    free(text);
    free(ids);
    cli_rt_free(&r);
    return rc;
}

static void print_cmp(void *ud, int w, const cmp_result_t *r) {
    (void)ud;
    fprintf(stderr, "window %d: ppl %.4f (ref %.4f) kl %.5f top1 %.4f\n", w, r->q.ppl, r->ref.ppl,
            r->kl, r->top1);
}

static void print_window(void *ud, int w, double nll, long n) {
    (void)ud;
    fprintf(stderr, "window %d: nll %.4f ppl %.4f\n", w, nll, exp(nll / n));
}

/* What the evaluated model is: its weight and activation recipes and the
 * bits per weight its layer matrices are stored in. */
typedef struct { char weights[96], acts[96], out_acts[16]; double w_bits; } model_desc_t;

static void describe(const rt_t *r, const config_t *c, model_desc_t *d) {
    if (r->m.file_map) { /* a .sqm: what convert stored */
        snprintf(d->weights, sizeof d->weights, "%s", r->m.w_recipe);
        snprintf(d->acts, sizeof d->acts, "%s", r->m.a_recipe);
        d->w_bits = r->m.w_bits;
    } else if (r->quantized) { /* a GGUF quantized at load */
        snprintf(d->weights, sizeof d->weights, "%s", cfg_str(c, "weights"));
        snprintf(d->acts, sizeof d->acts, "%s", cfg_str(c, "acts"));
        d->w_bits = r->qs.w_bits;
    } else { /* a GGUF as stored: FP32 or 8-bit block activations */
        snprintf(d->weights, sizeof d->weights, "gguf");
        snprintf(d->acts, sizeof d->acts, "%s", gguf_acts(r));
        d->w_bits = model_file_bits_total(&r->m);
    }
    /* the output projection: a GGUF type, FP32 or 8-bit block activations */
    snprintf(d->out_acts, sizeof d->out_acts, "%s", gguf_acts(r));
}

/* The reference eval --ref compares with: --ref-model, or the GGUF itself
 * on its FP32 path when -m is a GGUF quantized by --weights/--acts or run
 * on the integer kernels (8-bit block activations). A .sqm has no FP32
 * path of its own, and a GGUF on its FP32 path (--exact-fp32) compared
 * with itself says nothing: both need --ref-model. */
static int open_ref(const rt_t *r, const config_t *c, rt_t *ref) {
    char err[512];
    const char *path = cfg_str(c, "ref-model");
    memset(ref, 0, sizeof *ref);
    if (!path && r->m.file_map)
        return cli_die("eval --ref on a .sqm needs --ref-model ORIGINAL.gguf (the model it was converted from): "
                   "a .sqm has no unquantized path to compare with");
    if (!path && !r->quantized && !r->int_acts)
        return cli_die("eval --ref compares a quantized model with its reference, and this GGUF runs with FP32 "
                   "activations (--exact-fp32, an AVX-512 CPU without --int-acts, or no type with integer "
                   "kernels): give --int-acts, --weights/--acts, or --ref-model FILE");
    if (!path) {
        path = cfg_str(c, "model");
    } else {
        struct stat a, b;
        if (stat(path, &b) == 0 && stat(cfg_str(c, "model"), &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return cli_die("--ref-model %s is the model being evaluated: a model compared with itself says nothing", path);
    }
    if (model_load(&ref->m, path, err, sizeof err) != 0) return cli_die("%s", err);
    ref->loaded = 1;
    if (model_check_same_vocab(&r->m, &ref->m, err, sizeof err) != 0) {
        model_free(&ref->m);
        ref->loaded = 0;
        return cli_die("--ref-model %s cannot be the reference of %s: %s", path, cfg_str(c, "model"), err);
    }
    ref->pool = r->pool; /* shared, not owned */
    return 0;
}

int cmd_eval(const config_t *c) {
    const char *path = cfg_str(c, "ppl");
    if (!path) return cli_die("eval needs --ppl FILE");
    size_t len;
    char *text = cli_read_file(path, &len);
    if (!text) return cli_die("cannot read '%s'", path);
    rt_t r;
    int rc = 1;
    int32_t *ids = NULL;
    long n_ids;
    if (cli_rt_open(&r, c)) { free(text); return 1; }
    double t0 = gen_now();
    if (cli_encode(r.m.tok, text, len, 0, &ids, &n_ids)) goto out;
    double t_tok = gen_now() - t0;
    long max = cfg_int(c, "max-tokens");
    if (max > 0 && n_ids > max) n_ids = max;
    int ctx = (int)cfg_int(c, "ctx");
    if (ctx == 0) ctx = 512;
    if (ctx < 2 || ctx > r.m.hp.n_ctx_train) {
        cli_die("--ctx %d is outside [2, %d] (the model's context)", ctx, r.m.hp.n_ctx_train);
        goto out;
    }
    config_t cc = *c;
    char batch[16];
    snprintf(batch, sizeof batch, "%d", ctx); /* a window is one forward pass */
    for (int i = 0; i < N_OPTIONS; i++)
        if (strcmp(OPTIONS[i].name, "batch") == 0) cc.val[i] = batch;
    if (rt_quantize(&r, c) || rt_compute(&r, &cc, ctx)) goto out;
    if (cli_rt_int_acts(&r, c)) goto out;
    char err[256];
    model_desc_t d;
    describe(&r, c, &d);
    if (cfg_str(c, "ref-model") && !cfg_bool(c, "ref")) {
        cli_die("--ref-model is the reference of eval --ref: add --ref");
        goto out;
    }
    if (cfg_bool(c, "ref")) { /* the same tokens through the reference model */
        rt_t ref;
        if (open_ref(&r, c, &ref) != 0) goto out;
        model_desc_t rd;
        describe(&ref, c, &rd);
        if (!cfg_str(c, "ref-model")) { /* the GGUF itself: its FP32 path */
            snprintf(rd.weights, sizeof rd.weights, "gguf");
            snprintf(rd.acts, sizeof rd.acts, "fp32");
            rd.w_bits = model_file_bits_total(&ref.m);
        }
        cmp_result_t cr;
        int bad = rt_compute(&ref, &cc, ctx) ||
                  eval_compare(&r.f, &ref.f, ids, n_ids, ctx, &cr, print_cmp, NULL, err, sizeof err);
        if (bad && !ref.fwd_ready) { cli_rt_free(&ref); goto out; }
        const char *ref_path = cfg_str(c, "ref-model") ? cfg_str(c, "ref-model") : cfg_str(c, "model");
        cli_rt_free(&ref);
        if (bad) { cli_die("%s", err); goto out; }
        printf("file: %s\ntokens: %ld\nctx: %d\nwindows: %d\npredictions: %ld\nmodel: %s\nweights: %s\n"
               "acts: %s\noutput_acts: %s\nw_bits: %.3f\nref_model: %s\nref_weights: %s\nref_acts: %s\nref_w_bits: %.3f\n"
               "ppl: %.6f\nppl_ref: %.6f\ndelta_ppl_pct: %.4f\nkl: %.6f\ntop1: %.6f\nseconds: %.2f\n",
               path, n_ids, ctx, cr.q.n_windows, cr.q.n_pred, cfg_str(c, "model"), d.weights, d.acts, d.out_acts, d.w_bits,
               ref_path, rd.weights, rd.acts, rd.w_bits, cr.q.ppl, cr.ref.ppl,
               100.0 * (cr.q.ppl - cr.ref.ppl) / cr.ref.ppl, cr.kl, cr.top1, cr.q.seconds);
        rc = 0;
        goto out;
    }
    ppl_result_t pr;
    if (eval_ppl(&r.f, ids, n_ids, ctx, &pr, print_window, NULL, err, sizeof err) != 0) {
        cli_die("%s", err);
        goto out;
    }
    printf("file: %s\ntokens: %ld (tokenized in %.2f s)\nctx: %d\nwindows: %d\npredictions: %ld\n"
           "model: %s\nweights: %s\nacts: %s\noutput_acts: %s\nw_bits: %.3f\nnll: %.6f\nppl: %.6f\nseconds: %.2f\ntokens_per_s: %.1f\n",
           path, n_ids, t_tok, ctx, pr.n_windows, pr.n_pred, cfg_str(c, "model"), d.weights, d.acts, d.out_acts, d.w_bits,
           pr.nll, pr.ppl, pr.seconds,
           pr.n_windows * (double)ctx / pr.seconds);
    rc = 0;
out:
    free(text);
    free(ids);
    cli_rt_free(&r);
    return rc;
}

int cmd_inspect(const config_t *c) {
    rt_t r;
    if (cli_rt_open(&r, c)) return 1;
    const hparams_t *hp = &r.m.hp;
    const gguf_t *g = &r.m.gguf;
    printf("name: %s\ngguf_version: %u\ntensors: %llu\nmetadata: %llu\n", r.m.name, g->version,
           (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv);
    printf("architecture: %s\nqkv_bias: %s\nqk_norm: %s\nrope: %s\nsliding_window: %d\nq_dim: %d\n",
           hp->arch->name, hp->arch->qkv_bias ? "yes" : "no", hp->arch->qk_norm ? "yes" : "no",
           hp->arch->rope_style == ROPE_NEOX ? "neox" : "norm", hp->n_swa, hp->q_dim);
    printf("n_layer: %d\ndim: %d\nn_head: %d\nn_head_kv: %d\nhead_dim: %d\nffn_dim: %d\n"
           "n_vocab: %d\nn_ctx_train: %d\nrope_dim: %d\nrope_base: %g\nrms_eps: %g\n",
           hp->n_layer, hp->dim, hp->n_head, hp->n_head_kv, hp->head_dim, hp->ffn_dim, hp->n_vocab,
           hp->n_ctx_train, hp->rope_dim, hp->rope_base, hp->rms_eps);
    printf("tied_output: %s\nweight_bytes: %zu\nchat_template: %s\nbos: %d\neos: %d\n",
           r.m.output.data == r.m.tok_embd.data ? "yes" : "no", model_weight_bytes(&r.m),
           r.m.chat.origin, tok_bos(r.m.tok), tok_eos(r.m.tok));
    if (r.m.chat.error) printf("chat_template_error: %s\n", r.m.chat.error);
    if (r.m.file_map) {
        printf("recipe: weights=%s acts=%s\nstated_bits_per_weight: %.3f\n", r.m.w_recipe, r.m.a_recipe, r.m.w_bits);
        if (r.m.have_eval)
            printf("eval: ppl %.4f, reference ppl %.4f, kl %.5f, top1 %.4f on %.0f self-generated tokens; "
                   "reference %s (GGUF weights, FP32 activations)\n",
                   r.m.eval[0], r.m.eval[1], r.m.eval[2], r.m.eval[3], r.m.eval[4], r.m.eval_ref);
        else
            printf("eval: none (no accuracy check was run when this file was converted)\n");
    }
    /* what every layer matrix takes in the file (codes, positions and
     * scales), then each part (the same matrix over all layers) */
    double part_bytes[7] = {0}, part_elems[7] = {0};
    char part[7][48];
    for (int l = 0; l < hp->n_layer; l++)
        for (int i = 0; i < 7; i++) {
            char name[48];
            const k_mat_t *w = model_layer_mat(&r.m, l, i, name, sizeof name);
            printf("tensor: %s %ldx%ld %zu bytes %.3f bits/weight\n", name, w->n, w->k, r.m.file_bytes[l * 7 + i],
                   model_file_bits(&r.m, l, i));
            part_bytes[i] += (double)r.m.file_bytes[l * 7 + i];
            part_elems[i] += (double)w->n * (double)w->k;
            if (l == 0) { /* "blk.0.attn_q.weight" -> "attn_q" */
                const char *p = strchr(name, '.') ? strchr(strchr(name, '.') + 1, '.') : NULL;
                snprintf(part[i], sizeof part[i], "%s", p ? p + 1 : name);
                char *dot = strrchr(part[i], '.');
                if (dot && !strcmp(dot, ".weight")) *dot = 0;
            }
        }
    for (int i = 0; hp->n_layer > 0 && i < 7; i++)
        printf("part_bits_per_weight: %s %.3f (%d matrices, %.0f bytes)\n", part[i],
               8.0 * part_bytes[i] / part_elems[i], hp->n_layer, part_bytes[i]);
    printf("layer_bits_per_weight: %.3f\n", model_file_bits_total(&r.m));
    if (!r.m.file_map) { /* which matrices the integer kernels (k_q8.h) take, unless --exact-fp32 */
        int count[K_TYPE_MAX] = {0}, n = 1, q8 = k_q8_supports(r.m.output.type, r.m.output.k);
        count[r.m.output.type]++;
        for (int l = 0; l < hp->n_layer; l++)
            for (int i = 0; i < 7; i++, n++) {
                const k_mat_t *w = model_layer_mat(&r.m, l, i, NULL, 0);
                count[w->type]++;
                q8 += k_q8_supports(w->type, w->k);
            }
        printf("matmul_types:");
        for (int t = 0; t < K_TYPE_MAX; t++)
            if (count[t]) printf(" %s x%d", k_type_info((uint32_t)t) ? k_type_info((uint32_t)t)->name : "?", count[t]);
        printf("\ninteger_kernels: %d of %d matrices (8-bit block activations; the rest FP32)\n", q8, n);
    }
    cli_rt_free(&r);
    return 0;
}

int cmd_tokenize(const config_t *c) {
    const char *p = cfg_str(c, "prompt");
    size_t len = 0;
    char *text = NULL;
    if (p) {
        text = strdup(p);
        len = text ? strlen(text) : 0;
    } else {
        text = cli_read_file("/dev/stdin", &len);
    }
    if (!text) return cli_die("cannot read the input");
    rt_t r;
    if (cli_rt_open(&r, c)) { free(text); return 1; }
    int32_t *ids;
    long n;
    int rc = 1;
    if (cli_encode(r.m.tok, text, len, !cfg_bool(c, "no-special"), &ids, &n) == 0) {
        printf("[");
        for (long i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
        printf("]\n");
        free(ids);
        rc = 0;
    }
    free(text);
    cli_rt_free(&r);
    return rc;
}

/* llama-bench style: pp = one prompt of N tokens, tg = N single-token
 * steps; median of reps; fixed token ids so runs are comparable. */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_bench(const config_t *c) {
    if (cfg_str(c, "synthetic")) return cli_bench_synthetic(c);
    if (cfg_int(c, "depth") != 0) {
        cli_die("--depth applies to bench --synthetic; with a model, decode starts after the --pp prompt");
        return 1;
    }
    if (cfg_str(c, "synthetic-weights") || cfg_str(c, "synthetic-acts")) {
        cli_die("--synthetic-weights and --synthetic-acts apply to bench --synthetic; a model's are the file's "
                "(or --weights, --acts)");
        return 1;
    }
    rt_t r;
    int pp = (int)cfg_int(c, "pp"), tg = (int)cfg_int(c, "tg"), reps = (int)cfg_int(c, "reps");
    if (cli_rt_open(&r, c)) return 1;
    int rc = 1, n_ctx = pp + tg + 1;
    int32_t *ids = malloc((size_t)(pp + tg + 1) * sizeof *ids);
    float *logits = malloc((size_t)r.m.hp.n_vocab * sizeof(float));
    double *t = malloc((size_t)reps * 2 * sizeof(double));
    if (!ids || !logits || !t) { cli_die("out of memory"); goto out; }
    if (rt_compute(&r, c, n_ctx)) goto out;
    if (cli_rt_int_acts(&r, c)) goto out;
    for (int i = 0; i < pp + tg + 1; i++) ids[i] = (int32_t)((i * 7919 + 13) % r.m.hp.n_vocab);
    char err[256];
    for (int rep = 0; rep < reps; rep++) {
        int32_t slot0 = 0;
        kv_seq_release(&r.kv, 0);
        if (kv_seq_reserve(&r.kv, 0, n_ctx) != 0) { cli_die("KV cache too small"); goto out; }
        double t0 = gen_now();
        for (int done = 0; done < pp;) { /* prompt in batch-size chunks */
            int n = pp - done < r.f.n_max ? pp - done : r.f.n_max;
            int32_t pos[8192], slot[8192] = {0};
            for (int i = 0; i < n; i++) pos[i] = done + i;
            batch_t b = {n, ids + done, pos, slot, NULL};
            if (fwd_run(&r.f, &b, logits, err, sizeof err)) { cli_die("%s", err); goto out; }
            done += n;
        }
        t[2 * rep] = pp ? pp / (gen_now() - t0) : 0;
        t0 = gen_now();
        for (int i = 0; i < tg; i++) {
            int32_t pos = i; /* decode from position 0 so contexts match llama-bench's tg */
            batch_t b = {1, ids + pp + i, &pos, &slot0, NULL};
            if (fwd_run(&r.f, &b, logits, err, sizeof err)) { cli_die("%s", err); goto out; }
        }
        t[2 * rep + 1] = tg ? tg / (gen_now() - t0) : 0;
    }
    double pps[1000], tgs[1000];
    for (int i = 0; i < reps; i++) pps[i] = t[2 * i], tgs[i] = t[2 * i + 1];
    qsort(pps, (size_t)reps, sizeof(double), cmp_double);
    qsort(tgs, (size_t)reps, sizeof(double), cmp_double);
    printf("threads=%d isa=%s%s%s acts=%s%s pp%d=%.1f tg%d=%.1f (tokens/s, median of %d)\n", k_pool_size(r.pool),
           r.m.dev ? model_gpu_name(&r.m) : k_isa_name(), r.int_acts ? "+" : "", r.int_acts ? k_q8_path() : "",
           r.m.file_map ? r.m.a_recipe : r.int_acts ? "q8-block" : "fp32",
           cli_recipe_out_q8(&r) ? " output=q8-block" : "", pp, pps[reps / 2], tg, tgs[reps / 2], reps);
    rc = 0;
out:
    free(ids);
    free(logits);
    free(t);
    cli_rt_free(&r);
    return rc;
}
