/* Unit tests for router: alias order, deployment names, upstream model names,
 * unknown models; route tables: rules forcing tiers, the classifier against the
 * threshold, tier strategies (ordered, weighted over many picks,
 * least_inflight, lowest_latency), fallback order across tiers, conversation
 * affinity and the availability partition (breaker, max_inflight, disabled)
 * with SY_EUNAVAIL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/affinity.h"
#include "switchyard/health.h"
#include "switchyard/request.h"
#include "switchyard/router.h"
#include "switchyard/routes.h"
#include "weights_fixture.h"

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

static const char *cfg_text = "{\"deployments\":["
                              "{\"name\":\"a\",\"base_url\":\"http://h/"
                              "v1\",\"model\":\"shared\",\"price\":{\"input\":0,\"output\":0}},"
                              "{\"name\":\"b\",\"base_url\":\"http://h/"
                              "v1\",\"model\":\"shared\",\"price\":{\"input\":0,\"output\":0}},"
                              "{\"name\":\"meta-llama/Llama-3.1-8B\",\"base_url\":\"http://h/"
                              "v1\",\"model\":\"llama\",\"price\":{\"input\":0,\"output\":0}}],"
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

/* ---- route tables ---- */

/* longer first turns score higher: sigmoid(8 * tokens_log - 4) */
static int group_setup(void **state)
{
    (void)state;
    return wf_setup("sy-test-router", -4, 0.5, "{\"tokens_log\":8}");
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
    sy_affinity_reset();
    sy_health_reset_all();
    return 0;
}

#define DEP(name, extra)                                                                           \
    "{\"name\":\"" name "\",\"base_url\":\"http://h/v1\",\"model\":\"" name "-m\","                \
    "\"price\":{\"input\":0,\"output\":0}" extra "}"

static const char *route_deps =
    "{\"deployments\":[" DEP("small", "") "," DEP("mini", "") "," DEP("mid", "") "," DEP(
        "big", "") "," DEP("huge", "") "," DEP("capped", ",\"max_inflight\":"
                                                         "1") "," DEP("keyed", ",\"api"
                                                                               "_key_"
                                                                               "env\":"
                                                                               "\"SY_"
                                                                               "TEST_"
                                                                               "ROUTER"
                                                                               "_UNSET"
                                                                               "_KEY"
                                                                               "\"") "]}";

