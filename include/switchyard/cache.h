/* cache: the prompt cache (DESIGN §6). Keys, eligibility, the stored entry, the stream
 * accumulator and replay are pure functions (no I/O, callable from any thread); only
 * sy_cache_get/put and sy_cache_embed_lookup/put touch the store, and they block up to the store's
 * deadline, so the relay calls them on a worker thread, never on the MHD or curl threads.
 * The design decision: the key is a deny-list hash. Everything in the request body counts except
 * a short list of fields known not to change the answer, so a parameter nobody has heard of yet
 * makes a different key (a miss), never a wrong hit.
 *
 * ---- Key --------------------------------------------------------------------------------------
 * SHA-256 (OpenSSL EVP) over a framed, canonical serialization of
 *     version | endpoint | route | deployment model | tenant | body minus the deny-list
 * Every string field is length-prefixed, so no choice of names can make two inputs collide. The
 * body serialization is this module's own canonical JSON, streamed into the digest (no copy of
 * the body is made): object keys sorted bytewise, no whitespace, strings escaped one way (only
 * '"', '\' and control bytes escaped, other UTF-8 raw), numbers normalised so equal JSON numbers
 * are equal: a real with an integral value and |x| <= 2^53 is written as that integer (1, 1.0
 * and 1e0 are one key; -0.0 is 0), other reals with "%.17g" (round-trip exact), integers in
 * decimal. Nothing else is normalised: an explicit default (temperature 1, "stop": null) is a
 * different key from an absent field; that only costs a miss.
 * Deny-list (top-level fields only; nested ones always count):
 *     stream, stream_options   the client's mode; a hit is replayed in whichever mode is asked
 *     user, safety_identifier, metadata, store, prompt_cache_key, service_tier
 *                              abuse tracking, storage, provider-side routing and latency
 *                              tiers: none changes the answer
 *     encoding_format          embeddings only: entries hold floats, converted on replay
 * The stored key is "{c:<64 lowercase hex>}" (the store's key convention).
 *
 * ---- Eligibility ------------------------------------------------------------------------------
 * Route mode never: no lookup, no store. always: both. deterministic: both when the body has a
 * numeric temperature equal to 0 or a non-null integer seed; embeddings always qualify (they are
 * deterministic); n is in the key, so n > 1 is cached like n = 1. The client's Cache-Control
 * header (comma-separated, case-insensitive directives) can only narrow that:
 *     no-cache (or max-age=0)  skip the lookup, still store the fresh answer (a refresh)
 *     no-store                 skip the write; a stored answer may still be served (RFC 9111
 *                              §5.2.1.5: no-store forbids storing, not serving)
 *     both                     bypass entirely
 * Response header x-switchyard-cache: "hit" when served from the cache, "miss" when looked up
 * and not served (absent, store down, corrupt), "bypass" when no lookup was made.
 *
 * ---- Entry ------------------------------------------------------------------------------------
 * One JSON document: {"v":1,"k":"<key>","ep":"chat","created_at":<ms>,"deployment":"<name>",
 * "cost_micros":<n or -1>,"answer":{...}}. The answer is the normalised non-stream answer
 * (sy_openai_normalize); its usage is the original usage. "k" is checked on read, so an entry
 * stored under another key (a bug, a manual copy) is never served.
 *
 * ---- Replay (documented choice) ---------------------------------------------------------------
 * A hit gets a fresh id ("chatcmpl-<request id>", "cmpl-<request id>") and created = now: ids stay
 * unique per response for clients and log pipelines that key on them; the entry's created_at
 * tells the relay the age (an "age" header if it wants one). model, system_fingerprint,
 * choices and usage are the original's (usage says what the answer cost to make; spend must
 * charge a hit nothing).
 *
 * ---- Embeddings (documented choice): cached per input -----------------------------------------
 * Each input (a string or a token array) has its own key: the request body with "input" replaced
 * by that one input. A request with N inputs looks up N keys (one store call each, bounded by the
 * store's deadline; store errors make the rest misses at once), sends only the distinct misses
 * upstream (in order, same input form), stores each fresh vector, and answers the merged list in
 * the client's order and encoding. RAG re-embeds the same chunks in different batches, so a
 * whole-request key would almost never hit. The merged answer's usage is what went upstream (all
 * zero on a full hit).
 *
 * ---- Threads ----------------------------------------------------------------------------------
 *   any thread (pure): sy_cache_key, sy_cache_eligible, sy_cache_header, sy_cache_acc_*, the
 *                      entry codec, sy_cache_replay_*, sy_cache_embed_init/miss_body/fill/answer
 *   worker thread:     sy_cache_get, sy_cache_put, sy_cache_embed_lookup, sy_cache_embed_put
 * A sy_cache_acc or sy_cache_embed is used by one thread at a time. */
