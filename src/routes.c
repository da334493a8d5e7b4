/* routes: parsing and validation of route files, rule matching, and the adaptive threshold.
 * Parsing collects every problem with its file and JSON path; matching is pure. */
#include "switchyard/routes.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/config.h"
#include "switchyard/router.h"

/* JSON paths in error messages are built in fixed buffers and cut when absurdly deep: a
 * truncated path in a message is the intended behaviour, not a bug to warn about. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* ---- small parse helpers ---- */

typedef struct pctx {
    const char *file;
    sy_errlist *errs;
    const sy_config *cfg;
    int bad;
} pctx;

static void perr(pctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void perr(pctx *c, const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sy_errlist_add(c->errs, "%s: %s: %s", c->file, path, msg);
    c->bad = 1;
}

/* Reports keys of <o> not in the NULL-terminated <allowed>. */
static void only_keys(pctx *c, const json_t *o, const char *path, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] != NULL && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok)
            perr(c, path, "unknown key '%.60s'", k);
    }
}

static char *xstrdup(const char *s) { return s != NULL ? strdup(s) : NULL; }

static long dep_index(const sy_config *cfg, const char *name)
{
    const sy_deployment *d = sy_config_deployment(cfg, name);
    return d != NULL ? (long)d->index : -1;
}

/* ---- tiers ---- */

static int parse_strategy(const char *s, sy_strategy *out)
{
    static const char *names[] = {"ordered", "weighted", "least_inflight", "lowest_latency"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (sy_strategy)i;
            return 0;
        }
    return -1;
}

static void parse_tier(pctx *c, const json_t *t, const char *path, sy_tier *out)
{
    static const char *const keys[] = {"name", "targets", "strategy", "weights", NULL};
    char p[160];
    if (!json_is_object(t)) {
        perr(c, path, "expected an object");
        return;
    }
    only_keys(c, t, path, keys);
    const char *name = json_string_value(json_object_get(t, "name"));
    if (name == NULL || *name == '\0') {
        snprintf(p, sizeof(p), "%s.name", path);
        perr(c, p, "required: a non-empty string");
    }
    out->name = xstrdup(name != NULL ? name : "?");
    json_t *st = json_object_get(t, "strategy");
    out->strategy = SY_STRAT_ORDERED;
    if (st != NULL && (!json_is_string(st) || parse_strategy(json_string_value(st), &out->strategy))) {
        snprintf(p, sizeof(p), "%s.strategy", path);
        perr(c, p, "expected one of ordered, weighted, least_inflight, lowest_latency");
    }
    json_t *targets = json_object_get(t, "targets");
    if (!json_is_array(targets) || json_array_size(targets) == 0) {
        snprintf(p, sizeof(p), "%s.targets", path);
        perr(c, p, "required: a non-empty array of deployment names");
        return;
    }
    size_t n = json_array_size(targets);
    if (n > SY_ROUTER_MAX_TARGETS) {
        /* the router orders at most that many; the rest would silently never be used */
        snprintf(p, sizeof(p), "%s.targets", path);
        perr(c, p, "at most %d deployments per tier", SY_ROUTER_MAX_TARGETS);
        return;
    }
    out->targets = calloc(n, sizeof(*out->targets));
    out->weights = calloc(n, sizeof(*out->weights));
    if (out->targets == NULL || out->weights == NULL) {
        perr(c, path, "out of memory");
        return;
    }
    json_t *w = json_object_get(t, "weights");
    if (w != NULL && (!json_is_array(w) || json_array_size(w) != n)) {
        snprintf(p, sizeof(p), "%s.weights", path);
        perr(c, p, "expected an array of %zu numbers (one per target)", n);
        w = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *dn = json_string_value(json_array_get(targets, i));
        long idx = dn != NULL ? dep_index(c->cfg, dn) : -1;
        snprintf(p, sizeof(p), "%s.targets[%zu]", path, i);
        if (dn == NULL)
            perr(c, p, "expected a deployment name");
        else if (idx < 0)
            perr(c, p, "unknown deployment '%.80s'", dn);
        out->targets[out->ntargets] = idx < 0 ? 0 : (size_t)idx;
        double wt = 1.0;
        if (w != NULL) {
            json_t *wv = json_array_get(w, i);
            wt = json_number_value(wv);
            if (!json_is_number(wv) || !(wt >= 0) || !isfinite(wt)) {
                snprintf(p, sizeof(p), "%s.weights[%zu]", path, i);
                perr(c, p, "expected a number >= 0");
                wt = 1.0;
            }
        }
        out->weights[out->ntargets++] = wt;
    }
}

