/* Unit tests for the Redis store against a real redis-server started by the test: the shared
 * behavioural suite (same expectations as the embedded store), then what only Redis has: the key
 * prefix and database, NOSCRIPT fallback, AUTH without leaking the password, unix sockets, the
 * pool under blocking reads, and outages (killed, stopped, not started yet) that must fail
 * calls within timeout_ms and heal by themselves without recreating the store.
 * Skips (exit 0) when redis-server is not installed. */
#include "store_suite.h"

#include "redis_helper.h"

#define SUITE_TIMEOUT_MS 250 /* generous: sanitizers and a loaded CI box */
#define OUTAGE_TIMEOUT_MS 50 /* the documented default, for the outage tests */
#define SLACK_MS 40          /* scheduling noise allowed on top of a deadline */

static redis_srv g_srv;

static sy_store *make_with(const char *url, long timeout_ms, int pool, const char *prefix)
{
    char json[512];
    json_t *j;
    sy_store_opts o;
    sy_errlist errs;
    sy_store *s = NULL;

    snprintf(json, sizeof(json),
             "{\"url\": \"%s\", \"timeout_ms\": %ld, \"pool\": %d, \"key_prefix\": \"%s\"}", url,
             timeout_ms, pool, prefix);
    j = json_loads(json, 0, NULL);
    assert_non_null(j);
    sy_store_opts_init(&o);
    sy_errlist_init(&errs);
    assert_int_equal(sy_store_config_parse(j, &o, &errs), SY_OK);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    json_decref(j);
    return s;
}

static const char *url_of(const redis_srv *srv)
{
    static char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    return url;
}

static sy_store *make_redis(void)
{
    sy_store *s = make_with(url_of(&g_srv), SUITE_TIMEOUT_MS, 4, "sy:");
    assert_true(sy_store_healthy(s));
    return s;
}

static void redis_pass(int64_t ms)
{
    rh_nap((long)ms); /* Redis's clock cannot be injected: real time has to pass */
}

static void redis_reset(void)
{
    assert_true(rh_cmd(&g_srv, "FLUSHALL"));
}

/* Polls sy_store_healthy() until it equals <want> or <ms> pass. */
static bool wait_health(sy_store *s, bool want, int64_t ms)
{
    for (int64_t end = rh_mono_ms() + ms; rh_mono_ms() < end; rh_nap(10))
        if (sy_store_healthy(s) == want)
            return true;
    return sy_store_healthy(s) == want;
}

/* ---- Redis only ----------------------------------------------------------------------------- */

static void test_redis_prefix_and_db(void **state)
{
    sy_store *s = *state;
    sy_store *other, *db3;
    redisContext *c;
    redisReply *r;
    char v[16];

    assert_int_equal(sy_store_kind_of(s), SY_STORE_REDIS);
    assert_int_equal(sy_store_set(s, "{c:ab}", "v1", 2, 0, 0, NULL), SY_OK);
    c = rh_connect(&g_srv);
    assert_non_null(c);
    r = redisCommand(c, "GET sy:{c:ab}");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "v1");
    freeReplyObject(r);

    /* another prefix is another namespace */
    other = make_with(url_of(&g_srv), SUITE_TIMEOUT_MS, 1, "other:");
    assert_int_equal(get_str(other, "{c:ab}", v, sizeof(v)), SY_ENOTFOUND);
    sy_store_free(other);

    /* the database from the URL */
    char url[80];
    snprintf(url, sizeof(url), "%s/3", url_of(&g_srv));
    db3 = make_with(url, SUITE_TIMEOUT_MS, 1, "sy:");
    assert_int_equal(get_str(db3, "{c:ab}", v, sizeof(v)), SY_ENOTFOUND);
    assert_int_equal(sy_store_set(db3, "{c:ab}", "v3", 2, 0, 0, NULL), SY_OK);
    sy_store_free(db3);
    r = redisCommand(c, "SELECT 3");
    freeReplyObject(r);
    r = redisCommand(c, "GET sy:{c:ab}");
    assert_string_equal(r->str, "v3");
    freeReplyObject(r);
    r = redisCommand(c, "FLUSHDB");
    freeReplyObject(r);
    redisFree(c);
}

