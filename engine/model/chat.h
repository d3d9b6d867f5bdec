/* chat.h - renders chat messages into a prompt with the model's template.
 *
 * GGUF ships tokenizer.chat_template as Jinja source; it is parsed once at
 * load by the Jinja interpreter (jinja.h) and rendered per request with
 * the variables Hugging Face's apply_chat_template passes: messages,
 * tools (None when absent), add_generation_prompt, bos_token, eos_token.
 * A GGUF without a template gets the built-in ChatML, rendered natively;
 * --chat-template NAME|FILE (chat_tmpl_override) replaces either with a
 * built-in (chatml, llama3) or a Jinja file.
 *
 * A template that does not parse, or an override that cannot be read,
 * never fails the model load: the problem is kept (ct->error) and every
 * chat render reports it, so inspect, plain generation and completions
 * work with any template.
 *
 * When the tokenizer prepends BOS itself (tokenizer.ggml.add_bos_token)
 * and the rendered text starts with the BOS text, that text is removed
 * from the prompt, so the sequence holds one BOS either way.
 */
#ifndef CHAT_H
#define CHAT_H

#include <jansson.h>
#include <stddef.h>

#include "jinja.h"

typedef struct {
    const char *role;     /* "system", "user", "assistant", ... */
    const char *content;
} chat_msg_t;

typedef enum { CHAT_NONE = 0, CHAT_CHATML, CHAT_LLAMA3, CHAT_JINJA } chat_kind_t;

typedef struct {
    chat_kind_t kind;
    chat_kind_t family;   /* the turn format written: CHAT_CHATML or CHAT_LLAMA3 (a built-in,
                             or a Jinja template using its markers), else CHAT_NONE; what
                             reading a model's reply in that format (tool calls) keys on */
    jinja_tmpl_t *jinja;  /* CHAT_JINJA */
    int renders_tools;    /* a Jinja template that reads `tools` (and so writes tool turns itself) */
    char *error;          /* set: the template is unusable and chat renders fail with this */
    char origin[320];     /* what is used, for inspect and messages */
    char *bos, *eos;      /* token texts given to templates (NULL: none) */
    int strip_bos;        /* the tokenizer adds BOS: drop a rendered leading BOS text */
} chat_tmpl_t;

/* Sets up from the GGUF's template text (NULL or empty: built-in ChatML).
 * bos/eos: the token texts (may be NULL); add_bos: whether the tokenizer
 * prepends BOS. Returns 0, or -1 on out of memory only: a template that
 * does not parse leaves ct->error set instead. */
int chat_tmpl_init(chat_tmpl_t *ct, const char *src, size_t len, const char *bos, const char *eos,
                   int add_bos);
void chat_tmpl_free(chat_tmpl_t *ct);

/* --chat-template: NAME of a built-in (chatml, llama3) or a Jinja FILE.
 * Returns 0, or -1 with err (also kept as ct->error: chats then fail) when
 * the name is unknown, the file unreadable or its template invalid. */
int chat_tmpl_override(chat_tmpl_t *ct, const char *spec, char *err, size_t errlen);

/* The built-in names, comma-separated, for help and messages. */
const char *chat_builtin_names(void);

/* Renders OpenAI-style messages (a JSON array of objects, given to the
 * template as they are: role, content, tool_calls, tool_call_id, name...)
 * with tools (a JSON array, or NULL: the template sees None).
 * Returns 0 with *out (malloc'd), 1 when the template rejected the
 * conversation (raise_exception, or a built-in given what it cannot
 * render: a client error), -1 when the template failed or is unusable
 * (a server error), or -2 on out of memory; err says why. */
int chat_render_json(const chat_tmpl_t *ct, json_t *messages, json_t *tools,
                     int add_generation_prompt, char **out, char *err, size_t errlen);

/* Plain role/content messages; same returns as chat_render_json. */
int chat_render(const chat_tmpl_t *ct, const chat_msg_t *msgs, size_t n, int add_generation_prompt,
                char **out, char *err, size_t errlen);

#endif
