/*
 * fake_upstream: Anthropic's Message Batches API, in memory.
 *
 * POST .../messages/batches takes {"requests":[{"custom_id","params"}]}; GET .../{id} answers
 * the message_batch object; GET .../{id}/results the JSONL results once it has ended; POST
 * .../{id}/cancel cancels. As in batch_openai.c nothing runs in the background: the retrieve
 * that finds the batch due (batch_polls retrieves, batch_ms since creation) runs every request
 * through fake_handle_line as POST /v1/messages with the creating request's headers, so a
 * request is answered (and checked) exactly as the Messages endpoint answers it directly.
 */
#include "fake.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CUSTOM_ID 64 /* Anthropic's limit */

typedef struct abatch {
    char id[48];
    json_t *requests; /* [{custom_id, params}] */
    char *headers;    /* the creating request's header block (x-api-key, anthropic-version) */
    size_t headers_len;
    char status[16]; /* in_progress, canceling, ended */
    fake_batch_opts opts;
    long polls;
    long cancel_polls; /* retrieves since the cancel */
    int64_t created_mono;
    long long created_at, ended_at, cancel_at;
    long processing, succeeded, errored, canceled, expired;
    fbuf results;
    struct abatch *next;
} abatch;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static abatch *batches;
static atomic_ullong seq;

static json_t *rfc3339(long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char b[40];

    if (t == 0)
        return json_null();
    gmtime_r(&tt, &tm);
    strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(b);
}

static int err(fake_reply *r, int status, const char *msg)
{
    return fake_error_reply(r, true, status, msg) == 0 ? 1 : -1;
}

/* The message_batch object. <prefix> ("/v1/messages/batches", as requested) builds
 * results_url on <host>. */
static json_t *batch_json(const abatch *b, const char *host, size_t hostn, const char *prefix,
                          size_t prefixn)
{
    json_t *j;
    char url[512];
    bool ended = strcmp(b->status, "ended") == 0;

    snprintf(url, sizeof(url), "http://%.*s%.*s/%s/results", (int)hostn, host, (int)prefixn,
             prefix, b->id);
    j = json_pack("{s:s,s:s,s:s,s:{s:i,s:i,s:i,s:i,s:i},s:o,s:o,s:o,s:o,s:n,s:s?}", "id", b->id,
                  "type", "message_batch", "processing_status", b->status, "request_counts",
                  "processing", (int)b->processing, "succeeded", (int)b->succeeded, "errored",
                  (int)b->errored, "canceled", (int)b->canceled, "expired", (int)b->expired,
                  "created_at", rfc3339(b->created_at), "expires_at",
                  rfc3339(b->created_at + 86400), "ended_at", rfc3339(b->ended_at),
                  "cancel_initiated_at", rfc3339(b->cancel_at), "archived_at", "results_url",
                  ended ? url : NULL);
    return j;
}

static abatch *find(const char *id, size_t n)
{
    for (abatch *b = batches; b != NULL; b = b->next)
        if (strlen(b->id) == n && memcmp(b->id, id, n) == 0)
            return b;
    return NULL;
}

