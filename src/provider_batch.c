/* provider_batch: OpenAI Files + Batches and Anthropic Message Batches over blocking libcurl
 * easy handles (contract in the header).
 *
 * The one design decision: uploads are built in an unlinked temporary file and streamed from
 * it, results are parsed line by line as they arrive, so a 50,000-line batch never sits in
 * memory whole; only one line (capped) does. */
#include "switchyard/provider_batch.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/buf.h"
#include "switchyard/log.h"
#include "switchyard/provider.h"
#include "switchyard/provider_anthropic.h"
#include "switchyard/provider_openai.h"
#include "switchyard/upstream.h"

#define URL_MAX 2048

void sy_provider_batch_error_cleanup(sy_provider_batch_error *e)
{
    if (e == NULL)
        return;
    free(e->body);
    e->body = NULL;
    e->status = 0;
}

static void set_error(sy_provider_batch_error *e, sy_err code, const char *msg)
{
    if (e == NULL)
        return;
    free(e->body);
    e->status = sy_err_status(code);
    e->body = sy_err_body(code, msg, NULL, NULL);
}

/* ------------------------------------------------------------------ HTTP ------------------- */

typedef int (*line_fn)(void *ud, char *line, size_t len);

typedef struct http {
    const sy_deployment *d;
    CURL *easy;
    struct curl_slist *hdr;
    curl_mime *mime;
    FILE *upload;
    long status;
    sy_buf resp;    /* the whole answer (JSON mode, and error answers in line mode) */
    line_fn on_line; /* line mode: each '\n'-terminated line of a 2xx answer */
    void *ud;
    sy_buf line;
    sy_err line_rc; /* why the write callback stopped the transfer */
    char errbuf[CURL_ERROR_SIZE];
} http;

static sy_err feed_line(http *h, char *p, size_t n)
{
    if (n > 0 && p[n - 1] == '\r')
        n--;
    if (n == 0)
        return SY_OK;
    p[n] = '\0';
    return h->on_line(h->ud, p, n) == 0 ? SY_OK : SY_EINTERNAL;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    http *h = ud;
    size_t n = size * nmemb, i, start = 0;
    long status = 0;
    sy_err rc;

    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (h->on_line == NULL || status < 200 || status >= 300) {
        if ((rc = sy_buf_append(&h->resp, p, n)) != SY_OK) {
            h->line_rc = rc;
            return 0;
        }
        return n;
    }
    for (i = 0; i < n; i++) {
        if (p[i] != '\n')
            continue;
        if ((rc = sy_buf_append(&h->line, p + start, i - start)) != SY_OK ||
            (rc = feed_line(h, h->line.data ? h->line.data : (char *)"", h->line.len)) != SY_OK) {
            h->line_rc = rc;
            return 0;
        }
        sy_buf_reset(&h->line);
        start = i + 1;
    }
    if (start < n && (rc = sy_buf_append(&h->line, p + start, n - start)) != SY_OK) {
        h->line_rc = rc;
        return 0;
    }
    return n;
}

static size_t read_file_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    return fread(p, 1, size * nmemb, (FILE *)ud);
}

static int seek_file_cb(void *ud, curl_off_t off, int origin)
{
    return fseeko((FILE *)ud, (off_t)off, origin) == 0 ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_FAIL;
}

