/* Unit tests for json_util: depth scan, request body parsing (UTF-8, surrogates, NUL,
 * duplicates, shape), float32 base64, compact dump, the capped file loader (exact cap, messages
 * naming the path) and allocation failures one by one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <float.h>
#include <math.h>

#include "switchyard/json_util.h"

/* ---- allocation failure injection through jansson's allocator hooks ---- */

static long alloc_left = -1; /* allocations that still succeed; -1 = unlimited */

static void *failing_malloc(size_t n)
{
    if (alloc_left == 0)
        return NULL;
    if (alloc_left > 0)
        alloc_left--;
    return malloc(n);
}

static void fail_after(long n)
{
    alloc_left = n;
    json_set_alloc_funcs(failing_malloc, free);
}

static void alloc_normal(void)
{
    alloc_left = -1;
    json_set_alloc_funcs(malloc, free);
}

/* ---- depth ---- */

static char *nested(int depth, char open, char close)
{
    char *s = malloc((size_t)depth * 2 + 1);
    assert_non_null(s);
    memset(s, open, (size_t)depth);
    memset(s + depth, close, (size_t)depth);
    s[depth * 2] = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    for (int d = 0; d <= 70; d++) {
        char *s = nested(d, '[', ']');
        assert_int_equal(sy_json_check_depth(s, strlen(s), 64), d <= 64 ? SY_OK : SY_ETOOBIG);
        free(s);
    }
    assert_int_equal(sy_json_check_depth("{\"a\":[{\"b\":[]}]}", 16, 4), SY_OK);
    assert_int_equal(sy_json_check_depth("{\"a\":[{\"b\":[]}]}", 16, 3), SY_ETOOBIG);
    /* Siblings do not add up. */
    assert_int_equal(sy_json_check_depth("[[],[],[[]]]", 12, 3), SY_OK);
    assert_int_equal(sy_json_check_depth("1", 1, 0), SY_OK);
    assert_int_equal(sy_json_check_depth("{}", 2, 0), SY_ETOOBIG);
    assert_int_equal(sy_json_check_depth("{}", 2, -5), SY_ETOOBIG);
    assert_int_equal(sy_json_check_depth("", 0, 1), SY_OK);
}

static void test_depth_strings(void **state)
{
    (void)state;
#define DEPTH(lit, max) sy_json_check_depth(lit, sizeof(lit) - 1, max)
    assert_int_equal(DEPTH("{\"a\":\"[[[[{{{{\"}", 1), SY_OK);
    assert_int_equal(DEPTH("{\"[[[[\":1}", 1), SY_OK);
    /* An escaped quote does not end the string... */
    assert_int_equal(DEPTH("{\"a\":\"\\\"[[[[\"}", 1), SY_OK);
    /* ...but an escaped backslash before a quote does: the '[' after it count. */
    assert_int_equal(DEPTH("{\"a\":\"\\\\\",\"b\":[[]]}", 2), SY_ETOOBIG);
    assert_int_equal(DEPTH("{\"a\":\"\\\\\",\"b\":[[]]}", 3), SY_OK);
    assert_int_equal(DEPTH("{\"a\":\"\\u005b\"}", 1), SY_OK);
    /* Closers outside any bracket never take the depth below zero. */
    assert_int_equal(DEPTH("]]]]]][[", 2), SY_OK);
    assert_int_equal(DEPTH("]]]]]][[[", 2), SY_ETOOBIG);
    /* A trailing backslash at the very end must not read past the buffer. */
    assert_int_equal(DEPTH("\"\\", 1), SY_OK);
#undef DEPTH
}

/* ---- request bodies ---- */

