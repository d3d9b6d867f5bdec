/* recipe.c - parsing and bit accounting of quantization recipes. */
#include "recipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "8/4:b64:s0.875" (the part after "sq:") up to an optional ":tail". */
static int parse_sq(const char *s, sq_cfg_t *c, const char **tail) {
    int hh, hl, b, n = 0;
    double sp;
    if (sscanf(s, "%d/%d:b%d:s%lf%n", &hh, &hl, &b, &sp, &n) != 4) return -1;
    *c = (sq_cfg_t){hh, hl, b, sp};
    *tail = s + n;
    return 0;
}

int recipe_parse_w(const char *s, wrecipe_t *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    const char *tail = "";
    if (!strcmp(s, "fp32") || !strcmp(s, "none")) return 0;
    if (!strncmp(s, "sq:", 3)) {
        r->kind = WQ_SQ;
        if (parse_sq(s + 3, &r->sq, &tail) != 0) goto bad;
        const char *why = sq_cfg_check(&r->sq, 0);
        if (why) {
            snprintf(err, errlen, "weights recipe '%s': %s", s, why);
            return -1;
        }
    } else if (!strncmp(s, "int", 3)) {
        int n = 0;
        r->kind = WQ_INT;
        if (sscanf(s + 3, "%d%n", &r->bits, &n) != 1 || r->bits < 2 || r->bits > 8) goto bad;
        tail = s + 3 + n;
        /* ":g64" is a group size; ":gptq" is the tail below */
        if (!strncmp(tail, ":g", 2) && tail[2] >= '0' && tail[2] <= '9') {
            int m = 0;
            if (sscanf(tail + 2, "%ld%n", &r->group, &m) != 1 || r->group < 8 || r->group % 8) goto bad;
            tail += 2 + m;
        }
    } else {
        goto bad;
    }
    if (!strcmp(tail, ":gptq")) r->gptq = 1;
    else if (*tail) goto bad;
    return 0;
bad:
    snprintf(err, errlen, "bad weights recipe '%s' (e.g. fp32, int8, int4:g64[:gptq], sq:8/4:b64:s0.875[:gptq])", s);
    return -1;
}

int recipe_parse_a(const char *s, arecipe_t *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    if (!strcmp(s, "fp32") || !strcmp(s, "none") || !strcmp(s, "a16")) return 0;
    const char *tail;
    if (!strncmp(s, "sq:", 3) && parse_sq(s + 3, &r->sq, &tail) == 0) {
        const char *why = sq_cfg_check(&r->sq, 0);
        if (why) {
            snprintf(err, errlen, "activations recipe '%s': %s", s, why);
            return -1;
        }
        if (!strcmp(tail, ":static") || !*tail) { r->kind = AQ_SQ_STATIC; return 0; }
        if (!strcmp(tail, ":static-max")) { r->kind = AQ_SQ_STATIC; r->by_max = 1; return 0; }
        if (!strcmp(tail, ":dynamic")) { r->kind = AQ_SQ_DYNAMIC; return 0; }
    } else if (!strncmp(s, "int", 3)) {
        char *end;
        long bits = strtol(s + 3, &end, 10);
        if (!*end && bits >= 2 && bits <= 8) {
            r->kind = AQ_INT;
            r->bits = (int)bits;
            return 0;
        }
    }
    snprintf(err, errlen, "bad activations recipe '%s' (e.g. fp32, int8, int4, sq:8/4:b64:s0.875:static|static-max|dynamic)", s);
    return -1;
}

double recipe_w_bits(const wrecipe_t *r, long k) {
    switch (r->kind) {
    /* as stored: codes in 2/4/8-bit fields (sq_code_bits), float scales */
    case WQ_INT: return sq_code_bits(r->bits) + 32.0 / (double)(r->group ? r->group : k);
    case WQ_SQ: {
        sq_cfg_t fit = r->sq; /* the bank a k-wide row takes */
        sq_cfg_fit(&r->sq, k, 1, &fit);
        return sq_bits_per_element(&fit);
    }
    default: return 32;
    }
}

double recipe_a_bits(const arecipe_t *r) {
    switch (r->kind) {
    case AQ_INT: return r->bits;
    case AQ_SQ_STATIC: /* the high-channel mask is fixed per matrix: free per token */
        return (1.0 - r->sq.s) * r->sq.h_high + r->sq.s * r->sq.h_low;
    case AQ_SQ_DYNAMIC: /* plus an 8-bit position per high element */
        return (1.0 - r->sq.s) * (r->sq.h_high + 8) + r->sq.s * r->sq.h_low;
    default: return 32;
    }
}

int recipe_check_acts(const arecipe_t *a, long dim, long ffn_dim, char *err, size_t errlen) {
    if (a->kind != AQ_SQ_STATIC && a->kind != AQ_SQ_DYNAMIC) return 0;
    long dims[2] = {dim, ffn_dim};
    for (int i = 0; i < 2; i++) {
        sq_cfg_t fit;
        const char *why = sq_cfg_fit(&a->sq, dims[i], 0, &fit);
        if (why) {
            snprintf(err, errlen, "SQ activations %d/%d b%d s%g on %ld channels: %s", a->sq.h_high, a->sq.h_low,
                     a->sq.b, a->sq.s, dims[i], why);
            return -1;
        }
    }
    return 0;
}

void act_quant_release(act_quant_t *q) {
    for (int s = 0; s < N_SITES; s++) free(q->hi_mask[s]);
    memset(q, 0, sizeof *q);
}
