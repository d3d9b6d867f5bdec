/* cli.h - offline subcommands (one function each, exit status returned). */
#ifndef CLI_H
#define CLI_H

#include "config.h"

#include "../engine/quant/quant.h"

int cmd_generate(const config_t *c);
int cmd_eval(const config_t *c);
int cmd_inspect(const config_t *c);
int cmd_tokenize(const config_t *c);
int cmd_bench(const config_t *c);
int cmd_serve(const config_t *c);
int cmd_convert(const config_t *c);
/* bench --synthetic NAME --device cuda (cli_bench.c) */
int cli_bench_synthetic(const config_t *c);

#include "../engine/runtime/gen.h"

/* The quantized model against the FP32 file on self-generated text
 * (tokens >= 128, in whole 128-token windows); show_progress draws a
 * progress bar with ETA on stderr. 0, or -1 with a message in err. */
int cli_eval_vs_fp32(model_t *m, quant_state_t *qs, k_pool_t *pool, const char *path, int tokens,
                     int show_progress, cmp_result_t *out, char *err, size_t errlen);

/* Whether a GGUF run as stored on the CPU takes the integer kernels
 * (kernels/k_q8.h): --exact-fp32 says no, --int-acts yes (both: -1 after
 * printing the error); by default yes unless the FP32-activation kernels
 * run AVX-512, which on the machine measured (docs/perf.md) decode as fast
 * as the 256-bit integer kernels and prefill 1.3x faster. */
int cli_int_acts_wanted(const config_t *c);

/* --weights/--acts on a loaded model (shared by the subcommands). */
int cli_quantize(model_t *m, k_pool_t *pool, const config_t *c, quant_state_t *qs, int *done,
                 int keep_codes);

#endif
