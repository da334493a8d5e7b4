/* Unit tests for the prompt cache: key coverage (every field that can change the answer changes the
 * key; deny-listed fields, key order, whitespace and number spelling do not), the eligibility
 * matrix, the stream accumulator (round trips through sy_openai_to_sse, OpenAI-style fragments,
 * every inconsistency refused), the entry codec, put/get on the embedded store with an injected
 * clock (TTL, size caps, corrupt entries) and on a real redis-server killed and restarted, replay,
 * per-input embeddings, the accumulator fed through a provider's stream observer (built chunks as
 * objects, fast-path deltas as bytes; agreeing with a re-parse of the client-bound bytes, fuzzed),
 * and allocation failures one by one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "redis_helper.h"
#include "switchyard/cache.h"
#include "switchyard/json_util.h"
#include "switchyard/provider.h"
#include "switchyard/provider_openai.h"
#include "switchyard/sse.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (j == NULL)
        fail_msg("bad test JSON (%s): %s", e.text, text);
    return j;
}

static void key_of(sy_endpoint ep, const char *route, const char *model, const char *tenant,
                   const json_t *body, char key[SY_CACHE_KEY_SIZE])
{
    sy_cache_key_in in = {ep, route, model, tenant, body};
    assert_int_equal(sy_cache_key(&in, key), SY_OK);
}

static void chat_key(const char *body_text, char key[SY_CACHE_KEY_SIZE])
{
    json_t *b = J(body_text);
    key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", "team-a", b, key);
    json_decref(b);
}

static void assert_json_equal(const json_t *a, const json_t *b)
{
    if (!json_equal((json_t *)a, (json_t *)b)) {
        char *sa = json_dumps(a, JSON_SORT_KEYS | JSON_COMPACT);
        char *sb = json_dumps(b, JSON_SORT_KEYS | JSON_COMPACT);
        print_error("expected %s\n     got %s\n", sb, sa);
        free(sa);
        free(sb);
        fail();
    }
}

/* ---- key ------------------------------------------------------------------------------------- */

#define BASE_BODY                                                                                  \
    "{\"model\":\"auto\",\"messages\":[{\"role\":\"system\",\"content\":\"be "                     \
    "brief\"},"                                                                                    \
    "{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0,\"max_tokens\":"                    \
    "100}"

static void test_key_format(void **state)
{
    char k[SY_CACHE_KEY_SIZE];
    (void)state;
    chat_key(BASE_BODY, k);
    assert_int_equal(strlen(k), 68);
    assert_memory_equal(k, "{c:", 3);
    assert_int_equal(k[67], '}');
    for (int i = 3; i < 67; i++)
        assert_true((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f'));
    /* stable: the same input gives the same key */
    char k2[SY_CACHE_KEY_SIZE];
    chat_key(BASE_BODY, k2);
    assert_string_equal(k, k2);

    sy_cache_key_in bad = {SY_EP_CHAT, "r", "m", "t", NULL};
    assert_int_equal(sy_cache_key(&bad, k), SY_EINVAL);
    json_t *arr = J("[1]");
    bad.body = arr;
    assert_int_equal(sy_cache_key(&bad, k), SY_EINVAL);
    json_decref(arr);
}

/* Each entry: a field set (or replaced) at the top level of BASE_BODY; every one must change the
 * key, and every pair must differ from each other too. */
static const struct {
    const char *field;
    const char *value;
} changing[] = {
    {"temperature", "0.2"},
    {"temperature", "1"},
    {"top_p", "0.5"},
    {"max_tokens", "101"},
    {"max_completion_tokens", "100"},
    {"stop", "[\"\\n\"]"},
    {"stop", "\"END\""},
    {"stop", "null"},
    {"seed", "42"},
    {"seed", "43"},
    {"seed", "9223372036854775807"},
    {"seed", "9223372036854775806"},
    {"n", "2"},
    {"presence_penalty", "0.5"},
    {"frequency_penalty", "0.5"},
    {"logit_bias", "{\"50256\":-100}"},
    {"logit_bias", "{\"50256\":-99}"},
    {"tools", "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
              "\"parameters\":{}}}]"},
    {"tools", "[{\"type\":\"function\",\"function\":{\"name\":\"get_time\","
              "\"parameters\":{}}}]"},
    {"tool_choice", "\"required\""},
    {"tool_choice", "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}"},
    {"parallel_tool_calls", "false"},
    {"response_format", "{\"type\":\"json_object\"}"},
    {"response_format", "{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
                        "\"x\",\"schema\":{}}}"},
    {"reasoning_effort", "\"low\""},
    {"reasoning_effort", "\"high\""},
    {"reasoning", "{\"effort\":\"low\"}"},
    {"logprobs", "true"},
    {"top_logprobs", "3"},
    {"modalities", "[\"text\"]"},
    {"prediction", "{\"type\":\"content\",\"content\":\"x\"}"},
    {"model", "\"auto-2\""},
    {"messages", "[{\"role\":\"user\",\"content\":\"hi\"}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
                 "\"content\":\"hi!\"}]"},
    {"messages", "[{\"role\":\"user\",\"content\":\"be brief\"},{\"role\":\"system\","
                 "\"content\":\"hi\"}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
                 "\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]"},
    {"messages", "[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
                 "\"content\":\"hi\",\"name\":\"bob\"}]"},
    {"a_parameter_nobody_knows_yet", "true"},
    {"x_vendor_option", "{\"k\":1}"},
    /* nested fields named like deny-listed ones still count */
    {"extra_body", "{\"stream\":true}"},
};

static void test_key_fields_change_it(void **state)
{
    size_t n = sizeof(changing) / sizeof(changing[0]);
    char(*keys)[SY_CACHE_KEY_SIZE] = calloc(n + 1, SY_CACHE_KEY_SIZE);
    (void)state;

    chat_key(BASE_BODY, keys[n]);
    for (size_t i = 0; i < n; i++) {
        json_t *b = J(BASE_BODY);
        assert_int_equal(json_object_set_new(b, changing[i].field, J(changing[i].value)), 0);
        key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", "team-a", b, keys[i]);
        json_decref(b);
    }
    for (size_t i = 0; i <= n; i++)
        for (size_t j = i + 1; j <= n; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                fail_msg("same key for %s=%s and %s", changing[i].field, changing[i].value,
                         j < n ? changing[j].field : "the base body");
    free(keys);
}

static void test_key_context_changes_it(void **state)
{
    json_t *b = J(BASE_BODY);
    char base[SY_CACHE_KEY_SIZE], k[SY_CACHE_KEY_SIZE];
    (void)state;

    key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", "team-a", b, base);
    key_of(SY_EP_COMPLETIONS, "auto", "gpt-4o-mini", "team-a", b, k);
    assert_string_not_equal(base, k);
    key_of(SY_EP_CHAT, "other", "gpt-4o-mini", "team-a", b, k);
    assert_string_not_equal(base, k);
    key_of(SY_EP_CHAT, "auto", "gpt-4o", "team-a", b, k);
    assert_string_not_equal(base, k);
    key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", "team-b", b, k);
    assert_string_not_equal(base, k);
    key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", NULL, b, k);
    assert_string_not_equal(base, k);
    /* NULL and "" are the same (anonymous) */
    char k2[SY_CACHE_KEY_SIZE];
    key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", "", b, k2);
    assert_string_equal(k, k2);
    key_of(SY_EP_CHAT, NULL, "gpt-4o-mini", "team-a", b, k);
    key_of(SY_EP_CHAT, "", "gpt-4o-mini", "team-a", b, k2);
    assert_string_equal(k, k2);
    /* framing: moving bytes between fields changes the key */
    key_of(SY_EP_CHAT, "ab", "m", "c", b, k);
    key_of(SY_EP_CHAT, "a", "bm", "c", b, k2);
    assert_string_not_equal(k, k2);
    key_of(SY_EP_CHAT, "a", "m", "bc", b, k2);
    assert_string_not_equal(k, k2);
    json_decref(b);
}

static void test_key_denied_fields_do_not(void **state)
{
    static const struct {
        const char *field;
        const char *value;
    } same[] = {
        {"stream", "true"},
        {"stream", "false"},
        {"stream_options", "{\"include_usage\":true}"},
        {"user", "\"user-1234\""},
        {"safety_identifier", "\"hash\""},
        {"metadata", "{\"trace\":\"abc\"}"},
        {"store", "true"},
        {"prompt_cache_key", "\"pck\""},
        {"service_tier", "\"flex\""},
    };
    char base[SY_CACHE_KEY_SIZE], k[SY_CACHE_KEY_SIZE];
    (void)state;

    chat_key(BASE_BODY, base);
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        json_t *b = J(BASE_BODY);
        json_object_set_new(b, same[i].field, J(same[i].value));
        key_of(SY_EP_CHAT, "auto", "gpt-4o-mini", "team-a", b, k);
        if (strcmp(base, k) != 0)
            fail_msg("%s changed the key", same[i].field);
        json_decref(b);
    }
    /* encoding_format is ignored for embeddings only */
    json_t *e1 = J("{\"model\":\"e\",\"input\":\"x\"}");
    json_t *e2 = J("{\"model\":\"e\",\"input\":\"x\",\"encoding_format\":\"base64\"}");
    char k1[SY_CACHE_KEY_SIZE], k2[SY_CACHE_KEY_SIZE];
    key_of(SY_EP_EMBEDDINGS, "r", "m", "t", e1, k1);
    key_of(SY_EP_EMBEDDINGS, "r", "m", "t", e2, k2);
    assert_string_equal(k1, k2);
    key_of(SY_EP_CHAT, "r", "m", "t", e1, k1);
    key_of(SY_EP_CHAT, "r", "m", "t", e2, k2);
    assert_string_not_equal(k1, k2);
    /* dimensions count for embeddings */
    json_object_set_new(e2, "dimensions", json_integer(256));
    key_of(SY_EP_EMBEDDINGS, "r", "m", "t", e1, k1);
    key_of(SY_EP_EMBEDDINGS, "r", "m", "t", e2, k2);
    assert_string_not_equal(k1, k2);
    json_decref(e1);
    json_decref(e2);
}

static void test_key_canonical(void **state)
{
    static const char *const groups[][4] = {
        /* key order and whitespace */
        {"{\"a\":1,\"b\":[1,2],\"c\":{\"x\":1,\"y\":2}}",
         "{ \"c\" : { \"y\":2, \"x\":1 },\n \"b\":[ 1 , 2 ], \"a\":1 }", NULL},
        /* equal numbers, spelled differently */
        {"{\"t\":1}", "{\"t\":1.0}", "{\"t\":1e0}", "{\"t\":10E-1}"},
        {"{\"t\":0}", "{\"t\":-0.0}", "{\"t\":0.0}", "{\"t\":0e5}"},
        {"{\"t\":0.7}", "{\"t\":0.70}", "{\"t\":7e-1}", NULL},
        {"{\"t\":-3}", "{\"t\":-3.0}", NULL, NULL},
        /* string escapes */
        {"{\"s\":\"\\u00e9\\u0041\"}", "{\"s\":\"\xc3\xa9\x41\"}", NULL, NULL},
        {"{\"s\":\"a\\/b\"}", "{\"s\":\"a/b\"}", NULL, NULL},
    };
    static const char *const different[] = {
        "{\"t\":0.3}",
        "{\"t\":0.30000000000000004}",
        "{\"t\":9007199254740993}",
        "{\"t\":9007199254740992}",
        "{\"t\":1}",
        "{\"t\":\"1\"}",
        "{\"t\":true}",
        "{\"t\":null}",
        "{\"t\":[]}",
        "{\"t\":{}}",
        "{\"t\":\"\"}",
        "{}",
        "{\"t\":[1,2]}",
        "{\"t\":[2,1]}",
        "{\"t\":\"a\\\"b\"}",
        "{\"t\":\"a\\\\\\\"b\"}",
        "{\"t\":\"a\\u0000b\"}",
        "{\"t\":\"a\"}",
        "{\"t\":{\"a\":1}}",
        "{\"t\":{\"a\":1.5}}",
    };
    (void)state;

    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        char k0[SY_CACHE_KEY_SIZE], k[SY_CACHE_KEY_SIZE];
        json_t *b0 = json_loads(groups[g][0], JSON_ALLOW_NUL, NULL);
        assert_non_null(b0);
        key_of(SY_EP_CHAT, "r", "m", "t", b0, k0);
        json_decref(b0);
        for (int i = 1; i < 4 && groups[g][i] != NULL; i++) {
            json_t *b = J(groups[g][i]);
            key_of(SY_EP_CHAT, "r", "m", "t", b, k);
            if (strcmp(k0, k) != 0)
                fail_msg("%s and %s differ", groups[g][0], groups[g][i]);
            json_decref(b);
        }
    }
    size_t n = sizeof(different) / sizeof(different[0]);
    char keys[sizeof(different) / sizeof(different[0])][SY_CACHE_KEY_SIZE];
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_loads(different[i], JSON_ALLOW_NUL, NULL);
        assert_non_null(b);
        key_of(SY_EP_CHAT, "r", "m", "t", b, keys[i]);
        json_decref(b);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(keys[i], keys[j]) == 0)
                fail_msg("%s and %s share a key", different[i], different[j]);

    /* objects with more keys than the on-stack sort array, in two orders */
    json_t *a = json_object(), *b = json_object();
    for (int i = 0; i < 100; i++) {
        char name[16];
        (void)snprintf(name, sizeof(name), "k%03d", i);
        json_object_set_new(a, name, json_integer(i));
        (void)snprintf(name, sizeof(name), "k%03d", 99 - i);
        json_object_set_new(b, name, json_integer(99 - i));
    }
    char ka[SY_CACHE_KEY_SIZE], kb[SY_CACHE_KEY_SIZE];
    key_of(SY_EP_CHAT, "r", "m", "t", a, ka);
    key_of(SY_EP_CHAT, "r", "m", "t", b, kb);
    assert_string_equal(ka, kb);
    json_object_set_new(b, "k050", json_integer(-1));
    key_of(SY_EP_CHAT, "r", "m", "t", b, kb);
    assert_string_not_equal(ka, kb);
    json_decref(a);
    json_decref(b);
}

