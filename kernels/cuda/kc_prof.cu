/* kc_prof.cu - per-operation GPU time, for finding what bounds a forward
 * pass (kc.h, "profile").
 *
 * The backend brackets each operation with kc_prof_push(name) and
 * kc_prof_pop(); both record a CUDA event on the stream, so the figures are
 * device time between the operation's first and last launch, not host time.
 * Events are read back in batches (when the pool fills, and at the report),
 * which costs a synchronisation each: profiling changes the host/device
 * overlap, so it is for attribution (which op takes what share), not for
 * the headline tokens per second. Off unless SQSERVE_CUDA_PROFILE is set;
 * then the CUDA backend also runs without graphs (events cannot be
 * recorded inside a capture and read per replay).
 */
#include "kc.h"
#include "kc_internal.h"

#include <cuda_profiler_api.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROF_EV 4096
#define PROF_NAMES 64

static int g_on = -1;
static cudaEvent_t g_ev[PROF_EV][2];
static const char *g_evname[PROF_EV];
static int g_nev, g_open = -1;
static struct {
    const char *name;
    double ms;
    long calls;
} g_tab[PROF_NAMES];
static int g_ntab;

extern "C" int kc_prof_enabled(void) {
    if (g_on < 0) {
        const char *e = getenv("SQSERVE_CUDA_PROFILE");
        g_on = e && *e && strcmp(e, "0") != 0;
    }
    return g_on;
}

static void account(const char *name, double ms) {
    int i = 0;
    while (i < g_ntab && strcmp(g_tab[i].name, name) != 0) i++;
    if (i == g_ntab) {
        if (g_ntab == PROF_NAMES) return; /* more distinct names than slots: the rest unattributed */
        g_tab[g_ntab].name = name, g_tab[g_ntab].ms = 0, g_tab[g_ntab].calls = 0;
        g_ntab++;
    }
    g_tab[i].ms += ms, g_tab[i].calls++;
}

static int flush(void) {
    if (kc_check(cudaStreamSynchronize(KC_STREAM), "profile sync")) return -1;
    for (int i = 0; i < g_nev; i++) {
        float ms = 0;
        if (kc_check(cudaEventElapsedTime(&ms, g_ev[i][0], g_ev[i][1]), "cudaEventElapsedTime")) return -1;
        account(g_evname[i], ms);
    }
    g_nev = 0;
    return 0;
}

extern "C" void kc_prof_push(const char *name) {
    if (!kc_prof_enabled() || g_open >= 0) return; /* not nested: the outer bracket counts */
    if (g_nev == PROF_EV && flush()) return;
    const int i = g_nev;
    if (!g_ev[i][0] && (kc_check(cudaEventCreate(&g_ev[i][0]), "cudaEventCreate") ||
                        kc_check(cudaEventCreate(&g_ev[i][1]), "cudaEventCreate")))
        return;
    if (kc_check(cudaEventRecord(g_ev[i][0], KC_STREAM), "cudaEventRecord")) return;
    g_evname[i] = name, g_open = i;
}

extern "C" void kc_prof_pop(void) {
    if (g_open < 0) return;
    if (!kc_check(cudaEventRecord(g_ev[g_open][1], KC_STREAM), "cudaEventRecord")) g_nev++;
    g_open = -1;
}

extern "C" int kc_prof_report(FILE *out) {
    if (!kc_prof_enabled()) return 0;
    if (flush()) return -1;
    double total = 0;
    for (int i = 0; i < g_ntab; i++) total += g_tab[i].ms;
    for (int i = 1; i < g_ntab; i++) /* by time, largest first (insertion sort: few names) */
        for (int j = i; j > 0 && g_tab[j].ms > g_tab[j - 1].ms; j--) {
            const auto t = g_tab[j];
            g_tab[j] = g_tab[j - 1], g_tab[j - 1] = t;
        }
    fprintf(out, "GPU time by operation (SQSERVE_CUDA_PROFILE; device time, graphs off):\n");
    fprintf(out, "  %-16s %12s %10s %7s\n", "operation", "ms", "calls", "share");
    for (int i = 0; i < g_ntab; i++)
        fprintf(out, "  %-16s %12.3f %10ld %6.1f%%\n", g_tab[i].name, g_tab[i].ms, g_tab[i].calls,
                total > 0 ? 100.0 * g_tab[i].ms / total : 0.0);
    fprintf(out, "  %-16s %12.3f\n", "total", total);
    g_ntab = 0;
    return 0;
}

extern "C" int kc_profiler_range(int on) {
    return kc_check(on ? cudaProfilerStart() : cudaProfilerStop(), on ? "cudaProfilerStart" : "cudaProfilerStop");
}
