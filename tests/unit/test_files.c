/* Unit tests of files.c's C interface (what batch.c uses) and of the JSON side of its HTTP API,
 * on the embedded store with an injected clock shared by the store and the module (expiry is
 * tested without sleeping). Uploads (multipart) need a live connection: the integration test
 * tests/integration/files.test.mjs covers them. */
#include "switchyard/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/api.h"
#include "switchyard/buf.h"
#include "switchyard/store.h"

#include "../../src/store_int.h" /* test_sweep_store_down: a store whose reads fail */

static int64_t g_now = 1700000000000LL; /* ms */

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return g_now;
}

typedef struct fx {
    char dir[128];
    sy_store *store;
    sy_files *f;
} fx;

static void rm_rf(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
    fx *x = calloc(1, sizeof(*x));
    sy_store_opts o;

    snprintf(x->dir, sizeof(x->dir), "/tmp/sy_files_XXXXXX");
    if (mkdtemp(x->dir) == NULL)
        return -1;
    sy_store_opts_init(&o);
    o.mem.clock = fake_clock;
    if (sy_store_new(&o, &x->store) != SY_OK)
        return -1;
    sy_store_opts_cleanup(&o);
    if (sy_files_new(x->dir, x->store, 1 << 20, 100, &x->f) != SY_OK)
        return -1;
    sy_files_set_clock(x->f, fake_clock, NULL);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    sy_files_free(x->f);
    sy_store_free(x->store);
    rm_rf(x->dir);
    free(x);
    return 0;
}

