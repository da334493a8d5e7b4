/* batch: placeholder until the Batches API lands (see include/switchyard/batch.h). */
#include "switchyard/batch.h"

#include <stdlib.h>

#include "switchyard/api.h"

struct sy_batch {
    char token[65];
};

sy_err sy_batch_new(const sy_config *cfg, struct sy_store *store, struct sy_files *files,
                    struct sy_metrics *metrics, const char *self_url, sy_batch **out)
{
    (void)cfg, (void)store, (void)files, (void)metrics, (void)self_url;
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? SY_OK : SY_ENOMEM;
}
void sy_batch_stop(sy_batch *b) { (void)b; }
void sy_batch_free(sy_batch *b) { free(b); }
const char *sy_batch_token(const sy_batch *b) { return b->token; }
void sy_api_batches(const sy_api_in *in, sy_reply *out)
{
    (void)in;
    sy_api_error(out, SY_EUNSUPPORTED, "the Batches API is not built yet", NULL);
}
