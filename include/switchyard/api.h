/* api: the endpoint handlers. Given a complete HTTP request (method, decoded path, body), an
 * endpoint either answers at once (models, health, every client error) or validates the body
 * and returns a request to relay. Errors are built only through err.h. Pure with respect to
 * I/O: the server does the HTTP work, the upstream thread the relaying. */
#ifndef SY_API_H
#define SY_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/config.h"
#include "switchyard/request.h"

typedef struct sy_api_in {
    sy_config *cfg; /* borrowed; relayed requests take their own reference */
    const char *method;
    const char *path; /* percent-decoded */
    const char *body;
    size_t len;
    bool too_big;               /* the body passed server.max_body_bytes */
    const char *authorization;  /* the Authorization header, or NULL */
    /* any request header by lower-case name, or NULL (may be NULL itself) */
    const char *(*get_header)(void *hctx, const char *name);
    void *hctx;
    int inflight;               /* for /healthz */
    int64_t uptime_s;
    bool shutting_down;
    const char *store_kind; /* "redis", "embedded", or NULL */
    bool store_healthy;
    struct sy_spend *spend;     /* GET /v1/spend, /metrics; NULL = spend not recorded (503) */
    struct sy_metrics *metrics; /* GET /metrics; NULL = 503 */
    /* a query-string argument by name, decoded (MHD_GET_ARGUMENT_KIND on hctx), or NULL; the
     * callback may be NULL (no arguments) */
    const char *(*get_arg)(void *hctx, const char *name);
    /* Files and Batches API (files.c, batch.c). These handlers run on a worker thread (they
     * call the store and the disk), never on the MHD thread; server.c suspends the connection
     * and hands them a copy of the request's headers and arguments. */
    struct sy_files *files;   /* NULL = not available (503) */
    struct sy_batch *batch;   /* NULL = not available (503) */
    struct sy_upload *upload; /* POST /v1/files: the streamed multipart body, else NULL */
    const char *batch_token;  /* internal token a batch worker's own requests carry, or NULL */
} sy_api_in;

typedef struct sy_reply {
    int status;
    char *body; /* owned JSON body (NULL with req) */
    size_t len;
    const char *allow; /* Allow header for 405, static */
    char retry_after[16]; /* Retry-After header value, "" when none */
    sy_request *req;   /* when non-NULL: relay it (the caller owns this reference) */
    char model[96];    /* the request's model, for the access log */
    const char *content_type; /* static; NULL = application/json */
    /* A file body instead of <body> (GET /v1/files/{id}/content): the server sends <fd_len>
     * bytes of <fd> from offset 0 and closes it. */
    bool has_fd;
    int fd;
    uint64_t fd_len;
} sy_reply;

/* Always fills <out> (status and body, or req). */
void sy_api_handle(const sy_api_in *in, sy_reply *out);

/* Whether <authorization> carries the master key (constant time). False when none is set. */
bool sy_api_master_ok(const sy_config *cfg, const char *authorization);

/* api_relay.c: whether the request carries this process's batch token (constant time): a
 * batch worker's own line, authorized even with require_keys. */
bool sy_api_batch_ok(const sy_api_in *in);
/* The tenant of a bearer <authorization>: "k:" + 32 hex digits (the first 128 bits of the
 * SHA-256 of the header value), so the key itself is never stored and no one can craft a key
 * that passes for another tenant. NULL without a header. <n> >= SY_TENANT_MAX. */
#define SY_TENANT_MAX 40
const char *sy_api_tenant(const char *authorization, char *buf, size_t n);
/* The caller's scope for the Files and Batches APIs: NULL (every tenant) with the master key,
 * else its tenant as sy_api_tenant writes it into <buf>, or "" without a bearer (the tenant
 * that objects created without one are stored under). <n> >= SY_TENANT_MAX. */
const char *sy_api_scope(const sy_api_in *in, char *buf, size_t n);

/* Helpers shared by the endpoint files. */
void sy_api_error(sy_reply *out, sy_err e, const char *message, const char *param);
void sy_api_json(sy_reply *out, int status, json_t *j); /* takes <j> */

/* Endpoint families (api_models.c, api_relay.c). */
void sy_api_models(const sy_api_in *in, const char *id, sy_reply *out);
void sy_api_health(const sy_api_in *in, sy_reply *out);
void sy_api_relay(const sy_api_in *in, sy_endpoint ep, sy_reply *out);
/* api_spend.c: GET /v1/spend (JSON), GET /metrics (Prometheus text), GET /dashboard (HTML). */
void sy_api_spend(const sy_api_in *in, sy_reply *out);
void sy_api_metrics(const sy_api_in *in, sy_reply *out);
void sy_api_dashboard(const sy_api_in *in, sy_reply *out);
/* files.c: /v1/files and /v1/files/{id}[/content]; batch.c: /v1/batches[/{id}[/cancel]].
 * Both run on a worker thread (see sy_api_in.files). */
void sy_api_files(const sy_api_in *in, sy_reply *out);
void sy_api_batches(const sy_api_in *in, sy_reply *out);
/* Whether <path> (percent-decoded) is served by sy_api_files or sy_api_batches: such requests
 * are handed to a worker thread by the server. */
bool sy_api_offloaded(const char *path);

#endif
