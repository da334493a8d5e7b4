/* metrics: a small Prometheus registry for the relay and its text exposition (GET /metrics).
 *
 * The one design decision: every per-request metric lives in one "series" struct per
 * (route, tier, deployment, model) tuple, found under a short mutex and updated with atomics, so
 * observing a request costs one lookup and a handful of relaxed atomic adds. The number of tuples
 * is capped (SY_METRICS_MAX_SERIES); later tuples are counted under route/tier/deployment/model
 * "(other)", so label cardinality stays bounded whatever clients send. Per-tuple HTTP statuses are
 * capped at SY_METRICS_MAX_STATUS distinct codes (more fold into status "other").
 *
 * Families (all per route, tier, deployment, model unless said otherwise):
 *   switchyard_requests_total{...,status}      counter  requests finished, by status sent
 *   switchyard_errors_total                    counter  failed requests
 *   switchyard_tokens_total{...,kind}          counter  kind = prompt|cached|cache_write|
 *                                                       completion|reasoning
 *   switchyard_cost_usd_total                  counter  what was spent (exact micro-dollars)
 *   switchyard_counterfactual_usd_total        counter  what the route's reference would cost
 *   switchyard_savings_usd                     gauge    counterfactual - cost since start; a
 *                                                       gauge because it can go down (a request
 *                                                       dearer than its reference)
 *   switchyard_cache_hits_total / _misses_total counter  prompt-cache outcomes
 *   switchyard_estimated_usage_total           counter  requests billed on estimated usage
 *   switchyard_upstream_latency_seconds        histogram request start to last byte
 *   switchyard_ttft_seconds                    histogram request start to first byte
 *   switchyard_inflight_requests               gauge    (no labels) client requests in flight
 *   switchyard_deployment_inflight{deployment} gauge    attempts in flight (health.h)
 *   switchyard_breaker_state{deployment}       gauge    0 closed, 1 open, 2 half-open
 *   switchyard_store_up                        gauge    1 while the store is healthy
 *   switchyard_spend_* (queued records, pending groups, journal bytes, dropped, store errors)
 *   switchyard_batch_lines_total{result}       counter  batch lines: completed|failed|retried|skipped
 *   switchyard_batch_queue_depth               gauge    entries in the batch stream (all instances)
 *   switchyard_batches{status}                 gauge    batches by status (batch.h)
 *   switchyard_build_info{version}, process_start_time_seconds
 * Counters start at 0 with the process; they are not restored from the store. */
#ifndef SY_METRICS_H
#define SY_METRICS_H

#include <stdint.h>

#include "switchyard/buf.h"
#include "switchyard/config.h"
#include "switchyard/err.h"
#include "switchyard/spend.h"
#include "switchyard/store.h"

#define SY_METRICS_MAX_SERIES 2000
#define SY_METRICS_MAX_STATUS 8
#define SY_METRICS_LABEL_MAX 128 /* bytes of a label value kept (longer ones are cut) */

typedef struct sy_metrics sy_metrics;

/* A new, empty registry; SY_OK or SY_ENOMEM. Freed with sy_metrics_free (NULL is a no-op). */
sy_err sy_metrics_new(sy_metrics **out);
void sy_metrics_free(sy_metrics *m);

/* Counts one finished request. Thread-safe; no I/O; allocates only the first time a label tuple
 * is seen. sy_spend_record calls it when the spend recorder was given this registry, so the relay
 * calls only sy_spend_record. */
void sy_metrics_observe_request(sy_metrics *m, const sy_spend_rec *r);

/* Batch queue (batch_run.c). <result>: "completed", "failed", "retried" or "skipped"; others
 * are ignored. The gauges are set by the batch sweeper; <by_status> in the order validating,
 * failed, in_progress, finalizing, completed, expired, cancelling, cancelled; <queue_depth> < 0
 * = unknown (family omitted). NULL <m> is a no-op. Thread-safe, no I/O. */
void sy_metrics_batch_line(sy_metrics *m, const char *result);
void sy_metrics_batch_gauges(sy_metrics *m, int64_t queue_depth, const int64_t by_status[8]);

/* What the exposition reads besides the registry; every pointer may be NULL (family omitted). */
typedef struct sy_metrics_src {
    const sy_config *cfg; /* deployments: breaker state and in-flight per deployment */
    sy_store *store;      /* switchyard_store_up */
    sy_spend *spend;      /* switchyard_spend_* */
    int inflight;         /* client requests in flight; < 0 = omit */
} sy_metrics_src;

/* Appends the Prometheus text format (version 0.0.4) to <out>. Safe while other threads observe.
 * SY_OK, SY_ETOOBIG (out->max reached) or SY_ENOMEM. */
sy_err sy_metrics_render(sy_metrics *m, const sy_metrics_src *src, sy_buf *out);

/* The content type of that text. */
#define SY_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
