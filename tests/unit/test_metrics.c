/* Unit tests for metrics: the Prometheus text format (every line a comment or a well-formed
 * sample, one HELP/TYPE per family before its samples, label escaping), counter values (requests
 * by status, tokens by kind, exact dollars, savings), histograms (cumulative buckets, +Inf =
 * count, sum), the series cap, deployments' breaker state and store health, and concurrent
 * observers. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/config.h"
#include "switchyard/health.h"
#include "switchyard/metrics.h"
#include "switchyard/request.h"

static sy_spend_rec rec(const char *route, const char *dep, int status, int64_t cost)
{
    sy_spend_rec r = {
        .route = route,
        .tier = "local",
        .deployment = dep,
        .model = "m",
        .status = status,
        .error = status >= 400,
        .usage = {.prompt = 100, .cached = 30, .cache_write = 5, .completion = 50, .reasoning = 10},
        .cost_micro = cost,
        .counterfactual_micro = cost * 2,
        .latency_us = 120000, /* 0.12 s: bucket 0.25 */
        .ttft_us = 4000,      /* bucket 0.005 */
        .cache_lookup = true,
    };
    return r;
}

static char *render(sy_metrics *m, const sy_metrics_src *src)
{
    sy_buf b;
    sy_buf_init(&b, 16u << 20);
    assert_int_equal(sy_metrics_render(m, src, &b), SY_OK);
    return sy_buf_take(&b, NULL);
}

/* Checks the exposition format line by line; returns the number of samples. */
static int check_format(const char *text)
{
    char seen_type[256][96];
    int ntypes = 0, samples = 0;
    char current[96] = "";

    /* memchr over a known end: ASan's strchr re-measures the rest of the text on every call,
     * which made this loop quadratic on the large renders of test_series_cap */
    const char *text_end = text + strlen(text);
    for (const char *p = text; *p != '\0';) {
        const char *nl = memchr(p, '\n', (size_t)(text_end - p));
        assert_non_null(nl); /* every line ends with \n */
        size_t len = (size_t)(nl - p);
        char line[2048];
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[32];
            assert_int_equal(sscanf(line + 7, "%95s %31s", name, type), 2);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            for (int i = 0; i < ntypes; i++)
                if (strcmp(seen_type[i], name) == 0)
                    fail_msg("family %s declared twice", name);
            snprintf(seen_type[ntypes++], 96, "%s", name);
            snprintf(current, sizeof(current), "%s", name);
            continue;
        }
        assert_true(line[0] != '#');
        /* name{labels} value  or  name value */
        size_t nlen = strcspn(line, "{ ");
        assert_true(nlen > 0);
        for (size_t i = 0; i < nlen; i++) {
            char c = line[i];
            assert_true((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                        (i > 0 && c >= '0' && c <= '9'));
        }
        /* the sample belongs to the family declared last (histograms: _bucket/_sum/_count) */
        assert_int_equal(strncmp(line, current, strlen(current)), 0);
        const char *rest = line + nlen;
        if (*rest == '{') {
            /* label pairs: name="value" with \\ \" \n escapes */
            rest++;
            while (*rest != '}') {
                while (*rest != '=') {
                    assert_true(*rest != '\0');
                    rest++;
                }
                rest++;
                assert_int_equal(*rest, '"');
                rest++;
                while (*rest != '"') {
                    assert_true(*rest != '\0' && *rest != '\n');
                    if (*rest == '\\') {
                        rest++;
                        assert_true(*rest == '\\' || *rest == '"' || *rest == 'n');
                    }
                    rest++;
                }
                rest++;
                if (*rest == ',')
                    rest++;
            }
            rest++;
        }
        assert_int_equal(*rest, ' ');
        char *end;
        (void)strtod(rest + 1, &end);
        assert_true(end != rest + 1 && *end == '\0');
        samples++;
    }
    return samples;
}

static void expect_line(const char *text, const char *line)
{
    char *want = NULL;
    assert_true(asprintf(&want, "\n%s\n", line) > 0);
    if (strstr(text, want) == NULL)
        fail_msg("missing line: %s\n--- got ---\n%s", line, text);
    free(want);
}

