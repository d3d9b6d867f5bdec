/* sqm_write.h - writing a quantized model to a .sqm file (model/sqm.h). */
#ifndef SQM_WRITE_H
#define SQM_WRITE_H

#include "../model/sqm.h"
#include "quant.h"

typedef struct {
    const char *weights, *acts;   /* recipe strings as given */
    const char *calib;            /* "self", a file name, or "none" */
    long calib_tokens;
    const char *source;           /* the input file name */
    int have_eval;                /* measured against FP32 at convert time */
    double eval_ppl, eval_ppl_ref, eval_kl, eval_top1;
    long eval_tokens;
    const char *eval_ref;         /* the reference it was measured against */
} sqm_meta_t;

/* Writes m (quantized by quant_apply with keep_codes) to path atomically. */
int sqm_write(const char *path, const model_t *m, const quant_state_t *qs, const sqm_meta_t *meta,
              char *err, size_t errlen);

#endif
