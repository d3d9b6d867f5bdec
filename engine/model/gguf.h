/* gguf.h - read-only GGUF v2/v3 reader over an mmap'd file.
 *
 * gguf_open() validates the whole header up front (every length, count,
 * offset and type against the file size) so that nothing later has to
 * distrust the file: accessors index validated memory. Tensor data is
 * never copied; gguf_tensor_t.data points into the mapping.
 */
#ifndef GGUF_H
#define GGUF_H

#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4,
    GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8,
    GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
    GGUF_VTYPE_COUNT
};

typedef struct { const char *ptr; uint64_t len; } gguf_str_t; /* not NUL-terminated */

typedef struct gguf_value {
    uint32_t type;
    union {
        uint64_t u;  /* unsigned ints and bool */
        int64_t i;   /* signed ints */
        double f;    /* floats */
        gguf_str_t s;
        struct {
            uint32_t type;            /* element type */
            uint64_t n;
            const uint8_t *raw;       /* numeric elements, packed LE */
            struct gguf_value *items; /* string / array elements, else NULL */
        } arr;
    } v;
} gguf_value_t;

typedef struct {
    gguf_str_t key;
    gguf_value_t val;
} gguf_kv_t;

#define GGUF_MAX_DIMS 4

typedef struct {
    gguf_str_t name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the innermost (row) length */
    uint32_t type;              /* enum k_type */
    uint64_t offset;            /* relative to the data section */
    uint64_t n_elems, n_bytes;
    const void *data;
} gguf_tensor_t;

typedef struct {
    int fd;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv_t *kv;
    gguf_tensor_t *tensors;
    uint32_t alignment;
    uint64_t data_offset;
    uint64_t kv_begin, kv_end;  /* byte range of the metadata section */
    int owns_map;               /* 0 for gguf_open_mem */
} gguf_t;

/* Returns 0, or -1 with a one-line message in err. */
int gguf_open(gguf_t *g, const char *path, char *err, size_t errlen);
void gguf_close(gguf_t *g);
/* Parses a GGUF image already in memory (e.g. embedded in a .sqm); the
 * memory must outlive g and is not unmapped by gguf_close. */
int gguf_open_mem(gguf_t *g, const void *base, size_t size, const char *what, char *err,
                  size_t errlen);

const gguf_value_t *gguf_get(const gguf_t *g, const char *key);
const gguf_tensor_t *gguf_tensor(const gguf_t *g, const char *name);

/* Typed lookups: return 0 on success, -1 when missing or of a type that
 * cannot represent the request (e.g. negative into unsigned). */
int gguf_get_u64(const gguf_t *g, const char *key, uint64_t *out);
int gguf_get_f64(const gguf_t *g, const char *key, double *out);
int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out);
/* Numeric array element i as int64 / double (caller checks bounds). */
int64_t gguf_arr_i64(const gguf_value_t *v, uint64_t i);
double gguf_arr_f64(const gguf_value_t *v, uint64_t i);

int gguf_str_eq(gguf_str_t s, const char *c);
/* Printable, single-line copy of s for messages (truncated to n-1). */
const char *gguf_str_show(gguf_str_t s, char *buf, size_t n);
const char *gguf_vtype_name(uint32_t t);

#endif