static void assert_one_line_ascii(const char *msg)
{
    assert_true(msg[0] != '\0');
    for (const char *p = msg; *p != '\0'; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
}

static sy_err parse(const char *s, size_t n, char *msg, size_t msglen)
{
    json_t *j = NULL;
    sy_err rc = sy_json_parse_body(s, n, 64, &j, msg, msglen);
    if (rc == SY_OK) {
        assert_non_null(j);
        json_decref(j);
    } else {
        assert_null(j);
        assert_one_line_ascii(msg);
    }
    return rc;
}

#define PARSE(lit) parse(lit, sizeof(lit) - 1, msg, sizeof(msg))

static void test_parse_ok(void **state)
{
    json_t *j = NULL;
    char msg[128] = "untouched";
    const char body[] =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\xc3\xa9\"}]}";
    (void)state;

    assert_int_equal(sy_json_parse_body(body, sizeof(body) - 1, 64, &j, msg, sizeof(msg)), SY_OK);
    assert_true(json_is_object(j));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "m");
    assert_string_equal(msg, "untouched");
    json_decref(j);
    /* Whitespace around the object is fine; the buffer need not be NUL-terminated. */
    assert_int_equal(parse(" \n{ }\r\n\t{", 8, msg, sizeof(msg)), SY_OK);
}

static void test_parse_depth(void **state)
{
    char msg[128];
    json_t *j = NULL;
    (void)state;

    for (int d = 63; d <= 65; d++) {
        /* {"a":{"a":...{}}} with d objects. */
        size_t cap = (size_t)d * 6 + 1;
        char *s = malloc(cap);
        size_t n = 0;
        assert_non_null(s);
        for (int i = 0; i < d - 1; i++)
            n += (size_t)snprintf(s + n, cap - n, "{\"a\":");
        n += (size_t)snprintf(s + n, cap - n, "{");
        for (int i = 0; i < d; i++)
            s[n++] = '}';
        sy_err rc = sy_json_parse_body(s, n, 64, &j, msg, sizeof(msg));
        if (d <= 64) {
            assert_int_equal(rc, SY_OK);
            json_decref(j);
            j = NULL;
        } else {
            assert_int_equal(rc, SY_ETOOBIG);
            assert_string_equal(msg, "JSON nested deeper than 64 levels");
        }
        free(s);
    }
    /* A million '[' is rejected by the scan before jansson allocates anything. */
    size_t big = 1000000;
    char *s = malloc(big);
    assert_non_null(s);
    memset(s, '[', big);
    fail_after(0);
    assert_int_equal(sy_json_parse_body(s, big, 64, &j, msg, sizeof(msg)), SY_ETOOBIG);
    alloc_normal();
    free(s);
}

static void test_parse_invalid_utf8(void **state)
{
    char msg[128];
    (void)state;

    static const char *const bad[] = {
        "{\"a\":\"\xff\"}",                 /* never valid */
        "{\"a\":\"\xfe\"}",                 /* never valid */
        "{\"a\":\"\x80\"}",                 /* lone continuation byte */
        "{\"a\":\"\xe2\x82\"}",             /* truncated 3-byte sequence */
        "{\"a\":\"\xc3\"}",                 /* truncated 2-byte sequence */
        "{\"a\":\"\xc0\xaf\"}",             /* overlong '/' (2 bytes) */
        "{\"a\":\"\xc1\xbf\"}",             /* overlong (2 bytes) */
        "{\"a\":\"\xe0\x80\xaf\"}",         /* overlong '/' (3 bytes) */
        "{\"a\":\"\xf0\x80\x80\xaf\"}",     /* overlong '/' (4 bytes) */
        "{\"a\":\"\xed\xa0\x80\"}",         /* UTF-8-encoded surrogate U+D800 */
        "{\"a\":\"\xed\xbf\xbf\"}",         /* UTF-8-encoded surrogate U+DFFF */
        "{\"a\":\"\xf4\x90\x80\x80\"}",     /* U+110000, past Unicode */
        "{\"a\":\"\xf8\x88\x80\x80\x80\"}", /* 5-byte form */
        "{\"\xff\":1}",                     /* in a key */
        "{\"a\":1}\xff",                    /* after the value */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg[0] = '\0';
        assert_int_equal(parse(bad[i], strlen(bad[i]), msg, sizeof(msg)), SY_EJSON);
        if (i < sizeof(bad) / sizeof(bad[0]) - 1)
            assert_string_equal(msg, "invalid UTF-8 in request body");
    }
    /* The largest valid code points of each length pass. */
    assert_int_equal(PARSE("{\"a\":\"\x7f\xdf\xbf\xef\xbf\xbf\xf4\x8f\xbf\xbf\"}"), SY_OK);
}