/* A config with the route file <routes_text> ("@W" = the test weights). */
static sy_config *load_routes(const char *routes_text)
{
    sy_config *cfg = load(route_deps);
    json_error_t je;
    json_t *doc = json_loads(with_weights(routes_text), 0, &je);
    if (doc == NULL)
        print_error("routes JSON: %s (%d:%d)\n", je.text, je.line, je.column);
    assert_non_null(doc);
    sy_errlist errs;
    sy_errlist_init(&errs);
    sy_routes *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    sy_err rc = sy_routes_parse(doc, "t.json", cfg, t, &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_error("%s\n", errs.items[i]);
    assert_int_equal(rc, SY_OK);
    cfg->routes = t; /* freed with the config */
    sy_errlist_cleanup(&errs);
    json_decref(doc);
    return cfg;
}

static json_t *body_of(const char *text)
{
    json_error_t je;
    json_t *b = json_loads(text, 0, &je);
    if (b == NULL)
        print_error("body JSON: %s\n", je.text);
    assert_non_null(b);
    return b;
}

static json_t *chat(const char *user)
{
    return json_pack("{s:s,s:[{s:s,s:s}]}", "model", "auto", "messages", "role", "user", "content",
                     user);
}

typedef struct hdrs {
    const char *name, *value;
} hdrs;

static const char *get_header(void *ctx, const char *name)
{
    const hdrs *h = ctx;
    return h != NULL && strcmp(h->name, name) == 0 ? h->value : NULL;
}

/* The names of p's targets joined by ',' (static). */
static const char *order(const sy_pick *p)
{
    static char buf[512];
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < p->ntargets; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%s", i ? "," : "", p->targets[i]->name);
    return buf;
}

static const sy_deployment *dep(const sy_config *cfg, const char *name)
{
    const sy_deployment *d = sy_config_deployment(cfg, name);
    assert_non_null(d);
    return d;
}

/* Opens the breaker of <name> for an hour. */
static void open_breaker(const sy_config *cfg, const char *name)
{
    sy_dep_health *h = dep(cfg, name)->health;
    int64_t now = sy_now_us();
    sy_health_begin(h, now);
    sy_health_end(h, false, 0, 1, 3600ll * 1000000, now);
    assert_int_equal(sy_health_breaker(h, sy_now_us()), SY_BREAKER_OPEN);
}

static const char *rules_routes =
    "{\"routes\":[{\"name\":\"auto\",\"match\":{\"model\":\"auto\"},\"rules\":["
    "{\"when\":{\"has_tools\":true},\"tier\":\"hard\"},"
    "{\"when\":{\"has_images\":true},\"tier\":\"hard\"},"
    "{\"when\":{\"prompt_tokens_over\":100},\"tier\":\"hard\"},"
    "{\"when\":{\"turns_over\":3},\"tier\":\"mid\"},"
    "{\"when\":{\"last_user_matches\":\"(?i)\\\\bprove\\\\b\"},\"tier\":"
    "\"hard\"},"
    "{\"when\":{\"header_equals\":{\"x-plan\":\"free\"}},\"tier\":\"easy\"},"
    "{\"when\":{\"response_format\":\"json\"},\"tier\":\"mid\"}],"
    "\"classifier\":{\"weights\":\"@W\",\"threshold\":0.5},"
    "\"tiers\":[{\"name\":\"easy\",\"targets\":[\"small\",\"mini\"]},"
    "{\"name\":\"mid\",\"targets\":[\"mid\"]},"
    "{\"name\":\"hard\",\"targets\":[\"big\",\"huge\"]}]},"
    "{\"name\":\"direct\",\"match\":{\"model\":\"*\"},\"target\":\"by_model_"
    "name\"}]}";

static void expect_rule(const sy_config *cfg, const char *body_text, const hdrs *h,
                        const char *rule, const char *tier, const char *targets)
{
    json_t *b = body_of(body_text);
    sy_route_ctx rc = {.get_header = get_header, .hctx = (void *)h};
    sy_pick p;
    assert_int_equal(sy_router_pick(cfg, "auto", b, &rc, &p), SY_OK);
    assert_string_equal(p.route, "auto");
    assert_non_null(p.rule);
    assert_string_equal(p.rule, rule);
    assert_string_equal(p.tier, tier);
    assert_true(p.score == -1); /* a rule decided: the classifier did not run */
    assert_string_equal(order(&p), targets);
    assert_int_equal(p.navailable, p.ntargets);
    json_decref(b);
}

#define U(text) "{\"role\":\"user\",\"content\":\"" text "\"}"
#define A "{\"role\":\"assistant\",\"content\":\"ok\"}"

/* Each rule kind forces its tier; the forced tier goes first, then the harder
 * tiers, then the easier ones (fallback across tiers). */
static void test_rules_force_tier(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(rules_routes);
    expect_rule(cfg,
                "{\"model\":\"auto\",\"messages\":[" U("hi") "],\"tools\":[{\"type\":\"function\","
                                                             "\"function\":{\"name\":\"f\"}}]}",
                NULL, "rules[0]", "hard", "big,huge,mid,small,mini");
    expect_rule(cfg,
                "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":"
                "\"image_url\",\"image_url\":{\"url\":\"data:,\"}}]}]}",
                NULL, "rules[1]", "hard", "big,huge,mid,small,mini");
    char longer[1024];
    memset(longer, 'x', 404);
    longer[404] = '\0';
    char body[1200];
    snprintf(body, sizeof(body), "{\"model\":\"auto\",\"messages\":[" U("%s") "]}", longer);
    expect_rule(cfg, body, NULL, "rules[2]", "hard", "big,huge,mid,small,mini");
    expect_rule(cfg,
                "{\"model\":\"auto\",\"messages\":[" U("a") "," A "," U("b") "," A "," U(
                    "c") "," A "," U("d") "]}",
                NULL, "rules[3]", "mid", "mid,big,huge,small,mini");
    expect_rule(cfg, "{\"model\":\"auto\",\"messages\":[" U("Now PROVE it.") "]}", NULL, "rules[4]",
                "hard", "big,huge,mid,small,mini");
    hdrs free_plan = {"x-plan", "free"};
    expect_rule(cfg, "{\"model\":\"auto\",\"messages\":[" U("Now prove it.") "]}", &free_plan,
                "rules[4]", "hard", "big,huge,mid,small,mini"); /* the first match wins */
    expect_rule(cfg, "{\"model\":\"auto\",\"messages\":[" U("hi") "]}", &free_plan, "rules[5]",
                "easy", "small,mini,mid,big,huge");
    expect_rule(cfg,
                "{\"model\":\"auto\",\"messages\":[" U("hi") "],\"response_format\":{\"type\":"
                                                             "\"json_object\"}}",
                NULL, "rules[6]", "mid", "mid,big,huge,small,mini");
    sy_config_unref(cfg);
}

/* No rule: the classifier's score against the threshold (score >= threshold ->
 * hardest tier). */
static void test_classifier_threshold(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(rules_routes);
    json_t *shortb = chat("hi");
    json_t *longb = chat("Tell me about the history of the city and its rivers in detail.");
    const sy_route *r = &cfg->routes->routes[0];
    double s_short, s_long;
    assert_int_equal(sy_classifier_score(r->clf, shortb, &s_short, NULL, 0), SY_OK);
    assert_int_equal(sy_classifier_score(r->clf, longb, &s_long, NULL, 0), SY_OK);
    print_message("scores: short %.4f, long %.4f\n", s_short, s_long);
    assert_true(s_short < s_long);

    sy_feature_contrib top[4];
    memset(top, 0, sizeof(top));
    sy_route_ctx rc = {.top = top, .ntop = 4};
    sy_pick p;
    /* the threshold exactly at the long prompt's score: long goes hard, short
     * stays easy */
    cfg->routes->routes[0].threshold = s_long;
    assert_int_equal(sy_router_pick(cfg, "auto", longb, &rc, &p), SY_OK);
    assert_null(p.rule);
    assert_string_equal(p.tier, "hard");
    assert_true(p.score == s_long);
    assert_true(p.threshold == s_long);
    assert_string_equal(order(&p), "big,huge,mid,small,mini");
    assert_string_equal(top[0].name, "tokens_log");
    assert_int_equal(sy_router_pick(cfg, "auto", shortb, &rc, &p), SY_OK);
    assert_string_equal(p.tier, "easy");
    assert_true(p.score == s_short);
    assert_string_equal(order(&p), "small,mini,mid,big,huge");
    /* between the two */
    cfg->routes->routes[0].threshold = (s_short + s_long) / 2;
    assert_int_equal(sy_router_pick(cfg, "auto", longb, NULL, &p), SY_OK);
    assert_string_equal(p.tier, "hard");
    assert_int_equal(sy_router_pick(cfg, "auto", shortb, NULL, &p), SY_OK);
    assert_string_equal(p.tier, "easy");
    /* 0 sends everything to the harder tier, 1 almost nothing */
    cfg->routes->routes[0].threshold = 0;
    assert_int_equal(sy_router_pick(cfg, "auto", shortb, NULL, &p), SY_OK);
    assert_string_equal(p.tier, "hard");
    cfg->routes->routes[0].threshold = 1;
    assert_int_equal(sy_router_pick(cfg, "auto", longb, NULL, &p), SY_OK);
    assert_string_equal(p.tier, "easy");

    /* other models: the catch-all by_model_name route */
    assert_int_equal(sy_router_pick(cfg, "big", longb, NULL, &p), SY_OK);
    assert_string_equal(p.route, "direct");
    assert_null(p.tier);
    assert_string_equal(order(&p), "big");
    assert_int_equal(sy_router_pick(cfg, "mid-m", longb, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mid");
    assert_int_equal(sy_router_pick(cfg, "nope", longb, NULL, &p), SY_ENOMODEL);

    /* force_route (switchyard route --route NAME): whatever the model */
    sy_route_ctx force = {.force_route = "auto"};
    assert_int_equal(sy_router_pick(cfg, "big", longb, &force, &p), SY_OK);
    assert_string_equal(p.route, "auto");
    assert_string_equal(p.tier, "easy");
    force.force_route = "missing";
    assert_int_equal(sy_router_pick(cfg, "auto", longb, &force, &p), SY_ENOTFOUND);
    json_decref(shortb);
    json_decref(longb);
    sy_config_unref(cfg);
}

/* target_flagship_share through the router: the share of picks on the harder
 * tier. */
static void test_router_target_share(void **state)
{
    (void)state;
    sy_config *cfg =
        load_routes("{\"routes\":[{\"name\":\"share\",\"match\":{\"model\":\"auto\"},"
                    "\"classifier\":{\"weights\":\"@W\",\"target_flagship_share\":0.25,"
                    "\"window\":200},"
                    "\"tiers\":[{\"name\":\"easy\",\"targets\":[\"small\"]},"
                    "{\"name\":\"hard\",\"targets\":[\"big\"]}]}]}");
    char text[400];
    size_t hard = 0, n = 0;
    for (int i = 0; i < 1200; i++) {
        /* prompts of 1..300 bytes, in a scrambled order */
        size_t len = 1 + (size_t)((i * 7919) % 300);
        memset(text, 'a' + (i % 26), len);
        text[len] = '\0';
        json_t *b = chat(text);
        sy_pick p;
        assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
        if (i >= 400) {
            n++;
            hard += strcmp(p.tier, "hard") == 0;
        }
        json_decref(b);
    }
    double share = (double)hard / (double)n;
    print_message("share on the hard tier: %.3f\n", share);
    assert_true(share > 0.2 && share < 0.3);
    sy_config_unref(cfg);
}

static const char *strategy_routes(const char *strategy, const char *extra)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"routes\":[{\"name\":\"s\",\"match\":{\"model\":\"auto\"},"
             "\"tiers\":[{\"name\":\"t\",\"targets\":[\"small\",\"mini\",\"mid\"],"
             "\"strategy\":\"%s\"%s},{\"name\":\"next\",\"targets\":[\"big\"]}]}]}",
             strategy, extra);
    return buf;
}

static void test_strategy_ordered(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(strategy_routes("ordered", ""));
    json_t *b = chat("hi");
    sy_pick p;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
        assert_string_equal(order(&p), "small,mini,mid,big");
        assert_string_equal(p.tier, "t");
        assert_null(p.rule);
        assert_true(p.score == -1); /* no classifier */
    }
    json_decref(b);
    sy_config_unref(cfg);
}

