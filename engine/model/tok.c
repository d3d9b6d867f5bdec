/* tok.c - vocabulary loading, byte-level BPE, decoding (see tok.h for the
 * pipeline); SentencePiece vocabularies encode in tok_spm.c. Both sit on
 * tok_vocab.c (UTF-8 decoding, the vocabulary lookup), so tok.c calls
 * tok_spm.c and never the reverse.
 *
 * Trade-offs:
 * - Pre-tokenizer patterns run on PCRE2 (UTF + UCP + JIT) so Unicode
 *   categories come from PCRE2's tables, not from hand-written ranges.
 *   `\s` is spelled out as Unicode White_Space (Z + controls 9-13 + U+0085)
 *   because that is what the reference tokenizers mean by it.
 * - Merging uses a min-heap of candidate pairs over a linked list of
 *   symbols: O(n log n) per pre-token, so one 1 MB "word" cannot stall the
 *   engine as the textbook O(n^2) loop would.
 * - Vocabulary and merge tables are open-addressing hashes (XXH3).
 */
#include "tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <xxhash.h>

/* ---- UTF-8 -------------------------------------------------------------- */

static size_t utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static const char REPLACEMENT[] = "\xef\xbf\xbd";

char *tok_utf8_sanitize(const char *s, size_t len, size_t *out_len) {
    char *out = malloc(len * 3 + 1); /* each bad byte may grow to 3 */
    if (!out) return NULL;
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        uint32_t cp;
        int k = tok_utf8_next(p + i, len - i, &cp);
        if (k > 0) {
            memcpy(out + o, p + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(out + o, REPLACEMENT, 3);
            o += 3;
            i += k < 0 ? (size_t)-k : len - i; /* truncated tail: one U+FFFD */
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}

/* ---- GPT-2 byte <-> code point mapping ------------------------------------ */

/* Printable bytes map to themselves; the other 68 to U+0100.. in order. */
static uint32_t byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
        return (uint32_t)b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || (i >= 0xae && i <= 0xff)))
            n++;
    return 0x100 + (uint32_t)n;
}

static int cp_to_byte(uint32_t cp) {
    static int16_t table[0x144];
    static int ready;
    if (!ready) { /* benign race: every thread writes the same values */
        for (int i = 0; i < 0x144; i++) table[i] = -1;
        for (int b = 0; b < 256; b++) table[byte_to_cp(b)] = (int16_t)b;
        ready = 1;
    }
    return cp < 0x144 ? table[cp] : -1;
}

/* ---- hash tables ----------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n) { return XXH3_64bits(p, n); }

static const struct merge_slot *merge_find(const tok_t *t, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t h = hash_bytes(&key, 8) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        const struct merge_slot *m = &t->merges[h];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
    }
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---- pre-tokenizer patterns ------------------------------------------------ */

/* Unicode White_Space, as \s means in the reference implementations. */
#define WS "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}"
const char TOK_WS_CLASS[] = "[" WS "]";
#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+" \
                     "|[" WS "]+(?![^" WS "])|[" WS "]+"
#define LLAMA3_PATTERN "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+" \
                       "|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+" \
                       "|[" WS "]+(?![^" WS "])|[" WS "]+"
#define QWEN2_PATTERN "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+" \
                      "|\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+" \
                      "|[" WS "]+(?![^" WS "])|[" WS "]+"

/* tokenizer.ggml.pre -> patterns applied in sequence (each one splits the
 * pieces the previous one produced; unmatched gaps stay pieces too). */
static const struct { const char *pre; const char *pat[MAX_PRE_PATTERNS]; } PRE_TABLE[] = {
    {"gpt-2", {GPT2_PATTERN}},
    {"gpt2", {GPT2_PATTERN}},
    {"default", {GPT2_PATTERN}},
    {"mpt", {GPT2_PATTERN}},
    {"olmo", {GPT2_PATTERN}},
    {"smollm", {"\\p{N}", GPT2_PATTERN}},
    {"starcoder", {"\\p{N}", GPT2_PATTERN}},
    {"refact", {"\\p{N}", GPT2_PATTERN}},
    {"codeshell", {"\\p{N}", GPT2_PATTERN}},
    {"llama-bpe", {LLAMA3_PATTERN}},
    {"llama3", {LLAMA3_PATTERN}},
    {"qwen2", {QWEN2_PATTERN}},
};

