/* provider_openai: everything about speaking to OpenAI-compatible upstreams (OpenAI, Ollama,
 * vLLM, llama.cpp, ...) as pure functions: the upstream request, the normalisation of their
 * answers into exactly what the official SDKs and the OpenAI schema expect, the per-chunk stream
 * fix-ups, and the rewrapping of error bodies of any shape. No I/O. */
#ifndef SY_PROVIDER_OPENAI_H
#define SY_PROVIDER_OPENAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "switchyard/buf.h"
#include "switchyard/config.h"
#include "switchyard/err.h"
#include "switchyard/request.h"

/* The path appended to a deployment's base_url for <ep>, e.g. "/chat/completions". */
const char *sy_openai_path(sy_endpoint ep);

/* Builds the upstream body from the client's <body> (borrowed): the model becomes the
 * deployment's, streams always ask for usage when the deployment allows it, embeddings always
 * ask for floats. Returns a new compact JSON string (length in *len) or NULL on OOM. */
char *sy_openai_upstream_body(const sy_deployment *d, sy_endpoint ep, const json_t *body,
                              bool stream, size_t *len);

/* Normalises a whole (non-stream) success body in place: chat choices get message.refusal and
 * logprobs (null when absent), finish_reason, tool-call types; object/created/id are filled when
 * missing; embeddings are converted to what the client asked (<embed_b64>: base64 float32,
 * otherwise float arrays). Returns SY_OK or SY_EUPSTREAM when the body is not a usable answer
 * (message in <msg>). */
sy_err sy_openai_normalize(sy_endpoint ep, json_t *resp, bool embed_b64, char *msg,
                           size_t msglen);

/* Optional observer of what a provider sends the client, for the prompt cache's accumulator,
 * so that no client-bound chunk is parsed twice. Exactly one call per client-bound SSE event,
 * after it was appended to the output; the provider ignores the observer's troubles (it keeps
 * its own state). All arguments are borrowed for the duration of the call. */
typedef struct sy_stream_observer {
    /* a chunk object the provider built or parsed, exactly as it was sent (after every fix-up):
     * the observer need not parse it */
    void (*chunk)(void *ud, const json_t *chunk);
    /* data the provider did not parse as a chunk: "[DONE]", an error event's body, or a plain
     * delta the OpenAI fast path relayed without a parse (its upstream bytes, which may still
     * hold a "usage":null member the client did not get); the observer parses it, once */
    void (*data)(void *ud, const char *data, size_t len);
} sy_stream_observer;

/* Per-stream state for sy_openai_stream_event. Zero-initialise. */
typedef struct sy_stream_fix {
    bool client_usage; /* the client asked for the usage chunk */
    bool saw_role;     /* a chunk with delta.role went out */
    bool saw_finish;   /* some chunk carried finish_reason */
    bool saw_done;     /* [DONE] arrived */
    bool saw_error;    /* the upstream sent an error event */
    /* Something a client can use went out: content, a refusal, a tool call, a finish_reason,
     * usage or [DONE]; not yet while only the opening role chunk (empty content) did. Until
     * then the relay holds the client-bound bytes back, so that an error event or a cut
     * (Anthropic's overloaded_error right after message_start) is still a failure before the
     * first byte and can fall back (DESIGN §5). */
    bool saw_content;
    /* With saw_error: the HTTP status the error event stands for (Anthropic's
     * overloaded_error 529, rate_limit_error 429...; an OpenAI error's numeric code, else by
     * type, else 500), for answering or falling back when nothing went out yet. */
    int error_status;
    int chunks;        /* chunks passed to the client */
    int fast_chunks;   /* of those, plain deltas relayed byte for byte (no parse, no dump) */
    int tool_calls;    /* tool calls opened so far, for upstreams that omit index */
    json_t *usage;     /* the last usage seen (new reference), for spend; may be NULL */
    char id[64];       /* first chunk id, reused when later chunks lack one */
    char model[128];
    long long created;
    void *pstate;                 /* a provider's own stream state, or NULL */
    void (*pstate_free)(void *);  /* frees pstate at cleanup */
    const sy_stream_observer *obs; /* optional (NULL: none); may be set to NULL from a callback */
    void *obs_ud;                  /* the observer's first argument */
} sy_stream_fix;

void sy_stream_fix_cleanup(sy_stream_fix *f);

/* Handles one upstream SSE event's data (<data>, <len>) for endpoint <ep>, appending the SSE
 * bytes for the client to <out>: fixes chunks (delta.role first, tool-call index, object, id),
 * drops the usage chunk the client did not ask for (keeping the usage), turns an upstream error
 * object into an OpenAI error event (saw_error, error_status), and passes "[DONE]"; sets
 * saw_content as the first chunk beyond the opening role chunk goes out. Returns SY_OK, SY_EUPSTREAM when the
 * data is not valid JSON (nothing appended), or SY_ETOOBIG/SY_ENOMEM from <out>. */
sy_err sy_openai_stream_event(sy_stream_fix *f, sy_endpoint ep, const char *data, size_t len,
                              sy_buf *out);

/* Turns a complete non-stream chat/completions answer into the SSE stream the client asked for
 * (role chunk, content, tool calls with index, finish_reason, usage chunk if <client_usage>,
 * [DONE]). Used when an upstream ignored stream:true, and by cache replay later. */
sy_err sy_openai_to_sse(sy_endpoint ep, const json_t *resp, bool client_usage, sy_buf *out);

/* Rewraps an upstream error answer of any shape (OpenAI's, Ollama's {"error":"..."}, vLLM's
 * top-level object, FastAPI's {"detail":...}, text/plain, empty) as an OpenAI error body with a
 * type fitting <status>. Strings equal to <secret> (a deployment key; may be NULL) are redacted.
 * Returns a new string (length in *len) or NULL on OOM. */
char *sy_openai_wrap_error(int status, const char *body, size_t len, const char *secret,
                           size_t *outlen);

/* The OpenAI error type for an HTTP status (400 -> invalid_request_error, 401 ->
 * authentication_error, 403 -> permission_error, 404 -> not_found_error, 429 ->
 * rate_limit_error, else api_error). */
const char *sy_openai_error_type(int status);

#endif
