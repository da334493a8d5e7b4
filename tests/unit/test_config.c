/* test_config: the config module. Every error kind is checked with its exact path and text,
 * the shipped configs must load cleanly, conf/README.md must hold exactly the generated key
 * reference, and an allocation-failure loop (a failing jansson allocator, which config.c also
 * allocates through) must never crash or leak. Fixtures in tests/unit/data/config: each
 * <name>.json loads cleanly unless <name>.errors lists the exact error lines expected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* cmocka.h needs the headers above first */
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "switchyard/config.h"
#include "switchyard/err.h"

#define DEP(name) "{\"name\":\"" name "\",\"base_url\":\"http://h/v1\",\"model\":\"m\"}"

/* ---- helpers ----------------------------------------------------------------------------- */

static void dump(const char *what, const sy_errlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        print_message("  %s[%zu] %s\n", what, i, l->items[i]);
}

static sy_err parse_text(const char *text, sy_config **out, sy_errlist *errs, sy_errlist *warns)
{
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    sy_err rc;

    if (root == NULL)
        print_message("test JSON does not parse: %s\n", je.text);
    assert_non_null(root);
    rc = sy_config_parse(root, NULL, out, errs, warns);
    json_decref(root);
    return rc;
}

static bool has_line(const sy_errlist *l, const char *line)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], line) == 0)
            return true;
    return false;
}

/* The document must fail with exactly the NULL-terminated <lines> (any order). */
static void expect_errors(const char *text, const char *const *lines)
{
    sy_errlist errs, warns;
    sy_config *cfg = NULL;
    size_t n = 0;
    sy_err rc;

    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    rc = parse_text(text, &cfg, &errs, &warns);
    for (; lines[n] != NULL; n++) {
        if (!has_line(&errs, lines[n])) {
            print_message("missing error line: %s\n", lines[n]);
            dump("errs", &errs);
            fail();
        }
    }
    if (errs.n != n)
        dump("errs", &errs);
    assert_int_equal(errs.n, n);
    assert_int_equal(rc, SY_ECONFIG);
    assert_null(cfg);
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
}

#define EXPECT_ERRORS(text, ...)                                                                   \
    do {                                                                                           \
        const char *const lines_[] = {__VA_ARGS__, NULL};                                          \
        expect_errors((text), lines_);                                                             \
    } while (0)

static sy_config *parse_ok(const char *text, sy_errlist *warns)
{
    sy_errlist errs;
    sy_config *cfg = NULL;
    sy_err rc;

    sy_errlist_init(&errs);
    rc = parse_text(text, &cfg, &errs, warns);
    dump("errs", &errs);
    assert_int_equal(errs.n, 0);
    assert_int_equal(rc, SY_OK);
    assert_non_null(cfg);
    sy_errlist_cleanup(&errs);
    return cfg;
}

static char *source_path(const char *rel)
{
    const char *root = getenv("SY_SOURCE_DIR");
    char *p = NULL;

    if (root == NULL)
        root = ".";
    assert_true(asprintf(&p, "%s/%s", root, rel) > 0);
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s = NULL;
    long n;

    if (f == NULL)
        return NULL;
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    (void)fclose(f);
    return s;
}

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/sy_test_config_XXXXXX");
    int fd;
    FILE *f;

    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* ---- defaults and a full config ---------------------------------------------------------- */

static void test_defaults(void **state)
{
    sy_errlist warns;
    sy_config *cfg;
    const sy_deployment *d;

    (void)state;
    sy_errlist_init(&warns);
    cfg = parse_ok("{\"deployments\":[" DEP("a") "]}", &warns);
    assert_int_equal(warns.n, 0);
    assert_string_equal(cfg->listen_host, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 8080);
    assert_true(json_is_null(cfg->redis));
    assert_string_equal(cfg->data_dir, "var");
    assert_string_equal(cfg->prices_path, "conf/prices.json");
    assert_null(cfg->routes_dir); /* no route tables unless the config names a directory */
    assert_string_equal(cfg->config_dir, ".");
    assert_null(cfg->config_path);
    assert_string_equal(cfg->master_key_env, "SWITCHYARD_MASTER_KEY");
    assert_false(cfg->require_keys);
    assert_int_equal(cfg->max_body_bytes, 8388608);
    assert_int_equal(cfg->max_json_depth, 64);
    assert_int_equal(cfg->max_messages, 2048);
    assert_int_equal(cfg->conn_limit, 16384);
    assert_int_equal(cfg->conn_timeout_s, 60);
    assert_int_equal(cfg->threads, 1);
    assert_int_equal(cfg->shutdown_grace_ms, 10000);
    assert_string_equal(cfg->log_level, "info");
    assert_true(cfg->access_log);
    assert_int_equal(cfg->connect_timeout_ms, 5000);
    assert_int_equal(cfg->first_byte_timeout_ms, 60000);
    assert_int_equal(cfg->idle_timeout_ms, 60000);
    assert_int_equal(cfg->total_timeout_ms, 600000);
    assert_int_equal(cfg->max_attempts, 3);
    assert_int_equal(cfg->retry_base_ms, 100);
    assert_int_equal(cfg->retry_max_ms, 5000);
    assert_int_equal(cfg->max_response_bytes, 67108864);
    assert_int_equal(cfg->ndeployments, 1);
    assert_int_equal(cfg->naliases, 0);
    assert_null(cfg->aliases);

    d = &cfg->deployments[0];
    assert_string_equal(d->name, "a");
    assert_int_equal(d->provider, SY_PROVIDER_OPENAI);
    assert_string_equal(d->base_url, "http://h/v1");
    assert_string_equal(d->model, "m");
    assert_null(d->api_key_env);
    assert_null(d->api_key);
    assert_false(d->disabled);
    assert_null(d->tier_hint);
    assert_null(d->anthropic_version);
    assert_int_equal(d->max_inflight, 0);
    assert_int_equal(d->connect_timeout_ms, 5000);
    assert_int_equal(d->first_byte_timeout_ms, 60000);
    assert_int_equal(d->idle_timeout_ms, 60000);
    assert_int_equal(d->total_timeout_ms, 600000);
    assert_true(d->stream_usage);
    assert_false(d->price.set);
    assert_true(d->price.input == 0 && d->price.output == 0);
    assert_int_equal(d->index, 0);
    assert_ptr_equal(sy_config_deployment(cfg, "a"), d);
    assert_null(sy_config_deployment(cfg, "b"));
    assert_null(sy_config_alias(cfg, "a"));
    sy_config_unref(cfg);
    sy_errlist_cleanup(&warns);
}