#ifndef SY_CACHE_H
#define SY_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/buf.h"
#include "switchyard/err.h"
#include "switchyard/request.h"
#include "switchyard/routes.h"
#include "switchyard/store.h"

#define SY_CACHE_VERSION 1
#define SY_CACHE_KEY_SIZE 72           /* "{c:" + 64 hex + "}" + NUL = 69, rounded up */
#define SY_CACHE_NAME_MAX 128          /* bytes of a deployment name kept in an entry */
#define SY_CACHE_MAX_CHOICES 128       /* choice indexes an accumulated stream may use */
#define SY_CACHE_MAX_TOOL_CALLS 128    /* tool-call indexes per choice */
#define SY_CACHE_ENTRY_MAX (64u << 20) /* hard cap on an entry read from the store */
#define SY_CACHE_EMBED_MAX_INPUTS 2048 /* more inputs than this: embeddings bypass the cache */

/* ---- key ------------------------------------------------------------------------------------ */

typedef struct sy_cache_key_in {
    sy_endpoint ep;
    const char *route;  /* the route's name (sy_pick.route); NULL = "" */
    const char *model;  /* the deployment's upstream model (sy_deployment.model): pick.targets[0]
                           for the lookup, the deployment that answered for the store */
    const char *tenant; /* API key id or team; NULL = "" (all anonymous callers share) */
    const json_t *body; /* the client's parsed body (borrowed), a JSON object */
} sy_cache_key_in;

/* Writes the store key "{c:<hex>}" for <in> into <key>. Returns SY_OK, SY_EINVAL (body not an
 * object), SY_ENOMEM, or SY_EINTERNAL (the digest failed). Pure. */
sy_err sy_cache_key(const sy_cache_key_in *in, char key[SY_CACHE_KEY_SIZE]);

/* ---- eligibility ---------------------------------------------------------------------------- */

typedef struct sy_cache_plan {
    bool lookup;        /* look the key up before going upstream */
    bool store;         /* store a successful answer */
    const char *reason; /* static, for logs: "mode never", "not deterministic", "no-cache",
                           "no-store", "no-cache, no-store", or "" when both are true */
} sy_cache_plan;

/* The plan for a request on a route in <mode>, endpoint <ep>, client <body> (borrowed; NULL is
 * treated as {}), and the Cache-Control request header <cache_control> (NULL when absent). */
sy_cache_plan sy_cache_eligible(sy_cache_mode mode, sy_endpoint ep, const json_t *body,
                                const char *cache_control);

/* The x-switchyard-cache header value: "hit" when <hit>, else "miss" when the plan looked up,
 * else "bypass". Static string. */
const char *sy_cache_header(const sy_cache_plan *plan, bool hit);

/* ---- entries -------------------------------------------------------------------------------- */

typedef struct sy_cache_entry {
    sy_endpoint ep;
    json_t *answer;                     /* owned: the normalised non-stream answer */
    int64_t created_at_ms;              /* wall clock when it was made */
    char deployment[SY_CACHE_NAME_MAX]; /* who answered ("" unknown; longer names truncated) */
    int64_t cost_micros;                /* original cost in micro-dollars, -1 unknown */
} sy_cache_entry;

/* Zeroes <e> (answer NULL, cost -1). */
void sy_cache_entry_init(sy_cache_entry *e);
/* Releases the answer and re-initialises. Safe twice. */
void sy_cache_entry_cleanup(sy_cache_entry *e);
/* Sets e->answer to a new reference to <answer> (borrowed), e->deployment from <deployment>
 * (may be NULL), created_at_ms and cost_micros as given. Never fails. */
