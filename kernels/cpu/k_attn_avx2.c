/* k_attn_avx2.c - attention's FP32 kernels (k_attn.inc) built for avx2. */
#define K_SUFFIX avx2
#include "k_attn.inc"
