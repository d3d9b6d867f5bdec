/* api.c - runs validated OpenAI requests through the scheduler.
 *
 * One call_t per HTTP request, shared by the connection thread and the
 * engine's sink callbacks (under call_t.mu), freed by whichever side lets
 * go last (refcount: 1 for HTTP + 1 per submitted sequence). The engine
 * guarantees exactly one DONE per sequence, so the count always reaches 0.
 * Streaming responses are fed from an output queue the sink appends SSE
 * frames to; a waiting reader polls its socket so a vanished client
 * cancels its sequences within ~200 ms. The same waits print a progress
 * line every --progress-every generated tokens, and fill the request's
 * access-log record (req_info_t) on the connection's thread.
 *
 * Prompt logprobs (completions with echo and logprobs) come from the
 * engine as SCHED_PROMPT events and are stored ahead of the generated
 * tokens' entries, the first prompt token with a null logprob (NAN), as
 * OpenAI reports it.
 */
#include "api.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define WAIT_SLICE_MS 200
/* A sequence is cancelled by the drain timer or by its own client leaving;
 * only the first can still be read, so that is what a cut request says. */
#define CUT_BY_DRAIN "the server is shutting down: --drain-timeout expired before the request finished"

typedef struct {
    char *text;
    size_t len, cap;
    long char_off;       /* characters of text sent so far (logprob text_offset) */
    int32_t *tok;
    float *lp;
    int32_t *top_ids;
    float *top_lp;
    int n_tok, cap_tok;
    const char *finish;
    const char *error;
    int n_gen, done, role_sent, n_cached;
    tools_stream_t tstream;  /* streamed replies with tools: calls parsed as they complete */
} choice_t;

typedef struct call call_t;
typedef struct { call_t *call; int idx; } sink_ud_t;

struct call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    srv_t *srv;
    api_req_t req;
    int n_choices, n_done, n_top, prompt_tokens;
    choice_t *ch;
    sink_ud_t *ud;
    uint64_t *ids;
    int n_submitted, cancelled;
    char id[48];
    long created;
    char *out;               /* SSE bytes not yet sent */
    size_t out_len, out_cap, out_pos;
    int closed;              /* [DONE] queued */
    int fd;
    req_info_t *info;        /* the access log's record: connection thread only */
    int client_left;         /* the client closed its connection before the reply */
    long gen_seen;           /* tokens generated so far, all choices */
    long next_progress;      /* log a progress line when gen_seen reaches this */
    double t_start;
};

/* ---- small helpers ------------------------------------------------------------- */

/* A token's text as valid UTF-8 (a lone byte of a split character shows
 * as U+FFFD) for logprob entries. */
static json_t *token_json(const tok_t *t, int32_t id) {
    size_t n, clean_len;
    const char *p = tok_piece(t, id, &n);
    char *clean = tok_utf8_sanitize(p, n, &clean_len);
    json_t *j = clean ? json_stringn(clean, clean_len) : json_string("");
    free(clean);
    return j;
}

static json_t *token_bytes(const tok_t *t, int32_t id) {
    size_t n;
    const char *p = tok_piece(t, id, &n);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer((uint8_t)p[i]));
    return a;
}

static int buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = (*len + n + 1) * 2;
        char *nb = realloc(*buf, c);
        if (!nb) return -1;
        *buf = nb;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static void call_unref_locked(call_t *c) { /* called with c->mu held; may free c */
    if (--c->refs > 0) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < c->n_choices; i++) {
        choice_t *ch = &c->ch[i];
        free(ch->text); free(ch->tok); free(ch->lp); free(ch->top_ids); free(ch->top_lp);
        tools_stream_free(&ch->tstream);
    }
    api_req_free(&c->req);
    free(c->ch); free(c->ud); free(c->ids); free(c->out);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void cancel_all(call_t *c) {
    if (c->cancelled) return;
    c->cancelled = 1;
    for (int i = 0; i < c->n_submitted; i++) sched_cancel(c->srv->sched, c->ids[i]);
}

static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static int cached_tokens(const call_t *c);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A progress line every --progress-every generated tokens (c->mu held). */
static void progress(call_t *c) {
    int every = c->srv->progress_every;
    if (every <= 0 || c->gen_seen < c->next_progress || !c->info) return;
    headers_log_progress(c->srv, c->info->id, c->gen_seen, now_s() - c->t_start);
    c->next_progress = (c->gen_seen / every + 1) * every;
}

