/* sqm.c - .sqm writer and loader (see sqm.h for the layout). */
#include "sqm.h"

#include "../../kernels/k_quant.h"
#include "../../kernels/k_sq.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define SQM_VERSION 1
#define ALIGN 64

typedef struct {
    char magic[4];
    uint32_t version;
    uint64_t file_size, checksum;
    uint64_t json_off, json_len, gguf_off, gguf_len, data_off;
} sqm_header_t; /* 64 bytes */

_Static_assert(sizeof(sqm_header_t) == 64, "the header is 64 bytes");

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

/* ---- growable byte buffer ------------------------------------------------------------- */

typedef struct { uint8_t *p; size_t len, cap; int oom; } bbuf_t;

static void bb_put(bbuf_t *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2 + 4096;
        uint8_t *np = realloc(b->p, cap);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void bb_u32(bbuf_t *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bbuf_t *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_pad(bbuf_t *b, size_t a) {
    static const uint8_t z[64] = {0};
    while (b->len % a) bb_put(b, z, a - b->len % a > 64 ? 64 : a - b->len % a);
}

/* ---- writing ------------------------------------------------------------------------- */

static int is_quantized_name(const quant_state_t *qs, gguf_str_t name) {
    for (int i = 0; i < qs->n_qt; i++)
        if (gguf_str_eq(name, qs->qt[i].name)) return 1;
    return 0;
}

/* A GGUF with the source's metadata verbatim and every tensor that was not
 * quantized. */
static int build_gguf(const gguf_t *g, const quant_state_t *qs, bbuf_t *out) {
    uint64_t n_keep = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) n_keep += !is_quantized_name(qs, g->tensors[i].name);
    bb_put(out, "GGUF", 4);
    bb_u32(out, 3);
    bb_u64(out, n_keep);
    bb_u64(out, g->n_kv);
    bb_put(out, g->map + g->kv_begin, (size_t)(g->kv_end - g->kv_begin));
    uint64_t off = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        if (is_quantized_name(qs, t->name)) continue;
        bb_u64(out, t->name.len);
        bb_put(out, t->name.ptr, t->name.len);
        bb_u32(out, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) bb_u64(out, t->ne[d]);
        bb_u32(out, t->type);
        bb_u64(out, off);
        off = (off + t->n_bytes + g->alignment - 1) / g->alignment * g->alignment;
    }
    bb_pad(out, g->alignment);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        if (is_quantized_name(qs, t->name)) continue;
        bb_put(out, t->data, t->n_bytes);
        bb_pad(out, g->alignment);
    }
    return out->oom ? -1 : 0;
}

/* Appends an array to the data section and returns its [offset, length]. */
static json_t *blob(bbuf_t *data, const void *p, size_t n) {
    bb_pad(data, ALIGN);
    json_t *j = json_pack("[I, I]", (json_int_t)data->len, (json_int_t)n);
    bb_put(data, p, n);
    return j;
}

static json_t *tensor_entry(const qtensor_t *q, bbuf_t *data) {
    if (q->kind == WQ_SQ) {
        const sq_tensor_t *t = &q->sq;
        size_t lo_bytes = (size_t)(t->n * t->k) * (t->cfg.h_low <= 2 ? 2 : 4) / 8;
        size_t banks = (size_t)(t->n * (t->k / t->cfg.b)) * (size_t)t->h;
        size_t groups = (size_t)(t->n * (t->k / t->G)) * sizeof(float);
        return json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:f, s:o, s:o, s:o, s:o, s:o}",
                         "name", q->name, "kind", "sq", "n", (json_int_t)q->n, "k", (json_int_t)q->k,
                         "h_high", t->cfg.h_high, "h_low", t->cfg.h_low, "b", t->cfg.b, "s", t->cfg.s,
                         "lo", blob(data, t->lo, lo_bytes), "hi", blob(data, t->hi, banks),
                         "idx", blob(data, t->idx, banks), "s_lo", blob(data, t->s_lo, groups),
                         "s_hi", blob(data, t->s_hi, groups));
    }
    return json_pack("{s:s, s:s, s:I, s:I, s:i, s:I, s:o, s:o}", "name", q->name, "kind", "int",
                     "n", (json_int_t)q->n, "k", (json_int_t)q->k, "bits", q->bits, "group",
                     (json_int_t)q->group, "codes", blob(data, q->codes, (size_t)(q->n * q->k)),
                     "scales", blob(data, q->scales, (size_t)(q->n * (q->k / q->group)) * sizeof(float)));
}