/* A big body (a long conversation) streams through the digest in pieces. */
static void test_key_big_body(void **state)
{
    json_t *b = J("{\"model\":\"m\",\"temperature\":0,\"messages\":[]}");
    json_t *msgs = json_object_get(b, "messages");
    char *text = malloc(100001);
    char k1[SY_CACHE_KEY_SIZE], k2[SY_CACHE_KEY_SIZE];
    (void)state;

    memset(text, 'a', 100000);
    text[100000] = '\0';
    for (int i = 0; i < 20; i++)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", text));
    key_of(SY_EP_CHAT, "r", "m", "t", b, k1);
    text[99999] = 'b';
    json_object_set_new(json_array_get(msgs, 19), "content", json_string(text));
    key_of(SY_EP_CHAT, "r", "m", "t", b, k2);
    assert_string_not_equal(k1, k2);
    free(text);
    json_decref(b);
}

/* ---- eligibility ----------------------------------------------------------------------------- */

static void test_eligibility(void **state)
{
    static const struct {
        sy_cache_mode mode;
        sy_endpoint ep;
        const char *body;
        const char *cc;
        bool lookup, store;
    } rows[] = {
        {SY_CACHE_NEVER, SY_EP_CHAT, "{\"temperature\":0}", NULL, false, false},
        {SY_CACHE_NEVER, SY_EP_EMBEDDINGS, "{}", NULL, false, false},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", NULL, true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{\"temperature\":1.3}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{}", NULL, false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"temperature\":0}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"temperature\":0.0}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"temperature\":0.1}", NULL, false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"temperature\":\"0\"}", NULL, false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"temperature\":null}", NULL, false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"seed\":7}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"seed\":7,\"temperature\":0.9}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"seed\":null}", NULL, false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"temperature\":0,\"n\":3}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_COMPLETIONS, "{\"temperature\":0}", NULL, true, true},
        {SY_CACHE_DETERMINISTIC, SY_EP_EMBEDDINGS, "{\"input\":\"x\"}", NULL, true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "no-cache", false, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "No-Cache", false, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "no-store", true, false},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "no-cache, no-store", false, false},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", " private ,NO-STORE,no-cache=\"x\"", false, false},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "max-age=0", false, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "max-age=\"0\"", false, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "max-age=60", true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "max-age", true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "no-cachex, xno-store", true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "", true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", ",,,", true, true},
        {SY_CACHE_ALWAYS, SY_EP_CHAT, "{}", "no-transform", true, true},
        {SY_CACHE_NEVER, SY_EP_CHAT, "{}", "no-store", false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{}", "no-cache", false, false},
        {SY_CACHE_DETERMINISTIC, SY_EP_CHAT, "{\"seed\":1}", "no-cache", false, true},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *b = J(rows[i].body);
        sy_cache_plan p = sy_cache_eligible(rows[i].mode, rows[i].ep, b, rows[i].cc);
        if (p.lookup != rows[i].lookup || p.store != rows[i].store)
            fail_msg("row %zu (%s, %s): lookup %d store %d", i, rows[i].body,
                     rows[i].cc ? rows[i].cc : "-", p.lookup, p.store);
        assert_non_null(p.reason);
        assert_int_equal(p.reason[0] == '\0', p.lookup && p.store);
        json_decref(b);
    }
    sy_cache_plan p = sy_cache_eligible(SY_CACHE_ALWAYS, SY_EP_CHAT, NULL, NULL);
    assert_true(p.lookup && p.store);
    p = sy_cache_eligible(SY_CACHE_DETERMINISTIC, SY_EP_CHAT, NULL, NULL);
    assert_false(p.lookup || p.store);
    assert_string_equal(p.reason, "not deterministic");

    sy_cache_plan look = {true, true, ""}, nolook = {false, true, "no-cache"};
    assert_string_equal(sy_cache_header(&look, true), "hit");
    assert_string_equal(sy_cache_header(&look, false), "miss");
    assert_string_equal(sy_cache_header(&nolook, false), "bypass");
    assert_string_equal(sy_cache_header(NULL, false), "bypass");
    assert_string_equal(sy_cache_status_name(SY_CACHE_HIT), "hit");
    assert_string_equal(sy_cache_status_name(SY_CACHE_STORE_ERROR), "store_error");
    assert_string_equal(sy_cache_status_name(SY_CACHE__COUNT), "unknown");
}

/* ---- accumulator ----------------------------------------------------------------------------- */

typedef struct sse_feed {
    sy_cache_acc *acc;
    sy_err rc;
    int events;
    bool first_has_role;
} sse_feed;

static int feed_cb(void *ud, const char *event, const char *data, size_t len)
{
    sse_feed *f = ud;
    (void)event;
    if (f->events == 0)
        f->first_has_role = strstr(data, "\"role\":\"assistant\"") != NULL;
    f->events++;
    if (f->rc == SY_OK)
        f->rc = sy_cache_acc_feed_data(f->acc, data, len);
    return 0;
}

/* Feeds SSE text into <acc>; returns the first error. */
static sy_err feed_sse(sy_cache_acc *acc, const char *text, size_t len, sse_feed *out)
{
    sy_sse_parser p;
    sse_feed f = {acc, SY_OK, 0, false};
    sy_sse_init(&p, 1 << 20);
    assert_int_equal(sy_sse_feed(&p, text, len, feed_cb, &f), SY_OK);
    sy_sse_cleanup(&p);
    if (out != NULL)
        *out = f;
    return f.rc;
}

/* The answer -> SSE (sy_openai_to_sse) -> accumulator -> answer round trip. */
static void roundtrip(sy_endpoint ep, const char *answer_text)
{
    json_t *ans = J(answer_text), *back = NULL;
    char msg[128];
    sy_buf sse;
    sy_cache_acc acc;

    assert_int_equal(sy_openai_normalize(ep, ans, false, msg, sizeof(msg)), SY_OK);
    sy_buf_init(&sse, 1 << 20);
    assert_int_equal(sy_openai_to_sse(ep, ans, true, &sse), SY_OK);
    sy_cache_acc_init(&acc, ep, 0);
    assert_int_equal(feed_sse(&acc, sse.data, sse.len, NULL), SY_OK);
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &back), SY_OK);
    assert_json_equal(back, ans);
    /* without the usage chunk the relay hands the usage over itself */
    json_decref(back);
    sy_cache_acc_cleanup(&acc);
    sy_buf_reset(&sse);
    assert_int_equal(sy_openai_to_sse(ep, ans, false, &sse), SY_OK);
    sy_cache_acc_init(&acc, ep, 0);
    assert_int_equal(feed_sse(&acc, sse.data, sse.len, NULL), SY_OK);
    assert_int_equal(sy_cache_acc_finish(&acc, true, json_object_get(ans, "usage"), &back), SY_OK);
    assert_json_equal(back, ans);
    json_decref(back);
    sy_cache_acc_cleanup(&acc);
    sy_cache_acc_cleanup(&acc); /* safe twice */
    sy_buf_cleanup(&sse);
    json_decref(ans);
}