static int compile_pre(tok_t *t, const char *pre, char *err, size_t errlen) {
    for (size_t i = 0; i < sizeof PRE_TABLE / sizeof PRE_TABLE[0]; i++) {
        if (strcmp(PRE_TABLE[i].pre, pre) != 0) continue;
        for (int k = 0; k < MAX_PRE_PATTERNS && PRE_TABLE[i].pat[k]; k++) {
            int ec;
            PCRE2_SIZE eo;
            pcre2_code *re = pcre2_compile((PCRE2_SPTR)PRE_TABLE[i].pat[k], PCRE2_ZERO_TERMINATED,
                                           PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
            if (!re) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(ec, msg, sizeof msg);
                snprintf(err, errlen, "pre-tokenizer '%s': pattern error at %zu: %s", pre,
                         (size_t)eo, (char *)msg);
                return -1;
            }
            pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
            t->pre[t->n_pre++] = re;
        }
        return 0;
    }
    snprintf(err, errlen, "unsupported pre-tokenizer '%s' (tokenizer.ggml.pre)", pre);
    return -1;
}

/* ---- loading ---------------------------------------------------------------- */

static int cmp_special(const void *a, const void *b, void *ctx) {
    const tok_t *t = ctx;
    uint64_t la = t->text[*(const int *)a].len, lb = t->text[*(const int *)b].len;
    return la < lb ? 1 : la > lb ? -1 : 0;
}

static char *decode_token_text(gguf_str_t s, int type, uint32_t *out_len) {
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    size_t o = 0;
    if (type == TOK_CONTROL || type == TOK_USER || type == TOK_UNUSED) {
        memcpy(out, s.ptr, s.len); /* literal text */
        o = s.len;
    } else {
        const uint8_t *p = (const uint8_t *)s.ptr;
        for (size_t i = 0; i < s.len;) {
            uint32_t cp;
            int k = tok_utf8_next(p + i, s.len - i, &cp);
            int b = k > 0 ? cp_to_byte(cp) : -1;
            if (b < 0) { /* not byte-level text: keep the raw bytes */
                size_t n = k > 0 ? (size_t)k : 1;
                memcpy(out + o, p + i, n);
                o += n;
                i += n;
                continue;
            }
            out[o++] = (char)b;
            i += (size_t)k;
        }
    }
    out[o] = 0;
    *out_len = (uint32_t)o;
    return out;
}

