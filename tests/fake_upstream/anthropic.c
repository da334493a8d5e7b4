/*
 * fake_upstream: the Anthropic Messages API specifics that api.c's /messages endpoint uses.
 *
 * Pure functions: request validation as strict as the real API on what a translating proxy can
 * get wrong (headers, max_tokens, roles, sampling parameters under 2026-10-21), the text a
 * "model" answers (tool results included), stop sequences, and the usage and error JSON of
 * the Messages API. api.c keeps the dispatch and the SSE framing.
 */
#include "fake.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int bad(char *msg, size_t msglen, const char **type, const char *t, int status,
               const char *m)
{
    *type = t;
    snprintf(msg, msglen, "%s", m);
    return status;
}

int fake_anth_check(const fake_request *rq, const struct json_t *root, const char **type,
                    char *msg, size_t msglen)
{
    size_t vl = 0;
    const char *version;
    const json_t *msgs, *mt, *m;
    size_t i;
    char vbuf[32];

    if (fake_header(rq, "x-api-key", &vl) == NULL && fake_header(rq, "authorization", &vl) == NULL)
        return bad(msg, msglen, type, "authentication_error", 401,
                   "x-api-key header is required");
    version = fake_header(rq, "anthropic-version", &vl);
    if (version == NULL)
        return bad(msg, msglen, type, "invalid_request_error", 400,
                   "anthropic-version: header is required");
    snprintf(vbuf, sizeof(vbuf), "%.*s", (int)(vl < 31 ? vl : 31), version);
    if (root == NULL)
        return 0; /* the caller answers unparsable bodies */
    if (!json_is_string(json_object_get(root, "model")))
        return bad(msg, msglen, type, "invalid_request_error", 400, "model: Field required");
    mt = json_object_get(root, "max_tokens");
    if (mt == NULL)
        return bad(msg, msglen, type, "invalid_request_error", 400, "max_tokens: Field required");
    if (!json_is_integer(mt) || json_integer_value(mt) < 1)
        return bad(msg, msglen, type, "invalid_request_error", 400,
                   "max_tokens: Input should be greater than or equal to 1");
    msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(msg, msglen, type, "invalid_request_error", 400,
                   "messages: at least one message is required");
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *c = json_object_get(m, "content");
        if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
            snprintf(msg, msglen, "messages.%zu.role: Input should be 'user' or 'assistant'", i);
            *type = "invalid_request_error";
            return 400;
        }
        if (!json_is_string(c) && !json_is_array(c)) {
            snprintf(msg, msglen, "messages.%zu.content: Input should be a string or a list", i);
            *type = "invalid_request_error";
            return 400;
        }
    }
    if (strcmp(vbuf, "2026-10-21") >= 0) {
        static const char *const sampling[] = {"temperature", "top_p", "top_k"};
        for (i = 0; i < 3; i++) {
            if (json_object_get(root, sampling[i]) != NULL) {
                snprintf(msg, msglen, "%s: Extra inputs are not permitted", sampling[i]);
                *type = "invalid_request_error";
                return 400;
            }
        }
    }
    return 0;
}

static const json_t *last_user(const json_t *root)
{
    const json_t *msgs = json_object_get(root, "messages");
    for (size_t i = json_array_size(msgs); i-- > 0;) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role != NULL && strcmp(role, "user") == 0)
            return m;
    }
    return NULL;
}

bool fake_anth_after_tools(const struct json_t *root)
{
    const json_t *c = json_object_get(last_user(root), "content"), *b;
    size_t i;
    json_array_foreach(c, i, b) {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (t != NULL && strcmp(t, "tool_result") == 0)
            return true;
    }
    return false;
}

/* Text of a string or of the text blocks of a block list; tool_result blocks contribute their
 * own content. */
static int blocks_text(fbuf *t, const json_t *c, int depth)
{
    const json_t *b;
    size_t i;
    if (json_is_string(c))
        return fbuf_append(t, json_string_value(c), json_string_length(c));
    json_array_foreach(c, i, b) {
        const char *type = json_string_value(json_object_get(b, "type"));
        const json_t *text = json_object_get(b, "text");
        if (type == NULL)
            continue;
        if (strcmp(type, "text") == 0 && json_is_string(text)) {
            if (fbuf_append(t, json_string_value(text), json_string_length(text)) != 0)
                return -1;
        } else if (strcmp(type, "tool_result") == 0 && depth == 0) {
            if (blocks_text(t, json_object_get(b, "content"), 1) != 0)
                return -1;
        }
    }
    return 0;
}

int fake_anth_user_text(fbuf *t, const struct json_t *root)
{
    return blocks_text(t, json_object_get(last_user(root), "content"), 0);
}

const char *fake_anth_stop(const char *text, size_t n, const struct json_t *root, size_t *at)
{
    const json_t *seqs = json_object_get(root, "stop_sequences"), *s;
    const char *best = NULL;
    size_t i;
    json_array_foreach(seqs, i, s) {
        size_t sl = json_string_length(s);
        const char *hit;
        if (!json_is_string(s) || sl == 0 ||
            (hit = memmem(text, n, json_string_value(s), sl)) == NULL)
            continue;
        if (best == NULL || (size_t)(hit - text) < *at) {
            best = json_string_value(s);
            *at = (size_t)(hit - text);
        }
    }
    return best;
}

int fake_anth_usage(fbuf *o, long input, long output, long cache_read, long cache_write)
{
    return fbuf_printf(o,
                       "{\"input_tokens\":%ld,\"cache_creation_input_tokens\":%ld,"
                       "\"cache_read_input_tokens\":%ld,\"output_tokens\":%ld}",
                       input, cache_write, cache_read, output);
}
