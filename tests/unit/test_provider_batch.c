/* Unit tests for provider_batch against the real fake upstream (a child process): submit, poll
 * and results for OpenAI Batches and Anthropic Message Batches; every result equals what the
 * fake's direct endpoint answers for the same translated body; an errored line, expired and
 * cancelled lines, rejected (untranslatable) lines, failed submits with the key kept out of the
 * error, and the fake's counters prove one provider batch ran each line exactly once and no
 * per-line chat call was made.
 *
 * The fake is $SY_FAKE_BIN, else fake_upstream next to this test binary (both are built into
 * the build directory). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switchyard/provider.h"
#include "switchyard/provider_anthropic.h"
#include "switchyard/provider_batch.h"
#include "switchyard/provider_openai.h"

#define KEY "sk-test-secret-key-123"
#define MAX_POLLS 50

static pid_t fake_pid;
static char fake_addr[64];

/* ------------------------------------------------------------------ the fake --------------- */

static int start_fake(void **state)
{
    char bin[PATH_MAX], self[PATH_MAX];
    const char *env = getenv("SY_FAKE_BIN");
    int pfd[2];
    FILE *out;
    char line[256];
    ssize_t n;

    (void)state;
    if (env != NULL && env[0] != '\0') {
        snprintf(bin, sizeof(bin), "%s", env);
    } else {
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
            return -1;
        self[n] = '\0';
        snprintf(bin, sizeof(bin), "%s/fake_upstream", dirname(self));
    }
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "fake upstream not found at %s\n", bin);
        return -1;
    }
    if (pipe(pfd) != 0)
        return -1;
    fake_pid = fork();
    if (fake_pid < 0)
        return -1;
    if (fake_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execl(bin, bin, "--listen", "127.0.0.1:0", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    out = fdopen(pfd[0], "r");
    if (out == NULL || fgets(line, sizeof(line), out) == NULL ||
        sscanf(line, "listening on %63s", fake_addr) != 1) {
        fprintf(stderr, "fake upstream did not start\n");
        return -1;
    }
    fclose(out);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int stop_fake(void **state)
{
    (void)state;
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
    }
    curl_global_cleanup();
    return 0;
}

typedef struct resp {
    char *data;
    size_t len;
} resp;

static size_t collect(char *p, size_t s, size_t n, void *ud)
{
    resp *r = ud;
    char *q = realloc(r->data, r->len + s * n + 1);
    if (q == NULL)
        return 0;
    memcpy(q + r->len, p, s * n);
    r->len += s * n;
    q[r->len] = '\0';
    r->data = q;
    return s * n;
}

/* A direct request to the fake; returns the parsed answer (new) and the status. */
static json_t *fake_call(const char *method, const char *path, const char *body,
                         struct curl_slist *hdr, long *status)
{
    char url[512];
    resp r = {0};
    CURL *e = curl_easy_init();
    json_t *j;

    snprintf(url, sizeof(url), "http://%s%s", fake_addr, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    if (hdr != NULL)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(e);
    j = json_loads(r.data ? r.data : "", 0, NULL);
    free(r.data);
    assert_non_null(j);
    return j;
}

static json_t *stats(void)
{
    long st = 0;
    json_t *j = fake_call("GET", "/_stats", NULL, NULL, &st);
    assert_int_equal(st, 200);
    return j;
}

static long stat_of(const json_t *s, const char *k)
{
    return (long)json_integer_value(json_object_get(s, k));
}

static long runs_of(const json_t *s, const char *cid)
{
    return (long)json_integer_value(json_object_get(json_object_get(s, "batch_line_runs"), cid));
}

static sy_deployment dep(sy_provider p, const char *prefix)
{
    static char base[8][256];
    static int next;
    sy_deployment d;
    char *b = base[next++ % 8];

    memset(&d, 0, sizeof(d));
    d.name = p == SY_PROVIDER_ANTHROPIC ? "claude-batch" : "gpt-batch";
    d.provider = p;
    snprintf(b, 256, "http://%s%s%s", fake_addr, prefix ? prefix : "",
             p == SY_PROVIDER_OPENAI ? "/v1" : "");
    d.base_url = b;
    d.model = p == SY_PROVIDER_ANTHROPIC ? "claude-up" : "gpt-up";
    d.api_key = KEY;
    d.anthropic_version = "2023-06-01";
    d.default_max_tokens = 100;
    d.connect_timeout_ms = 5000;
    d.total_timeout_ms = 30000;
    d.batch_api = true;
    return d;
}

static json_t *parse(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    return j;
}

/* ------------------------------------------------------------------ collecting results ---- */

typedef struct got {
    json_t *by_id; /* custom_id -> {"status": N, "body": ..., "usage": [p, c]} */
    int calls;
    int stop_after; /* > 0: stop after this many */
} got;

static int on_result(void *ud, const sy_provider_batch_result *r)
{
    got *g = ud;
    json_t *rec = json_pack("{s:i,s:O,s:[I,I],s:b}", "status", r->status, "body", r->body,
                            "usage", (json_int_t)r->usage.prompt,
                            (json_int_t)r->usage.completion, "has_usage", r->has_usage);
    assert_non_null(rec);
    assert_null(json_object_get(g->by_id, r->custom_id)); /* each custom_id once */
    json_object_set_new(g->by_id, r->custom_id, rec);
    g->calls++;
    return g->stop_after > 0 && g->calls >= g->stop_after ? 1 : 0;
}

static sy_provider_batch_state poll_until_done(const sy_deployment *d, const char *id,
                                               sy_provider_batch_status *st, int *polls)
{
    sy_provider_batch_error e = {0};

    for (*polls = 0; *polls < MAX_POLLS; (*polls)++) {
        assert_int_equal(sy_provider_batch_poll(d, id, st, &e), SY_OK);
        if (st->state != SY_PROVIDER_BATCH_PENDING)
            break;
    }
    sy_provider_batch_error_cleanup(&e);
    return st->state;
}

/* What the fake answers directly for <body> translated for <d>, normalized to OpenAI. */
static json_t *direct(const sy_deployment *d, const json_t *body, long *status)
{
    const sy_provider_ops *ops = sy_provider_get(d->provider);
    char msg[256] = "";
    size_t len = 0;
    char *text = ops->body(d, SY_EP_CHAT, body, false, &len, msg, sizeof(msg));
    struct curl_slist *h = NULL;
    json_t *j;

    assert_non_null(text);
    if (d->provider == SY_PROVIDER_ANTHROPIC) {
        h = curl_slist_append(h, "x-api-key: " KEY);
        h = curl_slist_append(h, "anthropic-version: 2023-06-01");
    }
    j = fake_call("POST", d->provider == SY_PROVIDER_ANTHROPIC ? "/v1/messages"
                                                               : "/v1/chat/completions",
                  text, h, status);
    curl_slist_free_all(h);
    free(text);
    if (*status == 200) {
        assert_int_equal(ops->normalize(SY_EP_CHAT, &j, false, msg, sizeof(msg)), SY_OK);
    } else { /* the error as the relay hands it to a client */
        char *raw = json_dumps(j, JSON_COMPACT), *wrapped = ops->wrap_error((int)*status, raw,
                                                                            strlen(raw), KEY,
                                                                            &len);
        json_decref(j);
        j = parse(wrapped);
        free(raw);
        free(wrapped);
    }
    return j;
}

static const char *content_of(const json_t *answer)
{
    return json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(answer, "choices"), 0), "message"),
        "content"));
}

