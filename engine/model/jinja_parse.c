/* jinja_parse.c - tokens to an AST, a recursive-descent parser with
 * jinja2's operator precedence (loosest first):
 *
 *   x if c else y  <  or  <  and  <  not  <  == != < > <= >= in, not in
 *   <  + -  <  ~  <  * / // %  <  **  <  unary - +  <  |filter, is test
 *   <  .attr [subscript] (call)  <  literals, names, ( ) [ ] { }
 *
 * Statements: if/elif/else, for (target or "k, v", an optional "if"
 * filter, else), set (name, ns.attr, or a block), macro, break/continue,
 * and HF's generation block (rendered as its body). Nesting depth is
 * bounded so hostile input cannot exhaust the stack. */
#include "jinja_int.h"

#include <string.h>

#define MAX_NEST 200

typedef struct {
    jarena_t *a;
    jtoks_t t;
    size_t i;
    int depth, loops, in_macro;
} parser_t;

#define PFAIL(P, line, ...) jx_fail((P)->a->fail, (P)->a->err, (line), __VA_ARGS__)

void jnl_push(jarena_t *a, jnlist_t *l, jnode_t *n) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        jnode_t **v = ja_alloc(a, (size_t)cap * sizeof *v);
        if (l->n) memcpy(v, l->v, (size_t)l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = n;
}

static const jtok_t *cur(parser_t *P) { return &P->t.v[P->i]; }
static const jtok_t *next(parser_t *P) {
    const jtok_t *t = &P->t.v[P->i];
    if (t->k != TK_EOF) P->i++;
    return t;
}

static int is_op(const jtok_t *t, const char *op) {
    return t->k == TK_OP && t->n == strlen(op) && memcmp(t->p, op, t->n) == 0;
}
static int is_name(const jtok_t *t, const char *name) {
    return t->k == TK_NAME && strcmp(t->p, name) == 0;
}

static const char *describe(const jtok_t *t) {
    switch (t->k) {
    case TK_EOF: return "end of template";
    case TK_BLOCK_END: return "end of statement block";
    case TK_VAR_END: return "end of print statement";
    case TK_DATA: return "template data";
    case TK_STRING: return "string";
    case TK_INT: case TK_FLOAT: return "number";
    default: return t->p;
    }
}

static void expect_op(parser_t *P, const char *op) {
    const jtok_t *t = cur(P);
    if (!is_op(t, op)) PFAIL(P, t->line, "expected '%s', got '%s'", op, describe(t));
    next(P);
}

static const char *expect_name(parser_t *P) {
    const jtok_t *t = cur(P);
    if (t->k != TK_NAME) PFAIL(P, t->line, "expected a name, got '%s'", describe(t));
    next(P);
    return t->p;
}

static void expect_block_end(parser_t *P) {
    const jtok_t *t = cur(P);
    if (t->k != TK_BLOCK_END) PFAIL(P, t->line, "expected end of statement block, got '%s'", describe(t));
    next(P);
}

static jnode_t *node(parser_t *P, jnode_kind_t k, int line) {
    jnode_t *n = ja_alloc(P->a, sizeof *n);
    n->k = k;
    n->line = line;
    return n;
}

static void enter(parser_t *P, int line) {
    if (++P->depth > MAX_NEST) PFAIL(P, line, "template nested more than %d deep", MAX_NEST);
}

static jnode_t *parse_expr(parser_t *P);
static jnode_t *parse_or(parser_t *P);
static jnode_t *parse_unary(parser_t *P, int with_filter);

