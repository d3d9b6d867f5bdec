/* fuzz_grammar.c - libFuzzer: GBNF parsing and matching, and JSON Schema ->
 * GBNF, on arbitrary input. Input: a grammar (GBNF text, or a JSON Schema
 * when it starts with '{'), a NUL, then bytes fed to a matcher of the
 * compiled grammar (one at a time, then all at once). No vocabulary: byte
 * matching only (token masks are covered by tests/unit/test_grammar.c).
 * Seeds: tests/fuzz/corpus/grammar. */
#include "../../engine/runtime/grammar.h"
#include "../../engine/runtime/json_schema.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    size_t glen = strnlen(buf, size);
    const char *input = glen < size ? buf + glen + 1 : "";
    size_t ilen = glen < size ? size - glen - 1 : 0;
    char err[320];
    char *text = NULL;
    if (glen && buf[0] == '{') {
        json_t *schema = json_loadb(buf, glen, 0, NULL);
        int oom;
        if (schema) text = json_schema_grammar(schema, err, sizeof err, &oom);
        json_decref(schema);
    } else {
        text = strndup(buf, glen);
    }
    grammar_t *g = text ? grammar_parse(text, strlen(text), err, sizeof err) : NULL;
    if (g) {
        gmatch_t *m = gmatch_new(g, NULL);
        for (size_t i = 0; m && i < ilen; i++)
            if (gmatch_accept_bytes(m, input + i, 1) != 0) break;
        if (m) (void)gmatch_can_end(m);
        gmatch_free(m);
        m = gmatch_new(g, NULL);
        if (m) (void)gmatch_accept_bytes(m, input, ilen);
        gmatch_free(m);
        grammar_unref(g);
    }
    free(text);
    free(buf);
    return 0;
}
