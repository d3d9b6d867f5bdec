/* kc_attn.cu - attention over the paged K/V cache (kc.h).
 *
 * Two kernels, one result (up to float summation order):
 *
 * Rows (decode). One block per (batch row, query head), its warps splitting
 * the row's positions (ATT_U consecutive ones a warp at a time, their loads
 * issued together); each warp keeps an online-softmax state (running
 * max, running sum, and the weighted V sum spread over its lanes), and the
 * warps merge their states at the end. One pass over K and V, no score
 * buffer, any context length. Right when every row is its own sequence:
 * there is nothing to share between rows.
 *
 * Tiles (prefill). When a batch holds runs of rows of one sequence (a
 * prompt chunk), the rows kernel reads every K/V row once per query row
 * and head: at 2048 prompt tokens that is ~70 GB of L2 traffic per layer of
 * an 8B model. The tiled kernel gives a block up to 64 query vectors (R
 * consecutive rows x the `group` query heads that share one K/V head) and
 * streams the sequence's K/V through shared memory 32 positions at a time,
 * FlashAttention style: scores, a causal mask by position, the online
 * softmax and the V sum per tile, so each K/V row is read once per block.
 * Four threads serve one query vector: for the scores each takes 8 of the
 * tile's 32 positions over the whole head, for the V sum a quarter of the
 * head's dimensions; the probabilities travel between them by shuffles.
 * FP32 on the CUDA cores (the K/V cache is FP32). A block whose rows
 * belong to several sequences (a chunk boundary) runs one segment per
 * sequence. The caller picks the kernel (kc_attention's `prefill`);
 * KC_ATTN_TILES=0 in the environment keeps the rows kernel (measurements).
 * The same tiles run on the tensor cores by default (kc_attn_tc.cu); this
 * FP32 one serves head sizes that kernel does not take, KC_ATTN_TC=0 and
 * kc_attn_set_tensor_cores(0).
 */
#include "kc.h"
#include "kc_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATT_WARPS 8
#define ATT_U 4            /* positions a warp loads at once */
#define SPLIT_MIN 256      /* fewest positions a slice of a split row takes */
#define MAX_HD_PER_LANE 8 /* head_dim <= 256 */

/* Online softmax state of one warp and query head: m (max score), l (sum
 * of exp), and acc[j] for the lane's head dimensions j = lane + 32 * jj (PL
 * of them). A warp takes ATT_U consecutive positions at a time and issues
 * all their K and V loads (and block-table lookups) before the first score:
 * at batch 1 a block is one of a handful, so each round of dependent loads
 * is a memory latency on the step's critical path.
 *
 * Query heads sharing a K/V head (grouped-query attention). A block serves
 * G query heads of one K/V head, so each K/V row is read once for all G of
 * them (G = the group when it is 2, 4 or 8 and the state fits, else 1): with
 * one block per query head, a batch of 8 Llama-3-8B rows at 2048 positions
 * read 4 x 134 MB of K/V a layer, far more than L2 holds.
 *
 * Split positions (flash-decoding). At batch 1 there are only n_head / G
 * blocks (8 for Llama-3-8B) for 132 SMs: at a deep context one block walks
 * thousands of positions while most SMs idle. With n_split > 1 block
 * (row, heads, split) takes a 1/n_split slice of the row's positions and
 * writes each head's merged state (max, sum, unnormalised V sum) to
 * `part`; the block that finishes last (a ticket per (row, heads), reset by
 * that block) merges the n_split states into the output. No second launch;
 * a row shorter than 2 x SPLIT_MIN positions is not split at all (measured
 * on the H200: 8 slices at a 100-position context cost 7 % of a batch-1
 * step). */
/* With hmax, a warp that writes a head's outputs also writes their max |v|
 * to hmax[row][head] (fmaxf: NaN skipped, as kc_quant_i8 does), so the o
 * matmul after it can quantize the row itself (kc_sq_matmul_acc_h) */
__device__ __forceinline__ void head_max(float *at, float mx, int lane) {
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) *at = mx;
}

