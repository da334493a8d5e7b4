/* spend: every request's usage, cost and savings, aggregated per day x route x tier x deployment
 * x model x key into the store, with a local journal so nothing acknowledged is lost (DESIGN §7).
 *
 * The one design decision: the request path only enqueues. sy_spend_record copies the record
 * into a bounded in-memory queue and returns. Two threads owned by this module do the rest, so
 * that a slow or dead store never delays an ack:
 *   journal thread  writes the journal (group commit), runs the ack callbacks, folds records into
 *                   the open aggregate; seals it into a batch (its "b" line on disk first) when
 *                   the store thread asks; writes "c" lines; compacts. Never calls the store.
 *   store thread    every flush_ms applies the sealed batches to the store as pipelined
 *                   increments guarded by once-keys, then asks for the next seal. It waits on
 *                   the store (each call up to the store's timeout_ms) while the journal thread
 *                   goes on.
 * Batches pass between them in memory (the journal is the durable copy).
 *
 * ---- Journal (<data_dir>/spend.journal, append-only, one JSON object per line) ---------------
 *   {"g":["2025-06-01","route","tier","deployment","model","key"],"v":[req,err,...]}  a delta
 *   {"b":"<batch id>"}   seal: every "g" line since the previous seal forms batch <batch id>
 *   {"c":"<batch id>"}   commit: that batch is in the store
 * A batch is written to the store only after its "b" line is on disk (fsync), with the once-key
 * "{s:<day>}:once:<batch id>:<chunk>" per day and chunk of at most SY_STORE_BATCH_MAX increments
 * (sy_store_hincrby_many), so replaying it, after a store outage or a restart, applies it exactly
 * once. On start the journal is read: sealed batches without a commit are retried with their own
 * ids, later "g" lines form the next batch. A last line without its '\n' or that does not parse
 * (SIGKILL or power loss mid-write) is ignored and cut off. When the file passes
 * journal_compact_bytes it is rewritten (temp file, fsync, rename, fsync of the directory) to hold
 * only what is not yet committed. One process per data_dir (flock; a second one gets SY_EINVAL).
 * With the embedded store (which dies with the process) the journal is the durable copy of all
 * spend: compaction keeps committed groups too, and a start applies the whole file to the new,
 * empty store (opts.journal_keeps_all).
 *
 * ---- Durability: what "acknowledged" means --------------------------------------------------
 * A record is durable against a crash of the process (SIGKILL, abort) once the journal thread
 * has write()n its line: the kernel has it. It is durable against power loss once fsync()ed:
 *   SY_SPEND_FSYNC_ALWAYS     fsync before the record's ack callback runs (group commit: one
 *                             fsync covers every record queued meanwhile)
 *   SY_SPEND_FSYNC_INTERVAL   fsync at most every fsync_ms (default: 1000 ms); a power loss loses
 *                             at most that window; a process crash loses nothing written
 *   SY_SPEND_FSYNC_NEVER      leave it to the kernel
 * "b" lines and compactions are always fsynced before the store is touched (exactly-once needs
 * them). The relay acknowledges a request to its client by sending its last byte, so it holds
 * that byte until the ack callback of sy_spend_record_ack ran (server.c: a non-stream answer is
 * queued, a stream's final event and end are sent, only after the ack), which makes "SIGKILL
 * loses nothing acknowledged" hold exactly; sy_spend_record alone leaves a window of one journal
 * thread wake-up (used only for requests whose client went away). An ack waits for the disk only
 * (write, and fsync per policy; a seal's fsync, once per flush_ms, may delay the acks queued
 * behind it), never for the store: while a store write hangs (Redis stopped, slow, restarting),
 * records keep being journaled, acknowledged and folded into the open batch.
 *
 * ---- Store layout -------------------------------------------------------------------------
 * One hash per UTC day, "{s:<yyyy-mm-dd>}:agg" (TTL retention_days), with integer fields
 * "<counter>|<route>|<tier>|<deployment>|<model>|<key>", counters named by SY_SPEND_COUNTERS
 * ('|', '%', '"', '\\' and bytes outside 0x20..0x7e in a dimension are %-escaped, each
 * dimension cut to 96 bytes). A query reads one HGETALL per day. Once-keys live in the day's
 * hash tag and expire after once_ttl_s: a journal replayed later than that after a crash could
 * double-apply the one batch that was in flight. There is one once-key per day part of a batch,
 * i.e. at most one per flush_ms under continuous traffic: about 260k keys (~25 MB of Redis) at
 * the defaults.
 *
 * ---- Threads ------------------------------------------------------------------------------
 * sy_spend_record, sy_spend_record_ack, sy_spend_stats_get are thread-safe and never block on
 * I/O (a mutex held for a few pointer moves). sy_spend_sync and sy_spend_query wait on the store
 * (each store call bounded by its timeout_ms). sy_spend_new/sy_spend_free are not concurrent with
 * other calls.
 *
 * ---- Wiring (server.c / upstream.c) -----------------------------------------------------------
 *   start:    sy_metrics_new(&m); sy_spend_opts_init(&o); o.metrics = m;
 *             sy_spend_new(store, cfg->data_dir, &o, &sp);    (once; a reload keeps it)
 *   request:  sy_spend_rec r = {.route = pick.route, .tier = pick.tier, .deployment = dep->name,
 *                               .model = dep->model, .key = tenant, .status = status,
 *                               .error = ..., .stream = ..., .usage = usage, ...};
 *             sy_spend_price(&r, &dep->price, route->reference >= 0 ?
 *                            &cfg->deployments[route->reference].price : NULL);
 *             sy_usd_format(r.cost_micro, buf) -> x-switchyard-cost-usd (non-stream);
 *             sy_spend_record_ack(sp, &r, cb, req) when the answer is complete (its last
 *             bytes wait for cb), sy_spend_record(sp, &r) when the client went away first
 *   api:      sy_api_in.spend = sp, .metrics = m, .get_arg = (MHD_GET_ARGUMENT_KIND lookup);
 *             honour sy_reply.content_type (text/plain for /metrics, text/html for /dashboard)
 *   shutdown: after the last request: sy_spend_free(sp) (journals and flushes), sy_metrics_free(m),
 *             then sy_store_free. */
