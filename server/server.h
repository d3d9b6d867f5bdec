/* server.h - the HTTP edge shared state and the pieces between files.
 *
 * Threads: libmicrohttpd runs one thread per connection. A handler parses
 * and validates the request, hands sequences to the scheduler, then
 * blocks (non-streaming) or feeds a streaming response from what the
 * scheduler's sink appends; it never runs model compute. So a slow client
 * holds only its own thread, and the engine never waits on a socket; a
 * client slow to send its request is cut by --receive-timeout (conns.c).
 */
#ifndef SERVER_H
#define SERVER_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../engine/model/model.h"
#include "../engine/runtime/sched.h"

enum { EP_COMPLETIONS, EP_CHAT, EP_MODELS, EP_HEALTH, EP_METRICS, EP_TOKENIZE, EP_DETOKENIZE,
       EP_OPENAPI, EP_OTHER, EP_COUNT };
#define STATUS_SLOTS 9 /* 200 400 401 404 405 413 429 431 5xx */

typedef struct {
    model_t *m;
    sched_t *sched;        /* valid once ready is set */
    atomic_int ready;      /* 0 while loading: every route answers 503 */
    const char *model_id;
    const char *api_key;   /* NULL: no auth */
    size_t max_body;
    double request_timeout_s;
    int log_json;
    struct MHD_Daemon *daemon;
    const char *recipe;    /* "weights=... acts=..." or "gguf" */
    const char *device;    /* "cpu" or the GPU's name */
    double w_bits;
    int have_eval;         /* startup evaluation against FP32 */
    double eval_ppl, eval_ppl_ref, eval_kl, eval_top1;
    long eval_tokens;
    char eval_ref[160];    /* the reference model's file name */
    pthread_mutex_t mu;    /* guards the request counters */
    uint64_t requests[EP_COUNT][STATUS_SLOTS];
    /* connections (conns.c): the table, the receive deadline's reaper */
    unsigned max_connections;
    double receive_timeout_s;  /* <= 0: no deadline */
    int metrics_need_key;      /* --protect-metrics: /metrics wants the API key too */
    pthread_mutex_t conns_mu;  /* guards the fields below */
    pthread_cond_t conns_cv;
    struct conn_slot *conns;
    uint64_t receive_timeouts;
    pthread_t reaper;
    int conns_ready, reaper_on, conns_stop;
} srv_t;

typedef struct conn_slot conn_slot_t;

/* What a handler produces: a status and a finished MHD response. */
typedef struct {
    unsigned status;
    struct MHD_Response *resp;
} reply_t;

/* http.c */
int http_start(srv_t *s, const char *host, int port, int *bound_port, char *err, size_t errlen);
void http_stop(srv_t *s);

/* conns.c: the connection table and the receive deadline (slowloris) */
int conns_init(srv_t *s);
int conns_start_reaper(srv_t *s);
void conns_stop(srv_t *s);
void conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                  enum MHD_ConnectionNotificationCode code);
void conns_request_received(srv_t *s, struct MHD_Connection *c); /* the last byte arrived */
void conns_request_done(srv_t *s, struct MHD_Connection *c);     /* receiving (idle) again */
uint64_t conns_receive_timeouts(srv_t *s);
unsigned conns_open(srv_t *s); /* open connections now */

/* reply.c */
reply_t reply_json(unsigned status, json_t *body); /* steals body */
reply_t reply_error(unsigned status, const char *type, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *reply_endpoint_name(int ep);
int reply_status_slot(unsigned status);
unsigned reply_status_of_slot(int slot);
reply_t reply_text(unsigned status, const char *type, const char *text); /* copies text */

/* api.c: the OpenAI endpoints; conn gives access to the socket for
 * disconnect detection. */
reply_t api_completions(srv_t *s, struct MHD_Connection *conn, json_t *req, int chat);
reply_t api_models(srv_t *s, const char *id);
reply_t api_tokenize(srv_t *s, json_t *req);
reply_t api_detokenize(srv_t *s, json_t *req);

/* metrics.c */
reply_t metrics_reply(srv_t *s);

/* openapi.c (generated from server/openapi.json) */
extern const char OPENAPI_JSON[];

#endif
