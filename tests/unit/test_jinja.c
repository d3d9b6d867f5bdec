/* test_jinja.c - the Jinja interpreter (engine/model/jinja*.c): the lexer's
 * whitespace rules, the parser's precedence and errors, the evaluator's
 * Python semantics, and the limits. The comparison with jinja2 on real
 * chat templates is tests/test_chat_templates.py; these pin the pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../engine/model/jinja.h"

/* Renders src with vars (JSON text, may be NULL); returns the output or
 * NULL with *err filled. */
static char *render_lim(const char *src, const char *vars, const jinja_limits_t *lim, jinja_error_t *err) {
    jinja_tmpl_t *t = jinja_parse(src, strlen(src), err);
    if (!t) return NULL;
    json_t *v = vars ? json_loads(vars, 0, NULL) : json_object();
    assert_non_null(v);
    char *out = jinja_render(t, v, lim, NULL, err);
    json_decref(v);
    jinja_free(t);
    return out;
}

static void expect(const char *src, const char *vars, const char *want) {
    jinja_error_t err;
    char *got = render_lim(src, vars, NULL, &err);
    if (!got) fail_msg("%s: %s", src, err.msg);
    if (strcmp(got, want)) fail_msg("%s\n  got:  [%s]\n  want: [%s]", src, got, want);
    free(got);
}

static void expect_error(const char *src, const char *vars, const jinja_limits_t *lim, const char *needle) {
    jinja_error_t err;
    char *got = render_lim(src, vars, lim, &err);
    if (got) fail_msg("%s rendered [%s], expected an error with '%s'", src, got, needle);
    if (!strstr(err.msg, needle)) fail_msg("%s: error [%s] lacks '%s'", src, err.msg, needle);
}

static void test_lexer_whitespace(void **state) {
    (void)state;
    expect("a\n  {% if true %}\n  b\n  {% endif %}\nc", NULL, "a\n  b\nc");  /* trim + lstrip blocks */
    expect("a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc");
    expect("x\n  {%+ if true %}y{% endif %}", NULL, "x\n  y");          /* + keeps the indentation */
    expect("{{ 1 }}\n{{ 2 }}", NULL, "1\n2");                            /* no trim after }} */
    expect("a {# note #}\nb", NULL, "a b");                               /* a comment trims too */
    expect("a\r\nb\n", NULL, "a\nb");                                     /* newlines normalized, last dropped */
    expect("{{ 'x' }}{#- c -#}  \n {{ 'y' }}", NULL, "xy");
    expect("{% if true %}\n  {% if true %}\nz\n  {% endif %}\n{% endif %}", NULL, "z\n");
}

static void test_literals_and_escapes(void **state) {
    (void)state;
    expect("{{ 'a\\n\\t\\\\\\'' }}|{{ \"\\u00e9\\x41\" }}|{{ 'ab' 'cd' }}", NULL, "a\n\t\\'|\xc3\xa9" "A|abcd");
    expect("{{ 1_000 }} {{ 0.5 }} {{ 1e3 }} {{ true }} {{ None }} {{ [1, (2, 3), ()] }}", NULL,
           "1000 0.5 1000.0 True None [1, (2, 3), ()]");
    expect("{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 2.0 ** 0.5 }} {{ 100.0 }}", NULL,
           "0.30000000000000004 1e+16 1e-05 1.4142135623730951 100.0");
    expect("{{ {'k': \"it's\", 'n': none} }}", NULL, "{'k': \"it's\", 'n': None}");
}

static void test_operators(void **state) {
    (void)state;
    expect("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ -7.5 // 2 }}", NULL,
           "3 -4 2 -2 3.5 -4.0");
    expect("{{ 1 + 2 * 3 ** 2 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 'ab' * 2 }} {{ [0] * 3 }}", NULL,
           "19 9 4 abab [0, 0, 0]");
    expect("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' ~ 1 ~ none }} {{ 'b' in 'abc' }}", NULL,
           "True False True a1None True");
    expect("{{ 0 or '' or 'x' }} {{ 1 and 0 }} {{ not 1 }} {{ 3 not in [1, 2] }}", NULL, "x 0 False True");
    expect("{{ 'y' if 0 else 'n' }}|{{ 'y' if 0 }}|{{ 'a' if 1 else 'b' if 1 else 'c' }}", NULL, "n||a");
    expect("{{ x | default(1) + 1 }} {{ -1 | abs }}", NULL, "2 1");  /* filters bind tighter, after unary - */
}

