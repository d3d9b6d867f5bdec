/* k_simd_avx2.c - the shared hot loops (k_simd.inc) built for avx2. */
#define K_SUFFIX avx2
#define K_NAME "avx2"
#include "k_simd.inc"
