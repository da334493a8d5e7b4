/*
 * fake_upstream: OpenAI's Files and Batches APIs, in memory, for the proxy's provider-batch
 * client (src/provider_batch.c).
 *
 * The one design decision: nothing runs in the background. A batch's state is computed when it
 * is retrieved: after `batch_polls` retrieves (and `batch_ms` since creation) the retrieve that
 * sees it due runs every line through fake_handle_line, exactly as the endpoint would answer the
 * line's body, writes the output and error files and answers "completed". So tests choose how
 * many polls a batch takes, and a line runs at most once (counted per custom_id in /_stats).
 * Also here: the per-custom_id run counters both batch APIs use.
 */
#include "fake.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LINE_ERRORS 100

/* ------------------------------------------------------------------ shared helpers --------- */

static pthread_mutex_t runs_mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *runs; /* {custom_id: times run} */

void fake_batch_line_ran(const char *custom_id)
{
    json_t *n;

    fake_stat_add(FAKE_STAT_batch_lines, 1);
    pthread_mutex_lock(&runs_mu);
    if (runs == NULL)
        runs = json_object();
    n = runs ? json_object_get(runs, custom_id) : NULL;
    if (n != NULL)
        json_integer_set(n, json_integer_value(n) + 1);
    else if (runs != NULL)
        json_object_set_new(runs, custom_id, json_integer(1));
    pthread_mutex_unlock(&runs_mu);
}

int fake_batch_stats(json_t *o)
{
    json_t *copy, *v;
    const char *k;
    long long dups = 0;
    int rc = -1;

    pthread_mutex_lock(&runs_mu);
    copy = runs != NULL ? json_deep_copy(runs) : json_object();
    pthread_mutex_unlock(&runs_mu);
    if (copy == NULL)
        return -1;
    json_object_foreach(copy, k, v)
    {
        if (json_integer_value(v) > 1)
            dups++;
    }
    if (json_object_set_new(o, "batch_line_runs", copy) == 0 &&
        json_object_set_new(o, "batch_line_dups", json_integer(dups)) == 0)
        rc = 0;
    return rc;
}

void fake_batch_stats_reset(void)
{
    pthread_mutex_lock(&runs_mu);
    json_decref(runs);
    runs = NULL;
    pthread_mutex_unlock(&runs_mu);
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* The part of <path> after the last occurrence of <seg> ("/files/"), or NULL. */
static const char *after(const char *path, size_t plen, const char *seg, size_t *rest)
{
    size_t k = strlen(seg);
    const char *found = NULL, *q = path, *end = path + plen;

    while (q < end) {
        const char *f = memmem(q, (size_t)(end - q), seg, k);
        if (f == NULL)
            break;
        found = f;
        q = f + 1;
    }
    if (found == NULL)
        return NULL;
    *rest = (size_t)(end - found - k);
    return found + k;
}

int fake_batch_kind(const char *path, size_t plen)
{
    size_t rest;

    if (ends_with(path, plen, "/messages/batches") ||
        after(path, plen, "/messages/batches/", &rest) != NULL)
        return 2;
    if (ends_with(path, plen, "/files") || after(path, plen, "/files/", &rest) != NULL ||
        ends_with(path, plen, "/batches") || after(path, plen, "/batches/", &rest) != NULL)
        return 1;
    return 0;
}

static atomic_ullong seq;

static void new_id(char *buf, size_t n, const char *prefix)
{
    snprintf(buf, n, "%sfake%llu", prefix,
             (unsigned long long)atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed) + 1);
}

static int err(fake_reply *r, int status, const char *msg)
{
    return fake_error_reply(r, false, status, msg) == 0 ? 1 : -1;
}

/* ------------------------------------------------------------------ files ------------------ */

typedef struct ofile {
    char id[48];
    char *filename;
    char purpose[32];
    fbuf data;
    long long created;
    struct ofile *next;
} ofile;