static const char full_doc[] =
    "{\"listen\":\"[::1]:0\",\"redis\":{\"url\":\"redis://127.0.0.1:6379\",\"pool\":2},"
    "\"data_dir\":\"/var/lib/sy\",\"prices\":\"p.json\",\"routes\":\"r/\","
    "\"auth\":{\"master_key_env\":\"SY_TEST_MASTER\",\"require_keys\":true},"
    "\"server\":{\"max_body_bytes\":1024,\"max_json_depth\":8,\"max_messages\":10,"
    "\"conn_limit\":100,\"conn_timeout_s\":5,\"threads\":4,\"shutdown_grace_ms\":0,"
    "\"log_level\":\"debug\",\"access_log\":false},"
    "\"upstream\":{\"connect_timeout_ms\":1111,\"first_byte_timeout_ms\":2222,"
    "\"idle_timeout_ms\":3333,\"total_timeout_ms\":4444,\"max_attempts\":5,"
    "\"retry_base_ms\":7,\"retry_max_ms\":70,\"max_response_bytes\":2048},"
    "\"deployments\":["
    "{\"name\":\"loc/al:1.0_x-y\",\"provider\":\"openai\",\"base_url\":\"http://h:1/v1//\","
    "\"model\":\"qwen2.5:7b\",\"tier_hint\":\"local\",\"max_inflight\":8,"
    "\"stream_usage\":false,\"price\":{\"input\":0,\"output\":0}},"
    "{\"name\":\"claude\",\"provider\":\"anthropic\",\"base_url\":\"https://api.anthropic.com/\","
    "\"model\":\"claude-sonnet-4-5\",\"api_key_env\":\"SY_TEST_KEY_A\","
    "\"anthropic_version\":\"2024-01-01\",\"tier_hint\":\"flagship\",\"max_inflight\":0,"
    "\"connect_timeout_ms\":1,\"first_byte_timeout_ms\":2,\"idle_timeout_ms\":3,"
    "\"total_timeout_ms\":4,\"stream_usage\":true,"
    "\"price\":{\"input\":3,\"cached_input\":0.3,\"cache_write\":3.75,\"output\":15,"
    "\"batch_discount\":0.5}}],"
    "\"aliases\":{\"fast\":[\"claude\",\"loc/al:1.0_x-y\"],\"one\":[\"claude\"]}}";

