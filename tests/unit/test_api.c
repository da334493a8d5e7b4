/* Unit tests for api: dispatch by method and path, authentication, the request limits and every
 * client error's status, type, code and param, and what a valid request hands to the relay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/api.h"

static sy_config *cfg;

static int setup(void **state)
{
    (void)state;
    const char *text =
        "{\"server\":{\"max_body_bytes\":4096,\"max_json_depth\":8,\"max_messages\":4},"
        "\"deployments\":["
        "{\"name\":\"a\",\"base_url\":\"http://h/v1\",\"model\":\"up-a\",\"price\":{\"input\":0,\"output\":0}},"
        "{\"name\":\"meta-llama/Llama-3.1-8B\",\"base_url\":\"http://h/v1\",\"model\":\"llama\",\"price\":{\"input\":0,\"output\":0}}],"
        "\"aliases\":{\"fast\":[\"a\"]}}";
    json_t *root = json_loads(text, 0, NULL);
    sy_errlist errs;
    sy_errlist_init(&errs);
    sy_err rc = sy_config_parse(root, NULL, &cfg, &errs, NULL);
    for (size_t i = 0; i < errs.n; i++)
        print_error("%s\n", errs.items[i]);
    sy_errlist_cleanup(&errs);
    json_decref(root);
    return rc == SY_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sy_config_unref(cfg);
    return 0;
}

static sy_reply call(const char *method, const char *path, const char *body)
{
    sy_api_in in = {.cfg = cfg, .method = method, .path = path, .body = body ? body : "",
                    .len = body ? strlen(body) : 0};
    sy_reply r;
    sy_api_handle(&in, &r);
    return r;
}

/* Asserts an OpenAI error reply and frees it. */
static void expect_error(sy_reply r, int status, const char *type, const char *code,
                         const char *param)
{
    assert_null(r.req);
    assert_int_equal(r.status, status);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_int_equal(json_object_size(e), 4);
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    if (code != NULL)
        assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    if (param != NULL)
        assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    else
        assert_true(json_is_null(json_object_get(e, "param")));
    json_decref(j);
    free(r.body);
}

#define CHAT "/v1/chat/completions"

