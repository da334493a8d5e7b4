/* batch_int: what batch.c (the API, the pure pieces, the object in the store) and batch_run.c
 * (validator, workers, sweeper threads) share. Private to the batch module. */
#ifndef SY_BATCH_INT_H
#define SY_BATCH_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "switchyard/batch.h"
#include "switchyard/store.h"

#define BQ_STREAM "{b}:q"
#define BQ_GROUP "workers"
#define B_INDEX "{b}:index"
#define B_ACTIVE "{b}:active"
#define B_STATS "{b}:stats"
/* per-tenant indexes {b}:tidx:<tenant or "-"> (field id, value creation ms); the marker says
 * that every batch of the store is in its tenant's index (batch.c) */
#define B_TIDX "{b}:tidx:"
#define B_TIDX_READY "{b}:tidx_ready"

struct sy_batch {
    sy_config *cfg; /* a reference: batch.* settings and the provider seam's routing */
    sy_store *store;
    struct sy_files *files;
    struct sy_metrics *metrics;
    struct sy_spend *spend; /* provider-batch lines record their spend here (may be NULL) */
    char self_url[160];
    char token[65];
    char consumer[96]; /* unique per process: host-pid-random */
    int nworkers;
    pthread_t *workers;
    pthread_t sweeper, validator;
    bool have_sweeper, have_validator;
    int started; /* worker threads started */
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* wakes the validator (new batch) and sleepers on stop */
    bool stop;          /* under mu */
    bool kick;          /* under mu: a batch was created, validate now */
    bool stopped;       /* sy_batch_stop ran */
    atomic_bool tidx_ready; /* B_TIDX_READY was seen or written by this process */
    /* entries reclaimed by the sweeper, run by the workers first (under mu) */
    sy_stream_entry *reclaimed;
    size_t nreclaimed, capreclaimed;
    /* tests (under mu): finalize fails at <point> when this answers true (batch_run.c) */
    bool (*fin_fault)(void *ud, const char *point);
    void *fin_fault_ud;
};


/* Keys. All return false when the key does not fit. */
bool bk_obj(char *buf, size_t n, const char *id);
bool bk_cnt(char *buf, size_t n, const char *id);
bool bk_res(char *buf, size_t n, const char *id, long line);
bool bk_run(char *buf, size_t n, const char *id, long line);
bool bk_lease(char *buf, size_t n, const char *id);
bool bk_enq(char *buf, size_t n, const char *id);
bool bk_once(char *buf, size_t n, const char *id, long line);

/* The stored batch object of <id> (new reference), SY_ENOTFOUND, or a store error. */
sy_err bobj_get(sy_store *s, const char *id, json_t **obj);
/* Read-modify-write of the object under compare-and-set (retried on a concurrent change).
 * <fn> edits <obj> and returns 1 to write, 0 to leave it (no write), -1 to give up
 * (SY_EINVAL). *out (may be NULL) receives the object as written or as found (new). */
typedef int (*bobj_fn)(json_t *obj, void *ud);
sy_err bobj_update(sy_store *s, const char *id, bobj_fn fn, void *ud, json_t **out);
/* Sets status <to> with its timestamp when the lifecycle allows the move from <from> (NULL =
 * any status the lifecycle allows). *moved says whether this call made the change. Extra
 * fields in <set> (may be NULL) are merged into the object on the change. */
sy_err bobj_transition(sy_store *s, const char *id, const char *from, const char *to,
                       json_t *set, bool *moved, json_t **out);
/* The object as clients see it: counts merged, "sy_*" fields removed (new). */
json_t *bobj_public(sy_store *s, const json_t *obj);
/* Marks <id> inactive and counts its terminal <status> in {b}:stats. */
void bobj_retire(sy_store *s, const char *id, const char *status);
bool bstatus_terminal(const char *st);

/* The message of a line that never ran because its batch was cancelled or expired (finalize
 * and the provider-batch path write the same one). */
#define BMSG_CANCELLED "This request could not be executed before the batch was cancelled."
#define BMSG_EXPIRED "This request could not be executed before the completion window expired."

/* Stores the result of line <line> of batch <batch_id> once (set NX; <ok>: output or error
 * file; <line_json> the OpenAI per-line object) and counts it once (its once-key). *fresh (may
 * be NULL) says whether this call settled the line: false when it was settled before, by an
 * earlier result or by a finalize that stopped waiting for it (the late result is then
 * dropped). Bill a line only when fresh. Store errors are returned. */
sy_err bline_put(sy_batch *b, const char *batch_id, long line, bool ok, const char *line_json,
                 size_t len, bool *fresh);

/* batch_provider.c: submits due provider-batch groups and merges ended ones (sweeper). */
void sy_batch_provider_sweep(sy_batch *b);
/* Whether line <line> of batch <id> is with the provider-batch path (queued or submitted, its
 * result not yet written). A store failure answers false with *err set. */
bool sy_batch_provider_holds(sy_batch *b, const char *id, long line, sy_err *err);

/* batch_run.c: wakes the validator (a batch was created). */
void brun_kick(sy_batch *b);

/* Wall-clock sleep of <ms> that ends early when the module stops; returns false when it
 * stopped. */
bool brun_sleep(sy_batch *b, long ms);

#endif