/* ------------------------------------------------------------------ tests ------------------ */

static const char *const bodies[] = {
    "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\",\"content\":\"first line\"}]}",
    "{\"model\":\"client-model\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
    "{\"role\":\"user\",\"content\":\"second, a longer line of text\"}],\"max_tokens\":50}",
    NULL, /* FAIL_FMT */
    "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\",\"content\":\"words\"}],"
    "\"max_tokens\":20,\"temperature\":0.5}",
};
#define NLINES 4
#define FAIL_FMT                                                                                   \
    "{\"model\":\"client-model\",\"messages\":[{\"role\":\"user\",\"content\":\"this one fails "    \
    "[[fake status=%d]]\"}]}"

/* Submits the four lines (the third one errs with <fail_status>) and checks every result
 * against the direct answer. */
static void roundtrip(sy_provider p, int fail_status)
{
    sy_deployment d = dep(p, NULL);
    sy_provider_batch_line lines[NLINES];
    json_t *parsed[NLINES];
    char cids[NLINES][32], id[SY_PROVIDER_BATCH_ID_MAX], text[512];
    sy_provider_batch_error e = {0};
    sy_provider_batch_status st;
    got g = {.by_id = json_object()};
    json_t *before = stats(), *after;
    size_t submitted = 0;
    int polls = 0, i;

    for (i = 0; i < NLINES; i++) {
        if (i == 2)
            snprintf(text, sizeof(text), FAIL_FMT, fail_status);
        else
            snprintf(text, sizeof(text), "%s", bodies[i]);
        parsed[i] = parse(text);
        snprintf(cids[i], sizeof(cids[i]), "%s-line-%d", p == SY_PROVIDER_OPENAI ? "oa" : "an",
                 i);
        lines[i].custom_id = cids[i];
        lines[i].body = parsed[i];
    }
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, lines, NLINES, "tag1", NULL, NULL,
                                              id, sizeof(id), &submitted, &e),
                     SY_OK);
    assert_int_equal(submitted, NLINES);
    assert_true(id[0] != '\0');
    assert_null(e.body);

    /* the fake's default: the second retrieve ends it; lines have not run before */
    assert_int_equal(sy_provider_batch_poll(&d, id, &st, &e), SY_OK);
    assert_int_equal(st.state, SY_PROVIDER_BATCH_PENDING);
    assert_int_equal(st.total, NLINES);
    assert_int_equal(st.pending, NLINES);
    assert_int_equal(poll_until_done(&d, id, &st, &polls), SY_PROVIDER_BATCH_ENDED);
    assert_int_equal(st.succeeded, NLINES - 1);
    assert_int_equal(st.errored, 1);
    assert_int_equal(st.pending, 0);

    assert_int_equal(sy_provider_batch_results(&d, SY_EP_CHAT, id, on_result, &g, &e), SY_OK);
    assert_int_equal(g.calls, NLINES);
    after = stats();
    for (i = 0; i < NLINES; i++) {
        json_t *rec = json_object_get(g.by_id, cids[i]), *want;
        const json_t *body = json_object_get(rec, "body");
        long wst = 0;

        assert_non_null(rec);
        assert_int_equal(runs_of(after, cids[i]), 1); /* each line ran exactly once */
        want = direct(&d, parsed[i], &wst);
        assert_int_equal(json_integer_value(json_object_get(rec, "status")), wst);
        if (i == 2) {
            /* the errored line: the provider's status, an OpenAI error body */
            assert_int_equal(wst, fail_status);
            assert_non_null(json_object_get(json_object_get(body, "error"), "message"));
            assert_true(json_equal(json_object_get(body, "error"), json_object_get(want, "error")));
        } else {
            assert_int_equal(wst, 200);
            assert_string_equal(json_string_value(json_object_get(body, "object")),
                                "chat.completion");
            assert_string_equal(content_of(body), content_of(want));
            /* the deployment's model was substituted for the client's */
            assert_string_equal(json_string_value(json_object_get(body, "model")), d.model);
            assert_true(json_equal(json_object_get(body, "usage"),
                                   json_object_get(want, "usage")));
            assert_true(json_is_true(json_object_get(rec, "has_usage")));
            assert_int_equal(
                json_integer_value(json_array_get(json_object_get(rec, "usage"), 0)),
                json_integer_value(json_object_get(json_object_get(want, "usage"),
                                                   "prompt_tokens")));
            assert_true(json_integer_value(json_array_get(json_object_get(rec, "usage"), 1)) > 0);
        }
        json_decref(want);
    }
    /* one provider batch, no per-line calls to the chat/messages endpoints (the direct calls
     * above are the only ones) */
    {
        json_t *end = stats();
        const char *ep = p == SY_PROVIDER_OPENAI ? "chat" : "messages";
        assert_int_equal(stat_of(after, ep) - stat_of(before, ep), 0);
        assert_int_equal(stat_of(end, ep) - stat_of(after, ep), NLINES);
        assert_int_equal(stat_of(after, "batch_lines") - stat_of(before, "batch_lines"), NLINES);
        if (p == SY_PROVIDER_OPENAI) /* upload + content of output and error files */
            assert_int_equal(stat_of(after, "files") - stat_of(before, "files"), 3);
        assert_int_equal(stat_of(end, "batch_line_dups"), 0);
        json_decref(end);
    }

    /* results can be read again (a caller that stopped half-way resumes from the start) */
    json_decref(g.by_id);
    g = (got){.by_id = json_object(), .stop_after = 2};
    assert_int_equal(sy_provider_batch_results(&d, SY_EP_CHAT, id, on_result, &g, &e),
                     SY_EINTERNAL);
    assert_int_equal(g.calls, 2);
    json_decref(g.by_id);
    g = (got){.by_id = json_object()};
    assert_int_equal(sy_provider_batch_results(&d, SY_EP_CHAT, id, on_result, &g, &e), SY_OK);
    assert_int_equal(g.calls, NLINES);

    json_decref(g.by_id);
    json_decref(before);
    json_decref(after);
    for (i = 0; i < NLINES; i++)
        json_decref(parsed[i]);
    sy_provider_batch_error_cleanup(&e);
}

