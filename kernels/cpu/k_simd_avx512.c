/* k_simd_avx512.c - the shared hot loops (k_simd.inc) built for avx512. */
#define K_SUFFIX avx512
#define K_NAME "avx512"
#include "k_simd.inc"
