/* store: the shared-state layer under the prompt cache, spend, limits, affinity, the circuit
 * breaker and the batch queue. One interface, two backends chosen by config:
 *   - embedded (config "redis": null): in-process, thread-safe, an LRU with a memory cap;
 *   - Redis (hiredis 0.14, synchronous API): a bounded pool of non-blocking connections, every
 *     call bounded by one deadline (redis.timeout_ms), fail-fast while Redis is down.
 * The design decision: callers name an operation, never a Redis command or a Lua script. Each
 * backend implements every operation with the same observable semantics (a shared test suite runs
 * against both), so Redis-less tests exercise the real code paths of every caller.
 *
 * ---- Return convention (every operation) ---------------------------------------------------
 *   SY_OK          done; out-parameters written
 *   SY_ENOTFOUND   the key, stream or consumer group does not exist (only where documented)
 *   SY_EINVAL      bad argument (empty key, malformed stream id, ...), or the key holds another
 *                  type, or a hash field is not an integer / would overflow
 *   SY_ETOOBIG     a key, field or value over its cap (SY_STORE_KEY_MAX, max_value_bytes...), or
 *                  a reply larger than the caller's sy_buf cap; nothing was written
 *   SY_ETIMEOUT    the deadline passed (Redis slow, or every pooled connection busy); the outcome
 *                  of a write is then unknown
 *   SY_EUNAVAIL    the store is down (degraded); the call failed at once without I/O
 *   SY_ENOMEM      an allocation failed, or the embedded store is full and nothing is evictable
 *   SY_EINTERNAL   Redis answered something unexpected (an error reply, a protocol error)
 * Out-parameters are written only on SY_OK unless a function says otherwise. Nothing aborts.
 *
 * ---- Deadlines -----------------------------------------------------------------------------
 * A call never blocks its caller longer than timeout_ms (plus block_ms + 150 ms for a blocking
 * stream read: Redis notices BLOCK timeouts on its 100 ms cron tick), connection wait, write and
 * read included. Connections are (re)made only by the store's
 * own monitor thread, so a caller never pays a connect or a DNS lookup. On the MHD and curl
 * threads use only non-blocking calls (block_ms = 0); the cost there is bounded by timeout_ms when
 * Redis is slow and is ~0 when it is down (SY_EUNAVAIL without I/O).
 *
 * ---- Keys ----------------------------------------------------------------------------------
 * Callers pass relative keys; the Redis backend prepends key_prefix (default "sy:"), the
 * embedded one needs none. A key is a NUL-terminated string of 1..SY_STORE_KEY_MAX bytes.
 * Convention, for Redis Cluster: every key starts with a hash tag "{<tag>}" naming the unit that
 * must live in one slot, and the prefix never contains braces (validated), so the tag is the
 * first "{...}" of the full key and decides the slot:
 *     cache entry      {c:<sha256 hex>}                  sy:{c:9f86d0...}
 *     affinity         {a:<conversation hash>}
 *     breaker          {cb:<deployment>}:state, {cb:<deployment>}:fails
 *     rate limit       {l:<key id>}:rpm, {l:<key id>}:tpm
 *     spend            {s:<yyyy-mm-dd>}:<dims hash>, journal marker {s:<yyyy-mm-dd>}:once:<seq>
 *     batch queue      {b}:q (stream), {b}:obj:<batch id>
 * Every multi-key operation (sy_store_hincrby_many with a once-key) must use keys of one tag.
 * The Redis client itself does not follow MOVED/ASK redirects: point it at a standalone Redis or
 * a cluster proxy; the tags make a later cluster client a drop-in.
 *
 * ---- Embedded store eviction ---------------------------------------------------------------
 * mem_store.max_bytes caps the approximate memory of keys and values (bookkeeping included).
 * Like Redis's "volatile-lru": only keys that carry a TTL are evicted, least recently used
 * first; keys without a TTL (spend hashes, the batch stream, batch objects) are never evicted, and
 * a write that cannot fit after evicting every volatile key fails with SY_ENOMEM. Expired keys
 * are removed lazily on access and by a bounded sweep piggy-backed on calls (at most every
 * 100 ms of the store's clock), so there is no expiry thread. Exception: keys of the batch
 * queue's tag ("{b}:...") and spend's once-keys ("{s:<day>}:once:...") are never evicted even
 * with a TTL (they only expire): an evicted line claim, lease or once-key would run, or count and
 * bill, a batch line twice, and an evicted spend once-key would count a replayed batch twice. Recommended Redis
 * setting to match: maxmemory-policy volatile-lru. Redis cannot exempt single keys, so on Redis
 * size maxmemory so that it is never reached while batches run (or use noeviction): its evicted
 * {b} keys have the same effect.
 *
 * ---- Threading -----------------------------------------------------------------------------
 * A sy_store is safe to use from any number of threads at once; sy_store_new/sy_store_free are
 * not concurrent with other calls. Results are owned by the caller (cleanup functions below).
 * The Redis backend never raises SIGPIPE: it sends with MSG_NOSIGNAL instead of hiredis's write.
 *
 * ---- Configuration (documented choice) ------------------------------------------------------
 * "redis": null | {"url", "password_env", "timeout_ms", "pool", "key_prefix", "max_value_bytes"}
 * "mem_store": {"max_bytes", "max_value_bytes"}, a separate optional top-level object, because
 * "redis" is null exactly when the embedded store is used. sy_store_config_doc() prints both
 * tables. TLS (rediss://) is a config error: Debian 12's hiredis 0.14.1 has no hiredis_ssl. */
