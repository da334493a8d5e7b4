/*
 * fake_upstream: shared declarations of the fake OpenAI-compatible server.
 *
 * Three parts: server.c owns sockets, the epoll loops and the timers (all I/O); api.c turns one
 * complete request into a reply and generates stream events (pure, no I/O, no clock reads except
 * time(NULL) for "created"); stats.c holds the process-wide counters and the last request.
 * Behaviour is specified in README.md next to this file.
 */
#ifndef SY_FAKE_H
#define SY_FAKE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ buffers ---------------- */

/* A growable byte buffer. Storage owned by the caller: fbuf_init / fbuf_cleanup. Every buffer
 * is capped at FBUF_CAP bytes; growing past it fails like an allocation failure. */
typedef struct fbuf {
    char *p;
    size_t len;
    size_t cap;
} fbuf;

#define FBUF_CAP ((size_t)512 << 20)

void fbuf_init(fbuf *b);
void fbuf_cleanup(fbuf *b);
/* Makes room for <extra> more bytes. Returns 0, or -1 (cap reached or no memory). */
int fbuf_reserve(fbuf *b, size_t extra);
int fbuf_append(fbuf *b, const void *data, size_t n);
int fbuf_puts(fbuf *b, const char *s);
int fbuf_printf(fbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends <s>[0..n) as a quoted JSON string. <s> must be valid UTF-8 (bytes >= 0x80 are
 * copied as they are). */
int fbuf_json_str(fbuf *b, const char *s, size_t n);
/* Appends <n> bytes as standard base64 (with padding). */
int fbuf_base64(fbuf *b, const unsigned char *data, size_t n);

/* ------------------------------------------------------------------ requests and replies --- */

/* One complete HTTP request, borrowed from the connection's read buffer for the duration of
 * fake_handle(). <headers> is the raw header block without the request line. */
typedef struct fake_request {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *headers;
    size_t headers_len;
    const char *body;
    size_t body_len;
    int http_minor; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
} fake_request;

typedef struct fake_stream fake_stream;

/* What to answer. fake_handle() fills it; the server owns it afterwards and releases it with
 * fake_reply_cleanup(). Exactly one of: <stall>, <stream> != NULL, or a buffered response
 * (<status>, <ctype>, <body>). */
typedef struct fake_reply {
    int status;
    const char *ctype;    /* static string */
    int retry_after;      /* seconds, -1 = no Retry-After header */
    fbuf body;            /* the whole response body */
    fake_stream *stream;  /* new; an SSE answer, generated event by event */
    unsigned first_byte_ms;
    bool stall;           /* never answer */
    bool drop_half;       /* send the headers and half the body, then close */
    bool is_stream;       /* the client asked for a stream (counts in streams_*) */
} fake_reply;

void fake_reply_init(fake_reply *r);
void fake_reply_cleanup(fake_reply *r);

/* Handles one request. Returns 0, or -1 when out of memory (the reply is then unusable and the
 * caller answers 503 itself). Thread-safe. */
int fake_handle(const fake_request *req, fake_reply *out);

/* Writes a complete buffered error response (status line, headers, OpenAI-shaped body) for
 * protocol-level failures found before a request could be handled (400, 413, 431...). */
int fake_protocol_error(fbuf *out, int status, const char *message);

/* Status line reason phrase ("OK", "Not Found"...); never NULL. */
const char *fake_reason(int status);

/* The value of header <name> (case-insensitive) in <rq>'s header block, or NULL. */
const char *fake_header(const fake_request *rq, const char *name, size_t *vlen);

struct json_t;

/* Appends <j> (stolen) to <out> as compact JSON. 0, or -1 (<j> NULL or out of memory). */
int fake_json_take(fbuf *out, struct json_t *j);
/* Replaces <r>'s body with <j> (stolen) as application/json with <status>. Returns 1 (reply
 * filled), or -1 (<j> NULL or out of memory), as the batch handlers do. */
int fake_json_reply(fake_reply *r, int status, struct json_t *j);

/* ------------------------------------------------------------------ streams ---------------- */

typedef enum fake_step {
    FAKE_STEP_MORE, /* emitted an event; more follow after the pacing interval */
    FAKE_STEP_END,  /* emitted the tail ([DONE] and the terminating chunk): stream complete */
    FAKE_STEP_DROP, /* emitted what it should; close the connection once it is flushed */
    FAKE_STEP_FAIL  /* out of memory */
} fake_step;

/* Appends the response head and the first event(s) to <out>. <chunked> selects chunked
 * transfer encoding (HTTP/1.1); without it the body is delimited by closing the connection. */
fake_step fake_stream_start(fake_stream *s, fbuf *out, bool chunked);
/* Appends the next content event (and the tail after the last one) to <out>. */
fake_step fake_stream_next(fake_stream *s, fbuf *out);
unsigned fake_stream_interval_ms(const fake_stream *s);
void fake_stream_free(fake_stream *s);

/* ------------------------------------------------------------------ Anthropic ------------- */

/* Helpers of the /messages endpoint (anthropic.c; pure). <root> is the parsed request body. */

/* Checks a Messages request the way the real API does on what a translating proxy can get
 * wrong: an x-api-key (or Authorization) header, the anthropic-version header, model,
 * max_tokens, user/assistant roles only, and no temperature/top_p/top_k under 2026-10-21 or
 * later. Returns 0 when fine, else the HTTP status with <msg> (the error type in *type).
 * <root> NULL checks the headers only. */
int fake_anth_check(const fake_request *rq, const struct json_t *root, const char **type,
                    char *msg, size_t msglen);
/* True when the last user message carries tool_result blocks: the fake then answers with text,
 * as a model does once it has its tool results. */
bool fake_anth_after_tools(const struct json_t *root);
/* Appends the text of the last user message (string content, text blocks, and the content of
 * tool_result blocks). */
int fake_anth_user_text(fbuf *t, const struct json_t *root);
/* The earliest of the request's stop_sequences found in <text>[0..n): returns it (borrowed)
 * with its offset in *at, or NULL. */
const char *fake_anth_stop(const char *text, size_t n, const struct json_t *root, size_t *at);
/* Appends a Messages usage object with the cache fields. */
int fake_anth_usage(fbuf *o, long input, long output, long cache_read, long cache_write);

/* ------------------------------------------------------------------ provider batches ------ */

/* OpenAI Files + Batches (batch_openai.c) and Anthropic Message Batches (batch_anthropic.c),
 * kept in memory. Lines run when a batch ends, each answered by fake_handle_line exactly as the
 * endpoint would answer it directly (its [[fake ...]] directives included). */

/* Per-batch behaviour from the path directives of the creating request. */
typedef struct fake_batch_opts {
    long polls;        /* batch_polls: retrieves before the batch ends (default 2) */
    long delay_ms;     /* batch_ms: and at least this long after creation (default 0) */
    long expire_after; /* batch_expire_after: lines past the first N expire; -1 = none */
    long cancel_keep;  /* batch_cancel_keep: a cancelled batch still ran its first N lines */
    long cancel_polls; /* batch_cancel_polls: retrieves a cancel takes to end (default 0: the
                          next retrieve ends it) */
} fake_batch_opts;

/* 0: not a batch path; 1: OpenAI files/batches; 2: Anthropic message batches. */
int fake_batch_kind(const char *path, size_t plen);
/* Handle one request on a path of that kind. Return 1 (reply filled) or -1 (out of memory). */
int fake_batch_openai(const fake_request *rq, const char *path, size_t plen,
                      const fake_batch_opts *o, fake_reply *r);
int fake_batch_anthropic(const fake_request *rq, const char *path, size_t plen,
                         const fake_batch_opts *o, fake_reply *r);
/* Answers one batch line (<rq>: method, target, the batch request's headers, the line's body)
 * as fake_handle would, without counting it in the stats or /_last. Returns 0 or -1 (OOM). */
int fake_handle_line(const fake_request *rq, fake_reply *r);
/* Fills <r> with an error reply in the OpenAI or Anthropic shape. 0 or -1. */
int fake_error_reply(fake_reply *r, bool anthropic, int status, const char *msg);
/* Counts one executed batch line under <custom_id> (batch_line_runs in /_stats). */
void fake_batch_line_ran(const char *custom_id);
/* Adds "batch_line_runs" ({custom_id: times run}) and "batch_line_dups" (custom_ids run more
 * than once) to the /_stats object <o>; 0 or -1. */
int fake_batch_stats(struct json_t *o);
void fake_batch_stats_reset(void);

/* ------------------------------------------------------------------ stats ------------------ */

#define FAKE_STATS(X)                                                                            \
    X(requests)                                                                                  \
    X(chat)                                                                                      \
    X(completions)                                                                               \
    X(embeddings)                                                                                \
    X(models)                                                                                    \
    X(messages)                                                                                  \
    X(files)                                                                                     \
    X(batches)                                                                                   \
    X(message_batches)                                                                           \
    X(batch_lines)                                                                               \
    X(streams_started)                                                                           \
    X(streams_completed)                                                                         \
    X(streams_cancelled)                                                                         \
    X(streams_dropped)                                                                           \
    X(requests_cancelled)                                                                        \
    X(active_streams)                                                                            \
    X(connections)                                                                               \
    X(active_connections)

typedef enum fake_stat {
#define FAKE_STAT_ENUM(name) FAKE_STAT_##name,
    FAKE_STATS(FAKE_STAT_ENUM)
#undef FAKE_STAT_ENUM
        FAKE_STAT_COUNT
} fake_stat;

/* Atomic, callable from any thread. */
void fake_stat_add(fake_stat s, long long delta);
/* New JSON text of all counters; NULL when out of memory. Caller frees. */
char *fake_stats_json(void);
/* Zeroes the counters (not the active_* gauges) and forgets the last request. */
void fake_stats_reset(void);

/* Remembers <req> as the last API request (copies it). Thread-safe. */
void fake_last_record(const fake_request *req);
/* New JSON text describing the last request ("null" when none); NULL when out of memory. */
char *fake_last_json(void);
void fake_last_cleanup(void);

/* reqlog.c: every API request's path and body (GET /_reqlog; POST /_reqlog clears). */
void fake_reqlog_record(const fake_request *req);
char *fake_reqlog_json(bool clear);
void fake_reqlog_cleanup(void);

/* ------------------------------------------------------------------ server ----------------- */

typedef struct fake_server fake_server;

/* Binds <nthreads> SO_REUSEPORT listeners on <host>:<port> (port 0 = pick one). Writes one
 * line to <err> on failure. */
int fake_server_new(const char *host, const char *port, int nthreads, fake_server **out,
                    char *err, size_t errlen);
/* The bound address, e.g. "127.0.0.1:40123". */
const char *fake_server_address(const fake_server *s);
/* Starts one thread per listener. */
int fake_server_start(fake_server *s, char *err, size_t errlen);
/* Stops the threads (if started) and frees everything. NULL is a no-op. */
void fake_server_free(fake_server *s);
/* CLOCK_MONOTONIC in milliseconds (timers, batch delays). */
int64_t fake_mono_ms(void);

#endif
