/* jinja_lex.c - template source to tokens, with jinja2's whitespace rules
 * as Hugging Face configures them (trim_blocks and lstrip_blocks on):
 *
 *   {%- / {{- / {#-   strip all whitespace before the tag
 *   -%} / -}} / -#}   strip all whitespace after it
 *   %} and #}         drop one newline right after (trim_blocks)
 *   {% and {#         on a line holding only spaces before them, drop those
 *                     spaces (lstrip_blocks; {%+ opts out)
 *
 * Newlines are normalized to \n and one trailing newline is dropped, as
 * jinja2 does. Comments produce no tokens. */
#include "jinja_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    jarena_t *a;
    const char *s;
    size_t n, pos;
    int line;
    jtoks_t out;
    size_t cap;
} lexer_t;

#define LFAIL(L, ...) jx_fail((L)->a->fail, (L)->a->err, (L)->line, __VA_ARGS__)

static jtok_t *emit(lexer_t *L, jtok_kind_t k, const char *p, size_t n, int line) {
    if (L->out.n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jtok_t *v = ja_alloc(L->a, cap * sizeof *v);
        if (L->out.n) memcpy(v, L->out.v, L->out.n * sizeof *v);
        L->out.v = v;
        L->cap = cap;
    }
    jtok_t *t = &L->out.v[L->out.n++];
    t->k = k;
    t->p = p;
    t->n = n;
    t->line = line;
    return t;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static void count_lines(lexer_t *L, size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        if (L->s[i] == '\n') L->line++;
}

/* Position of the next "{{", "{%" or "{#" at or after pos, or n. */
static size_t next_tag(const lexer_t *L, size_t pos) {
    for (size_t i = pos; i + 1 < L->n; i++)
        if (L->s[i] == '{' && (L->s[i + 1] == '{' || L->s[i + 1] == '%' || L->s[i + 1] == '#'))
            return i;
    return L->n;
}

/* A string literal at L->pos (quote included); unescaped as Python's
 * unicode-escape codec does for the common escapes. */
static void lex_string(lexer_t *L) {
    char q = L->s[L->pos];
    size_t i = L->pos + 1;
    jbuf_t b;
    jb_init(&b, L->a, 0);
    int line = L->line;
    for (;;) {
        if (i >= L->n) LFAIL(L, "unterminated string literal");
        char c = L->s[i];
        if (c == q) break;
        if (c == '\n') L->line++;
        if (c != '\\' || i + 1 >= L->n) {
            jb_add(&b, &c, 1);
            i++;
            continue;
        }
        char e = L->s[i + 1], ch = 0;
        i += 2;
        switch (e) {
        case 'n': ch = '\n'; break;
        case 't': ch = '\t'; break;
        case 'r': ch = '\r'; break;
        case '\\': ch = '\\'; break;
        case '\'': ch = '\''; break;
        case '"': ch = '"'; break;
        case 'a': ch = '\a'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'v': ch = '\v'; break;
        case '0': ch = 0; break;
        case '\n': L->line++; continue;  /* line continuation */
        case 'x': case 'u': case 'U': {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned cp = 0;
            for (int d = 0; d < digits; d++, i++) {
                if (i >= L->n || !isxdigit((unsigned char)L->s[i])) LFAIL(L, "bad \\%c escape in string", e);
                char h = L->s[i];
                cp = cp * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
            }
            if (cp > 0x10FFFF) LFAIL(L, "bad \\%c escape in string", e);
            char u[4];
            size_t un;
            if (cp < 0x80) { u[0] = (char)cp; un = 1; }
            else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 63)); un = 2; }
            else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 63));
                u[2] = (char)(0x80 | (cp & 63)); un = 3;
            } else {
                u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 63));
                u[2] = (char)(0x80 | ((cp >> 6) & 63)); u[3] = (char)(0x80 | (cp & 63)); un = 4;
            }
            jb_add(&b, u, un);
            continue;
        }
        default: {
            char two[2] = {'\\', e};  /* unknown escapes stay as written */
            jb_add(&b, two, 2);
            continue;
        }
        }
        jb_add(&b, &ch, 1);
    }
    jtok_t *t = emit(L, TK_STRING, b.p ? b.p : "", b.n, line);
    (void)t;
    L->pos = i + 1;
}

static void lex_number(lexer_t *L) {
    size_t i = L->pos;
    int is_float = 0;
    while (i < L->n && (isdigit((unsigned char)L->s[i]) || L->s[i] == '_')) i++;
    if (i + 1 < L->n && L->s[i] == '.' && isdigit((unsigned char)L->s[i + 1])) {
        is_float = 1;
        i++;
        while (i < L->n && (isdigit((unsigned char)L->s[i]) || L->s[i] == '_')) i++;
    }
    if (i < L->n && (L->s[i] == 'e' || L->s[i] == 'E')) {
        size_t j = i + 1;
        if (j < L->n && (L->s[j] == '+' || L->s[j] == '-')) j++;
        if (j < L->n && isdigit((unsigned char)L->s[j])) {
            is_float = 1;
            i = j;
            while (i < L->n && isdigit((unsigned char)L->s[i])) i++;
        }
    }
    char tmp[64];
    size_t tn = 0;
    for (size_t k = L->pos; k < i && tn < sizeof tmp - 1; k++)
        if (L->s[k] != '_') tmp[tn++] = L->s[k];
    tmp[tn] = 0;
    jtok_t *t = emit(L, is_float ? TK_FLOAT : TK_INT, L->s + L->pos, i - L->pos, L->line);
    if (is_float) t->f = strtod(tmp, NULL);
    else {
        errno = 0;
        t->i = strtoll(tmp, NULL, 10);
        if (errno) LFAIL(L, "integer literal out of range");
    }
    L->pos = i;
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                  "~", "<", ">", "=", ".", ",", ":", "|", "(", ")", "[", "]",
                                  "{", "}", ";", NULL};

