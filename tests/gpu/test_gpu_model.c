/* test_gpu_model.c - the whole model on the GPU against the CPU and the
 * independent reference (tests/fixtures/generate.json).
 *
 * 1. GGUF path (kc_gguf.cu), FP32 activations: for each fixture prompt,
 *    the prompt as one batch then greedy steps token by token; the greedy
 *    ids must equal the reference's, and the log-softmax of the
 *    reference's top-5 must agree within 2e-3 (the CPU test's bound). First
 *    with the dequantizing GEMV for every row count (the GGUF's own weights,
 *    FP32 activations and sums: the CPU's arithmetic up to summation
 *    order), then with the default split, where prompts of more than
 *    kc_gguf_gemv_max() tokens (4 for SmolLM2's Q4_1) go through the FP16 expansion and cuBLAS:
 *    weights and activations rounded to FP16 (2^-11) move the log-softmax
 *    by up to ~3e-2 and a logit by up to ~0.1 on SmolLM2 (measured on the
 *    H200, docs/perf-gpu.md), so that run's bounds are 6e-2 and 0.2, with
 *    the greedy ids still identical (tests/gpu/run.sh's perplexity check,
 *    0.5 %, is the end-to-end bound for it). The first run keeps prompt
 *    attention on the FP32 tiles, the second on the TF32 tensor cores.
 * 2. SQ path: the same model quantized at load to SQ 8/4 b64 s0.875 (RTN)
 *    with INT8 activations, once on the CPU (integer SQ kernels) and once
 *    on the GPU (SQ kernels); per-position top-1 and log-softmax compared
 *    teacher-forced against a CPU-vs-CPU control (see sq_gpu_vs_cpu for why
 *    not free-running greedy).
 * 3. Batching: a prompt as one batch and token by token, and two
 *    sequences interleaved in one batch, agree on the GPU.
 *
 *   build/gpu/test_gpu_model MODEL [FIXTURES]   (exit 0 when all pass)
 */
#include "../../engine/compute/forward.h"
#include "../../engine/compute/backend_cuda.h"
#include "../../engine/compute/act_quant.h"
#include "../../engine/quant/quant.h"
#include "../../engine/model/recipe.h"
#include "../../kernels/cuda/kc.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

