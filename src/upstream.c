/* upstream: the curl-multi thread. One thread owns the CURLM handle and all easy handles and
 * drives them with curl_multi_socket_action on its own epoll set; curl's timer callback only
 * stores a deadline that the loop passes to epoll_wait. First-byte and idle timeouts are swept
 * here too (curl has only connect and total timeouts). A request is retried on its next target
 * only while nothing has reached its client (a stream's opening role chunk is held back until
 * its first content, see write_cb); after that, failures end the stream with an error event. */
#include "switchyard/upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "switchyard/affinity.h"
#include "switchyard/cache.h"
#include "switchyard/health.h"
#include "switchyard/json_util.h"
#include "switchyard/log.h"
#include "switchyard/provider.h"
#include "switchyard/routes.h"
#include "switchyard/sse.h"
#include "switchyard/workers.h"

#define SWEEP_US 50000
/* A client waiting on a suspended connection is checked for having gone away this often: a
 * suspended connection's close reaches libmicrohttpd only once it is resumed. */
#define PROBE_US 1000000
#define MAX_ERROR_BODY (64u * 1024u)
#define MAX_SSE_EVENT (8u * 1024u * 1024u)
/* Client-bound stream bytes held back while the stream has said nothing yet (the role chunk,
 * a few hundred bytes); past this they go out anyway. */
#define MAX_HELD 4096u

typedef struct sy_xfer {
    sy_request *req; /* the curl thread's reference lives in the request, see finish() */
    sy_upstream *u;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    const sy_deployment *dep;
    const sy_provider_ops *ops;
    long status;
    bool got_first_byte;
    bool is_sse;
    bool committed; /* bytes of this attempt reached the client's buffer */
    bool paused;
    bool stream_over; /* [DONE] or an error event went out: nothing more may follow */
    bool bad_event;
    /* An error event came before any content (see write_cb): the attempt fails with this
     * status and OpenAI error body (new; NULL on OOM) as if the upstream had answered so. */
    bool early_error;
    int early_status;
    char *early_body;
    size_t early_len;
    sy_err abort_rc; /* our own abort reason (timeouts, caps), SY_OK when none */
    char abort_msg[256];
    char retry_after[16];
    char ctype[64];
    sy_buf resp;
    sy_buf tmp;
    sy_sse_parser sse;
    sy_stream_fix fix;
    sy_cache_acc acc; /* the answer being streamed, assembled for the prompt cache */
    bool acc_on;
    int64_t t_start, t_last, t_first;
    int64_t next_probe; /* when to check next that the client is still there (client_gone) */
    bool began; /* counted in the deployment's health */
    char errbuf[CURL_ERROR_SIZE];
    struct sy_xfer *prev, *next;
} sy_xfer;

typedef struct retry {
    sy_request *req;
    int64_t at_us;
} retry;

struct sy_upstream {
    sy_bridge *bridge;
    CURLM *multi;
    int ep;
    int wake_fd;
    pthread_t thread;
    int stop;      /* atomic */
    int abort_req; /* atomic */
    int active;    /* atomic */
    int64_t timer_at_us; /* curl's deadline, -1 when none */
    bool no_pwait2;      /* epoll_pwait2 is missing: fall back to epoll_wait */
    int64_t next_sweep_us;
    sy_xfer *xfers; /* active transfers */
    retry *retries;
    size_t nretries, capretries;
};

static void begin_attempt(sy_upstream *u, sy_request *req);