static const char *sget(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_int_t iget(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static void read_fd(int fd, uint64_t len, char *buf, size_t cap)
{
    assert_true(len <= cap);
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, cap - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_int_equal(read(fd, buf, 1), 0); /* nothing past len */
}

static size_t count_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_create_get_open(void **state)
{
    fx *x = *state;
    const char data[] = {'{', '"', 'a', '"', ':', '1', '}', '\n', 0, (char)0xff, '\r', '\n'};
    json_t *obj = NULL, *got = NULL;
    int fd = -1;
    uint64_t len = 0;
    char buf[64], path[512];
    struct stat st;

    assert_int_equal(sy_files_create(x->f, NULL, "batch_output", "out.jsonl", data, sizeof(data), &obj),
                     SY_OK);
    const char *id = sget(obj, "id");
    assert_non_null(id);
    assert_int_equal(strncmp(id, "file-", 5), 0);
    assert_true(strlen(id) >= 5 + 24);
    for (const char *p = id + 5; *p; p++)
        assert_true((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9'));
    assert_string_equal(sget(obj, "object"), "file");
    assert_string_equal(sget(obj, "purpose"), "batch_output");
    assert_string_equal(sget(obj, "filename"), "out.jsonl");
    assert_string_equal(sget(obj, "status"), "processed");
    assert_int_equal(iget(obj, "bytes"), sizeof(data));
    assert_int_equal(iget(obj, "created_at"), g_now / 1000);
    assert_null(json_object_get(obj, "expires_at"));

    assert_int_equal(sy_files_get(x->f, NULL, id, &got), SY_OK);
    assert_true(json_equal(obj, got));
    assert_int_equal(sy_files_open(x->f, NULL, id, &fd, &len), SY_OK);
    assert_int_equal(len, sizeof(data));
    read_fd(fd, len, buf, sizeof(buf));
    assert_memory_equal(buf, data, sizeof(data));
    close(fd);

    /* content is private to the proxy's user */
    snprintf(path, sizeof(path), "%s/files/%s", x->dir, id);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* an empty file is a file */
    json_t *e = NULL;
    assert_int_equal(sy_files_create(x->f, NULL, "batch_output", "empty", NULL, 0, &e), SY_OK);
    assert_int_equal(sy_files_open(x->f, NULL, sget(e, "id"), &fd, &len), SY_OK);
    assert_int_equal(len, 0);
    close(fd);
    /* obj may be NULL */
    assert_int_equal(sy_files_create(x->f, NULL, "batch_output", "x", "a", 1, NULL), SY_OK);

    assert_int_equal(sy_files_create(x->f, NULL, "", "x", "a", 1, NULL), SY_EINVAL);
    assert_int_equal(sy_files_create(x->f, NULL, "batch", NULL, "a", 1, NULL), SY_EINVAL);
    assert_int_equal(sy_files_create(x->f, NULL, "batch", "x", NULL, 1, NULL), SY_EINVAL);
    json_decref(e);
    json_decref(obj);
    json_decref(got);
}

static void test_create_from_path(void **state)
{
    fx *x = *state;
    char p1[512], p2[512], buf[64];
    json_t *obj = NULL;
    int fd;
    uint64_t len;

    assert_int_equal(sy_files_tmp_path(x->f, p1, sizeof(p1)), SY_OK);
    assert_int_equal(sy_files_tmp_path(x->f, p2, sizeof(p2)), SY_OK);
    assert_string_not_equal(p1, p2);
    assert_int_equal(strncmp(p1, x->dir, strlen(x->dir)), 0);
    assert_int_equal(access(p1, F_OK), -1); /* only a name */
    assert_int_equal(sy_files_tmp_path(x->f, p2, 10), SY_ETOOBIG);

    FILE *w = fopen(p1, "w");
    assert_non_null(w);
    fputs("line 1\nline 2\n", w);
    fclose(w);
    assert_int_equal(sy_files_create_from_path(x->f, NULL, "batch_output", "res.jsonl", p1, &obj),
                     SY_OK);
    assert_int_equal(access(p1, F_OK), -1); /* moved */
    assert_int_equal(iget(obj, "bytes"), 14);
    assert_int_equal(sy_files_open(x->f, NULL, sget(obj, "id"), &fd, &len), SY_OK);
    read_fd(fd, len, buf, sizeof(buf));
    assert_memory_equal(buf, "line 1\nline 2\n", 14);
    close(fd);
    assert_int_equal(sy_files_create_from_path(x->f, NULL, "batch_output", "r", "/nonexistent/x", NULL),
                     SY_EINVAL);
    json_decref(obj);
}

static void test_unknown_ids(void **state)
{
    fx *x = *state;
    json_t *o = NULL;
    int fd = -1;
    uint64_t len;
    bool existed = true;
    const char *bad[] = {"", "file-", "file-../../etc/passwd", "../files", "file-abc/x",
                         "file-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                         "file-AAAAAAAAAAAAAAAAAAAAAAAA"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sy_files_get(x->f, NULL, bad[i], &o), SY_ENOTFOUND);
        assert_int_equal(sy_files_open(x->f, NULL, bad[i], &fd, &len), SY_ENOTFOUND);
        assert_int_equal(sy_files_delete(x->f, NULL, bad[i], &existed), SY_OK);
        assert_false(existed);
    }
    assert_int_equal(fd, -1);
}

static void test_delete(void **state)
{
    fx *x = *state;
    json_t *obj = NULL, *o = NULL;
    bool existed = false;
    int fd;
    uint64_t len;
    sy_store_kvs kv;

    assert_int_equal(sy_files_create(x->f, NULL, "batch", "in.jsonl", "x\n", 2, &obj), SY_OK);
    const char *id = sget(obj, "id");
    assert_int_equal(count_dir(x->dir), 1); /* "files" */
    char fdir[256];
    snprintf(fdir, sizeof(fdir), "%s/files", x->dir);
    assert_int_equal(count_dir(fdir), 1);
    assert_int_equal(sy_files_delete(x->f, NULL, id, &existed), SY_OK);
    assert_true(existed);
    assert_int_equal(count_dir(fdir), 0);
    assert_int_equal(sy_files_get(x->f, NULL, id, &o), SY_ENOTFOUND);
    assert_int_equal(sy_files_open(x->f, NULL, id, &fd, &len), SY_ENOTFOUND);
    assert_int_equal(sy_files_delete(x->f, NULL, id, &existed), SY_OK);
    assert_false(existed);
    /* the index entry went too */
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(x->store, "{files}:index", &kv), SY_OK);
    assert_int_equal(kv.n, 0);
    sy_store_kvs_cleanup(&kv);
    json_decref(obj);
}

/* Tenancy: another tenant's file is absent for every call in its scope; NULL sees all; the
 * owner never shows in the file object. */
static void test_scope(void **state)
{
    fx *x = *state;
    json_t *a = NULL, *b = NULL, *o = NULL, *l = NULL;
    bool existed = true;
    int fd = -1;
    uint64_t len = 0;

    assert_int_equal(sy_files_create(x->f, "k:aaaa", "batch", "a", "a\n", 2, &a), SY_OK);
    g_now += 1000;
    assert_int_equal(sy_files_create(x->f, "k:bbbb", "batch", "b", "b\n", 2, &b), SY_OK);
    assert_null(json_object_get(a, "sy_tenant"));
    const char *ida = sget(a, "id"), *idb = sget(b, "id");

    assert_int_equal(sy_files_get(x->f, "k:aaaa", ida, &o), SY_OK);
    assert_null(json_object_get(o, "sy_tenant"));
    json_decref(o);
    assert_int_equal(sy_files_get(x->f, "k:aaaa", idb, &o), SY_ENOTFOUND);
    assert_int_equal(sy_files_get(x->f, "", idb, &o), SY_ENOTFOUND);
    assert_int_equal(sy_files_open(x->f, "k:aaaa", idb, &fd, &len), SY_ENOTFOUND);
    assert_int_equal(sy_files_delete(x->f, "k:aaaa", idb, &existed), SY_OK);
    assert_false(existed);
    assert_int_equal(sy_files_get(x->f, NULL, idb, &o), SY_OK); /* still there */
    assert_null(json_object_get(o, "sy_tenant"));
    json_decref(o);
    assert_int_equal(sy_files_open(x->f, "k:bbbb", idb, &fd, &len), SY_OK);
    close(fd);

    assert_int_equal(sy_files_list(x->f, "k:aaaa", NULL, 10, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 1);
    assert_string_equal(sget(json_array_get(json_object_get(l, "data"), 0), "id"), ida);
    assert_null(json_object_get(json_array_get(json_object_get(l, "data"), 0), "sy_tenant"));
    json_decref(l);
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 10, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 2);
    json_decref(l);
    /* another tenant's id is no cursor */
    assert_int_equal(sy_files_list(x->f, "k:aaaa", NULL, 10, true, idb, &l), SY_ENOTFOUND);
    assert_int_equal(sy_files_list(x->f, "", NULL, 10, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 0);
    json_decref(l);

    assert_int_equal(sy_files_delete(x->f, "k:bbbb", idb, &existed), SY_OK);
    assert_true(existed);
    json_decref(a);
    json_decref(b);
}

/* Makes <n> files one second apart, purposes alternating; ids in creation order. */
static void make_files(fx *x, int n, char ids[][64])
{
    for (int i = 0; i < n; i++) {
        json_t *o = NULL;
        g_now += 1000;
        assert_int_equal(sy_files_create(x->f, NULL, i % 2 ? "batch_output" : "batch", "f", "x", 1, &o),
                         SY_OK);
        snprintf(ids[i], 64, "%s", sget(o, "id"));
        json_decref(o);
    }
}

static const char *list_id(const json_t *l, size_t i)
{
    return sget(json_array_get(json_object_get(l, "data"), i), "id");
}

static void test_list(void **state)
{
    fx *x = *state;
    char ids[5][64];
    json_t *l = NULL;

    assert_int_equal(sy_files_list(x->f, NULL, NULL, 10, false, NULL, &l), SY_OK);
    assert_string_equal(sget(l, "object"), "list");
    assert_int_equal(json_array_size(json_object_get(l, "data")), 0);
    assert_true(json_is_null(json_object_get(l, "first_id")));
    assert_false(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);

    make_files(x, 5, ids);
    /* newest first, two per page */
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 2, false, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 2);
    assert_string_equal(list_id(l, 0), ids[4]);
    assert_string_equal(list_id(l, 1), ids[3]);
    assert_string_equal(sget(l, "first_id"), ids[4]);
    assert_string_equal(sget(l, "last_id"), ids[3]);
    assert_true(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 2, false, ids[3], &l), SY_OK);
    assert_string_equal(list_id(l, 0), ids[2]);
    assert_string_equal(list_id(l, 1), ids[1]);
    assert_true(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 2, false, ids[1], &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 1);
    assert_string_equal(list_id(l, 0), ids[0]);
    assert_false(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    /* exactly a full last page: has_more false */
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 5, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 5);
    assert_string_equal(list_id(l, 0), ids[0]);
    assert_string_equal(list_id(l, 4), ids[4]);
    assert_false(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    /* purpose filter: batch files are 0, 2, 4; has_more looks past non-matching files */
    assert_int_equal(sy_files_list(x->f, NULL, "batch", 2, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 2);
    assert_string_equal(list_id(l, 0), ids[0]);
    assert_string_equal(list_id(l, 1), ids[2]);
    assert_true(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    assert_int_equal(sy_files_list(x->f, NULL, "batch_output", 2, true, ids[1], &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 1);
    assert_string_equal(list_id(l, 0), ids[3]);
    assert_false(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    /* unknown cursor, bad limits */
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 2, true, "file-nope", &l), SY_ENOTFOUND);
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 0, true, NULL, &l), SY_EINVAL);
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 10001, true, NULL, &l), SY_EINVAL);

    /* metadata gone behind the index's back (store TTL, crash mid-delete): skipped, cleaned */
    char key[96];
    snprintf(key, sizeof(key), "{file:%s}", ids[2]);
    assert_int_equal(sy_store_del(x->store, key, NULL), SY_OK);
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 10, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 4);
    assert_string_equal(list_id(l, 2), ids[3]);
    json_decref(l);
    sy_store_kvs kv;
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(x->store, "{files}:index", &kv), SY_OK);
    assert_int_equal(kv.n, 4);
    sy_store_kvs_cleanup(&kv);
}

