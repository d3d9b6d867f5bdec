/* api_req.c - validates OpenAI request JSON into an api_req_t.
 *
 * Every rejection names the offending field in `param`, so a client can
 * fix its request without reading server logs. Nothing is accepted and
 * ignored: a field is either in FIELDS (honoured; a few only with values
 * that mean "nothing to do", e.g. store=false) or refused with a 400
 * naming it, as OpenAI refuses unrecognized arguments. Values the client
 * leaves out take the server's defaults (--temp, --top-k, --top-p,
 * --min-p, --default-max-tokens), field by field.
 */
#include "api.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* sets *err to a 400 naming param; evaluates to -1 (GNU statement expression) */
#define BAD(param, ...) ({ *err = reply_error(400, "invalid_request_error", param, __VA_ARGS__); -1; })

static int get_num(json_t *req, const char *key, double lo, double hi, double *out, reply_t *err) {
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return BAD(key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return BAD(key, "'%s' must be in [%g, %g]", key, lo, hi);
    *out = d;
    return 0;
}

static int get_int(json_t *req, const char *key, long lo, long hi, long *out, reply_t *err) {
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return BAD(key, "'%s' must be an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi) return BAD(key, "'%s' must be in [%ld, %ld]", key, lo, hi);
    *out = (long)i;
    return 0;
}

static int get_bool(json_t *req, const char *key, int *out, reply_t *err) {
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return BAD(key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int add_prompt(api_req_t *r, int32_t *ids, long n, char *echo) {
    if (r->n_prompts == API_MAX_PROMPTS) {
        free(ids);
        free(echo);
        return -1;
    }
    r->prompts[r->n_prompts] = ids;
    r->prompt_len[r->n_prompts] = (int)n;
    r->echo_text[r->n_prompts++] = echo;
    return 0;
}

static int tokenize_into(srv_t *s, api_req_t *r, const char *text, size_t len, reply_t *err) {
    long n;
    int32_t *ids = api_encode(s->m->tok, text, len, &n), *framed;
    if (!ids) return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    if (n == 0) {
        free(ids);
        return BAD("prompt", "the prompt tokenizes to nothing");
    }
    if (!(framed = realloc(ids, (size_t)(n + 2) * sizeof *ids))) {
        free(ids);
        return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    }
    ids = framed;
    n = tok_frame(s->m->tok, ids, n); /* BOS/EOS as the vocabulary asks */
    char *echo = strndup(text, len);
    if (!echo || add_prompt(r, ids, n, echo) != 0) return BAD("prompt", "at most %d prompts", API_MAX_PROMPTS);
    return 0;
}

static int token_array(srv_t *s, api_req_t *r, json_t *arr, reply_t *err) {
    size_t n = json_array_size(arr), i;
    if (n == 0) return BAD("prompt", "a token list must not be empty");
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids) return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    json_t *v;
    json_array_foreach(arr, i, v) {
        json_int_t t = json_is_integer(v) ? json_integer_value(v) : -1;
        if (!json_is_integer(v) || t < 0 || t >= s->m->hp.n_vocab) {
            free(ids);
            return BAD("prompt", "token %zu is not an id in [0, %d)", i, s->m->hp.n_vocab);
        }
        ids[i] = (int32_t)t;
    }
    char *echo = api_decode(s->m->tok, ids, (long)n);
    if (add_prompt(r, ids, (long)n, echo) != 0) return BAD("prompt", "at most %d prompts", API_MAX_PROMPTS);
    return 0;
}

static int parse_prompt(srv_t *s, api_req_t *r, json_t *req, reply_t *err) {
    json_t *p = json_object_get(req, "prompt");
    if (!p) return BAD("prompt", "'prompt' is required");
    if (json_is_string(p)) {
        if (json_string_length(p) == 0) return BAD("prompt", "'prompt' must not be empty");
        return tokenize_into(s, r, json_string_value(p), json_string_length(p), err);
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return BAD("prompt", "'prompt' must be a string, a list of strings or a list of token ids");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) return token_array(s, r, p, err);
    size_t i;
    json_t *v;
    json_array_foreach(p, i, v) {
        int rc;
        if (json_is_string(v) && json_string_length(v) > 0)
            rc = tokenize_into(s, r, json_string_value(v), json_string_length(v), err);
        else if (json_is_array(v))
            rc = token_array(s, r, v, err);
        else
            return BAD("prompt", "prompt element %zu must be a non-empty string or a token list", i);
        if (rc != 0) return -1;
    }
    return 0;
}

/* Content as a string or as an array of {"type":"text","text":...} parts. */
static char *message_text(json_t *content, size_t idx, reply_t *err) {
    if (!content || json_is_null(content)) return strdup("");
    if (json_is_string(content)) return strdup(json_string_value(content));
    if (!json_is_array(content)) {
        BAD("messages", "messages[%zu].content must be a string or a list of text parts", idx);
        return NULL;
    }
    size_t total = 1, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(text)) {
            BAD("messages", "messages[%zu].content[%zu] must be {\"type\": \"text\", \"text\": ...}", idx, i);
            return NULL;
        }
        total += json_string_length(text);
    }
    char *out = malloc(total);
    if (!out) return NULL;
    out[0] = 0;
    json_array_foreach(content, i, part) strcat(out, json_string_value(json_object_get(part, "text")));
    return out;
}

/* A role "tool" message or an assistant message carrying tool_calls, made
 * into the text turn the template family writes (tools.c), for templates
 * that do not render tool turns themselves. m is the message's copy. */
static int tool_turn_as_text(chat_kind_t family, json_t *m, const char *role, const char *text, size_t idx,
                             reply_t *err) {
    char *t;
    if (!strcmp(role, "tool")) {
        if (json_object_set_new(m, "role", json_string(tools_result_role(family)))) goto oom;
        if (!(t = tools_result_text(family, text))) goto oom;
        json_object_del(m, "tool_call_id");
    } else {
        if (!(t = tools_calls_text(family, text, json_object_get(m, "tool_calls"), idx, err)))
            return err->status ? -1 : (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
        json_object_del(m, "tool_calls");
    }
    int bad = json_object_set_new(m, "content", json_string_nocheck(t)) != 0;
    free(t);
    if (bad) goto oom;
    return 0;
oom:
    *err = reply_error(500, "server_error", NULL, "out of memory");
    return -1;
}

/* The messages as the template sees them: each object as sent, with the
 * content flattened to a string and "developer" read as "system". With
 * `textify` (a template that does not render tools), tool results and
 * assistant tool calls become text turns in the template family's format. */
static json_t *normalize_messages(const chat_tmpl_t *ct, json_t *msgs, int textify, reply_t *err) {
    json_t *norm = json_array(), *msg;
    size_t i;
    if (!norm) goto oom;
    json_array_foreach(msgs, i, msg) {
        json_t *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            BAD("messages", "messages[%zu] must be an object with a string 'role'", i);
            goto fail;
        }
        const char *rs = json_string_value(role);
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") &&
            strcmp(rs, "developer") && strcmp(rs, "tool")) {
            BAD("messages", "messages[%zu].role '%s' is not system, developer, user, assistant or tool", i, rs);
            goto fail;
        }
        json_t *content = json_object_get(msg, "content"), *calls = json_object_get(msg, "tool_calls");
        int has_calls = calls && !json_is_null(calls), is_tool = !strcmp(rs, "tool");
        if (has_calls && strcmp(rs, "assistant")) {
            BAD("messages", "messages[%zu].tool_calls is only for role 'assistant'", i);
            goto fail;
        }
        if ((!content && !has_calls) || (content && json_is_null(content) && strcmp(rs, "assistant"))) {
            BAD("messages", "messages[%zu].content is required", i);
            goto fail;
        }
        if (is_tool && !json_is_string(json_object_get(msg, "tool_call_id"))) {
            BAD("messages", "messages[%zu].tool_call_id (a string) is required for role 'tool'", i);
            goto fail;
        }
        if (textify && (is_tool || has_calls) && ct->family == CHAT_NONE) {
            BAD("messages", "messages[%zu]: this model's chat template (%s) renders no tool turns and has no "
                "known tool-call format", i, ct->origin);
            goto fail;
        }
        json_t *m = json_copy(msg);
        if (!m || json_array_append_new(norm, m)) goto oom;
        /* an assistant turn without text: None to a template beside tool calls
         * (templates test for it), else the empty string it means */
        if (json_is_null(content) && has_calls && !textify) continue;
        char *text = message_text(content, i, err);
        if (!text) {
            if (err->status) goto fail; /* message_text said what is wrong */
            goto oom;
        }
        int bad = json_object_set_new(m, "content", json_string_nocheck(text)) ||
                  (!strcmp(rs, "developer") && json_object_set_new(m, "role", json_string("system")));
        if (!bad && textify && (is_tool || has_calls) && tool_turn_as_text(ct->family, m, rs, text, i, err)) {
            free(text);
            goto fail;
        }
        free(text);
        if (bad) goto oom;
    }
    return norm;
oom:
    *err = reply_error(500, "server_error", NULL, "out of memory");
fail:
    json_decref(norm);
    return NULL;
}

