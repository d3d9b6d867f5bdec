/* sched_seq.c - the scheduler's sequences and their lists: freeing a
 * sequence, reporting DONE, the running set, the waiting FIFO, and the
 * release of a sequence's slot and KV blocks. It is the scheduler's lowest
 * layer: sched.c (the loop callbacks, the inbox, the public API) and
 * sched_step.c (one engine step) both call it, and it calls neither, so the
 * lists change, and DONE is reported, in one place (sched_int.h). Like
 * them it runs on the loop thread, and takes `mu` only to change n_queued.
 */
#include "sched_int.h"

#include "gen.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void sch_seq_free(seq_t *q) {
    if (!q) return;
    for (int i = 0; i < SCHED_MAX_STOPS; i++) free(q->stops[i]);
    free(q->tokens);
    free(q->bias_ids);
    free(q->bias);
    free(q->emb);
    sampler_free(&q->smp);
    gmatch_free(q->gm);
    stop_free(&q->stop);
    free(q);
}

static void emit_done(sched_t *s, seq_t *q, const char *finish, const char *error) {
    double now = gen_now();
    stats_lock(&s->stats);
    stats_data_t *d = &s->stats.d;
    d->finished++;
    if (!strcmp(finish, "stop")) d->finished_stop++;
    else if (!strcmp(finish, "length")) d->finished_length++;
    if (!strcmp(finish, "cancelled") || !strcmp(finish, "timeout")) d->cancellations++;
    hist_observe(&d->e2e, now - q->t_submit);
    hist_observe(&d->prompt_len, q->n_prompt);
    hist_observe(&d->output_len, q->n_gen);
    stats_unlock(&s->stats);
    sched_event_t ev = {.type = SCHED_DONE, .finish = finish, .error = error,
                        .n_prompt = q->n_prompt, .n_gen = q->n_gen, .n_cached = q->n_cached};
    if (q->p.embed && !strcmp(finish, "stop")) {
        ev.embedding = q->emb;
        ev.n_embd = s->m->hp.dim;
    }
    q->p.sink(q->p.ud, &ev);
}

void sch_release_slot(sched_t *s, seq_t *q) {
    if (q->slot < 0) return;
    kv_seq_release(&s->kv, q->slot);
    s->free_slots[s->n_free_slots++] = q->slot;
    q->slot = -1;
    q->n_done = 0;
}

void sch_remove_running(sched_t *s, int i) {
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof(seq_t *));
    s->n_running--;
}

/* Ends a running sequence: frees its blocks and its slot, reports DONE. */
void sch_finish_running(sched_t *s, int i, const char *finish, const char *error) {
    seq_t *q = s->running[i];
    if (!strcmp(finish, "stop") || !strcmp(finish, "length")) shadow_offer(&s->sh, q->tokens, q->n_prompt);
    sch_remove_running(s, i);
    sch_release_slot(s, q);
    emit_done(s, q, finish, error);
    sch_seq_free(q);
}

void sch_wait_push_front(sched_t *s, seq_t *q) {
    q->next = s->wait_head;
    s->wait_head = q;
    if (!s->wait_tail) s->wait_tail = q;
}

void sch_wait_push_back(sched_t *s, seq_t *q) {
    q->next = NULL;
    if (s->wait_tail) s->wait_tail->next = q;
    else s->wait_head = q;
    s->wait_tail = q;
}

seq_t *sch_wait_pop(sched_t *s) {
    seq_t *q = s->wait_head;
    if (q) {
        s->wait_head = q->next;
        if (!s->wait_head) s->wait_tail = NULL;
        q->next = NULL;
    }
    return q;
}

void sch_drop_waiting(sched_t *s, seq_t *victim, const char *finish) {
    seq_t **pp = &s->wait_head, *prev = NULL;
    while (*pp && *pp != victim) { prev = *pp; pp = &(*pp)->next; }
    if (!*pp) return;
    *pp = victim->next;
    if (s->wait_tail == victim) s->wait_tail = prev;
    pthread_mutex_lock(&s->mu);
    s->n_queued--;
    pthread_mutex_unlock(&s->mu);
    emit_done(s, victim, finish, NULL);
    sch_seq_free(victim);
}