/* A file whose metadata says it expires (uploads set it; here it is written directly). */
static void test_expiry(void **state)
{
    fx *x = *state;
    json_t *obj = NULL, *o = NULL, *l = NULL;
    char key[96], path[512];
    int fd;
    uint64_t len;

    assert_int_equal(sy_files_create(x->f, NULL, "batch", "in.jsonl", "x\n", 2, &obj), SY_OK);
    const char *id = sget(obj, "id");
    json_object_set_new(obj, "expires_at", json_integer(g_now / 1000 + 3600));
    char *js = json_dumps(obj, JSON_COMPACT);
    snprintf(key, sizeof(key), "{file:%s}", id);
    assert_int_equal(sy_store_set(x->store, key, js, strlen(js), 0, 0, NULL), SY_OK);
    free(js);
    snprintf(path, sizeof(path), "%s/files/%s", x->dir, id);

    g_now += 3599 * 1000;
    assert_int_equal(sy_files_get(x->f, NULL, id, &o), SY_OK);
    json_decref(o);
    g_now += 1000; /* now == expires_at */
    assert_int_equal(sy_files_open(x->f, NULL, id, &fd, &len), SY_ENOTFOUND);
    assert_int_equal(sy_files_get(x->f, NULL, id, &o), SY_ENOTFOUND);
    assert_int_equal(access(path, F_OK), -1); /* content removed on access */
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 10, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 0);
    json_decref(l);
    json_decref(obj);
}

/* Two instances on one store, with different data_dirs: both see the metadata; content is
 * only where it was written. */