/* ---- rules ---- */

static long tier_index(const sy_route *r, const char *name)
{
    for (size_t i = 0; i < r->ntiers; i++)
        if (r->tiers[i].name != NULL && strcmp(r->tiers[i].name, name) == 0)
            return (long)i;
    return -1;
}

static void parse_rule(pctx *c, const json_t *j, const char *path, sy_route *r, sy_rule *out)
{
    static const char *const keys[] = {"when", "tier", NULL};
    static const char *const conds[] = {"has_tools",         "has_images",     "prompt_tokens_over",
                                        "turns_over",        "last_user_matches",
                                        "header_equals",     "response_format", NULL};
    char p[200];

    out->has_tools = out->has_images = -1;
    out->prompt_tokens_over = out->turns_over = -1;
    if (!json_is_object(j)) {
        perr(c, path, "expected an object");
        return;
    }
    only_keys(c, j, path, keys);
    const char *tier = json_string_value(json_object_get(j, "tier"));
    long ti = tier != NULL ? tier_index(r, tier) : -1;
    snprintf(p, sizeof(p), "%s.tier", path);
    if (tier == NULL)
        perr(c, p, "required: the name of one of the route's tiers");
    else if (ti < 0)
        perr(c, p, "unknown tier '%.60s'", tier);
    out->tier = ti < 0 ? 0 : (size_t)ti;
    json_t *w = json_object_get(j, "when");
    snprintf(p, sizeof(p), "%s.when", path);
    if (!json_is_object(w) || json_object_size(w) == 0) {
        perr(c, p, "required: an object with at least one condition");
        return;
    }
    only_keys(c, w, p, conds);
    json_t *v;
    if ((v = json_object_get(w, "has_tools")) != NULL) {
        if (!json_is_boolean(v))
            perr(c, p, "has_tools: expected true or false");
        out->has_tools = json_is_true(v);
    }
    if ((v = json_object_get(w, "has_images")) != NULL) {
        if (!json_is_boolean(v))
            perr(c, p, "has_images: expected true or false");
        out->has_images = json_is_true(v);
    }
    if ((v = json_object_get(w, "prompt_tokens_over")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            perr(c, p, "prompt_tokens_over: expected an integer >= 0");
        else
            out->prompt_tokens_over = (long)json_integer_value(v);
    }
    if ((v = json_object_get(w, "turns_over")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            perr(c, p, "turns_over: expected an integer >= 0");
        else
            out->turns_over = (long)json_integer_value(v);
    }
    if ((v = json_object_get(w, "last_user_matches")) != NULL) {
        const char *re = json_string_value(v);
        int flags = REG_EXTENDED | REG_NOSUB;
        if (re == NULL) {
            perr(c, p, "last_user_matches: expected a regular expression string");
        } else {
            /* "(?i)" is the common spelling of case-insensitive; POSIX has it as a flag. */
            if (strncmp(re, "(?i)", 4) == 0) {
                re += 4;
                flags |= REG_ICASE;
            }
            out->last_user = calloc(1, sizeof(regex_t));
            int rc = out->last_user ? regcomp(out->last_user, re, flags) : REG_ESPACE;
            if (rc != 0) {
                char eb[160] = "out of memory";
                if (out->last_user != NULL)
                    regerror(rc, out->last_user, eb, sizeof(eb));
                free(out->last_user);
                out->last_user = NULL;
                perr(c, p, "last_user_matches: bad regular expression: %s", eb);
            }
        }
    }
    if ((v = json_object_get(w, "header_equals")) != NULL) {
        const char *hk;
        json_t *hv;
        if (!json_is_object(v) || json_object_size(v) != 1)
            perr(c, p, "header_equals: expected {\"header-name\": \"value\"}");
        else
            json_object_foreach(v, hk, hv)
            {
                if (!json_is_string(hv))
                    perr(c, p, "header_equals: the value must be a string");
                out->header_name = xstrdup(hk);
                for (char *q = out->header_name; q && *q; q++)
                    *q = (char)tolower((unsigned char)*q);
                out->header_value = xstrdup(json_is_string(hv) ? json_string_value(hv) : "");
            }
    }
    if ((v = json_object_get(w, "response_format")) != NULL) {
        const char *rf = json_string_value(v);
        if (rf == NULL || (strcmp(rf, "json") != 0 && strcmp(rf, "json_object") != 0 &&
                           strcmp(rf, "json_schema") != 0 && strcmp(rf, "text") != 0))
            perr(c, p, "response_format: expected json, json_object, json_schema or text");
        out->response_format = xstrdup(rf != NULL ? rf : "json");
    }
}

/* ---- routes ---- */

static sy_classifier *weights_for(pctx *c, sy_routes *t, const char *path, const char *jpath)
{
    for (size_t i = 0; i < t->nclfs; i++)
        if (strcmp(t->clf_paths[i], path) == 0)
            return t->clfs[i];
    char err[300];
    sy_classifier *clf = NULL;
    if (sy_classifier_load(path, &clf, err, sizeof(err)) != SY_OK) {
        perr(c, jpath, "%s", err);
        return NULL;
    }
    char **np = realloc(t->clf_paths, (t->nclfs + 1) * sizeof(*np));
    if (np != NULL)
        t->clf_paths = np;
    sy_classifier **nc = realloc(t->clfs, (t->nclfs + 1) * sizeof(*nc));
    if (nc != NULL)
        t->clfs = nc;
    char *dup = strdup(path);
    if (np == NULL || nc == NULL || dup == NULL) {
        free(dup);
        sy_classifier_free(clf);
        perr(c, jpath, "out of memory");
        return NULL;
    }
    t->clf_paths[t->nclfs] = dup;
    t->clfs[t->nclfs++] = clf;
    return clf;
}

static void parse_fallback(pctx *c, const json_t *f, const char *path, sy_route *r)
{
    static const char *const keys[] = {"on", "max_attempts", NULL};
    char p[200];
    r->fallback_on = SY_FALLBACK_CONNECT | SY_FALLBACK_TIMEOUT;
    static const int defaults[] = {429, 500, 502, 503, 504, 529};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        r->statuses[r->nstatuses++] = defaults[i];
    if (f == NULL)
        return;
    if (!json_is_object(f)) {
        perr(c, path, "expected an object");
        return;
    }
    only_keys(c, f, path, keys);
    json_t *on = json_object_get(f, "on");
    if (on != NULL) {
        r->fallback_on = 0;
        r->nstatuses = 0;
        snprintf(p, sizeof(p), "%s.on", path);
        if (!json_is_array(on)) {
            perr(c, p, "expected an array of \"connect\", \"timeout\" and HTTP statuses");
        } else {
            size_t i;
            json_t *v;
            json_array_foreach(on, i, v)
            {
                if (json_is_string(v) && strcmp(json_string_value(v), "connect") == 0)
                    r->fallback_on |= SY_FALLBACK_CONNECT;
                else if (json_is_string(v) && strcmp(json_string_value(v), "timeout") == 0)
                    r->fallback_on |= SY_FALLBACK_TIMEOUT;
                else if (json_is_integer(v) && json_integer_value(v) >= 400 &&
                         json_integer_value(v) <= 599 &&
                         r->nstatuses < sizeof(r->statuses) / sizeof(r->statuses[0]))
                    r->statuses[r->nstatuses++] = (int)json_integer_value(v);
                else {
                    char pi[220];
                    snprintf(pi, sizeof(pi), "%s[%zu]", p, i);
                    perr(c, pi, "expected \"connect\", \"timeout\" or an HTTP status 400..599");
                }
            }
        }
    }
    json_t *ma = json_object_get(f, "max_attempts");
    if (ma != NULL) {
        if (!json_is_integer(ma) || json_integer_value(ma) < 1 || json_integer_value(ma) > 10) {
            snprintf(p, sizeof(p), "%s.max_attempts", path);
            perr(c, p, "expected an integer 1..10");
        } else {
            r->max_attempts = (int)json_integer_value(ma);
        }
    }
}

static void parse_route(pctx *c, sy_routes *t, const json_t *j, const char *path, sy_route *r)
{
    static const char *const keys[] = {"name",     "match",    "rules",    "classifier",
                                       "tiers",    "fallback", "affinity", "affinity_ttl_s",
                                       "cache",    "target",   "reference", NULL};
    char p[200];

    r->reference = -1;
    r->affinity_ttl_s = 3600;
    r->threshold = 0.5;
    if (!json_is_object(j)) {
        perr(c, path, "expected an object");
        return;
    }
    only_keys(c, j, path, keys);
    const char *name = json_string_value(json_object_get(j, "name"));
    snprintf(p, sizeof(p), "%s.name", path);
    if (name == NULL || *name == '\0')
        perr(c, p, "required: a non-empty string");
    for (size_t i = 0; name != NULL && i + 1 < t->n; i++)
        if (t->routes[i].name != NULL && strcmp(t->routes[i].name, name) == 0)
            perr(c, p, "duplicate route name '%.60s' (also in %s)", name, t->routes[i].file);
    r->name = xstrdup(name != NULL ? name : "?");
    r->file = xstrdup(c->file);

    /* match */
    json_t *m = json_object_get(j, "match");
    snprintf(p, sizeof(p), "%s.match", path);
    if (!json_is_object(m)) {
        perr(c, p, "required: an object such as {\"model\": [\"auto\"]}");
    } else {
        static const char *const mkeys[] = {"model", "header", NULL};
        only_keys(c, m, p, mkeys);
        json_t *mm = json_object_get(m, "model");
        if (json_is_string(mm)) {
            r->models = calloc(1, sizeof(char *));
            if (r->models != NULL)
                r->models[r->nmodels++] = xstrdup(json_string_value(mm));
        } else if (json_is_array(mm) && json_array_size(mm) > 0) {
            r->models = calloc(json_array_size(mm), sizeof(char *));
            size_t i;
            json_t *v;
            json_array_foreach(mm, i, v)
            {
                if (!json_is_string(v)) {
                    snprintf(p, sizeof(p), "%s.match.model[%zu]", path, i);
                    perr(c, p, "expected a string");
                } else if (r->models != NULL) {
                    r->models[r->nmodels++] = xstrdup(json_string_value(v));
                }
            }
        } else {
            snprintf(p, sizeof(p), "%s.match.model", path);
            perr(c, p, "required: a model name, \"*\", or an array of them");
        }
        json_t *h = json_object_get(m, "header");
        if (h != NULL) {
            const char *hk;
            json_t *hv;
            snprintf(p, sizeof(p), "%s.match.header", path);
            if (!json_is_object(h) || json_object_size(h) != 1)
                perr(c, p, "expected {\"header-name\": \"value\"}");
            else
                json_object_foreach(h, hk, hv)
                {
                    r->match_header_name = xstrdup(hk);
                    for (char *q = r->match_header_name; q && *q; q++)
                        *q = (char)tolower((unsigned char)*q);
                    r->match_header_value = xstrdup(json_is_string(hv) ? json_string_value(hv) : "");
                    if (!json_is_string(hv))
                        perr(c, p, "the value must be a string");
                }
        }
    }

    /* target / tiers */
    json_t *target = json_object_get(j, "target");
    json_t *tiers = json_object_get(j, "tiers");
    if (target != NULL) {
        snprintf(p, sizeof(p), "%s.target", path);
        if (!json_is_string(target) || strcmp(json_string_value(target), "by_model_name") != 0)
            perr(c, p, "the only target is \"by_model_name\"; use tiers to name deployments");
        if (tiers != NULL)
            perr(c, p, "a route has either target or tiers, not both");
        r->by_model_name = true;
    } else if (!json_is_array(tiers) || json_array_size(tiers) == 0) {
        snprintf(p, sizeof(p), "%s.tiers", path);
        perr(c, p, "required (or \"target\": \"by_model_name\"): a non-empty array of tiers");
    } else {
        r->tiers = calloc(json_array_size(tiers), sizeof(*r->tiers));
        size_t i;
        json_t *v;
        json_array_foreach(tiers, i, v)
        {
            if (r->tiers == NULL)
                break;
            snprintf(p, sizeof(p), "%s.tiers[%zu]", path, i);
            parse_tier(c, v, p, &r->tiers[r->ntiers]);
            /* a tier that is not an object has no name (its error is already reported) */
            for (size_t k = 0; k < r->ntiers && r->tiers[r->ntiers].name != NULL; k++)
                if (r->tiers[k].name != NULL &&
                    strcmp(r->tiers[k].name, r->tiers[r->ntiers].name) == 0)
                    perr(c, p, "duplicate tier name '%.60s'", r->tiers[k].name);
            r->ntiers++;
        }
    }

    /* rules (after tiers: they name them) */
    json_t *rules = json_object_get(j, "rules");
    if (rules != NULL) {
        snprintf(p, sizeof(p), "%s.rules", path);
        if (!json_is_array(rules))
            perr(c, p, "expected an array");
        else if (r->by_model_name && json_array_size(rules) > 0)
            perr(c, p, "a by_model_name route has no tiers for rules to pick");
        else if (json_array_size(rules) > 0) {
            r->rules = calloc(json_array_size(rules), sizeof(*r->rules));
            size_t i;
            json_t *v;
            json_array_foreach(rules, i, v)
            {
                if (r->rules == NULL)
                    break;
                snprintf(p, sizeof(p), "%s.rules[%zu]", path, i);
                sy_rule *rule = &r->rules[r->nrules++];
                parse_rule(c, v, p, r, rule);
                snprintf(rule->label, sizeof(rule->label), "rules[%zu]", i);
            }
        }
    }

    /* classifier */
    json_t *cl = json_object_get(j, "classifier");
    if (cl != NULL) {
        static const char *const ckeys[] = {"weights", "threshold", "target_flagship_share",
                                            "window", NULL};
        snprintf(p, sizeof(p), "%s.classifier", path);
        if (!json_is_object(cl)) {
            perr(c, p, "expected an object");
        } else {
            only_keys(c, cl, p, ckeys);
            if (r->ntiers < 2)
                perr(c, p, "a classifier needs at least two tiers (easy first, harder last)");
            const char *wp = json_string_value(json_object_get(cl, "weights"));
            char pw[220];
            snprintf(pw, sizeof(pw), "%s.weights", p);
            if (wp == NULL)
                perr(c, pw, "required: the path of a weights file (switchyard train writes one)");
            else
                r->clf = weights_for(c, t, wp, pw);
            json_t *th = json_object_get(cl, "threshold");
            json_t *sh = json_object_get(cl, "target_flagship_share");
            if (th != NULL) {
                double v = json_number_value(th);
                snprintf(pw, sizeof(pw), "%s.threshold", p);
                if (!json_is_number(th) || !(v >= 0 && v <= 1))
                    perr(c, pw, "expected a number in [0, 1]");
                else
                    r->threshold = v;
            } else if (r->clf != NULL) {
                r->threshold = sy_classifier_threshold(r->clf);
            }
            if (sh != NULL) {
                double v = json_number_value(sh);
                snprintf(pw, sizeof(pw), "%s.target_flagship_share", p);
                if (!json_is_number(sh) || !(v > 0 && v < 1))
                    perr(c, pw, "expected a number in (0, 1)");
                else
                    r->target_share = v;
            }
            r->window = 1000;
            json_t *wn = json_object_get(cl, "window");
            if (wn != NULL) {
                snprintf(pw, sizeof(pw), "%s.window", p);
                if (!json_is_integer(wn) || json_integer_value(wn) < 20 ||
                    json_integer_value(wn) > 4096)
                    perr(c, pw, "expected an integer 20..4096");
                else
                    r->window = (size_t)json_integer_value(wn);
            }
        }
    }

    snprintf(p, sizeof(p), "%s.fallback", path);
    parse_fallback(c, json_object_get(j, "fallback"), p, r);

    json_t *af = json_object_get(j, "affinity");
    if (af != NULL) {
        snprintf(p, sizeof(p), "%s.affinity", path);
        const char *a = json_string_value(af);
        if (a == NULL || (strcmp(a, "none") != 0 && strcmp(a, "conversation") != 0))
            perr(c, p, "expected \"none\" or \"conversation\"");
        r->affinity = a != NULL && strcmp(a, "conversation") == 0;
    }
    json_t *at = json_object_get(j, "affinity_ttl_s");
    if (at != NULL) {
        snprintf(p, sizeof(p), "%s.affinity_ttl_s", path);
        if (!json_is_integer(at) || json_integer_value(at) < 1)
            perr(c, p, "expected an integer >= 1");
        else
            r->affinity_ttl_s = (long)json_integer_value(at);
    }

    json_t *cache = json_object_get(j, "cache");
    r->cache_mode = SY_CACHE_NEVER;
    r->cache_ttl_s = 86400;
    r->cache_max_entry_bytes = 1048576;
    if (cache != NULL) {
        static const char *const ck[] = {"mode", "ttl_s", "max_entry_bytes", NULL};
        snprintf(p, sizeof(p), "%s.cache", path);
        if (!json_is_object(cache)) {
            perr(c, p, "expected an object");
        } else {
            only_keys(c, cache, p, ck);
            const char *mode = json_string_value(json_object_get(cache, "mode"));
            if (mode == NULL || strcmp(mode, "never") == 0)
                r->cache_mode = SY_CACHE_NEVER;
            else if (strcmp(mode, "deterministic") == 0)
                r->cache_mode = SY_CACHE_DETERMINISTIC;
            else if (strcmp(mode, "always") == 0)
                r->cache_mode = SY_CACHE_ALWAYS;
            else
                perr(c, p, "mode: expected never, deterministic or always");
            json_t *ttl = json_object_get(cache, "ttl_s");
            if (ttl != NULL && (!json_is_integer(ttl) || json_integer_value(ttl) < 1))
                perr(c, p, "ttl_s: expected an integer >= 1");
            else if (ttl != NULL)
                r->cache_ttl_s = (long)json_integer_value(ttl);
            json_t *mx = json_object_get(cache, "max_entry_bytes");
            if (mx != NULL && (!json_is_integer(mx) || json_integer_value(mx) < 256 ||
                               json_integer_value(mx) > 1073741824))
                perr(c, p, "max_entry_bytes: expected an integer from 256 to 1073741824");
            else if (mx != NULL)
                r->cache_max_entry_bytes = (size_t)json_integer_value(mx);
        }
    }

    json_t *ref = json_object_get(j, "reference");
    if (ref != NULL) {
        snprintf(p, sizeof(p), "%s.reference", path);
        const char *rn = json_string_value(ref);
        r->reference = rn != NULL ? dep_index(c->cfg, rn) : -1;
        if (r->reference < 0)
            perr(c, p, "expected the name of a deployment");
    }
}

sy_err sy_routes_parse(const json_t *doc, const char *file, const sy_config *cfg, sy_routes *t,
                       sy_errlist *errs)
{
    pctx c = {.file = file, .errs = errs, .cfg = cfg};
    if (!json_is_object(doc)) {
        perr(&c, "(top)", "expected an object {\"routes\": [...]}");
        return SY_ECONFIG;
    }
    static const char *const keys[] = {"routes", NULL};
    only_keys(&c, doc, "(top)", keys);
    json_t *rs = json_object_get(doc, "routes");
    if (!json_is_array(rs)) {
        perr(&c, "routes", "expected an array of routes");
        return SY_ECONFIG;
    }
    sy_route *nr = realloc(t->routes, (t->n + json_array_size(rs)) * sizeof(*nr) + 1);
    if (nr == NULL)
        return SY_ENOMEM;
    t->routes = nr;
    size_t i;
    json_t *v;
    json_array_foreach(rs, i, v)
    {
        char p[64];
        snprintf(p, sizeof(p), "routes[%zu]", i);
        sy_route *r = &t->routes[t->n++];
        memset(r, 0, sizeof(*r));
        parse_route(&c, t, v, p, r);
    }
    return c.bad ? SY_ECONFIG : SY_OK;
}

static void free_route(sy_route *r)
{
    free(r->name);
    free(r->file);
    for (size_t i = 0; i < r->nmodels; i++)
        free(r->models[i]);
    free(r->models);
    free(r->match_header_name);
    free(r->match_header_value);
    for (size_t i = 0; i < r->nrules; i++) {
        sy_rule *ru = &r->rules[i];
        if (ru->last_user != NULL) {
            regfree(ru->last_user);
            free(ru->last_user);
        }
        free(ru->header_name);
        free(ru->header_value);
        free(ru->response_format);
    }
    free(r->rules);
    for (size_t i = 0; i < r->ntiers; i++) {
        free(r->tiers[i].name);
        free(r->tiers[i].targets);
        free(r->tiers[i].weights);
    }
    free(r->tiers);
}

void sy_routes_free(sy_routes *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        free_route(&t->routes[i]);
    free(t->routes);
    for (size_t i = 0; i < t->nclfs; i++) {
        free(t->clf_paths[i]);
        sy_classifier_free(t->clfs[i]);
    }
    free(t->clf_paths);
    free(t->clfs);
    free(t);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

sy_err sy_routes_load(const char *dir, const sy_config *cfg, sy_routes **out, sy_errlist *errs)
{
    sy_routes *t = calloc(1, sizeof(*t));
    char **names = NULL;
    size_t nnames = 0;
    sy_err rc = SY_ENOMEM;
    bool bad = false;

    if (t == NULL)
        return SY_ENOMEM;
    DIR *d = opendir(dir);
    if (d == NULL) {
        *out = t; /* no routes directory: every model passes by name */
        return SY_OK;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0 || e->d_name[0] == '.')
            continue;
        char **nn = realloc(names, (nnames + 1) * sizeof(*nn));
        if (nn == NULL)
            goto out;
        names = nn;
        if ((names[nnames] = strdup(e->d_name)) == NULL)
            goto out;
        nnames++;
    }
    qsort(names, nnames, sizeof(*names), cmp_str);
    for (size_t i = 0; i < nnames; i++) {
        char path[1024];
        json_error_t je;
        snprintf(path, sizeof(path), "%s%s%s", dir,
                 dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]);
        json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
        if (doc == NULL) {
            if (json_error_code(&je) == json_error_out_of_memory) {
                sy_errlist_add(errs, "%s: out of memory", path);
                goto out;
            }
            sy_errlist_add(errs, "%s:%d:%d: %s", path, je.line, je.column, je.text);
            bad = true;
            continue;
        }
        if (json_object_get(doc, "routes") != NULL) {
            sy_err prc = sy_routes_parse(doc, path, cfg, t, errs);
            if (prc == SY_ENOMEM) {
                json_decref(doc);
                goto out;
            }
            bad = bad || prc != SY_OK;
        } else if (json_object_get(doc, "kind") == NULL || json_object_get(doc, "version") == NULL) {
            /* Weights files (trained candidates included) may sit here unreferenced; anything
             * else is most likely a route file with a typo, so it is not skipped silently. */
            sy_errlist_add(errs,
                           "%s: neither a route file (no \"routes\" key) nor classifier weights "
                           "(no \"kind\"/\"version\")",
                           path);
            bad = true;
        }
        json_decref(doc);
    }
    rc = bad ? SY_ECONFIG : SY_OK;
    if (rc == SY_OK) {
        *out = t;
        t = NULL;
    }
out:
    if (d != NULL)
        closedir(d);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    sy_routes_free(t);
    return rc;
}

/* ---- matching ---- */

const sy_route *sy_routes_match(const sy_routes *t, const char *model,
                                const char *(*get_header)(void *ctx, const char *name),
                                void *ctx)
{
    if (t == NULL || model == NULL)
        return NULL;
    for (size_t i = 0; i < t->n; i++) {
        const sy_route *r = &t->routes[i];
        bool hit = false;
        for (size_t k = 0; k < r->nmodels && !hit; k++)
            hit = strcmp(r->models[k], "*") == 0 || strcmp(r->models[k], model) == 0;
        if (!hit)
            continue;
        if (r->match_header_name != NULL) {
            const char *v = get_header != NULL ? get_header(ctx, r->match_header_name) : NULL;
            if (v == NULL || strcmp(v, r->match_header_value) != 0)
                continue;
        }
        return r;
    }
    return NULL;
}

static const json_t *last_user(const json_t *body)
{
    const json_t *msgs = json_object_get(body, "messages");
    for (size_t i = json_array_size(msgs); i > 0; i--) {
        const json_t *m = json_array_get(msgs, i - 1);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role != NULL && strcmp(role, "user") == 0)
            return m;
    }
    return NULL;
}

