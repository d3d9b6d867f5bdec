/* kv.h - paged KV cache with prefix sharing.
 *
 * Memory is a pool of fixed-size blocks (KV_BLOCK tokens x all layers x
 * K and V). Each sequence slot owns a block table; position p of a slot
 * lives in block table[p / KV_BLOCK], row p % KV_BLOCK. So memory is
 * committed per 16 tokens actually used, not per context length, and a
 * finished sequence returns its blocks at once.
 *
 * Prefix sharing: when a block fills up, it is registered under a hash of
 * every token up to its end (a chain hash). A new sequence whose prompt
 * starts with the same tokens takes those blocks (refcount + 1) instead
 * of recomputing them. Shared blocks are always full, and a sequence only
 * writes its last, private block, so no copy-on-write is needed. Blocks
 * whose refcount drops to 0 stay registered on an LRU free list: they can
 * still be hit until the allocator reuses them.
 */
#ifndef KV_H
#define KV_H

#include <stddef.h>
#include <stdint.h>

#define KV_BLOCK 16

typedef struct {
    int32_t *blocks;  /* block ids */
    int n_blocks, cap;
    int n_tokens;     /* positions with K/V written */
    uint64_t hash;    /* chain hash through the last full block */
    int n_hashed;     /* full blocks registered so far */
} kv_seq_t;

typedef struct {
    int n_layer, kv_dim, n_blocks, max_seqs;
    float *k, *v;           /* [block][layer][KV_BLOCK][kv_dim] */
    void (*release)(void *); /* frees k and v: free, or the GPU's when on a device */
    int32_t *ref;           /* refcount per block */
    uint64_t *hash;         /* registered chain hash, 0 = none */
    int32_t *lru_prev, *lru_next; /* free list, oldest first */
    int32_t lru_head, lru_tail;
    int n_free;
    int32_t *bucket, *chain; /* hash -> block chains */
    int n_buckets;
    kv_seq_t *seqs;
} kv_cache_t;

/* n_blocks total; 0 < max_seqs. Returns 0 or -1 (out of memory). */
int kv_init(kv_cache_t *kv, int n_layer, int kv_dim, int n_blocks, int max_seqs);
void kv_free(kv_cache_t *kv);
/* Moves the K/V storage to memory from alloc/release (e.g. the GPU's):
 * the host arrays are freed; contents are not copied (call before use).
 * Returns 0 or -1 (alloc failed; the cache keeps its host storage). */
int kv_set_storage(kv_cache_t *kv, void *(*alloc)(size_t), void (*release)(void *));
/* Bytes one block takes (to size the pool from a memory budget). */
size_t kv_block_bytes(int n_layer, int kv_dim);

/* Reuses registered blocks matching a prefix of tokens; at most
 * max_tokens positions (rounded down to whole blocks). The slot must be
 * empty. Returns the number of positions now present. */
int kv_seq_match_prefix(kv_cache_t *kv, int slot, const int32_t *tokens, int n, int max_tokens);
/* Ensures blocks for positions [0, n_positions). -1 when the pool is
 * exhausted (nothing is allocated then). */
int kv_seq_reserve(kv_cache_t *kv, int slot, int n_positions);
/* Blocks needed to reach n_positions from what the slot holds. */
int kv_seq_blocks_needed(const kv_cache_t *kv, int slot, int n_positions);
/* Marks positions [0, n) written and registers newly full blocks under
 * the chain hash of tokens[0..]. */
void kv_seq_commit(kv_cache_t *kv, int slot, const int32_t *tokens, int n);
/* Returns every block of the slot to the pool. */
void kv_seq_release(kv_cache_t *kv, int slot);

static inline float *kv_k_row(const kv_cache_t *kv, int layer, int slot, int pos) {
    int32_t b = kv->seqs[slot].blocks[pos / KV_BLOCK];
    return kv->k + (((size_t)b * kv->n_layer + layer) * KV_BLOCK + pos % KV_BLOCK) * kv->kv_dim;
}
static inline float *kv_v_row(const kv_cache_t *kv, int layer, int slot, int pos) {
    int32_t b = kv->seqs[slot].blocks[pos / KV_BLOCK];
    return kv->v + (((size_t)b * kv->n_layer + layer) * KV_BLOCK + pos % KV_BLOCK) * kv->kv_dim;
}

int kv_blocks_used(const kv_cache_t *kv);

#endif
