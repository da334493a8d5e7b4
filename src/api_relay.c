/* api_relay: POST /v1/chat/completions, /v1/completions and /v1/embeddings. Validates the body
 * the way OpenAI does (same params named in errors), resolves the model to deployments through
 * the router, and hands back a request for the upstream thread. Nothing here blocks. */
#include "switchyard/api.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/batch.h"
#include "switchyard/json_util.h"
#include "switchyard/router.h"
#include "switchyard/cache.h"
#include "switchyard/routes.h"

_Static_assert(sizeof(((sy_request *)0)->cache_key) == SY_CACHE_KEY_SIZE,
               "request.h's cache_key size follows cache.h");

typedef struct check {
    sy_err rc;
    char msg[256];
    const char *param;
} check;

/* Records an invalid-request error naming <param>; returns -1 for the caller to pass on. */
static int fail(check *c, const char *param, const char *msg)
{
    c->rc = SY_EINVAL;
    c->param = param;
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    return -1;
}

/* Optional field of a JSON type set; null counts as absent. */
static int opt_type(check *c, const json_t *b, const char *k, int types, const char *what)
{
    json_t *v = json_object_get(b, k);
    if (v == NULL || json_is_null(v))
        return 0;
    int t = 1 << json_typeof(v);
    /* an integer is a valid "number" */
    if (json_is_integer(v) && (types & (1 << JSON_REAL)))
        t |= 1 << JSON_REAL;
    if (t & types)
        return 0;
    char msg[160];
    snprintf(msg, sizeof(msg), "Invalid type for '%s': expected %s.", k, what);
    return fail(c, k, msg);
}

#define T(x) (1 << (x))
#define NUM T(JSON_REAL)
#define INT T(JSON_INTEGER)
#define STR T(JSON_STRING)
#define OBJ T(JSON_OBJECT)
#define ARR T(JSON_ARRAY)
#define BOOL (T(JSON_TRUE) | T(JSON_FALSE))

static int check_common(check *c, const json_t *b)
{
    if (opt_type(c, b, "stream", BOOL, "a boolean") || opt_type(c, b, "n", INT, "an integer") ||
        opt_type(c, b, "temperature", NUM, "a number") ||
        opt_type(c, b, "top_p", NUM, "a number") ||
        opt_type(c, b, "max_tokens", INT, "an integer") ||
        opt_type(c, b, "seed", INT, "an integer") ||
        opt_type(c, b, "presence_penalty", NUM, "a number") ||
        opt_type(c, b, "frequency_penalty", NUM, "a number") ||
        opt_type(c, b, "logit_bias", OBJ, "an object") ||
        opt_type(c, b, "user", STR, "a string") ||
        opt_type(c, b, "stop", STR | ARR, "a string or an array of strings") ||
        opt_type(c, b, "stream_options", OBJ, "an object"))
        return -1;
    json_t *t = json_object_get(b, "temperature");
    if (json_is_number(t) && (json_number_value(t) < 0 || json_number_value(t) > 2))
        return fail(c, "temperature", "'temperature' must be between 0 and 2.");
    json_t *n = json_object_get(b, "n");
    if (json_is_integer(n) && (json_integer_value(n) < 1 || json_integer_value(n) > 128))
        return fail(c, "n", "'n' must be between 1 and 128.");
    json_t *mt = json_object_get(b, "max_tokens");
    if (json_is_integer(mt) && json_integer_value(mt) < 1)
        return fail(c, "max_tokens", "'max_tokens' must be at least 1.");
    if (json_is_object(json_object_get(b, "stream_options")) &&
        !json_is_true(json_object_get(b, "stream")))
        return fail(c, "stream_options",
                    "The 'stream_options' parameter is only allowed when 'stream' is true.");
    return 0;
}

static const char *roles[] = {"system", "developer", "user", "assistant", "tool", "function"};

