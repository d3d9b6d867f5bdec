/* test_forward.c - the forward pass against the independent NumPy
 * reference (tests/fixtures/generate.json, see tests/reference/README.md).
 *
 * Tolerance: both sides compute in FP32 from the same dequantized
 * weights; they differ only in summation order (SIMD lanes, tiles,
 * threads). Over 30 layers that moves log-softmax values by ~1e-5..1e-4,
 * so max |delta| < 2e-3 over the reference's top-5 at every step leaves
 * >10x margin while still catching any real error (a wrong RoPE pairing,
 * norm epsilon or GQA mapping moves them by 1e-1 or more). Greedy ids
 * must match exactly: the smallest top-2 gap in the fixtures (~5e-3) is
 * far above the logit noise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/compute/forward.h"

#define MODEL_DEFAULT "models/SmolLM2-135M-Instruct.Q4_1.gguf"
#define LOGPROB_TOL 2e-3

static model_t M;
static k_pool_t *POOL;

static int setup(void **state) {
    (void)state;
    const char *path = getenv("SQSERVE_MODEL");
    char err[512];
    k_init();
    if (model_load(&M, path ? path : MODEL_DEFAULT, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load the model: %s\n", err);
        return -1;
    }
    POOL = k_pool_new(2);
    return POOL ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    k_pool_free(POOL);
    model_free(&M);
    return 0;
}

static double log_softmax_at(const float *l, int n, int id) {
    float mx = l[0];
    for (int i = 1; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)l[i] - mx);
    return l[id] - mx - log(s);
}

static int argmax(const float *l, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return b;
}

static int32_t *json_ids(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    for (size_t i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

static void run_prompt(json_t *p, double *worst) {
    const char *name = json_string_value(json_object_get(p, "name"));
    size_t n_prompt, n_steps;
    int32_t *prompt = json_ids(json_object_get(p, "prompt_ids"), &n_prompt);
    int32_t *want = json_ids(json_object_get(p, "greedy_ids"), &n_steps);
    json_t *top5 = json_object_get(p, "top5");
    int nv = M.hp.n_vocab;
    kv_cache_t kv;
    fwd_t f;
    int n_ctx = (int)(n_prompt + n_steps + 1);
    assert_int_equal(kv_init(&kv, M.hp.n_layer, M.hp.head_dim * M.hp.n_head_kv,
                             (n_ctx + KV_BLOCK - 1) / KV_BLOCK, 1), 0);
    assert_int_equal(kv_seq_reserve(&kv, 0, n_ctx), 0);
    assert_int_equal(fwd_init(&f, &M, &kv, POOL, (int)n_prompt, n_ctx), 0);
    float *logits = malloc((size_t)nv * sizeof(float));
    int32_t *pos = malloc(n_prompt * sizeof *pos), *slot = calloc(n_prompt, sizeof *slot);
    for (size_t i = 0; i < n_prompt; i++) pos[i] = (int32_t)i;
    char err[256];
    batch_t b = {(int)n_prompt, prompt, pos, slot, NULL};
    assert_int_equal(fwd_run(&f, &b, logits, err, sizeof err), 0);
    for (size_t s = 0; s < n_steps; s++) {
        json_t *ref = json_array_get(top5, s);
        for (size_t j = 0; j < json_array_size(ref); j++) {
            json_t *e = json_array_get(ref, j);
            int id = (int)json_integer_value(json_array_get(e, 0));
            double d = fabs(log_softmax_at(logits, nv, id) - json_real_value(json_array_get(e, 1)));
            if (d > *worst) *worst = d;
            if (d > LOGPROB_TOL) {
                print_error("%s step %zu token %d: |delta logprob| %.2e\n", name, s, id, d);
                fail();
            }
        }
        int got = argmax(logits, nv);
        if (got != want[s]) {
            print_error("%s step %zu: greedy %d, reference %d\n", name, s, got, want[s]);
            fail();
        }
        int32_t p1 = (int32_t)(n_prompt + s);
        batch_t one = {1, &want[s], &p1, slot, NULL};
        assert_int_equal(fwd_run(&f, &one, logits, err, sizeof err), 0);
    }
    free(logits); free(pos); free(slot); free(prompt); free(want);
    fwd_free(&f);
    kv_free(&kv);
}

static void test_greedy_and_logits_match_reference(void **state) {
    (void)state;
    json_error_t je;
    json_t *root = json_load_file("tests/fixtures/generate.json", 0, &je);
    assert_non_null(root);
    json_t *prompts = json_object_get(root, "prompts");
    assert_true(json_array_size(prompts) >= 6);
    double worst = 0;
    size_t i;
    json_t *p;
    json_array_foreach(prompts, i, p) run_prompt(p, &worst);
    printf("max |delta log-softmax| over the reference top-5: %.2e\n", worst);
    json_decref(root);
}

/* The prompt as one batch (tile path) and token by token (fused path)
 * must agree, and so must two sequences sharing a batch. */
