/*
 * fake_upstream: process-wide counters (/_stats, /_reset) and the last API request (/_last).
 *
 * Counters are C11 atomics shared by all loop threads. The last request is stored raw (a copy
 * of the bytes under one mutex) and only parsed when /_last asks: recording happens on every
 * request of a benchmark, reading almost never.
 */
#include "fake.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_llong counters[FAKE_STAT_COUNT];

static const char *const stat_names[FAKE_STAT_COUNT] = {
#define FAKE_STAT_NAME(name) #name,
    FAKE_STATS(FAKE_STAT_NAME)
#undef FAKE_STAT_NAME
};

void fake_stat_add(fake_stat s, long long delta)
{
    atomic_fetch_add_explicit(&counters[s], delta, memory_order_relaxed);
}

char *fake_stats_json(void)
{
    json_t *o = json_object();
    char *s = NULL;
    int i;

    if (o == NULL)
        return NULL;
    for (i = 0; i < FAKE_STAT_COUNT; i++) {
        long long v = atomic_load_explicit(&counters[i], memory_order_relaxed);
        if (json_object_set_new(o, stat_names[i], json_integer(v)) != 0)
            goto out;
    }
    if (fake_batch_stats(o) != 0)
        goto out;
    s = json_dumps(o, JSON_COMPACT);
out:
    json_decref(o);
    return s;
}

/* ------------------------------------------------------------------ last request ----------- */

static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static bool last_set;
static fbuf last_buf; /* method \0 target \0 headers \0 body */
static size_t last_off[4], last_len[4];

void fake_stats_reset(void)
{
    int i;

    for (i = 0; i < FAKE_STAT_COUNT; i++) {
        if (i == FAKE_STAT_active_streams || i == FAKE_STAT_active_connections)
            continue; /* gauges: zeroing them would make them negative later */
        atomic_store_explicit(&counters[i], 0, memory_order_relaxed);
    }
    fake_batch_stats_reset();
    pthread_mutex_lock(&last_mu);
    last_set = false;
    fbuf_cleanup(&last_buf);
    pthread_mutex_unlock(&last_mu);
}

void fake_last_record(const fake_request *req)
{
    const char *part[4] = {req->method, req->target, req->headers, req->body};
    size_t plen[4] = {req->method_len, req->target_len, req->headers_len, req->body_len};
    int i;

    pthread_mutex_lock(&last_mu);
    last_buf.len = 0;
    last_set = false;
    for (i = 0; i < 4; i++) {
        last_off[i] = last_buf.len;
        last_len[i] = plen[i];
        if (fbuf_append(&last_buf, part[i], plen[i]) != 0 || fbuf_append(&last_buf, "", 1) != 0)
            goto out; /* too big or no memory: forget it rather than keep half of it */
    }
    last_set = true;
    /* a huge body should not stay pinned until the next request */
out:
    if (!last_set && last_buf.cap > ((size_t)1 << 20))
        fbuf_cleanup(&last_buf);
    pthread_mutex_unlock(&last_mu);
}

/* New JSON string of <s>[0..n); invalid UTF-8 bytes become '?'. */
static json_t *lossy_string(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    char *copy;
    size_t i;

    if (j != NULL || n == 0)
        return j;
    copy = malloc(n);
    if (copy == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        copy[i] = (s[i] & 0x80) || s[i] == 0 ? '?' : s[i];
    j = json_stringn(copy, n);
    free(copy);
    return j;
}

/* New object of the header lines <h>[0..n), names lower-cased, repeated names joined by ", ". */
static json_t *headers_object(const char *h, size_t n)
{
    json_t *o = json_object();
    const char *p = h, *end = h + n;

    if (o == NULL)
        return NULL;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end, *colon, *v, *ve;
        char name[256];
        size_t nl, i;
        json_t *val, *old;

        colon = memchr(p, ':', (size_t)(le - p));
        if (colon == NULL || colon == p || (size_t)(colon - p) >= sizeof(name))
            goto next;
        nl = (size_t)(colon - p);
        for (i = 0; i < nl; i++)
            name[i] = (char)tolower((unsigned char)p[i]);
        name[nl] = '\0';
        v = colon + 1;
        ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        old = json_object_get(o, name);
        if (old != NULL && json_is_string(old)) {
            fbuf j;
            fbuf_init(&j);
            if (fbuf_append(&j, json_string_value(old), json_string_length(old)) == 0 &&
                fbuf_append(&j, ", ", 2) == 0 && fbuf_append(&j, v, (size_t)(ve - v)) == 0)
                val = lossy_string(j.p, j.len);
            else
                val = NULL;
            fbuf_cleanup(&j);
        } else {
            val = lossy_string(v, (size_t)(ve - v));
        }
        if (val == NULL || json_object_set_new(o, name, val) != 0) {
            json_decref(o);
            return NULL;
        }
    next:
        p = eol ? eol + 1 : end;
    }
    return o;
}

char *fake_last_json(void)
{
    json_t *o = NULL, *body = NULL;
    char *s = NULL;
    const char *b;

    pthread_mutex_lock(&last_mu);
    if (!last_set) {
        pthread_mutex_unlock(&last_mu);
        return strdup("null");
    }
    b = last_buf.p;
    if (last_len[3] == 0)
        body = json_null();
    else if ((body = json_loadb(b + last_off[3], last_len[3], JSON_DECODE_ANY, NULL)) == NULL)
        body = lossy_string(b + last_off[3], last_len[3]);
    o = json_object();
    if (o == NULL || body == NULL ||
        json_object_set_new(o, "method", lossy_string(b + last_off[0], last_len[0])) != 0 ||
        json_object_set_new(o, "path", lossy_string(b + last_off[1], last_len[1])) != 0 ||
        json_object_set_new(o, "headers", headers_object(b + last_off[2], last_len[2])) != 0)
        goto out;
    if (json_object_set(o, "body", body) != 0)
        goto out;
    s = json_dumps(o, JSON_COMPACT);
out:
    pthread_mutex_unlock(&last_mu);
    json_decref(body);
    json_decref(o);
    return s;
}

void fake_last_cleanup(void)
{
    pthread_mutex_lock(&last_mu);
    last_set = false;
    fbuf_cleanup(&last_buf);
    pthread_mutex_unlock(&last_mu);
}
