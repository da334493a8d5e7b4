/* health: the deployment state registry. A linked list under a mutex is enough: it is walked
 * only when a config is loaded and by the shared-state sync, and entries are never removed while
 * the process serves (a reload that drops a deployment leaves a few idle bytes behind). Nodes are
 * only ever prepended, so a walk that read the head under the lock may follow next pointers
 * without it. */
#include "switchyard/health.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/log.h"
#include "switchyard/store.h"

typedef struct node {
    sy_dep_health h;
    struct node *next;
} node;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static node *head;
/* Taken only when a breaker changes (a transition, or a merge from the store): the upstream
 * thread and the sync thread both write open_until/changed/dirty together. */
static pthread_mutex_t bmu = PTHREAD_MUTEX_INITIALIZER;
static void (*notify_fn)(void); /* atomic */

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

static void notify(void)
{
    void (*fn)(void) = __atomic_load_n(&notify_fn, __ATOMIC_ACQUIRE);
    if (fn != NULL)
        fn();
}

void sy_health_set_notify(void (*fn)(void)) { __atomic_store_n(&notify_fn, fn, __ATOMIC_RELEASE); }

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
        if (LOAD(&h->open_until_us) == 0)
            return; /* the common case: closed, nothing changes, no lock */
        pthread_mutex_lock(&bmu);
        bool changed = LOAD(&h->open_until_us) != 0;
        if (changed) {
            STORE(&h->open_until_us, 0);
            STORE(&h->changed_us, now_us);
            STORE(&h->dirty, 1);
        }
        pthread_mutex_unlock(&bmu);
        if (changed)
            notify();
        return;
    }
    __atomic_add_fetch(&h->failures, 1, __ATOMIC_RELAXED);
    int n = __atomic_add_fetch(&h->consecutive_failures, 1, __ATOMIC_ACQ_REL);
    if (was_probe || (failures_to_open > 0 && n >= failures_to_open)) {
        pthread_mutex_lock(&bmu);
        STORE(&h->open_until_us, now_us + (cooldown_us > 0 ? cooldown_us : 1));
        STORE(&h->changed_us, now_us);
        STORE(&h->dirty, 1);
        pthread_mutex_unlock(&bmu);
        notify();
    }
}

/* ---- shared breaker state ---- */

size_t sy_breaker_rec_format(const sy_breaker_rec *r, char *buf, size_t n)
{
    int k = snprintf(buf, n, "v1 %" PRId64 " %" PRId64, r->open_until_ms, r->changed_ms);
    return k < 0 ? 0 : (size_t)k < n ? (size_t)k : n - 1;
}

/* A non-negative decimal of 1..19 digits at s[*i], ending at a space or the end. */
static bool parse_i64(const char *s, size_t len, size_t *i, int64_t *out)
{
    int64_t v = 0;
    size_t start = *i;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        if (*i - start >= 18)
            return false; /* 18 digits: far beyond any wall-clock ms, never an overflow */
        v = v * 10 + (s[*i] - '0');
        (*i)++;
    }
    *out = v;
    return *i > start;
}

bool sy_breaker_rec_parse(const char *s, size_t len, sy_breaker_rec *out)
{
    sy_breaker_rec r;
    size_t i = 3;
    if (s == NULL || len < 3 || memcmp(s, "v1 ", 3) != 0)
        return false;
    if (!parse_i64(s, len, &i, &r.open_until_ms) || i >= len || s[i] != ' ')
        return false;
    i++;
    if (!parse_i64(s, len, &i, &r.changed_ms) || i != len || r.changed_ms <= 0)
        return false;
    *out = r;
    return true;
}

bool sy_breaker_key(const char *name, char *buf, size_t n)
{
    int k = snprintf(buf, n, "{cb:%s}:state", name);
    return k > 0 && (size_t)k < n;
}

/* Monotonic us <-> wall-clock ms, anchored at one instant (now_us == now_ms). */
static int64_t to_wall(int64_t us, int64_t now_us, int64_t now_ms)
{
    return now_ms + (us - now_us) / 1000;
}

static int64_t to_mono(int64_t ms, int64_t now_us, int64_t now_ms)
{
    int64_t v = now_us + (ms - now_ms) * 1000;
    return v > 0 ? v : 1; /* 0 means closed / never: an old instant is still an instant */
}

/* The record of <h>'s state, and the raw changed_us it was taken at (read together). */
static int64_t snapshot(sy_dep_health *h, int64_t now_us, int64_t now_ms, sy_breaker_rec *out)
{
    pthread_mutex_lock(&bmu);
    int64_t until = LOAD(&h->open_until_us), changed = LOAD(&h->changed_us);
    pthread_mutex_unlock(&bmu);
    out->open_until_ms = until == 0 ? 0 : to_wall(until, now_us, now_ms);
    if (until != 0 && out->open_until_ms <= 0)
        out->open_until_ms = 1; /* a long-past opening: half-open, never "closed" */
    out->changed_ms = changed == 0 ? 0 : to_wall(changed, now_us, now_ms);
    if (out->changed_ms <= 0)
        out->changed_ms = 1;
    return changed;
}

void sy_health_snapshot(sy_dep_health *h, int64_t now_us, int64_t now_ms, sy_breaker_rec *out)
{
    (void)snapshot(h, now_us, now_ms, out);
}