/* Lists the tools where the template family expects them, for templates that
 * do not render `tools`: the system turn (ChatML; a system message is added
 * when none leads) or the top of the first user turn (Llama-3). */
static int add_tools(const chat_tmpl_t *ct, const tools_t *tools, json_t *norm, reply_t *err) {
    if (ct->family == CHAT_NONE)
        return BAD("tools", "this model's chat template (%s) does not render tools and has no known tool-call "
                   "format; use --chat-template chatml or llama3, or a template that renders tools", ct->origin);
    char *pre = tools_preamble(tools);
    if (!pre) goto oom;
    int llama = ct->family == CHAT_LLAMA3;
    size_t at = 0, n = json_array_size(norm);
    if (llama)
        while (at < n && strcmp(json_string_value(json_object_get(json_array_get(norm, at), "role")), "user")) at++;
    json_t *m = at < n ? json_array_get(norm, at) : NULL;
    if (m && !llama && strcmp(json_string_value(json_object_get(m, "role")), "system")) m = NULL;
    const char *head = m ? json_string_value(json_object_get(m, "content")) : NULL;
    size_t len = (head ? strlen(head) + 2 : 0) + strlen(pre) + 1;
    char *t = malloc(len);
    if (!t) {
        free(pre);
        goto oom;
    }
    if (llama) snprintf(t, len, "%s%s", pre, head ? head : "");
    else snprintf(t, len, "%s%s%s", head ? head : "", head && *head ? "\n\n" : "", pre);
    free(pre);
    int bad;
    if (m) {
        bad = json_object_set_new(m, "content", json_string_nocheck(t)) != 0;
    } else {
        json_t *nm = json_pack("{s:s, s:s}", "role", llama ? "user" : "system", "content", t);
        bad = !nm || json_array_insert_new(norm, llama ? n : 0, nm) != 0;
    }
    free(t);
    if (bad) goto oom;
    return 0;
oom:
    *err = reply_error(500, "server_error", NULL, "out of memory");
    return -1;
}

