/* jinja_render.c - renders a Jinja template with the C interpreter, for
 * tests/test_chat_templates.py (which compares it with jinja2).
 *
 *   jinja_render TEMPLATE_FILE VARS_JSON_FILE [MAX_STEPS [MAX_OUTPUT [MAX_MEMORY]]]
 *
 * Prints the rendering to stdout and exits 0; on a template error prints
 * "error: MESSAGE" to stderr and exits 1 (3 when the template called
 * raise_exception); 2 for bad usage or unreadable files. */
#include "../../engine/model/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) { free(buf); buf = NULL; }
        else buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return NULL; }
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: %s TEMPLATE VARS_JSON [MAX_STEPS [MAX_OUTPUT [MAX_MEMORY]]]\n", argv[0]);
        return 2;
    }
    size_t tlen;
    char *src = slurp(argv[1], &tlen);
    if (!src) { fprintf(stderr, "cannot read %s\n", argv[1]); return 2; }
    json_error_t jerr;
    json_t *vars = json_load_file(argv[2], 0, &jerr);
    if (!vars) { fprintf(stderr, "%s: %s\n", argv[2], jerr.text); free(src); return 2; }
    jinja_limits_t lim = jinja_default_limits();
    if (argc > 3) lim.max_steps = atol(argv[3]);
    if (argc > 4) lim.max_output = (size_t)atol(argv[4]);
    if (argc > 5) lim.max_memory = (size_t)atol(argv[5]);
    jinja_error_t err;
    int rc = 0;
    jinja_tmpl_t *t = jinja_parse(src, tlen, &err);
    if (!t) {
        fprintf(stderr, "error: %s\n", err.msg);
        rc = 1;
    } else {
        size_t n;
        char *out = jinja_render(t, vars, &lim, &n, &err);
        if (!out) {
            fprintf(stderr, "error: %s\n", err.msg);
            rc = err.raised ? 3 : 1;
        } else {
            fwrite(out, 1, n, stdout);
            free(out);
        }
        jinja_free(t);
    }
    json_decref(vars);
    free(src);
    return rc;
}