template <int PL, int G>
__global__ void __launch_bounds__(32 * ATT_WARPS) attention_kernel(float *out, const float *q, kc_kv_t kv, int layer,
                                                                   const int32_t *pos, const int32_t *blk,
                                                                   const int32_t *blk_off, int n_head, int group,
                                                                   int hd, float scale, int n_split, float *part,
                                                                   int *ticket, float *hmax) {
    kc_pdl_wait(); /* kc_launch_pdl: the predecessor's writes visible from here */
    kc_pdl_trigger();
    __shared__ float s_m[ATT_WARPS][G], s_l[ATT_WARPS][G];
    __shared__ float s_acc[ATT_WARPS][G][32 * PL];
    __shared__ int s_last;
    const int per_row = n_head / G, bg = blockIdx.x, i = bg / per_row, h0 = bg % per_row * G, g = h0 / group;
    const int split = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float qv[G][PL], acc[G][PL], m[G], l[G];
#pragma unroll
    for (int gh = 0; gh < G; gh++) {
        const float *qh = q + ((size_t)i * n_head + h0 + gh) * hd;
#pragma unroll
        for (int jj = 0; jj < PL; jj++) {
            const int j = lane + 32 * jj;
            qv[gh][jj] = j < hd ? qh[j] : 0.0f;
            acc[gh][jj] = 0.0f;
        }
        m[gh] = -FLT_MAX, l[gh] = 0.0f;
    }
    const int n_pos = pos[i] + 1, off = blk_off[i];
    /* the launch's n_split is fixed by the batch shape (a graph replays it at
     * every position); a short row uses fewer slices of at least SPLIT_MIN
     * positions (below that the merge costs more than the slice saves) and
     * the blocks of unused slices leave at once */
    n_split = min(n_split, (n_pos + SPLIT_MIN - 1) / SPLIT_MIN);
    if (split >= n_split) return;
    /* this block's positions: slices of whole warp rounds, the last one short */
    const int per = (n_pos + n_split * ATT_WARPS * ATT_U - 1) / (n_split * ATT_WARPS * ATT_U) * (ATT_WARPS * ATT_U);
    const int t_beg = split * per, t_end = min(n_pos, t_beg + per);
    for (int t0 = t_beg + warp * ATT_U; t0 < t_end; t0 += ATT_WARPS * ATT_U) {
        float kk[ATT_U][PL], vv[ATT_U][PL];
#pragma unroll
        for (int u = 0; u < ATT_U; u++) { /* clamped position and column: no branch between the loads */
            const int t = t0 + u < t_end ? t0 + u : t_end - 1;
            const size_t at = kv_row(kv, layer, blk, off, t) + (size_t)g * hd;
#pragma unroll
            for (int jj = 0; jj < PL; jj++) {
                const int j = lane + 32 * jj, jc = j < hd ? j : hd - 1;
                kk[u][jj] = kv.d_k[at + jc], vv[u][jj] = kv.d_v[at + jc];
            }
        }
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            if (t0 + u >= t_end) break;
            float s[G];
#pragma unroll
            for (int gh = 0; gh < G; gh++) {
                s[gh] = 0.0f;
#pragma unroll
                for (int jj = 0; jj < PL; jj++)
                    if (lane + 32 * jj < hd) s[gh] += qv[gh][jj] * kk[u][jj];
            }
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int gh = 0; gh < G; gh++) s[gh] += __shfl_xor_sync(0xffffffffu, s[gh], o);
#pragma unroll
            for (int gh = 0; gh < G; gh++) {
                const float sc = s[gh] * scale;
                const float m_new = fmaxf(m[gh], sc), corr = expf(m[gh] - m_new), p = expf(sc - m_new);
                l[gh] = l[gh] * corr + p;
#pragma unroll
                for (int jj = 0; jj < PL; jj++)
                    acc[gh][jj] = acc[gh][jj] * corr + (lane + 32 * jj < hd ? p * vv[u][jj] : 0.0f);
                m[gh] = m_new;
            }
        }
    }