static void test_full(void **state)
{
    sy_errlist warns;
    sy_config *cfg;
    const sy_deployment *a, *b;
    const sy_alias *al;

    (void)state;
    setenv("SY_TEST_KEY_A", "sk-test-a", 1);
    setenv("SY_TEST_MASTER", "master-secret", 1);
    sy_errlist_init(&warns);
    cfg = parse_ok(full_doc, &warns);
    dump("warns", &warns);
    assert_int_equal(warns.n, 0);
    assert_string_equal(cfg->listen_host, "::1");
    assert_int_equal(cfg->listen_port, 0);
    assert_string_equal(json_string_value(json_object_get(cfg->redis, "url")),
                        "redis://127.0.0.1:6379");
    assert_string_equal(cfg->data_dir, "/var/lib/sy");
    assert_string_equal(cfg->prices_path, "p.json");
    assert_string_equal(cfg->routes_dir, "r/");
    assert_string_equal(cfg->master_key_env, "SY_TEST_MASTER");
    assert_string_equal(cfg->master_key, "master-secret");
    assert_true(cfg->require_keys);
    assert_int_equal(cfg->max_body_bytes, 1024);
    assert_int_equal(cfg->max_json_depth, 8);
    assert_int_equal(cfg->max_messages, 10);
    assert_int_equal(cfg->conn_limit, 100);
    assert_int_equal(cfg->conn_timeout_s, 5);
    assert_int_equal(cfg->threads, 4);
    assert_int_equal(cfg->shutdown_grace_ms, 0);
    assert_string_equal(cfg->log_level, "debug");
    assert_false(cfg->access_log);
    assert_int_equal(cfg->connect_timeout_ms, 1111);
    assert_int_equal(cfg->first_byte_timeout_ms, 2222);
    assert_int_equal(cfg->idle_timeout_ms, 3333);
    assert_int_equal(cfg->total_timeout_ms, 4444);
    assert_int_equal(cfg->max_attempts, 5);
    assert_int_equal(cfg->retry_base_ms, 7);
    assert_int_equal(cfg->retry_max_ms, 70);
    assert_int_equal(cfg->max_response_bytes, 2048);

    assert_int_equal(cfg->ndeployments, 2);
    a = sy_config_deployment(cfg, "loc/al:1.0_x-y");
    assert_non_null(a);
    assert_int_equal(a->index, 0);
    assert_string_equal(a->base_url, "http://h:1/v1");
    assert_string_equal(a->model, "qwen2.5:7b");
    assert_string_equal(a->tier_hint, "local");
    assert_int_equal(a->max_inflight, 8);
    assert_false(a->stream_usage);
    assert_null(a->anthropic_version);
    /* timeouts inherited from "upstream" */
    assert_int_equal(a->connect_timeout_ms, 1111);
    assert_int_equal(a->first_byte_timeout_ms, 2222);
    assert_int_equal(a->idle_timeout_ms, 3333);
    assert_int_equal(a->total_timeout_ms, 4444);
    assert_true(a->price.set);
    assert_true(a->price.input == 0 && a->price.cached_input == 0 && a->price.cache_write == 0 &&
                a->price.output == 0);

    b = sy_config_deployment(cfg, "claude");
    assert_non_null(b);
    assert_int_equal(b->index, 1);
    assert_int_equal(b->provider, SY_PROVIDER_ANTHROPIC);
    assert_string_equal(b->base_url, "https://api.anthropic.com");
    assert_string_equal(b->api_key_env, "SY_TEST_KEY_A");
    assert_string_equal(b->api_key, "sk-test-a");
    assert_false(b->disabled);
    assert_string_equal(b->anthropic_version, "2024-01-01");
    assert_int_equal(b->connect_timeout_ms, 1);
    assert_int_equal(b->first_byte_timeout_ms, 2);
    assert_int_equal(b->idle_timeout_ms, 3);
    assert_int_equal(b->total_timeout_ms, 4);
    assert_true(b->stream_usage);
    assert_true(b->price.set);
    assert_true(b->price.input == 3 && b->price.cached_input == 0.3 &&
                b->price.cache_write == 3.75 && b->price.output == 15 &&
                b->price.batch_discount == 0.5);

    assert_int_equal(cfg->naliases, 2);
    al = sy_config_alias(cfg, "fast");
    assert_non_null(al);
    assert_string_equal(al->name, "fast");
    assert_int_equal(al->ntargets, 2);
    assert_int_equal(al->targets[0], 1);
    assert_int_equal(al->targets[1], 0);
    al = sy_config_alias(cfg, "one");
    assert_non_null(al);
    assert_int_equal(al->ntargets, 1);
    assert_null(sy_config_alias(cfg, "claude"));
    sy_config_unref(cfg);
    sy_errlist_cleanup(&warns);
    unsetenv("SY_TEST_KEY_A");
    unsetenv("SY_TEST_MASTER");
}

static void test_price_defaults(void **state)
{
    sy_config *cfg;

    (void)state;
    cfg = parse_ok("{\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h\",\"model\":\"m\","
                   "\"provider\":\"anthropic\",\"price\":{\"input\":2.5,\"output\":10}}]}",
                   NULL);
    /* cached_input and cache_write default to input; anthropic gets its version header */
    assert_true(cfg->deployments[0].price.cached_input == 2.5);
    assert_true(cfg->deployments[0].price.cache_write == 2.5);
    assert_true(cfg->deployments[0].price.batch_discount == 0);
    assert_string_equal(cfg->deployments[0].anthropic_version, "2023-06-01");
    assert_string_equal(cfg->deployments[0].base_url, "http://h");
    sy_config_unref(cfg);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_unknown_keys(void **state)
{
    (void)state;
    EXPECT_ERRORS(
        "{\"bogus\":1,\"auth\":{\"x\":1},\"server\":{\"thread\":2},"
        "\"upstream\":{\"retries\":1},\"deployments\":[" DEP(
            "a") ","
                 "{\"name\":\"b\",\"base_url\":\"http://h\",\"model\":\"m\",\"timeout_ms\":5,"
                 "\"max_inflght\":1,\"price\":{\"input\":1,\"output\":1,\"cache_read\":1}},"
                 "{\"name\":\"c\",\"base_url\":\"http://h\",\"model\":\"m\",\"timeout_ms\":5}]}",
        "bogus: unknown key 'bogus'", "auth.x: unknown key 'x'",
        "server.thread: unknown key 'thread' (did you mean 'threads'?)",
        "upstream.retries: unknown key 'retries'",
        "deployments[1].timeout_ms: unknown key 'timeout_ms'",
        "deployments[1].max_inflght: unknown key 'max_inflght' (did you mean "
        "'max_inflight'?)",
        "deployments[1].price.cache_read: unknown key 'cache_read'",
        "deployments[2].timeout_ms: unknown key 'timeout_ms'");
}

static void test_unknown_key_shown_safely(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"a\\nb\":1,\"deployments\":[" DEP("a") "]}", "a?b: unknown key 'a?b'");
    EXPECT_ERRORS("{\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                  "\":1,\"deployments\":[" DEP("a") "]}",
                  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...: unknown "
                  "key 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'");
}

