/* store_int: what store.c shares with its two backends (store_mem.c, store_redis.c): the
 * operations table, the allocator hooks and small helpers. Not a public interface.
 * store.c validates every argument that both backends would check the same way (key lengths,
 * value caps, stream ids, counts) before dispatching, so a backend may assume them valid. */
#ifndef SY_STORE_INT_H
#define SY_STORE_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "switchyard/store.h"

typedef struct sy_store_vt {
    void (*destroy)(sy_store *s);
    bool (*healthy)(const sy_store *s);
    void (*stats)(sy_store *s, sy_store_stats *out);
    sy_err (*get)(sy_store *s, const char *key, sy_buf *out);
    sy_err (*set)(sy_store *s, const char *key, const void *val, size_t len, int64_t ttl_ms,
                  unsigned flags, bool *stored);
    sy_err (*del)(sy_store *s, const char *key, bool *existed);
    sy_err (*exists)(sy_store *s, const char *key, bool *exists);
    sy_err (*expire)(sy_store *s, const char *key, int64_t ttl_ms, bool *existed);
    sy_err (*ttl)(sy_store *s, const char *key, int64_t *ttl_ms);
    sy_err (*hincrby_many)(sy_store *s, sy_store_incr *ops, size_t n, const char *once_key,
                           int64_t once_ttl_ms, bool *applied);
    sy_err (*hgetall)(sy_store *s, const char *key, sy_store_kvs *out);
    sy_err (*hset)(sy_store *s, const char *key, const char *field, const void *value,
                   size_t len, unsigned flags, bool *stored);
    sy_err (*hdel)(sy_store *s, const char *key, const char *field, bool *existed);
    sy_err (*gcra)(sy_store *s, const char *key, const sy_store_gcra_req *req,
                   sy_store_gcra_res *res);
    sy_err (*cas)(sy_store *s, const char *key, const sy_store_cas_req *req, bool *swapped,
                  sy_buf *current);
    sy_err (*xadd)(sy_store *s, const char *stream, const sy_store_field *fields, size_t n,
                   char id_out[SY_STREAM_ID_MAX]);
    sy_err (*xgroup_create)(sy_store *s, const char *stream, const char *group,
                            const char *start_id, bool *created);
    sy_err (*xreadgroup)(sy_store *s, const char *stream, const char *group, const char *consumer,
                         const char *from, size_t count, long block_ms, sy_stream_entries *out);
    sy_err (*xack)(sy_store *s, const char *stream, const char *group, const char *const *ids,
                   size_t n, bool del, size_t *acked);
    sy_err (*xautoclaim)(sy_store *s, const char *stream, const char *group, const char *consumer,
                         int64_t min_idle_ms, const char *start, size_t count,
                         sy_stream_entries *out, char next[SY_STREAM_ID_MAX]);
    sy_err (*xlen)(sy_store *s, const char *stream, int64_t *len);
    sy_err (*xpending)(sy_store *s, const char *stream, const char *group, sy_stream_pending *out);
    sy_err (*xpending_list)(sy_store *s, const char *stream, const char *group, const char *start,
                            const char *consumer, size_t count, sy_stream_pel_item *items,
                            size_t *n);
} sy_store_vt;

/* The common head of both backends' structs (first member). */
struct sy_store {
    const sy_store_vt *vt;
    sy_store_kind kind;
    size_t max_value_bytes;
    atomic_uint_fast64_t ops;
    atomic_uint_fast64_t failures;
};

void sy_store__init_head(sy_store *s, const sy_store_vt *vt, sy_store_kind kind,
                         size_t max_value_bytes);
sy_err sy_store_mem_new(const sy_store_opts *opts, sy_store **out);
sy_err sy_store_redis_new(const sy_store_opts *opts, sy_store **out);

/* The module's allocator (see sy_store_set_allocator). */
void *sy_store__malloc(size_t n);
void *sy_store__calloc(size_t n, size_t size);
void *sy_store__realloc(void *p, size_t n);
void sy_store__free(void *p);
char *sy_store__strdup(const char *s);
/* <n> bytes at <p> plus a NUL. */
char *sy_store__memdup0(const void *p, size_t n);

/* Stream ids "<ms>-<seq>". */
typedef struct sy_sid {
    uint64_t ms;
    uint64_t seq;
} sy_sid;

/* Parses "<ms>-<seq>" or "<ms>" (seq defaults to <dflt_seq>). False when malformed. */
bool sy_sid_parse(const char *s, uint64_t dflt_seq, sy_sid *out);
void sy_sid_format(sy_sid id, char out[SY_STREAM_ID_MAX]);
int sy_sid_cmp(sy_sid a, sy_sid b);

/* Monotonic clock in milliseconds (deadlines; never the data clock). */
int64_t sy_store__mono_ms(void);

#endif
