/* Unit tests for routes: every kind of error in a route file with its file and
 * JSON path, the routes directory loader, matching by model and header, each
 * rule condition, and the adaptive threshold of target_flagship_share
 * converging to its share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/config.h"
#include "switchyard/health.h"
#include "switchyard/routes.h"
#include "weights_fixture.h"

/* ---- fixtures ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* A weights file with only a bias: every request scores sigmoid(0) = 0.5. */
static int group_setup(void **state)
{
    (void)state;
    return wf_setup("sy-test-routes", 0, 0.25, "{}");
}

static int group_teardown(void **state)
{
    (void)state;
    return wf_teardown();
}

static int teardown(void **state)
{
    (void)state;
    sy_routes_reset_state();
    sy_health_reset_all();
    return 0;
}

static const char *deps_json = "{\"deployments\":["
                               "{\"name\":\"small\",\"base_url\":\"http://h/"
                               "v1\",\"model\":\"s\",\"price\":{\"input\":0,\"output\":0}},"
                               "{\"name\":\"mini\",\"base_url\":\"http://h/"
                               "v1\",\"model\":\"m\",\"price\":{\"input\":0,\"output\":0}},"
                               "{\"name\":\"big\",\"base_url\":\"http://h/"
                               "v1\",\"model\":\"b\",\"price\":{\"input\":0,\"output\":0}}]}";

static sy_config *load_config(void)
{
    json_t *root = json_loads(deps_json, 0, NULL);
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

/* Parses <text> as file "t.json" against <cfg>; returns the rc, the table in
 * *out (freed by the caller) and the errors in <errs>. */
static sy_err parse(const sy_config *cfg, const char *text, sy_routes **out, sy_errlist *errs)
{
    json_error_t je;
    json_t *doc = json_loads(with_weights(text), 0, &je);
    if (doc == NULL)
        print_error("test JSON: %s at %d:%d\n", je.text, je.line, je.column);
    assert_non_null(doc);
    sy_routes *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    sy_err rc = sy_routes_parse(doc, "t.json", cfg, t, errs);
    json_decref(doc);
    *out = t;
    return rc;
}

static bool has_error(const sy_errlist *errs, const char *a, const char *b)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strstr(errs->items[i], a) != NULL && (b == NULL || strstr(errs->items[i], b) != NULL))
            return true;
    return false;
}

/* Asserts that <text> fails with one error line containing both <path> and
 * <msg>. */
