/* quant.c - calibration, model quantization, activation quantization. */
#include "quant.h"

#include "gptq.h"
#include "sq_quant.h"
#include "../runtime/sample.h"

#include "../../kernels/k_quant.h"
#include "../../kernels/k_sq.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- calibration -------------------------------------------------------------------- */

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
              int want_H, calib_t *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    const hparams_t *hp = &m->hp;
    c->n_layer = hp->n_layer;
    long dims[N_SITES] = {hp->dim, hp->dim, hp->dim, hp->ffn_dim};
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
                    long *n_out, char *err, size_t errlen) {
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

/* ---- weights ----------------------------------------------------------------------------- */

static int own(quant_state_t *qs, float *buf) {
    float **o = realloc(qs->owned, (size_t)(qs->n_owned + 1) * sizeof *o);
    if (!o) return -1;
    qs->owned = o;
    qs->owned[qs->n_owned++] = buf;
    return 0;
}

/* Static SQ activations: per bank, the channels with the largest
 * |mean(A_j) * sum_i W_ij| over every matrix that reads this site (the
 * paper's Algorithm 2), or with by_max the largest |A_j| seen in
 * calibration. The paper's score can rank a channel with huge activations
 * low when its weight column sums cancel; left in the low part, such a
 * channel sets the per-token low scale and flattens every other low
 * channel to zero (docs/accuracy.md measures both). */
static int static_mask(const calib_t *c, int l, int site, k_mat_t *const *mats, int n_mats,
                       const sq_cfg_t *sq, int by_max, uint8_t *mask, float *row) {
    long dim = c->dim[site];
    double *imp = calloc((size_t)dim, sizeof *imp);
    if (!imp) return -1;
    if (!by_max) /* sum_i W_ij over every matrix reading the site */
        for (int m = 0; m < n_mats; m++)
            for (long r = 0; r < mats[m]->n; r++) {
                k_mat_row(mats[m], r, row);
                for (long j = 0; j < dim; j++) imp[j] += row[j];
            }
    for (long j = 0; j < dim; j++)
        imp[j] = by_max ? c->amax[site][(size_t)l * dim + j]
                        : fabs(imp[j] * c->sum[site][(size_t)l * dim + j] / (double)c->n_tokens);
    sq_cfg_t fit = *sq; /* the site's bank: quant_apply checked that one fits */
    sq_cfg_fit(sq, dim, 0, &fit);
    int h = sq_highs_per_bank(&fit), b = fit.b;
    memset(mask, 0, (size_t)dim);
    for (long j0 = 0; j0 + b <= dim; j0 += b)
        for (int pick = 0; pick < h; pick++) {
            long best = -1;
            for (long j = j0; j < j0 + b; j++)
                if (!mask[j] && (best < 0 || imp[j] > imp[best])) best = j;
            mask[best] = 1;
        }
    free(imp);
    return 0;
}

static qtensor_t *new_qt(quant_state_t *qs) {
    qtensor_t *q = realloc(qs->qt, (size_t)(qs->n_qt + 1) * sizeof *q);
    if (!q) return NULL;
    qs->qt = q;
    memset(&q[qs->n_qt], 0, sizeof *q);
    return &q[qs->n_qt++];
}

/* An SQ tensor as the INT8 kernel's weight (k_mat_t of type K_SQ); the
 * tensor itself stays owned by qs. */
static int sq_kernel_mat(k_mat_t *w, const sq_tensor_t *t, quant_state_t *qs) {
    k_sq_t *v = k_sq_new(&(k_sq_t){t->cfg.h_low, t->cfg.b, t->h, t->G, t->n, t->k, t->lo, t->hi, t->idx,
                                   t->s_lo, t->s_hi, NULL, 0, 0, NULL, 0, 0, NULL, 0});
    if (!v || own(qs, (float *)v) != 0) {
        free(v);
        return -1;
    }
    *w = (k_mat_t){K_SQ, v, t->n, t->k, (size_t)((double)t->k * sq_bits_in_memory(&t->cfg) / 8)};
    return 0;
}

static int quant_matrix(k_mat_t *w, const char *name, const wrecipe_t *r, const double *diag,
                        const double *U, int keep, int sq_kernel, quant_state_t *qs, char *err,
                        size_t errlen) {
    long n = w->n, k = w->k;
    qtensor_t *qt = NULL;
    keep = keep || sq_kernel; /* the kernel reads the codes */
    if (keep) {
        if (!(qt = new_qt(qs))) goto oom_noW;
        snprintf(qt->name, sizeof qt->name, "%s", name);
        qt->kind = r->kind;
        qt->n = n;
        qt->k = k;
    }
    float *W = malloc((size_t)(n * k) * sizeof(float));
    if (!W) goto oom;
    for (long i = 0; i < n; i++) k_mat_row(w, i, W + i * k);
    if (r->kind == WQ_SQ) {
        sq_tensor_t t;
        sq_cfg_t cfg;
        const char *why = sq_cfg_fit(&r->sq, k, 1, &cfg);
        if (why) {
            snprintf(err, errlen, "SQ %d/%d b%d s%g on a %ld-wide matrix: %s", r->sq.h_high,
                     r->sq.h_low, r->sq.b, r->sq.s, k, why);
            free(W);
            return -1;
        }
        if (sq_alloc(&t, &cfg, n, k) != 0) goto oom;
        if (sq_quantize(&t, W, r->gptq ? diag : NULL, r->gptq ? U : NULL) != 0) {
            sq_free(&t);
            goto oom;
        }
        why = sq_validate(&t);
        if (why) {
            snprintf(err, errlen, "internal error: an SQ tensor broke its invariants: %s", why);
            sq_free(&t);
            free(W);
            return -1;
        }
        if (sq_kernel) { /* INT8 activations: run the codes themselves */
            qt->sq = t;
            free(W);
            return sq_kernel_mat(w, &qt->sq, qs) == 0 ? 0 : (snprintf(err, errlen, "out of memory"), -1);
        }
        for (long i = 0; i < n; i++) sq_dequant_row(&t, i, W + i * k); /* exactly what is stored */
        if (qt) qt->sq = t;
        else sq_free(&t);
    } else {
        long g = r->group ? r->group : k;
        if (k % g) {
            snprintf(err, errlen, "group %ld does not divide the row length %ld", g, k);
            free(W);
            return -1;
        }
        if (qt) {
            qt->bits = r->bits;
            qt->group = g;
            qt->codes = malloc((size_t)(n * k));
            qt->scales = malloc((size_t)(n * (k / g)) * sizeof(float));
            if (!qt->codes || !qt->scales) goto oom;
        }
        uq_quantize_codes(W, n, k, r->bits, g, r->gptq ? U : NULL, qt ? qt->codes : NULL,
                          qt ? qt->scales : NULL);
        if (sq_kernel) { /* INT8 activations: the integer kernel reads the codes */
            k_sq_t *v = k_sq_new_int(qt->codes, qt->scales, n, k, r->bits, g);
            free(W);
            if (!v || own(qs, (float *)v) != 0) {
                free(v);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            *w = (k_mat_t){K_SQ, v, n, k, (size_t)((double)k * (r->bits + 32.0 / (double)g) / 8)};
            return 0;
        }
    }
    if (own(qs, W) != 0) goto oom;
    *w = (k_mat_t){0 /* K_F32 */, W, n, k, (size_t)k * sizeof(float)};
    return 0;
oom:
    free(W);
oom_noW:
    snprintf(err, errlen, "out of memory quantizing a %ld x %ld matrix", n, k);
    return -1;
}

int quant_apply(model_t *m, const calib_t *c, const wrecipe_t *w, const arecipe_t *a, int keep_codes,
                quant_state_t *qs, void (*progress)(void *ud, int done, int total), void *ud,
                char *err, size_t errlen) {
    memset(qs, 0, sizeof *qs);
    qs->acts.a = *a;
    qs->w = *w;
    const hparams_t *hp = &m->hp;
    qs->acts.n_layer = hp->n_layer;
    long dims[N_SITES] = {hp->dim, hp->dim, hp->dim, hp->ffn_dim};
    int need_H = w->gptq, need_mean = a->kind == AQ_SQ_STATIC;
    if ((need_H && (!c || !c->H[0])) || (need_mean && !c)) {
        snprintf(err, errlen, "this recipe needs calibration statistics");
        return -1;
    }
    if (recipe_check_acts(a, hp->dim, hp->ffn_dim, err, errlen)) return -1;
    float *row = malloc((size_t)hp->ffn_dim * sizeof(float) + (size_t)hp->dim * sizeof(float));
    if (!row) { snprintf(err, errlen, "out of memory"); return -1; }
    for (int s = 0; s < N_SITES; s++) {
        qs->acts.dim[s] = dims[s];
        if (need_mean && !(qs->acts.hi_mask[s] = calloc((size_t)(hp->n_layer * dims[s]), 1))) {
            free(row);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    double bits = 0, elems = 0;
    for (int l = 0; l < hp->n_layer; l++) {
        layer_t *L = &m->layers[l];
        k_mat_t *site_mats[N_SITES][3] = {{&L->wq, &L->wk, &L->wv}, {&L->wo}, {&L->w_gate, &L->w_up},
                                          {&L->w_down}};
        int n_mats[N_SITES] = {3, 1, 2, 1};
        for (int s = 0; s < N_SITES; s++) {
            if (need_mean && static_mask(c, l, s, site_mats[s], n_mats[s], &a->sq, a->by_max,
                                         qs->acts.hi_mask[s] + (size_t)l * dims[s], row) != 0) {
                free(row);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            if (w->kind == WQ_NONE) continue;
            double *diag = NULL, *U = NULL;
            if (need_H) {
                long k = dims[s];
                double *H = malloc((size_t)(k * k) * sizeof *H);
                if (!H) { free(row); snprintf(err, errlen, "out of memory"); return -1; }
                const float *Hf = c->H[s] + (size_t)l * k * k;
                for (long i = 0; i < k * k; i++) H[i] = Hf[i];
                int bad = gptq_prepare(H, k, 0.01, &diag, &U);
                free(H);
                if (bad) {
                    free(row);
                    snprintf(err, errlen, "layer %d: the calibration Hessian is not positive definite", l);
                    return -1;
                }
            }
            for (int i = 0; i < n_mats[s]; i++) {
                k_mat_t *mt = site_mats[s][i];
                char name[48];
                static const int file_index[N_SITES][3] = {{0, 1, 2}, {3}, {4, 5}, {6}};
                model_layer_mat(m, l, file_index[s][i], name, sizeof name);
                bits += recipe_w_bits(w, mt->k) * (double)(mt->n * mt->k);
                elems += (double)(mt->n * mt->k);
                int sq_kernel = w->kind != WQ_NONE && a->kind == AQ_INT && a->bits == 8;
                if (quant_matrix(mt, name, w, diag, U, keep_codes, sq_kernel, qs, err, errlen) != 0) {
                    free(diag); free(U); free(row);
                    return -1;
                }
            }
            free(diag);
            free(U);
        }
        if (progress) progress(ud, l + 1, hp->n_layer);
    }
    qs->w_bits = elems > 0 ? bits / elems : 32;
    qs->acts.kernel_acts = w->kind != WQ_NONE && a->kind == AQ_INT && a->bits == 8;
    free(row);
    return 0;
}

void quant_free(quant_state_t *qs) {
    for (int i = 0; i < qs->n_qt; i++) {
        sq_free(&qs->qt[i].sq);
        free(qs->qt[i].codes);
        free(qs->qt[i].scales);
    }
    free(qs->qt);
    for (int i = 0; i < qs->n_owned; i++) free(qs->owned[i]);
    free(qs->owned);
    act_quant_release(&qs->acts);
    memset(qs, 0, sizeof *qs);
}

