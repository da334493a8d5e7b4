/* batch: the Batches API (POST/GET /v1/batches, GET /v1/batches/{id}, POST .../cancel), the
 * batch object in the store, and the pure pieces (line checks, result lines, lifecycle). The
 * threads that validate, run and finalize batches are in batch_run.c.
 *
 * The design decision: the batch object is one JSON value updated only by compare-and-set, and
 * every status change goes through sy_batch_transition_ok, so concurrent writers (the API's
 * cancel, any instance's validator or sweeper) can never move a batch backwards or twice. */
#include "switchyard/batch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch_int.h"
#include "switchyard/api.h"
#include "switchyard/files.h"
#include "switchyard/json_util.h"
#include "switchyard/log.h"
#include "switchyard/util.h"

const char *const sy_batch_endpoints[] = {"/v1/chat/completions", "/v1/embeddings",
                                          "/v1/completions", NULL};

static bool fits(int k, size_t n) { return k > 0 && (size_t)k < n; }

bool bk_obj(char *buf, size_t n, const char *id) { return fits(snprintf(buf, n, "{b}:obj:%s", id), n); }
bool bk_cnt(char *buf, size_t n, const char *id) { return fits(snprintf(buf, n, "{b}:cnt:%s", id), n); }
bool bk_lease(char *buf, size_t n, const char *id)
{
    return fits(snprintf(buf, n, "{b}:lease:%s", id), n);
}
bool bk_enq(char *buf, size_t n, const char *id) { return fits(snprintf(buf, n, "{b}:enq:%s", id), n); }
bool bk_res(char *buf, size_t n, const char *id, long line)
{
    return fits(snprintf(buf, n, "{b}:res:%s:%ld", id, line), n);
}
bool bk_run(char *buf, size_t n, const char *id, long line)
{
    return fits(snprintf(buf, n, "{b}:run:%s:%ld", id, line), n);
}
bool bk_once(char *buf, size_t n, const char *id, long line)
{
    return fits(snprintf(buf, n, "{b}:once:%s:%ld", id, line), n);
}

/* ---- pure pieces ---------------------------------------------------------------------------- */

static json_t *line_error(const char *code, const char *message, const char *param, long line)
{
    return json_pack("{s:s, s:s, s:o, s:o}", "code", code, "message", message, "param",
                     param != NULL ? json_string(param) : json_null(), "line",
                     line > 0 ? json_integer(line) : json_null());
}

bool sy_batch_parse_line(const char *s, size_t len, long line, const char *endpoint,
                         int max_depth, sy_batch_line *out, json_t **err)
{
    char msg[320];
    json_t *j = NULL;

    memset(out, 0, sizeof(*out));
    *err = NULL;
    if (sy_json_check_depth(s, len, max_depth) != SY_OK ||
        (j = json_loadb(s, len, JSON_REJECT_DUPLICATES, NULL)) == NULL) {
        snprintf(msg, sizeof(msg), "Line %ld is not valid JSON.", line);
        *err = line_error("invalid_json_line", msg, NULL, line);
        return false;
    }
    if (!json_is_object(j)) {
        snprintf(msg, sizeof(msg), "Line %ld is not a JSON object.", line);
        *err = line_error("invalid_json_line", msg, NULL, line);
        goto fail;
    }
    json_t *cid = json_object_get(j, "custom_id");
    if (!json_is_string(cid) || json_string_length(cid) == 0) {
        snprintf(msg, sizeof(msg), "Line %ld: missing or empty 'custom_id' (a string).", line);
        *err = line_error("missing_custom_id", msg, "custom_id", line);
        goto fail;
    }
    if (json_string_length(cid) > SY_BATCH_CUSTOM_ID_MAX ||
        memchr(json_string_value(cid), '\0', json_string_length(cid)) != NULL) {
        snprintf(msg, sizeof(msg), "Line %ld: 'custom_id' is longer than %d bytes.", line,
                 SY_BATCH_CUSTOM_ID_MAX);
        *err = line_error("invalid_custom_id", msg, "custom_id", line);
        goto fail;
    }
    const char *method = json_string_value(json_object_get(j, "method"));
    if (method == NULL || strcmp(method, "POST") != 0) {
        snprintf(msg, sizeof(msg), "Line %ld: 'method' must be 'POST'.", line);
        *err = line_error("invalid_method", msg, "method", line);
        goto fail;
    }
    const char *url = json_string_value(json_object_get(j, "url"));
    if (url == NULL || strcmp(url, endpoint) != 0) {
        snprintf(msg, sizeof(msg),
                 "Line %ld: 'url' must be the batch's endpoint '%s' (got '%.100s').", line,
                 endpoint, url != NULL ? url : "");
        *err = line_error("invalid_url", msg, "url", line);
        goto fail;
    }
    json_t *body = json_object_get(j, "body");
    if (!json_is_object(body)) {
        snprintf(msg, sizeof(msg), "Line %ld: 'body' must be a JSON object.", line);
        *err = line_error("invalid_body", msg, "body", line);
        goto fail;
    }
    memcpy(out->custom_id, json_string_value(cid), json_string_length(cid) + 1);
    out->body = json_incref(body);
    json_decref(j);
    return true;
fail:
    json_decref(j);
    return false;
}