static void expect_error(const char *text, const char *path, const char *msg)
{
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_routes *t = NULL;
    sy_errlist_init(&errs);
    sy_err rc = parse(cfg, text, &t, &errs);
    if (rc != SY_ECONFIG || !has_error(&errs, path, msg)) {
        print_error("expected an error at '%s' saying '%s'; got rc=%d and:\n", path, msg, rc);
        for (size_t i = 0; i < errs.n; i++)
            print_error("  %s\n", errs.items[i]);
        fail();
    }
    /* every line names the file */
    for (size_t i = 0; i < errs.n; i++)
        assert_true(strncmp(errs.items[i], "t.json: ", 8) == 0);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

/* Opens a route file with one route "r" matching model "m"; the test adds the route's other keys
 * and closes it with "}]}". */
#define ROUTE_R "{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"m\"},"

/* A valid two-tier route; tests splice in what they need. */
#define TIERS2                                                                                     \
    "\"tiers\":[{\"name\":\"local\",\"targets\":[\"small\",\"mini\"]},"                            \
    "{\"name\":\"flagship\",\"targets\":[\"big\"]}]"

/* ---- parsing ---- */

static void test_parse_valid(void **state)
{
    (void)state;
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_routes *t = NULL;
    sy_errlist_init(&errs);
    sy_err rc = parse(cfg,
                      "{\"routes\":[{\"name\":\"auto\",\"match\":{\"model\":[\"auto\",\"a2\"]},"
                      "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"flagship\"}],"
                      "\"classifier\":{\"weights\":\"@W\",\"target_flagship_share\":0.3,"
                      "\"window\":100},"
                      "\"tiers\":[{\"name\":\"local\",\"targets\":[\"small\",\"mini\"],"
                      "\"strategy\":\"weighted\",\"weights\":[3,1]},"
                      "{\"name\":\"flagship\",\"targets\":[\"big\"],\"strategy\":\"lowest_"
                      "latency\"}],"
                      "\"fallback\":{\"on\":[\"timeout\",503],\"max_attempts\":2},"
                      "\"affinity\":\"conversation\",\"affinity_ttl_s\":60,"
                      "\"cache\":{\"mode\":\"always\",\"ttl_s\":5},\"reference\":\"big\"},"
                      "{\"name\":\"direct\",\"match\":{\"model\":\"*\"},\"target\":\"by_model_"
                      "name\"}]}",
                      &t, &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_error("%s\n", errs.items[i]);
    assert_int_equal(rc, SY_OK);
    assert_int_equal(errs.n, 0);
    assert_int_equal(t->n, 2);
    const sy_route *r = &t->routes[0];
    assert_string_equal(r->name, "auto");
    assert_int_equal(r->nmodels, 2);
    assert_int_equal(r->nrules, 1);
    assert_string_equal(r->rules[0].label, "rules[0]");
    assert_int_equal(r->rules[0].tier, 1);
    assert_non_null(r->clf);
    assert_true(r->threshold == 0.25); /* the weights file's threshold */
    assert_true(r->target_share == 0.3);
    assert_int_equal(r->window, 100);
    assert_int_equal(r->ntiers, 2);
    assert_int_equal(r->tiers[0].strategy, SY_STRAT_WEIGHTED);
    assert_int_equal(r->tiers[0].ntargets, 2);
    assert_true(r->tiers[0].weights[0] == 3 && r->tiers[0].weights[1] == 1);
    assert_int_equal(r->tiers[1].strategy, SY_STRAT_LOWEST_LATENCY);
    assert_int_equal(r->tiers[1].targets[0], 2);
    assert_int_equal(r->fallback_on, SY_FALLBACK_TIMEOUT);
    assert_int_equal(r->nstatuses, 1);
    assert_int_equal(r->statuses[0], 503);
    assert_int_equal(r->max_attempts, 2);
    assert_true(r->affinity);
    assert_int_equal(r->affinity_ttl_s, 60);
    assert_int_equal(r->cache_mode, SY_CACHE_ALWAYS);
    assert_int_equal(r->reference, 2);
    assert_true(t->routes[1].by_model_name);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

static void test_parse_defaults(void **state)
{
    (void)state;
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_routes *t = NULL;
    sy_errlist_init(&errs);
    assert_int_equal(parse(cfg,
                           ROUTE_R
                           "\"classifier\":{\"weights\":\"@W\",\"threshold\":0.7}," TIERS2 "}]}",
                           &t, &errs),
                     SY_OK);
    const sy_route *r = &t->routes[0];
    assert_true(r->threshold == 0.7); /* the route's own threshold wins over the file's */
    assert_true(r->target_share == 0);
    assert_int_equal(r->tiers[0].strategy, SY_STRAT_ORDERED);
    assert_int_equal(r->fallback_on, SY_FALLBACK_CONNECT | SY_FALLBACK_TIMEOUT);
    assert_true(r->nstatuses >= 5);
    assert_int_equal(r->max_attempts, 0);
    assert_false(r->affinity);
    assert_int_equal(r->cache_mode, SY_CACHE_NEVER);
    assert_int_equal(r->reference, -1);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

static void test_error_unknown_deployment(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\"]},"
                 "{\"name\":\"b\",\"targets\":[\"big\",\"nope\"]}]}]}",
                 "routes[0].tiers[1].targets[1]: ", "unknown deployment 'nope'");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[7]}]}]}",
                 "routes[0].tiers[0].targets[0]: ", "expected a deployment name");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[]}]}]}",
                 "routes[0].tiers[0].targets: ", "non-empty array");
    expect_error(ROUTE_R TIERS2
                 ",\"reference\":\"ghost\"}]}",
                 "routes[0].reference: ", "deployment");
}

static void test_error_bad_regex(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"local\"},"
                 "{\"when\":{\"last_user_matches\":\"(unclosed\"},\"tier\":\"flagship\"}]"
                 "," TIERS2 "}]}",
                 "routes[0].rules[1].when: ", "last_user_matches: bad regular expression");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"last_user_matches\":\"(?i)[z-a]\"},"
                 "\"tier\":\"flagship\"}]," TIERS2 "}]}",
                 "routes[0].rules[0].when: ", "bad regular expression");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"last_user_matches\":5},\"tier\":\"flagship\"}]"
                 "," TIERS2 "}]}",
                 "routes[0].rules[0].when: ", "expected a regular expression string");
}

static void test_error_threshold_range(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"threshold\":1.5}," TIERS2 "}]}",
                 "routes[0].classifier.threshold: ", "expected a number in [0, 1]");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"threshold\":-0.01}," TIERS2 "}]}",
                 "routes[0].classifier.threshold: ", "[0, 1]");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"threshold\":\"0.5\"}," TIERS2 "}]}",
                 "routes[0].classifier.threshold: ", "[0, 1]");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"target_flagship_share\":1}," TIERS2 "}]}",
                 "routes[0].classifier.target_flagship_share: ", "(0, 1)");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"target_flagship_share\":0}," TIERS2 "}]}",
                 "routes[0].classifier.target_flagship_share: ", "(0, 1)");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"target_flagship_share\":0."
                 "2,\"window\":5}," TIERS2 "}]}",
                 "routes[0].classifier.window: ", "20..4096");
}