static size_t text_bytes(const json_t *content)
{
    if (json_is_string(content))
        return json_string_length(content);
    size_t n = 0, i;
    json_t *part;
    json_array_foreach(content, i, part) n += json_string_length(json_object_get(part, "text"));
    return n;
}

long sy_routes_prompt_tokens(const json_t *body)
{
    size_t bytes = 0, i;
    json_t *m;
    json_array_foreach(json_object_get(body, "messages"), i, m)
        bytes += text_bytes(json_object_get(m, "content"));
    json_t *prompt = json_object_get(body, "prompt");
    if (json_is_string(prompt))
        bytes += json_string_length(prompt);
    return (long)((bytes + 3) / 4);
}

static bool has_images(const json_t *body)
{
    size_t i, k;
    json_t *m, *part;
    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        json_array_foreach(json_object_get(m, "content"), k, part)
        {
            const char *t = json_string_value(json_object_get(part, "type"));
            if (t != NULL && (strcmp(t, "image_url") == 0 || strcmp(t, "image") == 0))
                return true;
        }
    }
    return false;
}

static long user_turns(const json_t *body)
{
    long n = 0;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        n += role != NULL && strcmp(role, "user") == 0;
    }
    return n;
}

static bool regex_on_content(const regex_t *re, const json_t *content)
{
    if (json_is_string(content))
        return regexec(re, json_string_value(content), 0, NULL, 0) == 0;
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        const char *t = json_string_value(json_object_get(part, "text"));
        if (t != NULL && regexec(re, t, 0, NULL, 0) == 0)
            return true;
    }
    return false;
}

