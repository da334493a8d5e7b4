/* batch_provider: the seam where batch lines go through a provider's own batch API (OpenAI
 * Batches, Anthropic Message Batches; src/provider_batch.c) at its discount instead of running
 * one by one (issue 7, item 4). A worker calls sy_batch_provider_offer for every line whose
 * first-choice deployment has "batch_api": true; the sweeper calls sy_batch_provider_sweep.
 *
 * The one design decision: every step is a store record written before the step it guards, and
 * a provider batch is never submitted twice.
 *   offer:   the line is copied to {b}:pb:line:<batch>:<line> and indexed in the hash {b}:pb:pend
 *            ("<batch>:<line>" -> "<enqueued ms>|<attempts>|<deployment>") before the worker
 *            acknowledges its queue entry.
 *   submit:  (sweeper) lines of one deployment are grouped once there are
 *            batch.provider_group_size of them or the oldest has waited batch.poll_ms; the
 *            group is written to {b}:pb:sub
 *            (<sub id> -> {"dep","ep","lines":[...],"state":"submitting"}) and taken out of the
 *            pending index, then submitted; the provider's batch id is saved ("submitted").
 *            A failed submit puts the lines back (up to batch.max_attempts, then they fail).
 *            A restart that finds a group still "submitting" cannot know whether the provider
 *            took it: its lines fail with provider_batch_unknown rather than risk paying twice.
 *   poll:    (sweeper) each submitted group is polled; once it ended, its results are written
 *            through sy_batch_line_done (idempotent) and each line that ran and had no result
 *            yet records its spend priced with the batch discount; then the group is deleted.
 *   cancel:  (sweeper) a pending line of a batch being cancelled is never submitted: it ends
 *            batch_cancelled at once. A submitted group whose lines all belong to batches being
 *            cancelled is cancelled at the provider (once; "cancel": true in its record); polling
 *            goes on and its lines come back as the provider ends them (answers for those that
 *            ran, batch_cancelled for the rest). A group mixing in lines of live batches runs
 *            on. The cancelled batch is finalized only once none of its lines is still here
 *            (sy_batch_provider_holds).
 *   expiry:  the same for a batch past its completion window (finalizing as "expired"): pending
 *            lines end batch_expired, a group of only ended batches is cancelled at the
 *            provider, and what the provider completed before the cancel is merged (its
 *            unrun lines come back batch_expired). The finalize waits for the lines still
 *            here up to batch.provider_grace_ms, then settles them without the provider
 *            (batch_run.c); an answer arriving after that is dropped unbilled (bline_put says
 *            the line was settled), so spend always matches the files the client reads.
 * Only one instance works on provider batches at a time (lease {b}:pb:lease). */
#include "switchyard/batch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch_int.h"
#include "switchyard/json_util.h"
#include "switchyard/log.h"
#include "switchyard/provider_batch.h"
#include "switchyard/router.h"
#include "switchyard/routes.h"
#include "switchyard/spend.h"
#include "switchyard/util.h"

#define PB_PEND "{b}:pb:pend"
#define PB_SUB "{b}:pb:sub"
#define PB_LEASE "{b}:pb:lease"

static bool line_key(char *buf, size_t n, const char *ref)
{
    int w = snprintf(buf, n, "{b}:pb:line:%s", ref);
    return w > 0 && (size_t)w < n;
}

/* "<batch>:<line>" -> batch id and line number. */
static bool split_ref(const char *ref, char *id, size_t idn, long *line)
{
    const char *colon = strrchr(ref, ':');
    if (colon == NULL || (size_t)(colon - ref) >= idn)
        return false;
    memcpy(id, ref, (size_t)(colon - ref));
    id[colon - ref] = '\0';
    *line = strtol(colon + 1, NULL, 10);
    return true;
}

