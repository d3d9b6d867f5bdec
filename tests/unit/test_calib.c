/* test_calib.c - sequential calibration and SmoothQuant folding on the
 * default model (quant/calib.h, quant/smooth.h), and the GPTQ recipe
 * options.
 *
 * - calib_layer on the unquantized model gathers exactly what the
 *   whole-model pass gathers for that layer (same sums, same H up to float
 *   summation order), and leaves the model's layer count as it was.
 * - Smoothing with FP32 weights and activations is an identity of the
 *   model (X diag(1/s) diag(s) W^T = X W^T): the logits before and after
 *   folding agree to float rounding. A scale folded into the wrong
 *   operand (a wrong V head for a query head, up rows for gate rows, the
 *   norm of the other half) moves them by orders of magnitude more.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/quant/calib.h"
#include "../../engine/quant/quant.h"

#define MODEL_DEFAULT "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define N_TOK 128

static model_t M;
static k_pool_t *POOL;
static int32_t IDS[N_TOK];

static int setup(void **state) {
    (void)state;
    const char *path = getenv("SQSERVE_MODEL");
    char err[512];
    k_init();
    if (model_load(&M, path ? path : MODEL_DEFAULT, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load the model: %s\n", err);
        return -1;
    }
    const char *text = "The history of the city begins with a small settlement on the river, where "
                       "farmers and traders met each spring. Over the centuries the town grew into a "
                       "market centre, and in 1850 the railway arrived, bringing factories, schools and "
                       "a new cathedral. Today the city is known for its university and its parks.";
    long n = tok_encode(M.tok, text, strlen(text), 0, IDS, N_TOK);
    for (long i = n; i < N_TOK; i++) IDS[i] = IDS[i % n]; /* repeat to N_TOK */
    POOL = k_pool_new(2);
    return POOL && n > 8 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    k_pool_free(POOL);
    model_free(&M);
    return 0;
}

static void logits_of(const model_t *m, float *logits) {
    kv_cache_t kv;
    fwd_t f;
    char err[256];
    assert_int_equal(kv_init(&kv, m->hp.n_layer, m->hp.head_dim * m->hp.n_head_kv, N_TOK / KV_BLOCK + 1, 1), 0);
    assert_int_equal(fwd_init(&f, m, &kv, POOL, N_TOK, N_TOK), 0);
    int32_t pos[N_TOK], slot[N_TOK] = {0};
    for (int i = 0; i < N_TOK; i++) pos[i] = i;
    assert_int_equal(kv_seq_reserve(&kv, 0, N_TOK), 0);
    batch_t b = {N_TOK, IDS, pos, slot, NULL};
    assert_int_equal(fwd_run(&f, &b, logits, err, sizeof err), 0);
    fwd_free(&f);
    kv_free(&kv);
}

