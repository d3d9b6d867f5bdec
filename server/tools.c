/* tools.c - tool calling: request fields, prompt text, the forcing grammar,
 * reply parsing (see tools.h for the formats). */
#include "tools.h"

#include "../engine/model/sbuf.h"
#include "../engine/runtime/json_schema.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define BAD(param, ...) ({ *err = reply_error(400, "invalid_request_error", param, __VA_ARGS__); -1; })
#define MAX_TOOLS 128

static const char OPEN[] = "<tool_call>", CLOSE[] = "</tool_call>";

/* ---- request fields ------------------------------------------------------------------------ */

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return 0;
    return 1;
}

static json_t *find_tool(const tools_t *t, const char *name) {
    size_t i;
    json_t *tool;
    json_array_foreach(t->tools, i, tool) {
        json_t *fn = json_object_get(tool, "function");
        if (!strcmp(json_string_value(json_object_get(fn, "name")), name)) return fn;
    }
    return NULL;
}

static int check_tools(json_t *tools, reply_t *err) {
    if (!json_is_array(tools) || json_array_size(tools) == 0 || json_array_size(tools) > MAX_TOOLS)
        return BAD("tools", "'tools' must be a list of 1 to %d tools", MAX_TOOLS);
    size_t i, j;
    json_t *tool;
    json_array_foreach(tools, i, tool) {
        json_t *type = json_object_get(tool, "type"), *fn = json_object_get(tool, "function");
        if (!json_is_object(tool) || !json_is_string(type) || strcmp(json_string_value(type), "function"))
            return BAD("tools", "tools[%zu] must be {\"type\": \"function\", \"function\": {...}}", i);
        json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
        json_t *desc = json_object_get(fn, "description"), *strict = json_object_get(fn, "strict");
        if (!json_is_object(fn) || !json_is_string(name) || !valid_name(json_string_value(name)))
            return BAD("tools", "tools[%zu].function.name must be 1-64 letters, digits, '_' or '-'", i);
        if (params && !json_is_object(params)) return BAD("tools", "tools[%zu].function.parameters must be a JSON Schema object", i);
        if (desc && !json_is_string(desc)) return BAD("tools", "tools[%zu].function.description must be a string", i);
        if (strict && !json_is_boolean(strict) && !json_is_null(strict))
            return BAD("tools", "tools[%zu].function.strict must be a boolean", i);
        const char *k;
        json_t *v;
        json_object_foreach(fn, k, v)
            if (strcmp(k, "name") && strcmp(k, "parameters") && strcmp(k, "description") && strcmp(k, "strict"))
                return BAD("tools", "tools[%zu].function.%s is not a supported field", i, k);
        for (j = 0; j < i; j++)
            if (!strcmp(json_string_value(json_object_get(json_object_get(json_array_get(tools, j), "function"), "name")),
                        json_string_value(name)))
                return BAD("tools", "two tools are named '%s'", json_string_value(name));
    }
    return 0;
}

int tools_parse(json_t *req, chat_kind_t kind, tools_t *t, reply_t *err) {
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->parallel = 1;
    json_t *tools = json_object_get(req, "tools"), *choice = json_object_get(req, "tool_choice");
    json_t *par = json_object_get(req, "parallel_tool_calls");
    if (tools && json_is_null(tools)) tools = NULL;
    if (choice && json_is_null(choice)) choice = NULL;
    if (par && !json_is_null(par)) {
        if (!json_is_boolean(par)) return BAD("parallel_tool_calls", "'parallel_tool_calls' must be a boolean");
        t->parallel = json_is_true(par);
    }
    if (tools && check_tools(tools, err)) return -1;
    t->choice = tools ? TOOLS_AUTO : TOOLS_NONE;
    if (choice) {
        if (json_is_string(choice)) {
            const char *c = json_string_value(choice);
            if (!strcmp(c, "none")) t->choice = TOOLS_NONE;
            else if (!strcmp(c, "auto")) t->choice = TOOLS_AUTO;
            else if (!strcmp(c, "required")) t->choice = TOOLS_REQUIRED;
            else return BAD("tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or a function");
        } else {
            json_t *type = json_object_get(choice, "type"), *fn = json_object_get(choice, "function");
            json_t *name = json_object_get(fn, "name");
            if (!json_is_object(choice) || !json_is_string(type) || strcmp(json_string_value(type), "function") ||
                !json_is_string(name))
                return BAD("tool_choice", "'tool_choice' must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}");
            t->choice = TOOLS_NAMED;
            if (!(t->named = strdup(json_string_value(name)))) {
                *err = reply_error(500, "server_error", NULL, "out of memory");
                return -1;
            }
        }
        if (!tools && t->choice != TOOLS_NONE) return BAD("tool_choice", "'tool_choice' needs 'tools'");
    }
    if (tools) t->tools = json_incref(tools);
    if (t->choice == TOOLS_NAMED && !find_tool(t, t->named))
        return BAD("tool_choice", "'tool_choice' names '%s', which is not in 'tools'", t->named);
    return 0;
}

