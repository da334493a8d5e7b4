/* Unit tests for prices: the cost arithmetic (cached, cache-write, reasoning, batch, rounding to
 * micro-dollars, saturation), the USD formatter, the shipped price list, lookup rules (exact,
 * family prefix, vendor/ prefix, free entries), validation messages, config integration
 * (`check` fails on an unpriced deployment, with its JSON path) and allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/config.h"
#include "switchyard/prices.h"

static sy_price mk(double in, double cached, double write, double out, double disc)
{
    sy_price p = {.input = in,
                  .cached_input = cached,
                  .cache_write = write,
                  .output = out,
                  .batch_discount = disc,
                  .set = true};
    return p;
}

static char *source_path(const char *rel)
{
    const char *root = getenv("SY_SOURCE_DIR");
    char *p = NULL;

    assert_true(asprintf(&p, "%s/%s", root != NULL ? root : ".", rel) > 0);
    return p;
}

static void test_cost_basic(void **state)
{
    (void)state;
    sy_price p = mk(2.00, 0.50, 2.00, 8.00, 0.5);
    sy_usage u = {.prompt = 1000, .completion = 500};

    /* 1000 * $2/M + 500 * $8/M = 2000 + 4000 micro-dollars */
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 6000);
    assert_int_equal(sy_price_cost_micro(&p, &u, true), 3000);
    u = (sy_usage){0};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 0);
}

static void test_cost_cached_and_cache_write(void **state)
{
    (void)state;
    /* Anthropic-like: input 3, cache read 0.30, cache write 3.75, output 15 */
    sy_price p = mk(3.00, 0.30, 3.75, 15.00, 0.5);
    sy_usage u = {.prompt = 10000, .cached = 6000, .cache_write = 2000, .completion = 100};
    /* uncached 2000*3 = 6000; cached 6000*0.3 = 1800; write 2000*3.75 = 7500; out 100*15 = 1500 */
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 6000 + 1800 + 7500 + 1500);
    /* batch halves the sum, rounded once */
    assert_int_equal(sy_price_cost_micro(&p, &u, true), (6000 + 1800 + 7500 + 1500) / 2);

    /* cache counts outside the prompt count: uncached clamps to 0, the cache parts still count */
    u = (sy_usage){.prompt = 100, .cached = 300, .completion = 0};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 90);
}

static void test_cost_reasoning_is_output(void **state)
{
    (void)state;
    sy_price p = mk(1.10, 0.275, 1.10, 4.40, 0);
    sy_usage u = {.prompt = 100, .completion = 1000, .reasoning = 800};
    /* reasoning is part of completion: priced once */
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 110 + 4400);
    /* a provider reporting reasoning beyond completion: the larger counts */
    u = (sy_usage){.completion = 10, .reasoning = 1000};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 4400);
}

static void test_cost_rounding(void **state)
{
    (void)state;
    /* gpt-4o-mini input $0.15/M: one token = 0.15 micro -> 0; 3 tokens 0.45 -> 0;
     * 4 tokens 0.6 -> 1; 10 tokens = 1.5 -> 2 (half up) */
    sy_price p = mk(0.15, 0.075, 0.15, 0.60, 0.5);
    sy_usage u = {.prompt = 1};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 0);
    u.prompt = 3;
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 0);
    u.prompt = 4;
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 1);
    u.prompt = 10;
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 2);
    /* the parts are summed exactly before the one rounding: 7 cached (0.525) + 7 prompt
     * uncached (1.05) = 1.575 -> 2, where rounding each part would give 1 + 1 */
    u = (sy_usage){.prompt = 14, .cached = 7};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 2);
    /* 0.075 is not exact in binary; it still becomes 75000 pico-dollars per token */
    u = (sy_usage){.prompt = 1000000, .cached = 1000000};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 75000);
    /* batch of an odd micro amount: 3 micro * 0.5 = 1.5 -> 2 */
    sy_price q = mk(3, 3, 3, 3, 0.5);
    u = (sy_usage){.prompt = 1};
    assert_int_equal(sy_price_cost_micro(&q, &u, true), 2);
    /* full discount */
    q.batch_discount = 1;
    assert_int_equal(sy_price_cost_micro(&q, &u, true), 0);
}

