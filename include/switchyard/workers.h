/* workers: a small fixed pool of threads for work that may block (store calls with their
 * deadlines, file reads) and so must stay off the MHD and curl threads. Jobs run in FIFO order;
 * the queue is bounded so an outage cannot pile up work without limit. */
#ifndef SY_WORKERS_H
#define SY_WORKERS_H

#include <stddef.h>

#include "switchyard/err.h"

typedef struct sy_workers sy_workers;
typedef void (*sy_job_fn)(void *arg);

/* A pool of up to <nthreads> threads (started on demand) with room for <max_queued> waiting
 * jobs. */
sy_err sy_workers_new(unsigned nthreads, size_t max_queued, sy_workers **out);
/* Any thread: queues fn(arg). SY_ELIMIT when the queue is full, SY_ENOMEM, SY_ESHUTDOWN once
 * stopping; on failure the job is not run and <arg> stays the caller's. */
sy_err sy_workers_submit(sy_workers *w, sy_job_fn fn, void *arg);
/* Threads started so far (they start on demand, up to the pool's size). */
unsigned sy_workers_threads(sy_workers *w);
/* Runs every queued job, joins the threads, frees the pool. NULL is a no-op. */
void sy_workers_free(sy_workers *w);

#endif
