/* bench_grammar.c - the cost of constrained decoding per step (make bench-grammar).
 *
 *   bench_grammar MODEL [STEPS] [THREADS]
 *
 * One sequence, batch 1, greedy: the chat prompt "Describe a pet as JSON."
 * then STEPS decode steps, three times over:
 *   free   unconstrained: forward pass + sampling;
 *   cold   under a JSON Schema grammar with an empty mask cache (the first
 *          request with a new schema): forward + mask + sampling + advancing
 *          the grammar;
 *   warm   the same grammar again, its mask cache filled by the cold run (any
 *          later request with the same schema: the server keeps compiled
 *          grammars by their text).
 * When the grammar completes (an object is finished) a new matcher starts
 * at the root and decoding goes on, so every run times STEPS steps. Each
 * part of a step is timed on its own, so the grammar's share is measured
 * directly and does not drown in the forward pass's run-to-run noise; the
 * whole step is reported too. Prints a table; nothing is written.
 */
#include "../../engine/compute/forward.h"
#include "../../engine/runtime/gen.h"
#include "../../engine/runtime/grammar.h"
#include "../../engine/runtime/json_schema.h"
#include "../../engine/runtime/sample.h"
#include "../../kernels/k_ops.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char SCHEMA[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"maxLength\":10},\"age\":{\"type\":\"integer\"},"
    "\"weight\":{\"type\":\"number\"},\"kind\":{\"enum\":[\"cat\",\"dog\",\"fish\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":8},\"maxItems\":3},"
    "\"notes\":{\"type\":\"string\"},\"indoor\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\",\"weight\",\"kind\",\"tags\",\"notes\",\"indoor\"],"
    "\"additionalProperties\":false}";

typedef struct { double fwd, sample, grammar; } part_t;
typedef struct { part_t wall, cpu; long misses, objects; } times_t;

