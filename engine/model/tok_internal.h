/* tok_internal.h - what the tokenizer's files share (tok.c: loading, byte-
 * level BPE, decoding; tok_spm.c: SentencePiece vocabularies; tok_vocab.c:
 * UTF-8 and the vocabulary lookup, below both). Not part of
 * the model interface: everything else includes tok.h. */
#ifndef TOK_INTERNAL_H
#define TOK_INTERNAL_H

#include "tok.h"

#include "tok_vocab.h"

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
