/* Unit tests for provider_openai: upstream bodies, normalisation of local-server answers into the
 * OpenAI shape, stream fix-ups (role first, tool-call index, usage stripping, errors), replay of
 * a whole answer as SSE, and the rewrapping of every upstream error shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/provider_int.h" /* the chunk envelope both providers share */
#include "switchyard/json_util.h"
#include "switchyard/provider_openai.h"
#include "switchyard/sse.h"

static sy_deployment dep(bool stream_usage)
{
    sy_deployment d;
    memset(&d, 0, sizeof(d));
    d.name = "d";
    d.model = "up-model";
    d.base_url = "http://x/v1";
    d.stream_usage = stream_usage;
    return d;
}

static json_t *parse(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_upstream_body(void **state)
{
    (void)state;
    sy_deployment d = dep(true);
    json_t *b = parse("{\"model\":\"alias\",\"messages\":[],\"stream\":true}");
    size_t n;
    char *s = sy_openai_upstream_body(&d, SY_EP_CHAT, b, true, &n);
    json_t *u = parse(s);
    assert_string_equal(json_string_value(json_object_get(u, "model")), "up-model");
    assert_true(json_is_true(json_object_get(json_object_get(u, "stream_options"), "include_usage")));
    /* the client's body is not modified */
    assert_string_equal(json_string_value(json_object_get(b, "model")), "alias");
    assert_null(json_object_get(b, "stream_options"));
    free(s);
    json_decref(u);

    d = dep(false);
    s = sy_openai_upstream_body(&d, SY_EP_CHAT, b, true, &n);
    u = parse(s);
    assert_null(json_object_get(u, "stream_options"));
    free(s);
    json_decref(u);
    json_decref(b);

    b = parse("{\"model\":\"m\",\"input\":\"x\",\"encoding_format\":\"base64\"}");
    s = sy_openai_upstream_body(&d, SY_EP_EMBEDDINGS, b, false, &n);
    u = parse(s);
    assert_null(json_object_get(u, "encoding_format"));
    free(s);
    json_decref(u);
    json_decref(b);
    assert_string_equal(sy_openai_path(SY_EP_CHAT), "/chat/completions");
    assert_string_equal(sy_openai_path(SY_EP_COMPLETIONS), "/completions");
    assert_string_equal(sy_openai_path(SY_EP_EMBEDDINGS), "/embeddings");
}

static void test_normalize_ollama_chat(void **state)
{
    (void)state;
    char msg[128];
    /* Ollama-like: no refusal, no logprobs, arguments as an object, no tool-call type/id */
    json_t *r = parse("{\"id\":\"x\",\"created\":1,\"model\":\"m\",\"choices\":[{\"message\":{"
                      "\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{"
                      "\"name\":\"f\",\"arguments\":{\"a\":1}}}]}}]}");
    assert_int_equal(sy_openai_normalize(SY_EP_CHAT, r, false, msg, sizeof(msg)), SY_OK);
    json_t *c = json_array_get(json_object_get(r, "choices"), 0);
    json_t *m = json_object_get(c, "message");
    assert_true(json_is_null(json_object_get(m, "refusal")));
    assert_true(json_is_null(json_object_get(c, "logprobs")));
    assert_int_equal(json_integer_value(json_object_get(c, "index")), 0);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "tool_calls");
    assert_string_equal(json_string_value(json_object_get(r, "object")), "chat.completion");
    json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    assert_non_null(json_string_value(json_object_get(tc, "id")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
        "{\"a\":1}");
    json_decref(r);

    r = parse("{\"choices\":{}}");
    assert_int_equal(sy_openai_normalize(SY_EP_CHAT, r, false, msg, sizeof(msg)), SY_EUPSTREAM);
    json_decref(r);
    r = parse("{\"choices\":[{\"index\":0}]}");
    assert_int_equal(sy_openai_normalize(SY_EP_CHAT, r, false, msg, sizeof(msg)), SY_EUPSTREAM);
    json_decref(r);
    r = parse("[1]");
    assert_int_equal(sy_openai_normalize(SY_EP_CHAT, r, false, msg, sizeof(msg)), SY_EUPSTREAM);
    json_decref(r);
}

static void test_normalize_completion_and_embeddings(void **state)
{
    (void)state;
    char msg[128];
    json_t *r = parse("{\"choices\":[{\"text\":\"hi\"}]}");
    assert_int_equal(sy_openai_normalize(SY_EP_COMPLETIONS, r, false, msg, sizeof(msg)), SY_OK);
    json_t *c = json_array_get(json_object_get(r, "choices"), 0);
    assert_true(json_is_null(json_object_get(c, "logprobs")));
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
    assert_string_equal(json_string_value(json_object_get(r, "object")), "text_completion");
    assert_non_null(json_object_get(r, "id"));
    json_decref(r);

    r = parse("{\"data\":[{\"embedding\":[1.0,-2.5,0.0]}],\"model\":\"m\"}");
    assert_int_equal(sy_openai_normalize(SY_EP_EMBEDDINGS, r, true, msg, sizeof(msg)), SY_OK);
    json_t *e = json_array_get(json_object_get(r, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "embedding")), "AACAPwAAIMAAAAAA");
    assert_string_equal(json_string_value(json_object_get(e, "object")), "embedding");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "usage"), "prompt_tokens")), 0);
    /* and back: a base64 upstream answer for a float client */
    assert_int_equal(sy_openai_normalize(SY_EP_EMBEDDINGS, r, false, msg, sizeof(msg)), SY_OK);
    json_t *v = json_object_get(e, "embedding");
    assert_true(json_is_array(v));
    assert_true(json_real_value(json_array_get(v, 1)) == -2.5);
    json_decref(r);

    r = parse("{\"data\":[{\"embedding\":\"!!\"}]}");
    assert_int_equal(sy_openai_normalize(SY_EP_EMBEDDINGS, r, false, msg, sizeof(msg)), SY_EUPSTREAM);
    json_decref(r);
}

