/* grammar.c - the matcher: grammar state, advancing by bytes and tokens, the
 * mask walk over the token trie and the mask cache (see grammar.h for the
 * design). The trie itself is built by grammar_vocab.c, which calls nothing
 * here: this file reads its arrays (grammar_int.h), so the dependency runs
 * one way.
 *
 * A stack is a chain of frames (pos, parent): pos indexes the grammar's
 * elements, parent is the frame to return to (0: none). The top frame always
 * points at a character class; the frames below point at what follows a rule
 * reference. Expanding a reference whose next element is the end of its
 * alternative pushes no return frame (a tail call), so right recursion such
 * as `chars ::= [a-z] chars |` keeps the stack flat and the state repeats,
 * which is what makes the mask cache hit.
 *
 * Frames are hash-consed: equal (pos, parent) is one id, so equal stacks are
 * one id and a set of stacks is deduplicated by comparing ids. The frames of
 * the matcher's own states are kept (persistent); those made while walking
 * the token trie for a mask are scratch, dropped after the walk (a
 * generation stamp empties their table in O(1)).
 *
 * The state also holds a code point begun but not complete (tokens split
 * UTF-8 characters): its lead bytes must leave some class able to match some
 * code point they can still become.
 */
#include "grammar_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define MAX_STACKS 4096          /* stacks in one state: beyond, the grammar is too ambiguous */
#define MAX_EXPAND_DEPTH 2048    /* nested references expanded without consuming a byte */
#define CACHE_BYTES (8u << 20)   /* masks kept per grammar (1365 of SmolLM2's 6 KiB) */
#define WORK_BUDGET 5000000L     /* expansions + set comparisons in one mask walk or one
                                  * advance (a JSON string state's walk takes about 5000):
                                  * past it the grammar is too ambiguous to serve, not a
                                  * reason to hold the scheduler's thread for seconds */
#define NONE UINT32_MAX

typedef struct { uint32_t pos, parent; } gnode_t;

/* A step remembered during one trie walk: the same stack set meets the same
 * byte at many trie nodes (inside a JSON string, every ASCII byte but the
 * quote and the backslash leads back to the same set). */
typedef struct {
    uint64_t h;
    uint32_t gen, key, n_in, out, n_out;
    gutf8_t u, u_out;
    uint8_t b;
} gmemo_t;

#define MEMO_MAX_IDS (1u << 22) /* ids kept per walk (16 MiB) */

struct gmatch {
    grammar_t *g;
    const gvocab_t *v;
    gnode_t *nodes;              /* id 0 unused: the empty stack */
    uint32_t n_nodes, cap_nodes, n_persist;
    uint32_t *pt, pt_cap, pt_n;  /* persistent frames' intern table (ids, 0 = free) */
    uint32_t *st, *st_gen, st_cap, st_n, gen; /* scratch frames' table */
    int walking, ended;
    uint32_t *set;               /* the current state */
    int n_set;
    uint32_t cap_set;
    gutf8_t u;
    uint32_t *buf;               /* sets being built (gmatch_step_byte appends here) */
    uint32_t n_buf, cap_buf;
    uint32_t *key;
    uint32_t cap_key;
    uint64_t *own_mask;          /* when the cache is full */
    gmemo_t *memo;               /* steps of the current walk (stamped with gen) */
    uint32_t memo_cap, memo_n;
    uint32_t *marena, marena_n, marena_cap;
    long work;                   /* work done by the current walk or advance */
    long computed, cached;
};

/* ---- frames -------------------------------------------------------------------------------- */

static uint32_t hash2(uint32_t a, uint32_t b) {
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32) ^ (uint32_t)x;
}

static int grow_u32(uint32_t **a, uint32_t *cap, uint64_t need) {
    if (need <= *cap) return 0;
    if (need > UINT32_MAX / 2) return -1;
    uint32_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    uint32_t *n = realloc(*a, (size_t)c * sizeof *n);
    if (!n) return -1;
    *a = n;
    *cap = c;
    return 0;
}