#pragma unroll
    for (int gh = 0; gh < G; gh++) {
        if (lane == 0) s_m[warp][gh] = m[gh], s_l[warp][gh] = l[gh];
#pragma unroll
        for (int jj = 0; jj < PL; jj++) s_acc[warp][gh][lane + 32 * jj] = acc[gh][jj];
    }
    __syncthreads();
    /* warp gh merges head h0 + gh over the block's warps */
    if (warp < G) {
        const int gh = warp;
        float M = -FLT_MAX;
        for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, s_m[w][gh]);
        float L = 0.0f, cw[ATT_WARPS];
        for (int w = 0; w < ATT_WARPS; w++) {
            cw[w] = s_l[w][gh] > 0.0f ? expf(s_m[w][gh] - M) : 0.0f; /* a warp with no positions */
            L += s_l[w][gh] * cw[w];
        }
        const size_t head = (size_t)i * n_head + h0 + gh;
        float *dst = n_split == 1 ? out + head * hd : part + (head * n_split + split) * (hd + 2) + 2;
        float mx = 0.0f;
        for (int jj = 0; jj < PL; jj++) {
            const int j = lane + 32 * jj;
            if (j >= hd) continue;
            float a = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++) a += s_acc[w][gh][j] * cw[w];
            dst[j] = n_split == 1 ? a / L : a;
            mx = fmaxf(mx, fabsf(dst[j]));
        }
        if (n_split > 1 && lane == 0) dst[-2] = M, dst[-1] = L;
        if (n_split == 1 && hmax) head_max(hmax + head, mx, lane);
    }
    if (n_split == 1) return;
    __threadfence(); /* the states are visible before the ticket says so */
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(ticket + bg, 1) == n_split - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    if (warp < G) {
        const size_t head = (size_t)i * n_head + h0 + warp;
        const float *all = part + head * n_split * (hd + 2);
        float MM = -FLT_MAX, LL = 0.0f;
        for (int sp = 0; sp < n_split; sp++)
            if (__ldcg(all + sp * (hd + 2) + 1) > 0.0f) MM = fmaxf(MM, __ldcg(all + sp * (hd + 2)));
        for (int sp = 0; sp < n_split; sp++) {
            const float Ls = __ldcg(all + sp * (hd + 2) + 1);
            if (Ls > 0.0f) LL += Ls * expf(__ldcg(all + sp * (hd + 2)) - MM);
        }
        float mx = 0.0f;
        for (int jj = 0; jj < PL; jj++) {
            const int j = lane + 32 * jj;
            if (j >= hd) continue;
            float a = 0.0f;
            for (int sp = 0; sp < n_split; sp++) {
                const float *ps = all + sp * (hd + 2);
                const float Ls = __ldcg(ps + 1);
                if (Ls > 0.0f) a += __ldcg(ps + 2 + j) * expf(__ldcg(ps) - MM);
            }
            out[head * hd + j] = a / LL;
            mx = fmaxf(mx, fabsf(a / LL));
        }
        if (hmax) head_max(hmax + head, mx, lane);
    }
    if (threadIdx.x == 0) ticket[bg] = 0; /* ready for the next launch (graphs replay it) */
}

/* Partial states and tickets of split rows: a fixed allocation (kc_init),
 * since a launch captured into a CUDA graph must not allocate. */
#define SPLIT_STATES 1024 /* (row, block's heads, split) blocks a launch may split into */
/* the softmax states those blocks leave: one per query head, so up to the
 * largest group (8 query heads a block) times as many */
#define SPLIT_BUF_STATES (8 * SPLIT_STATES)
#define SPLIT_MAX 16
static float *g_part;
static int *g_ticket;
static int g_split = -1; /* kc_attn_set_split; -1: KC_ATTN_SPLIT or the default */
static int g_gqa = -1;   /* kc_attn_set_gqa: a block per K/V head's query heads (0: per query head; -1: KC_ATTN_GQA) */

extern "C" void kc_attn_set_gqa(int on) { g_gqa = on < 0 ? -1 : on != 0; }

static int gqa_on(void) {
    if (g_gqa < 0) {
        const char *e = getenv("KC_ATTN_GQA");
        g_gqa = !(e && !strcmp(e, "0"));
    }
    return g_gqa;
}

extern "C" int kc_attn_init(void) {
    if (kc_check(cudaMalloc(&g_part, (size_t)SPLIT_BUF_STATES * (32 * MAX_HD_PER_LANE + 2) * sizeof(float)),
                 "attention split states") ||
        kc_check(cudaMalloc(&g_ticket, SPLIT_STATES * sizeof(int)), "attention tickets") ||
        kc_check(cudaMemset(g_ticket, 0, SPLIT_STATES * sizeof(int)), "attention tickets"))
        return -1;
    return 0;
}

extern "C" void kc_attn_free(void) {
    cudaFree(g_part), cudaFree(g_ticket);
    g_part = NULL, g_ticket = NULL;
}

