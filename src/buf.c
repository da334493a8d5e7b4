/* buf: capped byte buffers. Growth doubles up to the cap; nothing grows past it. */
#include "switchyard/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sy_buf_init(sy_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void sy_buf_cleanup(sy_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

static sy_err reserve(sy_buf *b, size_t extra)
{
    if (extra > b->max - b->len)
        return SY_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return SY_OK;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2; /* no wrap to 0 for huge requests */
    /* Compare against max, not max + 1: a cap of SIZE_MAX would make max + 1 wrap to 0. */
    if (ncap - 1 > b->max)
        ncap = b->max + 1;
    char *p = realloc(b->data, ncap);
    if (p == NULL)
        return SY_ENOMEM;
    b->data = p;
    b->cap = ncap;
    return SY_OK;
}

sy_err sy_buf_append(sy_buf *b, const void *p, size_t n)
{
    sy_err rc = reserve(b, n);
    if (rc != SY_OK)
        return rc;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return SY_OK;
}

sy_err sy_buf_appends(sy_buf *b, const char *s) { return sy_buf_append(b, s, strlen(s)); }

sy_err sy_buf_printf(sy_buf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return SY_EINTERNAL;
    if ((size_t)n < sizeof(small))
        return sy_buf_append(b, small, (size_t)n);
    sy_err rc = reserve(b, (size_t)n);
    if (rc != SY_OK)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return SY_OK;
}

void sy_buf_consume(sy_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        if (b->data != NULL)
            b->data[0] = '\0';
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void sy_buf_reset(sy_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

char *sy_buf_take(sy_buf *b, size_t *len)
{
    char *p = b->data;
    if (p == NULL)
        p = calloc(1, 1);
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
