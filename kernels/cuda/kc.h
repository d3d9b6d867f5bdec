/* kc.h - the CUDA kernels the GPU forward pass is written against.
 *
 * A C interface (the .cu files implement it with C linkage) so that the
 * engine, written in C, never includes a CUDA header. Pointers named d_*
 * are device memory. Everything runs in order on one CUDA stream that
 * kc_init creates, so a caller that needs results on the host only has
 * to call kc_download (which synchronises).
 *
 * Errors: every CUDA call and every kernel launch is checked. A failing
 * function returns -1 (or NULL) and leaves one line in kc_error(); the
 * first error sticks until kc_clear_error(), so a sequence of launches can
 * be checked once at the end without losing the cause.
 *
 * Nothing here knows about requests, sequences or files: shapes, device
 * pointers and a paged K/V layout described by plain integers.
 */
#ifndef KC_H
#define KC_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "../k_sq.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device, memory, errors (kc_core.cu) ---------------------------------- */

/* Selects device `ordinal`, creates the stream and the cuBLAS handle.
 * Fails with a clear message when there is no driver, no device, or the
 * device is older than the code this binary carries (sm_90). */
int kc_init(int ordinal);
void kc_shutdown(void);
const char *kc_device_name(void);       /* "NVIDIA H100 80GB HBM3" */
double kc_mem_bandwidth_gbs(void);      /* theoretical peak from the device attributes */
const char *kc_error(void);
void kc_clear_error(void);

void *kc_malloc(size_t bytes);          /* NULL on failure (kc_error says why) */
void kc_free(void *d);
int kc_upload(void *d_dst, const void *src, size_t bytes);
int kc_download(void *dst, const void *d_src, size_t bytes);
/* Page-locks host memory that downloads land in (cudaHostRegister): the
 * copy engine then writes it directly, about twice the rate of pageable
 * memory. 0, or -1 when the driver refuses (the memory stays pageable and
 * works as before; no error is left behind). kc_host_unpin before free. */
int kc_host_pin(void *p, size_t bytes);
void kc_host_unpin(void *p); /* synchronises */
int kc_memset(void *d, int byte, size_t bytes);
int kc_copy(void *d_dst, const void *d_src, size_t bytes); /* device to device, on the stream */
int kc_sync(void);                      /* waits for the stream; reports async errors */
void *kc_stream(void);                  /* the cudaStream_t, for the .cu files */

/* Wall time of the stream between two markers (CUDA events), for benchmarks. */
typedef struct kc_timer kc_timer_t;
kc_timer_t *kc_timer_start(void);
double kc_timer_stop_ms(kc_timer_t *t); /* synchronises, frees t; < 0 on error */

/* CUDA graphs: the work issued on the stream between kc_graph_begin and
 * kc_graph_end is recorded, not run, and kc_graph_launch replays it. Only
 * kernels whose inputs sit in device buffers belong inside (no transfers,
 * no synchronisation, no allocation). kc_graph_end returns NULL when the
 * capture failed (kc_error says why); the stream is usable again then. */
typedef struct kc_graph kc_graph_t;
int kc_graph_begin(void);
kc_graph_t *kc_graph_end(void);
int kc_graph_launch(kc_graph_t *g);
void kc_graph_free(kc_graph_t *g);

/* ---- dense FP32 matmul through cuBLAS (kc_core.cu) ------------------------ */

/* d_y[m][n] = d_x[m][k] . d_w[n][k]^T in FP32 (TF32 off: same math as the
 * CPU path up to summation order). */
int kc_gemm_f32(const float *d_w, long n, long k, const float *d_x, long m, float *d_y);

/* ---- transformer ops (kc_ops.cu; the ones fused with quantization: kc_quant.cu) */

/* out[i] = table[tok[i]] for i < n; table is [n_vocab][dim] FP32. */
int kc_embed(float *d_out, const float *d_table, const int32_t *d_tok, int n, int dim);
/* out[i] = x[i] / rms(x[i]) * w, rows of dim. */
int kc_rmsnorm(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps);
/* llama.cpp "normal" RoPE in place on n rows of n_heads heads (row stride
 * n_heads * head_dim): pairs (2i, 2i+1) of the first rot_dim values. */