static void test_subscripts(void **state) {
    (void)state;
    const char *v = "{\"l\": [1, 2, 3, 4], \"s\": \"h\\u00e9llo\", \"d\": {\"a\": {\"b\": 5}}}";
    expect("{{ l[::-1] }} {{ l[1:3] }} {{ l[-1] }} {{ l[:-2] }} {{ l[::2] }} {{ l[10] }}.", v,
           "[4, 3, 2, 1] [2, 3] 4 [1, 2] [1, 3] .");
    expect("{{ s[1] }} {{ s[::-1] }} {{ s[1:3] }} {{ s | length }}", v, "\xc3\xa9 oll\xc3\xa9h \xc3\xa9l 5");
    expect("{{ d.a.b }} {{ d['a']['b'] }} {{ d.a.c }}. {{ d.x is defined }} {{ l.0 }}", v, "5 5 . False 1");
}

static void test_statements(void **state) {
    (void)state;
    expect("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
           "{{ loop.revindex0 }};{% endfor %}",
           NULL, "1TrueFalse32;2FalseFalse31;3FalseTrue30;");
    expect("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{{ v }}{% else %}none{% endfor %}", NULL, "a1b2");
    expect("{% for x in [] %}x{% else %}none{% endfor %}", NULL, "none");
    expect("{% for x in range(9) if x is odd %}{{ x }}/{{ loop.length }} {% endfor %}", NULL, "1/4 3/4 5/4 7/4 ");
    expect("{% for x in range(9) %}{% if x == 1 %}{% continue %}{% endif %}{% if x > 3 %}{% break %}"
           "{% endif %}{{ x }}{% endfor %}", NULL, "023");
    expect("{% set x = 1 %}{% for i in [0] %}{% set x = 2 %}{% endfor %}{{ x }}", NULL, "1");  /* loop scope */
    expect("{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}", NULL, "2");      /* if: none */
    expect("{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
           NULL, "10");
    expect("{% set b %}[{{ 1 }}]{% endset %}{{ b }}{{ b | length }}", NULL, "[1]3");
    expect("{% macro m(a, b=2) %}{{ a }}-{{ b }}{% endmacro %}{{ m(1) }} {{ m(b=3, a=4) }}", NULL, "1-2 4-3");
    expect("{% if 0 %}a{% elif none %}b{% elif 'x' %}c{% else %}d{% endif %}", NULL, "c");
    expect("{% generation %}g{% endgeneration %}", NULL, "g");
}

static void test_filters_and_methods(void **state) {
    (void)state;
    const char *v = "{\"m\": [{\"role\": \"user\", \"c\": 1}, {\"role\": \"bot\"}, {\"role\": \"user\", \"c\": 3}]}";
    expect("{{ m | selectattr('role', 'equalto', 'user') | map(attribute='c') | join(',') }}", v, "1,3");
    expect("{{ m | rejectattr('c') | list | length }} {{ m | selectattr('c', 'defined') | list | length }}", v, "1 2");
    expect("{{ m | first | tojson }}", v, "{\"role\": \"user\", \"c\": 1}");
    expect("{{ {'a': [1, {'b': none}]} | tojson(indent=2) }}", NULL,
           "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ]\n}");
    expect("{{ 'x<y>&\"\\u00e9' | tojson }}", NULL, "\"x<y>&\\\"\xc3\xa9\"");  /* HF's: no HTML escaping */
    expect("{{ '  a  ' | trim }}|{{ 'Hello' | upper }}|{{ 'hELLO wORLD' | title }}|{{ 'aBC' | capitalize }}",
           NULL, "a|HELLO|Hello World|Abc");
    expect("{{ 'a\\nb' | indent(2) }}|{{ 2.5 | round }}|{{ 2.567 | round(2) }}|{{ '7' | int * 2 }}", NULL,
           "a\n  b|2.0|2.57|14");
    expect("{{ '  x y '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('a') }}|{{ 'x'.upper() }}",
           NULL, "x y|['a', 'b']|True|X");
    expect("{{ {'a': 1}.get('b', 'd') }} {{ {'a': 1}.keys() | list }} {{ 'a-b'.replace('-', '') }}", NULL,
           "d ['a'] ab");
    expect("{% set l = [] %}{% set _ = l.append(1) %}{{ l }}", NULL, "[1]");
}

