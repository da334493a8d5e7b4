/* shared: keeps the runtime state that instances on one Redis must agree on — conversation
 * affinity and circuit breakers — in step with the store, from one background thread, so the
 * MHD and upstream threads never wait on Redis for it. The thread
 *   - writes affinity puts as they are queued by sy_affinity_put (a bounded queue: when Redis
 *     cannot keep up, the oldest puts are dropped; the local table still holds them);
 *   - runs sy_health_sync every <sync_ms>, and at once after a local breaker change, so a
 *     breaker one instance opens is seen by the others within about one interval.
 * With the embedded store there is one process and nothing to share: no thread is started.
 * Store outages never fail anything: writes are dropped, breakers keep their local state. */
#ifndef SY_SHARED_H
#define SY_SHARED_H

#include "switchyard/err.h"
#include "switchyard/store.h"

typedef struct sy_shared sy_shared;

/* Starts the sync for <store> (borrowed; it must outlive sy_shared_stop) every <sync_ms>
 * (>= 1). One per process: it installs the affinity publisher and the breaker notifier. *out is
 * NULL (and SY_OK) for the embedded store. SY_ENOMEM, SY_EINTERNAL (thread creation). */
sy_err sy_shared_start(sy_store *store, long sync_ms, sy_shared **out);
/* Uninstalls the hooks, writes what is still queued (bounded by the store's deadline per write)
 * and joins the thread. Call after the upstream thread stopped. NULL is a no-op. */
void sy_shared_stop(sy_shared *sh);

#endif