bool sy_batch_provider_offer(sy_batch *b, const sy_batch_job *job, const sy_deployment *dep)
{
    char ref[128], key[SY_STORE_KEY_MAX], val[256];
    json_t *rec;
    char *text;
    size_t len = 0;
    bool ok = false;

    if (strcmp(job->url, "/v1/embeddings") == 0 && dep->provider == SY_PROVIDER_ANTHROPIC)
        return false;
    snprintf(ref, sizeof(ref), "%s:%ld", job->batch_id, job->line);
    if (!line_key(key, sizeof(key), ref))
        return false;
    rec = json_pack("{s:s,s:s,s:s,s:O}", "c", job->custom_id, "t", job->tenant ? job->tenant : "",
                    "u", job->url, "body", job->body);
    text = rec ? sy_json_dump(rec, &len) : NULL;
    json_decref(rec);
    if (text == NULL)
        return false;
    snprintf(val, sizeof(val), "%" PRId64 "|0|%s", sy_wall_ms(), dep->name);
    ok = sy_store_set(b->store, key, text, len, 0, 0, NULL) == SY_OK &&
         sy_store_hset(b->store, PB_PEND, ref, val, strlen(val), 0, NULL) == SY_OK;
    free(text);
    if (ok)
        sy_log(SY_LOG_DEBUG, NULL, "batch %s line %ld: queued for the batch API of %s",
               job->batch_id, job->line, dep->name);
    return ok;
}

static sy_endpoint ep_of(const char *url)
{
    return strcmp(url, "/v1/embeddings") == 0    ? SY_EP_EMBEDDINGS
           : strcmp(url, "/v1/completions") == 0 ? SY_EP_COMPLETIONS
                                                 : SY_EP_CHAT;
}

/* The stored line of <ref> (new), or NULL. */
static json_t *load_line(sy_batch *b, const char *ref)
{
    char key[SY_STORE_KEY_MAX];
    sy_buf v;
    json_t *j = NULL;

    sy_buf_init(&v, (size_t)64 << 20);
    if (line_key(key, sizeof(key), ref) && sy_store_get(b->store, key, &v) == SY_OK)
        j = json_loadb(v.data ? v.data : "", v.len, 0, NULL);
    sy_buf_cleanup(&v);
    return j;
}

bool sy_batch_provider_holds(sy_batch *b, const char *id, long line, sy_err *err)
{
    char ref[128], key[SY_STORE_KEY_MAX];
    bool there = false;
    int w = snprintf(ref, sizeof(ref), "%s:%ld", id, line);

    *err = SY_OK;
    if (w <= 0 || (size_t)w >= sizeof(ref) || !line_key(key, sizeof(key), ref))
        return false;
    *err = sy_store_exists(b->store, key, &there);
    return *err == SY_OK && there;
}

typedef enum ref_state {
    REF_LIVE,      /* the batch still wants the line */
    REF_CANCELLED, /* being cancelled, or gone: nothing to deliver to */
    REF_EXPIRED    /* past its completion window (finalizing as expired, or expired) */
} ref_state;

/* What became of the batch of <ref>. <seen> caches states for one sweep ({batch id: state}).
 * Store errors answer REF_LIVE (tried again next sweep). */
static ref_state ref_state_of(sy_batch *b, const char *ref, json_t *seen)
{
    char id[80];
    long line;
    json_t *obj = NULL, *v;
    ref_state rs = REF_LIVE;

    if (ref == NULL || !split_ref(ref, id, sizeof(id), &line))
        return REF_LIVE;
    if ((v = json_object_get(seen, id)) != NULL)
        return (ref_state)json_integer_value(v);
    sy_err rc = bobj_get(b->store, id, &obj);
    if (rc == SY_OK) {
        const char *st = json_string_value(json_object_get(obj, "status"));
        const char *end = json_string_value(json_object_get(obj, "sy_end"));
        if (st != NULL && (strcmp(st, "cancelling") == 0 || strcmp(st, "cancelled") == 0))
            rs = REF_CANCELLED;
        else if (st != NULL && (strcmp(st, "expired") == 0 ||
                                (strcmp(st, "finalizing") == 0 && end != NULL &&
                                 strcmp(end, "expired") == 0)))
            rs = REF_EXPIRED;
    } else if (rc == SY_ENOTFOUND) {
        rs = REF_CANCELLED;
    }
    json_decref(obj);
    if (rc == SY_OK || rc == SY_ENOTFOUND)
        (void)json_object_set_new(seen, id, json_integer(rs));
    return rs;
}

