/* jinja_value.c - the arena, Jinja values and their Python-compatible
 * printing (str, repr, json.dumps), so that output matches jinja2's
 * byte for byte: floats print as Python's shortest round-trip repr,
 * strings inside lists as Python string literals, tojson with Python's
 * separators. See jinja_int.h for the memory model. */
#include "jinja_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------- */
struct jchunk { jchunk_t *next; size_t used, size; _Alignas(16) unsigned char data[]; };

void *ja_alloc(jarena_t *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->used + n > a->cap || a->used + n < n)
        jx_fail(a->fail, a->err, 0, "template used more than %zu bytes of memory", a->cap);
    jchunk_t *c = a->head;
    if (!c || c->used + n > c->size) {
        size_t size = n > 65536 ? n : 65536;
        if (!(c = malloc(sizeof *c + size)))
            jx_fail(a->fail, a->err, 0, "out of memory");
        c->next = a->head;
        c->used = 0;
        c->size = size;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *ja_strdup(jarena_t *a, const char *s, size_t n) {
    char *p = ja_alloc(a, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void ja_free(jarena_t *a) {
    while (a->head) {
        jchunk_t *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    a->used = 0;
}

void jx_fail(jmp_buf *fail, jinja_error_t *err, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err->line = line;
    if (line > 0) snprintf(err->msg, sizeof err->msg, "line %d: %s", line, msg);
    else snprintf(err->msg, sizeof err->msg, "%s", msg);
    longjmp(*fail, 1);
}

/* ---- constructors and containers ------------------------------------------- */
jv_t jv_undef(const char *name) { jv_t v = {.k = JV_UNDEF}; v.undef_name = name; return v; }
jv_t jv_none(void) { return (jv_t){.k = JV_NONE}; }
jv_t jv_bool(int b) { jv_t v = {.k = JV_BOOL}; v.u.b = !!b; return v; }
jv_t jv_int(long long i) { jv_t v = {.k = JV_INT}; v.u.i = i; return v; }
jv_t jv_float(double f) { jv_t v = {.k = JV_FLOAT}; v.u.f = f; return v; }
jv_t jv_str(const char *p, size_t n) { jv_t v = {.k = JV_STR}; v.u.s.p = p; v.u.s.n = n; return v; }
jv_t jv_cstr(const char *s) { return jv_str(s, strlen(s)); }

jv_t jv_list(jarena_t *a, size_t cap) {
    jv_t v = {.k = JV_LIST};
    v.u.l = ja_alloc(a, sizeof *v.u.l);
    if (cap) {
        v.u.l->v = ja_alloc(a, cap * sizeof(jv_t));
        v.u.l->cap = cap;
    }
    return v;
}

jv_t jv_dict(jarena_t *a, size_t cap) {
    jv_t v = {.k = JV_DICT};
    v.u.d = ja_alloc(a, sizeof *v.u.d);
    if (cap) {
        v.u.d->key = ja_alloc(a, cap * sizeof(jv_t));
        v.u.d->val = ja_alloc(a, cap * sizeof(jv_t));
        v.u.d->cap = cap;
    }
    return v;
}

void jl_push(jarena_t *a, jlist_t *l, jv_t v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        jv_t *nv = ja_alloc(a, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

jv_t *jd_get(const jdict_t *d, const char *key, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->key[i].k == JV_STR && d->key[i].u.s.n == n && memcmp(d->key[i].u.s.p, key, n) == 0)
            return &d->val[i];
    return NULL;
}

jv_t *jd_lookup(const jdict_t *d, jv_t key) {
    if (key.k == JV_STR) return jd_get(d, key.u.s.p, key.u.s.n);
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->key[i], key)) return &d->val[i];
    return NULL;
}

void jd_set(jarena_t *a, jdict_t *d, jv_t key, jv_t val) {
    jv_t *slot = jd_lookup(d, key);
    if (slot) {
        *slot = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jv_t *nk = ja_alloc(a, cap * sizeof *nk), *nv = ja_alloc(a, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->key, d->n * sizeof *nk);
            memcpy(nv, d->val, d->n * sizeof *nv);
        }
        d->key = nk;
        d->val = nv;
        d->cap = cap;
    }
    d->key[d->n] = key;
    d->val[d->n++] = val;
}

void jd_setc(jarena_t *a, jdict_t *d, const char *key, jv_t val) { jd_set(a, d, jv_cstr(key), val); }

jv_t jv_from_json(jarena_t *a, json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jv_t v = jv_dict(a, json_object_size(j));
        const char *k;
        json_t *x;
        json_object_foreach(j, k, x) jd_setc(a, v.u.d, k, jv_from_json(a, x));
        return v;
    }
    case JSON_ARRAY: {
        jv_t v = jv_list(a, json_array_size(j));
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x) jl_push(a, v.u.l, jv_from_json(a, x));
        return v;
    }
    case JSON_STRING: return jv_str(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return jv_int(json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(1);
    case JSON_FALSE: return jv_bool(0);
    default: return jv_none();
    }
}

int jv_truthy(jv_t v) {
    switch (v.k) {
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.n != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    case JV_NS: case JV_MACRO: case JV_FUNC: return 1;
    default: return 0;
    }
}

static int is_num(jv_t v) { return v.k == JV_INT || v.k == JV_FLOAT || v.k == JV_BOOL; }
static double num(jv_t v) { return v.k == JV_FLOAT ? v.u.f : v.k == JV_INT ? (double)v.u.i : v.u.b; }

int jv_equal(jv_t a, jv_t b) {
    if (is_num(a) && is_num(b)) {
        if (a.k != JV_FLOAT && b.k != JV_FLOAT)
            return (a.k == JV_INT ? a.u.i : a.u.b) == (b.k == JV_INT ? b.u.i : b.u.b);
        return num(a) == num(b);
    }
    if (a.k != b.k) return 0;
    switch (a.k) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return a.u.s.n == b.u.s.n && memcmp(a.u.s.p, b.u.s.p, a.u.s.n) == 0;
    case JV_LIST:
        if (a.u.l->n != b.u.l->n) return 0;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i])) return 0;
        return 1;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return 0;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv_t *o = jd_lookup(b.u.d, a.u.d->key[i]);
            if (!o || !jv_equal(a.u.d->val[i], *o)) return 0;
        }
        return 1;
    case JV_NS: return a.u.d == b.u.d;
    case JV_MACRO: return a.u.m == b.u.m;
    case JV_FUNC: return a.u.s.p == b.u.s.p;
    default: return 0;
    }
}

