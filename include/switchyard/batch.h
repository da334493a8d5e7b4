/* batch: the OpenAI Batches API on the store's streams (DESIGN §9).
 *
 * POST /v1/batches validates the input file (line-numbered errors), queues every line in one
 * store stream with a consumer group, and this instance's worker threads (and those of every
 * other instance on the same Redis) take lines, run each one through the proxy's own HTTP
 * listener exactly like an interactive request (routing, cache, spend with a batch flag), write
 * results idempotently by custom_id, and acknowledge. Lines of a dead worker are reclaimed
 * after batch.lease_ms. The last line finalizes the batch: output and error files in OpenAI's
 * per-line format. */
#ifndef SY_BATCH_H
#define SY_BATCH_H

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
 * (read once). Starts cfg->batch_workers threads plus a sweeper. */
sy_err sy_batch_new(const sy_config *cfg, struct sy_store *store, struct sy_files *files,
                    struct sy_metrics *metrics, const char *self_url, sy_batch **out);
/* Stops the threads: lines in flight are finished or left unacknowledged (another instance,
 * or this one after a restart, reclaims them). API calls (sy_api_batches) still work after it.
 * NULL is a no-op. */
void sy_batch_stop(sy_batch *b);
/* Stops (if not yet) and frees. NULL is a no-op. */
void sy_batch_free(sy_batch *b);

/* The random per-process token that marks this instance's own batch requests (header
 * x-switchyard-batch-token); compared in constant time by the API. */
const char *sy_batch_token(const sy_batch *b);

#endif
