/* chat.c - ChatML and Llama-3 chat templates (see chat.h for why native). */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ChatML templates such as SmolLM2's inject a system turn when the first
 * message is not one:  {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}.
 * Extract that literal's text, un-escaping the Jinja string. */
static char *find_default_system(const char *src, size_t len) {
    static const char marker[] = "<|im_start|>system";
    const char *end = src + len;
    for (const char *p = src; p + sizeof marker - 1 <= end; p++) {
        if (memcmp(p, marker, sizeof marker - 1) != 0) continue;
        const char *q = p + sizeof marker - 1;
        /* newline as a raw byte or as the escape \n */
        if (q < end && *q == '\n') q++;
        else if (q + 1 < end && q[0] == '\\' && q[1] == 'n') q += 2;
        else continue;
        /* only a literal system turn counts, not '<|im_start|>system' + content */
        const char *stop = NULL;
        for (const char *r = q; r + 10 <= end; r++)
            if (memcmp(r, "<|im_end|>", 10) == 0) { stop = r; break; }
            else if (*r == '\'' || *r == '"' || *r == '{' || *r == '}') break;
        if (!stop || stop == q) continue;
        char *out = malloc((size_t)(stop - q) + 1);
        if (!out) return NULL;
        size_t o = 0;
        for (const char *r = q; r < stop; r++) {
            if (*r == '\\' && r + 1 < stop) {
                r++;
                out[o++] = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
            } else {
                out[o++] = *r;
            }
        }
        out[o] = 0;
        return out;
    }
    return NULL;
}

static int contains(const char *src, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(src + i, needle, n) == 0) return 1;
    return 0;
}

int chat_tmpl_init(chat_tmpl_t *ct, const char *src, size_t len, char *err, size_t errlen) {
    memset(ct, 0, sizeof *ct);
    if (!src || len == 0) {
        ct->kind = CHAT_CHATML;
        return 0;
    }
    if (contains(src, len, "<|im_start|>")) {
        ct->kind = CHAT_CHATML;
        /* the injected turn is conditional on a missing system message */
        if (contains(src, len, "!= 'system'") || contains(src, len, "!= \"system\""))
            ct->default_system = find_default_system(src, len);
        return 0;
    }
    if (contains(src, len, "<|start_header_id|>")) {
        ct->kind = CHAT_LLAMA3;
        return 0;
    }
    snprintf(err, errlen, "unsupported chat template (supported: ChatML, Llama-3)");
    return -1;
}

void chat_tmpl_free(chat_tmpl_t *ct) {
    free(ct->default_system);
    ct->default_system = NULL;
}

typedef struct { char *buf; size_t len, cap; int oom; } sbuf_t;

static void sb_add(sbuf_t *b, const char *s) {
    size_t n = strlen(s);
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) { b->oom = 1; return; }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}

static void turn(sbuf_t *b, chat_kind_t kind, const char *role, const char *content) {
    if (kind == CHAT_CHATML) {
        sb_add(b, "<|im_start|>"); sb_add(b, role); sb_add(b, "\n");
        sb_add(b, content); sb_add(b, "<|im_end|>\n");
    } else {
        sb_add(b, "<|start_header_id|>"); sb_add(b, role); sb_add(b, "<|end_header_id|>\n\n");
        sb_add(b, content); sb_add(b, "<|eot_id|>");
    }
}

char *chat_render(const chat_tmpl_t *ct, const chat_msg_t *msgs, size_t n,
                  int add_generation_prompt) {
    sbuf_t b = {0};
    sb_add(&b, "");
    if (ct->kind == CHAT_LLAMA3) sb_add(&b, "<|begin_of_text|>");
    if (ct->default_system && (n == 0 || strcmp(msgs[0].role, "system") != 0))
        turn(&b, ct->kind, "system", ct->default_system);
    for (size_t i = 0; i < n; i++) turn(&b, ct->kind, msgs[i].role, msgs[i].content);
    if (add_generation_prompt)
        sb_add(&b, ct->kind == CHAT_CHATML ? "<|im_start|>assistant\n"
                                           : "<|start_header_id|>assistant<|end_header_id|>\n\n");
    if (b.oom) { free(b.buf); return NULL; }
    return b.buf;
}
