/* json_schema.c - JSON Schema -> GBNF (see json_schema.h for what is covered).
 *
 * Each (sub)schema becomes one rule, memoized by its node in the document,
 * so a $ref to a definition met twice (or recursively) is one rule, which
 * is what lets recursive schemas terminate. The rule is registered before
 * its body is generated for the same reason.
 */
#include "json_schema.h"

#include "../model/sbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_RULES 20000
#define MAX_COUNT 4096 /* minItems, maxItems, minLength, maxLength */

typedef struct { json_t *schema; char *name; } memo_t;

struct jsg {
    sbuf_t text;
    memo_t *memo;
    size_t n_memo, cap_memo;
    int have_base, depth, failed, oom;
    char err[300];
};

/* ---- strings -------------------------------------------------------------------------------- */

char *jsg_literal(const char *s, size_t n) {
    sbuf_t b = {0};
    sb_add(&b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { char e[3] = {'\\', (char)c, 0}; sb_add(&b, e); }
        else if (c == '\n') sb_add(&b, "\\n");
        else if (c == '\r') sb_add(&b, "\\r");
        else if (c == '\t') sb_add(&b, "\\t");
        else if (c < 0x20 || c == 0x7f) sb_printf(&b, "\\x%02X", c);
        else sb_addn(&b, (const char *)&c, 1);
    }
    sb_add(&b, "\"");
    return sb_take(&b);
}

/* ---- errors, rules ------------------------------------------------------------------------------ */

static const char *fail(jsg_t *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *fail(jsg_t *g, const char *fmt, ...) {
    if (g->failed) return NULL;
    g->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return NULL;
}

static const char *fail_oom(jsg_t *g) {
    const char *r = fail(g, "out of memory");
    g->oom = 1;
    return r;
}

jsg_t *jsg_new(void) { return calloc(1, sizeof(jsg_t)); }

void jsg_free(jsg_t *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_memo; i++) free(g->memo[i].name);
    free(g->memo);
    free(g->text.buf);
    free(g);
}

int jsg_rule(jsg_t *g, const char *name, const char *body) {
    sb_printf(&g->text, "%s ::= %s\n", name, body);
    return g->text.oom ? -1 : 0;
}

char *jsg_text(jsg_t *g) {
    if (g->text.oom) return NULL;
    return strdup(g->text.buf ? g->text.buf : "");
}

const char *jsg_error(const jsg_t *g, int *out_of_memory) {
    if (out_of_memory) *out_of_memory = g->oom || g->text.oom;
    return g->text.oom ? "out of memory" : g->err;
}

/* The JSON building blocks, added once. Whitespace is bounded so that a
 * model cannot pad forever; numbers have bounded digits for the same reason. */
static void base(jsg_t *g) {
    if (g->have_base) return;
    g->have_base = 1;
    sb_add(&g->text,
           "ws ::= [ \\t\\n]{0,16}\n"
           "jchar ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n"
           "jstr ::= \"\\\"\" jchar* \"\\\"\"\n"
           "jint ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} )\n"
           "jnum ::= jint ( \".\" [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?\n"
           "jbool ::= \"true\" | \"false\"\n"
           "jnull ::= \"null\"\n"
           "jval ::= jobj | jarr | jstr | jnum | jbool | jnull\n"
           "jobj ::= \"{\" ws ( jstr ws \":\" ws jval ws ( \",\" ws jstr ws \":\" ws jval ws )* )? \"}\"\n"
           "jarr ::= \"[\" ws ( jval ws ( \",\" ws jval ws )* )? \"]\"\n");
}

const char *jsg_any_value(jsg_t *g) { base(g); return "jval"; }
const char *jsg_any_object(jsg_t *g) { base(g); return "jobj"; }
const char *jsg_ws(jsg_t *g) { base(g); return "ws"; }

/* A fresh rule name from the schema's path. */
static char *rule_name(jsg_t *g, const char *hint) {
    char name[64];
    int n = snprintf(name, sizeof name, "s%zu-", g->n_memo);
    for (const char *p = hint; *p && n < 40; p++)
        name[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ? *p : '-';
    name[n] = 0;
    return strdup(name);
}

/* ---- keywords ---------------------------------------------------------------------------------- */

static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples", "$schema", "$id",
                                          "$comment", "deprecated", "readOnly", "writeOnly", "$defs",
                                          "definitions", NULL};
