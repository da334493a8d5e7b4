/* provider: the seam between the relay and an upstream's wire protocol. The upstream thread
 * knows nothing of OpenAI or Anthropic formats: it asks the deployment's provider for the URL,
 * headers and body of an attempt, and hands back whole answers, stream events and error bodies
 * for translation into what an OpenAI client expects. Every function is pure (no I/O) and
 * thread-safe. */
#ifndef SY_PROVIDER_H
#define SY_PROVIDER_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>

#include "switchyard/buf.h"
#include "switchyard/config.h"
#include "switchyard/err.h"
#include "switchyard/provider_openai.h"
#include "switchyard/request.h"

typedef struct sy_provider_ops {
    const char *name;
    /* Writes the attempt's URL into <url>. SY_EUNSUPPORTED when the provider has no such
     * endpoint (e.g. embeddings on Anthropic), SY_EINVAL when it does not fit. */
    sy_err (*url)(const sy_deployment *d, sy_endpoint ep, char *url, size_t n);
    /* The upstream request body for the client's <body> (borrowed); new string or NULL. When
     * NULL, *msg (if set by the provider) says why the request cannot be translated. */
    char *(*body)(const sy_deployment *d, sy_endpoint ep, const json_t *body, bool stream,
                  size_t *len, char *msg, size_t msglen);
    /* Appends the provider's auth and protocol headers; returns the new list (NULL on OOM). */
    struct curl_slist *(*headers)(const sy_deployment *d, struct curl_slist *h);
    /* Turns a whole success answer into the OpenAI answer. May replace *resp (the old value is
     * released). SY_EUPSTREAM with <msg> when the answer is unusable. */
    sy_err (*normalize)(sy_endpoint ep, json_t **resp, bool embed_b64, char *msg,
                        size_t msglen);
    /* One upstream SSE event (<event> is "" when unnamed) into client SSE bytes; see
     * sy_openai_stream_event for the contract. */
    sy_err (*stream_event)(sy_stream_fix *f, sy_endpoint ep, const char *event,
                           const char *data, size_t len, sy_buf *out);
    /* An upstream error answer into an OpenAI error body; see sy_openai_wrap_error. The relay
     * also gives it the data of an error event that came before any content (with the
     * stream's error_status), which then answers the client like an error status would. */
    char *(*wrap_error)(int status, const char *body, size_t len, const char *secret,
                        size_t *outlen);
} sy_provider_ops;

/* The ops for <p>, or NULL when this build does not speak that provider. */
const sy_provider_ops *sy_provider_get(sy_provider p);

/* Appends <s> to *<l>. When curl cannot allocate, the whole list is freed, *<l> becomes NULL
 * and false is returned (curl_slist_append alone would leak the list it was given). Chain
 * calls with && so nothing is appended after a failure. */
bool sy_slist_add(struct curl_slist **l, const char *s);

extern const sy_provider_ops sy_provider_openai;

#endif