int api_render_chat(srv_t *s, json_t *msgs, const tools_t *tools, char **out, reply_t *err) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return BAD("messages", "'messages' must be a non-empty list");
    if (json_array_size(msgs) > 4096) return BAD("messages", "at most 4096 messages");
    memset(err, 0, sizeof *err);
    const chat_tmpl_t *ct = &s->m->chat;
    const int own = ct->renders_tools; /* the Jinja template writes tools and tool turns itself */
    json_t *norm = normalize_messages(ct, msgs, !own, err), *tv = NULL;
    if (!norm) return -1;
    if (tools && tools_active(tools)) {
        if (own) tv = tools->tools;
        else if (add_tools(ct, tools, norm, err)) {
            json_decref(norm);
            return -1;
        }
    }
    if (own) { /* tool-call arguments as JSON values, as HF templates expect */
        json_t *tm = tools_template_messages(norm);
        json_decref(norm);
        if (!(norm = tm)) {
            *err = reply_error(500, "server_error", NULL, "out of memory");
            return -1;
        }
    }
    char msg[1024];
    int rc = chat_render_json(ct, norm, tv, 1, out, msg, sizeof msg);
    json_decref(norm);
    if (rc == 1) return BAD("messages", "%s", msg);
    if (rc != 0) {
        *err = reply_error(500, "server_error", NULL, "%s", msg);
        return -1;
    }
    return 0;
}

