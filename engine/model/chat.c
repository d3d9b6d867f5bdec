/* chat.c - chat templates: the GGUF's Jinja template through jinja.h, or
 * the built-in ChatML / Llama-3 rendered natively (see chat.h). */
#include "chat.h"
#include "sbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEMPLATE_FILE (1u << 20)

static const char *const BUILTINS[] = {"chatml", "llama3", NULL};

const char *chat_builtin_names(void) { return "chatml, llama3"; }


static int set_error(chat_tmpl_t *ct, const char *msg) {
    free(ct->error);
    ct->error = strdup(msg);
    return ct->error ? 0 : -1;
}

static int contains(const char *src, size_t len, const char *needle) {
    return memmem(src, len, needle, strlen(needle)) != NULL;
}

/* Parses src as the template; a syntax error is kept in ct->error. */
static int use_jinja(chat_tmpl_t *ct, const char *src, size_t len) {
    jinja_error_t je;
    ct->family = contains(src, len, "<|im_start|>")          ? CHAT_CHATML
               : contains(src, len, "<|start_header_id|>") ? CHAT_LLAMA3
                                                            : CHAT_NONE;
    /* HF templates that support tool calling read the `tools` variable; the
     * others drop it silently, so the server then writes tools as text */
    ct->renders_tools = contains(src, len, "tools");
    jinja_free(ct->jinja);
    ct->jinja = jinja_parse(src, len, &je);
    ct->kind = CHAT_JINJA;
    if (ct->jinja) return 0;
    char msg[1024];
    snprintf(msg, sizeof msg, "chat template (%s) does not parse: %s", ct->origin, je.msg);
    return set_error(ct, msg);
}

int chat_tmpl_init(chat_tmpl_t *ct, const char *src, size_t len, const char *bos, const char *eos,
                   int add_bos) {
    memset(ct, 0, sizeof *ct);
    if ((bos && !(ct->bos = strdup(bos))) || (eos && !(ct->eos = strdup(eos)))) {
        chat_tmpl_free(ct);
        return -1;
    }
    ct->strip_bos = add_bos && bos && *bos;
    if (!src || len == 0) {
        ct->kind = ct->family = CHAT_CHATML;
        snprintf(ct->origin, sizeof ct->origin, "built-in chatml (the GGUF has no chat template)");
        return 0;
    }
    snprintf(ct->origin, sizeof ct->origin, "GGUF Jinja (tokenizer.chat_template, %zu bytes)", len);
    if (use_jinja(ct, src, len)) {
        chat_tmpl_free(ct);
        return -1;
    }
    return 0;
}

void chat_tmpl_free(chat_tmpl_t *ct) {
    jinja_free(ct->jinja);
    free(ct->error);
    free(ct->bos);
    free(ct->eos);
    memset(ct, 0, sizeof *ct);
}

static char *read_small_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_TEMPLATE_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_TEMPLATE_FILE + 1, f) : 0;
    int bad = !buf || ferror(f) || n > MAX_TEMPLATE_FILE;
    if (bad) {
        snprintf(err, errlen, !buf ? "out of memory" : n > MAX_TEMPLATE_FILE ? "%s is larger than 1 MiB"
                                                                              : "cannot read %s", path);
        free(buf);
        buf = NULL;
    } else {
        buf[n] = 0;
        *len = n;
    }
    fclose(f);
    return buf;
}

int chat_tmpl_override(chat_tmpl_t *ct, const char *spec, char *err, size_t errlen) {
    free(ct->error);
    ct->error = NULL;
    jinja_free(ct->jinja);
    ct->jinja = NULL;
    for (int i = 0; BUILTINS[i]; i++)
        if (!strcmp(spec, BUILTINS[i])) {
            ct->kind = ct->family = i == 0 ? CHAT_CHATML : CHAT_LLAMA3;
            ct->renders_tools = 0;
            snprintf(ct->origin, sizeof ct->origin, "built-in %s (--chat-template)", spec);
            return 0;
        }
    ct->kind = CHAT_JINJA;
    ct->family = CHAT_NONE;
    snprintf(ct->origin, sizeof ct->origin, "Jinja file %.256s (--chat-template)", spec);
    size_t len;
    char *src = read_small_file(spec, &len, err, errlen);
    if (!src) {
        char msg[1024];
        snprintf(msg, sizeof msg, "--chat-template '%s' is neither a built-in (%s) nor a readable file: %s",
                 spec, chat_builtin_names(), err);
        snprintf(err, errlen, "%s", msg);
        set_error(ct, msg);
        return -1;
    }
    int rc = use_jinja(ct, src, len);
    free(src);
    if (rc == 0 && ct->error) {
        snprintf(err, errlen, "%s", ct->error);
        return -1;
    }
    if (rc) snprintf(err, errlen, "out of memory");
    return rc;
}

