/* Unit tests for provider_anthropic: request translation (system hoisting, images, tools and
 * tool results, tool_choice, max_tokens, stop, sampling by version, response_format, prompt
 * caching), answers (content, tool calls, stop reasons, cached usage), the stream translator fed
 * recorded event streams split at every byte boundary, error bodies, and allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/provider.h"
#include "switchyard/provider_anthropic.h"
#include "switchyard/sse.h"

static sy_deployment dep(const char *version)
{
    sy_deployment d;
    memset(&d, 0, sizeof(d));
    d.name = "claude";
    d.provider = SY_PROVIDER_ANTHROPIC;
    d.model = "claude-up";
    d.base_url = "https://api.anthropic.com";
    d.anthropic_version = (char *)version;
    d.default_max_tokens = 777;
    return d;
}

static json_t *parse(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (j == NULL)
        fail_msg("bad test JSON: %s: %s", e.text, s);
    return j;
}

/* Translates <body> (JSON text) for <d>; asserts success and returns the parsed result. */
static json_t *req(const sy_deployment *d, sy_endpoint ep, const char *body, bool stream)
{
    json_t *b = parse(body);
    char msg[256] = "x";
    size_t n = 0;
    char *s = sy_anthropic_request(d, ep, b, stream, &n, msg, sizeof(msg));
    if (s == NULL)
        fail_msg("translation failed: %s", msg);
    assert_string_equal(msg, "");
    assert_int_equal(strlen(s), n);
    json_t *out = parse(s);
    free(s);
    json_decref(b);
    return out;
}

/* req() on a chat request formatted from <fmt>; non-stream. */
static json_t *reqf(const sy_deployment *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *reqf(const sy_deployment *d, const char *fmt, ...)
{
    char *body = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&body, fmt, ap);
    va_end(ap);
    assert_true(n > 0);
    json_t *r = req(d, SY_EP_CHAT, body, false);
    free(body);
    return r;
}