static void result(int ok, const char *fmt, const char *name, double v) {
    printf("%s ", ok ? "PASS" : "FAIL");
    printf(fmt, name, v);
    printf("\n");
    ok ? n_pass++ : n_fail++;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double logsumexp(const float *x, int n) {
    double mx = x[argmax(x, n)], s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

typedef struct {
    model_t *m;
    kv_cache_t kv;
    fwd_t f;
    float *logits;
} runner_t;

static int runner_init(runner_t *r, model_t *m, k_pool_t *pool, int n_ctx, const quant_state_t *qs) {
    memset(r, 0, sizeof *r);
    r->m = m;
    if (kv_init(&r->kv, m->hp.n_layer, m->hp.head_dim * m->hp.n_head_kv, (n_ctx + KV_BLOCK - 1) / KV_BLOCK, 2) ||
        fwd_init(&r->f, m, &r->kv, pool, n_ctx, n_ctx))
        return -1;
    if (qs && qs->acts.a.kind != AQ_NONE) {
        r->f.hook = act_quant_hook;
        r->f.hook_ud = (void *)&qs->acts;
    }
    r->logits = malloc((size_t)n_ctx * m->hp.n_vocab * sizeof(float));
    return r->logits ? 0 : -1;
}

static void runner_free(runner_t *r) {
    fwd_free(&r->f);
    kv_free(&r->kv);
    free(r->logits);
}

/* Greedy from the prompt for n steps; ids[n] out, per-step logits in r->logits rows. */
static int greedy(runner_t *r, const int32_t *prompt, int np, int n, int32_t *ids, int slot) {
    char err[256];
    int nv = r->m->hp.n_vocab;
    kv_seq_release(&r->kv, slot);
    if (kv_seq_reserve(&r->kv, slot, np + n)) return -1;
    int32_t *pos = malloc((size_t)np * 4), *sl = malloc((size_t)np * 4);
    for (int i = 0; i < np; i++) pos[i] = i, sl[i] = slot;
    batch_t b = {np, prompt, pos, sl, NULL};
    int rc = fwd_run(&r->f, &b, r->logits, err, sizeof err);
    for (int s = 0; rc == 0 && s < n; s++) {
        ids[s] = argmax(r->logits + (size_t)s * nv, nv);
        if (s + 1 == n) break;
        int32_t p1 = np + s;
        batch_t one = {1, &ids[s], &p1, &slot, NULL};
        rc = fwd_run(&r->f, &one, r->logits + (size_t)(s + 1) * nv, err, sizeof err);
    }
    if (rc) fprintf(stderr, "forward: %s\n", err);
    free(pos);
    free(sl);
    return rc;
}

static int32_t *ids_of(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int32_t *v = malloc((size_t)*n * 4);
    for (int i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

static void fp32_vs_reference(runner_t *g, json_t *prompts, const char *label, double bound) {
    size_t i;
    json_t *p;
    int nv = g->m->hp.n_vocab, same_all = 1, total = 0, same = 0;
    double worst = 0;
    json_array_foreach(prompts, i, p) {
        int np, ns;
        int32_t *prompt = ids_of(json_object_get(p, "prompt_ids"), &np);
        int32_t *want = ids_of(json_object_get(p, "greedy_ids"), &ns), *got = malloc((size_t)ns * 4);
        if (greedy(g, prompt, np, ns, got, 0)) { n_fail++; return; }
        int agree = 0;
        while (agree < ns && got[agree] == want[agree]) agree++;
        same += agree;
        total += ns;
        same_all &= agree == ns;
        json_t *top5 = json_object_get(p, "top5");
        for (int s = 0; s < agree; s++) { /* the GPU's logits at the reference's steps */
            const float *lg = g->logits + (size_t)s * nv;
            double lse = logsumexp(lg, nv);
            json_t *st = json_array_get(top5, (size_t)s);
            for (size_t t = 0; t < json_array_size(st); t++) {
                json_t *pair = json_array_get(st, t);
                int id = (int)json_integer_value(json_array_get(pair, 0));
                double d = fabs((lg[id] - lse) - json_real_value(json_array_get(pair, 1)));
                worst = d > worst ? d : worst;
            }
        }
        printf("     %-12s greedy ids identical to the reference: %d / %d\n",
               json_string_value(json_object_get(p, "name")), agree, ns);
        free(prompt), free(want), free(got);
    }
    char what[160];
    snprintf(what, sizeof what, "%s: greedy ids vs reference (%d / %d)", label, same, total);
    result(same_all, "%s%.0f", what, 0);
    snprintf(what, sizeof what, "%s: max |delta log-softmax| over reference top-5 (bound %.0e):", label, bound);
    result(worst <= bound, "%s %.2e", what, worst);
}

/* Teacher-forced: the CPU's greedy continuation of each prompt is run as
 * one batch through the CPU and the GPU, with logits at every position.
 * INT8 activation quantization makes the SQ path chaotic under 1-ulp float
 * differences (a code flips when x/sx lands near .5, and the flip travels
 * through 30 layers; SmolLM2's ~24,000 outlier at position 0 amplifies
 * it, docs/accuracy.md): attention that rounds differently in the last bit
 * leaves the CPU's own greedy path within ~10 tokens. So the GPU is held
 * to what such a difference does on the CPU: the same sequences also run
 * on the CPU with every attention output moved by one ulp in a fixed
 * pseudo-random pattern (the control; until the CPU's attention gave the
 * same bits on every ISA, the portable build was this control), and the
 * GPU's disagreement with the CPU (top-1 changes where the CPU's top-2 gap
 * exceeds 0.1 nats; mean |delta log-softmax| of the CPU top-1) may be at
 * most twice the control's, with floors of 1 % and 0.02 nats. */
typedef struct {
    fwd_hook_fn inner;
    void *inner_ud;
} ulp_hook_t;

static void ulp_hook(void *ud, int layer, int site, float *x, long n, long dim) {
    const ulp_hook_t *u = ud;
    if (site == SITE_O) /* the attention outputs: half of them up or down one ulp */
        for (long i = 0; i < n * dim; i++) {
            const uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)layer * 40503u;
            if (h >> 31) x[i] = nextafterf(x[i], h >> 30 & 1 ? INFINITY : -INFINITY);
        }
    if (u->inner) u->inner(u->inner_ud, layer, site, x, n, dim);
}
typedef struct { int n, clear, clear_same, same; double sum, worst; } cmp_t;

static void compare_rows(const float *a, const float *q, int rows, int nv, cmp_t *c) {
    for (int s = 0; s < rows; s++, a += nv, q += nv) {
        int ta = argmax(a, nv), tb = argmax(q, nv), second = ta == 0 ? 1 : 0;
        for (int j = 0; j < nv; j++)
            if (j != ta && a[j] > a[second]) second = j;
        double d = fabs((a[ta] - logsumexp(a, nv)) - (q[ta] - logsumexp(q, nv)));
        c->worst = d > c->worst ? d : c->worst;
        c->sum += d;
        c->n++;
        c->same += ta == tb;
        if (a[ta] - a[second] > 0.1f) {
            c->clear++;
            c->clear_same += ta == tb;
        }
    }
}

static int forced(runner_t *r, const batch_t *b, float *out) {
    char err[256];
    kv_seq_release(&r->kv, 0);
    if (kv_seq_reserve(&r->kv, 0, b->n) || fwd_run(&r->f, b, out, err, sizeof err)) {
        fprintf(stderr, "forward: %s\n", err);
        return -1;
    }
    return 0;
}

static void sq_gpu_vs_cpu(runner_t *c, runner_t *g, json_t *prompts) {
    size_t i;
    json_t *p;
    int nv = c->m->hp.n_vocab;
    cmp_t gpu = {0}, ctl = {0};
    json_array_foreach(prompts, i, p) {
        int np, ns;
        int32_t *prompt = ids_of(json_object_get(p, "prompt_ids"), &np);
        free(ids_of(json_object_get(p, "greedy_ids"), &ns));
        int n = np + ns - 1;
        int32_t *seq = malloc((size_t)(np + ns) * 4), *pos = malloc((size_t)n * 4), *slot = calloc((size_t)n, 4);
        uint8_t *want = malloc((size_t)n);
        float *lc = malloc((size_t)ns * nv * 4), *lg = malloc((size_t)ns * nv * 4), *lp = malloc((size_t)ns * nv * 4);
        memcpy(seq, prompt, (size_t)np * 4);
        for (int t = 0; t < n; t++) pos[t] = t, want[t] = t >= np - 1;
        batch_t b = {n, seq, pos, slot, want};
        int ok = greedy(c, prompt, np, ns, seq + np, 0) == 0 && forced(c, &b, lc) == 0 && forced(g, &b, lg) == 0;
        ulp_hook_t u = {c->f.hook, c->f.hook_ud}; /* the control: attention one ulp off */
        c->f.hook = ulp_hook, c->f.hook_ud = &u;
        ok = ok && forced(c, &b, lp) == 0;
        c->f.hook = u.inner, c->f.hook_ud = u.inner_ud;
        if (!ok) { n_fail++; return; }
        int g0 = gpu.same, c0 = ctl.same;
        compare_rows(lc, lg, ns, nv, &gpu);
        compare_rows(lc, lp, ns, nv, &ctl);
        printf("     %-12s top-1 vs the CPU, teacher-forced: GPU %d / %d, CPU control %d / %d\n",
               json_string_value(json_object_get(p, "name")), gpu.same - g0, ns, ctl.same - c0, ns);
        free(prompt), free(seq), free(pos), free(slot), free(want), free(lc), free(lg), free(lp);
    }
    double gr = 100.0 * (gpu.clear - gpu.clear_same) / gpu.clear, cr = 100.0 * (ctl.clear - ctl.clear_same) / ctl.clear;
    printf("     top-1 agreement, all positions: GPU %.1f%%, control %.1f%% (of %d)\n", 100.0 * gpu.same / gpu.n,
           100.0 * ctl.same / ctl.n, gpu.n);
    printf("     max |delta log-softmax| of the CPU top-1: GPU %.3f, control %.3f\n", gpu.worst, ctl.worst);
    char what[160];
    snprintf(what, sizeof what, "SQ 8/4 A8 top-1 changes where the CPU gap > 0.1: GPU %.2f%%, control %.2f%%", gr, cr);
    result(gr <= fmax(2 * cr, 1.0), "%s (bound max(2 x control, 1%%))%.0f", what, 0);
    snprintf(what, sizeof what, "SQ 8/4 A8 mean |delta log-softmax| of the CPU top-1: GPU %.4f, control %.4f",
             gpu.sum / gpu.n, ctl.sum / ctl.n);
    result(gpu.sum / gpu.n <= fmax(2 * ctl.sum / ctl.n, 0.02), "%s (bound max(2 x control, 0.02))%.0f", what, 0);
}

static void batching(runner_t *g, const char *label, double bound) {
    const int n = 12, nv = g->m->hp.n_vocab;
    int32_t toks[12] = {504, 3575, 282, 4649, 314, 28, 2618, 12835, 1558, 60, 23, 198}, t2[24];
    int32_t pos[24], slot[24];
    uint8_t want[24];
    char err[256];
    float *all = malloc((size_t)n * nv * 4), *one = malloc((size_t)nv * 4);
    kv_seq_release(&g->kv, 0);
    kv_seq_release(&g->kv, 1);
    kv_seq_reserve(&g->kv, 0, 32);
    kv_seq_reserve(&g->kv, 1, 32);
    for (int i = 0; i < n; i++) pos[i] = i, slot[i] = 0, want[i] = 1;
    batch_t b = {n, toks, pos, slot, want};
    double worst = 0;
    int ok = fwd_run(&g->f, &b, all, err, sizeof err) == 0;
    for (int i = 0; ok && i < n; i++) {
        int32_t s1 = 1;
        batch_t b1 = {1, &toks[i], &pos[i], &s1, NULL};
        ok = fwd_run(&g->f, &b1, one, err, sizeof err) == 0;
        for (int j = 0; ok && j < nv; j++) worst = fmax(worst, fabs(one[j] - all[(size_t)i * nv + j]));
    }
    for (int i = 0; i < n; i++) {
        t2[2 * i] = t2[2 * i + 1] = toks[i];
        pos[2 * i] = pos[2 * i + 1] = i;
        slot[2 * i] = 0, slot[2 * i + 1] = 1;
        want[2 * i] = 0, want[2 * i + 1] = i == n - 1;
    }
    batch_t b2 = {2 * n, t2, pos, slot, want};
    ok = ok && fwd_run(&g->f, &b2, one, err, sizeof err) == 0;
    for (int j = 0; ok && j < nv; j++) worst = fmax(worst, fabs(one[j] - all[(size_t)(n - 1) * nv + j]));
    if (!ok) fprintf(stderr, "forward: %s\n", err);
    char what[160];
    snprintf(what, sizeof what, "%s: batch vs token-by-token vs interleaved, max |delta logit| (bound %.0e):", label,
             bound);
    result(ok && worst <= bound, "%s %.2e", what, worst);
    free(all), free(one);
}

static int quantize(model_t *m, quant_state_t *qs) {
    wrecipe_t w;
    arecipe_t a;
    char err[256];
    if (recipe_parse_w("sq:8/4:b64:s0.875", &w, err, sizeof err) ||
        recipe_parse_a("int8", &a, err, sizeof err) ||
        quant_apply(m, NULL, &w, &a, 0, qs, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "quantize: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [FIXTURES]\n", argv[0]);
        return 2;
    }
    const char *fx = argc > 2 ? argv[2] : "tests/fixtures/generate.json";
    char err[512];
    json_error_t je;
    json_t *root = json_load_file(fx, 0, &je);
    if (!root) {
        fprintf(stderr, "%s: %s\n", fx, je.text);
        return 2;
    }
    json_t *prompts = json_object_get(root, "prompts");
    k_init();
    k_pool_t *pool = k_pool_new(8);
    static model_t mg, mc, mq;
    runner_t g, c, q;
    if (model_load(&mg, argv[1], err, sizeof err) || model_to_gpu(&mg, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    printf("device: %s, weights on the GPU: %.1f MB\n", model_gpu_name(&mg), model_gpu_weight_bytes(&mg) / 1e6);
    kc_gguf_set_gemv_max(LONG_MAX);
    kc_attn_set_tensor_cores(0); /* FP32 throughout: prompts' attention on the FP32 tiles too */
    if (runner_init(&g, &mg, pool, 128, NULL)) { fprintf(stderr, "out of memory\n"); return 2; }
    fp32_vs_reference(&g, prompts, "GGUF GPU, GEMV only", 2e-3);
    batching(&g, "GGUF GPU, GEMV only", 2e-3);
    runner_free(&g);
    kc_gguf_set_gemv_max(-1); /* fresh runner: no CUDA graph recorded with the other split */
    kc_attn_set_tensor_cores(-1);
    const char *label = "GGUF GPU, default split (FP16 GEMM beyond the GEMV's rows)";
    if (runner_init(&g, &mg, pool, 128, NULL)) { fprintf(stderr, "out of memory\n"); return 2; }
    fp32_vs_reference(&g, prompts, label, 6e-2);
    batching(&g, label, 0.2);
    runner_free(&g);
    model_free(&mg);

    quant_state_t qc, qg;
    memset(&qc, 0, sizeof qc), memset(&qg, 0, sizeof qg);
    if (model_load(&mc, argv[1], err, sizeof err) || model_load(&mq, argv[1], err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (quantize(&mc, &qc) || quantize(&mq, &qg)) return 2;
    if (model_to_gpu(&mq, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    printf("SQ model on the GPU: %.1f MB of weights\n", model_gpu_weight_bytes(&mq) / 1e6);
    if (runner_init(&c, &mc, pool, 128, &qc) || runner_init(&q, &mq, pool, 128, &qg)) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    sq_gpu_vs_cpu(&c, &q, prompts);
    runner_free(&c), runner_free(&q);
    quant_free(&qc), quant_free(&qg);
    model_free(&mc), model_free(&mq);
    k_pool_free(pool);
    json_decref(root);
    printf("test_gpu_model: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