static void test_error_unknown_keys(void **state)
{
    (void)state;
    expect_error("{\"routes\":[],\"extra\":1}", "(top): ", "unknown key 'extra'");
    expect_error(ROUTE_R
                 "\"bogus\":1," TIERS2 "}]}",
                 "routes[0]: ", "unknown key 'bogus'");
    expect_error("{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"m\","
                 "\"team\":\"x\"}," TIERS2 "}]}",
                 "routes[0].match: ", "unknown key 'team'");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\"],\"stratgy\":"
                 "\"ordered\"}]}]}",
                 "routes[0].tiers[0]: ", "unknown key 'stratgy'");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"has_tool\":true},\"tier\":\"local\"}]," TIERS2 "}]}",
                 "routes[0].rules[0].when: ", "unknown key 'has_tool'");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"local\","
                 "\"why\":1}]," TIERS2 "}]}",
                 "routes[0].rules[0]: ", "unknown key 'why'");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\",\"treshold\":0.5}," TIERS2 "}]}",
                 "routes[0].classifier: ", "unknown key 'treshold'");
    expect_error(ROUTE_R
                 "\"fallback\":{\"on\":[503],\"retries\":2}," TIERS2 "}]}",
                 "routes[0].fallback: ", "unknown key 'retries'");
    expect_error(ROUTE_R
                 "\"cache\":{\"mode\":\"never\",\"ttl\":2}," TIERS2 "}]}",
                 "routes[0].cache: ", "unknown key 'ttl'");
}

static void test_error_other_values(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\"],"
                 "\"strategy\":\"random\"}]}]}",
                 "routes[0].tiers[0].strategy: ", "expected one of ordered");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\",\"big\"],"
                 "\"weights\":[1]}]}]}",
                 "routes[0].tiers[0].weights: ", "2 numbers");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\",\"big\"],"
                 "\"weights\":[1,-1]}]}]}",
                 "routes[0].tiers[0].weights[1]: ", ">= 0");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\",\"small\",\"small\","
                 "\"small\",\"small\",\"small\",\"small\",\"small\",\"small\",\"small\","
                 "\"small\",\"small\",\"small\",\"small\",\"small\",\"small\",\"small\"]}]}]}",
                 "routes[0].tiers[0].targets: ", "at most 16 deployments per tier");
    expect_error(ROUTE_R
                 "\"fallback\":{\"on\":[\"connect\",200]}," TIERS2 "}]}",
                 "routes[0].fallback.on[1]: ", "400..599");
    expect_error(ROUTE_R
                 "\"fallback\":{\"max_attempts\":0}," TIERS2 "}]}",
                 "routes[0].fallback.max_attempts: ", "1..10");
    expect_error(ROUTE_R
                 "\"affinity\":\"sticky\"," TIERS2 "}]}",
                 "routes[0].affinity: ", "\"none\" or \"conversation\"");
    expect_error("{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"m\"}}]}",
                 "routes[0].tiers: ", "required");
    expect_error(ROUTE_R
                 "\"target\":\"by_model_name\"," TIERS2 "}]}",
                 "routes[0].target: ", "not both");
    expect_error(ROUTE_R
                 "\"target\":\"x\"}]}",
                 "routes[0].target: ", "by_model_name");
    expect_error("{\"routes\":[{\"name\":\"r\"," TIERS2 "}]}", "routes[0].match: ", "required");
    expect_error("{\"routes\":[{\"match\":{\"model\":\"m\"}," TIERS2 "}]}",
                 "routes[0].name: ", "required");
    expect_error("{\"routes\":{}}", "routes: ", "array");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{},\"tier\":\"local\"}]," TIERS2 "}]}",
                 "routes[0].rules[0].when: ", "at least one condition");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"prompt_tokens_over\":-1},\"tier\":"
                 "\"local\"}]," TIERS2 "}]}",
                 "routes[0].rules[0].when: ", "prompt_tokens_over");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"response_format\":\"xml\"},\"tier\":"
                 "\"local\"}]," TIERS2 "}]}",
                 "routes[0].rules[0].when: ", "response_format");
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"/nonexistent/w.json\"}," TIERS2 "}]}",
                 "routes[0].classifier.weights: ", NULL);
    expect_error(ROUTE_R
                 "\"classifier\":{\"threshold\":0.5}," TIERS2 "}]}",
                 "routes[0].classifier.weights: ", "required");
}