static void test_redis_noscript_fallback(void **state)
{
    sy_store *s = *state;
    sy_store_gcra_req q = {.rate = 10, .period_ms = 1000, .burst = 5, .cost = 1};
    sy_store_gcra_res r;
    sy_store_cas_req cq = {.expect_mode = SY_CAS_ANY, .value = "v", .value_len = 1};
    bool sw = false, applied = false;
    sy_store_incr op = {"{s:x}", "f", 1, 0, 0};

    for (int round = 0; round < 2; round++) {
        assert_true(rh_cmd(&g_srv, "SCRIPT FLUSH"));
        assert_int_equal(sy_store_gcra(s, "{l:x}", &q, &r), SY_OK);
        assert_true(r.allowed);
        assert_int_equal(sy_store_cas(s, "{cb:x}", &cq, &sw, NULL), SY_OK);
        assert_true(sw);
        char once[32];
        snprintf(once, sizeof(once), "{s:x}:once:%d", round);
        assert_int_equal(sy_store_hincrby_many(s, &op, 1, once, 1000, &applied), SY_OK);
        assert_true(applied);
        /* now loaded: EVALSHA hits */
        assert_int_equal(sy_store_gcra(s, "{l:x}", &q, &r), SY_OK);
        assert_true(r.allowed);
    }
    assert_int_equal(op.result, 2);
}

static void test_redis_unix_socket(void **state)
{
    char url[256];
    sy_store *s;
    char v[8];

    (void)state;
    snprintf(url, sizeof(url), "unix://%s", g_srv.sock);
    s = make_with(url, SUITE_TIMEOUT_MS, 2, "sy:");
    assert_true(sy_store_healthy(s));
    assert_int_equal(sy_store_set(s, "{u}", "ok", 2, 0, 0, NULL), SY_OK);
    assert_int_equal(get_str(s, "{u}", v, sizeof(v)), SY_OK);
    assert_string_equal(v, "ok");
    sy_store_free(s);
}

static void test_redis_new_alloc_failures(void **state)
{
    char json[128];
    json_t *j;
    sy_store_opts o;
    sy_errlist errs;
    sy_store *s = NULL;

    (void)state;
    snprintf(json, sizeof(json), "{\"url\": \"redis://u@127.0.0.1:%d\", \"pool\": 2}", g_srv.port);
    j = json_loads(json, 0, NULL);
    sy_store_opts_init(&o);
    sy_errlist_init(&errs);
    assert_int_equal(sy_store_config_parse(j, &o, &errs), SY_OK);
    ALLOC_LOOP(sy_store_new(&o, &s));
    assert_true(sy_store_healthy(s));
    assert_int_equal(sy_store_set(s, "{n}", "v", 1, 0, 0, NULL), SY_OK);
    sy_store_free(s);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    json_decref(j);
}

/* Runs <fn> with stderr captured into a new string (caller frees). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char path[] = "/tmp/sy-stderr-XXXXXX";
    int fd = mkstemp(path), saved;
    char *text;
    FILE *f;
    long n;

    assert_true(fd >= 0);
    fflush(stderr);
    saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = calloc(1, (size_t)n + 1);
    assert_true(fread(text, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    unlink(path);
    return text;
}

typedef struct auth_case {
    const redis_srv *srv;
    const char *password;
    bool expect_ok;
} auth_case;

static void run_auth_case(void *p)
{
    auth_case *a = p;
    char json[256];
    json_t *j;
    sy_store_opts o;
    sy_errlist errs;
    sy_store *s = NULL;
    char v[8];

    setenv("SY_TEST_REDIS_PASSWORD", a->password, 1);
    snprintf(json, sizeof(json),
             "{\"url\": \"redis://127.0.0.1:%d\", \"password_env\": \"SY_TEST_REDIS_PASSWORD\", "
             "\"timeout_ms\": %d}",
             a->srv->port, SUITE_TIMEOUT_MS);
    j = json_loads(json, 0, NULL);
    sy_store_opts_init(&o);
    sy_errlist_init(&errs);
    assert_int_equal(sy_store_config_parse(j, &o, &errs), SY_OK);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    assert_int_equal(sy_store_healthy(s), a->expect_ok);
    if (a->expect_ok) {
        assert_int_equal(sy_store_set(s, "{a}", "ok", 2, 0, 0, NULL), SY_OK);
        assert_int_equal(get_str(s, "{a}", v, sizeof(v)), SY_OK);
    } else {
        assert_int_equal(sy_store_set(s, "{a}", "ok", 2, 0, 0, NULL), SY_EUNAVAIL);
    }
    sy_store_free(s);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    json_decref(j);
}

static void test_redis_auth(void **state)
{
    redis_srv srv = {.requirepass = "pw-Zx81-secret"};
    auth_case good = {&srv, "pw-Zx81-secret", true};
    auth_case bad = {&srv, "wrong-pw-Qq77", false};
    char *log;

    (void)state;
    assert_true(rh_start(&srv));
    log = capture_stderr(run_auth_case, &good);
    assert_null(strstr(log, "pw-Zx81-secret"));
    free(log);
    log = capture_stderr(run_auth_case, &bad);
    assert_null(strstr(log, "wrong-pw-Qq77"));
    assert_non_null(strstr(log, "is down")); /* the state change is logged, once */
    assert_null(strstr(strstr(log, "is down") + 1, "is down"));
    free(log);
    rh_stop(&srv);
}