bool sy_rule_matches(const sy_rule *rule, const json_t *body,
                     const char *(*get_header)(void *ctx, const char *name), void *ctx)
{
    if (rule->has_tools >= 0) {
        json_t *tools = json_object_get(body, "tools");
        bool has = json_is_array(tools) && json_array_size(tools) > 0;
        if (has != (rule->has_tools == 1))
            return false;
    }
    if (rule->has_images >= 0 && has_images(body) != (rule->has_images == 1))
        return false;
    if (rule->prompt_tokens_over >= 0 && sy_routes_prompt_tokens(body) <= rule->prompt_tokens_over)
        return false;
    if (rule->turns_over >= 0 && user_turns(body) <= rule->turns_over)
        return false;
    if (rule->last_user != NULL) {
        const json_t *m = last_user(body);
        if (m == NULL || !regex_on_content(rule->last_user, json_object_get(m, "content")))
            return false;
    }
    if (rule->header_name != NULL) {
        const char *v = get_header != NULL ? get_header(ctx, rule->header_name) : NULL;
        if (v == NULL || strcmp(v, rule->header_value) != 0)
            return false;
    }
    if (rule->response_format != NULL) {
        const char *t = json_string_value(json_object_get(json_object_get(body, "response_format"), "type"));
        if (t == NULL)
            t = "text";
        if (strcmp(rule->response_format, "json") == 0) {
            if (strcmp(t, "json_object") != 0 && strcmp(t, "json_schema") != 0)
                return false;
        } else if (strcmp(rule->response_format, t) != 0) {
            return false;
        }
    }
    return true;
}

