/* jinja_lib.c - the filters, tests, methods and global functions chat
 * templates call, each with jinja2's (or Python's) semantics, and HF's
 * additions: tojson is json.dumps(ensure_ascii=False) (no HTML escaping,
 * keys in order), raise_exception(msg) stops the render with msg, and
 * strftime_now(fmt) formats the local time. Case mapping (upper, lower,
 * title, capitalize) covers ASCII letters only; other text passes
 * through unchanged. An unknown name is reported, never ignored. */
#include "jinja_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- arguments ------------------------------------------------------------------ */
/* Positional i or keyword name; NULL when absent. */
jv_t *jl_arg(jargs_t *a, int i, const char *name) {
    if (i >= 0 && i < a->npos) return &a->pos[i];
    for (int k = 0; name && k < a->nkw; k++)
        if (!strcmp(a->kwn[k], name)) return &a->kwv[k];
    return NULL;
}

/* At most maxpos positional arguments and keywords from names (comma-separated). */
void jl_check_args(jctx_t *c, jargs_t *a, const char *what, int maxpos, const char *names, int line) {
    if (a->npos > maxpos) jctx_fail(c, line, "%s takes at most %d arguments, got %d", what, maxpos, a->npos);
    for (int k = 0; k < a->nkw; k++) {
        size_t n = strlen(a->kwn[k]);
        const char *p = names;
        int ok = 0;
        while (p && *p && !ok) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            ok = len == n && !memcmp(p, a->kwn[k], n);
            p = e ? e + 1 : NULL;
        }
        if (!ok) jctx_fail(c, line, "%s got an unexpected keyword argument '%s'", what, a->kwn[k]);
    }
}

jv_t jl_need_str(jctx_t *c, jv_t v, const char *what, int line) {
    if (v.k != JV_STR) jctx_fail(c, line, "%s expects a string, got %s", what, jv_type_name(v));
    return v;
}

long long jl_need_int(jctx_t *c, jv_t *v, long long def, const char *what, int line) {
    if (!v || v->k == JV_NONE) return def;
    if (v->k == JV_INT) return v->u.i;
    if (v->k == JV_BOOL) return v->u.b;
    jctx_fail(c, line, "%s expects an integer, got %s", what, jv_type_name(*v));
}

/* ---- strings ------------------------------------------------------------------------ */
/* Byte length of the whitespace character (str.isspace) at s[i], or 0. */
static size_t ws_at(const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c == 0xC2 && i + 1 < n && ((unsigned char)s[i + 1] == 0x85 || (unsigned char)s[i + 1] == 0xA0)) return 2;
    if (i + 2 < n && (c == 0xE1 || c == 0xE2 || c == 0xE3)) {
        unsigned char c1 = (unsigned char)s[i + 1], c2 = (unsigned char)s[i + 2];
        if (c == 0xE1 && c1 == 0x9A && c2 == 0x80) return 3;                      /* U+1680 */
        if (c == 0xE2 && c1 == 0x80 && (c2 <= 0x8A || c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF)) return 3;
        if (c == 0xE2 && c1 == 0x81 && c2 == 0x9F) return 3;                      /* U+205F */
        if (c == 0xE3 && c1 == 0x80 && c2 == 0x80) return 3;                      /* U+3000 */
    }
    return 0;
}

static size_t char_len(const char *s, size_t n, size_t i) {
    size_t j = i + 1;
    while (j < n && ((unsigned char)s[j] & 0xC0) == 0x80) j++;
    return j - i;
}

static int in_chars(jv_t chars, const char *s, size_t len) {
    for (size_t i = 0; i < chars.u.s.n; i += char_len(chars.u.s.p, chars.u.s.n, i))
        if (char_len(chars.u.s.p, chars.u.s.n, i) == len && !memcmp(chars.u.s.p + i, s, len)) return 1;
    return 0;
}