const char *jv_type_name(jv_t v) {
    static const char *names[] = {"Undefined", "NoneType", "bool", "int", "float", "str",
                                  "list", "dict", "Namespace", "Macro", "function"};
    return names[v.k];
}

int jv_is_str(jv_t v, const char *s) {
    return v.k == JV_STR && v.u.s.n == strlen(s) && memcmp(v.u.s.p, s, v.u.s.n) == 0;
}

/* ---- buffers ----------------------------------------------------------------- */
void jb_init(jbuf_t *b, jarena_t *a, size_t max) { memset(b, 0, sizeof *b); b->a = a; b->max = max; }

void jb_add(jbuf_t *b, const char *s, size_t n) {
    if (!n) return;
    if (b->max && b->n + n > b->max)
        jx_fail(b->a->fail, b->a->err, b->line, "template output exceeds %zu bytes", b->max);
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = ja_alloc(b->a, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void jb_addc(jbuf_t *b, const char *s) { jb_add(b, s, strlen(s)); }

jv_t jb_value(jbuf_t *b) { return jv_str(b->p ? b->p : "", b->n); }

/* ---- printing ------------------------------------------------------------------ */
/* Python's repr(float): the shortest digits that round-trip, fixed
 * notation when the decimal exponent is in [-4, 16), else d.ddde+XX. */
void jv_write_float(jbuf_t *b, double f) {
    char tmp[64];
    if (isnan(f)) { jb_addc(b, "nan"); return; }
    if (isinf(f)) { jb_addc(b, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0) { jb_addc(b, signbit(f) ? "-0.0" : "0.0"); return; }
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX */
    const char *p = tmp;
    int neg = *p == '-';
    if (neg) p++;
    char digits[32];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp10 = atoi(p + 1);
    int decpt = exp10 + 1;
    char out[64];
    int o = 0;
    if (neg) out[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++) out[o++] = '0';
            for (int i = 0; i < nd; i++) out[o++] = digits[i];
        } else {
            for (int i = 0; i < decpt; i++) out[o++] = i < nd ? digits[i] : '0';
            out[o++] = '.';
            if (nd > decpt)
                for (int i = decpt; i < nd; i++) out[o++] = digits[i];
            else
                out[o++] = '0';
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++) out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - (size_t)o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    jb_addc(b, out);
}

static void write_int(jbuf_t *b, long long i) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", i);
    jb_addc(b, tmp);
}

static void write_str_repr(jbuf_t *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jb_add(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '\\') jb_addc(b, "\\\\");
        else if (c == (unsigned char)q) { tmp[0] = '\\'; tmp[1] = (char)c; jb_add(b, tmp, 2); }
        else if (c == '\n') jb_addc(b, "\\n");
        else if (c == '\r') jb_addc(b, "\\r");
        else if (c == '\t') jb_addc(b, "\\t");
        else if (c < 0x20 || c == 0x7f) { snprintf(tmp, sizeof tmp, "\\x%02x", c); jb_addc(b, tmp); }
        else jb_add(b, (const char *)&s[i], 1);
    }
    jb_add(b, &q, 1);
}

void jv_write_repr(jbuf_t *b, jv_t v) {
    if (v.k == JV_STR) write_str_repr(b, v.u.s.p, v.u.s.n);
    else if (v.k == JV_UNDEF) jb_addc(b, "Undefined");
    else jv_write_str(b, v);
}