/* A line reader over a file descriptor with a bounded buffer. */
typedef struct linerd {
    int fd;
    char *buf;
    size_t cap, len, pos;
    bool eof;
    long lineno;
    size_t max_line;
} linerd;

static int linerd_init(linerd *r, int fd, size_t max_line)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->max_line = max_line;
    r->cap = max_line + 65536;
    r->buf = malloc(r->cap);
    return r->buf != NULL ? 0 : -1;
}

static void linerd_cleanup(linerd *r) { free(r->buf); }

/* 1: a line in [*s, *s + *n) (too_long: longer than max_line, content dropped); 0: end;
 * -1: read error. */
static int linerd_next(linerd *r, const char **s, size_t *n, bool *too_long)
{
    bool skipping = false;
    *too_long = false;
    for (;;) {
        char *nl = r->pos < r->len ? memchr(r->buf + r->pos, '\n', r->len - r->pos) : NULL;
        if (nl != NULL || (r->eof && r->pos < r->len)) {
            size_t end = nl != NULL ? (size_t)(nl - r->buf) : r->len;
            *s = r->buf + r->pos;
            *n = end - r->pos;
            r->pos = nl != NULL ? end + 1 : end;
            r->lineno++;
            if (skipping) {
                *too_long = true;
                *n = 0;
            }
            if (*n > r->max_line) {
                *too_long = true;
                *n = 0;
            }
            if (*n > 0 && (*s)[*n - 1] == '\r')
                (*n)--;
            return 1;
        }
        if (r->eof)
            return 0;
        if (r->pos > 0) {
            memmove(r->buf, r->buf + r->pos, r->len - r->pos);
            r->len -= r->pos;
            r->pos = 0;
        }
        if (r->len == r->cap) { /* a line longer than the buffer: drop what we have */
            skipping = true;
            r->len = 0;
        }
        ssize_t k = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            r->eof = true;
        r->len += (size_t)k;
    }
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

sy_err sy_batch_validate_fd(int fd, const char *endpoint, size_t max_lines, size_t max_line_bytes,
                            int max_depth, size_t *nlines, long *last_line, json_t **errors)
{
    linerd r;
    json_t *seen = json_object(), *errs = json_array();
    size_t count = 0;
    long last = 0;
    sy_err rc = SY_ENOMEM;
    const char *s;
    size_t n;
    bool too_long;
    int k;

    *errors = NULL;
    if (seen == NULL || errs == NULL || linerd_init(&r, fd, max_line_bytes) != 0) {
        json_decref(seen);
        json_decref(errs);
        return SY_ENOMEM;
    }
    char msg[200];
    while ((k = linerd_next(&r, &s, &n, &too_long)) == 1) {
        json_t *e = NULL;
        if (too_long) {
            snprintf(msg, sizeof(msg), "Line %ld is longer than %zu bytes.", r.lineno,
                     max_line_bytes);
            e = line_error("line_too_long", msg, NULL, r.lineno);
        } else if (blank(s, n)) {
            continue;
        } else {
            sy_batch_line bl;
            if (sy_batch_parse_line(s, n, r.lineno, endpoint, max_depth, &bl, &e)) {
                json_decref(bl.body);
                if (json_object_get(seen, bl.custom_id) != NULL) {
                    snprintf(msg, sizeof(msg), "Line %ld: duplicate custom_id '%.100s'.",
                             r.lineno, bl.custom_id);
                    e = line_error("duplicate_custom_id", msg, "custom_id", r.lineno);
                } else if (json_object_set_new(seen, bl.custom_id, json_true()) != 0) {
                    goto out;
                }
            }
        }
        count++;
        last = r.lineno;
        if (count == max_lines + 1) {
            snprintf(msg, sizeof(msg), "The input file has more than %zu requests.", max_lines);
            json_t *t = line_error("too_many_requests", msg, NULL, r.lineno);
            if (t != NULL && json_array_size(errs) < SY_BATCH_MAX_ERRORS)
                json_array_append_new(errs, t);
            else
                json_decref(t);
            json_decref(e);
            break;
        }
        if (e != NULL) {
            if (json_array_size(errs) < SY_BATCH_MAX_ERRORS)
                json_array_append_new(errs, e);
            else
                json_decref(e);
        }
    }
    if (k < 0) {
        rc = SY_EINTERNAL;
        goto out;
    }
    if (count == 0 && json_array_size(errs) == 0) {
        json_t *e = line_error("empty_file", "The input file has no requests.", NULL, 0);
        if (e != NULL)
            json_array_append_new(errs, e);
    }
    if (json_array_size(errs) > 0) {
        *errors = json_pack("{s:s, s:O}", "object", "list", "data", errs);
        rc = *errors != NULL ? SY_EINVAL : SY_ENOMEM;
        goto out;
    }
    *nlines = count;
    *last_line = last;
    rc = SY_OK;
out:
    linerd_cleanup(&r);
    json_decref(seen);
    json_decref(errs);
    return rc;
}

char *sy_batch_result_line(const char *custom_id, int status, const char *request_id,
                           const char *resp, size_t resp_len, const char *code,
                           const char *message, size_t *len)
{
    char id[48];
    json_t *line = NULL;
    if (!sy_rand_id(id, sizeof(id), "batch_req_", 32, SY_ID_HEX))
        return NULL;
    if (status > 0) {
        json_t *body = resp != NULL && resp_len > 0 ? json_loadb(resp, resp_len, 0, NULL) : NULL;
        if (body == NULL)
            body = resp != NULL ? json_stringn_nocheck(resp, resp_len) : json_object();
        line = json_pack("{s:s, s:s, s:{s:i, s:s, s:o}, s:n}", "id", id, "custom_id", custom_id,
                         "response", "status_code", status, "request_id",
                         request_id != NULL ? request_id : "", "body", body, "error");
    } else {
        line = json_pack("{s:s, s:s, s:n, s:{s:s, s:s}}", "id", id, "custom_id", custom_id,
                         "response", "error", "code", code != NULL ? code : "request_failed",
                         "message", message != NULL ? message : "the request failed");
    }
    if (line == NULL)
        return NULL;
    char *out = sy_json_dump(line, len);
    json_decref(line);
    return out;
}

/* The lifecycle: validating -> in_progress | failed | cancelling; in_progress -> finalizing |
 * cancelling | expired; finalizing -> completed | expired | cancelled (a finalization that
 * ends an expired or cancelled batch); cancelling -> cancelled. */
bool sy_batch_transition_ok(const char *from, const char *to)
{
    static const char *const moves[][2] = {
        {"validating", "in_progress"}, {"validating", "failed"},
        {"validating", "cancelling"},  {"in_progress", "finalizing"},
        {"in_progress", "cancelling"}, {"in_progress", "expired"},
        {"finalizing", "completed"},   {"finalizing", "expired"},
        {"cancelling", "cancelled"},
    };
    if (from == NULL || to == NULL)
        return false;
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++)
        if (strcmp(moves[i][0], from) == 0 && strcmp(moves[i][1], to) == 0)
            return true;
    return false;
}