static void openai_roundtrip(void **state)
{
    (void)state;
    roundtrip(SY_PROVIDER_OPENAI, 429);
}

static void anthropic_roundtrip(void **state)
{
    (void)state;
    roundtrip(SY_PROVIDER_ANTHROPIC, 529);
}

/* The provider refuses the submit: an OpenAI error with its status, without the key. */
static void failed_submit(sy_provider p)
{
    sy_deployment d = dep(p, "/_f/status=500");
    json_t *body = parse(bodies[0]);
    sy_provider_batch_line line = {"x1", body};
    sy_provider_batch_error e = {0};
    char id[SY_PROVIDER_BATCH_ID_MAX];
    size_t submitted = 7;
    json_t *err;

    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, &line, 1, NULL, NULL, NULL, id,
                                              sizeof(id), &submitted, &e),
                     SY_EUPSTREAM);
    assert_int_equal(submitted, 0);
    assert_string_equal(id, "");
    assert_int_equal(e.status, 500);
    assert_non_null(e.body);
    assert_null(strstr(e.body, KEY));
    err = parse(e.body);
    assert_non_null(json_string_value(json_object_get(json_object_get(err, "error"), "message")));
    assert_non_null(json_string_value(json_object_get(json_object_get(err, "error"), "type")));
    json_decref(err);

    /* a provider that is not there at all */
    d.base_url = p == SY_PROVIDER_OPENAI ? "http://127.0.0.1:1/v1" : "http://127.0.0.1:1";
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, &line, 1, NULL, NULL, NULL, id,
                                              sizeof(id), &submitted, &e),
                     SY_EUPSTREAM);
    assert_int_equal(e.status, 502);
    assert_null(strstr(e.body, KEY));
    sy_provider_batch_error_cleanup(&e);
    json_decref(body);
}

