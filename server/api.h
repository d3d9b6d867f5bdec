/* api.h - OpenAI request model shared by api_req.c (validation) and
 * api.c (execution and responses). */
#ifndef API_H
#define API_H

#include "server.h"
#include "tools.h"

#define API_MAX_PROMPTS 16
#define API_MAX_N 16
#define API_MAX_CHOICES 64

typedef struct {
    int chat, stream, echo, include_usage, ignore_eos;
    int n;                     /* choices per prompt */
    int n_logprobs;            /* -1: none */
    int n_prompts;
    int32_t *prompts[API_MAX_PROMPTS];
    int prompt_len[API_MAX_PROMPTS];
    char *echo_text[API_MAX_PROMPTS];
    int max_tokens[API_MAX_PROMPTS];
    const char *stops[SCHED_MAX_STOPS]; /* point into the request JSON */
    int n_stops;
    sample_params_t sp;
    uint64_t seed;
    int has_seed;
    tools_t tools;             /* tools / tool_choice / parallel_tool_calls */
    grammar_t *grammar;        /* the output constraint (a reference), or NULL */
    int prompt_logprobs;       /* completions: echo with logprobs */
    int n_bias;                /* logit_bias entries */
    int32_t *bias_ids;
    float *bias;
    const char *service_tier;  /* echoed when the request named one */
} api_req_t;

#define API_MAX_BIAS 1024

int api_parse(srv_t *s, json_t *req, int chat, api_req_t *r, reply_t *err);
void api_req_free(api_req_t *r);
/* Renders messages (with the tools listed when tools is active; tools may be NULL). */
int api_render_chat(srv_t *s, json_t *msgs, const tools_t *tools, char **out, reply_t *err);
/* structured.c: response_format, grammar and the forced tool call -> r->grammar
 * (after r->tools is parsed). 0, or -1 with a 400. */
int structured_parse(json_t *req, api_req_t *r, reply_t *err);

/* Tokenizes with special tokens recognised; malloc'd ids or NULL. */
int32_t *api_encode(const tok_t *t, const char *text, size_t len, long *n);
/* Decodes ids to a malloc'd UTF-8 string (special tokens rendered). */
char *api_decode(const tok_t *t, const int32_t *ids, long n);

#endif
