/* metrics: the Prometheus registry and its text exposition.
 *
 * Design decision: series are never freed while the registry lives, so the exposition copies
 * the series pointers under the mutex and reads the counters without it (relaxed atomics), and
 * an observer holds the mutex only for the hash lookup. */
#include "switchyard/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard/health.h"
#include "switchyard/request.h"

#define NBUCKETS 14
static const double bucket_s[NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,  5,     10,   30,  60,   120};
static const int64_t bucket_us[NBUCKETS] = {5000,     10000,    25000,    50000,    100000,
                                            250000,   500000,   1000000,  2500000,  5000000,
                                            10000000, 30000000, 60000000, 120000000};

enum { TK_PROMPT, TK_CACHED, TK_CACHE_WRITE, TK_COMPLETION, TK_REASONING, NTOK };
static const char *const token_kind[NTOK] = {"prompt", "cached", "cache_write", "completion",
                                             "reasoning"};

#define HASH_BUCKETS 1024
#define OTHER "(other)"

typedef struct hist {
    uint64_t b[NBUCKETS]; /* per bucket (not cumulative); +Inf is count */
    uint64_t count;
    uint64_t sum_us;
} hist;

typedef struct series {
    struct series *next; /* hash chain */
    char *lbl;           /* 'route="..",tier="..",deployment="..",model=".."', escaped */
    int status_code[SY_METRICS_MAX_STATUS]; /* written under the registry mutex */
    uint64_t status_n[SY_METRICS_MAX_STATUS];
    uint64_t status_other;
    uint64_t errors;
    uint64_t tokens[NTOK];
    int64_t cost_micro;
    int64_t cf_micro;
    uint64_t hits, misses, estimated;
    hist lat, ttft;
} series;

struct sy_metrics {
    pthread_mutex_t mu;
    series *hash[HASH_BUCKETS];
    series **all; /* insertion order */
    size_t n, cap;
    series *other;
    int64_t start_s;
    /* batch queue (batch_run.c): counters and the sweeper's last gauges, atomics */
    uint64_t batch_lines[4]; /* completed, failed, retried, skipped */
    int64_t batch_depth;     /* -1 = never measured */
    int64_t batch_status[8];
};

static const char *const batch_results[4] = {"completed", "failed", "retried", "skipped"};
static const char *const batch_statuses[8] = {"validating", "failed",     "in_progress",
                                              "finalizing", "completed",  "expired",
                                              "cancelling", "cancelled"};

void sy_metrics_batch_line(sy_metrics *m, const char *result)
{
    if (m == NULL || result == NULL)
        return;
    for (int i = 0; i < 4; i++)
        if (strcmp(batch_results[i], result) == 0)
            __atomic_fetch_add(&m->batch_lines[i], 1, __ATOMIC_RELAXED);
}

void sy_metrics_batch_gauges(sy_metrics *m, int64_t queue_depth, const int64_t by_status[8])
{
    if (m == NULL)
        return;
    __atomic_store_n(&m->batch_depth, queue_depth, __ATOMIC_RELAXED);
    for (int i = 0; i < 8; i++)
        __atomic_store_n(&m->batch_status[i], by_status[i], __ATOMIC_RELAXED);
}

static sy_err render_batch(sy_metrics *m, sy_buf *out);

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)

sy_err sy_metrics_new(sy_metrics **out)
{
    sy_metrics *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return SY_ENOMEM;
    pthread_mutex_init(&m->mu, NULL);
    m->start_s = (int64_t)time(NULL);
    m->batch_depth = -1;
    *out = m;
    return SY_OK;
}

void sy_metrics_free(sy_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->all[i]->lbl);
        free(m->all[i]);
    }
    free(m->all);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Appends <v> escaped as a label value (backslash, quote, newline), cut at
 * SY_METRICS_LABEL_MAX bytes of input. */
static sy_err esc(sy_buf *b, const char *v)
{
    char tmp[SY_METRICS_LABEL_MAX * 2 + 1];
    size_t n = 0;

    if (v == NULL || v[0] == '\0')
        v = "-";
    for (size_t i = 0; v[i] != '\0' && i < SY_METRICS_LABEL_MAX; i++) {
        char c = v[i];
        if (c == '\\' || c == '"') {
            tmp[n++] = '\\';
            tmp[n++] = c;
        } else if (c == '\n') {
            tmp[n++] = '\\';
            tmp[n++] = 'n';
        } else {
            tmp[n++] = c;
        }
    }
    return sy_buf_append(b, tmp, n);
}