static void test_shared_store(void **state)
{
    fx *x = *state;
    char dir2[128];
    sy_files *f2 = NULL;
    json_t *obj = NULL, *o = NULL, *l = NULL;
    int fd;
    uint64_t len;

    snprintf(dir2, sizeof(dir2), "/tmp/sy_files2_XXXXXX");
    assert_non_null(mkdtemp(dir2));
    assert_int_equal(sy_files_new(dir2, x->store, 1 << 20, 100, &f2), SY_OK);
    assert_int_equal(sy_files_create(x->f, NULL, "batch", "a", "abc", 3, &obj), SY_OK);
    assert_int_equal(sy_files_get(f2, NULL, sget(obj, "id"), &o), SY_OK);
    assert_true(json_equal(o, obj));
    assert_int_equal(sy_files_list(f2, NULL, NULL, 10, true, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 1);
    assert_int_equal(sy_files_open(f2, NULL, sget(obj, "id"), &fd, &len), SY_ENOTFOUND);
    assert_int_equal(sy_files_open(x->f, NULL, sget(obj, "id"), &fd, &len), SY_OK);
    close(fd);
    /* a third instance pointed at the first one's files directory (batch.files_dir) reads it */
    char shared[200];
    sy_files *f3 = NULL;
    snprintf(shared, sizeof(shared), "%s/files", x->dir);
    assert_int_equal(sy_files_new_dir(shared, x->store, 1 << 20, 100, &f3), SY_OK);
    assert_int_equal(sy_files_open(f3, NULL, sget(obj, "id"), &fd, &len), SY_OK);
    assert_int_equal(len, 3);
    close(fd);
    sy_files_free(f3);
    assert_int_equal(sy_files_new_dir("", x->store, 1, 1, &f3), SY_EINVAL);
    sy_files_free(f2);
    rm_rf(dir2);
    json_decref(obj);
    json_decref(o);
    json_decref(l);
}

static void test_new_errors(void **state)
{
    (void)state;
    sy_files *f = NULL;
    sy_store *s = NULL;
    sy_store_opts o;
    sy_store_opts_init(&o);
    assert_int_equal(sy_store_new(&o, &s), SY_OK);
    assert_int_not_equal(sy_files_new("/proc/nope/x", s, 1, 1, &f), SY_OK);
    assert_int_equal(sy_files_new(NULL, s, 1, 1, &f), SY_EINVAL);
    assert_null(f);
    sy_files_free(NULL);
    sy_upload_free(NULL);
    sy_store_free(s);
    sy_store_opts_cleanup(&o);
}

/* ---- the HTTP side, without HTTP -------------------------------------------------------- */

typedef struct args {
    const char *names[4];
    const char *values[4];
} args;

static const char *get_arg(void *hctx, const char *name)
{
    args *a = hctx;
    for (int i = 0; i < 4 && a->names[i] != NULL; i++)
        if (strcmp(a->names[i], name) == 0)
            return a->values[i];
    return NULL;
}

static json_t *call(fx *x, const char *method, const char *path, args *a, sy_reply *out)
{
    sy_api_in in = {.method = method, .path = path, .get_arg = get_arg, .hctx = a,
                    .files = x->f};
    memset(out, 0, sizeof(*out));
    sy_api_files(&in, out);
    json_t *j = out->body ? json_loadb(out->body, out->len, 0, NULL) : NULL;
    free(out->body);
    out->body = NULL;
    return j;
}

static void assert_error(json_t *j, const char *type, const char *param)
{
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_string_equal(sget(e, "type"), type);
    assert_non_null(sget(e, "message"));
    if (param != NULL)
        assert_string_equal(sget(e, "param"), param);
    assert_non_null(json_object_get(e, "code"));
    json_decref(j);
}

static void test_api(void **state)
{
    fx *x = *state;
    char ids[3][64], path[160];
    args none = {{NULL}, {NULL}};
    sy_reply r;
    json_t *j;

    make_files(x, 3, ids);
    args a = {{"limit", "order", NULL}, {"2", "asc", NULL}};
    j = call(x, "GET", "/v1/files", &a, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 2);
    assert_string_equal(list_id(j, 0), ids[0]);
    assert_true(json_is_true(json_object_get(j, "has_more")));
    json_decref(j);
    args b = {{"after", "purpose", NULL}, {ids[1], "batch", NULL}};
    j = call(x, "GET", "/v1/files", &b, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(j, "data")), 1); /* desc: ids[0] */
    assert_string_equal(list_id(j, 0), ids[0]);
    json_decref(j);
    args bad[] = {{{"limit"}, {"0"}}, {{"limit"}, {"10001"}}, {{"limit"}, {"x"}},
                  {{"order"}, {"up"}}, {{"after"}, {"file-nope"}}};
    const char *params[] = {"limit", "limit", "limit", "order", "after"};
    for (size_t i = 0; i < 5; i++) {
        j = call(x, "GET", "/v1/files", &bad[i], &r);
        assert_int_equal(r.status, 400);
        assert_error(j, "invalid_request_error", params[i]);
    }

    snprintf(path, sizeof(path), "/v1/files/%s", ids[1]);
    j = call(x, "GET", path, &none, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(sget(j, "id"), ids[1]);
    json_decref(j);
    snprintf(path, sizeof(path), "/v1/files/%s/content", ids[1]);
    j = call(x, "GET", path, &none, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.has_fd);
    assert_int_equal(r.fd_len, 1);
    assert_string_equal(r.content_type, "application/octet-stream");
    close(r.fd);
    j = call(x, "POST", path, &none, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET");
    assert_error(j, "invalid_request_error", NULL);

    snprintf(path, sizeof(path), "/v1/files/%s", ids[1]);
    j = call(x, "PUT", path, &none, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, DELETE");
    assert_error(j, "invalid_request_error", NULL);
    j = call(x, "DELETE", path, &none, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(sget(j, "id"), ids[1]);
    assert_string_equal(sget(j, "object"), "file");
    assert_true(json_is_true(json_object_get(j, "deleted")));
    json_decref(j);
    j = call(x, "DELETE", path, &none, &r);
    assert_int_equal(r.status, 404);
    assert_error(j, "invalid_request_error", "id");
    j = call(x, "GET", path, &none, &r);
    assert_int_equal(r.status, 404);
    assert_error(j, "invalid_request_error", "id");
    snprintf(path, sizeof(path), "/v1/files/%s/content", ids[1]);
    j = call(x, "GET", path, &none, &r);
    assert_int_equal(r.status, 404);
    assert_false(r.has_fd);
    assert_error(j, "invalid_request_error", "id");

    j = call(x, "GET", "/v1/files/file-abc/other", &none, &r);
    assert_int_equal(r.status, 404);
    assert_error(j, "invalid_request_error", NULL);
    j = call(x, "PATCH", "/v1/files", &none, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, POST");
    assert_error(j, "invalid_request_error", NULL);
    j = call(x, "POST", "/v1/files", &none, &r); /* no upload object: a server bug */
    assert_int_equal(r.status, 500);
    assert_error(j, "api_error", NULL);

    sy_api_in in = {.method = "GET", .path = "/v1/files", .files = NULL};
    memset(&r, 0, sizeof(r));
    sy_api_files(&in, &r);
    assert_int_equal(r.status, 503);
    free(r.body);
}

static uint64_t store_ops(sy_store *s)
{
    sy_store_stats st;
    sy_store_stats_get(s, &st);
    return st.ops;
}

/* A file of <owner> one second after the last; its id into <id>. */
static void make_owned(fx *x, const char *owner, const char *purpose, char id[64])
{
    json_t *o = NULL;
    g_now += 1000;
    assert_int_equal(sy_files_create(x->f, owner, purpose, "f", "x", 1, &o), SY_OK);
    snprintf(id, 64, "%s", sget(o, "id"));
    json_decref(o);
}

static bool has_field(sy_store *s, const char *key, const char *field)
{
    sy_store_kvs kv;
    bool found = false;
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(s, key, &kv), SY_OK);
    for (size_t i = 0; i < kv.n; i++)
        found = found || strcmp(kv.items[i].name, field) == 0;
    sy_store_kvs_cleanup(&kv);
    return found;
}

/* A tenant's listing reads its own index and the files it shows, never the other tenants': a
 * page of 2 costs the same with 40 newer files of another tenant. Files stored before the
 * per-tenant indexes (only in the global index, value without purpose) are listed too. A
 * purpose filter skips files by their index entry. Delete removes both entries. */
static void test_list_cost(void **state)
{
    fx *x = *state;
    char mine[5][64], theirs[42][64], after[64] = "";
    json_t *l = NULL;

    /* two legacy files of k:aaaa: no tenant index entry, an index value of ms only */
    for (int i = 0; i < 2; i++) {
        char ms[24];
        make_owned(x, "k:aaaa", "batch", mine[i]);
        assert_int_equal(sy_store_hdel(x->store, "{files}:tidx:k:aaaa", mine[i], NULL), SY_OK);
        snprintf(ms, sizeof(ms), "%lld", (long long)g_now);
        assert_int_equal(sy_store_hset(x->store, "{files}:index", mine[i], ms, strlen(ms), 0, NULL),
                         SY_OK);
    }
    for (int i = 2; i < 5; i++)
        make_owned(x, "k:aaaa", "batch", mine[i]);
    for (int i = 0; i < 42; i++) /* the two oldest are batch_output */
        make_owned(x, "k:bbbb", i < 2 ? "batch_output" : "batch", theirs[i]);

    /* the first tenant listing indexes the legacy files (once) */
    assert_int_equal(sy_files_list(x->f, "k:aaaa", NULL, 1, false, NULL, &l), SY_OK);
    json_decref(l);
    uint64_t worst = 0;
    int pages = 0;
    size_t total = 0;
    for (;;) {
        uint64_t before = store_ops(x->store);
        assert_int_equal(sy_files_list(x->f, "k:aaaa", NULL, 2, false, after[0] ? after : NULL, &l),
                         SY_OK);
        uint64_t cost = store_ops(x->store) - before;
        worst = cost > worst ? cost : worst;
        json_t *data = json_object_get(l, "data");
        for (size_t i = 0; i < json_array_size(data); i++) /* newest first */
            assert_string_equal(list_id(l, i), mine[4 - total - i]);
        total += json_array_size(data);
        pages++;
        bool more = json_is_true(json_object_get(l, "has_more"));
        if (more)
            snprintf(after, sizeof(after), "%s", sget(l, "last_id"));
        json_decref(l);
        if (!more)
            break;
        assert_true(pages < 5);
    }
    print_message("store calls per page of 2 (another tenant has 42 newer files): %llu\n",
                  (unsigned long long)worst);
    assert_int_equal(total, 5);
    assert_int_equal(pages, 3);
    /* the index, the cursor's file, two files and the read-ahead for has_more */
    assert_true(worst <= 5);

    /* k:bbbb's two batch_output files sit under 40 newer batch files: not read */
    uint64_t before = store_ops(x->store);
    assert_int_equal(sy_files_list(x->f, "k:bbbb", "batch_output", 2, false, NULL, &l), SY_OK);
    uint64_t cost = store_ops(x->store) - before;
    print_message("store calls for a purpose-filtered page of 2: %llu\n", (unsigned long long)cost);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 2);
    assert_string_equal(list_id(l, 0), theirs[1]);
    assert_false(json_is_true(json_object_get(l, "has_more")));
    json_decref(l);
    assert_true(cost <= 3);

    /* the master key still sees every file */
    assert_int_equal(sy_files_list(x->f, NULL, NULL, 100, false, NULL, &l), SY_OK);
    assert_int_equal(json_array_size(json_object_get(l, "data")), 47);
    json_decref(l);

    /* delete takes the file out of both indexes */
    bool existed = false;
    assert_true(has_field(x->store, "{files}:tidx:k:aaaa", mine[0]));
    assert_int_equal(sy_files_delete(x->f, "k:aaaa", mine[0], &existed), SY_OK);
    assert_true(existed);
    assert_false(has_field(x->store, "{files}:tidx:k:aaaa", mine[0]));
    assert_false(has_field(x->store, "{files}:index", mine[0]));
}

/* Sets the content mtime of <id> (or of the file <name> under files/) to <ms> of g_now's clock. */
static void set_mtime(fx *x, const char *name, int64_t ms)
{
    char path[512];
    struct timespec ts[2];
    snprintf(path, sizeof(path), "%s/files/%s", x->dir, name);
    ts[0].tv_sec = ts[1].tv_sec = (time_t)(ms / 1000);
    ts[0].tv_nsec = ts[1].tv_nsec = (long)(ms % 1000) * 1000000;
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static bool on_disk(fx *x, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/files/%s", x->dir, name);
    return access(path, F_OK) == 0;
}

static void put_file(fx *x, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/files/%s", x->dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x\n", 2), 2);
    close(fd);
}

/* Gives file <id> an expires_at of <at_s> in its stored metadata, with a store TTL of <ttl_ms>
 * (0: none, so the metadata outlives the expiry). */
static void set_expiry(fx *x, const char *id, int64_t at_s, int64_t ttl_ms)
{
    char key[96];
    sy_buf b;
    snprintf(key, sizeof(key), "{file:%s}", id);
    sy_buf_init(&b, 65536);
    assert_int_equal(sy_store_get(x->store, key, &b), SY_OK);
    json_t *o = json_loadb(b.data, b.len, 0, NULL);
    assert_non_null(o);
    json_object_set_new(o, "expires_at", json_integer(at_s));
    char *js = json_dumps(o, JSON_COMPACT);
    assert_int_equal(sy_store_set(x->store, key, js, strlen(js), ttl_ms, 0, NULL), SY_OK);
    free(js);
    json_decref(o);
    sy_buf_cleanup(&b);
}

static bool meta_there(fx *x, const char *id)
{
    char key[96];
    bool there = false;
    snprintf(key, sizeof(key), "{file:%s}", id);
    assert_int_equal(sy_store_exists(x->store, key, &there), SY_OK);
    return there;
}

/* Runs sweep rounds of <budget> per call until one ends; returns the files removed. */
static size_t sweep_round(fx *x, size_t budget)
{
    size_t total = 0, removed = 0;
    bool done = false;
    for (int calls = 0; !done; calls++) {
        assert_true(calls < 100);
        assert_int_equal(sy_files_sweep(x->f, budget, &removed, &done), SY_OK);
        total += removed;
    }
    return total;
}

/* The sweep removes what expiry leaves behind: content and both index entries of a file whose
 * metadata the store expired, all of a file whose metadata says it expired, old crash
 * leftovers; and nothing else: a valid file, content without metadata that is young (an upload
 * or republish in progress), a valid file missing from the index. Content mtimes are set on the
 * test's clock. */
static void test_sweep(void **state)
{
    fx *x = *state;
    char gone[64], expd[64], keep[64], legacy[64], repub[64], unidx[64], key[96], ms[24];
    const int64_t H = 3600 * 1000;

    g_now = (int64_t)time(NULL) * 1000; /* the contents' mtimes are real */
    make_owned(x, "k:aaaa", "batch", gone);   /* metadata expired by the store's TTL */
    set_expiry(x, gone, g_now / 1000 + 3600, H);
    make_owned(x, "k:bbbb", "batch", expd);   /* expires_at passed, metadata still there */
    set_expiry(x, expd, g_now / 1000 + 3600, 0);
    make_owned(x, "k:aaaa", "batch", keep);   /* valid; index value of before the tenant */
    char keep_ms[24];
    snprintf(keep_ms, sizeof(keep_ms), "%lld", (long long)g_now);
    assert_int_equal(sy_store_hset(x->store, "{files}:index", keep, keep_ms, strlen(keep_ms), 0,
                                   NULL),
                     SY_OK);
    make_owned(x, "k:aaaa", "batch", legacy); /* expired; index value of before the tenant */
    set_expiry(x, legacy, g_now / 1000 + 3600, H);
    snprintf(ms, sizeof(ms), "%lld", (long long)g_now);
    assert_int_equal(sy_store_hset(x->store, "{files}:index", legacy, ms, strlen(ms), 0, NULL),
                     SY_OK);
    make_owned(x, "k:aaaa", "batch", repub); /* metadata gone, content being republished */
    snprintf(key, sizeof(key), "{file:%s}", repub);
    assert_int_equal(sy_store_del(x->store, key, NULL), SY_OK);
    make_owned(x, "k:cccc", "batch", unidx); /* valid, its global index entry lost */
    assert_int_equal(sy_store_hdel(x->store, "{files}:index", unidx, NULL), SY_OK);

    g_now += 2 * H; /* the store drops the TTL'd metadata */
    assert_false(meta_there(x, gone));
    assert_true(meta_there(x, expd));
    set_mtime(x, repub, g_now - 1000);
    set_mtime(x, unidx, g_now - 48 * H);
    put_file(x, "file-young0upload");  /* renamed into place, metadata not written yet */
    set_mtime(x, "file-young0upload", g_now - 1000);
    put_file(x, "file-old0leftover");  /* a crash between rename and metadata, long ago */
    set_mtime(x, "file-old0leftover", g_now - 48 * H);
    put_file(x, "tmp-young.part");
    set_mtime(x, "tmp-young.part", g_now - H);
    put_file(x, "tmp-old.part");
    set_mtime(x, "tmp-old.part", g_now - 48 * H);

    size_t removed = sweep_round(x, 2); /* pages of two */
    assert_int_equal(removed, 4);       /* gone, expd, legacy, file-old0leftover */

    assert_false(on_disk(x, gone));
    assert_false(has_field(x->store, "{files}:index", gone));
    assert_false(has_field(x->store, "{files}:tidx:k:aaaa", gone));
    assert_false(on_disk(x, expd));
    assert_false(meta_there(x, expd));
    assert_false(has_field(x->store, "{files}:index", expd));
    assert_false(has_field(x->store, "{files}:tidx:k:bbbb", expd));
    assert_false(on_disk(x, legacy));
    assert_false(has_field(x->store, "{files}:index", legacy));
    assert_false(on_disk(x, "file-old0leftover"));
    assert_false(on_disk(x, "tmp-old.part"));

    assert_true(on_disk(x, keep));
    assert_true(meta_there(x, keep));
    assert_true(has_field(x->store, "{files}:index", keep));
    assert_true(has_field(x->store, "{files}:tidx:k:aaaa", keep));
    sy_store_kvs kv;
    char want[80];
    snprintf(want, sizeof(want), "%s batch k:aaaa", keep_ms); /* now it says its tenant */
    sy_store_kvs_init(&kv);
    assert_int_equal(sy_store_hgetall(x->store, "{files}:index", &kv), SY_OK);
    for (size_t i = 0; i < kv.n; i++)
        if (strcmp(kv.items[i].name, keep) == 0)
            assert_string_equal(kv.items[i].value, want);
    sy_store_kvs_cleanup(&kv);
    assert_true(on_disk(x, repub));
    assert_true(has_field(x->store, "{files}:index", repub));
    assert_true(has_field(x->store, "{files}:tidx:k:aaaa", repub));
    assert_true(on_disk(x, unidx));
    assert_true(meta_there(x, unidx));
    assert_true(on_disk(x, "file-young0upload"));
    assert_true(on_disk(x, "tmp-young.part"));
    json_t *o = NULL;
    int fd = -1;
    uint64_t len = 0;
    assert_int_equal(sy_files_open(x->f, "k:aaaa", keep, &fd, &len), SY_OK);
    assert_int_equal(len, 1);
    close(fd);
    assert_int_equal(sy_files_get(x->f, "k:cccc", unidx, &o), SY_OK);
    json_decref(o);

    /* the next round waits for its period; once the republish is old it goes too */
    bool done = false;
    assert_int_equal(sy_files_sweep(x->f, 10, &removed, &done), SY_OK);
    assert_true(done);
    assert_int_equal(removed, 0);
    g_now += H;
    assert_int_equal(sweep_round(x, 100), 1);
    assert_false(on_disk(x, repub));
    assert_false(has_field(x->store, "{files}:index", repub));
    assert_false(has_field(x->store, "{files}:tidx:k:aaaa", repub));
    assert_true(on_disk(x, keep));
    assert_true(on_disk(x, "file-young0upload")); /* younger than a day */
}

/* A store that answers the index but fails every metadata read (Redis down or timing out
 * mid-round): what test_sweep_store_down sweeps with. */
static const sy_store_vt *g_real_vt;
static sy_store_vt g_down_vt;

static sy_err down_get(sy_store *s, const char *key, sy_buf *out)
{
    (void)s;
    (void)key;
    (void)out;
    return SY_EUNAVAIL;
}

/* A metadata read that fails is never taken for metadata that is gone: while reads fail the
 * sweep removes nothing (neither the expired file's nor the valid files' content or entries)
 * and says so; once the store answers, the round resumes and removes only the expired file. */
static void test_sweep_store_down(void **state)
{
    fx *x = *state;
    char gone[64], keep[64], unidx[64];
    const int64_t H = 3600 * 1000;
    size_t removed = 1;
    bool done = true;

    g_now = (int64_t)time(NULL) * 1000; /* the contents' mtimes are real */
    make_owned(x, "k:aaaa", "batch", gone); /* metadata expired by the store's TTL */
    set_expiry(x, gone, g_now / 1000 + 3600, H);
    make_owned(x, "k:aaaa", "batch", keep); /* valid */
    make_owned(x, "k:cccc", "batch", unidx); /* valid, its global index entry lost */
    assert_int_equal(sy_store_hdel(x->store, "{files}:index", unidx, NULL), SY_OK);
    g_now += 48 * H; /* everything is old, and gone's metadata has expired */
    set_mtime(x, gone, g_now - 47 * H);
    set_mtime(x, keep, g_now - 47 * H);
    set_mtime(x, unidx, g_now - 47 * H);
    assert_false(meta_there(x, gone));

    g_real_vt = x->store->vt;
    g_down_vt = *x->store->vt;
    g_down_vt.get = down_get;
    x->store->vt = &g_down_vt;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sy_files_sweep(x->f, 100, &removed, &done), SY_EUNAVAIL);
        assert_int_equal(removed, 0);
        assert_false(done);
    }
    x->store->vt = g_real_vt;

    assert_true(on_disk(x, gone));
    assert_true(has_field(x->store, "{files}:index", gone));
    assert_true(has_field(x->store, "{files}:tidx:k:aaaa", gone));
    assert_true(on_disk(x, keep));
    assert_true(meta_there(x, keep));
    assert_true(has_field(x->store, "{files}:index", keep));
    assert_true(has_field(x->store, "{files}:tidx:k:aaaa", keep));
    assert_true(on_disk(x, unidx));
    assert_true(meta_there(x, unidx));

    /* the store is back: the same round goes on and removes only the expired file */
    assert_int_equal(sweep_round(x, 100), 1);
    assert_false(on_disk(x, gone));
    assert_false(has_field(x->store, "{files}:index", gone));
    assert_false(has_field(x->store, "{files}:tidx:k:aaaa", gone));
    assert_true(on_disk(x, keep));
    assert_true(on_disk(x, unidx));
    assert_true(meta_there(x, unidx));
}

