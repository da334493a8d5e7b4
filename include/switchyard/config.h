/* config: conf/switchyard.json parsed once into an immutable, refcounted struct. One
 * descriptor table per object drives parsing, defaults and bounds; unknown keys and bad values
 * are errors naming their JSON path (e.g. "deployments[2].timeout_ms: unknown key"). Secrets are
 * read only from the environment variables the config names. Reload builds a new config and
 * swaps a pointer; in-flight requests keep their reference to the old one. */
#ifndef SY_CONFIG_H
#define SY_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "switchyard/err.h"

typedef enum sy_provider { SY_PROVIDER_OPENAI, SY_PROVIDER_ANTHROPIC } sy_provider;

/* USD per million tokens. */
typedef struct sy_price {
    double input;
    double cached_input;
    double cache_write;
    double output;
    double batch_discount; /* fraction off for batch traffic, 0..1 */
    bool set;              /* a price was given explicitly for this deployment */
} sy_price;

typedef struct sy_deployment {
    char *name;
    sy_provider provider;
    char *base_url; /* without a trailing '/' */
    char *model;    /* the upstream's model name */
    char *api_key_env;
    char *api_key; /* from the environment at load; NULL when no key (local) or unset */
    bool disabled; /* api_key_env named but unset: requests get 503 naming the variable */
    char *tier_hint;
    char *anthropic_version;
    int max_inflight; /* 0 = unlimited */
    long connect_timeout_ms;
    long first_byte_timeout_ms;
    long idle_timeout_ms;
    long total_timeout_ms;
    bool stream_usage; /* ask the upstream for stream usage (stream_options.include_usage) */
    sy_price price;
    size_t index; /* position in config->deployments */
    struct sy_dep_health *health; /* runtime state shared across reloads (health.h) */
    int default_max_tokens;  /* anthropic: max_tokens when the client gives none */
    bool auto_cache_control; /* anthropic: cache breakpoints on long stable prefixes */
    bool batch_api; /* batch lines routed here go through the provider's own batch API */
} sy_deployment;

/* An alias: one model name standing for an ordered list of deployments (fallback order). */
typedef struct sy_alias {
    char *name;
    size_t *targets; /* indexes into config->deployments */
    size_t ntargets;
} sy_alias;

typedef struct sy_config {
    /* "listen": "HOST:PORT" */
    char *listen_host;
    int listen_port;
    char *data_dir;
    char *routes_dir;
    char *prices_path;
    json_t *redis; /* the raw "redis" value (null or object), owned; used by the store module */
    json_t *mem_store; /* the raw "mem_store" value (null or object), owned; store module too */
    char *config_path;
    char *config_dir; /* the config file's directory, for reference only: relative data_dir,
                         prices and routes resolve against the process working directory */

    /* "auth" */
    char *master_key_env;
    char *master_key; /* from the environment; NULL when unset */
    bool require_keys;

    /* "server" (all optional) */
    size_t max_body_bytes;   /* default 8 MiB */
    int max_json_depth;      /* default 64 */
    size_t max_messages;     /* default 2048 */
    unsigned conn_limit;     /* default 16384 */
    unsigned conn_timeout_s; /* idle client connection timeout (slowloris), default 60 */
    unsigned threads;        /* MHD polling threads, default 1 */
    long shutdown_grace_ms;  /* drain deadline on SIGTERM, default 10000 */
    char *log_level;         /* "info" */
    bool access_log;         /* default true */

    /* "upstream" defaults (all optional); a deployment's own values win */
    long connect_timeout_ms;    /* 5000 */
    long first_byte_timeout_ms; /* 60000 */
    long idle_timeout_ms;       /* 60000 */
    long total_timeout_ms;      /* 600000 */
    int max_attempts;           /* 3: attempts over an alias's targets */
    long retry_base_ms;         /* 100 */
    long retry_max_ms;          /* 5000 */
    size_t max_response_bytes;  /* cap on a buffered (non-stream) upstream body, 64 MiB */
    int breaker_failures;       /* 5: consecutive failures that open a deployment's breaker */
    long breaker_cooldown_ms;   /* 10000: how long it stays open before a probe */
    long breaker_sync_ms;       /* 250: how often breakers are exchanged through Redis */

    /* "batch": Files + Batches API (all optional) */
    size_t file_max_bytes;      /* 200 MiB: largest uploaded file */
    size_t batch_max_lines;     /* 50000: lines in one batch input file */
    int batch_workers;          /* 4: batch lines in flight per instance */
    double batch_share;         /* 0.5: share of a deployment's max_inflight batch lines may use */
    long batch_lease_ms;        /* 120000: a line unacknowledged this long is reclaimed */
    int batch_max_attempts;     /* 5: attempts per line on transient failures */
    long batch_retry_base_ms;   /* 1000: first retry backoff of a line, doubling */
    long batch_poll_ms;         /* 1000: reclaim / expiry / finalize sweep period */
    long batch_window_s;        /* 86400: what completion_window "24h" means (tests shorten it) */
    size_t batch_provider_group_size; /* 1000: lines per provider batch-API submission */
    long batch_provider_grace_ms;     /* 900000: an ended batch waits this for provider lines */
    char *files_dir;            /* NULL: <data_dir>/files; file contents (shared by instances) */

    sy_deployment *deployments;
    size_t ndeployments;
    sy_alias *aliases; /* from "aliases": {"name": ["dep", ...]} */
    size_t naliases;
    struct sy_routes *routes; /* the route files, loaded by sy_config_load; NULL = none */

    /* private */
    int refs;
} sy_config;

/* Loads and validates <path>. Every problem goes into <errs> with its JSON path; warnings (a key
 * variable unset, so the deployment is disabled) go into <warns> (may be NULL). Returns SY_OK and
 * a new config (refcount 1) or SY_ECONFIG with *out untouched. */
sy_err sy_config_load(const char *path, sy_config **out, sy_errlist *errs, sy_errlist *warns);

/* The same on an already parsed document; <dir> is stored as config_dir (may be NULL = ".").
 * Returns SY_ENOMEM (with a line in <errs>) when an allocation fails. */
sy_err sy_config_parse(const json_t *root, const char *dir, sy_config **out, sy_errlist *errs,
                       sy_errlist *warns);

/* Refcounting (atomic; safe from any thread). sy_config_unref frees at zero; NULL is a no-op. */
sy_config *sy_config_ref(sy_config *c);
void sy_config_unref(sy_config *c);

/* Borrowed pointers valid while <c> lives; NULL when not found. */
const sy_deployment *sy_config_deployment(const sy_config *c, const char *name);
const sy_alias *sy_config_alias(const sy_config *c, const char *name);

/* Parses "HOST:PORT" or "[v6]:PORT" (port 0..65535). Returns SY_EINVAL when malformed.
 * *host is new (malloc'd). */
sy_err sy_config_parse_listen(const char *s, char **host, int *port);

/* Writes markdown documenting every key (JSON path, type, default, bounds, meaning) to <out>,
 * generated from the same descriptor tables that drive parsing. conf/README.md holds this text
 * verbatim below the line SY_CONFIG_DOC_MARKER; a unit test fails when the two drift.
 * Returns SY_OK, or SY_EINTERNAL when writing to <out> fails. */
sy_err sy_config_doc(FILE *out);

#define SY_CONFIG_DOC_MARKER                                                                    \
    "<!-- Everything below this line is generated by sy_config_doc(); do not edit it by hand. -->"

#endif
