/* router: turns a request's model (and later key, headers, content) into an ordered list of
 * deployments to try. This is the seam where route tables and the classifier plug in; today it
 * resolves a model by alias, deployment name, or upstream model name. Pure: no I/O. */
#ifndef SY_ROUTER_H
#define SY_ROUTER_H

#include <jansson.h>

#include "switchyard/config.h"
#include "switchyard/err.h"

#define SY_ROUTER_MAX_TARGETS 8

typedef struct sy_pick {
    const sy_deployment *targets[SY_ROUTER_MAX_TARGETS]; /* borrowed from the config */
    size_t ntargets;
    const char *route; /* borrowed; the route's name */
    const char *tier;  /* borrowed; may be NULL */
    double score;      /* classifier score, or -1 when none ran */
} sy_pick;

/* <body> is the parsed request (borrowed). Returns SY_OK, or SY_ENOMODEL when nothing matches.
 * Targets whose deployment is disabled are kept (the caller reports why they cannot serve). */
sy_err sy_router_pick(const sy_config *cfg, const char *model, const json_t *body, sy_pick *out);

#endif
