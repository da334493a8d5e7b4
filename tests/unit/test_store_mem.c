/* Unit tests for the store: the shared behavioural suite on the embedded backend (with an
 * injected clock: no test sleeps for a TTL), plus what only the embedded store has (LRU under the
 * memory cap, the expiry sweep, rollback of a failed batch, tombstone compaction, allocation
 * failures on every stateful call) and the configuration parser. */
#include "store_suite.h"

#include <jansson.h>

static atomic_llong fake_now = 1700000000000LL;

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return atomic_load(&fake_now);
}

static void mem_pass(int64_t ms)
{
    atomic_fetch_add(&fake_now, ms);
}

static void mem_reset(void)
{
}

static sy_store *make_mem_capped(size_t max_bytes)
{
    sy_store_opts o;
    sy_store *s = NULL;

    sy_store_opts_init(&o);
    o.mem.clock = fake_clock;
    if (max_bytes)
        o.mem.max_bytes = max_bytes;
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    return s;
}

static sy_store *make_mem(void)
{
    return make_mem_capped(0);
}

/* ---- embedded only -------------------------------------------------------------------------- */

static void test_mem_kind_and_stats(void **state)
{
    sy_store *s = *state;
    sy_store_stats st;

    assert_int_equal(sy_store_kind_of(s), SY_STORE_MEM);
    assert_true(sy_store_healthy(s));
    assert_int_equal(sy_store_set(s, "a", "1", 1, 0, 0, NULL), SY_OK);
    sy_store_stats_get(s, &st);
    assert_int_equal(st.keys, 1);
    assert_true(st.bytes > 0);
    assert_int_equal(st.max_bytes, 64u << 20);
    assert_int_equal(st.ops, 1);
    assert_int_equal(sy_store_del(s, "a", NULL), SY_OK);
    sy_store_stats_get(s, &st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.bytes, 0); /* accounting returns to zero */
}