static void drop_line(sy_batch *b, const char *ref)
{
    char key[SY_STORE_KEY_MAX];
    if (line_key(key, sizeof(key), ref))
        (void)sy_store_del(b->store, key, NULL);
}

/* Writes the result of <ref> once; records its spend (batch discount) when this call settled
 * the line (bline_put) and the line ran. <body> is the OpenAI answer or error; <status> 0 =
 * never ran. Returns true when an answer that ran came too late: the batch had already settled
 * the line without it (a finalize that stopped waiting), so it was dropped and not billed. */
static bool finish_line(sy_batch *b, const sy_deployment *dep, const char *ref, int status,
                        const json_t *body, const sy_usage *usage, const char *code,
                        const char *message)
{
    char id[80];
    long line;
    json_t *l = load_line(b, ref);
    const char *cid = json_string_value(json_object_get(l, "c"));
    bool fresh = false, late = false;
    char *text = NULL, *lj = NULL;
    size_t tlen = 0, len = 0;

    if (!split_ref(ref, id, sizeof(id), &line) || cid == NULL) {
        json_decref(l);
        drop_line(b, ref);
        return false;
    }
    if (status > 0 && body != NULL)
        text = sy_json_dump(body, &tlen);
    lj = sy_batch_result_line(cid, status, NULL, text, tlen, code, message, &len);
    if (lj != NULL &&
        bline_put(b, id, line, status >= 200 && status < 300, lj, len, &fresh) == SY_OK) {
        /* billed only with the result the client reads: a replayed group (crash before its
         * record was dropped) or an answer after the batch gave up on it is not fresh */
        late = !fresh && status > 0;
        if (fresh && status > 0 && b->spend != NULL && dep != NULL) {
            const json_t *req = json_object_get(l, "body");
            const char *tenant = json_string_value(json_object_get(l, "t"));
            const char *model = json_string_value(json_object_get(req, "model"));
            sy_route_ctx rctx = {.tenant = tenant && tenant[0] ? tenant : NULL};
            sy_pick pick;
            bool picked = model != NULL &&
                          sy_router_pick(b->cfg, model, req, &rctx, &pick) == SY_OK;
            const sy_route *route = picked ? pick.route_def : NULL;
            const sy_deployment *refd =
                route != NULL && route->reference >= 0 &&
                        (size_t)route->reference < b->cfg->ndeployments
                    ? &b->cfg->deployments[route->reference]
                    : NULL;
            sy_spend_rec r = {.route = picked ? pick.route : NULL,
                              .tier = picked ? pick.tier : NULL,
                              .deployment = dep->name,
                              .model = dep->model,
                              .key = tenant && tenant[0] ? tenant : NULL,
                              .status = status,
                              .error = status >= 400,
                              .batch = true,
                              .batch_discount = true,
                              .latency_us = -1,
                              .ttft_us = -1};
            if (usage != NULL)
                r.usage = *usage;
            sy_spend_price(&r, &dep->price, refd != NULL ? &refd->price : NULL);
            sy_spend_record(b->spend, &r);
        }
        drop_line(b, ref);
    }
    free(lj);
    free(text);
    json_decref(l);
    return late;
}

/* ---- submit --------------------------------------------------------------------------------- */

typedef struct group {
    char dep[128];
    char url[32];
    json_t *refs;  /* ["<batch>:<line>", ...] */
    json_t *tries; /* attempts so far, per ref */
    int64_t oldest;
} group;

