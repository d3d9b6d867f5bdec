/* test_engine.c - sampler, logprobs, the step cost model, stop strings and the GGUF reader's metadata
 * handling on files written here byte by byte (no model needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../engine/model/gguf.h"
#include "../../engine/runtime/sample.h"
#include "../../engine/runtime/stepcost.h"
#include "../../engine/runtime/stop.h"
#include "../../engine/model/chat.h"
#include "../../engine/compute/kv.h"

/* ---- sampler --------------------------------------------------------------- */

#define NV 16

static void fill(float *l) {
    for (int i = 0; i < NV; i++) l[i] = (float)(i % 5) * 0.5f - (float)i * 0.01f;
}

static int draw(sample_params_t p, int steps, int *out) {
    sampler_t s;
    assert_int_equal(sampler_init(&s, &p, NV), 0);
    float l[NV];
    for (int i = 0; i < steps; i++) {
        fill(l);
        out[i] = sampler_next(&s, l);
        sampler_accept(&s, out[i]);
    }
    sampler_free(&s);
    return steps;
}

static void test_greedy_and_seeded_sampling(void **state) {
    (void)state;
    sample_params_t p = sample_defaults();
    p.temperature = 0;
    int a[50], b[50];
    draw(p, 50, a);
    for (int i = 0; i < 50; i++) assert_int_equal(a[i], 4); /* argmax of fill() */
    p = sample_defaults();
    p.top_k = 0, p.top_p = 1, p.min_p = 0, p.temperature = 1.5f, p.seed = 7;
    draw(p, 50, a);
    draw(p, 50, b);
    assert_memory_equal(a, b, sizeof a); /* same seed, same tokens */
    p.seed = 8;
    draw(p, 50, b);
    assert_true(memcmp(a, b, sizeof a) != 0);
    int seen[NV] = {0};
    for (int i = 0; i < 50; i++) seen[a[i]] = 1;
    int distinct = 0;
    for (int i = 0; i < NV; i++) distinct += seen[i];
    assert_true(distinct > 3); /* temperature 1.5 actually samples */
}

static void test_cuts(void **state) {
    (void)state;
    sample_params_t p = sample_defaults();
    p.temperature = 5, p.top_p = 1, p.min_p = 0, p.top_k = 2, p.seed = 1;
    int a[200];
    draw(p, 200, a);
    /* the two best logits of fill(): ids 4 and 9 */
    for (int i = 0; i < 200; i++) assert_true(a[i] == 4 || a[i] == 9);
    p.top_k = 0, p.min_p = 0.99f;
    draw(p, 100, a);
    for (int i = 0; i < 100; i++) assert_int_equal(a[i], 4);
    p.min_p = 0, p.top_p = 0.01f;
    draw(p, 100, a);
    for (int i = 0; i < 100; i++) assert_int_equal(a[i], 4);
}

static void test_penalties(void **state) {
    (void)state;
    sample_params_t p = sample_defaults();
    p.temperature = 0, p.presence_penalty = 2.0f, p.penalty_last_n = 8;
    int a[6];
    draw(p, 6, a);
    /* the favourite gets penalised after its first use */
    assert_int_equal(a[0], 4);
    assert_true(a[1] != 4);
    sampler_t s;
    p = sample_defaults();
    p.repeat_penalty = 2.0f, p.frequency_penalty = 0.5f, p.penalty_last_n = 2;
    assert_int_equal(sampler_init(&s, &p, NV), 0);
    sampler_accept(&s, 3);
    sampler_accept(&s, 3);
    sampler_accept(&s, 5); /* window of 2: one 3 left, one 5 */
    assert_int_equal(s.count[3], 1);
    assert_int_equal(s.count[5], 1);
    sampler_free(&s);
    p = sample_defaults();
    p.top_p = 0;
    assert_non_null(sample_validate(&p));
    p = sample_defaults();
    p.temperature = NAN;
    assert_non_null(sample_validate(&p));
    p = sample_defaults();
    assert_null(sample_validate(&p));
}

/* ---- stop strings ------------------------------------------------------------- */