static void test_bad_types(void **state)
{
    (void)state;
    EXPECT_ERRORS(
        "{\"listen\":8080,\"redis\":\"localhost\",\"data_dir\":5,\"prices\":\"\",\"routes\":null,"
        "\"auth\":[],\"server\":{\"threads\":\"2\",\"access_log\":1,\"log_level\":\"loud\","
        "\"max_body_bytes\":0,\"max_json_depth\":1e3},"
        "\"upstream\":{\"max_attempts\":2.5,\"connect_timeout_ms\":0,\"retry_max_ms\":-1},"
        "\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h\",\"model\":\"m\","
        "\"provider\":\"azure\",\"max_inflight\":-1,\"stream_usage\":\"yes\","
        "\"connect_timeout_ms\":600001,\"price\":{\"input\":\"free\",\"output\":-1,"
        "\"batch_discount\":1.5}},{\"name\":\"b\",\"base_url\":\"http://h\",\"model\":\"m\","
        "\"price\":7}],\"aliases\":[]}",
        "listen: expected \"HOST:PORT\"", "redis: must be null or an object",
        "data_dir: must be a non-empty string", "prices: must be a non-empty string",
        "routes: must be a non-empty string", "auth: must be an object",
        "server.max_body_bytes: must be an integer in 1..1073741824",
        "server.max_json_depth: must be an integer in 1..2048",
        "server.threads: must be an integer in 1..256",
        "server.log_level: must be one of \"debug\", \"info\", \"warn\", \"error\"",
        "server.access_log: must be true or false",
        "upstream.connect_timeout_ms: must be an integer in 1..600000",
        "upstream.max_attempts: must be an integer in 1..10",
        "upstream.retry_max_ms: must be an integer in 0..3600000",
        "deployments[0].provider: must be one of \"openai\", \"anthropic\"",
        "deployments[0].max_inflight: must be an integer >= 0",
        "deployments[0].connect_timeout_ms: must be an integer in 1..600000",
        "deployments[0].stream_usage: must be true or false",
        "deployments[0].price.input: must be a number >= 0",
        "deployments[0].price.output: must be a number >= 0",
        "deployments[0].price.batch_discount: must be a number in 0..1",
        "deployments[1].price: must be an object",
        "aliases: must be an object of alias name -> array of deployment names");
}

static void test_required(void **state)
{
    (void)state;
    EXPECT_ERRORS("{}", "deployments: required key missing");
    EXPECT_ERRORS("{\"deployments\":[]}", "deployments: must be a non-empty array of objects");
    EXPECT_ERRORS("{\"deployments\":{}}", "deployments: must be a non-empty array of objects");
    EXPECT_ERRORS(
        "{\"deployments\":[{}, 5, " DEP("ok") ", {\"name\":\"p\",\"base_url\":\"http://h\","
                                              "\"model\":\"m\",\"price\":{}}]}",
        "deployments[0].name: required key missing",
        "deployments[0].base_url: required key missing",
        "deployments[0].model: required key missing", "deployments[1]: must be an object",
        "deployments[3].price.input: required key missing",
        "deployments[3].price.output: required key missing");
    EXPECT_ERRORS("[1]", "(top level): must be an object");
}

static void test_string_checks(void **state)
{
    sy_errlist errs;
    sy_config *cfg = NULL;

    (void)state;
    EXPECT_ERRORS(
        "{\"deployments\":[{\"name\":\"bad name\",\"base_url\":\"ftp://h\",\"model\":\"m m\","
        "\"tier_hint\":\"x y\"},{\"name\":\"b\",\"base_url\":\"https://\",\"model\":\"m\"},"
        "{\"name\":\"c\",\"base_url\":\"http:///x\",\"model\":\"\"}],"
        "\"auth\":{\"master_key_env\":\"1ABC\"}}",
        "auth.master_key_env: must name an environment variable ([A-Za-z_][A-Za-z0-9_]*), not "
        "hold a secret",
        "deployments[0].name: must match [A-Za-z0-9._:/-]+ (at most 128 characters)",
        "deployments[0].base_url: must be an http:// or https:// URL",
        "deployments[0].model: must be printable without spaces (at most 256 characters)",
        "deployments[0].tier_hint: must match [A-Za-z0-9._:/-]+ (at most 128 characters)",
        "deployments[1].base_url: must be an http:// or https:// URL",
        "deployments[2].base_url: must be an http:// or https:// URL",
        "deployments[2].model: must be a non-empty string");

    /* a key pasted where a variable name belongs is refused and never echoed */
    sy_errlist_init(&errs);
    assert_int_equal(parse_text("{\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h\","
                                "\"model\":\"m\",\"api_key_env\":\"sk-proj-SECRET123\"}]}",
                                &cfg, &errs, NULL),
                     SY_ECONFIG);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0], "deployments[0].api_key_env: must name an environment "
                                       "variable ([A-Za-z_][A-Za-z0-9_]*), not hold a secret");
    assert_null(strstr(errs.items[0], "SECRET123"));
    sy_errlist_cleanup(&errs);
}

static void test_duplicate_names(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"deployments\":[" DEP("x") "," DEP("y") "," DEP("x") "," DEP("y") "]}",
                  "deployments[2].name: duplicate deployment name 'x'",
                  "deployments[3].name: duplicate deployment name 'y'");
}

static void test_secrets(void **state)
{
    sy_errlist errs;
    sy_config *cfg = NULL;

    (void)state;
    EXPECT_ERRORS("{\"password\":\"hunter2\",\"auth\":{\"master_key\":\"m\"},"
                  "\"redis\":{\"host\":\"h\",\"password\":\"p\",\"sentinel\":[{\"Token\":\"t\"}]},"
                  "\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h\",\"model\":\"m\","
                  "\"api_key\":\"sk-live-123\",\"price\":{\"input\":1,\"output\":1,\"key\":\"k\"}}"
                  "]}",
                  "password: literal secrets are not allowed in config files; name an "
                  "environment variable instead",
                  "auth.master_key: literal secrets are not allowed in config files; use "
                  "master_key_env",
                  "redis.password: literal secrets are not allowed in config files; name an "
                  "environment variable instead",
                  "redis.sentinel[0].Token: literal secrets are not allowed in config files; name "
                  "an environment variable instead",
                  "redis.host: unknown key 'host'", "redis.sentinel: unknown key 'sentinel'",
                  "redis.url: required",
                  "deployments[0].api_key: literal secrets are not allowed in config files; use "
                  "api_key_env",
                  "deployments[0].price.key: literal secrets are not allowed in config files; "
                  "use api_key_env");

    sy_errlist_init(&errs);
    assert_int_equal(parse_text("{\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h\","
                                "\"model\":\"m\",\"api_key\":\"sk-live-123\"}]}",
                                &cfg, &errs, NULL),
                     SY_ECONFIG);
    for (size_t i = 0; i < errs.n; i++)
        assert_null(strstr(errs.items[i], "sk-live"));
    sy_errlist_cleanup(&errs);
}