static void openai_failed_submit(void **state)
{
    (void)state;
    failed_submit(SY_PROVIDER_OPENAI);
}

static void anthropic_failed_submit(void **state)
{
    (void)state;
    failed_submit(SY_PROVIDER_ANTHROPIC);
}

static void rejected(void *ud, size_t index, const char *cid, const char *err)
{
    json_t *j = json_loads(err, 0, NULL);
    assert_non_null(json_object_get(j, "error"));
    json_decref(j);
    json_array_append_new(ud, json_pack("{s:i,s:s}", "index", (int)index, "custom_id", cid));
}

/* A line Anthropic cannot take (n > 1) is reported and left out; the rest is submitted. Lines
 * past batch_expire_after come back unrun (status 0, batch_expired). */
static void anthropic_reject_and_expire(void **state)
{
    sy_deployment d = dep(SY_PROVIDER_ANTHROPIC, "/_f/batch_expire_after=1,batch_polls=1");
    json_t *b0 = parse(bodies[0]), *b1 = parse(bodies[1]),
           *bad = parse("{\"model\":\"m\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"x\"}]}"),
           *rej = json_array(), *s;
    sy_provider_batch_line lines[3] = {{"r0", b0}, {"rbad", bad}, {"r1", b1}};
    sy_provider_batch_error e = {0};
    sy_provider_batch_status st;
    char id[SY_PROVIDER_BATCH_ID_MAX];
    size_t submitted = 0;
    got g = {.by_id = json_object()};
    int polls;

    (void)state;
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, lines, 3, NULL, rejected, rej, id,
                                              sizeof(id), &submitted, &e),
                     SY_OK);
    assert_int_equal(submitted, 2);
    assert_int_equal(json_array_size(rej), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rej, 0), "custom_id")),
                        "rbad");
    assert_int_equal(poll_until_done(&d, id, &st, &polls), SY_PROVIDER_BATCH_ENDED);
    assert_int_equal(st.succeeded, 1);
    assert_int_equal(st.errored, 1);
    assert_int_equal(sy_provider_batch_results(&d, SY_EP_CHAT, id, on_result, &g, &e), SY_OK);
    assert_int_equal(g.calls, 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(g.by_id, "r0"), "status")),
                     200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(g.by_id, "r1"), "status")),
                     0);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(json_object_get(g.by_id, "r1"), "body"), "error"),
            "code")),
        "batch_expired");
    s = stats();
    assert_int_equal(runs_of(s, "r0"), 1);
    assert_int_equal(runs_of(s, "r1"), 0); /* expired: never ran */
    assert_int_equal(runs_of(s, "rbad"), 0);
    json_decref(s);

    /* every line rejected: nothing is sent */
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, &lines[1], 1, NULL, rejected, rej,
                                              id, sizeof(id), &submitted, &e),
                     SY_OK);
    assert_int_equal(submitted, 0);
    assert_string_equal(id, "");
    /* Anthropic has no embeddings */
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_EMBEDDINGS, lines, 1, NULL, NULL, NULL,
                                              id, sizeof(id), &submitted, &e),
                     SY_EUNSUPPORTED);
    json_decref(g.by_id);
    json_decref(rej);
    json_decref(b0);
    json_decref(b1);
    json_decref(bad);
    sy_provider_batch_error_cleanup(&e);
}

