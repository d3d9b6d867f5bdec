/* reply.c - finished responses (JSON bodies, OpenAI-style errors, text)
 * and the labels a reply is counted under in /metrics (status slots and
 * endpoint names). Every handler writes its response through here, so one
 * place decides the error shape and the metric labels. */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned SLOT_STATUS[STATUS_SLOTS] = {200, 400, 401, 404, 405, 413, 429, 431, 500};

int reply_status_slot(unsigned status) {
    for (int i = 0; i < STATUS_SLOTS - 1; i++)
        if (SLOT_STATUS[i] == status) return i;
    return STATUS_SLOTS - 1; /* 5xx and anything unusual */
}

unsigned reply_status_of_slot(int slot) { return SLOT_STATUS[slot]; }

const char *reply_endpoint_name(int ep) {
    static const char *names[EP_COUNT] = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                          "/health", "/metrics", "/tokenize", "/detokenize",
                                          "/openapi.json", "other"};
    return names[ep];
}

reply_t reply_json(unsigned status, json_t *body) {
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text) return (reply_t){500, NULL};
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return (reply_t){500, NULL};
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    return (reply_t){status, r};
}

reply_t reply_error(unsigned status, const char *type, const char *param, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg, "type", type, "param",
                          param ? json_string(param) : json_null(), "code",
                          json_integer(status));
    return reply_json(status, e);
}

reply_t reply_text(unsigned status, const char *type, const char *text) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_MUST_COPY);
    if (r) MHD_add_response_header(r, "Content-Type", type);
    return (reply_t){status, r};
}