static void test_cost_edges(void **state)
{
    (void)state;
    sy_price p = mk(1e9, 1e9, 1e9, 1e9, 0);
    sy_usage u = {.prompt = INT64_MAX, .completion = INT64_MAX};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), INT64_MAX);
    u = (sy_usage){.prompt = -5, .completion = -1, .cached = -3};
    assert_int_equal(sy_price_cost_micro(&p, &u, false), 0);
    sy_price z = mk(0, 0, 0, 0, 0);
    u = (sy_usage){.prompt = 123456, .completion = 654321};
    assert_int_equal(sy_price_cost_micro(&z, &u, true), 0);
    /* a large real request: 2M tokens at $75/M output = $150 */
    sy_price opus = mk(15, 1.5, 18.75, 75, 0.5);
    u = (sy_usage){.completion = 2000000};
    assert_int_equal(sy_price_cost_micro(&opus, &u, false), 150000000);
}

static void test_usd_format(void **state)
{
    (void)state;
    char b[SY_USD_BUF];
    assert_string_equal(sy_usd_format(0, b), "0.000000");
    assert_string_equal(sy_usd_format(150, b), "0.000150");
    assert_string_equal(sy_usd_format(12345678, b), "12.345678");
    assert_string_equal(sy_usd_format(-1, b), "-0.000001");
    assert_string_equal(sy_usd_format(INT64_MAX, b), "9223372036854.775807");
    assert_string_equal(sy_usd_format(INT64_MIN, b), "-9223372036854.775808");
}

static sy_prices *parse(const char *text, sy_errlist *errs, sy_err want)
{
    json_t *root = json_loads(text, 0, NULL);
    sy_prices *p = NULL;

    assert_non_null(root);
    assert_int_equal(sy_prices_parse(root, "p.json", &p, errs), want);
    json_decref(root);
    return p;
}

static void test_lookup(void **state)
{
    (void)state;
    sy_errlist errs;
    sy_price pr;
    const char *m = NULL;

    sy_errlist_init(&errs);
    sy_prices *p = parse("{\"unit\":\"x\",\"_note\":1,\"models\":{"
                         "\"gpt-4o\":{\"input\":2.5,\"cached_input\":1.25,\"output\":10},"
                         "\"gpt-4o-mini\":{\"input\":0.15,\"output\":0.6,\"batch_discount\":0.5},"
                         "\"claude-sonnet-4\":{\"input\":3,\"output\":15},"
                         "\"qwen2.5\":{\"input\":0,\"output\":0}}}",
                         &errs, SY_OK);
    assert_int_equal(errs.n, 0);
    assert_int_equal(sy_prices_count(p), 4);

    assert_true(sy_prices_lookup(p, "gpt-4o", &pr, &m));
    assert_string_equal(m, "gpt-4o");
    assert_true(pr.input == 2.5 && pr.cached_input == 1.25 && pr.cache_write == 2.5);
    assert_false(pr.set);
    /* the longest family wins */
    assert_true(sy_prices_lookup(p, "gpt-4o-mini-2024-07-18", &pr, &m));
    assert_string_equal(m, "gpt-4o-mini");
    assert_true(pr.cached_input == 0.15 && pr.batch_discount == 0.5);
    assert_true(sy_prices_lookup(p, "gpt-4o-2024-08-06", &pr, &m));
    assert_string_equal(m, "gpt-4o");
    assert_true(sy_prices_lookup(p, "claude-sonnet-4-20250514", &pr, &m));
    assert_string_equal(m, "claude-sonnet-4");
    /* a prefix must end at a boundary */
    assert_false(sy_prices_lookup(p, "gpt-4ox", &pr, &m));
    assert_false(sy_prices_lookup(p, "gpt-4", &pr, &m));
    /* vendor/ prefixes */
    assert_true(sy_prices_lookup(p, "openai/gpt-4o-mini", &pr, &m));
    assert_string_equal(m, "gpt-4o-mini");
    /* free entries: exact or an Ollama tag only, never a hosted variant */
    assert_true(sy_prices_lookup(p, "qwen2.5", &pr, &m));
    assert_true(sy_prices_lookup(p, "qwen2.5:7b-instruct", &pr, &m));
    assert_true(pr.input == 0 && pr.output == 0);
    assert_false(sy_prices_lookup(p, "qwen2.5-72b-instruct", &pr, &m));
    assert_false(sy_prices_lookup(p, "", &pr, &m));
    assert_false(sy_prices_lookup(p, "/", &pr, &m));
    assert_false(sy_prices_lookup(NULL, "gpt-4o", &pr, &m));
    sy_prices_free(p);
    sy_errlist_cleanup(&errs);
}