/* str.strip / lstrip / rstrip: which 1 = left, 2 = right, 3 = both. */
jv_t jl_strip(jv_t s, jv_t *chars, int which) {
    const char *p = s.u.s.p;
    size_t b = 0, e = s.u.s.n;
    int ws = !chars || chars->k == JV_NONE;
    if (which & 1)
        while (b < e) {
            size_t l = ws ? ws_at(p, e, b) : (in_chars(*chars, p + b, char_len(p, e, b)) ? char_len(p, e, b) : 0);
            if (!l) break;
            b += l;
        }
    if (which & 2)
        while (e > b) {
            size_t st = e - 1;
            while (st > b && ((unsigned char)p[st] & 0xC0) == 0x80) st--;
            size_t l = ws ? (ws_at(p, e, st) == e - st ? e - st : 0) : (in_chars(*chars, p + st, e - st) ? e - st : 0);
            if (!l) break;
            e = st;
        }
    return jv_str(p + b, e - b);
}

static char up(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 32) : c; }
static char low(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }
static int alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int word_sep(char c) { return strchr("-({[< \t\n\r\v\f", c) != NULL && c; }

/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' str.title() (a letter
 * after a letter is lowered), 'T' the title filter (jinja2: each run
 * after - ( { [ < or whitespace starts upper, the rest lowered) */
jv_t jl_recase(jctx_t *c, jv_t s, char mode) {
    char *o = ja_strdup(c->a, s.u.s.p, s.u.s.n);
    int prev = 0;
    for (size_t i = 0; i < s.u.s.n; i++) {
        char ch = o[i];
        if (mode == 'u') o[i] = up(ch);
        else if (mode == 'l') o[i] = low(ch);
        else if (mode == 'c') o[i] = i == 0 ? up(ch) : low(ch);
        else if (mode == 't') {
            o[i] = prev ? low(ch) : up(ch);
            prev = alpha(ch);
        } else {
            o[i] = i == 0 || word_sep(s.u.s.p[i - 1]) ? up(ch) : low(ch);
        }
    }
    return jv_str(o, s.u.s.n);
}

/* memmem (glibc's is linear time: strings come from clients) */
static const char *find(const char *h, size_t hn, const char *nd, size_t nn) {
    return nn == 0 ? h : memmem(h, hn, nd, nn);
}

jv_t jl_replace(jctx_t *c, jv_t s, jv_t old, jv_t new, long long count, int line) {
    jbuf_t b;
    jb_init(&b, c->a, 0);
    const char *p = s.u.s.p, *end = p + s.u.s.n;
    if (old.u.s.n == 0) {  /* Python inserts `new` before each character and at the end */
        for (size_t i = 0;; i += char_len(p, s.u.s.n, i)) {
            jctx_step(c, line);
            if (count != 0) {
                jb_add(&b, new.u.s.p, new.u.s.n);
                if (count > 0) count--;
            }
            if (i >= s.u.s.n) break;
            jb_add(&b, p + i, char_len(p, s.u.s.n, i));
        }
        return jb_value(&b);
    }
    while (count != 0) {
        const char *hit = find(p, (size_t)(end - p), old.u.s.p, old.u.s.n);
        if (!hit) break;
        jctx_step(c, line);
        jb_add(&b, p, (size_t)(hit - p));
        jb_add(&b, new.u.s.p, new.u.s.n);
        p = hit + old.u.s.n;
        if (count > 0) count--;
    }
    jb_add(&b, p, (size_t)(end - p));
    return jb_value(&b);
}

static jv_t jl_split(jctx_t *c, jv_t s, jv_t *sep, long long maxsplit, int line) {
    jv_t l = jv_list(c->a, 0);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0;
    if (!sep || sep->k == JV_NONE) {
        for (;;) {
            while (i < n && ws_at(p, n, i)) i += ws_at(p, n, i);
            if (i >= n) break;
            size_t st = i;
            if (maxsplit == 0) {
                size_t e = n;
                while (e > st && ws_at(p, n, e - 1) == 1) e--;
                jl_push(c->a, l.u.l, jv_str(p + st, e - st));
                break;
            }
            while (i < n && !ws_at(p, n, i)) i += char_len(p, n, i);
            jl_push(c->a, l.u.l, jv_str(p + st, i - st));
            jctx_step(c, line);
            if (maxsplit > 0) maxsplit--;
        }
        return l;
    }
    jl_need_str(c, *sep, "split", line);
    if (!sep->u.s.n) jctx_fail(c, line, "split: empty separator");
    for (;;) {
        const char *hit = maxsplit == 0 ? NULL : find(p + i, n - i, sep->u.s.p, sep->u.s.n);
        if (!hit) {
            jl_push(c->a, l.u.l, jv_str(p + i, n - i));
            return l;
        }
        jctx_step(c, line);
        jl_push(c->a, l.u.l, jv_str(p + i, (size_t)(hit - (p + i))));
        i = (size_t)(hit - p) + sep->u.s.n;
        if (maxsplit > 0) maxsplit--;
    }
}

static int affix(jctx_t *c, jv_t s, jv_t a, int end, int line) {
    if (a.k == JV_LIST) {
        for (size_t i = 0; i < a.u.l->n; i++)
            if (affix(c, s, a.u.l->v[i], end, line)) return 1;
        return 0;
    }
    jl_need_str(c, a, end ? "endswith" : "startswith", line);
    if (a.u.s.n > s.u.s.n) return 0;
    return !memcmp(s.u.s.p + (end ? s.u.s.n - a.u.s.n : 0), a.u.s.p, a.u.s.n);
}

jv_t jl_join(jctx_t *c, jv_t seq, jv_t sep, const char *attr, int line) {
    jlist_t *items = jv_iter(c, seq, line);
    jbuf_t b;
    jb_init(&b, c->a, 0);
    for (size_t i = 0; i < items->n; i++) {
        if (i) jv_write_str(&b, sep);
        jv_t v = items->v[i];
        if (attr) {
            jv_t *x = (v.k == JV_DICT || v.k == JV_NS) ? jd_get(v.u.d, attr, strlen(attr)) : NULL;
            v = x ? *x : jv_undef(attr);
        }
        jv_write_str(&b, v);
    }
    return jb_value(&b);
}

/* ---- methods ------------------------------------------------------------------------- */
static int str_method(jctx_t *c, jv_t s, const char *m, jargs_t *a, jv_t *out, int line) {
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        jl_check_args(c, a, m, 1, "", line);
        jv_t *ch = jl_arg(a, 0, NULL);
        if (ch && ch->k != JV_NONE) jl_need_str(c, *ch, m, line);
        *out = jl_strip(s, ch, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3);
    } else if (!strcmp(m, "split")) {
        jl_check_args(c, a, m, 2, "sep,maxsplit", line);
        *out = jl_split(c, s, jl_arg(a, 0, "sep"), jl_need_int(c, jl_arg(a, 1, "maxsplit"), -1, m, line), line);
    } else if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        jl_check_args(c, a, m, 1, "", line);
        jv_t *x = jl_arg(a, 0, NULL);
        if (!x) jctx_fail(c, line, "%s needs an argument", m);
        *out = jv_bool(affix(c, s, *x, m[0] == 'e', line));
    } else if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") || !strcmp(m, "capitalize")) {
        jl_check_args(c, a, m, 0, "", line);
        *out = jl_recase(c, s, m[0] == 'u' ? 'u' : m[0] == 'l' ? 'l' : m[0] == 't' ? 't' : 'c');
    } else if (!strcmp(m, "replace")) {
        jl_check_args(c, a, m, 3, "", line);
        jv_t *o = jl_arg(a, 0, NULL), *n = jl_arg(a, 1, NULL);
        if (!o || !n) jctx_fail(c, line, "replace needs two arguments");
        *out = jl_replace(c, s, jl_need_str(c, *o, m, line), jl_need_str(c, *n, m, line),
                       jl_need_int(c, jl_arg(a, 2, NULL), -1, m, line), line);
    } else if (!strcmp(m, "find")) {
        jl_check_args(c, a, m, 1, "", line);
        jv_t *x = jl_arg(a, 0, NULL);
        if (!x) jctx_fail(c, line, "find needs an argument");
        jl_need_str(c, *x, m, line);
        const char *h = find(s.u.s.p, s.u.s.n, x->u.s.p, x->u.s.n);
        *out = jv_int(h ? (long long)ju_len(s.u.s.p, (size_t)(h - s.u.s.p)) : -1);
    } else if (!strcmp(m, "join")) {
        jl_check_args(c, a, m, 1, "", line);
        jv_t *x = jl_arg(a, 0, NULL);
        if (!x) jctx_fail(c, line, "join needs an argument");
        jlist_t *items = jv_iter(c, *x, line);
        for (size_t i = 0; i < items->n; i++) jl_need_str(c, items->v[i], "join", line);
        *out = jl_join(c, *x, s, NULL, line);
    } else {
        return 0;
    }
    return 1;
}

