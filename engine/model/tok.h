/* tok.h - the tokenizer loaded from GGUF tokenizer.ggml.* keys: byte-level
 * BPE (tokenizer.ggml.model "gpt2") or SentencePiece ("llama").
 *
 * BPE encoding = (1) split out special tokens, (2) sanitize UTF-8 (invalid
 * bytes become U+FFFD per maximal subpart), (3) pre-tokenize with the
 * PCRE2 patterns that tokenizer.ggml.pre names, (4) map bytes to GPT-2's
 * printable code points and (5) apply merges by rank. Decoding reverses
 * the byte mapping; tok_stream_t holds back incomplete UTF-8 so streamed
 * text never splits a character.
 *
 * SentencePiece encoding (tok_spm.c) shares (1) and (2), then per text
 * fragment: a leading U+2581 (add_space_prefix), spaces -> U+2581, one
 * symbol per character, adjacent symbols merged greedily by the score of
 * the merged piece, and characters with no piece spelled as <0xNN> byte
 * tokens. Decoding maps U+2581 back to spaces and byte tokens to bytes.
 */
#ifndef TOK_H
#define TOK_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

enum tok_type { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER = 4,
                TOK_UNUSED = 5, TOK_BYTE = 6 };

typedef struct tok tok_t;

/* Loads from an open GGUF; the tokenizer keeps pointers into its mapping. */
tok_t *tok_load(const gguf_t *g, char *err, size_t errlen);
void tok_free(tok_t *t);

int tok_n_vocab(const tok_t *t);
int tok_bos(const tok_t *t);
int tok_eos(const tok_t *t);
int tok_add_bos(const tok_t *t);
/* tokenizer.ggml.add_eos_token (and an eos id exists) */
int tok_add_eos(const tok_t *t);
/* Frames a prompt's n ids as the vocabulary asks: BOS first when
 * add_bos_token (unless the ids already start with it, e.g. from a chat
 * template), EOS last when add_eos_token. ids must have room for n + 2.
 * Returns the new count. */
long tok_frame(const tok_t *t, int32_t *ids, long n);
/* True for tokens that end a turn/generation (eos, eot, im_end...). */
int tok_is_eog(const tok_t *t, int id);
int tok_type(const tok_t *t, int id);
/* Looks up a token by its exact vocabulary text; -1 when absent. */
int tok_find(const tok_t *t, const char *text, size_t len);

/* Encodes len bytes. parse_special: recognise control/user tokens written
 * in the text. Writes at most cap ids; returns the total count needed (call
 * again with a larger buffer when it exceeds cap), or -1 on out of memory. */
long tok_encode(const tok_t *t, const char *text, size_t len, int parse_special,
                int32_t *ids, size_t cap);

/* Raw bytes of one token (control tokens give their literal text). */
const char *tok_piece(const tok_t *t, int id, size_t *len);

/* Streaming detokenizer: appends only complete UTF-8 characters to out
 * (cap bytes); returns bytes written. Invalid bytes become U+FFFD.
 * render_special = 0 drops control tokens from the text. */
typedef struct { uint8_t pend[4]; int npend; } tok_stream_t;
size_t tok_stream_push(const tok_t *t, tok_stream_t *s, int id, int render_special,
                       char *out, size_t cap);
size_t tok_stream_flush(tok_stream_t *s, char *out, size_t cap);

/* The PCRE2 character class the pre-tokenizers use for whitespace
 * (Unicode White_Space); exposed so a test can check it against PropList. */
extern const char TOK_WS_CLASS[];

/* Replaces invalid UTF-8 with U+FFFD (maximal subparts). Returns a new
 * malloc'd buffer, length in *out_len; NULL on out of memory. */
char *tok_utf8_sanitize(const char *s, size_t len, size_t *out_len);

#endif
