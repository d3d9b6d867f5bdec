/* grammar_parse.c - GBNF text -> grammar_t (see grammar.h).
 *
 * The accepted syntax is the llama.cpp GBNF subset: `name ::= body` rules
 * (the start rule is `root`), alternation `|`, sequences, groups `( )`,
 * postfix `*` `+` `?` `{m}` `{m,}` `{m,n}`, literals "..." with the escapes
 * \n \r \t \\ \" \' \xHH \uHHHH \UHHHHHHHH, character classes [a-z], [^"\\]
 * (same escapes), `.` (any character) and `#` comments. A rule's body may run
 * over several lines; it ends where the next line starts `name ::=`.
 *
 * Every construct is lowered to rules of alternatives of classes and
 * references: a literal is one class per code point, `X*` is a new rule
 * R ::= X R | (empty), `X{m,n}` is m copies of X then n-m nested optionals
 * (R_k ::= X R_{k-1} | (empty)), so the matcher sees only three element
 * kinds. Left recursion (direct, or through rules that can be empty) is an
 * error: the matcher expands references eagerly and would not terminate.
 */
#include "grammar_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPEAT 4096       /* largest m or n in {m,n} */
#define MAX_ELEMENTS (1u << 22)
#define MAX_DEPTH 256         /* group nesting */

typedef struct { gel_t *e; uint32_t n, cap; } elvec_t;
typedef struct { char *name; int defined; elvec_t *alts; uint32_t n_alts, cap_alts; } brule_t;

typedef struct {
    const char *src, *p, *end;
    brule_t *rules;
    uint32_t n_rules, cap_rules;
    gclass_t *cls;
    uint32_t n_cls, cap_cls;
    grange_t *ranges;
    uint32_t n_ranges, cap_ranges;
    int32_t ascii_cls[128];  /* class index of each single ASCII character, -1 if none yet */
    uint64_t n_el;
    int depth, failed;
    char *err;
    size_t errlen;
} bld_t;

/* ---- errors and growth --------------------------------------------------------------- */

static int fail_at(bld_t *b, const char *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_at(bld_t *b, const char *at, const char *fmt, ...) {
    if (b->failed) return -1;
    b->failed = 1;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!at) {
        snprintf(b->err, b->errlen, "%s", msg);
        return -1;
    }
    int line = 1, col = 1;
    for (const char *q = b->src; q < at && q < b->end; q++) {
        if (*q == '\n') { line++; col = 1; }
        else col++;
    }
    snprintf(b->err, b->errlen, "grammar line %d column %d: %s", line, col, msg);
    return -1;
}

static int oom(bld_t *b) { return fail_at(b, NULL, "out of memory"); }

static int grow(bld_t *b, void **arr, uint32_t *cap, uint32_t need, size_t size) {
    if (need <= *cap) return 0;
    uint32_t c = *cap ? *cap : 8;
    while (c < need) c *= 2;
    void *n = realloc(*arr, (size_t)c * size);
    if (!n) return oom(b);
    *arr = n;
    *cap = c;
    return 0;
}

static int el_push(bld_t *b, elvec_t *v, uint32_t type, uint32_t arg) {
    if (++b->n_el > MAX_ELEMENTS) return fail_at(b, b->p, "the grammar expands to more than %u elements", MAX_ELEMENTS);
    if (grow(b, (void **)&v->e, &v->cap, v->n + 1, sizeof *v->e)) return -1;
    v->e[v->n++] = (gel_t){type, arg};
    return 0;
}

static int el_append(bld_t *b, elvec_t *dst, const elvec_t *src) {
    for (uint32_t i = 0; i < src->n; i++)
        if (el_push(b, dst, src->e[i].type, src->e[i].arg)) return -1;
    return 0;
}

/* ---- rules --------------------------------------------------------------------------- */