int jlib_method(jctx_t *c, jv_t obj, const char *m, jargs_t *a, jv_t *out, int line) {
    if (obj.k == JV_STR) return str_method(c, obj, m, a, out, line);
    if (obj.k == JV_DICT) {
        jdict_t *d = obj.u.d;
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            jl_check_args(c, a, m, 0, "", line);
            jv_t l = jv_list(c->a, d->n);
            for (size_t i = 0; i < d->n; i++) {
                if (m[0] == 'k') jl_push(c->a, l.u.l, d->key[i]);
                else if (m[0] == 'v') jl_push(c->a, l.u.l, d->val[i]);
                else {
                    jv_t pair = jv_list(c->a, 2);
                    pair.u.l->tuple = 1;
                    jl_push(c->a, pair.u.l, d->key[i]);
                    jl_push(c->a, pair.u.l, d->val[i]);
                    jl_push(c->a, l.u.l, pair);
                }
            }
            *out = l;
            return 1;
        }
        if (!strcmp(m, "get")) {
            jl_check_args(c, a, m, 2, "", line);
            jv_t *k = jl_arg(a, 0, NULL), *def = jl_arg(a, 1, NULL);
            if (!k) jctx_fail(c, line, "get needs a key");
            jv_t *v = jd_lookup(d, *k);
            *out = v ? *v : def ? *def : jv_none();
            return 1;
        }
        return 0;
    }
    if (obj.k == JV_LIST && !strcmp(m, "append")) {
        jl_check_args(c, a, m, 1, "", line);
        jv_t *x = jl_arg(a, 0, NULL);
        if (!x) jctx_fail(c, line, "append needs an argument");
        jl_push(c->a, obj.u.l, *x);
        *out = jv_none();
        return 1;
    }
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------- */
static int num_cmp(jctx_t *c, jv_t a, jv_t b, int line) {
    if ((a.k == JV_STR) != (b.k == JV_STR) || a.k == JV_UNDEF || b.k == JV_UNDEF ||
        (a.k != JV_STR && (a.k < JV_BOOL || a.k > JV_FLOAT)) || (b.k != JV_STR && (b.k < JV_BOOL || b.k > JV_FLOAT)))
        jctx_fail(c, line, "cannot compare %s with %s", jv_type_name(a), jv_type_name(b));
    if (a.k == JV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int r = memcmp(a.u.s.p, b.u.s.p, n);
        return r ? r : (a.u.s.n > b.u.s.n) - (a.u.s.n < b.u.s.n);
    }
    double x = a.k == JV_FLOAT ? a.u.f : a.k == JV_INT ? (double)a.u.i : a.u.b;
    double y = b.k == JV_FLOAT ? b.u.f : b.k == JV_INT ? (double)b.u.i : b.u.b;
    return (x > y) - (x < y);
}

