/* cli_convert.c - quantizing a loaded model to a recipe, and `sqserve
 * convert`, which writes the result as a .sqm.
 *
 * --weights/--acts are applied at load by generate, eval and serve as well
 * as by convert (cli_quantize, declared in cli.h for serve.c): calibration
 * first when the recipe needs it (GPTQ, SmoothQuant, static activation
 * scales), on a calibration file or on text the model writes itself, then
 * quantization in place. convert keeps the codes and writes them, with the
 * recipe and, unless --eval-tokens 0, the converted model's accuracy
 * against its source GGUF on FP32 activations, so that `inspect` and the
 * server's metrics can report it without the source file at hand.
 *
 * The accuracy check (cli_eval_vs_fp32, also run by serve.c) compares on
 * text the FP32 model generates, so it needs no data set: any GGUF can be
 * converted and checked offline.
 */
#include "cli_int.h"

#include "../engine/compute/act_quant.h"
#include "../engine/quant/sqm_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The file name of a path (what the .sqm and the metrics call a reference). */
static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* Terminal: a progress bar with ETA; otherwise plain log lines. */
typedef struct { const char *what; double t0; int total; } progress_t;

static void progress(void *ud, int done, int total) {
    progress_t *p = ud;
    double el = gen_now() - p->t0, eta = done ? el / done * (total - done) : 0;
    if (isatty(2)) {
        char bar[31];
        int fill = total ? done * 30 / total : 30;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%s [%s] %d/%d  %.0fs elapsed, ETA %.0fs ", p->what, bar, done, total, el, eta);
        if (done == total) fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %d/%d (%.1fs elapsed, ETA %.0fs)\n", p->what, done, total, el, eta);
    }
}

/* Says which rows take a smaller bank than the recipe's (sq_cfg_fit). */
static void note_bank_fit(const char *what, const sq_cfg_t *c, int grouped, const hparams_t *hp) {
    long ks[2] = {hp->dim, hp->ffn_dim};
    for (int i = 0; i < 2; i++) {
        sq_cfg_t fit;
        if (!sq_cfg_fit(c, ks[i], grouped, &fit) && fit.b != c->b)
            fprintf(stderr, "note: SQ %s bank b%d does not divide %ld-wide rows: those take b%d\n", what, c->b,
                    ks[i], fit.b);
    }
}

/* Applies --weights/--acts: calibration when the recipe needs it, then
 * quantization of the loaded model in place. Returns 0 (with *done set
 * when something was quantized) or 1 after printing the error. */
