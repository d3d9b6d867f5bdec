/* chat.h - renders chat messages into a prompt with the model's template.
 *
 * GGUF ships tokenizer.chat_template as Jinja source. Rather than embed a
 * Jinja interpreter, sqserve recognises the template families it supports
 * (ChatML, Llama-3) from their marker tokens and renders them natively;
 * literal parts that vary between models of a family (such as a default
 * system prompt) are read out of the template text itself. An unknown
 * template is refused at load with a clear message, never guessed.
 */
#ifndef CHAT_H
#define CHAT_H

#include <stddef.h>

typedef struct {
    const char *role;     /* "system", "user", "assistant", ... */
    const char *content;
} chat_msg_t;

typedef enum { CHAT_NONE = 0, CHAT_CHATML, CHAT_LLAMA3 } chat_kind_t;

typedef struct {
    chat_kind_t kind;
    char *default_system; /* used when the first message is not system; may be NULL */
} chat_tmpl_t;

/* Recognises a template (NULL/empty src gives ChatML with no default
 * system prompt). Returns 0, or -1 with a message. */
int chat_tmpl_init(chat_tmpl_t *ct, const char *src, size_t len, char *err, size_t errlen);
void chat_tmpl_free(chat_tmpl_t *ct);

/* Renders messages; add_generation_prompt opens the assistant turn.
 * Returns a malloc'd NUL-terminated string, or NULL on out of memory. */
char *chat_render(const chat_tmpl_t *ct, const chat_msg_t *msgs, size_t n,
                  int add_generation_prompt);

#endif
