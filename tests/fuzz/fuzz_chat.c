/* fuzz_chat.c - libFuzzer: chat templates. The template text is parsed by
 * the Jinja interpreter and rendered over arbitrary messages (through
 * chat.c, so the built-in fallback is reached by an empty template).
 * Input: template bytes, a NUL, then role/content strings separated by
 * NULs (up to 16 messages). Rendering runs under small limits so a
 * looping template ends quickly. Seeds: tests/fuzz/corpus/chat. */
#include "../../engine/model/chat.h"
#include "../../engine/model/jinja.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    size_t tlen = strnlen(buf, size);
    json_t *msgs = json_array();
    size_t p = tlen + 1;
    while (msgs && p < size && json_array_size(msgs) < 16) {
        const char *role = buf + p;
        p += strlen(role) + 1;
        const char *content = p <= size ? buf + p : "";
        if (p <= size) p += strlen(content) + 1;
        json_t *m = json_object();
        if (!m) break;
        json_array_append_new(msgs, m);
        json_object_set_new(m, "role", json_string_nocheck(role));
        json_object_set_new(m, "content", json_string_nocheck(content));
    }
    if (msgs) {
        /* the interpreter directly, with small limits */
        jinja_error_t err;
        jinja_tmpl_t *t = jinja_parse(buf, tlen, &err);
        if (t) {
            jinja_limits_t lim = {.max_output = 1 << 16, .max_memory = 1 << 22, .max_steps = 20000,
                                  .max_depth = 128};
            json_t *vars = json_pack("{s:O, s:b, s:s, s:s, s:n}", "messages", msgs, "add_generation_prompt", 1,
                                     "bos_token", "<s>", "eos_token", "</s>", "tools");
            free(jinja_render(t, vars, &lim, NULL, &err));
            json_decref(vars);
            jinja_free(t);
        }
        /* the built-in fallback (no template) through chat.c */
        chat_tmpl_t ct;
        char msg[256], *out;
        if (chat_tmpl_init(&ct, NULL, 0, "<s>", "</s>", 1) == 0) {
            for (int gen = 0; gen < 2; gen++)
                if (chat_render_json(&ct, msgs, NULL, gen, &out, msg, sizeof msg) == 0) free(out);
            chat_tmpl_free(&ct);
        }
    }
    json_decref(msgs);
    free(buf);
    return 0;
}