static int check_chat(check *c, const json_t *b, size_t max_messages)
{
    json_t *msgs = json_object_get(b, "messages");
    if (msgs == NULL || json_is_null(msgs))
        return fail(c, "messages", "Missing required parameter: 'messages'.");
    if (!json_is_array(msgs))
        return fail(c, "messages", "Invalid type for 'messages': expected an array.");
    if (json_array_size(msgs) == 0)
        return fail(c, "messages",
                    "Invalid 'messages': empty array. Expected an array with minimum length 1.");
    if (json_array_size(msgs) > max_messages) {
        c->rc = SY_ETOOBIG;
        c->param = "messages";
        snprintf(c->msg, sizeof(c->msg), "Too many messages: %zu (the limit is %zu).",
                 json_array_size(msgs), max_messages);
        return -1;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        char p[64];
        snprintf(p, sizeof(p), "messages[%zu]", i);
        if (!json_is_object(m)) {
            c->rc = SY_EINVAL;
            c->param = "messages";
            snprintf(c->msg, sizeof(c->msg), "Invalid type for '%s': expected an object.", p);
            return -1;
        }
        const char *role = json_string_value(json_object_get(m, "role"));
        bool known = false;
        for (size_t k = 0; role != NULL && k < sizeof(roles) / sizeof(roles[0]); k++)
            known = known || strcmp(role, roles[k]) == 0;
        if (!known) {
            c->rc = SY_EINVAL;
            c->param = "messages";
            snprintf(c->msg, sizeof(c->msg),
                     "Invalid value for '%s.role': expected one of system, developer, user, "
                     "assistant, tool.",
                     p);
            return -1;
        }
        json_t *content = json_object_get(m, "content");
        if (content != NULL && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content)) {
            c->rc = SY_EINVAL;
            c->param = "messages";
            snprintf(c->msg, sizeof(c->msg),
                     "Invalid type for '%s.content': expected a string or an array of content "
                     "parts.",
                     p);
            return -1;
        }
        if (content == NULL && strcmp(role, "assistant") != 0) {
            c->rc = SY_EINVAL;
            c->param = "messages";
            snprintf(c->msg, sizeof(c->msg), "Missing required parameter: '%s.content'.", p);
            return -1;
        }
    }
    if (opt_type(c, b, "tools", ARR, "an array") ||
        opt_type(c, b, "tool_choice", STR | OBJ, "a string or an object") ||
        opt_type(c, b, "response_format", OBJ, "an object") ||
        opt_type(c, b, "max_completion_tokens", INT, "an integer") ||
        opt_type(c, b, "parallel_tool_calls", BOOL, "a boolean") ||
        opt_type(c, b, "logprobs", BOOL, "a boolean"))
        return -1;
    return 0;
}

static int check_completions(check *c, const json_t *b)
{
    json_t *p = json_object_get(b, "prompt");
    if (p == NULL || json_is_null(p))
        return fail(c, "prompt", "Missing required parameter: 'prompt'.");
    if (!json_is_string(p) && !json_is_array(p))
        return fail(c, "prompt", "Invalid type for 'prompt': expected a string or an array.");
    return opt_type(c, b, "echo", BOOL, "a boolean") ||
                   opt_type(c, b, "suffix", STR, "a string") ||
                   opt_type(c, b, "best_of", INT, "an integer") ||
                   opt_type(c, b, "logprobs", INT, "an integer")
               ? -1
               : 0;
}

static int check_embeddings(check *c, const json_t *b, bool *b64)
{
    json_t *in = json_object_get(b, "input");
    if (in == NULL || json_is_null(in))
        return fail(c, "input", "Missing required parameter: 'input'.");
    if (json_is_string(in)) {
        if (json_string_length(in) == 0)
            return fail(c, "input", "'input' cannot be an empty string.");
    } else if (json_is_array(in)) {
        if (json_array_size(in) == 0)
            return fail(c, "input", "'input' cannot be an empty array.");
        size_t i;
        json_t *v;
        int kind = -1;
        json_array_foreach(in, i, v)
        {
            int k = json_is_string(v) ? 0 : json_is_integer(v) ? 1 : json_is_array(v) ? 2 : 3;
            if (k == 3 || (kind >= 0 && k != kind))
                return fail(c, "input",
                            "Invalid 'input': expected a string, an array of strings, an array "
                            "of token ids, or an array of token-id arrays.");
            kind = k;
        }
    } else {
        return fail(c, "input", "Invalid type for 'input': expected a string or an array.");
    }
    if (opt_type(c, b, "encoding_format", STR, "a string") ||
        opt_type(c, b, "dimensions", INT, "an integer"))
        return -1;
    const char *ef = json_string_value(json_object_get(b, "encoding_format"));
    if (ef != NULL && strcmp(ef, "float") != 0 && strcmp(ef, "base64") != 0)
        return fail(c, "encoding_format",
                    "Invalid value for 'encoding_format': expected 'float' or 'base64'.");
    *b64 = ef != NULL && strcmp(ef, "base64") == 0;
    if (json_is_true(json_object_get(b, "stream")))
        return fail(c, "stream", "Embeddings cannot be streamed.");
    return 0;
}

