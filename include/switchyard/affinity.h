/* affinity: which deployment served a conversation (tenant + system prompt + first user turn),
 * so its next turns stay there and provider prompt caches stay warm. In-process table with TTL
 * and a size cap (oldest entries evicted first); the store issue moves it to Redis. */
#ifndef SY_AFFINITY_H
#define SY_AFFINITY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The conversation key of a chat body (borrowed) for <tenant> (may be NULL): 0 when the body has
 * no user turn. Pure. */
uint64_t sy_affinity_key(const char *tenant, const json_t *body);
/* Copies the deployment remembered for <key> into <name> (cap <n>) and returns 1, or 0 when
 * none or expired. Thread-safe. */
int sy_affinity_get(uint64_t key, char *name, size_t n, int64_t now_us);
/* Remembers <name> for <key> until now + <ttl_us>. Thread-safe. */
void sy_affinity_put(uint64_t key, const char *name, int64_t ttl_us, int64_t now_us);
/* Empties the table (tests, exit). */
void sy_affinity_reset(void);

#endif
