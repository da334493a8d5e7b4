/* health: per-deployment runtime state that outlives config reloads — in-flight count, circuit
 * breaker, latency EWMA — in a process-wide registry keyed by deployment name. Readers (the
 * router, on the MHD thread) use atomics only; the registry lock is taken only when a name is
 * first seen (at config load), and a small breaker lock only when a breaker changes state.
 *
 * Shared breakers (several instances on one Redis agree): the breaker's state is also a record
 * in the store, {cb:<deployment>}:state = "v1 <open_until_ms> <changed_ms>" (wall-clock ms;
 * open_until 0 = closed). A local change (open, re-open after a failed probe, close after a
 * success) marks the entry dirty; sy_health_sync, run by a background thread (src/shared.c),
 * publishes it and adopts records that other instances published. Records are ordered by
 * changed_ms, last writer wins (a compare-and-set keeps a late publish from overwriting a newer
 * record), so an instance restarting or seeing a breaker for the first time takes the newest
 * state. Consecutive-failure counts stay local: each instance opens on what it sees, and only the
 * decision is shared. Clocks of instances are assumed NTP-close: skew shifts an adopted cooldown
 * by the skew. The store being down never changes local behaviour. */
#ifndef SY_HEALTH_H
#define SY_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/err.h"

struct sy_store;

typedef struct sy_dep_health {
    char name[128];
    int inflight;              /* atomic */
    int consecutive_failures;  /* atomic */
    int64_t open_until_us;     /* atomic; breaker open while now < this; 0 = closed */
    int probing;               /* atomic; 1 while a half-open probe is in flight */
    int64_t ewma_us;           /* atomic; latency to first byte, 0 = unknown */
    uint64_t requests;         /* atomic; attempts started */
    uint64_t failures;         /* atomic; attempts failed */
    /* private (shared breaker): */
    int64_t changed_us;        /* atomic; last breaker change, local or adopted; 0 = never */
    int64_t synced_ms;         /* wall-clock changed_ms last published or adopted (lock) */
    int dirty;                 /* atomic; a local change not yet published */
} sy_dep_health;

typedef enum sy_breaker_state { SY_BREAKER_CLOSED, SY_BREAKER_OPEN, SY_BREAKER_HALF_OPEN } sy_breaker_state;

/* The state for <name>, created on first use; the pointer stays valid until
 * sy_health_reset_all. NULL only on allocation failure. Thread-safe. */
sy_dep_health *sy_health_get(const char *name);
/* Frees the registry (tests and exit only: no other thread may hold a pointer). */
void sy_health_reset_all(void);

sy_breaker_state sy_health_breaker(const sy_dep_health *h, int64_t now_us);
/* Whether a new attempt may go to this deployment now: breaker not open (half-open lets one
 * probe through), and fewer than <max_inflight> in flight (0 = no limit). Does not reserve. */
bool sy_health_available(const sy_dep_health *h, int max_inflight, int64_t now_us);
/* Starts an attempt: counts it in flight; claims the half-open probe when the breaker is
 * half-open. */
void sy_health_begin(sy_dep_health *h, int64_t now_us);
/* Ends an attempt. <ok> false counts a failure (connect, timeout, 429, 5xx); <failures_to_open>
 * consecutive failures open the breaker for <cooldown_us>; a failed probe re-opens it; a
 * success closes it. <ttfb_us> (when > 0) feeds the latency EWMA. */
void sy_health_end(sy_dep_health *h, bool ok, int64_t ttfb_us, int failures_to_open,
                   int64_t cooldown_us, int64_t now_us);
/* Drops an attempt that never really started (cancelled before any outcome). */
void sy_health_abandon(sy_dep_health *h);

/* ---- shared breaker state ------------------------------------------------------------------ */

/* A breaker as stored: wall-clock milliseconds. */
typedef struct sy_breaker_rec {
    int64_t open_until_ms; /* 0 = closed; in the past = half-open */
    int64_t changed_ms;    /* when it last changed; orders records (> 0) */
} sy_breaker_rec;

#define SY_BREAKER_REC_MAX 64 /* bytes of a formatted record, NUL included */

/* Writes "v1 <open_until_ms> <changed_ms>" into <buf> (cap <n> >= SY_BREAKER_REC_MAX); returns
 * its length. Pure. */
size_t sy_breaker_rec_format(const sy_breaker_rec *r, char *buf, size_t n);
/* Parses <len> bytes at <s> (not NUL-terminated) into <out>. False on anything but a well-formed
 * record (the caller then treats the key as holding nothing usable). Pure. */
bool sy_breaker_rec_parse(const char *s, size_t len, sy_breaker_rec *out);
/* The store key of <name>'s record: "{cb:<name>}:state". Returns false when it does not fit. */
bool sy_breaker_key(const char *name, char *buf, size_t n);

/* <h>'s breaker as a record, at monotonic <now_us> = wall-clock <now_ms>. */
void sy_health_snapshot(sy_dep_health *h, int64_t now_us, int64_t now_ms, sy_breaker_rec *out);
/* Adopts <r> (another instance's record) when it is newer than what <h> last published or
 * adopted and <h> has no unpublished change of its own; returns whether it did. Adopting a
 * closed record also resets the consecutive-failure count. Thread-safe. */
bool sy_health_merge(sy_dep_health *h, const sy_breaker_rec *r, int64_t now_us, int64_t now_ms);
/* One exchange with <store> for every deployment in the registry: a dirty entry is published
 * (compare-and-set against the record read, unless that record is newer: then it is adopted);
 * a clean one adopts a newer record. Blocking (store calls with their deadline): never on the
 * MHD or curl threads. Returns SY_OK or the first store error; whatever failed keeps its local
 * state (and stays dirty, retried next time). <published>/<adopted> (may be NULL) count. */
sy_err sy_health_sync(struct sy_store *store, int64_t now_us, int64_t now_ms, int *published,
                      int *adopted);
/* <fn> (NULL = none) is called after every local breaker change, on the thread that made it
 * (the upstream thread): it must only signal, never block. */
void sy_health_set_notify(void (*fn)(void));

#endif
