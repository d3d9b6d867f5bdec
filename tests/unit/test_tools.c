/* test_tools.c - tool calling's formats without a model: the prompt text of
 * both template families (ChatML / Hermes-Qwen and Llama-3.1), replies parsed
 * whole and streamed a byte at a time (the same result), calls cut short,
 * and the forcing grammar (it admits a valid call, refuses other names and
 * bad arguments). The served ChatML path is tested end to end in
 * tests/test_serve_tools.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/runtime/grammar.h"
#include "../../server/tools.h"

static const char REQ[] =
    "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather\","
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"},"
    "\"unit\": {\"enum\": [\"c\", \"f\"]}}, \"required\": [\"city\"], \"additionalProperties\": false}}},"
    "{\"type\": \"function\", \"function\": {\"name\": \"now\"}}]%s}";

static void load(tools_t *t, chat_kind_t kind, const char *extra) {
    char buf[2048];
    snprintf(buf, sizeof buf, REQ, extra);
    json_t *req = json_loads(buf, 0, NULL);
    assert_non_null(req);
    reply_t err = {0};
    assert_int_equal(tools_parse(req, kind, t, &err), 0);
    json_decref(req);
}

typedef struct { char text[4096]; size_t len; json_t *calls; } got_t;

static void on_content(void *ud, const char *text, size_t len) {
    got_t *g = ud;
    assert_true(g->len + len < sizeof g->text);
    memcpy(g->text + g->len, text, len);
    g->len += len;
    g->text[g->len] = 0;
}

static void on_call(void *ud, int index, json_t *call) {
    got_t *g = ud;
    assert_int_equal(index, (int)json_array_size(g->calls));
    json_array_append(g->calls, call);
}

/* Streams reply a byte at a time; checks it against tools_extract. */
static void stream_matches_whole(const tools_t *t, const char *reply, got_t *g) {
    memset(g, 0, sizeof *g);
    g->calls = json_array();
    tools_stream_t s;
    tools_stream_init(&s, t);
    for (size_t i = 0; reply[i]; i++) assert_int_equal(tools_stream_feed(&s, reply + i, 1, 0, on_content, on_call, g), 0);
    assert_int_equal(tools_stream_feed(&s, "", 0, 1, on_content, on_call, g), 0);
    tools_stream_free(&s);
    char *content = NULL;
    json_t *calls = tools_extract(t, reply, strlen(reply), &content);
    assert_string_equal(content ? content : "", g->text);
    assert_int_equal(calls ? json_array_size(calls) : 0, json_array_size(g->calls));
    for (size_t i = 0; calls && i < json_array_size(calls); i++) {
        json_t *a = json_object_get(json_array_get(calls, i), "function");
        json_t *b = json_object_get(json_array_get(g->calls, i), "function");
        assert_true(json_equal(a, b));
    }
    free(content);
    json_decref(calls);
}

static const char *fn_name(json_t *call) {
    return json_string_value(json_object_get(json_object_get(call, "function"), "name"));
}

static const char *fn_args(json_t *call) {
    return json_string_value(json_object_get(json_object_get(call, "function"), "arguments"));
}