static void test_error_duplicates(void **state)
{
    (void)state;
    expect_error(ROUTE_R TIERS2 "},"
                 "{\"name\":\"x\",\"match\":{\"model\":\"n\"}," TIERS2 "},"
                 "{\"name\":\"r\",\"match\":{\"model\":\"o\"}," TIERS2 "}]}",
                 "routes[2].name: ", "duplicate route name 'r'");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\"]},"
                 "{\"name\":\"b\",\"targets\":[\"mini\"]},{\"name\":\"a\","
                 "\"targets\":[\"big\"]}]}]}",
                 "routes[0].tiers[2]: ", "duplicate tier name 'a'");
}

/* A duplicate route name across two files of the same directory names the other
 * file. */
static void test_error_duplicate_across_files(void **state)
{
    (void)state;
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_errlist_init(&errs);
    sy_routes *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    json_t *a = json_loads(ROUTE_R TIERS2 "}]}",
                           0, NULL);
    assert_non_null(a);
    assert_int_equal(sy_routes_parse(a, "a.json", cfg, t, &errs), SY_OK);
    assert_int_equal(sy_routes_parse(a, "b.json", cfg, t, &errs), SY_ECONFIG);
    assert_true(has_error(&errs, "b.json: routes[0].name: duplicate route name 'r'", "a.json"));
    json_decref(a);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

static void test_error_rule_unknown_tier(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"flagship\"},"
                 "{\"when\":{\"has_images\":true},\"tier\":\"premium\"}]," TIERS2 "}]}",
                 "routes[0].rules[1].tier: ", "unknown tier 'premium'");
    expect_error(ROUTE_R
                 "\"rules\":[{\"when\":{\"has_tools\":true}}]," TIERS2 "}]}",
                 "routes[0].rules[0].tier: ", "required");
    expect_error("{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"*\"},"
                 "\"target\":\"by_model_name\","
                 "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"x\"}]}]}",
                 "routes[0].rules: ", "by_model_name");
}

/* Tiers that are not objects (or have no name) must be reported, not crash the
 * duplicate-name check or the rules' tier lookup. */
static void test_error_tier_not_object(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"tiers\":[\"local\",{\"name\":\"b\",\"targets\":[\"big\"]}]}]}",
                 "routes[0].tiers[0]: ", "expected an object");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\"]},7],"
                 "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"z\"}]}]}",
                 "routes[0].tiers[1]: ", "expected an object");
    expect_error(ROUTE_R
                 "\"tiers\":[{\"targets\":[\"small\"]},{\"targets\":[\"big\"]}]}]}",
                 "routes[0].tiers[0].name: ", "required");
}

static void test_error_classifier_one_tier(void **state)
{
    (void)state;
    expect_error(ROUTE_R
                 "\"classifier\":{\"weights\":\"@W\"},"
                 "\"tiers\":[{\"name\":\"only\",\"targets\":[\"small\",\"big\"]}]}]}",
                 "routes[0].classifier: ", "at least two tiers");
}

