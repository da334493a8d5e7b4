/* Unit tests for spend: days, estimates, pricing of a record, aggregation into the store and the
 * query's grouping and filters, the journal (replay exactly once after a restart, a sealed batch
 * that reached the store before a crash is not applied twice, a torn last line is ignored,
 * compaction), a store outage (records kept, then written once), ack callbacks, queue limits and
 * the group cap, and a store call that hangs (acks keep coming). The store is the embedded one,
 * wrapped to fail on demand; the hanging store wraps its vtable (src/store_int.h). */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/api.h"
#include "switchyard/config.h"
#include "switchyard/health.h"
#include "switchyard/metrics.h"
#include "switchyard/spend.h"
#include "switchyard/store.h"

#include "../../src/store_int.h" /* test_slow_store: a store whose writes hang on demand */

#define DAY0 20089 /* 2025-01-01 */
static const int64_t T0 = (int64_t)DAY0 * 86400000 + 3600000;

static sy_store *mem_store(void)
{
    sy_store_opts o;
    sy_store *s = NULL;

    sy_store_opts_init(&o);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    sy_store_opts_cleanup(&o);
    return s;
}

static char *tmp_dir(void)
{
    char tmpl[] = "/tmp/sy-spend-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static void rm_dir(char *d)
{
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "rm -rf '%s'", d) > 0);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(d);
}

static sy_spend_rec rec(const char *route, const char *dep, const char *key, int64_t cost)
{
    sy_spend_rec r = {
        .time_ms = T0,
        .route = route,
        .tier = "local",
        .deployment = dep,
        .model = "m-1",
        .key = key,
        .status = 200,
        .usage = {.prompt = 100, .cached = 40, .cache_write = 10, .completion = 20, .reasoning = 5},
        .cost_micro = cost,
        .counterfactual_micro = cost * 3,
        .latency_us = 1000,
        .ttft_us = 500,
    };
    return r;
}

static sy_spend *mk(sy_store *st, const char *dir)
{
    sy_spend_opts o;
    sy_spend *s = NULL;

    sy_spend_opts_init(&o);
    o.flush_ms = 60000;      /* only sync writes to the store, so tests decide when */
    o.journal_keeps_all = 0; /* the store outlives the recorder, as Redis does */
    assert_int_equal(sy_spend_new(st, dir, &o, &s), SY_OK);
    return s;
}

static sy_spend_result query(sy_spend *s, unsigned mask, const char *key)
{
    sy_spend_query q = {.from_day = DAY0 - 1, .to_day = DAY0 + 1, .group_mask = mask, .key = key};
    sy_spend_result r;

    sy_spend_result_init(&r);
    assert_int_equal(sy_spend_query_run(s, &q, &r), SY_OK);
    return r;
}

/* ---- pure helpers ------------------------------------------------------------------------- */

static void test_days(void **state)
{
    (void)state;
    int64_t d;
    char b[11];

    assert_true(sy_spend_parse_day("1970-01-01", &d));
    assert_int_equal(d, 0);
    assert_true(sy_spend_parse_day("2025-01-01", &d));
    assert_int_equal(d, DAY0);
    assert_true(sy_spend_parse_day("2024-02-29", &d));
    sy_spend_format_day(d, b);
    assert_string_equal(b, "2024-02-29");
    assert_false(sy_spend_parse_day("2023-02-29", &d));
    assert_false(sy_spend_parse_day("2025-13-01", &d));
    assert_false(sy_spend_parse_day("2025-1-01", &d));
    assert_false(sy_spend_parse_day("1969-12-31", &d));
    assert_false(sy_spend_parse_day("2025-01-0x", &d));
    assert_false(sy_spend_parse_day(NULL, &d));
    for (int64_t x = 0; x < 30000; x += 7) {
        sy_spend_format_day(x, b);
        assert_true(sy_spend_parse_day(b, &d));
        assert_int_equal(d, x);
    }
    assert_int_equal(sy_spend_dim_parse("deployment", 10), SY_DIM_DEPLOYMENT);
    assert_int_equal(sy_spend_dim_parse("deploy", 6), -1);
    assert_string_equal(sy_spend_dim_name(SY_DIM_KEY), "key");
    assert_null(sy_spend_dim_name(SY_DIM__COUNT));
}

