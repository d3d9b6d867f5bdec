/* test_grammar.c - the GBNF parser, the matcher (accept / reject strings,
 * partial UTF-8), token masks over the default model's vocabulary (against
 * a brute-force check of every token), and JSON Schema -> grammar. */
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

#include "../../engine/model/model.h"
#include "../../engine/runtime/grammar.h"
#include "../../engine/runtime/json_schema.h"

#define MODEL_DEFAULT "models/SmolLM2-135M-Instruct.Q4_1.gguf"

static model_t M;
static gvocab_t *V;

static int setup(void **state) {
    (void)state;
    const char *path = getenv("SQSERVE_MODEL");
    char err[512];
    if (model_load(&M, path ? path : MODEL_DEFAULT, err, sizeof err) != 0) {
        fprintf(stderr, "cannot load the model: %s\n", err);
        return -1;
    }
    V = gvocab_new(M.tok);
    return V ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    gvocab_free(V);
    model_free(&M);
    return 0;
}

static grammar_t *compile(const char *text) {
    char err[256];
    grammar_t *g = grammar_parse(text, strlen(text), err, sizeof err);
    if (!g) fail_msg("grammar refused: %s\n%s", err, text);
    return g;
}

/* Whether the grammar accepts s as a complete string. */
static int accepts(grammar_t *g, const char *s) {
    gmatch_t *m = gmatch_new(g, V);
    assert_non_null(m);
    int ok = gmatch_accept_bytes(m, s, strlen(s)) == 0 && gmatch_can_end(m);
    gmatch_free(m);
    return ok;
}

/* Whether s is a prefix of something the grammar accepts. */
static int prefix_ok(grammar_t *g, const char *s) {
    gmatch_t *m = gmatch_new(g, V);
    assert_non_null(m);
    int ok = gmatch_accept_bytes(m, s, strlen(s)) == 0;
    gmatch_free(m);
    return ok;
}

static void refused(const char *text, const char *needle) {
    char err[256] = "";
    grammar_t *g = grammar_parse(text, strlen(text), err, sizeof err);
    if (g) {
        grammar_unref(g);
        fail_msg("grammar accepted but should not be: %s", text);
    }
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
}

/* ---- parser and matcher ------------------------------------------------------------------------ */

static void test_literals_and_alternation(void **state) {
    (void)state;
    grammar_t *g = compile("root ::= \"yes\" | \"no\" | \"maybe\" \" \" \"so\"\n");
    assert_true(accepts(g, "yes"));
    assert_true(accepts(g, "no"));
    assert_true(accepts(g, "maybe so"));
    assert_false(accepts(g, "ye"));
    assert_true(prefix_ok(g, "ye"));
    assert_false(prefix_ok(g, "yes!"));
    assert_false(accepts(g, ""));
    grammar_unref(g);
}

static void test_repetition(void **state) {
    (void)state;
    grammar_t *g = compile("root ::= [a-c]{2,4} \"-\" d+ e? f*\nd ::= \"0\"\ne ::= \"x\"\nf ::= \"y\" \"z\"\n");
    assert_true(accepts(g, "ab-0"));
    assert_true(accepts(g, "abca-000xyzyz"));
    assert_false(accepts(g, "a-0"));
    assert_false(accepts(g, "abcab-0"));
    assert_false(accepts(g, "ab-"));
    assert_false(accepts(g, "ab-0xx"));
    assert_false(accepts(g, "ab-0y"));
    grammar_unref(g);
    g = compile("root ::= (\"ab\"){3}\n");
    assert_true(accepts(g, "ababab"));
    assert_false(accepts(g, "abab"));
    grammar_unref(g);
    g = compile("root ::= \"a\"{2,}\n");
    assert_false(accepts(g, "a"));
    assert_true(accepts(g, "aaaaaaa"));
    grammar_unref(g);
}

