/* Unit tests for batch: line checks and whole-file validation with line numbers, the result line
 * format, the status lifecycle, the router's batch share, and the API over the embedded store
 * with the real Files module (validator and sweeper threads, no workers: lines stay queued). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/batch_int.h"
#include "switchyard/api.h"
#include "switchyard/batch.h"
#include "switchyard/files.h"
#include "switchyard/router.h"
#include "switchyard/store.h"

#define EP "/v1/chat/completions"

static const char *line_ok(const char *cid)
{
    static char buf[256];
    snprintf(buf, sizeof(buf),
             "{\"custom_id\":\"%s\",\"method\":\"POST\",\"url\":\"" EP "\",\"body\":{\"model\":"
             "\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}}",
             cid);
    return buf;
}

static void expect_bad(const char *s, const char *code, const char *param)
{
    sy_batch_line bl;
    json_t *err = NULL;
    assert_false(sy_batch_parse_line(s, strlen(s), 7, EP, 16, &bl, &err));
    assert_non_null(err);
    assert_string_equal(json_string_value(json_object_get(err, "code")), code);
    assert_int_equal(json_integer_value(json_object_get(err, "line")), 7);
    json_t *p = json_object_get(err, "param");
    if (param == NULL)
        assert_true(json_is_null(p));
    else
        assert_string_equal(json_string_value(p), param);
    assert_non_null(strstr(json_string_value(json_object_get(err, "message")), "Line 7"));
    assert_null(bl.body);
    json_decref(err);
}

static void test_parse_line(void **state)
{
    (void)state;
    sy_batch_line bl;
    json_t *err = NULL;
    const char *ok = line_ok("a-1");
    assert_true(sy_batch_parse_line(ok, strlen(ok), 1, EP, 16, &bl, &err));
    assert_null(err);
    assert_string_equal(bl.custom_id, "a-1");
    assert_string_equal(json_string_value(json_object_get(bl.body, "model")), "m");
    json_decref(bl.body);

    expect_bad("{not json", "invalid_json_line", NULL);
    expect_bad("[1,2]", "invalid_json_line", NULL);
    expect_bad("{\"method\":\"POST\",\"url\":\"" EP "\",\"body\":{}}", "missing_custom_id",
               "custom_id");
    expect_bad("{\"custom_id\":\"\",\"method\":\"POST\",\"url\":\"" EP "\",\"body\":{}}",
               "missing_custom_id", "custom_id");
    expect_bad("{\"custom_id\":5,\"method\":\"POST\",\"url\":\"" EP "\",\"body\":{}}",
               "missing_custom_id", "custom_id");
    expect_bad("{\"custom_id\":\"x\",\"method\":\"GET\",\"url\":\"" EP "\",\"body\":{}}",
               "invalid_method", "method");
    expect_bad("{\"custom_id\":\"x\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}",
               "invalid_url", "url");
    expect_bad("{\"custom_id\":\"x\",\"method\":\"POST\",\"url\":\"" EP "\",\"body\":\"s\"}",
               "invalid_body", "body");
    /* too deep for the configured depth */
    expect_bad("{\"custom_id\":\"x\",\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}",
               "invalid_json_line", NULL);
}

static int tmp_fd(const char *text)
{
    char path[] = "/tmp/sy-test-batch-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void test_validate_file(void **state)
{
    (void)state;
    char text[4096];
    /* line 3 blank, 2 bad JSON, 4 duplicate of line 1, 5 wrong url, 6 fine */
    snprintf(text, sizeof(text), "%s\n{oops\n\n", line_ok("a"));
    strcat(text, line_ok("a"));
    strcat(text, "\n{\"custom_id\":\"c\",\"method\":\"POST\",\"url\":\"/v1/x\",\"body\":{}}\n");
    strcat(text, line_ok("d"));
    strcat(text, "\n");
    int fd = tmp_fd(text);
    size_t n = 0;
    long last = 0;
    json_t *errors = NULL;
    assert_int_equal(sy_batch_validate_fd(fd, EP, 100, 4096, 16, &n, &last, &errors), SY_EINVAL);
    close(fd);
    assert_string_equal(json_string_value(json_object_get(errors, "object")), "list");
    json_t *data = json_object_get(errors, "data");
    assert_int_equal(json_array_size(data), 3);
    long lines[3] = {2, 4, 5};
    const char *codes[3] = {"invalid_json_line", "duplicate_custom_id", "invalid_url"};
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(data, i);
        assert_int_equal(json_integer_value(json_object_get(e, "line")), lines[i]);
        assert_string_equal(json_string_value(json_object_get(e, "code")), codes[i]);
    }
    json_decref(errors);

    /* a good file: blank lines skipped but counted in line numbers; CRLF accepted */
    snprintf(text, sizeof(text), "%s\r\n\n", line_ok("x"));
    strcat(text, line_ok("y")); /* no final newline */
    fd = tmp_fd(text);
    errors = NULL;
    assert_int_equal(sy_batch_validate_fd(fd, EP, 100, 4096, 16, &n, &last, &errors), SY_OK);
    close(fd);
    assert_null(errors);
    assert_int_equal(n, 2);
    assert_int_equal(last, 3);

    /* too many requests, an over-long line, an empty file */
    snprintf(text, sizeof(text), "%s\n", line_ok("1"));
    strcat(text, line_ok("2"));
    strcat(text, "\n");
    strcat(text, line_ok("3"));
    fd = tmp_fd(text);
    assert_int_equal(sy_batch_validate_fd(fd, EP, 2, 4096, 16, &n, &last, &errors), SY_EINVAL);
    close(fd);
    json_t *e = json_array_get(json_object_get(errors, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "too_many_requests");
    assert_int_equal(json_integer_value(json_object_get(e, "line")), 3);
    json_decref(errors);

    fd = tmp_fd(text);
    assert_int_equal(sy_batch_validate_fd(fd, EP, 100, 50, 16, &n, &last, &errors), SY_EINVAL);
    close(fd);
    data = json_object_get(errors, "data");
    assert_int_equal(json_array_size(data), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(data, 1), "code")),
                        "line_too_long");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(data, 1), "line")), 2);
    json_decref(errors);

    fd = tmp_fd("\n  \n");
    assert_int_equal(sy_batch_validate_fd(fd, EP, 100, 4096, 16, &n, &last, &errors), SY_EINVAL);
    close(fd);
    e = json_array_get(json_object_get(errors, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "empty_file");
    json_decref(errors);
}

