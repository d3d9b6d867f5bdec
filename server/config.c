/* config.c - the option table and its parser (see config.h). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define G CMD_GENERATE
#define E CMD_EVAL
#define B CMD_BENCH
#define S CMD_SERVE
#define C CMD_CONVERT

const opt_t OPTIONS[] = {
    {"model", 'm', "SQSERVE_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf", OPT_STR, CMD_ALL & ~C, 0, 0,
     "model file: a GGUF, or a .sqm"},
    {"model", 'm', "SQSERVE_MODEL", "models/SmolLM2-135M-Instruct.Q4_1.gguf", OPT_STR, C, 0, 0,
     "the GGUF to convert"},
    {"threads", 't', "SQSERVE_THREADS", "0", OPT_INT, G | E | B | S | C, 0, 1024,
     "compute threads (0 = all cores)"},
    {"prompt", 'p', NULL, NULL, OPT_STR, G, 0, 0, "prompt text"},
    {"prompt", 'p', NULL, NULL, OPT_STR, CMD_TOKENIZE, 0, 0, "text to tokenize (read from stdin when absent)"},
    {"n-predict", 'n', NULL, "128", OPT_INT, G, 0, 1 << 20, "tokens to generate at most"},
    {"chat", 0, NULL, NULL, OPT_BOOL, G, 0, 0, "wrap the prompt as a user turn in the chat template"},
    {"system", 0, NULL, NULL, OPT_STR, G, 0, 0, "system message for --chat"},
    {"chat-template", 0, "SQSERVE_CHAT_TEMPLATE", NULL, OPT_STR, G | S | CMD_INSPECT, 0, 0,
     "chat template instead of the GGUF's: a built-in (chatml, llama3) or a Jinja file"},
    {"ctx", 'c', "SQSERVE_CTX", "0", OPT_INT, G | S, 0, 1 << 20,
     "context length per sequence (0: 4096 capped by the model's)"},
    {"ctx", 'c', "SQSERVE_CTX", "0", OPT_INT, E, 0, 1 << 20, "tokens per evaluation window (0: 512)"},
    {"batch", 'b', "SQSERVE_BATCH", "512", OPT_INT, G | B, 1, 8192,
     "rows per forward pass while processing prompts"},
    {"temp", 0, "SQSERVE_TEMP", "0.8", OPT_FLOAT, G, 0, 2, "temperature (0 = greedy)"},
    {"temp", 0, "SQSERVE_TEMP", "0.8", OPT_FLOAT, S, 0, 2,
     "temperature (0 = greedy) when a request does not say"},
    {"top-k", 0, "SQSERVE_TOP_K", "40", OPT_INT, G, 0, 1 << 24, "top-k cut (0 = off)"},
    {"top-k", 0, "SQSERVE_TOP_K", "40", OPT_INT, S, 0, 1 << 24, "top-k cut (0 = off) when a request does not say"},
    {"top-p", 0, "SQSERVE_TOP_P", "0.95", OPT_FLOAT, G, 1e-9, 1, "nucleus cut (1 = off)"},
    {"top-p", 0, "SQSERVE_TOP_P", "0.95", OPT_FLOAT, S, 1e-9, 1,
     "nucleus cut (1 = off) when a request does not say"},
    {"min-p", 0, "SQSERVE_MIN_P", "0.05", OPT_FLOAT, G, 0, 1, "min-p cut relative to the best token (0 = off)"},
    {"min-p", 0, "SQSERVE_MIN_P", "0.05", OPT_FLOAT, S, 0, 1,
     "min-p cut relative to the best token (0 = off) when a request does not say"},
    {"repeat-penalty", 0, NULL, "1.0", OPT_FLOAT, G, 1e-3, 10, "repetition penalty (1 = off)"},
    {"presence-penalty", 0, NULL, "0", OPT_FLOAT, G, -2, 2, "presence penalty"},
    {"frequency-penalty", 0, NULL, "0", OPT_FLOAT, G, -2, 2, "frequency penalty"},
    {"repeat-last-n", 0, NULL, "64", OPT_INT, G, 0, 1 << 20, "tokens the penalties look back at"},
    {"seed", 's', NULL, "-1", OPT_INT, G, -1, 9.007199254740992e15, "sampling seed (-1 = random)"},
    {"stop", 0, NULL, NULL, OPT_LIST, G, 0, 0, "stop string (repeatable, up to 8)"},
    {"ignore-eos", 0, NULL, NULL, OPT_BOOL, G, 0, 0, "keep generating past end-of-generation tokens"},
    {"ppl", 0, NULL, NULL, OPT_STR, E, 0, 0, "text file to measure perplexity on"},
    {"max-tokens", 0, NULL, "0", OPT_INT, E, 0, 1e12, "use only the first N tokens of the file (0 = all)"},
    {"no-special", 0, NULL, NULL, OPT_BOOL, CMD_TOKENIZE, 0, 0, "do not parse special tokens in text"},
    {"output", 'o', NULL, NULL, OPT_STR, C, 0, 0, "the .sqm file to write"},
    {"weights", 0, "SQSERVE_WEIGHTS", "fp32", OPT_STR, G | E | S | C, 0, 0,
     "weight recipe: fp32 (as loaded), int8, int4[:gN], sq:8/4:b64:s0.875, then optionally "
     ":gptq[:act][:damp<f>][:oneshot], :smooth[<alpha>] and (sq) :iscale"},
    {"acts", 0, "SQSERVE_ACTS", "fp32", OPT_STR, G | E | S | C, 0, 0,
     "activation recipe: fp32, int8, int4, sq:8/4:b64:s0.875:static|static-max|dynamic (static ones optionally :bank), "
     "then optionally :smooth[<alpha>]"},
    {"calib", 0, "SQSERVE_CALIB", "self", OPT_STR, G | E | S | C, 0, 0,
     "calibration text: self (the model's own generations) or a file"},
    {"calib-tokens", 0, "SQSERVE_CALIB_TOKENS", "2048", OPT_INT, G | E | S | C, 64, 1 << 20, "calibration tokens"},
    {"eval-tokens", 0, NULL, "512", OPT_INT, C, 0, 1 << 20,
     "self-generated tokens of the accuracy check against the GGUF after converting, recorded in the "
     ".sqm (0 = no check; else at least 128, used in whole 128-token windows)"},
    {"ref", 0, NULL, NULL, OPT_BOOL, E, 0, 0,
     "also run a reference model on the same tokens and report KL and top-1 agreement"},
    {"ref-model", 0, NULL, NULL, OPT_STR, E, 0, 0,
     "with --ref: the reference model (default: -m's own FP32 path when --weights/--acts quantize it or it runs "
     "on the integer kernels; required for a .sqm)"},
    {"host", 0, "SQSERVE_HOST", "127.0.0.1", OPT_STR, S, 0, 0, "listen address (IPv4)"},
    {"port", 0, "SQSERVE_PORT", "8080", OPT_INT, S, 0, 65535, "listen port (0 = any free port)"},
    {"model-name", 0, "SQSERVE_MODEL_NAME", NULL, OPT_STR, S, 0, 0,
     "model id clients use (default: file name without extension)"},
    {"api-key", 0, "SQSERVE_API_KEY", NULL, OPT_STR, S, 0, 0,
     "require 'Authorization: Bearer KEY' on /v1/* (and /metrics with --protect-metrics)"},
    {"protect-metrics", 0, "SQSERVE_PROTECT_METRICS", NULL, OPT_BOOL, S, 0, 0,
     "with --api-key, /metrics needs the key too (/health stays open)"},
    {"max-connections", 0, "SQSERVE_MAX_CONNECTIONS", "1024", OPT_INT, S, 16, 1 << 16,
     "open HTTP connections at most (one thread each); more are refused"},
    {"receive-timeout", 0, "SQSERVE_RECEIVE_TIMEOUT", "30", OPT_FLOAT, S, 0, 1e6,
     "seconds a connection may take to send a whole request, or sit idle between requests (0 = no limit)"},
    {"max-seqs", 0, "SQSERVE_MAX_SEQS", "16", OPT_INT, S, 1, 1024, "sequences running at once"},
    {"max-queue", 0, "SQSERVE_MAX_QUEUE", "64", OPT_INT, S, 0, 1 << 20,
     "sequences waiting beyond --max-seqs; more get 429"},
    {"max-batch-tokens", 0, "SQSERVE_MAX_BATCH_TOKENS", "512", OPT_INT, S, 1, 1 << 16,
     "tokens per engine step (prompt chunks + decodes)"},
    {"step-budget-ms", 0, "SQSERVE_STEP_BUDGET_MS", "200", OPT_FLOAT, S, 0, 1e6,
     "while sequences decode, cut prompt chunks so a step is predicted to take at most this long "
     "(at least 16 prompt tokens a step; 0 = no cut)"},
    {"kv-cache-mem", 0, "SQSERVE_KV_CACHE_MEM", "256", OPT_FLOAT, S, 0.01, 1 << 20, "KV cache pool in MiB"},
    {"request-timeout", 0, "SQSERVE_REQUEST_TIMEOUT", "300", OPT_FLOAT, S, 0, 1e7,
     "seconds before a request is cancelled with a 504 (0 = never; keep it below the client's "
     "timeout, 600 s for the openai client)"},
    {"default-max-tokens", 0, "SQSERVE_DEFAULT_MAX_TOKENS", "512", OPT_INT, S, 1, 1 << 24,
     "chat completions: max_tokens when a request does not say (completions: 16, as OpenAI)"},
    {"max-tokens-limit", 0, "SQSERVE_MAX_TOKENS_LIMIT", "0", OPT_INT, S, 0, 1 << 24,
     "largest max_tokens a request may ask for (0 = the context)"},
    {"progress-every", 0, "SQSERVE_PROGRESS_EVERY", "256", OPT_INT, S, 0, 1 << 24,
     "log a progress line every N generated tokens of a request (0 = never)"},
    {"cors-origin", 0, "SQSERVE_CORS_ORIGIN", NULL, OPT_STR, S, 0, 0,
     "allow browsers from this origin (or *) to call the API: CORS headers, OPTIONS preflight "
     "(default: off)"},
    {"metrics-compat", 0, "SQSERVE_METRICS_COMPAT", NULL, OPT_STR, S, 0, 0,
     "also export metrics under another server's names: vllm"},
    {"drain-timeout", 0, "SQSERVE_DRAIN_TIMEOUT", "30", OPT_FLOAT, S, 0, 1e6,
     "seconds in-flight requests get after SIGTERM"},
    {"max-body", 0, "SQSERVE_MAX_BODY", "1048576", OPT_INT, S, 1024, 1 << 30, "largest request body in bytes"},
    {"log-format", 0, "SQSERVE_LOG_FORMAT", "text", OPT_STR, S, 0, 0, "access log lines: text or json"},
    {"shadow-rate", 0, "SQSERVE_SHADOW_RATE", "0", OPT_FLOAT, S, 0, 1,
     "fraction of requests replayed through the FP32 reference in idle time (KL, top-1 metrics)"},
    {"startup-eval", 0, "SQSERVE_STARTUP_EVAL", "512", OPT_INT, S, 0, 1 << 16,
     "tokens of self-generated text to measure a quantized model against FP32 at start (0 = skip)"},
    {"exact-fp32", 0, "SQSERVE_EXACT_FP32", NULL, OPT_BOOL, G | E | B | S, 0, 0,
     "matrices in GGUF types (all of a GGUF run as stored; the output projection of a .sqm or recipe): "
     "FP32 activations (the exact reference path) instead of activations quantized to 8 bits per block "
     "with integer kernels (as llama.cpp does)"},
    {"int-acts", 0, "SQSERVE_INT_ACTS", NULL, OPT_BOOL, G | E | B | S, 0, 0,
     "matrices in GGUF types (as for --exact-fp32): the integer kernels even where the FP32-activation "
     "kernels run AVX-512 (by default those are kept there: on the machines measured they are faster)"},
    {"device", 0, "SQSERVE_DEVICE", "cpu", OPT_STR, G | E | B | S, 0, 0,
     "compute device: cpu, cuda or cuda:N (a CUDA build on an sm_90 GPU)"},
    {"synthetic", 0, NULL, NULL, OPT_STR, B, 0, 0,
     "random weights of these shapes on the GPU instead of -m (format: --synthetic-weights) "
     "(llama3-8b, llama3-70b, smollm2-135m)"},
    {"synthetic-weights", 0, NULL, NULL, OPT_STR, B, 0, 0,
     "with --synthetic: the weights' format: sq:8/4:b64:s0.875 (the default; half scales), "
     "sq:8/4:b64:s0.875:iscale (integer bank scales), int4:g64 (W4A8), int8 (W8A8) or f16 (every matrix and the lm head; INT8 activations but for f16)"},
    {"synthetic-acts", 0, NULL, NULL, OPT_STR, B, 0, 0,
     "with --synthetic: int8 (the default) or sq:8/4:b64:s0.875:static (random high channels; with "
     "--synthetic-weights int4:g64 or int8: the paper's W4A(SQ) mapping, two INT8 rows a token)"},
    {"decode-batches", 0, NULL, "1,8,32,128", OPT_STR, B, 0, 0,
     "with --synthetic: decode batch sizes (sequences advanced per step)"},
    {"pp", 0, NULL, "512", OPT_INT, B, 0, 1 << 16, "prompt tokens"},
    {"tg", 0, NULL, "128", OPT_INT, B, 0, 1 << 16, "generated tokens"},
    {"depth", 0, NULL, "0", OPT_INT, B, 0, 1 << 16,
     "with --synthetic: positions each decode sequence holds before the timed steps (its prompt runs "
     "first, untimed, as llama-bench's depth option does)"},
    {"reps", 'r', NULL, "3", OPT_INT, B, 1, 1000, "repetitions (the median is reported)"},
};
const int N_OPTIONS = (int)(sizeof OPTIONS / sizeof OPTIONS[0]);
_Static_assert(sizeof OPTIONS / sizeof OPTIONS[0] <= CFG_MAX_OPTIONS, "raise CFG_MAX_OPTIONS in config.h");

/* The entry of name that cmd accepts; else its first entry (whose default
 * a command may still read), or -1. A name may have one entry per group of
 * commands, each with its own help text: --help says only what applies. */