/* This thread's CPU time: unlike wall time it does not count the time other
 * processes hold the cores (with THREADS=1 the forward pass runs on this
 * thread too, so every part is measured this way). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int die(const char *msg) {
    fprintf(stderr, "bench_grammar: %s\n", msg);
    return 1;
}

/* Prefills the prompt into slot 0 and decodes `steps` tokens. */
static int run(fwd_t *f, const int32_t *prompt, int n_prompt, int steps, grammar_t *g, const gvocab_t *v,
               times_t *t, char *err, size_t errlen) {
    const model_t *m = f->m;
    int nv = m->hp.n_vocab;
    memset(t, 0, sizeof *t);
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t *pos = malloc((size_t)f->n_max * sizeof *pos), *slot = calloc((size_t)f->n_max, sizeof *slot);
    sampler_t smp;
    sample_params_t sp = sample_defaults();
    sp.temperature = 0;
    gmatch_t *gm = g ? gmatch_new(g, v) : NULL;
    int rc = -1;
    if (!logits || !pos || !slot || sampler_init(&smp, &sp, nv) != 0 || (g && !gm)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    kv_seq_release(f->kv, 0);
    if (kv_seq_reserve(f->kv, 0, n_prompt + steps) != 0) {
        snprintf(err, errlen, "KV cache too small");
        goto out_s;
    }
    for (int done = 0; done < n_prompt;) {
        int c = n_prompt - done < f->n_max ? n_prompt - done : f->n_max;
        for (int i = 0; i < c; i++) pos[i] = done + i;
        batch_t b = {c, prompt + done, pos, slot, NULL};
        if (fwd_run(f, &b, logits, err, errlen) != 0) goto out_s;
        done += c;
    }
    for (int s = 0; s < steps; s++) {
        double t0 = gen_now(), c0 = cpu_now();
        if (gm && gmatch_apply(gm, logits) <= 0) { snprintf(err, errlen, "the grammar allows nothing"); goto out_s; }
        double t1 = gen_now(), c1 = cpu_now();
        int32_t id = sampler_next(&smp, logits);
        double t2 = gen_now(), c2 = cpu_now();
        if (gm) {
            if (gmatch_accept_token(gm, id) != 0) { snprintf(err, errlen, "token outside the grammar"); goto out_s; }
            if (gmatch_done(gm)) { /* an object is complete: start another */
                long c, h;
                gmatch_counts(gm, &c, &h);
                t->misses += c;
                t->objects++;
                gmatch_free(gm);
                if (!(gm = gmatch_new(g, v))) { snprintf(err, errlen, "out of memory"); goto out_s; }
            }
        }
        double t3 = gen_now(), c3 = cpu_now();
        int32_t p = n_prompt + s, zero = 0;
        batch_t b = {1, &id, &p, &zero, NULL};
        if (fwd_run(f, &b, logits, err, errlen) != 0) goto out_s;
        double t4 = gen_now(), c4 = cpu_now();
        t->wall.grammar += (t1 - t0) + (t3 - t2);
        t->wall.sample += t2 - t1;
        t->wall.fwd += t4 - t3;
        t->cpu.grammar += (c1 - c0) + (c3 - c2);
        t->cpu.sample += c2 - c1;
        t->cpu.fwd += c4 - c3;
    }
    if (gm) {
        long c, h;
        gmatch_counts(gm, &c, &h);
        t->misses += c;
    }
    part_t *ps[2] = {&t->wall, &t->cpu};
    for (int k = 0; k < 2; k++) { ps[k]->fwd /= steps; ps[k]->sample /= steps; ps[k]->grammar /= steps; }
    rc = 0;
out_s:
    sampler_free(&smp);
out:
    kv_seq_release(f->kv, 0);
    gmatch_free(gm);
    free(logits); free(pos); free(slot);
    return rc;
}

static void row(const char *name, const part_t *t, const part_t *base, const times_t *tt) {
    double step = t->fwd + t->sample + t->grammar, bstep = base->fwd + base->sample;
    printf("| %-5s | %8.3f | %8.3f | %8.3f | %8.3f | %+7.1f %% | %+10.1f %% | %6ld | %5ld |\n", name, t->fwd * 1e3,
           t->sample * 1e3, t->grammar * 1e3, step * 1e3, 100.0 * t->grammar / bstep,
           100.0 * (step - bstep) / bstep, tt->misses, tt->objects);
}

static void table(const char *title, const times_t *fr, const times_t *cold, const times_t *warm, int cpu) {
    printf("%s\n\n", title);
    printf("| run   | fwd ms   | samp ms  | gram ms  | step ms  | grammar   | step vs free | masks  | objs  |\n");
    printf("|-------|----------|----------|----------|----------|-----------|--------------|--------|-------|\n");
    row("free", cpu ? &fr->cpu : &fr->wall, cpu ? &fr->cpu : &fr->wall, fr);
    row("cold", cpu ? &cold->cpu : &cold->wall, cpu ? &fr->cpu : &fr->wall, cold);
    row("warm", cpu ? &warm->cpu : &warm->wall, cpu ? &fr->cpu : &fr->wall, warm);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc < 2) return die("usage: bench_grammar MODEL [STEPS] [THREADS]");
    int steps = argc > 2 ? atoi(argv[2]) : 256, threads = argc > 3 ? atoi(argv[3]) : 0;
    if (steps < 1 || steps > 2000) return die("STEPS must be in 1..2000");
    if (threads <= 0) threads = 1;
    char err[512];
    model_t m;
    k_init();
    if (model_load(&m, argv[1], err, sizeof err) != 0) return die(err);
    const hparams_t *hp = &m.hp;
    k_pool_t *pool = k_pool_new(threads);
    kv_cache_t kv;
    fwd_t f;
    int n_ctx = 2048;
    if (!pool || kv_init(&kv, hp->n_layer, hp->head_dim * hp->n_head_kv, n_ctx / KV_BLOCK, 1) != 0 ||
        fwd_init(&f, &m, &kv, pool, 64, n_ctx) != 0)
        return die("out of memory");
    chat_msg_t msg = {"user", "Describe a pet as JSON."};
    char *text = chat_render(&m.chat, &msg, 1, 1);
    int32_t prompt[512];
    long n_prompt = text ? tok_encode(m.tok, text, strlen(text), 1, prompt, 512) : -1;
    free(text);
    if (n_prompt < 1 || n_prompt > 512) return die("cannot encode the prompt");
    json_t *schema = json_loads(SCHEMA, 0, NULL);
    int oom;
    char *gtext = schema ? json_schema_grammar(schema, err, sizeof err, &oom) : NULL;
    json_decref(schema);
    grammar_t *g = gtext ? grammar_parse(gtext, strlen(gtext), err, sizeof err) : NULL;
    free(gtext);
    double t0 = gen_now();
    gvocab_t *v = gvocab_new(m.tok);
    double t_trie = gen_now() - t0;
    if (!g || !v) return die(g ? "out of memory" : err);
    times_t free_t, cold, warm;
    if (run(&f, prompt, (int)n_prompt, steps, NULL, v, &free_t, err, sizeof err) ||
        run(&f, prompt, (int)n_prompt, steps, g, v, &cold, err, sizeof err) ||
        run(&f, prompt, (int)n_prompt, steps, g, v, &warm, err, sizeof err))
        return die(err);
    printf("model %s, %d-token vocabulary, %d threads, %d decode steps after a %ld-token prompt\n",
           argv[1], hp->n_vocab, threads, steps, n_prompt);
    printf("token trie built in %.1f ms (once per model)\n\n", t_trie * 1e3);
    table("wall time per step:", &free_t, &cold, &warm, 0);
    if (threads == 1)
        table("CPU time of the one thread per step (not inflated by other processes on the machine):", &free_t,
              &cold, &warm, 1);
    printf("grammar: mask + advance per step, over the free run's step (forward + sampling);\n"
           "step vs free: the whole constrained step over the free step (includes the forward pass's noise);\n"
           "masks: masks computed by walking the trie (cache misses); objs: JSON objects completed.\n");
    gvocab_free(v);
    grammar_unref(g);
    fwd_free(&f);
    kv_free(&kv);
    k_pool_free(pool);
    model_free(&m);
    return 0;
}
