/* sqm.c - the .sqm loader (sqm.h has the layout; quant/sqm_write.c writes it). */
#include "sqm.h"

#include "finite.h"

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

/* ---- loading --------------------------------------------------------------------------- */

act_quant_t *sqm_act_state(const model_t *m) {
    return m->acts && m->acts->a.kind != AQ_NONE ? m->acts : NULL;
}

/* [offset, length] inside the data section, checked against want bytes. */
static const uint8_t *array_at(const uint8_t *data, uint64_t data_len, json_t *ol, size_t want) {
    if (!json_is_array(ol) || json_array_size(ol) != 2) return NULL;
    json_int_t off = json_integer_value(json_array_get(ol, 0)), len = json_integer_value(json_array_get(ol, 1));
    if (off < 0 || len < 0 || (uint64_t)len != want || (uint64_t)off > data_len ||
        (uint64_t)len > data_len - (uint64_t)off || off % SQM_ALIGN)
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
    *model_layer_mat(m, layer, part, NULL, 0) = (k_mat_t){K_SQ, v, v->n, v->k, (size_t)((double)v->k * bits / 8), 0};
    seen[layer * 7 + part] = 1;
    return 0;
}

/* Which activations a layer matrix's integer kernel takes: 1 for int8 per
 * token, 2 for static SQ (then *mask is its site's mask), 0 for none (the
 * FP32 expansion with the hook's fake-quant). */
static int kernel_acts_of(const act_quant_t *qs, int layer, int part, long k, const uint8_t **mask) {
    static const int site_of[7] = {SITE_QKV, SITE_QKV, SITE_QKV, SITE_O, SITE_UPGATE, SITE_UPGATE, SITE_DOWN};
    if (qs->a.kind == AQ_INT && qs->a.bits == 8) return 1;
    if (qs->a.kind != AQ_SQ_STATIC || qs->a.bank_lo || qs->a.sq.h_high > 8 || qs->a.sq.h_low > 8) return 0;
    *mask = qs->hi_mask[site_of[part]] + (size_t)layer * (size_t)k;
    return 2;
}

/* Hands t's five arrays to the model (model_free frees m->owned). On
 * failure t is freed. */
static int own_sq(model_t *m, sq_tensor_t *t) {
    void *arrays[5] = {t->lo, t->hi, t->idx, t->s_lo, t->s_hi};
    float **o = realloc(m->owned, (size_t)(m->n_owned + 5) * sizeof *o);
    if (!o) {
        sq_free(t);
        return -1;
    }
    m->owned = o;
    /* below the float buffer load_tensor pushed last, which use_view replaces */
    float *W = m->owned[m->n_owned - 1];
    for (int i = 0; i < 5; i++) m->owned[m->n_owned - 1 + i] = arrays[i];
    m->n_owned += 5;
    m->owned[m->n_owned - 1] = W;
    return 0;
}