static int find(const char *name, unsigned cmd) {
    int first = -1;
    for (int i = 0; i < N_OPTIONS; i++) {
        if (strcmp(OPTIONS[i].name, name) != 0) continue;
        if (OPTIONS[i].cmds & cmd) return i;
        if (first < 0) first = i;
    }
    return first;
}

static int check_value(const opt_t *o, const char *v, char *err, size_t errlen) {
    if (o->type != OPT_INT && o->type != OPT_FLOAT) return 0;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) ||
        (o->type == OPT_INT && d != floor(d)) || d < o->lo || d > o->hi) {
        snprintf(err, errlen, "--%s: '%s' is not %s in [%g, %g]", o->name, v,
                 o->type == OPT_INT ? "an integer" : "a number", o->lo, o->hi);
        return -1;
    }
    return 0;
}

static int set(config_t *c, int i, const char *v, char *err, size_t errlen) {
    const opt_t *o = &OPTIONS[i];
    if (check_value(o, v, err, errlen) != 0) return -1;
    if (o->type == OPT_LIST) {
        if (c->n_list[i] == CFG_LIST_MAX) {
            snprintf(err, errlen, "--%s given more than %d times", o->name, CFG_LIST_MAX);
            return -1;
        }
        c->list[i][c->n_list[i]++] = v;
    }
    c->val[i] = v;
    return 0;
}

