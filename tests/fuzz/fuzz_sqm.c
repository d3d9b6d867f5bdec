/* fuzz_sqm.c - libFuzzer: a .sqm file through the loader (header, manifest,
 * embedded GGUF, tensor table, SQ invariants, masks) and, when it loads and
 * is small, one forward pass. The harness rewrites the header's file size
 * and XXH3 checksum to match the mutated bytes: otherwise the checksum
 * would refuse nearly every input before anything interesting is parsed.
 * (A corrupted checksum is covered by tests/test_sqm.py.) The bytes go
 * through a memfd, since the loader maps a path. Seeds:
 * tests/fuzz/corpus/sqm (tiny models converted with several recipes). */
#include "fuzz_common.h"
#include "../../engine/model/sqm.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    k_init(); /* honours SQSERVE_ISA: run-fuzz.sh picks the portable kernels, whose plain C
               * conversions UBSan can see (the SIMD ones saturate NaN silently) */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < sizeof(sqm_header_t)) return 0;
    uint8_t *buf = malloc(size);
    if (!buf) return 0;
    memcpy(buf, data, size);
    sqm_header_t h;
    memcpy(&h, buf, sizeof h);
    h.file_size = size;
    h.checksum = XXH3_64bits(buf + sizeof h, size - sizeof h);
    memcpy(buf, &h, sizeof h);
    int fd = memfd_create("fuzz.sqm", MFD_CLOEXEC);
    if (fd < 0) { free(buf); return 0; }
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, buf + off, size - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    free(buf);
    if (off == size) {
        char path[64], err[512];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        model_t m;
        if (model_load(&m, path, err, sizeof err) == 0) {
            fuzz_forward_once(&m);
            model_free(&m);
        }
    }
    close(fd);
    return 0;
}
