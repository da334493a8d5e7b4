/*
 * fake_upstream: from one complete request to a reply, and SSE event generation.
 *
 * Pure functions: no sockets, no timers. The server asks fake_handle() what to answer and, for
 * streams, calls fake_stream_next() each time the pacing interval elapses. Buffered bodies are
 * built with jansson; stream events are formatted by hand (see buf.c for why).
 */
#include "fake.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BODY_JSON_FLAGS (JSON_COMPACT)
#define MAX_CHUNKS 100000
#define MAX_DELAY_MS 3600000
#define MAX_DIM 65536
#define MAX_EMBED_VALUES ((size_t)4 << 20)
#define MAX_WORDS 1000000
#define MAX_TOOL_CALLS 128
#define ECHO_BYTES 40
#define GREETING "Hello from fake! You said: "
#define TOOL_ARGS "{\"location\":\"Paris\",\"unit\":\"c\"}"
#define TOOL_FRAGMENTS 4 /* argument fragments per streamed tool call */
#define FILLER " fake"   /* content of stream chunks beyond the greeting's length */

typedef enum shape {
    SHAPE_OPENAI,
    SHAPE_OLLAMA,
    SHAPE_VLLM,
    SHAPE_FASTAPI,
    SHAPE_TEXT,
    SHAPE_ANTHROPIC
} shape;
typedef enum endpoint {
    EP_NONE,
    EP_CHAT,
    EP_COMPLETIONS,
    EP_EMBEDDINGS,
    EP_MODELS,
    EP_MODEL,
    EP_MESSAGES /* Anthropic Messages API */
} endpoint;

static const char *const known_models[] = {"fake-small", "fake-large", "meta-llama/Llama-3.1-8B"};

static atomic_ullong id_seq;

/* ------------------------------------------------------------------ directives ------------- */

typedef struct directives {
    int status;      /* 0 = answer normally */
    int retry_after; /* -1 = none */
    long chunks;
    long interval_ms;
    long first_byte_ms;
    long drop_after; /* -1 = never */
    long pause_after; /* streams: wait pause_ms after N content chunks; -1 = never */
    long pause_ms;
    bool stall;
    bool malformed;
    bool usage;
    bool shape_set; /* a shape directive was given */
    shape shp;
    long dim;
    long words; /* -1 = the greeting */
    long tool_calls;
    long cache_read;  /* Anthropic usage.cache_read_input_tokens */
    long cache_write; /* Anthropic usage.cache_creation_input_tokens */
    long error_after; /* Anthropic streams: an error event after N content chunks; -1 = never */
    bool thinking;    /* Anthropic: a thinking block before the answer */
    long batch_polls;        /* batches: retrieves until a batch ends (batch_openai.c) */
    long batch_ms;           /* batches: and at least this long after creation */
    long batch_expire_after; /* batches: lines past the first N expire; -1 = none */
    long batch_cancel_keep;  /* batches: a cancelled batch still ran its first N lines */
    long batch_cancel_polls; /* batches: retrieves after a cancel before it ends */
} directives;

static void directives_init(directives *d)
{
    memset(d, 0, sizeof(*d));
    d->retry_after = -1;
    d->chunks = 5;
    d->drop_after = -1;
    d->pause_after = -1;
    d->usage = true;
    d->shp = SHAPE_OPENAI;
    d->dim = 8;
    d->words = -1;
    d->tool_calls = 1;
    d->error_after = -1;
    d->batch_polls = 2;
    d->batch_expire_after = -1;
}

static bool span_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Parses a decimal in [lo, hi] (clamped). Returns false when <s> is not a number. */
static bool parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    long v = 0;
    size_t i;

    if (n == 0)
        return false;
    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        if (v < 100000000000L)
            v = v * 10 + (s[i] - '0');
    }
    *out = v < lo ? lo : v > hi ? hi : v;
    return true;
}

static bool parse_bool(const char *s, size_t n, bool *out)
{
    if (span_eq(s, n, "1") || span_eq(s, n, "true") || span_eq(s, n, "yes"))
        *out = true;
    else if (span_eq(s, n, "0") || span_eq(s, n, "false") || span_eq(s, n, "no"))
        *out = false;
    else
        return false;
    return true;
}

/* The numeric directives: each sets a long of <directives>, clamped to [lo, hi]. */
static const struct num_directive {
    const char *name;
    size_t off;
    long lo, hi;
} num_directives[] = {
    {"chunks", offsetof(directives, chunks), 0, MAX_CHUNKS},
    {"interval_ms", offsetof(directives, interval_ms), 0, MAX_DELAY_MS},
    {"first_byte_ms", offsetof(directives, first_byte_ms), 0, MAX_DELAY_MS},
    {"drop_after", offsetof(directives, drop_after), 0, 1000000000L},
    {"pause_after", offsetof(directives, pause_after), 0, 1000000000L},
    {"pause_ms", offsetof(directives, pause_ms), 0, MAX_DELAY_MS},
    {"dim", offsetof(directives, dim), 1, MAX_DIM},
    {"words", offsetof(directives, words), 0, MAX_WORDS},
    {"tool_calls", offsetof(directives, tool_calls), 1, MAX_TOOL_CALLS},
    {"cache_read", offsetof(directives, cache_read), 0, 1000000000L},
    {"cache_write", offsetof(directives, cache_write), 0, 1000000000L},
    {"error_after", offsetof(directives, error_after), 0, 1000000000L},
    {"batch_polls", offsetof(directives, batch_polls), 0, 1000000L},
    {"batch_ms", offsetof(directives, batch_ms), 0, MAX_DELAY_MS},
    {"batch_expire_after", offsetof(directives, batch_expire_after), 0, 1000000000L},
    {"batch_cancel_keep", offsetof(directives, batch_cancel_keep), 0, 1000000000L},
    {"batch_cancel_polls", offsetof(directives, batch_cancel_polls), 0, 1000000000L},
};

/* The boolean directives: each sets a bool of <directives>. */
static const struct bool_directive {
    const char *name;
    size_t off;
} bool_directives[] = {
    {"stall", offsetof(directives, stall)},
    {"malformed", offsetof(directives, malformed)},
    {"usage", offsetof(directives, usage)},
    {"thinking", offsetof(directives, thinking)},
};

/* One k=v pair; unknown keys and bad values are ignored. */
static void directive_set(directives *d, const char *k, size_t kn, const char *v, size_t vn)
{
    long n;
    size_t i;

    for (i = 0; i < sizeof(num_directives) / sizeof(num_directives[0]); i++) {
        const struct num_directive *nd = &num_directives[i];
        if (span_eq(k, kn, nd->name)) {
            if (parse_num(v, vn, nd->lo, nd->hi, &n))
                *(long *)((char *)d + nd->off) = n;
            return;
        }
    }
    for (i = 0; i < sizeof(bool_directives) / sizeof(bool_directives[0]); i++) {
        if (span_eq(k, kn, bool_directives[i].name)) {
            parse_bool(v, vn, (bool *)((char *)d + bool_directives[i].off));
            return;
        }
    }
    if (span_eq(k, kn, "status")) {
        /* 1xx would break the framing and 304 has no body: only 300..599 except 304 */
        if (parse_num(v, vn, 0, 999, &n))
            d->status = (n >= 300 && n <= 599 && n != 304) ? (int)n : 0;
    } else if (span_eq(k, kn, "retry_after")) {
        if (parse_num(v, vn, 0, 1000000000L, &n))
            d->retry_after = (int)n;
    } else if (span_eq(k, kn, "shape")) {
        d->shape_set = true;
        if (span_eq(v, vn, "openai"))
            d->shp = SHAPE_OPENAI;
        else if (span_eq(v, vn, "ollama"))
            d->shp = SHAPE_OLLAMA;
        else if (span_eq(v, vn, "vllm"))
            d->shp = SHAPE_VLLM;
        else if (span_eq(v, vn, "fastapi"))
            d->shp = SHAPE_FASTAPI;
        else if (span_eq(v, vn, "text"))
            d->shp = SHAPE_TEXT;
        else if (span_eq(v, vn, "anthropic"))
            d->shp = SHAPE_ANTHROPIC;
        else
            d->shape_set = false;
    }
}