#ifndef SY_STORE_H
#define SY_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "switchyard/buf.h"
#include "switchyard/err.h"

#define SY_STORE_KEY_MAX 512        /* bytes of a relative key */
#define SY_STORE_FIELD_MAX 512      /* bytes of a hash field or stream field name */
#define SY_STORE_NAME_MAX 128       /* bytes of a consumer group or consumer name */
#define SY_STORE_PREFIX_MAX 64      /* bytes of key_prefix */
#define SY_STORE_BATCH_MAX 4096     /* operations in one sy_store_hincrby_many */
#define SY_STORE_COUNT_MAX 1000     /* entries per stream read, claim or pending list */
#define SY_STREAM_FIELDS_MAX 64     /* fields per stream entry */
#define SY_STORE_BLOCK_MAX_MS 30000 /* longest blocking stream read */
#define SY_STREAM_ID_MAX 48         /* "<ms>-<seq>" plus NUL */

typedef struct sy_store sy_store;

typedef enum sy_store_kind { SY_STORE_MEM, SY_STORE_REDIS } sy_store_kind;

/* Milliseconds since the Unix epoch; the embedded store's data clock (TTLs, stream ids, idle
 * times, rate limits). Tests inject one; NULL means CLOCK_REALTIME. Called under the store's
 * lock: it must not call the store. */
typedef int64_t (*sy_store_clock_fn)(void *ud);

typedef struct sy_store_redis_opts {
    char *url;       /* as configured (it never holds a password), for logs */
    char *host;      /* TCP host (NULL for a unix socket) */
    int port;        /* TCP port */
    char *unix_path; /* unix socket path (NULL for TCP) */
    int db;          /* SELECT <db> when not 0 */
    char *user;      /* ACL user from redis://user@host (NULL = default user) */
    char *password_env;
    char *password; /* read from password_env at parse time; never logged; wiped on cleanup */
    long timeout_ms;
    int pool;
    char *key_prefix;
    size_t max_value_bytes;
} sy_store_redis_opts;

typedef struct sy_store_mem_opts {
    size_t max_bytes;
    size_t max_value_bytes;
    sy_store_clock_fn clock; /* not from config: tests only */
    void *clock_ud;
} sy_store_mem_opts;

/* Caller-owned. Fields are filled by the parse functions; sy_store_new copies what it needs. */
typedef struct sy_store_opts {
    sy_store_kind kind;
    sy_store_redis_opts redis;
    sy_store_mem_opts mem;
} sy_store_opts;

/* Sets every default (kind MEM, the table defaults). Never fails. */
void sy_store_opts_init(sy_store_opts *o);
/* Frees what the parse functions allocated and wipes the password. Safe twice. */
void sy_store_opts_cleanup(sy_store_opts *o);

/* Validates the raw "redis" value (<redis> NULL or JSON null = embedded store) into <out>, which
 * must have been initialised with sy_store_opts_init. Every problem is one line in <errs> with
 * its JSON path ("redis.timeout_ms: must be an integer in 1..60000"). Reads password_env from the
 * environment; an unset variable is an error. Returns SY_OK, SY_ECONFIG (problems listed) or
 * SY_ENOMEM. Error messages never echo the URL's user part or a password. */
sy_err sy_store_config_parse(const json_t *redis, sy_store_opts *out, sy_errlist *errs);

/* The same for the optional top-level "mem_store" object (NULL or null = defaults). */
sy_err sy_store_config_parse_mem(const json_t *mem_store, sy_store_opts *out, sy_errlist *errs);

