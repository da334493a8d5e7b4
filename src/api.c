/* api: method and path dispatch, authentication, and the reply helpers. */
#include "switchyard/api.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/json_util.h"

void sy_api_error(sy_reply *out, sy_err e, const char *message, const char *param)
{
    out->status = sy_err_status(e);
    out->body = sy_err_body(e, message, param, &out->len);
}

void sy_api_json(sy_reply *out, int status, json_t *j)
{
    out->body = j != NULL ? sy_json_dump(j, &out->len) : NULL;
    json_decref(j);
    if (out->body == NULL) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        return;
    }
    out->status = status;
}

bool sy_api_master_ok(const sy_config *cfg, const char *authorization)
{
    if (cfg->master_key == NULL || authorization == NULL)
        return false;
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *a = authorization + 7;
    size_t n = strlen(a), m = strlen(cfg->master_key);
    /* constant time in the key's bytes; only the length can leak */
    return n == m && CRYPTO_memcmp(a, cfg->master_key, n) == 0;
}

const char *sy_api_scope(const sy_api_in *in, char *buf, size_t n)
{
    if (in->cfg != NULL && sy_api_master_ok(in->cfg, in->authorization))
        return NULL;
    const char *t = sy_api_tenant(in->authorization, buf, n);
    return t != NULL ? t : "";
}

#define BAD_KEY "invalid API key: send 'Authorization: Bearer <key>' with a key this proxy accepts"

static bool authorized(const sy_api_in *in)
{
    return !in->cfg->require_keys || sy_api_master_ok(in->cfg, in->authorization) ||
           sy_api_batch_ok(in);
}

enum path_kind { K_RELAY, K_MODELS, K_HEALTH, K_SPEND, K_METRICS, K_DASHBOARD };

struct path_row {
    const char *path;
    const char *method;
    enum path_kind kind;
    sy_endpoint ep; /* K_RELAY only */
};

static const struct path_row paths[] = {
    {"/v1/chat/completions", "POST", K_RELAY, SY_EP_CHAT},
    {"/v1/completions", "POST", K_RELAY, SY_EP_COMPLETIONS},
    {"/v1/embeddings", "POST", K_RELAY, SY_EP_EMBEDDINGS},
    {"/v1/models", "GET", K_MODELS, SY_EP_CHAT},
    {"/healthz", "GET", K_HEALTH, SY_EP_CHAT},
    {"/v1/spend", "GET", K_SPEND, SY_EP_CHAT},
    {"/metrics", "GET", K_METRICS, SY_EP_CHAT},
    {"/dashboard", "GET", K_DASHBOARD, SY_EP_CHAT},
};

static bool has_prefix_path(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

bool sy_api_offloaded(const char *path)
{
    return has_prefix_path(path, "/v1/files") || has_prefix_path(path, "/v1/batches");
}

void sy_api_handle(const sy_api_in *in, sy_reply *out)
{
    char msg[300];
    const char *path = in->path;
    size_t plen = strlen(path);
    /* Tolerate one trailing slash, as most HTTP frameworks do. */
    if (plen > 1 && path[plen - 1] == '/')
        plen--;

    memset(out, 0, sizeof(*out));
    out->fd = -1;
    if (sy_api_offloaded(path)) {
        if (!authorized(in)) {
            sy_api_error(out, SY_EAUTH, BAD_KEY, NULL);
            return;
        }
        if (strncmp(path, "/v1/files", 9) == 0)
            sy_api_files(in, out);
        else
            sy_api_batches(in, out);
        return;
    }
    if (plen > 11 && strncmp(path, "/v1/models/", 11) == 0) {
        if (strcmp(in->method, "GET") != 0 && strcmp(in->method, "HEAD") != 0) {
            out->allow = "GET";
            snprintf(msg, sizeof(msg), "method %s is not allowed on %s; use GET", in->method,
                     "/v1/models/{model}");
            sy_api_error(out, SY_EMETHOD, msg, NULL);
            return;
        }
        if (!authorized(in)) {
            sy_api_error(out, SY_EAUTH, NULL, NULL);
            return;
        }
        char *id = strndup(path + 11, plen - 11);
        if (id == NULL) {
            sy_api_error(out, SY_ENOMEM, NULL, NULL);
            return;
        }
        sy_api_models(in, id, out);
        free(id);
        return;
    }
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const struct path_row *r = &paths[i];
        if (strlen(r->path) != plen || strncmp(r->path, path, plen) != 0)
            continue;
        bool ok = strcmp(in->method, r->method) == 0 ||
                  (strcmp(r->method, "GET") == 0 && strcmp(in->method, "HEAD") == 0);
        if (!ok) {
            out->allow = r->method;
            snprintf(msg, sizeof(msg), "method %s is not allowed on %s; use %s", in->method,
                     r->path, r->method);
            sy_api_error(out, SY_EMETHOD, msg, NULL);
            return;
        }
        /* health is open; spend, metrics and the dashboard check the master key themselves
         * (api_spend.c) */
        switch (r->kind) {
        case K_HEALTH:
            sy_api_health(in, out);
            return;
        case K_SPEND:
            sy_api_spend(in, out);
            return;
        case K_METRICS:
            sy_api_metrics(in, out);
            return;
        case K_DASHBOARD:
            sy_api_dashboard(in, out);
            return;
        case K_MODELS:
        case K_RELAY:
            break;
        }
        if (!authorized(in)) {
            sy_api_error(out, SY_EAUTH, BAD_KEY, NULL);
            return;
        }
        if (r->kind == K_MODELS)
            sy_api_models(in, NULL, out);
        else
            sy_api_relay(in, r->ep, out);
        return;
    }
    snprintf(msg, sizeof(msg), "unknown path %.200s", in->path);
    sy_api_error(out, SY_ENOTFOUND, msg, NULL);
}