/* ---- epoll <-> curl ---- */

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    sy_upstream *u = userp;
    struct epoll_event ev = {0};
    (void)e;

    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(u->ep, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    ev.data.fd = s;
    if (socketp == NULL) {
        if (epoll_ctl(u->ep, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
            epoll_ctl(u->ep, EPOLL_CTL_MOD, s, &ev);
        curl_multi_assign(u->multi, s, u);
    } else if (epoll_ctl(u->ep, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT) {
        epoll_ctl(u->ep, EPOLL_CTL_ADD, s, &ev);
    }
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    sy_upstream *u = userp;
    (void)m;
    u->timer_at_us = timeout_ms < 0 ? -1 : sy_now_us() + (int64_t)timeout_ms * 1000;
    return 0;
}

/* ---- outcomes ---- */

/* Ends the upstream side of <req>: publishes the state, wakes the client, drops the curl
 * thread's reference. */
static void finish(sy_upstream *u, sy_request *req)
{
    sy_request_answered(req); /* records the spend, unless it was or cannot be yet */
    /* A record waiting for its journal ack: the ack wakes the client (spend_acked in
     * server.c), and waking it now as well would only make it suspend again. */
    pthread_mutex_lock(&req->mu);
    bool leave = req->spend_recorded && !req->spend_acked && !req->cancelled &&
                 (req->state == SY_RS_READY || req->state == SY_RS_DONE);
    req->spend_wake_on_ack = leave;
    pthread_mutex_unlock(&req->mu);
    if (!leave)
        sy_bridge_wake(u->bridge, req);
    req->xfer = NULL;
    __atomic_sub_fetch(&u->active, 1, __ATOMIC_RELAXED);
    sy_request_unref(req);
}

static void finish_error(sy_upstream *u, sy_request *req, const sy_deployment *dep, int status,
                         char *body, size_t len, const char *retry_after)
{
    pthread_mutex_lock(&req->mu);
    req->dep = dep;
    if (req->state == SY_RS_STREAMING) {
        /* Already streaming: the client learns of the failure as a final error event. */
        size_t before = req->out.len;
        sy_sse_frame(&req->out, body, len);
        sy_request_hold_final_locked(req, before);
        req->stream_error = true;
        req->state = SY_RS_DONE;
        free(body);
    } else {
        sy_request_ready_locked(req, status, body, len);
        snprintf(req->retry_after, sizeof(req->retry_after), "%s",
                 retry_after != NULL ? retry_after : "");
    }
    pthread_mutex_unlock(&req->mu);
    finish(u, req);
}

static void finish_err_msg(sy_upstream *u, sy_request *req, const sy_deployment *dep, sy_err e,
                           const char *msg)
{
    size_t len = 0;
    char *body = sy_err_body(e, msg, NULL, &len);
    finish_error(u, req, dep, sy_err_status(e), body, len, NULL);
}

static int64_t backoff_us(const sy_config *cfg, int attempt)
{
    int64_t base = (int64_t)cfg->retry_base_ms * 1000;
    int64_t max = (int64_t)cfg->retry_max_ms * 1000;
    int64_t d = base;
    for (int i = 1; i < attempt && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    /* "equal jitter": half fixed, half random, so retries of many clients spread out */
    return d / 2 + (int64_t)((double)(d / 2) * ((double)random() / (double)RAND_MAX));
}

static void schedule_retry(sy_upstream *u, sy_request *req, int64_t delay_us)
{
    if (u->nretries == u->capretries) {
        size_t ncap = u->capretries ? u->capretries * 2 : 16;
        retry *p = realloc(u->retries, ncap * sizeof(*p));
        if (p == NULL) {
            finish_err_msg(u, req, NULL, SY_ENOMEM, NULL);
            return;
        }
        u->retries = p;
        u->capretries = ncap;
    }
    u->retries[u->nretries++] = (retry){req, sy_now_us() + delay_us};
}

static int64_t parse_retry_after_ms(const char *v)
{
    if (v == NULL || *v == '\0')
        return 0;
    char *end;
    double s = strtod(v, &end);
    if (end == v || s < 0)
        return 0; /* HTTP-date form: not honoured beyond the normal backoff */
    return (int64_t)(s * 1000.0);
}

/* The target a retry goes to: the next one after the current that can take a request now.
 * Deployments whose breaker is open or that are at max_inflight are skipped on retries as on
 * the first pick (DESIGN §5: max_inflight is a hard cap); the one that just failed qualifies
 * again only when no other does. -1 when none can. */
static long next_target(const sy_request *req)
{
    int64_t now = sy_now_us();
    size_t n = req->pick.ntargets;
    for (size_t k = 1; k <= n; k++) {
        size_t j = (req->target + k) % n;
        const sy_deployment *d = req->pick.targets[j];
        if (!d->disabled && sy_health_available(d->health, d->max_inflight, now))
            return (long)j;
    }
    return -1;
}

/* An attempt failed before anything reached the client. Retries on the next target when the
 * failure is one fallback covers and attempts remain; otherwise answers with the error. */
static void attempt_failed(sy_upstream *u, sy_request *req, const sy_deployment *dep,
                           bool retryable, int status, char *body, size_t len,
                           const char *retry_after)
{
    const sy_config *cfg = req->cfg;
    const sy_route *r = req->pick.route_def;
    int max_attempts = r != NULL && r->max_attempts > 0 ? r->max_attempts : cfg->max_attempts;
    long nx = retryable && req->attempts < max_attempts && !req->cancelled ? next_target(req) : -1;
    if (nx >= 0) {
        size_t next = (size_t)nx;
        int64_t delay = backoff_us(cfg, req->attempts);
        if (req->pick.targets[next] == dep) {
            int64_t ra = parse_retry_after_ms(retry_after) * 1000;
            if (ra > (int64_t)cfg->retry_max_ms * 1000)
                goto give_up; /* longer than we may wait: the client gets Retry-After */
            if (ra > delay)
                delay = ra;
        }
        sy_log(SY_LOG_INFO, &req->log, "attempt %d on %s failed (status=%d); retrying on %s in %lld ms",
               req->attempts, dep->name, status, req->pick.targets[next]->name,
               (long long)(delay / 1000));
        free(body);
        req->target = next;
        schedule_retry(u, req, delay);
        return;
    }
give_up:
    finish_error(u, req, dep, status, body, len, retry_after);
}

static bool status_retryable(long st)
{
    return st == 429 || st == 500 || st == 502 || st == 503 || st == 504 || st == 529;
}

static void xfer_free(sy_upstream *u, sy_xfer *x)
{
    if (x->easy != NULL) {
        curl_multi_remove_handle(u->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    if (x->prev != NULL)
        x->prev->next = x->next;
    else if (u->xfers == x)
        u->xfers = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    curl_slist_free_all(x->headers);
    free(x->body);
    free(x->early_body);
    sy_buf_cleanup(&x->resp);
    sy_buf_cleanup(&x->tmp);
    sy_sse_cleanup(&x->sse);
    sy_stream_fix_cleanup(&x->fix);
    if (x->acc_on)
        sy_cache_acc_cleanup(&x->acc);
    free(x);
}

/* OpenAI usage (borrowed) into <out>; false when absent. */
bool sy_usage_from_json(const json_t *u, sy_usage *out)
{
    if (!json_is_object(u))
        return false;
    memset(out, 0, sizeof(*out));
    out->prompt = json_integer_value(json_object_get(u, "prompt_tokens"));
    out->completion = json_integer_value(json_object_get(u, "completion_tokens"));
    const json_t *pd = json_object_get(u, "prompt_tokens_details");
    out->cached = json_integer_value(json_object_get(pd, "cached_tokens"));
    out->cache_write = json_integer_value(json_object_get(pd, "cache_write_tokens"));
    out->reasoning = json_integer_value(
        json_object_get(json_object_get(u, "completion_tokens_details"), "reasoning_tokens"));
    return true;
}

static void keep_usage(sy_request *req, const json_t *u)
{
    sy_usage us;
    if (!sy_usage_from_json(u, &us))
        return;
    pthread_mutex_lock(&req->mu);
    req->usage = us;
    req->have_usage = true;
    pthread_mutex_unlock(&req->mu);
}

typedef struct put_job {
    sy_store *store;
    char key[SY_CACHE_KEY_SIZE];
    sy_cache_entry entry;
    long ttl_s;
    size_t max_bytes; /* the route's cache.max_entry_bytes */
    /* when set, the client's answer waits for the write, so that a repeat sent as soon as the
     * answer arrives is a hit */
    sy_request *req;
    char *body;
    size_t len;
    bool end_stream;       /* with <req>: the write ends the client's stream (state DONE) */
    sy_cache_embed *embed; /* embeddings: the per-input vectors to write instead of <entry> */
    char model[128];
} put_job;

static void cache_put_job(void *arg)
{
    put_job *j = arg;
    sy_cache_status st =
        j->embed != NULL
            ? sy_cache_embed_put(j->store, j->embed, j->model, j->entry.deployment,
                                 (int64_t)time(NULL) * 1000, j->ttl_s, j->max_bytes, NULL)
            : sy_cache_put(j->store, j->key, &j->entry, j->ttl_s, j->max_bytes);
    sy_log(SY_LOG_DEBUG, NULL, "cache: put %s: %s", j->key, sy_cache_status_name(st));
    if (j->req != NULL) {
        sy_request *req = j->req;
        pthread_mutex_lock(&req->mu);
        if (j->end_stream)
            req->state = SY_RS_DONE;
        else
            sy_request_ready_locked(req, 200, j->body, j->len);
        sy_bridge_resume_locked(req);
        pthread_mutex_unlock(&req->mu);
        sy_request_answered(req);
        sy_request_unref(req);
    }
    sy_cache_entry_cleanup(&j->entry);
    if (j->embed != NULL) {
        sy_cache_embed_cleanup(j->embed);
        free(j->embed);
    }
    free(j);
}

/* Embeddings: merges the upstream's vectors (for the missing inputs) with the cached ones,
 * then a worker writes the fresh vectors and answers the client. False when it could not (the
 * caller answers with an error: the upstream's answer alone lacks the cached inputs). */
static bool embed_finish(sy_request *req, const sy_deployment *dep, json_t *resp)
{
    sy_cache_embed *e = req->embed;
    json_t *ans = NULL;
    char *body = NULL;
    size_t len = 0;
    if (sy_cache_embed_fill(e, resp) != SY_OK ||
        sy_cache_embed_answer(e, resp, req->embed_b64, &ans) != SY_OK ||
        (body = sy_json_dump(ans, &len)) == NULL) {
        json_decref(ans);
        return false;
    }
    json_decref(ans);
    put_job *j = req->cache_store ? calloc(1, sizeof(*j)) : NULL;
    if (j == NULL) {
        /* nothing to write (no-store), or no memory for the job: answer now */
        pthread_mutex_lock(&req->mu);
        sy_request_ready_locked(req, 200, body, len);
        pthread_mutex_unlock(&req->mu);
        return true;
    }
    sy_cache_entry_init(&j->entry);
    snprintf(j->entry.deployment, sizeof(j->entry.deployment), "%s", dep->name);
    snprintf(j->model, sizeof(j->model), "%s",
             json_is_string(json_object_get(resp, "model"))
                 ? json_string_value(json_object_get(resp, "model"))
                 : dep->model);
    j->store = req->store;
    j->ttl_s = req->cache_ttl_s > 0 ? req->cache_ttl_s : 3600;
    j->max_bytes = req->cache_max_bytes;
    j->req = sy_request_ref(req);
    j->body = body;
    j->len = len;
    j->embed = e; /* the job writes the fresh vectors */
    req->embed = NULL;
    if (sy_workers_submit(req->workers, cache_put_job, j) != SY_OK) {
        /* answer without writing */
        sy_request_unref(j->req);
        req->embed = j->embed;
        pthread_mutex_lock(&req->mu);
        sy_request_ready_locked(req, 200, body, len);
        pthread_mutex_unlock(&req->mu);
        free(j);
        return true;
    }
    return true;
}

/* Stores a clean answer (<answer> taken) under the key of the deployment that produced it; the
 * store call runs on a worker, never here. With <body> (taken) the worker also answers the
 * client after the write; with <end_stream> it ends the client's stream after the write.
 * Returns true when the worker took that over. */
static bool cache_store_then(sy_request *req, const sy_deployment *dep, json_t *answer,
                             char *body, size_t len, bool end_stream);

static void cache_store(sy_request *req, const sy_deployment *dep, json_t *answer)
{
    cache_store_then(req, dep, answer, NULL, 0, false);
}

static bool cache_store_then(sy_request *req, const sy_deployment *dep, json_t *answer,
                             char *body, size_t len, bool end_stream)
{
    put_job *j = calloc(1, sizeof(*j));
    sy_cache_key_in k = {.ep = req->ep, .route = req->pick.route, .model = dep->model,
                         .tenant = req->tenant[0] ? req->tenant : NULL, .body = req->body};
    if (j == NULL || req->store == NULL || req->workers == NULL ||
        sy_cache_key(&k, j->key) != SY_OK) {
        free(j);
        json_decref(answer);
        return false;
    }
    j->store = req->store;
    if (body != NULL || end_stream) {
        j->req = sy_request_ref(req);
        j->body = body;
        j->len = len;
        j->end_stream = end_stream;
    }
    j->ttl_s = req->cache_ttl_s > 0 ? req->cache_ttl_s : 3600;
    j->max_bytes = req->cache_max_bytes;
    sy_cache_entry_init(&j->entry);
    sy_cache_entry_set(&j->entry, req->ep, answer, dep->name, (int64_t)time(NULL) * 1000, -1);
    json_decref(answer); /* the entry holds its own reference */
    bool takes_over = j->req != NULL; /* read before the submit: the worker frees j */
    if (sy_workers_submit(req->workers, cache_put_job, j) != SY_OK) {
        if (j->req != NULL)
            sy_request_unref(j->req);
        sy_cache_entry_cleanup(&j->entry);
        free(j);
        return false;
    }
    return takes_over;
}

static void done_stream_ok(sy_upstream *u, sy_xfer *x, sy_request *req)
{
    pthread_mutex_lock(&req->mu);
    size_t before = req->out.len;
    if (!x->fix.saw_done && !x->fix.saw_error) {
        if (x->fix.saw_finish && !sy_sse_pending(&x->sse)) {
            /* Some servers end without [DONE]; the SDKs need it. */
            sy_sse_frame(&req->out, "[DONE]", 6);
        } else {
            size_t n;
            char *b = sy_err_body(SY_EUPSTREAM, "the upstream stream ended before it finished",
                                  NULL, &n);
            if (b != NULL)
                sy_sse_frame(&req->out, b, n);
            free(b);
            req->stream_error = true;
        }
    }
    sy_request_hold_final_locked(req, before);
    req->stream_error = req->stream_error || x->fix.saw_error;
    bool clean = !req->stream_error && x->fix.saw_done && x->fix.saw_finish;
    pthread_mutex_unlock(&req->mu);
    keep_usage(req, x->fix.usage);
    bool deferred = false;
    if (x->acc_on && clean) {
        /* only streams that completed cleanly; the stream's end (not its bytes) waits for the
         * write, so a repeat sent when the client sees the end is a hit */
        json_t *answer = NULL;
        if (sy_cache_acc_finish(&x->acc, true, x->fix.usage, &answer) == SY_OK)
            deferred = cache_store_then(req, x->dep, answer, NULL, 0, true);
    }
    if (!deferred) {
        pthread_mutex_lock(&req->mu);
        req->state = SY_RS_DONE;
        pthread_mutex_unlock(&req->mu);
    }
}

static void done_json_ok(sy_upstream *u, sy_xfer *x, sy_request *req)
{
    char msg[200];
    json_error_t jerr;
    json_t *resp = json_loadb(x->resp.data ? x->resp.data : "", x->resp.len, 0, &jerr);
    sy_err rc;
    if (resp == NULL) {
        snprintf(msg, sizeof(msg), "deployment '%s' returned invalid JSON: %s", x->dep->name,
                 jerr.text);
        rc = SY_EUPSTREAM;
    } else {
        rc = x->ops->normalize(req->ep, &resp, req->embed_b64, msg, sizeof(msg));
    }
    if (rc != SY_OK) {
        json_decref(resp);
        finish_err_msg(u, req, x->dep, rc, msg);
        return;
    }
    if (req->stream) {
        /* The upstream ignored stream:true; replay its answer as the stream the client wants. */
        keep_usage(req, json_object_get(resp, "usage"));
        if (req->cache_store)
            cache_store(req, x->dep, json_incref(resp));
        pthread_mutex_lock(&req->mu);
        size_t before = req->out.len;
        sy_openai_to_sse(req->ep, resp, req->client_usage, &req->out);
        sy_request_hold_final_locked(req, before); /* one answer: all of it ends the stream */
        req->dep = x->dep;
        req->status = 200;
        req->state = SY_RS_DONE;
        pthread_mutex_unlock(&req->mu);
        json_decref(resp);
        finish(u, req);
        return;
    }
    keep_usage(req, json_object_get(resp, "usage"));
    if (req->embed != NULL) {
        pthread_mutex_lock(&req->mu);
        req->dep = x->dep;
        pthread_mutex_unlock(&req->mu);
        bool ok = embed_finish(req, x->dep, resp);
        json_decref(resp);
        if (!ok) {
            finish_err_msg(u, req, x->dep, SY_EUPSTREAM,
                           "the upstream's embeddings do not match the inputs sent");
            return;
        }
        /* answered by the worker after the write, or READY already: release as finish() */
        finish(u, req);
        return;
    }
    size_t len;
    char *body = sy_json_dump(resp, &len);
    if (body == NULL) {
        json_decref(resp);
        finish_err_msg(u, req, x->dep, SY_ENOMEM, NULL);
        return;
    }
    pthread_mutex_lock(&req->mu);
    req->dep = x->dep;
    pthread_mutex_unlock(&req->mu);
    if (req->cache_store && cache_store_then(req, x->dep, json_incref(resp), body, len, false)) {
        /* the worker answers the client once the entry is written */
        json_decref(resp);
        req->xfer = NULL;
        __atomic_sub_fetch(&u->active, 1, __ATOMIC_RELAXED);
        sy_request_unref(req);
        return;
    }
    json_decref(resp);
    pthread_mutex_lock(&req->mu);
    sy_request_ready_locked(req, 200, body, len);
    req->dep = x->dep;
    pthread_mutex_unlock(&req->mu);
    finish(u, req);
}

/* How an attempt failed, for the route's fallback policy. */
typedef enum fail_kind { FK_CONNECT, FK_TIMEOUT, FK_STATUS, FK_OTHER } fail_kind;

static bool fallback_allows(const sy_request *req, fail_kind kind, int status)
{
    const sy_route *r = req->pick.route_def;
    switch (kind) {
    case FK_CONNECT:
        return r == NULL || (r->fallback_on & SY_FALLBACK_CONNECT);
    case FK_TIMEOUT:
        return r == NULL || (r->fallback_on & SY_FALLBACK_TIMEOUT);
    case FK_STATUS:
        if (r == NULL)
            return status_retryable(status);
        for (size_t i = 0; i < r->nstatuses; i++)
            if (r->statuses[i] == status)
                return true;
        return false;
    case FK_OTHER:
        return false;
    }
    return false;
}

/* Reports the attempt's outcome to the deployment's health (breaker, latency EWMA). Client
 * errors (4xx but 429) are the request's fault, not the deployment's. */
static void health_end(const sy_request *req, sy_xfer *x, bool ok)
{
    if (!x->began)
        return;
    x->began = false;
    const sy_config *cfg = req->cfg;
    int64_t now = sy_now_us();
    sy_health_end(x->dep->health, ok, x->got_first_byte ? x->t_first - x->t_start : 0,
                  cfg->breaker_failures, (int64_t)cfg->breaker_cooldown_ms * 1000, now);
}

static void health_abandon(sy_xfer *x)
{
    if (x->began)
        sy_health_abandon(x->dep->health);
    x->began = false;
}

static void on_done(sy_upstream *u, sy_xfer *x, CURLcode res)
{
    sy_request *req = x->req;
    const sy_deployment *dep = x->dep;
    char msg[400];
    bool cancelled;

    if (x->easy != NULL) {
        curl_multi_remove_handle(u->multi, x->easy);
    }
    pthread_mutex_lock(&req->mu);
    cancelled = req->cancelled;
    pthread_mutex_unlock(&req->mu);
    if (cancelled || x->committed)
        keep_usage(req, x->fix.usage); /* billed: what was generated so far */
    if (cancelled) {
        /* The usage seen so far is billed by the spend module; the deployment did nothing
         * wrong, so its health only forgets the attempt. */
        health_abandon(x);
        xfer_free(u, x);
        finish(u, req);
        return;
    }

    if (x->abort_rc == SY_OK && res == CURLE_OK && x->status / 100 == 2 &&
        (!x->is_sse || x->committed)) {
        health_end(req, x, true);
        const sy_route *r = req->pick.route_def;
        if (r != NULL && r->affinity && req->pick.affinity_key != 0)
            sy_affinity_put(req->pick.affinity_key, dep->name, (int64_t)r->affinity_ttl_s * 1000000,
                            sy_now_us());
    }
    if (x->abort_rc == SY_OK && res == CURLE_OK && x->status / 100 == 2) {
        if (x->is_sse) {
            if (x->committed) {
                done_stream_ok(u, x, req);
                xfer_free(u, x);
                finish(u, req);
                return;
            }
            snprintf(msg, sizeof(msg), "deployment '%s' closed the stream before any content",
                     dep->name);
            x->abort_rc = SY_EUPSTREAM;
            res = CURLE_GOT_NOTHING;
        } else {
            done_json_ok(u, x, req);
            xfer_free(u, x);
            return;
        }
    }

    /* Failures. */
    fail_kind kind = FK_OTHER;
    int status;
    char *body = NULL;
    size_t len = 0;
    char retry_after[16];
    snprintf(retry_after, sizeof(retry_after), "%s", x->retry_after);

    if (x->early_error) {
        /* an error event before any content: the status it stands for, like an answer */
        status = x->early_status;
        kind = FK_STATUS;
        body = x->early_body;
        len = x->early_len;
        x->early_body = NULL;
    } else if (x->abort_rc != SY_OK) {
        if (x->abort_msg[0] != '\0')
            snprintf(msg, sizeof(msg), "%s", x->abort_msg);
        kind = x->abort_rc == SY_ETIMEOUT ? FK_TIMEOUT
               : res == CURLE_GOT_NOTHING ? FK_CONNECT
                                          : FK_OTHER;
        status = sy_err_status(x->abort_rc);
        body = sy_err_body(x->abort_rc, msg, NULL, &len);
    } else if (res != CURLE_OK) {
        sy_err e = SY_EUPSTREAM;
        const char *what = x->errbuf[0] ? x->errbuf : curl_easy_strerror(res);
        kind = FK_CONNECT; /* refused, reset, dropped before an answer */
        if (res == CURLE_OPERATION_TIMEDOUT) {
            e = SY_ETIMEOUT;
            kind = FK_TIMEOUT;
            snprintf(msg, sizeof(msg), "deployment '%s' timed out: %s", dep->name, what);
        } else if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST ||
                   res == CURLE_COULDNT_RESOLVE_PROXY) {
            snprintf(msg, sizeof(msg),
                     "deployment '%s' (%s) is unreachable: %s. Start that server, or change the "
                     "deployment's base_url in %s",
                     dep->name, dep->base_url, what,
                     req->cfg->config_path ? req->cfg->config_path : "the config");
        } else if (res == CURLE_PEER_FAILED_VERIFICATION || res == CURLE_SSL_CONNECT_ERROR) {
            snprintf(msg, sizeof(msg), "deployment '%s': TLS failed: %s", dep->name, what);
        } else {
            snprintf(msg, sizeof(msg), "deployment '%s' failed: %s", dep->name, what);
        }
        status = sy_err_status(e);
        body = sy_err_body(e, msg, NULL, &len);
    } else {
        status = (int)x->status;
        kind = FK_STATUS;
        if (status == 401 || status == 403) {
            /* The status is kept (clients and SDKs key on it), but the message is ours: these
             * are the proxy's credentials, not the client's, and upstream texts may quote a
             * masked key. */
            snprintf(msg, sizeof(msg),
                     "deployment '%s' rejected the proxy's credentials (upstream HTTP %d); "
                     "check %s",
                     dep->name, status, dep->api_key_env ? dep->api_key_env : "its api_key_env");
            body = sy_err_body_raw(sy_openai_error_type(status), "upstream_auth", NULL, msg, &len);
        } else {
            if (status < 400)
                status = 502; /* 1xx/3xx as a final answer: not something a client can use */
            body = x->ops->wrap_error(status, x->resp.data, x->resp.len, dep->api_key, &len);
        }
    }
    if (body == NULL) {
        xfer_free(u, x);
        finish_err_msg(u, req, dep, SY_ENOMEM, NULL);
        return;
    }
    sy_log(SY_LOG_WARN, &req->log, "attempt=%d failed: status=%d curl=%d",
           req->attempts, status, (int)res);
    health_end(req, x, kind == FK_STATUS && !status_retryable(status) && status < 500);
    bool retryable = fallback_allows(req, kind, status);
    bool committed = x->committed;
    xfer_free(u, x);
    if (committed) {
        finish_error(u, req, dep, status, body, len, NULL);
        return;
    }
    attempt_failed(u, req, dep, retryable, status, body, len, retry_after[0] ? retry_after : NULL);
}

/* ---- curl callbacks (curl thread) ---- */

static size_t header_cb(char *b, size_t size, size_t n, void *ud)
{
    sy_xfer *x = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(b, "HTTP/", 5) == 0) {
        x->retry_after[0] = '\0';
        x->ctype[0] = '\0';
        return len;
    }
    const char *colon = memchr(b, ':', len);
    if (colon == NULL)
        return len;
    size_t klen = (size_t)(colon - b);
    const char *v = colon + 1;
    size_t vlen = len - klen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    if (klen == 12 && strncasecmp(b, "content-type", 12) == 0)
        snprintf(x->ctype, sizeof(x->ctype), "%.*s", (int)vlen, v);
    else if (klen == 11 && strncasecmp(b, "retry-after", 11) == 0 && vlen < sizeof(x->retry_after))
        snprintf(x->retry_after, sizeof(x->retry_after), "%.*s", (int)vlen, v);
    return len;
}

static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    sy_xfer *x = ud;
    sy_err rc = x->ops->stream_event(&x->fix, x->req->ep, event, data, len, &x->tmp);
    if (rc != SY_OK) {
        x->bad_event = true;
        return 1;
    }
    if (x->fix.saw_error && !x->committed && !x->fix.saw_content) {
        /* Nothing the client could use went out (at most the held role chunk): the attempt
         * fails before the first byte, so the route's fallback may still try another target.
         * The provider rewraps the event's data as it would an error answer's body. */
        int st = x->fix.error_status;
        x->early_status = st >= 400 && st <= 599 ? st : 500;
        x->early_body =
            x->ops->wrap_error(x->early_status, data, len, x->dep->api_key, &x->early_len);
        x->early_error = true;
        x->stream_over = true;
        return 1;
    }
    if (x->fix.saw_done || x->fix.saw_error) {
        x->stream_over = true;
        return 1; /* the response closes right after [DONE] */
    }
    return 0;
}

/* The cache accumulator observes what the provider sends the client (sy_stream_observer): it
 * consumes the chunk objects the provider already built or parsed, and parses only the data the
 * provider did not (fast-path plain deltas, error bodies; [DONE] is only compared), so no chunk
 * is parsed twice. A chunk it refuses turns caching off for this answer, nothing else. */
static void acc_result(sy_xfer *x, sy_err rc)
{
    if (rc == SY_OK)
        return;
    sy_cache_acc_cleanup(&x->acc);
    x->acc_on = false;
    x->fix.obs = NULL;
}

static void acc_chunk(void *ud, const json_t *chunk)
{
    sy_xfer *x = ud;
    acc_result(x, sy_cache_acc_feed(&x->acc, chunk));
}

static void acc_data(void *ud, const char *data, size_t len)
{
    sy_xfer *x = ud;
    acc_result(x, sy_cache_acc_feed_data(&x->acc, data, len));
}

static const sy_stream_observer acc_observer = {acc_chunk, acc_data};

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    sy_xfer *x = ud;
    sy_request *req = x->req;
    size_t len = size * n;

    if (!x->got_first_byte) {
        x->got_first_byte = true;
        x->t_first = sy_now_us();
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
        x->is_sse = x->status / 100 == 2 && req->stream &&
                    strncasecmp(x->ctype, "text/event-stream", 17) == 0;
    }
    x->t_last = sy_now_us();
    if (x->status / 100 != 2) {
        /* Error bodies are kept up to a cap; the rest is dropped, not an error. */
        size_t room = x->resp.max - x->resp.len;
        sy_buf_append(&x->resp, p, len < room ? len : room);
        return len;
    }
    if (!x->is_sse) {
        sy_err rc = sy_buf_append(&x->resp, p, len);
        if (rc != SY_OK) {
            x->abort_rc = rc == SY_ETOOBIG ? SY_EUPSTREAM : rc;
            snprintf(x->abort_msg, sizeof(x->abort_msg),
                     "deployment '%s' answered more than %zu bytes", x->dep->name, x->resp.max);
            return 0;
        }
        return len;
    }
    if (x->stream_over)
        return len; /* anything after [DONE] is ignored */

    pthread_mutex_lock(&req->mu);
    if (req->cancelled) {
        pthread_mutex_unlock(&req->mu);
        return 0;
    }
    if (req->out.len >= SY_REQ_HIGH_WATER) {
        req->upstream_paused = true;
        x->paused = true;
        pthread_mutex_unlock(&req->mu);
        return CURL_WRITEFUNC_PAUSE;
    }
    pthread_mutex_unlock(&req->mu);

    /* Until the stream says something (fix.saw_content), its client-bound bytes (the role chunk)
     * stay in x->tmp, at most MAX_HELD of them: an error event or a cut before then is still a
     * failure before the first byte and may fall back (DESIGN §5). The client could not use
     * the role chunk alone anyway, so its first byte comes no later than its first delta.
     * x->tmp holds only bytes not yet in req->out: it is emptied as they move there. */
    sy_err rc = sy_sse_feed(&x->sse, p, len, on_event, x);
    if (x->early_error)
        return 0; /* on_done answers with the event's status or falls back */
    if (x->tmp.len > 0 && (x->committed || x->fix.saw_content || x->stream_over ||
                           x->tmp.len > MAX_HELD)) {
        pthread_mutex_lock(&req->mu);
        size_t before = req->out.len;
        sy_err arc = sy_buf_append(&req->out, x->tmp.data, x->tmp.len);
        if (x->stream_over)
            sy_request_hold_final_locked(req, before); /* the frames up to [DONE] or the error */
        if (req->state == SY_RS_PENDING) {
            req->state = SY_RS_STREAMING;
            req->status = 200;
            req->dep = x->dep;
        }
        pthread_mutex_unlock(&req->mu);
        sy_buf_reset(&x->tmp);
        x->committed = true;
        sy_bridge_wake(x->u->bridge, req);
        if (arc != SY_OK)
            rc = arc;
    }
    if (rc != SY_OK || x->bad_event) {
        x->abort_rc = SY_EUPSTREAM;
        snprintf(x->abort_msg, sizeof(x->abort_msg), "deployment '%s' sent a malformed stream event",
                 x->dep->name);
        return 0;
    }
    return len;
}

/* ---- attempts ---- */

#define STREAM_FRESH_ABOVE 256

/* Builds the easy handle of an attempt. On failure <msg> may say why (for the client). */
static sy_err setup_easy(sy_xfer *x, sy_request *req, char *msg, size_t msglen)
{
    const sy_deployment *d = x->dep;
    char url[2048];
    size_t blen;
    sy_err rc;

    if ((rc = x->ops->url(d, req->ep, url, sizeof(url))) != SY_OK) {
        snprintf(msg, msglen, "deployment '%s' (provider %s) does not serve this endpoint",
                 d->name, x->ops->name);
        return rc;
    }
    x->body = x->ops->body(d, req->ep, req->body, req->stream, &blen, msg, msglen);
    if (x->body == NULL)
        return msg[0] != '\0' ? SY_EINVAL : SY_ENOMEM;
    if (!sy_slist_add(&x->headers, "Content-Type: application/json") ||
        !sy_slist_add(&x->headers, req->stream ? "Accept: text/event-stream"
                                               : "Accept: application/json") ||
        !sy_slist_add(&x->headers, "Expect:"))
        return SY_ENOMEM;
    x->headers = x->ops->headers(d, x->headers);
    if (x->headers == NULL)
        return SY_ENOMEM;
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        return SY_ENOMEM;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, d->total_timeout_ms);
    /* SSE events are a few hundred bytes: a 4 KiB receive buffer instead of curl's 16 KiB saves
     * 12 KiB per open stream and costs no extra callbacks (bench/README.md, memory) */
    if (req->stream)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L);
    if (strncmp(d->base_url, "https://", 8) == 0) {
        /* HTTP/2 multiplexing only over TLS: cleartext h2 with parallel transfers is broken in
         * curl 7.88 (DESIGN §3). */
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        /* HTTP/1.1 holds a connection per stream, and curl 7.88 looks for a reusable one by
         * walking every connection it keeps to that host: with thousands of streams open that
         * walk was the largest item of the stream profile (bench/README.md). Past
         * STREAM_FRESH_ABOVE transfers in flight, a stream gets a connection of its own,
         * closed after use: no walk, and the pool stays small. A connect to a plain-HTTP
         * (local) upstream is cheap next to a stream's length. */
        if (req->stream &&
            __atomic_load_n(&x->u->active, __ATOMIC_RELAXED) > STREAM_FRESH_ABOVE) {
            curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
            curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
        }
    }
    return SY_OK;
}