static void test_mem_lru_eviction(void **state)
{
    sy_store *s = make_mem_capped(65536);
    char val[1000], key[32];
    sy_store_stats st;
    bool b;

    (void)state;
    memset(val, 'v', sizeof(val));
    assert_int_equal(sy_store_set(s, "perm", "p", 1, 0, 0, NULL), SY_OK); /* no TTL */
    /* a batch once-key and line claim with TTLs, set before everything else (the LRU's
     * oldest), and the claim renewed like a lease */
    assert_int_equal(sy_store_set(s, "{b}:once:x:1", "1", 1, 600000, SY_STORE_NX, NULL), SY_OK);
    assert_int_equal(sy_store_set(s, "{b}:run:x:1", "w", 1, 600000, SY_STORE_NX, NULL), SY_OK);
    assert_int_equal(sy_store_expire(s, "{b}:run:x:1", 600000, &b), SY_OK);
    /* a spend once-key (a replayed spend batch must not count twice) */
    assert_int_equal(sy_store_set(s, "{s:20261124}:once:e1-1:0", "1", 1, 600000, 0, NULL), SY_OK);
    assert_int_equal(sy_store_set(s, "{s:20261124}:other", "1", 1, 600000, 0, NULL), SY_OK);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "{c:%d}", i);
        assert_int_equal(sy_store_set(s, key, val, sizeof(val), 60000, 0, NULL), SY_OK);
    }
    /* touch {c:0}: it becomes the most recently used */
    char got[8];
    sy_buf buf;
    sy_buf_init(&buf, sizeof(val));
    assert_int_equal(sy_store_get(s, "{c:0}", &buf), SY_OK);
    sy_buf_cleanup(&buf);
    for (int i = 10; i < 200; i++) {
        snprintf(key, sizeof(key), "{c:%d}", i);
        assert_int_equal(sy_store_set(s, key, val, sizeof(val), 60000, 0, NULL), SY_OK);
        if (i < 40) {
            sy_buf_init(&buf, sizeof(val)); /* keep {c:0} hot for a while */
            assert_int_equal(sy_store_get(s, "{c:0}", &buf), SY_OK);
            sy_buf_cleanup(&buf);
        }
    }
    sy_store_stats_get(s, &st);
    assert_true(st.bytes <= 65536);
    assert_true(st.evictions > 100);
    assert_int_equal(sy_store_exists(s, "{c:199}", &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_exists(s, "{c:1}", &b), SY_OK);
    assert_false(b);
    assert_int_equal(get_str(s, "perm", got, sizeof(got)), SY_OK); /* never evicted */
    assert_int_equal(sy_store_exists(s, "{b}:once:x:1", &b), SY_OK);
    assert_true(b); /* the batch queue's keys are never evicted, TTL or not */
    assert_int_equal(sy_store_exists(s, "{b}:run:x:1", &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_exists(s, "{s:20261124}:once:e1-1:0", &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_exists(s, "{s:20261124}:other", &b), SY_OK);
    assert_false(b); /* only spend's once-keys are pinned, not the whole tag */

    /* only keys without TTL left: a write that cannot fit fails, nothing is lost */
    int stored = 0;
    sy_err rc = SY_OK;
    for (int i = 0; i < 200 && rc == SY_OK; i++) {
        snprintf(key, sizeof(key), "{p:%d}", i);
        rc = sy_store_set(s, key, val, sizeof(val), 0, 0, NULL);
        stored += rc == SY_OK;
    }
    assert_int_equal(rc, SY_ENOMEM);
    assert_true(stored > 40);
    assert_int_equal(sy_store_exists(s, "{p:0}", &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_exists(s, "{c:199}", &b), SY_OK);
    assert_false(b); /* every volatile key went first */
    sy_store_stats_get(s, &st);
    assert_true(st.bytes <= 65536);
    /* an oversize stream entry or counter fails the same way */
    sy_store_field f = {"v", val, sizeof(val)};
    assert_int_equal(sy_store_xadd(s, "{b}:q", &f, 1, NULL), SY_ENOMEM);
    /* the pinned batch keys outlived every eviction, and still expire */
    assert_int_equal(sy_store_exists(s, "{b}:once:x:1", &b), SY_OK);
    assert_true(b);
    mem_pass(600001);
    assert_int_equal(sy_store_exists(s, "{b}:once:x:1", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_exists(s, "{b}:run:x:1", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_exists(s, "{s:20261124}:once:e1-1:0", &b), SY_OK);
    assert_false(b);
    sy_store_free(s);
}

static void test_mem_expiry_sweep(void **state)
{
    sy_store *s = *state;
    sy_store_stats st;
    char key[32];
    bool b;

    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "{c:%d}", i);
        assert_int_equal(sy_store_set(s, key, "v", 1, 10, 0, NULL), SY_OK);
    }
    assert_int_equal(sy_store_set(s, "stay", "v", 1, 0, 0, NULL), SY_OK);
    mem_pass(20);
    /* nobody reads the expired keys: the sweep, piggy-backed on other calls, removes them */
    for (int i = 0; i < 100; i++) {
        mem_pass(100);
        assert_int_equal(sy_store_exists(s, "stay", &b), SY_OK);
    }
    sy_store_stats_get(s, &st);
    assert_int_equal(st.keys, 1);
    assert_int_equal(st.expirations, 300);
}

static void test_mem_batch_rollback(void **state)
{
    sy_store *s = *state;
    sy_store_kvs kv;
    int64_t ttl;
    bool b;

    assert_int_equal(sy_store_hincrby(s, "h", "f", 10, NULL), SY_OK);
    assert_int_equal(sy_store_set(s, "str", "x", 1, 0, 0, NULL), SY_OK);
    sy_store_incr ops[5] = {{"h", "f", 5, 60000, 0},
                            {"h", "g", 1, 0, 0},
                            {"new", "f", 1, 0, 0},
                            {"h", "f", INT64_MAX, 0, 0}, /* overflows */
                            {"str", "f", 1, 0, 0}};
    assert_int_equal(sy_store_hincrby_many(s, ops, 5, NULL, 0, NULL), SY_EINVAL);
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(s, "h", &kv), SY_OK);
    assert_int_equal(kv.n, 1);
    assert_int_equal(hash_field_value(&kv, "f"), 10);
    assert_int_equal(sy_store_ttl(s, "h", &ttl), SY_OK);
    assert_int_equal(ttl, -1);
    assert_int_equal(sy_store_exists(s, "new", &b), SY_OK);
    assert_false(b);
    /* with a once-key: not created when the batch fails */
    assert_int_equal(sy_store_hincrby_many(s, &ops[4], 1, "once", 1000, NULL), SY_EINVAL);
    assert_int_equal(sy_store_exists(s, "once", &b), SY_OK);
    assert_false(b);
    sy_store_stats st;
    sy_store_stats_get(s, &st);
    assert_int_equal(st.keys, 2);
    sy_store_kvs_cleanup(&kv);
}

static void test_mem_stream_compaction(void **state)
{
    sy_store *s = *state;
    char ids[100][SY_STREAM_ID_MAX];
    sy_stream_entries e;
    int64_t len;
    sy_stream_pending p;

    sy_stream_entries_init(&e);
    assert_int_equal(sy_store_xgroup_create(s, "q", "g", "$", NULL), SY_OK);
    add_entries(s, "q", 100, ids);
    assert_int_equal(sy_store_xreadgroup(s, "q", "g", "c", ">", 100, 0, &e), SY_OK);
    assert_int_equal(e.n, 100);
    for (int i = 0; i < 60; i++) {
        const char *one[1] = {ids[i]};
        assert_int_equal(sy_store_xack(s, "q", "g", one, 1, true, NULL), SY_OK);
    }
    assert_int_equal(sy_store_xlen(s, "q", &len), SY_OK);
    assert_int_equal(len, 40);
    assert_int_equal(sy_store_xpending(s, "q", "g", &p), SY_OK);
    assert_int_equal(p.count, 40);
    assert_string_equal(p.min_id, ids[60]);
    assert_int_equal(sy_store_xreadgroup(s, "q", "g", "c", "0", 100, 0, &e), SY_OK);
    assert_int_equal(e.n, 40);
    for (int i = 0; i < 40; i++)
        assert_string_equal(e.items[i].id, ids[60 + i]);
    /* the clock steps back: ids still grow */
    char id[SY_STREAM_ID_MAX];
    mem_pass(-100000);
    add_entries(s, "q", 1, &id);
    assert_true(strcmp(id, ids[99]) != 0);
    assert_int_equal(sy_store_xreadgroup(s, "q", "g", "c", ">", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.items[0].id, id);
    mem_pass(100000);
    sy_stream_entries_cleanup(&e);
    /* every byte charged to a stream (entries, groups, consumers, pending) comes back */
    assert_int_equal(sy_store_hincrby(s, "h", "f", 1, NULL), SY_OK);
    assert_int_equal(sy_store_del(s, "q", NULL), SY_OK);
    assert_int_equal(sy_store_del(s, "h", NULL), SY_OK);
    sy_store_stats st;
    sy_store_stats_get(s, &st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.bytes, 0);
}

/* Every stateful call, allocation by allocation: a failure changes nothing, so the successful
 * retry sees the state as it was. */
static void test_mem_alloc_failures_stateful(void **state)
{
    sy_store *s = *state;
    sy_stream_entries e;
    char next[SY_STREAM_ID_MAX], id[SY_STREAM_ID_MAX];
    bool created = false, b;
    sy_store_stats st;

    sy_stream_entries_init(&e);
    ALLOC_LOOP(sy_store_set(s, "{t}:k", "value", 5, 1000, 0, NULL));
    ALLOC_LOOP(sy_store_set(s, "{t}:k", "longer value", 12, 0, 0, NULL));
    ALLOC_LOOP(sy_store_xgroup_create(s, "{t}:q", "g", "$", &created));
    assert_true(created);
    sy_store_field f[3] = {{"a", "1", 1}, {"b", "22", 2}, {"c", "", 0}};
    for (int i = 0; i < 12; i++) /* past the entry array's first growth */
        ALLOC_LOOP(sy_store_xadd(s, "{t}:q", f, 3, id));
    ALLOC_LOOP(sy_store_xadd(s, "{t}:fresh", f, 3, id));
    int64_t len;
    assert_int_equal(sy_store_xlen(s, "{t}:q", &len), SY_OK);
    assert_int_equal(len, 12);
    ALLOC_LOOP(sy_store_xreadgroup(s, "{t}:q", "g", "c1", ">", 10, 0, &e));
    assert_int_equal(e.n, 10);
    mem_pass(1000);
    ALLOC_LOOP(sy_store_xautoclaim(s, "{t}:q", "g", "c2", 500, "0-0", 4, &e, next));
    assert_int_equal(e.n, 4);
    assert_string_equal(entry_field(&e.items[3], "b"), "22");
    sy_stream_pel_item items[12];
    size_t n;
    assert_int_equal(sy_store_xpending_list(s, "{t}:q", "g", "-", "c2", 12, items, &n), SY_OK);
    assert_int_equal(n, 4);
    assert_int_equal(items[0].deliveries, 2);

    sy_store_incr ops[4] = {{"{t}:h1", "a", 1, 0, 0},
                            {"{t}:h2", "b", 2, 500, 0},
                            {"{t}:h1", "c", 3, 0, 0},
                            {"{t}:h1", "a", 4, 0, 0}};
    ALLOC_LOOP(sy_store_hincrby_many(s, ops, 4, NULL, 0, NULL));
    assert_int_equal(ops[3].result, 5);
    sy_store_gcra_req g = {.rate = 10, .period_ms = 1000, .burst = 5, .cost = 2};
    sy_store_gcra_res gr;
    ALLOC_LOOP(sy_store_gcra(s, "{t}:g", &g, &gr));
    assert_int_equal(gr.remaining, 3);
    assert_int_equal(sy_store_exists(s, "{t}:h2", &b), SY_OK);
    assert_true(b);
    sy_store_stats_get(s, &st);
    assert_int_equal(st.keys, 6);

    /* creating the store itself */
    sy_store_opts o;
    sy_store *t = NULL;
    sy_store_opts_init(&o);
    ALLOC_LOOP(sy_store_new(&o, &t));
    sy_store_free(t);
    sy_stream_entries_cleanup(&e);
}

/* ---- configuration -------------------------------------------------------------------------- */

static sy_err parse(const char *text, sy_store_opts *o, sy_errlist *errs)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    sy_err rc;

    assert_non_null(j);
    sy_store_opts_init(o);
    sy_errlist_init(errs);
    rc = sy_store_config_parse(j, o, errs);
    json_decref(j);
    return rc;
}

static void expect_error(const char *text, const char *msg)
{
    sy_store_opts o;
    sy_errlist errs;
    bool found = false;

    assert_int_equal(parse(text, &o, &errs), SY_ECONFIG);
    for (size_t i = 0; i < errs.n; i++)
        if (strstr(errs.items[i], msg) != NULL)
            found = true;
    if (!found) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "  got: %s\n", errs.items[i]);
        fail_msg("no error containing '%s' for %s", msg, text);
    }
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
}