static void test_anthropic_version_only_for_anthropic(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h\",\"model\":\"m\","
                  "\"anthropic_version\":\"2023-06-01\"}]}",
                  "deployments[0].anthropic_version: only allowed with provider \"anthropic\"");
}

static void test_retry_bounds_cross(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"upstream\":{\"retry_base_ms\":500,\"retry_max_ms\":100},"
                  "\"deployments\":[" DEP("a") "]}",
                  "upstream.retry_max_ms: must be >= upstream.retry_base_ms (500)");
}

static void test_aliases(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"deployments\":[" DEP("a") "," DEP(
                      "b") "],\"aliases\":{"
                           "\"fast\":[\"a\",\"nope\",7,\"a\",\"slow\"],\"a\":[\"b\"],\"slow\":[],"
                           "\"odd name\":[\"a\"],\"s2\":\"a\"}}",
                  "aliases.fast[1]: unknown deployment 'nope'", "aliases.fast[2]: must be a string",
                  "aliases.fast[3]: duplicate target 'a'",
                  "aliases.fast[4]: 'slow' is an alias; aliases list deployments only",
                  "aliases.a: alias shadows deployment 'a'",
                  "aliases.slow: must be a non-empty array of deployment names",
                  "aliases.odd name: alias name must match [A-Za-z0-9._:/-]+ (at most 128 "
                  "characters)",
                  "aliases.s2: must be a non-empty array of deployment names");
}

static void test_multiple_errors_at_once(void **state)
{
    (void)state;
    /* one document, problems at every level: all of them are reported */
    EXPECT_ERRORS(
        "{\"listen\":\"nohost\",\"server\":{\"threads\":0},\"deployments\":[" DEP(
            "x") ",{\"name\":\"x\",\"base_url\":\"http://h\",\"model\":\"m\","
                 "\"max_inflight\":-3},{\"name\":\"z\",\"base_url\":\"http://h\",\"model\":\"m\","
                 "\"timeout_ms\":1}],\"aliases\":{\"fast\":[\"x\",\"nope\"]}}",
        "listen: expected \"HOST:PORT\"", "server.threads: must be an integer in 1..256",
        "deployments[1].max_inflight: must be an integer >= 0",
        "deployments[1].name: duplicate deployment name 'x'",
        "deployments[2].timeout_ms: unknown key 'timeout_ms'",
        "aliases.fast[1]: unknown deployment 'nope'");
}

/* ---- environment ------------------------------------------------------------------------- */

static void test_disabled_deployment(void **state)
{
    const char *doc = "{\"deployments\":[" DEP(
        "local") ",{\"name\":\"cloud\",\"base_url\":"
                 "\"https://h\",\"model\":\"m\",\"api_key_env\":\"SY_TEST_UNSET_KEY\"}]}";
    sy_errlist warns;
    sy_config *cfg;

    (void)state;
    unsetenv("SY_TEST_UNSET_KEY");
    sy_errlist_init(&warns);
    cfg = parse_ok(doc, &warns);
    assert_int_equal(warns.n, 1);
    assert_string_equal(warns.items[0], "deployments[1].api_key_env: deployment 'cloud' disabled: "
                                        "environment variable SY_TEST_UNSET_KEY is unset or empty");
    assert_true(cfg->deployments[1].disabled);
    assert_null(cfg->deployments[1].api_key);
    assert_false(cfg->deployments[0].disabled);
    sy_config_unref(cfg);
    sy_errlist_cleanup(&warns);

    /* empty counts as unset */
    setenv("SY_TEST_UNSET_KEY", "", 1);
    sy_errlist_init(&warns);
    cfg = parse_ok(doc, &warns);
    assert_int_equal(warns.n, 1);
    assert_true(cfg->deployments[1].disabled);
    sy_config_unref(cfg);
    sy_errlist_cleanup(&warns);

    /* set: enabled, key copied, no warning (warns may also be NULL) */
    setenv("SY_TEST_UNSET_KEY", "sk-abc", 1);
    cfg = parse_ok(doc, NULL);
    assert_false(cfg->deployments[1].disabled);
    assert_string_equal(cfg->deployments[1].api_key, "sk-abc");
    sy_config_unref(cfg);
    unsetenv("SY_TEST_UNSET_KEY");
}

static void test_master_key(void **state)
{
    sy_errlist warns;
    sy_config *cfg;

    (void)state;
    unsetenv("SY_TEST_MASTER");
    sy_errlist_init(&warns);
    cfg = parse_ok("{\"auth\":{\"master_key_env\":\"SY_TEST_MASTER\",\"require_keys\":true},"
                   "\"deployments\":[" DEP("a") "]}",
                   &warns);
    assert_null(cfg->master_key);
    assert_int_equal(warns.n, 1);
    assert_string_equal(warns.items[0], "auth.master_key_env: environment variable SY_TEST_MASTER "
                                        "is unset or empty: /admin endpoints are disabled");
    sy_config_unref(cfg);
    sy_errlist_cleanup(&warns);
}

