/* libFuzzer target for the spend journal reader: the input is written as <dir>/spend.journal
 * and a recorder starts on it (replay), writes what it found to an embedded store and stops.
 * Checks, beyond the sanitizers: the start never fails on content (torn, garbage, huge numbers,
 * bad ids), the store then answers a query, and a second start on the journal the first one left
 * (against the same store) adds nothing: every replayed batch is committed or its once-key
 * already holds it, so nothing is applied twice. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "switchyard/spend.h"
#include "switchyard/store.h"

static char dir[64];

/* metrics.c's clock, normally from request.c (which would pull in the whole relay) */
int64_t sy_now_us(void);
int64_t sy_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t totals_cost(sy_spend *s, int64_t *requests)
{
    sy_spend_query q = {.from_day = 0, .to_day = 365};
    sy_spend_result r;
    int64_t c = 0;

    *requests = 0;
    sy_spend_result_init(&r);
    /* only the first year of dates: enough to see every effect and bounded in time */
    if (sy_spend_query_run(s, &q, &r) != SY_OK)
        abort();
    c = r.totals.cost_micro;
    *requests = r.totals.requests;
    sy_spend_result_cleanup(&r);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[128];
    sy_store_opts so;
    sy_store *st = NULL;
    sy_spend_opts o;
    sy_spend *s = NULL;
    int64_t c1, c2, r1, r2;
    FILE *f;

    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/sy-fuzz-journal-%d", (int)getpid());
        (void)mkdir(dir, 0700);
    }
    snprintf(path, sizeof(path), "%s/spend.journal", dir);
    if ((f = fopen(path, "wb")) == NULL)
        abort();
    if (size > 0 && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);

    sy_store_opts_init(&so);
    if (sy_store_new(&so, &st) != SY_OK)
        abort();
    sy_store_opts_cleanup(&so);
    sy_spend_opts_init(&o);
    o.journal_keeps_all = 0; /* the store outlives the recorder, as Redis does */
    o.fsync = SY_SPEND_FSYNC_NEVER;
    if (sy_spend_new(st, dir, &o, &s) != SY_OK)
        abort();
    if (sy_spend_sync(s, 10000) != SY_OK)
        abort();
    c1 = totals_cost(s, &r1);
    sy_spend_free(s);

    if (sy_spend_new(st, dir, &o, &s) != SY_OK)
        abort();
    if (sy_spend_sync(s, 10000) != SY_OK)
        abort();
    c2 = totals_cost(s, &r2);
    if (c1 != c2 || r1 != r2)
        abort();
    sy_spend_free(s);
    sy_store_free(st);
    return 0;
}