static void test_result_line(void **state)
{
    (void)state;
    size_t len;
    const char *resp = "{\"id\":\"chatcmpl-1\",\"usage\":{\"prompt_tokens\":3}}";
    char *l = sy_batch_result_line("c-1", 200, "req_1", resp, strlen(resp), NULL, NULL, &len);
    assert_non_null(l);
    assert_int_equal(strlen(l), len);
    assert_null(strchr(l, '\n'));
    json_t *j = json_loads(l, 0, NULL);
    assert_non_null(j);
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "id")), "batch_req_", 10), 0);
    assert_string_equal(json_string_value(json_object_get(j, "custom_id")), "c-1");
    json_t *r = json_object_get(j, "response");
    assert_int_equal(json_integer_value(json_object_get(r, "status_code")), 200);
    assert_string_equal(json_string_value(json_object_get(r, "request_id")), "req_1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r, "body"), "id")), "chatcmpl-1");
    assert_true(json_is_null(json_object_get(j, "error")));
    char id1[64];
    snprintf(id1, sizeof(id1), "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    free(l);

    /* a non-JSON body is kept as a string; ids differ per line */
    l = sy_batch_result_line("c-2", 502, "req_2", "bad gateway", 11, NULL, NULL, &len);
    j = json_loads(l, 0, NULL);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "response"), "body")),
        "bad gateway");
    assert_string_not_equal(json_string_value(json_object_get(j, "id")), id1);
    json_decref(j);
    free(l);

    /* a transport failure: response null, error {code, message} */
    l = sy_batch_result_line("c-3", 0, NULL, NULL, 0, "timeout", "took too long", &len);
    j = json_loads(l, 0, NULL);
    assert_true(json_is_null(json_object_get(j, "response")));
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "timeout");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "took too long");
    json_decref(j);
    free(l);
}

static void test_transitions(void **state)
{
    (void)state;
    assert_true(sy_batch_transition_ok("validating", "in_progress"));
    assert_true(sy_batch_transition_ok("validating", "failed"));
    assert_true(sy_batch_transition_ok("in_progress", "finalizing"));
    assert_true(sy_batch_transition_ok("finalizing", "completed"));
    assert_true(sy_batch_transition_ok("finalizing", "expired"));
    assert_true(sy_batch_transition_ok("in_progress", "cancelling"));
    assert_true(sy_batch_transition_ok("cancelling", "cancelled"));
    assert_false(sy_batch_transition_ok("completed", "cancelling"));
    assert_false(sy_batch_transition_ok("in_progress", "validating"));
    assert_false(sy_batch_transition_ok("failed", "in_progress"));
    assert_false(sy_batch_transition_ok("cancelled", "cancelling"));
    assert_false(sy_batch_transition_ok("finalizing", "cancelling"));
    assert_false(sy_batch_transition_ok("in_progress", "completed")); /* through finalizing */
    assert_false(sy_batch_transition_ok(NULL, "failed"));
}

static void test_batch_share(void **state)
{
    (void)state;
    sy_deployment d4 = {.name = "share-test-4", .max_inflight = 4};
    sy_deployment d0 = {.name = "share-test-0", .max_inflight = 0};
    sy_deployment d1 = {.name = "share-test-1", .max_inflight = 1};
    assert_int_equal(sy_router_batch_cap(&d4, 0.5), 2);
    assert_int_equal(sy_router_batch_cap(&d4, 0.0), 1); /* at least one */
    assert_int_equal(sy_router_batch_cap(&d4, 1.0), 4);
    assert_int_equal(sy_router_batch_cap(&d1, 0.5), 1);
    assert_int_equal(sy_router_batch_cap(&d0, 0.5), 0); /* no cap */

    sy_pick p;
    int *slots[3];
    for (int i = 0; i < 2; i++) {
        memset(&p, 0, sizeof(p));
        p.targets[0] = &d4;
        p.targets[1] = &d1;
        p.ntargets = p.navailable = 2;
        assert_int_equal(sy_router_pick_batch(&p, 0.5, &slots[i]), SY_OK);
        assert_ptr_equal(p.targets[0], &d4);
        assert_int_equal(p.ntargets, 1);
    }
    assert_int_equal(sy_router_batch_inflight("share-test-4"), 2);
    /* d4's share is full: the next goes to d1, then nothing is left */
    memset(&p, 0, sizeof(p));
    p.targets[0] = &d4;
    p.targets[1] = &d1;
    p.ntargets = p.navailable = 2;
    assert_int_equal(sy_router_pick_batch(&p, 0.5, &slots[2]), SY_OK);
    assert_ptr_equal(p.targets[0], &d1);
    int *none = (int *)1;
    memset(&p, 0, sizeof(p));
    p.targets[0] = &d4;
    p.targets[1] = &d1;
    p.ntargets = p.navailable = 2;
    assert_int_equal(sy_router_pick_batch(&p, 0.5, &none), SY_EUNAVAIL);
    assert_null(none);
    assert_int_equal(sy_router_batch_inflight("share-test-4"), 2);
    sy_router_batch_release(slots[0]);
    assert_int_equal(sy_router_batch_inflight("share-test-4"), 1);
    memset(&p, 0, sizeof(p));
    p.targets[0] = &d4;
    p.ntargets = p.navailable = 1;
    assert_int_equal(sy_router_pick_batch(&p, 0.5, &slots[0]), SY_OK);
    for (int i = 0; i < 3; i++)
        sy_router_batch_release(slots[i]);
    assert_int_equal(sy_router_batch_inflight("share-test-4"), 0);
    assert_int_equal(sy_router_batch_inflight("share-test-1"), 0);
    /* nothing available for any request: no reservation, the relay reports it */
    memset(&p, 0, sizeof(p));
    p.targets[0] = &d4;
    p.ntargets = 1;
    assert_int_equal(sy_router_pick_batch(&p, 0.5, &none), SY_OK);
    assert_null(none);
}

