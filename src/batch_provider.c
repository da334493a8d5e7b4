/* batch_provider: the seam where batch lines may go through a provider's own batch API
 * (OpenAI Batches, Anthropic Message Batches) at its discount instead of running one by one
 * (issue 7, item 4). A worker calls sy_batch_provider_offer for every line whose first-choice
 * deployment has "batch_api": true. This default takes nothing, so every line runs through the
 * proxy.
 *
 * Contract for an implementation: return true only once the line is durably handed over (the
 * worker acknowledges the queue entry right after, so a crash after `true` must not lose it);
 * later write its result with sy_batch_line_done (idempotent, counts once) and record its
 * spend with sy_spend_rec.batch_discount set. */
#include "switchyard/batch.h"

bool sy_batch_provider_offer(sy_batch *b, const sy_batch_job *job, const sy_deployment *dep)
{
    (void)b, (void)job, (void)dep;
    return false;
}