/* Translates <body>, expects a client error whose message contains <needle>. */
static void req_fails(const sy_deployment *d, sy_endpoint ep, const char *body, const char *needle)
{
    json_t *b = parse(body);
    char msg[256] = "";
    size_t n = 0;
    char *s = sy_anthropic_request(d, ep, b, false, &n, msg, sizeof(msg));
    if (s != NULL)
        fail_msg("expected a failure for %s, got %s", body, s);
    if (strstr(msg, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", msg, needle);
    json_decref(b);
}

static const char *sget(const json_t *j, const char *path)
{
    /* "a.b.0.c": object keys and array indexes */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const json_t *cur = j;
    for (char *tok = strtok(buf, "."); tok != NULL && cur != NULL; tok = strtok(NULL, ".")) {
        if (json_is_array(cur))
            cur = json_array_get(cur, (size_t)atoi(tok));
        else
            cur = json_object_get(cur, tok);
    }
    return json_string_value(cur);
}

static const json_t *jget(const json_t *j, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const json_t *cur = j;
    for (char *tok = strtok(buf, "."); tok != NULL && cur != NULL; tok = strtok(NULL, ".")) {
        if (json_is_array(cur))
            cur = json_array_get(cur, (size_t)atoi(tok));
        else
            cur = json_object_get(cur, tok);
    }
    return cur;
}

static long long iget(const json_t *j, const char *path)
{
    const json_t *v = jget(j, path);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", path);
    return json_integer_value(v);
}

/* ---- url and headers ---- */

static void test_url_and_headers(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    char url[128];
    assert_int_equal(sy_anthropic_url(&d, SY_EP_CHAT, url, sizeof(url)), SY_OK);
    assert_string_equal(url, "https://api.anthropic.com/v1/messages");
    assert_int_equal(sy_anthropic_url(&d, SY_EP_COMPLETIONS, url, sizeof(url)), SY_OK);
    assert_string_equal(url, "https://api.anthropic.com/v1/messages");
    d.base_url = "http://127.0.0.1:9/_f/status=529/v1";
    assert_int_equal(sy_anthropic_url(&d, SY_EP_CHAT, url, sizeof(url)), SY_OK);
    assert_string_equal(url, "http://127.0.0.1:9/_f/status=529/v1/messages");
    assert_int_equal(sy_anthropic_url(&d, SY_EP_EMBEDDINGS, url, sizeof(url)), SY_EUNSUPPORTED);
    assert_int_equal(sy_anthropic_url(&d, SY_EP_CHAT, url, 10), SY_EINVAL);

    d.api_key = "sk-ant-secret";
    struct curl_slist *h = sy_anthropic_headers(&d, NULL);
    assert_non_null(h);
    assert_string_equal(h->data, "x-api-key: sk-ant-secret");
    assert_string_equal(h->next->data, "anthropic-version: 2023-06-01");
    assert_null(h->next->next);
    for (struct curl_slist *p = h; p != NULL; p = p->next)
        assert_null(strcasestr(p->data, "authorization"));
    curl_slist_free_all(h);

    d.api_key = NULL;
    d.anthropic_version = "2026-10-21";
    h = sy_anthropic_headers(&d, NULL);
    assert_string_equal(h->data, "anthropic-version: 2026-10-21");
    assert_null(h->next);
    curl_slist_free_all(h);

    /* a key too long for the header line: NULL, and the list given is freed (ASan) */
    char longkey[1200];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    d.api_key = longkey;
    assert_null(sy_anthropic_headers(&d, curl_slist_append(NULL, "Accept: */*")));

    /* the registry serves these ops */
    const sy_provider_ops *ops = sy_provider_get(SY_PROVIDER_ANTHROPIC);
    assert_ptr_equal(ops, &sy_provider_anthropic);
    assert_string_equal(ops->name, "anthropic");
}

/* ---- requests ---- */

static void test_request_basic(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    json_t *r = req(&d, SY_EP_CHAT,
                    "{\"model\":\"alias\",\"messages\":["
                    "{\"role\":\"system\",\"content\":\"Be brief.\"},"
                    "{\"role\":\"user\",\"content\":\"Hi\"},"
                    "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Dev.\"}]},"
                    "{\"role\":\"assistant\",\"content\":\"Hello\"},"
                    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                    "{\"type\":\"text\",\"text\":\"b\"}]}],"
                    "\"temperature\":1.5,\"top_p\":0.9,\"stop\":\"END\",\"user\":\"u1\","
                    "\"seed\":3,\"frequency_penalty\":1,\"logit_bias\":{},"
                    "\"stream_options\":{\"include_usage\":true}}",
                    true);
    assert_string_equal(sget(r, "model"), "claude-up");
    assert_int_equal(iget(r, "max_tokens"), 777);
    assert_true(json_is_true(json_object_get(r, "stream")));
    /* system and developer messages, wherever they are, become the top-level system */
    const json_t *sys = json_object_get(r, "system");
    assert_true(json_is_array(sys));
    assert_int_equal(json_array_size(sys), 2);
    assert_string_equal(sget(r, "system.0.text"), "Be brief.");
    assert_string_equal(sget(r, "system.1.text"), "Dev.");
    const json_t *msgs = json_object_get(r, "messages");
    assert_int_equal(json_array_size(msgs), 3);
    assert_string_equal(sget(r, "messages.0.role"), "user");
    assert_string_equal(sget(r, "messages.0.content"), "Hi"); /* one plain block: a string */
    assert_string_equal(sget(r, "messages.1.role"), "assistant");
    assert_string_equal(sget(r, "messages.1.content"), "Hello");
    assert_string_equal(sget(r, "messages.2.content.0.type"), "text");
    assert_string_equal(sget(r, "messages.2.content.1.text"), "b");
    /* temperature is clamped to Anthropic's 0..1; stop is a list; user goes to metadata */
    assert_true(json_real_value(json_object_get(r, "temperature")) == 1.0);
    assert_true(json_real_value(json_object_get(r, "top_p")) == 0.9);
    assert_string_equal(sget(r, "stop_sequences.0"), "END");
    assert_string_equal(sget(r, "metadata.user_id"), "u1");
    /* nothing without an Anthropic meaning goes upstream */
    const char *absent[] = {
        "seed", "frequency_penalty", "logit_bias", "stream_options", "user", "stop",
        "n",    "temperature_x"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        assert_null(json_object_get(r, absent[i]));
    json_decref(r);

    /* a lone system string stays a string; max_completion_tokens wins over max_tokens */
    r = req(&d, SY_EP_CHAT,
            "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\","
            "\"content\":\"u\"}],\"max_tokens\":5,\"max_completion_tokens\":9,"
            "\"stop\":[\"x\",\"y\"]}",
            false);
    assert_string_equal(sget(r, "system"), "S");
    assert_int_equal(iget(r, "max_tokens"), 9);
    assert_null(json_object_get(r, "stream"));
    assert_int_equal(json_array_size(json_object_get(r, "stop_sequences")), 2);
    json_decref(r);

    r = req(&d, SY_EP_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"max_tokens\":5}", false);
    assert_int_equal(iget(r, "max_tokens"), 5);
    assert_null(json_object_get(r, "system"));
    json_decref(r);

    /* no configured default: the built-in one */
    d.default_max_tokens = 0;
    r = req(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}]}", false);
    assert_int_equal(iget(r, "max_tokens"), 4096);
    json_decref(r);
}

static void test_request_version_sampling(void **state)
{
    (void)state;
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"temperature\":0.2,"
                       "\"top_p\":0.5,\"top_k\":4}";
    sy_deployment d = dep("2023-06-01");
    json_t *r = req(&d, SY_EP_CHAT, body, false);
    assert_true(json_real_value(json_object_get(r, "temperature")) == 0.2);
    assert_true(json_real_value(json_object_get(r, "top_p")) == 0.5);
    assert_int_equal(iget(r, "top_k"), 4);
    json_decref(r);
    /* 2026-10-21 rejects sampling parameters even at default values: they are dropped */
    const char *newer[] = {"2026-10-21", "2027-01-01"};
    for (size_t i = 0; i < 2; i++) {
        d = dep(newer[i]);
        r = req(&d, SY_EP_CHAT, body, false);
        assert_null(json_object_get(r, "temperature"));
        assert_null(json_object_get(r, "top_p"));
        assert_null(json_object_get(r, "top_k"));
        json_decref(r);
    }
}

static void test_request_images(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    json_t *r =
        req(&d, SY_EP_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":["
            "{\"type\":\"text\",\"text\":\"What is this?\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0=\","
            "\"detail\":\"high\"}},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/a.jpg\"}},"
            "{\"type\":\"file\",\"file\":{\"file_data\":\"data:application/pdf;base64,JVBE\","
            "\"filename\":\"a.pdf\"}}]}]}",
            false);
    assert_string_equal(sget(r, "messages.0.content.1.type"), "image");
    assert_string_equal(sget(r, "messages.0.content.1.source.type"), "base64");
    assert_string_equal(sget(r, "messages.0.content.1.source.media_type"), "image/png");
    assert_string_equal(sget(r, "messages.0.content.1.source.data"), "iVBORw0=");
    assert_null(jget(r, "messages.0.content.1.detail"));
    assert_string_equal(sget(r, "messages.0.content.2.source.type"), "url");
    assert_string_equal(sget(r, "messages.0.content.2.source.url"), "https://example.com/a.jpg");
    assert_string_equal(sget(r, "messages.0.content.3.type"), "document");
    assert_string_equal(sget(r, "messages.0.content.3.source.media_type"), "application/pdf");
    json_decref(r);

    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
              "\"image_url\":{\"url\":\"http://example.com/a.jpg\"}}]}]}",
              "https://");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
              "\"image_url\":{\"url\":\"data:image/tiff;base64,AAAA\"}}]}]}",
              "image/tiff");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
              "\"image_url\":{\"url\":\"data:image/png,rawtext\"}}]}]}",
              "base64");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\","
              "\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}",
              "input_audio");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
              "image_url.url");
    /* images are user content only */
    req_fails(
        &d, SY_EP_CHAT,
        "{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"https://x/y.png\"}}]},{\"role\":\"user\",\"content\":\"u\"}]}",
        "image_url");
}

