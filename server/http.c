/* http.c - the libmicrohttpd edge: request bodies, the route table and
 * methods (GET routes answer HEAD too; OPTIONS is answered here), auth
 * (which routes need the key: needs_key); the request id, CORS headers
 * and the access log line are headers.c's, connection bookkeeping and the
 * receive deadline conns.c's. Handlers (api.c, embed.c, metrics.c) produce
 * replies through reply.c; nothing below this file calls back into it. */
#include "server.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct {
    char *body;
    size_t len, cap;
    int too_big;
    int ep;
    unsigned status;
    struct timespec t0;
    char method[8];
    char path[96];
    req_info_t info;
} conn_t;

static int route_of(const char *url) {
    static const struct { const char *path; int ep; } routes[] = {
        {"/v1/completions", EP_COMPLETIONS}, {"/v1/chat/completions", EP_CHAT},
        {"/v1/models", EP_MODELS}, {"/health", EP_HEALTH}, {"/metrics", EP_METRICS},
        {"/tokenize", EP_TOKENIZE}, {"/detokenize", EP_DETOKENIZE}, {"/openapi.json", EP_OPENAPI},
        {"/v1/embeddings", EP_EMBEDDINGS}, {"/version", EP_VERSION}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(url, routes[i].path)) return routes[i].ep;
    if (!strncmp(url, "/v1/models/", 11)) return EP_MODELS;
    return EP_OTHER;
}

/* Constant-time: the work depends only on the length of what the client
 * sent, never on the key or on where the first difference is, so timing
 * tells an attacker nothing about the key (not even its length). */
static int key_equal(const char *given, const char *key) {
    size_t lg = strlen(given), lk = strlen(key);
    volatile unsigned diff = (unsigned)(lg != lk);
    for (size_t i = 0; i < lg; i++)
        diff |= (unsigned)((unsigned char)given[i] ^ (unsigned char)key[lk ? i % lk : 0]);
    return diff == 0;
}

static int authorized(srv_t *s, struct MHD_Connection *c) {
    if (!s->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    /* the scheme is case-insensitive (RFC 9110 11.1); the token is not */
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    return key_equal(h + 7, s->api_key);
}

/* Which routes need the key: every /v1/ route; /metrics too with
 * --protect-metrics. /health (load balancers, probes), /openapi.json and
 * /tokenize, /detokenize (no model compute, no data) stay open. */
static int needs_key(const srv_t *s, int ep, const char *url) {
    return !strncmp(url, "/v1/", 4) || (ep == EP_METRICS && s->metrics_need_key);
}

/* Request headers over HTTP_MAX_HEADER_BYTES (names, values and their
 * separators) get an OpenAI-shaped 431 from on_request. libmicrohttpd keeps a
 * request's headers in a per-connection pool and answers an overflow itself,
 * with an HTML 431; the pool (HTTP_CONN_POOL, set in http_start) is four
 * times the limit, so headers up to about 60 KiB still parse and get the JSON
 * answer, and only larger ones get libmicrohttpd's page. The pool is
 * reserved per connection but touched only as far as data arrives. */
#define HTTP_MAX_HEADER_BYTES (16 * 1024)
#define HTTP_CONN_POOL (4 * HTTP_MAX_HEADER_BYTES)

static enum MHD_Result add_header_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value) {
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
    return MHD_YES;
}

static size_t header_bytes(struct MHD_Connection *c) {
    size_t n = 0;
    MHD_get_connection_values(c, MHD_HEADER_KIND, add_header_bytes, &n);
    return n;
}