static void test_config_parse(void **state)
{
    sy_store_opts o;
    sy_errlist errs;

    (void)state;
    /* null: embedded, defaults */
    assert_int_equal(parse("null", &o, &errs), SY_OK);
    assert_int_equal(o.kind, SY_STORE_MEM);
    assert_int_equal(o.mem.max_bytes, 64u << 20);
    assert_int_equal(o.mem.max_value_bytes, 1u << 20);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    sy_store_opts_init(&o);
    assert_int_equal(sy_store_config_parse(NULL, &o, &errs), SY_OK);
    assert_int_equal(o.kind, SY_STORE_MEM);

    /* minimal */
    assert_int_equal(parse("{\"url\": \"redis://127.0.0.1\"}", &o, &errs), SY_OK);
    assert_int_equal(o.kind, SY_STORE_REDIS);
    assert_string_equal(o.redis.host, "127.0.0.1");
    assert_int_equal(o.redis.port, 6379);
    assert_int_equal(o.redis.db, 0);
    assert_int_equal(o.redis.timeout_ms, 50);
    assert_int_equal(o.redis.pool, 4);
    assert_string_equal(o.redis.key_prefix, "sy:");
    assert_int_equal(o.redis.max_value_bytes, 1u << 20);
    assert_null(o.redis.password);
    assert_null(o.redis.user);
    sy_store_opts_cleanup(&o);
    sy_store_opts_cleanup(&o); /* twice is harmless */
    sy_errlist_cleanup(&errs);

    /* everything */
    setenv("SY_TEST_REDIS_PW", "s3cret", 1);
    assert_int_equal(parse("{\"url\": \"redis://app@[::1]:6380/3\", \"password_env\": "
                           "\"SY_TEST_REDIS_PW\", \"timeout_ms\": 20, \"pool\": 8, "
                           "\"key_prefix\": \"prod:\", \"max_value_bytes\": 4096}",
                           &o, &errs),
                     SY_OK);
    assert_string_equal(o.redis.host, "::1");
    assert_int_equal(o.redis.port, 6380);
    assert_int_equal(o.redis.db, 3);
    assert_string_equal(o.redis.user, "app");
    assert_string_equal(o.redis.password, "s3cret");
    assert_string_equal(o.redis.password_env, "SY_TEST_REDIS_PW");
    assert_int_equal(o.redis.timeout_ms, 20);
    assert_int_equal(o.redis.pool, 8);
    assert_string_equal(o.redis.key_prefix, "prod:");
    assert_int_equal(o.redis.max_value_bytes, 4096);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);

    /* unix socket, empty prefix */
    assert_int_equal(
        parse("{\"url\": \"unix:///run/redis.sock?db=2\", \"key_prefix\": \"\"}", &o, &errs),
        SY_OK);
    assert_string_equal(o.redis.unix_path, "/run/redis.sock");
    assert_null(o.redis.host);
    assert_int_equal(o.redis.db, 2);
    assert_string_equal(o.redis.key_prefix, "");
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);

    expect_error("{\"url\": \"rediss://h:6379\"}", "redis.url: TLS (rediss://) is not supported");
    expect_error("{\"url\": \"http://h\"}", "redis.url: must start with redis:// or unix://");
    expect_error("{\"url\": \"redis://:pw@h\"}", "redis.url: credentials in the URL");
    expect_error("{\"url\": \"redis://u:pw@h\"}", "redis.url: credentials in the URL");
    expect_error("{\"url\": \"redis://h:0\"}", "redis.url: port must be in 1..65535");
    expect_error("{\"url\": \"redis://h:x\"}", "redis.url: port must be in 1..65535");
    expect_error("{\"url\": \"redis://h/x\"}", "redis.url: the path must be a database number");
    expect_error("{\"url\": \"redis://\"}", "redis.url: missing or overlong host");
    expect_error("{\"url\": \"redis://[::1\"}", "redis.url: unterminated [IPv6] host");
    expect_error("{\"url\": \"redis://h?x=1\"}", "redis.url: query strings are not supported");
    expect_error("{\"url\": \"unix://rel\"}", "redis.url: unix:// needs an absolute");
    expect_error("{\"url\": \"unix:///s?x=1\"}", "redis.url: the only query allowed is ?db=N");
    expect_error("{\"url\": 5}", "redis.url: must be a string");
    expect_error("{}", "redis.url: required");
    expect_error("[]", "redis: must be null or an object");
    expect_error("{\"url\": \"redis://h\", \"timeout_ms\": 0}",
                 "redis.timeout_ms: must be an integer in 1..60000");
    expect_error("{\"url\": \"redis://h\", \"timeout_ms\": \"50\"}",
                 "redis.timeout_ms: must be an integer in 1..60000");
    expect_error("{\"url\": \"redis://h\", \"pool\": 1000}",
                 "redis.pool: must be an integer in 1..256");
    expect_error("{\"url\": \"redis://h\", \"max_value_bytes\": 0}", "redis.max_value_bytes:");
    expect_error("{\"url\": \"redis://h\", \"key_prefix\": \"{x}\"}", "redis.key_prefix:");
    expect_error("{\"url\": \"redis://h\", \"key_prefix\": \"a b\"}", "redis.key_prefix:");
    expect_error("{\"url\": \"redis://h\", \"timout_ms\": 5}", "redis.timout_ms: unknown key");
    expect_error("{\"url\": \"redis://h\", \"password\": \"x\"}",
                 "redis.password: literal secrets are not allowed");
    expect_error("{\"url\": \"redis://h\", \"password_env\": \"SY_TEST_UNSET_VARIABLE\"}",
                 "redis.password_env: environment variable SY_TEST_UNSET_VARIABLE is not set");
    expect_error("{\"url\": \"redis://h\", \"password_env\": \"1bad-name\"}",
                 "redis.password_env: must be an environment variable name");

    /* every problem is listed, not just the first */
    assert_int_equal(parse("{\"url\": \"rediss://x\", \"pool\": 0, \"nope\": 1}", &o, &errs),
                     SY_ECONFIG);
    assert_int_equal(errs.n, 3);
    /* no message echoes a secret */
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    assert_int_equal(parse("{\"url\": \"redis://user:hunter2@h\"}", &o, &errs), SY_ECONFIG);
    for (size_t i = 0; i < errs.n; i++)
        assert_null(strstr(errs.items[i], "hunter2"));
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
}