static int new_rule(bld_t *b, char *name) {
    if (!name || grow(b, (void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules)) {
        free(name);
        return name ? -1 : oom(b);
    }
    b->rules[b->n_rules] = (brule_t){.name = name};
    return (int)b->n_rules++;
}

static int find_rule(bld_t *b, const char *name, size_t len) {
    for (uint32_t i = 0; i < b->n_rules; i++)
        if (strlen(b->rules[i].name) == len && !memcmp(b->rules[i].name, name, len)) return (int)i;
    return new_rule(b, strndup(name, len));
}

/* A generated rule, named after the rule it serves (for error messages). */
static int anon_rule(bld_t *b, int parent) {
    char name[96];
    snprintf(name, sizeof name, "%.60s#%u", b->rules[parent].name, b->n_rules);
    int r = new_rule(b, strdup(name));
    if (r >= 0) b->rules[r].defined = 1;
    return r;
}

static int add_alt(bld_t *b, int rule, elvec_t *seq) { /* takes seq */
    brule_t *r = &b->rules[rule];
    if (grow(b, (void **)&r->alts, &r->cap_alts, r->n_alts + 1, sizeof *r->alts)) {
        free(seq->e);
        return -1;
    }
    r->alts[r->n_alts++] = *seq;
    *seq = (elvec_t){0};
    return 0;
}

/* ---- character classes ------------------------------------------------------------------ */

static int cmp_range(const void *a, const void *c) {
    const grange_t *x = a, *y = c;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Adds [lo, hi] to class c (room in b->ranges reserved by the caller). */
static void class_add_range(bld_t *b, gclass_t *c, grange_t r) {
    for (uint32_t cp = r.lo; cp <= r.hi && cp < 128; cp++) c->ascii[cp >> 6] |= 1ull << (cp & 63);
    if (r.hi >= 128) b->ranges[b->n_ranges++] = (grange_t){r.lo < 128 ? 128 : r.lo, r.hi};
}

/* Normalizes ranges (sorted, merged, negated if asked) into a new class. */
static int add_class(bld_t *b, grange_t *r, uint32_t n, int negate) {
    if (n) qsort(r, n, sizeof *r, cmp_range);
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (m && r[i].lo <= r[m - 1].hi + 1) {
            if (r[i].hi > r[m - 1].hi) r[m - 1].hi = r[i].hi;
        } else {
            r[m++] = r[i];
        }
    }
    if (grow(b, (void **)&b->cls, &b->cap_cls, b->n_cls + 1, sizeof *b->cls) ||
        grow(b, (void **)&b->ranges, &b->cap_ranges, b->n_ranges + m + 1, sizeof *b->ranges))
        return -1;
    gclass_t *c = &b->cls[b->n_cls];
    memset(c, 0, sizeof *c);
    c->r0 = b->n_ranges;
    if (negate) { /* the gaps between the ranges, over all of Unicode (at most m + 1) */
        uint32_t next = 0;
        for (uint32_t i = 0; i < m; i++) {
            if (r[i].lo > next) class_add_range(b, c, (grange_t){next, r[i].lo - 1});
            next = r[i].hi + 1;
        }
        if (next <= 0x10FFFF) class_add_range(b, c, (grange_t){next, 0x10FFFF});
    } else {
        for (uint32_t i = 0; i < m; i++) class_add_range(b, c, r[i]);
    }
    c->nr = b->n_ranges - c->r0;
    return (int)b->n_cls++;
}

static int char_class(bld_t *b, uint32_t cp) {
    if (cp < 128 && b->ascii_cls[cp] >= 0) return b->ascii_cls[cp];
    grange_t r = {cp, cp};
    int c = add_class(b, &r, 1, 0);
    if (c >= 0 && cp < 128) b->ascii_cls[cp] = c;
    return c;
}

/* ---- lexing ------------------------------------------------------------------------------ */

static int is_name(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static const char *skip_blank(const char *p, const char *end) { /* spaces, tabs, comments */
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
        if (p < end && *p == '#') {
            while (p < end && *p != '\n') p++;
            continue;
        }
        return p;
    }
}

static const char *skip_all(const char *p, const char *end) { /* and newlines */
    for (;;) {
        p = skip_blank(p, end);
        if (p < end && *p == '\n') { p++; continue; }
        return p;
    }
}

/* At `name ::=` (after blanks)? */
static int rule_start(const char *p, const char *end) {
    p = skip_all(p, end);
    const char *q = p;
    while (q < end && is_name(*q)) q++;
    if (q == p) return 0;
    q = skip_blank(q, end);
    return end - q >= 3 && !memcmp(q, "::=", 3);
}

/* Skips blanks within a sequence; a newline continues the body unless the
 * next rule (or the end) follows, or we are inside a group. */
static void seq_space(bld_t *b) {
    for (;;) {
        b->p = skip_blank(b->p, b->end);
        if (b->p < b->end && *b->p == '\n') {
            if (b->depth == 0 && (skip_all(b->p, b->end) == b->end || rule_start(b->p, b->end))) return;
            b->p++;
            continue;
        }
        return;
    }
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One UTF-8 code point (raw, or an escape); -1 with an error. */
static long read_char(bld_t *b) {
    const char *at = b->p;
    if (b->p >= b->end) return fail_at(b, at, "unexpected end of the grammar");
    unsigned char c = (unsigned char)*b->p++;
    if (c == '\\') {
        if (b->p >= b->end) return fail_at(b, at, "unexpected end after '\\'");
        char e = *b->p++;
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t v = 0;
            for (int i = 0; i < digits; i++) {
                int h = b->p < b->end ? hexval(*b->p) : -1;
                if (h < 0) return fail_at(b, at, "'\\%c' needs %d hex digits", e, digits);
                v = v * 16 + (uint32_t)h;
                b->p++;
            }
            if (v > 0x10FFFF) return fail_at(b, at, "code point U+%X is beyond U+10FFFF", v);
            return v;
        }
        switch (e) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '0': return 0;
        case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/': case '.':
            return (unsigned char)e;
        default: return fail_at(b, at, "unknown escape '\\%c'", e);
        }
    }
    if (c < 0x80) return c;
    int n = c >= 0xF0 && c < 0xF5 ? 3 : c >= 0xE0 && c < 0xF0 ? 2 : c >= 0xC2 && c < 0xE0 ? 1 : -1;
    if (n < 0) return fail_at(b, at, "invalid UTF-8 in the grammar");
    uint32_t v = c & (0x3F >> n);
    for (int i = 0; i < n; i++) {
        if (b->p >= b->end || ((unsigned char)*b->p & 0xC0) != 0x80) return fail_at(b, at, "invalid UTF-8 in the grammar");
        v = v << 6 | ((unsigned char)*b->p++ & 0x3F);
    }
    return v;
}