/* Markdown tables (key, type, default, bounds, meaning) for "redis" and "mem_store", generated
 * from the descriptor tables that drive parsing. SY_OK or SY_EINTERNAL when writing fails. */
sy_err sy_store_config_doc(FILE *out);

/* ---- lifecycle and health ---------------------------------------------------------------- */

/* Creates a store of opts->kind. For Redis, tries to connect the pool once (bounded by
 * timeout_ms per connection) and starts the monitor thread; an unreachable Redis is not an error:
 * the store starts degraded and reconnects by itself. Returns SY_OK, SY_ENOMEM or SY_EINTERNAL
 * (thread creation). *out is new, freed with sy_store_free. */
sy_err sy_store_new(const sy_store_opts *opts, sy_store **out);
/* Stops the monitor and frees everything. No call may be in flight. NULL is a no-op. */
void sy_store_free(sy_store *s);

sy_store_kind sy_store_kind_of(const sy_store *s);
/* False while Redis is down (degraded); always true for the embedded store. Each change is
 * logged once (WARN going down, INFO coming back). */
bool sy_store_healthy(const sy_store *s);

typedef struct sy_store_stats {
    bool healthy;
    uint64_t ops;      /* calls made */
    uint64_t failures; /* calls that returned SY_ETIMEOUT, SY_EUNAVAIL or SY_EINTERNAL */
    /* embedded */
    size_t keys;
    size_t bytes;
    size_t max_bytes;
    uint64_t evictions;
    uint64_t expirations;
    /* Redis */
    int pool;
    int connected;
    uint64_t reconnects; /* successful connects after the first */
} sy_store_stats;

void sy_store_stats_get(sy_store *s, sy_store_stats *out);

/* ---- strings -------------------------------------------------------------------------------- */

#define SY_STORE_NX 1u /* set only if absent */
#define SY_STORE_XX 2u /* set only if present */

/* Appends the value of <key> to <out> (binary-safe; out->data stays NUL-terminated). SY_ENOTFOUND
 * when absent or expired; SY_ETOOBIG when it would pass out->max (out unchanged). */
sy_err sy_store_get(sy_store *s, const char *key, sy_buf *out);
/* Sets <key> to <len> bytes at <val>, with a TTL of <ttl_ms> (0 = none; a set without TTL clears
 * an old one). <flags>: 0, SY_STORE_NX or SY_STORE_XX. *stored (may be NULL) says whether it was
 * written (false only when NX/XX prevented it). SY_ETOOBIG over max_value_bytes. */
sy_err sy_store_set(sy_store *s, const char *key, const void *val, size_t len, int64_t ttl_ms,
                    unsigned flags, bool *stored);
/* *existed (may be NULL): whether a key was removed. */
sy_err sy_store_del(sy_store *s, const char *key, bool *existed);
sy_err sy_store_exists(sy_store *s, const char *key, bool *exists);
/* Sets a TTL (ttl_ms > 0) on any key type. *existed (may be NULL) false when there was no key. */
sy_err sy_store_expire(sy_store *s, const char *key, int64_t ttl_ms, bool *existed);
/* Remaining TTL in ms, or -1 when the key has none. SY_ENOTFOUND when absent. */
sy_err sy_store_ttl(sy_store *s, const char *key, int64_t *ttl_ms);

/* ---- hashes of integer counters ------------------------------------------------------------- */

/* Adds <by> to integer field <field> of hash <key> (created at 0), *result (may be NULL) is the
 * new value. SY_EINVAL when the field is not an integer or the sum overflows int64. */
sy_err sy_store_hincrby(sy_store *s, const char *key, const char *field, int64_t by,
                        int64_t *result);

typedef struct sy_store_incr {
    const char *key;
    const char *field;
    int64_t by;
    int64_t ttl_ms; /* > 0: (re)set the key's TTL after the increment */
    int64_t result; /* out: the new value */
} sy_store_incr;

/* Applies <n> (1..SY_STORE_BATCH_MAX) increments atomically in one round trip (Redis: MULTI/EXEC
 * pipeline, or one script with a once-key). With <once_key> non-NULL the batch is applied only if
 * <once_key> did not exist, and <once_key> is created with <once_ttl_ms> (> 0) in the same atomic
 * step: a journal replay applies each batch exactly once. *applied (may be NULL) is false when
 * the once-key already existed (then results are not written). On SY_EINVAL (a field not an
 * integer, or overflow) nothing is applied by the embedded store; Redis applies the increments
 * before the failing one (MULTI/EXEC has no rollback), so callers keep fields well-typed. */
