/* jinja_eval.c - runs the AST: statements write to an output buffer,
 * expressions evaluate to values with Python's semantics (what jinja2
 * inherits): `/` is float division, `//` and `%` floor, `and`/`or` return
 * an operand, an undefined name prints as nothing and is false, but using
 * one (attribute, arithmetic, call) is an error naming it.
 *
 * Scopes follow jinja2: a for loop body (and a macro call) opens a scope,
 * so a `set` inside a loop does not leak out of it (namespace() is the
 * way out); `if` opens none. Every statement and loop iteration counts a
 * step; the steps, the evaluation depth, the output size and the arena
 * are bounded (jinja_limits_t), counted by jinja_ctx.c. Also the public
 * entry points. Calls down into the library (jinja_lib.c, jinja_filters.c),
 * the parser and jinja_ctx.c; nothing below calls back. */
#include "jinja_int.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jinja_tmpl {
    jarena_t arena;
    jast_t ast;
};

static void enter(jctx_t *c, int line) {
    if (++c->depth > c->lim.max_depth)
        jctx_fail(c, line, "template nested more than %d deep (recursion?)", c->lim.max_depth);
}

static jframe_t *frame_new(jctx_t *c, jframe_t *parent) {
    jframe_t *f = ja_alloc(c->a, sizeof *f);
    f->vars = jv_dict(c->a, 0).u.d;
    f->parent = parent;
    return f;
}

static jv_t *lookup(jframe_t *f, const char *name) {
    for (; f; f = f->parent) {
        jv_t *v = jd_get(f->vars, name, strlen(name));
        if (v) return v;
    }
    return NULL;
}

static _Noreturn void undefined_use(jctx_t *c, jv_t v, int line) {
    if (v.undef_name) jctx_fail(c, line, "'%s' is undefined", v.undef_name);
    jctx_fail(c, line, "use of an undefined value");
}

/* ---- operators ---------------------------------------------------------------- */
static int is_num(jv_t v) { return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL; }
static double num(jv_t v) { return v.k == JV_FLOAT ? v.u.f : v.k == JV_INT ? (double)v.u.i : v.u.b; }
static long long inum(jv_t v) { return v.k == JV_INT ? v.u.i : v.u.b; }

static jv_t repeat(jctx_t *c, jv_t seq, long long times, int line) {
    if (times < 0) times = 0;
    if (seq.k == JV_STR) {
        jbuf_t b;
        jb_init(&b, c->a, 0);
        for (long long i = 0; i < times; i++) {
            jctx_step(c, line);
            jb_add(&b, seq.u.s.p, seq.u.s.n);
        }
        return jb_value(&b);
    }
    jv_t l = jv_list(c->a, 0);
    for (long long i = 0; i < times; i++)
        for (size_t j = 0; j < seq.u.l->n; j++) {
            jctx_step(c, line);
            jl_push(c->a, l.u.l, seq.u.l->v[j]);
        }
    return l;
}