static int create(const fake_request *rq, const fake_batch_opts *o, fake_reply *r)
{
    json_t *root = json_loadb(rq->body, rq->body_len, 0, NULL), *reqs, *it, *seen = NULL;
    abatch *b = NULL;
    size_t i;
    int rc;
    char msg[160];

    reqs = json_object_get(root, "requests");
    if (!json_is_array(reqs) || json_array_size(reqs) == 0) {
        rc = err(r, 400, "requests: Field required (a non-empty list)");
        goto out;
    }
    rc = -1;
    if ((seen = json_object()) == NULL)
        goto out;
    json_array_foreach(reqs, i, it)
    {
        const char *cid = json_string_value(json_object_get(it, "custom_id"));
        if (cid == NULL || cid[0] == '\0' || strlen(cid) > MAX_CUSTOM_ID) {
            snprintf(msg, sizeof(msg), "requests.%zu.custom_id: a string of 1 to %d characters",
                     i, MAX_CUSTOM_ID);
            rc = err(r, 400, msg);
            goto out;
        }
        if (json_object_get(seen, cid) != NULL) {
            snprintf(msg, sizeof(msg), "Duplicate custom_id: '%.64s'", cid);
            rc = err(r, 400, msg);
            goto out;
        }
        if (!json_is_object(json_object_get(it, "params"))) {
            snprintf(msg, sizeof(msg), "requests.%zu.params: Field required", i);
            rc = err(r, 400, msg);
            goto out;
        }
        if (json_object_set_new(seen, cid, json_true()) != 0)
            goto out;
    }
    if ((b = calloc(1, sizeof(*b))) == NULL || (b->headers = malloc(rq->headers_len + 1)) == NULL)
        goto out;
    memcpy(b->headers, rq->headers, rq->headers_len);
    b->headers_len = rq->headers_len;
    snprintf(b->id, sizeof(b->id), "msgbatch_fake%llu",
             (unsigned long long)atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed) + 1);
    b->requests = json_incref(reqs);
    snprintf(b->status, sizeof(b->status), "in_progress");
    b->opts = *o;
    b->created_mono = fake_mono_ms();
    b->created_at = (long long)time(NULL);
    b->processing = (long)json_array_size(reqs);
    fbuf_init(&b->results);
    b->next = batches;
    batches = b;
    b = NULL;
    rc = 1;
    {
        size_t hl = 0;
        const char *host = fake_header(rq, "host", &hl);
        size_t plen = 0;
        while (plen < rq->target_len && rq->target[plen] != '?')
            plen++;
        rc = fake_json_reply(r, 200,
                             batch_json(batches, host ? host : "", hl, rq->target, plen));
    }
out:
    if (b != NULL) {
        free(b->headers);
        free(b);
    }
    json_decref(seen);
    json_decref(root);
    return rc;
}

/* One results line for <cid>: {"custom_id","result":{...}} (<result> stolen). */
static int result_line(fbuf *o, const char *cid, json_t *result)
{
    json_t *j = result ? json_pack("{s:s,s:o}", "custom_id", cid, "result", result) : NULL;

    return fake_json_take(o, j) == 0 && fbuf_puts(o, "\n") == 0 ? 0 : -1;
}

static int finish(abatch *b, bool cancelled)
{
    json_t *it;
    size_t i;

    json_array_foreach(b->requests, i, it)
    {
        const char *cid = json_string_value(json_object_get(it, "custom_id"));
        json_t *result;
        char *text;
        fake_reply rep;

        if (cancelled && (long)i >= b->opts.cancel_keep) {
            b->canceled++;
            result = json_pack("{s:s}", "type", "canceled");
        } else if (b->opts.expire_after >= 0 && (long)i >= b->opts.expire_after) {
            b->expired++;
            result = json_pack("{s:s}", "type", "expired");
        } else {
            fake_request lr = {.method = "POST",
                               .method_len = 4,
                               .target = "/v1/messages",
                               .target_len = 12,
                               .headers = b->headers,
                               .headers_len = b->headers_len,
                               .http_minor = 1};
            json_t *body;
            if ((text = json_dumps(json_object_get(it, "params"), JSON_COMPACT)) == NULL)
                return -1;
            lr.body = text;
            lr.body_len = strlen(text);
            fake_reply_init(&rep);
            if (fake_handle_line(&lr, &rep) != 0) {
                fake_reply_cleanup(&rep);
                free(text);
                return -1;
            }
            free(text);
            fake_batch_line_ran(cid);
            if (rep.stream != NULL || rep.stall) {
                fake_reply_cleanup(&rep);
                fake_reply_init(&rep);
                if (fake_error_reply(&rep, true, 400, "stream: not supported in batches") != 0) {
                    fake_reply_cleanup(&rep);
                    return -1;
                }
            }
            body = json_loadb(rep.body.p ? rep.body.p : "", rep.body.len, 0, NULL);
            if (body == NULL)
                body = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                                 "api_error", "message", "fake: malformed answer");
            if (rep.status == 200) {
                b->succeeded++;
                result = json_pack("{s:s,s:o}", "type", "succeeded", "message", body);
            } else {
                b->errored++;
                result = json_pack("{s:s,s:o}", "type", "errored", "error", body);
            }
            fake_reply_cleanup(&rep);
        }
        if (result_line(&b->results, cid, result) != 0)
            return -1;
    }
    b->processing = 0;
    b->ended_at = (long long)time(NULL);
    snprintf(b->status, sizeof(b->status), "ended");
    return 0;
}

