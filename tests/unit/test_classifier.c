/* Unit tests for classifier and train: features of crafted prompts, n-gram names, scoring
 * (range, monotonic in a weight, explanations), weights-file errors, allocation failures,
 * the shipped weights file, and training determinism on a tiny synthetic set. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "switchyard/classifier.h"
#include "switchyard/train.h"

/* ---- helpers ------------------------------------------------------------------------------ */

/* cmocka 1.1.5 has no assert_double_equal */
#define assert_near(a, b, eps) near_impl((a), (b), (eps), #a, __FILE__, __LINE__)

static void near_impl(double a, double b, double eps, const char *what, const char *file, int line)
{
    if (!(fabs(a - b) <= eps)) {
        print_error("%s:%d: %s = %.17g, expected %.17g (+-%g)\n", file, line, what, a, b, eps);
        fail();
    }
}

static json_t *chat(const char *text)
{
    json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "auto", "messages", "role", "user",
                            "content", text);
    assert_non_null(req);
    return req;
}

static void feats(const char *text, sy_cls_features *f)
{
    json_t *req = chat(text);
    assert_int_equal(sy_classifier_features(req, f, NULL, NULL), SY_OK);
    json_decref(req);
}

#define D(f, name) ((f)->dense[SY_CLS_D_##name])

/* Collects the names and hashes the extractor reports. */
typedef struct names {
    char name[64][SY_CLS_NAME_MAX];
    uint32_t hash[64];
    sy_cls_kind kind[64];
    size_t n;
} names;

static void collect(void *ctx, sy_cls_kind kind, uint32_t hash, const char *a, size_t alen,
                    const char *b, size_t blen)
{
    names *nm = ctx;
    if (nm->n == 64)
        return;
    sy_classifier_ngram_name(kind, a, alen, b, blen, nm->name[nm->n], SY_CLS_NAME_MAX);
    nm->hash[nm->n] = hash;
    nm->kind[nm->n] = kind;
    nm->n++;
}

static long find_name(const names *nm, const char *name)
{
    for (size_t i = 0; i < nm->n; i++)
        if (strcmp(nm->name[i], name) == 0)
            return (long)i;
    return -1;
}

/* A weights document with every required field; callers change what they test. */
static json_t *weights_doc(void)
{
    json_t *w = json_pack("{s:i,s:s,s:s,s:i,s:f,s:f,s:{},s:{}}", "version", 1, "kind", "logreg",
                          "features", SY_CLS_FEATURES, "hash_bits", 12, "bias", 0.0, "threshold",
                          0.5, "dense", "hashed");
    assert_non_null(w);
    return w;
}

static sy_classifier *parse_ok(const json_t *w)
{
    sy_classifier *c = NULL;
    char err[256] = "";
    sy_err rc = sy_classifier_parse(w, &c, err, sizeof(err));
    if (rc != SY_OK)
        print_error("%s\n", err);
    assert_int_equal(rc, SY_OK);
    assert_non_null(c);
    return c;
}

static double score_of(const sy_classifier *c, const char *text)
{
    json_t *req = chat(text);
    double s = -1;
    assert_int_equal(sy_classifier_score(c, req, &s, NULL, 0), SY_OK);
    json_decref(req);
    return s;
}

static char *source_path(const char *rel)
{
    const char *dir = getenv("SY_SOURCE_DIR");
    size_t n = strlen(dir != NULL ? dir : ".") + strlen(rel) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    (void)snprintf(p, n, "%s/%s", dir != NULL ? dir : ".", rel);
    return p;
}

/* ---- features ----------------------------------------------------------------------------- */

static void test_features_basic(void **state)
{
    sy_cls_features f;
    (void)state;

    feats("What is 2+2?", &f);
    assert_true(D(&f, wh_start) == 1);
    assert_true(D(&f, ends_question) == 1);
    assert_true(D(&f, questions) > 0);
    assert_true(D(&f, imperative) == 0);
    assert_true(D(&f, len_lt16) == 1);
    assert_true(D(&f, open) == 1);
    assert_true(D(&f, math_ops) > 0);
    assert_true(D(&f, turns_extra) == 0 && D(&f, system_log) == 0);

    feats("Please write a short poem about the sea.", &f);
    assert_true(D(&f, imperative) == 1); /* "please" is skipped */
    assert_true(D(&f, wh_start) == 0);
    assert_true(D(&f, ends_question) == 0);

    feats("Explain why the sky is blue, step by step, in at least 200 words. Do not use "
          "jargon.",
          &f);
    assert_true(D(&f, step_by_step) == 1);
    assert_true(D(&f, explain_why) == 1);
    /* "at least" and "do not" */
    assert_near(D(&f, constraints), log2(3.0) / 3, 1e-12);

    feats("Prove that sqrt(2) is irrational.", &f);
    assert_true(D(&f, prove) == 1);
}