int cli_quantize(model_t *m, k_pool_t *pool, const config_t *c, quant_state_t *qs, int *done,
                 int keep_codes) {
    *done = 0;
    wrecipe_t w;
    arecipe_t a;
    char err[512];
    if (recipe_parse_w(cfg_str(c, "weights"), &w, err, sizeof err) ||
        recipe_parse_a(cfg_str(c, "acts"), &a, err, sizeof err))
        return cli_die("%s", err);
    if (w.kind == WQ_NONE && a.kind == AQ_NONE) return 0;
    if (m->external_layers || m->acts)
        return cli_die("this model is a .sqm, already quantized: drop --weights/--acts");
    calib_t cal;
    int need = w.gptq || w.smooth || a.smooth || a.kind == AQ_SQ_STATIC, have = 0;
    if (need) {
        const char *src = cfg_str(c, "calib");
        long want = cfg_int(c, "calib-tokens"), n = 0;
        int32_t *ids = NULL;
        double t0 = gen_now();
        if (!strcmp(src, "self")) {
            int len = 128;
            progress_t pt = {"calibration text", gen_now(), 0};
            if (calib_self_text(m, pool, (int)((want + len - 1) / len), len, &ids, &n, progress, &pt, err,
                                sizeof err))
                return cli_die("%s", err);
        } else {
            size_t len;
            char *text = cli_read_file(src, &len);
            if (!text) return cli_die("cannot read calibration file '%s'", src);
            int bad = cli_encode(m->tok, text, len, 0, &ids, &n);
            free(text);
            if (bad) return 1;
        }
        if (n > want) n = want;
        if (n < 64) { free(ids); return cli_die("calibration needs at least 64 tokens, got %ld", n); }
        progress_t pc = {"calibration", gen_now(), 0};
        int bad = calib_run(m, pool, ids, n, !strcmp(src, "self") ? 128 : 512, w.gptq && w.oneshot, &cal,
                            progress, &pc, err, sizeof err);
        free(ids);
        if (bad) return cli_die("%s", err);
        have = 1;
        fprintf(stderr, "calibration: %ld tokens from %s in %.1fs\n", cal.n_tokens, src, gen_now() - t0);
    }
    progress_t pg = {"quantize", gen_now(), 0};
    int bad = quant_apply(m, have ? &cal : NULL, &w, &a, keep_codes, qs, progress, &pg, err, sizeof err);
    if (have) calib_free(&cal);
    if (bad) return cli_die("%s", err);
    *done = 1;
    fprintf(stderr, "quantized: weights %s (%.2f bits/weight), activations %s (%.2f bits) in %.1fs\n",
            cfg_str(c, "weights"), qs->w_bits, cfg_str(c, "acts"), recipe_a_bits(&a),
            gen_now() - pg.t0);
    if (qs->smoothed)
        fprintf(stderr, "smoothed: mean alpha qkv %.2f o %.2f gate/up %.2f down %.2f; layers left unsmoothed "
                "%d %d %d %d of %d\n", qs->alpha_sum[SITE_QKV] / qs->smoothed, qs->alpha_sum[SITE_O] / qs->smoothed,
                qs->alpha_sum[SITE_UPGATE] / qs->smoothed, qs->alpha_sum[SITE_DOWN] / qs->smoothed,
                qs->n_unsmoothed[SITE_QKV], qs->n_unsmoothed[SITE_O], qs->n_unsmoothed[SITE_UPGATE],
                qs->n_unsmoothed[SITE_DOWN], qs->smoothed);
    if (w.kind == WQ_SQ) note_bank_fit("weights", &w.sq, 1, &m->hp);
    if (a.kind == AQ_SQ_STATIC || a.kind == AQ_SQ_DYNAMIC) note_bank_fit("activations", &a.sq, 0, &m->hp);
    return 0;
}

/* eval_compare's per-window report as a progress bar */
static void progress_cmp(void *ud, int w, const cmp_result_t *sofar) {
    (void)sofar;
    progress_t *p = ud;
    progress(p, w + 1, p->total);
}

/* The quantized model m against the unquantized file at path, on tokens
 * the FP32 model writes itself (no external data needed). */
int cli_eval_vs_fp32(model_t *m, quant_state_t *qs, k_pool_t *pool, const char *path, int tokens,
                     int show_progress, cmp_result_t *out, char *err, size_t errlen) {
    model_t ref;
    if (tokens < 128) {
        snprintf(err, errlen, "the accuracy check needs at least 128 tokens, not %d", tokens);
        return -1;
    }
    if (model_load(&ref, path, err, errlen) != 0) return -1;
    int32_t *ids = NULL;
    long n = 0;
    kv_cache_t kv[2];
    fwd_t f[2];
    model_t *ms[2] = {m, &ref};
    int made = 0, rc = -1;
    progress_t pt = {"accuracy check text", gen_now(), 0}, pc = {"accuracy check", 0, tokens / 128};
    if (calib_self_text(&ref, pool, tokens / 128, 128, &ids, &n, show_progress ? progress : NULL, &pt, err,
                        errlen) != 0)
        goto out;
    for (int k = 0; k < 2; k++) {
        int bad = kv_init(&kv[k], m->hp.n_layer, m->hp.head_dim * m->hp.n_head_kv, 128 / KV_BLOCK, 1) != 0;
        if (!bad && fwd_init(&f[k], ms[k], &kv[k], pool, 128, 128) != 0) {
            kv_free(&kv[k]);
            bad = 1;
        }
        if (bad) {
            snprintf(err, errlen, "out of memory for the accuracy check");
            goto out;
        }
        made++;
    }
    if (qs && qs->acts.a.kind != AQ_NONE) {
        f[0].hook = act_quant_hook;
        f[0].hook_ud = &qs->acts;
    }
    pc.t0 = gen_now();
    pc.total = (int)(n / 128);
    rc = eval_compare(&f[0], &f[1], ids, n, 128, out, show_progress ? progress_cmp : NULL, &pc, err, errlen);
out:
    for (int k = 0; k < made; k++) {
        fwd_free(&f[k]);
        kv_free(&kv[k]);
    }
    free(ids);
    model_free(&ref);
    return rc;
}