/* ---- parsing ------------------------------------------------------------------------------- */

static int parse_alternates(bld_t *b, int rule);

static int parse_literal(bld_t *b, elvec_t *out) {
    const char *at = b->p++;
    while (b->p < b->end && *b->p != '"') {
        if (*b->p == '\n') return fail_at(b, at, "unterminated literal");
        long cp = read_char(b);
        if (cp < 0) return -1;
        int c = char_class(b, (uint32_t)cp);
        if (c < 0 || el_push(b, out, GE_CLASS, (uint32_t)c)) return -1;
    }
    if (b->p >= b->end) return fail_at(b, at, "unterminated literal");
    b->p++;
    return 0;
}

static int parse_class(bld_t *b, elvec_t *out) {
    const char *at = b->p++;
    int negate = b->p < b->end && *b->p == '^';
    if (negate) b->p++;
    grange_t *r = NULL;
    uint32_t n = 0, cap = 0;
    while (b->p < b->end && *b->p != ']') {
        if (*b->p == '\n') { free(r); return fail_at(b, at, "unterminated character class"); }
        long lo = read_char(b), hi = lo;
        if (lo < 0) { free(r); return -1; }
        if (b->p + 1 < b->end && *b->p == '-' && b->p[1] != ']') {
            b->p++;
            if ((hi = read_char(b)) < 0) { free(r); return -1; }
            if (hi < lo) { free(r); return fail_at(b, at, "range end U+%lX is below its start U+%lX", hi, lo); }
        }
        if (grow(b, (void **)&r, &cap, n + 1, sizeof *r)) { free(r); return -1; }
        r[n++] = (grange_t){(uint32_t)lo, (uint32_t)hi};
    }
    if (b->p >= b->end) { free(r); return fail_at(b, at, "unterminated character class"); }
    b->p++;
    if (n == 0 && !negate) { free(r); return fail_at(b, at, "empty character class"); }
    int c = add_class(b, r, n, negate);
    free(r);
    return c < 0 ? -1 : el_push(b, out, GE_CLASS, (uint32_t)c);
}

static long parse_count(bld_t *b) {
    const char *at = b->p;
    long v = 0;
    if (b->p >= b->end || *b->p < '0' || *b->p > '9') return fail_at(b, at, "expected a number in {m,n}");
    while (b->p < b->end && *b->p >= '0' && *b->p <= '9') {
        v = v * 10 + (*b->p++ - '0');
        if (v > MAX_REPEAT) return fail_at(b, at, "repetition counts are limited to %d", MAX_REPEAT);
    }
    return v;
}

