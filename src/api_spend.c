/* api_spend: GET /v1/spend (aggregates as JSON), GET /metrics (Prometheus text) and
 * GET /dashboard (the built-in page).
 *
 * Design decision: money goes out twice, as exact integers (`*_micro`) and as USD numbers printed
 * with 15 significant digits, which for any amount below a billion dollars is exactly the decimal
 * of the integer micro-dollars (DBL_DIG is 15), so `0.000150` never becomes 0.00015000000000000001.
 * /v1/spend and /metrics need the master key whenever one is configured (or keys are required). */
#include "switchyard/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard_html.h"
#include "switchyard/metrics.h"
#include "switchyard/spend.h"

#define SPEND_SYNC_MS 1000 /* wait for records made just before the query */
#define METRICS_MAX (64u << 20)

static bool spend_authorized(const sy_api_in *in)
{
    if (in->cfg->master_key == NULL && !in->cfg->require_keys)
        return true;
    return sy_api_master_ok(in->cfg, in->authorization);
}

/* A query argument through the server's accessor; NULL when absent. Copied into <buf> (cut at
 * <cap> - 1 bytes, which no valid value reaches). */
static const char *arg(const sy_api_in *in, const char *name, char *buf, size_t cap)
{
    const char *v = in->get_arg != NULL ? in->get_arg(in->hctx, name) : NULL;

    if (v == NULL)
        return NULL;
    snprintf(buf, cap, "%s", v);
    return buf;
}

static json_t *usd(int64_t micro) { return json_real((double)micro / 1e6); }

/* Adds the counters of <c> to <o>; false on allocation failure. */
static bool put_counts(json_t *o, const sy_spend_counts *c)
{
    int64_t savings = c->counterfactual_micro - c->cost_micro;
    int bad = 0;

#define PUT_INT(name, v) bad |= json_object_set_new(o, name, json_integer(v))
    PUT_INT("requests", c->requests);
    PUT_INT("errors", c->errors);
    PUT_INT("prompt_tokens", c->prompt_tokens);
    PUT_INT("cached_tokens", c->cached_tokens);
    PUT_INT("cache_write_tokens", c->cache_write_tokens);
    PUT_INT("completion_tokens", c->completion_tokens);
    PUT_INT("reasoning_tokens", c->reasoning_tokens);
    bad |= json_object_set_new(o, "cost_usd", usd(c->cost_micro));
    bad |= json_object_set_new(o, "counterfactual_usd", usd(c->counterfactual_micro));
    bad |= json_object_set_new(o, "savings_usd", usd(savings));
    PUT_INT("cost_micro", c->cost_micro);
    PUT_INT("counterfactual_micro", c->counterfactual_micro);
    PUT_INT("savings_micro", savings);
    PUT_INT("cache_hits", c->cache_hits);
    PUT_INT("estimated", c->estimated);
#undef PUT_INT
    return bad == 0;
}

static void reply_json(sy_reply *out, json_t *j)
{
    /* 15 significant digits: see the top of this file */
    out->body = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(j);
    if (out->body == NULL) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        return;
    }
    out->len = strlen(out->body);
    out->status = 200;
}

