/* jinja_filters.c - the filters (x | name(args)) and global functions
 * (range, namespace, dict, raise_exception, strftime_now) of the Jinja
 * interpreter, with jinja2's argument names and defaults. selectattr,
 * rejectattr, select, reject and map return lists (jinja2 returns
 * generators, which templates pass on to list, join, length, first or a
 * for loop, where the two agree). range() is capped at 100000 items as
 * jinja2's sandbox caps it. */
#include "jinja_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* v.a.b (dict keys; integer parts index lists), undefined when missing. */
static jv_t get_path(jctx_t *c, jv_t v, jv_t attr, int line) {
    jl_need_str(c, attr, "attribute", line);
    const char *p = attr.u.s.p, *end = p + attr.u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        char *e;
        char *part = ja_strdup(c->a, p, n);
        long long idx = strtoll(part, &e, 10);
        if (v.k == JV_DICT || v.k == JV_NS) {
            jv_t *x = jd_get(v.u.d, p, n);
            v = x ? *x : jv_undef(part);
        } else if (v.k == JV_LIST && n && !*e && idx >= 0 && (size_t)idx < v.u.l->n) {
            v = v.u.l->v[idx];
        } else {
            return jv_undef(part);
        }
        if (!dot) break;
        p = dot + 1;
    }
    return v;
}

/* select/reject(test, args...) and selectattr/rejectattr(attr, test, args...). */
static jv_t select_items(jctx_t *c, jframe_t *f, jv_t seq, jargs_t *a, int by_attr, int keep, int line) {
    if (a->nkw) jctx_fail(c, line, "select filters take no keyword arguments");
    int skip = by_attr ? 1 : 0;
    if (by_attr && a->npos < 1) jctx_fail(c, line, "selectattr/rejectattr need an attribute name");
    const char *test = NULL;
    if (a->npos > skip) {
        jl_need_str(c, a->pos[skip], "test name", line);
        test = a->pos[skip].u.s.p;
        if (!jlib_has_test(test)) jctx_fail(c, line, "no test named '%s'", test);
    }
    jargs_t targs = {.pos = a->pos + skip + 1, .npos = a->npos > skip + 1 ? a->npos - skip - 1 : 0};
    jlist_t *items = jv_iter(c, seq, line);
    jv_t out = jv_list(c->a, 0);
    for (size_t i = 0; i < items->n; i++) {
        jctx_step(c, line);
        jv_t v = by_attr ? get_path(c, items->v[i], a->pos[0], line) : items->v[i];
        int ok = test ? jlib_test(c, f, test, v, &targs, line) : jv_truthy(v);
        if (ok == keep) jl_push(c->a, out.u.l, items->v[i]);
    }
    return out;
}

static jv_t map_items(jctx_t *c, jframe_t *f, jv_t seq, jargs_t *a, int line) {
    jlist_t *items = jv_iter(c, seq, line);
    jv_t out = jv_list(c->a, items->n);
    jv_t *attr = jl_arg(a, -1, "attribute");
    if (attr) {
        jl_check_args(c, a, "map", 0, "attribute,default", line);
        jv_t *def = jl_arg(a, -1, "default");
        for (size_t i = 0; i < items->n; i++) {
            jv_t v = get_path(c, items->v[i], *attr, line);
            jl_push(c->a, out.u.l, v.k == JV_UNDEF && def ? *def : v);
        }
        return out;
    }
    if (a->npos < 1) jctx_fail(c, line, "map needs a filter name or attribute=");
    jl_need_str(c, a->pos[0], "map", line);
    const char *name = a->pos[0].u.s.p;
    if (!jlib_has_filter(name)) jctx_fail(c, line, "no filter named '%s'", name);
    jargs_t fargs = *a;
    fargs.pos++;
    fargs.npos--;
    for (size_t i = 0; i < items->n; i++) {
        jctx_step(c, line);
        jl_push(c->a, out.u.l, jlib_filter(c, f, name, items->v[i], &fargs, line));
    }
    return out;
}