/* Applies a postfix operator (if any) to item, appending the result to seq. */
static int postfix(bld_t *b, int rule, elvec_t *item, elvec_t *seq) {
    const char *at = b->p;
    long lo, hi; /* hi < 0: unbounded */
    char c = b->p < b->end ? *b->p : 0;
    if (c == '*') { lo = 0; hi = -1; b->p++; }
    else if (c == '+') { lo = 1; hi = -1; b->p++; }
    else if (c == '?') { lo = 0; hi = 1; b->p++; }
    else if (c == '{') {
        b->p++;
        b->p = skip_blank(b->p, b->end);
        if ((lo = parse_count(b)) < 0) return -1;
        b->p = skip_blank(b->p, b->end);
        hi = lo;
        if (b->p < b->end && *b->p == ',') {
            b->p = skip_blank(b->p + 1, b->end);
            hi = b->p < b->end && *b->p == '}' ? -1 : parse_count(b);
            if (hi < -1 || b->failed) return -1;
            b->p = skip_blank(b->p, b->end);
        }
        if (b->p >= b->end || *b->p != '}') return fail_at(b, at, "expected '}' to close {m,n}");
        b->p++;
        if (hi >= 0 && hi < lo) return fail_at(b, at, "{%ld,%ld}: the maximum is below the minimum", lo, hi);
    } else {
        return el_append(b, seq, item);
    }
    if (b->p < b->end && (*b->p == '*' || *b->p == '+' || *b->p == '?' || *b->p == '{'))
        return fail_at(b, b->p, "two repetition operators in a row (use a group)");
    if (item->n != 1) { /* repeat the whole item: make it one reference */
        int r = anon_rule(b, rule);
        elvec_t copy = {0};
        if (r < 0 || el_append(b, &copy, item) || add_alt(b, r, &copy)) { free(copy.e); return -1; }
        item->n = 0;
        if (el_push(b, item, GE_REF, (uint32_t)r)) return -1;
    }
    for (long i = 0; i < lo; i++)
        if (el_append(b, seq, item)) return -1;
    if (hi == lo) return 0;
    int tail = -1;
    if (hi < 0) { /* R ::= X R | (empty) */
        if ((tail = anon_rule(b, rule)) < 0) return -1;
        elvec_t a = {0}, e = {0};
        if (el_append(b, &a, item) || el_push(b, &a, GE_REF, (uint32_t)tail) || add_alt(b, tail, &a) ||
            add_alt(b, tail, &e)) { free(a.e); return -1; }
    } else {
        for (long k = 0; k < hi - lo; k++) { /* R_k ::= X R_{k-1} | (empty) */
            int r = anon_rule(b, rule);
            elvec_t a = {0}, e = {0};
            if (r < 0 || el_append(b, &a, item) || (tail >= 0 && el_push(b, &a, GE_REF, (uint32_t)tail)) ||
                add_alt(b, r, &a) || add_alt(b, r, &e)) { free(a.e); return -1; }
            tail = r;
        }
    }
    return el_push(b, seq, GE_REF, (uint32_t)tail);
}

static int parse_sequence(bld_t *b, int rule, elvec_t *seq) {
    for (;;) {
        seq_space(b);
        if (b->p >= b->end) return 0;
        char c = *b->p;
        elvec_t item = {0};
        int rc = 0;
        if (c == '"') {
            rc = parse_literal(b, &item);
        } else if (c == '[') {
            rc = parse_class(b, &item);
        } else if (c == '.') {
            b->p++;
            grange_t none;
            int k = add_class(b, &none, 0, 1); /* negating the empty set: every code point */
            rc = k < 0 ? -1 : el_push(b, &item, GE_CLASS, (uint32_t)k);
        } else if (is_name(c)) {
            const char *s = b->p;
            while (b->p < b->end && is_name(*b->p)) b->p++;
            int r = find_rule(b, s, (size_t)(b->p - s));
            rc = r < 0 ? -1 : el_push(b, &item, GE_REF, (uint32_t)r);
        } else if (c == '(') {
            const char *at = b->p++;
            if (++b->depth > MAX_DEPTH) return fail_at(b, at, "groups nested deeper than %d", MAX_DEPTH);
            int r = anon_rule(b, rule);
            rc = r < 0 ? -1 : parse_alternates(b, r);
            b->depth--;
            seq_space(b);
            if (!rc && (b->p >= b->end || *b->p != ')')) rc = fail_at(b, at, "unclosed '('");
            if (!rc) {
                b->p++;
                rc = el_push(b, &item, GE_REF, (uint32_t)r);
            }
        } else {
            return 0; /* '|', ')', a newline ending the rule, or an error the caller reports */
        }
        if (rc || postfix(b, rule, &item, seq)) { free(item.e); return -1; }
        free(item.e);
    }
}