/* Every call fails (not SY_OK) within the deadline; returns the slowest call's ms. */
static int64_t calls_fail_within(sy_store *s, int calls)
{
    int64_t worst = 0;
    char v[8];

    for (int i = 0; i < calls; i++) {
        int64_t t0 = rh_mono_ms();
        sy_err rc =
            i % 2 ? sy_store_set(s, "{o}", "x", 1, 0, 0, NULL) : get_str(s, "{o}", v, sizeof(v));
        int64_t dt = rh_mono_ms() - t0;
        assert_true(rc == SY_ETIMEOUT || rc == SY_EUNAVAIL);
        if (dt > worst)
            worst = dt;
    }
    return worst;
}

static void test_redis_outage_kill_restart(void **state)
{
    redis_srv srv = {0};
    sy_store *s;
    sy_store_stats st;
    char v[8];

    (void)state;
    assert_true(rh_start(&srv));
    s = make_with(url_of(&srv), OUTAGE_TIMEOUT_MS, 4, "sy:");
    assert_true(sy_store_healthy(s));
    assert_int_equal(sy_store_set(s, "{o}", "before", 6, 0, 0, NULL), SY_OK);

    rh_signal(&srv, SIGKILL);
    assert_true(calls_fail_within(s, 1) <= OUTAGE_TIMEOUT_MS + SLACK_MS);
    assert_false(sy_store_healthy(s));
    /* while down, calls fail at once without I/O */
    assert_true(calls_fail_within(s, 200) <= 5);

    assert_true(rh_start(&srv)); /* same port, same store object */
    assert_true(wait_health(s, true, 5000));
    assert_int_equal(sy_store_set(s, "{o}", "after", 5, 0, 0, NULL), SY_OK);
    assert_int_equal(get_str(s, "{o}", v, sizeof(v)), SY_OK);
    assert_string_equal(v, "after");
    sy_store_stats_get(s, &st);
    assert_true(st.reconnects >= 1);
    assert_true(st.failures >= 201);

    /* a kill while idle is noticed by the monitor's PING, without any call */
    rh_signal(&srv, SIGKILL);
    assert_true(wait_health(s, false, 3000));
    assert_true(rh_start(&srv));
    assert_true(wait_health(s, true, 5000));
    assert_int_equal(get_str(s, "{o}", v, sizeof(v)), SY_ENOTFOUND); /* no persistence */
    sy_store_free(s);
    rh_stop(&srv);
}

static void test_redis_outage_hang(void **state)
{
    redis_srv srv = {0};
    sy_store *s;
    char v[8];

    (void)state;
    assert_true(rh_start(&srv));
    s = make_with(url_of(&srv), OUTAGE_TIMEOUT_MS, 4, "sy:");
    assert_int_equal(sy_store_set(s, "{o}", "v", 1, 0, 0, NULL), SY_OK);

    /* a hung server accepts connections (the kernel does) but never answers */
    rh_signal(&srv, SIGSTOP);
    int64_t t0 = rh_mono_ms();
    assert_int_equal(get_str(s, "{o}", v, sizeof(v)), SY_ETIMEOUT);
    assert_true(rh_mono_ms() - t0 <= OUTAGE_TIMEOUT_MS + SLACK_MS);
    assert_false(sy_store_healthy(s));
    assert_true(calls_fail_within(s, 50) <= OUTAGE_TIMEOUT_MS + SLACK_MS);
    /* the monitor's reconnects time out too: still degraded after a while */
    rh_nap(300);
    assert_false(sy_store_healthy(s));
    assert_true(calls_fail_within(s, 50) <= OUTAGE_TIMEOUT_MS + SLACK_MS);

    rh_signal(&srv, SIGCONT);
    assert_true(wait_health(s, true, 5000));
    assert_int_equal(get_str(s, "{o}", v, sizeof(v)), SY_OK);
    sy_store_free(s);
    rh_stop(&srv);
}