static void test_estimate_and_price(void **state)
{
    (void)state;
    assert_int_equal(sy_spend_estimate_tokens(0), 0);
    assert_int_equal(sy_spend_estimate_tokens(1), 1);
    assert_int_equal(sy_spend_estimate_tokens(8), 2);
    assert_int_equal(sy_spend_estimate_tokens(9), 3);

    sy_price local = {.input = 0, .output = 0, .set = true};
    sy_price flag = {.input = 3,
                     .cached_input = 0.3,
                     .cache_write = 3.75,
                     .output = 15,
                     .batch_discount = 0.5,
                     .set = true};
    sy_spend_rec r = {.usage = {.prompt = 1000, .completion = 100}};
    sy_spend_price(&r, &local, &flag);
    assert_int_equal(r.cost_micro, 0);
    assert_int_equal(r.counterfactual_micro, 3000 + 1500);
    sy_spend_price(&r, &flag, NULL);
    assert_int_equal(r.cost_micro, 4500);
    assert_int_equal(r.counterfactual_micro, 4500);
    /* a batch line run through the proxy pays the normal price; only the provider's batch
     * API gets the discount */
    r.batch = true;
    sy_spend_price(&r, &flag, &flag);
    assert_int_equal(r.cost_micro, 4500);
    r.batch_discount = true;
    sy_spend_price(&r, &flag, &flag);
    assert_int_equal(r.cost_micro, 2250);
    assert_int_equal(r.counterfactual_micro, 2250);
    /* a cache hit costs nothing and saves what the answer cost when it was made */
    r.batch = false;
    r.batch_discount = false;
    r.cache_hit = true;
    sy_spend_price(&r, &flag, &flag);
    assert_int_equal(r.cost_micro, 0);
    assert_int_equal(r.counterfactual_micro, 4500);
}

/* ---- aggregation and query ------------------------------------------------------------------ */

static void test_aggregate_and_query(void **state)
{
    (void)state;
    sy_store *st = mem_store();
    sy_spend *s = mk(st, NULL);
    sy_spend_rec r;

    r = rec("auto", "local-small", "team-a", 10);
    sy_spend_record(s, &r);
    sy_spend_record(s, &r);
    r = rec("auto", "gpt-4.1", "team-b", 1000);
    r.error = true;
    r.status = 502;
    sy_spend_record(s, &r);
    r = rec("direct", "gpt-4.1", NULL, 7);
    r.cache_hit = true;
    r.usage.estimated = true;
    r.time_ms = T0 + 86400000; /* the next day */
    sy_spend_record(s, &r);
    /* awkward names survive the encoding */
    r = rec("a|b%c\"d", "dep\\x", "k|1", 1);
    sy_spend_record(s, &r);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);

    sy_spend_result res = query(s, 0, NULL);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.totals.requests, 5);
    assert_int_equal(res.totals.errors, 1);
    assert_int_equal(res.totals.prompt_tokens, 500);
    assert_int_equal(res.totals.cached_tokens, 200);
    assert_int_equal(res.totals.cache_write_tokens, 50);
    assert_int_equal(res.totals.completion_tokens, 100);
    assert_int_equal(res.totals.reasoning_tokens, 25);
    assert_int_equal(res.totals.cost_micro, 10 + 10 + 1000 + 7 + 1);
    assert_int_equal(res.totals.counterfactual_micro, 3 * (10 + 10 + 1000 + 7 + 1));
    assert_int_equal(res.totals.cache_hits, 1);
    assert_int_equal(res.totals.estimated, 1);
    assert_int_equal(res.rows[0].c.requests, 5);
    sy_spend_result_cleanup(&res);

    res = query(s, 1u << SY_DIM_DAY | 1u << SY_DIM_DEPLOYMENT, NULL);
    assert_int_equal(res.n, 4);
    assert_string_equal(res.rows[0].dims[SY_DIM_DAY], "2025-01-01");
    assert_string_equal(res.rows[0].dims[SY_DIM_DEPLOYMENT], "dep\\x");
    assert_string_equal(res.rows[1].dims[SY_DIM_DEPLOYMENT], "gpt-4.1");
    assert_int_equal(res.rows[1].c.cost_micro, 1000);
    assert_string_equal(res.rows[2].dims[SY_DIM_DEPLOYMENT], "local-small");
    assert_int_equal(res.rows[2].c.requests, 2);
    assert_string_equal(res.rows[3].dims[SY_DIM_DAY], "2025-01-02");
    assert_int_equal(res.rows[3].c.cache_hits, 1);
    assert_null(res.rows[0].dims[SY_DIM_ROUTE]);
    sy_spend_result_cleanup(&res);

    res = query(s, 1u << SY_DIM_ROUTE | 1u << SY_DIM_KEY, NULL);
    assert_int_equal(res.n, 4);
    /* sorted by decoded values: "auto" < "a|b..." ('u' < '|') */
    assert_string_equal(res.rows[0].dims[SY_DIM_ROUTE], "auto");
    assert_string_equal(res.rows[0].dims[SY_DIM_KEY], "team-a");
    assert_string_equal(res.rows[2].dims[SY_DIM_ROUTE], "a|b%c\"d");
    assert_string_equal(res.rows[2].dims[SY_DIM_KEY], "k|1");
    assert_string_equal(res.rows[3].dims[SY_DIM_ROUTE], "direct");
    assert_string_equal(res.rows[3].dims[SY_DIM_KEY], "-");
    sy_spend_result_cleanup(&res);

    /* one tenant only */
    res = query(s, 1u << SY_DIM_ROUTE, "team-a");
    assert_int_equal(res.n, 1);
    assert_int_equal(res.totals.requests, 2);
    assert_int_equal(res.totals.cost_micro, 20);
    sy_spend_result_cleanup(&res);

    /* a range that misses everything; a bad range */
    sy_spend_query q = {.from_day = DAY0 + 5, .to_day = DAY0 + 6};
    sy_spend_result_init(&res);
    assert_int_equal(sy_spend_query_run(s, &q, &res), SY_OK);
    assert_int_equal(res.n, 0);
    assert_int_equal(res.totals.requests, 0);
    q.to_day = DAY0;
    assert_int_equal(sy_spend_query_run(s, &q, &res), SY_EINVAL);
    q = (sy_spend_query){.from_day = DAY0, .to_day = DAY0 + 366};
    assert_int_equal(sy_spend_query_run(s, &q, &res), SY_EINVAL);
    sy_spend_result_cleanup(&res);

    sy_spend_stats ss;
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.recorded, 5);
    assert_int_equal(ss.dropped, 0);
    assert_false(ss.journal);
    assert_int_equal(ss.pending_groups, 0);
    sy_spend_free(s);
    sy_store_free(st);
}

