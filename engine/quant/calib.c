/* calib.c - calibration: statistics of every matmul input site (quant.h,
 * calib.h).
 *
 * Two ways to gather them. calib_run makes one pass of the FP32 model
 * over the calibration tokens and keeps, for every site of every layer,
 * the channel sums and maxima (and, on request, H = sum x x^T for the
 * old one-shot GPTQ); it also keeps the tokens. calib_layer makes the
 * sequential pass that GPTQ proper needs: the model as quantized so far
 * (layers 0..l-1 already replaced, their activation quantizer applied)
 * runs up to layer l only, and layer l's inputs give its H, sums, maxima
 * and a sample of rows (for SmoothQuant's alpha). Truncating the model
 * (hp.n_layer = l + 1 for the pass) keeps the forward pass unchanged; the
 * price is (L + 1) / 2 model passes over the calibration tokens in all,
 * against one for the one-shot Hessians. Within a layer the four sites
 * are gathered in the same pass, from the layer's unquantized weights
 * (GPTQ's "true sequential" order inside a layer is not done).
 */
#include "calib.h"

#include "../compute/act_quant.h"
#include "../runtime/sample.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- whole-model statistics (one pass over the FP32 model) ---------------------------- */

typedef struct { calib_t *c; int want_H; } calib_ctx_t;

static void calib_hook(void *ud, int layer, int site, float *x, long n, long dim) {
    calib_ctx_t *cc = ud;
    calib_t *c = cc->c;
    double *sum = c->sum[site] + (size_t)layer * dim;
    float *amax = c->amax[site] + (size_t)layer * dim;
    for (long i = 0; i < n; i++)
        for (long j = 0; j < dim; j++) {
            float v = x[i * dim + j];
            sum[j] += v;
            amax[j] = fabsf(v) > amax[j] ? fabsf(v) : amax[j];
        }
    if (cc->want_H) /* H += x^T x over the batch rows (upper triangle) */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)dim, (int)n, 1.0f, x, (int)dim, 1.0f,
                    c->H[site] + (size_t)layer * dim * dim, (int)dim);
}

void calib_free(calib_t *c) {
    for (int s = 0; s < N_SITES; s++) {
        free(c->H[s]);
        free(c->sum[s]);
        free(c->amax[s]);
    }
    free(c->ids);
    memset(c, 0, sizeof *c);
}

/* One forward "environment" for a single sequence of up to n_ctx tokens. */
typedef struct { kv_cache_t kv; fwd_t f; int ok_kv, ok_f; } env_t;

static int env_open(env_t *e, const model_t *m, k_pool_t *pool, int n_ctx) {
    memset(e, 0, sizeof *e);
    const hparams_t *hp = &m->hp;
    if (kv_init(&e->kv, hp->n_layer, hp->head_dim * hp->n_head_kv, (n_ctx + KV_BLOCK - 1) / KV_BLOCK, 1))
        return -1;
    e->ok_kv = 1;
    if (fwd_init(&e->f, m, &e->kv, pool, n_ctx, n_ctx)) return -1;
    e->ok_f = 1;
    return 0;
}

static void env_close(env_t *e) {
    if (e->ok_f) fwd_free(&e->f);
    if (e->ok_kv) kv_free(&e->kv);
}

