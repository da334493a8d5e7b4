/* batch: the OpenAI Batches API on the store's streams (DESIGN §9).
 *
 * POST /v1/batches records a batch object in status `validating` and returns at once. This
 * instance's validator thread (or any instance's, after a crash: a lease in the store says who
 * works on it) reads the input file line by line with bounded memory; any bad line fails the
 * batch with line-numbered errors. Otherwise the batch goes `in_progress` with its total, and
 * every line is appended to one store stream ({b}:q) read by one consumer group; the enqueue
 * position is saved every few lines, so a crash mid-enqueue resumes there (a line queued twice
 * is harmless: see below).
 *
 * Worker threads (batch.workers per instance, and those of every other instance on the same
 * Redis) take lines and run each one through the proxy's own HTTP listener exactly like an
 * interactive request (routing, cache, spend), marked with the per-process token so the relay
 * gives it the batch share of each deployment and the creator's tenant. A line runs only under
 * a short claim (set NX with a TTL), so two copies of it never run at once, and only when it has
 * no result yet. Its result is written once (set NX keyed by batch and line) and counted once
 * (counters applied under a once-key), then the entry is acknowledged: a crash at any point
 * either re-runs the line (it was in flight) or finds its result and only acknowledges.
 *
 * A sweeper thread reclaims entries idle longer than batch.lease_ms (a dead worker's), finalizes
 * batches whose counts reached their total (a compare-and-set picks one instance; output and
 * error JSONL files in line order), expires batches past their window, and completes
 * cancellations once no line of the batch is running.
 *
 * Store keys (all under the hash tag {b}, see store.h):
 *   {b}:q                      stream of lines: fields b (batch id), n (line), c (custom_id),
 *                              u (url), body (the request body)
 *   {b}:obj:<id>               the batch object (JSON, internal fields "sy_*" stripped on output)
 *   {b}:cnt:<id>               hash: completed, failed, token usage
 *   {b}:res:<id>:<line>        a line's result ("o" or "e" then the JSONL line)
 *   {b}:run:<id>:<line>        a line's claim (TTL lease_ms)
 *   {b}:lease:<id>             validator / finalizer lease (TTL)
 *   {b}:index                  hash: batch id -> created_at ms (listing)
 *   {b}:active                 hash: batch id -> 1 while not terminal, 0 after */
#ifndef SY_BATCH_H
#define SY_BATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/config.h"
#include "switchyard/err.h"

struct sy_store;
struct sy_files;
struct sy_metrics;

typedef struct sy_batch sy_batch;

/* <self_url> is this instance's own base URL (e.g. "http://127.0.0.1:8080"); workers send
 * lines there with the internal token (sy_batch_token). <cfg> gives the batch.* settings
 * (read once; a reference is kept). <spend> (borrowed, may be NULL = not recorded) is where
 * lines that went through a provider's batch API record their spend (with the batch
 * discount); the relay records every other line. Starts a validator and a sweeper thread; the
 * cfg->batch_workers worker threads start with the first batch this instance sees. */
struct sy_spend;
sy_err sy_batch_new(const sy_config *cfg, struct sy_store *store, struct sy_files *files,
                    struct sy_metrics *metrics, struct sy_spend *spend, const char *self_url,
                    sy_batch **out);
/* Stops the threads: lines in flight are finished or left unacknowledged (another instance,
 * or this one after a restart, reclaims them). API calls (sy_api_batches) still work after it.
 * NULL is a no-op. */
void sy_batch_stop(sy_batch *b);
/* Stops (if not yet) and frees. NULL is a no-op. */
void sy_batch_free(sy_batch *b);

/* The random per-process token that marks this instance's own batch requests (header
 * x-switchyard-batch-token); compared in constant time by the API. */
const char *sy_batch_token(const sy_batch *b);