int kc_rope(float *d_x, const int32_t *d_pos, int n, int n_heads, int head_dim, int rot_dim,
            const float *d_inv_freq);
int kc_silu_mul(float *d_g, const float *d_u, long count);  /* g = silu(g) * u */
/* The same two ops, each followed by the per-token INT8 quantization of
 * its output rows into d_qx [n][dim] / d_sx [n], bit-identical to running
 * kc_quant_i8 after them: one launch instead of two before an SQ matmul. */
int kc_rmsnorm_q8(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                  int8_t *d_qx, float *d_sx);
int kc_silu_mul_q8(float *d_g, const float *d_u, int n, int dim, int8_t *d_qx, float *d_sx);
/* kc_rmsnorm_q8 with the sum of squares added in the order the norm split
 * over the matmuls uses (kc_sq_matmul_ns): what that split computes, bit
 * for bit; the plain kernel differs from it by the rounding of that sum */
int kc_rmsnorm_q8_canon(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                        int8_t *d_qx, float *d_sx);
int kc_add(float *d_y, const float *d_x, long count);       /* y += x */

/* Per-token symmetric fake quantization in place, as the CPU activation
 * hook does it: with d_mask NULL every element at `bits`; with a mask
 * ([dim] bytes) the elements where mask = 1 at bits_hi and the others at
 * bits (each class with its own scale max|x| / (2^(bits-1) - 1)). */
int kc_fake_quant(float *d_x, int n, int dim, const uint8_t *d_mask, int bits_hi, int bits);
/* Fills count floats with value, or (scale > 0) with uniform values in
 * [-scale, scale) from a counter hash of seed (synthetic models). */
int kc_fill(float *d_x, size_t count, float value, float scale, uint64_t seed);

/* Paged K/V: the cache is [block][layer][block_size][kv_dim] floats. Row i
 * of a batch has position pos[i] and reads its sequence's block ids from
 * blk[blk_off[i] ...]. kc_kv_store writes row i's k/v at pos[i]. */
typedef struct {
    float *d_k, *d_v;
    int n_layer, kv_dim, block_size;
} kc_kv_t;
int kc_kv_store(const kc_kv_t *kv, int layer, const float *d_k, const float *d_v, int n,
                const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off);
/* kc_rope on q (n_head heads) and on k (n_head_kv), then kc_kv_store: one
 * launch, the same numbers (k is left rotated in d_k too). */
int kc_rope_kv_store(float *d_q, float *d_k, const float *d_v, int n, int n_head, int n_head_kv, int head_dim,
                     int rot_dim, const float *d_inv_freq, const kc_kv_t *kv, int layer, const int32_t *d_pos,
                     const int32_t *d_blk, const int32_t *d_blk_off);
/* Row i's rot_dim / 2 RoPE (cos, sin) pairs at position pos[i] into
 * d_cs [n][rot_dim / 2][2], as kc_rope computes them: the table
 * kc_sq_matmul_qkv_rope reads. */
int kc_rope_table(float *d_cs, const int32_t *d_pos, int n, int rot_dim, const float *d_inv_freq);
/* out[i][h] = softmax(q[i][h] . K[0..pos[i]]^T * scale) . V over row i's
 * sequence, grouped-query (n_head / n_head_kv query heads per kv head).
 * prefill != 0 asks for a tiled kernel, worth it when the batch holds runs
 * of rows of the same sequence (prompt chunks): by default the tensor-core
 * one (kc_attn_tc.cu: Q, K, V and the probabilities rounded to TF32, FP32
 * sums), else the FP32 one (kc_attn.cu), whose result equals the rows
 * kernel's up to float summation order. */
int kc_attention(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n,
                 const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off,
                 int n_head, int n_head_kv, int head_dim, int max_pos, int prefill);
/* The rows (decode) kernel, which also writes each (row, head)'s max |out|
 * to d_hmax [n][n_head]: the slots kc_sq_matmul_acc_h reads, so the o
 * matmul quantizes the attention output itself (bit for bit kc_quant_i8's
 * codes, without its launch; KC_SQ_ATTQ=1 in the backend) */