int calib_run(const model_t *m, k_pool_t *pool, const int32_t *ids, long n_ids, int window,
              int want_H, calib_t *c, quant_progress_fn progress, void *ud, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    const hparams_t *hp = &m->hp;
    c->n_layer = hp->n_layer;
    c->pool = pool;
    c->window = window;
    c->n_ids = n_ids;
    if (!(c->ids = malloc((size_t)n_ids * sizeof *c->ids))) goto oom;
    memcpy(c->ids, ids, (size_t)n_ids * sizeof *ids);
    long dims[N_SITES] = {hp->dim, hp->q_dim, hp->dim, hp->ffn_dim};
    for (int s = 0; s < N_SITES; s++) {
        c->dim[s] = dims[s];
        c->sum[s] = calloc((size_t)(hp->n_layer * dims[s]), sizeof(double));
        c->amax[s] = calloc((size_t)(hp->n_layer * dims[s]), sizeof(float));
        if (want_H) c->H[s] = calloc((size_t)hp->n_layer * dims[s] * dims[s], sizeof(float));
        if (!c->sum[s] || !c->amax[s] || (want_H && !c->H[s])) goto oom;
    }
    env_t e;
    if (env_open(&e, m, pool, window) != 0) {
        env_close(&e);
        goto oom;
    }
    calib_ctx_t cc = {c, want_H};
    e.f.hook = calib_hook;
    e.f.hook_ud = &cc;
    int32_t *pos = malloc((size_t)window * sizeof *pos), *slot = calloc((size_t)window, sizeof *slot);
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int rc = -1;
    if (!pos || !slot || !logits) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (long w0 = 0; w0 < n_ids; w0 += window) {
        int n = n_ids - w0 < window ? (int)(n_ids - w0) : window;
        for (int i = 0; i < n; i++) pos[i] = i;
        kv_seq_release(&e.kv, 0);
        if (kv_seq_reserve(&e.kv, 0, n) != 0) { snprintf(err, errlen, "KV reserve failed"); goto out; }
        batch_t b = {n, ids + w0, pos, slot, NULL};
        if (fwd_run(&e.f, &b, logits, err, errlen) != 0) goto out;
        c->n_tokens += n;
        if (progress) progress(ud, (int)((w0 + n + window - 1) / window), (int)((n_ids + window - 1) / window));
    }
    for (int s = 0; s < N_SITES && want_H; s++) /* mirror the upper triangles */
        for (int l = 0; l < c->n_layer; l++) {
            float *H = c->H[s] + (size_t)l * c->dim[s] * c->dim[s];
            for (long i = 0; i < c->dim[s]; i++)
                for (long j = 0; j < i; j++) H[i * c->dim[s] + j] = H[j * c->dim[s] + i];
        }
    rc = 0;
out:
    free(pos);
    free(slot);
    free(logits);
    env_close(&e);
    if (rc) calib_free(c);
    return rc;
oom:
    calib_free(c);
    snprintf(err, errlen, "out of memory for calibration statistics");
    return -1;
}

int calib_self_text(const model_t *m, k_pool_t *pool, int n_seqs, int len, int32_t **out,
                    long *n_out, quant_progress_fn progress, void *ud, char *err, size_t errlen) {
    static const char *seeds[] = {"The", "In", "Once upon a time", "Scientists", "The history of",
                                  "def ", "Today", "A recipe for", "The city", "Dear",
                                  "In mathematics,", "The weather", "My favourite", "Water", "When",
                                  "Research shows"};
    int n_seeds = (int)(sizeof seeds / sizeof seeds[0]);
    int nv = m->hp.n_vocab;
    *out = malloc((size_t)n_seqs * len * sizeof(int32_t));
    float *logits = malloc((size_t)nv * sizeof(float));
    env_t e;
    int rc = -1;
    *n_out = 0;
    if (!*out || !logits || env_open(&e, m, pool, len) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    sample_params_t sp = sample_defaults();
    sp.temperature = 0.8f;
    sp.top_k = 0;
    sp.top_p = 0.95f;
    sp.min_p = 0;
    for (int q = 0; q < n_seqs; q++) {
        int32_t *seq = *out + *n_out, n = 0;
        const char *seed = seeds[q % n_seeds];
        long k = tok_encode(m->tok, seed, strlen(seed), 0, seq, (size_t)len);
        if (k < 1 || k >= len) continue;
        n = (int32_t)k;
        sampler_t smp;
        sp.seed = 1000 + (uint64_t)q;
        if (sampler_init(&smp, &sp, nv) != 0) goto out;
        kv_seq_release(&e.kv, 0);
        int ok = kv_seq_reserve(&e.kv, 0, len) == 0;
        int32_t pos[4096], slot[4096] = {0};
        for (int i = 0; i < n; i++) pos[i] = i;
        batch_t b = {n, seq, pos, slot, NULL};
        ok = ok && fwd_run(&e.f, &b, logits, err, errlen) == 0;
        while (ok && n < len) {
            int32_t id = sampler_next(&smp, logits);
            sampler_accept(&smp, id);
            seq[n] = id;
            int32_t p = n++;
            batch_t one = {1, &seq[p], &p, slot, NULL};
            if (n < len) ok = fwd_run(&e.f, &one, logits, err, errlen) == 0;
        }
        sampler_free(&smp);
        if (!ok) goto out;
        *n_out += n;
        if (progress) progress(ud, q + 1, n_seqs);
    }
    rc = 0;
out:
    free(logits);
    env_close(&e);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- one layer, through the layers already quantized ----------------------------------- */

typedef struct {
    layer_stats_t *ls;
    int layer;
    const act_quant_t *acts; /* the quantizer of layers < layer, or NULL */
    long stride, seen[N_SITES];
} layer_ctx_t;

static void layer_hook(void *ud, int layer, int site, float *x, long n, long dim) {
    layer_ctx_t *lc = ud;
    layer_stats_t *ls = lc->ls;
    if (layer < lc->layer) { /* the deployed path: activations quantized as they will be */
        if (lc->acts) act_quant_hook((void *)lc->acts, layer, site, x, n, dim);
        return;
    }
    if (layer != lc->layer) return;
    double *sum = ls->sum[site];
    float *amax = ls->amax[site];
    for (long i = 0; i < n; i++) {
        const float *r = x + i * dim;
        for (long j = 0; j < dim; j++) {
            sum[j] += r[j];
            amax[j] = fabsf(r[j]) > amax[j] ? fabsf(r[j]) : amax[j];
        }
        long t = lc->seen[site]++;
        if (ls->X[site] && t % lc->stride == 0 && ls->n_x[site] < ls->max_x)
            memcpy(ls->X[site] + (size_t)ls->n_x[site]++ * dim, r, (size_t)dim * sizeof *r);
    }
    if (ls->Hf[site])
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)dim, (int)n, 1.0f, x, (int)dim, 1.0f,
                    ls->Hf[site], (int)dim);
}

