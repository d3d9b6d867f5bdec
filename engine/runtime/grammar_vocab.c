/* grammar_vocab.c - the token trie (see grammar.h); the mask walk over it
 * is the matcher's (grammar.c), so this file calls nothing of the matcher.
 *
 * Every token the grammar may produce is a path from the root of a byte
 * trie; tokens sharing a prefix share its nodes, so the grammar advances
 * once per trie node rather than once per byte of every token (SmolLM2's
 * 49152 tokens: about a third fewer steps than bytes, and whole subtrees are
 * skipped where the prefix is already refused: after `{` in JSON only the
 * subtrees of `"`, `}` and whitespace are entered).
 *
 * The trie is laid out breadth-first per node: a node's children are
 * contiguous, sorted by byte, so the walk is a loop over an array. It is
 * built once per model from the tokens sorted by their bytes.
 */
#include "grammar_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t *sorted;
    uint32_t n_nodes, cap_nodes;
    gvocab_t *v;
} tbuild_t;

typedef struct { const char *p; uint32_t len; int32_t id; } tpiece_t;

static int cmp_piece(const void *a, const void *b) {
    const tpiece_t *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id - y->id;
}

static int node_room(tbuild_t *b, uint32_t more) {
    gvocab_t *v = b->v;
    if (b->n_nodes + more <= b->cap_nodes) return 0;
    uint32_t c = b->cap_nodes ? b->cap_nodes : 1024;
    while (c < b->n_nodes + more) c *= 2;
    uint32_t *c0 = realloc(v->child0, c * sizeof *c0);
    if (c0) v->child0 = c0;
    uint32_t *nc = realloc(v->n_child, c * sizeof *nc);
    if (nc) v->n_child = nc;
    uint8_t *by = realloc(v->byte, c);
    if (by) v->byte = by;
    uint32_t *t0 = realloc(v->tok0, c * sizeof *t0);
    if (t0) v->tok0 = t0;
    uint32_t *nt = realloc(v->n_tok, c * sizeof *nt);
    if (nt) v->n_tok = nt;
    if (!c0 || !nc || !by || !t0 || !nt) return -1;
    b->cap_nodes = c;
    return 0;
}

/* Node `node` holds the tokens sorted[lo, hi), which share their first depth bytes. */
static int build(tbuild_t *b, uint32_t node, uint32_t lo, uint32_t hi, uint32_t depth) {
    gvocab_t *v = b->v;
    uint32_t i = lo;
    while (i < hi && v->piece_len[b->sorted[i]] == depth) i++; /* tokens ending here sort first */
    v->tok0[node] = lo;
    v->n_tok[node] = i - lo;
    uint32_t groups = 0;
    for (uint32_t j = i; j < hi; j++)
        if (j == i || v->piece[b->sorted[j]][depth] != v->piece[b->sorted[j - 1]][depth]) groups++;
    if (node_room(b, groups)) return -1;
    uint32_t first = b->n_nodes;
    v->child0[node] = first;
    v->n_child[node] = groups;
    b->n_nodes += groups;
    uint32_t c = first;
    for (uint32_t j = i; j < hi; c++) {
        uint8_t by = (uint8_t)v->piece[b->sorted[j]][depth];
        uint32_t k = j;
        while (k < hi && (uint8_t)v->piece[b->sorted[k]][depth] == by) k++;
        v->byte[c] = by;
        if (build(b, c, j, k, depth + 1)) return -1;
        j = k;
    }
    return 0;
}

gvocab_t *gvocab_new(const tok_t *t) {
    gvocab_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    int n = tok_n_vocab(t);
    v->n_vocab = n;
    v->words = (n + 63) / 64;
    v->piece = calloc((size_t)n, sizeof *v->piece);
    v->piece_len = calloc((size_t)n, sizeof *v->piece_len);
    v->eog = malloc((size_t)n * sizeof *v->eog);
    tbuild_t b = {.v = v, .sorted = malloc((size_t)n * sizeof(int32_t))};
    if (!v->piece || !v->piece_len || !v->eog || !b.sorted) goto fail;
    uint32_t m = 0;
    for (int id = 0; id < n; id++) {
        if (tok_is_eog(t, id)) { v->eog[v->n_eog++] = id; continue; }
        int type = tok_type(t, id);
        if (type == TOK_CONTROL || type == TOK_UNUSED) continue;
        size_t len;
        const char *p = tok_piece(t, id, &len);
        if (len == 0 || len > UINT32_MAX) continue;
        v->piece[id] = p;
        v->piece_len[id] = (uint32_t)len;
        b.sorted[m++] = id;
    }
    tpiece_t *tp = malloc((size_t)(m ? m : 1) * sizeof *tp);
    if (!tp) goto fail;
    for (uint32_t i = 0; i < m; i++) tp[i] = (tpiece_t){v->piece[b.sorted[i]], v->piece_len[b.sorted[i]], b.sorted[i]};
    qsort(tp, m, sizeof *tp, cmp_piece);
    for (uint32_t i = 0; i < m; i++) b.sorted[i] = tp[i].id;
    free(tp);
    if (node_room(&b, 1)) goto fail;
    b.n_nodes = 1;
    v->byte[0] = 0;
    if (build(&b, 0, 0, m, 0)) goto fail;
    v->n_nodes = b.n_nodes;
    v->ids = b.sorted;
    return v;
fail:
    free(b.sorted);
    gvocab_free(v);
    return NULL;
}

void gvocab_free(gvocab_t *v) {
    if (!v) return;
    free(v->child0); free(v->n_child); free(v->byte); free(v->tok0); free(v->n_tok);
    free(v->ids); free(v->eog); free(v->piece); free(v->piece_len);
    free(v);
}

int gvocab_n_vocab(const gvocab_t *v) { return v->n_vocab; }
