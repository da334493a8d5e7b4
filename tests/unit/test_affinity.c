/* Unit tests for affinity shared through the store: which puts are published (new, another
 * deployment, half the TTL spent), the store key and value round trip on the embedded store,
 * and sy_router_prefer, which moves a deployment the store remembers to the front only when the
 * conversation may go there and it can take a request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/affinity.h"
#include "switchyard/health.h"
#include "switchyard/router.h"
#include "switchyard/store.h"

#define T0 ((int64_t)1000000000)
#define TTL ((int64_t)600 * 1000000)

static int npub;
static uint64_t last_key;
static char last_name[SY_AFFINITY_NAME_MAX];
static int64_t last_ttl;

static void publish(uint64_t key, const char *name, int64_t ttl_us)
{
    npub++;
    last_key = key;
    snprintf(last_name, sizeof(last_name), "%s", name);
    last_ttl = ttl_us;
}

static int setup(void **state)
{
    (void)state;
    npub = 0;
    last_name[0] = '\0';
    sy_affinity_set_publisher(publish);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sy_affinity_set_publisher(NULL);
    sy_affinity_reset();
    sy_health_reset_all();
    return 0;
}

static void test_publish_rules(void **state)
{
    (void)state;
    char name[64];
    sy_affinity_put(42, "dep-a", TTL, T0);
    assert_int_equal(npub, 1); /* new */
    assert_true(last_key == 42 && last_ttl == TTL);
    assert_string_equal(last_name, "dep-a");
    assert_int_equal(sy_affinity_get(42, name, sizeof(name), T0 + 1), 1);
    assert_string_equal(name, "dep-a");
    sy_affinity_put(42, "dep-a", TTL, T0 + TTL / 4);
    assert_int_equal(npub, 1); /* the store's copy has more than half its TTL left */
    sy_affinity_put(42, "dep-b", TTL, T0 + TTL / 4 + 1);
    assert_int_equal(npub, 2); /* moved (a failover) */
    assert_string_equal(last_name, "dep-b");
    sy_affinity_put(42, "dep-b", TTL, T0 + TTL / 4 + 1 + TTL / 2 + 1);
    assert_int_equal(npub, 3); /* half the TTL spent: refreshed */
    sy_affinity_put(42, "dep-b", TTL, T0 + 3 * TTL);
    assert_int_equal(npub, 4); /* expired locally: new again */
    /* not remembered, not published */
    sy_affinity_put(0, "dep-a", TTL, T0);
    char huge[200];
    memset(huge, 'n', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    sy_affinity_put(7, huge, TTL, T0);
    assert_int_equal(npub, 4);
    sy_affinity_set_publisher(NULL);
    sy_affinity_put(43, "dep-a", TTL, T0);
    assert_int_equal(npub, 4);
}

static void test_store_round_trip(void **state)
{
    (void)state;
    char key[32], name[SY_AFFINITY_NAME_MAX];
    sy_affinity_store_key(0x1234abcdull, key, sizeof(key));
    assert_string_equal(key, "{a:000000001234abcd}");

    sy_store_opts o;
    sy_store *s = NULL;
    sy_store_opts_init(&o);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    assert_int_equal(sy_affinity_store_get(s, 0x1234abcdull, name, sizeof(name)), 0);
    assert_int_equal(sy_affinity_store_put(s, 0x1234abcdull, "gpt-4.1", TTL), SY_OK);
    assert_int_equal(sy_affinity_store_get(s, 0x1234abcdull, name, sizeof(name)), 1);
    assert_string_equal(name, "gpt-4.1");
    int64_t ttl = 0;
    assert_int_equal(sy_store_ttl(s, key, &ttl), SY_OK);
    assert_true(ttl > 0 && ttl <= TTL / 1000);
    /* a name that does not fit the caller's buffer is no answer, never a truncated name */
    assert_int_equal(sy_affinity_store_get(s, 0x1234abcdull, name, 4), 0);
    /* a value that is not a deployment name (empty, binary) is no answer */
    assert_int_equal(sy_store_set(s, key, "a\0b", 3, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_affinity_store_get(s, 0x1234abcdull, name, sizeof(name)), 0);
    assert_int_equal(sy_store_set(s, key, "", 0, 0, 0, NULL), SY_OK);
    assert_int_equal(sy_affinity_store_get(s, 0x1234abcdull, name, sizeof(name)), 0);
    assert_int_equal(sy_affinity_store_get(s, 0, name, sizeof(name)), 0);
    sy_store_free(s);
}

static void test_router_prefer(void **state)
{
    (void)state;
    sy_deployment d[5];
    const char *names[] = {"d0", "d1", "d2", "d3", "d4"};
    memset(d, 0, sizeof(d));
    for (int i = 0; i < 5; i++) {
        d[i].name = (char *)names[i];
        d[i].health = sy_health_get(names[i]);
    }
    sy_pick p;
    memset(&p, 0, sizeof(p));
    for (int i = 0; i < 5; i++)
        p.targets[i] = &d[i];
    p.ntargets = 5;
    p.navailable = 4;         /* d4 is held back */
    p.affinity_ok = 0x7u;     /* d0..d2 are in the rule-forced tier */
    assert_false(sy_router_prefer(&p, "nope"));
    assert_false(sy_router_prefer(&p, "d3")); /* outside the tier */
    assert_false(sy_router_prefer(&p, "d4")); /* unavailable */
    assert_false(p.affinity_hit);
    assert_ptr_equal(p.targets[0], &d[0]);
    assert_true(sy_router_prefer(&p, "d2"));
    assert_true(p.affinity_hit);
    const sy_deployment *want[] = {&d[2], &d[0], &d[1], &d[3], &d[4]};
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(p.targets[i], want[i]);
    assert_int_equal(p.affinity_ok, 0x7u); /* the bits moved with their targets */
    assert_true(sy_router_prefer(&p, "d2")); /* already first */
    assert_true(sy_router_prefer(&p, "d1"));
    assert_ptr_equal(p.targets[0], &d[1]);
    assert_ptr_equal(p.targets[1], &d[2]);
    assert_ptr_equal(p.targets[2], &d[0]);
    assert_ptr_equal(p.targets[3], &d[3]);

    /* a tier member at max_inflight or disabled is not taken */
    d[0].max_inflight = 1;
    sy_health_begin(d[0].health, T0);
    assert_false(sy_router_prefer(&p, "d0"));
    sy_health_abandon(d[0].health);
    d[0].disabled = true;
    assert_false(sy_router_prefer(&p, "d0"));
    d[0].disabled = false;
    /* a sparse mask keeps its shape while rotating */
    memset(&p, 0, sizeof(p));
    for (int i = 0; i < 5; i++)
        p.targets[i] = &d[i];
    p.ntargets = p.navailable = 5;
    p.affinity_ok = (1u << 1) | (1u << 3) | (1u << 4);
    assert_true(sy_router_prefer(&p, "d3"));
    /* d3 first (bit 0), d0 (no), d1 (yes), d2 (no), d4 (yes) */
    assert_int_equal(p.affinity_ok, (1u << 0) | (1u << 2) | (1u << 4));
    assert_ptr_equal(p.targets[0], &d[3]);
    assert_ptr_equal(p.targets[4], &d[4]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_router_prefer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