static const char *const KEYWORDS[] = {"type", "properties", "required", "additionalProperties", "items",
                                       "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf",
                                       "$ref", "minLength", "maxLength", NULL};

static int in_list(const char *k, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(k, *list)) return 1;
    return 0;
}

/* Refuses keywords outside the supported set; with only_annotations, also
 * those that would combine with $ref / anyOf (intersections). */
static int check_keys(jsg_t *g, json_t *s, const char *path, const char *only_with) {
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (in_list(k, ANNOTATIONS)) continue;
        if (!in_list(k, KEYWORDS)) return fail(g, "unsupported JSON Schema keyword '%s' at %s", k, path), -1;
        if (only_with && strcmp(k, only_with))
            return fail(g, "'%s' together with '%s' at %s is not supported", k, only_with, path), -1;
    }
    return 0;
}

enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_NUM = 8, T_INT = 16, T_BOOL = 32, T_NULL = 64 };

static int type_bit(const char *t) {
    static const char *names[] = {"object", "array", "string", "number", "integer", "boolean", "null"};
    for (int i = 0; i < 7; i++)
        if (!strcmp(t, names[i])) return 1 << i;
    return 0;
}

static int types_of(jsg_t *g, json_t *s, const char *path) {
    json_t *t = json_object_get(s, "type");
    if (!t) return 0;
    if (json_is_string(t)) {
        int b = type_bit(json_string_value(t));
        if (!b) fail(g, "unknown type '%s' at %s", json_string_value(t), path);
        return b ? b : -1;
    }
    if (!json_is_array(t) || json_array_size(t) == 0) return fail(g, "'type' at %s must be a string or a list", path), -1;
    int bits = 0;
    size_t i;
    json_t *e;
    json_array_foreach(t, i, e) {
        int b = json_is_string(e) ? type_bit(json_string_value(e)) : 0;
        if (!b) return fail(g, "unknown type in 'type' at %s", path), -1;
        bits |= b;
    }
    return bits;
}

static int value_has_type(json_t *v, int types) {
    if (!types) return 1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: return types & T_OBJ;
    case JSON_ARRAY: return types & T_ARR;
    case JSON_STRING: return types & T_STR;
    case JSON_INTEGER: return types & (T_INT | T_NUM);
    case JSON_REAL: return types & T_NUM;
    case JSON_TRUE: case JSON_FALSE: return types & T_BOOL;
    default: return types & T_NULL;
    }
}

static long get_count(jsg_t *g, json_t *s, const char *key, long dflt, const char *path) {
    json_t *v = json_object_get(s, key);
    if (!v) return dflt;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_COUNT)
        return fail(g, "'%s' at %s must be an integer in [0, %d]", key, path, MAX_COUNT), -2;
    return (long)json_integer_value(v);
}

/* "{min,max}" for a repetition (max < 0: unbounded). */
static void rep(sbuf_t *b, long lo, long hi) {
    if (hi < 0) sb_printf(b, "{%ld,}", lo);
    else sb_printf(b, "{%ld,%ld}", lo, hi);
}

/* ---- bodies -------------------------------------------------------------------------------------- */

static const char *schema_rule(jsg_t *g, json_t *s, json_t *doc, const char *path);

static json_t *resolve(jsg_t *g, json_t *doc, const char *ref, const char *path) {
    if (ref[0] != '#') return fail(g, "only local $ref ('#/...') is supported ('%s' at %s)", ref, path), NULL;
    json_t *cur = doc;
    const char *p = ref + 1;
    while (*p == '/') {
        p++;
        char tok[256];
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char c = *p;
            if (c == '~' && (p[1] == '0' || p[1] == '1')) c = *++p == '0' ? '~' : '/';
            if (n + 1 < sizeof tok) tok[n++] = c;
        }
        tok[n] = 0;
        cur = json_is_object(cur) ? json_object_get(cur, tok)
              : json_is_array(cur) ? json_array_get(cur, (size_t)strtoul(tok, NULL, 10)) : NULL;
        if (!cur) break;
    }
    if (!cur || *p) return fail(g, "$ref '%s' at %s does not resolve", ref, path), NULL;
    return cur;
}