/* (args) after the '(' : positional and keyword arguments. */
static void parse_call_args(parser_t *P, jnode_t *n) {
    const char *names[64];
    int nk = 0;
    while (!is_op(cur(P), ")")) {
        if (n->args.n || nk) expect_op(P, ",");
        if (is_op(cur(P), ")")) break;
        const jtok_t *t = cur(P);
        if (t->k == TK_NAME && is_op(&P->t.v[P->i + 1], "=")) {
            if (nk == 64) PFAIL(P, t->line, "too many keyword arguments");
            next(P);
            next(P);
            names[nk++] = t->p;
            jnl_push(P->a, &n->kwvals, parse_expr(P));
        } else {
            if (nk) PFAIL(P, t->line, "positional argument after keyword argument");
            jnl_push(P->a, &n->args, parse_expr(P));
        }
    }
    next(P);
    if (nk) {
        n->kwnames = ja_alloc(P->a, (size_t)nk * sizeof *n->kwnames);
        memcpy(n->kwnames, names, (size_t)nk * sizeof *names);
    }
}

static jnode_t *parse_primary(parser_t *P) {
    const jtok_t *t = next(P);
    jnode_t *n;
    enter(P, t->line);
    switch (t->k) {
    case TK_NAME:
        if (!strcmp(t->p, "true") || !strcmp(t->p, "True") || !strcmp(t->p, "false") ||
            !strcmp(t->p, "False")) {
            n = node(P, JN_LIT, t->line);
            n->lit = jv_bool(t->p[0] == 't' || t->p[0] == 'T');
        } else if (!strcmp(t->p, "none") || !strcmp(t->p, "None")) {
            n = node(P, JN_LIT, t->line);
            n->lit = jv_none();
        } else {
            n = node(P, JN_NAME, t->line);
            n->name = t->p;
        }
        break;
    case TK_STRING: {
        n = node(P, JN_LIT, t->line);
        jbuf_t b;
        jb_init(&b, P->a, 0);
        jb_add(&b, t->p, t->n);
        while (cur(P)->k == TK_STRING) {  /* adjacent literals concatenate */
            jb_add(&b, cur(P)->p, cur(P)->n);
            next(P);
        }
        n->lit = jb_value(&b);
        break;
    }
    case TK_INT: n = node(P, JN_LIT, t->line); n->lit = jv_int(t->i); break;
    case TK_FLOAT: n = node(P, JN_LIT, t->line); n->lit = jv_float(t->f); break;
    case TK_OP:
        if (is_op(t, "(")) {
            if (is_op(cur(P), ")")) {  /* empty tuple */
                next(P);
                n = node(P, JN_LIST, t->line);
                n->neg = 1;  /* a tuple */
                break;
            }
            n = parse_expr(P);
            if (is_op(cur(P), ",")) {  /* a tuple: a list to us */
                jnode_t *tup = node(P, JN_LIST, t->line);
                tup->neg = 1;
                jnl_push(P->a, &tup->args, n);
                while (is_op(cur(P), ",")) {
                    next(P);
                    if (is_op(cur(P), ")")) break;
                    jnl_push(P->a, &tup->args, parse_expr(P));
                }
                n = tup;
            }
            expect_op(P, ")");
            break;
        }
        if (is_op(t, "[")) {
            n = node(P, JN_LIST, t->line);
            while (!is_op(cur(P), "]")) {
                if (n->args.n) expect_op(P, ",");
                if (is_op(cur(P), "]")) break;
                jnl_push(P->a, &n->args, parse_expr(P));
            }
            next(P);
            break;
        }
        if (is_op(t, "{")) {
            n = node(P, JN_DICT, t->line);
            while (!is_op(cur(P), "}")) {
                if (n->args.n) expect_op(P, ",");
                if (is_op(cur(P), "}")) break;
                jnl_push(P->a, &n->args, parse_expr(P));
                expect_op(P, ":");
                jnl_push(P->a, &n->kwvals, parse_expr(P));
            }
            next(P);
            break;
        }
        /* fall through */
    default:
        PFAIL(P, t->line, "unexpected '%s'", describe(t));
    }
    P->depth--;
    return n;
}