extern "C" void kc_attn_set_split(int n_split) { g_split = n_split; }

/* Splits a (row, head) of a decode launch: enough blocks for two per SM,
 * from the batch shape alone (a graph replays the launch at every
 * position), each split at least one warp round; rows_heads blocks leave
 * `states` softmax states a split (one per query head), which must fit the
 * buffer */
static int split_of(int rows_heads, long states) {
    if (g_split == -1) {
        const char *e = getenv("KC_ATTN_SPLIT");
        g_split = e && *e ? atoi(e) : 0;
    }
    int s = g_split > 0 ? g_split : (2 * kc_sm_count() + rows_heads - 1) / rows_heads;
    s = s < 1 ? 1 : s > SPLIT_MAX ? SPLIT_MAX : s;
    while (s > 1 && ((long)s * rows_heads > SPLIT_STATES || s * states > SPLIT_BUF_STATES)) s--;
    return g_part ? s : 1;
}

static int attention_rows(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n,
                            const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off,
                            int n_head, int n_head_kv, int head_dim, int max_pos, float *d_hmax) {
    (void)max_pos; /* one pass, no per-position buffer: any context length */
    if (n <= 0) return 0;
    if (head_dim > 32 * MAX_HD_PER_LANE || n_head % n_head_kv) {
        kc_set_error("attention: head_dim %d / heads %d:%d not supported on the GPU", head_dim,
                     n_head, n_head_kv);
        return -1;
    }
    const int per_lane = (head_dim + 31) / 32, group = n_head / n_head_kv;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int pl = per_lane <= 2 ? 2 : per_lane <= 4 ? 4 : MAX_HD_PER_LANE;
    /* a block's heads: the whole group when its state fits (G x PL <= 32:
     * 32 KB of merge buffer, ~130 registers), else one. Not for a single
     * row: its K/V (16 MB a layer for an 8B model at 2048 positions) stays
     * in L2 between the group's heads, and a block per query head gives the
     * split 4x the blocks (H200, depth 2048: 249 against 245 tok/s at batch
     * 1; at batch 8 the group's blocks win, 1116 against 807) */
    const int G = (group == 2 || group == 4 || group == 8) && group * pl <= 32 && gqa_on() && n > 1 ? group : 1;
    const int n_split = split_of(n * (n_head / G), (long)n * n_head);
#define ATT_LAUNCH(PL, GG)                                                                                     \
    kc_launch_pdl("attention", attention_kernel<PL, GG>, dim3((unsigned)(n * (n_head / GG)), (unsigned)n_split), \
                  32 * ATT_WARPS, 0, d_out, d_q, *kv, layer, d_pos, d_blk, d_blk_off, n_head, group, head_dim,  \
                  scale, n_split, g_part, g_ticket, d_hmax)
    switch (pl * 16 + G) {
    case 2 * 16 + 2: return ATT_LAUNCH(2, 2);
    case 2 * 16 + 4: return ATT_LAUNCH(2, 4);
    case 2 * 16 + 8: return ATT_LAUNCH(2, 8);
    case 4 * 16 + 2: return ATT_LAUNCH(4, 2);
    case 4 * 16 + 4: return ATT_LAUNCH(4, 4);
    case 4 * 16 + 8: return ATT_LAUNCH(4, 8);
    case 8 * 16 + 2: return ATT_LAUNCH(8, 2);
    case 8 * 16 + 4: return ATT_LAUNCH(8, 4);
    case 2 * 16 + 1: return ATT_LAUNCH(2, 1);
    case 4 * 16 + 1: return ATT_LAUNCH(4, 1);
    default: return ATT_LAUNCH(MAX_HD_PER_LANE, 1);
    }
#undef ATT_LAUNCH
}

/* ---- tiles (prefill) ------------------------------------------------------ */

#define PA_Q 64   /* query vectors a block */
#define PA_KT 32  /* positions a K/V tile */

