/* libFuzzer target for sse. The first input byte picks the chunk size (low 4 bits, 1..16) and
 * an event count after which the callback asks to stop (high 4 bits, 0 = never); the rest is the
 * stream. Checks, beyond the sanitizers: chunked and one-piece feeds give the same events and
 * the same result, and every event re-framed with sy_sse_frame_event parses back unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/sse.h"

#define MAX_EVENT 1024

struct rec {
    sy_buf out; /* "<event>\x01<len>\x01<data>\x02" per event */
    int n;
    int stop_after;
};

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    struct rec *r = ud;

    if (data[len] != '\0')
        abort();
    if (sy_buf_printf(&r->out, "%s\x01%zu\x01", event, len) != SY_OK ||
        sy_buf_append(&r->out, data, len) != SY_OK || sy_buf_append(&r->out, "\x02", 1) != SY_OK)
        abort();
    r->n++;
    return r->stop_after > 0 && r->n >= r->stop_after;
}

static sy_err run(const uint8_t *s, size_t n, size_t chunk, struct rec *r, int *pending)
{
    sy_sse_parser p;
    sy_err rc = SY_OK;

    sy_sse_init(&p, MAX_EVENT);
    for (size_t at = 0; at < n && rc == SY_OK; at += chunk) {
        size_t k = n - at < chunk ? n - at : chunk;
        rc = sy_sse_feed(&p, (const char *)s + at, k, on_event, r);
    }
    *pending = sy_sse_pending(&p);
    sy_sse_cleanup(&p);
    return rc;
}

static int reparse_one(void *ud, const char *event, const char *data, size_t len)
{
    struct rec *r = ud;
    return on_event(r, event, data, len);
}

/* Frames each event that can be framed and checks the parser gives it back. */
static int check_round_trip(void *ud, const char *event, const char *data, size_t len)
{
    sy_buf f;
    sy_sse_parser p;
    struct rec back;
    struct rec want;
    (void)ud;

    if (memchr(data, '\n', len) != NULL || memchr(data, '\r', len) != NULL)
        return 0; /* multi-line data cannot be one frame; callers never frame such data */
    sy_buf_init(&f, 4 * MAX_EVENT);
    sy_buf_init(&back.out, 4 * MAX_EVENT);
    sy_buf_init(&want.out, 4 * MAX_EVENT);
    back.n = want.n = 0;
    back.stop_after = want.stop_after = 0;
    if (sy_sse_frame_event(&f, event, data, len) != SY_OK)
        abort();
    sy_sse_init(&p, 4 * MAX_EVENT);
    if (sy_sse_feed(&p, f.data, f.len, reparse_one, &back) != SY_OK || sy_sse_pending(&p))
        abort();
    on_event(&want, event, data, len);
    if (back.n != 1 || back.out.len != want.out.len ||
        memcmp(back.out.data, want.out.data, want.out.len) != 0)
        abort();
    sy_sse_cleanup(&p);
    sy_buf_cleanup(&f);
    sy_buf_cleanup(&back.out);
    sy_buf_cleanup(&want.out);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rec a;
    struct rec b;
    int pa;
    int pb;

    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] & 0x0f) + 1;
    int stop_after = data[0] >> 4;
    data++;
    size--;

    sy_buf_init(&a.out, 1 << 24);
    sy_buf_init(&b.out, 1 << 24);
    a.n = b.n = 0;
    a.stop_after = b.stop_after = stop_after;
    sy_err ra = run(data, size, chunk, &a, &pa);
    sy_err rb = run(data, size, size > 0 ? size : 1, &b, &pb);
    if (ra != rb || a.n != b.n || a.out.len != b.out.len ||
        (a.out.len > 0 && memcmp(a.out.data, b.out.data, a.out.len) != 0))
        abort();
    if (ra == SY_OK && (a.stop_after == 0 || a.n < a.stop_after) && pa != pb)
        abort();
    if (ra != SY_OK && ra != SY_ETOOBIG)
        abort();

    /* Round-trip every event the stream produced. */
    sy_sse_parser p;
    sy_sse_init(&p, MAX_EVENT);
    (void)sy_sse_feed(&p, (const char *)data, size, check_round_trip, NULL);
    sy_sse_cleanup(&p);

    sy_buf_cleanup(&a.out);
    sy_buf_cleanup(&b.out);
    return 0;
}