static void test_acc_roundtrip(void **state)
{
    (void)state;
    /* plain content */
    roundtrip(SY_EP_CHAT, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":"
                          "1700000000,"
                          "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_1\","
                          "\"choices\":[{\"index\":0,"
                          "\"message\":{\"role\":\"assistant\",\"content\":\"Hello "
                          "\\u00e9\\n world\"},"
                          "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,"
                          "\"completion_tokens\":3,\"total_tokens\":12}}");
    /* parallel tool calls, no content */
    roundtrip(SY_EP_CHAT, "{\"id\":\"chatcmpl-2\",\"object\":\"chat.completion\",\"created\":"
                          "1700000000,"
                          "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                          "\"assistant\","
                          "\"content\":null,\"tool_calls\":[{\"id\":\"call_a\",\"type\":"
                          "\"function\","
                          "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{"
                          "\\\"city\\\":\\\"Paris\\\"}\"}},"
                          "{\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":"
                          "\"get_time\","
                          "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],"
                          "\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":10,\"total_"
                          "tokens\":30}}");
    /* content and a tool call */
    roundtrip(SY_EP_CHAT, "{\"id\":\"chatcmpl-3\",\"object\":\"chat.completion\",\"created\":"
                          "1700000000,"
                          "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                          "\"assistant\","
                          "\"content\":\"Let me "
                          "check.\",\"tool_calls\":[{\"id\":\"call_a\",\"type\":"
                          "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                          "\"finish_reason\":\"tool_calls\"}]}");
    /* refusal */
    roundtrip(SY_EP_CHAT, "{\"id\":\"chatcmpl-4\",\"object\":\"chat.completion\",\"created\":"
                          "1700000000,"
                          "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                          "\"assistant\","
                          "\"content\":null,\"refusal\":\"I can't help with that.\"},"
                          "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,"
                          "\"completion_tokens\":1,\"total_tokens\":2}}");
    /* n = 2, length */
    roundtrip(SY_EP_CHAT, "{\"id\":\"chatcmpl-5\",\"object\":\"chat.completion\","
                          "\"created\":1700000000,"
                          "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":"
                          "{\"role\":\"assistant\","
                          "\"content\":\"one\"},\"finish_reason\":\"stop\"},{"
                          "\"index\":1,\"message\":"
                          "{\"role\":\"assistant\",\"content\":\"two "
                          "two\"},\"finish_reason\":\"length\"}],"
                          "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":"
                          "4,\"total_tokens\":5}}");
    /* empty content */
    roundtrip(SY_EP_CHAT, "{\"id\":\"chatcmpl-6\",\"object\":\"chat.completion\","
                          "\"created\":1700000000,"
                          "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":"
                          "{\"role\":\"assistant\","
                          "\"content\":\"\"},\"finish_reason\":\"stop\"}]}");
    /* legacy completions */
    roundtrip(SY_EP_COMPLETIONS, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":"
                                 "1700000000,"
                                 "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"once "
                                 "upon\",\"logprobs\":null,"
                                 "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":2,"
                                 "\"completion_tokens\":2,\"total_tokens\":4}}");
}

/* Fragments the way OpenAI and local servers send them. */
static const char *const openai_stream[] = {
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_9\",\"choices\":[{"
    "\"index\":0,\"delta\":"
    "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":"
    "null,"
    "\"finish_reason\":null}],\"usage\":null}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"It \"},"
    "\"logprobs\":{\"content\":[{\"token\":\"It\",\"logprob\":-0.1,\"bytes\":["
    "73,116],"
    "\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":null}],"
    "\"usage\":null}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"is sunny.\"},"
    "\"logprobs\":{\"content\":[{\"token\":\" "
    "is\",\"logprob\":-0.2,\"bytes\":[32,105,115],"
    "\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":null}],"
    "\"usage\":null}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
    "{\"index\":0,"
    "\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_"
    "weather\","
    "\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
    "{\"index\":0,"
    "\"function\":{\"arguments\":\"{\\\"loc\"}}]},\"logprobs\":null,\"finish_"
    "reason\":null}]}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
    "{\"index\":1,"
    "\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_"
    "time\","
    "\"arguments\":\"{}\"}}]},\"logprobs\":null,\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
    "{\"index\":0,"
    "\"id\":\"call_1\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
    "\"\\\":\\\"Paris\\\"}\"}}]},"
    "\"logprobs\":null,\"finish_reason\":null}]}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":"
    "null,"
    "\"finish_reason\":\"tool_calls\"}],\"usage\":null}",
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
    "\"completion_tokens\":7,"
    "\"total_tokens\":12}}",
    "[DONE]",
};

static const char *openai_stream_answer =
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion\",\"created\":"
    "1700000001,"
    "\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp_9\",\"choices\":[{"
    "\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"It is "
    "sunny.\",\"refusal\":null,\"tool_calls\":["
    "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_"
    "weather\","
    "\"arguments\":\"{\\\"loc\\\":\\\"Paris\\\"}\"}},{\"id\":\"call_2\","
    "\"type\":\"function\","
    "\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"logprobs\":"
    "{\"content\":["
    "{\"token\":\"It\",\"logprob\":-0.1,\"bytes\":[73,116],\"top_logprobs\":[]}"
    ",{\"token\":"
    "\" is\",\"logprob\":-0.2,\"bytes\":[32,105,115],\"top_logprobs\":[]}]},"
    "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":5,"
    "\"completion_tokens\":7,"
    "\"total_tokens\":12}}";

static void feed_all(sy_cache_acc *acc, const char *const *chunks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(sy_cache_acc_feed_data(acc, chunks[i], strlen(chunks[i])), SY_OK);
}

static void test_acc_openai_fragments(void **state)
{
    sy_cache_acc acc;
    json_t *ans = NULL, *want = J(openai_stream_answer);
    (void)state;

    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    feed_all(&acc, openai_stream, sizeof(openai_stream) / sizeof(openai_stream[0]));
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &ans), SY_OK);
    assert_json_equal(ans, want);
    /* finishing twice is refused: the accumulator is spent */
    json_t *again = NULL;
    assert_int_not_equal(sy_cache_acc_finish(&acc, true, NULL, &again), SY_OK);
    assert_null(again);
    json_decref(ans);
    sy_cache_acc_cleanup(&acc);

    /* the relay's usage wins over the usage chunk */
    json_t *u = J("{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}");
    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    feed_all(&acc, openai_stream, sizeof(openai_stream) / sizeof(openai_stream[0]));
    assert_int_equal(sy_cache_acc_finish(&acc, true, u, &ans), SY_OK);
    assert_json_equal(json_object_get(ans, "usage"), u);
    json_decref(ans);
    json_decref(u);
    sy_cache_acc_cleanup(&acc);
    json_decref(want);

    /* reasoning deltas (vLLM, DeepSeek) accumulate into message.reasoning_content; an Ollama style
     * stream without ids per chunk, n=2 interleaved */
    static const char *const reasoning[] = {
        "{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"r1\","
        "\"created\":5,"
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_"
        "content\":"
        "\"think\"}},{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":"
        "\"B\"}}]}",
        "{\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_"
        "content\":\"ing\"}}]}",
        "{\"id\":\"x\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},"
        "\"finish_reason\":\"stop\"},{\"index\":0,\"delta\":{\"content\":\"A\"}}]"
        "}",
        "{\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
        "\"length\"}]}",
        "{\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
        "\"assistant\"}}]}",
    };
    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    feed_all(&acc, reasoning, sizeof(reasoning) / sizeof(reasoning[0]));
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &ans), SY_OK);
    want = J("{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":5,\"model\":"
             "\"r1\","
             "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
             "\"content\":\"A\","
             "\"refusal\":null,\"reasoning_content\":\"thinking\"},\"logprobs\":null,"
             "\"finish_reason\":\"length\"},{\"index\":1,\"message\":{\"role\":"
             "\"assistant\","
             "\"content\":\"Bb\",\"refusal\":null},\"logprobs\":null,\"finish_"
             "reason\":"
             "\"stop\"}]}");
    assert_json_equal(ans, want);
    json_decref(ans);
    json_decref(want);
    sy_cache_acc_cleanup(&acc);
}

static void test_acc_completions_logprobs(void **state)
{
    static const char *const chunks[] = {
        "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":3,"
        "\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"text\":\"Hel\",\"logprobs\":{\"tokens\":["
        "\"Hel\"],"
        "\"token_logprobs\":[-0.5],\"top_logprobs\":null,\"text_offset\":[0]},"
        "\"finish_reason\":null}]}",
        "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":3,"
        "\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"text\":\"lo\",\"logprobs\":{\"tokens\":["
        "\"lo\"],"
        "\"token_logprobs\":[-0.25],\"top_logprobs\":null,\"text_offset\":[3]},"
        "\"finish_reason\":\"stop\"}]}",
        "[DONE]",
    };
    sy_cache_acc acc;
    json_t *ans = NULL;
    (void)state;

    sy_cache_acc_init(&acc, SY_EP_COMPLETIONS, 0);
    feed_all(&acc, chunks, 3);
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &ans), SY_OK);
    json_t *want = J("{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":3,"
                     "\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hello\","
                     "\"logprobs\":"
                     "{\"tokens\":[\"Hel\",\"lo\"],\"token_logprobs\":[-0.5,-0.25],"
                     "\"text_offset\":[0,3]},\"finish_reason\":\"stop\"}]}");
    assert_json_equal(ans, want);
    json_decref(want);
    json_decref(ans);
    sy_cache_acc_cleanup(&acc);

    /* chat chunks are refused by a completions accumulator and the other way round */
    sy_cache_acc_init(&acc, SY_EP_COMPLETIONS, 0);
    assert_int_equal(sy_cache_acc_feed_data(&acc, openai_stream[0], strlen(openai_stream[0])),
                     SY_EINVAL);
    sy_cache_acc_cleanup(&acc);
    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    assert_int_equal(sy_cache_acc_feed_data(&acc, chunks[0], strlen(chunks[0])), SY_EINVAL);
    sy_cache_acc_cleanup(&acc);
    sy_cache_acc_init(&acc, SY_EP_EMBEDDINGS, 0);
    assert_int_equal(sy_cache_acc_feed_data(&acc, "[DONE]", 6), SY_EINVAL);
    sy_cache_acc_cleanup(&acc);
}

#define CH(delta, finish)                                                                          \
    "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\","                          \
    "\"created\":1,"                                                                               \
    "\"choices\":[{\"index\":0,\"delta\":" delta ",\"finish_reason\":" finish "}]}"