static void test_features_numbers_code_math(void **state)
{
    sy_cls_features f;
    (void)state;

    /* 3, 2.5, 50, 10: four numbers, one decimal, a percentage and an amount */
    feats("I have 3 apples and 2.5 pears, 50% of them cost $10", &f);
    assert_near(D(&f, numbers_log), log2(5.0) / 6, 1e-12);
    assert_near(D(&f, decimals_log), log2(2.0) / 4, 1e-12);
    assert_near(D(&f, money_pct), log2(3.0) / 4, 1e-12);
    assert_true(D(&f, digits_share) > 0);

    feats("Fix this:\n```python\ndef f(x):\n    return x[0]\n```\nand `g()` too", &f);
    assert_near(D(&f, code_fences), log2(3.0) / 3, 1e-12);
    assert_near(D(&f, inline_code), log2(3.0) / 4, 1e-12);
    assert_true(D(&f, code_words) > 0); /* python, def, return */
    assert_true(D(&f, code_syntax) > 0);
    assert_true(D(&f, lines_log) > 0);
    assert_true(D(&f, imperative) == 1);

    feats("Compute $\\frac{1}{2} + x^2$ where x_{1} = 3", &f);
    assert_true(D(&f, latex) > 0);
    assert_true(D(&f, math_ops) > 0);
}

static void test_features_multiple_choice(void **state)
{
    sy_cls_features f, g;
    (void)state;

    feats("Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\nAnswer:", &f);
    assert_true(D(&f, mc_options) == 1);
    assert_true(D(&f, answer_cue) == 1);
    assert_true(D(&f, open) == 0);
    assert_true(D(&f, open_tokens) == 0 && D(&f, open_words) == 0);

    feats("Pick one: (A) red (B) green (C) blue", &g);
    assert_near(D(&g, mc_options), 0.75, 1e-12);
    assert_true(D(&g, open) == 0);

    feats("A. is a letter.", &g); /* one option line is not a question */
    assert_true(D(&g, open) == 1);
    assert_near(D(&g, open_tokens), D(&g, tokens_log), 0);
}

static void test_features_script_and_length(void **state)
{
    sy_cls_features f;
    (void)state;

    feats("Привет, как дела?", &f);
    assert_true(D(&f, cyrillic) > 0.5);
    assert_true(D(&f, non_ascii) > 0.5);
    assert_true(D(&f, cjk) == 0);

    feats("日本の首都はどこですか", &f);
    assert_true(D(&f, cjk) > 0.9);

    feats("ALL CAPS", &f);
    assert_near(D(&f, upper_share), 1.0, 0);

    /* longer than the scan cap: the length features still see all of it */
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 6 == 5 ? ' ' : 'a';
    big[n] = '\0';
    feats(big, &f);
    free(big);
    assert_true(D(&f, len_ge1k) == 1);
    assert_near(D(&f, tokens_log), log2(1.0 + n / 4.0) / 13, 1e-12);
    assert_true(D(&f, words_log) <= log2(1.0 + SY_CLS_SCAN_MAX / 6.0 + 1) / 12);
}

static void test_features_request_shapes(void **state)
{
    sy_cls_features a, b;
    (void)state;

    /* system prompt, the first user turn (later turns only count), assistant ignored */
    json_t *req = json_loads("{\"messages\":["
                             "{\"role\":\"system\",\"content\":\"Be terse.\"},"
                             "{\"role\":\"user\",\"content\":\"What is 2+2?\"},"
                             "{\"role\":\"assistant\",\"content\":\"4. ```x``` Prove it\"},"
                             "{\"role\":\"user\",\"content\":\"And 3+3? Prove it step by step\"}]}",
                             0, NULL);
    assert_non_null(req);
    assert_int_equal(sy_classifier_features(req, &a, NULL, NULL), SY_OK);
    json_decref(req);
    feats("What is 2+2?", &b);
    assert_near(D(&a, turns_extra), 1.0, 0);
    assert_near(D(&a, system_log), log2(10.0) / 13, 1e-12);
    assert_true(D(&a, prove) == 0 && D(&a, step_by_step) == 0 && D(&a, code_fences) == 0);
    assert_near(D(&a, tokens_log), D(&b, tokens_log), 0);
    assert_int_equal(a.count[SY_CLS_WORD], b.count[SY_CLS_WORD]);

    /* array content: the text parts, images skipped */
    req = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":["
                     "{\"type\":\"text\",\"text\":\"What is\"},"
                     "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x/y.png\"}},"
                     "{\"type\":\"text\",\"text\":\"this?\"}]}]}",
                     0, NULL);
    assert_non_null(req);
    assert_int_equal(sy_classifier_features(req, &a, NULL, NULL), SY_OK);
    json_decref(req);
    assert_true(D(&a, wh_start) == 1 && D(&a, ends_question) == 1);
    assert_int_equal(a.count[SY_CLS_WORD], 4); /* what, is, this, ? */

    /* completions-style prompt */
    req = json_pack("{s:s}", "prompt", "What is 2+2?");
    assert_int_equal(sy_classifier_features(req, &a, NULL, NULL), SY_OK);
    json_decref(req);
    assert_near(D(&a, tokens_log), D(&b, tokens_log), 0);

    /* no user turn: scored as empty text */
    req = json_loads("{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", 0, NULL);
    assert_int_equal(sy_classifier_features(req, &a, NULL, NULL), SY_OK);
    json_decref(req);
    assert_true(D(&a, len_lt16) == 1 && D(&a, words_log) == 0);

    /* not a chat body */
    req = json_pack("{s:i}", "messages", 3);
    assert_int_equal(sy_classifier_features(req, &a, NULL, NULL), SY_EINVAL);
    json_decref(req);
    req = json_pack("[]");
    assert_int_equal(sy_classifier_features(req, &a, NULL, NULL), SY_EINVAL);
    json_decref(req);
}

