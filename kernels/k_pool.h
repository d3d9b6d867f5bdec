/* k_pool.h - a fork-join thread pool for data-parallel kernels.
 *
 * k_pool_run(fn) calls fn(ctx, ith, nth) on every thread (the caller is
 * thread 0) and returns when all are done. A forward pass issues a few
 * hundred of these per token, so idle workers spin briefly on an atomic
 * generation counter before sleeping on a condition variable: dispatch
 * costs ~1 us while busy, and an idle server burns no CPU.
 */
#ifndef K_POOL_H
#define K_POOL_H

typedef struct k_pool k_pool_t;
typedef void (*k_task_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1; returns NULL on failure. */
k_pool_t *k_pool_new(int n_threads);
void k_pool_free(k_pool_t *p);
int k_pool_size(const k_pool_t *p);
void k_pool_run(k_pool_t *p, k_task_fn fn, void *ctx);

/* fn(ctx, begin, end) over [0, n), split as k_split does among the pool's
 * threads; on the calling thread alone when n < 2 * grain, where the
 * dispatch (~1 us) would cost more than the split saves. For the row-wise
 * steps between matmuls (norms, SwiGLU, RoPE, residual adds): over a prompt
 * they no longer leave the other threads waiting; at one token they stay
 * serial unless the row itself is long (a 70B model's SwiGLU, 28672 values). */
typedef void (*k_range_fn)(void *ctx, long begin, long end);
/* rows of `width` floats a thread takes at least: ~8K values, a few us */
#define K_ROWS_GRAIN(width) ((width) >= 8192 ? 1 : 8192 / (width))
void k_pool_for(k_pool_t *p, long n, long align, long grain, k_range_fn fn, void *ctx);

/* Splits [0, n) into nth near-equal ranges, multiples of `align`. */
void k_split(long n, int ith, int nth, long align, long *begin, long *end);

#endif
