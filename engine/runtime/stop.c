/* stop.c - stop-string hold-back (see stop.h). */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

int stop_init(stop_t *s, const char *const *stops, int n) {
    memset(s, 0, sizeof *s);
    if (n > STOP_MAX) return -1;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0) continue;
        if (!(s->stops[s->n_stops] = malloc(len + 1))) {
            stop_free(s);
            return -1;
        }
        memcpy(s->stops[s->n_stops], stops[i], len + 1);
        s->stop_len[s->n_stops++] = len;
    }
    return 0;
}

void stop_free(stop_t *s) {
    for (int i = 0; i < s->n_stops; i++) free(s->stops[i]);
    free(s->held);
    free(s->rel);
    memset(s, 0, sizeof *s);
}

static int reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    char *b = realloc(*buf, need * 2);
    if (!b) return -1;
    *buf = b;
    *cap = need * 2;
    return 0;
}

int stop_feed(stop_t *s, const char *text, size_t len, const char **out, size_t *out_len) {
    if (s->n_stops == 0) { /* nothing to hold back */
        *out = text;
        *out_len = len;
        return 0;
    }
    if (reserve(&s->held, &s->held_cap, s->held_len + len + 1) != 0) return -1;
    memcpy(s->held + s->held_len, text, len);
    s->held_len += len;
    /* the earliest complete stop string wins */
    size_t first = (size_t)-1;
    for (int i = 0; i < s->n_stops; i++) {
        size_t n = s->stop_len[i];
        for (size_t p = 0; p + n <= s->held_len && p < first; p++)
            if (memcmp(s->held + p, s->stops[i], n) == 0) { first = p; break; }
    }
    size_t rel = first, keep = 0;
    if (first == (size_t)-1) {
        /* hold back the longest suffix that is a prefix of a stop string */
        for (int i = 0; i < s->n_stops; i++) {
            size_t n = s->stop_len[i];
            for (size_t k = n - 1 < s->held_len ? n - 1 : s->held_len; k > keep; k--)
                if (memcmp(s->held + s->held_len - k, s->stops[i], k) == 0) { keep = k; break; }
        }
        rel = s->held_len - keep;
    }
    if (reserve(&s->rel, &s->rel_cap, rel + 1) != 0) return -1;
    memcpy(s->rel, s->held, rel);
    memmove(s->held, s->held + s->held_len - keep, keep);
    s->held_len = keep;
    *out = s->rel;
    *out_len = rel;
    return first != (size_t)-1;
}

void stop_flush(stop_t *s, const char **out, size_t *out_len) {
    *out = s->held ? s->held : "";
    *out_len = s->held_len;
    s->held_len = 0;
}
