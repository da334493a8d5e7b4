/* The behavioural suite every store backend must pass, shared by test_store_mem.c and
 * test_store_redis.c (each test file is its own executable, so this header holds static code).
 * The including file sets suite_env: how to make a fresh store, how to let time pass (the mem
 * test advances an injected clock; the Redis test lets real time pass, Redis having no clock to
 * inject) and how to wipe the data between tests. */
#ifndef SY_TEST_STORE_SUITE_H
#define SY_TEST_STORE_SUITE_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "switchyard/store.h"

typedef struct suite_env {
    sy_store *(*make)(void);  /* a new store, asserting on failure */
    void (*pass)(int64_t ms); /* let <ms> of store time pass */
    void (*reset)(void);      /* wipe all data */
} suite_env;

static suite_env g_env;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int suite_setup(void **state)
{
    g_env.reset();
    *state = g_env.make();
    return *state ? 0 : -1;
}

static int suite_teardown(void **state)
{
    sy_store_free(*state);
    return 0;
}

/* ---- allocation failure injection ----------------------------------------------------------- */

static atomic_long alloc_left = -1; /* allocations that still succeed; -1 = unlimited */

static void *failing_malloc(size_t n)
{
    long left = atomic_load(&alloc_left);
    while (left > 0 && !atomic_compare_exchange_weak(&alloc_left, &left, left - 1))
        ;
    if (left == 0)
        return NULL;
    return malloc(n);
}

static void *failing_realloc(void *p, size_t n)
{
    long left = atomic_load(&alloc_left);
    while (left > 0 && !atomic_compare_exchange_weak(&alloc_left, &left, left - 1))
        ;
    if (left == 0)
        return NULL;
    return realloc(p, n);
}

static void fail_after(long n)
{
    atomic_store(&alloc_left, n);
    sy_store_set_allocator(failing_malloc, failing_realloc, free);
}

static void alloc_normal(void)
{
    atomic_store(&alloc_left, -1);
    sy_store_set_allocator(NULL, NULL, NULL);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static sy_err get_str(sy_store *s, const char *key, char *out, size_t cap)
{
    sy_buf b;
    sy_err rc;

    sy_buf_init(&b, cap - 1);
    rc = sy_store_get(s, key, &b);
    if (rc == SY_OK) {
        memcpy(out, b.data ? b.data : "", b.len);
        out[b.len] = '\0';
    }
    sy_buf_cleanup(&b);
    return rc;
}

static int64_t hash_field_value(const sy_store_kvs *k, const char *name)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->items[i].name, name) == 0)
            return strtoll(k->items[i].value, NULL, 10);
    return INT64_MIN;
}

static const char *entry_field(const sy_stream_entry *e, const char *name)
{
    for (size_t i = 0; i < e->fields.n; i++)
        if (strcmp(e->fields.items[i].name, name) == 0)
            return e->fields.items[i].value;
    return NULL;
}

static void add_entries(sy_store *s, const char *stream, int n, char ids[][SY_STREAM_ID_MAX])
{
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        sy_store_field f[2] = {{"n", v, strlen(v)}, {"payload", "x\0y", 3}};
        assert_int_equal(sy_store_xadd(s, stream, f, 2, ids ? ids[i] : NULL), SY_OK);
    }
}

/* ---- strings -------------------------------------------------------------------------------- */

