/* config.h - the one table of options (name, env var, default, help).
 *
 * The CLI parser, --help and the environment (SQSERVE_*) all read
 * OPTIONS[], so an option is declared in one place. An option whose meaning
 * differs between commands has one entry per group of commands (disjoint
 * masks), each with its own help text, so a command's --help says only
 * what applies to it. Precedence: command line > environment > default.
 * Values are validated as they are parsed so a bad number is reported
 * before any work starts.
 */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum { CMD_GENERATE = 1, CMD_EVAL = 2, CMD_INSPECT = 4, CMD_TOKENIZE = 8, CMD_BENCH = 16,
       CMD_SERVE = 32, CMD_CONVERT = 64, CMD_ALL = 127 };

typedef enum { OPT_STR, OPT_INT, OPT_FLOAT, OPT_BOOL, OPT_LIST } opt_type_t;

typedef struct {
    const char *name;  /* long form, --name */
    char short_name;   /* -x, or 0 */
    const char *env;   /* environment variable, or NULL */
    const char *def;   /* default as text, or NULL */
    opt_type_t type;
    unsigned cmds;     /* CMD_* mask of subcommands that accept it */
    double lo, hi;     /* numeric range */
    const char *help;
} opt_t;

extern const opt_t OPTIONS[];
extern const int N_OPTIONS;

#define CFG_LIST_MAX 8
#define CFG_MAX_OPTIONS 96 /* entries of OPTIONS[] at most (checked where it is defined) */

typedef struct {
    unsigned cmd;
    const char *val[CFG_MAX_OPTIONS];                /* per entry; NULL = unset */
    const char *list[CFG_MAX_OPTIONS][CFG_LIST_MAX]; /* OPT_LIST values */
    int n_list[CFG_MAX_OPTIONS];
    int help;
} config_t;

/* Parses argv (after the subcommand). Returns 0, or -1 with a message. */
int cfg_parse(config_t *c, unsigned cmd, int argc, char **argv, char *err, size_t errlen);
void cfg_usage(unsigned cmd, const char *cmd_name);

const char *cfg_str(const config_t *c, const char *name);
long cfg_int(const config_t *c, const char *name);
double cfg_float(const config_t *c, const char *name);
int cfg_bool(const config_t *c, const char *name);
int cfg_list(const config_t *c, const char *name, const char *const **out);

#endif