static uint32_t new_node(gmatch_t *m, uint32_t pos, uint32_t parent) {
    if (m->n_nodes == m->cap_nodes) {
        uint32_t c = m->cap_nodes ? m->cap_nodes * 2 : 256;
        gnode_t *n = realloc(m->nodes, (size_t)c * sizeof *n);
        if (!n) return NONE;
        m->nodes = n;
        m->cap_nodes = c;
    }
    m->nodes[m->n_nodes] = (gnode_t){pos, parent};
    return m->n_nodes++;
}

static int pt_rehash(gmatch_t *m) {
    uint32_t cap = m->pt_cap ? m->pt_cap * 2 : 1024;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (uint32_t i = 0; i < m->pt_cap; i++) {
        uint32_t id = m->pt[i];
        if (!id) continue;
        uint32_t h = hash2(m->nodes[id].pos, m->nodes[id].parent) & (cap - 1);
        while (t[h]) h = (h + 1) & (cap - 1);
        t[h] = id;
    }
    free(m->pt);
    m->pt = t;
    m->pt_cap = cap;
    return 0;
}

static int st_rehash(gmatch_t *m) {
    uint32_t cap = m->st_cap ? m->st_cap * 2 : 4096;
    uint32_t *t = malloc((size_t)cap * sizeof *t), *gen = calloc(cap, sizeof *gen);
    if (!t || !gen) { free(t); free(gen); return -1; }
    for (uint32_t i = 0; i < m->st_cap; i++) {
        if (m->st_gen[i] != m->gen) continue;
        uint32_t id = m->st[i], h = hash2(m->nodes[id].pos, m->nodes[id].parent) & (cap - 1);
        while (gen[h] == m->gen) h = (h + 1) & (cap - 1);
        t[h] = id;
        gen[h] = m->gen;
    }
    free(m->st); free(m->st_gen);
    m->st = t;
    m->st_gen = gen;
    m->st_cap = cap;
    return 0;
}

/* The frame (pos, parent), made if new; NONE on out of memory. */
static uint32_t intern(gmatch_t *m, uint32_t pos, uint32_t parent) {
    uint32_t h = hash2(pos, parent);
    if (m->pt_cap) {
        for (uint32_t i = h & (m->pt_cap - 1); m->pt[i]; i = (i + 1) & (m->pt_cap - 1))
            if (m->nodes[m->pt[i]].pos == pos && m->nodes[m->pt[i]].parent == parent) return m->pt[i];
    }
    if (!m->walking) {
        if ((m->pt_n + 1) * 2 > m->pt_cap && pt_rehash(m)) return NONE;
        uint32_t id = new_node(m, pos, parent);
        if (id == NONE) return NONE;
        uint32_t i = h & (m->pt_cap - 1);
        while (m->pt[i]) i = (i + 1) & (m->pt_cap - 1);
        m->pt[i] = id;
        m->pt_n++;
        m->n_persist = m->n_nodes;
        return id;
    }
    if (m->st_cap) {
        for (uint32_t i = h & (m->st_cap - 1); m->st_gen[i] == m->gen; i = (i + 1) & (m->st_cap - 1))
            if (m->nodes[m->st[i]].pos == pos && m->nodes[m->st[i]].parent == parent) return m->st[i];
    }
    if ((m->st_n + 1) * 2 > m->st_cap && st_rehash(m)) return NONE;
    uint32_t id = new_node(m, pos, parent);
    if (id == NONE) return NONE;
    uint32_t i = h & (m->st_cap - 1);
    while (m->st_gen[i] == m->gen) i = (i + 1) & (m->st_cap - 1);
    m->st[i] = id;
    m->st_gen[i] = m->gen;
    m->st_n++;
    return id;
}

static void gmatch_walk_begin(gmatch_t *m) {
    m->walking = 1;
    m->st_n = 0;
    m->memo_n = 0;
    m->marena_n = 0;
    m->work = 0;
    if (++m->gen == 0) { /* wrapped: stamps from 2^32 walks ago would look current */
        if (m->st_gen) memset(m->st_gen, 0, (size_t)m->st_cap * sizeof *m->st_gen);
        for (uint32_t i = 0; i < m->memo_cap; i++) m->memo[i].gen = 0;
        m->gen = 1;
    }
}