static char *make_lbl(const char *route, const char *tier, const char *dep, const char *model)
{
    sy_buf b;
    sy_err rc;

    sy_buf_init(&b, 8192);
    rc = sy_buf_appends(&b, "route=\"");
    if (rc == SY_OK)
        rc = esc(&b, route);
    if (rc == SY_OK)
        rc = sy_buf_appends(&b, "\",tier=\"");
    if (rc == SY_OK)
        rc = esc(&b, tier);
    if (rc == SY_OK)
        rc = sy_buf_appends(&b, "\",deployment=\"");
    if (rc == SY_OK)
        rc = esc(&b, dep);
    if (rc == SY_OK)
        rc = sy_buf_appends(&b, "\",model=\"");
    if (rc == SY_OK)
        rc = esc(&b, model);
    if (rc == SY_OK)
        rc = sy_buf_appends(&b, "\"");
    if (rc != SY_OK) {
        sy_buf_cleanup(&b);
        return NULL;
    }
    return sy_buf_take(&b, NULL);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Under m->mu: appends a new series for <lbl> (taken). NULL when out of memory. */
static series *add_series(sy_metrics *m, char *lbl, size_t h)
{
    series *s;

    if (m->n == m->cap) {
        size_t cap = m->cap == 0 ? 16 : m->cap * 2;
        series **all = realloc(m->all, cap * sizeof(*all));
        if (all == NULL) {
            free(lbl);
            return NULL;
        }
        m->all = all;
        m->cap = cap;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        free(lbl);
        return NULL;
    }
    s->lbl = lbl;
    s->next = m->hash[h];
    m->hash[h] = s;
    m->all[m->n++] = s;
    return s;
}

/* Under m->mu: the series for <lbl> (taken), created if there is room; else the "(other)" one
 * (allowed past the cap). NULL only when out of memory. */
static series *intern(sy_metrics *m, char *lbl)
{
    size_t h = hash_str(lbl) % HASH_BUCKETS;

    for (series *s = m->hash[h]; s != NULL; s = s->next) {
        if (strcmp(s->lbl, lbl) == 0) {
            free(lbl);
            return s;
        }
    }
    if (m->n < SY_METRICS_MAX_SERIES)
        return add_series(m, lbl, h);
    free(lbl);
    if (m->other == NULL) {
        char *o = make_lbl(OTHER, OTHER, OTHER, OTHER);
        if (o == NULL)
            return NULL;
        m->other = add_series(m, o, hash_str(o) % HASH_BUCKETS);
    }
    return m->other;
}

static void observe_hist(hist *h, int64_t us)
{
    if (us < 0)
        return;
    for (int i = 0; i < NBUCKETS; i++) {
        if (us <= bucket_us[i]) {
            ADD(h->b[i], 1);
            break;
        }
    }
    ADD(h->sum_us, (uint64_t)us);
    ADD(h->count, 1);
}

static uint64_t nn(int64_t v) { return v > 0 ? (uint64_t)v : 0; }

void sy_metrics_observe_request(sy_metrics *m, const sy_spend_rec *r)
{
    char *lbl;
    series *s;
    int slot = -1;

    if (m == NULL)
        return;
    if ((lbl = make_lbl(r->route, r->tier, r->deployment, r->model)) == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    s = intern(m, lbl);
    if (s != NULL && r->status > 0) {
        for (int i = 0; i < SY_METRICS_MAX_STATUS && slot < 0; i++) {
            int code = __atomic_load_n(&s->status_code[i], __ATOMIC_RELAXED);
            if (code == r->status) {
                slot = i;
            } else if (code == 0) {
                __atomic_store_n(&s->status_code[i], r->status, __ATOMIC_RELAXED);
                slot = i;
            }
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (s == NULL)
        return;
    if (slot >= 0)
        ADD(s->status_n[slot], 1);
    else
        ADD(s->status_other, 1);
    if (r->error)
        ADD(s->errors, 1);
    ADD(s->tokens[TK_PROMPT], nn(r->usage.prompt));
    ADD(s->tokens[TK_CACHED], nn(r->usage.cached));
    ADD(s->tokens[TK_CACHE_WRITE], nn(r->usage.cache_write));
    ADD(s->tokens[TK_COMPLETION], nn(r->usage.completion));
    ADD(s->tokens[TK_REASONING], nn(r->usage.reasoning));
    ADD(s->cost_micro, r->cost_micro);
    ADD(s->cf_micro, r->counterfactual_micro);
    if (r->cache_hit)
        ADD(s->hits, 1);
    else if (r->cache_lookup)
        ADD(s->misses, 1);
    if (r->usage.estimated)
        ADD(s->estimated, 1);
    observe_hist(&s->lat, r->latency_us);
    observe_hist(&s->ttft, r->ttft_us);
}

/* ---- exposition ----------------------------------------------------------------------------- */

static sy_err head(sy_buf *b, const char *name, const char *type, const char *help)
{
    return sy_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One unlabelled sample with its HELP and TYPE lines. */
static sy_err scalar(sy_buf *b, const char *name, const char *type, const char *help,
                     unsigned long long v)
{
    sy_err rc = head(b, name, type, help);
    return rc == SY_OK ? sy_buf_printf(b, "%s %llu\n", name, v) : rc;
}

static sy_err usd(sy_buf *b, const char *name, const char *lbl, int64_t micro)
{
    char u[SY_USD_BUF];

    return sy_buf_printf(b, "%s{%s} %s\n", name, lbl, sy_usd_format(micro, u));
}

static sy_err histogram(sy_buf *b, const char *name, const char *help, series *const *v, size_t n,
                        size_t off)
{
    sy_err rc = head(b, name, "histogram", help);

    for (size_t i = 0; i < n && rc == SY_OK; i++) {
        const hist *h = (const hist *)((const char *)v[i] + off);
        uint64_t cum = 0, count = LOAD(h->count);
        char le[32], sum[SY_USD_BUF];
        if (count == 0)
            continue;
        for (int k = 0; k < NBUCKETS && rc == SY_OK; k++) {
            cum += LOAD(h->b[k]);
            snprintf(le, sizeof(le), "%g", bucket_s[k]);
            rc = sy_buf_printf(b, "%s_bucket{%s,le=\"%s\"} %llu\n", name, v[i]->lbl, le,
                               (unsigned long long)cum);
        }
        /* the count is read last: +Inf must not be below a bucket read before it */
        if (count < cum)
            count = cum;
        if (rc == SY_OK)
            rc = sy_buf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, v[i]->lbl,
                               (unsigned long long)count);
        /* microseconds are micro-units: the same exact formatter as dollars */
        if (rc == SY_OK)
            rc = sy_buf_printf(b, "%s_sum{%s} %s\n%s_count{%s} %llu\n", name, v[i]->lbl,
                               sy_usd_format((int64_t)LOAD(h->sum_us), sum), name, v[i]->lbl,
                               (unsigned long long)count);
    }
    return rc;
}

static const char *breaker_name(sy_breaker_state st)
{
    return st == SY_BREAKER_OPEN ? "open" : st == SY_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

static sy_err render_deployments(sy_buf *b, const sy_config *cfg)
{
    sy_err rc = head(b, "switchyard_breaker_state", "gauge",
                     "Circuit breaker per deployment: 0 closed, 1 open, 2 half-open.");
    int64_t now = sy_now_us();

    for (size_t i = 0; i < cfg->ndeployments && rc == SY_OK; i++) {
        const sy_deployment *d = &cfg->deployments[i];
        sy_breaker_state st =
            d->health != NULL ? sy_health_breaker(d->health, now) : SY_BREAKER_CLOSED;
        sy_buf l;
        sy_buf_init(&l, 1024);
        rc = esc(&l, d->name);
        if (rc == SY_OK)
            rc = sy_buf_printf(b, "switchyard_breaker_state{deployment=\"%s\",state=\"%s\"} %d\n",
                               l.data, breaker_name(st), (int)st);
        sy_buf_cleanup(&l);
    }
    if (rc == SY_OK)
        rc = head(b, "switchyard_deployment_inflight", "gauge",
                  "Upstream attempts in flight per deployment.");
    for (size_t i = 0; i < cfg->ndeployments && rc == SY_OK; i++) {
        const sy_deployment *d = &cfg->deployments[i];
        sy_buf l;
        sy_buf_init(&l, 1024);
        rc = esc(&l, d->name);
        if (rc == SY_OK)
            rc = sy_buf_printf(
                b, "switchyard_deployment_inflight{deployment=\"%s\"} %d\n", l.data,
                d->health != NULL ? __atomic_load_n(&d->health->inflight, __ATOMIC_RELAXED) : 0);
        sy_buf_cleanup(&l);
    }
    return rc;
}

static sy_err render_spend(sy_buf *b, sy_spend *sp)
{
    sy_spend_stats st;
    sy_err rc = SY_OK;

    sy_spend_stats_get(sp, &st);
    const struct {
        const char *name, *type, *help;
        unsigned long long v;
    } rows[] = {
        {"switchyard_spend_queued_records", "gauge",
         "Spend records waiting for the journal writer.", st.queued},
        {"switchyard_spend_pending_groups", "gauge",
         "Aggregated spend groups not yet written to the store.", st.pending_groups},
        {"switchyard_spend_journal_bytes", "gauge", "Size of the spend journal.",
         st.journal_bytes},
        {"switchyard_spend_dropped_total", "counter",
         "Spend records dropped (queue full or out of memory).", st.dropped},
        {"switchyard_spend_store_errors_total", "counter",
         "Failed writes of spend batches to the store (retried from the journal).",
         st.store_errors},
        {"switchyard_spend_journal_errors_total", "counter",
         "Failed writes or fsyncs of the spend journal.", st.journal_errors},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]) && rc == SY_OK; i++)
        rc = scalar(b, rows[i].name, rows[i].type, rows[i].help, rows[i].v);
    return rc;
}

sy_err sy_metrics_render(sy_metrics *m, const sy_metrics_src *src, sy_buf *out)
{
    series **v = NULL;
    size_t n;
    sy_err rc = SY_ENOMEM;

    pthread_mutex_lock(&m->mu);
    n = m->n;
    if (n > 0 && (v = malloc(n * sizeof(*v))) != NULL)
        memcpy(v, m->all, n * sizeof(*v));
    pthread_mutex_unlock(&m->mu);
    if (n > 0 && v == NULL)
        return SY_ENOMEM;

    rc = head(out, "switchyard_requests_total", "counter",
              "Requests finished, by the HTTP status sent to the client.");
    for (size_t i = 0; i < n && rc == SY_OK; i++) {
        for (int k = 0; k < SY_METRICS_MAX_STATUS && rc == SY_OK; k++) {
            uint64_t c = LOAD(v[i]->status_n[k]);
            int code = LOAD(v[i]->status_code[k]);
            if (c > 0 && code != 0)
                rc = sy_buf_printf(out, "switchyard_requests_total{%s,status=\"%d\"} %llu\n",
                                   v[i]->lbl, code, (unsigned long long)c);
        }
        if (rc == SY_OK && LOAD(v[i]->status_other) > 0)
            rc = sy_buf_printf(out, "switchyard_requests_total{%s,status=\"other\"} %llu\n",
                               v[i]->lbl, (unsigned long long)LOAD(v[i]->status_other));
    }
#define COUNTER(name, help, field)                                                                 \
    if (rc == SY_OK)                                                                               \
        rc = head(out, name, "counter", help);                                                     \
    for (size_t i = 0; i < n && rc == SY_OK; i++)                                                  \
        rc = sy_buf_printf(out, name "{%s} %llu\n", v[i]->lbl,                                     \
                           (unsigned long long)LOAD(v[i]->field));
    COUNTER("switchyard_errors_total", "Requests that failed (status >= 400 or a stream error).",
            errors)
    if (rc == SY_OK)
        rc = head(out, "switchyard_tokens_total", "counter",
                  "Tokens by kind; cached and cache_write are part of prompt, reasoning part of "
                  "completion.");
    for (size_t i = 0; i < n && rc == SY_OK; i++)
        for (int k = 0; k < NTOK && rc == SY_OK; k++)
            rc = sy_buf_printf(out, "switchyard_tokens_total{%s,kind=\"%s\"} %llu\n", v[i]->lbl,
                               token_kind[k], (unsigned long long)LOAD(v[i]->tokens[k]));
    if (rc == SY_OK)
        rc = head(out, "switchyard_cost_usd_total", "counter", "Spend in US dollars.");
    for (size_t i = 0; i < n && rc == SY_OK; i++)
        rc = usd(out, "switchyard_cost_usd_total", v[i]->lbl, LOAD(v[i]->cost_micro));
    if (rc == SY_OK)
        rc = head(out, "switchyard_counterfactual_usd_total", "counter",
                  "What the route's reference deployment would have cost, in US dollars.");
    for (size_t i = 0; i < n && rc == SY_OK; i++)
        rc = usd(out, "switchyard_counterfactual_usd_total", v[i]->lbl, LOAD(v[i]->cf_micro));
    if (rc == SY_OK)
        rc = head(out, "switchyard_savings_usd", "gauge",
                  "Counterfactual minus cost since start, in US dollars (a gauge: it can fall).");
    for (size_t i = 0; i < n && rc == SY_OK; i++)
        rc = usd(out, "switchyard_savings_usd", v[i]->lbl,
                 LOAD(v[i]->cf_micro) - LOAD(v[i]->cost_micro));
    COUNTER("switchyard_cache_hits_total", "Requests answered from the prompt cache.", hits)
    COUNTER("switchyard_cache_misses_total", "Prompt cache lookups that missed.", misses)
    COUNTER("switchyard_estimated_usage_total",
            "Requests billed on estimated usage (the upstream sent none).", estimated)
#undef COUNTER
    if (rc == SY_OK)
        rc = histogram(out, "switchyard_upstream_latency_seconds",
                       "Request start to last byte, in seconds.", v, n, offsetof(series, lat));
    if (rc == SY_OK)
        rc = histogram(out, "switchyard_ttft_seconds",
                       "Request start to first byte to the client, in seconds.", v, n,
                       offsetof(series, ttft));
    if (rc == SY_OK && src != NULL && src->inflight >= 0)
        rc = scalar(out, "switchyard_inflight_requests", "gauge", "Client requests in flight.",
                    (unsigned long long)src->inflight);
    if (rc == SY_OK && src != NULL && src->cfg != NULL)
        rc = render_deployments(out, src->cfg);
    if (rc == SY_OK && src != NULL && src->store != NULL) {
        rc = head(out, "switchyard_store_up", "gauge",
                  "1 while the shared store (Redis or embedded) is healthy.");
        if (rc == SY_OK)
            rc =
                sy_buf_printf(out, "switchyard_store_up{kind=\"%s\"} %d\n",
                              sy_store_kind_of(src->store) == SY_STORE_REDIS ? "redis" : "embedded",
                              sy_store_healthy(src->store) ? 1 : 0);
    }
    if (rc == SY_OK && src != NULL && src->spend != NULL)
        rc = render_spend(out, src->spend);
    if (rc == SY_OK)
        rc = render_batch(m, out);
    if (rc == SY_OK)
        rc = head(out, "switchyard_build_info", "gauge", "Build information.");
    if (rc == SY_OK)
        rc = sy_buf_printf(out, "switchyard_build_info{version=\"%s\"} 1\n", SY_VERSION);
    if (rc == SY_OK)
        rc = scalar(out, "process_start_time_seconds", "gauge",
                    "Start time of the process since the Unix epoch, in seconds.",
                    (unsigned long long)m->start_s);
    free(v);
    return rc;
}

static sy_err render_batch(sy_metrics *m, sy_buf *out)
{
    sy_err rc = head(out, "switchyard_batch_lines_total", "counter",
                     "Batch lines finished by this instance (completed: 2xx; failed: error file), "
                     "retried attempts, and skipped lines of cancelled or expired batches.");
    for (int i = 0; i < 4 && rc == SY_OK; i++)
        rc = sy_buf_printf(out, "switchyard_batch_lines_total{result=\"%s\"} %llu\n",
                           batch_results[i],
                           (unsigned long long)LOAD(m->batch_lines[i]));
    int64_t depth = LOAD(m->batch_depth);
    if (rc == SY_OK && depth >= 0) {
        rc = head(out, "switchyard_batch_queue_depth", "gauge",
                  "Entries in the batch queue stream (waiting or running), all instances.");
        if (rc == SY_OK)
            rc = sy_buf_printf(out, "switchyard_batch_queue_depth %lld\n", (long long)depth);
        if (rc == SY_OK)
            rc = head(out, "switchyard_batches", "gauge",
                      "Batches by status (running ones as of the last sweep, finished ones "
                      "since the store was created).");
        for (int i = 0; i < 8 && rc == SY_OK; i++)
            rc = sy_buf_printf(out, "switchyard_batches{status=\"%s\"} %lld\n",
                               batch_statuses[i], (long long)LOAD(m->batch_status[i]));
    }
    return rc;
}
