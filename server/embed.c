/* embed.c - /v1/embeddings: the mean of the final normed hidden state over
 * an input's tokens, L2-normalized.
 *
 * Each input is a prefill-only job on the same scheduler as completions
 * (sched_params_t.embed): it is batched with whatever else runs, counts
 * against --max-seqs and the KV pool like a prompt, and is cut by
 * --request-timeout and the drain like any request. The engine reads the
 * lm head's input rows back only in steps that hold such a job. Inputs
 * are submitted in a window of EMBED_WINDOW jobs so one large request does
 * not fill the queue by itself.
 *
 * The vector is what the model's last layer computes (a decoder's mean
 * pooling, as llama.cpp's --pooling mean): useful for similarity within
 * one model; a model trained for embeddings will rank better.
 */
#include "api.h"

#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EMBED_MAX_INPUTS 2048 /* OpenAI's limit per request */
#define EMBED_WINDOW 16

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, n_in, n_submitted, n_done, cancelled;
    int32_t **ids;
    int *len;
    float *vec;          /* n_in x dim */
    uint64_t *job;
    const char **finish; /* per input, once done */
    int dim;
    srv_t *srv;
} emb_t;

typedef struct { emb_t *e; int idx; } emb_ud_t;

#define BAD(param, ...) ({ *err = reply_error(400, "invalid_request_error", param, __VA_ARGS__); -1; })

static void emb_unref_locked(emb_t *e) { /* e->mu held; may free e */
    if (--e->refs > 0) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_in; i++) free(e->ids[i]);
    free(e->ids); free(e->len); free(e->vec); free(e->job); free(e->finish);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static void on_event(void *arg, const sched_event_t *ev) {
    emb_ud_t *u = arg;
    emb_t *e = u->e;
    if (ev->type != SCHED_DONE) return;
    pthread_mutex_lock(&e->mu);
    e->finish[u->idx] = ev->finish;
    if (ev->embedding && ev->n_embd == e->dim)
        memcpy(e->vec + (size_t)u->idx * e->dim, ev->embedding, (size_t)e->dim * sizeof(float));
    e->n_done++;
    free(u);
    pthread_cond_broadcast(&e->cv);
    emb_unref_locked(e);
}

/* One input: a non-empty string or a non-empty list of token ids. */
static int add_input(emb_t *e, json_t *v, size_t i, reply_t *err) {
    const model_t *m = e->srv->m;
    long n = 0;
    int32_t *ids = NULL;
    if (json_is_string(v) && json_string_length(v) > 0) {
        ids = api_encode(m->tok, json_string_value(v), json_string_length(v), &n);
        if (!ids) return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    } else if (json_is_array(v) && json_array_size(v) > 0) {
        n = (long)json_array_size(v);
        if (!(ids = malloc((size_t)n * sizeof *ids)))
            return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
        for (long k = 0; k < n; k++) {
            json_t *t = json_array_get(v, (size_t)k);
            json_int_t id = json_is_integer(t) ? json_integer_value(t) : -1;
            if (id < 0 || id >= m->hp.n_vocab) {
                free(ids);
                return BAD("input", "input[%zu][%ld] is not a token id in [0, %d)", i, k, m->hp.n_vocab);
            }
            ids[k] = (int32_t)id;
        }
    } else {
        return BAD("input", "input[%zu] must be a non-empty string or a non-empty list of token ids", i);
    }
    int n_ctx = sched_config(e->srv->sched)->n_ctx;
    if (n == 0 || n > n_ctx) {
        free(ids);
        return BAD("input", "input[%zu] has %ld tokens; 1 to %d (the context) are allowed", i, n, n_ctx);
    }
    e->ids[e->n_in] = ids;
    e->len[e->n_in++] = (int)n;
    return 0;
}