/* jinja2's indent(): continuation lines get the prefix; blank lines only with blank=True. */
static jv_t indent(jctx_t *c, jv_t s, jargs_t *a, int line) {
    jl_check_args(c, a, "indent", 3, "width,first,blank", line);
    jv_t *w = jl_arg(a, 0, "width"), *first = jl_arg(a, 1, "first"), *blank = jl_arg(a, 2, "blank");
    jbuf_t pre, b;
    jb_init(&pre, c->a, 0);
    jb_init(&b, c->a, 0);
    if (w && w->k == JV_STR) jb_add(&pre, w->u.s.p, w->u.s.n);
    else for (long long i = jl_need_int(c, w, 4, "indent", line); i > 0; i--) jb_addc(&pre, " ");
    if (first && jv_truthy(*first)) jb_add(&b, pre.p, pre.n);
    /* splitlines of s + "\n": the lines of s, a trailing newline adding none */
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    int lineno = 0;
    while (p < end) {
        const char *nl = p;
        while (nl < end && *nl != '\n' && *nl != '\r') nl++;
        size_t len = (size_t)(nl - p);
        if (lineno) {
            jb_addc(&b, "\n");
            if (len || (blank && jv_truthy(*blank))) jb_add(&b, pre.p, pre.n);
        }
        jb_add(&b, p, len);
        lineno++;
        if (nl < end && *nl == '\r' && nl + 1 < end && nl[1] == '\n') nl++;
        p = nl + 1;
    }
    return jb_value(&b);
}

/* Python's round(x, n): round half to even on the exact binary value. */
static jv_t do_round(jctx_t *c, jv_t v, jargs_t *a, int line) {
    jl_check_args(c, a, "round", 2, "precision,method", line);
    if (v.k != JV_INT && v.k != JV_FLOAT && v.k != JV_BOOL)
        jctx_fail(c, line, "round expects a number, got %s", jv_type_name(v));
    double x = v.k == JV_FLOAT ? v.u.f : v.k == JV_INT ? (double)v.u.i : v.u.b;
    long long p = jl_need_int(c, jl_arg(a, 0, "precision"), 0, "round", line);
    jv_t *m = jl_arg(a, 1, "method");
    double scale = pow(10, (double)p);
    if (m && !jv_is_str(*m, "common")) {
        if (jv_is_str(*m, "ceil")) return jv_float(ceil(x * scale) / scale);
        if (jv_is_str(*m, "floor")) return jv_float(floor(x * scale) / scale);
        jctx_fail(c, line, "round: method must be common, ceil or floor");
    }
    if (v.k != JV_FLOAT) {  /* Python's round(int, n) stays an int */
        long long i = v.k == JV_INT ? v.u.i : v.u.b;
        if (p >= 0) return jv_int(i);
        if (p < -18) return jv_int(0);
        long long unit = 1;
        for (long long k = 0; k < -p; k++) unit *= 10;
        long long q = i / unit, r = i % unit;
        if (r < 0) { q--; r += unit; }
        if (2 * r > unit || (2 * r == unit && (q & 1))) q++;  /* half to even */
        long long out;
        if (__builtin_mul_overflow(q, unit, &out)) jctx_fail(c, line, "integer overflow");
        return jv_int(out);
    }
    if (!isfinite(x) || p > 300 || p < -300) return jv_float(x);
    char tmp[400];
    if (p >= 0) {
        snprintf(tmp, sizeof tmp, "%.*f", (int)p, x);  /* correctly rounded, ties to even */
        return jv_float(strtod(tmp, NULL));
    }
    return jv_float(nearbyint(x / scale) * scale);
}

static int cmp_values(jctx_t *c, jv_t x, jv_t y, int line) {
    if (x.k == JV_STR && y.k == JV_STR) {
        size_t n = x.u.s.n < y.u.s.n ? x.u.s.n : y.u.s.n;
        int r = memcmp(x.u.s.p, y.u.s.p, n);
        return r ? r : (x.u.s.n > y.u.s.n) - (x.u.s.n < y.u.s.n);
    }
    int xn = x.k == JV_INT || x.k == JV_FLOAT || x.k == JV_BOOL, yn = y.k == JV_INT || y.k == JV_FLOAT || y.k == JV_BOOL;
    if (!xn || !yn) jctx_fail(c, line, "cannot compare %s with %s", jv_type_name(x), jv_type_name(y));
    double a = x.k == JV_FLOAT ? x.u.f : x.k == JV_INT ? (double)x.u.i : x.u.b;
    double b = y.k == JV_FLOAT ? y.u.f : y.k == JV_INT ? (double)y.u.i : y.u.b;
    return (a > b) - (a < b);
}