static void test_strategy_weighted(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(strategy_routes("weighted", ",\"weights\":[6,3,1]"));
    json_t *b = chat("hi");
    sy_pick p;
    const int n = 20000;
    int first[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
        assert_int_equal(p.ntargets, 4);
        /* a permutation of the tier, then the next tier */
        assert_string_equal(p.targets[3]->name, "big");
        assert_true(p.targets[0] != p.targets[1] && p.targets[1] != p.targets[2] &&
                    p.targets[0] != p.targets[2]);
        first[p.targets[0]->index]++;
    }
    double s0 = (double)first[0] / n, s1 = (double)first[1] / n, s2 = (double)first[2] / n;
    print_message("first pick: small %.3f mini %.3f mid %.3f (want .6 .3 .1)\n", s0, s1, s2);
    assert_true(s0 > 0.57 && s0 < 0.63);
    assert_true(s1 > 0.27 && s1 < 0.33);
    assert_true(s2 > 0.08 && s2 < 0.12);
    sy_config_unref(cfg);

    /* a zero weight is never first; equal weights (the default) share evenly */
    cfg = load_routes(strategy_routes("weighted", ",\"weights\":[0,1,1]"));
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
        assert_string_not_equal(p.targets[0]->name, "small");
    }
    sy_config_unref(cfg);
    cfg = load_routes(strategy_routes("weighted", ""));
    memset(first, 0, sizeof(first));
    for (int i = 0; i < 6000; i++) {
        assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
        first[p.targets[0]->index]++;
    }
    for (int k = 0; k < 3; k++)
        assert_true(first[k] > 1800 && first[k] < 2200);
    json_decref(b);
    sy_config_unref(cfg);
}

