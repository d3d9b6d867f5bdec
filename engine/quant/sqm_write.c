/* sqm_write.c - writes a quantized model as a .sqm (model/sqm.h has the
 * layout), atomically: "<out>.tmp.<pid>", fsync'd, then renamed.
 *
 * The embedded GGUF keeps the source's metadata and unquantized tensors
 * byte for byte, except the RMSNorm weights that SmoothQuant rewrote
 * (1/s folded in): those are stored as F32 from the model, so the file
 * computes what the smoothed model in memory computes. */
#include "sqm_write.h"
#include "../model/finite.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "../../kernels/k_quant.h"

static uint64_t align_up(uint64_t x) { return (x + SQM_ALIGN - 1) / SQM_ALIGN * SQM_ALIGN; }

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

/* 1 when quant_apply owns buf (a copy it rewrote), 0 for the source's data. */
static int qs_owns(const quant_state_t *qs, const float *buf) {
    for (int i = 0; i < qs->n_owned; i++)
        if (qs->owned[i] == buf) return 1;
    return 0;
}

/* The model's F32 vector for a tensor that quant_apply rewrote (SmoothQuant
 * folds 1/s into the RMSNorm weights in front of q/k/v and gate/up), with
 * its element count in *n; NULL when the source's bytes are still right. */
static const float *rewritten(const model_t *m, const quant_state_t *qs, gguf_str_t name, uint64_t *n) {
    static const char *part[2] = {"attn_norm", "ffn_norm"};
    for (int l = 0; l < m->hp.n_layer; l++) {
        const float *v[2] = {m->layers[l].attn_norm, m->layers[l].ffn_norm};
        for (int i = 0; i < 2; i++) {
            char want[64];
            snprintf(want, sizeof want, "blk.%d.%s.weight", l, part[i]);
            if (qs_owns(qs, v[i]) && gguf_str_eq(name, want)) {
                *n = (uint64_t)m->hp.dim;
                return v[i];
            }
        }
    }
    return NULL;
}

/* A GGUF with the source's metadata verbatim and every tensor that was not
 * quantized: the source's bytes, or the model's F32 values where
 * quant_apply rewrote the tensor (smoothed norms). */
static int build_gguf(const model_t *m, const quant_state_t *qs, bbuf_t *out) {
    const gguf_t *g = &m->gguf;
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
        uint64_t n = 0, n_bytes = t->n_bytes;
        int f32 = rewritten(m, qs, t->name, &n) != NULL;
        if (f32) n_bytes = n * sizeof(float);
        bb_u64(out, t->name.len);
        bb_put(out, t->name.ptr, t->name.len);
        bb_u32(out, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) bb_u64(out, t->ne[d]);
        bb_u32(out, f32 ? K_F32 : t->type);
        bb_u64(out, off);
        off = (off + n_bytes + g->alignment - 1) / g->alignment * g->alignment;
    }
    bb_pad(out, g->alignment);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        if (is_quantized_name(qs, t->name)) continue;
        uint64_t n = 0;
        const float *v = rewritten(m, qs, t->name, &n);
        if (v)
            bb_put(out, v, n * sizeof(float));
        else
            bb_put(out, t->data, t->n_bytes);
        bb_pad(out, g->alignment);
    }
    return out->oom ? -1 : 0;
}

/* Appends an array to the data section and returns its [offset, length]. */
static json_t *blob(bbuf_t *data, const void *p, size_t n) {
    bb_pad(data, SQM_ALIGN);
    json_t *j = json_pack("[I, I]", (json_int_t)data->len, (json_int_t)n);
    bb_put(data, p, n);
    return j;
}

/* A layer matrix's manifest entry, its arrays appended to data; NULL on
 * failure (out of memory, or an SQ scale that is not a half). */