/* Cancel before the batch ends: it ends cancelled (OpenAI) / ended with canceled results
 * (Anthropic), no line ran, each comes back unrun. */
static void cancel(sy_provider p)
{
    sy_deployment d = dep(p, "/_f/batch_polls=1000");
    json_t *b0 = parse(bodies[0]), *s;
    char cid[32], id[SY_PROVIDER_BATCH_ID_MAX];
    sy_provider_batch_line line = {cid, b0};
    sy_provider_batch_error e = {0};
    sy_provider_batch_status st;
    size_t submitted = 0;
    got g = {.by_id = json_object()};
    int polls;

    snprintf(cid, sizeof(cid), "cancel-%d", (int)p);
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, &line, 1, NULL, NULL, NULL, id,
                                              sizeof(id), &submitted, &e),
                     SY_OK);
    assert_int_equal(sy_provider_batch_poll(&d, id, &st, &e), SY_OK);
    assert_int_equal(st.state, SY_PROVIDER_BATCH_PENDING);
    assert_int_equal(sy_provider_batch_cancel(&d, id, &e), SY_OK);
    assert_int_equal(poll_until_done(&d, id, &st, &polls),
                     p == SY_PROVIDER_OPENAI ? SY_PROVIDER_BATCH_CANCELLED
                                             : SY_PROVIDER_BATCH_ENDED);
    assert_int_equal(sy_provider_batch_results(&d, SY_EP_CHAT, id, on_result, &g, &e), SY_OK);
    assert_int_equal(g.calls, 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(g.by_id, cid), "status")),
                     0);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(json_object_get(g.by_id, cid), "body"), "error"),
            "code")),
        "batch_cancelled");
    s = stats();
    assert_int_equal(runs_of(s, cid), 0);
    json_decref(s);
    /* an unknown batch */
    assert_int_equal(sy_provider_batch_poll(&d, "batch_nope", &st, &e), SY_ENOTFOUND);
    assert_int_equal(e.status, 404);
    assert_int_equal(sy_provider_batch_poll(&d, "../etc", &st, &e), SY_EINVAL);
    json_decref(g.by_id);
    json_decref(b0);
    sy_provider_batch_error_cleanup(&e);
}