static void gmatch_walk_end(gmatch_t *m) {
    m->walking = 0;
    m->n_nodes = m->n_persist;
}

/* ---- expansion and one byte ------------------------------------------------------------------ */

/* Appends id to the set being built at buf[off..n_buf) unless present. */
static int add_unique(gmatch_t *m, uint32_t off, uint32_t id) {
    if ((m->work += m->n_buf - off + 1) > WORK_BUDGET) return -1;
    for (uint32_t i = off; i < m->n_buf; i++)
        if (m->buf[i] == id) return 0;
    if (m->n_buf - off >= MAX_STACKS || grow_u32(&m->buf, &m->cap_buf, (uint64_t)m->n_buf + 1)) return -1;
    m->buf[m->n_buf++] = id;
    return 0;
}

/* Expands position pos (returning to frame parent) until every stack's top
 * is a class, adding the stacks to the set at buf[off..). */
static int expand(gmatch_t *m, uint32_t pos, uint32_t parent, uint32_t off, int depth) {
    const grammar_t *g = m->g;
    if (depth > MAX_EXPAND_DEPTH || ++m->work > WORK_BUDGET) return -1;
    for (;;) {
        gel_t e = g->el[pos];
        if (e.type == GE_CLASS) {
            uint32_t id = intern(m, pos, parent);
            return id == NONE ? -1 : add_unique(m, off, id);
        }
        if (e.type == GE_END) {
            if (parent == 0) return add_unique(m, off, 0);
            pos = m->nodes[parent].pos;
            parent = m->nodes[parent].parent;
            continue;
        }
        uint32_t ret = parent;
        if (g->el[pos + 1].type != GE_END && (ret = intern(m, pos + 1, parent)) == NONE) return -1;
        for (uint32_t a = g->rule_alt[e.arg]; a < g->rule_alt[e.arg + 1]; a++)
            if (expand(m, g->alt[a], ret, off, depth + 1)) return -1;
        return 0;
    }
}

static int utf8_ok(uint32_t cp, int len) {
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    return cp >= min[len] && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

static int step_byte(gmatch_t *m, uint32_t in_off, int n, gutf8_t u, uint8_t b, gutf8_t *u_out) {
    const grammar_t *g = m->g;
    uint32_t off = m->n_buf;
    gutf8_t nu = {0, 0, 0};
    uint32_t cp;
    if (u.rem == 0 && b < 0x80) {
        cp = b;
    } else if (u.rem == 0) {
        int rem = b >= 0xC2 && b < 0xE0 ? 1 : b >= 0xE0 && b < 0xF0 ? 2 : b >= 0xF0 && b < 0xF5 ? 3 : -1;
        if (rem < 0) return 0;
        nu = (gutf8_t){b & (0x3Fu >> rem), rem, rem + 1};
        goto partial;
    } else {
        if ((b & 0xC0) != 0x80) return 0;
        nu = (gutf8_t){u.val << 6 | (b & 0x3Fu), u.rem - 1, u.len};
        if (nu.rem > 0) goto partial;
        if (!utf8_ok(nu.val, nu.len)) return 0;
        cp = nu.val;
        nu = (gutf8_t){0, 0, 0};
    }
    for (int i = 0; i < n; i++) {
        uint32_t s = m->buf[in_off + (uint32_t)i];
        if (s == 0) continue;
        uint32_t pos = m->nodes[s].pos;
        if (gclass_has(g, g->el[pos].arg, cp) && expand(m, pos + 1, m->nodes[s].parent, off, 0)) return -1;
    }
    *u_out = nu;
    return (int)(m->n_buf - off);
partial: { /* keep the stacks whose class can still match what the bytes may become */
        uint32_t lo = nu.val << (6 * nu.rem), hi = lo | ((1u << (6 * nu.rem)) - 1);
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (hi < min[nu.len] || lo > 0x10FFFF) return 0;
        if (lo < min[nu.len]) lo = min[nu.len];
        if (hi > 0x10FFFF) hi = 0x10FFFF;
        for (int i = 0; i < n; i++) {
            uint32_t s = m->buf[in_off + (uint32_t)i];
            if (s && gclass_meets(g, g->el[m->nodes[s].pos].arg, lo, hi) && add_unique(m, off, s)) return -1;
        }
        *u_out = nu;
        return (int)(m->n_buf - off);
    }
}

static uint64_t memo_hash(const uint32_t *ids, int n, gutf8_t u, uint8_t b) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)u.val << 16 | (uint64_t)u.rem << 8 | b);
    for (int i = 0; i < n; i++) h = (h ^ ids[i]) * 0x100000001B3ull;
    return h ^ (h >> 29);
}