sy_err sy_store_hincrby_many(sy_store *s, sy_store_incr *ops, size_t n, const char *once_key,
                             int64_t once_ttl_ms, bool *applied);

/* One field or value of a result: both NUL-terminated copies, lengths excluding the NUL. */
typedef struct sy_store_kv {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
} sy_store_kv;

typedef struct sy_store_kvs {
    sy_store_kv *items;
    size_t n;
} sy_store_kvs;

void sy_store_kvs_init(sy_store_kvs *k);
void sy_store_kvs_cleanup(sy_store_kvs *k);

/* ---- hashes of strings ---------------------------------------------------------------------- */

/* Sets string field <field> of hash <key> (created when missing) to <len> bytes at <value>
 * (binary-safe, <= max_value_bytes). <flags>: 0 or SY_STORE_NX (only when the field is absent:
 * HSETNX). *stored (may be NULL) says whether it was written. A hash's TTL is kept. Fields set
 * here and counters of sy_store_hincrby may share a hash: an increment of a field set here works
 * when its value is a decimal int64 (as in Redis), else SY_EINVAL. SY_EINVAL when <key> holds
 * another type. */
sy_err sy_store_hset(sy_store *s, const char *key, const char *field, const void *value,
                     size_t len, unsigned flags, bool *stored);
/* Removes <field> of hash <key>; the hash goes away with its last field. *existed (may be NULL)
 * says whether there was such a field. A missing key is SY_OK with *existed false. */
sy_err sy_store_hdel(sy_store *s, const char *key, const char *field, bool *existed);

/* All fields of hash <key> into <out> (initialised by the caller; replaced). A missing key is an
 * empty result (SY_OK, n = 0). Order is unspecified. SY_ETOOBIG when the fields and values total
 * more than max_value_bytes * 16. */
sy_err sy_store_hgetall(sy_store *s, const char *key, sy_store_kvs *out);

/* ---- built-in atomic scripts ---------------------------------------------------------------- */

/* GCRA rate limit: a sustained <rate> units per <period_ms>, at most <burst> units at once.
 * Takes <cost> units (0 = peek; negative = give back, e.g. settling an over-estimate). <force>
 * applies the cost even when it exceeds the limit (settling actual usage). Time is the store's:
 * Redis's TIME for Redis (every instance agrees), the data clock for the embedded store. The
 * key expires when fully replenished. */
typedef struct sy_store_gcra_req {
    int64_t rate;      /* >= 1 */
    int64_t period_ms; /* >= 1, with rate <= period_ms * 1000 (one unit per microsecond) */
    int64_t burst;     /* >= 1 */
    int64_t cost;      /* |cost| <= burst unless force */
    bool force;
} sy_store_gcra_req;

typedef struct sy_store_gcra_res {
    bool allowed;
    int64_t remaining;      /* units that could be taken right now after this call (>= 0) */
    int64_t retry_after_ms; /* when denied: wait this long for <cost> to fit; else 0 */
    int64_t reset_ms;       /* time until the bucket is full again */
} sy_store_gcra_res;

sy_err sy_store_gcra(sy_store *s, const char *key, const sy_store_gcra_req *req,
                     sy_store_gcra_res *res);

typedef enum sy_store_cas_expect {
    SY_CAS_ANY,    /* unconditional */
    SY_CAS_ABSENT, /* only if the key does not exist */
    SY_CAS_EQUAL   /* only if the value equals expect/expect_len (binary compare) */
} sy_store_cas_expect;

/* Compare-and-set with TTL on a string key, atomically. On a match the key is set to
 * value/value_len with ttl_ms (0 = none), or deleted when <del>. */
typedef struct sy_store_cas_req {
    sy_store_cas_expect expect_mode;
    const void *expect;
    size_t expect_len;
    const void *value;
    size_t value_len;
    int64_t ttl_ms;
    bool del;
} sy_store_cas_req;

/* *swapped: whether the update happened. When it did not and <current> is not NULL, the current
 * value (if any) is appended to <current> (its cap applies; SY_ETOOBIG when over). */
sy_err sy_store_cas(sy_store *s, const char *key, const sy_store_cas_req *req, bool *swapped,
                    sy_buf *current);

/* ---- streams (the batch queue) --------------------------------------------------------------- */

typedef struct sy_store_field {
    const char *name; /* NUL-terminated, 1..SY_STORE_FIELD_MAX bytes */
    const void *value;
    size_t value_len; /* <= max_value_bytes */
} sy_store_field;