/* ---- the API over the embedded store ---- */

static sy_config *cfg;
static sy_store *store;
static sy_files *files;
static sy_batch *batch;
static char dir[64];

static int setup_api(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sy-test-batch-dir-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    const char *text = "{\"batch\":{\"workers\":0,\"poll_ms\":20,\"lease_ms\":500,"
                       "\"provider_grace_ms\":0},"
                       "\"deployments\":[{\"name\":\"a\",\"base_url\":\"http://h/v1\",\"model\":"
                       "\"m\",\"price\":{\"input\":0,\"output\":0}}]}";
    json_t *root = json_loads(text, 0, NULL);
    sy_errlist errs;
    sy_errlist_init(&errs);
    sy_err rc = sy_config_parse(root, NULL, &cfg, &errs, NULL);
    sy_errlist_cleanup(&errs);
    json_decref(root);
    if (rc != SY_OK)
        return -1;
    sy_store_opts o;
    sy_store_opts_init(&o);
    rc = sy_store_new(&o, &store);
    sy_store_opts_cleanup(&o);
    if (rc != SY_OK || sy_files_new(dir, store, 1 << 20, 1000, &files) != SY_OK)
        return -1;
    return sy_batch_new(cfg, store, files, NULL, NULL, "http://127.0.0.1:9", &batch) == SY_OK ? 0 : -1;
}

static int teardown_api(void **state)
{
    (void)state;
    sy_batch_free(batch);
    sy_files_free(files);
    sy_store_free(store);
    sy_config_unref(cfg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A request with Authorization <auth> (NULL = none). */
static json_t *call_as(const char *auth, const char *method, const char *path, const char *body,
                       int *status, const char **allow)
{
    sy_api_in in = {.cfg = cfg, .method = method, .path = path, .body = body ? body : "",
                    .len = body ? strlen(body) : 0, .authorization = auth, .files = files,
                    .batch = batch};
    sy_reply out;
    memset(&out, 0, sizeof(out));
    sy_api_batches(&in, &out);
    *status = out.status;
    if (allow != NULL)
        *allow = out.allow;
    json_t *j = json_loadb(out.body, out.len, 0, NULL);
    free(out.body);
    assert_non_null(j);
    return j;
}

static json_t *call(const char *method, const char *path, const char *body, int *status,
                    const char **allow)
{
    return call_as(NULL, method, path, body, status, allow);
}

/* GET /v1/batches?limit=<limit>&after=<after> (either may be NULL). */
typedef struct list_args {
    const char *limit, *after;
} list_args;

static const char *list_arg(void *hctx, const char *name)
{
    const list_args *a = hctx;
    return strcmp(name, "limit") == 0 ? a->limit : strcmp(name, "after") == 0 ? a->after : NULL;
}

/* The same as the caller with Authorization <auth> (NULL = none). */
static json_t *list_page_as(const char *auth, const char *limit, const char *after, int *status)
{
    list_args a = {limit, after};
    sy_api_in in = {.cfg = cfg, .method = "GET", .path = "/v1/batches", .body = "", .len = 0,
                    .authorization = auth, .get_arg = list_arg, .hctx = &a, .files = files,
                    .batch = batch};
    sy_reply out;
    memset(&out, 0, sizeof(out));
    sy_api_batches(&in, &out);
    *status = out.status;
    json_t *j = json_loadb(out.body, out.len, 0, NULL);
    free(out.body);
    assert_non_null(j);
    return j;
}

static json_t *list_page(const char *limit, const char *after, int *status)
{
    return list_page_as(NULL, limit, after, status);
}

/* A page of list_page(<limit>, <after>): 200 with the one batch <id> and has_more <more>. */
static void assert_one_page(const char *limit, const char *after, const char *id, bool more)
{
    int st;
    json_t *obj = list_page(limit, after, &st);
    assert_int_equal(st, 200);
    assert_int_equal(json_array_size(json_object_get(obj, "data")), 1);
    assert_string_equal(json_string_value(json_object_get(obj, "first_id")), id);
    assert_int_equal(json_is_true(json_object_get(obj, "has_more")), more);
    json_decref(obj);
}

/* A file owned by the tenant of Authorization <auth> (NULL = none); its id (new). */
static char *upload_as(const char *auth, const char *purpose, const char *text)
{
    json_t *f = NULL;
    char tbuf[SY_TENANT_MAX];
    const char *owner = sy_api_tenant(auth, tbuf, sizeof(tbuf));
    assert_int_equal(
        sy_files_create(files, owner, purpose, "in.jsonl", text, strlen(text), &f), SY_OK);
    char *id = strdup(json_string_value(json_object_get(f, "id")));
    json_decref(f);
    return id;
}

static char *upload(const char *purpose, const char *text)
{
    json_t *f = NULL;
    assert_int_equal(sy_files_create(files, NULL, purpose, "in.jsonl", text, strlen(text), &f), SY_OK);
    char *id = strdup(json_string_value(json_object_get(f, "id")));
    json_decref(f);
    return id;
}

static json_t *wait_status(const char *id, const char *want)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/batches/%s", id);
    for (int i = 0; i < 1000; i++) {
        int st;
        json_t *j = call("GET", path, NULL, &st, NULL);
        assert_int_equal(st, 200);
        if (strcmp(json_string_value(json_object_get(j, "status")), want) == 0)
            return j;
        json_decref(j);
        usleep(10000);
    }
    fail_msg("batch %s never reached %s", id, want);
    return NULL;
}

static char *create_as(const char *auth, const char *fid, int *status, json_t **obj)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"input_file_id\":\"%s\",\"endpoint\":\"" EP "\",\"completion_window\":\"24h\","
             "\"metadata\":{\"k\":\"v\"}}",
             fid);
    json_t *j = call_as(auth, "POST", "/v1/batches", body, status, NULL);
    char *id = *status == 200 ? strdup(json_string_value(json_object_get(j, "id"))) : NULL;
    *obj = j;
    return id;
}