static jv_t arith(jctx_t *c, const char *op, jv_t a, jv_t b, int line) {
    if (a.k == JV_UNDEF) undefined_use(c, a, line);
    if (b.k == JV_UNDEF) undefined_use(c, b, line);
    if (op[0] == '+' && a.k == JV_STR && b.k == JV_STR) {
        jbuf_t buf;
        jb_init(&buf, c->a, 0);
        jb_add(&buf, a.u.s.p, a.u.s.n);
        jb_add(&buf, b.u.s.p, b.u.s.n);
        return jb_value(&buf);
    }
    if (op[0] == '+' && a.k == JV_LIST && b.k == JV_LIST) {
        jv_t l = jv_list(c->a, a.u.l->n + b.u.l->n);
        for (size_t i = 0; i < a.u.l->n; i++) jl_push(c->a, l.u.l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) jl_push(c->a, l.u.l, b.u.l->v[i]);
        return l;
    }
    if (op[0] == '*' && !op[1] && (a.k == JV_STR || a.k == JV_LIST) && (b.k == JV_INT || b.k == JV_BOOL))
        return repeat(c, a, inum(b), line);
    if (op[0] == '*' && !op[1] && (b.k == JV_STR || b.k == JV_LIST) && (a.k == JV_INT || a.k == JV_BOOL))
        return repeat(c, b, inum(a), line);
    if (!is_num(a) || !is_num(b))
        jctx_fail(c, line, "unsupported operand types for %s: '%s' and '%s'", op, jv_type_name(a),
                  jv_type_name(b));
    int ints = a.k != JV_FLOAT && b.k != JV_FLOAT;
    long long x = inum(a), y = inum(b), r;
    double fx = num(a), fy = num(b);
    if (!strcmp(op, "/")) {
        if (fy == 0) jctx_fail(c, line, "division by zero");
        return jv_float(fx / fy);
    }
    if (!strcmp(op, "//") || !strcmp(op, "%")) {
        if (ints ? y == 0 : fy == 0) jctx_fail(c, line, "%s by zero", op[0] == '%' ? "modulo" : "division");
        if (ints) {
            if (x == LLONG_MIN && y == -1) jctx_fail(c, line, "integer overflow");
            long long q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) { q--; m += y; }
            return jv_int(op[0] == '%' ? m : q);
        }
        double m = fmod(fx, fy);  /* Python's float divmod */
        if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
        if (op[0] == '%') return jv_float(m);
        double d = (fx - m) / fy, q = floor(d);
        if (d - q > 0.5) q += 1.0;
        return jv_float(q);
    }
    if (!strcmp(op, "**")) {
        if (ints && y >= 0) {
            long long p = 1;
            for (long long i = 0; i < y; i++) {
                if (__builtin_mul_overflow(p, x, &p)) jctx_fail(c, line, "integer overflow");
                if (p == 0 || p == 1) break;
                jctx_step(c, line);
            }
            return jv_int(p);
        }
        return jv_float(pow(fx, fy));
    }
    if (ints) {
        int ovf = op[0] == '+' ? __builtin_add_overflow(x, y, &r)
                : op[0] == '-' ? __builtin_sub_overflow(x, y, &r)
                               : __builtin_mul_overflow(x, y, &r);
        if (ovf) jctx_fail(c, line, "integer overflow");
        return jv_int(r);
    }
    return jv_float(op[0] == '+' ? fx + fy : op[0] == '-' ? fx - fy : fx * fy);
}

static int contains(jctx_t *c, jv_t item, jv_t cont, int line) {
    switch (cont.k) {
    case JV_STR:
        if (item.k != JV_STR)
            jctx_fail(c, line, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
        if (item.u.s.n == 0) return 1;
        return memmem(cont.u.s.p, cont.u.s.n, item.u.s.p, item.u.s.n) != NULL;  /* linear time */
    case JV_LIST:
        for (size_t i = 0; i < cont.u.l->n; i++)
            if (jv_equal(item, cont.u.l->v[i])) return 1;
        return 0;
    case JV_DICT: case JV_NS: return jd_lookup(cont.u.d, item) != NULL;
    case JV_UNDEF: return 0;
    default: jctx_fail(c, line, "argument of type '%s' is not iterable", jv_type_name(cont));
    }
}

static int order(jctx_t *c, const char *op, jv_t a, jv_t b, int line);

/* Python's list ordering: the first unequal pair decides, else the length. */
static int list_cmp(jctx_t *c, jv_t a, jv_t b, int line) {
    for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
        jctx_step(c, line);
        if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
        return order(c, "<", a.u.l->v[i], b.u.l->v[i], line) ? -1 : 1;
    }
    return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
}