static void test_parse_surrogates_and_nul(void **state)
{
    char msg[128];
    json_t *j = NULL;
    (void)state;

    assert_int_equal(PARSE("{\"a\":\"\\ud800\"}"), SY_EJSON);        /* lone high */
    assert_int_equal(PARSE("{\"a\":\"\\udc00\"}"), SY_EJSON);        /* lone low */
    assert_int_equal(PARSE("{\"a\":\"\\ud800\\u0041\"}"), SY_EJSON); /* high + non-low */
    assert_int_equal(PARSE("{\"a\":\"\\udc00\\ud800\"}"), SY_EJSON); /* reversed pair */
    assert_int_equal(PARSE("{\"a\":\"\\ud800x\"}"), SY_EJSON);
    assert_int_equal(PARSE("{\"\\udfff\":1}"), SY_EJSON);

    /* A proper pair decodes to one 4-byte UTF-8 sequence. */
    const char pair[] = "{\"a\":\"\\ud83d\\ude00\"}";
    assert_int_equal(sy_json_parse_body(pair, sizeof(pair) - 1, 64, &j, msg, sizeof(msg)), SY_OK);
    assert_string_equal(json_string_value(json_object_get(j, "a")), "\xf0\x9f\x98\x80");
    json_decref(j);

    /* We keep jansson's refusal of \u0000: see json_util.c. Raw NUL bytes are control
     * characters, invalid inside strings and outside them. */
    assert_int_equal(PARSE("{\"a\":\"\\u0000\"}"), SY_EJSON);
    assert_non_null(strstr(msg, "\\u0000"));
    assert_int_equal(PARSE("{\"\\u0000\":1}"), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":\"x\0y\"}"), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":1}\0"), SY_EJSON);
    assert_int_equal(PARSE("\0{\"a\":1}"), SY_EJSON);
    /* Other control characters must be escaped too. */
    assert_int_equal(PARSE("{\"a\":\"x\ny\"}"), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":\"x\\ny\"}"), SY_OK);
}

static void test_parse_duplicates(void **state)
{
    char msg[128];
    (void)state;

    assert_int_equal(PARSE("{\"a\":1,\"a\":2}"), SY_EJSON);
    assert_non_null(strstr(msg, "duplicate"));
    assert_int_equal(PARSE("{\"x\":{\"a\":1,\"b\":2,\"a\":1}}"), SY_EJSON);
    /* Keys that differ only after an escape are not duplicates, equal ones spelled
     * differently are. */
    assert_int_equal(PARSE("{\"a\":1,\"\\u0061b\":2}"), SY_OK);
    assert_int_equal(PARSE("{\"a\":1,\"\\u0061\":2}"), SY_EJSON);
    /* Same key in sibling objects is fine. */
    assert_int_equal(PARSE("{\"x\":{\"a\":1},\"y\":{\"a\":1}}"), SY_OK);
}