int cfg_parse(config_t *c, unsigned cmd, int argc, char **argv, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a], *val = NULL;
        char name[64];
        int i = -1;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { c->help = 1; continue; }
        if (arg[0] == '-' && arg[1] == '-') {
            const char *eq = strchr(arg + 2, '=');
            size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
            if (n < sizeof name) {
                memcpy(name, arg + 2, n);
                name[n] = 0;
                i = find(name, cmd);
            }
            if (eq) val = eq + 1;
        } else if (arg[0] == '-' && arg[1] && !arg[2]) {
            for (int k = 0; k < N_OPTIONS; k++)
                if (OPTIONS[k].short_name == arg[1] && (OPTIONS[k].cmds & cmd)) i = k;
        }
        if (i < 0 || !(OPTIONS[i].cmds & cmd)) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return -1;
        }
        if (OPTIONS[i].type == OPT_BOOL) {
            if (val) {
                snprintf(err, errlen, "--%s takes no value", OPTIONS[i].name);
                return -1;
            }
            c->val[i] = "1";
            continue;
        }
        if (!val) {
            if (a + 1 >= argc) {
                snprintf(err, errlen, "option '%s' needs a value", arg);
                return -1;
            }
            val = argv[++a];
        }
        if (set(c, i, val, err, errlen) != 0) return -1;
    }
    for (int i = 0; i < N_OPTIONS; i++) { /* environment, then defaults */
        if (c->val[i] || find(OPTIONS[i].name, cmd) != i) continue; /* another entry's command */
        /* the environment only for options this command accepts; others keep their default */
        const char *v = OPTIONS[i].env && (OPTIONS[i].cmds & cmd) ? getenv(OPTIONS[i].env) : NULL;
        if (v && *v && OPTIONS[i].type == OPT_BOOL) { /* a flag: on or off, said plainly */
            static const char *on[] = {"1", "true", "yes", "on"}, *off[] = {"0", "false", "no", "off"};
            int known = 0;
            for (int k = 0; k < 4; k++) {
                if (!strcasecmp(v, on[k])) { c->val[i] = "1"; known = 1; }
                if (!strcasecmp(v, off[k])) known = 1; /* stays unset */
            }
            if (!known) {
                snprintf(err, errlen, "%s: '%s' is not a boolean (1/0, true/false, yes/no, on/off)",
                         OPTIONS[i].env, v);
                return -1;
            }
        } else if (v && *v) {
            if (check_value(&OPTIONS[i], v, err, errlen) != 0) return -1;
            c->val[i] = v;
        } else {
            c->val[i] = OPTIONS[i].def;
        }
    }
    return 0;
}

