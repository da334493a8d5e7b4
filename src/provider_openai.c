/* provider_openai: OpenAI-compatible upstreams. Local servers (Ollama, vLLM, llama.cpp) differ
 * from OpenAI in small ways that break the official SDKs (no refusal/logprobs, tool-call deltas
 * without index, arguments as objects, errors in their own shapes); every answer is normalised
 * here, as pure functions on jansson values, so the relay never forwards a body the SDKs reject. */
#include "switchyard/provider_openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "provider_int.h"
#include "switchyard/json_util.h"
#include "switchyard/sse.h"

const char *sy_openai_path(sy_endpoint ep)
{
    switch (ep) {
    case SY_EP_CHAT:
        return "/chat/completions";
    case SY_EP_COMPLETIONS:
        return "/completions";
    case SY_EP_EMBEDDINGS:
        return "/embeddings";
    }
    return "/";
}

char *sy_openai_upstream_body(const sy_deployment *d, sy_endpoint ep, const json_t *body,
                              bool stream, size_t *len)
{
    char *out = NULL;
    json_t *b = json_copy((json_t *)body); /* shallow: only top-level keys change */
    if (b == NULL)
        return NULL;
    if (json_object_set_new(b, "model", json_string(d->model)) != 0)
        goto out;
    if (ep == SY_EP_EMBEDDINGS) {
        /* Many local servers only speak floats; the proxy encodes base64 itself. */
        json_object_del(b, "encoding_format");
    } else if (stream && d->stream_usage) {
        json_t *so = json_object_get(b, "stream_options");
        json_t *nso = json_is_object(so) ? json_copy(so) : json_object();
        if (nso == NULL || json_object_set_new(nso, "include_usage", json_true()) != 0 ||
            json_object_set_new(b, "stream_options", nso) != 0) {
            json_decref(nso);
            goto out;
        }
    }
    out = sy_json_dump(b, len);
out:
    json_decref(b);
    return out;
}

/* ---- normalisation ---- */

static int set_if_missing(json_t *o, const char *k, json_t *v)
{
    if (json_object_get(o, k) != NULL) {
        json_decref(v);
        return 0;
    }
    return json_object_set_new(o, k, v);
}

static int set_null_if_missing(json_t *o, const char *k)
{
    return set_if_missing(o, k, json_null());
}

/* Ollama sends tool-call arguments as an object; the SDKs expect a JSON string. */
static int fix_tool_call(json_t *tc, int index, bool in_stream, bool assign_index)
{
    if (!json_is_object(tc))
        return -1;
    if (assign_index && json_object_get(tc, "index") == NULL)
        json_object_set_new(tc, "index", json_integer(index));
    json_t *fn = json_object_get(tc, "function");
    if (json_is_object(fn)) {
        json_t *args = json_object_get(fn, "arguments");
        if (args != NULL && !json_is_string(args) && !json_is_null(args)) {
            char *s = sy_json_dump(args, NULL);
            if (s == NULL)
                return -1;
            json_object_set_new(fn, "arguments", json_string(s));
            free(s);
        } else if (args == NULL && !in_stream) {
            json_object_set_new(fn, "arguments", json_string("{}"));
        }
    }
    if (json_object_get(tc, "id") != NULL || !in_stream)
        set_if_missing(tc, "type", json_string("function"));
    if (!in_stream && json_object_get(tc, "id") == NULL) {
        char id[32];
        snprintf(id, sizeof(id), "call_sy%d", index);
        json_object_set_new(tc, "id", json_string(id));
    }
    return 0;
}

static void fill_envelope(json_t *resp, const char *object, const char *idprefix)
{
    json_object_set_new(resp, "object", json_string(object));
    if (!json_is_string(json_object_get(resp, "id"))) {
        char id[48];
        snprintf(id, sizeof(id), "%s-sy%lx", idprefix, (unsigned long)time(NULL));
        json_object_set_new(resp, "id", json_string(id));
    }
    if (!json_is_integer(json_object_get(resp, "created")))
        json_object_set_new(resp, "created", json_integer((json_int_t)time(NULL)));
    if (!json_is_string(json_object_get(resp, "model")))
        json_object_set_new(resp, "model", json_string("unknown"));
}