int kc_attention_max(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n, const int32_t *d_pos,
                     const int32_t *d_blk, const int32_t *d_blk_off, int n_head, int n_head_kv, int head_dim,
                     int max_pos, float *d_hmax);
void kc_sq_set_attq(int on); /* KC_SQ_ATTQ from a test: 1 on, 0 off, -1 back to the environment */
int kc_sq_attq_on(void);
/* tiled prefill attention on the tensor cores: 1 yes, 0 the FP32 tiles,
 * < 0 the default (yes unless KC_ATTN_TC=0 in the environment) */
void kc_attn_set_tensor_cores(int on);
/* decode rows: blocks a (row, head)'s positions are split over (1: none;
 * 0: the default, about two blocks per SM from the batch shape, at most 16;
 * -1: KC_ATTN_SPLIT from the environment, else the default) */
void kc_attn_set_split(int n_split);
/* decode rows: 1 a block serves all query heads of a K/V head (each K/V
 * row read once for them; the default), 0 a block per query head, < 0
 * KC_ATTN_GQA from the environment (0: off), else the default */
void kc_attn_set_gqa(int on);

/* ---- SQ-format weights (kc_sq.cu, kc_sq_mm.cu) ----------------------------------------- */

/* An SQ matrix in device memory, repacked from the host layout (k_sq.h)
 * into the layout the GPU kernels read (kc_sq.cuh documents it). */
typedef struct kc_sq kc_sq_t;
kc_sq_t *kc_sq_upload(const k_sq_t *w);
/* A valid random SQ matrix generated on the device (synthetic benchmarks). */
kc_sq_t *kc_sq_random(long n, long k, int h_low, int b, int h, uint64_t seed);
void kc_sq_free(kc_sq_t *w);
size_t kc_sq_bytes(const kc_sq_t *w);   /* device bytes one matmul must read */
/* Per-token INT8 quantization, identical to k_quant_row_i8 (sx = max|x| /
 * 127, q = round-half-even(x / sx) clamped to +-127): d_qx[m][k], d_sx[m]. */
int kc_quant_i8(const float *d_x, long m, long k, int8_t *d_qx, float *d_sx);
/* d_y[i][r] = sx[i] * sum_g (s_lo[r][g] * lo_g + s_hi[r][g] * hi_g), the
 * k_sq.h contract, with exact integer group sums. */
int kc_sq_matmul(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y);
/* Added with the SQ kernels: */
/* kc_sq_random with flags; KC_SQ_F16_SCALES draws scales that are exact
 * halves, so the 16-bit-scale layout applies (5.5 instead of 6.0 bits per
 * weight at 8/4 b64 s0.875 in the compact layout, 6.5 instead of 7 in the
 * explicit one). kc_sq_random is flags 0 (float scales, like sq_quantize's). */
#define KC_SQ_F16_SCALES 1
/* ... and KC_SQ_INT_SCALES integer bank scales (a row scale with a 6-bit
 * mantissa, each group's low scale 1..127/qmax times it, 18 for 4-bit
 * codes: kc_sq_iscale holds, bar 2-bit codes, which have no INT8 path) */
#define KC_SQ_INT_SCALES 4
kc_sq_t *kc_sq_random_ex(long n, long k, int h_low, int b, int h, uint64_t seed, int flags);
/* The same matrix as kc_sq_random_ex(n, k, h_low, b, h, seed, flags), made
 * on the host in the k_sq.h layout (arrays sized as sq_alloc sizes them;
 * lo is overwritten whole). For tests. */
int kc_sq_random_host(long n, long k, int h_low, int b, int h, uint64_t seed, int flags, uint8_t *lo,
                      int8_t *hi, uint8_t *idx, float *s_lo, float *s_hi);
/* One line on the layout chosen: path (compact/fast/generic), scale width, bits per weight. */
const char *kc_sq_describe(const kc_sq_t *w);
/* Added with the compact layout (kc_sq.cuh documents it; 5.5 bits per weight
 * at 8/4 b64 s0.875 with half scales, 6.0 with float ones): kc_sq_upload and
 * kc_sq_random(_ex) take it by themselves where it applies. Flags: */
