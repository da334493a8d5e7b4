/* Unit tests for err: the table's accessors, OpenAI error bodies, the error list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "switchyard/err.h"

static long alloc_left = -1; /* allocations that still succeed; -1 = unlimited */

static void *failing_malloc(size_t n)
{
    if (alloc_left == 0)
        return NULL;
    if (alloc_left > 0)
        alloc_left--;
    return malloc(n);
}

static void test_table_complete(void **state)
{
    (void)state;
    for (int e = 1; e < SY_ERR__COUNT; e++) {
        int st = sy_err_status((sy_err)e);
        assert_true(st >= 400 && st <= 599);
        assert_non_null(sy_err_type((sy_err)e));
        assert_true(strlen(sy_err_type((sy_err)e)) > 0);
        assert_non_null(sy_err_str((sy_err)e));
        assert_true(strlen(sy_err_str((sy_err)e)) > 0);
        assert_non_null(sy_err_name((sy_err)e));
        assert_true(strlen(sy_err_name((sy_err)e)) > 0);
        /* Names are unique: logs and metrics key on them. */
        for (int k = 1; k < e; k++)
            assert_string_not_equal(sy_err_name((sy_err)e), sy_err_name((sy_err)k));
        if (sy_err_code((sy_err)e) != NULL)
            assert_true(strlen(sy_err_code((sy_err)e)) > 0);
    }
    /* SY_OK has a row too, so sy_err_name(rc) is safe on any result. */
    assert_int_equal(sy_err_status(SY_OK), 200);
    assert_string_equal(sy_err_name(SY_OK), "OK");
}

static void test_table_values(void **state)
{
    (void)state;
    /* Spot checks against the X-macro; codes are never renumbered. */
    assert_int_equal(SY_EINVAL, 1);
    assert_int_equal(sy_err_status(SY_EINVAL), 400);
    assert_null(sy_err_code(SY_EINVAL));
    assert_int_equal(sy_err_status(SY_ETOOBIG), 413);
    assert_string_equal(sy_err_code(SY_ETOOBIG), "request_too_large");
    assert_string_equal(sy_err_name(SY_ETOOBIG), "TOOBIG");
    assert_int_equal(sy_err_status(SY_EAUTH), 401);
    assert_string_equal(sy_err_type(SY_EAUTH), "authentication_error");
    assert_int_equal(sy_err_status(SY_ELIMIT), 429);
    assert_string_equal(sy_err_type(SY_ELIMIT), "rate_limit_error");
    assert_int_equal(sy_err_status(SY_ETIMEOUT), 504);
    assert_string_equal(sy_err_str(SY_ENOMEM), "out of memory");
}

static void test_table_out_of_range(void **state)
{
    (void)state;
    /* Garbage values map to INTERNAL rather than reading past the table. */
    assert_int_equal(sy_err_status((sy_err)SY_ERR__COUNT), 500);
    assert_string_equal(sy_err_name((sy_err)SY_ERR__COUNT), "INTERNAL");
    /* Values outside the enum's range are not tried: clang's -fsanitize=enum rejects them. */
}

/* Parses <body> and checks it is exactly {"error":{message,type,param,code}}; returns the
 * inner object (borrowed from *root, which the caller frees). */
static json_t *check_shape(const char *body, size_t len, json_t **root)
{
    json_error_t jerr;

    assert_non_null(body);
    assert_int_equal(len, strlen(body));
    *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*root == NULL)
        fail_msg("not JSON: %s (%s)", body, jerr.text);
    assert_true(json_is_object(*root));
    assert_int_equal(json_object_size(*root), 1);
    json_t *e = json_object_get(*root, "error");
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(e), 4);
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "param"));
    assert_non_null(json_object_get(e, "code"));
    return e;
}

static void test_body_every_code(void **state)
{
    (void)state;
    for (int i = 0; i < SY_ERR__COUNT; i++) {
        sy_err c = (sy_err)i;
        size_t len = 0;
        json_t *root;
        char *body = sy_err_body(c, NULL, NULL, &len);
        json_t *e = check_shape(body, len, &root);
        assert_string_equal(json_string_value(json_object_get(e, "message")), sy_err_str(c));
        assert_string_equal(json_string_value(json_object_get(e, "type")), sy_err_type(c));
        assert_true(json_is_null(json_object_get(e, "param")));
        if (sy_err_code(c) == NULL)
            assert_true(json_is_null(json_object_get(e, "code")));
        else
            assert_string_equal(json_string_value(json_object_get(e, "code")), sy_err_code(c));
        json_decref(root);
        free(body);
    }
}

