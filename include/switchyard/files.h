/* files: the OpenAI Files API (POST/GET/DELETE /v1/files, GET /v1/files/{id}/content).
 * Content lives under <data_dir>/files/ (or batch.files_dir), metadata (the OpenAI file object)
 * in the store under "{file:<id>}" plus an index hash "{files}:index", so every instance on one
 * Redis sees every file's metadata; instances that should serve each other's content share
 * batch.files_dir (they cannot share data_dir: the spend journal there is per instance).
 * Content is not fsync'ed: a process crash loses nothing, a power loss may.
 *
 * Uploads are multipart/form-data streamed by the MHD thread into a temporary file with bounded
 * memory (sy_upload_*); the rest runs on a worker thread (sy_api_files) where store and disk
 * calls may block. batch.c reads input files and writes output files through the functions at
 * the end. */
#ifndef SY_FILES_H
#define SY_FILES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/err.h"

struct MHD_Connection;
struct sy_store;

typedef struct sy_files sy_files;
typedef struct sy_upload sy_upload;

/* <data_dir> is created if missing; <max_bytes> caps one file (413 beyond), <max_lines> the
 * lines of a `batch` file. *out is new, freed with sy_files_free. */
sy_err sy_files_new(const char *data_dir, struct sy_store *store, size_t max_bytes,
                    size_t max_lines, sy_files **out);
/* The same with contents directly in <files_dir> (config batch.files_dir: a directory several
 * instances share; its parent must exist). */
sy_err sy_files_new_dir(const char *files_dir, struct sy_store *store, size_t max_bytes,
                        size_t max_lines, sy_files **out);
void sy_files_free(sy_files *f);

/* MHD thread, POST /v1/files: starts parsing the connection's multipart body. Never NULL
 * unless out of memory; a bad Content-Type is remembered and reported by sy_api_files. */
sy_upload *sy_upload_begin(sy_files *f, struct MHD_Connection *conn);
/* MHD thread: the next piece of the body. Bounded memory; after an error, later pieces are
 * dropped and the error is reported by sy_api_files. */
void sy_upload_feed(sy_upload *u, const char *data, size_t len);
/* Any thread; removes the temporary file unless it became a file. NULL is a no-op. */
void sy_upload_free(sy_upload *u);

/* Tenancy: a file has an owner, the tenant of the key that uploaded it (sy_api_tenant; "" when
 * none), kept in the stored metadata only (never in the file object clients see). Every call
 * that reads or removes a file takes a <scope>: NULL sees every tenant's files (the master key,
 * and the batch module's own reads); otherwise only files whose owner equals <scope>, and
 * another tenant's file is SY_ENOTFOUND exactly as if it did not exist. */

/* The OpenAI file object of <id> (new reference). SY_ENOTFOUND when there is none. */
sy_err sy_files_get(sy_files *f, const char *scope, const char *id, json_t **obj);
/* Opens the content of <id> for reading: *fd (caller closes) and its length. */
sy_err sy_files_open(sy_files *f, const char *scope, const char *id, int *fd, uint64_t *len);
/* Makes a new file of <purpose> (e.g. "batch_output") owned by <owner> (NULL or "" = none; at
 * most 64 bytes) from <len> bytes at <data>; *obj is its file object (new reference; may be
 * NULL if not wanted). */
sy_err sy_files_create(sy_files *f, const char *owner, const char *purpose,
                       const char *filename, const void *data, size_t len, json_t **obj);
/* The same from a finished file at <path> (moved into the store's directory; same file system
 * as data_dir, e.g. a path from sy_files_tmp_path). Used for large outputs written
 * incrementally. On failure the file is still at <path> (the caller removes it). */
sy_err sy_files_create_from_path(sy_files *f, const char *owner, const char *purpose,
                                 const char *filename, const char *path, json_t **obj);
/* The same under the caller's <id> ("file-" and 1..64 ASCII letters and digits, e.g. derived
 * from what the file is the output of), replacing the file of that id if there is one (its
 * content atomically, its metadata and index entries). For an output a crashed or failed writer
 * may have published already: writing it again under the same id leaves one file, not two.
 * On failure the content may already be in place under <id> (a retry replaces it) or still at
 * <path> (the caller removes it if it is there). SY_EINVAL for a bad <id>. */
sy_err sy_files_put_from_path(sy_files *f, const char *id, const char *owner,
                              const char *purpose, const char *filename, const char *path,
                              json_t **obj);
/* A path under data_dir where a caller may write a temporary file for the function above
 * ("<data_dir>/files/tmp-<random>.part"; nothing is created). SY_ETOOBIG when <n> is too
 * small. Temporary files left by a crash are removed once a day old (at the next start and by
 * sy_files_sweep). */
sy_err sy_files_tmp_path(sy_files *f, char *buf, size_t n);

/* Removes <id> (metadata, index entry, content). *existed (may be NULL) says whether it was
 * there. Store errors are returned (SY_ETIMEOUT, SY_EUNAVAIL, ...). */
sy_err sy_files_delete(sy_files *f, const char *scope, const char *id, bool *existed);

/* One page of the file list of <scope>, ordered by creation (<asc> oldest first), of <purpose>
 * only when not NULL, after the file <after> (NULL = from the start), at most <limit>
 * (1..10000) files: *out is the ListFilesResponse object (new reference). SY_ENOTFOUND when
 * <after> is not a known file of <scope>. */
sy_err sy_files_list(sy_files *f, const char *scope, const char *purpose, size_t limit, bool asc,
                     const char *after, json_t **out);

/* Periodic cleanup of what the store's TTL cannot remove (the batch sweeper calls it every
 * batch.poll_ms). A round starts at most once a minute (by the clock below): it reads the global
 * index once, removes temporary files older than a day, and notes content files that are in no
 * index entry and older than a day. Each call then looks at up to <budget> (> 0) of them, one
 * store read each: a file whose metadata has expired, or is gone while its content and index
 * entry are older than 10 minutes, loses its content, metadata and both index entries; an
 * unindexed content file without metadata is removed. Content whose metadata is valid is never
 * removed, nor young content without metadata (an upload or republish in progress). Safe with
 * other instances sweeping the same store and directory. *removed (may be NULL): files removed
 * by this call; *done (may be NULL): true when no round is in progress after it. A store error
 * is returned and the round resumes at the same entry next call. Returns at once (SY_OK,
 * *done false) while another thread sweeps <f>. */
sy_err sy_files_sweep(sy_files *f, size_t budget, size_t *removed, bool *done);

/* Tests: replaces the wall clock (Unix milliseconds) used for created_at and expiry, and by
 * the sweep (compared with content files' mtimes). NULL restores the real clock. Not
 * thread-safe with other calls. */
void sy_files_set_clock(sy_files *f, int64_t (*now_ms)(void *ud), void *ud);

/* Error contract of every sy_files_* call above: SY_OK; SY_ENOTFOUND (no such file, expired
 * included, or its content is not under this instance's data_dir); SY_EINVAL (bad argument);
 * SY_EINTERNAL (disk); or the store's SY_ETIMEOUT / SY_EUNAVAIL / SY_ENOMEM. They may block on
 * the store and the disk: worker threads only. Thread-safe. */

#endif