static void begin_attempt(sy_upstream *u, sy_request *req)
{
    char msg[300];

    /* Disabled deployments (key variable unset) are skipped without spending an attempt. So
     * are deployments that cannot take a request now (breaker open, its half-open probe taken,
     * at max_inflight): the router's pick reserves nothing, so requests picked together would
     * all pass its check. Attempts begin on this one thread, so between this check and
     * sy_health_begin below no other attempt begins. */
    size_t tried = 0;
    bool held = false;
    int64_t now = sy_now_us();
    for (; tried < req->pick.ntargets; tried++) {
        const sy_deployment *d = req->pick.targets[req->target];
        bool usable = !d->disabled && sy_provider_get(d->provider) != NULL;
        if (usable && sy_health_available(d->health, d->max_inflight, now))
            break;
        held = held || usable;
        req->target = (req->target + 1) % req->pick.ntargets;
    }
    if (tried == req->pick.ntargets) {
        const sy_deployment *d = req->pick.targets[0];
        if (held)
            snprintf(msg, sizeof(msg),
                     "no deployment of route '%s' can take this request now (circuit breaker "
                     "open or at max_inflight)",
                     req->pick.route ? req->pick.route : "?");
        else if (d->disabled)
            snprintf(msg, sizeof(msg),
                     "deployment '%s' is disabled: set the environment variable %s and "
                     "restart or reload switchyard",
                     d->name, d->api_key_env ? d->api_key_env : "(api_key_env)");
        else
            snprintf(msg, sizeof(msg), "deployment '%s' uses a provider this build does not serve",
                     d->name);
        finish_err_msg(u, req, d, SY_EUNAVAIL, msg);
        return;
    }
    sy_xfer *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        finish_err_msg(u, req, NULL, SY_ENOMEM, NULL);
        return;
    }
    x->req = req;
    x->u = u;
    x->dep = req->pick.targets[req->target];
    x->ops = sy_provider_get(x->dep->provider);
    sy_buf_init(&x->resp, MAX_ERROR_BODY);
    sy_buf_init(&x->tmp, MAX_SSE_EVENT * 2);
    sy_sse_init(&x->sse, MAX_SSE_EVENT);
    x->fix.client_usage = req->client_usage;
    if (req->cache_store && req->stream && req->ep != SY_EP_EMBEDDINGS) {
        sy_cache_acc_init(&x->acc, req->ep, 0);
        x->acc_on = true;
        x->fix.obs = &acc_observer;
        x->fix.obs_ud = x;
    }
    x->t_start = x->t_last = sy_now_us();
    x->next_probe = x->t_start + PROBE_US;
    req->attempts++;
    req->log.deployment = x->dep->name;
    msg[0] = '\0';
    sy_err rc = setup_easy(x, req, msg, sizeof(msg));
    if (rc == SY_OK && req->stream == false)
        x->resp.max = req->cfg->max_response_bytes;
    if (rc == SY_OK && curl_multi_add_handle(u->multi, x->easy) != CURLM_OK)
        rc = SY_EINTERNAL;
    if (rc == SY_OK) {
        sy_health_begin(x->dep->health, x->t_start);
        x->began = true;
    }
    if (rc != SY_OK) {
        const sy_deployment *d = x->dep;
        xfer_free(u, x);
        finish_err_msg(u, req, d, rc, msg[0] != '\0' ? msg : NULL);
        return;
    }
    x->next = u->xfers;
    if (u->xfers != NULL)
        u->xfers->prev = x;
    u->xfers = x;
    req->xfer = x;
}

