/* Unit tests for sse: WHATWG line rules, events split at every byte, caps, stop, framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "switchyard/sse.h"

/* Every dispatched event is serialised as "<event>|<len>|<data>;" into one buffer so a whole
 * stream's events compare with a single string comparison. */
struct rec {
    sy_buf out;
    int n;
    int stop_after; /* return non-zero from the callback after this many events; 0 = never */
};

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    struct rec *r = ud;

    assert_non_null(event);
    assert_non_null(data);
    assert_int_equal(data[len], '\0');
    assert_int_equal(sy_buf_printf(&r->out, "%s|%zu|", event, len), SY_OK);
    assert_int_equal(sy_buf_append(&r->out, data, len), SY_OK);
    assert_int_equal(sy_buf_append(&r->out, ";", 1), SY_OK);
    r->n++;
    return r->stop_after > 0 && r->n >= r->stop_after;
}

static void rec_init(struct rec *r)
{
    sy_buf_init(&r->out, 1 << 20);
    r->n = 0;
    r->stop_after = 0;
}

static const char *rec_str(const struct rec *r) { return r->out.data != NULL ? r->out.data : ""; }

/* Feeds <s> in one piece and checks the recorded events. */
static void expect_events(const char *s, size_t n, const char *want)
{
    sy_sse_parser p;
    struct rec r;

    rec_init(&r);
    sy_sse_init(&p, 4096);
    assert_int_equal(sy_sse_feed(&p, s, n, on_event, &r), SY_OK);
    assert_string_equal(rec_str(&r), want);
    sy_sse_cleanup(&p);
    sy_buf_cleanup(&r.out);
}

#define EXPECT(lit, want) expect_events(lit, sizeof(lit) - 1, want)

static void test_basic(void **state)
{
    (void)state;
    EXPECT("data: hello\n\n", "|5|hello;");
    EXPECT("data: a\n\ndata: b\n\n", "|1|a;|1|b;");
    EXPECT("", "");
}

static void test_data_join(void **state)
{
    (void)state;
    EXPECT("data: a\ndata: b\ndata: c\n\n", "|5|a\nb\nc;");
    EXPECT("data: a\ndata:\ndata: c\n\n", "|4|a\n\nc;");
}

static void test_space_rules(void **state)
{
    (void)state;
    EXPECT("data:x\n\n", "|1|x;");     /* no space */
    EXPECT("data:  x\n\n", "|2| x;");  /* only one space is removed */
    EXPECT("data: x \n\n", "|2|x ;");  /* trailing space kept */
    EXPECT("data:\tx\n\n", "|2|\tx;"); /* a tab is not the optional space */
    EXPECT("data::x\n\n", "|2|:x;");   /* only the first colon splits */
}

static void test_field_without_colon(void **state)
{
    (void)state;
    /* "data" alone is the data field with an empty value; we dispatch it with len 0. */
    EXPECT("data\n\n", "|0|;");
    EXPECT("data\ndata\n\n", "|1|\n;");
    EXPECT("data: x\nevent\n\n", "|1|x;"); /* "event" alone sets an empty name */
    EXPECT("dataz\n\n", "");               /* an unknown field, not data */
    EXPECT("Data: x\n\n", "");             /* field names are case-sensitive */
}

static void test_comments_and_ignored(void **state)
{
    (void)state;
    EXPECT(": ping\n\n", "");
    EXPECT(":\n\n\n\n", "");
    EXPECT(": a\ndata: x\n: b\n\n", "|1|x;");
    EXPECT("id: 7\nretry: 100\nfoo: bar\ndata: x\n\n", "|1|x;");
    EXPECT("id: 7\n\n", "");                    /* no data: nothing dispatched */
    EXPECT("event: e\n\ndata: x\n\n", "|1|x;"); /* the name is reset without dispatch */
}

static void test_event_names(void **state)
{
    (void)state;
    EXPECT("event: message_start\ndata: {}\n\n", "message_start|2|{};");
    EXPECT("event: a\nevent: b\ndata: x\n\n", "b|1|x;");
    EXPECT("event: a\ndata: x\n\ndata: y\n\n", "a|1|x;|1|y;");
    EXPECT("data: x\nevent: late\n\n", "late|1|x;");
}

