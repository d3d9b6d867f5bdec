/* k_ops.h - the CPU compute kernels the forward pass is written against.
 *
 * Everything works on plain float arrays and weight views; nothing here
 * knows about requests, sequences or files. Hot loops exist once, in
 * k_simd.inc, compiled for each ISA (portable, AVX2, AVX-512) and chosen
 * at run time by k_init() (override with SQSERVE_ISA=portable|avx2|avx512).
 */
#ifndef K_OPS_H
#define K_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "k_pool.h"

/* the query heads k_attn_heads takes through K and V at once */
#define K_ATTN_HEADS_MAX 4

/* A weight matrix W[n][k] (row = one output feature) in a GGML type. */
typedef struct {
    uint32_t type;       /* enum k_type */
    const void *data;
    long n, k;
    size_t row_bytes;
    /* 1: activations quantized to 8 bits per block, integer dot products
     * (k_q8.h; only where k_q8_supports); 0: FP32 activations, the exact
     * reference */
    int int_acts;
} k_mat_t;

/* Per-ISA hot loops (k_simd.inc). */
typedef struct {
    const char *name;
    float (*dot_f32)(const float *a, const float *b, long n);
    /* fused dequantizing dot products of one weight row with x */
    float (*dot_q4_0)(const void *row, const float *x, long k);
    float (*dot_q4_1)(const void *row, const float *x, const float *xsum32, long k);
    float (*dot_q8_0)(const void *row, const float *x, long k);
    /* out[i] = row . x[i] for i < nx <= 8 (F32, Q4_0, Q4_1, Q8_0) */
    void (*multi_dot)(uint32_t type, const void *row, const float *x, long ldx, int nx, long k,
                      float *out);
    /* y[i][j] = sum_p x[i][p] P[p][j] for i < nx <= 6, j < nw <= 32, with P a
     * transposed panel of 32 weight rows (k_matmul packs it) */
    void (*gemm_panel)(const float *P, long k, const float *x, long ldx, int nx,
                       float *y, long ldy, int nw);
    /* softmax(q_g . K^T * scale) . V for G query heads sharing one K/V head
     * (q_g = q + g hd, out likewise) over positions t0..n-1 stored in blocks
     * of bt rows (row t at Kb[t / bt] + (t % bt) * stride); t0 > 0 is a
     * sliding window; scores: scratch of K_ATTN_HEADS_MAX rows of ld >= n
     * floats (the heads go K_ATTN_HEADS_MAX at a time) */
    void (*attn_heads)(const float *q, int G, const float *const *Kb, const float *const *Vb, int bt,
                       long stride, int t0, int n, int hd, float scale, float *scores, long ld, float *out);
    /* s[i] = expf(s[i] - mx), i < n: the softmax's exp, glibc's expf to the bit */
    void (*attn_exp)(float *s, long n, float mx);
    /* g[i] = g[i] / (1 + expf(-g[i])) * u[i]: k_silu_mul */
    void (*silu_mul)(float *g, const float *u, long n);
} k_isa_t;

void k_init(void);
const char *k_isa_name(void);
const k_isa_t *k_isa(void);

/* y[m][n] = x[m][k] . W^T, split across the pool. Returns 0, or -1 on out
 * of memory or an unsupported weight type. */
int k_matmul(k_pool_t *pool, const k_mat_t *w, const float *x, long m, float *y);
/* Several matrices reading the same x (q/k/v, gate/up) in one dispatch:
 * y[i] = x . W[i]^T. Saves a fork-join per matrix on the decode path. */
int k_matmul_group(k_pool_t *pool, const k_mat_t *const *w, float *const *y, int count,
                   const float *x, long m);
/* Row r of W as floats (embedding lookup). */
void k_mat_row(const k_mat_t *w, long r, float *out);

void k_rmsnorm(float *out, const float *x, const float *w, long n, float eps);
/* In-place llama.cpp "normal" RoPE on one head: rotates pairs (2i, 2i+1)
 * of the first rot_dim values by pos * inv_freq[i]. */
void k_rope(float *x, long rot_dim, float pos, const float *inv_freq);
/* The same with GPT-NeoX pairing (llama.cpp ROPE_TYPE_NEOX, Qwen): rotates
 * (i, i + rot_dim/2) by pos * inv_freq[i]. */
void k_rope_neox(float *x, long rot_dim, float pos, const float *inv_freq);
/* The rotation's table for one position, cs[2i] = cos, cs[2i + 1] = sin of
 * pos * inv_freq[i] (i < rot_dim / 2), and the two rotations from it: the
 * same floats as k_rope / k_rope_neox, which compute it per head. A
 * forward pass computes each row's table once for all heads and layers
 * (each cos and sin is a double-precision libm call: 5 % of a 512-token
 * prefill on SmolLM2 when every head of every layer made its own). */
void k_rope_cs(float *cs, long rot_dim, float pos, const float *inv_freq);
void k_rope_cs_apply(float *x, long rot_dim, const float *cs);
void k_rope_neox_cs_apply(float *x, long rot_dim, const float *cs);
void k_silu_mul(float *g, const float *u, long n);
void k_add(float *y, const float *x, long n);
/* Softmax in place; returns the max. */
void k_softmax(float *x, long n);

#endif