void sy_cache_entry_set(sy_cache_entry *e, sy_endpoint ep, json_t *answer, const char *deployment,
                        int64_t created_at_ms, int64_t cost_micros);

/* Appends the encoded entry for <key> to <out>. SY_ETOOBIG when it passes out->max (out is then
 * reset to empty), SY_EINVAL when e->answer is not an object, SY_ENOMEM. */
sy_err sy_cache_entry_encode(const sy_cache_entry *e, const char *key, sy_buf *out);
/* Decodes <len> bytes into <out> (initialised by the caller; replaced on SY_OK only). <key> (may
 * be NULL) must equal the entry's "k". SY_EINVAL when the bytes are not a version-1 entry for
 * <key>, SY_ENOMEM. */
sy_err sy_cache_entry_decode(const char *data, size_t len, const char *key, sy_cache_entry *out);

/* ---- store operations (worker thread) ------------------------------------------------------- */

/* Outcomes for counters and logs. Every outcome but HIT means "not served from the cache" for
 * sy_cache_get, and every outcome but STORED means "not written" for sy_cache_put; none is an
 * error for the request. Never renumbered: append. */
#define SY_CACHE_STATUS_MAP(X)                                                                     \
    X(HIT, "hit")                 /* get: found and decoded */                                     \
    X(MISS, "miss")               /* get: absent or expired */                                     \
    X(STORED, "stored")           /* put: written */                                               \
    X(TOOBIG, "too_big")          /* put: over max_entry_bytes or the store's value cap */         \
    X(STORE_ERROR, "store_error") /* the store is down, slow or answered an error */               \
    X(CORRUPT, "corrupt")         /* get: undecodable, another key's, or another endpoint's */     \
    X(NOMEM, "nomem")             /* an allocation failed */                                       \
    X(INVALID, "invalid")         /* bad arguments (empty key, no answer, ttl < 1) */

typedef enum sy_cache_status {
#define SY_CACHE_STATUS_ENUM(name, str) SY_CACHE_##name,
    SY_CACHE_STATUS_MAP(SY_CACHE_STATUS_ENUM)
#undef SY_CACHE_STATUS_ENUM
        SY_CACHE__COUNT
} sy_cache_status;

/* "hit", "miss", ... ("unknown" out of range). */
const char *sy_cache_status_name(sy_cache_status st);

/* Looks <key> up; on HIT <out> (initialised by the caller) holds the entry (replaced), and its
 * endpoint equals <ep> (otherwise CORRUPT). Blocks up to the store's deadline. */
sy_cache_status sy_cache_get(sy_store *s, const char *key, sy_endpoint ep, sy_cache_entry *out);

/* Stores <e> under <key> with a TTL of <ttl_s> (>= 1) seconds, unless the encoded entry is over
 * <max_entry_bytes> (0 = only the store's own value cap applies). Blocks up to the store's
 * deadline. */
sy_cache_status sy_cache_put(sy_store *s, const char *key, const sy_cache_entry *e, long ttl_s,
                             size_t max_entry_bytes);

/* ---- stream accumulator --------------------------------------------------------------------- */

/* Builds the non-stream answer from the chunks of a stream the relay sent to the client (chat
 * or legacy completions). Storage owned by the caller; every field is private. */
typedef struct sy_cache_acc {
    sy_endpoint ep;
    size_t max_bytes; /* cap on accumulated text; 0 = SY_CACHE_ENTRY_MAX */
    size_t bytes;
    sy_err err;    /* sticky: the first failure */
    bool done;     /* "[DONE]" was fed */
    json_t *env;   /* id, model, created, system_fingerprint, service_tier */
    json_t *usage; /* the last usage seen */
    struct sy_cache_acc_choice **choices;
    size_t nchoices; /* 1 + the highest index seen */
} sy_cache_acc;

