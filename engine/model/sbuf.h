/* sbuf.h - a growing string buffer for code that assembles text (prompts,
 * grammars, tool listings).
 *
 * Out of memory is sticky instead of being checked at every append: the
 * first failed growth sets `oom`, later appends do nothing, and sb_take
 * reports the failure once at the end. Start from a zeroed sbuf_t.
 */
#ifndef SBUF_H
#define SBUF_H

#include <stddef.h>

typedef struct {
    char *buf;  /* NUL-terminated once anything was added */
    size_t len, cap;
    int oom;
} sbuf_t;

void sb_addn(sbuf_t *b, const char *s, size_t n);
void sb_add(sbuf_t *b, const char *s);
void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text (the caller frees it; "" when nothing was added), or NULL after
 * an out-of-memory (the buffer is freed then). */
char *sb_take(sbuf_t *b);

#endif