static int parse_alternates(bld_t *b, int rule) {
    for (;;) {
        elvec_t seq = {0};
        if (parse_sequence(b, rule, &seq) || add_alt(b, rule, &seq)) { free(seq.e); return -1; }
        if (b->p < b->end && *b->p == '|') {
            b->p = skip_all(b->p + 1, b->end);
            continue;
        }
        return 0;
    }
}

static int parse_rules(bld_t *b) {
    for (;;) {
        b->p = skip_all(b->p, b->end);
        if (b->p >= b->end) return 0;
        const char *s = b->p;
        while (b->p < b->end && is_name(*b->p)) b->p++;
        if (b->p == s) return fail_at(b, s, "expected a rule name");
        int r = find_rule(b, s, (size_t)(b->p - s));
        if (r < 0) return -1;
        if (b->rules[r].defined) return fail_at(b, s, "rule '%s' is defined twice", b->rules[r].name);
        b->rules[r].defined = 1;
        b->p = skip_blank(b->p, b->end);
        if (b->end - b->p < 3 || memcmp(b->p, "::=", 3)) return fail_at(b, b->p, "expected '::=' after '%s'", b->rules[r].name);
        b->p = skip_all(b->p + 3, b->end);
        if (parse_alternates(b, r)) return -1;
        b->p = skip_blank(b->p, b->end);
        if (b->p < b->end && *b->p != '\n') {
            if (*b->p == ')') return fail_at(b, b->p, "unmatched ')'");
            return fail_at(b, b->p, "unexpected '%c'", *b->p);
        }
    }
}

/* ---- checks ------------------------------------------------------------------------------------ */

/* Rules that can match the empty string. */
static char *nullable_rules(bld_t *b) {
    char *nullable = calloc(b->n_rules ? b->n_rules : 1, 1);
    if (!nullable) return NULL;
    for (int changed = 1; changed;) {
        changed = 0;
        for (uint32_t r = 0; r < b->n_rules; r++) {
            for (uint32_t a = 0; a < b->rules[r].n_alts && !nullable[r]; a++) {
                elvec_t *v = &b->rules[r].alts[a];
                uint32_t i = 0;
                while (i < v->n && v->e[i].type == GE_REF && nullable[v->e[i].arg]) i++;
                if (i == v->n) nullable[r] = changed = 1;
            }
        }
    }
    return nullable;
}

/* Depth-first over the edges "r may begin with s" (s referenced after only
 * nullable references); reaching a rule still on the path is left recursion. */
static int check_left_recursion(bld_t *b) {
    uint32_t n = b->n_rules;
    char *nullable = nullable_rules(b), *color = calloc(n ? n : 1, 1);
    uint32_t *rule = malloc((size_t)(n ? n : 1) * sizeof *rule), *alt = malloc((size_t)(n ? n : 1) * sizeof *alt);
    uint32_t *elem = malloc((size_t)(n ? n : 1) * sizeof *elem);
    int rc = -1;
    if (!nullable || !color || !rule || !alt || !elem) { oom(b); goto out; }
    for (uint32_t start = 0; start < n; start++) {
        if (color[start]) continue;
        uint32_t sp = 0;
        rule[sp] = start; alt[sp] = 0; elem[sp] = 0; sp++;
        color[start] = 1;
        while (sp) {
            uint32_t r = rule[sp - 1];
            int pushed = 0;
            while (!pushed && alt[sp - 1] < b->rules[r].n_alts) {
                elvec_t *v = &b->rules[r].alts[alt[sp - 1]];
                uint32_t i = elem[sp - 1];
                if (i >= v->n || v->e[i].type != GE_REF) { alt[sp - 1]++; elem[sp - 1] = 0; continue; }
                uint32_t s = v->e[i].arg;
                if (nullable[s]) elem[sp - 1]++;
                else { alt[sp - 1]++; elem[sp - 1] = 0; }
                if (color[s] == 1) {
                    fail_at(b, NULL, "rule '%s' is left-recursive (it can begin with itself)", b->rules[s].name);
                    goto out;
                }
                if (color[s] == 0) {
                    color[s] = 1;
                    rule[sp] = s; alt[sp] = 0; elem[sp] = 0; sp++;
                    pushed = 1;
                }
            }
            if (!pushed) { color[r] = 2; sp--; }
        }
    }
    rc = 0;
out:
    free(nullable); free(color); free(rule); free(alt); free(elem);
    return rc;
}

