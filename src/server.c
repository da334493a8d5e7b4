/* server: libmicrohttpd wiring. Per connection a small context accumulates the body (capped);
 * the api module decides; relayed requests suspend the connection and go to the upstream thread
 * through the bridge. Everything a request allocates is released in on_completed and
 * sy_request_unref. */
#include "switchyard/server.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "switchyard/affinity.h"
#include "switchyard/api.h"
#include "switchyard/bridge.h"
#include "switchyard/cache.h"
#include "switchyard/log.h"
#include "switchyard/json_util.h"
#include "switchyard/routes.h"
#include "switchyard/metrics.h"
#include "switchyard/router.h"
#include "switchyard/shared.h"
#include "switchyard/spend.h"
#include "switchyard/store.h"
#include "switchyard/workers.h"
#include "switchyard/upstream.h"
#include "switchyard/files.h"
#include "switchyard/batch.h"

struct sy_server {
    struct MHD_Daemon *mhd;
    sy_config *cfg; /* current snapshot; swapped by reloads under cfg_mu */
    pthread_mutex_t cfg_mu;
    sy_bridge *bridge;
    sy_upstream *up;
    sy_store *store;     /* shared state: Redis or embedded; created once, not on reload */
    sy_workers *workers; /* blocking work (store calls) off the MHD and curl threads */
    sy_shared *shared;   /* affinity and breakers exchanged with Redis; NULL when embedded */
    sy_metrics *metrics;
    sy_spend *spend;     /* every finished relayed request is recorded here (journal + store) */
    sy_workers *api_workers; /* Files and Batches API handlers (store and disk calls) */
    sy_files *files;
    sy_batch *batch;     /* created once the listener is up (its workers call it) */
    char address[80];
    int64_t started_us;
    int inflight; /* atomic: relayed requests not yet completed */
    /* Relaying is refused once the upstream thread stops; the lock makes the check and the
     * START post atomic with respect to that. */
    pthread_mutex_t relay_mu;
    bool closing;
};

typedef struct api_job api_job;

typedef struct conn_ctx {
    sy_server *srv;
    sy_config *cfg; /* the snapshot this request was accepted under (a reference) */
    api_job *api;        /* an offloaded call (Files/Batches API, reload), once started */
    sy_upload *upload;   /* POST /v1/files: the body goes here instead of <body> */
    sy_buf body;
    bool too_big;
    bool handled;
    sy_request *req;
    int64_t t0_us;
    int status;
    uint64_t bytes;
    char method[12];
    char path[160];
    char model[96];
} conn_ctx;

static sy_config *server_config(sy_server *s)
{
    pthread_mutex_lock(&s->cfg_mu);
    sy_config *c = sy_config_ref(s->cfg);
    pthread_mutex_unlock(&s->cfg_mu);
    return c;
}

static void add_headers(struct MHD_Response *r, const sy_request *req, const char *ctype)
{
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (req == NULL)
        return;
    MHD_add_response_header(r, "x-request-id", req->id);
    if (req->pick.route != NULL)
        MHD_add_response_header(r, "x-switchyard-route", req->pick.route);
    if (req->dep != NULL)
        MHD_add_response_header(r, "x-switchyard-deployment", req->dep->name);
    char n[32];
    snprintf(n, sizeof(n), "%d", req->attempts);
    MHD_add_response_header(r, "x-switchyard-attempts", n);
    if (req->pick.tier != NULL)
        MHD_add_response_header(r, "x-switchyard-tier", req->pick.tier);
    if (req->pick.score >= 0) {
        snprintf(n, sizeof(n), "%.4f", req->pick.score);
        MHD_add_response_header(r, "x-switchyard-score", n);
    }
    if (req->pick.rule != NULL)
        MHD_add_response_header(r, "x-switchyard-rule", req->pick.rule);
    if (req->cache_hdr != NULL)
        MHD_add_response_header(r, "x-switchyard-cache", req->cache_hdr);
    /* Non-stream answers carry their cost (streams: in /v1/spend and the logs); a cache hit
     * costs nothing. Read under the lock: usage is written by other threads. */
    if (!req->stream && req->status == 200) {
        sy_request *mreq = (sy_request *)req;
        pthread_mutex_lock(&mreq->mu);
        bool have = mreq->have_usage;
        sy_usage u = mreq->usage;
        const sy_deployment *d = mreq->dep;
        pthread_mutex_unlock(&mreq->mu);
        if (req->cache_hit || (have && d != NULL)) {
            int64_t micro = req->cache_hit ? 0 : sy_price_cost_micro(&d->price, &u, false);
            snprintf(n, sizeof(n), "%lld.%06lld", (long long)(micro / 1000000),
                     (long long)(micro % 1000000));
            MHD_add_response_header(r, "x-switchyard-cost-usd", n);
        }
    }
}

static enum MHD_Result queue_typed(struct MHD_Connection *conn, conn_ctx *ctx, int status,
                                   char *body, size_t len, const sy_request *req,
                                   const char *allow, const char *retry_after, const char *ctype);

static enum MHD_Result queue_buffer(struct MHD_Connection *conn, conn_ctx *ctx, int status,
                                    char *body, size_t len, const sy_request *req,
                                    const char *allow, const char *retry_after)
{
    return queue_typed(conn, ctx, status, body, len, req, allow, retry_after, NULL);
}

static enum MHD_Result queue_typed(struct MHD_Connection *conn, conn_ctx *ctx, int status,
                                   char *body, size_t len, const sy_request *req,
                                   const char *allow, const char *retry_after, const char *ctype)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    add_headers(r, req, ctype != NULL ? ctype : "application/json");
    if (allow != NULL)
        MHD_add_response_header(r, "Allow", allow);
    if (retry_after != NULL && retry_after[0] != '\0')
        MHD_add_response_header(r, "Retry-After", retry_after);
    ctx->status = status;
    ctx->bytes = len;
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *conn, conn_ctx *ctx, sy_err e,
                                   const char *msg)
{
    size_t len = 0;
    char *body = sy_err_body(e, msg, NULL, &len);
    if (body == NULL)
        return MHD_NO;
    return queue_buffer(conn, ctx, sy_err_status(e), body, len, ctx->req, NULL, NULL);
}

static bool record_spend(sy_request *req, int status, bool aborted, bool ack);
static void spend_answered(sy_request *req);

