/* Unit tests for health: the registry, in-flight counting against max_inflight,
 * the circuit breaker's states (with explicit clock values, never a sleep), the
 * latency EWMA, and the shared breaker: record format, merge rules, and the
 * exchange through a store (the embedded one; the registry is process-wide, so a
 * second instance is simulated by resetting it or by writing records directly). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/health.h"
#include "switchyard/store.h"

#define FAILS 3                  /* breaker_failures */
#define COOL 10000000            /* breaker_cooldown_ms = 10 s, in us */
#define T0 ((int64_t)1000000000) /* an arbitrary start time */

static int teardown(void **state)
{
    (void)state;
    sy_health_reset_all();
    return 0;
}

/* One attempt started and finished at <now>. */
static void attempt(sy_dep_health *h, bool ok, int64_t now)
{
    sy_health_begin(h, now);
    sy_health_end(h, ok, 0, FAILS, COOL, now);
}

static void test_registry(void **state)
{
    (void)state;
    sy_dep_health *a = sy_health_get("a");
    sy_dep_health *b = sy_health_get("b");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(sy_health_get("a"), a); /* same name, same state (survives reloads) */
    assert_string_equal(a->name, "a");
    assert_int_equal(a->inflight, 0);
    assert_int_equal(sy_health_breaker(a, T0), SY_BREAKER_CLOSED);
    /* a NULL state (no registry entry) is always available and ignored by the
     * updates */
    assert_true(sy_health_available(NULL, 1, T0));
    sy_health_begin(NULL, T0);
    sy_health_end(NULL, false, 5, FAILS, COOL, T0);
    sy_health_abandon(NULL);
}

static void test_inflight(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("inflight");
    assert_true(sy_health_available(h, 2, T0));
    sy_health_begin(h, T0);
    assert_int_equal(h->inflight, 1);
    assert_true(sy_health_available(h, 2, T0));
    sy_health_begin(h, T0);
    assert_int_equal(h->inflight, 2);
    assert_false(sy_health_available(h, 2, T0)); /* at max_inflight */
    assert_true(sy_health_available(h, 0, T0));  /* 0 = no limit */
    assert_true(sy_health_available(h, 3, T0));
    sy_health_end(h, true, 0, FAILS, COOL, T0);
    assert_int_equal(h->inflight, 1);
    assert_true(sy_health_available(h, 2, T0));
    sy_health_abandon(h);
    assert_int_equal(h->inflight, 0);
    assert_int_equal(h->requests, 2);
    assert_int_equal(h->failures, 0);
}

static void test_breaker_opens_after_n(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("opens");
    int64_t now = T0;
    for (int i = 0; i < FAILS - 1; i++) {
        attempt(h, false, now);
        assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_CLOSED);
        assert_true(sy_health_available(h, 0, now));
        now += 1000;
    }
    /* a success in between resets the count: failures must be consecutive */
    attempt(h, true, now);
    assert_int_equal(h->consecutive_failures, 0);
    for (int i = 0; i < FAILS - 1; i++)
        attempt(h, false, now);
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_CLOSED);
    attempt(h, false, now); /* the Nth consecutive failure */
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_OPEN);
    assert_false(sy_health_available(h, 0, now));
    assert_int_equal(sy_health_breaker(h, now + COOL - 1), SY_BREAKER_OPEN);
    assert_false(sy_health_available(h, 0, now + COOL - 1));
    assert_int_equal(sy_health_breaker(h, now + COOL), SY_BREAKER_HALF_OPEN);
    assert_int_equal(h->failures, 2 * FAILS - 1);
    assert_int_equal(h->inflight, 0);
}

static sy_dep_health *opened(const char *name, int64_t *now)
{
    sy_dep_health *h = sy_health_get(name);
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, *now);
    assert_int_equal(sy_health_breaker(h, *now), SY_BREAKER_OPEN);
    *now += COOL; /* the cooldown is over */
    assert_int_equal(sy_health_breaker(h, *now), SY_BREAKER_HALF_OPEN);
    return h;
}

