/* jinja_int.h - the Jinja interpreter's internals, shared by its files:
 *
 *   jinja_value.c  arena, values, Python-compatible str()/repr()/json.dumps
 *   jinja_lex.c    source -> tokens (whitespace control, trim/lstrip_blocks)
 *   jinja_parse.c  tokens -> AST
 *   jinja_ctx.c    errors, the step budget, the iterable view of a value
 *   jinja_names.c  the filter and test names the parser checks
 *   jinja_lib.c    tests, methods, the helpers the filters share
 *   jinja_filters.c filters and global functions
 *   jinja_eval.c   AST -> output (statements, expressions, scopes, limits)
 *
 * Layers, top to bottom: eval; lib and filters; parse, ctx and names;
 * value and lex. Calls only go down (or within a layer: filters use lib's
 * helpers).
 *
 * Memory: every value and AST node lives in an arena (jarena_t) that is
 * freed as a whole: the parse arena with the template, the render arena
 * when jinja_render returns. Values never own memory, so there is no
 * reference counting, and an error anywhere unwinds with longjmp to the
 * entry point (jinja_parse / jinja_render), which frees the arena. The
 * arena's cap is the bound on memory a template may take.
 */
#ifndef JINJA_INT_H
#define JINJA_INT_H

#include "jinja.h"

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena -------------------------------------------------------------- */
typedef struct jchunk jchunk_t;
typedef struct {
    jchunk_t *head;
    size_t used, cap;   /* bytes handed out, limit */
    jmp_buf *fail;      /* where to go on exhaustion */
    jinja_error_t *err;
} jarena_t;

void *ja_alloc(jarena_t *a, size_t n);                 /* zeroed; longjmps on failure */
char *ja_strdup(jarena_t *a, const char *s, size_t n); /* NUL-terminated copy */
void ja_free(jarena_t *a);

/* Fills err ("line N: ...") and longjmps to *fail. */
_Noreturn void jx_fail(jmp_buf *fail, jinja_error_t *err, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- values -------------------------------------------------------------- */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_NS,    /* namespace(): a dict whose attributes may be assigned */
    JV_MACRO, /* a {% macro %} */
    JV_FUNC   /* a global function (range, namespace, ...): u.s is its name */
} jv_kind_t;

typedef struct jlist jlist_t;
typedef struct jdict jdict_t;
struct jnode;

typedef struct {
    jv_kind_t k;
    union {
        int b;
        long long i;
        double f;
        struct { const char *p; size_t n; } s;
        jlist_t *l;
        jdict_t *d;       /* JV_DICT, JV_NS */
        const struct jnode *m;
    } u;
    const char *undef_name; /* JV_UNDEF: what was missing, for messages */
} jv_t;

struct jlist { jv_t *v; size_t n, cap; int tuple; /* prints as (a, b) */ };
struct jdict { jv_t *key, *val; size_t n, cap; };

jv_t jv_undef(const char *name);
jv_t jv_none(void);
jv_t jv_bool(int b);
jv_t jv_int(long long i);
jv_t jv_float(double f);
jv_t jv_str(const char *p, size_t n);  /* does not copy */
jv_t jv_cstr(const char *s);
jv_t jv_list(jarena_t *a, size_t cap);
jv_t jv_dict(jarena_t *a, size_t cap);

void jl_push(jarena_t *a, jlist_t *l, jv_t v);
jv_t *jd_get(const jdict_t *d, const char *key, size_t n);  /* string keys */
jv_t *jd_lookup(const jdict_t *d, jv_t key);
void jd_set(jarena_t *a, jdict_t *d, jv_t key, jv_t val);
void jd_setc(jarena_t *a, jdict_t *d, const char *key, jv_t val);

jv_t jv_from_json(jarena_t *a, json_t *j);
int jv_truthy(jv_t v);
int jv_equal(jv_t a, jv_t b);
const char *jv_type_name(jv_t v);
int jv_is_str(jv_t v, const char *s);  /* a string equal to s */

/* ---- output / string buffers (in the arena) ------------------------------ */
typedef struct {
    jarena_t *a;
    char *p;
    size_t n, cap, max;   /* max: limit on n (0: none) */
    int line;             /* for the over-limit message */
} jbuf_t;

void jb_init(jbuf_t *b, jarena_t *a, size_t max);
void jb_add(jbuf_t *b, const char *s, size_t n);
void jb_addc(jbuf_t *b, const char *s);
jv_t jb_value(jbuf_t *b);

/* str(v) as Python prints it (repr for items inside lists and dicts). */
void jv_write_str(jbuf_t *b, jv_t v);
void jv_write_repr(jbuf_t *b, jv_t v);
/* json.dumps(v, ensure_ascii=False, indent=indent (<0: None), sort_keys=sort). */
void jv_write_json(jbuf_t *b, jv_t v, int indent, int sort, int line);
jv_t jv_to_str(jarena_t *a, jv_t v);  /* a string value */
void jv_write_float(jbuf_t *b, double f);

/* UTF-8: code points in s, byte offset of code point i (clamped). */
size_t ju_len(const char *s, size_t n);
size_t ju_offset(const char *s, size_t n, size_t i);

/* ---- lexer --------------------------------------------------------------- */
typedef enum {
    TK_DATA, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP, TK_EOF
} jtok_kind_t;

