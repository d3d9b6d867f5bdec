/* jinja.h - a bounded interpreter for the Jinja subset chat templates use.
 *
 * GGUF files carry their chat template as Jinja source (the text Hugging
 * Face's tokenizer_config.json holds), and HF renders it with jinja2 in an
 * immutable sandbox with trim_blocks and lstrip_blocks on. This module
 * reproduces that rendering byte for byte for what real templates use:
 * {{ }}, {% %}, {# #}, whitespace control, for/if/set/macro/break/continue,
 * namespaces, the common filters, tests and string/dict methods, and HF's
 * extras (raise_exception, strftime_now, tojson without HTML escaping).
 * What it does not know (a tag, filter, test or method) is a parse or
 * render error naming it and its line, never a guess.
 *
 * Supported: {{ }}, {% %}, {# #}, -/+ whitespace control; if/elif/else,
 * for (one or two targets, an `if` filter, else, loop.index/index0/
 * revindex/revindex0/first/last/length/previtem/nextitem), set (name,
 * ns.attr, block), macro (positional, keyword and default arguments),
 * break/continue, generation; literals incl. tuples, dicts, adjacent
 * strings; and/or/not, in/not in, chained comparisons, + - * / // % ** ~,
 * x if c else y, subscripts and slices (by code point on strings); tests
 * defined/undefined/none/string/number/integer/float/boolean/true/false/
 * mapping/iterable/sequence/callable/odd/even/divisibleby/eq/ne/lt/le/gt/
 * ge/in/sameas/lower/upper; filters trim, tojson, length/count, first,
 * last, join, default/d, upper, lower, title, capitalize, select(attr),
 * reject(attr), map, list, string, int, float, safe, replace, indent,
 * round, abs, reverse, items, unique, sort, sum, min, max, attr; methods
 * str.strip/lstrip/rstrip/split/startswith/endswith/upper/lower/title/
 * capitalize/replace/find/join, dict.items/keys/values/get, list.append;
 * globals range, namespace, dict, raise_exception, strftime_now.
 * Not supported (an error): include/extends/import/block, call and filter
 * blocks, raw, recursive loops, loop.cycle/depth, tuple assignment,
 * Python's str % formatting and str.format; case mapping is ASCII-only.
 *
 * A template is data from a model file, so rendering is bounded: the
 * output size, the memory the values take, the loop iterations and the
 * call depth all have limits (jinja_limits_t); past one the render stops
 * with an error. The template is parsed once (jinja_parse) and rendered
 * per request (jinja_render), which only reads it, so one template may be
 * rendered by several threads at once.
 */
#ifndef JINJA_H
#define JINJA_H

#include <jansson.h>
#include <stddef.h>

typedef struct jinja_tmpl jinja_tmpl_t;

typedef struct {
    size_t max_output;    /* bytes rendered at most */
    size_t max_memory;    /* bytes of values (strings, lists, dicts) at most */
    long max_steps;       /* loop iterations + statements executed at most */
    int max_depth;        /* macro call / expression nesting at most */
} jinja_limits_t;

typedef struct {
    int line;             /* template line of the error (0: none) */
    int raised;           /* 1: the template called raise_exception() */
    char msg[512];        /* "line N: ..." */
} jinja_error_t;

/* Defaults: 16 MiB output, 256 MiB of values, 10^7 steps, depth 256. */
jinja_limits_t jinja_default_limits(void);

/* Parses a template. Returns NULL with err filled on a syntax error or
 * out of memory. */
jinja_tmpl_t *jinja_parse(const char *src, size_t len, jinja_error_t *err);
void jinja_free(jinja_tmpl_t *t);

/* Renders with the variables of a JSON object (strings, numbers, lists
 * and objects become Jinja values; JSON null is None). Returns a malloc'd
 * NUL-terminated string (*out_len its length, may be NULL), or NULL with
 * err filled. lim may be NULL for the defaults. */
char *jinja_render(const jinja_tmpl_t *t, json_t *vars, const jinja_limits_t *lim,
                   size_t *out_len, jinja_error_t *err);

#endif