bool bstatus_terminal(const char *st)
{
    return st != NULL && (strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0 ||
                          strcmp(st, "expired") == 0 || strcmp(st, "cancelled") == 0);
}

/* ---- the object in the store ---------------------------------------------------------------- */

sy_err bobj_get(sy_store *s, const char *id, json_t **obj)
{
    char key[SY_STORE_KEY_MAX];
    sy_buf v;
    if (!bk_obj(key, sizeof(key), id))
        return SY_ENOTFOUND;
    sy_buf_init(&v, 1u << 20);
    sy_err rc = sy_store_get(s, key, &v);
    if (rc == SY_OK) {
        *obj = json_loadb(v.data != NULL ? v.data : "", v.len, 0, NULL);
        if (*obj == NULL || !json_is_object(*obj)) {
            json_decref(*obj);
            rc = SY_EINTERNAL;
        }
    }
    sy_buf_cleanup(&v);
    return rc;
}

sy_err bobj_update(sy_store *s, const char *id, bobj_fn fn, void *ud, json_t **out)
{
    char key[SY_STORE_KEY_MAX];
    if (!bk_obj(key, sizeof(key), id))
        return SY_ENOTFOUND;
    for (int tries = 0; tries < 50; tries++) {
        sy_buf cur;
        sy_buf_init(&cur, 1u << 20);
        sy_err rc = sy_store_get(s, key, &cur);
        if (rc != SY_OK) {
            sy_buf_cleanup(&cur);
            return rc;
        }
        json_t *obj = json_loadb(cur.data != NULL ? cur.data : "", cur.len, 0, NULL);
        if (obj == NULL) {
            sy_buf_cleanup(&cur);
            return SY_EINTERNAL;
        }
        int w = fn(obj, ud);
        if (w <= 0) {
            sy_buf_cleanup(&cur);
            if (out != NULL)
                *out = obj;
            else
                json_decref(obj);
            return w == 0 ? SY_OK : SY_EINVAL;
        }
        size_t len;
        char *text = sy_json_dump(obj, &len);
        if (text == NULL) {
            sy_buf_cleanup(&cur);
            json_decref(obj);
            return SY_ENOMEM;
        }
        sy_store_cas_req req = {.expect_mode = SY_CAS_EQUAL, .expect = cur.data,
                                .expect_len = cur.len, .value = text, .value_len = len};
        bool swapped = false;
        rc = sy_store_cas(s, key, &req, &swapped, NULL);
        free(text);
        sy_buf_cleanup(&cur);
        if (rc != SY_OK || swapped) {
            if (rc == SY_OK && out != NULL)
                *out = obj;
            else
                json_decref(obj);
            return rc;
        }
        json_decref(obj); /* changed under us: read again */
    }
    return SY_ETIMEOUT;
}