/* ---- journal ----------------------------------------------------------------------------------
 */

static int64_t total_cost(sy_spend *s)
{
    sy_spend_result r = query(s, 0, NULL);
    int64_t c = r.totals.cost_micro;
    sy_spend_result_cleanup(&r);
    return c;
}

static char *journal_path(const char *dir)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/spend.journal", dir) > 0);
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 1 << 20);
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void append(const char *path, const char *text)
{
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Records made while the store was never written (the process "died" before a flush) are
 * replayed by the next start, exactly once, and the journal then holds nothing pending. */
static void test_replay_after_restart(void **state)
{
    (void)state;
    char *dir = tmp_dir(), *jp = journal_path(dir);
    sy_store *st = mem_store(), *other = mem_store();
    sy_spend_opts o;
    sy_spend *s = NULL;
    sy_spend_rec r = rec("auto", "d", "k", 123);

    /* a recorder whose store writes are held back (and go to another store when it stops):
     * the journal alone keeps the records */
    sy_spend_opts_init(&o);
    o.flush_ms = 600000;
    o.fsync = SY_SPEND_FSYNC_ALWAYS;
    o.journal_keeps_all = 0;
    assert_int_equal(sy_spend_new(other, dir, &o, &s), SY_OK);
    for (int i = 0; i < 10; i++)
        sy_spend_record(s, &r);
    /* wait until journaled without syncing to the store */
    for (int i = 0; i < 2000; i++) {
        sy_spend_stats ss;
        sy_spend_stats_get(s, &ss);
        if (ss.journaled == 10)
            break;
        usleep(1000);
    }
    /* simulate a crash: copy the journal as it is now, then let this instance finish normally
     * against a different store */
    char *before = slurp(jp);
    assert_non_null(strstr(before, "\"g\":\"2025-01-01|auto|local|d|m-1|k\""));
    sy_spend_free(s);
    sy_store_free(other);

    /* the crash image: the journal as it was (nothing applied), against the real store */
    FILE *f = fopen(jp, "wb");
    assert_non_null(f);
    fputs(before, f);
    fclose(f);
    s = mk(st, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 1230);
    sy_spend_stats ss;
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.replayed, 1);
    sy_spend_free(s);

    /* and again: the commit line was written, nothing is replayed twice */
    s = mk(st, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 1230);
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.replayed, 0);
    sy_spend_free(s);
    free(before);
    free(jp);
    rm_dir(dir);
    sy_store_free(st);
}

/* A batch sealed and written to the store whose commit line was lost (crash between the store
 * write and the commit) is retried with its own once-key: applied once, not twice. */
