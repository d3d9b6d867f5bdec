/* api_req.c - validates OpenAI request JSON into an api_req_t.
 *
 * Every rejection names the offending field in `param`, so a client can
 * fix its request without reading server logs. Unknown fields are
 * ignored, as OpenAI does.
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

int api_render_chat(srv_t *s, json_t *msgs, char **out, reply_t *err) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return BAD("messages", "'messages' must be a non-empty list");
    size_t n = json_array_size(msgs), i;
    if (n > 4096) return BAD("messages", "at most 4096 messages");
    chat_msg_t *m = calloc(n, sizeof *m);
    char **texts = calloc(n, sizeof *texts);
    int rc = -1;
    if (!m || !texts) {
        *err = reply_error(500, "server_error", NULL, "out of memory");
        goto out;
    }
    json_t *msg;
    json_array_foreach(msgs, i, msg) {
        json_t *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            BAD("messages", "messages[%zu] must be an object with a string 'role'", i);
            goto out;
        }
        const char *rs = json_string_value(role);
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") &&
            strcmp(rs, "developer")) {
            BAD("messages", "messages[%zu].role '%s' is not system, developer, user or assistant", i, rs);
            goto out;
        }
        json_t *content = json_object_get(msg, "content");
        if (!content || (json_is_null(content) && strcmp(rs, "assistant"))) {
            BAD("messages", "messages[%zu].content is required", i);
            goto out;
        }
        if (!(texts[i] = message_text(content, i, err))) goto out;
        m[i].role = strcmp(rs, "developer") ? rs : "system";
        m[i].content = texts[i];
    }
    *out = chat_render(&s->m->chat, m, n, 1);
    if (!*out) *err = reply_error(500, "server_error", NULL, "out of memory");
    else rc = 0;
out:
    if (texts)
        for (i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(m);
    return rc;
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

static int parse_sampling(api_req_t *r, json_t *req, reply_t *err) {
    sample_params_t *sp = &r->sp;
    *sp = sample_defaults();
    double temp = 1.0, top_p = 1.0, min_p = 0, pres = 0, freq = 0, rep = 1;
    long top_k = 0, seed = -1;
    if (get_num(req, "temperature", 0, 2, &temp, err) || get_num(req, "top_p", 0, 1, &top_p, err) ||
        get_num(req, "min_p", 0, 1, &min_p, err) ||
        get_num(req, "presence_penalty", -2, 2, &pres, err) ||
        get_num(req, "frequency_penalty", -2, 2, &freq, err) ||
        get_num(req, "repetition_penalty", 0.01, 10, &rep, err) ||
        get_int(req, "top_k", 0, 1 << 24, &top_k, err))
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

int api_parse(srv_t *s, json_t *req, int chat, api_req_t *r, reply_t *err) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->n_logprobs = -1;
    json_t *model = json_object_get(req, "model");
    if (!json_is_string(model)) return BAD("model", "'model' is required and must be a string");
    if (strcmp(json_string_value(model), s->model_id) != 0) {
        *err = reply_error(404, "not_found_error", "model", "model '%s' does not exist (serving '%s')",
                          json_string_value(model), s->model_id);
        return -1;
    }
    if (chat) {
        char *text;
        if (api_render_chat(s, json_object_get(req, "messages"), &text, err)) return -1;
        int rc = tokenize_into(s, r, text, strlen(text), err);
        free(r->echo_text[0]);
        r->echo_text[0] = NULL;
        free(text);
        if (rc) return -1;
    } else if (parse_prompt(s, r, req, err)) {
        return -1;
    }
    long n = 1, max_tokens = -1, mct = -1, logprobs = -1, top_lp = 0;
    int want_lp = 0;
    if (get_int(req, "n", 1, API_MAX_N, &n, err) ||
        get_int(req, "max_tokens", 1, 1L << 30, &max_tokens, err) ||
        get_int(req, "max_completion_tokens", 1, 1L << 30, &mct, err) ||
        get_bool(req, "stream", &r->stream, err) || get_bool(req, "echo", &r->echo, err) ||
        get_bool(req, "ignore_eos", &r->ignore_eos, err) || parse_stop(r, req, err) ||
        parse_sampling(r, req, err))
        return -1;
    if (chat) {
        if (get_bool(req, "logprobs", &want_lp, err) || get_int(req, "top_logprobs", 0, 20, &top_lp, err))
            return -1;
        if (want_lp) logprobs = top_lp;
        if (r->echo) return BAD("echo", "'echo' is not supported for chat completions");
        if (mct > 0) max_tokens = mct;
    } else if (get_int(req, "logprobs", 0, 5, &logprobs, err)) {
        return -1;
    }
    r->n_logprobs = (int)logprobs;
    json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return BAD("stream_options", "'stream_options' must be an object");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu)) return BAD("stream_options", "'include_usage' must be a boolean");
        r->include_usage = json_is_true(iu);
    }
    json_t *user = json_object_get(req, "user");
    if (user && !json_is_null(user) && !json_is_string(user)) return BAD("user", "'user' must be a string");
    r->n = (int)n;
    if (r->n_prompts * r->n > API_MAX_CHOICES)
        return BAD("n", "at most %d choices per request (prompts x n)", API_MAX_CHOICES);
    int n_ctx = sched_config(s->sched)->n_ctx;
    for (int i = 0; i < r->n_prompts; i++) {
        int room = n_ctx - r->prompt_len[i];
        if (room < 1) return BAD(chat ? "messages" : "prompt", "the prompt (%d tokens) fills the context of %d",
                                 r->prompt_len[i], n_ctx);
        long mt = max_tokens > 0 ? max_tokens : chat ? room : 16;
        if (mt > room)
            return BAD(chat && mct > 0 ? "max_completion_tokens" : "max_tokens",
                       "max_tokens (%ld) + the prompt (%d tokens) exceeds the context of %d", mt,
                       r->prompt_len[i], n_ctx);
        r->max_tokens[i] = (int)mt;
    }
    return 0;
}

void api_req_free(api_req_t *r) {
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i]);
        free(r->echo_text[i]);
    }
    r->n_prompts = 0;
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