static json_t *tensor_entry(const qtensor_t *q, bbuf_t *data) {
    if (q->kind == WQ_SQ) {
        const sq_tensor_t *t = &q->sq;
        sq_file_sizes_t z = sq_file_sizes(&t->cfg, t->n, t->k);
        uint8_t *buf = malloc(z.codes + z.hi + 2 * z.scales), *codes = buf, *hi = buf + z.codes;
        uint16_t *s_lo = (uint16_t *)(hi + z.hi), *s_hi = s_lo + z.scales / 2;
        if (!buf || sq_encode(t, codes, hi, s_lo, s_hi) != 0) {
            free(buf);
            return NULL;
        }
        json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:f, s:o, s:o, s:o, s:o}",
                              "name", q->name, "kind", "sq", "layout", "compact", "n", (json_int_t)q->n,
                              "k", (json_int_t)q->k, "h_high", t->cfg.h_high, "h_low", t->cfg.h_low, "b",
                              t->cfg.b, "s", t->cfg.s, "codes", blob(data, codes, z.codes),
                              "hi", blob(data, hi, z.hi), "s_lo", blob(data, s_lo, z.scales),
                              "s_hi", blob(data, s_hi, z.scales));
        free(buf);
        return j;
    }
    int cbits = sq_code_bits(q->bits);
    size_t n = (size_t)(q->n * q->k), packed = n * (size_t)cbits / 8;
    uint8_t *pk = n % (size_t)(8 / cbits) == 0 ? malloc(packed) : NULL;
    if (!pk) return NULL;
    sq_pack_codes(q->codes, cbits, n, pk);
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:I, s:o, s:o}", "name", q->name, "kind", "int",
                          "n", (json_int_t)q->n, "k", (json_int_t)q->k, "bits", q->bits, "code_bits", cbits,
                          "group", (json_int_t)q->group, "codes", blob(data, pk, packed),
                          "scales", blob(data, q->scales, (size_t)(q->n * (q->k / q->group)) * sizeof(float)));
    free(pk);
    return j;
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
    for (int i = 0; i < qs->n_qt; i++) { /* never write what the loader would refuse */
        const qtensor_t *q = &qs->qt[i];
        const sq_tensor_t *t = &q->sq;
        if (q->kind != WQ_SQ && finite_first_bad_f32(q->scales, (size_t)(q->n * (q->k / q->group))) >= 0) {
            snprintf(err, errlen, "tensor '%s': a quantization scale is not finite (NaN or Inf)", q->name);
            goto out;
        }
        for (long g = 0; q->kind == WQ_SQ && g < t->n * (t->k / t->G); g++) /* stored as halves */
            if (k_f16_to_f32(k_f32_to_f16(t->s_lo[g])) != t->s_lo[g] ||
                k_f16_to_f32(k_f32_to_f16(t->s_hi[g])) != t->s_hi[g]) {
                snprintf(err, errlen, "tensor '%s': scale %g is not finite or not a half-precision value", q->name,
                         (double)t->s_lo[g]);
                goto out;
            }
    }
    if (build_gguf(m, qs, &gg) != 0) goto oom;
    for (int i = 0; i < qs->n_qt; i++)
        if (json_array_append_new(tensors, tensor_entry(&qs->qt[i], &data)) != 0) goto oom;
    for (int s = 0; s < N_SITES; s++)
        if (qs->acts.hi_mask[s])
            json_array_append_new(masks, json_pack("{s:i, s:I, s:o}", "site", s, "dim", (json_int_t)qs->acts.dim[s],
                                                   "mask", blob(&data, qs->acts.hi_mask[s],
                                                                (size_t)(qs->acts.n_layer * qs->acts.dim[s]))));
    if (data.oom) goto oom;
    json_t *ev = meta->have_eval
                     ? json_pack("{s:f, s:f, s:f, s:f, s:I, s:s}", "ppl", meta->eval_ppl, "ppl_fp32",
                                 meta->eval_ppl_ref, "kl", meta->eval_kl, "top1", meta->eval_top1,
                                 "tokens", (json_int_t)meta->eval_tokens, "reference", meta->eval_ref)
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
    h.json_off = SQM_ALIGN;
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
    static const uint8_t zeros[SQM_ALIGN] = {0};
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

