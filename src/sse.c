/* sse: incremental text/event-stream parser and event framing.
 *
 * Design decision: bytes are split into lines as they arrive and each complete line is applied
 * at once, so the only state kept between feeds is the unfinished line, the data and event name
 * of the event being built, and whether the last byte was a CR (a CRLF may be split across two
 * feeds). Every buffer is capped by max_event, so a peer that never sends a newline costs at
 * most that many bytes.
 *
 * Departures from the WHATWG algorithm, on purpose:
 * - An event whose data lines are all empty ("data:\n\n") is dispatched with len 0 instead of
 *   dropped: a relaying proxy should not silently swallow what the upstream sent.
 * - A leading byte order mark is not stripped; the upstreams we speak to never send one and
 *   the parser state has no "at start of stream" flag for it.
 * After sy_sse_feed returns an error the stream is broken and must not be fed again. */
#include "switchyard/sse.h"

#include <string.h>

void sy_sse_init(sy_sse_parser *p, size_t max_event)
{
    sy_buf_init(&p->line, max_event);
    sy_buf_init(&p->data, max_event);
    sy_buf_init(&p->event, max_event);
    p->has_data = 0;
    p->last_cr = 0;
    p->stopped = 0;
}

void sy_sse_cleanup(sy_sse_parser *p)
{
    sy_buf_cleanup(&p->line);
    sy_buf_cleanup(&p->data);
    sy_buf_cleanup(&p->event);
    p->has_data = 0;
    p->last_cr = 0;
}

static void dispatch(sy_sse_parser *p, sy_sse_cb cb, void *ud)
{
    if (p->has_data) {
        /* Hand out "" rather than NULL for buffers that never allocated. */
        const char *ev = p->event.data != NULL ? p->event.data : "";
        const char *data = p->data.data != NULL ? p->data.data : "";
        if (cb(ud, ev, data, p->data.len) != 0)
            p->stopped = 1;
    }
    sy_buf_reset(&p->data);
    sy_buf_reset(&p->event);
    p->has_data = 0;
}

static int field_is(const char *f, size_t flen, const char *name)
{
    return flen == strlen(name) && memcmp(f, name, flen) == 0;
}

/* Applies one complete line (without its terminator). */
static sy_err apply_line(sy_sse_parser *p, sy_sse_cb cb, void *ud)
{
    const char *s = p->line.data != NULL ? p->line.data : "";
    size_t n = p->line.len;
    const char *colon;
    const char *val;
    size_t flen;
    size_t vlen;
    sy_err rc;

    if (n == 0) {
        dispatch(p, cb, ud);
        return SY_OK;
    }
    if (s[0] == ':')
        return SY_OK; /* comment, e.g. keep-alive ": ping" */
    colon = memchr(s, ':', n);
    if (colon != NULL) {
        flen = (size_t)(colon - s);
        val = colon + 1;
        vlen = n - flen - 1;
        if (vlen > 0 && val[0] == ' ') {
            val++;
            vlen--;
        }
    } else {
        /* A field name alone means the field with an empty value. */
        flen = n;
        val = "";
        vlen = 0;
    }
    if (field_is(s, flen, "data")) {
        if (p->has_data && (rc = sy_buf_append(&p->data, "\n", 1)) != SY_OK)
            return rc;
        if ((rc = sy_buf_append(&p->data, val, vlen)) != SY_OK)
            return rc;
        p->has_data = 1;
    } else if (field_is(s, flen, "event")) {
        sy_buf_reset(&p->event);
        if ((rc = sy_buf_append(&p->event, val, vlen)) != SY_OK)
            return rc;
    }
    /* "id", "retry" and unknown fields are ignored: we never reconnect with Last-Event-ID. */
    return SY_OK;
}

sy_err sy_sse_feed(sy_sse_parser *p, const char *buf, size_t n, sy_sse_cb cb, void *ud)
{
    size_t i = 0;
    sy_err rc;

    while (i < n && !p->stopped) {
        char c = buf[i];
        if (p->last_cr) {
            p->last_cr = 0;
            if (c == '\n') {
                i++; /* second half of a CRLF whose CR ended the line already */
                continue;
            }
        }
        if (c == '\r' || c == '\n') {
            p->last_cr = c == '\r';
            i++;
            rc = apply_line(p, cb, ud);
            sy_buf_reset(&p->line);
            if (rc != SY_OK)
                return rc;
            continue;
        }
        /* Copy the whole run up to the next line end in one append. */
        size_t j = i;
        while (j < n && buf[j] != '\r' && buf[j] != '\n')
            j++;
        if ((rc = sy_buf_append(&p->line, buf + i, j - i)) != SY_OK)
            return rc;
        i = j;
    }
    return SY_OK;
}

int sy_sse_pending(const sy_sse_parser *p) { return p->line.len > 0 || p->has_data; }

/* sy_buf has no truncate; rolling len back is the one place we touch its fields, so that a
 * failed frame never leaves half an event in <out> for the client to receive. */
static void rollback(sy_buf *b, size_t len)
{
    b->len = len;
    if (b->data != NULL)
        b->data[len] = '\0';
}

static int has_newline(const char *s, size_t n)
{
    return memchr(s, '\n', n) != NULL || memchr(s, '\r', n) != NULL;
}

/* Appends "[event: <event>\n]data: <a><b>\n\n" (<b> may be NULL with blen 0). */
static sy_err frame(sy_buf *out, const char *event, const char *a, size_t alen, const char *b,
                    size_t blen)
{
    size_t old = out->len;
    size_t elen = event != NULL ? strlen(event) : 0;
    size_t need;
    sy_err rc = SY_EINVAL;

    /* A newline here would let the payload start a new field or event (frame injection). */
    if ((alen > 0 && has_newline(a, alen)) || (blen > 0 && has_newline(b, blen)) ||
        has_newline(event != NULL ? event : "", elen))
        goto out;
    rc = SY_ETOOBIG;
    /* so that <need> cannot overflow */
    if (alen > out->max || blen > out->max || elen > out->max)
        goto out;
    need = sizeof("data: \n\n") - 1 + alen + blen +
           (event != NULL ? sizeof("event: \n") - 1 + elen : 0);
    if (need > out->max - out->len)
        goto out;
    if (event != NULL && ((rc = sy_buf_append(out, "event: ", 7)) != SY_OK ||
                          (rc = sy_buf_append(out, event, elen)) != SY_OK ||
                          (rc = sy_buf_append(out, "\n", 1)) != SY_OK))
        goto out;
    if ((rc = sy_buf_append(out, "data: ", 6)) != SY_OK ||
        (rc = sy_buf_append(out, a, alen)) != SY_OK ||
        (rc = sy_buf_append(out, b, blen)) != SY_OK ||
        (rc = sy_buf_append(out, "\n\n", 2)) != SY_OK)
        goto out;
    rc = SY_OK;
out:
    if (rc != SY_OK)
        rollback(out, old);
    return rc;
}

sy_err sy_sse_frame_parts(sy_buf *out, const char *a, size_t alen, const char *b, size_t blen)
{
    return frame(out, NULL, a, alen, b, blen);
}

sy_err sy_sse_frame(sy_buf *out, const char *data, size_t len)
{
    return frame(out, NULL, data, len, NULL, 0);
}

sy_err sy_sse_frame_event(sy_buf *out, const char *event, const char *data, size_t len)
{
    return frame(out, event, data, len, NULL, 0);
}