/* Never fails (allocation happens on feed). <ep> SY_EP_CHAT or SY_EP_COMPLETIONS. */
void sy_cache_acc_init(sy_cache_acc *a, sy_endpoint ep, size_t max_bytes);

/* Feeds one client-bound chunk (borrowed; after sy_openai_stream_event's fix-ups: tool-call
 * deltas carry index). Merges: content, refusal and reasoning_content/reasoning concatenated per
 * choice, tool calls merged by index (id, type and name from the first delta that has them,
 * arguments concatenated), logprobs arrays concatenated, finish_reason, usage (last wins). A
 * usage-only chunk (choices: []) is fine. Returns SY_OK, or (sticky: every later call returns
 * it too) SY_EINVAL for an inconsistent stream (another id or model mid-stream, a wrong object
 * type, content after the choice's finish_reason, a tool call whose id or name changes, an
 * index out of range, anything after [DONE]), SY_EUPSTREAM for an error event,
 * SY_EUNSUPPORTED for a non-null delta field it does not know (legacy function_call, audio), or
 * SY_ETOOBIG / SY_ENOMEM. */
sy_err sy_cache_acc_feed(sy_cache_acc *a, const json_t *chunk);

/* The same for the text of one SSE data field: "[DONE]" marks the end, anything else is parsed
 * as a chunk (SY_EINVAL when it is not JSON; jansson reports some allocation failures while
 * parsing as syntax errors, so SY_EINVAL may also mean out of memory: nothing is stored either
 * way). */
sy_err sy_cache_acc_feed_data(sy_cache_acc *a, const char *data, size_t len);

/* Finishes: <completed> is the relay's word that the stream ended cleanly (finish_reason seen,
 * [DONE] received, no error, no cut). <usage> (borrowed, may be NULL) overrides the usage seen in
 * chunks (the relay's sy_stream_fix.usage, kept even when the client did not ask for the usage
 * chunk). On SY_OK *answer is a new, normalised non-stream answer, equal to what the upstream
 * would have answered without stream (content null when empty and the choice has tool calls or
 * a refusal). Returns the sticky error, or SY_EINVAL when !completed, no choice was seen, choice
 * or tool-call indexes have gaps, a choice has no finish_reason, or a tool call lacks its id or
 * name. */
sy_err sy_cache_acc_finish(sy_cache_acc *a, bool completed, const json_t *usage, json_t **answer);

/* Frees everything. Safe twice. */
void sy_cache_acc_cleanup(sy_cache_acc *a);

/* ---- replay (pure) -------------------------------------------------------------------------- */

typedef struct sy_cache_replay {
    const char
        *req_id;       /* the proxy's request id for the fresh answer id; NULL keeps the original */
    int64_t now_s;     /* "created" of the fresh answer; 0 keeps the original */
    bool client_usage; /* streams: the client asked stream_options.include_usage */
    bool embed_b64;    /* embeddings: the client asked encoding_format "base64" */
} sy_cache_replay;

/* The answer to send for a hit: a new object (deep copy) with the fresh id and created. NULL on
 * allocation failure. Embeddings are converted to base64 when asked. */
json_t *sy_cache_replay_answer(const sy_cache_entry *e, const sy_cache_replay *o);

/* The non-stream body: a new malloc'd compact JSON string (length in *len). SY_OK / SY_ENOMEM /
 * SY_EINVAL (embeddings that cannot be converted). */
sy_err sy_cache_replay_json(const sy_cache_entry *e, const sy_cache_replay *o, char **body,
                            size_t *len);

/* The whole SSE stream for a hit (chat and completions) through sy_openai_to_sse: role chunk,
 * content, tool calls with index, finish_reason, the usage chunk when o->client_usage, [DONE].
 * Appends to <out>; SY_EINVAL for embeddings; SY_ETOOBIG / SY_ENOMEM from <out>. */
sy_err sy_cache_replay_sse(const sy_cache_entry *e, const sy_cache_replay *o, sy_buf *out);

/* ---- embeddings per input ------------------------------------------------------------------- */