/* The tenant: a digest of the bearer token. It separates cache entries, affinity, spend and
 * the ownership of files and batches, so it must not be forgeable: SHA-256, not a fast hash. */
const char *sy_api_tenant(const char *authorization, char *buf, size_t n)
{
    if (authorization == NULL || n < SY_TENANT_MAX)
        return NULL;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)authorization, strlen(authorization), md);
    static const char hex[] = "0123456789abcdef";
    buf[0] = 'k';
    buf[1] = ':';
    for (size_t i = 0; i < 16; i++) {
        buf[2 + 2 * i] = hex[md[i] >> 4];
        buf[3 + 2 * i] = hex[md[i] & 15];
    }
    buf[34] = '\0';
    return buf;
}

bool sy_api_batch_ok(const sy_api_in *in)
{
    if (in->batch_token == NULL || in->batch_token[0] == '\0' || in->get_header == NULL)
        return false;
    const char *t = in->get_header(in->hctx, SY_BATCH_HDR_TOKEN);
    size_t n = t != NULL ? strlen(t) : 0, m = strlen(in->batch_token);
    /* constant time in the token's bytes; only the length can leak */
    return n == m && CRYPTO_memcmp(t, in->batch_token, n) == 0;
}

/* A batch line's tenant as its worker sent it: the creator's digest ("k:" + 32 hex). */
static const char *batch_tenant(const sy_api_in *in, char *buf, size_t n)
{
    const char *t = in->get_header(in->hctx, SY_BATCH_HDR_TENANT);
    if (t == NULL || strlen(t) != 34 || strncmp(t, "k:", 2) != 0 ||
        strspn(t + 2, "0123456789abcdef") != 32)
        return NULL;
    snprintf(buf, n, "%s", t);
    return buf;
}

/* The prompt-cache plan of a relayed request (DESIGN §6): the route's mode, the body and the
 * client's Cache-Control decide; the lookup key uses the first target's model. */
static void plan_cache(const sy_api_in *in, sy_request *req)
{
    const sy_route *r = req->pick.route_def;
    const char *cc = in->get_header != NULL ? in->get_header(in->hctx, "cache-control") : NULL;
    sy_cache_plan plan = sy_cache_eligible(r != NULL ? r->cache_mode : SY_CACHE_NEVER, req->ep,
                                           req->body, cc);
    req->cache_hdr = sy_cache_header(&plan, false);
    if (!plan.lookup && !plan.store)
        return;
    if (req->ep == SY_EP_EMBEDDINGS) {
        /* cached per input, with one key per input computed by the worker */
        req->cache_lookup = plan.lookup;
        req->cache_store = plan.store;
        req->cache_ttl_s = r->cache_ttl_s;
        req->cache_max_bytes = r->cache_max_entry_bytes;
        return;
    }
    sy_cache_key_in k = {.ep = req->ep, .route = req->pick.route,
                         .model = req->pick.targets[0]->model,
                         .tenant = req->tenant[0] ? req->tenant : NULL, .body = req->body};
    if (sy_cache_key(&k, req->cache_key) != SY_OK)
        return; /* no key: not cached, never an error */
    req->cache_lookup = plan.lookup;
    req->cache_store = plan.store;
    req->cache_ttl_s = r->cache_ttl_s;
    req->cache_max_bytes = r->cache_max_entry_bytes;
}