/* ---- listen ------------------------------------------------------------------------------ */

static void listen_ok(const char *s, const char *host, int port)
{
    char *h = NULL;
    int p = -1;

    assert_int_equal(sy_config_parse_listen(s, &h, &p), SY_OK);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
    free(h);
}

static void test_parse_listen(void **state)
{
    static const char *const bad[] = {
        "",         ":80",         "localhost", "localhost:",   "localhost:65536",
        "h:-1",     "h:8o",        "h:123456",  "::1:8080",     "[::1]8080",
        "[]:80",    "[::1]:",      "[::1]",     "host name:80", "h:80 ",
        "[1.2]:80", "[::1]:80:80", "a/b:80",    "h:+80",        "[::g]:80",
    };
    char *h = (char *)"untouched";
    int p = 42;

    (void)state;
    listen_ok("127.0.0.1:0", "127.0.0.1", 0);
    listen_ok("[::1]:8080", "::1", 8080);
    listen_ok("localhost:80", "localhost", 80);
    listen_ok("0.0.0.0:65535", "0.0.0.0", 65535);
    listen_ok("[fe80::1%eth0]:443", "fe80::1%eth0", 443);
    listen_ok("my-host.example.com:00080", "my-host.example.com", 80);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (sy_config_parse_listen(bad[i], &h, &p) != SY_EINVAL) {
            print_message("accepted bad listen value '%s'\n", bad[i]);
            fail();
        }
    }
    assert_int_equal(sy_config_parse_listen(NULL, &h, &p), SY_EINVAL);
    assert_string_equal(h, "untouched");
    assert_int_equal(p, 42);
}

/* ---- files ------------------------------------------------------------------------------- */

static void load_expect_one(const char *text, const char *suffix)
{
    char *path = write_temp(text);
    char *want = NULL;
    sy_errlist errs;
    sy_config *cfg = NULL;

    sy_errlist_init(&errs);
    assert_int_equal(sy_config_load(path, &cfg, &errs, NULL), SY_ECONFIG);
    assert_null(cfg);
    assert_true(asprintf(&want, "%s%s", path, suffix) > 0);
    dump("errs", &errs);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0], want);
    free(want);
    sy_errlist_cleanup(&errs);
    unlink(path);
    free(path);
}

static void test_load_errors(void **state)
{
    sy_errlist errs;
    sy_config *cfg = NULL;

    (void)state;
    load_expect_one("{\n  \"listen\": \"127.0.0.1:1\",\n  \"listen\": \"127.0.0.1:2\"\n}\n",
                    ":3:10: duplicate object key near '\"listen\"'");
    load_expect_one("{\n  \"deployments\": [\n    {\"name\": \"a\",}\n  ]\n}\n",
                    ":3:18: string or '}' expected near '}'");
    load_expect_one("", ":1:0: '[' or '{' expected near end of file");
    load_expect_one("{\"deployments\": [" DEP("a") "]} trailing",
                    ":1:77: end of file expected near 'trailing'");

    sy_errlist_init(&errs);
    assert_int_equal(sy_config_load("/nonexistent/sy.json", &cfg, &errs, NULL), SY_ECONFIG);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.items[0], "/nonexistent/sy.json: cannot open: No such file or "
                                       "directory");
    sy_errlist_cleanup(&errs);
}

static void test_load_sets_paths(void **state)
{
    /* sy_config_load prices deployments: explicit here, the prices file is not read */
    char *path = write_temp("{\"deployments\": [{\"name\":\"a\",\"base_url\":\"http://h/v1\","
                            "\"model\":\"m\",\"price\":{\"input\":0,\"output\":0}}]}");
    sy_errlist errs;
    sy_config *cfg = NULL;

    (void)state;
    sy_errlist_init(&errs);
    assert_int_equal(sy_config_load(path, &cfg, &errs, NULL), SY_OK);
    assert_string_equal(cfg->config_path, path);
    assert_string_equal(cfg->config_dir, "/tmp");
    sy_config_unref(cfg);
    sy_errlist_cleanup(&errs);
    unlink(path);
    free(path);
}

static char *read_lines_file(const char *path, const char *dir)
{
    /* "{dir}" in an .errors file stands for the fixture directory */
    char *raw = slurp(path);
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);

    assert_non_null(raw);
    assert_non_null(f);
    for (const char *p = raw; *p != '\0'; p++) {
        if (strncmp(p, "{dir}", 5) == 0) {
            (void)fputs(dir, f);
            p += 4;
        } else {
            (void)fputc(*p, f);
        }
    }
    (void)fclose(f);
    free(raw);
    return out;
}