void sy_api_spend(const sy_api_in *in, sy_reply *out)
{
    char fb[16], tb[16], gb[256], kb[256], msg[300];
    const char *from = arg(in, "from", fb, sizeof(fb)), *to = arg(in, "to", tb, sizeof(tb));
    const char *group_by = arg(in, "group_by", gb, sizeof(gb));
    const char *key = arg(in, "key", kb, sizeof(kb));
    sy_spend_query q = {0};
    sy_spend_result res;
    json_t *j = NULL, *rows = NULL, *groups = NULL, *totals = NULL;
    char day[11];
    sy_err rc;
    bool complete;

    if (!spend_authorized(in)) {
        sy_api_error(out, SY_EAUTH,
                     "/v1/spend needs the master key: send 'Authorization: Bearer <master key>'",
                     NULL);
        return;
    }
    if (in->spend == NULL) {
        sy_api_error(out, SY_EUNAVAIL, "spend is not recorded by this server", NULL);
        return;
    }
    q.to_day = sy_spend_today(in->spend);
    if (to != NULL && !sy_spend_parse_day(to, &q.to_day)) {
        sy_api_error(out, SY_EINVAL, "'to' must be a date YYYY-MM-DD", "to");
        return;
    }
    q.from_day = q.to_day - 29;
    if (from != NULL && !sy_spend_parse_day(from, &q.from_day)) {
        sy_api_error(out, SY_EINVAL, "'from' must be a date YYYY-MM-DD", "from");
        return;
    }
    if (q.from_day > q.to_day) {
        sy_api_error(out, SY_EINVAL, "'from' must not be after 'to'", "from");
        return;
    }
    if (q.to_day - q.from_day >= 366) {
        sy_api_error(out, SY_EINVAL, "at most 366 days per query", "from");
        return;
    }
    if (group_by != NULL) {
        for (const char *p = group_by; *p != '\0';) {
            size_t len = strcspn(p, ",");
            int d = sy_spend_dim_parse(p, len);
            if (len > 0 && d < 0) {
                snprintf(msg, sizeof(msg),
                         "unknown group_by dimension '%.*s' (use day, route, tier, deployment, "
                         "model, key)",
                         (int)(len > 64 ? 64 : len), p);
                sy_api_error(out, SY_EINVAL, msg, "group_by");
                return;
            }
            if (d >= 0)
                q.group_mask |= 1u << d;
            p += len + (p[len] == ',');
        }
    }
    q.key = key != NULL && key[0] != '\0' ? key : NULL;

    /* records made just before this query are in the store when it runs */
    complete = sy_spend_sync(in->spend, SPEND_SYNC_MS) == SY_OK;
    sy_spend_result_init(&res);
    rc = sy_spend_query_run(in->spend, &q, &res);
    if (rc != SY_OK) {
        sy_spend_result_cleanup(&res);
        if (rc == SY_ENOMEM)
            sy_api_error(out, SY_ENOMEM, NULL, NULL);
        else if (rc == SY_ETOOBIG)
            sy_api_error(out, SY_EINVAL,
                         "too many rows: group by fewer dimensions or query "
                         "fewer days",
                         "group_by");
        else
            sy_api_error(out, SY_EUNAVAIL, "the spend store is unavailable; try again", NULL);
        return;
    }

    j = json_object();
    rows = json_array();
    groups = json_array();
    totals = json_object();
    if (j == NULL || rows == NULL || groups == NULL || totals == NULL)
        goto nomem;
    int bad = json_object_set_new(j, "object", json_string("spend"));
    sy_spend_format_day(q.from_day, day);
    bad |= json_object_set_new(j, "from", json_string(day));
    sy_spend_format_day(q.to_day, day);
    bad |= json_object_set_new(j, "to", json_string(day));
    for (int d = 0; d < SY_DIM__COUNT; d++)
        if (q.group_mask & (1u << d))
            bad |= json_array_append_new(groups, json_string(sy_spend_dim_name(d)));
    bad |= json_object_set(j, "group_by", groups);
    if (q.key != NULL)
        bad |= json_object_set_new(j, "key", json_string(q.key));
    bad |= json_object_set_new(j, "currency", json_string("USD"));
    bad |= json_object_set_new(j, "complete", json_boolean(complete));
    if (bad != 0 || !put_counts(totals, &res.totals) || json_object_set(j, "totals", totals))
        goto nomem;
    for (size_t i = 0; i < res.n; i++) {
        json_t *r = json_object();
        if (r == NULL || json_array_append_new(rows, r) != 0)
            goto nomem;
        for (int d = 0; d < SY_DIM__COUNT; d++)
            if (res.rows[i].dims[d] != NULL &&
                json_object_set_new(r, sy_spend_dim_name(d), json_string(res.rows[i].dims[d])))
                goto nomem;
        if (!put_counts(r, &res.rows[i].c))
            goto nomem;
    }
    if (json_object_set(j, "rows", rows) != 0)
        goto nomem;
    json_decref(rows);
    json_decref(groups);
    json_decref(totals);
    sy_spend_result_cleanup(&res);
    reply_json(out, j);
    return;
nomem:
    json_decref(j);
    json_decref(rows);
    json_decref(groups);
    json_decref(totals);
    sy_spend_result_cleanup(&res);
    sy_api_error(out, SY_ENOMEM, NULL, NULL);
}

void sy_api_metrics(const sy_api_in *in, sy_reply *out)
{
    sy_buf b;
    sy_metrics_src src = {.cfg = in->cfg, .inflight = in->inflight};

    if (!spend_authorized(in)) {
        sy_api_error(out, SY_EAUTH,
                     "/metrics needs the master key: send 'Authorization: Bearer <master key>'",
                     NULL);
        return;
    }
    if (in->metrics == NULL) {
        sy_api_error(out, SY_EUNAVAIL, "metrics are not collected by this server", NULL);
        return;
    }
    if (in->spend != NULL) {
        src.spend = in->spend;
        src.store = sy_spend_get_store(in->spend);
    }
    sy_buf_init(&b, METRICS_MAX);
    sy_err rc = sy_metrics_render(in->metrics, &src, &b);
    if (rc != SY_OK) {
        sy_buf_cleanup(&b);
        sy_api_error(out, rc == SY_ETOOBIG ? SY_EINTERNAL : SY_ENOMEM, NULL, NULL);
        return;
    }
    out->body = sy_buf_take(&b, &out->len);
    if (out->body == NULL) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        return;
    }
    out->status = 200;
    out->content_type = SY_METRICS_CONTENT_TYPE;
}

void sy_api_dashboard(const sy_api_in *in, sy_reply *out)
{
    (void)in;
    /* the page holds no data: everything it shows comes from the protected endpoints */
    out->body = malloc(SY_DASHBOARD_HTML_LEN);
    if (out->body == NULL) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        return;
    }
    memcpy(out->body, sy_dashboard_html, SY_DASHBOARD_HTML_LEN);
    out->len = SY_DASHBOARD_HTML_LEN;
    out->status = 200;
    out->content_type = "text/html; charset=utf-8";
}