static int memo_grow(gmatch_t *m) {
    uint32_t cap = m->memo_cap ? m->memo_cap * 2 : 4096;
    gmemo_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (uint32_t i = 0; i < m->memo_cap; i++) {
        if (m->memo[i].gen != m->gen) continue;
        uint32_t j = (uint32_t)m->memo[i].h & (cap - 1);
        while (t[j].gen == m->gen) j = (j + 1) & (cap - 1);
        t[j] = m->memo[i];
    }
    free(m->memo);
    m->memo = t;
    m->memo_cap = cap;
    return 0;
}

/* step_byte, remembered per walk (outside a walk the frames made are
 * persistent and few: no memo). */
static int gmatch_step_byte(gmatch_t *m, uint32_t in_off, int n, gutf8_t u, uint8_t b, gutf8_t *u_out) {
    if (!m->walking) return step_byte(m, in_off, n, u, b, u_out);
    uint64_t h = memo_hash(m->buf + in_off, n, u, b);
    uint32_t i = 0;
    if (m->memo_cap) {
        for (i = (uint32_t)h & (m->memo_cap - 1); m->memo[i].gen == m->gen; i = (i + 1) & (m->memo_cap - 1)) {
            gmemo_t *e = &m->memo[i];
            if (e->h != h || e->n_in != (uint32_t)n || e->b != b || e->u.val != u.val || e->u.rem != u.rem ||
                e->u.len != u.len || memcmp(m->marena + e->key, m->buf + in_off, (size_t)n * sizeof(uint32_t)))
                continue;
            if (grow_u32(&m->buf, &m->cap_buf, (uint64_t)m->n_buf + e->n_out)) return -1;
            memcpy(m->buf + m->n_buf, m->marena + e->out, (size_t)e->n_out * sizeof(uint32_t));
            m->n_buf += e->n_out;
            *u_out = e->u_out;
            return (int)e->n_out;
        }
    }
    uint32_t off = m->n_buf;
    int k = step_byte(m, in_off, n, u, b, u_out);
    if (k < 0 || (uint64_t)m->marena_n + (uint64_t)n + (uint64_t)k > MEMO_MAX_IDS) return k;
    if ((m->memo_n + 1) * 2 > m->memo_cap) {
        if (memo_grow(m)) return k; /* no memo: still correct */
        for (i = (uint32_t)h & (m->memo_cap - 1); m->memo[i].gen == m->gen; i = (i + 1) & (m->memo_cap - 1)) {}
    }
    if (grow_u32(&m->marena, &m->marena_cap, (uint64_t)m->marena_n + (uint64_t)n + (uint64_t)k)) return k;
    gmemo_t *e = &m->memo[i];
    *e = (gmemo_t){h, m->gen, m->marena_n, (uint32_t)n, m->marena_n + (uint32_t)n, (uint32_t)k, u, *u_out, b};
    memcpy(m->marena + e->key, m->buf + in_off, (size_t)n * sizeof(uint32_t));
    memcpy(m->marena + e->out, m->buf + off, (size_t)k * sizeof(uint32_t));
    m->marena_n += (uint32_t)(n + k);
    m->memo_n++;
    return k;
}