/* A handle for <method> <url> with the deployment's auth headers, timeouts and TLS checks. */
static sy_err http_init(http *h, const sy_deployment *d, const char *method, const char *url,
                        bool json_body)
{
    const sy_provider_ops *ops = sy_provider_get(d->provider);
    CURL *e;

    memset(h, 0, sizeof(*h));
    h->d = d;
    sy_buf_init(&h->resp, SY_PROVIDER_BATCH_MAX_JSON);
    sy_buf_init(&h->line, SY_PROVIDER_BATCH_MAX_LINE);
    if (ops == NULL)
        return SY_EUNSUPPORTED;
    if ((h->easy = e = curl_easy_init()) == NULL)
        return SY_ENOMEM;
    h->hdr = ops->headers(d, NULL);
    if (d->api_key != NULL && h->hdr == NULL)
        return SY_ENOMEM;
    if (json_body) {
        struct curl_slist *n = curl_slist_append(h->hdr, "Content-Type: application/json");
        if (n == NULL)
            return SY_ENOMEM;
        h->hdr = n;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->hdr);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (d->connect_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, d->connect_timeout_ms);
    if (d->total_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, d->total_timeout_ms);
    if (d->idle_timeout_ms > 0) {
        /* a stalled transfer: less than 1 byte/s for the idle timeout */
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                         d->idle_timeout_ms < 1000 ? 1L : d->idle_timeout_ms / 1000);
    }
    return SY_OK;
}

static void http_cleanup(http *h)
{
    if (h->easy != NULL)
        curl_easy_cleanup(h->easy);
    curl_mime_free(h->mime);
    curl_slist_free_all(h->hdr);
    if (h->upload != NULL)
        fclose(h->upload);
    sy_buf_cleanup(&h->resp);
    sy_buf_cleanup(&h->line);
    memset(h, 0, sizeof(*h));
}

/* Runs the transfer. SY_OK for a 2xx answer; otherwise the error with <e> filled. <what> names
 * the call in messages ("upload", "create", ...). */
static sy_err http_perform(http *h, const char *what, sy_provider_batch_error *e)
{
    const sy_provider_ops *ops = sy_provider_get(h->d->provider);
    CURLcode res = curl_easy_perform(h->easy);
    char msg[CURL_ERROR_SIZE + 128];

    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &h->status);
    if (res == CURLE_WRITE_ERROR && h->line_rc != SY_OK) {
        snprintf(msg, sizeof(msg), "provider batch %s: %s", what,
                 h->line_rc == SY_ETOOBIG ? "answer too large" : "stopped by the caller");
        set_error(e, h->line_rc == SY_ETOOBIG ? SY_EUPSTREAM : SY_EINTERNAL, msg);
        return h->line_rc;
    }
    if (res != CURLE_OK) {
        sy_err code = res == CURLE_OPERATION_TIMEDOUT ? SY_ETIMEOUT : SY_EUPSTREAM;
        snprintf(msg, sizeof(msg), "provider batch %s at %s failed: %s", what, h->d->name,
                 h->errbuf[0] ? h->errbuf : curl_easy_strerror(res));
        sy_log(SY_LOG_WARN, NULL, "%s", msg);
        set_error(e, code, msg);
        return code;
    }
    if (h->status < 200 || h->status >= 300) {
        size_t len = 0;
        sy_log(SY_LOG_WARN, NULL, "provider batch %s at %s: status %ld", what, h->d->name,
               h->status);
        if (e != NULL) {
            free(e->body);
            e->status = (int)h->status;
            e->body = ops->wrap_error((int)h->status, h->resp.data ? h->resp.data : "",
                                      h->resp.len, h->d->api_key, &len);
        }
        return h->status == 404 ? SY_ENOTFOUND : SY_EUPSTREAM;
    }
    if (h->on_line != NULL && h->line.len > 0) { /* a last line without its '\n' */
        sy_err rc = feed_line(h, h->line.data, h->line.len);
        if (rc != SY_OK) {
            set_error(e, rc, "provider batch: stopped by the caller");
            return rc;
        }
    }
    return SY_OK;
}

/* The 2xx answer as a JSON object (new), or NULL with <e> set. */
static json_t *answer_json(http *h, const char *what, sy_provider_batch_error *e)
{
    json_t *j = json_loadb(h->resp.data ? h->resp.data : "", h->resp.len, 0, NULL);
    char msg[128];

    if (json_is_object(j))
        return j;
    json_decref(j);
    snprintf(msg, sizeof(msg), "provider batch %s at %s: the answer is not a JSON object", what,
             h->d->name);
    set_error(e, SY_EUPSTREAM, msg);
    return NULL;
}

