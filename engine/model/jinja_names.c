/* jinja_names.c - the names of the filters and tests the interpreter
 * implements. The parser (jinja_parse.c) checks a template's filter and
 * test names against them at compile time, so an unknown name is an error
 * before anything runs; the tables live here, below the parser and the
 * library, so the parser does not call up into the library files that
 * implement them (jinja_filters.c, jinja_lib.c). A name added to the
 * library must be added here too. */
#include "jinja_int.h"

#include <string.h>

static const char *const FILTERS[] = {
    "trim", "tojson", "length", "count", "first", "last", "join", "default", "d", "upper",
    "lower", "title", "capitalize", "selectattr", "rejectattr", "select", "reject", "map",
    "list", "string", "int", "float", "safe", "replace", "indent", "round", "abs", "reverse",
    "items", "unique", "sort", "sum", "min", "max", "attr", NULL};

int jlib_has_filter(const char *name) {
    for (int i = 0; FILTERS[i]; i++)
        if (!strcmp(FILTERS[i], name)) return 1;
    return 0;
}

static const char *const TESTS[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
    "string", "mapping", "iterable", "sequence", "callable", "sameas", "eq", "equalto", "==", "ne",
    "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "odd",
    "even", "divisibleby", "lower", "upper", NULL};

int jlib_has_test(const char *name) {
    for (int i = 0; TESTS[i]; i++)
        if (!strcmp(TESTS[i], name)) return 1;
    return 0;
}