static void test_strings(void **state)
{
    sy_store *s = *state;
    char v[64];
    bool b = false;
    sy_buf buf;

    assert_int_equal(get_str(s, "{t}:a", v, sizeof(v)), SY_ENOTFOUND);
    assert_int_equal(sy_store_set(s, "{t}:a", "hello", 5, 0, 0, &b), SY_OK);
    assert_true(b);
    assert_int_equal(get_str(s, "{t}:a", v, sizeof(v)), SY_OK);
    assert_string_equal(v, "hello");
    assert_int_equal(sy_store_set(s, "{t}:a", "bye", 3, 0, 0, NULL), SY_OK);
    assert_int_equal(get_str(s, "{t}:a", v, sizeof(v)), SY_OK);
    assert_string_equal(v, "bye");

    /* binary-safe */
    sy_buf_init(&buf, 100);
    assert_int_equal(sy_store_set(s, "{t}:bin", "a\0b\xff", 4, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_get(s, "{t}:bin", &buf), SY_OK);
    assert_int_equal(buf.len, 4);
    assert_memory_equal(buf.data, "a\0b\xff", 4);
    sy_buf_cleanup(&buf);

    /* empty value */
    sy_buf_init(&buf, 100);
    assert_int_equal(sy_store_set(s, "{t}:empty", NULL, 0, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_get(s, "{t}:empty", &buf), SY_OK);
    assert_int_equal(buf.len, 0);
    sy_buf_cleanup(&buf);

    /* NX / XX */
    assert_int_equal(sy_store_set(s, "{t}:a", "nx", 2, 0, SY_STORE_NX, &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_set(s, "{t}:new", "nx", 2, 0, SY_STORE_NX, &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_set(s, "{t}:none", "xx", 2, 0, SY_STORE_XX, &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_exists(s, "{t}:none", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_set(s, "{t}:a", "xx", 2, 0, SY_STORE_XX, &b), SY_OK);
    assert_true(b);
    assert_int_equal(get_str(s, "{t}:a", v, sizeof(v)), SY_OK);
    assert_string_equal(v, "xx");

    /* del / exists */
    assert_int_equal(sy_store_exists(s, "{t}:a", &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_del(s, "{t}:a", &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_del(s, "{t}:a", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_exists(s, "{t}:a", &b), SY_OK);
    assert_false(b);

    /* the caller's cap: too big and nothing appended */
    sy_buf_init(&buf, 3);
    assert_int_equal(sy_store_get(s, "{t}:bin", &buf), SY_ETOOBIG);
    assert_int_equal(buf.len, 0);
    sy_buf_cleanup(&buf);
}

static void test_limits_and_arguments(void **state)
{
    sy_store *s = *state;
    char big[SY_STORE_KEY_MAX + 2];
    bool b;
    sy_buf buf;
    size_t maxv = 1 << 20; /* both test stores use the 1 MiB default */
    char *val = calloc(1, maxv + 1);

    assert_non_null(val);
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(sy_store_set(s, big, "v", 1, 0, 0, NULL), SY_ETOOBIG);
    big[SY_STORE_KEY_MAX] = '\0'; /* exactly the cap is fine */
    assert_int_equal(sy_store_set(s, big, "v", 1, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_set(s, "", "v", 1, 0, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_set(s, NULL, "v", 1, 0, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_set(s, "{t}:k", NULL, 1, 0, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_set(s, "{t}:k", "v", 1, -1, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_set(s, "{t}:k", "v", 1, 0, 3, NULL), SY_EINVAL);
    assert_int_equal(sy_store_set(s, "{t}:k", val, maxv + 1, 0, 0, NULL), SY_ETOOBIG);
    assert_int_equal(sy_store_exists(s, "{t}:k", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_set(s, "{t}:k", val, maxv, 0, 0, NULL), SY_OK);
    sy_buf_init(&buf, maxv);
    assert_int_equal(sy_store_get(s, "{t}:k", &buf), SY_OK);
    assert_int_equal(buf.len, maxv);
    sy_buf_cleanup(&buf);
    free(val);
    assert_int_equal(sy_store_expire(s, "{t}:k", 0, NULL), SY_EINVAL);

    /* scripts */
    sy_store_gcra_req g = {.rate = 0, .period_ms = 1000, .burst = 1, .cost = 1};
    sy_store_gcra_res gr;
    assert_int_equal(sy_store_gcra(s, "{t}:g", &g, &gr), SY_EINVAL);
    g.rate = 10;
    g.cost = 2;
    g.burst = 1;
    assert_int_equal(sy_store_gcra(s, "{t}:g", &g, &gr), SY_EINVAL); /* cost > burst */
    g.rate = 2000000; /* more than one per microsecond */
    g.cost = 1;
    assert_int_equal(sy_store_gcra(s, "{t}:g", &g, &gr), SY_EINVAL);

    /* streams */
    sy_stream_entries e;
    char next[SY_STREAM_ID_MAX];
    const char *bad[1] = {"12-x"};
    sy_stream_entries_init(&e);
    assert_int_equal(sy_store_xadd(s, "{t}:q", NULL, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_xgroup_create(s, "{t}:q", "g", "nope", NULL), SY_EINVAL);
    assert_int_equal(sy_store_xreadgroup(s, "{t}:q", "g", "c", ">", 0, 0, &e), SY_EINVAL);
    assert_int_equal(sy_store_xreadgroup(s, "{t}:q", "g", "c", ">", 1, -1, &e), SY_EINVAL);
    assert_int_equal(sy_store_xreadgroup(s, "{t}:q", "g", "c", "<", 1, 0, &e), SY_EINVAL);
    assert_int_equal(
        sy_store_xreadgroup(s, "{t}:q", "g", "c", ">", 1, SY_STORE_BLOCK_MAX_MS + 1, &e),
        SY_EINVAL);
    assert_int_equal(sy_store_xack(s, "{t}:q", "g", bad, 1, false, NULL), SY_EINVAL);
    assert_int_equal(sy_store_xautoclaim(s, "{t}:q", "g", "c", -1, "0-0", 1, &e, next), SY_EINVAL);
    assert_int_equal(sy_store_xreadgroup(s, "{t}:q", "", "c", ">", 1, 0, &e), SY_EINVAL);

    sy_store_incr op = {"{t}:h", "f", 1, -1, 0};
    assert_int_equal(sy_store_hincrby_many(s, &op, 1, NULL, 0, NULL), SY_EINVAL);
    op.ttl_ms = 0;
    assert_int_equal(sy_store_hincrby_many(s, &op, 0, NULL, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hincrby_many(s, &op, 1, "{t}:once", 0, NULL), SY_EINVAL);
}

static void test_ttl(void **state)
{
    sy_store *s = *state;
    int64_t ttl = 0;
    bool b;

    assert_int_equal(sy_store_ttl(s, "{t}:x", &ttl), SY_ENOTFOUND);
    assert_int_equal(sy_store_set(s, "{t}:x", "v", 1, 300, 0, NULL), SY_OK);
    assert_int_equal(sy_store_ttl(s, "{t}:x", &ttl), SY_OK);
    assert_true(ttl > 0 && ttl <= 300);
    assert_int_equal(sy_store_set(s, "{t}:keep", "v", 1, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_ttl(s, "{t}:keep", &ttl), SY_OK);
    assert_int_equal(ttl, -1);

    /* a set without TTL clears the old one */
    assert_int_equal(sy_store_set(s, "{t}:y", "v", 1, 300, 0, NULL), SY_OK);
    assert_int_equal(sy_store_set(s, "{t}:y", "w", 1, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_ttl(s, "{t}:y", &ttl), SY_OK);
    assert_int_equal(ttl, -1);

    /* expire on an existing and a missing key */
    assert_int_equal(sy_store_expire(s, "{t}:keep", 300, &b), SY_OK);
    assert_true(b);
    assert_int_equal(sy_store_expire(s, "{t}:missing", 300, &b), SY_OK);
    assert_false(b);

    g_env.pass(400);
    assert_int_equal(sy_store_exists(s, "{t}:x", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_exists(s, "{t}:keep", &b), SY_OK);
    assert_false(b);
    assert_int_equal(sy_store_exists(s, "{t}:y", &b), SY_OK);
    assert_true(b);
    char v[8];
    assert_int_equal(get_str(s, "{t}:x", v, sizeof(v)), SY_ENOTFOUND);
}

static void test_wrong_type(void **state)
{
    sy_store *s = *state;
    sy_buf b;
    int64_t r;
    sy_store_kvs kv;
    sy_store_field f = {"a", "b", 1};
    int64_t len;

    sy_buf_init(&b, 100);
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "f", 1, &r), SY_OK);
    assert_int_equal(sy_store_set(s, "{t}:s", "text", 4, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_get(s, "{t}:h", &b), SY_EINVAL);
    assert_int_equal(sy_store_hincrby(s, "{t}:s", "f", 1, &r), SY_EINVAL);
    assert_int_equal(sy_store_hgetall(s, "{t}:s", &kv), SY_EINVAL);
    assert_int_equal(sy_store_xadd(s, "{t}:s", &f, 1, NULL), SY_EINVAL);
    assert_int_equal(sy_store_xlen(s, "{t}:h", &len), SY_EINVAL);
    /* set overwrites any type */
    assert_int_equal(sy_store_set(s, "{t}:h", "now a string", 12, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_get(s, "{t}:h", &b), SY_OK);
    sy_buf_cleanup(&b);
}

/* ---- hashes --------------------------------------------------------------------------------- */

static void test_hincrby(void **state)
{
    sy_store *s = *state;
    int64_t r = 0;
    sy_store_kvs kv;

    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(s, "{t}:h", &kv), SY_OK);
    assert_int_equal(kv.n, 0);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "a", 5, &r), SY_OK);
    assert_int_equal(r, 5);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "a", -7, &r), SY_OK);
    assert_int_equal(r, -2);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "b", INT64_MAX, &r), SY_OK);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "b", 1, &r), SY_EINVAL);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "c", INT64_MIN, &r), SY_OK);
    assert_int_equal(sy_store_hincrby(s, "{t}:h", "c", -1, &r), SY_EINVAL);
    assert_int_equal(sy_store_hgetall(s, "{t}:h", &kv), SY_OK);
    assert_int_equal(kv.n, 3);
    assert_int_equal(hash_field_value(&kv, "a"), -2);
    assert_int_equal(hash_field_value(&kv, "b"), INT64_MAX);
    assert_int_equal(hash_field_value(&kv, "c"), INT64_MIN);
    /* replaced, not appended */
    assert_int_equal(sy_store_hgetall(s, "{t}:h", &kv), SY_OK);
    assert_int_equal(kv.n, 3);
    sy_store_kvs_cleanup(&kv);
}

static const sy_store_kv *kv_find(const sy_store_kvs *k, const char *name)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->items[i].name, name) == 0)
            return &k->items[i];
    return NULL;
}

static void test_hset_hdel(void **state)
{
    sy_store *s = *state;
    sy_store_kvs kv;
    bool stored = false, existed = true;
    int64_t r = 0, ttl = 0;
    const char bin[5] = {'a', '\0', 'b', '\n', (char)0xff};
    sy_store_stats st0, st1;

    sy_store_kvs_init(&kv);
    sy_store_stats_get(s, &st0);
    /* a new field, an overwrite, NX on a present and an absent field */
    assert_int_equal(sy_store_hset(s, "{t}:idx", "file-a", "100", 3, 0, &stored), SY_OK);
    assert_true(stored);
    assert_int_equal(sy_store_hset(s, "{t}:idx", "file-a", "200", 3, 0, &stored), SY_OK);
    assert_true(stored);
    assert_int_equal(sy_store_hset(s, "{t}:idx", "file-a", "300", 3, SY_STORE_NX, &stored),
                     SY_OK);
    assert_false(stored);
    assert_int_equal(sy_store_hset(s, "{t}:idx", "file-b", bin, sizeof(bin), SY_STORE_NX,
                                   &stored),
                     SY_OK);
    assert_true(stored);
    assert_int_equal(sy_store_hset(s, "{t}:idx", "empty", "", 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_hgetall(s, "{t}:idx", &kv), SY_OK);
    assert_int_equal(kv.n, 3);
    const sy_store_kv *a = kv_find(&kv, "file-a"), *b = kv_find(&kv, "file-b");
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a->value, "200");
    assert_int_equal(b->value_len, sizeof(bin));
    assert_memory_equal(b->value, bin, sizeof(bin));
    assert_int_equal(kv_find(&kv, "empty")->value_len, 0);

    /* counters and strings share a hash; a decimal string counts on, others do not */
    assert_int_equal(sy_store_hincrby(s, "{t}:idx", "file-a", 5, &r), SY_OK);
    assert_int_equal(r, 205);
    assert_int_equal(sy_store_hincrby(s, "{t}:idx", "file-b", 1, &r), SY_EINVAL);
    assert_int_equal(sy_store_hincrby(s, "{t}:idx", "n", 7, &r), SY_OK);
    assert_int_equal(sy_store_hset(s, "{t}:idx", "n", "x", 1, 0, NULL), SY_OK);
    assert_int_equal(sy_store_hgetall(s, "{t}:idx", &kv), SY_OK);
    assert_int_equal(kv.n, 4);
    assert_string_equal(kv_find(&kv, "file-a")->value, "205");
    assert_string_equal(kv_find(&kv, "n")->value, "x");
    assert_memory_equal(kv_find(&kv, "file-b")->value, bin, sizeof(bin));

    /* hdel: present, absent field, absent key; the last field takes the hash with it */
    assert_int_equal(sy_store_hdel(s, "{t}:idx", "file-a", &existed), SY_OK);
    assert_true(existed);
    assert_int_equal(sy_store_hdel(s, "{t}:idx", "file-a", &existed), SY_OK);
    assert_false(existed);
    existed = true;
    assert_int_equal(sy_store_hdel(s, "{t}:nokey", "f", &existed), SY_OK);
    assert_false(existed);
    assert_int_equal(sy_store_hdel(s, "{t}:idx", "file-b", NULL), SY_OK);
    assert_int_equal(sy_store_hdel(s, "{t}:idx", "n", NULL), SY_OK);
    assert_int_equal(sy_store_hdel(s, "{t}:idx", "empty", NULL), SY_OK);
    assert_int_equal(sy_store_exists(s, "{t}:idx", &existed), SY_OK);
    assert_false(existed);
    assert_int_equal(sy_store_hgetall(s, "{t}:idx", &kv), SY_OK);
    assert_int_equal(kv.n, 0);
    sy_store_stats_get(s, &st1);
    assert_int_equal(st1.bytes, st0.bytes); /* embedded: every byte charged was refunded */

    /* a TTL on the hash survives hset; the hash expires with its fields */
    assert_int_equal(sy_store_hset(s, "{t}:tt", "f", "v", 1, 0, NULL), SY_OK);
    assert_int_equal(sy_store_expire(s, "{t}:tt", 300, NULL), SY_OK);
    assert_int_equal(sy_store_hset(s, "{t}:tt", "g", "w", 1, 0, NULL), SY_OK);
    assert_int_equal(sy_store_ttl(s, "{t}:tt", &ttl), SY_OK);
    assert_true(ttl > 0 && ttl <= 300);
    g_env.pass(400);
    assert_int_equal(sy_store_hgetall(s, "{t}:tt", &kv), SY_OK);
    assert_int_equal(kv.n, 0);

    /* wrong type, bad arguments, caps */
    assert_int_equal(sy_store_set(s, "{t}:str", "v", 1, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_store_hset(s, "{t}:str", "f", "v", 1, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hdel(s, "{t}:str", "f", NULL), SY_EINVAL);
    assert_int_equal(sy_store_hset(s, "{t}:h", "", "v", 1, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hset(s, "", "f", "v", 1, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hset(s, "{t}:h", "f", NULL, 1, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hset(s, "{t}:h", "f", "v", 1, SY_STORE_XX, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hdel(s, "{t}:h", "", NULL), SY_EINVAL);
    char big_field[SY_STORE_FIELD_MAX + 2];
    memset(big_field, 'f', sizeof(big_field) - 1);
    big_field[sizeof(big_field) - 1] = '\0';
    assert_int_equal(sy_store_hset(s, "{t}:h", big_field, "v", 1, 0, NULL), SY_ETOOBIG);
    sy_store_kvs_cleanup(&kv);
}

static void test_hincrby_many(void **state)
{
    sy_store *s = *state;
    enum { N = 1000 };
    sy_store_incr *ops = calloc(N, sizeof(*ops));
    char(*fields)[16] = calloc(N, 16);
    sy_store_kvs kv;
    bool applied = false;
    int64_t ttl;

    assert_non_null(ops);
    assert_non_null(fields);
    for (int i = 0; i < N; i++) {
        snprintf(fields[i], 16, "f%d", i % 100); /* each field 10 times in one batch */
        ops[i] = (sy_store_incr){i % 2 ? "{s:d1}:odd" : "{s:d1}:even", fields[i], i, 0, 0};
    }
    ops[0].ttl_ms = 100000;
    assert_int_equal(sy_store_hincrby_many(s, ops, N, NULL, 0, &applied), SY_OK);
    assert_true(applied);
    /* the last op on even/f98 is i = 998: sum of i in {98, 198, ..., 998} */
    assert_int_equal(ops[998].result, 98 + 198 + 298 + 398 + 498 + 598 + 698 + 798 + 898 + 998);
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(s, "{s:d1}:odd", &kv), SY_OK);
    assert_int_equal(kv.n, 50);
    assert_int_equal(hash_field_value(&kv, "f1"),
                     1 + 101 + 201 + 301 + 401 + 501 + 601 + 701 + 801 + 901);
    assert_int_equal(sy_store_ttl(s, "{s:d1}:even", &ttl), SY_OK);
    assert_true(ttl > 0);
    assert_int_equal(sy_store_ttl(s, "{s:d1}:odd", &ttl), SY_OK);
    assert_int_equal(ttl, -1);

    /* exactly once with a once-key */
    sy_store_incr two[2] = {{"{s:d1}:even", "f0", 1, 0, 0}, {"{s:d1}:odd", "f1", 1, 0, 0}};
    assert_int_equal(sy_store_hincrby_many(s, two, 2, "{s:d1}:once:1", 60000, &applied), SY_OK);
    assert_true(applied);
    assert_int_equal(two[0].result, 0 + 100 + 200 + 300 + 400 + 500 + 600 + 700 + 800 + 900 + 1);
    two[0].result = -5;
    assert_int_equal(sy_store_hincrby_many(s, two, 2, "{s:d1}:once:1", 60000, &applied), SY_OK);
    assert_false(applied);
    assert_int_equal(two[0].result, -5); /* untouched */
    assert_int_equal(sy_store_ttl(s, "{s:d1}:once:1", &ttl), SY_OK);
    assert_true(ttl > 0 && ttl <= 60000);
    assert_int_equal(sy_store_hgetall(s, "{s:d1}:odd", &kv), SY_OK);
    assert_int_equal(hash_field_value(&kv, "f1"),
                     1 + 101 + 201 + 301 + 401 + 501 + 601 + 701 + 801 + 901 + 1);

    /* a batch with a bad op fails as a whole call */
    assert_int_equal(sy_store_set(s, "{s:d1}:str", "x", 1, 0, 0, NULL), SY_OK);
    sy_store_incr bad[2] = {{"{s:d1}:even", "f0", 1, 0, 0}, {"{s:d1}:str", "f", 1, 0, 0}};
    assert_int_equal(sy_store_hincrby_many(s, bad, 2, NULL, 0, NULL), SY_EINVAL);
    assert_int_equal(sy_store_hincrby_many(s, bad, 2, "{s:d1}:once:2", 1000, NULL), SY_EINVAL);
    sy_store_kvs_cleanup(&kv);
    free(ops);
    free(fields);
}

/* ---- scripts -------------------------------------------------------------------------------- */

static void test_gcra(void **state)
{
    sy_store *s = *state;
    /* 10 per second, bursts of 5: one unit every 100 ms */
    sy_store_gcra_req q = {.rate = 10, .period_ms = 1000, .burst = 5, .cost = 1};
    sy_store_gcra_res r;
    int64_t ttl;

    for (int i = 0; i < 5; i++) {
        assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 4 - i);
        assert_int_equal(r.retry_after_ms, 0);
    }
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_true(r.retry_after_ms >= 1 && r.retry_after_ms <= 100);
    assert_true(r.reset_ms > 400 && r.reset_ms <= 500);
    assert_int_equal(sy_store_ttl(s, "{l:k1}:rpm", &ttl), SY_OK);
    assert_true(ttl > 400 && ttl <= 500);

    /* a peek changes nothing */
    q.cost = 0;
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);

    /* 250 ms replenish two units */
    g_env.pass(250);
    q.cost = 1;
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_true(r.allowed);
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_true(r.allowed);

    /* give back (settling an over-estimate), then force past the limit */
    q.cost = -3;
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_true(r.allowed);
    assert_true(r.remaining >= 3);
    q.cost = 20;
    q.force = true;
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    q.cost = 1;
    q.force = false;
    assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_false(r.allowed);
    assert_true(r.retry_after_ms > 1000);

    /* a huge give-back empties the bucket and deletes the key */
    q.cost = -5;
    q.force = true;
    for (int i = 0; i < 10; i++)
        assert_int_equal(sy_store_gcra(s, "{l:k1}:rpm", &q, &r), SY_OK);
    assert_int_equal(r.remaining, 5);
    bool b;
    assert_int_equal(sy_store_exists(s, "{l:k1}:rpm", &b), SY_OK);
    assert_false(b);

    /* tokens per minute: large costs */
    sy_store_gcra_req t = {.rate = 100000, .period_ms = 60000, .burst = 100000, .cost = 90000};
    assert_int_equal(sy_store_gcra(s, "{l:k1}:tpm", &t, &r), SY_OK);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 10000);
    assert_int_equal(sy_store_gcra(s, "{l:k1}:tpm", &t, &r), SY_OK);
    assert_false(r.allowed);
    assert_true(r.retry_after_ms > 40000 && r.retry_after_ms <= 48000);

    /* a key of another type */
    assert_int_equal(sy_store_hincrby(s, "{l:k1}:h", "f", 1, NULL), SY_OK);
    assert_int_equal(sy_store_gcra(s, "{l:k1}:h", &q, &r), SY_EINVAL);
}

static void test_cas(void **state)
{
    sy_store *s = *state;
    sy_store_cas_req q = {.expect_mode = SY_CAS_ABSENT, .value = "open", .value_len = 4};
    bool sw = false;
    sy_buf cur;
    char v[32];
    int64_t ttl;

    sy_buf_init(&cur, 64);
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, &cur), SY_OK);
    assert_true(sw);
    assert_int_equal(cur.len, 0);
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, &cur), SY_OK);
    assert_false(sw);
    assert_int_equal(cur.len, 4);
    assert_memory_equal(cur.data, "open", 4);
    sy_buf_reset(&cur);

    /* equal: binary values with NULs */
    q = (sy_store_cas_req){.expect_mode = SY_CAS_EQUAL,
                           .expect = "open",
                           .expect_len = 4,
                           .value = "half\0open",
                           .value_len = 9,
                           .ttl_ms = 5000};
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, NULL), SY_OK);
    assert_true(sw);
    assert_int_equal(sy_store_ttl(s, "{cb:d1}:state", &ttl), SY_OK);
    assert_true(ttl > 0 && ttl <= 5000);
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, &cur), SY_OK);
    assert_false(sw);
    assert_int_equal(cur.len, 9);
    assert_memory_equal(cur.data, "half\0open", 9);
    sy_buf_reset(&cur);
    q.expect = "half";
    q.expect_len = 4; /* a prefix is not equal */
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, NULL), SY_OK);
    assert_false(sw);

    /* equal + delete */
    q = (sy_store_cas_req){
        .expect_mode = SY_CAS_EQUAL, .expect = "half\0open", .expect_len = 9, .del = true};
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, NULL), SY_OK);
    assert_true(sw);
    assert_int_equal(get_str(s, "{cb:d1}:state", v, sizeof(v)), SY_ENOTFOUND);
    /* equal on a missing key fails */
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, &cur), SY_OK);
    assert_false(sw);
    assert_int_equal(cur.len, 0);

    /* any: unconditional, without TTL */
    q = (sy_store_cas_req){.expect_mode = SY_CAS_ANY, .value = "closed", .value_len = 6};
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, NULL), SY_OK);
    assert_true(sw);
    assert_int_equal(get_str(s, "{cb:d1}:state", v, sizeof(v)), SY_OK);
    assert_string_equal(v, "closed");
    assert_int_equal(sy_store_ttl(s, "{cb:d1}:state", &ttl), SY_OK);
    assert_int_equal(ttl, -1);

    /* the current value larger than the caller's cap */
    sy_buf small;
    sy_buf_init(&small, 2);
    q = (sy_store_cas_req){.expect_mode = SY_CAS_ABSENT, .value = "x", .value_len = 1};
    assert_int_equal(sy_store_cas(s, "{cb:d1}:state", &q, &sw, &small), SY_ETOOBIG);
    sy_buf_cleanup(&small);

    assert_int_equal(sy_store_hincrby(s, "{cb:d1}:h", "f", 1, NULL), SY_OK);
    assert_int_equal(sy_store_cas(s, "{cb:d1}:h", &q, &sw, NULL), SY_EINVAL);
    sy_buf_cleanup(&cur);
}