/* ------------------------------------------------------------------ URLs ------------------- */

/* Ids go into URL paths: only [A-Za-z0-9_-] is accepted. */
static bool id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n >= SY_PROVIDER_BATCH_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* <base>/<a>[/<b>[/<c>]]: OpenAI under base_url, Anthropic under the messages URL. */
static sy_err url_of(const sy_deployment *d, char *url, const char *a, const char *b,
                     const char *c)
{
    char base[URL_MAX];
    int n;

    if (d->provider == SY_PROVIDER_ANTHROPIC) {
        sy_err rc = sy_anthropic_url(d, SY_EP_CHAT, base, sizeof(base));
        if (rc != SY_OK)
            return rc;
    } else {
        snprintf(base, sizeof(base), "%s", d->base_url);
    }
    n = snprintf(url, URL_MAX, "%s/%s%s%s%s%s", base, a, b ? "/" : "", b ? b : "", c ? "/" : "",
                 c ? c : "");
    return n > 0 && n < URL_MAX ? SY_OK : SY_EINVAL;
}

static const char *openai_endpoint(sy_endpoint ep)
{
    return ep == SY_EP_CHAT ? "/v1/chat/completions"
           : ep == SY_EP_COMPLETIONS ? "/v1/completions"
                                     : "/v1/embeddings";
}

/* ------------------------------------------------------------------ submit ----------------- */

static bool put(FILE *f, const char *s, size_t n)
{
    return fwrite(s, 1, n, f) == n;
}

