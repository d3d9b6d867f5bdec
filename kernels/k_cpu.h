/* k_cpu.h - CPU feature probes shared by the kernel dispatchers
 * (kernels/cpu/k_cpu.c; below k_ops.c, k_sq.c and k_ggml_q8.c). */
#ifndef K_CPU_H
#define K_CPU_H

/* 1 when the CPU has AVX2 and AVX-VNNI (VEX vpdpbusd: cpuid leaf 7
 * sub-leaf 1, EAX bit 4), which AVX-512 VNNI does not imply. */
int k_cpu_avxvnni(void);
/* 1 when the CPU has AVX2, FMA and F16C (the AVX2 kernels' baseline). */
int k_cpu_avx2(void);

#endif