static void test_strategy_least_inflight(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(strategy_routes("least_inflight", ""));
    json_t *b = chat("hi");
    sy_pick p;
    int64_t now = sy_now_us();
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mini,mid,big"); /* ties keep the listed order */
    sy_health_begin(dep(cfg, "small")->health, now);
    sy_health_begin(dep(cfg, "small")->health, now);
    sy_health_begin(dep(cfg, "mini")->health, now);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mid,mini,small,big");
    sy_health_begin(dep(cfg, "mid")->health, now);
    sy_health_begin(dep(cfg, "mid")->health, now);
    sy_health_begin(dep(cfg, "mid")->health, now);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mini,small,mid,big");
    sy_health_end(dep(cfg, "small")->health, true, 0, 5, 1000, now);
    sy_health_end(dep(cfg, "small")->health, true, 0, 5, 1000, now);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mini,mid,big");
    /* small 0, mini 1, mid 0: the tied pair keeps its listed order ahead of mini */
    for (int i = 0; i < 3; i++)
        sy_health_end(dep(cfg, "mid")->health, true, 0, 5, 1000, now);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mid,mini,big");
    /* small 2, mini 1, mid 2: the tied pair follows mini, still in listed order */
    sy_health_begin(dep(cfg, "small")->health, now);
    sy_health_begin(dep(cfg, "small")->health, now);
    sy_health_begin(dep(cfg, "mid")->health, now);
    sy_health_begin(dep(cfg, "mid")->health, now);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mini,small,mid,big");
    json_decref(b);
    sy_config_unref(cfg);
}