static int parse_stop(api_req_t *r, json_t *req, reply_t *err) {
    json_t *st = json_object_get(req, "stop");
    if (!st || json_is_null(st)) return 0;
    if (json_is_string(st)) {
        if (json_string_length(st) == 0) return BAD("stop", "stop strings must not be empty");
        r->stops[r->n_stops++] = json_string_value(st);
        return 0;
    }
    if (!json_is_array(st) || json_array_size(st) > SCHED_MAX_STOPS)
        return BAD("stop", "'stop' must be a string or a list of up to %d strings", SCHED_MAX_STOPS);
    size_t i;
    json_t *v;
    json_array_foreach(st, i, v) {
        if (!json_is_string(v) || json_string_length(v) == 0)
            return BAD("stop", "stop[%zu] must be a non-empty string", i);
        r->stops[r->n_stops++] = json_string_value(v);
    }
    return 0;
}

/* The request fields sqserve knows, per endpoint (1 completions, 2 chat);
 * every other field is refused by name. */
#define CMPL 1
#define CHAT 2
static const struct { const char *name; int eps; } FIELDS[] = {
    {"model", CMPL | CHAT}, {"stream", CMPL | CHAT}, {"stream_options", CMPL | CHAT},
    {"temperature", CMPL | CHAT}, {"top_p", CMPL | CHAT}, {"n", CMPL | CHAT}, {"stop", CMPL | CHAT},
    {"max_tokens", CMPL | CHAT}, {"presence_penalty", CMPL | CHAT}, {"frequency_penalty", CMPL | CHAT},
    {"logit_bias", CMPL | CHAT}, {"seed", CMPL | CHAT}, {"user", CMPL | CHAT},
    {"safety_identifier", CMPL | CHAT}, {"logprobs", CMPL | CHAT},
    {"service_tier", CMPL | CHAT}, {"store", CMPL | CHAT}, {"metadata", CMPL | CHAT},
    {"top_k", CMPL | CHAT}, {"min_p", CMPL | CHAT}, {"repetition_penalty", CMPL | CHAT},
    {"ignore_eos", CMPL | CHAT}, {"prompt", CMPL}, {"echo", CMPL | CHAT}, {"best_of", CMPL},
    {"suffix", CMPL}, {"messages", CHAT}, {"max_completion_tokens", CHAT}, {"top_logprobs", CHAT},
    {"response_format", CMPL | CHAT}, {"grammar", CMPL | CHAT},
    {"tools", CHAT}, {"tool_choice", CHAT},
    {"parallel_tool_calls", CHAT},
};

static int check_fields(json_t *req, int chat, reply_t *err) {
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        size_t i, n = sizeof FIELDS / sizeof FIELDS[0];
        for (i = 0; i < n; i++)
            if (!strcmp(FIELDS[i].name, key) && (FIELDS[i].eps & (chat ? CHAT : CMPL))) break;
        if (i == n)
            return BAD(key, "'%.64s' is not supported by sqserve's %s", key,
                       chat ? "/v1/chat/completions" : "/v1/completions");
    }
    return 0;
}