static void feed_all(stop_t *s, const char *const *pieces, int n, char *out, int *stopped) {
    out[0] = 0;
    *stopped = 0;
    for (int i = 0; i < n && !*stopped; i++) {
        const char *o;
        size_t ol;
        int r = stop_feed(s, pieces[i], strlen(pieces[i]), &o, &ol);
        assert_true(r >= 0);
        strncat(out, o, ol);
        *stopped = r;
    }
    if (!*stopped) {
        const char *o;
        size_t ol;
        stop_flush(s, &o, &ol);
        strncat(out, o, ol);
    }
}

static void test_stop_strings(void **state) {
    (void)state;
    const char *stops[] = {"END", "\n\n"};
    stop_t s;
    char out[256];
    int stopped;
    assert_int_equal(stop_init(&s, stops, 2), 0);
    const char *p1[] = {"hello E", "N", "D world"};
    feed_all(&s, p1, 3, out, &stopped);
    assert_true(stopped);
    assert_string_equal(out, "hello ");
    stop_free(&s);
    assert_int_equal(stop_init(&s, stops, 2), 0);
    const char *p2[] = {"an E", "nd", " EN"}; /* prefixes that never complete */
    feed_all(&s, p2, 3, out, &stopped);
    assert_false(stopped);
    assert_string_equal(out, "an End EN");
    stop_free(&s);
    assert_int_equal(stop_init(&s, stops, 2), 0);
    const char *p3[] = {"a\n", "\nb"};
    feed_all(&s, p3, 2, out, &stopped);
    assert_true(stopped);
    assert_string_equal(out, "a");
    stop_free(&s);
    assert_int_equal(stop_init(&s, NULL, 0), 0); /* no stops: pass-through */
    const char *p4[] = {"x", "y"};
    feed_all(&s, p4, 2, out, &stopped);
    assert_string_equal(out, "xy");
    stop_free(&s);
    const char *many[STOP_MAX + 1] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    assert_int_equal(stop_init(&s, many, STOP_MAX + 1), -1);
}

/* ---- chat templates --------------------------------------------------------- */