static bool is_sep(char c)
{
    return c == ',' || c == '&' || c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* "k=v,k=v" or "k=v k=v": later pairs win. */
static void directives_parse(directives *d, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t start, eq = 0;
        while (i < n && is_sep(s[i]))
            i++;
        start = i;
        while (i < n && !is_sep(s[i])) {
            if (s[i] == '=' && eq == 0)
                eq = i;
            i++;
        }
        if (eq > start)
            directive_set(d, s + start, eq - start, s + eq + 1, i - eq - 1);
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes <s>[0..n) into <out> (capacity <cap>); returns the decoded length. */
static size_t url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t i, o = 0;

    for (i = 0; i < n && o < cap; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* Every "/_f/<list>/" segment of the path. */
static void directives_from_path(directives *d, const char *p, size_t n)
{
    const char *end = p + n, *q = p;
    char dec[2048];

    while (q < end) {
        const char *f = memmem(q, (size_t)(end - q), "/_f/", 4), *seg, *segend;
        if (f == NULL)
            break;
        seg = f + 4;
        segend = memchr(seg, '/', (size_t)(end - seg));
        if (segend == NULL)
            segend = end;
        directives_parse(d, dec, url_decode(seg, (size_t)(segend - seg), dec, sizeof(dec)));
        q = segend;
    }
}

/* Every "[[fake ...]]" in the raw body. */
static void directives_from_body(directives *d, const char *b, size_t n)
{
    const char *end = b + n, *q = b;

    while (q < end) {
        const char *f = memmem(q, (size_t)(end - q), "[[fake", 6), *a, *close;
        if (f == NULL)
            break;
        a = f + 6;
        close = memmem(a, (size_t)(end - a), "]]", 2);
        if (close == NULL)
            break;
        if (a == close || is_sep(*a))
            directives_parse(d, a, (size_t)(close - a));
        q = close + 2;
    }
}

/* ------------------------------------------------------------------ helpers ---------------- */

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static endpoint classify(const char *p, size_t n)
{
    if (ends_with(p, n, "/chat/completions"))
        return EP_CHAT;
    if (ends_with(p, n, "/completions"))
        return EP_COMPLETIONS;
    if (ends_with(p, n, "/embeddings"))
        return EP_EMBEDDINGS;
    if (ends_with(p, n, "/messages"))
        return EP_MESSAGES;
    if (ends_with(p, n, "/models"))
        return EP_MODELS;
    if (memmem(p, n, "/models/", 8) != NULL)
        return EP_MODEL;
    return EP_NONE;
}

/* The length of the longest prefix of <s> of at most <max> bytes that ends on a character
 * boundary (s is valid UTF-8). */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* Appends the text of a message "content" (string, or array of parts with "text"). */
static int content_text(fbuf *t, const json_t *content)
{
    size_t i;
    const json_t *part;

    if (json_is_string(content))
        return fbuf_append(t, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return 0;
    json_array_foreach(content, i, part) {
        const json_t *txt = json_object_get(part, "text");
        if (t->len >= ECHO_BYTES)
            break;
        if (json_is_string(txt) && fbuf_append(t, json_string_value(txt), json_string_length(txt)))
            return -1;
    }
    return 0;
}

/* Appends GREETING + the first ECHO_BYTES bytes of <text>. */
static int greeting(fbuf *g, const char *text, size_t n)
{
    if (fbuf_puts(g, GREETING) != 0)
        return -1;
    return fbuf_append(g, text, utf8_cut(text, n, ECHO_BYTES));
}

static int chat_greeting(fbuf *g, const json_t *root)
{
    const json_t *msgs = json_object_get(root, "messages");
    fbuf t;
    size_t i;
    int rc = -1;

    fbuf_init(&t);
    if (json_is_array(msgs)) {
        for (i = json_array_size(msgs); i-- > 0;) {
            const json_t *m = json_array_get(msgs, i);
            const json_t *role = json_object_get(m, "role");
            if (json_is_string(role) && strcmp(json_string_value(role), "user") == 0) {
                if (content_text(&t, json_object_get(m, "content")) != 0)
                    goto out;
                break;
            }
        }
    }
    rc = greeting(g, t.p ? t.p : "", t.len);
out:
    fbuf_cleanup(&t);
    return rc;
}

/* Anthropic: the last user message's text, tool results included (anthropic.c). */
static int messages_greeting(fbuf *g, const json_t *root)
{
    fbuf t;
    int rc;

    fbuf_init(&t);
    rc = fake_anth_user_text(&t, root) == 0 ? greeting(g, t.p ? t.p : "", t.len) : -1;
    fbuf_cleanup(&t);
    return rc;
}

static int completion_greeting(fbuf *g, const json_t *root)
{
    const json_t *prompt = json_object_get(root, "prompt");

    if (json_is_array(prompt))
        prompt = json_array_get(prompt, 0);
    if (json_is_string(prompt))
        return greeting(g, json_string_value(prompt), json_string_length(prompt));
    return greeting(g, "", 0);
}

static int words_text(fbuf *t, long n)
{
    static const char *const w[] = {"lorem", "ipsum",      "dolor",  "sit", "amet", "consectetur",
                                    "adipiscing", "elit", "sed", "do",  "eiusmod", "tempor"};
    long i;

    for (i = 0; i < n; i++) {
        if ((i && fbuf_append(t, " ", 1)) || fbuf_puts(t, w[i % 12]))
            return -1;
    }
    return 0;
}

static long prompt_tokens(size_t body_len)
{
    long p = (long)(body_len / 4);
    return p < 1 ? 1 : p;
}

static const char *model_of(const json_t *root)
{
    const json_t *m = json_object_get(root, "model");
    return json_is_string(m) ? json_string_value(m) : "fake-small";
}

/* Name of the tool to call, or NULL when the request does not ask for tools. Borrowed. */
static const char *tool_name(const json_t *root)
{
    const json_t *tools = json_object_get(root, "tools");
    const json_t *choice = json_object_get(root, "tool_choice");
    const json_t *t, *fn, *name;

    if (!json_is_array(tools) || json_array_size(tools) == 0)
        return NULL;
    if (json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0)
        return NULL;
    name = json_object_get(choice, "type"); /* Anthropic: {"type":"none"} */
    if (json_is_string(name) && strcmp(json_string_value(name), "none") == 0)
        return NULL;
    /* OpenAI {"type":"function","function":{"name":X}}, Anthropic {"type":"tool","name":X} */
    name = json_object_get(json_object_get(choice, "function"), "name");
    if (!json_is_string(name))
        name = json_object_get(choice, "name");
    if (json_is_string(name))
        return json_string_value(name);
    t = json_array_get(tools, 0);
    fn = json_object_get(t, "function");
    name = json_object_get(fn ? fn : t, "name");
    return json_is_string(name) ? json_string_value(name) : "tool";
}

static json_t *usage_obj(long prompt, long completion)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

int fake_json_take(fbuf *out, json_t *j)
{
    char *s;
    int rc = -1;

    if (j == NULL)
        return -1;
    s = json_dumps(j, BODY_JSON_FLAGS);
    if (s != NULL)
        rc = fbuf_puts(out, s);
    free(s);
    json_decref(j);
    return rc;
}

/* Sets o[k] = v (stolen). On failure releases <o> too, so callers just bail out. */
static int set_new(json_t *o, const char *k, json_t *v)
{
    if (json_object_set_new(o, k, v) == 0)
        return 0;
    json_decref(o);
    return -1;
}

static bool valid_utf8(const char *s, size_t n)
{
    json_t *t = json_stringn(s, n);
    bool ok = t != NULL;

    json_decref(t);
    return ok;
}

/* ------------------------------------------------------------------ errors ----------------- */

static void status_kind(int status, const char **type, const char **code)
{
    *code = NULL;
    if (status == 401) {
        *type = "authentication_error";
        *code = "invalid_api_key";
    } else if (status == 403) {
        *type = "permission_error";
    } else if (status == 404) {
        *type = "invalid_request_error";
        *code = "not_found";
    } else if (status == 429) {
        *type = "rate_limit_error";
        *code = "rate_limit_exceeded";
    } else if (status >= 500) {
        *type = "server_error";
    } else if (status >= 400) {
        *type = "invalid_request_error";
    } else {
        *type = "api_error";
    }
}

static const char *anthropic_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* A complete error reply in <shp>. <type>/<code> NULL: derived from the status. */
static int error_reply(fake_reply *r, shape shp, int status, const char *msg, const char *type,
                       const char *code, const char *param)
{
    json_t *j;
    const char *dtype, *dcode;

    status_kind(status, &dtype, &dcode);
    if (type == NULL) {
        type = dtype;
        code = dcode;
    }
    r->status = status;
    r->ctype = "application/json";
    r->body.len = 0;
    switch (shp) {
    case SHAPE_OLLAMA:
        j = json_pack("{s:s}", "error", msg);
        break;
    case SHAPE_VLLM:
        j = json_pack("{s:s,s:s,s:s,s:n,s:i}", "object", "error", "message", msg, "type",
                      "BadRequestError", "param", "code", status);
        break;
    case SHAPE_FASTAPI:
        j = json_pack("{s:s}", "detail", msg);
        break;
    case SHAPE_ANTHROPIC:
        j = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                      anthropic_type(status), "message", msg);
        break;
    case SHAPE_TEXT:
        r->ctype = "text/plain; charset=utf-8";
        return fbuf_printf(&r->body, "%s\n", msg);
    default:
        j = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", msg, "type", type, "param",
                      param, "code", code);
        break;
    }
    return fake_json_take(&r->body, j);
}

int fake_protocol_error(fbuf *out, int status, const char *message)
{
    const char *type, *code;
    json_t *j;
    char *s;
    int rc = -1;

    status_kind(status, &type, &code);
    j = json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message", message, "type", type, "param",
                  "code", code);
    s = j ? json_dumps(j, BODY_JSON_FLAGS) : NULL;
    if (s != NULL)
        rc = fbuf_printf(out,
                         "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                         status, fake_reason(status), strlen(s), s);
    free(s);
    json_decref(j);
    return rc;
}

const char *fake_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Site Overloaded";
    default: return "Status";
    }
}