static void test_classes_and_utf8(void **state) {
    (void)state;
    grammar_t *g = compile("root ::= [^\"\\\\\\x00-\\x1F]* \"!\"\n");
    assert_true(accepts(g, "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80!"));
    assert_false(accepts(g, "a\"!"));
    assert_false(accepts(g, "a\n!"));
    assert_true(prefix_ok(g, "\xe2\x82"));  /* a character split across tokens */
    assert_false(prefix_ok(g, "\xe2\x41")); /* not a continuation byte */
    assert_false(prefix_ok(g, "\xc0\xaf")); /* overlong */
    assert_false(prefix_ok(g, "\xed\xa0\x80")); /* a surrogate */
    grammar_unref(g);
    g = compile("root ::= [a-z\\u00e9]+ | \"\\u20AC\" .\n");
    assert_true(accepts(g, "caf\xc3\xa9"));
    assert_false(accepts(g, "caf\xc3\xa8"));
    assert_false(prefix_ok(g, "\xc3\xa8")); /* U+00E8 starts with the same lead byte, refused at the end */
    assert_true(accepts(g, "\xe2\x82\xac\xf0\x9f\x98\x80"));
    grammar_unref(g);
}

static void test_multiline_comments_groups(void **state) {
    (void)state;
    grammar_t *g = compile("# a comment\n"
                           "root ::= item\n"
                           "  ( \",\" item )*   # trailing comment\n"
                           "item ::=\n"
                           "    \"x\"\n"
                           "  | \"y\" (\"1\" |\n \"2\")\n");
    assert_true(accepts(g, "x"));
    assert_true(accepts(g, "x,y1,y2,x"));
    assert_false(accepts(g, "x,"));
    assert_false(accepts(g, "y3"));
    grammar_unref(g);
}

static void test_recursion(void **state) {
    (void)state;
    grammar_t *g = compile("root ::= \"(\" root \")\" | \"\"\n");
    assert_true(accepts(g, ""));
    assert_true(accepts(g, "((()))"));
    assert_false(accepts(g, "(()"));
    assert_false(accepts(g, "())"));
    grammar_unref(g);
}

static void test_bad_grammars(void **state) {
    (void)state;
    refused("", "no 'root'");
    refused("root ::= foo\n", "'foo' is used but not defined");
    refused("root ::= \"abc\n", "unterminated literal");
    refused("root ::= [abc\n", "unterminated character class");
    refused("root ::= (\"a\"\n", "unclosed '('");
    refused("root ::= \"a\" )\n", "unmatched ')'");
    refused("root ::= \"a\"{3,2}\n", "maximum is below the minimum");
    refused("root ::= \"a\"{99999}\n", "limited to");
    refused("root ::= root \"a\" | \"b\"\n", "left-recursive");
    refused("root ::= x \"a\"\nx ::= \"\" | root\n", "left-recursive");
    refused("root ::= \"a\"\nroot ::= \"b\"\n", "defined twice");
    refused("root = \"a\"\n", "expected '::='");
    refused("root ::= \"\\q\"\n", "unknown escape");
    refused("root ::= \"a\"**\n", "two repetition operators");
    refused("root ::= [z-a]\n", "below its start");
    refused("root ::= \"a\" @\n", "unexpected '@'");
    refused("root ::= \"a\"\n  ::= \"b\"\n", "line 2");
}

/* ---- masks against a brute-force check ------------------------------------------------------------- */

/* Every token's mask bit must equal whether the matcher accepts its bytes. */
static void check_mask(grammar_t *g, const char *prefix) {
    gmatch_t *m = gmatch_new(g, V);
    assert_non_null(m);
    assert_int_equal(gmatch_accept_bytes(m, prefix, strlen(prefix)), 0);
    const uint64_t *mask = gmatch_mask(m);
    assert_non_null(mask);
    uint64_t *copy = malloc(((size_t)gvocab_n_vocab(V) + 63) / 64 * 8);
    memcpy(copy, mask, ((size_t)gvocab_n_vocab(V) + 63) / 64 * 8);
    int n_allowed = 0;
    for (int id = 0; id < gvocab_n_vocab(V); id++) {
        int bit = (int)(copy[id >> 6] >> (id & 63)) & 1;
        n_allowed += bit;
        int want;
        if (tok_is_eog(M.tok, id)) {
            want = gmatch_can_end(m);
        } else {
            size_t len;
            const char *p = tok_piece(M.tok, id, &len);
            int type = tok_type(M.tok, id);
            if (type == TOK_CONTROL || type == TOK_UNUSED || len == 0) {
                want = 0;
            } else {
                gmatch_t *b = gmatch_new(g, V);
                want = gmatch_accept_bytes(b, prefix, strlen(prefix)) == 0 && gmatch_accept_bytes(b, p, len) == 0;
                gmatch_free(b);
            }
        }
        if (bit != want) fail_msg("token %d after '%s': mask %d, brute force %d", id, prefix, bit, want);
    }
    assert_true(n_allowed > 0);
    /* a second matcher in the same state gets the cached mask */
    gmatch_t *m2 = gmatch_new(g, V);
    assert_int_equal(gmatch_accept_bytes(m2, prefix, strlen(prefix)), 0);
    const uint64_t *again = gmatch_mask(m2);
    long computed, cached;
    gmatch_counts(m2, &computed, &cached);
    assert_int_equal(cached, 1);
    assert_memory_equal(again, copy, ((size_t)gvocab_n_vocab(V) + 63) / 64 * 8);
    free(copy);
    gmatch_free(m2);
    gmatch_free(m);
}