static json_t *parse_body(conn_t *cn, reply_t *err) {
    json_error_t je;
    if (cn->len == 0) {
        *err = reply_error(400, "invalid_request_error", NULL, "the request body is empty");
        return NULL;
    }
    json_t *j = json_loadb(cn->body, cn->len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        *err = reply_error(400, "invalid_request_error", NULL, "invalid JSON: %s (line %d column %d)",
                          je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *err = reply_error(400, "invalid_request_error", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

static reply_t dispatch(srv_t *s, struct MHD_Connection *c, conn_t *cn, const char *url,
                        const char *method) {
    /* HEAD is GET without the body (libmicrohttpd leaves the body out) */
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    int ep = cn->ep;
    if (ep == EP_OTHER) return reply_error(404, "not_found_error", NULL, "no route for %s", url);
    int want_post = ep == EP_COMPLETIONS || ep == EP_CHAT || ep == EP_TOKENIZE || ep == EP_DETOKENIZE ||
                    ep == EP_EMBEDDINGS;
    const char *allow = want_post ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
    if (!strcmp(method, "OPTIONS")) return headers_preflight(s, c, allow); /* before auth: preflights carry no key */
    if ((want_post && !post) || (!want_post && !get)) {
        reply_t r = reply_error(405, "invalid_request_error", NULL, "%s does not accept %s", url, method);
        if (r.resp) MHD_add_response_header(r.resp, "Allow", allow);
        return r;
    }
    if (needs_key(s, ep, url) && !authorized(s, c))
        return reply_error(401, "authentication_error", NULL, "a valid API key is required (Authorization: Bearer)");
    if (!atomic_load_explicit(&s->ready, memory_order_acquire)) {
        if (ep == EP_HEALTH) return reply_text(503, "application/json", "{\"status\":\"loading\"}");
        return reply_error(503, "server_error", NULL, "the model is still loading");
    }
    if (ep == EP_HEALTH) {
        int draining = sched_draining(s->sched);
        return reply_json(draining ? 503 : 200, json_pack("{s:s, s:s}", "status", draining ? "draining" : "ok",
                                                          "version", SQSERVE_VERSION));
    }
    if (ep == EP_VERSION) return reply_json(200, json_pack("{s:s}", "version", SQSERVE_VERSION));
    if (ep == EP_METRICS) return metrics_reply(s);
    if (ep == EP_OPENAPI) return reply_text(200, "application/json", OPENAPI_JSON);
    if (ep == EP_MODELS) return api_models(s, strlen(url) > 11 ? url + 11 : NULL);
    if (cn->too_big)
        return reply_error(413, "invalid_request_error", NULL, "the body exceeds %zu bytes", s->max_body);
    reply_t err;
    json_t *req = parse_body(cn, &err);
    if (!req) return err;
    reply_t r;
    if (ep == EP_TOKENIZE) r = api_tokenize(s, req);
    else if (ep == EP_DETOKENIZE) r = api_detokenize(s, req);
    else if (sched_draining(s->sched))
        r = reply_error(503, "server_error", NULL, "the server is shutting down");
    else if (ep == EP_EMBEDDINGS) r = api_embeddings(s, c, req, &cn->info);
    else r = api_completions(s, c, req, ep == EP_CHAT, &cn->info);
    json_decref(req);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    srv_t *s = cls;
    conn_t *cn = *con_cls;
    if (!cn) {
        if (!(cn = calloc(1, sizeof *cn))) return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &cn->t0);
        cn->ep = route_of(url);
        snprintf(cn->method, sizeof cn->method, "%s", method);
        snprintf(cn->path, sizeof cn->path, "%s", url);
        headers_request_id(c, cn->info.id, sizeof cn->info.id);
        cn->info.prompt_tokens = cn->info.completion_tokens = cn->info.cached_tokens = -1;
        *con_cls = cn;
        if (header_bytes(c) <= HTTP_MAX_HEADER_BYTES) return MHD_YES;
        /* answered before any body is read; libmicrohttpd then closes the connection */
        reply_t r = reply_error(431, "invalid_request_error", NULL,
                                "the request headers exceed %d bytes", HTTP_MAX_HEADER_BYTES);
        if (!r.resp) return MHD_NO;
        cn->status = r.status;
        enum MHD_Result ok = MHD_queue_response(c, r.status, r.resp);
        MHD_destroy_response(r.resp);
        return ok;
    }
    if (*upload_size) { /* keep reading an oversized body, but not storing it */
        if (cn->len + *upload_size > s->max_body) cn->too_big = 1;
        if (!cn->too_big) {
            if (cn->len + *upload_size + 1 > cn->cap) {
                size_t cap = (cn->len + *upload_size + 1) * 2;
                if (cap > s->max_body + 1) cap = s->max_body + 1;
                char *nb = realloc(cn->body, cap);
                if (!nb) return MHD_NO;
                cn->body = nb;
                cn->cap = cap;
            }
            memcpy(cn->body + cn->len, upload, *upload_size);
            cn->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    conns_request_received(s, c); /* the whole request is in: no receive deadline now */
    reply_t r = dispatch(s, c, cn, url, method);
    if (!r.resp) r = reply_error(500, "server_error", NULL, "out of memory");
    if (!r.resp) return MHD_NO;
    cn->status = r.status;
    if (r.status == 429) MHD_add_response_header(r.resp, "Retry-After", "1");
    headers_add(s, c, r.resp, cn->info.id);
    enum MHD_Result ok = MHD_queue_response(c, r.status, r.resp);
    MHD_destroy_response(r.resp);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv_t *s = cls;
    conns_request_done(s, c); /* idle or the next request: the deadline runs again */
    conn_t *cn = *con_cls;
    if (!cn) return;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - cn->t0.tv_sec) * 1e3 + (t1.tv_nsec - cn->t0.tv_nsec) / 1e6;
    /* 499 (nginx's "client closed request"): the client left before any reply */
    unsigned status = cn->status ? cn->status : 499;
    if (status < 100 || status >= STATUS_CODES) status = 500;
    pthread_mutex_lock(&s->mu);
    s->requests[cn->ep][status]++;
    pthread_mutex_unlock(&s->mu);
    const char *how = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted";
    if (!cn->info.cause && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        cn->info.cause = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED   ? "receive_timeout"
                         : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutdown"
                         : toe == MHD_REQUEST_TERMINATED_WITH_ERROR      ? "error"
                                                                         : "client_disconnect";
    headers_access_log(s, cn->method, reply_endpoint_name(cn->ep), status, ms, how, &cn->info,
                       cn->ep == EP_COMPLETIONS || cn->ep == EP_CHAT || cn->ep == EP_EMBEDDINGS);
    free(cn->body);
    free(cn);
    *con_cls = NULL;
}

/* libmicrohttpd's own messages (e.g. a client that vanished mid-stream)
 * go through the access log's format, so JSON logs stay JSON. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    srv_t *s = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    if (!s->log_json) {
        fprintf(stderr, "http: %s\n", msg);
        return;
    }
    json_t *j = json_pack("{s:s, s:s}", "event", "http", "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text) fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(j);
}

int http_start(srv_t *s, const char *host, int port, int *bound_port, char *err, size_t errlen) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "--host '%s' is not an IPv4 address", host);
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    if (conns_init(s) != 0) {
        snprintf(err, errlen, "cannot set up the connection table");
        return -1;
    }
    /* No MHD inactivity timeout: it cannot tell a trickling client from a
     * handler waiting on the engine. conns.c's receive deadline does that. */
    s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                 MHD_USE_ERROR_LOG,
                                 (uint16_t)port, NULL, NULL, on_request, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, /* must come first */
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_NOTIFY_CONNECTION, conns_notify, s,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
                                 MHD_OPTION_CONNECTION_LIMIT, s->max_connections,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_POOL,
                                 MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        conns_stop(s);
        snprintf(err, errlen, "cannot listen on %s:%d (in use?)", host, port);
        return -1;
    }
    if (conns_start_reaper(s) != 0) {
        http_stop(s);
        snprintf(err, errlen, "cannot start the connection reaper thread");
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : port;
    return 0;
}

void http_stop(srv_t *s) {
    if (s->daemon) MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    conns_stop(s);
}
