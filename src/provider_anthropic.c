/* provider_anthropic: OpenAI <-> Anthropic Messages translation, streaming included. The one
 * design decision: everything is translated into fresh jansson trees (never patched in place),
 * built bottom-up: a child is complete before it is attached, so an allocation failure at any
 * point only sets a flag and frees what was built, and the result is either whole or NULL.
 * Streams keep a small fixed state (the open content block, the tool-call count, the usage
 * counters) and translate event by event: nothing of the stream is buffered. */
#include "switchyard/provider_anthropic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "provider_int.h"
#include "switchyard/json_util.h"
#include "switchyard/provider_openai.h"
#include "switchyard/sse.h"

#define DEFAULT_VERSION "2023-06-01"
/* The first version that rejects sampling parameters (temperature, top_p, top_k). Versions are
 * dates, so they compare as strings. */
#define NO_SAMPLING_VERSION "2026-10-21"
#define FALLBACK_MAX_TOKENS 4096
#define JSON_OBJECT_HINT "Respond only with a single valid JSON object, with no other text."

/* ---- url and headers ---- */

sy_err sy_anthropic_url(const sy_deployment *d, sy_endpoint ep, char *url, size_t n)
{
    if (ep == SY_EP_EMBEDDINGS)
        return SY_EUNSUPPORTED;
    size_t bl = strlen(d->base_url);
    bool v1 = bl >= 3 && strcmp(d->base_url + bl - 3, "/v1") == 0;
    int k = snprintf(url, n, "%s%s", d->base_url, v1 ? "/messages" : "/v1/messages");
    return k < 0 || (size_t)k >= n ? SY_EINVAL : SY_OK;
}

struct curl_slist *sy_anthropic_headers(const sy_deployment *d, struct curl_slist *h)
{
    char line[1100];

    if (d->api_key != NULL) {
        /* a key too long for the line is not a key */
        bool ok = snprintf(line, sizeof(line), "x-api-key: %s", d->api_key) < (int)sizeof(line) &&
                  sy_slist_add(&h, line); /* curl copies the string */
        explicit_bzero(line, sizeof(line));
        if (!ok) {
            curl_slist_free_all(h); /* already NULL when sy_slist_add failed */
            return NULL;
        }
    }
    snprintf(line, sizeof(line), "anthropic-version: %s",
             d->anthropic_version != NULL ? d->anthropic_version : DEFAULT_VERSION);
    sy_slist_add(&h, line); /* NULL (list freed) when out of memory */
    return h;
}

/* ---- request translation ---- */

typedef struct tx {
    const sy_deployment *d;
    bool oom;
    bool failed;       /* a client error, described in msg */
    bool client_cache; /* the client placed a cache breakpoint somewhere */
    char *msg;
    size_t msglen;
} tx;

static void put(tx *t, json_t *o, const char *k, json_t *v)
{
    /* jansson releases <v> when the set fails (NULL <o> or <v> included) */
    if (json_object_set_new(o, k, v) != 0)
        t->oom = true;
}

static void push(tx *t, json_t *a, json_t *v)
{
    if (json_array_append_new(a, v) != 0)
        t->oom = true;
}

static bool bad(tx *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool bad(tx *t, const char *fmt, ...)
{
    if (!t->failed && t->msglen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->msg, t->msglen, fmt, ap);
        va_end(ap);
    }
    t->failed = true;
    return false;
}

static bool stop(const tx *t)
{
    return t->oom || t->failed;
}

static json_t *str_copy(const json_t *s)
{
    return json_stringn(json_string_value(s), json_string_length(s));
}

static json_t *text_block(const char *s, size_t n)
{
    return json_pack("{s:s,s:s%}", "type", "text", "text", s, n);
}

/* Copies a client cache marker onto <block>: Anthropic's own cache_control passes through;
 * OpenAI's prompt_cache_breakpoint becomes an ephemeral breakpoint. */
static void copy_cache(tx *t, const json_t *part, json_t *block)
{
    const json_t *cc = json_object_get(part, "cache_control");
    if (json_is_object(cc)) {
        put(t, block, "cache_control", json_deep_copy(cc));
        t->client_cache = true;
    } else if (json_is_object(json_object_get(part, "prompt_cache_breakpoint"))) {
        put(t, block, "cache_control", json_pack("{s:s}", "type", "ephemeral"));
        t->client_cache = true;
    }
}

static bool media_ok(const char *m, size_t n, bool doc)
{
    static const char *const images[] = {"image/jpeg", "image/png", "image/gif", "image/webp"};
    if (doc)
        return n == 15 && memcmp(m, "application/pdf", 15) == 0;
    for (size_t i = 0; i < sizeof(images) / sizeof(images[0]); i++)
        if (strlen(images[i]) == n && memcmp(m, images[i], n) == 0)
            return true;
    return false;
}

/* A base64 source block from "data:<type>;base64,<data>", or NULL (client error or OOM). */
static json_t *data_source(tx *t, const char *url, const char *where, bool doc)
{
    const char *p = url + 5, *comma = strchr(p, ',');
    const char *semi = comma != NULL ? memchr(p, ';', (size_t)(comma - p)) : NULL;
    if (comma == NULL || semi == NULL || (size_t)(comma - semi) != 7 ||
        strncmp(semi, ";base64", 7) != 0) {
        bad(t, "%s: only base64 data URLs are supported", where);
        return NULL;
    }
    if (!media_ok(p, (size_t)(semi - p), doc)) {
        bad(t, "%s: media type '%.*s' is not supported by this deployment (%s)", where,
            (int)((semi - p) > 64 ? 64 : (semi - p)), p,
            doc ? "application/pdf" : "image/jpeg, image/png, image/gif, image/webp");
        return NULL;
    }
    json_t *src = json_pack("{s:s,s:s%,s:s}", "type", "base64", "media_type", p, (size_t)(semi - p),
                            "data", comma + 1);
    if (src == NULL)
        t->oom = true;
    return src;
}

