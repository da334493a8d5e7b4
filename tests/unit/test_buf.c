/* Unit tests for buf: the cap is exact and atomic, printf past the stack buffer, consume, take. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/buf.h"

static void test_init(void **state)
{
    sy_buf b;
    (void)state;

    sy_buf_init(&b, 10);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.max, 10);
    sy_buf_cleanup(&b);
    sy_buf_cleanup(&b); /* twice is harmless */
}

static void test_cap_exact(void **state)
{
    sy_buf b;
    (void)state;

    sy_buf_init(&b, 10);
    assert_int_equal(sy_buf_append(&b, "0123456789", 10), SY_OK);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_true(b.cap <= b.max + 1); /* never allocates past the cap */
    assert_int_equal(sy_buf_append(&b, "x", 1), SY_ETOOBIG);
    assert_int_equal(sy_buf_append(&b, "", 0), SY_OK);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    sy_buf_cleanup(&b);

    /* An append that would cross the cap appends nothing at all. */
    sy_buf_init(&b, 10);
    assert_int_equal(sy_buf_appends(&b, "abcdef"), SY_OK);
    assert_int_equal(sy_buf_appends(&b, "ghijk"), SY_ETOOBIG);
    assert_int_equal(b.len, 6);
    assert_string_equal(b.data, "abcdef");
    assert_int_equal(sy_buf_appends(&b, "ghij"), SY_OK);
    assert_string_equal(b.data, "abcdefghij");
    sy_buf_cleanup(&b);

    /* A huge length is refused without arithmetic overflow. */
    sy_buf_init(&b, 10);
    assert_int_equal(sy_buf_append(&b, "a", 1), SY_OK);
    assert_int_equal(sy_buf_append(&b, "a", SIZE_MAX), SY_ETOOBIG);
    assert_int_equal(b.len, 1);
    sy_buf_cleanup(&b);

    /* A zero cap holds only the empty string. */
    sy_buf_init(&b, 0);
    assert_int_equal(sy_buf_append(&b, "", 0), SY_OK);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    assert_int_equal(sy_buf_append(&b, "a", 1), SY_ETOOBIG);
    sy_buf_cleanup(&b);
}

static void test_growth(void **state)
{
    sy_buf b;
    char chunk[100];
    (void)state;

    memset(chunk, 'z', sizeof(chunk));
    sy_buf_init(&b, 100000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(sy_buf_append(&b, chunk, sizeof(chunk)), SY_OK);
    assert_int_equal(b.len, 100000);
    assert_int_equal(b.data[b.len], '\0');
    assert_true(b.cap <= b.max + 1);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] != 'z')
            fail_msg("byte %zu", i);
    assert_int_equal(sy_buf_append(&b, chunk, 1), SY_ETOOBIG);
    sy_buf_cleanup(&b);

    /* Binary data with NULs. */
    sy_buf_init(&b, 16);
    assert_int_equal(sy_buf_append(&b, "a\0b", 3), SY_OK);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 4);
    sy_buf_cleanup(&b);
}

static void test_unbounded_max(void **state)
{
    sy_buf b;
    (void)state;

    /* SIZE_MAX as the cap must not make max + 1 wrap to a zero-byte allocation. */
    sy_buf_init(&b, SIZE_MAX);
    assert_int_equal(sy_buf_appends(&b, "hello"), SY_OK);
    assert_int_equal(sy_buf_printf(&b, " %d", 42), SY_OK);
    assert_string_equal(b.data, "hello 42");
    assert_true(b.cap >= b.len + 1);
    sy_buf_cleanup(&b);
}