static void test_chatml_reply(void **state) {
    (void)state;
    tools_t t;
    load(&t, CHAT_CHATML, "");
    got_t g;
    stream_matches_whole(&t, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                             "</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n", &g);
    assert_string_equal(g.text, "Let me look.");
    assert_int_equal(json_array_size(g.calls), 2);
    json_t *c0 = json_array_get(g.calls, 0);
    assert_string_equal(fn_name(c0), "get_weather");
    assert_string_equal(fn_args(c0), "{\"city\":\"Paris\"}");
    assert_true(!strncmp(json_string_value(json_object_get(c0, "id")), "call_", 5));
    assert_string_equal(fn_name(json_array_get(g.calls, 1)), "now");
    json_decref(g.calls);
    /* plain text, "<" that is not a call, an unknown function, a call cut short */
    stream_matches_whole(&t, "a < b and <tool is not a tag", &g);
    assert_string_equal(g.text, "a < b and <tool is not a tag");
    assert_int_equal(json_array_size(g.calls), 0);
    json_decref(g.calls);
    stream_matches_whole(&t, "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>", &g);
    assert_string_equal(g.text, "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>");
    assert_int_equal(json_array_size(g.calls), 0);
    json_decref(g.calls);
    stream_matches_whole(&t, "<tool_call>\n{\"name\": \"get_wea", &g);
    assert_string_equal(g.text, "<tool_call>\n{\"name\": \"get_wea");
    json_decref(g.calls);
    tools_free(&t);
    /* parallel_tool_calls false: the first call only; a second stays text */
    load(&t, CHAT_CHATML, ", \"parallel_tool_calls\": false");
    stream_matches_whole(&t, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>"
                             "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>", &g);
    assert_int_equal(json_array_size(g.calls), 1);
    assert_string_equal(g.text, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>");
    json_decref(g.calls);
    tools_free(&t);
}

static void test_llama3_reply(void **state) {
    (void)state;
    tools_t t;
    load(&t, CHAT_LLAMA3, "");
    got_t g;
    stream_matches_whole(&t, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"unit\": \"c\"}}", &g);
    assert_int_equal(json_array_size(g.calls), 1);
    assert_string_equal(fn_args(json_array_get(g.calls, 0)), "{\"city\":\"Oslo\",\"unit\":\"c\"}");
    assert_string_equal(g.text, "");
    json_decref(g.calls);
    stream_matches_whole(&t, "It is sunny.", &g);
    assert_string_equal(g.text, "It is sunny.");
    assert_int_equal(json_array_size(g.calls), 0);
    json_decref(g.calls);
    stream_matches_whole(&t, "{\"name\": \"get_weather\", \"parameters\": {\"ci", &g); /* cut short */
    assert_string_equal(g.text, "{\"name\": \"get_weather\", \"parameters\": {\"ci");
    json_decref(g.calls);
    tools_free(&t);
}

static void test_prompt_text(void **state) {
    (void)state;
    tools_t t;
    load(&t, CHAT_CHATML, ", \"parallel_tool_calls\": false");
    char *p = tools_preamble(&t);
    assert_non_null(strstr(p, "<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"get_weather\""));
    assert_non_null(strstr(p, "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"));
    assert_non_null(strstr(p, "one function"));
    free(p);
    json_t *calls = json_loads("[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"now\", "
                               "\"arguments\": \"{\\\"tz\\\": \\\"UTC\\\"}\"}}]", 0, NULL);
    reply_t err = {0};
    char *text = tools_calls_text(CHAT_CHATML, "", calls, 0, &err);
    assert_string_equal(text, "<tool_call>\n{\"name\":\"now\",\"arguments\":{\"tz\":\"UTC\"}}\n</tool_call>");
    free(text);
    text = tools_calls_text(CHAT_LLAMA3, "", calls, 0, &err);
    assert_string_equal(text, "{\"name\":\"now\",\"parameters\":{\"tz\":\"UTC\"}}");
    free(text);
    json_decref(calls);
    text = tools_result_text(CHAT_CHATML, "21 C");
    assert_string_equal(text, "<tool_response>\n21 C\n</tool_response>");
    free(text);
    assert_string_equal(tools_result_role(CHAT_LLAMA3), "ipython");
    tools_free(&t);
    load(&t, CHAT_LLAMA3, "");
    p = tools_preamble(&t);
    assert_non_null(strstr(p, "\"parameters\": dictionary of argument name and its value"));
    assert_non_null(strstr(p, "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}"));
    free(p);
    tools_free(&t);
}

static grammar_t *forcing_grammar(const tools_t *t) {
    char err[300];
    int oom;
    char *text = tools_grammar(t, err, sizeof err, &oom);
    if (!text) fail_msg("tools_grammar: %s", err);
    grammar_t *g = grammar_parse(text, strlen(text), err, sizeof err);
    if (!g) fail_msg("grammar refused: %s\n%s", err, text);
    free(text);
    return g;
}

static int accepts(grammar_t *g, const char *s) {
    gmatch_t *m = gmatch_new(g, NULL); /* byte matching needs no vocabulary */
    assert_non_null(m);
    int ok = gmatch_accept_bytes(m, s, strlen(s)) == 0 && gmatch_can_end(m);
    gmatch_free(m);
    return ok;
}

static void test_forcing_grammar(void **state) {
    (void)state;
    tools_t t;
    load(&t, CHAT_CHATML, ", \"tool_choice\": \"required\"");
    grammar_t *g = forcing_grammar(&t);
    const char *call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
    assert_true(accepts(g, call));
    assert_true(accepts(g, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n"
                           "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"rm\", \"arguments\": {}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"c\"}}\n</tool_call>"));
    assert_false(accepts(g, "Sure!"));
    grammar_unref(g);
    tools_free(&t);
    load(&t, CHAT_LLAMA3, ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}");
    g = forcing_grammar(&t);
    assert_true(accepts(g, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\", \"unit\": \"f\"}}"));
    assert_false(accepts(g, "{\"name\": \"now\", \"parameters\": {}}"));
    grammar_unref(g);
    tools_free(&t);
    load(&t, CHAT_CHATML, ", \"tool_choice\": \"required\", \"parallel_tool_calls\": false");
    g = forcing_grammar(&t);
    assert_true(accepts(g, call));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n"
                            "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"));
    grammar_unref(g);
    tools_free(&t);
}

static void test_template_messages(void **state) {
    (void)state;
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", "
                              "\"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", "
                              "\"function\": {\"name\": \"now\", \"arguments\": \"{\\\"tz\\\": 1}\"}}]}]", 0, NULL);
    assert_non_null(msgs);
    json_t *t = tools_template_messages(msgs);
    json_t *args = json_object_get(json_object_get(json_array_get(json_object_get(json_array_get(t, 1), "tool_calls"), 0),
                                                   "function"), "arguments");
    assert_true(json_is_object(args));
    assert_int_equal(json_integer_value(json_object_get(args, "tz")), 1);
    /* the request itself is untouched */
    json_t *orig = json_object_get(json_object_get(json_array_get(json_object_get(json_array_get(msgs, 1), "tool_calls"), 0),
                                                   "function"), "arguments");
    assert_true(json_is_string(orig));
    json_decref(t);
    json_decref(msgs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml_reply),
        cmocka_unit_test(test_llama3_reply),
        cmocka_unit_test(test_prompt_text),
        cmocka_unit_test(test_forcing_grammar),
        cmocka_unit_test(test_template_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