/* ---- the matcher ------------------------------------------------------------------------------- */

gmatch_t *gmatch_new(grammar_t *g, const gvocab_t *v) {
    gmatch_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = grammar_ref(g);
    m->v = v;
    m->gen = 1;
    if (new_node(m, 0, 0) == NONE) goto fail; /* id 0: the empty stack, never a frame */
    m->n_persist = 1;
    for (uint32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++)
        if (expand(m, g->alt[a], 0, 0, 0)) goto fail;
    if (grow_u32(&m->set, &m->cap_set, m->n_buf ? m->n_buf : 1)) goto fail;
    memcpy(m->set, m->buf, (size_t)m->n_buf * sizeof *m->set);
    m->n_set = (int)m->n_buf;
    m->n_buf = 0;
    return m;
fail:
    gmatch_free(m);
    return NULL;
}

void gmatch_free(gmatch_t *m) {
    if (!m) return;
    grammar_unref(m->g);
    free(m->nodes); free(m->pt); free(m->st); free(m->st_gen); free(m->set); free(m->buf);
    free(m->key); free(m->own_mask); free(m->memo); free(m->marena);
    free(m);
}

int gmatch_can_end(const gmatch_t *m) {
    if (m->ended || m->u.rem) return 0;
    for (int i = 0; i < m->n_set; i++)
        if (m->set[i] == 0) return 1;
    return 0;
}

int gmatch_done(const gmatch_t *m) { return m->ended || (m->n_set == 1 && m->set[0] == 0 && !m->u.rem); }

int gmatch_accept_bytes(gmatch_t *m, const char *s, size_t len) {
    if (m->ended) return -1;
    m->work = 0;
    if (grow_u32(&m->buf, &m->cap_buf, (uint64_t)m->n_set)) return -1;
    memcpy(m->buf, m->set, (size_t)m->n_set * sizeof *m->buf);
    m->n_buf = (uint32_t)m->n_set;
    uint32_t off = 0;
    int n = m->n_set;
    gutf8_t u = m->u;
    for (size_t i = 0; i < len && n > 0; i++) {
        uint32_t next = m->n_buf;
        n = gmatch_step_byte(m, off, n, u, (uint8_t)s[i], &u);
        if (n < 0) { m->n_buf = 0; return -1; }
        memmove(m->buf, m->buf + next, (size_t)n * sizeof *m->buf); /* keep the buffer short */
        m->n_buf = (uint32_t)n;
        off = 0;
    }
    m->n_buf = 0;
    if (n <= 0) return -1;
    if (grow_u32(&m->set, &m->cap_set, (uint64_t)n)) return -1;
    memcpy(m->set, m->buf, (size_t)n * sizeof *m->set);
    m->n_set = n;
    m->u = u;
    return 0;
}

static int is_eog(const gvocab_t *v, int32_t id) {
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return 1;
    return 0;
}

int gmatch_accept_token(gmatch_t *m, int32_t id) {
    const gvocab_t *v = m->v;
    if (id < 0 || id >= v->n_vocab || m->ended) return -1;
    if (is_eog(v, id)) {
        if (!gmatch_can_end(m)) return -1;
        m->ended = 1;
        return 0;
    }
    const uint64_t *mask = gmatch_mask(m); /* also rules out control tokens */
    if (!mask || !((mask[id >> 6] >> (id & 63)) & 1)) return -1;
    return gmatch_accept_bytes(m, v->piece[id], v->piece_len[id]);
}

/* ---- the mask cache ------------------------------------------------------------------------------ */

static uint64_t stack_hash(const gmatch_t *m, uint32_t s) {
    uint64_t h = 0x2545F4914F6CDD1Dull;
    for (; s; s = m->nodes[s].parent) h = (h ^ m->nodes[s].pos) * 0x100000001B3ull;
    return h;
}

/* The state as positions (structure, not ids): the UTF-8 bytes pending,
 * then each stack top to bottom, stacks ordered by their hash. */