static void set_latency(const sy_config *cfg, const char *name, int64_t us)
{
    sy_dep_health *h = dep(cfg, name)->health;
    int64_t now = sy_now_us();
    __atomic_store_n(&h->ewma_us, 0, __ATOMIC_RELEASE);
    sy_health_begin(h, now);
    sy_health_end(h, true, us, 5, 1000, now);
    assert_int_equal(h->ewma_us, us);
}

static void test_strategy_lowest_latency(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(strategy_routes("lowest_latency", ""));
    json_t *b = chat("hi");
    sy_pick p;
    set_latency(cfg, "small", 90000);
    set_latency(cfg, "mini", 20000);
    set_latency(cfg, "mid", 50000);
    set_latency(cfg, "big", 1); /* another tier: not reordered into this one */
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mini,mid,small,big");
    /* the EWMA moves with new samples: small gets fast */
    for (int i = 0; i < 40; i++) {
        sy_dep_health *h = dep(cfg, "small")->health;
        sy_health_begin(h, sy_now_us());
        sy_health_end(h, true, 1000, 5, 1000, sy_now_us());
    }
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mini,mid,big");
    /* ties keep the listed order, wherever they sort */
    set_latency(cfg, "small", 30000);
    set_latency(cfg, "mini", 70000);
    set_latency(cfg, "mid", 30000);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mid,mini,big");
    set_latency(cfg, "small", 90000);
    set_latency(cfg, "mini", 40000);
    set_latency(cfg, "mid", 40000);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mini,mid,small,big");
    set_latency(cfg, "small", 40000);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mini,mid,big");
    json_decref(b);
    sy_config_unref(cfg);
}