/* Writes every translatable line to <f>: OpenAI JSONL lines, or Anthropic's requests array. */
static sy_err write_lines(const sy_deployment *d, sy_endpoint ep,
                          const sy_provider_batch_line *lines, size_t n,
                          sy_provider_batch_reject_fn reject, void *ud, FILE *f,
                          size_t *written)
{
    const sy_provider_ops *ops = sy_provider_get(d->provider);
    bool anth = d->provider == SY_PROVIDER_ANTHROPIC;
    size_t i, count = 0;

    if (anth && !put(f, "{\"requests\":[", 13))
        return SY_EINTERNAL;
    for (i = 0; i < n; i++) {
        char msg[256] = "", *body, *cid;
        size_t len = 0;
        json_t *cidj = json_string(lines[i].custom_id ? lines[i].custom_id : "");
        bool ok;

        body = ops->body(d, ep, lines[i].body, false, &len, msg, sizeof(msg));
        if (body == NULL) {
            json_decref(cidj);
            if (msg[0] == '\0')
                return SY_ENOMEM;
            if (reject != NULL) {
                char *eb = sy_err_body(SY_EINVAL, msg, NULL, NULL);
                reject(ud, i, lines[i].custom_id, eb ? eb : "");
                free(eb);
            }
            continue;
        }
        cid = cidj ? json_dumps(cidj, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(cidj);
        if (cid == NULL) {
            free(body);
            return SY_ENOMEM;
        }
        if (anth)
            ok = fprintf(f, "%s{\"custom_id\":%s,\"params\":", count ? "," : "", cid) > 0 &&
                 put(f, body, len) && put(f, "}", 1);
        else
            ok = fprintf(f, "{\"custom_id\":%s,\"method\":\"POST\",\"url\":\"%s\",\"body\":", cid,
                         openai_endpoint(ep)) > 0 &&
                 put(f, body, len) && put(f, "}\n", 2);
        free(cid);
        free(body);
        if (!ok)
            return SY_EINTERNAL;
        count++;
    }
    if (anth && !put(f, "]}", 2))
        return SY_EINTERNAL;
    if (fflush(f) != 0)
        return SY_EINTERNAL;
    *written = count;
    return SY_OK;
}

/* Copies the "id" of answer <j> into <id>. */
static sy_err take_id(json_t *j, char *id, size_t idlen, const char *what,
                      sy_provider_batch_error *e)
{
    const char *v = json_string_value(json_object_get(j, "id"));
    char msg[128];

    if (v == NULL || !id_ok(v) || strlen(v) >= idlen) {
        snprintf(msg, sizeof(msg), "provider batch %s: the answer has no usable id", what);
        set_error(e, SY_EUPSTREAM, msg);
        return SY_EUPSTREAM;
    }
    snprintf(id, idlen, "%s", v);
    return SY_OK;
}

/* http_perform, then the "id" of the JSON answer into <id>. */
static sy_err perform_take_id(http *h, const char *what, char *id, size_t idlen,
                              sy_provider_batch_error *e)
{
    json_t *j = NULL;
    sy_err rc = http_perform(h, what, e);

    if (rc == SY_OK && (j = answer_json(h, what, e)) == NULL)
        rc = SY_EUPSTREAM;
    if (rc == SY_OK)
        rc = take_id(j, id, idlen, what, e);
    json_decref(j);
    return rc;
}

static void delete_file(const sy_deployment *d, const char *fid)
{
    char url[URL_MAX];
    http h;

    memset(&h, 0, sizeof(h));
    if (url_of(d, url, "files", fid, NULL) == SY_OK &&
        http_init(&h, d, "DELETE", url, false) == SY_OK)
        http_perform(&h, "file delete", NULL);
    http_cleanup(&h);
}

static sy_err submit_openai(const sy_deployment *d, sy_endpoint ep, FILE *f, curl_off_t size,
                            const char *tag, char *id, size_t idlen, sy_provider_batch_error *e)
{
    char url[URL_MAX], fid[SY_PROVIDER_BATCH_ID_MAX] = "", fname[160];
    json_t *req = NULL;
    char *body = NULL;
    curl_mimepart *part;
    http h;
    sy_err rc;

    memset(&h, 0, sizeof(h));
    /* 1. the input file */
    if ((rc = url_of(d, url, "files", NULL, NULL)) != SY_OK ||
        (rc = http_init(&h, d, "POST", url, false)) != SY_OK)
        goto out;
    rc = SY_ENOMEM;
    if ((h.mime = curl_mime_init(h.easy)) == NULL || (part = curl_mime_addpart(h.mime)) == NULL ||
        curl_mime_name(part, "purpose") != CURLE_OK ||
        curl_mime_data(part, "batch", CURL_ZERO_TERMINATED) != CURLE_OK ||
        (part = curl_mime_addpart(h.mime)) == NULL || curl_mime_name(part, "file") != CURLE_OK)
        goto out;
    snprintf(fname, sizeof(fname), "switchyard-%s.jsonl", tag && id_ok(tag) ? tag : "batch");
    if (curl_mime_filename(part, fname) != CURLE_OK ||
        curl_mime_type(part, "application/jsonl") != CURLE_OK ||
        curl_mime_data_cb(part, size, read_file_cb, seek_file_cb, NULL, f) != CURLE_OK)
        goto out;
    curl_easy_setopt(h.easy, CURLOPT_MIMEPOST, h.mime);
    if ((rc = perform_take_id(&h, "upload", fid, sizeof(fid), e)) != SY_OK)
        goto out;
    http_cleanup(&h);

    /* 2. the batch */
    rc = SY_ENOMEM;
    req = json_pack("{s:s,s:s,s:s}", "input_file_id", fid, "endpoint", openai_endpoint(ep),
                    "completion_window", "24h");
    if (req == NULL || (tag != NULL && json_object_set_new(req, "metadata",
                                                           json_pack("{s:s}", "switchyard_tag",
                                                                     tag)) != 0) ||
        (body = json_dumps(req, JSON_COMPACT)) == NULL)
        goto out;
    if ((rc = url_of(d, url, "batches", NULL, NULL)) != SY_OK ||
        (rc = http_init(&h, d, "POST", url, true)) != SY_OK)
        goto out;
    curl_easy_setopt(h.easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h.easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    rc = perform_take_id(&h, "create", id, idlen, e);
out:
    http_cleanup(&h);
    if (rc != SY_OK && fid[0] != '\0')
        delete_file(d, fid);
    json_decref(req);
    free(body);
    return rc;
}

static sy_err submit_anthropic(const sy_deployment *d, FILE *f, curl_off_t size, char *id,
                               size_t idlen, sy_provider_batch_error *e)
{
    char url[URL_MAX];
    http h;
    sy_err rc;

    memset(&h, 0, sizeof(h));
    if ((rc = url_of(d, url, "batches", NULL, NULL)) != SY_OK ||
        (rc = http_init(&h, d, "POST", url, true)) != SY_OK)
        goto out;
    curl_easy_setopt(h.easy, CURLOPT_POST, 1L);
    curl_easy_setopt(h.easy, CURLOPT_READFUNCTION, read_file_cb);
    curl_easy_setopt(h.easy, CURLOPT_READDATA, f);
    curl_easy_setopt(h.easy, CURLOPT_SEEKFUNCTION, seek_file_cb);
    curl_easy_setopt(h.easy, CURLOPT_SEEKDATA, f);
    curl_easy_setopt(h.easy, CURLOPT_POSTFIELDSIZE_LARGE, size);
    rc = perform_take_id(&h, "create", id, idlen, e);
out:
    http_cleanup(&h);
    return rc;
}

sy_err sy_provider_batch_submit(const sy_deployment *d, sy_endpoint ep,
                                const sy_provider_batch_line *lines, size_t n, const char *tag,
                                sy_provider_batch_reject_fn reject, void *ud, char *id,
                                size_t idlen, size_t *submitted, sy_provider_batch_error *e)
{
    FILE *f = NULL;
    size_t count = 0;
    off_t size;
    sy_err rc;

    sy_provider_batch_error_cleanup(e);
    *submitted = 0;
    if (idlen > 0)
        id[0] = '\0';
    if (d->provider == SY_PROVIDER_ANTHROPIC && ep == SY_EP_EMBEDDINGS) {
        set_error(e, SY_EUNSUPPORTED, "Anthropic has no embeddings batch");
        return SY_EUNSUPPORTED;
    }
    if ((f = tmpfile()) == NULL) {
        set_error(e, SY_EINTERNAL, "provider batch: no temporary file");
        return SY_EINTERNAL;
    }
    rc = write_lines(d, ep, lines, n, reject, ud, f, &count);
    if (rc != SY_OK) {
        set_error(e, rc, "provider batch: could not write the upload");
        goto out;
    }
    if (count == 0)
        goto out;
    if ((size = ftello(f)) < 0 || fseeko(f, 0, SEEK_SET) != 0) {
        rc = SY_EINTERNAL;
        set_error(e, rc, "provider batch: temporary file");
        goto out;
    }
    rc = d->provider == SY_PROVIDER_ANTHROPIC
             ? submit_anthropic(d, f, (curl_off_t)size, id, idlen, e)
             : submit_openai(d, ep, f, (curl_off_t)size, tag, id, idlen, e);
    if (rc == SY_OK) {
        *submitted = count;
        sy_log(SY_LOG_INFO, NULL, "provider batch %s submitted to %s: %zu lines", id, d->name,
               count);
    }
out:
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ poll ------------------- */

/* GET the batch object (new JSON) of <id>. */
static sy_err get_batch(const sy_deployment *d, const char *id, json_t **out,
                        sy_provider_batch_error *e)
{
    char url[URL_MAX];
    http h;
    sy_err rc;

    memset(&h, 0, sizeof(h));
    *out = NULL;
    if (!id_ok(id)) {
        set_error(e, SY_EINVAL, "provider batch: bad batch id");
        return SY_EINVAL;
    }
    if ((rc = url_of(d, url, "batches", id, NULL)) != SY_OK ||
        (rc = http_init(&h, d, "GET", url, false)) != SY_OK ||
        (rc = http_perform(&h, "retrieve", e)) != SY_OK)
        goto out;
    if ((*out = answer_json(&h, "retrieve", e)) == NULL)
        rc = SY_EUPSTREAM;
out:
    if (rc != SY_OK && e != NULL && e->body == NULL)
        set_error(e, rc, "provider batch: retrieve failed");
    http_cleanup(&h);
    return rc;
}

static long count_of(const json_t *o, const char *k)
{
    return (long)json_integer_value(json_object_get(o, k));
}

sy_err sy_provider_batch_poll(const sy_deployment *d, const char *id,
                              sy_provider_batch_status *st, sy_provider_batch_error *e)
{
    json_t *j = NULL;
    const char *s;
    const json_t *rc_obj;
    sy_err rc;

    sy_provider_batch_error_cleanup(e);
    memset(st, 0, sizeof(*st));
    if ((rc = get_batch(d, id, &j, e)) != SY_OK)
        return rc;
    if (d->provider == SY_PROVIDER_ANTHROPIC) {
        s = json_string_value(json_object_get(j, "processing_status"));
        rc_obj = json_object_get(j, "request_counts");
        st->pending = count_of(rc_obj, "processing");
        st->succeeded = count_of(rc_obj, "succeeded");
        st->errored = count_of(rc_obj, "errored") + count_of(rc_obj, "canceled") +
                      count_of(rc_obj, "expired");
        st->total = st->pending + st->succeeded + st->errored;
        st->state = s && strcmp(s, "ended") == 0 ? SY_PROVIDER_BATCH_ENDED
                                                 : SY_PROVIDER_BATCH_PENDING;
    } else {
        s = json_string_value(json_object_get(j, "status"));
        rc_obj = json_object_get(j, "request_counts");
        st->total = count_of(rc_obj, "total");
        st->succeeded = count_of(rc_obj, "completed");
        st->errored = count_of(rc_obj, "failed");
        st->pending = st->total - st->succeeded - st->errored;
        if (s == NULL)
            st->state = SY_PROVIDER_BATCH_PENDING;
        else if (strcmp(s, "completed") == 0)
            st->state = SY_PROVIDER_BATCH_ENDED;
        else if (strcmp(s, "failed") == 0)
            st->state = SY_PROVIDER_BATCH_FAILED;
        else if (strcmp(s, "expired") == 0)
            st->state = SY_PROVIDER_BATCH_EXPIRED;
        else if (strcmp(s, "cancelled") == 0)
            st->state = SY_PROVIDER_BATCH_CANCELLED;
        else
            st->state = SY_PROVIDER_BATCH_PENDING;
        if (st->state == SY_PROVIDER_BATCH_FAILED) {
            const json_t *first =
                json_array_get(json_object_get(json_object_get(j, "errors"), "data"), 0);
            const char *m = json_string_value(json_object_get(first, "message"));
            long line = count_of(first, "line");
            if (m != NULL && line > 0)
                snprintf(st->message, sizeof(st->message), "line %ld: %.200s", line, m);
            else if (m != NULL)
                snprintf(st->message, sizeof(st->message), "%.200s", m);
        }
    }
    if (st->pending < 0)
        st->pending = 0;
    snprintf(st->provider_status, sizeof(st->provider_status), "%s", s ? s : "");
    json_decref(j);
    return SY_OK;
}

/* ------------------------------------------------------------------ results ---------------- */

typedef struct results_ctx {
    const sy_deployment *d;
    sy_endpoint ep;
    sy_provider_batch_result_fn fn;
    void *ud;
} results_ctx;

/* Hands one result to the caller: <body> (stolen) is the OpenAI answer or error. */
static int deliver(results_ctx *c, const char *cid, int status, json_t *body)
{
    sy_provider_batch_result r = {.custom_id = cid, .status = status, .body = body};
    int rc;

    if (body == NULL)
        return -1;
    if (status >= 200 && status < 300)
        r.has_usage = sy_usage_from_json(json_object_get(body, "usage"), &r.usage);
    rc = c->fn(c->ud, &r);
    json_decref(body);
    return rc;
}

/* An OpenAI error object (new) from a text body built by the err table or a wrapper. */
static json_t *error_json(char *text_new)
{
    json_t *j = text_new ? json_loads(text_new, 0, NULL) : NULL;
    free(text_new);
    return j;
}

/* A provider error answer (<err>, borrowed JSON) rewrapped OpenAI-style without the key. */
static json_t *wrap(const sy_deployment *d, int status, const json_t *err)
{
    const sy_provider_ops *ops = sy_provider_get(d->provider);
    char *text = err ? json_dumps(err, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t len = 0;
    json_t *j = error_json(ops->wrap_error(status, text ? text : "", text ? strlen(text) : 0,
                                           d->api_key, &len));
    free(text);
    return j;
}

static json_t *unrun(const char *code, const char *msg)
{
    return error_json(sy_err_body_raw("api_error", code, NULL, msg, NULL));
}

/* A success answer normalized to OpenAI; <body> stolen. A body that is not an answer becomes a
 * 502 error (status written to *status). */
static json_t *normalized(results_ctx *c, json_t *body, int *status)
{
    const sy_provider_ops *ops = sy_provider_get(c->d->provider);
    char msg[256] = "";

    if (ops->normalize(c->ep, &body, false, msg, sizeof(msg)) == SY_OK)
        return body;
    json_decref(body);
    *status = 502;
    return error_json(sy_err_body(SY_EUPSTREAM, msg[0] ? msg : NULL, NULL, NULL));
}

static int openai_line(void *ud, char *line, size_t len)
{
    results_ctx *c = ud;
    json_t *j = json_loadb(line, len, 0, NULL), *resp, *body;
    const char *cid = json_string_value(json_object_get(j, "custom_id"));
    int rc = 0, status;

    if (cid == NULL) {
        sy_log(SY_LOG_WARN, NULL, "provider batch: %s: a result line without custom_id",
               c->d->name);
        goto out;
    }
    resp = json_object_get(j, "response");
    if (json_is_object(resp)) {
        status = (int)json_integer_value(json_object_get(resp, "status_code"));
        body = json_object_get(resp, "body");
        if (status >= 200 && status < 300 && json_is_object(body)) {
            json_t *ok = normalized(c, json_incref(body), &status);
            rc = deliver(c, cid, status, ok);
        } else
            rc = deliver(c, cid, status >= 400 ? status : 502, wrap(c->d, status, body));
    } else {
        const json_t *err = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        rc = deliver(c, cid, 0, unrun(code ? code : "batch_failed", msg ? msg : "not run"));
    }
out:
    json_decref(j);
    return rc;
}

static int anthropic_status(const char *type)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {{"invalid_request_error", 400}, {"authentication_error", 401},
               {"permission_error", 403},      {"not_found_error", 404},
               {"request_too_large", 413},     {"rate_limit_error", 429},
               {"api_error", 500},             {"overloaded_error", 529}};

    for (size_t i = 0; type != NULL && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(type, map[i].type) == 0)
            return map[i].status;
    return 500;
}

static int anthropic_line(void *ud, char *line, size_t len)
{
    results_ctx *c = ud;
    json_t *j = json_loadb(line, len, 0, NULL), *res, *err;
    const char *cid = json_string_value(json_object_get(j, "custom_id"));
    const char *type;
    int rc = 0, status = 200;

    if (cid == NULL) {
        sy_log(SY_LOG_WARN, NULL, "provider batch: %s: a result line without custom_id",
               c->d->name);
        goto out;
    }
    res = json_object_get(j, "result");
    type = json_string_value(json_object_get(res, "type"));
    if (type != NULL && strcmp(type, "succeeded") == 0 &&
        json_is_object(json_object_get(res, "message"))) {
        json_t *ok = normalized(c, json_incref(json_object_get(res, "message")), &status);
        rc = deliver(c, cid, status, ok);
    } else if (type != NULL && strcmp(type, "errored") == 0) {
        /* ErrorResponse {"type":"error","error":{type,message}}, or the bare error object */
        err = json_object_get(res, "error");
        {
            const json_t *inner = json_object_get(err, "error");
            status = anthropic_status(
                json_string_value(json_object_get(json_is_object(inner) ? inner : err, "type")));
        }
        rc = deliver(c, cid, status, wrap(c->d, status, err));
    } else if (type != NULL && strcmp(type, "canceled") == 0) {
        rc = deliver(c, cid, 0,
                     unrun("batch_cancelled", "The request was cancelled before it ran."));
    } else if (type != NULL && strcmp(type, "expired") == 0) {
        rc = deliver(c, cid, 0,
                     unrun("batch_expired", "The request could not be executed before the "
                                            "batch expired."));
    } else {
        rc = deliver(c, cid, 502,
                     error_json(sy_err_body(SY_EUPSTREAM, "unknown batch result type", NULL,
                                            NULL)));
    }
out:
    json_decref(j);
    return rc;
}

/* GETs <url> and feeds each line to <fn>. */
static sy_err stream_lines(const sy_deployment *d, const char *url, line_fn fn, void *ud,
                           const char *what, sy_provider_batch_error *e)
{
    http h;
    sy_err rc;

    memset(&h, 0, sizeof(h));
    if ((rc = http_init(&h, d, "GET", url, false)) == SY_OK) {
        h.on_line = fn;
        h.ud = ud;
        rc = http_perform(&h, what, e);
    }
    http_cleanup(&h);
    return rc;
}

sy_err sy_provider_batch_results(const sy_deployment *d, sy_endpoint ep, const char *id,
                                 sy_provider_batch_result_fn fn, void *ud,
                                 sy_provider_batch_error *e)
{
    results_ctx c = {.d = d, .ep = ep, .fn = fn, .ud = ud};
    char url[URL_MAX];
    json_t *j = NULL;
    sy_err rc;

    sy_provider_batch_error_cleanup(e);
    if (!id_ok(id)) {
        set_error(e, SY_EINVAL, "provider batch: bad batch id");
        return SY_EINVAL;
    }
    if (d->provider == SY_PROVIDER_ANTHROPIC) {
        if ((rc = url_of(d, url, "batches", id, "results")) != SY_OK)
            return rc;
        return stream_lines(d, url, anthropic_line, &c, "results", e);
    }
    if ((rc = get_batch(d, id, &j, e)) != SY_OK)
        return rc;
    for (int i = 0; i < 2 && rc == SY_OK; i++) {
        const char *fid =
            json_string_value(json_object_get(j, i == 0 ? "output_file_id" : "error_file_id"));
        if (fid == NULL)
            continue;
        if (!id_ok(fid)) {
            rc = SY_EUPSTREAM;
            set_error(e, rc, "provider batch: bad file id in the batch");
        } else if ((rc = url_of(d, url, "files", fid, "content")) == SY_OK) {
            rc = stream_lines(d, url, openai_line, &c, "results", e);
        }
    }
    json_decref(j);
    return rc;
}

sy_err sy_provider_batch_cancel(const sy_deployment *d, const char *id,
                                sy_provider_batch_error *e)
{
    char url[URL_MAX];
    http h;
    sy_err rc;

    sy_provider_batch_error_cleanup(e);
    memset(&h, 0, sizeof(h));
    if (!id_ok(id)) {
        set_error(e, SY_EINVAL, "provider batch: bad batch id");
        return SY_EINVAL;
    }
    if ((rc = url_of(d, url, "batches", id, "cancel")) == SY_OK &&
        (rc = http_init(&h, d, "POST", url, true)) == SY_OK) {
        curl_easy_setopt(h.easy, CURLOPT_POSTFIELDS, "{}");
        rc = http_perform(&h, "cancel", e);
    }
    http_cleanup(&h);
    return rc;
}