/* ---- streams -------------------------------------------------------------------------------- */

static void test_stream_basics(void **state)
{
    sy_store *s = *state;
    char ids[5][SY_STREAM_ID_MAX];
    sy_stream_entries e;
    sy_stream_pending p;
    bool created = false;
    int64_t len = -1;

    sy_stream_entries_init(&e);
    assert_int_equal(sy_store_xlen(s, "{b}:q", &len), SY_OK);
    assert_int_equal(len, 0);
    /* no group yet */
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c1", ">", 10, 0, &e), SY_ENOTFOUND);
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "g", "$", &created), SY_OK);
    assert_true(created);
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "g", "$", &created), SY_OK);
    assert_false(created);
    assert_int_equal(sy_store_xlen(s, "{b}:q", &len), SY_OK);
    assert_int_equal(len, 0); /* MKSTREAM: exists, empty */
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "nog", "c1", ">", 10, 0, &e), SY_ENOTFOUND);
    assert_int_equal(sy_store_xpending(s, "{b}:q", "nog", &p), SY_ENOTFOUND);

    add_entries(s, "{b}:q", 5, ids);
    for (int i = 1; i < 5; i++)
        assert_true(strcmp(ids[i - 1], ids[i]) != 0);
    assert_int_equal(sy_store_xlen(s, "{b}:q", &len), SY_OK);
    assert_int_equal(len, 5);

    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c1", ">", 3, 0, &e), SY_OK);
    assert_int_equal(e.n, 3);
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        assert_string_equal(e.items[i].id, ids[i]);
        assert_false(e.items[i].deleted);
        assert_int_equal(e.items[i].fields.n, 2);
        assert_string_equal(entry_field(&e.items[i], "n"), want);
        assert_int_equal(e.items[i].fields.items[1].value_len, 3);
        assert_memory_equal(entry_field(&e.items[i], "payload"), "x\0y", 3);
    }
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c2", ">", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 2);
    assert_string_equal(e.items[0].id, ids[3]);
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c1", ">", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 0);

    assert_int_equal(sy_store_xpending(s, "{b}:q", "g", &p), SY_OK);
    assert_int_equal(p.count, 5);
    assert_string_equal(p.min_id, ids[0]);
    assert_string_equal(p.max_id, ids[4]);
    assert_int_equal(p.consumers, 2);

    /* a consumer re-reads its own pending entries: delivery count goes up */
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c1", "0", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 3);
    assert_string_equal(e.items[0].id, ids[0]);
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c1", ids[0], 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 2);
    assert_string_equal(e.items[0].id, ids[1]);
    sy_stream_pel_item items[10];
    size_t n = 0;
    assert_int_equal(sy_store_xpending_list(s, "{b}:q", "g", "-", NULL, 10, items, &n), SY_OK);
    assert_int_equal(n, 5);
    assert_string_equal(items[0].id, ids[0]);
    assert_string_equal(items[0].consumer, "c1");
    assert_int_equal(items[0].deliveries, 2);
    assert_int_equal(items[1].deliveries, 3);
    assert_int_equal(items[3].deliveries, 1);
    assert_string_equal(items[3].consumer, "c2");
    assert_int_equal(sy_store_xpending_list(s, "{b}:q", "g", ids[1], "c2", 10, items, &n), SY_OK);
    assert_int_equal(n, 2);
    assert_string_equal(items[0].id, ids[3]);
    assert_int_equal(sy_store_xpending_list(s, "{b}:q", "g", "-", NULL, 2, items, &n), SY_OK);
    assert_int_equal(n, 2);

    /* ack: twice is harmless; ack + delete shrinks the stream */
    const char *ack[2] = {ids[0], ids[1]};
    size_t acked = 0;
    assert_int_equal(sy_store_xack(s, "{b}:q", "g", ack, 2, false, &acked), SY_OK);
    assert_int_equal(acked, 2);
    assert_int_equal(sy_store_xack(s, "{b}:q", "g", ack, 2, false, &acked), SY_OK);
    assert_int_equal(acked, 0);
    assert_int_equal(sy_store_xlen(s, "{b}:q", &len), SY_OK);
    assert_int_equal(len, 5);
    const char *ack2[2] = {ids[2], ids[3]};
    assert_int_equal(sy_store_xack(s, "{b}:q", "g", ack2, 2, true, &acked), SY_OK);
    assert_int_equal(acked, 2);
    assert_int_equal(sy_store_xlen(s, "{b}:q", &len), SY_OK);
    assert_int_equal(len, 3);
    assert_int_equal(sy_store_xpending(s, "{b}:q", "g", &p), SY_OK);
    assert_int_equal(p.count, 1);
    assert_string_equal(p.min_id, ids[4]);
    assert_int_equal(p.consumers, 1);
    /* acking in a missing group acks nothing */
    assert_int_equal(sy_store_xack(s, "{b}:q", "nog", ack, 1, false, &acked), SY_OK);
    assert_int_equal(acked, 0);
    assert_int_equal(sy_store_xack(s, "{b}:none", "g", ack, 1, false, &acked), SY_OK);
    assert_int_equal(acked, 0);

    /* a group at "0" sees the whole stream; a new "$" group sees nothing old */
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "all", "0", &created), SY_OK);
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "all", "w", ">", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 3);
    assert_string_equal(e.items[0].id, ids[0]);
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "late", "$", &created), SY_OK);
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "late", "w", ">", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 0);
    add_entries(s, "{b}:q", 1, NULL);
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "late", "w", ">", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 1);
    sy_stream_entries_cleanup(&e);
}