typedef struct obatch {
    char id[48];
    char input_file_id[48];
    char output_file_id[48];
    char error_file_id[48];
    char endpoint[64];
    json_t *metadata;
    json_t *errors; /* validation errors: {object: list, data: [...]}, or NULL */
    char status[16];
    fake_batch_opts opts;
    long polls;
    long cancel_polls; /* retrieves since the cancel */
    int64_t created_mono;
    long long created_at, in_progress_at, finalizing_at, completed_at, failed_at, expired_at,
        cancelling_at, cancelled_at;
    long total, completed, failed;
    struct obatch *next;
} obatch;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static ofile *files;
static obatch *batches;

static ofile *file_find(const char *id, size_t n)
{
    for (ofile *f = files; f != NULL; f = f->next)
        if (strlen(f->id) == n && memcmp(f->id, id, n) == 0)
            return f;
    return NULL;
}

static obatch *batch_find(const char *id, size_t n)
{
    for (obatch *b = batches; b != NULL; b = b->next)
        if (strlen(b->id) == n && memcmp(b->id, id, n) == 0)
            return b;
    return NULL;
}

/* A new file (linked into the list), or NULL. */
static ofile *file_add(const char *filename, const char *purpose, const char *data, size_t n)
{
    ofile *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    fbuf_init(&f->data);
    f->filename = strdup(filename);
    if (f->filename == NULL || fbuf_append(&f->data, data, n) != 0) {
        fbuf_cleanup(&f->data);
        free(f->filename);
        free(f);
        return NULL;
    }
    new_id(f->id, sizeof(f->id), "file-");
    snprintf(f->purpose, sizeof(f->purpose), "%s", purpose);
    f->created = (long long)time(NULL);
    f->next = files;
    files = f;
    return f;
}

static void file_unlink(ofile *f)
{
    for (ofile **pp = &files; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    fbuf_cleanup(&f->data);
    free(f->filename);
    free(f);
}

static json_t *file_json(const ofile *f)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:n}", "id", f->id, "object", "file", "bytes",
                     (json_int_t)f->data.len, "created_at", (json_int_t)f->created, "filename",
                     f->filename, "purpose", f->purpose, "status", "processed", "status_details");
}

/* Finds <name> = "..." in a Content-Disposition value; copies it (cut) to <out>. */
static bool disp_param(const char *h, size_t n, const char *name, char *out, size_t cap)
{
    char pat[32];
    const char *p, *q, *end = h + n;
    size_t k;

    snprintf(pat, sizeof(pat), " %s=\"", name);
    p = memmem(h, n, pat, strlen(pat));
    if (p == NULL) {
        snprintf(pat, sizeof(pat), ";%s=\"", name);
        p = memmem(h, n, pat, strlen(pat));
    }
    if (p == NULL)
        return false;
    p += strlen(pat);
    q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL)
        return false;
    k = (size_t)(q - p) < cap - 1 ? (size_t)(q - p) : cap - 1;
    memcpy(out, p, k);
    out[k] = '\0';
    return true;
}