static void test_line_endings(void **state)
{
    (void)state;
    EXPECT("data: a\r\n\r\n", "|1|a;");
    EXPECT("data: a\r\rdata: b\r\r", "|1|a;|1|b;");
    EXPECT("data: a\r\ndata: b\n\rdata: c\r\n\n", "|3|a\nb;|1|c;");
    /* "\n\r" is two line ends, so an LF-terminated line followed by CR is a blank line. */
    EXPECT("data: a\n\r", "|1|a;");
    /* CR CR LF: the first CR ends the data line, "\r\n" is the blank line. */
    EXPECT("data: a\r\r\n", "|1|a;");
}

static void test_nul_in_data(void **state)
{
    (void)state;
    EXPECT("data: a\0b\n\n", "|3|a\0b;");
}

/* A stream that exercises every rule; results must not depend on how it is chunked. */
static const char stream[] = ": keep-alive\r\n"
                             "event: message_start\r\n"
                             "data: {\"type\":\"message_start\"}\r\n"
                             "\r\n"
                             "data: line1\n"
                             "data:line2\n"
                             "id: 3\n"
                             "\n"
                             "event: x\r"
                             "data\r"
                             "\r"
                             "retry: 5\n"
                             "data: [DONE]\n"
                             "\n"
                             "data: unterminated";
static const char stream_want[] = "message_start|24|{\"type\":\"message_start\"};"
                                  "|11|line1\nline2;"
                                  "x|0|;"
                                  "|6|[DONE];";

static void feed_chunks(const size_t *cuts, size_t ncuts, struct rec *r)
{
    sy_sse_parser p;
    size_t n = sizeof(stream) - 1;
    size_t at = 0;

    sy_sse_init(&p, 4096);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        assert_int_equal(sy_sse_feed(&p, stream + at, end - at, on_event, r), SY_OK);
        at = end;
    }
    assert_true(sy_sse_pending(&p)); /* "data: unterminated" is a cut event */
    sy_sse_cleanup(&p);
}

static void test_whole_stream(void **state)
{
    struct rec r;
    (void)state;

    rec_init(&r);
    feed_chunks(NULL, 0, &r);
    assert_string_equal(rec_str(&r), stream_want);
    sy_buf_cleanup(&r.out);
}

static void test_every_split_pair(void **state)
{
    size_t n = sizeof(stream) - 1;
    (void)state;

    /* Every pair of cut points covers every single split and every 3-piece split. */
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            size_t cuts[2] = {a, b};
            struct rec r;
            rec_init(&r);
            feed_chunks(cuts, 2, &r);
            if (strcmp(rec_str(&r), stream_want) != 0)
                fail_msg("cuts %zu,%zu gave %s", a, b, rec_str(&r));
            sy_buf_cleanup(&r.out);
        }
    }
}

static void test_one_byte_at_a_time(void **state)
{
    size_t n = sizeof(stream) - 1;
    size_t cuts[sizeof(stream)];
    struct rec r;
    (void)state;

    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    rec_init(&r);
    feed_chunks(cuts, n - 1, &r);
    assert_string_equal(rec_str(&r), stream_want);
    sy_buf_cleanup(&r.out);
}

static void test_random_chunks(void **state)
{
    size_t n = sizeof(stream) - 1;
    uint32_t seed = 12345;
    (void)state;

    for (int iter = 0; iter < 2000; iter++) {
        size_t cuts[sizeof(stream)];
        size_t ncuts = 0;
        size_t at = 0;
        struct rec r;
        while (at < n) {
            seed = seed * 1103515245u + 12345u; /* fixed LCG: failures reproduce */
            at += 1 + (seed >> 16) % 9;
            if (at < n)
                cuts[ncuts++] = at;
        }
        rec_init(&r);
        feed_chunks(cuts, ncuts, &r);
        assert_string_equal(rec_str(&r), stream_want);
        sy_buf_cleanup(&r.out);
    }
}

