/* libFuzzer target for the Anthropic stream translator: bytes -> sy_sse_feed ->
 * sy_anthropic_stream_event. The first input byte picks the chunk size (low 4 bits, 1..16), the
 * endpoint (bit 4: legacy completions) and include_usage (bit 5); the rest is the upstream
 * stream. Checks, beyond the sanitizers: chunked and one-piece feeds give the same client bytes
 * and the same result; every client event is "[DONE]" or a JSON object (a chunk or an error);
 * nothing follows [DONE] or an error event; [DONE] is sent only after a finish_reason. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "switchyard/provider_anthropic.h"
#include "switchyard/sse.h"

#define MAX_EVENT 4096

struct run {
    sy_stream_fix f;
    sy_endpoint ep;
    sy_buf out;
    sy_err rc;
};

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    struct run *r = ud;
    r->rc = sy_anthropic_stream_event(&r->f, r->ep, event, data, len, &r->out);
    return r->rc != SY_OK || r->f.saw_done || r->f.saw_error;
}

static sy_err feed(const uint8_t *s, size_t n, size_t chunk, sy_endpoint ep, bool usage,
                   struct run *r)
{
    sy_sse_parser p;
    sy_err rc = SY_OK;

    memset(r, 0, sizeof(*r));
    r->ep = ep;
    r->f.client_usage = usage;
    sy_buf_init(&r->out, 1u << 22);
    sy_sse_init(&p, MAX_EVENT);
    for (size_t at = 0; at < n && rc == SY_OK && r->rc == SY_OK; at += chunk) {
        size_t k = n - at < chunk ? n - at : chunk;
        rc = sy_sse_feed(&p, (const char *)s + at, k, on_event, r);
    }
    sy_sse_cleanup(&p);
    return rc != SY_OK ? rc : r->rc;
}

/* "created" and ids made up for messages without one come from the clock: blank them so two
 * runs compare equal. */
static void blank_clock(sy_buf *b)
{
    for (char *c = b->data ? strstr(b->data, "\"created\":") : NULL; c != NULL;
         c = strstr(c + 1, "\"created\":"))
        for (char *d = c + 10; *d >= '0' && *d <= '9'; d++)
            *d = '1';
    for (char *c = b->data ? strstr(b->data, "msg-sy") : NULL; c != NULL;
         c = strstr(c + 1, "msg-sy"))
        for (char *d = c + 6; (*d >= '0' && *d <= '9') || (*d >= 'a' && *d <= 'f'); d++)
            *d = '0';
}

struct check {
    int done, errors, finish, after_end;
};

static int check_event(void *ud, const char *event, const char *data, size_t len)
{
    struct check *c = ud;
    (void)event;
    if (c->done || c->errors)
        c->after_end++;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        c->done++;
        return 0;
    }
    json_t *j = json_loadb(data, len, 0, NULL);
    if (!json_is_object(j))
        abort();
    if (json_object_get(j, "error") != NULL)
        c->errors++;
    json_t *fr = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason");
    if (json_is_string(fr))
        c->finish++;
    json_decref(j);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] & 0x0f) + 1;
    sy_endpoint ep = (data[0] & 0x10) ? SY_EP_COMPLETIONS : SY_EP_CHAT;
    bool usage = (data[0] & 0x20) != 0;
    struct run a, b;

    sy_err ra = feed(data + 1, size - 1, size, ep, usage, &a);
    sy_err rb = feed(data + 1, size - 1, chunk, ep, usage, &b);
    if (ra != rb)
        abort();
    blank_clock(&a.out);
    blank_clock(&b.out);
    if (a.out.len != b.out.len || (a.out.len > 0 && memcmp(a.out.data, b.out.data, a.out.len)))
        abort();
    if (a.out.len > 0) {
        struct check c = {0};
        sy_sse_parser p;
        sy_sse_init(&p, 1u << 22);
        if (sy_sse_feed(&p, a.out.data, a.out.len, check_event, &c) != SY_OK || sy_sse_pending(&p))
            abort();
        sy_sse_cleanup(&p);
        if (c.after_end > 0 || c.done > 1 || (c.done && !c.finish) || c.done != a.f.saw_done)
            abort();
    }
    sy_stream_fix_cleanup(&a.f);
    sy_stream_fix_cleanup(&b.f);
    sy_buf_cleanup(&a.out);
    sy_buf_cleanup(&b.out);
    return 0;
}