typedef struct reject_ctx {
    sy_batch *b;
    const sy_deployment *dep;
    json_t *refs;
} reject_ctx;

static void on_reject(void *ud, size_t index, const char *custom_id, const char *err)
{
    reject_ctx *c = ud;
    json_t *body = json_loads(err, 0, NULL);
    (void)custom_id;
    /* status 400: the client's line cannot be translated for this provider */
    finish_line(c->b, c->dep, json_string_value(json_array_get(c->refs, index)), 400, body, NULL,
                NULL, NULL);
    json_decref(body);
}

static void submit_group(sy_batch *b, group *g)
{
    const sy_deployment *dep = sy_config_deployment(b->cfg, g->dep);
    size_t n = json_array_size(g->refs), i, submitted = 0;
    sy_provider_batch_line *lines = calloc(n ? n : 1, sizeof(*lines));
    json_t **loaded = calloc(n ? n : 1, sizeof(*loaded)), *sub = NULL;
    char (*cids)[96] = calloc(n ? n : 1, sizeof(*cids));
    char subid[64], pid[SY_PROVIDER_BATCH_ID_MAX];
    sy_provider_batch_error e = {0};
    reject_ctx rc = {.b = b, .dep = dep, .refs = g->refs};
    char *text = NULL;
    size_t len = 0;
    sy_err err;

    if (lines == NULL || loaded == NULL || cids == NULL)
        goto out;
    /* random like batch ids: rand() is unseeded, so two instances would draw the same ids */
    if (!sy_rand_id(subid, sizeof(subid), "pb", 24, SY_ID_HEX))
        goto out;
    sub = json_pack("{s:s,s:s,s:O,s:s,s:s,s:I}", "dep", g->dep, "ep", g->url, "lines", g->refs,
                    "state", "submitting", "pid", "", "at", (json_int_t)sy_wall_ms());
    if (sub == NULL || (text = sy_json_dump(sub, &len)) == NULL ||
        sy_store_hset(b->store, PB_SUB, subid, text, len, 0, NULL) != SY_OK)
        goto out;
    for (i = 0; i < n; i++)
        (void)sy_store_hdel(b->store, PB_PEND, json_string_value(json_array_get(g->refs, i)),
                            NULL);
    if (dep == NULL) { /* gone from the config after a reload */
        for (i = 0; i < n; i++)
            finish_line(b, NULL, json_string_value(json_array_get(g->refs, i)), 0, NULL, NULL,
                        "deployment_unavailable", "the batch_api deployment is gone");
        (void)sy_store_hdel(b->store, PB_SUB, subid, NULL);
        goto out;
    }
    for (i = 0; i < n; i++) {
        loaded[i] = load_line(b, json_string_value(json_array_get(g->refs, i)));
        /* unique across submissions: "<sub id>-<index>" (Anthropic: at most 64 bytes) */
        snprintf(cids[i], sizeof(cids[i]), "%s-%zu", subid, i);
        lines[i].custom_id = cids[i];
        lines[i].body = json_object_get(loaded[i], "body");
        if (lines[i].body == NULL)
            lines[i].body = json_object(); /* unreadable: the provider rejects it */
    }
    err = sy_provider_batch_submit(dep, ep_of(g->url), lines, n, subid, on_reject, &rc, pid,
                                   sizeof(pid), &submitted, &e);
    if (err == SY_OK && submitted == 0) {
        (void)sy_store_hdel(b->store, PB_SUB, subid, NULL);
    } else if (err == SY_OK) {
        json_object_set_new(sub, "state", json_string("submitted"));
        json_object_set_new(sub, "pid", json_string(pid));
        free(text);
        if ((text = sy_json_dump(sub, &len)) != NULL)
            (void)sy_store_hset(b->store, PB_SUB, subid, text, len, 0, NULL);
    } else {
        /* not taken: back to pending, or failed after batch.max_attempts */
        for (i = 0; i < n; i++) {
            const char *ref = json_string_value(json_array_get(g->refs, i));
            long tries = (long)json_integer_value(json_array_get(g->tries, i)) + 1;
            if (tries >= b->cfg->batch_max_attempts) {
                json_t *body = e.body ? json_loads(e.body, 0, NULL) : NULL;
                finish_line(b, dep, ref, e.status > 0 ? e.status : 502, body, NULL, NULL, NULL);
                json_decref(body);
            } else {
                char val[256];
                snprintf(val, sizeof(val), "%" PRId64 "|%ld|%.128s", sy_wall_ms(), tries, g->dep);
                (void)sy_store_hset(b->store, PB_PEND, ref, val, strlen(val), 0, NULL);
            }
        }
        (void)sy_store_hdel(b->store, PB_SUB, subid, NULL);
    }
    for (i = 0; i < n; i++)
        if (loaded[i] == NULL || json_object_get(loaded[i], "body") == NULL)
            json_decref((json_t *)lines[i].body);
out:
    for (i = 0; loaded != NULL && i < n; i++)
        json_decref(loaded[i]);
    sy_provider_batch_error_cleanup(&e);
    json_decref(sub);
    free(text);
    free(lines);
    free(loaded);
    free(cids);
}

