/* buf: a byte buffer with a hard cap. Going past the cap is SY_ETOOBIG, never unbounded growth.
 * Callers place it on the stack or in structs; all fields are public but only the functions
 * below change them. */
#ifndef SY_BUF_H
#define SY_BUF_H

#include <stddef.h>

#include "switchyard/err.h"

typedef struct sy_buf {
    char *data; /* always NUL-terminated when non-NULL (the NUL is not counted in len) */
    size_t len;
    size_t cap; /* allocated bytes */
    size_t max; /* hard cap on len */
} sy_buf;

void sy_buf_init(sy_buf *b, size_t max);
void sy_buf_cleanup(sy_buf *b);
/* SY_ETOOBIG if len would exceed max (nothing appended), SY_ENOMEM on allocation failure. */
sy_err sy_buf_append(sy_buf *b, const void *p, size_t n);
sy_err sy_buf_appends(sy_buf *b, const char *s);
sy_err sy_buf_printf(sy_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first <n> bytes. */
void sy_buf_consume(sy_buf *b, size_t n);
void sy_buf_reset(sy_buf *b);
/* Hands the data to the caller (who frees it) and resets the buffer. Never NULL unless OOM. */
char *sy_buf_take(sy_buf *b, size_t *len);

#endif
