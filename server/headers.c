/* headers.c - what every response carries besides its body, and the
 * access log line that records it.
 *
 * X-Request-Id: a client's id is echoed when it is sane (1..64 characters
 * of [A-Za-z0-9._:-], so it cannot inject headers or log fields); any
 * other value, or none, is replaced by 32 random hex digits. The id goes
 * into the response headers and the access log, so a client's report and
 * the server's log line meet on it.
 *
 * CORS is off unless --cors-origin is given: a browser page from another
 * origin then gets Access-Control-Allow-Origin (the configured origin when
 * the request's Origin matches it, or "*"), and OPTIONS preflights are
 * answered 204 with the allowed methods and headers, without the API key
 * (browsers never send credentials on a preflight). With CORS off OPTIONS
 * still answers 204 with Allow, as HTTP defines it.
 *
 * The access log: one line per request, text or JSON (--log-format), with
 * an RFC 3339 UTC timestamp, the request id, method, route, status, time,
 * how the connection ended and, for model routes, the model and the token
 * counts; a request that did not finish says why (cause).
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int id_sane(const char *v) {
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

void headers_request_id(struct MHD_Connection *c, char *out, size_t n) {
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (id_sane(given)) {
        snprintf(out, n, "%s", given);
        return;
    }
    unsigned char rnd[16];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) { /* never in practice: fall back to time */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_sec, b = (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)c;
        memcpy(rnd, &a, 8);
        memcpy(rnd + 8, &b, 8);
    }
    size_t k = 0;
    for (size_t i = 0; i < sizeof rnd && k + 3 <= n; i++) k += (size_t)snprintf(out + k, n - k, "%02x", rnd[i]);
}

/* The Access-Control-Allow-Origin value for this request, or NULL. */
static const char *allow_origin(const srv_t *s, struct MHD_Connection *c) {
    if (!s->cors_origin) return NULL;
    if (!strcmp(s->cors_origin, "*")) return "*";
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    return origin && !strcmp(origin, s->cors_origin) ? s->cors_origin : NULL;
}

void headers_add(srv_t *s, struct MHD_Connection *c, struct MHD_Response *r, const char *rid) {
    MHD_add_response_header(r, "X-Request-Id", rid);
    const char *ao = allow_origin(s, c);
    if (s->cors_origin && strcmp(s->cors_origin, "*")) MHD_add_response_header(r, "Vary", "Origin");
    if (!ao) return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", ao);
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
}

reply_t headers_preflight(srv_t *s, struct MHD_Connection *c, const char *allow) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return (reply_t){500, NULL};
    MHD_add_response_header(r, "Allow", allow);
    if (allow_origin(s, c)) {
        MHD_add_response_header(r, "Access-Control-Allow-Methods", allow);
        MHD_add_response_header(r, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, X-Request-Id, OpenAI-Organization, "
                                "OpenAI-Project");
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    }
    return (reply_t){204, r};
}

static void rfc3339_now(char *out, size_t n) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", base, (int)(ts.tv_nsec / 1000000L) % 1000);
}

void headers_access_log(srv_t *s, const char *method, const char *path, unsigned status, double ms,
                        const char *end, const req_info_t *info, int model_route) {
    char ts[48];
    rfc3339_now(ts, sizeof ts);
    if (!s->log_json) {
        char toks[96] = "";
        if (model_route && info->prompt_tokens >= 0)
            snprintf(toks, sizeof toks, " tokens=%d/%d cached=%d", info->prompt_tokens,
                     info->completion_tokens, info->cached_tokens);
        fprintf(stderr, "access %s %s %s %s %u %.1fms %s%s%s%s\n", ts, info->id, method, path, status, ms, end,
                info->cause ? " cause=" : "", info->cause ? info->cause : "", toks);
        return;
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:f, s:s}", "ts", ts, "event", "access",
                          "request_id", info->id, "method", method, "path", path, "status", (int)status,
                          "ms", ms, "end", end);
    if (!j) return;
    json_object_set_new(j, "cause", info->cause ? json_string(info->cause) : json_null());
    if (model_route) {
        json_object_set_new(j, "model", json_string(s->model_id));
        if (info->prompt_tokens >= 0) {
            json_object_set_new(j, "prompt_tokens", json_integer(info->prompt_tokens));
            json_object_set_new(j, "completion_tokens", json_integer(info->completion_tokens));
            json_object_set_new(j, "cached_tokens", json_integer(info->cached_tokens));
        }
    }
    if (info->user[0]) json_object_set_new(j, "user", json_string(info->user));
    char *text = json_dumps(j, JSON_COMPACT);
    if (text) fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(j);
}

/* A long request's progress: tokens generated so far over all its choices
 * and their rate since the request arrived (queueing and prompt included). */
void headers_log_progress(srv_t *s, const char *rid, long tokens, double secs) {
    char ts[48];
    rfc3339_now(ts, sizeof ts);
    double rate = secs > 0 ? (double)tokens / secs : 0;
    if (!s->log_json) {
        fprintf(stderr, "progress %s %s tokens=%ld elapsed=%.1fs tokens/s=%.2f\n", ts, rid, tokens, secs, rate);
        return;
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:f, s:f}", "ts", ts, "event", "progress", "request_id", rid,
                          "tokens", (json_int_t)tokens, "elapsed_s", secs, "tokens_per_s", rate);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text) fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(j);
}