static int order(jctx_t *c, const char *op, jv_t a, jv_t b, int line) {
    int cmp;
    if (a.k == JV_LIST && b.k == JV_LIST) {
        enter(c, line);
        cmp = list_cmp(c, a, b, line);
        c->depth--;
    } else if (is_num(a) && is_num(b)) {
        if (a.k != JV_FLOAT && b.k != JV_FLOAT) cmp = (inum(a) > inum(b)) - (inum(a) < inum(b));
        else cmp = (num(a) > num(b)) - (num(a) < num(b));
    } else if (a.k == JV_STR && b.k == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        cmp = memcmp(a.u.s.p, b.u.s.p, n);
        if (!cmp) cmp = (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
    } else {
        jctx_fail(c, line, "'%s' not supported between instances of '%s' and '%s'", op, jv_type_name(a),
                  jv_type_name(b));
    }
    if (!strcmp(op, "<")) return cmp < 0;
    if (!strcmp(op, ">")) return cmp > 0;
    if (!strcmp(op, "<=")) return cmp <= 0;
    return cmp >= 0;
}

static int compare(jctx_t *c, const char *op, jv_t a, jv_t b, int line) {
    if (!strcmp(op, "==")) return jv_equal(a, b);
    if (!strcmp(op, "!=")) return !jv_equal(a, b);
    if (!strcmp(op, "in")) return contains(c, a, b, line);
    if (!strcmp(op, "not in")) return !contains(c, a, b, line);
    return order(c, op, a, b, line);
}

/* Python slice indices for a sequence of length n. */
static void slice_bounds(jctx_t *c, jv_t start, jv_t stop, jv_t step, long long n, long long *s,
                         long long *e, long long *st, int line) {
    jv_t in[3] = {start, stop, step};
    for (int i = 0; i < 3; i++)
        if (in[i].k != JV_UNDEF && in[i].k != JV_NONE && in[i].k != JV_INT && in[i].k != JV_BOOL)
            jctx_fail(c, line, "slice indices must be integers or None");
    *st = step.k == JV_UNDEF || step.k == JV_NONE ? 1 : inum(step);
    if (*st == 0) jctx_fail(c, line, "slice step cannot be zero");
    long long lo = *st > 0 ? 0 : -1, hi = *st > 0 ? n : n - 1;
    long long v[2];
    jv_t b[2] = {start, stop};
    for (int i = 0; i < 2; i++) {
        if (b[i].k == JV_UNDEF || b[i].k == JV_NONE) {
            v[i] = (*st > 0) == (i == 0) ? lo : hi;
            continue;
        }
        long long x = inum(b[i]);
        if (x < 0) x += n;
        if (x < lo) x = lo;
        if (x > hi) x = hi;
        v[i] = x;
    }
    *s = v[0];
    *e = v[1];
}

static jv_t do_slice(jctx_t *c, jv_t obj, jv_t start, jv_t stop, jv_t step, int line) {
    if (obj.k == JV_UNDEF) undefined_use(c, obj, line);
    if (obj.k != JV_LIST && obj.k != JV_STR)  /* jinja2 slices with Python's [] directly */
        jctx_fail(c, line, "'%s' object is not subscriptable", jv_type_name(obj));
    long long n = obj.k == JV_LIST ? (long long)obj.u.l->n : (long long)ju_len(obj.u.s.p, obj.u.s.n);
    long long s, e, st;
    slice_bounds(c, start, stop, step, n, &s, &e, &st, line);
    if (obj.k == JV_STR) jctx_work(c, obj.u.s.n, line);
    if (obj.k == JV_STR && st == 1) {  /* a substring, no copy */
        if (e <= s) return jv_str("", 0);
        size_t bo = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)s), eo = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)e);
        return jv_str(obj.u.s.p + bo, eo - bo);
    }
    jlist_t *items = jv_iter(c, obj, line);
    jv_t l = jv_list(c->a, 0);
    for (long long i = s; st > 0 ? i < e : i > e; i += st) jl_push(c->a, l.u.l, items->v[i]);
    if (obj.k == JV_LIST) return l;
    jbuf_t b;
    jb_init(&b, c->a, 0);
    for (size_t i = 0; i < l.u.l->n; i++) jb_add(&b, l.u.l->v[i].u.s.p, l.u.l->v[i].u.s.n);
    return jb_value(&b);
}

static jv_t get_item(jctx_t *c, jv_t obj, jv_t key, int line) {
    switch (obj.k) {
    case JV_UNDEF: undefined_use(c, obj, line);
    case JV_DICT: case JV_NS: {
        jv_t *v = jd_lookup(obj.u.d, key);
        if (v) return *v;
        return jv_undef(key.k == JV_STR ? ja_strdup(c->a, key.u.s.p, key.u.s.n) : "item");
    }
    case JV_LIST: case JV_STR: {
        if (key.k != JV_INT && key.k != JV_BOOL) return jv_undef("item");
        if (obj.k == JV_STR) jctx_work(c, obj.u.s.n, line);
        long long n = obj.k == JV_LIST ? (long long)obj.u.l->n : (long long)ju_len(obj.u.s.p, obj.u.s.n);
        long long i = inum(key);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return jv_undef("index");
        if (obj.k == JV_LIST) return obj.u.l->v[i];
        size_t o = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)i),
               e = ju_offset(obj.u.s.p, obj.u.s.n, (size_t)i + 1);
        return jv_str(obj.u.s.p + o, e - o);
    }
    default: return jv_undef("item");
    }
}