/* POST /files: multipart/form-data with "purpose" and "file". */
static int file_upload(const fake_request *rq, fake_reply *r)
{
    size_t ctl = 0, dl;
    const char *ct = fake_header(rq, "content-type", &ctl), *b, *p, *end = rq->body + rq->body_len;
    char delim[256], purpose[32] = "", filename[256] = "upload.jsonl";
    const char *data = NULL;
    size_t data_len = 0;
    ofile *f;

    if (ct == NULL || (b = memmem(ct, ctl, "boundary=", 9)) == NULL)
        return err(r, 400, "fake: expected multipart/form-data with a boundary");
    b += 9;
    {
        size_t bl = (size_t)(ct + ctl - b);
        if (bl > 0 && *b == '"') {
            b++;
            bl = memchr(b, '"', bl - 1) ? (size_t)((const char *)memchr(b, '"', bl - 1) - b) : 0;
        } else {
            const char *semi = memchr(b, ';', bl);
            if (semi != NULL)
                bl = (size_t)(semi - b);
        }
        if (bl == 0 || bl > 200)
            return err(r, 400, "fake: bad multipart boundary");
        dl = (size_t)snprintf(delim, sizeof(delim), "\r\n--%.*s", (int)bl, b);
    }
    /* the first delimiter has no leading CRLF */
    p = memmem(rq->body, rq->body_len, delim + 2, dl - 2);
    while (p != NULL) {
        const char *hs, *he, *cs, *ce;
        char name[64] = "";
        p += (p == rq->body || p[0] != '\r') ? dl - 2 : dl;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break;
        hs = p + 2;
        if (hs > end || (he = memmem(hs, (size_t)(end - hs), "\r\n\r\n", 4)) == NULL)
            break;
        cs = he + 4;
        if ((ce = memmem(cs, (size_t)(end - cs), delim, dl)) == NULL)
            break;
        disp_param(hs, (size_t)(he - hs), "name", name, sizeof(name));
        if (strcmp(name, "purpose") == 0) {
            size_t k = (size_t)(ce - cs) < sizeof(purpose) - 1 ? (size_t)(ce - cs)
                                                               : sizeof(purpose) - 1;
            memcpy(purpose, cs, k);
            purpose[k] = '\0';
        } else if (strcmp(name, "file") == 0) {
            disp_param(hs, (size_t)(he - hs), "filename", filename, sizeof(filename));
            data = cs;
            data_len = (size_t)(ce - cs);
        }
        p = ce;
    }
    if (data == NULL)
        return err(r, 400, "fake: missing 'file' part");
    if (purpose[0] == '\0')
        return err(r, 400, "fake: missing 'purpose' part");
    f = file_add(filename, purpose, data, data_len);
    return f ? fake_json_reply(r, 200, file_json(f)) : -1;
}

/* ------------------------------------------------------------------ batches ---------------- */

static json_t *ts(long long t)
{
    return t ? json_integer((json_int_t)t) : json_null();
}