/* The inside of {{ }} or {% %}; returns after the end tag. Sets
 * *trail to the number of bytes of the end match (for line_starting). */
static int lex_tag(lexer_t *L, int block) {
    int depth = 0;
    const char *end = block ? "%}" : "}}";
    for (;;) {
        while (L->pos < L->n && is_ws(L->s[L->pos])) {
            if (L->s[L->pos] == '\n') L->line++;
            L->pos++;
        }
        if (L->pos >= L->n)
            LFAIL(L, "unexpected end of template: missing '%s'", end);
        const char *p = L->s + L->pos;
        size_t left = L->n - L->pos;
        if (depth == 0) {
            int sign = (*p == '-' || (*p == '+' && block)) ? *p : 0;
            size_t off = sign ? 1 : 0;
            if (left >= off + 2 && memcmp(p + off, end, 2) == 0) {
                emit(L, block ? TK_BLOCK_END : TK_VAR_END, p, 2 + off, L->line);
                L->pos += off + 2;
                if (sign == '-') {
                    while (L->pos < L->n && is_ws(L->s[L->pos])) {
                        if (L->s[L->pos] == '\n') L->line++;
                        L->pos++;
                    }
                } else if (!sign && block && L->pos < L->n && L->s[L->pos] == '\n') {
                    L->pos++;
                    L->line++;
                }
                return L->pos > 0 && L->s[L->pos - 1] == '\n';
            }
        }
        unsigned char c = (unsigned char)*p;
        if (c == '\'' || c == '"') { lex_string(L); continue; }
        if (isdigit(c)) { lex_number(L); continue; }
        if (isalpha(c) || c == '_') {
            size_t i = L->pos;
            while (i < L->n && (isalnum((unsigned char)L->s[i]) || L->s[i] == '_')) i++;
            emit(L, TK_NAME, ja_strdup(L->a, p, i - L->pos), i - L->pos, L->line);
            L->pos = i;
            continue;
        }
        int matched = 0;
        for (int k = 0; OPS[k]; k++) {
            size_t on = strlen(OPS[k]);
            if (left >= on && memcmp(p, OPS[k], on) == 0) {
                if (on == 1 && strchr("([{", *p)) depth++;
                if (on == 1 && strchr(")]}", *p)) {
                    if (depth == 0) LFAIL(L, "unexpected '%c'", *p);
                    depth--;
                }
                emit(L, TK_OP, OPS[k], on, L->line);
                L->pos += on;
                matched = 1;
                break;
            }
        }
        if (!matched) LFAIL(L, "unexpected character '%c' in tag", *p);
    }
}

/* Normalizes \r\n and \r to \n and drops one trailing newline. */
static char *normalize(jarena_t *a, const char *src, size_t len, size_t *out_n) {
    char *d = ja_alloc(a, len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            d[o++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            d[o++] = src[i];
        }
    }
    if (o && d[o - 1] == '\n') o--;
    d[o] = 0;
    *out_n = o;
    return d;
}

jtoks_t jlex(jarena_t *a, const char *src, size_t len) {
    lexer_t L = {.a = a, .line = 1};
    L.s = normalize(a, src, len, &L.n);
    int line_starting = 1;
    while (L.pos < L.n) {
        size_t tag = next_tag(&L, L.pos);
        size_t text_end = tag;
        char kind = tag < L.n ? L.s[tag + 1] : 0;
        char sign = tag + 2 < L.n && (L.s[tag + 2] == '-' || L.s[tag + 2] == '+') ? L.s[tag + 2] : 0;
        if (tag < L.n) {
            if (sign == '-') {
                while (text_end > L.pos && is_ws(L.s[text_end - 1])) text_end--;
            } else if (sign != '+' && kind != '{') {
                size_t l_pos = text_end;
                while (l_pos > L.pos && L.s[l_pos - 1] != '\n') l_pos--;
                int at_line_start = l_pos > L.pos || line_starting;
                int only_ws = l_pos < text_end;
                for (size_t i = l_pos; i < text_end && only_ws; i++)
                    if (!is_ws(L.s[i])) only_ws = 0;
                if (at_line_start && only_ws) text_end = l_pos;
            }
        }
        if (text_end > L.pos) emit(&L, TK_DATA, L.s + L.pos, text_end - L.pos, L.line);
        count_lines(&L, L.pos, tag);
        if (tag >= L.n) break;
        L.pos = tag + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            int line = L.line;
            size_t i = L.pos;
            while (i + 1 < L.n && !(L.s[i] == '#' && L.s[i + 1] == '}')) i++;
            if (i + 1 >= L.n) {
                L.line = line;
                LFAIL(&L, "missing end of comment tag");
            }
            char csign = i > L.pos && (L.s[i - 1] == '-' || L.s[i - 1] == '+') ? L.s[i - 1] : 0;
            count_lines(&L, L.pos, i);
            L.pos = i + 2;
            if (csign == '-') {
                while (L.pos < L.n && is_ws(L.s[L.pos])) {
                    if (L.s[L.pos] == '\n') L.line++;
                    L.pos++;
                }
            } else if (!csign && L.pos < L.n && L.s[L.pos] == '\n') {
                L.pos++;
                L.line++;
            }
            line_starting = L.s[L.pos - 1] == '\n';
            continue;
        }
        emit(&L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, L.s + tag, 2, L.line);
        line_starting = lex_tag(&L, kind == '%');
    }
    emit(&L, TK_EOF, "", 0, L.line);
    return L.out;
}