/* Flow (relay):
 *   sy_cache_embed_init(&ce, &key_in)                  any thread; on error: no caching
 *   sy_cache_embed_lookup(store, &ce)                  worker; skip when the plan has no lookup
 *   if ce.nmiss > 0:
 *       sy_cache_embed_miss_body(&ce, body, &mb)       the body to send upstream instead
 *       ... relay mb; sy_openai_normalize(EMBEDDINGS, resp, false, ...)
 *       sy_cache_embed_fill(&ce, resp)                 validates and takes the fresh vectors
 *       sy_cache_embed_put(store, &ce, ...)            worker; only when the plan stores
 *   sy_cache_embed_answer(&ce, resp or NULL, b64, &a)  the client's answer
 *   sy_cache_embed_cleanup(&ce)
 * Every field is private except n and nmiss (read-only). */
typedef struct sy_cache_embed {
    size_t n;     /* inputs in the request */
    size_t nmiss; /* distinct inputs still missing (n distinct ones before lookup) */
    size_t nhit;  /* inputs served from the cache (after lookup) */
    char (*keys)[SY_CACHE_KEY_SIZE];
    json_t **vecs;  /* per input: the embedding array (new ref) or NULL */
    bool *fresh;    /* per input: the vector came from the upstream (to store) */
    size_t *first;  /* per input: the first input with the same key */
    json_t *inputs; /* array of the inputs (new ref) */
    bool single;    /* "input" was one string or one token array */
    json_t *model;  /* the model string of the first cached entry (new ref) or NULL */
} sy_cache_embed;

/* Splits the body's "input" (a string, an array of strings, a token array or an array of token
 * arrays) and computes one key per input. SY_OK; SY_EINVAL when "input" has another shape;
 * SY_ETOOBIG over SY_CACHE_EMBED_MAX_INPUTS; SY_ENOMEM; SY_EINTERNAL. <e> is always safe to
 * clean up. */
sy_err sy_cache_embed_init(sy_cache_embed *e, const sy_cache_key_in *in);

/* Looks every distinct key up (one store call each; after the first store error the rest are
 * not tried). Returns HIT when all inputs were found, MISS when some were not (e->nmiss says
 * how many distinct ones), or STORE_ERROR / NOMEM (the inputs not found count as misses; CORRUPT
 * entries count as misses and are reported as MISS). */
sy_cache_status sy_cache_embed_lookup(sy_store *s, sy_cache_embed *e);

/* A new body: <body> (borrowed) with "input" holding only the distinct missing inputs, in
 * order (a single input stays in its original form). SY_OK / SY_EINVAL (nothing missing) /
 * SY_ENOMEM. */
sy_err sy_cache_embed_miss_body(const sy_cache_embed *e, const json_t *body, json_t **out);

/* Takes the vectors from <resp> (borrowed), the normalised upstream answer to the miss body:
 * data[i].index i is the i-th missing input; float arrays or base64 strings both accepted.
 * SY_EUPSTREAM when it does not have exactly one embedding per missing input; SY_ENOMEM. */
sy_err sy_cache_embed_fill(sy_cache_embed *e, const json_t *resp);

/* Stores each fresh vector under its key, as an embeddings entry of one datum with <model>
 * (the upstream's answer model), <deployment> and created_at_ms. Stops at the first store
 * error. Returns STORED when every fresh vector was written (also when there were none), else
 * the first failure (TOOBIG, STORE_ERROR, NOMEM, INVALID). *stored (may be NULL) counts writes. */
sy_cache_status sy_cache_embed_put(sy_store *s, const sy_cache_embed *e, const char *model,
                                   const char *deployment, int64_t created_at_ms, long ttl_s,
                                   size_t max_entry_bytes, size_t *stored);

/* The client's answer (new): every input's vector in request order (base64 when <b64>), model
 * from <resp> (may be NULL when nothing was missing) or else the cached entries', usage from
 * <resp> or zeros. SY_EINVAL when a vector is still missing; SY_ENOMEM. */
sy_err sy_cache_embed_answer(const sy_cache_embed *e, const json_t *resp, bool b64, json_t **out);

/* Frees everything; <e> may be zeroed or half-initialised. Safe twice. */
void sy_cache_embed_cleanup(sy_cache_embed *e);

#endif