void tools_free(tools_t *t) {
    json_decref(t->tools);
    free(t->named);
    memset(t, 0, sizeof *t);
}

int tools_active(const tools_t *t) { return t->tools && t->choice != TOOLS_NONE; }

/* ---- prompt text ----------------------------------------------------------------------------- */

static void sb_json(sbuf_t *b, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (!s) { b->oom = 1; return; }
    sb_add(b, s);
    free(s);
}

char *tools_preamble(const tools_t *t) {
    sbuf_t b = {0};
    size_t i;
    json_t *tool;
    if (t->kind == CHAT_LLAMA3) {
        sb_add(&b, "Given the following functions, please respond with a JSON for a function call with its "
                   "proper arguments that best answers the given prompt.\n\n"
                   "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument "
                   "name and its value}. Do not use variables.\n\n");
        json_array_foreach(t->tools, i, tool) {
            sb_json(&b, tool);
            sb_add(&b, "\n\n");
        }
        return sb_take(&b);
    }
    sb_add(&b, "# Tools\n\n");
    sb_add(&b, t->parallel ? "You may call one or more functions to assist with the user query.\n\n"
                           : "You may call one function to assist with the user query.\n\n");
    sb_add(&b, "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
    json_array_foreach(t->tools, i, tool) {
        sb_add(&b, "\n");
        sb_json(&b, tool);
    }
    sb_add(&b, "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
               "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
               "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
    return sb_take(&b);
}

char *tools_calls_text(chat_kind_t kind, const char *content, json_t *calls, size_t idx, reply_t *err) {
    if (!json_is_array(calls) || json_array_size(calls) == 0) {
        BAD("messages", "messages[%zu].tool_calls must be a non-empty list", idx);
        return NULL;
    }
    sbuf_t b = {0};
    if (content && *content) sb_add(&b, content);
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function"), *name = json_object_get(fn, "name");
        json_t *args = json_object_get(fn, "arguments"), *id = json_object_get(c, "id");
        if (!json_is_object(c) || !json_is_string(name) || !json_is_string(args) || (id && !json_is_string(id))) {
            free(b.buf);
            BAD("messages", "messages[%zu].tool_calls[%zu] must be {\"id\", \"type\": \"function\", "
                            "\"function\": {\"name\", \"arguments\": \"<JSON text>\"}}", idx, i);
            return NULL;
        }
        json_t *parsed = json_loads(json_string_value(args), JSON_DECODE_ANY, NULL);
        json_t *call = json_pack("{s:O, s:o}", "name", name, kind == CHAT_LLAMA3 ? "parameters" : "arguments",
                                 parsed ? parsed : json_incref(args));
        if (b.len) sb_add(&b, "\n");
        if (kind != CHAT_LLAMA3) sb_add(&b, "<tool_call>\n");
        if (call) sb_json(&b, call);
        else b.oom = 1;
        if (kind != CHAT_LLAMA3) sb_add(&b, "\n</tool_call>");
        json_decref(call);
    }
    char *out = sb_take(&b);
    if (!out) *err = reply_error(500, "server_error", NULL, "out of memory");
    return out;
}

const char *tools_result_role(chat_kind_t kind) { return kind == CHAT_LLAMA3 ? "ipython" : "user"; }

char *tools_result_text(chat_kind_t kind, const char *content) {
    sbuf_t b = {0};
    if (kind == CHAT_LLAMA3) {
        sb_add(&b, content);
    } else {
        sb_add(&b, "<tool_response>\n");
        sb_add(&b, content);
        sb_add(&b, "\n</tool_response>");
    }
    return sb_take(&b);
}

json_t *tools_template_messages(json_t *messages) {
    json_t *copy = json_deep_copy(messages);
    size_t i, j;
    json_t *msg, *call;
    json_array_foreach(copy, i, msg) {
        json_array_foreach(json_object_get(msg, "tool_calls"), j, call) {
            json_t *fn = json_object_get(call, "function"), *args = json_object_get(fn, "arguments");
            json_t *parsed = json_is_string(args) ? json_loads(json_string_value(args), JSON_DECODE_ANY, NULL) : NULL;
            if (parsed && json_object_set_new(fn, "arguments", parsed) != 0) {
                json_decref(copy);
                return NULL;
            }
        }
    }
    return copy;
}

/* ---- the forcing grammar ------------------------------------------------------------------------ */

char *tools_grammar(const tools_t *t, char *err, size_t errlen, int *oom) {
    *oom = 0;
    jsg_t *g = jsg_new();
    sbuf_t fns = {0};
    char *text = NULL;
    if (!g) goto nomem;
    size_t i;
    json_t *tool;
    int n = 0;
    json_array_foreach(t->tools, i, tool) {
        json_t *fn = json_object_get(tool, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (t->choice == TOOLS_NAMED && strcmp(name, t->named)) continue;
        json_t *params = json_object_get(fn, "parameters");
        char hint[96];
        snprintf(hint, sizeof hint, "tools[%zu].function.parameters", i);
        const char *args = params ? jsg_schema(g, params, params, hint) : "\"{}\"";
        if (!args) {
            snprintf(err, errlen, "%s", jsg_error(g, oom));
            goto out;
        }
        /* "name", then the arguments under the key this format uses */
        char lit_src[128];
        snprintf(lit_src, sizeof lit_src, "\"%s\", \"%s\": ", name, t->kind == CHAT_LLAMA3 ? "parameters" : "arguments");
        char *lit = jsg_literal(lit_src, strlen(lit_src));
        if (!lit) goto nomem;
        if (n++) sb_add(&fns, " | ");
        sb_add(&fns, "( ");
        sb_add(&fns, lit);
        sb_add(&fns, " ");
        sb_add(&fns, args);
        sb_add(&fns, " )");
        free(lit);
    }
    char *body = sb_take(&fns);
    fns = (sbuf_t){0};
    if (!body || jsg_rule(g, "fncall", body)) { free(body); goto nomem; }
    free(body);
    int rc;
    if (t->kind == CHAT_LLAMA3)
        rc = jsg_rule(g, "root", "\"{\\\"name\\\": \" fncall \"}\"");
    else
        rc = jsg_rule(g, "call", "\"<tool_call>\\n{\\\"name\\\": \" fncall \"}\\n</tool_call>\"") ||
             jsg_rule(g, "root", t->parallel ? "call ( \"\\n\" call )*" : "call");
    if (rc || !(text = jsg_text(g))) goto nomem;
    goto out;
nomem:
    *oom = 1;
    snprintf(err, errlen, "out of memory");
out:
    free(fns.buf);
    jsg_free(g);
    return text;
}

/* ---- the reply ------------------------------------------------------------------------------------- */

static void call_id(char *out, size_t n) {
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char rnd[24];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t x = (uint64_t)clock() ^ (uint64_t)time(NULL) << 20;
        for (size_t i = 0; i < sizeof rnd; i++) { x = x * 6364136223846793005ull + 1; rnd[i] = (unsigned char)(x >> 56); }
    }
    int k = snprintf(out, n, "call_");
    for (size_t i = 0; i < sizeof rnd && (size_t)k + 1 < n; i++) out[k++] = al[rnd[i] % (sizeof al - 1)];
    out[k] = 0;
}

/* A call from the model's JSON text, or NULL if it is not a call of a
 * listed function with object arguments. */
static json_t *make_call(const tools_t *t, const char *text, size_t len) {
    json_t *j = json_loadb(text, len, 0, NULL);
    json_t *name = json_object_get(j, "name");
    json_t *args = json_object_get(j, t->kind == CHAT_LLAMA3 ? "parameters" : "arguments");
    if (!args) args = json_object_get(j, t->kind == CHAT_LLAMA3 ? "arguments" : "parameters");
    json_t *call = NULL;
    if (json_is_string(name) && json_is_object(args) && find_tool(t, json_string_value(name))) {
        char *a = json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER);
        char id[40];
        call_id(id, sizeof id);
        if (a) call = json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function", "name", name,
                                "arguments", a);
        free(a);
    }
    json_decref(j);
    return call;
}

