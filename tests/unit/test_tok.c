/* test_tok.c - tokenizer against the HF `tokenizers` reference fixtures
 * (tests/fixtures/tokenizer.json), round trips, streaming decode and the
 * chat template against jinja2's rendering (tests/fixtures/generate.json). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/model/model.h"

#define MODEL_DEFAULT "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static model_t M;

static int setup(void **state) {
    (void)state;
    const char *path = getenv("SQSERVE_MODEL");
    char err[512];
    if (model_load(&M, path ? path : MODEL_DEFAULT, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load the model: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    model_free(&M);
    return 0;
}

static uint8_t *unhex(const char *h, size_t *n) {
    size_t len = strlen(h);
    uint8_t *out = malloc(len / 2 + 1);
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *n = len / 2;
    return out;
}

static long encode(const char *s, size_t n, int special, int32_t **ids) {
    size_t cap = n + 8;
    *ids = malloc(cap * sizeof(int32_t));
    long k = tok_encode(M.tok, s, n, special, *ids, cap);
    assert_true(k >= 0);
    if ((size_t)k > cap) { /* a second call with the exact size */
        *ids = realloc(*ids, (size_t)k * sizeof(int32_t));
        assert_int_equal(tok_encode(M.tok, s, n, special, *ids, (size_t)k), k);
    }
    return k;
}

/* Decodes through the streaming API, checking that every chunk it emits
 * is complete UTF-8 on its own. */
static char *stream_decode(const int32_t *ids, long n, size_t *out_len) {
    char *out = malloc((size_t)n * 64 + 16);
    size_t o = 0;
    tok_stream_t st = {0};
    for (long i = 0; i < n; i++) {
        char piece[512];
        size_t k = tok_stream_push(M.tok, &st, ids[i], 1, piece, sizeof piece);
        size_t clean_len;
        char *clean = tok_utf8_sanitize(piece, k, &clean_len);
        assert_int_equal(clean_len, k); /* nothing half-finished was emitted */
        assert_memory_equal(clean, piece, k);
        free(clean);
        memcpy(out + o, piece, k);
        o += k;
    }
    o += tok_stream_flush(&st, out + o, 16);
    *out_len = o;
    return out;
}

/* Bytes with no single-byte token are dropped by encoding, so strings
 * holding them cannot round-trip (SmolLM2 lacks 21 such bytes). */
static int has_tokenless_byte(const uint8_t *s, size_t n) {
    static int have[256], ready;
    if (!ready) {
        for (int id = 0; id < tok_n_vocab(M.tok); id++) {
            size_t k;
            const char *p = tok_piece(M.tok, id, &k);
            if (k == 1 && tok_type(M.tok, id) == TOK_NORMAL) have[(uint8_t)p[0]] = 1;
        }
        ready = 1;
    }
    for (size_t i = 0; i < n; i++)
        if (!have[s[i]]) return 1;
    return 0;
}

static void test_reference_ids(void **state) {
    (void)state;
    json_error_t je;
    json_t *root = json_load_file("tests/fixtures/tokenizer.json", 0, &je);
    assert_non_null(root);
    json_t *cases = json_object_get(root, "cases");
    size_t i, n_fail = 0, n_roundtrip = 0;
    json_t *c;
    assert_true(json_array_size(cases) >= 200);
    json_array_foreach(cases, i, c) {
        size_t n;
        uint8_t *text = unhex(json_string_value(json_object_get(c, "hex")), &n);
        json_t *want = json_object_get(c, "ids");
        int32_t *ids;
        long k = encode((const char *)text, n, 1, &ids);
        int ok = (size_t)k == json_array_size(want);
        for (long j = 0; ok && j < k; j++)
            ok = ids[j] == json_integer_value(json_array_get(want, (size_t)j));
        if (!ok) {
            n_fail++;
            print_error("case '%s': %ld ids, expected %zu\n",
                        json_string_value(json_object_get(c, "name")), k, json_array_size(want));
        }
        if (json_is_true(json_object_get(c, "valid_utf8")) && !has_tokenless_byte(text, n)) {
            size_t dl;
            char *dec = stream_decode(ids, k, &dl);
            if (dl != n || memcmp(dec, text, n) != 0) {
                n_fail++;
                print_error("case '%s': decode(encode(s)) != s\n",
                            json_string_value(json_object_get(c, "name")));
            }
            n_roundtrip++;
            free(dec);
        }
        free(ids);
        free(text);
    }
    json_decref(root);
    assert_true(n_roundtrip >= 150);
    assert_int_equal(n_fail, 0);
}

