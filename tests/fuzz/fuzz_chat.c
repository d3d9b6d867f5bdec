/* fuzz_chat.c - libFuzzer: chat template recognition on arbitrary template
 * text and rendering of arbitrary messages. Input: template bytes, a NUL,
 * then role/content strings separated by NULs (up to 16 messages).
 * Seeds: tests/fuzz/corpus/chat. */
#include "../../engine/model/chat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    size_t tlen = strnlen(buf, size);
    chat_tmpl_t ct;
    char err[256];
    if (chat_tmpl_init(&ct, tlen ? buf : NULL, tlen, err, sizeof err) == 0) {
        chat_msg_t msgs[16];
        size_t n = 0, p = tlen + 1;
        while (p < size && n < 16) {
            const char *role = buf + p;
            p += strlen(role) + 1;
            const char *content = p <= size ? buf + p : "";
            if (p <= size) p += strlen(content) + 1;
            msgs[n++] = (chat_msg_t){role, content};
        }
        for (int gen = 0; gen < 2; gen++) free(chat_render(&ct, msgs, n, gen));
        chat_tmpl_free(&ct);
    }
    free(buf);
    return 0;
}
