/* kv.c - block pool, block tables, prefix hash (see kv.h). */
#include "kv.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

size_t kv_block_bytes(int n_layer, int kv_dim) {
    return (size_t)2 * n_layer * KV_BLOCK * kv_dim * sizeof(float);
}

static void lru_push(kv_cache_t *kv, int32_t b) { /* newest at the tail */
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = b;
    else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_free++;
}

static void lru_push_front(kv_cache_t *kv, int32_t b) { /* reused first */
    kv->lru_next[b] = kv->lru_head;
    kv->lru_prev[b] = -1;
    if (kv->lru_head >= 0) kv->lru_prev[kv->lru_head] = b;
    else kv->lru_tail = b;
    kv->lru_head = b;
    kv->n_free++;
}

static void lru_remove(kv_cache_t *kv, int32_t b) {
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0) kv->lru_next[p] = n; else kv->lru_head = n;
    if (n >= 0) kv->lru_prev[n] = p; else kv->lru_tail = p;
    kv->n_free--;
}

static void hash_unlink(kv_cache_t *kv, int32_t b) {
    if (!kv->hash[b]) return;
    int32_t *pp = &kv->bucket[kv->hash[b] % (uint64_t)kv->n_buckets];
    while (*pp != b) pp = &kv->chain[*pp];
    *pp = kv->chain[b];
    kv->hash[b] = 0;
}

static int32_t hash_find(const kv_cache_t *kv, uint64_t h) {
    for (int32_t b = kv->bucket[h % (uint64_t)kv->n_buckets]; b >= 0; b = kv->chain[b])
        if (kv->hash[b] == h) return b;
    return -1;
}

int kv_init(kv_cache_t *kv, int n_layer, int kv_dim, int n_blocks, int max_seqs) {
    memset(kv, 0, sizeof *kv);
    kv->n_layer = n_layer;
    kv->kv_dim = kv_dim;
    kv->n_blocks = n_blocks;
    kv->max_seqs = max_seqs;
    kv->n_buckets = n_blocks * 2 + 1;
    size_t floats = (size_t)n_blocks * n_layer * KV_BLOCK * kv_dim;
    kv->k = malloc(floats * sizeof(float));
    kv->v = malloc(floats * sizeof(float));
    kv->ref = calloc((size_t)n_blocks, sizeof *kv->ref);
    kv->hash = calloc((size_t)n_blocks, sizeof *kv->hash);
    kv->lru_prev = malloc((size_t)n_blocks * sizeof(int32_t));
    kv->lru_next = malloc((size_t)n_blocks * sizeof(int32_t));
    kv->chain = malloc((size_t)n_blocks * sizeof(int32_t));
    kv->bucket = malloc((size_t)kv->n_buckets * sizeof(int32_t));
    kv->seqs = calloc((size_t)max_seqs, sizeof *kv->seqs);
    if (n_blocks < 1 || max_seqs < 1 || !kv->k || !kv->v || !kv->ref || !kv->hash ||
        !kv->lru_prev || !kv->lru_next || !kv->chain || !kv->bucket || !kv->seqs) {
        kv_free(kv);
        return -1;
    }
    for (int i = 0; i < kv->n_buckets; i++) kv->bucket[i] = -1;
    kv->lru_head = kv->lru_tail = -1;
    for (int32_t b = 0; b < n_blocks; b++) lru_push(kv, b);
    return 0;
}

static void release_storage(kv_cache_t *kv) {
    void (*rel)(void *) = kv->release ? kv->release : free;
    rel(kv->k);
    rel(kv->v);
}

int kv_set_storage(kv_cache_t *kv, void *(*alloc)(size_t), void (*release)(void *)) {
    size_t bytes = (size_t)kv->n_blocks * kv->n_layer * KV_BLOCK * kv->kv_dim * sizeof(float);
    float *k = alloc(bytes), *v = k ? alloc(bytes) : NULL;
    if (!k || !v) {
        if (k) release(k);
        return -1;
    }
    release_storage(kv);
    kv->k = k;
    kv->v = v;
    kv->release = release;
    return 0;
}