static void test_availability(void **state)
{
    (void)state;
    sy_config *cfg =
        load_routes("{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"auto\"},"
                    "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\",\"capped\",\"mini\"]},"
                    "{\"name\":\"b\",\"targets\":[\"big\"]}]},"
                    "{\"name\":\"k\",\"match\":{\"model\":\"keyed-only\"},"
                    "\"tiers\":[{\"name\":\"a\",\"targets\":[\"keyed\"]}]},"
                    "{\"name\":\"k2\",\"match\":{\"model\":\"keyed-first\"},"
                    "\"tiers\":[{\"name\":\"a\",\"targets\":[\"keyed\",\"small\"]}]}]}");
    json_t *b = chat("hi");
    sy_pick p;

    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,capped,mini,big");
    assert_int_equal(p.navailable, 4);

    /* breaker open: after the others, in their own order */
    open_breaker(cfg, "small");
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "capped,mini,big,small");
    assert_int_equal(p.navailable, 3);

    /* at max_inflight */
    sy_health_begin(dep(cfg, "capped")->health, sy_now_us());
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mini,big,small,capped");
    assert_int_equal(p.navailable, 2);

    /* every one unavailable: SY_EUNAVAIL, the targets still listed */
    open_breaker(cfg, "mini");
    open_breaker(cfg, "big");
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_EUNAVAIL);
    assert_int_equal(p.navailable, 0);
    assert_string_equal(order(&p), "small,capped,mini,big");
    assert_string_equal(p.route, "r");

    /* the in-flight request ends: capped is available again */
    sy_health_end(dep(cfg, "capped")->health, true, 0, 5, 1000, sy_now_us());
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_int_equal(p.navailable, 1);
    assert_string_equal(p.targets[0]->name, "capped");

    /* disabled (key variable unset): last, but not "unavailable" (the relay names
     * the variable instead) */
    assert_true(dep(cfg, "keyed")->disabled);
    assert_int_equal(sy_router_pick(cfg, "keyed-only", b, NULL, &p), SY_OK);
    assert_int_equal(p.navailable, 0);
    assert_int_equal(p.ntargets, 1);
    assert_int_equal(sy_router_pick(cfg, "keyed-first", b, NULL, &p), SY_EUNAVAIL);
    assert_string_equal(order(&p), "keyed,small"); /* small's breaker is open */
    json_decref(b);
    sy_config_unref(cfg);
}

/* A breaker whose cooldown is over lets the deployment back in (half-open: one
 * probe). */
static void test_availability_half_open(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(strategy_routes("ordered", ""));
    json_t *b = chat("hi");
    sy_pick p;
    sy_dep_health *h = dep(cfg, "small")->health;
    int64_t now = sy_now_us();
    sy_health_begin(h, now);
    sy_health_end(h, false, 0, 1, 1, now - 10); /* opened 10 us ago for 1 us */
    assert_int_equal(sy_health_breaker(h, sy_now_us()), SY_BREAKER_HALF_OPEN);
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(p.targets[0]->name, "small");
    sy_health_begin(h, sy_now_us()); /* the probe */
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "mini,mid,big,small");
    sy_health_end(h, true, 0, 1, 1, sy_now_us());
    assert_int_equal(sy_router_pick(cfg, "auto", b, NULL, &p), SY_OK);
    assert_string_equal(order(&p), "small,mini,mid,big");
    json_decref(b);
    sy_config_unref(cfg);
}