static char *create(const char *fid, int *status, json_t **obj)
{
    return create_as(NULL, fid, status, obj);
}

/* A batch of tenant <auth> (its id, new), its response checked. */
static char *create_ok(const char *auth)
{
    int st;
    json_t *obj = NULL;
    char *fid = upload_as(auth, "batch", line_ok("t"));
    char *id = create_as(auth, fid, &st, &obj);
    assert_int_equal(st, 200);
    assert_non_null(id);
    json_decref(obj);
    free(fid);
    return id;
}

/* The ids of a list page, in order, checked against first_id/last_id. */
static void page_ids(json_t *page, char ids[][80], size_t *n)
{
    json_t *data = json_object_get(page, "data");
    *n = json_array_size(data);
    for (size_t i = 0; i < *n; i++)
        snprintf(ids[i], 80, "%s", json_string_value(json_object_get(json_array_get(data, i), "id")));
    if (*n > 0) {
        assert_string_equal(json_string_value(json_object_get(page, "first_id")), ids[0]);
        assert_string_equal(json_string_value(json_object_get(page, "last_id")), ids[*n - 1]);
    } else {
        assert_true(json_is_null(json_object_get(page, "first_id")));
    }
}

/* Two tenants: each lists only its own batches, and has_more is about its own (tenant A's
 * batches are the newest, so after A's last one only B's follow: no more for A). */
static void test_api_list_tenants(void **state)
{
    (void)state;
    const char *ta = "Bearer sk-tenant-a", *tb = "Bearer sk-tenant-b";
    char *b1 = create_ok(tb), *b2 = create_ok(tb);
    usleep(2000); /* creation times are in ms: A's are strictly newer */
    char *a1 = create_ok(ta), *a2 = create_ok(ta);
    char ids[8][80];
    size_t n;
    int st;

    json_t *p = list_page_as(ta, "2", NULL, &st);
    assert_int_equal(st, 200);
    page_ids(p, ids, &n);
    assert_int_equal(n, 2);
    assert_true((strcmp(ids[0], a1) == 0 && strcmp(ids[1], a2) == 0) ||
                (strcmp(ids[0], a2) == 0 && strcmp(ids[1], a1) == 0));
    assert_false(json_is_true(json_object_get(p, "has_more")));
    json_decref(p);

    /* one at a time: more, then none */
    p = list_page_as(ta, "1", NULL, &st);
    page_ids(p, ids, &n);
    assert_int_equal(n, 1);
    assert_true(json_is_true(json_object_get(p, "has_more")));
    json_decref(p);
    char first[80];
    snprintf(first, sizeof(first), "%s", ids[0]);
    p = list_page_as(ta, "1", first, &st);
    assert_int_equal(st, 200);
    page_ids(p, ids, &n);
    assert_int_equal(n, 1);
    assert_string_not_equal(ids[0], first);
    assert_false(json_is_true(json_object_get(p, "has_more")));
    json_decref(p);

    /* B sees its two, never A's; A's id is no cursor for B */
    p = list_page_as(tb, NULL, NULL, &st);
    page_ids(p, ids, &n);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        assert_true(strcmp(ids[i], b1) == 0 || strcmp(ids[i], b2) == 0);
    assert_false(json_is_true(json_object_get(p, "has_more")));
    json_decref(p);
    p = list_page_as(tb, NULL, a1, &st);
    page_ids(p, ids, &n);
    assert_int_equal(n, 0);
    json_decref(p);
    /* no bearer: a tenant of its own, with none */
    p = list_page_as(NULL, NULL, NULL, &st);
    page_ids(p, ids, &n);
    assert_int_equal(n, 0);
    assert_false(json_is_true(json_object_get(p, "has_more")));
    json_decref(p);
    free(a1);
    free(a2);
    free(b1);
    free(b2);
}