/* sort/min/max key: the attribute, lower-cased strings unless case_sensitive. */
static jv_t sort_key(jctx_t *c, jv_t v, jv_t *attr, int cs, int line) {
    if (attr && attr->k != JV_NONE) v = get_path(c, v, *attr, line);
    return v.k == JV_STR && !cs ? jl_recase(c, v, 'l') : v;
}

static jv_t do_sort(jctx_t *c, jv_t seq, jargs_t *a, int line) {
    jl_check_args(c, a, "sort", 3, "reverse,case_sensitive,attribute", line);
    jv_t *rev = jl_arg(a, 0, "reverse"), *cs = jl_arg(a, 1, "case_sensitive"), *attr = jl_arg(a, 2, "attribute");
    jlist_t *items = jv_iter(c, seq, line);
    jv_t out = jv_list(c->a, items->n);
    jv_t *keys = ja_alloc(c->a, (items->n + 1) * sizeof *keys);
    for (size_t i = 0; i < items->n; i++) {
        keys[i] = sort_key(c, items->v[i], attr, cs && jv_truthy(*cs), line);
        jl_push(c->a, out.u.l, items->v[i]);
    }
    int r = rev && jv_truthy(*rev) ? -1 : 1;
    for (size_t i = 1; i < items->n; i++)  /* stable insertion sort, bounded by steps */
        for (size_t j = i; j > 0 && r * cmp_values(c, keys[j - 1], keys[j], line) > 0; j--) {
            jctx_step(c, line);
            jv_t t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t;
            t = out.u.l->v[j]; out.u.l->v[j] = out.u.l->v[j - 1]; out.u.l->v[j - 1] = t;
        }
    return out;
}

static jv_t to_int(jctx_t *c, jv_t v, jargs_t *a, int line) {
    jl_check_args(c, a, "int", 2, "default,base", line);
    jv_t *def = jl_arg(a, 0, "default");
    long long base = jl_need_int(c, jl_arg(a, 1, "base"), 10, "int", line);
    if (v.k == JV_UNDEF) jctx_fail(c, line, "'%s' is undefined", v.undef_name ? v.undef_name : "value");
    if (v.k == JV_INT) return v;
    if (v.k == JV_BOOL) return jv_int(v.u.b);
    if (v.k == JV_FLOAT && isfinite(v.u.f) && fabs(v.u.f) < 9.2e18) return jv_int((long long)v.u.f);
    if (v.k == JV_STR && base >= 2 && base <= 36) {
        char *s = ja_strdup(c->a, v.u.s.p, v.u.s.n), *e;
        jv_t t = jl_strip(jv_cstr(s), NULL, 3);
        char *st = ja_strdup(c->a, t.u.s.p, t.u.s.n);
        long long i = strtoll(st, &e, (int)base);
        if (*st && !*e) return jv_int(i);
        double d = strtod(st, &e);
        if (*st && !*e && isfinite(d) && fabs(d) < 9.2e18) return jv_int((long long)d);
    }
    return def ? *def : jv_int(0);
}

static jv_t tojson(jctx_t *c, jv_t v, jargs_t *a, int line) {
    jl_check_args(c, a, "tojson", 0, "indent,ensure_ascii,sort_keys,separators", line);
    jv_t *ind = jl_arg(a, -1, "indent"), *asc = jl_arg(a, -1, "ensure_ascii");
    jv_t *sk = jl_arg(a, -1, "sort_keys"), *sep = jl_arg(a, -1, "separators");
    if (asc && jv_truthy(*asc)) jctx_fail(c, line, "tojson: ensure_ascii=True is not supported");
    if (sep && sep->k != JV_NONE) jctx_fail(c, line, "tojson: separators are not supported");
    int indent = -1;
    if (ind && ind->k != JV_NONE) {
        long long n = jl_need_int(c, ind, 0, "tojson indent", line);
        indent = n < 0 ? 0 : n > 64 ? 64 : (int)n;
    }
    jbuf_t b;
    jb_init(&b, c->a, 0);
    jv_write_json(&b, v, indent, sk && jv_truthy(*sk), line);
    return jb_value(&b);
}