#define KC_SQ_NO_COMPACT 2 /* kc_sq_random_ex: the older explicit-slot layout (benchmarks, tests) */
/* kc_sq_upload with flags (KC_SQ_NO_COMPACT); kc_sq_upload is flags 0. */
kc_sq_t *kc_sq_upload_ex(const k_sq_t *w, int flags);

/* Fused matrices: several SQ matrices that read the same activations
 * (q/k/v, gate/up) as ONE device matrix holding their rows one after the
 * other, so that one launch (one stream-k pass over all their bytes) computes
 * all of them. The parts must have the same k, h_low, b, h and device layout
 * (kc_sq_describe), and every part but the last a multiple of 16 rows. The
 * parts are copied (device to device): free them afterwards if they are no
 * longer needed. NULL (kc_error says why) if they do not fit together. */
#define KC_SQ_MAX_PARTS 4
kc_sq_t *kc_sq_fuse(const kc_sq_t *const *parts, int count);
int kc_sq_parts(const kc_sq_t *w);                  /* 1 for an ordinary matrix */
long kc_sq_part_rows(const kc_sq_t *w, int part);
/* The fused matmul: part p's rows go to d_y[p] ([m][n_p], as kc_sq_matmul
 * writes them), with the same numbers as kc_sq_matmul on each part alone.
 * kc_sq_matmul on a fused matrix writes [m][n_total] (all parts side by side). */
int kc_sq_matmul_parts(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *const *d_y);

/* ---- uniform integer weights: the W8A8 and W4A8 baselines (kc_int.cu) ---------------- */

/* A k_sq_new_int view (h = 0) on the device in its own row-major layout,
 * nothing stored but the codes and their scales: 8-bit codes with one scale
 * a row (`int8`) or 4-bit codes in groups of 64 (`int4:g64`), k a multiple
 * of 64; scales as half where every one is exactly a half. NULL (kc_error
 * says why) for any other view. The matmul has kc_sq_matmul's contract
 * (per-token INT8 activations, exact integer sums; 8-bit: the CPU's bits). */
typedef struct kc_int kc_int_t;
kc_int_t *kc_int_upload(const k_sq_t *w);
/* random codes and half scales on the device (synthetic models): bits 4 (g64) or 8 (a scale a row) */
kc_int_t *kc_int_random(long n, long k, int bits, uint64_t seed);
/* the matrix back as int8 codes [n][k] and float scales [n][k/g] (tests) */
int kc_int_download(const kc_int_t *w, int8_t *codes, float *scales);
void kc_int_free(kc_int_t *w);
size_t kc_int_bytes(const kc_int_t *w);
const char *kc_int_describe(const kc_int_t *w);
int kc_int_matmul(const kc_int_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y);
/* y += x W^T in the GEMV's epilogue, where kc_int_acc_applies (m <= the GEMV limit, one part) */
int kc_int_acc_applies(const kc_int_t *w, long m);
int kc_int_matmul_acc(const kc_int_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y);
/* q/k/v, gate/up as one matrix (the parts copied; same k, bits, scale type) and its matmul into parts */
kc_int_t *kc_int_fuse(const kc_int_t *const *parts, int count);
int kc_int_parts(const kc_int_t *w);
int kc_int_matmul_parts(const kc_int_t *w, const int8_t *d_qx, const float *d_sx, long m, float *const *d_y);
/* Static SQ activations on the integer kernels (the paper's Hopper mapping:
 * the high and the low channels as two INT8 rows through one matmul).
 * The quantization kernels are in kc_quant.cu, the matmuls in kc_int.cu.
 * kc_quant_static_i8: token t's channels with mask 1 -> d_q2 row 2t at
 * hi_bits, the others -> row 2t + 1 at lo_bits, d_sx2[2t], d_sx2[2t + 1] their
 * scales; k_quant_row_static's codes and scales bit for bit. Then a matmul
 * of the 2m rows into y2, and kc_add_pairs: y[t] = y2[2t] + y2[2t + 1]. */
int kc_quant_static_i8(const float *d_x, long m, long k, const uint8_t *d_mask, int hi_bits, int lo_bits,
                       int8_t *d_q2, float *d_sx2);