int fake_batch_anthropic(const fake_request *rq, const char *path, size_t plen,
                         const fake_batch_opts *o, fake_reply *r)
{
    static const char seg[] = "/messages/batches";
    const char *at = NULL, *q = path, *end = path + plen, *id, *slash;
    size_t idn, hl = 0, prefixn;
    const char *host = fake_header(rq, "host", &hl);
    bool get = rq->method_len == 3 && memcmp(rq->method, "GET", 3) == 0;
    bool post = rq->method_len == 4 && memcmp(rq->method, "POST", 4) == 0;
    const char *atype;
    char amsg[128];
    int st, rc;
    abatch *b;

    fake_stat_add(FAKE_STAT_message_batches, 1);
    if ((st = fake_anth_check(rq, NULL, &atype, amsg, sizeof(amsg))) != 0)
        return err(r, st, amsg);
    while ((q = memmem(q, (size_t)(end - q), seg, sizeof(seg) - 1)) != NULL)
        at = q++;
    if (at == NULL)
        return err(r, 404, "fake_upstream: unknown path");
    prefixn = (size_t)(at - path) + sizeof(seg) - 1;
    id = at + sizeof(seg) - 1;
    if (id == end) {
        if (!post)
            return err(r, 405, "fake_upstream: method not allowed");
        pthread_mutex_lock(&mu);
        rc = create(rq, o, r);
        pthread_mutex_unlock(&mu);
        return rc;
    }
    id++; /* the '/' */
    slash = memchr(id, '/', (size_t)(end - id));
    idn = slash ? (size_t)(slash - id) : (size_t)(end - id);
    pthread_mutex_lock(&mu);
    if ((b = find(id, idn)) == NULL) {
        rc = err(r, 404, "fake: no such message batch");
    } else if (slash == NULL) {
        if (!get) {
            rc = err(r, 405, "fake_upstream: method not allowed");
        } else {
            b->polls++;
            rc = 1;
            if (strcmp(b->status, "canceling") == 0 && b->cancel_polls++ >= b->opts.cancel_polls)
                rc = finish(b, true) == 0 ? 1 : -1;
            else if (strcmp(b->status, "in_progress") == 0 && b->polls >= b->opts.polls &&
                     fake_mono_ms() - b->created_mono >= b->opts.delay_ms)
                rc = finish(b, false) == 0 ? 1 : -1;
            if (rc == 1)
                rc = fake_json_reply(r, 200,
                                     batch_json(b, host ? host : "", hl, path, prefixn));
        }
    } else if ((size_t)(end - slash) == 8 && memcmp(slash, "/results", 8) == 0) {
        if (!get) {
            rc = err(r, 405, "fake_upstream: method not allowed");
        } else if (strcmp(b->status, "ended") != 0) {
            rc = err(r, 400, "Batch is still processing; results are available once it ends.");
        } else {
            r->ctype = "application/binary";
            rc = fbuf_append(&r->body, b->results.p ? b->results.p : "", b->results.len) == 0
                     ? 1
                     : -1;
        }
    } else if ((size_t)(end - slash) == 7 && memcmp(slash, "/cancel", 7) == 0) {
        if (!post) {
            rc = err(r, 405, "fake_upstream: method not allowed");
        } else {
            if (strcmp(b->status, "in_progress") == 0) {
                snprintf(b->status, sizeof(b->status), "canceling");
                b->cancel_at = (long long)time(NULL);
            }
            rc = fake_json_reply(r, 200, batch_json(b, host ? host : "", hl, path, prefixn));
        }
    } else {
        rc = err(r, 404, "fake_upstream: unknown path");
    }
    pthread_mutex_unlock(&mu);
    return rc;
}
