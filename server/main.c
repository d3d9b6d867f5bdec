/* main.c - the sqserve binary: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"

extern const char SQSERVE_VERSION[]; /* generated at build time (Makefile) */

static const struct {
    const char *name;
    unsigned cmd;
    int (*fn)(const config_t *);
    const char *help;
} COMMANDS[] = {
    {"generate", CMD_GENERATE, cmd_generate, "generate text from a prompt"},
    {"eval", CMD_EVAL, cmd_eval, "measure perplexity on a text file"},
    {"inspect", CMD_INSPECT, cmd_inspect, "load a model and print its hyperparameters"},
    {"tokenize", CMD_TOKENIZE, cmd_tokenize, "print the token ids of a text"},
    {"bench", CMD_BENCH, cmd_bench, "prompt and generation tokens/s (llama-bench style)"},
    {"serve", CMD_SERVE, cmd_serve, "OpenAI-compatible HTTP service with continuous batching"},
    {"convert", CMD_CONVERT, cmd_convert, "quantize a GGUF by recipe into a .sqm file"},
};

static void usage(FILE *fp) {
    fprintf(fp, "usage: sqserve COMMAND [options]   (sqserve COMMAND --help for its options)\n"
                "       sqserve --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(fp, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("sqserve %s\n", SQSERVE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(argv[1], COMMANDS[i].name) != 0) continue;
        config_t cfg;
        char err[256];
        if (cfg_parse(&cfg, COMMANDS[i].cmd, argc - 2, argv + 2, err, sizeof err) != 0) {
            fprintf(stderr, "error: %s\n", err);
            return 2;
        }
        if (cfg.help) {
            cfg_usage(COMMANDS[i].cmd, COMMANDS[i].name);
            return 0;
        }
        return COMMANDS[i].fn(&cfg);
    }
    fprintf(stderr, "error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
