/* k_attn_avx512.c - attention's FP32 kernels (k_attn.inc) built for avx512. */
#define K_SUFFIX avx512
#include "k_attn.inc"