static int load_vocab(tok_t *t, const gguf_t *g, char *err, size_t errlen) {
    const gguf_value_t *tokens = gguf_get(g, "tokenizer.ggml.tokens");
    const gguf_value_t *types = gguf_get(g, "tokenizer.ggml.token_type");
    if (!tokens || tokens->type != GGUF_ARRAY || tokens->v.arr.type != GGUF_STRING ||
        tokens->v.arr.n == 0 || tokens->v.arr.n > (1u << 24)) {
        snprintf(err, errlen, "tokenizer.ggml.tokens is missing or not a non-empty string array");
        return -1;
    }
    t->n_vocab = (int)tokens->v.arr.n;
    if (types && (types->type != GGUF_ARRAY || types->v.arr.n != tokens->v.arr.n ||
                  types->v.arr.type == GGUF_STRING || types->v.arr.type == GGUF_ARRAY)) {
        snprintf(err, errlen, "tokenizer.ggml.token_type does not match tokenizer.ggml.tokens");
        return -1;
    }
    uint64_t cap = pow2_at_least((uint64_t)t->n_vocab * 2);
    t->text = calloc((size_t)t->n_vocab, sizeof *t->text);
    t->type = calloc((size_t)t->n_vocab, 1);
    t->piece = calloc((size_t)t->n_vocab, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_vocab, sizeof *t->piece_len);
    t->vocab_slots = malloc(cap * sizeof *t->vocab_slots);
    t->special = malloc((size_t)t->n_vocab * sizeof *t->special);
    if (!t->text || !t->type || !t->piece || !t->piece_len || !t->vocab_slots || !t->special) {
        snprintf(err, errlen, "out of memory loading the vocabulary");
        return -1;
    }
    memset(t->vocab_slots, 0xff, cap * sizeof *t->vocab_slots);
    t->vocab_mask = cap - 1;
    for (int i = 0; i < t->n_vocab; i++) {
        t->text[i] = tokens->v.arr.items[i].v.s;
        int64_t ty = types ? gguf_arr_i64(types, (uint64_t)i) : TOK_NORMAL;
        t->type[i] = (ty >= TOK_NORMAL && ty <= TOK_BYTE) ? (uint8_t)ty : TOK_NORMAL;
        if (tok_vocab_find(t, t->text[i].ptr, t->text[i].len) < 0) {
            uint64_t h = tok_vocab_hash(t->text[i].ptr, t->text[i].len) & t->vocab_mask;
            while (t->vocab_slots[h] >= 0) h = (h + 1) & t->vocab_mask;
            t->vocab_slots[h] = i; /* first id wins for duplicate texts */
        }
        t->piece[i] = t->spm ? spm_piece_text(t->text[i], t->type[i], &t->piece_len[i])
                             : decode_token_text(t->text[i], t->type[i], &t->piece_len[i]);
        if (!t->piece[i]) {
            snprintf(err, errlen, "out of memory decoding the vocabulary");
            return -1;
        }
        if ((t->type[i] == TOK_CONTROL || t->type[i] == TOK_USER) && t->text[i].len > 0)
            t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof(int), cmp_special, t);
    for (int b = 0; b < 256; b++) {
        char buf[4];
        size_t n = utf8_put(byte_to_cp(b), buf);
        /* some vocabularies omit bytes that never occur in valid text
         * (SmolLM2 lacks 21); such bytes are dropped, as the reference
         * tokenizers do when no unknown token is configured */
        t->byte_tok[b] = tok_vocab_find(t, buf, n);
    }
    return 0;
}

static int load_merges(tok_t *t, const gguf_t *g, char *err, size_t errlen) {
    const gguf_value_t *merges = gguf_get(g, "tokenizer.ggml.merges");
    if (!merges || merges->type != GGUF_ARRAY || merges->v.arr.type != GGUF_STRING) {
        snprintf(err, errlen, "tokenizer.ggml.merges is missing or not a string array");
        return -1;
    }
    uint64_t n = merges->v.arr.n, cap = pow2_at_least(n * 2);
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) {
        snprintf(err, errlen, "out of memory for %llu merges", (unsigned long long)n);
        return -1;
    }
    for (uint64_t i = 0; i < cap; i++) t->merges[i].rank = -1;
    t->merge_mask = cap - 1;
    for (uint64_t r = 0; r < n; r++) {
        gguf_str_t m = merges->v.arr.items[r].v.s;
        const char *sp = m.len > 2 ? memchr(m.ptr + 1, ' ', m.len - 2) : NULL;
        int a = sp ? tok_vocab_find(t, m.ptr, (size_t)(sp - m.ptr)) : -1;
        int b = sp ? tok_vocab_find(t, sp + 1, m.len - (size_t)(sp - m.ptr) - 1) : -1;
        if (a < 0 || b < 0) {
            snprintf(err, errlen, "merge %llu is malformed or names unknown tokens",
                     (unsigned long long)r);
            return -1;
        }
        char *cat = malloc(m.len);
        if (!cat) { snprintf(err, errlen, "out of memory"); return -1; }
        size_t la = (size_t)(sp - m.ptr), lb = m.len - la - 1;
        memcpy(cat, m.ptr, la);
        memcpy(cat + la, sp + 1, lb);
        int res = tok_vocab_find(t, cat, la + lb);
        free(cat);
        if (res < 0) continue; /* merge produces no token: never applicable */
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t h = hash_bytes(&key, 8) & t->merge_mask;
        while (t->merges[h].rank >= 0 && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
        if (t->merges[h].rank >= 0) continue; /* keep the first (best) rank */
        t->merges[h] = (struct merge_slot){key, (int32_t)r, res};
    }
    return 0;
}