/* The stream reader: copies what the upstream thread buffered; suspends when there is nothing
 * yet. The stream's final bytes (out_hold) and its end wait until its spend record is journaled:
 * the record is made as soon as the stream is DONE. Runs on the MHD thread. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    sy_request *req = cls;
    bool unpause = false;
    ssize_t n;
    (void)pos;

    pthread_mutex_lock(&req->mu);
    if (req->state == SY_RS_DONE && !req->spend_recorded && !req->cancelled) {
        pthread_mutex_unlock(&req->mu); /* the ack may run before record_spend returns */
        record_spend(req, 200, false, true);
        pthread_mutex_lock(&req->mu);
    }
    size_t held = req->spend_acked ? 0 : req->out_hold;
    size_t avail = req->out.len > held ? req->out.len - held : 0;
    if (avail > 0) {
        size_t k = avail < max ? avail : max;
        memcpy(buf, req->out.data, k);
        sy_buf_consume(&req->out, k);
        req->bytes_out += k;
        if (req->t_first_us == 0)
            req->t_first_us = sy_now_us();
        if (req->upstream_paused && req->out.len < SY_REQ_LOW_WATER) {
            req->upstream_paused = false;
            unpause = true;
        }
        n = (ssize_t)k;
    } else if (req->cancelled || (req->state == SY_RS_DONE && req->spend_acked)) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (req->client_gone) {
        n = MHD_CONTENT_READER_END_WITH_ERROR; /* closed while we waited (upstream.c probe) */
    } else {
        /* DONE: only the spend ack is missing; it wakes us through the bridge */
        req->spend_waiting = req->state == SY_RS_DONE;
        sy_bridge_suspend_locked(req);
        n = 0;
    }
    pthread_mutex_unlock(&req->mu);
    if (unpause) {
        sy_bridge_post(req->bridge, SY_CMD_UNPAUSE, req);
    }
    return n;
}

static void stream_free(void *cls) { sy_request_unref(cls); }

