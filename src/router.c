/* router: model -> ordered deployments. Aliases first (they name an explicit fallback order),
 * then a deployment name, then every deployment serving that upstream model name in config
 * order. Route tables and the classifier (a later issue) plug in here. */
#include "switchyard/router.h"

#include <string.h>

static void add(sy_pick *p, const sy_deployment *d)
{
    for (size_t i = 0; i < p->ntargets; i++)
        if (p->targets[i] == d)
            return;
    if (p->ntargets < SY_ROUTER_MAX_TARGETS)
        p->targets[p->ntargets++] = d;
}

sy_err sy_router_pick(const sy_config *cfg, const char *model, const json_t *body, sy_pick *out)
{
    (void)body;
    memset(out, 0, sizeof(*out));
    out->score = -1;
    if (model == NULL)
        return SY_ENOMODEL;
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