static sy_err normalize_chat(json_t *resp, char *msg, size_t msglen)
{
    json_t *choices = json_object_get(resp, "choices");
    if (!json_is_array(choices)) {
        snprintf(msg, msglen, "upstream answer has no choices");
        return SY_EUPSTREAM;
    }
    fill_envelope(resp, "chat.completion", "chatcmpl");
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        if (!json_is_object(c)) {
            snprintf(msg, msglen, "upstream choice %zu is not an object", i);
            return SY_EUPSTREAM;
        }
        if (!json_is_integer(json_object_get(c, "index")))
            json_object_set_new(c, "index", json_integer((json_int_t)i));
        json_t *m = json_object_get(c, "message");
        if (!json_is_object(m)) {
            snprintf(msg, msglen, "upstream choice %zu has no message", i);
            return SY_EUPSTREAM;
        }
        if (!json_is_string(json_object_get(m, "role")))
            json_object_set_new(m, "role", json_string("assistant"));
        set_null_if_missing(m, "content");
        set_null_if_missing(m, "refusal");
        json_t *tcs = json_object_get(m, "tool_calls");
        if (json_is_array(tcs)) {
            if (json_array_size(tcs) == 0) {
                json_object_del(m, "tool_calls");
            } else {
                size_t j;
                json_t *tc;
                json_array_foreach(tcs, j, tc)
                {
                    if (fix_tool_call(tc, (int)j, false, false) != 0) {
                        snprintf(msg, msglen, "upstream tool call %zu is malformed", j);
                        return SY_EUPSTREAM;
                    }
                }
            }
        } else if (tcs != NULL) {
            json_object_del(m, "tool_calls");
        }
        set_null_if_missing(c, "logprobs");
        if (!json_is_string(json_object_get(c, "finish_reason")))
            json_object_set_new(c, "finish_reason",
                                json_string(json_is_array(json_object_get(m, "tool_calls"))
                                                ? "tool_calls"
                                                : "stop"));
    }
    return SY_OK;
}

static sy_err normalize_completion(json_t *resp, char *msg, size_t msglen)
{
    json_t *choices = json_object_get(resp, "choices");
    if (!json_is_array(choices)) {
        snprintf(msg, msglen, "upstream answer has no choices");
        return SY_EUPSTREAM;
    }
    fill_envelope(resp, "text_completion", "cmpl");
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        if (!json_is_object(c)) {
            snprintf(msg, msglen, "upstream choice %zu is not an object", i);
            return SY_EUPSTREAM;
        }
        if (!json_is_integer(json_object_get(c, "index")))
            json_object_set_new(c, "index", json_integer((json_int_t)i));
        if (!json_is_string(json_object_get(c, "text")))
            json_object_set_new(c, "text", json_string(""));
        set_null_if_missing(c, "logprobs");
        if (!json_is_string(json_object_get(c, "finish_reason")))
            json_object_set_new(c, "finish_reason", json_string("stop"));
    }
    return SY_OK;
}