static void test_redis_starts_down(void **state)
{
    redis_srv srv = {0};
    sy_store *s;
    int64_t t0;

    (void)state;
    srv.port = rh_free_port();
    t0 = rh_mono_ms();
    s = make_with(url_of(&srv), OUTAGE_TIMEOUT_MS, 4, "sy:");
    assert_true(rh_mono_ms() - t0 < 1000);
    assert_false(sy_store_healthy(s));
    assert_true(calls_fail_within(s, 20) <= 5);
    assert_true(rh_start(&srv));
    assert_true(wait_health(s, true, 5000));
    assert_int_equal(sy_store_set(s, "{o}", "v", 1, 0, 0, NULL), SY_OK);
    sy_store_free(s);
    rh_stop(&srv);
}

typedef struct reader_arg {
    sy_store *s;
    long block_ms;
    sy_err rc;
    size_t n;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *a = p;
    sy_stream_entries e;

    sy_stream_entries_init(&e);
    a->rc = sy_store_xreadgroup(a->s, "{b}:q", "g", "w", ">", 1, a->block_ms, &e);
    a->n = e.n;
    sy_stream_entries_cleanup(&e);
    return NULL;
}

static void test_redis_pool_and_blocking(void **state)
{
    sy_store *s = make_with(url_of(&g_srv), OUTAGE_TIMEOUT_MS, 2, "sy:");
    pthread_t th;
    reader_arg a = {s, 600, SY_EINTERNAL, 9};
    reader_arg b = {s, 100, SY_EINTERNAL, 9};
    char v[8];
    int64_t t0;

    (void)state;
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "g", "$", NULL), SY_OK);
    assert_int_equal(sy_store_set(s, "{p}", "v", 1, 0, 0, NULL), SY_OK);
    assert_int_equal(pthread_create(&th, NULL, reader_main, &a), 0);
    rh_nap(100); /* let the reader block inside Redis */
    /* pool 2: one connection is held by the blocking read, the other serves the hot path */
    for (int i = 0; i < 20; i++) {
        t0 = rh_mono_ms();
        assert_int_equal(get_str(s, "{p}", v, sizeof(v)), SY_OK);
        assert_true(rh_mono_ms() - t0 < OUTAGE_TIMEOUT_MS);
    }
    /* a second blocking read gets no turn within its block time: empty, not an error */
    t0 = rh_mono_ms();
    reader_main(&b);
    assert_int_equal(b.rc, SY_OK);
    assert_int_equal(b.n, 0);
    assert_true(rh_mono_ms() - t0 >= 90);
    pthread_join(th, NULL);
    assert_int_equal(a.rc, SY_OK);
    assert_int_equal(a.n, 0);
    assert_true(sy_store_healthy(s));
    sy_store_free(s);

    /* pool 1: while the only connection is held, calls time out; that is not an outage */
    s = make_with(url_of(&g_srv), OUTAGE_TIMEOUT_MS, 1, "sy:");
    a = (reader_arg){s, 400, SY_EINTERNAL, 9};
    assert_int_equal(pthread_create(&th, NULL, reader_main, &a), 0);
    rh_nap(100);
    t0 = rh_mono_ms();
    assert_int_equal(get_str(s, "{p}", v, sizeof(v)), SY_ETIMEOUT);
    assert_true(rh_mono_ms() - t0 <= OUTAGE_TIMEOUT_MS + SLACK_MS);
    assert_true(sy_store_healthy(s));
    pthread_join(th, NULL);
    assert_int_equal(a.rc, SY_OK);
    assert_int_equal(get_str(s, "{p}", v, sizeof(v)), SY_OK);
    sy_store_free(s);
}

static void test_redis_latency(void **state)
{
    suite_bench(*state, "redis tcp");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_SUITE_TESTS,
        SUITE_TEST(test_redis_prefix_and_db),
        SUITE_TEST(test_redis_noscript_fallback),
        cmocka_unit_test(test_redis_unix_socket),
        cmocka_unit_test(test_redis_new_alloc_failures),
        cmocka_unit_test(test_redis_auth),
        cmocka_unit_test(test_redis_outage_kill_restart),
        cmocka_unit_test(test_redis_outage_hang),
        cmocka_unit_test(test_redis_starts_down),
        cmocka_unit_test(test_redis_pool_and_blocking),
        SUITE_TEST(test_redis_latency),
    };
    int rc;

    if (rh_find_server() == NULL) {
        printf("SKIP: redis-server is not installed (apt-get install -y redis-server)\n");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN); /* the helper's own hiredis connections use write(2) */
    if (!rh_start(&g_srv)) {
        fprintf(stderr, "could not start redis-server\n");
        rh_stop(&g_srv);
        return 1;
    }
    g_env.make = make_redis;
    g_env.pass = redis_pass;
    g_env.reset = redis_reset;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    rh_stop(&g_srv);
    return rc;
}