static void test_chat_templates(void **state) {
    (void)state;
    chat_tmpl_t ct;
    char err[1024], *r;
    /* a GGUF template is rendered by the Jinja interpreter */
    const char *src = "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
                      "{{ '<|im_start|>system\\nBe kind.<|im_end|>\\n' }}{% endif %}"
                      "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    assert_int_equal(chat_tmpl_init(&ct, src, strlen(src), "<s>", "</s>", 0), 0);
    assert_int_equal(ct.kind, CHAT_JINJA);
    assert_int_equal(ct.family, CHAT_CHATML);
    assert_null(ct.error);
    chat_msg_t m[2] = {{"user", "hi"}, {"assistant", "yo"}};
    assert_int_equal(chat_render(&ct, m, 2, 1, &r, err, sizeof err), 0);
    assert_string_equal(r, "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                           "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>assistant\n");
    free(r);
    chat_msg_t sys[1] = {{"system", "S"}};
    assert_int_equal(chat_render(&ct, sys, 1, 0, &r, err, sizeof err), 0);
    assert_string_equal(r, "<|im_start|>system\nS<|im_end|>\n");
    free(r);
    /* the built-in Llama-3 by name */
    assert_int_equal(chat_tmpl_override(&ct, "llama3", err, sizeof err), 0);
    assert_int_equal(ct.family, CHAT_LLAMA3);
    assert_int_equal(chat_render(&ct, m, 1, 1, &r, err, sizeof err), 0);
    assert_string_equal(r, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(r);
    /* an unknown name (and no such file): kept as the error chats report */
    assert_int_equal(chat_tmpl_override(&ct, "no-such-template", err, sizeof err), -1);
    assert_non_null(strstr(err, "chatml, llama3"));
    assert_int_equal(chat_render(&ct, m, 1, 1, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "no-such-template"));
    chat_tmpl_free(&ct);
    /* a template that does not parse does not fail the init, only renders */
    assert_int_equal(chat_tmpl_init(&ct, "{{ [INST] ", 10, NULL, NULL, 0), 0);
    assert_non_null(ct.error);
    assert_int_equal(chat_render(&ct, m, 1, 1, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not parse"));
    chat_tmpl_free(&ct);
    /* raise_exception is the client's error (1); BOS text dropped when the tokenizer adds it */
    const char *strict = "{{ bos_token }}{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}"
                         "{% endif %}{{ messages[0].content }}";
    assert_int_equal(chat_tmpl_init(&ct, strict, strlen(strict), "<s>", "</s>", 1), 0);
    assert_int_equal(chat_render(&ct, m + 1, 1, 0, &r, err, sizeof err), 1);
    assert_non_null(strstr(err, "user first"));
    assert_int_equal(chat_render(&ct, m, 1, 0, &r, err, sizeof err), 0);
    assert_string_equal(r, "hi");
    free(r);
    chat_tmpl_free(&ct);
    /* no template: the built-in ChatML, which refuses tools rather than dropping them */
    assert_int_equal(chat_tmpl_init(&ct, NULL, 0, NULL, NULL, 0), 0);
    assert_int_equal(ct.kind, CHAT_CHATML);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "x"), *tools = json_pack("[{}]");
    assert_int_equal(chat_render_json(&ct, msgs, tools, 1, &r, err, sizeof err), 1);
    assert_int_equal(chat_render_json(&ct, msgs, NULL, 1, &r, err, sizeof err), 0);
    assert_string_equal(r, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
    free(r);
    json_decref(msgs);
    json_decref(tools);
    chat_tmpl_free(&ct);
}

/* ---- GGUF metadata ------------------------------------------------------------ */

typedef struct { uint8_t *b; size_t n, cap; } buf_t;

static void put(buf_t *b, const void *p, size_t n) {
    if (b->n + n > b->cap) b->b = realloc(b->b, b->cap = (b->n + n) * 2 + 64);
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void put_u32(buf_t *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf_t *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf_t *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }

static const char *write_tmp(buf_t *b) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/sqserve-test-%d.gguf", (int)getpid());
    FILE *fp = fopen(path, "wb");
    fwrite(b->b, 1, b->n, fp);
    fclose(fp);
    return path;
}

static void test_gguf_metadata_types(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        buf_t b = {0};
        put(&b, "GGUF", 4);
        put_u32(&b, version);
        put_u64(&b, 1); /* tensors */
        put_u64(&b, 6); /* kvs */
        put_str(&b, "a.u8"); put_u32(&b, GGUF_U8); put(&b, "\xff", 1);
        put_str(&b, "a.i16"); put_u32(&b, GGUF_I16); put(&b, "\xfe\xff", 2);
        put_str(&b, "a.f64"); put_u32(&b, GGUF_F64);
        double d = 2.5;
        put(&b, &d, 8);
        put_str(&b, "a.str"); put_u32(&b, GGUF_STRING); put_str(&b, "hello");
        /* [[1, 2], [3]] as nested i32 arrays */
        put_str(&b, "a.nested"); put_u32(&b, GGUF_ARRAY); put_u32(&b, GGUF_ARRAY); put_u64(&b, 2);
        put_u32(&b, GGUF_I32); put_u64(&b, 2); put_u32(&b, 1); put_u32(&b, 2);
        put_u32(&b, GGUF_I32); put_u64(&b, 1); put_u32(&b, 3);
        put_str(&b, "a.strs"); put_u32(&b, GGUF_ARRAY); put_u32(&b, GGUF_STRING); put_u64(&b, 2);
        put_str(&b, "x"); put_str(&b, "yz");
        put_str(&b, "t"); put_u32(&b, 2); put_u64(&b, 4); put_u64(&b, 2);
        put_u32(&b, 0 /* F32 */); put_u64(&b, 0);
        while (b.n % 32) put(&b, "\0", 1);
        float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        put(&b, data, sizeof data);
        gguf_t g;
        char err[256];
        const char *path = write_tmp(&b);
        assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
        uint64_t u;
        double f;
        gguf_str_t s;
        assert_int_equal(gguf_get_u64(&g, "a.u8", &u), 0);
        assert_int_equal(u, 255);
        assert_int_equal(gguf_get_u64(&g, "a.i16", &u), -1); /* -2 is not unsigned */
        assert_int_equal(gguf_get(&g, "a.i16")->v.i, -2);
        assert_int_equal(gguf_get_f64(&g, "a.f64", &f), 0);
        assert_true(f == 2.5);
        assert_int_equal(gguf_get_str(&g, "a.str", &s), 0);
        assert_true(gguf_str_eq(s, "hello"));
        const gguf_value_t *n = gguf_get(&g, "a.nested");
        assert_int_equal(n->v.arr.n, 2);
        assert_int_equal(gguf_arr_i64(&n->v.arr.items[0], 1), 2);
        assert_int_equal(gguf_arr_i64(&n->v.arr.items[1], 0), 3);
        assert_true(gguf_str_eq(gguf_get(&g, "a.strs")->v.arr.items[1].v.s, "yz"));
        const gguf_tensor_t *t = gguf_tensor(&g, "t");
        assert_non_null(t);
        assert_int_equal(t->n_elems, 8);
        assert_true(((const float *)t->data)[7] == 8.0f);
        assert_null(gguf_tensor(&g, "missing"));
        gguf_close(&g);
        unlink(path);
        free(b.b);
    }
}

/* ---- paged KV cache ------------------------------------------------------------ */

/* kv_set_storage (how the GPU path moves K/V rows to the device): the new
 * storage is used for rows and released through the given function, the
 * old one freed; a failing allocator leaves the cache as it was. */
static int n_alloc, n_release;
static void *count_alloc(size_t b) { n_alloc++; return malloc(b); }
static void count_release(void *p) { n_release++; free(p); }
static void *no_alloc(size_t b) { (void)b; return NULL; }

static void test_kv_storage_moves(void **state) {
    (void)state;
    kv_cache_t kv;
    assert_int_equal(kv_init(&kv, 2, 8, 4, 2), 0);
    float *old_k = kv.k;
    assert_int_equal(kv_set_storage(&kv, no_alloc, count_release), -1);
    assert_ptr_equal(kv.k, old_k);
    assert_null(kv.release);
    n_alloc = n_release = 0;
    assert_int_equal(kv_set_storage(&kv, count_alloc, count_release), 0);
    assert_int_equal(n_alloc, 2);
    assert_non_null(kv.k);
    assert_int_equal(kv_seq_reserve(&kv, 1, 20), 0);
    float *row = kv_k_row(&kv, 1, 1, 19);
    assert_true(row >= kv.k && row + 8 <= kv.k + (size_t)4 * 2 * KV_BLOCK * 8);
    row[7] = 1.5f; /* inside the new allocation (ASan would catch otherwise) */
    kv_free(&kv);
    assert_int_equal(n_release, 2);
}

static void test_kv_blocks_and_prefix_sharing(void **state) {
    (void)state;
    kv_cache_t kv;
    assert_int_equal(kv_init(&kv, 2, 8, 6, 3), 0);
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = 100 + i;
    /* slot 0: 40 positions = 3 blocks, two of them full */
    assert_int_equal(kv_seq_reserve(&kv, 0, 40), 0);
    assert_int_equal(kv_blocks_used(&kv), 3);
    kv_seq_commit(&kv, 0, toks, 40);
    assert_int_equal(kv.seqs[0].n_hashed, 2);
    /* distinct rows for distinct positions, same row for the same one */
    assert_ptr_not_equal(kv_k_row(&kv, 0, 0, 3), kv_k_row(&kv, 0, 0, 4));
    assert_ptr_not_equal(kv_k_row(&kv, 1, 0, 3), kv_k_row(&kv, 0, 0, 3));
    /* slot 1 with the same 36-token prefix shares the two full blocks */
    int hit = kv_seq_match_prefix(&kv, 1, toks, 36, 35);
    assert_int_equal(hit, 32);
    assert_ptr_equal(kv_k_row(&kv, 0, 1, 20), kv_k_row(&kv, 0, 0, 20));
    assert_int_equal(kv_blocks_used(&kv), 3);
    assert_int_equal(kv_seq_reserve(&kv, 1, 36), 0); /* its own third block */
    assert_int_equal(kv_blocks_used(&kv), 4);
    assert_ptr_not_equal(kv_k_row(&kv, 0, 1, 33), kv_k_row(&kv, 0, 0, 33));
    /* a different prefix shares nothing; max_tokens caps the match */
    int32_t other[32];
    for (int i = 0; i < 32; i++) other[i] = 7;
    assert_int_equal(kv_seq_match_prefix(&kv, 2, other, 32, 31), 0);
    assert_int_equal(kv_seq_match_prefix(&kv, 2, toks, 40, 15), 0);
    /* exhaustion: 2 free blocks left, 3 needed -> refused, nothing taken */
    assert_int_equal(kv_seq_blocks_needed(&kv, 2, 48), 3);
    assert_int_equal(kv_seq_reserve(&kv, 2, 48), -1);
    assert_int_equal(kv_blocks_used(&kv), 4);
    /* releasing both users frees everything; the registered blocks stay
     * findable until reused */
    kv_seq_release(&kv, 0);
    kv_seq_release(&kv, 1);
    assert_int_equal(kv_blocks_used(&kv), 0);
    assert_int_equal(kv_seq_match_prefix(&kv, 0, toks, 40, 39), 32);
    kv_seq_release(&kv, 0);
    /* filling the pool with other data evicts them */
    assert_int_equal(kv_seq_reserve(&kv, 1, 6 * KV_BLOCK), 0);
    kv_seq_release(&kv, 1);
    assert_int_equal(kv_seq_match_prefix(&kv, 0, toks, 40, 39), 0);
    kv_free(&kv);
}

/* log-softmax against a direct computation; top-n sorted, ids past the
 * vocabulary -1 */
static void test_sample_logprobs(void **state) {
    (void)state;
    const float l[4] = {1.0f, 3.0f, -2.0f, 2.0f};
    double z = exp(1.0) + exp(3.0) + exp(-2.0) + exp(2.0);
    int32_t ids[6];
    float lp[6];
    float c = sample_logprobs(l, 4, 3, 6, ids, lp);
    assert_true(fabs(c - (2.0 - log(z))) < 1e-5);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 0);
    assert_int_equal(ids[3], 2);
    assert_int_equal(ids[4], -1);
    assert_true(fabs(lp[0] - (3.0 - log(z))) < 1e-5 && lp[0] >= lp[1] && lp[1] >= lp[2]);
    assert_true(fabs(sample_logprobs(l, 4, 2, 0, ids, lp) - (-2.0 - log(z))) < 1e-5);
}

/* steps that cost exactly 0.01 + 0.001 * rows: the fit recovers them and
 * the cap is (budget - a) / b - decodes, clamped */
static void test_stepcost(void **state) {
    (void)state;
    stepcost_t c = {0};
    assert_int_equal(stepcost_prefill_cap(&c, 0.2, 4, 16, 512), 16); /* nothing measured */
    for (int i = 0; i < 40; i++) {
        int rows = 8 + (i % 5) * 60;
        stepcost_observe(&c, rows, 0.01 + 0.001 * rows);
    }
    int cap = stepcost_prefill_cap(&c, 0.2, 10, 16, 512);
    assert_true(cap >= 178 && cap <= 181); /* (0.2 - 0.01) / 0.001 - 10 = 180 */
    assert_int_equal(stepcost_prefill_cap(&c, 0.011, 10, 16, 512), 16);
    assert_int_equal(stepcost_prefill_cap(&c, 10.0, 10, 16, 512), 512);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_blocks_and_prefix_sharing),
        cmocka_unit_test(test_greedy_and_seeded_sampling),
        cmocka_unit_test(test_cuts),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_chat_templates),
        cmocka_unit_test(test_gguf_metadata_types),
        cmocka_unit_test(test_kv_storage_moves),
        cmocka_unit_test(test_sample_logprobs),
        cmocka_unit_test(test_stepcost),
    };
    return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
