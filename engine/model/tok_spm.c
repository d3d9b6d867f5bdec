/* tok_spm.c - SentencePiece vocabularies (tokenizer.ggml.model "llama":
 * Llama 1/2, Mistral, ...), the BPE flavour SentencePiece trains, as
 * llama.cpp's SPM tokenizer runs it.
 *
 * Encoding one text fragment (special tokens were split out by tok.c):
 *   1. the text gets a leading space when tokenizer.ggml.add_space_prefix
 *      says so (default yes) - every fragment does, since each one starts
 *      the text or follows a special token - and every space becomes
 *      U+2581 ("▁"), the character SentencePiece pieces spell it with;
 *   2. each character is a symbol; every adjacent pair whose concatenation
 *      is a piece of the vocabulary (normal or user-defined type) is a
 *      candidate with that piece's score;
 *   3. the best candidate (highest score, leftmost on ties) merges, its new
 *      neighbours become candidates, until none is left;
 *   4. each symbol is its piece; a character without one is spelled as its
 *      UTF-8 bytes with the byte tokens <0xNN> (byte fallback), or the
 *      unknown token when the vocabulary has no byte tokens.
 * Candidates live in a max-heap and go stale when a neighbour merges first
 * (checked by the symbols' lengths), so a fragment costs O(n log n).
 *
 * Decoding: a piece's U+2581 are spaces, a byte token is its byte, control
 * and unknown tokens their literal text (tok.c decides when to show them).
 *
 * Not modelled: SentencePiece "unused" pieces are never merge results
 * (SentencePiece would merge and then split them again), and the text is
 * not normalized (llama.cpp does not either; GGUF vocabularies converted
 * from Llama-style models use the identity normalizer).
 */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SPACE_MARK[] = "\xe2\x96\x81"; /* U+2581 */

char *spm_piece_text(gguf_str_t s, int type, uint32_t *out_len) {
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    size_t o = 0;
    unsigned b;
    char tail;
    if (type == TOK_BYTE && s.len == 6 && !memcmp(s.ptr, "<0x", 3) && s.ptr[5] == '>' &&
        sscanf(s.ptr + 3, "%2X%c", &b, &tail) == 2 && tail == '>') {
        out[o++] = (char)b;
    } else if (type == TOK_CONTROL || type == TOK_UNKNOWN || type == TOK_BYTE) {
        memcpy(out, s.ptr, s.len); /* literal text */
        o = s.len;
    } else {
        for (size_t i = 0; i < s.len;) {
            if (s.len - i >= 3 && !memcmp(s.ptr + i, SPACE_MARK, 3)) {
                out[o++] = ' ';
                i += 3;
            } else {
                out[o++] = s.ptr[i++];
            }
        }
    }
    out[o] = 0;
    *out_len = (uint32_t)o;
    return out;
}

int spm_load(tok_t *t, const gguf_t *g, char *err, size_t errlen) {
    const gguf_value_t *sc = gguf_get(g, "tokenizer.ggml.scores");
    if (!sc || sc->type != GGUF_ARRAY || sc->v.arr.n != (uint64_t)t->n_vocab ||
        sc->v.arr.type == GGUF_STRING || sc->v.arr.type == GGUF_ARRAY) {
        snprintf(err, errlen, "tokenizer.ggml.scores is missing or does not match tokenizer.ggml.tokens "
                 "(a SentencePiece vocabulary needs one score per token)");
        return -1;
    }
    if (!(t->score = malloc((size_t)t->n_vocab * sizeof *t->score))) {
        snprintf(err, errlen, "out of memory loading the token scores");
        return -1;
    }
    for (int i = 0; i < t->n_vocab; i++) {
        double v = gguf_arr_f64(sc, (uint64_t)i);
        if (!(v >= -1e30 && v <= 1e30)) {
            snprintf(err, errlen, "tokenizer.ggml.scores[%d] is not a finite number", i);
            return -1;
        }
        t->score[i] = (float)v;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int id = tok_vocab_find(t, name, 6);
        t->byte_tok[b] = id >= 0 && t->type[id] == TOK_BYTE ? id : -1;
    }
    uint64_t v;
    t->unk = gguf_get_u64(g, "tokenizer.ggml.unknown_token_id", &v) == 0 && v < (uint64_t)t->n_vocab ? (int)v : -1;
    const gguf_value_t *sp = gguf_get(g, "tokenizer.ggml.add_space_prefix");
    t->add_space_prefix = sp && sp->type == GGUF_BOOL ? (int)sp->v.u : 1;
    return 0;
}

/* ---- encoding ------------------------------------------------------------- */

typedef struct { float score; int32_t left, right; uint32_t size; } cand_t;

typedef struct {
    const tok_t *t;
    const char *s;            /* the escaped fragment */
    uint32_t *start, *len;    /* per symbol; len 0 once merged away */
    int32_t *prev, *next;
    cand_t *heap;
    size_t nheap;
} spm_work_t;