static void test_acc_refuses_inconsistent(void **state)
{
    static const struct {
        const char *chunks[4];
        bool completed;
        sy_err want; /* from the first failing feed, or from finish */
    } cases[] = {
        /* envelope */
        {{CH("{\"content\":\"a\"}", "null"),
          "{\"id\":\"other\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
          "\"b\"}}]}"},
         true,
         SY_EINVAL},
        {{CH("{\"content\":\"a\"}", "null"), "{\"id\":\"c\",\"model\":\"other\",\"choices\":[]}"},
         true,
         SY_EINVAL},
        {{"{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":[]}"}, true, SY_EINVAL},
        {{"[1,2]"}, true, SY_EINVAL},
        {{"{not json"}, true, SY_EINVAL},
        {{"{\"choices\":\"x\"}"}, true, SY_EINVAL},
        {{"{\"choices\":[1]}"}, true, SY_EINVAL},
        {{"{\"choices\":[],\"usage\":5}"}, true, SY_EINVAL},
        /* choice indexes */
        {{"{\"choices\":[{\"delta\":{}}]}"}, true, SY_EINVAL},
        {{"{\"choices\":[{\"index\":-1,\"delta\":{}}]}"}, true, SY_EINVAL},
        {{"{\"choices\":[{\"index\":128,\"delta\":{}}]}"}, true, SY_EINVAL},
        {{"{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"},\"finish_"
          "reason\":\"stop\"}]}"},
         true,
         SY_EINVAL}, /* index 0 never seen */
        /* after finish */
        {{CH("{\"content\":\"a\"}", "\"stop\""), CH("{\"content\":\"b\"}", "null")},
         true,
         SY_EINVAL},
        {{CH("{\"content\":\"a\"}", "\"stop\""), CH("{}", "\"stop\"")}, true, SY_EINVAL},
        {{CH("{\"content\":\"a\"}", "\"stop\""),
          CH("{\"tool_calls\":[{\"index\":0,\"id\":\"x\",\"function\":{\"name\":"
             "\"f\"}}]}",
             "null")},
         true,
         SY_EINVAL},
        {{CH("{\"content\":\"a\"}", "\"stop\""), "[DONE]", CH("{}", "null")}, true, SY_EINVAL},
        {{CH("{\"content\":\"a\"}", "\"stop\""), "[DONE]", "[DONE]"}, true, SY_EINVAL},
        /* deltas */
        {{CH("{\"role\":\"user\"}", "null")}, true, SY_EINVAL},
        {{CH("{\"content\":5}", "null")}, true, SY_EINVAL},
        {{CH("[]", "null")}, true, SY_EINVAL},
        {{CH("{\"content\":\"a\"}", "5")}, true, SY_EINVAL},
        {{CH("{\"function_call\":{\"name\":\"f\",\"arguments\":\"{}\"}}", "null")},
         true,
         SY_EUNSUPPORTED},
        {{CH("{\"audio\":{\"id\":\"a\"}}", "null")}, true, SY_EUNSUPPORTED},
        {{CH("{\"reasoning\":\"a\"}", "null"), CH("{\"reasoning_content\":\"b\"}", "null")},
         true,
         SY_EUNSUPPORTED},
        /* tool calls */
        {{CH("{\"tool_calls\":[{\"id\":\"x\",\"function\":{\"name\":\"f\"}}]}", "null")},
         true,
         SY_EINVAL}, /* no index */
        {{CH("{\"tool_calls\":[{\"index\":200,\"id\":\"x\"}]}", "null")}, true, SY_EINVAL},
        {{CH("{\"tool_calls\":{}}", "null")}, true, SY_EINVAL},
        {{CH("{\"tool_calls\":[5]}", "null")}, true, SY_EINVAL},
        {{CH("{\"tool_calls\":[{\"index\":0,\"id\":\"x\",\"function\":{\"name\":"
             "\"f\"}}]}",
             "null"),
          CH("{\"tool_calls\":[{\"index\":0,\"id\":\"y\"}]}", "null")},
         true,
         SY_EINVAL},
        {{CH("{\"tool_calls\":[{\"index\":0,\"id\":\"x\",\"function\":{\"name\":"
             "\"f\"}}]}",
             "null"),
          CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"g\"}}]}", "null")},
         true,
         SY_EINVAL},
        {{CH("{\"tool_calls\":[{\"index\":0,\"id\":\"x\",\"function\":{"
             "\"arguments\":{}}}]}",
             "null")},
         true,
         SY_EINVAL},
        {{CH("{\"tool_calls\":[{\"index\":1,\"id\":\"x\",\"function\":{\"name\":"
             "\"f\"}}]}",
             "\"tool_calls\"")},
         true,
         SY_EINVAL}, /* gap: index 0 missing */
        {{CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\"}}]}", "\"tool_calls\"")},
         true,
         SY_EINVAL}, /* no id */
        {{CH("{\"tool_calls\":[{\"index\":0,\"id\":\"x\"}]}", "\"tool_calls\"")},
         true,
         SY_EINVAL}, /* no name */
        /* logprobs */
        {{CH("{\"content\":\"a\"}", "null"),
          "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":5}]"
          "}"},
         true,
         SY_EINVAL},
        {{"{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":{"
          "\"content\":5}}]}"},
         true,
         SY_EUNSUPPORTED},
        /* errors and endings */
        {{CH("{\"content\":\"a\"}", "null"),
          "{\"error\":{\"message\":\"overloaded\",\"type\":\"api_error\"}}"},
         true,
         SY_EUPSTREAM},
        {{CH("{\"content\":\"a\"}", "null")}, true, SY_EINVAL},      /* no finish_reason */
        {{CH("{\"content\":\"a\"}", "\"stop\"")}, false, SY_EINVAL}, /* not completed */
        {{"{\"id\":\"c\",\"choices\":[],\"usage\":{\"total_tokens\":1}}"}, true, SY_EINVAL},
        {{NULL}, true, SY_EINVAL}, /* nothing at all */
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sy_cache_acc acc;
        json_t *ans = NULL;
        sy_err rc = SY_OK;
        sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
        for (int j = 0; j < 4 && cases[i].chunks[j] != NULL && rc == SY_OK; j++)
            rc = sy_cache_acc_feed_data(&acc, cases[i].chunks[j], strlen(cases[i].chunks[j]));
        if (rc != SY_OK) {
            /* sticky: later feeds and finish report the same error */
            assert_int_equal(sy_cache_acc_feed_data(&acc, "[DONE]", 6), rc);
            assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &ans), rc);
        } else {
            rc = sy_cache_acc_finish(&acc, cases[i].completed, NULL, &ans);
        }
        if (rc != cases[i].want)
            fail_msg("case %zu: got %s, want %s", i, sy_err_name(rc), sy_err_name(cases[i].want));
        assert_null(ans);
        sy_cache_acc_cleanup(&acc);
    }
}

static void test_acc_cap(void **state)
{
    sy_cache_acc acc;
    json_t *ans = NULL;
    (void)state;

    sy_cache_acc_init(&acc, SY_EP_CHAT, 10);
    assert_int_equal(sy_cache_acc_feed_data(&acc, CH("{\"content\":\"12345\"}", "null"),
                                            strlen(CH("{\"content\":\"12345\"}", "null"))),
                     SY_OK);
    assert_int_equal(sy_cache_acc_feed_data(&acc, CH("{\"content\":\"67890\"}", "null"),
                                            strlen(CH("{\"content\":\"67890\"}", "null"))),
                     SY_OK);
    assert_int_equal(sy_cache_acc_feed_data(&acc, CH("{\"content\":\"!\"}", "\"stop\""),
                                            strlen(CH("{\"content\":\"!\"}", "\"stop\""))),
                     SY_ETOOBIG);
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &ans), SY_ETOOBIG);
    assert_null(ans);
    sy_cache_acc_cleanup(&acc);

    /* many fragments of one tool call's arguments grow one buffer */
    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    const char *open = CH("{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\","
                          "\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}",
                          "null");
    assert_int_equal(sy_cache_acc_feed_data(&acc, open, strlen(open)), SY_OK);
    const char *frag =
        CH("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ab\"}}]}", "null");
    for (int i = 0; i < 5000; i++)
        assert_int_equal(sy_cache_acc_feed_data(&acc, frag, strlen(frag)), SY_OK);
    const char *fin = CH("{}", "\"tool_calls\"");
    assert_int_equal(sy_cache_acc_feed_data(&acc, fin, strlen(fin)), SY_OK);
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &ans), SY_OK);
    json_t *tc = json_array_get(
        json_object_get(
            json_object_get(json_array_get(json_object_get(ans, "choices"), 0), "message"),
            "tool_calls"),
        0);
    assert_int_equal(
        json_string_length(json_object_get(json_object_get(tc, "function"), "arguments")), 10000);
    assert_true(json_is_null(json_object_get(
        json_object_get(json_array_get(json_object_get(ans, "choices"), 0), "message"),
        "content")));
    json_decref(ans);
    sy_cache_acc_cleanup(&acc);
}

/* ---- entries --------------------------------------------------------------------------------- */

static const char *chat_answer =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":"
    "1700000000,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
    "\"assistant\","
    "\"content\":\"Hello!\",\"refusal\":null},\"logprobs\":null,\"finish_"
    "reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":"
    "12}}";

static void make_entry(sy_cache_entry *e, const char *answer)
{
    json_t *a = J(answer);
    sy_cache_entry_init(e);
    sy_cache_entry_set(e, SY_EP_CHAT, a, "dep-a", 1700000000123LL, 4200);
    json_decref(a);
}