int jlib_test(jctx_t *c, jframe_t *f, const char *t, jv_t v, jargs_t *a, int line) {
    (void)f;
    jv_t *x = jl_arg(a, 0, NULL);
    jv_t other = x ? *x : jv_undef("test argument");
    if (!strcmp(t, "defined")) return v.k != JV_UNDEF;
    if (!strcmp(t, "undefined")) return v.k == JV_UNDEF;
    if (!strcmp(t, "none")) return v.k == JV_NONE;
    if (!strcmp(t, "boolean")) return v.k == JV_BOOL;
    if (!strcmp(t, "false")) return v.k == JV_BOOL && !v.u.b;
    if (!strcmp(t, "true")) return v.k == JV_BOOL && v.u.b;
    if (!strcmp(t, "integer")) return v.k == JV_INT;
    if (!strcmp(t, "float")) return v.k == JV_FLOAT;
    if (!strcmp(t, "number")) return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL;
    if (!strcmp(t, "string")) return v.k == JV_STR;
    if (!strcmp(t, "mapping")) return v.k == JV_DICT;
    if (!strcmp(t, "iterable") || !strcmp(t, "sequence"))
        return v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT || v.k == JV_UNDEF;
    if (!strcmp(t, "callable")) return v.k == JV_MACRO || v.k == JV_FUNC;
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (v.k != JV_STR) return 0;
        jv_t r = jl_recase(c, v, t[0] == 'l' ? 'l' : 'u');
        return !memcmp(r.u.s.p, v.u.s.p, v.u.s.n);
    }
    if (!strcmp(t, "odd") || !strcmp(t, "even") || !strcmp(t, "divisibleby")) {
        /* value % 2 == 1, value % 2 == 0, value % num == 0, as numbers */
        if (v.k != JV_INT && v.k != JV_BOOL && v.k != JV_FLOAT) jctx_fail(c, line, "test '%s' needs a number", t);
        jv_t d = t[0] == 'd' ? other : jv_int(2);
        if (t[0] == 'd' && !x) jctx_fail(c, line, "test 'divisibleby' needs an argument");
        if (d.k != JV_INT && d.k != JV_BOOL && d.k != JV_FLOAT) jctx_fail(c, line, "divisibleby needs a number");
        double dv = d.k == JV_FLOAT ? d.u.f : d.k == JV_INT ? (double)d.u.i : d.u.b;
        if (dv == 0) jctx_fail(c, line, "divisibleby 0");
        if (v.k != JV_FLOAT && d.k != JV_FLOAT) {
            long long i = v.k == JV_INT ? v.u.i : v.u.b, di = d.k == JV_INT ? d.u.i : d.u.b;
            long long m = di == -1 ? 0 : i % di;
            if (m != 0 && ((m < 0) != (di < 0))) m += di;
            return t[0] == 'o' ? m == 1 : m == 0;
        }
        double fv = v.k == JV_FLOAT ? v.u.f : v.k == JV_INT ? (double)v.u.i : v.u.b;
        double m = fmod(fv, dv);
        if (m != 0 && ((m < 0) != (dv < 0))) m += dv;
        return t[0] == 'o' ? m == 1 : m == 0;
    }
    if (!x) jctx_fail(c, line, "test '%s' needs an argument", t);
    if (!strcmp(t, "sameas")) return v.k == other.k && jv_equal(v, other);
    if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==")) return jv_equal(v, other);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !jv_equal(v, other);
    if (!strcmp(t, "in")) {
        if (other.k == JV_STR && v.k == JV_STR)
            return find(other.u.s.p, other.u.s.n, v.u.s.p, v.u.s.n) != NULL;
        if (other.k == JV_DICT) return jd_lookup(other.u.d, v) != NULL;
        jlist_t *l = jv_iter(c, other, line);
        for (size_t i = 0; i < l->n; i++)
            if (jv_equal(v, l->v[i])) return 1;
        return 0;
    }
    int r = num_cmp(c, v, other, line);
    if (!strcmp(t, "lt") || !strcmp(t, "lessthan") || !strcmp(t, "<")) return r < 0;
    if (!strcmp(t, "le") || !strcmp(t, "<=")) return r <= 0;
    if (!strcmp(t, "gt") || !strcmp(t, "greaterthan") || !strcmp(t, ">")) return r > 0;
    return r >= 0;
}