static void test_parse_shape(void **state)
{
    char msg[128];
    (void)state;

    static const char *const not_obj[] = {"[1]", "[]", "42", "\"s\"", "null", "true", " [{}] "};
    for (size_t i = 0; i < sizeof(not_obj) / sizeof(not_obj[0]); i++) {
        assert_int_equal(parse(not_obj[i], strlen(not_obj[i]), msg, sizeof(msg)), SY_EINVAL);
        assert_string_equal(msg, "request body must be a JSON object");
    }
    assert_int_equal(parse("", 0, msg, sizeof(msg)), SY_EJSON);
    assert_string_equal(msg, "request body is empty");
    assert_int_equal(PARSE("   "), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":1} x"), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":1}{}"), SY_EJSON);
    assert_int_equal(PARSE("{'a':1}"), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":1,}"), SY_EJSON);
    assert_int_equal(PARSE("{\"a\":NaN}"), SY_EJSON);
    assert_int_equal(PARSE("\xef\xbb\xbf{}"), SY_EJSON); /* a BOM is not accepted */
    assert_int_equal(PARSE("{\"a\":1e999}"), SY_EJSON);  /* numeric overflow */
    assert_int_equal(PARSE("{\"a\" 1}"), SY_EJSON);
    assert_true(strncmp(msg, "invalid JSON at line 1 column ", 30) == 0);
}

static void test_parse_every_prefix_is_truncated(void **state)
{
    const char body[] = "{\"model\":\"gpt\",\"n\":[1,2.5,-3e2,true,null],\"s\":\"\\u00e9\\\"\"}";
    char msg[128];
    (void)state;

    assert_int_equal(parse(body, sizeof(body) - 1, msg, sizeof(msg)), SY_OK);
    for (size_t n = 0; n < sizeof(body) - 1; n++)
        if (parse(body, n, msg, sizeof(msg)) != SY_EJSON)
            fail_msg("prefix of %zu bytes was accepted", n);
}

static void test_parse_msg_buffer(void **state)
{
    json_t *j = NULL;
    char tiny[8];
    (void)state;

    /* NULL / zero-length message buffers are allowed, a short one is truncated. */
    assert_int_equal(sy_json_parse_body("[", 1, 64, &j, NULL, 0), SY_EJSON);
    assert_int_equal(sy_json_parse_body("[", 1, 64, &j, tiny, 0), SY_EJSON);
    assert_int_equal(sy_json_parse_body("[", 1, 64, &j, tiny, sizeof(tiny)), SY_EJSON);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
    assert_null(j);
}

static void test_parse_alloc_failures(void **state)
{
    const char body[] = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],"
                        "\"temperature\":0.5,\"stop\":[\"a\",\"b\"],\"x\":{\"y\":null}}";
    char msg[128];
    sy_err rc = SY_ENOMEM;
    long n;
    (void)state;

    for (n = 0; n < 10000; n++) {
        json_t *j = NULL;
        fail_after(n);
        rc = sy_json_parse_body(body, sizeof(body) - 1, 64, &j, msg, sizeof(msg));
        alloc_normal();
        if (rc == SY_OK) {
            json_decref(j);
            break;
        }
        /* jansson reports most allocation failures as such, a few as a parse error. */
        assert_true(rc == SY_ENOMEM || rc == SY_EJSON);
        assert_null(j);
    }
    assert_int_equal(rc, SY_OK);
    assert_true(n > 5);
}

/* ---- files ---- */

/* A temporary file holding <n> bytes of <text>; the caller unlinks and frees the path. */
static char *temp_file(const char *text, size_t n)
{
    char tmpl[] = "/tmp/sy-json-util-XXXXXX";
    int fd = mkstemp(tmpl);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
    return strdup(tmpl);
}

/* A file of <size> bytes: {"a":1} followed by spaces (valid JSON at every size >= 7). */
static char *padded_file(size_t size)
{
    char *text = malloc(size);
    char *path;

    assert_non_null(text);
    memset(text, ' ', size);
    memcpy(text, "{\"a\":1}", 7);
    path = temp_file(text, size);
    free(text);
    return path;
}

/* Loads <path> with <cap> and expects <want>; on failure the one error line must equal
 * <path> followed by <suffix>. */
static void expect_load(const char *path, size_t cap, sy_err want, const char *suffix)
{
    sy_errlist errs;
    json_t *j = NULL;
    char *line = NULL;

    sy_errlist_init(&errs);
    assert_int_equal(sy_json_load_file(path, cap, &j, &errs), want);
    if (want == SY_OK) {
        assert_int_equal(errs.n, 0);
        assert_non_null(j);
        assert_int_equal(json_integer_value(json_object_get(j, "a")), 1);
        json_decref(j);
    } else {
        assert_null(j);
        assert_int_equal(errs.n, 1);
        assert_true(asprintf(&line, "%s%s", path, suffix) > 0);
        assert_string_equal(errs.items[0], line);
        free(line);
    }
    sy_errlist_cleanup(&errs);
}

