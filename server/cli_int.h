/* cli_int.h - what the subcommands of cli.c share with cli_convert.c: the
 * runtime a command loads (model, threads, KV cache, forward state) and
 * the helpers for errors and input, all defined in cli_rt.c, below both.
 * Not part of the server's interface: main.c and serve.c see only cli.h.
 *
 * Only cli_rt.c opens and frees the runtime (cli_rt_open, cli_rt_free), so
 * what a command must release, and in which order, is written down once;
 * cmd_convert fills in its quantized state and leaves the rest to them.
 */
#ifndef CLI_INT_H
#define CLI_INT_H

#include "cli.h"

#include "../engine/quant/quant.h"
#include "../engine/runtime/gen.h"

#include <stddef.h>
#include <stdint.h>

/* The runtime shared by the commands: model, pool, cache, forward state. */
typedef struct {
    model_t m;
    k_pool_t *pool;
    kv_cache_t kv;
    fwd_t f;
    quant_state_t qs;
    int loaded, kv_ready, fwd_ready, quantized, own_pool;
    int int_acts; /* a GGUF as stored on the integer kernels (k_q8.h) */
} rt_t;

/* Prints "error: ..." on stderr; returns 1, the exit status of a failed command. */
int cli_die(const char *fmt, ...);

int cli_rt_open(rt_t *r, const config_t *c);
void cli_rt_free(rt_t *r);
int cli_rt_int_acts(rt_t *r, const config_t *c);
int cli_recipe_out_q8(const rt_t *r);

char *cli_read_file(const char *path, size_t *len);
int cli_encode(const tok_t *t, const char *text, size_t len, int special, int32_t **out, long *n);

#endif