/* Feeds a list of SSE data payloads through the stream fixer; returns the client bytes. */
static char *run_stream(bool client_usage, const char **events, size_t n, sy_stream_fix *f)
{
    sy_buf out;
    sy_buf_init(&out, 1 << 20);
    memset(f, 0, sizeof(*f));
    f->client_usage = client_usage;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sy_openai_stream_event(f, SY_EP_CHAT, events[i], strlen(events[i]), &out),
                         SY_OK);
    return sy_buf_take(&out, NULL);
}

struct collect {
    json_t *chunks;
    int done;
};

static int collect_cb(void *ud, const char *event, const char *data, size_t len)
{
    struct collect *c = ud;
    (void)event;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        c->done++;
        return 0;
    }
    json_t *j = json_loadb(data, len, 0, NULL);
    assert_non_null(j);
    json_array_append_new(c->chunks, j);
    return 0;
}

static void parse_sse(const char *s, struct collect *c)
{
    sy_sse_parser p;
    c->chunks = json_array();
    c->done = 0;
    sy_sse_init(&p, 1 << 20);
    assert_int_equal(sy_sse_feed(&p, s, strlen(s), collect_cb, c), SY_OK);
    assert_false(sy_sse_pending(&p));
    sy_sse_cleanup(&p);
}

static void test_stream_fixups(void **state)
{
    (void)state;
    /* an Ollama-like stream: no role, tool calls without index, usage in its own chunk */
    const char *ev[] = {
        "{\"id\":\"c\",\"model\":\"m\",\"created\":5,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"t1\",\"function\":{\"name\":\"f\","
        "\"arguments\":{\"x\":1}}}]}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"t2\",\"function\":{\"name\":\"g\","
        "\"arguments\":\"{}\"}}]}}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}",
        "[DONE]",
    };
    sy_stream_fix f;
    char *s = run_stream(false, ev, 6, &f);
    struct collect c;
    parse_sse(s, &c);
    assert_int_equal(c.done, 1);
    assert_int_equal(json_array_size(c.chunks), 4); /* usage chunk dropped */
    assert_true(f.saw_finish && f.saw_done && f.saw_role);
    assert_non_null(f.usage);
    assert_int_equal(json_integer_value(json_object_get(f.usage, "total_tokens")), 7);
    json_t *first = json_array_get(c.chunks, 0);
    json_t *d0 = json_object_get(json_array_get(json_object_get(first, "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(d0, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(first, "object")), "chat.completion.chunk");
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(first, "choices"), 0),
                                             "finish_reason")));
    for (int i = 1; i <= 2; i++) {
        json_t *ch = json_array_get(c.chunks, (size_t)i);
        /* later chunks inherit the first chunk's id, model and created */
        assert_string_equal(json_string_value(json_object_get(ch, "id")), "c");
        assert_int_equal(json_integer_value(json_object_get(ch, "created")), 5);
        json_t *d = json_object_get(json_array_get(json_object_get(ch, "choices"), 0), "delta");
        assert_null(json_object_get(d, "role"));
        json_t *tc = json_array_get(json_object_get(d, "tool_calls"), 0);
        assert_int_equal(json_integer_value(json_object_get(tc, "index")), i - 1);
        assert_true(json_is_string(json_object_get(json_object_get(tc, "function"), "arguments")));
        assert_string_equal(json_string_value(json_object_get(tc, "type")), "function");
    }
    json_decref(c.chunks);
    free(s);
    sy_stream_fix_cleanup(&f);

    /* the client asked for usage: it is passed */
    s = run_stream(true, ev, 6, &f);
    parse_sse(s, &c);
    assert_int_equal(json_array_size(c.chunks), 5);
    json_decref(c.chunks);
    free(s);
    sy_stream_fix_cleanup(&f);
}