static void test_load_file_cap(void **state)
{
    (void)state;
    /* Sizes around a small cap and around the 1024-byte chunks jansson pulls. */
    const size_t caps[] = {7, 64, 1023, 1024, 1025, 4096, 100000};

    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        size_t cap = caps[i];
        char *under = padded_file(cap - 1 >= 7 ? cap - 1 : 7), *exact = padded_file(cap),
             *over = padded_file(cap + 1), *way_over = padded_file(cap * 3 + 5000);
        char msg[64];

        (void)snprintf(msg, sizeof(msg), ": larger than %zu bytes", cap);
        expect_load(under, cap, SY_OK, NULL);
        expect_load(exact, cap, SY_OK, NULL);
        expect_load(over, cap, SY_ECONFIG, msg);
        expect_load(way_over, cap, SY_ECONFIG, msg);
        expect_load(way_over, cap * 3 + 5000, SY_OK, NULL);
        unlink(under);
        unlink(exact);
        unlink(over);
        unlink(way_over);
        free(under);
        free(exact);
        free(over);
        free(way_over);
    }
}

static void test_load_file_errors(void **state)
{
    (void)state;
    char *path;

    expect_load("/nonexistent/dir/x.json", 100, SY_ECONFIG,
                ": cannot open: No such file or directory");
    /* a directory opens but cannot be read */
    expect_load("/tmp", 100, SY_ECONFIG, ": read error");

    path = temp_file("{\"a\":1,\n \"a\":2}", 15);
    expect_load(path, 100, SY_ECONFIG, ":2:4: duplicate object key near '\"a\"'");
    unlink(path);
    free(path);

    path = temp_file("{\"a\":1,\n  oops}", 15);
    expect_load(path, 100, SY_ECONFIG, ":2:6: string or '}' expected near 'oops'");
    unlink(path);
    free(path);

    path = temp_file("", 0);
    expect_load(path, 100, SY_ECONFIG, ":1:0: '[' or '{' expected near end of file");
    unlink(path);
    free(path);
}

/* Every allocation failure is SY_ENOMEM (or a parse error, as jansson reports a few) with one
 * line naming the path, and nothing leaks. */
static void test_load_file_alloc_failures(void **state)
{
    (void)state;
    const char text[] = "{\"a\":1,\"b\":[1,2,{\"c\":\"hello\"}],\"d\":{\"e\":null}}";
    char *path = temp_file(text, sizeof(text) - 1);
    sy_err rc = SY_ENOMEM;
    long n;

    for (n = 0; n < 10000; n++) {
        sy_errlist errs;
        json_t *j = NULL;

        sy_errlist_init(&errs);
        fail_after(n);
        rc = sy_json_load_file(path, 1000, &j, &errs);
        alloc_normal();
        if (rc == SY_OK) {
            assert_int_equal(errs.n, 0);
            json_decref(j);
            sy_errlist_cleanup(&errs);
            break;
        }
        assert_true(rc == SY_ENOMEM || rc == SY_ECONFIG);
        assert_null(j);
        assert_int_equal(errs.n, 1);
        assert_true(strncmp(errs.items[0], path, strlen(path)) == 0);
        sy_errlist_cleanup(&errs);
    }
    assert_int_equal(rc, SY_OK);
    assert_true(n > 5);
    unlink(path);
    free(path);
}

/* ---- base64 floats ---- */

static json_t *floats(const float *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        assert_int_equal(json_array_append_new(a, json_real(v[i])), 0);
    return a;
}

