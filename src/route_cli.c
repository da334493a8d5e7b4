/* route_cli: the same sy_router_pick the proxy runs, fed from stdin. Runtime state (breakers,
 * in-flight counts) is fresh in this process, so the output shows the routing policy itself. */
#include "switchyard/route_cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "switchyard/config.h"
#include "switchyard/json_util.h"
#include "switchyard/router.h"
#include "switchyard/routes.h"

#define TOP 8
#define MAX_LINE (8u * 1024u * 1024u)

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x > y ? -1 : x < y;
}

/* The threshold as ops will paste it into a route file: the shortest decimal (6 significant
 * digits or more) that still sends exactly the scores >= <thr> of <desc> (sorted descending)
 * to the harder tier. A plain 6-digit rounding may land above <thr> and lose that request, or
 * below the next score and gain one. Writes the text to <buf>; returns its value. */
static double printable_threshold(const double *desc, size_t n, double thr, char *buf,
                                  size_t cap)
{
    double lower = -1; /* the highest score below thr */
    for (size_t i = 0; i < n; i++)
        if (desc[i] < thr) {
            lower = desc[i];
            break;
        }
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, thr);
        double d = strtod(buf, NULL);
        if (d <= thr && d > lower)
            return d;
    }
    return thr; /* %.17g round-trips: not reached */
}

static void usage(FILE *f)
{
    fprintf(f, "usage: switchyard route --config FILE [--route NAME] [--calibrate SHARE] "
               "< requests.jsonl\n");
}

int sy_route_main(int argc, char **argv, FILE *in, FILE *out)
{
    const char *config = "conf/switchyard.json", *force = NULL;
    double share = -1;
    sy_errlist errs, warns;
    sy_config *cfg = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    double *scores = NULL;
    size_t nscores = 0, capscores = 0, nreq = 0, forced_hard = 0, lineno = 0;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strcmp(argv[i], "--route") == 0 && i + 1 < argc)
            force = argv[++i];
        else if (strcmp(argv[i], "--calibrate") == 0 && i + 1 < argc) {
            char *end;
            share = strtod(argv[++i], &end);
            if (*end != '\0' || !(share > 0 && share < 1)) {
                fprintf(stderr, "switchyard route: --calibrate takes a share in (0, 1)\n");
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    sy_errlist_init(&errs);
    sy_errlist_init(&warns);
    if (sy_config_load(config, &cfg, &errs, &warns) != SY_OK) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "error: %s\n", errs.items[i]);
        goto out;
    }
    if (force != NULL) {
        bool found = false;
        for (size_t i = 0; cfg->routes != NULL && i < cfg->routes->n; i++)
            found = found || strcmp(cfg->routes->routes[i].name, force) == 0;
        if (!found) {
            fprintf(stderr, "switchyard route: no route named '%s' in %s\n", force,
                    cfg->routes_dir ? cfg->routes_dir : "(no routes directory)");
            goto out;
        }
    }
    while ((n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0)
            continue;
        char msg[200];
        json_t *body = NULL;
        if ((size_t)n > MAX_LINE ||
            sy_json_parse_body(line, (size_t)n, cfg->max_json_depth, &body, msg, sizeof(msg)) !=
                SY_OK) {
            json_t *e = json_pack("{s:I,s:s}", "line", (json_int_t)lineno, "error",
                                  (size_t)n > MAX_LINE ? "line too long" : msg);
            json_dumpf(e, out, JSON_COMPACT | JSON_REAL_PRECISION(6));
            fputc('\n', out);
            json_decref(e);
            continue;
        }
        sy_feature_contrib top[TOP];
        memset(top, 0, sizeof(top));
        sy_route_ctx rctx = {.top = top, .ntop = TOP, .force_route = force};
        sy_pick p;
        const char *model = json_string_value(json_object_get(body, "model"));
        sy_err prc = sy_router_pick(cfg, model != NULL ? model : "auto", body, &rctx, &p);
        json_t *o;
        if (prc == SY_ENOMODEL || p.ntargets == 0) {
            o = json_pack("{s:I,s:s}", "line", (json_int_t)lineno, "error", "no route or deployment serves this model");
        } else {
            json_t *feats = json_array();
            for (size_t i = 0; p.score >= 0 && i < TOP && top[i].name[0] != '\0'; i++)
                json_array_append_new(feats, json_pack("[s,f]", top[i].name, top[i].contribution));
            o = json_pack("{s:s,s:s?,s:s,s:o,s:s?,s:o}", "route", p.route ? p.route : "",
                          "tier", p.tier, "deployment", p.targets[0]->name, "score",
                          p.score >= 0 ? json_real(p.score) : json_null(),
                          "rule", p.rule, "features", feats);
            nreq++;
            const sy_route *r = p.route_def;
            bool hard = r != NULL && r->ntiers > 1 && p.tier != NULL &&
                        strcmp(p.tier, r->tiers[r->ntiers - 1].name) == 0;
            if (p.rule != NULL && hard)
                forced_hard++;
            else if (p.rule == NULL && p.score >= 0) {
                if (nscores == capscores) {
                    size_t nc = capscores ? capscores * 2 : 1024;
                    double *ns = realloc(scores, nc * sizeof(*ns));
                    if (ns == NULL) {
                        json_decref(o);
                        json_decref(body);
                        goto out;
                    }
                    scores = ns;
                    capscores = nc;
                }
                scores[nscores++] = p.score;
            }
        }
        if (share < 0) {
            json_dumpf(o, out, JSON_COMPACT | JSON_REAL_PRECISION(6));
            fputc('\n', out);
        }
        json_decref(o);
        json_decref(body);
    }
    if (share > 0) {
        /* Rules already send some requests to the harder tier; the threshold covers the rest. */
        double want = share * (double)nreq - (double)forced_hard;
        double thr = 1.0;
        size_t k = want <= 0 ? 0 : (size_t)ceil(want);
        qsort(scores, nscores, sizeof(double), cmp_desc);
        if (k > 0 && nscores > 0)
            thr = scores[(k > nscores ? nscores : k) - 1];
        char thr_text[40];
        thr = printable_threshold(scores, nscores, thr, thr_text, sizeof(thr_text));
        /* what the printed threshold really does: ties at it go to the harder tier too */
        size_t hard = forced_hard;
        for (size_t i = 0; i < nscores && scores[i] >= thr; i++)
            hard++;
        double achieved = nreq ? (double)hard / (double)nreq : 0;
        fprintf(out,
                "{\"share\":%.6g,\"threshold\":%s,\"requests\":%zu,\"forced_by_rules\":%zu,"
                "\"scored\":%zu,\"achieved_share\":%.6g}\n",
                share, thr_text, nreq, forced_hard, nscores, achieved);
    }
    rc = 0;
out:
    free(line);
    free(scores);
    sy_config_unref(cfg);
    sy_errlist_cleanup(&errs);
    sy_errlist_cleanup(&warns);
    return rc;
}
