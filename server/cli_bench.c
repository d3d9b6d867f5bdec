/* cli_bench.c - `sqserve bench --synthetic NAME --device cuda`: end-to-end
 * speed of a model of a real architecture's shapes (e.g. Llama-3-8B) with
 * random weights (SQ 8/4 b64 s0.875 by default; --synthetic-weights picks
 * the W4A8, W8A8 or FP16 baselines), through the same engine path as a
 * loaded model (fwd_run, paged KV cache), without needing the model file.
 *
 * The model is built by compute/cuda_model.c and timed by runtime/bench.c;
 * this file reads the options and prints the table.
 *
 * Prefill: one sequence of --pp tokens in --batch-row chunks. Decode: B
 * sequences advanced one token per step for --tg steps (from position 0,
 * as llama-bench's tg), for each B of --decode-batches. Every step is timed
 * twice over: with each row's logits copied to the host (what serving
 * does) and with the logits left on the device, so the cost of the copy
 * is visible. The weight bytes a step reads over the device's peak memory
 * bandwidth give the bound a batch-1 step cannot beat.
 */
#include "cli.h"

#include "../engine/compute/act_quant.h"
#include "../engine/compute/backend_cuda.h"
#include "../engine/runtime/bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *why) {
    fprintf(stderr, "error: %s%s%s\n", what, why ? ": " : "", why ? why : "");
    return 1;
}

/* --synthetic-acts: int8 (no hook: the kernels quantize per token) or static
 * SQ activations, whose high channels here are 8 random ones of every 64
 * (s = 0.875) at every site of every layer: the speed of the paper's W4A(SQ)
 * mapping, not an accuracy (random weights have none). 0, 1 = static, -1 bad. */
static int synth_acts(const char *a, const char *w) {
    if (!a || !strcmp(a, "int8")) return 0;
    if (strcmp(a, "sq:8/4:b64:s0.875:static")) return -1;
    return model_synthetic_int_weights(w) ? 1 : -2;
}

static int static_masks(act_quant_t *qs, const hparams_t *hp) {
    memset(qs, 0, sizeof *qs);
    qs->a.kind = AQ_SQ_STATIC;
    qs->a.sq = (sq_cfg_t){8, 4, 64, 0.875};
    qs->n_layer = hp->n_layer;
    const long dims[N_SITES] = {hp->dim, hp->q_dim, hp->dim, hp->ffn_dim};
    uint64_t x = 0x5DEECE66Dull;
    for (int s = 0; s < N_SITES; s++) {
        qs->dim[s] = dims[s];
        if (!(qs->hi_mask[s] = calloc((size_t)hp->n_layer, (size_t)dims[s]))) return -1;
        for (size_t j0 = 0; j0 + 64 <= (size_t)hp->n_layer * (size_t)dims[s]; j0 += 64)
            for (int h = 0; h < 8;) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                uint8_t *c = qs->hi_mask[s] + j0 + x % 64;
                if (!*c) *c = 1, h++;
            }
    }
    return 0;
}