void kv_free(kv_cache_t *kv) {
    if (kv->seqs)
        for (int i = 0; i < kv->max_seqs; i++) free(kv->seqs[i].blocks);
    release_storage(kv);
    free(kv->ref); free(kv->hash); free(kv->lru_prev);
    free(kv->lru_next); free(kv->chain); free(kv->bucket); free(kv->seqs);
    memset(kv, 0, sizeof *kv);
}

static int seq_push(kv_seq_t *s, int32_t b) {
    if (s->n_blocks == s->cap) {
        int cap = s->cap ? s->cap * 2 : 16;
        int32_t *nb = realloc(s->blocks, (size_t)cap * sizeof *nb);
        if (!nb) return -1;
        s->blocks = nb;
        s->cap = cap;
    }
    s->blocks[s->n_blocks++] = b;
    return 0;
}

static uint64_t chain_hash(uint64_t prev, const int32_t *tokens) {
    uint64_t h = XXH3_64bits_withSeed(tokens, KV_BLOCK * sizeof(int32_t), prev);
    return h ? h : 1; /* 0 means "not registered" */
}

int kv_seq_match_prefix(kv_cache_t *kv, int slot, const int32_t *tokens, int n, int max_tokens) {
    kv_seq_t *s = &kv->seqs[slot];
    uint64_t h = 0;
    int limit = (max_tokens < n ? max_tokens : n) / KV_BLOCK;
    for (int i = 0; i < limit; i++) {
        uint64_t hi = chain_hash(h, tokens + i * KV_BLOCK);
        int32_t b = hash_find(kv, hi);
        if (b < 0 || seq_push(s, b) != 0) break;
        if (kv->ref[b]++ == 0) lru_remove(kv, b);
        h = hi;
        s->n_tokens = s->n_blocks * KV_BLOCK;
        s->n_hashed = s->n_blocks;
        s->hash = h;
    }
    return s->n_tokens;
}

int kv_seq_blocks_needed(const kv_cache_t *kv, int slot, int n_positions) {
    int have = kv->seqs[slot].n_blocks, need = (n_positions + KV_BLOCK - 1) / KV_BLOCK;
    return need > have ? need - have : 0;
}

int kv_seq_reserve(kv_cache_t *kv, int slot, int n_positions) {
    kv_seq_t *s = &kv->seqs[slot];
    int need = kv_seq_blocks_needed(kv, slot, n_positions);
    if (need > kv->n_free) return -1;
    while (need-- > 0) {
        int32_t b = kv->lru_head; /* the least recently freed block */
        lru_remove(kv, b);
        hash_unlink(kv, b); /* its old contents are about to be overwritten */
        kv->ref[b] = 1;
        if (seq_push(s, b) != 0) {
            kv->ref[b] = 0;
            lru_push(kv, b);
            return -1;
        }
    }
    return 0;
}

void kv_seq_commit(kv_cache_t *kv, int slot, const int32_t *tokens, int n) {
    kv_seq_t *s = &kv->seqs[slot];
    if (n > s->n_tokens) s->n_tokens = n;
    while ((s->n_hashed + 1) * KV_BLOCK <= s->n_tokens) {
        int i = s->n_hashed;
        uint64_t h = chain_hash(s->hash, tokens + i * KV_BLOCK);
        int32_t b = s->blocks[i];
        /* register unless an identical block already is (keep one copy) */
        if (!kv->hash[b] && hash_find(kv, h) < 0) {
            kv->hash[b] = h;
            int32_t *head = &kv->bucket[h % (uint64_t)kv->n_buckets];
            kv->chain[b] = *head;
            *head = b;
        }
        s->hash = h;
        s->n_hashed++;
    }
}

void kv_seq_release(kv_cache_t *kv, int slot) {
    kv_seq_t *s = &kv->seqs[slot];
    for (int i = s->n_blocks - 1; i >= 0; i--) { /* tail first: prefixes stay longest */
        int32_t b = s->blocks[i];
        if (--kv->ref[b] == 0) {
            /* registered blocks stay findable until reused; the rest hold
             * nothing anyone can ask for, so they are reused first */
            if (kv->hash[b]) lru_push(kv, b);
            else lru_push_front(kv, b);
        }
    }
    s->n_blocks = 0;
    s->n_tokens = 0;
    s->n_hashed = 0;
    s->hash = 0;
}

int kv_blocks_used(const kv_cache_t *kv) { return kv->n_blocks - kv->n_free; }