typedef struct trans {
    const char *from, *to;
    json_t *set;
    bool moved;
} trans;

static int do_transition(json_t *obj, void *ud)
{
    trans *t = ud;
    const char *st = json_string_value(json_object_get(obj, "status"));
    if (st == NULL || (t->from != NULL && strcmp(st, t->from) != 0) ||
        !sy_batch_transition_ok(st, t->to))
        return 0;
    char field[40];
    snprintf(field, sizeof(field), "%s_at", t->to);
    json_object_set_new(obj, "status", json_string(t->to));
    json_object_set_new(obj, field, json_integer(sy_wall_ms() / 1000));
    if (t->set != NULL)
        json_object_update(obj, t->set);
    t->moved = true;
    return 1;
}

sy_err bobj_transition(sy_store *s, const char *id, const char *from, const char *to,
                       json_t *set, bool *moved, json_t **out)
{
    trans t = {.from = from, .to = to, .set = set};
    sy_err rc = bobj_update(s, id, do_transition, &t, out);
    if (moved != NULL)
        *moved = rc == SY_OK && t.moved;
    return rc;
}

json_t *bobj_public(sy_store *s, const json_t *obj)
{
    json_t *o = json_deep_copy(obj);
    if (o == NULL)
        return NULL;
    const char *id = json_string_value(json_object_get(obj, "id"));
    char key[SY_STORE_KEY_MAX];
    int64_t completed = 0, failed = 0, in = 0, cached = 0, outp = 0, reasoning = 0;
    sy_store_kvs kv;
    sy_store_kvs_init(&kv);
    if (id != NULL && bk_cnt(key, sizeof(key), id) && sy_store_hgetall(s, key, &kv) == SY_OK) {
        for (size_t i = 0; i < kv.n; i++) {
            int64_t v = strtoll(kv.items[i].value, NULL, 10);
            const char *f = kv.items[i].name;
            if (strcmp(f, "completed") == 0)
                completed = v;
            else if (strcmp(f, "failed") == 0)
                failed = v;
            else if (strcmp(f, "in") == 0)
                in = v;
            else if (strcmp(f, "cached") == 0)
                cached = v;
            else if (strcmp(f, "out") == 0)
                outp = v;
            else if (strcmp(f, "reasoning") == 0)
                reasoning = v;
        }
    }
    sy_store_kvs_cleanup(&kv);
    json_t *total = json_object_get(json_object_get(obj, "request_counts"), "total");
    json_object_set_new(o, "request_counts",
                        json_pack("{s:I, s:I, s:I}", "total",
                                  (json_int_t)(json_is_integer(total) ? json_integer_value(total)
                                                                      : 0),
                                  "completed", (json_int_t)completed, "failed", (json_int_t)failed));
    json_object_set_new(o, "usage",
                        json_pack("{s:I, s:{s:I}, s:I, s:{s:I}, s:I}", "input_tokens",
                                  (json_int_t)in, "input_tokens_details", "cached_tokens",
                                  (json_int_t)cached, "output_tokens", (json_int_t)outp,
                                  "output_tokens_details", "reasoning_tokens",
                                  (json_int_t)reasoning, "total_tokens", (json_int_t)(in + outp)));
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(o, tmp, k, v)
    {
        if (strncmp(k, "sy_", 3) == 0)
            json_object_del(o, k);
    }
    return o;
}

void bobj_retire(sy_store *s, const char *id, const char *status)
{
    int64_t v = 0;
    if (sy_store_hincrby(s, B_ACTIVE, id, 0, &v) == SY_OK && v > 0 &&
        sy_store_hincrby(s, B_ACTIVE, id, -v, &v) == SY_OK && v == 0)
        (void)sy_store_hincrby(s, B_STATS, status, 1, NULL);
}