static void test_format_and_values(void **state)
{
    (void)state;
    sy_metrics *m = NULL;
    sy_spend_rec r;

    assert_int_equal(sy_metrics_new(&m), SY_OK);
    char *empty = render(m, NULL);
    check_format(empty);
    free(empty);

    r = rec("auto", "local-small", 200, 0);
    sy_metrics_observe_request(m, &r);
    r = rec("auto", "gpt-4.1", 200, 1234);
    sy_metrics_observe_request(m, &r);
    sy_metrics_observe_request(m, &r);
    r = rec("auto", "gpt-4.1", 502, 0);
    r.latency_us = -1;
    r.ttft_us = -1;
    r.usage.estimated = true;
    sy_metrics_observe_request(m, &r);
    r = rec("auto", "gpt-4.1", 200, 0);
    r.cache_hit = true;
    r.counterfactual_micro = 5000;
    r.latency_us = 200000000; /* past the last bucket */
    sy_metrics_observe_request(m, &r);
    /* a quote, a backslash and a newline in a label value */
    r = rec("we\"ird\\route\nx", "d", 200, 1);
    sy_metrics_observe_request(m, &r);

    char *t = render(m, NULL);
    int n = check_format(t);
    assert_true(n > 40);
    const char *g = "route=\"auto\",tier=\"local\",deployment=\"gpt-4.1\",model=\"m\"";
    char line[512];
#define EXPECT(...)                                                                                \
    do {                                                                                           \
        snprintf(line, sizeof(line), __VA_ARGS__);                                                 \
        expect_line(t, line);                                                                      \
    } while (0)
    EXPECT("switchyard_requests_total{%s,status=\"200\"} 3", g);
    EXPECT("switchyard_requests_total{%s,status=\"502\"} 1", g);
    EXPECT("switchyard_errors_total{%s} 1", g);
    EXPECT("switchyard_tokens_total{%s,kind=\"prompt\"} 400", g);
    EXPECT("switchyard_tokens_total{%s,kind=\"cached\"} 120", g);
    EXPECT("switchyard_tokens_total{%s,kind=\"cache_write\"} 20", g);
    EXPECT("switchyard_tokens_total{%s,kind=\"completion\"} 200", g);
    EXPECT("switchyard_tokens_total{%s,kind=\"reasoning\"} 40", g);
    EXPECT("switchyard_cost_usd_total{%s} 0.002468", g);
    EXPECT("switchyard_counterfactual_usd_total{%s} 0.009936", g);
    EXPECT("switchyard_savings_usd{%s} 0.007468", g);
    EXPECT("switchyard_cache_hits_total{%s} 1", g);
    EXPECT("switchyard_cache_misses_total{%s} 3", g);
    EXPECT("switchyard_estimated_usage_total{%s} 1", g);
    EXPECT("switchyard_upstream_latency_seconds_bucket{%s,le=\"0.1\"} 0", g);
    EXPECT("switchyard_upstream_latency_seconds_bucket{%s,le=\"0.25\"} 2", g);
    EXPECT("switchyard_upstream_latency_seconds_bucket{%s,le=\"120\"} 2", g);
    EXPECT("switchyard_upstream_latency_seconds_bucket{%s,le=\"+Inf\"} 3", g);
    EXPECT("switchyard_upstream_latency_seconds_sum{%s} 200.240000", g);
    EXPECT("switchyard_upstream_latency_seconds_count{%s} 3", g);
    EXPECT("switchyard_ttft_seconds_bucket{%s,le=\"0.005\"} 3", g);
    EXPECT("switchyard_requests_total{route=\"we\\\"ird\\\\route\\nx\",tier=\"local\","
           "deployment=\"d\",model=\"m\",status=\"200\"} 1");
    EXPECT("switchyard_build_info{version=\"%s\"} 1", SY_VERSION);
#undef EXPECT
    free(t);
    sy_metrics_free(m);
}