static void test_ngrams_and_names(void **state)
{
    names nm = {.n = 0};
    sy_cls_features f;
    (void)state;

    sy_classifier_features_text("Hello World 42", 14, &f, collect, &nm);
    /* words: hello, world, 00; bigrams: ^ hello, hello world, world 00, 00 $;
     * chars over " hello world 00 ": 16 bytes, 13 grams */
    assert_int_equal(f.count[SY_CLS_WORD], 3);
    assert_int_equal(f.count[SY_CLS_BIGRAM], 4);
    assert_int_equal(f.count[SY_CLS_CHAR], 13);
    assert_near(f.scale[SY_CLS_WORD], 1 / sqrt(3.0), 1e-12);
    assert_true(find_name(&nm, "w:hello") >= 0);
    assert_true(find_name(&nm, "w:00") >= 0);
    assert_true(find_name(&nm, "b:^ hello") >= 0);
    assert_true(find_name(&nm, "b:hello world") >= 0);
    assert_true(find_name(&nm, "b:00 $") >= 0);
    assert_true(find_name(&nm, "c:_hel") >= 0);
    assert_true(find_name(&nm, "c:00_") >= 0 || find_name(&nm, "c: 00_") >= 0 ||
                find_name(&nm, "c:_00_") >= 0);

    /* case and digits do not change the hash */
    names nm2 = {.n = 0};
    sy_classifier_features_text("hello WORLD 17", 14, &f, collect, &nm2);
    assert_int_equal(nm.n, nm2.n);
    for (size_t i = 0; i < nm.n; i++)
        assert_int_equal(nm.hash[i], nm2.hash[i]);

    /* a multiple-choice question hashes the same word elsewhere */
    names mc = {.n = 0};
    const char *q = "hello\nA. x\nB. y";
    sy_classifier_features_text(q, strlen(q), &f, collect, &mc);
    long i = find_name(&mc, "w:hello");
    assert_true(i >= 0);
    assert_int_not_equal(mc.hash[i], nm.hash[find_name(&nm, "w:hello")]);

    /* names: truncation, invalid UTF-8, UTF-8 kept whole */
    char buf[SY_CLS_NAME_MAX];
    sy_classifier_ngram_name(SY_CLS_WORD, "caf\xc3\xa9", 5, NULL, 0, buf, sizeof(buf));
    assert_string_equal(buf, "w:caf\xc3\xa9");
    sy_classifier_ngram_name(SY_CLS_WORD, "ab\xc3", 3, NULL, 0, buf, sizeof(buf));
    assert_string_equal(buf, "w:ab?");
    sy_classifier_ngram_name(SY_CLS_WORD, "abcdef", 6, NULL, 0, buf, 5);
    assert_string_equal(buf, "w:ab");
    sy_classifier_ngram_name(SY_CLS_BIGRAM, NULL, 0, "x", 1, buf, sizeof(buf));
    assert_string_equal(buf, "b:^ x");

    assert_string_equal(sy_classifier_dense_name(SY_CLS_D_tokens_log), "tokens_log");
    assert_null(sy_classifier_dense_name(SY_CLS_NDENSE));
    assert_int_equal(sy_classifier_dense_index("prove"), SY_CLS_D_prove);
    assert_int_equal(sy_classifier_dense_index("nope"), -1);
}

/* ---- scoring ------------------------------------------------------------------------------ */

