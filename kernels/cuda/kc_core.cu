/* kc_core.cu - device selection, memory, errors, timers and the cuBLAS
 * FP32 GEMM (see kc.h).
 *
 * One stream and one cuBLAS handle per process: the engine drives the GPU
 * from a single thread (the scheduler's loop), so nothing here needs a
 * lock except the sticky error, which HTTP threads may read.
 *
 * The first error sticks (later failures are usually consequences of it)
 * until kc_clear_error; kc_sync turns asynchronous kernel faults into that
 * error rather than letting them surface at some unrelated later call.
 */
#include "kc.h"
#include "kc_internal.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_err[512];
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;
static cudaStream_t g_stream;
static cublasHandle_t g_blas;
static cudaDeviceProp g_prop;
static int g_ready;
static void *g_blas_ws;
#define BLAS_WS_BYTES (32u << 20)

extern "C" void kc_set_error(const char *fmt, ...) {
    pthread_mutex_lock(&g_err_lock);
    if (!g_err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_err, sizeof g_err, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&g_err_lock);
}

extern "C" int kc_check(int cuda_err, const char *what) {
    if (cuda_err == cudaSuccess) return 0;
    kc_set_error("CUDA error in %s: %s (%s)", what, cudaGetErrorString((cudaError_t)cuda_err),
                 cudaGetErrorName((cudaError_t)cuda_err));
    return -1;
}

extern "C" int kc_check_launch(const char *kernel) {
    return kc_check((int)cudaGetLastError(), kernel);
}

extern "C" int kc_sm_count(void) {
    static int nsm; /* one device per process (kc_init) */
    if (!nsm) {
        int dev = 0, v = 0;
        nsm = cudaGetDevice(&dev) == cudaSuccess &&
                      cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0
                  ? v
                  : 132;
    }
    return nsm;
}

/* sm_90a code (wgmma, kc_i8_gemm.cu) runs on compute capability 9.0 only:
 * newer GPUs get the compute_90 PTX, where CUTLASS compiles it to a stub */
extern "C" int kc_sm90a(void) { return g_prop.major == 9 && g_prop.minor == 0; }

extern "C" int kc_pdl(void) {
    static int on = -1; /* one device per process (kc_init) */
    if (on < 0) {
        const char *e = getenv("KC_PDL");
        int dev = 0, cc = 0;
        on = !(e && !strcmp(e, "0")) && cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && cc >= 9;
    }
    return on;
}

extern "C" const char *kc_error(void) { return g_err[0] ? g_err : "no CUDA error recorded"; }

extern "C" void kc_clear_error(void) {
    pthread_mutex_lock(&g_err_lock);
    g_err[0] = 0;
    pthread_mutex_unlock(&g_err_lock);
}

extern "C" void *kc_stream(void) { return (void *)g_stream; }

extern "C" int kc_init(int ordinal) {
    if (g_ready) return 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        kc_set_error("no usable CUDA device (%s; is an NVIDIA driver installed and a GPU visible?)",
                     cudaGetErrorString(e));
        return -1;
    }
    if (n == 0) {
        kc_set_error("no CUDA device found");
        return -1;
    }
    if (ordinal < 0 || ordinal >= n) {
        kc_set_error("CUDA device %d does not exist (%d found)", ordinal, n);
        return -1;
    }
    if (kc_check(cudaGetDeviceProperties(&g_prop, ordinal), "cudaGetDeviceProperties") ||
        kc_check(cudaSetDevice(ordinal), "cudaSetDevice"))
        return -1;
    if (g_prop.major < 9) {
        kc_set_error("%s is compute capability %d.%d; this build carries code for 9.0 (Hopper) "
                     "and newer", g_prop.name, g_prop.major, g_prop.minor);
        return -1;
    }
    if (kc_check(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking), "cudaStreamCreate"))
        return -1;
    cublasStatus_t s = cublasCreate(&g_blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        kc_set_error("cublasCreate failed: %s", cublasGetStatusString(s));
        return -1;
    }
    /* a fixed workspace: a GEMM captured into a CUDA graph must not allocate */
    if (kc_check(cudaMalloc(&g_blas_ws, BLAS_WS_BYTES), "cuBLAS workspace") ||
        cublasSetWorkspace(g_blas, g_blas_ws, BLAS_WS_BYTES) != CUBLAS_STATUS_SUCCESS) {
        kc_set_error("cuBLAS workspace set-up failed");
        return -1;
    }
    /* FP32 means FP32: no TF32 shortcut, so GPU and CPU answers agree */
    if (cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(g_blas, g_stream) != CUBLAS_STATUS_SUCCESS) {
        kc_set_error("cuBLAS set-up failed");
        return -1;
    }
    if (kc_attn_init()) return -1;
    g_ready = 1;
    return 0;
}

