/* tok_internal.h - what the tokenizer's files share (tok.c: loading, byte-
 * level BPE, decoding; tok_spm.c: SentencePiece vocabularies). Not part of
 * the model interface: everything else includes tok.h. */
#ifndef TOK_INTERNAL_H
#define TOK_INTERNAL_H

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

/* tok.c */
int tok_vocab_find(const tok_t *t, const char *s, size_t n);
/* One UTF-8 character at p: its length with *cp set; -k for an invalid
 * maximal subpart of k bytes; 0 for a valid but incomplete prefix. */
int tok_utf8_next(const uint8_t *p, size_t n, uint32_t *cp);

/* tok_spm.c */
/* The bytes a SentencePiece token stands for (malloc'd): U+2581 -> space,
 * byte tokens <0xNN> -> that byte, control tokens -> their literal text. */
char *spm_piece_text(gguf_str_t s, int type, uint32_t *out_len);
/* After the shared vocabulary load: scores, byte tokens, unk, the space
 * prefix flag. Returns 0, or -1 with err. */
int spm_load(tok_t *t, const gguf_t *g, char *err, size_t errlen);
/* Encodes one text fragment (valid UTF-8; the caller sanitized it). */
int spm_encode(const tok_t *t, const char *text, size_t len, out_t *o);

#endif
