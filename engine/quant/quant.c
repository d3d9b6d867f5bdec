/* quant.c - model quantization by recipe (quant.h): per layer, the
 * sequential calibration pass (calib.h), SmoothQuant folding (smooth.h),
 * the static activation masks and the weights, RTN or GPTQ. */
#include "quant.h"

#include "calib.h"
#include "gptq.h"
#include "smooth.h"
#include "sq_quant.h"

#include "../../kernels/k_quant.h"
#include "../../kernels/k_sq.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- weights ----------------------------------------------------------------------------- */

static int own(quant_state_t *qs, float *buf) {
    float **o = realloc(qs->owned, (size_t)(qs->n_owned + 1) * sizeof *o);
    if (!o) return -1;
    qs->owned = o;
    qs->owned[qs->n_owned++] = buf;
    return 0;
}

/* Frees buf and drops it from qs's owned list (a smoothed copy that the
 * quantized matrix replaced). */
static void disown(quant_state_t *qs, float *buf) {
    for (int i = qs->n_owned - 1; i >= 0; i--)
        if (qs->owned[i] == buf) {
            qs->owned[i] = qs->owned[--qs->n_owned];
            free(buf);
            return;
        }
}

/* Static SQ activations: per bank, the channels with the largest
 * |mean(A_j) * sum_i W_ij| over every matrix that reads this site (the
 * paper's Algorithm 2, signed mean and signed column sums, on the
 * smoothed A' and W' when smoothing is on), or with by_max the largest
 * |A_j| seen in calibration. The paper's score can rank a channel with
 * huge activations low when its weight column sums cancel; left in the
 * low part, such a channel sets the per-token low scale and flattens
 * every other low channel to zero (docs/accuracy.md measures both).
 * sum/amax: the site's k channel statistics over n_tokens. */
static int static_mask(const double *sum, const float *amax, long n_tokens, long dim, k_mat_t *const *mats,
                       int n_mats, const sq_cfg_t *sq, int by_max, uint8_t *mask, float *row) {
    double *imp = calloc((size_t)dim, sizeof *imp);
    if (!imp) return -1;
    if (!by_max) /* sum_i W_ij over every matrix reading the site */
        for (int m = 0; m < n_mats; m++)
            for (long r = 0; r < mats[m]->n; r++) {
                k_mat_row(mats[m], r, row);
                for (long j = 0; j < dim; j++) imp[j] += row[j];
            }
    for (long j = 0; j < dim; j++)
        imp[j] = by_max ? amax[j] : fabs(imp[j] * sum[j] / (double)n_tokens);
    smooth_mask_from_importance(imp, dim, sq, mask);
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
                                   t->s_lo, t->s_hi, NULL, 0, 0, 0, NULL, 0, 0, NULL, 0});
    if (!v || own(qs, (float *)v) != 0) {
        free(v);
        return -1;
    }
    *w = (k_mat_t){K_SQ, v, t->n, t->k, (size_t)((double)t->k * sq_bits_in_memory(&t->cfg) / 8), 0};
    return 0;
}