/* ------------------------------------------------------------------ buffered answers ------- */

static void next_id(char *buf, size_t n, const char *prefix)
{
    unsigned long long v = atomic_fetch_add_explicit(&id_seq, 1, memory_order_relaxed) + 1;
    snprintf(buf, n, "%sfake%llu", prefix, v);
}

static json_t *tool_calls_array(const char *id, const char *name, long n)
{
    json_t *a = json_array();
    char cid[96];
    long i;

    for (i = 0; a != NULL && i < n; i++) {
        snprintf(cid, sizeof(cid), "call_%s_%ld", strchr(id, '-') ? strchr(id, '-') + 1 : id, i);
        if (json_array_append_new(a, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", cid, "type",
                                               "function", "function", "name", name, "arguments",
                                               TOOL_ARGS)) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static int chat_reply(fake_reply *r, const directives *d, const json_t *root, size_t body_len)
{
    const char *tname = tool_name(root);
    json_t *msg, *choice, *j;
    fbuf text;
    char id[64];
    long completion;
    int rc = -1;

    fbuf_init(&text);
    next_id(id, sizeof(id), "chatcmpl-");
    if (tname != NULL) {
        msg = json_pack("{s:s,s:n,s:o}", "role", "assistant", "content", "tool_calls",
                        tool_calls_array(id, tname, d->tool_calls));
        completion = d->tool_calls * (TOOL_FRAGMENTS + 1);
    } else {
        if ((d->words >= 0 ? words_text(&text, d->words) : chat_greeting(&text, root)) != 0)
            goto out;
        msg = json_pack("{s:s,s:s%}", "role", "assistant", "content", text.p ? text.p : "",
                        text.len);
        completion = d->words >= 0 ? d->words : d->chunks;
    }
    if (msg == NULL)
        goto out;
    if (d->shp != SHAPE_OLLAMA && d->shp != SHAPE_VLLM &&
        json_object_set_new(msg, "refusal", json_null()) != 0) {
        json_decref(msg);
        goto out;
    }
    choice = json_pack("{s:i,s:o}", "index", 0, "message", msg);
    if (choice == NULL)
        goto out;
    if (d->shp != SHAPE_OLLAMA && d->shp != SHAPE_VLLM &&
        json_object_set_new(choice, "logprobs", json_null()) != 0) {
        json_decref(choice);
        goto out;
    }
    if (set_new(choice, "finish_reason", json_string(tname ? "tool_calls" : "stop")) != 0)
        goto out;
    j = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id, "object", "chat.completion", "created",
                  (json_int_t)time(NULL), "model", model_of(root), "choices", choice);
    if (j == NULL)
        goto out;
    if (d->usage && set_new(j, "usage", usage_obj(prompt_tokens(body_len), completion)) != 0)
        goto out;
    if (d->shp != SHAPE_VLLM &&
        set_new(j, "system_fingerprint",
                json_string(d->shp == SHAPE_OLLAMA ? "fp_ollama" : "fp_fake")) != 0)
        goto out;
    rc = fake_json_take(&r->body, j);
out:
    fbuf_cleanup(&text);
    return rc;
}

static int completion_reply(fake_reply *r, const directives *d, const json_t *root,
                            size_t body_len)
{
    json_t *choice, *j;
    fbuf text;
    char id[64];
    int rc = -1;

    fbuf_init(&text);
    next_id(id, sizeof(id), "cmpl-");
    if ((d->words >= 0 ? words_text(&text, d->words) : completion_greeting(&text, root)) != 0)
        goto out;
    choice = json_pack("{s:s%,s:i}", "text", text.p ? text.p : "", text.len, "index", 0);
    if (choice == NULL)
        goto out;
    if (d->shp != SHAPE_OLLAMA && d->shp != SHAPE_VLLM &&
        json_object_set_new(choice, "logprobs", json_null()) != 0) {
        json_decref(choice);
        goto out;
    }
    if (set_new(choice, "finish_reason", json_string("stop")) != 0)
        goto out;
    j = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id, "object", "text_completion", "created",
                  (json_int_t)time(NULL), "model", model_of(root), "choices", choice);
    if (j == NULL)
        goto out;
    if (d->usage && set_new(j, "usage", usage_obj(prompt_tokens(body_len),
                                                  d->words >= 0 ? d->words : d->chunks)) != 0)
        goto out;
    rc = fake_json_take(&r->body, j);
out:
    fbuf_cleanup(&text);
    return rc;
}

/* Anthropic Messages: one text block (cut at the first stop sequence it contains), or tool_use
 * blocks; a thinking block first with thinking=1. Once the last user turn carries tool
 * results, the answer is text, as a model's would be. */