static void test_sealed_batch_exactly_once(void **state)
{
    (void)state;
    char *dir = tmp_dir(), *jp = journal_path(dir);
    sy_store *st = mem_store();
    sy_spend *s = mk(st, dir);
    sy_spend_rec r = rec("auto", "d", "k", 50);

    for (int i = 0; i < 4; i++)
        sy_spend_record(s, &r);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 200);
    sy_spend_free(s);

    /* drop the commit line: the journal now claims the batch was never confirmed */
    char *text = slurp(jp), *c = strstr(text, "{\"c\":");
    assert_non_null(c);
    assert_non_null(strstr(text, "{\"b\":"));
    *c = '\0';
    FILE *f = fopen(jp, "wb");
    fputs(text, f);
    fclose(f);
    free(text);

    s = mk(st, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 200); /* the once-key stopped the second application */
    sy_spend_free(s);
    free(jp);
    rm_dir(dir);
    sy_store_free(st);
}

/* SIGKILL mid-write leaves a torn last line: it is ignored and cut, the rest replays. */
static void test_torn_last_line(void **state)
{
    (void)state;
    char *dir = tmp_dir(), *jp = journal_path(dir);
    sy_store *st = mem_store();

    append(jp, "{\"g\":\"2025-01-01|auto|local|d|m|k\",\"v\":[1,0,10,0,0,5,0,700,900,0,0]}\n");
    append(jp, "{\"g\":\"2025-01-01|auto|local|d|m|k\",\"v\":[1,0,10,0,0,5,0,300,900,0,0]}\n");
    append(jp, "{\"g\":\"2025-01-01|auto|local|d|m|k\",\"v\":[1,0,10,0,0,5,0,99");
    sy_spend *s = mk(st, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    sy_spend_result res = query(s, 0, NULL);
    assert_int_equal(res.totals.requests, 2);
    assert_int_equal(res.totals.cost_micro, 1000);
    assert_int_equal(res.totals.counterfactual_micro, 1800);
    assert_int_equal(res.totals.prompt_tokens, 20);
    sy_spend_result_cleanup(&res);
    sy_spend_free(s);
    /* the torn bytes are gone: a new line was not glued to them */
    char *text = slurp(jp);
    assert_null(strstr(text, ",99"));
    free(text);

    /* garbage in the middle is skipped, lines after it still count */
    append(jp, "not json at all\n");
    append(jp, "{\"g\":\"2025-01-01|auto|local|d|m|k\",\"v\":[1,0,0,0,0,0,0,5,5,0,0]}\n");
    append(jp, "{\"g\":\"bad "
               "id\",\"v\":[1]}\n{\"g\":\"2025-01-01|a|b|c|d|e\",\"v\":[1,0,0,0,0,0,0,1,1,0,0]}\n");
    s = mk(st, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 1006);
    sy_spend_free(s);
    free(jp);
    rm_dir(dir);
    sy_store_free(st);
}

static void test_journal_locked(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    sy_store *st = mem_store();
    sy_spend *a = mk(st, dir), *b = NULL;

    assert_int_equal(sy_spend_new(st, dir, NULL, &b), SY_EINVAL);
    assert_null(b);
    sy_spend_free(a);
    assert_int_equal(sy_spend_new(st, "/proc/definitely/not/here", NULL, &b), SY_EINVAL);
    rm_dir(dir);
    sy_store_free(st);
}

/* Compaction rewrites the journal to what is pending, and everything still adds up. */
static void test_compaction(void **state)
{
    (void)state;
    char *dir = tmp_dir(), *jp = journal_path(dir);
    sy_store *st = mem_store();
    sy_spend_opts o;
    sy_spend *s = NULL;
    struct stat sb;

    sy_spend_opts_init(&o);
    o.flush_ms = 600000;
    o.journal_compact_bytes = 4096;
    o.journal_keeps_all = 0;
    assert_int_equal(sy_spend_new(st, dir, &o, &s), SY_OK);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 100; i++) {
            sy_spend_rec r = rec("auto", i % 2 ? "a" : "b", "k", 1);
            sy_spend_record(s, &r);
        }
        assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    }
    assert_int_equal(stat(jp, &sb), 0);
    assert_true(sb.st_size < 8192);
    assert_int_equal(total_cost(s), 500);
    sy_spend_free(s);
    s = mk(st, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 500);
    sy_spend_free(s);
    free(jp);
    rm_dir(dir);
    sy_store_free(st);
}

/* With the embedded store (gone with the process), the journal is the durable copy: a restart on
 * a new, empty store sees all earlier spend, also after compactions, and never twice. */
