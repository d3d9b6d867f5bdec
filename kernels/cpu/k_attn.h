/* k_attn.h - attention's FP32 kernels of one ISA (K_FN's suffix), defined
 * in k_attn.inc and put in the ISA's table by k_simd.inc: the one place
 * both read their signatures from. No include guard: each ISA's pair of
 * files includes it once with its own suffix. */
float K_FN(k_attn_dot_f32)(const float *a, const float *b, long n);
/* s[i] = expf(s[i] - mx) for i < n, glibc's expf on x86-64 to the bit */
void K_FN(k_attn_exp)(float *s, long n, float mx);
/* g[i] = g[i] / (1 + expf(-g[i])) * u[i], i < n (k_silu_mul's numbers) */
void K_FN(k_silu_mul)(float *g, const float *u, long n);
/* G query heads sharing one K/V head: q and out hold the heads one after
 * another (hd floats each); scores: scratch of K_ATTN_HEADS_MAX rows of ld */
void K_FN(k_attn_heads)(const float *q, int G, const float *const *Kb, const float *const *Vb, int bt, long stride,
                        int t0, int n, int hd, float scale, float *scores, long ld, float *out);
