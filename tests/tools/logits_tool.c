/* logits_tool.c - every row's logits of a token sequence, for
 * tests/test_archs.py (which checks them against the NumPy reference,
 * tests/reference/ref_llama.py).
 *
 *   logits_tool MODEL OUT.f32 CHUNK ID...
 *
 * MODEL is a GGUF or a .sqm (model_load). The ids run through the forward
 * pass on the CPU, CHUNK rows per call (so later chunks read earlier
 * positions from the paged KV cache), every row wanting logits. OUT
 * receives n_ids x n_vocab float32, row-major. Exit status 0, or 1 with
 * one line on stderr. */
#include "../../engine/compute/forward.h"

#include <stdio.h>
#include <stdlib.h>

static int fail(const char *msg) {
    fprintf(stderr, "logits_tool: %s\n", msg);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 5) return fail("usage: logits_tool MODEL OUT.f32 CHUNK ID...");
    int n = argc - 4, chunk = atoi(argv[3]);
    if (chunk < 1) return fail("CHUNK must be at least 1");
    char err[512];
    model_t m = {0};
    k_init();
    if (model_load(&m, argv[1], err, sizeof err) != 0) return fail(err);
    int nv = m.hp.n_vocab, n_ctx = (n + KV_BLOCK - 1) / KV_BLOCK * KV_BLOCK;
    int32_t *ids = malloc((size_t)n * sizeof *ids), *pos = malloc((size_t)n * sizeof *pos);
    int32_t *slot = calloc((size_t)n, sizeof *slot);
    uint8_t *want = malloc((size_t)n);
    float *logits = malloc((size_t)n * (size_t)nv * sizeof *logits);
    k_pool_t *pool = k_pool_new(1);
    kv_cache_t kv;
    fwd_t f;
    int rc = 1;
    if (!ids || !pos || !slot || !want || !logits || !pool) {
        fail("out of memory");
        goto out_model;
    }
    for (int i = 0; i < n; i++) {
        ids[i] = atoi(argv[4 + i]);
        pos[i] = i;
        want[i] = 1;
    }
    if (kv_init(&kv, m.hp.n_layer, m.hp.head_dim * m.hp.n_head_kv, n_ctx / KV_BLOCK, 1) != 0) {
        fail("out of memory for the KV cache");
        goto out_model;
    }
    if (fwd_init(&f, &m, &kv, pool, chunk, n_ctx) != 0 || kv_seq_reserve(&kv, 0, n) != 0) {
        fail("out of memory for the forward pass");
        goto out_kv;
    }
    for (int i = 0; i < n; i += chunk) {
        int c = n - i < chunk ? n - i : chunk;
        batch_t b = {c, ids + i, pos + i, slot + i, want + i};
        if (fwd_run(&f, &b, logits + (size_t)i * nv, err, sizeof err) != 0) {
            fail(err);
            goto out_fwd;
        }
        kv_seq_commit(&kv, 0, ids, i + c);
    }
    FILE *o = fopen(argv[2], "wb");
    if (!o || fwrite(logits, sizeof *logits, (size_t)n * nv, o) != (size_t)n * nv || fclose(o) != 0) {
        fail("cannot write the output file");
        goto out_fwd;
    }
    rc = 0;
out_fwd:
    fwd_free(&f);
out_kv:
    kv_free(&kv);
out_model:
    if (pool) k_pool_free(pool);
    free(ids);
    free(pos);
    free(slot);
    free(want);
    free(logits);
    model_free(&m);
    return rc;
}