/* ---- the API ------------------------------------------------------------------------------- */

#define api_msg(out, e, param, ...)                                                        \
    do {                                                                                       \
        char msg_[400];                                                                        \
        snprintf(msg_, sizeof(msg_), __VA_ARGS__);                                             \
        sy_api_error((out), (e), msg_, (param));                                               \
    } while (0)

static bool valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n < 7 || n > 64 || strncmp(id, "batch_", 6) != 0)
        return false;
    for (size_t i = 6; i < n; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Whether the stored batch <obj> is visible in <scope>. */
static bool in_scope(const json_t *obj, const char *scope)
{
    const char *t = json_string_value(json_object_get(obj, "sy_tenant"));
    return scope == NULL || strcmp(scope, t != NULL ? t : "") == 0;
}

/* bobj_get for a caller in <scope>: another tenant's batch is SY_ENOTFOUND, the same answer as
 * an unknown id. */
static sy_err scoped_get(sy_store *s, const char *scope, const char *id, json_t **obj)
{
    json_t *o = NULL;
    sy_err rc = valid_id(id) ? bobj_get(s, id, &o) : SY_ENOTFOUND;
    if (rc == SY_OK && !in_scope(o, scope)) {
        json_decref(o);
        return SY_ENOTFOUND;
    }
    if (rc == SY_OK)
        *obj = o;
    return rc;
}

/* The index of <tenant>'s batches ("" = created without a bearer). */
static bool tidx_key(char *buf, size_t n, const char *tenant)
{
    return fits(snprintf(buf, n, B_TIDX "%s", tenant[0] != '\0' ? tenant : "-"), n);
}

static sy_err tidx_add(sy_store *s, const char *tenant, const char *id, int64_t ms)
{
    char key[SY_STORE_KEY_MAX], v[24];
    if (!tidx_key(key, sizeof(key), tenant))
        return SY_ETOOBIG;
    snprintf(v, sizeof(v), "%lld", (long long)ms);
    return sy_store_hset(s, key, id, v, strlen(v), 0, NULL);
}

/* Batches created before the per-tenant indexes existed are only in B_INDEX: the first tenant
 * listing of the store (any instance) copies each into its tenant's index, then writes
 * B_TIDX_READY, so this costs one read of every batch once per store and one EXISTS per
 * process after. A create racing with it writes both indexes itself; a failure leaves the
 * marker unwritten and the next listing starts over (the copies are idempotent). */
static sy_err tidx_ensure(sy_batch *b)
{
    bool ready = false;
    size_t moved = 0;
    if (atomic_load(&b->tidx_ready))
        return SY_OK;
    sy_err rc = sy_store_exists(b->store, B_TIDX_READY, &ready);
    if (rc != SY_OK || ready)
        goto out;
    sy_store_kvs kv;
    sy_store_kvs_init(&kv);
    rc = sy_store_hgetall(b->store, B_INDEX, &kv);
    for (size_t i = 0; rc == SY_OK && i < kv.n; i++) {
        json_t *obj = NULL;
        rc = bobj_get(b->store, kv.items[i].name, &obj);
        if (rc == SY_ENOTFOUND) { /* an index entry of a create that failed half-way */
            rc = SY_OK;
            continue;
        }
        if (rc != SY_OK)
            break;
        const char *t = json_string_value(json_object_get(obj, "sy_tenant"));
        rc = tidx_add(b->store, t != NULL ? t : "", kv.items[i].name,
                      strtoll(kv.items[i].value, NULL, 10));
        json_decref(obj);
        moved++;
    }
    sy_store_kvs_cleanup(&kv);
    if (rc == SY_OK)
        rc = sy_store_set(b->store, B_TIDX_READY, "1", 1, 0, 0, NULL);
    if (rc == SY_OK)
        sy_log(SY_LOG_INFO, NULL, "batch: %zu stored batches added to per-tenant indexes", moved);
out:
    if (rc == SY_OK)
        atomic_store(&b->tidx_ready, true);
    return rc;
}

static void store_error(sy_reply *out, sy_err rc)
{
    sy_log(SY_LOG_WARN, NULL, "batch: store call failed (%s)", sy_err_name(rc));
    sy_api_error(out, SY_EUNAVAIL, "the batch store is unavailable; retry shortly", NULL);
}

static void reply_obj(sy_reply *out, sy_store *s, const json_t *obj)
{
    json_t *pub = bobj_public(s, obj);
    if (pub == NULL) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        return;
    }
    sy_api_json(out, 200, pub);
}