/* A piece the merges may produce: normal or user-defined. */
static int piece_id(const tok_t *t, const char *s, size_t n) {
    int id = tok_vocab_find(t, s, n);
    return id >= 0 && (t->type[id] == TOK_NORMAL || t->type[id] == TOK_USER) ? id : -1;
}

static int better(const cand_t *a, const cand_t *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(spm_work_t *w, cand_t c) {
    size_t i = w->nheap++;
    w->heap[i] = c;
    while (i > 0 && better(&w->heap[i], &w->heap[(i - 1) / 2])) {
        cand_t tmp = w->heap[(i - 1) / 2];
        w->heap[(i - 1) / 2] = w->heap[i];
        w->heap[i] = tmp;
        i = (i - 1) / 2;
    }
}

static cand_t heap_pop(spm_work_t *w) {
    cand_t top = w->heap[0];
    w->heap[0] = w->heap[--w->nheap];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->nheap && better(&w->heap[l], &w->heap[m])) m = l;
        if (r < w->nheap && better(&w->heap[r], &w->heap[m])) m = r;
        if (m == i) break;
        cand_t tmp = w->heap[m];
        w->heap[m] = w->heap[i];
        w->heap[i] = tmp;
        i = m;
    }
    return top;
}

static void try_pair(spm_work_t *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    uint32_t size = w->len[l] + w->len[r];
    int id = piece_id(w->t, w->s + w->start[l], size);
    if (id >= 0) heap_push(w, (cand_t){w->t->score[id], l, r, size});
}

/* The fragment as SentencePiece sees it: [U+2581] text, spaces -> U+2581. */
static char *escape(const tok_t *t, const char *text, size_t len, size_t *out_len) {
    size_t spaces = 0;
    for (size_t i = 0; i < len; i++) spaces += text[i] == ' ';
    char *s = malloc(len + 2 * spaces + 4);
    if (!s) return NULL;
    size_t o = 0;
    if (t->add_space_prefix) {
        memcpy(s, SPACE_MARK, 3);
        o = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s + o, SPACE_MARK, 3);
            o += 3;
        } else {
            s[o++] = text[i];
        }
    }
    *out_len = o;
    return s;
}

static void emit_symbol(const tok_t *t, const char *s, size_t n, out_t *o) {
    int id = piece_id(t, s, n);
    if (id >= 0) {
        tok_emit(o, id);
        return;
    }
    for (size_t i = 0; i < n; i++) { /* byte fallback */
        int b = t->byte_tok[(uint8_t)s[i]];
        if (b >= 0) tok_emit(o, b);
        else if (t->unk >= 0) {
            tok_emit(o, t->unk); /* one unknown token for the character */
            return;
        }
    }
}

int spm_encode(const tok_t *t, const char *text, size_t len, out_t *o) {
    size_t n = 0;
    char *s = escape(t, text, len, &n);
    spm_work_t w = {.t = t, .s = s};
    w.start = malloc(n * 2 * sizeof(uint32_t) + 1);
    w.prev = malloc(n * 2 * sizeof(int32_t) + 1);
    w.heap = malloc((3 * n + 1) * sizeof(cand_t)); /* n-1 pairs + at most 2 per merge */
    int rc = -1;
    if (!s || !w.start || !w.prev || !w.heap) goto out;
    w.len = w.start + n;
    w.next = w.prev + n;
    int32_t m = 0;
    for (size_t i = 0; i < n; m++) { /* one symbol per character (the text is valid UTF-8) */
        uint32_t cp;
        int k = tok_utf8_next((const uint8_t *)s + i, n - i, &cp);
        size_t cl = k > 0 ? (size_t)k : 1;
        w.start[m] = (uint32_t)i;
        w.len[m] = (uint32_t)cl;
        w.prev[m] = m - 1;
        w.next[m] = i + cl < n ? m + 1 : -1;
        i += cl;
    }
    for (int32_t i = 0; i + 1 < m; i++) try_pair(&w, i, i + 1);
    while (w.nheap > 0) {
        cand_t c = heap_pop(&w);
        /* stale: one side merged into something else since the push */
        if (w.len[c.left] == 0 || w.len[c.right] == 0 || w.len[c.left] + w.len[c.right] != c.size ||
            w.next[c.left] != c.right)
            continue;
        w.len[c.left] = c.size;
        w.len[c.right] = 0;
        w.next[c.left] = w.next[c.right];
        if (w.next[c.right] >= 0) w.prev[w.next[c.right]] = c.left;
        try_pair(&w, w.prev[c.left], c.left);
        try_pair(&w, c.left, w.next[c.left]);
    }
    for (int32_t i = m > 0 ? 0 : -1; i >= 0; i = w.next[i]) emit_symbol(t, s + w.start[i], w.len[i], o);
    rc = 0;
out:
    free(s);
    free(w.start);
    free(w.prev);
    free(w.heap);
    return rc;
}