static void test_masks_match_brute_force(void **state) {
    (void)state;
    char *text = json_object_grammar();
    assert_non_null(text);
    grammar_t *g = compile(text);
    free(text);
    check_mask(g, "");
    check_mask(g, "{");
    check_mask(g, "{\"ke");
    check_mask(g, "{\"k\": 12");
    check_mask(g, "{\"k\": \"\xe2\x82");
    check_mask(g, "{\"k\": [true, nu");
    check_mask(g, "{\"k\": {}}");
    grammar_unref(g);
}

static void test_apply_and_tokens(void **state) {
    (void)state;
    grammar_t *g = compile("root ::= \"Hello\" \" world\"?\n");
    gmatch_t *m = gmatch_new(g, V);
    int nv = gvocab_n_vocab(V);
    float *logits = malloc((size_t)nv * sizeof *logits);
    for (int i = 0; i < nv; i++) logits[i] = 0;
    int allowed = gmatch_apply(m, logits);
    assert_true(allowed > 0 && allowed < 20);
    int hello = tok_find(M.tok, "Hello", 5);
    assert_true(hello >= 0);
    assert_true(logits[hello] == 0);
    int eos = tok_eos(M.tok);
    assert_true(isinf(logits[eos]));
    assert_int_equal(gmatch_accept_token(m, eos), -1); /* cannot end yet */
    assert_int_equal(gmatch_accept_token(m, hello), 0);
    assert_true(gmatch_can_end(m));
    assert_false(gmatch_done(m));
    for (int i = 0; i < nv; i++) logits[i] = 0;
    gmatch_apply(m, logits);
    assert_true(logits[eos] == 0); /* may end here */
    assert_int_equal(gmatch_accept_bytes(m, " world", 6), 0);
    assert_true(gmatch_done(m));
    assert_int_equal(gmatch_accept_token(m, eos), 0);
    free(logits);
    gmatch_free(m);
    grammar_unref(g);
}

/* A grammar so ambiguous that a mask would take too long: refused by the
 * walk's work budget instead of holding the scheduler's thread. */
static void test_ambiguity_budget(void **state) {
    (void)state;
    size_t cap = 64 + 2000 * 8;
    char *text = malloc(cap);
    strcpy(text, "root ::=");
    for (int i = 0; i < 2000; i++) strcat(text, " [a-z]*");
    strcat(text, " \"!\"\n");
    grammar_t *g = compile(text);
    free(text);
    gmatch_t *m = gmatch_new(g, V);
    assert_non_null(m);
    assert_null(gmatch_mask(m));
    gmatch_free(m);
    grammar_unref(g);
}

/* ---- JSON Schema ------------------------------------------------------------------------------------- */

static grammar_t *from_schema(const char *schema_json) {
    json_error_t je;
    json_t *s = json_loads(schema_json, 0, &je);
    if (!s) fail_msg("bad test JSON: %s", je.text);
    char err[300];
    int oom;
    char *text = json_schema_grammar(s, err, sizeof err, &oom);
    json_decref(s);
    if (!text) fail_msg("schema refused: %s", err);
    grammar_t *g = compile(text);
    free(text);
    return g;
}

