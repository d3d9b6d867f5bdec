/* fuzz_request.c - libFuzzer: an HTTP request body as the server sees it
 * (server/http.c parses it with JSON_REJECT_DUPLICATES) through request
 * validation into an engine request: api_parse for /v1/completions and
 * /v1/chat/completions (prompt forms, token ids, messages, sampling
 * fields, logit_bias, stop lists, n, logprobs, echo, the refused fields,
 * response_format, grammar, tools and tool messages), and /tokenize,
 * /detokenize.
 * Nothing is submitted: the target is the validation and tokenization a
 * client controls. The real model (or $SQSERVE_FUZZ_MODEL) and a scheduler
 * (for its context limit) are set up once. First byte: which endpoint.
 * Seeds: tests/fuzz/corpus/request. */
#include "fuzz_common.h"
#include "../../server/api.h"

#include <stdio.h>

static model_t M;
static srv_t S;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *path = getenv("SQSERVE_FUZZ_MODEL");
    char err[512];
    k_init();
    if (model_load(&M, path ? path : "models/SmolLM2-135M-Instruct.Q4_1.gguf", err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_request: %s\n", err);
        exit(1);
    }
    sched_config_t sc = {.max_seqs = 1, .max_queue = 1, .max_batch_tokens = 16, .threads = 1,
                         .n_ctx = M.hp.n_ctx_train < 4096 ? M.hp.n_ctx_train : 4096,
                         .kv_mem = 4u << 20, .drain_timeout_s = 1};
    S.m = &M;
    S.model_id = "SmolLM2-135M-Instruct.Q4_1";
    S.max_body = 1 << 20;
    S.sp_default = sample_defaults(); /* as serve.c: the request defaults */
    S.default_max_tokens = 512;
    if (!(S.sched = sched_new(&M, &sc, err, sizeof err))) {
        fprintf(stderr, "fuzz_request: %s\n", err);
        exit(1);
    }
    return 0;
}

static void drop(reply_t r) {
    if (r.resp) MHD_destroy_response(r.resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int ep = data[0] % 4;
    json_error_t je;
    json_t *req = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, &je);
    if (!req) return 0;
    if (json_is_object(req)) {
        if (ep <= 1) {
            api_req_t r;
            reply_t err = {0, NULL};
            memset(&r, 0, sizeof r);
            if (api_parse(&S, req, ep == 1, &r, &err) != 0) drop(err);
            api_req_free(&r); /* as api.c does: also after a refusal */
        } else if (ep == 2) {
            drop(api_tokenize(&S, req));
        } else {
            drop(api_detokenize(&S, req));
        }
    }
    json_decref(req);
    return 0;
}