static json_t *image_block(tx *t, const json_t *part, const char *where)
{
    const json_t *iu = json_object_get(part, "image_url");
    const char *url =
        json_is_string(iu) ? json_string_value(iu) : json_string_value(json_object_get(iu, "url"));
    json_t *src = NULL;
    if (url == NULL) {
        bad(t, "%s: missing image_url.url", where);
        return NULL;
    }
    if (strncmp(url, "data:", 5) == 0) {
        src = data_source(t, url, where, false);
    } else if (strncmp(url, "https://", 8) == 0) {
        if ((src = json_pack("{s:s,s:s}", "type", "url", "url", url)) == NULL)
            t->oom = true;
    } else {
        bad(t, "%s: image URLs must be https:// or data: URLs", where);
    }
    if (src == NULL)
        return NULL;
    json_t *b = json_pack("{s:s,s:o}", "type", "image", "source", src);
    if (b == NULL)
        t->oom = true;
    return b;
}

static json_t *file_block(tx *t, const json_t *part, const char *where)
{
    const json_t *f = json_object_get(part, "file");
    const char *data = json_string_value(json_object_get(f, "file_data"));
    if (data == NULL || strncmp(data, "data:", 5) != 0) {
        bad(t, "%s: only files given inline as file_data (a base64 PDF data URL) are supported",
            where);
        return NULL;
    }
    json_t *src = data_source(t, data, where, true);
    if (src == NULL)
        return NULL;
    json_t *b = json_pack("{s:s,s:o}", "type", "document", "source", src);
    if (b == NULL)
        t->oom = true;
    return b;
}

/* Appends the blocks of one OpenAI content value (string or array of parts) to <blocks>.
 * <images>: image and file parts are allowed (user and tool messages). Empty text is dropped:
 * the Messages API rejects empty text blocks. */
static void content_blocks(tx *t, const json_t *content, bool images, json_t *blocks,
                           const char *where)
{
    char w[128];
    if (json_is_string(content)) {
        if (json_string_length(content) > 0)
            push(t, blocks, text_block(json_string_value(content), json_string_length(content)));
        return;
    }
    if (content == NULL || json_is_null(content))
        return;
    if (!json_is_array(content)) {
        bad(t, "%s.content: expected a string or an array of content parts", where);
        return;
    }
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part)
    {
        if (stop(t))
            return;
        snprintf(w, sizeof(w), "%.64s.content[%zu]", where, i);
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *b = NULL;
        if (type == NULL) {
            bad(t, "%s: missing type", w);
            return;
        } else if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            const json_t *s = json_object_get(part, type[0] == 't' ? "text" : "refusal");
            if (!json_is_string(s)) {
                bad(t, "%s: expected a string %s", w, type);
                return;
            }
            if (json_string_length(s) == 0)
                continue;
            b = text_block(json_string_value(s), json_string_length(s));
            if (b == NULL)
                t->oom = true;
        } else if (images && strcmp(type, "image_url") == 0) {
            b = image_block(t, part, w);
        } else if (images && strcmp(type, "file") == 0) {
            b = file_block(t, part, w);
        } else {
            bad(t, "%s: content parts of type '%.40s' are not supported by this deployment", w,
                type);
            return;
        }
        if (b == NULL)
            return;
        copy_cache(t, part, b);
        push(t, blocks, b);
    }
}

/* Appends <blocks> (stolen) as a message of <role>, merged into the previous message when it
 * has the same role: tool results of one turn must share one user message, and the API wants
 * roles to alternate. Empty block lists add nothing. */
static void add_message(tx *t, json_t *msgs, const char *role, json_t *blocks)
{
    if (blocks == NULL) {
        t->oom = true;
        return;
    }
    if (json_array_size(blocks) == 0) {
        json_decref(blocks);
        return;
    }
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *lr = json_string_value(json_object_get(last, "role"));
    if (lr != NULL && strcmp(lr, role) == 0) {
        if (json_array_extend(json_object_get(last, "content"), blocks) != 0)
            t->oom = true;
        json_decref(blocks);
        return;
    }
    json_t *m = json_pack("{s:s,s:o}", "role", role, "content", blocks);
    if (m == NULL)
        t->oom = true;
    push(t, msgs, m);
}

static json_t *tool_use_block(tx *t, const json_t *tc, const char *where)
{
    const json_t *fn = json_object_get(tc, "function");
    const char *type = json_string_value(json_object_get(tc, "type"));
    const json_t *id = json_object_get(tc, "id");
    const json_t *name = json_object_get(fn, "name");
    const json_t *args = json_object_get(fn, "arguments");
    json_t *input = NULL;

    if (type != NULL && strcmp(type, "function") != 0) {
        bad(t, "%s: tool calls of type '%.40s' are not supported by this deployment", where, type);
        return NULL;
    }
    if (!json_is_string(id) || !json_is_string(name)) {
        bad(t, "%s: a tool call needs an id and a function.name", where);
        return NULL;
    }
    if (json_is_string(args) && json_string_length(args) > 0) {
        input = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
        if (input == NULL) {
            /* jansson reports an allocation failure inside the parser as a syntax error; a
             * probe allocation tells the two apart, so OOM is never blamed on the client */
            json_t *probe = json_object();
            if (probe == NULL) {
                t->oom = true;
                return NULL;
            }
            json_decref(probe);
        }
        if (!json_is_object(input)) {
            json_decref(input);
            bad(t, "%s.function.arguments: not a JSON object", where);
            return NULL;
        }
    } else if (json_is_object(args)) {
        input = json_deep_copy(args);
    } else {
        input = json_object();
    }
    json_t *b = json_pack("{s:s,s:o,s:o,s:o}", "type", "tool_use", "id", str_copy(id), "name",
                          str_copy(name), "input", input);
    if (b == NULL)
        t->oom = true;
    return b;
}

static void assistant_message(tx *t, const json_t *m, json_t *msgs, const char *where)
{
    json_t *blocks = json_array();
    char w[128];
    content_blocks(t, json_object_get(m, "content"), false, blocks, where);
    const json_t *tcs = json_object_get(m, "tool_calls");
    if (json_is_array(tcs)) {
        size_t i;
        const json_t *tc;
        json_array_foreach(tcs, i, tc)
        {
            if (stop(t))
                break;
            snprintf(w, sizeof(w), "%.64s.tool_calls[%zu]", where, i);
            json_t *b = tool_use_block(t, tc, w);
            if (b != NULL)
                push(t, blocks, b);
        }
    }
    if (json_object_get(m, "function_call") != NULL &&
        !json_is_null(json_object_get(m, "function_call")))
        bad(t,
            "%s.function_call: the deprecated function_call is not supported by this "
            "deployment; use tool_calls",
            where);
    add_message(t, msgs, "assistant", blocks);
}