static void test_validation(void **state)
{
    (void)state;
    sy_errlist errs;

    sy_errlist_init(&errs);
    assert_null(parse("{\"models\":{\"a\":{\"input\":-1,\"output\":1},"
                      "\"b\":{\"output\":1,\"cache_read\":2},"
                      "\"c\":{\"input\":1,\"output\":\"x\",\"batch_discount\":2},"
                      "\"d d\":{\"input\":1,\"output\":1},\"e\":5},\"extra\":1}",
                      &errs, SY_ECONFIG));
    const char *want[] = {
        "p.json: extra: unknown key (expected \"models\")",
        "p.json: models[\"a\"].input: must be a number >= 0",
        "p.json: models[\"b\"]: unknown key 'cache_read'",
        "p.json: models[\"b\"].input: required key missing",
        "p.json: models[\"c\"].output: must be a number >= 0",
        "p.json: models[\"c\"].batch_discount: must be a number in 0..1",
        "p.json: models[\"d d\"]: model name must be 1..256 printable characters without spaces",
        "p.json: models[\"e\"]: must be an object",
    };
    for (size_t i = 0; i < errs.n; i++)
        print_message("%s\n", errs.items[i]);
    assert_int_equal(errs.n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < errs.n; i++)
        assert_string_equal(errs.items[i], want[i]);
    sy_errlist_cleanup(&errs);

    sy_errlist_init(&errs);
    assert_null(parse("[]", &errs, SY_ECONFIG));
    assert_null(parse("{\"models\":[]}", &errs, SY_ECONFIG));
    assert_int_equal(errs.n, 2);
    sy_errlist_cleanup(&errs);
}

static void test_shipped_list(void **state)
{
    (void)state;
    char *path = source_path("conf/prices.json");
    sy_errlist errs;
    sy_prices *p = NULL;
    sy_price pr;
    const char *m;
    static const char *const must[] = {
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4o-mini-2024-07-18",
        "o3-mini",
        "claude-sonnet-4-5",
        "claude-3-5-haiku-20241022",
        "claude-opus-4-1-20250805",
        "gemini-2.5-pro",
        "gemini-2.5-flash-lite",
        "deepseek-chat",
        "deepseek-reasoner",
        "qwen2.5:7b-instruct",
        "llama3.1:8b",
        "text-embedding-3-small",
    };

    sy_errlist_init(&errs);
    assert_int_equal(sy_prices_load(path, &p, &errs), SY_OK);
    assert_true(sy_prices_count(p) >= 30);
    for (size_t i = 0; i < sizeof(must) / sizeof(must[0]); i++) {
        if (!sy_prices_lookup(p, must[i], &pr, &m))
            fail_msg("no price for %s", must[i]);
    }
    assert_true(sy_prices_lookup(p, "claude-sonnet-4-5-20250929", &pr, &m));
    assert_true(pr.input == 3 && pr.cached_input == 0.3 && pr.cache_write == 3.75 &&
                pr.output == 15 && pr.batch_discount == 0.5);
    assert_true(sy_prices_lookup(p, "gpt-4.1-mini", &pr, &m));
    assert_true(pr.input == 0.4 && pr.cached_input == 0.1 && pr.output == 1.6);
    /* a hosted Mistral model is not the free local "mistral" */
    assert_false(sy_prices_lookup(p, "mistral-large-latest", &pr, &m));
    sy_prices_free(p);
    sy_errlist_cleanup(&errs);
    free(path);

    sy_errlist_init(&errs);
    assert_int_equal(sy_prices_load("/nonexistent/prices.json", &p, &errs), SY_ECONFIG);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0], "/nonexistent/prices.json: cannot open: No such file or "
                                       "directory");
    sy_errlist_cleanup(&errs);
}