static void test_request_tools(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                        "\"description\":\"Weather\",\"parameters\":{\"type\":\"object\","
                        "\"properties\":{\"location\":{\"type\":\"string\"}}},\"strict\":true}},"
                        "{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}]";
    char body[2048];
    snprintf(body, sizeof(body),
             "{\"messages\":["
             "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
             "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":["
             "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"{\\\"location\\\":\\\"Paris\\\"}\"}},"
             "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
             "\"arguments\":\"\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"18C\"},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":\"text\","
             "\"text\":\"21C\"}]},"
             "{\"role\":\"user\",\"content\":\"Thanks\"}],%s,\"tool_choice\":\"required\","
             "\"parallel_tool_calls\":false}",
             tools);
    json_t *r = req(&d, SY_EP_CHAT, body, false);
    assert_string_equal(sget(r, "tools.0.name"), "get_weather");
    assert_string_equal(sget(r, "tools.0.description"), "Weather");
    assert_string_equal(sget(r, "tools.0.input_schema.properties.location.type"), "string");
    assert_true(json_is_true(jget(r, "tools.0.strict")));
    assert_string_equal(sget(r, "tools.1.input_schema.type"), "object");
    assert_null(jget(r, "tools.0.type"));
    assert_string_equal(sget(r, "tool_choice.type"), "any");
    assert_true(json_is_true(jget(r, "tool_choice.disable_parallel_tool_use")));
    const json_t *msgs = json_object_get(r, "messages");
    assert_int_equal(json_array_size(msgs), 3);
    /* the empty assistant text is dropped; tool calls become tool_use with parsed input */
    assert_int_equal(json_array_size(jget(r, "messages.1.content")), 2);
    assert_string_equal(sget(r, "messages.1.content.0.type"), "tool_use");
    assert_string_equal(sget(r, "messages.1.content.0.id"), "call_1");
    assert_string_equal(sget(r, "messages.1.content.0.name"), "get_weather");
    assert_string_equal(sget(r, "messages.1.content.0.input.location"), "Paris");
    assert_true(json_is_object(jget(r, "messages.1.content.1.input")));
    assert_int_equal(json_object_size(jget(r, "messages.1.content.1.input")), 0);
    /* both tool results and the next user text share one user message, results first */
    assert_string_equal(sget(r, "messages.2.role"), "user");
    assert_int_equal(json_array_size(jget(r, "messages.2.content")), 3);
    assert_string_equal(sget(r, "messages.2.content.0.type"), "tool_result");
    assert_string_equal(sget(r, "messages.2.content.0.tool_use_id"), "call_1");
    assert_string_equal(sget(r, "messages.2.content.0.content.0.text"), "18C");
    assert_string_equal(sget(r, "messages.2.content.1.tool_use_id"), "call_2");
    assert_string_equal(sget(r, "messages.2.content.2.text"), "Thanks");
    json_decref(r);

    struct {
        const char *choice;
        const char *type, *name;
    } cases[] = {
        {"\"auto\"", "auto", NULL},
        {"\"none\"", "none", NULL},
        {"\"required\"", "any", NULL},
        {"{\"type\":\"function\",\"function\":{\"name\":\"noargs\"}}", "tool", "noargs"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],%s,\"tool_choice\":%s}",
                 tools, cases[i].choice);
        r = req(&d, SY_EP_CHAT, body, false);
        assert_string_equal(sget(r, "tool_choice.type"), cases[i].type);
        if (cases[i].name != NULL)
            assert_string_equal(sget(r, "tool_choice.name"), cases[i].name);
        assert_null(jget(r, "tool_choice.disable_parallel_tool_use"));
        json_decref(r);
    }
    /* no tool_choice: none sent unless parallel calls are off */
    snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],%s}",
             tools);
    r = req(&d, SY_EP_CHAT, body, false);
    assert_null(json_object_get(r, "tool_choice"));
    json_decref(r);
    snprintf(
        body, sizeof(body),
        "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],%s,\"parallel_tool_calls\":false}",
        tools);
    r = req(&d, SY_EP_CHAT, body, false);
    assert_string_equal(sget(r, "tool_choice.type"), "auto");
    assert_true(json_is_true(jget(r, "tool_choice.disable_parallel_tool_use")));
    json_decref(r);
    /* tool_choice without tools is dropped */
    r = req(&d, SY_EP_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"tool_choice\":\"auto\"}",
            false);
    assert_null(json_object_get(r, "tool_choice"));
    assert_null(json_object_get(r, "tools"));
    json_decref(r);

    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"type\":"
              "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}",
              "arguments");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\","
              "\"function\":{\"name\":\"f\"}}]}]}",
              "id");
    req_fails(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
              "tool_call_id");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"tools\":[{\"type\":"
              "\"custom\",\"custom\":{\"name\":\"x\"}}]}",
              "tools[0]");
    req_fails(
        &d, SY_EP_CHAT,
        "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"functions\":[{\"name\":\"f\"}]}",
        "functions");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"sometimes\"}",
              "tool_choice");
}

static void test_request_misc(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    json_t *r = req(&d, SY_EP_CHAT,
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"response_format\":{"
                    "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"strict\":true,"
                    "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
                    "\"required\":[\"a\"],\"additionalProperties\":false}}}}",
                    false);
    assert_string_equal(sget(r, "output_config.format.type"), "json_schema");
    assert_string_equal(sget(r, "output_config.format.schema.properties.a.type"), "integer");
    assert_null(json_object_get(r, "response_format"));
    json_decref(r);

    r = req(&d, SY_EP_CHAT,
            "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\","
            "\"content\":\"u\"}],\"response_format\":{\"type\":\"json_object\"}}",
            false);
    assert_null(json_object_get(r, "output_config"));
    assert_int_equal(json_array_size(json_object_get(r, "system")), 2);
    assert_non_null(strstr(sget(r, "system.1.text"), "JSON object"));
    json_decref(r);

    r = req(&d, SY_EP_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"response_format\":{\"type\":"
            "\"text\"},\"n\":1}",
            false);
    assert_null(json_object_get(r, "output_config"));
    assert_null(json_object_get(r, "system"));
    json_decref(r);

    req_fails(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"n\":2}",
              "n=1");
    req_fails(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"system\",\"content\":\"only\"}]}",
              "at least one");
    req_fails(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}",
              "function");
    req_fails(&d, SY_EP_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"max_tokens\":0}",
              "max_tokens");
    req_fails(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}],\"stop\":[1]}",
              "stop");
    req_fails(&d, SY_EP_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "content");
    req_fails(&d, SY_EP_EMBEDDINGS, "{\"input\":\"x\"}", "embeddings");

    /* legacy completions, the simple form */
    r = req(&d, SY_EP_COMPLETIONS, "{\"prompt\":[\"Say hi\"],\"max_tokens\":7,\"stop\":\"\\n\"}",
            true);
    assert_string_equal(sget(r, "messages.0.role"), "user");
    assert_string_equal(sget(r, "messages.0.content"), "Say hi");
    assert_int_equal(iget(r, "max_tokens"), 7);
    assert_string_equal(sget(r, "stop_sequences.0"), "\n");
    assert_true(json_is_true(json_object_get(r, "stream")));
    json_decref(r);
    req_fails(&d, SY_EP_COMPLETIONS, "{\"prompt\":\"x\",\"echo\":true}", "echo");
    req_fails(&d, SY_EP_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
    req_fails(&d, SY_EP_COMPLETIONS, "{\"prompt\":[1,2,3]}", "prompt");
}

