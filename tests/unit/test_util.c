/* Unit tests for util: the wall clock in ms and random ids. */
#include "switchyard/util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static void test_wall_ms(void **state)
{
    (void)state;
    int64_t before = (int64_t)time(NULL) * 1000;
    int64_t ms = sy_wall_ms();
    int64_t after = ((int64_t)time(NULL) + 1) * 1000;
    assert_true(ms >= before && ms < after);
}

static void test_rand_id(void **state)
{
    (void)state;
    char a[64], b[64];
    assert_true(sy_rand_id(a, sizeof(a), "batch_", 24, SY_ID_HEX));
    assert_int_equal(strlen(a), 6 + 24);
    assert_memory_equal(a, "batch_", 6);
    assert_int_equal(strspn(a + 6, SY_ID_HEX), 24);
    assert_true(sy_rand_id(b, sizeof(b), "batch_", 24, SY_ID_HEX));
    assert_string_not_equal(a, b);

    /* base62, no prefix, filling the buffer exactly */
    char c[25];
    assert_true(sy_rand_id(c, sizeof(c), "", 24, SY_ID_B62));
    assert_int_equal(strlen(c), 24);
    assert_int_equal(strspn(c, SY_ID_B62), 24);

    /* does not fit, bad alphabets: false and "" */
    assert_false(sy_rand_id(c, sizeof(c), "", 25, SY_ID_HEX));
    assert_string_equal(c, "");
    assert_false(sy_rand_id(c, sizeof(c), "file-", 20, SY_ID_HEX));
    assert_string_equal(c, "");
    assert_false(sy_rand_id(c, sizeof(c), "", 4, "a"));
    assert_true(sy_rand_id(c, sizeof(c), "", 0, SY_ID_HEX));
    assert_string_equal(c, "");

    /* every character of the alphabet turns up */
    char big[4001];
    assert_true(sy_rand_id(big, sizeof(big), "", 4000, SY_ID_B62));
    for (const char *p = SY_ID_B62; *p; p++)
        assert_non_null(strchr(big, *p));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wall_ms),
        cmocka_unit_test(test_rand_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
