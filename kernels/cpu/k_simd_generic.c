/* k_simd_generic.c - the shared hot loops (k_simd.inc) built for portable. */
#define K_SUFFIX generic
#define K_NAME "portable"
#include "k_simd.inc"