/* Fields accepted only with the value that asks for nothing sqserve does
 * not do: store (nothing is stored), metadata (only for stored
 * completions), service_tier (one tier), suffix (no insertion), best_of
 * (no ranking of extra candidates). */
static int check_noops(api_req_t *r, json_t *req, long n, reply_t *err) {
    json_t *v = json_object_get(req, "store");
    if (v && !json_is_null(v) && !json_is_false(v))
        return BAD("store", "'store' must be false: sqserve stores no completions");
    v = json_object_get(req, "metadata");
    if (v && !json_is_null(v))
        return BAD("metadata", "'metadata' is only for stored completions, which sqserve does not keep");
    v = json_object_get(req, "service_tier");
    if (v && !json_is_null(v)) {
        const char *t = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(t, "auto") && strcmp(t, "default"))
            return BAD("service_tier", "'service_tier' must be \"auto\" or \"default\": sqserve has one tier");
        r->service_tier = "default";
    }
    v = json_object_get(req, "suffix");
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
        return BAD("suffix", "'suffix' (insertion) is not supported");
    long best_of = n;
    if (get_int(req, "best_of", 1, API_MAX_N, &best_of, err)) return -1;
    if (best_of != 1 && best_of != n)
        return BAD("best_of", "'best_of' must be 1 or equal to n: sqserve does not rank extra candidates");
    return 0;
}

/* {"token id": bias in [-100, 100]}; -100 bans the token outright. */
static int parse_bias(srv_t *s, api_req_t *r, json_t *req, reply_t *err) {
    json_t *lb = json_object_get(req, "logit_bias");
    if (!lb || json_is_null(lb)) return 0;
    if (!json_is_object(lb)) return BAD("logit_bias", "'logit_bias' must be an object of token id -> bias");
    size_t n = json_object_size(lb);
    if (n > API_MAX_BIAS) return BAD("logit_bias", "'logit_bias' has more than %d entries", API_MAX_BIAS);
    if (n == 0) return 0;
    r->bias_ids = malloc(n * sizeof *r->bias_ids);
    r->bias = malloc(n * sizeof *r->bias);
    if (!r->bias_ids || !r->bias) return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    const char *key;
    json_t *v;
    json_object_foreach(lb, key, v) {
        char *end;
        long id = strtol(key, &end, 10);
        if (!*key || *end || id < 0 || id >= s->m->hp.n_vocab)
            return BAD("logit_bias", "logit_bias key '%.32s' is not a token id in [0, %d)", key, s->m->hp.n_vocab);
        double b = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(b >= -100 && b <= 100))
            return BAD("logit_bias", "logit_bias['%.32s'] must be a number in [-100, 100]", key);
        r->bias_ids[r->n_bias] = (int32_t)id;
        r->bias[r->n_bias++] = (float)b;
    }
    return 0;
}

static int parse_sampling(srv_t *s, api_req_t *r, json_t *req, reply_t *err) {
    sample_params_t *sp = &r->sp;
    *sp = s->sp_default; /* each field the request leaves out keeps the server's default */
    double temp = sp->temperature, top_p = sp->top_p, min_p = sp->min_p, pres = 0, freq = 0, rep = 1;
    long top_k = sp->top_k, seed = -1;
    if (get_num(req, "temperature", 0, 2, &temp, err) || get_num(req, "top_p", 0, 1, &top_p, err) ||
        get_num(req, "min_p", 0, 1, &min_p, err) ||
        get_num(req, "presence_penalty", -2, 2, &pres, err) ||
        get_num(req, "frequency_penalty", -2, 2, &freq, err) ||
        get_num(req, "repetition_penalty", 0.01, 10, &rep, err) ||
        get_int(req, "top_k", 0, 1 << 24, &top_k, err) || parse_bias(s, r, req, err))
        return -1;
    json_t *sv = json_object_get(req, "seed");
    if (sv && !json_is_null(sv)) {
        if (!json_is_integer(sv)) return BAD("seed", "'seed' must be an integer");
        seed = (long)json_integer_value(sv);
        r->has_seed = 1;
    }
    if (top_p <= 0) return BAD("top_p", "'top_p' must be greater than 0");
    sp->temperature = (float)temp;
    sp->top_p = (float)top_p;
    sp->min_p = (float)min_p;
    sp->top_k = (int)top_k;
    sp->presence_penalty = (float)pres;
    sp->frequency_penalty = (float)freq;
    sp->repeat_penalty = (float)rep;
    sp->penalty_last_n = 1024;
    r->seed = r->has_seed ? (uint64_t)seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    return 0;
}