static enum MHD_Result queue_stream(struct MHD_Connection *conn, conn_ctx *ctx, sy_request *req)
{
    struct MHD_Response *r = MHD_create_response_from_callback(
        /* SSE events are small: a 4 KiB block keeps per-stream memory down (bench/README.md) */
        MHD_SIZE_UNKNOWN, 4 * 1024, stream_reader, sy_request_ref(req), stream_free);
    if (r == NULL) {
        sy_request_unref(req);
        return MHD_NO;
    }
    add_headers(r, req, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    ctx->status = 200;
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* Called again after the upstream thread resumed the connection. */
static enum MHD_Result on_resumed(struct MHD_Connection *conn, conn_ctx *ctx)
{
    sy_request *req = ctx->req;
    pthread_mutex_lock(&req->mu);
    sy_req_state st = req->state;
    if (st == SY_RS_PENDING && req->client_gone) {
        pthread_mutex_unlock(&req->mu);
        return MHD_NO; /* the client closed while we waited: on_completed cancels upstream */
    }
    if (st == SY_RS_PENDING) {
        sy_bridge_suspend_locked(req); /* woken early: wait on */
        pthread_mutex_unlock(&req->mu);
        return MHD_YES;
    }
    if (st == SY_RS_READY && !req->spend_acked) {
        /* The whole answer is here: record its spend, and queue it only once that record is
         * journaled (the ack resumes us through the bridge). */
        pthread_mutex_unlock(&req->mu);
        record_spend(req, req->status, false, true); /* a no-op after the first time */
        pthread_mutex_lock(&req->mu);
        if (!req->spend_acked) {
            req->spend_waiting = true;
            sy_bridge_suspend_locked(req);
            pthread_mutex_unlock(&req->mu);
            return MHD_YES;
        }
    }
    if (st == SY_RS_READY) {
        char *body = req->resp_body;
        size_t len = req->resp_len;
        int status = req->status;
        char ra[sizeof(req->retry_after)];
        memcpy(ra, req->retry_after, sizeof(ra));
        req->resp_body = NULL;
        req->t_first_us = sy_now_us();
        req->bytes_out = len;
        pthread_mutex_unlock(&req->mu);
        if (body == NULL)
            return queue_error(conn, ctx, SY_ENOMEM, NULL);
        return queue_buffer(conn, ctx, status, body, len, req, NULL, ra);
    }
    pthread_mutex_unlock(&req->mu);
    return queue_stream(conn, ctx, req);
}

/* Answers a suspended request now (from any thread) with <status> and <body> (taken). */
static void answer_now(sy_request *req, int status, char *body, size_t len)
{
    pthread_mutex_lock(&req->mu);
    sy_request_ready_locked(req, status, body, len);
    sy_bridge_resume_locked(req);
    pthread_mutex_unlock(&req->mu);
    sy_request_answered(req);
}

/* Hands <req> to the upstream thread, unless the server is closing. Any thread. */
static void start_upstream(sy_server *s, sy_request *req)
{
    size_t len = 0;
    pthread_mutex_lock(&s->relay_mu);
    sy_err rc = s->closing ? SY_ESHUTDOWN : sy_bridge_post(s->bridge, SY_CMD_START, req);
    pthread_mutex_unlock(&s->relay_mu);
    if (rc != SY_OK) {
        char *b = sy_err_body(rc, NULL, NULL, &len);
        answer_now(req, sy_err_status(rc), b, len);
    }
}

typedef struct lookup_job {
    sy_server *srv;
    sy_request *req; /* a reference */
    bool affinity;   /* look the conversation up in the store first */
} lookup_job;

/* A conversation this instance does not remember may have been served by another instance:
 * with Redis, a worker asks the store before the request starts. The embedded store is this
 * process's own memory, and a route without affinity never pays the hop. */
static bool wants_affinity_lookup(const sy_request *req)
{
    return req->ep == SY_EP_CHAT && req->pick.affinity_key != 0 && !req->pick.affinity_local &&
           req->store != NULL && sy_store_kind_of(req->store) == SY_STORE_REDIS;
}

/* Worker thread, before the upstream thread sees <req>: the deployment the store remembers
 * goes first when this instance may use it now. The prompt-cache key names the first target's
 * model, so it follows the move. Store trouble leaves the router's choice. */
static void affinity_lookup(sy_request *req)
{
    char name[SY_AFFINITY_NAME_MAX];
    const sy_deployment *before = req->pick.targets[0];
    if (!sy_affinity_store_get(req->store, req->pick.affinity_key, name, sizeof(name)))
        return;
    bool first = sy_router_prefer(&req->pick, name);
    sy_log(SY_LOG_DEBUG, &req->log, "affinity: the store remembers %s%s", name,
           first ? "" : " (not usable here now)");
    const sy_deployment *now = req->pick.targets[0];
    if (!first || now == before || strcmp(now->model, before->model) == 0 ||
        (!req->cache_lookup && !req->cache_store))
        return;
    sy_cache_key_in k = {.ep = req->ep, .route = req->pick.route, .model = now->model,
                         .tenant = req->tenant[0] ? req->tenant : NULL, .body = req->body};
    if (sy_cache_key(&k, req->cache_key) != SY_OK)
        req->cache_lookup = req->cache_store = false; /* no key: not cached, never an error */
}

/* Worker thread: only the affinity lookup, then upstream. */
static void affinity_job(void *arg)
{
    lookup_job *j = arg;
    affinity_lookup(j->req);
    start_upstream(j->srv, j->req);
    sy_request_unref(j->req);
    free(j);
}

/* Worker thread: the prompt-cache lookup. A hit answers in the client's mode (JSON, or the
 * answer replayed as SSE); a miss, or any store trouble, goes upstream. */
static void cache_lookup_job(void *arg)
{
    lookup_job *j = arg;
    sy_request *req = j->req;
    sy_cache_entry e;
    if (j->affinity)
        affinity_lookup(req);
    sy_cache_entry_init(&e);
    sy_cache_status st = sy_cache_get(req->store, req->cache_key, req->ep, &e);
    sy_log(SY_LOG_DEBUG, &req->log, "cache: get %s: %s", req->cache_key, sy_cache_status_name(st));
    bool served = false;
    if (st == SY_CACHE_HIT) {
        sy_cache_replay o = {.req_id = req->id, .now_s = (int64_t)time(NULL),
                             .client_usage = req->client_usage, .embed_b64 = req->embed_b64};
        pthread_mutex_lock(&req->mu);
        if (req->stream) {
            size_t before = req->out.len;
            served = sy_cache_replay_sse(&e, &o, &req->out) == SY_OK;
            if (served) {
                sy_request_hold_final_locked(req, before); /* one answer: all of it ends it */
                req->state = SY_RS_DONE;
                req->status = 200;
            } else {
                sy_buf_reset(&req->out);
            }
        } else {
            char *body = NULL;
            size_t len = 0;
            served = sy_cache_replay_json(&e, &o, &body, &len) == SY_OK;
            if (served)
                sy_request_ready_locked(req, 200, body, len);
        }
        if (served) {
            req->cache_hdr = "hit";
            req->cache_hit = true;
            req->cache_dep = sy_config_deployment(req->cfg, e.deployment);
            req->have_usage = sy_usage_from_json(json_object_get(e.answer, "usage"), &req->usage);
            sy_bridge_resume_locked(req);
        }
        pthread_mutex_unlock(&req->mu);
        if (served)
            sy_request_answered(req);
    }
    sy_cache_entry_cleanup(&e);
    if (!served)
        start_upstream(j->srv, req);
    sy_request_unref(req);
    free(j);
}

/* Worker thread: embeddings are cached per input. All inputs found: answered here. Some
 * missing: only those go upstream (the body is rewritten before the upstream thread sees it),
 * and the upstream thread merges its answer with the cached vectors. */
static void embed_lookup_job(void *arg)
{
    lookup_job *j = arg;
    sy_request *req = j->req;
    sy_cache_embed *e = calloc(1, sizeof(*e));
    sy_cache_key_in k = {.ep = req->ep, .route = req->pick.route,
                         .model = req->pick.targets[0]->model,
                         .tenant = req->tenant[0] ? req->tenant : NULL, .body = req->body};
    bool served = false;
    if (e == NULL || sy_cache_embed_init(e, &k) != SY_OK)
        goto upstream;
    sy_cache_status st = req->cache_lookup ? sy_cache_embed_lookup(req->store, e) : SY_CACHE_MISS;
    if (st == SY_CACHE_HIT) {
        json_t *ans = NULL;
        char *body = NULL;
        size_t len = 0;
        if (sy_cache_embed_answer(e, NULL, req->embed_b64, &ans) == SY_OK)
            body = sy_json_dump(ans, &len);
        json_decref(ans);
        if (body != NULL) {
            pthread_mutex_lock(&req->mu);
            req->cache_hdr = "hit";
            req->cache_hit = true;
            req->cache_dep = req->pick.targets[0];
            sy_request_ready_locked(req, 200, body, len);
            sy_bridge_resume_locked(req);
            pthread_mutex_unlock(&req->mu);
            sy_request_answered(req);
            served = true;
        }
        goto upstream;
    }
    json_t *nb = NULL;
    if (sy_cache_embed_miss_body(e, req->body, &nb) == SY_OK) {
        json_decref(req->body);
        req->body = nb; /* the upstream thread has not seen this request yet */
        req->embed = e;
        e = NULL;
    }
upstream:
    if (e != NULL) {
        sy_cache_embed_cleanup(e);
        free(e);
    }
    if (!served)
        start_upstream(j->srv, req);
    sy_request_unref(req);
    free(j);
}

static enum MHD_Result relay(struct MHD_Connection *conn, conn_ctx *ctx, sy_request *req)
{
    sy_server *s = ctx->srv;
    pthread_mutex_lock(&s->relay_mu);
    bool closing = s->closing;
    pthread_mutex_unlock(&s->relay_mu);
    if (closing) {
        sy_request_unref(req);
        return queue_error(conn, ctx, SY_ESHUTDOWN, NULL);
    }
    ctx->req = req;
    req->conn = conn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    req->client_fd = ci != NULL ? (int)ci->connect_fd : -1;
    req->bridge = s->bridge;
    req->store = s->store;
    req->workers = s->workers;
    req->spend = s->spend;
    req->on_answered = spend_answered;
    req->t_start_us = ctx->t0_us; /* latency and TTFT count from the connection's request */
    __atomic_add_fetch(&s->inflight, 1, __ATOMIC_RELAXED);
    /* Suspend before any other thread can possibly want to resume. */
    sy_bridge_suspend(req);
    bool embed = req->ep == SY_EP_EMBEDDINGS && (req->cache_lookup || req->cache_store);
    bool aff = wants_affinity_lookup(req);
    if (req->cache_lookup || embed || aff) {
        lookup_job *j = malloc(sizeof(*j));
        if (j != NULL) {
            j->srv = s;
            j->req = sy_request_ref(req);
            j->affinity = aff;
            sy_job_fn fn = embed ? embed_lookup_job
                           : req->cache_lookup ? cache_lookup_job
                                               : affinity_job;
            if (sy_workers_submit(s->workers, fn, j) == SY_OK)
                return MHD_YES;
            sy_request_unref(req);
            free(j);
        }
        /* workers saturated: skip the cache (and the shared affinity) rather than fail or wait */
        if (req->cache_lookup || embed)
            req->cache_hdr = "miss";
    }
    start_upstream(s, req);
    return MHD_YES;
}

/* Files and Batches API calls block on the store and the disk, and POST /admin/reload reads
 * files, so they run on api_workers with the connection suspended. The job gets copies of everything it reads from the request
 * (headers, query arguments): MHD's connection data is not touched off the MHD thread. */
struct api_job {
    sy_server *srv;
    struct MHD_Connection *conn;
    sy_config *cfg; /* borrowed from the conn_ctx, which outlives the job */
    char *method, *path;
    sy_buf body;
    sy_upload *upload; /* borrowed from the conn_ctx */
    bool too_big;
    json_t *headers; /* lower-case name -> value */
    json_t *args;
    sy_reply rep;
    bool done; /* atomic */
};

static enum MHD_Result copy_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    if (key == NULL)
        return MHD_YES;
    char name[128];
    size_t n = strlen(key);
    if (n >= sizeof(name))
        return MHD_YES;
    for (size_t i = 0; i <= n; i++)
        name[i] = (char)tolower((unsigned char)key[i]);
    json_t *o = cls;
    if (json_object_get(o, name) == NULL)
        json_object_set_new(o, name, json_string(value != NULL ? value : ""));
    return MHD_YES;
}

static const char *job_value(json_t *o, const char *name)
{
    char low[128];
    size_t n = strlen(name);
    if (n >= sizeof(low))
        return NULL;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    return json_string_value(json_object_get(o, low));
}

static const char *job_header(void *hctx, const char *name)
{
    return job_value(((api_job *)hctx)->headers, name);
}

static const char *job_arg(void *hctx, const char *name)
{
    return json_string_value(json_object_get(((api_job *)hctx)->args, name));
}

/* Worker: the reply is in job->rep; hands it to the MHD thread. */
static void api_job_done(api_job *job)
{
    struct MHD_Connection *conn = job->conn;
    __atomic_store_n(&job->done, true, __ATOMIC_RELEASE);
    MHD_resume_connection(conn);
}

static void api_job_run(void *arg)
{
    api_job *job = arg;
    sy_server *s = job->srv;
    sy_api_in in = {
        .cfg = job->cfg,
        .method = job->method,
        .path = job->path,
        .body = job->body.data != NULL ? job->body.data : "",
        .len = job->body.len,
        .too_big = job->too_big,
        .authorization = job_value(job->headers, "authorization"),
        .get_header = job_header,
        .hctx = job,
        .get_arg = job_arg,
        .store_kind = sy_store_kind_of(s->store) == SY_STORE_REDIS ? "redis" : "embedded",
        .store_healthy = sy_store_healthy(s->store),
        .spend = s->spend,
        .metrics = s->metrics,
        .files = s->files,
        .batch = s->batch,
        .upload = job->upload,
        .batch_token = s->batch != NULL ? sy_batch_token(s->batch) : NULL,
    };
    sy_api_handle(&in, &job->rep);
    api_job_done(job);
}

/* POST /admin/reload, on api_workers: swaps the config and answers what changed or why
 * nothing did. */
static void reload_job_run(void *arg)
{
    api_job *job = arg;
    sy_reply *rep = &job->rep;
    sy_errlist errs, warns;
    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    sy_err rc = sy_server_reload(job->srv, &errs, &warns);
    json_t *w = json_array();
    for (size_t i = 0; i < warns.n; i++)
        json_array_append_new(w, json_string(warns.items[i]));
    if (rc == SY_OK) {
        sy_config *c = server_config(job->srv);
        json_t *j = json_pack("{s:s,s:s?,s:I,s:I,s:o}", "status", "reloaded", "config",
                              c->config_path, "deployments", (json_int_t)c->ndeployments,
                              "routes", (json_int_t)(c->routes ? c->routes->n : 0), "warnings", w);
        rep->body = j != NULL ? sy_json_dump(j, &rep->len) : NULL;
        json_decref(j);
        sy_config_unref(c);
        rep->status = 200;
        sy_log(SY_LOG_INFO, NULL, "reload: config, routes and weights swapped");
    } else {
        json_decref(w);
        sy_buf msg;
        sy_buf_init(&msg, 16384);
        sy_buf_appends(&msg, "reload failed, nothing changed:");
        for (size_t i = 0; i < errs.n; i++) {
            sy_buf_appends(&msg, i ? "; " : " ");
            sy_buf_appends(&msg, errs.items[i]);
            sy_log(SY_LOG_ERROR, NULL, "reload: %s", errs.items[i]);
        }
        /* The request was fine, the files are not: 400 with a code saying which. */
        rep->status = rc == SY_ENOMEM ? 503 : 400;
        rep->body = rc == SY_ENOMEM ? sy_err_body(SY_ENOMEM, NULL, NULL, &rep->len)
                                    : sy_err_body_raw("invalid_request_error", "config_invalid",
                                                      NULL, msg.data, &rep->len);
        sy_buf_cleanup(&msg);
    }
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
    api_job_done(job);
}

static void api_job_free(api_job *job)
{
    if (job == NULL)
        return;
    free(job->method);
    free(job->path);
    sy_buf_cleanup(&job->body);
    json_decref(job->headers);
    json_decref(job->args);
    free(job->rep.body);
    if (job->rep.has_fd && job->rep.fd >= 0)
        close(job->rep.fd);
    free(job);
}

/* Runs <run>(job) on api_workers; api_resumed answers with the job's reply. */
static enum MHD_Result offload(struct MHD_Connection *conn, conn_ctx *ctx, const char *method,
                               const char *url, sy_job_fn run)
{
    sy_server *s = ctx->srv;
    api_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return queue_error(conn, ctx, SY_ENOMEM, NULL);
    job->srv = s;
    job->conn = conn;
    job->cfg = ctx->cfg;
    job->method = strdup(method);
    job->path = strdup(url);
    job->body = ctx->body; /* moved */
    sy_buf_init(&ctx->body, 0);
    job->too_big = ctx->too_big;
    job->upload = ctx->upload;
    job->headers = json_object();
    job->args = json_object();
    job->rep.fd = -1;
    ctx->api = job;
    if (job->method == NULL || job->path == NULL || job->headers == NULL || job->args == NULL)
        return queue_error(conn, ctx, SY_ENOMEM, NULL);
    MHD_get_connection_values(conn, MHD_HEADER_KIND, copy_value, job->headers);
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, copy_value, job->args);
    MHD_suspend_connection(conn);
    sy_err rc = sy_workers_submit(s->api_workers, run, job);
    if (rc != SY_OK) {
        MHD_resume_connection(conn);
        ctx->api = NULL;
        api_job_free(job);
        return queue_error(conn, ctx, rc == SY_ELIMIT ? SY_ELIMIT : SY_ESHUTDOWN,
                           "too many Files/Batches API calls in progress; retry shortly");
    }
    return MHD_YES;
}