static void tool_message(tx *t, const json_t *m, json_t *msgs, const char *where)
{
    const json_t *id = json_object_get(m, "tool_call_id");
    if (!json_is_string(id)) {
        bad(t, "%s.tool_call_id: expected a string", where);
        return;
    }
    json_t *parts = json_array();
    content_blocks(t, json_object_get(m, "content"), true, parts, where);
    json_t *b = json_pack("{s:s,s:o}", "type", "tool_result", "tool_use_id", str_copy(id));
    if (b == NULL || parts == NULL) {
        t->oom = true;
        json_decref(parts);
        json_decref(b);
        return;
    }
    if (json_array_size(parts) > 0)
        put(t, b, "content", parts);
    else
        json_decref(parts);
    copy_cache(t, m, b);
    json_t *blocks = json_array();
    push(t, blocks, b);
    add_message(t, msgs, "user", blocks);
}

/* Message-level cache_control (a common gateway extension) marks the message's last block. */
static void message_cache(tx *t, const json_t *m, json_t *msgs, size_t before)
{
    if (json_array_size(msgs) == 0 || json_array_size(msgs) < before)
        return;
    const json_t *cc = json_object_get(m, "cache_control");
    if (!json_is_object(cc) || json_object_get(m, "tool_call_id") != NULL)
        return;
    json_t *content = json_object_get(json_array_get(msgs, json_array_size(msgs) - 1), "content");
    json_t *lastb = json_array_get(content, json_array_size(content) - 1);
    if (lastb != NULL)
        copy_cache(t, m, lastb);
}

static void translate_messages(tx *t, const json_t *in, json_t *system, json_t *msgs)
{
    size_t i;
    const json_t *m;
    char w[64];
    json_array_foreach(in, i, m)
    {
        if (stop(t))
            return;
        snprintf(w, sizeof(w), "messages[%zu]", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        size_t before = json_array_size(msgs);
        if (role == NULL) {
            bad(t, "%s.role: expected a string", w);
        } else if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            size_t n0 = json_array_size(system);
            content_blocks(t, json_object_get(m, "content"), false, system, w);
            json_t *lastb = json_array_get(system, json_array_size(system) - 1);
            if (json_array_size(system) > n0 && lastb != NULL)
                copy_cache(t, m, lastb);
            continue;
        } else if (strcmp(role, "user") == 0) {
            json_t *blocks = json_array();
            content_blocks(t, json_object_get(m, "content"), true, blocks, w);
            add_message(t, msgs, "user", blocks);
        } else if (strcmp(role, "assistant") == 0) {
            assistant_message(t, m, msgs, w);
        } else if (strcmp(role, "tool") == 0) {
            tool_message(t, m, msgs, w);
        } else {
            bad(t, "%s.role: '%.20s' messages are not supported by this deployment", w, role);
        }
        message_cache(t, m, msgs, before);
    }
}

static json_t *translate_tools(tx *t, const json_t *tools)
{
    json_t *out = json_array();
    size_t i;
    const json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        if (stop(t))
            break;
        const char *type = json_string_value(json_object_get(tool, "type"));
        const json_t *fn = json_object_get(tool, "function");
        const json_t *name = json_object_get(fn, "name");
        if ((type != NULL && strcmp(type, "function") != 0) || !json_is_string(name)) {
            bad(t, "tools[%zu]: only function tools with a name are supported by this deployment",
                i);
            break;
        }
        const json_t *params = json_object_get(fn, "parameters");
        json_t *schema = json_is_object(params)
                             ? json_deep_copy(params)
                             : json_pack("{s:s,s:{}}", "type", "object", "properties");
        json_t *o = json_pack("{s:o,s:o}", "name", str_copy(name), "input_schema", schema);
        const json_t *desc = json_object_get(fn, "description");
        if (json_is_string(desc))
            put(t, o, "description", str_copy(desc));
        if (json_is_true(json_object_get(fn, "strict")))
            put(t, o, "strict", json_true());
        copy_cache(t, tool, o);
        if (o == NULL)
            t->oom = true;
        push(t, out, o);
    }
    if (out == NULL)
        t->oom = true;
    return out;
}

/* OpenAI tool_choice + parallel_tool_calls -> Anthropic tool_choice (new), or NULL for none. */
static json_t *translate_tool_choice(tx *t, const json_t *body)
{
    const json_t *tc = json_object_get(body, "tool_choice");
    bool no_parallel = json_is_false(json_object_get(body, "parallel_tool_calls"));
    json_t *o = NULL;
    if (tc == NULL || json_is_null(tc)) {
        if (!no_parallel)
            return NULL;
        o = json_pack("{s:s}", "type", "auto");
    } else if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (strcmp(s, "auto") == 0)
            o = json_pack("{s:s}", "type", "auto");
        else if (strcmp(s, "required") == 0)
            o = json_pack("{s:s}", "type", "any");
        else if (strcmp(s, "none") == 0)
            return json_pack("{s:s}", "type", "none"); /* takes no parallel flag */
        else {
            bad(t, "tool_choice: unknown value '%.20s'", s);
            return NULL;
        }
    } else {
        const json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (!json_is_string(name)) {
            bad(t, "tool_choice: expected \"auto\", \"none\", \"required\" or a function name");
            return NULL;
        }
        o = json_pack("{s:s,s:o}", "type", "tool", "name", str_copy(name));
    }
    if (no_parallel)
        put(t, o, "disable_parallel_tool_use", json_true());
    if (o == NULL)
        t->oom = true;
    return o;
}

static bool no_sampling(const sy_deployment *d)
{
    return d->anthropic_version != NULL && strcmp(d->anthropic_version, NO_SAMPLING_VERSION) >= 0;
}

static void sampling(tx *t, const json_t *body, json_t *out)
{
    if (no_sampling(t->d))
        return; /* this version answers 400 to any of them, even at default values */
    const json_t *temp = json_object_get(body, "temperature");
    if (json_is_number(temp)) {
        double v = json_number_value(temp);
        put(t, out, "temperature", json_real(v > 1.0 ? 1.0 : v)); /* Anthropic: 0..1 */
    }
    const json_t *top_p = json_object_get(body, "top_p");
    if (json_is_number(top_p))
        put(t, out, "top_p", json_real(json_number_value(top_p)));
    const json_t *top_k = json_object_get(body, "top_k");
    if (json_is_integer(top_k))
        put(t, out, "top_k", json_integer(json_integer_value(top_k)));
}