jv_t jlib_filter(jctx_t *c, jframe_t *f, const char *name, jv_t v, jargs_t *a, int line) {
    const char *n = name;
    if (!strcmp(n, "default") || !strcmp(n, "d")) {
        jl_check_args(c, a, n, 2, "default_value,boolean", line);
        jv_t *def = jl_arg(a, 0, "default_value"), *boolean = jl_arg(a, 1, "boolean");
        int use = v.k == JV_UNDEF || (boolean && jv_truthy(*boolean) && !jv_truthy(v));
        return use ? (def ? *def : jv_str("", 0)) : v;
    }
    if (!strcmp(n, "tojson")) return tojson(c, v, a, line);
    if (!strcmp(n, "selectattr") || !strcmp(n, "rejectattr")) return select_items(c, f, v, a, 1, n[0] == 's', line);
    if (!strcmp(n, "select") || !strcmp(n, "reject")) return select_items(c, f, v, a, 0, n[2] == 'l', line);
    if (!strcmp(n, "map")) return map_items(c, f, v, a, line);
    if (!strcmp(n, "sort")) return do_sort(c, v, a, line);
    if (!strcmp(n, "round")) return do_round(c, v, a, line);
    if (!strcmp(n, "int")) return to_int(c, v, a, line);
    if (!strcmp(n, "join")) {
        jl_check_args(c, a, n, 2, "d,attribute", line);
        jv_t *sep = jl_arg(a, 0, "d"), *attr = jl_arg(a, 1, "attribute");
        if (attr) jl_need_str(c, *attr, "join attribute", line);
        return jl_join(c, v, sep ? *sep : jv_str("", 0), attr ? ja_strdup(c->a, attr->u.s.p, attr->u.s.n) : NULL, line);
    }
    if (!strcmp(n, "attr")) {
        jl_check_args(c, a, n, 1, "", line);
        jv_t *x = jl_arg(a, 0, NULL);
        if (!x) jctx_fail(c, line, "attr needs a name");
        return get_path(c, v, *x, line);
    }
    if (!strcmp(n, "sum") || !strcmp(n, "min") || !strcmp(n, "max")) {
        jl_check_args(c, a, n, n[1] == 'u' ? 2 : 2, n[1] == 'u' ? "attribute,start" : "case_sensitive,attribute", line);
        jlist_t *items = jv_iter(c, v, line);
        jv_t *attr = jl_arg(a, n[1] == 'u' ? 0 : 1, "attribute");
        if (n[1] == 'u') {
            jv_t *start = jl_arg(a, 1, "start");
            jv_t acc = start ? *start : jv_int(0);
            for (size_t i = 0; i < items->n; i++) {
                jv_t x = attr ? get_path(c, items->v[i], *attr, line) : items->v[i];
                if (x.k != JV_INT && x.k != JV_FLOAT && x.k != JV_BOOL) jctx_fail(c, line, "sum: not a number");
                if (acc.k == JV_INT && x.k != JV_FLOAT) acc = jv_int(acc.u.i + (x.k == JV_INT ? x.u.i : x.u.b));
                else acc = jv_float((acc.k == JV_FLOAT ? acc.u.f : (double)acc.u.i) +
                                    (x.k == JV_FLOAT ? x.u.f : x.k == JV_INT ? (double)x.u.i : x.u.b));
            }
            return acc;
        }
        if (!items->n) return jv_undef("min/max of an empty sequence");
        jv_t *cs = jl_arg(a, 0, "case_sensitive");
        size_t best = 0;
        for (size_t i = 1; i < items->n; i++) {
            int r = cmp_values(c, sort_key(c, items->v[i], attr, cs && jv_truthy(*cs), line),
                               sort_key(c, items->v[best], attr, cs && jv_truthy(*cs), line), line);
            if (n[1] == 'i' ? r < 0 : r > 0) best = i;
        }
        return items->v[best];
    }
    if (!strcmp(n, "replace")) {
        jl_check_args(c, a, n, 3, "old,new,count", line);
        jv_t *o = jl_arg(a, 0, "old"), *nw = jl_arg(a, 1, "new");
        if (!o || !nw) jctx_fail(c, line, "replace needs old and new");
        return jl_replace(c, jv_to_str(c->a, v), jl_need_str(c, *o, n, line), jl_need_str(c, *nw, n, line),
                          jl_need_int(c, jl_arg(a, 2, "count"), -1, n, line), line);
    }
    if (!strcmp(n, "indent")) return indent(c, jv_to_str(c->a, v), a, line);
    if (!strcmp(n, "float")) {
        jl_check_args(c, a, n, 1, "default", line);
        if (v.k == JV_UNDEF) jctx_fail(c, line, "'%s' is undefined", v.undef_name ? v.undef_name : "value");
        if (v.k == JV_FLOAT) return v;
        if (v.k == JV_INT || v.k == JV_BOOL) return jv_float(v.k == JV_INT ? (double)v.u.i : v.u.b);
        if (v.k == JV_STR) {
            char *s = ja_strdup(c->a, v.u.s.p, v.u.s.n), *e;
            double d = strtod(s, &e);
            if (*s && !*e) return jv_float(d);
        }
        jv_t *def = jl_arg(a, 0, "default");
        return def ? *def : jv_float(0);
    }
    /* the rest take no arguments, except trim's chars */
    if (!strcmp(n, "trim")) {
        jl_check_args(c, a, n, 1, "chars", line);
        jv_t *ch = jl_arg(a, 0, "chars");
        if (ch && ch->k != JV_NONE) jl_need_str(c, *ch, n, line);
        return jl_strip(jv_to_str(c->a, v), ch, 3);
    }
    jl_check_args(c, a, n, 0, "", line);
    if (!strcmp(n, "safe")) return v;
    if (!strcmp(n, "string")) return jv_to_str(c->a, v);
    if (!strcmp(n, "upper") || !strcmp(n, "lower") || !strcmp(n, "title") || !strcmp(n, "capitalize"))
        return jl_recase(c, jv_to_str(c->a, v), n[0] == 'u' ? 'u' : n[0] == 'l' ? 'l' : n[0] == 't' ? 'T' : 'c');
    if (!strcmp(n, "length") || !strcmp(n, "count")) {
        switch (v.k) {
        case JV_STR: return jv_int((long long)ju_len(v.u.s.p, v.u.s.n));
        case JV_LIST: return jv_int((long long)v.u.l->n);
        case JV_DICT: case JV_NS: return jv_int((long long)v.u.d->n);
        case JV_UNDEF: return jv_int(0);
        default: jctx_fail(c, line, "object of type '%s' has no len()", jv_type_name(v));
        }
    }
    if (!strcmp(n, "abs")) {
        if (v.k == JV_FLOAT) return jv_float(fabs(v.u.f));
        if (v.k == JV_INT && v.u.i != (-9223372036854775807LL - 1)) return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.k == JV_BOOL) return jv_int(v.u.b);
        jctx_fail(c, line, "bad operand type for abs(): '%s'", jv_type_name(v));
    }
    jlist_t *items = jv_iter(c, v, line);
    if (!strcmp(n, "first")) return items->n ? items->v[0] : jv_undef("first item");
    if (!strcmp(n, "last")) return items->n ? items->v[items->n - 1] : jv_undef("last item");
    jv_t out = jv_list(c->a, items->n);
    if (!strcmp(n, "list")) {
        for (size_t i = 0; i < items->n; i++) jl_push(c->a, out.u.l, items->v[i]);
        return out;
    }
    if (!strcmp(n, "reverse")) {
        for (size_t i = items->n; i > 0; i--) jl_push(c->a, out.u.l, items->v[i - 1]);
        return v.k == JV_STR ? jl_join(c, out, jv_str("", 0), NULL, line) : out;
    }
    if (!strcmp(n, "unique")) {
        for (size_t i = 0; i < items->n; i++) {
            int seen = 0;
            for (size_t j = 0; j < out.u.l->n && !seen; j++) {
                jctx_step(c, line);
                seen = jv_equal(jl_recase(c, jv_to_str(c->a, out.u.l->v[j]), 'l'),
                                jl_recase(c, jv_to_str(c->a, items->v[i]), 'l')) &&
                       out.u.l->v[j].k == items->v[i].k;
            }
            if (!seen) jl_push(c->a, out.u.l, items->v[i]);
        }
        return out;
    }
    /* items */
    if (v.k == JV_UNDEF) return out;
    if (v.k != JV_DICT) jctx_fail(c, line, "items: expected a mapping, got %s", jv_type_name(v));
    for (size_t i = 0; i < v.u.d->n; i++) {
        jv_t pair = jv_list(c->a, 2);
        pair.u.l->tuple = 1;
        jl_push(c->a, pair.u.l, v.u.d->key[i]);
        jl_push(c->a, pair.u.l, v.u.d->val[i]);
        jl_push(c->a, out.u.l, pair);
    }
    return out;
}

