/* classifier_bench: microseconds per sy_classifier_score call on one core, for a short (200 B)
 * and a long (8 KB) first user turn, with and without the top-feature explanation.
 *
 * usage: classifier_bench [WEIGHTS.json] [ITERATIONS]
 * WEIGHTS defaults to $SY_SOURCE_DIR/routes/classifier-v1.json, then routes/classifier-v1.json.
 * The request body is parsed once; the timed loop is extraction + scoring only (what the proxy
 * adds per request, since it parses the body anyway). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard/classifier.h"

static const char *const sample[] = {
    "Can you explain why the following Python function returns None instead of the sum? ",
    "```python\ndef total(xs):\n    s = 0\n    for x in xs:\n        s += x\n```\n",
    "A train leaves the station at 3:15 pm travelling at 60 km/h; a second train leaves 20 "
    "minutes later at 80 km/h. At what time does the second train catch up? ",
    "Write a short, friendly email to my landlord asking whether the heating can be repaired "
    "before the end of the month, and mention that I can be home on Tuesday or Thursday. ",
    "Prove that the square root of 2 is irrational, step by step, using $\\sqrt{2} = p/q$. ",
    "Summarize the main arguments for and against remote work in at least 3 bullet points. ",
};

/* Fills <buf> with <len> bytes of mixed prose, code and math (no NUL inside). */
static void make_text(char *buf, size_t len)
{
    size_t n = 0, k = 0;
    while (n < len) {
        const char *s = sample[k++ % (sizeof(sample) / sizeof(sample[0]))];
        size_t m = strlen(s);
        if (m > len - n)
            m = len - n;
        memcpy(buf + n, s, m);
        n += m;
    }
    buf[len] = '\0';
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median over 7 rounds of the mean time per call. */
static double bench(const sy_classifier *c, const json_t *req, int iters, size_t ntop)
{
    sy_feature_contrib top[8];
    double rounds[7], score = 0, sink = 0;
    for (int r = 0; r < 7; r++) {
        double t0 = now_us();
        for (int i = 0; i < iters; i++) {
            if (sy_classifier_score(c, req, &score, ntop ? top : NULL, ntop) != SY_OK) {
                fprintf(stderr, "classifier_bench: score failed\n");
                exit(1);
            }
            sink += score;
        }
        rounds[r] = (now_us() - t0) / iters;
    }
    if (sink < 0)
        printf("%g\n", sink); /* keeps the loop from being optimised away */
    qsort(rounds, 7, sizeof(rounds[0]), cmp);
    return rounds[3];
}

int main(int argc, char **argv)
{
    char path[4096], err[512];
    const char *src = getenv("SY_SOURCE_DIR");
    sy_classifier *c = NULL;
    int iters = argc > 2 ? atoi(argv[2]) : 2000, rc = 1;
    size_t sizes[2] = {200, 8192};

    if (argc > 1)
        (void)snprintf(path, sizeof(path), "%s", argv[1]);
    else
        (void)snprintf(path, sizeof(path), "%s%sroutes/classifier-v1.json", src ? src : "",
                       src ? "/" : "");
    if (iters <= 0)
        iters = 2000;
    if (sy_classifier_load(path, &c, err, sizeof(err)) != SY_OK) {
        fprintf(stderr, "classifier_bench: %s\n", err);
        return 1;
    }
    printf("weights %s: hash_bits %u, %zu hashed weights\n", path, sy_classifier_hash_bits(c),
           sy_classifier_nnz(c));
    for (size_t k = 0; k < 2; k++) {
        char *text = malloc(sizeof(char) * (sizeof(sample) + sizes[k] + 1));
        json_t *req = NULL;
        if (text == NULL)
            goto out;
        make_text(text, sizes[k]);
        req = json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s}]}", "model", "auto", "messages", "role",
                        "system", "content", "You are a helpful assistant.", "role", "user",
                        "content", text);
        free(text);
        if (req == NULL)
            goto out;
        int n = sizes[k] > 1000 ? iters / 10 + 1 : iters;
        double plain = bench(c, req, n, 0), expl = bench(c, req, n, 5);
        printf("prompt %5zu B: %7.2f us/request (score only), %7.2f us/request (score + top 5)\n",
               sizes[k], plain, expl);
        json_decref(req);
    }
    rc = 0;
out:
    sy_classifier_free(c);
    return rc;
}