static int messages_reply(fake_reply *r, const directives *d, const json_t *root,
                          size_t body_len)
{
    const char *tname = fake_anth_after_tools(root) ? NULL : tool_name(root);
    const char *stop_seq = NULL;
    json_t *content = json_array(), *j;
    fbuf text, usage;
    char id[64], tid[96];
    long completion, i;
    int rc = -1;

    fbuf_init(&text);
    fbuf_init(&usage);
    next_id(id, sizeof(id), "msg_");
    if (content == NULL)
        goto out;
    if (d->thinking &&
        json_array_append_new(content, json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking",
                                                 "Let me think.", "signature", "fakesig")) != 0)
        goto out;
    if (tname != NULL) {
        for (i = 0; i < d->tool_calls; i++) {
            snprintf(tid, sizeof(tid), "toolu_%s_%ld", id + 4, i);
            if (json_array_append_new(content,
                                      json_pack("{s:s,s:s,s:s,s:{s:s,s:s}}", "type", "tool_use",
                                                "id", tid, "name", tname, "input", "location",
                                                "Paris", "unit", "c")) != 0)
                goto out;
        }
        completion = d->tool_calls * (TOOL_FRAGMENTS + 1);
    } else {
        size_t at = 0;
        if ((d->words >= 0 ? words_text(&text, d->words) : messages_greeting(&text, root)) != 0)
            goto out;
        if ((stop_seq = fake_anth_stop(text.p ? text.p : "", text.len, root, &at)) != NULL)
            text.len = at;
        if (json_array_append_new(content, json_pack("{s:s,s:s%}", "type", "text", "text",
                                                     text.p ? text.p : "", text.len)) != 0)
            goto out;
        completion = d->words >= 0 ? d->words : d->chunks;
    }
    j = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:s?}", "id", id, "type", "message", "role",
                  "assistant", "model", model_of(root), "content", content, "stop_reason",
                  tname ? "tool_use" : stop_seq ? "stop_sequence" : "end_turn", "stop_sequence",
                  stop_seq);
    content = NULL;
    if (j == NULL)
        goto out;
    if (d->usage && (fake_anth_usage(&usage, prompt_tokens(body_len), completion, d->cache_read,
                                     d->cache_write) != 0 ||
                     set_new(j, "usage", json_loadb(usage.p, usage.len, 0, NULL)) != 0))
        goto out;
    rc = fake_json_take(&r->body, j);
out:
    json_decref(content);
    fbuf_cleanup(&text);
    fbuf_cleanup(&usage);
    return rc;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The embedding of one input: deterministic in (text, dim), unit length, every value a
 * multiple of 2^-16 so it is exact as float32, as double and in its shortest decimal form. */
static void embed_values(uint64_t seed, long dim, float *v)
{
    uint64_t x = seed ? seed : 0x9E3779B97F4A7C15ULL;
    double norm = 0;
    long i;

    for (i = 0; i < dim; i++) {
        double u;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        u = (double)((x * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
        v[i] = (float)(u * 2 - 1);
        norm += (double)v[i] * v[i];
    }
    norm = sqrt(norm);
    for (i = 0; i < dim; i++)
        v[i] = (float)(round((norm > 0 ? v[i] / norm : 0) * 65536.0) / 65536.0);
}

static int embeddings_reply(fake_reply *r, const directives *d, const json_t *root,
                            size_t body_len)
{
    const json_t *input = json_object_get(root, "input"), *fmt;
    const json_t *item;
    json_t *data = NULL, *j;
    bool b64, tokens;
    size_t n, i;
    float *v = NULL;
    fbuf tmp;
    int rc = -1;

    fbuf_init(&tmp);
    fmt = json_object_get(root, "encoding_format");
    b64 = json_is_string(fmt) && strcmp(json_string_value(fmt), "base64") == 0;
    /* one string, an array of strings, one token array, or an array of token arrays */
    tokens = json_is_array(input) && json_array_size(input) > 0 &&
             json_is_integer(json_array_get(input, 0));
    if (json_is_string(input) || tokens)
        n = 1;
    else if (json_is_array(input) && json_array_size(input) > 0)
        n = json_array_size(input);
    else
        return error_reply(r, d->shp, 400, "'input' is required: a string or an array", NULL,
                           NULL, "input");
    if (n > MAX_EMBED_VALUES / (size_t)d->dim)
        return error_reply(r, d->shp, 400, "too many embedding values", NULL, NULL, "input");
    v = malloc(sizeof(float) * (size_t)d->dim);
    data = json_array();
    if (v == NULL || data == NULL)
        goto out;
    for (i = 0; i < n; i++) {
        uint64_t h = 14695981039346656037ULL;
        json_t *emb;
        item = (json_is_string(input) || tokens) ? input : json_array_get(input, i);
        if (json_is_string(item)) {
            h = fnv1a(h, json_string_value(item), json_string_length(item));
        } else if (json_is_array(item)) {
            size_t k;
            const json_t *t;
            json_array_foreach(item, k, t) {
                json_int_t tv = json_integer_value(t);
                h = fnv1a(h, &tv, sizeof(tv));
            }
        } else {
            rc = error_reply(r, d->shp, 400, "'input' items must be strings or token arrays",
                             NULL, NULL, "input");
            goto out;
        }
        h = fnv1a(h, &d->dim, sizeof(d->dim));
        embed_values(h, d->dim, v);
        if (b64) {
            tmp.len = 0;
            /* float32 little-endian, as OpenAI sends it (this host is little-endian) */
            if (fbuf_base64(&tmp, (const unsigned char *)v, sizeof(float) * (size_t)d->dim))
                goto out;
            emb = json_stringn(tmp.p, tmp.len);
        } else {
            long k;
            emb = json_array();
            for (k = 0; emb != NULL && k < d->dim; k++) {
                if (json_array_append_new(emb, json_real(v[k])) != 0) {
                    json_decref(emb);
                    emb = NULL;
                }
            }
        }
        if (emb == NULL || json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object",
                                                                 "embedding", "index",
                                                                 (json_int_t)i, "embedding",
                                                                 emb)) != 0)
            goto out;
    }
    j = json_pack("{s:s,s:o,s:s}", "object", "list", "data", data, "model", model_of(root));
    data = NULL;
    if (j == NULL)
        goto out;
    if (d->usage && set_new(j, "usage", json_pack("{s:I,s:I}", "prompt_tokens",
                                                  (json_int_t)prompt_tokens(body_len),
                                                  "total_tokens",
                                                  (json_int_t)prompt_tokens(body_len))) != 0)
        goto out;
    rc = fake_json_take(&r->body, j);
out:
    json_decref(data);
    free(v);
    fbuf_cleanup(&tmp);
    return rc;
}

static json_t *model_obj(const char *id)
{
    return json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model", "created", 1700000000,
                     "owned_by", "fake");
}

static int models_reply(fake_reply *r, const directives *d, endpoint ep, const char *p, size_t n)
{
    size_t i;
    json_t *list;

    if (ep == EP_MODELS) {
        list = json_array();
        for (i = 0; list != NULL && i < sizeof(known_models) / sizeof(known_models[0]); i++) {
            if (json_array_append_new(list, model_obj(known_models[i])) != 0) {
                json_decref(list);
                list = NULL;
            }
        }
        return list ? fake_json_take(&r->body,
                                     json_pack("{s:s,s:o}", "object", "list", "data", list))
                    : -1;
    } else {
        /* ids may contain '/': try every "/models/" occurrence, leftmost first */
        const char *q = p, *end = p + n, *first = NULL;
        char id[1024], msg[1200];
        size_t idn = 0;

        while (q < end) {
            const char *m = memmem(q, (size_t)(end - q), "/models/", 8);
            if (m == NULL)
                break;
            idn = url_decode(m + 8, (size_t)(end - m - 8), id, sizeof(id) - 1);
            id[idn] = '\0';
            if (first == NULL)
                first = m;
            for (i = 0; i < sizeof(known_models) / sizeof(known_models[0]); i++) {
                if (strlen(known_models[i]) == idn && memcmp(known_models[i], id, idn) == 0)
                    return fake_json_take(&r->body, model_obj(known_models[i]));
            }
            q = m + 1;
        }
        idn = first ? url_decode(first + 8, (size_t)(end - first - 8), id, sizeof(id) - 1) : 0;
        id[idn] = '\0';
        if (memchr(id, '\0', idn) != NULL || !valid_utf8(id, idn))
            snprintf(id, sizeof(id), "?");
        snprintf(msg, sizeof(msg), "The model '%s' does not exist", id);
        return error_reply(r, d->shp, 404, msg, "invalid_request_error", "model_not_found",
                           "model");
    }
}