static void test_half_open_one_probe(void **state)
{
    (void)state;
    int64_t now = T0;
    sy_dep_health *h = opened("probe", &now);
    assert_true(sy_health_available(h, 0, now)); /* one probe may go */
    sy_health_begin(h, now);                     /* ... and claims the slot */
    assert_false(sy_health_available(h, 0, now));
    assert_false(sy_health_available(h, 0, now + 1000)); /* still one probe in flight */
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_HALF_OPEN);
    /* a probe that never really started frees the slot for another */
    sy_health_abandon(h);
    assert_true(sy_health_available(h, 0, now));
    sy_health_begin(h, now);
    assert_false(sy_health_available(h, 0, now));
    sy_health_end(h, true, 0, FAILS, COOL, now);
}

static void test_failed_probe_reopens(void **state)
{
    (void)state;
    int64_t now = T0;
    sy_dep_health *h = opened("reopen", &now);
    sy_health_begin(h, now);
    now += 500;
    sy_health_end(h, false, 0, FAILS, COOL, now);
    /* open again for a whole cooldown from the probe's failure */
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_OPEN);
    assert_false(sy_health_available(h, 0, now + COOL - 1));
    assert_int_equal(sy_health_breaker(h, now + COOL), SY_BREAKER_HALF_OPEN);
    assert_true(sy_health_available(h, 0, now + COOL));
    /* the probe slot was released: the next half-open period gets its own probe
     */
    assert_int_equal(h->probing, 0);
}

/* A failed probe reopens the breaker even with breaker_failures larger than the
 * count. */
static void test_failed_probe_reopens_any_count(void **state)
{
    (void)state;
    int64_t now = T0;
    sy_dep_health *h = opened("reopen2", &now);
    sy_health_begin(h, now);
    sy_health_end(h, false, 0, 1000, COOL, now);
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_OPEN);
}

static void test_probe_success_closes(void **state)
{
    (void)state;
    int64_t now = T0;
    sy_dep_health *h = opened("closes", &now);
    sy_health_begin(h, now);
    sy_health_end(h, true, 2000, FAILS, COOL, now + 10);
    assert_int_equal(sy_health_breaker(h, now + 10), SY_BREAKER_CLOSED);
    assert_int_equal(h->consecutive_failures, 0);
    assert_int_equal(h->probing, 0);
    assert_true(sy_health_available(h, 0, now + 10));
    /* closed again: it takes N fresh failures to open it */
    for (int i = 0; i < FAILS - 1; i++)
        attempt(h, false, now + 20);
    assert_int_equal(sy_health_breaker(h, now + 20), SY_BREAKER_CLOSED);
    attempt(h, false, now + 20);
    assert_int_equal(sy_health_breaker(h, now + 20), SY_BREAKER_OPEN);
}

/* The breaker and max_inflight both count: half-open but at the limit is
 * unavailable. */
static void test_half_open_and_max_inflight(void **state)
{
    (void)state;
    int64_t now = T0;
    sy_dep_health *h = sy_health_get("both");
    sy_health_begin(h, now); /* a long request, started while closed */
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, now);
    now += COOL;
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_HALF_OPEN);
    assert_false(sy_health_available(h, 1, now));
    assert_true(sy_health_available(h, 2, now));
    sy_health_abandon(h);
}

static void test_ewma(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("ewma");
    assert_int_equal(h->ewma_us, 0);
    sy_health_begin(h, T0);
    sy_health_end(h, true, 8000, FAILS, COOL, T0);
    assert_int_equal(h->ewma_us, 8000); /* the first sample is the average */
    sy_health_begin(h, T0);
    sy_health_end(h, true, 16000, FAILS, COOL, T0);
    assert_int_equal(h->ewma_us, 9000); /* alpha 1/8 */
    sy_health_begin(h, T0);
    sy_health_end(h, false, 0, FAILS, COOL, T0); /* no first byte: no sample */
    assert_int_equal(h->ewma_us, 9000);
    /* converges towards a new steady latency */
    for (int i = 0; i < 100; i++) {
        sy_health_begin(h, T0);
        sy_health_end(h, true, 1000, FAILS, COOL, T0);
    }
    assert_true(h->ewma_us >= 1000 && h->ewma_us < 1100);
}


/* ---- shared breaker ---- */

#define MS0 ((int64_t)1700000000000) /* the wall clock at T0 */
#define WALL(us) (MS0 + ((us)-T0) / 1000)

