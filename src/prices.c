/* prices: conf/prices.json, model lookup and the exact cost arithmetic.
 *
 * Design decision: rates are converted to integer pico-dollars per token once per call and every
 * product is summed in 128 bits, so a request's cost is rounded exactly once. All memory comes
 * from jansson's allocator so config's allocation-failure tests reach it. */
#include "switchyard/prices.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/json_util.h"

#define PRICES_MAX_MODELS 10000
#define MODEL_NAME_MAX 256

typedef struct entry {
    char *name;
    sy_price price;
    bool free_; /* every rate 0: matches only exactly or with an Ollama ":tag" */
} entry;

struct sy_prices {
    entry *items; /* sorted by name */
    size_t n;
};

/* ---- allocation through jansson's allocator ---------------------------------------------- */

static void *xmalloc(size_t n)
{
    json_malloc_t m;
    json_free_t f;

    json_get_alloc_funcs(&m, &f);
    return m(n == 0 ? 1 : n);
}

static void xfree(void *p)
{
    json_malloc_t m;
    json_free_t f;

    if (p == NULL)
        return;
    json_get_alloc_funcs(&m, &f);
    f(p);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *p = xmalloc(n + 1);

    if (p != NULL)
        memcpy(p, s, n + 1);
    return p;
}

/* ---- cost ---------------------------------------------------------------------------------- */

/* USD per million tokens == micro-dollars per token; * 10^6 -> pico-dollars per token. */
static __int128 pico_rate(double usd_per_mtok)
{
    if (!(usd_per_mtok > 0) || !isfinite(usd_per_mtok))
        return 0;
    if (usd_per_mtok > 1e9) /* a billion dollars per million tokens: a config typo */
        usd_per_mtok = 1e9;
    return (__int128)llround(usd_per_mtok * 1e6);
}

static __int128 nonneg(int64_t v) { return v > 0 ? (__int128)v : 0; }

int64_t sy_price_cost_micro(const sy_price *p, const sy_usage *u, bool batch)
{
    __int128 prompt = nonneg(u->prompt), cached = nonneg(u->cached);
    __int128 write = nonneg(u->cache_write), out = nonneg(u->completion);
    __int128 uncached = prompt - cached - write;
    __int128 pico, num, micro;
    int64_t disc_ppm = 0;

    if (uncached < 0)
        uncached = 0; /* a provider that reports cache tokens outside the prompt count */
    if (nonneg(u->reasoning) > out)
        out = nonneg(u->reasoning);
    pico = uncached * pico_rate(p->input) + cached * pico_rate(p->cached_input) +
           write * pico_rate(p->cache_write) + out * pico_rate(p->output);
    if (pico > (__int128)INT64_MAX * 1000000 + 1000000)
        return INT64_MAX; /* the product below would not fit; the answer would not either */
    if (batch && p->batch_discount > 0)
        disc_ppm = p->batch_discount >= 1 ? 1000000 : llround(p->batch_discount * 1e6);
    /* pico * (1 - d): in units of pico-dollar ppm; / 10^12 -> micro-dollars, half up */
    num = pico * (1000000 - disc_ppm);
    micro = (num + 500000000000) / 1000000000000;
    return micro > INT64_MAX ? INT64_MAX : (int64_t)micro;
}

char *sy_usd_format(int64_t micro, char buf[SY_USD_BUF])
{
    /* magnitude as unsigned so INT64_MIN has no overflow */
    unsigned long long m = micro < 0 ? 0ull - (unsigned long long)micro : (unsigned long long)micro;

    snprintf(buf, SY_USD_BUF, "%s%llu.%06llu", micro < 0 ? "-" : "", m / 1000000ull,
             m % 1000000ull);
    return buf;
}

/* ---- the list -------------------------------------------------------------------------------- */

void sy_prices_free(sy_prices *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n; i++)
        xfree(p->items[i].name);
    xfree(p->items);
    xfree(p);
}