static void test_entry_codec(void **state)
{
    sy_cache_entry e, d;
    sy_buf b;
    const char *key = "{c:abc}";
    (void)state;

    make_entry(&e, chat_answer);
    sy_buf_init(&b, 1 << 20);
    assert_int_equal(sy_cache_entry_encode(&e, key, &b), SY_OK);
    sy_cache_entry_init(&d);
    assert_int_equal(sy_cache_entry_decode(b.data, b.len, key, &d), SY_OK);
    assert_int_equal(d.ep, SY_EP_CHAT);
    assert_json_equal(d.answer, e.answer);
    assert_string_equal(d.deployment, "dep-a");
    assert_int_equal(d.created_at_ms, 1700000000123LL);
    assert_int_equal(d.cost_micros, 4200);
    /* any key when NULL; another key is refused and leaves <out> alone */
    assert_int_equal(sy_cache_entry_decode(b.data, b.len, NULL, &d), SY_OK);
    assert_int_equal(sy_cache_entry_decode(b.data, b.len, "{c:abd}", &d), SY_EINVAL);
    assert_non_null(d.answer);
    assert_string_equal(d.deployment, "dep-a");

    static const char *const bad[] = {
        "",
        "null",
        "{}",
        "{\"v\":2,\"k\":\"{c:abc}\",\"ep\":\"chat\",\"created_at\":1,"
        "\"deployment\":\"\","
        "\"cost_micros\":-1,\"answer\":{}}",
        "{\"v\":1,\"k\":\"{c:abc}\",\"ep\":\"images\",\"created_at\":1,"
        "\"deployment\":\"\","
        "\"cost_micros\":-1,\"answer\":{}}",
        "{\"v\":1,\"k\":\"{c:abc}\",\"ep\":\"chat\",\"created_at\":1,"
        "\"deployment\":\"\","
        "\"cost_micros\":-1,\"answer\":[]}",
        "{\"v\":1,\"k\":\"{c:abc}\",\"ep\":\"chat\",\"created_at\":\"1\","
        "\"deployment\":\"\","
        "\"cost_micros\":-1,\"answer\":{}}",
        "{\"v\":1,\"k\":\"{c:abc}\",\"ep\":\"chat\",\"created_at\":1,"
        "\"deployment\":5,"
        "\"cost_micros\":-1,\"answer\":{}}",
        "{\"v\":1,\"k\":\"{c:abc}\",\"ep\":\"chat\",\"created_at\":1,"
        "\"deployment\":\"\","
        "\"answer\":{}}",
        "{\"v\":1,\"k\":\"{c:abc}\",\"ep\":\"chat\",\"created_at\":1,"
        "\"deployment\":\"\","
        "\"cost_micros\":-1,\"answer\":{}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sy_cache_entry_decode(bad[i], strlen(bad[i]), key, &d) != SY_EINVAL)
            fail_msg("bad entry %zu decoded", i);

    /* over the cap: SY_ETOOBIG and <out> keeps what it had */
    sy_buf small;
    sy_buf_init(&small, 64);
    assert_int_equal(sy_buf_appends(&small, "keep"), SY_OK);
    assert_int_equal(sy_cache_entry_encode(&e, key, &small), SY_ETOOBIG);
    assert_int_equal(small.len, 4);
    assert_string_equal(small.data, "keep");
    sy_buf_cleanup(&small);

    /* no answer */
    sy_cache_entry empty;
    sy_cache_entry_init(&empty);
    sy_buf_reset(&b);
    assert_int_equal(sy_cache_entry_encode(&empty, key, &b), SY_EINVAL);
    assert_int_equal(empty.cost_micros, -1);

    /* long deployment names are truncated, not overflowed */
    char longname[300];
    memset(longname, 'd', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    sy_cache_entry_set(&e, SY_EP_CHAT, e.answer, longname, 1, 2);
    assert_int_equal(strlen(e.deployment), SY_CACHE_NAME_MAX - 1);

    sy_buf_cleanup(&b);
    sy_cache_entry_cleanup(&d);
    sy_cache_entry_cleanup(&e);
    sy_cache_entry_cleanup(&e);
}

/* ---- the accumulator fed through the provider's stream observer --------------------------------
 * The relay feeds the accumulator the chunk objects the provider already built (no parse) and the
 * bytes of what it did not parse (plain deltas the OpenAI fast path relayed, [DONE], error bodies:
 * parsed once, by the accumulator). These tests run each upstream stream through the provider
 * once, feeding one accumulator from the observer and another from the client-bound bytes parsed
 * again (the path before the observer): both must agree on every outcome, and a stored answer must
 * be byte-identical. */

typedef struct obs_rec {
    sy_cache_acc acc;
    int chunks, datas; /* observer calls */
    int fast;          /* plain deltas the provider relayed without a parse */
    int frames;        /* client-bound SSE events */
} obs_rec;

static void obs_chunk(void *ud, const json_t *c)
{
    obs_rec *r = ud;
    r->chunks++;
    sy_cache_acc_feed(&r->acc, c);
}

static void obs_data(void *ud, const char *data, size_t len)
{
    obs_rec *r = ud;
    r->datas++;
    sy_cache_acc_feed_data(&r->acc, data, len);
}

static const sy_stream_observer test_obs = {obs_chunk, obs_data};

typedef struct up_event {
    const char *name; /* "" when unnamed */
    const char *data;
} up_event;

/* Runs <ev> through <prov>'s stream_event with the observer on; returns the observed outcome of
 * the finished accumulator (and the answer's dump in *dump_obs), and the same for the client
 * bytes re-parsed (*rc_reparse, *dump_reparse). */
static sy_err observe_vs_reparse(const sy_provider_ops *prov, sy_endpoint ep, bool client_usage,
                                 const up_event *ev, size_t n, obs_rec *rec, char **dump_obs,
                                 sy_err *rc_reparse, char **dump_reparse)
{
    sy_stream_fix f;
    sy_buf out;
    sy_cache_acc again;
    json_t *a1 = NULL, *a2 = NULL;

    memset(&f, 0, sizeof(f));
    memset(rec, 0, sizeof(*rec));
    f.client_usage = client_usage;
    f.obs = &test_obs;
    f.obs_ud = rec;
    sy_cache_acc_init(&rec->acc, ep, 0);
    sy_buf_init(&out, 1 << 22);
    for (size_t i = 0; i < n && !f.saw_done && !f.saw_error; i++)
        if (prov->stream_event(&f, ep, ev[i].name, ev[i].data, strlen(ev[i].data), &out) != SY_OK)
            break; /* the relay aborts the stream here */
    rec->fast = f.fast_chunks;
    for (size_t at = 0; at < out.len;) {
        const char *nl = memmem(out.data + at, out.len - at, "\n\n", 2);
        if (nl == NULL)
            break;
        rec->frames++;
        at = (size_t)(nl - out.data) + 2;
    }
    bool completed = f.saw_done && f.saw_finish && !f.saw_error;
    sy_err rc = sy_cache_acc_finish(&rec->acc, completed, f.usage, &a1);
    sy_cache_acc_init(&again, ep, 0);
    sy_err rc2 = feed_sse(&again, out.data != NULL ? out.data : "", out.len, NULL);
    if (rc2 == SY_OK)
        rc2 = sy_cache_acc_finish(&again, completed, f.usage, &a2);
    *rc_reparse = rc2;
    *dump_obs = a1 != NULL ? sy_json_dump(a1, NULL) : NULL;
    *dump_reparse = a2 != NULL ? sy_json_dump(a2, NULL) : NULL;
    json_decref(a1);
    json_decref(a2);
    sy_cache_acc_cleanup(&again);
    sy_cache_acc_cleanup(&rec->acc);
    sy_buf_cleanup(&out);
    sy_stream_fix_cleanup(&f);
    return rc;
}

/* Both ways agree; returns the observer's outcome. */
static sy_err agree(const sy_provider_ops *prov, sy_endpoint ep, bool client_usage,
                    const up_event *ev, size_t n, obs_rec *rec, char **dump)
{
    sy_err rc2;
    char *d1 = NULL, *d2 = NULL;
    sy_err rc = observe_vs_reparse(prov, ep, client_usage, ev, n, rec, &d1, &rc2, &d2);
    /* exactly one observer call per client-bound event */
    assert_int_equal(rec->chunks + rec->datas, rec->frames);
    if (rc != rc2)
        fail_msg("observer %s, re-parse %s (event 1: %s)", sy_err_name(rc), sy_err_name(rc2),
                 ev[n > 1].data);
    if (rc == SY_OK) {
        assert_non_null(d1);
        assert_non_null(d2);
        assert_string_equal(d1, d2);
    }
    free(d2);
    if (dump != NULL)
        *dump = d1;
    else
        free(d1);
    return rc;
}

#define OCH(body) "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":17,"      \
                  "\"model\":\"gpt-x\",\"system_fingerprint\":\"fp_1\"," body "}"
#define PLAIN(content_json)                                                                        \
    OCH("\"choices\":[{\"index\":0,\"delta\":{\"content\":" content_json "},\"logprobs\":null,"   \
        "\"finish_reason\":null}],\"usage\":null")

static const char HEAD[] = OCH("\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                               "\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
                               "\"finish_reason\":null}],\"usage\":null");
static const char FIN[] = OCH("\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                              "\"finish_reason\":\"stop\"}],\"usage\":null");
static const char USAGE[] = OCH("\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
                                "\"completion_tokens\":9,\"total_tokens\":12}");

static void test_acc_observer_openai(void **state)
{
    (void)state;
    const sy_provider_ops *prov = sy_provider_get(SY_PROVIDER_OPENAI);
    obs_rec rec;
    char *dump = NULL;
    const up_event stream[] = {
        {"", HEAD},
        {"", PLAIN("\"Hello\"")},
        {"", PLAIN("\", w\\u00f6rld\\n\\\"q\\\" \\/ \\t\\ud83d\\ude00 \xc3\xa9\"")},
        /* unknown members anywhere but in delta, whitespace, other key order */
        {"", "{ \"obfuscation\" : \"x{[\\\"\", \"choices\":[{\"finish_reason\":null,\"x\":[1,2.5,"
             "{\"y\":true}],\"delta\":{\"content\":\"!\",\"refusal\":null},\"index\":0}],"
             "\"model\":\"gpt-x\",\"created\":17,\"object\":\"chat.completion.chunk\","
             "\"id\":\"chatcmpl-7\",\"service_tier\":\"default\",\"usage\":null}"},
        {"", PLAIN("\"\"")},
        {"", FIN},
        {"", USAGE},
        {"", "[DONE]"},
    };
    size_t n = sizeof(stream) / sizeof(stream[0]);
    for (int cu = 0; cu < 2; cu++) {
        assert_int_equal(agree(prov, SY_EP_CHAT, cu, stream, n, &rec, &dump), SY_OK);
        /* the provider relayed the 4 plain deltas without a parse and handed their bytes over
         * (the accumulator parses each once); the chunks it parsed and fixed up (role, finish,
         * usage) went as objects, not parsed again */
        assert_int_equal(rec.fast, 4);
        assert_int_equal(rec.datas, 5); /* the plain deltas and [DONE] */
        assert_int_equal(rec.chunks, cu ? 3 : 2);
        json_t *ans = J(dump);
        assert_string_equal(
            json_string_value(json_object_get(
                json_object_get(json_array_get(json_object_get(ans, "choices"), 0), "message"),
                "content")),
            "Hello, w\xc3\xb6rld\n\"q\" / \t\xf0\x9f\x98\x80 \xc3\xa9!");
        assert_string_equal(json_string_value(json_object_get(ans, "service_tier")), "default");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(ans, "usage"),
                                                            "total_tokens")),
                         12);
        json_decref(ans);
        free(dump);
    }

    /* inconsistent streams are refused both ways, relayed as plain deltas or not */
    const char *bad[] = {
        "{\"id\":\"other\",\"object\":\"chat.completion.chunk\",\"created\":17,\"model\":\"gpt-x\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}",
        "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":17,\"model\":"
        "\"other\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":"
        "null}]}",
        "{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":17,\"model\":"
        "\"gpt-x\",\"choices\":[{\"index\":200,\"delta\":{\"content\":\"x\"},\"finish_reason\":"
        "null}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const up_event s[] = {{"", HEAD}, {"", bad[i]}, {"", FIN}, {"", "[DONE]"}};
        assert_int_equal(agree(prov, SY_EP_CHAT, false, s, 4, &rec, NULL), SY_EINVAL);
    }
    /* content after finish_reason */
    const up_event late[] = {{"", HEAD}, {"", FIN}, {"", PLAIN("\"late\"")}, {"", "[DONE]"}};
    assert_int_equal(agree(prov, SY_EP_CHAT, false, late, 4, &rec, NULL), SY_EINVAL);
    assert_int_equal(rec.fast, 1);
    /* an error event ends it */
    const up_event err[] = {{"", HEAD},
                            {"", PLAIN("\"a\"")},
                            {"", "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}"}};
    assert_int_not_equal(agree(prov, SY_EP_CHAT, false, err, 3, &rec, NULL), SY_OK);
    assert_int_equal(rec.chunks, 1);
    assert_int_equal(rec.datas, 2); /* the plain delta and the error body */

    /* fuzz: byte mutations of a plain delta; whatever the fast path relays (the observer gets its
     * upstream bytes, the re-parse the client's), the two agree */
    const char *base = PLAIN("\"a\\u00e9\\ud83d\\ude00 b\\\"\"");
    size_t blen = strlen(base);
    char *m = malloc(blen + 1);
    static const char alphabet[] = "\"\\{}[]:,0123456789aeu nlt\x80\xc3\xa9\xff";
    uint32_t seed = 12345;
    int relayed = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(m, base, blen + 1);
        int muts = 1 + iter % 3;
        for (int k = 0; k < muts; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % blen;
            seed = seed * 1103515245u + 12345u;
            m[at] = alphabet[(seed >> 8) % (sizeof(alphabet) - 1)];
        }
        const up_event s[] = {{"", HEAD}, {"", m}, {"", FIN}, {"", USAGE}, {"", "[DONE]"}};
        agree(prov, SY_EP_CHAT, iter % 2, s, 5, &rec, NULL);
        assert_true(rec.datas == rec.fast || rec.datas == rec.fast + 1); /* + [DONE] */
        relayed += rec.fast;
    }
    assert_true(relayed > 100); /* the mutations did reach the fast path */
    free(m);
}

