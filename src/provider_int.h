/* provider_int: what the providers (provider_openai.c, provider_anthropic.c) share to build the
 * OpenAI stream chunks they send the client. Not a public interface. Pure functions. */
#ifndef SY_PROVIDER_INT_H
#define SY_PROVIDER_INT_H

#include <jansson.h>

#include "switchyard/buf.h"
#include "switchyard/err.h"
#include "switchyard/request.h"

/* Appends <j> (borrowed) to <out> as one SSE event "data: <compact JSON>\n\n". SY_ENOMEM when
 * <j> is NULL (a failed build upstream of the call) or cannot be dumped; SY_ETOOBIG / SY_ENOMEM
 * from <out>. */
sy_err sy_provider_emit(sy_buf *out, const json_t *j);

/* A new chunk envelope for <ep> ("chat.completion.chunk" or "text_completion"):
 * {"id","object","created","model"[,"system_fingerprint"],"choices":[]} in that order, the values
 * borrowed (new references taken); a NULL <id>, <created> or <model> leaves that member out, a
 * NULL <fingerprint> leaves system_fingerprint out (a JSON null is kept). Setting "choices"
 * afterwards keeps its place. NULL on allocation failure. */
json_t *sy_provider_chunk_shell(sy_endpoint ep, json_t *id, json_t *created, json_t *model,
                                json_t *fingerprint);

#endif