int cmd_convert(const config_t *c) {
    const char *out = cfg_str(c, "output");
    if (!out) return cli_die("convert needs -o OUT.sqm");
    rt_t r;
    if (cli_rt_open(&r, c)) return 1;
    int rc = 1;
    if (r.m.file_map) {
        cli_die("'%s' is already a .sqm; convert reads a GGUF", cfg_str(c, "model"));
        goto out;
    }
    long eval_tokens = cfg_int(c, "eval-tokens");
    if (eval_tokens != 0 && eval_tokens < 128) {
        cli_die("--eval-tokens %ld: give 0 (no accuracy check) or at least 128 (one window)", eval_tokens);
        goto out;
    }
    double t0 = gen_now();
    int done;
    if (cli_quantize(&r.m, r.pool, c, &r.qs, &done, 1) != 0) goto out;
    r.quantized = done;
    if (!done) {
        cli_die("nothing to convert: give --weights and/or --acts recipes");
        goto out;
    }
    int calibrated = r.qs.w.gptq || r.qs.acts.a.kind == AQ_SQ_STATIC;
    sqm_meta_t meta = {cfg_str(c, "weights"), cfg_str(c, "acts"), calibrated ? cfg_str(c, "calib") : "none",
                       calibrated ? cfg_int(c, "calib-tokens") : 0, cfg_str(c, "model"), 0, 0, 0, 0, 0, 0, NULL};
    char err[512];
    char ref_name[160];
    snprintf(ref_name, sizeof ref_name, "%s", base_name(cfg_str(c, "model")));
    if (eval_tokens == 0) {
        fprintf(stderr, "accuracy check: not run (--eval-tokens 0); the .sqm records no evaluation\n");
    } else { /* record the converted model's accuracy against its source GGUF (FP32 activations),
              * its output projection run as this machine serves it (cli_rt_int_acts) */
        cmp_result_t cr;
        if (cli_rt_int_acts(&r, c)) goto out;
        if (cli_eval_vs_fp32(&r.m, &r.qs, r.pool, cfg_str(c, "model"), (int)eval_tokens, 1, &cr, err,
                             sizeof err) != 0) {
            fprintf(stderr, "warning: the accuracy check failed (%s); the .sqm records no evaluation\n", err);
        } else {
            meta.have_eval = 1;
            meta.eval_ppl = cr.q.ppl;
            meta.eval_ppl_ref = cr.ref.ppl;
            meta.eval_kl = cr.kl;
            meta.eval_top1 = cr.top1;
            meta.eval_tokens = cr.q.n_pred;
            meta.eval_ref = ref_name;
            fprintf(stderr, "eval vs FP32 on %ld self-generated tokens: ppl %.4f (FP32 %.4f), KL %.5f, top-1 %.4f"
                    "%s\n", cr.q.n_pred, cr.q.ppl, cr.ref.ppl, cr.kl, cr.top1,
                    cli_recipe_out_q8(&r) ? " (output projection on 8-bit block activations)" : "");
        }
    }
    if (sqm_write(out, &r.m, &r.qs, &meta, err, sizeof err) != 0) {
        cli_die("%s", err);
        goto out;
    }
    struct stat st;
    long long bytes = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    fprintf(stderr, "wrote %s: %lld bytes, weights %s (%.2f bits/weight), activations %s, in %.1f s\n", out,
            bytes, meta.weights, r.qs.w_bits, meta.acts, gen_now() - t0);
    rc = 0;
out:
    cli_rt_free(&r);
    return rc;
}