/* ---- calls ---------------------------------------------------------------------- */
static void eval_args(jctx_t *c, jframe_t *f, const jnode_t *n, jargs_t *out) {
    out->npos = n->args.n;
    out->nkw = n->kwvals.n;
    out->pos = ja_alloc(c->a, (size_t)(out->npos + 1) * sizeof(jv_t));
    out->kwv = ja_alloc(c->a, (size_t)(out->nkw + 1) * sizeof(jv_t));
    out->kwn = n->kwnames;
    for (int i = 0; i < out->npos; i++) out->pos[i] = jeval(c, f, n->args.v[i]);
    for (int i = 0; i < out->nkw; i++) out->kwv[i] = jeval(c, f, n->kwvals.v[i]);
}

static void exec_body(jctx_t *c, jframe_t *f, const jnlist_t *body, jbuf_t *out);

jv_t jcall_macro(jctx_t *c, jframe_t *f, const jnode_t *m, jv_t *args, int nargs, const char **kwn,
                 jv_t *kwv, int nkw, int line) {
    (void)f;
    int np = m->neg, ndef = m->kwvals.n;
    if (nargs > np) jctx_fail(c, line, "macro '%s' takes %d arguments, got %d", m->name, np, nargs);
    enter(c, line);
    jframe_t *mf = frame_new(c, c->globals);
    for (int i = 0; i < np; i++) {
        jv_t v = jv_undef(m->kwnames[i]);
        int given = i < nargs;
        if (given) v = args[i];
        for (int k = 0; k < nkw; k++)
            if (!strcmp(kwn[k], m->kwnames[i])) {
                if (given) jctx_fail(c, line, "macro '%s' got '%s' twice", m->name, kwn[k]);
                v = kwv[k];
                given = 1;
            }
        if (!given && i >= np - ndef) v = jeval(c, mf, m->kwvals.v[i - (np - ndef)]);
        jd_setc(c->a, mf->vars, m->kwnames[i], v);
    }
    for (int k = 0; k < nkw; k++) {
        int known = 0;
        for (int i = 0; i < np; i++) known |= !strcmp(kwn[k], m->kwnames[i]);
        if (!known) jctx_fail(c, line, "macro '%s' has no parameter '%s'", m->name, kwn[k]);
    }
    jbuf_t b;
    jb_init(&b, c->a, c->lim.max_output);
    b.line = line;
    exec_body(c, mf, &m->body, &b);
    c->depth--;
    return jb_value(&b);
}

static jv_t eval_call(jctx_t *c, jframe_t *f, const jnode_t *n) {
    jargs_t args;
    const jnode_t *callee = n->a;
    if (callee->k == JN_ATTR) {
        jv_t obj = jeval(c, f, callee->a);
        if (obj.k == JV_UNDEF) undefined_use(c, obj, n->line);
        jv_t *member = (obj.k == JV_DICT || obj.k == JV_NS) ? jd_get(obj.u.d, callee->name, strlen(callee->name)) : NULL;
        eval_args(c, f, n, &args);
        if (member && member->k == JV_MACRO)
            return jcall_macro(c, f, member->u.m, args.pos, args.npos, args.kwn, args.kwv, args.nkw, n->line);
        jv_t out;
        if (jlib_method(c, obj, callee->name, &args, &out, n->line)) return out;
        jctx_fail(c, n->line, "'%s' object has no method '%s'", jv_type_name(obj), callee->name);
    }
    jv_t fn = jeval(c, f, callee);
    eval_args(c, f, n, &args);
    if (fn.k == JV_MACRO)
        return jcall_macro(c, f, fn.u.m, args.pos, args.npos, args.kwn, args.kwv, args.nkw, n->line);
    if (fn.k == JV_FUNC) {
        jv_t out;
        if (jlib_global(c, fn.u.s.p, &args, &out, n->line)) return out;
    }
    if (fn.k == JV_UNDEF) undefined_use(c, fn, n->line);
    jctx_fail(c, n->line, "'%s' object is not callable", jv_type_name(fn));
}