#ifndef SY_SPEND_H
#define SY_SPEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/err.h"
#include "switchyard/prices.h"
#include "switchyard/store.h"

struct sy_metrics;

/* The aggregated counters: X(field, store name, JSON name). Order is the journal's "v" order:
 * append only. Savings are derived (counterfactual - cost), never stored. */
#define SY_SPEND_COUNTERS(X)                                                                       \
    X(requests, "req", "requests")                                                                 \
    X(errors, "err", "errors")                                                                     \
    X(prompt_tokens, "pt", "prompt_tokens")                                                        \
    X(cached_tokens, "ct", "cached_tokens")                                                        \
    X(cache_write_tokens, "cwt", "cache_write_tokens")                                             \
    X(completion_tokens, "ot", "completion_tokens")                                                \
    X(reasoning_tokens, "rt", "reasoning_tokens")                                                  \
    X(cost_micro, "cost", "cost_micro")                                                            \
    X(counterfactual_micro, "cf", "counterfactual_micro")                                          \
    X(cache_hits, "hit", "cache_hits")                                                             \
    X(estimated, "est", "estimated")

typedef struct sy_spend_counts {
#define SY_SPEND_FIELD(f, s, j) int64_t f;
    SY_SPEND_COUNTERS(SY_SPEND_FIELD)
#undef SY_SPEND_FIELD
} sy_spend_counts;

/* One finished request, as the relay saw it. Strings are copied by sy_spend_record (the caller
 * keeps ownership). */
typedef struct sy_spend_rec {
    int64_t time_ms;        /* completion time, ms since the Unix epoch (UTC day); 0 = now */
    const char *route;      /* route name; NULL = "-" (no route table: by alias or name) */
    const char *tier;       /* NULL = "-" */
    const char *deployment; /* the deployment that served (last tried); NULL = "-" */
    const char *model;      /* the upstream model name (deployment->model); NULL = "-" */
    const char *key;        /* tenant: virtual key id or team; NULL = "-"; never a secret */
    int status;             /* HTTP status sent to the client (stream: 200) */
    bool error;             /* failed: status >= 400, or a stream that ended with an error */
    bool stream;
    bool cache_lookup;  /* the prompt cache was consulted (a miss unless cache_hit) */
    bool cache_hit;     /* answered from the prompt cache (cost 0) */
    bool batch;         /* a /v1/batches line (for reporting; it pays the normal price when it
                           ran through the proxy like an interactive request) */
    bool batch_discount; /* priced with the deployment's batch discount: only a line that went
                            through the provider's own batch API */
    sy_usage usage;     /* usage.estimated: no usage from the upstream */
    int64_t cost_micro; /* sy_price_cost_micro(&dep->price, &usage, batch_discount); hit: 0 */
    int64_t counterfactual_micro; /* the route's reference deployment's price for the same
                                     usage; no reference: = cost; cache hit: the original cost */
    int64_t latency_us;           /* request start to last byte; < 0 = unknown */
    int64_t ttft_us;              /* request start to first byte to the client; < 0 = unknown */
} sy_spend_rec;