static int quant_matrix(k_mat_t *w, const char *name, const wrecipe_t *r, const double *diag,
                        const double *U, const long *perm, int keep, int sq_kernel, quant_state_t *qs,
                        char *err, size_t errlen) {
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
        if (sq_quantize_opt(&t, W, r->gptq ? diag : NULL, r->gptq ? U : NULL, perm, r->iscale ? SQ_Q_ISCALE : 0) != 0) {
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
        if (uq_quantize_perm(W, n, k, r->bits, g, r->gptq ? U : NULL, perm, qt ? qt->codes : NULL,
                             qt ? qt->scales : NULL) != 0)
            goto oom;
        if (sq_kernel) { /* INT8 activations: the integer kernel reads the codes */
            k_sq_t *v = k_sq_new_int(qt->codes, qt->scales, n, k, r->bits, g);
            free(W);
            if (!v || own(qs, (float *)v) != 0) {
                free(v);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            *w = (k_mat_t){K_SQ, v, n, k, (size_t)((double)k * (r->bits + 32.0 / (double)g) / 8), 0};
            return 0;
        }
    }
    if (own(qs, W) != 0) goto oom;
    *w = (k_mat_t){0 /* K_F32 */, W, n, k, (size_t)k * sizeof(float), 0};
    return 0;
oom:
    free(W);
oom_noW:
    snprintf(err, errlen, "out of memory quantizing a %ld x %ld matrix", n, k);
    return -1;
}

/* Replaces a layer matrix by an F32 copy that qs owns (to be smoothed). */
static float *f32_copy(k_mat_t *mt, quant_state_t *qs) {
    float *W = malloc((size_t)(mt->n * mt->k) * sizeof *W);
    if (!W || own(qs, W) != 0) {
        free(W);
        return NULL;
    }
    for (long i = 0; i < mt->n; i++) k_mat_row(mt, i, W + i * mt->k);
    *mt = (k_mat_t){0 /* K_F32 */, W, mt->n, mt->k, (size_t)mt->k * sizeof(float), 0};
    return W;
}

/* The scaled statistics after channel j of a site was divided by s_j. */
static void stats_scale(layer_stats_t *ls, int site, const float *s) {
    long k = ls->dim[site];
    for (long j = 0; j < k; j++) {
        ls->sum[site][j] /= s[j];
        ls->amax[site][j] /= s[j];
    }
    for (int i = 0; i < ls->n_x[site]; i++)
        for (long j = 0; j < k; j++) ls->X[site][(size_t)i * k + j] /= s[j];
    if (ls->Hf[site])
        for (long i = 0; i < k; i++)
            for (long j = 0; j < k; j++) ls->Hf[site][i * k + j] /= s[i] * s[j];
}

/* SmoothQuant on layer l (smooth.h): F32 copies of its seven matrices
 * (f32[], qs-owned) and of its two norm vectors (the model's may be views
 * into the GGUF mapping), scales chosen per site and folded, ls rescaled
 * to the smoothed inputs. o and down first: their scales go into rows of
 * W_v and W_up, which the q/k/v and gate/up scales then see. */
static int smooth_layer(model_t *m, int l, layer_stats_t *ls, const wrecipe_t *w, const arecipe_t *a,
                        double alpha_fixed, quant_state_t *qs, float *f32[7], char *err, size_t errlen) {
    const hparams_t *hp = &m->hp;
    layer_t *L = &m->layers[l];
    k_mat_t *mt[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    long dim = hp->dim, q_dim = hp->q_dim, kv_dim = (long)hp->n_head_kv * hp->head_dim, tie = hp->n_head / hp->n_head_kv;
    float *norms[2] = {malloc((size_t)dim * sizeof(float)), malloc((size_t)dim * sizeof(float))};
    float *s = malloc((size_t)(hp->ffn_dim > q_dim ? hp->ffn_dim : q_dim) * sizeof *s);
    long *grp = malloc((size_t)q_dim * sizeof *grp);
    int rc = -1;
    for (int i = 0; i < 2; i++)
        if (norms[i] && own(qs, norms[i]) != 0) {
            free(norms[i]);
            norms[i] = NULL;
        }
    if (!norms[0] || !norms[1] || !s || !grp) goto oom;
    memcpy(norms[0], L->attn_norm, (size_t)dim * sizeof(float));
    memcpy(norms[1], L->ffn_norm, (size_t)dim * sizeof(float));
    L->attn_norm = norms[0];
    L->ffn_norm = norms[1];
    for (int i = 0; i < 7; i++)
        if (!(f32[i] = f32_copy(mt[i], qs))) goto oom;
    for (long c = 0; c < q_dim; c++) /* attention channel -> the V channel it reads */
        grp[c] = (c / (hp->head_dim * tie)) * hp->head_dim + c % hp->head_dim;
    static const int order[N_SITES] = {SITE_O, SITE_DOWN, SITE_QKV, SITE_UPGATE};
    static const int first[N_SITES] = {0, 3, 4, 6}, count[N_SITES] = {3, 1, 2, 1};
    for (int oi = 0; oi < N_SITES; oi++) {
        int site = order[oi];
        long k = ls->dim[site], rows[3];
        float *ms[3];
        for (int i = 0; i < count[site]; i++) {
            ms[i] = f32[first[site] + i];
            rows[i] = mt[first[site] + i]->n;
        }
        double alpha = 0;
        if (smooth_choose(ls->X[site], ls->n_x[site], ls->amax[site], ls->sum[site], ls->n_tokens, k, ms, rows,
                          count[site], site == SITE_O ? grp : NULL, kv_dim, w, a, site, alpha_fixed, s,
                          &alpha) != 0)
            goto oom;
        qs->alpha_sum[site] += alpha;
        qs->n_unsmoothed[site] += alpha == 0;
        for (int i = 0; i < count[site]; i++) /* W' = W diag(s) */
            for (long r = 0; r < rows[i]; r++)
                for (long j = 0; j < k; j++) ms[i][r * k + j] *= s[j];
        if (site == SITE_QKV || site == SITE_UPGATE) /* the RMSNorm weight takes 1/s */
            for (long j = 0; j < k; j++) norms[site == SITE_UPGATE][j] /= s[j];
        else if (site == SITE_O) /* the rows of W_v (tied scales: any member will do) */
            for (long c = 0; c < q_dim; c++)
                for (long j = 0; j < dim; j++) {
                    if (c % (hp->head_dim * tie) >= hp->head_dim) break; /* first head of a group only */
                    f32[2][grp[c] * dim + j] /= s[c];
                }
        else /* SITE_DOWN: the rows of W_up */
            for (long c = 0; c < k; c++)
                for (long j = 0; j < dim; j++) f32[5][c * dim + j] /= s[c];
        stats_scale(ls, site, s);
    }
    qs->smoothed++;
    (void)kv_dim;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory smoothing layer %d", l);
out:
    free(s);
    free(grp);
    return rc;
}

int quant_apply(model_t *m, const calib_t *c, const wrecipe_t *w, const arecipe_t *a, int keep_codes,
                quant_state_t *qs, void (*progress)(void *ud, int done, int total), void *ud,
                char *err, size_t errlen) {
    memset(qs, 0, sizeof *qs);
    qs->acts.a = *a;
    qs->w = *w;
    const hparams_t *hp = &m->hp;
    qs->acts.n_layer = hp->n_layer;
    long dims[N_SITES] = {hp->dim, hp->q_dim, hp->dim, hp->ffn_dim};
    int seq = w->gptq && !w->oneshot, smooth = w->smooth || a->smooth;
    int need_mean = a->kind == AQ_SQ_STATIC;
    double alpha_fixed = w->smooth ? w->alpha : a->alpha;
    if (w->smooth && a->smooth && w->alpha != a->alpha) {
        snprintf(err, errlen, "the weights and the activations ask for different smoothing");
        return -1;
    }
    if (smooth && w->gptq && w->oneshot) { /* its H is the unsmoothed model's */
        snprintf(err, errlen, "one-shot GPTQ (:oneshot) does not combine with smoothing: drop one");
        return -1;
    }
    if (smooth && m->hp.arch->qkv_bias) { /* SITE_O's scales would have to go into b_v too */
        snprintf(err, errlen, "smoothing is not supported for architecture '%s' (q/k/v biases): "
                 "choose a recipe without smoothing", m->hp.arch->name);
        return -1;
    }
    if (smooth && keep_codes && w->kind == WQ_NONE) { /* the .sqm would hold FP32 layer matrices */
        snprintf(err, errlen, "smoothing rewrites the layer matrices, which a .sqm stores only quantized: "
                              "give a --weights recipe, or evaluate with --acts alone instead of converting");
        return -1;
    }
    if ((w->gptq && w->oneshot && (!c || !c->H[0])) || ((seq || smooth) && (!c || !c->ids)) ||
        (need_mean && !c)) {
        snprintf(err, errlen, "this recipe needs calibration statistics");
        return -1;
    }
    if (smooth && hp->n_head % hp->n_head_kv) {
        snprintf(err, errlen, "smoothing needs whole groups of query heads per KV head");
        return -1;
    }
    if (recipe_check_acts(a, hp->dim, hp->ffn_dim, err, errlen) ||
        (hp->q_dim != hp->dim && recipe_check_acts(a, hp->q_dim, hp->q_dim, err, errlen)))
        return -1;
    float *row = malloc((size_t)(hp->ffn_dim + hp->dim + hp->q_dim) * sizeof(float)); /* any row fits */
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
    int rc = -1;
    for (int l = 0; l < hp->n_layer; l++) {
        layer_t *L = &m->layers[l];
        layer_stats_t ls = {0};
        float *f32[7] = {0};
        int have_ls = seq || smooth;
        /* layer l's inputs through the layers quantized so far */
        if (have_ls && calib_layer(m, c, l, &qs->acts, seq, smooth ? 256 : 0, &ls, err, errlen) != 0) goto out;
        if (smooth && smooth_layer(m, l, &ls, w, a, alpha_fixed, qs, f32, err, errlen) != 0) goto fail_layer;
        k_mat_t *site_mats[N_SITES][3] = {{&L->wq, &L->wk, &L->wv}, {&L->wo}, {&L->w_gate, &L->w_up},
                                          {&L->w_down}};
        int n_mats[N_SITES] = {3, 1, 2, 1};
        for (int s = 0; s < N_SITES; s++) {
            long k = dims[s];
            if (need_mean) {
                const double *sum = have_ls ? ls.sum[s] : c->sum[s] + (size_t)l * k;
                const float *amax = have_ls ? ls.amax[s] : c->amax[s] + (size_t)l * k;
                if (static_mask(sum, amax, have_ls ? ls.n_tokens : c->n_tokens, k, site_mats[s], n_mats[s],
                                &a->sq, a->by_max, qs->acts.hi_mask[s] + (size_t)l * k, row) != 0) {
                    snprintf(err, errlen, "out of memory");
                    goto fail_layer;
                }
            }
            if (w->kind == WQ_NONE) continue;
            double *diag = NULL, *U = NULL;
            long *perm = NULL;
            if (w->gptq) {
                double *H = malloc((size_t)(k * k) * sizeof *H);
                if (!H) { snprintf(err, errlen, "out of memory"); goto fail_layer; }
                const float *Hf = seq ? ls.Hf[s] : c->H[s] + (size_t)l * k * k;
                for (long i = 0; i < k * k; i++) H[i] = Hf[i];
                int bad = gptq_prepare_ordered(H, k, w->damp, w->act_order, &diag, &U, &perm);
                free(H);
                if (bad) {
                    snprintf(err, errlen, "layer %d: the calibration Hessian is not positive definite", l);
                    goto fail_layer;
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
                if (quant_matrix(mt, name, w, diag, U, perm, keep_codes, sq_kernel, qs, err, errlen) != 0) {
                    free(diag); free(U); free(perm);
                    goto fail_layer;
                }
            }
            free(diag);
            free(U);
            free(perm);
        }
        if (w->kind != WQ_NONE) /* the quantized matrices replaced the smoothed copies */
            for (int i = 0; i < 7; i++)
                if (f32[i]) disown(qs, f32[i]);
        layer_stats_free(&ls);
        if (progress) progress(ud, l + 1, hp->n_layer);
        continue;
fail_layer:
        layer_stats_free(&ls);
        goto out;
    }
    qs->w_bits = elems > 0 ? bits / elems : 32;
    qs->acts.kernel_acts = w->kind != WQ_NONE && a->kind == AQ_INT && a->bits == 8;
    rc = 0;
out:
    free(row);
    return rc;
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

