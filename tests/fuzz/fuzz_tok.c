/* fuzz_tok.c - libFuzzer: the tokenizer on arbitrary bytes (invalid UTF-8,
 * NULs, special-token text, huge words) and the streaming detokenizer on
 * arbitrary ids. The real model's tokenizer (SmolLM2's byte-level BPE with
 * its pre-tokenizer regexes; $SQSERVE_FUZZ_MODEL overrides) is loaded once.
 * First byte: bit 0 = parse special tokens. Seeds: tests/fuzz/corpus/tok. */
#include "fuzz_common.h"

#include <stdio.h>

static model_t M;
static int loaded;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *path = getenv("SQSERVE_FUZZ_MODEL");
    char err[512];
    k_init();
    if (model_load(&M, path ? path : "models/SmolLM2-135M-Instruct.Q4_1.gguf", err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tok: %s\n", err);
        exit(1);
    }
    loaded = 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!loaded || size == 0) return 0;
    int special = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t small[64];
    long n = tok_encode(M.tok, text, len, special, small, 64);
    if (n < 0) return 0;
    int32_t *ids = small;
    if (n > 64) {
        ids = malloc((size_t)n * sizeof *ids);
        if (!ids || tok_encode(M.tok, text, len, special, ids, (size_t)n) != n) abort(); /* same answer twice */
    }
    char out[1024];
    tok_stream_t st = {{0}, 0};
    for (long i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(M.tok)) abort(); /* an id outside the vocabulary */
        tok_stream_push(M.tok, &st, ids[i], 1, out, sizeof out);
    }
    tok_stream_flush(&st, out, sizeof out);
    if (ids != small) free(ids);
    /* arbitrary ids (two bytes each, any value) through the detokenizer */
    tok_stream_t st2 = {{0}, 0};
    for (size_t i = 0; i + 1 < len; i += 2) {
        int id = (int)(((uint8_t)text[i] | (uint8_t)text[i + 1] << 8) % (unsigned)tok_n_vocab(M.tok));
        tok_stream_push(M.tok, &st2, id, text[i] & 1, out, sizeof out);
    }
    tok_stream_flush(&st2, out, sizeof out);
    size_t clean_len;
    free(tok_utf8_sanitize(text, len, &clean_len));
    return 0;
}