/* Plain content deltas after the first chunk are relayed byte for byte (the fast path); their
 * parsed form is what the general path would have produced, and anything unusual still takes
 * the general path. */
static void test_stream_fast_path(void **state)
{
    (void)state;
    const char *head = "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,"
                       "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                       "\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}";
    const char *plain = "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,"
                        "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                        "\"say \\\"finish_reason\\\":null \\u00e9\"},\"finish_reason\":null}],"
                        "\"usage\":null}";
    const char *ev[] = {head, plain, plain};
    sy_stream_fix f;
    char *s = run_stream(false, ev, 3, &f);
    assert_int_equal(f.chunks, 3);
    assert_int_equal(f.fast_chunks, 2);
    assert_null(strstr(s, "\"usage\"")); /* the client did not ask: removed, fast or not */
    struct collect c;
    parse_sse(s, &c);
    assert_int_equal(json_array_size(c.chunks), 3);
    json_t *d = json_object_get(json_array_get(json_object_get(json_array_get(c.chunks, 2),
                                                               "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(d, "content")),
                        "say \"finish_reason\":null \xc3\xa9");
    json_decref(c.chunks);
    free(s);
    sy_stream_fix_cleanup(&f);

    /* the client asked for usage: the usage:null member stays, the bytes are the upstream's */
    s = run_stream(true, ev, 3, &f);
    assert_int_equal(f.fast_chunks, 2);
    assert_non_null(strstr(s, plain));
    free(s);
    sy_stream_fix_cleanup(&f);

    /* each of these takes the general path (and is still relayed correctly or refused) */
    const char *general[] = {
        /* finish_reason set */
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}",
        /* tool calls */
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
        "{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}",
        /* a usage object */
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}],"
        "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}",
        /* two choices */
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null},"
        "{\"index\":1,\"delta\":{\"content\":\"y\"},\"finish_reason\":null}]}",
        /* no object member: the general path adds it */
        "{\"id\":\"c1\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\"x\"},\"finish_reason\":null}]}",
    };
    for (size_t i = 0; i < sizeof(general) / sizeof(general[0]); i++) {
        const char *two[] = {head, general[i]};
        s = run_stream(false, two, 2, &f);
        assert_int_equal(f.fast_chunks, 0);
        assert_int_equal(f.chunks, 2);
        assert_non_null(strstr(s, "\"object\":\"chat.completion.chunk\""));
        free(s);
        sy_stream_fix_cleanup(&f);
    }

    /* malformed chunks that carry every pattern are refused, not relayed */
    const char *bad[] = {
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]",
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null]}}",
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\\q\"},\"finish_reason\":null}]}",
        "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":x},\"finish_reason\":null}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sy_buf out;
        sy_buf_init(&out, 1 << 16);
        memset(&f, 0, sizeof(f));
        assert_int_equal(sy_openai_stream_event(&f, SY_EP_CHAT, head, strlen(head), &out), SY_OK);
        size_t before = out.len;
        assert_int_equal(sy_openai_stream_event(&f, SY_EP_CHAT, bad[i], strlen(bad[i]), &out),
                         SY_EUPSTREAM);
        assert_int_equal(out.len, before);
        assert_int_equal(f.fast_chunks, 0);
        sy_buf_cleanup(&out);
        sy_stream_fix_cleanup(&f);
    }
}

static void test_stream_error_and_garbage(void **state)
{
    (void)state;
    sy_stream_fix f;
    sy_buf out;
    memset(&f, 0, sizeof(f));
    sy_buf_init(&out, 1 << 16);
    const char *e = "{\"error\":\"model crashed\"}";
    assert_int_equal(sy_openai_stream_event(&f, SY_EP_CHAT, e, strlen(e), &out), SY_OK);
    assert_true(f.saw_error);
    assert_non_null(strstr(out.data, "\"message\":\"model crashed\""));
    assert_non_null(strstr(out.data, "\"type\":\"api_error\""));
    sy_buf_reset(&out);
    assert_int_equal(sy_openai_stream_event(&f, SY_EP_CHAT, "{nope", 5, &out), SY_EUPSTREAM);
    assert_int_equal(out.len, 0);
    sy_buf_cleanup(&out);
    sy_stream_fix_cleanup(&f);
}