static void test_api_errors(void **state)
{
    (void)state;
    int st;
    const char *allow = NULL;
    json_t *j = call("DELETE", "/v1/batches", NULL, &st, &allow);
    assert_int_equal(st, 405);
    assert_string_equal(allow, "GET, POST");
    json_decref(j);
    j = call("GET", "/v1/batches/batch_missing", NULL, &st, NULL);
    assert_int_equal(st, 404);
    assert_non_null(json_object_get(json_object_get(j, "error"), "message"));
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
                                                             "message")),
                           "batch_missing"));
    json_decref(j);
    j = call("POST", "/v1/batches/batch_missing/cancel", NULL, &st, NULL);
    assert_int_equal(st, 404);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
                                                             "message")),
                           "batch_missing"));
    json_decref(j);
    j = call("GET", "/v1/batches/x/cancel", NULL, &st, &allow);
    assert_int_equal(st, 405);
    assert_string_equal(allow, "POST");
    json_decref(j);
    const char *bodies[][2] = {
        {"{\"endpoint\":\"" EP "\",\"completion_window\":\"24h\"}", "input_file_id"},
        {"{\"input_file_id\":\"file-x\",\"endpoint\":\"/v1/x\",\"completion_window\":\"24h\"}",
         "endpoint"},
        {"{\"input_file_id\":\"file-x\",\"endpoint\":\"" EP "\",\"completion_window\":\"1h\"}",
         "completion_window"},
        {"{\"input_file_id\":\"file-x\",\"endpoint\":\"" EP "\",\"completion_window\":\"24h\","
         "\"metadata\":{\"k\":1}}",
         "metadata"},
        {"{\"input_file_id\":\"file-nope\",\"endpoint\":\"" EP "\",\"completion_window\":\"24h\"}",
         "input_file_id"},
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        j = call("POST", "/v1/batches", bodies[i][0], &st, NULL);
        assert_int_equal(st, 400);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(j, "error"), "param")),
            bodies[i][1]);
        json_decref(j);
    }
    /* a file of another purpose */
    char *fid = upload("assistants", line_ok("a"));
    json_t *obj;
    char *id = create(fid, &st, &obj);
    assert_int_equal(st, 400);
    assert_null(id);
    json_decref(obj);
    free(fid);
}

static void test_api_lifecycle(void **state)
{
    (void)state;
    int st;
    /* an invalid input fails in validating with line-numbered errors */
    char text[2048];
    snprintf(text, sizeof(text), "%s\n{\"custom_id\":\"b\",\"method\":\"PUT\"}\n", line_ok("a"));
    char *fid = upload("batch", text);
    json_t *obj;
    char *bad = create(fid, &st, &obj);
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(obj, "status")), "validating");
    assert_string_equal(json_string_value(json_object_get(json_object_get(obj, "metadata"), "k")),
                        "v");
    assert_null(json_object_get(obj, "sy_tenant")); /* internal fields never shown */
    json_decref(obj);
    obj = wait_status(bad, "failed");
    json_t *e = json_array_get(json_object_get(json_object_get(obj, "errors"), "data"), 0);
    assert_int_equal(json_integer_value(json_object_get(e, "line")), 2);
    assert_string_equal(json_string_value(json_object_get(e, "code")), "invalid_method");
    assert_true(json_is_integer(json_object_get(obj, "failed_at")));
    json_decref(obj);
    free(fid);

    /* a valid one goes in_progress with its total; no workers here, so it stays there */
    snprintf(text, sizeof(text), "%s\n\n", line_ok("x"));
    strcat(text, line_ok("y"));
    fid = upload("batch", text);
    char *good = create(fid, &st, &obj);
    json_decref(obj);
    obj = wait_status(good, "in_progress");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(obj, "request_counts"), "total")), 2);
    json_decref(obj);
    /* the lines are queued (waited for: the enqueue follows the status change) */
    int64_t len = 0;
    for (int i = 0; i < 500 && len < 2; i++) {
        assert_int_equal(sy_store_xlen(store, BQ_STREAM, &len), SY_OK);
        if (len < 2)
            usleep(10000);
    }
    assert_int_equal(len, 2);

    /* one line finished (a result recorded twice counts once) */
    size_t n;
    const char *resp = "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
    char *l = sy_batch_result_line("x", 200, "r", resp, strlen(resp), NULL, NULL, &n);
    assert_int_equal(sy_batch_line_done(batch, good, 1, true, l, n, NULL), SY_OK);
    assert_int_equal(sy_batch_line_done(batch, good, 1, true, l, n, NULL), SY_OK);
    free(l);
    char path[128];
    snprintf(path, sizeof(path), "/v1/batches/%s", good);
    obj = call("GET", path, NULL, &st, NULL);
    json_t *rc = json_object_get(obj, "request_counts");
    assert_int_equal(json_integer_value(json_object_get(rc, "completed")), 1);
    assert_int_equal(json_integer_value(json_object_get(rc, "failed")), 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(obj, "usage"), "total_tokens")), 7);
    json_decref(obj);

    /* list: both batches, first_id/last_id, limit and after page through them */
    obj = call("GET", "/v1/batches", NULL, &st, NULL);
    assert_int_equal(st, 200);
    json_t *data = json_object_get(obj, "data");
    assert_int_equal(json_array_size(data), 2);
    char id0[80], id1[80];
    snprintf(id0, sizeof(id0), "%s", json_string_value(json_object_get(json_array_get(data, 0), "id")));
    snprintf(id1, sizeof(id1), "%s", json_string_value(json_object_get(json_array_get(data, 1), "id")));
    assert_true((strcmp(id0, good) == 0 && strcmp(id1, bad) == 0) ||
                (strcmp(id0, bad) == 0 && strcmp(id1, good) == 0));
    assert_string_equal(json_string_value(json_object_get(obj, "first_id")), id0);
    assert_string_equal(json_string_value(json_object_get(obj, "last_id")), id1);
    assert_false(json_is_true(json_object_get(obj, "has_more")));
    json_decref(obj);
    assert_one_page("1", NULL, id0, true);
    assert_one_page("1", id0, id1, false);
    obj = list_page("0", NULL, &st);
    assert_int_equal(st, 400);
    json_decref(obj);

    /* cancel: cancelling at once, cancelled once no line runs, with the finished line's output */
    snprintf(path, sizeof(path), "/v1/batches/%s/cancel", good);
    obj = call("POST", path, NULL, &st, NULL);
    assert_int_equal(st, 200);
    assert_string_equal(json_string_value(json_object_get(obj, "status")), "cancelling");
    json_decref(obj);
    obj = wait_status(good, "cancelled");
    const char *out = json_string_value(json_object_get(obj, "output_file_id"));
    assert_non_null(out);
    assert_true(json_is_null(json_object_get(obj, "error_file_id")));
    int fd;
    uint64_t flen;
    assert_int_equal(sy_files_open(files, NULL, out, &fd, &flen), SY_OK);
    char buf[1024];
    ssize_t k = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(k > 0);
    buf[k] = '\0';
    assert_non_null(strstr(buf, "\"custom_id\":\"x\""));
    assert_null(strstr(buf, "\"custom_id\":\"y\""));
    json_decref(obj);
    /* a finished batch cannot be cancelled */
    obj = call("POST", path, NULL, &st, NULL);
    assert_int_equal(st, 200); /* cancelled already: answered with the object */
    json_decref(obj);
    snprintf(path, sizeof(path), "/v1/batches/%s/cancel", bad);
    obj = call("POST", path, NULL, &st, NULL);
    assert_int_equal(st, 409);
    json_decref(obj);
    free(fid);
    free(bad);
    free(good);
}