void jv_write_str(jbuf_t *b, jv_t v) {
    switch (v.k) {
    case JV_UNDEF: return;
    case JV_NONE: jb_addc(b, "None"); return;
    case JV_BOOL: jb_addc(b, v.u.b ? "True" : "False"); return;
    case JV_INT: write_int(b, v.u.i); return;
    case JV_FLOAT: jv_write_float(b, v.u.f); return;
    case JV_STR: jb_add(b, v.u.s.p, v.u.s.n); return;
    case JV_LIST:
        jb_addc(b, v.u.l->tuple ? "(" : "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_addc(b, ", ");
            jv_write_repr(b, v.u.l->v[i]);
        }
        jb_addc(b, v.u.l->tuple ? (v.u.l->n == 1 ? ",)" : ")") : "]");
        return;
    case JV_DICT:
        jb_addc(b, "{");
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jb_addc(b, ", ");
            jv_write_repr(b, v.u.d->key[i]);
            jb_addc(b, ": ");
            jv_write_repr(b, v.u.d->val[i]);
        }
        jb_addc(b, "}");
        return;
    case JV_NS: jb_addc(b, "<Namespace>"); return;
    case JV_MACRO: jb_addc(b, "<Macro>"); return;
    case JV_FUNC: jb_addc(b, "<function>"); return;
    }
}

jv_t jv_to_str(jarena_t *a, jv_t v) {
    if (v.k == JV_STR) return v;
    jbuf_t b;
    jb_init(&b, a, 0);
    jv_write_str(&b, v);
    return jb_value(&b);
}

static void write_json_str(jbuf_t *b, const char *s, size_t n) {
    jb_addc(b, "\"");
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); esc = tmp; }
        }
        if (!esc) continue;
        jb_add(b, s + run, i - run);
        jb_addc(b, esc);
        run = i + 1;
    }
    jb_add(b, s + run, n - run);
    jb_addc(b, "\"");
}

static void newline_indent(jbuf_t *b, int indent, int level) {
    jb_addc(b, "\n");
    for (int i = 0; i < indent * level; i++) jb_addc(b, " ");
}

static int key_cmp(const void *x, const void *y) {
    const jv_t *a = *(const jv_t *const *)x, *b = *(const jv_t *const *)y;
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int c = memcmp(a->u.s.p, b->u.s.p, n);
    return c ? c : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
}

static void write_json(jbuf_t *b, jv_t v, int indent, int sort, int level, int line) {
    if (level > 256) jx_fail(b->a->fail, b->a->err, line, "tojson: value nested too deeply");
    const char *sep = indent >= 0 ? "," : ", ";
    switch (v.k) {
    case JV_NONE: jb_addc(b, "null"); return;
    case JV_BOOL: jb_addc(b, v.u.b ? "true" : "false"); return;
    case JV_INT: write_int(b, v.u.i); return;
    case JV_FLOAT:
        if (isnan(v.u.f)) jb_addc(b, "NaN");
        else if (isinf(v.u.f)) jb_addc(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else jv_write_float(b, v.u.f);
        return;
    case JV_STR: write_json_str(b, v.u.s.p, v.u.s.n); return;
    case JV_LIST:
        if (!v.u.l->n) { jb_addc(b, "[]"); return; }
        jb_addc(b, "[");
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jb_addc(b, sep);
            if (indent >= 0) newline_indent(b, indent, level + 1);
            write_json(b, v.u.l->v[i], indent, sort, level + 1, line);
        }
        if (indent >= 0) newline_indent(b, indent, level);
        jb_addc(b, "]");
        return;
    case JV_DICT: case JV_NS: {
        jdict_t *d = v.u.d;
        if (!d->n) { jb_addc(b, "{}"); return; }
        const jv_t **order = ja_alloc(b->a, d->n * sizeof *order);
        for (size_t i = 0; i < d->n; i++) {
            if (d->key[i].k != JV_STR)
                jx_fail(b->a->fail, b->a->err, line, "tojson: dict keys must be strings");
            order[i] = &d->key[i];
        }
        if (sort) qsort(order, d->n, sizeof *order, key_cmp);
        jb_addc(b, "{");
        for (size_t i = 0; i < d->n; i++) {
            if (i) jb_addc(b, sep);
            if (indent >= 0) newline_indent(b, indent, level + 1);
            write_json_str(b, order[i]->u.s.p, order[i]->u.s.n);
            jb_addc(b, ": ");
            write_json(b, d->val[order[i] - d->key], indent, sort, level + 1, line);
        }
        if (indent >= 0) newline_indent(b, indent, level);
        jb_addc(b, "}");
        return;
    }
    default:
        jx_fail(b->a->fail, b->a->err, line, "tojson: object of type %s is not JSON serializable",
                jv_type_name(v));
    }
}

void jv_write_json(jbuf_t *b, jv_t v, int indent, int sort, int line) {
    write_json(b, v, indent, sort, 0, line);
}

/* ---- UTF-8 ------------------------------------------------------------------------ */
size_t ju_len(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

size_t ju_offset(const char *s, size_t n, size_t i) {
    size_t c = 0;
    for (size_t o = 0; o < n; o++)
        if (((unsigned char)s[o] & 0xC0) != 0x80) {
            if (c == i) return o;
            c++;
        }
    return n;
}