static int count_cache(const json_t *j)
{
    int n = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            if (strcmp(k, "cache_control") == 0)
                n++;
            else
                n += count_cache(v);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) n += count_cache(v);
    }
    return n;
}

static void test_request_cache_control(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    /* client markers pass through: content parts, system parts, tools, whole messages;
     * OpenAI's prompt_cache_breakpoint becomes an ephemeral breakpoint */
    json_t *r = req(&d, SY_EP_CHAT,
                    "{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":"
                    "\"long system\",\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}]},"
                    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"doc\","
                    "\"prompt_cache_breakpoint\":{\"mode\":\"explicit\"}}]},"
                    "{\"role\":\"assistant\",\"content\":\"ok\",\"cache_control\":{\"type\":"
                    "\"ephemeral\"}},{\"role\":\"user\",\"content\":\"q\"}],"
                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"},"
                    "\"cache_control\":{\"type\":\"ephemeral\"}}]}",
                    false);
    assert_string_equal(sget(r, "system.0.cache_control.ttl"), "1h");
    assert_string_equal(sget(r, "messages.0.content.0.cache_control.type"), "ephemeral");
    assert_null(jget(r, "messages.0.content.0.prompt_cache_breakpoint"));
    assert_string_equal(sget(r, "messages.1.content.0.cache_control.type"), "ephemeral");
    assert_string_equal(sget(r, "tools.0.cache_control.type"), "ephemeral");
    assert_int_equal(count_cache(r), 4);
    json_decref(r);

    /* auto_cache_control: long stable prefixes get breakpoints on tools, system and the turn
     * before the last; short ones and requests with client markers do not */
    d.auto_cache_control = true;
    size_t big = SY_ANTHROPIC_AUTO_CACHE_MIN_TOKENS * 4 + 10;
    char *longtext = malloc(big + 1);
    memset(longtext, 'a', big);
    longtext[big] = '\0';
    r = reqf(&d,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
             "{\"role\":\"user\",\"content\":\"first\"},"
             "{\"role\":\"assistant\",\"content\":\"answer\"},"
             "{\"role\":\"user\",\"content\":\"next\"}],"
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
             longtext);
    assert_int_equal(count_cache(r), 3);
    assert_string_equal(sget(r, "tools.0.cache_control.type"), "ephemeral");
    assert_string_equal(sget(r, "system.0.cache_control.type"), "ephemeral");
    assert_string_equal(sget(r, "messages.1.content.0.cache_control.type"), "ephemeral");
    assert_string_equal(sget(r, "messages.2.content"), "next"); /* the last turn is not */
    json_decref(r);

    /* the long text in the last turn only: not a stable prefix */
    r = reqf(&d, "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", longtext);
    assert_int_equal(count_cache(r), 0);
    json_decref(r);

    /* prompt_cache_options.mode explicit turns the automatic breakpoints off */
    r = reqf(&d,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
             "{\"role\":\"user\",\"content\":\"q\"}],"
             "\"prompt_cache_options\":{\"mode\":\"explicit\"}}",
             longtext);
    assert_int_equal(count_cache(r), 0);
    json_decref(r);

    /* a client marker anywhere: the client decides, nothing is added */
    r = reqf(&d,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"q\","
             "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}",
             longtext);
    assert_int_equal(count_cache(r), 1);
    json_decref(r);

    /* off by default */
    d.auto_cache_control = false;
    r = reqf(&d,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},"
             "{\"role\":\"user\",\"content\":\"q\"}]}",
             longtext);
    assert_int_equal(count_cache(r), 0);
    json_decref(r);
    free(longtext);
}

/* ---- answers ---- */

static void test_normalize(void **state)
{
    (void)state;
    char msg[128];
    json_t *r =
        parse("{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
              "\"claude-x\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\","
              "\"signature\":\"s\"},{\"type\":\"text\",\"text\":\"Let me check. \"},"
              "{\"type\":\"text\",\"text\":\"One moment.\"},{\"type\":\"tool_use\",\"id\":"
              "\"toolu_1\",\"name\":\"get_weather\",\"input\":{\"location\":\"Paris\"}},"
              "{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"noargs\",\"input\":{}}],"
              "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{"
              "\"input_tokens\":10,\"cache_creation_input_tokens\":20,"
              "\"cache_read_input_tokens\":30,\"output_tokens\":5}}");
    assert_int_equal(sy_anthropic_normalize(SY_EP_CHAT, &r, msg, sizeof(msg)), SY_OK);
    assert_string_equal(sget(r, "object"), "chat.completion");
    assert_string_equal(sget(r, "id"), "msg_01");
    assert_string_equal(sget(r, "model"), "claude-x");
    assert_true(json_is_integer(json_object_get(r, "created")));
    assert_int_equal(json_array_size(json_object_get(r, "choices")), 1);
    assert_int_equal(iget(r, "choices.0.index"), 0);
    assert_string_equal(sget(r, "choices.0.message.role"), "assistant");
    assert_string_equal(sget(r, "choices.0.message.content"), "Let me check. One moment.");
    assert_true(json_is_null(jget(r, "choices.0.message.refusal")));
    assert_true(json_is_null(jget(r, "choices.0.logprobs")));
    assert_string_equal(sget(r, "choices.0.finish_reason"), "tool_calls");
    assert_string_equal(sget(r, "choices.0.message.tool_calls.0.id"), "toolu_1");
    assert_string_equal(sget(r, "choices.0.message.tool_calls.0.type"), "function");
    assert_string_equal(sget(r, "choices.0.message.tool_calls.0.function.name"), "get_weather");
    assert_string_equal(sget(r, "choices.0.message.tool_calls.0.function.arguments"),
                        "{\"location\":\"Paris\"}");
    assert_string_equal(sget(r, "choices.0.message.tool_calls.1.function.arguments"), "{}");
    assert_int_equal(iget(r, "usage.prompt_tokens"), 60);
    assert_int_equal(iget(r, "usage.completion_tokens"), 5);
    assert_int_equal(iget(r, "usage.total_tokens"), 65);
    assert_int_equal(iget(r, "usage.prompt_tokens_details.cached_tokens"), 30);
    assert_int_equal(iget(r, "usage.prompt_tokens_details.cache_write_tokens"), 20);
    json_decref(r);

    /* only tool calls: content null */
    r = parse("{\"type\":\"message\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":"
              "\"f\"}],\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":1,"
              "\"output_tokens\":2}}");
    assert_int_equal(sy_anthropic_normalize(SY_EP_CHAT, &r, msg, sizeof(msg)), SY_OK);
    assert_true(json_is_null(jget(r, "choices.0.message.content")));
    assert_string_equal(sget(r, "choices.0.message.tool_calls.0.function.arguments"), "{}");
    assert_non_null(sget(r, "id"));
    assert_int_equal(iget(r, "usage.prompt_tokens_details.cached_tokens"), 0);
    json_decref(r);

    struct {
        const char *stop, *finish;
    } m[] = {{"end_turn", "stop"},
             {"stop_sequence", "stop"},
             {"max_tokens", "length"},
             {"tool_use", "tool_calls"},
             {"refusal", "content_filter"},
             {"pause_turn", "stop"},
             {"model_context_window_exceeded", "length"},
             {"something_new", "stop"}};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        char b[256];
        snprintf(b, sizeof(b),
                 "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"stop_reason\":\"%s\"}",
                 m[i].stop);
        r = parse(b);
        assert_int_equal(sy_anthropic_normalize(SY_EP_CHAT, &r, msg, sizeof(msg)), SY_OK);
        assert_string_equal(sget(r, "choices.0.finish_reason"), m[i].finish);
        assert_null(jget(r, "choices.0.message.tool_calls"));
        json_decref(r);
    }
    assert_string_equal(sy_anthropic_finish_reason(NULL), "stop");

    /* legacy completions */
    r = parse("{\"id\":\"msg_2\",\"model\":\"c\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}],"
              "\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}");
    assert_int_equal(sy_anthropic_normalize(SY_EP_COMPLETIONS, &r, msg, sizeof(msg)), SY_OK);
    assert_string_equal(sget(r, "object"), "text_completion");
    assert_string_equal(sget(r, "choices.0.text"), "hi");
    assert_string_equal(sget(r, "choices.0.finish_reason"), "length");
    assert_int_equal(iget(r, "usage.total_tokens"), 7);
    json_decref(r);

    const char *badv[] = {"[]", "{\"content\":\"x\"}", "{\"type\":\"message\"}",
                          "{\"content\":[{\"type\":\"tool_use\",\"input\":{}}]}"};
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        r = parse(badv[i]);
        assert_int_equal(sy_anthropic_normalize(SY_EP_CHAT, &r, msg, sizeof(msg)), SY_EUPSTREAM);
        assert_true(strlen(msg) > 0);
        json_decref(r);
    }
}

