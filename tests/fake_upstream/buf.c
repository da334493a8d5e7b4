/*
 * fake_upstream: capped growable buffers, JSON string escaping and base64.
 *
 * Stream chunks are formatted here by hand instead of through jansson: at 10,000 paced streams
 * the server emits ~200,000 events per second, and one json_t tree per event would cost more
 * CPU than the rest of the server together.
 */
#include "fake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fbuf_init(fbuf *b)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}

void fbuf_cleanup(fbuf *b)
{
    free(b->p);
    fbuf_init(b);
}

int fbuf_reserve(fbuf *b, size_t extra)
{
    size_t need, ncap;
    char *np;

    if (extra > FBUF_CAP || b->len > FBUF_CAP - extra)
        return -1;
    need = b->len + extra;
    if (need <= b->cap)
        return 0;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (ncap > FBUF_CAP)
        ncap = FBUF_CAP;
    np = realloc(b->p, ncap);
    if (np == NULL)
        return -1;
    b->p = np;
    b->cap = ncap;
    return 0;
}

int fbuf_append(fbuf *b, const void *data, size_t n)
{
    if (fbuf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

int fbuf_puts(fbuf *b, const char *s)
{
    return fbuf_append(b, s, strlen(s));
}

int fbuf_printf(fbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (fbuf_reserve(b, 128) != 0)
        return -1;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= b->cap - b->len) {
        if (fbuf_reserve(b, (size_t)n + 1) != 0)
            return -1;
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= b->cap - b->len)
            return -1;
    }
    b->len += (size_t)n;
    return 0;
}

int fbuf_json_str(fbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *o;
    size_t i;

    /* worst case: every byte becomes \u00XX */
    if (n > (FBUF_CAP - 2) / 6 || fbuf_reserve(b, n * 6 + 2) != 0)
        return -1;
    o = b->p + b->len;
    *o++ = '"';
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20) {
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\r') {
            *o++ = '\\';
            *o++ = 'r';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    return 0;
}

int fbuf_base64(fbuf *b, const unsigned char *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;
    char *o;

    if (n > FBUF_CAP / 2 || fbuf_reserve(b, (n + 2) / 3 * 4) != 0)
        return -1;
    o = b->p + b->len;
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8 | d[i + 2];
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = tab[v >> 6 & 63];
        *o++ = tab[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)d[i] << 16;
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)d[i] << 16 | (unsigned)d[i + 1] << 8;
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = tab[v >> 6 & 63];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    return 0;
}