/* Groups the pending lines by deployment and submits the groups that are due; lines of batches
 * being cancelled end batch_cancelled instead. */
static void submit_due(sy_batch *b, json_t *seen)
{
    sy_store_kvs kv;
    group groups[16];
    size_t ng = 0, i;
    int64_t now = sy_wall_ms();

    memset(groups, 0, sizeof(groups));
    sy_store_kvs_init(&kv);
    if (sy_store_hgetall(b->store, PB_PEND, &kv) != SY_OK)
        goto out;
    for (i = 0; i < kv.n; i++) {
        const char *v = kv.items[i].value, *p1 = strchr(v, '|'), *p2 = p1 ? strchr(p1 + 1, '|')
                                                                          : NULL;
        json_t *l;
        const char *url;
        size_t k;
        if (p2 == NULL)
            continue;
        ref_state rs = ref_state_of(b, kv.items[i].name, seen);
        if (rs != REF_LIVE) {
            /* the result first (finish_line), then the index entry: a crash between the two
             * only repeats an idempotent finish */
            bool exp = rs == REF_EXPIRED;
            (void)finish_line(b, NULL, kv.items[i].name, 0, NULL, NULL,
                              exp ? "batch_expired" : "batch_cancelled",
                              exp ? BMSG_EXPIRED : BMSG_CANCELLED);
            (void)sy_store_hdel(b->store, PB_PEND, kv.items[i].name, NULL);
            continue;
        }
        for (k = 0; k < ng; k++)
            if (strcmp(groups[k].dep, p2 + 1) == 0)
                break;
        if (k == ng) {
            if (ng == sizeof(groups) / sizeof(groups[0]))
                continue; /* the next sweep takes the rest */
            l = load_line(b, kv.items[i].name);
            url = json_string_value(json_object_get(l, "u"));
            snprintf(groups[k].dep, sizeof(groups[k].dep), "%s", p2 + 1);
            snprintf(groups[k].url, sizeof(groups[k].url), "%s",
                     url ? url : "/v1/chat/completions");
            json_decref(l);
            groups[k].refs = json_array();
            groups[k].tries = json_array();
            groups[k].oldest = now;
            ng++;
        }
        if (json_array_size(groups[k].refs) >= b->cfg->batch_provider_group_size)
            continue;
        json_array_append_new(groups[k].refs, json_string(kv.items[i].name));
        json_array_append_new(groups[k].tries, json_integer(strtol(p1 + 1, NULL, 10)));
        if (strtoll(v, NULL, 10) < groups[k].oldest)
            groups[k].oldest = strtoll(v, NULL, 10);
    }
    for (i = 0; i < ng; i++)
        if (json_array_size(groups[i].refs) >= b->cfg->batch_provider_group_size ||
            now - groups[i].oldest >= b->cfg->batch_poll_ms)
            submit_group(b, &groups[i]);
out:
    for (i = 0; i < ng; i++) {
        json_decref(groups[i].refs);
        json_decref(groups[i].tries);
    }
    sy_store_kvs_cleanup(&kv);
}

