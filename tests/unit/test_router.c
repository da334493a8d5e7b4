/* Unit tests for router: alias order, deployment names, upstream model names, unknown models. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/router.h"

static sy_config *load(const char *text)
{
    json_t *root = json_loads(text, 0, NULL);
    sy_errlist errs;
    sy_config *cfg = NULL;
    sy_errlist_init(&errs);
    assert_non_null(root);
    sy_err rc = sy_config_parse(root, NULL, &cfg, &errs, NULL);
    for (size_t i = 0; i < errs.n; i++)
        print_error("%s\n", errs.items[i]);
    assert_int_equal(rc, SY_OK);
    sy_errlist_cleanup(&errs);
    json_decref(root);
    return cfg;
}

static const char *cfg_text =
    "{\"deployments\":["
    "{\"name\":\"a\",\"base_url\":\"http://h/v1\",\"model\":\"shared\",\"price\":{\"input\":0,\"output\":0}},"
    "{\"name\":\"b\",\"base_url\":\"http://h/v1\",\"model\":\"shared\",\"price\":{\"input\":0,\"output\":0}},"
    "{\"name\":\"meta-llama/Llama-3.1-8B\",\"base_url\":\"http://h/v1\",\"model\":\"llama\",\"price\":{\"input\":0,\"output\":0}}],"
    "\"aliases\":{\"fast\":[\"b\",\"a\"]}}";

static void test_pick(void **state)
{
    (void)state;
    sy_config *cfg = load(cfg_text);
    sy_pick p;

    assert_int_equal(sy_router_pick(cfg, "fast", NULL, NULL, &p), SY_OK);
    assert_int_equal(p.ntargets, 2);
    assert_string_equal(p.targets[0]->name, "b");
    assert_string_equal(p.targets[1]->name, "a");
    assert_string_equal(p.route, "fast");

    assert_int_equal(sy_router_pick(cfg, "a", NULL, NULL, &p), SY_OK);
    assert_int_equal(p.ntargets, 1);
    assert_string_equal(p.targets[0]->name, "a");

    /* an upstream model name served by two deployments: both, in config order */
    assert_int_equal(sy_router_pick(cfg, "shared", NULL, NULL, &p), SY_OK);
    assert_int_equal(p.ntargets, 2);
    assert_string_equal(p.targets[0]->name, "a");
    assert_string_equal(p.targets[1]->name, "b");

    assert_int_equal(sy_router_pick(cfg, "meta-llama/Llama-3.1-8B", NULL, NULL, &p), SY_OK);
    assert_string_equal(p.targets[0]->model, "llama");

    assert_int_equal(sy_router_pick(cfg, "nope", NULL, NULL, &p), SY_ENOMODEL);
    assert_int_equal(sy_router_pick(cfg, NULL, NULL, NULL, &p), SY_ENOMODEL);
    sy_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pick)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
