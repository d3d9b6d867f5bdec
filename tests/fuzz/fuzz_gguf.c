/* fuzz_gguf.c - libFuzzer: a GGUF file from memory through the whole model
 * loader (header, metadata, tensor table, hyperparameters, shapes, the
 * non-finite weight scan, tokenizer, chat template) and, for a model that
 * loads and is small, one forward pass with INT8 activation quantization:
 * the path where the first fuzz run found NaN weights reaching a
 * float-to-int conversion. Seeds: tests/fuzz/corpus/gguf (tiny models from
 * tests/gguf_craft.py). */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    k_init(); /* honours SQSERVE_ISA: run-fuzz.sh picks the portable kernels, whose plain C
               * conversions UBSan can see (the SIMD ones saturate NaN silently) */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_t m;
    memset(&m, 0, sizeof m);
    char err[512];
    uint8_t *buf = fuzz_aligned_copy(data, size);
    if (!buf) return 0;
    if (gguf_open_mem(&m.gguf, buf, size, "fuzz input", err, sizeof err) == 0 &&
        model_init(&m, "fuzz input", err, sizeof err) == 0) { /* model_init frees m on failure */
        fuzz_forward_once(&m);
        model_free(&m);
    }
    free(buf);
    return 0;
}