static void test_b64_known_vector(void **state)
{
    (void)state;
    json_t *a = json_pack("[f,f,f]", 1.0, -2.5, 0.0);
    json_t *s = sy_json_floats_to_b64(a);
    assert_non_null(s);
    assert_string_equal(json_string_value(s), "AACAPwAAIMAAAAAA");

    json_t *back = sy_json_b64_to_floats("AACAPwAAIMAAAAAA", 16);
    assert_non_null(back);
    assert_true(json_equal(a, back));
    json_decref(a);
    json_decref(s);
    json_decref(back);

    /* Integers are numbers too. */
    a = json_pack("[i,i]", 1, -2);
    s = sy_json_floats_to_b64(a);
    assert_string_equal(json_string_value(s), "AACAPwAAAMA=");
    json_decref(a);
    json_decref(s);
}

static void test_b64_round_trip(void **state)
{
    static const float v[] = {0.1f,     -0.0f,    FLT_MIN, FLT_MAX, -FLT_MAX,
                              1.4e-45f, 3.14159f, 1e-10f,  -7.5f,   123456.789f};
    (void)state;

    /* Every length from 0 to 10 floats: 4n bytes cover all three padding cases. */
    for (size_t n = 0; n <= sizeof(v) / sizeof(v[0]); n++) {
        json_t *a = floats(v, n);
        json_t *s = sy_json_floats_to_b64(a);
        assert_non_null(s);
        size_t slen = json_string_length(s);
        assert_int_equal(slen, (n * 4 + 2) / 3 * 4);
        json_t *back = sy_json_b64_to_floats(json_string_value(s), slen);
        assert_non_null(back);
        assert_int_equal(json_array_size(back), n);
        for (size_t i = 0; i < n; i++) {
            float f = (float)json_real_value(json_array_get(back, i));
            assert_memory_equal(&f, &v[i], sizeof(f)); /* bit-exact, -0.0 included */
        }
        json_decref(a);
        json_decref(s);
        json_decref(back);
    }
}

static void test_b64_encode_rejects(void **state)
{
    json_t *x;
    (void)state;

    x = json_pack("[f,s]", 1.0, "a");
    assert_null(sy_json_floats_to_b64(x));
    json_decref(x);
    x = json_pack("[f,n]", 1.0);
    assert_null(sy_json_floats_to_b64(x));
    json_decref(x);
    x = json_pack("[[f]]", 1.0);
    assert_null(sy_json_floats_to_b64(x));
    json_decref(x);
    x = json_pack("{s:f}", "a", 1.0);
    assert_null(sy_json_floats_to_b64(x));
    json_decref(x);
    assert_null(sy_json_floats_to_b64(NULL));

    /* A double beyond float range becomes infinity, not undefined behaviour. */
    x = json_pack("[f,f]", 1e300, -1e300);
    json_t *s = sy_json_floats_to_b64(x);
    assert_string_equal(json_string_value(s), "AACAfwAAgP8=");
    json_decref(s);
    json_decref(x);
}

static void test_b64_decode_rejects(void **state)
{
    (void)state;
#define BAD(lit) assert_null(sy_json_b64_to_floats(lit, sizeof(lit) - 1))
    BAD("AAA");          /* not a multiple of 4 chars */
    BAD("AACAPw=");      /* ditto, with padding */
    BAD("AAAA");         /* 3 bytes: not whole floats */
    BAD("AAAAAAAAAA=="); /* 7 bytes */
    BAD("AACA Pw=");     /* whitespace */
    BAD("AACAPw==\n");
    BAD(" AACAPw=");
    BAD("AA!APw=="); /* character outside the alphabet */
    BAD("AACAPw-_"); /* base64url is not accepted */
    BAD("A=CAPw=="); /* padding in the middle */
    BAD("AACA=w==");
    BAD("AACAP==="); /* three padding characters */
    BAD("========");
    BAD("AACA\0w=="); /* embedded NUL */
    BAD("AADAfw==");  /* NaN bits: JSON cannot express them */
    BAD("AACAfw==");  /* +inf */
#undef BAD
    json_t *ok = sy_json_b64_to_floats("AACAPw==", 8);
    assert_non_null(ok);
    assert_int_equal(json_array_size(ok), 1);
    json_decref(ok);
    /* Only <len> bytes are read: trailing garbage outside the length is ignored. */
    ok = sy_json_b64_to_floats("AACAPw==garbage", 8);
    assert_non_null(ok);
    json_decref(ok);
    ok = sy_json_b64_to_floats("", 0);
    assert_non_null(ok);
    assert_int_equal(json_array_size(ok), 0);
    json_decref(ok);
}

