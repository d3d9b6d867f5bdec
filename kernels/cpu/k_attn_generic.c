/* k_attn_generic.c - attention's FP32 kernels (k_attn.inc) built for portable. */
#define K_SUFFIX generic
#include "k_attn.inc"
