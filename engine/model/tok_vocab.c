/* tok_vocab.c - the tokenizer's lowest layer: UTF-8 decoding and the
 * vocabulary lookup (text -> id), shared by byte-level BPE and dispatch
 * (tok.c) and SentencePiece (tok_spm.c). It calls neither, so both
 * depend on it one way. The table itself is built by tok.c's vocabulary
 * load: an open-addressing hash over the token texts, keyed by XXH3
 * (tok_vocab_hash, the one hash both the builder and the lookup use).
 */
#include "tok_vocab.h"

#include <string.h>
#include <xxhash.h>

/* ---- UTF-8 -------------------------------------------------------------- */

/* Decodes one character at p (n bytes available). Returns its length with
 * *cp set; or -k for an invalid maximal subpart of k bytes; or 0 when the
 * bytes are a valid but incomplete prefix (more input may complete it). */
int tok_utf8_next(const uint8_t *p, size_t n, uint32_t *cp) {
    uint8_t b = p[0];
    if (b < 0x80) { *cp = b; return 1; }
    int len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
    } else return -1;
    uint32_t c = b & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t x = p[i];
        if (x < lo || x > hi) return -i;
        lo = 0x80; hi = 0xbf;
        c = (c << 6) | (x & 0x3f);
    }
    *cp = c;
    return len;
}

/* ---- vocabulary lookup ---------------------------------------------------- */

uint64_t tok_vocab_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

int tok_vocab_find(const tok_t *t, const char *s, size_t n) {
    for (uint64_t h = tok_vocab_hash(s, n) & t->vocab_mask;; h = (h + 1) & t->vocab_mask) {
        int32_t id = t->vocab_slots[h];
        if (id < 0) return -1;
        if (t->text[id].len == n && memcmp(t->text[id].ptr, s, n) == 0) return id;
    }
}