/* ------------------------------------------------------------------ streams ---------------- */

struct fake_stream {
    endpoint ep;
    shape shp;
    bool include_usage; /* the client asked for the usage chunk */
    bool usage;         /* usage may be sent at all (Anthropic always sends it) */
    bool malformed;
    bool chunked;
    unsigned interval_ms;
    long drop_after;  /* -1 = never */
    long pause_after; /* pause_ms instead of interval_ms after this many content events; -1 = never */
    unsigned pause_ms;
    long n_content;   /* content events (text pieces, or tool-call events) */
    long sent;        /* content events emitted */
    long n_calls;     /* 0 = text */
    long prompt_tokens;
    long long created;
    char id[64];
    char *model_json; /* the model as a quoted JSON string */
    char *tool_json;  /* the tool name as a quoted JSON string */
    long cache_read, cache_write; /* Anthropic usage */
    long error_after;             /* Anthropic: error event after N content chunks, -1 = never */
    bool thinking;                /* Anthropic: a thinking block at index 0 */
    char *stop_json;              /* Anthropic: the stop sequence hit (quoted JSON), or NULL */
    char *text;       /* the greeting, split into the content pieces */
    size_t text_len;
    size_t text_chars; /* characters (code points) in text */
};

void fake_stream_free(fake_stream *s)
{
    if (s == NULL)
        return;
    free(s->model_json);
    free(s->tool_json);
    free(s->stop_json);
    free(s->text);
    free(s);
}

unsigned fake_stream_interval_ms(const fake_stream *s)
{
    return s->pause_after >= 0 && s->sent == s->pause_after ? s->pause_ms : s->interval_ms;
}

static char *json_str_dup(const char *v, size_t n)
{
    fbuf b;

    fbuf_init(&b);
    if (fbuf_json_str(&b, v, n) != 0 || fbuf_append(&b, "", 1) != 0) {
        fbuf_cleanup(&b);
        return NULL;
    }
    return b.p;
}

static fake_stream *stream_new(endpoint ep, const directives *d, const json_t *root,
                               size_t body_len)
{
    fake_stream *s = calloc(1, sizeof(*s));
    const json_t *opts = json_object_get(root, "stream_options");
    const char *model = model_of(root);
    const char *tname = ep == EP_COMPLETIONS                            ? NULL
                        : ep == EP_MESSAGES && fake_anth_after_tools(root) ? NULL
                                                                            : tool_name(root);
    fbuf g;

    fbuf_init(&g);
    if (s == NULL)
        return NULL;
    s->ep = ep;
    s->shp = d->shp;
    s->include_usage = d->usage && json_is_true(json_object_get(opts, "include_usage"));
    s->usage = d->usage;
    s->malformed = d->malformed;
    s->interval_ms = (unsigned)d->interval_ms;
    s->drop_after = d->drop_after;
    s->pause_after = d->pause_after;
    s->pause_ms = (unsigned)d->pause_ms;
    s->cache_read = d->cache_read;
    s->cache_write = d->cache_write;
    s->error_after = ep == EP_MESSAGES ? d->error_after : -1;
    s->thinking = ep == EP_MESSAGES && d->thinking;
    s->prompt_tokens = prompt_tokens(body_len);
    s->created = (long long)time(NULL);
    next_id(s->id, sizeof(s->id),
            ep == EP_CHAT ? "chatcmpl-" : ep == EP_MESSAGES ? "msg_" : "cmpl-");
    if ((s->model_json = json_str_dup(model, strlen(model))) == NULL)
        goto fail;
    if (tname != NULL) {
        s->n_calls = d->tool_calls;
        s->n_content = s->n_calls * (TOOL_FRAGMENTS + 1);
        if ((s->tool_json = json_str_dup(tname, strlen(tname))) == NULL)
            goto fail;
    } else {
        s->n_content = d->chunks;
        if ((ep == EP_COMPLETIONS ? completion_greeting(&g, root)
             : ep == EP_MESSAGES  ? messages_greeting(&g, root)
                                  : chat_greeting(&g, root)) != 0)
            goto fail;
        if (ep == EP_MESSAGES) {
            size_t at = 0;
            const char *hit = fake_anth_stop(g.p ? g.p : "", g.len, root, &at);
            if (hit != NULL) {
                g.len = at;
                if ((s->stop_json = json_str_dup(hit, strlen(hit))) == NULL)
                    goto fail;
            }
        }
        s->text = g.p;
        s->text_len = g.len;
        g.p = NULL; /* the stream owns it now */
        for (size_t k = 0; k < s->text_len; k++)
            s->text_chars += ((unsigned char)s->text[k] & 0xC0) != 0x80;
    }
    return s;
fail:
    fbuf_cleanup(&g);
    fake_stream_free(s);
    return NULL;
}

/* Starts one SSE event: room for the chunk-size line, "event: <name>" when given, "data: ". */
#define CHUNK_GAP 10
static int ev_open_named(const fake_stream *s, fbuf *o, size_t *start, const char *name)
{
    *start = o->len;
    if (s->chunked) {
        if (fbuf_reserve(o, CHUNK_GAP) != 0)
            return -1;
        o->len += CHUNK_GAP;
    }
    if (name != NULL && fbuf_printf(o, "event: %s\n", name) != 0)
        return -1;
    return fbuf_puts(o, "data: ");
}

static int ev_open(const fake_stream *s, fbuf *o, size_t *start)
{
    return ev_open_named(s, o, start, NULL);
}

/* Ends the event and frames it as one HTTP chunk. */
static int ev_close(const fake_stream *s, fbuf *o, size_t start)
{
    char hdr[CHUNK_GAP + 1];
    size_t plen;
    int hl;

    if (fbuf_puts(o, "\n\n") != 0)
        return -1;
    if (!s->chunked)
        return 0;
    plen = o->len - start - CHUNK_GAP;
    hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", plen);
    if (hl <= 0 || hl > CHUNK_GAP)
        return -1;
    memmove(o->p + start + hl, o->p + start + CHUNK_GAP, plen);
    memcpy(o->p + start, hdr, (size_t)hl);
    o->len = start + (size_t)hl + plen;
    return fbuf_puts(o, "\r\n");
}

/* Everything of a chat chunk up to and including "delta": / a completion chunk up to "text":. */
static int chunk_head(const fake_stream *s, fbuf *o)
{
    if (s->ep == EP_COMPLETIONS)
        return fbuf_printf(o,
                           "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,"
                           "\"model\":%s,\"choices\":[{\"text\":",
                           s->id, s->created, s->model_json);
    return fbuf_printf(o,
                       "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
                       "\"model\":%s,%s\"choices\":[{\"index\":0,\"delta\":",
                       s->id, s->created, s->model_json,
                       s->shp == SHAPE_OLLAMA  ? "\"system_fingerprint\":\"fp_ollama\","
                       : s->shp == SHAPE_VLLM ? ""
                                              : "\"system_fingerprint\":\"fp_fake\",");
}