/* DPT = head_dim / 4: the dimensions each of a query's four threads owns */
template <int DPT>
__global__ void __launch_bounds__(256) attention_tiles_kernel(float *out, const float *q, kc_kv_t kv, int layer,
                                                              int n, const int32_t *pos, const int32_t *blk,
                                                              const int32_t *blk_off, int n_head, int group,
                                                              int rows, float scale) {
    constexpr int HD = 4 * DPT, QS = HD + 4; /* padded Q/K row stride (floats): conflict-free float4 reads */
    extern __shared__ __align__(16) float sm[];
    float *Qs = sm, *Ks = Qs + PA_Q * QS, *Vs = Ks + PA_KT * QS;
    const int tid = threadIdx.x, qi = tid >> 2, quarter = tid & 3, lane = tid & 31;
    const int g = blockIdx.y, r0 = blockIdx.x * rows, rend = min(n, r0 + rows);
    const int my_row = r0 + qi / group, h = g * group + qi % group;
    const bool mine = qi < rows * group && my_row < rend;
    /* the block's query vectors */
    for (int e = tid; e < PA_Q * (HD / 4); e += 256) {
        const int v = e / (HD / 4), d4 = e % (HD / 4), row = r0 + v / group, hh = g * group + v % group;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (v < rows * group && row < rend) {
            x = *(const float4 *)(q + ((size_t)row * n_head + hh) * HD + 4 * d4);
        }
        *(float4 *)(Qs + v * QS + 4 * d4) = x;
    }
    const int my_pos = mine ? pos[my_row] : -1;
    for (int s0 = r0; s0 < rend;) { /* one segment per sequence */
        const int off = blk_off[s0];
        int s1 = s0 + 1, max_pos = pos[s0];
        while (s1 < rend && blk_off[s1] == off) max_pos = max(max_pos, pos[s1]), s1++;
        const bool act = mine && my_row >= s0 && my_row < s1;
        float m = -FLT_MAX, l = 0.f, acc[DPT];
#pragma unroll
        for (int d = 0; d < DPT; d++) acc[d] = 0.f;
        for (int t0 = 0; t0 <= max_pos; t0 += PA_KT) {
            __syncthreads(); /* the previous tile (and the Q load) is done with */
            for (int e = tid; e < PA_KT * (HD / 4); e += 256) {
                const int kk = e / (HD / 4), d4 = e % (HD / 4), t = t0 + kk;
                float4 kx = make_float4(0.f, 0.f, 0.f, 0.f), vx = kx;
                if (t <= max_pos) {
                    const size_t at = kv_row(kv, layer, blk, off, t) + (size_t)g * HD + 4 * d4;
                    kx = __ldg((const float4 *)(kv.d_k + at));
                    vx = __ldg((const float4 *)(kv.d_v + at));
                }
                *(float4 *)(Ks + kk * QS + 4 * d4) = kx;
                *(float4 *)(Vs + kk * HD + 4 * d4) = vx;
            }
            __syncthreads();
            if (!act || t0 > my_pos) continue; /* (whole quads: the four threads of a query agree) */
            float s[8];
#pragma unroll
            for (int j = 0; j < 8; j++) s[j] = 0.f;
            const float *qr = Qs + qi * QS;
#pragma unroll 4
            for (int d = 0; d < HD; d += 4) {
                const float4 a = *(const float4 *)(qr + d);
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const float4 b = *(const float4 *)(Ks + (quarter + 4 * j) * QS + d);
                    s[j] = fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, s[j]))));
                }
            }
            float mt = -INFINITY;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                s[j] *= scale; /* after the dot product, as the rows kernel scales */
                if (t0 + quarter + 4 * j > my_pos) s[j] = -INFINITY;
                mt = fmaxf(mt, s[j]);
            }
            const unsigned qm = 0xFu << (lane & ~3);
            mt = fmaxf(mt, __shfl_xor_sync(qm, mt, 1));
            mt = fmaxf(mt, __shfl_xor_sync(qm, mt, 2));
            const float mn = fmaxf(m, mt), corr = expf(m - mn);
            float p[8], ps = 0.f;
#pragma unroll
            for (int j = 0; j < 8; j++) p[j] = expf(s[j] - mn), ps += p[j];
            l = l * corr + ps;
            m = mn;
