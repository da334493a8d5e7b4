/* routes: route tables from the routes directory (DESIGN §5), parsed once into immutable structs that
 * live inside a config snapshot, so a reload swaps config, routes and classifier weights
 * together. A route matches requests by model alias (and optionally a header), forces a tier
 * with ordered rules, else scores with the classifier against a threshold, and lists tiers of
 * deployments with a strategy each; or it passes the model through by name. */
#ifndef SY_ROUTES_H
#define SY_ROUTES_H

#include <jansson.h>
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "switchyard/classifier.h"
#include "switchyard/err.h"

struct sy_config;

typedef enum sy_strategy {
    SY_STRAT_ORDERED,
    SY_STRAT_WEIGHTED,
    SY_STRAT_LEAST_INFLIGHT,
    SY_STRAT_LOWEST_LATENCY,
} sy_strategy;

typedef struct sy_tier {
    char *name;
    size_t *targets; /* indexes into config->deployments */
    double *weights; /* per target, for SY_STRAT_WEIGHTED (1 each by default) */
    size_t ntargets;
    sy_strategy strategy;
} sy_tier;

/* One rule: every condition present must hold (AND); a rule with several keys is a conjunction.
 * Unset conditions are -1 / NULL. */
typedef struct sy_rule {
    int has_tools;
    int has_images;
    long prompt_tokens_over;
    long turns_over;
    regex_t *last_user;      /* compiled "last_user_matches" */
    char *header_name;       /* "header_equals": {"name": value} (lower-cased name) */
    char *header_value;
    char *response_format;   /* "json" matches json_object and json_schema; or an exact type */
    size_t tier;             /* index into the route's tiers */
    char label[48];          /* "rules[2]" for explanations */
} sy_rule;

#define SY_FALLBACK_CONNECT 1u
#define SY_FALLBACK_TIMEOUT 2u

typedef enum sy_cache_mode { SY_CACHE_NEVER, SY_CACHE_DETERMINISTIC, SY_CACHE_ALWAYS } sy_cache_mode;

typedef struct sy_route {
    char *name;
    char *file; /* where it was defined */
    char **models; /* match.model; "*" = any */
    size_t nmodels;
    char *match_header_name; /* optional match.header {"name": value} */
    char *match_header_value;
    sy_rule *rules;
    size_t nrules;
    const sy_classifier *clf; /* borrowed from the table's weights cache; NULL = none */
    double threshold;         /* score >= threshold -> the harder tier */
    double target_share;      /* > 0: threshold follows the quantile of recent scores */
    size_t window;            /* scores kept for target_share */
    sy_tier *tiers;
    size_t ntiers;
    unsigned fallback_on;  /* SY_FALLBACK_* bits */
    int statuses[16];      /* HTTP statuses that fall back */
    size_t nstatuses;
    int max_attempts;      /* 0 = the config's upstream.max_attempts */
    bool affinity;         /* "conversation" */
    long affinity_ttl_s;
    sy_cache_mode cache_mode;
    long cache_ttl_s;
    size_t cache_max_entry_bytes; /* an answer encoding larger than this is not stored */
    bool by_model_name;    /* "target": "by_model_name" */
    long reference;        /* index of the reference (flagship) deployment, -1 = none */
} sy_route;

typedef struct sy_routes {
    sy_route *routes;
    size_t n;
    /* private: classifier weights loaded once per file */
    char **clf_paths;
    sy_classifier **clfs;
    size_t nclfs;
} sy_routes;

/* Loads every *.json in <dir> (sorted by name) that holds {"routes": [...]}; other .json files
 * must be classifier weights that some route names. A missing directory is an empty table.
 * Every problem goes into <errs> as "file: path: message". *out is new on SY_OK. Start-up and
 * reload code only (it reads files). */
sy_err sy_routes_load(const char *dir, const struct sy_config *cfg, sy_routes **out,
                      sy_errlist *errs);
/* Parses one route document (borrowed) into <t> (appending); <file> names it in errors. */
sy_err sy_routes_parse(const json_t *doc, const char *file, const struct sy_config *cfg,
                       sy_routes *t, sy_errlist *errs);
void sy_routes_free(sy_routes *t);

/* The first route matching <model> and, when the route asks, the header <get_header>(<ctx>,
 * lower-case name) returns. NULL when none matches. Pure. */
const sy_route *sy_routes_match(const sy_routes *t, const char *model,
                                const char *(*get_header)(void *ctx, const char *name),
                                void *ctx);

/* Whether <rule> holds for the chat <body> (borrowed). Pure (regexec is thread-safe). */
bool sy_rule_matches(const sy_rule *rule, const json_t *body,
                     const char *(*get_header)(void *ctx, const char *name), void *ctx);

/* The estimated prompt tokens of a body (bytes of message text / 4, rounded up). */
long sy_routes_prompt_tokens(const json_t *body);

/* target_flagship_share: records <score> in the route's window and returns the threshold that
 * sends that share of recent scores to the harder tier (the route's fixed threshold until the
 * window has 20 scores). Thread-safe; state outlives reloads (keyed by route name). */
double sy_routes_adaptive_threshold(const sy_route *r, double score);
/* Frees the adaptive windows (tests, exit). */
void sy_routes_reset_state(void);

#endif