/* ---- built-in templates ---------------------------------------------------------- */

static void turn(sbuf_t *b, chat_kind_t kind, const char *role, const char *content) {
    if (kind == CHAT_CHATML) {
        sb_add(b, "<|im_start|>"); sb_add(b, role); sb_add(b, "\n");
        sb_add(b, content); sb_add(b, "<|im_end|>\n");
    } else {
        sb_add(b, "<|start_header_id|>"); sb_add(b, role); sb_add(b, "<|end_header_id|>\n\n");
        sb_add(b, content); sb_add(b, "<|eot_id|>");
    }
}

static int render_builtin(const chat_tmpl_t *ct, json_t *messages, json_t *tools, int gen, char **out,
                          char *err, size_t errlen) {
    const char *name = ct->kind == CHAT_CHATML ? "chatml" : "llama3";
    if (tools && !json_is_null(tools)) {
        snprintf(err, errlen, "the built-in %s template does not render tools", name);
        return 1;
    }
    sbuf_t b = {0};
    sb_add(&b, "");
    if (ct->kind == CHAT_LLAMA3) sb_add(&b, "<|begin_of_text|>");
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_string(role) || (content && !json_is_string(content) && !json_is_null(content)) ||
            json_object_get(m, "tool_calls")) {
            snprintf(err, errlen, "the built-in %s template renders only messages with a role and text "
                     "content (message %zu)", name, i);
            free(b.buf);
            return 1;
        }
        turn(&b, ct->kind, json_string_value(role), json_is_string(content) ? json_string_value(content) : "");
    }
    if (gen)
        sb_add(&b, ct->kind == CHAT_CHATML ? "<|im_start|>assistant\n"
                                           : "<|start_header_id|>assistant<|end_header_id|>\n\n");
    if (b.oom) {
        free(b.buf);
        snprintf(err, errlen, "out of memory");
        return -2;
    }
    *out = b.buf;
    return 0;
}

/* ---- rendering ---------------------------------------------------------------------- */
static int render_jinja(const chat_tmpl_t *ct, json_t *messages, json_t *tools, int gen, char **out,
                        char *err, size_t errlen) {
    json_t *vars = json_object();
    if (!vars || json_object_set(vars, "messages", messages) ||
        json_object_set_new(vars, "tools", tools ? json_incref(tools) : json_null()) ||
        json_object_set_new(vars, "add_generation_prompt", json_boolean(gen)) ||
        (ct->bos && json_object_set_new(vars, "bos_token", json_string(ct->bos))) ||
        (ct->eos && json_object_set_new(vars, "eos_token", json_string(ct->eos)))) {
        json_decref(vars);
        snprintf(err, errlen, "out of memory");
        return -2;
    }
    jinja_error_t je;
    size_t n;
    *out = jinja_render(ct->jinja, vars, NULL, &n, &je);
    json_decref(vars);
    if (*out) return 0;
    if (je.raised) {
        snprintf(err, errlen, "the chat template rejected the messages: %s", je.msg);
        return 1;
    }
    snprintf(err, errlen, "chat template (%s) failed: %s", ct->origin, je.msg);
    return strcmp(je.msg, "out of memory") ? -1 : -2;
}

int chat_render_json(const chat_tmpl_t *ct, json_t *messages, json_t *tools, int gen, char **out,
                     char *err, size_t errlen) {
    *out = NULL;
    if (ct->error) {
        snprintf(err, errlen, "%s", ct->error);
        return -1;
    }
    if (!json_is_array(messages)) {
        snprintf(err, errlen, "messages must be a list");
        return 1;
    }
    int rc = ct->kind == CHAT_JINJA ? render_jinja(ct, messages, tools, gen, out, err, errlen)
                                    : render_builtin(ct, messages, tools, gen, out, err, errlen);
    if (rc == 0 && ct->strip_bos) {
        size_t bn = strlen(ct->bos);
        if (!strncmp(*out, ct->bos, bn)) memmove(*out, *out + bn, strlen(*out + bn) + 1);
    }
    return rc;
}

int chat_render(const chat_tmpl_t *ct, const chat_msg_t *msgs, size_t n, int gen, char **out, char *err,
                size_t errlen) {
    json_t *arr = json_array();
    int bad = !arr;
    for (size_t i = 0; i < n && !bad; i++) {  /* text as given: no UTF-8 check */
        json_t *m = json_object();
        bad = !m || json_array_append_new(arr, m) ||
              json_object_set_new(m, "role", json_string_nocheck(msgs[i].role)) ||
              json_object_set_new(m, "content", json_string_nocheck(msgs[i].content));
    }
    if (bad) {
        json_decref(arr);
        *out = NULL;
        snprintf(err, errlen, "out of memory");
        return -2;
    }
    int rc = chat_render_json(ct, arr, NULL, gen, out, err, errlen);
    json_decref(arr);
    return rc;
}