int kc_add_pairs(float *d_y, const float *d_y2, long m, long n);
/* The same quantization fused into the op that produces the row (one launch
 * instead of two; out / g as kc_rmsnorm / kc_silu_mul give them, the codes
 * and scales as kc_quant_static_i8 gives them, bit for bit). */
int kc_rmsnorm_qs(float *d_out, const float *d_x, const float *d_w, int n, int dim, float eps,
                  const uint8_t *d_mask, int hi_bits, int lo_bits, int8_t *d_q2, float *d_sx2);
int kc_silu_mul_qs(float *d_g, const float *d_u, int n, int dim, const uint8_t *d_mask, int hi_bits, int lo_bits,
                   int8_t *d_q2, float *d_sx2);
/* Where the 2m rows fit the GEMV (kc_int_pairs_applies), the matmul of the
 * pairs with y[t] = y2[2t] + y2[2t + 1] in its epilogue (acc: y += that;
 * one part only): kc_int_matmul + kc_add_pairs (+ kc_add) bit for bit.
 * d_y: one output per part. */
int kc_int_pairs_applies(const kc_int_t *w, long m);
int kc_int_matmul_pairs(const kc_int_t *w, const int8_t *d_q2, const float *d_sx2, long m, float *const *d_y, int acc);
/* the most tokens the CUDA-core GEMV takes for w (KC_INT_GEMV_M, default 16
 * for 4-bit codes, 8 for 8-bit); more: the tensor cores */
long kc_int_gemv_max(const kc_int_t *w);
void kc_int_set_gemv_max(long m); /* -1: the environment / default again */

/* ---- GGUF weights (kc_gguf.cu) -------------------------------------------------- */

/* A GGUF matrix W[n][k] on the device: Q4_0, Q4_1, Q8_0, Q4_K and Q6_K in
 * their blocks (repacked for aligned loads, the file's bytes), every other
 * type the CPU dequantizes (F32, F16, BF16, Q5_0, Q5_1, Q5_K) in 16 bits
 * (F16/BF16 as stored; the others as FP16, or BF16 where a value exceeds
 * FP16's range). rows: the host rows, row_bytes apart. NULL (kc_error says
 * why) for a type or row length it does not take. */
typedef struct kc_gguf kc_gguf_t;
kc_gguf_t *kc_gguf_upload(uint32_t type, long n, long k, const void *rows, size_t row_bytes);
void kc_gguf_free(kc_gguf_t *w);
size_t kc_gguf_bytes(const kc_gguf_t *w);        /* device bytes of the weights */
const char *kc_gguf_describe(const kc_gguf_t *w); /* "Q4_K blocks", "Q5_K as FP16", ... */
int kc_gguf_native(uint32_t type);                /* 1: stays in its blocks */
/* d_y[m][n] = d_x[m][k] . W^T, FP32 in and out: a dequantizing GEMV (FP32
 * sums) up to kc_gguf_gemv_max(w) rows, else the weights expanded to 16 bits
 * a slice at a time and cuBLAS's tensor-core GEMM (FP32 sums). */
int kc_gguf_matmul(const kc_gguf_t *w, const float *d_x, long m, float *d_y);
/* the same with the path forced: 1 GEMV, 2 expansion + GEMM, 0 by m (tests, benchmarks) */
int kc_gguf_matmul_path(const kc_gguf_t *w, const float *d_x, long m, float *d_y, int path);
/* the GEMV's largest m for w: 8 (Q4_0/Q4_1: 4), or KC_GGUF_GEMV_M from the
 * environment, or what kc_gguf_set_gemv_max set (for every type) */
long kc_gguf_gemv_max(const kc_gguf_t *w);
void kc_gguf_set_gemv_max(long m);    /* < 0: back to the default */
/* Rows [r0, r0 + rows) as FP32, the CPU's k_dequant_row values bit for bit
 * (16-bit storage: its values widened), into d_out [rows][k]. */
int kc_gguf_dequant(const kc_gguf_t *w, long r0, long rows, float *d_out);
/* Embedding lookup: d_out[i] = row d_tok[i] as kc_gguf_dequant gives it. */
int kc_gguf_embed(float *d_out, const kc_gguf_t *w, const int32_t *d_tok, int n);

