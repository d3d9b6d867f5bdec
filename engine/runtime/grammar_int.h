/* grammar_int.h - the compiled grammar's layout, shared by grammar_parse.c
 * (which builds it), grammar.c (the matcher) and grammar_vocab.c (the trie
 * and the mask walk). Not part of the runtime's interface. */
#ifndef GRAMMAR_INT_H
#define GRAMMAR_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "grammar.h"

/* An element of an alternative: a character class to match, a rule to
 * expand, or the end of the alternative. */
enum { GE_END = 0, GE_CLASS = 1, GE_REF = 2 };
typedef struct { uint32_t type, arg; } gel_t;

/* Code points >= 128 as sorted, disjoint, inclusive ranges; ASCII as a bitmap. */
typedef struct { uint32_t lo, hi; } grange_t;
typedef struct { uint64_t ascii[2]; uint32_t r0, nr; } gclass_t;

typedef struct gcache_ent {
    uint64_t h;
    uint32_t *key;    /* NULL: empty slot */
    uint32_t klen;
    uint64_t *mask;
} gcache_ent_t;

struct grammar {
    atomic_int refs;
    gel_t *el;              /* every alternative, END-terminated, back to back */
    uint32_t n_el;
    uint32_t *alt;          /* start of each alternative in el */
    uint32_t *rule_alt;     /* rule r's alternatives: alt[rule_alt[r] .. rule_alt[r+1]) */
    uint32_t n_rules, root;
    gclass_t *cls;
    uint32_t n_cls;
    grange_t *ranges;
    uint32_t n_ranges;
    /* the mask cache (see grammar.h) */
    pthread_mutex_t mu;
    gcache_ent_t *cache;
    uint32_t cache_cap, cache_n, cache_max;
    const gvocab_t *cache_vocab;
};

struct gvocab {
    int n_vocab, words;     /* words: 64-bit words in a mask */
    uint32_t n_nodes;       /* node 0 is the root (the empty prefix) */
    uint32_t *child0;       /* first child; children are contiguous */
    uint32_t *n_child;
    uint8_t *byte;          /* the byte on the edge into the node */
    uint32_t *tok0, *n_tok; /* tokens ending at the node: ids[tok0 ..] */
    int32_t *ids;
    int32_t *eog;           /* end-of-generation tokens */
    int n_eog;
    const char **piece;     /* every token's bytes (into the tokenizer); NULL: never allowed */
    uint32_t *piece_len;
};

int gclass_has(const grammar_t *g, uint32_t cls, uint32_t cp);
/* Some code point in [lo, hi] is in the class. */
int gclass_meets(const grammar_t *g, uint32_t cls, uint32_t lo, uint32_t hi);

/* grammar.c: a code point begun but not complete, carried by the matcher's
 * state and by the mask walk. */
typedef struct {
    uint32_t val;  /* bits of a code point begun but not complete */
    int rem;       /* continuation bytes still expected (0: none) */
    int len;       /* the whole sequence's length in bytes (overlong forms are refused) */
} gutf8_t;

#endif