static int build_key(gmatch_t *m, uint32_t *klen) {
    uint64_t need = 3;
    for (int i = 0; i < m->n_set; i++)
        for (uint32_t s = m->set[i];; s = m->nodes[s].parent) {
            need++;
            if (!s) break;
        }
    if (grow_u32(&m->key, &m->cap_key, need + (uint64_t)m->n_set * 2)) return -1;
    /* order the stacks: insertion sort by hash (sets are small) */
    uint32_t *ord = m->key + need, n = (uint32_t)m->n_set;
    for (uint32_t i = 0; i < n; i++) ord[i] = m->set[i];
    for (uint32_t i = 1; i < n; i++) {
        uint32_t x = ord[i];
        uint64_t hx = stack_hash(m, x);
        uint32_t j = i;
        while (j > 0 && stack_hash(m, ord[j - 1]) > hx) { ord[j] = ord[j - 1]; j--; }
        ord[j] = x;
    }
    uint32_t k = 0;
    m->key[k++] = m->u.val;
    m->key[k++] = (uint32_t)m->u.rem | (uint32_t)m->u.len << 8;
    m->key[k++] = n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s = ord[i];
        for (; s; s = m->nodes[s].parent) m->key[k++] = m->nodes[s].pos;
        m->key[k++] = NONE;
    }
    *klen = k;
    return 0;
}

/* The mask walk over the token trie (built by grammar_vocab.c).
 * Depth first: advance the set by each child's byte; a child whose set
 * comes out empty is skipped with its whole subtree. */
static int walk(gmatch_t *m, const gvocab_t *v, uint32_t node, uint32_t in_off, int n, gutf8_t u,
                uint64_t *mask) {
    uint32_t c0 = v->child0[node], c1 = c0 + v->n_child[node];
    for (uint32_t c = c0; c < c1; c++) {
        uint32_t save = m->n_buf;
        gutf8_t nu;
        int k = gmatch_step_byte(m, in_off, n, u, v->byte[c], &nu);
        if (k < 0) return -1;
        if (k > 0) {
            for (uint32_t i = 0; i < v->n_tok[c]; i++) {
                int32_t id = v->ids[v->tok0[c] + i];
                mask[id >> 6] |= 1ull << (id & 63);
            }
            if (v->n_child[c] && walk(m, v, c, save, k, nu, mask)) return -1;
        }
        m->n_buf = save;
    }
    return 0;
}

static int vocab_walk(gmatch_t *m, const gvocab_t *v, uint32_t in_off, int n, gutf8_t u, uint64_t *mask) {
    memset(mask, 0, (size_t)v->words * sizeof *mask);
    return walk(m, v, 0, in_off, n, u, mask);
}

/* Looks the key up; on a miss returns the slot to fill (NULL when full). */
static gcache_ent_t *cache_find(grammar_t *g, const gvocab_t *v, const uint32_t *key, uint32_t klen,
                                uint64_t h, int *hit) {
    *hit = 0;
    if (g->cache_vocab != v) { /* first use (a grammar serves one model) */
        for (uint32_t i = 0; i < g->cache_cap; i++) { free(g->cache[i].key); free(g->cache[i].mask); }
        free(g->cache);
        g->cache_max = CACHE_BYTES / ((uint32_t)v->words * 8u);
        if (g->cache_max < 16) g->cache_max = 16;
        g->cache_cap = 32;
        while (g->cache_cap < g->cache_max * 2) g->cache_cap *= 2;
        g->cache = calloc(g->cache_cap, sizeof *g->cache);
        g->cache_n = 0;
        g->cache_vocab = g->cache ? v : NULL;
        if (!g->cache) { g->cache_cap = 0; return NULL; }
    }
    uint32_t i = (uint32_t)h & (g->cache_cap - 1);
    for (; g->cache[i].key; i = (i + 1) & (g->cache_cap - 1)) {
        gcache_ent_t *e = &g->cache[i];
        if (e->h == h && e->klen == klen && !memcmp(e->key, key, klen * sizeof *key)) {
            *hit = 1;
            return e;
        }
    }
    return g->cache_n < g->cache_max ? &g->cache[i] : NULL;
}