typedef struct {
    jtok_kind_t k;
    int line;
    const char *p;   /* text (data, name, op, unescaped string) */
    size_t n;
    long long i;
    double f;
} jtok_t;

typedef struct { jtok_t *v; size_t n; } jtoks_t;

/* Tokenizes src (newlines normalized, one trailing newline dropped, as
 * jinja2 does with keep_trailing_newline off). */
jtoks_t jlex(jarena_t *a, const char *src, size_t len);

/* ---- AST ----------------------------------------------------------------- */
typedef enum {
    /* statements */
    JN_DATA, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_BLOCK, JN_MACRO, JN_BREAK,
    JN_CONTINUE, JN_BLOCK,
    /* expressions */
    JN_LIT, JN_NAME, JN_LIST, JN_DICT, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL,
    JN_FILTER, JN_TEST, JN_UNARY, JN_BINARY, JN_AND, JN_OR, JN_NOT, JN_COMPARE,
    JN_COND, JN_CONCAT
} jnode_kind_t;

typedef struct jnode jnode_t;
typedef struct { jnode_t **v; int n, cap; } jnlist_t;

struct jnode {
    jnode_kind_t k;
    int line;
    const char *name;     /* NAME/ATTR/FILTER/TEST/MACRO/SET target, op for
                             UNARY/BINARY/COMPARE (first op) */
    const char *name2;    /* FOR second target, SET attribute */
    jnode_t *a, *b, *c;   /* operands / condition / iterable / value */
    jnlist_t args;        /* call/filter/test args, list items, dict keys */
    jnlist_t kwvals;      /* keyword argument values, dict values, macro defaults */
    const char **kwnames; /* keyword argument names, macro parameter names */
    jnlist_t body, orelse;
    const char **ops;     /* COMPARE: the operators, one per args entry */
    jv_t lit;
    int neg;              /* TEST: is not; LIST: a tuple; MACRO: parameter count */
};

void jnl_push(jarena_t *a, jnlist_t *l, jnode_t *n);

typedef struct {
    jnlist_t body;
} jast_t;

/* Parses tokens. Errors longjmp through the arena. */
jast_t jparse(jarena_t *a, jtoks_t toks);

/* ---- evaluation (jinja_eval.c) and the library (jinja_lib.c) ------------- */
typedef struct jframe jframe_t;
struct jframe { jdict_t *vars; jframe_t *parent; };

typedef struct {
    jarena_t *a;
    jinja_limits_t lim;
    jinja_error_t *err;
    jmp_buf *fail;
    jframe_t *globals;
    long steps;
    int depth;
    int brk;   /* 1: break, 2: continue pending */
} jctx_t;

/* jinja_ctx.c: errors, the step budget, iteration. */
_Noreturn void jctx_fail(jctx_t *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void jctx_step(jctx_t *c, int line);
void jctx_work(jctx_t *c, size_t bytes, int line);  /* a step per 4 KiB scanned */

jv_t jeval(jctx_t *c, jframe_t *f, const jnode_t *n);
/* Calls a macro value with evaluated arguments. */
jv_t jcall_macro(jctx_t *c, jframe_t *f, const jnode_t *macro, jv_t *args, int nargs,
                 const char **kwn, jv_t *kwv, int nkw, int line);
/* Iterable view of v as a list (strings: characters, dicts: keys). */
jlist_t *jv_iter(jctx_t *c, jv_t v, int line);

/* jinja_lib.c: each takes the evaluated arguments. */
typedef struct {
    jv_t *pos; int npos;
    const char **kwn; jv_t *kwv; int nkw;
} jargs_t;

jv_t jlib_filter(jctx_t *c, jframe_t *f, const char *name, jv_t v, jargs_t *args, int line);
int jlib_test(jctx_t *c, jframe_t *f, const char *name, jv_t v, jargs_t *args, int line);
/* jinja_names.c: 1 when the library implements the filter / test name. */
int jlib_has_filter(const char *name);
int jlib_has_test(const char *name);
/* obj.name(args): returns 1 and *out when handled. */
int jlib_method(jctx_t *c, jv_t obj, const char *name, jargs_t *args, jv_t *out, int line);
/* A global function by name (range, namespace, raise_exception, ...):
 * returns 1 and *out when it exists. */
int jlib_global(jctx_t *c, const char *name, jargs_t *args, jv_t *out, int line);
int jlib_is_global(const char *name);

/* Shared by jinja_lib.c and jinja_filters.c. */
jv_t *jl_arg(jargs_t *a, int i, const char *name);  /* positional i or keyword; NULL if absent */
void jl_check_args(jctx_t *c, jargs_t *a, const char *what, int maxpos, const char *names, int line);
jv_t jl_need_str(jctx_t *c, jv_t v, const char *what, int line);
long long jl_need_int(jctx_t *c, jv_t *v, long long def, const char *what, int line);
jv_t jl_strip(jv_t s, jv_t *chars, int which);       /* 1 left, 2 right, 3 both */
jv_t jl_recase(jctx_t *c, jv_t s, char mode);         /* 'u', 'l', 'c', 't' str.title, 'T' |title */
jv_t jl_replace(jctx_t *c, jv_t s, jv_t old, jv_t new_, long long count, int line);
jv_t jl_join(jctx_t *c, jv_t seq, jv_t sep, const char *attr, int line);

#endif