static void schema_refused(const char *schema_json, const char *needle) {
    json_t *s = json_loads(schema_json, JSON_DECODE_ANY, NULL);
    assert_non_null(s);
    char err[300];
    int oom;
    char *text = json_schema_grammar(s, err, sizeof err, &oom);
    json_decref(s);
    if (text) { free(text); fail_msg("schema accepted: %s", schema_json); }
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_schema_object(void **state) {
    (void)state;
    grammar_t *g = from_schema(
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":5},"
        "\"age\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]},"
        "\"minItems\":1,\"maxItems\":2},\"ok\":{\"type\":[\"boolean\",\"null\"]}},"
        "\"required\":[\"name\",\"tags\"],\"additionalProperties\":false}");
    assert_true(accepts(g, "{\"name\": \"Bob\", \"tags\": [\"a\"]}"));
    assert_true(accepts(g, "{\"name\":\"Bob\",\"age\":-3,\"tags\":[\"a\",\"b\"],\"ok\":null}"));
    assert_true(accepts(g, "{\"name\":\"Bob\",\"tags\":[\"b\"],\"ok\":true}"));
    assert_false(accepts(g, "{\"tags\":[\"a\"]}"));                      /* name required */
    assert_false(accepts(g, "{\"name\":\"Bobbyy\",\"tags\":[\"a\"]}"));   /* maxLength */
    assert_false(accepts(g, "{\"name\":\"B\",\"tags\":[]}"));             /* minItems */
    assert_false(accepts(g, "{\"name\":\"B\",\"tags\":[\"a\",\"a\",\"a\"]}"));
    assert_false(accepts(g, "{\"name\":\"B\",\"tags\":[\"c\"]}"));        /* enum */
    assert_false(accepts(g, "{\"name\":\"B\",\"age\":1.5,\"tags\":[\"a\"]}"));
    assert_false(accepts(g, "{\"name\":\"B\",\"tags\":[\"a\"],\"x\":1}")); /* no extra keys */
    assert_false(accepts(g, "{\"name\":\"B\",,\"tags\":[\"a\"]}"));
    grammar_unref(g);
}

static void test_schema_refs_anyof(void **state) {
    (void)state;
    grammar_t *g = from_schema(
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"const\":1},"
        "\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},"
        "\"required\":[\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}");
    assert_true(accepts(g, "{\"v\":1,\"next\":null}"));
    assert_true(accepts(g, "{\"v\":1,\"next\":{\"v\":1,\"next\":{\"v\":1,\"next\":null}}}"));
    assert_false(accepts(g, "{\"v\":2,\"next\":null}"));
    assert_false(accepts(g, "{\"v\":1}"));
    grammar_unref(g);
    g = from_schema("{\"oneOf\":[{\"type\":\"number\"},{\"type\":\"string\",\"minLength\":2}]}");
    assert_true(accepts(g, "3.25e-2"));
    assert_true(accepts(g, "\"ab\""));
    assert_false(accepts(g, "\"a\""));
    assert_false(accepts(g, "01"));
    grammar_unref(g);
}

static void test_schema_refusals(void **state) {
    (void)state;
    schema_refused("{\"type\":\"string\",\"pattern\":\"^a\"}", "'pattern'");
    schema_refused("{\"type\":\"integer\",\"minimum\":3}", "'minimum'");
    schema_refused("{\"type\":\"string\",\"format\":\"date\"}", "'format'");
    schema_refused("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"x-foo\":1}}}", "'x-foo' at schema.a");
    schema_refused("{\"type\":\"object\",\"required\":[\"b\"],\"properties\":{}}", "'b'");
    schema_refused("{\"$ref\":\"#/$defs/missing\"}", "does not resolve");
    schema_refused("{\"$ref\":\"http://example.com/s.json\"}", "only local");
    schema_refused("{\"type\":\"strung\"}", "unknown type");
    schema_refused("{\"allOf\":[{\"type\":\"string\"},{\"maxLength\":3}]}", "allOf");
    schema_refused("{\"type\":\"string\",\"anyOf\":[{}]}", "together with");
    schema_refused("false", "no value");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_alternation),
        cmocka_unit_test(test_repetition),
        cmocka_unit_test(test_classes_and_utf8),
        cmocka_unit_test(test_multiline_comments_groups),
        cmocka_unit_test(test_recursion),
        cmocka_unit_test(test_bad_grammars),
        cmocka_unit_test(test_masks_match_brute_force),
        cmocka_unit_test(test_apply_and_tokens),
        cmocka_unit_test(test_ambiguity_budget),
        cmocka_unit_test(test_schema_object),
        cmocka_unit_test(test_schema_refs_anyof),
        cmocka_unit_test(test_schema_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