static bool check_metadata(const json_t *md, sy_reply *out)
{
    if (md == NULL || json_is_null(md))
        return true;
    if (!json_is_object(md) || json_object_size(md) > 16) {
        sy_api_error(out, SY_EINVAL,
                     "Invalid 'metadata': expected an object of at most 16 string pairs.",
                     "metadata");
        return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)md, k, v)
    {
        if (strlen(k) > 64 || !json_is_string(v) || json_string_length(v) > 512) {
            sy_api_error(out, SY_EINVAL,
                         "Invalid 'metadata': keys are strings of at most 64 characters and "
                         "values strings of at most 512.",
                         "metadata");
            return false;
        }
    }
    return true;
}

static void create(const sy_api_in *in, sy_batch *b, sy_reply *out)
{
    char msg[300];
    json_t *body = NULL, *file = NULL, *obj = NULL;

    if (in->too_big) {
        sy_api_error(out, SY_ETOOBIG, NULL, NULL);
        return;
    }
    sy_err rc = sy_json_parse_body(in->body, in->len, in->cfg->max_json_depth, &body, msg,
                                   sizeof(msg));
    if (rc != SY_OK) {
        sy_api_error(out, rc, msg, NULL);
        return;
    }
    const char *fid = json_string_value(json_object_get(body, "input_file_id"));
    const char *ep = json_string_value(json_object_get(body, "endpoint"));
    const char *win = json_string_value(json_object_get(body, "completion_window"));
    json_t *md = json_object_get(body, "metadata");
    if (fid == NULL || fid[0] == '\0') {
        sy_api_error(out, SY_EINVAL, "Missing required parameter: 'input_file_id'.",
                     "input_file_id");
        goto out;
    }
    if (ep == NULL) {
        sy_api_error(out, SY_EINVAL, "Missing required parameter: 'endpoint'.", "endpoint");
        goto out;
    }
    bool known = false;
    for (size_t i = 0; sy_batch_endpoints[i] != NULL; i++)
        known = known || strcmp(sy_batch_endpoints[i], ep) == 0;
    if (!known) {
        api_msg(out, SY_EINVAL, "endpoint",
                "Invalid value for 'endpoint': '%.100s'. Supported: /v1/chat/completions, "
                "/v1/embeddings, /v1/completions.",
                ep);
        goto out;
    }
    if (win == NULL) {
        sy_api_error(out, SY_EINVAL, "Missing required parameter: 'completion_window'.",
                     "completion_window");
        goto out;
    }
    if (strcmp(win, "24h") != 0) {
        api_msg(out, SY_EINVAL, "completion_window",
                "Invalid value for 'completion_window': '%.50s'. Supported: 24h.", win);
        goto out;
    }
    if (!check_metadata(md, out))
        goto out;
    if (in->files == NULL) {
        sy_api_error(out, SY_EUNAVAIL, "the Files API is not available", NULL);
        goto out;
    }
    char sbuf[SY_TENANT_MAX];
    /* only the caller's own files (another tenant's is "No such file", as OpenAI answers) */
    rc = sy_files_get(in->files, sy_api_scope(in, sbuf, sizeof(sbuf)), fid, &file);
    if (rc == SY_ENOTFOUND) {
        api_msg(out, SY_EINVAL, "input_file_id", "No such file: '%.100s'.", fid);
        goto out;
    }
    if (rc != SY_OK) {
        store_error(out, rc);
        goto out;
    }
    const char *purpose = json_string_value(json_object_get(file, "purpose"));
    if (purpose == NULL || strcmp(purpose, "batch") != 0) {
        api_msg(out, SY_EINVAL, "input_file_id",
                "File '%.100s' was not uploaded with purpose 'batch'.", fid);
        goto out;
    }

    char id[48];
    if (!sy_rand_id(id, sizeof(id), "batch_", 24, SY_ID_HEX)) {
        sy_api_error(out, SY_EINTERNAL, "no random bytes for a batch id", NULL);
        goto out;
    }
    int64_t now_ms = sy_wall_ms(), now = now_ms / 1000;
    char tenant[SY_TENANT_MAX];
    const char *t = sy_api_tenant(in->authorization, tenant, sizeof(tenant));
    obj = json_pack("{s:s, s:s, s:s, s:n, s:s, s:s, s:s, s:n, s:n, s:I, s:n, s:I, s:n, s:n, "
                    "s:n, s:n, s:n, s:n, s:{s:i, s:i, s:i}, s:O, s:s}",
                    "id", id, "object", "batch", "endpoint", ep, "errors", "input_file_id", fid,
                    "completion_window", win, "status", "validating", "output_file_id",
                    "error_file_id", "created_at", (json_int_t)now, "in_progress_at",
                    "expires_at", (json_int_t)(now + b->cfg->batch_window_s), "finalizing_at",
                    "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at",
                    "request_counts", "total", 0, "completed", 0, "failed", 0, "metadata",
                    md != NULL ? md : json_null(), "sy_tenant", t != NULL ? t : "");
    if (obj == NULL) {
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        goto out;
    }
    char key[SY_STORE_KEY_MAX];
    size_t len;
    char *text = sy_json_dump(obj, &len);
    if (text == NULL || !bk_obj(key, sizeof(key), id)) {
        free(text);
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        goto out;
    }
    rc = sy_store_set(b->store, key, text, len, 0, SY_STORE_NX, NULL);
    free(text);
    if (rc == SY_OK)
        rc = sy_store_hincrby(b->store, B_INDEX, id, now_ms, NULL);
    if (rc == SY_OK)
        rc = tidx_add(b->store, t != NULL ? t : "", id, now_ms);
    if (rc == SY_OK)
        rc = sy_store_hincrby(b->store, B_ACTIVE, id, 1, NULL);
    if (rc != SY_OK) {
        store_error(out, rc);
        goto out;
    }
    sy_log(SY_LOG_INFO, NULL, "batch %s created: input %s endpoint %s", id, fid, ep);
    brun_kick(b);
    reply_obj(out, b->store, obj);
out:
    json_decref(body);
    json_decref(file);
    json_decref(obj);
}