static sy_err normalize_embeddings(json_t *resp, bool b64, char *msg, size_t msglen)
{
    json_t *data = json_object_get(resp, "data");
    if (!json_is_array(data)) {
        snprintf(msg, msglen, "upstream answer has no data");
        return SY_EUPSTREAM;
    }
    json_object_set_new(resp, "object", json_string("list"));
    if (!json_is_string(json_object_get(resp, "model")))
        json_object_set_new(resp, "model", json_string("unknown"));
    size_t i;
    json_t *e;
    json_array_foreach(data, i, e)
    {
        if (!json_is_object(e)) {
            snprintf(msg, msglen, "upstream embedding %zu is not an object", i);
            return SY_EUPSTREAM;
        }
        json_object_set_new(e, "object", json_string("embedding"));
        if (!json_is_integer(json_object_get(e, "index")))
            json_object_set_new(e, "index", json_integer((json_int_t)i));
        json_t *v = json_object_get(e, "embedding");
        json_t *conv = NULL;
        if (json_is_array(v) && b64)
            conv = sy_json_floats_to_b64(v);
        else if (json_is_string(v) && !b64)
            conv = sy_json_b64_to_floats(json_string_value(v), json_string_length(v));
        else if (json_is_array(v) || json_is_string(v))
            continue;
        if (conv == NULL) {
            snprintf(msg, msglen, "upstream embedding %zu is malformed", i);
            return SY_EUPSTREAM;
        }
        json_object_set_new(e, "embedding", conv);
    }
    json_t *u = json_object_get(resp, "usage");
    if (!json_is_object(u)) {
        u = json_object();
        json_object_set_new(resp, "usage", u);
    }
    if (!json_is_integer(json_object_get(u, "prompt_tokens")))
        json_object_set_new(u, "prompt_tokens", json_integer(0));
    if (!json_is_integer(json_object_get(u, "total_tokens")))
        json_object_set(u, "total_tokens", json_object_get(u, "prompt_tokens"));
    return SY_OK;
}

sy_err sy_openai_normalize(sy_endpoint ep, json_t *resp, bool embed_b64, char *msg,
                           size_t msglen)
{
    if (!json_is_object(resp)) {
        snprintf(msg, msglen, "upstream answer is not a JSON object");
        return SY_EUPSTREAM;
    }
    switch (ep) {
    case SY_EP_CHAT:
        return normalize_chat(resp, msg, msglen);
    case SY_EP_COMPLETIONS:
        return normalize_completion(resp, msg, msglen);
    case SY_EP_EMBEDDINGS:
        return normalize_embeddings(resp, embed_b64, msg, msglen);
    }
    return SY_EINTERNAL;
}

/* ---- streams ---- */

void sy_stream_fix_cleanup(sy_stream_fix *f)
{
    json_decref(f->usage);
    f->usage = NULL;
    if (f->pstate != NULL && f->pstate_free != NULL)
        f->pstate_free(f->pstate);
    f->pstate = NULL;
}

static void remember_envelope(sy_stream_fix *f, json_t *chunk, const char *object)
{
    json_object_set_new(chunk, "object", json_string(object));
    json_t *id = json_object_get(chunk, "id");
    if (json_is_string(id) && f->id[0] == '\0')
        snprintf(f->id, sizeof(f->id), "%s", json_string_value(id));
    else if (!json_is_string(id)) {
        if (f->id[0] == '\0')
            snprintf(f->id, sizeof(f->id), "chatcmpl-sy%lx", (unsigned long)time(NULL));
        json_object_set_new(chunk, "id", json_string(f->id));
    }
    json_t *model = json_object_get(chunk, "model");
    if (json_is_string(model) && f->model[0] == '\0')
        snprintf(f->model, sizeof(f->model), "%s", json_string_value(model));
    else if (!json_is_string(model))
        json_object_set_new(chunk, "model", json_string(f->model[0] ? f->model : "unknown"));
    json_t *created = json_object_get(chunk, "created");
    if (json_is_integer(created) && f->created == 0)
        f->created = json_integer_value(created);
    else if (!json_is_integer(created)) {
        if (f->created == 0)
            f->created = (long long)time(NULL);
        json_object_set_new(chunk, "created", json_integer(f->created));
    }
}

