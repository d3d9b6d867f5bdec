/* grammar.h - constrained decoding: GBNF grammars over a tokenizer's vocabulary.
 *
 * Three parts, one per file:
 *   grammar_parse.c  GBNF text -> grammar_t: rules of alternatives, each a
 *                    sequence of character classes and rule references.
 *                    Repetitions ({m,n}, *, +, ?) and groups become generated
 *                    rules; left recursion is refused at compile time, so the
 *                    matcher's expansion always terminates.
 *   grammar.c        the matcher: a pushdown automaton whose state is a set of
 *                    stacks of positions (as in llama.cpp's engine), plus the
 *                    bytes of a code point not yet complete. Stacks are
 *                    persistent linked frames, hash-consed, so a step shares
 *                    everything below the top and identical stacks are one id.
 *   grammar_vocab.c  the token trie (every token's bytes, prefixes shared) and
 *                    the per-state mask: one depth-first walk of the trie that
 *                    carries the stack set down, cutting a whole subtree as soon
 *                    as no stack survives its prefix.
 *
 * Speed comes from the mask cache: a mask depends only on the state, and the
 * states that cost most to walk (inside a string, a number, whitespace) are
 * the ones that recur, so masks are kept per grammar, keyed by the state's
 * structure (positions, not ids), and shared by every sequence using the
 * grammar. A cached step costs a hash of the state and one pass over the
 * logits; see `make bench-grammar`. Within one walk, steps are remembered by
 * (stack set, byte): inside a JSON string nearly every trie node repeats the
 * same step, so a walk expands a few thousand stacks, not one per node. A
 * walk or an advance that needs more than a fixed budget of work (an
 * ambiguous grammar) fails rather than hold the scheduler's thread.
 *
 * Threads: a grammar_t is immutable once built except its mask cache, which
 * has its own lock; a gmatch_t belongs to one sequence (one thread at a time).
 */
#ifndef GRAMMAR_H
#define GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "../model/tok.h"

typedef struct grammar grammar_t;
typedef struct gvocab gvocab_t;
typedef struct gmatch gmatch_t;

/* Parses GBNF text (start rule "root"). NULL with a message naming the
 * line and column on a bad grammar (or "out of memory"). Refcount 1. */
grammar_t *grammar_parse(const char *text, size_t len, char *err, size_t errlen);
grammar_t *grammar_ref(grammar_t *g);
void grammar_unref(grammar_t *g);
int grammar_n_rules(const grammar_t *g);

/* The token trie of a tokenizer: normal and user-defined tokens by their
 * bytes; end-of-generation tokens apart (allowed only where the grammar can
 * end); other control tokens never allowed. NULL on out of memory. */
gvocab_t *gvocab_new(const tok_t *t);
void gvocab_free(gvocab_t *v);
int gvocab_n_vocab(const gvocab_t *v);

/* A matcher at the grammar's start. NULL on out of memory. v may be NULL
 * when only gmatch_accept_bytes and gmatch_can_end / gmatch_done are used. */
gmatch_t *gmatch_new(grammar_t *g, const gvocab_t *v);
void gmatch_free(gmatch_t *m);

/* The allowed-token bitset for the current state (bit i of word i/64),
 * from the cache or computed and cached. NULL on out of memory or when the
 * state is too ambiguous to walk within a fixed budget of work. Valid until
 * the matcher's next call. */
const uint64_t *gmatch_mask(gmatch_t *m);
/* Sets the logits of disallowed tokens to -INFINITY. Returns the number of
 * allowed tokens, or -1 when gmatch_mask fails. */
int gmatch_apply(gmatch_t *m, float *logits);
/* Advances by one token (an end-of-generation token only where the grammar
 * can end). 0, or -1 when the grammar does not allow it (state unchanged). */
int gmatch_accept_token(gmatch_t *m, int32_t id);
/* Advances by raw bytes; 0 or -1 (rejected: state unchanged). */
int gmatch_accept_bytes(gmatch_t *m, const char *s, size_t n);
/* The grammar can end here. */
int gmatch_can_end(const gmatch_t *m);
/* The grammar can end here and nothing may follow. */
int gmatch_done(const gmatch_t *m);
/* Masks computed (cache misses) and served from the cache by this matcher. */
void gmatch_counts(const gmatch_t *m, long *computed, long *cached);

#endif