/* The rest of a chunk after the delta (chat) or text (completion). <finish> NULL = null. */
static int chunk_tail(const fake_stream *s, fbuf *o, const char *finish)
{
    bool lp = s->shp != SHAPE_OLLAMA && s->shp != SHAPE_VLLM;

    if (s->ep == EP_COMPLETIONS && fbuf_puts(o, ",\"index\":0") != 0)
        return -1;
    if (lp && fbuf_puts(o, ",\"logprobs\":null") != 0)
        return -1;
    return fbuf_printf(o, ",\"finish_reason\":%s%s%s}]%s}", finish ? "\"" : "",
                       finish ? finish : "null", finish ? "\"" : "",
                       s->include_usage && s->shp == SHAPE_OPENAI ? ",\"usage\":null" : "");
}

/* Byte offset of character <k> of the text (text_len when past the end). The text is the
 * greeting, at most ~70 bytes, so walking it is cheaper than keeping an index. */
static size_t char_offset(const fake_stream *s, size_t k)
{
    size_t off = 0;

    while (off < s->text_len && k > 0) {
        off++;
        while (off < s->text_len && ((unsigned char)s->text[off] & 0xC0) == 0x80)
            off++;
        k--;
    }
    return off;
}

/* Content piece <i>. With at most as many chunks as the text has characters, the text is split
 * into near-equal runs of whole characters (their concatenation is the text, none is empty);
 * with more chunks, piece i is character i and the rest carry FILLER. */
static void piece(const fake_stream *s, long i, const char **p, size_t *pn)
{
    unsigned long long n = (unsigned long long)s->n_content, nchars = s->text_chars;
    size_t a, b;

    if (n <= nchars) {
        a = char_offset(s, (size_t)((unsigned long long)i * nchars / n));
        b = char_offset(s, (size_t)((unsigned long long)(i + 1) * nchars / n));
    } else if ((unsigned long long)i < nchars) {
        a = char_offset(s, (size_t)i);
        b = char_offset(s, (size_t)i + 1);
    } else {
        *p = FILLER;
        *pn = strlen(FILLER);
        return;
    }
    *p = s->text + a;
    *pn = b - a;
}

/* ---- Anthropic Messages streams: message_start, ping, content blocks, message_delta,
 * message_stop; no [DONE]. */

static int anth_simple(fake_stream *s, fbuf *o, const char *name, const char *json)
{
    size_t start;

    if (ev_open_named(s, o, &start, name) != 0 || fbuf_puts(o, json) != 0)
        return -1;
    return ev_close(s, o, start);
}

static int anth_block_stop(fake_stream *s, fbuf *o, long index)
{
    char j[80];

    snprintf(j, sizeof(j), "{\"type\":\"content_block_stop\",\"index\":%ld}", index);
    return anth_simple(s, o, "content_block_stop", j);
}

/* Index of the first answer block: a thinking block, when asked, comes first. */
static long anth_base(const fake_stream *s)
{
    return s->thinking ? 1 : 0;
}

/* The error event a stream ends with (error_after=N): Anthropic's overloaded_error. */
static int anth_error(fake_stream *s, fbuf *o)
{
    if (anth_simple(s, o, "error",
                    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                    "\"message\":\"Overloaded\"}}") != 0)
        return -1;
    return s->chunked ? fbuf_puts(o, "0\r\n\r\n") : 0;
}

static int anth_start(fake_stream *s, fbuf *o)
{
    size_t start;
    char j[160];

    if (ev_open_named(s, o, &start, "message_start") != 0 ||
        fbuf_printf(o,
                    "{\"type\":\"message_start\",\"message\":{\"id\":\"%s\",\"type\":"
                    "\"message\",\"role\":\"assistant\",\"model\":%s,\"content\":[],"
                    "\"stop_reason\":null,\"stop_sequence\":null",
                    s->id, s->model_json) != 0 ||
        (s->usage && (fbuf_puts(o, ",\"usage\":") != 0 ||
                      fake_anth_usage(o, s->prompt_tokens, 1, s->cache_read, s->cache_write))) ||
        fbuf_puts(o, "}}") != 0 || ev_close(s, o, start) != 0)
        return -1;
    if (anth_simple(s, o, "ping", "{\"type\":\"ping\"}") != 0)
        return -1;
    if (s->thinking &&
        (anth_simple(s, o, "content_block_start",
                     "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
                     "\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}") != 0 ||
         anth_simple(s, o, "content_block_delta",
                     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                     "\"thinking_delta\",\"thinking\":\"Let me think.\"}}") != 0 ||
         anth_simple(s, o, "content_block_delta",
                     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                     "\"signature_delta\",\"signature\":\"fakesig\"}}") != 0 ||
         anth_block_stop(s, o, 0) != 0))
        return -1;
    snprintf(j, sizeof(j),
             "{\"type\":\"content_block_start\",\"index\":%ld,"
             "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
             anth_base(s));
    if (s->n_calls == 0)
        return anth_simple(s, o, "content_block_start", j);
    return 0;
}

static int anth_content(fake_stream *s, fbuf *o, long i)
{
    size_t start;

    if (s->n_calls > 0) {
        static const char *const frag[TOOL_FRAGMENTS] = {"{\"location\":", "\"Paris\",",
                                                         "\"unit\":", "\"c\"}"};
        long call = i / (TOOL_FRAGMENTS + 1), part = i % (TOOL_FRAGMENTS + 1);
        long index = anth_base(s) + call;
        if (part == 0) {
            if (call > 0 && anth_block_stop(s, o, index - 1) != 0)
                return -1;
            if (ev_open_named(s, o, &start, "content_block_start") != 0 ||
                fbuf_printf(o,
                            "{\"type\":\"content_block_start\",\"index\":%ld,"
                            "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_%s_%ld\","
                            "\"name\":%s,\"input\":{}}}",
                            index, s->id + 4, call, s->tool_json) != 0)
                return -1;
        } else {
            const char *f = frag[part - 1];
            if (ev_open_named(s, o, &start, "content_block_delta") != 0 ||
                fbuf_printf(o,
                            "{\"type\":\"content_block_delta\",\"index\":%ld,\"delta\":{"
                            "\"type\":\"input_json_delta\",\"partial_json\":",
                            index) != 0 ||
                fbuf_json_str(o, f, strlen(f)) != 0 || fbuf_puts(o, "}}") != 0)
                return -1;
        }
    } else {
        const char *p;
        size_t pn;
        piece(s, i, &p, &pn);
        if (ev_open_named(s, o, &start, "content_block_delta") != 0 ||
            fbuf_printf(o, "{\"type\":\"content_block_delta\",\"index\":%ld,\"delta\":{"
                           "\"type\":\"text_delta\",\"text\":",
                        anth_base(s)) != 0 ||
            fbuf_json_str(o, p, pn) != 0 || fbuf_puts(o, "}}") != 0)
            return -1;
    }
    return ev_close(s, o, start);
}

static int anth_tail(fake_stream *s, fbuf *o)
{
    size_t start;

    if (anth_block_stop(s, o, anth_base(s) + (s->n_calls > 0 ? s->n_calls - 1 : 0)) != 0)
        return -1;
    /* usage in message_delta is cumulative: the whole message's counters */
    if (ev_open_named(s, o, &start, "message_delta") != 0 ||
        fbuf_printf(o,
                    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
                    "\"stop_sequence\":%s}",
                    s->n_calls      ? "tool_use"
                    : s->stop_json ? "stop_sequence"
                                   : "end_turn",
                    s->stop_json ? s->stop_json : "null") != 0 ||
        (s->usage && (fbuf_puts(o, ",\"usage\":") != 0 ||
                      fake_anth_usage(o, s->prompt_tokens, s->n_content, s->cache_read,
                                      s->cache_write) != 0)) ||
        fbuf_puts(o, "}") != 0 || ev_close(s, o, start) != 0)
        return -1;
    if (anth_simple(s, o, "message_stop", "{\"type\":\"message_stop\"}") != 0)
        return -1;
    return s->chunked ? fbuf_puts(o, "0\r\n\r\n") : 0;
}

