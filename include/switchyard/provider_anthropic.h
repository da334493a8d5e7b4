/* provider_anthropic: deployments with "provider": "anthropic" speak the Messages API
 * (POST <base_url>/v1/messages). Clients keep speaking OpenAI; this module translates requests,
 * whole answers, stream events and error bodies both ways, as pure functions (no I/O,
 * thread-safe), reached by the upstream thread through sy_provider_anthropic.
 *
 * Decisions a caller may need to know:
 * - URL: <base_url>/v1/messages, or <base_url>/messages when base_url already ends in "/v1".
 *   Embeddings: SY_EUNSUPPORTED (Anthropic has none). Legacy completions: translated only in the
 *   simple form (one string prompt, no echo/suffix/logprobs/best_of/n>1), else a 400.
 * - Headers: "x-api-key" (never "Authorization") and "anthropic-version" (the deployment's).
 *   Content-Type is added by the upstream thread for every provider.
 * - Versions: anthropic_version >= "2026-10-21" rejects temperature, top_p and top_k even at
 *   their defaults, so they are dropped; older versions get temperature clamped to Anthropic's
 *   0..1 range and top_p/top_k as given.
 * - response_format: json_schema becomes output_config.format {type: json_schema, schema}
 *   (structured outputs, generally available under both versions); json_object has no
 *   Anthropic equivalent and becomes one system instruction to answer with a JSON object only.
 * - Parameters without an Anthropic meaning (penalties, logit_bias, seed, logprobs, ...) are
 *   dropped; n > 1 and the deprecated functions/function_call are a 400.
 * - Prompt caching: client cache_control on content parts, tools and messages passes through,
 *   and OpenAI's prompt_cache_breakpoint becomes cache_control {type: ephemeral}. With the
 *   deployment's auto_cache_control, a request without any client breakpoint whose stable
 *   prefix (tools, system, every turn before the last) is at least
 *   SY_ANTHROPIC_AUTO_CACHE_MIN_TOKENS (estimated at 4 bytes a token) gets breakpoints at the
 *   end of the tools, of the system prompt and of the turn before the last one.
 * - Usage: prompt_tokens = input + cache read + cache write; prompt_tokens_details has
 *   cached_tokens (cache read) and cache_write_tokens (cache write), so spend prices each at
 *   its rate.
 * - Errors keep their HTTP status (529 overloaded included: it is retryable for the upstream
 *   thread, and the SDKs retry any 5xx); the body becomes an OpenAI error with a type fitting
 *   the Anthropic one and the Anthropic request id in the message. */
#ifndef SY_PROVIDER_ANTHROPIC_H
#define SY_PROVIDER_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "switchyard/buf.h"
#include "switchyard/config.h"
#include "switchyard/err.h"
#include "switchyard/provider.h"
#include "switchyard/request.h"

#define SY_ANTHROPIC_AUTO_CACHE_MIN_TOKENS 1024

extern const sy_provider_ops sy_provider_anthropic;

/* Writes the attempt's URL for <ep> into <url> (<n> bytes). SY_EUNSUPPORTED for embeddings,
 * SY_EINVAL when it does not fit. */
sy_err sy_anthropic_url(const sy_deployment *d, sy_endpoint ep, char *url, size_t n);

/* The Messages API body for the client's OpenAI <body> (borrowed, not modified). Returns a new
 * compact JSON string (length in *len), or NULL: then <msg> (at least 1 byte) says why the
 * request cannot be translated (a client error, 400), or is "" when memory ran out. */
char *sy_anthropic_request(const sy_deployment *d, sy_endpoint ep, const json_t *body, bool stream,
                           size_t *len, char *msg, size_t msglen);

/* Appends "x-api-key" (when the deployment has a key) and "anthropic-version" to <h>; returns
 * the new list, or NULL on OOM with <h> freed. */
struct curl_slist *sy_anthropic_headers(const sy_deployment *d, struct curl_slist *h);

/* Turns a whole Messages answer into the OpenAI answer for <ep> (chat.completion or
 * text_completion), replacing *resp (the old value is released). SY_EUPSTREAM with <msg> when
 * the answer is not a message; SY_ENOMEM. */
sy_err sy_anthropic_normalize(sy_endpoint ep, json_t **resp, char *msg, size_t msglen);

/* One upstream SSE event (<event>: its name, "" when unnamed; <data>, <len>: its data) into
 * client SSE bytes appended to <out>: role chunk on message_start, content and tool-call deltas
 * (index, id, name, then argument fragments), finish_reason on message_delta, the usage chunk
 * (only when f->client_usage) and "[DONE]" on message_stop (f->saw_done set), an OpenAI error
 * event on error (f->saw_error set, f->error_status from the error's type: overloaded_error 529,
 * rate_limit_error 429, api_error 500...). f->saw_content is set by the first chunk after the
 * role chunk (content, tool call, finish). Thinking, signature, citation deltas, ping and unknown
 * events produce nothing. f->usage always holds the latest usage (OpenAI shape). Memory is
 * bounded: per stream a small fixed state in f->pstate (freed by sy_stream_fix_cleanup), per
 * event what that event produces. SY_EUPSTREAM when <data> is not a JSON object or the events
 * are out of order; SY_ETOOBIG/SY_ENOMEM from <out>. */
sy_err sy_anthropic_stream_event(sy_stream_fix *f, sy_endpoint ep, const char *event,
                                 const char *data, size_t len, sy_buf *out);

/* An Anthropic error answer ({"type":"error","error":{"type","message"},"request_id"}) into an
 * OpenAI error body; other shapes are rewrapped as sy_openai_wrap_error does. Strings equal to
 * <secret> are redacted. New string (length in *outlen) or NULL on OOM. */
char *sy_anthropic_wrap_error(int status, const char *body, size_t len, const char *secret,
                              size_t *outlen);

/* The OpenAI finish_reason for an Anthropic stop_reason (NULL -> "stop"). Static string. */
const char *sy_anthropic_finish_reason(const char *stop_reason);

#endif