static void test_acc_observer_anthropic(void **state)
{
    (void)state;
    const sy_provider_ops *prov = sy_provider_get(SY_PROVIDER_ANTHROPIC);
    obs_rec rec;
    char *dump = NULL;
    const up_event stream[] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":"
                          "\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\","
                          "\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                                "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"text_delta\",\"text\":\"Hi \\u00e9\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
                                "{\"type\":\"tool_use\",\"id\":\"toolu_A\",\"name\":\"f\","
                                "\"input\":{}}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
                                "\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
                          "\"usage\":{\"output_tokens\":9}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    size_t n = sizeof(stream) / sizeof(stream[0]);
    for (int cu = 0; cu < 2; cu++) {
        assert_int_equal(agree(prov, SY_EP_CHAT, cu, stream, n, &rec, &dump), SY_OK);
        assert_int_equal(rec.datas, 1); /* [DONE] */
        assert_int_equal(rec.fast, 0);
        assert_int_equal(rec.chunks, cu ? 6 : 5);
        assert_non_null(strstr(dump, "\"arguments\":\"{\\\"a\\\":1}\""));
        free(dump);
    }
    const up_event err[] = {stream[0], stream[1],
                            {"error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                                      "\"message\":\"busy\"}}"}};
    assert_int_not_equal(agree(prov, SY_EP_CHAT, false, err, 3, &rec, NULL), SY_OK);
    assert_int_equal(rec.datas, 1); /* the error event */
}

/* ---- store operations ------------------------------------------------------------------------ */

static atomic_llong fake_now = 1700000000000LL;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return atomic_load(&fake_now);
}

static sy_store *mem_store(size_t max_value_bytes)
{
    sy_store_opts o;
    sy_store *s = NULL;
    sy_store_opts_init(&o);
    o.mem.clock = fake_clock;
    if (max_value_bytes)
        o.mem.max_value_bytes = max_value_bytes;
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    return s;
}

static void test_put_get_mem(void **state)
{
    sy_store *s = mem_store(0);
    sy_cache_entry e, got;
    char key[SY_CACHE_KEY_SIZE];
    (void)state;

    chat_key(BASE_BODY, key);
    make_entry(&e, chat_answer);
    sy_cache_entry_init(&got);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_MISS);
    assert_null(got.answer);
    assert_int_equal(sy_cache_put(s, key, &e, 60, 1 << 20), SY_CACHE_STORED);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_HIT);
    assert_json_equal(got.answer, e.answer);
    assert_string_equal(got.deployment, "dep-a");
    assert_int_equal(got.cost_micros, 4200);
    /* the endpoint must match */
    assert_int_equal(sy_cache_get(s, key, SY_EP_COMPLETIONS, &got), SY_CACHE_CORRUPT);
    assert_non_null(got.answer); /* untouched */

    /* TTL on the store's clock */
    atomic_fetch_add(&fake_now, 59000);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_HIT);
    atomic_fetch_add(&fake_now, 1001);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_MISS);

    /* oversize entries are not stored */
    assert_int_equal(sy_cache_put(s, key, &e, 60, 100), SY_CACHE_TOOBIG);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_MISS);
    /* 0 = only the store's cap */
    assert_int_equal(sy_cache_put(s, key, &e, 60, 0), SY_CACHE_STORED);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_HIT);

    /* an entry for another key, or garbage, is never served */
    char other[SY_CACHE_KEY_SIZE];
    chat_key("{\"other\":1}", other);
    sy_buf b;
    sy_buf_init(&b, 1 << 20);
    assert_int_equal(sy_cache_entry_encode(&e, key, &b), SY_OK);
    assert_int_equal(sy_store_set(s, other, b.data, b.len, 60000, 0, NULL), SY_OK);
    assert_int_equal(sy_cache_get(s, other, SY_EP_CHAT, &got), SY_CACHE_CORRUPT);
    assert_int_equal(sy_store_set(s, other, "garbage", 7, 60000, 0, NULL), SY_OK);
    assert_int_equal(sy_cache_get(s, other, SY_EP_CHAT, &got), SY_CACHE_CORRUPT);
    sy_buf_cleanup(&b);

    /* bad arguments */
    assert_int_equal(sy_cache_put(s, key, &e, 0, 0), SY_CACHE_INVALID);
    assert_int_equal(sy_cache_put(s, "", &e, 60, 0), SY_CACHE_INVALID);
    assert_int_equal(sy_cache_get(s, "", SY_EP_CHAT, &got), SY_CACHE_INVALID);
    sy_cache_entry none;
    sy_cache_entry_init(&none);
    assert_int_equal(sy_cache_put(s, key, &none, 60, 0), SY_CACHE_INVALID);
    /* a huge TTL does not overflow */
    assert_int_equal(sy_cache_put(s, key, &e, 0x7fffffffL, 0), SY_CACHE_STORED);
    int64_t ttl;
    assert_int_equal(sy_store_ttl(s, key, &ttl), SY_OK);
    assert_true(ttl > 0);

    sy_cache_entry_cleanup(&got);
    sy_cache_entry_cleanup(&e);
    sy_store_free(s);

    /* the store's own value cap */
    s = mem_store(128);
    make_entry(&e, chat_answer);
    assert_int_equal(sy_cache_put(s, key, &e, 60, 0), SY_CACHE_TOOBIG);
    sy_cache_entry_cleanup(&e);
    sy_store_free(s);
}

static sy_store *redis_store(int port, long timeout_ms)
{
    char json[256];
    sy_store_opts o;
    sy_errlist errs;
    sy_store *s = NULL;
    (void)snprintf(json, sizeof(json), "{\"url\":\"redis://127.0.0.1:%d/0\",\"timeout_ms\":%ld}",
                   port, timeout_ms);
    json_t *j = J(json);
    sy_store_opts_init(&o);
    sy_errlist_init(&errs);
    assert_int_equal(sy_store_config_parse(j, &o, &errs), SY_OK);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    json_decref(j);
    return s;
}

static bool wait_healthy(sy_store *s, bool want, long ms)
{
    for (int64_t end = rh_mono_ms() + ms; rh_mono_ms() < end; rh_nap(10))
        if (sy_store_healthy(s) == want)
            return true;
    return sy_store_healthy(s) == want;
}

/* Store errors are misses, never failures; hits resume after Redis comes back. */
static void test_put_get_redis_outage(void **state)
{
    redis_srv srv = {0};
    sy_cache_entry e, got;
    char key[SY_CACHE_KEY_SIZE];
    (void)state;

    if (rh_find_server() == NULL) {
        print_message("redis-server not found: skipped\n");
        skip();
    }
    assert_true(rh_start(&srv));
    sy_store *s = redis_store(srv.port, 50);
    assert_true(wait_healthy(s, true, 5000));
    chat_key(BASE_BODY, key);
    make_entry(&e, chat_answer);
    sy_cache_entry_init(&got);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_MISS);
    assert_int_equal(sy_cache_put(s, key, &e, 60, 1 << 20), SY_CACHE_STORED);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_HIT);
    assert_json_equal(got.answer, e.answer);
    /* an entry removed behind the proxy's back is a miss */
    assert_true(rh_cmd(&srv, "FLUSHALL"));
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_MISS);
    assert_int_equal(sy_cache_put(s, key, &e, 60, 1 << 20), SY_CACHE_STORED);

    rh_signal(&srv, SIGKILL);
    int64_t t0 = rh_mono_ms();
    for (int i = 0; i < 20; i++) {
        assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_STORE_ERROR);
        assert_int_equal(sy_cache_put(s, key, &e, 60, 0), SY_CACHE_STORE_ERROR);
    }
    assert_true(rh_mono_ms() - t0 < 2000);
    assert_false(sy_store_healthy(s));

    assert_true(rh_start(&srv)); /* same port; no persistence */
    assert_true(wait_healthy(s, true, 5000));
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_MISS);
    assert_int_equal(sy_cache_put(s, key, &e, 60, 0), SY_CACHE_STORED);
    assert_int_equal(sy_cache_get(s, key, SY_EP_CHAT, &got), SY_CACHE_HIT);

    sy_cache_entry_cleanup(&got);
    sy_cache_entry_cleanup(&e);
    sy_store_free(s);
    rh_stop(&srv);
}

/* ---- replay ---------------------------------------------------------------------------------- */

