/* tok_vocab.h - the tokenizer's shared core (tok_vocab.c): the tokenizer
 * struct, the id writer and the vocabulary lookup that tok.c (BPE,
 * dispatch) and tok_spm.c (SentencePiece) both stand on. Included through
 * tok_internal.h; not part of the model interface. */
#ifndef TOK_VOCAB_H
#define TOK_VOCAB_H

#include "tok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define MAX_PRE_PATTERNS 4

struct tok {
    int n_vocab;
    gguf_str_t *text;       /* vocabulary strings (byte-level encoded) */
    uint8_t *type;          /* enum tok_type per id */
    char **piece;           /* decoded bytes per id */
    uint32_t *piece_len;
    int32_t *vocab_slots;   /* hash: text -> id; -1 empty */
    uint64_t vocab_mask;
    struct merge_slot { uint64_t key; int32_t rank, result; } *merges;
    uint64_t merge_mask;
    int byte_tok[256];      /* token of each single byte */
    int *special;           /* control/user tokens, longest text first */
    int n_special;
    int bos, eos, eot, eom, add_bos, add_eos;
    /* SentencePiece ("llama") vocabularies, tok_spm.c */
    int spm;                /* 1: encode with spm_encode, pieces per spm_piece_text */
    float *score;           /* merge priority of each token (higher merges first) */
    int unk;                /* the unknown token, or -1 */
    int add_space_prefix;   /* a "\xe2\x96\x81" (U+2581) before each text fragment */
    pcre2_code *pre[MAX_PRE_PATTERNS];
    int n_pre;
};

/* ids written so far; n counts every id, even past cap */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} out_t;

static inline void tok_emit(out_t *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* tok_vocab.c (below tok.c and tok_spm.c) */
/* The hash of the vocabulary table (XXH3); tok.c builds the table with it. */
uint64_t tok_vocab_hash(const void *p, size_t n);
/* The id of the token whose text is s[0..n), or -1. */
int tok_vocab_find(const tok_t *t, const char *s, size_t n);
/* One UTF-8 character at p: its length with *cp set; -k for an invalid
 * maximal subpart of k bytes; 0 for a valid but incomplete prefix. */
int tok_utf8_next(const uint8_t *p, size_t n, uint32_t *cp);

#endif