static int special_id(const gguf_t *g, const char *key, int n_vocab, int dflt) {
    uint64_t v;
    if (gguf_get_u64(g, key, &v) != 0 || v >= (uint64_t)n_vocab) return dflt;
    return (int)v;
}

tok_t *tok_load(const gguf_t *g, char *err, size_t errlen) {
    gguf_str_t model, pre;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) != 0) {
        snprintf(err, errlen, "tokenizer.ggml.model is missing");
        return NULL;
    }
    char shown[48];
    int spm = gguf_str_eq(model, "llama");
    if (!spm && !gguf_str_eq(model, "gpt2")) {
        snprintf(err, errlen, "tokenizer model '%s' is not supported (byte-level BPE 'gpt2', "
                 "SentencePiece 'llama')", gguf_str_show(model, shown, sizeof shown));
        return NULL;
    }
    char pre_name[64] = "default";
    if (gguf_get_str(g, "tokenizer.ggml.pre", &pre) == 0) gguf_str_show(pre, pre_name, sizeof pre_name);
    tok_t *t = calloc(1, sizeof *t);
    if (!t) { snprintf(err, errlen, "out of memory"); return NULL; }
    t->spm = spm;
    if (load_vocab(t, g, err, errlen) != 0 ||
        (spm ? spm_load(t, g, err, errlen) != 0
             : load_merges(t, g, err, errlen) != 0 || compile_pre(t, pre_name, err, errlen) != 0)) {
        tok_free(t);
        return NULL;
    }
    t->bos = special_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, -1);
    t->eos = special_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, -1);
    t->eot = special_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, -1);
    t->eom = special_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, -1);
    const gguf_value_t *ab = gguf_get(g, "tokenizer.ggml.add_bos_token");
    t->add_bos = ab && ab->type == GGUF_BOOL ? (int)ab->v.u : 0;
    if (t->add_bos && t->bos < 0) t->add_bos = 0;
    const gguf_value_t *ae = gguf_get(g, "tokenizer.ggml.add_eos_token");
    t->add_eos = ae && ae->type == GGUF_BOOL && t->eos >= 0 ? (int)ae->v.u : 0;
    return t;
}

void tok_free(tok_t *t) {
    if (!t) return;
    if (t->piece)
        for (int i = 0; i < t->n_vocab; i++) free(t->piece[i]);
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i]);
    free(t->piece); free(t->piece_len); free(t->text); free(t->type);
    free(t->vocab_slots); free(t->merges); free(t->special); free(t->score);
    free(t);
}

int tok_n_vocab(const tok_t *t) { return t->n_vocab; }
int tok_bos(const tok_t *t) { return t->bos; }
int tok_eos(const tok_t *t) { return t->eos; }
int tok_add_bos(const tok_t *t) { return t->add_bos; }
int tok_add_eos(const tok_t *t) { return t->add_eos; }

long tok_frame(const tok_t *t, int32_t *ids, long n) {
    if (t->add_bos && (n == 0 || ids[0] != t->bos)) {
        memmove(ids + 1, ids, (size_t)n * sizeof *ids);
        ids[0] = t->bos;
        n++;
    }
    if (t->add_eos) ids[n++] = t->eos;
    return n;
}
int tok_type(const tok_t *t, int id) { return id >= 0 && id < t->n_vocab ? t->type[id] : 0; }
int tok_find(const tok_t *t, const char *text, size_t len) { return tok_vocab_find(t, text, len); }