size_t sy_prices_count(const sy_prices *p) { return p != NULL ? p->n : 0; }

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

typedef struct pctx {
    const char *name;
    sy_errlist *errs;
    size_t nerr;
} pctx;

static void perr(pctx *c, const char *model, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void perr(pctx *c, const char *model, const char *key, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->nerr++;
    if (c->errs == NULL)
        return;
    if (model == NULL)
        sy_errlist_add(c->errs, "%s: %s: %s", c->name, key, msg);
    else if (key == NULL)
        sy_errlist_add(c->errs, "%s: models[\"%.64s\"]: %s", c->name, model, msg);
    else
        sy_errlist_add(c->errs, "%s: models[\"%.64s\"].%.64s: %s", c->name, model, key, msg);
}

static bool valid_model_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > MODEL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* Reads one rate: true when present and valid (written to *out). */
static bool rate(pctx *c, const char *model, const json_t *obj, const char *key, bool required,
                 double max, double *out)
{
    const json_t *v = json_object_get(obj, key);
    double x;

    if (v == NULL) {
        if (required)
            perr(c, model, key, "required key missing");
        return false;
    }
    x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(x) || x < 0 || x > max) {
        if (isinf(max))
            perr(c, model, key, "must be a number >= 0");
        else
            perr(c, model, key, "must be a number in 0..%g", max);
        return false;
    }
    *out = x;
    return true;
}

static void parse_entry(pctx *c, const char *model, const json_t *obj, entry *e)
{
    static const char *const keys[] = {"input", "cached_input", "cache_write", "output",
                                       "batch_discount"};
    const char *k;
    const json_t *v;

    if (!valid_model_name(model)) {
        perr(c, model, NULL, "model name must be 1..%d printable characters without spaces",
             MODEL_NAME_MAX);
        return;
    }
    if (!json_is_object(obj)) {
        perr(c, model, NULL, "must be an object");
        return;
    }
    json_object_foreach((json_t *)obj, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !known; i++)
            known = strcmp(k, keys[i]) == 0;
        if (!known)
            perr(c, model, NULL, "unknown key '%.64s'", k);
    }
    (void)v;
    memset(&e->price, 0, sizeof(e->price));
    (void)rate(c, model, obj, "input", true, HUGE_VAL, &e->price.input);
    (void)rate(c, model, obj, "output", true, HUGE_VAL, &e->price.output);
    if (!rate(c, model, obj, "cached_input", false, HUGE_VAL, &e->price.cached_input))
        e->price.cached_input = e->price.input;
    if (!rate(c, model, obj, "cache_write", false, HUGE_VAL, &e->price.cache_write))
        e->price.cache_write = e->price.input;
    (void)rate(c, model, obj, "batch_discount", false, 1, &e->price.batch_discount);
    e->free_ = e->price.input == 0 && e->price.output == 0 && e->price.cached_input == 0 &&
               e->price.cache_write == 0;
}