/* ---- expressions ------------------------------------------------------------------ */
static jv_t eval_inner(jctx_t *c, jframe_t *f, const jnode_t *n) {
    switch (n->k) {
    case JN_LIT: return n->lit;
    case JN_NAME: {
        jv_t *v = lookup(f, n->name);
        if (v) return *v;
        if (jlib_is_global(n->name)) {
            jv_t fn = {.k = JV_FUNC};
            fn.u.s.p = n->name;
            fn.u.s.n = strlen(n->name);
            return fn;
        }
        return jv_undef(n->name);
    }
    case JN_LIST: {
        jv_t l = jv_list(c->a, (size_t)n->args.n);
        l.u.l->tuple = n->neg;
        for (int i = 0; i < n->args.n; i++) jl_push(c->a, l.u.l, jeval(c, f, n->args.v[i]));
        return l;
    }
    case JN_DICT: {
        jv_t d = jv_dict(c->a, (size_t)n->args.n);
        for (int i = 0; i < n->args.n; i++)
            jd_set(c->a, d.u.d, jeval(c, f, n->args.v[i]), jeval(c, f, n->kwvals.v[i]));
        return d;
    }
    case JN_ATTR: {
        jv_t obj = jeval(c, f, n->a);
        if (obj.k == JV_UNDEF) undefined_use(c, obj, n->line);
        if (obj.k == JV_DICT || obj.k == JV_NS) {
            jv_t *v = jd_get(obj.u.d, n->name, strlen(n->name));
            if (v) return *v;
        }
        return jv_undef(n->name);
    }
    case JN_ITEM: return get_item(c, jeval(c, f, n->a), jeval(c, f, n->b), n->line);
    case JN_SLICE: {
        jv_t obj = jeval(c, f, n->a);
        jv_t s = n->b ? jeval(c, f, n->b) : jv_none(), e = n->c ? jeval(c, f, n->c) : jv_none();
        jv_t st = n->args.v[0] ? jeval(c, f, n->args.v[0]) : jv_none();
        return do_slice(c, obj, s, e, st, n->line);
    }
    case JN_CALL: return eval_call(c, f, n);
    case JN_FILTER: {
        jv_t v = jeval(c, f, n->a);
        jargs_t args;
        eval_args(c, f, n, &args);
        return jlib_filter(c, f, n->name, v, &args, n->line);
    }
    case JN_TEST: {
        jv_t v = jeval(c, f, n->a);
        jargs_t args;
        eval_args(c, f, n, &args);
        return jv_bool(jlib_test(c, f, n->name, v, &args, n->line) != n->neg);
    }
    case JN_UNARY: {
        jv_t v = jeval(c, f, n->a);
        if (v.k == JV_UNDEF) undefined_use(c, v, n->line);
        if (!is_num(v)) jctx_fail(c, n->line, "bad operand type for unary %s: '%s'", n->name, jv_type_name(v));
        if (n->name[0] == '+') return v.k == JV_BOOL ? jv_int(v.u.b) : v;
        if (v.k == JV_FLOAT) return jv_float(-v.u.f);
        if (inum(v) == LLONG_MIN) jctx_fail(c, n->line, "integer overflow");
        return jv_int(-inum(v));
    }
    case JN_BINARY: return arith(c, n->name, jeval(c, f, n->a), jeval(c, f, n->b), n->line);
    case JN_CONCAT: {
        jbuf_t b;
        jb_init(&b, c->a, 0);
        jv_write_str(&b, jeval(c, f, n->a));
        jv_write_str(&b, jeval(c, f, n->b));
        return jb_value(&b);
    }
    case JN_AND: {
        jv_t a = jeval(c, f, n->a);
        return jv_truthy(a) ? jeval(c, f, n->b) : a;
    }
    case JN_OR: {
        jv_t a = jeval(c, f, n->a);
        return jv_truthy(a) ? a : jeval(c, f, n->b);
    }
    case JN_NOT: return jv_bool(!jv_truthy(jeval(c, f, n->a)));
    case JN_COMPARE: {
        jv_t left = jeval(c, f, n->a);
        for (int i = 0; i < n->args.n; i++) {
            jv_t right = jeval(c, f, n->args.v[i]);
            if (!compare(c, n->ops[i], left, right, n->line)) return jv_bool(0);
            left = right;
        }
        return jv_bool(1);
    }
    case JN_COND:
        if (jv_truthy(jeval(c, f, n->b))) return jeval(c, f, n->a);
        return n->c ? jeval(c, f, n->c) : jv_undef("else branch");
    default: jctx_fail(c, n->line, "statement used as an expression");
    }
}