int cli_bench_synthetic(const config_t *c) {
    char err[512];
    int ord, batches[16], n_b = 0, max_b = 1;
    if (dev_parse(cfg_str(c, "device"), &ord, err, sizeof err) != 0) return fail(err, NULL);
    if (ord < 0) return fail("bench --synthetic runs on the GPU", "add --device cuda");
    for (const char *p = cfg_str(c, "decode-batches"); *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1024 || n_b == 16 || (*end && *end != ','))
            return fail("--decode-batches", "expected up to 16 comma-separated sizes in 1..1024");
        batches[n_b++] = (int)v;
        max_b = v > max_b ? (int)v : max_b;
        p = *end ? end + 1 : end;
    }
    int pp = (int)cfg_int(c, "pp"), tg = (int)cfg_int(c, "tg"), reps = (int)cfg_int(c, "reps");
    int chunk = (int)cfg_int(c, "batch"), depth = (int)cfg_int(c, "depth");
    if (tg < 1) return fail("--tg", "bench --synthetic needs at least one decode step");
    const int st = synth_acts(cfg_str(c, "synthetic-acts"), cfg_str(c, "synthetic-weights"));
    if (st == -1) return fail("--synthetic-acts", "int8 or sq:8/4:b64:s0.875:static");
    if (st == -2)
        return fail("--synthetic-acts sq:8/4:b64:s0.875:static",
                    "static SQ activations run on the integer kernels: --synthetic-weights int4:g64 or int8");
    act_quant_t qs;
    memset(&qs, 0, sizeof qs);
    const int f16 = cfg_str(c, "synthetic-weights") && !strcmp(cfg_str(c, "synthetic-weights"), "f16");
    model_t m;
    if (model_synthetic(&m, cfg_str(c, "synthetic"), cfg_str(c, "synthetic-weights"), ord, err, sizeof err) != 0)
        return fail(err, NULL);
    const hparams_t *hp = &m.hp;
    int n_max = chunk > max_b ? chunk : max_b, n_ctx = pp > depth + tg ? pp : depth + tg;
    int seqs_blocks = max_b * ((depth + tg + KV_BLOCK - 1) / KV_BLOCK), pp_blocks = (pp + KV_BLOCK - 1) / KV_BLOCK;
    int n_blocks = seqs_blocks > pp_blocks ? seqs_blocks : pp_blocks;
    k_pool_t *pool = k_pool_new(1);
    kv_cache_t kv;
    fwd_t f;
    float *logits = malloc((size_t)n_max * (size_t)hp->n_vocab * sizeof(float));
    int rc = 1, kv_ok = 0, f_ok = 0;
    if (!pool || !logits) { fail("out of memory", NULL); goto out; }
    if (kv_init(&kv, hp->n_layer, hp->head_dim * hp->n_head_kv, n_blocks, max_b) != 0) {
        fail("out of memory for the KV cache bookkeeping", NULL);
        goto out;
    }
    kv_ok = 1;
    if (fwd_init(&f, &m, &kv, pool, n_max, n_ctx) != 0) {
        fail("out of GPU memory for the forward pass and KV cache", NULL);
        goto out;
    }
    f_ok = 1;
    fwd_pin_logits(&f, logits, (size_t)n_max); /* as the server does (sched.c) */
    if (st == 1) {
        if (static_masks(&qs, hp) != 0) { fail("out of memory for the activation masks", NULL); goto out; }
        f.hook = act_quant_hook, f.hook_ud = &qs;
    }
    double bytes = (double)model_gpu_weight_bytes(&m), bw = model_gpu_bandwidth(&m) * 1e9;
    printf("device: %s (peak %.0f GB/s)\nmodel: %s, %d layers, dim %d, ffn %d, vocab %d\n"
           "weight bytes per step: %.3f GB (%s, lm head included); activations: %s\n"
           "bound at batch 1 (bytes / peak bandwidth): %.1f tokens/s\n",
           model_gpu_name(&m), bw / 1e9, m.name, hp->n_layer, hp->dim, hp->ffn_dim, hp->n_vocab,
           bytes / 1e9, cfg_str(c, "synthetic-weights") ? cfg_str(c, "synthetic-weights") : "sq:8/4:b64:s0.875",
           st ? "static SQ 8/4 b64 s0.875 (random high channels; the lm head INT8)"
           : f16 ? "not quantized (FP32 into the GEMV, FP16 into cuBLAS)"
                 : "INT8 per token",
           bw / bytes);
    double pps;
    if (pp > 0) {
        if (bench_prefill(&f, &kv, pp, reps, logits, &pps, err, sizeof err) != 0) { fail(err, NULL); goto out; }
        printf("prefill pp%d (chunks of %d): %.1f tokens/s\n", pp, f.n_max, pps);
    }
    if (depth > 0) printf("decode at depth %d (each sequence's %d-token prompt run first, untimed)\n", depth, depth);
    printf("| decode batch | tokens/s (logits to host) | tokens/s (logits on GPU) | step ms | "
           "%% of batch-1 bytes bound |\n|---|---|---|---|---|\n");
    for (int i = 0; i < n_b; i++) {
        int B = batches[i];
        double s_host, s_dev;
        if (bench_decode(&f, &kv, B, depth, tg, reps, 1, logits, &s_host, err, sizeof err) != 0 ||
            bench_decode(&f, &kv, B, depth, tg, reps, 0, logits, &s_dev, err, sizeof err) != 0) {
            fail(err, NULL);
            goto out;
        }
        printf("| %d | %.1f | %.1f | %.3f | %.1f |\n", B, B / s_host, B / s_dev, s_dev * 1e3,
               100.0 * (bytes / bw) / s_dev);
    }
    rc = 0;
out:
    if (f_ok) fwd_free(&f);
    if (kv_ok) kv_free(&kv);
    if (pool) k_pool_free(pool);
    free(logits);
    act_quant_release(&qs);
    model_free(&m);
    return rc;
}