static void test_config_parse_mem(void **state)
{
    sy_store_opts o;
    sy_errlist errs;
    json_t *j;

    (void)state;
    sy_store_opts_init(&o);
    sy_errlist_init(&errs);
    assert_int_equal(sy_store_config_parse_mem(NULL, &o, &errs), SY_OK);
    j = json_loads("{\"max_bytes\": 1048576, \"max_value_bytes\": 1000}", 0, NULL);
    assert_int_equal(sy_store_config_parse_mem(j, &o, &errs), SY_OK);
    json_decref(j);
    assert_int_equal(o.mem.max_bytes, 1048576);
    assert_int_equal(o.mem.max_value_bytes, 1000);
    j = json_loads("{\"max_bytes\": 10, \"extra\": true}", 0, NULL);
    assert_int_equal(sy_store_config_parse_mem(j, &o, &errs), SY_ECONFIG);
    json_decref(j);
    assert_int_equal(errs.n, 2);
    assert_non_null(strstr(errs.items[0], "mem_store.max_bytes: must be an integer in 65536.."));
    assert_non_null(strstr(errs.items[1], "mem_store.extra: unknown key"));
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);

    /* the value cap reaches the store */
    sy_store *s = NULL;
    sy_store_opts_init(&o);
    o.mem.max_value_bytes = 4;
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    assert_int_equal(sy_store_set(s, "k", "12345", 5, 0, 0, NULL), SY_ETOOBIG);
    assert_int_equal(sy_store_set(s, "k", "1234", 4, 0, 0, NULL), SY_OK);
    sy_store_free(s);
    sy_store_free(NULL);
    sy_store_opts_cleanup(&o);
}

