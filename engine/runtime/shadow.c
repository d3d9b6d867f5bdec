/* shadow.c - shadow evaluation in the engine's idle time (shadow.h). */
#include "shadow.h"

#include "gen.h"

#include <stdlib.h>
#include <string.h>

int shadow_init(shadow_t *sh, const model_t *served, const model_t *ref, k_pool_t *pool, double rate,
                fwd_hook_fn hook, void *hook_ud) {
    const hparams_t *hp = &served->hp;
    const model_t *ms[2] = {served, ref};
    int kv_dim = hp->head_dim * hp->n_head_kv, ok = 1;
    memset(sh, 0, sizeof *sh);
    for (int k = 0; k < 2 && ok; k++)
        ok = kv_init(&sh->kv[k], hp->n_layer, kv_dim, SHADOW_MAX_TOKENS / KV_BLOCK, 1) == 0 &&
             fwd_init(&sh->f[k], ms[k], &sh->kv[k], pool, SHADOW_CHUNK, SHADOW_MAX_TOKENS) == 0 &&
             (sh->logits[k] = malloc((size_t)SHADOW_CHUNK * hp->n_vocab * sizeof(float))) != NULL;
    if (!ok) {
        shadow_free(sh);
        return -1;
    }
    sh->f[0].hook = hook; /* the served path, activations quantized too */
    sh->f[0].hook_ud = hook_ud;
    sh->rate = rate;
    sh->rng = 0x9e3779b97f4a7c15ull;
    sh->ready = 1;
    return 0;
}

void shadow_free(shadow_t *sh) {
    for (int k = 0; k < 2; k++) {
        if (sh->f[k].m) fwd_free(&sh->f[k]);
        if (sh->kv[k].k) kv_free(&sh->kv[k]);
        free(sh->logits[k]);
    }
    for (int i = 0; i < sh->n_queued; i++) free(sh->queue[i]);
    free(sh->cur);
    memset(sh, 0, sizeof *sh);
}

void shadow_offer(shadow_t *sh, const int32_t *tokens, int n_prompt) {
    if (!sh->ready || sh->n_queued == SHADOW_QUEUE || n_prompt < 2) return;
    sh->rng ^= sh->rng << 13; sh->rng ^= sh->rng >> 7; sh->rng ^= sh->rng << 17;
    if ((double)(sh->rng >> 11) / 9007199254740992.0 >= sh->rate) return;
    int n = n_prompt < SHADOW_MAX_TOKENS ? n_prompt : SHADOW_MAX_TOKENS;
    int32_t *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return;
    memcpy(copy, tokens, (size_t)n * sizeof *copy);
    sh->queue[sh->n_queued] = copy;
    sh->qlen[sh->n_queued++] = n;
}

/* One chunk of a shadow replay through both models; KL(P_ref || P_served)
 * and top-1 agreement for every predicted position. */
void shadow_step(shadow_t *sh, stats_t *stats) {
    if (!sh->cur) {
        if (sh->n_queued == 0) return;
        sh->cur = sh->queue[0];
        sh->cur_len = sh->qlen[0];
        sh->cur_done = 0;
        memmove(sh->queue, sh->queue + 1, (size_t)(--sh->n_queued) * sizeof sh->queue[0]);
        memmove(sh->qlen, sh->qlen + 1, (size_t)sh->n_queued * sizeof sh->qlen[0]);
        for (int k = 0; k < 2; k++) {
            kv_seq_release(&sh->kv[k], 0);
            kv_seq_reserve(&sh->kv[k], 0, SHADOW_MAX_TOKENS);
        }
    }
    int n = sh->cur_len - sh->cur_done < SHADOW_CHUNK ? sh->cur_len - sh->cur_done : SHADOW_CHUNK;
    int32_t pos[SHADOW_CHUNK], slot[SHADOW_CHUNK] = {0};
    uint8_t want[SHADOW_CHUNK];
    for (int i = 0; i < n; i++) {
        pos[i] = sh->cur_done + i;
        want[i] = sh->cur_done + i + 1 < sh->cur_len; /* positions with a next token */
    }
    batch_t b = {n, sh->cur + sh->cur_done, pos, slot, want};
    char err[128];
    int nv = sh->f[0].m->hp.n_vocab, ok = 1;
    for (int k = 0; k < 2 && ok; k++) ok = fwd_run(&sh->f[k], &b, sh->logits[k], err, sizeof err) == 0;
    double kl = 0, top1 = 0;
    int rows = 0;
    for (int i = 0; ok && i < n; i++) {
        if (!want[i]) continue;
        pos_cmp_t pc; /* the same comparison eval --ref reports */
        logits_compare(sh->logits[0] + (size_t)rows * nv, sh->logits[1] + (size_t)rows * nv, nv, &pc);
        rows++;
        kl += pc.kl;
        top1 += pc.argmax_q == pc.argmax_ref;
    }
    stats_lock(stats);
    stats->d.shadow_tokens += (uint64_t)rows;
    stats->d.shadow_kl_sum += kl;
    stats->d.shadow_top1_sum += top1;
    sh->cur_done += n;
    if (!ok || sh->cur_done >= sh->cur_len) {
        stats->d.shadow_requests++;
        free(sh->cur);
        sh->cur = NULL;
    }
    stats_unlock(stats);
}

int shadow_pending(const shadow_t *sh) { return sh->cur || sh->n_queued > 0; }