/* Fills cost_micro and counterfactual_micro of <r> from r->usage and r->batch_discount: <actual> is the
 * serving deployment's price, <reference> the route's reference deployment's (NULL = none: the
 * counterfactual is the cost). For a cache hit pass <actual> = the price of the deployment that
 * produced the cached answer: the cost is 0 and the whole original cost is the counterfactual. */
void sy_spend_price(sy_spend_rec *r, const sy_price *actual, const sy_price *reference);

/* Tokens for <bytes> bytes of generated text (content, reasoning, tool-call arguments; not SSE
 * framing): about 4 bytes per token, rounded up; 0 for 0. For streams without usage (mark the
 * record usage.estimated). */
int64_t sy_spend_estimate_tokens(size_t bytes);

typedef enum sy_spend_fsync {
    SY_SPEND_FSYNC_INTERVAL,
    SY_SPEND_FSYNC_ALWAYS,
    SY_SPEND_FSYNC_NEVER
} sy_spend_fsync;

typedef struct sy_spend_opts {
    long flush_ms;                 /* store write interval (default 1000; 1..60000) */
    sy_spend_fsync fsync;          /* default SY_SPEND_FSYNC_INTERVAL */
    long fsync_ms;                 /* INTERVAL: at most this long unsynced (default 1000) */
    size_t queue_max;              /* records waiting for the journal (default 65536); a record
                                      past it is dropped, logged and counted (stats.dropped) */
    size_t max_groups;             /* distinct day x dimension groups held in memory (default
                                      100000); past it new groups fold into dimensions "(other)"
                                      (money and token totals stay exact) */
    size_t journal_compact_bytes;  /* rewrite the journal past this size (default 8 MiB) */
    long retention_days;           /* TTL of a day's hash in the store (default 400; 0 = none) */
    long once_ttl_s;               /* TTL of once-keys (default 3 days) */
    int journal_keeps_all;         /* the store forgets everything at exit (the embedded one), so
                                      the journal keeps committed spend too and a start re-applies
                                      it all: 1 yes, 0 no, -1 (default) = when the store is
                                      embedded */
    struct sy_metrics *metrics;    /* borrowed; when set, sy_spend_record feeds it too */
    int64_t (*clock_ms)(void *ud); /* tests: wall clock for time_ms 0; NULL = CLOCK_REALTIME */
    void *clock_ud;
} sy_spend_opts;

void sy_spend_opts_init(sy_spend_opts *o);

typedef struct sy_spend sy_spend;

/* Creates the spend recorder over <store> (borrowed; must outlive it). <data_dir> (created if
 * missing) holds the journal; NULL = no journal (memory only, for tests). Reads the journal left
 * by a previous run (replayed to the store by the store thread) and starts both threads.
 * Returns SY_OK, SY_EINVAL (data_dir unusable, journal locked by another process: logged),
 * SY_ENOMEM or SY_EINTERNAL (thread). *out is new, freed with sy_spend_free. */
sy_err sy_spend_new(sy_store *store, const char *data_dir, const sy_spend_opts *opts,
                    sy_spend **out);

/* Journals everything queued, tries once more to write pending batches to the store (bounded by
 * the store's deadline; a store write in progress is waited for), fsyncs, stops both threads
 * and frees. What the store did not take stays
 * in the journal for the next start. NULL is a no-op. */
void sy_spend_free(sy_spend *s);

/* Records one finished request (see the durability notes above). Never blocks on I/O; safe from
 * the curl thread. Feeds opts.metrics when set. */