static void test_config_alloc_failures(void **state)
{
    sy_store_opts o;
    sy_errlist errs;
    json_t *j = json_loads("{\"url\": \"redis://app@host:1/2\", \"key_prefix\": \"p:\", "
                           "\"password_env\": \"SY_TEST_REDIS_PW\"}",
                           0, NULL);
    long n;
    sy_err rc = SY_ENOMEM;

    (void)state;
    setenv("SY_TEST_REDIS_PW", "pw", 1);
    for (n = 0; n < 100 && rc == SY_ENOMEM; n++) {
        sy_store_opts_init(&o);
        sy_errlist_init(&errs);
        fail_after(n);
        rc = sy_store_config_parse(j, &o, &errs);
        alloc_normal();
        if (rc == SY_ENOMEM)
            assert_true(errs.n >= 1);
        if (rc == SY_OK) {
            assert_string_equal(o.redis.host, "host");
            assert_string_equal(o.redis.user, "app");
            assert_string_equal(o.redis.key_prefix, "p:");
        }
        sy_store_opts_cleanup(&o);
        sy_errlist_cleanup(&errs);
    }
    assert_int_equal(rc, SY_OK);
    assert_true(n > 4);
    json_decref(j);
}

static void test_config_doc(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    (void)state;
    assert_non_null(f);
    assert_int_equal(sy_store_config_doc(f), SY_OK);
    fclose(f);
    assert_non_null(strstr(text, "| `redis.timeout_ms` | integer | `50` | 1..60000 |"));
    assert_non_null(strstr(text, "| `redis.url` | string | **required** |"));
    assert_non_null(strstr(text, "| `redis.key_prefix` | string | `\"sy:\"` |"));
    assert_non_null(strstr(text, "| `mem_store.max_bytes` | integer | `67108864` |"));
    free(text);
}

