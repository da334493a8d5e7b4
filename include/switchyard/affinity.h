/* affinity: which deployment served a conversation (tenant + system prompt + first user turn),
 * so its next turns stay there and provider prompt caches stay warm. An in-process table with
 * TTL and a size cap (oldest entries evicted first) answers the router without I/O; with Redis
 * it is a cache of the store, where instances share the memory: every put that is new, changes
 * the deployment or refreshes a half-spent TTL is handed to a publisher (src/shared.c writes it
 * as {a:<key hex>} = <deployment name> with the TTL, off the upstream thread), and a conversation
 * this instance has not seen is looked up in the store by a worker before the request starts
 * (src/server.c). An instance that already remembers a conversation does not ask the store again
 * until its entry expires, so a conversation moved elsewhere by a failover may alternate for at
 * most one TTL. */
#ifndef SY_AFFINITY_H
#define SY_AFFINITY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/err.h"

struct sy_store;

/* The conversation key of a chat body (borrowed) for <tenant> (may be NULL): 0 when the body has
 * no user turn. Pure. */
uint64_t sy_affinity_key(const char *tenant, const json_t *body);
/* Copies the deployment remembered for <key> into <name> (cap <n>) and returns 1, or 0 when
 * none or expired. Thread-safe. */
int sy_affinity_get(uint64_t key, char *name, size_t n, int64_t now_us);
/* Remembers <name> for <key> until now + <ttl_us>, and hands it to the publisher (if any) when
 * the entry is new, names another deployment, or has less than half its TTL left. Thread-safe. */
void sy_affinity_put(uint64_t key, const char *name, int64_t ttl_us, int64_t now_us);

/* The publisher: called outside any lock on the thread that put (the upstream thread), so it
 * must only queue, never block. NULL = none (embedded store, unit tests). */
typedef void (*sy_affinity_publish_fn)(uint64_t key, const char *name, int64_t ttl_us);
void sy_affinity_set_publisher(sy_affinity_publish_fn fn);

#define SY_AFFINITY_NAME_MAX 96 /* bytes of a remembered deployment name, NUL included */

/* The store key of conversation <key>: "{a:<16 hex digits>}". <buf> has room for 24 bytes. */
void sy_affinity_store_key(uint64_t key, char *buf, size_t n);
/* Worker threads only (blocking, bounded by the store's deadline): writes <name> for <key> with
 * a TTL of <ttl_us> (at least 1 ms). Returns the store's error; nothing else changes. */
sy_err sy_affinity_store_put(struct sy_store *s, uint64_t key, const char *name, int64_t ttl_us);
/* Worker threads only: copies the deployment the store remembers for <key> into <name> (cap
 * <n>) and returns 1; 0 when none, when the store is down or slow, or the value does not fit. */
int sy_affinity_store_get(struct sy_store *s, uint64_t key, char *name, size_t n);
/* Empties the table (tests, exit). */
void sy_affinity_reset(void);

#endif
