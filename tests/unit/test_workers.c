/* Unit tests for workers: every job runs exactly once, free drains the queue, the bound holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/workers.h"

static int counter;

static void bump(void *arg)
{
    __atomic_add_fetch(&counter, (int)(intptr_t)arg, __ATOMIC_RELAXED);
}

static void test_runs_all(void **state)
{
    (void)state;
    sy_workers *w;
    counter = 0;
    assert_int_equal(sy_workers_new(3, 10000, &w), SY_OK);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(sy_workers_submit(w, bump, (void *)(intptr_t)1), SY_OK);
    sy_workers_free(w); /* drains before joining */
    assert_int_equal(counter, 5000);
}

static int gate;

static void wait_gate(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&gate, __ATOMIC_ACQUIRE))
        usleep(100);
}

static void test_bound(void **state)
{
    (void)state;
    sy_workers *w;
    counter = 0;
    gate = 0;
    assert_int_equal(sy_workers_new(1, 2, &w), SY_OK);
    assert_int_equal(sy_workers_submit(w, wait_gate, NULL), SY_OK);
    /* the worker may or may not have taken the first job yet: at most 3 fit before the bound */
    int accepted = 0;
    for (int i = 0; i < 10; i++)
        accepted += sy_workers_submit(w, bump, (void *)(intptr_t)1) == SY_OK;
    assert_true(accepted >= 1 && accepted <= 2);
    __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
    sy_workers_free(w);
    assert_int_equal(counter, accepted);
}

/* Threads start on demand: none for an unused pool, one per blocked job up to the size. */
static void test_on_demand(void **state)
{
    (void)state;
    sy_workers *w;
    counter = 0;
    gate = 0;
    assert_int_equal(sy_workers_new(3, 100, &w), SY_OK);
    assert_int_equal(sy_workers_threads(w), 0);
    assert_int_equal(sy_workers_submit(w, wait_gate, NULL), SY_OK);
    assert_int_equal(sy_workers_threads(w), 1);
    assert_int_equal(sy_workers_submit(w, wait_gate, NULL), SY_OK);
    assert_int_equal(sy_workers_threads(w), 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(sy_workers_submit(w, bump, (void *)(intptr_t)1), SY_OK);
    assert_int_equal(sy_workers_threads(w), 3); /* never more than the pool's size */
    __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
    sy_workers_free(w);
    assert_int_equal(counter, 10);
    sy_workers *unused;
    assert_int_equal(sy_workers_new(4, 10, &unused), SY_OK);
    assert_int_equal(sy_workers_threads(unused), 0);
    sy_workers_free(unused);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_runs_all), cmocka_unit_test(test_bound),
                                       cmocka_unit_test(test_on_demand)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