static int write_all(int fd, const void *p, size_t n, XXH3_state_t *h) {
    if (h) XXH3_64bits_update(h, p, n);
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int sqm_write(const char *path, const model_t *m, const quant_state_t *qs, const sqm_meta_t *meta,
              char *err, size_t errlen) {
    bbuf_t gg = {0}, data = {0};
    json_t *tensors = json_array(), *masks = json_array();
    char *manifest = NULL, tmp[4096];
    int fd = -1, rc = -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    if (build_gguf(&m->gguf, qs, &gg) != 0) goto oom;
    for (int i = 0; i < qs->n_qt; i++) json_array_append_new(tensors, tensor_entry(&qs->qt[i], &data));
    for (int s = 0; s < N_SITES; s++)
        if (qs->hi_mask[s])
            json_array_append_new(masks, json_pack("{s:i, s:I, s:o}", "site", s, "dim", (json_int_t)qs->dim[s],
                                                   "mask", blob(&data, qs->hi_mask[s],
                                                                (size_t)(qs->n_layer * qs->dim[s]))));
    if (data.oom) goto oom;
    json_t *ev = meta->have_eval
                     ? json_pack("{s:f, s:f, s:f, s:f, s:I}", "ppl", meta->eval_ppl, "ppl_fp32",
                                 meta->eval_ppl_ref, "kl", meta->eval_kl, "top1", meta->eval_top1,
                                 "tokens", (json_int_t)meta->eval_tokens)
                     : json_null();
    json_t *man = json_pack("{s:s, s:i, s:s, s:{s:s, s:s, s:f}, s:{s:s, s:I}, s:o, s:o, s:o}",
                            "format", "sqm", "version", SQM_VERSION, "source", meta->source,
                            "recipe", "weights", meta->weights, "acts", meta->acts, "w_bits", qs->w_bits,
                            "calibration", "source", meta->calib, "tokens", (json_int_t)meta->calib_tokens,
                            "tensors", tensors, "act_masks", masks, "eval", ev);
    tensors = masks = NULL; /* owned by man */
    manifest = man ? json_dumps(man, JSON_COMPACT) : NULL;
    json_decref(man);
    if (!manifest) goto oom;

    sqm_header_t h = {{'S', 'Q', 'M', '1'}, SQM_VERSION, 0, 0, 0, 0, 0, 0, 0};
    h.json_off = ALIGN;
    h.json_len = strlen(manifest);
    h.gguf_off = align_up(h.json_off + h.json_len);
    h.gguf_len = gg.len;
    h.data_off = align_up(h.gguf_off + h.gguf_len);
    h.file_size = h.data_off + data.len;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create '%s': %s", tmp, strerror(errno));
        goto out;
    }
    static const uint8_t zeros[ALIGN] = {0};
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) goto oom;
    XXH3_64bits_reset(xs);
    int bad = write_all(fd, &h, sizeof h, NULL) ||
              write_all(fd, manifest, h.json_len, xs) ||
              write_all(fd, zeros, h.gguf_off - h.json_off - h.json_len, xs) ||
              write_all(fd, gg.p, gg.len, xs) ||
              write_all(fd, zeros, h.data_off - h.gguf_off - h.gguf_len, xs) ||
              write_all(fd, data.p, data.len, xs);
    h.checksum = XXH3_64bits_digest(xs);
    XXH3_freeState(xs);
    /* the checksum covers what follows the header; write the header last */
    if (bad || pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory writing '%s'", path);
out:
    if (fd >= 0) close(fd);
    if (rc != 0) unlink(tmp);
    json_decref(tensors);
    json_decref(masks);
    free(manifest);
    free(gg.p);
    free(data.p);
    return rc;
}