static int parse(emb_t *e, json_t *req, int *b64, req_info_t *info, reply_t *err) {
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        if (strcmp(key, "model") && strcmp(key, "input") && strcmp(key, "encoding_format") &&
            strcmp(key, "dimensions") && strcmp(key, "user"))
            return BAD(key, "'%.64s' is not supported by sqserve's /v1/embeddings", key);
    }
    json_t *model = json_object_get(req, "model");
    if (!json_is_string(model)) return BAD("model", "'model' is required and must be a string");
    if (strcmp(json_string_value(model), e->srv->model_id)) {
        *err = reply_error(404, "not_found_error", "model", "model '%s' does not exist (serving '%s')",
                           json_string_value(model), e->srv->model_id);
        return -1;
    }
    json_t *fmt = json_object_get(req, "encoding_format");
    if (fmt && !json_is_null(fmt)) {
        const char *f = json_is_string(fmt) ? json_string_value(fmt) : "";
        if (strcmp(f, "float") && strcmp(f, "base64"))
            return BAD("encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
        *b64 = !strcmp(f, "base64");
    }
    json_t *dims = json_object_get(req, "dimensions");
    if (dims && !json_is_null(dims) && !(json_is_integer(dims) && json_integer_value(dims) == e->dim))
        return BAD("dimensions", "'dimensions' must be %d, the model's width: sqserve does not shorten embeddings",
                   e->dim);
    json_t *user = json_object_get(req, "user");
    if (user && !json_is_null(user)) {
        if (!json_is_string(user)) return BAD("user", "'user' must be a string");
        const char *u = json_string_value(user);
        size_t k = 0;
        for (; *u && k + 1 < sizeof info->user; u++) info->user[k++] = (*u >= 0x20 && *u < 0x7f) ? *u : '?';
        info->user[k] = 0;
    }
    json_t *in = json_object_get(req, "input");
    if (!in) return BAD("input", "'input' is required");
    /* a string, a list of token ids, or a list of either */
    int single = json_is_string(in) || (json_is_array(in) && json_is_integer(json_array_get(in, 0)));
    size_t n = single ? 1 : json_is_array(in) ? json_array_size(in) : 0;
    if (n == 0) return BAD("input", "'input' must be a string, a list of token ids, or a non-empty list of those");
    if (n > EMBED_MAX_INPUTS) return BAD("input", "at most %d inputs per request", EMBED_MAX_INPUTS);
    e->ids = calloc(n, sizeof *e->ids);
    e->len = calloc(n, sizeof *e->len);
    e->vec = calloc(n * (size_t)e->dim, sizeof *e->vec);
    e->job = calloc(n, sizeof *e->job);
    e->finish = calloc(n, sizeof *e->finish);
    if (!e->ids || !e->len || !e->vec || !e->job || !e->finish)
        return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    if (single) return add_input(e, in, 0, err);
    for (size_t i = 0; i < n; i++)
        if (add_input(e, json_array_get(in, i), i, err)) return -1;
    return 0;
}

static int submit_one(emb_t *e, int i, reply_t *err) {
    emb_ud_t *u = malloc(sizeof *u);
    if (!u) return (*err = reply_error(500, "server_error", NULL, "out of memory"), -1);
    *u = (emb_ud_t){e, i};
    sched_params_t sp = {.prompt = e->ids[i], .n_prompt = e->len[i], .max_tokens = 0, .sp = e->srv->sp_default,
                         .n_logprobs = -1, .embed = 1, .timeout_s = e->srv->request_timeout_s,
                         .sink = on_event, .ud = u};
    char msg[256];
    pthread_mutex_lock(&e->mu);
    e->refs++;
    pthread_mutex_unlock(&e->mu);
    int rc = sched_submit(e->srv->sched, &sp, &e->job[i], msg, sizeof msg);
    if (rc == SCHED_OK) {
        e->n_submitted++;
        return 0;
    }
    free(u);
    pthread_mutex_lock(&e->mu);
    e->refs--;
    pthread_mutex_unlock(&e->mu);
    unsigned status = rc == SCHED_EFULL ? 429 : rc == SCHED_EDRAIN ? 503 : rc == SCHED_ENOMEM ? 500 : 400;
    *err = reply_error(status, status == 429 ? "rate_limit_error" : status == 400 ? "invalid_request_error"
                                                                                  : "server_error",
                       status == 400 ? "input" : NULL, "%s", msg);
    return -1;
}

static void cancel_all(emb_t *e) {
    if (e->cancelled) return;
    e->cancelled = 1;
    for (int i = 0; i < e->n_submitted; i++) sched_cancel(e->srv->sched, e->job[i]);
}