static int emit_content(fake_stream *s, fbuf *o, long i)
{
    size_t start;

    if (s->ep == EP_MESSAGES)
        return anth_content(s, o, i);
    if (ev_open(s, o, &start) != 0 || chunk_head(s, o) != 0)
        return -1;
    if (s->n_calls > 0) {
        static const char *const frag[TOOL_FRAGMENTS] = {"{\"location\":", "\"Paris\",",
                                                         "\"unit\":", "\"c\"}"};
        long call = i / (TOOL_FRAGMENTS + 1), part = i % (TOOL_FRAGMENTS + 1);
        char idx[32];
        if (s->shp == SHAPE_OLLAMA)
            idx[0] = '\0';
        else
            snprintf(idx, sizeof(idx), "\"index\":%ld,", call);
        if (part == 0) {
            if (fbuf_printf(o,
                            "{\"tool_calls\":[{%s\"id\":\"call_%s_%ld\",\"type\":\"function\","
                            "\"function\":{\"name\":%s,\"arguments\":\"\"}}]}",
                            idx, strchr(s->id, '-') ? strchr(s->id, '-') + 1 : s->id, call,
                            s->tool_json) != 0)
                return -1;
        } else {
            const char *f = frag[part - 1];
            if (fbuf_printf(o, "{\"tool_calls\":[{%s\"function\":{\"arguments\":", idx) != 0 ||
                fbuf_json_str(o, f, strlen(f)) != 0 || fbuf_puts(o, "}}]}") != 0)
                return -1;
        }
    } else {
        const char *p;
        size_t pn;
        piece(s, i, &p, &pn);
        if (s->ep == EP_CHAT && fbuf_puts(o, "{\"content\":") != 0)
            return -1;
        if (fbuf_json_str(o, p, pn) != 0 || (s->ep == EP_CHAT && fbuf_puts(o, "}") != 0))
            return -1;
    }
    if (chunk_tail(s, o, NULL) != 0)
        return -1;
    return ev_close(s, o, start);
}

static int emit_tail(fake_stream *s, fbuf *o)
{
    size_t start;

    if (s->ep == EP_MESSAGES)
        return anth_tail(s, o);
    if (ev_open(s, o, &start) != 0 || chunk_head(s, o) != 0 ||
        fbuf_puts(o, s->ep == EP_CHAT ? "{}" : "\"\"") != 0 ||
        chunk_tail(s, o, s->n_calls ? "tool_calls" : "stop") != 0 || ev_close(s, o, start) != 0)
        return -1;
    if (s->include_usage) {
        long c = s->n_content;
        if (ev_open(s, o, &start) != 0 ||
            fbuf_printf(o,
                        "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":%s,%s"
                        "\"choices\":[],\"usage\":{\"prompt_tokens\":%ld,"
                        "\"completion_tokens\":%ld,\"total_tokens\":%ld}}",
                        s->id, s->ep == EP_CHAT ? "chat.completion.chunk" : "text_completion",
                        s->created, s->model_json,
                        s->ep == EP_COMPLETIONS || s->shp == SHAPE_VLLM ? ""
                        : s->shp == SHAPE_OLLAMA ? "\"system_fingerprint\":\"fp_ollama\","
                                                 : "\"system_fingerprint\":\"fp_fake\",",
                        s->prompt_tokens, c, s->prompt_tokens + c) != 0 ||
            ev_close(s, o, start) != 0)
            return -1;
    }
    if (ev_open(s, o, &start) != 0 || fbuf_puts(o, "[DONE]") != 0 || ev_close(s, o, start) != 0)
        return -1;
    return s->chunked ? fbuf_puts(o, "0\r\n\r\n") : 0;
}