/* ---- loading --------------------------------------------------------------------------- */

static void act_free(void *p) {
    quant_free(p);
    free(p);
}

quant_state_t *sqm_act_state(const model_t *m) {
    quant_state_t *qs = m->act_state;
    return qs && qs->a.kind != AQ_NONE ? qs : NULL;
}

/* [offset, length] inside the data section, checked against want bytes. */
static const uint8_t *array_at(const uint8_t *data, uint64_t data_len, json_t *ol, size_t want) {
    if (!json_is_array(ol) || json_array_size(ol) != 2) return NULL;
    json_int_t off = json_integer_value(json_array_get(ol, 0)), len = json_integer_value(json_array_get(ol, 1));
    if (off < 0 || len < 0 || (uint64_t)len != want || (uint64_t)off > data_len ||
        (uint64_t)len > data_len - (uint64_t)off || off % ALIGN)
        return NULL;
    return data + off;
}

/* Releases the whole pages inside [p, p + n) of the read-only file
 * mapping; they are read from the file again if anything touches them. */
static void drop_pages(const void *p, size_t n) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), b = ((uintptr_t)p + pg - 1) / pg * pg,
              e = ((uintptr_t)p + n) / pg * pg;
    if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
}

/* Installs a kernel view as the layer matrix in place of the float rows
 * load_tensor allocated (the last owned buffer). */