/* A batch stored the way it was before per-tenant indexes: the object and B_INDEX only. */
static void put_legacy(sy_store *s, const char *id, const char *auth, int64_t ms)
{
    char key[SY_STORE_KEY_MAX], tbuf[SY_TENANT_MAX];
    const char *t = sy_api_tenant(auth, tbuf, sizeof(tbuf));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:i}, s:s}", "id", id, "object", "batch",
                          "endpoint", EP, "status", "completed", "created_at",
                          (json_int_t)(ms / 1000), "request_counts", "total", 0, "sy_tenant",
                          t != NULL ? t : "");
    char *text = json_dumps(o, JSON_COMPACT);
    assert_true(bk_obj(key, sizeof(key), id));
    assert_int_equal(sy_store_set(s, key, text, strlen(text), 0, SY_STORE_NX, NULL), SY_OK);
    assert_int_equal(sy_store_hincrby(s, B_INDEX, id, ms, NULL), SY_OK);
    free(text);
    json_decref(o);
}

static uint64_t store_ops(sy_store *s)
{
    sy_store_stats st;
    sy_store_stats_get(s, &st);
    return st.ops;
}

/* Listing reads the caller's index and the batches it shows, never the other tenants': a page
 * of 2 costs the same with 40 newer batches of another tenant in the store. Batches stored
 * before the per-tenant indexes are listed too (indexed by the first tenant listing). Runs on
 * a module without threads so the store's call count is the listing's alone. */
static void test_api_list_cost(void **state)
{
    (void)state;
    sy_store *qs = NULL;
    sy_files *qf = NULL;
    sy_batch *qb = NULL;
    char qdir[128];
    sy_store_opts o;
    sy_store_opts_init(&o);
    assert_int_equal(sy_store_new(&o, &qs), SY_OK);
    sy_store_opts_cleanup(&o);
    snprintf(qdir, sizeof(qdir), "%s/quiet", dir);
    assert_int_equal(sy_files_new(qdir, qs, 1 << 20, 1000, &qf), SY_OK);
    assert_int_equal(sy_batch_new(cfg, qs, qf, NULL, NULL, NULL, &qb), SY_OK);
    sy_files *keep_files = files;
    sy_batch *keep_batch = batch;
    files = qf;
    batch = qb;

    const char *ta = "Bearer sk-cost-a", *tb = "Bearer sk-cost-b";
    put_legacy(qs, "batch_legacya1", ta, 1000);
    put_legacy(qs, "batch_legacya2", ta, 2000);
    put_legacy(qs, "batch_legacyb1", tb, 3000);
    char *mine[5] = {strdup("batch_legacya1"), strdup("batch_legacya2")};
    int st;
    for (int i = 2; i < 5; i++)
        mine[i] = create_ok(ta);
    usleep(2000); /* B's are strictly newer: an unindexed listing reads them all first */
    char *theirs[40];
    for (int i = 0; i < 40; i++)
        theirs[i] = create_ok(tb);

    /* the first tenant listing of the store indexes the legacy batches (once) */
    json_decref(list_page_as(ta, "1", NULL, &st));
    /* A pages through its five */
    char ids[8][80], seen[8][80], after[80] = "";
    size_t n, total = 0;
    int pages = 0;
    uint64_t worst = 0;
    for (;;) {
        uint64_t before = store_ops(qs);
        json_t *p = list_page_as(ta, "2", after[0] ? after : NULL, &st);
        uint64_t cost = store_ops(qs) - before;
        assert_int_equal(st, 200);
        page_ids(p, ids, &n);
        if (cost > worst)
            worst = cost;
        for (size_t i = 0; i < n; i++) {
            assert_true(total < 8);
            memcpy(seen[total++], ids[i], sizeof(seen[0]));
        }
        bool more = json_is_true(json_object_get(p, "has_more"));
        json_decref(p);
        pages++;
        if (!more)
            break;
        snprintf(after, sizeof(after), "%s", ids[n - 1]);
        assert_true(pages < 5);
    }
    print_message("store calls per page of 2 (another tenant has 40 newer batches): %llu\n",
                  (unsigned long long)worst);
    assert_int_equal(pages, 3);
    assert_int_equal(total, 5);
    for (size_t k = 0; k < 5; k++) {
        bool found = false;
        for (size_t i = 0; i < total; i++)
            found = found || strcmp(seen[i], mine[k]) == 0;
        assert_true(found);
    }
    /* one index read plus the object and its counts per batch shown */
    assert_true(worst <= 1 + 2 * 2);
    /* B sees its 40 and its legacy one */
    json_t *p = list_page_as(tb, "100", NULL, &st);
    assert_int_equal(json_array_size(json_object_get(p, "data")), 41);
    json_decref(p);

    for (int i = 0; i < 5; i++)
        free(mine[i]);
    for (int i = 0; i < 40; i++)
        free(theirs[i]);
    files = keep_files;
    batch = keep_batch;
    sy_batch_free(qb);
    sy_files_free(qf);
    sy_store_free(qs);
}