/* Headers of a batch worker's request (the relay reads them only with a valid token). */
#define SY_BATCH_HDR_TOKEN "x-switchyard-batch-token"
#define SY_BATCH_HDR_ID "x-switchyard-batch"
#define SY_BATCH_HDR_TENANT "x-switchyard-batch-tenant"

/* ---- pure pieces (unit-tested) ----------------------------------------------------------- */

#define SY_BATCH_CUSTOM_ID_MAX 512 /* bytes of a custom_id */
#define SY_BATCH_MAX_ERRORS 100    /* line errors reported on a failed validation */

/* The endpoints a batch may use; NULL-terminated. */
extern const char *const sy_batch_endpoints[];

/* One input line, parsed. */
typedef struct sy_batch_line {
    char custom_id[SY_BATCH_CUSTOM_ID_MAX + 1];
    json_t *body; /* new reference; NULL when the line is invalid */
} sy_batch_line;

/* Checks one input line (<len> bytes at <s>, no newline) against <endpoint>: a JSON object with
 * a non-empty string custom_id, method "POST", url equal to <endpoint> and an object body.
 * On success fills <out> (body: a new reference; the caller decrefs) and returns true; else
 * returns false with a BatchError object in *err (new: {code, message, param, line}). */
bool sy_batch_parse_line(const char *s, size_t len, long line, const char *endpoint,
                         int max_depth, sy_batch_line *out, json_t **err);

/* Validates a whole input file read from <fd> (from its current offset) with bounded memory
 * (lines up to <max_line_bytes>; custom_ids remembered to find duplicates). Blank lines are
 * skipped but count in line numbers. On success returns SY_OK with *nlines (requests) and
 * *last_line; a bad input returns SY_EINVAL with *errors = {object:"list", data:[...]} (new; at
 * most SY_BATCH_MAX_ERRORS entries, in line order). Read failures return SY_EINTERNAL. */
sy_err sy_batch_validate_fd(int fd, const char *endpoint, size_t max_lines, size_t max_line_bytes,
                            int max_depth, size_t *nlines, long *last_line, json_t **errors);

/* A line of the output or error file: {"id":"batch_req_...","custom_id","response":
 * {"status_code","request_id","body"},"error":null} when <status> > 0 (the body: <resp> parsed,
 * or the raw text as a string when it is not JSON); with <status> 0 a transport failure:
 * "response":null, "error":{"code":<code>,"message":<message>}. New malloc'd text without a
 * newline; NULL on allocation failure. */
char *sy_batch_result_line(const char *custom_id, int status, const char *request_id,
                           const char *resp, size_t resp_len, const char *code,
                           const char *message, size_t *len);

/* Whether a batch may go from status <from> to <to> (the lifecycle of OpenAI's Batch). */
bool sy_batch_transition_ok(const char *from, const char *to);

/* ---- provider batch seam ------------------------------------------------------------------ */

/* A line about to run, as a worker sees it. */
typedef struct sy_batch_job {
    const char *batch_id;
    long line;
    const char *custom_id;
    const char *url;  /* the batch's endpoint */
    json_t *body;     /* borrowed */
    const char *tenant;
} sy_batch_job;

/* Called by a worker for every line before it runs through the proxy, with the deployment the
 * router would pick first for it (NULL when none). Return true when the line was taken by a
 * provider's own batch API (its result will be written later by that code, through
 * sy_batch_line_done); false to run it normally. Runs on a batch worker thread (may block).
 * src/batch_provider.c; the default takes nothing. */
bool sy_batch_provider_offer(sy_batch *b, const sy_batch_job *job, const sy_deployment *dep);

/* Records the result of a line exactly once (idempotent: a second call for the same line
 * changes nothing) and counts it. <line_json> is a line built by sy_batch_result_line; <ok>
 * says which file it goes to. Blocking (store calls). */
sy_err sy_batch_line_done(sy_batch *b, const char *batch_id, long line, bool ok,
                          const char *line_json, size_t len, const json_t *usage);

#endif