static void test_rec_format_parse(void **state)
{
    (void)state;
    char buf[SY_BREAKER_REC_MAX];
    sy_breaker_rec r = {.open_until_ms = MS0 + 10000, .changed_ms = MS0}, back;
    size_t n = sy_breaker_rec_format(&r, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "v1 1700000010000 1700000000000");
    assert_true(sy_breaker_rec_parse(buf, n, &back));
    assert_true(back.open_until_ms == r.open_until_ms && back.changed_ms == r.changed_ms);
    sy_breaker_rec closed = {.open_until_ms = 0, .changed_ms = 5};
    n = sy_breaker_rec_format(&closed, buf, sizeof(buf));
    assert_true(sy_breaker_rec_parse(buf, n, &back));
    assert_true(back.open_until_ms == 0 && back.changed_ms == 5);
    /* the length is what counts, not a NUL */
    assert_true(sy_breaker_rec_parse("v1 1 2xyz", 6, &back));
    assert_true(back.open_until_ms == 1 && back.changed_ms == 2);

    const char *bad[] = {"", "v1", "v1 ", "v2 1 2", "v1 1", "v1 1 ", "v1 1 2 ", "v1  1 2",
                         "v1 -1 2", "v1 1 -2", "v1 1 0", "v1 a 2", "v1 1 2x", "V1 1 2",
                         "v1 1234567890123456789 2", "v1 1 1234567890123456789"};
    back.changed_ms = 42;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (sy_breaker_rec_parse(bad[i], strlen(bad[i]), &back))
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_true(back.changed_ms == 42); /* untouched on failure */
    assert_false(sy_breaker_rec_parse(NULL, 0, &back));

    char key[64];
    assert_true(sy_breaker_key("gpt-4.1", key, sizeof(key)));
    assert_string_equal(key, "{cb:gpt-4.1}:state");
    assert_false(sy_breaker_key("a-name-longer-than-the-buffer", key, 16));
}

static void test_snapshot(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("snap");
    sy_breaker_rec r;
    int64_t now = T0;
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, now);
    sy_health_snapshot(h, now + 2000000, WALL(now + 2000000), &r);
    assert_true(r.open_until_ms == WALL(now + COOL));
    assert_true(r.changed_ms == WALL(now));
    /* half-open is published as an opening in the past, never as closed */
    sy_health_snapshot(h, now + COOL + 5000000, WALL(now + COOL + 5000000), &r);
    assert_true(r.open_until_ms == WALL(now + COOL));
    attempt(h, true, now + COOL + 6000000);
    sy_health_snapshot(h, now + COOL + 7000000, WALL(now + COOL + 7000000), &r);
    assert_true(r.open_until_ms == 0);
    assert_true(r.changed_ms == WALL(now + COOL + 6000000));
}

static void test_merge(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("merge");
    int64_t now = T0;
    /* another instance opened it 10 ms ago for 5 s */
    sy_breaker_rec open = {.open_until_ms = WALL(now) + 5000, .changed_ms = WALL(now) - 10};
    assert_true(sy_health_merge(h, &open, now, WALL(now)));
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_OPEN);
    assert_false(sy_health_available(h, 0, now + 4999000));
    assert_int_equal(sy_health_breaker(h, now + 5000000), SY_BREAKER_HALF_OPEN);
    /* the same record, or an older one, changes nothing */
    assert_false(sy_health_merge(h, &open, now, WALL(now)));
    sy_breaker_rec older = {.open_until_ms = 0, .changed_ms = WALL(now) - 20};
    assert_false(sy_health_merge(h, &older, now, WALL(now)));
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_OPEN);
    /* a newer close closes it, and forgets the failures counted here */
    h->consecutive_failures = FAILS - 1;
    sy_breaker_rec closed = {.open_until_ms = 0, .changed_ms = WALL(now) + 100};
    assert_true(sy_health_merge(h, &closed, now + 200000, WALL(now + 200000)));
    assert_int_equal(sy_health_breaker(h, now + 200000), SY_BREAKER_CLOSED);
    assert_int_equal(h->consecutive_failures, 0);
    /* a record whose opening is long over arrives half-open: one probe may go */
    sy_breaker_rec past = {.open_until_ms = WALL(now) - 60000, .changed_ms = WALL(now) + 150};
    assert_true(sy_health_merge(h, &past, now + 300000, WALL(now + 300000)));
    assert_int_equal(sy_health_breaker(h, now + 300000), SY_BREAKER_HALF_OPEN);
    assert_true(sy_health_available(h, 0, now + 300000));
    /* an unpublished local change is not overwritten by a merge: the sync decides */
    sy_health_begin(h, now + 300000);
    sy_health_end(h, false, 0, FAILS, COOL, now + 400000); /* failed probe: re-opened */
    assert_int_equal(h->dirty, 1);
    sy_breaker_rec newer = {.open_until_ms = 0, .changed_ms = WALL(now) + 10000};
    assert_false(sy_health_merge(h, &newer, now + 500000, WALL(now + 500000)));
    assert_int_equal(sy_health_breaker(h, now + 500000), SY_BREAKER_OPEN);
}