int tok_is_eog(const tok_t *t, int id) {
    if (id < 0 || id >= t->n_vocab) return 0;
    if (id == t->eos || id == t->eot || id == t->eom) return 1;
    /* chat models end turns with a control token the metadata may not name */
    if (t->type[id] != TOK_CONTROL) return 0;
    static const char *ends[] = {"<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>",
                                 "<end_of_turn>", "<|eom_id|>"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
        if (gguf_str_eq(t->text[id], ends[i])) return 1;
    return 0;
}

const char *tok_piece(const tok_t *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) { *len = 0; return ""; }
    *len = t->piece_len[id];
    return t->piece[id];
}

/* ---- BPE -------------------------------------------------------------------- */

typedef struct { int32_t rank, left; int32_t lt, rt; } cand_t; /* lt/rt: tokens at push */

typedef struct {
    int32_t *tok, *prev, *next;
    cand_t *heap;
    size_t nheap, cap;
} bpe_work_t;

static int cand_less(const cand_t *a, const cand_t *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_work_t *w, cand_t c) {
    size_t i = w->nheap++;
    w->heap[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&w->heap[i], &w->heap[p])) break;
        cand_t tmp = w->heap[p]; w->heap[p] = w->heap[i]; w->heap[i] = tmp;
        i = p;
    }
}

static cand_t heap_pop(bpe_work_t *w) {
    cand_t top = w->heap[0];
    w->heap[0] = w->heap[--w->nheap];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->nheap && cand_less(&w->heap[l], &w->heap[m])) m = l;
        if (r < w->nheap && cand_less(&w->heap[r], &w->heap[m])) m = r;
        if (m == i) break;
        cand_t tmp = w->heap[m]; w->heap[m] = w->heap[i]; w->heap[i] = tmp;
        i = m;
    }
    return top;
}

static void try_pair(const tok_t *t, bpe_work_t *w, int32_t left) {
    int32_t right = w->next[left];
    if (left < 0 || right < 0) return;
    const struct merge_slot *m = merge_find(t, w->tok[left], w->tok[right]);
    if (m) heap_push(w, (cand_t){m->rank, left, w->tok[left], w->tok[right]});
}

/* BPE over the bytes of one pre-token. */
static int bpe_word(const tok_t *t, const uint8_t *s, size_t n, out_t *o) {
    if (n == 0) return 0;
    if (n == 1) {
        if (t->byte_tok[s[0]] >= 0) tok_emit(o, t->byte_tok[s[0]]);
        return 0;
    }
    bpe_work_t w = {0};
    w.tok = malloc(n * 3 * sizeof(int32_t));
    w.cap = 3 * n + 8; /* n-1 initial pairs + at most 2 per merge */
    w.heap = malloc(w.cap * sizeof(cand_t));
    if (!w.tok || !w.heap) { free(w.tok); free(w.heap); return -1; }
    w.prev = w.tok + n;
    w.next = w.tok + 2 * n;
    size_t m = 0; /* symbols: the bytes that have a token */
    for (size_t i = 0; i < n; i++)
        if (t->byte_tok[s[i]] >= 0) w.tok[m++] = t->byte_tok[s[i]];
    for (size_t i = 0; i < m; i++) {
        w.prev[i] = (int32_t)i - 1;
        w.next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
    }
    if (m == 0) {
        free(w.tok);
        free(w.heap);
        return 0;
    }
    for (size_t i = 0; i + 1 < m; i++) try_pair(t, &w, (int32_t)i);
    while (w.nheap > 0) {
        cand_t c = heap_pop(&w);
        int32_t l = c.left, r = w.next[l];
        /* stale: a neighbour merged since this candidate was pushed */
        if (r < 0 || w.tok[l] != c.lt || w.tok[r] != c.rt) continue;
        const struct merge_slot *ms = merge_find(t, c.lt, c.rt);
        w.tok[l] = ms->result;
        w.tok[r] = -1;
        w.next[l] = w.next[r];
        if (w.next[r] >= 0) w.prev[w.next[r]] = l;
        if (w.prev[l] >= 0) try_pair(t, &w, w.prev[l]);
        try_pair(t, &w, l);
        if (w.nheap + 2 >= w.cap) { /* cannot happen by the bound; stay safe */
            cand_t *nh = realloc(w.heap, (w.cap *= 2) * sizeof(cand_t));
            if (!nh) { free(w.tok); free(w.heap); return -1; }
            w.heap = nh;
        }
    }
    for (int32_t i = 0; i >= 0; i = w.next[i]) tok_emit(o, w.tok[i]);
    free(w.tok);
    free(w.heap);
    return 0;
}

