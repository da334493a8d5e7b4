/* router: route selection, rules, classifier threshold, tier strategies, affinity and the
 * availability filter. Weighted choice uses a per-thread xorshift generator: no locks. */
#include "switchyard/router.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard/affinity.h"
#include "switchyard/health.h"
#include "switchyard/request.h"
#include "switchyard/routes.h"

static void add(sy_pick *p, const sy_deployment *d)
{
    for (size_t i = 0; i < p->ntargets; i++)
        if (p->targets[i] == d)
            return;
    if (p->ntargets < SY_ROUTER_MAX_TARGETS)
        p->targets[p->ntargets++] = d;
}

static sy_err by_name(const sy_config *cfg, const char *model, sy_pick *out)
{
    const sy_alias *a = sy_config_alias(cfg, model);
    if (a != NULL) {
        for (size_t i = 0; i < a->ntargets; i++)
            add(out, &cfg->deployments[a->targets[i]]);
        out->route = a->name;
        return out->ntargets > 0 ? SY_OK : SY_ENOMODEL;
    }
    const sy_deployment *d = sy_config_deployment(cfg, model);
    if (d != NULL) {
        add(out, d);
        out->route = d->name;
        return SY_OK;
    }
    for (size_t i = 0; i < cfg->ndeployments; i++)
        if (strcmp(cfg->deployments[i].model, model) == 0)
            add(out, &cfg->deployments[i]);
    if (out->ntargets == 0)
        return SY_ENOMODEL;
    out->route = out->targets[0]->model;
    return SY_OK;
}