static int load_tensor(model_t *m, json_t *e, const uint8_t *data, uint64_t data_len, int *seen,
                       const act_quant_t *qs, char *msg, size_t msglen) {
    const char *name = json_string_value(json_object_get(e, "name"));
    const char *kind = json_string_value(json_object_get(e, "kind"));
    long n = (long)json_integer_value(json_object_get(e, "n")), k = (long)json_integer_value(json_object_get(e, "k"));
    int layer = -1, part = -1;
    char nm[48];
    for (int l = 0; name && l < m->hp.n_layer && layer < 0; l++)
        for (int i = 0; i < 7; i++) {
            model_layer_mat(m, l, i, nm, sizeof nm);
            if (!strcmp(nm, name)) { layer = l; part = i; break; }
        }
    if (layer < 0 || !kind) {
        snprintf(msg, msglen, "tensor table entry '%s' is not a layer matrix", name ? name : "?");
        return -1;
    }
    const hparams_t *hp = &m->hp;
    long kvd = (long)hp->head_dim * hp->n_head_kv;
    long want_n[7] = {hp->q_dim, kvd, kvd, hp->dim, hp->ffn_dim, hp->ffn_dim, hp->dim};
    long want_k[7] = {hp->dim, hp->dim, hp->dim, hp->q_dim, hp->dim, hp->dim, hp->ffn_dim};
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
        sq_file_sizes_t z = sq_file_sizes(&cfg, n, k);
        const uint8_t *codes = array_at(data, data_len, json_object_get(e, "codes"), z.codes);
        const uint8_t *hi = array_at(data, data_len, json_object_get(e, "hi"), z.hi);
        const uint16_t *s_lo = (const uint16_t *)array_at(data, data_len, json_object_get(e, "s_lo"), z.scales);
        const uint16_t *s_hi = (const uint16_t *)array_at(data, data_len, json_object_get(e, "s_hi"), z.scales);
        const char *layout = json_string_value(json_object_get(e, "layout"));
        if (!codes || !hi || !s_lo || !s_hi || !layout || strcmp(layout, "compact")) {
            snprintf(msg, msglen, "tensor '%s': an array is missing, misplaced or of the wrong size", name);
            return -1;
        }
        m->file_bytes[layer * 7 + part] = z.codes + z.hi + 2 * z.scales;
        /* into the explicit layout the kernels read */
        sq_tensor_t t;
        if (sq_alloc(&t, &cfg, n, k) != 0) {
            snprintf(msg, msglen, "out of memory");
            return -1;
        }
        if ((why = sq_decode(&t, codes, hi, s_lo, s_hi)) || (why = sq_validate(&t))) {
            snprintf(msg, msglen, "tensor '%s' breaks the SQ-format: %s", name, why);
            sq_free(&t);
            return -1;
        }
        if (sq_kernel) { /* integer activations: the kernel view reads t, which the model keeps */
            if (own_sq(m, &t) != 0) {
                snprintf(msg, msglen, "out of memory");
                return -1;
            }
            k_sq_t *v = k_sq_new(&(k_sq_t){cfg.h_low, cfg.b, t.h, t.G, n, k, t.lo, t.hi, t.idx, t.s_lo, t.s_hi,
                                           NULL, 0, 0, 0, NULL, 0, 0, NULL, 0});
            if (v && amask) k_sq_static_acts(v, amask, qs->a.sq.h_high, qs->a.sq.h_low);
            return use_view(m, layer, part, v, sq_bits_in_memory(&cfg), seen, msg, msglen);
        }
        for (long r = 0; r < n; r++) sq_dequant_row(&t, r, W + r * k);
        sq_free(&t);
    } else if (!strcmp(kind, "int")) {
        int bits = (int)json_integer_value(json_object_get(e, "bits"));
        long g = (long)json_integer_value(json_object_get(e, "group"));
        if (bits < 2 || bits > 8 || g < 1 || k % g) {
            snprintf(msg, msglen, "tensor '%s': bad bits %d or group %ld", name, bits, g);
            return -1;
        }
        int cbits = sq_code_bits(bits);
        size_t packed = (size_t)(n * k) * (size_t)cbits / 8, scale_bytes = (size_t)(n * (k / g)) * sizeof(float);
        const uint8_t *pk = array_at(data, data_len, json_object_get(e, "codes"), packed);
        const float *sc = (const float *)array_at(data, data_len, json_object_get(e, "scales"), scale_bytes);
        if (!pk || !sc || (int)json_integer_value(json_object_get(e, "code_bits")) != cbits || (n * k) % (8 / cbits)) {
            snprintf(msg, msglen, "tensor '%s': an array is missing, misplaced or of the wrong size", name);
            return -1;
        }
        long bad = finite_first_bad_f32(sc, (size_t)(n * (k / g)));
        if (bad >= 0) {
            snprintf(msg, msglen, "tensor '%s': scale %ld (row %ld) is not finite (NaN or Inf): "
                     "refusing non-finite weights", name, bad, bad / (k / g));
            return -1;
        }
        m->file_bytes[layer * 7 + part] = packed + scale_bytes;
        /* 8-bit codes are used where they lie in the mapping; narrower ones are
         * unpacked one per byte into W's buffer (the kernel view packs its own
         * copy; the FP32 path expands them in place, back to front) */
        int8_t *codes = cbits == 8 ? (int8_t *)pk : (int8_t *)W;
        if (cbits < 8) sq_unpack_codes(pk, cbits, (size_t)(n * k), codes);
        int q = (1 << (bits - 1)) - 1;
        for (long i = 0; i < n * k; i++)
            if (codes[i] > q || codes[i] < -q) {
                snprintf(msg, msglen, "tensor '%s': a code is out of range", name);
                return -1;
            }
        if (sq_kernel) { /* integer activations: the integer kernel (no highs) */
            k_sq_t *v = k_sq_new_int(codes, sc, n, k, bits, g);
            if (v && v->pack) { /* the kernel reads its own panels: let the mapped copy go */
                drop_pages(pk, packed);
                drop_pages(sc, scale_bytes);
            }
            if (v && amask) k_sq_static_acts(v, amask, qs->a.sq.h_high, qs->a.sq.h_low);
            return use_view(m, layer, part, v, cbits + 32.0 / (double)g, seen, msg, msglen);
        }
        for (long i = n * k - 1; i >= 0; i--) W[i] = codes[i] * sc[(i / k) * (k / g) + (i % k) / g];
    } else {
        snprintf(msg, msglen, "tensor '%s' has unknown kind '%s'", name, kind);
        return -1;
    }
    *model_layer_mat(m, layer, part, NULL, 0) = (k_mat_t){K_F32, W, n, k, (size_t)k * sizeof(float), 0};
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
        if (h.version < SQM_VERSION)
            snprintf(msg, sizeof msg, ".sqm format version %u is no longer read (this sqserve reads version %d: "
                     "integer codes are now stored packed); re-run sqserve convert on the original GGUF",
                     h.version, SQM_VERSION);
        else
            snprintf(msg, sizeof msg, "unsupported .sqm version %u (this sqserve reads version %d)", h.version,
                     SQM_VERSION);
        goto fail;
    }
    if (h.file_size != size || h.json_off > size || h.json_len > size - h.json_off ||
        h.gguf_off > size || h.gguf_len > size - h.gguf_off || h.data_off > size) {
        snprintf(msg, sizeof msg, "the file is truncated or its header is corrupted (%zu bytes, header says %llu)",
                 size, (unsigned long long)h.file_size);
        goto fail;
    }
    if (h.data_off % SQM_ALIGN) { /* the arrays' offsets are aligned relative to it (array_at) */
        snprintf(msg, sizeof msg, "the header is corrupted: data section at offset %llu, not a multiple of %d",
                 (unsigned long long)h.data_off, SQM_ALIGN);
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
    if (!acts || recipe_parse_a(acts, &a, msg, sizeof msg) != 0 || recipe_check_acts(&a, m->hp.dim, m->hp.ffn_dim, msg, sizeof msg) ||
        recipe_check_acts(&a, m->hp.q_dim, m->hp.q_dim, msg, sizeof msg))
        goto fail_model;
    size_t i;
    json_t *e;
    /* the activation recipe and its static masks (before the tensors: the
     * static-activation kernels take their site's mask) */
    act_quant_t *qs = calloc(1, sizeof *qs);
    if (!qs) goto fail_model;
    m->acts = qs;
    qs->a = a;
    qs->n_layer = m->hp.n_layer;
    m->w_bits = json_real_value(json_object_get(recipe, "w_bits"));
    long dims[N_SITES] = {m->hp.dim, m->hp.q_dim, m->hp.dim, m->hp.ffn_dim};
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
        for (int j = 0; j < 7; j++) qs->kernel_acts &= model_layer_mat(m, l, j, NULL, 0)->type == K_SQ;
    const char *wr = json_string_value(json_object_get(recipe, "weights"));
    snprintf(m->w_recipe, sizeof m->w_recipe, "%s", wr ? wr : "?");
    snprintf(m->a_recipe, sizeof m->a_recipe, "%s", acts);
    snprintf(m->recipe, sizeof m->recipe, "weights=%s acts=%s", m->w_recipe, acts);
    json_t *ev = json_object_get(man, "eval");
    const char *ev_ref = json_string_value(json_object_get(ev, "reference"));
    if (json_is_object(ev) && ev_ref) {
        const char *keys[5] = {"ppl", "ppl_fp32", "kl", "top1", "tokens"};
        m->have_eval = 1;
        for (int j = 0; j < 5; j++) m->eval[j] = json_number_value(json_object_get(ev, keys[j]));
        snprintf(m->eval_ref, sizeof m->eval_ref, "%s", ev_ref);
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
