/* cli.h - offline subcommands (one function each, exit status returned). */
#ifndef CLI_H
#define CLI_H

#include "config.h"

int cmd_generate(const config_t *c);
int cmd_eval(const config_t *c);
int cmd_inspect(const config_t *c);
int cmd_tokenize(const config_t *c);
int cmd_bench(const config_t *c);
int cmd_serve(const config_t *c);

#endif
