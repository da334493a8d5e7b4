/* health: the deployment state registry. A linked list under a mutex is enough: it is walked
 * only when a config is loaded, and entries are never removed while the process serves (a
 * reload that drops a deployment leaves a few idle bytes behind). */
#include "switchyard/health.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct node {
    sy_dep_health h;
    struct node *next;
} node;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static node *head;

sy_dep_health *sy_health_get(const char *name)
{
    pthread_mutex_lock(&mu);
    for (node *n = head; n != NULL; n = n->next) {
        if (strcmp(n->h.name, name) == 0) {
            pthread_mutex_unlock(&mu);
            return &n->h;
        }
    }
    node *n = calloc(1, sizeof(*n));
    if (n != NULL) {
        snprintf(n->h.name, sizeof(n->h.name), "%s", name);
        n->next = head;
        head = n;
    }
    pthread_mutex_unlock(&mu);
    return n != NULL ? &n->h : NULL;
}

void sy_health_reset_all(void)
{
    pthread_mutex_lock(&mu);
    node *n = head;
    head = NULL;
    pthread_mutex_unlock(&mu);
    while (n != NULL) {
        node *next = n->next;
        free(n);
        n = next;
    }
}

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

sy_breaker_state sy_health_breaker(const sy_dep_health *h, int64_t now_us)
{
    int64_t until = LOAD(&h->open_until_us);
    if (until == 0)
        return SY_BREAKER_CLOSED;
    return now_us < until ? SY_BREAKER_OPEN : SY_BREAKER_HALF_OPEN;
}

bool sy_health_available(const sy_dep_health *h, int max_inflight, int64_t now_us)
{
    if (h == NULL)
        return true;
    switch (sy_health_breaker(h, now_us)) {
    case SY_BREAKER_OPEN:
        return false;
    case SY_BREAKER_HALF_OPEN:
        if (LOAD(&h->probing))
            return false;
        break;
    case SY_BREAKER_CLOSED:
        break;
    }
    return max_inflight <= 0 || LOAD(&h->inflight) < max_inflight;
}

void sy_health_begin(sy_dep_health *h, int64_t now_us)
{
    if (h == NULL)
        return;
    __atomic_add_fetch(&h->inflight, 1, __ATOMIC_ACQ_REL);
    __atomic_add_fetch(&h->requests, 1, __ATOMIC_RELAXED);
    if (sy_health_breaker(h, now_us) == SY_BREAKER_HALF_OPEN)
        STORE(&h->probing, 1);
}

void sy_health_abandon(sy_dep_health *h)
{
    if (h == NULL)
        return;
    __atomic_sub_fetch(&h->inflight, 1, __ATOMIC_ACQ_REL);
    STORE(&h->probing, 0);
}

void sy_health_end(sy_dep_health *h, bool ok, int64_t ttfb_us, int failures_to_open,
                   int64_t cooldown_us, int64_t now_us)
{
    if (h == NULL)
        return;
    __atomic_sub_fetch(&h->inflight, 1, __ATOMIC_ACQ_REL);
    if (ttfb_us > 0) {
        /* EWMA with alpha 1/8; lost updates under a race only blur the average. */
        int64_t old = LOAD(&h->ewma_us);
        STORE(&h->ewma_us, old == 0 ? ttfb_us : old + (ttfb_us - old) / 8);
    }
    bool was_probe = __atomic_exchange_n(&h->probing, 0, __ATOMIC_ACQ_REL) != 0;
    if (ok) {
        STORE(&h->consecutive_failures, 0);
        STORE(&h->open_until_us, 0);
        return;
    }
    __atomic_add_fetch(&h->failures, 1, __ATOMIC_RELAXED);
    int n = __atomic_add_fetch(&h->consecutive_failures, 1, __ATOMIC_ACQ_REL);
    if (was_probe || (failures_to_open > 0 && n >= failures_to_open))
        STORE(&h->open_until_us, now_us + (cooldown_us > 0 ? cooldown_us : 1));
}