static void object_body(jsg_t *g, json_t *s, json_t *doc, const char *path, const char *name, sbuf_t *out) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *ap = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) { fail(g, "'properties' at %s must be an object", path); return; }
    if (req && !json_is_array(req)) { fail(g, "'required' at %s must be a list", path); return; }
    if (ap && !json_is_boolean(ap) && !json_is_object(ap)) {
        fail(g, "'additionalProperties' at %s must be a boolean or a schema", path);
        return;
    }
    size_t i, n = json_object_size(props);
    json_t *v;
    json_array_foreach(req, i, v) {
        if (!json_is_string(v)) { fail(g, "'required' at %s must list strings", path); return; }
        if (!json_object_get(props, json_string_value(v))) {
            fail(g, "'required' at %s names '%s', which is not in 'properties'", path, json_string_value(v));
            return;
        }
    }
    if (n == 0) { /* a map: no declared properties */
        if (ap && json_is_false(ap)) { sb_add(out, "\"{\" ws \"}\""); return; }
        const char *val = ap && json_is_object(ap) ? NULL : "jval";
        char sub[300];
        snprintf(sub, sizeof sub, "%s.additionalProperties", path);
        if (!val && !(val = schema_rule(g, ap, doc, sub))) return;
        sb_printf(out, "\"{\" ws ( jstr ws \":\" ws %s ws ( \",\" ws jstr ws \":\" ws %s ws )* )? \"}\"", val, val);
        return;
    }
    /* S_i: the properties from i on, none written yet; T_i: some written (comma first) */
    const char **vals = calloc(n, sizeof *vals);
    char **keys = calloc(n, sizeof *keys);
    int *required = calloc(n, sizeof *required);
    if (!vals || !keys || !required) { fail_oom(g); goto out; }
    const char *k;
    i = 0;
    json_object_foreach(props, k, v) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s.%s", path, k);
        if (!(vals[i] = schema_rule(g, v, doc, sub))) goto out;
        json_t *kj = json_string(k);
        char *kjson = kj ? json_dumps(kj, JSON_ENCODE_ANY) : NULL;
        json_decref(kj);
        keys[i] = kjson ? jsg_literal(kjson, strlen(kjson)) : NULL;
        free(kjson);
        if (!keys[i]) { fail_oom(g); goto out; }
        size_t j;
        json_t *r;
        json_array_foreach(req, j, r) if (!strcmp(json_string_value(r), k)) required[i] = 1;
        i++;
    }
    for (size_t p = n + 1; p-- > 0;) {
        sbuf_t sbody = {0}, tbody = {0};
        if (p == n) {
            sb_add(&sbody, "\"\"");
            sb_add(&tbody, "\"\"");
        } else {
            sb_printf(&sbody, "%s ws \":\" ws %s ws %s-t%zu", keys[p], vals[p], name, p + 1);
            sb_printf(&tbody, "\",\" ws %s ws \":\" ws %s ws %s-t%zu", keys[p], vals[p], name, p + 1);
            if (!required[p]) {
                sb_printf(&sbody, " | %s-s%zu", name, p + 1);
                sb_printf(&tbody, " | %s-t%zu", name, p + 1);
            }
        }
        char rs[96], rt[96];
        snprintf(rs, sizeof rs, "%s-s%zu", name, p);
        snprintf(rt, sizeof rt, "%s-t%zu", name, p);
        char *bs = sb_take(&sbody), *bt = sb_take(&tbody);
        if (!bs || !bt || jsg_rule(g, rs, bs) || jsg_rule(g, rt, bt)) { free(bs); free(bt); fail_oom(g); goto out; }
        free(bs);
        free(bt);
    }
    sb_printf(out, "\"{\" ws %s-s0 \"}\"", name);
out:
    for (i = 0; keys && i < n; i++) free(keys[i]);
    free(keys); free(vals); free(required);
}

