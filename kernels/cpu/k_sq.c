/* k_sq.c - portable SQ x INT8 kernels and dispatch (see k_sq.h). */
#include "../k_sq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void k_sq_group_sums_avx512(const k_sq_t *w, long r, const int8_t *qx, const int32_t *xsum64,
                            int32_t *lo, int32_t *hi);

float k_quant_row_i8(const float *x, long k, int8_t *qx, int32_t *xsum64) {
    float mx = 0;
    for (long j = 0; j < k; j++) mx = fabsf(x[j]) > mx ? fabsf(x[j]) : mx;
    float sx = mx / 127.0f;
    for (long j = 0; j < k; j++) {
        float v = sx > 0 ? nearbyintf(x[j] / sx) : 0;
        qx[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    for (long g = 0; xsum64 && g < k / 64; g++) {
        int32_t t = 0;
        for (int j = 0; j < 64; j++) t += qx[g * 64 + j];
        xsum64[g] = t;
    }
    return sx;
}

static int lo_code(const k_sq_t *w, size_t e) {
    if (w->h_low > 2) {
        int v = (w->lo[e / 2] >> (4 * (e % 2))) & 15;
        return v >= 8 ? v - 16 : v;
    }
    int v = (w->lo[e / 4] >> (2 * (e % 4))) & 3;
    return v >= 2 ? v - 4 : v;
}

void k_sq_group_sums_ref(const k_sq_t *w, long r, const int8_t *qx, int32_t *lo, int32_t *hi) {
    long ng = w->k / w->G, nb = w->k / w->b;
    for (long g = 0; g < ng; g++) {
        int32_t s = 0;
        for (long j = g * w->G; j < (g + 1) * w->G; j++) s += lo_code(w, (size_t)(r * w->k + j)) * qx[j];
        lo[g] = s;
        hi[g] = 0;
    }
    for (long bk = 0; bk < nb; bk++) {
        const int8_t *hv = w->hi + (r * nb + bk) * w->h;
        const uint8_t *ix = w->idx + (r * nb + bk) * w->h;
        long j0 = bk * w->b;
        for (int i = 0; i < w->h; i++) hi[(j0 + ix[i]) / w->G] += hv[i] * qx[j0 + ix[i]];
    }
}

float k_sq_combine(const k_sq_t *w, long r, float sx, const int32_t *lo, const int32_t *hi) {
    long ng = w->k / w->G;
    const float *sl = w->s_lo + r * ng, *sh = w->s_hi + r * ng;
    float acc = 0;
    for (long g = 0; g < ng; g++) acc += sl[g] * (float)lo[g] + sh[g] * (float)hi[g];
    return acc * sx;
}

static int cpu_has_fast(void) {
    static int v = -1;
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
        const char *want = getenv("SQSERVE_ISA"); /* portable/avx2 force the portable path */
        if (want && (!strcmp(want, "portable") || !strcmp(want, "avx2"))) v = 0;
    }
    return v;
}

int k_sq_simd(const k_sq_t *w) {
    return w->h_low == 4 && w->b == 64 && w->G == 64 && w->h <= 32 && cpu_has_fast();
}

void k_sq_group_sums(const k_sq_t *w, long r, const int8_t *qx, const int32_t *xsum64, int32_t *lo,
                     int32_t *hi) {
    if (k_sq_simd(w)) k_sq_group_sums_avx512(w, r, qx, xsum64, lo, hi);
    else k_sq_group_sums_ref(w, r, qx, lo, hi);
}