/* Applies pattern k to [s, s+n) and recurses on each piece. */
static int pre_split(const tok_t *t, int k, const uint8_t *s, size_t n,
                     pcre2_match_data *md, out_t *o) {
    if (n == 0) return 0;
    if (k == t->n_pre) return bpe_word(t, s, n, o);
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(t->pre[k], s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            pos = ms + 1;
            while (pos < n && (s[pos] & 0xc0) == 0x80) pos++;
            continue;
        }
        if (ms > gap && pre_split(t, k + 1, s + gap, ms - gap, md, o) != 0) return -1;
        if (pre_split(t, k + 1, s + ms, me - ms, md, o) != 0) return -1;
        pos = gap = me;
    }
    return gap < n ? pre_split(t, k + 1, s + gap, n - gap, md, o) : 0;
}

static int encode_plain(const tok_t *t, const char *text, size_t len, out_t *o) {
    if (len == 0) return 0;
    size_t clean_len;
    char *clean = tok_utf8_sanitize(text, len, &clean_len);
    if (clean && t->spm) {
        int r = spm_encode(t, clean, clean_len, o);
        free(clean);
        return r;
    }
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = -1;
    if (clean && md) rc = pre_split(t, 0, (const uint8_t *)clean, clean_len, md, o);
    pcre2_match_data_free(md);
    free(clean);
    return rc;
}

long tok_encode(const tok_t *t, const char *text, size_t len, int parse_special,
                int32_t *ids, size_t cap) {
    out_t o = {ids, 0, cap};
    size_t start = 0, i = 0;
    while (parse_special && i < len) {
        int hit = -1;
        for (int k = 0; k < t->n_special; k++) { /* longest first */
            gguf_str_t s = t->text[t->special[k]];
            if (s.len <= len - i && (uint8_t)s.ptr[0] == (uint8_t)text[i] &&
                memcmp(s.ptr, text + i, s.len) == 0) {
                hit = t->special[k];
                break;
            }
        }
        if (hit < 0) { i++; continue; }
        if (encode_plain(t, text + start, i - start, &o) != 0) return -1;
        tok_emit(&o, hit);
        i += t->text[hit].len;
        start = i;
    }
    if (encode_plain(t, text + start, len - start, &o) != 0) return -1;
    return (long)o.n;
}

/* ---- streaming decode --------------------------------------------------------- */

static size_t put(char *out, size_t cap, size_t o, const void *p, size_t n) {
    if (o + n <= cap) memcpy(out + o, p, n);
    return o + n;
}

size_t tok_stream_push(const tok_t *t, tok_stream_t *s, int id, int render_special,
                       char *out, size_t cap) {
    size_t n;
    const char *p = tok_piece(t, id, &n);
    if (!render_special && (tok_type(t, id) == TOK_CONTROL)) return 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        s->pend[s->npend++] = (uint8_t)p[i];
        for (;;) {
            uint32_t cp;
            int k = tok_utf8_next(s->pend, (size_t)s->npend, &cp);
            if (k == 0) break; /* incomplete: wait for more bytes */
            size_t used = k > 0 ? (size_t)k : (size_t)-k;
            o = k > 0 ? put(out, cap, o, s->pend, used) : put(out, cap, o, REPLACEMENT, 3);
            memmove(s->pend, s->pend + used, (size_t)s->npend - used);
            s->npend -= (int)used;
            if (s->npend == 0) break;
        }
    }
    return o <= cap ? o : cap;
}

size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap) {
    size_t o = 0;
    if (s->npend > 0) o = put(out, cap, 0, REPLACEMENT, 3);
    s->npend = 0;
    return o <= cap ? o : cap;
}