static void fix_chat_choice(sy_stream_fix *f, json_t *c, size_t i)
{
    if (!json_is_integer(json_object_get(c, "index")))
        json_object_set_new(c, "index", json_integer((json_int_t)i));
    json_t *delta = json_object_get(c, "delta");
    if (!json_is_object(delta)) {
        delta = json_object();
        json_object_set_new(c, "delta", delta);
    }
    if (!f->saw_role && !json_is_string(json_object_get(delta, "role")))
        json_object_set_new(delta, "role", json_string("assistant"));
    json_t *tcs = json_object_get(delta, "tool_calls");
    if (json_is_array(tcs)) {
        size_t j;
        json_t *tc;
        json_array_foreach(tcs, j, tc)
        {
            if (!json_is_object(tc))
                continue;
            json_t *idx = json_object_get(tc, "index");
            if (json_is_integer(idx)) {
                if (json_integer_value(idx) >= f->tool_calls)
                    f->tool_calls = (int)json_integer_value(idx) + 1;
            } else if (json_object_get(tc, "id") != NULL) {
                /* A new call from an upstream that omits index (Ollama sends whole calls). */
                json_object_set_new(tc, "index", json_integer(f->tool_calls++));
            } else {
                json_object_set_new(tc, "index", json_integer(f->tool_calls ? f->tool_calls - 1 : 0));
            }
            fix_tool_call(tc, 0, true, false);
        }
    }
    json_t *fr = json_object_get(c, "finish_reason");
    if (json_is_string(fr))
        f->saw_finish = true;
    else if (fr == NULL)
        json_object_set_new(c, "finish_reason", json_null());
}

static void fix_completion_choice(sy_stream_fix *f, json_t *c, size_t i)
{
    if (!json_is_integer(json_object_get(c, "index")))
        json_object_set_new(c, "index", json_integer((json_int_t)i));
    if (!json_is_string(json_object_get(c, "text")))
        json_object_set_new(c, "text", json_string(""));
    set_null_if_missing(c, "logprobs");
    json_t *fr = json_object_get(c, "finish_reason");
    if (json_is_string(fr))
        f->saw_finish = true;
    else if (fr == NULL)
        json_object_set_new(c, "finish_reason", json_null());
}

/* ---- the plain-delta fast path ----
 * Most chunks of a long answer are content deltas that need no fix-up once the first chunk
 * went out (role sent, envelope known). They are recognised by their bytes and forwarded as
 * they are, skipping a parse and a dump, which were most of the proxy's own CPU per streamed
 * token. Anything unusual (tool calls, a finish_reason, usage, errors, several choices, odd
 * structure) takes the general path. A key pattern such as "usage": cannot match inside a
 * string value, where every quote is escaped. */

static size_t count_pat(const char *d, size_t n, const char *pat)
{
    size_t k = strlen(pat), c = 0;
    const char *p = d, *end = d + n;
    while ((p = memmem(p, (size_t)(end - p), pat, k)) != NULL) {
        c++;
        p += k;
    }
    return c;
}

/* A shallow structure check: strings closed with valid escapes, no control bytes, brackets
 * balanced and matched, depth at most 16, outside strings only JSON's structural characters,
 * number characters and the letters of true/false/null. Not a full validator: what passes is
 * relayed, and jansson still checks every chunk the general path handles. */
static bool shallow_json_object(const char *d, size_t n)
{
    char stack[16];
    int depth = 0;
    bool in_str = false;
    if (n < 2 || d[0] != '{' || d[n - 1] != '}')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)d[i];
        if (ch < 0x20)
            return false;
        if (in_str) {
            if (ch == '\\') {
                if (++i >= n || strchr("\"\\/bfnrtu", d[i]) == NULL)
                    return false;
            } else if (ch == '"') {
                in_str = false;
            }
            continue;
        }
        switch (ch) {
        case '"':
            in_str = true;
            break;
        case '{':
        case '[':
            if (depth == (int)sizeof(stack))
                return false;
            stack[depth++] = (char)(ch == '{' ? '}' : ']');
            break;
        case '}':
        case ']':
            if (depth == 0 || stack[--depth] != (char)ch)
                return false;
            if (depth == 0 && i != n - 1)
                return false;
            break;
        default:
            if (strchr(":, \t-+.0123456789eEtrufalsn", ch) == NULL)
                return false;
        }
    }
    return depth == 0 && !in_str;
}