static void test_stream_autoclaim(void **state)
{
    sy_store *s = *state;
    char ids[6][SY_STREAM_ID_MAX];
    char next[SY_STREAM_ID_MAX];
    sy_stream_entries e;
    sy_stream_pel_item items[10];
    size_t n;

    sy_stream_entries_init(&e);
    assert_int_equal(sy_store_xautoclaim(s, "{b}:q", "g", "c2", 0, "0-0", 10, &e, next),
                     SY_ENOTFOUND);
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "g", "$", NULL), SY_OK);
    add_entries(s, "{b}:q", 6, ids);
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "dead", ">", 6, 0, &e), SY_OK);
    assert_int_equal(e.n, 6);

    /* not idle long enough: nothing moves */
    assert_int_equal(sy_store_xautoclaim(s, "{b}:q", "g", "c2", 200, "0-0", 10, &e, next), SY_OK);
    assert_int_equal(e.n, 0);
    assert_string_equal(next, "0-0");

    g_env.pass(300);
    /* a recent delivery resets idle time for that entry only */
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "dead", ids[4], 1, 0, &e), SY_OK);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.items[0].id, ids[5]);

    /* claim in pages of 2 with the cursor */
    assert_int_equal(sy_store_xautoclaim(s, "{b}:q", "g", "c2", 200, "0-0", 2, &e, next), SY_OK);
    assert_int_equal(e.n, 2);
    assert_string_equal(e.items[0].id, ids[0]);
    assert_string_equal(e.items[1].id, ids[1]);
    assert_string_equal(entry_field(&e.items[1], "n"), "1");
    assert_string_equal(next, ids[2]);
    assert_int_equal(sy_store_xautoclaim(s, "{b}:q", "g", "c2", 200, next, 10, &e, next), SY_OK);
    assert_int_equal(e.n, 3); /* ids 2..4; 5 was just delivered */
    assert_string_equal(e.items[2].id, ids[4]);
    assert_string_equal(next, "0-0");

    assert_int_equal(sy_store_xpending_list(s, "{b}:q", "g", "-", NULL, 10, items, &n), SY_OK);
    assert_int_equal(n, 6);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(items[i].consumer, "c2");
        assert_int_equal(items[i].deliveries, 2);
        assert_true(items[i].idle_ms < 200);
    }
    assert_string_equal(items[5].consumer, "dead");
    assert_int_equal(items[5].deliveries, 2);
    sy_stream_pending p;
    assert_int_equal(sy_store_xpending(s, "{b}:q", "g", &p), SY_OK);
    assert_int_equal(p.consumers, 2);

    /* the new owner re-reads what it claimed */
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "c2", "0", 10, 0, &e), SY_OK);
    assert_int_equal(e.n, 5);

    /* idle entries whose message was acked+deleted are not claimed */
    const char *del[1] = {ids[5]};
    assert_int_equal(sy_store_xack(s, "{b}:q", "g", del, 1, true, NULL), SY_OK);
    g_env.pass(300);
    assert_int_equal(sy_store_xautoclaim(s, "{b}:q", "g", "c3", 200, "0-0", 10, &e, next), SY_OK);
    assert_int_equal(e.n, 5);
    sy_stream_entries_cleanup(&e);
}

