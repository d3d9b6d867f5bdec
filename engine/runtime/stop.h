/* stop.h - stop strings over streamed text.
 *
 * Generated text arrives in pieces; a stop string may straddle pieces.
 * stop_feed() releases text only once it cannot be the start of a stop
 * string, so a client never sees a partial stop string, and reports the
 * stop as soon as one is complete (the stop string itself is not
 * released, as in the OpenAI API).
 */
#ifndef STOP_H
#define STOP_H

#include <stddef.h>

#define STOP_MAX 8

typedef struct {
    char *stops[STOP_MAX];
    size_t stop_len[STOP_MAX];
    int n_stops;
    char *held;          /* text not yet released */
    size_t held_len, held_cap;
    char *rel;           /* what the last call released */
    size_t rel_cap;
} stop_t;

/* Copies the strings; empty strings are ignored. -1 on out of memory or
 * more than STOP_MAX strings. */
int stop_init(stop_t *s, const char *const *stops, int n);
void stop_free(stop_t *s);

/* Appends text; *out and *out_len receive the releasable part (valid until the
 * next call). Returns 1 when a stop string completed (out then holds the
 * text before it), 0 otherwise, -1 on out of memory. */
int stop_feed(stop_t *s, const char *text, size_t len, const char **out, size_t *out_len);
/* At the end of generation: everything still held is released. */
void stop_flush(stop_t *s, const char **out, size_t *out_len);

#endif