static void test_layer_pass_matches_whole_model_pass(void **state) {
    (void)state;
    calib_t c;
    layer_stats_t ls;
    char err[256];
    int layer = 2, n_layer = M.hp.n_layer;
    assert_int_equal(calib_run(&M, POOL, IDS, N_TOK, 64, 1, &c, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(calib_layer(&M, &c, layer, NULL, 1, 16, &ls, err, sizeof err), 0);
    assert_int_equal(M.hp.n_layer, n_layer);
    assert_int_equal(ls.n_tokens, N_TOK);
    for (int s = 0; s < N_SITES; s++) {
        long k = ls.dim[s];
        double dh = 0, nh = 0;
        for (long j = 0; j < k; j++) {
            double a = c.sum[s][(size_t)layer * k + j], b = ls.sum[s][j];
            assert_true(fabs(a - b) <= 1e-6 * (fabs(a) + 1));
            assert_true(c.amax[s][(size_t)layer * k + j] == ls.amax[s][j]);
        }
        for (long i = 0; i < k * k; i++) {
            double a = c.H[s][(size_t)layer * k * k + i], b = ls.Hf[s][i];
            dh += (a - b) * (a - b);
            nh += a * a;
        }
        assert_true(sqrt(dh / nh) < 1e-5);
        assert_int_equal(ls.n_x[s], 16);
    }
    layer_stats_free(&ls);
    calib_free(&c);
}

static void test_smoothing_is_an_identity_in_fp32(void **state) {
    (void)state;
    model_t m;
    char err[256];
    assert_int_equal(model_load(&m, getenv("SQSERVE_MODEL") ? getenv("SQSERVE_MODEL") : MODEL_DEFAULT, err,
                                sizeof err), 0);
    long nv = m.hp.n_vocab;
    float *a = malloc((size_t)nv * sizeof *a), *b = malloc((size_t)nv * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    logits_of(&m, a);
    calib_t c;
    assert_int_equal(calib_run(&m, POOL, IDS, N_TOK, 64, 0, &c, NULL, NULL, err, sizeof err), 0);
    wrecipe_t w = {0};
    arecipe_t ac = {0};
    w.smooth = 1;
    w.alpha = 0.5;
    quant_state_t qs;
    assert_int_equal(quant_apply(&m, &c, &w, &ac, 0, &qs, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(qs.smoothed, m.hp.n_layer);
    logits_of(&m, b);
    double worst = 0, scale = 0;
    for (long i = 0; i < nv; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    printf("smoothing alpha 0.5, FP32: max |logit change| %.3g (largest logit %.3g)\n", worst, scale);
    assert_true(worst < 1e-3 * scale);
    /* unquantized weights: smoothing is refused for a .sqm (it would need FP32 layer matrices) */
    quant_state_t qs2;
    model_t m2;
    assert_int_equal(model_load(&m2, getenv("SQSERVE_MODEL") ? getenv("SQSERVE_MODEL") : MODEL_DEFAULT, err,
                                sizeof err), 0);
    assert_int_equal(quant_apply(&m2, &c, &w, &ac, 1, &qs2, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, ".sqm"));
    quant_free(&qs2);
    model_free(&m2);
    quant_free(&qs);
    calib_free(&c);
    model_free(&m);
    free(a);
    free(b);
}

static void test_gptq_recipe_options(void **state) {
    (void)state;
    wrecipe_t w;
    arecipe_t a;
    char err[256];
    assert_int_equal(recipe_parse_w("int4:g64:gptq", &w, err, sizeof err), 0);
    assert_true(w.gptq && !w.act_order && !w.oneshot && w.damp == 0.01 && !w.smooth);
    assert_int_equal(recipe_parse_w("int4:g64:gptq:act:damp0.1", &w, err, sizeof err), 0);
    assert_true(w.gptq && w.act_order && w.damp == 0.1 && w.group == 64);
    assert_int_equal(recipe_parse_w("sq:8/4:b64:s0.875:gptq:oneshot:smooth", &w, err, sizeof err), 0);
    assert_true(w.gptq && w.oneshot && w.smooth && w.alpha == 0);
    assert_int_equal(recipe_parse_w("int8:smooth0.6", &w, err, sizeof err), 0);
    assert_true(!w.gptq && w.smooth && w.alpha == 0.6);
    assert_int_equal(recipe_parse_w("sq:8/4:b64:s0.875:iscale:gptq:act", &w, err, sizeof err), 0);
    assert_true(w.iscale && w.gptq && w.act_order);
    assert_int_equal(recipe_parse_w("sq:8/4:b64:s0.875", &w, err, sizeof err), 0);
    assert_false(w.iscale);
    static const char *bad[] = {"int4:g64:iscale", "int8:iscale", "sq:4/2:b64:s0.875:iscale",
                                "sq:8/4:b64:s0.875:iscale:iscale", "int4:g64:act", "int4:g64:gptq:act:act", "int4:g64:gptq:damp0",
                                "int4:g64:gptq:damp", "int4:g64:gptq:dampx", "int4:smooth1.5",
                                "int4:g64:oneshot", "int4:g64:gptq:smooth:smooth", "int4:g64:gptq:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(recipe_parse_w(bad[i], &w, err, sizeof err), -1);
    assert_int_equal(recipe_parse_a("sq:8/4:b64:s0.875:static:smooth", &a, err, sizeof err), 0);
    assert_true(a.kind == AQ_SQ_STATIC && a.smooth && a.alpha == 0);
    assert_int_equal(recipe_parse_a("int8:smooth0.5", &a, err, sizeof err), 0);
    assert_true(a.kind == AQ_INT && a.bits == 8 && a.smooth && a.alpha == 0.5);
    assert_int_equal(recipe_parse_a("fp32:smooth", &a, err, sizeof err), -1);
    assert_int_equal(recipe_parse_a("int8:smooth:smooth", &a, err, sizeof err), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_recipe_options),
        cmocka_unit_test(test_layer_pass_matches_whole_model_pass),
        cmocka_unit_test(test_smoothing_is_an_identity_in_fp32),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