/* The batch <id> visible in <scope> (new reference), or NULL with the error reply written. */
static json_t *get_or_reply(sy_batch *b, const char *scope, const char *id, sy_reply *out)
{
    json_t *obj = NULL;
    sy_err rc = scoped_get(b->store, scope, id, &obj);
    if (rc == SY_ENOTFOUND)
        api_msg(out, SY_ENOTFOUND, NULL, "No batch found with id '%.100s'.", id);
    else if (rc != SY_OK)
        store_error(out, rc);
    return rc == SY_OK ? obj : NULL;
}

static void retrieve(sy_batch *b, const char *scope, const char *id, sy_reply *out)
{
    json_t *obj = get_or_reply(b, scope, id, out);
    if (obj == NULL)
        return;
    reply_obj(out, b->store, obj);
    json_decref(obj);
}

static void cancel(sy_batch *b, const char *scope, const char *id, sy_reply *out)
{
    json_t *obj = get_or_reply(b, scope, id, out);
    if (obj == NULL)
        return;
    json_decref(obj);
    obj = NULL;
    bool moved = false;
    sy_err rc = bobj_transition(b->store, id, NULL, "cancelling", NULL, &moved, &obj);
    if (rc != SY_OK) {
        store_error(out, rc);
        return;
    }
    const char *st = json_string_value(json_object_get(obj, "status"));
    if (!moved && st != NULL && strcmp(st, "cancelling") != 0 && strcmp(st, "cancelled") != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "Cannot cancel a batch with status '%s'.", st);
        out->status = 409;
        out->body = sy_err_body_raw("invalid_request_error", "batch_not_cancellable", NULL, msg,
                                    &out->len);
        json_decref(obj);
        return;
    }
    if (moved)
        sy_log(SY_LOG_INFO, NULL, "batch %s cancelling", id);
    reply_obj(out, b->store, obj);
    json_decref(obj);
}

typedef struct idx_item {
    char *id;
    int64_t ms;
} idx_item;

static int idx_cmp(const void *a, const void *b)
{
    const idx_item *x = a, *y = b;
    if (x->ms != y->ms)
        return x->ms < y->ms ? 1 : -1; /* newest first */
    return strcmp(y->id, x->id);
}

/* A page costs one read of the caller's index (every batch's with the master key, else its
 * tenant's) plus two calls per batch shown (the object and its counts): never a read of a
 * batch that is not shown. Batch objects are never deleted, so every entry of an index is a
 * visible batch and has_more needs no read-ahead. */
