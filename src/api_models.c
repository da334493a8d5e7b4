/* api_models: GET /v1/models, GET /v1/models/{id} and GET /healthz, answered from the config.
 * A model id is a deployment name, an alias, or a deployment's upstream model name. */
#include "switchyard/api.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "switchyard/provider.h"

static json_t *model_obj(const char *id, const char *owner)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created",
                     (json_int_t)1735689600, "owned_by", owner);
}

static const char *owner_of(const sy_deployment *d)
{
    return d->provider == SY_PROVIDER_ANTHROPIC ? "anthropic" : "switchyard";
}

void sy_api_models(const sy_api_in *in, const char *id, sy_reply *out)
{
    const sy_config *cfg = in->cfg;
    if (id != NULL) {
        const sy_deployment *d = sy_config_deployment(cfg, id);
        if (d != NULL) {
            sy_api_json(out, 200, model_obj(id, owner_of(d)));
            return;
        }
        if (sy_config_alias(cfg, id) != NULL) {
            sy_api_json(out, 200, model_obj(id, "switchyard"));
            return;
        }
        for (size_t i = 0; i < cfg->ndeployments; i++) {
            if (strcmp(cfg->deployments[i].model, id) == 0) {
                sy_api_json(out, 200, model_obj(id, owner_of(&cfg->deployments[i])));
                return;
            }
        }
        char msg[300];
        snprintf(msg, sizeof(msg), "The model '%.200s' does not exist", id);
        sy_api_error(out, SY_ENOMODEL, msg, "model");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < cfg->ndeployments; i++)
        json_array_append_new(data, model_obj(cfg->deployments[i].name,
                                              owner_of(&cfg->deployments[i])));
    for (size_t i = 0; i < cfg->naliases; i++)
        json_array_append_new(data, model_obj(cfg->aliases[i].name, "switchyard"));
    sy_api_json(out, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

void sy_api_health(const sy_api_in *in, sy_reply *out)
{
    const sy_config *cfg = in->cfg;
    json_t *deps = json_array();
    for (size_t i = 0; i < cfg->ndeployments; i++) {
        const sy_deployment *d = &cfg->deployments[i];
        json_array_append_new(deps, json_pack("{s:s,s:s,s:b}", "name", d->name, "provider",
                                              sy_provider_get(d->provider)->name, "enabled",
                                              !d->disabled));
    }
    /* A store outage degrades (cache misses, local limits, spend journaled) but serving goes
     * on: still 200, so load balancers keep the instance. */
    const char *status = in->shutting_down                         ? "shutting_down"
                         : in->store_kind != NULL && !in->store_healthy ? "degraded"
                                                                    : "ok";
    json_t *store = in->store_kind != NULL
                        ? json_pack("{s:s,s:b}", "kind", in->store_kind, "healthy", in->store_healthy)
                        : json_null();
    sy_api_json(out, in->shutting_down ? 503 : 200,
                json_pack("{s:s,s:s,s:I,s:i,s:o,s:o}", "status", status, "version", SY_VERSION,
                          "uptime_s", (json_int_t)in->uptime_s, "inflight", in->inflight,
                          "store", store, "deployments", deps));
}