static uint64_t rnd(void)
{
    static __thread uint64_t s;
    if (s == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
        s |= 1;
    }
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static int64_t inflight_of(const sy_deployment *d)
{
    return d->health != NULL ? __atomic_load_n(&d->health->inflight, __ATOMIC_RELAXED) : 0;
}

static int64_t latency_of(const sy_deployment *d)
{
    return d->health != NULL ? __atomic_load_n(&d->health->ewma_us, __ATOMIC_RELAXED) : 0;
}

/* Appends a tier's deployments in its strategy's order. */
static void add_tier(sy_pick *p, const sy_config *cfg, const sy_tier *t)
{
    const sy_deployment *ds[SY_ROUTER_MAX_TARGETS];
    double w[SY_ROUTER_MAX_TARGETS];
    size_t n = t->ntargets < SY_ROUTER_MAX_TARGETS ? t->ntargets : SY_ROUTER_MAX_TARGETS;

    for (size_t i = 0; i < n; i++) {
        ds[i] = &cfg->deployments[t->targets[i]];
        w[i] = t->weights != NULL ? t->weights[i] : 1.0;
    }
    switch (t->strategy) {
    case SY_STRAT_ORDERED:
        break;
    case SY_STRAT_WEIGHTED:
        /* draw without replacement, proportionally to weight */
        for (size_t i = 0; i + 1 < n; i++) {
            double total = 0;
            for (size_t k = i; k < n; k++)
                total += w[k];
            if (total <= 0)
                break;
            double x = (double)(rnd() >> 11) / 9007199254740992.0 * total;
            size_t pick = n - 1;
            for (size_t k = i; k < n; k++) {
                if (x < w[k]) {
                    pick = k;
                    break;
                }
                x -= w[k];
            }
            const sy_deployment *td = ds[i];
            double tw = w[i];
            ds[i] = ds[pick];
            w[i] = w[pick];
            ds[pick] = td;
            w[pick] = tw;
        }
        break;
    case SY_STRAT_LEAST_INFLIGHT:
    case SY_STRAT_LOWEST_LATENCY: {
        /* Other threads change these counters while we sort: each key is read once and the
         * snapshot sorted, so every comparison sees the same values (a sort that re-read them
         * could compare a deployment against two different values of another). */
        int64_t key[SY_ROUTER_MAX_TARGETS];
        for (size_t i = 0; i < n; i++)
            key[i] = t->strategy == SY_STRAT_LEAST_INFLIGHT ? inflight_of(ds[i])
                                                            : latency_of(ds[i]);
        /* insertion sort: stable, and tiers are short */
        for (size_t i = 1; i < n; i++) {
            const sy_deployment *d = ds[i];
            int64_t kd = key[i];
            size_t k = i;
            for (; k > 0 && key[k - 1] > kd; k--) {
                ds[k] = ds[k - 1];
                key[k] = key[k - 1];
            }
            ds[k] = d;
            key[k] = kd;
        }
        break;
    }
    }
    for (size_t i = 0; i < n; i++)
        add(p, ds[i]);
}

/* Moves deployments that cannot take the request now (disabled, breaker open, at max_inflight)
 * after the others, keeping each group's order. Returns whether any enabled deployment was
 * held back by its health (as opposed to every one being disabled, which the relay explains
 * by naming the variable to set). */
static bool partition_available(sy_pick *p)
{
    const sy_deployment *ok[SY_ROUTER_MAX_TARGETS], *no[SY_ROUTER_MAX_TARGETS];
    size_t nok = 0, nno = 0;
    bool held = false;
    int64_t now = sy_now_us();
    for (size_t i = 0; i < p->ntargets; i++) {
        const sy_deployment *d = p->targets[i];
        bool healthy = sy_health_available(d->health, d->max_inflight, now);
        if (!d->disabled && healthy)
            ok[nok++] = d;
        else
            no[nno++] = d;
        held = held || (!d->disabled && !healthy);
    }
    memcpy(p->targets, ok, nok * sizeof(ok[0]));
    memcpy(p->targets + nok, no, nno * sizeof(no[0]));
    p->navailable = nok;
    return held;
}

/* The conversation's deployment first: moves the target named <name> among targets[0..limit)
 * to the front, keeping the others' order and each affinity_ok bit with its target, and sets
 * affinity_hit. With <check>, only a target the conversation may go to (its affinity_ok bit)
 * that can take a request now (enabled, breaker not open, below max_inflight) moves. Returns
 * whether <name> is first now. */
static bool to_front(sy_pick *p, const char *name, size_t limit, bool check)
{
    for (size_t i = 0; i < limit; i++) {
        const sy_deployment *d = p->targets[i];
        if (strcmp(d->name, name) != 0)
            continue;
        if (check && (!(p->affinity_ok & (1u << i)) || d->disabled ||
                      !sy_health_available(d->health, d->max_inflight, sy_now_us())))
            return false;
        uint32_t bits = p->affinity_ok;
        uint32_t low = bits & ((1u << i) - 1), rest = bits & ~((2u << i) - 1);
        memmove(p->targets + 1, p->targets, i * sizeof(p->targets[0]));
        p->targets[0] = d;
        p->affinity_ok = rest | (low << 1) | ((bits >> i) & 1u);
        p->affinity_hit = true;
        return true;
    }
    return false;
}

sy_err sy_router_pick(const sy_config *cfg, const char *model, const json_t *body,
                      const sy_route_ctx *rc, sy_pick *out)
{
    sy_route_ctx none = {0};
    if (rc == NULL)
        rc = &none;
    memset(out, 0, sizeof(*out));
    out->score = -1;
    out->threshold = -1;
    if (model == NULL)
        return SY_ENOMODEL;

    const sy_route *r = NULL;
    size_t affinity_limit = SY_ROUTER_MAX_TARGETS; /* affinity looks at targets[0..limit) */
    if (rc->force_route != NULL) {
        for (size_t i = 0; cfg->routes != NULL && i < cfg->routes->n && r == NULL; i++)
            if (strcmp(cfg->routes->routes[i].name, rc->force_route) == 0)
                r = &cfg->routes->routes[i];
        if (r == NULL)
            return SY_ENOTFOUND;
    } else {
        r = sy_routes_match(cfg->routes, model, rc->get_header, rc->hctx);
    }
    if (r == NULL || r->by_model_name) {
        sy_err e = by_name(cfg, model, out);
        if (e != SY_OK)
            return e;
        if (r != NULL) {
            out->route = r->name;
            out->route_def = r;
        }
    } else {
        out->route = r->name;
        out->route_def = r;
        long tier = -1;
        for (size_t i = 0; i < r->nrules && tier < 0; i++) {
            if (sy_rule_matches(&r->rules[i], body, rc->get_header, rc->hctx)) {
                tier = (long)r->rules[i].tier;
                out->rule = r->rules[i].label;
            }
        }
        if (tier < 0 && r->clf != NULL) {
            double score;
            if (sy_classifier_score(r->clf, body, &score, rc->top, rc->ntop) == SY_OK) {
                double thr = r->target_share > 0 ? sy_routes_adaptive_threshold(r, score)
                                                 : r->threshold;
                out->score = score;
                out->threshold = thr;
                tier = score >= thr ? (long)r->ntiers - 1 : 0;
            }
        }
        if (tier < 0)
            tier = 0;
        out->tier = r->tiers[tier].name;
        add_tier(out, cfg, &r->tiers[tier]);
        /* A rule states what the request needs (tools, images, a long context): a conversation
         * remembered on another tier's deployment must not pull it back there. */
        if (out->rule != NULL)
            affinity_limit = out->ntargets;
        /* fallback across tiers: harder tiers first, then easier ones */
        for (size_t i = (size_t)tier + 1; i < r->ntiers; i++)
            add_tier(out, cfg, &r->tiers[i]);
        for (long i = tier - 1; i >= 0; i--)
            add_tier(out, cfg, &r->tiers[i]);
    }

    if (r != NULL && r->affinity) {
        char name[SY_AFFINITY_NAME_MAX];
        out->affinity_key = sy_affinity_key(rc->tenant, body);
        if (sy_affinity_get(out->affinity_key, name, sizeof(name), sy_now_us())) {
            out->affinity_local = true;
            /* no health check here: the availability partition below moves the remembered
             * deployment last again when it cannot take the request now (affinity_hit stays) */
            to_front(out, name, out->ntargets < affinity_limit ? out->ntargets : affinity_limit,
                     false);
        }
    }
    const sy_deployment *eligible[SY_ROUTER_MAX_TARGETS];
    size_t neligible = out->ntargets < affinity_limit ? out->ntargets : affinity_limit;
    memcpy(eligible, out->targets, neligible * sizeof(eligible[0]));
    bool held = partition_available(out);
    /* the partition reordered the targets: find the eligible ones again */
    for (size_t i = 0; i < out->ntargets; i++)
        for (size_t k = 0; k < neligible; k++)
            if (out->targets[i] == eligible[k])
                out->affinity_ok |= 1u << i;
    return out->navailable > 0 || !held ? SY_OK : SY_EUNAVAIL;
}

bool sy_router_prefer(sy_pick *p, const char *name)
{
    return to_front(p, name, p->navailable, true);
}

/* ---- batch share ---- */

typedef struct bslot {
    char name[128];
    int inflight; /* atomic */
    struct bslot *next;
} bslot;

static pthread_mutex_t bslot_mu = PTHREAD_MUTEX_INITIALIZER;
static bslot *bslots; /* never freed: one small node per deployment name ever seen */

static bslot *bslot_of(const char *name, bool create)
{
    pthread_mutex_lock(&bslot_mu);
    bslot *s = bslots;
    while (s != NULL && strcmp(s->name, name) != 0)
        s = s->next;
    if (s == NULL && create && (s = calloc(1, sizeof(*s))) != NULL) {
        snprintf(s->name, sizeof(s->name), "%s", name);
        s->next = bslots;
        bslots = s;
    }
    pthread_mutex_unlock(&bslot_mu);
    return s;
}

int sy_router_batch_cap(const sy_deployment *d, double share)
{
    if (d->max_inflight <= 0)
        return 0;
    int cap = (int)(share * (double)d->max_inflight);
    return cap < 1 ? 1 : cap;
}

int sy_router_batch_inflight(const char *name)
{
    bslot *s = bslot_of(name, false);
    return s != NULL ? __atomic_load_n(&s->inflight, __ATOMIC_RELAXED) : 0;
}

sy_err sy_router_pick_batch(sy_pick *pick, double share, int **slot)
{
    *slot = NULL;
    if (pick->navailable == 0)
        return SY_OK;
    for (size_t i = 0; i < pick->navailable; i++) {
        const sy_deployment *d = pick->targets[i];
        bslot *s = bslot_of(d->name, true);
        if (s == NULL)
            return SY_ENOMEM;
        int cap = sy_router_batch_cap(d, share);
        int now = __atomic_add_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
        if (cap > 0 && now > cap) {
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
            continue;
        }
        /* one target: a fallback would run outside the reserved share; the batch worker
         * retries the line instead, and the router picks again */
        pick->targets[0] = d;
        pick->ntargets = 1;
        pick->navailable = 1;
        *slot = &s->inflight;
        return SY_OK;
    }
    return SY_EUNAVAIL;
}

void sy_router_batch_release(int *slot)
{
    if (slot != NULL)
        __atomic_sub_fetch(slot, 1, __ATOMIC_ACQ_REL);
}