static void max_tokens(tx *t, const json_t *body, json_t *out)
{
    const json_t *mt = json_object_get(body, "max_completion_tokens");
    if (mt == NULL || json_is_null(mt))
        mt = json_object_get(body, "max_tokens");
    json_int_t v = t->d->default_max_tokens > 0 ? t->d->default_max_tokens : FALLBACK_MAX_TOKENS;
    if (json_is_integer(mt)) {
        if (json_integer_value(mt) < 1) {
            bad(t, "max_tokens: must be at least 1");
            return;
        }
        v = json_integer_value(mt);
    } else if (mt != NULL && !json_is_null(mt)) {
        bad(t, "max_tokens: expected an integer");
        return;
    }
    put(t, out, "max_tokens", json_integer(v));
}

static void stop_sequences(tx *t, const json_t *body, json_t *out)
{
    const json_t *s = json_object_get(body, "stop");
    if (json_is_string(s)) {
        put(t, out, "stop_sequences", json_pack("[o]", str_copy(s)));
    } else if (json_is_array(s) && json_array_size(s) > 0) {
        json_t *a = json_array();
        size_t i;
        const json_t *v;
        json_array_foreach(s, i, v)
        {
            if (!json_is_string(v)) {
                json_decref(a);
                bad(t, "stop: expected a string or an array of strings");
                return;
            }
            push(t, a, str_copy(v));
        }
        put(t, out, "stop_sequences", a);
    }
}

/* Sum of string bytes in <j>, stopping early once past <cap> (a cheap token estimate). */
static size_t text_bytes(const json_t *j, size_t cap)
{
    size_t n = 0;
    if (json_is_string(j))
        return json_string_length(j);
    if (json_is_array(j)) {
        size_t i;
        const json_t *v;
        json_array_foreach(j, i, v)
        {
            if ((n += text_bytes(v, cap)) >= cap)
                break;
        }
    } else if (json_is_object(j)) {
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            if ((n += text_bytes(v, cap)) >= cap)
                break;
        }
    }
    return n;
}

static void mark_last(tx *t, json_t *arr)
{
    json_t *last = json_array_get(arr, json_array_size(arr) - 1);
    if (json_is_object(last))
        put(t, last, "cache_control", json_pack("{s:s}", "type", "ephemeral"));
}

/* auto_cache_control: breakpoints at the end of the stable prefix (tools, system, turns before
 * the last), when that prefix is long enough to be cached at all. */
static void auto_cache(tx *t, const json_t *body, json_t *tools, json_t *system, json_t *msgs)
{
    const json_t *pco = json_object_get(body, "prompt_cache_options");
    const char *mode = json_string_value(json_object_get(pco, "mode"));
    if (!t->d->auto_cache_control || t->client_cache ||
        (mode != NULL && strcmp(mode, "explicit") == 0))
        return;
    size_t cap = (size_t)SY_ANTHROPIC_AUTO_CACHE_MIN_TOKENS * 4;
    size_t n = text_bytes(tools, cap) + text_bytes(system, cap);
    size_t nm = json_array_size(msgs);
    for (size_t i = 0; i + 1 < nm && n < cap; i++)
        n += text_bytes(json_array_get(msgs, i), cap);
    if (n < cap)
        return;
    mark_last(t, tools);
    mark_last(t, system);
    if (nm >= 2)
        mark_last(t, json_object_get(json_array_get(msgs, nm - 2), "content"));
}

/* A content array of one plain text block becomes a string: smaller and easier to read. */
static void compact(tx *t, json_t *o, const char *key)
{
    json_t *c = json_object_get(o, key);
    json_t *b = json_array_get(c, 0);
    if (json_array_size(c) == 1 && json_object_size(b) == 2 &&
        json_is_string(json_object_get(b, "text")))
        put(t, o, key, str_copy(json_object_get(b, "text")));
}

static void response_format(tx *t, const json_t *body, json_t *out, json_t *system)
{
    const json_t *rf = json_object_get(body, "response_format");
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (type == NULL || strcmp(type, "text") == 0)
        return;
    const json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (strcmp(type, "json_schema") == 0 && json_is_object(schema)) {
        put(t, out, "output_config",
            json_pack("{s:{s:s,s:o}}", "format", "type", "json_schema", "schema",
                      json_deep_copy(schema)));
    } else if (strcmp(type, "json_object") == 0 || strcmp(type, "json_schema") == 0) {
        push(t, system, text_block(JSON_OBJECT_HINT, strlen(JSON_OBJECT_HINT)));
    } else {
        bad(t, "response_format: type '%.30s' is not supported by this deployment", type);
    }
}