static void test_embedded_restart(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    sy_spend_opts o;
    sy_spend *s = NULL;

    sy_spend_opts_init(&o);
    o.flush_ms = 600000;
    o.journal_compact_bytes = 2048;
    for (int run = 1; run <= 3; run++) {
        sy_store *st = mem_store();
        assert_int_equal(sy_spend_new(st, dir, &o, &s), SY_OK);
        assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
        assert_int_equal(total_cost(s), (run - 1) * 100 * 7);
        for (int i = 0; i < 100; i++) {
            sy_spend_rec r = rec(i % 2 ? "a" : "b", i % 3 ? "x" : "y", "k", 7);
            sy_spend_record(s, &r);
            if (i % 25 == 0)
                assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
        }
        assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
        assert_int_equal(total_cost(s), run * 100 * 7);
        sy_spend_free(s);
        sy_store_free(st);
    }
    rm_dir(dir);
}

/* ---- store outage ------------------------------------------------------------------------------
 */

/* The Redis store fails fast (SY_EUNAVAIL) while down. Here a Redis store on a port where nothing
 * listens stands for an outage: records stay in the journal, and a recorder on a healthy store
 * (the outage over, after a restart) writes them exactly once. */
static void test_store_outage(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    sy_store_opts so;
    sy_store *down = NULL, *up = mem_store();
    json_t *cfg = json_pack("{s:s, s:i}", "url", "redis://127.0.0.1:1", "timeout_ms", 200);
    sy_spend *s;
    sy_spend_rec r = rec("auto", "d", "k", 9);

    sy_errlist errs;
    sy_errlist_init(&errs);
    sy_store_opts_init(&so);
    assert_int_equal(sy_store_config_parse(cfg, &so, &errs), SY_OK);
    sy_errlist_cleanup(&errs);
    assert_int_equal(sy_store_new(&so, &down), SY_OK);
    sy_store_opts_cleanup(&so);
    json_decref(cfg);
    assert_false(sy_store_healthy(down));

    s = mk(down, dir);
    for (int i = 0; i < 7; i++)
        sy_spend_record(s, &r);
    assert_int_equal(sy_spend_sync(s, 5000), SY_EUNAVAIL);
    sy_spend_stats ss;
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.journaled, 7);
    assert_int_equal(ss.pending_groups, 1);
    sy_spend_free(s);
    sy_store_free(down);

    s = mk(up, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 63);
    sy_spend_free(s);
    s = mk(up, dir);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), 63);
    sy_spend_free(s);
    rm_dir(dir);
    sy_store_free(up);
}

/* ---- acks, limits -------------------------------------------------------------------------- */

static int acks_durable, acks_not;

static void on_ack(void *ud, bool durable)
{
    (void)ud;
    if (durable)
        __atomic_add_fetch(&acks_durable, 1, __ATOMIC_SEQ_CST);
    else
        __atomic_add_fetch(&acks_not, 1, __ATOMIC_SEQ_CST);
}

static void test_acks_and_limits(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    sy_store *st = mem_store();
    sy_spend_opts o;
    sy_spend *s = NULL;
    sy_spend_rec r = rec("auto", "d", "k", 1);

    acks_durable = acks_not = 0;
    sy_spend_opts_init(&o);
    o.fsync = SY_SPEND_FSYNC_ALWAYS;
    assert_int_equal(sy_spend_new(st, dir, &o, &s), SY_OK);
    for (int i = 0; i < 20; i++)
        sy_spend_record_ack(s, &r, on_ack, NULL);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(__atomic_load_n(&acks_durable, __ATOMIC_SEQ_CST), 20);
    sy_spend_free(s);

    /* no journal: acks say so */
    acks_durable = acks_not = 0;
    s = mk(st, NULL);
    sy_spend_record_ack(s, &r, on_ack, NULL);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(acks_not, 1);
    sy_spend_free(s);

    /* a cap of 2 distinct groups: the rest fold into "(other)", totals exact */
    sy_spend_opts_init(&o);
    o.max_groups = 2;
    o.flush_ms = 600000;
    sy_store *st2 = mem_store();
    assert_int_equal(sy_spend_new(st2, NULL, &o, &s), SY_OK);
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof(name), "d%d", i);
        sy_spend_rec x = rec("auto", name, "k", 10);
        sy_spend_record(s, &x);
        if (i == 1)
            assert_int_equal(sy_spend_sync(s, 5000), SY_OK); /* open empties at each flush */
    }
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    sy_spend_result res = query(s, 1u << SY_DIM_DEPLOYMENT, NULL);
    assert_int_equal(res.totals.cost_micro, 50);
    assert_int_equal(res.n, 5); /* d0 d1 | d2 d3, then d4 -> (other) */
    assert_string_equal(res.rows[0].dims[SY_DIM_DEPLOYMENT], "(other)");
    sy_spend_result_cleanup(&res);
    sy_spend_free(s);
    sy_store_free(st2);

    rm_dir(dir);
    sy_store_free(st);
}

/* ---- a slow store ------------------------------------------------------------------------------
 */