/* Every problem of a file is reported, not just the first. */
static void test_error_all_reported(void **state)
{
    (void)state;
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_routes *t = NULL;
    sy_errlist_init(&errs);
    assert_int_equal(parse(cfg,
                           "{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"m\"},\"x\":1,"
                           "\"rules\":[{\"when\":{\"last_user_matches\":\"(\"},\"tier\":"
                           "\"nope\"}],"
                           "\"classifier\":{\"weights\":\"@W\",\"threshold\":2},"
                           "\"tiers\":[{\"name\":\"a\",\"targets\":[\"ghost\"]},"
                           "{\"name\":\"b\",\"targets\":[\"big\"]}]}]}",
                           &t, &errs),
                     SY_ECONFIG);
    assert_true(has_error(&errs, "routes[0]: ", "unknown key 'x'"));
    assert_true(has_error(&errs, "routes[0].rules[0].tier: ", "unknown tier"));
    assert_true(has_error(&errs, "routes[0].rules[0].when: ", "bad regular expression"));
    assert_true(has_error(&errs, "routes[0].classifier.threshold: ", NULL));
    assert_true(has_error(&errs, "routes[0].tiers[0].targets[0]: ", "ghost"));
    assert_true(errs.n >= 5);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

/* ---- the routes directory ---- */

static sy_err load_dir(const char *dir, sy_routes **out, sy_errlist *errs)
{
    sy_config *cfg = load_config();
    *out = NULL;
    sy_err rc = sy_routes_load(dir, cfg, out, errs);
    sy_config_unref(cfg);
    return rc;
}

static void test_load_dir(void **state)
{
    (void)state;
    char dir[160], p[200];
    sy_errlist errs;
    sy_routes *t = NULL;

    snprintf(dir, sizeof(dir), "%s/ok", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    /* files load in name order; the weights file sits in the directory
     * unreferenced */
    snprintf(p, sizeof(p), "%s/b.json", dir);
    write_file(p, "{\"routes\":[{\"name\":\"second\",\"match\":{\"model\":\"*\"},"
                  "\"target\":\"by_model_name\"}]}");
    snprintf(p, sizeof(p), "%s/a.json", dir);
    write_file(p, with_weights("{\"routes\":[{\"name\":\"first\",\"match\":{\"model\":\"m\"},"
                               "\"classifier\":{\"weights\":\"@W\"}," TIERS2 "}]}"));
    snprintf(p, sizeof(p), "%s/weights-candidate.json", dir);
    write_file(p, "{\"version\":1,\"kind\":\"logreg\"}");
    snprintf(p, sizeof(p), "%s/notes.txt", dir);
    write_file(p, "not json");
    sy_errlist_init(&errs);
    assert_int_equal(load_dir(dir, &t, &errs), SY_OK);
    assert_int_equal(errs.n, 0);
    assert_int_equal(t->n, 2);
    assert_string_equal(t->routes[0].name, "first");
    assert_string_equal(t->routes[1].name, "second");
    assert_non_null(strstr(t->routes[1].file, "b.json"));
    /* the table outlives the config it was checked against (deployments are
     * indexes) */
    assert_non_null(t->routes[0].clf);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);

    /* a missing directory is an empty table */
    snprintf(p, sizeof(p), "%s/missing", tmpdir);
    sy_errlist_init(&errs);
    assert_int_equal(load_dir(p, &t, &errs), SY_OK);
    assert_int_equal(t->n, 0);
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
}

static void test_load_dir_errors(void **state)
{
    (void)state;
    char dir[160], p[200];
    sy_errlist errs;
    sy_routes *t = NULL;

    snprintf(dir, sizeof(dir), "%s/bad", tmpdir);
    assert_int_equal(mkdir(dir, 0700), 0);
    /* neither a route file nor weights */
    snprintf(p, sizeof(p), "%s/a-typo.json", dir);
    write_file(p, "{\"rotues\":[]}");
    /* not JSON: line and column */
    snprintf(p, sizeof(p), "%s/b-broken.json", dir);
    write_file(p, "{\"routes\": [\n  {,}]}");
    /* a bad route in a third file: still reported with its file */
    snprintf(p, sizeof(p), "%s/c.json", dir);
    write_file(p, ROUTE_R
                  "\"tiers\":[{\"name\":\"a\",\"targets\":[\"ghost\"]}]}]}");
    /* duplicate keys are refused */
    snprintf(p, sizeof(p), "%s/d.json", dir);
    write_file(p, "{\"routes\":[],\"routes\":[]}");
    sy_errlist_init(&errs);
    assert_int_equal(load_dir(dir, &t, &errs), SY_ECONFIG);
    assert_null(t);
    for (size_t i = 0; i < errs.n; i++)
        print_message("  %s\n", errs.items[i]);
    assert_true(has_error(&errs, "a-typo.json: ", "neither a route file"));
    assert_true(has_error(&errs, "b-broken.json:2:", NULL));
    assert_true(has_error(&errs, "c.json: routes[0].tiers[0].targets[0]: ", "unknown deployment"));
    assert_true(has_error(&errs, "d.json:", NULL));
    sy_errlist_cleanup(&errs);
}

/* ---- matching ---- */

typedef struct hdrs {
    const char *names[4];
    const char *values[4];
} hdrs;

static const char *get_header(void *ctx, const char *name)
{
    const hdrs *h = ctx;
    for (size_t i = 0; h != NULL && i < 4 && h->names[i] != NULL; i++)
        if (strcmp(h->names[i], name) == 0)
            return h->values[i];
    return NULL;
}

static void test_match(void **state)
{
    (void)state;
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_routes *t = NULL;
    sy_errlist_init(&errs);
    assert_int_equal(parse(cfg,
                           "{\"routes\":["
                           "{\"name\":\"beta\",\"match\":{\"model\":\"auto\","
                           "\"header\":{\"X-Cohort\":\"beta\"}}," TIERS2 "},"
                           "{\"name\":\"auto\",\"match\":{\"model\":[\"auto\","
                           "\"switchyard/auto\"]}," TIERS2 "},"
                           "{\"name\":\"rest\",\"match\":{\"model\":\"*\"},"
                           "\"target\":\"by_model_name\"}]}",
                           &t, &errs),
                     SY_OK);
    hdrs beta = {{"x-cohort"}, {"beta"}}, other = {{"x-cohort"}, {"Beta"}};
    assert_string_equal(sy_routes_match(t, "auto", get_header, &beta)->name, "beta");
    assert_string_equal(sy_routes_match(t, "auto", get_header, &other)->name, "auto");
    assert_string_equal(sy_routes_match(t, "auto", NULL, NULL)->name, "auto");
    assert_string_equal(sy_routes_match(t, "switchyard/auto", get_header, &beta)->name, "auto");
    assert_string_equal(sy_routes_match(t, "gpt-4.1", NULL, NULL)->name, "rest");
    assert_null(sy_routes_match(t, NULL, NULL, NULL));
    assert_null(sy_routes_match(NULL, "auto", NULL, NULL));
    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

/* One route with one rule per condition kind, in this order. */
static const char *rules_doc = "{\"routes\":[{\"name\":\"r\",\"match\":{"
                               "\"model\":\"m\"},\"rules\":["
                               "{\"when\":{\"has_tools\":true},\"tier\":"
                               "\"flagship\"}," /* 0 */
                               "{\"when\":{\"has_images\":true},\"tier\":"
                               "\"flagship\"}," /* 1 */
                               "{\"when\":{\"prompt_tokens_over\":10},\"tier\":"
                               "\"flagship\"}," /* 2 */
                               "{\"when\":{\"turns_over\":2},\"tier\":"
                               "\"flagship\"}," /* 3 */
                               "{\"when\":{\"last_user_matches\":\"(?i)\\\\b("
                               "prove|derive)\\\\b\"},\"tier\":\"flagship\"},"
                               "{\"when\":{\"header_equals\":{\"X-Tier\":"
                               "\"gold\"}},\"tier\":\"flagship\"}," /* 5 */
                               "{\"when\":{\"response_format\":\"json\"},"
                               "\"tier\":\"flagship\"}," /* 6 */
                               "{\"when\":{\"has_tools\":false,\"turns_over\":"
                               "0},\"tier\":\"local\"}," /* 7: AND */
                               "{\"when\":{\"response_format\":\"text\"},"
                               "\"tier\":\"local\"}," /* 8 */
                               "{\"when\":{\"last_user_matches\":\"Prove\"},"
                               "\"tier\":\"local\"}" /* 9 */
                               "]," TIERS2 "}]}";

static bool rule_on(const sy_route *r, size_t i, const char *body_text, const hdrs *h)
{
    json_error_t je;
    json_t *body = json_loads(body_text, 0, &je);
    if (body == NULL)
        print_error("test body: %s\n", je.text);
    assert_non_null(body);
    bool m = sy_rule_matches(&r->rules[i], body, get_header, (void *)h);
    json_decref(body);
    return m;
}

#define USER(text) "{\"role\":\"user\",\"content\":\"" text "\"}"
#define ASSISTANT "{\"role\":\"assistant\",\"content\":\"ok\"}"
#define BODY(msgs) "{\"model\":\"m\",\"messages\":[" msgs "]}"

static void test_rules(void **state)
{
    (void)state;
    sy_config *cfg = load_config();
    sy_errlist errs;
    sy_routes *t = NULL;
    sy_errlist_init(&errs);
    sy_err rc = parse(cfg, rules_doc, &t, &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_error("%s\n", errs.items[i]);
    assert_int_equal(rc, SY_OK);
    const sy_route *r = &t->routes[0];
    assert_int_equal(r->nrules, 10);
    const char *plain = BODY(USER("hi"));

    /* has_tools: a non-empty tools array */
    assert_true(
        rule_on(r, 0,
                "{\"model\":\"m\",\"messages\":[" USER("hi") "],"
                                                             "\"tools\":[{\"type\":\"function\","
                                                             "\"function\":{\"name\":\"f\"}}]}",
                NULL));
    assert_false(
        rule_on(r, 0, "{\"model\":\"m\",\"messages\":[" USER("hi") "],\"tools\":[]}", NULL));
    assert_false(rule_on(r, 0, plain, NULL));

    /* has_images: an image part in any message */
    assert_true(rule_on(r, 1,
                        BODY("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                             "\"what\"},"
                             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:x\"}}]}"),
                        NULL));
    assert_false(rule_on(r, 1,
                         BODY("{\"role\":\"user\",\"content\":[{\"type\":"
                              "\"text\",\"text\":\"x\"}]}"),
                         NULL));
    assert_false(rule_on(r, 1, plain, NULL));

    /* prompt_tokens_over 10: more than 40 bytes of message text (bytes / 4,
     * rounded up) */
    assert_false(rule_on(r, 2, BODY(USER("0123456789012345678901234567890123456789")), NULL));
    assert_true(rule_on(r, 2, BODY(USER("01234567890123456789012345678901234567890")), NULL));
    /* every message counts: 20 + 2 + 21 bytes -> 11 */
    assert_true(rule_on(
        r, 2, BODY(USER("01234567890123456789") "," ASSISTANT "," USER("012345678901234567890")),
        NULL));

    /* turns_over 2: more than two user turns */
    assert_false(rule_on(r, 3, BODY(USER("a") "," ASSISTANT "," USER("b")), NULL));
    assert_true(rule_on(
        r, 3, BODY(USER("a") "," ASSISTANT "," USER("b") "," ASSISTANT "," USER("c")), NULL));

    /* last_user_matches with (?i): case-insensitive, on the last user turn only
     */
    assert_true(rule_on(r, 4, BODY(USER("Please PROVE that x")), NULL));
    assert_true(rule_on(r, 4, BODY(USER("derive it")), NULL));
    assert_false(rule_on(r, 4, BODY(USER("improved version")), NULL));
    assert_false(rule_on(r, 4, BODY(USER("prove it") "," ASSISTANT "," USER("thanks")), NULL));
    assert_true(rule_on(r, 4,
                        BODY("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                             "{\"type\":\"text\",\"text\":\"now Derive\"}]}"),
                        NULL));
    /* without (?i) the case matters */
    assert_true(rule_on(r, 9, BODY(USER("Prove it")), NULL));
    assert_false(rule_on(r, 9, BODY(USER("prove it")), NULL));

    /* header_equals: the name is case-insensitive (looked up lower-case), the
     * value exact */
    hdrs gold = {{"x-tier"}, {"gold"}}, silver = {{"x-tier"}, {"silver"}};
    assert_true(rule_on(r, 5, plain, &gold));
    assert_false(rule_on(r, 5, plain, &silver));
    assert_false(rule_on(r, 5, plain, NULL));

    /* response_format json: json_object or json_schema */
    assert_true(rule_on(r, 6,
                        "{\"model\":\"m\",\"messages\":[" USER(
                            "hi") "],"
                                  "\"response_format\":{\"type\":\"json_object\"}}",
                        NULL));
    assert_true(rule_on(r, 6,
                        "{\"model\":\"m\",\"messages\":[" USER(
                            "hi") "],"
                                  "\"response_format\":{\"type\":\"json_schema\","
                                  "\"json_schema\":{}}}",
                        NULL));
    assert_false(rule_on(
        r, 6,
        "{\"model\":\"m\",\"messages\":[" USER("hi") "],"
                                                     "\"response_format\":{\"type\":\"text\"}}",
        NULL));
    assert_false(rule_on(r, 6, plain, NULL));
    /* response_format text also matches a request without one */
    assert_true(rule_on(r, 8, plain, NULL));

    /* several conditions: all must hold */
    assert_true(rule_on(r, 7, plain, NULL));
    assert_false(rule_on(r, 7, BODY(ASSISTANT), NULL));
    assert_false(
        rule_on(r, 7,
                "{\"model\":\"m\",\"messages\":[" USER("hi") "],"
                                                             "\"tools\":[{\"type\":\"function\","
                                                             "\"function\":{\"name\":\"f\"}}]}",
                NULL));

    sy_routes_free(t);
    sy_errlist_cleanup(&errs);
    sy_config_unref(cfg);
}

static void test_prompt_tokens(void **state)
{
    (void)state;
    json_t *b = json_loads(BODY(USER("12345") "," ASSISTANT "," USER("1234")), 0, NULL);
    assert_non_null(b);
    assert_int_equal(sy_routes_prompt_tokens(b), 3); /* 11 bytes -> 3 */
    json_decref(b);
    b = json_loads("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":["
                   "{\"type\":\"text\",\"text\":\"12345678\"},{\"type\":\"image_url\"}]}]}",
                   0, NULL);
    assert_non_null(b);
    assert_int_equal(sy_routes_prompt_tokens(b), 2);
    json_decref(b);
    b = json_loads("{\"model\":\"m\",\"prompt\":\"123456789\"}", 0, NULL);
    assert_non_null(b);
    assert_int_equal(sy_routes_prompt_tokens(b), 3);
    json_decref(b);
}

/* ---- adaptive threshold ---- */

static uint64_t lcg = 88172645463325252ull;
static double uniform(void)
{
    lcg ^= lcg << 13;
    lcg ^= lcg >> 7;
    lcg ^= lcg << 17;
    return (double)(lcg >> 11) / 9007199254740992.0;
}

/* Feeds <n> scores from <draw> and returns the share sent to the harder tier
 * over the last <measure> of them. */
static double run_share(const sy_route *r, size_t n, size_t measure, double (*draw)(void))
{
    size_t hard = 0;
    for (size_t i = 0; i < n; i++) {
        double s = draw();
        double thr = sy_routes_adaptive_threshold(r, s);
        if (i >= n - measure && s >= thr)
            hard++;
    }
    return (double)hard / (double)measure;
}

static double skewed(void)
{
    double u = uniform();
    return u * u * u; /* most scores near 0 */
}

static void test_adaptive_threshold(void **state)
{
    (void)state;
    char name[] = "adaptive";
    sy_route r;
    memset(&r, 0, sizeof(r));
    r.name = name;
    r.threshold = 0.9;
    r.window = 500;

    /* until 20 scores are seen, the fixed threshold */
    r.target_share = 0.3;
    for (int i = 0; i < 19; i++)
        assert_true(sy_routes_adaptive_threshold(&r, 0.1) == 0.9);

    const double shares[] = {0.1, 0.3, 0.5, 0.8};
    for (size_t k = 0; k < sizeof(shares) / sizeof(shares[0]); k++) {
        sy_routes_reset_state();
        r.target_share = shares[k];
        double got = run_share(&r, 4000, 2000, uniform);
        print_message("share %.2f: uniform scores -> %.3f\n", shares[k], got);
        assert_true(got > shares[k] - 0.04 && got < shares[k] + 0.04);
        sy_routes_reset_state();
        got = run_share(&r, 4000, 2000, skewed);
        print_message("share %.2f: skewed scores -> %.3f\n", shares[k], got);
        assert_true(got > shares[k] - 0.04 && got < shares[k] + 0.04);
    }

    /* the state is per route name and survives a new route struct (a reload) */
    sy_routes_reset_state();
    r.target_share = 0.2;
    (void)run_share(&r, 1000, 1, uniform);
    sy_route r2 = r;
    char name2[] = "adaptive";
    r2.name = name2;
    r2.threshold = 0.99;
    double thr = sy_routes_adaptive_threshold(&r2, 0.5);
    assert_true(thr > 0.6 && thr < 0.95); /* the quantile, not the fixed 0.99 */

    /* another route starts from its own fixed threshold */
    char other[] = "other";
    r2.name = other;
    assert_true(sy_routes_adaptive_threshold(&r2, 0.5) == 0.99);
}

/* A shift in the traffic moves the threshold: the window follows recent scores.
 */
static void test_adaptive_threshold_follows(void **state)
{
    (void)state;
    char name[] = "follows";
    sy_route r;
    memset(&r, 0, sizeof(r));
    r.name = name;
    r.threshold = 0.5;
    r.window = 200;
    r.target_share = 0.25;
    double low = run_share(&r, 1000, 500, skewed);
    double high = run_share(&r, 1000, 500, uniform); /* scores now much higher on average */
    print_message("skewed %.3f then uniform %.3f\n", low, high);
    assert_true(low > 0.2 && low < 0.3);
    assert_true(high > 0.2 && high < 0.3);
}

/* A reload that changes the window starts a fresh one: the first threshold computed from it is
 * its own quantile, not the one cached from the old window. */
static void test_adaptive_threshold_new_window(void **state)
{
    (void)state;
    char name[] = "resized";
    sy_route r;
    memset(&r, 0, sizeof(r));
    r.name = name;
    r.threshold = 0.5;
    r.window = 100;
    r.target_share = 0.5;
    for (int i = 0; i < 105; i++) /* 0.00 .. 0.99: the median is about 0.5 */
        (void)sy_routes_adaptive_threshold(&r, (double)(i % 100) / 100.0);
    r.window = 40;
    for (int i = 0; i < 19; i++) /* fewer than 20 in the new window: the fixed threshold */
        assert_true(sy_routes_adaptive_threshold(&r, 0.9 + (double)i / 1000.0) == 0.5);
    double thr = sy_routes_adaptive_threshold(&r, 0.95);
    assert_true(thr >= 0.9); /* the new window's median, all its scores are >= 0.9 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_parse_valid, teardown),
        cmocka_unit_test_teardown(test_parse_defaults, teardown),
        cmocka_unit_test_teardown(test_error_unknown_deployment, teardown),
        cmocka_unit_test_teardown(test_error_bad_regex, teardown),
        cmocka_unit_test_teardown(test_error_threshold_range, teardown),
        cmocka_unit_test_teardown(test_error_unknown_keys, teardown),
        cmocka_unit_test_teardown(test_error_other_values, teardown),
        cmocka_unit_test_teardown(test_error_duplicates, teardown),
        cmocka_unit_test_teardown(test_error_duplicate_across_files, teardown),
        cmocka_unit_test_teardown(test_error_rule_unknown_tier, teardown),
        cmocka_unit_test_teardown(test_error_tier_not_object, teardown),
        cmocka_unit_test_teardown(test_error_classifier_one_tier, teardown),
        cmocka_unit_test_teardown(test_error_all_reported, teardown),
        cmocka_unit_test_teardown(test_load_dir, teardown),
        cmocka_unit_test_teardown(test_load_dir_errors, teardown),
        cmocka_unit_test_teardown(test_match, teardown),
        cmocka_unit_test_teardown(test_rules, teardown),
        cmocka_unit_test_teardown(test_prompt_tokens, teardown),
        cmocka_unit_test_teardown(test_adaptive_threshold, teardown),
        cmocka_unit_test_teardown(test_adaptive_threshold_follows, teardown),
        cmocka_unit_test_teardown(test_adaptive_threshold_new_window, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