const uint64_t *gmatch_mask(gmatch_t *m) {
    const gvocab_t *v = m->v;
    grammar_t *g = m->g;
    size_t mbytes = (size_t)v->words * sizeof(uint64_t);
    if (m->ended) {
        if (!m->own_mask && !(m->own_mask = malloc(mbytes))) return NULL;
        memset(m->own_mask, 0, mbytes);
        return m->own_mask;
    }
    uint32_t klen;
    if (build_key(m, &klen)) return NULL;
    uint64_t h = XXH3_64bits(m->key, klen * sizeof *m->key);
    int hit;
    pthread_mutex_lock(&g->mu);
    gcache_ent_t *e = cache_find(g, v, m->key, klen, h, &hit);
    if (hit) {
        const uint64_t *mask = e->mask;
        pthread_mutex_unlock(&g->mu);
        m->cached++;
        return mask;
    }
    pthread_mutex_unlock(&g->mu);
    /* compute outside the lock (another sequence may compute the same mask: harmless) */
    uint64_t *mask = malloc(mbytes);
    uint32_t *key = malloc(klen * sizeof *key);
    if (!mask || !key) { free(mask); free(key); return NULL; }
    memcpy(key, m->key, klen * sizeof *key);
    if (grow_u32(&m->buf, &m->cap_buf, (uint64_t)m->n_set)) { free(mask); free(key); return NULL; }
    memcpy(m->buf, m->set, (size_t)m->n_set * sizeof *m->buf);
    m->n_buf = (uint32_t)m->n_set;
    gmatch_walk_begin(m);
    int rc = vocab_walk(m, v, 0, m->n_set, m->u, mask);
    gmatch_walk_end(m);
    m->n_buf = 0;
    if (rc) { free(mask); free(key); return NULL; }
    if (gmatch_can_end(m))
        for (int i = 0; i < v->n_eog; i++) mask[v->eog[i] >> 6] |= 1ull << (v->eog[i] & 63);
    m->computed++;
    pthread_mutex_lock(&g->mu);
    e = cache_find(g, v, key, klen, h, &hit);
    if (e && !hit) {
        *e = (gcache_ent_t){h, key, klen, mask};
        g->cache_n++;
        pthread_mutex_unlock(&g->mu);
        return mask;
    }
    pthread_mutex_unlock(&g->mu);
    free(key);
    if (!hit) { /* the cache is full: keep it in the matcher */
        free(m->own_mask);
        m->own_mask = mask;
        return mask;
    }
    free(mask);
    return e->mask; /* computed meanwhile by another matcher */
}

int gmatch_apply(gmatch_t *m, float *logits) {
    const uint64_t *mask = gmatch_mask(m);
    if (!mask) return -1;
    int n_vocab = m->v->n_vocab, allowed = 0;
    for (int w = 0; w < m->v->words; w++) {
        uint64_t bits = mask[w];
        int base = w * 64, lim = n_vocab - base < 64 ? n_vocab - base : 64;
        if (lim == 64 && bits == ~0ull) { allowed += 64; continue; }
        allowed += __builtin_popcountll(bits);
        for (int i = 0; i < lim; i++)
            if (!((bits >> i) & 1)) logits[base + i] = -INFINITY;
    }
    return allowed;
}

void gmatch_counts(const gmatch_t *m, long *computed, long *cached) {
    *computed = m->computed;
    *cached = m->cached;
}

/* ---- grammar lifetime ------------------------------------------------------------------------------- */

grammar_t *grammar_ref(grammar_t *g) {
    atomic_fetch_add(&g->refs, 1);
    return g;
}

void grammar_unref(grammar_t *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    for (uint32_t i = 0; i < g->cache_cap; i++) { free(g->cache[i].key); free(g->cache[i].mask); }
    free(g->cache);
    pthread_mutex_destroy(&g->mu);
    free(g->el); free(g->alt); free(g->rule_alt); free(g->cls); free(g->ranges);
    free(g);
}