static enum MHD_Result api_resumed(struct MHD_Connection *conn, conn_ctx *ctx)
{
    api_job *job = ctx->api;
    if (!__atomic_load_n(&job->done, __ATOMIC_ACQUIRE)) {
        MHD_suspend_connection(conn); /* woken before the job answered */
        return MHD_YES;
    }
    if (ctx->handled && job->rep.status == -1)
        return MHD_YES; /* queued already */
    sy_reply *rep = &job->rep;
    snprintf(ctx->model, sizeof(ctx->model), "%s", rep->model);
    enum MHD_Result ret;
    if (rep->has_fd) {
        struct MHD_Response *r = MHD_create_response_from_fd64(rep->fd_len, rep->fd);
        if (r == NULL)
            return queue_error(conn, ctx, SY_ENOMEM, NULL);
        rep->fd = -1; /* the response closes it */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                rep->content_type != NULL ? rep->content_type
                                                          : "application/octet-stream");
        ctx->status = rep->status;
        ctx->bytes = rep->fd_len;
        ret = MHD_queue_response(conn, (unsigned)rep->status, r);
        MHD_destroy_response(r);
    } else if (rep->body == NULL) {
        ret = queue_error(conn, ctx, SY_ENOMEM, NULL);
    } else {
        char *b = rep->body;
        rep->body = NULL;
        ret = queue_typed(conn, ctx, rep->status, b, rep->len, NULL, rep->allow,
                          rep->retry_after, rep->content_type);
    }
    rep->status = -1;
    return ret;
}

