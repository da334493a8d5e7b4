/* batch_run: the threads of the batch module — validator (input check and enqueue), workers
 * (run lines through the proxy's own listener) and sweeper (reclaim, finalize, expire, cancel).
 *
 * The design decision: every step is idempotent against the store, so crash safety needs no
 * coordinator. A line's life is: claim (set NX, TTL lease_ms) -> check the batch still runs ->
 * run -> result (set NX) -> count (once-key) -> drop the claim -> acknowledge. Whatever dies
 * between two steps, the next worker that sees the entry redoes only what is missing: a line
 * runs twice only when a process died while it was in flight. */
#include "switchyard/batch.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch_int.h"
#include "switchyard/api.h"
#include "switchyard/provider.h"
#include "switchyard/files.h"
#include "switchyard/json_util.h"
#include "switchyard/log.h"
#include "switchyard/metrics.h"
#include "switchyard/router.h"
#include "switchyard/util.h"

#define ENQ_SAVE_EVERY 64 /* lines between saves of the enqueue position */
#define ONCE_TTL_MS (8LL * 86400 * 1000)
#define FILES_SWEEP_PAGE 128 /* files looked at per sweeper tick */
/* a once-key written by finalize for a line it stopped waiting for (counting writes "1") */
#define ONCE_TOMB "t"

/* ---- small helpers ---------------------------------------------------------------------------- */

bool brun_sleep(sy_batch *b, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (int64_t)(ms % 1000) * 1000000;
    ts.tv_sec += ms / 1000 + ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) != 0)
            break;
    }
    bool go = !b->stop;
    pthread_mutex_unlock(&b->mu);
    return go;
}

static bool stopping(sy_batch *b)
{
    pthread_mutex_lock(&b->mu);
    bool s = b->stop;
    pthread_mutex_unlock(&b->mu);
    return s;
}

void brun_kick(sy_batch *b)
{
    pthread_mutex_lock(&b->mu);
    b->kick = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static const char *kv_get(const sy_store_kvs *kv, const char *name, size_t *len)
{
    for (size_t i = 0; i < kv->n; i++)
        if (strcmp(kv->items[i].name, name) == 0) {
            if (len != NULL)
                *len = kv->items[i].value_len;
            return kv->items[i].value;
        }
    return NULL;
}

static bool take_lease(sy_batch *b, const char *id, long ms)
{
    char key[SY_STORE_KEY_MAX];
    bool stored = false;
    return bk_lease(key, sizeof(key), id) &&
           sy_store_set(b->store, key, b->consumer, strlen(b->consumer), ms, SY_STORE_NX,
                        &stored) == SY_OK &&
           stored;
}

static void drop_lease(sy_batch *b, const char *id)
{
    char key[SY_STORE_KEY_MAX];
    if (bk_lease(key, sizeof(key), id))
        (void)sy_store_del(b->store, key, NULL);
}

static void renew_lease(sy_batch *b, const char *id)
{
    char key[SY_STORE_KEY_MAX];
    if (bk_lease(key, sizeof(key), id))
        (void)sy_store_expire(b->store, key, b->cfg->batch_lease_ms, NULL);
}

static json_t *first_error(const char *code, const char *message)
{
    return json_pack("{s:s, s:[{s:s, s:s, s:n, s:n}]}", "object", "list", "data", "code", code,
                     "message", message, "param", "line");
}

/* ---- results and counts -------------------------------------------------------------------- */

static int64_t jint(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b != NULL)
        v = json_object_get(v, b);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* Counts a stored result (<val>: "o"/"e" + the line) exactly once. *applied (may be NULL):
 * whether this call counted it (false: counted before, or tombstoned by finalize). */
static sy_err count_result(sy_batch *b, const char *id, long line, const char *val, size_t len,
                           bool *applied_out)
{
    char cnt[SY_STORE_KEY_MAX], once[SY_STORE_KEY_MAX];
    if (len < 2 || !bk_cnt(cnt, sizeof(cnt), id) || !bk_once(once, sizeof(once), id, line))
        return SY_EINVAL;
    bool ok = val[0] == 'o';
    json_t *j = json_loadb(val + 1, len - 1, 0, NULL);
    const json_t *u = json_object_get(json_object_get(json_object_get(j, "response"), "body"),
                                      "usage");
    int64_t in = jint(u, "prompt_tokens", NULL) + jint(u, "input_tokens", NULL);
    int64_t out = jint(u, "completion_tokens", NULL) + jint(u, "output_tokens", NULL);
    int64_t cached = jint(u, "prompt_tokens_details", "cached_tokens");
    int64_t reasoning = jint(u, "completion_tokens_details", "reasoning_tokens");
    json_decref(j);
    sy_store_incr ops[5] = {
        {.key = cnt, .field = ok ? "completed" : "failed", .by = 1},
        {.key = cnt, .field = "in", .by = in},
        {.key = cnt, .field = "out", .by = out},
        {.key = cnt, .field = "cached", .by = cached},
        {.key = cnt, .field = "reasoning", .by = reasoning},
    };
    bool applied = false;
    sy_err rc = sy_store_hincrby_many(b->store, ops, 5, once, ONCE_TTL_MS, &applied);
    if (rc == SY_OK && applied)
        sy_metrics_batch_line(b->metrics, ok ? "completed" : "failed");
    if (applied_out != NULL)
        *applied_out = rc == SY_OK && applied;
    return rc;
}

/* Counts the result of <line> if it exists: SY_OK (counted now or before), SY_ENOTFOUND.
 * *applied (may be NULL) as for count_result. */
static sy_err count_existing(sy_batch *b, const char *id, long line, bool *applied)
{
    char key[SY_STORE_KEY_MAX];
    sy_buf v;
    if (applied != NULL)
        *applied = false;
    if (!bk_res(key, sizeof(key), id, line))
        return SY_EINVAL;
    sy_buf_init(&v, 64u << 20);
    sy_err rc = sy_store_get(b->store, key, &v);
    if (rc == SY_OK)
        rc = count_result(b, id, line, v.data, v.len, applied);
    sy_buf_cleanup(&v);
    return rc;
}

sy_err bline_put(sy_batch *b, const char *batch_id, long line, bool ok, const char *line_json,
                 size_t len, bool *fresh)
{
    char key[SY_STORE_KEY_MAX];
    bool stored = false, applied = false;
    if (fresh != NULL)
        *fresh = false;
    if (!bk_res(key, sizeof(key), batch_id, line))
        return SY_EINVAL;
    char *val = malloc(len + 1);
    if (val == NULL)
        return SY_ENOMEM;
    val[0] = ok ? 'o' : 'e';
    memcpy(val + 1, line_json, len);
    sy_err rc = sy_store_set(b->store, key, val, len + 1, 0, SY_STORE_NX, &stored);
    if (rc == SY_OK)
        rc = stored ? count_result(b, batch_id, line, val, len + 1, &applied)
                    : count_existing(b, batch_id, line, &applied);
    /* stored but its once-key was there: the line was settled before (counted, or tombstoned
     * by a finalize that stopped waiting for it) and its result key removed with the batch's
     * end; this late result would only be an orphan that nobody reads */
    if (rc == SY_OK && stored && !applied)
        (void)sy_store_del(b->store, key, NULL);
    if (fresh != NULL)
        *fresh = rc == SY_OK && applied;
    free(val);
    return rc;
}

sy_err sy_batch_line_done(sy_batch *b, const char *batch_id, long line, bool ok,
                          const char *line_json, size_t len, const json_t *usage)
{
    (void)usage; /* counted from the stored line, which is what a replay would see */
    return bline_put(b, batch_id, line, ok, line_json, len, NULL);
}

/* ---- the HTTP call ------------------------------------------------------------------------- */

typedef struct call {
    sy_buf body;
    char request_id[64];
    long retry_after_s;
} call;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    call *c = ud;
    return sy_buf_append(&c->body, p, sz * n) == SY_OK ? sz * n : 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    call *c = ud;
    size_t len = sz * n;
    if (len > 13 && strncasecmp(p, "x-request-id:", 13) == 0) {
        size_t i = 13, e = len;
        while (i < e && (p[i] == ' ' || p[i] == '\t'))
            i++;
        while (e > i && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' '))
            e--;
        snprintf(c->request_id, sizeof(c->request_id), "%.*s", (int)(e - i), p + i);
    } else if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        c->retry_after_s = strtol(p + 12, NULL, 10);
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return stopping(ud) ? 1 : 0; /* shutdown: the line stays pending, reclaimed later */
}