static void array_body(jsg_t *g, json_t *s, json_t *doc, const char *path, sbuf_t *out) {
    json_t *items = json_object_get(s, "items");
    long lo = get_count(g, s, "minItems", 0, path), hi = get_count(g, s, "maxItems", -1, path);
    if (lo < -1 || hi < -1) return;
    if (hi >= 0 && hi < lo) { fail(g, "maxItems is below minItems at %s", path); return; }
    const char *item = "jval";
    if (items) {
        if (!json_is_object(items) && !json_is_boolean(items)) {
            fail(g, "'items' at %s must be a schema (tuple 'items' lists are not supported)", path);
            return;
        }
        char sub[300];
        snprintf(sub, sizeof sub, "%s.items", path);
        if (!(item = schema_rule(g, items, doc, sub))) return;
    }
    if (hi == 0) { sb_add(out, "\"[\" ws \"]\""); return; }
    if (lo == 0) {
        sb_printf(out, "\"[\" ws ( %s ws ( \",\" ws %s ws )", item, item);
        rep(out, 0, hi < 0 ? -1 : hi - 1);
        sb_add(out, " )? \"]\"");
    } else {
        sb_printf(out, "\"[\" ws %s ws ( \",\" ws %s ws )", item, item);
        rep(out, lo - 1, hi < 0 ? -1 : hi - 1);
        sb_add(out, " \"]\"");
    }
}

static void string_body(jsg_t *g, json_t *s, const char *path, sbuf_t *out) {
    long lo = get_count(g, s, "minLength", 0, path), hi = get_count(g, s, "maxLength", -1, path);
    if (lo < -1 || hi < -1) return;
    if (hi >= 0 && hi < lo) { fail(g, "maxLength is below minLength at %s", path); return; }
    if (lo == 0 && hi < 0) { sb_add(out, "jstr"); return; }
    sb_add(out, "\"\\\"\" jchar");
    rep(out, lo, hi);
    sb_add(out, " \"\\\"\"");
}

/* enum / const: the values, as compact JSON literals, that have an allowed type. */
static void literal_body(jsg_t *g, json_t *values, int types, const char *path, sbuf_t *out) {
    size_t i;
    json_t *v;
    int n = 0;
    json_array_foreach(values, i, v) {
        if (!value_has_type(v, types)) continue;
        char *j = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
        char *lit = j ? jsg_literal(j, strlen(j)) : NULL;
        free(j);
        if (!lit) { fail_oom(g); return; }
        sb_printf(out, "%s%s", n++ ? " | " : "", lit);
        free(lit);
    }
    if (n == 0) fail(g, "no value of 'enum'/'const' at %s matches its 'type'", path);
}

static void alternatives(jsg_t *g, json_t *list, json_t *doc, const char *key, const char *path, sbuf_t *out) {
    if (!json_is_array(list) || json_array_size(list) == 0) {
        fail(g, "'%s' at %s must be a non-empty list of schemas", key, path);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s.%s[%zu]", path, key, i);
        const char *r = schema_rule(g, v, doc, sub);
        if (!r) return;
        sb_printf(out, "%s%s", i ? " | " : "", r);
    }
}

static void typed_body(jsg_t *g, json_t *s, json_t *doc, const char *path, const char *name, int types, sbuf_t *out) {
    int n = 0;
    for (int bit = 1; bit <= T_NULL && !g->failed; bit <<= 1) {
        if (!(types & bit)) continue;
        if (n++) sb_add(out, " | ");
        if (bit == T_OBJ) object_body(g, s, doc, path, name, out);
        else if (bit == T_ARR) array_body(g, s, doc, path, out);
        else if (bit == T_STR) string_body(g, s, path, out);
        else if (bit == T_NUM) sb_add(out, "jnum");
        else if (bit == T_INT) sb_add(out, "jint");
        else if (bit == T_BOOL) sb_add(out, "jbool");
        else sb_add(out, "jnull");
    }
}

static int has(json_t *s, const char *k) { return json_object_get(s, k) != NULL; }