extern "C" void kc_shutdown(void) {
    if (!g_ready) return;
    cudaStreamSynchronize(g_stream);
    cublasDestroy(g_blas);
    cudaFree(g_blas_ws);
    kc_attn_free();
    cudaStreamDestroy(g_stream);
    g_ready = 0;
}

extern "C" const char *kc_device_name(void) { return g_ready ? g_prop.name : "none"; }

extern "C" double kc_mem_bandwidth_gbs(void) {
    if (!g_ready) return 0;
    int clock_khz = 0, bus_bits = 0, dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
    return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9; /* DDR: two transfers per clock */
}

extern "C" void *kc_malloc(size_t bytes) {
    void *p = NULL;
    if (kc_check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc")) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        kc_clear_error();
        kc_set_error("out of GPU memory: %zu bytes requested, %zu of %zu free", bytes, fr, tot);
        return NULL;
    }
    return p;
}

extern "C" long kc_threshold(long *cache, const char *env, long dflt) {
    if (*cache < 0) {
        const char *e = getenv(env);
        *cache = e && *e ? atol(e) : dflt;
        if (*cache < 0) *cache = 0;
    }
    return *cache;
}

extern "C" long kc_override(long *cache, const char *env) {
    if (*cache == -1) {
        const char *e = getenv(env);
        *cache = e && *e ? (atol(e) < 0 ? 0 : atol(e)) : -2;
    }
    return *cache;
}

extern "C" int kc_grow(void **buf, size_t *have, size_t need, size_t min_bytes) {
    if (need <= *have) return 0;
    size_t want = min_bytes ? min_bytes : 1;
    while (want < need) want <<= 1;
    void *p = kc_malloc(want);
    if (!p) return -1;
    *buf = p, *have = want;
    return 0;
}

extern "C" int kc_gemm_nt(int type, const void *w, long n, long k, const void *x, long m, void *y, long ldy) {
    static const char *name[] = {"FP16", "BF16", "INT8"};
    if (m > 0x7fffffffL || n > 0x7fffffffL || k > 0x7fffffffL || ldy > 0x7fffffffL) {
        kc_set_error("cublasGemmEx %s: %ld x %ld x %ld is past cuBLAS's int sizes", name[type], m, n, k);
        return -1;
    }
    const float f1 = 1.0f, f0 = 0.0f;
    const int32_t i1 = 1, i0 = 0;
    const bool i8 = type == KC_GEMM_I8;
    const cudaDataType t = i8 ? CUDA_R_8I : type == KC_GEMM_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    cublasStatus_t s = cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, i8 ? (const void *)&i1 : &f1,
                                    w, t, (int)k, x, t, (int)k, i8 ? (const void *)&i0 : &f0, y,
                                    i8 ? CUDA_R_32I : CUDA_R_32F, (int)ldy, i8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) {
        kc_set_error("cublasGemmEx %s (%ld x %ld x %ld) failed: %s", name[type], m, n, k, cublasGetStatusString(s));
        return -1;
    }
    return 0;
}

extern "C" void kc_free(void *d) {
    if (d) cudaFree(d);
}