static void test_affinity_key(void **state)
{
    (void)state;
    json_t *t1 =
        body_of("{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"}," U("hello") "]}");
    json_t *t2 = body_of("{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"}," U(
        "hello") "," A "," U("and then?") "]}");
    json_t *parts = body_of("{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"text\","
                            "\"text\":\"be brief\"}]},{\"role\":\"user\",\"content\":[{\"type\":"
                            "\"text\",\"text\":\"hello\"}]}]}");
    json_t *other_sys =
        body_of("{\"messages\":[{\"role\":\"system\",\"content\":\"be long\"}," U("hello") "]}");
    json_t *no_sys = body_of("{\"messages\":[" U("hello") "]}");
    json_t *other_user =
        body_of("{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"}," U("hello!") "]}");
    json_t *no_user = body_of("{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}");

    uint64_t k = sy_affinity_key("tenant-a", t1);
    assert_true(k != 0);
    /* the same conversation, later turns: same key */
    assert_true(sy_affinity_key("tenant-a", t2) == k);
    /* text parts read the same as a string */
    assert_true(sy_affinity_key("tenant-a", parts) == k);
    /* another tenant, system prompt or first user turn: another key */
    assert_true(sy_affinity_key("tenant-b", t1) != k);
    assert_true(sy_affinity_key(NULL, t1) != k);
    assert_true(sy_affinity_key(NULL, t1) == sy_affinity_key(NULL, t2));
    assert_true(sy_affinity_key("tenant-a", other_sys) != k);
    assert_true(sy_affinity_key("tenant-a", no_sys) != k);
    assert_true(sy_affinity_key("tenant-a", other_user) != k);
    assert_true(sy_affinity_key("tenant-a", no_user) == 0);

    /* the table: TTL, overwrite */
    char name[64];
    int64_t now = 1000000;
    assert_int_equal(sy_affinity_get(k, name, sizeof(name), now), 0);
    sy_affinity_put(k, "mini", 5000000, now);
    assert_int_equal(sy_affinity_get(k, name, sizeof(name), now + 4999999), 1);
    assert_string_equal(name, "mini");
    assert_int_equal(sy_affinity_get(k, name, sizeof(name), now + 5000000), 0); /* expired */
    sy_affinity_put(k, "big", 5000000, now);
    assert_int_equal(sy_affinity_get(k, name, sizeof(name), now), 1);
    assert_string_equal(name, "big");
    assert_int_equal(sy_affinity_get(k, name, 3, now), 0); /* does not fit: not returned */
    assert_int_equal(sy_affinity_get(0, name, sizeof(name), now), 0);

    json_decref(t1);
    json_decref(t2);
    json_decref(parts);
    json_decref(other_sys);
    json_decref(no_sys);
    json_decref(other_user);
    json_decref(no_user);
}

/* A conversation remembered on a deployment of a weighted tier stays there
 * across turns. */
static void test_affinity_pick(void **state)
{
    (void)state;
    sy_config *cfg = load_routes("{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"auto\"},"
                                 "\"affinity\":\"conversation\","
                                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\",\"mini\","
                                 "\"mid\"],\"strategy\":"
                                 "\"weighted\"},{\"name\":\"b\",\"targets\":[\"big\"]}]},"
                                 "{\"name\":\"plain\",\"match\":{\"model\":\"plain\"},"
                                 "\"tiers\":[{\"name\":\"a\",\"targets\":[\"small\",\"mini\","
                                 "\"mid\"],\"strategy\":"
                                 "\"weighted\"}]}]}");
    json_t *t1 = body_of("{\"model\":\"auto\",\"messages\":[" U("let us talk") "]}");
    json_t *t2 =
        body_of("{\"model\":\"auto\",\"messages\":[" U("let us talk") "," A "," U("more") "]}");
    sy_route_ctx rc = {.tenant = "k:1"};
    sy_pick p;

    assert_int_equal(sy_router_pick(cfg, "auto", t1, &rc, &p), SY_OK);
    assert_false(p.affinity_hit);
    assert_true(p.affinity_key == sy_affinity_key("k:1", t1));
    /* the relay remembers the deployment that served the first turn */
    sy_affinity_put(p.affinity_key, "mid", 3600ll * 1000000, sy_now_us());
    for (int i = 0; i < 300; i++) {
        assert_int_equal(sy_router_pick(cfg, "auto", i % 2 ? t1 : t2, &rc, &p), SY_OK);
        assert_true(p.affinity_hit);
        assert_string_equal(p.targets[0]->name, "mid");
        assert_int_equal(p.ntargets, 4); /* the others stay as fallback */
    }
    /* another tenant is another conversation */
    sy_route_ctx rc2 = {.tenant = "k:2"};
    int mid_first = 0;
    for (int i = 0; i < 300; i++) {
        assert_int_equal(sy_router_pick(cfg, "auto", t2, &rc2, &p), SY_OK);
        assert_false(p.affinity_hit);
        mid_first += strcmp(p.targets[0]->name, "mid") == 0;
    }
    assert_true(mid_first < 200);
    /* the remembered deployment's breaker opens: the conversation moves on */
    open_breaker(cfg, "mid");
    assert_int_equal(sy_router_pick(cfg, "auto", t2, &rc, &p), SY_OK);
    assert_string_not_equal(p.targets[0]->name, "mid");
    assert_string_equal(p.targets[p.ntargets - 1]->name, "mid");
    /* a route without affinity keeps no key */
    assert_int_equal(sy_router_pick(cfg, "plain", t2, &rc, &p), SY_OK);
    assert_true(p.affinity_key == 0);
    assert_false(p.affinity_hit);
    json_decref(t1);
    json_decref(t2);
    sy_config_unref(cfg);
}