#pragma unroll
            for (int d = 0; d < DPT; d++) acc[d] *= corr;
            const float *vq = Vs + quarter * DPT;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int o = 0; o < 4; o++) {
                    const float pv = __shfl_sync(qm, p[j], (lane & ~3) | o);
                    const float *vr = vq + (o + 4 * j) * HD;
#pragma unroll
                    for (int d = 0; d < DPT; d += 4) {
                        const float4 v = *(const float4 *)(vr + d);
                        acc[d] = fmaf(pv, v.x, acc[d]), acc[d + 1] = fmaf(pv, v.y, acc[d + 1]);
                        acc[d + 2] = fmaf(pv, v.z, acc[d + 2]), acc[d + 3] = fmaf(pv, v.w, acc[d + 3]);
                    }
                }
        }
        if (act) {
            const unsigned qm = 0xFu << (lane & ~3);
            float L = l + __shfl_xor_sync(qm, l, 1);
            L += __shfl_xor_sync(qm, L, 2);
            float *o = out + ((size_t)my_row * n_head + h) * HD + quarter * DPT;
#pragma unroll
            for (int d = 0; d < DPT; d += 4)
                *(float4 *)(o + d) = make_float4(acc[d] / L, acc[d + 1] / L, acc[d + 2] / L, acc[d + 3] / L);
        }
        s0 = s1;
    }
}

template <int DPT>
static int launch_tiles(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n, const int32_t *d_pos,
                        const int32_t *d_blk, const int32_t *d_blk_off, int n_head, int group, float scale) {
    const int rows = min(16, PA_Q / group);
    const size_t smem = (size_t)(PA_Q + PA_KT) * (4 * DPT + 4) * 4 + (size_t)PA_KT * 4 * DPT * 4;
    static int attr_set;
    if (!attr_set) {
        if (kc_check(cudaFuncSetAttribute(attention_tiles_kernel<DPT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)smem),
                     "cudaFuncSetAttribute(attention_tiles)"))
            return -1;
        attr_set = 1;
    }
    dim3 grid((unsigned)((n + rows - 1) / rows), (unsigned)(n_head / group));
    attention_tiles_kernel<DPT><<<grid, 256, smem, KC_STREAM>>>(d_out, d_q, *kv, layer, n, d_pos, d_blk, d_blk_off,
                                                                n_head, group, rows, scale);
    return kc_check_launch("attention_tiles");
}

static int attn_tc = -1; /* kc_attn_set_tensor_cores; < 0: KC_ATTN_TC decides */

extern "C" void kc_attn_set_tensor_cores(int on) { attn_tc = on; }

static int attn_tc_on(void) {
    if (attn_tc >= 0) return attn_tc;
    static int env = -1;
    if (env < 0) {
        const char *e = getenv("KC_ATTN_TC");
        env = !e || strcmp(e, "0") != 0;
    }
    return env;
}

extern "C" int kc_attention_max(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n,
                                const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off, int n_head,
                                int n_head_kv, int head_dim, int max_pos, float *d_hmax) {
    return attention_rows(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, n_head_kv, head_dim, max_pos,
                          d_hmax);
}

extern "C" int kc_attention(float *d_out, const float *d_q, const kc_kv_t *kv, int layer, int n,
                            const int32_t *d_pos, const int32_t *d_blk, const int32_t *d_blk_off,
                            int n_head, int n_head_kv, int head_dim, int max_pos, int prefill) {
    if (n <= 0) return 0;
    if (head_dim > 32 * MAX_HD_PER_LANE || n_head % n_head_kv) {
        kc_set_error("attention: head_dim %d / heads %d:%d not supported on the GPU", head_dim,
                     n_head, n_head_kv);
        return -1;
    }
    const int group = n_head / n_head_kv;
    const float scale = 1.0f / sqrtf((float)head_dim);
    static int tiles_ok = -1; /* KC_ATTN_TILES=0: the rows kernel always (measurements) */
    if (tiles_ok < 0) {
        const char *e = getenv("KC_ATTN_TILES");
        tiles_ok = !e || strcmp(e, "0") != 0;
    }
    if (prefill && tiles_ok && group <= PA_Q && attn_tc_on()) {
        const int r = kc_attention_tc(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, group, head_dim,
                                      scale);
        if (r <= 0) return r;
    }
    if (prefill && tiles_ok && group <= PA_Q) {
        if (head_dim == 64) return launch_tiles<16>(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, group, scale);
        if (head_dim == 128) return launch_tiles<32>(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, group, scale);
    }
    return attention_rows(d_out, d_q, kv, layer, n, d_pos, d_blk, d_blk_off, n_head, n_head_kv, head_dim, max_pos,
                          NULL);
}