/* ---- global functions ------------------------------------------------------------------ */
static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", NULL};

int jlib_is_global(const char *name) {
    for (int i = 0; GLOBALS[i]; i++)
        if (!strcmp(GLOBALS[i], name)) return 1;
    return 0;
}

int jlib_global(jctx_t *c, const char *name, jargs_t *a, jv_t *out, int line) {
    if (!strcmp(name, "range")) {
        jl_check_args(c, a, name, 3, "", line);
        if (a->npos < 1) jctx_fail(c, line, "range expects at least 1 argument");
        long long v[3];
        for (int i = 0; i < a->npos; i++) v[i] = jl_need_int(c, &a->pos[i], 0, "range", line);
        long long start = a->npos > 1 ? v[0] : 0, stop = a->npos > 1 ? v[1] : v[0];
        long long step = a->npos > 2 ? v[2] : 1;
        if (!step) jctx_fail(c, line, "range() arg 3 must not be zero");
        double count = step > 0 ? ceil(((double)stop - (double)start) / (double)step)
                                : ceil(((double)start - (double)stop) / -(double)step);
        if (count > 100000) jctx_fail(c, line, "range too big (at most 100000 items)");
        *out = jv_list(c->a, count > 0 ? (size_t)count : 0);
        for (long long i = start; step > 0 ? i < stop : i > stop; i += step) {
            jctx_step(c, line);
            jl_push(c->a, out->u.l, jv_int(i));
        }
        return 1;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        if (a->npos > 1 || (a->npos == 1 && a->pos[0].k != JV_DICT))
            jctx_fail(c, line, "%s() takes keyword arguments or one dict", name);
        *out = jv_dict(c->a, 0);
        if (name[0] == 'n') out->k = JV_NS;
        if (a->npos)
            for (size_t i = 0; i < a->pos[0].u.d->n; i++)
                jd_set(c->a, out->u.d, a->pos[0].u.d->key[i], a->pos[0].u.d->val[i]);
        for (int k = 0; k < a->nkw; k++) jd_setc(c->a, out->u.d, a->kwn[k], a->kwv[k]);
        return 1;
    }
    if (!strcmp(name, "raise_exception")) {
        jv_t msg = a->npos ? jv_to_str(c->a, a->pos[0]) : jv_cstr("raise_exception() called");
        c->err->raised = 1;
        jctx_fail(c, line, "%.*s", (int)(msg.u.s.n > 380 ? 380 : msg.u.s.n), msg.u.s.p);
    }
    if (!strcmp(name, "strftime_now")) {
        jl_check_args(c, a, name, 1, "", line);
        if (a->npos < 1) jctx_fail(c, line, "strftime_now needs a format");
        jv_t fmt = jl_need_str(c, a->pos[0], name, line);
        char *f = ja_strdup(c->a, fmt.u.s.p, fmt.u.s.n), buf[256];
        time_t now = time(NULL);
        struct tm tm;
        if (!localtime_r(&now, &tm)) jctx_fail(c, line, "strftime_now: no local time");
        size_t n = strftime(buf, sizeof buf, f, &tm);
        if (n == 0 && *f) jctx_fail(c, line, "strftime_now: format gives more than 255 bytes");
        *out = jv_str(ja_strdup(c->a, buf, n), n);
        return 1;
    }
    return 0;
}
