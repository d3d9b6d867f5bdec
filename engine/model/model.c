/* model.c - builds a model_t from GGUF metadata and tensors. */
#include "model.h"
#include "finite.h"


#include "../../kernels/k_q8.h"
#include "../../kernels/k_quant.h"

#include <math.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int get_int(const gguf_t *g, const char *arch, const char *suffix, int *out,
                   int required, int lo, int hi, char *err, size_t errlen) {
    char key[128];
    uint64_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (gguf_get_u64(g, key, &v) != 0) {
        if (!gguf_get(g, key) && !required) return 0;
        return errf(err, errlen, "metadata '%s' is %s", key,
                    gguf_get(g, key) ? "not a non-negative integer" : "missing");
    }
    if (v < (uint64_t)lo || v > (uint64_t)hi)
        return errf(err, errlen, "metadata '%s' = %llu is out of range [%d, %d]", key,
                    (unsigned long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

static int get_float(const gguf_t *g, const char *arch, const char *suffix, float *out,
                     double lo, double hi, char *err, size_t errlen) {
    char key[128];
    double v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (gguf_get_f64(g, key, &v) != 0) {
        if (!gguf_get(g, key)) return 0; /* optional: keep the default */
        return errf(err, errlen, "metadata '%s' is not a number", key);
    }
    if (!(v >= lo && v <= hi))
        return errf(err, errlen, "metadata '%s' = %g is out of range", key, v);
    *out = (float)v;
    return 0;
}

/* The architectures sqserve runs, as data (model.h's arch_t). A Mistral
 * GGUF says "llama"; its sliding window is a hyperparameter. Everything
 * else (gemma, phi3, ...) is refused by name at load. */
static const arch_t archs[] = {
    {"llama", 0, 0, ROPE_NORM},
    {"qwen2", 1, 0, ROPE_NEOX},
    {"qwen3", 0, 1, ROPE_NEOX},
};
#define N_ARCHS (int)(sizeof archs / sizeof archs[0])

const arch_t *model_arch(const char *name) {
    for (int i = 0; i < N_ARCHS; i++)
        if (!strcmp(archs[i].name, name)) return &archs[i];
    return NULL;
}

static int find_arch(gguf_str_t name, const arch_t **out, char *err, size_t errlen) {
    char shown[48], list[64] = "";
    for (int i = 0; i < N_ARCHS; i++) {
        if (gguf_str_eq(name, archs[i].name)) {
            *out = &archs[i];
            return 0;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", archs[i].name);
    }
    return errf(err, errlen, "architecture '%s' is not supported (supported: %s)",
                gguf_str_show(name, shown, sizeof shown), list);
}

static int load_hparams(model_t *m, char *err, size_t errlen) {
    const gguf_t *g = &m->gguf;
    gguf_str_t arch_s;
    if (gguf_get_str(g, "general.architecture", &arch_s) != 0)
        return errf(err, errlen, "general.architecture is missing");
    char shown[48];
    hparams_t *hp = &m->hp;
    if (find_arch(arch_s, &hp->arch, err, errlen)) return -1;
    const char *a = hp->arch->name;
    hp->rope_base = 10000.0f;
    hp->rope_scale = 1.0f;
    hp->rms_eps = 1e-5f;
    if (get_int(g, a, "block_count", &hp->n_layer, 1, 1, 1024, err, errlen) ||
        get_int(g, a, "embedding_length", &hp->dim, 1, 1, 1 << 16, err, errlen) ||
        get_int(g, a, "feed_forward_length", &hp->ffn_dim, 1, 1, 1 << 18, err, errlen) ||
        get_int(g, a, "attention.head_count", &hp->n_head, 1, 1, 1024, err, errlen) ||
        get_int(g, a, "context_length", &hp->n_ctx_train, 1, 1, 1 << 24, err, errlen))
        return -1;
    hp->n_head_kv = hp->n_head;
    hp->n_vocab = 0;
    if (get_int(g, a, "attention.head_count_kv", &hp->n_head_kv, 0, 1, 1024, err, errlen) ||
        get_int(g, a, "vocab_size", &hp->n_vocab, 0, 1, 1 << 24, err, errlen) ||
        get_float(g, a, "rope.freq_base", &hp->rope_base, 1.0, 1e12, err, errlen) ||
        get_float(g, a, "attention.layer_norm_rms_epsilon", &hp->rms_eps, 0.0, 1.0, err, errlen))
        return -1;
    if (hp->n_head % hp->n_head_kv != 0)
        return errf(err, errlen, "head_count %d is not a multiple of head_count_kv %d",
                    hp->n_head, hp->n_head_kv);
    /* head_dim: attention.key_length when given (it may make q wider or
     * narrower than the embedding), else embedding_length / head_count */
    int val_len = -1;
    hp->head_dim = 0;
    if (get_int(g, a, "attention.key_length", &hp->head_dim, 0, 1, 4096, err, errlen) ||
        get_int(g, a, "attention.value_length", &val_len, 0, 1, 4096, err, errlen))
        return -1;
    if (hp->head_dim == 0 && hp->dim % hp->n_head != 0)
        return errf(err, errlen, "embedding_length %d is not divisible by head_count %d",
                    hp->dim, hp->n_head);
    if (hp->head_dim == 0) hp->head_dim = hp->dim / hp->n_head;
    if (val_len >= 0 && val_len != hp->head_dim)
        return errf(err, errlen, "attention.value_length %d differs from key_length %d, which sqserve "
                    "does not support", val_len, hp->head_dim);
    hp->q_dim = hp->n_head * hp->head_dim;
    hp->n_swa = 0;
    if (get_int(g, a, "attention.sliding_window", &hp->n_swa, 0, 0, 1 << 24, err, errlen)) return -1;
    hp->rope_dim = hp->head_dim;
    if (get_int(g, a, "rope.dimension_count", &hp->rope_dim, 0, 2, hp->head_dim, err, errlen))
        return -1;
    if (hp->rope_dim % 2 != 0) return errf(err, errlen, "rope.dimension_count must be even");

    gguf_str_t st;
    char key[96];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (gguf_get_str(g, key, &st) == 0 && !gguf_str_eq(st, "none")) {
        if (!gguf_str_eq(st, "linear"))
            return errf(err, errlen, "rope scaling type '%s' is not supported (none, linear)",
                        gguf_str_show(st, shown, sizeof shown));
        float f = 1.0f;
        if (get_float(g, a, "rope.scaling.factor", &f, 1e-3, 1e3, err, errlen)) return -1;
        hp->rope_scale = f;
    }
    return 0;
}

/* Finds a tensor and checks its type and shape [k, n] (ne order). */
static int want_tensor(model_t *m, const char *name, long k, long n, int optional,
                       const gguf_tensor_t **out, char *err, size_t errlen) {
    const gguf_tensor_t *t = gguf_tensor(&m->gguf, name);
    *out = t;
    if (!t) return optional ? 0 : errf(err, errlen, "tensor '%s' is missing", name);
    const k_type_info_t *ti = k_type_info(t->type);
    if (!ti->dequant)
        return errf(err, errlen, "tensor '%s' has type %s, which sqserve cannot compute with",
                    name, ti->name);
    int dims = n > 0 ? 2 : 1;
    if ((int)t->n_dims != dims || (long)t->ne[0] != k || (dims == 2 && (long)t->ne[1] != n)) {
        char have[96] = "", want[48];
        for (uint32_t d = 0; d < t->n_dims; d++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", d ? ", " : "",
                     (unsigned long long)t->ne[d]);
        if (dims == 2) snprintf(want, sizeof want, "%ld, %ld", k, n);
        else snprintf(want, sizeof want, "%ld", k);
        return errf(err, errlen, "tensor '%s' has shape [%s], expected [%s]", name, have, want);
    }
    return 0;
}

/* Refuses NaN/Inf in any tensor the model could compute with (finite.h).
 * Runs after every structural check, so a malformed file is reported as
 * malformed rather than by whatever its misread bytes happen to hold. */
static int check_finite(model_t *m, char *err, size_t errlen) {
    for (uint64_t i = 0; i < m->gguf.n_tensors; i++) {
        const gguf_tensor_t *t = &m->gguf.tensors[i];
        long bad = finite_first_bad(t->type, t->data, (size_t)t->n_elems);
        if (bad < 0) continue;
        long k = t->n_dims ? (long)t->ne[0] : 1;
        return errf(err, errlen, "tensor '%.*s' holds a non-finite value (NaN or Inf) at element %ld "
                    "(row %ld, column %ld): refusing non-finite weights", (int)t->name.len, t->name.ptr,
                    bad, bad / k, bad % k);
    }
    return 0;
}

static int load_mat(model_t *m, const char *name, long k, long n, k_mat_t *w, char *err,
                    size_t errlen) {
    const gguf_tensor_t *t;
    if (want_tensor(m, name, k, n, 0, &t, err, errlen)) return -1;
    *w = (k_mat_t){t->type, t->data, n, k, k_row_bytes(t->type, (size_t)k), 0};
    return 0;
}

static int load_vec(model_t *m, const char *name, long n, const float **out, char *err,
                    size_t errlen) {
    const gguf_tensor_t *t;
    if (want_tensor(m, name, n, 0, 0, &t, err, errlen)) return -1;
    if (t->type == K_F32) {
        *out = t->data;
        return 0;
    }
    float *v = malloc((size_t)n * sizeof(float));
    float **o = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *o);
    if (!v || !o) {
        free(v);
        if (o) m->owned = o;
        return errf(err, errlen, "out of memory");
    }
    m->owned = o;
    m->owned[m->n_owned++] = v;
    k_dequant_row(t->type, t->data, v, (size_t)n);
    *out = v;
    return 0;
}

/* The vectors an architecture adds to layer l (arch_t flags): q/k/v
 * biases, per-head q/k norms. Kept in FP32 by every weight recipe. */
static int load_arch_vecs(model_t *m, int l, char *err, size_t errlen) {
    const hparams_t *hp = &m->hp;
    layer_t *L = &m->layers[l];
    long kv_dim = (long)hp->head_dim * hp->n_head_kv;
    char n[64];
    if (hp->arch->qkv_bias) {
        const char *parts[3] = {"attn_q", "attn_k", "attn_v"};
        const float **dst[3] = {&L->bq, &L->bk, &L->bv};
        long len[3] = {hp->q_dim, kv_dim, kv_dim};
        for (int i = 0; i < 3; i++) {
            snprintf(n, sizeof n, "blk.%d.%s.bias", l, parts[i]);
            if (load_vec(m, n, len[i], dst[i], err, errlen)) return -1;
        }
    }
    if (hp->arch->qk_norm) {
        snprintf(n, sizeof n, "blk.%d.attn_q_norm.weight", l);
        if (load_vec(m, n, hp->head_dim, &L->q_norm, err, errlen)) return -1;
        snprintf(n, sizeof n, "blk.%d.attn_k_norm.weight", l);
        if (load_vec(m, n, hp->head_dim, &L->k_norm, err, errlen)) return -1;
    }
    return 0;
}

static int load_weights(model_t *m, char *err, size_t errlen) {
    hparams_t *hp = &m->hp;
    const gguf_tensor_t *emb = gguf_tensor(&m->gguf, "token_embd.weight");
    if (!emb) return errf(err, errlen, "tensor 'token_embd.weight' is missing");
    if (emb->n_dims == 2 && hp->n_vocab == 0) hp->n_vocab = (int)emb->ne[1];
    long dim = hp->dim, q_dim = hp->q_dim, kv_dim = (long)hp->head_dim * hp->n_head_kv, ffn = hp->ffn_dim;
    if (load_mat(m, "token_embd.weight", dim, hp->n_vocab, &m->tok_embd, err, errlen) ||
        load_vec(m, "output_norm.weight", dim, &m->output_norm, err, errlen))
        return -1;
    const gguf_tensor_t *out;
    if (want_tensor(m, "output.weight", dim, hp->n_vocab, 1, &out, err, errlen)) return -1;
    m->output = out ? (k_mat_t){out->type, out->data, hp->n_vocab, dim,
                                k_row_bytes(out->type, (size_t)dim), 0}
                    : m->tok_embd; /* tied embeddings */
    m->layers = calloc((size_t)hp->n_layer, sizeof(layer_t));
    if (!m->layers) return errf(err, errlen, "out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        layer_t *L = &m->layers[l];
        char n[9][64];
        static const char *parts[9] = {"attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v",
                                       "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        for (int i = 0; i < 9; i++) snprintf(n[i], sizeof n[i], "blk.%d.%s.weight", l, parts[i]);
        if (load_vec(m, n[0], dim, &L->attn_norm, err, errlen) ||
            load_vec(m, n[1], dim, &L->ffn_norm, err, errlen) || load_arch_vecs(m, l, err, errlen))
            return -1;
        if (m->external_layers) continue; /* matrices supplied by the caller */
        if (load_mat(m, n[2], dim, q_dim, &L->wq, err, errlen) ||
            load_mat(m, n[3], dim, kv_dim, &L->wk, err, errlen) ||
            load_mat(m, n[4], dim, kv_dim, &L->wv, err, errlen) ||
            load_mat(m, n[5], q_dim, dim, &L->wo, err, errlen) ||
            load_mat(m, n[6], dim, ffn, &L->w_gate, err, errlen) ||
            load_mat(m, n[7], dim, ffn, &L->w_up, err, errlen) ||
            load_mat(m, n[8], ffn, dim, &L->w_down, err, errlen))
            return -1;
    }
    return 0;
}

void model_rope_inv_freq(const hparams_t *hp, const float *factors, float *out) {
    for (int i = 0; i < hp->rope_dim / 2; i++) {
        double f = pow((double)hp->rope_base, -2.0 * i / hp->rope_dim) / hp->rope_scale;
        out[i] = (float)(factors ? f / factors[i] : f);
    }
}

static int load_rope(model_t *m, char *err, size_t errlen) {
    hparams_t *hp = &m->hp;
    int half = hp->rope_dim / 2;
    const float *factors = NULL;
    if (gguf_tensor(&m->gguf, "rope_freqs.weight") &&
        load_vec(m, "rope_freqs.weight", half, &factors, err, errlen))
        return -1;
    m->rope_inv_freq = malloc((size_t)half * sizeof(float));
    if (!m->rope_inv_freq) return errf(err, errlen, "out of memory");
    model_rope_inv_freq(hp, factors, m->rope_inv_freq);
    return 0;
}

/* The chat template with the BOS/EOS token texts it may print. */
static int chat_init(model_t *m, const char *src, size_t len) {
    char *txt[2] = {NULL, NULL};
    int ids[2] = {tok_bos(m->tok), tok_eos(m->tok)}, rc = -1;
    for (int i = 0; i < 2; i++) {
        size_t n;
        const char *p = ids[i] >= 0 ? tok_piece(m->tok, ids[i], &n) : NULL;
        if (p && !(txt[i] = strndup(p, n))) goto out;
    }
    rc = chat_tmpl_init(&m->chat, src, len, txt[0], txt[1], tok_add_bos(m->tok));
out:
    free(txt[0]);
    free(txt[1]);
    return rc;
}

int model_init(model_t *m, const char *path, char *err, size_t errlen) {
    char msg[384];
    int rc = -1;
    if (load_hparams(m, msg, sizeof msg) || load_weights(m, msg, sizeof msg) ||
        load_rope(m, msg, sizeof msg) || check_finite(m, msg, sizeof msg))
        goto fail;
    if (!(m->file_bytes = calloc((size_t)m->hp.n_layer * 7, sizeof *m->file_bytes))) {
        snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    for (int l = 0; !m->external_layers && l < m->hp.n_layer; l++)
        for (int i = 0; i < 7; i++) {
            const k_mat_t *w = model_layer_mat(m, l, i, NULL, 0);
            m->file_bytes[l * 7 + i] = w->row_bytes * (size_t)w->n;
        }
    if (!(m->tok = tok_load(&m->gguf, msg, sizeof msg))) goto fail;
    if (tok_n_vocab(m->tok) != m->hp.n_vocab) {
        snprintf(msg, sizeof msg, "vocabulary has %d tokens but the model %d",
                 tok_n_vocab(m->tok), m->hp.n_vocab);
        goto fail;
    }
    gguf_str_t tmpl = {NULL, 0};
    gguf_get_str(&m->gguf, "tokenizer.chat_template", &tmpl);
    if (chat_init(m, tmpl.ptr, tmpl.len)) {
        snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    gguf_str_t name;
    if (gguf_get_str(&m->gguf, "general.name", &name) == 0)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len > 120 ? 120 : name.len), name.ptr);
    return 0;
fail:
    snprintf(err, errlen, "%s: %s", path, msg);
    model_free(m);
    return rc;
}

void model_free(model_t *m) {
    tok_free(m->tok);
    chat_tmpl_free(&m->chat);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->file_bytes);
    free(m->rope_inv_freq);
    gguf_close(&m->gguf);
    if (m->acts) {
        act_quant_release(m->acts);
        free(m->acts);
    }
    if (m->file_map) munmap(m->file_map, m->file_size);
    if (m->dev_free) m->dev_free(m->dev);
    memset(m, 0, sizeof *m);
}

k_mat_t *model_layer_mat(model_t *m, int l, int i, char *name, size_t n) {
    static const char *parts[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                   "ffn_up", "ffn_down"};
    layer_t *L = &m->layers[l];
    k_mat_t *mats[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    if (name) snprintf(name, n, "blk.%d.%s.weight", l, parts[i]);
    return mats[i];
}

static int set_int_acts(k_mat_t *w, int on) {
    w->int_acts = on && k_q8_supports(w->type, w->k);
    return w->int_acts;
}

int model_set_int_acts(model_t *m, int on) {
    int count = set_int_acts(&m->output, on);
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int i = 0; i < 7; i++) count += set_int_acts(model_layer_mat(m, l, i, NULL, 0), on);
    return count;
}

double model_file_bits(const model_t *m, int l, int i) {
    k_mat_t *w = model_layer_mat((model_t *)m, l, i, NULL, 0);
    return 8.0 * (double)m->file_bytes[l * 7 + i] / ((double)w->n * (double)w->k);
}

double model_file_bits_total(const model_t *m) {
    double bytes = 0, elems = 0;
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int i = 0; i < 7; i++) {
            k_mat_t *w = model_layer_mat((model_t *)m, l, i, NULL, 0);
            bytes += (double)m->file_bytes[l * 7 + i];
            elems += (double)w->n * (double)w->k;
        }
    return elems > 0 ? 8.0 * bytes / elems : 0;
}

int model_check_same_vocab(const model_t *m, const model_t *ref, char *err, size_t errlen) {
    const hparams_t *a = &m->hp, *b = &ref->hp;
    if (a->arch != b->arch || a->n_swa != b->n_swa) {
        snprintf(err, errlen, "not the same architecture (%s / %s, sliding window %d / %d)",
                 a->arch->name, b->arch->name, a->n_swa, b->n_swa);
        return -1;
    }
    if (a->n_layer != b->n_layer || a->dim != b->dim || a->q_dim != b->q_dim || a->n_head != b->n_head || a->n_head_kv != b->n_head_kv ||
        a->head_dim != b->head_dim || a->ffn_dim != b->ffn_dim || a->n_vocab != b->n_vocab) {
        snprintf(err, errlen, "not the same architecture (layers %d/%d, dim %d/%d, ffn %d/%d, vocabulary %d/%d)",
                 a->n_layer, b->n_layer, a->dim, b->dim, a->ffn_dim, b->ffn_dim, a->n_vocab, b->n_vocab);
        return -1;
    }
    for (int id = 0; id < a->n_vocab; id++) {
        size_t la, lb;
        const char *pa = tok_piece(m->tok, id, &la), *pb = tok_piece(ref->tok, id, &lb);
        if (la != lb || memcmp(pa, pb, la) != 0) {
            snprintf(err, errlen, "not the same vocabulary (token %d differs)", id);
            return -1;
        }
    }
    if (tok_bos(m->tok) != tok_bos(ref->tok) || tok_eos(m->tok) != tok_eos(ref->tok)) {
        snprintf(err, errlen, "not the same special tokens (bos/eos)");
        return -1;
    }
    return 0;
}

size_t model_weight_bytes(const model_t *m) {
    size_t b = m->output.row_bytes * (size_t)m->output.n;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const layer_t *L = &m->layers[l];
        const k_mat_t *w[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) b += w[i]->row_bytes * (size_t)w[i]->n;
    }
    return b;
}

size_t model_weight_elems(const model_t *m) {
    size_t e = (size_t)m->output.n * (size_t)m->output.k;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const layer_t *L = &m->layers[l];
        const k_mat_t *w[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++) e += (size_t)w[i]->n * (size_t)w[i]->k;
    }
    return e;
}