typedef struct producer_arg {
    sy_store *s;
    int delay_ms;
} producer_arg;

static void *producer_main(void *p)
{
    producer_arg *a = p;
    struct timespec ts = {0, a->delay_ms * 1000000L};
    sy_store_field f = {"n", "late", 4};
    nanosleep(&ts, NULL); /* the reader must already be blocked: this is the point of the test */
    assert_int_equal(sy_store_xadd(a->s, "{b}:q", &f, 1, NULL), SY_OK);
    return NULL;
}

static void test_stream_blocking_read(void **state)
{
    sy_store *s = *state;
    sy_stream_entries e;
    int64_t t0;
    pthread_t th;
    producer_arg a = {s, 100};

    sy_stream_entries_init(&e);
    assert_int_equal(sy_store_xgroup_create(s, "{b}:q", "g", "$", NULL), SY_OK);
    /* nothing arrives: returns empty after about block_ms */
    t0 = mono_ms();
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "w", ">", 1, 80, &e), SY_OK);
    assert_int_equal(e.n, 0);
    assert_true(mono_ms() - t0 >= 70);
    assert_true(mono_ms() - t0 < 1000);

    /* an entry arriving while blocked wakes the reader early */
    assert_int_equal(pthread_create(&th, NULL, producer_main, &a), 0);
    t0 = mono_ms();
    assert_int_equal(sy_store_xreadgroup(s, "{b}:q", "g", "w", ">", 1, 5000, &e), SY_OK);
    pthread_join(th, NULL);
    assert_int_equal(e.n, 1);
    assert_string_equal(entry_field(&e.items[0], "n"), "late");
    assert_true(mono_ms() - t0 < 2500);
    sy_stream_entries_cleanup(&e);
}