static jnode_t *parse_subscript(parser_t *P, jnode_t *obj) {
    const jtok_t *t = next(P);
    if (is_op(t, ".")) {
        const jtok_t *a = next(P);
        jnode_t *n;
        if (a->k == TK_NAME) {
            n = node(P, JN_ATTR, t->line);
            n->name = a->p;
        } else if (a->k == TK_INT) {
            n = node(P, JN_ITEM, t->line);
            n->b = node(P, JN_LIT, t->line);
            n->b->lit = jv_int(a->i);
        } else {
            PFAIL(P, a->line, "expected an attribute name after '.', got '%s'", describe(a));
        }
        n->a = obj;
        return n;
    }
    /* '[' : an index or a slice */
    jnode_t *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    for (;;) {
        if (is_op(cur(P), "]")) break;
        if (is_op(cur(P), ":")) {
            if (++colons > 2) PFAIL(P, cur(P)->line, "too many ':' in a slice");
            next(P);
            continue;
        }
        if (parts[colons]) PFAIL(P, cur(P)->line, "expected ':' or ']' in a subscript");
        parts[colons] = parse_expr(P);
    }
    next(P);
    jnode_t *n;
    if (colons == 0) {
        if (!parts[0]) PFAIL(P, t->line, "empty subscript");
        n = node(P, JN_ITEM, t->line);
        n->b = parts[0];
    } else {
        n = node(P, JN_SLICE, t->line);
        n->b = parts[0];
        n->c = parts[1];
        jnl_push(P->a, &n->args, parts[2]);
    }
    n->a = obj;
    return n;
}