static void list(const sy_api_in *in, sy_batch *b, sy_reply *out)
{
    const char *lim = in->get_arg != NULL ? in->get_arg(in->hctx, "limit") : NULL;
    const char *after = in->get_arg != NULL ? in->get_arg(in->hctx, "after") : NULL;
    long limit = 20;
    if (lim != NULL) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*lim == '\0' || *end != '\0' || limit < 1 || limit > 100) {
            sy_api_error(out, SY_EINVAL, "Invalid 'limit': expected an integer in 1..100.",
                         "limit");
            return;
        }
    }
    char sbuf[SY_TENANT_MAX], key[SY_STORE_KEY_MAX];
    const char *scope = sy_api_scope(in, sbuf, sizeof(sbuf)), *index = B_INDEX;
    sy_err rc = SY_OK;
    if (scope != NULL) {
        rc = tidx_key(key, sizeof(key), scope) ? tidx_ensure(b) : SY_ETOOBIG;
        index = key;
    }
    sy_store_kvs kv;
    sy_store_kvs_init(&kv);
    if (rc == SY_OK)
        rc = sy_store_hgetall(b->store, index, &kv);
    if (rc != SY_OK) {
        sy_store_kvs_cleanup(&kv);
        store_error(out, rc);
        return;
    }
    idx_item *items = calloc(kv.n + 1, sizeof(*items));
    json_t *data = json_array();
    if (items == NULL || data == NULL) {
        free(items);
        json_decref(data);
        sy_store_kvs_cleanup(&kv);
        sy_api_error(out, SY_ENOMEM, NULL, NULL);
        return;
    }
    for (size_t i = 0; i < kv.n; i++) {
        items[i].id = kv.items[i].name;
        items[i].ms = strtoll(kv.items[i].value, NULL, 10);
    }
    qsort(items, kv.n, sizeof(*items), idx_cmp);
    size_t start = 0;
    if (after != NULL) {
        /* not in the caller's index (another tenant's batch, unknown): an empty page */
        start = kv.n;
        for (size_t i = 0; i < kv.n; i++)
            if (strcmp(items[i].id, after) == 0) {
                start = i + 1;
                break;
            }
    }
    bool more = false;
    for (size_t i = start; i < kv.n; i++) {
        if (json_array_size(data) == (size_t)limit) {
            more = true;
            break;
        }
        json_t *obj = NULL;
        if (bobj_get(b->store, items[i].id, &obj) != SY_OK)
            continue;
        if (!in_scope(obj, scope)) { /* never for an entry of the right index */
            json_decref(obj);
            continue;
        }
        json_t *pub = bobj_public(b->store, obj);
        json_decref(obj);
        if (pub != NULL)
            json_array_append_new(data, pub);
    }
    size_t n = json_array_size(data);
    json_t *res = json_pack(
        "{s:s, s:o, s:o, s:o, s:b}", "object", "list", "data", data, "first_id",
        n > 0 ? json_incref(json_object_get(json_array_get(data, 0), "id")) : json_null(),
        "last_id",
        n > 0 ? json_incref(json_object_get(json_array_get(data, n - 1), "id")) : json_null(),
        "has_more", more);
    free(items);
    sy_store_kvs_cleanup(&kv);
    sy_api_json(out, 200, res);
}

void sy_api_batches(const sy_api_in *in, sy_reply *out)
{
    const char *path = in->path;
    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/')
        plen--;
    sy_batch *b = in->batch;
    if (b == NULL) {
        sy_api_error(out, SY_EUNAVAIL, "the Batches API is not available", NULL);
        return;
    }
    const char *m = in->method;
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
    bool post = strcmp(m, "POST") == 0;
    char id[80], sbuf[SY_TENANT_MAX];
    if (plen == 11) { /* /v1/batches */
        if (post)
            create(in, b, out);
        else if (get)
            list(in, b, out);
        else {
            out->allow = "GET, POST";
            api_msg(out, SY_EMETHOD, NULL, "method %s is not allowed on /v1/batches", m);
        }
        return;
    }
    const char *rest = path + 12; /* after "/v1/batches/" */
    size_t rlen = plen - 12;
    const char *slash = memchr(rest, '/', rlen);
    size_t idlen = slash != NULL ? (size_t)(slash - rest) : rlen;
    if (path[11] != '/' || idlen == 0 || idlen >= sizeof(id)) {
        sy_api_error(out, SY_ENOTFOUND, "unknown path", NULL);
        return;
    }
    memcpy(id, rest, idlen);
    id[idlen] = '\0';
    if (slash == NULL) {
        if (!get) {
            out->allow = "GET";
            api_msg(out, SY_EMETHOD, NULL, "method %s is not allowed on /v1/batches/{id}", m);
            return;
        }
        retrieve(b, sy_api_scope(in, sbuf, sizeof(sbuf)), id, out);
        return;
    }
    if ((size_t)(rest + rlen - slash) == 7 && strncmp(slash, "/cancel", 7) == 0) {
        if (!post) {
            out->allow = "POST";
            api_msg(out, SY_EMETHOD, NULL,
                    "method %s is not allowed on /v1/batches/{id}/cancel", m);
            return;
        }
        cancel(b, sy_api_scope(in, sbuf, sizeof(sbuf)), id, out);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof(msg), "unknown path %.150s", path);
    sy_api_error(out, SY_ENOTFOUND, msg, NULL);
}