/* The access log's record (c->mu held, on the connection's thread). */
static void fill_info(call_t *c) {
    req_info_t *in = c->info;
    if (!in) return;
    int gen = 0;
    for (int i = 0; i < c->n_choices; i++) gen += c->ch[i].n_gen;
    in->prompt_tokens = c->prompt_tokens;
    in->completion_tokens = gen;
    in->cached_tokens = cached_tokens(c);
    if (c->client_left) {
        in->cause = "client_disconnect";
        return;
    }
    for (int i = 0; i < c->n_choices; i++) {
        const char *f = c->ch[i].finish;
        if (!strcmp(f, "timeout")) in->cause = "timeout";
        else if (!strcmp(f, "cancelled")) in->cause = "drain";
        else if (!strcmp(f, "error")) in->cause = "error";
    }
}

static void wait_slice(call_t *c) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += WAIT_SLICE_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* ---- response pieces ------------------------------------------------------------ */

static const char *finish_reason(const choice_t *ch, int n_calls) {
    if (!strcmp(ch->finish, "stop")) return n_calls > 0 ? "tool_calls" : "stop";
    return "length"; /* timeout/cancel end a stream as cut */
}

/* Characters (code points) in UTF-8 text: OpenAI's offsets index str. */
static long utf8_chars(const char *s, size_t n) {
    long c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* Completions-style logprobs for tokens [from, to) of a choice; offsets
 * count characters from offset0. */
static json_t *legacy_logprobs(call_t *c, choice_t *ch, int from, int to, long offset0) {
    const tok_t *t = c->srv->m->tok;
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    long off = offset0;
    for (int i = from; i < to; i++) {
        json_t *tj = token_json(t, ch->tok[i]);
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += utf8_chars(json_string_value(tj), json_string_length(tj));
        json_array_append_new(toks, tj);
        if (isnan(ch->lp[i])) { /* the first prompt token: nothing predicts it */
            json_array_append_new(lps, json_null());
            json_array_append_new(tops, json_null());
            continue;
        }
        json_array_append_new(lps, json_real(ch->lp[i]));
        json_t *top = json_object();
        for (int k = 0; k < c->n_top; k++) {
            int32_t id = ch->top_ids[i * c->n_top + k];
            if (id < 0) continue;
            json_t *kj = token_json(t, id);
            if (!json_object_get(top, json_string_value(kj)))
                json_object_set_new(top, json_string_value(kj), json_real(ch->top_lp[i * c->n_top + k]));
            json_decref(kj);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offs);
}

static json_t *chat_logprobs(call_t *c, choice_t *ch, int from, int to) {
    const tok_t *t = c->srv->m->tok;
    json_t *content = json_array();
    for (int i = from; i < to; i++) {
        json_t *top = json_array();
        for (int k = 0; k < c->n_top; k++) {
            int32_t id = ch->top_ids[i * c->n_top + k];
            if (id < 0) continue;
            json_array_append_new(top, json_pack("{s:o, s:f, s:o}", "token", token_json(t, id),
                                                 "logprob", ch->top_lp[i * c->n_top + k], "bytes",
                                                 token_bytes(t, id)));
        }
        json_array_append_new(content, json_pack("{s:o, s:f, s:o, s:o}", "token",
                                                 token_json(t, ch->tok[i]), "logprob", ch->lp[i],
                                                 "bytes", token_bytes(t, ch->tok[i]),
                                                 "top_logprobs", top));
    }
    return json_pack("{s:o}", "content", content);
}

/* Prompt tokens served from the prefix cache: per prompt, its first
 * choice's count (usage counts each prompt once, whatever n is). */
static int cached_tokens(const call_t *c) {
    int n = 0;
    for (int p = 0; p < c->req.n_prompts; p++) n += c->ch[p * c->req.n].n_cached;
    return n;
}

static json_t *usage_json(call_t *c) {
    int gen = 0;
    for (int i = 0; i < c->n_choices; i++) gen += c->ch[i].n_gen;
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", c->prompt_tokens, "completion_tokens", gen,
                     "total_tokens", c->prompt_tokens + gen, "prompt_tokens_details", "cached_tokens",
                     cached_tokens(c));
}

static json_t *envelope(call_t *c, int chunk) {
    const char *obj = c->req.chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                  : "text_completion";
    json_t *e = json_pack("{s:s, s:s, s:I, s:s}", "id", c->id, "object", obj, "created",
                          (json_int_t)c->created, "model", c->srv->model_id);
    if (e && c->req.service_tier) json_object_set_new(e, "service_tier", json_string(c->req.service_tier));
    return e;
}

/* Appends one SSE frame; called with c->mu held. */
static void sse_frame(call_t *c, json_t *j) {
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) return;
    buf_add(&c->out, &c->out_len, &c->out_cap, "data: ", 6);
    buf_add(&c->out, &c->out_len, &c->out_cap, text, strlen(text));
    buf_add(&c->out, &c->out_len, &c->out_cap, "\n\n", 2);
    free(text);
}