/* The embedded store with hincrby_many (the spend write) held while <hold> is set: what a stopped
 * or slow Redis looks like from the store thread (a call that does not return for timeout_ms). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const sy_store_vt *real;
    bool hold;
    int inside; /* store writes entered and not returned */
    int calls;
    int acks, acks_durable, acks_inside; /* acks_inside: arrived while a store write hung */
} slow = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static sy_store_vt slow_vt;

static sy_err slow_hincrby_many(sy_store *s, sy_store_incr *ops, size_t n, const char *once_key,
                                int64_t once_ttl_ms, bool *applied)
{
    sy_err rc;

    pthread_mutex_lock(&slow.mu);
    slow.inside++;
    slow.calls++;
    pthread_cond_broadcast(&slow.cv);
    while (slow.hold)
        pthread_cond_wait(&slow.cv, &slow.mu);
    pthread_mutex_unlock(&slow.mu);
    rc = slow.real->hincrby_many(s, ops, n, once_key, once_ttl_ms, applied);
    pthread_mutex_lock(&slow.mu);
    slow.inside--;
    pthread_mutex_unlock(&slow.mu);
    return rc;
}

static void on_slow_ack(void *ud, bool durable)
{
    (void)ud;
    pthread_mutex_lock(&slow.mu);
    slow.acks++;
    slow.acks_durable += durable;
    slow.acks_inside += slow.inside > 0;
    pthread_cond_broadcast(&slow.cv);
    pthread_mutex_unlock(&slow.mu);
}

/* Waits (at most 10 s) until *<v> >= <want> under slow.mu; returns the value seen. */
static int slow_wait(const int *v, int want)
{
    struct timespec ts;
    int got;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&slow.mu);
    while (*v < want && pthread_cond_timedwait(&slow.cv, &slow.mu, &ts) == 0)
        ;
    got = *v;
    pthread_mutex_unlock(&slow.mu);
    return got;
}

/* While a store write hangs (Redis stopped or slow), records are still journaled and acked:
 * every ack arrives while the store call has not returned. When the store answers again, the
 * records held meanwhile reach it exactly once, and a restart replays nothing. */
static void test_slow_store(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    sy_store *st = mem_store();
    sy_spend_opts o;
    sy_spend *s = NULL;
    sy_spend_rec r = rec("auto", "d", "k", 7);
    sy_spend_stats ss;
    enum { N = 25 };

    slow.real = st->vt;
    slow_vt = *st->vt;
    slow_vt.hincrby_many = slow_hincrby_many;
    st->vt = &slow_vt;
    slow.hold = false;
    slow.inside = slow.calls = slow.acks = slow.acks_durable = slow.acks_inside = 0;

    sy_spend_opts_init(&o);
    o.flush_ms = 600000; /* only syncs write to the store */
    o.fsync = SY_SPEND_FSYNC_ALWAYS;
    o.journal_keeps_all = 0;
    assert_int_equal(sy_spend_new(st, dir, &o, &s), SY_OK);
    for (int i = 0; i < 3; i++)
        sy_spend_record(s, &r);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(slow.calls, 1);

    /* the next store write hangs */
    pthread_mutex_lock(&slow.mu);
    slow.hold = true;
    pthread_mutex_unlock(&slow.mu);
    sy_spend_record(s, &r);
    assert_int_equal(sy_spend_sync(s, 50), SY_ETIMEOUT);
    assert_int_equal(slow_wait(&slow.inside, 1), 1);

    for (int i = 0; i < N; i++)
        sy_spend_record_ack(s, &r, on_slow_ack, NULL);
    assert_int_equal(slow_wait(&slow.acks, N), N);
    pthread_mutex_lock(&slow.mu);
    assert_int_equal(slow.acks_durable, N);
    assert_int_equal(slow.acks_inside, N); /* every ack came before the store call returned */
    assert_int_equal(slow.inside, 1);
    assert_int_equal(slow.calls, 2);
    pthread_mutex_unlock(&slow.mu);
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.journaled, 3 + 1 + N);
    assert_int_equal(ss.batches_applied, 1);

    /* the store answers again: the hung batch and the records acked meanwhile, once each */
    pthread_mutex_lock(&slow.mu);
    slow.hold = false;
    pthread_cond_broadcast(&slow.cv);
    pthread_mutex_unlock(&slow.mu);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), (3 + 1 + N) * 7);
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.batches_applied, 3);
    assert_int_equal(ss.pending_groups, 0);
    sy_spend_free(s);

    s = mk(st, dir);
    sy_spend_stats_get(s, &ss);
    assert_int_equal(ss.replayed, 0);
    assert_int_equal(sy_spend_sync(s, 5000), SY_OK);
    assert_int_equal(total_cost(s), (3 + 1 + N) * 7);
    sy_spend_free(s);
    st->vt = slow.real;
    rm_dir(dir);
    sy_store_free(st);
}