static char *write_temp(const char *text)
{
    char tmpl[] = "/tmp/sy-prices-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
    return strdup(tmpl);
}

/* sy_config_load: explicit prices win, the list prices the rest, the unpriced fail with paths. */
static void test_config_integration(void **state)
{
    (void)state;
    char *list = write_temp("{\"models\":{\"gpt-4.1\":{\"input\":2,\"cached_input\":0.5,"
                            "\"output\":8}}}");
    char *text = NULL, *path;
    sy_errlist errs;
    sy_config *cfg = NULL;

    assert_true(asprintf(&text,
                         "{\"prices\":\"%s\",\"deployments\":["
                         "{\"name\":\"a\",\"base_url\":\"http://h/v1\",\"model\":\"gpt-4.1-2025\"},"
                         "{\"name\":\"b\",\"base_url\":\"http://h/v1\",\"model\":\"x\","
                         "\"price\":{\"input\":0,\"output\":0}}]}",
                         list) > 0);
    path = write_temp(text);
    free(text);
    sy_errlist_init(&errs);
    assert_int_equal(sy_config_load(path, &cfg, &errs, NULL), SY_OK);
    assert_true(cfg->deployments[0].price.input == 2 && cfg->deployments[0].price.output == 8 &&
                cfg->deployments[0].price.cached_input == 0.5);
    assert_false(cfg->deployments[0].price.set);
    assert_true(cfg->deployments[1].price.set && cfg->deployments[1].price.input == 0);
    sy_config_unref(cfg);
    cfg = NULL;
    unlink(path);
    free(path);
    sy_errlist_cleanup(&errs);

    assert_true(asprintf(&text,
                         "{\"prices\":\"%s\",\"deployments\":["
                         "{\"name\":\"a\",\"base_url\":\"http://h/v1\",\"model\":\"gpt-4.1\"},"
                         "{\"name\":\"u\",\"base_url\":\"http://h/v1\",\"model\":\"mystery\"}]}",
                         list) > 0);
    path = write_temp(text);
    free(text);
    sy_errlist_init(&errs);
    assert_int_equal(sy_config_load(path, &cfg, &errs, NULL), SY_ECONFIG);
    assert_null(cfg);
    assert_int_equal(errs.n, 1);
    assert_non_null(strstr(errs.items[0], "deployments[1].price: no price for model 'mystery'"));
    sy_errlist_cleanup(&errs);
    unlink(path);
    free(path);

    /* a broken list is reported with its own path */
    path = write_temp("{\"prices\":\"/nonexistent/p.json\",\"deployments\":["
                      "{\"name\":\"u\",\"base_url\":\"http://h/v1\",\"model\":\"m\"}]}");
    sy_errlist_init(&errs);
    assert_int_equal(sy_config_load(path, &cfg, &errs, NULL), SY_ECONFIG);
    assert_int_equal(errs.n, 2);
    assert_string_equal(errs.items[0], "prices: /nonexistent/p.json: cannot open: No such file "
                                       "or directory");
    assert_non_null(strstr(errs.items[1], "deployments[0].price: no price for model 'm'"));
    sy_errlist_cleanup(&errs);
    unlink(path);
    free(path);
    unlink(list);
    free(list);
}

