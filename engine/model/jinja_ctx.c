/* jinja_ctx.c - the evaluation context's bottom layer: failing with a
 * located error, the step budget (jinja_limits_t.max_steps) and the
 * iterable view of a value. The library (jinja_lib.c, jinja_filters.c)
 * and the evaluator (jinja_eval.c) all call these, and they call only the
 * value and lexer layers, so the dependency runs one way: ctx below lib
 * and filters below eval. */
#include "jinja_int.h"

#include <stdarg.h>
#include <stdio.h>

void jctx_fail(jctx_t *c, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jx_fail(c->fail, c->err, line, "%s", msg);
}

void jctx_step(jctx_t *c, int line) {
    if (++c->steps > c->lim.max_steps)
        jctx_fail(c, line, "template ran more than %ld steps (a loop too long?)", c->lim.max_steps);
}

void jctx_work(jctx_t *c, size_t bytes, int line) {
    c->steps += (long)(bytes >> 12);  /* scanning 4 KiB counts as a step */
    jctx_step(c, line);
}

jlist_t *jv_iter(jctx_t *c, jv_t v, int line) {
    switch (v.k) {
    case JV_LIST: return v.u.l;
    case JV_UNDEF: return jv_list(c->a, 0).u.l;
    case JV_DICT: {
        jv_t l = jv_list(c->a, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) jl_push(c->a, l.u.l, v.u.d->key[i]);
        return l.u.l;
    }
    case JV_STR: {
        jv_t l = jv_list(c->a, v.u.s.n);
        const char *s = v.u.s.p;
        for (size_t i = 0; i < v.u.s.n;) {
            size_t j = i + 1;
            while (j < v.u.s.n && ((unsigned char)s[j] & 0xC0) == 0x80) j++;
            jl_push(c->a, l.u.l, jv_str(s + i, j - i));
            i = j;
        }
        return l.u.l;
    }
    default: jctx_fail(c, line, "'%s' object is not iterable", jv_type_name(v));
    }
}
