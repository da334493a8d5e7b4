/* router: turns a request into an ordered list of deployments to try. Order of decisions
 * (DESIGN §5): the first route matching the model (and header); its rules (first match forces a
 * tier); else the classifier's score against the threshold (score >= threshold -> the harder,
 * last tier); then the tier's strategy orders its deployments, the other tiers follow as
 * fallback, a conversation's remembered deployment goes first (within a rule-forced tier only
 * when it belongs to it), and deployments whose breaker is
 * open or that are at max_inflight go last. A model no route claims resolves by alias,
 * deployment name or upstream model name. No I/O; reads runtime state through atomics. */
#ifndef SY_ROUTER_H
#define SY_ROUTER_H

#include <jansson.h>
#include <stdint.h>

#include "switchyard/classifier.h"
#include "switchyard/config.h"
#include "switchyard/err.h"

#define SY_ROUTER_MAX_TARGETS 16

struct sy_route;

typedef struct sy_pick {
    const sy_deployment *targets[SY_ROUTER_MAX_TARGETS]; /* borrowed from the config */
    size_t ntargets;
    size_t navailable;         /* targets[0..navailable) passed the breaker/in-flight check */
    const char *route;         /* borrowed; the route's name */
    const struct sy_route *route_def; /* borrowed; NULL when no route table claimed the model */
    const char *tier;          /* borrowed; NULL when the route has no tiers */
    const char *rule;          /* borrowed; the rule that forced the tier, or NULL */
    double score;              /* classifier score, or -1 when none ran */
    double threshold;          /* the threshold the score was compared with, or -1 */
    uint64_t affinity_key;     /* 0 when the route keeps no affinity */
    bool affinity_hit;         /* the first target came from the conversation's memory */
    bool affinity_local;       /* the in-process table knew the conversation */
    uint32_t affinity_ok;      /* bit i: targets[i] may take the conversation (a rule-forced
                                * tier keeps it within the tier) */
} sy_pick;

typedef struct sy_route_ctx {
    /* the request header <name> (lower-case), or NULL; may be NULL itself */
    const char *(*get_header)(void *hctx, const char *name);
    void *hctx;
    const char *tenant;        /* the API key's id or team, for affinity; may be NULL */
    sy_feature_contrib *top;   /* when not NULL, the classifier's top features */
    size_t ntop;
    const char *force_route;   /* use this route by name, whatever the model (offline tools) */
} sy_route_ctx;

/* <body> is the parsed request (borrowed); <rc> may be NULL. Returns SY_OK; SY_ENOMODEL when
 * nothing serves <model>; SY_EUNAVAIL when every target's breaker is open or at max_inflight
 * (*out is still filled, so the caller can say which). Disabled deployments are kept (the
 * caller reports the variable to set). */
sy_err sy_router_pick(const sy_config *cfg, const char *model, const json_t *body,
                      const sy_route_ctx *rc, sy_pick *out);

/* Puts deployment <name> (remembered for the conversation elsewhere, e.g. in the store) first
 * when it is a target the conversation may go to and it can take a request now (enabled,
 * breaker not open, below max_inflight); sets affinity_hit. Returns whether <name> is now
 * first. Reads runtime state through atomics; no I/O. */
bool sy_router_prefer(sy_pick *p, const char *name);

/* ---- batch share (DESIGN §9) ------------------------------------------------------------------
 * Batch lines may hold at most max(1, floor(<share> * max_inflight)) attempts of a deployment
 * with max_inflight > 0; interactive requests keep the rest. A batch request reserves its slot
 * when it is picked and releases it when the request is freed; counts live in a process-wide
 * registry keyed by deployment name (they outlive reloads like health.h's). */

/* The batch cap of <d>: 0 = no cap (max_inflight 0). */
int sy_router_batch_cap(const sy_deployment *d, double share);
/* Batch requests holding a slot of the deployment named <name> now. */
int sy_router_batch_inflight(const char *name);
/* Narrows <pick> (from sy_router_pick) to its first available target with a free batch slot and
 * reserves that slot: *slot is the counter to give back with sy_router_batch_release (NULL when
 * nothing was reserved: no target is available for any request, the relay reports that as
 * usual). SY_EUNAVAIL when every available target's batch share is taken (nothing reserved).
 * Thread-safe; no I/O. */
sy_err sy_router_pick_batch(sy_pick *pick, double share, int **slot);
/* Gives back a slot from sy_router_pick_batch. NULL is a no-op. */
void sy_router_batch_release(int *slot);

#endif