static json_t *translate_chat(tx *t, const json_t *body, bool stream)
{
    json_t *out = json_object(), *system = json_array(), *msgs = json_array(), *tools = NULL;
    const json_t *in = json_object_get(body, "messages");
    const json_t *n = json_object_get(body, "n");

    if (out == NULL || system == NULL || msgs == NULL) {
        t->oom = true;
        goto out;
    }
    if (json_is_integer(n) && json_integer_value(n) != 1) {
        bad(t, "n: only n=1 is supported by this deployment");
        goto out;
    }
    if (json_object_get(body, "functions") != NULL) {
        bad(t, "functions: the deprecated functions parameter is not supported by this "
               "deployment; use tools");
        goto out;
    }
    if (!json_is_array(in)) {
        bad(t, "messages: expected an array");
        goto out;
    }
    put(t, out, "model", json_string(t->d->model));
    translate_messages(t, in, system, msgs);
    if (stop(t))
        goto out;
    if (json_array_size(msgs) == 0) {
        bad(t, "messages: at least one non-empty user or assistant message is required");
        goto out;
    }
    const json_t *tl = json_object_get(body, "tools");
    const char *tcs = json_string_value(json_object_get(body, "tool_choice"));
    if (json_is_array(tl) && json_array_size(tl) > 0) {
        tools = translate_tools(t, tl);
        json_t *choice = translate_tool_choice(t, body);
        if (choice != NULL)
            put(t, out, "tool_choice", choice);
    } else if (tcs != NULL && strcmp(tcs, "required") == 0) {
        bad(t, "tool_choice: \"required\" needs tools");
    }
    response_format(t, body, out, system);
    max_tokens(t, body, out);
    stop_sequences(t, body, out);
    sampling(t, body, out);
    const json_t *user = json_object_get(body, "user");
    if (json_is_string(user) && json_string_length(user) > 0)
        put(t, out, "metadata", json_pack("{s:o}", "user_id", str_copy(user)));
    if (stream)
        put(t, out, "stream", json_true());
    if (stop(t))
        goto out;
    auto_cache(t, body, tools, system, msgs);
    for (size_t i = 0; i < json_array_size(msgs); i++)
        compact(t, json_array_get(msgs, i), "content");
    if (json_array_size(system) > 0) {
        put(t, out, "system", system);
        compact(t, out, "system");
    } else {
        json_decref(system);
    }
    system = NULL;
    if (tools != NULL)
        put(t, out, "tools", tools);
    tools = NULL;
    put(t, out, "messages", msgs);
    msgs = NULL;
out:
    json_decref(system);
    json_decref(msgs);
    json_decref(tools);
    if (stop(t)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* Legacy completions, only the simple form: one prompt string as one user message. */
static json_t *translate_completion(tx *t, const json_t *body, bool stream)
{
    const json_t *prompt = json_object_get(body, "prompt");
    if (json_is_array(prompt) && json_array_size(prompt) == 1 &&
        json_is_string(json_array_get(prompt, 0)))
        prompt = json_array_get(prompt, 0);
    if (!json_is_string(prompt) || json_string_length(prompt) == 0) {
        bad(t, "prompt: this deployment only serves completions for one non-empty string prompt");
        return NULL;
    }
    const json_t *suffix = json_object_get(body, "suffix");
    const json_t *lp = json_object_get(body, "logprobs");
    const json_t *bo = json_object_get(body, "best_of");
    const json_t *n = json_object_get(body, "n");
    if (json_is_true(json_object_get(body, "echo")) ||
        (json_is_string(suffix) && json_string_length(suffix) > 0) ||
        (lp != NULL && !json_is_null(lp)) || (json_is_integer(bo) && json_integer_value(bo) > 1) ||
        (json_is_integer(n) && json_integer_value(n) != 1)) {
        bad(t, "echo, suffix, logprobs, best_of and n > 1 are not supported by this deployment");
        return NULL;
    }
    json_t *out = json_pack("{s:s,s:[{s:s,s:o}]}", "model", t->d->model, "messages", "role", "user",
                            "content", str_copy(prompt));
    if (out == NULL) {
        t->oom = true;
        return NULL;
    }
    max_tokens(t, body, out);
    stop_sequences(t, body, out);
    sampling(t, body, out);
    if (stream)
        put(t, out, "stream", json_true());
    if (stop(t)) {
        json_decref(out);
        return NULL;
    }
    return out;
}

char *sy_anthropic_request(const sy_deployment *d, sy_endpoint ep, const json_t *body, bool stream,
                           size_t *len, char *msg, size_t msglen)
{
    tx t = {.d = d, .msg = msg, .msglen = msglen};
    json_t *out = NULL;
    char *s = NULL;

    if (msglen > 0)
        msg[0] = '\0';
    if (ep == SY_EP_CHAT)
        out = translate_chat(&t, body, stream);
    else if (ep == SY_EP_COMPLETIONS)
        out = translate_completion(&t, body, stream);
    else
        bad(&t, "embeddings are not supported by Anthropic deployments");
    if (out != NULL)
        s = sy_json_dump(out, len);
    json_decref(out);
    if (s == NULL && !t.failed && msglen > 0)
        msg[0] = '\0'; /* out of memory: no client message */
    return s;
}

/* ---- responses ---- */

const char *sy_anthropic_finish_reason(const char *stop_reason)
{
    if (stop_reason == NULL)
        return "stop";
    if (strcmp(stop_reason, "max_tokens") == 0 ||
        strcmp(stop_reason, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop_reason, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop_reason, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn, and anything newer */
}

typedef struct counts {
    json_int_t in, out, cache_read, cache_write;
} counts;

static json_int_t count_of(const json_t *u, const char *k, json_int_t old)
{
    const json_t *v = json_object_get(u, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : old;
}

/* Cumulative counters: a present value replaces, an absent one keeps what was known. */
static void counts_update(counts *c, const json_t *u)
{
    c->in = count_of(u, "input_tokens", c->in);
    c->out = count_of(u, "output_tokens", c->out);
    c->cache_read = count_of(u, "cache_read_input_tokens", c->cache_read);
    c->cache_write = count_of(u, "cache_creation_input_tokens", c->cache_write);
}

static json_t *openai_usage(const counts *c)
{
    json_int_t prompt = c->in + c->cache_read + c->cache_write;
    return json_pack("{s:I,s:I,s:I,s:{s:I,s:I}}", "prompt_tokens", prompt, "completion_tokens",
                     c->out, "total_tokens", prompt + c->out, "prompt_tokens_details",
                     "cached_tokens", c->cache_read, "cache_write_tokens", c->cache_write);
}

static char *chat_id(char *buf, size_t n, const json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    if (id != NULL && id[0] != '\0')
        snprintf(buf, n, "%s", id);
    else
        snprintf(buf, n, "msg-sy%lx", (unsigned long)time(NULL));
    return buf;
}

sy_err sy_anthropic_normalize(sy_endpoint ep, json_t **resp, char *msg, size_t msglen)
{
    const json_t *r = *resp;
    const json_t *content = json_object_get(r, "content");
    json_t *tcs = NULL, *out = NULL, *message = NULL, *choice = NULL, *usage = NULL;
    sy_buf text;
    sy_err rc = SY_ENOMEM;
    char id[96];
    size_t i;
    const json_t *b;

    sy_buf_init(&text, SIZE_MAX);
    if (!json_is_object(r) || !json_is_array(content)) {
        snprintf(msg, msglen, "upstream answer is not an Anthropic message");
        rc = SY_EUPSTREAM;
        goto out;
    }
    if ((tcs = json_array()) == NULL)
        goto out;
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (type == NULL)
            continue;
        if (strcmp(type, "text") == 0) {
            const json_t *s = json_object_get(b, "text");
            if (json_is_string(s) &&
                sy_buf_append(&text, json_string_value(s), json_string_length(s)) != SY_OK)
                goto out;
        } else if (strcmp(type, "tool_use") == 0 && ep == SY_EP_CHAT) {
            const json_t *input = json_object_get(b, "input");
            if (!json_is_string(json_object_get(b, "id")) ||
                !json_is_string(json_object_get(b, "name"))) {
                snprintf(msg, msglen, "upstream tool_use block %zu has no id or name", i);
                rc = SY_EUPSTREAM;
                goto out;
            }
            char *args = json_is_object(input) ? sy_json_dump(input, NULL) : strdup("{}");
            json_t *tc = args == NULL
                             ? NULL
                             : json_pack("{s:O,s:s,s:{s:O,s:s}}", "id", json_object_get(b, "id"),
                                         "type", "function", "function", "name",
                                         json_object_get(b, "name"), "arguments", args);
            free(args);
            if (tc == NULL || json_array_append_new(tcs, tc) != 0)
                goto out;
        }
        /* thinking, redacted_thinking and server tool blocks have no OpenAI form */
    }
    const char *finish =
        sy_anthropic_finish_reason(json_string_value(json_object_get(r, "stop_reason")));
    counts c = {0};
    counts_update(&c, json_object_get(r, "usage"));
    if ((usage = openai_usage(&c)) == NULL)
        goto out;
    const json_t *model = json_object_get(r, "model");
    if (ep == SY_EP_CHAT) {
        bool has_tools = json_array_size(tcs) > 0;
        message = json_pack("{s:s,s:s%,s:n}", "role", "assistant", "content",
                            text.data ? text.data : "", text.len, "refusal");
        if (message == NULL)
            goto out;
        if (has_tools) {
            if (text.len == 0 && json_object_set_new(message, "content", json_null()) != 0)
                goto out;
            if (json_object_set(message, "tool_calls", tcs) != 0)
                goto out;
        }
        choice = json_pack("{s:i,s:O,s:n,s:s}", "index", 0, "message", message, "logprobs",
                           "finish_reason", finish);
    } else {
        choice = json_pack("{s:s%,s:i,s:n,s:s}", "text", text.data ? text.data : "", text.len,
                           "index", 0, "logprobs", "finish_reason", finish);
    }
    if (choice == NULL)
        goto out;
    out = json_pack("{s:s,s:s,s:I,s:s,s:[O],s:O}", "id", chat_id(id, sizeof(id), r), "object",
                    ep == SY_EP_CHAT ? "chat.completion" : "text_completion", "created",
                    (json_int_t)time(NULL), "model",
                    json_is_string(model) ? json_string_value(model) : "unknown", "choices", choice,
                    "usage", usage);
    if (out == NULL)
        goto out;
    json_decref(*resp);
    *resp = out;
    rc = SY_OK;
out:
    if (rc == SY_ENOMEM)
        snprintf(msg, msglen, "out of memory");
    sy_buf_cleanup(&text);
    json_decref(tcs);
    json_decref(message);
    json_decref(choice);
    json_decref(usage);
    return rc;
}

/* ---- errors ---- */

/* The OpenAI error type and code for an Anthropic error type. */
static void map_error_type(const char *at, int status, const char **type, const char **code)
{
    *code = NULL;
    *type = sy_openai_error_type(status);
    if (at == NULL)
        return;
    if (strcmp(at, "invalid_request_error") == 0) {
        *type = "invalid_request_error";
    } else if (strcmp(at, "authentication_error") == 0) {
        *type = "authentication_error";
        *code = "invalid_api_key";
    } else if (strcmp(at, "permission_error") == 0) {
        *type = "permission_error";
    } else if (strcmp(at, "not_found_error") == 0) {
        *type = "not_found_error";
        *code = "not_found";
    } else if (strcmp(at, "request_too_large") == 0) {
        *type = "invalid_request_error";
        *code = "request_too_large";
    } else if (strcmp(at, "rate_limit_error") == 0) {
        *type = "rate_limit_error";
        *code = "rate_limit_exceeded";
    } else if (strcmp(at, "billing_error") == 0) {
        *type = "insufficient_quota";
        *code = "billing_error";
    } else if (strcmp(at, "overloaded_error") == 0) {
        *type = "api_error";
        *code = "overloaded";
    } else if (strcmp(at, "timeout_error") == 0) {
        *type = "api_error";
        *code = "timeout";
    } else if (strcmp(at, "api_error") == 0) {
        *type = "api_error";
    }
}

static int status_of_type(const char *at)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {
        {"invalid_request_error", 400}, {"authentication_error", 401}, {"billing_error", 402},
        {"permission_error", 403},      {"not_found_error", 404},      {"request_too_large", 413},
        {"rate_limit_error", 429},      {"timeout_error", 504},        {"overloaded_error", 529}};
    for (size_t i = 0; at != NULL && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].type, at) == 0)
            return map[i].status;
    return 500;
}

/* An Anthropic error object (the "error" member) as an OpenAI error body; the message goes
 * through sy_openai_wrap_error for UTF-8 cleaning, length cap and redaction. */
static char *wrap_anthropic(int status, const json_t *e, const char *request_id, const char *secret,
                            size_t *outlen)
{
    const char *at = json_string_value(json_object_get(e, "type"));
    const char *m = json_string_value(json_object_get(e, "message"));
    const char *type, *code;
    char *text = NULL, *out = NULL;
    map_error_type(at, status, &type, &code);
    if (asprintf(&text, "%s%s%s%s",
                 m != NULL && m[0] ? m
                 : at != NULL      ? at
                                   : "upstream error",
                 request_id ? " (anthropic request_id " : "", request_id ? request_id : "",
                 request_id ? ")" : "") < 0)
        return NULL;
    json_t *j =
        json_pack("{s:{s:s,s:s,s:s?}}", "error", "message", text, "type", type, "code", code);
    size_t n;
    char *s = j != NULL ? sy_json_dump(j, &n) : NULL;
    if (s != NULL)
        out = sy_openai_wrap_error(status, s, n, secret, outlen);
    free(s);
    free(text);
    json_decref(j);
    return out;
}

char *sy_anthropic_wrap_error(int status, const char *body, size_t len, const char *secret,
                              size_t *outlen)
{
    json_t *j = len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    const json_t *e = json_object_get(j, "error");
    const char *rid = json_string_value(json_object_get(j, "request_id"));
    char *out;
    if (json_is_object(e) && json_is_string(json_object_get(j, "type")))
        out = wrap_anthropic(status, e, rid, secret, outlen);
    else
        out = sy_openai_wrap_error(status, body, len, secret, outlen);
    json_decref(j);
    return out;
}

/* ---- streams ---- */

typedef enum block_kind { BK_NONE, BK_TEXT, BK_TOOL, BK_DROP } block_kind;

typedef struct anth_stream {
    bool started;       /* message_start seen */
    block_kind kind;    /* the open content block's kind */
    json_int_t block;   /* its index */
    int tool;           /* its OpenAI tool-call index (BK_TOOL) */
    const char *finish; /* from message_delta, NULL until then */
    counts c;
} anth_stream;

/* The stream's envelope (kept in <f> from message_start) as a chunk of <ep>. */
static json_t *chunk_shell(const sy_stream_fix *f, sy_endpoint ep)
{
    json_t *id = json_string(f->id), *created = json_integer((json_int_t)f->created);
    json_t *model = json_string(f->model);
    json_t *c = id != NULL && created != NULL && model != NULL
                    ? sy_provider_chunk_shell(ep, id, created, model, NULL)
                    : NULL;
    json_decref(id);
    json_decref(created);
    json_decref(model);
    return c;
}

/* A chunk with one choice. Chat: <delta> (stolen) is the choice's delta; completions: its "text"
 * member is the choice's text. <finish> NULL = null. */
static sy_err emit_choice(sy_stream_fix *f, sy_endpoint ep, json_t *delta, const char *finish,
                          sy_buf *out)
{
    json_t *c = chunk_shell(f, ep), *choice = NULL;
    sy_err rc = SY_ENOMEM;

    if (delta == NULL || c == NULL)
        goto out;
    if (ep == SY_EP_CHAT) {
        choice = json_pack("{s:i,s:O,s:n,s:s?}", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", finish);
    } else {
        const json_t *text = json_object_get(delta, "text");
        choice = json_pack("{s:s%,s:i,s:n,s:s?}", "text",
                           json_is_string(text) ? json_string_value(text) : "",
                           json_is_string(text) ? json_string_length(text) : 0, "index", 0,
                           "logprobs", "finish_reason", finish);
    }
    if (choice == NULL || json_object_set_new(c, "choices", json_pack("[O]", choice)) != 0)
        goto out;
    if ((rc = sy_provider_emit(out, c)) != SY_OK)
        goto out;
    if (f->obs != NULL)
        f->obs->chunk(f->obs_ud, c);
    f->chunks++;
    f->saw_role = true;
    /* the role chunk (the only delta with a role) says nothing yet; every other one does */
    if (finish != NULL || !json_is_string(json_object_get(delta, "role")))
        f->saw_content = true;
    if (finish != NULL)
        f->saw_finish = true;
out:
    json_decref(delta);
    json_decref(choice);
    json_decref(c);
    return rc;
}

static sy_err keep_usage(sy_stream_fix *f, const anth_stream *s)
{
    json_t *u = openai_usage(&s->c);
    if (u == NULL)
        return SY_ENOMEM;
    json_decref(f->usage);
    f->usage = u;
    return SY_OK;
}

static sy_err on_message_start(sy_stream_fix *f, anth_stream *s, sy_endpoint ep, const json_t *ev,
                               sy_buf *out)
{
    const json_t *m = json_object_get(ev, "message");
    char id[sizeof(f->id)];
    if (s->started)
        return SY_EUPSTREAM; /* one message per stream */
    s->started = true;
    s->block = -1;
    snprintf(f->id, sizeof(f->id), "%s", chat_id(id, sizeof(id), m));
    const char *model = json_string_value(json_object_get(m, "model"));
    snprintf(f->model, sizeof(f->model), "%s", model != NULL ? model : "unknown");
    f->created = (long long)time(NULL);
    counts_update(&s->c, json_object_get(m, "usage"));
    sy_err rc = keep_usage(f, s);
    if (rc != SY_OK || ep != SY_EP_CHAT)
        return rc; /* legacy completion streams have no role chunk */
    return emit_choice(f, ep, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL,
                       out);
}

static json_t *text_delta(sy_endpoint ep, const json_t *text)
{
    return json_pack("{s:O}", ep == SY_EP_CHAT ? "content" : "text", text);
}

static sy_err on_block_start(sy_stream_fix *f, anth_stream *s, sy_endpoint ep, const json_t *ev,
                             sy_buf *out)
{
    const json_t *cb = json_object_get(ev, "content_block");
    const char *type = json_string_value(json_object_get(cb, "type"));
    s->block = json_integer_value(json_object_get(ev, "index"));
    s->kind = BK_DROP;
    if (type != NULL && strcmp(type, "text") == 0) {
        s->kind = BK_TEXT;
        const json_t *text = json_object_get(cb, "text");
        if (json_is_string(text) && json_string_length(text) > 0)
            return emit_choice(f, ep, text_delta(ep, text), NULL, out);
        return SY_OK;
    }
    if (type == NULL || strcmp(type, "tool_use") != 0 || ep != SY_EP_CHAT)
        return SY_OK; /* thinking, redacted_thinking, server tools: nothing for the client */
    const json_t *id = json_object_get(cb, "id"), *name = json_object_get(cb, "name");
    if (!json_is_string(id) || !json_is_string(name))
        return SY_EUPSTREAM;
    s->kind = BK_TOOL;
    s->tool = f->tool_calls++;
    /* The input arrives as input_json_delta fragments; a server that puts a whole, non-empty
     * input in the start event gets it sent as the first fragment. */
    const json_t *input = json_object_get(cb, "input");
    char *args = json_is_object(input) && json_object_size(input) > 0 ? sy_json_dump(input, NULL)
                                                                      : strdup("");
    if (args == NULL)
        return SY_ENOMEM;
    json_t *d = json_pack("{s:[{s:i,s:O,s:s,s:{s:O,s:s}}]}", "tool_calls", "index", s->tool, "id",
                          id, "type", "function", "function", "name", name, "arguments", args);
    free(args);
    return emit_choice(f, ep, d, NULL, out);
}

static sy_err on_block_delta(sy_stream_fix *f, anth_stream *s, sy_endpoint ep, const json_t *ev,
                             sy_buf *out)
{
    const json_t *d = json_object_get(ev, "delta");
    const char *type = json_string_value(json_object_get(d, "type"));
    /* a delta must belong to the open block: anything else is out of order */
    if (s->kind == BK_NONE || json_integer_value(json_object_get(ev, "index")) != s->block ||
        type == NULL)
        return SY_EUPSTREAM;
    if (strcmp(type, "text_delta") == 0 && s->kind == BK_TEXT) {
        const json_t *text = json_object_get(d, "text");
        if (!json_is_string(text))
            return SY_EUPSTREAM;
        if (json_string_length(text) == 0)
            return SY_OK;
        return emit_choice(f, ep, text_delta(ep, text), NULL, out);
    }
    if (strcmp(type, "input_json_delta") == 0 && s->kind == BK_TOOL) {
        const json_t *pj = json_object_get(d, "partial_json");
        if (!json_is_string(pj))
            return SY_EUPSTREAM;
        if (json_string_length(pj) == 0)
            return SY_OK;
        return emit_choice(f, ep,
                           json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls", "index", s->tool,
                                     "function", "arguments", pj),
                           NULL, out);
    }
    return SY_OK; /* thinking_delta, signature_delta, citations_delta, newer kinds */
}

/* message_delta: the stop reason and cumulative usage. The finish chunk goes out here, the
 * usage chunk and [DONE] on message_stop, in the order OpenAI sends them. */
static sy_err on_message_delta(sy_stream_fix *f, anth_stream *s, sy_endpoint ep, const json_t *ev,
                               sy_buf *out)
{
    const json_t *d = json_object_get(ev, "delta");
    counts_update(&s->c, json_object_get(ev, "usage"));
    sy_err rc = keep_usage(f, s);
    if (rc != SY_OK || s->finish != NULL)
        return rc;
    s->finish = sy_anthropic_finish_reason(json_string_value(json_object_get(d, "stop_reason")));
    return emit_choice(f, ep, ep == SY_EP_CHAT ? json_object() : json_pack("{s:s}", "text", ""),
                       s->finish, out);
}

static sy_err on_message_stop(sy_stream_fix *f, anth_stream *s, sy_endpoint ep, sy_buf *out)
{
    sy_err rc;
    if (s->finish == NULL) {
        /* a stream without message_delta still needs its finish chunk */
        s->finish = "stop";
        rc = emit_choice(f, ep, ep == SY_EP_CHAT ? json_object() : json_pack("{s:s}", "text", ""),
                         s->finish, out);
        if (rc != SY_OK)
            return rc;
    }
    if (f->client_usage && f->usage != NULL) {
        json_t *c = chunk_shell(f, ep);
        if (c == NULL || json_object_set(c, "usage", f->usage) != 0) {
            json_decref(c);
            return SY_ENOMEM;
        }
        rc = sy_provider_emit(out, c);
        if (rc == SY_OK && f->obs != NULL)
            f->obs->chunk(f->obs_ud, c);
        json_decref(c);
        if (rc != SY_OK)
            return rc;
        f->chunks++;
    }
    if ((rc = sy_sse_frame(out, "[DONE]", 6)) == SY_OK) {
        f->saw_done = true; /* the upstream thread stops reading here */
        if (f->obs != NULL)
            f->obs->data(f->obs_ud, "[DONE]", 6);
    }
    return rc;
}

static sy_err on_error(sy_stream_fix *f, const json_t *ev, sy_buf *out)
{
    const json_t *e = json_object_get(ev, "error");
    const char *at = json_string_value(json_object_get(e, "type"));
    size_t n;
    char *body = wrap_anthropic(status_of_type(at), json_is_object(e) ? e : ev,
                                json_string_value(json_object_get(ev, "request_id")), NULL, &n);
    if (body == NULL)
        return SY_ENOMEM;
    sy_err rc = sy_sse_frame(out, body, n);
    if (rc == SY_OK && f->obs != NULL)
        f->obs->data(f->obs_ud, body, n);
    free(body);
    f->saw_error = true;
    f->error_status = status_of_type(at);
    return rc;
}

sy_err sy_anthropic_stream_event(sy_stream_fix *f, sy_endpoint ep, const char *event,
                                 const char *data, size_t len, sy_buf *out)
{
    anth_stream *s = f->pstate;
    sy_err rc = SY_EUPSTREAM;
    json_t *ev = NULL;

    if (s == NULL) {
        if ((s = calloc(1, sizeof(*s))) == NULL)
            return SY_ENOMEM;
        f->pstate = s;
        f->pstate_free = free;
    }
    if (f->saw_done || f->saw_error)
        return SY_OK; /* nothing may follow [DONE] or an error event */
    ev = json_loadb(data, len, 0, NULL);
    if (!json_is_object(ev))
        goto out;
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (type == NULL)
        type = event != NULL ? event : "";
    if (strcmp(type, "error") == 0) {
        rc = on_error(f, ev, out);
    } else if (strcmp(type, "message_start") == 0) {
        rc = on_message_start(f, s, ep, ev, out);
    } else if (!s->started) {
        /* ping may come first; anything else before message_start is out of order */
        rc = strcmp(type, "ping") == 0 ? SY_OK : SY_EUPSTREAM;
    } else if (strcmp(type, "content_block_start") == 0) {
        rc = on_block_start(f, s, ep, ev, out);
    } else if (strcmp(type, "content_block_delta") == 0) {
        rc = on_block_delta(f, s, ep, ev, out);
    } else if (strcmp(type, "content_block_stop") == 0) {
        s->kind = BK_NONE;
        s->block = -1;
        rc = SY_OK;
    } else if (strcmp(type, "message_delta") == 0) {
        rc = on_message_delta(f, s, ep, ev, out);
    } else if (strcmp(type, "message_stop") == 0) {
        rc = on_message_stop(f, s, ep, out);
    } else {
        rc = SY_OK; /* ping, and event kinds newer than this code */
    }
out:
    json_decref(ev);
    return rc;
}

/* ---- ops ---- */

static char *anth_body(const sy_deployment *d, sy_endpoint ep, const json_t *body, bool stream,
                       size_t *len, char *msg, size_t msglen)
{
    return sy_anthropic_request(d, ep, body, stream, len, msg, msglen);
}

static sy_err anth_normalize(sy_endpoint ep, json_t **resp, bool embed_b64, char *msg,
                             size_t msglen)
{
    (void)embed_b64;
    return sy_anthropic_normalize(ep, resp, msg, msglen);
}

const sy_provider_ops sy_provider_anthropic = {
    .name = "anthropic",
    .url = sy_anthropic_url,
    .body = anth_body,
    .headers = sy_anthropic_headers,
    .normalize = anth_normalize,
    .stream_event = sy_anthropic_stream_event,
    .wrap_error = sy_anthropic_wrap_error,
};