/* Many threads record at once; the totals are exact. */
static sy_spend *g_s;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        sy_spend_rec r = rec(i % 3 ? "auto" : "direct", i % 5 ? "a" : "b", "k", 3);
        sy_spend_record(g_s, &r);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    sy_store *st = mem_store();
    sy_spend_opts o;
    pthread_t t[4];

    sy_spend_opts_init(&o);
    o.flush_ms = 5;
    assert_int_equal(sy_spend_new(st, dir, &o, &g_s), SY_OK);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(sy_spend_sync(g_s, 10000), SY_OK);
    sy_spend_result res = query(g_s, 1u << SY_DIM_ROUTE, NULL);
    assert_int_equal(res.totals.requests, 8000);
    assert_int_equal(res.totals.cost_micro, 24000);
    assert_int_equal(res.n, 2);
    sy_spend_result_cleanup(&res);
    sy_spend_free(g_s);
    rm_dir(dir);
    sy_store_free(st);
}

/* ---- the HTTP handlers (api_spend.c) through sy_api_handle ---------------------------------- */

static sy_config *api_config(void)
{
    json_t *root = json_loads("{\"auth\":{\"master_key_env\":\"SY_TEST_SPEND_MASTER\"},"
                              "\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h/v1\","
                              "\"model\":\"m\",\"price\":{\"input\":0,\"output\":0}}]}",
                              0, NULL);
    sy_config *cfg = NULL;
    sy_errlist errs;

    setenv("SY_TEST_SPEND_MASTER", "sk-master", 1);
    sy_errlist_init(&errs);
    assert_int_equal(sy_config_parse(root, NULL, &cfg, &errs, NULL), SY_OK);
    sy_errlist_cleanup(&errs);
    json_decref(root);
    return cfg;
}

/* Query arguments for the handlers: hctx is the query string ("a=1&b=2", no escapes). */
static const char *test_arg(void *hctx, const char *name)
{
    static char val[256];
    const char *q = hctx;

    while (q != NULL && *q != '\0') {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        if (eq != NULL && (size_t)(eq - q) == strlen(name) && strncmp(q, name, strlen(name)) == 0) {
            snprintf(val, sizeof(val), "%.*s", (int)(len - (size_t)(eq - q) - 1), eq + 1);
            return val;
        }
        q += len + (q[len] == '&');
    }
    return NULL;
}

static json_t *call(sy_config *cfg, sy_spend *sp, sy_metrics *m, const char *url, const char *auth,
                    int want_status, sy_reply *rep)
{
    char path[256];
    const char *qm = strchr(url, '?');

    snprintf(path, sizeof(path), "%.*s", (int)(qm != NULL ? qm - url : (long)strlen(url)), url);
    sy_api_in in = {.cfg = cfg,
                    .method = "GET",
                    .path = path,
                    .body = "",
                    .authorization = auth,
                    .spend = sp,
                    .metrics = m,
                    .inflight = 2,
                    .get_arg = test_arg,
                    .hctx = (void *)(qm != NULL ? qm + 1 : "")};
    sy_api_handle(&in, rep);
    if (rep->status != want_status)
        fail_msg("%s: status %d, want %d: %.*s", url, rep->status, want_status, (int)rep->len,
                 rep->body);
    return rep->content_type == NULL ? json_loadb(rep->body, rep->len, 0, NULL) : NULL;
}

