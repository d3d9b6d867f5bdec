/* k_cpu.c - CPU feature probes that __builtin_cpu_supports cannot answer.
 *
 * The lowest file of kernels/cpu: it calls nothing else in the tree, and
 * the dispatchers (k_ops.c, k_sq.c, k_ggml_q8.c) call into it, so the
 * dependency runs one way. GCC 12's builtin misses the AVX-VNNI bit on
 * AMD, so that bit is read straight from cpuid leaf 7 sub-leaf 1; and
 * clang's builtin does not know "f16c", so the AVX2 level is asked here
 * too (this file is always compiled with gcc, the fuzz builds included).
 */
#include "../k_cpu.h"

#include <cpuid.h>

/* Asked once (in a VM every cpuid traps to the hypervisor), from the
 * calling thread, never from the pool's; GCC 12's builtin misses the bit
 * on AMD. */
int k_cpu_avxvnni(void) {
    static int known = -1;
    if (known < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 4 & 1);
    }
    return known;
}

int k_cpu_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return known;
}