static enum MHD_Result admin_reload(struct MHD_Connection *conn, conn_ctx *ctx,
                                    const char *method, const char *url)
{
    const sy_config *cfg = ctx->cfg;
    if (strcmp(method, "POST") != 0) {
        size_t len;
        char *b = sy_err_body(SY_EMETHOD, "use POST /admin/reload", NULL, &len);
        return b ? queue_buffer(conn, ctx, 405, b, len, NULL, "POST", NULL) : MHD_NO;
    }
    const char *auth =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!sy_api_master_ok(cfg, auth)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 cfg->master_key == NULL
                     ? "admin endpoints need a master key: set %s and restart switchyard"
                     : "admin endpoints need 'Authorization: Bearer <master key>' (%s)",
                 cfg->master_key_env ? cfg->master_key_env : "auth.master_key_env");
        return queue_error(conn, ctx, SY_EAUTH, msg);
    }
    return offload(conn, ctx, method, url, reload_job_run);
}

static const char *get_header(void *hctx, const char *name)
{
    return MHD_lookup_connection_value(hctx, MHD_HEADER_KIND, name);
}

static const char *get_arg(void *hctx, const char *name)
{
    return MHD_lookup_connection_value(hctx, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    sy_server *s = cls;
    conn_ctx *ctx = *con_cls;
    (void)version;

    if (ctx == NULL) {
        ctx = calloc(1, sizeof(*ctx));
        if (ctx == NULL)
            return MHD_NO;
        ctx->srv = s;
        ctx->cfg = server_config(s);
        ctx->t0_us = sy_now_us();
        snprintf(ctx->method, sizeof(ctx->method), "%s", method);
        snprintf(ctx->path, sizeof(ctx->path), "%s", url);
        sy_buf_init(&ctx->body, ctx->cfg->max_body_bytes);
        *con_cls = ctx;
        /* POST /v1/files streams its multipart body to disk: its cap is the file size cap
         * plus room for the multipart framing and the other form fields */
        size_t cap = ctx->cfg->max_body_bytes;
        if (strcmp(method, "POST") == 0 && strcmp(url, "/v1/files") == 0 && s->files != NULL) {
            cap = ctx->cfg->file_max_bytes + 65536;
            ctx->upload = sy_upload_begin(s->files, conn);
            if (ctx->upload == NULL) {
                ctx->handled = true;
                return queue_error(conn, ctx, SY_ENOMEM, NULL);
            }
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > cap) {
            char msg[160];
            snprintf(msg, sizeof(msg), "Request body is larger than the limit of %zu bytes.",
                     ctx->upload != NULL ? ctx->cfg->file_max_bytes : cap);
            ctx->handled = true;
            return queue_error(conn, ctx, SY_ETOOBIG, msg);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0 && ctx->upload != NULL) {
        if (!ctx->handled)
            sy_upload_feed(ctx->upload, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!ctx->too_big && !ctx->handled &&
            sy_buf_append(&ctx->body, upload_data, *upload_data_size) != SY_OK) {
            ctx->too_big = true;
            sy_buf_cleanup(&ctx->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (ctx->req != NULL)
        return on_resumed(conn, ctx);
    if (ctx->api != NULL)
        return api_resumed(conn, ctx);
    if (ctx->handled)
        return MHD_YES;
    ctx->handled = true;
    if (strcmp(url, "/admin/reload") == 0)
        return admin_reload(conn, ctx, method, url);
    if (sy_api_offloaded(url))
        return offload(conn, ctx, method, url, api_job_run);

    bool closing;
    pthread_mutex_lock(&s->relay_mu);
    closing = s->closing;
    pthread_mutex_unlock(&s->relay_mu);
    sy_api_in in = {
        .cfg = ctx->cfg,
        .method = method,
        .path = url,
        .body = ctx->body.data != NULL ? ctx->body.data : "",
        .len = ctx->body.len,
        .too_big = ctx->too_big,
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .get_header = get_header,
        .hctx = conn,
        .inflight = __atomic_load_n(&s->inflight, __ATOMIC_RELAXED),
        .uptime_s = (sy_now_us() - s->started_us) / 1000000,
        .shutting_down = closing,
        .store_kind = s->store == NULL               ? NULL
                      : sy_store_kind_of(s->store) == SY_STORE_REDIS ? "redis"
                                                                     : "embedded",
        .store_healthy = s->store != NULL && sy_store_healthy(s->store),
        .spend = s->spend,
        .metrics = s->metrics,
        .get_arg = get_arg,
        .batch_token = s->batch != NULL ? sy_batch_token(s->batch) : NULL,
    };
    sy_reply rep;
    sy_api_handle(&in, &rep);
    snprintf(ctx->model, sizeof(ctx->model), "%s", rep.model);
    sy_buf_cleanup(&ctx->body);
    if (rep.req != NULL)
        return relay(conn, ctx, rep.req);
    if (rep.body == NULL)
        return queue_error(conn, ctx, SY_ENOMEM, NULL);
    return queue_typed(conn, ctx, rep.status, rep.body, rep.len, NULL, rep.allow,
                       rep.retry_after, rep.content_type);
}

static void access_log(conn_ctx *ctx, enum MHD_RequestTerminationCode toe)
{
    if (!ctx->cfg->access_log || sy_log_min_level > SY_LOG_INFO)
        return;
    sy_request *req = ctx->req;
    int64_t now = sy_now_us();
    double lat = (double)(now - ctx->t0_us) / 1000.0;
    double ttft = -1;
    uint64_t bytes = ctx->bytes;
    int status = ctx->status;
    const char *dep = "-";
    int attempts = 0;
    bool serr = false;
    if (req != NULL) {
        pthread_mutex_lock(&req->mu);
        if (req->t_first_us != 0)
            ttft = (double)(req->t_first_us - ctx->t0_us) / 1000.0;
        if (req->bytes_out > bytes)
            bytes = req->bytes_out;
        if (req->dep != NULL)
            dep = req->dep->name;
        serr = req->stream_error;
        pthread_mutex_unlock(&req->mu);
        attempts = req->attempts;
    }
    sy_log_ctx lc = {.req_id = req != NULL ? req->id : NULL};
    sy_log_write(SY_LOG_INFO, &lc,
                 "access method=%s path=%s model=%s deployment=%s status=%d bytes=%llu "
                 "latency_ms=%.2f ttft_ms=%.2f attempts=%d stream=%s end=%s",
                 ctx->method, ctx->path, ctx->model[0] ? ctx->model : "-", dep, status,
                 (unsigned long long)bytes, lat, ttft, attempts,
                 req != NULL && req->stream ? (serr ? "error" : "ok") : "no",
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "aborted");
}

/* Any thread (the spend flusher; the recording thread when the record was dropped): the record
 * of <ud>'s answer is journaled, so the held bytes may go. The connection is resumed here,
 * directly (MHD_resume_connection is thread-safe): the upstream thread did not wake it for an
 * answer whose record was pending (finish in upstream.c), so a relayed answer costs one wake-up
 * of the HTTP thread, and the flusher acknowledges a whole group of records at once. */
static void spend_acked(void *ud, bool durable)
{
    sy_request *req = ud;
    (void)durable; /* a failing journal is logged and counted by spend; the answer still goes */
    pthread_mutex_lock(&req->mu);
    req->spend_acked = true;
    /* under req->mu: on_completed clears spend_waiting under it too, so a connection that is
     * gone is never resumed; a suspended one with its whole answer has nothing else to wait
     * for */
    bool waiting = req->spend_waiting ||
                   (req->spend_wake_on_ack &&
                    (req->state == SY_RS_READY || req->state == SY_RS_DONE));
    req->spend_waiting = false;
    req->spend_wake_on_ack = false;
    if (waiting)
        sy_bridge_resume_locked(req);
    pthread_mutex_unlock(&req->mu);
    sy_request_unref(req);
}

/* Records a relayed request's spend, exactly once (false when it was recorded already): usage
 * from the upstream (or the cached answer), or an estimate from the bytes relayed when the
 * upstream sent none (a cut stream, a client that went away): a client that disconnects is
 * billed for what was generated. <status> is the client's; <aborted>: the connection ended
 * before the whole answer went out. With <ack> the answer is complete but not yet sent (its last
 * bytes wait for spend_acked, set by the journal's ack); without it the connection is over. */
static bool record_spend(sy_request *req, int status, bool aborted, bool ack)
{
    sy_spend_rec r;
    memset(&r, 0, sizeof(r));
    int64_t now = sy_now_us();
    pthread_mutex_lock(&req->mu);
    if (req->spend_recorded) {
        pthread_mutex_unlock(&req->mu);
        return false;
    }
    req->spend_recorded = true;
    const sy_deployment *dep = req->dep;
    r.usage = req->usage;
    bool have = req->have_usage;
    uint64_t bytes = req->bytes_out;
    if (ack) /* what is about to go out counts too */
        bytes += req->state == SY_RS_READY ? req->resp_len : req->out.len;
    /* an answer held for its ack: its first byte goes out with the ack */
    r.ttft_us = req->t_first_us ? req->t_first_us - req->t_start_us
                : ack           ? now - req->t_start_us
                                : -1;
    r.error = req->stream_error || aborted;
    pthread_mutex_unlock(&req->mu);
    r.route = req->pick.route;
    r.tier = req->pick.tier;
    r.deployment = req->cache_hit && req->cache_dep ? req->cache_dep->name
                   : dep != NULL                      ? dep->name
                                                      : NULL;
    r.model = req->cache_hit && req->cache_dep ? req->cache_dep->model
              : dep != NULL                      ? dep->model
                                                 : NULL;
    r.key = req->tenant[0] ? req->tenant : NULL;
    r.status = status;
    r.error = r.error || status >= 400;
    r.stream = req->stream;
    r.cache_lookup = req->cache_lookup;
    r.cache_hit = req->cache_hit;
    r.batch = req->batch;
    r.latency_us = now - req->t_start_us; /* with <ack>: to the answer's completion */
    if (!have && !req->cache_hit && dep != NULL && status < 400 && bytes > 0) {
        /* no usage from the upstream: count what was relayed (JSON and SSE framing make this
         * an over-estimate of the text; billing errs on the side of not hiding spend) */
        r.usage.prompt = sy_spend_estimate_tokens(req->body_bytes);
        r.usage.completion = sy_spend_estimate_tokens(bytes / 2);
        r.usage.estimated = true;
    }
    const sy_deployment *priced = req->cache_hit ? req->cache_dep : dep;
    const sy_route *route = req->pick.route_def;
    const sy_deployment *ref = route != NULL && route->reference >= 0 &&
                                       (size_t)route->reference < req->cfg->ndeployments
                                   ? &req->cfg->deployments[route->reference]
                                   : NULL;
    if (priced != NULL)
        sy_spend_price(&r, &priced->price, ref != NULL ? &ref->price : NULL);
    if (ack)
        sy_spend_record_ack(req->spend, &r, spend_acked, sy_request_ref(req));
    else
        sy_spend_record(req->spend, &r);
    return true;
}

/* sy_request_answered (the thread that completed the answer): record the spend now, so the
 * journal works while the client connection is being woken; on_resumed and the stream reader
 * record it themselves when this came too late or not at all. */
static void spend_answered(sy_request *req)
{
    pthread_mutex_lock(&req->mu);
    sy_req_state st = req->state;
    int status = req->status;
    bool skip = req->spend_recorded || req->cancelled;
    pthread_mutex_unlock(&req->mu);
    if (!skip && (st == SY_RS_READY || st == SY_RS_DONE))
        record_spend(req, st == SY_RS_READY ? status : 200, false, true);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    sy_server *s = cls;
    conn_ctx *ctx = *con_cls;
    (void)conn;
    if (ctx == NULL)
        return;
    access_log(ctx, toe);
    sy_request *req = ctx->req;
    /* Answers were recorded when they were complete; what ends otherwise (a client that went
     * away, an aborted stream) is recorded here. */
    if (req != NULL)
        record_spend(req, ctx->status, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK, false);
    if (req != NULL) {
        bool cancel = false;
        pthread_mutex_lock(&req->mu);
        req->spend_waiting = false; /* the connection is gone: nothing to wake */
        req->spend_wake_on_ack = false;
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->state != SY_RS_READY &&
            req->state != SY_RS_DONE) {
            req->cancelled = true;
            cancel = true;
        } else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
            req->cancelled = true;
        }
        pthread_mutex_unlock(&req->mu);
        if (cancel)
            sy_bridge_post(s->bridge, SY_CMD_CANCEL, req);
        __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_RELAXED);
        sy_request_unref(req);
    }
    sy_buf_cleanup(&ctx->body);
    api_job_free(ctx->api);
    sy_upload_free(ctx->upload);
    sy_config_unref(ctx->cfg);
    free(ctx);
    *con_cls = NULL;
}

static sy_err resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ports[8];
    snprintf(ports, sizeof(ports), "%d", port);
    if (getaddrinfo(host[0] ? host : NULL, ports, &hints, &res) != 0 || res == NULL)
        return SY_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return SY_OK;
}

sy_err sy_server_start(sy_config *cfg, const char *listen, sy_server **out, char *err,
                       size_t errlen)
{
    sy_server *s = calloc(1, sizeof(*s));
    char *host = NULL;
    int port = cfg->listen_port;
    struct sockaddr_storage ss;
    socklen_t sl;
    sy_err rc = SY_EINTERNAL;

    if (s == NULL)
        return SY_ENOMEM;
    pthread_mutex_init(&s->relay_mu, NULL);
    pthread_mutex_init(&s->cfg_mu, NULL);
    s->cfg = sy_config_ref(cfg);
    s->started_us = sy_now_us();
    if (listen != NULL) {
        if (sy_config_parse_listen(listen, &host, &port) != SY_OK) {
            snprintf(err, errlen, "--listen: expected HOST:PORT, got '%s'", listen);
            rc = SY_EINVAL;
            goto fail;
        }
    } else {
        host = strdup(cfg->listen_host);
    }
    if (host == NULL || resolve(host, port, &ss, &sl) != SY_OK) {
        snprintf(err, errlen, "cannot resolve listen address '%s'", host ? host : "?");
        rc = SY_EINVAL;
        goto fail;
    }
    sy_store_opts so;
    sy_errlist serrs;
    sy_store_opts_init(&so);
    sy_errlist_init(&serrs);
    rc = sy_store_config_parse(cfg->redis, &so, &serrs);
    if (rc == SY_OK)
        rc = sy_store_config_parse_mem(cfg->mem_store, &so, &serrs);
    if (rc == SY_OK)
        rc = sy_store_new(&so, &s->store);
    sy_store_opts_cleanup(&so);
    if (rc != SY_OK) {
        snprintf(err, errlen, "cannot create the store: %s",
                 serrs.n > 0 ? serrs.items[0] : sy_err_str(rc));
        sy_errlist_cleanup(&serrs);
        goto fail;
    }
    sy_errlist_cleanup(&serrs);
    if ((rc = sy_workers_new(4, 65536, &s->workers)) != SY_OK) {
        snprintf(err, errlen, "cannot start worker threads");
        goto fail;
    }
    if ((rc = sy_shared_start(s->store, cfg->breaker_sync_ms, &s->shared)) != SY_OK) {
        snprintf(err, errlen, "cannot start the shared-state thread");
        goto fail;
    }
    if ((rc = sy_workers_new(2, 1024, &s->api_workers)) != SY_OK) {
        snprintf(err, errlen, "cannot start worker threads");
        goto fail;
    }
    rc = cfg->files_dir != NULL
             ? sy_files_new_dir(cfg->files_dir, s->store, cfg->file_max_bytes,
                                cfg->batch_max_lines, &s->files)
             : sy_files_new(cfg->data_dir, s->store, cfg->file_max_bytes, cfg->batch_max_lines,
                            &s->files);
    if (rc != SY_OK) {
        snprintf(err, errlen, "cannot use '%s' for files (not writable?)",
                 cfg->files_dir ? cfg->files_dir : cfg->data_dir ? cfg->data_dir : "?");
        goto fail;
    }
    if ((rc = sy_metrics_new(&s->metrics)) != SY_OK) {
        snprintf(err, errlen, "cannot create the metrics registry");
        goto fail;
    }
    sy_spend_opts sp;
    sy_spend_opts_init(&sp);
    sp.metrics = s->metrics;
    if ((rc = sy_spend_new(s->store, cfg->data_dir, &sp, &s->spend)) != SY_OK) {
        snprintf(err, errlen, "cannot open the spend journal under data_dir '%s' (in use by "
                 "another instance, or not writable)", cfg->data_dir ? cfg->data_dir : "?");
        goto fail;
    }
    if ((rc = sy_bridge_new(&s->bridge)) != SY_OK ||
        (rc = sy_upstream_start(s->bridge, &s->up)) != SY_OK) {
        snprintf(err, errlen, "cannot start the upstream thread");
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->conn_limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->conn_timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 32 * 1024, NULL},
        {cfg->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)cfg->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s,
                              MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (s->mhd == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not allowed)", host,
                 port);
        rc = SY_EINVAL;
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    int bound = info != NULL ? (int)info->port : port;
    if (strchr(host, ':') != NULL)
        snprintf(s->address, sizeof(s->address), "[%s]:%d", host, bound);
    else
        snprintf(s->address, sizeof(s->address), "%s:%d", host, bound);
    char self[128];
    /* batch workers call this listener; a wildcard address is reached on loopback */
    const char *h = host;
    if (strcmp(h, "0.0.0.0") == 0 || h[0] == '\0')
        h = "127.0.0.1";
    else if (strcmp(h, "::") == 0)
        h = "::1";
    snprintf(self, sizeof(self), strchr(h, ':') != NULL ? "http://[%s]:%d" : "http://%s:%d", h,
             bound);
    if ((rc = sy_batch_new(cfg, s->store, s->files, s->metrics, s->spend, self, &s->batch)) !=
        SY_OK) {
        snprintf(err, errlen, "cannot start the batch workers");
        MHD_stop_daemon(s->mhd);
        goto fail;
    }
    free(host);
    *out = s;
    return SY_OK;
fail:
    free(host);
    sy_upstream_stop(s->up);
    sy_bridge_free(s->bridge);
    sy_workers_free(s->workers);
    sy_workers_free(s->api_workers);
    sy_files_free(s->files);
    sy_spend_free(s->spend);
    sy_metrics_free(s->metrics);
    sy_shared_stop(s->shared);
    sy_store_free(s->store);
    sy_config_unref(s->cfg);
    pthread_mutex_destroy(&s->relay_mu);
    pthread_mutex_destroy(&s->cfg_mu);
    free(s);
    return rc;
}