/* One POST of <body> to this instance. *status 0 = transport failure (*cerr set). */
static void http_post(sy_batch *b, CURL *h, const char *url, const char *body, size_t len,
                      const char *batch_id, const char *tenant, call *c, long *status,
                      CURLcode *cerr)
{
    char full[512], h1[160], h2[160], h3[160];
    snprintf(full, sizeof(full), "%s%s", b->self_url, url);
    snprintf(h1, sizeof(h1), "%s: %s", SY_BATCH_HDR_TOKEN, b->token);
    snprintf(h2, sizeof(h2), "%s: %s", SY_BATCH_HDR_ID, batch_id);
    snprintf(h3, sizeof(h3), "%s: %s", SY_BATCH_HDR_TENANT, tenant);
    struct curl_slist *hl = NULL;
    if (!sy_slist_add(&hl, "Content-Type: application/json") || !sy_slist_add(&hl, h1) ||
        !sy_slist_add(&hl, h2) || (tenant[0] != '\0' && !sy_slist_add(&hl, h3)) ||
        !sy_slist_add(&hl, "Expect:")) {
        *status = 0;
        *cerr = CURLE_OUT_OF_MEMORY;
        return;
    }
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, b);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, b->cfg->batch_lease_ms);
    *cerr = curl_easy_perform(h);
    *status = 0;
    if (*cerr == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hl);
}