static const char USAGE_NULL[] = "\"usage\":null";

/* Whether <d> is a plain chat content delta for <f>; *cut_at and *cut_len say which bytes to drop
 * (a "usage":null member the client did not ask for), or cut_len 0. */
static bool plain_delta(const sy_stream_fix *f, const char *d, size_t n, size_t *cut_at,
                        size_t *cut_len)
{
    *cut_len = 0;
    if (!f->saw_role || f->id[0] == '\0' || f->model[0] == '\0' || f->created == 0)
        return false;
    if (count_pat(d, n, "\"finish_reason\":null") != 1 ||
        count_pat(d, n, "\"finish_reason\"") != 1 || count_pat(d, n, "\"index\":") != 1 ||
        count_pat(d, n, "\"choices\":[{") != 1 || count_pat(d, n, "\"delta\":{") != 1 ||
        memmem(d, n, "\"object\":\"chat.completion.chunk\"", 32) == NULL ||
        memmem(d, n, "\"id\":\"", 6) == NULL || memmem(d, n, "\"model\":\"", 9) == NULL ||
        memmem(d, n, "\"created\":", 10) == NULL || memmem(d, n, "\"tool_calls\"", 12) != NULL ||
        memmem(d, n, "\"function_call\"", 15) != NULL || memmem(d, n, "\"error\"", 7) != NULL)
        return false;
    size_t usages = count_pat(d, n, "\"usage\"");
    if (usages > 1)
        return false;
    if (usages == 1) {
        const char *u = memmem(d, n, USAGE_NULL, sizeof(USAGE_NULL) - 1);
        if (u == NULL)
            return false; /* real usage: the general path keeps it for spend */
        if (!f->client_usage) {
            size_t at = (size_t)(u - d), k = sizeof(USAGE_NULL) - 1;
            if (at > 0 && d[at - 1] == ',') {
                *cut_at = at - 1;
                *cut_len = k + 1;
            } else if (at + k < n && d[at + k] == ',') {
                *cut_at = at;
                *cut_len = k + 1;
            } else {
                return false;
            }
        }
    }
    return shallow_json_object(d, n);
}

/* The HTTP status an upstream's stream error object <e> stands for: a numeric code or status
 * (vLLM sends code 400), else its type or code, else 500. */
static int stream_error_status(const json_t *e)
{
    static const struct {
        const char *name;
        int status;
    } map[] = {{"invalid_request_error", 400}, {"authentication_error", 401},
               {"permission_error", 403},      {"not_found_error", 404},
               {"rate_limit_error", 429},      {"rate_limit_exceeded", 429},
               {"insufficient_quota", 429}};
    const char *keys[] = {"code", "status"};
    for (size_t i = 0; i < 2; i++) {
        json_int_t n = json_integer_value(json_object_get(e, keys[i]));
        if (n >= 400 && n <= 599)
            return (int)n;
    }
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *code = json_string_value(json_object_get(e, "code"));
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if ((type != NULL && strcmp(type, map[i].name) == 0) ||
            (code != NULL && strcmp(code, map[i].name) == 0))
            return map[i].status;
    return 500;
}

/* Whether a fixed choice <c> says more than the opening chunk: a finish_reason, text, or a
 * delta member other than the role that is neither null nor "". */
static bool choice_says_something(sy_endpoint ep, json_t *c)
{
    if (json_is_string(json_object_get(c, "finish_reason")))
        return true;
    if (ep != SY_EP_CHAT)
        return json_string_length(json_object_get(c, "text")) > 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(c, "delta"), k, v)
    {
        if (strcmp(k, "role") == 0 || json_is_null(v) ||
            (json_is_string(v) && json_string_length(v) == 0))
            continue;
        return true;
    }
    return false;
}