void layer_stats_free(layer_stats_t *ls) {
    for (int s = 0; s < N_SITES; s++) {
        free(ls->Hf[s]);
        free(ls->sum[s]);
        free(ls->amax[s]);
        free(ls->X[s]);
    }
    memset(ls, 0, sizeof *ls);
}

int calib_layer(model_t *m, const calib_t *c, int layer, const act_quant_t *acts, int want_H, int max_x,
                layer_stats_t *ls, char *err, size_t errlen) {
    memset(ls, 0, sizeof *ls);
    const hparams_t *hp = &m->hp;
    if (!c->ids) {
        snprintf(err, errlen, "sequential calibration needs the calibration tokens");
        return -1;
    }
    long dims[N_SITES] = {hp->dim, hp->q_dim, hp->dim, hp->ffn_dim};
    ls->max_x = max_x;
    for (int s = 0; s < N_SITES; s++) {
        ls->dim[s] = dims[s];
        ls->sum[s] = calloc((size_t)dims[s], sizeof(double));
        ls->amax[s] = calloc((size_t)dims[s], sizeof(float));
        if (want_H) ls->Hf[s] = calloc((size_t)(dims[s] * dims[s]), sizeof(float));
        if (max_x) ls->X[s] = malloc((size_t)max_x * dims[s] * sizeof(float));
        if (!ls->sum[s] || !ls->amax[s] || (want_H && !ls->Hf[s]) || (max_x && !ls->X[s])) {
            layer_stats_free(ls);
            snprintf(err, errlen, "out of memory for layer %d's calibration statistics", layer);
            return -1;
        }
    }
    int window = c->window;
    env_t e;
    int32_t *pos = malloc((size_t)window * sizeof *pos), *slot = calloc((size_t)window, sizeof *slot);
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int rc = -1, n_layer = hp->n_layer;
    if (!pos || !slot || !logits || env_open(&e, m, c->pool, window) != 0) {
        if (pos && slot && logits) env_close(&e);
        snprintf(err, errlen, "out of memory");
        goto out_nopass;
    }
    layer_ctx_t lc = {ls, layer, acts && acts->a.kind != AQ_NONE ? acts : NULL,
                      max_x ? (c->n_ids + max_x - 1) / max_x : 1, {0}};
    if (lc.stride < 1) lc.stride = 1;
    e.f.hook = layer_hook;
    e.f.hook_ud = &lc;
    m->hp.n_layer = layer + 1; /* the pass stops after the layer it gathers */
    for (long w0 = 0; w0 < c->n_ids; w0 += window) {
        int n = c->n_ids - w0 < window ? (int)(c->n_ids - w0) : window;
        for (int i = 0; i < n; i++) pos[i] = i;
        kv_seq_release(&e.kv, 0);
        if (kv_seq_reserve(&e.kv, 0, n) != 0) { snprintf(err, errlen, "KV reserve failed"); goto out; }
        batch_t b = {n, c->ids + w0, pos, slot, NULL};
        if (fwd_run(&e.f, &b, logits, err, errlen) != 0) goto out;
        ls->n_tokens += n;
    }
    for (int s = 0; s < N_SITES && want_H; s++) /* mirror the upper triangle */
        for (long i = 0; i < dims[s]; i++)
            for (long j = 0; j < i; j++) ls->Hf[s][i * dims[s] + j] = ls->Hf[s][j * dims[s] + i];
    rc = 0;
out:
    m->hp.n_layer = n_layer;
    env_close(&e);
out_nopass:
    free(pos);
    free(slot);
    free(logits);
    if (rc) layer_stats_free(ls);
    return rc;
}
