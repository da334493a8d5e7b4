/* Unit tests for health: the registry, in-flight counting against max_inflight,
 * the circuit breaker's states (with explicit clock values, never a sleep) and
 * the latency EWMA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/health.h"

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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