static void test_bad_input(void **state)
{
    (void)state;
    expect_error(call("POST", CHAT, "{\"model\":"), 400, "invalid_request_error", "invalid_json", NULL);
    expect_error(call("POST", CHAT, ""), 400, "invalid_request_error", NULL, NULL);
    expect_error(call("POST", CHAT, "[1,2]"), 400, "invalid_request_error", NULL, NULL);
    expect_error(call("POST", CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"), 400,
                 "invalid_request_error", NULL, "model");
    expect_error(call("POST", CHAT, "{\"model\":5,\"messages\":[]}"), 400, "invalid_request_error",
                 NULL, "model");
    expect_error(call("POST", CHAT, "{\"model\":\"a\"}"), 400, "invalid_request_error", NULL,
                 "messages");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"messages\":\"hi\"}"), 400,
                 "invalid_request_error", NULL, "messages");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"messages\":[]}"), 400,
                 "invalid_request_error", NULL, "messages");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}"),
                 400, "invalid_request_error", NULL, "messages");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":7}]}"),
                 400, "invalid_request_error", NULL, "messages");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                 400, "invalid_request_error", NULL, "stream");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"temperature\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                 400, "invalid_request_error", NULL, "temperature");
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                 400, "invalid_request_error", NULL, "stream_options");
    /* duplicate keys are ambiguous: rejected */
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"model\":\"b\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                 400, "invalid_request_error", NULL, NULL);
    /* invalid UTF-8 */
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}"),
                 400, "invalid_request_error", NULL, NULL);
    expect_error(call("POST", CHAT, "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                 404, "invalid_request_error", "model_not_found", "model");
    expect_error(call("POST", "/v1/embeddings", "{\"model\":\"a\"}"), 400, "invalid_request_error",
                 NULL, "input");
    expect_error(call("POST", "/v1/embeddings", "{\"model\":\"a\",\"input\":[1,\"x\"]}"), 400,
                 "invalid_request_error", NULL, "input");
    expect_error(call("POST", "/v1/embeddings", "{\"model\":\"a\",\"input\":\"x\",\"encoding_format\":\"hex\"}"),
                 400, "invalid_request_error", NULL, "encoding_format");
    expect_error(call("POST", "/v1/completions", "{\"model\":\"a\"}"), 400,
                 "invalid_request_error", NULL, "prompt");
}

static void test_limits(void **state)
{
    (void)state;
    /* nesting deeper than server.max_json_depth (8) */
    expect_error(call("POST", CHAT, "{\"model\":\"a\",\"x\":[[[[[[[[[[1]]]]]]]]]]}"), 413,
                 "invalid_request_error", "request_too_large", NULL);
    /* more messages than server.max_messages (4) */
    expect_error(call("POST", CHAT,
                      "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"1\"},"
                      "{\"role\":\"user\",\"content\":\"2\"},{\"role\":\"user\",\"content\":\"3\"},"
                      "{\"role\":\"user\",\"content\":\"4\"},{\"role\":\"user\",\"content\":\"5\"}]}"),
                 413, "invalid_request_error", "request_too_large", "messages");
    /* a body the server flagged as over max_body_bytes */
    sy_api_in in = {.cfg = cfg, .method = "POST", .path = CHAT, .body = "", .too_big = true};
    sy_reply r;
    sy_api_handle(&in, &r);
    expect_error(r, 413, "invalid_request_error", "request_too_large", NULL);
}

static void test_paths_and_methods(void **state)
{
    (void)state;
    sy_reply r = call("GET", CHAT, NULL);
    assert_string_equal(r.allow, "POST");
    expect_error(r, 405, "invalid_request_error", "method_not_allowed", NULL);
    r = call("POST", "/v1/models", "{}");
    assert_string_equal(r.allow, "GET");
    expect_error(r, 405, "invalid_request_error", "method_not_allowed", NULL);
    expect_error(call("GET", "/v2/nothing", NULL), 404, "invalid_request_error", "not_found", NULL);
    expect_error(call("GET", "/v1/models/nope", NULL), 404, "invalid_request_error",
                 "model_not_found", "model");

    r = call("GET", "/v1/models/meta-llama/Llama-3.1-8B", NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "meta-llama/Llama-3.1-8B");
    assert_string_equal(json_string_value(json_object_get(j, "object")), "model");
    json_decref(j);
    free(r.body);

    r = call("GET", "/v1/models", NULL);
    assert_int_equal(r.status, 200);
    j = json_loadb(r.body, r.len, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 3); /* 2 deployments + alias */
    json_decref(j);
    free(r.body);

    r = call("GET", "/healthz", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"status\":\"ok\""));
    j = json_loadb(r.body, r.len, 0, NULL);
    json_t *d0 = json_array_get(json_object_get(j, "deployments"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "name")), "a");
    assert_string_equal(json_string_value(json_object_get(d0, "provider")), "openai");
    assert_true(json_is_true(json_object_get(d0, "enabled")));
    json_decref(j);
    free(r.body);
}

static void test_relay_request(void **state)
{
    (void)state;
    sy_reply r = call("POST", CHAT,
                      "{\"model\":\"fast\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_non_null(r.req);
    assert_null(r.body);
    assert_true(r.req->stream);
    assert_true(r.req->client_usage);
    assert_int_equal(r.req->ep, SY_EP_CHAT);
    assert_int_equal(r.req->pick.ntargets, 1);
    assert_string_equal(r.req->pick.targets[0]->name, "a");
    assert_string_equal(r.model, "fast");
    sy_request_unref(r.req);

    r = call("POST", "/v1/embeddings", "{\"model\":\"up-a\",\"input\":[\"x\",\"y\"],\"encoding_format\":\"base64\"}");
    assert_non_null(r.req);
    assert_true(r.req->embed_b64);
    assert_false(r.req->stream);
    sy_request_unref(r.req);
}

static void test_auth(void **state)
{
    (void)state;
    cfg->require_keys = true;
    char *saved = cfg->master_key;
    cfg->master_key = "sk-master-1";
    sy_api_in in = {.cfg = cfg, .method = "GET", .path = "/v1/models", .body = ""};
    sy_reply r;
    sy_api_handle(&in, &r);
    expect_error(r, 401, "authentication_error", "invalid_api_key", NULL);
    in.authorization = "Bearer sk-master-2";
    sy_api_handle(&in, &r);
    expect_error(r, 401, "authentication_error", "invalid_api_key", NULL);
    in.authorization = "Bearer sk-master-1";
    sy_api_handle(&in, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* health stays open for load balancers */
    in.authorization = NULL;
    in.path = "/healthz";
    sy_api_handle(&in, &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    cfg->master_key = saved;
    cfg->require_keys = false;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_paths_and_methods),
        cmocka_unit_test(test_relay_request),
        cmocka_unit_test(test_auth),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