static void test_api(void **state)
{
    (void)state;
    sy_config *cfg = api_config();
    sy_store *st = mem_store();
    sy_metrics *m = NULL;
    sy_spend_opts o;
    sy_spend *sp = NULL;
    sy_reply rep;
    json_t *j;
    const char *ok = "Bearer sk-master";

    assert_int_equal(sy_metrics_new(&m), SY_OK);
    sy_spend_opts_init(&o);
    o.metrics = m;
    o.flush_ms = 600000;
    assert_int_equal(sy_spend_new(st, NULL, &o, &sp), SY_OK);
    sy_spend_rec r = rec("auto", "a", "team", 150);
    r.time_ms = 0; /* now: the default range covers it */
    sy_spend_record(sp, &r);
    r.cost_micro = 1;
    r.counterfactual_micro = 100000;
    sy_spend_record(sp, &r);

    /* the master key is required */
    j = call(cfg, sp, m, "/v1/spend", NULL, 401, &rep);
    json_decref(j);
    free(rep.body);
    j = call(cfg, sp, m, "/v1/spend", "Bearer nope", 401, &rep);
    json_decref(j);
    free(rep.body);
    j = call(cfg, sp, m, "/metrics", NULL, 401, &rep);
    json_decref(j);
    free(rep.body);

    /* records made just before are visible: the handler syncs */
    j = call(cfg, sp, m, "/v1/spend?group_by=route,deployment", ok, 200, &rep);
    free(rep.body);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "spend");
    assert_int_equal(json_array_size(json_object_get(j, "group_by")), 2);
    json_t *t = json_object_get(j, "totals");
    assert_int_equal(json_integer_value(json_object_get(t, "requests")), 2);
    assert_int_equal(json_integer_value(json_object_get(t, "cost_micro")), 151);
    assert_true(json_real_value(json_object_get(t, "cost_usd")) == 0.000151);
    assert_int_equal(json_integer_value(json_object_get(t, "savings_micro")), 100450 - 151);
    json_t *row = json_array_get(json_object_get(j, "rows"), 0);
    assert_string_equal(json_string_value(json_object_get(row, "route")), "auto");
    assert_string_equal(json_string_value(json_object_get(row, "deployment")), "a");
    assert_null(json_object_get(row, "day"));
    json_decref(j);

    /* the USD numbers are printed as the exact decimals */
    j = call(cfg, sp, m, "/v1/spend?key=team", ok, 200, &rep);
    assert_non_null(strstr(rep.body, "\"cost_usd\":0.000151"));
    assert_non_null(strstr(rep.body, "\"key\":\"team\""));
    free(rep.body);
    json_decref(j);
    j = call(cfg, sp, m, "/v1/spend?key=other", ok, 200, &rep);
    free(rep.body);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "totals"), "requests")),
                     0);
    json_decref(j);

    /* bad parameters: 400 with the parameter named */
    static const struct {
        const char *path, *param;
    } bad[] = {
        {"/v1/spend?from=2025-13-01", "from"},
        {"/v1/spend?to=yesterday", "to"},
        {"/v1/spend?from=2025-02-01&to=2025-01-01", "from"},
        {"/v1/spend?from=2023-01-01&to=2025-01-01", "from"},
        {"/v1/spend?group_by=route,colour", "group_by"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        j = call(cfg, sp, m, bad[i].path, ok, 400, &rep);
        free(rep.body);
        json_t *e = json_object_get(j, "error");
        assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_request_error");
        assert_string_equal(json_string_value(json_object_get(e, "param")), bad[i].param);
        json_decref(j);
    }

    /* /metrics: Prometheus text with the same money */
    j = call(cfg, sp, m, "/metrics", ok, 200, &rep);
    assert_null(j);
    assert_string_equal(rep.content_type, SY_METRICS_CONTENT_TYPE);
    assert_non_null(strstr(rep.body, "switchyard_cost_usd_total{route=\"auto\",tier=\"local\","
                                     "deployment=\"a\",model=\"m-1\"} 0.000151\n"));
    assert_non_null(strstr(rep.body, "switchyard_inflight_requests 2\n"));
    assert_non_null(strstr(rep.body, "switchyard_store_up{kind=\"embedded\"} 1\n"));
    free(rep.body);

    /* the dashboard: open, HTML, Chart.js inside */
    j = call(cfg, sp, m, "/dashboard", NULL, 200, &rep);
    assert_string_equal(rep.content_type, "text/html; charset=utf-8");
    assert_true(rep.len > 100000);
    assert_int_equal(strncmp(rep.body, "<!doctype html>", 15), 0);
    assert_non_null(memmem(rep.body, rep.len, "Chart.js v", 10));
    free(rep.body);

    /* no recorder: 503, not a crash */
    j = call(cfg, NULL, NULL, "/v1/spend", ok, 503, &rep);
    json_decref(j);
    free(rep.body);
    j = call(cfg, NULL, NULL, "/metrics", ok, 503, &rep);
    json_decref(j);
    free(rep.body);

    sy_spend_free(sp);
    sy_metrics_free(m);
    sy_store_free(st);
    sy_config_unref(cfg);
    sy_health_reset_all();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_days),
        cmocka_unit_test(test_estimate_and_price),
        cmocka_unit_test(test_aggregate_and_query),
        cmocka_unit_test(test_replay_after_restart),
        cmocka_unit_test(test_sealed_batch_exactly_once),
        cmocka_unit_test(test_torn_last_line),
        cmocka_unit_test(test_journal_locked),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_embedded_restart),
        cmocka_unit_test(test_store_outage),
        cmocka_unit_test(test_acks_and_limits),
        cmocka_unit_test(test_slow_store),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
