/* shared: the background thread that exchanges affinity and breaker state with the store.
 * Producers (the upstream thread, through the affinity and health hooks) only lock a mutex,
 * copy a few bytes and signal; every store call happens here. One instance per process, since
 * the hooks are process-wide like the registries they serve. */
#include "switchyard/shared.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard/affinity.h"
#include "switchyard/health.h"
#include "switchyard/log.h"
#include "switchyard/request.h"
#include "switchyard/util.h"

#define QUEUE_CAP 4096 /* affinity puts waiting for the store */
#define DRAIN_MAX 64   /* puts written per turn, between breaker checks */

typedef struct put {
    uint64_t key;
    int64_t ttl_us;
    char name[SY_AFFINITY_NAME_MAX];
} put;

struct sy_shared {
    sy_store *store;
    long sync_ms;
    pthread_t thread;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    /* under gmu: */
    put *q;
    size_t head, n;
    uint64_t dropped;
    bool kick; /* a local breaker changed: sync now */
    bool stop;
};

static pthread_mutex_t gmu = PTHREAD_MUTEX_INITIALIZER;
static sy_shared *g; /* under gmu: the running instance, for the hooks */

static void on_put(uint64_t key, const char *name, int64_t ttl_us)
{
    pthread_mutex_lock(&gmu);
    if (g != NULL) {
        if (g->n == QUEUE_CAP) { /* drop the oldest: the newest puts matter most */
            g->head = (g->head + 1) % QUEUE_CAP;
            g->n--;
            g->dropped++;
        }
        put *p = &g->q[(g->head + g->n) % QUEUE_CAP];
        p->key = key;
        p->ttl_us = ttl_us;
        snprintf(p->name, sizeof(p->name), "%s", name);
        g->n++;
        pthread_cond_signal(&g->cond);
    }
    pthread_mutex_unlock(&gmu);
}

static void on_breaker(void)
{
    pthread_mutex_lock(&gmu);
    if (g != NULL) {
        g->kick = true;
        pthread_cond_signal(&g->cond);
    }
    pthread_mutex_unlock(&gmu);
}

static void *run(void *arg)
{
    sy_shared *sh = arg;
    put batch[DRAIN_MAX];
    int64_t next = 0; /* the first round runs at once: learn breakers opened elsewhere */
    bool was_failing = false;

    pthread_mutex_lock(&gmu);
    for (;;) {
        int64_t now = sy_now_us();
        if (sh->n == 0 && !sh->kick && now < next && !sh->stop) {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000),
                                  .tv_nsec = (long)(next % 1000000) * 1000};
            pthread_cond_timedwait(&sh->cond, &gmu, &ts);
            continue;
        }
        size_t k = 0;
        while (sh->n > 0 && k < DRAIN_MAX) {
            batch[k++] = sh->q[sh->head];
            sh->head = (sh->head + 1) % QUEUE_CAP;
            sh->n--;
        }
        bool kick = sh->kick, stop = sh->stop;
        sh->kick = false;
        pthread_mutex_unlock(&gmu);

        for (size_t i = 0; i < k; i++) {
            sy_err rc = sy_affinity_store_put(sh->store, batch[i].key, batch[i].name,
                                              batch[i].ttl_us);
            if (rc != SY_OK)
                sy_log(SY_LOG_DEBUG, NULL, "affinity: store write failed: %s", sy_err_str(rc));
        }
        now = sy_now_us();
        if (!stop && (kick || now >= next)) {
            int pub = 0, adopted = 0;
            sy_err rc = sy_health_sync(sh->store, now, sy_wall_ms(), &pub, &adopted);
            bool failing = rc != SY_OK;
            /* once per state change (the store logs its own outages too) */
            if (failing && !was_failing)
                sy_log(SY_LOG_WARN, NULL, "breaker sync: store unavailable (%s); breakers are "
                       "local until it is back", sy_err_str(rc));
            else if (!failing && was_failing)
                sy_log(SY_LOG_INFO, NULL, "breaker sync: shared through the store again");
            was_failing = failing;
            if (now >= next)
                next = now + (int64_t)sh->sync_ms * 1000;
        }
        pthread_mutex_lock(&gmu);
        if (stop && sh->n == 0)
            break;
    }
    if (sh->dropped > 0)
        sy_log(SY_LOG_WARN, NULL, "affinity: %llu store writes dropped (store slower than traffic)",
               (unsigned long long)sh->dropped);
    pthread_mutex_unlock(&gmu);
    return NULL;
}

sy_err sy_shared_start(sy_store *store, long sync_ms, sy_shared **out)
{
    *out = NULL;
    if (store == NULL || sy_store_kind_of(store) != SY_STORE_REDIS)
        return SY_OK;
    sy_shared *sh = calloc(1, sizeof(*sh));
    pthread_condattr_t ca;
    sy_err rc = SY_ENOMEM;
    if (sh == NULL || (sh->q = calloc(QUEUE_CAP, sizeof(*sh->q))) == NULL)
        goto fail;
    sh->store = store;
    sh->sync_ms = sync_ms > 0 ? sync_ms : 1;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&gmu);
    g = sh;
    pthread_mutex_unlock(&gmu);
    if (pthread_create(&sh->thread, NULL, run, sh) != 0) {
        pthread_mutex_lock(&gmu);
        g = NULL;
        pthread_mutex_unlock(&gmu);
        pthread_cond_destroy(&sh->cond);
        rc = SY_EINTERNAL;
        goto fail;
    }
    sy_affinity_set_publisher(on_put);
    sy_health_set_notify(on_breaker);
    *out = sh;
    return SY_OK;
fail:
    if (sh != NULL)
        free(sh->q);
    free(sh);
    return rc;
}

void sy_shared_stop(sy_shared *sh)
{
    if (sh == NULL)
        return;
    sy_affinity_set_publisher(NULL);
    sy_health_set_notify(NULL);
    pthread_mutex_lock(&gmu);
    sh->stop = true;
    g = NULL;
    pthread_cond_signal(&sh->cond);
    pthread_mutex_unlock(&gmu);
    pthread_join(sh->thread, NULL);
    pthread_cond_destroy(&sh->cond);
    free(sh->q);
    free(sh);
}