static int use_view(model_t *m, int layer, int part, k_sq_t *v, double bits, int *seen, char *msg,
                    size_t msglen) {
    free(m->owned[m->n_owned - 1]);
    m->owned[m->n_owned - 1] = (float *)v;
    if (!v) {
        m->n_owned--;
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    *quant_layer_mat(m, layer, part, NULL, 0) = (k_mat_t){K_SQ, v, v->n, v->k, (size_t)((double)v->k * bits / 8)};
    seen[layer * 7 + part] = 1;
    return 0;
}

/* Which activations a layer matrix's integer kernel takes: 1 for int8 per
 * token, 2 for static SQ (then *mask is its site's mask), 0 for none (the
 * FP32 expansion with the hook's fake-quant). */
static int kernel_acts_of(const quant_state_t *qs, int layer, int part, long k, const uint8_t **mask) {
    static const int site_of[7] = {SITE_QKV, SITE_QKV, SITE_QKV, SITE_O, SITE_UPGATE, SITE_UPGATE, SITE_DOWN};
    if (qs->a.kind == AQ_INT && qs->a.bits == 8) return 1;
    if (qs->a.kind != AQ_SQ_STATIC || qs->a.sq.h_high > 8 || qs->a.sq.h_low > 8) return 0;
    *mask = qs->hi_mask[site_of[part]] + (size_t)layer * (size_t)k;
    return 2;
}

static int load_tensor(model_t *m, json_t *e, const uint8_t *data, uint64_t data_len, int *seen,
                       const quant_state_t *qs, char *msg, size_t msglen) {
    const char *name = json_string_value(json_object_get(e, "name"));
    const char *kind = json_string_value(json_object_get(e, "kind"));
    long n = (long)json_integer_value(json_object_get(e, "n")), k = (long)json_integer_value(json_object_get(e, "k"));
    int layer = -1, part = -1;
    char nm[48];
    for (int l = 0; name && l < m->hp.n_layer && layer < 0; l++)
        for (int i = 0; i < 7; i++) {
            quant_layer_mat(m, l, i, nm, sizeof nm);
            if (!strcmp(nm, name)) { layer = l; part = i; break; }
        }
    if (layer < 0 || !kind) {
        snprintf(msg, msglen, "tensor table entry '%s' is not a layer matrix", name ? name : "?");
        return -1;
    }
    const hparams_t *hp = &m->hp;
    long kvd = (long)hp->head_dim * hp->n_head_kv;
    long want_n[7] = {hp->dim, kvd, kvd, hp->dim, hp->ffn_dim, hp->ffn_dim, hp->dim};
    long want_k[7] = {hp->dim, hp->dim, hp->dim, hp->dim, hp->dim, hp->dim, hp->ffn_dim};
    if (n != want_n[part] || k != want_k[part] || seen[layer * 7 + part]) {
        snprintf(msg, msglen, "tensor '%s' has shape [%ld, %ld] (expected [%ld, %ld]) or repeats", name, k, n,
                 want_k[part], want_n[part]);
        return -1;
    }
    float *W = malloc((size_t)(n * k) * sizeof(float));
    float **o = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *o);
    if (o) m->owned = o;
    if (!W || !o) {
        free(W);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    m->owned[m->n_owned++] = W;
    const uint8_t *amask = NULL;
    int sq_kernel = kernel_acts_of(qs, layer, part, k, &amask);
    if (!strcmp(kind, "sq")) {
        sq_cfg_t cfg = {(int)json_integer_value(json_object_get(e, "h_high")),
                        (int)json_integer_value(json_object_get(e, "h_low")),
                        (int)json_integer_value(json_object_get(e, "b")),
                        json_real_value(json_object_get(e, "s"))};
        const char *why = sq_cfg_check(&cfg, k);
        if (why) {
            snprintf(msg, msglen, "tensor '%s': %s", name, why);
            return -1;
        }
        sq_tensor_t t = {.cfg = cfg, .n = n, .k = k, .h = sq_highs_per_bank(&cfg), .G = cfg.b > 64 ? cfg.b : 64};
        size_t lo = (size_t)(n * k) * (cfg.h_low <= 2 ? 2 : 4) / 8, banks = (size_t)(n * (k / cfg.b)) * (size_t)t.h;
        size_t groups = (size_t)(n * (k / t.G)) * sizeof(float);
        t.lo = (uint8_t *)array_at(data, data_len, json_object_get(e, "lo"), lo);
        t.hi = (int8_t *)array_at(data, data_len, json_object_get(e, "hi"), banks);
        t.idx = (uint8_t *)array_at(data, data_len, json_object_get(e, "idx"), banks);
        t.s_lo = (float *)array_at(data, data_len, json_object_get(e, "s_lo"), groups);
        t.s_hi = (float *)array_at(data, data_len, json_object_get(e, "s_hi"), groups);
        if (!t.lo || !t.hi || !t.idx || !t.s_lo || !t.s_hi) {
            snprintf(msg, msglen, "tensor '%s': an array is missing, misplaced or of the wrong size", name);
            return -1;
        }
        if ((why = sq_validate(&t))) { /* the format's invariants, on load */
            snprintf(msg, msglen, "tensor '%s' breaks the SQ-format: %s", name, why);
            return -1;
        }
        if (sq_kernel) { /* integer activations: the kernel reads the mapped codes in place */
            k_sq_t *v = k_sq_new(&(k_sq_t){cfg.h_low, cfg.b, t.h, t.G, n, k, t.lo, t.hi, t.idx, t.s_lo, t.s_hi,
                                           NULL, 0, 0, NULL, 0, 0, NULL, 0});
            if (v && v->pack) { /* the kernel reads its own panels: let the mapped copy go */
                drop_pages(t.lo, lo);
                drop_pages(t.hi, banks);
                drop_pages(t.idx, banks);
                drop_pages(t.s_lo, groups);
                drop_pages(t.s_hi, groups);
            }
            if (v && amask) k_sq_static_acts(v, amask, qs->a.sq.h_high, qs->a.sq.h_low);
            return use_view(m, layer, part, v, sq_bits_per_element(&cfg), seen, msg, msglen);
        }
        for (long r = 0; r < n; r++) sq_dequant_row(&t, r, W + r * k);
    } else if (!strcmp(kind, "int")) {
        int bits = (int)json_integer_value(json_object_get(e, "bits"));
        long g = (long)json_integer_value(json_object_get(e, "group"));
        if (bits < 2 || bits > 8 || g < 1 || k % g) {
            snprintf(msg, msglen, "tensor '%s': bad bits %d or group %ld", name, bits, g);
            return -1;
        }
        const int8_t *codes = (const int8_t *)array_at(data, data_len, json_object_get(e, "codes"), (size_t)(n * k));
        const float *sc = (const float *)array_at(data, data_len, json_object_get(e, "scales"),
                                                  (size_t)(n * (k / g)) * sizeof(float));
        if (!codes || !sc) {
            snprintf(msg, msglen, "tensor '%s': an array is missing, misplaced or of the wrong size", name);
            return -1;
        }
        int q = (1 << (bits - 1)) - 1;
        for (long i = 0; i < n * k; i++)
            if (codes[i] > q || codes[i] < -q) {
                snprintf(msg, msglen, "tensor '%s': a code is out of range", name);
                return -1;
            }
        if (sq_kernel) { /* integer activations: the integer kernel (no highs) */
            k_sq_t *v = k_sq_new_int(codes, sc, n, k, bits, g);
            if (v && v->pack) {
                drop_pages(codes, (size_t)(n * k));
                drop_pages(sc, (size_t)(n * (k / g)) * sizeof(float));
            }
            if (v && amask) k_sq_static_acts(v, amask, qs->a.sq.h_high, qs->a.sq.h_low);
            return use_view(m, layer, part, v, bits + 32.0 / (double)g, seen, msg, msglen);
        }
        for (long i = 0; i < n * k; i++) W[i] = codes[i] * sc[(i / k) * (k / g) + (i % k) / g];
    } else {
        snprintf(msg, msglen, "tensor '%s' has unknown kind '%s'", name, kind);
        return -1;
    }
    *quant_layer_mat(m, layer, part, NULL, 0) = (k_mat_t){K_F32, W, n, k, (size_t)k * sizeof(float)};
    seen[layer * 7 + part] = 1;
    return 0;
}

int sqm_load_model(model_t *m, const char *path, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    char msg[400] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cannot open '%s'", path);
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *map = size >= sizeof(sqm_header_t) ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: too small or unreadable for a .sqm file", path);
        return -1;
    }
    const uint8_t *base = map;
    sqm_header_t h;
    memcpy(&h, base, sizeof h);
    json_t *man = NULL;
    int *seen = NULL;
    if (memcmp(h.magic, "SQM1", 4) || h.version != SQM_VERSION) {
        snprintf(msg, sizeof msg, "unsupported .sqm version %u", h.version);
        goto fail;
    }
    if (h.file_size != size || h.json_off > size || h.json_len > size - h.json_off ||
        h.gguf_off > size || h.gguf_len > size - h.gguf_off || h.data_off > size) {
        snprintf(msg, sizeof msg, "the file is truncated or its header is corrupted (%zu bytes, header says %llu)",
                 size, (unsigned long long)h.file_size);
        goto fail;
    }
    if (XXH3_64bits(base + sizeof h, size - sizeof h) != h.checksum) {
        snprintf(msg, sizeof msg, "checksum mismatch: the file is corrupted");
        goto fail;
    }
    json_error_t je;
    man = json_loadb((const char *)base + h.json_off, h.json_len, 0, &je);
    json_t *tensors = json_object_get(man, "tensors"), *recipe = json_object_get(man, "recipe");
    if (!man || !json_is_array(tensors) || !json_is_object(recipe)) {
        snprintf(msg, sizeof msg, "the manifest is not valid");
        goto fail;
    }
    m->file_map = map;
    m->file_size = size;
    m->external_layers = json_array_size(tensors) > 0;
    if (gguf_open_mem(&m->gguf, base + h.gguf_off, h.gguf_len, "embedded GGUF", msg, sizeof msg) != 0) goto fail;
    if (model_init(m, path, err, errlen) != 0) { /* frees m, map included */
        json_decref(man);
        return -1;
    }
    const uint8_t *data = base + h.data_off;
    uint64_t data_len = size - h.data_off;
    arecipe_t a;
    const char *acts = json_string_value(json_object_get(recipe, "acts"));
    if (!acts || recipe_parse_a(acts, &a, msg, sizeof msg) != 0 || quant_check_acts(&a, &m->hp, msg, sizeof msg))
        goto fail_model;
    size_t i;
    json_t *e;
    /* the activation recipe and its static masks (before the tensors: the
     * static-activation kernels take their site's mask) */
    quant_state_t *qs = calloc(1, sizeof *qs);
    if (!qs) goto fail_model;
    m->act_state = qs;
    m->act_free = act_free;
    qs->a = a;
    qs->n_layer = m->hp.n_layer;
    qs->w_bits = json_real_value(json_object_get(recipe, "w_bits"));
    long dims[N_SITES] = {m->hp.dim, m->hp.dim, m->hp.dim, m->hp.ffn_dim};
    for (int s = 0; s < N_SITES; s++) qs->dim[s] = dims[s];
    json_array_foreach(json_object_get(man, "act_masks"), i, e) {
        int s = (int)json_integer_value(json_object_get(e, "site"));
        if (s < 0 || s >= N_SITES || qs->hi_mask[s]) goto bad_mask;
        size_t n = (size_t)(m->hp.n_layer * dims[s]);
        const uint8_t *src = array_at(data, data_len, json_object_get(e, "mask"), n);
        if (!src || !(qs->hi_mask[s] = malloc(n))) goto bad_mask;
        memcpy(qs->hi_mask[s], src, n);
    }
    if (a.kind == AQ_SQ_STATIC)
        for (int s = 0; s < N_SITES; s++)
            if (!qs->hi_mask[s]) goto bad_mask;
    seen = calloc((size_t)m->hp.n_layer * 7, sizeof *seen);
    if (!seen) goto fail_model;
    json_array_foreach(tensors, i, e)
        if (load_tensor(m, e, data, data_len, seen, qs, msg, sizeof msg)) goto fail_model;
    for (int j = 0; m->external_layers && j < m->hp.n_layer * 7; j++)
        if (!seen[j]) {
            snprintf(msg, sizeof msg, "layer %d matrix %d is missing from the tensor table", j / 7, j % 7);
            goto fail_model;
        }
    /* int8 activations on the kernels: the hook has nothing left to do. (Static
     * SQ activations keep the hook: its fake-quant is idempotent under the
     * kernel's quantization, and other devices read the hook's output.) */
    qs->kernel_acts = m->external_layers && a.kind == AQ_INT && a.bits == 8;
    for (int l = 0; qs->kernel_acts && l < m->hp.n_layer; l++)
        for (int j = 0; j < 7; j++) qs->kernel_acts &= quant_layer_mat(m, l, j, NULL, 0)->type == K_SQ;
    snprintf(m->recipe, sizeof m->recipe, "weights=%s acts=%s",
             json_string_value(json_object_get(recipe, "weights")), acts);
    json_t *ev = json_object_get(man, "eval");
    if (json_is_object(ev)) {
        const char *keys[5] = {"ppl", "ppl_fp32", "kl", "top1", "tokens"};
        m->have_eval = 1;
        for (int j = 0; j < 5; j++) m->eval[j] = json_number_value(json_object_get(ev, keys[j]));
    }
    free(seen);
    json_decref(man);
    return 0;
bad_mask:
    snprintf(msg, sizeof msg, "the static activation masks are missing or malformed");
fail_model:
    snprintf(err, errlen, "%s: %s", path, msg[0] ? msg : "out of memory");
    free(seen);
    json_decref(man);
    model_free(m);
    return -1;
fail:
    snprintf(err, errlen, "%s: %s", path, msg);
    json_decref(man);
    gguf_close(&m->gguf);
    munmap(map, size);
    memset(m, 0, sizeof *m);
    return -1;
}
