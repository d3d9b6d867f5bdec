/* cli_rt.c - what every offline command, and convert, shares: the error
 * line (cli_die), the runtime a command loads and frees (cli_rt_open,
 * cli_rt_free; the threads it runs on), whether a GGUF takes the integer
 * kernels (cli_int_acts_wanted, cli_rt_int_acts, cli_recipe_out_q8), and
 * reading and tokenizing input (cli_read_file, cli_encode).
 *
 * It sits below the commands so that the calls run one way: cli.c and
 * cli_convert.c (and serve.c, for cli_int_acts_wanted) call it, and it
 * calls neither, nor any command. The declarations are in cli_int.h
 * (cli_int_acts_wanted, which serve.c uses, in cli.h).
 */
#include "cli_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

void cli_rt_free(rt_t *r) {
    if (r->fwd_ready) fwd_free(&r->f);
    if (r->kv_ready) kv_free(&r->kv);
    if (r->own_pool) k_pool_free(r->pool);
    if (r->quantized) quant_free(&r->qs);
    if (r->loaded) model_free(&r->m);
}

static int rt_threads(const config_t *c) {
    long t = cfg_int(c, "threads");
    if (t > 0) return (int)t;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cli_rt_open(rt_t *r, const config_t *c) {
    char err[512];
    memset(r, 0, sizeof *r);
    k_init();
    if (model_load(&r->m, cfg_str(c, "model"), err, sizeof err) != 0) return cli_die("%s", err);
    r->loaded = 1;
    /* --chat-template: a bad one is reported here and fails chats only */
    const char *tmpl = (c->cmd & (CMD_GENERATE | CMD_SERVE | CMD_INSPECT)) ? cfg_str(c, "chat-template") : NULL;
    if (tmpl && chat_tmpl_override(&r->m.chat, tmpl, err, sizeof err) != 0)
        fprintf(stderr, "warning: %s; chat prompts cannot be rendered\n", err);
    if (!(r->pool = k_pool_new(rt_threads(c)))) return cli_die("cannot start threads");
    r->own_pool = 1;
    return 0;
}

int cli_int_acts_wanted(const config_t *c) {
    if (cfg_bool(c, "exact-fp32") && cfg_bool(c, "int-acts"))
        return cli_die("--exact-fp32 and --int-acts ask for opposite paths: give one"), -1;
    if (cfg_bool(c, "exact-fp32")) return 0;
    return cfg_bool(c, "int-acts") || strcmp(k_isa_name(), "avx512") != 0;
}

/* Every matrix still in a GGUF type takes the integer kernels on the CPU,
 * activations quantized to 8 bits per block, when cli_int_acts_wanted says
 * so: all of a GGUF run as stored, and the output projection (kept in its
 * GGUF type, usually Q8_0) of a .sqm or of a GGUF quantized at load. On an
 * AVX2 CPU that projection is a fifth of a decode step, and its FP32 dot
 * products run at a third of the integer kernel's speed. Never called for
 * a reference model: those stay FP32. Returns 0, or 1 after printing the
 * error. */
int cli_rt_int_acts(rt_t *r, const config_t *c) {
    int want = cli_int_acts_wanted(c);
    if (want < 0) return 1;
    if (want && !r->m.dev) r->int_acts = model_set_int_acts(&r->m, 1) > 0;
    return 0;
}

/* A recipe's model (.sqm or quantized at load): is its output projection
 * on 8-bit block activations? */
int cli_recipe_out_q8(const rt_t *r) { return r->int_acts && (r->m.file_map || r->quantized); }

/* Tokenizes text; *out is malloc'd. */
int cli_encode(const tok_t *t, const char *text, size_t len, int special, int32_t **out,
               long *n) {
    size_t cap = len + 16;
    for (;;) {
        int32_t *ids = malloc(cap * sizeof *ids);
        if (!ids) return cli_die("out of memory tokenizing");
        long k = tok_encode(t, text, len, special, ids, cap);
        if (k < 0) { free(ids); return cli_die("out of memory tokenizing"); }
        if ((size_t)k <= cap) { *out = ids; *n = k; return 0; }
        free(ids);
        cap = (size_t)k;
    }
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            char *nb = realloc(buf, cap = (n + 65536 + 1) * 2);
            if (!nb) { free(buf); fclose(fp); return NULL; }
            buf = nb;
        }
        size_t k = fread(buf + n, 1, 65536, fp);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) { free(buf); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}