/* ---- errors ---- */

static json_t *err_of(char *body)
{
    assert_non_null(body);
    json_t *j = parse(body);
    free(body);
    assert_true(json_is_object(json_object_get(j, "error")));
    return j;
}

static void test_wrap_error(void **state)
{
    (void)state;
    struct {
        int status;
        const char *atype, *type, *code;
    } c[] = {
        {400, "invalid_request_error", "invalid_request_error", NULL},
        {401, "authentication_error", "authentication_error", "invalid_api_key"},
        {402, "billing_error", "insufficient_quota", "billing_error"},
        {403, "permission_error", "permission_error", NULL},
        {404, "not_found_error", "not_found_error", "not_found"},
        {413, "request_too_large", "invalid_request_error", "request_too_large"},
        {429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"},
        {500, "api_error", "api_error", NULL},
        {504, "timeout_error", "api_error", "timeout"},
        {529, "overloaded_error", "api_error", "overloaded"},
        {418, "teapot_error", "invalid_request_error", NULL},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        char b[256];
        int n = snprintf(b, sizeof(b),
                         "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"Boom %zu\"},"
                         "\"request_id\":\"req_011\"}",
                         c[i].atype, i);
        size_t len;
        json_t *j = err_of(sy_anthropic_wrap_error(c[i].status, b, (size_t)n, NULL, &len));
        assert_string_equal(sget(j, "error.type"), c[i].type);
        if (c[i].code != NULL)
            assert_string_equal(sget(j, "error.code"), c[i].code);
        else
            assert_true(json_is_null(jget(j, "error.code")) || jget(j, "error.code") == NULL);
        assert_non_null(strstr(sget(j, "error.message"), "Boom"));
        assert_non_null(strstr(sget(j, "error.message"), "req_011"));
        json_decref(j);
    }
    /* the key is never echoed */
    const char *leak = "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\","
                       "\"message\":\"invalid x-api-key sk-ant-SECRET123\"}}";
    size_t len;
    json_t *j = err_of(sy_anthropic_wrap_error(401, leak, strlen(leak), "sk-ant-SECRET123", &len));
    assert_null(strstr(sget(j, "error.message"), "SECRET123"));
    json_decref(j);
    /* other shapes: as the OpenAI rewrapper does */
    j = err_of(sy_anthropic_wrap_error(502, "<html>bad gateway</html>", 24, NULL, &len));
    assert_string_equal(sget(j, "error.type"), "api_error");
    json_decref(j);
    j = err_of(sy_anthropic_wrap_error(529, "", 0, NULL, &len));
    assert_non_null(strstr(sget(j, "error.message"), "529"));
    json_decref(j);
    j = err_of(sy_anthropic_wrap_error(400,
                                       "{\"error\":{\"message\":\"m\",\"type\":"
                                       "\"invalid_request_error\"}}",
                                       56, NULL, &len));
    assert_string_equal(sget(j, "error.message"), "m");
    json_decref(j);
}

/* ---- streams ---- */

static const char TEXT_STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_abc\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,"
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":3,"
    "\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\","
    "\"thinking\":\"\",\"signature\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
    "\"thinking\":\"secret thoughts\"}}\n\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\","
    "\"signature\":\"sig\"}}\r\n\r\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\" w\xc3\xb6rld\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n";

static const char TOOL_STREAM[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_t\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"usage\":{\"input_tokens\":5,"
    "\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Checking.\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_A\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"location\\\": \"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_B\",\"name\":\"noargs\",\"input\":{}}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{"
    "\"input_tokens\":5,\"cache_read_input_tokens\":7,\"output_tokens\":40}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

typedef struct feed {
    sy_stream_fix f;
    sy_endpoint ep;
    sy_buf out;
    sy_err rc;
} feed;

static int feed_cb(void *ud, const char *event, const char *data, size_t len)
{
    feed *fd = ud;
    fd->rc = sy_anthropic_stream_event(&fd->f, fd->ep, event, data, len, &fd->out);
    return fd->rc != SY_OK || fd->f.saw_done || fd->f.saw_error;
}

/* Feeds <s> in pieces of <step> bytes (0 = whole) and returns the client bytes with every
 * digit of "created" values set to 1, so runs in different seconds compare equal. */
static char *run(const char *s, size_t step, sy_endpoint ep, bool client_usage, feed *fd)
{
    sy_sse_parser p;
    memset(fd, 0, sizeof(*fd));
    fd->ep = ep;
    fd->f.client_usage = client_usage;
    sy_buf_init(&fd->out, 1 << 20);
    sy_sse_init(&p, 1 << 16);
    size_t n = strlen(s);
    if (step == 0)
        step = n;
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        assert_int_equal(sy_sse_feed(&p, s + off, k, feed_cb, fd), SY_OK);
    }
    sy_sse_cleanup(&p);
    char *o = sy_buf_take(&fd->out, NULL);
    for (char *c = strstr(o, "\"created\":"); c != NULL; c = strstr(c + 1, "\"created\":"))
        for (char *d = c + 10; *d >= '0' && *d <= '9'; d++)
            *d = '1';
    return o;
}

typedef struct chunks {
    json_t *list; /* parsed data payloads, [DONE] as the string "[DONE]" */
} chunks;

static int chunk_cb(void *ud, const char *event, const char *data, size_t len)
{
    chunks *c = ud;
    (void)event;
    json_t *j = len == 6 && memcmp(data, "[DONE]", 6) == 0 ? json_string("[DONE]")
                                                           : json_loadb(data, len, 0, NULL);
    assert_non_null(j);
    json_array_append_new(c->list, j);
    return 0;
}

static json_t *parse_out(const char *s)
{
    chunks c = {json_array()};
    sy_sse_parser p;
    sy_sse_init(&p, 1 << 20);
    assert_int_equal(sy_sse_feed(&p, s, strlen(s), chunk_cb, &c), SY_OK);
    assert_false(sy_sse_pending(&p));
    sy_sse_cleanup(&p);
    return c.list;
}

static void check_envelope(const json_t *chunk, const char *object)
{
    assert_string_equal(sget(chunk, "object"), object);
    assert_non_null(sget(chunk, "id"));
    assert_non_null(sget(chunk, "model"));
    assert_true(json_is_integer(json_object_get(chunk, "created")));
}

static void test_stream_text_every_split(void **state)
{
    (void)state;
    feed fd;
    char *whole = run(TEXT_STREAM, 0, SY_EP_CHAT, true, &fd);
    assert_int_equal(fd.rc, SY_OK);
    assert_true(fd.f.saw_done);
    assert_true(fd.f.saw_finish);
    assert_false(fd.f.saw_error);
    /* usage for spend: prompt = input + cache read + cache write */
    assert_int_equal(iget(fd.f.usage, "prompt_tokens"), 115);
    assert_int_equal(iget(fd.f.usage, "completion_tokens"), 15);
    assert_int_equal(iget(fd.f.usage, "prompt_tokens_details.cached_tokens"), 100);
    assert_int_equal(iget(fd.f.usage, "prompt_tokens_details.cache_write_tokens"), 3);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);

    json_t *l = parse_out(whole);
    /* role, "Hello", " wörld", finish, usage, [DONE] — thinking and pings produce nothing */
    assert_int_equal(json_array_size(l), 6);
    for (size_t i = 0; i < 5; i++) {
        json_t *c = json_array_get(l, i);
        check_envelope(c, "chat.completion.chunk");
        assert_string_equal(sget(c, "id"), "msg_abc");
        assert_string_equal(sget(c, "model"), "claude-x");
    }
    assert_string_equal(sget(l, "0.choices.0.delta.role"), "assistant");
    assert_string_equal(sget(l, "0.choices.0.delta.content"), "");
    assert_true(json_is_null(jget(l, "0.choices.0.finish_reason")));
    assert_string_equal(sget(l, "1.choices.0.delta.content"), "Hello");
    assert_null(jget(l, "1.choices.0.delta.role"));
    assert_string_equal(sget(l, "2.choices.0.delta.content"), " w\xc3\xb6rld");
    assert_string_equal(sget(l, "3.choices.0.finish_reason"), "stop");
    assert_int_equal(json_object_size(jget(l, "3.choices.0.delta")), 0);
    assert_int_equal(json_array_size(jget(l, "4.choices")), 0);
    assert_int_equal(iget(l, "4.usage.total_tokens"), 130);
    assert_string_equal(json_string_value(json_array_get(l, 5)), "[DONE]");
    assert_null(strstr(whole, "secret thoughts"));
    json_decref(l);

    /* every split gives the same bytes */
    for (size_t step = 1; step < sizeof(TEXT_STREAM); step++) {
        char *o = run(TEXT_STREAM, step, SY_EP_CHAT, true, &fd);
        assert_int_equal(fd.rc, SY_OK);
        assert_string_equal(o, whole);
        free(o);
        sy_stream_fix_cleanup(&fd.f);
        sy_buf_cleanup(&fd.out);
    }
    free(whole);

    /* without include_usage: no usage chunk, but the usage is still kept */
    char *o = run(TEXT_STREAM, 7, SY_EP_CHAT, false, &fd);
    l = parse_out(o);
    assert_int_equal(json_array_size(l), 5);
    assert_null(strstr(o, "\"usage\""));
    assert_non_null(fd.f.usage);
    json_decref(l);
    free(o);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);
}