extern "C" int kc_upload(void *d_dst, const void *src, size_t bytes) {
    return kc_check(cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, g_stream),
                    "upload");
}

extern "C" int kc_download(void *dst, const void *d_src, size_t bytes) {
    if (kc_check(cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, g_stream), "download"))
        return -1;
    return kc_sync();
}

extern "C" int kc_host_pin(void *p, size_t bytes) {
    if (!p || !bytes) return -1;
    if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it, or the next launch check would report it */
        return -1;
    }
    return 0;
}

extern "C" void kc_host_unpin(void *p) {
    if (p && cudaHostUnregister(p) != cudaSuccess) (void)cudaGetLastError();
}

extern "C" int kc_copy(void *d_dst, const void *d_src, size_t bytes) {
    if (!bytes) return 0;
    return kc_check(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, g_stream), "cudaMemcpyAsync D2D");
}

extern "C" int kc_memset(void *d, int byte, size_t bytes) {
    return kc_check(cudaMemsetAsync(d, byte, bytes, g_stream), "memset");
}

extern "C" int kc_sync(void) {
    return kc_check(cudaStreamSynchronize(g_stream), "a kernel (reported at synchronisation)");
}

struct kc_timer {
    cudaEvent_t a, b;
};

extern "C" kc_timer_t *kc_timer_start(void) {
    kc_timer_t *t = (kc_timer_t *)calloc(1, sizeof *t);
    if (!t) {
        kc_set_error("out of host memory");
        return NULL;
    }
    if (kc_check(cudaEventCreate(&t->a), "cudaEventCreate") ||
        kc_check(cudaEventCreate(&t->b), "cudaEventCreate") ||
        kc_check(cudaEventRecord(t->a, g_stream), "cudaEventRecord")) {
        free(t);
        return NULL;
    }
    return t;
}

extern "C" double kc_timer_stop_ms(kc_timer_t *t) {
    if (!t) return -1;
    float ms = -1;
    if (kc_check(cudaEventRecord(t->b, g_stream), "cudaEventRecord") ||
        kc_check(cudaEventSynchronize(t->b), "cudaEventSynchronize") ||
        kc_check(cudaEventElapsedTime(&ms, t->a, t->b), "cudaEventElapsedTime"))
        ms = -1;
    cudaEventDestroy(t->a);
    cudaEventDestroy(t->b);
    free(t);
    return ms;
}

struct kc_graph {
    cudaGraphExec_t exec;
};

extern "C" int kc_graph_begin(void) {
    return kc_check(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal), "graph capture");
}

extern "C" kc_graph_t *kc_graph_end(void) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(g_stream, &graph);
    if (kc_check(e, "graph capture") != 0) {
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError(); /* the capture's error is recorded; the stream works again */
        return NULL;
    }
    kc_graph_t *g = (kc_graph_t *)calloc(1, sizeof *g);
    if (!g) {
        cudaGraphDestroy(graph);
        kc_set_error("out of host memory");
        return NULL;
    }
    e = cudaGraphInstantiate(&g->exec, graph, 0);
    cudaGraphDestroy(graph);
    if (kc_check(e, "graph instantiation") != 0) {
        free(g);
        return NULL;
    }
    return g;
}

extern "C" int kc_graph_launch(kc_graph_t *g) {
    return kc_check(cudaGraphLaunch(g->exec, g_stream), "graph launch");
}

extern "C" void kc_graph_free(kc_graph_t *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}

extern "C" int kc_gemm_f32(const float *d_w, long n, long k, const float *d_x, long m, float *d_y) {
    /* column-major view: y^T[n][m] = W[n][k] . x^T[k][m] */
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = cublasSgemm(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one,
                                   d_w, (int)k, d_x, (int)k, &zero, d_y, (int)n);
    if (s != CUBLAS_STATUS_SUCCESS) {
        kc_set_error("cublasSgemm (%ld x %ld x %ld) failed: %s", m, n, k, cublasGetStatusString(s));
        return -1;
    }
    return 0;
}
