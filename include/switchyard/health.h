/* health: per-deployment runtime state that outlives config reloads — in-flight count, circuit
 * breaker, latency EWMA — in a process-wide registry keyed by deployment name. Readers (the
 * router, on the MHD thread) and writers (the upstream thread) use atomics only; the registry
 * lock is taken only when a name is first seen (at config load). The store issue moves breaker
 * state into Redis so that instances agree. */
#ifndef SY_HEALTH_H
#define SY_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sy_dep_health {
    char name[128];
    int inflight;              /* atomic */
    int consecutive_failures;  /* atomic */
    int64_t open_until_us;     /* atomic; breaker open while now < this; 0 = closed */
    int probing;               /* atomic; 1 while a half-open probe is in flight */
    int64_t ewma_us;           /* atomic; latency to first byte, 0 = unknown */
    uint64_t requests;         /* atomic; attempts started */
    uint64_t failures;         /* atomic; attempts failed */
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

#endif