/* A list of <size> bytes: one priced model padded with spaces inside the object. */
static char *write_sized(size_t size)
{
    const char *head = "{\"models\":{\"m\":{\"input\":1,\"output\":2}}";
    char *text = malloc(size + 1);
    char *path;

    assert_non_null(text);
    assert_true(size > strlen(head) + 1);
    memset(text, ' ', size);
    memcpy(text, head, strlen(head));
    text[size - 1] = '}';
    text[size] = '\0';
    path = write_temp(text);
    free(text);
    return path;
}

/* The cap is exact: a list of SY_PRICES_MAX_BYTES loads (the old doubling loop refused anything
 * past about 4.13 MB), one byte more is refused with the path, a missing file names the path. */
static void test_load_size_cap(void **state)
{
    (void)state;
    const size_t sizes[] = {SY_PRICES_MAX_BYTES - 65536, 4150000, SY_PRICES_MAX_BYTES - 1,
                            SY_PRICES_MAX_BYTES};
    sy_errlist errs;
    sy_prices *p = NULL;
    char *path, *want = NULL;

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        path = write_sized(sizes[i]);
        sy_errlist_init(&errs);
        assert_int_equal(sy_prices_load(path, &p, &errs), SY_OK);
        assert_int_equal(errs.n, 0);
        assert_int_equal(sy_prices_count(p), 1);
        sy_prices_free(p);
        p = NULL;
        sy_errlist_cleanup(&errs);
        unlink(path);
        free(path);
    }

    path = write_sized(SY_PRICES_MAX_BYTES + 1);
    sy_errlist_init(&errs);
    assert_int_equal(sy_prices_load(path, &p, &errs), SY_ECONFIG);
    assert_null(p);
    assert_int_equal(errs.n, 1);
    assert_true(asprintf(&want, "%s: larger than %u bytes", path, SY_PRICES_MAX_BYTES) > 0);
    assert_string_equal(errs.items[0], want);
    free(want);
    sy_errlist_cleanup(&errs);
    unlink(path);
    free(path);

    sy_errlist_init(&errs);
    assert_int_equal(sy_prices_load("/nonexistent/dir/prices.json", &p, &errs), SY_ECONFIG);
    assert_null(p);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0],
                        "/nonexistent/dir/prices.json: cannot open: No such file or directory");
    sy_errlist_cleanup(&errs);
}

/* ---- allocation failures ------------------------------------------------------------------ */

static long fail_at = -1, nalloc;

static void *failing_malloc(size_t n)
{
    if (fail_at >= 0 && nalloc++ == fail_at)
        return NULL;
    return malloc(n);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    char *path = source_path("conf/prices.json");
    /* jansson 2.14's parser is not allocation-failure safe (see test_config), so the document is
     * parsed first and the loop covers sy_prices_parse's own allocations */
    json_t *root = json_load_file(path, 0, NULL);
    sy_err rc = SY_ENOMEM;

    assert_non_null(root);
    for (fail_at = 0; rc != SY_OK; fail_at++) {
        sy_errlist errs;
        sy_prices *p = NULL;

        assert_true(fail_at < 100000);
        sy_errlist_init(&errs);
        nalloc = 0;
        json_set_alloc_funcs(failing_malloc, free);
        rc = sy_prices_parse(root, "p", &p, &errs);
        json_set_alloc_funcs(malloc, free);
        assert_true(rc == SY_OK || rc == SY_ENOMEM);
        assert_true((rc == SY_OK) == (p != NULL));
        sy_prices_free(p);
        sy_errlist_cleanup(&errs);
    }
    assert_true(fail_at > 2);
    fail_at = -1;
    json_decref(root);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost_basic),
        cmocka_unit_test(test_cost_cached_and_cache_write),
        cmocka_unit_test(test_cost_reasoning_is_output),
        cmocka_unit_test(test_cost_rounding),
        cmocka_unit_test(test_cost_edges),
        cmocka_unit_test(test_usd_format),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_shipped_list),
        cmocka_unit_test(test_config_integration),
        cmocka_unit_test(test_load_size_cap),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