static void test_sid(void **state)
{
    (void)state;
    sy_store *s = make_mem();
    sy_stream_entries e;
    char next[SY_STREAM_ID_MAX];

    sy_stream_entries_init(&e);
    /* ids are validated before reaching a backend */
    assert_int_equal(sy_store_xgroup_create(s, "q", "g", "18446744073709551615-1", NULL), SY_OK);
    assert_int_equal(sy_store_xgroup_create(s, "q", "h", "18446744073709551616", NULL), SY_EINVAL);
    assert_int_equal(sy_store_xgroup_create(s, "q", "h", "-1", NULL), SY_EINVAL);
    assert_int_equal(sy_store_xgroup_create(s, "q", "h", "1-", NULL), SY_EINVAL);
    assert_int_equal(sy_store_xgroup_create(s, "q", "h", "", NULL), SY_EINVAL);
    assert_int_equal(sy_store_xautoclaim(s, "q", "g", "c", 0, "5", 1, &e, next), SY_OK);
    assert_int_equal(e.n, 0);
    assert_null(e.items);
    sy_stream_entries_cleanup(&e);
    sy_store_free(s);
}

static void test_mem_latency(void **state)
{
    suite_bench(*state, "embedded");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        STORE_SUITE_TESTS,
        SUITE_TEST(test_mem_kind_and_stats),
        cmocka_unit_test(test_mem_lru_eviction),
        SUITE_TEST(test_mem_expiry_sweep),
        SUITE_TEST(test_mem_batch_rollback),
        SUITE_TEST(test_mem_stream_compaction),
        SUITE_TEST(test_mem_alloc_failures_stateful),
        cmocka_unit_test(test_config_parse),
        cmocka_unit_test(test_config_parse_mem),
        cmocka_unit_test(test_config_alloc_failures),
        cmocka_unit_test(test_config_doc),
        cmocka_unit_test(test_sid),
        SUITE_TEST(test_mem_latency),
    };

    g_env.make = make_mem;
    g_env.pass = mem_pass;
    g_env.reset = mem_reset;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