static void sse_chunk(call_t *c, int idx, const char *text, size_t len, int lp_from, int lp_to,
                      const char *finish) {
    choice_t *ch = &c->ch[idx];
    json_t *choice;
    json_t *lp = json_null();
    if (c->req.n_logprobs >= 0 && lp_to > lp_from)
        lp = c->req.chat ? chat_logprobs(c, ch, lp_from, lp_to)
                         : legacy_logprobs(c, ch, lp_from, lp_to, ch->char_off);
    ch->char_off += utf8_chars(text, len);
    if (c->req.chat) {
        json_t *delta = json_object();
        if (!ch->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            ch->role_sent = 1;
        }
        if (len || !finish) json_object_set_new(delta, "content", json_stringn(text, len));
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", idx, "delta", delta, "logprobs", lp,
                           "finish_reason", finish ? json_string(finish) : json_null());
    } else {
        choice = json_pack("{s:s%, s:i, s:o, s:o}", "text", text, len, "index", idx, "logprobs", lp,
                           "finish_reason", finish ? json_string(finish) : json_null());
    }
    json_t *env = envelope(c, 1);
    json_object_set_new(env, "choices", json_pack("[o]", choice));
    if (c->req.include_usage) json_object_set_new(env, "usage", json_null());
    sse_frame(c, env);
}

/* A streamed tool call as OpenAI sends it: one chunk opening the call (id,
 * name, empty arguments), one carrying the arguments. Called with c->mu held. */
static void sse_tool_call(call_t *c, int idx, int index, json_t *call) {
    choice_t *ch = &c->ch[idx];
    json_t *fn = json_object_get(call, "function");
    for (int part = 0; part < 2; part++) {
        json_t *tc = part == 0 ? json_pack("{s:i, s:O, s:s, s:{s:O, s:s}}", "index", index, "id",
                                           json_object_get(call, "id"), "type", "function", "function", "name",
                                           json_object_get(fn, "name"), "arguments", "")
                               : json_pack("{s:i, s:{s:O}}", "index", index, "function", "arguments",
                                           json_object_get(fn, "arguments"));
        json_t *delta = json_pack("{s:o}", "tool_calls", json_pack("[o]", tc));
        if (!ch->role_sent) {
            json_object_set_new(delta, "role", json_string("assistant"));
            ch->role_sent = 1;
        }
        json_t *env = envelope(c, 1);
        json_object_set_new(env, "choices", json_pack("[{s:i, s:o, s:n, s:n}]", "index", idx, "delta", delta,
                                                      "logprobs", "finish_reason"));
        if (c->req.include_usage) json_object_set_new(env, "usage", json_null());
        sse_frame(c, env);
    }
}

static void tool_content_cb(void *ud, const char *text, size_t len) {
    sink_ud_t *u = ud;
    sse_chunk(u->call, u->idx, text, len, 0, 0, NULL);
}

static void tool_call_cb(void *ud, int index, json_t *call) {
    sink_ud_t *u = ud;
    sse_tool_call(u->call, u->idx, index, call);
}

/* ---- the engine's sink ------------------------------------------------------------ */

