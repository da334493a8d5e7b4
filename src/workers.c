/* workers: mutex + condition variable queue. Threads start on demand (a job queued with no
 * idle thread to take it starts one, up to the pool's size) and then stay: an instance that
 * never needs the pool never pays its threads. Free drains the queue before joining, so a job
 * submitted before shutdown always runs (its owner may be waiting on it to resume a client). */
#include "switchyard/workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct job {
    sy_job_fn fn;
    void *arg;
    struct job *next;
} job;

struct sy_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    size_t queued, max_queued;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;    /* started so far */
    unsigned max_threads; /* the pool's size */
    unsigned idle;        /* started threads waiting for a job */
};

static void *run(void *arg)
{
    sy_workers *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stopping) {
            w->idle++;
            pthread_cond_wait(&w->cv, &w->mu);
            w->idle--;
        }
        job *j = w->head;
        if (j == NULL)
            break; /* stopping and drained */
        w->head = j->next;
        if (w->head == NULL)
            w->tail = NULL;
        w->queued--;
        pthread_mutex_unlock(&w->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

sy_err sy_workers_new(unsigned nthreads, size_t max_queued, sy_workers **out)
{
    sy_workers *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return SY_ENOMEM;
    w->max_threads = nthreads ? nthreads : 1;
    w->threads = calloc(w->max_threads, sizeof(pthread_t));
    if (w->threads == NULL) {
        free(w);
        return SY_ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->max_queued = max_queued;
    *out = w;
    return SY_OK;
}

unsigned sy_workers_threads(sy_workers *w)
{
    pthread_mutex_lock(&w->mu);
    unsigned n = w->nthreads;
    pthread_mutex_unlock(&w->mu);
    return n;
}

sy_err sy_workers_submit(sy_workers *w, sy_job_fn fn, void *arg)
{
    job *j = malloc(sizeof(*j));
    if (j == NULL)
        return SY_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&w->mu);
    sy_err rc = w->stopping ? SY_ESHUTDOWN : w->queued >= w->max_queued ? SY_ELIMIT : SY_OK;
    if (rc == SY_OK) {
        if (w->tail != NULL)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        w->queued++;
        /* more waiting jobs than idle threads: start one more (up to the pool's size) */
        if (w->queued > w->idle && w->nthreads < w->max_threads &&
            pthread_create(&w->threads[w->nthreads], NULL, run, w) == 0)
            w->nthreads++;
        if (w->nthreads == 0) {
            /* no thread could be started: nothing would ever run this job */
            w->head = w->tail = NULL;
            w->queued = 0;
            rc = SY_EINTERNAL;
        }
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (rc != SY_OK)
        free(j);
    return rc;
}

void sy_workers_free(sy_workers *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
