/* k_pool.c - spin-then-sleep fork-join pool (see k_pool.h). */
#include "../k_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_ITERS 30000  /* polling (mostly yielding) for a few ms, then sleep */
#define YIELD_AFTER 2000  /* then let a descheduled peer run (shared CPUs) */

struct k_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;      /* bumped once per k_pool_run */
    atomic_int pending;   /* workers still running the current task */
    atomic_int stop;
    k_task_fn fn;
    void *ctx;
};

typedef struct { k_pool_t *p; int ith; } worker_arg_t;

static void *worker(void *arg) {
    worker_arg_t *wa = arg;
    k_pool_t *p = wa->p;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
            if (++spins < SPIN_ITERS) {
                if (spins > YIELD_AFTER) sched_yield();
                else CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        p->fn(p->ctx, ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

k_pool_t *k_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    k_pool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) { free(p); return NULL; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg_t *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->threads[i], NULL, worker, (wa->p = p, wa->ith = i, wa)) != 0) {
            free(wa);
            p->n = i; /* run with the threads we got, stop them on free */
            break;
        }
    }
    return p;
}

void k_pool_free(k_pool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int k_pool_size(const k_pool_t *p) { return p ? p->n : 1; }

void k_pool_run(k_pool_t *p, k_task_fn fn, void *ctx) {
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n);
    /* with more threads than free cores a worker may be descheduled:
     * spinning would then burn its time slice, so yield after a while */
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
        if (spins > YIELD_AFTER) sched_yield();
        else CPU_RELAX();
    }
}

void k_split(long n, int ith, int nth, long align, long *begin, long *end) {
    long units = (n + align - 1) / align;
    long per = units / nth, extra = units % nth;
    long b = ith * per + (ith < extra ? ith : extra);
    long e = b + per + (ith < extra ? 1 : 0);
    *begin = b * align < n ? b * align : n;
    *end = e * align < n ? e * align : n;
}

typedef struct {
    long n, align;
    k_range_fn fn;
    void *ctx;
} pool_for_t;

static void pool_for_task(void *arg, int ith, int nth) {
    const pool_for_t *a = arg;
    long b, e;
    k_split(a->n, ith, nth, a->align, &b, &e);
    if (b < e) a->fn(a->ctx, b, e);
}

void k_pool_for(k_pool_t *p, long n, long align, long grain, k_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (k_pool_size(p) == 1 || n < 2 * grain) {
        fn(ctx, 0, n);
        return;
    }
    pool_for_t a = {n, align, fn, ctx};
    k_pool_run(p, pool_for_task, &a);
}