static void test_crlf_split_across_feeds(void **state)
{
    sy_sse_parser p;
    struct rec r;
    (void)state;

    rec_init(&r);
    sy_sse_init(&p, 64);
    assert_int_equal(sy_sse_feed(&p, "data: a\r", 8, on_event, &r), SY_OK);
    assert_int_equal(sy_sse_feed(&p, "\n", 1, on_event, &r), SY_OK);
    assert_int_equal(r.n, 0); /* the LF completed the CRLF, it is not a blank line */
    assert_int_equal(sy_sse_feed(&p, "\r", 1, on_event, &r), SY_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(sy_sse_feed(&p, "\n", 1, on_event, &r), SY_OK);
    assert_int_equal(sy_sse_feed(&p, "\n", 1, on_event, &r), SY_OK);
    assert_int_equal(r.n, 1);
    assert_false(sy_sse_pending(&p));
    sy_sse_cleanup(&p);
    sy_buf_cleanup(&r.out);
}

static void test_pending(void **state)
{
    sy_sse_parser p;
    struct rec r;
    (void)state;

    rec_init(&r);
    sy_sse_init(&p, 64);
    assert_false(sy_sse_pending(&p));
    assert_int_equal(sy_sse_feed(&p, ": c\n", 4, on_event, &r), SY_OK);
    assert_false(sy_sse_pending(&p));
    assert_int_equal(sy_sse_feed(&p, "da", 2, on_event, &r), SY_OK);
    assert_true(sy_sse_pending(&p)); /* partial line */
    assert_int_equal(sy_sse_feed(&p, "ta: x\n", 6, on_event, &r), SY_OK);
    assert_true(sy_sse_pending(&p)); /* undispatched data */
    assert_int_equal(sy_sse_feed(&p, "\n", 1, on_event, &r), SY_OK);
    assert_false(sy_sse_pending(&p));
    assert_int_equal(r.n, 1);
    sy_sse_cleanup(&p);
    sy_buf_cleanup(&r.out);
}

static void test_oversize(void **state)
{
    sy_sse_parser p;
    struct rec r;
    char big[64];
    (void)state;

    memset(big, 'x', sizeof(big));
    rec_init(&r);

    /* A line of exactly max_event bytes fits; one more byte does not. */
    sy_sse_init(&p, 16);
    assert_int_equal(sy_sse_feed(&p, "data: 0123456789", 16, on_event, &r), SY_OK);
    assert_int_equal(sy_sse_feed(&p, "\n\n", 2, on_event, &r), SY_OK);
    assert_int_equal(sy_sse_feed(&p, "data: 0123456789a", 17, on_event, &r), SY_ETOOBIG);
    sy_sse_cleanup(&p);
    assert_string_equal(rec_str(&r), "|10|0123456789;");

    /* A line with no end, fed in small pieces. */
    sy_sse_init(&p, 16);
    sy_err rc = SY_OK;
    for (int i = 0; i < 10 && rc == SY_OK; i++)
        rc = sy_sse_feed(&p, big, 4, on_event, &r);
    assert_int_equal(rc, SY_ETOOBIG);
    sy_sse_cleanup(&p);

    /* Many short data lines whose joined data passes the cap. */
    sy_sse_init(&p, 16);
    rc = SY_OK;
    for (int i = 0; i < 10 && rc == SY_OK; i++)
        rc = sy_sse_feed(&p, "data: abcd\n", 11, on_event, &r);
    assert_int_equal(rc, SY_ETOOBIG);
    sy_sse_cleanup(&p);

    /* A long comment is a long line too. */
    sy_sse_init(&p, 16);
    assert_int_equal(sy_sse_feed(&p, ":", 1, on_event, &r), SY_OK);
    assert_int_equal(sy_sse_feed(&p, big, sizeof(big), on_event, &r), SY_ETOOBIG);
    sy_sse_cleanup(&p);

    assert_int_equal(r.n, 1);
    sy_buf_cleanup(&r.out);
}

static void test_stop(void **state)
{
    sy_sse_parser p;
    struct rec r;
    const char s[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    (void)state;

    rec_init(&r);
    r.stop_after = 1;
    sy_sse_init(&p, 64);
    assert_int_equal(sy_sse_feed(&p, s, sizeof(s) - 1, on_event, &r), SY_OK);
    assert_int_equal(r.n, 1);
    assert_true(p.stopped);
    /* Later input, even oversize garbage, is ignored. */
    assert_int_equal(sy_sse_feed(&p, s, sizeof(s) - 1, on_event, &r), SY_OK);
    char big[200];
    memset(big, 'x', sizeof(big));
    assert_int_equal(sy_sse_feed(&p, big, sizeof(big), on_event, &r), SY_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(rec_str(&r), "|1|1;");
    sy_sse_cleanup(&p);

    /* Stop on the second event in a byte-by-byte feed. */
    sy_buf_reset(&r.out);
    r.n = 0;
    r.stop_after = 2;
    sy_sse_init(&p, 64);
    for (size_t i = 0; i < sizeof(s) - 1; i++)
        assert_int_equal(sy_sse_feed(&p, s + i, 1, on_event, &r), SY_OK);
    assert_string_equal(rec_str(&r), "|1|1;|1|2;");
    sy_sse_cleanup(&p);
    sy_buf_cleanup(&r.out);
}

static void test_frame(void **state)
{
    sy_buf b;
    (void)state;

    sy_buf_init(&b, 1024);
    assert_int_equal(sy_sse_frame(&b, "{\"a\":1}", 7), SY_OK);
    assert_string_equal(b.data, "data: {\"a\":1}\n\n");
    assert_int_equal(sy_sse_frame_event(&b, "ping", "{}", 2), SY_OK);
    assert_string_equal(b.data, "data: {\"a\":1}\n\nevent: ping\ndata: {}\n\n");
    assert_int_equal(sy_sse_frame(&b, "", 0), SY_OK);
    assert_string_equal(b.data + b.len - 8, "data: \n\n");
    sy_buf_reset(&b);
    assert_int_equal(sy_sse_frame_parts(&b, "{\"a\":", 5, "1}", 2), SY_OK);
    assert_string_equal(b.data, "data: {\"a\":1}\n\n");
    sy_buf_cleanup(&b);
}

static void test_frame_errors_leave_buffer_intact(void **state)
{
    sy_buf b;
    (void)state;

    /* "data: x\n\n" is 9 bytes: it fits a cap of 9 exactly, not 8. */
    sy_buf_init(&b, 9);
    assert_int_equal(sy_sse_frame(&b, "x", 1), SY_OK);
    assert_int_equal(b.len, 9);
    sy_buf_cleanup(&b);

    sy_buf_init(&b, 8);
    assert_int_equal(sy_buf_appends(&b, "ab"), SY_OK);
    assert_int_equal(sy_sse_frame(&b, "x", 1), SY_ETOOBIG);
    assert_int_equal(sy_sse_frame_event(&b, "e", "", 0), SY_ETOOBIG);
    assert_int_equal(sy_sse_frame_parts(&b, "x", 1, "", 0), SY_ETOOBIG);
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "ab");
    sy_buf_cleanup(&b);

    /* A newline in the payload or event name would inject a field or a whole event. */
    sy_buf_init(&b, 1024);
    assert_int_equal(sy_sse_frame(&b, "a\nb", 3), SY_EINVAL);
    assert_int_equal(sy_sse_frame(&b, "a\rb", 3), SY_EINVAL);
    assert_int_equal(sy_sse_frame_event(&b, "e\n", "x", 1), SY_EINVAL);
    assert_int_equal(sy_sse_frame_parts(&b, "a", 1, "\nb", 2), SY_EINVAL);
    assert_int_equal(sy_sse_frame_parts(&b, "a\r", 2, "b", 1), SY_EINVAL);
    assert_int_equal(b.len, 0);
    sy_buf_cleanup(&b);
}

static void test_frame_round_trip(void **state)
{
    sy_buf b;
    sy_sse_parser p;
    struct rec r;
    (void)state;

    sy_buf_init(&b, 1024);
    rec_init(&r);
    assert_int_equal(sy_sse_frame(&b, "{\"x\":\" y \"}", 11), SY_OK);
    assert_int_equal(sy_sse_frame_event(&b, "content_block_delta", " lead", 5), SY_OK);
    sy_sse_init(&p, 1024);
    assert_int_equal(sy_sse_feed(&p, b.data, b.len, on_event, &r), SY_OK);
    assert_false(sy_sse_pending(&p));
    /* The framer's single space is stripped, the payload's own leading space survives. */
    assert_string_equal(rec_str(&r), "|11|{\"x\":\" y \"};content_block_delta|5| lead;");
    sy_sse_cleanup(&p);
    sy_buf_cleanup(&r.out);
    sy_buf_cleanup(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_data_join),
        cmocka_unit_test(test_space_rules),
        cmocka_unit_test(test_field_without_colon),
        cmocka_unit_test(test_comments_and_ignored),
        cmocka_unit_test(test_event_names),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_nul_in_data),
        cmocka_unit_test(test_whole_stream),
        cmocka_unit_test(test_every_split_pair),
        cmocka_unit_test(test_one_byte_at_a_time),
        cmocka_unit_test(test_random_chunks),
        cmocka_unit_test(test_crlf_split_across_feeds),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_frame),
        cmocka_unit_test(test_frame_errors_leave_buffer_intact),
        cmocka_unit_test(test_frame_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