/* With a shared store, old content in no index entry is swept only while the store knows the
 * directory's token: a store that lost its data, or another store, would make every file of
 * the directory look orphaned. The first round pairs a directory that has no token yet. */
static void test_sweep_unpaired_store(void **state)
{
    fx *x = *state;
    char path[600], tok[32] = "";
    const int64_t H = 3600 * 1000;

    x->store->kind = SY_STORE_REDIS; /* the same backend, taken for a shared one */
    g_now = (int64_t)time(NULL) * 1000;
    put_file(x, "file-old0leftover1");
    set_mtime(x, "file-old0leftover1", g_now - 48 * H);

    /* the first round makes the token and registers it; it sweeps no orphans yet */
    assert_int_equal(sweep_round(x, 100), 0);
    assert_true(on_disk(x, "file-old0leftover1"));
    snprintf(path, sizeof(path), "%s/files/.store-token", x->dir);
    FILE *t = fopen(path, "r");
    assert_non_null(t);
    assert_int_equal(fread(tok, 1, sizeof(tok) - 1, t), 24);
    fclose(t);
    assert_true(has_field(x->store, "{files}:dirs", tok));

    /* paired: the next round removes the leftover */
    g_now += 2 * 60 * 1000;
    assert_int_equal(sweep_round(x, 100), 1);
    assert_false(on_disk(x, "file-old0leftover1"));

    /* the store lost its data (or is another one): old content with no metadata stays */
    put_file(x, "file-old0leftover2");
    set_mtime(x, "file-old0leftover2", g_now - 48 * H);
    assert_int_equal(sy_store_del(x->store, "{files}:dirs", NULL), SY_OK);
    g_now += 2 * 60 * 1000;
    assert_int_equal(sweep_round(x, 100), 0);
    g_now += 2 * 60 * 1000;
    assert_int_equal(sweep_round(x, 100), 0);
    assert_true(on_disk(x, "file-old0leftover2"));
    x->store->kind = SY_STORE_MEM;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_get_open), T(test_create_from_path), T(test_unknown_ids), T(test_delete),
        T(test_list),            T(test_expiry),           T(test_shared_store),
        cmocka_unit_test(test_new_errors), T(test_api),             T(test_scope),
        T(test_list_cost),       T(test_sweep),            T(test_sweep_store_down), T(test_sweep_unpaired_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