static void test_batching_is_consistent(void **state) {
    (void)state;
    const int n = 12, nv = M.hp.n_vocab;
    int32_t toks[12] = {504, 3575, 282, 4649, 314, 28, 2618, 12835, 1558, 60, 23, 198};
    kv_cache_t kv;
    fwd_t f;
    char err[256];
    /* blocks deliberately interleaved between the two slots */
    assert_int_equal(kv_init(&kv, M.hp.n_layer, M.hp.head_dim * M.hp.n_head_kv, 8, 2), 0);
    for (int p = KV_BLOCK; p <= 32; p += KV_BLOCK) {
        assert_int_equal(kv_seq_reserve(&kv, 1, p), 0);
        assert_int_equal(kv_seq_reserve(&kv, 0, p), 0);
    }
    assert_int_equal(fwd_init(&f, &M, &kv, POOL, 2 * n, 32), 0);
    float *all = malloc((size_t)n * nv * sizeof(float)), *one = malloc((size_t)nv * sizeof(float));
    int32_t pos[24], slot[24];
    uint8_t want[24];
    for (int i = 0; i < n; i++) pos[i] = i, slot[i] = 0, want[i] = 1;
    batch_t b = {n, toks, pos, slot, want};
    assert_int_equal(fwd_run(&f, &b, all, err, sizeof err), 0);
    for (int i = 0; i < n; i++) { /* slot 1, one token at a time */
        int32_t s1 = 1;
        batch_t b1 = {1, &toks[i], &pos[i], &s1, NULL};
        assert_int_equal(fwd_run(&f, &b1, one, err, sizeof err), 0);
        for (int j = 0; j < nv; j++) assert_float_equal(one[j], all[(size_t)i * nv + j], 2e-3);
    }
    /* interleaved rows of two slots in one batch, only some wanting logits */
    int32_t t2[24];
    for (int i = 0; i < n; i++) {
        t2[2 * i] = toks[i], t2[2 * i + 1] = toks[i];
        pos[2 * i] = pos[2 * i + 1] = i;
        slot[2 * i] = 0, slot[2 * i + 1] = 1;
        want[2 * i] = 0, want[2 * i + 1] = i == n - 1;
    }
    batch_t b2 = {2 * n, t2, pos, slot, want};
    assert_int_equal(fwd_run(&f, &b2, one, err, sizeof err), 0);
    for (int j = 0; j < nv; j++) assert_float_equal(one[j], all[(size_t)(n - 1) * nv + j], 2e-3);
    free(all); free(one);
    fwd_free(&f);
    kv_free(&kv);
}

/* The pool splits attention by cost (a prefill's later rows read more
 * positions), matmuls by output rows: every value is computed by one thread
 * in one order, so the thread count must not change a bit of the logits
 * (a prompt's rows or a one-token step's runs of heads alike).
 * A batch of a 40-token prompt beside a second sequence's single token
 * gives the split uneven rows to cut; a two-row decode step cuts SmolLM2's
 * groups of 3 heads into runs of 2 and 1; 16 threads leave some threads
 * without a unit. */