static void test_stream_tools_every_split(void **state)
{
    (void)state;
    feed fd;
    char *whole = run(TOOL_STREAM, 0, SY_EP_CHAT, false, &fd);
    assert_int_equal(fd.rc, SY_OK);
    assert_true(fd.f.saw_done);
    assert_int_equal(fd.f.tool_calls, 2);
    assert_int_equal(iget(fd.f.usage, "prompt_tokens"), 12); /* cumulative: 5 + 7 read */
    assert_int_equal(iget(fd.f.usage, "completion_tokens"), 40);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);
    json_t *l = parse_out(whole);
    /* role, text, tool A start, 2 fragments (the empty one is skipped), tool B start, finish,
     * [DONE] */
    assert_int_equal(json_array_size(l), 8);
    assert_string_equal(sget(l, "1.choices.0.delta.content"), "Checking.");
    const json_t *t = jget(l, "2.choices.0.delta.tool_calls.0");
    assert_int_equal(json_integer_value(json_object_get(t, "index")), 0);
    assert_string_equal(sget(t, "id"), "toolu_A");
    assert_string_equal(sget(t, "type"), "function");
    assert_string_equal(sget(t, "function.name"), "get_weather");
    assert_string_equal(sget(t, "function.arguments"), "");
    assert_int_equal(iget(l, "3.choices.0.delta.tool_calls.0.index"), 0);
    assert_null(jget(l, "3.choices.0.delta.tool_calls.0.id"));
    assert_string_equal(sget(l, "3.choices.0.delta.tool_calls.0.function.arguments"),
                        "{\"location\": ");
    assert_string_equal(sget(l, "4.choices.0.delta.tool_calls.0.function.arguments"), "\"Paris\"}");
    assert_int_equal(iget(l, "5.choices.0.delta.tool_calls.0.index"), 1);
    assert_string_equal(sget(l, "5.choices.0.delta.tool_calls.0.id"), "toolu_B");
    assert_string_equal(sget(l, "6.choices.0.finish_reason"), "tool_calls");
    json_decref(l);
    for (size_t step = 1; step < sizeof(TOOL_STREAM); step += 1) {
        char *o = run(TOOL_STREAM, step, SY_EP_CHAT, false, &fd);
        assert_string_equal(o, whole);
        free(o);
        sy_stream_fix_cleanup(&fd.f);
        sy_buf_cleanup(&fd.out);
    }
    free(whole);
}