static void test_body_message_and_param(void **state)
{
    size_t len;
    json_t *root;
    (void)state;

    char *body = sy_err_body(SY_EINVAL, "'messages' must be an array \"x\"\n", "messages", &len);
    json_t *e = check_shape(body, len, &root);
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "'messages' must be an array \"x\"\n");
    assert_string_equal(json_string_value(json_object_get(e, "param")), "messages");
    assert_true(json_is_null(json_object_get(e, "code")));
    /* One line on the wire even when the message has a newline. */
    assert_null(strchr(body, '\n'));
    json_decref(root);
    free(body);

    /* len is optional. */
    body = sy_err_body(SY_EAUTH, NULL, NULL, NULL);
    assert_non_null(body);
    free(body);
}

static void test_body_raw(void **state)
{
    size_t len;
    json_t *root;
    (void)state;

    char *body = sy_err_body_raw("server_error", NULL, NULL, NULL, &len);
    json_t *e = check_shape(body, len, &root);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "server_error");
    assert_true(json_is_null(json_object_get(e, "code")));
    assert_true(json_is_null(json_object_get(e, "param")));
    json_decref(root);
    free(body);

    body = sy_err_body_raw("invalid_request_error", "c1", "p1", "m1", &len);
    e = check_shape(body, len, &root);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "c1");
    assert_string_equal(json_string_value(json_object_get(e, "param")), "p1");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "m1");
    json_decref(root);
    free(body);
}

static void test_body_invalid_utf8(void **state)
{
    size_t len;
    json_t *root;
    (void)state;

    /* Messages may quote raw client bytes; the body must still be valid JSON. */
    char *body = sy_err_body(SY_EJSON, "bad byte \xff\xfe here", NULL, &len);
    json_t *e = check_shape(body, len, &root);
    assert_true(json_string_length(json_object_get(e, "message")) > 0);
    json_decref(root);
    free(body);

    /* The same holds for a param (a client-supplied name). */
    body = sy_err_body(SY_EINVAL, "bad", "\xc0\xaf", &len);
    e = check_shape(body, len, &root);
    json_decref(root);
    free(body);

    body = sy_err_body_raw("api_error", "\xed\xa0\x80", NULL, "m", &len);
    e = check_shape(body, len, &root);
    (void)e;
    json_decref(root);
    free(body);
}

static void test_body_alloc_failures(void **state)
{
    char *body = NULL;
    long n;
    (void)state;

    for (n = 0; body == NULL && n < 1000; n++) {
        alloc_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        body = sy_err_body(SY_ELIMIT, "slow down", "model", NULL);
        alloc_left = -1;
        json_set_alloc_funcs(malloc, free);
    }
    assert_non_null(body);
    assert_true(n > 5);
    free(body);
}

static void test_errlist(void **state)
{
    sy_errlist l;
    (void)state;

    sy_errlist_init(&l);
    assert_int_equal(l.n, 0);
    sy_errlist_cleanup(&l); /* cleanup of an empty list */

    sy_errlist_init(&l);
    for (int i = 0; i < 1000; i++)
        sy_errlist_add(&l, "deployments[%d].timeout_ms: unknown key '%s'", i, "timout_ms");
    assert_int_equal(l.n, 1000);
    assert_string_equal(l.items[0], "deployments[0].timeout_ms: unknown key 'timout_ms'");
    assert_string_equal(l.items[999], "deployments[999].timeout_ms: unknown key 'timout_ms'");
    sy_errlist_cleanup(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);

    /* A list is reusable after cleanup. */
    sy_errlist_add(&l, "%s", "again");
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0], "again");
    sy_errlist_cleanup(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_complete),
        cmocka_unit_test(test_table_values),
        cmocka_unit_test(test_table_out_of_range),
        cmocka_unit_test(test_body_every_code),
        cmocka_unit_test(test_body_message_and_param),
        cmocka_unit_test(test_body_raw),
        cmocka_unit_test(test_body_invalid_utf8),
        cmocka_unit_test(test_body_alloc_failures),
        cmocka_unit_test(test_errlist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