static void test_score_monotonic_and_range(void **state)
{
    const char *text = "I have 3 apples and 4 pears and 12 plums.";
    double prev = -1;
    (void)state;

    for (int k = -4; k <= 4; k++) {
        json_t *w = weights_doc();
        json_object_set_new(json_object_get(w, "dense"), "numbers_log", json_real(k * 0.5));
        sy_classifier *c = parse_ok(w);
        double s = score_of(c, text);
        assert_true(s > prev);
        assert_true(s >= 0 && s <= 1);
        prev = s;
        sy_classifier_free(c);
        json_decref(w);
    }
    /* with all weights zero the score is sigmoid(bias) */
    json_t *w = weights_doc();
    json_object_set_new(w, "bias", json_real(1.0));
    sy_classifier *c = parse_ok(w);
    assert_near(score_of(c, text), 1 / (1 + exp(-1.0)), 1e-12);
    assert_near(sy_classifier_threshold(c), 0.5, 0);
    assert_int_equal(sy_classifier_hash_bits(c), 12);
    sy_classifier_free(c);
    /* extreme weights stay in [0, 1] */
    json_object_set_new(w, "bias", json_real(1e300));
    c = parse_ok(w);
    assert_true(score_of(c, text) <= 1 && score_of(c, text) >= 0);
    sy_classifier_free(c);
    json_object_set_new(w, "bias", json_real(-1e300));
    c = parse_ok(w);
    assert_true(score_of(c, text) >= 0);
    sy_classifier_free(c);
    json_decref(w);
}

static void test_score_top_features(void **state)
{
    names nm = {.n = 0};
    sy_cls_features f;
    const char *text = "prove prove it";
    char key[16];
    (void)state;

    sy_classifier_features_text(text, strlen(text), &f, collect, &nm);
    long iw = find_name(&nm, "w:prove"), ic = find_name(&nm, "c:_it_");
    assert_true(iw >= 0 && ic >= 0);

    json_t *w = weights_doc();
    json_t *hashed = json_object_get(w, "hashed");
    (void)snprintf(key, sizeof(key), "%u", nm.hash[iw] & 0xfff);
    json_object_set_new(hashed, key, json_real(3.0));
    (void)snprintf(key, sizeof(key), "%u", nm.hash[ic] & 0xfff);
    json_object_set_new(hashed, key, json_real(-1.0));
    json_object_set_new(json_object_get(w, "dense"), "prove", json_real(0.25));
    sy_classifier *c = parse_ok(w);
    json_decref(w);

    sy_feature_contrib top[5];
    double s, s2;
    json_t *req = chat(text);
    assert_int_equal(sy_classifier_score(c, req, &s, top, 5), SY_OK);
    assert_int_equal(sy_classifier_score(c, req, &s2, NULL, 0), SY_OK);
    json_decref(req);
    assert_near(s, s2, 1e-12); /* explaining does not change the score */

    /* "prove" twice: 2 x 3.0 x scale; the char gram once: -1 x scale */
    assert_string_equal(top[0].name, "w:prove");
    assert_near(top[0].contribution, 6.0 * f.scale[SY_CLS_WORD], 1e-6);
    /* the contributions are sorted by magnitude and add up to the logit */
    double z = 0;
    for (size_t i = 0; i < 5; i++) {
        if (i > 0)
            assert_true(fabs(top[i].contribution) <= fabs(top[i - 1].contribution));
        z += top[i].contribution;
    }
    assert_true(find_name(&nm, "c:_it_") >= 0);
    int seen_c = 0, seen_prove = 0;
    for (size_t i = 0; i < 5; i++) {
        seen_c |= strcmp(top[i].name, "c:_it_") == 0;
        seen_prove |= strcmp(top[i].name, "prove") == 0;
    }
    assert_true(seen_c && seen_prove);
    /* fewer non-zero features than asked for: the rest are empty (a bucket may collide, so
     * compare the logit with what the named entries add up to only when all are named) */
    if (top[4].name[0] == '\0')
        assert_near(z, log(s / (1 - s)), 1e-6);
    sy_classifier_free(c);
}

/* ---- weights files ------------------------------------------------------------------------ */

static void expect_error(json_t *w, const char *needle)
{
    sy_classifier *c = NULL;
    char err[256] = "";
    assert_int_equal(sy_classifier_parse(w, &c, err, sizeof(err)), SY_ECONFIG);
    assert_null(c);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not mention '%s'", err, needle);
    json_decref(w);
}