jv_t jeval(jctx_t *c, jframe_t *f, const jnode_t *n) {
    enter(c, n->line);
    jv_t v = eval_inner(c, f, n);
    c->depth--;
    return v;
}

/* ---- statements ------------------------------------------------------------------- */
static void bind_target(jctx_t *c, jframe_t *f, const jnode_t *n, jv_t item) {
    if (!n->name2) {
        jd_setc(c->a, f->vars, n->name, item);
        return;
    }
    jlist_t *pair = item.k == JV_LIST ? item.u.l : NULL;
    if (!pair || pair->n != 2)
        jctx_fail(c, n->line, "cannot unpack %s into '%s, %s'", jv_type_name(item), n->name, n->name2);
    jd_setc(c->a, f->vars, n->name, pair->v[0]);
    jd_setc(c->a, f->vars, n->name2, pair->v[1]);
}

static void exec_for(jctx_t *c, jframe_t *f, const jnode_t *n, jbuf_t *out) {
    jv_t seq = jeval(c, f, n->a);
    if (seq.k == JV_NONE) jctx_fail(c, n->line, "'NoneType' object is not iterable");
    jlist_t *items = jv_iter(c, seq, n->line);
    jframe_t *lf = frame_new(c, f);
    if (n->b) {  /* for x in xs if cond: filter first, so loop.length counts the kept */
        jv_t kept = jv_list(c->a, 0);
        for (size_t i = 0; i < items->n; i++) {
            jctx_step(c, n->line);
            bind_target(c, lf, n, items->v[i]);
            if (jv_truthy(jeval(c, lf, n->b))) jl_push(c->a, kept.u.l, items->v[i]);
        }
        items = kept.u.l;
    }
    size_t len = items->n;  /* a snapshot: appending inside the loop does not extend it */
    if (!len) {
        exec_body(c, f, &n->orelse, out);
        return;
    }
    jv_t loop = jv_dict(c->a, 10);  /* one object, updated in place (as jinja2's) */
    for (size_t i = 0; i < len; i++) {
        jctx_step(c, n->line);
        jd_setc(c->a, loop.u.d, "index", jv_int((long long)i + 1));
        jd_setc(c->a, loop.u.d, "index0", jv_int((long long)i));
        jd_setc(c->a, loop.u.d, "revindex", jv_int((long long)(len - i)));
        jd_setc(c->a, loop.u.d, "revindex0", jv_int((long long)(len - i - 1)));
        jd_setc(c->a, loop.u.d, "first", jv_bool(i == 0));
        jd_setc(c->a, loop.u.d, "last", jv_bool(i + 1 == len));
        jd_setc(c->a, loop.u.d, "length", jv_int((long long)len));
        jd_setc(c->a, loop.u.d, "previtem", i ? items->v[i - 1] : jv_undef("previtem"));
        jd_setc(c->a, loop.u.d, "nextitem", i + 1 < len ? items->v[i + 1] : jv_undef("nextitem"));
        jd_setc(c->a, lf->vars, "loop", loop);
        bind_target(c, lf, n, items->v[i]);
        exec_body(c, lf, &n->body, out);
        if (c->brk == 1) { c->brk = 0; break; }
        c->brk = 0;
    }
}