/* ---- concurrency ---------------------------------------------------------------------------- */

typedef struct worker_arg {
    sy_store *s;
    int id;
    int iters;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg *a = p;
    char key[32], val[32];

    snprintf(key, sizeof(key), "{w}:k%d", a->id);
    for (int i = 0; i < a->iters; i++) {
        int64_t r;
        sy_store_field f = {"w", key, strlen(key)};
        snprintf(val, sizeof(val), "%d", i);
        assert_int_equal(sy_store_hincrby(a->s, "{w}:h", "n", 1, &r), SY_OK);
        assert_int_equal(sy_store_set(a->s, key, val, strlen(val), 60000, 0, NULL), SY_OK);
        char got[32];
        assert_int_equal(get_str(a->s, key, got, sizeof(got)), SY_OK);
        assert_string_equal(got, val);
        assert_int_equal(sy_store_xadd(a->s, "{w}:q", &f, 1, NULL), SY_OK);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    sy_store *s = *state;
    enum { T = 4, ITERS = 300 };
    pthread_t th[T];
    worker_arg a[T];
    sy_store_kvs kv;
    int64_t len;

    for (int i = 0; i < T; i++) {
        a[i] = (worker_arg){s, i, ITERS};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &a[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(s, "{w}:h", &kv), SY_OK);
    assert_int_equal(hash_field_value(&kv, "n"), T * ITERS);
    sy_store_kvs_cleanup(&kv);
    assert_int_equal(sy_store_xlen(s, "{w}:q", &len), SY_OK);
    assert_int_equal(len, T * ITERS);
    sy_store_stats st;
    sy_store_stats_get(s, &st);
    assert_true(st.ops >= (uint64_t)(T * ITERS * 4));
    assert_int_equal(st.failures, 0);
    assert_true(st.healthy);
}

/* ---- allocation failures (idempotent calls: they run against Redis as well) ---------------- */

/* Runs <call> with allocation n failing, n = 0, 1, ... until it succeeds; every failure must be
 * SY_ENOMEM and leave nothing behind (LeakSanitizer checks). Returns the count of failures. */
#define ALLOC_LOOP(call)                                                                           \
    do {                                                                                           \
        long n_;                                                                                   \
        sy_err rc_ = SY_ENOMEM;                                                                    \
        for (n_ = 0; n_ < 10000; n_++) {                                                           \
            fail_after(n_);                                                                        \
            rc_ = (call);                                                                          \
            alloc_normal();                                                                        \
            if (rc_ != SY_ENOMEM)                                                                  \
                break;                                                                             \
        }                                                                                          \
        assert_int_equal(rc_, SY_OK);                                                              \
    } while (0)

static void test_alloc_failures(void **state)
{
    sy_store *s = *state;
    sy_store_kvs kv;
    sy_stream_entries e;
    bool sw;
    sy_buf cur;

    sy_store_kvs_init(&kv);
    sy_stream_entries_init(&e);
    sy_buf_init(&cur, 100);
    for (int i = 0; i < 20; i++) {
        char f[16];
        snprintf(f, sizeof(f), "f%d", i);
        assert_int_equal(sy_store_hincrby(s, "{t}:h", f, i, NULL), SY_OK);
    }
    ALLOC_LOOP(sy_store_hgetall(s, "{t}:h", &kv));
    assert_int_equal(kv.n, 20);
    assert_int_equal(hash_field_value(&kv, "f7"), 7);

    sy_store_incr ops[3] = {
        {"{t}:h", "a", 1, 0, 0}, {"{t}:h2", "b", 2, 1000, 0}, {"{t}:h", "a", 1, 0, 0}};
    ALLOC_LOOP(sy_store_hincrby_many(s, ops, 3, "{t}:once", 10000, NULL));
    assert_int_equal(ops[2].result, 2); /* applied exactly once */

    sy_store_cas_req q = {.expect_mode = SY_CAS_ABSENT, .value = "v", .value_len = 1};
    ALLOC_LOOP(sy_store_cas(s, "{t}:cas", &q, &sw, &cur));
    assert_true(sw);

    assert_int_equal(sy_store_xgroup_create(s, "{t}:q", "g", "$", NULL), SY_OK);
    add_entries(s, "{t}:q", 4, NULL);
    assert_int_equal(sy_store_xreadgroup(s, "{t}:q", "g", "c", ">", 10, 0, &e), SY_OK);
    ALLOC_LOOP(sy_store_xreadgroup(s, "{t}:q", "g", "c", "0", 10, 0, &e));
    assert_int_equal(e.n, 4);
    assert_string_equal(entry_field(&e.items[3], "n"), "3");
    const char *ids[2] = {e.items[0].id, e.items[1].id};
    size_t acked = 0;
    ALLOC_LOOP(sy_store_xack(s, "{t}:q", "g", ids, 2, true, &acked));
    assert_int_equal(acked, 2);

    bool st = false;
    ALLOC_LOOP(sy_store_hset(s, "{t}:hs", "file-x", "123", 3, 0, &st));
    assert_true(st);
    ALLOC_LOOP(sy_store_hset(s, "{t}:hs", "file-y", "4", 1, SY_STORE_NX, &st));
    assert_true(st);
    ALLOC_LOOP(sy_store_hincrby(s, "{t}:hs", "file-x", 1, NULL));
    ALLOC_LOOP(sy_store_hgetall(s, "{t}:hs", &kv));
    assert_int_equal(kv.n, 2);
    assert_int_equal(hash_field_value(&kv, "file-x"), 124);
    ALLOC_LOOP(sy_store_hdel(s, "{t}:hs", "file-x", &st));
    assert_true(st);

    sy_store_gcra_req g = {.rate = 10, .period_ms = 1000, .burst = 5, .cost = 0};
    sy_store_gcra_res gr;
    ALLOC_LOOP(sy_store_gcra(s, "{t}:g", &g, &gr));
    assert_true(gr.allowed);
    sy_store_kvs_cleanup(&kv);
    sy_stream_entries_cleanup(&e);
    sy_buf_cleanup(&cur);
}

/* ---- latency (printed, not asserted; SY_STORE_BENCH=1 for longer runs) ------------------- */

typedef struct bench_arg {
    sy_store *s;
    int iters;
} bench_arg;

static void *bench_get_main(void *p)
{
    bench_arg *a = p;
    sy_buf b;

    for (int i = 0; i < a->iters; i++) {
        sy_buf_init(&b, 1024);
        assert_int_equal(sy_store_get(a->s, "{bench}:k", &b), SY_OK);
        sy_buf_cleanup(&b);
    }
    return NULL;
}

static void suite_bench(sy_store *s, const char *name)
{
    int iters = getenv("SY_STORE_BENCH") ? 20000 : 2000;
    char val[256];
    int64_t t0;
    sy_store_incr ops[100];
    bench_arg a = {s, iters};
    enum { T = 4 };
    pthread_t th[T];

    memset(val, 'x', sizeof(val));
    t0 = mono_ms();
    for (int i = 0; i < iters; i++)
        assert_int_equal(sy_store_set(s, "{bench}:k", val, sizeof(val), 60000, 0, NULL), SY_OK);
    double set_us = (double)(mono_ms() - t0) * 1000.0 / iters;
    t0 = mono_ms();
    bench_get_main(&a);
    double get_us = (double)(mono_ms() - t0) * 1000.0 / iters;
    for (int i = 0; i < 100; i++)
        ops[i] = (sy_store_incr){"{bench}:h", i % 2 ? "requests" : "tokens", 1, 0, 0};
    int batches = iters / 10;
    t0 = mono_ms();
    for (int i = 0; i < batches; i++)
        assert_int_equal(sy_store_hincrby_many(s, ops, 100, NULL, 0, NULL), SY_OK);
    double batch_us = (double)(mono_ms() - t0) * 1000.0 / batches;
    sy_store_gcra_req q = {.rate = 1000000, .period_ms = 1000, .burst = 1000000, .cost = 1};
    sy_store_gcra_res r;
    t0 = mono_ms();
    for (int i = 0; i < iters; i++)
        assert_int_equal(sy_store_gcra(s, "{bench}:g", &q, &r), SY_OK);
    double gcra_us = (double)(mono_ms() - t0) * 1000.0 / iters;
    t0 = mono_ms();
    for (int i = 0; i < T; i++)
        assert_int_equal(pthread_create(&th[i], NULL, bench_get_main, &a), 0);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    double par = (double)T * iters * 1000.0 / (double)(mono_ms() - t0 + 1);
    printf("[ BENCH    ] %s: SET %.1f us, GET %.1f us, HINCRBY x100 in one call %.1f us "
           "(%.0f incr/s), GCRA %.1f us, GET from %d threads %.0f/s\n",
           name, set_us, get_us, batch_us, 100e6 / batch_us, gcra_us, T, par);
}

#define SUITE_TEST(f) cmocka_unit_test_setup_teardown(f, suite_setup, suite_teardown)

#define STORE_SUITE_TESTS                                                                          \
    SUITE_TEST(test_strings), SUITE_TEST(test_limits_and_arguments), SUITE_TEST(test_ttl),         \
        SUITE_TEST(test_wrong_type), SUITE_TEST(test_hincrby), SUITE_TEST(test_hincrby_many),      \
        SUITE_TEST(test_hset_hdel),                                                                \
        SUITE_TEST(test_gcra), SUITE_TEST(test_cas), SUITE_TEST(test_stream_basics),               \
        SUITE_TEST(test_stream_autoclaim), SUITE_TEST(test_stream_blocking_read),                  \
        SUITE_TEST(test_concurrency), SUITE_TEST(test_alloc_failures)

#endif