static void test_thread_count_does_not_change_logits(void **state) {
    (void)state;
    enum { N = 41 };
    const int nv = M.hp.n_vocab, threads[] = {1, 2, 3, 5, 16};
    int32_t toks[N], pos[N], slot[N];
    uint8_t want[N];
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)((i * 7919 + 13) % nv), pos[i] = i < N - 1 ? i : 5, slot[i] = i < N - 1 ? 0 : 1,
        want[i] = i % 4 == 0 || i == N - 1;
    int n_want = 0;
    for (int i = 0; i < N; i++) n_want += want[i];
    float *ref = malloc((size_t)n_want * nv * sizeof(float)), *got = malloc((size_t)n_want * nv * sizeof(float));
    float *ref1 = malloc((size_t)nv * sizeof(float)), *ref2 = malloc(2 * (size_t)nv * sizeof(float));
    assert_non_null(ref1);
    assert_non_null(ref2);
    assert_non_null(ref);
    assert_non_null(got);
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        k_pool_t *pool = k_pool_new(threads[t]);
        assert_non_null(pool);
        kv_cache_t kv;
        fwd_t f;
        char err[256];
        assert_int_equal(kv_init(&kv, M.hp.n_layer, M.hp.head_dim * M.hp.n_head_kv, 8, 2), 0);
        assert_int_equal(kv_seq_reserve(&kv, 0, 48), 0);
        assert_int_equal(kv_seq_reserve(&kv, 1, 16), 0);
        assert_int_equal(fwd_init(&f, &M, &kv, pool, N, 48), 0);
        /* slot 1's first five positions, so its row at position 5 has a
         * past; one-token steps cut the attention groups into runs of heads */
        for (int32_t p = 0; p < 5; p++) {
            int32_t s1 = 1;
            batch_t b1 = {1, &toks[p], &p, &s1, NULL};
            assert_int_equal(fwd_run(&f, &b1, t == 0 ? ref1 : got, err, sizeof err), 0);
        }
        if (t > 0 && memcmp(ref1, got, (size_t)nv * sizeof(float)) != 0) {
            print_error("%d threads: a one-token step's logits differ from 1 thread's\n", threads[t]);
            fail();
        }
        /* one token of each sequence in one step (the prompt below rewrites both positions) */
        int32_t t2[2] = {toks[5], toks[0]}, p2[2] = {5, 0}, s2[2] = {1, 0};
        uint8_t w2[2] = {1, 1};
        batch_t b2 = {2, t2, p2, s2, w2};
        assert_int_equal(fwd_run(&f, &b2, t == 0 ? ref2 : got, err, sizeof err), 0);
        if (t > 0 && memcmp(ref2, got, 2 * (size_t)nv * sizeof(float)) != 0) {
            print_error("%d threads: a two-row step's logits differ from 1 thread's\n", threads[t]);
            fail();
        }
        batch_t b = {N, toks, pos, slot, want};
        assert_int_equal(fwd_run(&f, &b, t == 0 ? ref : got, err, sizeof err), 0);
        if (t > 0 && memcmp(ref, got, (size_t)n_want * nv * sizeof(float)) != 0) {
            print_error("%d threads: logits differ from 1 thread's\n", threads[t]);
            fail();
        }
        fwd_free(&f);
        kv_free(&kv);
        k_pool_free(pool);
    }
    free(ref);
    free(ref1);
    free(ref2);
    free(got);
}

static void test_bad_batches_are_refused(void **state) {
    (void)state;
    kv_cache_t kv;
    fwd_t f;
    char err[256];
    float *logits = malloc((size_t)M.hp.n_vocab * sizeof(float));
    assert_int_equal(kv_init(&kv, M.hp.n_layer, M.hp.head_dim * M.hp.n_head_kv, 1, 1), 0);
    assert_int_equal(kv_seq_reserve(&kv, 0, 8), 0);
    assert_int_equal(fwd_init(&f, &M, &kv, POOL, 4, 8), 0);
    int32_t tok = 1, bad_tok = M.hp.n_vocab, pos = 0, bad_pos = 8, slot = 0, bad_slot = 1;
    batch_t cases[] = {
        {1, &bad_tok, &pos, &slot, NULL}, {1, &tok, &bad_pos, &slot, NULL},
        {1, &tok, &pos, &bad_slot, NULL}, {0, &tok, &pos, &slot, NULL},
        {5, &tok, &pos, &slot, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        assert_int_equal(fwd_run(&f, &cases[i], logits, err, sizeof err), -1);
        assert_true(strlen(err) > 0);
    }
    free(logits);
    fwd_free(&f);
    kv_free(&kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_logits_match_reference),
        cmocka_unit_test(test_batching_is_consistent),
        cmocka_unit_test(test_thread_count_does_not_change_logits),
        cmocka_unit_test(test_bad_batches_are_refused),
    };
    return cmocka_run_group_tests_name("forward", tests, setup, teardown);
}