/* ---- profile (kc_prof.cu) ----------------------------------------------------- */

/* Device time per named operation, on when SQSERVE_CUDA_PROFILE is set:
 * push/pop bracket an operation (not nested; `name` must outlive the
 * report), kc_prof_report prints the table (largest first) and resets it. */
int kc_prof_enabled(void);
void kc_prof_push(const char *name);
void kc_prof_pop(void);
int kc_prof_report(FILE *out);
/* cudaProfilerStart (on) or cudaProfilerStop (off): the work between them
 * is what `ncu --profile-from-start off` profiles (tests/gpu/profile.sh) */
int kc_profiler_range(int on);

/* Many tokens: from M = kc_sq_twostep_min() on, kc_sq_matmul(_parts)
 * expands the weights into FP16 and runs cuBLAS's tensor-core GEMM
 * (kc_sq_gemm.cu: FP16 rounding of the weights, INT8 activations exact,
 * FP32 sums, the token scale applied to the output). Default from the measured crossover, KC_SQ_TWOSTEP_M in the
 * environment or kc_sq_set_twostep_min overrides it; 0 turns it off. */
long kc_sq_twostep_min(void);
void kc_sq_set_twostep_min(long m); /* < 0: back to the default */
/* Matrices with integer bank scales (kc_sq_iscale: sq_quant.h's :iscale,
 * found by kc_sq_upload in the scales themselves) take, from M =
 * kc_sq_i8_min() tokens on, an exact INT8 path instead: the weights
 * expanded to their INT8 values (k_g * lo or hi), cuBLAS INT8 x INT8 ->
 * INT32 over the whole row, y = (s_row * acc) * sx. KC_SQ_I8_M or
 * kc_sq_set_i8_min overrides the measured default; 0 turns it off (the FP16
 * path or the fused kernels then take those M, as for any SQ matrix). */
long kc_sq_i8_min(void);
void kc_sq_set_i8_min(long m); /* < 0: back to the default */
int kc_sq_iscale(const kc_sq_t *w);
/* Below that, from kc_sq_isdec_min(w) tokens to 64, they run the fused
 * decode kernel with INT32 sums over the row (kc_sq_mm.cu; the measured
 * start depends on the matrix's size); KC_SQ_ISDEC or kc_sq_set_isdec_min
 * overrides it for every matrix, 0 keeps the float combination. */
long kc_sq_isdec_min(const kc_sq_t *w);
void kc_sq_set_isdec_min(long m); /* < 0: back to the default */
/* On sm_90a, from kc_sq_wg_min(w) to kc_sq_wg_max(w) tokens, those
 * matrices (explicit fast layout) run one wgmma kernel instead, the weights
 * decoded in registers and never written out (kc_sq_wg.cu); it comes
 * before the two paths above. The measured default depends on the matrix's
 * size; KC_SQ_WG_MIN / KC_SQ_WG_MAX or kc_sq_set_wg set one range for every
 * matrix (either alone: the other bound open; < 0: back to the default;
 * min 0 turns it off); its ring of KC_SQ_WG_STAGES stages (4, 6, 8) and
 * its grid (KC_SQ_WG_SPLIT: 1 stream-k, 0 a block a tile) by
 * kc_sq_set_wg_ring (< 0: the default). */
long kc_sq_wg_min(const kc_sq_t *w);
long kc_sq_wg_max(const kc_sq_t *w);
void kc_sq_set_wg(long lo, long hi);
long kc_sq_wg_stages(void);
long kc_sq_wg_split(void);
void kc_sq_set_wg_ring(long stages, long split);
long kc_sq_wg_count(void); /* its launches so far (the tests check it ran) */
/* From 9 tokens the fast layout's stream-k decode kernel copies each item
 * (weight unit and activations) with cp.async into a ring of this many
 * stages in shared memory (2..4); 0 keeps the kernel that loads them into
 * registers. KC_SQ_DEC_STAGES sets the default; for tests and benchmarks,
 * kc_sq_set_dec_stages (< 0: back to the default). */