void tools_stream_init(tools_stream_t *s, const tools_t *t) {
    memset(s, 0, sizeof *s);
    s->t = t;
}

void tools_stream_free(tools_stream_t *s) {
    free(s->buf);
    s->buf = NULL;
}

static void drop(tools_stream_t *s, size_t n) {
    memmove(s->buf, s->buf + n, s->len - n);
    s->len -= n;
}

static const char *find(const char *h, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(h + i, needle, k)) return h + i;
    return NULL;
}

/* Content that can be released now: all but a trailing part that may still
 * turn out to be (whitespace before) the start of a call. */
static size_t releasable(const tools_stream_t *s, int final) {
    if (final) return s->len;
    size_t n = s->len;
    for (size_t k = sizeof OPEN - 2; k > 0; k--) /* a proper prefix of <tool_call> at the end */
        if (k <= n && !memcmp(s->buf + n - k, OPEN, k)) { n -= k; break; }
    while (n > 0 && isspace((unsigned char)s->buf[n - 1])) n--;
    return n;
}

static void emit_content(tools_stream_t *s, size_t n, int skip_blank, tools_content_fn content, void *ud) {
    if (skip_blank) { /* whitespace alone between or around calls is not content */
        size_t i = 0;
        while (i < n && isspace((unsigned char)s->buf[i])) i++;
        if (i == n) { drop(s, n); return; }
    }
    if (n) content(ud, s->buf, n);
    drop(s, n);
}