/* saw_content: false through the opening role chunk (OpenAI's with refusal:null, Ollama's
 * without a role), true at the first content, tool call, finish or [DONE]; error_status from a
 * stream error's numeric code, type or code name, else 500. */
static void test_stream_content_and_error_status(void **state)
{
    (void)state;
    const char *openers[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
        "\"refusal\":null},\"finish_reason\":null}]}",
        "{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"\"}}]}",
    };
    const char *more[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}",
        "[DONE]",
    };
    for (size_t i = 0; i < 2; i++) {
        for (size_t k = 0; k < sizeof(more) / sizeof(more[0]); k++) {
            sy_stream_fix f;
            const char *evs[] = {openers[i]};
            free(run_stream(false, evs, 1, &f));
            assert_false(f.saw_content);
            sy_buf out;
            sy_buf_init(&out, 1 << 16);
            assert_int_equal(sy_openai_stream_event(&f, SY_EP_CHAT, more[k], strlen(more[k]), &out),
                             SY_OK);
            assert_true(f.saw_content);
            sy_buf_cleanup(&out);
            sy_stream_fix_cleanup(&f);
        }
    }
    /* still nothing said: an empty plain delta after the role (the byte fast path), and a role
     * chunk with usage riding on it (vLLM's continuous usage) */
    const char *quiet[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":null}]}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":0,"
        "\"total_tokens\":3}}",
    };
    for (size_t k = 0; k < sizeof(quiet) / sizeof(quiet[0]); k++) {
        sy_stream_fix f;
        const char *evs[] = {openers[0], quiet[k]};
        free(run_stream(true, evs, 2, &f));
        assert_false(f.saw_content);
        if (k == 0)
            assert_int_equal(f.fast_chunks, 1); /* it went the byte fast path */
        sy_stream_fix_cleanup(&f);
    }
    static const struct {
        const char *error;
        int status;
        const char *type;
    } errs[] = {
        {"{\"error\":{\"message\":\"busy\",\"type\":\"server_error\"}}", 500, "server_error"},
        {"{\"error\":{\"message\":\"slow\",\"type\":\"rate_limit_error\"}}", 429,
         "rate_limit_error"},
        {"{\"error\":{\"message\":\"slow\",\"code\":\"rate_limit_exceeded\"}}", 429,
         "rate_limit_error"},
        {"{\"error\":{\"object\":\"error\",\"message\":\"bad\",\"type\":\"BadRequestError\","
         "\"code\":400}}",
         400, "invalid_request_error"},
        {"{\"error\":{\"message\":\"gone\",\"status\":503}}", 503, "api_error"},
        {"{\"error\":\"model crashed\"}", 500, "api_error"},
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        sy_stream_fix f;
        const char *evs[] = {openers[0], errs[i].error};
        char *o = run_stream(false, evs, 2, &f);
        assert_true(f.saw_error);
        assert_false(f.saw_content);
        assert_int_equal(f.error_status, errs[i].status);
        char want[64];
        snprintf(want, sizeof(want), "\"type\":\"%s\"", errs[i].type);
        assert_non_null(strstr(o, want));
        free(o);
        sy_stream_fix_cleanup(&f);
    }
}

/* The chunk envelope both providers build (src/provider_int.h): member order, a null
 * system_fingerprint kept, an absent one left out, "choices" replaced in place. */
static void test_chunk_shell(void **state)
{
    (void)state;
    json_t *id = json_string("x"), *created = json_integer(5), *model = json_string("m");
    json_t *c = sy_provider_chunk_shell(SY_EP_CHAT, id, created, model, json_null());
    json_object_set_new(c, "choices", json_pack("[{s:i}]", "index", 0));
    char *s = sy_json_dump(c, NULL);
    assert_string_equal(s, "{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":5,"
                           "\"model\":\"m\",\"system_fingerprint\":null,"
                           "\"choices\":[{\"index\":0}]}");
    free(s);
    json_decref(c);
    c = sy_provider_chunk_shell(SY_EP_COMPLETIONS, id, created, model, NULL);
    sy_buf out;
    sy_buf_init(&out, 1 << 10);
    assert_int_equal(sy_provider_emit(&out, c), SY_OK);
    assert_string_equal(out.data, "data: {\"id\":\"x\",\"object\":\"text_completion\","
                                  "\"created\":5,\"model\":\"m\",\"choices\":[]}\n\n");
    assert_int_equal(sy_provider_emit(&out, NULL), SY_ENOMEM); /* a failed build upstream */
    sy_buf_cleanup(&out);
    json_decref(c);
    json_decref(id);
    json_decref(created);
    json_decref(model);
}