static void exec_stmt(jctx_t *c, jframe_t *f, const jnode_t *n, jbuf_t *out) {
    jctx_step(c, n->line);
    out->line = n->line;
    switch (n->k) {
    case JN_DATA: jb_add(out, n->lit.u.s.p, n->lit.u.s.n); return;
    case JN_OUTPUT: jv_write_str(out, jeval(c, f, n->a)); return;
    case JN_IF:
        exec_body(c, f, jv_truthy(jeval(c, f, n->a)) ? &n->body : &n->orelse, out);
        return;
    case JN_FOR: exec_for(c, f, n, out); return;
    case JN_SET: {
        jv_t v = jeval(c, f, n->a);
        if (!n->name2) {
            jd_setc(c->a, f->vars, n->name, v);
            return;
        }
        jv_t *target = lookup(f, n->name);
        if (!target || target->k != JV_NS)
            jctx_fail(c, n->line, "cannot assign attribute '%s' on '%s': not a namespace()", n->name2, n->name);
        jd_setc(c->a, target->u.d, n->name2, v);
        return;
    }
    case JN_SET_BLOCK: {
        jbuf_t b;
        jb_init(&b, c->a, c->lim.max_output);
        exec_body(c, f, &n->body, &b);
        jd_setc(c->a, f->vars, n->name, jb_value(&b));
        return;
    }
    case JN_MACRO: {
        jv_t m = {.k = JV_MACRO};
        m.u.m = n;
        jd_setc(c->a, f->vars, n->name, m);
        return;
    }
    case JN_BREAK: c->brk = 1; return;
    case JN_CONTINUE: c->brk = 2; return;
    case JN_BLOCK: exec_body(c, f, &n->body, out); return;
    default: jctx_fail(c, n->line, "expression used as a statement");
    }
}

static void exec_body(jctx_t *c, jframe_t *f, const jnlist_t *body, jbuf_t *out) {
    enter(c, body->n ? body->v[0]->line : 0);
    for (int i = 0; i < body->n && !c->brk; i++) exec_stmt(c, f, body->v[i], out);
    c->depth--;
}

/* ---- entry points -------------------------------------------------------------------- */
jinja_limits_t jinja_default_limits(void) {
    return (jinja_limits_t){.max_output = 16u << 20, .max_memory = 256u << 20, .max_steps = 10000000,
                            .max_depth = 512};
}

jinja_tmpl_t *jinja_parse(const char *src, size_t len, jinja_error_t *err) {
    memset(err, 0, sizeof *err);
    jinja_tmpl_t *volatile t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return NULL;
    }
    jmp_buf fail;
    t->arena.cap = 64u << 20;
    t->arena.fail = &fail;
    t->arena.err = err;
    if (setjmp(fail)) {
        ja_free(&t->arena);
        free(t);
        return NULL;
    }
    t->ast = jparse(&t->arena, jlex(&t->arena, src, len));
    t->arena.fail = NULL;
    t->arena.err = NULL;
    return t;
}

void jinja_free(jinja_tmpl_t *t) {
    if (!t) return;
    ja_free(&t->arena);
    free(t);
}

char *jinja_render(const jinja_tmpl_t *t, json_t *vars, const jinja_limits_t *lim, size_t *out_len,
                   jinja_error_t *err) {
    memset(err, 0, sizeof *err);
    jmp_buf fail;
    jarena_t arena = {.fail = &fail, .err = err};
    jctx_t c = {.a = &arena, .err = err, .fail = &fail};
    c.lim = lim ? *lim : jinja_default_limits();
    arena.cap = c.lim.max_memory;
    if (setjmp(fail)) {
        ja_free(&arena);
        return NULL;
    }
    c.globals = frame_new(&c, NULL);
    if (vars && json_is_object(vars)) {
        const char *k;
        json_t *v;
        json_object_foreach(vars, k, v) jd_setc(&arena, c.globals->vars, k, jv_from_json(&arena, v));
    }
    jbuf_t out;
    jb_init(&out, &arena, c.lim.max_output);
    exec_body(&c, c.globals, &t->ast.body, &out);
    char *res = malloc(out.n + 1);
    if (!res) {
        ja_free(&arena);
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return NULL;
    }
    if (out.n) memcpy(res, out.p, out.n);
    res[out.n] = 0;
    if (out_len) *out_len = out.n;
    ja_free(&arena);
    return res;
}
