/* files: placeholder until the Files API lands (see include/switchyard/files.h). */
#include "switchyard/files.h"

#include <stdlib.h>

#include "switchyard/api.h"

struct sy_files {
    int unused;
};
struct sy_upload {
    int unused;
};

sy_err sy_files_new(const char *data_dir, struct sy_store *store, size_t max_bytes,
                    size_t max_lines, sy_files **out)
{
    (void)data_dir, (void)store, (void)max_bytes, (void)max_lines;
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? SY_OK : SY_ENOMEM;
}
void sy_files_free(sy_files *f) { free(f); }
sy_upload *sy_upload_begin(sy_files *f, struct MHD_Connection *conn)
{
    (void)f, (void)conn;
    return calloc(1, sizeof(sy_upload));
}
void sy_upload_feed(sy_upload *u, const char *data, size_t len) { (void)u, (void)data, (void)len; }
void sy_upload_free(sy_upload *u) { free(u); }
void sy_api_files(const sy_api_in *in, sy_reply *out)
{
    (void)in;
    sy_api_error(out, SY_EUNSUPPORTED, "the Files API is not built yet", NULL);
}