sy_err sy_openai_stream_event(sy_stream_fix *f, sy_endpoint ep, const char *data, size_t len,
                              sy_buf *out)
{
    sy_err rc = SY_EUPSTREAM;
    json_t *chunk = NULL;

    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        f->saw_done = true;
        f->saw_content = true;
        rc = sy_sse_frame(out, "[DONE]", 6);
        if (rc == SY_OK && f->obs != NULL)
            f->obs->data(f->obs_ud, data, len);
        return rc;
    }
    size_t cut_at = 0, cut_len = 0;
    if (ep == SY_EP_CHAT && plain_delta(f, data, len, &cut_at, &cut_len)) {
        f->chunks++;
        f->fast_chunks++;
        /* a plain delta comes after the role: content, unless it is an empty one */
        if (!f->saw_content && memmem(data, len, "\"content\":\"\"", 12) == NULL)
            f->saw_content = true;
        if (cut_len == 0)
            rc = sy_sse_frame(out, data, len);
        else
            rc = sy_sse_frame_parts(out, data, cut_at, data + cut_at + cut_len,
                                    len - cut_at - cut_len);
        /* The observer gets the upstream bytes and parses them itself, once (the fast path
         * did not). They differ from the client's only by a "usage":null member, which the
         * cache's accumulator ignores. */
        if (rc == SY_OK && f->obs != NULL)
            f->obs->data(f->obs_ud, data, len);
        return rc;
    }
    chunk = json_loadb(data, len, 0, NULL);
    if (!json_is_object(chunk))
        goto out;
    json_t *err = json_object_get(chunk, "error");
    if (err != NULL && json_object_get(chunk, "choices") == NULL) {
        size_t n;
        int status = stream_error_status(err);
        char *body = sy_openai_wrap_error(status, data, len, NULL, &n);
        if (body == NULL) {
            rc = SY_ENOMEM;
            goto out;
        }
        rc = sy_sse_frame(out, body, n);
        if (rc == SY_OK && f->obs != NULL)
            f->obs->data(f->obs_ud, body, n);
        free(body);
        f->saw_error = true;
        f->error_status = status;
        goto out;
    }
    json_t *usage = json_object_get(chunk, "usage");
    json_t *choices = json_object_get(chunk, "choices");
    if (json_is_object(usage)) {
        json_decref(f->usage);
        f->usage = json_deep_copy(usage);
    }
    if (!f->client_usage) {
        if (json_is_object(usage) && (!json_is_array(choices) || json_array_size(choices) == 0)) {
            rc = SY_OK; /* the usage chunk the client did not ask for: keep it, send nothing */
            goto out;
        }
        json_object_del(chunk, "usage");
    }
    if (!json_is_array(choices)) {
        choices = json_array();
        json_object_set_new(chunk, "choices", choices);
    }
    remember_envelope(f, chunk, ep == SY_EP_CHAT ? "chat.completion.chunk" : "text_completion");
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        if (!json_is_object(c))
            goto out;
        if (ep == SY_EP_CHAT)
            fix_chat_choice(f, c, i);
        else
            fix_completion_choice(f, c, i);
        if (!f->saw_content && choice_says_something(ep, c))
            f->saw_content = true;
    }
    if (json_is_object(json_object_get(chunk, "usage")) && json_array_size(choices) == 0)
        f->saw_content = true; /* the usage chunk the client asked for (not usage riding on a
                                  choice, as vLLM's continuous usage does on the role chunk) */
    if (json_array_size(choices) > 0)
        f->saw_role = true;
    f->chunks++;
    rc = sy_provider_emit(out, chunk);
    if (rc == SY_OK && f->obs != NULL)
        f->obs->chunk(f->obs_ud, chunk);
out:
    json_decref(chunk);
    return rc;
}

