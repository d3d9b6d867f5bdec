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

/* ":smooth" or ":smooth<alpha>" at *p: 1 (and *p moved past it), 0 if
 * something else is there, -1 for a bad alpha. */
static int parse_smooth(const char **p, int *smooth, double *alpha) {
    if (strncmp(*p, ":smooth", 7)) return 0;
    const char *q = *p + 7;
    *alpha = 0;
    if (*q && *q != ':') {
        char *end;
        *alpha = strtod(q, &end);
        if (end == q || (*end && *end != ':') || !(*alpha > 0 && *alpha < 1)) return -1;
        q = end;
    }
    *smooth = 1;
    *p = q;
    return 1;
}

/* The weights options after the base recipe: ":gptq", ":act", ":damp<f>",
 * ":oneshot", ":smooth[<alpha>]", ":iscale", each at most once, in any order. */
static int parse_w_opts(const char *p, wrecipe_t *r) {
    int seen_act = 0, seen_damp = 0, seen_one = 0;
    r->damp = 0.01;
    while (*p) {
        int sm = r->smooth ? 0 : parse_smooth(&p, &r->smooth, &r->alpha);
        if (sm < 0) return -1;
        if (sm) continue;
        const char *e = strchr(p + 1, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 5 && !strncmp(p, ":gptq", 5) && !r->gptq) r->gptq = 1;
        else if (len == 4 && !strncmp(p, ":act", 4) && !seen_act++) r->act_order = 1;
        else if (len == 8 && !strncmp(p, ":oneshot", 8) && !seen_one++) r->oneshot = 1;
        else if (len == 7 && !strncmp(p, ":iscale", 7) && !r->iscale) r->iscale = 1;
        else if (len > 5 && !strncmp(p, ":damp", 5) && !seen_damp++) {
            char *end;
            r->damp = strtod(p + 5, &end);
            if (end != p + len || !(r->damp > 0 && r->damp <= 1)) return -1;
        } else return -1;
        p += len;
    }
    /* act-order, damping and one-shot Hessians are GPTQ's */
    return (r->act_order || seen_damp || r->oneshot) && !r->gptq ? -1 : 0;
}

int recipe_parse_w(const char *s, wrecipe_t *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->damp = 0.01;
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
    if (parse_w_opts(tail, r) != 0) goto bad;
    if (r->iscale && (r->kind != WQ_SQ || r->sq.h_high != 8)) {
        snprintf(err, errlen, "weights recipe '%s': :iscale (integer bank scales) is for SQ weights with 8-bit highs", s);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen,
             "bad weights recipe '%s' (e.g. fp32, int8, int4:g64[:gptq], sq:8/4:b64:s0.875[:gptq]; "
             "options :act :damp<f> :oneshot with :gptq, :smooth[<alpha>], alpha in (0, 1), :iscale for sq)", s);
    return -1;
}

int recipe_parse_a(const char *s_in, arecipe_t *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    /* a trailing ":smooth[<alpha>]" first, then the recipe before it */
    char s[128];
    snprintf(s, sizeof s, "%s", s_in);
    char *sm = strstr(s, ":smooth");
    if (sm) {
        const char *p = sm;
        if (parse_smooth(&p, &r->smooth, &r->alpha) != 1 || *p) goto bad;
        *sm = 0;
    }
    if (!strcmp(s, "fp32") || !strcmp(s, "none") || !strcmp(s, "a16")) {
        if (r->smooth) goto bad; /* nothing to smooth for */
        return 0;
    }
    const char *tail;
    if (!strncmp(s, "sq:", 3) && parse_sq(s + 3, &r->sq, &tail) == 0) {
        const char *why = sq_cfg_check(&r->sq, 0);
        if (why) {
            snprintf(err, errlen, "activations recipe '%s': %s", s, why);
            return -1;
        }
        if (!strcmp(tail, ":static") || !*tail) { r->kind = AQ_SQ_STATIC; return 0; }
        if (!strcmp(tail, ":static-max")) { r->kind = AQ_SQ_STATIC; r->by_max = 1; return 0; }
        if (!strcmp(tail, ":static:bank")) { r->kind = AQ_SQ_STATIC; r->bank_lo = 1; return 0; }
        if (!strcmp(tail, ":static-max:bank")) { r->kind = AQ_SQ_STATIC; r->by_max = r->bank_lo = 1; return 0; }
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
bad:
    snprintf(err, errlen,
             "bad activations recipe '%s' (e.g. fp32, int8, int4, sq:8/4:b64:s0.875:static|static-max|dynamic, "
             "static ones optionally :bank, then optionally :smooth[<alpha>])", s_in);
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
    case AQ_SQ_STATIC: /* the high-channel mask is fixed per matrix: free per token;
                          ":bank" adds a float low-part scale per bank */
        return (1.0 - r->sq.s) * r->sq.h_high + r->sq.s * r->sq.h_low + (r->bank_lo ? 32.0 / r->sq.b : 0.0);
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