static void test_fixtures(void **state)
{
    char *dir = source_path("tests/unit/data/config");
    DIR *d = opendir(dir);
    struct dirent *e;
    int count = 0;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        char *json = NULL, *expect_path = NULL, *want = NULL;
        sy_errlist errs, warns;
        sy_config *cfg = NULL;
        sy_err rc;

        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        count++;
        assert_true(asprintf(&json, "%s/%s", dir, e->d_name) > 0);
        assert_true(asprintf(&expect_path, "%s/%.*s.errors", dir, (int)(len - 5), e->d_name) > 0);
        sy_errlist_init(&errs);
        sy_errlist_init(&warns);
        rc = sy_config_load(json, &cfg, &errs, &warns);
        if (access(expect_path, R_OK) == 0) {
            char *got = NULL;
            size_t gn = 0;
            FILE *f = open_memstream(&got, &gn);

            want = read_lines_file(expect_path, dir);
            for (size_t i = 0; i < errs.n; i++)
                (void)fprintf(f, "%s\n", errs.items[i]);
            (void)fclose(f);
            if (strcmp(got, want) != 0)
                print_message("%s:\n--- want\n%s--- got\n%s", e->d_name, want, got);
            assert_string_equal(got, want);
            assert_int_equal(rc, SY_ECONFIG);
            free(got);
        } else {
            dump("errs", &errs);
            assert_int_equal(rc, SY_OK);
            sy_config_unref(cfg);
        }
        free(want);
        free(json);
        free(expect_path);
        sy_errlist_cleanup(&errs);
        sy_errlist_cleanup(&warns);
    }
    closedir(d);
    assert_true(count >= 3);
    free(dir);
}

static void test_shipped_configs(void **state)
{
    char *path = source_path("conf/switchyard.json");
    sy_errlist errs, warns;
    sy_config *cfg = NULL;
    const sy_alias *al;
    const sy_deployment *d;

    (void)state;
    unsetenv("OPENAI_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    assert_int_equal(sy_config_load(path, &cfg, &errs, &warns), SY_OK);
    assert_int_equal(errs.n, 0);
    /* one warning per keyed deployment, none for the local one */
    assert_int_equal(warns.n, 3);
    assert_string_equal(cfg->listen_host, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 8080);
    assert_true(json_is_null(cfg->redis));
    assert_int_equal(cfg->ndeployments, 4);
    d = sy_config_deployment(cfg, "local-small");
    assert_non_null(d);
    assert_false(d->disabled);
    assert_true(d->price.set && d->price.input == 0 && d->price.output == 0);
    assert_int_equal(d->max_inflight, 8);
    for (size_t i = 0; i < cfg->ndeployments; i++)
        assert_true(cfg->deployments[i].price.set);
    assert_true(sy_config_deployment(cfg, "gpt-4.1-mini")->disabled);
    assert_true(sy_config_deployment(cfg, "gpt-4.1")->disabled);
    d = sy_config_deployment(cfg, "claude-sonnet");
    assert_true(d->disabled);
    assert_int_equal(d->provider, SY_PROVIDER_ANTHROPIC);
    assert_string_equal(d->anthropic_version, "2023-06-01");
    al = sy_config_alias(cfg, "fast");
    assert_non_null(al);
    assert_int_equal(al->ntargets, 2);
    assert_string_equal(cfg->deployments[al->targets[0]].name, "local-small");
    assert_string_equal(cfg->deployments[al->targets[1]].name, "gpt-4.1-mini");
    sy_config_unref(cfg);
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
    free(path);

    path = source_path("conf/demo.json");
    cfg = NULL;
    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    assert_int_equal(sy_config_load(path, &cfg, &errs, &warns), SY_OK);
    assert_int_equal(errs.n, 0);
    assert_int_equal(warns.n, 0);
    assert_int_equal(cfg->listen_port, 8080);
    assert_non_null(d = sy_config_deployment(cfg, "demo-local"));
    assert_string_equal(d->model, "fake-small");
    assert_string_equal(d->base_url, "http://127.0.0.1:9901/v1");
    assert_true(d->price.set && d->price.input == 0);
    assert_non_null(d = sy_config_deployment(cfg, "demo-flagship"));
    assert_string_equal(d->model, "fake-large");
    assert_true(d->price.set && d->price.input > 0 && d->price.output > 0);
    al = sy_config_alias(cfg, "demo");
    assert_non_null(al);
    assert_int_equal(al->ntargets, 2);
    assert_string_equal(cfg->deployments[al->targets[0]].name, "demo-local");
    assert_string_equal(cfg->deployments[al->targets[1]].name, "demo-flagship");
    sy_config_unref(cfg);
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
    free(path);
}

/* ---- docs -------------------------------------------------------------------------------- */

static char *generated_doc(void)
{
    char *doc = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&doc, &n);

    assert_non_null(f);
    assert_int_equal(sy_config_doc(f), SY_OK);
    (void)fclose(f);
    return doc;
}

static void test_docs_in_sync(void **state)
{
    char *path = source_path("conf/README.md");
    char *readme = slurp(path);
    char *doc = generated_doc();
    char *mark;

    (void)state;
    assert_non_null(readme);
    mark = strstr(readme, SY_CONFIG_DOC_MARKER "\n");
    assert_non_null(mark);
    mark += strlen(SY_CONFIG_DOC_MARKER "\n");
    if (getenv("SY_UPDATE_DOCS") != NULL) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        (void)fwrite(readme, 1, (size_t)(mark - readme), f);
        (void)fputs(doc, f);
        assert_int_equal(fclose(f), 0);
        print_message("rewrote %s\n", path);
    } else if (strcmp(mark, doc) != 0) {
        print_message("conf/README.md is out of date: run SY_UPDATE_DOCS=1 build/test_config\n");
        fail();
    }
    free(doc);
    free(readme);
    free(path);
}

/* Every key the full config uses must be documented, under its full path. */
static void doc_covers(const char *doc, const json_t *v, const char *path)
{
    const char *key;
    json_t *item;
    char sub[256], needle[300];

    if (!json_is_object(v))
        return;
    json_object_foreach ((json_t *)v, key, item) {
        (void)snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", key);
        (void)snprintf(needle, sizeof(needle), "| `%s` |", sub);
        if (strstr(doc, needle) == NULL) {
            print_message("undocumented key %s\n", sub);
            fail();
        }
        if (strcmp(sub, "deployments") == 0)
            doc_covers(doc, json_array_get(item, 1), "deployments[]");
        else if (strcmp(sub, "redis") != 0 && strcmp(sub, "aliases") != 0)
            doc_covers(doc, item, sub);
    }
}