static json_t *batch_json(const obatch *b)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:O?,s:s,s:s,s:s,s:s?,s:s?,s:I,s:o,s:I}", "id", b->id,
                          "object", "batch", "endpoint", b->endpoint, "errors", b->errors,
                          "input_file_id", b->input_file_id, "completion_window", "24h", "status",
                          b->status, "output_file_id",
                          b->output_file_id[0] ? b->output_file_id : NULL, "error_file_id",
                          b->error_file_id[0] ? b->error_file_id : NULL, "created_at",
                          (json_int_t)b->created_at, "in_progress_at", ts(b->in_progress_at),
                          "expires_at", (json_int_t)(b->created_at + 86400));
    if (j == NULL)
        return NULL;
    if (json_object_set_new(j, "finalizing_at", ts(b->finalizing_at)) != 0 ||
        json_object_set_new(j, "completed_at", ts(b->completed_at)) != 0 ||
        json_object_set_new(j, "failed_at", ts(b->failed_at)) != 0 ||
        json_object_set_new(j, "expired_at", ts(b->expired_at)) != 0 ||
        json_object_set_new(j, "cancelling_at", ts(b->cancelling_at)) != 0 ||
        json_object_set_new(j, "cancelled_at", ts(b->cancelled_at)) != 0 ||
        json_object_set_new(j, "request_counts",
                            json_pack("{s:i,s:i,s:i}", "total", (int)b->total, "completed",
                                      (int)b->completed, "failed", (int)b->failed)) != 0 ||
        json_object_set(j, "metadata", b->metadata ? b->metadata : json_null()) != 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Appends one validation error. */
static void add_error(obatch *b, const char *code, const char *msg, long line)
{
    json_t *data;

    if (b->errors == NULL)
        b->errors = json_pack("{s:s,s:[]}", "object", "list", "data");
    data = json_object_get(b->errors, "data");
    if (data != NULL && json_array_size(data) < MAX_LINE_ERRORS)
        json_array_append_new(data, json_pack("{s:s,s:s,s:n,s:i}", "code", code, "message", msg,
                                              "param", "line", (int)line));
}

/* Calls <fn> for each non-empty line of <f> with its 1-based number. Stops when fn != 0. */
static int each_line(const ofile *f, int (*fn)(void *ud, const char *s, size_t n, long no),
                     void *ud)
{
    const char *p = f->data.p, *end = f->data.p + f->data.len;
    long no = 0;
    int rc = 0;

    while (p != NULL && p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        no++;
        if (n > 0 && p[n - 1] == '\r')
            n--;
        if (n > 0)
            rc = fn(ud, p, n, no);
        p = nl ? nl + 1 : end;
    }
    return rc;
}

typedef struct validate_ctx {
    obatch *b;
    json_t *seen;
} validate_ctx;

static int validate_line(void *ud, const char *s, size_t n, long no)
{
    validate_ctx *v = ud;
    json_t *j = json_loadb(s, n, 0, NULL);
    const char *cid = json_string_value(json_object_get(j, "custom_id"));
    const char *method = json_string_value(json_object_get(j, "method"));
    const char *url = json_string_value(json_object_get(j, "url"));

    if (!json_is_object(j))
        add_error(v->b, "invalid_json_line", "This line is not parseable as valid JSON.", no);
    else if (cid == NULL)
        add_error(v->b, "missing_required_parameter", "custom_id is required", no);
    else if (json_object_get(v->seen, cid) != NULL)
        add_error(v->b, "duplicate_custom_id", "The custom_id for this request is a duplicate.",
                  no);
    else if (method == NULL || strcmp(method, "POST") != 0)
        add_error(v->b, "invalid_method", "method must be POST", no);
    else if (url == NULL || strcmp(url, v->b->endpoint) != 0)
        add_error(v->b, "invalid_url", "The URL provided for this request does not match the "
                                       "batch endpoint.", no);
    else if (!json_is_object(json_object_get(j, "body")))
        add_error(v->b, "invalid_request", "body must be an object", no);
    else
        json_object_set_new(v->seen, cid, json_true());
    v->b->total++;
    json_decref(j);
    return 0;
}

static int batch_create(const fake_request *rq, const fake_batch_opts *o, fake_reply *r)
{
    json_t *root = json_loadb(rq->body, rq->body_len, 0, NULL);
    const char *fid = json_string_value(json_object_get(root, "input_file_id"));
    const char *ep = json_string_value(json_object_get(root, "endpoint"));
    const char *win = json_string_value(json_object_get(root, "completion_window"));
    json_t *meta = json_object_get(root, "metadata");
    ofile *f;
    obatch *b = NULL;
    validate_ctx v = {0};
    json_t *created;
    int rc;

    if (!json_is_object(root)) {
        rc = err(r, 400, "We could not parse the JSON body of your request.");
        goto out;
    }
    if (fid == NULL || ep == NULL || win == NULL || strcmp(win, "24h") != 0 ||
        (strcmp(ep, "/v1/chat/completions") != 0 && strcmp(ep, "/v1/completions") != 0 &&
         strcmp(ep, "/v1/embeddings") != 0)) {
        rc = err(r, 400, "fake: input_file_id, endpoint and completion_window '24h' required");
        goto out;
    }
    if ((f = file_find(fid, strlen(fid))) == NULL) {
        rc = err(r, 404, "fake: no such input file");
        goto out;
    }
    if (strcmp(f->purpose, "batch") != 0) {
        rc = err(r, 400, "fake: input file purpose must be 'batch'");
        goto out;
    }
    rc = -1;
    if ((b = calloc(1, sizeof(*b))) == NULL || (v.seen = json_object()) == NULL)
        goto out;
    new_id(b->id, sizeof(b->id), "batch_");
    snprintf(b->input_file_id, sizeof(b->input_file_id), "%s", fid);
    snprintf(b->endpoint, sizeof(b->endpoint), "%s", ep);
    snprintf(b->status, sizeof(b->status), "validating");
    b->metadata = json_is_object(meta) ? json_incref(meta) : NULL;
    b->opts = *o;
    b->created_mono = fake_mono_ms();
    b->created_at = (long long)time(NULL);
    v.b = b;
    each_line(f, validate_line, &v);
    if (b->total == 0)
        add_error(b, "empty_file", "The input file is empty.", 0);
    created = batch_json(b); /* answered as "validating", as OpenAI does */
    if (b->errors != NULL) {
        snprintf(b->status, sizeof(b->status), "failed");
        b->failed_at = b->created_at;
    } else {
        snprintf(b->status, sizeof(b->status), "in_progress");
        b->in_progress_at = b->created_at;
    }
    b->next = batches;
    batches = b;
    b = NULL;
    rc = fake_json_reply(r, 200, created);
out:
    if (b != NULL) {
        json_decref(b->metadata);
        json_decref(b->errors);
        free(b);
    }
    json_decref(v.seen);
    json_decref(root);
    return rc;
}

/* One output line: {"id","custom_id","response":{status_code,request_id,body}|null,"error"}. */
static int out_line(fbuf *o, const char *cid, int status, json_t *body, const char *ecode,
                    const char *emsg)
{
    char id[48], rid[48];
    json_t *j;

    new_id(id, sizeof(id), "batch_req_");
    new_id(rid, sizeof(rid), "req_");
    if (body != NULL)
        j = json_pack("{s:s,s:s,s:{s:i,s:s,s:O},s:n}", "id", id, "custom_id", cid, "response",
                      "status_code", status, "request_id", rid, "body", body, "error");
    else
        j = json_pack("{s:s,s:s,s:n,s:{s:s,s:s}}", "id", id, "custom_id", cid, "response",
                      "error", "code", ecode, "message", emsg);
    return fake_json_take(o, j) == 0 && fbuf_puts(o, "\n") == 0 ? 0 : -1;
}

typedef struct run_ctx {
    obatch *b;
    const fake_request *rq;
    fbuf out, errs;
    long index;
    bool cancelled;
    bool oom;
} run_ctx;

/* Runs one line (or expires / cancels it) and writes its result line. */
static int run_line(void *ud, const char *s, size_t n, long no)
{
    run_ctx *c = ud;
    json_t *j = json_loadb(s, n, 0, NULL), *body = NULL;
    const char *cid = json_string_value(json_object_get(j, "custom_id"));
    const char *url = json_string_value(json_object_get(j, "url"));
    char *text = NULL;
    fake_reply rep;
    int rc = -1;

    (void)no;
    fake_reply_init(&rep);
    if (cid == NULL || url == NULL) {
        rc = 0; /* validated at create: cannot happen */
        goto out;
    }
    if (c->cancelled && c->index >= c->b->opts.cancel_keep) {
        c->b->failed++;
        rc = out_line(&c->errs, cid, 0, NULL, "batch_cancelled",
                      "This request could not be executed before the batch was cancelled.");
        goto out;
    }
    if (c->b->opts.expire_after >= 0 && c->index >= c->b->opts.expire_after) {
        c->b->failed++;
        rc = out_line(&c->errs, cid, 0, NULL, "batch_expired",
                      "This request could not be executed before the completion window "
                      "expired.");
        goto out;
    }
    if ((text = json_dumps(json_object_get(j, "body"), JSON_COMPACT)) == NULL)
        goto out;
    {
        fake_request lr = {.method = "POST",
                           .method_len = 4,
                           .target = url,
                           .target_len = strlen(url),
                           .headers = c->rq->headers,
                           .headers_len = c->rq->headers_len,
                           .body = text,
                           .body_len = strlen(text),
                           .http_minor = 1};
        if (fake_handle_line(&lr, &rep) != 0)
            goto out;
    }
    fake_batch_line_ran(cid);
    if (rep.stream != NULL || rep.stall) {
        fake_reply_cleanup(&rep);
        fake_reply_init(&rep);
        if (fake_error_reply(&rep, false, 400, "fake: streams are not supported in batches") != 0)
            goto out;
    }
    body = json_loadb(rep.body.p ? rep.body.p : "", rep.body.len, 0, NULL);
    if (body == NULL)
        body = json_stringn_nocheck(rep.body.p ? rep.body.p : "", rep.body.len);
    if (body == NULL)
        goto out;
    if (rep.status >= 200 && rep.status < 300) {
        c->b->completed++;
        rc = out_line(&c->out, cid, rep.status, body, NULL, NULL);
    } else {
        c->b->failed++;
        rc = out_line(&c->errs, cid, rep.status, body, NULL, NULL);
    }
out:
    c->index++;
    if (rc != 0)
        c->oom = true;
    fake_reply_cleanup(&rep);
    json_decref(body);
    json_decref(j);
    free(text);
    return rc;
}

/* Ends <b>: runs its lines (unless cancelled) and writes the output and error files. */
static int batch_finish(obatch *b, const fake_request *rq, bool cancelled)
{
    ofile *in = file_find(b->input_file_id, strlen(b->input_file_id)), *f;
    run_ctx c = {.b = b, .rq = rq, .cancelled = cancelled};
    long long now = (long long)time(NULL);
    char name[96];
    int rc = -1;

    fbuf_init(&c.out);
    fbuf_init(&c.errs);
    b->completed = b->failed = 0;
    if (in != NULL)
        each_line(in, run_line, &c);
    if (c.oom)
        goto out;
    if (c.out.len > 0) {
        snprintf(name, sizeof(name), "%s_output.jsonl", b->id);
        if ((f = file_add(name, "batch_output", c.out.p, c.out.len)) == NULL)
            goto out;
        snprintf(b->output_file_id, sizeof(b->output_file_id), "%s", f->id);
    }
    if (c.errs.len > 0) {
        snprintf(name, sizeof(name), "%s_error.jsonl", b->id);
        if ((f = file_add(name, "batch_output", c.errs.p, c.errs.len)) == NULL)
            goto out;
        snprintf(b->error_file_id, sizeof(b->error_file_id), "%s", f->id);
    }
    b->finalizing_at = now;
    if (cancelled) {
        snprintf(b->status, sizeof(b->status), "cancelled");
        b->cancelled_at = now;
    } else if (b->opts.expire_after >= 0 && b->opts.expire_after < b->total) {
        snprintf(b->status, sizeof(b->status), "expired");
        b->expired_at = now;
    } else {
        snprintf(b->status, sizeof(b->status), "completed");
        b->completed_at = now;
    }
    rc = 0;
out:
    fbuf_cleanup(&c.out);
    fbuf_cleanup(&c.errs);
    return rc;
}

static int batch_get(const fake_request *rq, obatch *b, fake_reply *r)
{
    b->polls++;
    if (strcmp(b->status, "cancelling") == 0 && b->cancel_polls++ >= b->opts.cancel_polls) {
        if (batch_finish(b, rq, true) != 0)
            return -1;
    } else if (strcmp(b->status, "in_progress") == 0 && b->polls >= b->opts.polls &&
               fake_mono_ms() - b->created_mono >= b->opts.delay_ms) {
        if (batch_finish(b, rq, false) != 0)
            return -1;
    }
    return fake_json_reply(r, 200, batch_json(b));
}

static int batch_cancel(obatch *b, fake_reply *r)
{
    if (strcmp(b->status, "in_progress") != 0 && strcmp(b->status, "validating") != 0 &&
        strcmp(b->status, "cancelling") != 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "Cannot cancel a batch with status '%s'.", b->status);
        return err(r, 409, msg);
    }
    if (strcmp(b->status, "cancelling") != 0) {
        snprintf(b->status, sizeof(b->status), "cancelling");
        b->cancelling_at = (long long)time(NULL);
    }
    return fake_json_reply(r, 200, batch_json(b));
}