static void openai_cancel(void **state)
{
    (void)state;
    cancel(SY_PROVIDER_OPENAI);
}

static void anthropic_cancel(void **state)
{
    (void)state;
    cancel(SY_PROVIDER_ANTHROPIC);
}

/* Many lines with long answers: results arrive line by line, each exactly once. */
static void openai_many_lines(void **state)
{
    enum { N = 500 };
    sy_deployment d = dep(SY_PROVIDER_OPENAI, NULL);
    sy_provider_batch_line *lines = calloc(N, sizeof(*lines));
    json_t **bodies_n = calloc(N, sizeof(*bodies_n));
    char (*cids)[24] = calloc(N, sizeof(*cids));
    char id[SY_PROVIDER_BATCH_ID_MAX];
    sy_provider_batch_error e = {0};
    sy_provider_batch_status st;
    got g = {.by_id = json_object()};
    size_t submitted = 0;
    json_t *s;
    int polls, i;

    (void)state;
    for (i = 0; i < N; i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"line %d "
                 "[[fake words=300]]\"}]}",
                 i);
        bodies_n[i] = parse(text);
        snprintf(cids[i], sizeof(cids[i]), "many-%d", i);
        lines[i] = (sy_provider_batch_line){cids[i], bodies_n[i]};
    }
    assert_int_equal(sy_provider_batch_submit(&d, SY_EP_CHAT, lines, N, "many", NULL, NULL, id,
                                              sizeof(id), &submitted, &e),
                     SY_OK);
    assert_int_equal(submitted, N);
    assert_int_equal(poll_until_done(&d, id, &st, &polls), SY_PROVIDER_BATCH_ENDED);
    assert_int_equal(st.succeeded, N);
    assert_int_equal(sy_provider_batch_results(&d, SY_EP_CHAT, id, on_result, &g, &e), SY_OK);
    assert_int_equal(g.calls, N);
    s = stats();
    for (i = 0; i < N; i++) {
        json_t *rec = json_object_get(g.by_id, cids[i]);
        assert_int_equal(json_integer_value(json_object_get(rec, "status")), 200);
        assert_int_equal(json_integer_value(json_array_get(json_object_get(rec, "usage"), 1)),
                         300);
        assert_int_equal(runs_of(s, cids[i]), 1);
    }
    json_decref(s);
    json_decref(g.by_id);
    for (i = 0; i < N; i++)
        json_decref(bodies_n[i]);
    free(bodies_n);
    free(lines);
    free(cids);
    sy_provider_batch_error_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_roundtrip),
        cmocka_unit_test(anthropic_roundtrip),
        cmocka_unit_test(openai_failed_submit),
        cmocka_unit_test(anthropic_failed_submit),
        cmocka_unit_test(anthropic_reject_and_expire),
        cmocka_unit_test(openai_cancel),
        cmocka_unit_test(anthropic_cancel),
        cmocka_unit_test(openai_many_lines),
    };
    return cmocka_run_group_tests(tests, start_fake, stop_fake);
}