/* The envelope of the answer <resp> as a chunk of <ep>. */
static json_t *chunk_shell(sy_endpoint ep, const json_t *resp)
{
    return sy_provider_chunk_shell(ep, json_object_get(resp, "id"),
                                   json_object_get(resp, "created"),
                                   json_object_get(resp, "model"),
                                   json_object_get(resp, "system_fingerprint"));
}

static sy_err emit_choice_chunk(sy_buf *out, const json_t *resp, sy_endpoint ep, json_t *choice)
{
    json_t *c = chunk_shell(ep, resp);
    if (c == NULL) {
        json_decref(choice);
        return SY_ENOMEM;
    }
    json_array_append_new(json_object_get(c, "choices"), choice);
    sy_err rc = sy_provider_emit(out, c);
    json_decref(c);
    return rc;
}

sy_err sy_openai_to_sse(sy_endpoint ep, const json_t *resp, bool client_usage, sy_buf *out)
{
    json_t *choices = json_object_get(resp, "choices");
    sy_err rc = SY_OK;
    size_t i;
    json_t *ch;

    json_array_foreach(choices, i, ch)
    {
        json_t *idx = json_object_get(ch, "index");
        if (ep == SY_EP_CHAT) {
            json_t *m = json_object_get(ch, "message");
            json_t *delta = json_pack("{s:s}", "role", "assistant");
            json_t *content = json_object_get(m, "content");
            json_object_set(delta, "content", json_is_string(content) ? content : json_null());
            json_t *refusal = json_object_get(m, "refusal");
            if (json_is_string(refusal))
                json_object_set(delta, "refusal", refusal);
            json_t *tcs = json_object_get(m, "tool_calls");
            if (json_is_array(tcs)) {
                json_t *arr = json_array();
                size_t j;
                json_t *tc;
                json_array_foreach(tcs, j, tc)
                {
                    json_t *t = json_deep_copy(tc);
                    json_object_set_new(t, "index", json_integer((json_int_t)j));
                    json_array_append_new(arr, t);
                }
                json_object_set_new(delta, "tool_calls", arr);
            }
            json_t *c1 = json_pack("{s:O,s:o,s:n,s:n}", "index", idx, "delta", delta,
                                   "finish_reason", "logprobs");
            if ((rc = emit_choice_chunk(out, resp, ep, c1)) != SY_OK)
                return rc;
            json_t *c2 = json_pack("{s:O,s:{},s:O,s:n}", "index", idx, "delta", "finish_reason",
                                   json_object_get(ch, "finish_reason"), "logprobs");
            if ((rc = emit_choice_chunk(out, resp, ep, c2)) != SY_OK)
                return rc;
        } else {
            json_t *c1 = json_pack("{s:O,s:O,s:O,s:n}", "index", idx, "text",
                                   json_object_get(ch, "text"), "finish_reason",
                                   json_object_get(ch, "finish_reason"), "logprobs");
            if ((rc = emit_choice_chunk(out, resp, ep, c1)) != SY_OK)
                return rc;
        }
    }
    json_t *usage = json_object_get(resp, "usage");
    if (client_usage && json_is_object(usage)) {
        json_t *c = chunk_shell(ep, resp);
        if (c == NULL)
            return SY_ENOMEM;
        json_object_set(c, "usage", usage);
        rc = sy_provider_emit(out, c);
        json_decref(c);
        if (rc != SY_OK)
            return rc;
    }
    return sy_sse_frame(out, "[DONE]", 6);
}

/* ---- errors ---- */

const char *sy_openai_error_type(int status)
{
    switch (status) {
    case 400:
    case 404:
    case 409:
    case 413:
    case 415:
    case 422:
        return status == 404 ? "not_found_error" : "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
    }
}