static void test_stream_completions(void **state)
{
    (void)state;
    feed fd;
    char *o = run(TOOL_STREAM, 3, SY_EP_COMPLETIONS, true, &fd);
    json_t *l = parse_out(o);
    /* no role chunk, text only (tool blocks have no completion form), finish, usage, [DONE] */
    assert_int_equal(json_array_size(l), 4);
    check_envelope(json_array_get(l, 0), "text_completion");
    assert_string_equal(sget(l, "0.choices.0.text"), "Checking.");
    assert_true(json_is_null(jget(l, "0.choices.0.logprobs")));
    assert_string_equal(sget(l, "1.choices.0.text"), "");
    assert_string_equal(sget(l, "1.choices.0.finish_reason"), "tool_calls");
    assert_int_equal(iget(l, "2.usage.completion_tokens"), 40);
    json_decref(l);
    free(o);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);
}

static void test_stream_errors(void **state)
{
    (void)state;
    feed fd;
    /* an overloaded error mid-stream: an OpenAI error event, nothing after it */
    const char *s =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\","
        "\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
        "\"message\":\"Overloaded\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"never\"}}\n\n";
    char *o = run(s, 5, SY_EP_CHAT, false, &fd);
    assert_int_equal(fd.rc, SY_OK);
    assert_true(fd.f.saw_error);
    assert_false(fd.f.saw_done);
    json_t *l = parse_out(o);
    assert_int_equal(json_array_size(l), 3);
    assert_string_equal(sget(l, "2.error.type"), "api_error");
    assert_string_equal(sget(l, "2.error.code"), "overloaded");
    assert_string_equal(sget(l, "2.error.message"), "Overloaded");
    assert_null(strstr(o, "never"));
    /* later events are ignored even when fed */
    sy_buf extra;
    sy_buf_init(&extra, 1024);
    assert_int_equal(sy_anthropic_stream_event(&fd.f, SY_EP_CHAT, "ping", "{}", 2, &extra), SY_OK);
    assert_int_equal(extra.len, 0);
    sy_buf_cleanup(&extra);
    json_decref(l);
    free(o);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);

    /* an error as the first event (no message_start) */
    o = run("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
            "\"message\":\"slow down\"}}\n\n",
            0, SY_EP_CHAT, false, &fd);
    assert_true(fd.f.saw_error);
    l = parse_out(o);
    assert_string_equal(sget(l, "0.error.type"), "rate_limit_error");
    json_decref(l);
    free(o);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);

    /* malformed and out-of-order input is SY_EUPSTREAM, nothing appended */
    const char *badv[][2] = {
        {"message_start", "not json"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                                "\"type\":\"text_delta\",\"text\":\"x\"}}"},
        {"", "[1,2]"},
    };
    for (size_t i = 0; i < sizeof(badv) / sizeof(badv[0]); i++) {
        sy_stream_fix f;
        sy_buf out;
        memset(&f, 0, sizeof(f));
        sy_buf_init(&out, 1024);
        assert_int_equal(sy_anthropic_stream_event(&f, SY_EP_CHAT, badv[i][0], badv[i][1],
                                                   strlen(badv[i][1]), &out),
                         SY_EUPSTREAM);
        assert_int_equal(out.len, 0);
        sy_stream_fix_cleanup(&f);
        sy_buf_cleanup(&out);
    }
    /* after message_start: a delta for a block that is not open, a second message_start, a
     * tool_use without id */
    const char *start = "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}";
    const char *after[] = {
        "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"x\"}}",
        start,
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\"}}",
    };
    for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        sy_stream_fix f;
        sy_buf out;
        memset(&f, 0, sizeof(f));
        sy_buf_init(&out, 4096);
        assert_int_equal(sy_anthropic_stream_event(&f, SY_EP_CHAT, "", start, strlen(start), &out),
                         SY_OK);
        assert_int_equal(
            sy_anthropic_stream_event(&f, SY_EP_CHAT, "", after[i], strlen(after[i]), &out),
            SY_EUPSTREAM);
        sy_stream_fix_cleanup(&f);
        sy_buf_cleanup(&out);
    }
    /* a full output buffer is reported, not overrun */
    sy_stream_fix f;
    sy_buf out;
    memset(&f, 0, sizeof(f));
    sy_buf_init(&out, 16);
    assert_int_equal(sy_anthropic_stream_event(&f, SY_EP_CHAT, "", start, strlen(start), &out),
                     SY_ETOOBIG);
    sy_stream_fix_cleanup(&f);
    sy_buf_cleanup(&out);
}

/* saw_content stays false while only the role chunk went out (the relay holds it back, so an
 * error then is a failure before the first byte) and turns true with the first delta; an error
 * event's type gives error_status. */