static void test_parse_errors(void **state) {
    (void)state;
    expect_error("{% if x %}", NULL, NULL, "line 1: unexpected end of template: 'if' is not closed by 'endif'");
    expect_error("a\nb\n{{ x | nope }}", NULL, NULL, "line 3: no filter named 'nope'");
    expect_error("{{ x is nope }}", NULL, NULL, "no test named 'nope'");
    expect_error("{% frobnicate %}", NULL, NULL, "unknown tag 'frobnicate'");
    expect_error("{% for x in y %}{% endif %}", NULL, NULL, "unexpected 'endif'");
    expect_error("{{ 1 + }}", NULL, NULL, "unexpected");
    expect_error("{# x", NULL, NULL, "missing end of comment tag");
    expect_error("{{ 'x }}", NULL, NULL, "unterminated string");
    expect_error("{% continue %}", NULL, NULL, "outside a loop");
    expect_error("{% set a, b = 1, 2 %}", NULL, NULL, "tuple assignment is not supported");
}

static void test_runtime_errors(void **state) {
    (void)state;
    expect_error("\n{{ x.y }}", NULL, NULL, "line 2: 'x' is undefined");
    expect_error("{{ 1 + 'a' }}", NULL, NULL, "unsupported operand types for +: 'int' and 'str'");
    expect_error("{{ 1 // 0 }}", NULL, NULL, "division by zero");
    expect_error("{{ 9223372036854775807 + 1 }}", NULL, NULL, "integer overflow");
    expect_error("{{ foo(1) }}", NULL, NULL, "'foo' is undefined");
    expect_error("{{ 'a'.nomethod() }}", NULL, NULL, "'str' object has no method 'nomethod'");
    jinja_error_t err;
    assert_null(render_lim("{{ raise_exception('bad roles') }}", NULL, NULL, &err));
    assert_int_equal(err.raised, 1);
    assert_string_equal(err.msg, "line 1: bad roles");
}

static void test_limits(void **state) {
    (void)state;
    jinja_limits_t lim = jinja_default_limits();
    lim.max_steps = 1000;
    expect_error("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", NULL, &lim,
                 "more than 1000 steps");
    lim = jinja_default_limits();
    lim.max_output = 100;
    expect_error("{% for i in range(50) %}xyz{% endfor %}", NULL, &lim, "output exceeds 100 bytes");
    lim = jinja_default_limits();
    lim.max_memory = 1 << 20;
    expect_error("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 NULL, &lim, "memory");
    expect_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, NULL, "nested more than");
    char deep[20010];
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = 0;
    char src[20100];
    snprintf(src, sizeof src, "{{ %s }}", deep);
    expect_error(src, NULL, NULL, "nested more than 200 deep");
    expect_error("{{ range(1000000) }}", NULL, NULL, "range too big");
}

static void test_strftime_now(void **state) {
    (void)state;  /* HF's global: the local time formatted; compared by its date part */
    jinja_error_t err;
    char *got = render_lim("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now is defined }}", NULL, NULL, &err);
    assert_non_null(got);
    char want[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(want, sizeof want, "%Y-%m-%d|True", &tm);
    assert_string_equal(got, want);
    free(got);
}

static void test_render_is_reentrant(void **state) {
    (void)state;  /* one parsed template, many renders with different variables */
    jinja_error_t err;
    const char *src = "{% for m in messages %}{{ m }};{% endfor %}";
    jinja_tmpl_t *t = jinja_parse(src, strlen(src), &err);
    assert_non_null(t);
    for (int i = 0; i < 3; i++) {
        json_t *v = json_pack("{s:[i,i]}", "messages", i, i + 1);
        char *out = jinja_render(t, v, NULL, NULL, &err);
        char want[32];
        snprintf(want, sizeof want, "%d;%d;", i, i + 1);
        assert_string_equal(out, want);
        free(out);
        json_decref(v);
    }
    jinja_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lexer_whitespace),
        cmocka_unit_test(test_literals_and_escapes),
        cmocka_unit_test(test_operators),
        cmocka_unit_test(test_subscripts),
        cmocka_unit_test(test_statements),
        cmocka_unit_test(test_filters_and_methods),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_runtime_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_strftime_now),
        cmocka_unit_test(test_render_is_reentrant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
