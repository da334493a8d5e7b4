/* workers: mutex + condition variable queue. Free drains the queue before joining, so a job
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
    unsigned nthreads;
};

static void *run(void *arg)
{
    sy_workers *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
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
    w->threads = calloc(nthreads ? nthreads : 1, sizeof(pthread_t));
    if (w->threads == NULL) {
        free(w);
        return SY_ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->max_queued = max_queued;
    for (unsigned i = 0; i < (nthreads ? nthreads : 1); i++) {
        if (pthread_create(&w->threads[i], NULL, run, w) != 0)
            break;
        w->nthreads++;
    }
    if (w->nthreads == 0) {
        sy_workers_free(w);
        return SY_EINTERNAL;
    }
    *out = w;
    return SY_OK;
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