/* Per prompt: the request's max_tokens, else the endpoint's default
 * (chat: --default-max-tokens, cut to the room left; completions: 16). */
static int set_max_tokens(srv_t *s, api_req_t *r, long max_tokens, int from_mct, reply_t *err) {
    int chat = r->chat, n_ctx = sched_config(s->sched)->n_ctx;
    const char *field = from_mct ? "max_completion_tokens" : "max_tokens";
    if (s->max_tokens_limit > 0 && max_tokens > s->max_tokens_limit)
        return BAD(field, "%s (%ld) exceeds this server's limit of %d (--max-tokens-limit)", field, max_tokens,
                   s->max_tokens_limit);
    for (int i = 0; i < r->n_prompts; i++) {
        int room = n_ctx - r->prompt_len[i];
        if (room < 1) return BAD(chat ? "messages" : "prompt", "the prompt (%d tokens) fills the context of %d",
                                 r->prompt_len[i], n_ctx);
        long mt = max_tokens;
        if (mt < 0) {
            mt = chat ? s->default_max_tokens : 16;
            if (s->max_tokens_limit > 0 && mt > s->max_tokens_limit) mt = s->max_tokens_limit;
            if (mt > room) mt = room;
        }
        if (mt > room)
            return BAD(field, "%s (%ld) + the prompt (%d tokens) exceeds the context of %d", field, mt,
                       r->prompt_len[i], n_ctx);
        r->max_tokens[i] = (int)mt;
    }
    return 0;
}