static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void wait_slice(emb_t *e) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&e->cv, &e->mu, &ts);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* OpenAI's base64 form: the float32 values' little-endian bytes. */
static json_t *base64_floats(const float *v, int n) {
    size_t bytes = (size_t)n * 4, olen = (bytes + 2) / 3 * 4;
    unsigned char *in = malloc(bytes);
    char *out = malloc(olen + 1);
    json_t *j = NULL;
    if (in && out) {
        for (int i = 0; i < n; i++) { /* little-endian whatever the host */
            uint32_t u;
            memcpy(&u, &v[i], 4);
            for (int b = 0; b < 4; b++) in[i * 4 + b] = (unsigned char)(u >> (8 * b));
        }
        size_t o = 0;
        for (size_t i = 0; i < bytes; i += 3) {
            uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < bytes ? (uint32_t)in[i + 1] << 8 : 0) |
                         (i + 2 < bytes ? in[i + 2] : 0);
            out[o++] = B64[w >> 18 & 63];
            out[o++] = B64[w >> 12 & 63];
            out[o++] = i + 1 < bytes ? B64[w >> 6 & 63] : '=';
            out[o++] = i + 2 < bytes ? B64[w & 63] : '=';
        }
        j = json_stringn(out, o);
    }
    free(in);
    free(out);
    return j;
}

static reply_t result(emb_t *e, int b64) {
    for (int i = 0; i < e->n_in; i++) {
        const char *f = e->finish[i];
        if (!strcmp(f, "timeout")) return reply_error(504, "timeout_error", NULL, "the request exceeded --request-timeout");
        if (!strcmp(f, "cancelled"))
            return reply_error(503, "server_error", NULL, "the server is shutting down: --drain-timeout expired");
        if (strcmp(f, "stop")) return reply_error(500, "server_error", NULL, "embedding failed");
    }
    json_t *data = json_array();
    long tokens = 0;
    for (int i = 0; i < e->n_in; i++) {
        const float *v = e->vec + (size_t)i * e->dim;
        json_t *emb;
        if (b64) {
            emb = base64_floats(v, e->dim);
        } else {
            emb = json_array();
            for (int d = 0; d < e->dim; d++) json_array_append_new(emb, json_real(v[d]));
        }
        if (!emb) {
            json_decref(data);
            return reply_error(500, "server_error", NULL, "out of memory");
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index", i, "embedding", emb));
        tokens += e->len[i];
    }
    return reply_json(200, json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model",
                                     e->srv->model_id, "usage", "prompt_tokens", (json_int_t)tokens,
                                     "total_tokens", (json_int_t)tokens));
}

reply_t api_embeddings(srv_t *s, struct MHD_Connection *conn, json_t *req, req_info_t *info) {
    emb_t *e = calloc(1, sizeof *e);
    if (!e) return reply_error(500, "server_error", NULL, "out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->refs = 1;
    e->srv = s;
    e->dim = s->m->hp.dim;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1, b64 = 0, gone = 0;
    reply_t r = {0, NULL};
    if (parse(e, req, &b64, info, &r) == 0) {
        pthread_mutex_lock(&e->mu);
        while (e->n_done < e->n_submitted || (e->n_submitted < e->n_in && !r.resp && !e->cancelled)) {
            if (!r.resp && !e->cancelled && e->n_submitted < e->n_in && e->n_submitted - e->n_done < EMBED_WINDOW) {
                pthread_mutex_unlock(&e->mu);
                int rc = submit_one(e, e->n_submitted, &r);
                pthread_mutex_lock(&e->mu);
                if (rc) cancel_all(e); /* refused: let what runs end, then answer */
                continue;
            }
            wait_slice(e);
            if (!gone && e->n_done < e->n_submitted && client_gone(fd)) {
                gone = 1;
                cancel_all(e);
            }
        }
        long tokens = 0;
        for (int i = 0; i < e->n_in; i++) tokens += e->len[i];
        info->prompt_tokens = (int)tokens;
        info->completion_tokens = info->cached_tokens = 0;
        if (gone) {
            info->cause = "client_disconnect";
            r = reply_error(499, "client_disconnect", NULL, "the client closed the connection");
        } else if (!r.resp) {
            r = result(e, b64);
            if (r.status == 504) info->cause = "timeout";
            else if (r.status == 503) info->cause = "drain";
            else if (r.status != 200) info->cause = "error";
        }
    } else {
        pthread_mutex_lock(&e->mu);
    }
    emb_unref_locked(e);
    return r;
}
