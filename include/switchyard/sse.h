/* sse: an incremental, bounded Server-Sent Events parser (text/event-stream, WHATWG rules:
 * lines end in LF, CRLF or CR; "data:" lines join with LF; an optional single space after the
 * colon is removed; lines starting with ':' are comments; a blank line dispatches), and the
 * framing of outgoing events. Pure: no I/O, callers feed bytes in any split. */
#ifndef SY_SSE_H
#define SY_SSE_H

#include <stddef.h>

#include "switchyard/buf.h"
#include "switchyard/err.h"

/* Called once per dispatched event that has data. <event> is the event name ("" when none).
 * <data> is NUL-terminated. Return 0 to continue, non-zero to stop: sy_sse_feed then returns
 * SY_OK at once, sets p->stopped, and ignores all later input. */
typedef int (*sy_sse_cb)(void *ud, const char *event, const char *data, size_t len);

typedef struct sy_sse_parser {
    /* private */
    sy_buf line;
    sy_buf data;
    sy_buf event;
    int has_data;
    int last_cr; /* previous chunk ended in CR: skip a leading LF */
    int stopped;
} sy_sse_parser;

/* <max_event> caps the bytes of one event (line and data); past it sy_sse_feed fails with
 * SY_ETOOBIG. */
void sy_sse_init(sy_sse_parser *p, size_t max_event);
void sy_sse_cleanup(sy_sse_parser *p);
/* Feeds <n> bytes; calls <cb> for each complete event. SY_OK, SY_ETOOBIG, SY_ENOMEM. */
sy_err sy_sse_feed(sy_sse_parser *p, const char *buf, size_t n, sy_sse_cb cb, void *ud);
/* True when bytes of an unfinished event are pending (a stream that ends here was cut). */
int sy_sse_pending(const sy_sse_parser *p);

/* Appends "data: <data>\n\n" to <out> (data must not contain newlines; JSON from jansson's
 * compact dump never does). */
sy_err sy_sse_frame(sy_buf *out, const char *data, size_t len);
/* The same for data given in two pieces (joined without a separator). */
sy_err sy_sse_frame_parts(sy_buf *out, const char *a, size_t alen, const char *b, size_t blen);
/* Appends "event: <event>\ndata: <data>\n\n". */
sy_err sy_sse_frame_event(sy_buf *out, const char *event, const char *data, size_t len);

#endif