void cfg_usage(unsigned cmd, const char *cmd_name) {
    printf("usage: sqserve %s [options]\n\noptions:\n", cmd_name);
    for (int i = 0; i < N_OPTIONS; i++) {
        const opt_t *o = &OPTIONS[i];
        if (!(o->cmds & cmd)) continue;
        char flag[48];
        snprintf(flag, sizeof flag, "%s%c%s--%s%s", o->short_name ? "-" : "",
                 o->short_name ? o->short_name : ' ', o->short_name ? ", " : "  ", o->name,
                 o->type == OPT_BOOL ? "" : " X");
        printf("  %-28s %s", o->short_name ? flag : flag + 2, o->help);
        if (o->def) printf(" [%s]", o->def);
        if (o->env) printf(" (env %s)", o->env);
        printf("\n");
    }
}

const char *cfg_str(const config_t *c, const char *name) {
    int i = find(name, c->cmd);
    return i >= 0 ? c->val[i] : NULL;
}

long cfg_int(const config_t *c, const char *name) {
    const char *v = cfg_str(c, name);
    return v ? (long)strtod(v, NULL) : 0;
}

double cfg_float(const config_t *c, const char *name) {
    const char *v = cfg_str(c, name);
    return v ? strtod(v, NULL) : 0;
}

int cfg_bool(const config_t *c, const char *name) { return cfg_str(c, name) != NULL; }

int cfg_list(const config_t *c, const char *name, const char *const **out) {
    int i = find(name, c->cmd);
    if (i < 0) return 0;
    *out = c->list[i];
    return c->n_list[i];
}
