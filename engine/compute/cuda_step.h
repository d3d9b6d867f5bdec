/* cuda_step.h - what the CUDA backend's two halves share (inside
 * engine/compute only): the per-forward state (gfwd_t), the device-side
 * batch description, and the step's entry points.
 *
 * backend_cuda.c holds the forward pass's operations (backend.h's table:
 * embed ... gather, and which launches a decode step fuses); cuda_step.c
 * holds what brackets them: the state's buffers, the activation recipe a
 * batch asks for, the batch's upload, the CUDA graphs a decode step replays
 * and the logits' download.
 */
#ifndef CUDA_STEP_H
#define CUDA_STEP_H

#include "act_quant.h"
#include "backend.h"
#include "cuda_model.h"

#define GRAPH_MAX 256

/* The activation recipe the hook stands for, as GPU work. */
typedef struct {
    int kind; /* AQ_* */
    int bits, bits_hi;
} gact_t;

typedef struct {
    int8_t *qx;
    float *sx;
    int32_t *d_ints, *h_ints; /* tok, pos, blk_off, sel, then block ids */
    long n_ints, n_used;       /* capacity; ints the current batch fills (uploaded) */
    int *slot_seen;           /* per kv slot: offset of its table in this batch, or -1 */
    kc_kv_t kv;
    gact_t acts;              /* this batch's activation recipe */
    float *logits_host;       /* where end() delivers the logits, or NULL */
    float *pinned;            /* the page-locked logits buffer (fwd_pin_logits), or NULL */
    const void *mask_src;     /* the act_quant_t the masks were copied from */
    uint8_t *masks[N_SITES];  /* [layer][dim] static SQ high channels */
    kc_graph_t *graph[GRAPH_MAX + 1]; /* decode steps by batch size */
    uint8_t graph_state[GRAPH_MAX + 1]; /* 0 unseen, 1 ran once eagerly, 2 capture failed */
    int no_graphs, graph_acts;        /* graphs off; the activation recipe they were made for */
    int n_seqs;                       /* sequences in the current batch */
    /* qx/sx already hold the INT8 form of q_of[q_m][q_k]: set by the fused
     * norm/SwiGLU + quantization kernels, used (and cleared) by the next
     * matmul, cleared by anything that changes the activations between */
    const float *q_of;
    long q_m, q_k;
    /* static SQ activations on the integer kernels: two INT8 rows a token,
     * their scales, the 2n-row products (allocated at the first such batch) */
    int8_t *qx2;
    float *sx2, *y2;
    const float *qs_of; /* qx2/sx2 hold the static form of qs_of[qs_m][qs_k] (as q_of above) */
    long qs_m, qs_k;
    int int_layers; /* some layer matrix is an integer one (kc_int): set at init */
    /* RoPE and the K/V store in the q/k/v matmul's epilogue (unless KC_SQ_ROPE=0):
     * the step's angle table, filled at its first layer; roped: layer + 1
     * whose rope_store the matmul already did */
    float *rope_cs;
    int cs_ready, roped;
    /* SwiGLU by the gate/up and down matmuls (KC_SQ_SWIGLU=1): the gate/up
     * blocks' max |h| slots (hmax_n floats); swig: layer + 1 whose SwiGLU
     * the gate/up matmul did, into swig_h, with swig_nslot slots */
    float *hmax;
    long hmax_n;
    int swig, swig_nslot;
    const float *swig_h;
    /* RMSNorm split over the matmuls around it (KC_SQ_NORM=1): the slots
     * (kc_norm_split_t, for 4 tokens of dim values); ns_of: the norm output
     * the next matmul reads as ns_x's norm (the norm launched nothing) */
    double *ns_ss;
    float *ns_cand;
    const float *ns_of, *ns_x;
    /* the attention output quantized by the o matmul (KC_SQ_ATTQ=1): each
     * (row, head)'s max |out| (4 rows); attq: layer + 1 whose attention left them */
    float *amax;
    int attq;
} gfwd_t;

/* The device-side batch description, in d_ints. */
#define D_TOK(f, g) ((g)->d_ints)
#define D_POS(f, g) ((g)->d_ints + (f)->n_max)
#define D_OFF(f, g) ((g)->d_ints + 2 * (f)->n_max)
#define D_SEL(f, g) ((g)->d_ints + 3 * (f)->n_max)
#define D_BLK(f, g) ((g)->d_ints + 4 * (f)->n_max)

static inline const gpu_model_t *gpu_model(const fwd_t *f) { return f->m->dev; }

/* the step (cuda_step.c): fwd_backend_t's init, free, begin, launch, end,
 * pin_logits, profile_range and error */
int cuda_init(fwd_t *f);
void cuda_free(fwd_t *f);
int cuda_begin(fwd_t *f, const batch_t *b, float *logits, char *err, size_t errlen);
int cuda_launch(fwd_t *f, int n, int n_out, fwd_pass_fn pass);
int cuda_end(fwd_t *f, int n_out);
int cuda_pin_logits(fwd_t *f, float *logits, size_t bytes);
int cuda_profile_range(fwd_t *f, int on);
void cuda_error(fwd_t *f, char *err, size_t errlen);

#endif
