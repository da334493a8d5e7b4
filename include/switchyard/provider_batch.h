/* provider_batch: a provider's own batch API (OpenAI Files + Batches, Anthropic Message
 * Batches) for batch lines whose chosen deployment has "batch_api": true (DESIGN §9), at the
 * provider's batch discount.
 *
 * The one design decision: these are blocking libcurl easy calls, meant for batch worker and
 * sweeper threads (never the MHD or curl threads). Each call is bounded by the deployment's
 * connect and total timeouts; TLS is always verified; redirects are not followed. The
 * deployment's API key goes only into the auth header and is never logged; provider error
 * bodies are rewrapped OpenAI-style with the key redacted.
 *
 * Lines speak OpenAI on both sides: a line's body is the client's OpenAI request, translated for
 * the deployment exactly as an interactive request is (sy_provider_get(d->provider)->body: the
 * deployment's model substituted; Anthropic: sy_anthropic_request into "params"), and every
 * result is an OpenAI answer (Anthropic messages normalized with sy_anthropic_normalize) or an
 * OpenAI error body.
 *
 * Memory is bounded: the upload is written to an unlinked temporary file and streamed from it;
 * results are streamed and handed to the callback one line at a time (each line at most
 * SY_PROVIDER_BATCH_MAX_LINE bytes); other answers are capped at SY_PROVIDER_BATCH_MAX_JSON.
 *
 * Thread-safety: every function is reentrant (no shared state); curl_global_init must have run
 * (main does it). */
#ifndef SY_PROVIDER_BATCH_H
#define SY_PROVIDER_BATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "switchyard/config.h"
#include "switchyard/err.h"
#include "switchyard/prices.h"
#include "switchyard/request.h"

#define SY_PROVIDER_BATCH_MAX_JSON ((size_t)16 << 20) /* a batch or file object answer */
#define SY_PROVIDER_BATCH_MAX_LINE ((size_t)64 << 20) /* one results line */
#define SY_PROVIDER_BATCH_ID_MAX 128                   /* provider batch ids fit in this */

/* A failed call: the HTTP status for the client (the provider's, or 502/504 for transport
 * failures) and a new OpenAI error body ({"error":{"message","type","param","code"}}), free()d
 * by sy_provider_batch_error_cleanup. Zero-initialise; every call resets it. */
typedef struct sy_provider_batch_error {
    int status;
    char *body;
} sy_provider_batch_error;

void sy_provider_batch_error_cleanup(sy_provider_batch_error *e);

/* One line to submit: its custom_id (unique in the batch, at most 64 bytes for Anthropic) and
 * its OpenAI request body (borrowed). */
typedef struct sy_provider_batch_line {
    const char *custom_id;
    const json_t *body;
} sy_provider_batch_line;

/* A line that cannot be translated for the deployment (a client error): it is left out of the
 * submitted batch and reported here with its index and a 400 OpenAI error body (borrowed for
 * the call). */
typedef void (*sy_provider_batch_reject_fn)(void *ud, size_t index, const char *custom_id,
                                            const char *error_body);

/* Submits <lines>[0..n) for endpoint <ep> (SY_EP_CHAT, SY_EP_COMPLETIONS; SY_EP_EMBEDDINGS for
 * OpenAI only) as one provider batch. OpenAI: uploads the JSONL ({"custom_id","method":"POST",
 * "url":"/v1/...","body"}) to <base_url>/files (multipart, purpose "batch") and creates the
 * batch at <base_url>/batches with metadata {"switchyard_tag": <tag>} (<tag> may be NULL).
 * Anthropic: POST <messages url>/batches with {"requests":[{"custom_id","params"}]}.
 * On success writes the provider batch id to <id> (<idlen> >= SY_PROVIDER_BATCH_ID_MAX) and the
 * number of lines sent to *submitted; when every line was rejected nothing is sent, *submitted
 * is 0 and <id> is "". Errors: SY_EUPSTREAM/SY_ETIMEOUT (transport, or the provider's error in
 * <e>), SY_EUNSUPPORTED (endpoint), SY_ENOMEM, SY_EINTERNAL (temporary file). A failure after
 * the upload (OpenAI) leaves the uploaded file at the provider (it is deleted on a best-effort
 * basis). */
sy_err sy_provider_batch_submit(const sy_deployment *d, sy_endpoint ep,
                                const sy_provider_batch_line *lines, size_t n, const char *tag,
                                sy_provider_batch_reject_fn reject, void *ud, char *id,
                                size_t idlen, size_t *submitted, sy_provider_batch_error *e);

typedef enum sy_provider_batch_state {
    SY_PROVIDER_BATCH_PENDING,   /* validating, in_progress, finalizing, cancelling/canceling */
    SY_PROVIDER_BATCH_ENDED,     /* completed / ended: results are ready */
    SY_PROVIDER_BATCH_FAILED,    /* OpenAI "failed" (input rejected): no results */
    SY_PROVIDER_BATCH_EXPIRED,   /* OpenAI "expired": results of the lines that ran */
    SY_PROVIDER_BATCH_CANCELLED  /* OpenAI "cancelled": results of the lines that ran */
} sy_provider_batch_state;

typedef struct sy_provider_batch_status {
    sy_provider_batch_state state;
    char provider_status[32]; /* the provider's own word ("in_progress", "ended", ...) */
    long total;               /* lines in the batch */
    long succeeded;           /* OpenAI completed / Anthropic succeeded */
    long errored;             /* OpenAI failed / Anthropic errored + canceled + expired */
    long pending;             /* not finished yet */
    char message[256];        /* FAILED: the provider's first error, else "" */
} sy_provider_batch_status;

/* Retrieves batch <id>. Errors as for submit (a 404 from the provider is SY_ENOTFOUND). */
sy_err sy_provider_batch_poll(const sy_deployment *d, const char *id,
                              sy_provider_batch_status *st, sy_provider_batch_error *e);

/* One result line. Everything is borrowed for the duration of the callback. */
typedef struct sy_provider_batch_result {
    const char *custom_id;
    int status;         /* the line's HTTP status: 2xx answered, >= 400 the provider's error,
                           0 = never ran (expired or cancelled: not billed) */
    const json_t *body; /* the OpenAI answer (chat.completion, text_completion, embeddings) or
                           an OpenAI error body {"error":{...}} ("code" batch_expired or
                           batch_cancelled when status is 0) */
    sy_usage usage;     /* from the answer's usage (zero when none) */
    bool has_usage;
} sy_provider_batch_result;

/* Return 0 to go on, anything else to stop (sy_provider_batch_results then returns
 * SY_EINTERNAL). */
typedef int (*sy_provider_batch_result_fn)(void *ud, const sy_provider_batch_result *r);

/* Streams the results of ended batch <id> (answers of endpoint <ep>) through <fn>, one call per
 * line: OpenAI reads the output file then the error file; Anthropic the results JSONL. A line
 * that does not parse or lacks a custom_id is skipped (logged). Errors as for poll;
 * SY_ETOOBIG when one line passes SY_PROVIDER_BATCH_MAX_LINE. A caller that stops half-way (or
 * fails) may call it again: the results are re-read from the start. */
sy_err sy_provider_batch_results(const sy_deployment *d, sy_endpoint ep, const char *id,
                                 sy_provider_batch_result_fn fn, void *ud,
                                 sy_provider_batch_error *e);

/* Asks the provider to cancel batch <id> (poll until it is no longer PENDING). */
sy_err sy_provider_batch_cancel(const sy_deployment *d, const char *id,
                                sy_provider_batch_error *e);

#endif