static void test_stream_holds_partial_utf8(void **state) {
    (void)state;
    /* "é" split into two byte tokens must come out only when complete */
    int b1 = -1, b2 = -1;
    for (int id = 0; id < tok_n_vocab(M.tok); id++) {
        size_t n;
        const char *p = tok_piece(M.tok, id, &n);
        if (n == 1 && (uint8_t)p[0] == 0xc3) b1 = id;
        if (n == 1 && (uint8_t)p[0] == 0xa9) b2 = id;
    }
    assert_true(b1 >= 0 && b2 >= 0);
    tok_stream_t st = {0};
    char out[16];
    assert_int_equal(tok_stream_push(M.tok, &st, b1, 1, out, sizeof out), 0);
    assert_int_equal(tok_stream_push(M.tok, &st, b2, 1, out, sizeof out), 2);
    assert_memory_equal(out, "\xc3\xa9", 2);
    /* a dangling lead byte at the end becomes U+FFFD, never raw */
    assert_int_equal(tok_stream_push(M.tok, &st, b1, 1, out, sizeof out), 0);
    assert_int_equal(tok_stream_flush(&st, out, sizeof out), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    /* a continuation byte with no lead is invalid at once */
    assert_int_equal(tok_stream_push(M.tok, &st, b2, 1, out, sizeof out), 3);
}

static void test_special_tokens(void **state) {
    (void)state;
    const char *s = "<|im_start|>user\nhi<|im_end|>";
    int32_t *ids;
    long k = encode(s, strlen(s), 1, &ids);
    assert_int_equal(ids[0], tok_find(M.tok, "<|im_start|>", 12));
    assert_int_equal(ids[k - 1], tok_find(M.tok, "<|im_end|>", 10));
    assert_true(tok_is_eog(M.tok, ids[k - 1]));
    free(ids);
    /* with parsing off, the marker is plain text */
    k = encode(s, strlen(s), 0, &ids);
    assert_true(ids[0] != tok_find(M.tok, "<|im_start|>", 12));
    assert_true(k > 6);
    free(ids);
    /* control tokens are dropped from text unless asked for */
    tok_stream_t st = {0};
    char out[64];
    assert_int_equal(tok_stream_push(M.tok, &st, tok_eos(M.tok), 0, out, sizeof out), 0);
}

static void test_long_word_is_fast(void **state) {
    (void)state;
    /* one 200 kB pre-token: quadratic merging would take minutes */
    size_t n = 200000;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++) s[i] = "abcdefghij"[i % 10];
    int32_t *ids;
    long k = encode(s, n, 0, &ids);
    assert_true(k > 0 && (size_t)k < n);
    size_t dl;
    char *dec = stream_decode(ids, k, &dl);
    assert_int_equal(dl, n);
    assert_memory_equal(dec, s, n);
    free(dec);
    free(ids);
    free(s);
}

static void test_chat_template_matches_jinja(void **state) {
    (void)state;
    json_error_t je;
    json_t *root = json_load_file("tests/fixtures/generate.json", 0, &je);
    assert_non_null(root);
    size_t i, n_chat = 0;
    json_t *p;
    json_array_foreach(json_object_get(root, "prompts"), i, p) {
        if (!json_is_true(json_object_get(p, "chat"))) continue;
        json_t *msgs = json_object_get(p, "messages");
        chat_msg_t m[8];
        size_t j, n = json_array_size(msgs);
        assert_true(n <= 8);
        json_t *msg;
        json_array_foreach(msgs, j, msg) {
            m[j].role = json_string_value(json_object_get(msg, "role"));
            m[j].content = json_string_value(json_object_get(msg, "content"));
        }
        char *got, err[1024];
        assert_int_equal(chat_render(&M.chat, m, n, 1, &got, err, sizeof err), 0);
        assert_string_equal(got, json_string_value(json_object_get(p, "text")));
        /* and the rendered prompt tokenizes to the reference ids */
        int32_t *ids;
        long k = encode(got, strlen(got), 1, &ids);
        json_t *want = json_object_get(p, "prompt_ids");
        assert_int_equal(k, json_array_size(want));
        for (long t = 0; t < k; t++)
            assert_int_equal(ids[t], json_integer_value(json_array_get(want, (size_t)t)));
        free(ids);
        free(got);
        n_chat++;
    }
    assert_true(n_chat >= 2);
    json_decref(root);
}

static void test_utf8_sanitize(void **state) {
    (void)state;
    struct { const char *in; size_t n; const char *out; } cases[] = {
        {"a\xe2\x82z", 4, "a\xef\xbf\xbdz"},                       /* truncated 3-byte */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},               /* overlong */
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},                       /* truncated at end */
        {"ok\xf0\x9f\x98\x80", 6, "ok\xf0\x9f\x98\x80"},           /* valid emoji */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        char *s = tok_utf8_sanitize(cases[i].in, cases[i].n, &n);
        assert_int_equal(n, strlen(cases[i].out));
        assert_memory_equal(s, cases[i].out, n);
        free(s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_ids),
        cmocka_unit_test(test_stream_holds_partial_utf8),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_long_word_is_fast),
        cmocka_unit_test(test_chat_template_matches_jinja),
        cmocka_unit_test(test_utf8_sanitize),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, setup, teardown);
}