static void body(jsg_t *g, json_t *s, json_t *doc, const char *path, const char *name, sbuf_t *out) {
    if (json_is_true(s)) { sb_add(out, "jval"); return; }
    if (json_is_false(s)) { fail(g, "the schema at %s is false: no value is allowed", path); return; }
    if (!json_is_object(s)) { fail(g, "the schema at %s must be an object or a boolean", path); return; }
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref)) { fail(g, "'$ref' at %s must be a string", path); return; }
        if (check_keys(g, s, path, "$ref")) return;
        json_t *target = resolve(g, doc, json_string_value(ref), path);
        const char *r = target ? schema_rule(g, target, doc, json_string_value(ref)) : NULL;
        if (r) sb_add(out, r);
        return;
    }
    const char *combo = has(s, "anyOf") ? "anyOf" : has(s, "oneOf") ? "oneOf" : has(s, "allOf") ? "allOf" : NULL;
    if (combo) {
        if (check_keys(g, s, path, combo)) return;
        json_t *list = json_object_get(s, combo);
        if (!strcmp(combo, "allOf") && json_array_size(list) != 1) {
            fail(g, "'allOf' at %s is supported with one schema only", path);
            return;
        }
        alternatives(g, list, doc, combo, path, out);
        return;
    }
    if (check_keys(g, s, path, NULL)) return;
    int types = types_of(g, s, path);
    if (types < 0) return;
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    if (en || cn) {
        if (en && (!json_is_array(en) || json_array_size(en) == 0)) { fail(g, "'enum' at %s must be a non-empty list", path); return; }
        json_t *vals = en ? json_incref(en) : json_pack("[O]", cn);
        if (!vals) { fail_oom(g); return; }
        literal_body(g, vals, types, path, out);
        json_decref(vals);
        return;
    }
    if (!types) { /* infer from the keywords present, else any value */
        if (has(s, "properties") || has(s, "required") || has(s, "additionalProperties")) types = T_OBJ;
        else if (has(s, "items") || has(s, "minItems") || has(s, "maxItems")) types = T_ARR;
        else if (has(s, "minLength") || has(s, "maxLength")) types = T_STR;
        else { sb_add(out, "jval"); return; }
    }
    typed_body(g, s, doc, path, name, types, out);
}

static const char *schema_rule(jsg_t *g, json_t *s, json_t *doc, const char *path) {
    if (g->failed) return NULL;
    for (size_t i = 0; i < g->n_memo; i++)
        if (g->memo[i].schema == s) return g->memo[i].name;
    if (g->depth >= MAX_DEPTH) return fail(g, "the schema is nested deeper than %d at %s", MAX_DEPTH, path);
    if (g->n_memo >= MAX_RULES) return fail(g, "the schema has more than %d subschemas", MAX_RULES);
    if (g->n_memo == g->cap_memo) {
        size_t cap = g->cap_memo ? g->cap_memo * 2 : 32;
        memo_t *m = realloc(g->memo, cap * sizeof *m);
        if (!m) return fail_oom(g);
        g->memo = m;
        g->cap_memo = cap;
    }
    char *name = rule_name(g, path);
    if (!name) return fail_oom(g);
    g->memo[g->n_memo++] = (memo_t){s, name};
    base(g);
    g->depth++;
    sbuf_t b = {0};
    body(g, s, doc, path, name, &b);
    g->depth--;
    char *text = sb_take(&b);
    if (!text) return fail_oom(g);
    if (g->failed) { free(text); return NULL; }
    if (jsg_rule(g, name, text)) { free(text); return fail_oom(g); }
    free(text);
    return name;
}

const char *jsg_schema(jsg_t *g, json_t *schema, json_t *doc, const char *hint) {
    return schema_rule(g, schema, doc ? doc : schema, hint ? hint : "schema");
}

char *json_schema_grammar(json_t *schema, char *err, size_t errlen, int *oom) {
    *oom = 0;
    jsg_t *g = jsg_new();
    if (!g) { *oom = 1; snprintf(err, errlen, "out of memory"); return NULL; }
    const char *root = jsg_schema(g, schema, schema, "schema");
    char *text = NULL;
    if (root) {
        char rb[96];
        snprintf(rb, sizeof rb, "%s", root);
        if (jsg_rule(g, "root", rb) == 0) text = jsg_text(g);
        if (!text) { *oom = 1; snprintf(err, errlen, "out of memory"); }
    } else {
        snprintf(err, errlen, "%s", jsg_error(g, oom));
    }
    jsg_free(g);
    return text;
}

char *json_object_grammar(void) {
    jsg_t *g = jsg_new();
    if (!g) return NULL;
    char *text = NULL;
    if (jsg_rule(g, "root", jsg_any_object(g)) == 0) text = jsg_text(g);
    jsg_free(g);
    return text;
}