static void test_weights_errors(void **state)
{
    json_t *w;
    (void)state;

    expect_error(json_pack("[]"), "$:");
    w = weights_doc();
    json_object_set_new(w, "version", json_integer(2));
    expect_error(w, "$.version: unsupported version 2");
    w = weights_doc();
    json_object_del(w, "version");
    expect_error(w, "$.version");
    w = weights_doc();
    json_object_set_new(w, "version", json_string("1"));
    expect_error(w, "$.version");
    w = weights_doc();
    json_object_set_new(w, "kind", json_string("tree"));
    expect_error(w, "$.kind");
    w = weights_doc();
    json_object_set_new(w, "features", json_string("sy-cls-0"));
    expect_error(w, "$.features");
    w = weights_doc();
    json_object_set_new(w, "hash_bits", json_integer(30));
    expect_error(w, "$.hash_bits");
    w = weights_doc();
    json_object_set_new(w, "bias", json_string("0"));
    expect_error(w, "$.bias");
    w = weights_doc();
    json_object_del(w, "threshold");
    expect_error(w, "$.threshold");
    w = weights_doc();
    json_object_set_new(w, "threshold", json_real(1.5));
    expect_error(w, "$.threshold");
    w = weights_doc();
    json_object_set_new(w, "dense", json_array());
    expect_error(w, "$.dense");
    w = weights_doc();
    json_object_set_new(json_object_get(w, "dense"), "bogus", json_real(1));
    expect_error(w, "$.dense.bogus: unknown feature");
    w = weights_doc();
    json_object_set_new(json_object_get(w, "dense"), "prove", json_string("x"));
    expect_error(w, "$.dense.prove");
    w = weights_doc();
    json_object_del(w, "hashed");
    expect_error(w, "$.hashed");
    w = weights_doc();
    json_object_set_new(json_object_get(w, "hashed"), "abc", json_real(1));
    expect_error(w, "$.hashed.abc");
    w = weights_doc();
    json_object_set_new(json_object_get(w, "hashed"), "4096", json_real(1)); /* 2^12 */
    expect_error(w, "$.hashed.4096");
    w = weights_doc();
    json_object_set_new(json_object_get(w, "hashed"), "-1", json_real(1));
    expect_error(w, "$.hashed.-1");
    w = weights_doc();
    json_object_set_new(json_object_get(w, "hashed"), "7", json_null());
    expect_error(w, "$.hashed.7");

    /* good: integers are numbers too, and nnz counts non-zero buckets */
    w = weights_doc();
    json_object_set_new(json_object_get(w, "hashed"), "7", json_integer(2));
    json_object_set_new(json_object_get(w, "hashed"), "8", json_real(0));
    json_object_set_new(json_object_get(w, "dense"), "prove", json_integer(1));
    sy_classifier *c = parse_ok(w);
    assert_int_equal(sy_classifier_nnz(c), 1);
    sy_classifier_free(c);
    json_decref(w);
    sy_classifier_free(NULL);
}