static void test_replay(void **state)
{
    sy_cache_entry e;
    sy_cache_replay o = {
        .req_id = "req_0000010000000001", .now_s = 1800000000, .client_usage = true};
    char *body = NULL;
    size_t len = 0;
    (void)state;

    make_entry(&e, openai_stream_answer);
    /* sy_openai_to_sse does not replay logprobs; leave them out of the round trip */
    json_object_set_new(json_array_get(json_object_get(e.answer, "choices"), 0), "logprobs",
                        json_null());
    assert_int_equal(sy_cache_replay_json(&e, &o, &body, &len), SY_OK);
    json_t *j = json_loadb(body, len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")),
                        "chatcmpl-req_0000010000000001");
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 1800000000);
    /* everything else is the original */
    json_t *want = json_deep_copy(e.answer);
    json_object_set(want, "id", json_object_get(j, "id"));
    json_object_set(want, "created", json_object_get(j, "created"));
    assert_json_equal(j, want);
    json_decref(want);
    json_decref(j);
    free(body);

    /* NULL options keep the original id and created */
    json_t *same = sy_cache_replay_answer(&e, NULL);
    assert_json_equal(same, e.answer);
    json_decref(same);

    /* SSE: role first, usage chunk only when asked, [DONE] last; it reassembles to the answer */
    sy_buf sse;
    sy_buf_init(&sse, 1 << 20);
    assert_int_equal(sy_cache_replay_sse(&e, &o, &sse), SY_OK);
    assert_non_null(strstr(sse.data, "\"usage\":{"));
    assert_true(sse.len > 14 && strcmp(sse.data + sse.len - 14, "data: [DONE]\n\n") == 0);
    sy_cache_acc acc;
    sse_feed f;
    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    assert_int_equal(feed_sse(&acc, sse.data, sse.len, &f), SY_OK);
    assert_true(f.first_has_role);
    json_t *back = NULL;
    assert_int_equal(sy_cache_acc_finish(&acc, true, NULL, &back), SY_OK);
    json_t *fresh = sy_cache_replay_answer(&e, &o);
    assert_json_equal(back, fresh);
    json_decref(fresh);
    json_decref(back);
    sy_cache_acc_cleanup(&acc);

    o.client_usage = false;
    sy_buf_reset(&sse);
    assert_int_equal(sy_cache_replay_sse(&e, &o, &sse), SY_OK);
    assert_null(strstr(sse.data, "\"usage\""));
    sy_buf_cleanup(&sse);
    sy_cache_entry_cleanup(&e);

    /* completions get a cmpl- id */
    json_t *c = J("{\"id\":\"cmpl-x\",\"object\":\"text_completion\",\"created\":"
                  "1,\"model\":\"m\","
                  "\"choices\":[{\"index\":0,\"text\":\"t\",\"logprobs\":null,"
                  "\"finish_reason\":\"stop\"}]}");
    sy_cache_entry_init(&e);
    sy_cache_entry_set(&e, SY_EP_COMPLETIONS, c, NULL, 1, -1);
    json_t *r = sy_cache_replay_answer(&e, &o);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "cmpl-req_0000010000000001");
    json_decref(r);
    sy_buf_init(&sse, 1 << 20);
    assert_int_equal(sy_cache_replay_sse(&e, &o, &sse), SY_OK);
    assert_non_null(strstr(sse.data, "\"text_completion\""));
    sy_buf_cleanup(&sse);
    json_decref(c);
    sy_cache_entry_cleanup(&e);

    /* embeddings: no stream; base64 when asked */
    json_t *emb = J("{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                    "\"embedding\":[0.5,-1.0]}],\"model\":\"e\",\"usage\":{\"prompt_"
                    "tokens\":1,"
                    "\"total_tokens\":1}}");
    sy_cache_entry_init(&e);
    sy_cache_entry_set(&e, SY_EP_EMBEDDINGS, emb, NULL, 1, -1);
    sy_buf_init(&sse, 1024);
    assert_int_equal(sy_cache_replay_sse(&e, &o, &sse), SY_EINVAL);
    sy_buf_cleanup(&sse);
    o.embed_b64 = true;
    r = sy_cache_replay_answer(&e, &o);
    json_t *v = json_object_get(json_array_get(json_object_get(r, "data"), 0), "embedding");
    assert_true(json_is_string(v));
    json_t *floats = sy_json_b64_to_floats(json_string_value(v), json_string_length(v));
    assert_json_equal(
        floats, json_object_get(json_array_get(json_object_get(emb, "data"), 0), "embedding"));
    assert_null(json_object_get(r, "id"));
    json_decref(floats);
    json_decref(r);
    json_decref(emb);
    sy_cache_entry_cleanup(&e);
}

/* ---- embeddings ------------------------------------------------------------------------------ */

/* A fake upstream answer for <body>'s inputs: vector [i, len(input)] for the i-th input. */
static json_t *fake_embed_answer(const json_t *body, bool b64)
{
    const json_t *in = json_object_get(body, "input");
    json_t *list = json_is_array(in) && !json_is_integer(json_array_get(in, 0))
                       ? json_incref((json_t *)in)
                       : json_pack("[O]", in);
    json_t *data = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x)
    {
        double len = json_is_string(x) ? (double)json_string_length(x) : (double)json_array_size(x);
        json_t *vec = json_pack("[f,f]", len, len / 2);
        if (b64) {
            json_t *s = sy_json_floats_to_b64(vec);
            json_decref(vec);
            vec = s;
        }
        json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                                              (json_int_t)i, "embedding", vec));
    }
    json_decref(list);
    return json_pack("{s:s,s:o,s:s,s:{s:i,s:i}}", "object", "list", "data", data, "model", "emb-up",
                     "usage", "prompt_tokens", 7, "total_tokens", 7);
}

static void test_embeddings(void **state)
{
    sy_store *s = mem_store(0);
    sy_cache_embed ce;
    json_t *body = J("{\"model\":\"e\",\"input\":[\"aa\",\"bbb\",\"aa\"],"
                     "\"encoding_format\":\"base64\"}");
    sy_cache_key_in in = {SY_EP_EMBEDDINGS, "r", "emb", "t", body};
    json_t *mb = NULL, *resp = NULL, *ans = NULL;
    size_t stored = 0;
    (void)state;

    /* first request: all miss; duplicates go upstream once */
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_OK);
    assert_int_equal(ce.n, 3);
    assert_int_equal(ce.nmiss, 2);
    assert_string_equal(ce.keys[0], ce.keys[2]);
    assert_string_not_equal(ce.keys[0], ce.keys[1]);
    assert_int_equal(sy_cache_embed_lookup(s, &ce), SY_CACHE_MISS);
    assert_int_equal(ce.nmiss, 2);
    assert_int_equal(ce.nhit, 0);
    assert_int_equal(sy_cache_embed_miss_body(&ce, body, &mb), SY_OK);
    json_t *want_in = J("[\"aa\",\"bbb\"]");
    assert_json_equal(json_object_get(mb, "input"), want_in);
    json_decref(want_in);
    assert_string_equal(json_string_value(json_object_get(mb, "encoding_format")), "base64");
    resp = fake_embed_answer(mb, true); /* base64 answers are accepted too */
    assert_int_equal(sy_cache_embed_fill(&ce, resp), SY_OK);
    assert_int_equal(ce.nmiss, 0);
    assert_int_equal(sy_cache_embed_put(s, &ce, "emb-up", "dep", 1, 60, 0, &stored),
                     SY_CACHE_STORED);
    assert_int_equal(stored, 2);
    assert_int_equal(sy_cache_embed_answer(&ce, resp, false, &ans), SY_OK);
    json_t *want = J("{\"object\":\"list\",\"model\":\"emb-up\",\"usage\":{\"prompt_"
                     "tokens\":7,"
                     "\"total_tokens\":7},\"data\":[{\"object\":\"embedding\",\"index\":0,"
                     "\"embedding\":[2.0,1.0]},{\"object\":\"embedding\",\"index\":1,"
                     "\"embedding\":[3.0,1.5]},{\"object\":\"embedding\",\"index\":2,"
                     "\"embedding\":[2.0,1.0]}]}");
    assert_json_equal(ans, want);
    json_decref(want);
    json_decref(ans);
    json_decref(resp);
    json_decref(mb);
    sy_cache_embed_cleanup(&ce);

    /* second request: one hit, one miss; only the miss goes upstream, in its original form */
    json_decref(body);
    body = J("{\"model\":\"e\",\"input\":[\"cccc\",\"bbb\"]}");
    in.body = body;
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_OK);
    assert_int_equal(sy_cache_embed_lookup(s, &ce), SY_CACHE_MISS);
    assert_int_equal(ce.nmiss, 1);
    assert_int_equal(ce.nhit, 1);
    assert_int_equal(sy_cache_embed_miss_body(&ce, body, &mb), SY_OK);
    want_in = J("[\"cccc\"]");
    assert_json_equal(json_object_get(mb, "input"), want_in);
    json_decref(want_in);
    resp = fake_embed_answer(mb, false);
    assert_int_equal(sy_cache_embed_fill(&ce, resp), SY_OK);
    assert_int_equal(sy_cache_embed_put(s, &ce, "emb-up", "dep", 1, 60, 0, &stored),
                     SY_CACHE_STORED);
    assert_int_equal(stored, 1); /* the hit is not written again */
    assert_int_equal(sy_cache_embed_answer(&ce, resp, true, &ans), SY_OK);
    json_t *d1 = json_object_get(json_array_get(json_object_get(ans, "data"), 1), "embedding");
    assert_true(json_is_string(d1));
    json_t *f1 = sy_json_b64_to_floats(json_string_value(d1), json_string_length(d1));
    want = J("[3.0,1.5]");
    assert_json_equal(f1, want);
    json_decref(want);
    json_decref(f1);
    json_decref(ans);
    json_decref(resp);
    json_decref(mb);
    sy_cache_embed_cleanup(&ce);

    /* third: a single string, all cached: no upstream call, usage zero, the cached model */
    json_decref(body);
    body = J("{\"model\":\"e\",\"input\":\"cccc\"}");
    in.body = body;
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_OK);
    assert_int_equal(sy_cache_embed_lookup(s, &ce), SY_CACHE_HIT);
    assert_int_equal(ce.nmiss, 0);
    assert_int_equal(ce.nhit, 1);
    assert_int_equal(sy_cache_embed_miss_body(&ce, body, &mb), SY_EINVAL);
    assert_int_equal(sy_cache_embed_answer(&ce, NULL, false, &ans), SY_OK);
    want = J("{\"object\":\"list\",\"model\":\"emb-up\",\"usage\":{\"prompt_"
             "tokens\":0,"
             "\"total_tokens\":0},\"data\":[{\"object\":\"embedding\",\"index\":0,"
             "\"embedding\":[4.0,2.0]}]}");
    assert_json_equal(ans, want);
    json_decref(want);
    json_decref(ans);
    assert_int_equal(sy_cache_embed_put(s, &ce, "m", "d", 1, 60, 0, &stored), SY_CACHE_STORED);
    assert_int_equal(stored, 0);
    sy_cache_embed_cleanup(&ce);

    /* another tenant shares nothing */
    in.tenant = "u";
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_OK);
    assert_int_equal(sy_cache_embed_lookup(s, &ce), SY_CACHE_MISS);
    assert_int_equal(sy_cache_embed_answer(&ce, NULL, false, &ans), SY_EINVAL);
    sy_cache_embed_cleanup(&ce);
    in.tenant = "t";

    /* token inputs: one token array is a single input; an array of them is a list */
    json_decref(body);
    body = J("{\"model\":\"e\",\"input\":[1,2,3]}");
    in.body = body;
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_OK);
    assert_int_equal(ce.n, 1);
    assert_int_equal(sy_cache_embed_lookup(s, &ce), SY_CACHE_MISS);
    assert_int_equal(sy_cache_embed_miss_body(&ce, body, &mb), SY_OK);
    assert_json_equal(mb, body);
    resp = fake_embed_answer(mb, false);
    /* an answer with the wrong number of vectors is refused */
    json_t *bad = json_deep_copy(resp);
    json_array_append_new(json_object_get(bad, "data"),
                          J("{\"object\":\"embedding\",\"index\":1,\"embedding\":[1.0]}"));
    assert_int_equal(sy_cache_embed_fill(&ce, bad), SY_EUPSTREAM);
    json_decref(bad);
    bad = J("{\"data\":[{\"index\":3,\"embedding\":[1.0]}]}");
    assert_int_equal(sy_cache_embed_fill(&ce, bad), SY_EUPSTREAM);
    json_decref(bad);
    bad = J("{\"data\":[{\"index\":0,\"embedding\":[\"x\"]}]}");
    assert_int_equal(sy_cache_embed_fill(&ce, bad), SY_EUPSTREAM);
    json_decref(bad);
    bad = J("{\"data\":[{\"index\":0,\"embedding\":\"!!\"}]}");
    assert_int_equal(sy_cache_embed_fill(&ce, bad), SY_EUPSTREAM);
    json_decref(bad);
    assert_int_equal(ce.nmiss, 1);
    assert_int_equal(sy_cache_embed_fill(&ce, resp), SY_OK);
    assert_int_equal(sy_cache_embed_put(s, &ce, "emb-up", "dep", 1, 60, 0, &stored),
                     SY_CACHE_STORED);
    json_decref(resp);
    json_decref(mb);
    sy_cache_embed_cleanup(&ce);
    json_decref(body);
    body = J("{\"model\":\"e\",\"input\":[[1,2,3],[4]]}");
    in.body = body;
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_OK);
    assert_int_equal(ce.n, 2);
    assert_int_equal(sy_cache_embed_lookup(s, &ce), SY_CACHE_MISS);
    assert_int_equal(ce.nhit, 1); /* [1,2,3] alone and in a list is one input */
    sy_cache_embed_cleanup(&ce);

    /* shapes that bypass */
    static const char *const shapes[] = {
        "{\"input\":[]}",          "{\"input\":5}",    "{\"input\":[\"a\",1]}",
        "{\"input\":[[1],\"a\"]}", "{\"input\":[[]]}", "{}",
        "{\"input\":[[1.5]]}",
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        json_t *b = J(shapes[i]);
        in.body = b;
        assert_int_equal(sy_cache_embed_init(&ce, &in), SY_EINVAL);
        assert_int_equal(ce.n, 0);
        sy_cache_embed_cleanup(&ce);
        json_decref(b);
    }
    json_t *many = json_pack("{s:[]}", "input");
    for (int i = 0; i <= SY_CACHE_EMBED_MAX_INPUTS; i++)
        json_array_append_new(json_object_get(many, "input"), json_string("x"));
    in.body = many;
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_ETOOBIG);
    sy_cache_embed_cleanup(&ce);
    json_decref(many);
    in.ep = SY_EP_CHAT;
    in.body = body;
    assert_int_equal(sy_cache_embed_init(&ce, &in), SY_EINVAL);
    sy_cache_embed_cleanup(&ce);

    json_decref(body);
    sy_store_free(s);
}