long kc_sq_dec_stages(void);
void kc_sq_set_dec_stages(long s);
/* The INT8 GEMMs of those paths and of W8A8 (kc_int, float scales) run as
 * one CUTLASS kernel with both scales in its epilogue (kc_i8_gemm.cu) where
 * the operands suit TMA, else cuBLAS INT8 -> INT32 and a scale pass (same
 * bits). KC_I8_FUSED=0 or kc_i8_gemm_set(0) keeps cuBLAS (benchmarks). */
int kc_i8_gemm_on(void);
void kc_i8_gemm_set(int on);
long kc_i8_gemm_count(void); /* how many ran as the fused kernel (tests) */
int kc_sm90a(void);           /* 1 on compute capability 9.0, where sm_90a code (that kernel) runs */

/* One to four tokens: up to M = kc_sq_gemv_max() tokens, kc_sq_matmul(_parts)
 * on the compact or the explicit fast layout runs the dp4a kernel of kc_sq_gemv.cu (exact
 * integer group sums, like the mma kernels) instead of k_sq_dec. Default
 * from bench_gemm on the H200; KC_SQ_GEMV in the environment or
 * kc_sq_set_gemv_max overrides it (0 turns it off, at most 4). */
int kc_sq_gemv_max(void);
void kc_sq_set_gemv_max(int m); /* < 0: back to the default */
/* Whether the dp4a kernel stages its weight stream through shared memory
 * (cp.async) or holds it in registers; KC_SQ_GEMV_STAGE sets the default.
 * For tests and benchmarks: 0 or 1, < 0 back to the default. */
void kc_sq_set_gemv_stage(int on);
/* d_y += x . W^T with the add in the dp4a kernel's epilogue (the residual
 * connections of a decode step: one launch instead of a matmul and a
 * kc_add, with the same numbers). Only where kc_sq_acc_applies(w, m): a
 * matrix of one part on the path above; -1 otherwise. */
int kc_sq_acc_applies(const kc_sq_t *w, long m);
int kc_sq_matmul_acc(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y);
/* kc_sq_matmul_parts on a fused q/k/v matrix (parts q [n_head x head_dim],
 * k and v [kv_dim]), then what kc_rope_kv_store computes, in the dp4a
 * matmul's epilogue (kc_sq_gemv.cu): RoPE on q and k with the angles of
 * d_cs (kc_rope_table), k and v into the cache, bit for bit. On unless
 * KC_SQ_ROPE=0 (8B decode 1.06x at batch 1 on the H200). Returns 1 when
 * it did both, 0 when it ran the matmul alone (the caller runs
 * kc_rope_kv_store), -1 on error. */
typedef struct {
    const float *d_cs;
    const int32_t *d_pos, *d_blk, *d_blk_off;
    kc_kv_t kv;
    int layer, head_dim, rot_dim;
} kc_rope_t;
int kc_sq_matmul_qkv_rope(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *const *d_y,
                          const kc_rope_t *r);
/* KC_SQ_ROPE's setting from a test: 1 on, 0 off, -1 back to the environment */
void kc_sq_set_rope(int on);
int kc_sq_rope_on(void);
/* SwiGLU between a decode step's gate/up and down matmuls, done by the two
 * dp4a launches (kc_sq_gemv.cu): kc_sq_matmul_swiglu runs the fused gate/up
 * matrix (two parts of equal rows) and writes h = silu(gate) * up into d_h
 * (m x rows, what kc_silu_mul_q8 leaves in its g) and each block's max |h|
 * per token into d_hmax (kc_sq_swiglu_slots(gu) floats), *nslot of them;
 * kc_sq_matmul_acc_h then adds h . down^T to d_y, quantizing h to INT8 as
 * it reads it at kc_quant_i8's scale (the max of the slots). Together, bit
 * for bit kc_sq_matmul_parts + kc_silu_mul_q8 + kc_sq_matmul_acc, without
 * the SwiGLU launch between them. kc_sq_matmul_swiglu only where
 * kc_sq_swiglu_applies (off unless KC_SQ_SWIGLU=1: measured slower than
 * the three launches on the H200, docs/perf-gpu.md); -1 with an error
 * otherwise. The gate/up input is INT8 rows (d_qx, d_sx), or with ns_in
 * the norm's row d_x (below). kc_sq_matmul_acc_h takes
 * any float rows with their slots' maxima (also the attention output with
 * kc_attention_max's, nslot = n_head) where kc_sq_gemv_mode_applies(w, m,
 * KC_GEMV_ACTS_H); with ns_out it also leaves the next norm's slots. */