/* ---- poll and merge ------------------------------------------------------------------------ */

typedef struct merge_ctx {
    sy_batch *b;
    const sy_deployment *dep;
    const json_t *refs;
    char *seen;     /* per line: a result arrived */
    json_t *states; /* ref_state_of's cache */
    size_t late;    /* answers dropped: their batch had settled the line without them */
} merge_ctx;

static int on_result(void *ud, const sy_provider_batch_result *r)
{
    merge_ctx *c = ud;
    size_t n = json_array_size(c->refs);
    char *end;
    const char *dash = strrchr(r->custom_id, '-');
    unsigned long i = dash != NULL ? strtoul(dash + 1, &end, 10) : n;

    if (i >= n || dash == NULL || *end != '\0')
        return 0; /* not one of ours */
    c->seen[i] = 1;
    const char *ref = json_string_value(json_array_get(c->refs, i));
    if (r->status == 0) {
        const json_t *err = json_object_get(r->body, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        /* the provider's batch was cancelled because this batch expired: its unrun lines
         * expired as far as the client is concerned */
        if (ref_state_of(c->b, ref, c->states) == REF_EXPIRED) {
            code = "batch_expired";
            msg = BMSG_EXPIRED;
        }
        (void)finish_line(c->b, c->dep, ref, 0, NULL, NULL, code, msg);
    } else if (finish_line(c->b, c->dep, ref, r->status, r->body,
                           r->has_usage ? &r->usage : NULL, NULL, NULL)) {
        c->late++;
    }
    return 0;
}

/* Cancels submitted group <sub> at the provider when every one of its lines belongs to a batch
 * being cancelled or past its window, once (recorded in the group before the call: a crash after it only means
 * the provider is asked again, which it allows). */
static void cancel_if_unwanted(sy_batch *b, const sy_deployment *dep, const char *subid,
                               json_t *sub, const char *pid, json_t *seen)
{
    const json_t *refs = json_object_get(sub, "lines");
    size_t n = json_array_size(refs);
    sy_provider_batch_error e = {0};
    char *text = NULL;
    size_t len = 0;

    if (n == 0 || json_is_true(json_object_get(sub, "cancel")))
        return;
    for (size_t i = 0; i < n; i++)
        if (ref_state_of(b, json_string_value(json_array_get(refs, i)), seen) == REF_LIVE)
            return; /* a live batch still wants some of its lines */
    if (json_object_set_new(sub, "cancel", json_true()) != 0 ||
        (text = sy_json_dump(sub, &len)) == NULL ||
        sy_store_hset(b->store, PB_SUB, subid, text, len, 0, NULL) != SY_OK) {
        (void)json_object_del(sub, "cancel"); /* tried again next sweep */
        free(text);
        return;
    }
    free(text);
    sy_err rc = sy_provider_batch_cancel(dep, pid, &e);
    sy_log(rc == SY_OK ? SY_LOG_INFO : SY_LOG_WARN, NULL,
           "provider batch %s at %s: cancel %s (%zu lines of ended batches)", pid, dep->name,
           rc == SY_OK ? "requested" : sy_err_name(rc), n);
    sy_provider_batch_error_cleanup(&e);
}

static void poll_sub(sy_batch *b, const char *subid, const char *text, json_t *seen)
{
    json_t *sub = json_loads(text, 0, NULL);
    const char *state = json_string_value(json_object_get(sub, "state"));
    const char *pid = json_string_value(json_object_get(sub, "pid"));
    const char *depname = json_string_value(json_object_get(sub, "dep"));
    const char *url = json_string_value(json_object_get(sub, "ep"));
    const json_t *refs = json_object_get(sub, "lines");
    const sy_deployment *dep = sy_config_deployment(b->cfg, depname);
    sy_provider_batch_error e = {0};
    sy_provider_batch_status st;
    merge_ctx mc = {.b = b, .dep = dep, .refs = refs, .states = seen};
    size_t n = json_array_size(refs), i;

    if (state == NULL || refs == NULL)
        goto drop;
    if (strcmp(state, "submitting") == 0) {
        /* a crash between recording the group and saving the provider's id: the provider may
         * or may not have the batch, and resubmitting could pay twice */
        int64_t at = json_integer_value(json_object_get(sub, "at"));
        if (sy_wall_ms() - at < b->cfg->batch_lease_ms)
            goto out; /* another instance may be submitting it right now */
        for (i = 0; i < n; i++)
            finish_line(b, dep, json_string_value(json_array_get(refs, i)), 0, NULL, NULL,
                        "provider_batch_unknown",
                        "the proxy restarted while submitting this line to the provider's batch "
                        "API; it was not resubmitted so that it is never paid twice");
        goto drop;
    }
    if (dep == NULL || pid == NULL) {
        for (i = 0; i < n; i++)
            finish_line(b, NULL, json_string_value(json_array_get(refs, i)), 0, NULL, NULL,
                        "deployment_unavailable", "the batch_api deployment is gone");
        goto drop;
    }
    cancel_if_unwanted(b, dep, subid, sub, pid, seen);
    if (sy_provider_batch_poll(dep, pid, &st, &e) != SY_OK ||
        st.state == SY_PROVIDER_BATCH_PENDING)
        goto out; /* polled again next sweep */
    if (st.state != SY_PROVIDER_BATCH_FAILED) {
        if ((mc.seen = calloc(n ? n : 1, 1)) == NULL)
            goto out;
        if (sy_provider_batch_results(dep, ep_of(url ? url : ""), pid, on_result, &mc, &e) !=
            SY_OK)
            goto out; /* read again next sweep: finish_line is idempotent */
    }
    for (i = 0; i < n; i++) {
        if (mc.seen != NULL && mc.seen[i])
            continue;
        finish_line(b, dep, json_string_value(json_array_get(refs, i)), 0, NULL, NULL,
                    st.state == SY_PROVIDER_BATCH_FAILED ? "provider_batch_failed"
                                                         : "provider_batch_missing",
                    st.message[0] ? st.message : "the provider's batch has no result for it");
    }
    sy_log(SY_LOG_INFO, NULL, "provider batch %s at %s: %s, %ld ok, %ld failed", pid, dep->name,
           st.provider_status, st.succeeded, st.errored);
    if (mc.late > 0)
        sy_log(SY_LOG_WARN, NULL,
               "provider batch %s at %s: %zu answers came after their batch ended without them "
               "(batch.provider_grace_ms); dropped, not billed to the client",
               pid, dep->name, mc.late);
drop:
    (void)sy_store_hdel(b->store, PB_SUB, subid, NULL);
out:
    free(mc.seen);
    sy_provider_batch_error_cleanup(&e);
    json_decref(sub);
}

void sy_batch_provider_sweep(sy_batch *b)
{
    sy_store_kvs kv;
    bool leased = false;

    if (sy_store_set(b->store, PB_LEASE, b->consumer, strlen(b->consumer),
                     b->cfg->batch_lease_ms, SY_STORE_NX, &leased) != SY_OK ||
        !leased)
        return;
    json_t *seen = json_object(); /* batch statuses, looked up once per sweep */
    submit_due(b, seen);
    sy_store_kvs_init(&kv);
    if (sy_store_hgetall(b->store, PB_SUB, &kv) == SY_OK)
        for (size_t i = 0; i < kv.n; i++)
            poll_sub(b, kv.items[i].name, kv.items[i].value, seen);
    sy_store_kvs_cleanup(&kv);
    json_decref(seen);
    (void)sy_store_del(b->store, PB_LEASE, NULL);
}