/* Under bmu. */
static void adopt_locked(sy_dep_health *h, const sy_breaker_rec *r, int64_t now_us, int64_t now_ms)
{
    if (r->open_until_ms == 0) {
        STORE(&h->open_until_us, 0);
        STORE(&h->consecutive_failures, 0);
    } else {
        STORE(&h->open_until_us, to_mono(r->open_until_ms, now_us, now_ms));
    }
    STORE(&h->changed_us, to_mono(r->changed_ms, now_us, now_ms));
    h->synced_ms = r->changed_ms;
}

bool sy_health_merge(sy_dep_health *h, const sy_breaker_rec *r, int64_t now_us, int64_t now_ms)
{
    bool adopted = false;
    pthread_mutex_lock(&bmu);
    if (!LOAD(&h->dirty) && r->changed_ms > h->synced_ms) {
        adopt_locked(h, r, now_us, now_ms);
        adopted = true;
    }
    pthread_mutex_unlock(&bmu);
    return adopted;
}

/* Records live this long past their opening (so a late publish of an older change still loses
 * to them), then vanish with the deployment's name. */
#define REC_TTL_MS (10 * 60 * 1000)

/* The exchange for one deployment: *what = 1 published, 2 adopted, 0 nothing. SY_OK or the
 * store's error. */
static sy_err sync_one(sy_store *store, sy_dep_health *h, int64_t now_us, int64_t now_ms,
                       int *what)
{
    char key[SY_STORE_KEY_MAX], cur[SY_BREAKER_REC_MAX], val[SY_BREAKER_REC_MAX];
    size_t curlen = 0;
    sy_buf b;
    sy_breaker_rec remote = {0}, mine;
    bool have = false, exists = false;

    *what = 0;
    if (!sy_breaker_key(h->name, key, sizeof(key)))
        return SY_OK; /* a name too long to share stays local */
    sy_buf_init(&b, sizeof(cur) - 1);
    sy_err rc = sy_store_get(store, key, &b);
    if (rc == SY_OK) {
        exists = true;
        curlen = b.len;
        if (curlen > 0)
            memcpy(cur, b.data, curlen);
        have = sy_breaker_rec_parse(cur, curlen, &remote);
    }
    sy_buf_cleanup(&b);
    if (rc == SY_ETOOBIG)
        return SY_OK; /* not a record of ours under our key: left alone */
    if (rc != SY_OK && rc != SY_ENOTFOUND)
        return rc;
    if (!LOAD(&h->dirty)) {
        if (have && sy_health_merge(h, &remote, now_us, now_ms))
            *what = 2;
        return SY_OK;
    }
    int64_t snap = snapshot(h, now_us, now_ms, &mine);
    if (have && remote.changed_ms >= mine.changed_ms) {
        /* another instance changed it after us: its state wins */
        pthread_mutex_lock(&bmu);
        if (LOAD(&h->changed_us) == snap) {
            adopt_locked(h, &remote, now_us, now_ms);
            STORE(&h->dirty, 0);
            *what = 2;
        }
        pthread_mutex_unlock(&bmu);
        return SY_OK;
    }
    size_t vlen = sy_breaker_rec_format(&mine, val, sizeof(val));
    int64_t left = mine.open_until_ms > now_ms ? mine.open_until_ms - now_ms : 0;
    sy_store_cas_req cas = {.expect_mode = exists ? SY_CAS_EQUAL : SY_CAS_ABSENT,
                            .expect = cur, .expect_len = curlen,
                            .value = val, .value_len = vlen, .ttl_ms = REC_TTL_MS + left};
    bool swapped = false;
    rc = sy_store_cas(store, key, &cas, &swapped, NULL);
    if (rc == SY_OK && swapped) {
        pthread_mutex_lock(&bmu);
        if (LOAD(&h->changed_us) == snap) {
            STORE(&h->dirty, 0);
            h->synced_ms = mine.changed_ms;
        }
        pthread_mutex_unlock(&bmu);
        *what = 1;
    }
    /* not swapped: another instance wrote in between; the next round reads it and decides */
    return rc;
}

sy_err sy_health_sync(sy_store *store, int64_t now_us, int64_t now_ms, int *published,
                      int *adopted)
{
    sy_err first = SY_OK;
    int np = 0, na = 0;
    pthread_mutex_lock(&mu);
    node *n = head;
    pthread_mutex_unlock(&mu);
    for (; n != NULL; n = n->next) {
        int what = 0;
        sy_err rc = sync_one(store, &n->h, now_us, now_ms, &what);
        if (rc != SY_OK && first == SY_OK)
            first = rc;
        if (rc == SY_EUNAVAIL || rc == SY_ETIMEOUT)
            break; /* the store is down or slow: the rest would wait the same deadline */
        np += what == 1;
        na += what == 2;
        if (what != 0) {
            sy_breaker_rec r;
            sy_health_snapshot(&n->h, now_us, now_ms, &r);
            sy_log(SY_LOG_DEBUG, NULL, "breaker %s: %s (open_until_ms=%" PRId64 ")", n->h.name,
                   what == 1 ? "published" : "adopted from the store", r.open_until_ms);
        }
    }
    if (published != NULL)
        *published = np;
    if (adopted != NULL)
        *adopted = na;
    return first;
}