static void test_doc_covers_keys(void **state)
{
    char *doc = generated_doc();
    json_t *root = json_loads(full_doc, 0, NULL);

    (void)state;
    assert_non_null(root);
    doc_covers(doc, root, "");
    json_decref(root);
    free(doc);
}

/* ---- refcounting ------------------------------------------------------------------------- */

static void *ref_worker(void *arg)
{
    sy_config *cfg = arg;

    for (int i = 0; i < 100000; i++)
        sy_config_unref(sy_config_ref(cfg));
    return NULL;
}

static void test_refcount(void **state)
{
    sy_config *cfg = parse_ok("{\"deployments\":[" DEP("a") "]}", NULL);
    pthread_t th[4];

    (void)state;
    assert_ptr_equal(sy_config_ref(cfg), cfg);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, ref_worker, cfg), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(cfg->refs, 2);
    sy_config_unref(cfg);
    assert_string_equal(cfg->deployments[0].name, "a"); /* still alive */
    sy_config_unref(cfg);
    assert_null(sy_config_ref(NULL));
    sy_config_unref(NULL);
}

/* ---- allocation failure ------------------------------------------------------------------ */

static size_t fail_at;
static size_t nalloc;

static void *failing_malloc(size_t n)
{
    if (nalloc++ == fail_at)
        return NULL;
    return malloc(n);
}

/* How many allocations jansson's parser makes for the file at <path>. */
static size_t parser_allocs(const char *path)
{
    char *text = slurp(path);
    json_t *root;

    assert_non_null(text);
    nalloc = 0;
    fail_at = SIZE_MAX;
    json_set_alloc_funcs(failing_malloc, free);
    root = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, NULL);
    json_set_alloc_funcs(malloc, free);
    assert_non_null(root);
    json_decref(root);
    free(text);
    return nalloc;
}

/* Fails allocation <from>, <from>+1, ... until the call gets through with <final>; each
 * failure must be SY_ENOMEM with a line in errs, never a crash, and leave nothing allocated
 * (LeakSanitizer checks at exit). */
static void torture(const char *path, const json_t *root, size_t from, sy_err final)
{
    sy_err rc = SY_ENOMEM;

    for (fail_at = from; rc != final; fail_at++) {
        sy_errlist errs, warns;
        sy_config *cfg = NULL;

        assert_true(fail_at < from + 100000);
        sy_errlist_init(&errs);
        sy_errlist_init(&warns);
        nalloc = 0;
        json_set_alloc_funcs(failing_malloc, free);
        if (path != NULL)
            rc = sy_config_load(path, &cfg, &errs, &warns);
        else
            rc = sy_config_parse(root, "dir", &cfg, &errs, &warns);
        json_set_alloc_funcs(malloc, free);
        if (rc != final && rc != SY_ENOMEM)
            dump("errs", &errs);
        assert_true(rc == final || rc == SY_ENOMEM);
        assert_true(errs.n >= 1 || rc == SY_OK);
        assert_true((rc == SY_OK) == (cfg != NULL));
        sy_config_unref(cfg);
        sy_errlist_cleanup(&errs);
        sy_errlist_cleanup(&warns);
    }
    assert_true(fail_at > from + 1);
}

static void test_alloc_failure(void **state)
{
    /* The shipped config without its route directory: route files and their classifier
     * weights (a large JSON file) are loaded by their own module, tested there. */
    char *shipped = source_path("conf/switchyard.json");
    char *text = slurp(shipped);
    char *at = strstr(text, "\"routes\": \"routes/\"");
    assert_non_null(at);
    memcpy(at, "\"routes\": \"/nodir/\"", strlen("\"routes\": \"/nodir/\"")); /* same length */
    char *path = write_temp(text);
    json_t *root;

    free(text);
    free(shipped);
    (void)state;
    setenv("OPENAI_API_KEY", "sk-torture", 1); /* one key copied, others disabled */
    unsetenv("ANTHROPIC_API_KEY");
    /* jansson 2.14's parser itself is not allocation-failure safe (parse_object leaks the
     * object when a key cannot be allocated; the lexer crashes when its buffer cannot grow),
     * so the loop over sy_config_load starts after the parser's allocations */
    torture(path, NULL, parser_allocs(path), SY_OK);
    unsetenv("OPENAI_API_KEY");
    unlink(path);
    free(path);

    root = json_loads(full_doc, 0, NULL);
    assert_non_null(root);
    torture(NULL, root, 0, SY_OK);
    json_decref(root);

    root = json_loads(
        "{\"bogus\":1,\"deployments\":[" DEP("x") "," DEP("x") "],"
                                                               "\"aliases\":{\"f\":[\"x\",\"y\"]}}",
        0, NULL);
    assert_non_null(root);
    torture(NULL, root, 0, SY_ECONFIG);
    json_decref(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_price_defaults),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_unknown_key_shown_safely),
        cmocka_unit_test(test_bad_types),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_string_checks),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_anthropic_version_only_for_anthropic),
        cmocka_unit_test(test_retry_bounds_cross),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_multiple_errors_at_once),
        cmocka_unit_test(test_disabled_deployment),
        cmocka_unit_test(test_master_key),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_sets_paths),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_shipped_configs),
        cmocka_unit_test(test_docs_in_sync),
        cmocka_unit_test(test_doc_covers_keys),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_alloc_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