sy_err sy_prices_parse(const json_t *root, const char *name, sy_prices **out, sy_errlist *errs)
{
    pctx c = {.name = name != NULL ? name : "prices", .errs = errs};
    sy_prices *p = NULL;
    const json_t *models, *v;
    const char *k;
    sy_err rc = SY_ECONFIG;

    if (!json_is_object(root)) {
        perr(&c, NULL, "(top level)", "must be an object");
        goto out;
    }
    json_object_foreach((json_t *)root, k, v)
    {
        if (k[0] != '_' && strcmp(k, "unit") != 0 && strcmp(k, "updated") != 0 &&
            strcmp(k, "models") != 0)
            perr(&c, NULL, k, "unknown key (expected \"models\")");
    }
    models = json_object_get(root, "models");
    if (!json_is_object(models)) {
        perr(&c, NULL, "models", "must be an object of model name -> price");
        goto out;
    }
    if (json_object_size(models) > PRICES_MAX_MODELS) {
        perr(&c, NULL, "models", "more than %d entries", PRICES_MAX_MODELS);
        goto out;
    }
    rc = SY_ENOMEM;
    if ((p = xmalloc(sizeof(*p))) == NULL)
        goto out;
    p->n = 0;
    if ((p->items = xmalloc(json_object_size(models) * sizeof(entry))) == NULL)
        goto out;
    json_object_foreach((json_t *)models, k, v)
    {
        entry *e = &p->items[p->n];
        size_t before = c.nerr;

        parse_entry(&c, k, v, e);
        if (c.nerr != before)
            continue;
        if ((e->name = xstrdup(k)) == NULL)
            goto out;
        p->n++;
    }
    rc = SY_ECONFIG;
    if (c.nerr > 0)
        goto out;
    qsort(p->items, p->n, sizeof(entry), entry_cmp);
    *out = p;
    p = NULL; /* the caller owns it now */
    rc = SY_OK;
out:
    if (rc == SY_ENOMEM && errs != NULL)
        sy_errlist_add(errs, "%s: out of memory", c.name);
    sy_prices_free(p);
    return rc;
}

sy_err sy_prices_load(const char *path, sy_prices **out, sy_errlist *errs)
{
    json_t *root = NULL;
    sy_err rc = sy_json_load_file(path, SY_PRICES_MAX_BYTES, &root, errs);

    if (rc == SY_OK)
        rc = sy_prices_parse(root, path, out, errs);
    json_decref(root);
    return rc;
}

/* ---- lookup ---------------------------------------------------------------------------------- */

static const entry *find_exact(const sy_prices *p, const char *model)
{
    entry key = {.name = (char *)model};

    return bsearch(&key, p->items, p->n, sizeof(entry), entry_cmp);
}

static const entry *find_family(const sy_prices *p, const char *model)
{
    const entry *best = NULL;
    size_t best_len = 0, mlen = strlen(model);

    for (size_t i = 0; i < p->n; i++) {
        const entry *e = &p->items[i];
        size_t n = strlen(e->name);
        char next;

        if (n >= mlen || n <= best_len || strncmp(model, e->name, n) != 0)
            continue;
        next = model[n];
        /* a free entry must not price a hosted variant of a local model's name at 0 */
        if (e->free_ ? next != ':' : strchr("-:@._/", next) == NULL)
            continue;
        best = e;
        best_len = n;
    }
    return best;
}

static const entry *find(const sy_prices *p, const char *model)
{
    const entry *e = find_exact(p, model);

    return e != NULL ? e : find_family(p, model);
}

bool sy_prices_lookup(const sy_prices *p, const char *model, sy_price *out, const char **matched)
{
    const entry *e;
    const char *slash;

    if (p == NULL || model == NULL || model[0] == '\0')
        return false;
    e = find(p, model);
    if (e == NULL && (slash = strrchr(model, '/')) != NULL && slash[1] != '\0')
        e = find(p, slash + 1);
    if (e == NULL)
        return false;
    *out = e->price;
    out->set = false;
    if (matched != NULL)
        *matched = e->name;
    return true;
}

size_t sy_prices_apply(const sy_prices *p, const char *list_path, sy_config *cfg, sy_errlist *errs)
{
    size_t missing = 0;

    for (size_t i = 0; i < cfg->ndeployments; i++) {
        sy_deployment *d = &cfg->deployments[i];

        if (d->price.set)
            continue;
        if (sy_prices_lookup(p, d->model, &d->price, NULL))
            continue;
        missing++;
        if (errs != NULL)
            sy_errlist_add(errs,
                           "deployments[%zu].price: no price for model '%.128s' (give the "
                           "deployment a \"price\" or add the model to %s; a price of 0 must be "
                           "explicit)",
                           i, d->model != NULL ? d->model : "?",
                           list_path != NULL ? list_path : "the prices file");
    }
    return missing;
}