static void test_weights_files(void **state)
{
    char dir[] = "/tmp/sy-cls-XXXXXX", path[128], err[512];
    sy_classifier *c = NULL;
    FILE *f;
    (void)state;

    assert_non_null(mkdtemp(dir));
    (void)snprintf(path, sizeof(path), "%s/missing.json", dir);
    assert_int_equal(sy_classifier_load(path, &c, err, sizeof(err)), SY_ECONFIG);
    assert_non_null(strstr(err, path));

    (void)snprintf(path, sizeof(path), "%s/bad.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    (void)fputs("{\"version\":1,\n\"kind\":", f);
    (void)fclose(f);
    assert_int_equal(sy_classifier_load(path, &c, err, sizeof(err)), SY_ECONFIG);
    assert_non_null(strstr(err, path));
    assert_null(c);

    f = fopen(path, "w");
    assert_non_null(f);
    (void)fputs("{\"version\":1,\"version\":1}", f);
    (void)fclose(f);
    assert_int_equal(sy_classifier_load(path, &c, err, sizeof(err)), SY_ECONFIG);

    f = fopen(path, "w");
    assert_non_null(f);
    (void)fputs("{\"version\":3}", f);
    (void)fclose(f);
    assert_int_equal(sy_classifier_load(path, &c, err, sizeof(err)), SY_ECONFIG);
    assert_non_null(strstr(err, "$.version"));
    assert_non_null(strstr(err, path));
    assert_int_equal(sy_classifier_load(path, &c, NULL, 0), SY_ECONFIG);
    unlink(path);
    rmdir(dir);
}

/* The shipped weights load and score sensibly. */
static void test_shipped_weights(void **state)
{
    char *path = source_path("routes/classifier-v1.json"), err[512];
    sy_classifier *c = NULL;
    sy_feature_contrib top[5];
    double s;
    (void)state;

    int readable = access(path, R_OK) == 0;
    sy_err rc = readable ? sy_classifier_load(path, &c, err, sizeof(err)) : SY_ECONFIG;
    free(path);
    if (!readable)
        skip();
    assert_int_equal(rc, SY_OK);
    assert_int_equal(sy_classifier_hash_bits(c), 18);
    assert_true(sy_classifier_nnz(c) > 1000);
    json_t *req = chat("Write a C11 lock-free multi-producer queue using futexes, and prove "
                       "that it is linearizable.");
    assert_int_equal(sy_classifier_score(c, req, &s, top, 5), SY_OK);
    json_decref(req);
    assert_true(s > 0 && s < 1);
    for (size_t i = 0; i < 5; i++)
        assert_true(top[i].name[0] != '\0');
    sy_classifier_free(c);
}

/* ---- allocation failures ------------------------------------------------------------------ */

static long alloc_left = -1;

static void *failing_malloc(size_t n)
{
    if (alloc_left == 0)
        return NULL;
    if (alloc_left > 0)
        alloc_left--;
    return malloc(n);
}

static void test_alloc_failures(void **state)
{
    json_t *w = weights_doc();
    json_object_set_new(json_object_get(w, "hashed"), "7", json_real(1));
    sy_err rc = SY_ENOMEM;
    long n;
    (void)state;

    for (n = 0; rc != SY_OK; n++) {
        sy_classifier *c = NULL;
        char err[128] = "";
        assert_true(n < 100);
        alloc_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        rc = sy_classifier_parse(w, &c, err, sizeof(err));
        json_set_alloc_funcs(malloc, free);
        assert_true(rc == SY_OK || rc == SY_ENOMEM);
        assert_true((rc == SY_OK) == (c != NULL));
        sy_classifier_free(c);
    }
    assert_true(n > 2);
    json_decref(w);
}

/* ---- training ----------------------------------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    (void)fseek(f, 0, SEEK_END);
    long n = ftell(f);
    (void)fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    (void)fclose(f);
    return s;
}

/* Runs sy_train_main on the NULL-terminated <argv>, its report to /dev/null. */
static int train_argv(char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w"); /* the report */
    int rc = sy_train_main(argc, argv);
    (void)fclose(stdout);
    stdout = saved;
    return rc;
}

static int train(const char *data, const char *out, const char *seed, const char *evdir)
{
    char *argv[] = {"train",      "--data",      (char *)data, "--out", (char *)out,   "--seed",
                    (char *)seed, "--quiet",     "--l2",       "1e-3",  "--l2-hashed", "1e-3",
                    "--eval-dir", (char *)evdir, "--folds",    "2",     NULL};
    if (evdir == NULL)
        argv[12] = NULL; /* no --eval-dir, no --folds */
    return train_argv(argv);
}

static int train_fold_seed(const char *data, const char *out, const char *evdir,
                           const char *fold_seed)
{
    char *argv[] = {"train",   "--data", (char *)data,  "--out",       (char *)out, "--seed",
                    "7",       "--quiet", "--eval-dir", (char *)evdir, "--folds",   "2",
                    "--fold-seed", (char *)fold_seed, NULL};
    return train_argv(argv);
}

#define TRAIN_PATH_MAX 128

/* Makes the temporary directory <dir> (a mkdtemp template) of a training test and the paths in
 * it (each TRAIN_PATH_MAX bytes): the data, three weight files and an eval dir. */
static void train_dir_make(char *dir, char *data, char *a, char *b, char *c3, char *ev)
{
    assert_non_null(mkdtemp(dir));
    (void)snprintf(data, TRAIN_PATH_MAX, "%s/data.jsonl", dir);
    (void)snprintf(a, TRAIN_PATH_MAX, "%s/a.json", dir);
    (void)snprintf(b, TRAIN_PATH_MAX, "%s/b.json", dir);
    (void)snprintf(c3, TRAIN_PATH_MAX, "%s/c.json", dir);
    (void)snprintf(ev, TRAIN_PATH_MAX, "%s/ev", dir);
}

/* Removes what train_dir_make made (the eval dir is the test's to empty and remove). */
static void train_dir_remove(const char *dir, const char *data, const char *a, const char *b,
                             const char *c3)
{
    unlink(data);
    unlink(a);
    unlink(b);
    unlink(c3);
    rmdir(dir);
}

static void test_train_deterministic(void **state)
{
    char dir[] = "/tmp/sy-train-XXXXXX", data[TRAIN_PATH_MAX], a[TRAIN_PATH_MAX],
         b[TRAIN_PATH_MAX], c3[TRAIN_PATH_MAX], ev[TRAIN_PATH_MAX];
    static const char *const hard[] = {"prove the theorem rigorously", "derive the integral",
                                       "optimise the compiler pass", "formal proof of lemma"};
    static const char *const easy[] = {"say hello", "what colour is grass", "hi there",
                                       "name a fruit"};
    (void)state;

    train_dir_make(dir, data, a, b, c3, ev);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    for (int i = 0; i < 80; i++) {
        int h = i % 2;
        fprintf(f,
                "{\"id\":\"syn-%d\",\"set\":\"syn\",\"turns\":[\"%s number %d\"],"
                "\"strong\":%d,\"weak\":%d,\"needs_strong\":%d}\n",
                i, h ? hard[i / 2 % 4] : easy[i / 2 % 4], i, 1, h ? 0 : 1, h);
    }
    (void)fclose(f);

    assert_int_equal(train(data, a, "7", NULL), 0);
    assert_int_equal(train(data, b, "7", ev), 0);
    char *wa = slurp(a), *wb = slurp(b);
    assert_string_equal(wa, wb); /* same data and seed: the same bytes */
    free(wb);

    /* the fit separates the synthetic classes */
    char err[256];
    sy_classifier *c = NULL;
    assert_int_equal(sy_classifier_load(a, &c, err, sizeof(err)), SY_OK);
    assert_true(score_of(c, "prove the theorem rigorously number 1000") >
                score_of(c, "say hello number 1000"));
    sy_classifier_free(c);

    /* another seed holds out other rows: other weights */
    assert_int_equal(train(data, c3, "8", NULL), 0);
    char *wc = slurp(c3);
    assert_string_not_equal(wa, wc);
    free(wa);
    free(wc);

    /* held-out rows and scores in route_eval format */
    char p[160];
    (void)snprintf(p, sizeof(p), "%s/holdout-syn.scores.jsonl", ev);
    char *scores = slurp(p);
    assert_non_null(strstr(scores, "{\"score\": "));
    free(scores);
    unlink(p);
    (void)snprintf(p, sizeof(p), "%s/holdout-syn.jsonl", ev);
    unlink(p);
    (void)snprintf(p, sizeof(p), "%s/cv-syn.scores.jsonl", ev);
    unlink(p);
    (void)snprintf(p, sizeof(p), "%s/cv-syn.jsonl", ev);
    unlink(p);
    rmdir(ev);

    /* --fold-seed re-keys only the cross-validation folds: the same held-out rows and weights,
     * other out-of-fold scores */
    {
        char ev1[160], ev2[160], p1[200], p2[200];
        (void)snprintf(ev1, sizeof(ev1), "%s/f1", dir);
        (void)snprintf(ev2, sizeof(ev2), "%s/f2", dir);
        assert_int_equal(train_fold_seed(data, b, ev1, "3"), 0);
        char *w1 = slurp(b);
        assert_int_equal(train_fold_seed(data, b, ev2, "4"), 0);
        char *w2 = slurp(b);
        assert_string_equal(w1, w2);
        free(w1);
        free(w2);
        static const char *const files[] = {"holdout-syn.jsonl", "holdout-syn.scores.jsonl",
                                            "cv-syn.jsonl", "cv-syn.scores.jsonl"};
        for (size_t i = 0; i < 4; i++) {
            (void)snprintf(p1, sizeof(p1), "%s/%s", ev1, files[i]);
            (void)snprintf(p2, sizeof(p2), "%s/%s", ev2, files[i]);
            char *s1 = slurp(p1), *s2 = slurp(p2);
            if (i < 3)
                assert_string_equal(s1, s2); /* the rows, in file order, and held-out scores */
            else
                assert_string_not_equal(s1, s2); /* each row scored by another fold's model */
            free(s1);
            free(s2);
            unlink(p1);
            unlink(p2);
        }
        rmdir(ev1);
        rmdir(ev2);
    }

    /* usage and data errors */
    char *bad1[] = {"train", "--data", data, NULL};
    assert_int_equal(sy_train_main(3, bad1), 2);
    char *bad2[] = {"train", "--data", data, "--out", a, "--holdout", "2", NULL};
    assert_int_equal(sy_train_main(7, bad2), 2);
    char *bad3[] = {"train", "--data", "/nonexistent.jsonl", "--out", a, NULL};
    assert_int_equal(sy_train_main(5, bad3), 1);
    f = fopen(data, "w");
    assert_non_null(f);
    (void)fputs("{\"id\":\"x\",\"turns\":[]}\n", f);
    (void)fclose(f);
    char *bad4[] = {"train", "--data", data, "--out", a, NULL};
    assert_int_equal(sy_train_main(5, bad4), 1);

    train_dir_remove(dir, data, a, b, c3);
}

static size_t count_lines(const char *path)
{
    char *s = slurp(path);
    size_t n = 0;
    for (const char *q = s; *q != '\0'; q++)
        n += *q == '\n';
    free(s);
    return n;
}

/* --pairwise: deterministic, recorded in the file, ranks within the set, and changes the fit;
 * --holdout 0 --folds K: a cross-fit that scores every row once and holds none out. */
static void test_train_pairwise_and_crossfit(void **state)
{
    char dir[] = "/tmp/sy-trainpw-XXXXXX", data[TRAIN_PATH_MAX], a[TRAIN_PATH_MAX],
         b[TRAIN_PATH_MAX], c3[TRAIN_PATH_MAX], ev[TRAIN_PATH_MAX], p[200];
    (void)state;

    train_dir_make(dir, data, a, b, c3, ev);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    /* gains 1 / 0 / -1 by topic, two sets with different mixes */
    static const char *const topic[] = {"prove the theorem rigorously", "say hello",
                                        "list three colours"};
    for (int i = 0; i < 90; i++) {
        int k = i % 3;
        fprintf(f,
                "{\"id\":\"pw-%d\",\"set\":\"%s\",\"turns\":[\"%s case %d\"],"
                "\"strong\":%d,\"weak\":%d}\n",
                i, i % 2 ? "one" : "two", topic[k], i, k == 2 ? 0 : 1, k != 0);
    }
    (void)fclose(f);

    char *pw[] = {"train", "--data", data, "--out", a, "--seed", "3", "--pairwise", "2",
                  "--pairs-max", "200", NULL};
    assert_int_equal(train_argv(pw), 0);
    pw[4] = b;
    assert_int_equal(train_argv(pw), 0);
    char *wa = slurp(a), *wb = slurp(b);
    assert_string_equal(wa, wb); /* sampled pairs too: the same bytes */
    assert_non_null(strstr(wa, "\"pairwise\":2,"));
    free(wb);
    char err[256];
    sy_classifier *c = NULL;
    assert_int_equal(sy_classifier_load(a, &c, err, sizeof(err)), SY_OK);
    double hi = score_of(c, "prove the theorem rigorously case 1000");
    double mid = score_of(c, "say hello case 1000");
    double lo = score_of(c, "list three colours case 1000");
    assert_true(hi > mid);
    assert_true(mid > lo);
    sy_classifier_free(c);
    char *pointwise[] = {"train", "--data", data, "--out", c3, "--seed", "3", NULL};
    assert_int_equal(train_argv(pointwise), 0);
    char *wc = slurp(c3);
    assert_string_not_equal(wa, wc);
    assert_non_null(strstr(wc, "\"pairwise\":0,"));
    free(wa);
    free(wc);

    char *cross[] = {"train", "--data", data, "--out", a, "--holdout", "0", "--folds", "3",
                     "--fold-seed", "5", "--eval-dir", ev, "--quiet", NULL};
    assert_int_equal(train_argv(cross), 0);
    wa = slurp(a);
    assert_non_null(strstr(wa, "\"held_out\":0,"));
    free(wa);
    size_t rows = 0;
    static const char *const sets[] = {"one", "two"};
    for (size_t i = 0; i < 2; i++) {
        (void)snprintf(p, sizeof(p), "%s/cv-%s.jsonl", ev, sets[i]);
        rows += count_lines(p);
        unlink(p);
        (void)snprintf(p, sizeof(p), "%s/cv-%s.scores.jsonl", ev, sets[i]);
        assert_int_equal(count_lines(p), 45); /* every row of the set, scored once */
        unlink(p);
        (void)snprintf(p, sizeof(p), "%s/holdout-%s.jsonl", ev, sets[i]);
        assert_int_not_equal(access(p, F_OK), 0); /* nothing held out */
    }
    assert_int_equal(rows, 90);
    rmdir(ev);

    char *bad[] = {"train", "--data", data, "--out", a, "--pairwise", "-1", NULL};
    assert_int_equal(sy_train_main(7, bad), 2);
    char *bad2[] = {"train", "--data", data, "--out", a, "--pairs-max", "0", NULL};
    assert_int_equal(sy_train_main(7, bad2), 2);

    train_dir_remove(dir, data, a, b, c3);
}

static void test_split_key(void **state)
{
    (void)state;
    double k = sy_train_split_key(1, 0, "gsm8k-3");
    assert_true(k >= 0 && k < 1);
    assert_near(k, sy_train_split_key(1, 0, "gsm8k-3"), 0);
    assert_true(k != sy_train_split_key(2, 0, "gsm8k-3"));
    assert_true(k != sy_train_split_key(1, 1, "gsm8k-3"));
    /* roughly uniform */
    int below = 0;
    char id[32];
    for (int i = 0; i < 10000; i++) {
        (void)snprintf(id, sizeof(id), "row-%d", i);
        below += sy_train_split_key(1, 0, id) < 0.2;
    }
    assert_true(below > 1800 && below < 2200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_basic),
        cmocka_unit_test(test_features_numbers_code_math),
        cmocka_unit_test(test_features_multiple_choice),
        cmocka_unit_test(test_features_script_and_length),
        cmocka_unit_test(test_features_request_shapes),
        cmocka_unit_test(test_ngrams_and_names),
        cmocka_unit_test(test_score_monotonic_and_range),
        cmocka_unit_test(test_score_top_features),
        cmocka_unit_test(test_weights_errors),
        cmocka_unit_test(test_weights_files),
        cmocka_unit_test(test_shipped_weights),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_train_deterministic),
        cmocka_unit_test(test_train_pairwise_and_crossfit),
        cmocka_unit_test(test_split_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