static grammar_t *flatten(bld_t *b) {
    grammar_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    uint32_t n_alts = 0, n_el = 0;
    for (uint32_t r = 0; r < b->n_rules; r++) {
        n_alts += b->rules[r].n_alts;
        for (uint32_t a = 0; a < b->rules[r].n_alts; a++) n_el += b->rules[r].alts[a].n + 1;
    }
    g->el = malloc((size_t)n_el * sizeof *g->el);
    g->alt = malloc((size_t)(n_alts ? n_alts : 1) * sizeof *g->alt);
    g->rule_alt = malloc((size_t)(b->n_rules + 1) * sizeof *g->rule_alt);
    if (!g->el || !g->alt || !g->rule_alt) {
        free(g->el); free(g->alt); free(g->rule_alt); free(g);
        return NULL;
    }
    uint32_t e = 0, k = 0;
    for (uint32_t r = 0; r < b->n_rules; r++) {
        g->rule_alt[r] = k;
        for (uint32_t a = 0; a < b->rules[r].n_alts; a++) {
            g->alt[k++] = e;
            if (b->rules[r].alts[a].n) /* an empty alternative has no elements (and e may be NULL) */
                memcpy(g->el + e, b->rules[r].alts[a].e, (size_t)b->rules[r].alts[a].n * sizeof *g->el);
            e += b->rules[r].alts[a].n;
            g->el[e++] = (gel_t){GE_END, 0};
        }
    }
    g->rule_alt[b->n_rules] = k;
    g->n_el = e;
    g->n_rules = b->n_rules;
    g->cls = b->cls; b->cls = NULL;
    g->n_cls = b->n_cls;
    g->ranges = b->ranges; b->ranges = NULL;
    g->n_ranges = b->n_ranges;
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->mu, NULL);
    return g;
}

grammar_t *grammar_parse(const char *text, size_t len, char *err, size_t errlen) {
    bld_t b = {.src = text, .p = text, .end = text + len, .err = err, .errlen = errlen};
    memset(b.ascii_cls, -1, sizeof b.ascii_cls);
    grammar_t *g = NULL;
    if (parse_rules(&b) == 0) {
        int root = -1;
        for (uint32_t r = 0; r < b.n_rules; r++) {
            if (!b.rules[r].defined) {
                fail_at(&b, NULL, "rule '%s' is used but not defined", b.rules[r].name);
                break;
            }
            if (!strcmp(b.rules[r].name, "root")) root = (int)r;
        }
        if (!b.failed && root < 0) fail_at(&b, NULL, "the grammar has no 'root' rule");
        if (!b.failed && check_left_recursion(&b) == 0) {
            if ((g = flatten(&b))) g->root = (uint32_t)root;
            else oom(&b);
        }
    }
    for (uint32_t r = 0; r < b.n_rules; r++) {
        for (uint32_t a = 0; a < b.rules[r].n_alts; a++) free(b.rules[r].alts[a].e);
        free(b.rules[r].alts);
        free(b.rules[r].name);
    }
    free(b.rules); free(b.cls); free(b.ranges);
    return g;
}

int grammar_n_rules(const grammar_t *g) { return (int)g->n_rules; }

/* ---- classes at match time ------------------------------------------------------------------------ */

int gclass_has(const grammar_t *g, uint32_t cls, uint32_t cp) {
    const gclass_t *c = &g->cls[cls];
    if (cp < 128) return (int)(c->ascii[cp >> 6] >> (cp & 63)) & 1;
    const grange_t *r = g->ranges + c->r0;
    uint32_t lo = 0, hi = c->nr;
    while (lo < hi) { /* first range with r.hi >= cp */
        uint32_t mid = (lo + hi) / 2;
        if (r[mid].hi < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->nr && r[lo].lo <= cp;
}

int gclass_meets(const grammar_t *g, uint32_t cls, uint32_t lo, uint32_t hi) {
    const gclass_t *c = &g->cls[cls];
    for (uint32_t cp = lo; cp <= hi && cp < 128; cp++)
        if ((c->ascii[cp >> 6] >> (cp & 63)) & 1) return 1;
    const grange_t *r = g->ranges + c->r0;
    for (uint32_t i = 0; i < c->nr; i++)
        if (r[i].lo <= hi && r[i].hi >= lo) return 1;
    return 0;
}