/* ---- adaptive threshold ---- */

typedef struct window {
    char name[128];
    double *scores;
    size_t cap, n, next;
    size_t since;  /* scores recorded since the threshold was last computed */
    double cached; /* the last computed threshold */
    struct window *link;
} window;

static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static window *windows;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double sy_routes_adaptive_threshold(const sy_route *r, double score)
{
    double thr = r->threshold;
    pthread_mutex_lock(&wmu);
    window *w = windows;
    while (w != NULL && strcmp(w->name, r->name) != 0)
        w = w->link;
    if (w == NULL && (w = calloc(1, sizeof(*w))) != NULL) {
        snprintf(w->name, sizeof(w->name), "%s", r->name);
        w->link = windows;
        windows = w;
    }
    if (w != NULL && w->cap != r->window) {
        double *s = realloc(w->scores, r->window * sizeof(double));
        if (s != NULL) {
            w->scores = s;
            w->cap = r->window;
            w->n = w->next = 0;
            w->since = 0; /* the cached threshold came from the old window */
        }
    }
    if (w != NULL && w->cap > 0) {
        w->scores[w->next] = score;
        w->next = (w->next + 1) % w->cap;
        if (w->n < w->cap)
            w->n++;
        /* The quantile is recomputed every 32 scores (a sort of the window), so its cost per
         * request stays a few hundred nanoseconds; between recomputations it barely moves. */
        if (w->n >= 20 && w->since > 0 && w->since < 32) {
            thr = w->cached;
            w->since++;
        } else if (w->n >= 20) {
            /* the ring's filled slots are scores[0..n) (it fills from 0, and n == cap once it
             * wraps); the sort makes their order irrelevant */
            double tmp[4096];
            size_t n = w->n;
            memcpy(tmp, w->scores, n * sizeof(tmp[0]));
            qsort(tmp, n, sizeof(double), cmp_double);
            size_t k = (size_t)floor((1.0 - r->target_share) * (double)n);
            if (k >= n)
                k = n - 1;
            thr = tmp[k];
            w->cached = thr;
            w->since = 1;
        }
    }
    pthread_mutex_unlock(&wmu);
    return thr;
}

void sy_routes_reset_state(void)
{
    pthread_mutex_lock(&wmu);
    while (windows != NULL) {
        window *n = windows->link;
        free(windows->scores);
        free(windows);
        windows = n;
    }
    pthread_mutex_unlock(&wmu);
}