void sy_api_relay(const sy_api_in *in, sy_endpoint ep, sy_reply *out)
{
    char msg[300];
    json_t *body = NULL;
    check c = {.rc = SY_OK};
    bool b64 = false;

    if (in->too_big) {
        snprintf(msg, sizeof(msg), "Request body is larger than the limit of %zu bytes.",
                 in->cfg->max_body_bytes);
        sy_api_error(out, SY_ETOOBIG, msg, NULL);
        return;
    }
    sy_err rc = sy_json_parse_body(in->body, in->len, in->cfg->max_json_depth, &body, msg,
                                   sizeof(msg));
    if (rc != SY_OK) {
        sy_api_error(out, rc, msg, NULL);
        return;
    }
    json_t *model = json_object_get(body, "model");
    if (model == NULL || json_is_null(model)) {
        sy_api_error(out, SY_EINVAL, "you must provide a model parameter", "model");
        goto out;
    }
    if (!json_is_string(model) || json_string_length(model) == 0) {
        sy_api_error(out, SY_EINVAL, "Invalid type for 'model': expected a non-empty string.",
                     "model");
        goto out;
    }
    snprintf(out->model, sizeof(out->model), "%s", json_string_value(model));
    int bad = check_common(&c, body);
    if (!bad) {
        if (ep == SY_EP_CHAT)
            bad = check_chat(&c, body, in->cfg->max_messages);
        else if (ep == SY_EP_COMPLETIONS)
            bad = check_completions(&c, body);
        else
            bad = check_embeddings(&c, body, &b64);
    }
    if (bad) {
        sy_api_error(out, c.rc, c.msg, c.param);
        goto out;
    }
    sy_pick pick;
    char tenant[SY_TENANT_MAX];
    bool batch = sy_api_batch_ok(in);
    const char *who = batch ? batch_tenant(in, tenant, sizeof(tenant))
                            : sy_api_tenant(in->authorization, tenant, sizeof(tenant));
    sy_route_ctx rctx = {.get_header = in->get_header, .hctx = in->hctx, .tenant = who};
    rc = sy_router_pick(in->cfg, json_string_value(model), body, &rctx, &pick);
    int *slot = NULL;
    if (batch && rc == SY_OK)
        rc = sy_router_pick_batch(&pick, in->cfg->batch_share, &slot);
    if (batch && rc == SY_ENOMEM) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        goto out;
    }
    if (batch && rc == SY_EUNAVAIL) {
        /* every target's batch share is taken (or every target is full): the worker waits
         * and retries without spending an attempt */
        out->status = 503;
        out->body = sy_err_body_raw("api_error", "batch_capacity", NULL,
                                    "every deployment of this route is at its batch share; "
                                    "retry shortly",
                                    &out->len);
        snprintf(out->retry_after, sizeof(out->retry_after), "1");
        goto out;
    }
    if (rc == SY_ENOMODEL) {
        snprintf(msg, sizeof(msg),
                 "The model '%.200s' does not exist or is not served by this proxy (see GET "
                 "/v1/models).",
                 json_string_value(model));
        sy_api_error(out, SY_ENOMODEL, msg, "model");
        goto out;
    }
    if (rc == SY_EUNAVAIL) {
        size_t k = (size_t)snprintf(msg, sizeof(msg),
                                    "No deployment of route '%s' can take this request now "
                                    "(circuit breaker open or at max_inflight):",
                                    pick.route ? pick.route : "?");
        for (size_t i = 0; i < pick.ntargets && k < sizeof(msg); i++)
            k += (size_t)snprintf(msg + k, sizeof(msg) - k, "%s %s", i ? "," : "",
                                  pick.targets[i]->name);
        sy_api_error(out, SY_EUNAVAIL, msg, NULL);
        snprintf(out->retry_after, sizeof(out->retry_after), "1");
        goto out;
    }
    if (in->shutting_down) {
        sy_router_batch_release(slot);
        sy_api_error(out, SY_ESHUTDOWN, NULL, NULL);
        goto out;
    }
    char *m = strdup(json_string_value(model));
    bool stream = json_is_true(json_object_get(body, "stream"));
    bool usage = json_is_true(
        json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    sy_request *req = sy_request_new(in->cfg, ep, body, m); /* takes body and m */
    body = NULL;
    if (req != NULL) {
        req->batch = batch;
        req->batch_slot = slot; /* released when the request is freed */
        slot = NULL;
    }
    sy_router_batch_release(slot);
    if (req == NULL || req->model == NULL) {
        sy_request_unref(req);
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        goto out;
    }
    req->stream = stream;
    req->body_bytes = in->len;
    req->client_usage = stream && usage;
    req->embed_b64 = b64;
    req->pick = pick;
    req->log.route = pick.route;
    if (rctx.tenant != NULL)
        snprintf(req->tenant, sizeof(req->tenant), "%s", rctx.tenant);
    plan_cache(in, req);
    out->req = req;
out:
    json_decref(body);
}