int api_parse(srv_t *s, json_t *req, int chat, api_req_t *r, reply_t *err) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->n_logprobs = -1;
    if (check_fields(req, chat, err)) return -1;
    json_t *model = json_object_get(req, "model");
    if (!json_is_string(model)) return BAD("model", "'model' is required and must be a string");
    if (strcmp(json_string_value(model), s->model_id) != 0) {
        *err = reply_error(404, "not_found_error", "model", "model '%s' does not exist (serving '%s')",
                          json_string_value(model), s->model_id);
        return -1;
    }
    if (chat) {
        char *text;
        if (tools_parse(req, s->m->chat.family, &r->tools, err) ||
            api_render_chat(s, json_object_get(req, "messages"), &r->tools, &text, err))
            return -1;
        int rc = tokenize_into(s, r, text, strlen(text), err);
        free(r->echo_text[0]);
        r->echo_text[0] = NULL;
        free(text);
        if (rc) return -1;
    } else if (parse_prompt(s, r, req, err)) {
        return -1;
    }
    long n = 1, max_tokens = -1, mct = -1, logprobs = -1, top_lp = -1;
    int want_lp = 0;
    if (get_int(req, "n", 1, API_MAX_N, &n, err) ||
        get_int(req, "max_tokens", 0, 1L << 30, &max_tokens, err) ||
        get_int(req, "max_completion_tokens", 1, 1L << 30, &mct, err) ||
        get_bool(req, "stream", &r->stream, err) || get_bool(req, "echo", &r->echo, err) ||
        get_bool(req, "ignore_eos", &r->ignore_eos, err) || parse_stop(r, req, err) ||
        parse_sampling(s, r, req, err) || check_noops(r, req, n, err))
        return -1;
    if (chat) {
        if (get_bool(req, "logprobs", &want_lp, err) || get_int(req, "top_logprobs", 0, 20, &top_lp, err))
            return -1;
        if (top_lp >= 0 && !want_lp) return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (want_lp) logprobs = top_lp > 0 ? top_lp : 0;
        if (r->echo) return BAD("echo", "'echo' is not supported for chat completions");
        if (mct > 0) max_tokens = mct;
    } else if (get_int(req, "logprobs", 0, 5, &logprobs, err)) {
        return -1;
    }
    r->n_logprobs = (int)logprobs;
    r->prompt_logprobs = !chat && r->echo && logprobs >= 0;
    if (r->prompt_logprobs && r->stream)
        return BAD("echo", "'echo' with 'logprobs' (prompt logprobs) is not available with 'stream'");
    if (max_tokens == 0 && !r->prompt_logprobs)
        return BAD("max_tokens", "'max_tokens' must be at least 1 (0 only with echo and logprobs: prompt scoring)");
    if (!chat && json_object_get(req, "tools") && !json_is_null(json_object_get(req, "tools")))
        return BAD("tools", "'tools' is for /v1/chat/completions");
    if (r->stream && r->n_logprobs >= 0 && tools_active(&r->tools))
        return BAD("logprobs", "'logprobs' with tools in a streamed request is not supported");
    if (structured_parse(req, r, err)) return -1;
    json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return BAD("stream_options", "'stream_options' must be an object");
        const char *key;
        json_t *v;
        json_object_foreach(so, key, v)
            if (strcmp(key, "include_usage"))
                return BAD("stream_options", "stream_options.%.32s is not supported (only include_usage)", key);
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu)) return BAD("stream_options", "'include_usage' must be a boolean");
        if (!r->stream) return BAD("stream_options", "'stream_options' needs 'stream': true");
        r->include_usage = json_is_true(iu);
    }
    json_t *user = json_object_get(req, "user"), *sid = json_object_get(req, "safety_identifier");
    if (user && !json_is_null(user) && !json_is_string(user)) return BAD("user", "'user' must be a string");
    if (sid && !json_is_null(sid) && !json_is_string(sid))
        return BAD("safety_identifier", "'safety_identifier' must be a string");
    r->n = (int)n;
    if (r->n_prompts * r->n > API_MAX_CHOICES)
        return BAD("n", "at most %d choices per request (prompts x n)", API_MAX_CHOICES);
    return set_max_tokens(s, r, max_tokens, chat && mct > 0, err);
}

void api_req_free(api_req_t *r) {
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i]);
        free(r->echo_text[i]);
    }
    r->n_prompts = 0;
    free(r->bias_ids);
    free(r->bias);
    r->bias_ids = NULL;
    r->bias = NULL;
    r->n_bias = 0;
    tools_free(&r->tools);
    grammar_unref(r->grammar);
    r->grammar = NULL;
}

/* ---- token helpers shared with api.c ------------------------------------------ */

int32_t *api_encode(const tok_t *t, const char *text, size_t len, long *n) {
    size_t cap = len + 16;
    for (;;) {
        int32_t *ids = malloc(cap * sizeof *ids);
        if (!ids) return NULL;
        long k = tok_encode(t, text, len, 1, ids, cap);
        if (k < 0) { free(ids); return NULL; }
        if ((size_t)k <= cap) { *n = k; return ids; }
        free(ids);
        cap = (size_t)k;
    }
}

char *api_decode(const tok_t *t, const int32_t *ids, long n) {
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    tok_stream_t ts = {0};
    char piece[2048];
    for (long i = 0; out && i <= n; i++) {
        size_t k = i < n ? tok_stream_push(t, &ts, ids[i], 1, piece, sizeof piece)
                         : tok_stream_flush(&ts, piece, sizeof piece);
        if (len + k + 1 > cap) {
            char *nb = realloc(out, cap = (len + k + 1) * 2);
            if (!nb) { free(out); return NULL; }
            out = nb;
        }
        memcpy(out + len, piece, k);
        len += k;
    }
    if (out) out[len] = 0;
    return out;
}