const char *sy_server_address(const sy_server *s) { return s->address; }

static void wait_idle(sy_server *s, int64_t deadline_us)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (__atomic_load_n(&s->inflight, __ATOMIC_RELAXED) > 0 && sy_now_us() < deadline_us)
        nanosleep(&ts, NULL);
}

void sy_server_stop(sy_server *s, long grace_ms)
{
    if (s == NULL)
        return;
    /* Batch workers first: they send their lines to this listener. Lines they do not finish
     * stay unacknowledged in the queue and are reclaimed (here after a restart, or by another
     * instance). */
    sy_batch_stop(s->batch);
    /* Stop accepting; existing connections go on. */
    MHD_socket lfd = MHD_quiesce_daemon(s->mhd);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    wait_idle(s, sy_now_us() + (int64_t)grace_ms * 1000);
    int left = __atomic_load_n(&s->inflight, __ATOMIC_RELAXED);
    if (left > 0) {
        sy_log(SY_LOG_WARN, NULL, "shutdown: %d requests still in flight after %ld ms; aborting",
               left, grace_ms);
        sy_upstream_abort_all(s->up);
        wait_idle(s, sy_now_us() + 2000 * 1000);
    }
    pthread_mutex_lock(&s->relay_mu);
    s->closing = true;
    pthread_mutex_unlock(&s->relay_mu);
    /* Joins the thread; whatever it still had ends with an error and is resumed, so no
     * connection is left suspended when the daemon stops. */
    sy_upstream_stop(s->up);
    /* Answers held for their spend ack are resumed by the ack itself (spend_acked): let them
     * go out before the daemon stops. */
    wait_idle(s, sy_now_us() + 2000 * 1000);
    /* Queued jobs run to the end (cache lookups and API calls answer their suspended clients,
     * reloads too; cache writes land) while the daemon can still resume connections. */
    sy_workers_free(s->workers);
    sy_workers_free(s->api_workers);
    MHD_stop_daemon(s->mhd);
    sy_batch_free(s->batch);
    sy_files_free(s->files);
    sy_bridge_free(s->bridge);
    sy_spend_free(s->spend); /* flushes the journal and the store */
    sy_metrics_free(s->metrics);
    sy_shared_stop(s->shared); /* after the upstream thread: nothing queues affinity puts now */
    sy_store_free(s->store);
    sy_config_unref(s->cfg);
    pthread_mutex_destroy(&s->relay_mu);
    pthread_mutex_destroy(&s->cfg_mu);
    free(s);
}