void sy_spend_record(sy_spend *s, const sy_spend_rec *r);

/* Called once per record: on the journal thread after its journal line was written (and fsynced
 * under SY_SPEND_FSYNC_ALWAYS) with <durable> true; with <durable> false when there is no journal
 * or writing it failed; and before sy_spend_record_ack returns (durable false) when the record
 * was dropped (queue full). Keep it short: post to the bridge. */
typedef void (*sy_spend_ack_fn)(void *ud, bool durable);
void sy_spend_record_ack(sy_spend *s, const sy_spend_rec *r, sy_spend_ack_fn cb, void *ud);

/* Waits until every record made before the call is journaled and written to the store, at most
 * <timeout_ms>. SY_OK; SY_ETIMEOUT; or the store's error (SY_EUNAVAIL while it is down: the
 * records stay journaled and pending). */
sy_err sy_spend_sync(sy_spend *s, long timeout_ms);

typedef enum sy_spend_dim {
    SY_DIM_DAY,
    SY_DIM_ROUTE,
    SY_DIM_TIER,
    SY_DIM_DEPLOYMENT,
    SY_DIM_MODEL,
    SY_DIM_KEY,
    SY_DIM__COUNT
} sy_spend_dim;

/* "day", "route", ... ; NULL for an out-of-range value. */
const char *sy_spend_dim_name(sy_spend_dim d);
/* The dimension named <name> (length <len>), or -1. */
int sy_spend_dim_parse(const char *name, size_t len);

typedef struct sy_spend_query {
    int64_t from_day, to_day; /* days since 1970-01-01 (UTC), inclusive; at most 366 days */
    unsigned group_mask;      /* bit (1u << sy_spend_dim) per grouped dimension; 0 = totals */
    const char *key;          /* only this tenant; NULL = all */
} sy_spend_query;

typedef struct sy_spend_row {
    char *dims[SY_DIM__COUNT]; /* the grouped dimensions' values; NULL where not grouped */
    sy_spend_counts c;
} sy_spend_row;

typedef struct sy_spend_result {
    sy_spend_row *rows; /* sorted by the grouped dimensions (day, route, tier, ...) */
    size_t n;
    sy_spend_counts totals;
} sy_spend_result;

void sy_spend_result_init(sy_spend_result *r);
void sy_spend_result_cleanup(sy_spend_result *r);

/* Reads the aggregates of <q> from the store into <out> (initialised by the caller; replaced).
 * Call sy_spend_sync first to see records made just before. Returns SY_OK, SY_EINVAL (bad range),
 * the store's error (SY_EUNAVAIL, SY_ETIMEOUT, ...), SY_ETOOBIG (more than 100000 rows) or
 * SY_ENOMEM. Runs on the caller's thread: one store round trip per day. */
sy_err sy_spend_query_run(sy_spend *s, const sy_spend_query *q, sy_spend_result *out);

/* "YYYY-MM-DD" (a real calendar date, years 1970..9999) -> days since the epoch. */
bool sy_spend_parse_day(const char *s, int64_t *day);
/* Days since the epoch -> "YYYY-MM-DD" into <buf> (at least 11 bytes). */
void sy_spend_format_day(int64_t day, char buf[11]);
/* Today (UTC) by the recorder's clock, in days since the epoch. */
int64_t sy_spend_today(const sy_spend *s);

typedef struct sy_spend_stats {
    uint64_t recorded;        /* records accepted */
    uint64_t dropped;         /* records refused: queue full */
    uint64_t journaled;       /* records written to the journal */
    uint64_t journal_errors;  /* failed journal writes/fsyncs */
    uint64_t batches_applied; /* batches committed to the store */
    uint64_t store_errors;    /* failed store writes (retried) */
    uint64_t replayed;        /* batches found pending in the journal at start */
    size_t queued;            /* records waiting for the journal */
    size_t pending_groups;    /* groups not yet in the store (open and sealed) */
    uint64_t journal_bytes;   /* size of the journal file */
    bool journal;             /* a journal is in use */
} sy_spend_stats;

void sy_spend_stats_get(sy_spend *s, sy_spend_stats *out);

/* The store given to sy_spend_new (borrowed). */
sy_store *sy_spend_get_store(const sy_spend *s);

#endif