static void test_to_sse(void **state)
{
    (void)state;
    json_t *r = parse("{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\","
                      "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                      "null,\"refusal\":null,\"tool_calls\":[{\"id\":\"t\",\"type\":\"function\","
                      "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":"
                      "\"tool_calls\",\"logprobs\":null}],\"usage\":{\"prompt_tokens\":1,"
                      "\"completion_tokens\":2,\"total_tokens\":3}}");
    sy_buf out;
    sy_buf_init(&out, 1 << 16);
    assert_int_equal(sy_openai_to_sse(SY_EP_CHAT, r, true, &out), SY_OK);
    struct collect c;
    parse_sse(out.data, &c);
    assert_int_equal(c.done, 1);
    assert_int_equal(json_array_size(c.chunks), 3);
    json_t *d = json_object_get(json_array_get(json_object_get(json_array_get(c.chunks, 0), "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(d, "tool_calls"), 0), "index")), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(c.chunks, 1), "choices"), 0), "finish_reason")), "tool_calls");
    assert_int_equal(json_array_size(json_object_get(json_array_get(c.chunks, 2), "choices")), 0);
    assert_non_null(json_object_get(json_array_get(c.chunks, 2), "usage"));
    json_decref(c.chunks);
    sy_buf_reset(&out);
    assert_int_equal(sy_openai_to_sse(SY_EP_CHAT, r, false, &out), SY_OK);
    parse_sse(out.data, &c);
    assert_int_equal(json_array_size(c.chunks), 2);
    json_decref(c.chunks);
    sy_buf_cleanup(&out);
    json_decref(r);
}

static void check_error(const char *body, int status, const char *msg, const char *type,
                        const char *code)
{
    size_t n;
    char *s = sy_openai_wrap_error(status, body, strlen(body), "sk-secret-123", &n);
    assert_non_null(s);
    json_t *j = parse(s);
    json_t *e = json_object_get(j, "error");
    assert_int_equal(json_object_size(j), 1);
    assert_int_equal(json_object_size(e), 4);
    assert_string_equal(json_string_value(json_object_get(e, "message")), msg);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    if (code == NULL)
        assert_true(json_is_null(json_object_get(e, "code")));
    else
        assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    assert_null(strstr(s, "sk-secret-123"));
    json_decref(j);
    free(s);
}

static void test_wrap_error_shapes(void **state)
{
    (void)state;
    check_error("{\"error\":{\"message\":\"m\",\"type\":\"invalid_request_error\",\"param\":null,"
                "\"code\":\"c\"}}",
                400, "m", "invalid_request_error", "c");
    check_error("{\"error\":\"model 'x' not found\"}", 404, "model 'x' not found",
                "not_found_error", NULL);
    check_error("{\"object\":\"error\",\"message\":\"too long\",\"type\":\"BadRequestError\","
                "\"param\":null,\"code\":400}",
                400, "too long", "invalid_request_error", NULL);
    check_error("{\"detail\":\"Not Found\"}", 404, "Not Found", "not_found_error", NULL);
    check_error("{\"detail\":[{\"loc\":[\"body\"],\"msg\":\"bad\"}]}", 422,
                "[{\"loc\":[\"body\"],\"msg\":\"bad\"}]", "invalid_request_error", NULL);
    check_error("Internal Server Error\n", 500, "Internal Server Error", "api_error", NULL);
    check_error("", 503, "upstream returned HTTP 503", "api_error", NULL);
    check_error("slow down", 429, "slow down", "rate_limit_error", "rate_limit_exceeded");
    check_error("bad key sk-secret-123 used", 500, "bad key [redacted] used", "api_error", NULL);
    check_error("\xff\xfe broken", 502, "?? broken", "api_error", NULL);
    check_error("{\"error\":{\"message\":\"x\",\"type\":\"weird\"}}", 403, "x", "permission_error",
                NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upstream_body),
        cmocka_unit_test(test_normalize_ollama_chat),
        cmocka_unit_test(test_normalize_completion_and_embeddings),
        cmocka_unit_test(test_stream_fixups),
        cmocka_unit_test(test_stream_fast_path),
        cmocka_unit_test(test_stream_error_and_garbage),
        cmocka_unit_test(test_stream_content_and_error_status),
        cmocka_unit_test(test_chunk_shell),
        cmocka_unit_test(test_to_sse),
        cmocka_unit_test(test_wrap_error_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