/* ---- allocation failures --------------------------------------------------------------------- */

static long alloc_left = -1;

static void *failing_malloc(size_t n)
{
    if (alloc_left == 0)
        return NULL;
    if (alloc_left > 0)
        alloc_left--;
    return malloc(n);
}

/* Runs <fn> with allocation n failing for n = 0, 1, ... until it succeeds; every failure must be
 * reported (no crash, no leak: the sanitizer checks). */
static void alloc_loop(const char *what, sy_err (*fn)(void *), void *ud)
{
    for (long n = 0; n < 100000; n++) {
        alloc_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        sy_err rc = fn(ud);
        json_set_alloc_funcs(malloc, free);
        alloc_left = -1;
        if (rc == SY_OK)
            return;
        if (rc != SY_ENOMEM)
            fail_msg("%s: allocation %ld failing gave %s", what, n, sy_err_name(rc));
    }
    fail_msg("%s never succeeded", what);
}

static sy_err af_key(void *ud)
{
    char k[SY_CACHE_KEY_SIZE];
    sy_cache_key_in in = {SY_EP_CHAT, "r", "m", "t", ud};
    return sy_cache_key(&in, k);
}

/* Chunks are parsed before the loop: jansson reports an allocation failure inside a string token as
 * a syntax error, so sy_cache_acc_feed_data may say SY_EINVAL for it (harmless: nothing is stored
 * either way) and would end the loop early. */
static sy_err af_acc(void *ud)
{
    json_t *chunks = ud;
    sy_cache_acc acc;
    json_t *ans = NULL;
    sy_err rc = SY_OK;
    size_t i;
    json_t *c;

    sy_cache_acc_init(&acc, SY_EP_CHAT, 0);
    json_array_foreach(chunks, i, c)
    {
        if (rc == SY_OK)
            rc = sy_cache_acc_feed(&acc, c);
    }
    if (rc == SY_OK)
        rc = sy_cache_acc_feed_data(&acc, "[DONE]", 6);
    if (rc == SY_OK)
        rc = sy_cache_acc_finish(&acc, true, NULL, &ans);
    /* sy_openai_normalize does not report allocation failures; compare to catch a bad answer */
    if (rc == SY_OK) {
        json_set_alloc_funcs(malloc, free);
        json_t *want = J(openai_stream_answer);
        if (!json_equal(ans, want))
            rc = SY_ENOMEM;
        json_decref(want);
    }
    json_decref(ans);
    sy_cache_acc_cleanup(&acc);
    return rc;
}

static sy_err af_entry(void *ud)
{
    sy_cache_entry *e = ud, d;
    sy_buf b;
    sy_buf_init(&b, 1 << 20);
    sy_cache_entry_init(&d);
    sy_err rc = sy_cache_entry_encode(e, "{c:k}", &b);
    if (rc == SY_OK)
        rc = sy_cache_entry_decode(b.data, b.len, "{c:k}", &d);
    if (rc == SY_EINVAL) {
        /* an allocation failure in a string token looks like a syntax error to jansson: it was one
         * if the same bytes decode with memory to spare */
        json_set_alloc_funcs(malloc, free);
        if (sy_cache_entry_decode(b.data, b.len, "{c:k}", &d) == SY_OK)
            rc = SY_ENOMEM;
    }
    sy_cache_entry_cleanup(&d);
    sy_buf_cleanup(&b);
    return rc;
}

static sy_err af_replay(void *ud)
{
    sy_cache_entry *e = ud;
    sy_cache_replay o = {"req_1", 5, true, false};
    char *body = NULL;
    size_t len;
    sy_buf sse;
    sy_err rc = sy_cache_replay_json(e, &o, &body, &len);
    free(body);
    if (rc != SY_OK)
        return rc;
    sy_buf_init(&sse, 1 << 20);
    rc = sy_cache_replay_sse(e, &o, &sse);
    sy_buf_cleanup(&sse);
    return rc;
}

static sy_err af_embed(void *ud)
{
    sy_store *s = ud;
    json_t *body = json_loads("{\"input\":[\"p\",\"q\",\"p\"]}", 0, NULL);
    sy_cache_key_in in = {SY_EP_EMBEDDINGS, "r", "m", "t", body};
    sy_cache_embed ce;
    json_t *mb = NULL, *resp = NULL, *ans = NULL;
    sy_err rc = SY_ENOMEM;

    if (body == NULL)
        return SY_ENOMEM;
    if ((rc = sy_cache_embed_init(&ce, &in)) != SY_OK)
        goto out;
    /* the store may fail to decode under the failing allocator: NOMEM counts as a miss */
    sy_cache_status st = sy_cache_embed_lookup(s, &ce);
    if (st == SY_CACHE_NOMEM) {
        rc = SY_ENOMEM;
        goto out;
    }
    if (ce.nmiss > 0) {
        if ((rc = sy_cache_embed_miss_body(&ce, body, &mb)) != SY_OK)
            goto out;
        json_set_alloc_funcs(malloc, free); /* the upstream is not under test */
        resp = fake_embed_answer(mb, false);
        json_set_alloc_funcs(failing_malloc, free);
        if ((rc = sy_cache_embed_fill(&ce, resp)) != SY_OK)
            goto out;
    }
    rc = sy_cache_embed_answer(&ce, resp, true, &ans);
out:
    json_decref(ans);
    json_decref(resp);
    json_decref(mb);
    sy_cache_embed_cleanup(&ce);
    json_decref(body);
    return rc;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    json_t *big = json_object();
    for (int i = 0; i < 40; i++) { /* more keys than the on-stack sort array */
        char name[8];
        (void)snprintf(name, sizeof(name), "k%d", i);
        json_object_set_new(big, name, json_pack("[i,{s:s}]", i, "x", "y"));
    }
    alloc_loop("key", af_key, big);
    json_decref(big);
    json_t *chunks = json_array();
    for (size_t i = 0; i + 1 < sizeof(openai_stream) / sizeof(openai_stream[0]); i++)
        json_array_append_new(chunks, J(openai_stream[i]));
    alloc_loop("accumulator", af_acc, chunks);
    json_decref(chunks);
    sy_cache_entry e;
    make_entry(&e, openai_stream_answer);
    alloc_loop("entry codec", af_entry, &e);
    alloc_loop("replay", af_replay, &e);
    sy_cache_entry_cleanup(&e);
    sy_store *s = mem_store(0);
    alloc_loop("embeddings", af_embed, s);
    sy_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_format),
        cmocka_unit_test(test_key_fields_change_it),
        cmocka_unit_test(test_key_context_changes_it),
        cmocka_unit_test(test_key_denied_fields_do_not),
        cmocka_unit_test(test_key_canonical),
        cmocka_unit_test(test_key_big_body),
        cmocka_unit_test(test_eligibility),
        cmocka_unit_test(test_acc_roundtrip),
        cmocka_unit_test(test_acc_openai_fragments),
        cmocka_unit_test(test_acc_completions_logprobs),
        cmocka_unit_test(test_acc_refuses_inconsistent),
        cmocka_unit_test(test_acc_cap),
        cmocka_unit_test(test_acc_observer_openai),
        cmocka_unit_test(test_acc_observer_anthropic),
        cmocka_unit_test(test_entry_codec),
        cmocka_unit_test(test_put_get_mem),
        cmocka_unit_test(test_put_get_redis_outage),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_embeddings),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