static bool is_capacity(const call *c)
{
    json_t *j = json_loadb(c->body.data != NULL ? c->body.data : "", c->body.len, 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    bool yes = code != NULL && strcmp(code, "batch_capacity") == 0;
    json_decref(j);
    return yes;
}

/* ---- one line ------------------------------------------------------------------------------- */

typedef struct status_view {
    char status[24];
    char tenant[SY_TENANT_MAX];
} status_view;

static sy_err batch_status(sy_batch *b, const char *id, status_view *sv)
{
    json_t *obj = NULL;
    sy_err rc = bobj_get(b->store, id, &obj);
    if (rc != SY_OK)
        return rc;
    const char *st = json_string_value(json_object_get(obj, "status"));
    const char *t = json_string_value(json_object_get(obj, "sy_tenant"));
    snprintf(sv->status, sizeof(sv->status), "%s", st != NULL ? st : "");
    snprintf(sv->tenant, sizeof(sv->tenant), "%s", t != NULL ? t : "");
    json_decref(obj);
    return SY_OK;
}

static void ack(sy_batch *b, const char *entry_id)
{
    const char *ids[1] = {entry_id};
    (void)sy_store_xack(b->store, BQ_STREAM, BQ_GROUP, ids, 1, true, NULL);
}

/* The deployment the router would pick first for <body> (provider seam), or NULL. */
static const sy_deployment *first_target(sy_batch *b, const json_t *body, const char *tenant)
{
    const char *model = json_string_value(json_object_get(body, "model"));
    sy_pick pick;
    sy_route_ctx rctx = {.tenant = tenant[0] ? tenant : NULL};
    if (model == NULL || sy_router_pick(b->cfg, model, body, &rctx, &pick) != SY_OK ||
        pick.ntargets == 0)
        return NULL;
    return pick.targets[0];
}

typedef enum run_end { RUN_DONE, RUN_ABANDON, RUN_SKIP } run_end;

static run_end run_line(sy_batch *b, CURL *h, const char *id, long line, const char *cid,
                        const char *url, const char *body, size_t blen, const char *tenant,
                        const char *runkey)
{
    const sy_config *cfg = b->cfg;
    int attempts = 0;
    int64_t last_check = sy_wall_ms(), last_renew = last_check;
    call c;
    for (;;) {
        memset(&c, 0, sizeof(c));
        sy_buf_init(&c.body, cfg->max_response_bytes);
        long status = 0;
        CURLcode ce = CURLE_OK;
        http_post(b, h, url, body, blen, id, tenant, &c, &status, &ce);
        if (ce == CURLE_ABORTED_BY_CALLBACK) {
            sy_buf_cleanup(&c.body);
            return RUN_ABANDON;
        }
        bool capacity = status == 503 && is_capacity(&c);
        bool transient = status == 0 || status == 429 || (status >= 500 && !capacity);
        if (!capacity)
            attempts++;
        if (!capacity && (!transient || attempts >= cfg->batch_max_attempts)) {
            size_t len = 0;
            char *lj;
            if (status > 0) {
                lj = sy_batch_result_line(cid, (int)status, c.request_id, c.body.data,
                                          c.body.len, NULL, NULL, &len);
            } else {
                char msg[300];
                snprintf(msg, sizeof(msg), "the request failed after %d attempts: %s", attempts,
                         curl_easy_strerror(ce));
                lj = sy_batch_result_line(cid, 0, NULL, NULL, 0,
                                          ce == CURLE_OPERATION_TIMEDOUT ? "timeout"
                                                                         : "request_failed",
                                          msg, &len);
            }
            sy_buf_cleanup(&c.body);
            if (lj == NULL)
                return RUN_ABANDON;
            bool ok = status >= 200 && status < 300;
            sy_err rc = sy_batch_line_done(b, id, line, ok, lj, len, NULL);
            free(lj);
            return rc == SY_OK ? RUN_DONE : RUN_ABANDON;
        }
        long wait;
        if (capacity) {
            wait = c.retry_after_s > 0 ? c.retry_after_s * 1000 : 200;
            if (wait > cfg->batch_poll_ms)
                wait = cfg->batch_poll_ms;
            if (wait < 20)
                wait = 20;
        } else {
            sy_metrics_batch_line(b->metrics, "retried");
            wait = cfg->batch_retry_base_ms;
            for (int k = 1; k < attempts && wait < 60000; k++)
                wait *= 2;
            if (c.retry_after_s * 1000 > wait)
                wait = c.retry_after_s * 1000;
            if (wait > 60000)
                wait = 60000;
        }
        sy_buf_cleanup(&c.body);
        if (!brun_sleep(b, wait))
            return RUN_ABANDON;
        int64_t now = sy_wall_ms();
        if (now - last_renew > cfg->batch_lease_ms / 3) {
            (void)sy_store_expire(b->store, runkey, cfg->batch_lease_ms, NULL);
            last_renew = now;
        }
        if (now - last_check > 1000) {
            status_view sv;
            last_check = now;
            if (batch_status(b, id, &sv) == SY_OK && strcmp(sv.status, "in_progress") != 0)
                return RUN_SKIP;
        }
    }
}

static void process_entry(sy_batch *b, CURL *h, const sy_stream_entry *e)
{
    const sy_store_kvs *kv = &e->fields;
    const char *id = kv_get(kv, "b", NULL), *ln = kv_get(kv, "n", NULL);
    const char *cid = kv_get(kv, "c", NULL), *url = kv_get(kv, "u", NULL);
    size_t blen = 0;
    const char *body = kv_get(kv, "body", &blen);
    if (id == NULL || ln == NULL || cid == NULL || url == NULL || body == NULL) {
        ack(b, e->id); /* not ours to understand: never block the queue on it */
        return;
    }
    long line = strtol(ln, NULL, 10);
    status_view sv;
    sy_err rc = batch_status(b, id, &sv);
    if (rc == SY_ENOTFOUND || (rc == SY_OK && strcmp(sv.status, "in_progress") != 0 &&
                               strcmp(sv.status, "validating") != 0)) {
        ack(b, e->id);
        sy_metrics_batch_line(b->metrics, "skipped");
        return;
    }
    if (rc != SY_OK)
        return; /* store trouble: leave it pending, it comes back */
    rc = count_existing(b, id, line, NULL);
    if (rc == SY_OK) { /* ran before (a duplicate entry, or a crash before the ack) */
        ack(b, e->id);
        return;
    }
    if (rc != SY_ENOTFOUND)
        return;
    char runkey[SY_STORE_KEY_MAX];
    bool claimed = false;
    if (!bk_run(runkey, sizeof(runkey), id, line) ||
        sy_store_set(b->store, runkey, b->consumer, strlen(b->consumer), b->cfg->batch_lease_ms,
                     SY_STORE_NX, &claimed) != SY_OK ||
        !claimed)
        return; /* another copy runs now; this entry is looked at again after lease_ms */
    /* the status again, now that the claim is visible: a cancel or expiry that came before it
     * sees the claim and waits for this line; one that came after is seen here */
    if (batch_status(b, id, &sv) != SY_OK || strcmp(sv.status, "in_progress") != 0) {
        (void)sy_store_del(b->store, runkey, NULL);
        if (strcmp(sv.status, "validating") != 0)
            ack(b, e->id);
        return;
    }
    json_t *jb = json_loadb(body, blen, 0, NULL);
    if (json_is_object(jb)) {
        sy_batch_job job = {.batch_id = id, .line = line, .custom_id = cid, .url = url,
                            .body = jb, .tenant = sv.tenant};
        const sy_deployment *dep = first_target(b, jb, sv.tenant);
        if (dep != NULL && dep->batch_api && sy_batch_provider_offer(b, &job, dep)) {
            json_decref(jb);
            (void)sy_store_del(b->store, runkey, NULL);
            ack(b, e->id);
            return;
        }
    }
    /* a batch line is never streamed */
    char *send = NULL;
    size_t slen = blen;
    if (json_is_object(jb) && (json_object_get(jb, "stream") != NULL ||
                               json_object_get(jb, "stream_options") != NULL)) {
        json_object_del(jb, "stream");
        json_object_del(jb, "stream_options");
        send = sy_json_dump(jb, &slen);
    }
    json_decref(jb);
    run_end end = run_line(b, h, id, line, cid, url, send != NULL ? send : body,
                           send != NULL ? slen : blen, sv.tenant, runkey);
    free(send);
    (void)sy_store_del(b->store, runkey, NULL);
    if (end == RUN_DONE || end == RUN_SKIP)
        ack(b, e->id);
}

static bool pop_reclaimed(sy_batch *b, sy_stream_entry *out)
{
    bool got = false;
    pthread_mutex_lock(&b->mu);
    if (b->nreclaimed > 0) {
        *out = b->reclaimed[--b->nreclaimed];
        got = true;
    }
    pthread_mutex_unlock(&b->mu);
    return got;
}

static void *worker_main(void *arg)
{
    sy_batch *b = arg;
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    while (!stopping(b)) {
        sy_stream_entry one;
        if (pop_reclaimed(b, &one)) {
            process_entry(b, h, &one);
            sy_store_kvs_cleanup(&one.fields);
            continue;
        }
        sy_stream_entries es;
        sy_stream_entries_init(&es);
        long block = b->cfg->batch_poll_ms < 2000 ? b->cfg->batch_poll_ms : 2000;
        sy_err rc = sy_store_xreadgroup(b->store, BQ_STREAM, BQ_GROUP, b->consumer, ">", 1, block,
                                        &es);
        if (rc == SY_ENOTFOUND)
            (void)sy_store_xgroup_create(b->store, BQ_STREAM, BQ_GROUP, "0", NULL);
        if (rc != SY_OK && !brun_sleep(b, 200)) {
            sy_stream_entries_cleanup(&es);
            break;
        }
        for (size_t i = 0; rc == SY_OK && i < es.n; i++)
            process_entry(b, h, &es.items[i]);
        sy_stream_entries_cleanup(&es);
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* Worker threads start with the first batch this instance sees (a created batch, an active
 * one in the store, or queued lines), so an instance that never runs batches does not carry
 * idle threads. */
static void ensure_workers(sy_batch *b)
{
    pthread_mutex_lock(&b->mu);
    if (!b->stop && b->started == 0 && b->workers != NULL) {
        for (int i = 0; i < b->nworkers; i++) {
            if (pthread_create(&b->workers[i], NULL, worker_main, b) != 0) {
                sy_log(SY_LOG_ERROR, NULL, "batch: cannot start worker thread %d", i);
                break;
            }
            b->started++;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

/* ---- validation and enqueue ----------------------------------------------------------------- */

static size_t max_line_bytes(const sy_batch *b) { return b->cfg->max_body_bytes + 65536; }

static void fail_batch(sy_batch *b, const char *id, json_t *errors)
{
    json_t *set = json_pack("{s:O}", "errors", errors);
    bool moved = false;
    (void)bobj_transition(b->store, id, "validating", "failed", set, &moved, NULL);
    json_decref(set);
    if (moved) {
        bobj_retire(b->store, id, "failed");
        sy_log(SY_LOG_INFO, NULL, "batch %s failed validation", id);
    }
}

static int set_enq_done(json_t *obj, void *ud)
{
    (void)ud;
    json_object_set_new(obj, "sy_enq_done", json_true());
    return 1;
}

/* Appends the lines after the saved position to the queue. */
static void enqueue(sy_batch *b, const char *id, const char *fid, const char *endpoint)
{
    char enqkey[SY_STORE_KEY_MAX];
    sy_buf pos;
    long from = 0;
    int fd = -1;
    uint64_t flen;
    if (!bk_enq(enqkey, sizeof(enqkey), id))
        return;
    sy_buf_init(&pos, 64);
    if (sy_store_get(b->store, enqkey, &pos) == SY_OK)
        from = strtol(pos.data, NULL, 10);
    sy_buf_cleanup(&pos);
    if (sy_files_open(b->files, NULL, fid, &fd, &flen) != SY_OK)
        return; /* retried on the next scan */
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        close(fd);
        return;
    }
    char *lbuf = NULL;
    size_t lcap = 0;
    ssize_t k;
    long lineno = 0, since = 0;
    bool ok = true;
    (void)sy_store_xgroup_create(b->store, BQ_STREAM, BQ_GROUP, "0", NULL);
    while (ok && (k = getline(&lbuf, &lcap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)k;
        while (n > 0 && (lbuf[n - 1] == '\n' || lbuf[n - 1] == '\r'))
            n--;
        if (lineno <= from || n == 0 || strspn(lbuf, " \t\r\n") >= n)
            continue;
        sy_batch_line bl;
        json_t *err = NULL;
        if (!sy_batch_parse_line(lbuf, n, lineno, endpoint, b->cfg->max_json_depth, &bl, &err)) {
            json_decref(err); /* validated before: the file changed? skip the line */
            continue;
        }
        size_t blen;
        char *btext = sy_json_dump(bl.body, &blen);
        json_decref(bl.body);
        if (btext == NULL) {
            ok = false;
            break;
        }
        char num[24];
        snprintf(num, sizeof(num), "%ld", lineno);
        sy_store_field fields[5] = {
            {.name = "b", .value = id, .value_len = strlen(id)},
            {.name = "n", .value = num, .value_len = strlen(num)},
            {.name = "c", .value = bl.custom_id, .value_len = strlen(bl.custom_id)},
            {.name = "u", .value = endpoint, .value_len = strlen(endpoint)},
            {.name = "body", .value = btext, .value_len = blen},
        };
        sy_err rc = sy_store_xadd(b->store, BQ_STREAM, fields, 5, NULL);
        free(btext);
        if (rc != SY_OK) {
            ok = false;
            break;
        }
        if (++since >= ENQ_SAVE_EVERY) {
            since = 0;
            (void)sy_store_set(b->store, enqkey, num, strlen(num), 0, 0, NULL);
            renew_lease(b, id);
            status_view sv;
            if (stopping(b) || batch_status(b, id, &sv) != SY_OK ||
                strcmp(sv.status, "in_progress") != 0)
                ok = false;
        }
    }
    /* a read error is not the end of the file: the rest is queued on the next scan, from the
     * saved position, instead of the batch being marked queued with lines missing */
    if (ferror(f)) {
        sy_log(SY_LOG_WARN, NULL, "batch %s: reading input file %s failed at line %ld", id, fid,
               lineno);
        ok = false;
    }
    free(lbuf);
    fclose(f);
    if (ok) {
        char num[24];
        snprintf(num, sizeof(num), "%ld", lineno);
        (void)sy_store_set(b->store, enqkey, num, strlen(num), 0, 0, NULL);
        (void)bobj_update(b->store, id, set_enq_done, NULL, NULL);
        sy_log(SY_LOG_INFO, NULL, "batch %s queued", id);
    }
}

static void validate(sy_batch *b, const char *id, json_t *obj)
{
    const char *fid = json_string_value(json_object_get(obj, "input_file_id"));
    const char *ep = json_string_value(json_object_get(obj, "endpoint"));
    const char *st = json_string_value(json_object_get(obj, "status"));
    if (fid == NULL || ep == NULL || st == NULL)
        return;
    if (strcmp(st, "validating") == 0) {
        int fd = -1;
        uint64_t flen = 0;
        sy_err rc = sy_files_open(b->files, NULL, fid, &fd, &flen);
        if (rc == SY_ENOTFOUND) {
            json_t *errs = first_error("file_not_found", "The input file no longer exists.");
            fail_batch(b, id, errs);
            json_decref(errs);
            return;
        }
        if (rc != SY_OK)
            return;
        size_t nlines = 0;
        long last = 0;
        json_t *errors = NULL;
        rc = sy_batch_validate_fd(fd, ep, b->cfg->batch_max_lines, max_line_bytes(b),
                                  b->cfg->max_json_depth, &nlines, &last, &errors);
        close(fd);
        if (rc == SY_EINVAL) {
            fail_batch(b, id, errors);
            json_decref(errors);
            return;
        }
        if (rc != SY_OK)
            return;
        json_t *set = json_pack("{s:{s:I, s:i, s:i}, s:I, s:b}", "request_counts", "total",
                                (json_int_t)nlines, "completed", 0, "failed", 0, "sy_lines",
                                (json_int_t)last, "sy_enq_done", 0);
        bool moved = false;
        rc = bobj_transition(b->store, id, "validating", "in_progress", set, &moved, NULL);
        json_decref(set);
        if (!moved)
            return;
        sy_log(SY_LOG_INFO, NULL, "batch %s in progress: %zu requests", id, nlines);
    }
    enqueue(b, id, fid, ep);
}

/* Batches this instance may work on: ids of {b}:active with a positive value (new). */
static sy_err active_ids(sy_batch *b, sy_store_kvs *kv) { return sy_store_hgetall(b->store, B_ACTIVE, kv); }

static void *validator_main(void *arg)
{
    sy_batch *b = arg;
    for (;;) {
        pthread_mutex_lock(&b->mu);
        if (!b->stop && !b->kick) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long ms = b->cfg->batch_poll_ms;
            int64_t ns = (int64_t)ts.tv_nsec + (int64_t)(ms % 1000) * 1000000;
            ts.tv_sec += ms / 1000 + ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        }
        bool stop = b->stop;
        b->kick = false;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            break;
        sy_store_kvs kv;
        sy_store_kvs_init(&kv);
        if (active_ids(b, &kv) == SY_OK) {
            for (size_t i = 0; i < kv.n && !stopping(b); i++) {
                if (strtoll(kv.items[i].value, NULL, 10) <= 0)
                    continue;
                const char *id = kv.items[i].name;
                json_t *obj = NULL;
                if (bobj_get(b->store, id, &obj) != SY_OK)
                    continue;
                const char *st = json_string_value(json_object_get(obj, "status"));
                bool todo = st != NULL &&
                            (strcmp(st, "validating") == 0 ||
                             (strcmp(st, "in_progress") == 0 &&
                              !json_is_true(json_object_get(obj, "sy_enq_done"))));
                ensure_workers(b);
                if (todo && take_lease(b, id, b->cfg->batch_lease_ms)) {
                    validate(b, id, obj);
                    drop_lease(b, id);
                }
                json_decref(obj);
            }
        }
        sy_store_kvs_cleanup(&kv);
    }
    return NULL;
}

/* ---- finalization --------------------------------------------------------------------------- */

typedef enum fin_rc { FIN_DONE, FIN_BUSY, FIN_ERROR } fin_rc;

/* The id of batch <id>'s output or error file (<kind>): "file-" and 24 base62 characters of
 * SHA-256 over the batch id, so a finalize run again after a crash or a failed status update
 * replaces the file an earlier run published instead of leaving it orphaned next to a second
 * copy. Batch ids are random, so these ids are as unguessable as random file ids. */
static void result_file_id(const char *id, const char *kind, char out[32])
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char md[SHA256_DIGEST_LENGTH];
    char seed[160];
    int w = snprintf(seed, sizeof(seed), "switchyard batch %s file of %s", kind, id);
    SHA256((const unsigned char *)seed, w > 0 ? (size_t)w : 0, md);
    memcpy(out, "file-", 5);
    for (int i = 0; i < 24; i++)
        out[5 + i] = b62[md[i] % 62];
    out[29] = '\0';
}

/* Publishes batch <id>'s <side> ("output" or "error") file from <path> when it has <n> lines,
 * clearing <path> once the file owns it (*file: the published object, new); with no lines,
 * removes one a crashed run left. The same ids on every run: a run after a crash between here
 * and the status change replaces what the crashed one published. */
static bool publish_side(sy_batch *b, const char *id, const char *side, const char *owner,
                         size_t n, char *path, json_t **file)
{
    char name[128], fid[32];

    result_file_id(id, side, fid);
    if (n == 0)
        return sy_files_delete(b->files, NULL, fid, NULL) == SY_OK;
    snprintf(name, sizeof(name), "%s_%s.jsonl", id, side);
    if (sy_files_put_from_path(b->files, fid, owner, "batch_output", name, path, file) != SY_OK)
        return false;
    path[0] = '\0';
    return true;
}

/* Test hook: a crash at <point> of finalize ("published": files in place, status not yet
 * changed; "give_up": before the tombstone of a line at a provider) when b->fin_fault answers
 * true. */
static bool fin_fault(sy_batch *b, const char *point)
{
    pthread_mutex_lock(&b->mu);
    bool (*fn)(void *, const char *) = b->fin_fault;
    void *ud = b->fin_fault_ud;
    pthread_mutex_unlock(&b->mu);
    return fn != NULL && fn(ud, point);
}

/* Removes the stored results of lines 1..<nlines> of ended batch <id> (they are in its files). */
static void drop_results(sy_batch *b, const char *id, long nlines)
{
    for (long l = 1; l <= nlines; l++) {
        char rkey[SY_STORE_KEY_MAX];
        if (bk_res(rkey, sizeof(rkey), id, l))
            (void)sy_store_del(b->store, rkey, NULL);
    }
}

static sy_err write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0)
            return SY_EINTERNAL;
        p += k;
        n -= (size_t)k;
    }
    return SY_OK;
}

/* Writes the output and error files of batch <id> in line order and ends it with status <end>
 * ("completed", "expired" or "cancelled"). Lines without a result: FIN_BUSY when one is still
 * running, or is at a provider's batch API and batch.provider_grace_ms has not passed since
 * expires_at (cancelling_at for a cancel); past it such a line is reported batch_expired or
 * batch_cancelled. Otherwise an expired batch reports them as batch_expired errors and a
 * cancelled one leaves them out (they never ran). */
static fin_rc finalize(sy_batch *b, const char *id, json_t *obj, const char *end)
{
    const char *fid = json_string_value(json_object_get(obj, "input_file_id"));
    const char *ep = json_string_value(json_object_get(obj, "endpoint"));
    /* the output and error files belong to the batch's creator (files.h: tenancy) */
    const char *owner = json_string_value(json_object_get(obj, "sy_tenant"));
    bool expired = strcmp(end, "expired") == 0;
    /* until when lines still at a provider's batch API are waited for; counted from
     * cancelling_at or expires_at, and when the object lacks it (the epoch would give up on
     * them at once) from expires_at, else created_at + the window, else now */
    const json_t *since = json_object_get(obj, strcmp(end, "cancelled") == 0 ? "cancelling_at"
                                                                             : "expires_at");
    const json_t *created = json_object_get(obj, "created_at");
    int64_t deadline = sy_wall_ms();
    if (!json_is_integer(since))
        since = json_object_get(obj, "expires_at");
    if (json_is_integer(since))
        deadline = (int64_t)json_integer_value(since) * 1000;
    else if (json_is_integer(created))
        deadline = ((int64_t)json_integer_value(created) + b->cfg->batch_window_s) * 1000;
    deadline += b->cfg->batch_provider_grace_ms;
    char opath[4096], epath[4096];
    int in = -1, ofd = -1, efd = -1;
    uint64_t flen;
    FILE *f = NULL;
    char *lbuf = NULL;
    size_t lcap = 0, nout = 0, nerr = 0;
    fin_rc ret = FIN_ERROR;
    json_t *ofile = NULL, *efile = NULL;
    long lineno = 0;
    ssize_t k;

    opath[0] = epath[0] = '\0';
    if (fid == NULL || ep == NULL || sy_files_open(b->files, NULL, fid, &in, &flen) != SY_OK)
        goto out;
    if ((f = fdopen(in, "r")) == NULL)
        goto out;
    in = -1;
    if (sy_files_tmp_path(b->files, opath, sizeof(opath)) != SY_OK ||
        (ofd = open(opath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        opath[0] = '\0';
        goto out;
    }
    if (sy_files_tmp_path(b->files, epath, sizeof(epath)) != SY_OK ||
        (efd = open(epath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        epath[0] = '\0';
        goto out;
    }
    while ((k = getline(&lbuf, &lcap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)k;
        while (n > 0 && (lbuf[n - 1] == '\n' || lbuf[n - 1] == '\r'))
            n--;
        if (n == 0 || strspn(lbuf, " \t\r\n") >= n)
            continue;
        char rkey[SY_STORE_KEY_MAX], runkey[SY_STORE_KEY_MAX];
        bool gave_up = false;
        if (!bk_res(rkey, sizeof(rkey), id, lineno) || !bk_run(runkey, sizeof(runkey), id, lineno))
            goto out;
        sy_buf v;
        sy_buf_init(&v, 64u << 20);
        sy_err rc = sy_store_get(b->store, rkey, &v);
        if (rc == SY_ENOTFOUND) {
            /* a result is written before its claim is dropped: no claim, then no result
             * read after it, means the line never ran and will not */
            bool running = false;
            if (sy_store_exists(b->store, runkey, &running) != SY_OK || running) {
                sy_buf_cleanup(&v);
                ret = running ? FIN_BUSY : FIN_ERROR;
                goto out;
            }
            /* a line at a provider's batch API comes back (answered, or expired/cancelled)
             * once the provider ends that batch, which the provider sweep cancels for an
             * ended batch; the batch waits for it up to batch.provider_grace_ms */
            sy_err perr = SY_OK;
            bool held = sy_batch_provider_holds(b, id, lineno, &perr);
            if (perr != SY_OK) {
                sy_buf_cleanup(&v);
                goto out;
            }
            if (held && sy_wall_ms() < deadline) {
                sy_buf_cleanup(&v);
                ret = FIN_BUSY;
                goto out;
            }
            if (held) {
                /* given up: the once-key as a tombstone (ONCE_TOMB) settles the line, so an
                 * answer that comes later is dropped unbilled (bline_put) instead of counted
                 * and billed for nobody; a result counted before it is read below and kept.
                 * Whichever settled the line decides: a result key seen next to a tombstone is
                 * a late answer its writer is about to delete, uncounted and unbilled, so it
                 * is not read (the client would get an answer nobody paid for). */
                char once[SY_STORE_KEY_MAX];
                if (fin_fault(b, "give_up") || !bk_once(once, sizeof(once), id, lineno) ||
                    sy_store_set(b->store, once, ONCE_TOMB, 1, ONCE_TTL_MS, SY_STORE_NX,
                                 NULL) != SY_OK ||
                    sy_store_get(b->store, once, &v) != SY_OK) {
                    sy_buf_cleanup(&v);
                    goto out;
                }
                gave_up = v.len == 1 && v.data[0] == ONCE_TOMB[0];
                sy_buf_reset(&v);
            }
            rc = gave_up ? SY_ENOTFOUND : sy_store_get(b->store, rkey, &v);
        }
        if (rc == SY_OK && v.len > 1) {
            int fd = v.data[0] == 'o' ? ofd : efd;
            if (v.data[0] == 'o')
                nout++;
            else
                nerr++;
            if (write_all(fd, v.data + 1, v.len - 1) != SY_OK || write_all(fd, "\n", 1) != SY_OK) {
                sy_buf_cleanup(&v);
                goto out;
            }
        } else if (rc == SY_ENOTFOUND && (expired || gave_up)) {
            sy_batch_line bl;
            json_t *err = NULL;
            if (sy_batch_parse_line(lbuf, n, lineno, ep, b->cfg->max_json_depth, &bl, &err)) {
                size_t len;
                char *lj = sy_batch_result_line(
                    bl.custom_id, 0, NULL, NULL, 0, expired ? "batch_expired" : "batch_cancelled",
                    expired ? BMSG_EXPIRED : BMSG_CANCELLED, &len);
                json_decref(bl.body);
                if (lj == NULL || write_all(efd, lj, len) != SY_OK ||
                    write_all(efd, "\n", 1) != SY_OK) {
                    free(lj);
                    sy_buf_cleanup(&v);
                    goto out;
                }
                free(lj);
                nerr++;
            }
            json_decref(err);
        } else if (rc != SY_OK && rc != SY_ENOTFOUND) {
            sy_buf_cleanup(&v);
            goto out;
        }
        sy_buf_cleanup(&v);
    }
    close(ofd);
    close(efd);
    ofd = efd = -1;
    if (!publish_side(b, id, "output", owner, nout, opath, &ofile) ||
        !publish_side(b, id, "error", owner, nerr, epath, &efile))
        goto out;
    if (fin_fault(b, "published"))
        goto out;
    json_t *set = json_pack("{s:o, s:o}", "output_file_id",
                            ofile != NULL ? json_incref(json_object_get(ofile, "id")) : json_null(),
                            "error_file_id",
                            efile != NULL ? json_incref(json_object_get(efile, "id")) : json_null());
    const char *from = strcmp(end, "cancelled") == 0 ? "cancelling" : "finalizing";
    bool moved = false;
    sy_err rc = bobj_transition(b->store, id, from, end, set, &moved, NULL);
    json_decref(set);
    if (rc != SY_OK)
        goto out;
    if (moved) {
        sy_log(SY_LOG_INFO, NULL, "batch %s %s: %zu output lines, %zu error lines", id, end,
               nout, nerr);
        /* results are in the files now; the once-keys expire by themselves. Retired after:
         * a crash in between leaves the batch active, and the sweep drops them then */
        drop_results(b, id, lineno);
        bobj_retire(b->store, id, end);
    }
    ret = FIN_DONE;
out:
    free(lbuf);
    if (f != NULL)
        fclose(f);
    if (in >= 0)
        close(in);
    if (ofd >= 0)
        close(ofd);
    if (efd >= 0)
        close(efd);
    if (opath[0] != '\0')
        unlink(opath);
    if (epath[0] != '\0')
        unlink(epath);
    json_decref(ofile);
    json_decref(efile);
    return ret;
}

static int mark_end(json_t *obj, void *ud)
{
    json_object_set_new(obj, "sy_end", json_string(ud));
    return 1;
}

/* One batch's sweep: expiry, completion, cancellation. */
static void sweep_batch(sy_batch *b, const char *id, int64_t *by_status)
{
    json_t *obj = NULL;
    if (bobj_get(b->store, id, &obj) != SY_OK)
        return;
    const char *st = json_string_value(json_object_get(obj, "status"));
    static const char *const names[] = {"validating", "failed",     "in_progress", "finalizing",
                                        "completed",  "expired",    "cancelling",  "cancelled"};
    /* finished batches are counted from {b}:stats once retired */
    for (int i = 0; st != NULL && !bstatus_terminal(st) && i < 8; i++)
        if (strcmp(st, names[i]) == 0)
            by_status[i]++;
    int64_t now = sy_wall_ms() / 1000;
    json_t *exp = json_object_get(obj, "expires_at");
    bool past = json_is_integer(exp) && now >= json_integer_value(exp);
    if (st == NULL) {
    } else if (bstatus_terminal(st)) {
        /* ended but not retired: a finalize died before it dropped the results */
        drop_results(b, id, (long)jint(obj, "sy_lines", NULL));
        bobj_retire(b->store, id, st);
    } else if (strcmp(st, "validating") == 0 && past) {
        json_t *errs = first_error("batch_expired", "The batch expired before validation ended.");
        fail_batch(b, id, errs);
        json_decref(errs);
    } else if (strcmp(st, "in_progress") == 0) {
        json_t *pub = bobj_public(b->store, obj);
        json_t *rc = json_object_get(pub, "request_counts");
        int64_t total = jint(rc, "total", NULL);
        int64_t done = jint(rc, "completed", NULL) + jint(rc, "failed", NULL);
        bool enq = json_is_true(json_object_get(obj, "sy_enq_done"));
        json_decref(pub);
        const char *end = past ? "expired" : enq && done >= total ? "completed" : NULL;
        if (end != NULL) {
            json_t *set = json_pack("{s:s}", "sy_end", end);
            bool moved = false;
            (void)bobj_transition(b->store, id, "in_progress", "finalizing", set, &moved, NULL);
            json_decref(set);
            if (moved && take_lease(b, id, b->cfg->batch_lease_ms)) {
                json_decref(obj);
                obj = NULL;
                if (bobj_get(b->store, id, &obj) == SY_OK)
                    (void)finalize(b, id, obj, end);
                drop_lease(b, id);
            }
        }
    } else if (strcmp(st, "finalizing") == 0 || strcmp(st, "cancelling") == 0) {
        const char *end = strcmp(st, "cancelling") == 0
                              ? "cancelled"
                              : json_string_value(json_object_get(obj, "sy_end"));
        if (end == NULL) {
            end = "completed";
            (void)bobj_update(b->store, id, mark_end, (void *)end, NULL);
        }
        if (take_lease(b, id, b->cfg->batch_lease_ms)) {
            (void)finalize(b, id, obj, end);
            drop_lease(b, id);
        }
    }
    json_decref(obj);
}

static void reclaim(sy_batch *b)
{
    if (b->nworkers == 0)
        return;
    char start[SY_STREAM_ID_MAX] = "0-0", next[SY_STREAM_ID_MAX];
    for (int round = 0; round < 10; round++) {
        pthread_mutex_lock(&b->mu);
        size_t room = b->capreclaimed - b->nreclaimed;
        pthread_mutex_unlock(&b->mu);
        if (room == 0)
            return;
        sy_stream_entries es;
        sy_stream_entries_init(&es);
        sy_err rc = sy_store_xautoclaim(b->store, BQ_STREAM, BQ_GROUP, b->consumer,
                                        b->cfg->batch_lease_ms, start, room, &es, next);
        if (rc != SY_OK) {
            sy_stream_entries_cleanup(&es);
            return;
        }
        pthread_mutex_lock(&b->mu);
        for (size_t i = 0; i < es.n; i++) {
            if (es.items[i].deleted) {
                ack(b, es.items[i].id); /* gone from the stream: nothing to run */
                continue;
            }
            if (b->nreclaimed == b->capreclaimed)
                continue; /* stays pending under this consumer: claimed again next time */
            b->reclaimed[b->nreclaimed++] = es.items[i];
            sy_store_kvs_init(&es.items[i].fields); /* moved */
        }
        pthread_mutex_unlock(&b->mu);
        if (es.n > 0)
            sy_log(SY_LOG_INFO, NULL, "batch: reclaimed %zu idle lines", es.n);
        sy_stream_entries_cleanup(&es);
        if (strcmp(next, "0-0") == 0)
            return;
        snprintf(start, sizeof(start), "%s", next);
    }
}

static void *sweeper_main(void *arg)
{
    sy_batch *b = arg;
    while (brun_sleep(b, b->cfg->batch_poll_ms)) {
        (void)sy_store_xgroup_create(b->store, BQ_STREAM, BQ_GROUP, "0", NULL);
        reclaim(b);
        sy_batch_provider_sweep(b);
        /* expired files' content and index entries: a bounded page per tick (files.h) */
        (void)sy_files_sweep(b->files, FILES_SWEEP_PAGE, NULL, NULL);
        int64_t by_status[8] = {0};
        sy_store_kvs kv;
        sy_store_kvs_init(&kv);
        if (active_ids(b, &kv) == SY_OK) {
            for (size_t i = 0; i < kv.n && !stopping(b); i++)
                if (strtoll(kv.items[i].value, NULL, 10) > 0)
                    sweep_batch(b, kv.items[i].name, by_status);
        }
        sy_store_kvs_cleanup(&kv);
        sy_store_kvs_init(&kv);
        if (sy_store_hgetall(b->store, B_STATS, &kv) == SY_OK) {
            static const char *const names[] = {"validating", "failed",     "in_progress",
                                                "finalizing", "completed",  "expired",
                                                "cancelling", "cancelled"};
            for (size_t i = 0; i < kv.n; i++)
                for (int s = 0; s < 8; s++)
                    if (strcmp(kv.items[i].name, names[s]) == 0)
                        by_status[s] += strtoll(kv.items[i].value, NULL, 10);
        }
        sy_store_kvs_cleanup(&kv);
        int64_t depth = -1;
        int64_t len = 0;
        if (sy_store_xlen(b->store, BQ_STREAM, &len) == SY_OK)
            depth = len;
        if (depth > 0)
            ensure_workers(b); /* lines of another instance's batches */
        sy_metrics_batch_gauges(b->metrics, depth, by_status);
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

sy_err sy_batch_new(const sy_config *cfg, struct sy_store *store, struct sy_files *files,
                    struct sy_metrics *metrics, struct sy_spend *spend, const char *self_url,
                    sy_batch **out)
{
    sy_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return SY_ENOMEM;
    b->cfg = sy_config_ref((sy_config *)cfg);
    b->store = store;
    b->files = files;
    b->metrics = metrics;
    b->spend = spend;
    snprintf(b->self_url, sizeof(b->self_url), "%s", self_url != NULL ? self_url : "");
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    if (!sy_rand_id(b->token, sizeof(b->token), "", sizeof(b->token) - 1, SY_ID_HEX)) {
        sy_batch_free(b);
        return SY_EINTERNAL;
    }
    char host[64] = "host";
    (void)gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(b->consumer, sizeof(b->consumer), "%.40s-%ld-%.8s", host, (long)getpid(), b->token + 56);
    b->nworkers = cfg->batch_workers;
    b->capreclaimed = (size_t)(b->nworkers > 0 ? b->nworkers * 4 : 0);
    if (b->capreclaimed > 0 &&
        (b->reclaimed = calloc(b->capreclaimed, sizeof(*b->reclaimed))) == NULL) {
        sy_batch_free(b);
        return SY_ENOMEM;
    }
    if (store == NULL || files == NULL || self_url == NULL) {
        *out = b; /* the API answers 503 for what it cannot do; no threads */
        b->stopped = true;
        return SY_OK;
    }
    (void)sy_store_xgroup_create(store, BQ_STREAM, BQ_GROUP, "0", NULL);
    if (b->nworkers > 0 && (b->workers = calloc((size_t)b->nworkers, sizeof(pthread_t))) == NULL) {
        sy_batch_free(b);
        return SY_ENOMEM;
    }
    b->have_validator = pthread_create(&b->validator, NULL, validator_main, b) == 0;
    b->have_sweeper = pthread_create(&b->sweeper, NULL, sweeper_main, b) == 0;
    if (!b->have_validator || !b->have_sweeper) {
        sy_batch_free(b);
        return SY_EINTERNAL;
    }
    *out = b;
    return SY_OK;
}

const char *sy_batch_token(const sy_batch *b) { return b->token; }

void sy_batch_stop(sy_batch *b)
{
    if (b == NULL || b->stopped)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    /* no worker starts after stop is set (ensure_workers checks it under mu) */
    for (int i = 0; i < b->started; i++)
        pthread_join(b->workers[i], NULL);
    if (b->have_validator)
        pthread_join(b->validator, NULL);
    if (b->have_sweeper)
        pthread_join(b->sweeper, NULL);
    b->stopped = true;
}

void sy_batch_free(sy_batch *b)
{
    if (b == NULL)
        return;
    sy_batch_stop(b);
    for (size_t i = 0; i < b->nreclaimed; i++)
        sy_store_kvs_cleanup(&b->reclaimed[i].fields);
    free(b->reclaimed);
    free(b->workers);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    sy_config_unref(b->cfg);
    free(b);
}
