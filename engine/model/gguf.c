/* gguf.c - GGUF v2/v3 parser.
 *
 * Design: one pass over the header with a bounds-checked cursor. Every
 * count is checked against the bytes that remain before anything is
 * allocated for it, so a hostile file can neither make us read past the
 * mapping nor allocate more than a small multiple of its own size. After
 * gguf_open() succeeds every pointer in gguf_t is inside the mapping.
 */

#include "gguf.h"

#include "../../kernels/k_quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 256
#define GGUF_MAX_NESTING 4

typedef struct {
    const uint8_t *p, *end;
    char *err;
    size_t errlen;
} cursor_t;

static int fail(cursor_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static size_t remaining(const cursor_t *c) { return (size_t)(c->end - c->p); }

static int rd(cursor_t *c, void *out, size_t n, const char *what) {
    if (remaining(c) < n) return fail(c, "truncated file while reading %s", what);
    memcpy(out, c->p, n);
    c->p += n;
    return 0;
}

static int rd_str(cursor_t *c, gguf_str_t *s, const char *what) {
    uint64_t len = 0;
    if (rd(c, &len, 8, what) != 0) return -1;
    if (len > remaining(c))
        return fail(c, "%s: string length %llu exceeds the %zu bytes left in the file",
                    what, (unsigned long long)len, remaining(c));
    s->ptr = (const char *)c->p;
    s->len = len;
    c->p += len;
    return 0;
}

static const size_t scalar_size[GGUF_VTYPE_COUNT] = {
    [GGUF_U8] = 1, [GGUF_I8] = 1, [GGUF_U16] = 2, [GGUF_I16] = 2,
    [GGUF_U32] = 4, [GGUF_I32] = 4, [GGUF_F32] = 4, [GGUF_BOOL] = 1,
    [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

const char *gguf_vtype_name(uint32_t t) {
    static const char *names[GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string",
        "array", "u64", "i64", "f64"};
    return t < GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

/* Decode one packed little-endian scalar into the value union. */
static void load_scalar(uint32_t type, const uint8_t *p, gguf_value_t *v) {
    v->type = type;
    switch (type) {
    case GGUF_U8: case GGUF_BOOL: v->v.u = p[0]; break;
    case GGUF_I8: v->v.i = (int8_t)p[0]; break;
    case GGUF_U16: { uint16_t x; memcpy(&x, p, 2); v->v.u = x; break; }
    case GGUF_I16: { int16_t x; memcpy(&x, p, 2); v->v.i = x; break; }
    case GGUF_U32: { uint32_t x; memcpy(&x, p, 4); v->v.u = x; break; }
    case GGUF_I32: { int32_t x; memcpy(&x, p, 4); v->v.i = x; break; }
    case GGUF_F32: { float x; memcpy(&x, p, 4); v->v.f = x; break; }
    case GGUF_U64: memcpy(&v->v.u, p, 8); break;
    case GGUF_I64: memcpy(&v->v.i, p, 8); break;
    case GGUF_F64: memcpy(&v->v.f, p, 8); break;
    }
}

static void free_value(gguf_value_t *v) {
    if (v->type != GGUF_ARRAY || v->v.arr.items == NULL) return;
    if (v->v.arr.type == GGUF_ARRAY)
        for (uint64_t i = 0; i < v->v.arr.n; i++) free_value(&v->v.arr.items[i]);
    free(v->v.arr.items);
    v->v.arr.items = NULL;
}

static int rd_value(cursor_t *c, uint32_t type, gguf_value_t *v, int depth,
                    const char *key);

static int rd_array(cursor_t *c, gguf_value_t *v, int depth, const char *key) {
    uint32_t et = 0;
    uint64_t n = 0;
    if (rd(c, &et, 4, "array element type") != 0 || rd(c, &n, 8, "array length") != 0)
        return -1;
    if (et >= GGUF_VTYPE_COUNT)
        return fail(c, "key '%s': unknown array element type %u", key, et);
    if (depth >= GGUF_MAX_NESTING)
        return fail(c, "key '%s': arrays nested deeper than %d", key, GGUF_MAX_NESTING);
    /* the smallest possible encoding of one element bounds n by the file */
    size_t min_elem = et == GGUF_STRING ? 8 : et == GGUF_ARRAY ? 12 : scalar_size[et];
    if (n > remaining(c) / min_elem)
        return fail(c, "key '%s': array of %llu %s elements cannot fit in the %zu bytes left",
                    key, (unsigned long long)n, gguf_vtype_name(et), remaining(c));
    v->type = GGUF_ARRAY;
    v->v.arr.type = et;
    v->v.arr.n = n;
    v->v.arr.raw = c->p;
    v->v.arr.items = NULL;
    if (et != GGUF_STRING && et != GGUF_ARRAY) {
        if (et == GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[i] > 1)
                    return fail(c, "key '%s': bool array element %llu is %u, not 0 or 1", key,
                                (unsigned long long)i, c->p[i]);
        c->p += n * min_elem;
        return 0;
    }
    if (n == 0) return 0;
    v->v.arr.items = calloc(n, sizeof(gguf_value_t));
    if (!v->v.arr.items) return fail(c, "key '%s': out of memory for %llu elements", key,
                                     (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        if (rd_value(c, et, &v->v.arr.items[i], depth + 1, key) != 0) {
            v->v.arr.n = i; /* free only what was parsed */
            free_value(v);
            return -1;
        }
    }
    return 0;
}

static int rd_value(cursor_t *c, uint32_t type, gguf_value_t *v, int depth,
                    const char *key) {
    if (type >= GGUF_VTYPE_COUNT)
        return fail(c, "key '%s': unknown value type %u", key, type);
    if (type == GGUF_STRING) {
        v->type = GGUF_STRING;
        return rd_str(c, &v->v.s, key);
    }
    if (type == GGUF_ARRAY) return rd_array(c, v, depth, key);
    if (remaining(c) < scalar_size[type])
        return fail(c, "truncated file in the value of key '%s'", key);
    load_scalar(type, c->p, v);
    c->p += scalar_size[type];
    if (type == GGUF_BOOL && v->v.u > 1)
        return fail(c, "key '%s': bool value %llu is not 0 or 1", key,
                    (unsigned long long)v->v.u);
    return 0;
}

int gguf_str_eq(gguf_str_t s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

/* Printable copy of a file string for error messages: control bytes and
 * non-ASCII become '?' so a hostile string cannot forge extra lines. */
const char *gguf_str_show(gguf_str_t s, char *buf, size_t n) {
    size_t k = s.len < n - 1 ? (size_t)s.len : n - 1;
    for (size_t i = 0; i < k; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        buf[i] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    buf[k] = 0;
    return buf;
}

static int cmp_str(gguf_str_t a, gguf_str_t b) {
    size_t n = a.len < b.len ? a.len : b.len;
    int r = memcmp(a.ptr, b.ptr, n);
    if (r) return r;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_kv_ptr(const void *a, const void *b) {
    return cmp_str((*(const gguf_kv_t *const *)a)->key, (*(const gguf_kv_t *const *)b)->key);
}

/* Sorting keeps this O(n log n): a hostile file may hold millions of keys. */
static int check_unique_keys(gguf_t *g, cursor_t *c) {
    if (g->n_kv < 2) return 0;
    const gguf_kv_t **idx = malloc(g->n_kv * sizeof *idx);
    if (!idx) return fail(c, "out of memory checking metadata keys");
    for (uint64_t i = 0; i < g->n_kv; i++) idx[i] = &g->kv[i];
    qsort(idx, g->n_kv, sizeof *idx, cmp_kv_ptr);
    int rc = 0;
    for (uint64_t i = 1; i < g->n_kv && rc == 0; i++)
        if (cmp_str(idx[i - 1]->key, idx[i]->key) == 0) {
            char name[80];
            rc = fail(c, "duplicate metadata key '%s'", gguf_str_show(idx[i]->key, name, sizeof name));
        }
    free(idx);
    return rc;
}

static int rd_kvs(gguf_t *g, cursor_t *c) {
    if (g->n_kv > remaining(c) / 13) /* key len + type + 1-byte value */
        return fail(c, "metadata count %llu cannot fit in the file",
                    (unsigned long long)g->n_kv);
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof(gguf_kv_t));
    if (!g->kv) return fail(c, "out of memory for %llu metadata entries",
                            (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv_t *kv = &g->kv[i];
        uint32_t type = 0;
        char name[80];
        if (rd_str(c, &kv->key, "metadata key") != 0) return -1;
        gguf_str_show(kv->key, name, sizeof name);
        if (kv->key.len == 0) return fail(c, "metadata entry %llu has an empty key",
                                          (unsigned long long)i);
        if (rd(c, &type, 4, "metadata value type") != 0) return -1;
        if (rd_value(c, type, &kv->val, 0, name) != 0) return -1;
    }
    return check_unique_keys(g, c);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return cmp_str(((const gguf_tensor_t *)a)->name, ((const gguf_tensor_t *)b)->name);
}

static int rd_tensor_info(cursor_t *c, gguf_tensor_t *t) {
    char name[80];
    if (rd_str(c, &t->name, "tensor name") != 0) return -1;
    gguf_str_show(t->name, name, sizeof name);
    if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME)
        return fail(c, "tensor name of length %llu (must be 1..%d)",
                    (unsigned long long)t->name.len, GGUF_MAX_NAME);
    if (rd(c, &t->n_dims, 4, "tensor dimension count") != 0) return -1;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(c, "tensor '%s' has %u dimensions (must be 1..%d)", name,
                    t->n_dims, GGUF_MAX_DIMS);
    t->n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (rd(c, &t->ne[d], 8, "tensor dimension") != 0) return -1;
        if (t->ne[d] == 0 || t->ne[d] > (UINT64_C(1) << 40) ||
            t->n_elems > (UINT64_C(1) << 50) / t->ne[d])
            return fail(c, "tensor '%s' has an invalid or absurd dimension %llu", name,
                        (unsigned long long)t->ne[d]);
        t->n_elems *= t->ne[d];
    }
    if (rd(c, &t->type, 4, "tensor type") != 0 || rd(c, &t->offset, 8, "tensor offset") != 0)
        return -1;
    const k_type_info_t *ti = k_type_info(t->type);
    if (!ti) return fail(c, "tensor '%s' has unknown type id %u", name, t->type);
    if (t->ne[0] % ti->block_elems != 0)
        return fail(c, "tensor '%s': row length %llu is not a multiple of the %s block size %u",
                    name, (unsigned long long)t->ne[0], ti->name, ti->block_elems);
    t->n_bytes = t->n_elems / ti->block_elems * ti->block_bytes;
    return 0;
}

static int rd_tensors(gguf_t *g, cursor_t *c) {
    if (g->n_tensors > remaining(c) / 33) /* smallest tensor info */
        return fail(c, "tensor count %llu cannot fit in the file",
                    (unsigned long long)g->n_tensors);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof(gguf_tensor_t));
    if (!g->tensors) return fail(c, "out of memory for the tensor table");
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (rd_tensor_info(c, &g->tensors[i]) != 0) return -1;

    uint64_t hdr = (uint64_t)(c->p - g->map);
    g->data_offset = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && g->data_offset > g->size)
        return fail(c, "data section starts at %llu, past the end of the %zu-byte file",
                    (unsigned long long)g->data_offset, g->size);
    uint64_t data_size = g->size > g->data_offset ? g->size - g->data_offset : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor_t *t = &g->tensors[i];
        char name[80];
        gguf_str_show(t->name, name, sizeof name);
        if (t->offset % g->alignment != 0)
            return fail(c, "tensor '%s' offset %llu is not aligned to %u", name,
                        (unsigned long long)t->offset, g->alignment);
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return fail(c, "tensor '%s' (%llu bytes at offset %llu) extends past the end of the file",
                        name, (unsigned long long)t->n_bytes, (unsigned long long)t->offset);
        t->data = g->map + g->data_offset + t->offset;
    }
    /* sorted by name: duplicate detection now, binary search later */
    qsort(g->tensors, g->n_tensors, sizeof(gguf_tensor_t), cmp_tensor_name);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (cmp_tensor_name(&g->tensors[i - 1], &g->tensors[i]) == 0) {
            char name[80];
            return fail(c, "duplicate tensor name '%s'", gguf_str_show(g->tensors[i].name, name, sizeof name));
        }
    return 0;
}

static int parse(gguf_t *g, cursor_t *c) {
    char magic[4];
    if (rd(c, magic, 4, "magic") != 0) return -1;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) return fail(c, "not a GGUF file (bad magic)");
    if (rd(c, &g->version, 4, "version") != 0) return -1;
    if (g->version == 1) return fail(c, "GGUF version 1 is not supported (v2 and v3 are)");
    if (g->version != 2 && g->version != 3)
        return fail(c, "unsupported GGUF version %u (a big-endian file?)", g->version);
    if (rd(c, &g->n_tensors, 8, "tensor count") != 0 || rd(c, &g->n_kv, 8, "metadata count") != 0)
        return -1;
    g->kv_begin = (uint64_t)(c->p - g->map);
    if (rd_kvs(g, c) != 0) return -1;
    g->kv_end = (uint64_t)(c->p - g->map);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_value_t *al = gguf_get(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_U32)
            return fail(c, "general.alignment has type %s, expected u32", gguf_vtype_name(al->type));
        /* the spec wants a multiple of 8; sqserve reads F32 tensors in
         * place, so anything smaller would mean misaligned loads */
        if (al->v.u < 8 || (al->v.u & (al->v.u - 1)) != 0 || al->v.u > 65536)
            return fail(c, "general.alignment %llu is not a power of two in [8, 65536]",
                        (unsigned long long)al->v.u);
        g->alignment = (uint32_t)al->v.u;
    }
    return rd_tensors(g, c);
}

int gguf_open(gguf_t *g, const char *path, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size < 24) {
        snprintf(err, errlen, "'%s' is too small (%lld bytes) to be a GGUF file", path,
                 (long long)st.st_size);
        close(fd);
        return -1;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    g->fd = fd;
    g->map = m;
    g->size = (size_t)st.st_size;
    g->owns_map = 1;
    char msg[320];
    cursor_t c = {g->map, g->map + g->size, msg, sizeof msg};
    if (parse(g, &c) != 0) {
        snprintf(err, errlen, "%s: %s", path, msg);
        gguf_close(g);
        return -1;
    }
    return 0;
}

void gguf_close(gguf_t *g) {
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free_value(&g->kv[i].val);
    free(g->kv);
    free(g->tensors);
    if (g->map && g->owns_map) { /* map and fd are set together */
        munmap((void *)g->map, g->size);
        close(g->fd);
    }
    memset(g, 0, sizeof *g);
    g->fd = -1;
}

int gguf_open_mem(gguf_t *g, const void *base, size_t size, const char *what, char *err,
                  size_t errlen) {
    memset(g, 0, sizeof *g);
    g->fd = -1;
    g->map = base;
    g->size = size;
    char msg[320];
    cursor_t c = {g->map, g->map + g->size, msg, sizeof msg};
    if (size < 24 || parse(g, &c) != 0) {
        snprintf(err, errlen, "%s: %s", what, size < 24 ? "embedded GGUF too small" : msg);
        gguf_close(g);
        return -1;
    }
    return 0;
}

const gguf_value_t *gguf_get(const gguf_t *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (gguf_str_eq(g->kv[i].key, key)) return &g->kv[i].val;
    return NULL;
}

const gguf_tensor_t *gguf_tensor(const gguf_t *g, const char *name) {
    gguf_tensor_t key = {.name = {name, strlen(name)}};
    return bsearch(&key, g->tensors, g->n_tensors, sizeof(gguf_tensor_t), cmp_tensor_name);
}

int gguf_get_u64(const gguf_t *g, const char *key, uint64_t *out) {
    const gguf_value_t *v = gguf_get(g, key);
    if (!v) return -1;
    switch (v->type) {
    case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64: *out = v->v.u; return 0;
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64:
        if (v->v.i < 0) return -1;
        *out = (uint64_t)v->v.i;
        return 0;
    default: return -1;
    }
}

int gguf_get_f64(const gguf_t *g, const char *key, double *out) {
    const gguf_value_t *v = gguf_get(g, key);
    if (!v) return -1;
    if (v->type == GGUF_F32 || v->type == GGUF_F64) { *out = v->v.f; return 0; }
    uint64_t u;
    if (gguf_get_u64(g, key, &u) == 0) { *out = (double)u; return 0; }
    return -1;
}

int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out) {
    const gguf_value_t *v = gguf_get(g, key);
    if (!v || v->type != GGUF_STRING) return -1;
    *out = v->v.s;
    return 0;
}

int64_t gguf_arr_i64(const gguf_value_t *v, uint64_t i) {
    gguf_value_t e;
    load_scalar(v->v.arr.type, v->v.arr.raw + i * scalar_size[v->v.arr.type], &e);
    switch (e.type) {
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: return e.v.i;
    case GGUF_F32: case GGUF_F64: /* out of range (or NaN) saturates to 0 */
        return e.v.f >= -9.2e18 && e.v.f <= 9.2e18 ? (int64_t)e.v.f : 0;
    default: return (int64_t)e.v.u;
    }
}

double gguf_arr_f64(const gguf_value_t *v, uint64_t i) {
    gguf_value_t e;
    load_scalar(v->v.arr.type, v->v.arr.raw + i * scalar_size[v->v.arr.type], &e);
    switch (e.type) {
    case GGUF_F32: case GGUF_F64: return e.v.f;
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: return (double)e.v.i;
    default: return (double)e.v.u;
    }
}