static void test_b64_alloc_failures(void **state)
{
    json_t *a = json_pack("[f,f,f,f,f]", 1.0, 2.0, 3.0, 4.0, 5.0);
    json_t *s = NULL;
    json_t *back = NULL;
    long n;
    (void)state;

    for (n = 0; s == NULL && n < 1000; n++) {
        fail_after(n);
        s = sy_json_floats_to_b64(a);
        alloc_normal();
    }
    assert_non_null(s);
    for (n = 0; back == NULL && n < 1000; n++) {
        fail_after(n);
        back = sy_json_b64_to_floats(json_string_value(s), json_string_length(s));
        alloc_normal();
    }
    assert_non_null(back);
    assert_true(n > 5); /* the array and each real allocate */
    assert_true(json_equal(a, back));
    json_decref(a);
    json_decref(s);
    json_decref(back);
}

/* ---- dump ---- */

static void test_dump(void **state)
{
    size_t len = 0;
    (void)state;

    json_t *j = json_pack("{s:[i,i],s:s,s:{s:n}}", "a", 1, 2, "b", "x\xc3\xa9", "c", "d");
    char *s = sy_json_dump(j, &len);
    /* Compact separators, insertion order, UTF-8 kept as is, no newline (SSE relies on it). */
    assert_string_equal(s, "{\"a\":[1,2],\"b\":\"x\xc3\xa9\",\"c\":{\"d\":null}}");
    assert_int_equal(len, strlen(s));
    assert_null(strchr(s, '\n'));
    free(s);
    json_decref(j);

    /* Scalars dump too; len may be NULL. */
    j = json_string("a\nb");
    s = sy_json_dump(j, NULL);
    assert_string_equal(s, "\"a\\nb\"");
    free(s);
    json_decref(j);
}

static void test_dump_reals_round_trip(void **state)
{
    static const double v[] = {0.1,  1.0 / 3.0, 1e-300,       1.7976931348623157e308,
                               -0.0, 100.0,     (double)0.1f, 5e-324};
    (void)state;

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        json_t *a = json_pack("{s:f}", "v", v[i]);
        size_t len;
        char *s = sy_json_dump(a, &len);
        json_t *b = json_loadb(s, len, 0, NULL);
        assert_non_null(b);
        double got = json_real_value(json_object_get(b, "v"));
        assert_memory_equal(&got, &v[i], sizeof(got));
        free(s);
        json_decref(a);
        json_decref(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_strings),
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_depth),
        cmocka_unit_test(test_parse_invalid_utf8),
        cmocka_unit_test(test_parse_surrogates_and_nul),
        cmocka_unit_test(test_parse_duplicates),
        cmocka_unit_test(test_parse_shape),
        cmocka_unit_test(test_parse_every_prefix_is_truncated),
        cmocka_unit_test(test_parse_msg_buffer),
        cmocka_unit_test(test_parse_alloc_failures),
        cmocka_unit_test(test_load_file_cap),
        cmocka_unit_test(test_load_file_errors),
        cmocka_unit_test(test_load_file_alloc_failures),
        cmocka_unit_test(test_b64_known_vector),
        cmocka_unit_test(test_b64_round_trip),
        cmocka_unit_test(test_b64_encode_rejects),
        cmocka_unit_test(test_b64_decode_rejects),
        cmocka_unit_test(test_b64_alloc_failures),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_dump_reals_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