static int notified;
static void on_notify(void) { notified++; }

static void test_notify(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("notify");
    notified = 0;
    sy_health_set_notify(on_notify);
    attempt(h, true, T0);                /* closed and stays closed */
    for (int i = 0; i < FAILS - 1; i++) /* below the threshold */
        attempt(h, false, T0);
    assert_int_equal(notified, 0);
    assert_int_equal(h->dirty, 0);
    attempt(h, false, T0); /* opens */
    assert_int_equal(notified, 1);
    assert_int_equal(h->dirty, 1);
    assert_true(h->changed_us == T0);
    attempt(h, true, T0 + COOL); /* the probe closes it */
    assert_int_equal(notified, 2);
    assert_true(h->changed_us == T0 + COOL);
    attempt(h, true, T0 + COOL + 1); /* already closed */
    assert_int_equal(notified, 2);
    sy_health_set_notify(NULL);
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, T0 + COOL + 2);
    assert_int_equal(notified, 2);
}

static sy_store *mem_store(void)
{
    sy_store_opts o;
    sy_store *s = NULL;
    sy_store_opts_init(&o);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    return s;
}

static bool stored(sy_store *s, const char *key, sy_breaker_rec *r)
{
    sy_buf b;
    sy_buf_init(&b, 256);
    bool ok = sy_store_get(s, key, &b) == SY_OK && sy_breaker_rec_parse(b.data, b.len, r);
    sy_buf_cleanup(&b);
    return ok;
}

static void put_rec(sy_store *s, const char *key, const sy_breaker_rec *r)
{
    char v[SY_BREAKER_REC_MAX];
    size_t n = sy_breaker_rec_format(r, v, sizeof(v));
    assert_int_equal(sy_store_set(s, key, v, n, 0, 0, NULL), SY_OK);
}

/* Instance A opens and publishes; a fresh instance B adopts; B's probe closes it and publishes;
 * conflicts resolve by changed_ms. */
