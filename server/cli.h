/* cli.h - offline subcommands (one function each, exit status returned). */
#ifndef CLI_H
#define CLI_H

#include "config.h"

#include "../engine/quant.h"

int cmd_generate(const config_t *c);
int cmd_eval(const config_t *c);
int cmd_inspect(const config_t *c);
int cmd_tokenize(const config_t *c);
int cmd_bench(const config_t *c);
int cmd_serve(const config_t *c);
int cmd_convert(const config_t *c);

/* --weights/--acts on a loaded model (shared by the subcommands). */
int cli_quantize(model_t *m, k_pool_t *pool, const config_t *c, quant_state_t *qs, int *done,
                 int keep_codes);

#endif