/* A result settles its line once: a second one is not fresh, and one that comes after the line
 * was settled without it (its result key gone with the batch's end, or a finalize's tombstone
 * once-key) is dropped, not stored (batch_provider.c bills only fresh results). */
static void test_line_settled_once(void **state)
{
    (void)state;
    const char *id = "batch_settle";
    size_t n;
    const char *resp = "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}";
    char *l = sy_batch_result_line("a", 200, "r", resp, strlen(resp), NULL, NULL, &n);
    char rkey[SY_STORE_KEY_MAX], once[SY_STORE_KEY_MAX];
    bool fresh = false, there = true;

    assert_non_null(l);
    assert_int_equal(bline_put(batch, id, 1, true, l, n, &fresh), SY_OK);
    assert_true(fresh);
    assert_int_equal(bline_put(batch, id, 1, true, l, n, &fresh), SY_OK);
    assert_false(fresh);
    /* the batch ended: its result keys are removed, the once-keys stay */
    assert_true(bk_res(rkey, sizeof(rkey), id, 1));
    assert_int_equal(sy_store_del(store, rkey, NULL), SY_OK);
    assert_int_equal(bline_put(batch, id, 1, true, l, n, &fresh), SY_OK);
    assert_false(fresh);
    assert_int_equal(sy_store_exists(store, rkey, &there), SY_OK);
    assert_false(there); /* no orphan result */
    /* a tombstone (finalize gave up on line 2) */
    assert_true(bk_once(once, sizeof(once), id, 2));
    assert_int_equal(sy_store_set(store, once, "t", 1, 60000, SY_STORE_NX, NULL), SY_OK);
    assert_int_equal(bline_put(batch, id, 2, true, l, n, &fresh), SY_OK);
    assert_false(fresh);
    assert_true(bk_res(rkey, sizeof(rkey), id, 2));
    assert_int_equal(sy_store_exists(store, rkey, &there), SY_OK);
    assert_false(there);
    /* counted once in all */
    char cnt[SY_STORE_KEY_MAX];
    sy_store_kvs kv;
    assert_true(bk_cnt(cnt, sizeof(cnt), id));
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(store, cnt, &kv), SY_OK);
    long completed = -1;
    for (size_t i = 0; i < kv.n; i++)
        if (strcmp(kv.items[i].name, "completed") == 0)
            completed = strtol(kv.items[i].value, NULL, 10);
    assert_int_equal(completed, 1);
    sy_store_kvs_cleanup(&kv);
    free(l);
}

/* Installs finalize's test hook (batch_int.h; NULL removes it). */
static void set_fin_fault(bool (*fn)(void *, const char *))
{
    pthread_mutex_lock(&batch->mu);
    batch->fin_fault = fn;
    pthread_mutex_unlock(&batch->mu);
}

static _Atomic int fin_faults; /* finalize runs stopped by crash_once (sweeper thread) */

static bool crash_once(void *ud, const char *point)
{
    (void)ud;
    if (strcmp(point, "published") != 0 || fin_faults > 0)
        return false;
    fin_faults++;
    return true;
}

/* The content of file <fid> (new, NUL-terminated). */
static char *file_text(const char *fid)
{
    int fd;
    uint64_t flen;
    assert_int_equal(sy_files_open(files, NULL, fid, &fd, &flen), SY_OK);
    char *buf = calloc(1, (size_t)flen + 1);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)flen), (ssize_t)flen);
    close(fd);
    return buf;
}

/* A batch of two lines with custom ids <a> and <b>, created and in progress (new id; *fid the
 * new input file's id). */
static char *running_batch(const char *a, const char *b, char **fid)
{
    char text[1024];
    int st;
    json_t *obj;
    snprintf(text, sizeof(text), "%s\n", line_ok(a));
    strcat(text, line_ok(b));
    *fid = upload("batch", text);
    char *id = create(*fid, &st, &obj);
    assert_int_equal(st, 200);
    json_decref(obj);
    json_decref(wait_status(id, "in_progress"));
    return id;
}

/* A finalize that dies after publishing the output files and before the status change is run
 * again by the sweeper: the batch ends with one output and one error file, not a second copy
 * next to orphans, and no result is lost. */