static void test_sync_through_store(void **state)
{
    (void)state;
    sy_store *s = mem_store();
    const char *key = "{cb:dep}:state";
    sy_breaker_rec r;
    int pub = -1, ad = -1;
    int64_t now = T0;

    /* instance A */
    sy_dep_health *h = sy_health_get("dep");
    sy_health_get("quiet"); /* never changed: nothing published for it */
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(pub + ad, 0);
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, now);
    now += 1000;
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(pub, 1);
    assert_int_equal(ad, 0);
    assert_int_equal(h->dirty, 0);
    assert_true(stored(s, key, &r));
    assert_true(r.open_until_ms == WALL(T0 + COOL) && r.changed_ms == WALL(T0));
    bool exists = true;
    assert_int_equal(sy_store_exists(s, "{cb:quiet}:state", &exists), SY_OK);
    assert_false(exists);
    /* its own record read back changes nothing */
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(pub + ad, 0);

    /* instance B: a new process on the same store */
    sy_health_reset_all();
    h = sy_health_get("dep");
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_CLOSED);
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(ad, 1);
    assert_int_equal(pub, 0);
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_OPEN);
    assert_false(sy_health_available(h, 0, T0 + COOL - 1000));
    /* after A's cooldown B probes, the probe succeeds: closed, published for everyone */
    now = T0 + COOL;
    assert_true(sy_health_available(h, 0, now));
    attempt(h, true, now);
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_CLOSED);
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(pub, 1);
    assert_true(stored(s, key, &r));
    assert_true(r.open_until_ms == 0 && r.changed_ms == WALL(T0 + COOL));

    /* another instance re-opens it later: adopted */
    sy_breaker_rec other = {.open_until_ms = WALL(now) + 3000, .changed_ms = WALL(now) + 10};
    put_rec(s, key, &other);
    now += 20000;
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(ad, 1);
    assert_int_equal(sy_health_breaker(h, now - 20000 + 2000000), SY_BREAKER_OPEN);

    /* a local change older than the store's record loses to it (last writer wins) */
    sy_breaker_rec later = {.open_until_ms = 0, .changed_ms = WALL(now) + 50000};
    put_rec(s, key, &later);
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, now);
    assert_int_equal(h->dirty, 1);
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(pub, 0);
    assert_int_equal(ad, 1);
    assert_int_equal(h->dirty, 0);
    assert_int_equal(sy_health_breaker(h, now), SY_BREAKER_CLOSED);
    assert_true(stored(s, key, &r));
    assert_true(r.changed_ms == later.changed_ms);

    /* a value that is not a record: a short one is replaced, a long one left alone */
    assert_int_equal(sy_store_set(s, key, "junk", 4, 0, 0, NULL), SY_OK);
    now += 100000000; /* past the later record's changed_ms */
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, now);
    assert_int_equal(sy_health_sync(s, now, WALL(now), &pub, &ad), SY_OK);
    assert_int_equal(pub, 1);
    assert_true(stored(s, key, &r));
    assert_true(r.open_until_ms == WALL(now + COOL));
    char longv[200];
    memset(longv, 'x', sizeof(longv));
    assert_int_equal(sy_store_set(s, key, longv, sizeof(longv), 0, 0, NULL), SY_OK);
    attempt(h, true, now + 1);
    assert_int_equal(sy_health_sync(s, now + 1, WALL(now + 1), &pub, &ad), SY_OK);
    assert_int_equal(pub + ad, 0);
    assert_int_equal(h->dirty, 1); /* kept, local state intact */
    assert_int_equal(sy_health_breaker(h, now + 1), SY_BREAKER_CLOSED);
    sy_store_free(s);
}

/* A store that is down: the sync reports it, the breaker keeps its local state and its change
 * stays unpublished (dirty) for the next round. */
static void test_sync_store_outage_keeps_local(void **state)
{
    (void)state;
    sy_dep_health *h = sy_health_get("down");
    for (int i = 0; i < FAILS; i++)
        attempt(h, false, T0);
    /* a Redis store that cannot connect: degraded, every call fails at once */
    sy_store_opts o;
    sy_errlist errs;
    sy_store_opts_init(&o);
    sy_errlist_init(&errs);
    json_t *cfg = json_pack("{s:s, s:i}", "url", "redis://127.0.0.1:1/0", "timeout_ms", 20);
    assert_int_equal(sy_store_config_parse(cfg, &o, &errs), SY_OK);
    json_decref(cfg);
    sy_store *s = NULL;
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    sy_errlist_cleanup(&errs);
    int pub = -1, ad = -1;
    assert_int_not_equal(sy_health_sync(s, T0, WALL(T0), &pub, &ad), SY_OK);
    assert_int_equal(pub + ad, 0);
    assert_int_equal(h->dirty, 1); /* retried when the store is back */
    assert_int_equal(sy_health_breaker(h, T0), SY_BREAKER_OPEN);
    sy_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_registry, teardown),
        cmocka_unit_test_teardown(test_inflight, teardown),
        cmocka_unit_test_teardown(test_breaker_opens_after_n, teardown),
        cmocka_unit_test_teardown(test_half_open_one_probe, teardown),
        cmocka_unit_test_teardown(test_failed_probe_reopens, teardown),
        cmocka_unit_test_teardown(test_failed_probe_reopens_any_count, teardown),
        cmocka_unit_test_teardown(test_probe_success_closes, teardown),
        cmocka_unit_test_teardown(test_half_open_and_max_inflight, teardown),
        cmocka_unit_test_teardown(test_ewma, teardown),
        cmocka_unit_test_teardown(test_rec_format_parse, teardown),
        cmocka_unit_test_teardown(test_snapshot, teardown),
        cmocka_unit_test_teardown(test_merge, teardown),
        cmocka_unit_test_teardown(test_notify, teardown),
        cmocka_unit_test_teardown(test_sync_through_store, teardown),
        cmocka_unit_test_teardown(test_sync_store_outage_keeps_local, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
