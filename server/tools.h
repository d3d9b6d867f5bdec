/* tools.h - OpenAI tool calling over the native chat templates.
 *
 * Two formats, chosen by the model's template family:
 *   ChatML (Hermes / Qwen 2.5 style): the tools are listed as JSON inside
 *     <tools></tools> in the system turn; the model answers with
 *     <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call> blocks;
 *     tool results go back in a user turn inside <tool_response></tool_response>.
 *   Llama-3.1 (JSON tool calling): the tools are listed as JSON at the top
 *     of the first user turn; the model answers with one
 *     {"name": ..., "parameters": {...}} object; results come back in an
 *     `ipython` turn.
 * The same parser reads a whole reply (tools_extract) and a stream
 * (tools_stream_*): content outside calls is passed through as it comes, a
 * call is released when complete, text that only might begin a call (a
 * prefix of "<tool_call>", trailing whitespace) is held back meanwhile.
 * `tool_choice` "required" or a named function is enforced by a grammar
 * (tools_grammar) that admits only calls of the listed functions with
 * arguments matching each function's `parameters` schema.
 */
#ifndef TOOLS_H
#define TOOLS_H

#include "server.h"

typedef enum { TOOLS_NONE, TOOLS_AUTO, TOOLS_REQUIRED, TOOLS_NAMED } tool_choice_t;

typedef struct {
    json_t *tools;          /* the request's `tools` (a reference); NULL: none */
    tool_choice_t choice;
    char *named;            /* TOOLS_NAMED: the function */
    int parallel;           /* parallel_tool_calls */
    chat_kind_t kind;       /* the template family: the call format */
} tools_t;

/* Reads tools, tool_choice, parallel_tool_calls. 0, or -1 with a 400. */
int tools_parse(json_t *req, chat_kind_t kind, tools_t *t, reply_t *err);
void tools_free(tools_t *t);
/* The tools are in the prompt and replies are parsed for calls. */
int tools_active(const tools_t *t);

/* ---- the prompt ---- */
/* The block listing the tools, for the system turn (ChatML) or the top of
 * the first user turn (Llama-3). malloc'd, NULL on out of memory. */
char *tools_preamble(const tools_t *t);
/* An assistant message's tool_calls (validated; messages[idx]) as the
 * model writes them, appended after content (may be NULL). */
char *tools_calls_text(chat_kind_t kind, const char *content, json_t *calls, size_t idx, reply_t *err);
/* A role "tool" message: the role and the text its turn carries. */
const char *tools_result_role(chat_kind_t kind);
char *tools_result_text(chat_kind_t kind, const char *content);

/* For a Jinja chat template (HF templates such as Qwen 2.5's and Llama
 * 3.1's): a deep copy of the request's messages in which each assistant
 * tool call's function.arguments, JSON text in the OpenAI API, is the parsed
 * JSON value, as the templates expect (they write `arguments | tojson`).
 * Render with it and with `tools` = t->tools when tools_active(t), else no
 * tools. NULL on out of memory. */
json_t *tools_template_messages(json_t *messages);

/* ---- the grammar for "required" / a named function (GBNF text) ---- */
char *tools_grammar(const tools_t *t, char *err, size_t errlen, int *oom);

/* ---- the reply ---- */
/* A call: {"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}. */
typedef void (*tools_content_fn)(void *ud, const char *text, size_t len);
typedef void (*tools_call_fn)(void *ud, int index, json_t *call); /* call is borrowed */

typedef struct {
    const tools_t *t;
    char *buf;              /* text received and not yet released */
    size_t len, cap;
    int in_call;            /* ChatML: inside <tool_call>; Llama-3: the reply is a JSON object */
    int decided;            /* Llama-3: the first non-blank character seen */
    int n_calls;
    int oom;
} tools_stream_t;

void tools_stream_init(tools_stream_t *s, const tools_t *t);
/* Feeds generated text (final: the reply ended). Calls content / call for
 * what can be released. -1 on out of memory. */
int tools_stream_feed(tools_stream_t *s, const char *text, size_t len, int final, tools_content_fn content,
                      tools_call_fn call, void *ud);
void tools_stream_free(tools_stream_t *s);

/* A whole reply: the calls (a new JSON list, NULL when none) and the
 * content outside them (*content malloc'd, NULL when empty). */
json_t *tools_extract(const tools_t *t, const char *text, size_t len, char **content);

#endif