static void test_printf(void **state)
{
    sy_buf b;
    char big[1001];
    (void)state;

    sy_buf_init(&b, 4096);
    assert_int_equal(sy_buf_printf(&b, "%s=%d", "a", 1), SY_OK);
    assert_string_equal(b.data, "a=1");

    /* Around and past the 256-byte stack buffer. */
    for (size_t n = 254; n <= 258; n++) {
        sy_buf_reset(&b);
        assert_int_equal(sy_buf_printf(&b, "%0*d", (int)n, 7), SY_OK);
        assert_int_equal(b.len, n);
        assert_int_equal(strlen(b.data), n);
        assert_int_equal(b.data[n - 1], '7');
        assert_int_equal(b.data[0], n > 1 ? '0' : '7');
    }
    memset(big, 'q', 1000);
    big[1000] = '\0';
    sy_buf_reset(&b);
    assert_int_equal(sy_buf_appends(&b, "head:"), SY_OK);
    assert_int_equal(sy_buf_printf(&b, "[%s]", big), SY_OK);
    assert_int_equal(b.len, 5 + 1002);
    assert_int_equal(strncmp(b.data, "head:[qqq", 9), 0);
    assert_string_equal(b.data + b.len - 2, "q]");
    sy_buf_cleanup(&b);

    /* printf respects the cap in both the small and the large path, all or nothing. */
    sy_buf_init(&b, 300);
    assert_int_equal(sy_buf_appends(&b, "xy"), SY_OK);
    assert_int_equal(sy_buf_printf(&b, "%0*d", 299, 1), SY_ETOOBIG);
    assert_int_equal(sy_buf_printf(&b, "%0*d", 298, 1), SY_OK);
    assert_int_equal(b.len, 300);
    assert_int_equal(sy_buf_printf(&b, "%s", "z"), SY_ETOOBIG);
    assert_int_equal(sy_buf_printf(&b, "%s", ""), SY_OK);
    assert_int_equal(b.len, 300);
    sy_buf_cleanup(&b);

    sy_buf_init(&b, 5);
    assert_int_equal(sy_buf_printf(&b, "%d", 123456), SY_ETOOBIG);
    assert_int_equal(b.len, 0);
    sy_buf_cleanup(&b);
}

static void test_consume(void **state)
{
    sy_buf b;
    (void)state;

    sy_buf_init(&b, 64);
    sy_buf_consume(&b, 0); /* on a never-allocated buffer */
    sy_buf_consume(&b, 5);
    assert_int_equal(b.len, 0);

    assert_int_equal(sy_buf_appends(&b, "hello world"), SY_OK);
    sy_buf_consume(&b, 0);
    assert_string_equal(b.data, "hello world");
    sy_buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "world");
    sy_buf_consume(&b, 5);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(sy_buf_appends(&b, "abc"), SY_OK);
    sy_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");

    /* Consumed bytes free room under the cap again. */
    sy_buf_cleanup(&b);
    sy_buf_init(&b, 4);
    assert_int_equal(sy_buf_appends(&b, "abcd"), SY_OK);
    sy_buf_consume(&b, 2);
    assert_int_equal(sy_buf_appends(&b, "ef"), SY_OK);
    assert_string_equal(b.data, "cdef");
    assert_int_equal(sy_buf_appends(&b, "g"), SY_ETOOBIG);
    sy_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    assert_int_equal(sy_buf_appends(&b, "wxyz"), SY_OK);
    sy_buf_cleanup(&b);
}

static void test_take(void **state)
{
    sy_buf b;
    size_t len = 99;
    (void)state;

    sy_buf_init(&b, 64);
    assert_int_equal(sy_buf_appends(&b, "payload"), SY_OK);
    char *p = sy_buf_take(&b, &len);
    assert_string_equal(p, "payload");
    assert_int_equal(len, 7);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 64); /* the cap survives, the buffer is reusable */
    free(p);

    assert_int_equal(sy_buf_appends(&b, "again"), SY_OK);
    p = sy_buf_take(&b, NULL);
    assert_string_equal(p, "again");
    free(p);

    /* An empty, never-allocated buffer still hands out a string. */
    p = sy_buf_take(&b, &len);
    assert_non_null(p);
    assert_string_equal(p, "");
    assert_int_equal(len, 0);
    free(p);
    sy_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),   cmocka_unit_test(test_cap_exact),
        cmocka_unit_test(test_growth), cmocka_unit_test(test_unbounded_max),
        cmocka_unit_test(test_printf), cmocka_unit_test(test_consume),
        cmocka_unit_test(test_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