/* ---- loop ---- */

static void check_done(sy_upstream *u)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        sy_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode res = m->data.result;
        if (x != NULL)
            on_done(u, x, res);
    }
}

static void abort_xfer(sy_upstream *u, sy_xfer *x, sy_err rc, const char *msg)
{
    x->abort_rc = rc;
    snprintf(x->abort_msg, sizeof(x->abort_msg), "%s", msg);
    on_done(u, x, CURLE_OPERATION_TIMEDOUT);
}

/* Whether the client of a request whose connection is suspended has closed it: libmicrohttpd
 * learns of the close only when the connection is resumed, so a client that gives up on a long
 * answer would otherwise keep the upstream generating (and billing) until the answer is done.
 * The socket stays open while the connection is suspended and not completed (req->mu). A peek
 * reading end of file means gone (libmicrohttpd, too, takes a client's end of file as an
 * abort), and so does a reset connection; pending bytes, EAGAIN or a local error (ENOMEM) mean
 * still there. */
static bool client_gone(sy_request *req)
{
    bool gone = false;
    pthread_mutex_lock(&req->mu);
    if (req->suspended && !req->cancelled && req->client_fd >= 0) {
        char c;
        ssize_t n = recv(req->client_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        gone = n == 0 || (n < 0 && (errno == ECONNRESET || errno == ETIMEDOUT ||
                                    errno == EPIPE || errno == ENOTCONN));
        req->client_gone = gone;
    }
    pthread_mutex_unlock(&req->mu);
    return gone;
}

static void sweep(sy_upstream *u, int64_t now)
{
    char msg[200];
    sy_xfer *x = u->xfers;
    while (x != NULL) {
        sy_xfer *next = x->next;
        const sy_deployment *d = x->dep;
        if (!x->got_first_byte && now - x->t_start > (int64_t)d->first_byte_timeout_ms * 1000) {
            snprintf(msg, sizeof(msg), "deployment '%s' sent no answer within %ld ms", d->name,
                     d->first_byte_timeout_ms);
            abort_xfer(u, x, SY_ETIMEOUT, msg);
        } else if (x->got_first_byte && !x->paused &&
                   now - x->t_last > (int64_t)d->idle_timeout_ms * 1000) {
            bool held = x->req->stream && !x->committed; /* no content has gone out yet */
            snprintf(msg, sizeof(msg), "deployment '%s' went silent for %ld ms %s", d->name,
                     d->idle_timeout_ms, held ? "before its first content" : "mid-answer");
            abort_xfer(u, x, SY_ETIMEOUT, msg);
        } else if (now >= x->next_probe) {
            x->next_probe = now + PROBE_US;
            if (client_gone(x->req)) {
                /* resumed, the connection sees client_gone and ends (server.c); on_completed
                 * then cancels this transfer as for any client that went away */
                sy_bridge_wake(u->bridge, x->req);
            }
        }
        x = next;
    }
}

static void run_retries(sy_upstream *u, int64_t now)
{
    size_t i = 0;
    while (i < u->nretries) {
        if (u->retries[i].at_us <= now) {
            sy_request *req = u->retries[i].req;
            u->retries[i] = u->retries[--u->nretries];
            begin_attempt(u, req);
        } else {
            i++;
        }
    }
}

static void cancel_req(sy_upstream *u, sy_request *req)
{
    if (req->xfer != NULL) {
        on_done(u, req->xfer, CURLE_ABORTED_BY_CALLBACK);
        return;
    }
    for (size_t i = 0; i < u->nretries; i++) {
        if (u->retries[i].req == req) {
            u->retries[i] = u->retries[--u->nretries];
            finish(u, req);
            return;
        }
    }
}

static void handle_cmds(sy_upstream *u)
{
    sy_cmd *c = sy_bridge_drain(u->bridge);
    while (c != NULL) {
        sy_cmd *next = c->next;
        sy_request *req = c->req;
        switch (c->kind) {
        case SY_CMD_START:
            /* The command's reference becomes the curl thread's reference. */
            __atomic_add_fetch(&u->active, 1, __ATOMIC_RELAXED);
            begin_attempt(u, req);
            req = NULL;
            break;
        case SY_CMD_UNPAUSE:
            if (req->xfer != NULL && req->xfer->paused) {
                req->xfer->paused = false;
                req->xfer->t_last = sy_now_us();
                curl_easy_pause(req->xfer->easy, CURLPAUSE_CONT);
            }
            break;
        case SY_CMD_CANCEL:
            cancel_req(u, req);
            break;
        }
        sy_request_unref(req);
        free(c);
        c = next;
    }
}

static void abort_everything(sy_upstream *u)
{
    while (u->xfers != NULL) {
        sy_xfer *x = u->xfers;
        sy_request *req = x->req;
        const sy_deployment *d = x->dep;
        health_abandon(x);
        xfer_free(u, x);
        size_t len;
        char *body = sy_err_body(SY_ESHUTDOWN, "switchyard is shutting down", NULL, &len);
        finish_error(u, req, d, sy_err_status(SY_ESHUTDOWN), body, len, NULL);
    }
    while (u->nretries > 0) {
        sy_request *req = u->retries[--u->nretries].req;
        finish_err_msg(u, req, NULL, SY_ESHUTDOWN, "switchyard is shutting down");
    }
}

static void *thread_main(void *arg)
{
    sy_upstream *u = arg;
    struct epoll_event evs[256];
    int running;

    while (!__atomic_load_n(&u->stop, __ATOMIC_ACQUIRE)) {
        int64_t now = sy_now_us();
        int64_t wait = u->next_sweep_us - now;
        if (u->timer_at_us >= 0 && u->timer_at_us - now < wait)
            wait = u->timer_at_us - now;
        for (size_t i = 0; i < u->nretries; i++)
            if (u->retries[i].at_us - now < wait)
                wait = u->retries[i].at_us - now;
        int64_t fl = sy_bridge_flush(u->bridge, 0);
        if (fl >= 0 && fl < wait)
            wait = fl;
        /* microsecond timeouts: a sub-millisecond resume window must not round up to 1 ms */
        struct timespec ts = {.tv_sec = wait <= 0 ? 0 : wait / 1000000,
                              .tv_nsec = wait <= 0 ? 0 : (long)(wait % 1000000) * 1000};
        int n = u->no_pwait2 ? -1 : epoll_pwait2(u->ep, evs, 256, &ts, NULL);
        if (n < 0 && (u->no_pwait2 || errno == ENOSYS)) {
            u->no_pwait2 = true; /* kernels before 5.11: millisecond timeouts */
            n = epoll_wait(u->ep, evs, 256, wait <= 0 ? 0 : (int)((wait + 999) / 1000));
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == sy_bridge_fd(u->bridge)) {
                handle_cmds(u);
            } else if (fd == u->wake_fd) {
                uint64_t v;
                ssize_t r = read(u->wake_fd, &v, sizeof(v));
                (void)r;
            } else {
                int flags = 0;
                if (evs[i].events & (EPOLLIN | EPOLLHUP))
                    flags |= CURL_CSELECT_IN;
                if (evs[i].events & EPOLLOUT)
                    flags |= CURL_CSELECT_OUT;
                if (evs[i].events & EPOLLERR)
                    flags |= CURL_CSELECT_ERR;
                curl_multi_socket_action(u->multi, fd, flags, &running);
            }
        }
        now = sy_now_us();
        if (u->timer_at_us >= 0 && u->timer_at_us <= now) {
            u->timer_at_us = -1;
            curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        check_done(u);
        if (now >= u->next_sweep_us) {
            sweep(u, now);
            u->next_sweep_us = now + SWEEP_US;
        }
        run_retries(u, now);
        if (__atomic_exchange_n(&u->abort_req, 0, __ATOMIC_ACQ_REL))
            abort_everything(u);
        sy_bridge_flush(u->bridge, 0);
    }
    handle_cmds(u);
    abort_everything(u);
    sy_bridge_flush(u->bridge, 1);
    return NULL;
}

static void poke(sy_upstream *u)
{
    uint64_t one = 1;
    ssize_t w = write(u->wake_fd, &one, sizeof(one));
    (void)w;
}

sy_err sy_upstream_start(sy_bridge *bridge, sy_upstream **out)
{
    sy_upstream *u = calloc(1, sizeof(*u));
    struct epoll_event ev = {.events = EPOLLIN};
    if (u == NULL)
        return SY_ENOMEM;
    u->bridge = bridge;
    u->timer_at_us = -1;
    u->ep = epoll_create1(EPOLL_CLOEXEC);
    u->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    u->multi = curl_multi_init();
    if (u->ep < 0 || u->wake_fd < 0 || u->multi == NULL)
        goto fail;
    ev.data.fd = sy_bridge_fd(bridge);
    if (epoll_ctl(u->ep, EPOLL_CTL_ADD, ev.data.fd, &ev) != 0)
        goto fail;
    ev.data.fd = u->wake_fd;
    if (epoll_ctl(u->ep, EPOLL_CTL_ADD, u->wake_fd, &ev) != 0)
        goto fail;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(u->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 100L);
    /* curl 7.88 scans its connection cache linearly when a transfer ends and the cache is full
     * (bench/README.md: quadratic in concurrent streams at 1024); keep every connection. */
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 65536L);
    u->next_sweep_us = sy_now_us() + SWEEP_US;
    if (pthread_create(&u->thread, NULL, thread_main, u) != 0)
        goto fail;
    *out = u;
    return SY_OK;
fail:
    if (u->multi != NULL)
        curl_multi_cleanup(u->multi);
    if (u->ep >= 0)
        close(u->ep);
    if (u->wake_fd >= 0)
        close(u->wake_fd);
    free(u);
    return SY_EINTERNAL;
}

void sy_upstream_abort_all(sy_upstream *u)
{
    __atomic_store_n(&u->abort_req, 1, __ATOMIC_RELEASE);
    poke(u);
}

void sy_upstream_stop(sy_upstream *u)
{
    if (u == NULL)
        return;
    __atomic_store_n(&u->stop, 1, __ATOMIC_RELEASE);
    poke(u);
    pthread_join(u->thread, NULL);
    curl_multi_cleanup(u->multi);
    close(u->ep);
    close(u->wake_fd);
    free(u->retries);
    free(u);
}

int sy_upstream_active(const sy_upstream *u)
{
    return __atomic_load_n(&u->active, __ATOMIC_RELAXED);
}