/* ------------------------------------------------------------------ dispatch --------------- */

static bool is(const fake_request *rq, const char *m)
{
    return rq->method_len == strlen(m) && memcmp(rq->method, m, rq->method_len) == 0;
}

static int files_route(const fake_request *rq, const char *path, size_t plen, fake_reply *r)
{
    size_t rest = 0, idn;
    const char *id = after(path, plen, "/files/", &rest), *slash;
    ofile *f;

    fake_stat_add(FAKE_STAT_files, 1);
    if (id == NULL) {
        if (!is(rq, "POST"))
            return err(r, 405, "fake_upstream: method not allowed");
        return file_upload(rq, r);
    }
    slash = memchr(id, '/', rest);
    idn = slash ? (size_t)(slash - id) : rest;
    if ((f = file_find(id, idn)) == NULL)
        return err(r, 404, "fake: no such file");
    if (slash != NULL) {
        if ((size_t)(id + rest - slash) != 8 || memcmp(slash, "/content", 8) != 0)
            return err(r, 404, "fake_upstream: unknown path");
        if (!is(rq, "GET"))
            return err(r, 405, "fake_upstream: method not allowed");
        r->ctype = "application/octet-stream";
        return fbuf_append(&r->body, f->data.p ? f->data.p : "", f->data.len) == 0 ? 1 : -1;
    }
    if (is(rq, "GET"))
        return fake_json_reply(r, 200, file_json(f));
    if (is(rq, "DELETE")) {
        json_t *j = json_pack("{s:s,s:s,s:b}", "id", f->id, "object", "file", "deleted", 1);
        file_unlink(f);
        return fake_json_reply(r, 200, j);
    }
    return err(r, 405, "fake_upstream: method not allowed");
}