static int record_token(call_t *c, choice_t *ch, const sched_event_t *ev) {
    if (ch->n_tok == ch->cap_tok) {
        int cap = ch->cap_tok ? ch->cap_tok * 2 : 32;
        int32_t *tok = realloc(ch->tok, (size_t)cap * sizeof *tok);
        if (tok) ch->tok = tok;
        float *lp = realloc(ch->lp, (size_t)cap * sizeof *lp);
        if (lp) ch->lp = lp;
        int32_t *ti = realloc(ch->top_ids, (size_t)cap * (c->n_top + 1) * sizeof *ti);
        if (ti) ch->top_ids = ti;
        float *tl = realloc(ch->top_lp, (size_t)cap * (c->n_top + 1) * sizeof *tl);
        if (tl) ch->top_lp = tl;
        if (!tok || !lp || !ti || !tl) return -1;
        ch->cap_tok = cap;
    }
    int i = ch->n_tok++;
    ch->tok[i] = ev->token;
    ch->lp[i] = ev->logprob;
    for (int k = 0; k < c->n_top; k++) {
        ch->top_ids[i * c->n_top + k] = k < ev->n_top ? ev->top_ids[k] : -1;
        ch->top_lp[i * c->n_top + k] = k < ev->n_top ? ev->top_logprobs[k] : 0;
    }
    return 0;
}

