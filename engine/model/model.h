/* model.h - one loaded Llama-family model: hyperparameters, weights, vocab.
 *
 * Weights are views into the GGUF mapping (k_mat_t): nothing is copied
 * except 1-D norm and bias vectors stored in a non-F32 type. Every
 * tensor's type and shape is checked against the hyperparameters at load,
 * so the forward pass can trust them.
 *
 * Architectures. The supported ones (llama, which covers Mistral, qwen2,
 * qwen3) share one block; what differs is data, an arch_t from model.c's
 * table, which forward.c reads as flags: biases on the q/k/v projections,
 * a per-head RMSNorm of q and k before RoPE, the RoPE pairing. A sliding
 * attention window is a hyperparameter ({arch}.attention.sliding_window).
 */
#ifndef MODEL_H
#define MODEL_H

#include "../../kernels/k_ops.h"
#include "chat.h"
#include "gguf.h"
#include "recipe.h"
#include "tok.h"

/* RoPE pairing: llama.cpp's NORM rotates adjacent pairs (2i, 2i+1) (the
 * converter permuted Llama's q/k rows for it); NEOX rotates (i, i + d/2). */
enum { ROPE_NORM, ROPE_NEOX };

/* What an architecture's block does beyond the Llama one. */
typedef struct {
    const char *name;  /* general.architecture */
    int qkv_bias;      /* attn_{q,k,v}.bias added after the projections (qwen2) */
    int qk_norm;       /* attn_{q,k}_norm: per-head RMSNorm of q and k before RoPE (qwen3) */
    int rope_style;    /* ROPE_NORM or ROPE_NEOX */
} arch_t;

typedef struct {
    int n_layer, dim, n_head, n_head_kv, head_dim, ffn_dim, n_vocab, n_ctx_train, rope_dim;
    float rope_base, rope_scale, rms_eps;
    const arch_t *arch;
    int n_swa;         /* sliding window: a query sees its last n_swa positions (0: all) */
    int q_dim;         /* n_head * head_dim: width of q and of the attention output, which
                        * may differ from dim ({arch}.attention.key_length, Qwen3-0.6B) */
} hparams_t;

typedef struct {
    const float *attn_norm, *ffn_norm;
    const float *bq, *bk, *bv;   /* arch->qkv_bias: [dim], [kv_dim], [kv_dim] */
    const float *q_norm, *k_norm; /* arch->qk_norm: [head_dim] each */
    k_mat_t wq, wk, wv, wo, w_gate, w_up, w_down;
} layer_t;

typedef struct {
    gguf_t gguf;
    hparams_t hp;
    char name[128];
    k_mat_t tok_embd, output;    /* output == tok_embd when tied */
    const float *output_norm;
    layer_t *layers;
    float *rope_inv_freq;        /* rope_dim / 2 */
    tok_t *tok;
    chat_tmpl_t chat;
    float **owned;               /* vectors converted to F32 at load */
    int n_owned;
    int external_layers;         /* layer matrices come from the caller (.sqm) */
    void *file_map;              /* a .sqm mapping the gguf points into */
    size_t file_size;
    act_quant_t *acts;           /* a .sqm's activation quantizer, or NULL */
    double w_bits;               /* a .sqm's stated bits per weight (0: not quantized) */
    /* evaluation recorded by convert in a .sqm: ppl, ppl_fp32, kl, top1, tokens,
     * against the reference model named in eval_ref */
    int have_eval;
    double eval[5];
    char eval_ref[160];
    char recipe[160];            /* "weights=W acts=A" of a .sqm */
    char w_recipe[80], a_recipe[80]; /* the same, apart */
    size_t *file_bytes;          /* [n_layer * 7]: bytes each layer matrix takes in its file */
    /* a device backend's copy of the weights (backend_cuda.h), or NULL:
     * the forward pass then runs on that backend */
    void *dev;
    const struct fwd_backend *dev_be;
    void (*dev_free)(void *);
} model_t;

/* Returns 0, or -1 with one line in err. A .sqm file is recognised by its
 * magic and loaded through sqm_load (sqm.h). */
int model_load(model_t *m, const char *path, char *err, size_t errlen);
/* Builds m from an opened GGUF (m->gguf set, m->external_layers chosen by
 * the caller); on failure frees m and returns -1 with what in the message. */
int model_init(model_t *m, const char *what, char *err, size_t errlen);
void model_free(model_t *m);
/* The description of a supported architecture by name, or NULL. */
const arch_t *model_arch(const char *name);
/* RoPE frequencies, rope_dim / 2 of them: base^(-2i/rope_dim) / scale,
 * divided by the optional per-dimension factors of rope_freqs.weight
 * (Llama 3.1 style; NULL for none). */
void model_rope_inv_freq(const hparams_t *hp, const float *factors, float *out);

/* The 7 matrices of layer l in file order (q, k, v, o, gate, up, down);
 * name (if non-NULL) receives the GGUF tensor name. */
k_mat_t *model_layer_mat(model_t *m, int l, int i, char *name, size_t n);

/* GGUF matrices (layers and lm head) of a type with integer kernels
 * (kernels/k_q8.h) run with activations quantized to 8 bits per block when
 * on, else with FP32 activations (the reference; what model_load gives).
 * Returns how many matrices now take the integer path. */
int model_set_int_acts(model_t *m, int on);

/* Stored bits per weight of layer matrix (l, i) in the file it came from,
 * and over all layer matrices (file_bytes * 8 / elements). */
double model_file_bits(const model_t *m, int l, int i);
double model_file_bits_total(const model_t *m);

/* 0 when ref can serve as m's reference: the same architecture (every
 * hyperparameter that shapes a tensor) and the same vocabulary, token by
 * token; else -1 with the first difference in err. */
int model_check_same_vocab(const model_t *m, const model_t *ref, char *err, size_t errlen);

/* Bytes and element count of the matmul weights (lm head included). */
size_t model_weight_bytes(const model_t *m);
size_t model_weight_elems(const model_t *m);

#endif