static void test_stream_content_and_error_status(void **state)
{
    (void)state;
    const char *start = "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}";
    const char *block = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
                        "\"type\":\"text\",\"text\":\"\"}}";
    const char *thinking = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
                           "\"type\":\"thinking\",\"thinking\":\"\"}}";
    const char *delta = "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                        "\"type\":\"text_delta\",\"text\":\"Hi\"}}";
    const char *ping = "{\"type\":\"ping\"}";
    static const struct {
        const char *type;
        int status;
    } errs[] = {{"overloaded_error", 529}, {"api_error", 500},      {"rate_limit_error", 429},
                {"invalid_request_error", 400}, {"timeout_error", 504}, {"brand_new_error", 500}};
    for (int ep = 0; ep < 2; ep++) {
        sy_endpoint e = ep == 0 ? SY_EP_CHAT : SY_EP_COMPLETIONS;
        for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
            sy_stream_fix f;
            sy_buf out;
            char err[160];
            memset(&f, 0, sizeof(f));
            sy_buf_init(&out, 1 << 16);
            snprintf(err, sizeof(err),
                     "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"m\"}}",
                     errs[i].type);
            const char *evs[] = {ping, start, ping, i % 2 ? thinking : block};
            for (size_t k = 0; k < 4; k++)
                assert_int_equal(
                    sy_anthropic_stream_event(&f, e, "", evs[k], strlen(evs[k]), &out), SY_OK);
            assert_false(f.saw_content);
            assert_int_equal(out.len > 0, e == SY_EP_CHAT); /* the role chunk (chat only) */
            assert_int_equal(sy_anthropic_stream_event(&f, e, "error", err, strlen(err), &out),
                             SY_OK);
            assert_true(f.saw_error);
            assert_false(f.saw_content);
            assert_int_equal(f.error_status, errs[i].status);
            /* the relay rewraps the event's data as an error answer of that status */
            size_t n;
            char *body = sy_anthropic_wrap_error(f.error_status, err, strlen(err), NULL, &n);
            assert_non_null(body);
            json_t *j = json_loads(body, 0, NULL);
            assert_string_equal(sget(j, "error.message"), "m");
            json_decref(j);
            free(body);
            sy_stream_fix_cleanup(&f);
            sy_buf_cleanup(&out);
        }
        /* the first text delta is content; a later error keeps saw_content */
        sy_stream_fix f;
        sy_buf out;
        memset(&f, 0, sizeof(f));
        sy_buf_init(&out, 1 << 16);
        const char *evs[] = {start, block, delta};
        for (size_t k = 0; k < 3; k++) {
            assert_false(f.saw_content);
            assert_int_equal(sy_anthropic_stream_event(&f, e, "", evs[k], strlen(evs[k]), &out),
                             SY_OK);
        }
        assert_true(f.saw_content);
        sy_stream_fix_cleanup(&f);
        sy_buf_cleanup(&out);
    }
    /* a message with no content at all: its finish chunk is content */
    feed fd;
    char *o = run("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{"
                  "\"id\":\"m\",\"model\":\"c\"}}\n\n"
                  "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                  0, SY_EP_CHAT, false, &fd);
    assert_true(fd.f.saw_content);
    assert_true(fd.f.saw_done);
    free(o);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);
}

/* A stream that ends without message_delta still gets its finish chunk before [DONE]. */
static void test_stream_without_message_delta(void **state)
{
    (void)state;
    feed fd;
    char *o = run("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
                  "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                  0, SY_EP_CHAT, true, &fd);
    json_t *l = parse_out(o);
    assert_int_equal(json_array_size(l), 4);
    assert_string_equal(sget(l, "1.choices.0.finish_reason"), "stop");
    assert_int_equal(iget(l, "2.usage.total_tokens"), 0);
    assert_non_null(sget(l, "0.id"));
    json_decref(l);
    free(o);
    sy_stream_fix_cleanup(&fd.f);
    sy_buf_cleanup(&fd.out);
}

/* ---- allocation failures ---- */

static long alloc_left = -1;

static void *failing_malloc(size_t n)
{
    if (alloc_left == 0)
        return NULL;
    if (alloc_left > 0)
        alloc_left--;
    return malloc(n);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    sy_deployment d = dep("2023-06-01");
    d.auto_cache_control = true;
    json_t *b = parse(
        "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"t\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"data:image/png;base64,AAAA\"}}]},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
        "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"r\"}],\"tools\":[{\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
        "\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"stop\":[\"x\"],"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{}}},"
        "\"temperature\":0.5,\"user\":\"u\"}");
    char *s = NULL;
    long n;
    for (n = 0; s == NULL && n < 10000; n++) {
        char msg[128] = "";
        size_t len;
        alloc_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        s = sy_anthropic_request(&d, SY_EP_CHAT, b, true, &len, msg, sizeof(msg));
        alloc_left = -1;
        json_set_alloc_funcs(malloc, free);
        if (s == NULL)
            assert_string_equal(msg, ""); /* OOM is never reported as a client error */
    }
    assert_non_null(s);
    assert_true(n > 20);
    free(s);
    json_decref(b);

    const char *answer =
        "{\"id\":\"m\",\"model\":\"c\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},{\"type\":"
        "\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{\"a\":[1,2]}}],\"stop_reason\":"
        "\"tool_use\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}";
    sy_err rc = SY_ENOMEM;
    for (n = 0; rc != SY_OK && n < 10000; n++) {
        char msg[128];
        json_t *r = parse(answer);
        alloc_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        rc = sy_anthropic_normalize(SY_EP_CHAT, &r, msg, sizeof(msg));
        alloc_left = -1;
        json_set_alloc_funcs(malloc, free);
        assert_true(rc == SY_OK || rc == SY_ENOMEM);
        json_decref(r);
    }
    assert_int_equal(rc, SY_OK);

    /* every event of both recorded streams, one allocation failure at a time */
    const char *streams[] = {TEXT_STREAM, TOOL_STREAM};
    for (size_t k = 0; k < 2; k++) {
        for (n = 0; n < 10000; n++) {
            feed fd;
            memset(&fd, 0, sizeof(fd));
            fd.ep = SY_EP_CHAT;
            fd.f.client_usage = true;
            sy_buf_init(&fd.out, 1 << 20);
            sy_sse_parser p;
            sy_sse_init(&p, 1 << 16);
            alloc_left = n;
            json_set_alloc_funcs(failing_malloc, free);
            sy_err frc = sy_sse_feed(&p, streams[k], strlen(streams[k]), feed_cb, &fd);
            alloc_left = -1;
            json_set_alloc_funcs(malloc, free);
            bool ok = frc == SY_OK && fd.rc == SY_OK && fd.f.saw_done;
            sy_sse_cleanup(&p);
            sy_stream_fix_cleanup(&fd.f);
            sy_buf_cleanup(&fd.out);
            if (ok)
                break;
        }
        assert_true(n > 10 && n < 10000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_and_headers),
        cmocka_unit_test(test_request_basic),
        cmocka_unit_test(test_request_version_sampling),
        cmocka_unit_test(test_request_images),
        cmocka_unit_test(test_request_tools),
        cmocka_unit_test(test_request_misc),
        cmocka_unit_test(test_request_cache_control),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_wrap_error),
        cmocka_unit_test(test_stream_text_every_split),
        cmocka_unit_test(test_stream_tools_every_split),
        cmocka_unit_test(test_stream_completions),
        cmocka_unit_test(test_stream_errors),
        cmocka_unit_test(test_stream_content_and_error_status),
        cmocka_unit_test(test_stream_without_message_delta),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