/* Copies at most <max> bytes of <s> replacing bytes that are not valid UTF-8 by '?'. */
static char *utf8_clean(const char *s, size_t n, size_t max)
{
    if (n > max)
        n = max;
    char *o = malloc(n + 1);
    if (o == NULL)
        return NULL;
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + len <= n && c != 0;
        for (size_t j = 1; ok && j < len; j++)
            ok = ((unsigned char)s[i + j] & 0xC0) == 0x80;
        if (ok && len > 1) {
            /* reject overlongs and surrogates; json_string would refuse them */
            unsigned cp = len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
            for (size_t j = 1; j < len; j++)
                cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3Fu);
            ok = !((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                   (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
                   (cp >= 0xD800 && cp <= 0xDFFF));
        }
        if (!ok) {
            o[k++] = '?';
            i++;
            continue;
        }
        memcpy(o + k, s + i, len);
        k += len;
        i += len;
    }
    while (k > 0 && (o[k - 1] == '\n' || o[k - 1] == '\r' || o[k - 1] == ' '))
        k--;
    o[k] = '\0';
    return o;
}

static char *redact(char *msg, const char *secret)
{
    if (msg == NULL || secret == NULL || strlen(secret) < 4)
        return msg;
    const char *rep = "[redacted]";
    char *p;
    while ((p = strstr(msg, secret)) != NULL) {
        size_t sl = strlen(secret), rl = strlen(rep), ml = strlen(msg);
        char *n = malloc(ml - sl + rl + 1);
        if (n == NULL) {
            free(msg);
            return NULL;
        }
        size_t pre = (size_t)(p - msg);
        memcpy(n, msg, pre);
        memcpy(n + pre, rep, rl);
        memcpy(n + pre + rl, p + sl, ml - pre - sl + 1);
        free(msg);
        msg = n;
    }
    return msg;
}

static const char *known_type(const char *t)
{
    static const char *types[] = {"invalid_request_error", "authentication_error",
                                  "permission_error",      "not_found_error",
                                  "rate_limit_error",      "api_error",
                                  "server_error",          "insufficient_quota"};
    for (size_t i = 0; t != NULL && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(t, types[i]) == 0)
            return types[i];
    return NULL;
}

char *sy_openai_wrap_error(int status, const char *body, size_t len, const char *secret,
                           size_t *outlen)
{
    char *message = NULL, *out = NULL;
    const char *type = NULL, *code = NULL, *param = NULL;
    json_t *j = len > 0 ? json_loadb(body, len, 0, NULL) : NULL;

    if (json_is_object(j)) {
        json_t *e = json_object_get(j, "error");
        json_t *msgv = NULL;
        if (json_is_object(e)) {
            msgv = json_object_get(e, "message");
            type = known_type(json_string_value(json_object_get(e, "type")));
            code = json_string_value(json_object_get(e, "code"));
            param = json_string_value(json_object_get(e, "param"));
        } else if (json_is_string(e)) {
            msgv = e;
        } else if (json_object_get(j, "detail") != NULL) {
            msgv = json_object_get(j, "detail");
        } else if (json_object_get(j, "message") != NULL) {
            msgv = json_object_get(j, "message");
            type = known_type(json_string_value(json_object_get(j, "type")));
        } else {
            msgv = j;
        }
        if (json_is_string(msgv)) {
            message = utf8_clean(json_string_value(msgv), json_string_length(msgv), 2000);
        } else if (msgv != NULL) {
            size_t n;
            char *s = sy_json_dump(msgv, &n);
            if (s != NULL)
                message = utf8_clean(s, n, 2000);
            free(s);
        }
    } else if (len > 0) {
        message = utf8_clean(body, len, 2000);
    }
    if (message == NULL || message[0] == '\0') {
        free(message);
        message = NULL;
        if (asprintf(&message, "upstream returned HTTP %d", status) < 0)
            message = NULL;
    }
    message = redact(message, secret);
    if (type == NULL)
        type = sy_openai_error_type(status);
    if (code == NULL && status == 429)
        code = "rate_limit_exceeded";
    out = sy_err_body_raw(type, code, param, message, outlen);
    free(message);
    json_decref(j);
    return out;
}