static void test_finalize_crash(void **state)
{
    (void)state;
    fin_faults = 0;
    set_fin_fault(crash_once);
    char *fid;
    char *id = running_batch("x", "y", &fid);
    json_t *obj;
    size_t n;
    const char *resp = "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
    char *l = sy_batch_result_line("x", 200, "r", resp, strlen(resp), NULL, NULL, &n);
    assert_int_equal(sy_batch_line_done(batch, id, 1, true, l, n, NULL), SY_OK);
    free(l);
    const char *eresp = "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\","
                        "\"param\":null,\"code\":null}}";
    l = sy_batch_result_line("y", 400, "r", eresp, strlen(eresp), NULL, NULL, &n);
    assert_int_equal(sy_batch_line_done(batch, id, 2, false, l, n, NULL), SY_OK);
    free(l);
    obj = wait_status(id, "completed");
    assert_int_equal(fin_faults, 1); /* the first finalize died after publishing */
    const char *out = json_string_value(json_object_get(obj, "output_file_id"));
    const char *err = json_string_value(json_object_get(obj, "error_file_id"));
    assert_non_null(out);
    assert_non_null(err);
    /* exactly the two files the batch names */
    json_t *list = NULL;
    assert_int_equal(sy_files_list(files, NULL, "batch_output", 100, true, NULL, &list), SY_OK);
    json_t *data = json_object_get(list, "data");
    assert_int_equal(json_array_size(data), 2);
    for (size_t i = 0; i < 2; i++) {
        const char *fi = json_string_value(json_object_get(json_array_get(data, i), "id"));
        assert_true(strcmp(fi, out) == 0 || strcmp(fi, err) == 0);
    }
    json_decref(list);
    char *ot = file_text(out), *et = file_text(err);
    assert_non_null(strstr(ot, "\"custom_id\":\"x\""));
    assert_null(strstr(ot, "\"custom_id\":\"y\""));
    assert_non_null(strstr(et, "\"custom_id\":\"y\""));
    assert_int_equal(strchr(ot, '\n') - ot + 1, (long)strlen(ot)); /* one line */
    free(ot);
    free(et);
    json_decref(obj);
    set_fin_fault(NULL);
    free(fid);
    free(id);
}

/* A finalize that stops waiting for a line at a provider's batch API (grace 0 here) settles it
 * with its tombstone; a late answer caught between its result write and its count (the writer
 * drops it unbilled) is not read into the client's files: the line is batch_cancelled. */
static char late_key[SY_STORE_KEY_MAX], *late_val;
static size_t late_len;

static bool late_answer(void *ud, const char *point)
{
    (void)ud;
    if (strcmp(point, "give_up") == 0)
        assert_int_equal(sy_store_set(store, late_key, late_val, late_len, 0, SY_STORE_NX, NULL),
                         SY_OK);
    return false;
}

static void test_finalize_gives_up(void **state)
{
    (void)state;
    int st;
    char path[128], key[SY_STORE_KEY_MAX], *fid;
    char *id = running_batch("late", "ok", &fid);
    json_t *obj;
    /* line 1 is at a provider; its late answer is half-written (result, no once-key) just as
     * the finalize gives up on it */
    snprintf(key, sizeof(key), "{b}:pb:line:%s:1", id);
    assert_int_equal(sy_store_set(store, key, "{}", 2, 0, 0, NULL), SY_OK);
    size_t n;
    const char *resp = "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";
    char *l = sy_batch_result_line("late", 200, "r", resp, strlen(resp), NULL, NULL, &n);
    late_val = malloc(n + 1);
    assert_non_null(late_val);
    late_val[0] = 'o';
    memcpy(late_val + 1, l, n);
    late_len = n + 1;
    free(l);
    assert_true(bk_res(late_key, sizeof(late_key), id, 1));
    set_fin_fault(late_answer);
    l = sy_batch_result_line("ok", 200, "r", resp, strlen(resp), NULL, NULL, &n);
    assert_int_equal(sy_batch_line_done(batch, id, 2, true, l, n, NULL), SY_OK);
    free(l);
    snprintf(path, sizeof(path), "/v1/batches/%s/cancel", id);
    json_decref(call("POST", path, NULL, &st, NULL));
    assert_int_equal(st, 200);
    obj = wait_status(id, "cancelled");
    char *ot = file_text(json_string_value(json_object_get(obj, "output_file_id")));
    char *et = file_text(json_string_value(json_object_get(obj, "error_file_id")));
    assert_non_null(strstr(ot, "\"custom_id\":\"ok\""));
    assert_null(strstr(ot, "\"custom_id\":\"late\"")); /* counted by nobody, billed by nobody */
    assert_non_null(strstr(et, "\"custom_id\":\"late\""));
    assert_non_null(strstr(et, "batch_cancelled"));
    json_t *counts = json_object_get(obj, "request_counts");
    assert_int_equal(json_integer_value(json_object_get(counts, "completed")), 1);
    free(ot);
    free(et);
    json_decref(obj);
    set_fin_fault(NULL);
    free(late_val);
    (void)sy_store_del(store, key, NULL);
    free(fid);
    free(id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_line),
        cmocka_unit_test(test_validate_file),
        cmocka_unit_test(test_result_line),
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_batch_share),
        cmocka_unit_test_setup_teardown(test_api_errors, setup_api, teardown_api),
        cmocka_unit_test_setup_teardown(test_api_lifecycle, setup_api, teardown_api),
        cmocka_unit_test_setup_teardown(test_api_list_tenants, setup_api, teardown_api),
        cmocka_unit_test_setup_teardown(test_line_settled_once, setup_api, teardown_api),
        cmocka_unit_test_setup_teardown(test_finalize_crash, setup_api, teardown_api),
        cmocka_unit_test_setup_teardown(test_finalize_gives_up, setup_api, teardown_api),
        cmocka_unit_test_setup_teardown(test_api_list_cost, setup_api, teardown_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