static int batches_route(const fake_request *rq, const char *path, size_t plen,
                         const fake_batch_opts *o, fake_reply *r)
{
    size_t rest = 0, idn;
    const char *id = after(path, plen, "/batches/", &rest), *slash;
    obatch *b;

    fake_stat_add(FAKE_STAT_batches, 1);
    if (id == NULL) {
        if (!is(rq, "POST"))
            return err(r, 405, "fake_upstream: method not allowed");
        return batch_create(rq, o, r);
    }
    slash = memchr(id, '/', rest);
    idn = slash ? (size_t)(slash - id) : rest;
    if ((b = batch_find(id, idn)) == NULL)
        return err(r, 404, "fake: no such batch");
    if (slash != NULL) {
        if ((size_t)(id + rest - slash) != 7 || memcmp(slash, "/cancel", 7) != 0)
            return err(r, 404, "fake_upstream: unknown path");
        if (!is(rq, "POST"))
            return err(r, 405, "fake_upstream: method not allowed");
        return batch_cancel(b, r);
    }
    if (!is(rq, "GET"))
        return err(r, 405, "fake_upstream: method not allowed");
    return batch_get(rq, b, r);
}

int fake_batch_openai(const fake_request *rq, const char *path, size_t plen,
                      const fake_batch_opts *o, fake_reply *r)
{
    size_t rest;
    int rc;

    pthread_mutex_lock(&mu);
    if (ends_with(path, plen, "/files") || after(path, plen, "/files/", &rest) != NULL)
        rc = files_route(rq, path, plen, r);
    else
        rc = batches_route(rq, path, plen, o, r);
    pthread_mutex_unlock(&mu);
    return rc;
}