int kc_sq_swiglu_applies(const kc_sq_t *gate_up, const kc_sq_t *down, long m);
int kc_sq_swiglu_applies_ex(const kc_sq_t *gate_up, const kc_sq_t *down, long m, int norm_in, int norm_out);
long kc_sq_swiglu_slots(const kc_sq_t *gate_up);
/* RMSNorm split over the dp4a launches around it (KC_SQ_NORM=1; not yet
 * measured on a GPU). A residual matmul (y += x W^T: the o and down
 * projections) leaves, for each 16 rows of the new y and each token, the
 * rows' sum of squares and the candidates for the largest |y w| in d_ss /
 * d_cand; the next matmul (q/k/v or gate/up) reads the row y itself,
 * finishes RMSNorm(y) * w from the slots and quantizes it to INT8 as it
 * copies it: kc_rmsnorm_q8_canon's numbers, bit for bit, without the norm's
 * launch. One or two tokens. */
typedef struct {
    const float *d_w; /* the norm's weights [dim] */
    float eps;
    double *d_ss;     /* [m][kc_norm_split_tiles(dim)] */
    float *d_cand;    /* [m][kc_norm_split_tiles(dim)][4] */
} kc_norm_split_t;
long kc_norm_split_tiles(long dim);
void kc_sq_set_norm(int on); /* 1 on, 0 off, -1 back to KC_SQ_NORM */
int kc_sq_norm_on(void);
/* The staged dp4a kernel's modes: its input (INT8 rows, SwiGLU's float h,
 * the norm's row) and its tile end (the store, SwiGLU's pairs, the store
 * and the norm's slots), or-ed; kc_sq_gemv_mode_applies says whether w at
 * m tokens runs in that mode (its switches on, the kernel fitting). */
enum { KC_GEMV_ACTS_H = 1, KC_GEMV_ACTS_NORM = 2, KC_GEMV_END_PAIRS = 4, KC_GEMV_END_NORM = 8 };
int kc_sq_gemv_mode_applies(const kc_sq_t *w, long m, int mode);
int kc_sq_matmul_swiglu(const kc_sq_t *gate_up, const kc_sq_t *down, const int8_t *d_qx, const float *d_sx,
                        const float *d_x, const kc_norm_split_t *ns_in, long m, float *d_h, float *d_hmax,
                        long hmax_floats, int *nslot);
int kc_sq_matmul_acc_h(const kc_sq_t *down, const float *d_h, const float *d_hmax, int nslot, long m, float *d_y,
                       const kc_norm_split_t *ns_out);
/* d_y += x . W^T (kc_sq_matmul_acc), leaving the next norm's slots */
int kc_sq_matmul_acc_ns(const kc_sq_t *w, const int8_t *d_qx, const float *d_sx, long m, float *d_y,
                        const kc_norm_split_t *ns_out);
/* kc_sq_matmul_parts on RMSNorm(d_x) * w from the slots; with r (a fused
 * q/k/v) RoPE and the K/V store as kc_sq_matmul_qkv_rope does them.
 * Returns 1 when it did RoPE, 0 when not, -1 on error. */
int kc_sq_matmul_parts_ns(const kc_sq_t *w, const float *d_x, const kc_norm_split_t *ns_in, long m,
                          float *const *d_y, const kc_rope_t *r);
/* For tests: at most `cap` blocks in a dp4a launch (0: no cap), so blocks
 * take many tiles; the results do not depend on it */
void kc_sq_set_gemv_grid(long cap);
/* KC_SQ_SWIGLU's setting from a test: 1 on, 0 off, -1 back to the environment */
void kc_sq_set_swiglu(int on);
int kc_sq_swiglu_on(void);
/* The two-step paths' slice (kc_sq_gemm.cu) from a test: `weights` FP16
 * weights (twice as many INT8 ones) instead of 128 Mi; 0 for the default */
void kc_sq_set_slice(long weights);

#ifdef __cplusplus
}
#endif

#endif
