/* structured.c - the request fields that constrain the output: response_format
 * (json_object, json_schema), the `grammar` extension (GBNF text) and the
 * grammar that forces a tool call (tool_choice "required" or a function).
 * Each becomes GBNF text, compiled once: compiled grammars are kept in a
 * small most-recently-used cache keyed by their text, so repeated requests
 * with the same schema or tools also share the grammar's mask cache (the
 * expensive part of a first constrained request).
 */
#include "api.h"

#include "../engine/runtime/json_schema.h"

#include <stdlib.h>
#include <string.h>

#define BAD(param, ...) ({ *err = reply_error(400, "invalid_request_error", param, __VA_ARGS__); -1; })
#define CACHE_SLOTS 16
#define MAX_GRAMMAR_TEXT (1 << 20)

static struct { char *text; grammar_t *g; unsigned long used; } cache[CACHE_SLOTS];
static unsigned long cache_clock;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

/* The compiled grammar for text (a new reference), from the cache or parsed. */
static grammar_t *compile(const char *text, char *msg, size_t msglen) {
    pthread_mutex_lock(&cache_mu);
    int lru = 0;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (cache[i].text && !strcmp(cache[i].text, text)) {
            cache[i].used = ++cache_clock;
            grammar_t *g = grammar_ref(cache[i].g);
            pthread_mutex_unlock(&cache_mu);
            return g;
        }
        if (cache[i].used < cache[lru].used) lru = i;
    }
    pthread_mutex_unlock(&cache_mu);
    grammar_t *g = grammar_parse(text, strlen(text), msg, msglen);
    char *copy = g ? strdup(text) : NULL;
    if (!copy) return g; /* refused, or no memory to cache it (still usable) */
    pthread_mutex_lock(&cache_mu);
    free(cache[lru].text);
    grammar_unref(cache[lru].g);
    cache[lru].text = copy;
    cache[lru].g = grammar_ref(g);
    cache[lru].used = ++cache_clock;
    pthread_mutex_unlock(&cache_mu);
    return g;
}

static int response_format(json_t *rf, char **text, reply_t *err) {
    if (!json_is_object(rf)) return BAD("response_format", "'response_format' must be an object");
    json_t *type = json_object_get(rf, "type");
    if (!json_is_string(type)) return BAD("response_format", "'response_format.type' is required");
    const char *t = json_string_value(type);
    const char *k;
    json_t *v;
    json_object_foreach(rf, k, v)
        if (strcmp(k, "type") && strcmp(k, "json_schema"))
            return BAD("response_format", "'response_format.%s' is not a supported field", k);
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        if (!(*text = json_object_grammar())) goto oom;
        return 0;
    }
    if (strcmp(t, "json_schema"))
        return BAD("response_format", "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"");
    json_t *js = json_object_get(rf, "json_schema");
    if (!json_is_object(js)) return BAD("response_format", "'response_format.json_schema' must be an object");
    json_object_foreach(js, k, v)
        if (strcmp(k, "name") && strcmp(k, "schema") && strcmp(k, "strict") && strcmp(k, "description"))
            return BAD("response_format", "'response_format.json_schema.%s' is not a supported field", k);
    json_t *name = json_object_get(js, "name"), *schema = json_object_get(js, "schema");
    json_t *strict = json_object_get(js, "strict");
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > 64)
        return BAD("response_format", "'response_format.json_schema.name' must be a string of 1 to 64 characters");
    if (strict && !json_is_boolean(strict) && !json_is_null(strict))
        return BAD("response_format", "'response_format.json_schema.strict' must be a boolean");
    if (!schema || json_is_null(schema)) { /* no schema: any JSON value */
        jsg_t *g = jsg_new();
        if (!g || jsg_rule(g, "root", jsg_any_value(g)) || !(*text = jsg_text(g))) { jsg_free(g); goto oom; }
        jsg_free(g);
        return 0;
    }
    if (!json_is_object(schema)) return BAD("response_format", "'response_format.json_schema.schema' must be an object");
    char msg[320];
    int nomem;
    if (!(*text = json_schema_grammar(schema, msg, sizeof msg, &nomem))) {
        if (nomem) goto oom;
        return BAD("response_format", "response_format.json_schema.schema: %s", msg);
    }
    return 0;
oom:
    *err = reply_error(500, "server_error", NULL, "out of memory");
    return -1;
}

int structured_parse(json_t *req, api_req_t *r, reply_t *err) {
    json_t *rf = json_object_get(req, "response_format"), *gr = json_object_get(req, "grammar");
    if (rf && json_is_null(rf)) rf = NULL;
    if (gr && json_is_null(gr)) gr = NULL;
    const tools_t *t = &r->tools;
    int forced = tools_active(t) && (t->choice == TOOLS_REQUIRED || t->choice == TOOLS_NAMED);
    char *text = NULL;
    const char *param = NULL;
    if (gr) {
        if (!json_is_string(gr) || json_string_length(gr) == 0 || json_string_length(gr) > MAX_GRAMMAR_TEXT)
            return BAD("grammar", "'grammar' must be GBNF text of 1 to %d bytes", MAX_GRAMMAR_TEXT);
        if (strlen(json_string_value(gr)) != json_string_length(gr)) return BAD("grammar", "'grammar' contains a NUL byte");
        if (!(text = strdup(json_string_value(gr)))) goto oom;
        param = "grammar";
    }
    if (rf) {
        char *rtext = NULL;
        if (response_format(rf, &rtext, err)) { free(text); return -1; }
        if (rtext && text) {
            free(text); free(rtext);
            return BAD("response_format", "'response_format' and 'grammar' cannot be used together");
        }
        if (rtext) { text = rtext; param = "response_format"; }
    }
    if (text && tools_active(t)) {
        free(text);
        return BAD(param, "'%s' cannot be combined with tools (use tool_choice \"none\")", param);
    }
    if (forced) {
        char msg[320];
        int nomem;
        if (!(text = tools_grammar(t, msg, sizeof msg, &nomem))) {
            if (nomem) goto oom;
            return BAD("tools", "%s", msg);
        }
        param = "tools";
    }
    if (!text) return 0;
    char msg[320];
    r->grammar = compile(text, msg, sizeof msg);
    free(text);
    if (!r->grammar) {
        if (!strcmp(msg, "out of memory")) goto oom;
        return BAD(param, "%s%s", !strcmp(param, "grammar") ? "" : "the generated grammar is refused: ", msg);
    }
    return 0;
oom:
    *err = reply_error(500, "server_error", NULL, "out of memory");
    return -1;
}