static int feed_chatml(tools_stream_t *s, int final, tools_content_fn content, tools_call_fn callfn, void *ud) {
    for (;;) {
        if (!s->in_call) {
            const char *o = find(s->buf, s->len, OPEN);
            if (o) { /* content up to the call, less the whitespace before the tag */
                size_t n = (size_t)(o - s->buf), k = n;
                while (k > 0 && isspace((unsigned char)s->buf[k - 1])) k--;
                emit_content(s, k, 1, content, ud);
                drop(s, n - k);
                drop(s, sizeof OPEN - 1);
                s->in_call = 1;
                continue;
            }
            emit_content(s, releasable(s, final), s->n_calls > 0 || final, content, ud);
            return 0;
        }
        const char *c = find(s->buf, s->len, CLOSE);
        if (!c) {
            if (final) { /* cut short inside a call: what was written is content */
                content(ud, OPEN, sizeof OPEN - 1);
                if (s->len) content(ud, s->buf, s->len);
                s->len = 0;
                s->in_call = 0;
            }
            return 0;
        }
        size_t body = (size_t)(c - s->buf);
        /* parallel_tool_calls false: a second call is not a call (kept as text) */
        json_t *call = s->t->parallel || s->n_calls == 0 ? make_call(s->t, s->buf, body) : NULL;
        if (call) {
            callfn(ud, s->n_calls++, call);
            json_decref(call);
        } else { /* not a call of a listed function: pass it on as text */
            content(ud, OPEN, sizeof OPEN - 1);
            content(ud, s->buf, body + sizeof CLOSE - 1);
        }
        drop(s, body + sizeof CLOSE - 1);
        s->in_call = 0;
    }
}

static int feed_llama3(tools_stream_t *s, int final, tools_content_fn content, tools_call_fn callfn, void *ud) {
    if (!s->decided) {
        size_t i = 0;
        while (i < s->len && isspace((unsigned char)s->buf[i])) i++;
        if (i == s->len && !final) return 0;
        s->decided = 1;
        s->in_call = i < s->len && s->buf[i] == '{';
    }
    if (!s->in_call) {
        if (s->len) content(ud, s->buf, s->len);
        s->len = 0;
        return 0;
    }
    if (!final) return 0; /* one JSON object: released when the reply ends */
    json_t *call = make_call(s->t, s->buf, s->len);
    if (call) {
        callfn(ud, s->n_calls++, call);
        json_decref(call);
    } else if (s->len) {
        content(ud, s->buf, s->len);
    }
    s->len = 0;
    return 0;
}

int tools_stream_feed(tools_stream_t *s, const char *text, size_t len, int final, tools_content_fn content,
                      tools_call_fn call, void *ud) {
    if (s->oom) return -1;
    if (s->len + len + 1 > s->cap) {
        size_t cap = (s->len + len + 1) * 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) { s->oom = 1; return -1; }
        s->buf = nb;
        s->cap = cap;
    }
    if (len) memcpy(s->buf + s->len, text, len);
    s->len += len;
    return s->t->kind == CHAT_LLAMA3 ? feed_llama3(s, final, content, call, ud)
                                     : feed_chatml(s, final, content, call, ud);
}

typedef struct { sbuf_t text; json_t *calls; } collect_t;

static void collect_content(void *ud, const char *text, size_t len) { sb_addn(&((collect_t *)ud)->text, text, len); }

static void collect_call(void *ud, int index, json_t *call) {
    (void)index;
    json_array_append(((collect_t *)ud)->calls, call);
}

json_t *tools_extract(const tools_t *t, const char *text, size_t len, char **content) {
    collect_t c = {{0}, json_array()};
    tools_stream_t s;
    tools_stream_init(&s, t);
    int rc = c.calls ? tools_stream_feed(&s, text, len, 1, collect_content, collect_call, &c) : -1;
    tools_stream_free(&s);
    *content = rc == 0 && !c.text.oom && c.text.len ? c.text.buf : (free(c.text.buf), NULL);
    if (json_array_size(c.calls) == 0) {
        json_decref(c.calls);
        return NULL;
    }
    return c.calls;
}