fake_step fake_stream_start(fake_stream *s, fbuf *o, bool chunked)
{
    size_t start;

    s->chunked = chunked;
    if (fbuf_puts(o, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n") != 0 ||
        fbuf_puts(o, chunked ? "Transfer-Encoding: chunked\r\n\r\n" : "Connection: close\r\n\r\n"))
        return FAKE_STEP_FAIL;
    if (s->malformed && s->ep == EP_MESSAGES) {
        if (ev_open_named(s, o, &start, "message_start") != 0 ||
            fbuf_printf(o, "{\"type\":\"message_start\",\"message\":{\"id\":\"%s\",\"con", s->id) ||
            ev_close(s, o, start) != 0)
            return FAKE_STEP_FAIL;
        return FAKE_STEP_DROP;
    }
    if (s->malformed) {
        if (ev_open(s, o, &start) != 0 ||
            fbuf_printf(o, "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"choices\":[{"
                           "\"index\":0,\"delta\":{\"content\":\"unterminated",
                        s->id) != 0 ||
            ev_close(s, o, start) != 0)
            return FAKE_STEP_FAIL;
        return FAKE_STEP_DROP;
    }
    if (s->ep == EP_MESSAGES && anth_start(s, o) != 0)
        return FAKE_STEP_FAIL;
    if (s->error_after == 0)
        return anth_error(s, o) == 0 ? FAKE_STEP_END : FAKE_STEP_FAIL;
    if (s->ep == EP_CHAT) {
        const char *role = s->shp == SHAPE_OLLAMA ? "{\"content\":\"\"}"
                           : s->shp == SHAPE_VLLM ? "{\"role\":\"assistant\",\"content\":\"\"}"
                                                  : "{\"role\":\"assistant\",\"content\":\"\","
                                                    "\"refusal\":null}";
        if (ev_open(s, o, &start) != 0 || chunk_head(s, o) != 0 || fbuf_puts(o, role) != 0 ||
            chunk_tail(s, o, NULL) != 0 || ev_close(s, o, start) != 0)
            return FAKE_STEP_FAIL;
    }
    if (s->drop_after == 0)
        return FAKE_STEP_DROP;
    if (s->n_content == 0)
        return emit_tail(s, o) == 0 ? FAKE_STEP_END : FAKE_STEP_FAIL;
    return FAKE_STEP_MORE;
}

fake_step fake_stream_next(fake_stream *s, fbuf *o)
{
    if (s->sent >= s->n_content)
        return FAKE_STEP_END;
    if (emit_content(s, o, s->sent) != 0)
        return FAKE_STEP_FAIL;
    s->sent++;
    if (s->drop_after >= 0 && s->sent >= s->drop_after)
        return FAKE_STEP_DROP;
    if (s->error_after >= 0 && s->sent >= s->error_after && s->sent < s->n_content)
        return anth_error(s, o) == 0 ? FAKE_STEP_END : FAKE_STEP_FAIL;
    if (s->sent == s->n_content)
        return emit_tail(s, o) == 0 ? FAKE_STEP_END : FAKE_STEP_FAIL;
    return FAKE_STEP_MORE;
}

/* ------------------------------------------------------------------ dispatch --------------- */

void fake_reply_init(fake_reply *r)
{
    memset(r, 0, sizeof(*r));
    fbuf_init(&r->body);
    r->status = 200;
    r->ctype = "application/json";
    r->retry_after = -1;
}

void fake_reply_cleanup(fake_reply *r)
{
    fbuf_cleanup(&r->body);
    fake_stream_free(r->stream);
    r->stream = NULL;
}

static int text_reply(fake_reply *r, char *json_new)
{
    int rc = json_new ? fbuf_puts(&r->body, json_new) : -1;
    free(json_new);
    return rc;
}

int fake_error_reply(fake_reply *r, bool anthropic, int status, const char *msg)
{
    return error_reply(r, anthropic ? SHAPE_ANTHROPIC : SHAPE_OPENAI, status, msg, NULL, NULL,
                       NULL);
}

int fake_json_reply(fake_reply *r, int status, json_t *j)
{
    r->status = status;
    r->ctype = "application/json";
    r->body.len = 0;
    return fake_json_take(&r->body, j) == 0 ? 1 : -1;
}

const char *fake_header(const fake_request *rq, const char *name, size_t *vlen)
{
    const char *p = rq->headers, *end = rq->headers + rq->headers_len;
    size_t nl = strlen(name);

    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol != NULL ? eol : end;
        if ((size_t)(le - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1, *ve = le;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = le + 1;
    }
    return NULL;
}

/* The batch endpoints (batch_openai.c, batch_anthropic.c) see path directives only: their
 * bodies carry many lines, and a line's [[fake ...]] is for that line. Returns 1 when <path>
 * is one of theirs (reply filled), 0 when not, -1 when out of memory. */
static int batch_dispatch(const fake_request *rq, const char *path, size_t plen,
                          const directives *d, fake_reply *r)
{
    fake_batch_opts o = {.polls = d->batch_polls,
                         .delay_ms = d->batch_ms,
                         .expire_after = d->batch_expire_after,
                         .cancel_keep = d->batch_cancel_keep,
                         .cancel_polls = d->batch_cancel_polls};
    int k = fake_batch_kind(path, plen);
    char msg[64];

    if (k == 0)
        return 0;
    r->first_byte_ms = (unsigned)d->first_byte_ms;
    if (d->stall) {
        r->stall = true;
        return 1;
    }
    if (d->status) {
        snprintf(msg, sizeof(msg), "fake error: status %d", d->status);
        r->retry_after = d->retry_after;
        return error_reply(r, d->shape_set ? d->shp : k == 2 ? SHAPE_ANTHROPIC : SHAPE_OPENAI,
                           d->status, msg, NULL, NULL, NULL) == 0 ? 1 : -1;
    }
    return k == 2 ? fake_batch_anthropic(rq, path, plen, &o, r)
                  : fake_batch_openai(rq, path, plen, &o, r);
}

static int answer(const fake_request *rq, fake_reply *r, bool api);

int fake_handle_line(const fake_request *rq, fake_reply *r)
{
    return answer(rq, r, false);
}

int fake_handle(const fake_request *rq, fake_reply *r)
{
    const char *path = rq->target;
    size_t plen = 0;

    while (plen < rq->target_len && path[plen] != '?' && path[plen] != '#')
        plen++;
    if (span_eq(path, plen, "/_stats"))
        return text_reply(r, fake_stats_json());
    if (span_eq(path, plen, "/_reset")) {
        fake_stats_reset();
        return fbuf_puts(&r->body, "{\"ok\":true}");
    }
    if (span_eq(path, plen, "/_last"))
        return text_reply(r, fake_last_json());
    if (span_eq(path, plen, "/_reqlog")) /* reqlog.c */
        return text_reply(r, fake_reqlog_json(span_eq(rq->method, rq->method_len, "POST")));

    fake_stat_add(FAKE_STAT_requests, 1);
    fake_last_record(rq);
    fake_reqlog_record(rq);
    return answer(rq, r, true);
}

/* <api>: a request from a client (batch endpoints and per-endpoint counters); false: one line
 * of a provider batch, answered as the endpoint would answer it, counted by the batch code. */
static int answer(const fake_request *rq, fake_reply *r, bool api)
{
    const char *path = rq->target;
    size_t plen = 0;
    bool post = span_eq(rq->method, rq->method_len, "POST");
    bool get = span_eq(rq->method, rq->method_len, "GET");
    bool stream = false;
    directives d;
    endpoint ep;
    json_t *root = NULL;
    int rc = -1, astatus;
    const char *atype;
    char amsg[128];

    while (plen < rq->target_len && path[plen] != '?' && path[plen] != '#')
        plen++;
    directives_init(&d);
    directives_from_path(&d, path, plen);
    if (api && (rc = batch_dispatch(rq, path, plen, &d, r)) != 0)
        return rc < 0 ? -1 : 0;
    directives_from_body(&d, rq->body, rq->body_len);
    ep = classify(path, plen);
    if (ep == EP_MESSAGES && !d.shape_set)
        d.shp = SHAPE_ANTHROPIC; /* Anthropic errors on the Anthropic endpoint */
    if (!api) {
        /* a batch line: the batch code counts it */
    } else if (ep == EP_CHAT) {
        fake_stat_add(FAKE_STAT_chat, 1);
    } else if (ep == EP_COMPLETIONS) {
        fake_stat_add(FAKE_STAT_completions, 1);
    } else if (ep == EP_EMBEDDINGS) {
        fake_stat_add(FAKE_STAT_embeddings, 1);
    } else if (ep == EP_MODELS || ep == EP_MODEL) {
        fake_stat_add(FAKE_STAT_models, 1);
    } else if (ep == EP_MESSAGES) {
        fake_stat_add(FAKE_STAT_messages, 1);
    }

    if (rq->body_len > 0 && ep != EP_NONE && ep != EP_MODELS && ep != EP_MODEL)
        root = json_loadb(rq->body, rq->body_len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = NULL;
    }
    stream = root != NULL && (ep == EP_CHAT || ep == EP_COMPLETIONS || ep == EP_MESSAGES) &&
             json_is_true(json_object_get(root, "stream"));
    r->first_byte_ms = (unsigned)d.first_byte_ms;

    if (d.stall) {
        r->stall = true;
        r->is_stream = stream;
        rc = 0;
    } else if (d.status) {
        char msg[64];
        snprintf(msg, sizeof(msg), "fake error: status %d", d.status);
        rc = error_reply(r, d.shp, d.status, msg, NULL, NULL, NULL);
        r->retry_after = d.retry_after;
    } else if (ep == EP_NONE) {
        rc = error_reply(r, d.shp, 404, "fake_upstream: unknown path", NULL, NULL, NULL);
    } else if ((ep == EP_MODELS || ep == EP_MODEL) ? !get : !post) {
        rc = error_reply(r, d.shp, 405, "fake_upstream: method not allowed", NULL, NULL, NULL);
    } else if (ep == EP_MESSAGES && (astatus = fake_anth_check(rq, root, &atype, amsg,
                                                                sizeof(amsg))) != 0) {
        rc = error_reply(r, d.shp, astatus, amsg, NULL, NULL, NULL);
    } else if (d.malformed && !stream) {
        rc = fbuf_puts(&r->body, "{\"id\":\"fake-malformed\",\"choices\":[{\"message\":");
    } else if (ep == EP_MODELS || ep == EP_MODEL) {
        rc = models_reply(r, &d, ep, path, plen);
    } else if (root == NULL) {
        rc = error_reply(r, d.shp, 400,
                         "We could not parse the JSON body of your request: expected an object",
                         NULL, NULL, NULL);
    } else if (stream) {
        r->stream = stream_new(ep, &d, root, rq->body_len);
        r->is_stream = true;
        rc = r->stream ? 0 : -1;
    } else if (ep == EP_CHAT) {
        rc = chat_reply(r, &d, root, rq->body_len);
    } else if (ep == EP_COMPLETIONS) {
        rc = completion_reply(r, &d, root, rq->body_len);
    } else if (ep == EP_MESSAGES) {
        rc = messages_reply(r, &d, root, rq->body_len);
    } else {
        rc = embeddings_reply(r, &d, root, rq->body_len);
    }
    if (rc == 0 && !r->stall && !r->stream && r->status == 200 && d.drop_after >= 0)
        r->drop_half = true;
    json_decref(root);
    return rc;
}