static void test_sources(void **state)
{
    (void)state;
    sy_metrics *m = NULL;
    sy_store_opts so;
    sy_store *st = NULL;
    sy_spend *sp = NULL;
    sy_deployment deps[2] = {{.name = "a"}, {.name = "b\"q"}};
    sy_config cfg = {.deployments = deps, .ndeployments = 2};

    assert_int_equal(sy_metrics_new(&m), SY_OK);
    sy_store_opts_init(&so);
    assert_int_equal(sy_store_new(&so, &st), SY_OK);
    sy_store_opts_cleanup(&so);
    sy_spend_opts o;
    sy_spend_opts_init(&o);
    o.metrics = m;
    assert_int_equal(sy_spend_new(st, NULL, &o, &sp), SY_OK);
    deps[0].health = sy_health_get("a");
    deps[1].health = sy_health_get("b\"q");
    /* open b's breaker: one failure with a threshold of 1 */
    sy_health_begin(deps[1].health, sy_now_us());
    sy_health_end(deps[1].health, false, 0, 1, 60000000, sy_now_us());
    sy_health_begin(deps[0].health, sy_now_us());

    /* sy_spend_record feeds the registry */
    sy_spend_rec r = rec("auto", "a", 200, 42);
    sy_spend_record(sp, &r);
    assert_int_equal(sy_spend_sync(sp, 5000), SY_OK);

    sy_metrics_src src = {.cfg = &cfg, .store = st, .spend = sp, .inflight = 3};
    char *t = render(m, &src);
    check_format(t);
    expect_line(t, "switchyard_cost_usd_total{route=\"auto\",tier=\"local\",deployment=\"a\","
                   "model=\"m\"} 0.000042");
    expect_line(t, "switchyard_inflight_requests 3");
    expect_line(t, "switchyard_breaker_state{deployment=\"a\",state=\"closed\"} 0");
    expect_line(t, "switchyard_breaker_state{deployment=\"b\\\"q\",state=\"open\"} 1");
    expect_line(t, "switchyard_deployment_inflight{deployment=\"a\"} 1");
    expect_line(t, "switchyard_store_up{kind=\"embedded\"} 1");
    expect_line(t, "switchyard_spend_dropped_total 0");
    /* every spend gauge and counter, one sample each (all drained by the sync) */
    expect_line(t, "switchyard_spend_queued_records 0");
    expect_line(t, "switchyard_spend_pending_groups 0");
    expect_line(t, "switchyard_spend_journal_bytes 0");
    expect_line(t, "switchyard_spend_store_errors_total 0");
    expect_line(t, "switchyard_spend_journal_errors_total 0");
    free(t);
    sy_health_abandon(deps[0].health);
    sy_spend_free(sp);
    sy_store_free(st);
    sy_metrics_free(m);
    sy_health_reset_all();
}

static void test_series_cap(void **state)
{
    (void)state;
    sy_metrics *m = NULL;

    assert_int_equal(sy_metrics_new(&m), SY_OK);
    for (int i = 0; i < SY_METRICS_MAX_SERIES + 50; i++) {
        char dep[32];
        snprintf(dep, sizeof(dep), "d%d", i);
        sy_spend_rec r = rec("auto", dep, 200 + i % 20, 1);
        sy_metrics_observe_request(m, &r);
    }
    char *t = render(m, NULL);
    check_format(t);
    /* the overflow is counted, not dropped */
    expect_line(t, "switchyard_cost_usd_total{route=\"(other)\",tier=\"(other)\","
                   "deployment=\"(other)\",model=\"(other)\"} 0.000050");
    free(t);
    /* more than SY_METRICS_MAX_STATUS statuses on one series fold into "other" */
    for (int i = 0; i < 12; i++) {
        sy_spend_rec r = rec("auto", "d0", 400 + i, 0);
        sy_metrics_observe_request(m, &r);
    }
    t = render(m, NULL);
    check_format(t);
    assert_non_null(strstr(t, "deployment=\"d0\",model=\"m\",status=\"other\"} 5"));
    free(t);
    sy_metrics_free(m);
}

static sy_metrics *g_m;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5000; i++) {
        sy_spend_rec r = rec(i % 2 ? "a" : "b", i % 3 ? "x" : "y", 200, 1);
        sy_metrics_observe_request(g_m, &r);
        if (i % 1000 == 0) {
            char *t = render(g_m, NULL);
            free(t);
        }
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    pthread_t t[4];

    assert_int_equal(sy_metrics_new(&g_m), SY_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = render(g_m, NULL);
    check_format(text);
    /* 4 threads x 5000 x $0.000001 spread over 4 series */
    int64_t total = 0;
    for (const char *p = text; (p = strstr(p, "\nswitchyard_cost_usd_total{")) != NULL; p++) {
        const char *sp = strchr(p + 1, '}');
        total += (int64_t)(strtod(sp + 2, NULL) * 1e6 + 0.5);
    }
    assert_int_equal(total, 20000);
    free(text);
    sy_metrics_free(g_m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_values),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