static jnode_t *parse_postfix(parser_t *P, jnode_t *n) {
    for (;;) {
        const jtok_t *t = cur(P);
        if (is_op(t, ".") || is_op(t, "[")) {
            n = parse_subscript(P, n);
        } else if (is_op(t, "(")) {
            next(P);
            jnode_t *c = node(P, JN_CALL, t->line);
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode_t *parse_filter_expr(parser_t *P, jnode_t *n) {
    for (;;) {
        const jtok_t *t = cur(P);
        if (is_op(t, "|")) {
            next(P);
            jnode_t *f = node(P, JN_FILTER, t->line);
            f->name = expect_name(P);
            f->a = n;
            if (!jlib_has_filter(f->name)) PFAIL(P, t->line, "no filter named '%s'", f->name);
            if (is_op(cur(P), "(")) {
                next(P);
                parse_call_args(P, f);
            }
            n = f;
        } else if (is_name(t, "is")) {
            next(P);
            jnode_t *x = node(P, JN_TEST, t->line);
            if (is_name(cur(P), "not")) {
                next(P);
                x->neg = 1;
            }
            const jtok_t *nt = cur(P);
            if (nt->k == TK_NAME && (!strcmp(nt->p, "none") || !strcmp(nt->p, "true") ||
                                     !strcmp(nt->p, "false"))) {
                next(P);
                x->name = nt->p;
            } else {
                x->name = expect_name(P);
            }
            if (!jlib_has_test(x->name)) PFAIL(P, t->line, "no test named '%s'", x->name);
            x->a = n;
            const jtok_t *at = cur(P);
            if (is_op(at, "(")) {
                next(P);
                parse_call_args(P, x);
            } else if ((at->k == TK_NAME || at->k == TK_STRING || at->k == TK_INT ||
                        at->k == TK_FLOAT || is_op(at, "[") || is_op(at, "{")) &&
                       !is_name(at, "else") && !is_name(at, "or") && !is_name(at, "and")) {
                if (is_name(at, "is")) PFAIL(P, at->line, "cannot chain tests with 'is'");
                jnl_push(P->a, &x->args, parse_postfix(P, parse_primary(P)));
            }
            n = x;
        } else if (is_op(t, "(")) {
            n = parse_postfix(P, n);
        } else {
            return n;
        }
    }
}

static jnode_t *parse_unary(parser_t *P, int with_filter) {
    const jtok_t *t = cur(P);
    jnode_t *n;
    enter(P, t->line);
    if (is_op(t, "-") || is_op(t, "+")) {
        next(P);
        n = node(P, JN_UNARY, t->line);
        n->name = t->p;
        n->a = parse_unary(P, 0);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static jnode_t *binary(parser_t *P, const jtok_t *op, jnode_t *l, jnode_t *r) {
    jnode_t *n = node(P, JN_BINARY, op->line);
    n->name = op->p;
    n->a = l;
    n->b = r;
    return n;
}

static jnode_t *parse_pow(parser_t *P) {
    jnode_t *n = parse_unary(P, 1);
    while (is_op(cur(P), "**")) {
        const jtok_t *op = next(P);
        n = binary(P, op, n, parse_unary(P, 1));
    }
    return n;
}

static jnode_t *parse_math2(parser_t *P) {
    jnode_t *n = parse_pow(P);
    while (is_op(cur(P), "*") || is_op(cur(P), "/") || is_op(cur(P), "//") || is_op(cur(P), "%")) {
        const jtok_t *op = next(P);
        n = binary(P, op, n, parse_pow(P));
    }
    return n;
}

static jnode_t *parse_concat(parser_t *P) {
    jnode_t *n = parse_math2(P);
    while (is_op(cur(P), "~")) {
        const jtok_t *op = next(P);
        jnode_t *c = node(P, JN_CONCAT, op->line);
        c->a = n;
        c->b = parse_math2(P);
        n = c;
    }
    return n;
}

static jnode_t *parse_math1(parser_t *P) {
    jnode_t *n = parse_concat(P);
    while (is_op(cur(P), "+") || is_op(cur(P), "-")) {
        const jtok_t *op = next(P);
        n = binary(P, op, n, parse_concat(P));
    }
    return n;
}

static jnode_t *parse_compare(parser_t *P) {
    jnode_t *first = parse_math1(P), *n = NULL;
    const char *ops[32];
    for (;;) {
        const jtok_t *t = cur(P);
        const char *op = NULL;
        if (is_op(t, "==") || is_op(t, "!=") || is_op(t, "<") || is_op(t, ">") || is_op(t, "<=") ||
            is_op(t, ">="))
            op = t->p;
        else if (is_name(t, "in"))
            op = "in";
        else if (is_name(t, "not") && is_name(&P->t.v[P->i + 1], "in"))
            op = "not in";
        if (!op) break;
        next(P);
        if (!strcmp(op, "not in")) next(P);
        if (!n) {
            n = node(P, JN_COMPARE, t->line);
            n->a = first;
        }
        if (n->args.n == 32) PFAIL(P, t->line, "too many chained comparisons");
        ops[n->args.n] = op;
        jnl_push(P->a, &n->args, parse_math1(P));
    }
    if (!n) return first;
    n->ops = ja_alloc(P->a, (size_t)n->args.n * sizeof *n->ops);
    memcpy(n->ops, ops, (size_t)n->args.n * sizeof *ops);
    return n;
}

static jnode_t *parse_not(parser_t *P) {
    const jtok_t *t = cur(P);
    if (is_name(t, "not")) {
        next(P);
        enter(P, t->line);
        jnode_t *n = node(P, JN_NOT, t->line);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

static jnode_t *parse_and(parser_t *P) {
    jnode_t *n = parse_not(P);
    while (is_name(cur(P), "and")) {
        const jtok_t *t = next(P);
        jnode_t *x = node(P, JN_AND, t->line);
        x->a = n;
        x->b = parse_not(P);
        n = x;
    }
    return n;
}

static jnode_t *parse_or(parser_t *P) {
    jnode_t *n = parse_and(P);
    while (is_name(cur(P), "or")) {
        const jtok_t *t = next(P);
        jnode_t *x = node(P, JN_OR, t->line);
        x->a = n;
        x->b = parse_and(P);
        n = x;
    }
    return n;
}

static jnode_t *parse_expr(parser_t *P) {
    enter(P, cur(P)->line);
    jnode_t *n = parse_or(P);
    while (is_name(cur(P), "if")) {
        const jtok_t *t = next(P);
        jnode_t *c = node(P, JN_COND, t->line);
        c->a = n;              /* value when true */
        c->b = parse_or(P);    /* condition */
        if (is_name(cur(P), "else")) {
            next(P);
            c->c = parse_expr(P);
        }
        n = c;
    }
    P->depth--;
    return n;
}

/* ---- statements -------------------------------------------------------------- */
/* Parses statements until a {% tag %} whose name is one of stop (a
 * NULL-terminated list); returns that name, positioned after it. */
static const char *parse_body(parser_t *P, jnlist_t *out, const char *const *stop, int open_line,
                              const char *open_tag);

static void parse_if(parser_t *P, jnode_t *n) {
    static const char *const stop[] = {"elif", "else", "endif", NULL};
    n->a = parse_expr(P);
    expect_block_end(P);
    const char *end = parse_body(P, &n->body, stop, n->line, "if");
    if (!strcmp(end, "elif")) {
        jnode_t *e = node(P, JN_IF, cur(P)->line);
        jnl_push(P->a, &n->orelse, e);
        parse_if(P, e);
        return;
    }
    if (!strcmp(end, "else")) {
        static const char *const stop2[] = {"endif", NULL};
        expect_block_end(P);
        parse_body(P, &n->orelse, stop2, n->line, "if");
    }
    expect_block_end(P);
}

static void parse_for(parser_t *P, jnode_t *n) {
    static const char *const stop[] = {"else", "endfor", NULL};
    n->name = expect_name(P);
    if (is_op(cur(P), ",")) {
        next(P);
        n->name2 = expect_name(P);
    }
    if (!is_name(cur(P), "in")) PFAIL(P, cur(P)->line, "expected 'in' in for loop, got '%s'", describe(cur(P)));
    next(P);
    n->a = parse_or(P);
    if (is_name(cur(P), "if")) {
        next(P);
        n->b = parse_expr(P);
    }
    if (is_name(cur(P), "recursive")) PFAIL(P, cur(P)->line, "recursive loops are not supported");
    expect_block_end(P);
    P->loops++;
    const char *end = parse_body(P, &n->body, stop, n->line, "for");
    P->loops--;
    if (!strcmp(end, "else")) {
        static const char *const stop2[] = {"endfor", NULL};
        expect_block_end(P);
        parse_body(P, &n->orelse, stop2, n->line, "for");
    }
    expect_block_end(P);
}

static void parse_set(parser_t *P, jnode_t *n) {
    n->name = expect_name(P);
    if (is_op(cur(P), ".")) {
        next(P);
        n->name2 = expect_name(P);
    }
    if (is_op(cur(P), ",")) PFAIL(P, cur(P)->line, "tuple assignment is not supported");
    if (is_op(cur(P), "=")) {
        next(P);
        n->a = parse_expr(P);
        expect_block_end(P);
        return;
    }
    if (n->name2) PFAIL(P, n->line, "a block set cannot assign an attribute");
    static const char *const stop[] = {"endset", NULL};
    n->k = JN_SET_BLOCK;
    expect_block_end(P);
    parse_body(P, &n->body, stop, n->line, "set");
    expect_block_end(P);
}

static void parse_macro(parser_t *P, jnode_t *n) {
    static const char *const stop[] = {"endmacro", NULL};
    const char *params[64];
    int np = 0;
    n->name = expect_name(P);
    expect_op(P, "(");
    while (!is_op(cur(P), ")")) {
        if (np) expect_op(P, ",");
        if (np == 64) PFAIL(P, n->line, "too many macro parameters");
        params[np] = expect_name(P);
        if (is_op(cur(P), "=")) {
            next(P);
            jnl_push(P->a, &n->kwvals, parse_expr(P));
        } else if (n->kwvals.n) {
            PFAIL(P, n->line, "parameter without a default after one with a default");
        }
        np++;
    }
    next(P);
    n->kwnames = ja_alloc(P->a, (size_t)(np ? np : 1) * sizeof *n->kwnames);
    memcpy(n->kwnames, params, (size_t)np * sizeof *params);
    n->neg = np;  /* the last kwvals.n parameters have defaults */
    expect_block_end(P);
    int loops = P->loops;
    P->loops = 0;
    P->in_macro++;
    parse_body(P, &n->body, stop, n->line, "macro");
    P->in_macro--;
    P->loops = loops;
    if (cur(P)->k == TK_NAME) next(P);  /* {% endmacro name %} */
    expect_block_end(P);
}

static jnode_t *parse_statement(parser_t *P) {
    const jtok_t *t = cur(P);
    if (t->k != TK_NAME) PFAIL(P, t->line, "expected a tag name, got '%s'", describe(t));
    next(P);
    jnode_t *n;
    if (!strcmp(t->p, "if")) { n = node(P, JN_IF, t->line); parse_if(P, n); }
    else if (!strcmp(t->p, "for")) { n = node(P, JN_FOR, t->line); parse_for(P, n); }
    else if (!strcmp(t->p, "set")) { n = node(P, JN_SET, t->line); parse_set(P, n); }
    else if (!strcmp(t->p, "macro")) { n = node(P, JN_MACRO, t->line); parse_macro(P, n); }
    else if (!strcmp(t->p, "break") || !strcmp(t->p, "continue")) {
        if (!P->loops) PFAIL(P, t->line, "'%s' outside a loop", t->p);
        n = node(P, t->p[0] == 'b' ? JN_BREAK : JN_CONTINUE, t->line);
        expect_block_end(P);
    } else if (!strcmp(t->p, "generation")) {
        static const char *const stop[] = {"endgeneration", NULL};
        n = node(P, JN_BLOCK, t->line);
        expect_block_end(P);
        parse_body(P, &n->body, stop, n->line, "generation");
        expect_block_end(P);
    } else {
        PFAIL(P, t->line, "unknown tag '%s'", t->p);
    }
    return n;
}

static const char *parse_body(parser_t *P, jnlist_t *out, const char *const *stop, int open_line,
                              const char *open_tag) {
    enter(P, open_line);
    for (;;) {
        const jtok_t *t = next(P);
        switch (t->k) {
        case TK_EOF: {
            if (!stop) { P->depth--; return NULL; }
            int last = 0;  /* the closing tag ends every stop list */
            while (stop[last + 1]) last++;
            PFAIL(P, open_line, "unexpected end of template: '%s' is not closed by '%s'", open_tag, stop[last]);
        }
        case TK_DATA: {
            jnode_t *n = node(P, JN_DATA, t->line);
            n->lit = jv_str(t->p, t->n);
            jnl_push(P->a, out, n);
            break;
        }
        case TK_VAR_BEGIN: {
            jnode_t *n = node(P, JN_OUTPUT, t->line);
            n->a = parse_expr(P);
            const jtok_t *e = cur(P);
            if (e->k != TK_VAR_END) PFAIL(P, e->line, "expected end of print statement, got '%s'", describe(e));
            next(P);
            jnl_push(P->a, out, n);
            break;
        }
        case TK_BLOCK_BEGIN: {
            const jtok_t *name = cur(P);
            if (name->k == TK_NAME && stop)
                for (int i = 0; stop[i]; i++)
                    if (!strcmp(name->p, stop[i])) {
                        next(P);
                        P->depth--;
                        return stop[i];
                    }
            if (name->k == TK_NAME && (!strncmp(name->p, "end", 3) || !strcmp(name->p, "elif") ||
                                       !strcmp(name->p, "else")))
                PFAIL(P, name->line, "unexpected '%s'%s%s%s", name->p, stop ? " (inside '" : "",
                      stop ? open_tag : "", stop ? "')" : "");
            jnl_push(P->a, out, parse_statement(P));
            break;
        }
        default:
            PFAIL(P, t->line, "unexpected '%s'", describe(t));
        }
    }
}

jast_t jparse(jarena_t *a, jtoks_t toks) {
    parser_t P = {.a = a, .t = toks};
    jast_t ast = {{0}};
    parse_body(&P, &ast.body, NULL, 1, NULL);
    return ast;
}