/* A rule's tier wins over a conversation remembered on another tier (the rule says what the
 * request needs); without a rule the conversation stays where it was (no model swap). */
static void test_affinity_and_rules(void **state)
{
    (void)state;
    sy_config *cfg = load_routes(
        "{\"routes\":[{\"name\":\"r\",\"match\":{\"model\":\"auto\"},\"affinity\":\"conversation\","
        "\"rules\":[{\"when\":{\"has_tools\":true},\"tier\":\"hard\"}],"
        "\"classifier\":{\"weights\":\"@W\",\"threshold\":0.99},"
        "\"tiers\":[{\"name\":\"easy\",\"targets\":[\"small\",\"mini\"]},"
        "{\"name\":\"hard\",\"targets\":[\"big\",\"huge\"]}]}]}");
    json_t *plain = body_of("{\"model\":\"auto\",\"messages\":[" U("hello") "]}");
    json_t *tools = body_of("{\"model\":\"auto\",\"messages\":[" U(
        "hello") "],\"tools\":[{"
                 "\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}");
    sy_route_ctx rc = {.tenant = "k:1"};
    sy_pick p;
    uint64_t key = sy_affinity_key("k:1", plain);
    assert_true(key == sy_affinity_key("k:1", tools));

    /* remembered on the easy tier's second deployment */
    sy_affinity_put(key, "mini", 3600ll * 1000000, sy_now_us());
    assert_int_equal(sy_router_pick(cfg, "auto", plain, &rc, &p), SY_OK);
    assert_string_equal(p.tier, "easy");
    assert_true(p.affinity_hit);
    assert_string_equal(order(&p), "mini,small,big,huge");
    /* a rule forces the hard tier: the remembered easy deployment does not come first */
    assert_int_equal(sy_router_pick(cfg, "auto", tools, &rc, &p), SY_OK);
    assert_string_equal(p.tier, "hard");
    assert_string_equal(p.rule, "rules[0]");
    assert_false(p.affinity_hit);
    assert_string_equal(order(&p), "big,huge,small,mini");
    /* ... but a remembered deployment of the forced tier does */
    sy_affinity_put(key, "huge", 3600ll * 1000000, sy_now_us());
    assert_int_equal(sy_router_pick(cfg, "auto", tools, &rc, &p), SY_OK);
    assert_true(p.affinity_hit);
    assert_string_equal(order(&p), "huge,big,small,mini");
    /* the classifier's tier does not override the conversation's deployment */
    assert_int_equal(sy_router_pick(cfg, "auto", plain, &rc, &p), SY_OK);
    assert_string_equal(p.tier, "easy");
    assert_true(p.affinity_hit);
    assert_string_equal(p.targets[0]->name, "huge");
    json_decref(plain);
    json_decref(tools);
    sy_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pick, teardown),
        cmocka_unit_test_teardown(test_rules_force_tier, teardown),
        cmocka_unit_test_teardown(test_classifier_threshold, teardown),
        cmocka_unit_test_teardown(test_router_target_share, teardown),
        cmocka_unit_test_teardown(test_strategy_ordered, teardown),
        cmocka_unit_test_teardown(test_strategy_weighted, teardown),
        cmocka_unit_test_teardown(test_strategy_least_inflight, teardown),
        cmocka_unit_test_teardown(test_strategy_lowest_latency, teardown),
        cmocka_unit_test_teardown(test_availability, teardown),
        cmocka_unit_test_teardown(test_availability_half_open, teardown),
        cmocka_unit_test_teardown(test_affinity_key, teardown),
        cmocka_unit_test_teardown(test_affinity_pick, teardown),
        cmocka_unit_test_teardown(test_affinity_and_rules, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