sy_config *sy_server_config(sy_server *s) { return server_config(s); }

sy_err sy_server_reload(sy_server *s, sy_errlist *errs, sy_errlist *warns)
{
    sy_config *cur = server_config(s);
    sy_config *next = NULL;
    sy_err rc = SY_ECONFIG;

    if (cur->config_path == NULL) {
        sy_errlist_add(errs, "the running config was not loaded from a file");
        goto out;
    }
    rc = sy_config_load(cur->config_path, &next, errs, warns);
    if (rc != SY_OK)
        goto out; /* a broken file changes nothing */
    if (strcmp(next->listen_host, cur->listen_host) != 0 || next->listen_port != cur->listen_port ||
        next->threads != cur->threads || next->conn_limit != cur->conn_limit)
        sy_errlist_add(warns, "listen, server.threads and server.conn_limit apply at the next "
                              "restart, not on reload");
    int lvl = sy_log_parse_level(next->log_level != NULL ? next->log_level : "info");
    if (lvl >= 0)
        sy_log_set_level((sy_log_level)lvl);
    pthread_mutex_lock(&s->cfg_mu);
    sy_config *old = s->cfg;
    s->cfg = next; /* in-flight requests keep their own reference to the old snapshot */
    pthread_mutex_unlock(&s->cfg_mu);
    sy_config_unref(old);
    next = NULL;
out:
    sy_config_unref(next);
    sy_config_unref(cur);
    return rc;
}