static void on_event(void *arg, const sched_event_t *ev) {
    sink_ud_t *u = arg;
    call_t *c = u->call;
    choice_t *ch = &c->ch[u->idx];
    pthread_mutex_lock(&c->mu);
    if (ev->type == SCHED_PROMPT) {
        record_token(c, ch, ev);
    } else if (ev->type == SCHED_TOKEN) {
        if (ev->token >= 0) c->gen_seen++;
        int from = ch->n_tok;
        if (c->req.n_logprobs >= 0 && ev->token >= 0) record_token(c, ch, ev);
        if (c->req.stream && tools_active(&c->req.tools)) {
            tools_stream_feed(&ch->tstream, ev->text, ev->len, 0, tool_content_cb, tool_call_cb, u);
        } else if (c->req.stream) {
            if (ev->len || ch->n_tok > from) sse_chunk(c, u->idx, ev->text, ev->len, from, ch->n_tok, NULL);
        } else {
            buf_add(&ch->text, &ch->len, &ch->cap, ev->text, ev->len);
        }
    } else {
        ch->done = 1;
        ch->finish = ev->finish;
        ch->error = ev->error ? "generation failed" : NULL;
        ch->n_gen = ev->n_gen;
        ch->n_cached = ev->n_cached;
        c->n_done++;
        if (c->req.stream) {
            if (tools_active(&c->req.tools)) tools_stream_feed(&ch->tstream, "", 0, 1, tool_content_cb, tool_call_cb, u);
            if (!strcmp(ch->finish, "stop") || !strcmp(ch->finish, "length")) {
                sse_chunk(c, u->idx, "", 0, 0, 0, finish_reason(ch, ch->tstream.n_calls));
            } else { /* cut short: say why rather than claim a finish reason */
                int timeout = !strcmp(ch->finish, "timeout"), err = !strcmp(ch->finish, "error");
                sse_frame(c, json_pack("{s:{s:s, s:s, s:o, s:i, s:i}}", "error", "message",
                                       timeout ? "the request exceeded --request-timeout"
                                       : err ? (ev->error ? ev->error : "generation failed") : CUT_BY_DRAIN,
                                       "type", timeout ? "timeout_error" : "server_error", "param", json_null(),
                                       "code", timeout ? 504 : err ? 500 : 503, "index", u->idx));
            }
            if (c->n_done == c->n_choices) {
                if (c->req.include_usage) {
                    json_t *env = envelope(c, 1);
                    json_object_set_new(env, "choices", json_array());
                    json_object_set_new(env, "usage", usage_json(c));
                    sse_frame(c, env);
                }
                buf_add(&c->out, &c->out_len, &c->out_cap, "data: [DONE]\n\n", 14);
                c->closed = 1;
            }
        }
        pthread_cond_broadcast(&c->cv);
        call_unref_locked(c); /* unlocks */
        return;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* ---- streaming response ------------------------------------------------------------ */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    call_t *c = cls;
    pthread_mutex_lock(&c->mu);
    while (c->out_pos == c->out_len && !c->closed) {
        wait_slice(c);
        progress(c);
        if (c->out_pos == c->out_len && !c->closed && client_gone(c->fd)) {
            c->client_left = 1;
            cancel_all(c);
            fill_info(c);
            pthread_mutex_unlock(&c->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    if (c->out_pos < c->out_len) {
        progress(c); /* also while frames keep coming without a wait */
        size_t n = c->out_len - c->out_pos < max ? c->out_len - c->out_pos : max;
        memcpy(buf, c->out + c->out_pos, n);
        c->out_pos += n;
        if (c->out_pos == c->out_len) c->out_pos = c->out_len = 0;
        pthread_mutex_unlock(&c->mu);
        return (ssize_t)n;
    }
    fill_info(c);
    pthread_mutex_unlock(&c->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls) {
    call_t *c = cls;
    pthread_mutex_lock(&c->mu);
    if (c->n_done < c->n_choices) cancel_all(c); /* the client left early */
    call_unref_locked(c);
}

/* ---- non-streaming response ---------------------------------------------------------- */

static reply_t full_response(call_t *c) {
    json_t *choices = json_array();
    const char *err = NULL;
    int timed_out = 0;
    for (int i = 0; i < c->n_choices; i++) {
        choice_t *ch = &c->ch[i];
        if (ch->error) err = ch->error;
        if (!strcmp(ch->finish, "timeout")) timed_out = 1;
        const char *echo = c->req.echo ? c->req.echo_text[i / c->req.n] : NULL;
        size_t echo_len = echo ? strlen(echo) : 0;
        json_t *lp = json_null();
        if (c->req.n_logprobs >= 0)
            lp = c->req.chat ? chat_logprobs(c, ch, 0, ch->n_tok)
                             : legacy_logprobs(c, ch, 0, ch->n_tok, /* prompt entries start at 0 */
                                               c->req.prompt_logprobs ? 0 : utf8_chars(echo ? echo : "", echo_len));
        json_t *choice;
        if (c->req.chat && tools_active(&c->req.tools)) {
            char *content = NULL;
            json_t *calls = tools_extract(&c->req.tools, ch->text ? ch->text : "", ch->len, &content);
            json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content",
                                    content ? json_string(content) : json_null());
            if (calls) json_object_set_new(msg, "tool_calls", calls);
            choice = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", msg, "logprobs", lp,
                               "finish_reason", finish_reason(ch, (int)json_array_size(calls)));
            free(content);
        } else if (c->req.chat) {
            choice = json_pack("{s:i, s:{s:s, s:s%}, s:o, s:s}", "index", i, "message", "role",
                               "assistant", "content", ch->text ? ch->text : "", ch->len, "logprobs",
                               lp, "finish_reason", finish_reason(ch, 0));
        } else {
            char *text = malloc(echo_len + ch->len + 1);
            if (!text) { json_decref(lp); continue; }
            if (echo_len) memcpy(text, echo, echo_len);
            if (ch->len) memcpy(text + echo_len, ch->text, ch->len);
            choice = json_pack("{s:s%, s:i, s:o, s:s}", "text", text, echo_len + ch->len, "index", i,
                               "logprobs", lp, "finish_reason", finish_reason(ch, 0));
            free(text);
        }
        json_array_append_new(choices, choice);
    }
    if (err) {
        json_decref(choices);
        return reply_error(500, "server_error", NULL, "%s", err);
    }
    if (timed_out) {
        json_decref(choices);
        return reply_error(504, "timeout_error", NULL, "the request exceeded --request-timeout");
    }
    for (int i = 0; i < c->n_choices; i++)
        if (!strcmp(c->ch[i].finish, "cancelled")) {
            json_decref(choices);
            return reply_error(503, "server_error", NULL, "%s", CUT_BY_DRAIN);
        }
    json_t *env = envelope(c, 0);
    json_object_set_new(env, "choices", choices);
    json_object_set_new(env, "usage", usage_json(c));
    return reply_json(200, env);
}

/* ---- the endpoint ------------------------------------------------------------------------ */

static call_t *call_new(srv_t *s, struct MHD_Connection *conn, int chat, req_info_t *info) {
    call_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->srv = s;
    c->refs = 1;
    c->created = (long)time(NULL);
    c->info = info;
    c->t_start = now_s();
    c->next_progress = s->progress_every;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (uint64_t)clock();
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = ci ? ci->connect_fd : -1;
    snprintf(c->id, sizeof c->id, "%s-%016llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)rnd);
    return c;
}

static reply_t submit_all(call_t *c) {
    api_req_t *r = &c->req;
    for (int p = 0; p < r->n_prompts; p++) {
        c->prompt_tokens += r->prompt_len[p];
        for (int j = 0; j < r->n; j++) {
            int idx = p * r->n + j;
            c->ud[idx] = (sink_ud_t){c, idx};
            sched_params_t sp = {.prompt = r->prompts[p], .n_prompt = r->prompt_len[p],
                                 .max_tokens = r->max_tokens[p], .sp = r->sp, .n_stops = r->n_stops,
                                 .ignore_eos = r->ignore_eos, .n_logprobs = r->n_logprobs,
                                 .prompt_logprobs = r->prompt_logprobs, .bias_ids = r->bias_ids,
                                 .bias = r->bias, .n_bias = r->n_bias, .grammar = r->grammar,
                                 .timeout_s = c->srv->request_timeout_s, .sink = on_event,
                                 .ud = &c->ud[idx]};
            sp.sp.seed = r->seed + (uint64_t)idx; /* distinct, reproducible choices */
            if (r->prompt_logprobs) { /* the first prompt token's entry: a null logprob */
                sched_event_t first = {.token = r->prompts[p][0], .logprob = NAN};
                if (record_token(c, &c->ch[idx], &first) != 0)
                    return reply_error(500, "server_error", NULL, "out of memory");
            }
            for (int k = 0; k < r->n_stops; k++) sp.stops[k] = r->stops[k];
            char err[256];
            pthread_mutex_lock(&c->mu);
            c->refs++; /* the sequence's DONE will drop it */
            pthread_mutex_unlock(&c->mu);
            int rc = sched_submit(c->srv->sched, &sp, &c->ids[c->n_submitted], err, sizeof err);
            if (rc == SCHED_OK) {
                c->n_submitted++;
                continue;
            }
            pthread_mutex_lock(&c->mu);
            c->refs--;
            c->n_choices = c->n_submitted; /* only these will report */
            cancel_all(c);
            pthread_mutex_unlock(&c->mu);
            if (rc == SCHED_EFULL) return reply_error(429, "rate_limit_error", NULL, "%s", err);
            if (rc == SCHED_EDRAIN) return reply_error(503, "server_error", NULL, "%s", err);
            if (rc == SCHED_ENOMEM) return reply_error(500, "server_error", NULL, "%s", err);
            return reply_error(400, "invalid_request_error", NULL, "%s", err);
        }
    }
    return (reply_t){0, NULL};
}

/* The request's "user" (or "safety_identifier", its successor) for the
 * access log: printable ASCII, cut to fit. */
static void copy_user(req_info_t *info, json_t *req) {
    json_t *u = json_object_get(req, "user");
    if (!json_is_string(u)) u = json_object_get(req, "safety_identifier");
    if (!info || !json_is_string(u)) return;
    const char *v = json_string_value(u);
    size_t k = 0;
    for (; *v && k + 1 < sizeof info->user; v++)
        info->user[k++] = (*v >= 0x20 && *v < 0x7f) ? *v : '?';
    info->user[k] = 0;
}

reply_t api_completions(srv_t *s, struct MHD_Connection *conn, json_t *req, int chat, req_info_t *info) {
    call_t *c = call_new(s, conn, chat, info);
    if (!c) return reply_error(500, "server_error", NULL, "out of memory");
    reply_t err;
    if (api_parse(s, req, chat, &c->req, &err) != 0) {
        pthread_mutex_lock(&c->mu);
        call_unref_locked(c);
        return err;
    }
    c->n_choices = c->req.n_prompts * c->req.n;
    c->n_top = c->req.n_logprobs > 0 ? c->req.n_logprobs : 0;
    c->ch = calloc((size_t)c->n_choices, sizeof *c->ch);
    c->ud = calloc((size_t)c->n_choices, sizeof *c->ud);
    c->ids = calloc((size_t)c->n_choices, sizeof *c->ids);
    if (!c->ch || !c->ud || !c->ids) {
        pthread_mutex_lock(&c->mu);
        call_unref_locked(c);
        return reply_error(500, "server_error", NULL, "out of memory");
    }
    for (int i = 0; i < c->n_choices; i++) {
        c->ch[i].finish = "length";
        tools_stream_init(&c->ch[i].tstream, &c->req.tools);
    }
    copy_user(info, req);
    reply_t r = submit_all(c);
    if (r.resp) { /* refused: wait for the DONEs of what was accepted, then go */
        pthread_mutex_lock(&c->mu);
        while (c->n_done < c->n_choices) wait_slice(c);
        call_unref_locked(c);
        return r;
    }
    if (c->req.stream) {
        pthread_mutex_lock(&c->mu);
        if (c->req.echo) /* the prompt goes out first, as one chunk per choice */
            for (int i = 0; i < c->n_choices; i++) {
                const char *e = c->req.echo_text[i / c->req.n];
                if (e) sse_chunk(c, i, e, strlen(e), 0, 0, NULL);
            }
        pthread_mutex_unlock(&c->mu);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, c, stream_free);
        if (!resp) {
            pthread_mutex_lock(&c->mu);
            cancel_all(c);
            call_unref_locked(c);
            return reply_error(500, "server_error", NULL, "out of memory");
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        return (reply_t){200, resp};
    }
    pthread_mutex_lock(&c->mu);
    while (c->n_done < c->n_choices) {
        wait_slice(c);
        progress(c);
        if (c->n_done < c->n_choices && !c->client_left && client_gone(c->fd)) {
            c->client_left = 1; /* nobody to answer: logged as 499, not as a drain's 503 */
            cancel_all(c);
        }
    }
    fill_info(c);
    r = c->client_left ? reply_error(499, "client_disconnect", NULL, "the client closed the connection")
                       : full_response(c);
    call_unref_locked(c);
    return r;
}

/* ---- models, tokenize, detokenize ----------------------------------------------------------- */

static json_t *model_json(srv_t *s) {
    return json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", s->model_id, "object", "model", "created",
                     (json_int_t)0, "owned_by", "sqserve", "max_model_len",
                     sched_config(s->sched)->n_ctx);
}

reply_t api_models(srv_t *s, const char *id) {
    if (!id) return reply_json(200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(s)));
    if (strcmp(id, s->model_id) != 0)
        return reply_error(404, "not_found_error", "model", "model '%s' does not exist", id);
    return reply_json(200, model_json(s));
}

reply_t api_tokenize(srv_t *s, json_t *req) {
    json_t *p = json_object_get(req, "prompt"), *msgs = json_object_get(req, "messages");
    json_t *special = json_object_get(req, "add_special");
    char *text = NULL;
    reply_t err;
    if (special && !json_is_boolean(special))
        return reply_error(400, "invalid_request_error", "add_special", "'add_special' must be a boolean");
    if (msgs) {
        if (api_render_chat(s, msgs, NULL, &text, &err) != 0) return err;
    } else if (json_is_string(p)) {
        text = strndup(json_string_value(p), json_string_length(p));
    } else {
        return reply_error(400, "invalid_request_error", "prompt", "'prompt' (a string) or 'messages' is required");
    }
    if (!text) return reply_error(500, "server_error", NULL, "out of memory");
    long n;
    int32_t *ids = api_encode(s->m->tok, text, strlen(text), &n);
    free(text);
    if (ids && json_is_true(special)) { /* BOS/EOS as a completion's prompt gets them */
        int32_t *framed = realloc(ids, (size_t)(n + 2) * sizeof *ids);
        if (!framed) free(ids);
        ids = framed;
        if (ids) n = tok_frame(s->m->tok, ids, n);
    }
    if (!ids) return reply_error(500, "server_error", NULL, "out of memory");
    json_t *arr = json_array();
    for (long i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    return reply_json(200, json_pack("{s:o, s:I, s:i}", "tokens", arr, "count", (json_int_t)n,
                                    "max_model_len", sched_config(s->sched)->n_ctx));
}

reply_t api_detokenize(srv_t *s, json_t *req) {
    json_t *toks = json_object_get(req, "tokens");
    if (!json_is_array(toks))
        return reply_error(400, "invalid_request_error", "tokens", "'tokens' must be a list of token ids");
    size_t n = json_array_size(toks), i;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    if (!ids) return reply_error(500, "server_error", NULL, "out of memory");
    json_t *v;
    json_array_foreach(toks, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= s->m->hp.n_vocab) {
            free(ids);
            return reply_error(400, "invalid_request_error", "tokens",
                              "tokens[%zu] is not an id in [0, %d)", i, s->m->hp.n_vocab);
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    char *text = api_decode(s->m->tok, ids, (long)n);
    free(ids);
    if (!text) return reply_error(500, "server_error", NULL, "out of memory");
    json_t *out = json_pack("{s:s}", "prompt", text);
    free(text);
    return reply_json(200, out);
}