typedef struct sy_stream_entry {
    char id[SY_STREAM_ID_MAX];
    sy_store_kvs fields;
    bool deleted; /* pending but no longer in the stream (Redis only: after an XDEL elsewhere) */
} sy_stream_entry;

typedef struct sy_stream_entries {
    sy_stream_entry *items;
    size_t n;
} sy_stream_entries;

void sy_stream_entries_init(sy_stream_entries *e);
void sy_stream_entries_cleanup(sy_stream_entries *e);

/* Appends an entry with an automatic id (written to <id_out>, may be NULL). 1..
 * SY_STREAM_FIELDS_MAX fields. The stream is created when missing. */
sy_err sy_store_xadd(sy_store *s, const char *stream, const sy_store_field *fields, size_t n,
                     char id_out[SY_STREAM_ID_MAX]);

/* Creates consumer group <group> at <start_id> ("$" = only new entries, "0" = everything),
 * creating the stream if needed. An existing group is not an error: *created (may be NULL)
 * says which. */
sy_err sy_store_xgroup_create(sy_store *s, const char *stream, const char *group,
                              const char *start_id, bool *created);

/* Reads up to <count> (1..SY_STORE_COUNT_MAX) entries for <consumer> into <out> (initialised by
 * the caller; replaced). <from> ">" delivers new entries (they enter the group's pending list,
 * delivery count 1); any other id re-reads this consumer's own pending entries after that id
 * (delivery count + 1). <block_ms> 0 returns at once; 1..SY_STORE_BLOCK_MAX_MS waits that long
 * for new entries (worker threads only; at most max(1, pool/2) blocking reads hold Redis
 * connections, others wait for a turn within <block_ms> and then return empty; with pool 1 a
 * blocking read holds the only connection, so give batch workers pool >= 2). Empty is SY_OK with
 * n = 0.
 * SY_ENOTFOUND when the stream or group does not exist. */
sy_err sy_store_xreadgroup(sy_store *s, const char *stream, const char *group, const char *consumer,
                           const char *from, size_t count, long block_ms, sy_stream_entries *out);

/* Acknowledges <n> (1..SY_STORE_COUNT_MAX) ids; with <del> also deletes them from the stream in
 * the same round trip. *acked (may be NULL) counts the ids that were pending. */
sy_err sy_store_xack(sy_store *s, const char *stream, const char *group, const char *const *ids,
                     size_t n, bool del, size_t *acked);

/* Transfers to <consumer> up to <count> pending entries idle for at least <min_idle_ms>, scanning
 * the pending list from <start> ("0-0" first). Claimed entries get delivery count + 1. <next> is
 * the cursor for the next call ("0-0" when the scan is complete). SY_ENOTFOUND without group. */
sy_err sy_store_xautoclaim(sy_store *s, const char *stream, const char *group, const char *consumer,
                           int64_t min_idle_ms, const char *start, size_t count,
                           sy_stream_entries *out, char next[SY_STREAM_ID_MAX]);

/* Entries in the stream (0 when it does not exist). */
sy_err sy_store_xlen(sy_store *s, const char *stream, int64_t *len);

typedef struct sy_stream_pending {
    int64_t count;                 /* entries delivered and not acknowledged */
    char min_id[SY_STREAM_ID_MAX]; /* "" when count == 0 */
    char max_id[SY_STREAM_ID_MAX];
    size_t consumers; /* consumers with pending entries */
} sy_stream_pending;

/* The group's pending summary. SY_ENOTFOUND when the stream or group does not exist. */
sy_err sy_store_xpending(sy_store *s, const char *stream, const char *group,
                         sy_stream_pending *out);

typedef struct sy_stream_pel_item {
    char id[SY_STREAM_ID_MAX];
    char consumer[SY_STORE_NAME_MAX + 1];
    int64_t idle_ms;
    int64_t deliveries;
} sy_stream_pel_item;

/* Up to <count> pending entries with id >= <start> ("-" = from the first), of <consumer> only
 * when not NULL, into items[0..*n) (caller's array of at least <count>). SY_ENOTFOUND as above. */
sy_err sy_store_xpending_list(sy_store *s, const char *stream, const char *group, const char *start,
                              const char *consumer, size_t count, sy_stream_pel_item *items,
                              size_t *n);

/* ---- tests --------------------------------------------------------------------------------- */

/* Replaces the allocator used for the store module's own memory (not hiredis's or jansson's), so
 * unit tests can fail allocations one by one. NULLs restore malloc/realloc/free. Call only while
 * no store call runs. */
void sy_store_set_allocator(void *(*alloc)(size_t), void *(*resize)(void *, size_t),
                            void (*release)(void *));

#endif
